//! `make bench-db`: the same KV workload against a five-node agenda-db and a
//! five-member etcd, both on loopback with fsync on, in one run. Prints a
//! table of throughput and latency percentiles and the agenda-db/etcd ratio
//! per row. It never asserts speed.

use std::time::{Duration, Instant};

use agenda_proto::db::db_client::DbClient as AgendaKv;
use agenda_proto::db::{PutRequest, RangeRequest};
use agenda_tests::cluster::{channels_with, Cluster, Options};
use agenda_tests::etcd::{pb, EtcdCluster};
use anyhow::Result;
use clap::Parser;
use tonic::transport::Channel;

/// Benchmark agenda-db against etcd.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds per row.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels of the write rows.
    #[arg(long, value_delimiter = ',', default_value = "1,64,512")]
    clients: Vec<usize>,
    /// Concurrency of the linearizable read row.
    #[arg(long, default_value_t = 512)]
    read_clients: usize,
    /// Upper bound on operations per row (keeps every loop bounded).
    #[arg(long, default_value_t = 500_000)]
    max_ops: usize,
    /// Skip etcd (when it is not installed).
    #[arg(long)]
    no_etcd: bool,
    /// Leader kills for the failover measurement (0 to skip).
    #[arg(long, default_value_t = 5)]
    failovers: usize,
    /// Plaintext on both sides (default: mutual TLS on every link of both
    /// agenda-db and etcd, clients and peers, as deployed).
    #[arg(long)]
    no_tls: bool,
    /// Drive an already running agenda-db (comma-separated gRPC addresses)
    /// instead of starting one, e.g. the cluster of `make run`.
    #[arg(long, value_delimiter = ',')]
    agenda_endpoints: Vec<String>,
}

#[derive(Clone)]
enum Target {
    Agenda(Vec<AgendaKv<Channel>>),
    Etcd(Vec<pb::kv_client::KvClient<Channel>>),
    /// agenda-db through the shared client the services use (writes go to
    /// the leader, failover and retries included).
    AgendaClient(agenda_common::DbClient),
}

impl Target {
    async fn put(&self, client: usize, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        match self {
            Target::Agenda(c) => {
                let mut c = c[client % c.len()].clone();
                c.put(PutRequest {
                    key,
                    value,
                    request_id: agenda_common::DbClient::request_id(),
                    ..Default::default()
                })
                .await?;
            }
            Target::Etcd(c) => {
                let mut c = c[client % c.len()].clone();
                c.put(pb::PutRequest {
                    key,
                    value,
                    lease: 0,
                })
                .await?;
            }
            Target::AgendaClient(c) => {
                c.put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn get(&self, client: usize, key: Vec<u8>) -> Result<()> {
        match self {
            Target::Agenda(c) => {
                let mut c = c[client % c.len()].clone();
                c.range(RangeRequest {
                    key,
                    ..Default::default()
                })
                .await?;
            }
            Target::Etcd(c) => {
                let mut c = c[client % c.len()].clone();
                // serializable = false: linearizable, like ours.
                c.range(pb::RangeRequest {
                    key,
                    ..Default::default()
                })
                .await?;
            }
            Target::AgendaClient(c) => {
                c.get(key).await?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Write,
    Read,
}

struct Row {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Slowest call: a stall shows here long before it moves the p99.
    max: Duration,
    errors: usize,
}

async fn run_row(t: &Target, kind: Kind, clients: usize, secs: u64, max_ops: usize) -> Row {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let per_client = (max_ops / clients).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let tag: u32 = rand::random();
    for c in 0..clients {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            for n in 0..per_client {
                if Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let r = match kind {
                    Kind::Write => {
                        t.put(
                            c,
                            format!("bench/{tag:08x}/{c:04}/{n:07}").into_bytes(),
                            vec![b'x'; 100],
                        )
                        .await
                    }
                    Kind::Read => {
                        t.get(c, format!("bench/prefill/{:04}", n % 1000).into_bytes())
                            .await
                    }
                };
                match r {
                    Ok(()) => lat.push(t0.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((lat, e)) = task.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Row {
        ops_per_sec: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: all.last().copied().unwrap_or_default(),
        errors,
    }
}

async fn prefill(t: &Target) -> Result<()> {
    for i in 0..1000 {
        t.put(
            i,
            format!("bench/prefill/{i:04}").into_bytes(),
            vec![b'p'; 100],
        )
        .await?;
    }
    Ok(())
}

async fn suite(t: &Target, args: &Args) -> Result<Vec<(String, Row)>> {
    prefill(t).await?;
    let mut rows = Vec::new();
    for &c in &args.clients {
        rows.push((
            format!("write  c={c}"),
            run_row(t, Kind::Write, c, args.seconds, args.max_ops).await,
        ));
    }
    rows.push((
        format!("read   c={} (linearizable)", args.read_clients),
        run_row(t, Kind::Read, args.read_clients, args.seconds, args.max_ops).await,
    ));
    Ok(rows)
}

/// Kills the leader `rounds` times; returns, per kill, the time from the
/// kill to the first acknowledged write that started after it.
async fn failovers(c: &mut Cluster, rounds: usize) -> Result<Vec<Duration>> {
    let mut out = Vec::new();
    let client = c.client().with_timeout(Duration::from_secs(10));
    for round in 0..rounds {
        let leader = c.leader().await?;
        let killed = Instant::now();
        c.kill(leader);
        loop {
            let req = PutRequest {
                key: format!("failover/{round}").into_bytes(),
                value: b"x".to_vec(),
                ..Default::default()
            };
            if client.put(req).await.is_ok() {
                out.push(killed.elapsed());
                break;
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(30),
                "no write after kill {round}"
            );
        }
        c.restart(leader)?;
        c.wait_leader(Duration::from_secs(20)).await?;
    }
    Ok(out)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // One CA for both: agenda-db's nodes (`peer`), etcd's members
    // (`etcd`), and the bench's clients (`bench`, an operator).
    let certs = tempfile::tempdir()?;
    let tls = if args.no_tls || !args.agenda_endpoints.is_empty() {
        None
    } else {
        use agendactl::certs::{issue, Leaf, Role};
        issue(
            certs.path(),
            &[
                Leaf::new("peer", Role::Peer),
                Leaf::new("etcd", Role::Peer),
                Leaf::new("bench", Role::Operator),
            ],
            1,
            false,
        )?;
        let files = |name: &str| agenda_common::tls::TlsFiles::in_dir(certs.path(), name);
        Some((
            agenda_common::tls::Identity::load(&files("bench"))?.client_config()?,
            files("etcd"),
        ))
    };
    let (agenda, addrs) = if args.agenda_endpoints.is_empty() {
        eprintln!(
            "starting a 5-node agenda-db cluster (fsync on, {})...",
            if tls.is_some() {
                "mutual TLS"
            } else {
                "plaintext"
            }
        );
        let dir = certs.path().display().to_string();
        let c = Cluster::start(match &tls {
            Some((client, _)) => Options {
                args: ["--tls-dir", &dir, "--tls-name", "peer"]
                    .map(String::from)
                    .to_vec(),
                tls: Some(client.clone()),
                ..Options::default()
            },
            None => Options::default(),
        })
        .await?;
        let addrs: Vec<String> = c.nodes.values().map(|n| n.grpc.clone()).collect();
        (Some(c), addrs)
    } else {
        (None, args.agenda_endpoints.clone())
    };
    let client_tls = tls.as_ref().map(|(c, _)| c.clone());
    let target = Target::Agenda(
        channels_with(&addrs, client_tls.as_ref())?
            .into_iter()
            .map(AgendaKv::new)
            .collect(),
    );
    let ours = suite(&target, &args).await?;
    let via_client = Target::AgendaClient(agenda_common::DbClient::with_tls(
        &addrs,
        client_tls.clone(),
    )?);
    let mut client_rows = Vec::new();
    for &c in &args.clients {
        client_rows.push((
            c,
            run_row(&via_client, Kind::Write, c, args.seconds, args.max_ops).await,
        ));
    }
    let failover = match agenda {
        Some(mut c) if args.failovers > 0 => Some(failovers(&mut c, args.failovers).await?),
        _ => None,
    };

    let theirs = if args.no_etcd {
        None
    } else {
        eprintln!("starting a 5-member etcd cluster (fsync on)...");
        let etcd = EtcdCluster::start_with(
            5,
            tls.map(|(client, member)| {
                // etcd's gRPC (Go) speaks HTTP/2 over TLS only when ALPN
                // says h2; agenda-db's does not insist.
                let mut client = rustls::ClientConfig::clone(&client);
                client.alpn_protocols = vec![b"h2".to_vec()];
                agenda_tests::etcd::EtcdTls {
                    member,
                    client: std::sync::Arc::new(client),
                }
            }),
        )
        .await?;
        let target = Target::Etcd(
            etcd.channels()?
                .into_iter()
                .map(pb::kv_client::KvClient::new)
                .collect(),
        );
        let rows = suite(&target, &args).await?;
        drop(etcd);
        Some(rows)
    };

    println!();
    println!(
        "5 nodes on loopback, fsync on, {}, {} s per row, clients spread over all nodes",
        if client_tls.is_some() {
            "mutual TLS on every link of both"
        } else {
            "plaintext"
        },
        args.seconds
    );
    println!(
        "{:<30} | {:>10} {:>8} {:>8} {:>8} {:>6} | {:>10} {:>8} {:>8} {:>8} {:>6} | {:>8}",
        "workload",
        "agenda/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "etcd/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "ratio"
    );
    println!("{}", "-".repeat(144));
    let cells = |r: &Row| {
        format!(
            "{:>10.0} {:>8} {:>8} {:>8} {:>6}",
            r.ops_per_sec,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.errors
        )
    };
    for (i, (name, r)) in ours.iter().enumerate() {
        match theirs.as_ref().map(|t| &t[i].1) {
            Some(e) => println!(
                "{:<30} | {} | {} | {:>7.2}x",
                name,
                cells(r),
                cells(e),
                r.ops_per_sec / e.ops_per_sec.max(f64::MIN_POSITIVE)
            ),
            None => println!(
                "{:<30} | {} | {:>10} {:>8} {:>8} {:>8} {:>6} | {:>8}",
                name,
                cells(r),
                "-",
                "-",
                "-",
                "-",
                "-",
                "-"
            ),
        }
    }
    println!();
    println!(
        "agenda-db writes through the shared DbClient (what services use: writes go to the leader)"
    );
    for (c, r) in &client_rows {
        println!(
            "  c={c:<4} {:>8.0} writes/s  p50 {} ms  p99 {} ms  max {} ms  errors {}",
            r.ops_per_sec,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.errors
        );
    }
    if let Some(mut f) = failover {
        f.sort_unstable();
        println!();
        println!(
            "leader kill -9 -> first acknowledged write, {} kills: p50 {} ms, max {} ms (all: {})",
            f.len(),
            ms(f[f.len() / 2]),
            ms(f[f.len() - 1]),
            f.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
