//! agenda-db, simulated: the real raft loop, storage, state machine,
//! ReadIndex, leases, watches and dedup of five nodes, run in one thread
//! over a simulated network, disk and clock, every choice drawn from one
//! seed. The same seed replays the same run, event for event (the trace
//! digest says so); a failing seed is a bug you can step through.
//!
//! The world is a discrete-event loop ([`World::run`]): message deliveries,
//! ticks, client steps and faults are events at virtual instants, taken in
//! (time, sequence) order. A node is driven by [`Node::turn`], exactly the
//! turn its server thread runs; only its [`NodeIo`] differs (a virtual
//! clock, the simulated network, state files written inline, timeouts and
//! read contexts drawn from the seed). Its redb log sits on a [`SimDisk`]
//! that loses what was not synced at a crash; state files go to a tmpfs
//! directory (written whole, synced and renamed: they survive crashes).
//!
//! Faults, from the seed: message loss, duplication, delay and
//! reordering; partitions and their healing; crashes and restarts; slow
//! fsyncs; full disks; wall-clock jumps; tick rates that differ per node.
//!
//! Judged at the end, after healing everything: each key's history is
//! linearizable (the checker of the real-process tests, with a final
//! linearizable read per key, so every acknowledged write must survive);
//! all replicas hold byte-identical state; every node's watch saw each
//! revision once and in order, the same events at each; leases left to
//! expire are gone; no node failed except through an injected full disk.
//!
//! Beside the register clients, three candidates run the leader election
//! of `agenda_common::election` ([`elector`]); no two may act at once.
//!
//! Layout: [`rng`] (the seeded generator), [`disk`] (the redb backend),
//! [`elector`] (the election's candidates), this file (the world, its
//! nodes, network, clients and checks).

pub mod disk;
pub mod elector;
pub mod rng;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_db::clock::Clock;
use agenda_db::metrics::Metrics;
use agenda_db::node::{Node, NodeConfig, NodeHandle, NodeIo, Peers, Reintroduced, Request};
use agenda_db::published::Published;
use agenda_db::recovery::{create_tables, recover_files, Start};
use agenda_db::state_file::StateFiles;
use agenda_db::state_machine::{range_at, ReadView};
use agenda_db::watch::{RevisionEvents, WatchHub};
use agenda_proto::db::{
    DeleteRequest, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest,
};
use agenda_proto::raft::{command, command_result, Command, CommandResult, MemberChange};
use prost::Message as _;
use raft::prelude::{Message, MessageType};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, oneshot};

pub use disk::SimDisk;
use elector::{Elector, ELECTORS};
pub use rng::Rng;

use crate::linearizability::{self, Op, Operation, Outcome};
use crate::scenario::{Scenario, Step, Target};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const TOKEN: &str = "sim";
/// The wall clock's start: any fixed instant (2026-01-01).
const WALL_START_MS: u64 = 1_767_225_600_000;
/// Keys of the register workload.
const KEYS: usize = 3;
/// A member the workload adds and removes (never started: a voter that
/// never answers, which the others must do without).
const GHOST: u64 = 6;
/// A lease the workload grants lives this long without a keep-alive.
const LEASE_TTL_MS: i64 = 1_500;
/// The healed cluster keeps serving the workload this long before it
/// stops; reads called after [`CALM_WARMUP`] of it must take at most
/// [`CALM_READ_LIMIT`].
const CALM: u64 = 4 * SEC;
/// Time for restarted nodes to catch up after the heal.
const CALM_WARMUP: u64 = 2 * SEC;
/// Longest a linearizable read may take on a healthy cluster: a read that
/// waits for a ReadIndex round that never comes (colliding contexts) takes
/// a retry, over a second.
const CALM_READ_LIMIT: u64 = 500 * MS;

/// What one run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes of the cluster.
    pub nodes: u64,
    /// Register clients.
    pub clients: usize,
    /// Virtual time of the faulty phase.
    pub duration: Duration,
    /// Inject faults (crashes, partitions, slow and full disks, jumps).
    pub faults: bool,
    /// Old defects to put back (see [`Reintroduced`]).
    pub reintroduced: Reintroduced,
    /// Print the trace (virtual ns, then the event) to stderr as it goes.
    pub print_trace: bool,
    /// Client 1 adds and removes a member that never starts (a scenario
    /// that kills two of five would lose its quorum to it).
    pub member_changes: bool,
    /// Test-only defect in the election: a leader acts until a call says
    /// its lease is gone, not until its deadline.
    pub election_ignores_deadline: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 5,
            clients: 4,
            duration: Duration::from_secs(20),
            faults: true,
            reintroduced: Reintroduced::default(),
            print_trace: false,
            member_changes: true,
            election_ignores_deadline: false,
        }
    }
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Register operations judged by the linearizability checker.
    pub ops_checked: usize,
    /// Operations acknowledged (writes and successful compare-and-sets).
    pub acked_writes: usize,
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Times some node saw a new leader.
    pub leader_changes: u64,
    /// Linearizable reads a leader answered under its read lease.
    pub lease_reads: u64,
    /// Watches told to resume elsewhere because their node caught up by
    /// snapshot.
    pub watch_resumes: u64,
    /// Times a candidate of the election was elected.
    pub elections: u64,
    /// Events processed.
    pub events: u64,
    /// SHA-256 of the whole trace (hex): the same seed always gives the
    /// same digest.
    pub digest: String,
    /// The first property violated, if any.
    pub violation: Option<String>,
}

/// The simulated time, shared by every node's clock.
#[derive(Debug)]
struct SimClock {
    base: Instant,
    now_ns: Arc<AtomicU64>,
    /// This node's wall clock minus the true one (jumps move it).
    wall_skew_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.now_ns.load(Ordering::Relaxed))
    }

    fn wall_ms(&self) -> u64 {
        let t = WALL_START_MS + self.now_ns.load(Ordering::Relaxed) / MS;
        t.saturating_add_signed(self.wall_skew_ms.load(Ordering::Relaxed))
    }
}

/// Messages nodes sent during a turn, for the world to route.
type Outbox = Arc<Mutex<Vec<Message>>>;

struct SimPeers {
    out: Outbox,
}

impl Peers for SimPeers {
    fn send(&self, msgs: Vec<Message>) {
        self.out.lock().expect("outbox").extend(msgs);
    }

    fn set_members(&self, _: &BTreeMap<u64, String>) {}
}

/// A running node and what the world holds of it.
struct Up {
    node: Node,
    handle: NodeHandle,
    view: Published<ReadView>,
    watch: broadcast::Receiver<Arc<RevisionEvents>>,
    /// Last revision this incarnation's watch saw.
    last_rev: Option<i64>,
}

struct SimNode {
    id: u64,
    disk: SimDisk,
    dir: PathBuf,
    skew: Arc<AtomicI64>,
    up: Option<Up>,
    /// Until when (ns) each fsync delays what the node sends.
    slow_until: u64,
    full_until: u64,
    /// Tick length of this node (drift between nodes).
    tick_ns: u64,
    last_leader: u64,
    /// Lease reads counted by this node's incarnations.
    incarnations: Vec<Metrics>,
}

enum Event {
    Deliver(Box<Message>),
    SnapshotReport { to: u64, peer: u64, ok: bool },
    Tick(u64),
    Client(usize),
    Elector(usize),
    Fault,
    Restart(u64),
    Heal,
}

/// One register operation in flight.
struct InFlight {
    key: usize,
    op: Op,
    call: u64,
    /// Give up and try another node after this.
    attempt_deadline: u64,
    /// Give up for good (outcome unknown) after this.
    final_deadline: u64,
    wait: Wait,
    cmd: Option<Command>,
}

enum Wait {
    Proposal(oneshot::Receiver<agenda_db::Result<CommandResult>>),
    Read(u64, oneshot::Receiver<agenda_db::Result<()>>),
    /// Between attempts.
    Retry,
}

struct Client {
    id: u64,
    rng: Rng,
    n: u64,
    last_seen: [Option<Vec<u8>>; KEYS],
    busy: Option<InFlight>,
}

/// Leases the lease client granted: id → last time it was kept alive.
#[derive(Default)]
struct Leases {
    kept: BTreeMap<i64, u64>,
    next: i64,
}

/// The simulated cluster and everything it records.
pub struct World {
    cfg: SimConfig,
    rng: Rng,
    now: Arc<AtomicU64>,
    base: Instant,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    outbox: Outbox,
    /// Pairs of nodes that cannot talk.
    cut: BTreeSet<(u64, u64)>,
    /// Nodes a scenario froze (cut off, not ticking).
    frozen: BTreeSet<u64>,
    clients: Vec<Client>,
    electors: Vec<Elector>,
    history: Vec<Vec<Operation>>,
    leases: Leases,
    /// Events at each revision, by digest, as the first watch saw them.
    revisions: BTreeMap<i64, [u8; 32]>,
    trace: Sha256,
    violation: Option<String>,
    stopping: bool,
    /// When the faults ended and everything was healed.
    calm_since: Option<u64>,
    _tmp: tempfile::TempDir,
    report: Report,
}

fn members(n: u64) -> BTreeMap<u64, String> {
    (1..=n).map(|id| (id, format!("sim-{id}"))).collect()
}

fn events_digest(ev: &RevisionEvents) -> [u8; 32] {
    let mut h = Sha256::new();
    for e in ev.events.iter() {
        h.update(e.encode_to_vec());
    }
    h.finalize().into()
}

impl World {
    /// A cluster for `seed`, nodes bootstrapped, nothing run yet.
    pub fn new(seed: u64, cfg: SimConfig) -> Self {
        // State files on tmpfs when there is one: they are fsynced whole.
        let tmp = tempfile::Builder::new()
            .prefix("agenda-sim-")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("temp dir");
        let mut rng = Rng::new(seed);
        let nodes = (1..=cfg.nodes)
            .map(|id| {
                let dir = tmp.path().join(format!("node-{id}"));
                std::fs::create_dir_all(&dir).expect("node dir");
                SimNode {
                    id,
                    disk: SimDisk::new(),
                    dir,
                    skew: Arc::new(AtomicI64::new(0)),
                    up: None,
                    slow_until: 0,
                    full_until: 0,
                    // Within raft's bounds: ±10% drift.
                    tick_ns: 50 * MS * rng.between(90, 110) / 100,
                    last_leader: 0,
                    incarnations: Vec::new(),
                }
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|i| Client {
                id: i as u64 + 1,
                rng: rng.fork(),
                n: 0,
                last_seen: Default::default(),
                busy: None,
            })
            .collect();
        let electors = (0..ELECTORS)
            .map(|e| Elector::new(e as u64 + 1, rng.fork()))
            .collect();
        World {
            rng,
            now: Arc::new(AtomicU64::new(0)),
            base: Instant::now(),
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            outbox: Arc::default(),
            cut: BTreeSet::new(),
            frozen: BTreeSet::new(),
            clients,
            electors,
            history: vec![Vec::new(); KEYS],
            leases: Leases::default(),
            revisions: BTreeMap::new(),
            trace: Sha256::new(),
            violation: None,
            stopping: false,
            calm_since: None,
            _tmp: tmp,
            report: Report {
                seed,
                ops_checked: 0,
                acked_writes: 0,
                crashes: 0,
                partitions: 0,
                leader_changes: 0,
                lease_reads: 0,
                watch_resumes: 0,
                elections: 0,
                events: 0,
                digest: String::new(),
                violation: None,
            },
            cfg,
        }
    }

    fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    fn at(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((t, self.seq), e);
    }

    fn trace(&mut self, line: std::fmt::Arguments<'_>) {
        let s = format!("{} {line}\n", self.now());
        if self.cfg.print_trace {
            eprint!("{s}");
        }
        self.trace.update(s.as_bytes());
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.trace(format_args!("VIOLATION {what}"));
            self.violation = Some(what);
        }
    }

    /// Runs the whole run, random faults and all, and judges it.
    pub fn run(mut self) -> Report {
        if !self.begin_run() {
            return self.finish();
        }
        if self.cfg.faults {
            let t = self.rng.between(SEC, 3 * SEC);
            self.at(t, Event::Fault);
        }
        let faulty_until = self.cfg.duration.as_nanos() as u64;
        self.run_until(faulty_until);
        self.end_run()
    }

    /// Runs `scenario`'s steps (no random faults), then heals and judges
    /// like [`World::run`].
    pub fn run_scenario(mut self, scenario: &Scenario) -> Report {
        if !self.begin_run() {
            return self.finish();
        }
        self.trace(format_args!("scenario {}", scenario.name));
        for step in scenario.steps {
            if self.violation.is_some() {
                break;
            }
            self.trace(format_args!("step {step:?}"));
            self.step(*step);
        }
        self.end_run()
    }

    /// Starts the nodes, the clients and the candidates; false if a node
    /// could not start.
    fn begin_run(&mut self) -> bool {
        for i in 0..self.nodes.len() {
            if let Err(e) = self.start(i) {
                self.fail(format!("node {} could not start: {e}", i + 1));
                return false;
            }
        }
        for c in 0..self.clients.len() {
            let t = self.rng.between(MS, 20 * MS);
            self.at(t, Event::Client(c));
        }
        self.start_electors();
        true
    }

    /// One scripted step (see [`Step`]).
    fn step(&mut self, step: Step) {
        match step {
            Step::Ops(n) => {
                let done = |w: &World| w.history.iter().map(Vec::len).sum::<usize>();
                let target = done(self) + n;
                let until = self.now() + 120 * SEC;
                while done(self) < target && self.violation.is_none() {
                    if self.now() >= until {
                        self.fail(format!("the cluster stopped serving: {n} operations did not complete in 120 virtual seconds"));
                        return;
                    }
                    let t = self.now() + 10 * MS;
                    self.run_until(t);
                }
            }
            Step::Kill(target) => {
                if let Some(id) = self.target(target) {
                    self.trace(format_args!("kill {id}"));
                    self.crash(id as usize - 1, true);
                }
            }
            Step::Freeze(target) => {
                if let Some(id) = self.target(target) {
                    self.trace(format_args!("freeze {id}"));
                    self.frozen.insert(id);
                    for other in 1..=self.cfg.nodes {
                        if other != id {
                            self.cut.insert((id, other));
                            self.cut.insert((other, id));
                        }
                    }
                }
            }
            Step::Thaw => {
                let frozen = std::mem::take(&mut self.frozen);
                self.cut
                    .retain(|(a, b)| !frozen.contains(a) && !frozen.contains(b));
            }
            Step::RestartAll => {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].up.is_none() {
                        let id = self.nodes[i].id;
                        let t = self.now() + MS;
                        self.at(t, Event::Restart(id));
                    }
                }
            }
        }
    }

    /// The node a step acts on; waits (virtual time) for a leader when
    /// there is none yet.
    fn target(&mut self, target: Target) -> Option<u64> {
        let until = self.now() + 20 * SEC;
        loop {
            let leader = self
                .nodes
                .iter()
                .filter_map(|n| n.up.as_ref().map(|u| (n.id, u.node.raft())))
                .filter(|(id, r)| {
                    r.raft.state == raft::StateRole::Leader && !self.frozen.contains(id)
                })
                .max_by_key(|(_, r)| r.raft.term)
                .map(|(id, _)| id);
            match (target, leader) {
                (Target::Leader, Some(id)) => return Some(id),
                (Target::Follower, Some(leader)) => {
                    return self
                        .up_ids()
                        .into_iter()
                        .find(|id| *id != leader && !self.frozen.contains(id))
                }
                (_, None) if self.now() < until => {
                    let t = self.now() + 10 * MS;
                    self.run_until(t);
                }
                (_, None) => {
                    self.fail("no leader for 20 virtual seconds".into());
                    return None;
                }
            }
        }
    }

    /// Heals everything, serves a calm while, stops and judges.
    fn end_run(mut self) -> Report {
        // Heal everything and keep the workload going for a calm while
        // (reads there must be quick), then let in-flight work finish and
        // read every key.
        self.calm_since = Some(self.now());
        self.heal_all();
        let calm_until = self.now() + CALM;
        self.run_until(calm_until);
        self.stopping = true;
        self.stop_electors();
        self.settle();
        if self.violation.is_none() {
            self.final_reads();
            // Every lease was last kept before the faults ended: give the
            // healed cluster time to expire them all (a restarted leader
            // counts deadlines from its start), then let what it did reach
            // every replica before judging.
            let until = self.now() + 2 * LEASE_TTL_MS as u64 * MS + 3 * SEC;
            self.run_until(until);
            self.settle();
        }
        self.finish()
    }

    /// Runs until no client waits and every replica applied the same
    /// index (at most 20 virtual seconds: the check then says which did
    /// not converge).
    fn settle(&mut self) {
        let until = self.now() + 20 * SEC;
        while self.now() < until && self.violation.is_none() {
            let step = self.now() + 100 * MS;
            self.run_until(step);
            if self.clients.iter().all(|c| c.busy.is_none()) && self.converged() {
                break;
            }
        }
    }

    fn run_until(&mut self, until: u64) {
        while let Some((&(t, seq), _)) = self.queue.first_key_value() {
            if t > until || self.violation.is_some() {
                break;
            }
            let e = self.queue.remove(&(t, seq)).expect("first event");
            self.now.store(t, Ordering::Relaxed);
            self.report.events += 1;
            self.handle(e);
        }
        if self.violation.is_none() {
            self.now.store(until.max(self.now()), Ordering::Relaxed);
        }
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Deliver(m) => {
                let (from, to) = (m.from, m.to);
                self.trace(format_args!(
                    "deliver {:?} {from}->{to} term {} index {} commit {} entries {}",
                    m.get_msg_type(),
                    m.term,
                    m.index,
                    m.commit,
                    m.entries.len()
                ));
                let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
                if self.cut.contains(&(from, to)) || !self.is_up(to) {
                    if is_snapshot {
                        self.poke(from, Some(Request::SnapshotSent { to, ok: false }), false);
                    }
                    self.poke(from, Some(Request::Unreachable(to)), false);
                    return;
                }
                self.poke(to, Some(Request::Raft(m)), false);
                if is_snapshot {
                    let t = self.now() + MS;
                    self.at(
                        t,
                        Event::SnapshotReport {
                            to: from,
                            peer: to,
                            ok: true,
                        },
                    );
                }
            }
            Event::SnapshotReport { to, peer, ok } => {
                self.poke(to, Some(Request::SnapshotSent { to: peer, ok }), false);
            }
            Event::Tick(id) => {
                let i = id as usize - 1;
                if self.nodes[i].up.is_none() {
                    return;
                }
                if self.frozen.contains(&id) {
                    // A stopped process does not tick; it resumes later.
                    let next = self.now() + self.nodes[i].tick_ns;
                    self.at(next, Event::Tick(id));
                    return;
                }
                self.trace(format_args!("tick {id}"));
                self.poke(id, None, true);
                let next = self.now() + self.nodes[i].tick_ns;
                self.at(next, Event::Tick(id));
            }
            Event::Client(c) => self.client_step(c),
            Event::Elector(e) => self.elector_step(e),
            Event::Fault => self.fault(),
            Event::Restart(id) => {
                let i = id as usize - 1;
                if self.nodes[i].up.is_some() {
                    return;
                }
                if self.nodes[i].full_until > self.now() && self.calm_since.is_none() {
                    let t = self.nodes[i].full_until + MS;
                    self.at(t, Event::Restart(id));
                    return;
                }
                self.nodes[i].disk.set_capacity(None);
                self.trace(format_args!("restart {id}"));
                if let Err(e) = self.start(i) {
                    self.fail(format!("node {id} could not restart: {e}"));
                }
            }
            Event::Heal => {
                self.trace(format_args!("heal"));
                self.cut.clear();
            }
        }
    }

    /// Starts (or restarts) node `i` from its disk and state files.
    fn start(&mut self, i: usize) -> agenda_db::Result<()> {
        let n = &self.nodes[i];
        let id = n.id;
        let db = redb::Builder::new()
            .create_with_backend(n.disk.clone())
            .map_err(redb::Error::from)?;
        create_tables(&db)?;
        let state_files = Arc::new(StateFiles::new(&n.dir, TOKEN, id));
        let start = Start {
            id,
            cluster_token: TOKEN.into(),
            history: 10_000,
            history_bytes: 64 * 1024 * 1024,
            join: false,
        };
        let rec = recover_files(
            Arc::new(db),
            state_files,
            &start,
            &members(self.cfg.nodes),
            &format!("node {id}"),
        )?;
        let view = Published::new(rec.state.view());
        let hub = WatchHub::default();
        let watch = hub.subscribe();
        let mut jitter_rng = self.rng.fork();
        let io = NodeIo {
            clock: Arc::new(SimClock {
                base: self.base,
                now_ns: self.now.clone(),
                wall_skew_ms: n.skew.clone(),
            }),
            peers: Box::new(SimPeers {
                out: self.outbox.clone(),
            }),
            state_files_inline: true,
            first_read_ctx: self.rng.next_u64(),
            election_jitter: Some(Box::new(move |e| e + jitter_rng.below(e as u64) as usize)),
            max_queued_requests: 4096,
            reintroduced: self.cfg.reintroduced,
            handle: None,
        };
        let metrics = Metrics::new(id);
        let node_cfg = NodeConfig {
            id,
            tick: Duration::from_nanos(n.tick_ns),
            election_ticks: 10,
            heartbeat_ticks: 2,
            // Small, so runs compact their logs and send snapshots.
            snapshot_threshold: 200,
            // State files now and then: most of a restart comes from the
            // log, as in a server.
            state_sync: Duration::from_secs(2),
            state_sync_bytes: 32 * 1024,
        };
        let (node, handle) = Node::new(
            node_cfg,
            rec.storage,
            rec.log_db,
            rec.state_files,
            rec.state,
            view.clone(),
            rec.snapshot_source,
            hub,
            io,
            metrics.clone(),
        )?;
        let tick = self.now() + self.nodes[i].tick_ns;
        self.nodes[i].incarnations.push(metrics.clone());
        self.nodes[i].up = Some(Up {
            node,
            handle,
            view,
            watch,
            last_rev: None,
        });
        self.at(tick, Event::Tick(id));
        Ok(())
    }

    /// Hands node `id` a request (if any) and runs one turn of its loop.
    fn poke(&mut self, id: u64, req: Option<Request>, tick: bool) {
        if !self.is_up(id) {
            return;
        }
        let i = id as usize - 1;
        if self.nodes[i].full_until <= self.now() {
            self.nodes[i].disk.set_capacity(None);
        }
        let syncs = self.nodes[i].disk.syncs();
        let Some(up) = self.nodes[i].up.as_mut() else {
            return;
        };
        if let Some(r) = req {
            let _ = up.handle.send(r);
        }
        let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| up.node.turn(tick)));
        let result = match turn {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                self.fail(format!("node {id} panicked: {what}"));
                // Its state is unknown now: it goes down for good.
                if let Some(up) = self.nodes[i].up.take() {
                    std::mem::forget(up);
                }
                return;
            }
        };
        let leader = up.node.raft().raft.leader_id;
        if leader != self.nodes[i].last_leader {
            self.nodes[i].last_leader = leader;
            if leader != 0 {
                self.report.leader_changes += 1;
                self.trace(format_args!("node {id} sees leader {leader}"));
            }
        }
        let synced = self.nodes[i].disk.syncs() > syncs;
        match result {
            Ok(None) => {}
            Ok(Some(exit)) => {
                self.trace(format_args!("node {id} exited: {exit:?}"));
                self.crash(i, false);
            }
            Err(e) => {
                let full = self.nodes[i].full_until > self.now();
                self.trace(format_args!("node {id} failed: {e}"));
                if !full {
                    self.fail(format!("node {id} failed without an injected fault: {e}"));
                }
                self.crash(i, false);
                let t = self.nodes[i].full_until.max(self.now()) + 100 * MS;
                self.at(t, Event::Restart(id));
            }
        }
        self.watch(i);
        let extra = if synced && self.nodes[i].slow_until > self.now() {
            self.rng.between(20 * MS, 200 * MS)
        } else {
            0
        };
        self.route(extra);
    }

    /// Sends what nodes put in the outbox: delayed, sometimes lost,
    /// duplicated, or reordered (delays differ per message).
    fn route(&mut self, extra: u64) {
        let msgs = std::mem::take(&mut *self.outbox.lock().expect("outbox"));
        // Healed means healed: no loss or delay spikes either.
        let faulty = self.cfg.faults && self.calm_since.is_none();
        for m in msgs {
            if faulty && self.rng.chance(10_000) && m.get_msg_type() != MessageType::MsgSnapshot {
                self.trace(format_args!(
                    "lose {:?} {}->{}",
                    m.get_msg_type(),
                    m.from,
                    m.to
                ));
                continue;
            }
            let copies = if faulty && self.rng.chance(5_000) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = if faulty && self.rng.chance(20_000) {
                    self.rng.between(50 * MS, 300 * MS)
                } else {
                    self.rng.between(MS / 2, 5 * MS)
                };
                let t = self.now() + delay + extra;
                self.at(t, Event::Deliver(Box::new(m.clone())));
            }
        }
    }

    /// Checks what node `i`'s watch saw since the last look.
    fn watch(&mut self, i: usize) {
        let id = self.nodes[i].id;
        loop {
            let Some(up) = self.nodes[i].up.as_mut() else {
                return;
            };
            let ev = match up.watch.try_recv() {
                Ok(ev) => ev,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.fail(format!("node {id}'s watch lagged by {n} revisions"));
                    return;
                }
                Err(_) => return,
            };
            if let Some(last) = up.last_rev {
                // A node that caught up by snapshot skips revisions: its
                // watchers are then told to resume elsewhere (service.rs),
                // which is right only if it truly no longer has them.
                if ev.revision > last + 1 && up.node.state().compact_revision > last {
                    self.report.watch_resumes += 1;
                } else if ev.revision != last + 1 {
                    let msg = format!(
                        "node {id}'s watch saw revision {} after {last} (each revision once, in order)",
                        ev.revision
                    );
                    self.fail(msg);
                    return;
                }
            }
            up.last_rev = Some(ev.revision);
            let d = events_digest(&ev);
            match self.revisions.get(&ev.revision) {
                Some(seen) if *seen != d => {
                    let msg = format!(
                        "revision {} has different events on node {id} than on another node",
                        ev.revision
                    );
                    self.fail(msg);
                    return;
                }
                Some(_) => {}
                None => {
                    self.revisions.insert(ev.revision, d);
                }
            }
        }
    }

    fn crash(&mut self, i: usize, count: bool) {
        let Some(up) = self.nodes[i].up.take() else {
            return;
        };
        up.node.crash();
        self.nodes[i].disk = self.nodes[i].disk.crash();
        if count {
            self.report.crashes += 1;
        }
    }

    /// Whether `id` is a running node (the ghost member never is).
    fn is_up(&self, id: u64) -> bool {
        (1..=self.nodes.len() as u64).contains(&id) && self.nodes[id as usize - 1].up.is_some()
    }

    fn up_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.up.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Injects one fault and schedules the next.
    fn fault(&mut self) {
        if self.calm_since.is_some() {
            return;
        }
        let n = self.cfg.nodes;
        let down = n as usize - self.up_ids().len();
        match self.rng.below(7) {
            // Crash a node, or two at the same instant (a shared power
            // cut), at most a minority at once.
            0 | 1 if down < (n as usize - 1) / 2 => {
                let room = (n as usize - 1) / 2 - down;
                let count = if room >= 2 && self.rng.below(3) == 0 {
                    2
                } else {
                    1
                };
                for _ in 0..count {
                    let ups = self.up_ids();
                    let id = ups[self.rng.below(ups.len() as u64) as usize];
                    self.trace(format_args!("crash {id}"));
                    self.crash(id as usize - 1, true);
                    let t = self.now() + self.rng.between(200 * MS, 3 * SEC);
                    self.at(t, Event::Restart(id));
                }
            }
            // Partition: one node alone, or a split.
            2 | 3 => {
                let mut ids: Vec<u64> = (1..=n).collect();
                for k in (1..ids.len()).rev() {
                    let j = self.rng.below(k as u64 + 1) as usize;
                    ids.swap(k, j);
                }
                let side = 1 + self.rng.below(n / 2) as usize;
                let (a, b) = ids.split_at(side);
                self.trace(format_args!("partition {a:?} | {b:?}"));
                for x in a {
                    for y in b {
                        self.cut.insert((*x, *y));
                        self.cut.insert((*y, *x));
                    }
                }
                self.report.partitions += 1;
                let t = self.now() + self.rng.between(300 * MS, 4 * SEC);
                self.at(t, Event::Heal);
            }
            // Slow fsyncs on one node for a while.
            4 => {
                let id = 1 + self.rng.below(n);
                let until = self.now() + self.rng.between(SEC, 5 * SEC);
                self.trace(format_args!("slow disk {id}"));
                self.nodes[id as usize - 1].slow_until = until;
            }
            // A full disk on one node for a while: its next log write
            // fails and the node stops; it restarts once there is space.
            5 if down < (n as usize - 1) / 2 => {
                let id = 1 + self.rng.below(n);
                let i = id as usize - 1;
                if self.nodes[i].up.is_some() {
                    let until = self.now() + self.rng.between(SEC, 4 * SEC);
                    self.trace(format_args!("full disk {id}"));
                    let used = self.nodes[i].disk.used();
                    self.nodes[i].disk.set_capacity(Some(used));
                    self.nodes[i].full_until = until;
                }
            }
            // The wall clock of one node jumps (raft never reads it).
            _ => {
                let id = 1 + self.rng.below(n);
                let jump = self.rng.between(0, 120_000) as i64 - 60_000;
                self.trace(format_args!("clock jump {id} {jump} ms"));
                self.nodes[id as usize - 1]
                    .skew
                    .store(jump, Ordering::Relaxed);
            }
        }
        if self.rng.below(3) == 0 {
            self.elector_fault();
        }
        let t = self.now() + self.rng.between(500 * MS, 2 * SEC);
        self.at(t, Event::Fault);
    }

    fn heal_all(&mut self) {
        self.cut.clear();
        self.frozen.clear();
        for i in 0..self.nodes.len() {
            self.nodes[i].full_until = 0;
            self.nodes[i].slow_until = 0;
            self.nodes[i].disk.set_capacity(None);
            if self.nodes[i].up.is_none() {
                let id = self.nodes[i].id;
                let t = self.now() + MS;
                self.at(t, Event::Restart(id));
            }
        }
    }

    /// Every node up, at the same applied index, which is the leader's
    /// commit index.
    fn converged(&self) -> bool {
        let Some(states) = self
            .nodes
            .iter()
            .map(|n| n.up.as_ref().map(|u| u.node.raft().raft.raft_log.committed))
            .collect::<Option<Vec<u64>>>()
        else {
            return false;
        };
        let applied: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.up.as_ref().map_or(0, |u| u.node.state().applied.0))
            .collect();
        let max = *states.iter().max().unwrap_or(&0);
        applied.iter().all(|a| *a == max)
    }

    fn pick_node(&mut self, rng_from_client: u64) -> Option<u64> {
        let ups = self.up_ids();
        if ups.is_empty() {
            return None;
        }
        Some(ups[(rng_from_client % ups.len() as u64) as usize])
    }

    fn propose(
        &mut self,
        id: u64,
        cmd: Command,
    ) -> oneshot::Receiver<agenda_db::Result<CommandResult>> {
        let (tx, rx) = oneshot::channel();
        self.poke(id, Some(Request::Propose { cmd, reply: tx }), false);
        rx
    }

    fn command(&mut self, client: u64, n: u64, op: command::Op) -> Command {
        Command {
            request_id: format!("c{client}-{n}"),
            proposed_at_ms: WALL_START_MS + self.now() / MS,
            op: Some(op),
            caller_role: String::new(),
        }
    }

    fn client_step(&mut self, c: usize) {
        let now = self.now();
        if let Some(mut f) = self.clients[c].busy.take() {
            let done = self.poll(c, &mut f);
            if !done {
                self.clients[c].busy = Some(f);
            }
        } else if !self.stopping {
            self.begin(c);
        }
        if !self.stopping || self.clients[c].busy.is_some() {
            let t = now + self.clients[c].rng.between(2 * MS, 20 * MS);
            self.at(t, Event::Client(c));
        }
    }

    /// Starts a new operation of client `c`.
    fn begin(&mut self, c: usize) {
        let now = self.now();
        let (cid, n) = (self.clients[c].id, self.clients[c].n);
        self.clients[c].n += 1;
        let roll = self.clients[c].rng.below(100);
        // One client also keeps leases and changes membership.
        if cid == 1 && roll < 8 {
            self.lease_step(c);
            return;
        }
        if cid == 1 && roll < 10 && self.cfg.member_changes {
            let add = self.clients[c].rng.below(2) == 0;
            let change = MemberChange {
                id: GHOST,
                addr: format!("sim-{GHOST}"),
                request_id: format!("m{cid}-{n}"),
                proposed_at_ms: WALL_START_MS + now / MS,
            };
            let pick = self.clients[c].rng.next_u64();
            if let Some(id) = self.pick_node(pick) {
                let (tx, _rx) = oneshot::channel();
                self.trace(format_args!("member change add={add} via {id}"));
                self.poke(
                    id,
                    Some(Request::MemberChange {
                        change,
                        add,
                        reply: tx,
                    }),
                    false,
                );
            }
            return;
        }
        let key = self.clients[c].rng.below(KEYS as u64) as usize;
        let k = format!("k{key}").into_bytes();
        let value = format!("{cid}-{n}").into_bytes();
        let (op, cmd) = match roll {
            0..=34 => (
                Op::Write(Some(value.clone())),
                Some(command::Op::Put(PutRequest {
                    key: k,
                    value,
                    ..Default::default()
                })),
            ),
            35..=44 => (
                Op::Write(None),
                Some(command::Op::Delete(DeleteRequest {
                    key: k,
                    ..Default::default()
                })),
            ),
            45..=64 => {
                let expect = self.clients[c].last_seen[key].clone();
                (
                    Op::Cas {
                        expect: expect.clone(),
                        new: Some(value.clone()),
                    },
                    Some(command::Op::Txn(crate::register::cas_txn(
                        &k, &expect, value,
                    ))),
                )
            }
            _ => (Op::Read, None),
        };
        let cmd = cmd.map(|op| self.command(cid, n, op));
        let mut f = InFlight {
            key,
            op,
            call: now,
            attempt_deadline: 0,
            final_deadline: now + 8 * SEC,
            wait: Wait::Retry,
            cmd,
        };
        self.attempt(c, &mut f);
        self.clients[c].busy = Some(f);
    }

    /// Sends (or sends again, same request id) an operation to some node.
    fn attempt(&mut self, c: usize, f: &mut InFlight) {
        let pick = self.clients[c].rng.next_u64();
        let Some(id) = self.pick_node(pick) else {
            f.wait = Wait::Retry;
            return;
        };
        f.attempt_deadline = self.now() + SEC;
        f.wait = match &f.cmd {
            Some(cmd) => Wait::Proposal(self.propose(id, cmd.clone())),
            None => {
                let (tx, rx) = oneshot::channel();
                self.poke(id, Some(Request::ReadIndex { reply: tx }), false);
                Wait::Read(id, rx)
            }
        };
    }

    /// Looks at an operation in flight; true once it is done.
    fn poll(&mut self, c: usize, f: &mut InFlight) -> bool {
        let now = self.now();
        let outcome = match &mut f.wait {
            Wait::Proposal(rx) => match rx.try_recv() {
                Ok(Ok(res)) => Some(proposal_outcome(&f.op, res)),
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => None,
                Err(oneshot::error::TryRecvError::Empty) if now < f.attempt_deadline => {
                    return false;
                }
                Err(oneshot::error::TryRecvError::Empty) => None,
            },
            Wait::Read(id, rx) => match rx.try_recv() {
                Ok(Ok(())) => {
                    let i = *id as usize - 1;
                    match self.nodes[i].up.as_ref() {
                        Some(up) => {
                            let view = up.view.load();
                            let key = format!("k{}", f.key).into_bytes();
                            let r = range_at(
                                &view,
                                &RangeRequest {
                                    key,
                                    ..Default::default()
                                },
                            );
                            r.ok()
                                .map(|r| Outcome::Read(r.kvs.first().map(|kv| kv.value.clone())))
                        }
                        None => None,
                    }
                }
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => None,
                Err(oneshot::error::TryRecvError::Empty) if now < f.attempt_deadline => {
                    return false;
                }
                Err(oneshot::error::TryRecvError::Empty) => None,
            },
            Wait::Retry => None,
        };
        let cid = self.clients[c].id;
        match outcome {
            Some(outcome) => {
                if let Outcome::Read(v) = &outcome {
                    self.clients[c].last_seen[f.key] = v.clone();
                    let calm = self.calm_since.is_some_and(|h| f.call >= h + CALM_WARMUP);
                    if calm && now - f.call > CALM_READ_LIMIT {
                        self.fail(format!(
                            "a linearizable read took {} ms on a healthy cluster",
                            (now - f.call) / MS
                        ));
                    }
                }
                if matches!(outcome, Outcome::Write | Outcome::Cas(true)) {
                    self.report.acked_writes += 1;
                }
                self.trace(format_args!("client {cid} {:?} -> {outcome:?}", f.op));
                self.history[f.key].push(Operation {
                    client: cid,
                    call: f.call,
                    ret: Some(now),
                    op: f.op.clone(),
                    outcome,
                });
                true
            }
            None if now >= f.final_deadline => {
                self.trace(format_args!("client {cid} {:?} -> unknown", f.op));
                // A read that never returned had no effect: left out.
                if f.cmd.is_some() {
                    self.history[f.key].push(Operation {
                        client: cid,
                        call: f.call,
                        ret: None,
                        op: f.op.clone(),
                        outcome: Outcome::Unknown,
                    });
                }
                true
            }
            None => {
                self.attempt(c, f);
                false
            }
        }
    }

    /// Grants a lease with a key on it, keeps one alive, or lets one go.
    fn lease_step(&mut self, c: usize) {
        let now = self.now();
        let (cid, n) = (self.clients[c].id, self.clients[c].n);
        let pick = self.clients[c].rng.next_u64();
        let Some(id) = self.pick_node(pick) else {
            return;
        };
        let live: Vec<i64> = self.leases.kept.keys().copied().collect();
        let op = if live.is_empty() || self.clients[c].rng.below(3) == 0 {
            self.leases.next += 1;
            let lease = 1000 + self.leases.next;
            self.leases.kept.insert(lease, now);
            // The grant and its key in one go: the put is refused if the
            // grant was lost, which the final check allows for.
            let grant = self.command(
                cid,
                n,
                command::Op::LeaseGrant(LeaseGrantRequest {
                    id: lease,
                    ttl_ms: LEASE_TTL_MS,
                    ..Default::default()
                }),
            );
            // Fire and forget: the final check judges what became of it.
            drop(self.propose(id, grant));
            command::Op::Put(PutRequest {
                key: format!("lease/{lease}").into_bytes(),
                value: b"held".to_vec(),
                lease,
                ..Default::default()
            })
        } else {
            let lease = live[self.clients[c].rng.below(live.len() as u64) as usize];
            self.leases.kept.insert(lease, now);
            command::Op::LeaseKeepAlive(LeaseKeepAliveRequest {
                id: lease,
                ..Default::default()
            })
        };
        let mut cmd = self.command(cid, n, op);
        cmd.request_id.push_str("-l");
        self.trace(format_args!("lease step via {id}: {:?}", cmd.op));
        drop(self.propose(id, cmd));
    }

    /// A linearizable read of every key through the settled cluster, so a
    /// lost acknowledged write shows in the history.
    fn final_reads(&mut self) {
        for key in 0..KEYS {
            let c = 0;
            let mut f = InFlight {
                key,
                op: Op::Read,
                call: self.now(),
                attempt_deadline: 0,
                final_deadline: self.now() + 10 * SEC,
                wait: Wait::Retry,
                cmd: None,
            };
            self.attempt(c, &mut f);
            let until = self.now() + 10 * SEC;
            loop {
                let step = self.now() + 5 * MS;
                self.run_until(step);
                if self.poll(c, &mut f) {
                    break;
                }
                if self.now() >= until || self.violation.is_some() {
                    self.fail(format!("the final read of k{key} never completed"));
                    return;
                }
            }
        }
    }

    /// Judges the run.
    fn finish(mut self) -> Report {
        if self.violation.is_none() {
            self.check();
        }
        self.report.violation = self.violation.clone();
        self.report.lease_reads = self
            .nodes
            .iter()
            .flat_map(|n| &n.incarnations)
            .map(|m| m.lease_reads.get())
            .sum();
        self.report.digest = hex(&self.trace.clone().finalize());
        self.report
    }

    fn check(&mut self) {
        // Replicas agree.
        let mut states = Vec::new();
        for n in &self.nodes {
            let Some(up) = n.up.as_ref() else {
                self.fail(format!("node {} is not up at the end", n.id));
                return;
            };
            let sm = up.node.state();
            let mut data = sm.snapshot_data();
            data.dedup.sort_by(|a, b| a.request_id.cmp(&b.request_id));
            // A result's header names the node and term that answered it:
            // replicas differ there by design. When and what was recorded
            // must agree.
            for d in &mut data.dedup {
                if let Some(applied) = d.applied.as_mut() {
                    applied.result = None;
                }
            }
            data.leases.sort_by_key(|l| l.id);
            let digest: [u8; 32] = Sha256::digest(data.encode_to_vec()).into();
            states.push((n.id, sm.applied.0, digest, data));
        }
        let (_, applied0, digest0, data0) = states[0].clone();
        for (id, applied, digest, data) in &states[1..] {
            if *applied != applied0 {
                self.fail(format!(
                    "replicas did not converge: node 1 applied {applied0}, node {id} {applied}"
                ));
                return;
            }
            if *digest != digest0 {
                self.fail(format!(
                    "replicas diverged at applied index {applied}: node 1 and node {id} differ (keys {} vs {}, dedup records {} vs {}, leases {} vs {})",
                    data0.kvs.len(),
                    data.kvs.len(),
                    data0.dedup.len(),
                    data.dedup.len(),
                    data0.leases.len(),
                    data.leases.len()
                ));
                return;
            }
        }
        // Leases left alone long enough are gone, and their keys with them.
        if let Some(l) = data0.leases.first() {
            let msg = format!(
                "lease {} outlived its TTL: nothing kept it alive for {} s after the faults ended",
                l.id,
                (2 * LEASE_TTL_MS as u64 + 3_000) / 1_000
            );
            self.fail(msg);
            return;
        }
        for kv in &data0.kvs {
            if kv.lease != 0 && !data0.leases.iter().any(|l| l.id == kv.lease) {
                let msg = format!(
                    "{} is attached to lease {}, which is gone",
                    String::from_utf8_lossy(&kv.key),
                    kv.lease
                );
                self.fail(msg);
                return;
            }
        }
        // Each key's history is linearizable.
        for key in 0..KEYS {
            let h = std::mem::take(&mut self.history[key]);
            self.report.ops_checked += h.len();
            if let Err(v) = linearizability::check(None, &h) {
                self.fail(format!("k{key}: not linearizable: {v}"));
                return;
            }
        }
    }
}

/// What a client observed from a proposal's result.
fn proposal_outcome(op: &Op, res: CommandResult) -> Outcome {
    match (op, res.result) {
        (Op::Cas { .. }, Some(command_result::Result::Txn(t))) => Outcome::Cas(t.succeeded),
        (
            Op::Write(_),
            Some(command_result::Result::Put(_) | command_result::Result::Delete(_)),
        ) => Outcome::Write,
        // An error result (refused by the state machine) is an answer that
        // it had no effect; not expected from this workload.
        _ => Outcome::Unknown,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `seed` with `cfg`.
pub fn run(seed: u64, cfg: &SimConfig) -> Report {
    World::new(seed, cfg.clone()).run()
}

/// Runs `scenario` (its steps instead of random faults) with `seed`.
pub fn run_scenario(seed: u64, cfg: &SimConfig, scenario: &Scenario) -> Report {
    let cfg = SimConfig {
        faults: false,
        member_changes: false,
        ..cfg.clone()
    };
    World::new(seed, cfg).run_scenario(scenario)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> SimConfig {
        SimConfig {
            duration: Duration::from_secs(6),
            ..SimConfig::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_and_different_seeds_differ() {
        let a = run(11, &short());
        let b = run(11, &short());
        let c = run(12, &short());
        assert!(a.violation.is_none(), "{:?}", a.violation);
        assert!(c.violation.is_none(), "{:?}", c.violation);
        assert!(a.ops_checked > 50, "{a:?}");
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.events, b.events);
        assert_ne!(a.digest, c.digest);
    }
}
