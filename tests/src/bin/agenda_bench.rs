//! `agenda-bench` (`make bench-load`): seed 003's Artillery load test,
//! measured, and as many times over as asked (issue 17).
//!
//! Open model (the default): the phases of seed 003 ("Experimentos"),
//! each an arrival schedule of virtual people (VUs). Every VU runs one
//! flow with the seed's think times (3 s, 10 s, 5 s): log in, open the
//! week, create an event with another person as attendee, read it back,
//! answer an invitation. A VU starts on schedule whatever is still
//! running (up to `--max-in-flight`; past that it is dropped and counted).
//! Closed model (`--closed`): N loops running the same flow with no think
//! time, for maximum throughput.
//!
//! Per phase it prints the seed's table (total requests, completed,
//! requests/s, latency percentiles), errors by kind, per-step
//! percentiles, and the load generator's own CPU; `--json` writes it all.
//! It never asserts speed.
//!
//! Two more modes (issue 17): `--vs-nginx` (`make bench-nginx`, module
//! `nginx`) drives the week view and Debian's nginx serving the same
//! bytes through the same TLS with one closed loop and reports the ratio;
//! `--soak` (`make soak`, module `soak`) runs the flow at a constant
//! arrival rate for an hour and prints a row a minute, memory included.
//!
//! Targets: a system of its own (release binaries, TLS on every link),
//! `--url` (and `--ca`), or `--endpoints .agenda/endpoints.json` from
//! `make run`: in the namespace topology the process re-executes itself
//! inside the client namespace (`ip netns exec`, root) and counts the VIP
//! moves of each phase from the agenda-vip daemons' metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_tests::system::{enc, fmt_time, System, SystemOptions, PASSWORD};
use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

// The modes' own code, in tests/src/bin/agenda_bench/.
#[path = "agenda_bench/http1.rs"]
mod http1;
#[path = "agenda_bench/nginx.rs"]
mod nginx;
#[path = "agenda_bench/procfs.rs"]
mod procfs;
#[path = "agenda_bench/soak.rs"]
mod soak;

/// Set (to the namespace's name) in the copy of this process that runs
/// inside the client namespace, so it does not re-execute itself again.
const NETNS_ENV: &str = "AGENDA_BENCH_NETNS";

/// The gateway's defaults that matter to one client address (see
/// docs/API.md "Limits", services/gateway/src/config.rs).
const GATEWAY_PER_SOURCE_CONNECTIONS: usize = 4096;

/// Seed 003's phases: (seconds, arrivals/s at the start, at the end).
const LOW: &[(f64, f64, f64)] = &[(60.0, 2.0, 10.0)];
const MEDIUM: &[(f64, f64, f64)] = &[(60.0, 5.0, 10.0), (60.0, 10.0, 10.0)];
const HIGH: &[(f64, f64, f64)] = &[(120.0, 10.0, 15.0), (60.0, 15.0, 30.0)];
const STRESS: &[(f64, f64, f64)] = &[(120.0, 30.0, 30.0), (120.0, 30.0, 60.0)];

/// The seed's think times between the steps of a flow, in seconds.
const THINK: [f64; 3] = [3.0, 10.0, 5.0];

/// The steps of a flow.
const STEPS: [&str; 5] = ["login", "week", "create", "read", "rsvp"];
const LOGIN: usize = 0;
const WEEK: usize = 1;
const CREATE: usize = 2;
const READ: usize = 3;
const RSVP: usize = 4;

/// Events go in the four weeks from Monday 2027-01-04 (UTC), which the
/// week views read.
const WINDOW_START: i64 = 1_799_020_800;
const WEEKS: i64 = 4;
/// Events waiting for an answer remembered per person (older ones are
/// forgotten, never answered: they stay `needs_action`).
const PENDING_CAP: usize = 64;

/// Seed 003's load test against Agenda: open-model phases (or a closed
/// loop), a table per phase.
#[derive(Parser, Debug)]
#[command(
    name = "agenda-bench",
    allow_negative_numbers = true,
    about = "Seed 003's load test (low, medium, high, stress) against Agenda's public API; a table per phase",
    long_about = "Seed 003's load test (its Artillery phases low, medium, high, stress) against \
Agenda's public API, at the seed's rates times --rate-scale.\n\n\
Open model (default): virtual people (VUs) arrive on each phase's schedule, whatever is still \
running; each runs one flow with the seed's think times (3 s, 10 s, 5 s): POST /v1/auth/login \
(a pre-made account) - think - GET /v1/events (one week) - think - POST /v1/events (another \
pre-made account as attendee) - think - GET /v1/events/{id} - POST /v1/events/{id}/rsvp (an \
event another VU invited this person to, else one made for them during setup). A flow stops at \
its first failed request, as Artillery's do; before failing, a request is retried as the web app's \
client retries (within 5 s: a 503 that is not an overload refusal, e.g. the VIP moving, after its \
Retry-After; a reset connection of a GET, of the event creation or of a refresh login (both \
sent with an Idempotency-Key) after 0.5 s), and the repeats are counted by why. Closed model (--closed): --clients loops run the same \
flow with no think time for --seconds; after a failed flow a loop waits what the refusal asks \
(Retry-After of a 429 or 503; 100 ms after other failures) before its next flow.\n\n\
Per phase: Test | Total requests | Completed (%) | RPS mean | Min | Median | p95 | p99 | Max (ms), \
errors by kind, per-step percentiles and the load generator's own CPU. Total requests counts 5 \
per VU (those never sent because the VU was dropped or its flow stopped included); Completed \
are the 2xx answers; latencies are of completed requests, from the moment the VU wanted to send \
(a wait for one of --connections included). It never asserts speed.\n\n\
--vs-nginx (make bench-nginx): the physical limit. --week-people people (one per connection by \
default) with the same realistic week (20 items); nginx (a child of this program, its own \
configuration in a temporary directory) serves a file with exactly the bytes of one's week view, through the same TLS (the gateway's certificate, TLS \
1.3, HTTP/1.1 keep-alive); one closed loop drives both: --connections (default 64) connections, \
each GET, read the body, again, --rounds alternating rounds of --round-secs each. Per round \
requests/s, p50/p95/p99, reconnects and the CPU of the generator, the server and the machine; \
then the medians and the ratio agenda/nginx (issue 17 wants one third or better).\n\n\
--soak (make soak): --minutes at a constant --rate of VUs (the flow above, with think times): \
a row a minute with arrivals, requests, completed %, p50/p95/p99, errors and the RSS of every \
process of the system (total and per kind), then the first and last ten minutes compared and \
the memory's trend. Run it at half the saturation rate.\n\n\
Target: by default a system of its own (5 agenda-db, 2 users, 2 groups, 1 gateway; release \
binaries next to this one; TLS on every link). --url drives a running gateway; --endpoints reads \
make run's .agenda/endpoints.json (in the namespace topology it runs inside the client namespace, \
as root, and counts VIP moves per phase). Before the phases it makes --people accounts."
)]
struct Args {
    /// Which of seed 003's phases: low (60 s, 2->10 arrivals/s), medium
    /// (60 s 5->10/s, then 60 s at 10/s), high (120 s 10->15/s, then 60 s
    /// 15->30/s), stress (120 s at 30/s, then 120 s 30->60/s), or all four
    /// in that order (each reported on its own; the next starts once the
    /// previous one's VUs are done).
    #[arg(long, value_enum, default_value_t = PhaseArg::All)]
    phase: PhaseArg,
    /// Multiplies every arrival rate (1: the seed's; 3 and 10: issue 17's
    /// runs).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Divides every phase's duration (arrival rates stay): 6 makes low a
    /// 10 s phase, for smoke runs.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Multiplies the think times of a flow (0: none).
    #[arg(long, default_value_t = 1.0)]
    think_scale: f64,
    /// VUs running at once at most; an arrival past it is not started and
    /// is counted as "dropped" (its 5 requests as not completed).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Keep-alive HTTP/1.1 connections to the gateway at most (one request
    /// each at a time); a request waits for one, and the wait counts in
    /// its latency. The gateway takes 4096 from one address by default.
    /// Default 1000; with --vs-nginx: 64, exactly that many per server.
    #[arg(long)]
    connections: Option<usize>,
    /// Deadline of one request (the wait for a connection included), in
    /// seconds; a request past it counts as an error "timeout".
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Closed model instead of the phases: --clients loops, each running
    /// flows back to back with no think time, for --seconds (after a
    /// failed flow, waiting what a 429's or 503's Retry-After asks).
    #[arg(long)]
    closed: bool,
    /// With --closed: concurrent loops.
    #[arg(long, default_value_t = 100, requires = "closed")]
    clients: usize,
    /// With --closed: seconds of load.
    #[arg(long, default_value_t = 60, requires = "closed")]
    seconds: u64,
    /// How a VU logs in: `password` (POST /v1/auth/login: argon2id on the
    /// server, deliberately costly, the seed's flow as written) or
    /// `session` (a returning person: POST /v1/auth/refresh with a refresh
    /// token from an earlier login of that person, as the web app does
    /// when reopened; a password login when none is free).
    #[arg(long, value_enum, default_value_t = LoginMode::Password)]
    login: LoginMode,
    /// Accounts made before the load (VUs log in as one of them, chosen at
    /// random, and invite another).
    #[arg(long, default_value_t = 500)]
    people: usize,
    /// Requests in flight at once while making the accounts (each
    /// registration and login hashes a password on the server).
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Drive a running gateway at this base URL (http:// or https://)
    /// instead of starting a system.
    #[arg(long, conflicts_with = "endpoints")]
    url: Option<String>,
    /// The CA (PEM) the gateway's certificate comes from, for an https://
    /// target (with --endpoints: instead of the one the file names).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// make run's endpoints file (e.g. .agenda/endpoints.json): its `url`
    /// (or the url file beside it), its CA (`tls_dir`/ca.pem, or ca.pem
    /// beside it) and, in the namespace topology, `client_netns`: then this
    /// program re-executes itself inside that namespace (needs root) and
    /// reports the VIP moves of each phase (agenda-vip's metrics).
    #[arg(long)]
    endpoints: Option<PathBuf>,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With a system of its own: one more flag for its gateway (repeat it;
    /// e.g. --gateway-arg=--person-rate=500). With --vs-nginx the gateway
    /// already gets --person-rate and --person-burst of 1000000 (one person
    /// reads thousands of times a second), which these come after.
    #[arg(long = "gateway-arg", allow_hyphen_values = true, value_name = "FLAG")]
    gateway_args: Vec<String>,

    /// The physical limit (issue 17) instead of the phases: nginx serving
    /// a static file with the bytes of a week view (20 items; one person
    /// per connection has that same week, see --week-people),
    /// through the same TLS (the gateway's certificate and key, TLS 1.3,
    /// HTTP/1.1 keep-alive), and the week view itself, driven by the same
    /// closed loop (--connections, default 64, each GET then read the
    /// body), in alternating rounds; requests/s per round, the medians, the
    /// ratio agenda/nginx, latency percentiles and who used the CPU.
    #[arg(long, conflicts_with_all = ["closed", "soak"])]
    vs_nginx: bool,
    /// With --vs-nginx: rounds per server (nginx, agenda, nginx, agenda...).
    #[arg(long, default_value_t = 3, requires = "vs_nginx")]
    rounds: usize,
    /// With --vs-nginx: seconds of load per round.
    #[arg(long, default_value_t = 20.0, requires = "vs_nginx")]
    round_secs: f64,
    /// With --vs-nginx: seconds of unreported load per server before the
    /// rounds (handshakes done, caches warm).
    #[arg(long, default_value_t = 3.0, requires = "vs_nginx")]
    warmup_secs: f64,
    /// With --vs-nginx: people with the same week (20 items); loop i reads
    /// person i mod this. Default: one per connection, 256 at most (each
    /// is made with 18 events before the rounds; Agenda runs one
    /// person's costly steps one at a time, so a single person's 64 loops
    /// would measure that queue, not the read path).
    #[arg(long, requires = "vs_nginx")]
    week_people: Option<usize>,
    /// With --vs-nginx: the nginx binary (Debian's nginx-light or nginx).
    #[arg(long, default_value = "/usr/sbin/nginx", requires = "vs_nginx")]
    nginx: PathBuf,
    /// With --vs-nginx: nginx's worker_processes (a number or auto: one
    /// per core).
    #[arg(long, default_value = "auto", requires = "vs_nginx")]
    nginx_workers: String,
    /// With --vs-nginx against an https --url: the certificate nginx
    /// presents (the gateway's; for a system of its own and with
    /// --endpoints, found in the certificates' directory).
    #[arg(long, requires = "nginx_key")]
    nginx_cert: Option<PathBuf>,
    /// With --nginx-cert: its private key.
    #[arg(long, requires = "nginx_cert")]
    nginx_key: Option<PathBuf>,

    /// The soak (issue 17, make soak) instead of the phases: VUs arrive at
    /// a constant --rate for --minutes, each running the phases' flow with
    /// its think times (--think-scale applies); a row a minute (arrivals,
    /// requests, completed %, p50/p95/p99, errors, the RSS of every
    /// process of the system, total and per kind), then the first and the
    /// last ten minutes compared. Run it at half the saturation rate.
    #[arg(long, conflicts_with_all = ["closed", "vs_nginx"])]
    soak: bool,
    /// With --soak: VUs arriving per second. Use half the saturation rate
    /// (the arrivals/s past which the phases, or --closed's flows/s, stop
    /// keeping up). The default, 12, is half of what a 2-core machine
    /// sustained (a closed run with 64 clients finished 22 flows/s, each
    /// login hashing a password with argon2id).
    #[arg(long, default_value_t = 12.0, requires = "soak")]
    rate: f64,
    /// With --soak: minutes of load (a row each).
    #[arg(long, default_value_t = 60, requires = "soak")]
    minutes: u64,
}

impl Args {
    /// --connections, or its default for the mode.
    fn connections(&self) -> usize {
        self.connections
            .unwrap_or(if self.vs_nginx { 64 } else { 1000 })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PhaseArg {
    Low,
    Medium,
    High,
    Stress,
    All,
}

/// One stretch of a phase: `secs` long, arrivals/s going linearly from
/// `from` to `to` (scaled already).
#[derive(Debug, Clone, Copy)]
struct Stage {
    secs: f64,
    from: f64,
    to: f64,
}

#[derive(Debug, Clone)]
struct PhasePlan {
    name: &'static str,
    stages: Vec<Stage>,
}

impl PhasePlan {
    fn new(name: &'static str, seed: &[(f64, f64, f64)], args: &Args) -> PhasePlan {
        PhasePlan {
            name,
            stages: seed
                .iter()
                .map(|&(secs, from, to)| Stage {
                    secs: secs / args.time_scale,
                    from: from * args.rate_scale,
                    to: to * args.rate_scale,
                })
                .collect(),
        }
    }

    fn describe(&self) -> String {
        self.stages
            .iter()
            .map(|s| {
                if (s.from - s.to).abs() < 1e-9 {
                    format!("{} s at {}/s", num(s.secs), num(s.from))
                } else {
                    format!("{} s {}->{}/s", num(s.secs), num(s.from), num(s.to))
                }
            })
            .collect::<Vec<_>>()
            .join(", then ")
    }

    fn expected_arrivals(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| (s.from + s.to) / 2.0 * s.secs)
            .sum()
    }
}

/// A number without trailing zeros.
fn num(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Arrival times (seconds from the phase's start) of a schedule: the k-th
/// VU arrives when the integral of the rate reaches k, so a ramp from a
/// to b over d seconds brings (a+b)/2*d of them.
fn arrivals(stages: &[Stage]) -> Vec<f64> {
    let mut out = Vec::new();
    let (mut t0, mut before) = (0.0f64, 0.0f64);
    for s in stages {
        let (a, b, d) = (s.from, s.to, s.secs);
        let n = (a + b) / 2.0 * d;
        let mut k = before.ceil();
        while k < before + n - 1e-9 {
            let x = k - before;
            let t = if (b - a).abs() < 1e-12 {
                x / a
            } else {
                let c = (b - a) / d;
                (-a + (a * a + 2.0 * c * x).max(0.0).sqrt()) / c
            };
            out.push(t0 + t.clamp(0.0, d));
            k += 1.0;
        }
        t0 += d;
        before += n;
    }
    out
}

/// A pre-made account.
/// How a VU logs in (--login).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LoginMode {
    /// POST /v1/auth/login with the password.
    Password,
    /// POST /v1/auth/refresh with a refresh token of an earlier login.
    Session,
}

struct Person {
    name: String,
    /// Refresh tokens of this person's sessions not in use by a VU now
    /// (each is spent by its refresh, which gives the next).
    sessions: Mutex<Vec<String>>,
    /// An event another person organizes with this one as attendee (made
    /// during setup): what the VU answers when nobody invited it since.
    invited_event: String,
    /// Events VUs created with this person as attendee, not answered yet.
    pending: Mutex<Vec<String>>,
}

/// What every VU shares.
struct Ctx {
    base: String,
    http: reqwest::Client,
    connections: Semaphore,
    timeout: Duration,
    people: Vec<Person>,
    think: [Duration; 3],
    login: LoginMode,
}

/// What one phase measured.
struct Recorder {
    closed: bool,
    rec: Mutex<Rec>,
    vus_in_flight: AtomicUsize,
    peak_vus: AtomicUsize,
    requests_in_flight: AtomicUsize,
    peak_requests: AtomicUsize,
    ok_total: AtomicU64,
    err_total: AtomicU64,
}

struct Rec {
    all: Histogram<u64>,
    steps: Vec<Histogram<u64>>,
    sent: [u64; 5],
    ok: [u64; 5],
    failed: [u64; 5],
    errors: BTreeMap<String, u64>,
    /// The first failure of each kind.
    samples: BTreeMap<String, String>,
    /// Attempts the client repeated, by why (see [`request`]); the
    /// request counts once, by its last attempt.
    retried: BTreeMap<String, u64>,
    planned: u64,
    arrived: u64,
    dropped: u64,
    flows_done: u64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Rec {
    fn new() -> Rec {
        Rec {
            all: histogram(),
            steps: (0..STEPS.len()).map(|_| histogram()).collect(),
            sent: [0; 5],
            ok: [0; 5],
            failed: [0; 5],
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
            retried: BTreeMap::new(),
            planned: 0,
            arrived: 0,
            dropped: 0,
            flows_done: 0,
        }
    }
}

impl Recorder {
    fn new(closed: bool) -> Recorder {
        Recorder {
            closed,
            rec: Mutex::new(Rec::new()),
            vus_in_flight: AtomicUsize::new(0),
            peak_vus: AtomicUsize::new(0),
            requests_in_flight: AtomicUsize::new(0),
            peak_requests: AtomicUsize::new(0),
            ok_total: AtomicU64::new(0),
            err_total: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rec> {
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sent(&self, step: usize) {
        let mut r = self.lock();
        r.sent[step] += 1;
        if self.closed {
            r.planned += 1;
        }
    }

    fn ok(&self, step: usize, us: u64) {
        self.ok_total.fetch_add(1, Ordering::Relaxed);
        let mut r = self.lock();
        r.ok[step] += 1;
        r.all.saturating_record(us.max(1));
        r.steps[step].saturating_record(us.max(1));
    }

    fn error(&self, step: usize, kind: String, sample: String) {
        self.err_total.fetch_add(1, Ordering::Relaxed);
        let mut r = self.lock();
        r.failed[step] += 1;
        *r.errors.entry(kind.clone()).or_default() += 1;
        if r.samples.len() < 20 && !r.samples.contains_key(&kind) {
            r.samples.insert(kind, format!("{}: {sample}", STEPS[step]));
        }
    }
}

impl Recorder {
    fn retried(&self, kind: String) {
        *self.lock().retried.entry(kind).or_default() += 1;
    }
}

/// Keeps `peak` at least `now`.
fn raise(peak: &AtomicUsize, now: usize) {
    peak.fetch_max(now, Ordering::Relaxed);
}

/// The kind of a transport failure.
fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut text = String::new();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "connect (refused)".into(),
                ConnectionReset | BrokenPipe | ConnectionAborted => {
                    return "connection reset".into()
                }
                TimedOut => return "timeout".into(),
                _ => {}
            }
        }
        text.push_str(&s.to_string().to_lowercase());
        text.push(' ');
        source = s.source();
    }
    if e.is_connect() {
        "connect".into()
    } else if text.contains("closed") || text.contains("incomplete") {
        "connection closed".into()
    } else if e.is_body() || e.is_decode() {
        "reply body".into()
    } else {
        "transport".into()
    }
}

/// The kind of a non-2xx answer: status, error code, overload reason.
fn status_kind(status: StatusCode, body: &Value) -> String {
    let code = body["error"]["code"].as_str();
    let reason = body["error"]["details"]["reason"].as_str();
    match (code, reason) {
        (Some(c), Some(r)) => format!("status {} ({c}: {r})", status.as_u16()),
        (Some(c), None) => format!("status {} ({c})", status.as_u16()),
        _ => format!("status {}", status.as_u16()),
    }
}

/// The whole failure chain in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Why a request of a flow failed, for what the client does next.
#[derive(Debug, Clone, Copy)]
struct Failed {
    /// How long a client should wait before its next try (a 429's or
    /// 503's Retry-After, else a short pause); only the closed model's
    /// loops use it.
    pause: Duration,
    /// The server refused it before doing anything (429, 503): a refresh
    /// token sent with it is still unspent.
    refused: bool,
}

/// How long a request is retried quietly, as the web app's client does
/// (`web/src/api.js`, RETRY_BUDGET_MS).
const RETRY_BUDGET: Duration = Duration::from_secs(5);

/// The web app's pause before repeating a request after a network failure.
const NETWORK_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// One request of a flow, recorded: the reply when it is a 2xx whose
/// JSON has `need` (a JSON pointer); otherwise why it failed.
///
/// The client retries as the web app's does (`web/src/api.js`), within
/// [`RETRY_BUDGET`] and the request's deadline: a 503 that is not an
/// overload refusal (a failover in progress: the VIP moving, a replica
/// gone) after its Retry-After, and a network failure (reset, closed)
/// of a request that is safe to repeat (a GET, or one with an
/// `Idempotency-Key`) after half a second. Overload refusals end the
/// flow, as they would in Artillery (retrying them would add load where
/// the seed's runs add none). Every repeat is counted by why.
#[allow(clippy::too_many_arguments)]
async fn request(
    ctx: &Ctx,
    rec: &Recorder,
    step: usize,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    idempotency_key: Option<&str>,
    need: &str,
) -> Result<Value, Failed> {
    const PAUSE: Duration = Duration::from_millis(100);
    rec.sent(step);
    let n = rec.requests_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    raise(&rec.peak_requests, n);
    let t0 = Instant::now();
    let repeatable = method == Method::GET || idempotency_key.is_some();
    let budget = t0 + RETRY_BUDGET.min(ctx.timeout);
    let attempt = || async {
        let _permit = ctx.connections.acquire().await.ok();
        let mut req = ctx
            .http
            .request(method.clone(), format!("{}{path}", ctx.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let retry_after = retry_after(&resp);
        let bytes = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, retry_after, bytes))
    };
    let call = async {
        loop {
            let outcome = attempt().await;
            let again = match &outcome {
                Err(e) if repeatable && !e.is_timeout() => {
                    Some((transport_kind(e), NETWORK_RETRY_PAUSE))
                }
                Ok((status, retry_after, bytes)) if *status == StatusCode::SERVICE_UNAVAILABLE => {
                    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                    let overload = v["error"]["details"]["reason"].as_str() == Some("overloaded");
                    (!overload).then(|| {
                        let jitter = Duration::from_millis(rand::rng().random_range(0..200));
                        (
                            status_kind(*status, &v),
                            retry_after.unwrap_or(PAUSE) + jitter,
                        )
                    })
                }
                _ => None,
            };
            match again {
                Some((why, wait)) if Instant::now() + wait < budget => {
                    rec.retried(why);
                    tokio::time::sleep(wait).await;
                }
                _ => return outcome,
            }
        }
    };
    let outcome = tokio::time::timeout(ctx.timeout, call).await;
    let us = t0.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
    rec.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    let failed = |pause| Failed {
        pause,
        refused: false,
    };
    match outcome {
        Err(_) => {
            rec.error(
                step,
                "timeout".into(),
                format!("no answer in {:?}", ctx.timeout),
            );
            Err(failed(Duration::ZERO))
        }
        Ok(Err(e)) => {
            rec.error(step, transport_kind(&e), chain(&e));
            Err(failed(PAUSE))
        }
        Ok(Ok((status, retry_after, bytes))) => {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !status.is_success() {
                let sample = format!("{status} {}", truncate(&v.to_string(), 300));
                rec.error(step, status_kind(status, &v), sample);
                return Err(Failed {
                    pause: retry_after.unwrap_or(PAUSE),
                    refused: matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    ),
                });
            }
            if v.pointer(need).is_none_or(Value::is_null) {
                let sample = format!("{status} without {need}: {}", truncate(&v.to_string(), 300));
                rec.error(step, format!("bad reply ({status})"), sample);
                return Err(failed(PAUSE));
            }
            rec.ok(step, us);
            Ok(v)
        }
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let secs = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "..."
    }
}

/// A 30-minute slot on a working day of the window, as (start, end).
fn slot(rng: &mut impl Rng) -> (String, String) {
    let day = rng.random_range(0..WEEKS * 7);
    let half_hour = rng.random_range(16..36); // 08:00 to 17:30 UTC
    let start = WINDOW_START + day * 86_400 + half_hour * 1800;
    (fmt_time(start), fmt_time(start + 1800))
}

/// One VU's flow. `until`: the closed model's end (no step starts after
/// it). True when every step succeeded, false when `until` came first;
/// at the first failure, the pause a client owes before trying again.
async fn flow(ctx: &Ctx, rec: &Recorder, until: Option<Instant>) -> Result<bool, Failed> {
    let n = ctx.people.len();
    let (me, other, week, (start, end), answer) = {
        let mut rng = rand::rng();
        let me = rng.random_range(0..n);
        let other = (me + rng.random_range(1..n)) % n;
        let week = rng.random_range(0..WEEKS);
        let answer = ["accepted", "tentative", "declined"][rng.random_range(0..3)];
        (me, other, week, slot(&mut rng), answer)
    };
    let me_p = &ctx.people[me];
    let over = || until.is_some_and(|u| Instant::now() >= u);
    let think = |i: usize| {
        let d = ctx.think[i];
        async move {
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
        }
    };

    let resumed = match ctx.login {
        LoginMode::Session => me_p.sessions.lock().expect("not poisoned").pop(),
        LoginMode::Password => None,
    };
    let login = match resumed {
        Some(refresh) => {
            // With a key a refresh whose answer was lost (a connection
            // closed as the VIP moved) is repeated as the web app does,
            // and answered with the same next token.
            let key = uuid::Uuid::new_v4().to_string();
            let answer = request(
                ctx,
                rec,
                LOGIN,
                Method::POST,
                "/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": refresh.clone()})),
                Some(&key),
                "/access_token",
            )
            .await;
            // A refusal (429, 503) spent nothing: the person still holds
            // the token, as the web app keeps it.
            if let Err(Failed { refused: true, .. }) = answer {
                me_p.sessions.lock().expect("not poisoned").push(refresh);
            }
            answer?
        }
        None => {
            let body = json!({"username": me_p.name, "password": PASSWORD});
            request(
                ctx,
                rec,
                LOGIN,
                Method::POST,
                "/v1/auth/login",
                None,
                Some(body),
                None,
                "/access_token",
            )
            .await?
        }
    };
    if ctx.login == LoginMode::Session {
        if let Some(next) = login["refresh_token"].as_str() {
            me_p.sessions
                .lock()
                .expect("not poisoned")
                .push(next.to_string());
        }
    }
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    think(0).await;
    if over() {
        return Ok(false);
    }

    let from = WINDOW_START + week * 7 * 86_400;
    let path = format!(
        "/v1/events?from={}&to={}",
        enc(&fmt_time(from)),
        enc(&fmt_time(from + 7 * 86_400))
    );
    request(
        ctx,
        rec,
        WEEK,
        Method::GET,
        &path,
        Some(&token),
        None,
        None,
        "/items",
    )
    .await?;
    think(1).await;
    if over() {
        return Ok(false);
    }

    let other_p = &ctx.people[other];
    let body = json!({
        "title": "agenda-bench meeting",
        "start": start,
        "end": end,
        "time_zone": "Europe/Madrid",
        "attendees": [other_p.name],
    });
    // As the web app's event dialog does: the creation may then be
    // repeated after a network failure without making two events.
    let key = uuid::Uuid::new_v4().to_string();
    let created = request(
        ctx,
        rec,
        CREATE,
        Method::POST,
        "/v1/events",
        Some(&token),
        Some(body),
        Some(&key),
        "/event/id",
    )
    .await?;
    let id = created["event"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    {
        let mut p = other_p.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= PENDING_CAP {
            p.remove(0);
        }
        p.push(id.clone());
    }
    think(2).await;
    if over() {
        return Ok(false);
    }

    let path = format!("/v1/events/{id}");
    request(
        ctx,
        rec,
        READ,
        Method::GET,
        &path,
        Some(&token),
        None,
        None,
        "/id",
    )
    .await?;
    if over() {
        return Ok(false);
    }

    let invited = me_p
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_else(|| me_p.invited_event.clone());
    let path = format!("/v1/events/{invited}/rsvp");
    let body = json!({"status": answer});
    request(
        ctx,
        rec,
        RSVP,
        Method::POST,
        &path,
        Some(&token),
        Some(body),
        None,
        "/event/id",
    )
    .await?;
    Ok(true)
}

/// CPU seconds of this process so far: (user, system).
fn cpu_now() -> (f64, f64) {
    // SAFETY: getrusage writes the struct it is given; zeroed is a valid
    // rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// What a phase measured, for the tables and the JSON.
struct PhaseResult {
    name: String,
    model: &'static str,
    schedule: String,
    expected_vus: Option<f64>,
    arrival_secs: f64,
    elapsed_secs: f64,
    rec: Rec,
    peak_vus: usize,
    peak_requests: usize,
    cpu_user: f64,
    cpu_sys: f64,
    vip: Option<VipDelta>,
}

impl PhaseResult {
    fn completed(&self) -> u64 {
        self.rec.ok.iter().sum()
    }
    fn sent(&self) -> u64 {
        self.rec.sent.iter().sum()
    }
    fn rps(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.completed() as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }
    fn completed_pct(&self) -> f64 {
        if self.rec.planned == 0 {
            0.0
        } else {
            self.completed() as f64 * 100.0 / self.rec.planned as f64
        }
    }
    /// Every error kind with its count, "dropped" included.
    fn errors(&self) -> BTreeMap<String, u64> {
        let mut e = self.rec.errors.clone();
        if self.rec.dropped > 0 {
            e.insert(
                "dropped (VUs over --max-in-flight)".into(),
                self.rec.dropped,
            );
        }
        e
    }
    fn not_sent(&self) -> u64 {
        self.rec.planned.saturating_sub(self.sent())
    }
}

/// Latency figures of a histogram, in ms: min, median, p95, p99, max, mean.
fn figures(h: &Histogram<u64>) -> Option<[f64; 6]> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some([
        ms(h.min()),
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.mean() / 1000.0,
    ])
}

fn figures_json(h: &Histogram<u64>) -> Value {
    match figures(h) {
        None => Value::Null,
        Some([min, median, p95, p99, max, mean]) => json!({
            "min": min, "median": median, "p95": p95, "p99": p99, "max": max, "mean": mean,
        }),
    }
}

fn cells(h: &Histogram<u64>) -> String {
    match figures(h) {
        None => "- | - | - | - | -".into(),
        Some([min, median, p95, p99, max, _]) => {
            format!("{min:.1} | {median:.1} | {p95:.1} | {p99:.1} | {max:.1}")
        }
    }
}

const TABLE_HEAD: &str = "| Test | Total requests | Completed (%) | RPS mean | Min | Median | p95 | p99 | Max (ms) |\n| -- | -- | -- | -- | -- | -- | -- | -- | -- |";

fn table_row(p: &PhaseResult) -> String {
    format!(
        "| {} | {} | {} ({:.1}%) | {:.2} | {} |",
        p.name,
        p.rec.planned,
        p.completed(),
        p.completed_pct(),
        p.rps(),
        cells(&p.rec.all)
    )
}

fn print_phase(p: &PhaseResult, args: &Args) {
    println!();
    match p.model {
        "open" => println!(
            "== {}: {} ({} VUs arrived over {:.1} s, {:.0} planned; {} dropped); flows done after {:.1} s",
            p.name,
            p.schedule,
            p.rec.arrived,
            p.arrival_secs,
            p.expected_vus.unwrap_or_default(),
            p.rec.dropped,
            p.elapsed_secs
        ),
        _ => println!(
            "== {}: {} ({} flows started, {} finished every step) over {:.1} s",
            p.name, p.schedule, p.rec.arrived, p.rec.flows_done, p.elapsed_secs
        ),
    }
    println!("{TABLE_HEAD}");
    println!("{}", table_row(p));
    let errors = p.errors();
    if errors.is_empty() {
        println!("errors: none");
    } else {
        let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("errors: {}", list.join(", "));
    }
    if !p.rec.retried.is_empty() {
        let list: Vec<String> = p
            .rec
            .retried
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!(
            "retried by the client, as the web app does (then counted by their last answer): {}",
            list.join(", ")
        );
    }
    if p.not_sent() > 0 {
        println!(
            "not sent: {} requests (flows stopped at an earlier error, or dropped VUs)",
            p.not_sent()
        );
    }
    println!("| step | sent | ok | errors | Min | Median | p95 | p99 | Max (ms) |");
    println!("| -- | -- | -- | -- | -- | -- | -- | -- | -- |");
    for (i, name) in STEPS.iter().enumerate() {
        println!(
            "| {name} | {} | {} | {} | {} |",
            p.rec.sent[i],
            p.rec.ok[i],
            p.rec.failed[i],
            cells(&p.rec.steps[i])
        );
    }
    let cpu = p.cpu_user + p.cpu_sys;
    println!(
        "load generator: {:.2} s CPU (user {:.2} + system {:.2}), {:.1}% of one core over {:.1} s; at most {} VUs and {} requests in flight",
        cpu,
        p.cpu_user,
        p.cpu_sys,
        if p.elapsed_secs > 0.0 { cpu * 100.0 / p.elapsed_secs } else { 0.0 },
        p.elapsed_secs,
        p.peak_vus,
        p.peak_requests
    );
    match &p.vip {
        None => {}
        Some(VipDelta::Known { moves, changes, .. }) => println!(
            "VIP moves during the phase: {moves} (agenda-vip state changes, all kinds: {changes})"
        ),
        Some(VipDelta::Unknown(why)) => println!("VIP moves during the phase: unknown ({why})"),
    }
    for note in limit_notes(p, args) {
        println!("note: {note}");
    }
    for (kind, s) in &p.rec.samples {
        println!("first {kind}: {s}");
    }
}

/// What the errors say about the gateway's limits (one client address).
fn limit_notes(p: &PhaseResult, args: &Args) -> Vec<String> {
    let mut notes = Vec::new();
    let count = |prefix: &str| -> u64 {
        p.rec
            .errors
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let limited = count("status 429");
    if limited > 0 {
        notes.push(format!(
            "the gateway refused {limited} requests as rate limited (429): the per-person limit \
             (burst 400, then 100/s: gateway --person-burst/--person-rate, env AGENDA_PERSON_BURST/\
             AGENDA_PERSON_RATE), or a person's costly steps past 1 running + 16 waiting per replica; \
             more --people spreads the load over more persons"
        ));
    }
    let overloaded = count("status 503");
    if overloaded > 0 {
        notes.push(format!(
            "the system refused {overloaded} requests as unavailable (503): overload protection (the \
             gateway's adaptive cap of requests at once, 4..256: --max-concurrent-requests, \
             --latency-tolerance, env AGENDA_MAX_CONCURRENT_REQUESTS/AGENDA_LATENCY_TOLERANCE before \
             make run), not a per-client limit"
        ));
    }
    let conn = count("connect") + count("connection");
    if conn > 0 && args.connections() > GATEWAY_PER_SOURCE_CONNECTIONS {
        notes.push(format!(
            "{conn} connection failures with --connections {} above the gateway's default cap of \
             {GATEWAY_PER_SOURCE_CONNECTIONS} connections per address (--max-connections-per-source, \
             env AGENDA_MAX_CONNECTIONS_PER_SOURCE)",
            args.connections()
        ));
    }
    if p.rec.dropped > 0 {
        notes.push(format!(
            "{} VUs were not started: --max-in-flight {} VUs were running",
            p.rec.dropped, args.max_in_flight
        ));
    }
    notes
}

fn phase_json(p: &PhaseResult) -> Value {
    let steps: serde_json::Map<String, Value> = STEPS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.to_string(),
                json!({
                    "sent": p.rec.sent[i],
                    "ok": p.rec.ok[i],
                    "errors": p.rec.failed[i],
                    "latency_ms": figures_json(&p.rec.steps[i]),
                }),
            )
        })
        .collect();
    let vip = match &p.vip {
        None => Value::Null,
        Some(VipDelta::Known {
            moves,
            changes,
            per_daemon,
        }) => json!({"moves": moves, "state_changes": changes, "per_daemon": per_daemon}),
        Some(VipDelta::Unknown(why)) => json!({"unknown": why}),
    };
    json!({
        "test": p.name,
        "model": p.model,
        "schedule": p.schedule,
        "expected_vus": p.expected_vus,
        "vus": p.rec.arrived,
        "dropped": p.rec.dropped,
        "flows_completed": p.rec.flows_done,
        "total_requests": p.rec.planned,
        "sent": p.sent(),
        "completed": p.completed(),
        "completed_pct": p.completed_pct(),
        "rps_mean": p.rps(),
        "arrival_secs": p.arrival_secs,
        "elapsed_secs": p.elapsed_secs,
        "latency_ms": figures_json(&p.rec.all),
        "steps": steps,
        "errors": p.errors(),
        "error_samples": p.rec.samples,
        "retried": p.rec.retried,
        "peak_vus_in_flight": p.peak_vus,
        "peak_requests_in_flight": p.peak_requests,
        "load_generator_cpu": {
            "user_secs": p.cpu_user,
            "system_secs": p.cpu_sys,
            "secs": p.cpu_user + p.cpu_sys,
            "pct_of_one_core": if p.elapsed_secs > 0.0 { (p.cpu_user + p.cpu_sys) * 100.0 / p.elapsed_secs } else { 0.0 },
        },
        "vip": vip,
    })
}

/// Prints progress every 10 s (as Artillery's intermediate reports) until
/// `stop`.
fn ticker(name: String, rec: Arc<Recorder>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut next = start + Duration::from_secs(10);
        loop {
            while Instant::now() < next {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            next += Duration::from_secs(10);
            let arrived = rec.lock().arrived;
            eprintln!(
                "[{name}] {:>5.0} s: {arrived} VUs so far, {} running, {} requests in flight, {} ok, {} errors",
                start.elapsed().as_secs_f64(),
                rec.vus_in_flight.load(Ordering::Relaxed),
                rec.requests_in_flight.load(Ordering::Relaxed),
                rec.ok_total.load(Ordering::Relaxed),
                rec.err_total.load(Ordering::Relaxed),
            );
        }
    })
}

/// One open-model phase.
async fn run_open(ctx: &Arc<Ctx>, plan: &PhasePlan, args: &Args) -> PhaseResult {
    let rec = Arc::new(Recorder::new(false));
    let times = arrivals(&plan.stages);
    eprintln!(
        "phase {}: {} ({} VUs, 5 requests each)...",
        plan.name,
        plan.describe(),
        times.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tick = ticker(plan.name.to_string(), rec.clone(), stop.clone());
    let cpu0 = cpu_now();
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut panics = 0u64;
    for t in times {
        tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
        {
            let mut r = rec.lock();
            r.planned += STEPS.len() as u64;
            r.arrived += 1;
        }
        let running = rec.vus_in_flight.load(Ordering::Relaxed);
        if running >= args.max_in_flight {
            rec.lock().dropped += 1;
            continue;
        }
        rec.vus_in_flight.fetch_add(1, Ordering::Relaxed);
        raise(&rec.peak_vus, running + 1);
        let (ctx, rec) = (ctx.clone(), rec.clone());
        tasks.spawn(async move {
            // A VU stops at its first failure, as Artillery's do.
            if let Ok(true) = flow(&ctx, &rec, None).await {
                rec.lock().flows_done += 1;
            }
            rec.vus_in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        while let Some(r) = tasks.try_join_next() {
            panics += u64::from(r.is_err());
        }
    }
    let arrival_secs = start.elapsed().as_secs_f64();
    while let Some(r) = tasks.join_next().await {
        panics += u64::from(r.is_err());
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu_now();
    stop.store(true, Ordering::Relaxed);
    let _ = tick.await;
    finish(
        rec,
        plan.name.to_string(),
        "open",
        plan.describe() + &format!(" (seed 003 x{})", num(args.rate_scale)),
        Some(plan.expected_arrivals()),
        arrival_secs,
        elapsed_secs,
        cpu0,
        cpu1,
        panics,
    )
}

/// The closed model: `clients` loops of flows for `seconds`.
async fn run_closed(ctx: &Arc<Ctx>, args: &Args) -> PhaseResult {
    let rec = Arc::new(Recorder::new(true));
    eprintln!(
        "closed model: {} clients for {} s, no think time...",
        args.clients, args.seconds
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tick = ticker("closed".into(), rec.clone(), stop.clone());
    let cpu0 = cpu_now();
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (ctx, rec) = (ctx.clone(), rec.clone());
        tasks.spawn(async move {
            let n = rec.vus_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            raise(&rec.peak_vus, n);
            while Instant::now() < until {
                rec.lock().arrived += 1;
                match flow(&ctx, &rec, Some(until)).await {
                    Ok(true) => rec.lock().flows_done += 1,
                    Ok(false) => {}
                    // As a client should: wait what a refusal asks
                    // (Retry-After), or a moment, before the next flow.
                    Err(f) => {
                        let left = until.saturating_duration_since(Instant::now());
                        tokio::time::sleep(f.pause.min(left)).await;
                    }
                }
            }
            rec.vus_in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let mut panics = 0u64;
    while let Some(r) = tasks.join_next().await {
        panics += u64::from(r.is_err());
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu_now();
    stop.store(true, Ordering::Relaxed);
    let _ = tick.await;
    finish(
        rec,
        "closed".into(),
        "closed",
        format!(
            "{} clients, {} s, flows back to back",
            args.clients, args.seconds
        ),
        None,
        args.seconds as f64,
        elapsed_secs,
        cpu0,
        cpu1,
        panics,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    rec: Arc<Recorder>,
    name: String,
    model: &'static str,
    schedule: String,
    expected_vus: Option<f64>,
    arrival_secs: f64,
    elapsed_secs: f64,
    cpu0: (f64, f64),
    cpu1: (f64, f64),
    panics: u64,
) -> PhaseResult {
    let peak_vus = rec.peak_vus.load(Ordering::Relaxed);
    let peak_requests = rec.peak_requests.load(Ordering::Relaxed);
    let mut r = std::mem::replace(&mut *rec.lock(), Rec::new());
    if panics > 0 {
        *r.errors
            .entry("load generator bug (VU panicked)".into())
            .or_default() += panics;
    }
    PhaseResult {
        name,
        model,
        schedule,
        expected_vus,
        arrival_secs,
        elapsed_secs,
        rec: r,
        peak_vus,
        peak_requests,
        cpu_user: cpu1.0 - cpu0.0,
        cpu_sys: cpu1.1 - cpu0.1,
        vip: None,
    }
}

// ---------------------------------------------------------------- setup

/// Refusals met while making the accounts (retried after Retry-After).
#[derive(Default)]
struct SetupLog {
    refused: Mutex<BTreeMap<String, u64>>,
}

/// A setup request, retried while the system refuses it for now (429,
/// 503: after Retry-After) or the connection fails; its reply when it
/// answers `want`.
#[allow(clippy::too_many_arguments)]
async fn setup_call(
    http: &reqwest::Client,
    base: &str,
    log: &SetupLog,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
    want: StatusCode,
) -> Result<Value> {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut req = http
            .request(method.clone(), format!("{base}{path}"))
            .json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let wait = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after(&resp);
                let bytes = resp.bytes().await.unwrap_or_default();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if status == want {
                    return Ok(v);
                }
                if status != StatusCode::TOO_MANY_REQUESTS
                    && status != StatusCode::SERVICE_UNAVAILABLE
                {
                    bail!(
                        "{method} {path}: {status} {} (wanted {want})",
                        truncate(&v.to_string(), 400)
                    );
                }
                *log.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(status_kind(status, &v))
                    .or_default() += 1;
                retry_after
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_secs(1))
            }
            Err(e) => {
                if attempts >= 5 {
                    return Err(anyhow!("{method} {path}: {}", chain(&e)));
                }
                *log.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(transport_kind(&e))
                    .or_default() += 1;
                Duration::from_secs(1)
            }
        };
        if attempts >= 60 {
            bail!("{method} {path}: still refused after {attempts} attempts");
        }
        tokio::time::sleep(wait).await;
    }
}

/// Makes `n` accounts (anyone may add them to events) and, for each, an
/// event organized by the next one with them as attendee.
async fn setup(http: &reqwest::Client, base: &str, args: &Args) -> Result<(Vec<Person>, Value)> {
    let t0 = Instant::now();
    let log = SetupLog::default();
    let run = format!("{:08x}", rand::rng().random::<u32>());
    let n = args.people;
    eprintln!(
        "making {n} accounts (lb{run}u0..), {} at a time...",
        args.setup_concurrency
    );
    let names: Vec<String> = (0..n).map(|i| format!("lb{run}u{i}")).collect();
    let log_ref = &log;
    let mut done = 0usize;
    let mut tokens: Vec<(usize, String, String)> = Vec::with_capacity(n);
    let mut stream = futures::stream::iter(names.iter().enumerate().map(|(i, name)| async move {
        let body = json!({
            "username": name,
            "email": format!("{name}@bench.example"),
            "password": PASSWORD,
            "add_me": "anyone",
        });
        setup_call(
            http,
            base,
            log_ref,
            Method::POST,
            "/v1/auth/register",
            None,
            &body,
            StatusCode::CREATED,
        )
        .await
        .with_context(|| format!("register {name}"))?;
        let body = json!({"username": name, "password": PASSWORD});
        let login = setup_call(
            http,
            base,
            log_ref,
            Method::POST,
            "/v1/auth/login",
            None,
            &body,
            StatusCode::OK,
        )
        .await
        .with_context(|| format!("log in as {name}"))?;
        let token = login["access_token"]
            .as_str()
            .with_context(|| format!("log in as {name}: no access_token in {login}"))?
            .to_string();
        let refresh = login["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok::<_, anyhow::Error>((i, token, refresh))
    }))
    .buffer_unordered(args.setup_concurrency);
    while let Some(r) = stream.next().await {
        tokens.push(r?);
        done += 1;
        if done.is_multiple_of(100) {
            eprintln!("  {done}/{n} accounts");
        }
    }
    drop(stream);
    tokens.sort_by_key(|(i, _, _)| *i);
    let accounts_secs = t0.elapsed().as_secs_f64();

    eprintln!("making one invitation per person to answer...");
    let tokens_ref = &tokens;
    let names_ref = &names;
    let mut events: Vec<(usize, String)> = futures::stream::iter((0..n).map(|i| async move {
        let organizer = (i + 1) % n;
        let (start, end) = slot(&mut rand::rng());
        let body = json!({
            "title": "agenda-bench invitation",
            "start": start,
            "end": end,
            "time_zone": "Europe/Madrid",
            "attendees": [names_ref[i]],
        });
        let v = setup_call(
            http,
            base,
            log_ref,
            Method::POST,
            "/v1/events",
            Some(&tokens_ref[organizer].1),
            &body,
            StatusCode::CREATED,
        )
        .await
        .with_context(|| format!("create the invitation of {}", names_ref[i]))?;
        let id = v["event"]["id"]
            .as_str()
            .with_context(|| format!("no event id in {v}"))?
            .to_string();
        Ok::<_, anyhow::Error>((i, id))
    }))
    .buffer_unordered(args.setup_concurrency.max(16))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    events.sort_by_key(|(i, _)| *i);
    let refused = log.refused.into_inner().unwrap_or_else(|e| e.into_inner());
    let secs = t0.elapsed().as_secs_f64();
    println!("setup: {n} accounts in {accounts_secs:.1} s, {n} invitations; {secs:.1} s in all");
    if !refused.is_empty() {
        let list: Vec<String> = refused.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "setup: refused or failed for now, then retried (after Retry-After): {}",
            list.join(", ")
        );
    }
    let people = names
        .into_iter()
        .zip(events)
        .zip(&tokens)
        .map(|((name, (_, invited_event)), (_, _, refresh))| Person {
            name,
            sessions: Mutex::new(vec![refresh.clone()]),
            invited_event,
            pending: Mutex::new(Vec::new()),
        })
        .collect();
    let report = json!({
        "people": n,
        "accounts_secs": accounts_secs,
        "secs": secs,
        "refused_then_retried": refused,
    });
    Ok((people, report))
}

// ---------------------------------------------------------------- targets

/// An agenda-vip daemon whose metrics tell the VIP's moves.
#[derive(Debug, Clone)]
struct VipProbe {
    name: String,
    netns: String,
    metrics: String,
}

#[derive(Debug, Clone)]
enum VipDelta {
    Known {
        moves: u64,
        changes: u64,
        per_daemon: BTreeMap<String, Value>,
    },
    Unknown(String),
}

/// Where the load goes.
#[derive(Debug, Clone)]
struct Target {
    /// make run's endpoints file, when the target came from one.
    endpoints: Option<PathBuf>,
    /// Its certificates' directory (`tls_dir`).
    tls_dir: Option<PathBuf>,
    url: String,
    ca: Option<PathBuf>,
    client_netns: Option<String>,
    local_url: Option<String>,
    vips: Vec<VipProbe>,
    source: String,
}

fn check_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/').to_string();
    match reqwest::Url::parse(&url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(url),
        Ok(u) => bail!(
            "--url {url}: want an http:// or https:// URL with a host (got scheme {:?})",
            u.scheme()
        ),
        Err(e) => bail!("--url {url}: not a URL ({e})"),
    }
}

fn read_endpoints(file: &Path, ca: Option<&Path>) -> Result<Target> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "read {} (written by `make run` once the system is ready)",
            file.display()
        )
    })?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    if !v.is_object() {
        bail!("{}: not a JSON object", file.display());
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let url = match v["url"].as_str() {
        Some(u) => u.to_string(),
        None => match std::fs::read_to_string(dir.join("url")) {
            Ok(u) if !u.trim().is_empty() => u.trim().to_string(),
            _ => v["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["kind"] == "agenda-gateway")
                .and_then(|p| p["http"].as_str())
                .map(str::to_string)
                .with_context(|| {
                    format!(
                        "{}: no `url`, no url file beside it, no agenda-gateway process with `http`",
                        file.display()
                    )
                })?,
        },
    };
    let url = check_url(&url)?;
    let ca = match ca {
        Some(c) => Some(c.to_path_buf()),
        None if url.starts_with("https://") => {
            let from_dir = v["tls_dir"]
                .as_str()
                .map(|d| Path::new(d).join("ca.pem"))
                .filter(|p| p.exists());
            let beside = dir.join("ca.pem");
            Some(
                from_dir
                    .or_else(|| beside.exists().then_some(beside))
                    .with_context(|| {
                        format!(
                    "{url} is https but no CA found ({}: tls_dir/ca.pem, nor {}); pass --ca",
                    file.display(),
                    dir.join("ca.pem").display()
                )
                    })?,
            )
        }
        None => None,
    };
    let client_netns = v["client_netns"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let vips = v["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == "agenda-vip")
        .filter_map(|p| {
            Some(VipProbe {
                name: p["name"].as_str().unwrap_or("agenda-vip").to_string(),
                netns: p["netns"].as_str().unwrap_or_default().to_string(),
                metrics: format!("{}/metrics", p["http"].as_str()?.trim_end_matches('/')),
            })
        })
        .collect();
    Ok(Target {
        endpoints: Some(file.to_path_buf()),
        tls_dir: v["tls_dir"].as_str().map(PathBuf::from),
        url,
        ca,
        client_netns,
        local_url: v["local_url"].as_str().map(str::to_string),
        vips,
        source: file.display().to_string(),
    })
}

/// Sums of `agenda_vip_transitions_total` in a metrics page: (to master,
/// all).
fn parse_transitions(text: &str) -> Option<(f64, f64)> {
    let mut found = false;
    let (mut master, mut all) = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("agenda_vip_transitions_total") else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let Some(value) = rest.rsplit(' ').next().and_then(|x| x.parse::<f64>().ok()) else {
            continue;
        };
        found = true;
        all += value;
        if rest.contains("to=\"master\"") {
            master += value;
        }
    }
    found.then_some((master, all))
}

/// Each daemon's (to master, all) transitions, or why they could not be
/// read. Tried over HTTP from here (the client namespace reaches the
/// machines' addresses over the bridge), then with curl inside the
/// daemon's own namespace.
async fn read_vips(probes: &[VipProbe]) -> Result<BTreeMap<String, (f64, f64)>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut out = BTreeMap::new();
    for p in probes {
        let direct = match http.get(&p.metrics).send().await {
            Ok(r) => r.text().await.ok(),
            Err(_) => None,
        };
        let text = match direct.as_deref().and_then(parse_transitions) {
            Some(x) => Some(x),
            None if !p.netns.is_empty() => {
                let (ns, url) = (p.netns.clone(), p.metrics.clone());
                tokio::task::spawn_blocking(move || {
                    std::process::Command::new("ip")
                        .args(["netns", "exec", &ns, "curl", "-fsS", "-m", "2", &url])
                        .output()
                        .ok()
                        .filter(|o| o.status.success())
                        .and_then(|o| parse_transitions(&String::from_utf8_lossy(&o.stdout)))
                })
                .await
                .ok()
                .flatten()
            }
            None => None,
        };
        let x = text.with_context(|| {
            format!(
                "{}: agenda_vip_transitions_total not readable at {}",
                p.name, p.metrics
            )
        })?;
        out.insert(p.name.clone(), x);
    }
    Ok(out)
}

fn vip_delta(
    before: &Result<BTreeMap<String, (f64, f64)>>,
    after: &Result<BTreeMap<String, (f64, f64)>>,
) -> VipDelta {
    match (before, after) {
        (Ok(b), Ok(a)) => {
            let (mut moves, mut changes) = (0.0, 0.0);
            let mut per = BTreeMap::new();
            for (name, (am, aa)) in a {
                let (bm, ba) = b.get(name).copied().unwrap_or((0.0, 0.0));
                // A restarted daemon starts its counters again from zero.
                let (dm, da) = if am < &bm || aa < &ba {
                    (*am, *aa)
                } else {
                    (am - bm, aa - ba)
                };
                moves += dm;
                changes += da;
                per.insert(name.clone(), json!({"to_master": dm, "state_changes": da}));
            }
            VipDelta::Known {
                moves: moves as u64,
                changes: changes as u64,
                per_daemon: per,
            }
        }
        (Err(e), _) | (_, Err(e)) => VipDelta::Unknown(format!("{e:#}")),
    }
}

/// The flags the gateway of our own system gets.
fn own_gateway_args(args: &Args) -> Vec<String> {
    let mut out = Vec::new();
    if args.vs_nginx {
        // One person reads thousands of times a second: the per-person
        // limit (100/s after 400 by default) would refuse it.
        out.extend(["--person-rate", "1000000", "--person-burst", "1000000"].map(String::from));
    }
    out.extend(args.gateway_args.iter().cloned());
    out
}

/// The gateway's certificate and key in a certificates' directory:
/// `gateway.pem` (a system of its own), `agenda-gateway-a.pem` (make run),
/// or any other `*gateway*.pem`.
fn gateway_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let pair = |stem: &str| {
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}-key.pem")),
        );
        (c.exists() && k.exists()).then_some((c, k))
    };
    pair("gateway")
        .or_else(|| pair("agenda-gateway-a"))
        .or_else(|| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.contains("gateway") && n.ends_with(".pem") && !n.ends_with("-key.pem")
                })
                .collect();
            names.sort();
            names.iter().find_map(|n| pair(n.trim_end_matches(".pem")))
        })
}

/// Runs this program again inside `ns` (never returns on success).
fn reexec_in(ns: &str, target: &Target) -> Result<()> {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let hint = match (&target.local_url, &target.ca) {
            (Some(u), Some(ca)) => format!(
                "; or drive the host relay instead: --url {u} --ca {}",
                ca.display()
            ),
            (Some(u), None) => format!("; or drive the host relay instead: --url {u}"),
            _ => String::new(),
        };
        bail!(
            "{} names client_netns {ns:?}: sending the traffic from inside it needs root (ip netns exec){hint}",
            target.source
        );
    }
    if !Path::new("/run/netns").join(ns).exists() && !Path::new("/var/run/netns").join(ns).exists()
    {
        bail!(
            "{} names client_netns {ns:?} but there is no such network namespace: is `make run` still running?",
            target.source
        );
    }
    let exe = std::env::current_exe().context("this program's path")?;
    let err = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, ns)
        .exec();
    Err(anyhow!("run `ip netns exec {ns} ...`: {err}"))
}

fn validate(args: &Args) -> Result<()> {
    let positive = |name: &str, v: f64| -> Result<()> {
        if !(v.is_finite() && v > 0.0) {
            bail!("{name} must be a positive number (got {v})");
        }
        Ok(())
    };
    positive("--rate-scale", args.rate_scale)?;
    positive("--time-scale", args.time_scale)?;
    if !(args.think_scale.is_finite() && args.think_scale >= 0.0) {
        bail!("--think-scale must be 0 or more (got {})", args.think_scale);
    }
    if args.think_scale * THINK.iter().sum::<f64>() > 86_400.0 {
        bail!(
            "--think-scale {}: a flow would think for more than a day",
            args.think_scale
        );
    }
    if args.people < 2 {
        bail!("--people must be at least 2 (a VU invites another person)");
    }
    if args.people > 1_000_000 {
        bail!("--people {}: at most 1000000", args.people);
    }
    for (name, v) in [
        ("--max-in-flight", args.max_in_flight),
        ("--connections", args.connections()),
        ("--rounds", if args.vs_nginx { args.rounds } else { 1 }),
        ("--setup-concurrency", args.setup_concurrency),
        ("--clients", args.clients),
    ] {
        if v == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if args.connections() > Semaphore::MAX_PERMITS {
        bail!("--connections {}: too many", args.connections());
    }
    if args.timeout_secs == 0 || args.timeout_secs > 3600 {
        bail!("--timeout-secs must be 1 to 3600");
    }
    if args.closed && args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    if args.vs_nginx {
        positive("--round-secs", args.round_secs)?;
        if !(args.warmup_secs.is_finite() && args.warmup_secs >= 0.0) {
            bail!("--warmup-secs must be 0 or more");
        }
        if args.round_secs > 86_400.0 || args.warmup_secs > 86_400.0 {
            bail!("--round-secs and --warmup-secs: at most a day");
        }
        if args.rounds > 1000 {
            bail!("--rounds {}: at most 1000", args.rounds);
        }
        if args.week_people == Some(0) || args.week_people.is_some_and(|p| p > 100_000) {
            bail!("--week-people must be 1 to 100000");
        }
        if args.connections() > 100_000 {
            bail!(
                "--connections {}: at most 100000 with --vs-nginx",
                args.connections()
            );
        }
        let w = &args.nginx_workers;
        if w != "auto" && !w.parse::<u32>().is_ok_and(|n| (1..=1024).contains(&n)) {
            bail!("--nginx-workers {w:?}: a number from 1 to 1024, or auto");
        }
        for f in [&args.nginx_cert, &args.nginx_key].into_iter().flatten() {
            if !f.exists() {
                bail!("{}: no such file", f.display());
            }
        }
    }
    if args.soak {
        positive("--rate", args.rate)?;
        if args.rate > 100_000.0 {
            bail!("--rate {}: at most 100000 VUs/s", args.rate);
        }
        if args.minutes == 0 || args.minutes > 7 * 24 * 60 {
            bail!("--minutes must be 1 to 10080");
        }
    }
    if !args.closed && !args.vs_nginx && !args.soak {
        for plan in plans(args) {
            let n = plan.expected_arrivals();
            if n > 20_000_000.0 {
                bail!(
                    "phase {} would bring {n:.0} VUs: lower --rate-scale or raise --time-scale",
                    plan.name
                );
            }
        }
    }
    if let Some(ca) = &args.ca {
        if !ca.exists() {
            bail!("--ca {}: no such file", ca.display());
        }
    }
    Ok(())
}

fn plans(args: &Args) -> Vec<PhasePlan> {
    let all = [
        ("low", LOW),
        ("medium", MEDIUM),
        ("high", HIGH),
        ("stress", STRESS),
    ];
    let pick = match args.phase {
        PhaseArg::Low => "low",
        PhaseArg::Medium => "medium",
        PhaseArg::High => "high",
        PhaseArg::Stress => "stress",
        PhaseArg::All => "",
    };
    all.iter()
        .filter(|(name, _)| pick.is_empty() || *name == pick)
        .map(|(name, seed)| PhasePlan::new(name, seed, args))
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agenda-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    validate(&args)?;
    let target = match (&args.url, &args.endpoints) {
        (Some(url), _) => Some(Target {
            endpoints: None,
            tls_dir: None,
            url: check_url(url)?,
            ca: args.ca.clone(),
            client_netns: None,
            local_url: None,
            vips: Vec::new(),
            source: "--url".into(),
        }),
        (None, Some(file)) => Some(read_endpoints(file, args.ca.as_deref())?),
        (None, None) => None,
    };
    if let Some(t) = &target {
        if t.url.starts_with("https://") && t.ca.is_none() {
            bail!(
                "{} is https: pass --ca with the CA (PEM) its certificate comes from",
                t.url
            );
        }
        if let Some(ns) = &t.client_netns {
            if std::env::var(NETNS_ENV).ok().as_deref() != Some(ns.as_str()) {
                reexec_in(ns, t)?;
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listen for SIGTERM")?;
        tokio::select! {
            r = bench(args, target) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted (Ctrl-C): stopped, nothing reported"),
            _ = term.recv() => bail!("terminated (SIGTERM): stopped, nothing reported"),
        }
    })
}

async fn bench(args: Args, target: Option<Target>) -> Result<()> {
    let mut system: Option<System> = None;
    let (base, tls, vips, label, certs_dir, endpoints) = match target {
        Some(t) => {
            if !args.gateway_args.is_empty() {
                bail!(
                    "--gateway-arg applies to a system of its own (not with --url or --endpoints)"
                );
            }
            let tls = match &t.ca {
                Some(ca) => Some(
                    agenda_common::tls::public_client_config(ca)
                        .map_err(|e| anyhow!("load the CA {}: {e}", ca.display()))?,
                ),
                None => None,
            };
            let label = match &t.client_netns {
                Some(ns) => format!(
                    "{} (from {}, inside network namespace {ns})",
                    t.url, t.source
                ),
                None => format!("{} (from {})", t.url, t.source),
            };
            (t.url, tls, t.vips, label, t.tls_dir, t.endpoints)
        }
        None => {
            eprintln!("starting a system (5 agenda-db, 2 users, 2 groups, 1 gateway; TLS on every link)...");
            let sys = System::start(SystemOptions {
                db_nodes: 5,
                users: 2,
                groups: 2,
                tls: true,
                gateway_args: own_gateway_args(&args),
                ..Default::default()
            })
            .await
            .context("start a system (build the release binaries first: cargo build --release --workspace)")?;
            let out = (sys.url(), sys.public_tls.clone(), Vec::new(), String::new());
            let label = format!(
                "{} (a system of its own: 5 agenda-db, 2 users, 2 groups, 1 gateway, TLS)",
                out.0
            );
            let certs = sys.certs_dir();
            system = Some(sys);
            (out.0, out.1, out.2, label, Some(certs), None)
        }
    };

    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections())
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(args.timeout_secs.min(10)))
        .timeout(Duration::from_secs(args.timeout_secs));
    if let Some(tls) = &tls {
        builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
    }
    let http = builder.build().context("HTTP client")?;

    // The gateway answers /readyz once it can serve.
    let ready = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http.get(&ready).send().await {
            Ok(r) if r.status().is_success() => break,
            Ok(r) if Instant::now() >= deadline => bail!("{ready}: {}", r.status()),
            Err(e) if Instant::now() >= deadline => bail!("{ready}: {}", chain(&e)),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }

    if args.vs_nginx {
        let cert = match (&args.nginx_cert, &args.nginx_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => certs_dir.as_deref().and_then(gateway_cert),
        };
        let pids = match (&system, &endpoints) {
            (Some(sys), _) => sys
                .pids()
                .into_iter()
                .map(|(name, pid)| (soak::kind_of(&name), pid))
                .collect(),
            (None, Some(file)) => soak::read_procs(file)
                .map(|v| v.into_iter().map(|p| (p.kind, p.pid)).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let agenda = nginx::Agenda {
            base: &base,
            tls,
            http: &http,
            label: &label,
            cert,
            pids,
            gateway_args: if system.is_some() {
                own_gateway_args(&args)
            } else {
                Vec::new()
            },
        };
        return nginx::run(&args, agenda).await;
    }

    println!("agenda-bench: target {label}");
    let think = if args.closed { 0.0 } else { args.think_scale };
    println!(
        "flow per VU: login ({}), think {}s, week, think {}s, create (1 attendee), think {}s, read, rsvp; \
         {} connections at most, {} s per request, {} people",
        match args.login {
            LoginMode::Password => "password",
            LoginMode::Session => "session: a refresh token",
        },
        num(THINK[0] * think),
        num(THINK[1] * think),
        num(THINK[2] * think),
        args.connections(),
        args.timeout_secs,
        args.people
    );
    println!(
        "one client address: the gateway's defaults allow 4096 connections per address \
         (--max-connections-per-source), 100 requests/s per person after a burst of 400 \
         (--person-rate, --person-burst), and refuse overload with 503 (adaptive cap of 4..256 \
         requests at once, --max-concurrent-requests); the same flags are read from AGENDA_* \
         environment variables, which make run passes on"
    );
    if args.connections() > GATEWAY_PER_SOURCE_CONNECTIONS {
        println!(
            "warning: --connections {} is above the gateway's default of {GATEWAY_PER_SOURCE_CONNECTIONS} per address: \
             raise it with AGENDA_MAX_CONNECTIONS_PER_SOURCE before make run",
            args.connections()
        );
    }

    let (people, setup_report) = setup(&http, &base, &args).await?;
    let ctx = Arc::new(Ctx {
        base: base.clone(),
        http,
        connections: Semaphore::new(args.connections()),
        timeout: Duration::from_secs(args.timeout_secs),
        people,
        login: args.login,
        // The closed model runs flows back to back: no think time.
        think: THINK.map(|s| {
            if args.closed {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(s * args.think_scale)
            }
        }),
    });

    if args.soak {
        let procs = match (&system, &endpoints) {
            (Some(sys), _) => soak::Procs::Fixed(
                sys.pids()
                    .into_iter()
                    .map(|(name, pid)| soak::Proc {
                        kind: soak::kind_of(&name),
                        name,
                        pid,
                    })
                    .collect(),
            ),
            (None, Some(file)) => soak::Procs::Endpoints(file.clone()),
            _ => soak::Procs::Fixed(Vec::new()),
        };
        return soak::run(&ctx, &args, procs, &base, setup_report).await;
    }

    let mut results = Vec::new();
    let runs: Vec<Option<PhasePlan>> = if args.closed {
        vec![None]
    } else {
        plans(&args).into_iter().map(Some).collect()
    };
    for plan in runs {
        let before = if vips.is_empty() {
            None
        } else {
            Some(read_vips(&vips).await)
        };
        let mut result = match &plan {
            Some(p) => run_open(&ctx, p, &args).await,
            None => run_closed(&ctx, &args).await,
        };
        if let Some(before) = before {
            let after = read_vips(&vips).await;
            result.vip = Some(vip_delta(&before, &after));
        }
        print_phase(&result, &args);
        results.push(result);
    }

    if results.len() > 1 {
        println!();
        println!(
            "== all phases (seed 003's table, x{} rates)",
            num(args.rate_scale)
        );
        println!("{TABLE_HEAD}");
        for r in &results {
            println!("{}", table_row(r));
        }
        let kinds: std::collections::BTreeSet<String> = results
            .iter()
            .flat_map(|r| r.errors().into_keys())
            .collect();
        if kinds.is_empty() {
            println!("errors: none in any phase");
        } else {
            let kinds: Vec<String> = kinds.into_iter().collect();
            println!("| Test | {} |", kinds.join(" | "));
            println!("| -- |{}", " -- |".repeat(kinds.len()));
            for r in &results {
                let e = r.errors();
                let cells: Vec<String> = kinds
                    .iter()
                    .map(|k| e.get(k).copied().unwrap_or(0).to_string())
                    .collect();
                println!("| {} | {} |", r.name, cells.join(" | "));
            }
        }
    }

    if let Some(file) = &args.json {
        let doc = json!({
            "target": base,
            "own_system": system.is_some(),
            "options": {
                "phase": format!("{:?}", args.phase).to_lowercase(),
                "closed": args.closed,
                "clients": args.clients,
                "seconds": args.seconds,
                "rate_scale": args.rate_scale,
                "time_scale": args.time_scale,
                "think_scale": args.think_scale,
                "think_secs": THINK.map(|s| if args.closed { 0.0 } else { s * args.think_scale }),
                "max_in_flight": args.max_in_flight,
                "connections": args.connections(),
                "timeout_secs": args.timeout_secs,
                "people": args.people,
            },
            "setup": setup_report,
            "phases": results.iter().map(phase_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(file, text + "\n").with_context(|| format!("write {}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    drop(system);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: &[(f64, f64, f64)]) -> Vec<Stage> {
        seed.iter()
            .map(|&(secs, from, to)| Stage { secs, from, to })
            .collect()
    }

    #[test]
    fn the_seed_schedules_bring_the_seed_totals() {
        // Seed 003 counts 362, 1069, 2873, 9030 (Artillery rounds up per
        // second); the integrals are 360, 1050, 2850, 9000.
        for (seed, want) in [(LOW, 360), (MEDIUM, 1050), (HIGH, 2850), (STRESS, 9000)] {
            let t = arrivals(&plan(seed));
            assert_eq!(t.len(), want);
            assert!(t.windows(2).all(|w| w[0] <= w[1]), "sorted");
            let total: f64 = seed.iter().map(|s| s.0).sum();
            assert!(*t.last().unwrap() <= total);
        }
        // A ramp 2->10 over 60 s: a third of the way, (2 + 4.67)/2 * 20.
        let t = arrivals(&plan(LOW));
        let first_third = t.iter().filter(|&&x| x < 20.0).count();
        assert!((66..=68).contains(&first_third), "{first_third}");
    }

    #[test]
    fn transitions_are_summed() {
        let text = "# HELP agenda_vip_transitions_total x\n\
            agenda_vip_transitions_total{to=\"backup\"} 2\n\
            agenda_vip_transitions_total{to=\"master\"} 3\n\
            agenda_vip_transitions_totalx 9\n";
        assert_eq!(parse_transitions(text), Some((3.0, 5.0)));
        assert_eq!(parse_transitions("nothing"), None);
    }
}
