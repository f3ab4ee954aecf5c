//! Data written by earlier versions, brought to the current key layout.
//!
//! Layout 1 kept each agenda copy at `/agenda/agenda/{user}/{event}` and no
//! event record; layout 2 (see [`crate::keys`]) files copies by time and
//! keeps one record per event. `agenda-users` runs [`Store::upgrade_layout`]
//! before it serves, so an existing deployment keeps every event.

use std::collections::HashSet;

use uuid::Uuid;

use super::{Batch, Store};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::EventRecord;

/// Holds the layout version the data is in (absent: 1, or empty).
pub const LAYOUT_KEY: &str = crate::keys::LAYOUT;
/// The layout this code reads and writes.
pub const LAYOUT: u32 = 2;
/// Copies moved per transaction (each is a delete and two puts).
const CHUNK: usize = 64;

/// The user and event of a layout-1 agenda key, None for any other key.
fn layout1(key: &[u8]) -> Option<(Uuid, Uuid)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(keys::AGENDAS)?;
    let (user, event) = rest.split_once('/')?;
    Some((Uuid::parse_str(user).ok()?, Uuid::parse_str(event).ok()?))
}

impl Store {
    /// Moves layout-1 agenda copies to layout 2 and records the layout;
    /// returns how many copies moved. Safe to run on several replicas at
    /// once (each move compares the old copy's revision) and again after
    /// a crash half way (it picks up what is left).
    pub async fn upgrade_layout(&self) -> ApiResult<usize> {
        if self
            .get::<u32>(LAYOUT_KEY)
            .await?
            .is_some_and(|v| v.value >= LAYOUT)
        {
            return Ok(0);
        }
        let old: Vec<_> = self
            .keys(keys::AGENDAS, 0)
            .await?
            .into_iter()
            .filter_map(|kv| layout1(&kv.key).map(|(user, _)| (user, kv)))
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
        done.put(LAYOUT_KEY, &LAYOUT)?;
        self.commit(done).await?;
        if moved > 0 {
            tracing::info!(moved, "agenda copies moved to the time-filed layout");
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_layout1_keys_are_recognised() {
        let (u, e) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            layout1(format!("/agenda/agenda/{u}/{e}").as_bytes()),
            Some((u, e))
        );
        for key in [
            format!("/agenda/agenda/{u}/r/{e}"),
            format!("/agenda/agenda/{u}/t8000000000000000/{e}"),
            format!("/agenda/events/{e}"),
        ] {
            assert_eq!(layout1(key.as_bytes()), None, "{key}");
        }
    }
}
