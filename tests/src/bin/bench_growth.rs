//! `make bench-growth` (issue 17, "How cost grows with data"): one system
//! of release binaries (three agenda-db nodes, two users and two groups
//! replicas, one gateway, TLS on every link) is grown in steps towards a
//! person with 100,000 events over ten years, a group of 1,000 members and
//! a store of 1,000,000 people, and at each step it measures:
//!
//! - p50/p95/p99 of the heavy person's week view (`GET /v1/events`), the
//!   big group's week (`GET /v1/groups/{id}/agenda`) and event creation
//!   (`POST /v1/events`), sequential and with concurrent clients; the same
//!   views of a week thirty years ahead, where nothing happens (what they
//!   cost there grows with what is kept, not with the window); and a user
//!   search (`GET /v1/users?q=`), the owner's notifications and the heavy
//!   person's iCalendar feed, which read more than a window;
//! - agenda-db's memory: VmRSS and VmHWM of each node, RSS growth per
//!   person added, and a new member's (the live state without history);
//! - the state files: `agenda_db_state_sync_latency_seconds` (mean of the
//!   writes during the step), `state.snap` and the raft log on disk;
//! - the restart of a follower (SIGKILL, same flags) until it has applied
//!   the leader's index, and the catch-up of a new member (`member_add`,
//!   a raft snapshot), which is removed again afterwards; meanwhile week
//!   views probe whether the service stalls.
//!
//! The data is written by a bulk loader in this process through the
//! calendar crate's [`Store`] (the services' own code): accounts by
//! [`Store::create_user`], events by [`Store::create_event`], members by
//! [`Store::invite`] and [`Store::answer_invitation`]. Past a few thousand
//! per step, accounts and events go in batched transactions of exactly the
//! records the store writes (the same key functions, the same records
//! built by the same code), and every step checks through the public API
//! that they read normally. It prints markdown tables (and `--json`), and
//! never asserts speed. The machine is shared: the run is refused up front
//! when the last step would not fit its disk and memory (`--force`), and
//! the system is stopped if available memory runs low (`--min-free-mb`).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_calendar::api::{CreateEventRequest, InviteRequest, RegisterRequest};
use agenda_calendar::events::new_event;
use agenda_calendar::keys;
use agenda_calendar::model::UserRecord;
use agenda_calendar::store::users::{index_name_words, NewUser};
use agenda_calendar::store::{Batch, Store};
use agenda_calendar::ApiError;
use agenda_common::DbClient;
use agenda_proto::db::RangeRequest;
use agenda_tests::system::{enc, fmt_time, Api, System, SystemOptions, PASSWORD};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// How cost grows with data: grow one system in steps and measure each.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Small scales and fewer requests (a few minutes).
    #[arg(long)]
    quick: bool,
    /// The steps as cumulative totals PEOPLE/EVENTS/MEMBERS, comma
    /// separated: people in the store, events of the heavy person,
    /// members of the big group (besides its owner). The first is the
    /// baseline. Default: 100/100/10,10000/1000/10,100000/10000/100,
    /// 1000000/100000/1000 (--quick: 100/100/10,3000/1000/30,20000/5000/100).
    #[arg(long)]
    scales: Option<String>,
    /// Requests per measured run (sequential, and again spread over
    /// --clients); default 200 (--quick: 60).
    #[arg(long)]
    requests: Option<usize>,
    /// Concurrent clients of the concurrent runs.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Longest one measured run may take, in seconds (it stops early and
    /// reports how many requests it made).
    #[arg(long, default_value_t = 30)]
    run_seconds: u64,
    /// Of every 1,000 of the heavy person's events, how many are weekly
    /// series of ten meetings (filed with the recurring events).
    #[arg(long, default_value_t = 10)]
    recurring_per_mille: usize,
    /// Of every 1,000, how many last three days (filed with the long ones).
    #[arg(long, default_value_t = 2)]
    long_per_mille: usize,
    /// One-off events of each group member within two weeks of the
    /// measured week.
    #[arg(long, default_value_t = 4)]
    member_events: usize,
    /// Accounts per step made one by one through `Store::create_user`
    /// (the rest in batched transactions of the same records).
    #[arg(long, default_value_t = 2000)]
    store_people: usize,
    /// Events per step made one by one through `Store::create_event`.
    #[arg(long, default_value_t = 1000)]
    store_events: usize,
    /// Skip the restart of a node.
    #[arg(long)]
    no_restart: bool,
    /// Skip the new member's catch-up.
    #[arg(long)]
    no_transfer: bool,
    /// Where the system's temp dir (data dirs, logs) goes (TMPDIR): the
    /// full run needs several GB; e.g. /dev/shm when the disk is short.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run even when the estimate of the disk and memory the last step
    /// needs exceeds what the machine has free.
    #[arg(long)]
    force: bool,
    /// Stop the system (SIGKILL to its processes, then the run fails)
    /// when the machine's available memory falls below this many MB: the
    /// machine is shared.
    #[arg(long, default_value_t = 1500)]
    min_free_mb: u64,
}

/// One step's totals.
#[derive(Clone, Copy, Debug)]
struct Scale {
    people: usize,
    events: usize,
    members: usize,
}

fn parse_scales(s: &str) -> Result<Vec<Scale>> {
    let mut out: Vec<Scale> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: Vec<usize> = part
            .split('/')
            .map(|x| x.trim().replace('_', "").parse::<usize>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("--scales: {part:?} is not PEOPLE/EVENTS/MEMBERS"))?;
        let [people, events, members] = n[..] else {
            bail!("--scales: {part:?} is not PEOPLE/EVENTS/MEMBERS");
        };
        ensure!(people >= 1, "--scales: {part:?}: at least one person");
        ensure!(
            members <= people,
            "--scales: {part:?}: the members come from the people"
        );
        if let Some(prev) = out.last() {
            ensure!(
                people >= prev.people && events >= prev.events && members >= prev.members,
                "--scales: totals only grow ({part:?})"
            );
        }
        out.push(Scale {
            people,
            events,
            members,
        });
    }
    ensure!(!out.is_empty(), "--scales: no step");
    Ok(out)
}

/// Accounts per batched transaction (three puts and two compares each).
const PEOPLE_PER_TXN: usize = 250;
/// Events per batched transaction (the record and the agenda copy each).
const EVENTS_PER_TXN: usize = 200;
/// Batched transactions in flight.
const TXNS_IN_FLIGHT: usize = 8;
/// Ten years, the span of the heavy person's events (the last one ahead).
const SPAN: i64 = 3653 * 86_400;
const WEEK: i64 = 7 * 86_400;
/// Golden ratio conjugate: event `k` sits at `frac(k * PHI)` of the span,
/// so the first N events of any step are spread evenly over ten years.
const PHI: f64 = 0.618_033_988_749_894_9;

fn api_err(e: ApiError) -> anyhow::Error {
    anyhow!("{} ({}): {}", e.code, e.status, e.message)
}

fn person_name(i: usize) -> String {
    format!("p{i:07}")
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What the loader has put in the store so far.
struct World {
    store: Store,
    db: DbClient,
    heavy: UserRecord,
    heavy_name: String,
    group: Uuid,
    /// The password hash of every loaded account (of [`PASSWORD`]).
    hash: String,
    /// Account ids by index (`p0000000`...).
    ids: Vec<Uuid>,
    /// Whether each went through `Store::create_user` (else a batch).
    via_store: Vec<bool>,
    events: usize,
    members: usize,
    members_with_events: usize,
    /// Start of the heavy person's ten years.
    t0: i64,
    /// The measured week `[from, to)`.
    week: (i64, i64),
    /// One-off events of the heavy person loaded inside the week.
    in_week: Vec<Uuid>,
    recurring: usize,
    long: usize,
}

/// How long one phase of loading took.
#[derive(Clone, Copy, Debug, Default)]
struct Phase {
    n: usize,
    secs: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.n as f64 / self.secs
        } else {
            0.0
        }
    }

    fn json(&self) -> Value {
        json!({"n": self.n, "seconds": round3(self.secs), "per_second": round3(self.rate())})
    }
}

#[derive(Debug, Default)]
struct Load {
    people_store: Phase,
    people_batched: Phase,
    events_store: Phase,
    events_batched: Phase,
    members: Phase,
    member_events: Phase,
}

impl World {
    /// The registration of `p{i}`, checked as `POST /v1/auth/register` does.
    fn new_user(i: usize) -> Result<NewUser> {
        let name = person_name(i);
        NewUser::check(RegisterRequest {
            username: name.clone(),
            email: format!("{name}@growth.example"),
            password: PASSWORD.into(),
            display_name: None,
            time_zone: None,
            add_me: None,
        })
        .map_err(api_err)
    }

    /// Accounts up to `to`: the first `via_store` one by one through the
    /// store, the rest in batches of the same records.
    async fn grow_people(&mut self, to: usize, via_store: usize, load: &mut Load) -> Result<()> {
        let from = self.ids.len();
        if to <= from {
            return Ok(());
        }
        let split = (from + via_store).min(to);
        let t = Instant::now();
        let store = &self.store;
        let hash = &self.hash;
        let made: Vec<(usize, Uuid)> = stream::iter(from..split)
            .map(|i| async move {
                let user = store
                    .create_user(Self::new_user(i)?, hash.clone())
                    .await
                    .map_err(api_err)?;
                Ok::<_, anyhow::Error>((i, user.id))
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        let mut ids = vec![Uuid::nil(); to - from];
        for (i, id) in made {
            ids[i - from] = id;
        }
        load.people_store = Phase {
            n: split - from,
            secs: t.elapsed().as_secs_f64(),
        };
        let t = Instant::now();
        let chunks: Vec<(usize, usize)> = (split..to)
            .step_by(PEOPLE_PER_TXN)
            .map(|a| (a, (a + PEOPLE_PER_TXN).min(to)))
            .collect();
        let done: Vec<Vec<(usize, Uuid)>> = stream::iter(chunks)
            .map(|(a, b)| async move {
                let mut batch = Batch::default();
                let mut out = Vec::with_capacity(b - a);
                for i in a..b {
                    let user = user_record(Self::new_user(i)?, hash.clone());
                    // What `Store::create_user` writes, guarded the same way.
                    let (name_key, email_key) =
                        (keys::username(&user.username), keys::email(&user.email));
                    batch.unchanged(&name_key, 0).unchanged(&email_key, 0);
                    batch.put(&keys::user(user.id), &user).map_err(api_err)?;
                    batch.put(&name_key, &user.id).map_err(api_err)?;
                    batch.put(&email_key, &user.id).map_err(api_err)?;
                    index_name_words(&mut batch, &user);
                    out.push((i, user.id));
                }
                ensure!(
                    store.commit(batch).await.map_err(api_err)?,
                    "accounts {a}..{b}: a username or email was taken"
                );
                Ok::<_, anyhow::Error>(out)
            })
            .buffer_unordered(TXNS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (i, id) in done.into_iter().flatten() {
            ids[i - from] = id;
        }
        load.people_batched = Phase {
            n: to - split,
            secs: t.elapsed().as_secs_f64(),
        };
        self.via_store.extend((from..to).map(|i| i < split));
        self.ids.extend(ids);
        Ok(())
    }

    /// The heavy person's event `k`: where in the ten years, and whether
    /// it is a weekly series or a three-day event (filed under `r/`).
    fn heavy_event(&self, k: usize, rec: usize, long: usize) -> (CreateEventRequest, Kind) {
        let frac = (k as f64 * PHI).fract();
        let start = self.t0 + ((frac * SPAN as f64) as i64) / 60 * 60;
        let m = k % 1000;
        let (end, rrule, kind) = if m < rec {
            (start + 3600, Some("FREQ=WEEKLY;COUNT=10"), Kind::Recurring)
        } else if m < rec + long {
            (start + 3 * 86_400, None, Kind::Long)
        } else {
            (start + 1800, None, Kind::OneOff(start))
        };
        let req = serde_json::from_value(json!({
            "title": format!("event {k}"),
            "start": fmt_time(start),
            "end": fmt_time(end),
            "time_zone": "Europe/Madrid",
            "description": "loaded by bench-growth",
            "location": "room 3",
            "rrule": rrule,
        }))
        .expect("a valid request");
        (req, kind)
    }

    fn note(&mut self, id: Uuid, kind: Kind) {
        match kind {
            Kind::Recurring => self.recurring += 1,
            Kind::Long => self.long += 1,
            Kind::OneOff(start) => {
                if (self.week.0..self.week.1).contains(&start) {
                    self.in_week.push(id);
                }
            }
        }
    }

    /// The heavy person's events up to `to`.
    async fn grow_events(&mut self, to: usize, args: &Args, load: &mut Load) -> Result<()> {
        let from = self.events;
        if to <= from {
            return Ok(());
        }
        let (rec, long) = (args.recurring_per_mille, args.long_per_mille);
        let split = (from + args.store_events).min(to);
        let t = Instant::now();
        let this = &*self;
        // At most PER_PERSON_QUEUE (16) costly steps of one person wait in
        // a process: 12 at once stay under it.
        let made: Vec<(Uuid, Kind)> = stream::iter(from..split)
            .map(|k| async move {
                let (req, kind) = this.heavy_event(k, rec, long);
                let (ev, _) = this
                    .store
                    .create_event(this.heavy.id, req, false, None)
                    .await
                    .map_err(api_err)?;
                Ok::<_, anyhow::Error>((ev.id, kind))
            })
            .buffer_unordered(12)
            .try_collect()
            .await?;
        load.events_store = Phase {
            n: split - from,
            secs: t.elapsed().as_secs_f64(),
        };
        let t = Instant::now();
        let chunks: Vec<(usize, usize)> = (split..to)
            .step_by(EVENTS_PER_TXN)
            .map(|a| (a, (a + EVENTS_PER_TXN).min(to)))
            .collect();
        let batched: Vec<Vec<(Uuid, Kind)>> = stream::iter(chunks)
            .map(|(a, b)| async move {
                let heavy = &this.heavy;
                let mut batch = Batch::default();
                let mut out = Vec::with_capacity(b - a);
                for k in a..b {
                    let (req, kind) = this.heavy_event(k, rec, long);
                    // The record `Store::create_event` builds (no
                    // attendees, no reminders: no notices, no reminder
                    // keys) and what it writes: the record, compared
                    // absent, the organizer's copy, the agenda version.
                    let ev = new_event(req, heavy, Vec::new(), None).map_err(api_err)?;
                    batch.unchanged(&keys::event(ev.id), 0);
                    batch.put(&keys::event(ev.id), &ev).map_err(api_err)?;
                    batch
                        .put(&keys::agenda_event(heavy.id, &ev), &ev)
                        .map_err(api_err)?;
                    out.push((ev.id, kind));
                }
                batch.bump(&keys::agenda_version(heavy.id));
                ensure!(
                    this.store.commit(batch).await.map_err(api_err)?,
                    "events {a}..{b}: an id was taken"
                );
                Ok::<_, anyhow::Error>(out)
            })
            .buffer_unordered(TXNS_IN_FLIGHT)
            .try_collect()
            .await?;
        load.events_batched = Phase {
            n: to - split,
            secs: t.elapsed().as_secs_f64(),
        };
        for (id, kind) in made.into_iter().chain(batched.into_iter().flatten()) {
            self.note(id, kind);
        }
        self.events = to;
        Ok(())
    }

    /// Members `p0..p{to}` of the big group, invited by its owner and
    /// accepting, then their own events around the measured week.
    async fn grow_group(&mut self, to: usize, args: &Args, load: &mut Load) -> Result<()> {
        let from = self.members;
        let t = Instant::now();
        if to > from {
            let (store, owner, group) = (&self.store, self.heavy.id, self.group);
            let invitations: Vec<(usize, Uuid)> = stream::iter(from..to)
                .map(|i| async move {
                    let inv = store
                        .invite(
                            owner,
                            group,
                            InviteRequest {
                                username: person_name(i),
                                rank: None,
                            },
                        )
                        .await
                        .map_err(api_err)?;
                    Ok::<_, anyhow::Error>((i, inv.id))
                })
                .buffer_unordered(16)
                .try_collect()
                .await?;
            // Each answer compares the group's version: a few at once.
            let ids = &self.ids;
            stream::iter(invitations)
                .map(|(i, inv)| async move {
                    store
                        .answer_invitation(ids[i], inv, true)
                        .await
                        .map_err(api_err)?;
                    Ok::<_, anyhow::Error>(())
                })
                .buffer_unordered(4)
                .try_collect::<()>()
                .await?;
            self.members = to;
        }
        load.members = Phase {
            n: to.saturating_sub(from),
            secs: t.elapsed().as_secs_f64(),
        };
        let t = Instant::now();
        let from = self.members_with_events;
        let per = args.member_events;
        let (this, week) = (&*self, self.week.0);
        let chunks: Vec<(usize, usize)> = (from..to)
            .step_by((EVENTS_PER_TXN / per.max(1)).max(1))
            .map(|a| (a, (a + (EVENTS_PER_TXN / per.max(1)).max(1)).min(to)))
            .collect();
        stream::iter(chunks)
            .map(|(a, b)| async move {
                let mut batch = Batch::default();
                for j in a..b {
                    let organizer = user_stub(this.ids[j], person_name(j));
                    for e in 0..per {
                        let frac = ((j * per + e) as f64 * PHI).fract();
                        let start = week - 2 * WEEK + (frac * (4 * WEEK) as f64) as i64 / 900 * 900;
                        let req: CreateEventRequest = serde_json::from_value(json!({
                            "title": format!("{} {e}", person_name(j)),
                            "start": fmt_time(start),
                            "end": fmt_time(start + 3600),
                            "time_zone": "Europe/Madrid",
                        }))?;
                        let ev = new_event(req, &organizer, Vec::new(), None).map_err(api_err)?;
                        batch.unchanged(&keys::event(ev.id), 0);
                        batch.put(&keys::event(ev.id), &ev).map_err(api_err)?;
                        batch
                            .put(&keys::agenda_event(organizer.id, &ev), &ev)
                            .map_err(api_err)?;
                    }
                    batch.bump(&keys::agenda_version(organizer.id));
                }
                ensure!(
                    this.store.commit(batch).await.map_err(api_err)?,
                    "member events: an id was taken"
                );
                Ok::<_, anyhow::Error>(())
            })
            .buffer_unordered(TXNS_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        load.member_events = Phase {
            n: to.saturating_sub(from) * per,
            secs: t.elapsed().as_secs_f64(),
        };
        self.members_with_events = to.max(from);
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A one-off event starting at this second.
    OneOff(i64),
    Recurring,
    Long,
}

/// The record `Store::create_user` makes of `new`.
fn user_record(new: NewUser, password_hash: String) -> UserRecord {
    UserRecord {
        id: Uuid::new_v4(),
        username: new.username,
        email: new.email,
        display_name: new.display_name,
        time_zone: new.time_zone,
        password_hash,
        created_at: chrono::Utc::now(),
        add_me: new.add_me,
        admin: false,
    }
}

/// An organizer for `new_event`, which reads only the id and username.
fn user_stub(id: Uuid, username: String) -> UserRecord {
    UserRecord {
        id,
        email: format!("{username}@growth.example"),
        display_name: username.clone(),
        username,
        time_zone: "UTC".into(),
        password_hash: String::new(),
        created_at: chrono::Utc::now(),
        add_me: Default::default(),
        admin: false,
    }
}

/// Latencies of one measured run.
#[derive(Debug, Default, Clone)]
struct Lat {
    n: usize,
    errors: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    per_second: f64,
    error_sample: Option<String>,
}

impl Lat {
    fn json(&self) -> Value {
        json!({
            "n": self.n, "errors": self.errors, "p50_ms": round3(self.p50),
            "p95_ms": round3(self.p95), "p99_ms": round3(self.p99),
            "per_second": round3(self.per_second), "error_sample": self.error_sample,
        })
    }

    fn cell(&self) -> String {
        if self.n == 0 {
            return match self.errors {
                0 => "-".into(),
                e => format!("all {e} failed"),
            };
        }
        let mut s = format!("{:.1} / {:.1} / {:.1}", self.p50, self.p95, self.p99);
        if self.errors > 0 {
            s.push_str(&format!(" ({} err)", self.errors));
        }
        s
    }
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A measured request.
#[derive(Clone)]
enum Op {
    Get(String),
    /// A GET without the bearer token (a calendar app's feed).
    Public(String),
    /// A new 30-minute event at a random slot 30 to 365 days ahead.
    Create,
}

fn request(api: &Api, token: &str, op: &Op) -> reqwest::RequestBuilder {
    match op {
        Op::Get(path) => api.request(Method::GET, path).bearer_auth(token),
        Op::Public(path) => api.request(Method::GET, path),
        Op::Create => {
            let start =
                now_secs() / 1800 * 1800 + rand::rng().random_range(30 * 48..365 * 48) * 1800;
            let body = json!({
                "title": "growth bench", "start": fmt_time(start), "end": fmt_time(start + 1800),
                "time_zone": "Europe/Madrid",
            });
            api.request(Method::POST, "/v1/events")
                .bearer_auth(token)
                .json(&body)
        }
    }
}

/// `total` requests spread over `clients` loops (each one in flight),
/// stopping after `limit`.
async fn run(
    api: &Api,
    token: &str,
    op: &Op,
    total: usize,
    clients: usize,
    limit: Duration,
) -> Lat {
    let clients = clients.clamp(1, total.max(1));
    let started = Instant::now();
    let deadline = started + limit;
    let results = futures::future::join_all((0..clients).map(|c| {
        let share = total / clients + usize::from(c < total % clients);
        async move {
            let mut ok = Vec::with_capacity(share);
            let mut errors = 0;
            let mut sample = None;
            for _ in 0..share {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let reply = api.try_send(request(api, token, op)).await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                match reply {
                    Ok((st, _)) if st.is_success() => ok.push(ms),
                    Ok((st, body)) => {
                        errors += 1;
                        let text = body.to_string();
                        sample.get_or_insert(format!("{st} {}", clip(&text, 200)));
                    }
                    Err(e) => {
                        errors += 1;
                        sample.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (ok, errors, sample)
        }
    }))
    .await;
    let secs = started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    let mut lat = Lat::default();
    for (ok, errors, sample) in results {
        all.extend(ok);
        lat.errors += errors;
        if lat.error_sample.is_none() {
            lat.error_sample = sample;
        }
    }
    all.sort_by(|a, b| a.total_cmp(b));
    lat.n = all.len();
    lat.p50 = pct(&all, 0.50);
    lat.p95 = pct(&all, 0.95);
    lat.p99 = pct(&all, 0.99);
    lat.per_second = (all.len() + lat.errors) as f64 / secs.max(1e-9);
    lat
}

/// VmRSS and VmHWM of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Reads agenda-db's `/metrics` (HTTPS with the operator's certificate).
struct Scraper {
    http: reqwest::Client,
}

impl Scraper {
    fn new(sys: &System) -> Result<Scraper> {
        let id = agenda_common::tls::Identity::load(&agenda_common::tls::TlsFiles::in_dir(
            &sys.certs_dir(),
            "test",
        ))?;
        let mut config = rustls::ClientConfig::clone(&*id.client_config()?);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Scraper { http })
    }

    /// Every sample without `le` labels: name -> value.
    async fn metrics(&self, http_addr: &str) -> Result<BTreeMap<String, f64>> {
        let text = self
            .http
            .get(format!("https://{http_addr}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if line.contains("le=\"") {
                continue;
            }
            let name = line
                .split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string();
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse().ok()) {
                out.entry(name).or_insert(v);
            }
        }
        Ok(out)
    }
}

/// The state-file writes of a node so far: (sum of seconds, count).
async fn state_writes(scraper: &Scraper, http: &str) -> (f64, f64) {
    match scraper.metrics(http).await {
        Ok(m) => (
            m.get("agenda_db_state_sync_latency_seconds_sum")
                .copied()
                .unwrap_or(0.0),
            m.get("agenda_db_state_sync_latency_seconds_count")
                .copied()
                .unwrap_or(0.0),
        ),
        Err(_) => (0.0, 0.0),
    }
}

/// The store's view as one node has it.
async fn status(sys: &System, id: u64) -> Option<agenda_proto::db::ClusterStatusResponse> {
    sys.db
        .node_client(id)
        .with_timeout(Duration::from_secs(1))
        .cluster_status()
        .await
        .ok()
}

/// Leader id, its applied index and the highest term, as the leader says.
async fn leader_view(sys: &System) -> Result<(u64, u64, u64)> {
    let leader = sys.db.leader().await?;
    let s = status(sys, leader)
        .await
        .context("the leader does not answer")?;
    Ok((leader, s.applied_index, s.term))
}

#[derive(Debug, Default, Clone)]
struct Restart {
    node: u64,
    /// Kill to the first answer of the restarted process.
    serving_s: f64,
    /// Kill to having applied the leader's index at the kill.
    caught_up_s: f64,
    rss: u64,
    leader_changed: bool,
    probe: Probed,
}

/// SIGKILL of a follower and its restart with the same flags.
async fn restart_one(sys: &mut System) -> Result<Restart> {
    let (leader, target, term) = leader_view(sys).await?;
    let victim = *sys
        .db
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("no follower")?;
    let t = Instant::now();
    sys.db.kill(victim);
    sys.db.restart(victim)?;
    let mut serving = None;
    let deadline = t + Duration::from_secs(600);
    loop {
        if let Some(s) = status(sys, victim).await {
            serving.get_or_insert(t.elapsed().as_secs_f64());
            if s.applied_index >= target && s.leader_id != 0 {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "node {victim} did not catch up after a restart:\n{}",
            sys.db.log_tail(victim, 20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up_s = t.elapsed().as_secs_f64();
    let (now_leader, _, now_term) = leader_view(sys).await?;
    let pid = sys.db.nodes[&victim].pid().unwrap_or(0);
    Ok(Restart {
        node: victim,
        serving_s: serving.unwrap_or(caught_up_s),
        caught_up_s,
        rss: memory(pid).0,
        leader_changed: now_leader != leader || now_term != term,
        probe: Probed::default(),
    })
}

#[derive(Debug, Default, Clone)]
struct Transfer {
    node: u64,
    caught_up_s: f64,
    by_snapshot: bool,
    /// The new member's memory two seconds after it caught up: the live
    /// state without history (a member restored from a snapshot starts
    /// with none), and what is left of the install.
    rss: u64,
    /// Its state file: the live state, serialized, without history.
    state_file: u64,
    /// Its first state file (the snapshot, written before it applies):
    /// seconds, when one was observed.
    state_write_s: Option<f64>,
    leader_hwm_before: u64,
    leader_hwm_after: u64,
    leader_changed: bool,
    probe: Probed,
}

/// A new member added with `member_add`, timed until it has applied the
/// leader's index at the add; then removed again.
async fn transfer_one(
    sys: &mut System,
    scraper: &Scraper,
    id: u64,
    pids: &Pids,
) -> Result<Transfer> {
    let (leader, target, term) = leader_view(sys).await?;
    let leader_pid = sys.db.nodes[&leader].pid().unwrap_or(0);
    let leader_hwm_before = memory(leader_pid).1;
    let addr = sys.db.spawn_joining(id)?.raft_addr().to_string();
    watch(sys, pids);
    let admin = sys.db.client().with_timeout(Duration::from_secs(30));
    let t = Instant::now();
    admin.member_add(id, &addr).await?;
    let deadline = t + Duration::from_secs(600);
    let caught = loop {
        if let Some(s) = status(sys, id).await {
            if s.applied_index >= target && s.leader_id != 0 {
                break Ok(t.elapsed().as_secs_f64());
            }
        }
        if Instant::now() >= deadline {
            break Err(anyhow!(
                "the new member {id} did not catch up in 600 s:\n{}",
                sys.db.log_tail(id, 20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let http = sys.db.nodes[&id].http.clone();
    let metrics = scraper.metrics(&http).await.unwrap_or_default();
    let by_snapshot = metrics
        .get("agenda_db_snapshots_installed_total")
        .is_some_and(|v| *v >= 1.0);
    let (sum, count) = state_writes(scraper, &http).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = sys.db.nodes[&id].pid().unwrap_or(0);
    let rss = memory(pid).0;
    let state_file = file_bytes(&sys.db.nodes[&id].data_dir.join("state.snap"));
    let (now_leader, _, now_term) = leader_view(sys).await?;
    let leader_hwm_after = memory(sys.db.nodes[&now_leader].pid().unwrap_or(0)).1;
    // Back to three members.
    if let Err(e) = admin.member_remove(id).await {
        eprintln!("removing member {id}: {e}");
    }
    let node = sys.db.nodes.get_mut(&id).context("the new member")?;
    let gone_by = Instant::now() + Duration::from_secs(20);
    while node.is_running() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sys.db.kill(id);
    if let Some(node) = sys.db.nodes.remove(&id) {
        let _ = std::fs::remove_dir_all(&node.data_dir);
    }
    watch(sys, pids);
    let caught_up_s = caught?;
    Ok(Transfer {
        node: id,
        caught_up_s,
        by_snapshot,
        rss,
        state_file,
        state_write_s: (count >= 1.0).then(|| sum / count),
        leader_hwm_before,
        leader_hwm_after,
        leader_changed: now_leader != leader || now_term != term,
        probe: Probed::default(),
    })
}

/// Week views of the heavy person sent one after another while something
/// else happens (a restart, a new member): how many, how many failed,
/// the slowest.
#[derive(Debug, Default, Clone, Copy)]
struct Probed {
    n: usize,
    errors: usize,
    worst_ms: f64,
}

struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Probed>,
}

impl Probe {
    fn start(api: &Api, token: &str, path: &str) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let (api, token, path, flag) = (
            api.clone(),
            token.to_string(),
            path.to_string(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let mut p = Probed::default();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let reply = api
                    .try_send(api.request(Method::GET, &path).bearer_auth(&token))
                    .await;
                p.worst_ms = p.worst_ms.max(t.elapsed().as_secs_f64() * 1000.0);
                p.n += 1;
                if !matches!(reply, Ok((st, _)) if st.is_success()) {
                    p.errors += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            p
        });
        Probe { stop, task }
    }

    async fn finish(self) -> Probed {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The system's processes, for the memory guard.
type Pids = Arc<Mutex<Vec<u32>>>;

/// Set when the memory guard stopped the system.
static STOPPED: AtomicBool = AtomicBool::new(false);

fn watch(sys: &System, pids: &Pids) {
    let now: Vec<u32> = sys.pids().into_iter().map(|(_, pid)| pid).collect();
    *pids.lock().unwrap_or_else(|e| e.into_inner()) = now;
}

/// MemAvailable of the machine, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// SIGKILLs the system's processes when the machine's available memory
/// falls under `min` bytes: the machine is shared, and an out-of-memory
/// kill could hit someone else's process.
fn guard(pids: Pids, min: u64) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(250));
        if mem_available().is_some_and(|a| a < min) {
            eprintln!(
                "the machine has less than {} MB of memory available: stopping the system",
                min / (1024 * 1024)
            );
            STOPPED.store(true, Ordering::SeqCst);
            for pid in pids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                // SAFETY: a signal to a process this benchmark started.
                unsafe {
                    libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                }
            }
            return;
        }
    });
}

/// Free bytes of the file system of `dir`, and whether it is a tmpfs
/// (whose files take memory).
fn free_space(dir: &Path) -> Option<(u64, bool)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: plain C structs filled by the calls.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string; the structs are ours.
    let ok = unsafe {
        libc::statvfs(c.as_ptr(), &mut vfs) == 0 && libc::statfs(c.as_ptr(), &mut fs) == 0
    };
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    ok.then(|| {
        (
            vfs.f_bavail as u64 * vfs.f_frsize as u64,
            fs.f_type as i64 == TMPFS_MAGIC,
        )
    })
}

/// Disk (all three nodes' data dirs, with a state file being rewritten
/// and the raft log it bounds) and memory (three nodes, their peaks while
/// writing a state file, and a new member) per person and per event,
/// from the runs in docs/GROWTH.md, rounded up.
const DISK_PER_PERSON: f64 = 8_000.0;
const DISK_PER_EVENT: f64 = 12_000.0;
const MEMORY_PER_PERSON: f64 = 20_000.0;
const MEMORY_PER_EVENT: f64 = 30_000.0;

/// Refuses a run that would not fit the machine (unless --force).
fn preflight(args: &Args, last: Scale) -> Result<()> {
    let dir = std::env::temp_dir();
    let disk = (last.people as f64 * DISK_PER_PERSON + last.events as f64 * DISK_PER_EVENT) as u64;
    let mut memory =
        (last.people as f64 * MEMORY_PER_PERSON + last.events as f64 * MEMORY_PER_EVENT) as u64;
    let (free, tmpfs) = free_space(&dir).unwrap_or((u64::MAX, false));
    if tmpfs {
        memory += disk;
    }
    let available = mem_available().unwrap_or(u64::MAX);
    let gb = |b: u64| b as f64 / 1e9;
    eprintln!(
        "the last step needs about {:.1} GB of disk in {} ({:.1} GB free{}) and {:.1} GB of memory ({:.1} GB available)",
        gb(disk),
        dir.display(),
        gb(free),
        if tmpfs { ", a tmpfs" } else { "" },
        gb(memory),
        gb(available)
    );
    if (disk > free || memory + args.min_free_mb * 1024 * 1024 > available) && !args.force {
        bail!(
            "not enough room for the last step: give smaller --scales, another --tmp-dir, or --force"
        );
    }
    Ok(())
}

/// Memory and disk of each agenda-db node.
#[derive(Debug, Default, Clone)]
struct Node {
    id: u64,
    rss: u64,
    hwm: u64,
    state_file: u64,
    raft_log: u64,
    data_dir: u64,
}

fn nodes_now(sys: &System) -> Vec<Node> {
    sys.db
        .nodes
        .values()
        .map(|n| {
            let (rss, hwm) = n.pid().map_or((0, 0), memory);
            Node {
                id: n.id,
                rss,
                hwm,
                state_file: file_bytes(&n.data_dir.join("state.snap")),
                raft_log: file_bytes(&n.data_dir.join("raft-log.redb")),
                data_dir: dir_bytes(&n.data_dir),
            }
        })
        .collect()
}

fn avg(v: impl Iterator<Item = u64>) -> u64 {
    let v: Vec<u64> = v.collect();
    if v.is_empty() {
        0
    } else {
        v.iter().sum::<u64>() / v.len() as u64
    }
}

/// One measured step.
#[derive(Debug, Default)]
struct Step {
    scale: Option<Scale>,
    load: Load,
    keys: i64,
    /// Occurrences in the heavy person's measured week.
    week_items: usize,
    recurring: usize,
    long: usize,
    ops: Vec<(&'static str, Lat, Option<Lat>)>,
    nodes_after_people: Vec<Node>,
    nodes: Vec<Node>,
    /// Mean seconds of the state-file writes during the step, and how many.
    state_write: Option<(f64, usize)>,
    restart: Option<Restart>,
    transfer: Option<Transfer>,
    /// Why the new member did not catch up, when it did not.
    transfer_error: Option<String>,
}

/// What the services logged about a failed request: the line that names
/// the reference of a 500 (`internal error (reference ...)`), else the
/// last ERROR or WARN line of any of their logs.
fn logged(sys: &System, reply: &str) -> Option<String> {
    let reference = reply
        .split("reference ")
        .nth(1)
        .and_then(|r| r.get(..36))
        .map(str::to_string);
    let mut last = None;
    for e in std::fs::read_dir(sys.log_dir()).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let hit = match &reference {
            Some(r) => text.lines().find(|l| l.contains(r.as_str())),
            None => text
                .lines()
                .rev()
                .find(|l| l.contains("ERROR") || l.contains("WARN")),
        };
        if let Some(line) = hit {
            last = Some(format!("{name}: {}", clip(line, 400)));
            if reference.is_some() {
                break;
            }
        }
    }
    last
}

async fn login(api: &Api, name: &str) -> Result<String> {
    let (st, body) = api
        .try_send(
            api.request(Method::POST, "/v1/auth/login")
                .json(&json!({"username": name, "password": PASSWORD})),
        )
        .await?;
    ensure!(st == StatusCode::OK, "login {name}: {st} {body}");
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .context("no access_token")
}

async fn get(api: &Api, token: &str, path: &str) -> Result<Value> {
    let (st, body) = api
        .try_send(api.request(Method::GET, path).bearer_auth(token))
        .await?;
    ensure!(st.is_success(), "GET {path}: {st} {body}");
    Ok(body)
}

/// Reads what was loaded through the public API: accounts of both
/// kinds log in and see themselves, the heavy person's week lists the
/// loaded events, the group lists its members. Returns the week's size.
async fn check(api: &Api, w: &World, token: &str) -> Result<usize> {
    let mut rng = rand::rng();
    let n = w.ids.len();
    let batched: Vec<usize> = (0..n).filter(|i| !w.via_store[*i]).take(1).collect();
    let mut picks = vec![rng.random_range(0..n), n - 1];
    picks.extend(batched);
    for i in picks {
        let name = person_name(i);
        let tok = login(api, &name).await?;
        let me = get(api, &tok, "/v1/me").await?;
        ensure!(
            me["username"] == name.as_str() && me["id"] == w.ids[i].to_string().as_str(),
            "GET /v1/me as {name}: {me}"
        );
    }
    let (from, to) = (fmt_time(w.week.0), fmt_time(w.week.1));
    let q = format!("from={}&to={}", enc(&from), enc(&to));
    let week = get(api, token, &format!("/v1/events?{q}")).await?;
    let items = week["items"].as_array().context("week view items")?;
    let seen: std::collections::HashSet<&str> =
        items.iter().filter_map(|e| e["id"].as_str()).collect();
    for id in &w.in_week {
        ensure!(
            seen.contains(id.to_string().as_str()),
            "the week view lacks loaded event {id}"
        );
    }
    if let Some(id) = w.in_week.last() {
        get(api, token, &format!("/v1/events/{id}")).await?;
    }
    let members = get(api, token, &format!("/v1/groups/{}/members", w.group)).await?;
    let count = members["items"].as_array().map_or(0, Vec::len);
    ensure!(
        count == w.members + 1,
        "the group lists {count} members, not {}",
        w.members + 1
    );
    let agenda = get(api, token, &format!("/v1/groups/{}/agenda?{q}", w.group)).await?;
    let rows = agenda["members"].as_array().map_or(0, Vec::len);
    ensure!(rows == w.members + 1, "the group agenda has {rows} rows");
    Ok(items.len())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.tmp_dir {
        std::fs::create_dir_all(dir)?;
        // Before any thread: tempfile reads it for the system's dir.
        std::env::set_var("TMPDIR", dir);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    let scales = parse_scales(args.scales.as_deref().unwrap_or(if args.quick {
        "100/100/10,3000/1000/30,20000/5000/100"
    } else {
        "100/100/10,10000/1000/10,100000/10000/100,1000000/100000/1000"
    }))?;
    let requests = args
        .requests
        .unwrap_or(if args.quick { 60 } else { 200 })
        .max(1);
    let run_limit = Duration::from_secs(args.run_seconds.max(1));
    preflight(&args, *scales.last().expect("at least one step"))?;
    eprintln!("starting the system (3 agenda-db, 2 users, 2 groups, 1 gateway, TLS)...");
    let mut sys = System::start(SystemOptions {
        db_nodes: 3,
        users: 2,
        groups: 2,
        tls: true,
        // One person sends every measured request.
        gateway_args: ["--person-burst", "1000000", "--person-rate", "1000000"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await?;
    let pids: Pids = Arc::default();
    watch(&sys, &pids);
    guard(pids.clone(), args.min_free_mb * 1024 * 1024);
    let api = sys.api();
    let scraper = Scraper::new(&sys)?;
    let db = sys
        .db
        .client_as(&sys.certs_dir(), "users")
        .with_timeout(Duration::from_secs(60));
    let store = Store::new(db.clone());

    // The heavy person and the group, through the public API; the hash of
    // their password serves every loaded account (same password).
    let heavy_name = "heavy-person".to_string();
    let (heavy_id, token) = api.register(&heavy_name).await;
    let heavy_id: Uuid = heavy_id.parse()?;
    let heavy = store
        .user(heavy_id)
        .await
        .map_err(api_err)?
        .context("the heavy person's record")?;
    let group: Uuid = api
        .create_group(&token, "everyone", "hierarchical")
        .await
        .parse()?;
    // The heavy person's iCalendar feed (what calendar apps poll).
    let (st, feed) = api
        .try_send(
            api.request(Method::POST, "/v1/me/calendar-feed")
                .bearer_auth(&token),
        )
        .await?;
    ensure!(
        st == StatusCode::CREATED,
        "POST /v1/me/calendar-feed: {st} {feed}"
    );
    let feed = feed["url"]
        .as_str()
        .and_then(|u| u.find("/v1/calendar.ics").map(|i| u[i..].to_string()))
        .context("the feed's url")?;
    let now = now_secs();
    let days = (now + WEEK).div_euclid(86_400);
    // Day 0 was a Thursday: back to that week's Monday.
    let monday = (days - (days + 3).rem_euclid(7)) * 86_400;
    let mut w = World {
        store,
        db,
        hash: heavy.password_hash.clone(),
        heavy,
        heavy_name,
        group,
        ids: Vec::new(),
        via_store: Vec::new(),
        events: 0,
        members: 0,
        members_with_events: 0,
        t0: now - SPAN + 365 * 86_400,
        week: (monday, monday + WEEK),
        in_week: Vec::new(),
        recurring: 0,
        long: 0,
    };
    let mut steps: Vec<Step> = Vec::new();
    let mut writes_before: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for n in sys.db.nodes.values() {
        writes_before.insert(n.id, state_writes(&scraper, &n.http).await);
    }
    let mut next_member = 4;
    let started = Instant::now();
    for (i, scale) in scales.iter().enumerate() {
        let label = if i == 0 { "baseline" } else { "step" };
        eprintln!(
            "[{:>5.0} s] {label} {}: {} people, {} events of one person, {} members...",
            started.elapsed().as_secs_f64(),
            i,
            scale.people,
            scale.events,
            scale.members
        );
        let mut step = Step {
            scale: Some(*scale),
            ..Default::default()
        };
        w.grow_people(scale.people, args.store_people, &mut step.load)
            .await?;
        step.nodes_after_people = nodes_now(&sys);
        w.grow_events(scale.events, &args, &mut step.load).await?;
        w.grow_group(scale.members, &args, &mut step.load).await?;
        let l = &step.load;
        eprintln!(
            "  loaded: people {}/s (store) {}/s (batched), events {}/s (store) {}/s (batched), members {}/s",
            l.people_store.rate() as u64,
            l.people_batched.rate() as u64,
            l.events_store.rate() as u64,
            l.events_batched.rate() as u64,
            l.members.rate() as u64
        );
        step.recurring = w.recurring;
        step.long = w.long;
        step.keys =
            w.db.range(RangeRequest {
                key: keys::ROOT.as_bytes().to_vec(),
                prefix: true,
                count_only: true,
                ..Default::default()
            })
            .await?
            .count;
        // A fresh token each step (a full run outlives one).
        let token = login(&api, &w.heavy_name).await?;
        step.week_items = check(&api, &w, &token).await?;
        eprintln!(
            "  checked through the API; {} keys, {} occurrences in the measured week",
            step.keys, step.week_items
        );
        let (from, to) = (fmt_time(w.week.0), fmt_time(w.week.1));
        let q = format!("from={}&to={}", enc(&from), enc(&to));
        // A week thirty years ahead holds no occurrence of anything: what
        // its reads cost grows with what is kept, not with the window.
        let far = w.week.0 + 30 * 52 * WEEK;
        let (far_from, far_to) = (fmt_time(far), fmt_time(far + WEEK));
        let empty = format!("from={}&to={}", enc(&far_from), enc(&far_to));
        let measured: [(&'static str, Op, usize, bool); 8] = [
            (
                "week view",
                Op::Get(format!("/v1/events?{q}")),
                requests,
                true,
            ),
            (
                "week view, empty week",
                Op::Get(format!("/v1/events?{empty}")),
                requests,
                false,
            ),
            (
                "group agenda",
                Op::Get(format!("/v1/groups/{}/agenda?{q}", w.group)),
                requests,
                true,
            ),
            (
                "group agenda, empty week",
                Op::Get(format!("/v1/groups/{}/agenda?{empty}", w.group)),
                requests,
                false,
            ),
            ("create event", Op::Create, requests, true),
            (
                "user search",
                Op::Get("/v1/users?q=p00000".into()),
                requests.min(20),
                false,
            ),
            (
                "notifications",
                Op::Get("/v1/notifications".into()),
                requests.min(50),
                false,
            ),
            (
                "iCalendar feed",
                Op::Public(feed.clone()),
                requests.min(5),
                false,
            ),
        ];
        for (name, op, n, concurrent) in measured {
            let seq = run(&api, &token, &op, n, 1, run_limit).await;
            let conc = if concurrent {
                Some(run(&api, &token, &op, n, args.clients, run_limit).await)
            } else {
                None
            };
            eprintln!(
                "  {name}: p50/p95/p99 {} ms; with {} clients {}",
                seq.cell(),
                args.clients,
                conc.as_ref().map_or("-".into(), Lat::cell)
            );
            if let Some(e) = seq
                .error_sample
                .as_ref()
                .or(conc.as_ref().and_then(|c| c.error_sample.as_ref()))
            {
                eprintln!("    error sample: {e}");
                if let Some(line) = logged(&sys, e) {
                    eprintln!("    logged: {line}");
                }
            }
            step.ops.push((name, seq, conc));
        }
        step.nodes = nodes_now(&sys);
        let mut sum = 0.0;
        let mut count = 0.0;
        for n in sys.db.nodes.values() {
            let (s, c) = state_writes(&scraper, &n.http).await;
            let (s0, c0) = writes_before.get(&n.id).copied().unwrap_or_default();
            sum += s - s0;
            count += c - c0;
            writes_before.insert(n.id, (s, c));
        }
        step.state_write = (count >= 1.0).then(|| (sum / count, count as usize));
        if !args.no_restart {
            eprintln!("  restarting a follower...");
            let probe = Probe::start(&api, &token, &format!("/v1/events?{q}"));
            let r = restart_one(&mut sys).await;
            watch(&sys, &pids);
            let mut r = r?;
            r.probe = probe.finish().await;
            eprintln!(
                "  node {} serving after {:.2} s, caught up after {:.2} s; week views meanwhile: {} ({} failed), slowest {:.0} ms",
                r.node, r.serving_s, r.caught_up_s, r.probe.n, r.probe.errors, r.probe.worst_ms
            );
            // Its counters started over.
            let http = sys.db.nodes[&r.node].http.clone();
            writes_before.insert(r.node, state_writes(&scraper, &http).await);
            step.restart = Some(r);
        }
        if !args.no_transfer {
            eprintln!("  adding member {next_member}...");
            let probe = Probe::start(&api, &token, &format!("/v1/events?{q}"));
            let transferred = transfer_one(&mut sys, &scraper, next_member, &pids).await;
            let probed = probe.finish().await;
            next_member += 1;
            match transferred {
                Ok(mut t) => {
                    t.probe = probed;
                    eprintln!(
                        "  member {} caught up after {:.2} s ({}), then removed; week views meanwhile: {} ({} failed), slowest {:.0} ms",
                        t.node,
                        t.caught_up_s,
                        if t.by_snapshot { "snapshot" } else { "log" },
                        t.probe.n,
                        t.probe.errors,
                        t.probe.worst_ms
                    );
                    step.transfer = Some(t);
                }
                // A measurement, not the end of the run: the table says so.
                Err(e) => {
                    eprintln!("  the new member failed: {e:#}");
                    step.transfer_error = Some(format!("{e:#}"));
                }
            }
        }
        steps.push(step);
        ensure!(
            !STOPPED.load(Ordering::SeqCst),
            "stopped: the machine ran short of memory"
        );
    }
    let total = started.elapsed().as_secs_f64();
    print_tables(&steps, &args, requests, total);
    if let Some(path) = &args.json {
        let doc = to_json(&steps, &args, requests, total);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
        eprintln!("wrote {}", path.display());
    }
    drop(sys);
    Ok(())
}

fn scale_of(s: &Step) -> Scale {
    s.scale.unwrap_or(Scale {
        people: 0,
        events: 0,
        members: 0,
    })
}

/// Growth of `now` over `before` per unit added (None when nothing was).
fn per_unit(now: u64, before: u64, added: usize) -> Option<f64> {
    (added > 0).then(|| (now as f64 - before as f64) / added as f64)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn print_tables(steps: &[Step], args: &Args, requests: usize, total: f64) {
    println!();
    println!(
        "## bench-growth: {} steps in {:.0} s ({requests} requests per run, {} concurrent clients, runs capped at {} s)",
        steps.len(),
        total,
        args.clients,
        args.run_seconds
    );
    println!();
    println!("p50 / p95 / p99 in ms, sequential (one client) and concurrent:");
    println!();
    println!("| people | events (heavy) | members | week items | op | sequential | concurrent | req/s (conc.) |");
    println!("|---:|---:|---:|---:|---|---|---|---:|");
    for s in steps {
        let sc = scale_of(s);
        for (name, seq, conc) in &s.ops {
            println!(
                "| {} | {} | {} | {} | {name} | {} | {} | {} |",
                sc.people,
                sc.events,
                sc.members,
                s.week_items,
                seq.cell(),
                conc.as_ref().map_or("-".into(), Lat::cell),
                conc.as_ref()
                    .map_or("-".into(), |c| format!("{:.0}", c.per_second))
            );
        }
    }
    println!();
    println!("agenda-db (3 nodes): memory, disk, state files, restart, new member:");
    println!();
    println!("| people | keys | RSS/node MB (avg) | peak RSS MB (max) | new member RSS MB (its state.snap) | RSS growth / person added (nodes) | (new member) | state.snap MB | raft log MB | state write s (n) | restart: serving / caught up s | new member caught up s | slowest week view meanwhile ms (restart / new member) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|");
    let mut prev: Option<&Step> = None;
    for s in steps {
        let sc = scale_of(s);
        let rss = avg(s.nodes.iter().map(|n| n.rss));
        let hwm = s.nodes.iter().map(|n| n.hwm).max().unwrap_or(0);
        let snap = avg(s.nodes.iter().map(|n| n.state_file));
        let log = avg(s.nodes.iter().map(|n| n.raft_log));
        let (nodes_pp, member_pp) = match prev {
            Some(p) => {
                let added = sc.people - scale_of(p).people;
                (
                    per_unit(
                        avg(s.nodes.iter().map(|n| n.rss)),
                        avg(p.nodes.iter().map(|n| n.rss)),
                        added,
                    ),
                    match (&s.transfer, &p.transfer) {
                        (Some(a), Some(b)) => per_unit(a.rss, b.rss, added),
                        _ => None,
                    },
                )
            }
            None => (None, None),
        };
        let probe = |p: Option<&Probed>| {
            p.map_or("-".into(), |p| {
                let failed = if p.errors > 0 {
                    format!(" ({} failed)", p.errors)
                } else {
                    String::new()
                };
                format!("{:.0}{failed}", p.worst_ms)
            })
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} / {} |",
            sc.people,
            s.keys,
            mb(rss),
            mb(hwm),
            s.transfer.as_ref().map_or("-".into(), |t| format!(
                "{:.0} ({:.0})",
                mb(t.rss),
                mb(t.state_file)
            )),
            opt(nodes_pp, 0),
            opt(member_pp, 0),
            mb(snap),
            mb(log),
            s.state_write
                .map_or("-".into(), |(m, n)| format!("{m:.2} ({n})")),
            s.restart.as_ref().map_or("-".into(), |r| format!(
                "{:.2} / {:.2}{}",
                r.serving_s,
                r.caught_up_s,
                if r.leader_changed {
                    " (leader changed)"
                } else {
                    ""
                }
            )),
            s.transfer.as_ref().map_or_else(
                || if s.transfer_error.is_some() {
                    "failed".into()
                } else {
                    "-".into()
                },
                |t| format!(
                    "{:.2} ({}{})",
                    t.caught_up_s,
                    if t.by_snapshot { "snapshot" } else { "log" },
                    if t.leader_changed {
                        ", leader changed"
                    } else {
                        ""
                    }
                )
            ),
            probe(s.restart.as_ref().map(|r| &r.probe)),
            probe(s.transfer.as_ref().map(|t| &t.probe)),
        );
        prev = Some(s);
    }
    println!();
    println!(
        "RSS growth per person added: from one step's end to the next, with whatever else the step added \
         (events, members). A new member joins from a snapshot: the live state without history, its \
         state.snap the state serialized. Peak RSS is VmHWM, since each process started."
    );
    println!();
    println!("bulk load (per second):");
    println!();
    println!("| people | people (Store::create_user) | people (batched) | events (Store::create_event) | events (batched) | members (invite + accept) | member events (batched) |");
    println!("|---:|---|---|---|---|---|---|");
    let cell = |p: &Phase| {
        if p.n == 0 {
            "-".to_string()
        } else {
            format!("{:.0} ({} in {:.1} s)", p.rate(), p.n, p.secs)
        }
    };
    for s in steps {
        let l = &s.load;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            scale_of(s).people,
            cell(&l.people_store),
            cell(&l.people_batched),
            cell(&l.events_store),
            cell(&l.events_batched),
            cell(&l.members),
            cell(&l.member_events)
        );
    }
    if let Some(last) = steps.last() {
        println!();
        println!(
            "the heavy person's agenda: {} weekly series and {} three-day events (read by every window), the rest 30-minute one-offs",
            last.recurring, last.long
        );
        if let Some(t) = &last.transfer {
            println!(
                "largest step: leader peak RSS {:.0} MB before the new member, {:.0} MB after; new member's first state file {} s",
                mb(t.leader_hwm_before),
                mb(t.leader_hwm_after),
                opt(t.state_write_s, 2)
            );
        }
    }
}

fn probe_json(p: &Probed) -> Value {
    json!({"n": p.n, "errors": p.errors, "slowest_ms": round3(p.worst_ms)})
}

fn to_json(steps: &[Step], args: &Args, requests: usize, total: f64) -> Value {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let node = |n: &Node| {
        json!({"id": n.id, "rss_bytes": n.rss, "peak_rss_bytes": n.hwm, "state_file_bytes": n.state_file,
               "raft_log_bytes": n.raft_log, "data_dir_bytes": n.data_dir})
    };
    let out: Vec<Value> = steps
        .iter()
        .map(|s| {
            let sc = scale_of(s);
            let l = &s.load;
            json!({
                "people": sc.people, "events": sc.events, "members": sc.members,
                "keys": s.keys, "week_items": s.week_items,
                "recurring_series": s.recurring, "long_events": s.long,
                "load": {
                    "people_store": l.people_store.json(), "people_batched": l.people_batched.json(),
                    "events_store": l.events_store.json(), "events_batched": l.events_batched.json(),
                    "members": l.members.json(), "member_events": l.member_events.json(),
                },
                "ops": s.ops.iter().map(|(name, seq, conc)| json!({
                    "op": name, "sequential": seq.json(), "concurrent": conc.as_ref().map(Lat::json),
                })).collect::<Vec<_>>(),
                "nodes_after_people": s.nodes_after_people.iter().map(node).collect::<Vec<_>>(),
                "nodes": s.nodes.iter().map(node).collect::<Vec<_>>(),
                "state_write": s.state_write.map(|(m, n)| json!({"mean_seconds": round3(m), "writes": n})),
                "restart": s.restart.as_ref().map(|r| json!({
                    "node": r.node, "serving_seconds": round3(r.serving_s),
                    "caught_up_seconds": round3(r.caught_up_s), "rss_bytes": r.rss,
                    "leader_changed": r.leader_changed,
                    "week_views_meanwhile": probe_json(&r.probe),
                })),
                "new_member_error": s.transfer_error,
                "new_member": s.transfer.as_ref().map(|t| json!({
                    "node": t.node, "caught_up_seconds": round3(t.caught_up_s),
                    "by_snapshot": t.by_snapshot, "rss_bytes": t.rss,
                    "state_file_bytes": t.state_file,
                    "first_state_file_seconds": t.state_write_s.map(round3),
                    "leader_peak_rss_before": t.leader_hwm_before,
                    "leader_peak_rss_after": t.leader_hwm_after,
                    "leader_changed": t.leader_changed,
                    "week_views_meanwhile": probe_json(&t.probe),
                })),
            })
        })
        .collect();
    json!({
        "bench": "bench-growth",
        "date": chrono::Utc::now().to_rfc3339(),
        "commit": commit,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "requests": requests, "clients": args.clients, "run_seconds": args.run_seconds,
        "recurring_per_mille": args.recurring_per_mille, "long_per_mille": args.long_per_mille,
        "member_events": args.member_events,
        "seconds": round3(total),
        "steps": out,
    })
}
