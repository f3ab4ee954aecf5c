//! agenda-supervisor against real processes: three agenda-db nodes, two
//! supervisors, two redis-servers. Kills under a writer, kills of the
//! acting supervisor and of the replica, bad start-ups.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_tests::cluster::{
    bin, expect_refusal, free_port, run_to_exit, wait_for, Cluster, Options,
};
use agenda_tests::redis::{PrimaryRecord, RedisLayer};
use anyhow::{ensure, Context, Result};

const PASSWORD: &str = "supervisor-test-pw";

async fn setup() -> Result<(Cluster, RedisLayer)> {
    let cluster = Cluster::start(Options {
        size: 3,
        ..Default::default()
    })
    .await?;
    let eps: Vec<String> = cluster.nodes.values().map(|n| n.grpc.clone()).collect();
    let layer = RedisLayer::start(&eps, cluster.dir(), PASSWORD).await?;
    Ok((cluster, layer))
}

/// What the writer saw.
#[derive(Default)]
struct WriterLog {
    /// (when, primary address) of every acknowledged INCR.
    oks: Vec<(Instant, String)>,
    /// Highest counter value acknowledged by the primary AND its replica
    /// (`WAIT 1`): it must survive any failover.
    replicated_max: u64,
}

/// Writes `INCR agenda:test:counter` (then `WAIT 1 100`) in a loop through
/// whatever the registry publishes, until `stop`.
fn spawn_writer(
    layer: &RedisLayer,
    db: agenda_common::DbClient,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<WriterLog>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(WriterLog::default()));
    let out = log.clone();
    let password = layer.password().to_string();
    let task = tokio::spawn(async move {
        let mut conn: Option<(String, redis::aio::MultiplexedConnection)> = None;
        // Bounded: at most ~2 minutes of writes whatever happens.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let published = match db.get(agenda_tests::redis::PRIMARY_KEY).await {
                Ok(Some(kv)) => serde_json::from_slice::<serde_json::Value>(&kv.value)
                    .ok()
                    .and_then(|v| v["addr"].as_str().map(str::to_string)),
                _ => None,
            };
            let Some(addr) = published else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if conn.as_ref().is_none_or(|(a, _)| *a != addr) {
                conn = agenda_tests::redis::connect(&addr, &password)
                    .await
                    .ok()
                    .map(|c| (addr.clone(), c));
            }
            let Some((_, c)) = conn.as_mut() else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let r: redis::RedisResult<u64> = redis::cmd("INCR")
                .arg("agenda:test:counter")
                .query_async(c)
                .await;
            match r {
                Ok(v) => {
                    let replicas: u64 = redis::cmd("WAIT")
                        .arg(1)
                        .arg(100)
                        .query_async(c)
                        .await
                        .unwrap_or(0);
                    let mut l = out.lock().expect("writer log");
                    l.oks.push((Instant::now(), addr.clone()));
                    if replicas >= 1 {
                        l.replicated_max = l.replicated_max.max(v);
                    }
                }
                Err(_) => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    (log, task)
}

/// Samples every node every 20 ms and counts samples where two nodes
/// answered as masters at once.
fn spawn_master_monitor(
    layer: &RedisLayer,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let both = Arc::new(AtomicU64::new(0));
    let out = both.clone();
    let addrs = layer.addrs();
    let password = layer.password().to_string();
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let mut masters = 0;
            for a in &addrs {
                if let Ok(r) = agenda_tests::redis::role(a, &password).await {
                    masters += usize::from(r.master);
                }
            }
            if masters > 1 {
                out.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (both, task)
}

/// Waits until `addr` answers as a replica of `primary` with the link up
/// and a pid other than `old_pid`.
async fn wait_replica(
    layer: &RedisLayer,
    addr: &str,
    primary: &str,
    old_pid: u32,
    timeout: Duration,
) -> Result<()> {
    wait_for(
        &format!("{addr} back as a connected replica of {primary}"),
        timeout,
        || async {
            let r = layer.role(addr).await.ok()?;
            (r.pid != old_pid && r.replicates.as_deref() == Some(primary) && r.link_up)
                .then_some(())
        },
    )
    .await
}

/// One primary kill and its promotion.
struct Failover {
    killed_at: Instant,
    old: PrimaryRecord,
    old_pid: u32,
    new: PrimaryRecord,
    /// From the kill to the publication of the new primary.
    took: Duration,
}

/// Kills the primary and waits until another node is published.
async fn kill_and_wait_promotion(layer: &RedisLayer) -> Result<Failover> {
    let old = layer.primary().await?.context("no primary")?;
    let killed_at = Instant::now();
    let old_pid = layer.kill_redis(&old.addr).await?;
    let new = layer
        .wait_primary_after(old.epoch, Duration::from_secs(10))
        .await?;
    let took = killed_at.elapsed();
    ensure!(new.addr != old.addr, "promoted the dead node: {new:?}");
    ensure!(new.epoch == old.epoch + 1, "epoch {old:?} -> {new:?}");
    Ok(Failover {
        killed_at,
        old,
        old_pid,
        new,
        took,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_kill_under_writes_promotes_the_replica_and_fences_the_old_primary() -> Result<()> {
    let (cluster, layer) = setup().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, writer) = spawn_writer(&layer, cluster.client(), stop.clone());
    wait_for(
        "writes through the first primary",
        Duration::from_secs(10),
        || async { (writes.lock().expect("log").oks.len() >= 20).then_some(()) },
    )
    .await?;

    let (both_masters, monitor) = spawn_master_monitor(&layer, stop.clone());
    let Failover {
        killed_at,
        old,
        old_pid,
        new,
        took,
    } = kill_and_wait_promotion(&layer).await?;
    println!(
        "registry published {} (epoch {}) {} ms after the kill of {}",
        new.addr,
        new.epoch,
        took.as_millis(),
        old.addr
    );
    let first_write = wait_for(
        "a write through the new primary",
        Duration::from_secs(10),
        || async {
            let l = writes.lock().expect("log");
            l.oks
                .iter()
                .find(|(t, a)| *t > killed_at && *a == new.addr)
                .map(|(t, _)| t.duration_since(killed_at))
        },
    )
    .await?;
    println!(
        "first acknowledged write through the new primary {} ms after the kill",
        first_write.as_millis()
    );
    ensure!(
        took < Duration::from_millis(2000),
        "promotion took {took:?} (target: under 2 s)"
    );

    // The old node comes back, restarted by its supervisor, as a replica.
    wait_replica(
        &layer,
        &old.addr,
        &new.addr,
        old_pid,
        Duration::from_secs(20),
    )
    .await?;
    // Writes flow on; the replicated counter survived the failover.
    let before = writes.lock().expect("log").oks.len();
    wait_for("more writes", Duration::from_secs(5), || async {
        (writes.lock().expect("log").oks.len() > before + 20).then_some(())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    monitor.await?;
    let replicated_max = writes.lock().expect("log").replicated_max;
    let mut c = layer.connect(&new.addr).await?;
    let now: u64 = redis::cmd("GET")
        .arg("agenda:test:counter")
        .query_async(&mut c)
        .await?;
    ensure!(
        now >= replicated_max,
        "a replicated write was lost: counter {now} < acknowledged {replicated_max}"
    );
    let overlaps = both_masters.load(Ordering::Relaxed);
    ensure!(
        overlaps == 0,
        "two masters observed at once in {overlaps} samples"
    );
    let restarts = layer
        .metric(
            layer.index_of(&old.addr)?,
            "agenda_supervisor_local_restarts_total",
        )
        .await?;
    ensure!(
        restarts >= 1.0,
        "the old node's supervisor did not count a restart"
    );

    // A node that turns master behind the supervisor's back (as an old
    // primary cut off by a partition would) is fenced back at once.
    let mut rogue = layer.connect(&old.addr).await?;
    let _: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut rogue)
        .await?;
    let fenced_at = Instant::now();
    wait_replica(&layer, &old.addr, &new.addr, 0, Duration::from_secs(5)).await?;
    println!(
        "a rogue master was fenced back to a connected replica in {} ms",
        fenced_at.elapsed().as_millis()
    );
    let leader = layer.leader().await?.context("no supervisor leads")?;
    ensure!(
        layer
            .metric(leader, "agenda_supervisor_fencings_total")
            .await?
            >= 1.0
    );
    ensure!(
        layer.primary().await?.as_ref() == Some(&new),
        "the primary moved"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_acting_supervisor_hands_over_and_the_next_one_fails_over() -> Result<()> {
    let (_cluster, mut layer) = setup().await?;
    let leader = wait_for("a supervisor leader", Duration::from_secs(10), || async {
        layer.leader().await.ok().flatten()
    })
    .await?;
    let other = 1 - leader;
    let killed_at = Instant::now();
    layer.kill_supervisor(leader);
    wait_for(
        "the other supervisor to lead",
        Duration::from_secs(10),
        || async { (layer.leader().await.ok().flatten() == Some(other)).then_some(()) },
    )
    .await?;
    println!(
        "supervisor {} leads {} ms after the kill -9 of supervisor {}",
        layer.supervisor_id(other),
        killed_at.elapsed().as_millis(),
        layer.supervisor_id(leader)
    );
    // The gauge follows right after the key is written.
    wait_for(
        "is_leader = 1 on the new leader",
        Duration::from_secs(5),
        || async {
            (layer
                .metric(other, "agenda_supervisor_is_leader")
                .await
                .ok()?
                == 1.0)
                .then_some(())
        },
    )
    .await?;

    // The new leader handles a primary kill.
    let Failover { old, new, took, .. } = kill_and_wait_promotion(&layer).await?;
    println!(
        "after the hand-over: {} promoted {} ms after the kill of {}",
        new.addr,
        took.as_millis(),
        old.addr
    );
    ensure!(
        took < Duration::from_millis(2000),
        "promotion took {took:?}"
    );

    // The dead supervisor comes back: it adopts its running redis-server
    // or restarts the dead one as a replica; everything ends healthy.
    layer.restart_supervisor(leader)?;
    let p = layer.wait_healthy(Duration::from_secs(20)).await?;
    ensure!(p == new, "the primary moved again: {new:?} -> {p:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_replica_is_restarted_as_a_replica_without_promotion() -> Result<()> {
    let (_cluster, mut layer) = setup().await?;
    let p = layer.primary().await?.context("no primary")?;
    let replica = layer
        .addrs()
        .into_iter()
        .find(|a| *a != p.addr)
        .context("no replica")?;
    let pid = layer.kill_redis(&replica).await?;
    // Watch the registry while the replica is down and restarted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = layer.primary().await?.context("primary vanished")?;
        ensure!(
            now == p,
            "the primary changed after a replica died: {p:?} -> {now:?}"
        );
        let back = layer.role(&replica).await.ok().is_some_and(|r| {
            r.pid != pid && r.replicates.as_deref() == Some(p.addr.as_str()) && r.link_up
        });
        if back {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{replica} did not come back as a replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the down-after delay, still no promotion.
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        ensure!(
            layer.primary().await?.as_ref() == Some(&p),
            "the primary changed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..2 {
        ensure!(
            layer
                .metric(i, "agenda_supervisor_promotions_total")
                .await?
                == 0.0
        );
    }
    let owner = layer.index_of(&replica)?;
    ensure!(
        layer
            .metric(owner, "agenda_supervisor_local_restarts_total")
            .await?
            >= 1.0
    );
    // SIGTERM: the supervisor stops its redis-server and exits cleanly.
    let status = layer.stop_supervisor(owner).context("not running")?;
    ensure!(status.success(), "supervisor exited with {status}");
    wait_for(
        "the stopped supervisor's redis-server to be gone",
        Duration::from_secs(10),
        || async { layer.role(&replica).await.is_err().then_some(()) },
    )
    .await?;
    ensure!(layer.primary().await?.as_ref() == Some(&p));
    Ok(())
}

fn run(args: &[String]) -> Result<Output> {
    run_to_exit(
        Command::new(bin("agenda-supervisor")?)
            .args(args)
            .env_remove("AGENDA_REDIS_PASSWORD"),
    )
}

fn check(args: &[String], want: &str) -> Result<()> {
    expect_refusal(&run(args)?, &format!("agenda-supervisor {args:?}"), want)
}

#[test]
fn bad_start_ups_fail_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let http = || format!("--http=127.0.0.1:{}", free_port());
    let node = format!("127.0.0.1:{}", free_port());
    check(&["--bogus".into()], "unexpected argument")?;
    check(&[http()], "--redis-nodes")?;
    check(
        &[
            http(),
            "--redis-nodes=127.0.0.1:1".into(),
            "--check-interval-ms=0".into(),
        ],
        "--check-interval-ms",
    )?;
    check(&[http(), "--redis-nodes=localhost".into()], "not host:port")?;
    check(
        &[
            http(),
            "--redis-nodes=127.0.0.1:1".into(),
            format!("--local-redis={node}"),
            format!("--redis-dir={}", dir.path().display()),
        ],
        "is not one of --redis-nodes",
    )?;
    check(
        &[
            http(),
            format!("--redis-nodes={node}"),
            format!("--local-redis={node}"),
        ],
        "--redis-dir is required",
    )?;
    check(
        &[
            http(),
            format!("--redis-nodes={node}"),
            format!("--local-redis={node}"),
            format!("--redis-dir={}", dir.path().display()),
            "--redis-server=/nonexistent/redis-server".into(),
        ],
        "no such file",
    )?;
    // --help documents every flag.
    let help = Command::new(bin("agenda-supervisor")?)
        .arg("--help")
        .output()?;
    ensure!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--id",
        "--db",
        "--http",
        "--redis-nodes",
        "--local-redis",
        "--redis-server",
        "--redis-dir",
        "--redis-password",
        "--check-interval-ms",
        "--down-after-ms",
        "--lease-ttl-ms",
        "--log",
        "AGENDA_REDIS_PASSWORD",
        "AGENDA_DB",
    ] {
        ensure!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }
    Ok(())
}

/// Redis over TLS follows a CA rotation (`agendactl certs --ca-step add`,
/// `switch`, `finish`): redis-server reads its files only at start, so
/// its supervisor has it read them again. After every step a client
/// with the files of that moment connects to both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_over_tls_follows_a_ca_rotation() -> Result<()> {
    use agendactl::certs::{ca_step, issue, CaStep, Leaf, Role};
    let certs = tempfile::tempdir()?;
    let leaves = [
        Leaf::new("peer", Role::Peer),
        Leaf::new("supervisor", Role::Supervisor),
        Leaf::new("redis-a", Role::Redis),
        Leaf::new("redis-b", Role::Redis),
        Leaf::new("test", Role::Operator),
    ];
    issue(certs.path(), &leaves, 1, false)?;
    let test = agenda_common::tls::Identity::load(&agenda_common::tls::TlsFiles::in_dir(
        certs.path(),
        "test",
    ))?;
    let dir = certs.path().display().to_string();
    let cluster = Cluster::start(Options {
        size: 3,
        args: ["--tls-dir", &dir, "--tls-name", "peer"]
            .map(String::from)
            .to_vec(),
        tls: Some(test.client_config()?),
        ..Default::default()
    })
    .await?;
    let eps: Vec<String> = cluster.nodes.values().map(|n| n.grpc.clone()).collect();
    let layer = RedisLayer::start_with(&eps, cluster.dir(), PASSWORD, Some(certs.path())).await?;
    // How often each supervisor has had its redis-server read its files.
    let reads = || -> Vec<usize> {
        ["a", "b"]
            .iter()
            .map(|m| {
                std::fs::read_to_string(cluster.dir().join(format!("supervisor-{m}.log")))
                    .map(|log| log.matches("redis-server read its TLS files").count())
                    .unwrap_or(0)
            })
            .collect()
    };
    for step in [CaStep::Add, CaStep::Switch, CaStep::Finish] {
        let before = reads();
        ca_step(certs.path(), step, &leaves, 1)?;
        // As an operator does: the next step once every node has this one.
        wait_for(
            &format!("both redis-servers to read step {step:?}"),
            Duration::from_secs(20),
            || async {
                reads()
                    .iter()
                    .zip(&before)
                    .all(|(now, was)| now > was)
                    .then_some(())
            },
        )
        .await?;
        wait_for(
            &format!("both Redis nodes to take new connections after {step:?}"),
            Duration::from_secs(20),
            || async {
                for addr in layer.addrs() {
                    layer.role(&addr).await.ok()?;
                }
                Some(())
            },
        )
        .await?;
    }
    layer
        .wait_healthy(Duration::from_secs(20))
        .await
        .context("a primary and its replica after the rotation")?;
    Ok(())
}
