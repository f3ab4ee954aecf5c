//! Chaos: faults under traffic in the two-machine topology, with history
//! checks (`make chaos`; a bounded plan runs in `make test`).
//!
//! Two processes. The **workload** runs inside the client namespace (it
//! reaches the system only through the VIP, and agenda-db's nodes over
//! the bridge) and appends what it saw to JSON-lines files: every HTTP
//! attempt (for unavailability windows), every logical API operation and
//! its outcome, every notification its WebSockets received, and a
//! register history on agenda-db. The **driver** (this process, on the
//! host) starts the topology, confirms each victim's role just before
//! killing it, injects the fault, waits for 100 acknowledged operations
//! after it, heals, and at the end checks the histories:
//!
//! - every acknowledged event is present exactly once, nothing is present
//!   that no client attempted, every acknowledged RSVP is recorded;
//! - the register history is linearizable;
//! - every notification of an acknowledged change reached its WebSocket
//!   exactly once (streams resume with `last_id` after a drop);
//! - never two VIP holders at one instant;
//! - the unavailability window per fault (fault to the first successful
//!   request through the VIP), against the targets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_common::registry;
use anyhow::{bail, Context, Result};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::linearizability;
use crate::register::{self, RegisterClient};
use crate::topology::Topology;
use crate::ws::{self, Frame};

/// Unix time in milliseconds (one clock for both processes: same host).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ------------------------------------------------------------------ workload

/// Appends JSON lines to a file, one write per line.
#[derive(Clone)]
struct Log(Arc<Mutex<std::fs::File>>);

impl Log {
    fn open(path: &Path) -> Result<Log> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}", path.display()))?;
        Ok(Log(Arc::new(Mutex::new(f))))
    }

    fn write(&self, v: &Value) {
        let mut line = v.to_string();
        line.push('\n');
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Where the workload runs and writes (`chaos workload`'s flags).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadArgs {
    /// The VIP URL.
    #[arg(long)]
    pub url: String,
    /// agenda-db gRPC endpoints, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub db: Vec<String>,
    /// Output dir; a file `stop` in it ends the run.
    #[arg(long)]
    pub out: PathBuf,
    /// API writers (each an organizer with one attendee).
    #[arg(long, default_value_t = 3)]
    pub writers: u32,
    /// Register clients on agenda-db.
    #[arg(long, default_value_t = 3)]
    pub kv_clients: u64,
    /// The topology's certificates: the register clients reach agenda-db
    /// over mutual TLS as the operator (`agendactl.pem`), and the API
    /// clients trust the gateways' HTTPS by its `ca.pem`.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
}

/// One HTTP attempt, timed and logged.
struct Http {
    client: reqwest::Client,
    url: String,
    attempts: Log,
}

impl Http {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Option<(StatusCode, Value)> {
        let call = now_ms();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .timeout(Duration::from_secs(2));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = match req.send().await {
            Ok(r) => {
                let st = r.status();
                let v = r.json::<Value>().await.unwrap_or(Value::Null);
                Some((st, v))
            }
            Err(_) => None,
        };
        let status = res.as_ref().map_or(0, |(s, _)| s.as_u16());
        self.attempts
            .write(&json!({"call": call, "ret": now_ms(), "status": status}));
        res
    }

    /// Retries one logical operation until it gets a status in `done`
    /// (or any 4xx, which is final) or `for_` passes.
    async fn until(
        &self,
        for_: Duration,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Option<(StatusCode, Value)> {
        let start = Instant::now();
        loop {
            if let Some((st, v)) = self.send(method.clone(), path, token, body, headers).await {
                if st.is_success() || (st.is_client_error() && st != StatusCode::TOO_MANY_REQUESTS)
                {
                    return Some((st, v));
                }
            }
            if start.elapsed() > for_ {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A registered account.
#[derive(Clone)]
struct Account {
    id: String,
    username: String,
    token: Arc<Mutex<String>>,
}

async fn account(http: &Arc<Http>, username: &str) -> Result<Account> {
    // A POST retried through failovers for up to two minutes.
    let post = |path: &'static str, body: Value| async move {
        http.until(
            Duration::from_secs(120),
            reqwest::Method::POST,
            path,
            None,
            Some(&body),
            &[],
        )
        .await
        .with_context(|| format!("{path}: no answer"))
    };
    // Open to being added by anyone: the workload puts strangers in each
    // other's agendas.
    let body = json!({"username": username, "email": format!("{username}@example.org"), "password": crate::system::PASSWORD, "add_me": "anyone"});
    let (st, user) = post("/v1/auth/register", body).await?;
    let user = if st == StatusCode::CREATED {
        user
    } else if st == StatusCode::CONFLICT {
        Value::Null
    } else {
        bail!("register {username}: {st} {user}");
    };
    let login = json!({"username": username, "password": crate::system::PASSWORD});
    let (st, l) = post("/v1/auth/login", login).await?;
    if st != StatusCode::OK {
        bail!("login {username}: {st} {l}");
    }
    let id = l["user"]["id"]
        .as_str()
        .or(user["id"].as_str())
        .context("user id")?
        .to_string();
    let token = Arc::new(Mutex::new(
        l["access_token"].as_str().context("token")?.to_string(),
    ));
    let refresh = l["refresh_token"]
        .as_str()
        .context("refresh token")?
        .to_string();
    tokio::spawn(keep_fresh(
        http.clone(),
        username.to_string(),
        token.clone(),
        refresh,
    ));
    Ok(Account {
        id,
        username: username.to_string(),
        token,
    })
}

/// Renews `token` with the login's refresh token every five minutes (access
/// tokens live fifteen), as a real client does, for at most three hours.
/// A refresh whose answer a fault swallowed spends the token without the
/// client learning the next one, and presenting it again ends the session
/// (that is the rule): then, as a real client does, it logs in again.
async fn keep_fresh(
    http: Arc<Http>,
    username: String,
    token: Arc<Mutex<String>>,
    mut refresh: String,
) {
    let until = Instant::now() + Duration::from_secs(3 * 3600);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(300)).await;
        let body = json!({"refresh_token": refresh});
        let mut answer = http
            .until(
                Duration::from_secs(120),
                reqwest::Method::POST,
                "/v1/auth/refresh",
                None,
                Some(&body),
                &[],
            )
            .await;
        if !matches!(answer, Some((StatusCode::OK, _))) {
            eprintln!("chaos: a token refresh failed ({answer:?}); logging in again");
            let login = json!({"username": username, "password": crate::system::PASSWORD});
            answer = http
                .until(
                    Duration::from_secs(120),
                    reqwest::Method::POST,
                    "/v1/auth/login",
                    None,
                    Some(&login),
                    &[],
                )
                .await;
        }
        match answer {
            Some((StatusCode::OK, v)) => {
                if let (Some(a), Some(r)) =
                    (v["access_token"].as_str(), v["refresh_token"].as_str())
                {
                    if let Ok(mut t) = token.lock() {
                        *t = a.to_string();
                    }
                    refresh = r.to_string();
                }
            }
            other => {
                eprintln!("chaos: neither a refresh nor a login worked: {other:?}");
                return;
            }
        }
    }
}

/// Keeps a WebSocket open for `acc` (reconnecting with `last_id` after
/// any drop) and logs every notification.
async fn listen(
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    acc: Account,
    notes: Log,
    ready: tokio::sync::watch::Sender<bool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut last_id: Option<String> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let token = acc.token.lock().map(|t| t.clone()).unwrap_or_default();
        let connected = ws::connect_to(&url, tls.as_ref(), Some(&token), last_id.as_deref()).await;
        let Ok(mut s) = connected else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // As a careful client does: ping every second and give the
        // connection up when nothing (pong, heartbeat, notification) came
        // back for a while: a connection to a machine that lost power
        // otherwise stays open, silent, for ever.
        loop {
            match s.next(Duration::from_secs(1)).await {
                Ok(Frame::Notification(n)) => {
                    if let Some(id) = n["id"].as_str() {
                        last_id = Some(id.to_string());
                    }
                    notes.write(&json!({"user": acc.id, "at": now_ms(), "n": n}));
                }
                Ok(Frame::Ready) => {
                    ready.send_replace(true);
                }
                Ok(Frame::Heartbeat | Frame::TokenAccepted) => {}
                Ok(Frame::Closed(..)) => break,
                Err(_) => {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    if s.silent_for() > Duration::from_secs(3) || s.ping().await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// Runs the workload until `out/stop` appears.
pub async fn workload(args: WorkloadArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let attempts = Log::open(&args.out.join("attempts.jsonl"))?;
    let ops = Log::open(&args.out.join("ops.jsonl"))?;
    let notes = Log::open(&args.out.join("notifications.jsonl"))?;
    let kv = Log::open(&args.out.join("register.jsonl"))?;
    let public_tls = match &args.tls_dir {
        Some(dir) => Some(agenda_common::tls::public_client_config(
            &dir.join("ca.pem"),
        )?),
        None => None,
    };
    // A new connection per request: a pooled one to a dead machine would
    // hang until its timeout after every move of the VIP.
    let mut client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        // A SYN sent to the old holder's MAC just before the VIP moved is
        // lost and would be retried only after 1 s: try anew.
        .connect_timeout(Duration::from_millis(250));
    if let Some(tls) = &public_tls {
        client = client.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
    }
    let http = Arc::new(Http {
        client: client.build()?,
        url: args.url.clone(),
        attempts,
    });
    let run = format!("{:x}", now_ms() % 0xFFFFFF);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();

    // Register clients on agenda-db.
    let tls = match &args.tls_dir {
        Some(dir) => Some(
            agenda_common::tls::Identity::load(&agenda_common::tls::TlsFiles::in_dir(
                dir,
                "agendactl",
            ))?
            .client_config()?,
        ),
        None => None,
    };
    let db = agenda_common::DbClient::with_tls(&args.db, tls)?.with_timeout(Duration::from_secs(3));
    let epoch = Instant::now();
    let epoch_ms = now_ms();
    for c in 0..args.kv_clients {
        let (db, kv, stop) = (db.clone(), kv.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut reg = RegisterClient::new(db, c);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(op) = reg.step("/chaos/register", epoch).await {
                    let mut v = register::to_json(&op);
                    v["epoch_ms"] = json!(epoch_ms);
                    kv.write(&v);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // API writers, each an organizer inviting its attendee.
    for w in 0..args.writers {
        let org = account(&http, &format!("ch{run}o{w}")).await?;
        let att = account(&http, &format!("ch{run}a{w}")).await?;
        for acc in [&org, &att] {
            let (ready, mut is_ready) = tokio::sync::watch::channel(false);
            tasks.push(tokio::spawn(listen(
                args.url.clone(),
                public_tls.clone(),
                acc.clone(),
                notes.clone(),
                ready,
                stop.clone(),
            )));
            // Only a notification made after the socket is live must
            // reach it (one made before comes only with ?last_id=): write
            // once both are, or the check blames the first writes on a
            // slow handshake.
            let live = tokio::time::timeout(Duration::from_secs(20), is_ready.wait_for(|r| *r));
            if !matches!(live.await, Ok(Ok(_))) {
                anyhow::bail!("{}'s notification socket was not live within 20 s", acc.id);
            }
        }
        ops.write(&json!({"kind": "writer", "organizer": org.id, "attendee": att.id, "organizer_token": *org.token.lock().unwrap()}));
        let (http, ops, stop, run) = (http.clone(), ops.clone(), stop.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let title = format!("ch{run}-w{w}-{n}");
                let key = format!("{title}-key");
                let day = 1 + (n % 28);
                let body = json!({
                    "title": title,
                    "start": format!("2027-02-{day:02}T{:02}:00:00Z", n % 20),
                    "end": format!("2027-02-{day:02}T{:02}:30:00Z", n % 20),
                    "time_zone": "UTC",
                    "attendees": [att.username],
                });
                let token = org.token.lock().unwrap().clone();
                let call = now_ms();
                let r = http
                    .until(Duration::from_secs(30), reqwest::Method::POST, "/v1/events", Some(&token), Some(&body), &[("idempotency-key", &key)])
                    .await;
                let event_id = match &r {
                    Some((StatusCode::CREATED, v)) => v["event"]["id"].as_str().map(str::to_string),
                    _ => None,
                };
                ops.write(&json!({"kind": "create", "writer": w, "title": title, "call": call, "ret": now_ms(),
                    "ok": event_id.is_some(), "status": r.as_ref().map_or(0, |(s, _)| s.as_u16()), "event_id": event_id}));
                let Some(event_id) = event_id else { continue };
                let att_token = att.token.lock().unwrap().clone();
                let call = now_ms();
                let r = http
                    .until(Duration::from_secs(30), reqwest::Method::POST, &format!("/v1/events/{event_id}/rsvp"), Some(&att_token), Some(&json!({"status": "accepted"})), &[])
                    .await;
                ops.write(&json!({"kind": "rsvp", "writer": w, "event_id": event_id, "call": call, "ret": now_ms(),
                    "ok": matches!(r, Some((StatusCode::OK, _)))}));
                let _ = http
                    .send(reqwest::Method::GET, "/v1/events?from=2027-02-01T00:00:00Z&to=2027-03-01T00:00:00Z", Some(&token), None, &[])
                    .await;
            }
        }));
    }
    // A prober: a cheap authenticated read started every 50 ms, without
    // waiting for the ones in flight (at most 20), so the first request
    // served after a fault is seen within that, whatever the writers are
    // waiting on. (One at a time, a request whose SYN went to the old VIP
    // holder used up its whole connect timeout first.)
    let probe = account(&http, &format!("ch{run}p")).await?;
    {
        let (http, stop) = (http.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(20));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(permit) = in_flight.clone().try_acquire_owned() {
                    let token = probe.token.lock().unwrap().clone();
                    let http = http.clone();
                    tokio::spawn(async move {
                        let _ = http
                            .send(reqwest::Method::GET, "/v1/me", Some(&token), None, &[])
                            .await;
                        drop(permit);
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    ops.write(&json!({"kind": "ready", "at": now_ms()}));
    while !args.out.join("stop").exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writers finish their operation in flight; listeners get a last
    // moment to receive what those produced.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(70), t).await;
    }
    std::fs::write(args.out.join("done"), b"")?;
    Ok(())
}

// ------------------------------------------------------------------ faults

/// A fault kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 the gateway on the machine that holds the VIP.
    ActiveGateway,
    /// kill -9 the agenda-vip of the VIP holder.
    VipDaemon,
    /// kill -9 the Redis primary (its supervisor restarts it as a replica).
    RedisPrimary,
    /// kill -9 the acting agenda-supervisor.
    ActingSupervisor,
    /// kill -9 the raft leader.
    RaftLeader,
    /// kill -9 one agenda-users instance.
    Users,
    /// kill -9 one agenda-groups instance.
    Groups,
    /// kill -9 the service instance acting as the notification relay.
    ActingRelay,
    /// power cut of a machine.
    Machine(&'static str),
    /// cut the link between two machines.
    Partition(&'static str, &'static str),
    /// the witness cut off from both machines.
    WitnessAway,
}

impl Fault {
    /// Short name for the table.
    pub fn name(&self) -> String {
        match self {
            Fault::ActiveGateway => "kill active gateway".into(),
            Fault::VipDaemon => "kill VIP holder's agenda-vip".into(),
            Fault::RedisPrimary => "kill Redis primary".into(),
            Fault::ActingSupervisor => "kill acting supervisor".into(),
            Fault::RaftLeader => "kill raft leader".into(),
            Fault::Users => "kill an agenda-users".into(),
            Fault::Groups => "kill an agenda-groups".into(),
            Fault::ActingRelay => "kill acting notification relay".into(),
            Fault::Machine(m) => format!("power cut {m}"),
            Fault::Partition(a, b) => format!("partition {a} | {b}"),
            Fault::WitnessAway => "partition witness away".into(),
        }
    }

    /// The target unavailability, when the design sets one.
    pub fn target(&self) -> Option<Duration> {
        match self {
            Fault::ActiveGateway => Some(Duration::from_secs(1)),
            Fault::RedisPrimary => Some(Duration::from_secs(2)),
            Fault::RaftLeader => Some(Duration::from_millis(1500)),
            Fault::Machine("machine-a") => Some(Duration::from_secs(3)),
            _ => None,
        }
    }
}

/// One step of a plan: one fault, or two at once.
#[derive(Debug, Clone)]
pub struct Step {
    /// The faults injected together.
    pub faults: Vec<Fault>,
    /// Takes a majority of agenda-db away: unavailability until healed is
    /// expected and reported; only loss is judged.
    pub majority_loss: bool,
}

impl Step {
    /// Its faults' names joined with " + ".
    pub fn name(&self) -> String {
        self.faults
            .iter()
            .map(Fault::name)
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

fn one(f: Fault) -> Step {
    Step {
        faults: vec![f],
        majority_loss: false,
    }
}

/// One fault of each kind (what `make test` runs).
pub fn quick_plan() -> Vec<Step> {
    vec![
        one(Fault::ActiveGateway),
        one(Fault::RaftLeader),
        one(Fault::RedisPrimary),
        one(Fault::ActingSupervisor),
        one(Fault::Users),
        one(Fault::Groups),
        one(Fault::ActingRelay),
        one(Fault::VipDaemon),
        one(Fault::Partition("machine-a", "machine-b")),
        one(Fault::WitnessAway),
        one(Fault::Machine("machine-a")),
    ]
}

/// Every fault alone, then in pairs, then a majority loss (`make chaos`).
pub fn full_plan() -> Vec<Step> {
    let mut plan = quick_plan();
    plan.extend([
        one(Fault::Machine("machine-b")),
        one(Fault::Machine("witness")),
    ]);
    for pair in [
        [Fault::ActiveGateway, Fault::RedisPrimary],
        [Fault::RaftLeader, Fault::RedisPrimary],
        [Fault::ActiveGateway, Fault::RaftLeader],
        [Fault::Users, Fault::Groups],
        [Fault::ActingSupervisor, Fault::RedisPrimary],
        [Fault::VipDaemon, Fault::RaftLeader],
        [Fault::ActingRelay, Fault::RedisPrimary],
    ] {
        plan.push(Step {
            faults: pair.to_vec(),
            majority_loss: false,
        });
    }
    plan.push(Step {
        faults: vec![Fault::Machine("machine-a"), Fault::Machine("witness")],
        majority_loss: true,
    });
    plan
}

// ------------------------------------------------------------------ driver

/// What one step did and cost.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// Fault names.
    pub name: String,
    /// The processes or machines hit.
    pub victims: Vec<String>,
    /// Unix ms of the injection.
    pub at_ms: u64,
    /// Fault to first successful request through the VIP.
    pub unavailable: Option<Duration>,
    /// Acknowledged operations after the fault (before healing).
    pub acked_after: usize,
    /// The target, if any.
    pub target: Option<Duration>,
    /// Longest write-to-push delay of changes acknowledged in the step.
    pub max_push_delay: Option<Duration>,
    /// Expected to be unavailable until healed.
    pub majority_loss: bool,
}

/// The outcome of a chaos run.
#[derive(Debug, Default)]
pub struct Report {
    /// One row per step.
    pub steps: Vec<StepResult>,
    /// Problems with the histories (loss, duplicates, ...): must be empty.
    pub violations: Vec<String>,
    /// Steps over their time target (times `headroom`).
    pub slow: Vec<String>,
    /// Counts for the summary line.
    pub summary: String,
}

impl Report {
    /// The table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<52} {:<40} {:>12} {:>8} {:>9} {:>10}\n",
            "fault", "victims", "unavail ms", "target", "acked", "push max"
        );
        for s in &self.steps {
            out.push_str(&format!(
                "{:<52} {:<40} {:>12} {:>8} {:>9} {:>10}\n",
                format!(
                    "{}{}",
                    s.name,
                    if s.majority_loss {
                        " (majority lost)"
                    } else {
                        ""
                    }
                ),
                s.victims.join(","),
                s.unavailable
                    .map_or("none ok".into(), |d| d.as_millis().to_string()),
                s.target
                    .map_or("-".into(), |d| format!("{}", d.as_millis())),
                s.acked_after,
                s.max_push_delay
                    .map_or("-".into(), |d| format!("{}", d.as_millis())),
            ));
        }
        out.push_str(&self.summary);
        out.push('\n');
        for v in &self.violations {
            out.push_str(&format!("VIOLATION: {v}\n"));
        }
        for v in &self.slow {
            out.push_str(&format!("SLOW: {v}\n"));
        }
        out
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs the plan in a fresh topology; `headroom` multiplies the time
/// targets (3 for debug builds on a shared machine).
pub async fn run(plan: Vec<Step>, headroom: u32, keep: bool) -> Result<Report> {
    let t = tokio::task::spawn_blocking(|| Topology::up("ch")).await??;
    let out = t.state().join("chaos");
    std::fs::create_dir_all(&out)?;
    eprintln!(
        "chaos: topology up; histories and logs in {}",
        t.state().display()
    );
    let ep = t.endpoints()?;
    let db: Vec<String> = ep["processes"]
        .as_array()
        .context("processes")?
        .iter()
        .filter(|p| p["kind"] == "agenda-db")
        .filter_map(|p| p["grpc"].as_str().map(str::to_string))
        .collect();
    let chaos_bin = crate::cluster::bin("chaos")?;
    let log = std::fs::File::create(out.join("workload.log"))?;
    let mut workload = std::process::Command::new("ip")
        .args(["netns", "exec", &t.ns("client")])
        .arg(&chaos_bin)
        .args([
            "workload",
            "--url",
            &t.vip_url(),
            "--db",
            &db.join(","),
            "--out",
        ])
        .arg(&out)
        .args(
            t.certs()
                .map(|d| vec!["--tls-dir".to_string(), d.display().to_string()])
                .unwrap_or_default(),
        )
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the workload")?;
    let result = drive(&t, &out, plan, headroom).await;
    std::fs::write(out.join("stop"), b"")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.join("done").exists() && Instant::now() < deadline {
        if let Ok(Some(_)) = workload.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = workload.kill();
    let _ = workload.wait();
    let (steps, both, samples) = match result {
        Ok(r) => r,
        Err(e) => {
            t.keep_state();
            return Err(e.context(format!(
                "histories and logs kept in {}",
                t.state().display()
            )));
        }
    };
    let mut report = check(&t, &out, steps, headroom).await?;
    if both > 0 {
        report
            .violations
            .push(format!("two VIP holders in {both} of {samples} samples"));
    }
    report.summary.push_str(&format!(
        "; VIP holder samples: {samples}, with two holders: {both}"
    ));
    if keep || !report.violations.is_empty() || !report.slow.is_empty() {
        t.keep_state();
        report.summary.push_str(&format!(
            "\nhistories and logs kept in {}",
            t.state().display()
        ));
    }
    Ok(report)
}

/// Acknowledged API operations (creations and RSVPs) invoked after `since`.
fn acked_after(out: &Path, since: u64) -> usize {
    read_lines(&out.join("ops.jsonl"))
        .iter()
        .filter(|o| o["ok"] == true && o["call"].as_u64().unwrap_or(0) >= since)
        .count()
}

async fn wait_acks(out: &Path, since: u64, n: usize, timeout: Duration) -> usize {
    let start = Instant::now();
    loop {
        let got = acked_after(out, since);
        if got >= n || start.elapsed() > timeout {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The JSON of a db node's REST path, from any live node.
fn db_json(t: &Topology, path: &str) -> Option<Value> {
    serde_json::from_str(&db_get(t, path)?).ok()
}

/// A db node's REST path, from any live node.
fn db_get(t: &Topology, path: &str) -> Option<String> {
    let ep = t.endpoints().ok()?;
    for p in ep["processes"].as_array()? {
        if p["kind"] != "agenda-db" {
            continue;
        }
        let name = p["name"].as_str()?;
        if !t.alive(name) {
            continue;
        }
        let url = format!("{}{path}", p["http"].as_str()?);
        if let Ok(body) = t.curl(p["machine"].as_str()?, &url) {
            return Some(body);
        }
    }
    None
}

/// A key's value (agenda-db's REST answers a GET with the raw value).
fn key_value(t: &Topology, key: &str) -> Option<String> {
    db_get(t, &format!("/v1/kv/{}", key.replace('/', "%2F")))
}

fn suffix(machine: &str) -> &'static str {
    match machine {
        "machine-a" => "a",
        _ => "b",
    }
}

/// Finds the victim of `f` as things stand now. Returns what to undo.
fn victim(t: &Topology, f: Fault) -> Result<Victim> {
    Ok(match f {
        Fault::ActiveGateway | Fault::VipDaemon => {
            let holder = t.lease_holder().context("nobody holds the VIP")?;
            let kind = if f == Fault::ActiveGateway {
                "gateway"
            } else {
                "vip"
            };
            Victim::Process(format!("agenda-{kind}-{}", suffix(&holder)))
        }
        Fault::RedisPrimary => {
            let rec: Value = serde_json::from_str(
                &key_value(t, registry::REDIS_PRIMARY).context("no Redis primary")?,
            )?;
            let addr = rec["addr"].as_str().context("primary addr")?.to_string();
            let machine = if addr.starts_with("10.77.0.11") {
                "machine-a"
            } else {
                "machine-b"
            };
            Victim::Redis(machine.to_string(), addr)
        }
        Fault::ActingSupervisor => {
            let id = key_value(t, registry::REDIS_SUPERVISOR_ELECTION)
                .context("no acting supervisor")?;
            Victim::Process(format!("agenda-{id}"))
        }
        Fault::RaftLeader => {
            let c = db_json(t, "/v1/cluster").context("no agenda-db node answers")?;
            let leader = c["leader_id"]
                .as_u64()
                .filter(|l| *l != 0)
                .context("no raft leader")?;
            Victim::Process(format!("agenda-db-{leader}"))
        }
        Fault::Users => Victim::Process(format!(
            "agenda-users-{}",
            ["a", "b"][(now_ms() % 2) as usize]
        )),
        Fault::Groups => Victim::Process(format!(
            "agenda-groups-{}",
            ["a", "b"][(now_ms() % 2) as usize]
        )),
        Fault::ActingRelay => {
            let id =
                key_value(t, registry::NOTIFICATION_RELAY_ELECTION).context("no acting relay")?;
            // The value is the instance's address: map it to a process.
            let ep = t.endpoints()?;
            let name = ep["processes"]
                .as_array()
                .context("processes")?
                .iter()
                .find(|p| p["grpc"].as_str().is_some_and(|g| id.contains(g)))
                .and_then(|p| p["name"].as_str())
                .with_context(|| format!("relay {id} matches no process"))?
                .to_string();
            Victim::Process(name)
        }
        Fault::Machine(m) => Victim::Machine(m.to_string()),
        Fault::Partition(a, b) => Victim::Cut(vec![(a.to_string(), b.to_string())]),
        Fault::WitnessAway => Victim::Cut(vec![
            ("witness".into(), "machine-a".into()),
            ("witness".into(), "machine-b".into()),
        ]),
    })
}

#[derive(Debug, Clone)]
enum Victim {
    Process(String),
    Redis(String, String),
    Machine(String),
    Cut(Vec<(String, String)>),
}

impl Victim {
    fn label(&self) -> String {
        match self {
            Victim::Process(p) => p.clone(),
            Victim::Redis(_, addr) => format!("redis {addr}"),
            Victim::Machine(m) => m.clone(),
            Victim::Cut(c) => c
                .iter()
                .map(|(a, b)| format!("{a}|{b}"))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn inject(&self, t: &Topology) -> Result<()> {
        match self {
            Victim::Process(p) => t.netns(&["kill", p]).map(|_| ()),
            Victim::Redis(machine, addr) => {
                // Its pid, from the server itself (it is a child of its
                // supervisor, not one of the topology's processes).
                let (host, port) = addr.rsplit_once(':').context("redis address")?;
                let password = std::fs::read_to_string(t.state().join("redis-password"))?;
                let mut cli: Vec<String> = vec!["redis-cli".into()];
                // Redis speaks TLS only when the topology has certificates.
                if t.certs().is_some() {
                    cli.push("--tls".into());
                    cli.extend(t.operator_tls_flags());
                }
                cli.extend(
                    [
                        "--no-auth-warning",
                        "-a",
                        password.trim(),
                        "-h",
                        host,
                        "-p",
                        port,
                        "info",
                        "server",
                    ]
                    .map(String::from),
                );
                let cli: Vec<&str> = cli.iter().map(String::as_str).collect();
                let out = t.on(machine, &cli)?;
                let pid: i32 = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find_map(|l| {
                        l.trim()
                            .strip_prefix("process_id:")
                            .and_then(|p| p.parse().ok())
                    })
                    .with_context(|| {
                        format!(
                            "redis {addr} did not tell its pid: {}",
                            String::from_utf8_lossy(&out.stderr)
                        )
                    })?;
                // SAFETY: kill(2) on a pid just read from our own server.
                if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                    bail!(
                        "kill -9 {pid} (redis {addr}): {}",
                        std::io::Error::last_os_error()
                    );
                }
                Ok(())
            }
            Victim::Machine(m) => t.netns(&["kill-machine", m]).map(|_| ()),
            Victim::Cut(cuts) => {
                for (a, b) in cuts {
                    t.netns(&["partition", a, b])?;
                }
                Ok(())
            }
        }
    }

    fn heal(&self, t: &Topology) -> Result<()> {
        match self {
            Victim::Process(p) => {
                if !t.alive(p) {
                    t.netns(&["restart", p])?;
                }
                Ok(())
            }
            // The supervisor restarts its Redis by itself.
            Victim::Redis(..) => Ok(()),
            Victim::Machine(m) => t.netns(&["start-machine", m]).map(|_| ()),
            Victim::Cut(_) => t.netns(&["heal"]).map(|_| ()),
        }
    }
}

/// Waits until every process is up, agenda-db has a leader and the VIP
/// serves.
async fn wait_healthy(t: &Topology, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let all_up = t.endpoints()?["processes"].as_array().is_some_and(|ps| {
            ps.iter()
                .all(|p| p["name"].as_str().is_some_and(|n| t.alive(n)))
        });
        let leader =
            db_json(t, "/v1/cluster").is_some_and(|c| c["leader_id"].as_u64().unwrap_or(0) != 0);
        let vip = t.curl("client", &format!("{}/readyz", t.vip_url())).is_ok();
        let primary = key_value(t, registry::REDIS_PRIMARY).is_some();
        if all_up && leader && vip && primary {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("not healthy after {timeout:?}: processes up {all_up}, leader {leader}, VIP {vip}, Redis primary {primary}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn drive(
    t: &Topology,
    out: &Path,
    plan: Vec<Step>,
    _headroom: u32,
) -> Result<(Vec<(Step, Vec<String>, u64)>, u64, u64)> {
    // The workload is ready once it acknowledged its first operations.
    let warm = wait_acks(out, 0, 30, Duration::from_secs(180)).await;
    if warm < 30 {
        bail!(
            "the workload acknowledged only {warm} operations in 3 minutes; see {}",
            out.join("workload.log").display()
        );
    }
    let watch = t.watch_holders();
    let mut done = Vec::new();
    for step in plan {
        wait_healthy(t, Duration::from_secs(120)).await?;
        // Roles are read just before the kill.
        let victims: Vec<Victim> = step
            .faults
            .iter()
            .map(|f| victim(t, *f))
            .collect::<Result<_>>()?;
        for v in &victims {
            v.inject(t)?;
        }
        // Taken once the fault is in place (the script that injects it
        // takes tens of ms to start; requests served meanwhile do not
        // count as served after the fault).
        let at = now_ms();
        let names: Vec<String> = victims.iter().map(Victim::label).collect();
        eprintln!("chaos: {} -> {}", step.name(), names.join(", "));
        if step.majority_loss {
            // No quorum: nothing is expected to work until it heals.
            tokio::time::sleep(Duration::from_secs(10)).await;
            for v in &victims {
                v.heal(t)?;
            }
            wait_acks(out, at, 100, Duration::from_secs(120)).await;
        } else {
            wait_acks(out, at, 100, Duration::from_secs(120)).await;
            for v in &victims {
                v.heal(t)?;
            }
        }
        done.push((step, names, at));
    }
    wait_healthy(t, Duration::from_secs(120)).await?;
    // A last stretch with everything healthy, so every change made during
    // the faults has time to be relayed and pushed.
    wait_acks(out, now_ms(), 50, Duration::from_secs(60)).await;
    // Live pushes may lag the faults (a relay election after a partition
    // takes a while): give them up to two minutes to catch up, so what is
    // judged is delivery, not its speed (the table shows the delay).
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && undelivered(out) > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (both, samples) = watch.finish();
    Ok((done, both, samples))
}

/// Acknowledged creations whose invitation has not reached its WebSocket.
fn undelivered(out: &Path) -> usize {
    let invited: BTreeSet<String> = read_lines(&out.join("notifications.jsonl"))
        .iter()
        .filter(|n| n["n"]["kind"] == "event_invited")
        .filter_map(|n| n["n"]["data"]["event_id"].as_str().map(str::to_string))
        .collect();
    read_lines(&out.join("ops.jsonl"))
        .iter()
        .filter(|o| o["kind"] == "create" && o["ok"] == true)
        .filter_map(|o| o["event_id"].as_str())
        .filter(|id| !invited.contains(*id))
        .count()
}

/// Reads the histories back and judges them.
async fn check(
    t: &Topology,
    out: &Path,
    steps: Vec<(Step, Vec<String>, u64)>,
    headroom: u32,
) -> Result<Report> {
    let mut report = Report::default();
    let ops = read_lines(&out.join("ops.jsonl"));
    let attempts = read_lines(&out.join("attempts.jsonl"));
    let notes = read_lines(&out.join("notifications.jsonl"));
    let api = crate::system::Api::with_tls(&t.url, t.public_tls());

    // 1. Events: every acknowledged one exactly once, nothing unknown.
    let mut attempted: BTreeSet<String> = BTreeSet::new();
    let mut acked: BTreeMap<String, String> = BTreeMap::new(); // event id -> title
    let mut acked_rsvp: BTreeSet<String> = BTreeSet::new();
    let mut created_at: HashMap<String, u64> = HashMap::new();
    for o in &ops {
        match o["kind"].as_str() {
            Some("create") => {
                attempted.insert(o["title"].as_str().unwrap_or_default().to_string());
                if let (true, Some(id)) = (o["ok"] == true, o["event_id"].as_str()) {
                    acked.insert(
                        id.to_string(),
                        o["title"].as_str().unwrap_or_default().to_string(),
                    );
                    created_at.insert(id.to_string(), o["ret"].as_u64().unwrap_or(0));
                }
            }
            Some("rsvp") if o["ok"] == true => {
                acked_rsvp.insert(o["event_id"].as_str().unwrap_or_default().to_string());
            }
            _ => {}
        }
    }
    let mut seen_titles: HashMap<String, usize> = HashMap::new();
    let mut stored_status: HashMap<String, String> = HashMap::new();
    for w in ops.iter().filter(|o| o["kind"] == "writer") {
        let token = w["organizer_token"].as_str().unwrap_or_default();
        let (st, body) = api
            .get(
                "/v1/events?from=2027-01-01T00:00:00Z&to=2027-04-01T00:00:00Z",
                token,
            )
            .await;
        if st != StatusCode::OK {
            bail!("reading the organizer's agenda: {st} {body}");
        }
        for e in body["items"].as_array().cloned().unwrap_or_default() {
            let title = e["title"].as_str().unwrap_or_default().to_string();
            *seen_titles.entry(title.clone()).or_default() += 1;
            if !attempted.contains(&title) {
                report
                    .violations
                    .push(format!("event {title:?} present but never attempted"));
            }
            let id = e["id"].as_str().unwrap_or_default().to_string();
            let att = w["attendee"].as_str().unwrap_or_default();
            if let Some(a) = e["attendees"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["user_id"] == att))
            {
                stored_status.insert(id, a["status"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    for (id, title) in &acked {
        match seen_titles.get(title).copied().unwrap_or(0) {
            1 => {}
            0 => report
                .violations
                .push(format!("acknowledged event {title} ({id}) lost")),
            n => report
                .violations
                .push(format!("acknowledged event {title} present {n} times")),
        }
    }
    for (title, n) in &seen_titles {
        if *n > 1 && !acked.values().any(|t| t == title) {
            report
                .violations
                .push(format!("unacknowledged event {title} present {n} times"));
        }
    }
    for id in &acked_rsvp {
        if stored_status.get(id).map(String::as_str) != Some("accepted") {
            report.violations.push(format!(
                "acknowledged RSVP on {id} not recorded ({:?})",
                stored_status.get(id)
            ));
        }
    }

    // 2. The register history.
    let history: Vec<linearizability::Operation> = read_lines(&out.join("register.jsonl"))
        .iter()
        .filter_map(register::from_json)
        .collect();
    if let Err(v) = linearizability::check(None, &history) {
        report.violations.push(format!(
            "agenda-db register history ({} ops) not linearizable: {v}",
            history.len()
        ));
    }

    // 3. Notifications: exactly once per acknowledged change.
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut invited: HashMap<String, usize> = HashMap::new();
    let mut rsvp: HashMap<String, usize> = HashMap::new();
    let mut pushed_at: HashMap<String, u64> = HashMap::new();
    for n in &notes {
        let id = n["n"]["id"].as_str().unwrap_or_default().to_string();
        *by_id.entry(id).or_default() += 1;
        let ev = n["n"]["data"]["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match n["n"]["kind"].as_str() {
            Some("event_invited") => {
                *invited.entry(ev.clone()).or_default() += 1;
                pushed_at.entry(ev).or_insert(n["at"].as_u64().unwrap_or(0));
            }
            Some("rsvp") => *rsvp.entry(ev).or_default() += 1,
            _ => {}
        }
    }
    let dup_ids = by_id.values().filter(|n| **n > 1).count();
    if dup_ids > 0 {
        report
            .violations
            .push(format!("{dup_ids} notifications delivered more than once"));
    }
    for id in acked.keys() {
        match invited.get(id).copied().unwrap_or(0) {
            1 => {}
            n => report.violations.push(format!(
                "invitation to acknowledged event {id} delivered {n} times"
            )),
        }
    }
    for id in &acked_rsvp {
        match rsvp.get(id).copied().unwrap_or(0) {
            1 => {}
            n => report
                .violations
                .push(format!("RSVP notification for {id} delivered {n} times")),
        }
    }

    // 4. Unavailability per step, and push delays.
    for (i, (step, victims, at)) in steps.iter().enumerate() {
        let next = steps.get(i + 1).map_or(u64::MAX, |s| s.2);
        let first_ok = attempts
            .iter()
            .filter(|a| {
                a["call"].as_u64().unwrap_or(0) >= *at
                    && (200..300).contains(&a["status"].as_u64().unwrap_or(0))
            })
            .filter_map(|a| a["ret"].as_u64())
            .min();
        let unavailable = first_ok.map(|r| Duration::from_millis(r.saturating_sub(*at)));
        let acked_after = ops
            .iter()
            .filter(|o| o["ok"] == true && o["call"].as_u64().is_some_and(|c| c >= *at && c < next))
            .count();
        let max_push = created_at
            .iter()
            .filter(|(_, r)| **r >= *at && **r < next)
            .filter_map(|(id, r)| pushed_at.get(id).map(|p| p.saturating_sub(*r)))
            .max()
            .map(Duration::from_millis);
        let target = if step.faults.len() == 1 {
            step.faults[0].target()
        } else {
            None
        };
        let name = step.name();
        if let (Some(target), false) = (target, step.majority_loss) {
            match unavailable {
                Some(u) if u <= target * headroom => {}
                other => report.slow.push(format!(
                    "{name}: unavailable {other:?}, target {target:?} x{headroom}"
                )),
            }
        }
        report.steps.push(StepResult {
            name,
            victims: victims.clone(),
            at_ms: *at,
            unavailable,
            acked_after,
            target,
            max_push_delay: max_push,
            majority_loss: step.majority_loss,
        });
    }
    report.summary = format!(
        "events acknowledged {} (attempted {}), RSVPs acknowledged {}, register operations {}, notifications {}, HTTP attempts {}",
        acked.len(),
        attempted.len(),
        acked_rsvp.len(),
        history.len(),
        notes.len(),
        attempts.len()
    );
    Ok(report)
}
