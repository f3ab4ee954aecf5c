//! Reading the audit log ([`crate::audit`]): administrators only, a time
//! window, optionally one actor, in pages.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{Read, Store};
use crate::api::AuditQuery;
use crate::audit::{bound, AuditEntry};
use crate::error::{ApiError, ApiResult};
use crate::{keys, rules, validate};

/// Entries read from agenda-db per round while filtering by actor.
const ROUND: i64 = 500;

/// One page: the entries, oldest first, and where the next page starts.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `after` for the next page (null: this was the last).
    pub next: Option<Uuid>,
}

impl Store {
    /// The page of the audit log `q` asks for, if `caller` is an
    /// administrator (403 otherwise).
    pub async fn audit_page(&self, caller: Uuid, q: AuditQuery) -> ApiResult<AuditPage> {
        rules::check_reads_audit(&self.me(caller).await?)?;
        let to = match q.to.as_deref() {
            Some(t) => validate::instant("to", t)?,
            None => Utc::now() + Duration::seconds(1),
        };
        let from: DateTime<Utc> = match q.from.as_deref() {
            Some(f) => validate::instant("from", f)?,
            None => to - Duration::days(30),
        };
        if from >= to {
            return Err(ApiError::invalid_field("to", "to must be after from"));
        }
        let limit = q.limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::invalid_field("limit", "limit must be 1 to 500"));
        }
        let mut start = keys::audit(bound(from));
        if let Some(after) = q.after.as_deref() {
            let after = Uuid::parse_str(after)
                .map_err(|_| ApiError::invalid_field("after", "after must be a `next` value"))?;
            // Just past it: the next key in byte order.
            start = start.max(keys::audit_after(after));
        }
        let end = keys::audit(bound(to));
        let actor = q.actor.map(|a| a.trim().to_lowercase());
        let mut items = Vec::new();
        loop {
            let read = Read::span(&start, &end).limit(ROUND);
            let Some(snap) = self.snapshot(&[], [read]).await? else {
                break;
            };
            let batch = snap.values::<AuditEntry>(0)?;
            let full = batch.len() as i64 == ROUND;
            for e in batch {
                start = keys::audit_after(e.value.id);
                let mine = actor.as_deref().is_none_or(|a| {
                    e.value.actor.to_lowercase() == a
                        || e.value.actor_id.is_some_and(|id| id.to_string() == a)
                });
                if mine {
                    items.push(e.value);
                    if items.len() == limit as usize {
                        let next = items.last().map(|e| e.id);
                        return Ok(AuditPage { items, next });
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(AuditPage { items, next: None })
    }
}
