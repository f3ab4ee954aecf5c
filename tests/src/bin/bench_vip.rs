//! `make bench-vip`: the VIP held by agenda-vip against Debian's keepalived,
//! in the same two-machine namespace topology (`deploy/netns.sh`), in one
//! run: first agenda-vip, then keepalived (`AGENDA_VIP_DAEMON=keepalived`),
//! each in a fresh topology, with the same priorities (150 on A, 100 on B),
//! no preemption, 100 ms adverts unicast to the other machine, the same
//! local gateway health check (100 ms, fall 3, rise 2) and three gratuitous
//! ARPs on takeover. Needs root.
//!
//! Per daemon:
//! - `--kills` times: once the topology has settled (one holder, its daemon
//!   master and the other backup, both gateways healthy, a request served
//!   through the VIP), the holder is confirmed just before the kill, its
//!   gateway is killed (-9, by pid), and the client namespace polls an
//!   authenticated API read (`GET /v1/me`) through the VIP, a fresh
//!   connection started every `--poll-ms` (overlapping) with a
//!   `--request-timeout-ms` budget, until one is answered 200:
//!   kill-to-first-successful-request. The
//!   killed gateway is then restarted.
//! - then the link between A and B is cut for `--cut-secs` (the witness
//!   and the client still reach both) while both machines are sampled for
//!   the VIP every 10 ms; the most holders at once and the holders at the
//!   end of the cut are reported, then the cut is healed. The cut is
//!   `deploy/netns.sh partition` (blackhole routes, as `make chaos` cuts)
//!   plus bridge port isolation of A and B: keepalived sends its unicast
//!   adverts from a raw socket bound to eth0, and the kernel sends such a
//!   packet on-link when the route lookup fails, so blackhole routes alone
//!   cut agenda-vip's adverts but not keepalived's (it then never saw the
//!   cut at all).
//!
//! It prints one table and never asserts: keepalived ends the cut with two
//! holders by design (VRRP has no quorum: each side hears no adverts and
//! takes the VIP); agenda-vip must never have two.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agenda_tests::cluster::pct;
use agenda_tests::topology::{is_root, other_machine, suffix, Topology};
use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

/// VIP failover: agenda-vip against keepalived.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Gateway kills per daemon.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    kills: u32,
    /// How long the link between A and B stays cut, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    cut_secs: u64,
    /// Time between two requests through the VIP while waiting, in ms.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    poll_ms: u64,
    /// Budget of one request through the VIP (connect to response), in ms.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    request_timeout_ms: u64,
    /// Longest wait for a failover, a restart or the topology to settle, in
    /// seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=600))]
    round_timeout_secs: u64,
    /// Skip agenda-vip.
    #[arg(long)]
    no_agenda_vip: bool,
    /// Skip keepalived.
    #[arg(long)]
    no_keepalived: bool,
}

const MACHINES: [&str; 2] = ["machine-a", "machine-b"];
const VIP_PORT: u16 = 8080;
const USERNAME: &str = "benchvip";
const PASSWORD: &str = "bench-vip-password-1";

/// Set by SIGINT/SIGTERM: every loop stops, the topology is removed.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` unless interrupted.
fn pause(d: Duration) -> Result<()> {
    check_interrupted()?;
    std::thread::sleep(d);
    check_interrupted()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Daemon {
    AgendaVip,
    Keepalived,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Daemon::AgendaVip => "agenda-vip",
            Daemon::Keepalived => "keepalived",
        }
    }

    /// The processes of this daemon on machine `x` (`a` or `b`).
    fn processes(self, x: &str) -> Vec<String> {
        match self {
            Daemon::AgendaVip => vec![format!("agenda-vip-{x}")],
            Daemon::Keepalived => vec![format!("keepalived-{x}"), format!("keepalived-health-{x}")],
        }
    }

    /// The daemon's own state on `machine`, lower-case (`master`,
    /// `backup`, `fault`, `claiming`...).
    fn state(self, t: &Topology, machine: &str) -> Option<String> {
        match self {
            Daemon::AgendaVip => {
                let body = t
                    .curl(machine, &format!("http://{}:7601/status", ip_of(machine)))
                    .ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                v["state"].as_str().map(str::to_lowercase)
            }
            // Written by keepalived's notify script (deploy/netns.sh).
            Daemon::Keepalived => std::fs::read_to_string(
                t.state()
                    .join("keepalived")
                    .join(format!("{}.state", suffix(machine))),
            )
            .ok()
            .map(|s| s.trim().to_lowercase()),
        }
    }
}

fn ip_of(machine: &str) -> &'static str {
    if machine == "machine-a" {
        "10.77.0.11"
    } else {
        "10.77.0.12"
    }
}

// ------------------------------------------------------------ namespaces

/// Moves the calling thread (only) into network namespace `ns`.
fn enter_netns(ns: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("netns {ns}"))?;
    // SAFETY: setns(2) on an open namespace file; it changes the calling
    // thread's network namespace only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in one network namespace (the client's): what it runs
/// connects from there, as a process in that namespace would, without
/// the cost of starting one.
struct NetnsWorker {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl NetnsWorker {
    fn new(ns: &str) -> Result<NetnsWorker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let ns = ns.to_string();
        let handle = std::thread::spawn(move || {
            let entered = enter_netns(&ns);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if ok {
                while let Ok(job) = rx.recv() {
                    job();
                }
            }
        });
        ready_rx.recv().context("netns worker")??;
        Ok(NetnsWorker {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Starts `f` in the namespace; the receiver gets its result.
    fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<mpsc::Receiver<R>> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .context("netns worker stopped")?
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow::anyhow!("netns worker gone"))?;
        Ok(rx)
    }

    /// Runs `f` in the namespace and waits for it.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        self.spawn(f)?.recv().context("netns worker died")
    }
}

impl Drop for NetnsWorker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Whether the calling thread's namespace has `vip` on eth0 with its link
/// up (a netlink dump, no process started).
fn local_holds(vip: Ipv4Addr) -> bool {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free with freeifaddrs below; each
    // entry and its address are read only while the list is alive.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return false;
        }
        let mut found = false;
        let mut p = ifap;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_addr.is_null()
                || i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET
                || std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes() != b"eth0"
            {
                continue;
            }
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if addr == vip && ifa.ifa_flags & (libc::IFF_LOWER_UP as libc::c_uint) != 0 {
                found = true;
                break;
            }
        }
        libc::freeifaddrs(ifap);
        found
    }
}

/// What the holder sampler saw.
#[derive(Debug, Default, Clone)]
struct Holders {
    samples: u64,
    /// Samples in which both machines held the VIP.
    both: u64,
    /// Samples in which nobody held it.
    none: u64,
    /// The most holders in one sample.
    max: u32,
    /// Time covered by samples with two holders (sample period each).
    both_for: Duration,
    /// Time covered by samples with no holder.
    none_for: Duration,
    /// From the start to the first sample with two holders.
    first_both: Option<Duration>,
}

/// Samples both machines for the VIP every 10 ms on a thread of its own
/// that switches between their namespaces (cheap: a netlink dump per
/// machine, no process started). Two holders count only when A, then B,
/// then A again all hold it (no false alarm from a move between reads).
struct HolderSampler {
    stop: std::sync::Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<Holders>>>,
}

impl HolderSampler {
    fn start(t: &Topology) -> Result<HolderSampler> {
        let vip: Ipv4Addr = t.vip.parse().context("VIP")?;
        let files = MACHINES
            .iter()
            .map(|m| {
                let ns = t.ns(m);
                File::open(format!("/run/netns/{ns}")).with_context(|| format!("netns {ns}"))
            })
            .collect::<Result<Vec<File>>>()?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || -> Result<Holders> {
            let holds = |i: usize| -> Result<bool> {
                // SAFETY: setns(2) on an open namespace file; this
                // thread's namespace only.
                if unsafe { libc::setns(files[i].as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                Ok(local_holds(vip))
            };
            let period = Duration::from_millis(10);
            let start = Instant::now();
            let mut h = Holders::default();
            let mut last = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let (mut a, b) = (holds(0)?, holds(1)?);
                if a && b {
                    a = holds(0)?;
                }
                let n = u32::from(a) + u32::from(b);
                let now = Instant::now();
                h.samples += 1;
                h.max = h.max.max(n);
                match n {
                    0 => {
                        h.none += 1;
                        h.none_for += now.duration_since(last).min(period * 3);
                    }
                    2 => {
                        h.both += 1;
                        h.both_for += now.duration_since(last).min(period * 3);
                        h.first_both.get_or_insert(start.elapsed());
                    }
                    _ => {}
                }
                last = now;
                std::thread::sleep(period);
            }
            Ok(h)
        });
        Ok(HolderSampler {
            stop,
            handle: Some(handle),
        })
    }

    fn finish(mut self) -> Result<Holders> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("holder sampler panicked"))?,
            None => bail!("holder sampler gone"),
        }
    }
}

impl Drop for HolderSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------ requests

/// One HTTP/1.1 request on a fresh connection (TLS with `tls`: a fresh
/// handshake too, as a new client makes), `Connection: close`, the whole
/// exchange within `budget`; the status code.
fn request(
    addr: SocketAddr,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    req: &[u8],
    budget: Duration,
) -> Result<u16> {
    let deadline = Instant::now() + budget;
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            bail!("timed out")
        }
        Ok(d)
    };
    let tcp = TcpStream::connect_timeout(&addr, budget)?;
    tcp.set_nodelay(true)?;
    // Every read and write gets what is left of the budget.
    let timed = |tcp: &TcpStream| -> Result<()> {
        let d = left()?;
        tcp.set_write_timeout(Some(d))?;
        tcp.set_read_timeout(Some(d))?;
        Ok(())
    };
    timed(&tcp)?;
    let mut s: Box<dyn ReadWrite> = match tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(config.clone(), name)?;
            Box::new(rustls::StreamOwned::new(conn, tcp.try_clone()?))
        }
        None => Box::new(tcp.try_clone()?),
    };
    s.write_all(req)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        timed(&tcp)?;
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        // The status line is all we judge; read on to the end of the
        // headers at least, so a reply cut short is not counted.
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {:?}", head.lines().next()))?;
    Ok(status)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// How the client namespace polls the VIP.
#[derive(Clone)]
struct Probe {
    addr: SocketAddr,
    /// The gateways serve HTTPS (the topology's CA).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    req: Vec<u8>,
    budget: Duration,
    poll: Duration,
}

impl Probe {
    fn new(t: &Topology, token: &str, args: &Args) -> Result<Probe> {
        let vip = &t.vip;
        Ok(Probe {
            addr: format!("{vip}:{VIP_PORT}").parse()?,
            tls: t.public_tls(),
            req: format!(
                "GET /v1/me HTTP/1.1\r\nHost: {vip}:{VIP_PORT}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            budget: Duration::from_millis(args.request_timeout_ms),
            poll: Duration::from_millis(args.poll_ms),
        })
    }

    fn once(&self) -> bool {
        matches!(
            request(self.addr, self.tls.as_ref(), &self.req, self.budget),
            Ok(200)
        )
    }

    /// Polls from `since` until a request is answered 200 (its answer's
    /// arrival, measured from `since`) or `limit` passes. A request starts
    /// every `poll`, without waiting for the ones in flight: while the VIP
    /// moves, a SYN sent to the old holder is lost and its request uses up
    /// its whole budget, and one-at-a-time polling then measured that
    /// budget (up to 200 ms) instead of the failover. Threads inherit this
    /// thread's network namespace (the client's); at most budget/poll + 1
    /// are in flight.
    fn until_served(&self, since: Instant, limit: Duration) -> Option<(Duration, u32)> {
        let (tx, rx) = mpsc::channel::<Instant>();
        let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = (self.budget.as_millis() / self.poll.as_millis().max(1)) as usize + 1;
        let mut tries = 0;
        let mut next = Instant::now();
        while since.elapsed() < limit && !INTERRUPTED.load(Ordering::Relaxed) {
            if Instant::now() >= next && in_flight.load(Ordering::Relaxed) < most {
                tries += 1;
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (probe, tx, in_flight) = (self.clone(), tx.clone(), in_flight.clone());
                std::thread::spawn(move || {
                    if probe.once() {
                        let _ = tx.send(Instant::now());
                    }
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
                next += self.poll;
            }
            let wait = next
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            match rx.recv_timeout(wait) {
                Ok(at) => return Some((at.saturating_duration_since(since), tries)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        None
    }
}

/// Registers the bench's user and logs in, through the VIP from the client
/// namespace; the access token.
fn token(t: &Topology, timeout: Duration) -> Result<String> {
    let base = format!("{}://{}:{VIP_PORT}", t.db_scheme(), t.vip);
    // The gateways' CA, when they serve HTTPS.
    let ca: Vec<String> = t
        .certs()
        .map(|d| vec!["--cacert".into(), d.join("ca.pem").display().to_string()])
        .unwrap_or_default();
    let post = |path: &str, body: serde_json::Value| -> Result<(u16, String)> {
        let body = body.to_string();
        let url = format!("{base}{path}");
        let mut args: Vec<&str> = vec!["curl"];
        args.extend(ca.iter().map(String::as_str));
        args.extend([
            "-sS",
            "-m",
            "5",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            &url,
        ]);
        let out = t.on("client", &args)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    };
    let start = Instant::now();
    let mut registered = false;
    let mut last = String::new();
    while start.elapsed() < timeout {
        check_interrupted()?;
        if !registered {
            let (code, body) = post(
                "/v1/auth/register",
                serde_json::json!({"username": USERNAME, "email": format!("{USERNAME}@example.com"), "password": PASSWORD}),
            )?;
            // 409: an earlier try got through (its answer was lost).
            registered = code == 201 || code == 409;
            last = format!("register: {code} {body}");
        }
        if registered {
            let (code, body) = post(
                "/v1/auth/login",
                serde_json::json!({"username": USERNAME, "password": PASSWORD}),
            )?;
            if code == 200 {
                let v: serde_json::Value = serde_json::from_str(&body)?;
                return v["access_token"]
                    .as_str()
                    .map(str::to_string)
                    .context("login: no access_token");
            }
            last = format!("login: {code} {body}");
        }
        pause(Duration::from_millis(200))?;
    }
    bail!("no token through the VIP within {timeout:?}; last answer {last}")
}

// ------------------------------------------------------------ the bench

/// Waits until the topology has settled: every process up, both gateways
/// healthy on their machines, one machine holding the VIP with its daemon
/// master and the other's backup (for agenda-vip also the lease agreeing),
/// and a request served through the VIP; all of it seen twice in a row.
/// Returns the holder.
fn settle(
    t: &Topology,
    d: Daemon,
    client: &NetnsWorker,
    probe: &Probe,
    timeout: Duration,
) -> Result<&'static str> {
    let start = Instant::now();
    let mut streak: Option<&'static str> = None;
    let mut why = String::new();
    loop {
        check_interrupted()?;
        match settled_once(t, d, client, probe) {
            Ok(h) if streak == Some(h) => return Ok(h),
            Ok(h) => streak = Some(h),
            Err(e) => {
                streak = None;
                why = format!("{e:#}");
            }
        }
        if start.elapsed() > timeout {
            bail!("{}: not settled after {timeout:?}: {why}", d.name());
        }
        pause(Duration::from_millis(100))?;
    }
}

fn settled_once(
    t: &Topology,
    d: Daemon,
    client: &NetnsWorker,
    probe: &Probe,
) -> Result<&'static str> {
    for m in MACHINES {
        let x = suffix(m);
        for p in std::iter::once(format!("agenda-gateway-{x}")).chain(d.processes(x)) {
            ensure!(t.alive(&p), "{p} is down");
        }
        t.curl(
            m,
            &format!("{}://127.0.0.1:{VIP_PORT}/healthz", t.db_scheme()),
        )
        .with_context(|| format!("gateway on {m}"))?;
    }
    let holders: Vec<&'static str> = MACHINES.into_iter().filter(|m| t.has_vip(m)).collect();
    ensure!(holders.len() == 1, "VIP holders: {holders:?}");
    let h = holders[0];
    let (hs, os) = (d.state(t, h), d.state(t, other_machine(h)));
    ensure!(
        hs.as_deref() == Some("master") && os.as_deref() == Some("backup"),
        "{} state on {h} (holder) {hs:?}, on {} {os:?}",
        d.name(),
        other_machine(h)
    );
    if d == Daemon::AgendaVip {
        let lease = t.lease_holder();
        ensure!(
            lease.as_deref() == Some(h),
            "VIP lease {lease:?}, address on {h}"
        );
    }
    let p = probe.clone();
    ensure!(
        client.run(move || p.once())?,
        "no request served through the VIP"
    );
    Ok(h)
}

/// One gateway kill.
struct Kill {
    from: &'static str,
    took: Duration,
    tries: u32,
}

fn kill_round(
    t: &Topology,
    d: Daemon,
    client: &NetnsWorker,
    probe: &Probe,
    timeout: Duration,
) -> Result<Kill> {
    let holder = settle(t, d, client, probe, timeout)?;
    // The holder as it is at this instant.
    ensure!(
        t.has_vip(holder) && !t.has_vip(other_machine(holder)),
        "the VIP moved before the kill"
    );
    let gateway = format!("agenda-gateway-{}", suffix(holder));
    let pid = t
        .pid(&gateway)
        .filter(|_| t.alive(&gateway))
        .with_context(|| format!("{gateway} is not running"))?;
    let p = probe.clone();
    // The kill and the clock start on the client's thread, so nothing
    // (no thread hand-over) sits between them and the first request.
    let served = client.run(move || -> Result<Option<(Duration, u32)>> {
        let pid = libc::pid_t::try_from(pid)?;
        // SAFETY: kill(2) of the gateway this topology started (its pid
        // from the topology's own record, just checked alive).
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
        }
        let killed = Instant::now();
        Ok(p.until_served(killed, timeout))
    })??;
    let restart = t.netns(&["restart", &gateway]);
    let (took, tries) = served.with_context(|| {
        format!("nothing served through the VIP within {timeout:?} of killing {gateway}")
    })?;
    restart?;
    Ok(Kill {
        from: holder,
        took,
        tries,
    })
}

/// The cut between A and B.
struct Cut {
    holder_before: &'static str,
    during: Holders,
    at_end: u32,
    holder_after: Option<&'static str>,
    settled_after: Option<Duration>,
}

/// Bridge port isolation of machine-a's and machine-b's ports (`va`, `vb`
/// in deploy/netns.sh): isolated ports reach only the others (witness,
/// client), whatever the sockets on them do with routing.
fn isolate(t: &Topology, on: bool) -> Result<()> {
    let lan = t.ns("agenda-lan");
    for port in ["va", "vb"] {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                &lan,
                "link",
                "set",
                "dev",
                port,
                "type",
                "bridge_slave",
            ])
            .args(["isolated", if on { "on" } else { "off" }])
            .output()?;
        ensure!(
            out.status.success(),
            "isolating {port} in {lan}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn cut(t: &Topology, d: Daemon, client: &NetnsWorker, probe: &Probe, args: &Args) -> Result<Cut> {
    let timeout = Duration::from_secs(args.round_timeout_secs);
    let holder_before = settle(t, d, client, probe, timeout)?;
    let sampler = HolderSampler::start(t)?;
    let length = Duration::from_secs(args.cut_secs);
    t.netns(&["partition", "machine-a", "machine-b"])?;
    isolate(t, true)?;
    let cut_at = Instant::now();
    while cut_at.elapsed() < length {
        pause(Duration::from_millis(50))?;
    }
    let during = sampler.finish();
    let at_end = MACHINES.iter().filter(|m| t.has_vip(m)).count() as u32;
    let healed = isolate(t, false).and_then(|()| t.netns(&["heal"]).map(|_| ()));
    let during = during?;
    healed?;
    let healed_at = Instant::now();
    let after = settle(t, d, client, probe, timeout);
    Ok(Cut {
        holder_before,
        during,
        at_end,
        holder_after: after.as_ref().ok().copied(),
        settled_after: after.is_ok().then(|| healed_at.elapsed()),
    })
}

/// Everything measured for one daemon.
struct Summary {
    daemon: Daemon,
    kills: Vec<Kill>,
    failed: Vec<String>,
    kill_holders: Option<Holders>,
    cut: Option<Result<Cut>>,
    error: Option<String>,
}

fn run_daemon(d: Daemon, args: &Args) -> Summary {
    let mut s = Summary {
        daemon: d,
        kills: Vec::new(),
        failed: Vec::new(),
        kill_holders: None,
        cut: None,
        error: None,
    };
    if let Err(e) = run_daemon_in(d, args, &mut s) {
        eprintln!("bench-vip: {}: {e:#}", d.name());
        s.error = Some(format!("{e:#}"));
    }
    s
}

fn run_daemon_in(d: Daemon, args: &Args, s: &mut Summary) -> Result<()> {
    let timeout = Duration::from_secs(args.round_timeout_secs);
    let (tag, env): (&str, Vec<(&str, &str)>) = match d {
        Daemon::AgendaVip => ("bv", vec![("AGENDA_RELAY", "0")]),
        Daemon::Keepalived => (
            "bk",
            vec![("AGENDA_RELAY", "0"), ("AGENDA_VIP_DAEMON", "keepalived")],
        ),
    };
    eprintln!("bench-vip: {}: starting the topology...", d.name());
    let t = Topology::up_with_env(tag, &env)?;
    eprintln!(
        "bench-vip: {}: topology up (namespaces {}*, logs in {})",
        d.name(),
        t.ns(""),
        t.state().display()
    );
    let result = (|| -> Result<()> {
        let client = NetnsWorker::new(&t.ns("client"))?;
        let mut probe = Probe::new(&t, &token(&t, timeout)?, args)?;
        let mut token_at = Instant::now();
        let sampler = HolderSampler::start(&t)?;
        for i in 1..=args.kills {
            check_interrupted()?;
            // Tokens live an hour (agenda-users' default): a long run
            // logs in again well before.
            if token_at.elapsed() > Duration::from_secs(1800) {
                probe = Probe::new(&t, &token(&t, timeout)?, args)?;
                token_at = Instant::now();
            }
            match kill_round(&t, d, &client, &probe, timeout) {
                Ok(k) => {
                    eprintln!(
                        "bench-vip: {} kill {i:>2}: gateway on {} killed, first request served after {:>5} ms ({} requests)",
                        d.name(),
                        k.from,
                        k.took.as_millis(),
                        k.tries
                    );
                    s.kills.push(k);
                }
                Err(e) => {
                    check_interrupted()?;
                    eprintln!("bench-vip: {} kill {i:>2}: failed: {e:#}", d.name());
                    s.failed.push(format!("{e:#}"));
                    if s.failed.len() >= 3 {
                        eprintln!("bench-vip: {}: three failed kills; stopping them", d.name());
                        break;
                    }
                }
            }
        }
        s.kill_holders = Some(sampler.finish()?);
        check_interrupted()?;
        eprintln!(
            "bench-vip: {}: cutting machine-a from machine-b for {} s...",
            d.name(),
            args.cut_secs
        );
        let c = cut(&t, d, &client, &probe, args);
        match &c {
            Ok(c) => eprintln!(
                "bench-vip: {}: cut: holder before {}, most holders at once {}, at the end {}, healed: holder {:?}",
                d.name(),
                c.holder_before,
                c.during.max,
                c.at_end,
                c.holder_after
            ),
            Err(e) => eprintln!("bench-vip: {}: cut failed: {e:#}", d.name()),
        }
        s.cut = Some(c);
        Ok(())
    })();
    // Logs are kept when something failed or looks wrong.
    let odd = match &s.cut {
        Some(Ok(c)) => c.holder_after.is_none() || (d == Daemon::AgendaVip && c.during.max > 1),
        Some(Err(_)) => true,
        None => false,
    } || s.kill_holders.as_ref().is_some_and(|h| h.both > 0);
    if result.is_err() || !s.failed.is_empty() || odd {
        t.keep_state();
        eprintln!(
            "bench-vip: {}: logs kept in {}",
            d.name(),
            t.state().display()
        );
    }
    result
}

fn print(summaries: &[Summary], args: &Args) {
    println!();
    println!(
        "VIP failover: agenda-vip against keepalived, same namespaces, same gateways, one run"
    );
    let row = |c: &[String]| {
        format!(
            "{:<11} {:>5} {:>6} {:>6} {:>6} {:>6} {:>9} | {:>8} {:>8} {:>9} {:>9} | {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
        )
    };
    println!(
        "{:<11} {:<43} | {:<37} |",
        "",
        "gateway kills (ms to first request served)",
        format!("A-B link cut {} s: VIP holders", args.cut_secs)
    );
    let head = [
        "daemon",
        "kills",
        "failed",
        "p50",
        "p95",
        "max",
        "2 holders",
        "most",
        "at end",
        "2 for ms",
        "0 for ms",
        "holder: before -> after heal (ms)",
    ];
    println!("{}", row(&head.map(str::to_string)));
    for s in summaries {
        let mut t: Vec<u128> = s.kills.iter().map(|k| k.took.as_millis()).collect();
        t.sort_unstable();
        let ms = |v: u128| {
            if t.is_empty() {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        let mut cells = vec![
            s.daemon.name().to_string(),
            s.kills.len().to_string(),
            s.failed.len().to_string(),
            ms(pct(&t, 0.5)),
            ms(pct(&t, 0.95)),
            ms(t.last().copied().unwrap_or(0)),
            s.kill_holders
                .as_ref()
                .map_or("-".to_string(), |h| format!("{}/{}", h.both, h.samples)),
        ];
        match &s.cut {
            Some(Ok(c)) => cells.extend([
                c.during.max.to_string(),
                c.at_end.to_string(),
                c.during.both_for.as_millis().to_string(),
                c.during.none_for.as_millis().to_string(),
                format!(
                    "{} -> {}",
                    c.holder_before,
                    c.holder_after.map_or("unsettled".to_string(), |h| {
                        format!("{h} ({})", c.settled_after.unwrap_or_default().as_millis())
                    })
                ),
            ]),
            Some(Err(_)) => cells.extend(["failed", "-", "-", "-", "-"].map(str::to_string)),
            None => cells.extend(["-", "-", "-", "-", "-"].map(str::to_string)),
        }
        let note = match (s.daemon, &s.cut) {
            (Daemon::Keepalived, Some(Ok(c))) if c.during.max >= 2 => {
                "  <- two holders by design: VRRP has no quorum"
            }
            (Daemon::AgendaVip, Some(Ok(c))) if c.during.max >= 2 => {
                "  <- TWO HOLDERS: must never happen"
            }
            _ => "",
        };
        println!("{}{note}", row(&cells));
    }
    println!(
        "kills: kill -9 of the gateway on the VIP holder (confirmed just before) to the first GET /v1/me answered 200\n\
         \x20      through the VIP from the client namespace (a fresh connection started every {} ms, overlapping, {} ms budget each);\n\
         \x20      2 holders: samples (every 10 ms, both machines) with the VIP on both, over all the kills",
        args.poll_ms, args.request_timeout_ms
    );
    println!(
        "cut:   netns.sh partition machine-a machine-b plus bridge port isolation of A and B (the witness, agenda-db\n\
         \x20      node 5, and the client still reach both); most: machines holding the VIP at once; at end: holders\n\
         \x20      when the cut ends; 2 / 0 for ms: time with two holders / none; holder before the cut and once settled\n\
         \x20      after the heal (ms from the heal)"
    );
    println!(
        "keepalived has two holders in the cut by design: VRRP has no quorum, each side hears no adverts and takes\n\
         \x20      the VIP; agenda-vip holds it only with the VIP lease in agenda-db, which one side at most can hold."
    );
    println!("settings, both daemons: priority 150 on A, 100 on B, no preemption, adverts every 100 ms unicast to the other");
    println!("      machine (master down after 3 adverts + skew from the priority), local gateway health: GET");
    println!("      http://127.0.0.1:8080/healthz every 100 ms, 100 ms to answer, fall 3, rise 2, starting unhealthy;");
    println!("      a refused connection counts at once; unhealthy: the VIP is given up at once and the peer told");
    println!("      (priority-0 advert); gratuitous ARPs on takeover, also after Linux's 1 s ARP locktime.");
    println!("      agenda-vip: HMAC-authenticated adverts, VIP lease 1.5 s, lock-delay 300 ms, a sole backup takes a");
    println!("      release over without the skew, arping -A every 250 ms for 2 s, gateways fenced (--vip-addr).");
    println!("      keepalived 2.2.7 (Debian): vrrp_version 3, advert_int 0.1, state BACKUP + nopreempt, unicast_peer,");
    println!("      no authentication (VRRPv3 has none), health as a track_file written by deploy/keepalived-health.sh");
    println!("      (vrrp_script runs at most once a second), vrrp_garp_master_repeat 3 (at once) and again after");
    println!("      vrrp_garp_master_delay 1 s; gateways without the fence.");
    for s in summaries {
        if let Some(e) = &s.error {
            println!("{}: stopped early: {e}", s.daemon.name());
        }
        for f in &s.failed {
            println!("{}: failed kill: {f}", s.daemon.name());
        }
        if let Some(Err(e)) = &s.cut {
            println!("{}: cut failed: {e:#}", s.daemon.name());
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !is_root() {
        eprintln!("bench_vip: needs root (network namespaces); run `sudo make bench-vip`");
        return ExitCode::FAILURE;
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut daemons = Vec::new();
    if !args.no_agenda_vip {
        daemons.push(Daemon::AgendaVip);
    }
    if !args.no_keepalived {
        daemons.push(Daemon::Keepalived);
    }
    let mut summaries = Vec::new();
    for d in daemons {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        summaries.push(run_daemon(d, &args));
    }
    print(&summaries, &args);
    // The numbers are reported, not judged; a daemon that could not be
    // measured at all (or an interrupted run) is a failure.
    if INTERRUPTED.load(Ordering::Relaxed) || summaries.iter().any(|s| s.error.is_some()) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
