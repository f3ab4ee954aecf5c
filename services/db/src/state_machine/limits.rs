//! The caps: how big a key or value may be, how short a lease, how long
//! exactly-once records and how many audit entries are kept, and how much
//! expiry work one round may do; and the key check every request meets.

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
pub(super) const GC_EVERY: u64 = 64;
/// Most records expired in one round.
pub(super) const GC_BATCH: usize = 4 * GC_EVERY as usize;
/// Shortest lease: a keep-alive must have time to come back inside it.
pub const MIN_LEASE_TTL_MS: i64 = 100;
/// Upper bound on key size, as etcd's default request limits suggest.
pub const MAX_KEY_BYTES: usize = 4096;
/// Upper bound on value size.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// The audit log's prefix: append-only for every role (`access`), and
/// capped by the state machine at [`AUDIT_KEEP`] keys: a put of a new entry beyond the cap
/// removes the oldest one (keys are time-ordered) in the same revision.
/// Decided from the log alone, so every replica keeps the same entries.
pub const AUDIT_PREFIX: &[u8] = crate::access::AUDIT.as_bytes();

/// Audit entries kept (they live in memory like everything else).
pub const AUDIT_KEEP: usize = if cfg!(test) { 5 } else { 200_000 };

pub(super) fn validate_key(key: &[u8], prefix: bool) -> Result<()> {
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
