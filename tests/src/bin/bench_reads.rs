//! `make bench-reads`: reads spread over the replicas (seed 004). Five
//! agenda-db nodes, each held to a share of the CPU by a cgroup (root;
//! `--node-cpu`, default 0.25 of a core: on a two-core machine, where
//! every node would otherwise share the same two cores, a table of nodes
//! would show nothing), then two tables:
//! - agenda-db alone: linearizable reads/s (closed loop, `--clients`
//!   at once) through the shared client given 1 node (the leader), 3
//!   (the leader and two followers) or all 5; the client spreads reads
//!   by measured latency and calls in flight, followers answer after a
//!   ReadIndex round with the leader.
//! - the week view (`GET /v1/events?from&to` of a person with a full
//!   week) through the gateway with the agenda-users replicas given the
//!   same 1, 3 or 5 nodes.
//!
//! Rounds are interleaved (1, 3, 5, 1, 3, 5...); the table shows each
//! count's median round. It never asserts speed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_common::DbClient;
use agenda_proto::db::PutRequest;
use agenda_tests::system::{System, SystemOptions};
use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

/// Reads spread over 1, 3 and 5 agenda-db nodes, each with a CPU share.
#[derive(Parser, Debug)]
struct Args {
    /// CPU of each agenda-db node (cores; a cgroup quota). 0: no cgroups.
    #[arg(long, default_value_t = 0.25)]
    node_cpu: f64,
    /// Reads in flight at once.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of each round.
    #[arg(long, default_value_t = 5)]
    round_secs: u64,
    /// Rounds per node count.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Skip the week-view table.
    #[arg(long)]
    db_only: bool,
}

/// CPU quotas for the nodes: a cgroup per node under one made for this
/// run (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), removed at the end.
struct CpuShares {
    root: PathBuf,
    v2: bool,
    groups: Vec<PathBuf>,
}

impl CpuShares {
    fn new(cores: f64, nodes: usize) -> Result<CpuShares> {
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let base = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/cpu")
        };
        let root = base.join(format!("agenda-bench-reads-{}", std::process::id()));
        std::fs::create_dir(&root).with_context(|| {
            format!(
                "cannot make {} (run as root, or --node-cpu 0 for no CPU shares)",
                root.display()
            )
        })?;
        let mut shares = CpuShares {
            root: root.clone(),
            v2,
            groups: Vec::new(),
        };
        if v2 {
            std::fs::write(root.join("cgroup.subtree_control"), "+cpu")
                .context("enabling the cpu controller")?;
        }
        let period = 100_000u64;
        let quota = ((cores * period as f64) as u64).max(1000);
        for i in 1..=nodes {
            let g = root.join(format!("node-{i}"));
            std::fs::create_dir(&g)?;
            if v2 {
                std::fs::write(g.join("cpu.max"), format!("{quota} {period}"))?;
            } else {
                std::fs::write(g.join("cpu.cfs_period_us"), period.to_string())?;
                std::fs::write(g.join("cpu.cfs_quota_us"), quota.to_string())?;
            }
            shares.groups.push(g);
        }
        Ok(shares)
    }

    /// Moves process `pid` (all its threads) into node `i`'s group.
    fn place(&self, i: usize, pid: u32) -> Result<()> {
        std::fs::write(self.groups[i].join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("placing pid {pid}"))
    }
}

impl Drop for CpuShares {
    fn drop(&mut self) {
        // Whatever still runs inside goes back to the root group first.
        let parent = self.root.parent().map(|p| p.join("cgroup.procs"));
        for g in self.groups.iter().rev() {
            if let (Some(parent), Ok(pids)) =
                (&parent, std::fs::read_to_string(g.join("cgroup.procs")))
            {
                for pid in pids.lines() {
                    let _ = std::fs::write(parent, pid);
                }
            }
            let _ = std::fs::remove_dir(g);
        }
        let _ = std::fs::remove_dir(&self.root);
        let _ = self.v2;
    }
}

/// One round's result.
#[derive(Clone, Debug)]
struct Round {
    per_sec: f64,
    p50_ms: f64,
    p95_ms: f64,
    errors: u64,
    /// Errors by kind.
    kinds: BTreeMap<String, u64>,
}

/// `clients` loops of `op` for `secs`.
async fn closed_loop<F, Fut>(clients: usize, secs: u64, op: F) -> Round
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let kinds: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (op, stop, errors, hist, kinds) = (
            op.clone(),
            stop.clone(),
            errors.clone(),
            hist.clone(),
            kinds.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut n = c as u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match op(n).await {
                    Ok(()) => {
                        let _ = local.record(t.elapsed().as_micros() as u64);
                    }
                    Err(kind) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        *kinds.lock().expect("not poisoned").entry(kind).or_default() += 1;
                    }
                }
                n = n.wrapping_add(clients as u64);
            }
            let _ = hist.lock().expect("not poisoned").add(&local);
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let taken = std::mem::take(&mut *kinds.lock().expect("not poisoned"));
    let h = hist.lock().expect("not poisoned");
    Round {
        per_sec: h.len() as f64 / elapsed,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p95_ms: h.value_at_quantile(0.95) as f64 / 1000.0,
        errors: errors.load(Ordering::Relaxed),
        kinds: taken,
    }
}

fn median(rounds: &[Round]) -> Round {
    let mut r = rounds.to_vec();
    r.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    r[r.len() / 2].clone()
}

fn table(title: &str, unit: &str, results: &BTreeMap<usize, Vec<Round>>) {
    println!("\n{title}");
    println!("| nodes serving reads | {unit}/s (median round) | rounds | p50 ms | p95 ms | errors | vs 1 node |");
    println!("| -- | -- | -- | -- | -- | -- | -- |");
    let one = results.get(&1).map(|r| median(r).per_sec).unwrap_or(0.0);
    for (n, rounds) in results {
        let m = median(rounds);
        let all: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r.per_sec)).collect();
        println!(
            "| {n} | {:.0} | {} | {:.2} | {:.2} | {} | {:.2}x |",
            m.per_sec,
            all.join(" / "),
            m.p50_ms,
            m.p95_ms,
            rounds.iter().map(|r| r.errors).sum::<u64>(),
            if one > 0.0 { m.per_sec / one } else { 0.0 }
        );
    }
    for (n, rounds) in results {
        for r in rounds.iter().filter(|r| r.errors > 0) {
            println!("errors with {n} nodes: {:?}", r.kinds);
        }
    }
}

/// The leader first, then the followers, as gRPC addresses.
async fn by_role(sys: &System) -> Result<Vec<String>> {
    let leader = sys.db.leader().await?;
    let mut out = vec![sys.db.nodes[&leader].grpc.clone()];
    out.extend(
        sys.db
            .nodes
            .iter()
            .filter(|(id, _)| **id != leader)
            .map(|(_, n)| n.grpc.clone()),
    );
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.rounds == 0 || args.round_secs == 0 {
        bail!("--clients, --rounds and --round-secs must be at least 1");
    }
    let shares = if args.node_cpu > 0.0 {
        Some(CpuShares::new(args.node_cpu, 5)?)
    } else {
        None
    };
    eprintln!(
        "starting a system: 5 agenda-db nodes, 2 users, 2 groups, a gateway (release binaries)"
    );
    let mut sys = System::start(SystemOptions {
        db_nodes: 5,
        ..SystemOptions::default()
    })
    .await?;
    if let Some(s) = &shares {
        for (i, n) in sys.db.nodes.values().enumerate() {
            s.place(i, n.pid().context("a node is not running")?)?;
        }
        eprintln!(
            "each agenda-db node held to {} of a core ({})",
            args.node_cpu,
            if s.v2 {
                "cgroup v2 cpu.max"
            } else {
                "cgroup v1 cfs quota"
            }
        );
    }
    let nodes = by_role(&sys).await?;
    let counts = [1usize, 3, 5];

    // agenda-db alone.
    let seed = DbClient::new(&nodes)?;
    for k in 0..1000 {
        seed.put(PutRequest {
            key: format!("bench-reads/{k:04}").into_bytes(),
            value: vec![b'x'; 200],
            ..Default::default()
        })
        .await?;
    }
    let mut db_results: BTreeMap<usize, Vec<Round>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &n in &counts {
            let client = DbClient::new(&nodes[..n])?;
            let r = closed_loop(args.clients, args.round_secs, move |i| {
                let client = client.clone();
                async move {
                    client
                        .get(format!("bench-reads/{:04}", i % 1000).into_bytes())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string().chars().take(60).collect())
                }
            })
            .await;
            eprintln!("db round {round}: {n} nodes: {:.0} reads/s", r.per_sec);
            db_results.entry(n).or_default().push(r);
        }
    }
    table(
        &format!(
            "agenda-db linearizable reads, {} at once, each node {} of a core",
            args.clients, args.node_cpu
        ),
        "reads",
        &db_results,
    );

    if !args.db_only {
        // One person per client (a person's requests are rate limited),
        // each with a full week: 20 events, Monday 2031-03-03 to Friday.
        let api = sys.api();
        let mut tokens = Vec::new();
        for c in 0..args.clients {
            tokens.push(api.register(&format!("reader{c}")).await.1);
        }
        // Four people at a time: the gateway refuses more writes at once
        // than the nodes' CPU shares absorb.
        for chunk in tokens.chunks(4) {
            let mut making = Vec::new();
            for token in chunk {
                let (api, token) = (api.clone(), token.clone());
                making.push(tokio::spawn(async move {
                    for d in 0..5 {
                        for h in [9, 11, 13, 15] {
                            let day = 3 + d;
                            let r = api
                                .post(
                                    "/v1/events",
                                    &token,
                                    json!({"title": format!("meeting {d}-{h}"),
                                       "start": format!("2031-03-{day:02}T{h:02}:00:00Z"),
                                       "end": format!("2031-03-{day:02}T{h:02}:45:00Z"),
                                       "time_zone": "UTC"}),
                                )
                                .await;
                            if !r.0.is_success() {
                                bail!("making the week: {} {}", r.0, r.1);
                            }
                        }
                    }
                    Ok(())
                }));
            }
            for m in making {
                m.await??;
            }
        }
        let tokens = Arc::new(tokens);
        let path = "/v1/events?from=2031-03-03T00:00:00Z&to=2031-03-10T00:00:00Z".to_string();
        let mut week_results: BTreeMap<usize, Vec<Round>> = BTreeMap::new();
        for round in 0..args.rounds {
            for &n in &counts {
                sys.replace_users(&nodes[..n].join(","), &[]).await?;
                let (api, tokens, path) = (api.clone(), tokens.clone(), path.clone());
                let r = closed_loop(args.clients, args.round_secs, move |i| {
                    let (api, path) = (api.clone(), path.clone());
                    let token = tokens[i as usize % tokens.len()].clone();
                    async move {
                        let (status, body) = api.get(&path, &token).await;
                        if status.is_success() {
                            Ok(())
                        } else {
                            Err(format!("{status} {}", body["error"]["code"]))
                        }
                    }
                })
                .await;
                eprintln!(
                    "week round {round}: {n} nodes: {:.0} week views/s",
                    r.per_sec
                );
                week_results.entry(n).or_default().push(r);
            }
        }
        table(
            &format!(
                "the week view through the gateway (2 users replicas reading from the nodes), {} at once",
                args.clients
            ),
            "week views",
            &week_results,
        );
    }
    drop(sys);
    drop(shares);
    Ok(())
}
