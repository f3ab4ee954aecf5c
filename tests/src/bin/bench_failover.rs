//! `make bench-failover`: kill -9 the Redis primary N times under a writer,
//! against agenda-supervisor (two supervisors, two redis-servers, three
//! agenda-db nodes) and against Redis Sentinel (two redis-servers, three
//! sentinels, quorum 2, the same down-after and password), in one run.
//!
//! The writer does `XADD` of a sequence number then `WAIT 1 100`, through
//! whatever primary its discovery names (the registry for the supervisor,
//! `SENTINEL get-master-addr-by-name` for Sentinel), rediscovering after
//! each error. Per system it prints the time from the kill to the first
//! acknowledged write through the new primary (p50/p95/max) and the
//! acknowledged writes missing on the new primary: those acknowledged by
//! the replica too (`WAIT` returned 1; these must never be lost) and those
//! acknowledged by the primary alone. It prints tables, never asserts.
//!
//! Between kills the killed node is restarted (the supervisor does it
//! itself; for Sentinel the bench restarts it and Sentinel turns it into
//! a replica) and the bench waits until it is a connected replica again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_tests::cluster::{free_port, pct, wait_for, Cluster, Options};
use agenda_tests::redis::{connect, role, RedisLayer, PRIMARY_KEY};
use anyhow::{bail, Context, Result};
use clap::Parser;

/// Redis failover: agenda-supervisor against Redis Sentinel.
#[derive(Parser, Debug)]
struct Args {
    /// Primary kills per system.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    kills: u64,
    /// Down-after of both systems, in milliseconds (the supervisor's
    /// default).
    #[arg(long, default_value_t = 1000)]
    down_after_ms: u64,
    /// Sentinel failover-timeout, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    failover_timeout_ms: u64,
    /// Longest wait for one failover or recovery, in seconds.
    #[arg(long, default_value_t = 60)]
    round_timeout_secs: u64,
    /// Skip Redis Sentinel.
    #[arg(long)]
    no_sentinel: bool,
    /// Skip agenda-supervisor.
    #[arg(long)]
    no_supervisor: bool,
    /// redis-server binary (also run with --sentinel).
    #[arg(long, default_value = "/usr/bin/redis-server")]
    redis_server: PathBuf,
}

const PASSWORD: &str = "bench-failover-pw";
const MASTER_NAME: &str = "agenda";

/// How a client finds the primary.
#[derive(Clone)]
enum Discovery {
    Registry(agenda_common::DbClient),
    Sentinel(Vec<String>),
}

impl Discovery {
    async fn primary(&self) -> Option<String> {
        match self {
            Discovery::Registry(db) => {
                let kv = db.get(PRIMARY_KEY).await.ok()??;
                let v: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
                v["addr"].as_str().map(str::to_string)
            }
            Discovery::Sentinel(sentinels) => {
                for s in sentinels {
                    let Ok(mut c) = connect(s, "").await else {
                        continue;
                    };
                    let r: redis::RedisResult<Option<(String, String)>> = redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(MASTER_NAME)
                        .query_async(&mut c)
                        .await;
                    if let Ok(Some((h, p))) = r {
                        return Some(format!("{h}:{p}"));
                    }
                }
                None
            }
        }
    }
}

/// One acknowledged write.
struct Ack {
    seq: u64,
    at: Instant,
    addr: String,
    replicated: bool,
}

/// XADD + WAIT through the discovered primary until `stop`.
fn spawn_writer(
    discovery: Discovery,
    stream: String,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> (Arc<Mutex<Vec<Ack>>>, tokio::task::JoinHandle<()>) {
    let acks = Arc::new(Mutex::new(Vec::new()));
    let out = acks.clone();
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        let mut conn: Option<(String, redis::aio::MultiplexedConnection)> = None;
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if conn.is_none() {
                let Some(addr) = discovery.primary().await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                match connect(&addr, PASSWORD).await {
                    Ok(c) => conn = Some((addr, c)),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
            }
            let Some((addr, c)) = conn.as_mut() else {
                continue;
            };
            seq += 1;
            let r: redis::RedisResult<String> = redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("seq")
                .arg(seq)
                .query_async(c)
                .await;
            if r.is_err() {
                conn = None;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let replicas: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(100)
                .query_async(c)
                .await
                .unwrap_or(0);
            out.lock().expect("acks").push(Ack {
                seq,
                at: Instant::now(),
                addr: addr.clone(),
                replicated: replicas >= 1,
            });
        }
    });
    (acks, task)
}

/// Result of one kill.
struct Round {
    to_first_write: Duration,
    lost_replicated: usize,
    lost_primary_only: usize,
    acked: usize,
}

/// The system under test.
trait System {
    fn discovery(&self) -> Discovery;
    /// Waits until a primary and a connected replica; returns the primary.
    async fn wait_healthy(&mut self, timeout: Duration) -> Result<String>;
    /// kill -9 the primary's redis-server.
    async fn kill(&mut self, addr: &str) -> Result<()>;
    /// After a failover: bring the killed node back (if the system does
    /// not do it itself).
    async fn recover(&mut self, addr: &str) -> Result<()>;
}

async fn run_round<S: System>(sys: &mut S, i: u64, timeout: Duration) -> Result<Round> {
    let old = sys.wait_healthy(timeout).await?;
    let stream = format!("bench:failover:{}", uuid_like(i));
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, writer) = spawn_writer(sys.discovery(), stream.clone(), stop.clone(), timeout * 2);
    // Some writes through the old primary first.
    wait_for("writes before the kill", timeout, || async {
        (acks.lock().expect("acks").len() >= 50).then_some(())
    })
    .await?;
    let killed_at = Instant::now();
    sys.kill(&old).await?;
    let to_first_write = wait_for("a write through the new primary", timeout, || async {
        acks.lock()
            .expect("acks")
            .iter()
            .find(|a| a.at > killed_at && a.addr != old)
            .map(|a| a.at.duration_since(killed_at))
    })
    .await;
    // A few more writes, then stop the writer.
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let to_first_write = to_first_write?;
    let new = sys
        .discovery()
        .primary()
        .await
        .context("no primary after the failover")?;
    let mut c = connect(&new, PASSWORD).await?;
    let entries: Vec<(String, Vec<(String, u64)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await?;
    let present: HashSet<u64> = entries
        .iter()
        .flat_map(|(_, fields)| fields.iter().map(|(_, v)| *v))
        .collect();
    let acks = std::mem::take(&mut *acks.lock().expect("acks"));
    let mut round = Round {
        to_first_write,
        lost_replicated: 0,
        lost_primary_only: 0,
        acked: acks.len(),
    };
    for a in &acks {
        if !present.contains(&a.seq) {
            if a.replicated {
                round.lost_replicated += 1;
            } else {
                round.lost_primary_only += 1;
            }
        }
    }
    sys.recover(&old).await?;
    Ok(round)
}

fn uuid_like(i: u64) -> String {
    format!(
        "{i}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// agenda-supervisor on a three-node agenda-db.
struct Supervised {
    // Fields drop in order: the layer (supervisors, redis-servers) before
    // the cluster, whose temp dir holds their data.
    layer: RedisLayer,
    _cluster: Cluster,
    db: agenda_common::DbClient,
}

impl System for Supervised {
    fn discovery(&self) -> Discovery {
        Discovery::Registry(self.db.clone())
    }
    async fn wait_healthy(&mut self, timeout: Duration) -> Result<String> {
        Ok(self.layer.wait_healthy(timeout).await?.addr)
    }
    async fn kill(&mut self, addr: &str) -> Result<()> {
        self.layer.kill_redis(addr).await.map(|_| ())
    }
    async fn recover(&mut self, _addr: &str) -> Result<()> {
        // The node's supervisor restarts it as a replica by itself.
        Ok(())
    }
}

/// Two redis-servers and three sentinels.
struct Sentinel {
    dir: tempfile::TempDir,
    binary: PathBuf,
    nodes: Vec<(String, Option<Child>)>,
    sentinels: Vec<(String, Child)>,
    last_kill: Option<Instant>,
    failover_timeout: Duration,
}

impl Sentinel {
    async fn start(
        binary: &Path,
        down_after: Duration,
        failover_timeout: Duration,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("agenda-sentinel")
            .tempdir()?;
        let mut s = Sentinel {
            dir,
            binary: binary.to_path_buf(),
            nodes: Vec::new(),
            sentinels: Vec::new(),
            last_kill: None,
            failover_timeout,
        };
        let master = format!("127.0.0.1:{}", free_port());
        let replica = format!("127.0.0.1:{}", free_port());
        s.nodes.push((master.clone(), None));
        s.nodes.push((replica.clone(), None));
        s.spawn_node(0, None)?;
        s.spawn_node(1, Some(&master))?;
        let mport = master.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        for i in 0..3 {
            let port = free_port();
            let sdir = s.dir.path().join(format!("sentinel{i}"));
            std::fs::create_dir_all(&sdir)?;
            let conf = sdir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {mport} 2\n\
                     sentinel auth-pass {MASTER_NAME} {PASSWORD}\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {}\n\
                     sentinel failover-timeout {MASTER_NAME} {}\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    sdir.display(),
                    down_after.as_millis(),
                    failover_timeout.as_millis()
                ),
            )?;
            let log = std::fs::File::create(sdir.join("sentinel.log"))?;
            let child = Command::new(&s.binary)
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting redis-server --sentinel")?;
            s.sentinels.push((format!("127.0.0.1:{port}"), child));
        }
        Ok(s)
    }

    fn spawn_node(&mut self, i: usize, master: Option<&str>) -> Result<()> {
        let (addr, _) = &self.nodes[i];
        let port = addr
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        let ndir = self.dir.path().join(format!("redis{i}"));
        std::fs::create_dir_all(&ndir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ndir.join("redis.log"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", &port, "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&ndir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .args(["--requirepass", PASSWORD, "--masterauth", PASSWORD])
            .args(["--repl-diskless-sync-delay", "0", "--daemonize", "no"]);
        if let Some(m) = master {
            let (h, p) = m.rsplit_once(':').context("master addr")?;
            cmd.args(["--replicaof", h, p]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting redis-server")?;
        self.nodes[i].1 = Some(child);
        Ok(())
    }

    fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Whether every sentinel names `master` and knows `replica` as a
    /// healthy replica (a candidate for the next failover).
    async fn sentinels_agree(&self, master: &str, replica: &str) -> bool {
        for s in self.sentinel_addrs() {
            let Ok(mut c) = connect(&s, "").await else {
                return false;
            };
            let m: redis::RedisResult<Option<(String, String)>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await;
            if !matches!(m, Ok(Some((h, p))) if format!("{h}:{p}") == master) {
                return false;
            }
            let replicas: redis::RedisResult<Vec<Vec<String>>> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await;
            let Ok(replicas) = replicas else { return false };
            let ok = replicas.iter().any(|kv| {
                let get = |k: &str| {
                    kv.chunks(2)
                        .find(|p| p.len() == 2 && p[0] == k)
                        .map(|p| p[1].as_str())
                };
                get("name") == Some(replica)
                    && get("flags") == Some("slave")
                    && get("master-link-status") == Some("ok")
            });
            let others: redis::RedisResult<Vec<Vec<String>>> = redis::cmd("SENTINEL")
                .arg("sentinels")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await;
            if !ok || others.map_or(true, |o| o.len() < 2) {
                return false;
            }
        }
        true
    }
}

impl System for Sentinel {
    fn discovery(&self) -> Discovery {
        Discovery::Sentinel(self.sentinel_addrs())
    }
    async fn wait_healthy(&mut self, timeout: Duration) -> Result<String> {
        let addrs: Vec<String> = self.nodes.iter().map(|(a, _)| a.clone()).collect();
        let me = &*self;
        let master = wait_for(
            "Sentinel: a master and a known, connected replica",
            timeout,
            || {
                let addrs = addrs.clone();
                async move {
                    let master = me.discovery().primary().await?;
                    let replica = addrs.iter().find(|a| **a != master)?;
                    let r = role(replica, PASSWORD).await.ok()?;
                    let ok = r.replicates.as_deref() == Some(master.as_str()) && r.link_up;
                    (ok && me.sentinels_agree(&master, replica).await).then_some(master)
                }
            },
        )
        .await?;
        // Sentinel refuses to fail the same master over again within
        // 2 x failover-timeout: keep rounds apart so no kill waits on it.
        if let Some(t) = self.last_kill {
            let gap = self.failover_timeout * 2 + Duration::from_millis(500);
            while t.elapsed() < gap {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(master)
    }
    async fn kill(&mut self, addr: &str) -> Result<()> {
        let i = self
            .nodes
            .iter()
            .position(|(a, _)| a == addr)
            .context("unknown node")?;
        if let Some(mut c) = self.nodes[i].1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.last_kill = Some(Instant::now());
        Ok(())
    }
    async fn recover(&mut self, addr: &str) -> Result<()> {
        let i = self
            .nodes
            .iter()
            .position(|(a, _)| a == addr)
            .context("unknown node")?;
        // Restarted as it was configured (a master); Sentinel turns it
        // into a replica of the new master.
        self.spawn_node(i, None)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        for (_, c) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (_, c) in &mut self.nodes {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::env::var_os("AGENDA_KEEP_LOGS").is_some() {
            let keep = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("sentinel logs kept in {}", keep.keep().display());
        }
    }
}

/// Runs `kills` rounds; a failed round is reported and counted, not fatal.
async fn run_system<S: System>(name: &str, sys: &mut S, kills: u64, timeout: Duration) -> Summary {
    let mut rounds = Vec::new();
    let mut failed = 0;
    for i in 0..kills {
        match run_round(sys, i, timeout).await {
            Ok(r) => {
                eprintln!(
                    "{name} kill {:>2}: first write after {:>5} ms, {} acked, lost {} replicated / {} primary-only",
                    i + 1,
                    r.to_first_write.as_millis(),
                    r.acked,
                    r.lost_replicated,
                    r.lost_primary_only
                );
                rounds.push(r);
            }
            Err(e) => {
                eprintln!("{name} kill {:>2}: failed: {e:#}", i + 1);
                failed += 1;
                if failed >= 3 {
                    eprintln!("{name}: three failed rounds; stopping this system");
                    break;
                }
            }
        }
    }
    Summary {
        name: name.to_string(),
        rounds,
        failed,
    }
}

struct Summary {
    name: String,
    rounds: Vec<Round>,
    failed: u64,
}

fn print(summaries: &[Summary], args: &Args) {
    println!();
    println!(
        "Redis failover: kill -9 of the primary under an XADD + WAIT 1 writer; down-after {} ms",
        args.down_after_ms
    );
    println!(
        "{:<18} {:>6} {:>7} {:>8} {:>8} {:>8} {:>10} {:>18} {:>18}",
        "system",
        "kills",
        "failed",
        "p50 ms",
        "p95 ms",
        "max ms",
        "acked",
        "lost (WAIT-acked)",
        "lost (primary-only)"
    );
    for s in summaries {
        let mut t: Vec<u128> = s
            .rounds
            .iter()
            .map(|r| r.to_first_write.as_millis())
            .collect();
        t.sort_unstable();
        println!(
            "{:<18} {:>6} {:>7} {:>8} {:>8} {:>8} {:>10} {:>18} {:>18}",
            s.name,
            s.rounds.len(),
            s.failed,
            pct(&t, 0.5),
            pct(&t, 0.95),
            t.last().copied().unwrap_or(0),
            s.rounds.iter().map(|r| r.acked).sum::<usize>(),
            s.rounds.iter().map(|r| r.lost_replicated).sum::<usize>(),
            s.rounds.iter().map(|r| r.lost_primary_only).sum::<usize>(),
        );
    }
    println!("time: from the kill to the first acknowledged write through the new primary");
    println!("lost: acknowledged writes missing on the new primary (WAIT-acked ones must be 0)");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.redis_server.is_file() {
        bail!(
            "{} not found: install Redis (apt-get install redis-server) or pass --redis-server",
            args.redis_server.display()
        );
    }
    let timeout = Duration::from_secs(args.round_timeout_secs);
    let down_after = Duration::from_millis(args.down_after_ms);
    let mut summaries = Vec::new();
    if !args.no_supervisor {
        let cluster = Cluster::start(Options {
            size: 3,
            ..Default::default()
        })
        .await?;
        let eps: Vec<String> = cluster.nodes.values().map(|n| n.grpc.clone()).collect();
        std::env::set_var(
            "AGENDA_SUPERVISOR_DOWN_AFTER_MS",
            args.down_after_ms.to_string(),
        );
        let layer = RedisLayer::start(&eps, cluster.dir(), PASSWORD).await?;
        let mut sys = Supervised {
            db: cluster.client().with_timeout(Duration::from_secs(2)),
            _cluster: cluster,
            layer,
        };
        summaries.push(run_system("agenda-supervisor", &mut sys, args.kills, timeout).await);
    }
    if !args.no_sentinel {
        let mut sys = Sentinel::start(
            &args.redis_server,
            down_after,
            Duration::from_millis(args.failover_timeout_ms),
        )
        .await?;
        summaries.push(run_system("redis-sentinel", &mut sys, args.kills, timeout).await);
    }
    print(&summaries, &args);
    Ok(())
}
