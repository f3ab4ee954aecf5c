//! `agendactl` binary: parse the command line and run one command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// agendactl: the operator's tool for an Agenda deployment.
#[derive(Debug, Parser)]
#[command(name = "agendactl", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "AGENDA_LOG", default_value = "warn", global = true)]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One table of the whole system: VIP holder, Redis primary and epoch,
    /// raft leader and every member's term and applied index, service
    /// instances, every process up or down.
    Status {
        /// The endpoints file written by `make run`.
        #[arg(
            long,
            env = "AGENDA_ENDPOINTS",
            default_value = ".agenda/endpoints.json"
        )]
        endpoints: PathBuf,
    },
    /// Create a development CA (kept if present) and a fresh certificate
    /// and key for every process of the topology (namespace addresses and
    /// loopback), plus `agendactl` itself: `DIR/ca.pem`, `DIR/NAME.pem`,
    /// `DIR/NAME-key.pem`. Run again to rotate the leaves.
    Certs {
        /// Where to write them.
        #[arg(long, default_value = ".agenda/certs")]
        dir: PathBuf,
        /// The topology's subnet (`deploy/netns.sh`'s AGENDA_SUBNET).
        #[arg(long, env = "AGENDA_SUBNET", default_value = "10.77.0")]
        subnet: String,
        /// Validity of each leaf, in days (the CA: at least ten years).
        #[arg(long, default_value_t = 397)]
        days: u32,
        /// Make a new CA even if one exists, at once: processes that do
        /// not have the new `ca.pem` yet refuse the new leaves. Prefer
        /// --ca-step, which rotates the CA with nothing refused.
        #[arg(long)]
        new_ca: bool,
        /// One step of a CA rotation without a refused connection: `add`
        /// (a next CA, trusted beside the current one), `switch` (every
        /// leaf from the next CA), `finish` (the next CA alone). Let every
        /// process read the files (a few seconds; on other machines, copy
        /// them first) between steps.
        #[arg(long, value_enum, conflicts_with = "new_ca")]
        ca_step: Option<agendactl::certs::CaStep>,
    },
    /// Add a fresh access-token signing key (Ed25519) and make it current.
    /// Tokens signed with the previous keys stay valid until they expire;
    /// the set keeps the three newest keys, so rotate no more often than
    /// the token lifetime. Every agenda-users replica publishes the new
    /// public key before signing with it. In the namespace topology run it
    /// inside a machine: `ip netns exec witness agendactl rotate-token-key
    /// --db 10.77.0.13:7005 --tls-dir .agenda/certs`.
    RotateTokenKey {
        #[command(flatten)]
        conn: DbConn,
    },
    /// Accounts: `grant-admin NAME` lets an account read the audit log
    /// (`GET /v1/admin/audit`), `revoke-admin NAME` takes that back. Both
    /// are recorded in the audit log.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Backups of agenda-db: `save FILE` streams a consistent snapshot
    /// from any node into FILE (owner-only; it holds password hashes and
    /// the token signing keys); `restore FILE` seeds a member's data dir
    /// of a new cluster from one.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// agenda-db's leader: `transfer ID` hands leadership to member ID and
    /// waits until it leads (before maintenance on the current leader's
    /// machine).
    Leader {
        #[command(subcommand)]
        cmd: LeaderCmd,
    },
    /// Drop agenda-db's history (the past revisions that reads at a
    /// revision and watches from one use) up to --revision (default: all
    /// but the newest), to free its memory now rather than as it ages out.
    /// Watches and reads from a dropped revision are refused afterwards.
    Compact {
        /// The newest revision to drop (0: all but the newest).
        #[arg(long, default_value_t = 0)]
        revision: i64,
        #[command(flatten)]
        conn: DbConn,
    },
    /// agenda-db's members: `list`, `add ID ADDR`, `remove ID`.
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
    /// Sign in as a person for the terminal calendar: asks for the password
    /// (or reads one line from stdin with --password-stdin) and keeps the
    /// session in --session, readable by you only.
    Login {
        /// Your username.
        username: String,
        /// The public URL (default: what `make run` wrote, the host's
        /// relay `.agenda/local_url` or `.agenda/url`, else
        /// http://127.0.0.1:8080).
        #[arg(long, env = "AGENDA_URL")]
        url: Option<String>,
        /// The CA of an https URL (default: `.agenda/ca.pem`).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Read the password from stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        session: SessionArg,
    },
    /// Sign out: the session's refresh token is revoked and its file goes.
    Logout {
        #[command(flatten)]
        session: SessionArg,
    },
    /// Your agenda in your time zone: this week (the default) or month, or
    /// the one holding --from.
    Agenda {
        /// The week (Monday to Sunday).
        #[arg(long, conflicts_with = "month")]
        week: bool,
        /// The month.
        #[arg(long)]
        month: bool,
        /// A day in it: YYYY-MM-DD, today or tomorrow (default today).
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        session: SessionArg,
    },
    /// Your events: `add "title" --at "tomorrow 10:00" --for 30m --with bob`.
    Event {
        #[command(subcommand)]
        cmd: EventCmd,
    },
    /// Event and group invitations waiting for your answer.
    Invitations {
        #[command(flatten)]
        session: SessionArg,
    },
    /// Answer an event: `rsvp ID accepted|tentative|declined`.
    Rsvp {
        /// The event's id (as `invitations` shows it).
        id: String,
        /// accepted, tentative or declined.
        status: String,
        #[command(flatten)]
        session: SessionArg,
    },
    /// Relay a port of this host to an address reached from inside a
    /// network namespace (`make run` uses it for the VIP).
    Relay {
        /// Address to listen on (host namespace).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Network namespace to connect from (name under /var/run/netns,
        /// or a path); empty: this one.
        #[arg(long, default_value = "")]
        netns: String,
        /// Where to connect (`ip:port`).
        #[arg(long)]
        to: SocketAddr,
    },
    /// Write the Prometheus configuration that scrapes every process in
    /// endpoints.json (one job per kind, TLS with agendactl's certificate
    /// where the targets speak it) and loads the alert rules.
    PrometheusConfig {
        /// The endpoints file written by `make run`.
        #[arg(
            long,
            env = "AGENDA_ENDPOINTS",
            default_value = ".agenda/endpoints.json"
        )]
        endpoints: PathBuf,
        /// Rule files to load (repeat the flag); made absolute.
        #[arg(long = "rules")]
        rules: Vec<PathBuf>,
        /// Seconds between scrapes and rule evaluations.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=300))]
        interval_secs: u32,
        /// Where to write it (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The certificate shown to https targets, from endpoints.json's
        /// tls_dir: NAME.pem and NAME-key.pem.
        #[arg(long, default_value = "agendactl")]
        tls_name: String,
    },
    /// Seed 000's SLO table from Prometheus: availability, request p95 and
    /// agenda-db write p99 over the window, each with pass or FAIL (exit
    /// status 1 when one fails). Prometheus is the one `make run` started
    /// (endpoints.json) unless --prometheus names another.
    Slo {
        /// The window: 30m, 1h, 7d...
        #[arg(long, default_value = "1h")]
        since: String,
        /// Prometheus's base URL (reached from this namespace).
        #[arg(long)]
        prometheus: Option<String>,
        /// The endpoints file written by `make run`.
        #[arg(
            long,
            env = "AGENDA_ENDPOINTS",
            default_value = ".agenda/endpoints.json"
        )]
        endpoints: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// Save a snapshot of the whole store into FILE: every write
    /// acknowledged before the save began is in it; nothing is stopped.
    /// Prints its revision and SHA-256.
    Save {
        /// Where to write it (replaced atomically; mode 0600).
        file: PathBuf,
        #[command(flatten)]
        conn: DbConn,
    },
    /// Seed the data dir of one member of a new cluster from FILE. Run it
    /// for every member with the same --members and --cluster-token, then
    /// start each agenda-db with that --data-dir, --id, --peers (= the
    /// members) and --cluster-token. Leased keys (VIP holder, elections,
    /// service instances) and the Redis primary record of the old
    /// deployment are left out.
    Restore {
        /// The snapshot file (checked against its checksum first).
        file: PathBuf,
        /// The new member's data dir (must not hold a node's files).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new member's id.
        #[arg(long)]
        id: u64,
        /// Every member of the new cluster, as ID=HOST:PORT pairs
        /// separated by commas (agenda-db's --peers).
        #[arg(long)]
        members: String,
        /// The new cluster's token: use a new one, so no node or data dir
        /// of the old cluster can talk to the new one.
        #[arg(long)]
        cluster_token: String,
        /// Revisions of history the node keeps (agenda-db's --history).
        #[arg(long, default_value_t = 100_000)]
        history: i64,
    },
}

#[derive(Debug, Subcommand)]
enum LeaderCmd {
    /// Hand leadership to member ID.
    Transfer {
        /// The member to lead.
        id: u64,
        #[command(flatten)]
        conn: DbConn,
    },
}

#[derive(Debug, Subcommand)]
enum MemberCmd {
    /// Every member, its address, and which one leads.
    List {
        #[command(flatten)]
        conn: DbConn,
    },
    /// Add member ID at ADDR (its raft address); then start it with --join.
    Add {
        /// The new member's id.
        id: u64,
        /// Its raft address (HOST:PORT).
        addr: String,
        #[command(flatten)]
        conn: DbConn,
    },
    /// Remove member ID (it stops by itself once it learns it).
    Remove {
        /// The member's id.
        id: u64,
        #[command(flatten)]
        conn: DbConn,
    },
}

#[derive(Debug, Subcommand)]
enum EventCmd {
    /// Create an event in your time zone, attendees by username.
    Add {
        /// Its title.
        title: String,
        /// When it starts: "YYYY-MM-DD HH:MM", "tomorrow HH:MM", "HH:MM"
        /// (today) or RFC 3339.
        #[arg(long)]
        at: String,
        /// How long: 30m, 1h, 1h30m or minutes.
        #[arg(long = "for", default_value = "1h")]
        length: String,
        /// Attendees' usernames (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        with: Vec<String>,
        /// Where.
        #[arg(long)]
        location: Option<String>,
        /// An RRULE, e.g. FREQ=WEEKLY;COUNT=10.
        #[arg(long)]
        repeat: Option<String>,
        #[command(flatten)]
        session: SessionArg,
    },
}

/// Where the terminal calendar keeps a person's session.
#[derive(Debug, clap::Args)]
struct SessionArg {
    /// The session file (default ~/.config/agenda/session.json).
    #[arg(long = "session", env = "AGENDA_SESSION")]
    path: Option<PathBuf>,
}

impl SessionArg {
    fn path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(agendactl::calendar::session::default_path)
    }

    fn open(&self) -> anyhow::Result<agendactl::calendar::Session> {
        Ok(agendactl::calendar::Session::open(&self.path())?)
    }
}

/// The password: one line of stdin (`--password-stdin`, or stdin is not a
/// terminal), or asked for on the terminal without echo.
fn read_password(username: &str, from_stdin: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let tty = !from_stdin && stdin.is_terminal();
    let mut saved = None;
    if tty {
        eprint!("Password for {username}: ");
        std::io::stderr().flush().ok();
        // Echo off while it is typed (restored below).
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios they fill.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                saved = Some(t);
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        eprintln!();
    }
    read?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password given");
    Ok(password)
}

/// The URL and CA `make run` wrote, when not given.
fn default_url(url: Option<String>, ca: Option<PathBuf>) -> (String, Option<PathBuf>) {
    // `make run` as root: `url` is the VIP, reached from the client
    // namespace; this host reaches it through the relay at `local_url`.
    let url = url
        .or_else(|| std::fs::read_to_string(".agenda/local_url").ok())
        .or_else(|| std::fs::read_to_string(".agenda/url").ok())
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let ca = ca.or_else(|| {
        let p = PathBuf::from(".agenda/ca.pem");
        (url.starts_with("https://") && p.exists()).then_some(p)
    });
    (url, ca)
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Make the account NAME an administrator.
    GrantAdmin {
        /// The account's username.
        name: String,
        #[command(flatten)]
        conn: DbConn,
    },
    /// Make the account NAME an ordinary account again.
    RevokeAdmin {
        /// The account's username.
        name: String,
        #[command(flatten)]
        conn: DbConn,
    },
}

/// How agendactl reaches agenda-db: its endpoints (--db) and a
/// certificate (--tls-dir; the operator's, `agendactl`, by default).
#[derive(Debug, clap::Args)]
struct DbConn {
    #[command(flatten)]
    db: agenda_common::args::DbArgs,
    #[command(flatten)]
    tls: agenda_common::args::TlsArgs,
}

impl DbConn {
    /// A client of agenda-db as `agendactl`.
    fn client(
        mut self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<agenda_common::DbClient> {
        if self.tls.tls_name.is_empty() {
            self.tls.tls_name = "agendactl".into();
        }
        let links = agenda_common::net::Links::from_args(&self.tls, stop)?;
        Ok(links.db_client(&self.db.db)?.with_reads(self.db.db_reads))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    agenda_common::process::run_main("agendactl", &cli.log, async move {
        match cli.cmd {
            Cmd::Status { endpoints } => {
                let ep = agendactl::endpoints::Endpoints::read(&endpoints)?;
                print!("{}", agendactl::status::render(&ep).await);
                Ok::<(), anyhow::Error>(())
            }
            Cmd::Login {
                username,
                url,
                ca,
                password_stdin,
                session,
            } => {
                let (url, ca) = default_url(url, ca);
                let password = read_password(&username, password_stdin)?;
                let s = agendactl::calendar::Session::login(
                    &session.path(),
                    &url,
                    ca,
                    &username,
                    &password,
                )
                .await?;
                println!(
                    "signed in as {} at {} ({}); session in {}",
                    s.saved().username,
                    s.saved().url,
                    s.saved().time_zone,
                    session.path().display()
                );
                Ok(())
            }
            Cmd::Logout { session } => {
                session.open()?.logout().await?;
                println!("signed out");
                Ok(())
            }
            Cmd::Agenda {
                week: _,
                month,
                from,
                session,
            } => {
                let span = if month {
                    agendactl::calendar::Span::Month
                } else {
                    agendactl::calendar::Span::Week
                };
                let mut s = session.open()?;
                print!(
                    "{}",
                    agendactl::calendar::agenda(&mut s, span, from.as_deref()).await?
                );
                Ok(())
            }
            Cmd::Event {
                cmd:
                    EventCmd::Add {
                        title,
                        at,
                        length,
                        with,
                        location,
                        repeat,
                        session,
                    },
            } => {
                let mut s = session.open()?;
                let ev = agendactl::calendar::NewEvent {
                    title: &title,
                    at: &at,
                    length: &length,
                    with: &with,
                    location: location.as_deref(),
                    repeat: repeat.as_deref(),
                };
                print!("{}", agendactl::calendar::add_event(&mut s, ev).await?);
                Ok(())
            }
            Cmd::Invitations { session } => {
                let mut s = session.open()?;
                print!("{}", agendactl::calendar::invitations(&mut s).await?);
                Ok(())
            }
            Cmd::Rsvp {
                id,
                status,
                session,
            } => {
                let mut s = session.open()?;
                print!("{}", agendactl::calendar::rsvp(&mut s, &id, &status).await?);
                Ok(())
            }
            Cmd::Compact { revision, conn } => {
                let stop = tokio_util::sync::CancellationToken::new();
                let done = conn.client(&stop)?.compact(revision).await?;
                let at = done.header.map_or(0, |h| h.revision);
                println!(
                    "history dropped up to revision {} (the store is at {at}; reads and watches from {} on are served)",
                    done.compact_revision,
                    done.compact_revision + 1
                );
                Ok(())
            }
            Cmd::Relay { listen, netns, to } => {
                Ok(agendactl::relay::run(&listen, &netns, to).await?)
            }
            Cmd::PrometheusConfig {
                endpoints,
                rules,
                interval_secs,
                out,
                tls_name,
            } => {
                let ep = agendactl::endpoints::Endpoints::read(&endpoints)?;
                let rules = rules
                    .into_iter()
                    .map(std::path::absolute)
                    .collect::<std::io::Result<Vec<_>>>()?;
                let text = agendactl::prometheus::config(
                    &ep,
                    &agendactl::prometheus::Options {
                        interval_secs,
                        rules,
                        tls_dir: ep.tls_dir.clone(),
                        tls_name,
                    },
                )?;
                match out {
                    Some(path) => std::fs::write(&path, text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                    None => print!("{text}"),
                }
                Ok(())
            }
            Cmd::Slo {
                since,
                prometheus,
                endpoints,
            } => {
                let since = agendactl::slo::parse_since(&since)?;
                let (dialer, base) = match prometheus {
                    Some(url) => (agendactl::netns::Dialer::here(), url),
                    None => {
                        let ep = agendactl::endpoints::Endpoints::read(&endpoints)?;
                        let p = ep.of_kind("prometheus").next().ok_or_else(|| {
                            anyhow::anyhow!(
                                "{} names no Prometheus (AGENDA_PROMETHEUS=0?); give --prometheus URL",
                                endpoints.display()
                            )
                        })?;
                        let url = p.http.clone().ok_or_else(|| {
                            anyhow::anyhow!("the prometheus entry has no http address")
                        })?;
                        let dialer = if p.ns().is_empty() {
                            agendactl::netns::Dialer::here()
                        } else {
                            agendactl::netns::Dialer::in_namespace(p.ns())?
                        };
                        (dialer, url)
                    }
                };
                let report = agendactl::slo::fetch(&dialer, &base, &since).await?;
                print!("{}", agendactl::slo::render(&report, &base));
                if !report.passed() {
                    anyhow::bail!("an objective was missed");
                }
                Ok(())
            }
            Cmd::User { cmd } => {
                let (name, admin, conn) = match cmd {
                    UserCmd::GrantAdmin { name, conn } => (name, true, conn),
                    UserCmd::RevokeAdmin { name, conn } => (name, false, conn),
                };
                let stop = tokio_util::sync::CancellationToken::new();
                let store = agenda_calendar::store::Store::new(conn.client(&stop)?);
                let user = store
                    .set_admin(&name, admin, "agendactl")
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                stop.cancel();
                println!(
                    "{} is {}",
                    user.username,
                    if admin {
                        "an administrator"
                    } else {
                        "no longer an administrator"
                    }
                );
                Ok(())
            }
            Cmd::Snapshot {
                cmd: SnapshotCmd::Save { file, conn },
            } => {
                let stop = tokio_util::sync::CancellationToken::new();
                let client = conn.client(&stop)?.with_timeout(Duration::from_secs(60));
                let saved = agendactl::backup::save(&client, &file).await?;
                stop.cancel();
                let h = &saved.header;
                println!(
                    "saved revision {} (raft index {}, from member {}) to {}: {} bytes, sha256 {}",
                    h.revision,
                    h.applied_index,
                    h.member_id,
                    file.display(),
                    h.size,
                    hex(&h.sha256)
                );
                Ok(())
            }
            Cmd::Snapshot {
                cmd:
                    SnapshotCmd::Restore {
                        file,
                        data_dir,
                        id,
                        members,
                        cluster_token,
                        history,
                    },
            } => {
                let r = agendactl::backup::restore(
                    &file,
                    &data_dir,
                    id,
                    &members,
                    &cluster_token,
                    history,
                )?;
                println!(
                    "restored revision {} into {} as member {id} of cluster {cluster_token:?}: {} keys; left out {} leased keys, {} leases, {} stale records",
                    r.header.revision,
                    data_dir.display(),
                    r.keys,
                    r.dropped.leased_keys,
                    r.dropped.leases,
                    r.dropped.named_keys
                );
                Ok(())
            }
            Cmd::Leader {
                cmd: LeaderCmd::Transfer { id, conn },
            } => {
                let stop = tokio_util::sync::CancellationToken::new();
                let client = conn.client(&stop)?;
                let before = client.cluster_status().await?.leader_id;
                let now = client.move_leader(id).await?.leader_id;
                stop.cancel();
                println!("leader: member {before} -> member {now}");
                Ok(())
            }
            Cmd::Member { cmd } => {
                let stop = tokio_util::sync::CancellationToken::new();
                let members = match cmd {
                    MemberCmd::List { conn } => {
                        let s = conn.client(&stop)?.cluster_status().await?;
                        for m in &s.members {
                            let lead = if m.id == s.leader_id { "  leader" } else { "" };
                            println!("{:>4}  {}{lead}", m.id, m.addr);
                        }
                        return Ok(());
                    }
                    MemberCmd::Add { id, addr, conn } => {
                        conn.client(&stop)?.member_add(id, &addr).await?.members
                    }
                    MemberCmd::Remove { id, conn } => {
                        conn.client(&stop)?.member_remove(id).await?.members
                    }
                };
                stop.cancel();
                let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
                println!("members now: {}", ids.join(", "));
                Ok(())
            }
            Cmd::RotateTokenKey { conn } => {
                let stop = tokio_util::sync::CancellationToken::new();
                let client = conn.client(&stop)?;
                let kid = agenda_common::auth::rotate(&client).await?;
                stop.cancel();
                println!("new token signing key {kid} is current; older tokens stay valid until they expire");
                Ok(())
            }
            Cmd::Certs {
                dir,
                subnet,
                days,
                new_ca,
                ca_step,
            } => {
                let net: std::net::Ipv4Addr = format!("{}.0", subnet.trim_end_matches('.'))
                    .parse()
                    .map_err(|_| {
                        anyhow::anyhow!("--subnet {subnet:?}: want three octets, e.g. 10.77.0")
                    })?;
                let plan = agendactl::certs::plan(net);
                if let Some(step) = ca_step {
                    println!("{}", agendactl::certs::ca_step(&dir, step, &plan, days)?);
                    return Ok(());
                }
                let issued = agendactl::certs::issue(&dir, &plan, days, new_ca)?;
                println!(
                    "{} CA {}; {} certificates (valid {days} days) in {}",
                    if issued.new_ca { "new" } else { "kept the" },
                    issued.ca.display(),
                    issued.leaves.len(),
                    dir.display()
                );
                Ok(())
            }
        }
    })
}
