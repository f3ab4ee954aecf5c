//! Data written by earlier versions, brought to the current key layout.
//!
//! Layout 1 kept each agenda copy under the person's agenda by event id
//! ([`keys::layout1_agenda_event`]) and no event record; layout 2 (see
//! [`crate::keys`]) files copies by time and keeps one record per event;
//! layout 3 indexes each group's events ([`keys::group_event`]), so
//! members who join or leave later are added to them or taken out;
//! layout 4 files copies of recurring and long events by when they end
//! ([`keys::filing`]; they were under `r/` by id alone, read by every
//! window forever).
//! `agenda-users` runs [`Store::upgrade_layout`] before it serves, so an
//! existing deployment keeps every event.

use std::collections::HashSet;

use super::{Batch, Read, Store};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::EventRecord;

/// The layout this code reads and writes (recorded at [`keys::LAYOUT`];
/// absent: 1, or empty).
pub const LAYOUT: u32 = 4;
/// Copies moved per transaction (each is a delete and two puts).
const CHUNK: usize = 64;

impl Store {
    /// Brings the data to [`LAYOUT`] and records it; returns how many
    /// copies moved, or None when the data was already there. Safe to run
    /// on several replicas at once (each move compares the old copy's
    /// revision) and again after a crash half way (it picks up what is
    /// left).
    pub async fn upgrade_layout(&self) -> ApiResult<Option<usize>> {
        let at = self.get::<u32>(keys::LAYOUT).await?.map_or(1, |v| v.value);
        if at >= LAYOUT {
            tracing::info!(layout = at, "data already at layout {LAYOUT} or later");
            return Ok(None);
        }
        let moved = if at < 2 {
            self.file_copies_by_time().await?
        } else {
            0
        };
        let indexed = if at < 3 {
            self.index_group_events().await?
        } else {
            0
        };
        let refiled = self.file_long_copies_by_end().await?;
        let mut done = Batch::default();
        done.put(keys::LAYOUT, &LAYOUT)?;
        self.commit(done).await?;
        tracing::info!(
            from = at,
            moved,
            indexed,
            refiled,
            "data brought to layout {LAYOUT}"
        );
        Ok(Some(moved + refiled))
    }

    /// Layout 4: copies of recurring and long events filed by when they
    /// end. Each copy is refiled from its event's record (the event as it
    /// is now: a copy that a replica of the previous version wrote during
    /// a rolling upgrade may be behind it), comparing both; one that
    /// changed meanwhile is looked for again, a few passes at most. Also
    /// run in the background at every start ([`Store::refile_stragglers`]).
    async fn file_long_copies_by_end(&self) -> ApiResult<usize> {
        let mut moved = 0;
        for _ in 0..5 {
            // (person, event, key of the old copy, its revision); raw,
            // as nothing but the keys under r/ by id is looked at.
            let mut old: Vec<(uuid::Uuid, uuid::Uuid, String, i64)> = Vec::new();
            self.scan_raw(keys::AGENDAS, |kv| {
                if let Some((user, id)) = keys::layout3_long_copy(&kv.key) {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    old.push((user, id, key, kv.mod_revision));
                }
            })
            .await?;
            if old.is_empty() {
                break;
            }
            for chunk in old.chunks(CHUNK) {
                let reads = chunk
                    .iter()
                    .map(|(_, id, _, _)| Read::key(&keys::event(*id)));
                // Without guards a snapshot always reads.
                let Some(records) = self.snapshot(&[], reads).await? else {
                    continue;
                };
                let mut batch = Batch::default();
                let mut bumped = HashSet::new();
                let mut undecoded = 0;
                for (i, (user, id, key, revision)) in chunk.iter().enumerate() {
                    let record = match records.value::<EventRecord>(i) {
                        Ok(record) => record,
                        Err(_) => {
                            undecoded += 1;
                            continue;
                        }
                    };
                    batch.unchanged(key, *revision).delete(key);
                    match record {
                        Some(ev) => {
                            batch.unchanged(&keys::event(*id), ev.mod_revision);
                            // A person taken out of the event keeps no copy.
                            if ev.value.participants().any(|p| p == *user) {
                                batch.put(&keys::agenda_event(*user, &ev.value), &ev.value)?;
                            }
                        }
                        // The event is gone: so goes its copy.
                        None => {
                            batch.unchanged(&keys::event(*id), 0);
                        }
                    }
                    // What a window shows changes: conflict checks of the
                    // moment must see it (they compare this version).
                    if bumped.insert(*user) {
                        batch.bump(&keys::agenda_version(*user));
                    }
                }
                if undecoded > 0 {
                    tracing::warn!(
                        undecoded,
                        "event records that do not decode: their agenda copies were left where they are"
                    );
                }
                if undecoded == chunk.len() {
                    continue;
                }
                if self.commit(batch).await? {
                    moved += chunk.len() - undecoded;
                }
            }
        }
        Ok(moved)
    }

    /// Copies of series and long events that a replica of the previous
    /// version (layout 3) wrote after the data was brought to layout 4:
    /// no reader of layout 4 looks where it put them. Every `agenda-users`
    /// that finds the data already upgraded runs this in the background
    /// after it starts, so the last replica
    /// restarted in a rolling upgrade refiles what the old ones wrote while
    /// they still served; returns how many copies moved.
    pub async fn refile_stragglers(&self) -> ApiResult<usize> {
        self.file_long_copies_by_end().await
    }

    /// Layout 2: agenda copies filed by time, one record per event.
    async fn file_copies_by_time(&self) -> ApiResult<usize> {
        let old: Vec<_> = self
            .keys(keys::AGENDAS, 0)
            .await?
            .into_iter()
            .filter_map(|kv| keys::layout1_agenda_event(&kv.key).map(|(user, _)| (user, kv)))
            .collect();
        let mut moved = 0;
        for chunk in old.chunks(CHUNK) {
            let mut batch = Batch::default();
            let mut records = HashSet::new();
            for (user, kv) in chunk {
                let ev: EventRecord = serde_json::from_slice(&kv.value).map_err(|e| {
                    ApiError::internal(format!(
                        "stored event at {} does not decode: {e}",
                        String::from_utf8_lossy(&kv.key)
                    ))
                })?;
                let old_key = String::from_utf8_lossy(&kv.key).into_owned();
                batch
                    .unchanged(&old_key, kv.mod_revision)
                    .delete(&old_key)
                    .put(&keys::agenda_event(*user, &ev), &ev)?;
                // Every copy of an event is the same record in layout 1.
                if records.insert(ev.id) {
                    batch.put(&keys::event(ev.id), &ev)?;
                }
            }
            // A failed compare: another replica moved these meanwhile.
            if self.commit(batch).await? {
                moved += chunk.len();
            }
        }
        Ok(moved)
    }

    /// Layout 3: every group event in its group's index (a put of an
    /// empty value: harmless to repeat).
    async fn index_group_events(&self) -> ApiResult<usize> {
        let group_events: Vec<(uuid::Uuid, uuid::Uuid)> = self
            .list::<EventRecord>(keys::EVENTS)
            .await?
            .into_iter()
            .filter_map(|ev| ev.value.group_id.map(|g| (g, ev.value.id)))
            .collect();
        for chunk in group_events.chunks(CHUNK) {
            let mut batch = Batch::default();
            for (g, id) in chunk {
                batch.put_raw(&keys::group_event(*g, *id), Vec::new());
            }
            self.commit(batch).await?;
        }
        Ok(group_events.len())
    }
}
