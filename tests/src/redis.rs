//! The Redis layer on loopback: two `agenda-supervisor` processes, each
//! owning one real `redis-server`, on top of a running agenda-db (e.g. a
//! [`crate::cluster::Cluster`]).
//!
//! ```ignore
//! let layer = RedisLayer::start(&db_endpoints, cluster.dir(), "pw").await?;
//! let p = layer.primary().await?.unwrap();     // {addr, epoch} from the registry
//! let mut conn = layer.connect(&p.addr).await?;
//! layer.kill_primary().await?;                 // kill -9 the primary redis-server
//! let p2 = layer.wait_primary_after(p.epoch, Duration::from_secs(5)).await?;
//! ```
//!
//! Supervisor `i` (0 or 1) owns Redis node `i` ([`RedisLayer::addrs`]).
//! Data dirs and logs go under the given dir (`redis-a/`, `redis-b/`,
//! `supervisor-a.log`, ...). Dropping the layer kills every supervisor and
//! every redis-server it started, also when a test fails. Nothing here
//! sleeps for a fixed time: helpers poll until a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::AsyncConnectionConfig;
use agenda_common::net::RedisLink;
use agenda_common::DbClient;
use anyhow::{bail, Context, Result};

use crate::cluster::{bin, free_port, scrape_metric, wait_for};

/// Registry key of the published primary.
pub const PRIMARY_KEY: &str = agenda_common::registry::REDIS_PRIMARY;
/// Registry key holding the acting supervisor's id.
pub const ELECTION_KEY: &str = agenda_common::registry::REDIS_SUPERVISOR_ELECTION;

/// The published primary (the registry's record, defined once).
pub use agenda_common::registry::RedisPrimary as PrimaryRecord;

/// What `INFO replication` says about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRole {
    /// `role:master`.
    pub master: bool,
    /// For a replica: `master_host:master_port`.
    pub replicates: Option<String>,
    /// For a replica: `master_link_status:up`.
    pub link_up: bool,
    /// `process_id` of the redis-server.
    pub pid: u32,
}

struct Supervisor {
    id: String,
    redis_addr: String,
    http: String,
    redis_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Two supervisors and their Redis nodes.
pub struct RedisLayer {
    db_endpoints: Vec<String>,
    db: DbClient,
    password: String,
    /// Certificates (`agendactl certs` names: `supervisor`, `redis-a`,
    /// `redis-b`, `test` for the harness): Redis then speaks TLS only.
    tls_dir: Option<PathBuf>,
    /// How the harness reaches the Redis nodes.
    link: RedisLink,
    bin: PathBuf,
    sups: Vec<Supervisor>,
}

impl RedisLayer {
    /// Starts two supervisors (each with its redis-server on a free port)
    /// against agenda-db at `db_endpoints`, with data and logs under
    /// `dir`, and waits until a primary is published and the other node is
    /// its connected replica.
    pub async fn start(db_endpoints: &[String], dir: &Path, password: &str) -> Result<RedisLayer> {
        RedisLayer::start_with(db_endpoints, dir, password, None).await
    }

    /// [`RedisLayer::start`] with every link TLS when `tls_dir` holds the
    /// certificates (see [`RedisLayer`]'s `tls_dir`).
    pub async fn start_with(
        db_endpoints: &[String],
        dir: &Path,
        password: &str,
        tls_dir: Option<&Path>,
    ) -> Result<RedisLayer> {
        let bin = bin("agenda-supervisor")?;
        let mut sups = Vec::new();
        for name in ["a", "b"] {
            sups.push(Supervisor {
                id: format!("supervisor-{name}"),
                redis_addr: format!("127.0.0.1:{}", free_port()),
                http: format!("127.0.0.1:{}", free_port()),
                redis_dir: dir.join(format!("redis-{name}")),
                log: dir.join(format!("supervisor-{name}.log")),
                child: None,
            });
        }
        let harness = tls_dir.map(|d| agenda_common::tls::TlsFiles::in_dir(d, "test"));
        let db_tls = match &harness {
            Some(files) => Some(agenda_common::tls::Identity::load(files)?.client_config()?),
            None => None,
        };
        let mut layer = RedisLayer {
            db_endpoints: db_endpoints.to_vec(),
            db: DbClient::with_tls(db_endpoints, db_tls)?.with_timeout(Duration::from_secs(2)),
            password: password.to_string(),
            tls_dir: tls_dir.map(Path::to_path_buf),
            link: RedisLink::new(password, harness),
            bin,
            sups,
        };
        for i in 0..layer.sups.len() {
            layer.spawn(i)?;
        }
        if let Err(e) = layer.wait_healthy(Duration::from_secs(30)).await {
            bail!("{e:#}\n{}", layer.log_tails(20));
        }
        Ok(layer)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let nodes = self
            .sups
            .iter()
            .map(|s| s.redis_addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        let db = self.db_endpoints.join(",");
        let s = &mut self.sups[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)?;
        let mut tls = Vec::new();
        if let Some(d) = &self.tls_dir {
            tls = vec![
                format!("--tls-dir={}", d.display()),
                "--tls-name=supervisor".to_string(),
                format!("--redis-tls-name=redis-{}", &s.id["supervisor-".len()..]),
            ];
        }
        let child = Command::new(&self.bin)
            .args(&tls)
            .arg(format!("--id={}", s.id))
            .arg(format!("--db={db}"))
            .arg(format!("--http={}", s.http))
            .arg(format!("--redis-nodes={nodes}"))
            .arg(format!("--local-redis={}", s.redis_addr))
            .arg(format!("--redis-dir={}", s.redis_dir.display()))
            .arg("--log=info")
            .env("AGENDA_REDIS_PASSWORD", &self.password)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn agenda-supervisor")?;
        s.child = Some(child);
        Ok(())
    }

    /// Redis addresses; node `i` is owned by supervisor `i`.
    pub fn addrs(&self) -> Vec<String> {
        self.sups.iter().map(|s| s.redis_addr.clone()).collect()
    }

    /// The shared Redis password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Id of supervisor `i` (its value under the election key).
    pub fn supervisor_id(&self, i: usize) -> &str {
        &self.sups[i].id
    }

    /// `host:port` of supervisor `i`'s `/metrics` and `/healthz`.
    pub fn supervisor_http(&self, i: usize) -> &str {
        &self.sups[i].http
    }

    /// Index of the node with this address.
    pub fn index_of(&self, addr: &str) -> Result<usize> {
        self.sups
            .iter()
            .position(|s| s.redis_addr == addr)
            .with_context(|| format!("{addr} is not a node of this layer"))
    }

    /// The published primary, if any.
    pub async fn primary(&self) -> Result<Option<PrimaryRecord>> {
        let Some(kv) = self.db.get(PRIMARY_KEY).await? else {
            return Ok(None);
        };
        Ok(Some(
            PrimaryRecord::decode(&kv.value).context("the published primary record")?,
        ))
    }

    /// Index of the supervisor holding the election key, if any.
    pub async fn leader(&self) -> Result<Option<usize>> {
        let Some(kv) = self.db.get(ELECTION_KEY).await? else {
            return Ok(None);
        };
        Ok(self.sups.iter().position(|s| s.id.as_bytes() == kv.value))
    }

    /// Waits until a primary with an epoch above `epoch` is published.
    pub async fn wait_primary_after(&self, epoch: u64, timeout: Duration) -> Result<PrimaryRecord> {
        wait_for("a new primary in the registry", timeout, || async {
            self.primary()
                .await
                .ok()
                .flatten()
                .filter(|p| p.epoch > epoch)
        })
        .await
    }

    /// Waits until a primary is published, answers as a master, and every
    /// other node is its replica with the link up.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<PrimaryRecord> {
        wait_for(
            "a published primary with a connected replica",
            timeout,
            || async {
                let p = self.primary().await.ok()??;
                for addr in self.addrs() {
                    let r = self.role(&addr).await.ok()?;
                    let ok = if addr == p.addr {
                        r.master
                    } else {
                        r.replicates.as_deref() == Some(p.addr.as_str()) && r.link_up
                    };
                    if !ok {
                        return None;
                    }
                }
                Some(p)
            },
        )
        .await
    }

    /// A connection to one node (password set, 500 ms deadlines).
    pub async fn connect(&self, addr: &str) -> Result<MultiplexedConnection> {
        connect_with(&self.link, addr).await
    }

    /// `INFO replication` + `process_id` of one node.
    pub async fn role(&self, addr: &str) -> Result<NodeRole> {
        role_with(&self.link, addr).await
    }

    /// kill -9 the redis-server at `addr`; returns its pid.
    pub async fn kill_redis(&self, addr: &str) -> Result<u32> {
        let pid = self.role(addr).await?.pid;
        kill(pid, "-KILL");
        Ok(pid)
    }

    /// kill -9 the redis-server of the published primary; returns it.
    pub async fn kill_primary(&self) -> Result<PrimaryRecord> {
        let p = self.primary().await?.context("no primary published")?;
        self.kill_redis(&p.addr).await?;
        Ok(p)
    }

    /// kill -9 supervisor `i` (its redis-server keeps running).
    pub fn kill_supervisor(&mut self, i: usize) {
        if let Some(mut c) = self.sups[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM supervisor `i` and wait (bounded) for it to exit; it stops
    /// its redis-server and gives its lease up.
    pub fn stop_supervisor(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let mut c = self.sups[i].child.take()?;
        crate::cluster::terminate(&mut c, Duration::from_secs(15))
    }

    /// Starts supervisor `i` again (same id, node and data dir).
    pub fn restart_supervisor(&mut self, i: usize) -> Result<()> {
        if self.sups[i].child.is_some() {
            bail!("supervisor {i} is running");
        }
        self.spawn(i)
    }

    /// Reads one metric of supervisor `i` (first sample starting with `name`).
    pub async fn metric(&self, i: usize, name: &str) -> Result<f64> {
        scrape_metric(&format!("http://{}", self.sups[i].http), name)
            .await
            .with_context(|| format!("on supervisor {i}"))
    }

    /// The last lines of every supervisor's log and redis log.
    pub fn log_tails(&self, lines: usize) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        self.sups
            .iter()
            .map(|s| {
                format!(
                    "--- {} ---\n{}\n--- redis {} ---\n{}",
                    s.id,
                    tail(&s.log),
                    s.redis_addr,
                    tail(&s.redis_dir.join("redis.log"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisLayer {
    fn drop(&mut self) {
        for i in 0..self.sups.len() {
            self.kill_supervisor(i);
        }
        // A killed supervisor leaves its redis-server running. redis-server
        // shows its address in its process title ("redis-server
        // 127.0.0.1:PORT"), which finds it even when its data dir is gone.
        let addrs: Vec<String> = self.sups.iter().map(|s| s.redis_addr.clone()).collect();
        for pid in redis_pids(&addrs) {
            kill(pid, "-KILL");
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(30));
        }
    }
}

/// A connection to a Redis node with `password` (500 ms deadlines).
pub async fn connect(addr: &str, password: &str) -> Result<MultiplexedConnection> {
    connect_with(&RedisLink::new(password, None), addr).await
}

/// A connection to a Redis node over `link` (500 ms deadlines).
pub async fn connect_with(link: &RedisLink, addr: &str) -> Result<MultiplexedConnection> {
    let client = link.client(addr)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// `INFO replication` + `process_id` of one node.
pub async fn role(addr: &str, password: &str) -> Result<NodeRole> {
    role_with(&RedisLink::new(password, None), addr).await
}

/// [`role`] over `link`.
pub async fn role_with(link: &RedisLink, addr: &str) -> Result<NodeRole> {
    let mut c = connect_with(link, addr).await?;
    let text: String = ::redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await?;
    let server: String = ::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await?;
    let field = |t: &str, k: &str| {
        t.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{k}:")).map(str::to_string))
    };
    let master = field(&text, "role").as_deref() == Some("master");
    let replicates = match (field(&text, "master_host"), field(&text, "master_port")) {
        (Some(h), Some(p)) if !master => Some(format!("{h}:{p}")),
        _ => None,
    };
    Ok(NodeRole {
        master,
        replicates,
        link_up: field(&text, "master_link_status").as_deref() == Some("up"),
        pid: field(&server, "process_id")
            .and_then(|p| p.parse().ok())
            .context("process_id")?,
    })
}

/// Pids of the running redis-servers listening on one of `addrs`.
fn redis_pids(addrs: &[String]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let words: Vec<&str> = title.split_whitespace().collect();
            // The title once running, or the command line right after exec.
            title.contains("redis-server")
                && addrs.iter().any(|a| {
                    let port = a.rsplit_once(':').map_or("", |(_, p)| p);
                    words.contains(&a.as_str())
                        || words.windows(2).any(|w| w[0] == "--port" && w[1] == port)
                })
        })
        .collect()
}

fn kill(pid: u32, signal: &str) {
    if pid <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
