//! CalDAV calendars: what a client sees and writes, over the same records
//! and rules as the JSON API.
//!
//! Each person has their own calendar (`personal`: the events they take
//! part in that belong to no group) and one per group they are in (the
//! group's events, read-only here: they are created in the app or the API,
//! where the hierarchy decides who is asked). A group event lives only in
//! its group's calendar, so no client shows it twice.
//!
//! An event's ETag is the revision of its record (every copy is written
//! with it). A sync token is a store revision: what changed since is what
//! has a newer revision, and what left a calendar is told by a tombstone
//! ([`keys::dav_gone`], written in the transaction that removed it), so
//! tokens outlive agenda-db's bounded history. Tombstones older than the
//! history kept are dropped when the calendar is next read, and the
//! calendar's floor rises past them: an older token is then refused
//! (`valid-sync-token`) and the client syncs afresh.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Batch, Read, Store, Versioned};
use crate::api::UpdateEventRequest;
use crate::error::{ApiError, ApiResult};
use crate::events::Idempotent;
use crate::ical::{self, Entry, Shown};
use crate::model::EventRecord;
use crate::{keys, rules, validate};

/// How long tombstones are kept by default: a client that has not synced
/// for longer starts over.
pub const SYNC_HISTORY: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Most resources one calendar-multiget asks for.
pub const MAX_MULTIGET: usize = 1000;

/// Resource names of one multiget looked up at once.
const LOOKUPS_AT_ONCE: usize = 16;

/// Prefix of sync tokens (RFC 6578 wants a URI).
const TOKEN_PREFIX: &str = "urn:agenda:sync:";

/// A calendar of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    Personal,
    Group(Uuid),
}

impl Calendar {
    /// `personal` or a group id.
    pub fn parse(s: &str) -> ApiResult<Calendar> {
        if s == "personal" {
            return Ok(Calendar::Personal);
        }
        Uuid::parse_str(s)
            .map(Calendar::Group)
            .map_err(|_| ApiError::not_found("calendar"))
    }

    /// The id its tombstones are kept under.
    fn owner(self, caller: Uuid) -> Uuid {
        match self {
            Calendar::Personal => caller,
            Calendar::Group(g) => g,
        }
    }
}

/// One calendar of the caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalendarInfo {
    /// `personal` or the group's id.
    pub id: String,
    pub name: String,
    /// The sync token as of now (also its CTag).
    pub token: String,
    pub writable: bool,
}

/// One event as a resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    /// `{name}.ics`, the last segment of its URL.
    pub name: String,
    pub etag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ics: Option<String>,
}

/// What changed in a calendar since a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncReply {
    pub token: String,
    pub changed: Vec<Resource>,
    /// Names of resources gone since.
    pub removed: Vec<String>,
}

/// The outcome of a PUT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    /// The version written, for the answer's ETag: None when something
    /// sent was not kept (RFC 4791 5.3.4: the client reads it back) or
    /// the event changed again since.
    pub etag: Option<String>,
    pub created: bool,
}

/// A tombstone's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Gone {
    id: Uuid,
    name: String,
    at: DateTime<Utc>,
}

/// The resource name of `ev` in the calendar of `owner` (a person or a
/// group): the one its organizer's client gave it, in the organizer's own
/// calendar; `{id}.ics` everywhere else.
pub fn resource_name(ev: &EventRecord, owner: Uuid) -> String {
    match ev.ical.as_ref().and_then(|o| o.dav_name.as_ref()) {
        Some(n) if ev.organizer_id == owner => n.clone(),
        _ => format!("{}.ics", ev.id),
    }
}

/// The tombstone of `ev` leaving the calendar of `owner`, for `batch`.
pub(crate) fn bury(batch: &mut Batch, ev: &EventRecord, owner: Uuid) -> ApiResult<()> {
    batch.put(
        &keys::dav_gone(owner, ev.id),
        &Gone {
            id: ev.id,
            name: resource_name(ev, owner),
            at: Utc::now(),
        },
    )?;
    Ok(())
}

fn etag(rev: i64) -> String {
    format!("\"{rev}\"")
}

/// The revision an ETag names (None for anything else).
fn etag_revision(tag: &str) -> Option<i64> {
    tag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

fn token(rev: i64) -> String {
    format!("{TOKEN_PREFIX}{rev}")
}

fn invalid_token() -> ApiError {
    ApiError::forbidden("the sync token is unknown or expired: sync afresh")
        .with_details(serde_json::json!({"dav": "valid-sync-token"}))
}

/// A calendar as read in one snapshot.
struct CalendarRead {
    revision: i64,
    events: Vec<Versioned<EventRecord>>,
    gone: Vec<Versioned<Gone>>,
    floor: i64,
}

impl Store {
    /// The caller's calendars.
    pub async fn dav_calendars(&self, caller: Uuid) -> ApiResult<Vec<CalendarInfo>> {
        let me = self.me(caller).await?;
        let mut out = Vec::new();
        let mine = self
            .snapshot(
                &[],
                [
                    Read::key(&keys::agenda_version(caller)),
                    Read::key(&keys::dav_floor(caller)),
                ],
            )
            .await?
            .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
        out.push(CalendarInfo {
            id: "personal".into(),
            name: me.name_shown().to_string(),
            token: token(mine.mod_revision(0).max(mine.mod_revision(1)).max(1)),
            writable: true,
        });
        for g in self.list_groups(caller).await? {
            let snap = self
                .snapshot(
                    &[],
                    [
                        Read::prefix(&keys::group_events(g.id)),
                        Read::prefix(&keys::dav_gones(g.id)),
                        // Pruning tombstones must not take the tag back.
                        Read::key(&keys::dav_floor(g.id)),
                    ],
                )
                .await?
                .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
            let newest = snap
                .ids(0)
                .into_iter()
                .map(|(_, rev)| rev)
                .chain(snap.values::<Gone>(1)?.iter().map(|v| v.mod_revision))
                .chain([snap.mod_revision(2)])
                .max()
                .unwrap_or(1);
            out.push(CalendarInfo {
                id: g.id.to_string(),
                name: g.name,
                token: token(newest),
                writable: false,
            });
        }
        Ok(out)
    }

    /// The events of a calendar changed after revision `since` (0: all)
    /// and its tombstones, in one snapshot; tombstones older than
    /// `history` are dropped on the way.
    async fn read_calendar(
        &self,
        caller: Uuid,
        cal: Calendar,
        since: i64,
        history: std::time::Duration,
    ) -> ApiResult<CalendarRead> {
        let owner = cal.owner(caller);
        let index = match cal {
            Calendar::Personal => keys::agenda(caller),
            Calendar::Group(g) => {
                self.membership(caller, g).await?;
                keys::group_events(g)
            }
        };
        let snap = self
            .snapshot(
                &[],
                [
                    // A client that synced reads only what changed since.
                    Read::prefix(&index).changed_after(since),
                    Read::prefix(&keys::dav_gones(owner)),
                    Read::key(&keys::dav_floor(owner)),
                ],
            )
            .await?
            .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
        let events = match cal {
            Calendar::Personal => snap
                .values::<EventRecord>(0)?
                .into_iter()
                .filter(|v| v.value.group_id.is_none())
                .collect(),
            Calendar::Group(_) => {
                let ids = snap.ids(0);
                let reads = ids
                    .iter()
                    .map(|(id, _)| Read::key(&keys::event(*id)).at(snap.revision));
                let got = self
                    .snapshot(&[], reads)
                    .await?
                    .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
                (0..ids.len())
                    .filter_map(|i| got.value::<EventRecord>(i).transpose())
                    .collect::<ApiResult<Vec<_>>>()?
            }
        };
        let mut gone = snap.values::<Gone>(1)?;
        let mut floor: i64 = snap.value::<i64>(2)?.map_or(0, |v| v.value);
        let cutoff = Utc::now() - chrono::Duration::from_std(history).unwrap_or_default();
        let (old, kept): (Vec<_>, Vec<_>) = gone.drain(..).partition(|g| g.value.at < cutoff);
        if !old.is_empty() {
            let top = old.iter().map(|g| g.mod_revision).max().unwrap_or(0);
            let mut batch = Batch::default();
            batch.unchanged(&keys::dav_floor(owner), snap.mod_revision(2));
            for g in &old {
                let key = keys::dav_gone(owner, g.value.id);
                batch.unchanged(&key, g.mod_revision).delete(&key);
            }
            floor = floor.max(top);
            batch.put(&keys::dav_floor(owner), &floor)?;
            // Lost to a concurrent prune: the next read prunes again.
            self.commit(batch).await?;
        }
        Ok(CalendarRead {
            revision: snap.revision,
            events,
            gone: kept,
            floor,
        })
    }

    /// What a client's sync of a calendar gets: everything (no token) or
    /// what changed since `since`.
    pub async fn dav_sync(
        &self,
        caller: Uuid,
        cal: Calendar,
        since: Option<&str>,
        data: bool,
        history: std::time::Duration,
    ) -> ApiResult<SyncReply> {
        let since = match since.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(t) => Some(
                t.strip_prefix(TOKEN_PREFIX)
                    .and_then(|r| r.parse::<i64>().ok())
                    .ok_or_else(invalid_token)?,
            ),
        };
        let read = self
            .read_calendar(caller, cal, since.unwrap_or(0).max(0), history)
            .await?;
        if let Some(s) = since {
            if s < read.floor || s > read.revision {
                return Err(invalid_token());
            }
        }
        let since_rev = since.unwrap_or(0);
        let owner = cal.owner(caller);
        let present: HashSet<Uuid> = read.events.iter().map(|v| v.value.id).collect();
        let changed: Vec<&Versioned<EventRecord>> = read
            .events
            .iter()
            .filter(|v| v.mod_revision > since_rev)
            .collect();
        let removed = if since.is_some() {
            read.gone
                .iter()
                .filter(|g| g.mod_revision > since_rev)
                .filter(|g| !present.contains(&g.value.id))
                .map(|g| g.value.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let changed = self.resources(caller, owner, &changed, data).await?;
        Ok(SyncReply {
            token: token(read.revision),
            changed,
            removed,
        })
    }

    /// The events of a calendar with an occurrence in `[from, to)`.
    pub async fn dav_query(
        &self,
        caller: Uuid,
        cal: Calendar,
        from: Option<&str>,
        to: Option<&str>,
        history: std::time::Duration,
    ) -> ApiResult<Vec<Resource>> {
        let from = from.map(|f| validate::instant("from", f)).transpose()?;
        let to = to.map(|t| validate::instant("to", t)).transpose()?;
        let read = self.read_calendar(caller, cal, 0, history).await?;
        // Open ends (RFC 4791 9.9) read as far as any event can be.
        let (first, last) = (
            DateTime::<Utc>::from_timestamp(-2_208_988_800, 0).unwrap_or_default(), // 1900
            DateTime::<Utc>::from_timestamp(7_258_118_400, 0).unwrap_or_default(),  // 2200
        );
        let lo = from.unwrap_or(first).clamp(first, last);
        let hi = to.unwrap_or(last).clamp(first, last);
        let hits: Vec<&Versioned<EventRecord>> = read
            .events
            .iter()
            .filter(|v| (from.is_none() && to.is_none()) || ical::overlaps(&v.value, lo, hi))
            .collect();
        self.resources(caller, cal.owner(caller), &hits, true).await
    }

    /// Events of a calendar by resource name (those missing are left out).
    pub async fn dav_get(
        &self,
        caller: Uuid,
        cal: Calendar,
        names: &[String],
    ) -> ApiResult<Vec<Resource>> {
        if names.len() > MAX_MULTIGET {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_MULTIGET} hrefs in one calendar-multiget"
            )));
        }
        if let Calendar::Group(g) = cal {
            self.membership(caller, g).await?;
        }
        let mut asked = HashSet::new();
        let mut lookups = Vec::new();
        for n in names {
            if asked.insert(n.as_str()) {
                lookups.push(self.lookup(caller, cal, n));
            }
        }
        let found: Vec<Option<Versioned<EventRecord>>> = futures::stream::iter(lookups)
            .buffered(LOOKUPS_AT_ONCE)
            .try_collect()
            .await?;
        let refs: Vec<&Versioned<EventRecord>> = found.iter().flatten().collect();
        self.resources(caller, cal.owner(caller), &refs, true).await
    }

    /// The resources of `events` in the calendar of `owner`.
    async fn resources(
        &self,
        caller: Uuid,
        owner: Uuid,
        events: &[&Versioned<EventRecord>],
        data: bool,
    ) -> ApiResult<Vec<Resource>> {
        let people = if data {
            self.people_for(caller).await?
        } else {
            Default::default()
        };
        let owned: Vec<Versioned<EventRecord>> = events
            .iter()
            .map(|v| Versioned {
                value: v.value.clone(),
                mod_revision: v.mod_revision,
            })
            .collect();
        let weight = crate::cpu::weight(owned.iter().map(|v| &v.value)).max(owned.len());
        // Rendering is the costly part of a big sync: off the async
        // workers, within the caller's share (`cpu`).
        crate::cpu::run_sized(caller, if data { weight } else { 0 }, move || {
            owned
                .iter()
                .map(|v| Resource {
                    name: resource_name(&v.value, owner),
                    etag: etag(v.mod_revision),
                    ics: data.then(|| {
                        let shown = if rules::may_see_event(&v.value, caller)
                            || v.value.visibility != crate::model::Visibility::Private
                        {
                            Shown::Details
                        } else {
                            Shown::Busy {
                                label: "Busy".into(),
                            }
                        };
                        ical::resource(
                            &Entry {
                                ev: &v.value,
                                shown,
                                alarms_for: Some(caller),
                            },
                            &people,
                        )
                    }),
                })
                .collect()
        })
        .await
    }

    /// The event a resource name names in a calendar (the caller's
    /// membership of a group calendar is checked by the caller): `{id}.ics` of an
    /// event in it, or the name the caller's client created it under.
    async fn lookup(
        &self,
        caller: Uuid,
        cal: Calendar,
        name: &str,
    ) -> ApiResult<Option<Versioned<EventRecord>>> {
        let in_calendar = |ev: &EventRecord| match cal {
            Calendar::Personal => ev.group_id.is_none() && rules::takes_part(ev, caller),
            Calendar::Group(g) => ev.group_id == Some(g),
        };
        if let Some(id) = name
            .strip_suffix(".ics")
            .and_then(|n| Uuid::parse_str(n).ok())
        {
            if let Some(v) = self.get::<EventRecord>(&keys::event(id)).await? {
                if in_calendar(&v.value) {
                    return Ok(Some(v));
                }
            }
        }
        let id = Idempotent::id_for(caller, &dav_key(cal, name));
        Ok(self
            .get::<EventRecord>(&keys::event(id))
            .await?
            .filter(|v| in_calendar(&v.value) && resource_name(&v.value, caller) == name))
    }

    /// A client's PUT: creates the event, or replaces it through the same
    /// change as `PATCH` (organizer only; an attendee's client may change
    /// only their own answer).
    pub async fn dav_put(
        &self,
        caller: Uuid,
        cal: Calendar,
        name: &str,
        text: &str,
        if_match: Option<&str>,
        if_none_match: bool,
    ) -> ApiResult<Written> {
        check_name(name)?;
        if let Calendar::Group(g) = cal {
            self.membership(caller, g).await?;
            return Err(ApiError::forbidden(
                "group calendars are read-only over CalDAV: create group events in the app or the API",
            ));
        }
        let me = self.me(caller).await?;
        let mut parsed = ical::parse(text, &me.time_zone)?;
        if parsed.len() != 1 {
            return Err(ApiError::bad_request(
                "a calendar resource holds exactly one event (one UID)",
            ));
        }
        let p = parsed
            .remove(0)
            .map_err(|s| ApiError::invalid_field("calendar-data", s.reason))?;
        let exact = !p.lossy;
        let existing = self.lookup(caller, cal, name).await?;
        let cond = Condition::of(if_match)?;
        let written = match existing {
            None => {
                if cond != Condition::None {
                    return Err(ApiError::precondition_failed("no such resource to match"));
                }
                let key = dav_key(cal, name);
                let (req, origin) = self
                    .request_of(caller, p, Some(name.to_string()), true)
                    .await?;
                let (ev, _) = self
                    .create_event_from(caller, req, false, Some(&key), Some(&origin))
                    .await?;
                (ev, true, exact)
            }
            Some(_) if if_none_match => {
                return Err(ApiError::precondition_failed(
                    "the resource exists (If-None-Match: *)",
                ))
            }
            Some(cur) if cur.value.organizer_id != caller => {
                let ev = self
                    .dav_answer(caller, &me, cur, &p, cond.revision())
                    .await?;
                // Only the answer was taken from what the client sent.
                (ev, false, false)
            }
            Some(cur) => {
                let dav_name = cur.value.ical.as_ref().and_then(|o| o.dav_name.clone());
                let (req, origin) = self.request_of(caller, p, dav_name, true).await?;
                let update = UpdateEventRequest {
                    title: Some(req.title),
                    start: Some(req.start),
                    end: Some(req.end),
                    time_zone: Some(req.time_zone),
                    description: Some(req.description.unwrap_or_default()),
                    location: Some(req.location.unwrap_or_default()),
                    rrule: Some(req.rrule.unwrap_or_default()),
                    exdates: Some(req.exdates.unwrap_or_default()),
                    visibility: Some(req.visibility.unwrap_or_else(|| "default".into())),
                    all_day: Some(req.all_day.unwrap_or(false)),
                    attendees: Some(req.attendees.unwrap_or_default()),
                };
                let (ev, _) = self
                    .update_event_from(
                        caller,
                        cur.value.id,
                        update,
                        false,
                        cond.revision(),
                        Some(&origin),
                    )
                    .await?;
                (ev, false, exact)
            }
        };
        let (ev, created, exact) = written;
        let etag = match exact {
            true => self.etag_of(&ev).await?,
            false => None,
        };
        Ok(Written { etag, created })
    }

    /// The ETag of `ev` as just written: None when it has changed again
    /// since (the client then reads it back rather than take a newer
    /// version's ETag for what it sent).
    async fn etag_of(&self, ev: &EventRecord) -> ApiResult<Option<String>> {
        Ok(self
            .get::<EventRecord>(&keys::event(ev.id))
            .await?
            .filter(|v| v.value == *ev)
            .map(|v| etag(v.mod_revision)))
    }

    /// An attendee's client wrote the event back: what it may change is
    /// their own answer (PARTSTAT), recorded as an RSVP.
    async fn dav_answer(
        &self,
        caller: Uuid,
        me: &crate::model::UserRecord,
        cur: Versioned<EventRecord>,
        p: &ical::Parsed,
        expect: Option<i64>,
    ) -> ApiResult<EventRecord> {
        let mine = p
            .attendees
            .iter()
            .find(|a| ical::is_address_of(&a.email, &me.username, &me.email))
            .map(|a| a.status);
        let Some(status) = mine.filter(|s| {
            matches!(
                s,
                crate::model::AttendeeStatus::Accepted
                    | crate::model::AttendeeStatus::Declined
                    | crate::model::AttendeeStatus::Tentative
            )
        }) else {
            return Err(ApiError::forbidden(
                "only the organizer changes this event; an attendee may only answer it",
            ));
        };
        let (ev, _) = self
            .rsvp_at(caller, cur.value.id, status, false, expect)
            .await?;
        Ok(ev)
    }

    /// A client's DELETE: the organizer cancels the event; an attendee
    /// declines it (it leaves their calendar only when the organizer
    /// takes them off).
    pub async fn dav_delete(
        &self,
        caller: Uuid,
        cal: Calendar,
        name: &str,
        if_match: Option<&str>,
    ) -> ApiResult<()> {
        if let Calendar::Group(g) = cal {
            self.membership(caller, g).await?;
            return Err(ApiError::forbidden(
                "group calendars are read-only over CalDAV: change group events in the app or the API",
            ));
        }
        let cond = Condition::of(if_match)?;
        let cur = self
            .lookup(caller, cal, name)
            .await?
            .ok_or_else(|| ApiError::not_found("resource"))?;
        if cur.value.organizer_id == caller {
            self.delete_event_at(caller, cur.value.id, cond.revision())
                .await
        } else {
            self.rsvp_at(
                caller,
                cur.value.id,
                crate::model::AttendeeStatus::Declined,
                false,
                cond.revision(),
            )
            .await
            .map(|_| ())
        }
    }
}

/// An `If-Match` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// None sent.
    None,
    /// `*`: the resource exists.
    Exists,
    /// This ETag.
    At(i64),
}

impl Condition {
    fn of(if_match: Option<&str>) -> ApiResult<Condition> {
        match if_match.map(str::trim) {
            None => Ok(Condition::None),
            Some("*") => Ok(Condition::Exists),
            Some(tag) => etag_revision(tag).map(Condition::At).ok_or_else(|| {
                ApiError::precondition_failed("If-Match names no version of this resource")
            }),
        }
    }

    fn revision(self) -> Option<i64> {
        match self {
            Condition::At(r) => Some(r),
            _ => None,
        }
    }
}

impl Store {
    /// Drops every calendar's tombstones older than `history` (those of
    /// calendars no client reads are never dropped on a read) and raises
    /// each one's floor past them. Pages through them; each calendar's
    /// in one transaction compared on what was read, so replicas may run
    /// it at once. Answers how many went.
    pub async fn prune_tombstones(&self, history: std::time::Duration) -> ApiResult<usize> {
        let cutoff = Utc::now() - chrono::Duration::from_std(history).unwrap_or_default();
        let end = format!("{}\u{10ffff}", keys::DAV_GONE);
        let mut from = keys::DAV_GONE.to_string();
        let mut pruned = 0;
        loop {
            let page = self
                .snapshot(&[], [Read::span(&from, &end).limit(PRUNE_PAGE)])
                .await?
                .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
            let entries = page.entries::<Gone>(0)?;
            let Some((last, _)) = entries.last() else {
                return Ok(pruned);
            };
            from = format!("{last}\u{0}");
            let mut by_calendar: std::collections::BTreeMap<Uuid, Vec<Versioned<Gone>>> =
                Default::default();
            for (key, g) in entries.iter().filter(|(_, g)| g.value.at < cutoff) {
                if let Some(calendar) = keys::dav_gone_calendar(key) {
                    by_calendar.entry(calendar).or_default().push(Versioned {
                        value: g.value.clone(),
                        mod_revision: g.mod_revision,
                    });
                }
            }
            for (calendar, old) in by_calendar {
                let floor_key = keys::dav_floor(calendar);
                let floor = self.get::<i64>(&floor_key).await?;
                let top = old.iter().map(|g| g.mod_revision).max().unwrap_or(0);
                let mut batch = Batch::default();
                batch.unchanged(&floor_key, floor.as_ref().map_or(0, |f| f.mod_revision));
                for g in &old {
                    let key = keys::dav_gone(calendar, g.value.id);
                    batch.unchanged(&key, g.mod_revision).delete(&key);
                }
                batch.put(&floor_key, &floor.map_or(0, |f| f.value).max(top))?;
                // Lost to another replica's round or a read's prune: done
                // there, or next round.
                if self.commit(batch).await? {
                    pruned += old.len();
                }
            }
            if entries.len() < PRUNE_PAGE as usize {
                return Ok(pruned);
            }
        }
    }
}

/// Tombstones read at once by [`Store::prune_tombstones`].
const PRUNE_PAGE: i64 = 1000;

/// The idempotency key a client's creation of `name` uses, so the name
/// finds the event again and a repeated PUT creates it once.
fn dav_key(cal: Calendar, name: &str) -> String {
    match cal {
        Calendar::Personal => format!("dav:personal/{name}"),
        Calendar::Group(g) => format!("dav:{g}/{name}"),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 200 || name.contains('/') || name.starts_with('.') {
        return Err(ApiError::bad_request(
            "a resource name is 1 to 200 characters, without '/'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IcalOrigin;

    #[test]
    fn a_client_s_name_holds_in_its_organizer_s_calendar_only() {
        let mut ev = EventRecord::sample("2030-03-04T09:00:00Z", 60, "UTC", None);
        let other = Uuid::new_v4();
        assert_eq!(
            resource_name(&ev, ev.organizer_id),
            format!("{}.ics", ev.id)
        );
        ev.ical = Some(IcalOrigin {
            uid: "u@x".into(),
            dav_name: Some("u@x.ics".into()),
            extra: Vec::new(),
        });
        assert_eq!(resource_name(&ev, ev.organizer_id), "u@x.ics");
        assert_eq!(resource_name(&ev, other), format!("{}.ics", ev.id));
    }

    #[test]
    fn etags_and_tokens_read_back() {
        assert_eq!(etag_revision(&etag(42)), Some(42));
        assert_eq!(etag_revision("W/\"7\""), Some(7));
        assert_eq!(etag_revision("\"x\""), None);
        assert_eq!(Condition::of(Some(" * ")).unwrap(), Condition::Exists);
        assert_eq!(Condition::of(Some("\"3\"")).unwrap().revision(), Some(3));
        assert_eq!(Condition::of(None).unwrap(), Condition::None);
        assert!(Condition::of(Some("nonsense")).is_err());
        assert_eq!(token(9), "urn:agenda:sync:9");
        assert_eq!(Calendar::parse("personal").unwrap(), Calendar::Personal);
        let g = Uuid::new_v4();
        assert_eq!(Calendar::parse(&g.to_string()).unwrap(), Calendar::Group(g));
        assert!(Calendar::parse("nope").is_err());
        assert!(check_name("a/b.ics").is_err() && check_name("").is_err());
        assert!(check_name("a b@c.ics").is_ok());
        assert_ne!(
            dav_key(Calendar::Personal, "x"),
            dav_key(Calendar::Group(g), "x")
        );
    }
}
