//! Real agenda-db processes on loopback, for system tests and benchmarks.
//!
//! Each [`Cluster`] lives in its own temp dir (data dirs and logs), picks
//! free ports, and kills every process it started when dropped, also when a
//! test fails. Nothing here sleeps for a fixed time: helpers poll a
//! condition until a deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agenda_common::DbClient;
use anyhow::{bail, Context, Result};

/// Directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("AGENDA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary, with a clear message if it is not built.
pub fn bin(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!(
            "{} not found; build it first (`cargo build --workspace`, or `make test` which does)",
            p.display()
        );
    }
    Ok(p)
}

/// The `p` quantile (0.0-1.0) of sorted values, nearest rank (0 when
/// empty); the benchmarks' p50/p95.
pub fn pct(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A free loopback port: bound then released, and never handed out twice
/// by this process (the OS may offer a just-released port again, and two
/// nodes on one port make a cluster that never forms).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().expect("port registry");
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Sends SIGTERM to a child we started and waits up to `timeout` for it
/// to exit; SIGKILL after that. Returns its exit status.
pub fn terminate(c: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = c.kill();
            return c.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` (expected to exit on its own: a start-up check, `--help`)
/// and returns its output; fails if it is still running after 10 s, so a
/// process that unexpectedly starts never hangs a test.
pub fn run_to_exit(cmd: &mut Command) -> Result<std::process::Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    for _ in 0..500 {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("{cmd:?} did not exit")
}

/// Checks a refused start-up: non-zero exit, no panic, `want` in stderr.
pub fn expect_refusal(out: &std::process::Output, what: &str, want: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(!out.status.success(), "{what} should fail");
    anyhow::ensure!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    anyhow::ensure!(
        stderr.contains(want),
        "{what}: expected {want:?} in: {stderr}"
    );
    Ok(())
}

/// One lazily connected gRPC channel per address (host:port).
/// Like [`channels`], over mutual TLS with `tls` when given.
pub fn channels_with(
    addrs: &[String],
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Vec<tonic::transport::Channel>> {
    match tls {
        None => channels(addrs),
        Some(config) => addrs
            .iter()
            .map(|a| Ok(agenda_common::net::tls_channel(a, config.clone())?))
            .collect(),
    }
}

pub fn channels(addrs: &[String]) -> Result<Vec<tonic::transport::Channel>> {
    addrs
        .iter()
        .map(|a| {
            Ok(
                tonic::transport::Endpoint::from_shared(format!("http://{a}"))?
                    .tcp_nodelay(true)
                    .connect_lazy(),
            )
        })
        .collect()
}

/// Reads one metric from `base`'s `/metrics`: the first sample whose line
/// starts with `name` (a name, or a name with its labels).
pub async fn scrape_metric(base: &str, name: &str) -> Result<f64> {
    sample(&metrics_text(base).await?, name)
        .with_context(|| format!("metric {name} not found at {base}"))
}

/// `base`'s `/metrics` page.
pub async fn metrics_text(base: &str) -> Result<String> {
    Ok(reqwest::get(format!("{base}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The first sample of `text` whose line starts with `name`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One agenda-db process.
pub struct Node {
    /// Raft id.
    pub id: u64,
    /// gRPC address.
    pub grpc: String,
    /// REST address (host:port).
    pub http: String,
    /// Raft address when apart from `grpc` (`--peer-listen`).
    pub peer: Option<String>,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    child: Option<Child>,
    join: bool,
}

impl Node {
    /// Where peers send it raft traffic (its address in `--peers`).
    pub fn raft_addr(&self) -> &str {
        self.peer.as_deref().unwrap_or(&self.grpc)
    }

    /// Operator base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// Options of a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of initial members.
    pub size: u64,
    /// Extra flags for every node.
    pub args: Vec<String>,
    /// How the harness's own clients connect when the nodes run with TLS.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Raft traffic on a port of its own per node (`--peer-listen`).
    pub peer_ports: bool,
    /// `(id, bytes)`: node `id`'s data dir is a tmpfs of this size, so a
    /// test can fill its disk (root only; unmounted when the cluster is
    /// dropped).
    pub small_disk: Option<(u64, u64)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            size: 5,
            args: Vec::new(),
            tls: None,
            peer_ports: false,
            small_disk: None,
        }
    }
}

/// Mounts (or, with `remount`, resizes) a tmpfs of `bytes` at `dir`.
fn mount_tmpfs(dir: &Path, bytes: u64, remount: bool) -> Result<()> {
    let opts = if remount {
        format!("remount,size={bytes}")
    } else {
        format!("size={bytes}")
    };
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
        .arg(dir)
        .status()
        .context("run mount")?;
    anyhow::ensure!(status.success(), "mount -o {opts} {} failed", dir.display());
    Ok(())
}

/// A set of agenda-db processes sharing one temp dir.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    opts: Options,
    peers: String,
    /// The processes, by id.
    pub nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    /// Starts `opts.size` nodes and waits until they agree on a leader.
    pub async fn start(opts: Options) -> Result<Cluster> {
        Self::start_prepared(opts, |_, _, _| Ok(())).await
    }

    /// [`Cluster::start`], but each node's data dir is first handed to
    /// `prepare(id, data_dir, peers)` (`peers`: the `--peers` list), e.g.
    /// to restore a backup into it.
    pub async fn start_prepared(
        opts: Options,
        mut prepare: impl FnMut(u64, &Path, &str) -> Result<()>,
    ) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("agenda-db-test")
            .tempdir()?;
        let bin = bin("agenda-db")?;
        let mut nodes = BTreeMap::new();
        for id in 1..=opts.size {
            nodes.insert(id, Self::new_node(dir.path(), id, false, opts.peer_ports));
        }
        let peers = nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.raft_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            bin,
            opts,
            peers,
            nodes,
        };
        if let Some((id, bytes)) = c.opts.small_disk {
            let dir = c.nodes.get(&id).context("no such node")?.data_dir.clone();
            std::fs::create_dir_all(&dir)?;
            mount_tmpfs(&dir, bytes, false)?;
        }
        let ids: Vec<u64> = c.nodes.keys().copied().collect();
        for id in &ids {
            let node = &c.nodes[id];
            prepare(*id, &node.data_dir, &c.peers)?;
        }
        for id in ids {
            c.spawn(id)?;
        }
        if let Err(e) = c.wait_leader(Duration::from_secs(20)).await {
            let tails: Vec<String> = c
                .nodes
                .keys()
                .map(|id| format!("--- node {id} ---\n{}", c.log_tail(*id, 15)))
                .collect();
            anyhow::bail!("{e}\n{}", tails.join("\n"));
        }
        Ok(c)
    }

    fn new_node(dir: &Path, id: u64, join: bool, peer_port: bool) -> Node {
        Node {
            id,
            grpc: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            peer: peer_port.then(|| format!("127.0.0.1:{}", free_port())),
            data_dir: dir.join(format!("node{id}")),
            log: dir.join(format!("node{id}.log")),
            child: None,
            join,
        }
    }

    /// Resizes the tmpfs of [`Options::small_disk`] (space returns).
    pub fn resize_small_disk(&self, bytes: u64) -> Result<()> {
        let (id, _) = self.opts.small_disk.context("no small disk")?;
        mount_tmpfs(&self.nodes[&id].data_dir, bytes, true)
    }

    /// The cluster's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, id: u64) -> Result<()> {
        let peers = self.peers.clone();
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--id={id}"))
            .arg(format!("--listen={}", node.grpc))
            .arg(format!("--http={}", node.http))
            .arg(format!("--peers={peers}"))
            .arg(format!("--data-dir={}", node.data_dir.display()))
            .args(&self.opts.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if node.join {
            cmd.arg("--join");
        }
        if let Some(peer) = &node.peer {
            cmd.arg(format!("--peer-listen={peer}"));
        }
        node.child = Some(cmd.spawn().context("spawn agenda-db")?);
        Ok(())
    }

    /// Client over every running node's gRPC address.
    pub fn client(&self) -> DbClient {
        let eps: Vec<String> = self.nodes.values().map(|n| n.grpc.clone()).collect();
        DbClient::with_tls(&eps, self.opts.tls.clone()).expect("valid endpoints")
    }

    /// Client over every running node with the certificate `name` of
    /// `certs` (a TLS cluster: acting as that process's role).
    pub fn client_as(&self, certs: &std::path::Path, name: &str) -> DbClient {
        let id =
            agenda_common::tls::Identity::load(&agenda_common::tls::TlsFiles::in_dir(certs, name))
                .expect("the certificate");
        let eps: Vec<String> = self.nodes.values().map(|n| n.grpc.clone()).collect();
        DbClient::with_tls(&eps, Some(id.client_config().expect("TLS config")))
            .expect("valid endpoints")
    }

    /// Client bound to one node only.
    pub fn node_client(&self, id: u64) -> DbClient {
        DbClient::with_tls(&[self.nodes[&id].grpc.clone()], self.opts.tls.clone())
            .expect("valid endpoint")
    }

    /// Waits until every running node reports the same leader, and returns it.
    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<u64> {
        let running: Vec<(u64, String)> = self
            .nodes
            .iter_mut()
            .filter_map(|(id, n)| n.is_running().then(|| (*id, n.grpc.clone())))
            .collect();
        let tls = self.opts.tls.clone();
        wait_for("a leader known to every running node", timeout, || {
            let (running, tls) = (running.clone(), tls.clone());
            async move {
                let mut leader = None;
                for (_, addr) in &running {
                    let c = DbClient::with_tls(std::slice::from_ref(addr), tls.clone())
                        .ok()?
                        .with_timeout(Duration::from_millis(500));
                    let s = c.cluster_status().await.ok()?;
                    if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                        return None;
                    }
                    leader = Some(s.leader_id);
                }
                leader
            }
        })
        .await
    }

    /// The current leader according to any reachable node.
    pub async fn leader(&self) -> Result<u64> {
        let c = self.client().with_timeout(Duration::from_secs(5));
        wait_for("a leader", Duration::from_secs(10), || {
            let c = c.clone();
            async move {
                let s = c.cluster_status().await.ok()?;
                (s.leader_id != 0).then_some(s.leader_id)
            }
        })
        .await
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// SIGTERM and wait for a clean exit (bounded), SIGKILL otherwise.
    pub fn stop(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let n = self.nodes.get_mut(&id)?;
        let mut c = n.child.take()?;
        terminate(&mut c, Duration::from_secs(10))
    }

    /// Starts a stopped node again with the same data dir.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        self.spawn(id)
    }

    /// Starts a new empty node that joins through a conf change (the
    /// caller adds it with `member_add`).
    pub fn spawn_joining(&mut self, id: u64) -> Result<&Node> {
        let node = Self::new_node(self.dir.path(), id, true, self.opts.peer_ports);
        self.peers = format!("{},{}={}", self.peers, id, node.raft_addr());
        self.nodes.insert(id, node);
        self.spawn(id)?;
        Ok(&self.nodes[&id])
    }

    /// Reads one metric (first sample whose line starts with `name`) from a
    /// node's `/metrics`.
    pub async fn metric(&self, id: u64, name: &str) -> Result<f64> {
        scrape_metric(&self.nodes[&id].url(), name)
            .await
            .with_context(|| format!("on node {id}"))
    }

    /// Last lines of a node's log (for failure messages).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some((id, _)) = self.opts.small_disk {
            if let Some(n) = self.nodes.get(&id) {
                let _ = Command::new("umount").arg(&n.data_dir).status();
            }
        }
        if std::thread::panicking() || std::env::var_os("AGENDA_KEEP_LOGS").is_some() {
            // Keep the evidence of a failed test.
            let path = self.dir.path().to_path_buf();
            eprintln!("test cluster logs kept in {}", path.display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
        }
    }
}
