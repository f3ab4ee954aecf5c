//! Events as the domain sees them, pure: a request turned into a record
//! (fields checked), a change applied, an answer recorded, who is told
//! what, and the public shape each person sees. `store::events` reads and
//! writes them.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::api::{CreateEventRequest, UpdateEventRequest};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    Attendee, AttendeeStatus, Conflict, Event, EventRecord, Occurrence, OccurrenceChange,
    UserRecord, Visibility,
};
use crate::{recurrence, reminders, validate};

/// Most attendees of a personal event.
pub const MAX_ATTENDEES: usize = 100;

/// Most exdates of an event.
const MAX_EXDATES: usize = 500;

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
    all_day: bool,
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

/// The first instant of `day` in `tz`: its midnight, or where a DST gap
/// swallows midnight, the first hour that exists.
fn day_start(tz: chrono_tz::Tz, day: NaiveDate) -> DateTime<Utc> {
    (0..4)
        .find_map(|h| {
            let t = day.and_hms_opt(h, 0, 0)?;
            tz.from_local_datetime(&t).earliest()
        })
        .map_or_else(
            || day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
            |t| t.with_timezone(&Utc),
        )
}

/// How many days an all-day event spans (its length may be an hour off a
/// whole number of days across a DST change).
fn day_count(ev: &EventRecord) -> i64 {
    whole_days(ev.end - ev.start)
}

fn whole_days(length: Duration) -> i64 {
    (length.num_hours() + 12).div_euclid(24).max(1)
}

/// How many days one occurrence of an all-day series spans: its own when
/// it was changed on its own.
fn occurrence_days(ev: &EventRecord, occ: Occurrence) -> i64 {
    ev.overrides
        .get(&occ.original)
        .map_or_else(|| day_count(ev), |c| whole_days(c.end - c.start))
}

/// The days of an event in its zone, `[first, after_last)`: as given for
/// an all-day event, the days it touches for a timed one.
fn days_of(ev: &EventRecord) -> (NaiveDate, NaiveDate) {
    let tz: chrono_tz::Tz = ev.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let first = ev.start.with_timezone(&tz).date_naive();
    let after = if ev.all_day {
        first + Duration::days(day_count(ev))
    } else {
        (ev.end - Duration::seconds(1))
            .with_timezone(&tz)
            .date_naive()
            + Duration::days(1)
    };
    (first, after.max(first + Duration::days(1)))
}

/// A request's `start` and `end`: RFC 3339 times, or for an all-day event
/// dates (the end exclusive), made the first instants of those days in
/// `zone` (an unknown zone is refused by the caller's checks).
fn when(
    all_day: bool,
    start: &str,
    end: &str,
    zone: &str,
) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    if !all_day {
        return Ok((
            validate::instant("start", start)?,
            validate::instant("end", end)?,
        ));
    }
    let tz = validate::time_zone("time_zone", zone)?;
    let (first, after) = (validate::date("start", start)?, validate::date("end", end)?);
    Ok((day_start(tz, first), day_start(tz, after)))
}

/// The instant a PATCH gives for `field`, or `kept` when it gives none.
fn instant_or(
    field: &str,
    given: &Option<String>,
    kept: DateTime<Utc>,
) -> ApiResult<DateTime<Utc>> {
    given
        .as_deref()
        .map_or(Ok(kept), |s| validate::instant(field, s))
}

fn exdates(list: Option<Vec<String>>) -> ApiResult<Vec<DateTime<Utc>>> {
    let list = list.unwrap_or_default();
    if list.len() > MAX_EXDATES {
        return Err(ApiError::invalid_field("exdates", "at most 500 exdates"));
    }
    list.iter()
        .map(|s| validate::instant("exdates", s))
        .collect()
}

/// Checks a new list of attendees for an existing event: personal events
/// only (a group's members attend its events), at most [`MAX_ATTENDEES`].
pub fn check_new_attendees(ev: &EventRecord, names: &[String]) -> ApiResult<()> {
    if ev.group_id.is_some() {
        return Err(ApiError::invalid_field(
            "attendees",
            "a group event is attended by the group's members; its attendees cannot be set",
        ));
    }
    if names.len() > MAX_ATTENDEES {
        return Err(ApiError::invalid_field(
            "attendees",
            "at most 100 attendees",
        ));
    }
    Ok(())
}

/// `ev` attended by its organizer and `named` (in that order, nobody
/// twice): those already there keep their answers, newcomers come with the
/// status given, and anyone left out goes.
pub fn with_attendees(ev: &EventRecord, named: Vec<Attendee>) -> EventRecord {
    let mut out = ev.clone();
    out.attendees = ev
        .attendees
        .iter()
        .filter(|a| a.user_id == ev.organizer_id)
        .cloned()
        .collect();
    for a in named {
        if out.attendees.iter().any(|x| x.user_id == a.user_id) {
            continue;
        }
        let kept = ev.attendees.iter().find(|x| x.user_id == a.user_id);
        out.attendees.push(kept.cloned().unwrap_or(a));
    }
    let kept: Vec<Uuid> = out.attendee_ids().collect();
    out.reminders.retain(|u, _| kept.contains(u));
    out
}

/// `ev` with `user`'s own reminders set to `minutes` (checked; none
/// removes them). Only someone taking part has reminders.
pub fn with_reminders(ev: &EventRecord, user: Uuid, minutes: &[u32]) -> ApiResult<EventRecord> {
    let minutes = reminders::check(minutes)?;
    let mut out = ev.clone();
    if minutes.is_empty() {
        out.reminders.remove(&user);
    } else {
        out.reminders.insert(user, minutes);
    }
    Ok(out)
}

/// Checks what only a personal event may ask: no group (the groups
/// service creates those) and at most [`MAX_ATTENDEES`] attendees.
pub fn check_personal(req: &CreateEventRequest) -> ApiResult<()> {
    if req.group_id.is_some() {
        return Err(ApiError::bad_request(
            "group events are created by the groups service",
        ));
    }
    if req
        .attendees
        .as_ref()
        .is_some_and(|a| a.len() > MAX_ATTENDEES)
    {
        return Err(ApiError::invalid_field(
            "attendees",
            "at most 100 attendees",
        ));
    }
    Ok(())
}

/// The group a group event is for: it must name one, and no attendees
/// (the group's members attend).
pub fn group_of(req: &CreateEventRequest) -> ApiResult<Uuid> {
    let Some(group_id) = req.group_id else {
        return Err(ApiError::invalid_field("group_id", "group_id is required"));
    };
    if req.attendees.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(ApiError::invalid_field(
            "attendees",
            "a group event is attended by the group's members; leave attendees out",
        ));
    }
    Ok(group_id)
}

/// Turns a create request into a new event organized by `organizer`
/// with `attendees` (the organizer is added first, accepted).
pub fn new_event(
    req: CreateEventRequest,
    organizer: &UserRecord,
    attendees: Vec<Attendee>,
    group_id: Option<Uuid>,
) -> ApiResult<EventRecord> {
    let all_day = req.all_day.unwrap_or(false);
    let (start, end) = when(all_day, &req.start, &req.end, &req.time_zone)?;
    let f = Fields {
        title: validate::text("title", &req.title, 1, 200)?,
        description: validate::text(
            "description",
            req.description.as_deref().unwrap_or(""),
            0,
            2000,
        )?,
        location: validate::text("location", req.location.as_deref().unwrap_or(""), 0, 2000)?,
        start,
        end,
        time_zone: req.time_zone,
        rrule: req.rrule,
        exdates: exdates(req.exdates)?,
        visibility: req
            .visibility
            .as_deref()
            .map(validate::visibility)
            .transpose()?
            .unwrap_or_default(),
        all_day,
    }
    .check()?;
    let reminders = match &req.reminders {
        Some(m) if !m.is_empty() => [(organizer.id, reminders::check(m)?)].into(),
        _ => Default::default(),
    };
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
        all_day: f.all_day,
        reminders,
        overrides: Default::default(),
        request_digest: None,
        ical: None,
        external_attendees: Vec::new(),
    })
}

/// What an event brings from iCalendar (a file, a CalDAV client) beyond
/// the API's fields.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub uid: String,
    /// The CalDAV resource name it was put under.
    pub dav_name: Option<String>,
    /// Attendees without an account here.
    pub external: Vec<crate::model::ExternalAttendee>,
    /// Occurrences changed on their own: the start the rule gives each,
    /// and the change (as `PATCH` of that occurrence would make it).
    pub overrides: Vec<(DateTime<Utc>, UpdateEventRequest)>,
    /// Occurrences cancelled on their own.
    pub cancelled: Vec<DateTime<Utc>>,
    /// Properties kept as written (`IcalOrigin::extra`).
    pub extra: Vec<String>,
    /// The organizer's reminders as its alarms say (None: left as they
    /// are).
    pub reminders: Option<Vec<u32>>,
}

/// `ev` as `origin` describes it: its UID and name, its external
/// attendees, and its changed and cancelled occurrences (all of them:
/// those it had before are replaced). An occurrence the rule does not
/// give is left out, as a client's stale exception would be.
pub fn with_origin(ev: &EventRecord, origin: &Origin) -> ApiResult<EventRecord> {
    let mut out = ev.clone();
    out.ical = Some(crate::model::IcalOrigin {
        uid: origin.uid.clone(),
        dav_name: origin.dav_name.clone(),
        extra: origin.extra.clone(),
    });
    if let Some(m) = &origin.reminders {
        out = with_reminders(&out, out.organizer_id, m)?;
    }
    out.external_attendees = origin.external.clone();
    out.external_attendees.truncate(MAX_ATTENDEES);
    out.overrides.clear();
    for original in &origin.cancelled {
        if let Some(occ) = recurrence::instance_at(&out, *original) {
            out = cancel_occurrence(&out, occ)?;
        }
    }
    for (original, req) in &origin.overrides {
        if let Some(occ) = recurrence::instance_at(&out, *original) {
            out = change_occurrence(&out, occ, req)?;
        }
    }
    Ok(out)
}

/// Namespace of the ids derived for creations under an idempotency key.
const IDEMPOTENT_CREATES: Uuid = Uuid::from_u128(0x6a1d_9e0c_4b7f_4f4e_9a53_0e2d_8c71_b5a4);

/// A creation made safe to repeat by an idempotency key: the event id is
/// derived from the caller and the key, so every retry names the same
/// event, and the digest of the request tells a retry from a different
/// request that reuses the key.
pub struct Idempotent {
    /// The id every repeat of the creation gives the event.
    pub id: Uuid,
    /// Digest of the request, kept in the event to recognise a repeat.
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
            id: Self::id_for(caller, key),
            digest: Uuid::new_v5(&IDEMPOTENT_CREATES, &body),
        }))
    }

    /// The id a creation of `caller` under `key` gives its event.
    pub fn id_for(caller: Uuid, key: &str) -> Uuid {
        Uuid::new_v5(&IDEMPOTENT_CREATES, format!("{caller}/{key}").as_bytes())
    }

    /// Gives `ev` the derived id and the request digest.
    pub fn stamp(&self, ev: &mut EventRecord) {
        ev.id = self.id;
        ev.request_digest = Some(self.digest);
    }

    /// Whether `ev`, found under the derived id, was created by this very
    /// request of `caller` (a 409 when the key was used for another one).
    pub fn check_repeat(&self, ev: &EventRecord, caller: Uuid) -> ApiResult<()> {
        if ev.organizer_id != caller || ev.request_digest != Some(self.digest) {
            return Err(ApiError::conflict(
                "this Idempotency-Key was already used for a different request",
            ));
        }
        Ok(())
    }
}

/// `ev` changed as `req` asks (its fields checked), and whether it moved
/// in time (its conflicts are then looked at again).
pub fn apply_update(ev: &EventRecord, req: UpdateEventRequest) -> ApiResult<(EventRecord, bool)> {
    let all_day = req.all_day.unwrap_or(ev.all_day);
    let zone = req.time_zone.as_deref().unwrap_or(&ev.time_zone);
    let (start, end) = if all_day {
        // Days left out stay the days the event is on now.
        let (first, after) = days_of(ev);
        let first = req.start.clone().unwrap_or_else(|| first.to_string());
        let after = req.end.clone().unwrap_or_else(|| after.to_string());
        when(true, &first, &after, zone)?
    } else if ev.all_day {
        let (Some(start), Some(end)) = (&req.start, &req.end) else {
            return Err(ApiError::invalid_field(
                "start",
                "an all-day event made a timed one needs start and end",
            ));
        };
        when(false, start, end, zone)?
    } else {
        (
            instant_or("start", &req.start, ev.start)?,
            instant_or("end", &req.end, ev.end)?,
        )
    };
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
        all_day,
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
    out.all_day = f.all_day;
    let rescheduled = out.start != ev.start
        || out.end != ev.end
        || out.rrule != ev.rrule
        || out.time_zone != ev.time_zone;
    if rescheduled && out.group_id.is_none() {
        ask_again(&mut out);
    }
    // Conflicts are looked at again for any change of when it occurs.
    let moved = rescheduled || out.exdates != ev.exdates;
    Ok((out, moved))
}

/// A personal event moved in time: every attendee's answer was to the old
/// time, so each is asked again (the organizer's stays). A group event
/// keeps the answers its hierarchy gave (members ranked below its creator
/// are accepted for without being asked).
fn ask_again(ev: &mut EventRecord) {
    let organizer = ev.organizer_id;
    for a in ev.attendees.iter_mut().filter(|a| a.user_id != organizer) {
        if matches!(
            a.status,
            AttendeeStatus::Accepted | AttendeeStatus::Tentative | AttendeeStatus::Declined
        ) {
            a.status = AttendeeStatus::NeedsAction;
        }
    }
}

/// Whether `ev` has anything left at or after `now`: a member who joins a
/// group gets its events that are, one who leaves loses them; the past
/// stays as it was.
pub fn still_ahead(ev: &EventRecord, now: DateTime<Utc>) -> bool {
    ev.end > now
        || (ev.rrule.is_some()
            && !recurrence::occurrences(ev, now, now + recurrence::CONFLICT_HORIZON).is_empty())
}

/// A group's event `ev` brought in line with `user`'s membership: `joins`
/// is how they attend as a member now (None: no longer one). A newcomer
/// is added, someone gone is taken out (its organizer stays); None when
/// nothing is to change.
pub fn synced(ev: &EventRecord, user: Uuid, joins: Option<Attendee>) -> Option<EventRecord> {
    let attends = ev.status_of(user).is_some();
    match joins {
        Some(a) if !attends => {
            let mut ev = ev.clone();
            ev.attendees.push(a);
            Some(ev)
        }
        None if attends && ev.organizer_id != user => Some(without(ev, user)),
        _ => None,
    }
}

/// Most occurrences of one series changed on their own.
pub const MAX_OVERRIDES: usize = 100;

/// The series `ev` with its occurrence `occ` changed on its own as `req`
/// asks: only its title, start, end (dates for an all-day series),
/// location and description; what `req` leaves out stays as the
/// occurrence is now. An occurrence changed back to the series' values is
/// no longer an exception.
pub fn change_occurrence(
    ev: &EventRecord,
    occ: Occurrence,
    req: &UpdateEventRequest,
) -> ApiResult<EventRecord> {
    let series_only = [
        ("time_zone", req.time_zone.is_some()),
        ("rrule", req.rrule.is_some()),
        ("exdates", req.exdates.is_some()),
        ("visibility", req.visibility.is_some()),
        ("all_day", req.all_day.is_some()),
        ("attendees", req.attendees.is_some()),
    ];
    if let Some((field, _)) = series_only.iter().find(|(_, given)| *given) {
        return Err(ApiError::invalid_field(
            field,
            "one occurrence changes only its title, start, end, location and description; change the series (its id) for the rest",
        ));
    }
    let (start, end) = if ev.all_day {
        let tz: chrono_tz::Tz = ev.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let first = occ.start.with_timezone(&tz).date_naive();
        let after = first + Duration::days(occurrence_days(ev, occ));
        let first = req.start.clone().unwrap_or_else(|| first.to_string());
        let after = req.end.clone().unwrap_or_else(|| after.to_string());
        when(true, &first, &after, &ev.time_zone)?
    } else {
        (
            instant_or("start", &req.start, occ.start)?,
            instant_or("end", &req.end, occ.end)?,
        )
    };
    validate::span(start, end)?;
    let now = ev.overrides.get(&occ.original);
    // A text given equal to the series' is no exception; one left out
    // stays as the occurrence has it.
    let text = |given: &Option<String>, field, max, base: &String, kept: Option<&String>| {
        Ok::<_, ApiError>(match given {
            Some(t) => {
                let t = validate::text(field, t, usize::from(field == "title"), max)?;
                (t != *base).then_some(t)
            }
            None => kept.cloned(),
        })
    };
    let change = OccurrenceChange {
        start,
        end,
        title: text(
            &req.title,
            "title",
            200,
            &ev.title,
            now.and_then(|c| c.title.as_ref()),
        )?,
        description: text(
            &req.description,
            "description",
            2000,
            &ev.description,
            now.and_then(|c| c.description.as_ref()),
        )?,
        location: text(
            &req.location,
            "location",
            2000,
            &ev.location,
            now.and_then(|c| c.location.as_ref()),
        )?,
    };
    let mut out = ev.clone();
    let plain = change.start == occ.original
        && change.end == occ.original + (ev.end - ev.start)
        && change.title.is_none()
        && change.description.is_none()
        && change.location.is_none();
    if plain {
        out.overrides.remove(&occ.original);
    } else {
        out.overrides.insert(occ.original, change);
    }
    if out.overrides.len() > MAX_OVERRIDES {
        return Err(ApiError::invalid_field(
            "start",
            "at most 100 occurrences of a series can be changed on their own; change the series",
        ));
    }
    Ok(out)
}

/// The series `ev` without its occurrence `occ` (an exdate).
pub fn cancel_occurrence(ev: &EventRecord, occ: Occurrence) -> ApiResult<EventRecord> {
    let mut out = ev.clone();
    out.overrides.remove(&occ.original);
    if !out.exdates.contains(&occ.original) {
        out.exdates.push(occ.original);
        out.exdates.sort();
    }
    if out.exdates.len() > MAX_EXDATES {
        return Err(ApiError::invalid_field(
            "exdates",
            "at most 500 occurrences of a series can be cancelled on their own",
        ));
    }
    Ok(out)
}

/// The series `ev` split at its occurrence `occ` (not its first): the part
/// before it, ending there, and the part from it on (a new event with
/// the same people and answers, an id of its own), changed as `req` asks (None: the part from it on goes;
/// its attendees are the series', so `req` may not set them).
pub fn split_series(
    ev: &EventRecord,
    occ: Occurrence,
    req: Option<UpdateEventRequest>,
) -> ApiResult<(EventRecord, Option<EventRecord>)> {
    let tz = validate::time_zone("time_zone", &ev.time_zone)?;
    let (before_rule, after_rule) =
        recurrence::split(ev, occ.original).ok_or_else(|| ApiError::not_found("occurrence"))?;
    let mut before = ev.clone();
    before.rrule = Some(recurrence::check(&before_rule, ev.start, tz)?);
    before.exdates.retain(|t| *t < occ.original);
    before.overrides.retain(|t, _| *t < occ.original);
    let Some(req) = req else {
        return Ok((before, None));
    };
    if req.attendees.is_some() {
        return Err(ApiError::invalid_field(
            "attendees",
            "the attendees of a series are changed on the series (its id)",
        ));
    }
    let mut after = ev.clone();
    after.id = Uuid::new_v4();
    after.start = occ.original;
    after.end = occ.original + (ev.end - ev.start);
    after.rrule = Some(recurrence::check(&after_rule, after.start, tz)?);
    after.exdates.retain(|t| *t >= occ.original);
    after.overrides.retain(|t, _| *t >= occ.original);
    after.created_at = Utc::now();
    after.request_digest = None;
    after.ical = None;
    let (after, _) = apply_update(&after, req)?;
    Ok((before, Some(after)))
}

/// `ev` with `user`'s answer set to `status`.
pub fn answered(ev: &EventRecord, user: Uuid, status: AttendeeStatus) -> EventRecord {
    let mut ev = ev.clone();
    for a in ev.attendees.iter_mut().filter(|a| a.user_id == user) {
        a.status = status;
    }
    ev
}

/// `ev` without `user` among its attendees.
pub fn without(ev: &EventRecord, user: Uuid) -> EventRecord {
    let mut ev = ev.clone();
    ev.attendees.retain(|a| a.user_id != user);
    ev.reminders.remove(&user);
    ev
}

/// What happened to an event, for [`notices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created, with its attendees.
    Created,
    /// Changed by its organizer.
    Updated,
    /// Deleted for everyone.
    Cancelled,
    /// An attendee answered.
    Answered,
    /// An attendee's account went away; `ev` is without them.
    Left,
}

/// Who is told of `change` to `ev` made by `by`, and the kind of
/// notification each gets.
pub fn notices(ev: &EventRecord, by: Uuid, change: Change) -> Vec<(Uuid, &'static str)> {
    let others = ev.attendee_ids().filter(|p| *p != by);
    match change {
        // Those accepted for at once (members ranked below a group event's
        // creator) have nothing to answer; everyone else is asked to.
        Change::Created => ev
            .attendees
            .iter()
            .filter(|a| a.user_id != by)
            .map(|a| {
                let kind = if a.status == AttendeeStatus::Accepted {
                    "event_added"
                } else {
                    "event_invited"
                };
                (a.user_id, kind)
            })
            .collect(),
        Change::Updated => others.map(|p| (p, "event_updated")).collect(),
        Change::Cancelled => others.map(|p| (p, "event_cancelled")).collect(),
        Change::Answered if ev.organizer_id != by => vec![(ev.organizer_id, "rsvp")],
        Change::Answered => Vec::new(),
        Change::Left => vec![(ev.organizer_id, "attendee_left")],
    }
}

/// Who is told of a change by `by` that made `before` into `after`:
/// newcomers as if it were created for them, those removed that it is
/// cancelled (for them), everyone else that it changed.
pub fn update_notices(
    before: &EventRecord,
    after: &EventRecord,
    by: Uuid,
) -> Vec<(Uuid, &'static str)> {
    let mut out: Vec<(Uuid, &'static str)> = notices(after, by, Change::Created)
        .into_iter()
        .map(|(p, kind)| match before.status_of(p) {
            Some(_) => (p, "event_updated"),
            None => (p, kind),
        })
        .collect();
    out.extend(
        before
            .attendee_ids()
            .filter(|p| *p != by && after.status_of(*p).is_none())
            .map(|p| (p, "event_cancelled")),
    );
    out
}

/// What a notification about `ev` says of it.
pub fn summary(ev: &EventRecord) -> serde_json::Value {
    json!({"event_id": ev.id, "title": ev.title, "start": ev.start, "end": ev.end, "all_day": ev.all_day, "organizer_id": ev.organizer_id})
}

/// What a notification of `kind` about `ev`, caused by `by`, says: the
/// event, who did it (`by`, and `by_username` while they take part) and,
/// for an answer (`rsvp`), what they answered (`status`).
pub fn notice(ev: &EventRecord, kind: &str, by: Uuid) -> serde_json::Value {
    let mut v = summary(ev);
    v["by"] = json!(by);
    if let Some(a) = ev.attendees.iter().find(|a| a.user_id == by) {
        v["by_username"] = json!(a.username);
        if kind == "rsvp" {
            v["status"] = json!(a.status);
        }
    }
    v
}

/// The id of the occurrence of series `id` that its rule starts at
/// `original`: `{id}_{YYYYMMDDTHHMMSSZ}` (`validate::event_ref` reads it).
pub fn occurrence_id(id: Uuid, original: DateTime<Utc>) -> String {
    format!("{id}_{}", original.format("%Y%m%dT%H%M%SZ"))
}

/// The public shape of `ev` for `viewer`; `occurrence` for one expanded
/// instance of a recurring event (as changed on its own, if it was).
pub fn view(ev: &EventRecord, viewer: Uuid, occurrence: Option<Occurrence>) -> Event {
    let tz: Option<chrono_tz::Tz> = ev.time_zone.parse().ok();
    let local = |t: DateTime<Utc>| -> DateTime<FixedOffset> {
        match tz {
            Some(tz) => t.with_timezone(&tz).fixed_offset(),
            None => t.fixed_offset(),
        }
    };
    let (start, end) = occurrence.map_or((ev.start, ev.end), |o| (o.start, o.end));
    let first_day = ev.all_day.then(|| local(start).date_naive());
    let series = occurrence.filter(|_| ev.rrule.is_some());
    let change = series.and_then(|o| ev.overrides.get(&o.original));
    let text = |own: Option<&String>, base: &String| own.unwrap_or(base).clone();
    Event {
        id: ev.id,
        title: text(change.and_then(|c| c.title.as_ref()), &ev.title),
        description: text(change.and_then(|c| c.description.as_ref()), &ev.description),
        location: text(change.and_then(|c| c.location.as_ref()), &ev.location),
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
        all_day: ev.all_day,
        start_date: first_day,
        end_date: first_day.map(|d| {
            d + Duration::days(series.map_or_else(|| day_count(ev), |o| occurrence_days(ev, o)))
        }),
        reminders: ev.reminders.get(&viewer).cloned().unwrap_or_default(),
        occurrence_id: series.map(|o| occurrence_id(ev.id, o.original)),
        recurring_event_id: series.map(|_| ev.id),
    }
}

/// Longest text `GET /v1/events/search` looks for, in characters.
pub const SEARCH_MAX_CHARS: usize = 200;

/// The text an event search looks for, trimmed and lower-cased; refused
/// when blank or too long.
pub fn search_text(q: &str) -> ApiResult<String> {
    let q = q.trim();
    if q.is_empty() {
        return Err(ApiError::invalid_field("q", "q must not be blank"));
    }
    if q.chars().count() > SEARCH_MAX_CHARS {
        return Err(ApiError::invalid_field(
            "q",
            format!("q is at most {SEARCH_MAX_CHARS} characters"),
        ));
    }
    Ok(q.to_lowercase())
}

/// Whether the event as shown to its viewer (what they may see of it)
/// holds `q` (from [`search_text`]) in its title, location or description.
pub fn matches(ev: &Event, q: &str) -> bool {
    [&ev.title, &ev.location, &ev.description]
        .iter()
        .any(|field| field.to_lowercase().contains(q))
}

/// `{event, conflicts}` reply.
pub fn with_conflicts(
    ev: &EventRecord,
    viewer: Uuid,
    conflicts: Vec<Conflict>,
) -> serde_json::Value {
    with_conflicts_at(ev, viewer, None, conflicts)
}

/// [`with_conflicts`] for one occurrence of a series (None: the event).
pub fn with_conflicts_at(
    ev: &EventRecord,
    viewer: Uuid,
    occurrence: Option<Occurrence>,
    conflicts: Vec<Conflict>,
) -> serde_json::Value {
    json!({ "event": view(ev, viewer, occurrence), "conflicts": conflicts })
}

/// The refusal of a change that would make `conflicts` (`on_conflict=reject`).
pub fn conflict_error(conflicts: Vec<Conflict>) -> ApiError {
    ApiError::conflict(format!(
        "the event overlaps {} existing event occurrence(s)",
        conflicts.len()
    ))
    .with_details(json!({ "conflicts": conflicts }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn update(body: serde_json::Value) -> UpdateEventRequest {
        serde_json::from_value(body).unwrap()
    }

    /// A personal event of an organizer with one attendee who accepted.
    fn accepted_event() -> (EventRecord, Uuid) {
        let mut ev = EventRecord::sample("2030-03-04T09:00:00Z", 60, "UTC", None);
        let guest = Uuid::new_v4();
        ev.attendees = vec![
            Attendee {
                user_id: ev.organizer_id,
                username: "org".into(),
                status: AttendeeStatus::Accepted,
            },
            Attendee {
                user_id: guest,
                username: "guest".into(),
                status: AttendeeStatus::Accepted,
            },
        ];
        (ev, guest)
    }

    #[test]
    fn a_patch_that_changes_nothing_gives_the_same_record() {
        let (ev, _) = accepted_event();
        let same = update(serde_json::json!({"title": ev.title.clone(), "time_zone": "UTC"}));
        let (out, moved) = apply_update(&ev, same).unwrap();
        assert_eq!(out, ev);
        assert!(!moved);
    }

    #[test]
    fn moving_a_personal_event_asks_its_attendees_again_and_other_edits_keep_answers() {
        let (ev, guest) = accepted_event();
        let (out, moved) =
            apply_update(&ev, update(serde_json::json!({"title": "Renamed"}))).unwrap();
        assert!(!moved);
        assert_eq!(out.status_of(guest), Some(AttendeeStatus::Accepted));
        let later = update(
            serde_json::json!({"start": "2030-03-04T10:00:00Z", "end": "2030-03-04T11:00:00Z"}),
        );
        let (out, moved) = apply_update(&ev, later).unwrap();
        assert!(moved);
        assert_eq!(out.status_of(guest), Some(AttendeeStatus::NeedsAction));
        assert_eq!(
            out.status_of(ev.organizer_id),
            Some(AttendeeStatus::Accepted)
        );
        // A group event keeps what its hierarchy gave.
        let mut group = ev.clone();
        group.group_id = Some(Uuid::new_v4());
        let later = update(
            serde_json::json!({"start": "2030-03-04T10:00:00Z", "end": "2030-03-04T11:00:00Z"}),
        );
        let (out, _) = apply_update(&group, later).unwrap();
        assert_eq!(out.status_of(guest), Some(AttendeeStatus::Accepted));
    }

    #[test]
    fn new_attendees_are_asked_kept_ones_keep_answers_and_removed_ones_are_told() {
        let (ev, bob) = accepted_event();
        let carol = person("carol");
        let dave = person("dave");
        let mut with_dave = with_attendees(
            &ev,
            vec![
                attendee(&carol, AttendeeStatus::NeedsAction),
                attendee(&dave, AttendeeStatus::Invited),
            ],
        );
        // Named again by the request, bob would be kept as he answered.
        assert_eq!(with_dave.status_of(bob), None, "bob left out goes");
        assert_eq!(with_dave.attendees[0].user_id, ev.organizer_id);
        assert_eq!(
            with_dave.status_of(carol.id),
            Some(AttendeeStatus::NeedsAction)
        );
        assert_eq!(with_dave.status_of(dave.id), Some(AttendeeStatus::Invited));
        let mut told = update_notices(&ev, &with_dave, ev.organizer_id);
        told.sort();
        let mut want = vec![
            (bob, "event_cancelled"),
            (carol.id, "event_invited"),
            (dave.id, "event_invited"),
        ];
        want.sort();
        assert_eq!(told, want);

        // Bob named again after answering keeps his answer, and the
        // organizer named in the list is not added twice.
        with_dave = with_attendees(
            &ev,
            vec![
                attendee(&person("bob2"), AttendeeStatus::NeedsAction),
                Attendee {
                    user_id: bob,
                    username: "bob".into(),
                    status: AttendeeStatus::NeedsAction,
                },
                Attendee {
                    user_id: ev.organizer_id,
                    username: "alice".into(),
                    status: AttendeeStatus::NeedsAction,
                },
            ],
        );
        assert_eq!(with_dave.status_of(bob), Some(AttendeeStatus::Accepted));
        assert_eq!(
            with_dave.status_of(ev.organizer_id),
            Some(AttendeeStatus::Accepted)
        );
        assert_eq!(with_dave.attendees.len(), 3);
        assert!(update_notices(&ev, &ev, ev.organizer_id)
            .iter()
            .all(|(_, k)| *k == "event_updated"));
        let group = EventRecord {
            group_id: Some(Uuid::new_v4()),
            ..ev.clone()
        };
        assert!(check_new_attendees(&group, &[]).is_err());
        assert!(check_new_attendees(&ev, &vec!["x".to_string(); 101]).is_err());
        assert!(check_new_attendees(&ev, &["x".to_string()]).is_ok());
    }

    #[test]
    fn an_answer_notice_names_who_answered_and_what() {
        let (ev, guest) = accepted_event();
        let n = notice(&ev, "rsvp", guest);
        assert_eq!(n["by"], guest.to_string());
        assert_eq!(n["by_username"], "guest");
        assert_eq!(n["status"], "accepted");
        assert_eq!(n["event_id"], ev.id.to_string());
        let n = notice(&ev, "event_updated", ev.organizer_id);
        assert_eq!(n["by_username"], "org");
        assert!(n.get("status").is_none(), "{n}");
    }

    #[test]
    fn a_search_looks_at_title_location_and_description_in_any_case() {
        let mut ev = view(
            &EventRecord::sample("2030-03-04T09:00:00Z", 60, "UTC", None),
            Uuid::new_v4(),
            None,
        );
        ev.title = "Dentist".into();
        ev.location = "Clínica Norte".into();
        ev.description = "Bring the X-RAYS".into();
        for q in ["dentist", "clínica", "x-rays", "nor"] {
            assert!(matches(&ev, &search_text(q).unwrap()), "{q}");
        }
        assert!(!matches(&ev, &search_text("standup").unwrap()));
        assert_eq!(search_text("  DeNtist ").unwrap(), "dentist");
        assert!(search_text(" \t ").is_err());
        assert!(search_text(&"x".repeat(201)).is_err());
        assert!(search_text(&format!("  {}  ", "x".repeat(200))).is_ok());
    }

    fn request(title: &str) -> CreateEventRequest {
        serde_json::from_value(serde_json::json!({
            "title": title, "start": "2031-01-01T09:00:00Z",
            "end": "2031-01-01T10:00:00Z", "time_zone": "UTC"
        }))
        .unwrap()
    }

    fn person(name: &str) -> UserRecord {
        UserRecord {
            id: Uuid::new_v4(),
            username: name.into(),
            email: format!("{name}@example.org"),
            display_name: name.into(),
            time_zone: "UTC".into(),
            password_hash: String::new(),
            created_at: Utc::now(),
            add_me: Default::default(),
            admin: false,
        }
    }

    fn attendee(user: &UserRecord, status: AttendeeStatus) -> Attendee {
        Attendee {
            user_id: user.id,
            username: user.username.clone(),
            status,
        }
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

    #[test]
    fn a_key_reused_for_another_request_is_a_conflict() {
        let alice = Uuid::new_v4();
        let first = Idempotent::new(alice, Some("k1"), &request("Standup"))
            .unwrap()
            .unwrap();
        let mut ev = EventRecord::sample("2031-01-01T09:00:00Z", 60, "UTC", None);
        ev.organizer_id = alice;
        first.stamp(&mut ev);
        assert!(first.check_repeat(&ev, alice).is_ok());
        let other = Idempotent::new(alice, Some("k1"), &request("Retro"))
            .unwrap()
            .unwrap();
        let refused = other.check_repeat(&ev, alice).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Conflict);
        assert_eq!(
            first.check_repeat(&ev, Uuid::new_v4()).unwrap_err().kind,
            ErrorKind::Conflict
        );
    }

    #[test]
    fn the_organizer_comes_first_accepted_and_nobody_twice() {
        let (alice, bob) = (person("alice"), person("bob"));
        let named = vec![
            attendee(&bob, AttendeeStatus::NeedsAction),
            attendee(&alice, AttendeeStatus::Invited),
            attendee(&bob, AttendeeStatus::Invited),
        ];
        let ev = new_event(request("Standup"), &alice, named, None).unwrap();
        assert_eq!(ev.organizer_id, alice.id);
        let statuses: Vec<_> = ev.attendees.iter().map(|a| (a.user_id, a.status)).collect();
        assert_eq!(
            statuses,
            [
                (alice.id, AttendeeStatus::Accepted),
                (bob.id, AttendeeStatus::NeedsAction)
            ]
        );
        assert_eq!((ev.time_zone.as_str(), ev.rrule.as_deref()), ("UTC", None));
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        let alice = person("alice");
        let mut req = request("");
        let e = new_event(req.clone(), &alice, Vec::new(), None).unwrap_err();
        assert_eq!(
            (e.kind, e.details["field"].as_str()),
            (ErrorKind::InvalidField, Some("title"))
        );
        req.title = "ok".into();
        req.exdates = Some(vec!["2031-01-01T09:00:00Z".into(); 501]);
        let e = new_event(req, &alice, Vec::new(), None).unwrap_err();
        assert_eq!(e.details["field"].as_str(), Some("exdates"));
    }

    #[test]
    fn personal_and_group_requests_ask_different_things() {
        let mut req = request("Standup");
        assert!(check_personal(&req).is_ok());
        assert_eq!(group_of(&req).unwrap_err().kind, ErrorKind::InvalidField);
        req.attendees = Some(vec!["bob".into(); MAX_ATTENDEES + 1]);
        assert_eq!(
            check_personal(&req).unwrap_err().kind,
            ErrorKind::InvalidField
        );
        let group = Uuid::new_v4();
        req.group_id = Some(group);
        assert_eq!(
            check_personal(&req).unwrap_err().kind,
            ErrorKind::BadRequest
        );
        assert_eq!(group_of(&req).unwrap_err().kind, ErrorKind::InvalidField);
        req.attendees = Some(Vec::new());
        assert_eq!(group_of(&req).unwrap(), group);
    }

    #[test]
    fn an_update_moves_an_event_only_when_its_times_change() {
        let ev = EventRecord::sample("2031-01-01T09:00:00Z", 60, "UTC", None);
        let retitled = UpdateEventRequest {
            title: Some("Retro".into()),
            ..Default::default()
        };
        let (out, moved) = apply_update(&ev, retitled).unwrap();
        assert_eq!((out.title.as_str(), moved), ("Retro", false));
        assert_eq!((out.id, out.start), (ev.id, ev.start));
        let later = UpdateEventRequest {
            start: Some("2031-01-01T10:00:00Z".into()),
            end: Some("2031-01-01T11:00:00Z".into()),
            ..Default::default()
        };
        assert!(apply_update(&ev, later).unwrap().1);
        let weekly = UpdateEventRequest {
            rrule: Some("FREQ=WEEKLY;COUNT=3".into()),
            ..Default::default()
        };
        assert!(apply_update(&ev, weekly).unwrap().1);
        let backwards = UpdateEventRequest {
            end: Some("2031-01-01T08:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            apply_update(&ev, backwards).unwrap_err().kind,
            ErrorKind::InvalidField
        );
    }

    #[test]
    fn answers_and_departures_touch_one_attendee() {
        let (alice, bob, carol) = (person("alice"), person("bob"), person("carol"));
        let named = vec![
            attendee(&bob, AttendeeStatus::NeedsAction),
            attendee(&carol, AttendeeStatus::Invited),
        ];
        let ev = new_event(request("Standup"), &alice, named, None).unwrap();
        let ev2 = answered(&ev, bob.id, AttendeeStatus::Declined);
        assert_eq!(ev2.status_of(bob.id), Some(AttendeeStatus::Declined));
        assert_eq!(ev2.status_of(carol.id), Some(AttendeeStatus::Invited));
        let gone = without(&ev2, carol.id);
        assert_eq!(gone.status_of(carol.id), None);
        assert_eq!(gone.attendees.len(), 2);
    }

    #[test]
    fn each_change_tells_the_people_it_concerns() {
        let (alice, bob, carol) = (person("alice"), person("bob"), person("carol"));
        let named = vec![
            attendee(&bob, AttendeeStatus::Accepted),
            attendee(&carol, AttendeeStatus::Invited),
        ];
        let ev = new_event(request("Standup"), &alice, named, None).unwrap();
        assert_eq!(
            notices(&ev, alice.id, Change::Created),
            [(bob.id, "event_added"), (carol.id, "event_invited")]
        );
        assert_eq!(
            notices(&ev, alice.id, Change::Updated),
            [(bob.id, "event_updated"), (carol.id, "event_updated")]
        );
        assert_eq!(
            notices(&ev, bob.id, Change::Cancelled),
            [(alice.id, "event_cancelled"), (carol.id, "event_cancelled")]
        );
        assert_eq!(notices(&ev, bob.id, Change::Answered), [(alice.id, "rsvp")]);
        assert!(notices(&ev, alice.id, Change::Answered).is_empty());
        assert_eq!(
            notices(&without(&ev, bob.id), bob.id, Change::Left),
            [(alice.id, "attendee_left")]
        );
    }

    #[test]
    fn views_are_in_the_events_time_zone_and_name_the_series() {
        let viewer = Uuid::new_v4();
        let mut ev = EventRecord::sample("2031-07-01T09:00:00Z", 60, "Europe/Madrid", None);
        let shown = view(&ev, viewer, None);
        assert_eq!(shown.start.to_rfc3339(), "2031-07-01T11:00:00+02:00");
        assert_eq!((shown.my_status, shown.recurring_event_id), (None, None));
        ev.rrule = Some("FREQ=DAILY".into());
        let next = Occurrence {
            original: ev.start + chrono::Duration::days(1),
            start: ev.start + chrono::Duration::days(1),
            end: ev.end + chrono::Duration::days(1),
        };
        let occurrence = view(&ev, viewer, Some(next));
        assert_eq!(occurrence.start.to_rfc3339(), "2031-07-02T11:00:00+02:00");
        assert_eq!(occurrence.recurring_event_id, Some(ev.id));
        let body = with_conflicts(&ev, viewer, Vec::new());
        assert_eq!(body["event"]["id"], json!(ev.id));
        assert_eq!(body["conflicts"], json!([]));
    }

    /// All-day events: dates in, the midnights of their zone stored, dates
    /// out (occurrences across a DST change included); moved by dates,
    /// made timed only with both times; free time for conflicts.
    #[test]
    fn all_day_events_are_dates_midnight_to_midnight_in_their_zone() {
        let organizer = person("org");
        let req: CreateEventRequest = serde_json::from_value(json!({
            "title": "Holiday", "start": "2031-03-29", "end": "2031-04-01",
            "time_zone": "Europe/Madrid", "all_day": true, "rrule": "FREQ=WEEKLY;COUNT=3"
        }))
        .unwrap();
        let ev = new_event(req, &organizer, Vec::new(), None).unwrap();
        assert!(ev.all_day);
        assert_eq!(ev.start.to_rfc3339(), "2031-03-28T23:00:00+00:00");
        // The clocks go forward on the 30th: three days of 71 hours.
        assert_eq!(ev.end.to_rfc3339(), "2031-03-31T22:00:00+00:00");
        let shown = view(&ev, organizer.id, None);
        assert!(shown.all_day);
        assert_eq!(shown.start_date.unwrap().to_string(), "2031-03-29");
        assert_eq!(shown.end_date.unwrap().to_string(), "2031-04-01");
        let occurrences = recurrence::instances(&ev, ev.start, ev.start + Duration::days(15));
        let days: Vec<String> = occurrences
            .iter()
            .map(|o| {
                let v = view(&ev, organizer.id, Some(*o));
                format!("{}..{}", v.start_date.unwrap(), v.end_date.unwrap())
            })
            .collect();
        assert_eq!(
            days,
            [
                "2031-03-29..2031-04-01",
                "2031-04-05..2031-04-08",
                "2031-04-12..2031-04-15"
            ]
        );

        // Moved by its first day: the last stays.
        let (moved, rescheduled) =
            apply_update(&ev, update(json!({"start": "2031-03-30"}))).unwrap();
        assert!(rescheduled && moved.all_day);
        assert_eq!(
            view(&moved, organizer.id, None)
                .start_date
                .unwrap()
                .to_string(),
            "2031-03-30"
        );
        assert_eq!(
            view(&moved, organizer.id, None)
                .end_date
                .unwrap()
                .to_string(),
            "2031-04-01"
        );
        // Made timed: both times needed.
        let err = apply_update(&ev, update(json!({"all_day": false}))).unwrap_err();
        assert_eq!(err.details["field"], "start");
        let (timed, _) = apply_update(
            &ev,
            update(json!({"all_day": false, "start": "2031-03-29T09:00:00+01:00", "end": "2031-03-29T10:00:00+01:00"})),
        )
        .unwrap();
        assert!(!timed.all_day && view(&timed, organizer.id, None).start_date.is_none());
        // A timed event made all-day covers the days it touched.
        let (again, _) = apply_update(&timed, update(json!({"all_day": true}))).unwrap();
        assert_eq!(
            view(&again, organizer.id, None)
                .end_date
                .unwrap()
                .to_string(),
            "2031-03-30"
        );
        // Bad dates name their field; an all-day event never conflicts.
        let bad: CreateEventRequest = serde_json::from_value(json!({
            "title": "x", "start": "2031-03-29T00:00:00Z", "end": "2031-03-30",
            "time_zone": "UTC", "all_day": true
        }))
        .unwrap();
        let err = new_event(bad, &organizer, Vec::new(), None).unwrap_err();
        assert_eq!(err.details["field"], "start");
        let meeting = EventRecord::sample("2031-03-30T09:00:00Z", 60, "UTC", None);
        assert!(crate::rules::conflicts(
            &meeting,
            organizer.id,
            std::slice::from_ref(&ev),
            organizer.id
        )
        .is_empty());
        assert!(crate::rules::conflicts(
            &ev,
            organizer.id,
            std::slice::from_ref(&meeting),
            organizer.id
        )
        .is_empty());
    }

    /// A group's event for a member who joins or leaves: added once,
    /// removed once (never its organizer), and only while it is ahead.
    #[test]
    fn group_events_follow_membership_while_ahead() {
        let (ev, guest) = accepted_event();
        let carol = person("carol");
        let joins = attendee(&carol, AttendeeStatus::Accepted);
        let added = synced(&ev, carol.id, Some(joins.clone())).expect("a newcomer is added");
        assert_eq!(added.status_of(carol.id), Some(AttendeeStatus::Accepted));
        assert_eq!(synced(&added, carol.id, Some(joins)), None, "already in");
        let gone = synced(&ev, guest, None).expect("someone gone is taken out");
        assert_eq!(gone.status_of(guest), None);
        assert_eq!(synced(&gone, guest, None), None, "already out");
        assert_eq!(
            synced(&ev, ev.organizer_id, None),
            None,
            "the organizer stays"
        );

        let now = ev.start;
        assert!(still_ahead(&ev, now), "under way");
        assert!(!still_ahead(&ev, ev.end), "over");
        let mut series = ev.clone();
        series.rrule = Some("FREQ=WEEKLY".into());
        assert!(
            still_ahead(&series, ev.end + Duration::days(400)),
            "a series without end"
        );
        series.rrule = Some("FREQ=WEEKLY;COUNT=2".into());
        assert!(still_ahead(&series, ev.end + Duration::days(3)));
        assert!(
            !still_ahead(&series, ev.end + Duration::days(8)),
            "its last is over"
        );
    }

    /// One occurrence of a series changed, cancelled, or split from: the
    /// others stay, each occurrence keeps the id its rule start gives it.
    #[test]
    fn occurrences_change_on_their_own_and_series_split() {
        let viewer = Uuid::new_v4();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let ev = EventRecord::sample(
            "2031-01-06T09:00:00Z",
            60,
            "Europe/Madrid",
            Some("FREQ=WEEKLY;COUNT=4"),
        );
        let second = recurrence::instance_at(&ev, t("2031-01-13T09:00:00Z")).unwrap();
        assert!(recurrence::instance_at(&ev, t("2031-01-13T09:30:00Z")).is_none());

        // Moved and renamed on its own: listed where it is now, the rest
        // as the rule says; its id stays.
        let moved = change_occurrence(
            &ev,
            second,
            &update(json!({"start": "2031-01-14T15:00:00Z", "end": "2031-01-14T17:00:00Z", "title": "Moved"})),
        )
        .unwrap();
        let all =
            recurrence::instances(&moved, t("2031-01-01T00:00:00Z"), t("2031-02-28T00:00:00Z"));
        let starts: Vec<String> = all.iter().map(|o| o.start.to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2031-01-06T09:00:00+00:00",
                "2031-01-14T15:00:00+00:00",
                "2031-01-20T09:00:00+00:00",
                "2031-01-27T09:00:00+00:00"
            ]
        );
        let shown = view(&moved, viewer, Some(all[1]));
        assert_eq!(shown.title, "Moved");
        assert_eq!(
            shown.occurrence_id.as_deref(),
            Some(format!("{}_20310113T090000Z", ev.id).as_str())
        );
        assert_eq!(view(&moved, viewer, Some(all[2])).title, "t");
        let err =
            change_occurrence(&ev, second, &update(json!({"rrule": "FREQ=DAILY"}))).unwrap_err();
        assert_eq!(err.details["field"], "rrule");
        // Changed back: no exception left.
        let back = change_occurrence(
            &moved,
            recurrence::instance_at(&moved, second.original).unwrap(),
            &update(json!({"start": "2031-01-13T09:00:00Z", "end": "2031-01-13T10:00:00Z", "title": "t"})),
        )
        .unwrap();
        assert!(back.overrides.is_empty());

        // Cancelled on its own.
        let cancelled = cancel_occurrence(&moved, second).unwrap();
        assert!(recurrence::instance_at(&cancelled, second.original).is_none());
        assert_eq!(
            recurrence::instances(&cancelled, ev.start, t("2031-03-01T00:00:00Z")).len(),
            3
        );

        // Split at the third: two before, and the rest (COUNT 4 - 2) from it.
        let third = recurrence::instance_at(&moved, t("2031-01-20T09:00:00Z")).unwrap();
        let (before, after) =
            split_series(&moved, third, Some(update(json!({"title": "New era"})))).unwrap();
        let after = after.unwrap();
        let far = t("2032-01-01T00:00:00Z");
        assert_eq!(recurrence::instances(&before, ev.start, far).len(), 2);
        assert_eq!(
            before.overrides.len(),
            1,
            "the moved one stays in the part before"
        );
        let rest = recurrence::instances(&after, ev.start, far);
        assert_eq!(rest.len(), 2, "{:?}", after.rrule);
        assert_eq!(rest[0].start, third.original);
        assert_eq!(after.title, "New era");
        assert_ne!(after.id, ev.id);
        let (only_before, none) = split_series(&moved, third, None).unwrap();
        assert!(none.is_none());
        assert_eq!(only_before, before);

        // Occurrence ids and scopes read back.
        let (id, original) = validate::event_ref(shown.occurrence_id.as_deref().unwrap()).unwrap();
        assert_eq!((id, original), (ev.id, Some(second.original)));
        assert_eq!(
            validate::event_ref(&ev.id.to_string()).unwrap(),
            (ev.id, None)
        );
        assert!(validate::event_ref(&format!("{}_2031", ev.id)).is_err());
        assert!(validate::scope(Some("following")).unwrap());
        assert!(validate::scope(Some("all")).is_err());
    }

    /// An all-day occurrence lengthened on its own keeps its length when
    /// only its title changes, and shows its own last day.
    #[test]
    fn an_all_day_occurrence_keeps_its_own_length() {
        let organizer = person("org");
        let req: CreateEventRequest = serde_json::from_value(json!({
            "title": "Trip", "start": "2031-03-03", "end": "2031-03-04",
            "time_zone": "Europe/Madrid", "all_day": true, "rrule": "FREQ=WEEKLY;COUNT=3"
        }))
        .unwrap();
        let ev = new_event(req, &organizer, Vec::new(), None).unwrap();
        let second = recurrence::instances(&ev, ev.start, ev.start + Duration::days(30))[1];
        let long = change_occurrence(&ev, second, &update(json!({"end": "2031-03-13"}))).unwrap();
        let now = recurrence::instance_at(&long, second.original).unwrap();
        let renamed =
            change_occurrence(&long, now, &update(json!({"title": "Long trip"}))).unwrap();
        let shown = view(
            &renamed,
            organizer.id,
            recurrence::instance_at(&renamed, second.original),
        );
        assert_eq!(shown.title, "Long trip");
        assert_eq!(
            (
                shown.start_date.unwrap().to_string(),
                shown.end_date.unwrap().to_string()
            ),
            ("2031-03-10".to_string(), "2031-03-13".to_string())
        );
        let third = recurrence::instances(&renamed, ev.start, ev.start + Duration::days(30))[2];
        assert_eq!(
            view(&renamed, organizer.id, Some(third))
                .end_date
                .unwrap()
                .to_string(),
            "2031-03-18"
        );
        let err = split_series(&ev, second, Some(update(json!({"attendees": []})))).unwrap_err();
        assert_eq!(err.details["field"], "attendees", "the series' own");
    }

    #[test]
    fn an_origin_replaces_exceptions_and_keeps_external_people() {
        use crate::model::ExternalAttendee;
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let mut ev = EventRecord::sample(
            "2030-03-04T09:00:00Z",
            60,
            "UTC",
            Some("FREQ=DAILY;COUNT=5"),
        );
        // An exception from before: replaced by what the file says.
        ev.overrides.insert(
            at("2030-03-06T09:00:00Z"),
            OccurrenceChange {
                start: at("2030-03-06T10:00:00Z"),
                end: at("2030-03-06T11:00:00Z"),
                title: None,
                description: None,
                location: None,
            },
        );
        let origin = Origin {
            uid: "u@x".into(),
            dav_name: Some("u.ics".into()),
            external: vec![ExternalAttendee {
                email: "zoe@elsewhere.org".into(),
                name: String::new(),
                status: AttendeeStatus::Accepted,
            }],
            overrides: vec![
                (
                    at("2030-03-05T09:00:00Z"),
                    UpdateEventRequest {
                        title: Some("Moved".into()),
                        start: Some("2030-03-05T12:00:00Z".into()),
                        end: Some("2030-03-05T13:00:00Z".into()),
                        ..Default::default()
                    },
                ),
                // No occurrence starts then: left out.
                (at("2030-03-05T10:00:00Z"), UpdateEventRequest::default()),
            ],
            cancelled: vec![at("2030-03-07T09:00:00Z")],
            extra: vec!["CATEGORIES:Work".into()],
            reminders: Some(vec![15]),
        };
        let out = with_origin(&ev, &origin).unwrap();
        assert_eq!(out.ical.as_ref().unwrap().uid, "u@x");
        assert_eq!(out.external_attendees.len(), 1);
        assert_eq!(out.overrides.len(), 1);
        let moved = &out.overrides[&at("2030-03-05T09:00:00Z")];
        assert_eq!(
            (moved.start, moved.title.as_deref()),
            (at("2030-03-05T12:00:00Z"), Some("Moved"))
        );
        assert_eq!(out.exdates, vec![at("2030-03-07T09:00:00Z")]);
        assert_eq!(out.ical.as_ref().unwrap().extra, ["CATEGORIES:Work"]);
        assert_eq!(out.reminders[&out.organizer_id], [15]);
    }
}
