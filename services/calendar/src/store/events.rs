//! Events: one record and a copy in every participant's agenda (filed by
//! time, see [`crate::keys`]); conflicts checked against each affected
//! person's agenda under a compare on its version key.

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::json;
use uuid::Uuid;

use super::notifications;
use super::{Attempt, Batch, Read, Snapshot, Store, Versioned};
use crate::api::{CreateEventRequest, UpdateEventRequest};
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::{
    Attendee, AttendeeStatus, Conflict, Event, EventRecord, Interval, UserRecord, Visibility,
};
use crate::{cpu, recurrence, rules, validate};

/// Most attendees of a personal event.
pub const MAX_ATTENDEES: usize = 100;

/// The event fields a request sets, checked.
struct Fields {
    title: String,
    description: String,
    location: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    time_zone: String,
    rrule: Option<String>,
    exdates: Vec<DateTime<Utc>>,
    visibility: Visibility,
}

impl Fields {
    fn check(self) -> ApiResult<Fields> {
        validate::span(self.start, self.end)?;
        let tz = validate::time_zone("time_zone", &self.time_zone)?;
        let rrule = match self.rrule.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(r) => Some(recurrence::check(r, self.start, tz)?),
        };
        Ok(Fields {
            time_zone: tz.name().to_string(),
            rrule,
            ..self
        })
    }
}

fn exdates(list: Option<Vec<String>>) -> ApiResult<Vec<DateTime<Utc>>> {
    let list = list.unwrap_or_default();
    if list.len() > 500 {
        return Err(ApiError::invalid_field("exdates", "at most 500 exdates"));
    }
    list.iter()
        .map(|s| validate::instant("exdates", s))
        .collect()
}

/// Turns a create request into a new event organized by `organizer`
/// with `attendees` (the organizer is added first, accepted).
pub fn new_event(
    req: CreateEventRequest,
    organizer: &UserRecord,
    attendees: Vec<Attendee>,
    group_id: Option<Uuid>,
) -> ApiResult<EventRecord> {
    let f = Fields {
        title: validate::text("title", &req.title, 1, 200)?,
        description: validate::text(
            "description",
            req.description.as_deref().unwrap_or(""),
            0,
            2000,
        )?,
        location: validate::text("location", req.location.as_deref().unwrap_or(""), 0, 2000)?,
        start: validate::instant("start", &req.start)?,
        end: validate::instant("end", &req.end)?,
        time_zone: req.time_zone,
        rrule: req.rrule,
        exdates: exdates(req.exdates)?,
        visibility: req
            .visibility
            .as_deref()
            .map(validate::visibility)
            .transpose()?
            .unwrap_or_default(),
    }
    .check()?;
    let mut all = vec![Attendee {
        user_id: organizer.id,
        username: organizer.username.clone(),
        status: AttendeeStatus::Accepted,
    }];
    for a in attendees {
        if !all.iter().any(|x| x.user_id == a.user_id) {
            all.push(a);
        }
    }
    Ok(EventRecord {
        id: Uuid::new_v4(),
        title: f.title,
        description: f.description,
        location: f.location,
        start: f.start,
        end: f.end,
        time_zone: f.time_zone,
        rrule: f.rrule,
        exdates: f.exdates,
        organizer_id: organizer.id,
        group_id,
        visibility: f.visibility,
        attendees: all,
        created_at: Utc::now(),
        request_digest: None,
    })
}

/// Namespace of the ids derived for creations under an idempotency key.
const IDEMPOTENT_CREATES: Uuid = Uuid::from_u128(0x6a1d_9e0c_4b7f_4f4e_9a53_0e2d_8c71_b5a4);

/// A creation made safe to repeat by an idempotency key: the event id is
/// derived from the caller and the key, so every retry names the same
/// event, and the digest of the request tells a retry from a different
/// request that reuses the key.
pub(crate) struct Idempotent {
    pub id: Uuid,
    pub digest: Uuid,
}

impl Idempotent {
    /// None without a key.
    pub fn new(
        caller: Uuid,
        key: Option<&str>,
        req: &CreateEventRequest,
    ) -> ApiResult<Option<Idempotent>> {
        let Some(key) = key else {
            return Ok(None);
        };
        let body = serde_json::to_vec(req).map_err(ApiError::internal)?;
        Ok(Some(Idempotent {
            id: Uuid::new_v5(&IDEMPOTENT_CREATES, format!("{caller}/{key}").as_bytes()),
            digest: Uuid::new_v5(&IDEMPOTENT_CREATES, &body),
        }))
    }

    /// Gives `ev` the derived id and the request digest.
    pub fn stamp(&self, ev: &mut EventRecord) {
        ev.id = self.id;
        ev.request_digest = Some(self.digest);
    }
}

fn apply_update(ev: &EventRecord, req: UpdateEventRequest) -> ApiResult<(EventRecord, bool)> {
    let start = req
        .start
        .as_deref()
        .map(|s| validate::instant("start", s))
        .transpose()?
        .unwrap_or(ev.start);
    let end = req
        .end
        .as_deref()
        .map(|s| validate::instant("end", s))
        .transpose()?
        .unwrap_or(ev.end);
    let f = Fields {
        title: match &req.title {
            Some(t) => validate::text("title", t, 1, 200)?,
            None => ev.title.clone(),
        },
        description: match &req.description {
            Some(t) => validate::text("description", t, 0, 2000)?,
            None => ev.description.clone(),
        },
        location: match &req.location {
            Some(t) => validate::text("location", t, 0, 2000)?,
            None => ev.location.clone(),
        },
        start,
        end,
        time_zone: req
            .time_zone
            .clone()
            .unwrap_or_else(|| ev.time_zone.clone()),
        rrule: match &req.rrule {
            Some(r) => Some(r.clone()),
            None => ev.rrule.clone(),
        },
        exdates: match req.exdates {
            Some(list) => exdates(Some(list))?,
            None => ev.exdates.clone(),
        },
        visibility: match &req.visibility {
            Some(v) => validate::visibility(v)?,
            None => ev.visibility,
        },
    }
    .check()?;
    let mut out = ev.clone();
    out.title = f.title;
    out.description = f.description;
    out.location = f.location;
    out.start = f.start;
    out.end = f.end;
    out.time_zone = f.time_zone;
    out.rrule = f.rrule;
    out.exdates = f.exdates;
    out.visibility = f.visibility;
    let moved = out.start != ev.start
        || out.end != ev.end
        || out.rrule != ev.rrule
        || out.exdates != ev.exdates
        || out.time_zone != ev.time_zone;
    Ok((out, moved))
}

/// The public shape of `ev` for `viewer`; `occurrence` for one expanded
/// instance of a recurring event.
pub fn view(ev: &EventRecord, viewer: Uuid, occurrence: Option<Interval>) -> Event {
    let tz: Option<chrono_tz::Tz> = ev.time_zone.parse().ok();
    let local = |t: DateTime<Utc>| -> DateTime<FixedOffset> {
        match tz {
            Some(tz) => t.with_timezone(&tz).fixed_offset(),
            None => t.fixed_offset(),
        }
    };
    let (start, end) = occurrence.map_or((ev.start, ev.end), |o| (o.start, o.end));
    Event {
        id: ev.id,
        title: ev.title.clone(),
        description: ev.description.clone(),
        location: ev.location.clone(),
        start: local(start),
        end: local(end),
        time_zone: ev.time_zone.clone(),
        rrule: ev.rrule.clone(),
        exdates: ev.exdates.iter().map(|t| local(*t)).collect(),
        organizer_id: ev.organizer_id,
        group_id: ev.group_id,
        visibility: ev.visibility,
        attendees: ev.attendees.clone(),
        my_status: ev.status_of(viewer),
        recurring_event_id: occurrence.filter(|_| ev.rrule.is_some()).map(|_| ev.id),
    }
}

/// `{event, conflicts}` reply.
pub fn with_conflicts(
    ev: &EventRecord,
    viewer: Uuid,
    conflicts: Vec<Conflict>,
) -> serde_json::Value {
    json!({ "event": view(ev, viewer, None), "conflicts": conflicts })
}

fn conflict_error(conflicts: Vec<Conflict>) -> ApiError {
    ApiError::conflict(format!(
        "the event overlaps {} existing event occurrence(s)",
        conflicts.len()
    ))
    .with_details(json!({ "conflicts": conflicts }))
}

fn summary(ev: &EventRecord) -> serde_json::Value {
    json!({"event_id": ev.id, "title": ev.title, "start": ev.start, "end": ev.end, "organizer_id": ev.organizer_id})
}

/// The txn that removes `cur` (record and every copy) if it did not change
/// meanwhile, telling every attendee but `by` it is cancelled.
fn cancellation(cur: &Versioned<EventRecord>, by: Uuid) -> ApiResult<Batch> {
    let ev = &cur.value;
    let mut batch = Batch::default();
    batch
        .unchanged(&keys::event(ev.id), cur.mod_revision)
        .delete(&keys::event(ev.id));
    for p in ev.participants() {
        batch
            .delete(&keys::agenda_event(p, ev))
            .bump(&keys::agenda_version(p));
    }
    for p in ev.attendee_ids().filter(|p| *p != by) {
        notifications::add(&mut batch, p, "event_cancelled", summary(ev))?;
    }
    Ok(batch)
}

/// A time window `[from, to)`.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

/// The two reads of `user`'s agenda for `window`, as of `revision`: the
/// one-off events that may overlap it and the recurring or long ones.
pub(crate) fn window_reads(user: Uuid, (from, to): Window, revision: i64) -> [Read; 2] {
    let (start, end) = keys::agenda_span(user, from, to);
    [
        Read::span(&start, &end).at(revision),
        Read::prefix(&keys::agenda_long(user)).at(revision),
    ]
}

/// The events of the [`window_reads`] at `i` and `i + 1` of `snap`.
pub(crate) fn window_events(snap: &Snapshot, i: usize) -> ApiResult<Vec<EventRecord>> {
    let mut out = snap.values::<EventRecord>(i)?;
    out.extend(snap.values::<EventRecord>(i + 1)?);
    Ok(out.into_iter().map(|v| v.value).collect())
}

/// The span in which `ev` can conflict with anything (None: no
/// occurrence), worked out within `viewer`'s CPU budget ([`cpu::run_sized`]).
async fn conflict_window(ev: &EventRecord, viewer: Uuid) -> ApiResult<Option<Window>> {
    let ev = ev.clone();
    cpu::run_sized(viewer, cpu::weight([&ev]), move || {
        let mine = recurrence::upcoming(&ev);
        Some((mine.first()?.start, mine.last()?.end))
    })
    .await
}

/// The conflicts of `ev` for each person of `check` (in `agendas`, same
/// order) who keeps it as busy time, as `viewer` may see them; worked out
/// within `viewer`'s CPU budget ([`cpu::run_sized`]).
async fn conflicts_in(
    ev: &EventRecord,
    check: &[Uuid],
    viewer: Uuid,
    agendas: Vec<Vec<EventRecord>>,
) -> ApiResult<Vec<Conflict>> {
    let (ev, check) = (ev.clone(), check.to_vec());
    let weight = cpu::weight(agendas.iter().flatten()) * cpu::weight([&ev]);
    cpu::run_sized(viewer, weight, move || {
        let mut out = Vec::new();
        for (user, agenda) in check.iter().zip(&agendas) {
            if rules::is_busy_for(&ev, *user) {
                out.extend(rules::conflicts(&ev, *user, agenda, viewer));
            }
            // Enough to decide and to show; the rest would only cost.
            if out.len() >= rules::MAX_CONFLICTS {
                out.truncate(rules::MAX_CONFLICTS);
                break;
            }
        }
        out
    })
    .await
}

/// One attempt at writing `ev` (all copies), with the conflicts of
/// `check` (people whose agendas must not change meanwhile) and extra
/// `guards` (key, mod_revision).
pub(crate) struct Write<'a> {
    pub ev: &'a EventRecord,
    /// Who asked: the conflicts are reported as they may see them.
    pub viewer: Uuid,
    pub check: Vec<Uuid>,
    pub reject: bool,
    pub guards: Vec<(String, i64)>,
    pub notify: Vec<(Uuid, &'static str)>,
    /// The record as read before the change (None: a new event), which
    /// must not have changed meanwhile.
    pub previous: Option<&'a Versioned<EventRecord>>,
}

impl Store {
    /// The events of `user`'s agenda that may overlap `[from, to)` (a few
    /// more, never fewer: callers expand occurrences in the window).
    pub async fn agenda_window(&self, user: Uuid, window: Window) -> ApiResult<Vec<EventRecord>> {
        let snap = self.snapshot(&[], window_reads(user, window, 0)).await?;
        // Without guards a snapshot always reads.
        snap.map_or(Ok(Vec::new()), |s| window_events(&s, 0))
    }

    /// For each of `users`: the revision of their agenda version and the
    /// events of their agenda where `ev` may conflict, in one snapshot as
    /// of `revision` (0: now).
    async fn agendas_for(
        &self,
        ev: &EventRecord,
        users: &[Uuid],
        viewer: Uuid,
        revision: i64,
    ) -> ApiResult<(Vec<i64>, Vec<Vec<EventRecord>>)> {
        let window = conflict_window(ev, viewer).await?;
        let reads: Vec<Read> = users
            .iter()
            .flat_map(|u| {
                let version = Read::key(&keys::agenda_version(*u)).at(revision);
                let agenda = window.map(|w| window_reads(*u, w, revision));
                std::iter::once(version).chain(agenda.into_iter().flatten())
            })
            .collect();
        let Some(snap) = self.snapshot(&[], reads).await? else {
            return Ok((vec![0; users.len()], vec![Vec::new(); users.len()]));
        };
        let per_user = if window.is_some() { 3 } else { 1 };
        let mut versions = Vec::with_capacity(users.len());
        let mut agendas = Vec::with_capacity(users.len());
        for i in 0..users.len() {
            versions.push(snap.mod_revision(i * per_user));
            agendas.push(if window.is_some() {
                window_events(&snap, i * per_user + 1)?
            } else {
                Vec::new()
            });
        }
        Ok((versions, agendas))
    }

    /// One attempt at writing `ev`. Two ways, both equal to one central
    /// server running the requests one after the other:
    /// - `reject`: decide on the agendas read at versions v, commit only
    ///   if no version moved (else decide again). No double booking.
    /// - otherwise the write cannot fail on a conflict, so it commits
    ///   without those compares (no lost races under contention) and the
    ///   conflicts are read at exactly the commit's revision: everything
    ///   serialized before this write, nothing after.
    pub(crate) async fn write_event(&self, w: Write<'_>) -> ApiResult<Attempt<Vec<Conflict>>> {
        let mut batch = Batch::default();
        let mut conflicts = Vec::new();
        if w.reject {
            // Versions and agendas of one snapshot: a change committed
            // since moves a version, so the compare below fails.
            let (versions, agendas) = self.agendas_for(w.ev, &w.check, w.viewer, 0).await?;
            conflicts = conflicts_in(w.ev, &w.check, w.viewer, agendas).await?;
            if !conflicts.is_empty() {
                return Err(conflict_error(conflicts));
            }
            for (user, rev) in w.check.iter().zip(&versions) {
                batch.unchanged(&keys::agenda_version(*user), *rev);
            }
        }
        for (key, rev) in &w.guards {
            batch.unchanged(key, *rev);
        }
        batch
            .unchanged(
                &keys::event(w.ev.id),
                w.previous.map_or(0, |p| p.mod_revision),
            )
            .put(&keys::event(w.ev.id), w.ev)?;
        let copies: Vec<String> =
            w.ev.participants()
                .map(|p| keys::agenda_event(p, w.ev))
                .collect();
        if let Some(prev) = w.previous {
            // Copies filed elsewhere before (the event moved) go.
            for p in prev.value.participants() {
                let old = keys::agenda_event(p, &prev.value);
                if !copies.contains(&old) {
                    batch.delete(&old);
                }
                if w.ev.status_of(p).is_none() {
                    batch.bump(&keys::agenda_version(p));
                }
            }
        }
        for (p, key) in w.ev.participants().zip(&copies) {
            batch.put(key, w.ev)?.bump(&keys::agenda_version(p));
        }
        for (user, kind) in &w.notify {
            notifications::add(&mut batch, *user, kind, summary(w.ev))?;
        }
        let Some(revision) = self.commit_at(batch).await? else {
            return Ok(Attempt::Retry);
        };
        if !w.reject && !w.check.is_empty() {
            let (_, agendas) = self.agendas_for(w.ev, &w.check, w.viewer, revision).await?;
            conflicts = conflicts_in(w.ev, &w.check, w.viewer, agendas).await?;
        }
        Ok(Attempt::Done(conflicts))
    }

    /// Creates a personal event; attendees are usernames. With an
    /// idempotency `key`, repeating the request creates it once.
    pub async fn create_event(
        &self,
        caller: Uuid,
        req: CreateEventRequest,
        reject: bool,
        key: Option<&str>,
    ) -> ApiResult<(EventRecord, Vec<Conflict>)> {
        if req.group_id.is_some() {
            return Err(ApiError::bad_request(
                "group events are created by the groups service",
            ));
        }
        let names = req.attendees.clone().unwrap_or_default();
        if names.len() > MAX_ATTENDEES {
            return Err(ApiError::invalid_field(
                "attendees",
                "at most 100 attendees",
            ));
        }
        let idempotent = Idempotent::new(caller, key, &req)?;
        // No read for an earlier request under the key up front (the
        // common case has none): the write refuses to overwrite the event
        // record, so a repeat loses that race or a conflict check, and
        // only then looks for the earlier request's event. The accounts
        // are read without a ReadIndex round at first and guarded by
        // compares; after a lost race everything is read confirmed.
        self.optimistic_unconfirmed_first("these agendas", |confirmed| {
            let (req, names, idempotent) = (req.clone(), &names, idempotent.as_ref());
            async move {
                if confirmed {
                    if let Some(done) = self.replay(caller, idempotent).await? {
                        return Ok(Attempt::Done(done));
                    }
                }
                let (organizer, people) =
                    self.people(caller, names, "attendees", confirmed).await?;
                let mut guards = vec![(keys::user(caller), organizer.mod_revision)];
                guards.extend(
                    people
                        .iter()
                        .map(|p| (keys::user(p.value.id), p.mod_revision)),
                );
                let shared = self.shares_a_group(caller, &people).await?;
                let attendees = people
                    .into_iter()
                    .zip(shared)
                    .map(|(p, shared)| Attendee {
                        user_id: p.value.id,
                        username: p.value.username,
                        status: rules::attendee_status(p.value.add_me, shared),
                    })
                    .collect();
                let organizer = organizer.value;
                let mut ev = cpu::run_sized(caller, cpu::rule_weight(&req.rrule), move || {
                    new_event(req, &organizer, attendees, None)
                })
                .await??;
                if let Some(i) = idempotent {
                    i.stamp(&mut ev);
                }
                let everyone: Vec<Uuid> = ev.participants().collect();
                // Invited or added, every attendee is asked to answer.
                let notify = ev
                    .attendees
                    .iter()
                    .filter(|a| a.user_id != caller)
                    .map(|a| (a.user_id, "event_invited"))
                    .collect();
                let w = Write {
                    ev: &ev,
                    viewer: caller,
                    check: everyone,
                    reject,
                    guards,
                    notify,
                    previous: None,
                };
                self.write_new(caller, idempotent, w).await
            }
        })
        .await
    }

    /// For each of `people`: whether they share a group with `caller`
    /// (read only for those whose setting depends on it).
    async fn shares_a_group(
        &self,
        caller: Uuid,
        people: &[Versioned<UserRecord>],
    ) -> ApiResult<Vec<bool>> {
        use crate::model::AddMe;
        if !people.iter().any(|p| p.value.add_me == AddMe::SharedGroup) {
            return Ok(vec![false; people.len()]);
        }
        let groups_of = |user: Uuid| async move {
            let ids = self.indexed_ids(&keys::user_groups(user)).await?;
            Ok::<_, ApiError>(ids.into_iter().collect::<std::collections::HashSet<Uuid>>())
        };
        let mine = groups_of(caller).await?;
        futures::future::try_join_all(people.iter().map(|p| async {
            if p.value.add_me != AddMe::SharedGroup || mine.is_empty() {
                return Ok(false);
            }
            Ok(!groups_of(p.value.id).await?.is_disjoint(&mine))
        }))
        .await
    }

    /// Writes a new event. A creation refused for conflicts
    /// (`on_conflict=reject`) may have raced a repeat of itself that
    /// committed first: it then answers as that one did.
    pub(crate) async fn write_new(
        &self,
        caller: Uuid,
        idempotent: Option<&Idempotent>,
        w: Write<'_>,
    ) -> ApiResult<Attempt<(EventRecord, Vec<Conflict>)>> {
        let ev = w.ev;
        match self.write_event(w).await {
            Err(e) if e.status == 409 && idempotent.is_some() => {
                match self.replay(caller, idempotent).await? {
                    Some(done) => Ok(Attempt::Done(done)),
                    None => Err(e),
                }
            }
            other => Ok(other?.map(|c| (ev.clone(), c))),
        }
    }

    /// The event an earlier request under the same idempotency key
    /// created, with its conflicts as of now; None when there is none (or
    /// no key). A different request reusing the key is a conflict.
    pub(crate) async fn replay(
        &self,
        caller: Uuid,
        idempotent: Option<&Idempotent>,
    ) -> ApiResult<Option<(EventRecord, Vec<Conflict>)>> {
        let Some(i) = idempotent else {
            return Ok(None);
        };
        let Some(cur) = self.get::<EventRecord>(&keys::event(i.id)).await? else {
            return Ok(None);
        };
        if cur.value.organizer_id != caller || cur.value.request_digest != Some(i.digest) {
            return Err(ApiError::conflict(
                "this Idempotency-Key was already used for a different request",
            ));
        }
        let check: Vec<Uuid> = cur.value.participants().collect();
        let conflicts = self.conflicts_now(&cur.value, check, caller).await?;
        Ok(Some((cur.value, conflicts)))
    }

    /// The conflicts `ev` has now for each person of `check`, as `viewer`
    /// may see them.
    async fn conflicts_now(
        &self,
        ev: &EventRecord,
        check: Vec<Uuid>,
        viewer: Uuid,
    ) -> ApiResult<Vec<Conflict>> {
        let (_, agendas) = self.agendas_for(ev, &check, viewer, 0).await?;
        conflicts_in(ev, &check, viewer, agendas).await
    }

    /// An event the caller takes part in (404 for anyone else, so ids
    /// cannot be probed).
    pub async fn event(&self, caller: Uuid, id: Uuid) -> ApiResult<Versioned<EventRecord>> {
        self.get::<EventRecord>(&keys::event(id))
            .await?
            .filter(|ev| ev.value.status_of(caller).is_some())
            .ok_or_else(|| ApiError::not_found("event"))
    }

    /// An event the caller takes part in, for a change whose write
    /// compares the record's revision: at first as the leader's replica
    /// stands (no ReadIndex round; a stale read only loses the compare),
    /// `confirmed` after a lost race. A 404 is always confirmed.
    async fn event_to_change(
        &self,
        caller: Uuid,
        id: Uuid,
        confirmed: bool,
    ) -> ApiResult<Versioned<EventRecord>> {
        if !confirmed {
            let cur = self
                .get_unconfirmed::<EventRecord>(&keys::event(id))
                .await?
                .filter(|ev| ev.value.status_of(caller).is_some());
            if let Some(cur) = cur {
                return Ok(cur);
            }
        }
        self.event(caller, id).await
    }

    /// Changes an event (organizer only); moving it reports conflicts.
    pub async fn update_event(
        &self,
        caller: Uuid,
        id: Uuid,
        req: UpdateEventRequest,
        reject: bool,
    ) -> ApiResult<(EventRecord, Vec<Conflict>)> {
        self.optimistic_unconfirmed_first("this event", |confirmed| {
            let req = req.clone();
            async move {
                let cur = self.event_to_change(caller, id, confirmed).await?;
                if cur.value.organizer_id != caller {
                    return Err(ApiError::forbidden(
                        "only the organizer may change this event",
                    ));
                }
                let record = cur.value.clone();
                let (ev, moved) = cpu::run_sized(caller, cpu::rule_weight(&req.rrule), move || {
                    apply_update(&record, req)
                })
                .await??;
                let check = if moved {
                    ev.participants().collect()
                } else {
                    Vec::new()
                };
                let notify = ev
                    .attendee_ids()
                    .filter(|u| *u != caller)
                    .map(|u| (u, "event_updated"))
                    .collect();
                Ok(self
                    .write_event(Write {
                        ev: &ev,
                        viewer: caller,
                        check,
                        reject,
                        guards: Vec::new(),
                        notify,
                        previous: Some(&cur),
                    })
                    .await?
                    .map(|c| (ev, c)))
            }
        })
        .await
    }

    /// Deletes an event from every agenda (organizer only).
    pub async fn delete_event(&self, caller: Uuid, id: Uuid) -> ApiResult<()> {
        self.optimistic_unconfirmed_first("this event", |confirmed| async move {
            let cur = self.event_to_change(caller, id, confirmed).await?;
            if cur.value.organizer_id != caller {
                return Err(ApiError::forbidden(
                    "only the organizer may delete this event; decline it instead",
                ));
            }
            self.commit_or_retry(cancellation(&cur, caller)?, ()).await
        })
        .await
    }

    /// Takes a person whose account is going away out of an event: one
    /// they organized is cancelled for everyone, one they attend goes on
    /// without them (its organizer is told).
    pub(crate) async fn leave_event(&self, user: Uuid, id: Uuid) -> ApiResult<()> {
        self.optimistic("this event", || async move {
            let cur = match self.event(user, id).await {
                Ok(cur) => cur,
                // Gone meanwhile (cancelled by its organizer): nothing to do.
                Err(e) if e.status == 404 => return Ok(Attempt::Done(())),
                Err(e) => return Err(e),
            };
            if cur.value.organizer_id == user {
                return self.commit_or_retry(cancellation(&cur, user)?, ()).await;
            }
            let mut ev = cur.value.clone();
            ev.attendees.retain(|a| a.user_id != user);
            Ok(self
                .write_event(Write {
                    ev: &ev,
                    viewer: user,
                    check: Vec::new(),
                    reject: false,
                    guards: Vec::new(),
                    notify: vec![(ev.organizer_id, "attendee_left")],
                    previous: Some(&cur),
                })
                .await?
                .map(|_| ()))
        })
        .await
    }

    /// Records the caller's answer; accepting reports conflicts. The same
    /// answer again changes nothing and tells nobody, so a repeat is safe.
    pub async fn rsvp(
        &self,
        caller: Uuid,
        id: Uuid,
        status: AttendeeStatus,
        reject: bool,
    ) -> ApiResult<(EventRecord, Vec<Conflict>)> {
        self.optimistic_unconfirmed_first("this event", |confirmed| async move {
            let cur = self.event_to_change(caller, id, confirmed).await?;
            let busy = matches!(status, AttendeeStatus::Accepted | AttendeeStatus::Tentative);
            if cur.value.status_of(caller) == Some(status) {
                // The same answer again (a retry, a second tab): nothing to
                // write and nobody to tell. Decided on confirmed reads only.
                if !confirmed {
                    return Ok(Attempt::Retry);
                }
                let check = if busy { vec![caller] } else { Vec::new() };
                let conflicts = self.conflicts_now(&cur.value, check, caller).await?;
                return Ok(Attempt::Done((cur.value, conflicts)));
            }
            let mut ev = cur.value.clone();
            for a in ev.attendees.iter_mut().filter(|a| a.user_id == caller) {
                a.status = status;
            }
            let notify = if ev.organizer_id != caller {
                vec![(ev.organizer_id, "rsvp")]
            } else {
                Vec::new()
            };
            Ok(self
                .write_event(Write {
                    ev: &ev,
                    viewer: caller,
                    check: if busy { vec![caller] } else { Vec::new() },
                    reject,
                    guards: Vec::new(),
                    notify,
                    previous: Some(&cur),
                })
                .await?
                .map(|c| (ev, c)))
        })
        .await
    }

    /// The caller's agenda in `[from, to)`, recurring events expanded.
    pub async fn list_events(
        &self,
        caller: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<Vec<Event>> {
        let agenda = self.agenda_window(caller, (from, to)).await?;
        cpu::run_sized(caller, cpu::weight(&agenda), move || {
            let mut out: Vec<Event> = agenda
                .iter()
                .flat_map(|ev| {
                    recurrence::occurrences(ev, from, to)
                        .into_iter()
                        .map(move |o| view(ev, caller, Some(o)))
                })
                .collect();
            out.sort_by_key(|e| (e.start, e.id));
            out
        })
        .await
    }

    /// Busy intervals of each named user.
    pub async fn free_busy(
        &self,
        caller: Uuid,
        names: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
        let mut out = serde_json::Map::new();
        for name in names {
            let user = self
                .user_by_name(name)
                .await?
                .ok_or_else(|| ApiError::not_found(&format!("user {name:?}")))?;
            let agenda = self.agenda_window(user.id, (from, to)).await?;
            // Rendering thousands of intervals costs too: off the workers.
            let busy = cpu::run_sized(caller, cpu::weight(&agenda), move || {
                serde_json::to_value(rules::busy(&agenda, user.id, from, to))
            })
            .await?;
            out.insert(user.username, busy.map_err(ApiError::internal)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(title: &str) -> CreateEventRequest {
        serde_json::from_value(serde_json::json!({
            "title": title, "start": "2031-01-01T09:00:00Z",
            "end": "2031-01-01T10:00:00Z", "time_zone": "UTC"
        }))
        .unwrap()
    }

    #[test]
    fn an_idempotency_key_names_one_event_per_caller() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let req = request("Standup");
        assert!(Idempotent::new(alice, None, &req).unwrap().is_none());
        let first = Idempotent::new(alice, Some("k1"), &req).unwrap().unwrap();
        let again = Idempotent::new(alice, Some("k1"), &req).unwrap().unwrap();
        assert_eq!((first.id, first.digest), (again.id, again.digest));
        let other_key = Idempotent::new(alice, Some("k2"), &req).unwrap().unwrap();
        assert_ne!(first.id, other_key.id);
        let other_caller = Idempotent::new(bob, Some("k1"), &req).unwrap().unwrap();
        assert_ne!(first.id, other_caller.id);
        let other_body = Idempotent::new(alice, Some("k1"), &request("Retro"))
            .unwrap()
            .unwrap();
        assert_eq!(first.id, other_body.id);
        assert_ne!(first.digest, other_body.digest);

        let mut ev = EventRecord::sample("2031-01-01T09:00:00Z", 60, "UTC", None);
        first.stamp(&mut ev);
        assert_eq!((ev.id, ev.request_digest), (first.id, Some(first.digest)));
    }
}
