//! The whole Agenda system on loopback, for black-box tests of the public
//! HTTP API: an agenda-db [`Cluster`], `agenda-users` and `agenda-groups`
//! replicas and one `agenda-gateway`, all real processes.
//!
//! Like [`crate::cluster`]: one temp dir per system (logs), free ports, no
//! fixed sleeps (poll with deadlines), every process killed on drop, log
//! tails printed when a test panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::cluster::{bin, free_port, metrics_text, sample, Cluster, Options};

/// Password of the test Redis servers.
pub const REDIS_PASSWORD: &str = "test-redis-password";

/// Password of every account made by [`Api::register`].
pub const PASSWORD: &str = "correct-horse-1";

/// What to start.
#[derive(Clone, Debug)]
pub struct SystemOptions {
    /// agenda-db nodes.
    pub db_nodes: u64,
    /// agenda-users replicas.
    pub users: usize,
    /// agenda-groups replicas.
    pub groups: usize,
    /// Also start the Redis layer (two supervisors, each with its
    /// redis-server), so notifications flow live.
    pub redis: bool,
    /// Extra flags for the gateway.
    pub gateway_args: Vec<String>,
    /// Extra flags for every agenda-db node.
    pub db_args: Vec<String>,
    /// Extra flags for every agenda-users replica.
    pub users_args: Vec<String>,
    /// Extra flags for every agenda-groups replica.
    pub groups_args: Vec<String>,
    /// Give users and groups replicas a `--http` port (`/metrics`).
    pub metrics: bool,
    /// Log filter of every process (default `info`).
    pub log: Option<String>,
    /// TLS on every link (mutual inside: agenda-db, its peers, users,
    /// groups, the supervisors and Redis; HTTPS at the gateway), with
    /// certificates from `agendactl certs`.
    pub tls: bool,
    /// Start agenda-db as a new cluster restored from this snapshot file
    /// (`agendactl snapshot restore` into every member's data dir, a new
    /// cluster token), instead of an empty one.
    pub restore_from: Option<std::path::PathBuf>,
}

impl Default for SystemOptions {
    fn default() -> Self {
        SystemOptions {
            db_nodes: 3,
            users: 2,
            groups: 2,
            redis: false,
            gateway_args: Vec::new(),
            db_args: Vec::new(),
            users_args: Vec::new(),
            groups_args: Vec::new(),
            metrics: false,
            log: None,
            tls: false,
            restore_from: None,
        }
    }
}

/// The `--db` flag value for a cluster.
/// Certificates for a TLS system in `dir/certs`: the cluster options
/// (nodes with the `peer` identity, the harness's clients with `test`)
/// and the `--tls-dir` flag for the services.
fn tls_setup(dir: &std::path::Path) -> Result<(Options, Vec<String>)> {
    use agendactl::certs::{issue, Leaf, Role};
    let certs = dir.join("certs");
    issue(
        &certs,
        &[
            Leaf::new("peer", Role::Peer),
            Leaf::new("users", Role::Users),
            Leaf::new("groups", Role::Groups),
            Leaf::new("gateway", Role::Gateway),
            Leaf::new("supervisor", Role::Supervisor),
            Leaf::new("redis-a", Role::Redis),
            Leaf::new("redis-b", Role::Redis),
            Leaf::new("test", Role::Operator),
        ],
        1,
        false,
    )?;
    let test =
        agenda_common::tls::Identity::load(&agenda_common::tls::TlsFiles::in_dir(&certs, "test"))?;
    let dir_flag = vec!["--tls-dir".to_string(), certs.display().to_string()];
    let mut node_args = dir_flag.clone();
    node_args.extend(["--tls-name".to_string(), "peer".to_string()]);
    Ok((
        Options {
            args: node_args,
            tls: Some(test.client_config()?),
            ..Options::default()
        },
        dir_flag,
    ))
}

fn db_addrs(db: &Cluster) -> String {
    db.nodes
        .values()
        .map(|n| n.grpc.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// One service process.
struct Proc {
    name: String,
    addr: String,
    /// Its `--http` (`/metrics`), when it was given one.
    http: Option<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// A running system. Dropping it kills every process.
pub struct System {
    procs: Vec<Proc>,
    gateway: String,
    /// The agenda-db cluster (store and registry).
    pub db: Cluster,
    /// The Redis layer, when started.
    pub redis: Option<crate::redis::RedisLayer>,
    /// A TLS system's public client configuration (the gateway serves
    /// https:// and wss://); `None`: plaintext.
    pub public_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    dir: tempfile::TempDir,
    /// Whether users and groups replicas get a `--http` port.
    metrics: bool,
    /// Their log filter.
    log: String,
}

impl System {
    /// The default system without the gateway's per-person rate, for tests
    /// whose load is one person (or everyone) as fast as answers come and
    /// that are not about that rate (api_limits is); panics if it does not
    /// come up.
    pub async fn start_without_person_rate() -> System {
        System::start(SystemOptions {
            gateway_args: ["--person-rate", "1000000", "--person-burst", "1000000"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("start the system: {e:#}"))
    }

    /// The default system and a client of its gateway; panics if it does
    /// not come up.
    pub async fn start_with_api() -> (System, Api) {
        let sys = System::start(SystemOptions::default())
            .await
            .unwrap_or_else(|e| panic!("start the system: {e:#}"));
        let api = sys.api();
        (sys, api)
    }

    /// One replica of each service, for tests that stop and start
    /// `agenda-users` themselves; panics if the system does not come up.
    pub async fn start_single() -> System {
        System::start(SystemOptions {
            users: 1,
            groups: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("start the system: {e:#}"))
    }

    /// Starts everything and waits until the gateway is ready and every
    /// service replica is in the registry.
    pub async fn start(opts: SystemOptions) -> Result<System> {
        // Fail before starting anything if a binary is missing.
        let users_bin = bin("agenda-users")?;
        let groups_bin = bin("agenda-groups")?;
        let gateway_bin = bin("agenda-gateway")?;
        let dir = tempfile::Builder::new()
            .prefix("agenda-system-test")
            .tempdir()?;
        let (db_opts, tls_args) = if opts.tls {
            tls_setup(dir.path())?
        } else {
            (Options::default(), Vec::new())
        };
        let mut db_opts = db_opts;
        db_opts.args.extend(opts.db_args.iter().cloned());
        if let Some(log) = &opts.log {
            db_opts.args.push(format!("--log={log}"));
        }
        let db = match &opts.restore_from {
            None => {
                Cluster::start(Options {
                    size: opts.db_nodes,
                    ..db_opts
                })
                .await?
            }
            Some(file) => {
                let mut args = db_opts.args.clone();
                args.push("--cluster-token=restored".into());
                let db_opts = Options {
                    size: opts.db_nodes,
                    args,
                    ..db_opts
                };
                Cluster::start_prepared(db_opts, |id, data_dir, members| {
                    let out = std::process::Command::new(bin("agendactl")?)
                        .arg("snapshot")
                        .arg("restore")
                        .arg(file)
                        .arg("--data-dir")
                        .arg(data_dir)
                        .args(["--id", &id.to_string(), "--members", members])
                        .args(["--cluster-token", "restored"])
                        .output()?;
                    anyhow::ensure!(
                        out.status.success(),
                        "restore member {id}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    Ok(())
                })
                .await?
            }
        };
        let db_addrs = db_addrs(&db);
        let redis = if opts.redis {
            let endpoints: Vec<String> = db.nodes.values().map(|n| n.grpc.clone()).collect();
            let certs = dir.path().join("certs");
            let tls = opts.tls.then_some(certs.as_path());
            Some(
                crate::redis::RedisLayer::start_with(&endpoints, dir.path(), REDIS_PASSWORD, tls)
                    .await?,
            )
        } else {
            None
        };
        let public_tls = if opts.tls {
            Some(agenda_common::tls::public_client_config(
                &dir.path().join("certs").join("ca.pem"),
            )?)
        } else {
            None
        };
        let mut sys = System {
            procs: Vec::new(),
            gateway: String::new(),
            db,
            redis,
            public_tls,
            dir,
            metrics: false,
            log: "info".into(),
        };
        let with_tls = |name: &str, extra: &[String]| -> Vec<String> {
            let mut args = extra.to_vec();
            if !tls_args.is_empty() {
                args.extend(tls_args.iter().cloned());
                args.extend(["--tls-name".to_string(), name.to_string()]);
            }
            args
        };
        sys.metrics = opts.metrics;
        if let Some(log) = &opts.log {
            sys.log = log.clone();
        }
        for i in 0..opts.users {
            sys.spawn(
                &users_bin,
                format!("users-{i}"),
                &db_addrs,
                &with_tls("users", &opts.users_args),
            )?;
        }
        for i in 0..opts.groups {
            sys.spawn(
                &groups_bin,
                format!("groups-{i}"),
                &db_addrs,
                &with_tls("groups", &opts.groups_args),
            )?;
        }
        sys.gateway = sys.spawn(
            &gateway_bin,
            "gateway".into(),
            &db_addrs,
            &with_tls("gateway", &opts.gateway_args),
        )?;
        if let Err(e) = sys.wait_ready(Duration::from_secs(30)).await {
            bail!("{e:#}\n{}", sys.all_log_tails(30));
        }
        Ok(sys)
    }

    /// Starts one more agenda-users replica named `name` (e.g. after the
    /// data was changed underneath the running ones); returns its address.
    pub fn start_users(&mut self, name: &str) -> Result<String> {
        let db = db_addrs(&self.db);
        self.spawn(&bin("agenda-users")?, name.to_string(), &db, &[])
    }

    /// Starts one more agenda-groups replica named `name`; returns its
    /// address.
    pub fn start_groups(&mut self, name: &str) -> Result<String> {
        let db = db_addrs(&self.db);
        self.spawn(&bin("agenda-groups")?, name.to_string(), &db, &[])
    }

    fn spawn(&mut self, bin: &PathBuf, name: String, db: &str, extra: &[String]) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let http =
            (self.metrics && name != "gateway").then(|| format!("127.0.0.1:{}", free_port()));
        let child = Command::new(bin)
            .args(["--listen", &addr, "--db", db, "--log", &self.log])
            .args(http.iter().flat_map(|h| ["--http".to_string(), h.clone()]))
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .env("AGENDA_REDIS_PASSWORD", REDIS_PASSWORD)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {name} ({})", bin.display()))?;
        self.procs.push(Proc {
            name,
            addr: addr.clone(),
            http,
            log,
            child: Some(child),
        });
        Ok(addr)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(2));
        if let Some(tls) = &self.public_tls {
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
        }
        let http = http.build()?;
        let readyz = format!("{}/readyz", self.url());
        let mut last: String;
        loop {
            self.check_running()?;
            match http.get(&readyz).send().await {
                Ok(r) if r.status() == StatusCode::OK => break,
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!("gateway not ready after {timeout:?}: GET /readyz -> {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Ready needs one replica of each service; the tests want them all,
        // so wait until each replica's port is in the registry too.
        let client = self.db.client().with_timeout(Duration::from_secs(2));
        loop {
            self.check_running()?;
            let registered: Vec<String> =
                match client.get_prefix(agenda_common::registry::SERVICES).await {
                    Ok(r) => r
                        .kvs
                        .iter()
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                        .collect(),
                    Err(_) => Vec::new(),
                };
            let missing: Vec<&str> = self
                .procs
                .iter()
                .filter(|p| p.name != "gateway")
                .filter(|p| {
                    let port = format!(":{}", p.addr.rsplit(':').next().unwrap_or_default());
                    !registered.iter().any(|v| v.ends_with(&port))
                })
                .map(|p| p.name.as_str())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline + Duration::from_secs(30) {
                bail!("replicas not in the registry: {missing:?} (registry: {registered:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails if a process that should run has exited.
    fn check_running(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(c) = p.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("{} exited early: {status}", p.name);
                }
            }
        }
        Ok(())
    }

    /// One metric (see [`sample`]) summed over the agenda-users replicas,
    /// a series a replica never had counting 0; needs
    /// `SystemOptions::metrics`.
    pub async fn users_metric(&self, name: &str) -> Result<f64> {
        let mut sum = 0.0;
        for p in self.procs.iter().filter(|p| p.name.starts_with("users-")) {
            let http = p.http.as_ref().context("users replicas without --http")?;
            let text = metrics_text(&format!("http://{http}")).await?;
            sum += sample(&text, name).unwrap_or(0.0);
        }
        Ok(sum)
    }

    /// The system as `make run`'s `endpoints.json` describes one (every
    /// process with its kind, pid and `/metrics` base URL; the
    /// certificates' directory with TLS), for agendactl.
    pub fn endpoints_json(&self) -> serde_json::Value {
        let tls = self.public_tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let mut procs = Vec::new();
        for n in self.db.nodes.values() {
            procs.push(serde_json::json!({
                "name": format!("agenda-db-{}", n.id), "kind": "agenda-db", "machine": "local",
                "pid": n.pid(), "grpc": n.grpc, "http": format!("{scheme}://{}", n.http),
            }));
        }
        for p in &self.procs {
            let kind = match p.name.split('-').next() {
                Some("users") => "agenda-users",
                Some("groups") => "agenda-groups",
                _ => "agenda-gateway",
            };
            let http = if kind == "agenda-gateway" {
                Some(self.url())
            } else {
                p.http.as_ref().map(|h| format!("http://{h}"))
            };
            procs.push(serde_json::json!({
                "name": p.name, "kind": kind, "machine": "local",
                "pid": p.child.as_ref().map(|c| c.id()), "grpc": p.addr, "http": http,
            }));
        }
        if let Some(r) = &self.redis {
            for i in 0..r.addrs().len() {
                procs.push(serde_json::json!({
                    "name": format!("agenda-supervisor-{i}"), "kind": "agenda-supervisor",
                    "machine": "local", "pid": null,
                    "http": format!("http://{}", r.supervisor_http(i)),
                }));
            }
        }
        let mut doc = serde_json::json!({ "processes": procs });
        if tls {
            doc["tls_dir"] = self.certs_dir().display().to_string().into();
        }
        doc
    }

    /// Public base URL, e.g. `http://127.0.0.1:1234`.
    pub fn url(&self) -> String {
        let scheme = if self.public_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.gateway)
    }

    /// Runs `agendactl ARGS --db ... [--tls-dir ... --tls-name test]`
    /// against this system's agenda-db (as the operator); its output, or
    /// why it failed.
    pub fn agendactl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = std::process::Command::new(crate::cluster::bin("agendactl")?);
        cmd.args(args).arg("--db").arg(db_addrs(&self.db));
        if self.public_tls.is_some() {
            cmd.arg("--tls-dir")
                .arg(self.certs_dir())
                .args(["--tls-name", "test"]);
        }
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "agendactl {args:?}: {text}");
        Ok(text)
    }

    /// The deployment's token signing keys, read from agenda-db (to sign
    /// tokens a test needs: expired, short-lived).
    pub async fn signing_keys(&self) -> agenda_common::auth::SigningKeys {
        let raw = self
            .db
            .client()
            .get(agenda_common::auth::SIGNING_KEYS)
            .await
            .expect("read the key set")
            .expect("key set present");
        serde_json::from_slice(&raw.value).expect("key set JSON")
    }

    /// The certificates of a TLS system (`NAME.pem` for users, groups,
    /// gateway, peer and `test`, an operator).
    pub fn certs_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("certs")
    }

    /// A WebSocket on `GET /v1/stream` (WSS on a TLS system).
    pub async fn ws(&self, token: Option<&str>, last_id: Option<&str>) -> Result<crate::ws::Ws> {
        crate::ws::connect_to(&self.url(), self.public_tls.as_ref(), token, last_id).await
    }

    /// A client of the public API.
    pub fn api(&self) -> Api {
        Api::with_tls(&self.url(), self.public_tls.clone())
    }

    fn kill(&mut self, name: &str) {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM a process (`users-0`, `gateway`...) and wait for it to
    /// exit (bounded: SIGKILL after 15 s); returns its exit status.
    pub fn stop(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let p = self.procs.iter_mut().find(|p| p.name == name)?;
        let mut c = p.child.take()?;
        crate::cluster::terminate(&mut c, Duration::from_secs(15))
    }

    /// Address of a process (`users-0`...).
    pub fn addr(&self, name: &str) -> Option<&str> {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.addr.as_str())
    }

    /// Every running process of the system by name (`gateway`, `users-0`,
    /// `groups-1`, `db-2`...) with its pid, e.g. to read its memory from
    /// `/proc/PID/status`.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let services = self
            .procs
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.child.as_ref()?.id())));
        let nodes = self
            .db
            .nodes
            .iter()
            .filter_map(|(id, n)| Some((format!("db-{id}"), n.pid()?)));
        services.chain(nodes).collect()
    }

    /// SIGKILL agenda-users replica `i`.
    pub fn kill_users(&mut self, i: usize) {
        self.kill(&format!("users-{i}"));
    }

    /// SIGKILL agenda-groups replica `i`.
    pub fn kill_groups(&mut self, i: usize) {
        self.kill(&format!("groups-{i}"));
    }

    /// The directory of the services' and the gateway's logs (`NAME.log`).
    pub fn log_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Replaces every agenda-users replica by as many new ones (`users-N`
    /// numbered on) that reach agenda-db through `db` only (comma-separated
    /// gRPC addresses) with `extra` flags; waits until they serve.
    pub async fn replace_users(&mut self, db: &str, extra: &[String]) -> Result<()> {
        let old: Vec<String> = self
            .procs
            .iter()
            .filter(|p| p.name.starts_with("users-") && p.child.is_some())
            .map(|p| p.name.clone())
            .collect();
        // Numbered past every name in use: a name given twice would make
        // `stop` and the `retain` below drop the new replica's handle
        // (and leave it running after the system is gone).
        let first = self
            .procs
            .iter()
            .filter_map(|p| p.name.strip_prefix("users-")?.parse::<usize>().ok())
            .max()
            .map_or(0, |n| n + 1);
        let bin = bin("agenda-users")?;
        let mut args = extra.to_vec();
        if self.public_tls.is_some() {
            args.extend([
                "--tls-dir".to_string(),
                self.certs_dir().display().to_string(),
                "--tls-name".to_string(),
                "users".to_string(),
            ]);
        }
        for i in 0..old.len() {
            self.spawn(&bin, format!("users-{}", first + i), db, &args)?;
        }
        for name in old {
            self.stop(&name);
            self.procs.retain(|p| p.name != name);
        }
        self.wait_ready(Duration::from_secs(30)).await
    }

    /// Last 40 lines of a process's log: `users-0`, `groups-1`, `gateway`,
    /// `db-2`...
    pub fn log_tail(&self, name: &str) -> String {
        self.tail(name, 40)
    }

    fn tail(&self, name: &str, lines: usize) -> String {
        if let Some(id) = name.strip_prefix("db-").and_then(|s| s.parse().ok()) {
            return self.db.log_tail(id, lines);
        }
        let Some(p) = self.procs.iter().find(|p| p.name == name) else {
            return format!("(no process {name})");
        };
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn all_log_tails(&self, lines: usize) -> String {
        let names = self
            .procs
            .iter()
            .map(|p| p.name.clone())
            .chain(self.db.nodes.keys().map(|id| format!("db-{id}")));
        let mut out = names
            .map(|n| format!("--- {n} ---\n{}", self.tail(&n, lines)))
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(r) = &self.redis {
            out.push('\n');
            out.push_str(&r.log_tails(lines));
        }
        out
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() || std::env::var_os("AGENDA_KEEP_LOGS").is_some() {
            eprintln!("{}", self.all_log_tails(20));
            let path = self.dir.path().to_path_buf();
            eprintln!("system test logs kept in {}", path.display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
        }
    }
}

/// Status and JSON body (`Null` when empty, a string when not JSON).
pub type Reply = (StatusCode, Value);

/// A small client of the public API. Clones share the record of 5xx
/// replies, see [`Api::server_errors`].
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    server_errors: Arc<Mutex<Vec<String>>>,
}

impl Api {
    /// Client of the gateway at `base` (generous timeout: loaded machine).
    pub fn new(base: &str) -> Api {
        Api::with_tls(base, None)
    }

    /// Client of the gateway at `base`, an `https://` one with `tls` (see
    /// `agenda_common::tls::public_client_config`).
    pub fn with_tls(base: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Api {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(&tls));
        }
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: http.build().expect("http client"),
            server_errors: Arc::default(),
        }
    }

    /// A request builder for `path` (absolute, e.g. `/v1/me`).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request and reads the reply; `Err` only for transport errors.
    pub async fn try_send(&self, req: reqwest::RequestBuilder) -> Result<Reply> {
        let req = req.build()?;
        let what = format!("{} {}", req.method(), req.url().path());
        let resp = self.http.execute(req).await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_server_error() {
            self.server_errors
                .lock()
                .expect("lock")
                .push(format!("{what} -> {status} {body}"));
        }
        Ok((status, body))
    }

    /// `method path` with an optional bearer token and JSON body; panics on
    /// a transport error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.request(method.clone(), path);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: transport error: {e:#}"))
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(&body))
            .await
    }

    /// PATCH JSON with a token.
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(&body))
            .await
    }

    /// PUT JSON with a token.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Some(&body)).await
    }

    /// DELETE with a token.
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Logs in by username.
    pub async fn login(&self, username: &str, password: &str) -> Reply {
        let body = json!({"username": username, "password": password});
        self.call(Method::POST, "/v1/auth/login", None, Some(&body))
            .await
    }

    /// Registers `username` (email `username@example.com`, password
    /// [`PASSWORD`], anyone may add them to events: most tests put
    /// strangers in each other's agendas) and logs in; returns
    /// `(user_id, access_token)`.
    pub async fn register(&self, username: &str) -> (String, String) {
        self.register_with(username, json!({"add_me": "anyone"}))
            .await
    }

    /// [`Api::register`] with the account's defaults (`add_me`
    /// `shared_group`) or the fields of `extra` instead.
    pub async fn register_with(&self, username: &str, extra: Value) -> (String, String) {
        let mut body = json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": PASSWORD,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (st, user) = self
            .call(Method::POST, "/v1/auth/register", None, Some(&body))
            .await;
        assert_eq!(st, StatusCode::CREATED, "register {username}: {user}");
        let (st, login) = self.login(username, PASSWORD).await;
        assert_eq!(st, StatusCode::OK, "login {username}: {login}");
        let id = user["id"].as_str().expect("user.id").to_string();
        let token = login["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        (id, token)
    }

    /// Creates a group (`kind` hierarchical or flat); returns its id.
    pub async fn create_group(&self, token: &str, name: &str, kind: &str) -> String {
        let body = json!({"name": name, "kind": kind});
        let g = expect(
            self.post("/v1/groups", token, body).await,
            StatusCode::CREATED,
            &format!("create group {name}"),
        );
        g["id"].as_str().expect("group id").to_string()
    }

    /// Invites `name` to `group` at `rank`; returns the invitation's id.
    pub async fn invite(&self, token: &str, group: &str, name: &str, rank: u32) -> String {
        let body = json!({"username": name, "rank": rank});
        let path = format!("/v1/groups/{group}/invitations");
        let inv = expect(
            self.post(&path, token, body).await,
            StatusCode::CREATED,
            &format!("invite {name}"),
        );
        inv["id"].as_str().expect("invitation id").to_string()
    }

    /// Accepts an invitation.
    pub async fn accept(&self, token: &str, invitation: &str) -> Reply {
        let path = format!("/v1/invitations/{invitation}/accept");
        self.post(&path, token, json!({})).await
    }

    /// Every 5xx reply seen so far (by this client and its clones).
    pub fn server_errors(&self) -> Vec<String> {
        self.server_errors.lock().expect("lock").clone()
    }
}

/// Asserts the status of a reply and returns its body.
#[track_caller]
pub fn expect(reply: Reply, want: StatusCode, what: &str) -> Value {
    let (st, body) = reply;
    assert_eq!(st, want, "{what}: got {st} {body}");
    body
}

/// Asserts a 2xx reply (for routes whose exact success code the contract
/// leaves open) and returns its body.
#[track_caller]
pub fn expect_ok(reply: Reply, what: &str) -> Value {
    let (st, body) = reply;
    assert!(st.is_success(), "{what}: got {st} {body}");
    body
}

/// Why `body` is not the DESIGN error shape
/// `{"error":{"code":"..","message":"..","details":{}}}` with `code`.
pub fn error_shape_problem(body: &Value, code: &str) -> Option<String> {
    let e = &body["error"];
    if e["code"] != code {
        return Some(format!("error.code is {} (want {code:?})", e["code"]));
    }
    if !e["message"].is_string() {
        return Some("error.message is not a string".into());
    }
    if !e["details"].is_object() {
        return Some("error.details is not an object".into());
    }
    None
}

/// Asserts an error reply: status, and the DESIGN shape with `code`;
/// returns `error.details`.
#[track_caller]
pub fn expect_error(reply: Reply, want: StatusCode, code: &str, what: &str) -> Value {
    let (st, body) = reply;
    assert_eq!(st, want, "{what}: got {st} {body}");
    if let Some(p) = error_shape_problem(&body, code) {
        panic!("{what}: {p}: {body}");
    }
    body["error"]["details"].clone()
}

/// `items` of a list reply (panics if absent).
pub fn items(body: &Value) -> &Vec<Value> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
}

/// An RFC 3339 time as (seconds since the Unix epoch, UTC offset in
/// seconds), so tests compare instants whatever offset the server writes.
pub fn parse_time(s: &str) -> Option<(i64, i32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Skip fractional seconds.
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *c == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let local = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some((local - offset, offset as i32))
}

/// Seconds since the epoch of an RFC 3339 value (panics if it is not one).
pub fn instant(v: &Value) -> i64 {
    v.as_str()
        .and_then(parse_time)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
        .0
}

/// Seconds since the epoch as RFC 3339 UTC, e.g. `2030-09-02T10:00:00Z`.
pub fn fmt_time(t: i64) -> String {
    // Civil from days (Howard Hinnant).
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Query string `from=..&to=..` (values percent-encoded).
pub fn range(from: &str, to: &str) -> String {
    format!("from={}&to={}", enc(from), enc(to))
}

/// Percent-encodes what RFC 3339 values and usernames may hold.
pub fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
        .replace(',', "%2C")
        .replace(' ', "%20")
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_time("2030-10-28T09:00:00+01:00"),
            parse_time("2030-10-28T08:00:00Z").map(|(t, _)| (t, 3600))
        );
        assert_eq!(
            parse_time("2030-10-21T09:00:00.250+02:00").map(|(t, o)| (t % 86_400 / 3600, o)),
            Some((7, 7200))
        );
        assert_eq!(parse_time("2030-10-21"), None);
        for t in [
            "1970-01-01T00:00:00Z",
            "2030-02-28T23:59:59Z",
            "2032-02-29T12:00:00Z",
        ] {
            assert_eq!(super::fmt_time(parse_time(t).unwrap().0), t);
        }
        assert_eq!(parse_time("2030-10-21T09:00:00"), None);
    }
}
