//! Reminders: filed by when they are due under [`keys::REMINDERS`], with
//! the list of an event's filed reminders at [`keys::event_reminders`],
//! both rewritten in the transaction of every change of the event, and
//! fired once each: the transaction that deletes a due reminder writes
//! its notification and files the next one, so a reminder fires exactly
//! once whichever replica fires it and whenever one dies.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::events::Write;
use super::notifications;
use super::{Attempt, Batch, Read, Store};
use crate::error::ApiResult;
use crate::keys;
use crate::model::EventRecord;
use crate::reminders::{self, Due};

/// Most reminders fired in one round.
const FIRE_BATCH: i64 = 100;

impl Store {
    /// Adds to `batch` the refiling of an event's reminders, from `before`
    /// (None: new) to `after` (None: deleted), compared on the event's list
    /// of filed reminders so a reminder firing meanwhile loses or wins
    /// cleanly. Nothing for events without reminders.
    pub(crate) async fn refile_reminders(
        &self,
        batch: &mut Batch,
        before: Option<&EventRecord>,
        after: Option<&EventRecord>,
    ) -> ApiResult<()> {
        let had = before.is_some_and(|e| !e.reminders.is_empty());
        let has = after.is_some_and(|e| !e.reminders.is_empty());
        let Some(id) = after.or(before).map(|e| e.id) else {
            return Ok(());
        };
        if !had && !has {
            return Ok(());
        }
        let list_key = keys::event_reminders(id);
        let filed = self.get::<Vec<Due>>(&list_key).await?;
        batch.unchanged(&list_key, filed.as_ref().map_or(0, |f| f.mod_revision));
        let filed = filed.map(|f| f.value).unwrap_or_default();
        for d in &filed {
            batch.delete(&keys::reminder(d));
        }
        let due = after.map_or_else(Vec::new, |ev| reminders::refile(ev, Utc::now(), &filed));
        if due.is_empty() {
            batch.delete(&list_key);
            return Ok(());
        }
        for d in &due {
            batch.put(&keys::reminder(d), d)?;
        }
        batch.put(&list_key, &due)?;
        Ok(())
    }

    /// Sets `caller`'s own reminders on an event they take part in.
    pub async fn set_reminders(
        &self,
        caller: Uuid,
        id: Uuid,
        minutes: &[u32],
    ) -> ApiResult<EventRecord> {
        self.optimistic("this event", || async move {
            let cur = self.event(caller, id).await?;
            let ev = crate::events::with_reminders(&cur.value, caller, minutes)?;
            if ev == cur.value {
                return Ok(Attempt::Done(ev));
            }
            Ok(self
                .write_event(Write::settled(&ev, caller, Vec::new(), &cur))
                .await?
                .map(|_| ev))
        })
        .await
    }

    /// Fires the reminders due at `now` or before (at most a round's
    /// worth): each in one transaction that deletes it, writes its
    /// `reminder` notification and files the next one of the series,
    /// compared on the reminder itself and on its event's list, so it
    /// fires once however many replicas try. A reminder whose occurrence
    /// is already over (every replica was down) is dropped, not sent.
    /// Returns how many notifications were written.
    pub async fn fire_due_reminders(&self, now: DateTime<Utc>) -> ApiResult<usize> {
        let due = self
            .snapshot(
                &[],
                [Read::span(keys::REMINDERS, &keys::reminders_until(now)).limit(FIRE_BATCH)],
            )
            .await?
            .map(|s| s.values::<Due>(0))
            .transpose()?
            .unwrap_or_default();
        let mut fired = 0;
        for d in due {
            let key = keys::reminder(&d.value);
            let list_key = keys::event_reminders(d.value.event_id);
            let reads = [
                Read::key(&keys::event(d.value.event_id)),
                Read::key(&list_key),
            ];
            let Some(snap) = self.snapshot(&[], reads).await? else {
                continue;
            };
            let ev = snap.value::<EventRecord>(0)?.map(|v| v.value);
            let mut filed: Vec<Due> = snap
                .value::<Vec<Due>>(1)?
                .map(|v| v.value)
                .unwrap_or_default();
            let mut batch = Batch::default();
            batch
                .unchanged(&key, d.mod_revision)
                .unchanged(&list_key, snap.mod_revision(1))
                .delete(&key);
            filed.retain(|f| *f != d.value);
            let mut sent = false;
            if let Some(ev) = &ev {
                if d.value.occurrence + (ev.end - ev.start) > now {
                    notifications::add(
                        &mut batch,
                        d.value.user_id,
                        "reminder",
                        reminders::notice(ev, &d.value),
                    )?;
                    sent = true;
                }
                let still_set = reminders::schedule(ev, d.value.at)
                    .iter()
                    .any(|s| s.user_id == d.value.user_id && s.minutes == d.value.minutes);
                let next = reminders::next(ev, d.value.user_id, d.value.minutes, d.value.at)
                    .filter(|_| still_set);
                if let Some(next) = next {
                    batch.put(&keys::reminder(&next), &next)?;
                    filed.push(next);
                }
            }
            if filed.is_empty() {
                batch.delete(&list_key);
            } else {
                batch.put(&list_key, &filed)?;
            }
            // A lost compare: fired elsewhere, or the event changed (and
            // its reminders were filed again).
            if self.commit(batch).await? && sent {
                fired += 1;
            }
        }
        Ok(fired)
    }
}
