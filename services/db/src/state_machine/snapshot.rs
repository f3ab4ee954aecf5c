//! The state as data and back: the raft snapshot a member too far behind
//! gets, and what a state file holds (`state_file.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use agenda_proto::db::KeyValue;
use agenda_proto::raft::{Applied, DedupRecord, Lease, Members, RevisionRecord, SnapshotData};
use prost::{encoding, Message as _};
use raft::prelude::{ConfState, Snapshot};

use super::apply::ttl_secs;
use super::limits::AUDIT_PREFIX;
use super::{events_size, Key, StateMachine, Tables};
use crate::error::Result;

impl StateMachine {
    /// The state a lagging or new member needs (history stays behind: a
    /// restored node's history starts at the snapshot).
    pub fn snapshot_data(&self) -> SnapshotData {
        SnapshotData {
            kvs: self.t.kv.values().map(|kv| KeyValue::clone(kv)).collect(),
            ..self.snapshot_tail()
        }
    }

    /// Everything of [`snapshot_data`](Self::snapshot_data) but the keys.
    fn snapshot_tail(&self) -> SnapshotData {
        SnapshotData {
            kvs: Vec::new(),
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

    /// The length of [`snapshot_data`](Self::snapshot_data)'s encoding,
    /// worked out without building it.
    pub fn snapshot_data_len(&self) -> usize {
        let kvs: usize = self
            .t
            .kv
            .values()
            .map(|kv| encoding::message::encoded_len(1, kv.as_ref()))
            .sum();
        kvs + self.snapshot_tail().encoded_len()
    }

    /// [`snapshot_data`](Self::snapshot_data)'s encoding, byte for byte,
    /// handed to `emit` in pieces of about `piece` bytes. The keys are
    /// encoded where they are, one at a time: building the message first
    /// and then its encoding held a large store twice more (a state-file
    /// write of 750 MB took a node from 1.5 to 3.1 GB; GROWTH.md Found C).
    pub fn encode_snapshot_data<E>(
        &self,
        piece: usize,
        mut emit: impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut buf = Vec::with_capacity(piece.min(1 << 20) + 1024);
        for kv in self.t.kv.values() {
            // Field 1 comes first in prost's order, so the keys, then the
            // tail's fields, are the same bytes `encode_to_vec` writes.
            encoding::message::encode(1, kv.as_ref(), &mut buf);
            if buf.len() >= piece {
                emit(&buf)?;
                buf.clear();
            }
        }
        self.snapshot_tail().encode_raw(&mut buf);
        emit(&buf)
    }

    /// The applied state as a raft snapshot (built by the leader for a
    /// member that is too far behind).
    pub fn to_snapshot(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        let mut data = Vec::with_capacity(self.snapshot_data_len());
        self.encode_snapshot_data(1 << 20, |piece| {
            data.extend_from_slice(piece);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
        snap.set_data(data.into());
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

    /// History as records, oldest first, one at a time (for the state
    /// file, which writes each as it comes).
    pub fn history_records(&self) -> impl Iterator<Item = RevisionRecord> + '_ {
        self.t.history.iter().map(|(rev, events)| RevisionRecord {
            revision: *rev,
            events: Vec::clone(events),
        })
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

/// Member records as a map.
pub fn members_map(m: Members) -> BTreeMap<u64, String> {
    m.members.into_iter().map(|m| (m.id, m.addr)).collect()
}

#[cfg(test)]
mod tests {
    use crate::state_machine::fixture::*;
    use agenda_proto::db::PutRequest;
    use agenda_proto::raft::{command, command_result};

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
}
