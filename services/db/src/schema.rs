//! The on-disk layout: every redb table of a node's single database file.
//!
//! One file holds both the raft log and the state machine so that appending
//! entries, saving the hard state, applying committed entries and moving the
//! applied index happen in ONE write transaction (one fsync): a restart can
//! neither lose nor re-apply anything.

use redb::TableDefinition;

/// Raft log: index -> protobuf-encoded `eraftpb::Entry`.
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small records keyed by name (see the `META_*` constants).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Live keys: key -> prost `KeyValue`.
pub const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Leases: id -> prost `Lease`.
pub const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");
/// Keys attached to each lease, so a revoke finds them without a scan.
pub const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// Per-revision events (prost `Revision`), for Watch replay and past reads.
pub const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");
/// Exactly-once: request id -> prost `Applied` (its first result).
pub const DEDUP: TableDefinition<&str, &[u8]> = TableDefinition::new("dedup");
/// Dedup records by age, so expiry is a range scan: (at_ms, request id).
pub const DEDUP_AGE: TableDefinition<(u64, &str), ()> = TableDefinition::new("dedup_age");

/// Raft `HardState` (protobuf).
pub const META_HARD_STATE: &str = "hard_state";
/// Raft `ConfState` (protobuf) as of the applied index.
pub const META_CONF_STATE: &str = "conf_state";
/// Index and term (2 x u64 LE) of the last entry removed from the log.
pub const META_TRUNCATED: &str = "truncated";
/// Applied index and its term (2 x u64 LE).
pub const META_APPLIED: &str = "applied";
/// Current store revision and compact revision (2 x i64 LE).
pub const META_REVISION: &str = "revision";
/// Member addresses (prost `Members`) as of the applied index.
pub const META_MEMBERS: &str = "members";
/// Cluster token and node id this data dir belongs to (utf8 "token\nid").
pub const META_IDENTITY: &str = "identity";

/// Encodes two u64 into 16 bytes (little endian).
pub fn pair_u64(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// Decodes [`pair_u64`]; `None` if the record has the wrong size.
pub fn read_pair_u64(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != 16 {
        return None;
    }
    let a = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    let b = u64::from_le_bytes(bytes[8..].try_into().ok()?);
    Some((a, b))
}
