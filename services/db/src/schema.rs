//! The redb layout of `raft-log.redb`: the raft log ([`LOG`]) and, in
//! [`META`], the hard state and the compaction point (`truncated`),
//! committed with an fsync on every Ready that must sync (group commit: one
//! fsync for every proposal that arrived meanwhile). Nothing is
//! acknowledged before that.
//!
//! The state machine is in memory and on disk in `state.snap` (see
//! `state_file.rs`). Earlier versions kept it in a second redb file,
//! `state.redb`, with the tables [`KV`], [`LEASES`], [`HISTORY`], [`DEDUP`]
//! and the `META` records named below; they are defined here only so that
//! file can be converted at first start.

use redb::TableDefinition;

/// Raft log: index -> protobuf-encoded `eraftpb::Entry`.
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small records keyed by name (see the `META_*` constants).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Legacy `state.redb`: live keys, key -> prost `KeyValue`.
pub const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Legacy `state.redb`: leases, id -> prost `Lease`.
pub const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");
/// Legacy `state.redb`: per-revision events (prost `Revision`).
pub const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");
/// Legacy `state.redb`: request id -> prost `Applied` (its first result).
pub const DEDUP: TableDefinition<&str, &[u8]> = TableDefinition::new("dedup");

/// Raft `HardState` (protobuf).
pub const META_HARD_STATE: &str = "hard_state";
/// Legacy `state.redb`: raft `ConfState` (protobuf) as of the applied index.
pub const META_CONF_STATE: &str = "conf_state";
/// Index and term (2 x u64 LE) of the last entry removed from the log.
pub const META_TRUNCATED: &str = "truncated";
/// Legacy `state.redb`: applied index and its term (2 x u64 LE).
pub const META_APPLIED: &str = "applied";
/// Legacy `state.redb`: store revision and compact revision (2 x i64 LE).
pub const META_REVISION: &str = "revision";
/// Legacy `state.redb`: member addresses (prost `Members`).
pub const META_MEMBERS: &str = "members";
/// Cluster token and node id the file belongs to (utf8 "token\nid").
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
