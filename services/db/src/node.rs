//! The raft node: one thread owns the `RawNode`, the state machine and the
//! write side of the log file.
//!
//! Each turn of the loop drains the mailbox into raft (`step`, `propose`,
//! `read_index`), ticks, then handles one `Ready` in the order raft-rs
//! documents: send the leader's messages, install a snapshot, append new
//! entries and save the hard state in ONE log-file transaction (one fsync
//! however many proposals arrived meanwhile: group commit), apply committed
//! entries to the in-memory state and publish it to readers, send the
//! messages that must wait for persistence, advance, and apply what the
//! advance committed. Once enough log was applied to pay for it, a copy of
//! the state goes to the state-file thread (`state_file.rs`); the log is
//! compacted only up to what a state file covers.
//!
//! A storage error ends the loop with an error: the node stops rather than
//! continue with a state it could not persist.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_proto::db::{LeaseRevokeRequest, MemberChangeResponse};
use agenda_proto::raft::{command, command_result, Command, CommandResult, MemberChange};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole, INVALID_ID};
use redb::{Database, Durability};

use crate::state_file::{Background, StateFiles};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::lease::LeaseClock;
use crate::metrics::Metrics;
use crate::state_machine::{Effects, LeaseEffect, Published, ReadView, StateMachine};
use crate::storage::RaftStorage;
use crate::transport::Transport;
use crate::watch::WatchHub;

/// Largest command accepted into the log.
pub const MAX_COMMAND_BYTES: usize = 2 * 1024 * 1024;
/// Mailbox items handled per loop turn before ticking and persisting, so a
/// flood of requests cannot starve heartbeats.
const DRAIN_BATCH: usize = 8192;
/// Log entries removed per log-file transaction. A state file can let a
/// few hundred thousand entries go at once; removing 390,000 in one
/// transaction took 55 ms of the raft thread (redb deletes them one by
/// one), in steps of this size about 1 ms per turn.
const COMPACT_STEP: u64 = 4096;
/// A loop turn longer than this is logged: heartbeats and answers waited.
const SLOW_TURN: Duration = Duration::from_millis(500);
/// Read batches whose ReadIndex never came back are dropped after this
/// (their callers retry).
const READ_INDEX_GIVE_UP: Duration = Duration::from_secs(3);
/// Longest a new state waits before readers' view is replaced when no
/// reader asks for it sooner. A publish makes the next writes copy the tree
/// nodes they touch, so under a write load the view is replaced at this
/// pace, not after every batch: 250 ms instead of 20 ms gave 7-24% more
/// writes/s at 512 clients (interleaved runs of the `make bench-db` write
/// workload; freeing replaced nodes alone was 7% of a node's CPU). A
/// linearizable read or a watch start that needs a newer view gets one at
/// once, and a stale read one at most [`STALE_READ_BOUND`] behind.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// How far behind this node's applied state a `stale` read may be.
pub const STALE_READ_BOUND: Duration = Duration::from_millis(20);

/// Timing and log-size knobs of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub id: u64,
    /// Raft tick length.
    pub tick: Duration,
    /// Election timeout in ticks (randomized up to twice that).
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Compact the log once it holds this many applied entries.
    pub snapshot_threshold: u64,
    /// Least time between two state files.
    pub state_sync: Duration,
    /// Log bytes that pay for a state file (see `Config::state_sync_bytes`).
    pub state_sync_bytes: u64,
}

/// Something for the node loop to do.
pub enum Request {
    /// Replicate and apply a client command.
    Propose {
        /// The command (with a non-empty request id).
        cmd: Command,
        /// Gets the first result of this request id.
        reply: oneshot::Sender<Result<CommandResult>>,
    },
    /// Add (`add`) or remove a member.
    MemberChange {
        /// Who, and the request id.
        change: MemberChange,
        /// Add or remove.
        add: bool,
        /// Gets the resulting member list.
        reply: oneshot::Sender<Result<CommandResult>>,
    },
    /// Answers once this node has applied everything committed when the
    /// request arrived (raft ReadIndex): a linearizable read may follow.
    ReadIndex {
        /// Fires when reading locally is safe.
        reply: oneshot::Sender<Result<()>>,
    },
    /// A message from a peer.
    Raft(Box<Message>),
    /// Status snapshot for the Cluster API.
    Status {
        /// Receives the status.
        reply: oneshot::Sender<Status>,
    },
    /// The transport finished (or failed) sending a snapshot.
    SnapshotSent {
        /// Peer id.
        to: u64,
        /// Whether it went out.
        ok: bool,
    },
    /// The transport could not reach a peer.
    Unreachable(u64),
    /// Replace readers' view by the current state now.
    Publish {
        /// Fires once the view is current.
        reply: oneshot::Sender<()>,
    },
    /// Nothing to do: wakes the loop so it notices a stop request.
    Wake,
}

/// Status of the node, as the Cluster API reports it.
#[derive(Debug, Clone)]
pub struct Status {
    /// Node id.
    pub id: u64,
    /// Known leader, 0 if none.
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Raft role.
    pub role: &'static str,
    /// Members and their addresses.
    pub members: BTreeMap<u64, String>,
    /// Current revision.
    pub revision: i64,
    /// Oldest revision still in history.
    pub compact_revision: i64,
    /// Voters of raft's own configuration.
    pub voters: Vec<u64>,
}

/// Values the serving side reads without a round trip to the loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// Current leader id (0: none).
    pub leader: AtomicU64,
    /// Current term.
    pub term: AtomicU64,
    /// Newest revision sent to watchers (can be ahead of the revision of
    /// readers' view).
    pub delivered_revision: AtomicI64,
    /// False once the loop has ended (stopped, removed or failed).
    pub running: AtomicBool,
    /// Set to ask the loop to stop.
    pub stop: AtomicBool,
}

/// How the loop ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Stopped,
    /// This node was removed from the cluster.
    Removed,
}

/// Handle to talk to the node loop from async code.
#[derive(Clone)]
pub struct NodeHandle {
    /// This node's id.
    pub id: u64,
    tx: Sender<Request>,
    /// Values readable without a round trip.
    pub shared: Arc<Shared>,
}

impl NodeHandle {
    /// Queues a request for the loop.
    pub fn send(&self, req: Request) -> Result<()> {
        if !self.shared.running.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        self.tx.send(req).map_err(|_| Error::Stopped)
    }

    /// Asks the loop to stop after its current turn.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.tx.send(Request::Wake);
    }

    /// Current leader id, 0 when unknown.
    pub fn leader(&self) -> u64 {
        self.shared.leader.load(Ordering::Acquire)
    }
}

/// Outcome of one applied entry, delivered after the transaction commits.
struct Outcome {
    request_id: String,
    result: Option<CommandResult>,
    effects: Effects,
}

/// A caller waiting for its proposal: reply channel, when it was proposed,
/// and the command (kept to propose it again after a leader change).
type Waiter = (
    oneshot::Sender<Result<CommandResult>>,
    Instant,
    Option<Command>,
);

/// Callers waiting for one ReadIndex round.
type ReadBatch = Vec<oneshot::Sender<Result<()>>>;

/// Owns the raft node; runs on its own thread (see [`Node::run`]).
pub struct Node {
    cfg: NodeConfig,
    raw: RawNode<RaftStorage>,
    log_db: Arc<Database>,
    state_files: Arc<StateFiles>,
    background: Background,
    /// When the last state was handed to the state-file thread.
    last_state_sync: Instant,
    /// Bytes of log applied since then.
    applied_bytes: u64,
    sm: StateMachine,
    /// What readers see: `sm` as of the last publish (see `PUBLISH_EVERY`).
    view: Published<ReadView>,
    /// Whether `sm` moved since the last publish.
    view_stale: bool,
    last_publish: Instant,
    /// What raft snapshots are built from (see `RaftStorage`).
    snapshot_source: Published<StateMachine>,
    leases: LeaseClock,
    /// As leader, expire no lease before this log index is applied (the
    /// first entry of this leadership): see `lease.rs`.
    lease_gate: u64,
    hub: WatchHub,
    transport: Transport,
    metrics: Metrics,
    shared: Arc<Shared>,
    /// Callers waiting for a request id to be applied on this node.
    pending: HashMap<String, Vec<Waiter>>,
    /// ReadIndex requests gathered during this turn (one raft round each turn).
    read_batch: Vec<oneshot::Sender<Result<()>>>,
    /// Batches sent to raft, by context, waiting for their read index.
    reads_in_flight: HashMap<u64, (ReadBatch, Instant)>,
    /// Batches whose read index is known, waiting for apply to reach it.
    reads_ready: Vec<(u64, ReadBatch)>,
    next_read_ctx: u64,
    role: StateRole,
    removed: bool,
    /// Where the log is being compacted to, a step per log-file
    /// transaction (see `COMPACT_STEP`).
    compact_to: u64,
    /// Set when a new leader appears: proposals forwarded to the old one
    /// may be lost, so they are proposed again (the request id makes the
    /// copy harmless).
    repropose: bool,
}

impl Node {
    /// Creates the raft node over loaded storage and state machine.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: NodeConfig,
        storage: RaftStorage,
        log_db: Arc<Database>,
        state_files: Arc<StateFiles>,
        sm: StateMachine,
        view: Published<ReadView>,
        snapshot_source: Published<StateMachine>,
        hub: WatchHub,
        transport: Transport,
        metrics: Metrics,
    ) -> Result<(Node, NodeHandle, Receiver<Request>)> {
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied: sm.applied.0,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => cfg.id));
        let raw = RawNode::new(&raft_cfg, storage, &logger)?;
        let mut leases = LeaseClock::default();
        leases.reset(sm.leases(), Instant::now());
        let shared = Arc::new(Shared::default());
        shared.running.store(true, Ordering::Release);
        shared
            .delivered_revision
            .store(sm.revision, Ordering::Release);
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = NodeHandle {
            id: cfg.id,
            tx,
            shared: shared.clone(),
        };
        let background = Background::start(cfg.id, state_files.clone())?;
        let node = Node {
            cfg,
            raw,
            log_db,
            state_files,
            background,
            last_state_sync: Instant::now(),
            applied_bytes: 0,
            sm,
            view,
            view_stale: false,
            last_publish: Instant::now(),
            snapshot_source,
            leases,
            lease_gate: 0,
            hub,
            transport,
            metrics,
            shared,
            pending: HashMap::new(),
            read_batch: Vec::new(),
            reads_in_flight: HashMap::new(),
            reads_ready: Vec::new(),
            // Not 1: a restarted node must not reuse the contexts of
            // its previous run that a leader may still hold.
            next_read_ctx: rand::random(),
            role: StateRole::Follower,
            removed: false,
            compact_to: 0,
            repropose: false,
        };
        Ok((node, handle, rx))
    }

    /// Runs the loop until asked to stop, removed, or a fatal error.
    pub fn run(mut self, rx: Receiver<Request>) -> Result<Exit> {
        let mut result = self.run_inner(&rx);
        self.shared.running.store(false, Ordering::Release);
        if result.is_ok() {
            if let Err(e) = self.sync_state() {
                result = Err(e);
            }
        }
        // Dropping the waiters tells every caller the node is gone.
        self.pending.clear();
        result
    }

    fn run_inner(&mut self, rx: &Receiver<Request>) -> Result<Exit> {
        let mut last_tick = Instant::now();
        loop {
            let mut wait = self.cfg.tick.saturating_sub(last_tick.elapsed());
            if self.view_stale {
                wait = wait.min(PUBLISH_EVERY.saturating_sub(self.last_publish.elapsed()));
            }
            match rx.recv_timeout(wait) {
                Ok(req) => self.handle(req)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Exit::Stopped),
            }
            let turn_started = Instant::now();
            for _ in 0..DRAIN_BATCH {
                match rx.try_recv() {
                    Ok(req) => self.handle(req)?,
                    Err(_) => break,
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                return Ok(Exit::Stopped);
            }
            self.flush_reads();
            if self.repropose {
                self.repropose = false;
                self.propose_pending_again();
            }
            if last_tick.elapsed() >= self.cfg.tick {
                last_tick = Instant::now();
                self.raw.tick();
                self.on_tick();
                self.maybe_write_state();
            }
            self.on_ready()?;
            if self.raw.store().take_snapshot_request() {
                self.snapshot_source.store(self.sm.clone());
            }
            if self.view_stale && self.last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish_view();
            }
            let took = turn_started.elapsed();
            if took > SLOW_TURN {
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    "a raft loop turn was slow; heartbeats and answers waited"
                );
            }
            if self.removed {
                return Ok(Exit::Removed);
            }
        }
    }

    fn handle(&mut self, req: Request) -> Result<()> {
        match req {
            Request::Propose { cmd, reply } => {
                if self.raw.raft.leader_id == INVALID_ID {
                    let _ = reply.send(Err(Error::NoLeader));
                    return Ok(());
                }
                let data = cmd.encode_to_vec();
                if data.len() > MAX_COMMAND_BYTES {
                    let _ = reply.send(Err(Error::InvalidArgument(format!(
                        "request is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                        data.len()
                    ))));
                    return Ok(());
                }
                match self.raw.propose(Vec::new(), data) {
                    Ok(()) => {
                        self.metrics.proposals.inc();
                        self.pending
                            .entry(cmd.request_id.clone())
                            .or_default()
                            .push((reply, Instant::now(), Some(cmd)));
                    }
                    Err(_) => {
                        self.metrics.proposals_failed.inc();
                        let _ = reply.send(Err(Error::NoLeader));
                    }
                }
            }
            Request::MemberChange { change, add, reply } => {
                let mut cc = ConfChange {
                    node_id: change.id,
                    ..Default::default()
                };
                cc.set_change_type(if add {
                    ConfChangeType::AddNode
                } else {
                    ConfChangeType::RemoveNode
                });
                cc.context = change.encode_to_vec().into();
                if self.raw.raft.leader_id == INVALID_ID {
                    let _ = reply.send(Err(Error::NoLeader));
                    return Ok(());
                }
                match self.raw.propose_conf_change(Vec::new(), cc) {
                    Ok(()) => self.pending.entry(change.request_id).or_default().push((
                        reply,
                        Instant::now(),
                        None,
                    )),
                    Err(e) => {
                        let _ = reply.send(Err(Error::FailedPrecondition(format!(
                            "membership change refused: {e}"
                        ))));
                    }
                }
            }
            Request::ReadIndex { reply } => {
                self.metrics.linearizable_reads.inc();
                if self.raw.raft.leader_id == INVALID_ID {
                    let _ = reply.send(Err(Error::NoLeader));
                } else {
                    self.read_batch.push(reply);
                }
            }
            Request::Raft(m) => {
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft step refused a message");
                }
            }
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Request::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Request::Unreachable(id) => self.raw.report_unreachable(id),
            Request::Publish { reply } => {
                self.publish_view();
                let _ = reply.send(());
            }
            Request::Wake => {}
        }
        Ok(())
    }

    fn status(&self) -> Status {
        let raft = &self.raw.raft;
        Status {
            id: self.cfg.id,
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.sm.applied.0,
            role: role_name(raft.state),
            members: BTreeMap::clone(&self.sm.members),
            revision: self.sm.revision,
            compact_revision: self.sm.compact_revision,
            voters: {
                let mut v = raft.prs().conf().to_conf_state().voters;
                v.sort_unstable();
                v
            },
        }
    }

    fn flush_reads(&mut self) {
        if self.read_batch.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx = self.next_read_ctx.wrapping_add(1);
        self.raw.read_index(read_ctx(self.cfg.id, ctx));
        let batch = std::mem::take(&mut self.read_batch);
        self.reads_in_flight.insert(ctx, (batch, Instant::now()));
    }

    fn propose_pending_again(&mut self) {
        let mut n = 0;
        for waiters in self.pending.values() {
            let Some(cmd) = waiters.iter().find_map(|(_, _, c)| c.as_ref()) else {
                continue;
            };
            if self.raw.propose(Vec::new(), cmd.encode_to_vec()).is_ok() {
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(
                proposals = n,
                "proposed in-flight requests again after a leader change"
            );
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.role == StateRole::Leader && self.sm.applied.0 >= self.lease_gate {
            for id in self.leases.take_expired(now) {
                tracing::info!(lease = id, "lease expired; revoking it");
                let cmd = Command {
                    request_id: String::new(),
                    proposed_at_ms: now_ms(),
                    op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest {
                        id,
                        request_id: String::new(),
                    })),
                    // The cluster itself: nothing to check.
                    caller_role: String::new(),
                };
                if let Err(e) = self.raw.propose(Vec::new(), cmd.encode_to_vec()) {
                    tracing::warn!(lease = id, error = %e, "could not propose lease revoke");
                }
            }
        }
        self.reads_in_flight
            .retain(|_, (_, at)| now.duration_since(*at) < READ_INDEX_GIVE_UP);
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        let old_leader = self.shared.leader.swap(leader, Ordering::AcqRel);
        if old_leader != leader {
            self.metrics.leader_changes.inc();
            tracing::info!(leader, role = role_name(role), "raft leader changed");
            // ReadIndex requests in flight died with the old leadership;
            // dropping them lets their callers retry at once.
            self.reads_in_flight.clear();
            self.repropose = leader != INVALID_ID;
        }
        if role == StateRole::Leader && self.role != StateRole::Leader {
            self.leases.promote();
            self.lease_gate = self.raw.raft.raft_log.last_index();
        }
        self.role = role;
        self.metrics
            .is_leader
            .set(i64::from(role == StateRole::Leader));
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            let (leader, role) = (ss.leader_id, ss.raft_state);
            self.on_soft_state(leader, role);
        }
        self.transport.send(coalesce_proposals(rd.take_messages()));
        for rs in rd.take_read_states() {
            let ctx = match parse_read_ctx(&rs.request_ctx) {
                Some((id, ctx)) if id == self.cfg.id => ctx,
                _ => continue,
            };
            if let Some((batch, _)) = self.reads_in_flight.remove(&ctx) {
                self.reads_ready.push((rs.index, batch));
            }
        }

        // A follower's messages all wait for this Ready's fsync, but only
        // the ones that vouch for its log or vote must: proposals and read
        // requests forwarded to the leader, and heartbeat answers, leave now
        // instead of after the fsync.
        let (after_sync, now): (Vec<Message>, Vec<Message>) = rd
            .take_persisted_messages()
            .into_iter()
            .partition(|m| needs_persistence(m.get_msg_type()));
        self.transport.send(coalesce_proposals(now));

        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot())?;
        }
        // Committed entries first, as raft-rs documents: they are already
        // durable in a majority's logs, so callers get their answers
        // without waiting for this Ready's own fsync.
        let committed = rd.take_committed_entries();
        self.apply_and_deliver(committed)?;
        // Then the log file: append and save the hard state, one fsync for
        // the whole batch (group commit).
        let must_sync = rd.must_sync();
        // The commit index is volatile raft state: a hard state that only
        // moved it is not worth a page per Ready (after a restart raft
        // learns it again, and start-up lifts it to the applied index).
        let hs = rd.hs().filter(|hs| {
            let cur = self.raw.store().hard_state();
            hs.term != cur.term || hs.vote != cur.vote
        });
        if must_sync || !rd.entries().is_empty() || hs.is_some() {
            let started = Instant::now();
            let mut txn = self.log_db.begin_write()?;
            if !must_sync {
                txn.set_durability(Durability::None)?;
            }
            self.raw.mut_store().append(&txn, rd.entries())?;
            if let Some(hs) = hs {
                self.raw.mut_store().set_hard_state(&txn, hs.clone())?;
            }
            self.maybe_compact(&txn)?;
            txn.commit()?;
            if must_sync {
                self.metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        self.transport.send(after_sync);

        let mut light = self.raw.advance(rd);
        self.transport.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_and_deliver(committed)?;
        self.raw.advance_apply();
        self.release_reads();
        Ok(())
    }

    /// Applies committed entries, then answers callers.
    fn apply_and_deliver(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let apply_started = Instant::now();
        self.metrics
            .apply_batch_entries
            .observe(entries.len() as f64);
        let mut outcomes = Vec::new();
        self.apply_entries(entries, &mut outcomes)?;
        // Readers see it at the next publish (end of this turn at the
        // latest once `PUBLISH_EVERY` has passed, or on demand).
        self.view_stale = true;
        self.maybe_write_state();
        self.metrics
            .apply_seconds
            .observe(apply_started.elapsed().as_secs_f64());
        self.deliver(outcomes);
        Ok(())
    }

    /// Offers the state to the state-file thread once enough log was
    /// applied to pay for it (see `Config::state_sync_bytes`).
    fn maybe_write_state(&mut self) {
        // Nodes that share a machine (tests, `make run`) apply the same log
        // and would all write at once: each waits a little longer.
        let due =
            self.cfg.state_sync_bytes.max(self.state_files.size()) / 8 * (8 + self.cfg.id % 8);
        if self.applied_bytes >= due
            && self.last_state_sync.elapsed() >= self.cfg.state_sync
            && self.background.offer(&self.sm)
        {
            self.last_state_sync = Instant::now();
            self.applied_bytes = 0;
            // Raft snapshots follow the state files: never older than the
            // log start, and the dedup tree is copied once per file, not
            // per batch.
            self.snapshot_source.store(self.sm.clone());
        }
    }

    /// Writes the state file now, on this thread (shutdown).
    fn sync_state(&mut self) -> Result<()> {
        self.background.stop();
        self.state_files.write(&self.sm)?;
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        tracing::info!(
            index = meta.index,
            term = meta.term,
            bytes = snap.get_data().len(),
            "installing snapshot from the leader"
        );
        self.sm.restore(snap)?;
        // State first and durably: if we crash before the log is reset, the
        // log merely holds entries the state already includes.
        self.state_files.write(&self.sm)?;
        let txn = self.log_db.begin_write()?;
        self.raw.mut_store().apply_snapshot(&txn, meta)?;
        txn.commit()?;
        self.metrics.snapshots_installed.inc();
        self.snapshot_source.store(self.sm.clone());
        self.view_stale = true;
        self.publish_view();
        self.transport.set_members(&self.sm.members);
        // Deadlines restart from now; see lease.rs.
        self.leases.reset(self.sm.leases(), Instant::now());
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, outcomes: &mut Vec<Outcome>) -> Result<()> {
        let term = self.raw.raft.term;
        for e in entries {
            if e.index <= self.sm.applied.0 {
                continue;
            }
            self.applied_bytes += e.data.len() as u64;
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {
                    // The empty entry a new leader appends.
                    self.sm.applied = (e.index, e.term);
                }
                EntryType::EntryNormal => {
                    let cmd = Command::decode(e.data.as_ref())?;
                    let (result, effects) = self.sm.apply(e.index, e.term, self.cfg.id, &cmd)?;
                    outcomes.push(Outcome {
                        request_id: cmd.request_id,
                        result: Some(result),
                        effects,
                    });
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)?;
                    let change = MemberChange::decode(cc.context.as_ref())?;
                    let result = self.apply_conf_change(&cc, &change, term);
                    let added = cc.get_change_type() != ConfChangeType::RemoveNode;
                    let effects = self
                        .sm
                        .record_member_change(e.index, e.term, &change, added, &result);
                    outcomes.push(Outcome {
                        request_id: change.request_id,
                        result: Some(result),
                        effects,
                    });
                }
                EntryType::EntryConfChangeV2 => {
                    tracing::warn!(
                        index = e.index,
                        "ignoring a joint-consensus entry (never proposed here)"
                    );
                    self.sm.applied = (e.index, e.term);
                }
            }
        }
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        cc: &ConfChange,
        change: &MemberChange,
        term: u64,
    ) -> CommandResult {
        let cs = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                tracing::warn!(error = %e, node = cc.node_id, "conf change not applicable");
                return CommandResult {
                    result: Some(command_result::Result::Error(
                        agenda_proto::raft::CommandError {
                            code: agenda_proto::raft::command_error::Code::FailedPrecondition
                                as i32,
                            message: format!("membership change refused: {e}"),
                        },
                    )),
                };
            }
        };
        let mut members = BTreeMap::clone(&self.sm.members);
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                tracing::info!(node = change.id, addr = %change.addr, "member added");
                members.insert(change.id, change.addr.clone());
            }
            ConfChangeType::RemoveNode => {
                tracing::info!(node = change.id, "member removed");
                members.remove(&change.id);
                if change.id == self.cfg.id {
                    self.removed = true;
                }
            }
        }
        self.sm.set_members(members);
        self.sm.conf_state = cs.clone();
        self.raw.mut_store().conf_state_applied(cs);
        self.transport.set_members(&self.sm.members);
        CommandResult {
            result: Some(command_result::Result::MemberChange(MemberChangeResponse {
                header: Some(self.sm.header(self.cfg.id, term)),
                members: self.sm.member_list(),
            })),
        }
    }

    fn maybe_compact(&mut self, txn: &redb::WriteTransaction) -> Result<()> {
        // Never past what a state file covers: a crash must be able to
        // replay the rest from the log.
        let applied = self.state_files.durable_applied();
        let first = self.raw.store().first();
        if applied >= first && applied - first >= self.cfg.snapshot_threshold {
            // Keep a tail so followers that are only slightly behind still
            // catch up from the log instead of a full snapshot.
            let keep = self.cfg.snapshot_threshold / 10;
            self.compact_to = self.compact_to.max(applied.saturating_sub(keep));
        }
        if let Some(to) = compaction_step(first, self.compact_to) {
            self.raw.mut_store().compact(txn, to)?;
            if to == self.compact_to {
                self.metrics.compactions.inc();
                tracing::debug!(to, "raft log compacted");
            }
        }
        Ok(())
    }

    /// After commit: answer callers, publish watch events, move lease clocks.
    fn deliver(&mut self, outcomes: Vec<Outcome>) {
        let now = Instant::now();
        // Before the events go out, never after: a watch subscribes to the
        // hub, then replays history up to this revision, so every revision
        // must be either published after its subscription or at most this
        // when it reads it. Stored after publishing (as it was), a watch
        // opened in between missed one revision for good: a registry
        // watcher then never saw a put (registry tests, about one run in
        // three of the whole suite).
        self.shared
            .delivered_revision
            .store(self.sm.revision, Ordering::Release);
        for o in outcomes {
            if let Some((rev, events)) = o.effects.revision {
                self.hub.publish(rev, events);
            }
            match o.effects.lease {
                Some(LeaseEffect::Granted(id, ttl)) => self.leases.granted(id, ttl, now),
                Some(LeaseEffect::Renewed(id)) => self.leases.renewed(id, now),
                Some(LeaseEffect::Revoked(id)) => self.leases.revoked(id),
                None => {}
            }
            if let (Some(waiters), Some(result)) = (self.pending.remove(&o.request_id), o.result) {
                for (tx, at, _) in waiters {
                    self.metrics
                        .commit_seconds
                        .observe(now.duration_since(at).as_secs_f64());
                    let _ = tx.send(Ok(result.clone()));
                }
            }
        }
        self.shared
            .term
            .store(self.raw.raft.term, Ordering::Release);
        self.metrics.term.set(self.raw.raft.term as i64);
        self.metrics.applied_index.set(self.sm.applied.0 as i64);
        // Callers that gave up (dropped their receiver) are forgotten.
        self.pending.retain(|_, ws| {
            ws.retain(|(tx, _, _)| !tx.is_closed());
            !ws.is_empty()
        });
    }

    /// Replaces readers' view by the current state, if it moved.
    fn publish_view(&mut self) {
        if !self.view_stale {
            return;
        }
        self.view.store(self.sm.view());
        self.view_stale = false;
        self.last_publish = Instant::now();
    }

    fn release_reads(&mut self) {
        let applied = self.sm.applied.0;
        if self.reads_ready.iter().any(|(index, _)| *index <= applied) {
            // The readers about to go read the view need it this new.
            self.publish_view();
        }
        let mut i = 0;
        while i < self.reads_ready.len() {
            if self.reads_ready[i].0 <= applied {
                let (_, batch) = self.reads_ready.swap_remove(i);
                for tx in batch {
                    let _ = tx.send(Ok(()));
                }
            } else {
                i += 1;
            }
        }
    }
}

/// The context of a ReadIndex round: the node id, then its own counter.
/// The leader keeps one pending round per context and drops a second
/// request with the same context, so contexts must differ across nodes
/// (with a bare counter, followers collided and their reads waited for
/// the 1 s retry).
fn read_ctx(id: u64, n: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&id.to_le_bytes());
    ctx.extend_from_slice(&n.to_le_bytes());
    ctx
}

/// Inverse of [`read_ctx`].
fn parse_read_ctx(ctx: &[u8]) -> Option<(u64, u64)> {
    let (id, n) = ctx.split_at_checked(8)?;
    Some((
        u64::from_le_bytes(id.try_into().ok()?),
        u64::from_le_bytes(n.try_into().ok()?),
    ))
}

/// Where the next log-file transaction compacts the log to, if anywhere:
/// towards `target`, at most [`COMPACT_STEP`] entries past the log start
/// `first`.
fn compaction_step(first: u64, target: u64) -> Option<u64> {
    (target >= first).then(|| target.min(first - 1 + COMPACT_STEP))
}

/// Merges the proposals a follower forwards to its leader in one Ready
/// into one message: raft-rs appends every entry of a MsgPropose, and one
/// message per client request would dominate the transport at load.
fn coalesce_proposals(msgs: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(msgs.len());
    let mut prop: Option<usize> = None;
    for m in msgs {
        if m.get_msg_type() == MessageType::MsgPropose {
            if let Some(i) = prop.filter(|i| out[*i].to == m.to) {
                out[i].entries.extend(m.entries);
                continue;
            }
            prop = Some(out.len());
        }
        out.push(m);
    }
    out
}

/// Messages that tell a peer what this node has durably stored (its log or
/// its vote): they may only leave after the fsync (etcd's raft delays the
/// same three types; everything else carries no such promise).
fn needs_persistence(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgAppendResponse
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVoteResponse
    )
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre_candidate",
        StateRole::Leader => "leader",
    }
}

/// Wall clock in ms, stamped on proposals (see `Command.proposed_at_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends raft-rs's slog records to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_compaction_goes_in_steps() {
        assert_eq!(compaction_step(1, 0), None);
        assert_eq!(compaction_step(101, 100), None);
        assert_eq!(compaction_step(101, 101), Some(101));
        assert_eq!(compaction_step(1, 400_000), Some(COMPACT_STEP));
        let (mut first, mut steps) = (1, 0);
        while let Some(to) = compaction_step(first, 400_000) {
            assert!(to - first < COMPACT_STEP);
            first = to + 1;
            steps += 1;
        }
        assert_eq!(
            (first, steps),
            (400_001, 400_000usize.div_ceil(COMPACT_STEP as usize))
        );
    }

    #[test]
    fn read_contexts_of_different_nodes_never_collide() {
        assert_ne!(read_ctx(1, 7), read_ctx(2, 7));
        assert_eq!(parse_read_ctx(&read_ctx(3, u64::MAX)), Some((3, u64::MAX)));
        assert_eq!(parse_read_ctx(&7u64.to_le_bytes()), None);
        assert_eq!(parse_read_ctx(&[]), None);
    }
}
