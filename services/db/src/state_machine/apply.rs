//! Applying committed entries to the state: writes, txns, leases,
//! membership changes' audit entries, exactly-once results, and the
//! trimming of history and dedup records that goes with them.

use std::sync::Arc;

use agenda_proto::db::{
    event, request_op, response_op, CompactionResponse, DeleteRequest, DeleteResponse, Event,
    KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use agenda_proto::raft::{
    command, command_error, command_result, Applied, Command, CommandError, CommandResult,
    MemberChange,
};

use super::limits::{
    validate_key, AUDIT_KEEP, AUDIT_PREFIX, DEDUP_RETENTION_MS, GC_BATCH, GC_EVERY,
    MAX_VALUE_BYTES, MIN_LEASE_TTL_MS,
};
use super::read::{compare_holds, range, validate_range};
use super::{events_size, Effects, Key, LeaseEffect, StateMachine, Tables};
use crate::access;
use crate::error::{Error, Result};

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

impl StateMachine {
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
            Some(command::Op::Compact(req)) => self.compact(req.revision).map(|compact_revision| {
                command_result::Result::Compact(CompactionResponse {
                    header: Some(self.header(member_id, term)),
                    compact_revision,
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

    /// Drops the history up to `upto` (0 or less: all of it but the newest
    /// revision, which is never dropped, as in [`Self::finish`]); answers
    /// the revision compacted to. Compacting again to where it is, or
    /// before, changes nothing.
    fn compact(&mut self, upto: i64) -> Result<i64> {
        let target = if upto <= 0 { self.revision } else { upto };
        if target > self.revision {
            return Err(Error::InvalidArgument(format!(
                "revision {upto} is in the future: the store is at {}",
                self.revision
            )));
        }
        let target = target.min(self.revision - 1);
        while let Some((rev, events)) = self.t.history.get_min().map(|(r, e)| (*r, e.clone())) {
            if rev > target {
                break;
            }
            self.t.history.remove(&rev);
            self.history_bytes = self.history_bytes.saturating_sub(events_size(&events));
        }
        self.compact_revision = self.compact_revision.max(target);
        // The answer is kept for deduplication, so it comes from the log
        // alone (`compact_revision` can differ where a replica installed
        // a raft snapshot).
        Ok(target)
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
                    ));
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
pub(super) fn ttl_secs(ttl_ms: i64) -> i64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::fixture::*;
    use crate::state_machine::history_since;
    use agenda_proto::db::{compare, CompactionRequest, Compare, LeaseGrantRequest};

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
    fn compaction_drops_history_up_to_a_revision_never_the_newest() {
        let mut f = Fixture::new();
        for i in 0..5 {
            f.apply(&format!("p{i}"), put("k", &i.to_string()));
        }
        let compact = |f: &mut Fixture, id: &str, revision: i64| {
            let (r, _) = f.apply(
                id,
                command::Op::Compact(CompactionRequest {
                    revision,
                    request_id: String::new(),
                }),
            );
            r
        };
        let r = compact(&mut f, "c1", 2);
        assert!(matches!(
            r.result,
            Some(command_result::Result::Compact(CompactionResponse {
                compact_revision: 2,
                ..
            }))
        ));
        assert_eq!(
            f.sm.t.history.keys().copied().collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let bytes = f.sm.history_bytes;
        // Again, or further back: nothing changes.
        compact(&mut f, "c2", 1);
        assert_eq!((f.sm.compact_revision, f.sm.history_bytes), (2, bytes));
        let r = compact(&mut f, "c3", 9);
        assert_eq!(
            error_code(&r),
            Some(command_error::Code::InvalidArgument),
            "the future"
        );
        // Everything but the newest.
        compact(&mut f, "c4", 0);
        assert_eq!(f.sm.t.history.keys().copied().collect::<Vec<_>>(), [5]);
        assert_eq!(f.sm.compact_revision, 4);
        assert!(f.sm.history_bytes < bytes);
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
}
