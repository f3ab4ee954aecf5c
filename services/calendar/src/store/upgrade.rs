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

use super::{Batch, Store};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::EventRecord;

/// The layout this code reads and writes (recorded at [`keys::LAYOUT`];
/// absent: 1, or empty).
pub const LAYOUT: u32 = 4;
/// Copies moved per transaction (each is a delete and two puts).
const CHUNK: usize = 64;

impl Store {
    /// Moves layout-1 agenda copies to layout 2 and records the layout;
    /// returns how many copies moved. Safe to run on several replicas at
    /// once (each move compares the old copy's revision) and again after
    /// a crash half way (it picks up what is left).
    pub async fn upgrade_layout(&self) -> ApiResult<usize> {
        let at = self.get::<u32>(keys::LAYOUT).await?.map_or(1, |v| v.value);
        if at >= LAYOUT {
            return Ok(0);
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
        if moved > 0 || indexed > 0 || refiled > 0 {
            tracing::info!(moved, indexed, refiled, "data brought to layout {LAYOUT}");
        }
        Ok(moved + refiled)
    }

    /// Layout 4: copies of recurring and long events filed by when they
    /// end. Each move compares the old copy; one that changed meanwhile
    /// (another replica moved it, or an older version still serving wrote
    /// it) is looked for again, a few passes at most.
    async fn file_long_copies_by_end(&self) -> ApiResult<usize> {
        let mut moved = 0;
        for _ in 0..5 {
            let mut old: Vec<(uuid::Uuid, String, super::Versioned<EventRecord>)> = Vec::new();
            let mut undecoded = 0;
            // Raw: only the few copies under r/ by id are decoded.
            self.scan_raw(keys::AGENDAS, |kv| {
                let Some((user, _)) = keys::layout3_long_copy(&kv.key) else {
                    return;
                };
                match serde_json::from_slice(&kv.value) {
                    Ok(value) => old.push((
                        user,
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        super::Versioned {
                            value,
                            mod_revision: kv.mod_revision,
                        },
                    )),
                    Err(_) => undecoded += 1,
                }
            })
            .await?;
            if undecoded > 0 {
                tracing::warn!(
                    undecoded,
                    "agenda copies that do not decode were left where they are"
                );
            }
            if old.is_empty() {
                break;
            }
            for chunk in old.chunks(CHUNK) {
                let mut batch = Batch::default();
                for (user, key, copy) in chunk {
                    batch
                        .unchanged(key, copy.mod_revision)
                        .delete(key)
                        .put(&keys::agenda_event(*user, &copy.value), &copy.value)?;
                }
                if self.commit(batch).await? {
                    moved += chunk.len();
                }
            }
        }
        Ok(moved)
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
