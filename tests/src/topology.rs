//! The two-machine topology (network namespaces behind a VIP), for system
//! tests and `make chaos`: a thin handle on `deploy/netns.sh`, so tests,
//! chaos runs and a person at a shell use one definition of the topology.
//!
//! Each [`Topology`] gets its own namespace prefix, state dir and relay
//! port, so it never touches a `make run` that is up on the same host. It
//! is removed (every process and namespace) when dropped, also when a
//! test fails; a failing test keeps the state dir (logs) and says where.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cluster::{bin_dir, free_port};

/// The machines, as `deploy/netns.sh` names them.
pub const MACHINES: [&str; 4] = ["machine-a", "machine-b", "witness", "client"];

/// The other of the two gateway machines (`machine-a` <-> `machine-b`).
pub fn other_machine(machine: &str) -> &'static str {
    if machine == "machine-a" {
        "machine-b"
    } else {
        "machine-a"
    }
}

/// The suffix of a gateway machine's processes (`agenda-gateway-a`): `a`
/// for `machine-a`, `b` for `machine-b`.
pub fn suffix(machine: &str) -> &'static str {
    if machine == "machine-a" {
        "a"
    } else {
        "b"
    }
}

/// Whether this process may build namespaces (tests skip otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the machine in namespace `ns` holds `vip`: the address is on
/// its interface and the link has a carrier (a powered-off machine keeps
/// its addresses but answers nobody).
fn holds(ns: &str, vip: &str) -> bool {
    let has_addr = Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/")))
        .unwrap_or(false);
    has_addr
        && Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", "eth0"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("LOWER_UP"))
            .unwrap_or(false)
}

/// A running topology.
pub struct Topology {
    script: PathBuf,
    state: PathBuf,
    keep: Option<tempfile::TempDir>,
    prefix: String,
    /// The host relay's base URL (reaches the VIP from the client namespace).
    pub url: String,
    /// The VIP.
    pub vip: String,
    keep_state: AtomicBool,
}

impl Topology {
    /// Builds the namespaces and starts every process (fresh data).
    pub fn up(tag: &str) -> Result<Topology> {
        Topology::up_with_env(tag, &[])
    }

    /// [`Topology::up`] with extra environment for `deploy/netns.sh up`,
    /// e.g. `AGENDA_VIP_DAEMON=keepalived` (`make bench-vip`) or
    /// `AGENDA_RELAY=0` (no host relay: [`Topology::url`] then reaches
    /// nothing).
    pub fn up_with_env(tag: &str, env: &[(&str, &str)]) -> Result<Topology> {
        if !is_root() {
            bail!("the namespace topology needs root");
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/netns.sh");
        let dir = tempfile::Builder::new()
            .prefix("agenda-topology-")
            .tempdir()?;
        let prefix = format!("{tag}{}-", std::process::id() % 100_000);
        let relay = format!("127.0.0.1:{}", free_port());
        let mut t = Topology {
            script,
            state: dir.path().to_path_buf(),
            keep: Some(dir),
            prefix,
            url: format!("http://{relay}"),
            vip: String::new(),
            keep_state: AtomicBool::new(false),
        };
        let out = t
            .command(&["up"])
            .env("AGENDA_RELAY_LISTEN", &relay)
            .env("AGENDA_FRESH", "1")
            .envs(env.iter().copied())
            .output()
            .context("running deploy/netns.sh up")?;
        if !out.status.success() {
            bail!(
                "deploy/netns.sh up failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                t.log_tails(20)
            );
        }
        let ep = t.endpoints()?;
        t.vip = ep["vip"]
            .as_str()
            .context("endpoints.json: vip")?
            .to_string();
        if t.certs().is_some() {
            t.url = t.url.replacen("http://", "https://", 1);
        }
        Ok(t)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .args(args)
            .env("AGENDA_NETNS_PREFIX", &self.prefix)
            .env("AGENDA_STATE", &self.state)
            .env("AGENDA_BIN_DIR", bin_dir());
        c
    }

    /// Runs `deploy/netns.sh ARGS...`; fails with its output if it fails.
    pub fn netns(&self, args: &[&str]) -> Result<Output> {
        let out = self.command(args).output()?;
        if !out.status.success() {
            bail!(
                "deploy/netns.sh {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// The state dir (logs, endpoints.json).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// `endpoints.json`.
    pub fn endpoints(&self) -> Result<Value> {
        let text = std::fs::read_to_string(self.state.join("endpoints.json"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The namespace of a machine.
    pub fn ns(&self, machine: &str) -> String {
        format!("{}{machine}", self.prefix)
    }

    /// Runs a command on a machine.
    pub fn on(&self, machine: &str, cmd: &[&str]) -> Result<Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.ns(machine)])
            .args(cmd)
            .output()?)
    }

    /// The topology's certificates (`deploy/netns.sh` runs mutual TLS
    /// inside unless AGENDA_TLS=0), if any.
    pub fn certs(&self) -> Option<PathBuf> {
        let dir = self.state.join("certs");
        dir.join("ca.pem").exists().then_some(dir)
    }

    /// The gateways' base URL on the VIP (from the client namespace):
    /// `https://` when the topology has certificates.
    pub fn vip_url(&self) -> String {
        format!("{}://{}:8080", self.db_scheme(), self.vip)
    }

    /// How a client of the gateways trusts them (the topology's CA), when
    /// they serve HTTPS.
    pub fn public_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        let ca = self.certs()?.join("ca.pem");
        Some(agenda_common::tls::public_client_config(&ca).expect("the topology's CA"))
    }

    /// `scheme://` of agenda-db's REST (and of the gateways).
    pub fn db_scheme(&self) -> &'static str {
        if self.certs().is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `--cacert`, `--cert` and `--key` for the operator's certificate
    /// (curl and redis-cli take the same), when the topology has them.
    pub fn operator_tls_flags(&self) -> Vec<String> {
        let Some(dir) = self.certs() else {
            return Vec::new();
        };
        [
            ("--cacert", "ca.pem"),
            ("--cert", "agendactl.pem"),
            ("--key", "agendactl-key.pem"),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_string(), dir.join(file).display().to_string()])
        .collect()
    }

    /// GET `url` with curl from a machine; the body when it answers 2xx.
    /// An `https://` URL is fetched as the operator (agendactl's
    /// certificate).
    pub fn curl(&self, machine: &str, url: &str) -> Result<String> {
        let mut args: Vec<String> = ["curl", "-fsS", "-m", "2"].map(String::from).to_vec();
        if url.starts_with("https://") {
            args.extend(self.operator_tls_flags());
        }
        args.push(url.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.on(machine, &args)?;
        if !out.status.success() {
            bail!(
                "{url} from {machine}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether `machine` holds the VIP now: on its interface, with its
    /// link up (a machine without power holds nothing).
    pub fn has_vip(&self, machine: &str) -> bool {
        holds(&self.ns(machine), &self.vip)
    }

    /// The machine holding the VIP by the lease (what agenda-db says).
    pub fn lease_holder(&self) -> Option<String> {
        // agenda-db's REST answers a GET with the raw value.
        self.curl(
            "witness",
            &format!(
                "{}://10.77.0.13:7105/v1/kv/%2Fregistry%2Fvip%2Fholder",
                self.db_scheme()
            ),
        )
        .ok()
    }

    /// Polls until `machine` alone has the VIP on its interface.
    pub fn wait_vip_on(&self, machine: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let other = if machine == "machine-a" {
            "machine-b"
        } else {
            "machine-a"
        };
        while start.elapsed() < timeout {
            if self.has_vip(machine) && !self.has_vip(other) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the VIP did not settle on {machine} within {timeout:?}")
    }

    /// Polls until one machine has held the VIP, by the lease and by the
    /// address (alone), for `hold` without a break; returns it. After a
    /// partition heals the VIP may still move once (the higher priority
    /// takes it back), so "served once" is not yet "settled".
    pub fn settled_holder(&self, hold: Duration, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        let mut since: Option<(String, Instant)> = None;
        while start.elapsed() < timeout {
            let now = self
                .lease_holder()
                .filter(|m| self.has_vip(m) && !self.has_vip(other_machine(m)));
            since = match (now, since) {
                (Some(m), Some((was, at))) if m == was => {
                    if at.elapsed() >= hold {
                        return Ok(m);
                    }
                    Some((was, at))
                }
                (Some(m), _) => Some((m, Instant::now())),
                (None, _) => None,
            };
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the VIP did not stay on one machine for {hold:?} within {timeout:?}")
    }

    /// Keeps the state dir (logs, histories) when dropped.
    pub fn keep_state(&self) {
        self.keep_state.store(true, Ordering::Relaxed);
    }

    /// Whether a process (by name) is alive (a zombie is not: nothing
    /// may reap the detached processes promptly).
    pub fn alive(&self, name: &str) -> bool {
        self.pid(name).is_some_and(agenda_common::process::alive)
    }

    /// Pid of a process by name.
    pub fn pid(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.state.join("run").join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// A process's metric (a line `name{labels} value` starting with `metric`).
    pub fn metric(&self, machine: &str, url: &str, metric: &str) -> Result<f64> {
        let body = self.curl(machine, url)?;
        body.lines()
            .find(|l| l.starts_with(metric))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{metric} not in {url}"))
    }

    /// Samples both machines for the VIP until stopped; counts the samples
    /// in which both hold it (A, then B, then A again all holding: no
    /// false alarm from a move between two reads).
    pub fn watch_holders(&self) -> HolderWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let both = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (a, b, vip) = (self.ns("machine-a"), self.ns("machine-b"), self.vip.clone());
        let (s, bo, sa) = (stop.clone(), both.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            let has = |ns: &str| holds(ns, &vip);
            while !s.load(Ordering::Relaxed) {
                if has(&a) && has(&b) && has(&a) {
                    bo.fetch_add(1, Ordering::Relaxed);
                }
                sa.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        HolderWatch {
            stop,
            both,
            samples,
            handle: Some(handle),
        }
    }

    /// The last lines of every log (for failure messages).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(self.state.join("logs")) {
            let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                out.push_str(&format!("--- {}\n", p.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
        if std::thread::panicking() || self.keep_state.load(Ordering::Relaxed) {
            if let Some(dir) = self.keep.take() {
                let kept = dir.keep();
                eprintln!("topology logs kept in {}", kept.display());
            }
        }
    }
}

/// A running sampler of VIP holders.
pub struct HolderWatch {
    stop: Arc<AtomicBool>,
    both: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl HolderWatch {
    /// Stops sampling; returns (samples with two holders, samples).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.both.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

impl Drop for HolderWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
