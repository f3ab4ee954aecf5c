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
//!
//! Layout: `apply` (what a command does to the state), `read` (the
//! [`ReadView`] readers get and the queries on it), `snapshot` (the state
//! as a raft snapshot and as a state file's contents), `limits` (the caps
//! on requests and on what the state keeps).

use std::collections::BTreeMap;
use std::sync::Arc;

use agenda_proto::db::{Event, KeyValue, Member, ResponseHeader};
use agenda_proto::raft::Applied;
use imbl::{HashMap, OrdMap, OrdSet};
use prost::Message as _;
use raft::prelude::ConfState;

mod apply;
#[cfg(test)]
mod fixture;
mod limits;
mod read;
mod snapshot;

// node.rs and storage.rs have always taken it from here.
pub use crate::published::Published;
pub use apply::refusal_to_error;
pub use limits::{
    AUDIT_KEEP, AUDIT_PREFIX, DEDUP_RETENTION_MS, MAX_KEY_BYTES, MAX_VALUE_BYTES, MIN_LEASE_TTL_MS,
};
pub use read::{
    compare_holds, history_since, prefix_end, range_at, read_txn, selects, validate_range, ReadView,
};
pub use snapshot::members_map;

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

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.t.kv.len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.t.kv.is_empty()
    }

    /// Every lease with its TTL in milliseconds, to rebuild the expiry clock.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.t.leases.iter().map(|(id, ttl)| (*id, *ttl)).collect()
    }

    /// Encoded bytes of the history kept now.
    pub fn history_bytes(&self) -> u64 {
        self.history_bytes
    }

    /// Caps the bytes of history kept (besides the revision count).
    pub fn set_history_bytes(&mut self, bytes: u64) {
        self.history_max_bytes = bytes;
    }
}

/// What one revision's events count against the history's byte limit.
fn events_size(events: &[Event]) -> u64 {
    events.iter().map(|e| e.encoded_len() as u64).sum()
}
