//! The on-disk layout: the redb tables of a node's two files.
//!
//! - `raft-log.redb`: the raft log and hard state ([`LOG`], and [`META`] with
//!   `hard_state`, `truncated`). Committed with an fsync on every Ready
//!   that must sync (group commit: one fsync for every proposal that
//!   arrived meanwhile). Nothing is acknowledged before that.
//! - `state.redb`: the state machine ([`KV`], [`LEASES`], [`LEASE_KEYS`],
//!   [`HISTORY`], [`DEDUP`], [`DEDUP_AGE`]) and, in [`META`], the applied
//!   index, revision, members and conf state, always in the same
//!   transaction, so the state on disk is exactly "the log applied up to
//!   `applied`": a restart neither loses nor re-applies anything.
//!
//! Why two files: a redb durable commit writes every page dirtied since the
//! last one. If each Ready also fsynced the state machine's randomly placed
//! pages, the disk would see many pages per write; instead the state file
//! commits without fsync and syncs every `--state-sync-ms`. After a
//! crash it is older than the log, and the node replays the log from its
//! applied index (the log is never compacted past the durable applied
//! index). This is etcd's WAL + backend split, with redb on both sides.

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
/// Cluster token and node id the file belongs to (utf8 "token\nid"), in
/// both files.
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
