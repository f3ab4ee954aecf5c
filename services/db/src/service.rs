//! The request layer shared by the gRPC and REST faces: deadlines,
//! retries inside the node, linearizable reads, watches.
//!
//! Writes become raft proposals tagged with a request id. If no answer
//! comes within a second (the proposal may have been lost in a leader
//! change), the same command is proposed again: the id makes the second
//! copy return the first one's result, so a retry never applies twice.
//! Reads wait for a ReadIndex round and for this node to apply up to it,
//! then read the local replica; `stale` reads skip the round.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_proto::db::{
    request_op, CompactionRequest, CompactionResponse, DeleteRequest, DeleteResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, MemberAddRequest, MemberChangeResponse,
    MemberRemoveRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use agenda_proto::raft::{command, command_result, Command, MemberChange};
use prometheus::IntCounter;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::node::{self, now_ms, NodeHandle, Request, Status};
use crate::published::Published;
use crate::state_machine::{self, refusal_to_error, ReadView};
use crate::watch::WatchHub;

/// A proposal with no answer after this long is proposed again.
const REPROPOSE_AFTER: Duration = Duration::from_secs(1);
/// Pause between attempts while there is no leader.
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(25);
/// Watch events sent per message during history replay.
const REPLAY_CHUNK: usize = 256;
/// How often an idle watch stream gets an empty response (a progress
/// notice). Sent only while this node knows a raft leader, so a client
/// that hears nothing for a few of these knows its node died, is cut off
/// or lost the cluster, and watches elsewhere (see `DbClient::watch`): a
/// silent stream used to keep services on a stale registry for as long as
/// a partition lasted.
pub const WATCH_PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Cheap-to-clone handle that serves requests on this node.
#[derive(Clone)]
pub struct Db {
    node: NodeHandle,
    state: Published<ReadView>,
    hub: WatchHub,
    timeout: Duration,
    /// Ends watch streams at shutdown so connections can drain.
    shutdown: CancellationToken,
    /// ReadIndex rounds asked again for lack of an answer.
    read_retries: IntCounter,
    /// The role in the caller's certificate (`None` over plaintext): its
    /// commands carry it, and their request ids are scoped by it.
    caller: Option<Arc<str>>,
}

impl Db {
    /// Builds the request layer over a running node.
    pub fn new(
        node: NodeHandle,
        state: Published<ReadView>,
        hub: WatchHub,
        timeout: Duration,
        shutdown: CancellationToken,
        read_retries: IntCounter,
    ) -> Self {
        Db {
            node,
            state,
            hub,
            timeout,
            shutdown,
            read_retries,
            caller: None,
        }
    }

    /// This handle, acting for a caller with `role` (from its
    /// certificate). Its request ids live in that role's own space of the
    /// exactly-once cache, so another role replaying an id gets its own
    /// fresh answer, never this caller's; and its lease keep-alives and
    /// revokes are checked against the lease's keys.
    pub fn for_caller(&self, role: Option<String>) -> Db {
        Db {
            caller: role.map(Arc::from),
            ..self.clone()
        }
    }

    /// The node handle (status, leader).
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            member_id: self.node.id,
            revision,
            raft_term: self.node.shared.term.load(Ordering::Acquire),
        })
    }

    /// Reads keys (linearizable unless `stale`).
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        state_machine::validate_range(&req)?;
        // A read at a revision this node has already applied needs no
        // ReadIndex round: that revision is committed and history never
        // changes, so every node answers it the same. (Later revisions, or
        // "now", still go through the barrier.)
        let view = if req.stale {
            self.view_for_stale_read().await?
        } else {
            if !self.applied_here(req.revision) {
                self.read_barrier().await?;
            }
            self.state.load()
        };
        let mut resp = state_machine::range_at(&view, &req)?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.header(revision);
        Ok(resp)
    }

    /// Whether `revision` names a past revision this node has applied:
    /// committed history, the same on every node, readable without a
    /// ReadIndex round.
    fn applied_here(&self, revision: i64) -> bool {
        revision > 0 && revision <= self.state.load().revision
    }

    async fn read_txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        // Without compares, ranges all at revisions applied here are
        // history: no ReadIndex round, as for a single range.
        let history_only = req.compare.is_empty()
            && !req.success.is_empty()
            && req.success.iter().all(|op| {
                matches!(&op.request, Some(request_op::Request::Range(r))
                    if self.applied_here(r.revision))
            });
        if !history_only {
            self.read_barrier().await?;
        }
        let mut resp = state_machine::read_txn(&self.state.load(), &req)?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.header(revision);
        Ok(resp)
    }

    /// Writes one key.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.write(req).await
    }

    /// Deletes a key or a prefix.
    pub async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.write(req).await
    }

    /// Runs a transaction. One that only reads is served like a read
    /// (ReadIndex, then the local replica) without a log entry.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        if req.is_read_only() {
            return self.read_txn(req).await;
        }
        self.write(req).await
    }

    /// Drops the history up to a revision (a log entry, so every replica
    /// drops the same).
    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse> {
        self.write(req).await
    }

    /// Grants a lease (choosing its id when the caller gave 0).
    pub async fn lease_grant(&self, mut req: LeaseGrantRequest) -> Result<LeaseGrantResponse> {
        if req.id == 0 {
            req.id = rand::random_range(1..i64::MAX);
        }
        self.write(req).await
    }

    /// Renews a lease for another TTL.
    pub async fn lease_keep_alive(
        &self,
        req: LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse> {
        self.write(req).await
    }

    /// Revokes a lease and deletes its keys.
    pub async fn lease_revoke(&self, req: LeaseRevokeRequest) -> Result<LeaseRevokeResponse> {
        self.write(req).await
    }

    /// Why the node dropped a caller: its disk filled, or it is stopping.
    fn gone(&self) -> Error {
        if self.node.shared.disk_full.load(Ordering::Acquire) {
            Error::DiskFull("log writes failed".into())
        } else {
            Error::Stopped
        }
    }

    /// Proposes a write under its request id (made here if the caller gave
    /// none, and written into the request too) and returns its answer.
    async fn write<W: WriteRequest>(&self, mut req: W) -> Result<W::Response> {
        let id = take_id(req.request_id());
        let result = self.propose(id, req.into_op()).await;
        // In the span of the caller's request id (see agenda_common::net).
        tracing::debug!(ok = result.is_ok(), "write");
        W::answer(result?).map_err(unexpected)
    }

    /// This node's view of the cluster.
    pub async fn status(&self) -> Result<Status> {
        let (tx, rx) = oneshot::channel();
        self.node.send(Request::Status { reply: tx })?;
        tokio::time::timeout(self.timeout, rx)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
            .map_err(|_| Error::Stopped)
    }

    /// The whole state, including every write acknowledged before the
    /// call (a ReadIndex round first), with its revision and applied
    /// index: a backup.
    pub async fn snapshot(&self) -> Result<crate::state_machine::StateMachine> {
        self.read_barrier().await?;
        let (tx, rx) = oneshot::channel();
        self.node.send(Request::Snapshot { reply: tx })?;
        let sm = tokio::time::timeout(self.timeout, rx)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
            .map_err(|_| Error::Stopped)?;
        Ok(*sm)
    }

    /// Hands leadership to member `target` and waits (within the request
    /// deadline) until it leads.
    pub async fn move_leader(&self, target: u64) -> Result<u64> {
        let status = self.status().await?;
        if !status.voters.contains(&target) {
            return Err(Error::InvalidArgument(format!(
                "member {target} is not a voting member of the cluster"
            )));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let status = self.status().await?;
            if status.leader == target {
                return Ok(target);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(self.timeout));
            }
            // Asked again each round: a transfer in progress is not
            // restarted, and one lost with a leader change is.
            self.node.send(Request::TransferLeader(target))?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds a voting member.
    pub async fn member_add(&self, req: MemberAddRequest) -> Result<MemberChangeResponse> {
        if req.id == 0 {
            return Err(Error::InvalidArgument("member id must be positive".into()));
        }
        crate::config::check_addr(&req.addr).map_err(Error::InvalidArgument)?;
        let status = self.status().await?;
        if status.members.contains_key(&req.id) {
            return Err(Error::FailedPrecondition(format!(
                "member {} is already in the cluster",
                req.id
            )));
        }
        self.member_change(req.id, req.addr, req.request_id, true)
            .await
    }

    /// Removes a member.
    pub async fn member_remove(&self, req: MemberRemoveRequest) -> Result<MemberChangeResponse> {
        let status = self.status().await?;
        if !status.members.contains_key(&req.id) {
            return Err(Error::NotFound(format!(
                "member {} is not in the cluster",
                req.id
            )));
        }
        if status.members.len() == 1 {
            return Err(Error::FailedPrecondition(
                "cannot remove the last member".into(),
            ));
        }
        self.member_change(req.id, String::new(), req.request_id, false)
            .await
    }

    async fn member_change(
        &self,
        id: u64,
        addr: String,
        mut request_id: String,
        add: bool,
    ) -> Result<MemberChangeResponse> {
        let change = MemberChange {
            request_id: take_id(&mut request_id),
            id,
            addr,
            proposed_at_ms: now_ms(),
        };
        let deadline = Instant::now() + self.timeout;
        loop {
            let (tx, rx) = oneshot::channel();
            self.node.send(Request::MemberChange {
                change: change.clone(),
                add,
                reply: tx,
            })?;
            match self.wait(rx, deadline).await? {
                Some(command_result::Result::MemberChange(r)) => return Ok(r),
                Some(command_result::Result::Error(e)) => return Err(refusal_to_error(&e)),
                Some(other) => return Err(unexpected(other)),
                None => self.check_deadline(deadline)?,
            }
        }
    }

    async fn propose(&self, request_id: String, op: command::Op) -> Result<command_result::Result> {
        let (request_id, caller_role) = match &self.caller {
            Some(role) => (format!("{role}/{request_id}"), role.to_string()),
            None => (request_id, String::new()),
        };
        let cmd = Command {
            request_id,
            proposed_at_ms: now_ms(),
            op: Some(op),
            caller_role,
        };
        let deadline = Instant::now() + self.timeout;
        loop {
            let (tx, rx) = oneshot::channel();
            self.node.send(Request::Propose {
                cmd: cmd.clone(),
                reply: tx,
            })?;
            match self.wait(rx, deadline).await? {
                Some(command_result::Result::Error(e)) => return Err(refusal_to_error(&e)),
                Some(r) => return Ok(r),
                None => self.check_deadline(deadline)?,
            }
        }
    }

    /// Waits for one attempt's answer; `None` means "try again".
    async fn wait(
        &self,
        rx: oneshot::Receiver<Result<agenda_proto::raft::CommandResult>>,
        deadline: Instant,
    ) -> Result<Option<command_result::Result>> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(REPROPOSE_AFTER);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(res))) => Ok(res.result),
            Ok(Ok(Err(Error::NoLeader))) => {
                tokio::time::sleep(NO_LEADER_BACKOFF).await;
                Ok(None)
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) if !self.node.shared.running.load(Ordering::Acquire) => Err(self.gone()),
            Ok(Err(_)) => Ok(None),
            Err(_) => Ok(None),
        }
    }

    fn check_deadline(&self, deadline: Instant) -> Result<()> {
        if Instant::now() < deadline {
            return Ok(());
        }
        if self.node.leader() == 0 {
            Err(Error::NoLeader)
        } else {
            Err(Error::Timeout(self.timeout))
        }
    }

    /// Returns once a linearizable local read is safe.
    async fn read_barrier(&self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let (tx, rx) = oneshot::channel();
            self.node.send(Request::ReadIndex { reply: tx })?;
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(REPROPOSE_AFTER);
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(Error::NoLeader))) => tokio::time::sleep(NO_LEADER_BACKOFF).await,
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) if !self.node.shared.running.load(Ordering::Acquire) => {
                    return Err(self.gone());
                }
                // Dropped by a leader change: ask again.
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                // No answer yet: the round was lost; ask again.
                Err(_) => self.read_retries.inc(),
            }
            self.check_deadline(deadline)?;
        }
    }

    /// Starts a watch: replays history from `start_revision`, then streams
    /// live revisions. The stream ends with an error if the watcher falls
    /// behind; it can resume from the last revision it saw plus one.
    pub async fn watch(&self, req: WatchRequest) -> Result<mpsc::Receiver<Result<WatchResponse>>> {
        if req.key.is_empty() && !req.prefix {
            return Err(Error::InvalidArgument(
                "key must not be empty (set prefix to watch everything)".into(),
            ));
        }
        if req.start_revision < 0 {
            return Err(Error::InvalidArgument(
                "start_revision must not be negative".into(),
            ));
        }
        let mut live = self.hub.subscribe();
        // Everything up to here went to watchers before `live` existed, so
        // the replay must cover it.
        let delivered = self.node.shared.delivered_revision.load(Ordering::Acquire);
        let start = if req.start_revision == 0 {
            delivered + 1
        } else {
            req.start_revision
        };
        // Compaction is judged on the view the replay reads: an older one
        // could still show history that is gone, and the replay would then
        // silently start later than asked.
        let view = self.view_at_least(delivered).await?;
        if start <= view.compact_revision {
            return Err(Error::Compacted {
                requested: start,
                oldest: view.compact_revision + 1,
            });
        }
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            let mut last = start - 1;
            let history = state_machine::history_since(&view, start);
            let mut chunk = Vec::new();
            for (rev, events) in history {
                chunk.extend(filter(&req, events.iter().cloned()));
                last = rev;
                if chunk.len() >= REPLAY_CHUNK && !this.emit(&tx, rev, &mut chunk).await {
                    return;
                }
            }
            if !chunk.is_empty() && !this.emit(&tx, last, &mut chunk).await {
                return;
            }
            let mut progress = tokio::time::interval(WATCH_PROGRESS_EVERY);
            progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = progress.tick() => {
                        if this.node.shared.leader.load(Ordering::Acquire) != 0
                            && !this.emit(&tx, last, &mut Vec::new()).await
                        {
                            return;
                        }
                    }
                    item = live.recv() => match item {
                        Ok(batch) if batch.revision > last + 1 => {
                            // Revisions were skipped: this node installed a
                            // snapshot from the leader, which carries no
                            // history, so the ones between never reach its
                            // watchers (found by the simulator: the watch
                            // went on past the gap as though nothing was
                            // missed). The watcher resumes where it was,
                            // on a node that has them, or learns they are
                            // compacted.
                            let _ = tx.send(Err(Error::FailedPrecondition(format!(
                                "this node skipped revisions {}..{} (it caught up by snapshot); resume from revision {}",
                                last + 1, batch.revision - 1, last + 1
                            )))).await;
                            return;
                        }
                        Ok(batch) if batch.revision > last => {
                            last = batch.revision;
                            let mut events = filter(&req, batch.events.iter().cloned());
                            if !events.is_empty() && !this.emit(&tx, last, &mut events).await {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(Err(Error::FailedPrecondition(format!(
                                "watcher fell behind; resume from revision {}", last + 1
                            )))).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                    () = this.shutdown.cancelled() => return,
                }
            }
        });
        Ok(rx)
    }

    /// The view for a `stale` read: the published one, unless it is older
    /// than `node::STALE_READ_BOUND` and this node has applied more since.
    async fn view_for_stale_read(&self) -> Result<Arc<ReadView>> {
        let view = self.state.load();
        if view.taken.elapsed() <= node::STALE_READ_BOUND {
            return Ok(view);
        }
        self.view_at_least(self.node.shared.delivered_revision.load(Ordering::Acquire))
            .await
    }

    /// Readers' view, made current first if it is older than `revision`
    /// (the node publishes it lazily, see `node::PUBLISH_EVERY`).
    async fn view_at_least(&self, revision: i64) -> Result<Arc<ReadView>> {
        let view = self.state.load();
        if view.revision >= revision {
            return Ok(view);
        }
        let (reply, done) = oneshot::channel();
        self.node.send(Request::Publish { reply })?;
        done.await.map_err(|_| Error::Stopped)?;
        Ok(self.state.load())
    }

    async fn emit(
        &self,
        tx: &mpsc::Sender<Result<WatchResponse>>,
        revision: i64,
        events: &mut Vec<agenda_proto::db::Event>,
    ) -> bool {
        let resp = WatchResponse {
            header: self.header(revision),
            events: std::mem::take(events),
        };
        tx.send(Ok(resp)).await.is_ok()
    }
}

fn filter(
    req: &WatchRequest,
    events: impl IntoIterator<Item = agenda_proto::db::Event>,
) -> Vec<agenda_proto::db::Event> {
    events
        .into_iter()
        .filter(|e| {
            e.kv.as_ref()
                .is_some_and(|kv| state_machine::selects(&req.key, req.prefix, &kv.key))
        })
        .map(|mut e| {
            if !req.prev_kv {
                e.prev_kv = None;
            }
            e
        })
        .collect()
}

/// A request that is proposed as one command and answered by one kind of
/// result.
trait WriteRequest {
    /// What answers it.
    type Response;
    /// Its request id field.
    fn request_id(&mut self) -> &mut String;
    /// The command that carries it.
    fn into_op(self) -> command::Op;
    /// Its answer, or (an id reused for another kind of request) the
    /// result that came instead.
    fn answer(
        result: command_result::Result,
    ) -> std::result::Result<Self::Response, command_result::Result>;
}

/// Implements [`WriteRequest`] for requests whose command and result
/// variants share a name.
macro_rules! write_requests {
    ($($variant:ident: $req:ty => $resp:ty),* $(,)?) => {$(
        impl WriteRequest for $req {
            type Response = $resp;
            fn request_id(&mut self) -> &mut String {
                &mut self.request_id
            }
            fn into_op(self) -> command::Op {
                command::Op::$variant(self)
            }
            fn answer(
                result: command_result::Result,
            ) -> std::result::Result<$resp, command_result::Result> {
                match result {
                    command_result::Result::$variant(r) => Ok(r),
                    other => Err(other),
                }
            }
        }
    )*};
}

write_requests! {
    Put: PutRequest => PutResponse,
    Delete: DeleteRequest => DeleteResponse,
    Txn: TxnRequest => TxnResponse,
    LeaseGrant: LeaseGrantRequest => LeaseGrantResponse,
    LeaseKeepAlive: LeaseKeepAliveRequest => LeaseKeepAliveResponse,
    LeaseRevoke: LeaseRevokeRequest => LeaseRevokeResponse,
    Compact: CompactionRequest => CompactionResponse,
}

/// Uses the caller's request id, or makes one so internal retries are
/// still exactly-once.
fn take_id(id: &mut String) -> String {
    if id.is_empty() {
        // Time-ordered, like the client library's ids (see DbClient).
        *id = format!("{:016x}{:016x}", now_ms(), rand::random::<u64>());
    }
    id.clone()
}

fn unexpected(_: command_result::Result) -> Error {
    Error::InvalidArgument("request_id was already used for a different operation".into())
}
