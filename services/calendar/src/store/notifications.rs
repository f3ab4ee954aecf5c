//! Notifications: written in the same transaction as the change that
//! causes them (the outbox of the messaging layer), read and marked read
//! by their owner.

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::{Attempt, Batch, Store};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::Notification;

/// Most notifications one listing returns.
pub const LIST_LIMIT: usize = 200;

/// Adds a notification for `user` to `batch`.
pub fn add(batch: &mut Batch, user: Uuid, kind: &str, data: Value) -> ApiResult<()> {
    let n = Notification {
        id: Uuid::now_v7(),
        kind: kind.to_string(),
        created_at: Utc::now(),
        read: false,
        data,
    };
    batch.put(&keys::notification(user, n.id), &n)?;
    Ok(())
}

impl Store {
    /// `user`'s notifications, newest first.
    pub async fn notifications(
        &self,
        user: Uuid,
        unread_only: bool,
    ) -> ApiResult<Vec<Notification>> {
        let mut all: Vec<Notification> = self
            .list::<Notification>(&keys::notifications(user))
            .await?
            .into_iter()
            .map(|v| v.value)
            .filter(|n| !unread_only || !n.read)
            .collect();
        all.reverse();
        all.truncate(LIST_LIMIT);
        Ok(all)
    }

    /// `user`'s notifications created after `after` (ids are time-ordered),
    /// oldest first, at most [`LIST_LIMIT`] × 5.
    pub async fn notifications_after(
        &self,
        user: Uuid,
        after: Option<Uuid>,
    ) -> ApiResult<Vec<Notification>> {
        let mut out: Vec<Notification> = self
            .list::<Notification>(&keys::notifications(user))
            .await?
            .into_iter()
            .map(|v| v.value)
            .filter(|n| after.is_none_or(|a| n.id > a))
            .collect();
        out.truncate(LIST_LIMIT * 5);
        Ok(out)
    }

    /// Marks one of `user`'s notifications read.
    pub async fn mark_read(&self, user: Uuid, id: Uuid) -> ApiResult<Notification> {
        let key = keys::notification(user, id);
        self.optimistic("notification", || async {
            let Some(mut n) = self.get::<Notification>(&key).await? else {
                return Err(ApiError::not_found("notification"));
            };
            if n.value.read {
                return Ok(Attempt::Done(n.value));
            }
            n.value.read = true;
            let mut batch = Batch::default();
            batch.unchanged(&key, n.mod_revision).put(&key, &n.value)?;
            self.commit_or_retry(batch, n.value).await
        })
        .await
    }
}
