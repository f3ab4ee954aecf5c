//! The audit log: security-relevant actions, each an entry under
//! [`keys::AUDIT`] written in the same transaction as the change it
//! records (its revision is the change's; a refused change leaves none).
//!
//! An entry says who (`actor_id`, `actor`), what (`action`, `details`),
//! when (`at`) and from where (`source`: the client's address as the
//! gateway saw it, carried with the call in [`SOURCE`]). Ids are UUIDv7,
//! so the key order is the time order and a time window is a key range.
//! No role may delete entries (agenda-db refuses it); agenda-db keeps the
//! newest ones only (its state lives in memory).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::keys;
use crate::store::Batch;

tokio::task_local! {
    /// The client address of the call being served ("" when unknown).
    pub static SOURCE: String;
}

/// One audit entry (stored and public shape).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// The account that acted (null: none, as for a failed login).
    pub actor_id: Option<Uuid>,
    /// Its username, or what a failed login named.
    pub actor: String,
    /// What happened, e.g. `login`, `password_changed`, `member_removed`.
    pub action: String,
    /// The client's address, when known.
    pub source: String,
    /// What the action was about (group, member, rank, count...).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl AuditEntry {
    /// A new entry for now, from the address of the call being served.
    pub fn new(actor_id: Option<Uuid>, actor: &str, action: &str, details: Value) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            at: Utc::now(),
            actor_id,
            actor: actor.to_string(),
            action: action.to_string(),
            source: SOURCE.try_with(Clone::clone).unwrap_or_default(),
            details,
        }
    }
}

/// Adds to `batch` (the change's own transaction) an entry for now, from
/// the address of the call being served.
pub fn add(
    batch: &mut Batch,
    actor_id: Option<Uuid>,
    actor: &str,
    action: &str,
    details: Value,
) -> ApiResult<()> {
    record(batch, &AuditEntry::new(actor_id, actor, action, details))
}

/// Adds `entry` to `batch` (the change's own transaction).
pub fn record(batch: &mut Batch, entry: &AuditEntry) -> ApiResult<()> {
    let key = keys::audit(entry.id);
    batch.unchanged(&key, 0).put(&key, entry)?;
    Ok(())
}

/// The first id of the millisecond `at` (a key range bound).
pub fn bound(at: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_bounds_fall_between() {
        let a = AuditEntry::new(None, "x", "login_failed", Value::Null);
        let t = Utc::now() + chrono::Duration::milliseconds(5);
        let b = bound(t);
        let later = uuid::Builder::from_unix_timestamp_millis(
            u64::try_from(t.timestamp_millis()).unwrap() + 1,
            &[0xff; 10],
        )
        .into_uuid();
        assert!(keys::audit(a.id) < keys::audit(b));
        assert!(keys::audit(b) < keys::audit(later));
        assert_eq!(a.source, "", "no call being served");
    }

    #[tokio::test]
    async fn the_source_is_the_calls() {
        let e = SOURCE
            .scope("192.0.2.7".into(), async {
                AuditEntry::new(None, "x", "login", Value::Null)
            })
            .await;
        assert_eq!(e.source, "192.0.2.7");
    }
}
