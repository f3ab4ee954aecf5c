//! `make bench`: drives the public API through the gateway with the mix of
//! the issue (60% agenda reads, 25% event creation, 15% RSVP and
//! invitation traffic) at many concurrent clients for a bounded time, and
//! prints requests/s and p50/p95/p99 per route. It never asserts speed.
//!
//! By default it starts its own systems (release binaries: five agenda-db
//! nodes, two users, two groups, one gateway each), one with TLS on every
//! link (HTTPS at the gateway) and one plaintext, and drives them in
//! alternating rounds, so both see the same machine; it then prints what
//! TLS costs. Each client opens a fresh connection every
//! `--requests-per-connection` requests, so handshakes (resumed ones
//! mostly: the clients share one session cache) are part of the
//! measurement. `--url` drives a running system instead (e.g. `make run`,
//! with `--ca .agenda/ca.pem` for https).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_tests::system::{enc, fmt_time, System, SystemOptions, PASSWORD};
use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Benchmark the public API.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Concurrent clients (each a loop of requests, one in flight).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Accounts the clients act as (clients are spread over them).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// People per group (groups are made from the accounts).
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Mean pause of a client between two requests, in ms (uniform in
    /// 0..2x): people click, read, click. 0 makes every client a closed
    /// loop with no pause, which measures saturation instead.
    #[arg(long, default_value_t = 1000)]
    think_ms: u64,
    /// Upper bound on requests (keeps the loop bounded).
    #[arg(long, default_value_t = 1_000_000)]
    max_ops: usize,
    /// Drive a running gateway instead of starting a system.
    #[arg(long)]
    url: Option<String>,
    /// With --url https://...: the CA its certificate comes from.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Which systems to start: plaintext, TLS on every link, or both
    /// (alternating rounds, and the cost of TLS).
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    tls: Mode,
    /// Rounds per system (with both, they alternate); --seconds is split
    /// over them.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Requests a client sends on one connection before it opens a new
    /// one (the new one makes a TLS handshake, resumed when it can).
    #[arg(long, default_value_t = 50)]
    requests_per_connection: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Off,
    On,
    Both,
}

/// One system under load and what it measured.
struct Target {
    label: &'static str,
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    people: Arc<Vec<Arc<Person>>>,
    stats: Stats,
    secs: f64,
    _system: Option<System>,
}

struct Person {
    id: String,
    name: String,
    token: String,
    /// Events this person was invited to and has not answered.
    pending: Mutex<Vec<String>>,
    groups: Vec<String>,
}

#[derive(Default)]
struct Stats {
    /// route -> latencies (µs) of successes.
    ok: BTreeMap<&'static str, Vec<u64>>,
    /// route -> failures.
    errors: BTreeMap<&'static str, usize>,
    samples: Vec<String>,
}

fn year_slot(rng: &mut impl Rng) -> (String, String) {
    // Events spread over 2027 in 30-minute slots, so agendas stay realistic.
    let base = 1_798_761_600i64; // 2027-01-01T00:00:00Z
    let start = base + rng.random_range(0..17_520) * 1800;
    (fmt_time(start), fmt_time(start + 1800))
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, v))
}

async fn setup(http: &reqwest::Client, base: &str, args: &Args) -> Result<Vec<Arc<Person>>> {
    let run = uuid_like();
    eprintln!("setting up {} accounts...", args.users);
    let mut people = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..args.users {
        let (http, base) = (http.clone(), base.to_string());
        let name = format!("b{run}u{i}");
        tasks.push(tokio::spawn(async move {
            // Open to anyone: the workload adds strangers as attendees.
            let body = json!({"username": name, "email": format!("{name}@bench.example"), "password": PASSWORD, "add_me": "anyone"});
            let (st, user) = send(&http, &base, Method::POST, "/v1/auth/register", None, Some(body)).await?;
            if st != StatusCode::CREATED {
                bail!("register {name}: {st} {user}");
            }
            let (st, login) = send(&http, &base, Method::POST, "/v1/auth/login", None,
                Some(json!({"username": name, "password": PASSWORD}))).await?;
            if st != StatusCode::OK {
                bail!("login {name}: {st} {login}");
            }
            Ok((user["id"].as_str().unwrap_or_default().to_string(), name,
                login["access_token"].as_str().unwrap_or_default().to_string()))
        }));
        if tasks.len() == 16 {
            for t in tasks.drain(..) {
                people.push(t.await??);
            }
        }
    }
    for t in tasks {
        people.push(t.await??);
    }
    eprintln!("setting up groups of {}...", args.group_size);
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); people.len()];
    for (g, chunk) in people.chunks(args.group_size.max(2)).enumerate() {
        let owner = &chunk[0];
        let kind = if g % 2 == 0 { "hierarchical" } else { "flat" };
        let (st, group) = send(
            http,
            base,
            Method::POST,
            "/v1/groups",
            Some(&owner.2),
            Some(json!({"name": format!("group {g}"), "kind": kind})),
        )
        .await?;
        if st != StatusCode::CREATED {
            bail!("create group: {st} {group}");
        }
        let gid = group["id"].as_str().unwrap_or_default().to_string();
        for (k, member) in chunk.iter().enumerate().skip(1) {
            let (st, inv) = send(
                http,
                base,
                Method::POST,
                &format!("/v1/groups/{gid}/invitations"),
                Some(&owner.2),
                Some(json!({"username": member.1, "rank": k as u32})),
            )
            .await?;
            if st != StatusCode::CREATED {
                bail!("invite: {st} {inv}");
            }
            let iid = inv["id"].as_str().unwrap_or_default();
            let (st, a) = send(
                http,
                base,
                Method::POST,
                &format!("/v1/invitations/{iid}/accept"),
                Some(&member.2),
                None,
            )
            .await?;
            if st != StatusCode::OK {
                bail!("accept: {st} {a}");
            }
        }
        let first = g * args.group_size.max(2);
        for slot in groups.iter_mut().skip(first).take(chunk.len()) {
            slot.push(gid.clone());
        }
    }
    Ok(people
        .into_iter()
        .zip(groups)
        .map(|((id, name, token), groups)| {
            Arc::new(Person {
                id,
                name,
                token,
                pending: Mutex::new(Vec::new()),
                groups,
            })
        })
        .collect())
}

/// A client with its own connection pool (one connection to the gateway).
fn http_client(tls: Option<&Arc<rustls::ClientConfig>>, idle: usize) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(30));
    if let Some(tls) = tls {
        b = b.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
    }
    b.build().context("http client")
}

fn uuid_like() -> String {
    format!("{:x}", rand::rng().random::<u32>())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut targets = Vec::new();
    if let Some(url) = &args.url {
        let tls = match &args.ca {
            Some(ca) => Some(agenda_common::tls::public_client_config(ca)?),
            None => None,
        };
        targets.push(
            target(
                "given",
                url.trim_end_matches('/').to_string(),
                tls,
                None,
                &args,
            )
            .await?,
        );
    } else {
        let modes: &[(bool, &'static str)] = match args.tls {
            Mode::Off => &[(false, "plaintext")],
            Mode::On => &[(true, "TLS")],
            Mode::Both => &[(false, "plaintext"), (true, "TLS")],
        };
        for &(tls, label) in modes {
            eprintln!("starting the {label} system (5 agenda-db, 2 users, 2 groups, 1 gateway)...");
            let sys = System::start(SystemOptions {
                db_nodes: 5,
                users: 2,
                groups: 2,
                tls,
                ..Default::default()
            })
            .await?;
            let (base, public) = (sys.url(), sys.public_tls.clone());
            targets.push(target(label, base, public, Some(sys), &args).await?);
        }
    }
    let per_round = Duration::from_secs_f64(args.seconds as f64 / f64::from(args.rounds.max(1)));
    for round in 0..args.rounds.max(1) {
        // Alternate who goes first, so neither always follows the other.
        let n = targets.len();
        for k in 0..n {
            let t = &mut targets[(k + round as usize) % n];
            eprintln!(
                "round {}/{}: {} clients on the {} system for {:.1} s...",
                round + 1,
                args.rounds.max(1),
                args.clients,
                t.label,
                per_round.as_secs_f64()
            );
            load(t, &args, per_round).await?;
        }
    }
    println!();
    println!(
        "make bench: {} clients, think time {} ms (mean), a new connection every {} requests, {} rounds",
        args.clients,
        args.think_ms,
        args.requests_per_connection,
        args.rounds.max(1)
    );
    let mut summary = Vec::new();
    for t in &targets {
        summary.push((t.label, report(t)));
    }
    if let [(_, (plain_rps, plain_p95)), (_, (tls_rps, tls_p95))] = summary[..] {
        println!();
        println!(
            "TLS against plaintext: {tls_rps:.1} vs {plain_rps:.1} requests/s ({:+.1}%), p95 {tls_p95:.1} vs {plain_p95:.1} ms (target: under 15% fewer requests/s)",
            (tls_rps / plain_rps - 1.0) * 100.0
        );
    }
    Ok(())
}

/// A system to drive, its accounts set up.
async fn target(
    label: &'static str,
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    system: Option<System>,
    args: &Args,
) -> Result<Target> {
    let http = http_client(tls.as_ref(), 64)?;
    let people = Arc::new(setup(&http, &base, args).await?);
    Ok(Target {
        label,
        base,
        tls,
        people,
        stats: Stats::default(),
        secs: 0.0,
        _system: system,
    })
}

/// One round of load on `t` for `span`; adds to its stats.
async fn load(t: &mut Target, args: &Args, span: Duration) -> Result<()> {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let ops = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + span;
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (base, people, stats, ops, tls) = (
            t.base.clone(),
            t.people.clone(),
            stats.clone(),
            ops.clone(),
            t.tls.clone(),
        );
        let max_ops = args.max_ops;
        let think_ms = args.think_ms;
        let per_connection = args.requests_per_connection.max(1);
        tasks.push(tokio::spawn(async move {
            let me = people[c % people.len()].clone();
            let mut local: Stats = Stats::default();
            let mut http = None;
            let mut sent_on_it = 0u32;
            // Start spread over one think time, not all at once.
            if think_ms > 0 {
                let offset = rand::rng().random_range(0..think_ms);
                tokio::time::sleep(Duration::from_millis(offset).min(span)).await;
            }
            while Instant::now() < until && ops.fetch_add(1, Ordering::Relaxed) < max_ops {
                if http.is_none() || sent_on_it >= per_connection {
                    http = Some(http_client(tls.as_ref(), 1).expect("http client"));
                    sent_on_it = 0;
                }
                sent_on_it += 1;
                let http = http.as_ref().expect("made above");
                let (route, method, path, body): (&'static str, Method, String, Option<Value>);
                let roll = rand::rng().random_range(0..100);
                let (from, to) = {
                    let mut rng = rand::rng();
                    let w = 1_798_761_600i64 + rng.random_range(0..48) * 7 * 86_400;
                    (fmt_time(w), fmt_time(w + 7 * 86_400))
                };
                if roll < 50 {
                    route = "GET /v1/events";
                    method = Method::GET;
                    path = format!("/v1/events?from={}&to={}", enc(&from), enc(&to));
                    body = None;
                } else if roll < 60 && !me.groups.is_empty() {
                    route = "GET /v1/groups/{id}/agenda";
                    method = Method::GET;
                    path = format!("/v1/groups/{}/agenda?from={}&to={}", me.groups[0], enc(&from), enc(&to));
                    body = None;
                } else if roll < 85 {
                    let (start, end) = year_slot(&mut rand::rng());
                    let other = &people[rand::rng().random_range(0..people.len())];
                    let attendees = if other.id != me.id { vec![other.name.clone()] } else { vec![] };
                    route = "POST /v1/events";
                    method = Method::POST;
                    path = "/v1/events".into();
                    body = Some(json!({"title": "bench", "start": start, "end": end, "time_zone": "Europe/Madrid", "attendees": attendees}));
                } else {
                    let next = me.pending.lock().expect("lock").pop();
                    match next {
                        Some(ev) => {
                            route = "POST /v1/events/{id}/rsvp";
                            method = Method::POST;
                            path = format!("/v1/events/{ev}/rsvp");
                            let status = ["accepted", "declined", "tentative"][rand::rng().random_range(0..3)];
                            body = Some(json!({"status": status}));
                        }
                        None => {
                            route = "GET /v1/invitations";
                            method = Method::GET;
                            path = "/v1/invitations".into();
                            body = None;
                        }
                    }
                }
                let t0 = Instant::now();
                let result = send(http, &base, method, &path, Some(&me.token), body).await;
                let us = t0.elapsed().as_micros() as u64;
                match result {
                    Ok((st, v)) if st.is_success() => {
                        local.ok.entry(route).or_default().push(us);
                        if route == "POST /v1/events" {
                            if let (Some(id), Some(att)) = (v["event"]["id"].as_str(), v["event"]["attendees"].as_array()) {
                                for a in att.iter().skip(1) {
                                    if let Some(p) = people.iter().find(|p| Some(p.id.as_str()) == a["user_id"].as_str()) {
                                        p.pending.lock().expect("lock").push(id.to_string());
                                    }
                                }
                            }
                        }
                    }
                    Ok((st, v)) => {
                        *local.errors.entry(route).or_default() += 1;
                        if local.samples.len() < 3 {
                            local.samples.push(format!("{route}: {st} {v}"));
                        }
                    }
                    Err(e) => {
                        *local.errors.entry(route).or_default() += 1;
                        if local.samples.len() < 3 {
                            local.samples.push(format!("{route}: {e}"));
                        }
                    }
                }
                if think_ms > 0 {
                    let pause = rand::rng().random_range(0..=2 * think_ms);
                    let left = until.saturating_duration_since(Instant::now());
                    tokio::time::sleep(Duration::from_millis(pause).min(left)).await;
                }
            }
            let mut s = stats.lock().expect("lock");
            for (k, v) in local.ok {
                s.ok.entry(k).or_default().extend(v);
            }
            for (k, v) in local.errors {
                *s.errors.entry(k).or_default() += v;
            }
            if s.samples.len() < 10 {
                s.samples.extend(local.samples);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = Arc::try_unwrap(stats)
        .map_err(|_| anyhow::anyhow!("a client task outlived its round"))?
        .into_inner()
        .expect("lock");
    for (k, v) in s.ok {
        t.stats.ok.entry(k).or_default().extend(v);
    }
    for (k, v) in s.errors {
        *t.stats.errors.entry(k).or_default() += v;
    }
    if t.stats.samples.len() < 10 {
        t.stats.samples.extend(s.samples);
    }
    t.secs += elapsed;
    Ok(())
}

/// Prints `t`'s table; its requests/s and p95 (ms) over every route.
fn report(t: &Target) -> (f64, f64) {
    let s = &t.stats;
    println!();
    println!(
        "{} system: {} accounts, {:.1} s under load, gateway {}",
        t.label,
        t.people.len(),
        t.secs,
        t.base
    );
    println!(
        "{:<30} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "route", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"
    );
    let mut all: Vec<u64> = Vec::new();
    let routes: std::collections::BTreeSet<&str> =
        s.ok.keys().chain(s.errors.keys()).copied().collect();
    let mut total_errors = 0;
    for r in routes {
        let mut v = s.ok.get(r).cloned().unwrap_or_default();
        let errors = s.errors.get(r).copied().unwrap_or(0);
        total_errors += errors;
        all.extend(&v);
        row(r, &mut v, errors, t.secs);
    }
    let summary = row("all", &mut all, total_errors, t.secs);
    println!("target: p95 < 50 ms and zero errors at 1000 clients");
    for sample in &s.samples {
        println!("error sample: {sample}");
    }
    summary
}

/// One table row; the row's requests/s and p95 (ms).
fn row(name: &str, v: &mut [u64], errors: usize, secs: f64) -> (f64, f64) {
    v.sort_unstable();
    let pct = |p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    println!(
        "{:<30} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        name,
        v.len(),
        errors,
        v.len() as f64 / secs,
        pct(0.50),
        pct(0.95),
        pct(0.99)
    );
    (v.len() as f64 / secs, pct(0.95))
}
