//! `--soak` (`make soak`): issue 17's soak, an hour at half the
//! saturation rate, reported as a curve.
//!
//! Open model at a constant arrival rate: VUs arrive every 1/R s and each
//! runs the phases' flow (login, week, create, read, rsvp, with the seed's
//! think times times --think-scale). Every minute one row: that minute's
//! arrivals, requests sent, the share of answers that were 2xx, the
//! latency percentiles of the answers that came back in it, errors, VUs
//! running, and the resident memory (VmRSS) of every process of the
//! system, in total and per kind. At the end the first and last ten
//! minutes side by side (p95, memory), the memory's trend, and with
//! --json every row (the file is rewritten each minute, so an interrupted
//! soak keeps what it measured).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::{
    cpu_now, figures, figures_json, flow, histogram, num, procfs, raise, Args, Ctx, Rec, Recorder,
    STEPS, THINK,
};

/// A process of the system whose memory is followed.
#[derive(Debug, Clone)]
pub struct Proc {
    /// `agenda-db`, `agenda-gateway`...
    pub kind: String,
    pub name: String,
    pub pid: u32,
}

/// Where the processes come from.
pub enum Procs {
    /// A system this program started (its pids do not change).
    Fixed(Vec<Proc>),
    /// make run's endpoints.json, read again every minute (a restarted
    /// process has a new pid).
    Endpoints(PathBuf),
}

/// The kinds in the order the table shows them.
const KIND_ORDER: [&str; 7] = [
    "agenda-db",
    "agenda-users",
    "agenda-groups",
    "agenda-gateway",
    "agenda-supervisor",
    "redis-server",
    "agenda-vip",
];

/// The kind of one of our own system's processes from its name (`db-1`,
/// `users-0`, `groups-1`, `gateway`).
pub fn kind_of(name: &str) -> String {
    match name.split('-').next() {
        Some("db") => "agenda-db",
        Some("users") => "agenda-users",
        Some("groups") => "agenda-groups",
        Some("gateway") => "agenda-gateway",
        Some("supervisor") => "agenda-supervisor",
        _ => "other",
    }
    .to_string()
}

impl Procs {
    /// The processes now, with the redis-server each supervisor runs.
    fn current(&self) -> Vec<Proc> {
        let mut list = match self {
            Procs::Fixed(p) => p.clone(),
            Procs::Endpoints(file) => read_procs(file).unwrap_or_default(),
        };
        let redis: Vec<Proc> = list
            .iter()
            .filter(|p| p.kind == "agenda-supervisor")
            .flat_map(|s| {
                procfs::children(s.pid)
                    .into_iter()
                    .filter(|&c| procfs::comm(c).is_some_and(|n| n.starts_with("redis")))
                    .map(|pid| Proc {
                        kind: "redis-server".into(),
                        name: format!("redis-server of {}", s.name),
                        pid,
                    })
            })
            .collect();
        list.extend(redis);
        list
    }
}

/// The processes (with a pid) endpoints.json lists: Agenda's own
/// (`agenda-*` kinds; not Prometheus, which only watches).
pub fn read_procs(file: &std::path::Path) -> Result<Vec<Proc>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let v: Value = serde_json::from_str(&text)?;
    Ok(v["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"].as_str().is_some_and(|k| k.starts_with("agenda-")))
        .filter_map(|p| {
            Some(Proc {
                kind: p["kind"].as_str().unwrap_or("other").to_string(),
                name: p["name"].as_str().unwrap_or("?").to_string(),
                pid: u32::try_from(p["pid"].as_i64()?).ok()?,
            })
        })
        .collect())
}

/// One minute (or the drain after the last one).
struct Row {
    label: String,
    secs: f64,
    arrivals: u64,
    dropped: u64,
    sent: u64,
    ok: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    hist: Histogram<u64>,
    vus: usize,
    /// KiB per kind.
    rss: BTreeMap<String, u64>,
    rss_total: u64,
    /// Processes listed but gone (no /proc entry).
    gone: Vec<String>,
    procs: usize,
    bench_rss: Option<u64>,
    bench_cpu: f64,
}

impl Row {
    fn completed_pct(&self) -> f64 {
        let answered = self.ok + self.failed;
        if answered == 0 {
            100.0
        } else {
            self.ok as f64 * 100.0 / answered as f64
        }
    }
    fn errors_total(&self) -> u64 {
        self.failed + self.dropped
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Memory of every process now.
fn memory(procs: &Procs) -> (BTreeMap<String, u64>, u64, Vec<String>, usize) {
    let list = procs.current();
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    let mut gone = Vec::new();
    for p in &list {
        match procfs::rss_kib(p.pid) {
            Some(k) => *per.entry(p.kind.clone()).or_default() += k,
            None => gone.push(format!("{} (pid {})", p.name, p.pid)),
        }
    }
    let total = per.values().sum();
    (per, total, gone, list.len())
}

fn take_row(rec: &Recorder, procs: &Procs, label: String, secs: f64, cpu: &mut (f64, f64)) -> Row {
    let r = std::mem::replace(&mut *rec.lock(), Rec::new());
    let (rss, rss_total, gone, n) = memory(procs);
    let now = cpu_now();
    let bench_cpu = (now.0 - cpu.0) + (now.1 - cpu.1);
    *cpu = now;
    let mut errors = r.errors.clone();
    if r.dropped > 0 {
        errors.insert("dropped (VUs over --max-in-flight)".into(), r.dropped);
    }
    Row {
        label,
        secs,
        arrivals: r.arrived,
        dropped: r.dropped,
        sent: r.sent.iter().sum(),
        ok: r.ok.iter().sum(),
        failed: r.failed.iter().sum(),
        errors,
        hist: r.all,
        vus: rec.vus_in_flight.load(Ordering::Relaxed),
        rss,
        rss_total,
        gone,
        procs: n,
        bench_rss: procfs::rss_kib(std::process::id()),
        bench_cpu,
    }
}

fn lat(h: &Histogram<u64>) -> String {
    match figures(h) {
        None => "- | - | - | -".into(),
        Some([_, p50, p95, p99, max, _]) => format!("{p50:.1} | {p95:.1} | {p99:.1} | {max:.1}"),
    }
}

fn row_line(r: &Row, kinds: &[String]) -> String {
    let errors = if r.errors.is_empty() {
        "0".to_string()
    } else {
        let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{} ({})", r.errors_total(), list.join(", "))
    };
    let per: Vec<String> = kinds
        .iter()
        .map(|k| format!("{:.1}", mib(r.rss.get(k).copied().unwrap_or(0))))
        .collect();
    let gone = if r.gone.is_empty() {
        String::new()
    } else {
        format!(" gone: {}", r.gone.join(", "))
    };
    format!(
        "| {} | {} | {} | {:.2} | {} | {} | {} | {:.1} | {} | {:.1}{gone} |",
        r.label,
        r.arrivals,
        r.sent,
        r.completed_pct(),
        lat(&r.hist),
        errors,
        r.vus,
        mib(r.rss_total),
        per.join(" | "),
        r.bench_rss.map_or(0.0, mib),
    )
}

fn row_json(r: &Row) -> Value {
    json!({
        "minute": r.label,
        "secs": r.secs,
        "arrivals": r.arrivals,
        "dropped": r.dropped,
        "requests": r.sent,
        "ok": r.ok,
        "failed": r.failed,
        "completed_pct": r.completed_pct(),
        "errors": r.errors,
        "latency_ms": figures_json(&r.hist),
        "vus_running": r.vus,
        "rss_kib": {"total": r.rss_total, "per_kind": r.rss, "processes": r.procs, "gone": r.gone},
        "load_generator": {"rss_kib": r.bench_rss, "cpu_secs": r.bench_cpu},
    })
}

/// Least-squares slope of `ys` per step.
fn slope(ys: &[f64]) -> Option<f64> {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return None;
    }
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    Some(num / den)
}

fn pct_change(a: f64, b: f64) -> Option<f64> {
    (a > 0.0).then(|| (b / a - 1.0) * 100.0)
}

fn signed(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:+.1}%"))
}

/// The first-and-last comparison.
fn summary(rows: &[Row], kinds: &[String]) -> (Value, Vec<String>) {
    let full: Vec<&Row> = rows.iter().filter(|r| r.label != "drain").collect();
    let mut lines = Vec::new();
    if full.is_empty() {
        return (Value::Null, lines);
    }
    let w = (full.len() / 2).clamp(1, 10);
    let (first, last) = (&full[..w], &full[full.len() - w..]);
    let merged = |rs: &[&Row]| {
        let mut h = histogram();
        for r in rs {
            let _ = h.add(&r.hist);
        }
        h
    };
    let (hf, hl) = (merged(first), merged(last));
    let q = |h: &Histogram<u64>, x: f64| {
        (!h.is_empty()).then(|| h.value_at_quantile(x) as f64 / 1000.0)
    };
    let mean_rss = |rs: &[&Row], kind: Option<&str>| {
        rs.iter()
            .map(|r| match kind {
                None => r.rss_total,
                Some(k) => r.rss.get(k).copied().unwrap_or(0),
            } as f64)
            .sum::<f64>()
            / rs.len() as f64
    };
    let p95 = (q(&hf, 0.95), q(&hl, 0.95));
    let p99 = (q(&hf, 0.99), q(&hl, 0.99));
    let rss = (mean_rss(first, None), mean_rss(last, None));
    let p95_change = p95.0.zip(p95.1).and_then(|(a, b)| pct_change(a, b));
    let rss_change = pct_change(rss.0, rss.1);
    let trend = slope(&full.iter().map(|r| mib(r.rss_total)).collect::<Vec<_>>());
    let range = |rs: &[&Row]| format!("{}-{}", rs[0].label, rs[rs.len() - 1].label);

    lines.push(format!(
        "| window | minutes | p50 | p95 | p99 (ms) | RSS total (MiB, mean) | {} |",
        kinds.join(" | ")
    ));
    lines.push(format!(
        "| -- | -- | -- | -- | -- | -- |{}",
        " -- |".repeat(kinds.len())
    ));
    for (name, rs, h) in [("first", first, &hf), ("last", last, &hl)] {
        let per: Vec<String> = kinds
            .iter()
            .map(|k| format!("{:.1}", mean_rss(rs, Some(k)) / 1024.0))
            .collect();
        lines.push(format!(
            "| {name} {w} | {} | {} | {} | {} | {:.1} | {} |",
            range(rs),
            q(h, 0.5).map_or("-".into(), |v| format!("{v:.1}")),
            q(h, 0.95).map_or("-".into(), |v| format!("{v:.1}")),
            q(h, 0.99).map_or("-".into(), |v| format!("{v:.1}")),
            mean_rss(rs, None) / 1024.0,
            per.join(" | ")
        ));
    }
    let per_change: Vec<String> = kinds
        .iter()
        .map(|k| {
            signed(pct_change(
                mean_rss(first, Some(k)),
                mean_rss(last, Some(k)),
            ))
        })
        .collect();
    lines.push(format!(
        "| change | | {} | {} | {} | {} | {} |",
        signed(
            q(&hf, 0.5)
                .zip(q(&hl, 0.5))
                .and_then(|(a, b)| pct_change(a, b))
        ),
        signed(p95_change),
        signed(p99.0.zip(p99.1).and_then(|(a, b)| pct_change(a, b))),
        signed(rss_change),
        per_change.join(" | ")
    ));
    // Two or three points make no trend worth printing (the JSON has it).
    if let Some(s) = trend.filter(|_| full.len() >= 5) {
        lines.push(format!(
            "memory trend over the {} minutes (least squares): {:+.2} MiB/minute ({:+.1} MiB/hour)",
            full.len(),
            s,
            s * 60.0
        ));
    }
    let doc = json!({
        "window_minutes": w,
        "first": {"minutes": range(first), "latency_ms": figures_json(&hf), "rss_kib_mean": rss.0},
        "last": {"minutes": range(last), "latency_ms": figures_json(&hl), "rss_kib_mean": rss.1},
        "p95_change_pct": p95_change,
        "rss_change_pct": rss_change,
        "rss_trend_mib_per_minute": trend,
        "rss_change_pct_per_kind": kinds.iter().map(|k| (k.clone(), pct_change(mean_rss(first, Some(k)), mean_rss(last, Some(k))))).collect::<BTreeMap<_, _>>(),
    });
    (doc, lines)
}

/// Runs the soak and prints its curve.
pub async fn run(
    ctx: &Arc<Ctx>,
    args: &Args,
    procs: Procs,
    target: &str,
    setup: Value,
) -> Result<()> {
    let minutes = args.minutes;
    let rate = args.rate;
    let first = procs.current();
    if first.is_empty() {
        eprintln!("warning: no process pids known: the memory columns stay empty");
    }
    let mut kinds: Vec<String> = KIND_ORDER
        .iter()
        .filter(|k| first.iter().any(|p| p.kind == **k))
        .map(|k| k.to_string())
        .collect();
    for p in &first {
        if !kinds.contains(&p.kind) {
            kinds.push(p.kind.clone());
        }
    }
    let counts: Vec<String> = kinds
        .iter()
        .map(|k| format!("{k} ({})", first.iter().filter(|p| &p.kind == k).count()))
        .collect();
    println!();
    println!(
        "== soak: {minutes} min at {} VUs/s (open model, {} requests each; think {}s, {}s, {}s), \
         {} people, {} connections at most",
        num(rate),
        STEPS.len(),
        num(THINK[0] * args.think_scale),
        num(THINK[1] * args.think_scale),
        num(THINK[2] * args.think_scale),
        args.people,
        args.connections()
    );
    println!(
        "memory (VmRSS) of {} processes: {}",
        first.len(),
        counts.join(", ")
    );
    println!(
        "a row per minute: VUs that arrived, requests sent, Completed = 2xx of the answers that \
         came back in that minute, their latency, errors (dropped VUs included), VUs running at \
         its end, RSS in MiB (total, per kind, this load generator's own)"
    );
    let head = format!(
        "| minute | VUs | requests | Completed (%) | p50 | p95 | p99 | max (ms) | errors | VUs running | RSS total | {} | agenda-bench |",
        kinds.join(" | ")
    );
    println!("{head}");
    println!("|{}", " -- |".repeat(12 + kinds.len()));

    let rec = Arc::new(Recorder::new(false));
    let start = tokio::time::Instant::now();
    let total_secs = (minutes * 60) as f64;
    let spawner = {
        let (ctx, rec) = (ctx.clone(), rec.clone());
        let max = args.max_in_flight;
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut panics = 0u64;
            let mut k = 0u64;
            loop {
                let t = k as f64 / rate;
                if t >= total_secs {
                    break;
                }
                k += 1;
                tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
                {
                    let mut r = rec.lock();
                    r.planned += STEPS.len() as u64;
                    r.arrived += 1;
                }
                let running = rec.vus_in_flight.load(Ordering::Relaxed);
                if running >= max {
                    rec.lock().dropped += 1;
                    continue;
                }
                rec.vus_in_flight.fetch_add(1, Ordering::Relaxed);
                raise(&rec.peak_vus, running + 1);
                let (ctx, rec) = (ctx.clone(), rec.clone());
                tasks.spawn(async move {
                    if let Ok(true) = flow(&ctx, &rec, None).await {
                        rec.lock().flows_done += 1;
                    }
                    rec.vus_in_flight.fetch_sub(1, Ordering::Relaxed);
                });
                while let Some(r) = tasks.try_join_next() {
                    panics += u64::from(r.is_err());
                }
            }
            while let Some(r) = tasks.join_next().await {
                panics += u64::from(r.is_err());
            }
            panics
        })
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut cpu = cpu_now();
    let options = json!({
        "rate": rate,
        "minutes": minutes,
        "think_scale": args.think_scale,
        "think_secs": THINK.map(|s| s * args.think_scale),
        "people": args.people,
        "connections": args.connections(),
        "max_in_flight": args.max_in_flight,
        "timeout_secs": args.timeout_secs,
    });
    let write = |rows: &[Row], summary: Value| -> Result<()> {
        if let Some(file) = &args.json {
            let doc = json!({
                "mode": "soak",
                "target": target,
                "options": options,
                "setup": setup,
                "kinds": kinds,
                "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
                "summary": summary,
            });
            std::fs::write(file, serde_json::to_string_pretty(&doc)? + "\n")
                .with_context(|| format!("write {}", file.display()))?;
        }
        Ok(())
    };
    for m in 1..=minutes {
        tokio::time::sleep_until(start + Duration::from_secs(m * 60)).await;
        let row = take_row(&rec, &procs, m.to_string(), 60.0, &mut cpu);
        println!("{}", row_line(&row, &kinds));
        rows.push(row);
        write(&rows, Value::Null)?;
    }
    let drain_start = tokio::time::Instant::now();
    let panics = spawner.await.unwrap_or(1);
    let mut drain = take_row(
        &rec,
        &procs,
        "drain".into(),
        drain_start.elapsed().as_secs_f64(),
        &mut cpu,
    );
    if panics > 0 {
        *drain
            .errors
            .entry("load generator bug (VU panicked)".into())
            .or_default() += panics;
        drain.failed += panics;
    }
    if drain.sent + drain.ok + drain.failed > 0 {
        println!("{}", row_line(&drain, &kinds));
    }
    rows.push(drain);

    // Totals.
    let sum = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    let (arrivals, sent, ok) = (sum(|r| r.arrivals), sum(|r| r.sent), sum(|r| r.ok));
    let planned = arrivals * STEPS.len() as u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        for (k, v) in &r.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    let errors_total: u64 = errors.values().sum();
    let mut all = histogram();
    for r in &rows {
        let _ = all.add(&r.hist);
    }
    let bench_cpu: f64 = rows.iter().map(|r| r.bench_cpu).sum();
    let elapsed = start.elapsed().as_secs_f64();
    println!();
    println!(
        "== soak summary: {minutes} min at {} VUs/s: {arrivals} VUs, {planned} requests planned, \
         {sent} sent, {ok} completed ({:.2}%), latency of all (ms): {}",
        num(rate),
        if planned > 0 {
            ok as f64 * 100.0 / planned as f64
        } else {
            0.0
        },
        lat(&all).replace(" | ", " / ")
    );
    if errors.is_empty() {
        println!("errors: none");
    } else {
        let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("errors: {errors_total} ({})", list.join(", "));
    }
    let (sum_doc, lines) = summary(&rows, &kinds);
    for l in &lines {
        println!("{l}");
    }
    let p95c = sum_doc["p95_change_pct"].as_f64();
    let rssc = sum_doc["rss_change_pct"].as_f64();
    println!(
        "issue 17 (memory and latency flat, zero errors), as measured: p95 {} and RSS {} from the \
         first to the last window, {} errors{}",
        signed(p95c),
        signed(rssc),
        errors_total,
        if rows.iter().any(|r| !r.gone.is_empty()) {
            "; some processes were gone at some minute (see the rows)"
        } else {
            ""
        }
    );
    println!(
        "load generator: {:.1}% of one core over {:.0} s",
        bench_cpu * 100.0 / elapsed.max(1e-9),
        elapsed
    );
    let mut summary = sum_doc;
    if summary.is_object() {
        summary["totals"] = json!({
            "vus": arrivals,
            "planned": planned,
            "sent": sent,
            "completed": ok,
            "completed_pct": if planned > 0 { ok as f64 * 100.0 / planned as f64 } else { 0.0 },
            "errors": errors,
            "errors_total": errors_total,
            "latency_ms": figures_json(&all),
            "load_generator_cpu_secs": bench_cpu,
        });
    }
    write(&rows, summary)?;
    if let Some(file) = &args.json {
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_pids_and_trends() {
        assert_eq!(kind_of("db-3"), "agenda-db");
        assert_eq!(kind_of("users-0"), "agenda-users");
        assert_eq!(kind_of("gateway"), "agenda-gateway");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("endpoints.json");
        std::fs::write(
            &file,
            r#"{"processes": [
                {"name": "agenda-db-1", "kind": "agenda-db", "machine": "a", "pid": 42},
                {"name": "agenda-vip-a", "kind": "agenda-vip", "machine": "a", "pid": null},
                {"name": "prometheus", "kind": "prometheus", "machine": "w", "pid": 7}
            ]}"#,
        )
        .unwrap();
        let procs = read_procs(&file).unwrap();
        assert_eq!(procs.len(), 1, "no pid, or not Agenda's: skipped");
        assert_eq!((procs[0].kind.as_str(), procs[0].pid), ("agenda-db", 42));

        assert_eq!(slope(&[1.0]), None);
        let s = slope(&[1.0, 3.0, 5.0, 7.0]).unwrap();
        assert!((s - 2.0).abs() < 1e-9);
        assert_eq!(pct_change(0.0, 1.0), None);
        assert_eq!(pct_change(100.0, 110.0).map(|x| x.round()), Some(10.0));
        // This process is alive and has memory.
        assert!(procfs::rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(procfs::cpu_secs(std::process::id()).is_some());
    }
}
