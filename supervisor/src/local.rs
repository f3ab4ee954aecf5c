//! The local redis-server process: started with the configuration of
//! docs/MESSAGING.md, restarted when it dies (always as a replica of the
//! current primary, never as a primary), stopped on shutdown.
//!
//! A redis-server already answering on the local address (left running by
//! a supervisor that was killed) is adopted instead of started: its pid
//! comes from `INFO server`, and its death is seen through `/proc`.
//!
//! When the local node is itself the published primary and its process
//! died, the restart waits until the leader publishes another primary. If
//! that does not happen in time (no other node answers), the node is
//! started as a replica of another configured node anyway, and the leader
//! promotes it back since it is then the only node answering (see
//! `failover`). Either way it never comes back as a master by itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_common::registry::RedisPrimary;
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use tokio::sync::watch;

use crate::config::split_addr;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::published;
use crate::redis_node::RedisNode;

/// Name of the pid file redis-server writes in its data dir.
pub const PID_FILE: &str = "redis.pid";
/// Name of the redis-server log in its data dir.
pub const LOG_FILE: &str = "redis.log";

/// How long a stopping redis-server gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Pause before the first restart of a process that died young; doubles
/// up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A process that ran this long resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How often a restart waiting for another primary reads the record again.
const RECHECK: Duration = Duration::from_millis(200);

/// What the local process is, and how it is run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `host:port` of the local node.
    pub addr: String,
    /// Every configured node (fallback master when the registry lags).
    pub nodes: Vec<String>,
    /// redis-server, resolved with [`resolve_binary`].
    pub binary: PathBuf,
    /// Data dir.
    pub dir: PathBuf,
    /// requirepass / masterauth (empty: none).
    pub password: String,
    /// How this supervisor reaches the node (password, TLS).
    pub link: agenda_common::net::RedisLink,
    /// The node's own certificate: it then serves TLS only, asks clients
    /// for certificates of the CA and replicates over TLS.
    pub tls: Option<agenda_common::tls::TlsFiles>,
    /// Deadline of one command to the node.
    pub timeout: Duration,
    /// How long the registry may keep naming the dead local node as the
    /// primary before it is started as a replica of another node anyway.
    pub primary_wait: Duration,
}

/// Finds the redis-server binary, with a message that says what to do.
pub fn resolve_binary(path: &Path) -> Result<PathBuf> {
    let is_file = |p: &Path| p.is_file();
    if path.components().count() > 1 || path.is_absolute() {
        return if is_file(path) {
            Ok(path.to_path_buf())
        } else {
            Err(Error::Config(format!(
                "--redis-server {}: no such file (install Redis: apt-get install redis-server)",
                path.display()
            )))
        };
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .map(|d| d.join(path))
        .find(|p| is_file(p))
        .ok_or_else(|| {
            Error::Config(format!(
                "--redis-server {}: not found in PATH (install Redis: apt-get install redis-server, \
                 or pass the binary's path)",
                path.display()
            ))
        })
}

/// The running process.
enum Proc {
    /// Started by this supervisor (with its pid, which `Child::id` forgets
    /// once the process is reaped).
    Child(tokio::process::Child, Option<u32>),
    /// Found running (started by an earlier supervisor).
    Adopted(u32),
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        match self {
            Proc::Child(_, pid) => *pid,
            Proc::Adopted(pid) => Some(*pid),
        }
    }

    /// Resolves when the process has exited, with a description.
    async fn exited(&mut self) -> String {
        match self {
            Proc::Child(c, _) => match c.wait().await {
                Ok(st) => format!("exited: {st}"),
                Err(e) => format!("wait failed: {e}"),
            },
            Proc::Adopted(pid) => {
                while agenda_common::process::alive(*pid) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                "exited (adopted process; status unknown)".into()
            }
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    async fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        signal(pid, libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, self.exited())
            .await
            .is_err()
        {
            tracing::warn!(
                pid,
                "redis-server did not stop within {STOP_GRACE:?}; killing it"
            );
            signal(pid, libc::SIGKILL);
            let _ = tokio::time::timeout(STOP_GRACE, self.exited()).await;
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // Never 0 or 1: kill(0) would signal our own process group.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the
    // redis-server this supervisor started or adopted.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// How often the local node's TLS files are checked for a change.
const TLS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Keeps the local redis-server on its TLS files as they change (a leaf
/// or CA rotation): redis-server reads them only at start, so without
/// this a CA rotation would leave it trusting the old CA only and every
/// new connection refused. Runs until `stop`; nothing to do without TLS.
pub async fn follow_tls(spec: Spec, stop: CancellationToken) {
    let Some(files) = spec.tls.clone() else {
        return;
    };
    let read = || [&files.cert, &files.key, &files.ca].map(|p| std::fs::read(p).ok());
    // Applied once at start too: an adopted redis-server may have been
    // started with older files.
    let mut applied = None;
    let mut node = None;
    let mut last_error = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(TLS_CHECK_EVERY) => {}
        }
        let now = read();
        if applied.as_ref() == Some(&now) {
            continue;
        }
        // One connection kept across changes (each step of a rotation
        // leaves it usable); after a failure, a new client with this
        // process's files as they are now.
        let n = match node.as_mut() {
            Some(n) => n,
            None => match RedisNode::new(&spec.addr, &spec.link, spec.timeout) {
                Ok(n) => node.insert(n),
                Err(e) => {
                    tracing::warn!(node = %spec.addr, error = %e, "cannot reach the local redis-server to reload its TLS files");
                    continue;
                }
            },
        };
        match n.reload_tls(&files).await {
            Ok(()) => {
                tracing::info!(node = %spec.addr, "redis-server read its TLS files");
                applied = Some(now);
            }
            Err(e) => {
                // Said once per new failure, not every second.
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(node = %spec.addr, error = %e, "cannot have redis-server reload its TLS files yet; retrying");
                    last_error = Some(e);
                }
                // A new client reads this process's own files again.
                node = None;
                continue;
            }
        }
        last_error = None;
    }
}

/// Manages the local process until `stop`, then stops it. `primary`
/// follows the published primary (already read once at start).
pub async fn run(
    spec: Spec,
    db: DbClient,
    primary: watch::Receiver<Option<RedisPrimary>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<()> {
    std::fs::create_dir_all(&spec.dir).map_err(Error::io(format!(
        "creating --redis-dir {}",
        spec.dir.display()
    )))?;
    let mut primary = primary;
    let mut proc = match adopt(&spec).await {
        Some(p) => Some(p),
        None => {
            let published = primary.borrow().clone();
            let master = match published {
                None => {
                    tracing::info!(node = %spec.addr, "decision: starting redis-server without a master (no primary published yet; the leader will choose one)");
                    None
                }
                Some(p) if p.addr != spec.addr => Some(p.addr),
                Some(_) => match replica_target(&spec, &db, &mut primary, &stop).await {
                    Some(t) => t,
                    None => return Ok(()),
                },
            };
            Some(spawn(&spec, master.as_deref())?)
        }
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let (pid, status) = match proc.as_mut() {
            Some(p) => tokio::select! {
                () = stop.cancelled() => {
                    tracing::info!(pid = ?p.pid(), "stopping the local redis-server");
                    p.stop().await;
                    return Ok(());
                }
                s = p.exited() => (p.pid(), s),
            },
            None => (None, "not running: the last start failed".to_string()),
        };
        metrics.local_restarts.inc();
        metrics.decision("restart-local");
        tracing::warn!(node = %spec.addr, ?pid, %status,
            "decision: the local redis-server died; restarting it as a replica of the current primary");
        if started.elapsed() >= STABLE_AFTER {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // A redis-server that outlived an earlier supervisor (or that the
        // start-up check missed) holds the port: adopt it, do not fight it.
        if let Some(p) = adopt(&spec).await {
            proc = Some(p);
            continue;
        }
        let Some(master) = replica_target(&spec, &db, &mut primary, &stop).await else {
            return Ok(());
        };
        proc = match spawn(&spec, master.as_deref()) {
            Ok(p) => Some(p),
            Err(e) => {
                // E.g. the binary vanished: keep trying, loudly.
                tracing::error!(error = %e, "cannot restart redis-server; retrying");
                metrics.decision("restart-local-failed");
                None
            }
        };
    }
}

/// The master a restarted local node must replicate: the published
/// primary once it is another node. `None` inside: start without a master
/// (nothing published, or no other node configured). Outer `None`: stop.
///
/// The record is read from agenda-db itself each time, not taken from the
/// `primary` watch (which only wakes us up): the watch is fed by the
/// control loop and can lag, e.g. just after start-up, and a stale "nothing
/// published" once restarted a killed primary as an empty master.
async fn replica_target(
    spec: &Spec,
    db: &DbClient,
    primary: &mut watch::Receiver<Option<RedisPrimary>>,
    stop: &CancellationToken,
) -> Option<Option<String>> {
    let deadline = tokio::time::Instant::now() + spec.primary_wait;
    let mut logged = false;
    loop {
        primary.borrow_and_update();
        match published::read(db).await {
            Ok(p) => match p.primary {
                None => return Some(None),
                Some(p) if p.addr != spec.addr => {
                    tracing::info!(node = %spec.addr, master = %p.addr, epoch = p.epoch,
                        "starting the local redis-server as a replica of the published primary");
                    return Some(Some(p.addr));
                }
                Some(p) => {
                    if !logged {
                        tracing::info!(node = %spec.addr, epoch = p.epoch,
                            "the registry still names this node as the primary; waiting for the leader to publish another before restarting it as a replica");
                        logged = true;
                    }
                }
            },
            Err(e) => {
                if !logged {
                    tracing::warn!(node = %spec.addr, error = %e,
                        "cannot read the published primary; waiting before restarting the local redis-server");
                    logged = true;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            changed = primary.changed() => if changed.is_err() { return None },
            () = tokio::time::sleep(RECHECK) => {}
            () = tokio::time::sleep_until(deadline) => {
                let other = spec.nodes.iter().find(|n| **n != spec.addr).cloned();
                tracing::warn!(node = %spec.addr, fallback = ?other, waited = ?spec.primary_wait,
                    "decision: no other primary was published in time; starting as a replica of another configured node (never as a master)");
                return Some(other);
            }
        }
    }
}

/// Adopts a redis-server already answering on the local address.
async fn adopt(spec: &Spec) -> Option<Proc> {
    let mut node = RedisNode::new(&spec.addr, &spec.link, spec.timeout).ok()?;
    let obs = node.check().await.ok()?;
    let pid = obs.pid?;
    tracing::info!(node = %spec.addr, pid, role = ?obs.role, "adopting the redis-server already running");
    Some(Proc::Adopted(pid))
}

/// Starts redis-server (replicating `master` if given).
fn spawn(spec: &Spec, master: Option<&str>) -> Result<Proc> {
    let (host, port) = split_addr(&spec.addr)?;
    std::fs::create_dir_all(&spec.dir).map_err(Error::io(format!(
        "creating --redis-dir {}",
        spec.dir.display()
    )))?;
    let log_path = spec.dir.join(LOG_FILE);
    let opening = || format!("opening {}", log_path.display());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io(opening()))?;
    let mut cmd = tokio::process::Command::new(&spec.binary);
    cmd.args(server_args(spec, &host, port, master)?)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(Error::io(opening()))?)
        .stderr(log);
    let child = cmd
        .spawn()
        .map_err(Error::io(format!("starting {}", spec.binary.display())))?;
    tracing::info!(node = %spec.addr, pid = ?child.id(), master = ?master, "started redis-server");
    let pid = child.id();
    Ok(Proc::Child(child, pid))
}

/// The redis-server command line (docs/MESSAGING.md).
fn server_args(spec: &Spec, host: &str, port: u16, master: Option<&str>) -> Result<Vec<String>> {
    let dir = spec
        .dir
        .canonicalize()
        .map_err(Error::io(format!("--redis-dir {}", spec.dir.display())))?;
    let mut args: Vec<String> = match &spec.tls {
        // TLS only: the plain port closed, clients and the replica link
        // authenticated by certificates of the cluster CA.
        Some(files) => vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            files.cert.display().to_string(),
            "--tls-key-file".into(),
            files.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            files.ca.display().to_string(),
            "--tls-auth-clients".into(),
            "yes".into(),
            "--tls-replication".into(),
            "yes".into(),
        ],
        None => vec!["--port".into(), port.to_string()],
    };
    args.extend([
        "--bind".into(),
        host.into(),
        "--dir".into(),
        dir.display().to_string(),
        "--pidfile".into(),
        dir.join(PID_FILE).display().to_string(),
        "--daemonize".into(),
        "no".into(),
        "--appendonly".into(),
        "yes".into(),
        "--appendfsync".into(),
        "everysec".into(),
        "--save".into(),
        String::new(),
        "--repl-diskless-sync-delay".into(),
        "0".into(),
        // A replica whose machine died sends no FIN: the primary notices
        // only when its acks stop for this long (default 60 s), and until
        // then the relay's WAIT for it blocks live notifications.
        "--repl-timeout".into(),
        "5".into(),
    ]);
    if !spec.password.is_empty() {
        args.extend([
            "--requirepass".into(),
            spec.password.clone(),
            "--masterauth".into(),
            spec.password.clone(),
        ]);
    }
    if let Some(m) = master {
        let (mh, mp) = split_addr(m)?;
        args.extend(["--replicaof".into(), mh, mp.to_string()]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_is_a_clear_error() {
        let e = resolve_binary(Path::new("/nonexistent/redis-server")).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
        let e = resolve_binary(Path::new("no-such-redis-server-binary")).unwrap_err();
        assert!(e.to_string().contains("not found in PATH"), "{e}");
    }

    #[test]
    fn command_line_has_the_contract_settings() {
        let dir = std::env::temp_dir();
        let spec = Spec {
            addr: "127.0.0.1:7401".into(),
            nodes: vec!["127.0.0.1:7401".into(), "127.0.0.1:7402".into()],
            binary: "redis-server".into(),
            dir,
            password: "pw".into(),
            link: agenda_common::net::RedisLink::default(),
            tls: None,
            timeout: Duration::from_millis(100),
            primary_wait: Duration::from_secs(1),
        };
        let args = server_args(&spec, "127.0.0.1", 7401, Some("127.0.0.1:7402")).unwrap();
        let line = args.join(" ");
        for want in [
            "--appendonly yes",
            "--appendfsync everysec",
            "--requirepass pw",
            "--masterauth pw",
            "--repl-diskless-sync-delay 0",
            "--daemonize no",
            "--replicaof 127.0.0.1 7402",
            "--port 7401",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
    }
}
