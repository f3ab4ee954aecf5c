//! Notifications: written in the same transaction as the change that
//! causes them (the outbox of the messaging layer), read and marked read
//! by their owner.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::{Attempt, Batch, Read, Store, Versioned};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::Notification;

/// Most notifications one listing returns.
pub const LIST_LIMIT: usize = 200;

/// Notifications kept per person: the newest. Older ones are deleted when
/// the person's list is next read whole (a listing, "mark all read"), so
/// those reads cost at most this many, not every notification ever had,
/// and as new ones arrive ([`TRIM_ONE_IN`]), so a person who never reads
/// theirs does not keep them all either.
pub const KEEP: usize = 1_000;

/// A committed batch that adds notifications for a person also trims that
/// person's list to the newest [`KEEP`] when it adds this many or more,
/// or when one of them is drawn (its id's random bits, one in this many):
/// about one count of a person's list per this many notifications, so a
/// person who never reads keeps about [`KEEP`] plus a few times this.
pub const TRIM_ONE_IN: usize = 64;

/// A page of `all` (oldest first, as stored): newest first, unread only
/// if asked, at most `limit` (1..=[`LIST_LIMIT`]) older than `before`, and
/// the id to ask for the next page with when there are more.
pub fn page(
    all: Vec<Notification>,
    unread_only: bool,
    limit: usize,
    before: Option<Uuid>,
) -> (Vec<Notification>, Option<Uuid>) {
    let limit = limit.clamp(1, LIST_LIMIT);
    let mut out: Vec<Notification> = all
        .into_iter()
        .rev()
        .filter(|n| !unread_only || !n.read)
        .filter(|n| before.is_none_or(|b| n.id < b))
        .take(limit + 1)
        .collect();
    let next = (out.len() > limit).then(|| {
        out.truncate(limit);
        out[limit - 1].id
    });
    (out, next)
}

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
    let drawn = n.id.as_u128().is_multiple_of(TRIM_ONE_IN as u128);
    let (count, trim) = batch.notified.entry(user).or_default();
    *count += 1;
    *trim |= drawn;
    Ok(())
}

impl Store {
    /// A page of `user`'s notifications, newest first: at most `limit`
    /// (1..=[`LIST_LIMIT`]) older than `before` (the `next` of the page
    /// before), and the `next` of this page when there are more.
    pub async fn notifications(
        &self,
        user: Uuid,
        unread_only: bool,
        limit: usize,
        before: Option<Uuid>,
    ) -> ApiResult<(Vec<Notification>, Option<Uuid>)> {
        let all = self.kept_notifications(user).await?;
        Ok(page(
            all.into_iter().map(|v| v.value).collect(),
            unread_only,
            limit,
            before,
        ))
    }

    /// `user`'s newest [`KEEP`] notifications, oldest first; any older are
    /// deleted on the way.
    async fn kept_notifications(&self, user: Uuid) -> ApiResult<Vec<Versioned<Notification>>> {
        let mut all = self
            .list::<Notification>(&keys::notifications(user))
            .await?;
        let over = all.len().saturating_sub(KEEP);
        self.delete_notifications(user, all[..over].iter().map(|n| n.value.id))
            .await?;
        if over > 0 {
            tracing::info!(%user, deleted = over, kept = KEEP, "older notifications deleted");
        }
        all.drain(..over);
        Ok(all)
    }

    /// Deletes `user`'s notifications older than the newest [`KEEP`]; how
    /// many went. Each round reads, in one snapshot, how many the person
    /// has (a count: nothing sent back) and the oldest page of them, and
    /// deletes as many of that page as are over. Trims that race (two
    /// replicas, or a listing) each delete the oldest of a list as one
    /// snapshot saw it, so together they never go below KEEP.
    pub async fn trim_notifications(&self, user: Uuid) -> ApiResult<usize> {
        let prefix = keys::notifications(user);
        let mut deleted = 0;
        loop {
            let reads = [
                Read::prefix(&prefix).count_only(),
                // Keys are by time-ordered id: the first are the oldest.
                Read::prefix(&prefix).limit(LIST_LIMIT as i64),
            ];
            let Some(snap) = self.snapshot(&[], reads).await? else {
                break;
            };
            let over = usize::try_from(snap.count(0))
                .unwrap_or(0)
                .saturating_sub(KEEP);
            let ids: Vec<Uuid> = snap
                .ids(1)
                .into_iter()
                .take(over)
                .map(|(id, _)| id)
                .collect();
            if ids.is_empty() {
                break;
            }
            deleted += ids.len();
            self.delete_notifications(user, ids).await?;
        }
        if deleted > 0 {
            tracing::info!(%user, deleted, kept = KEEP, "older notifications deleted as new ones came");
        }
        Ok(deleted)
    }

    /// After a committed batch: trims the lists of the people it notified
    /// that [`add`] marked (see [`TRIM_ONE_IN`]), side by side. The batch
    /// is committed whatever happens here, so a failure is only logged:
    /// the next drawn notification tries again.
    pub(super) async fn trim_notified(&self, notified: BTreeMap<Uuid, (usize, bool)>) {
        let due = notified
            .into_iter()
            .filter(|(_, (count, drawn))| *drawn || *count >= TRIM_ONE_IN)
            .map(|(user, _)| async move {
                if let Err(e) = self.trim_notifications(user).await {
                    tracing::warn!(%user, error = %e, "could not trim the notifications");
                }
            });
        futures::future::join_all(due).await;
    }

    /// Deletes `user`'s notifications `ids`, in transactions of at most
    /// [`LIST_LIMIT`].
    async fn delete_notifications(
        &self,
        user: Uuid,
        ids: impl IntoIterator<Item = Uuid>,
    ) -> ApiResult<()> {
        let ids: Vec<Uuid> = ids.into_iter().collect();
        for chunk in ids.chunks(LIST_LIMIT) {
            // Blind deletes: a notification is never written again once
            // older than the newest KEEP, except to mark it read, and a
            // read mark on one about to go is no loss.
            let mut batch = Batch::default();
            for id in chunk {
                batch.delete(&keys::notification(user, *id));
            }
            self.commit_untrimmed(batch).await?;
        }
        Ok(())
    }

    /// Marks every unread notification of `user` read; how many were.
    /// Written in transactions of at most [`LIST_LIMIT`] each, so a long
    /// backlog never makes one oversized transaction.
    pub async fn mark_all_read(&self, user: Uuid) -> ApiResult<usize> {
        let mut marked = 0;
        loop {
            let unread: Vec<_> = self
                .kept_notifications(user)
                .await?
                .into_iter()
                .filter(|n| !n.value.read)
                .take(LIST_LIMIT)
                .collect();
            if unread.is_empty() {
                return Ok(marked);
            }
            let count = unread.len();
            let mut batch = Batch::default();
            for n in unread {
                let key = keys::notification(user, n.value.id);
                let read = Notification {
                    read: true,
                    ..n.value
                };
                batch.unchanged(&key, n.mod_revision).put(&key, &read)?;
            }
            // A conflict (one read meanwhile) only means reading the
            // list again.
            if self.commit_at(batch).await?.is_some() {
                marked += count;
            }
        }
    }

    /// `user`'s notifications created after `after` (ids are time-ordered,
    /// and so are their keys), oldest first, at most [`LIST_LIMIT`] × 5:
    /// one span read from `after` on, whatever came before it.
    pub async fn notifications_after(
        &self,
        user: Uuid,
        after: Option<Uuid>,
    ) -> ApiResult<Vec<Notification>> {
        let prefix = keys::notifications(user);
        let start = match after {
            Some(a) => format!("{}\u{0}", keys::notification(user, a)),
            None => prefix.clone(),
        };
        let read = Read::span(&start, &keys::prefix_end(&prefix)).limit((LIST_LIMIT * 5) as i64);
        let Some(snap) = self.snapshot(&[], [read]).await? else {
            return Ok(Vec::new());
        };
        Ok(snap
            .values::<Notification>(0)?
            .into_iter()
            .map(|v| v.value)
            .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(n: usize) -> Vec<Notification> {
        (0..n)
            .map(|i| Notification {
                id: Uuid::now_v7(),
                kind: "k".into(),
                created_at: Utc::now(),
                read: i % 2 == 0,
                data: Value::Null,
            })
            .collect()
    }

    #[test]
    fn pages_walk_newest_first_to_the_end_without_repeats() {
        let all = notes(7);
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let (items, next) = page(all.clone(), false, 3, before);
            seen.extend(items.iter().map(|n| n.id));
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        let want: Vec<Uuid> = all.iter().rev().map(|n| n.id).collect();
        assert_eq!(seen, want);
        let (unread, next) = page(all.clone(), true, 200, None);
        assert_eq!(unread.len(), 3);
        assert!(next.is_none());
        assert_eq!(page(all, false, 0, None).0.len(), 1, "limit at least 1");
    }
}
