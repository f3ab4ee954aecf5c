//! Data written by earlier versions, brought to the current key layout.
//!
//! Layout 1 kept each agenda copy under the person's agenda by event id
//! ([`keys::layout1_agenda_event`]) and no event record; layout 2 (see
//! [`crate::keys`]) files copies by time and keeps one record per event.
//! `agenda-users` runs [`Store::upgrade_layout`] before it serves, so an
//! existing deployment keeps every event.

use std::collections::HashSet;

use super::{Batch, Store};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::EventRecord;

/// The layout this code reads and writes (recorded at [`keys::LAYOUT`];
/// absent: 1, or empty).
pub const LAYOUT: u32 = 2;
/// Copies moved per transaction (each is a delete and two puts).
const CHUNK: usize = 64;

impl Store {
    /// Moves layout-1 agenda copies to layout 2 and records the layout;
    /// returns how many copies moved. Safe to run on several replicas at
    /// once (each move compares the old copy's revision) and again after
    /// a crash half way (it picks up what is left).
    pub async fn upgrade_layout(&self) -> ApiResult<usize> {
        if self
            .get::<u32>(keys::LAYOUT)
            .await?
            .is_some_and(|v| v.value >= LAYOUT)
        {
            return Ok(0);
        }
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
        let mut done = Batch::default();
        done.put(keys::LAYOUT, &LAYOUT)?;
        self.commit(done).await?;
        if moved > 0 {
            tracing::info!(moved, "agenda copies moved to the time-filed layout");
        }
        Ok(moved)
    }
}
