//! The replicated key-value state: what applying a committed command does.
//!
//! Pure with respect to its inputs: a command and the current tables give
//! the same result on every replica. Time comes only from the command
//! (`proposed_at_ms`), never from the local clock, and a command is fully
//! validated before anything is written, so a refused command leaves no
//! trace but its (deduplicated) error result.

use std::collections::BTreeMap;
use std::ops::Bound;

use agenda_proto::db::{
    compare, event, request_op, response_op, Compare, DeleteRequest, DeleteResponse, Event,
    KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseRevokeResponse, Member, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use agenda_proto::raft::{
    command, command_error, command_result, Applied, Command, CommandError, CommandResult,
    DedupRecord, Lease, Members, Revision, SnapshotData,
};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfState, Snapshot};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, WriteTransaction};

use crate::error::{Error, Result};
use crate::schema::{self, DEDUP, DEDUP_AGE, HISTORY, KV, LEASES, LEASE_KEYS, META};

/// How long a request id is remembered for exactly-once retries.
pub const DEDUP_RETENTION_MS: u64 = 15 * 60 * 1000;
/// Old dedup records and history are expired in rounds, every `GC_EVERY`
/// entries (or revisions), at most `GC_BATCH` at a time: never a scan per
/// write, never a long pause. The triggers depend only on replicated state,
/// so every replica expires the same records at the same index.
const GC_EVERY: u64 = 64;
/// Most records expired in one round.
const GC_BATCH: usize = 4 * GC_EVERY as usize;
/// Upper bound on key size, as etcd's default request limits suggest.
pub const MAX_KEY_BYTES: usize = 4096;
/// Upper bound on value size.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// What one applied command changed, for the node to publish after commit.
#[derive(Debug, Default)]
pub struct Effects {
    /// Events of the new revision, if the command wrote anything.
    pub revision: Option<(i64, Vec<Event>)>,
    /// Lease bookkeeping for the leader's expiry clock.
    pub lease: Option<LeaseEffect>,
}

/// Lease changes the in-memory expiry clock must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEffect {
    /// A lease was granted with this TTL (seconds).
    Granted(i64, i64),
    /// A lease was kept alive.
    Renewed(i64),
    /// A lease is gone.
    Revoked(i64),
}

/// All tables of the state machine, opened once per write transaction.
pub struct Tables<'t> {
    kv: Table<'t, &'static [u8], &'static [u8]>,
    leases: Table<'t, i64, &'static [u8]>,
    lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    history: Table<'t, i64, &'static [u8]>,
    dedup: Table<'t, &'static str, &'static [u8]>,
    dedup_age: Table<'t, (u64, &'static str), ()>,
    meta: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tables<'t> {
    /// Opens every state machine table in `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Tables {
            kv: txn.open_table(KV)?,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            history: txn.open_table(HISTORY)?,
            dedup: txn.open_table(DEDUP)?,
            dedup_age: txn.open_table(DEDUP_AGE)?,
            meta: txn.open_table(META)?,
        })
    }
}

impl Tables<'_> {
    /// Persists the configuration (conf change applied).
    pub fn put_conf_state(&mut self, cs: &ConfState) -> Result<()> {
        self.meta
            .insert(schema::META_CONF_STATE, cs.write_to_bytes()?.as_slice())?;
        Ok(())
    }
}

/// In-memory view of the state machine's position; the data is in redb.
#[derive(Debug, Clone)]
pub struct StateMachine {
    /// (index, term) of the last applied entry.
    pub applied: (u64, u64),
    /// Current store revision.
    pub revision: i64,
    /// Oldest revision whose history is gone (watch/range below it fail).
    pub compact_revision: i64,
    /// Member id -> gRPC address, as of `applied`.
    pub members: BTreeMap<u64, String>,
    /// Number of revisions of history kept.
    history_keep: i64,
}

impl StateMachine {
    /// Reads the persisted position.
    pub fn load(db: &Database, history_keep: i64) -> Result<Self> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let applied = match meta.get(schema::META_APPLIED)? {
            Some(v) => schema::read_pair_u64(v.value())
                .ok_or_else(|| Error::Corrupt("applied index record".into()))?,
            None => (0, 0),
        };
        let (revision, compact_revision) = match meta.get(schema::META_REVISION)? {
            Some(v) => {
                let (a, b) = schema::read_pair_u64(v.value())
                    .ok_or_else(|| Error::Corrupt("revision record".into()))?;
                (a as i64, b as i64)
            }
            None => (0, 0),
        };
        let members = match meta.get(schema::META_MEMBERS)? {
            Some(v) => members_map(Members::decode(v.value())?),
            None => BTreeMap::new(),
        };
        Ok(StateMachine {
            applied,
            revision,
            compact_revision,
            members,
            history_keep: history_keep.max(1),
        })
    }

    /// Writes the position records; call once per batch, before commit.
    pub fn persist(&self, t: &mut Tables) -> Result<()> {
        t.meta.insert(
            schema::META_APPLIED,
            schema::pair_u64(self.applied.0, self.applied.1).as_slice(),
        )?;
        t.meta.insert(
            schema::META_REVISION,
            schema::pair_u64(self.revision as u64, self.compact_revision as u64).as_slice(),
        )?;
        Ok(())
    }

    /// Records the member list (bootstrap and conf changes).
    pub fn set_members(&mut self, t: &mut Tables, members: BTreeMap<u64, String>) -> Result<()> {
        self.members = members;
        let list = Members {
            members: self.member_list(),
        };
        t.meta
            .insert(schema::META_MEMBERS, list.encode_to_vec().as_slice())?;
        Ok(())
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

    /// Looks up a request id's first result, if it is still remembered.
    pub fn dedup_lookup(&self, t: &Tables, request_id: &str) -> Result<Option<CommandResult>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        match t.dedup.get(request_id)? {
            Some(v) => Ok(Applied::decode(v.value())?.result),
            None => Ok(None),
        }
    }

    /// Remembers a request id's result and expires old ones.
    pub fn dedup_record(
        &self,
        t: &mut Tables,
        request_id: &str,
        at_ms: u64,
        result: &CommandResult,
    ) -> Result<()> {
        if !request_id.is_empty() {
            let rec = Applied {
                result: Some(result.clone()),
                at_ms,
            };
            t.dedup.insert(request_id, rec.encode_to_vec().as_slice())?;
            t.dedup_age.insert((at_ms, request_id), ())?;
        }
        if !self.applied.0.is_multiple_of(GC_EVERY) {
            return Ok(());
        }
        let cutoff = at_ms.saturating_sub(DEDUP_RETENTION_MS);
        let mut old = Vec::new();
        for item in t.dedup_age.range((0u64, "")..(cutoff, ""))?.take(GC_BATCH) {
            let (k, _) = item?;
            let (age, id) = k.value();
            old.push((age, id.to_string()));
        }
        for (age, id) in old {
            t.dedup_age.remove((age, id.as_str()))?;
            t.dedup.remove(id.as_str())?;
        }
        Ok(())
    }

    /// Applies one client command at (index, term). Storage errors abort the
    /// batch (the node stops); refusals become an error result.
    pub fn apply(
        &mut self,
        t: &mut Tables,
        index: u64,
        term: u64,
        member_id: u64,
        cmd: &Command,
    ) -> Result<(CommandResult, Effects)> {
        self.applied = (index, term);
        if let Some(prev) = self.dedup_lookup(t, &cmd.request_id)? {
            return Ok((prev, Effects::default()));
        }
        let mut effects = Effects::default();
        let outcome = match &cmd.op {
            Some(command::Op::Put(req)) => self.validate_put(t, req).and_then(|()| {
                let mut w = Writer::new(self.revision + 1);
                let prev = w.put(t, req)?;
                self.finish(t, w, &mut effects)?;
                Ok(command_result::Result::Put(PutResponse {
                    header: Some(self.header(member_id, term)),
                    prev_kv: prev.filter(|_| req.prev_kv),
                }))
            }),
            Some(command::Op::Delete(req)) => validate_key(&req.key, req.prefix).and_then(|()| {
                let mut w = Writer::new(self.revision + 1);
                let prev = w.delete(t, req)?;
                self.finish(t, w, &mut effects)?;
                Ok(command_result::Result::Delete(DeleteResponse {
                    header: Some(self.header(member_id, term)),
                    deleted: prev.len() as i64,
                    prev_kvs: if req.prev_kv { prev } else { Vec::new() },
                }))
            }),
            Some(command::Op::Txn(req)) => self.txn(t, req, member_id, term, &mut effects),
            Some(command::Op::LeaseGrant(req)) => self.lease_grant(t, req.id, req.ttl).map(|()| {
                effects.lease = Some(LeaseEffect::Granted(req.id, req.ttl));
                command_result::Result::LeaseGrant(LeaseGrantResponse {
                    header: Some(self.header(member_id, term)),
                    id: req.id,
                    ttl: req.ttl,
                })
            }),
            Some(command::Op::LeaseKeepAlive(req)) => self.lease_ttl(t, req.id).map(|ttl| {
                effects.lease = Some(LeaseEffect::Renewed(req.id));
                command_result::Result::LeaseKeepAlive(LeaseKeepAliveResponse {
                    header: Some(self.header(member_id, term)),
                    id: req.id,
                    ttl,
                })
            }),
            Some(command::Op::LeaseRevoke(req)) => self.lease_ttl(t, req.id).and_then(|_| {
                let mut w = Writer::new(self.revision + 1);
                w.revoke(t, req.id)?;
                self.finish(t, w, &mut effects)?;
                effects.lease = Some(LeaseEffect::Revoked(req.id));
                Ok(command_result::Result::LeaseRevoke(LeaseRevokeResponse {
                    header: Some(self.header(member_id, term)),
                }))
            }),
            None => Err(Error::InvalidArgument("empty command".into())),
        };
        let result = match outcome {
            Ok(r) => CommandResult { result: Some(r) },
            Err(e) => CommandResult {
                result: Some(command_result::Result::Error(refusal(e)?)),
            },
        };
        self.dedup_record(t, &cmd.request_id, cmd.proposed_at_ms, &result)?;
        Ok((result, effects))
    }

    /// Commits a writer's revision (if it wrote) and trims history.
    fn finish(&mut self, t: &mut Tables, w: Writer, effects: &mut Effects) -> Result<()> {
        if w.events.is_empty() {
            return Ok(());
        }
        self.revision = w.rev;
        let rec = Revision {
            events: w.events.clone(),
        };
        t.history.insert(w.rev, rec.encode_to_vec().as_slice())?;
        effects.revision = Some((w.rev, w.events));
        let keep_from = self.revision - self.history_keep;
        let slack = (GC_EVERY as i64).min(self.history_keep);
        if keep_from - self.compact_revision >= slack {
            let mut old = Vec::new();
            for item in t.history.range(..=keep_from)?.take(GC_BATCH) {
                old.push(item?.0.value());
            }
            for rev in &old {
                t.history.remove(*rev)?;
            }
            if let Some(last) = old.last() {
                self.compact_revision = *last;
            } else {
                self.compact_revision = keep_from;
            }
        }
        Ok(())
    }

    fn validate_put(&self, t: &Tables, req: &PutRequest) -> Result<()> {
        validate_key(&req.key, false)?;
        if req.value.len() > MAX_VALUE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                req.value.len()
            )));
        }
        if req.lease != 0 && t.leases.get(req.lease)?.is_none() {
            return Err(Error::NotFound(format!("lease {} not found", req.lease)));
        }
        Ok(())
    }

    fn txn(
        &mut self,
        t: &mut Tables,
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
                Some(request_op::Request::Put(p)) => self.validate_put(t, p)?,
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
        let mut succeeded = true;
        for c in &req.compare {
            let kv = get_kv(&t.kv, &c.key)?;
            if !compare_holds(c, kv.as_ref()) {
                succeeded = false;
                break;
            }
        }
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
                    let prev = w.put(t, p)?;
                    response_op::Response::Put(PutResponse {
                        header,
                        prev_kv: prev.filter(|_| p.prev_kv),
                    })
                }
                Some(request_op::Request::Delete(d)) => {
                    let prev = w.delete(t, d)?;
                    response_op::Response::Delete(DeleteResponse {
                        header,
                        deleted: prev.len() as i64,
                        prev_kvs: if d.prev_kv { prev } else { Vec::new() },
                    })
                }
                Some(request_op::Request::Range(r)) => {
                    let mut resp = range(&t.kv, r)?;
                    resp.header = header;
                    response_op::Response::Range(resp)
                }
                None => unreachable!("validated above"),
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        self.finish(t, w, effects)?;
        Ok(command_result::Result::Txn(TxnResponse {
            header: Some(self.header(member_id, term)),
            succeeded,
            responses,
        }))
    }

    fn lease_grant(&self, t: &mut Tables, id: i64, ttl: i64) -> Result<()> {
        if ttl < 1 {
            return Err(Error::InvalidArgument(format!(
                "lease ttl must be at least 1 second, got {ttl}"
            )));
        }
        if id <= 0 {
            return Err(Error::InvalidArgument("lease id must be positive".into()));
        }
        if t.leases.get(id)?.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "lease {id} already exists"
            )));
        }
        t.leases
            .insert(id, Lease { id, ttl }.encode_to_vec().as_slice())?;
        Ok(())
    }

    fn lease_ttl(&self, t: &Tables, id: i64) -> Result<i64> {
        match t.leases.get(id)? {
            Some(v) => Ok(Lease::decode(v.value())?.ttl),
            None => Err(Error::NotFound(format!("lease {id} not found"))),
        }
    }

    /// Every lease with its TTL, to rebuild the expiry clock.
    pub fn leases(db: &Database) -> Result<Vec<(i64, i64)>> {
        let txn = db.begin_read()?;
        let leases = txn.open_table(LEASES)?;
        let mut out = Vec::new();
        for item in leases.iter()? {
            let (_, v) = item?;
            let l = Lease::decode(v.value())?;
            out.push((l.id, l.ttl));
        }
        Ok(out)
    }

    /// Replaces the whole state, configuration included, by a snapshot's
    /// (the log file is reset afterwards by `RaftStorage::apply_snapshot`).
    pub fn restore(&mut self, txn: &WriteTransaction, snap: &Snapshot) -> Result<()> {
        let data = SnapshotData::decode(snap.get_data())?;
        let mut t = Tables::open(txn)?;
        t.kv.retain(|_, _| false)?;
        t.leases.retain(|_, _| false)?;
        t.lease_keys.retain(|_, _| false)?;
        t.history.retain(|_, _| false)?;
        t.dedup.retain(|_, _| false)?;
        t.dedup_age.retain(|_, _| false)?;
        for kv in &data.kvs {
            t.kv.insert(kv.key.as_slice(), kv.encode_to_vec().as_slice())?;
            if kv.lease != 0 {
                t.lease_keys.insert((kv.lease, kv.key.as_slice()), ())?;
            }
        }
        for l in &data.leases {
            t.leases.insert(l.id, l.encode_to_vec().as_slice())?;
        }
        for d in &data.dedup {
            if let Some(applied) = &d.applied {
                t.dedup
                    .insert(d.request_id.as_str(), applied.encode_to_vec().as_slice())?;
                t.dedup_age
                    .insert((applied.at_ms, d.request_id.as_str()), ())?;
            }
        }
        let meta = snap.get_metadata();
        self.applied = (meta.index, meta.term);
        self.revision = data.revision;
        self.compact_revision = data.revision;
        self.set_members(&mut t, members_map(data.members.unwrap_or_default()))?;
        // The configuration as of the snapshot belongs with the state: a
        // restart reads it from here.
        t.put_conf_state(meta.get_conf_state())?;
        self.persist(&mut t)
    }
}

/// Builds a snapshot of the applied state (called by raft-rs through
/// `Storage::snapshot` on the leader).
pub fn build_snapshot(db: &Database) -> Result<Snapshot> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let (index, term) = match meta.get(schema::META_APPLIED)? {
        Some(v) => schema::read_pair_u64(v.value())
            .ok_or_else(|| Error::Corrupt("applied index record".into()))?,
        None => (0, 0),
    };
    let conf_state = match meta.get(schema::META_CONF_STATE)? {
        Some(v) => ConfState::parse_from_bytes(v.value())?,
        None => ConfState::default(),
    };
    let revision = match meta.get(schema::META_REVISION)? {
        Some(v) => schema::read_pair_u64(v.value()).map_or(0, |(r, _)| r as i64),
        None => 0,
    };
    let members = match meta.get(schema::META_MEMBERS)? {
        Some(v) => Some(Members::decode(v.value())?),
        None => None,
    };
    let mut data = SnapshotData {
        revision,
        members,
        ..Default::default()
    };
    for item in txn.open_table(KV)?.iter()? {
        data.kvs.push(KeyValue::decode(item?.1.value())?);
    }
    for item in txn.open_table(LEASES)?.iter()? {
        data.leases.push(Lease::decode(item?.1.value())?);
    }
    for item in txn.open_table(DEDUP)?.iter()? {
        let (k, v) = item?;
        data.dedup.push(DedupRecord {
            request_id: k.value().to_string(),
            applied: Some(Applied::decode(v.value())?),
        });
    }
    let mut snap = Snapshot::default();
    snap.set_data(data.encode_to_vec().into());
    let m = snap.mut_metadata();
    m.index = index;
    m.term = term;
    m.set_conf_state(conf_state);
    Ok(snap)
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

    fn put(&mut self, t: &mut Tables, req: &PutRequest) -> Result<Option<KeyValue>> {
        let prev = get_kv(&t.kv, &req.key)?;
        let kv = KeyValue {
            key: req.key.clone(),
            value: req.value.clone(),
            create_revision: prev.as_ref().map_or(self.rev, |p| p.create_revision),
            mod_revision: self.rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: req.lease,
        };
        if let Some(p) = &prev {
            if p.lease != 0 && p.lease != req.lease {
                t.lease_keys.remove((p.lease, p.key.as_slice()))?;
            }
        }
        if req.lease != 0 {
            t.lease_keys.insert((req.lease, req.key.as_slice()), ())?;
        }
        t.kv.insert(req.key.as_slice(), kv.encode_to_vec().as_slice())?;
        self.events.push(Event {
            r#type: event::EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(prev)
    }

    fn delete(&mut self, t: &mut Tables, req: &DeleteRequest) -> Result<Vec<KeyValue>> {
        let victims = if req.prefix {
            range(
                &t.kv,
                &RangeRequest {
                    key: req.key.clone(),
                    prefix: true,
                    ..Default::default()
                },
            )?
            .kvs
        } else {
            get_kv(&t.kv, &req.key)?.into_iter().collect()
        };
        for kv in &victims {
            self.remove(t, kv)?;
        }
        Ok(victims)
    }

    fn revoke(&mut self, t: &mut Tables, lease: i64) -> Result<()> {
        let mut keys = Vec::new();
        for item in t
            .lease_keys
            .range((lease, &[][..])..(lease.saturating_add(1), &[][..]))?
        {
            keys.push(item?.0.value().1.to_vec());
        }
        for key in keys {
            if let Some(kv) = get_kv(&t.kv, &key)? {
                self.remove(t, &kv)?;
            }
        }
        t.leases.remove(lease)?;
        Ok(())
    }

    fn remove(&mut self, t: &mut Tables, kv: &KeyValue) -> Result<()> {
        t.kv.remove(kv.key.as_slice())?;
        if kv.lease != 0 {
            t.lease_keys.remove((kv.lease, kv.key.as_slice()))?;
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
        Ok(())
    }
}

/// Turns a deterministic refusal into a result; anything else is fatal.
fn refusal(e: Error) -> Result<CommandError> {
    let code = match &e {
        Error::InvalidArgument(_) => command_error::Code::InvalidArgument,
        Error::NotFound(_) => command_error::Code::NotFound,
        Error::FailedPrecondition(_) => command_error::Code::FailedPrecondition,
        _ => return Err(e),
    };
    Ok(CommandError {
        code: code as i32,
        message: e.to_string(),
    })
}

/// Converts a stored refusal back into an error for the caller.
pub fn refusal_to_error(e: &CommandError) -> Error {
    match command_error::Code::try_from(e.code) {
        Ok(command_error::Code::NotFound) => Error::NotFound(e.message.clone()),
        Ok(command_error::Code::FailedPrecondition) => Error::FailedPrecondition(e.message.clone()),
        _ => Error::InvalidArgument(e.message.clone()),
    }
}

fn members_map(m: Members) -> BTreeMap<u64, String> {
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

fn get_kv<T: ReadableTable<&'static [u8], &'static [u8]>>(
    kv: &T,
    key: &[u8],
) -> Result<Option<KeyValue>> {
    match kv.get(key)? {
        Some(v) => Ok(Some(KeyValue::decode(v.value())?)),
        None => Ok(None),
    }
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

/// Range over the current state (used by reads and by txn range ops).
pub fn range<T: ReadableTable<&'static [u8], &'static [u8]>>(
    kv: &T,
    req: &RangeRequest,
) -> Result<RangeResponse> {
    let mut resp = RangeResponse::default();
    if !req.prefix && req.range_end.is_empty() {
        if let Some(v) = get_kv(kv, &req.key)? {
            resp.count = 1;
            if !req.count_only {
                resp.kvs.push(v);
            }
        }
        return Ok(resp);
    }
    if !req.range_end.is_empty() && req.range_end <= req.key {
        return Ok(resp);
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
    for item in kv.range::<&[u8]>(bounds)? {
        let (_, v) = item?;
        resp.count += 1;
        if req.count_only {
            continue;
        }
        if req.limit > 0 && resp.kvs.len() as i64 >= req.limit {
            resp.more = true;
            continue;
        }
        resp.kvs.push(KeyValue::decode(v.value())?);
    }
    Ok(resp)
}

/// The snapshot's revision and the oldest revision history still holds.
fn revisions(txn: &ReadTransaction) -> Result<(i64, i64)> {
    let meta = txn.open_table(META)?;
    Ok(match meta.get(schema::META_REVISION)? {
        Some(v) => schema::read_pair_u64(v.value()).map_or((0, 0), |(a, b)| (a as i64, b as i64)),
        None => (0, 0),
    })
}

/// Range as of `req.revision` (0 = now), undoing newer history.
pub fn range_at(txn: &ReadTransaction, req: &RangeRequest) -> Result<RangeResponse> {
    let kv = txn.open_table(KV)?;
    let (current, compacted) = revisions(txn)?;
    let header = Some(ResponseHeader {
        revision: current,
        ..Default::default()
    });
    if req.revision == 0 || req.revision >= current {
        let mut resp = range(&kv, req)?;
        resp.header = header;
        return Ok(resp);
    }
    if req.revision < compacted {
        return Err(Error::Compacted {
            requested: req.revision,
            oldest: compacted,
        });
    }
    let all = range(
        &kv,
        &RangeRequest {
            key: req.key.clone(),
            prefix: req.prefix,
            range_end: req.range_end.clone(),
            ..Default::default()
        },
    )?;
    let mut state: BTreeMap<Vec<u8>, KeyValue> =
        all.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    let history = txn.open_table(HISTORY)?;
    for item in history.range(req.revision + 1..)?.rev() {
        let (_, v) = item?;
        for ev in Revision::decode(v.value())?.events.into_iter().rev() {
            let Some(kv) = ev.kv else { continue };
            if !range_selects(req, &kv.key) {
                continue;
            }
            match ev.prev_kv {
                Some(prev) => state.insert(kv.key, prev),
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

/// Runs a read-only txn on one snapshot: the compares against the current
/// state pick the branch, whose ranges each read as of their own revision
/// (0: the snapshot's).
pub fn read_txn(txn: &ReadTransaction, req: &TxnRequest) -> Result<TxnResponse> {
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
    let kv = txn.open_table(KV)?;
    let mut succeeded = true;
    for c in &req.compare {
        if !compare_holds(c, get_kv(&kv, &c.key)?.as_ref()) {
            succeeded = false;
            break;
        }
    }
    let mut responses = Vec::new();
    for r in if succeeded { success } else { failure } {
        responses.push(ResponseOp {
            response: Some(response_op::Response::Range(range_at(txn, &r)?)),
        });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader {
            revision: revisions(txn)?.0,
            ..Default::default()
        }),
        succeeded,
        responses,
    })
}

/// Revisions after `from` (inclusive) still in history, oldest first.
pub fn history_since(txn: &ReadTransaction, from: i64) -> Result<Vec<(i64, Vec<Event>)>> {
    let history = txn.open_table(HISTORY)?;
    let mut out = Vec::new();
    for item in history.range(from..)? {
        let (k, v) = item?;
        out.push((k.value(), Revision::decode(v.value())?.events));
    }
    Ok(out)
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
        _dir: tempfile::TempDir,
        db: Database,
        sm: StateMachine,
        index: u64,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db = crate::open_database(&dir.path().join("db.redb")).unwrap();
            let sm = StateMachine::load(&db, 1000).unwrap();
            Fixture {
                _dir: dir,
                db,
                sm,
                index: 0,
            }
        }

        fn apply(&mut self, id: &str, op: command::Op) -> (CommandResult, Effects) {
            self.apply_at(id, op, 1_000_000)
        }

        fn apply_at(&mut self, id: &str, op: command::Op, at_ms: u64) -> (CommandResult, Effects) {
            self.index += 1;
            let txn = self.db.begin_write().unwrap();
            let out = {
                let mut t = Tables::open(&txn).unwrap();
                let cmd = Command {
                    request_id: id.into(),
                    proposed_at_ms: at_ms,
                    op: Some(op),
                };
                let out = self.sm.apply(&mut t, self.index, 1, 1, &cmd).unwrap();
                self.sm.persist(&mut t).unwrap();
                out
            };
            txn.commit().unwrap();
            out
        }

        fn get(&self, key: &str) -> Option<KeyValue> {
            let txn = self.db.begin_read().unwrap();
            let kv = txn.open_table(KV).unwrap();
            get_kv(&kv, key.as_bytes()).unwrap()
        }
    }

    fn put(key: &str, value: &str) -> command::Op {
        command::Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    fn error_code(r: &CommandResult) -> Option<command_error::Code> {
        match &r.result {
            Some(command_result::Result::Error(e)) => command_error::Code::try_from(e.code).ok(),
            _ => None,
        }
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
        let txn = f.db.begin_write().unwrap();
        let t = Tables::open(&txn).unwrap();
        assert!(f.sm.dedup_lookup(&t, "old").unwrap().is_none());
        assert!(f.sm.dedup_lookup(&t, "new2").unwrap().is_some());
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
    fn revoking_a_lease_deletes_its_keys_in_one_revision() {
        let mut f = Fixture::new();
        f.apply(
            "g",
            command::Op::LeaseGrant(LeaseGrantRequest {
                ttl: 5,
                id: 7,
                ..Default::default()
            }),
        );
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
        let (_, eff) = f.apply(
            "r",
            command::Op::LeaseRevoke(LeaseRevokeRequest {
                id: 7,
                ..Default::default()
            }),
        );
        let (rev, events) = eff.revision.unwrap();
        assert_eq!(rev, 4);
        assert_eq!(events.len(), 2);
        assert_eq!(eff.lease, Some(LeaseEffect::Revoked(7)));
        assert!(f.get("a").is_none() && f.get("b").is_none());
        assert!(f.get("c").is_some());
        let (r, _) = f.apply(
            "r2",
            command::Op::LeaseRevoke(LeaseRevokeRequest {
                id: 7,
                ..Default::default()
            }),
        );
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
        let txn = f.db.begin_read().unwrap();
        let values = |resp: &TxnResponse| -> Vec<Vec<u8>> {
            resp.responses
                .iter()
                .map(|r| match &r.response {
                    Some(response_op::Response::Range(r)) => r.kvs[0].value.clone(),
                    other => panic!("range expected, got {other:?}"),
                })
                .collect()
        };
        let held = read_txn(&txn, &read(1)).unwrap();
        assert!(held.succeeded);
        assert_eq!(held.header.unwrap().revision, 3);
        assert_eq!(values(&held), vec![b"y".to_vec(), b"x".to_vec()]);
        let failed = read_txn(&txn, &read(2)).unwrap();
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
        let txn = f.db.begin_read().unwrap();
        let span = |rev: i64, from: &str, to: &str| -> Vec<(String, String)> {
            range_at(
                &txn,
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
        let txn = f.db.begin_read().unwrap();
        let at = |rev: i64| {
            range_at(
                &txn,
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
        let hist = history_since(&txn, f.sm.compact_revision + 1).unwrap();
        assert_eq!(hist.len(), 3);
    }

    #[test]
    fn snapshot_round_trip_restores_everything() {
        let mut f = Fixture::new();
        f.apply(
            "g",
            command::Op::LeaseGrant(LeaseGrantRequest {
                ttl: 5,
                id: 9,
                ..Default::default()
            }),
        );
        f.apply(
            "a",
            command::Op::Put(PutRequest {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 9,
                ..Default::default()
            }),
        );
        let snap = build_snapshot(&f.db).unwrap();
        assert_eq!(snap.get_metadata().index, 2);

        let mut g = Fixture::new();
        g.apply("x", put("stale", "gone after restore"));
        let txn = g.db.begin_write().unwrap();
        g.sm.restore(&txn, &snap).unwrap();
        txn.commit().unwrap();
        assert!(g.get("stale").is_none());
        assert_eq!(g.get("a").unwrap().lease, 9);
        assert_eq!(StateMachine::leases(&g.db).unwrap(), vec![(9, 5)]);
        assert_eq!(g.sm.revision, 1);
        // The dedup table travelled too: a retry of "a" is still recognized.
        let (r, eff) = g.apply("a", put("a", "other"));
        assert!(eff.revision.is_none());
        assert!(matches!(r.result, Some(command_result::Result::Put(_))));
        // And revoking the restored lease still finds its keys.
        g.apply(
            "r",
            command::Op::LeaseRevoke(LeaseRevokeRequest {
                id: 9,
                ..Default::default()
            }),
        );
        assert!(g.get("a").is_none());
    }

    #[test]
    fn prefix_end_handles_edge_bytes() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
