//! Private iCalendar feeds: a secret URL per person (their agenda) and
//! per person and group (the group agenda as they see it), for calendar
//! apps that subscribe to a URL and cannot send a token.
//!
//! The URL's key is stored as a keyed hash (`app_passwords`); a new one
//! replaces the old in one transaction, so rotating revokes.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::app_passwords::{keyed_hash, new_secret};
use super::events::{window_events, window_reads};
use super::{Batch, Store};
use crate::error::{ApiError, ApiResult};
use crate::ical::{self, Entry, People, Shown};
use crate::model::{EventRecord, UserRecord, Visibility};
use crate::rules::{self, Viewer};
use crate::{audit, cpu, keys};

/// A group feed holds what overlaps this much before now...
const GROUP_FEED_PAST: Duration = Duration::days(90);
/// ...to this much after.
const GROUP_FEED_AHEAD: Duration = Duration::days(400);
/// A personal feed holds what overlaps a year before now to two years
/// after: a window, like the group's, so that a feed's cost follows the
/// span shown and not the years of history behind it (at 100,000 events
/// the whole agenda rendered to 39 MB and failed; docs/GROWTH.md Found 2).
const PERSONAL_FEED_PAST: Duration = Duration::days(365);
const PERSONAL_FEED_AHEAD: Duration = Duration::days(730);

/// A person's current feed of one kind (the hash of its key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedOf {
    pub hash: String,
}

/// Whose feed a key opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FeedRecord {
    user_id: Uuid,
    group_id: Option<Uuid>,
}

/// A feed as served: its calendar name and text.
pub struct Feed {
    pub name: String,
    pub ics: String,
}

impl Store {
    /// A new secret key for `caller`'s feed (of `group` if given, whose
    /// member they must be); the previous key of that feed stops working.
    pub async fn create_feed(&self, caller: Uuid, group: Option<Uuid>) -> ApiResult<String> {
        if let Some(g) = group {
            self.membership(caller, g).await?;
        }
        let key = new_secret();
        let hash = keyed_hash(&self.hash_key().await?, &key);
        self.optimistic("your calendar feed", || async {
            let me = self.me(caller).await?;
            let of = keys::feed_of(caller, group);
            let cur = self.get::<FeedOf>(&of).await?;
            let mut batch = Batch::default();
            batch.unchanged(&of, cur.as_ref().map_or(0, |c| c.mod_revision));
            if let Some(old) = &cur {
                batch.delete(&keys::feed(&old.value.hash));
            }
            batch
                .put(
                    &keys::feed(&hash),
                    &FeedRecord {
                        user_id: caller,
                        group_id: group,
                    },
                )?
                .put(&of, &FeedOf { hash: hash.clone() })?;
            audit::add(
                &mut batch,
                Some(caller),
                &me.username,
                "calendar_feed_created",
                json!({"group_id": group, "replaced": cur.is_some()}),
            )?;
            self.commit_or_retry(batch, ()).await
        })
        .await?;
        Ok(key)
    }

    /// The feed a secret key opens (404 for a key unknown or replaced).
    pub async fn feed(&self, key: &str) -> ApiResult<Feed> {
        let missing = || ApiError::not_found("calendar feed");
        if key.is_empty() || key.len() > 100 {
            return Err(missing());
        }
        let hash = keyed_hash(&self.hash_key().await?, key);
        let rec = self
            .get::<FeedRecord>(&keys::feed(&hash))
            .await?
            .ok_or_else(missing)?
            .value;
        let user = self.user(rec.user_id).await?.ok_or_else(missing)?;
        match rec.group_id {
            None => self.personal_feed(&user).await,
            Some(g) => match self.group_feed(&user, g).await {
                // Left the group: the feed is gone with the membership.
                Err(e) if e.kind == crate::ErrorKind::NotFound => Err(missing()),
                other => other,
            },
        }
    }

    /// The person's agenda from a year back to two years ahead (a series
    /// whole if any of it ends in that span); private events as busy
    /// blocks (a feed URL travels further than a session).
    async fn personal_feed(&self, user: &UserRecord) -> ApiResult<Feed> {
        let now = Utc::now();
        let window = (now - PERSONAL_FEED_PAST, now + PERSONAL_FEED_AHEAD);
        let snap = self
            .snapshot(&[], window_reads(user.id, window, 0))
            .await?
            .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
        // Each event is filed once in an agenda; by id for a stable order.
        let events: BTreeMap<Uuid, EventRecord> = window_events(&snap, 0)?
            .into_iter()
            .map(|ev| (ev.id, ev))
            .collect();
        let shown: Vec<(EventRecord, Shown)> = events
            .into_values()
            .map(|ev| {
                let s = if ev.visibility == Visibility::Private {
                    Shown::Busy {
                        label: "Busy".into(),
                    }
                } else {
                    Shown::Details
                };
                (ev, s)
            })
            .collect();
        let name = format!("{} (Agenda)", user.name_shown());
        self.render(user.id, name, shown).await
    }

    /// The group agenda as `user` sees it, from a little before now to a
    /// year ahead: events they may see in full, the rest as busy blocks
    /// naming whose time it is.
    async fn group_feed(&self, user: &UserRecord, group: Uuid) -> ApiResult<Feed> {
        let (m, members) = self.membership_and_members(user.id, group).await?;
        let now = Utc::now();
        let window = (now - GROUP_FEED_PAST, now + GROUP_FEED_AHEAD);
        let reads = members
            .iter()
            .flat_map(|mem| window_reads(mem.user_id, window, 0));
        let snap = self
            .snapshot(&[], reads)
            .await?
            .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
        let viewer = Viewer {
            user_id: user.id,
            rank: m.me.rank,
            kind: m.group.kind,
            group_id: group,
        };
        let mut shown: BTreeMap<Uuid, (EventRecord, Shown)> = BTreeMap::new();
        for (i, mem) in members.iter().enumerate() {
            for ev in window_events(&snap, 2 * i)? {
                // As the group agenda shows it.
                if !rules::is_busy_for(&ev, mem.user_id) {
                    continue;
                }
                let s = if rules::sees_details(&viewer, mem, &ev) {
                    Shown::Details
                } else {
                    Shown::Busy {
                        label: format!("Busy ({})", mem.username),
                    }
                };
                match shown.get_mut(&ev.id) {
                    Some(e) if s == Shown::Details => e.1 = s,
                    Some(_) => {}
                    None => {
                        shown.insert(ev.id, (ev, s));
                    }
                }
            }
        }
        let name = format!("{} (Agenda group)", m.group.name);
        self.render(user.id, name, shown.into_values().collect())
            .await
    }

    /// The calendar text of `events` as `viewer` sees it.
    pub(crate) async fn render(
        &self,
        viewer: Uuid,
        name: String,
        events: Vec<(EventRecord, Shown)>,
    ) -> ApiResult<Feed> {
        let people = self.people_for(viewer).await?;
        let weight = cpu::weight(events.iter().map(|(e, _)| e)).max(events.len());
        let ics = cpu::run_sized(viewer, weight, {
            let name = name.clone();
            move || {
                let entries: Vec<Entry> = events
                    .iter()
                    .map(|(ev, shown)| Entry {
                        ev,
                        shown: shown.clone(),
                        alarms_for: None,
                    })
                    .collect();
                ical::calendar(&name, &entries, &people)
            }
        })
        .await?;
        Ok(Feed { name, ics })
    }

    /// The addresses `viewer` sees people with: their own email; everyone
    /// else's address here ([`ical::address_of`]), never their email.
    pub(crate) async fn people_for(&self, viewer: Uuid) -> ApiResult<People> {
        Ok(self
            .user(viewer)
            .await?
            .map(|u| (u.id, (u.username, u.email)))
            .into_iter()
            .collect())
    }
}
