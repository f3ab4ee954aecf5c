//! The raft node: one thread owns the `RawNode`, the state machine and the
//! write side of the log file.
//!
//! Each turn of the loop ([`Node::turn`]) drains the mailbox into raft
//! (`step`, `propose`, `read_index`; cluster traffic first, see
//! [`mailbox`]), ticks when a tick is due, then handles one `Ready`:
//! - the leader's messages leave at once; so do a follower's messages that
//!   promise nothing about its disk (forwarded proposals, read requests,
//!   heartbeat answers);
//! - a snapshot from the leader is installed;
//! - committed entries are applied to the in-memory state and their
//!   callers answered, before this Ready's own log write: they are already
//!   durable in a majority's logs (raft-rs's documented order);
//! - new entries and a changed term or vote go to the log file in ONE
//!   transaction (one fsync however many proposals arrived meanwhile:
//!   group commit), and only then the messages that vouch for this node's
//!   log or vote (append and vote answers);
//! - advance, and apply what the advance committed.
//!
//! Readers see the state through a published view replaced lazily (see
//! [`PUBLISH_EVERY`]). Once enough log was applied to pay for it, a copy of
//! the state goes to the state-file thread (`state_file.rs`); the log is
//! compacted only up to what a state file covers.
//!
//! Everything the loop takes from outside comes through [`NodeIo`]: the
//! clock, the peers, where state files are written, and the randomness of
//! election timeouts and read contexts. The server passes the real ones;
//! the simulator (`agenda-tests`' `sim`) passes virtual ones and calls
//! [`Node::turn`] itself instead of [`Node::run`].
//!
//! A storage error ends the loop with an error: the node stops rather than
//! continue with a state it could not persist.
//!
//! Linearizable reads take a ReadIndex round, except on a leader holding
//! its read lease ([`read_lease`]), which answers its own and its
//! followers' reads from its commit index.
//!
//! Layout: [`handle`] (requests, the handle, shared values), [`mailbox`]
//! (the bounded queues), [`read_queue`] (ReadIndex bookkeeping),
//! [`read_lease`] (the leader's read lease and why it holds).

pub mod handle;
pub mod mailbox;
pub mod read_lease;
pub mod read_queue;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_proto::db::{LeaseRevokeRequest, MemberChangeResponse};
use agenda_proto::raft::{command, command_result, Command, CommandResult, MemberChange};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole, INVALID_ID};
use redb::{Database, Durability};
use tokio::sync::oneshot;

pub use handle::{Exit, NodeHandle, Request, Shared, Status};
use mailbox::Mailbox;
use read_lease::{ReadLease, VoteGuard};
use read_queue::ReadQueue;

use crate::clock::{Clock, SystemClock};
use crate::state_file::{Background, StateFiles};

use crate::error::{Error, Result};
use crate::lease::LeaseClock;
use crate::metrics::Metrics;
use crate::state_machine::{Effects, LeaseEffect, Published, ReadView, StateMachine};
use crate::storage::RaftStorage;
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
/// A leader stops renewing its read lease when no read came for this long.
const READ_LEASE_IDLE: Duration = Duration::from_secs(2);
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

/// Where a node's messages go: the gRPC transport in a server, the
/// simulated network in the simulator.
pub trait Peers: Send {
    /// Sends messages to their `to` peers (best effort: raft resends).
    fn send(&self, msgs: Vec<Message>);
    /// The members and their raft addresses changed.
    fn set_members(&self, members: &BTreeMap<u64, String>);
}

/// Draws an election timeout in ticks from `[election, 2 * election)`.
pub type ElectionJitter = Box<dyn FnMut(usize) -> usize + Send>;

/// What the loop takes from outside (see the module doc).
pub struct NodeIo {
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Outgoing raft messages.
    pub peers: Box<dyn Peers>,
    /// Write state files and build snapshots for followers on threads
    /// of their own (a server) or inline, in the loop's turn (the
    /// simulator: no thread decides timing).
    pub state_files_inline: bool,
    /// First ReadIndex context (random in a server, see [`ReadQueue::new`]).
    pub first_read_ctx: u64,
    /// Replaces raft-rs's own election-timeout draw (its thread-local
    /// RNG) when set: the simulator draws from its seed.
    pub election_jitter: Option<ElectionJitter>,
    /// Client requests the mailbox queues before refusing.
    pub max_queued_requests: usize,
    /// Old defects put back for the simulator to find: never set outside
    /// it.
    pub reintroduced: Reintroduced,
    /// Go on behind this handle (a node started over in the same process
    /// after its disk filled: the serving side and the transport keep the
    /// handle they hold).
    pub handle: Option<NodeHandle>,
}

impl NodeIo {
    /// A server's: the system clock, these peers, a state-file thread.
    pub fn server(peers: Box<dyn Peers>, max_queued_requests: usize) -> Self {
        NodeIo {
            clock: Arc::new(SystemClock),
            peers,
            state_files_inline: false,
            first_read_ctx: rand::random(),
            election_jitter: None,
            max_queued_requests,
            reintroduced: Reintroduced::default(),
            handle: None,
        }
    }
}

/// Defects this project had (or could have had), re-created on demand so
/// the simulator can show it would catch them. All off in every server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reintroduced {
    /// Log writes are not synced, yet append and vote answers still go out
    /// as though they were: an acknowledgement before the fsync.
    pub ack_before_fsync: bool,
    /// A membership change's dedup record is timed by the applying node's
    /// own clock instead of the proposer's (the HA issue's defect).
    pub local_clock_in_apply: bool,
    /// ReadIndex contexts without the node id (they collided across
    /// followers at the leader).
    pub shared_read_ctx: bool,
    /// The leader's read lease lasts three election timeouts instead of
    /// less than one: a leader cut off from the others answers reads after
    /// a new one was elected.
    pub long_read_lease: bool,
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

/// Owns the raft node; runs on its own thread (see [`Node::run`]).
pub struct Node {
    cfg: NodeConfig,
    raw: RawNode<RaftStorage>,
    log_db: Arc<Database>,
    state_files: Arc<StateFiles>,
    background: Background,
    clock: Arc<dyn Clock>,
    mailbox: Arc<Mailbox>,
    jitter: Option<ElectionJitter>,
    reintroduced: Reintroduced,
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
    last_tick: Instant,
    /// What raft snapshots are built from (see `RaftStorage`).
    snapshot_source: Published<StateMachine>,
    leases: LeaseClock,
    /// As leader, expire no lease before this log index is applied (the
    /// first entry of this leadership): see `lease.rs`.
    lease_gate: u64,
    hub: WatchHub,
    peers: Box<dyn Peers>,
    metrics: Metrics,
    shared: Arc<Shared>,
    /// Callers waiting for a request id to be applied on this node
    /// (ordered: proposed again after a leader change in this order).
    pending: BTreeMap<String, Vec<Waiter>>,
    reads: ReadQueue<oneshot::Sender<Result<()>>>,
    read_lease: ReadLease,
    /// When a read was last answered under the lease (renewed only while
    /// reads come).
    last_lease_read: Option<Instant>,
    vote_guard: VoteGuard,
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
        io: NodeIo,
        metrics: Metrics,
    ) -> Result<(Node, NodeHandle)> {
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied: sm.applied.0,
            max_size_per_msg: 1024 * 1024,
            // A restart replays the log past the state file in batches of
            // this much, not all of it in one Vec.
            max_committed_size_per_ready: 16 * 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => cfg.id));
        let mut storage = storage;
        if io.state_files_inline {
            storage.build_snapshots_inline();
        }
        let raw = RawNode::new(&raft_cfg, storage, &logger)?;
        let now = io.clock.now();
        let mut leases = LeaseClock::default();
        leases.reset(sm.leases(), now);
        let (mailbox, shared) = match &io.handle {
            Some(h) => (h.mailbox.clone(), h.shared.clone()),
            None => (
                Arc::new(Mailbox::new(io.max_queued_requests, mailbox::CLUSTER_QUEUE)),
                Arc::new(Shared::default()),
            ),
        };
        shared.stop.store(false, Ordering::Release);
        shared.disk_full.store(false, Ordering::Release);
        shared
            .delivered_revision
            .store(sm.revision, Ordering::Release);
        shared.running.store(true, Ordering::Release);
        let handle = NodeHandle {
            id: cfg.id,
            mailbox: mailbox.clone(),
            shared: shared.clone(),
        };
        let background = if io.state_files_inline {
            Background::inline(state_files.clone())
        } else {
            Background::start(cfg.id, state_files.clone())?
        };
        let mut node = Node {
            // The defect had every node count its rounds from 1.
            reads: ReadQueue::new(
                cfg.id,
                if io.reintroduced.shared_read_ctx {
                    1
                } else {
                    io.first_read_ctx
                },
            ),
            read_lease: ReadLease::new(
                if io.reintroduced.long_read_lease {
                    cfg.tick * cfg.election_ticks as u32 * 3
                } else {
                    read_lease::lease_length(cfg.tick, cfg.election_ticks)
                },
                now,
            ),
            last_lease_read: None,
            vote_guard: VoteGuard::new(cfg.election_ticks),
            cfg,
            raw,
            log_db,
            state_files,
            background,
            clock: io.clock,
            mailbox,
            jitter: io.election_jitter,
            reintroduced: io.reintroduced,
            last_state_sync: now,
            applied_bytes: 0,
            sm,
            view,
            view_stale: false,
            last_publish: now,
            last_tick: now,
            snapshot_source,
            leases,
            lease_gate: 0,
            hub,
            peers: io.peers,
            metrics,
            shared,
            pending: BTreeMap::new(),
            role: StateRole::Follower,
            removed: false,
            compact_to: 0,
            repropose: false,
        };
        node.draw_election_timeout();
        Ok((node, handle))
    }

    /// Runs the loop until asked to stop, removed, or a fatal error.
    pub fn run(mut self) -> Result<Exit> {
        let mut result = self.run_inner();
        // Before callers are dropped, so they learn why (see `keeper`).
        if result.as_ref().is_err_and(Error::is_disk_full) {
            self.shared.disk_full.store(true, Ordering::Release);
        }
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

    fn run_inner(&mut self) -> Result<Exit> {
        loop {
            let now = self.clock.now();
            let mut wait = self
                .cfg
                .tick
                .saturating_sub(now.duration_since(self.last_tick));
            if self.view_stale {
                wait =
                    wait.min(PUBLISH_EVERY.saturating_sub(now.duration_since(self.last_publish)));
            }
            self.mailbox.wait(wait);
            let turn_started = self.clock.now();
            let tick = turn_started.duration_since(self.last_tick) >= self.cfg.tick;
            if let Some(exit) = self.turn(tick)? {
                return Ok(exit);
            }
            let took = self.clock.now().duration_since(turn_started);
            if took > SLOW_TURN {
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    "a raft loop turn was slow; heartbeats and answers waited"
                );
            }
        }
    }

    /// One turn of the loop: what is queued, a tick if `tick`, one Ready.
    /// Returns how the loop ends, if it does.
    pub fn turn(&mut self, tick: bool) -> Result<Option<Exit>> {
        let mut batch = Vec::new();
        self.mailbox.drain(DRAIN_BATCH, &mut batch);
        for req in batch {
            self.handle(req)?;
        }
        if self.shared.stop.load(Ordering::Acquire) {
            return Ok(Some(Exit::Stopped));
        }
        self.flush_reads();
        if self.raw.raft.lead_transferee.is_some() {
            // See `read_lease`: the target may win with votes that the
            // lease counted on; rounds started until now give nothing.
            self.read_lease.revoke(self.clock.now());
        }
        if self.repropose {
            self.repropose = false;
            self.propose_pending_again();
        }
        if tick {
            self.last_tick = self.clock.now();
            self.raw.tick();
            self.vote_guard.tick();
            self.on_tick();
            self.maybe_write_state();
        }
        self.on_ready()?;
        // Reads answered under the lease this turn may need no Ready.
        self.release_reads();
        self.draw_election_timeout();
        if self.raw.store().take_snapshot_request() {
            self.snapshot_source.store(self.sm.clone());
        }
        if self.view_stale && self.clock.now().duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.publish_view();
        }
        Ok(self.removed.then_some(Exit::Removed))
    }

    /// With an [`ElectionJitter`], replaces the timeout raft-rs drew from
    /// its own RNG whenever it may have drawn one (its election clock was
    /// just reset), before any tick reads it.
    fn draw_election_timeout(&mut self) {
        let Some(jitter) = self.jitter.as_mut() else {
            return;
        };
        if self.raw.raft.election_elapsed == 0 {
            let e = self.cfg.election_ticks;
            let t = jitter(e).clamp(e, 2 * e - 1);
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }

    /// The state machine as applied here (the simulator compares replicas).
    pub fn state(&self) -> &StateMachine {
        &self.sm
    }

    /// The raft node (the simulator reads roles and terms).
    pub fn raft(&self) -> &RawNode<RaftStorage> {
        &self.raw
    }

    /// Gives the loop up without the orderly shutdown of [`Node::run`]:
    /// what was not persisted is lost, as in a crash (the simulator).
    pub fn crash(mut self) {
        self.shared.running.store(false, Ordering::Release);
        self.background.abandon();
        self.pending.clear();
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
                            .push((reply, self.clock.now(), Some(cmd)));
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
                        self.clock.now(),
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
                } else if self.lease_holds() {
                    self.metrics.lease_reads.inc();
                    self.reads
                        .push_ready(self.raw.raft.raft_log.committed, reply);
                } else {
                    self.reads.push(reply);
                }
            }
            Request::Raft(m) => self.step(*m),
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
            Request::Snapshot { reply } => {
                let _ = reply.send(Box::new(self.sm.clone()));
            }
            Request::TransferLeader(to) => {
                tracing::info!(to, "transferring leadership (operator's request)");
                self.raw.transfer_leader(to);
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

    /// Steps a message from a peer into raft, except what the read lease
    /// answers or forbids (see `read_lease`).
    fn step(&mut self, m: Message) {
        match m.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                if m.term > self.raw.raft.term
                    && self
                        .vote_guard
                        .ignores_vote(m.context.as_ref() == raft::CAMPAIGN_TRANSFER) =>
            {
                tracing::debug!(
                    from = m.from,
                    "ignored a vote request: started less than an election timeout ago"
                );
                return;
            }
            MessageType::MsgReadIndex
                if m.from != self.cfg.id && m.entries.len() == 1 && self.lease_holds() =>
            {
                // A follower's read: the commit index is its read index,
                // as after a round (raft-rs answers the same way).
                self.metrics.lease_reads.inc();
                let mut resp = Message::default();
                resp.set_msg_type(MessageType::MsgReadIndexResp);
                resp.from = self.cfg.id;
                resp.to = m.from;
                resp.term = self.raw.raft.term;
                resp.index = self.raw.raft.raft_log.committed;
                resp.entries = m.entries;
                self.peers.send(vec![resp]);
                return;
            }
            _ => {}
        }
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "raft step refused a message");
        }
    }

    /// Whether this node may answer a linearizable read from its commit
    /// index now, without a round (see `read_lease`).
    fn lease_holds(&mut self) -> bool {
        let now = self.clock.now();
        let holds = self.raw.raft.state == StateRole::Leader
            && self.raw.raft.lead_transferee.is_none()
            && self.read_lease.holds(now);
        if holds {
            self.last_lease_read = Some(now);
        }
        holds
    }

    fn flush_reads(&mut self) {
        let now = self.clock.now();
        // Renewed ahead of its end while reads come, so they never wait
        // for a round; an idle leader lets it lapse.
        let renew = self.role == StateRole::Leader
            && self.read_lease.wants_renewal(now)
            && self
                .last_lease_read
                .is_some_and(|at| now.duration_since(at) < READ_LEASE_IDLE);
        if let Some(ctx) = self
            .reads
            .start_round(now, self.reintroduced.shared_read_ctx, renew)
        {
            if renew {
                self.read_lease.renewal_started(now);
            }
            self.raw.read_index(ctx);
        }
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
        let now = self.clock.now();
        if self.role == StateRole::Leader && self.sm.applied.0 >= self.lease_gate {
            for id in self.leases.take_expired(now) {
                tracing::info!(lease = id, "lease expired; revoking it");
                let cmd = Command {
                    request_id: String::new(),
                    proposed_at_ms: self.clock.wall_ms(),
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
        self.reads.give_up_older_than(now, READ_INDEX_GIVE_UP);
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        let old_leader = self.shared.leader.swap(leader, Ordering::AcqRel);
        if old_leader != leader {
            self.metrics.leader_changes.inc();
            tracing::info!(leader, role = role_name(role), "raft leader changed");
            // ReadIndex requests in flight died with the old leadership;
            // dropping them lets their callers retry at once.
            self.reads.leader_changed();
            self.repropose = leader != INVALID_ID;
        }
        if old_leader != leader || role != self.role {
            self.read_lease.revoke(self.clock.now());
        }
        if role == StateRole::Leader && self.role != StateRole::Leader {
            self.leases.promote();
            self.lease_gate = self.raw.raft.raft_log.last_index();
        }
        if role != StateRole::Leader && self.role == StateRole::Leader {
            self.raw.store().forget_built_snapshot();
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
        self.peers.send(coalesce_proposals(rd.take_messages()));
        for rs in rd.take_read_states() {
            let started =
                self.reads
                    .confirmed(&rs.request_ctx, rs.index, self.reintroduced.shared_read_ctx);
            // A leader's own round was confirmed by a quorum of this term.
            if let Some(started) = started.filter(|_| self.role == StateRole::Leader) {
                self.read_lease.confirmed(started);
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
        self.peers.send(coalesce_proposals(now));

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
            if !must_sync || self.reintroduced.ack_before_fsync {
                txn.set_durability(Durability::None)?;
            }
            self.raw.mut_store().append(&txn, rd.entries())?;
            if let Some(hs) = hs {
                self.raw.mut_store().set_hard_state(&txn, hs.clone())?;
            }
            self.maybe_compact(&txn)?;
            txn.commit()?;
            self.raw.mut_store().trim_memory();
            if must_sync {
                self.metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        self.peers.send(after_sync);

        let mut light = self.raw.advance(rd);
        self.peers.send(light.take_messages());
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
            && self.clock.now().duration_since(self.last_state_sync) >= self.cfg.state_sync
            && self.background.offer(&self.sm)
        {
            self.last_state_sync = self.clock.now();
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
        self.peers.set_members(&self.sm.members);
        // Deadlines restart from now; see lease.rs.
        self.leases.reset(self.sm.leases(), self.clock.now());
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
                    let mut change = MemberChange::decode(cc.context.as_ref())?;
                    if self.reintroduced.local_clock_in_apply {
                        change.proposed_at_ms = self.clock.wall_ms();
                    }
                    let result = self.apply_conf_change(&cc, &change, term);
                    // Quorums change with the members: a new lease needs a
                    // round of the new configuration (see `read_lease`).
                    self.read_lease.revoke(self.clock.now());
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
        self.peers.set_members(&self.sm.members);
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
        let now = self.clock.now();
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
        let store = self.raw.store();
        self.metrics
            .log_entries
            .set((store.last() + 1 - store.first()) as i64);
        self.metrics
            .log_memory_bytes
            .set(store.memory_bytes() as i64);
        self.metrics.keys.set(self.sm.len() as i64);
        self.metrics
            .history_bytes
            .set(self.sm.history_bytes() as i64);
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
        self.last_publish = self.clock.now();
    }

    fn release_reads(&mut self) {
        let applied = self.sm.applied.0;
        if self.reads.any_released_at(applied) {
            // The readers about to go read the view need it this new.
            self.publish_view();
        }
        for tx in self.reads.release(applied) {
            let _ = tx.send(Ok(()));
        }
    }
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
    SystemClock.wall_ms()
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
}
