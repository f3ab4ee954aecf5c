//! Data written by earlier versions, brought to the current key layout.
//!
//! Layout 1 kept each agenda copy under the person's agenda by event id
//! ([`keys::layout1_agenda_event`]) and no event record; layout 2 (see
//! [`crate::keys`]) files copies by time and keeps one record per event;
//! layout 3 indexes each group's events ([`keys::group_event`]), so
//! members who join or leave later are added to them or taken out;
//! layout 4 files copies of recurring and long events by when they end
//! ([`keys::filing`]; they were under `r/` by id alone, read by every
//! window forever); layout 5 files each group's event index by when the
//! event ends ([`keys::group_event`]; by id alone, a join read every event
//! the group ever had); layout 6 indexes the words each account is found
//! by ([`keys::name_word`]; the user search read every account); layout 7
//! files each deleted account's session key to be forgotten
//! ([`keys::ended_session`]; every gateway kept them all, forever).
//! `agenda-users` runs [`Store::upgrade_layout`] before it serves, so an
//! existing deployment keeps every event.

use std::collections::HashSet;

use super::{Batch, Read, Store};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::{EventRecord, UserRecord};

/// The layout this code reads and writes (recorded at [`keys::LAYOUT`];
/// absent: 1, or empty).
pub const LAYOUT: u32 = 7;
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
        let refiled = if at < 4 {
            self.file_long_copies_by_end().await?
        } else {
            0
        };
        // Layout 3's index (by id) is filed by end here.
        let filed = self.file_group_events_by_end().await?;
        let named = self.index_name_words().await?;
        let ended = self.file_ended_sessions().await?;
        let mut done = Batch::default();
        done.put(keys::LAYOUT, &LAYOUT)?;
        self.commit(done).await?;
        tracing::info!(
            from = at,
            moved,
            indexed,
            refiled,
            filed,
            named,
            ended,
            "data brought to layout {LAYOUT}"
        );
        Ok(Some(moved + refiled + filed + named + ended))
    }

    /// Layout 4: copies of recurring and long events filed by when they
    /// end, refiled from their events' records ([`Self::refile`]). Also
    /// run in the background at every start ([`Store::refile_stragglers`]).
    async fn file_long_copies_by_end(&self) -> ApiResult<usize> {
        self.refile(
            keys::AGENDAS,
            keys::layout3_long_copy,
            "agenda copies",
            |batch, user, record, bumped| {
                // A person taken out of the event keeps no copy.
                if let Some(ev) = record.filter(|ev| ev.participants().any(|p| p == user)) {
                    batch.put(&keys::agenda_event(user, ev), ev)?;
                }
                // What a window shows changes: conflict checks of the
                // moment must see it (they compare this version).
                if bumped.insert(user) {
                    batch.bump(&keys::agenda_version(user));
                }
                Ok(())
            },
        )
        .await
    }

    /// Moves the keys under `prefix` that `old` recognises (giving the
    /// owner, a person or a group, and the event) to where the event's
    /// record says: each is deleted, and `place` adds what replaces it
    /// (None: the event is gone), comparing the old key and the record.
    /// The record is read as it is now (a key that a replica of the
    /// previous version wrote during a rolling upgrade may be behind it);
    /// one that changed meanwhile is looked for again, a few passes at
    /// most. `place` gets a set that is new for each transaction. Keys
    /// whose record does not decode stay where they are.
    async fn refile(
        &self,
        prefix: &str,
        old: impl Fn(&[u8]) -> Option<(uuid::Uuid, uuid::Uuid)>,
        what: &str,
        mut place: impl FnMut(
            &mut Batch,
            uuid::Uuid,
            Option<&EventRecord>,
            &mut HashSet<uuid::Uuid>,
        ) -> ApiResult<()>,
    ) -> ApiResult<usize> {
        let mut moved = 0;
        for _ in 0..5 {
            // (owner, event, the old key, its revision); raw, as nothing
            // but the keys is looked at.
            let mut found: Vec<(uuid::Uuid, uuid::Uuid, String, i64)> = Vec::new();
            self.scan_raw(prefix, |kv| {
                if let Some((owner, id)) = old(&kv.key) {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    found.push((owner, id, key, kv.mod_revision));
                }
            })
            .await?;
            if found.is_empty() {
                break;
            }
            for chunk in found.chunks(CHUNK) {
                let reads = chunk
                    .iter()
                    .map(|(_, id, _, _)| Read::key(&keys::event(*id)));
                // Without guards a snapshot always reads.
                let Some(records) = self.snapshot(&[], reads).await? else {
                    continue;
                };
                let mut batch = Batch::default();
                let mut seen = HashSet::new();
                let mut undecoded = 0;
                for (i, (owner, id, key, revision)) in chunk.iter().enumerate() {
                    let Ok(record) = records.value::<EventRecord>(i) else {
                        undecoded += 1;
                        continue;
                    };
                    batch.unchanged(key, *revision).delete(key);
                    batch.unchanged(
                        &keys::event(*id),
                        record.as_ref().map_or(0, |r| r.mod_revision),
                    );
                    place(
                        &mut batch,
                        *owner,
                        record.as_ref().map(|r| &r.value),
                        &mut seen,
                    )?;
                }
                if undecoded > 0 {
                    tracing::warn!(
                        undecoded,
                        "event records that do not decode: their {what} were left where they are"
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

    /// What a replica of a previous version wrote after the data was
    /// upgraded: copies of series and long events under `r/` by id
    /// (layout 3), where no reader of layout 4 looks, and group index
    /// entries by id (layout 4). Every `agenda-users` that finds the data
    /// already upgraded runs this in the background after it starts, so
    /// the last replica restarted in a rolling upgrade refiles what the
    /// old ones wrote while they still served; returns how many moved.
    pub async fn refile_stragglers(&self) -> ApiResult<usize> {
        Ok(self.file_long_copies_by_end().await?
            + self.file_group_events_by_end().await?
            + self.index_name_words().await?
            + self.file_ended_sessions().await?)
    }

    /// Layout 7: each deleted account's session key filed to be forgotten
    /// ([`keys::ended_session`]), for those not filed yet (every one at
    /// the upgrade; later, those a replica of layout 6 deleted during a
    /// rolling upgrade). Filed as deleted now, which is never early: no
    /// token of theirs outlives `ENDED_SESSION_KEEP` from now. Filing one
    /// twice (an account deleted between the two reads) only leaves a
    /// second entry, forgotten the same way.
    async fn file_ended_sessions(&self) -> ApiResult<usize> {
        let filed = self.ids_under(keys::ENDED_SESSIONS).await?;
        let mut missing = Vec::new();
        self.scan_raw(keys::SESSIONS, |kv| match keys::session_user(&kv.key) {
            Some(user) if kv.value == keys::SESSION_DELETED && !filed.contains(&user) => {
                missing.push(user)
            }
            _ => {}
        })
        .await?;
        let now = chrono::Utc::now();
        for chunk in missing.chunks(CHUNK) {
            let mut batch = Batch::default();
            for user in chunk {
                batch.put_raw(&keys::ended_session(now, *user), Vec::new());
            }
            self.commit(batch).await?;
        }
        Ok(missing.len())
    }

    /// The ids the keys under `prefix` end in, read page by page.
    async fn ids_under(&self, prefix: &str) -> ApiResult<HashSet<uuid::Uuid>> {
        let mut ids = HashSet::new();
        self.scan_raw(prefix, |kv| {
            if let Some(id) = keys::last_id(&kv.key) {
                ids.insert(id);
            }
        })
        .await?;
        Ok(ids)
    }

    /// Layout 6: the words each account is found by
    /// ([`crate::rules::words_of`]), for the accounts that have
    /// none yet (all of them at the upgrade; later, those a replica of
    /// layout 5 registered during a rolling upgrade). Holds each such
    /// account's id and words meanwhile (about 100 bytes each).
    async fn index_name_words(&self) -> ApiResult<usize> {
        let indexed = self.ids_under(keys::NAME_WORDS).await?;
        let mut missing = Vec::new();
        self.scan::<UserRecord>(keys::USERS, |_, v| {
            if !indexed.contains(&v.value.id) {
                missing.push((v.value.id, crate::rules::words_of(&v.value)));
            }
        })
        .await?;
        for chunk in missing.chunks(CHUNK) {
            let mut batch = Batch::default();
            for (id, words) in chunk {
                super::users::put_name_words(&mut batch, *id, words);
            }
            self.commit(batch).await?;
        }
        Ok(missing.len())
    }

    /// Layout 5: each group's event index filed by when the event ends,
    /// refiled from the events' records ([`Self::refile`]); an entry whose
    /// event is gone, or no longer the group's, just goes. Readers of
    /// layout 5 also read what is left by id (`keys::group_events_by_id`),
    /// so a group's events indexed by a replica of layout 4 during a
    /// rolling upgrade are never missed; this only makes that read empty
    /// again.
    async fn file_group_events_by_end(&self) -> ApiResult<usize> {
        self.refile(
            keys::GROUP_EVENTS,
            keys::layout4_group_event,
            "group index entries",
            |batch, group, record, _| {
                if let Some(ev) = record.filter(|ev| ev.group_id == Some(group)) {
                    batch.put_raw(&keys::group_event(group, ev), Vec::new());
                }
                Ok(())
            },
        )
        .await
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
    /// empty value: harmless to repeat), filed as layout 5 has it.
    async fn index_group_events(&self) -> ApiResult<usize> {
        let group_events: Vec<String> = self
            .list::<EventRecord>(keys::EVENTS)
            .await?
            .into_iter()
            .filter_map(|ev| Some(keys::group_event(ev.value.group_id?, &ev.value)))
            .collect();
        for chunk in group_events.chunks(CHUNK) {
            let mut batch = Batch::default();
            for key in chunk {
                batch.put_raw(key, Vec::new());
            }
            self.commit(batch).await?;
        }
        Ok(group_events.len())
    }
}
