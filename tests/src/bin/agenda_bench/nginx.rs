//! `--vs-nginx` (`make bench-nginx`): the physical limit of issue 17.
//!
//! Debian's nginx serves a static file holding exactly the bytes of one
//! person's week view, through the same TLS (the gateway's certificate
//! and key, TLS 1.3, HTTP/1.1 keep-alive), and the same closed loop
//! drives both: N connections, each GET, read the whole body, GET again.
//! Rounds alternate (nginx, agenda, nginx, agenda, ...) so a drift of the
//! machine hits both; per round it reports requests/s, latency
//! percentiles, reconnects and who used the CPU (the load generator, the
//! server's processes, the whole machine), then the median over rounds
//! and the ratio agenda/nginx.
//!
//! nginx runs as a child of this process with its own configuration in a
//! temporary directory; it is stopped (and the directory removed) when
//! the run ends, fails or is interrupted.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_tests::system::{enc, fmt_time, PASSWORD};
use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::http1::{Conn, Endpoint, Reply};
use super::WINDOW_START;
use super::{cpu_now, figures, figures_json, histogram, procfs, setup_call, Args, SetupLog};

/// What the rounds need from the caller.
pub struct Agenda<'a> {
    /// The gateway's base URL.
    pub base: &'a str,
    /// Its public TLS client configuration (https://).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A client for the setup requests.
    pub http: &'a reqwest::Client,
    /// What the target is, for the report.
    pub label: &'a str,
    /// The certificate and key nginx presents (the gateway's), for https.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// The system's processes (kind, pid) whose CPU a round reports.
    pub pids: Vec<(String, u32)>,
    /// Extra flags the gateway of our own system got.
    pub gateway_args: Vec<String>,
}

/// One round of one target.
struct Round {
    target: &'static str,
    round: usize,
    secs: f64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    hist: Histogram<u64>,
    reconnects: u64,
    gen_cpu: f64,
    target_cpu: Option<f64>,
    /// The server's CPU seconds by kind of process (agenda-gateway...).
    cpu_by_kind: BTreeMap<String, f64>,
    machine_busy: Option<f64>,
}

impl Round {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
    /// Cores the rest of the machine used meanwhile (busy, less the
    /// generator and the server): other work that disturbs the figures.
    fn other_cores(&self) -> Option<f64> {
        let busy = self.machine_busy? * procfs::cores() as f64;
        Some((busy - self.gen_cpu / self.secs - self.target_cpu? / self.secs).max(0.0))
    }
}

/// A server under load: where it is, the request it gets, the body it
/// must answer with, and its processes.
struct Target {
    name: &'static str,
    endpoint: Endpoint,
    /// One per person (loop i sends `requests[i % len]`).
    requests: Vec<Vec<u8>>,
    /// The body size each person's request answers with.
    body_lens: Vec<usize>,
    /// Its processes: (kind, pid).
    pids: Vec<(String, u32)>,
}

/// The request both servers get (only Host differs).
fn request(authority: &str, path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: agenda-bench\r\n\
         Accept: application/json\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes()
}

pub async fn run(args: &Args, agenda: Agenda<'_>) -> Result<()> {
    let n = args.connections();
    let nginx_version = nginx_version(&args.nginx)?;
    let https = agenda.base.starts_with("https://");
    if https && agenda.cert.is_none() {
        bail!(
            "{} is https: nginx needs the gateway's certificate and key: pass --nginx-cert and --nginx-key",
            agenda.base
        );
    }

    // P people with the same realistic week, each read once to learn
    // its bytes.
    let p = args.week_people.unwrap_or(n.min(256)).max(1);
    let mut weeks = make_weeks(agenda.http, agenda.base, p, args.setup_concurrency).await?;
    let agenda_ep = Endpoint::new(agenda.base, agenda.tls.clone())?;
    let mut probe = agenda_ep
        .connect()
        .await
        .with_context(|| format!("connect to {}", agenda.base))?;
    let agenda_tls = probe.tls_info();
    let requests = weeks.requests(&agenda_ep.authority());
    let mut sizes = Vec::with_capacity(p);
    let mut first = None;
    for (i, req) in requests.iter().enumerate() {
        let reply = probe.send(req, true).await.context("read a week view")?;
        if reply.status != 200 {
            bail!(
                "GET {} as {}: {} {}",
                weeks.path,
                weeks.people[i].name,
                reply.status,
                String::from_utf8_lossy(reply.body.as_deref().unwrap_or_default())
            );
        }
        sizes.push(reply.body_len);
        if first.is_none() {
            first = Some(reply);
        }
    }
    let first = first.context("no week read")?;
    let body = first.body.clone().unwrap_or_default();
    let second = probe
        .send(&requests[0], true)
        .await
        .context("read the week view")?;
    let stable = second.body.as_deref() == Some(body.as_slice());
    let items = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["items"].as_array().map(Vec::len))
        .unwrap_or(0);
    drop(probe);
    let (min_size, max_size) = (
        sizes.iter().copied().min().unwrap_or(0),
        sizes.iter().copied().max().unwrap_or(0),
    );

    // nginx with the first person's body.
    let mut nginx = Nginx::start(
        &args.nginx,
        &args.nginx_workers,
        n,
        &body,
        https.then(|| agenda.cert.clone()).flatten(),
    )?;
    let nginx_base = format!(
        "{}://127.0.0.1:{}",
        if https { "https" } else { "http" },
        nginx.port
    );
    let nginx_ep = Endpoint::new(&nginx_base, agenda.tls.clone())?;
    let mut probe = nginx_ep
        .connect()
        .await
        .with_context(|| format!("connect to nginx at {nginx_base}"))?;
    let nginx_tls = probe.tls_info();
    let nginx_requests = weeks.requests(&nginx_ep.authority());
    let nginx_first = probe
        .send(&nginx_requests[0], true)
        .await
        .context("read the week view from nginx")?;
    if nginx_first.status != 200 || nginx_first.body.as_deref() != Some(body.as_slice()) {
        bail!(
            "nginx answered {} with {} bytes, not the week view's {} bytes{}",
            nginx_first.status,
            nginx_first.body_len,
            body.len(),
            nginx.log_tail()
        );
    }
    drop(probe);

    let tls_line = |t: &Option<(String, String)>| match t {
        Some((v, s)) => format!("{v} {s}"),
        None => "plain TCP".into(),
    };
    println!("agenda-bench --vs-nginx: the physical limit (issue 17)");
    println!("agenda: {}", agenda.label);
    if !agenda.gateway_args.is_empty() {
        println!(
            "        its gateway runs with {} (the per-person limit would refuse one person's \
             thousands of reads a second; the check itself still runs on every request)",
            agenda.gateway_args.join(" ")
        );
    }
    println!(
        "nginx:  {nginx_version} at {nginx_base}: the same bytes from a file ({} worker processes, \
         access_log off, keep-alive, sendfile, open_file_cache){}",
        args.nginx_workers,
        match &agenda.cert {
            Some((c, _)) if https => format!(", the gateway's certificate {}", c.display()),
            _ => String::new(),
        }
    );
    println!(
        "read:   GET {} (the web app's week view: from/to of one week), {} items, {} bytes of \
         JSON{}; {p} people with the same week (connection i reads person i mod {p}; one \
         person's costly steps run one at a time, so one person alone measures that queue), \
         {}; nginx serves the first one's bytes; headers: agenda {} bytes, nginx {} bytes",
        weeks.path,
        items,
        body.len(),
        if stable {
            ", the same on every read"
        } else {
            " (NOT the same bytes on a second read)"
        },
        if min_size == max_size {
            "every body the same size".to_string()
        } else {
            format!("bodies of {min_size} to {max_size} bytes")
        },
        first.head_len,
        nginx_first.head_len
    );
    println!(
        "TLS:    agenda {}, nginx {}; HTTP/1.1 keep-alive, no compression",
        tls_line(&agenda_tls),
        tls_line(&nginx_tls)
    );
    println!(
        "load:   closed loop, {n} connections per target (one per loop: GET, read the body, again), \
         {} rounds of {} s per target, alternating, after {} s of warm-up each; a request counts \
         when it answers 200 with its week's size before the round ends",
        args.rounds,
        super::num(args.round_secs),
        super::num(args.warmup_secs),
    );
    println!(
        "host:   {} cores shared by the load generator and the server under test",
        procfs::cores()
    );

    let mut agenda_target = Target {
        name: "agenda",
        endpoint: agenda_ep,
        requests,
        body_lens: sizes.clone(),
        pids: agenda.pids.clone(),
    };
    let mut nginx_target = Target {
        name: "nginx",
        requests: nginx_requests,
        endpoint: nginx_ep,
        body_lens: vec![body.len(); p],
        pids: std::iter::once(("nginx master".to_string(), nginx.pid()))
            .chain(
                procfs::children(nginx.pid())
                    .into_iter()
                    .map(|p| ("nginx worker".to_string(), p)),
            )
            .collect(),
    };
    let timeout = Duration::from_secs(args.timeout_secs);

    if args.warmup_secs > 0.0 {
        eprintln!("warm-up: {} s per target...", super::num(args.warmup_secs));
        for t in [&nginx_target, &agenda_target] {
            let r = round(t, n, args.warmup_secs, timeout, 0).await?;
            let kinds: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            eprintln!(
                "  {}: {:.0} requests/s, {} errors{}",
                t.name,
                r.rps(),
                r.errors_total(),
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", kinds.join(", "))
                }
            );
        }
    }

    println!();
    println!("| round | target | requests/s | ok | errors | p50 | p95 | p99 | max (ms) | reconnects | generator CPU | server CPU | machine busy | other CPU |");
    println!("| -- | -- | -- | -- | -- | -- | -- | -- | -- | -- | -- | -- | -- | -- |");
    let mut rounds: Vec<Round> = Vec::new();
    for i in 1..=args.rounds {
        // Fresh tokens once they are 10 minutes old (they last 15 by
        // default).
        if weeks.logged_in.elapsed() > Duration::from_secs(600) {
            weeks
                .login_again(agenda.http, agenda.base, args.setup_concurrency)
                .await?;
            agenda_target.requests = weeks.requests(&agenda_target.endpoint.authority());
            nginx_target.requests = weeks.requests(&nginx_target.endpoint.authority());
        }
        for t in [&nginx_target, &agenda_target] {
            if !nginx.running() {
                bail!("nginx exited{}", nginx.log_tail());
            }
            let r = round(t, n, args.round_secs, timeout, i).await?;
            println!("{}", round_row(&r));
            rounds.push(r);
        }
    }

    // The summary.
    let per = |name: &str| -> Vec<&Round> { rounds.iter().filter(|r| r.target == name).collect() };
    let (ng, ag) = (per("nginx"), per("agenda"));
    let median = |rs: &[&Round]| -> f64 {
        let mut v: Vec<f64> = rs.iter().map(|r| r.rps()).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            l if l % 2 == 1 => v[l / 2],
            l => (v[l / 2 - 1] + v[l / 2]) / 2.0,
        }
    };
    let merged = |rs: &[&Round]| -> Histogram<u64> {
        let mut h = histogram();
        for r in rs {
            let _ = h.add(&r.hist);
        }
        h
    };
    let (ng_rps, ag_rps) = (median(&ng), median(&ag));
    let ratio = if ng_rps > 0.0 { ag_rps / ng_rps } else { 0.0 };
    let per_round: Vec<f64> = ng
        .iter()
        .zip(&ag)
        .map(|(a, b)| {
            if a.rps() > 0.0 {
                b.rps() / a.rps()
            } else {
                0.0
            }
        })
        .collect();
    println!();
    println!("| target | median requests/s | p50 | p95 | p99 | max (ms, all rounds) | errors | generator CPU | server CPU |");
    println!("| -- | -- | -- | -- | -- | -- | -- | -- | -- |");
    for (name, rs, rps) in [("nginx", &ng, ng_rps), ("agenda", &ag, ag_rps)] {
        let h = merged(rs);
        let errors: u64 = rs.iter().map(|r| r.errors_total()).sum();
        let secs: f64 = rs.iter().map(|r| r.secs).sum();
        let gen: f64 = rs.iter().map(|r| r.gen_cpu).sum();
        let server: Option<f64> = rs.iter().map(|r| r.target_cpu).sum();
        println!(
            "| {name} | {rps:.0} | {} | {errors} | {} | {} |",
            lat_cells(&h),
            cores_cell(Some(gen), secs),
            cores_cell(server, secs)
        );
    }
    for (name, rs) in [("nginx", &ng), ("agenda", &ag)] {
        let secs: f64 = rs.iter().map(|r| r.secs).sum();
        let mut by: BTreeMap<String, f64> = BTreeMap::new();
        for r in rs.iter() {
            for (k, v) in &r.cpu_by_kind {
                *by.entry(k.clone()).or_default() += v;
            }
        }
        if !by.is_empty() && secs > 0.0 {
            let list: Vec<String> = by
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", v / secs))
                .collect();
            println!("{name}'s CPU by process, in cores: {}", list.join(", "));
        }
    }
    println!();
    println!(
        "ratio agenda/nginx: {ratio:.3} ({ag_rps:.0} / {ng_rps:.0} requests/s, medians over {} rounds; per round: {})",
        args.rounds,
        per_round
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "issue 17's target, one third of nginx or better: {}; measured before (plaintext, wrk, 64 \
         connections): 0.099 (4,783 / 48,553)",
        if ratio >= 1.0 / 3.0 { "met" } else { "not met" }
    );
    let gen_share: f64 = rounds.iter().map(|r| r.gen_cpu).sum::<f64>()
        / rounds.iter().map(|r| r.secs).sum::<f64>().max(1e-9);
    println!(
        "load generator: {:.2} cores on average during the rounds ({:.0}% of this machine's {}): {}",
        gen_share,
        gen_share * 100.0 / procfs::cores() as f64,
        procfs::cores(),
        if gen_share * 2.0 >= procfs::cores() as f64 {
            "it took half the machine or more, so it bounds both figures (the ratio still compares like with like)"
        } else {
            "it left the rest to the servers (and to whatever else runs here)"
        }
    );
    let others: Vec<f64> = rounds.iter().filter_map(Round::other_cores).collect();
    if let Some(worst) = others.iter().copied().reduce(f64::max) {
        if worst >= 0.25 {
            println!(
                "the rest of the machine used up to {worst:.2} cores during a round (other CPU: other \
                 processes, and kernel work not charged to these): when that is other work, the \
                 figures are lower and noisier than on an idle machine"
            );
        }
    }
    for r in &rounds {
        if let Some(e) = &r.first_error {
            let kinds: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            println!(
                "errors, {} round {}: {}; the first: {e}",
                r.target,
                r.round,
                kinds.join(", ")
            );
        }
    }

    if let Some(file) = &args.json {
        let doc = json!({
            "mode": "vs-nginx",
            "agenda": {"url": agenda.base, "label": agenda.label, "gateway_args": agenda.gateway_args},
            "nginx": {"version": nginx_version, "url": nginx_base, "workers": args.nginx_workers},
            "read": {
                "path": weeks.path, "items": items, "body_bytes": body.len(), "stable": stable,
                "people": p, "body_bytes_min": min_size, "body_bytes_max": max_size,
                "head_bytes": {"agenda": first.head_len, "nginx": nginx_first.head_len},
                "content_type": {"agenda": first.content_type, "nginx": nginx_first.content_type},
            },
            "tls": {"agenda": agenda_tls.as_ref().map(|(v, s)| format!("{v} {s}")),
                    "nginx": nginx_tls.as_ref().map(|(v, s)| format!("{v} {s}"))},
            "options": {
                "connections": n, "rounds": args.rounds, "round_secs": args.round_secs,
                "warmup_secs": args.warmup_secs, "timeout_secs": args.timeout_secs,
            },
            "cores": procfs::cores(),
            "rounds": rounds.iter().map(round_json).collect::<Vec<_>>(),
            "summary": {
                "nginx": {"median_rps": ng_rps, "latency_ms": figures_json(&merged(&ng))},
                "agenda": {"median_rps": ag_rps, "latency_ms": figures_json(&merged(&ag))},
                "ratio": ratio,
                "ratio_per_round": per_round,
                "target_ratio": 1.0 / 3.0,
                "met": ratio >= 1.0 / 3.0,
                "generator_cores": gen_share,
            },
        });
        std::fs::write(file, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("write {}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    drop(nginx);
    Ok(())
}

fn lat_cells(h: &Histogram<u64>) -> String {
    match figures(h) {
        None => "- | - | - | -".into(),
        Some([_, p50, p95, p99, max, _]) => {
            format!("{p50:.2} | {p95:.2} | {p99:.2} | {max:.1}")
        }
    }
}

/// CPU seconds over wall seconds, as cores.
fn cores_cell(cpu: Option<f64>, secs: f64) -> String {
    match cpu {
        Some(c) if secs > 0.0 => format!("{:.2} cores", c / secs),
        _ => "-".into(),
    }
}

fn round_row(r: &Round) -> String {
    format!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.round,
        r.target,
        r.rps(),
        r.ok,
        r.errors_total(),
        lat_cells(&r.hist),
        r.reconnects,
        cores_cell(Some(r.gen_cpu), r.secs),
        cores_cell(r.target_cpu, r.secs),
        r.machine_busy
            .map_or("-".into(), |b| format!("{:.0}%", b * 100.0)),
        r.other_cores()
            .map_or("-".into(), |c| format!("{c:.2} cores")),
    )
}

fn round_json(r: &Round) -> Value {
    json!({
        "target": r.target,
        "round": r.round,
        "secs": r.secs,
        "ok": r.ok,
        "rps": r.rps(),
        "errors": r.errors,
        "first_error": r.first_error,
        "latency_ms": figures_json(&r.hist),
        "reconnects": r.reconnects,
        "generator_cpu_secs": r.gen_cpu,
        "server_cpu_secs": r.target_cpu,
        "server_cpu_secs_by_kind": r.cpu_by_kind,
        "machine_busy": r.machine_busy,
        "other_cores": r.other_cores(),
    })
}

/// CPU seconds of a set of processes by kind (those gone count nothing).
fn cpu_of(pids: &[(String, u32)]) -> Option<BTreeMap<String, f64>> {
    (!pids.is_empty()).then(|| {
        let mut by = BTreeMap::new();
        for (kind, p) in pids {
            *by.entry(kind.clone()).or_default() += procfs::cpu_secs(*p).unwrap_or(0.0);
        }
        by
    })
}

/// Per kind, what `b` used past `a`.
fn cpu_delta(
    a: &Option<BTreeMap<String, f64>>,
    b: Option<BTreeMap<String, f64>>,
) -> BTreeMap<String, f64> {
    match (a, b) {
        (Some(a), Some(b)) => b
            .into_iter()
            .map(|(k, v)| {
                let before = a.get(&k).copied().unwrap_or(0.0);
                (k, (v - before).max(0.0))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// What one loop measured.
struct LoopResult {
    ok: u64,
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    reconnects: u64,
}

/// One round: `n` connections opened first, then `secs` of closed loops.
async fn round(t: &Target, n: usize, secs: f64, timeout: Duration, index: usize) -> Result<Round> {
    // Every connection first (handshakes are not part of the round).
    let conns = futures::future::join_all((0..n).map(|_| async {
        let mut last = None;
        for _ in 0..3 {
            match tokio::time::timeout(timeout, t.endpoint.connect()).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some("connect timed out".into()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(anyhow!("{}", last.unwrap_or_default()))
    }))
    .await;
    let mut ready = Vec::with_capacity(n);
    for c in conns {
        ready.push(c.with_context(|| format!("open a connection to {}", t.name))?);
    }

    let shared = Arc::new((t.endpoint.clone(), t.requests.clone(), t.body_lens.clone()));
    let cpu0 = cpu_now();
    let server0 = cpu_of(&t.pids);
    let machine0 = procfs::machine_ticks();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conn) in ready.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.spawn(async move {
            let (endpoint, reqs, lens) = &*shared;
            let k = i % reqs.len();
            one_loop(conn, endpoint, &reqs[k], lens[k], deadline, timeout).await
        });
    }
    let mut out = Round {
        target: t.name,
        round: index,
        secs,
        ok: 0,
        errors: BTreeMap::new(),
        first_error: None,
        hist: histogram(),
        reconnects: 0,
        gen_cpu: 0.0,
        target_cpu: None,
        cpu_by_kind: BTreeMap::new(),
        machine_busy: None,
    };
    let mut measured = false;
    while let Some(r) = tasks.join_next().await {
        if !measured && Instant::now() >= deadline {
            // The figures of the round itself, not of the last answers'
            // stragglers.
            measured = true;
            let cpu1 = cpu_now();
            out.gen_cpu = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
            out.cpu_by_kind = cpu_delta(&server0, cpu_of(&t.pids));
            out.target_cpu = server0.is_some().then(|| out.cpu_by_kind.values().sum());
            out.machine_busy = procfs::busy_between(machine0, procfs::machine_ticks());
            out.secs = start.elapsed().as_secs_f64();
        }
        let r = r.map_err(|e| anyhow!("a load loop failed: {e}"))?;
        out.ok += r.ok;
        let _ = out.hist.add(&r.hist);
        for (k, v) in r.errors {
            *out.errors.entry(k).or_default() += v;
        }
        out.first_error = out.first_error.or(r.first_error);
        out.reconnects += r.reconnects;
    }
    if !measured {
        let cpu1 = cpu_now();
        out.gen_cpu = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
        out.cpu_by_kind = cpu_delta(&server0, cpu_of(&t.pids));
        out.target_cpu = server0.is_some().then(|| out.cpu_by_kind.values().sum());
        out.machine_busy = procfs::busy_between(machine0, procfs::machine_ticks());
    }
    // Requests/s over the round's length (what ended before the deadline).
    out.secs = secs;
    Ok(out)
}

/// One connection's loop until `deadline`.
async fn one_loop(
    conn: Conn,
    endpoint: &Endpoint,
    req: &[u8],
    body_len: usize,
    deadline: Instant,
    timeout: Duration,
) -> LoopResult {
    let mut out = LoopResult {
        ok: 0,
        hist: histogram(),
        errors: BTreeMap::new(),
        first_error: None,
        reconnects: 0,
    };
    let mut conn = Some(conn);
    let error = |out: &mut LoopResult, kind: String, detail: String| {
        *out.errors.entry(kind).or_default() += 1;
        if out.first_error.is_none() {
            out.first_error = Some(detail);
        }
    };
    while Instant::now() < deadline {
        if conn.is_none() {
            out.reconnects += 1;
            match tokio::time::timeout(timeout, endpoint.connect()).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => {
                    if Instant::now() < deadline {
                        error(&mut out, "connect".into(), format!("connect: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => {
                    if Instant::now() < deadline {
                        error(&mut out, "connect".into(), "connect timed out".into());
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let t0 = Instant::now();
        let reply = tokio::time::timeout(timeout, c.send(req, false)).await;
        let t1 = Instant::now();
        let late = t1 > deadline;
        match reply {
            Ok(Ok(Reply {
                status,
                body_len: got,
                close,
                body,
                ..
            })) => {
                if close {
                    conn = None;
                }
                if late {
                    continue;
                }
                if status == 200 && got == body_len {
                    out.ok += 1;
                    let us = (t1 - t0).as_micros().min(u128::from(u64::MAX)) as u64;
                    out.hist.saturating_record(us.max(1));
                } else if status == 200 {
                    error(
                        &mut out,
                        "200 with another body size".into(),
                        format!("200 with {got} bytes, not {body_len}"),
                    );
                } else {
                    let text = body.unwrap_or_default();
                    let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
                    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    error(
                        &mut out,
                        super::status_kind(code, &v),
                        format!(
                            "{status} {}",
                            super::truncate(&String::from_utf8_lossy(&text), 300)
                        ),
                    );
                }
            }
            Ok(Err(e)) => {
                conn = None;
                if !late {
                    error(&mut out, format!("{:?}", e.kind()), e.to_string());
                }
            }
            Err(_) => {
                conn = None;
                if !late {
                    error(
                        &mut out,
                        "timeout".into(),
                        format!("no answer in {timeout:?}"),
                    );
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------ the week

/// One of the people with a week.
struct Person {
    name: String,
    token: String,
}

/// The people whose weeks are read and how to read them.
struct Weeks {
    people: Vec<Person>,
    path: String,
    logged_in: Instant,
}

impl Weeks {
    /// Each person's request to a server at `authority`.
    fn requests(&self, authority: &str) -> Vec<Vec<u8>> {
        self.people
            .iter()
            .map(|p| request(authority, &self.path, &p.token))
            .collect()
    }

    /// New tokens for everyone.
    async fn login_again(
        &mut self,
        http: &reqwest::Client,
        base: &str,
        concurrency: usize,
    ) -> Result<()> {
        let tokens: Vec<Result<String>> =
            futures::stream::iter(self.people.iter().map(|p| login(http, base, &p.name)))
                .buffered(concurrency)
                .collect()
                .await;
        for (p, t) in self.people.iter_mut().zip(tokens) {
            p.token = t?;
        }
        self.logged_in = Instant::now();
        Ok(())
    }
}

/// Logs in as `username`; its access token.
async fn login(http: &reqwest::Client, base: &str, username: &str) -> Result<String> {
    let log = SetupLog::default();
    let v = setup_call(
        http,
        base,
        &log,
        Method::POST,
        "/v1/auth/login",
        None,
        &json!({"username": username, "password": PASSWORD}),
        StatusCode::OK,
    )
    .await
    .with_context(|| format!("log in as {username}"))?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("log in as {username}: no access_token in {v}"))
}

/// Registers `name` (anyone may add them to events) and logs in.
async fn account(http: &reqwest::Client, base: &str, name: &str) -> Result<String> {
    let body = json!({
        "username": name,
        "email": format!("{name}@bench.example"),
        "password": PASSWORD,
        "display_name": format!("Bench {name}"),
        "time_zone": "Europe/Madrid",
        "add_me": "anyone",
    });
    setup_call(
        http,
        base,
        &SetupLog::default(),
        Method::POST,
        "/v1/auth/register",
        None,
        &body,
        StatusCode::CREATED,
    )
    .await
    .with_context(|| format!("register {name}"))?;
    login(http, base, name).await
}

/// The events of one person's realistic working week (the week from
/// Monday 2027-01-04, Europe/Madrid), as (organizer, body): a daily
/// stand-up (a series: five occurrences), twelve meetings of their own
/// (half with one to three attendees, some with a place or a
/// description), two invitations from a colleague waiting for an answer
/// and an all-day offsite: twenty items.
fn week_events(me: &str, colleagues: &[String]) -> Vec<(Option<usize>, Value)> {
    let at = |day: i64, hour: f64| WINDOW_START + day * 86_400 + (hour * 3600.0) as i64;
    let mut events = Vec::new();
    // 09:00 Madrid is 08:00 UTC in January.
    events.push((
        None,
        json!({
            "title": "Daily stand-up",
            "start": fmt_time(at(0, 8.0)),
            "end": fmt_time(at(0, 8.25)),
            "time_zone": "Europe/Madrid",
            "rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;COUNT=40",
            "location": "Room 2.14",
            "attendees": colleagues,
        }),
    ));
    let titles = [
        "Design review",
        "1:1 with Ana",
        "Sprint planning",
        "Customer call: Acme",
        "Budget 2027",
        "Interview: backend engineer",
        "Architecture sync",
        "Lunch with the data team",
        "Release retro",
        "Security review",
        "Roadmap draft",
        "Office hours",
    ];
    for (i, title) in titles.iter().enumerate() {
        let (day, hour) = ((i % 5) as i64, [9.5, 11.5, 14.0][i / 5]);
        let mut e = json!({
            "title": title,
            "start": fmt_time(at(day, hour)),
            "end": fmt_time(at(day, hour + 1.0)),
            "time_zone": "Europe/Madrid",
        });
        if i % 2 == 0 {
            e["attendees"] = json!(colleagues[..(i / 2) % 3 + 1]);
        }
        if i % 4 == 0 {
            e["location"] = json!("Meeting room Goya, 3rd floor");
        }
        if i % 3 == 0 {
            e["description"] = json!(
                "Agenda: status of the open items, decisions needed this week, \
                 and who follows up on what. Notes in the shared folder."
            );
        }
        events.push((None, e));
    }
    for day in [1, 3] {
        events.push((
            Some(0),
            json!({
                "title": "Quarterly numbers walkthrough",
                "start": fmt_time(at(day, 15.5)),
                "end": fmt_time(at(day, 16.5)),
                "time_zone": "Europe/Madrid",
                "location": "Video call",
                "attendees": [me],
            }),
        ));
    }
    events.push((
        None,
        json!({
            "title": "Team offsite",
            "all_day": true,
            "start": "2027-01-06",
            "end": "2027-01-07",
            "time_zone": "Europe/Madrid",
        }),
    ));
    events
}

/// `p` people, each with the same realistic week ([`week_events`]; names
/// of one length, so the bodies have one size), and three colleagues.
async fn make_weeks(
    http: &reqwest::Client,
    base: &str,
    p: usize,
    concurrency: usize,
) -> Result<Weeks> {
    let t0 = Instant::now();
    let run = format!("{:06x}", rand::rng().random::<u32>() & 0xff_ffff);
    let width = p.to_string().len();
    eprintln!("making {p} people (nx{run}p..) with a week of 20 items each, and 3 colleagues...");
    let colleagues: Vec<String> = (0..3).map(|i| format!("nx{run}col{i}")).collect();
    let mut colleague_tokens = Vec::new();
    for c in &colleagues {
        colleague_tokens.push(account(http, base, c).await?);
    }
    let (colleagues, colleague_tokens, run) = (&colleagues, &colleague_tokens, &run);
    let people: Vec<Result<Person>> = futures::stream::iter((0..p).map(|i| async move {
        let name = format!("nx{run}p{i:0width$}");
        let token = account(http, base, &name).await?;
        for (organizer, body) in week_events(&name, colleagues) {
            let token = organizer.map_or(&token, |o| &colleague_tokens[o]);
            setup_call(
                http,
                base,
                &SetupLog::default(),
                Method::POST,
                "/v1/events",
                Some(token),
                &body,
                StatusCode::CREATED,
            )
            .await
            .with_context(|| format!("create {} for {name}", body["title"]))?;
        }
        Ok(Person { name, token })
    }))
    .buffered(concurrency)
    .collect()
    .await;
    let people = people.into_iter().collect::<Result<Vec<_>>>()?;
    eprintln!("  done in {:.1} s", t0.elapsed().as_secs_f64());
    let path = format!(
        "/v1/events?from={}&to={}",
        enc(&fmt_time(WINDOW_START)),
        enc(&fmt_time(WINDOW_START + 7 * 86_400))
    );
    Ok(Weeks {
        people,
        path,
        logged_in: Instant::now(),
    })
}

// ------------------------------------------------------------ nginx

/// `nginx -v`'s answer.
fn nginx_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin).arg("-v").output().with_context(|| {
        format!(
            "run {} (install it: apt-get install -y nginx-light; or pass --nginx PATH)",
            bin.display()
        )
    })?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    Ok(text
        .trim()
        .strip_prefix("nginx version: ")
        .unwrap_or(text.trim())
        .to_string())
}

/// nginx as our child, in a temporary directory; stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(
        bin: &Path,
        workers: &str,
        connections: usize,
        body: &[u8],
        cert: Option<(PathBuf, PathBuf)>,
    ) -> Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("agenda-bench-nginx")
            .tempdir()
            .context("a temporary directory for nginx")?;
        let d = dir.path();
        // Readable by the unprivileged workers nginx switches to when
        // started as root.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir_all(d.join("www"))?;
        std::fs::create_dir_all(d.join("tmp"))?;
        std::fs::write(d.join("www/week.json"), body)?;
        std::fs::set_permissions(
            d.join("www/week.json"),
            std::fs::Permissions::from_mode(0o644),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let user = if root {
            let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
            let group = if groups.lines().any(|l| l.starts_with("nogroup:")) {
                "nogroup"
            } else {
                "nobody"
            };
            format!("user nobody {group};\n")
        } else {
            String::new()
        };
        let (listen, tls) = match &cert {
            Some((c, k)) => (
                "ssl",
                format!(
                    "ssl_certificate {};\n    ssl_certificate_key {};\n    \
                     ssl_protocols TLSv1.3;\n    ssl_session_cache shared:SSL:10m;\n    \
                     ssl_session_timeout 1h;\n",
                    c.display(),
                    k.display()
                ),
            ),
            None => ("", String::new()),
        };
        let p = d.display();
        let worker_connections = (connections + 256).max(1024);
        // HTTP/1.1 only: nginx 1.22 speaks HTTP/2 only with `listen ...
        // http2` (it has no `http2 off`), which we leave out.
        let conf = format!(
            "{user}worker_processes {workers};\n\
             worker_rlimit_nofile {nofile};\n\
             daemon off;\n\
             master_process on;\n\
             pid {p}/nginx.pid;\n\
             lock_file {p}/nginx.lock;\n\
             error_log {p}/error.log warn;\n\
             events {{\n    worker_connections {worker_connections};\n}}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {p}/tmp/body;\n\
             \x20   proxy_temp_path {p}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {p}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {p}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {p}/tmp/scgi;\n\
             \x20   types {{ }}\n\
             \x20   default_type application/json;\n\
             \x20   sendfile on;\n\
             \x20   tcp_nopush on;\n\
             \x20   tcp_nodelay on;\n\
             \x20   keepalive_timeout 75s;\n\
             \x20   keepalive_requests 1000000000;\n\
             \x20   open_file_cache max=16 inactive=600s;\n\
             \x20   open_file_cache_valid 600s;\n\
             \x20   server_tokens off;\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port} {listen};\n\
             \x20       {tls}\
             \x20       root {p}/www;\n\
             \x20       location / {{ try_files /week.json =404; }}\n\
             \x20   }}\n\
             }}\n",
            nofile = worker_connections * 2 + 64,
        );
        std::fs::write(d.join("nginx.conf"), &conf)?;
        let out = std::fs::File::create(d.join("stderr.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the master gets SIGTERM
            // (a fast shutdown, workers included) if we die first. The
            // thread that spawns is the main thread (block_on), which
            // lives as long as the process.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut nginx = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                bail!("nginx exited at once ({status}){}", nginx.log_tail());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not listen on 127.0.0.1:{port} in 10 s{}",
                    nginx.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its workers may still be starting: wait until they are there.
        let want = workers.parse::<usize>().unwrap_or_else(|_| procfs::cores());
        for _ in 0..100 {
            if procfs::children(nginx.pid()).len() >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its logs, for an error message.
    fn log_tail(&self) -> String {
        let mut s = String::new();
        for f in ["error.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                s.push_str(&format!("\n{f}:\n"));
                s.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
            }
        }
        s
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id();
        let workers = procfs::children(pid);
        // SAFETY: kill with a pid we started and have not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Workers left behind by a master that had to be killed.
        for w in workers {
            if procfs::alive(w) && procfs::comm(w).is_some_and(|c| c.starts_with("nginx")) {
                // SAFETY: a pid that was our nginx's worker a moment ago.
                unsafe { libc::kill(w as i32, libc::SIGKILL) };
            }
        }
    }
}
