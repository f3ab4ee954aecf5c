//! Events: one record and a copy in every participant's agenda (filed by
//! time, see [`crate::keys`]); conflicts checked against each affected
//! person's agenda under a compare on its version key. What a change
//! makes of an event is decided by [`crate::events`] and [`crate::rules`].

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::notifications;
use super::{Attempt, Batch, Read, Snapshot, Store, Versioned};
use crate::api::{CreateEventRequest, UpdateEventRequest};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::events::{self, apply_update, new_event, notices, view, Change, Idempotent};
use crate::keys;
use crate::model::{
    Attendee, AttendeeStatus, Conflict, Event, EventRecord, Occurrence, UserRecord,
};
use crate::{cpu, recurrence, rules};

/// The txn that removes `cur` (record and every copy) if it did not change
/// meanwhile, telling every attendee but `by` it is cancelled.
fn cancellation(cur: &Versioned<EventRecord>, by: Uuid) -> ApiResult<Batch> {
    let ev = &cur.value;
    let mut batch = Batch::default();
    batch
        .unchanged(&keys::event(ev.id), cur.mod_revision)
        .delete(&keys::event(ev.id));
    let filing = keys::filing(ev);
    for p in ev.participants() {
        batch
            .delete(&keys::agenda_copy(p, &filing, ev.id))
            .bump(&keys::agenda_version(p));
    }
    // CalDAV clients hear of it at their next sync.
    for calendar in dav_calendars(ev) {
        super::dav::bury(&mut batch, ev, calendar)?;
    }
    if let Some(g) = ev.group_id {
        batch
            .delete(&keys::group_event(g, ev))
            .delete(&keys::group_event_by_id(g, ev.id));
    }
    for (p, kind) in notices(ev, by, Change::Cancelled) {
        notifications::add(&mut batch, p, kind, events::notice(ev, kind, by))?;
    }
    Ok(batch)
}

/// Whether `cur` is at the revision a CalDAV `If-Match` named (always,
/// when none did). A mismatch is a 412 on confirmed reads; on others it
/// is decided again (false), as a stale read may be behind. The write
/// that follows compares the record's revision, so the check holds at
/// the commit.
fn at_expected(
    expect: Option<i64>,
    cur: &Versioned<EventRecord>,
    confirmed: bool,
) -> ApiResult<bool> {
    match expect {
        Some(r) if r != cur.mod_revision => {
            if confirmed {
                Err(ApiError::precondition_failed(
                    "the event changed since that version (ETag) was read",
                ))
            } else {
                Ok(false)
            }
        }
        _ => Ok(true),
    }
}

/// The CalDAV calendars `ev` lives in: its group's, else each
/// participant's own (see `store::dav`).
pub(crate) fn dav_calendars(ev: &EventRecord) -> Vec<Uuid> {
    match ev.group_id {
        Some(g) => vec![g],
        None => ev.participants().collect(),
    }
}

/// A time window `[from, to)`.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

/// The two reads of `user`'s agenda for `window`, as of `revision`: the
/// one-off events that may overlap it and the recurring or long ones not
/// over before it.
pub(crate) fn window_reads(user: Uuid, (from, to): Window, revision: i64) -> [Read; 2] {
    let (start, end) = keys::agenda_span(user, from, to);
    let (long_start, long_end) = keys::agenda_long_span(user, from);
    [
        Read::span(&start, &end).at(revision),
        Read::span(&long_start, &long_end).at(revision),
    ]
}

/// The events of the [`window_reads`] at `i` and `i + 1` of `snap`.
pub(crate) fn window_events(snap: &Snapshot, i: usize) -> ApiResult<Vec<EventRecord>> {
    let mut out = snap.values::<EventRecord>(i)?;
    out.extend(snap.values::<EventRecord>(i + 1)?);
    Ok(out.into_iter().map(|v| v.value).collect())
}

/// The occurrences of `agenda` in `[from, to)` as `caller` sees them, in
/// time order; worked out within `caller`'s CPU budget.
async fn expand_window(
    caller: Uuid,
    agenda: Vec<EventRecord>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<Vec<Event>> {
    cpu::run_sized(caller, cpu::window_weight(&agenda, from, to), move || {
        let mut out: Vec<Event> = agenda
            .iter()
            .flat_map(|ev| {
                recurrence::instances(ev, from, to)
                    .into_iter()
                    .map(move |o| view(ev, caller, Some(o)))
            })
            .collect();
        out.sort_by_key(|e| (e.start, e.id));
        out
    })
    .await
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

impl<'a> Write<'a> {
    /// A change of `previous` into `ev` by `viewer` that cannot conflict
    /// (nobody's time moves), telling `notify`.
    pub fn settled(
        ev: &'a EventRecord,
        viewer: Uuid,
        notify: Vec<(Uuid, &'static str)>,
        previous: &'a Versioned<EventRecord>,
    ) -> Self {
        Write {
            ev,
            viewer,
            check: Vec::new(),
            reject: false,
            guards: Vec::new(),
            notify,
            previous: Some(previous),
        }
    }
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
        self.write_events(&[w]).await
    }

    /// [`Store::write_event`] of several events in one transaction (a
    /// series split in two), their conflicts together.
    pub(crate) async fn write_events(&self, ws: &[Write<'_>]) -> ApiResult<Attempt<Vec<Conflict>>> {
        let mut batch = Batch::default();
        let mut conflicts = Vec::new();
        for w in ws {
            if w.reject {
                // Versions and agendas of one snapshot: a change committed
                // since moves a version, so the compare below fails.
                let (versions, agendas) = self.agendas_for(w.ev, &w.check, w.viewer, 0).await?;
                let found = conflicts_in(w.ev, &w.check, w.viewer, agendas).await?;
                if !found.is_empty() {
                    return Err(events::conflict_error(found));
                }
                for (user, rev) in w.check.iter().zip(&versions) {
                    batch.unchanged(&keys::agenda_version(*user), *rev);
                }
            }
            self.add_write(&mut batch, w).await?;
        }
        let Some(revision) = self.commit_at(batch).await? else {
            return Ok(Attempt::Retry);
        };
        for w in ws.iter().filter(|w| !w.reject && !w.check.is_empty()) {
            let (_, agendas) = self.agendas_for(w.ev, &w.check, w.viewer, revision).await?;
            conflicts.extend(conflicts_in(w.ev, &w.check, w.viewer, agendas).await?);
        }
        Ok(Attempt::Done(conflicts))
    }

    /// Adds to `batch` the writes of `w`: its guards, the record (compared
    /// on its revision as read), its copies, its reminders, its notices.
    async fn add_write(&self, batch: &mut Batch, w: &Write<'_>) -> ApiResult<()> {
        for (key, rev) in &w.guards {
            batch.unchanged(key, *rev);
        }
        self.refile_reminders(batch, w.previous.map(|p| &p.value), Some(w.ev))
            .await?;
        batch
            .unchanged(
                &keys::event(w.ev.id),
                w.previous.map_or(0, |p| p.mod_revision),
            )
            .put(&keys::event(w.ev.id), w.ev)?;
        let entry = w.ev.group_id.map(|g| keys::group_event(g, w.ev));
        if let Some((prev, g)) = w.previous.and_then(|p| Some((p, p.value.group_id?))) {
            // Filed elsewhere before (its end moved), or by id alone by a
            // replica of layout 4 in a rolling upgrade: that entry goes.
            let was = keys::group_event(g, &prev.value);
            if entry.as_ref() != Some(&was) {
                batch.delete(&was);
            }
            batch.delete(&keys::group_event_by_id(g, prev.value.id));
        }
        if let Some(entry) = entry {
            batch.put_raw(&entry, Vec::new());
        }
        let filing = keys::filing(w.ev);
        let copies: Vec<String> =
            w.ev.participants()
                .map(|p| keys::agenda_copy(p, &filing, w.ev.id))
                .collect();
        if let Some(prev) = w.previous {
            // Copies filed elsewhere before (the event moved) go.
            let was = keys::filing(&prev.value);
            for p in prev.value.participants() {
                let old = keys::agenda_copy(p, &was, prev.value.id);
                if !copies.contains(&old) {
                    batch.delete(&old);
                }
                if w.ev.status_of(p).is_none() {
                    batch.bump(&keys::agenda_version(p));
                    if w.ev.group_id.is_none() {
                        super::dav::bury(batch, &prev.value, p)?;
                    }
                }
            }
        }
        for (p, key) in w.ev.participants().zip(&copies) {
            batch.put(key, w.ev)?.bump(&keys::agenda_version(p));
        }
        for (user, kind) in &w.notify {
            notifications::add(batch, *user, kind, events::notice(w.ev, kind, w.viewer))?;
        }
        Ok(())
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
        self.create_event_from(caller, req, reject, key, None).await
    }

    /// [`Store::create_event`] of an event that came from iCalendar.
    pub async fn create_event_from(
        &self,
        caller: Uuid,
        req: CreateEventRequest,
        reject: bool,
        key: Option<&str>,
        origin: Option<&events::Origin>,
    ) -> ApiResult<(EventRecord, Vec<Conflict>)> {
        events::check_personal(&req)?;
        let names = req.attendees.clone().unwrap_or_default();
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
                let (organizer, attendees, guards) =
                    self.attendees_named(caller, names, confirmed).await?;
                let origin = origin.cloned();
                let mut ev = cpu::run_sized(caller, cpu::rule_weight(&req.rrule), move || {
                    let ev = new_event(req, &organizer, attendees, None)?;
                    match origin {
                        Some(o) => events::with_origin(&ev, &o),
                        None => Ok(ev),
                    }
                })
                .await??;
                if let Some(i) = idempotent {
                    i.stamp(&mut ev);
                }
                let everyone: Vec<Uuid> = ev.participants().collect();
                let notify = notices(&ev, caller, Change::Created);
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

    /// The organizer `caller` and the people `names` lists as attendees of
    /// their event, each with the status they join with
    /// ([`rules::attendee_status`]), and the guards that keep the write to
    /// those accounts as they were read.
    async fn attendees_named(
        &self,
        caller: Uuid,
        names: &[String],
        confirmed: bool,
    ) -> ApiResult<(UserRecord, Vec<Attendee>, Vec<(String, i64)>)> {
        let (organizer, people) = self.people(caller, names, "attendees", confirmed).await?;
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
        Ok((organizer.value, attendees, guards))
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
            Err(e) if e.kind == ErrorKind::Conflict && idempotent.is_some() => {
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
        i.check_repeat(&cur.value, caller)?;
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
            .filter(|ev| rules::may_see_event(&ev.value, caller))
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
                .filter(|ev| rules::may_see_event(&ev.value, caller));
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
        self.update_event_from(caller, id, req, reject, None, None)
            .await
    }

    /// [`Store::update_event`] as iCalendar describes it (`origin`), only
    /// while the record is still at revision `expect` (a CalDAV
    /// `If-Match`; a 412 otherwise).
    pub async fn update_event_from(
        &self,
        caller: Uuid,
        id: Uuid,
        req: UpdateEventRequest,
        reject: bool,
        expect: Option<i64>,
        origin: Option<&events::Origin>,
    ) -> ApiResult<(EventRecord, Vec<Conflict>)> {
        self.optimistic_unconfirmed_first("this event", |confirmed| {
            let req = req.clone();
            async move {
                let cur = self.event_to_change(caller, id, confirmed).await?;
                if !at_expected(expect, &cur, confirmed)? {
                    return Ok(Attempt::Retry);
                }
                rules::check_may_change_event(&cur.value, caller)?;
                let names = req.attendees.clone();
                let record = cur.value.clone();
                let (mut ev, moved) =
                    cpu::run_sized(caller, cpu::rule_weight(&req.rrule), move || {
                        apply_update(&record, req)
                    })
                    .await??;
                let mut guards = Vec::new();
                if let Some(names) = names {
                    events::check_new_attendees(&ev, &names)?;
                    let named;
                    (_, named, guards) = self.attendees_named(caller, &names, confirmed).await?;
                    ev = events::with_attendees(&ev, named);
                }
                if let Some(o) = origin {
                    ev = events::with_origin(&ev, o)?;
                }
                if ev == cur.value {
                    // Nothing changed: nothing is written, nobody is told.
                    // Decided on confirmed reads only (a stale copy could
                    // equal the request while the event has moved on).
                    if !confirmed {
                        return Ok(Attempt::Retry);
                    }
                    return Ok(Attempt::Done((ev, Vec::new())));
                }
                // A move is checked for everyone, newcomers always.
                let check = ev
                    .participants()
                    .filter(|p| moved || cur.value.status_of(*p).is_none())
                    .collect();
                let notify = events::update_notices(&cur.value, &ev, caller);
                Ok(self
                    .write_event(Write {
                        ev: &ev,
                        viewer: caller,
                        check,
                        reject,
                        guards,
                        notify,
                        previous: Some(&cur),
                    })
                    .await?
                    .map(|c| (ev, c)))
            }
        })
        .await
    }

    /// Changes one occurrence of a series on its own, or with `following`
    /// that occurrence and every one after it (the series splits in two:
    /// the part before ends there, the part from it on is a new event,
    /// changed as asked). Organizer only; `following` from the first
    /// occurrence changes the whole series. Answers the occurrence as it
    /// now is (or the new series) and the conflicts of the change.
    pub async fn update_occurrence(
        &self,
        caller: Uuid,
        id: Uuid,
        original: DateTime<Utc>,
        following: bool,
        req: UpdateEventRequest,
        reject: bool,
    ) -> ApiResult<(EventRecord, Option<Occurrence>, Vec<Conflict>)> {
        let done = self
            .optimistic_unconfirmed_first("this event", |confirmed| {
                let req = req.clone();
                async move {
                    let cur = self.event_to_change(caller, id, confirmed).await?;
                    rules::check_may_change_event(&cur.value, caller)?;
                    let occ = recurrence::instance_at(&cur.value, original)
                        .ok_or_else(|| ApiError::not_found("occurrence"))?;
                    if following && original <= cur.value.start {
                        return Ok(Attempt::Done(None));
                    }
                    if following {
                        let (before, after) = events::split_series(&cur.value, occ, Some(req))?;
                        let after = after.ok_or_else(|| ApiError::not_found("occurrence"))?;
                        // Everyone is told once, of the part that changed.
                        let notify = events::update_notices(&cur.value, &after, caller);
                        let writes = [
                            Write::settled(&before, caller, Vec::new(), &cur),
                            Write {
                                ev: &after,
                                viewer: caller,
                                check: after.participants().collect(),
                                reject,
                                guards: Vec::new(),
                                notify,
                                previous: None,
                            },
                        ];
                        let written = self.write_events(&writes).await?;
                        return Ok(written.map(|c| Some((after.clone(), None, c))));
                    }
                    let ev = events::change_occurrence(&cur.value, occ, &req)?;
                    let now = recurrence::instance_at(&ev, original);
                    if ev == cur.value {
                        if !confirmed {
                            return Ok(Attempt::Retry);
                        }
                        return Ok(Attempt::Done(Some((ev, now, Vec::new()))));
                    }
                    let moved = now.is_some_and(|n| (n.start, n.end) != (occ.start, occ.end));
                    let check = if moved {
                        ev.participants().collect()
                    } else {
                        Vec::new()
                    };
                    let notify = events::update_notices(&cur.value, &ev, caller);
                    let written = self
                        .write_event(Write {
                            ev: &ev,
                            viewer: caller,
                            check,
                            reject,
                            guards: Vec::new(),
                            notify,
                            previous: Some(&cur),
                        })
                        .await?;
                    Ok(written.map(|c| Some((ev.clone(), now, c))))
                }
            })
            .await?;
        match done {
            Some(done) => Ok(done),
            // From the first occurrence on: the whole series.
            None => {
                let (ev, conflicts) = self.update_event(caller, id, req, reject).await?;
                Ok((ev, None, conflicts))
            }
        }
    }

    /// Cancels one occurrence of a series, or with `following` that one and
    /// every one after it (the series ends before it; from the first, the
    /// whole event goes). Organizer only.
    pub async fn delete_occurrence(
        &self,
        caller: Uuid,
        id: Uuid,
        original: DateTime<Utc>,
        following: bool,
    ) -> ApiResult<()> {
        self.optimistic_unconfirmed_first("this event", |confirmed| async move {
            let cur = self.event_to_change(caller, id, confirmed).await?;
            rules::check_may_delete_event(&cur.value, caller)?;
            let occ = recurrence::instance_at(&cur.value, original)
                .ok_or_else(|| ApiError::not_found("occurrence"))?;
            if following && original <= cur.value.start {
                let mut batch = cancellation(&cur, caller)?;
                self.refile_reminders(&mut batch, Some(&cur.value), None)
                    .await?;
                return self.commit_or_retry(batch, ()).await;
            }
            let ev = if following {
                events::split_series(&cur.value, occ, None)?.0
            } else {
                events::cancel_occurrence(&cur.value, occ)?
            };
            let notify = events::update_notices(&cur.value, &ev, caller);
            Ok(self
                .write_event(Write::settled(&ev, caller, notify, &cur))
                .await?
                .map(|_| ()))
        })
        .await
    }

    /// One occurrence of a series the caller may open (as
    /// [`Store::event_to_view`]), where it is now; 404 when the series has
    /// none starting (by its rule) at `original`.
    pub async fn occurrence_to_view(
        &self,
        caller: Uuid,
        id: Uuid,
        original: DateTime<Utc>,
    ) -> ApiResult<(EventRecord, Occurrence)> {
        let ev = self.event_to_view(caller, id).await?.value;
        let occ = recurrence::instance_at(&ev, original)
            .ok_or_else(|| ApiError::not_found("occurrence"))?;
        Ok((ev, occ))
    }

    /// Deletes an event from every agenda (organizer only).
    pub async fn delete_event(&self, caller: Uuid, id: Uuid) -> ApiResult<()> {
        self.delete_event_at(caller, id, None).await
    }

    /// [`Store::delete_event`] only while the record is at revision
    /// `expect` (a CalDAV `If-Match`; a 412 otherwise).
    pub async fn delete_event_at(
        &self,
        caller: Uuid,
        id: Uuid,
        expect: Option<i64>,
    ) -> ApiResult<()> {
        self.optimistic_unconfirmed_first("this event", |confirmed| async move {
            let cur = self.event_to_change(caller, id, confirmed).await?;
            if !at_expected(expect, &cur, confirmed)? {
                return Ok(Attempt::Retry);
            }
            rules::check_may_delete_event(&cur.value, caller)?;
            let mut batch = cancellation(&cur, caller)?;
            self.refile_reminders(&mut batch, Some(&cur.value), None)
                .await?;
            self.commit_or_retry(batch, ()).await
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
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(Attempt::Done(())),
                Err(e) => return Err(e),
            };
            if cur.value.organizer_id == user {
                let mut batch = cancellation(&cur, user)?;
                self.refile_reminders(&mut batch, Some(&cur.value), None)
                    .await?;
                return self.commit_or_retry(batch, ()).await;
            }
            let ev = events::without(&cur.value, user);
            Ok(self
                .write_event(Write::settled(
                    &ev,
                    user,
                    notices(&ev, user, Change::Left),
                    &cur,
                ))
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
        self.rsvp_at(caller, id, status, reject, None).await
    }

    /// [`Store::rsvp`] only while the record is at revision `expect` (a
    /// CalDAV `If-Match`; a 412 otherwise).
    pub async fn rsvp_at(
        &self,
        caller: Uuid,
        id: Uuid,
        status: AttendeeStatus,
        reject: bool,
        expect: Option<i64>,
    ) -> ApiResult<(EventRecord, Vec<Conflict>)> {
        self.optimistic_unconfirmed_first("this event", |confirmed| async move {
            let cur = self.event_to_change(caller, id, confirmed).await?;
            if !at_expected(expect, &cur, confirmed)? {
                return Ok(Attempt::Retry);
            }
            let busy = rules::answer_is_busy(status);
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
            let ev = events::answered(&cur.value, caller, status);
            let notify = notices(&ev, caller, Change::Answered);
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
        expand_window(caller, agenda, from, to).await
    }

    /// [`Store::list_events`], with the revision of the caller's agenda
    /// version read in the same snapshot: the answer stays right while
    /// [`Store::agenda_revision`] gives the same.
    pub async fn list_events_versioned(
        &self,
        caller: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<(i64, Vec<Event>)> {
        let version = Read::key(&keys::agenda_version(caller));
        let reads = std::iter::once(version).chain(window_reads(caller, (from, to), 0));
        let Some(snap) = self.snapshot(&[], reads).await? else {
            return Err(ApiError::internal("a read without guards was refused"));
        };
        let agenda = window_events(&snap, 1)?;
        Ok((
            snap.mod_revision(0),
            expand_window(caller, agenda, from, to).await?,
        ))
    }

    /// The revision of `user`'s agenda version (linearizable): it moves
    /// with every change to their events.
    pub async fn agenda_revision(&self, user: Uuid) -> ApiResult<i64> {
        self.revision(&keys::agenda_version(user)).await
    }

    /// The occurrences in the caller's agenda in `[from, to)` whose title,
    /// location or description (as the caller may see them) hold `q`.
    pub async fn search_events(
        &self,
        caller: Uuid,
        q: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<Vec<Event>> {
        let q = crate::events::search_text(q)?;
        let mut found = self.list_events(caller, from, to).await?;
        found.retain(|ev| crate::events::matches(ev, &q));
        Ok(found)
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
