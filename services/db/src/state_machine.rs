//! The replicated key-value state: what applying a committed command does.
//!
//! The whole state lives in memory, in persistent (copy-on-write) maps, the
//! way etcd keeps its index in memory. Why: applying a command to a disk
//! B-tree cost about half of a node's CPU at load, while a clone of these
//! maps is O(1), so the node can publish a consistent copy to readers after
//! every apply batch and hand one to the state-file writer
//! (`state_file.rs`) without ever stopping the raft thread. Durability comes
//! from the raft log, which is kept until a state file covers it.
//!
//! Pure with respect to its inputs: a command and the current state give
//! the same result on every replica. Time comes only from the command
//! (`proposed_at_ms`), never from the local clock, and a command is fully
//! validated before anything is written, so a refused command leaves no
//! trace but its (deduplicated) error result.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use agenda_proto::db::{
    compare, event, request_op, response_op, Compare, DeleteRequest, DeleteResponse, Event,
    KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseRevokeResponse, Member, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use agenda_proto::raft::{
    command, command_error, command_result, Applied, Command, CommandError, CommandResult,
    DedupRecord, Lease, MemberChange, Members, RevisionRecord, SnapshotData,
};
use imbl::{HashMap, OrdMap, OrdSet};
use prost::Message as _;
use raft::prelude::{ConfState, Snapshot};

use crate::access;
use crate::error::{Error, Result};

/// How long a request id is remembered for exactly-once retries. Clients
/// retry within their request deadline (the shared client's is 10 s); the
/// records cost memory and state-file size (about 200 bytes per write in
/// the window), so the margin is six deadlines, not more.
pub const DEDUP_RETENTION_MS: u64 = 60 * 1000;
/// Old dedup records and history are expired in rounds, every `GC_EVERY`
/// entries (or revisions), at most `GC_BATCH` at a time: never a scan per
/// write, never a long pause. The triggers depend only on replicated state,
/// so every replica expires the same records at the same index.
const GC_EVERY: u64 = 64;
/// Most records expired in one round.
const GC_BATCH: usize = 4 * GC_EVERY as usize;
/// Shortest lease: a keep-alive must have time to come back inside it.
pub const MIN_LEASE_TTL_MS: i64 = 100;
/// Upper bound on key size, as etcd's default request limits suggest.
pub const MAX_KEY_BYTES: usize = 4096;
/// Upper bound on value size.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// What one applied command changed, for the node to publish after commit.
#[derive(Debug, Default)]
pub struct Effects {
    /// Events of the new revision, if the command wrote anything.
    pub revision: Option<(i64, Arc<Vec<Event>>)>,
    /// Lease bookkeeping for the leader's expiry clock.
    pub lease: Option<LeaseEffect>,
}

/// Lease changes the in-memory expiry clock must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEffect {
    /// A lease was granted with this TTL (milliseconds).
    Granted(i64, i64),
    /// A lease was kept alive.
    Renewed(i64),
    /// A lease is gone.
    Revoked(i64),
}

/// A key of the map: shared, so the copy-on-write of a tree node after a
/// publish copies pointers, not data (one atomic increment per key; `Bytes`
/// cost an allocation on the first clone and twice the size).
type Key = Arc<[u8]>;

/// The maps of the state. Values sit behind `Arc` and keys are [`Key`]s.
#[derive(Clone, Default)]
struct Tables {
    /// Live keys.
    kv: OrdMap<Key, Arc<KeyValue>>,
    /// Lease id -> TTL in seconds.
    /// Lease id -> TTL in milliseconds.
    leases: OrdMap<i64, i64>,
    /// Keys attached to each lease, so a revoke finds them without a scan.
    lease_keys: OrdSet<(i64, Key)>,
    /// Per-revision events, for Watch replay and past reads.
    history: OrdMap<i64, Arc<Vec<Event>>>,
    /// Exactly-once: request id -> its first result.
    dedup: HashMap<Arc<str>, Arc<Applied>>,
    /// Dedup records by age, so expiry is a range scan.
    dedup_age: OrdSet<(u64, Arc<str>)>,
    /// Keys under [`AUDIT_PREFIX`] (counted, not scanned, for the cap).
    audit_keys: usize,
}

/// The audit log's prefix: append-only for every role (`access`), and
/// capped here at [`AUDIT_KEEP`] keys: a put of a new entry beyond the cap
/// removes the oldest one (keys are time-ordered) in the same revision.
/// Decided from the log alone, so every replica keeps the same entries.
pub const AUDIT_PREFIX: &[u8] = crate::access::AUDIT.as_bytes();

/// The audit entry (key, JSON) of a membership change that took effect,
/// in the shape of the services' entries (`agenda_calendar::audit`).
fn member_change_audit(change: &MemberChange, added: bool, index: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rand = [0u8; 10];
    rand[2..].copy_from_slice(&index.to_be_bytes());
    let id = uuid::Builder::from_unix_timestamp_millis(change.proposed_at_ms, &rand).into_uuid();
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(
        i64::try_from(change.proposed_at_ms).unwrap_or(0),
    )
    .unwrap_or_default();
    let entry = serde_json::json!({
        "id": id,
        "at": at,
        "actor_id": null,
        "actor": "operator",
        "action": if added { "db_member_added" } else { "db_member_removed" },
        "source": "",
        "details": {"member_id": change.id, "address": change.addr, "log_index": index},
    });
    let key = [AUDIT_PREFIX, id.to_string().as_bytes()].concat();
    (key, entry.to_string().into_bytes())
}

/// Audit entries kept (they live in memory like everything else).
pub const AUDIT_KEEP: usize = if cfg!(test) { 5 } else { 200_000 };

/// The replicated state as of `applied`. Cloning is O(1).
#[derive(Clone)]
pub struct StateMachine {
    /// (index, term) of the last applied entry.
    pub applied: (u64, u64),
    /// Current store revision.
    pub revision: i64,
    /// Oldest revision whose history is gone (watch/range below it fail).
    pub compact_revision: i64,
    /// Member id -> gRPC address, as of `applied`.
    pub members: Arc<BTreeMap<u64, String>>,
    /// The raft configuration as of `applied`.
    pub conf_state: ConfState,
    t: Tables,
    /// Number of revisions of history kept.
    history_keep: i64,
    /// Most bytes of history kept (encoded size of its events).
    history_max_bytes: u64,
    /// Encoded size of the history kept now.
    history_bytes: u64,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("applied", &self.applied)
            .field("revision", &self.revision)
            .field("compact_revision", &self.compact_revision)
            .field("keys", &self.t.kv.len())
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// An empty state (a new node, before bootstrap or a snapshot).
    pub fn new(history_keep: i64) -> Self {
        StateMachine {
            applied: (0, 0),
            revision: 0,
            compact_revision: 0,
            members: Arc::default(),
            conf_state: ConfState::default(),
            t: Tables::default(),
            history_keep: history_keep.max(1),
            history_max_bytes: u64::MAX,
            history_bytes: 0,
        }
    }

    /// Records the member list (bootstrap and conf changes).
    pub fn set_members(&mut self, members: BTreeMap<u64, String>) {
        self.members = Arc::new(members);
    }

    /// The members as protobuf records.
    pub fn member_list(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|(id, addr)| Member {
                id: *id,
                addr: addr.clone(),
            })
            .collect()
    }

    /// Header for answers produced at the current state.
    pub fn header(&self, member_id: u64, term: u64) -> ResponseHeader {
        ResponseHeader {
            member_id,
            revision: self.revision,
            raft_term: term,
        }
    }

    /// The current value of one key.
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.t.kv.get(key).map(|kv| kv.as_ref())
    }

    /// What readers get to see of the current state (O(1)).
    pub fn view(&self) -> ReadView {
        ReadView {
            revision: self.revision,
            compact_revision: self.compact_revision,
            taken: Instant::now(),
            kv: self.t.kv.clone(),
            history: self.t.history.clone(),
        }
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.t.kv.len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.t.kv.is_empty()
    }

    /// Looks up a request id's first result, if it is still remembered.
    pub fn dedup_lookup(&self, request_id: &str) -> Option<CommandResult> {
        if request_id.is_empty() {
            return None;
        }
        self.t.dedup.get(request_id).and_then(|a| a.result.clone())
    }

    /// Records an applied membership change entry (the node has applied it
    /// to raft's configuration and the member list): its dedup record is
    /// timed by its proposer, like a command's, so every replica expires
    /// the same records at the same index.
    ///
    /// A change that took effect is also written to the audit log (see
    /// [`AUDIT_PREFIX`]): an entry whose id and time come from the log
    /// (the proposer's clock, the entry's index), so every replica writes
    /// the same one.
    pub fn record_member_change(
        &mut self,
        index: u64,
        term: u64,
        change: &MemberChange,
        added: bool,
        result: &CommandResult,
    ) -> Effects {
        self.applied = (index, term);
        let mut effects = Effects::default();
        if !matches!(result.result, Some(command_result::Result::Error(_)) | None) {
            let mut w = Writer::new(self.revision + 1);
            let (key, value) = member_change_audit(change, added, index);
            w.put(
                &mut self.t,
                &PutRequest {
                    key,
                    value,
                    ..Default::default()
                },
            );
            self.finish(w, &mut effects);
        }
        self.dedup_record(&change.request_id, change.proposed_at_ms, result);
        effects
    }

    /// Remembers a request id's result and expires old ones. `at_ms` comes
    /// from the log (the proposer's clock), never from this node's.
    pub fn dedup_record(&mut self, request_id: &str, at_ms: u64, result: &CommandResult) {
        if !request_id.is_empty() {
            let id: Arc<str> = Arc::from(request_id);
            let rec = Applied {
                result: Some(result.clone()),
                at_ms,
            };
            self.t.dedup.insert(id.clone(), Arc::new(rec));
            self.t.dedup_age.insert((at_ms, id));
        }
        if !self.applied.0.is_multiple_of(GC_EVERY) {
            return;
        }
        let cutoff = at_ms.saturating_sub(DEDUP_RETENTION_MS);
        let old: Vec<(u64, Arc<str>)> = self
            .t
            .dedup_age
            .range(..(cutoff, Arc::from("")))
            .take(GC_BATCH)
            .cloned()
            .collect();
        for rec in old {
            self.t.dedup.remove(&rec.1);
            self.t.dedup_age.remove(&rec);
        }
    }

    /// Applies one client command at (index, term). Refusals become an
    /// error result; an `Err` means the command could not be applied at all.
    pub fn apply(
        &mut self,
        index: u64,
        term: u64,
        member_id: u64,
        cmd: &Command,
    ) -> Result<(CommandResult, Effects)> {
        self.applied = (index, term);
        if let Some(prev) = self.dedup_lookup(&cmd.request_id) {
            return Ok((prev, Effects::default()));
        }
        let mut effects = Effects::default();
        let outcome = match &cmd.op {
            Some(command::Op::Put(req)) => self.validate_put(req).map(|()| {
                let mut w = Writer::new(self.revision + 1);
                let prev = w.put(&mut self.t, req);
                self.finish(w, &mut effects);
                command_result::Result::Put(PutResponse {
                    header: Some(self.header(member_id, term)),
                    prev_kv: prev,
                })
            }),
            Some(command::Op::Delete(req)) => validate_key(&req.key, req.prefix).map(|()| {
                let mut w = Writer::new(self.revision + 1);
                let prev = w.delete(&mut self.t, req);
                self.finish(w, &mut effects);
                command_result::Result::Delete(DeleteResponse {
                    header: Some(self.header(member_id, term)),
                    deleted: prev.len() as i64,
                    prev_kvs: if req.prev_kv { prev } else { Vec::new() },
                })
            }),
            Some(command::Op::Txn(req)) => self.txn(req, member_id, term, &mut effects),
            Some(command::Op::LeaseGrant(req)) => {
                let ttl_ms = lease_ttl_ms(req);
                self.lease_grant(req.id, ttl_ms).map(|()| {
                    effects.lease = Some(LeaseEffect::Granted(req.id, ttl_ms));
                    command_result::Result::LeaseGrant(LeaseGrantResponse {
                        header: Some(self.header(member_id, term)),
                        id: req.id,
                        ttl: ttl_secs(ttl_ms),
                        ttl_ms,
                    })
                })
            }
            Some(command::Op::LeaseKeepAlive(req)) => self
                .lease_ttl(req.id)
                .and_then(|ttl| self.lease_access(&cmd.caller_role, req.id).map(|()| ttl))
                .map(|ttl_ms| {
                    effects.lease = Some(LeaseEffect::Renewed(req.id));
                    command_result::Result::LeaseKeepAlive(LeaseKeepAliveResponse {
                        header: Some(self.header(member_id, term)),
                        id: req.id,
                        ttl: ttl_secs(ttl_ms),
                        ttl_ms,
                    })
                }),
            Some(command::Op::LeaseRevoke(req)) => self
                .lease_ttl(req.id)
                .and_then(|_| self.lease_access(&cmd.caller_role, req.id))
                .map(|()| {
                    let mut w = Writer::new(self.revision + 1);
                    w.revoke(&mut self.t, req.id);
                    self.finish(w, &mut effects);
                    effects.lease = Some(LeaseEffect::Revoked(req.id));
                    command_result::Result::LeaseRevoke(LeaseRevokeResponse {
                        header: Some(self.header(member_id, term)),
                    })
                }),
            None => Err(Error::InvalidArgument("empty command".into())),
        };
        let result = match outcome {
            Ok(r) => CommandResult { result: Some(r) },
            Err(e) => CommandResult {
                result: Some(command_result::Result::Error(refusal(e)?)),
            },
        };
        self.dedup_record(&cmd.request_id, cmd.proposed_at_ms, &result);
        Ok((result, effects))
    }

    /// Commits a writer's revision (if it wrote) and trims history.
    fn finish(&mut self, w: Writer, effects: &mut Effects) {
        if w.events.is_empty() {
            return;
        }
        self.revision = w.rev;
        self.history_bytes += events_size(&w.events);
        // History and the watchers share one copy of the events.
        let events = Arc::new(w.events);
        self.t.history.insert(w.rev, events.clone());
        effects.revision = Some((w.rev, events));
        let keep_from = self.revision - self.history_keep;
        let slack = (GC_EVERY as i64).min(self.history_keep);
        let by_count = keep_from - self.compact_revision >= slack;
        if !by_count && self.history_bytes <= self.history_max_bytes {
            return;
        }
        // Oldest first, never the newest revision: those past the count,
        // then more while the bytes are over their limit.
        let mut removed = 0;
        while removed < GC_BATCH {
            let Some((rev, events)) = self.t.history.get_min().map(|(r, e)| (*r, e.clone())) else {
                break;
            };
            if rev >= self.revision
                || (rev > keep_from && self.history_bytes <= self.history_max_bytes)
            {
                break;
            }
            self.t.history.remove(&rev);
            self.history_bytes = self.history_bytes.saturating_sub(events_size(&events));
            self.compact_revision = rev;
            removed += 1;
        }
        if by_count && removed == 0 {
            self.compact_revision = self.compact_revision.max(keep_from);
        }
    }

    /// Caps the bytes of history kept (besides the revision count).
    pub fn set_history_bytes(&mut self, bytes: u64) {
        self.history_max_bytes = bytes;
    }

    fn validate_put(&self, req: &PutRequest) -> Result<()> {
        validate_key(&req.key, false)?;
        if req.value.len() > MAX_VALUE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                req.value.len()
            )));
        }
        if req.lease != 0 && !self.t.leases.contains_key(&req.lease) {
            return Err(Error::NotFound(format!("lease {} not found", req.lease)));
        }
        Ok(())
    }

    fn txn(
        &mut self,
        req: &TxnRequest,
        member_id: u64,
        term: u64,
        effects: &mut Effects,
    ) -> Result<command_result::Result> {
        for c in &req.compare {
            validate_key(&c.key, false)?;
        }
        for op in req.success.iter().chain(&req.failure) {
            match &op.request {
                Some(request_op::Request::Put(p)) => self.validate_put(p)?,
                Some(request_op::Request::Delete(d)) => validate_key(&d.key, d.prefix)?,
                Some(request_op::Request::Range(r)) if r.revision != 0 => {
                    return Err(Error::InvalidArgument(
                        "a txn that writes reads the latest state: range revision must be 0".into(),
                    ))
                }
                Some(request_op::Request::Range(r)) => validate_range(r)?,
                None => return Err(Error::InvalidArgument("empty txn operation".into())),
            }
        }
        let succeeded = req
            .compare
            .iter()
            .all(|c| compare_holds(c, self.get(&c.key)));
        let ops: &[RequestOp] = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut w = Writer::new(self.revision + 1);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let header = Some(self.header(member_id, term));
            let resp = match &op.request {
                Some(request_op::Request::Put(p)) => {
                    let prev = w.put(&mut self.t, p);
                    response_op::Response::Put(PutResponse {
                        header,
                        prev_kv: prev,
                    })
                }
                Some(request_op::Request::Delete(d)) => {
                    let prev = w.delete(&mut self.t, d);
                    response_op::Response::Delete(DeleteResponse {
                        header,
                        deleted: prev.len() as i64,
                        prev_kvs: if d.prev_kv { prev } else { Vec::new() },
                    })
                }
                Some(request_op::Request::Range(r)) => {
                    let mut resp = range(&self.t.kv, r);
                    resp.header = header;
                    response_op::Response::Range(resp)
                }
                None => unreachable!("validated above"),
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        self.finish(w, effects);
        Ok(command_result::Result::Txn(TxnResponse {
            header: Some(self.header(member_id, term)),
            succeeded,
            responses,
        }))
    }

    fn lease_grant(&mut self, id: i64, ttl_ms: i64) -> Result<()> {
        if ttl_ms < MIN_LEASE_TTL_MS {
            return Err(Error::InvalidArgument(format!(
                "lease ttl must be at least {MIN_LEASE_TTL_MS} ms (ttl_ms) or 1 second (ttl), got {ttl_ms} ms"
            )));
        }
        if id <= 0 {
            return Err(Error::InvalidArgument("lease id must be positive".into()));
        }
        if self.t.leases.contains_key(&id) {
            return Err(Error::FailedPrecondition(format!(
                "lease {id} already exists"
            )));
        }
        self.t.leases.insert(id, ttl_ms);
        Ok(())
    }

    fn lease_ttl(&self, id: i64) -> Result<i64> {
        self.t
            .leases
            .get(&id)
            .copied()
            .ok_or_else(|| Error::NotFound(format!("lease {id} not found")))
    }

    /// Whether a caller with `role` may renew or revoke `lease`: it must
    /// be allowed to write every key attached to it (or a gateway could
    /// revoke the VIP lease and drop the VIP). Empty `role`: a plaintext
    /// deployment, nothing to check.
    fn lease_access(&self, role: &str, lease: i64) -> Result<()> {
        if role.is_empty() {
            return Ok(());
        }
        access::may_hold_leases(role).map_err(Error::PermissionDenied)?;
        let none: Key = Arc::from(&[][..]);
        for (_, key) in self
            .t
            .lease_keys
            .range((lease, none.clone())..(lease.saturating_add(1), none))
        {
            if !access::allows(role, &access::Span::key(key), access::Access::Write) {
                return Err(Error::PermissionDenied(format!(
                    "the {role} role may not renew or revoke lease {lease}: it holds key {:?}",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        Ok(())
    }

    /// Every lease with its TTL in milliseconds, to rebuild the expiry clock.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.t.leases.iter().map(|(id, ttl)| (*id, *ttl)).collect()
    }

    /// The state a lagging or new member needs (history stays behind: a
    /// restored node's history starts at the snapshot).
    pub fn snapshot_data(&self) -> SnapshotData {
        SnapshotData {
            kvs: self.t.kv.values().map(|kv| KeyValue::clone(kv)).collect(),
            leases: self
                .t
                .leases
                .iter()
                .map(|(id, ttl_ms)| Lease {
                    id: *id,
                    ttl: ttl_secs(*ttl_ms),
                    ttl_ms: *ttl_ms,
                })
                .collect(),
            dedup: self
                .t
                .dedup
                .iter()
                .map(|(id, applied)| DedupRecord {
                    request_id: id.to_string(),
                    applied: Some(Applied::clone(applied)),
                })
                .collect(),
            revision: self.revision,
            members: Some(Members {
                members: self.member_list(),
            }),
        }
    }

    /// The applied state as a raft snapshot (built by the leader for a
    /// member that is too far behind).
    pub fn to_snapshot(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        snap.set_data(self.snapshot_data().encode_to_vec().into());
        let m = snap.mut_metadata();
        m.index = self.applied.0;
        m.term = self.applied.1;
        m.set_conf_state(self.conf_state.clone());
        Ok(snap)
    }

    /// Replaces the whole state, configuration included, by a snapshot's.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        let data = SnapshotData::decode(snap.get_data())?;
        let meta = snap.get_metadata();
        self.load((meta.index, meta.term), meta.get_conf_state().clone(), data);
        self.compact_revision = self.revision;
        Ok(())
    }

    /// Replaces the state by `data` as of `applied`, with empty history.
    pub fn load(&mut self, applied: (u64, u64), conf_state: ConfState, data: SnapshotData) {
        let mut t = Tables::default();
        for kv in data.kvs {
            let key: Key = Arc::from(kv.key.as_slice());
            if kv.lease != 0 {
                t.lease_keys.insert((kv.lease, key.clone()));
            }
            if key.starts_with(AUDIT_PREFIX) {
                t.audit_keys += 1;
            }
            t.kv.insert(key, Arc::new(kv));
        }
        for l in data.leases {
            let ttl_ms = if l.ttl_ms > 0 { l.ttl_ms } else { l.ttl * 1000 };
            t.leases.insert(l.id, ttl_ms);
        }
        for d in data.dedup {
            if let Some(applied) = d.applied {
                let id: Arc<str> = Arc::from(d.request_id);
                t.dedup_age.insert((applied.at_ms, id.clone()));
                t.dedup.insert(id, Arc::new(applied));
            }
        }
        self.t = t;
        self.history_bytes = 0;
        self.applied = applied;
        self.revision = data.revision;
        self.compact_revision = data.revision;
        self.conf_state = conf_state;
        self.set_members(members_map(data.members.unwrap_or_default()));
    }

    /// History as records, oldest first (for the state file).
    pub fn history_records(&self) -> Vec<RevisionRecord> {
        self.t
            .history
            .iter()
            .map(|(rev, events)| RevisionRecord {
                revision: *rev,
                events: Vec::clone(events),
            })
            .collect()
    }

    /// Puts back history read from the state file; `compact_revision` is
    /// the oldest revision that is gone.
    pub fn restore_history(&mut self, compact_revision: i64, records: Vec<RevisionRecord>) {
        self.t.history = records
            .into_iter()
            .filter(|r| r.revision > compact_revision && r.revision <= self.revision)
            .map(|r| (r.revision, Arc::new(r.events)))
            .collect();
        self.history_bytes = self.t.history.values().map(|e| events_size(e)).sum();
        self.compact_revision = compact_revision;
    }
}

/// What readers see of the state: the keys, history and revisions. The raft
/// thread publishes one after every apply batch; it shares all unchanged
/// tree nodes with the live state, and a reader holds it as long as it
/// likes without holding anything up, like a read transaction. Dedup
/// records and leases stay out: copying their trees on every publish would
/// cost the raft thread for nothing.
#[derive(Clone)]
pub struct ReadView {
    /// Store revision of this view.
    pub revision: i64,
    /// Oldest revision whose history is gone.
    pub compact_revision: i64,
    /// When the view was taken from the state (how stale it may be).
    pub taken: Instant,
    kv: OrdMap<Key, Arc<KeyValue>>,
    history: OrdMap<i64, Arc<Vec<Event>>>,
}

/// A value one thread replaces and others read: the last stored `Arc`.
pub struct Published<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Published<T> {
    fn clone(&self) -> Self {
        Published(self.0.clone())
    }
}

impl<T> Published<T> {
    /// Publishes `value` as the first one.
    pub fn new(value: T) -> Self {
        Published(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The last value stored.
    pub fn load(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the published value.
    pub fn store(&self, value: T) {
        let old = {
            let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *cur, Arc::new(value))
        };
        // Freed outside the lock: readers never wait for a drop.
        drop(old);
    }
}

/// Applies the writes of one revision, collecting its events.
struct Writer {
    rev: i64,
    events: Vec<Event>,
}

impl Writer {
    fn new(rev: i64) -> Self {
        Writer {
            rev,
            events: Vec::new(),
        }
    }

    fn put(&mut self, t: &mut Tables, req: &PutRequest) -> Option<KeyValue> {
        let key: Key = Arc::from(req.key.as_slice());
        let mut stored = Arc::new(KeyValue {
            key: req.key.clone(),
            value: req.value.clone(),
            create_revision: self.rev,
            mod_revision: self.rev,
            version: 1,
            lease: req.lease,
        });
        // One descent of the tree for a new key (a separate lookup first
        // cost as much as the insert: perf); a key that existed is written
        // again with its create revision and version carried over, along
        // a path the first insert already made private.
        let prev = t.kv.insert(key.clone(), stored.clone());
        if let Some(p) = &prev {
            stored = Arc::new(KeyValue {
                create_revision: p.create_revision,
                version: p.version + 1,
                ..KeyValue::clone(&stored)
            });
            t.kv.insert(key.clone(), stored.clone());
            if p.lease != 0 && p.lease != req.lease {
                t.lease_keys.remove(&(p.lease, key.clone()));
            }
        }
        if req.lease != 0 {
            t.lease_keys.insert((req.lease, key));
        }
        let prev = prev.map(|p| KeyValue::clone(&p));
        // The caller gets the previous value only if the request asked.
        let asked = if req.prev_kv { prev.clone() } else { None };
        let new_audit_entry = prev.is_none() && req.key.starts_with(AUDIT_PREFIX);
        self.events.push(Event {
            r#type: event::EventType::Put as i32,
            kv: Some(KeyValue::clone(&stored)),
            prev_kv: prev,
        });
        if new_audit_entry {
            t.audit_keys += 1;
            if t.audit_keys > AUDIT_KEEP {
                let oldest =
                    t.kv.range(Arc::from(AUDIT_PREFIX)..)
                        .next()
                        .filter(|(k, _)| k.starts_with(AUDIT_PREFIX))
                        .map(|(_, kv)| KeyValue::clone(kv));
                if let Some(oldest) = oldest {
                    self.remove(t, &oldest);
                }
            }
        }
        asked
    }

    fn delete(&mut self, t: &mut Tables, req: &DeleteRequest) -> Vec<KeyValue> {
        let victims = if req.prefix {
            range(
                &t.kv,
                &RangeRequest {
                    key: req.key.clone(),
                    prefix: true,
                    ..Default::default()
                },
            )
            .kvs
        } else {
            t.kv.get(req.key.as_slice())
                .map(|kv| KeyValue::clone(kv))
                .into_iter()
                .collect()
        };
        for kv in &victims {
            self.remove(t, kv);
        }
        victims
    }

    fn revoke(&mut self, t: &mut Tables, lease: i64) {
        let none: Key = Arc::from(&[][..]);
        let keys: Vec<Key> = t
            .lease_keys
            .range((lease, none.clone())..(lease.saturating_add(1), none))
            .map(|(_, key)| key.clone())
            .collect();
        for key in keys {
            if let Some(kv) = t.kv.get(&key).map(|kv| KeyValue::clone(kv)) {
                self.remove(t, &kv);
            }
        }
        t.leases.remove(&lease);
    }

    fn remove(&mut self, t: &mut Tables, kv: &KeyValue) {
        if t.kv.remove(kv.key.as_slice()).is_some() && kv.key.starts_with(AUDIT_PREFIX) {
            t.audit_keys -= 1;
        }
        if kv.lease != 0 {
            t.lease_keys
                .remove(&(kv.lease, Arc::from(kv.key.as_slice())));
        }
        self.events.push(Event {
            r#type: event::EventType::Delete as i32,
            kv: Some(KeyValue {
                key: kv.key.clone(),
                mod_revision: self.rev,
                ..Default::default()
            }),
            prev_kv: Some(kv.clone()),
        });
    }
}

/// What one revision's events count against the history's byte limit.
fn events_size(events: &[Event]) -> u64 {
    events.iter().map(|e| e.encoded_len() as u64).sum()
}

/// Turns a deterministic refusal into a result; anything else is fatal.
fn refusal(e: Error) -> Result<CommandError> {
    let code = match &e {
        Error::InvalidArgument(_) => command_error::Code::InvalidArgument,
        Error::NotFound(_) => command_error::Code::NotFound,
        Error::FailedPrecondition(_) => command_error::Code::FailedPrecondition,
        Error::PermissionDenied(_) => command_error::Code::PermissionDenied,
        _ => return Err(e),
    };
    Ok(CommandError {
        code: code as i32,
        message: e.to_string(),
    })
}

/// A grant's TTL in milliseconds: `ttl_ms` when set, else whole seconds.
fn lease_ttl_ms(req: &agenda_proto::db::LeaseGrantRequest) -> i64 {
    if req.ttl_ms != 0 {
        req.ttl_ms
    } else {
        req.ttl.saturating_mul(1000)
    }
}

/// Milliseconds as whole seconds, rounded up (the `ttl` fields).
fn ttl_secs(ttl_ms: i64) -> i64 {
    (ttl_ms.max(0) + 999) / 1000
}

/// Converts a stored refusal back into an error for the caller.
pub fn refusal_to_error(e: &CommandError) -> Error {
    match command_error::Code::try_from(e.code) {
        Ok(command_error::Code::NotFound) => Error::NotFound(e.message.clone()),
        Ok(command_error::Code::FailedPrecondition) => Error::FailedPrecondition(e.message.clone()),
        Ok(command_error::Code::PermissionDenied) => Error::PermissionDenied(e.message.clone()),
        _ => Error::InvalidArgument(e.message.clone()),
    }
}

/// Member records as a map.
pub fn members_map(m: Members) -> BTreeMap<u64, String> {
    m.members.into_iter().map(|m| (m.id, m.addr)).collect()
}

fn validate_key(key: &[u8], prefix: bool) -> Result<()> {
    if key.is_empty() && !prefix {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a range request's fields.
pub fn validate_range(r: &RangeRequest) -> Result<()> {
    validate_key(&r.key, r.prefix)?;
    if r.prefix && !r.range_end.is_empty() {
        return Err(Error::InvalidArgument(
            "give either prefix or range_end, not both".into(),
        ));
    }
    if r.limit < 0 {
        return Err(Error::InvalidArgument("limit must not be negative".into()));
    }
    if r.revision < 0 {
        return Err(Error::InvalidArgument(
            "revision must not be negative".into(),
        ));
    }
    Ok(())
}

/// The first key after every key that starts with `prefix`, or `None` when
/// no such key exists (an empty or all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether `key` falls in what `(key, prefix)` selects.
pub fn selects(sel_key: &[u8], prefix: bool, key: &[u8]) -> bool {
    if prefix {
        key.starts_with(sel_key)
    } else {
        key == sel_key
    }
}

/// Whether `key` falls in what a range request selects: one key, a
/// prefix, or `[key, range_end)`.
fn range_selects(req: &RangeRequest, key: &[u8]) -> bool {
    if req.range_end.is_empty() {
        selects(&req.key, req.prefix, key)
    } else {
        req.key.as_slice() <= key && key < req.range_end.as_slice()
    }
}

/// Range over the current keys (used by reads and by txn range ops).
fn range(kv: &OrdMap<Key, Arc<KeyValue>>, req: &RangeRequest) -> RangeResponse {
    let mut resp = RangeResponse::default();
    if !req.prefix && req.range_end.is_empty() {
        if let Some(v) = kv.get(req.key.as_slice()) {
            resp.count = 1;
            if !req.count_only {
                resp.kvs.push(KeyValue::clone(v));
            }
        }
        return resp;
    }
    if !req.range_end.is_empty() && req.range_end <= req.key {
        return resp;
    }
    let end = if req.range_end.is_empty() {
        prefix_end(&req.key)
    } else {
        Some(req.range_end.clone())
    };
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
        Bound::Included(req.key.as_slice()),
        match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        },
    );
    for (_, v) in kv.range::<_, [u8]>(bounds) {
        resp.count += 1;
        if req.count_only {
            continue;
        }
        if req.limit > 0 && resp.kvs.len() as i64 >= req.limit {
            resp.more = true;
            continue;
        }
        resp.kvs.push(KeyValue::clone(v));
    }
    resp
}

/// Range as of `req.revision` (0 = now), undoing newer history.
pub fn range_at(sm: &ReadView, req: &RangeRequest) -> Result<RangeResponse> {
    let header = Some(ResponseHeader {
        revision: sm.revision,
        ..Default::default()
    });
    if req.revision == 0 || req.revision >= sm.revision {
        let mut resp = range(&sm.kv, req);
        resp.header = header;
        return Ok(resp);
    }
    if req.revision < sm.compact_revision {
        return Err(Error::Compacted {
            requested: req.revision,
            oldest: sm.compact_revision,
        });
    }
    let all = range(
        &sm.kv,
        &RangeRequest {
            key: req.key.clone(),
            prefix: req.prefix,
            range_end: req.range_end.clone(),
            ..Default::default()
        },
    );
    let mut state: BTreeMap<Vec<u8>, KeyValue> =
        all.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    for (_, events) in sm.history.range(req.revision + 1..).rev() {
        for ev in events.iter().rev() {
            let Some(kv) = &ev.kv else { continue };
            if !range_selects(req, &kv.key) {
                continue;
            }
            match &ev.prev_kv {
                Some(prev) => state.insert(kv.key.clone(), prev.clone()),
                None => state.remove(&kv.key),
            };
        }
    }
    let mut resp = RangeResponse {
        header,
        count: state.len() as i64,
        ..Default::default()
    };
    if !req.count_only {
        for kv in state.into_values() {
            if req.limit > 0 && resp.kvs.len() as i64 >= req.limit {
                resp.more = true;
                break;
            }
            resp.kvs.push(kv);
        }
    }
    Ok(resp)
}

/// Runs a read-only txn on one state: the compares against the current
/// keys pick the branch, whose ranges each read as of their own revision
/// (0: the state's).
pub fn read_txn(sm: &ReadView, req: &TxnRequest) -> Result<TxnResponse> {
    for c in &req.compare {
        validate_key(&c.key, false)?;
    }
    let ranges = |ops: &[RequestOp]| -> Result<Vec<RangeRequest>> {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::Range(r)) => validate_range(r).map(|()| r.clone()),
                _ => Err(Error::InvalidArgument("not a read-only txn".into())),
            })
            .collect()
    };
    let (success, failure) = (ranges(&req.success)?, ranges(&req.failure)?);
    let succeeded = req
        .compare
        .iter()
        .all(|c| compare_holds(c, sm.kv.get(c.key.as_slice()).map(|kv| kv.as_ref())));
    let mut responses = Vec::new();
    for r in if succeeded { success } else { failure } {
        responses.push(ResponseOp {
            response: Some(response_op::Response::Range(range_at(sm, &r)?)),
        });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader {
            revision: sm.revision,
            ..Default::default()
        }),
        succeeded,
        responses,
    })
}

/// Revisions after `from` (inclusive) still in history, oldest first.
pub fn history_since(sm: &ReadView, from: i64) -> Vec<(i64, Arc<Vec<Event>>)> {
    sm.history
        .range(from..)
        .map(|(rev, events)| (*rev, events.clone()))
        .collect()
}

/// Evaluates one txn compare against a key's current state.
pub fn compare_holds(c: &Compare, kv: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering;
    let target = compare::Target::try_from(c.target).unwrap_or(compare::Target::Value);
    let ord = match target {
        compare::Target::Value => match kv {
            Some(kv) => kv.value.as_slice().cmp(c.value.as_slice()),
            None => return false,
        },
        other => {
            let have = kv.map_or(0, |kv| match other {
                compare::Target::Version => kv.version,
                compare::Target::ModRevision => kv.mod_revision,
                compare::Target::CreateRevision => kv.create_revision,
                _ => kv.lease,
            });
            have.cmp(&c.number)
        }
    };
    match compare::Result::try_from(c.result).unwrap_or(compare::Result::Equal) {
        compare::Result::Equal => ord == Ordering::Equal,
        compare::Result::NotEqual => ord != Ordering::Equal,
        compare::Result::Less => ord == Ordering::Less,
        compare::Result::Greater => ord == Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenda_proto::db::{LeaseGrantRequest, LeaseRevokeRequest};

    struct Fixture {
        sm: StateMachine,
        index: u64,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                sm: StateMachine::new(1000),
                index: 0,
            }
        }

        fn apply(&mut self, id: &str, op: command::Op) -> (CommandResult, Effects) {
            self.apply_at(id, op, 1_000_000)
        }

        fn apply_at(&mut self, id: &str, op: command::Op, at_ms: u64) -> (CommandResult, Effects) {
            self.apply_as("", id, op, at_ms)
        }

        fn apply_as(
            &mut self,
            role: &str,
            id: &str,
            op: command::Op,
            at_ms: u64,
        ) -> (CommandResult, Effects) {
            self.index += 1;
            let cmd = Command {
                request_id: id.into(),
                proposed_at_ms: at_ms,
                caller_role: role.into(),
                op: Some(op),
            };
            self.sm.apply(self.index, 1, 1, &cmd).unwrap()
        }

        fn get(&self, key: &str) -> Option<KeyValue> {
            self.sm.get(key.as_bytes()).cloned()
        }
    }

    fn put(key: &str, value: &str) -> command::Op {
        command::Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    fn grant(id: i64, ttl: i64) -> command::Op {
        command::Op::LeaseGrant(LeaseGrantRequest {
            id,
            ttl,
            ..Default::default()
        })
    }

    fn revoke(id: i64) -> command::Op {
        command::Op::LeaseRevoke(LeaseRevokeRequest {
            id,
            ..Default::default()
        })
    }

    fn error_code(r: &CommandResult) -> Option<command_error::Code> {
        match &r.result {
            Some(command_result::Result::Error(e)) => command_error::Code::try_from(e.code).ok(),
            _ => None,
        }
    }

    /// A membership change that took effect is in the audit log, with its
    /// time from the log; a refused one is not.
    #[test]
    fn membership_changes_are_audited() {
        let mut sm = StateMachine::new(1000);
        let change = MemberChange {
            request_id: "m1".into(),
            id: 6,
            addr: "10.0.0.6:7006".into(),
            proposed_at_ms: 1_700_000_000_000,
        };
        let ok = CommandResult {
            result: Some(command_result::Result::MemberChange(Default::default())),
        };
        let effects = sm.record_member_change(7, 1, &change, true, &ok);
        assert!(effects.revision.is_some(), "watchers see it");
        let refused = CommandResult {
            result: Some(command_result::Result::Error(Default::default())),
        };
        sm.record_member_change(
            8,
            1,
            &MemberChange {
                request_id: "m2".into(),
                ..change.clone()
            },
            false,
            &refused,
        );
        let entries: Vec<serde_json::Value> = sm
            .snapshot_data()
            .kvs
            .iter()
            .filter(|kv| kv.key.starts_with(AUDIT_PREFIX))
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0]["action"], "db_member_added");
        assert_eq!(entries[0]["details"]["member_id"], 6);
        assert_eq!(entries[0]["at"], "2023-11-14T22:13:20Z");
    }

    /// Past the cap, each new audit entry takes the oldest one's place in
    /// the same revision; overwrites do not count; a replica loaded from
    /// the state counts the same and goes on alike.
    #[test]
    fn the_audit_log_keeps_the_newest_entries() {
        let audit = |i: usize| format!("/agenda/audit/{i:04}");
        let mut f = Fixture::new();
        for i in 0..AUDIT_KEEP + 3 {
            let (_, effects) = f.apply(&format!("a{i}"), put(&audit(i), "e"));
            let events = effects.revision.map(|(_, e)| e.len()).unwrap_or(0);
            assert_eq!(events, if i < AUDIT_KEEP { 1 } else { 2 }, "entry {i}");
        }
        f.apply("over", put(&audit(AUDIT_KEEP + 2), "again"));
        let kept = |sm: &StateMachine| -> Vec<String> {
            sm.snapshot_data()
                .kvs
                .iter()
                .filter(|kv| kv.key.starts_with(AUDIT_PREFIX))
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect()
        };
        let want: Vec<String> = (3..AUDIT_KEEP + 3).map(audit).collect();
        assert_eq!(kept(&f.sm), want);
        let mut copy = StateMachine::new(1000);
        copy.load(f.sm.applied, Default::default(), f.sm.snapshot_data());
        for sm in [&mut f.sm, &mut copy] {
            let cmd = Command {
                request_id: "next".into(),
                proposed_at_ms: 1_000_000,
                caller_role: String::new(),
                op: Some(put(&audit(AUDIT_KEEP + 3), "e")),
            };
            sm.apply(100, 1, 1, &cmd).unwrap();
        }
        assert_eq!(kept(&f.sm), kept(&copy));
        assert_eq!(kept(&copy).len(), AUDIT_KEEP);
        assert_eq!(kept(&copy)[0], audit(4));
    }

    #[test]
    fn puts_advance_revision_version_and_keep_create_revision() {
        let mut f = Fixture::new();
        f.apply("a", put("k", "1"));
        f.apply("b", put("k", "2"));
        let kv = f.get("k").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
        assert_eq!(kv.value, b"2");
        assert_eq!(f.sm.revision, 2);
    }

    #[test]
    fn a_repeated_request_id_returns_the_first_result_without_applying() {
        let mut f = Fixture::new();
        let (first, eff) = f.apply("same", put("k", "1"));
        assert!(eff.revision.is_some());
        let (again, eff) = f.apply("same", put("k", "1"));
        assert_eq!(first, again);
        assert!(eff.revision.is_none());
        assert_eq!(f.get("k").unwrap().version, 1);
        assert_eq!(f.sm.revision, 1);
    }

    #[test]
    fn dedup_records_expire_after_the_retention() {
        let mut f = Fixture::new();
        f.apply_at("old", put("k", "1"), 1_000);
        // Expiry runs every GC_EVERY entries.
        for i in 2..=GC_EVERY {
            f.apply_at(
                &format!("new{i}"),
                put("k", "2"),
                1_000 + DEDUP_RETENTION_MS + 1,
            );
        }
        assert!(f.sm.dedup_lookup("old").is_none());
        assert!(f.sm.dedup_lookup("new2").is_some());
    }

    #[test]
    fn txn_compares_pick_the_branch_atomically() {
        let mut f = Fixture::new();
        f.apply("1", put("k", "v"));
        let cas = |expect_version: i64, new: &str| {
            command::Op::Txn(TxnRequest {
                compare: vec![Compare {
                    key: b"k".to_vec(),
                    target: compare::Target::Version as i32,
                    result: compare::Result::Equal as i32,
                    number: expect_version,
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: b"k".to_vec(),
                        value: new.into(),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::Range(RangeRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    })),
                }],
                request_id: String::new(),
            })
        };
        let (r, _) = f.apply("2", cas(1, "w"));
        let Some(command_result::Result::Txn(t)) = r.result else {
            panic!("txn result expected")
        };
        assert!(t.succeeded);
        let (r, eff) = f.apply("3", cas(1, "x"));
        let Some(command_result::Result::Txn(t)) = r.result else {
            panic!("txn result expected")
        };
        assert!(!t.succeeded);
        assert!(
            eff.revision.is_none(),
            "a read-only branch writes no revision"
        );
        let Some(response_op::Response::Range(range)) = &t.responses[0].response else {
            panic!("range response expected")
        };
        assert_eq!(range.kvs[0].value, b"w");
    }

    #[test]
    fn compare_semantics_for_missing_keys_and_orders() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"b".to_vec(),
            version: 3,
            mod_revision: 9,
            ..Default::default()
        };
        let c =
            |target: compare::Target, result: compare::Result, value: &str, number: i64| Compare {
                key: b"k".to_vec(),
                target: target as i32,
                result: result as i32,
                value: value.into(),
                number,
            };
        use compare::{Result as R, Target as T};
        assert!(compare_holds(&c(T::Value, R::Equal, "b", 0), Some(&kv)));
        assert!(compare_holds(&c(T::Value, R::Greater, "a", 0), Some(&kv)));
        assert!(compare_holds(&c(T::Value, R::Less, "c", 0), Some(&kv)));
        assert!(!compare_holds(&c(T::Value, R::NotEqual, "x", 0), None));
        assert!(compare_holds(&c(T::Version, R::Equal, "", 0), None));
        assert!(compare_holds(
            &c(T::ModRevision, R::Greater, "", 8),
            Some(&kv)
        ));
        assert!(compare_holds(&c(T::Version, R::NotEqual, "", 2), Some(&kv)));
    }

    #[test]
    fn an_invalid_txn_writes_nothing() {
        let mut f = Fixture::new();
        let op = command::Op::Txn(TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: b"ok".to_vec(),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: b"bad".to_vec(),
                        lease: 42,
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        });
        let (r, _) = f.apply("t", op);
        assert_eq!(error_code(&r), Some(command_error::Code::NotFound));
        assert!(f.get("ok").is_none());
        assert_eq!(f.sm.revision, 0);
    }

    #[test]
    fn a_key_put_again_without_its_lease_survives_the_revoke() {
        let mut f = Fixture::new();
        f.apply("g", grant(7, 5));
        f.apply(
            "p1",
            command::Op::Put(PutRequest {
                key: "k".into(),
                value: "leased".into(),
                lease: 7,
                ..Default::default()
            }),
        );
        let (r, eff) = f.apply(
            "p2",
            command::Op::Put(PutRequest {
                key: "k".into(),
                value: "kept".into(),
                prev_kv: true,
                ..Default::default()
            }),
        );
        let Some(command_result::Result::Put(put)) = r.result else {
            panic!("not a put result: {r:?}");
        };
        assert_eq!(put.prev_kv.unwrap().lease, 7);
        let (_, events) = eff.revision.unwrap();
        assert_eq!(events[0].prev_kv.as_ref().unwrap().value, b"leased");
        assert_eq!(events[0].kv.as_ref().unwrap().version, 2);
        f.apply("r", revoke(7));
        let kv = f.get("k").unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.lease, kv.version),
            (&b"kept"[..], 0, 2)
        );
    }

    /// A gateway (read-only) or any role that may not write a lease's
    /// keys must not renew or revoke it: revoking the VIP lease would drop
    /// the VIP. Checked at apply, against the keys attached then.
    #[test]
    fn only_a_role_that_may_write_a_leases_keys_renews_or_revokes_it() {
        let mut f = Fixture::new();
        f.apply("g", grant(7, 5));
        f.apply(
            "p",
            command::Op::Put(PutRequest {
                key: b"/registry/vip/holder".to_vec(),
                value: b"gw-a".to_vec(),
                lease: 7,
                ..Default::default()
            }),
        );
        let keep_alive = || {
            command::Op::LeaseKeepAlive(agenda_proto::db::LeaseKeepAliveRequest {
                id: 7,
                ..Default::default()
            })
        };
        for role in ["gateway", "users", "groups", "supervisor", "peer", "redis"] {
            let (r, eff) = f.apply_as(role, &format!("k-{role}"), keep_alive(), 1);
            assert_eq!(
                error_code(&r),
                Some(command_error::Code::PermissionDenied),
                "{role}"
            );
            assert_eq!(eff.lease, None, "{role} renewed the lease");
            let (r, _) = f.apply_as(role, &format!("r-{role}"), revoke(7), 1);
            assert_eq!(
                error_code(&r),
                Some(command_error::Code::PermissionDenied),
                "{role}"
            );
            assert!(f.get("/registry/vip/holder").is_some(), "{role} revoked it");
        }
        for role in ["vip", "operator", ""] {
            let (r, eff) = f.apply_as(role, &format!("k-{role}"), keep_alive(), 1);
            assert_eq!(error_code(&r), None, "{role}");
            assert_eq!(eff.lease, Some(LeaseEffect::Renewed(7)), "{role}");
        }
        let (r, _) = f.apply_as("vip", "r-vip", revoke(7), 1);
        assert_eq!(error_code(&r), None);
        assert!(f.get("/registry/vip/holder").is_none());
    }

    #[test]
    fn leases_keep_their_ttl_to_the_millisecond_and_refuse_too_short_ones() {
        let mut f = Fixture::new();
        let sub_second = command::Op::LeaseGrant(LeaseGrantRequest {
            id: 3,
            ttl_ms: 300,
            ..Default::default()
        });
        let (r, eff) = f.apply("g", sub_second);
        match r.result {
            Some(command_result::Result::LeaseGrant(g)) => assert_eq!((g.ttl, g.ttl_ms), (1, 300)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(eff.lease, Some(LeaseEffect::Granted(3, 300)));
        f.apply("s", grant(4, 2));
        assert_eq!(f.sm.leases(), vec![(3, 300), (4, 2000)]);
        let too_short = command::Op::LeaseGrant(LeaseGrantRequest {
            id: 5,
            ttl_ms: 99,
            ..Default::default()
        });
        let (r, _) = f.apply("t", too_short);
        assert_eq!(error_code(&r), Some(command_error::Code::InvalidArgument));
        let (r, _) = f.apply("z", grant(6, 0));
        assert_eq!(error_code(&r), Some(command_error::Code::InvalidArgument));
    }

    #[test]
    fn revoking_a_lease_deletes_its_keys_in_one_revision() {
        let mut f = Fixture::new();
        f.apply("g", grant(7, 5));
        for k in ["a", "b"] {
            f.apply(
                k,
                command::Op::Put(PutRequest {
                    key: k.into(),
                    lease: 7,
                    ..Default::default()
                }),
            );
        }
        f.apply("c", put("c", "no lease"));
        let (_, eff) = f.apply("r", revoke(7));
        let (rev, events) = eff.revision.unwrap();
        assert_eq!(rev, 4);
        assert_eq!(events.len(), 2);
        assert_eq!(eff.lease, Some(LeaseEffect::Revoked(7)));
        assert!(f.get("a").is_none() && f.get("b").is_none());
        assert!(f.get("c").is_some());
        let (r, _) = f.apply("r2", revoke(7));
        assert_eq!(error_code(&r), Some(command_error::Code::NotFound));
    }

    #[test]
    fn a_read_only_txn_reads_one_snapshot_under_its_compares() {
        let mut f = Fixture::new();
        f.apply("1", put("v", "1"));
        f.apply("2", put("a/1", "x"));
        f.apply("3", put("a/1", "y"));
        let range = |key: &str, revision: i64| RequestOp {
            request: Some(request_op::Request::Range(RangeRequest {
                key: key.into(),
                prefix: true,
                revision,
                ..Default::default()
            })),
        };
        let read = |version_rev: i64| TxnRequest {
            compare: vec![Compare {
                key: b"v".to_vec(),
                target: compare::Target::ModRevision as i32,
                result: compare::Result::Equal as i32,
                number: version_rev,
                ..Default::default()
            }],
            success: vec![range("a/", 0), range("a/", 2)],
            failure: vec![range("v", 0)],
            request_id: String::new(),
        };
        assert!(read(1).is_read_only());
        let values = |resp: &TxnResponse| -> Vec<Vec<u8>> {
            resp.responses
                .iter()
                .map(|r| match &r.response {
                    Some(response_op::Response::Range(r)) => r.kvs[0].value.clone(),
                    other => panic!("range expected, got {other:?}"),
                })
                .collect()
        };
        let held = read_txn(&f.sm.view(), &read(1)).unwrap();
        assert!(held.succeeded);
        assert_eq!(held.header.unwrap().revision, 3);
        assert_eq!(values(&held), vec![b"y".to_vec(), b"x".to_vec()]);
        let failed = read_txn(&f.sm.view(), &read(2)).unwrap();
        assert!(!failed.succeeded);
        assert_eq!(values(&failed), vec![b"1".to_vec()]);
        // A txn that writes reads the latest state only.
        let mut write = read(1);
        write.success.push(RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: b"w".to_vec(),
                ..Default::default()
            })),
        });
        assert!(!write.is_read_only());
        let (r, _) = f.apply("4", command::Op::Txn(write));
        assert_eq!(error_code(&r), Some(command_error::Code::InvalidArgument));
    }

    #[test]
    fn range_end_selects_a_half_open_span_now_and_in_the_past() {
        let mut f = Fixture::new();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            f.apply(k, put(k, "x"));
        }
        f.apply("late", put("a/2", "y"));
        f.apply("late2", put("a/25", "z"));
        let sm = f.sm.view();
        let span = |rev: i64, from: &str, to: &str| -> Vec<(String, String)> {
            range_at(
                &sm,
                &RangeRequest {
                    key: from.into(),
                    range_end: to.into(),
                    revision: rev,
                    ..Default::default()
                },
            )
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).unwrap(),
                    String::from_utf8(kv.value).unwrap(),
                )
            })
            .collect()
        };
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(span(0, "a/2", "a/3"), vec![kv("a/2", "y"), kv("a/25", "z")]);
        // As of revision 4: before the overwrite and the new key.
        assert_eq!(span(4, "a/2", "a/3"), vec![kv("a/2", "x")]);
        assert_eq!(span(0, "a/3", "b/2").len(), 2);
        assert!(
            span(0, "b", "a").is_empty(),
            "an empty span selects nothing"
        );
        let both = RangeRequest {
            key: b"a".to_vec(),
            prefix: true,
            range_end: b"b".to_vec(),
            ..Default::default()
        };
        assert!(validate_range(&both).is_err());
    }

    #[test]
    fn past_revisions_are_readable_until_compacted() {
        let mut f = Fixture::new();
        f.sm.history_keep = 3;
        for i in 1..=5 {
            f.apply(&format!("p{i}"), put("k", &i.to_string()));
        }
        f.apply(
            "d",
            command::Op::Delete(DeleteRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }),
        );
        let view = f.sm.view();
        let at = |rev: i64| {
            range_at(
                &view,
                &RangeRequest {
                    key: b"k".to_vec(),
                    revision: rev,
                    ..Default::default()
                },
            )
        };
        assert_eq!(at(5).unwrap().kvs[0].value, b"5");
        assert_eq!(at(4).unwrap().kvs[0].value, b"4");
        assert!(at(6).unwrap().kvs.is_empty());
        assert!(matches!(at(1), Err(Error::Compacted { .. })));
        let hist = history_since(&view, f.sm.compact_revision + 1);
        assert_eq!(hist.len(), 3);
    }

    #[test]
    fn snapshot_round_trip_restores_everything() {
        let mut f = Fixture::new();
        f.apply("g", grant(9, 5));
        f.apply(
            "a",
            command::Op::Put(PutRequest {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 9,
                ..Default::default()
            }),
        );
        let snap = f.sm.to_snapshot().unwrap();
        assert_eq!(snap.get_metadata().index, 2);

        let mut g = Fixture::new();
        g.apply("x", put("stale", "gone after restore"));
        g.sm.restore(&snap).unwrap();
        assert!(g.get("stale").is_none());
        assert_eq!(g.get("a").unwrap().lease, 9);
        assert_eq!(g.sm.leases(), vec![(9, 5000)]);
        assert_eq!(g.sm.revision, 1);
        // The dedup table travelled too: a retry of "a" is still recognized.
        let (r, eff) = g.apply("a", put("a", "other"));
        assert!(eff.revision.is_none());
        assert!(matches!(r.result, Some(command_result::Result::Put(_))));
        // And revoking the restored lease still finds its keys.
        g.apply("r", revoke(9));
        assert!(g.get("a").is_none());
    }

    #[test]
    fn history_is_capped_in_bytes_as_well_as_revisions() {
        let mut f = Fixture::new();
        // An overwrite's events carry the value twice (kv and prev_kv).
        f.apply("first", put("k", &"x".repeat(1000)));
        let before = f.sm.history_bytes;
        f.apply("second", put("k", &"x".repeat(1000)));
        let one = f.sm.history_bytes - before;
        f.sm.set_history_bytes(one * 10);
        for i in 0..50 {
            f.apply(&format!("w{i}"), put("k", &"x".repeat(1000)));
        }
        assert!(
            f.sm.history_bytes <= one * 10 + one,
            "{}",
            f.sm.history_bytes
        );
        let view = f.sm.view();
        let kept = history_since(&view, 0);
        assert!(
            kept.len() >= 9 && kept.len() <= 11,
            "{} revisions kept",
            kept.len()
        );
        assert_eq!(view.compact_revision, kept[0].0 - 1);
        assert_eq!(kept.last().unwrap().0, f.sm.revision, "the newest stays");
    }

    #[test]
    fn a_published_view_does_not_see_later_writes() {
        let mut f = Fixture::new();
        f.apply("1", put("k", "old"));
        let view = f.sm.view();
        f.apply("2", put("k", "new"));
        f.apply("3", put("other", "x"));
        let read = |v: &ReadView, key: &str| {
            range_at(
                v,
                &RangeRequest {
                    key: key.into(),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        assert_eq!(read(&view, "k").kvs[0].value, b"old");
        assert!(read(&view, "other").kvs.is_empty());
        assert_eq!(read(&view, "k").header.unwrap().revision, 1);
        assert_eq!(read(&f.sm.view(), "k").kvs[0].value, b"new");
    }

    #[test]
    fn prefix_end_handles_edge_bytes() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
