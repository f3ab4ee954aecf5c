//! iCalendar (RFC 5545) in and out, pure: events written as VEVENTs (with
//! a VTIMEZONE for every zone they use) and VEVENTs read back as requests
//! of the public API, so what arrives from a file or a CalDAV client goes
//! through the same checks and rules as JSON.
//!
//! The format itself (escaping, folding, the parser) is the `icalendar`
//! crate's; this module only maps fields.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::{OffsetComponents, OffsetName, Tz};
use icalendar::parser;
use icalendar::{
    CalendarDateTime, Component, DatePerhapsTime, Event as VEvent, EventLike, Property,
};
use uuid::Uuid;

use crate::api::{CreateEventRequest, UpdateEventRequest};
use crate::error::{ApiError, ApiResult};
use crate::model::{AttendeeStatus, EventRecord, ExternalAttendee, Visibility};
use crate::recurrence;

/// Most VEVENTs (series and their changed occurrences) one file may hold.
pub const MAX_EVENTS: usize = 2000;
/// Namespace of the UIDs of busy blocks.
const BUSY_UIDS: Uuid = Uuid::from_u128(0x3c5e_21a8_77d0_4b8e_a1f4_6d02_9b7c_e815);
/// Product id written in every calendar.
const PRODID: &str = "-//Agenda//Agenda 1//EN";

/// How an event appears in a calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// Everything it says.
    Details,
    /// Only when it happens: `Busy`, with a label (whose time it is).
    Busy { label: String },
}

/// One event of a calendar being written.
pub struct Entry<'a> {
    pub ev: &'a EventRecord,
    pub shown: Shown,
    /// Whose reminders to write as VALARMs (a CalDAV calendar's owner).
    pub alarms_for: Option<Uuid>,
}

/// People an export names by their own email (the viewer), by account
/// id: username and email. Everyone else is written with their address
/// here ([`address_of`]).
pub type People = HashMap<Uuid, (String, String)>;

/// The domain of the addresses people with an account here are written
/// with in calendars others see (`.invalid`: never delivered).
pub const ADDRESS_DOMAIN: &str = "users.agenda.invalid";

/// The address `username` is written with for others.
pub fn address_of(username: &str) -> String {
    format!("{}@{ADDRESS_DOMAIN}", username.to_lowercase())
}

/// The username an address here names (None for any other address).
pub fn username_in(address: &str) -> Option<&str> {
    let (user, domain) = address.rsplit_once('@')?;
    domain.eq_ignore_ascii_case(ADDRESS_DOMAIN).then_some(user)
}

/// Whether `address` is the person's: their email or their address here.
pub fn is_address_of(address: &str, username: &str, email: &str) -> bool {
    address.eq_ignore_ascii_case(email)
        || username_in(address).is_some_and(|u| u.eq_ignore_ascii_case(username))
}

/// The UID an event is written with: the one it came with, else its id.
pub fn uid(ev: &EventRecord) -> String {
    ev.ical
        .as_ref()
        .map_or_else(|| ev.id.to_string(), |o| o.uid.clone())
}

/// A whole VCALENDAR named `name` holding `entries`.
pub fn calendar(name: &str, entries: &[Entry], people: &People) -> String {
    let mut cal = icalendar::Calendar::empty();
    cal.append_property(Property::new("VERSION", "2.0"));
    cal.append_property(Property::new("PRODID", PRODID));
    cal.append_property(Property::new("CALSCALE", "GREGORIAN"));
    if !name.is_empty() {
        cal.name(name);
    }
    for (i, e) in entries.iter().enumerate() {
        for (j, mut v) in vevents(e, people).into_iter().enumerate() {
            if j == 0 && e.shown == Shown::Details && !extra_of(e.ev).is_empty() {
                // Kept as the client wrote them (already escaped): put in
                // by hand below, not through the crate's escaping.
                v.add_property(EXTRA_MARK, i.to_string());
            }
            cal.push(v);
        }
    }
    let mut text = with_kept_lines(&cal.to_string(), entries);
    if entries.iter().any(|e| e.alarms_for.is_some()) {
        text = without_alarm_stamps(&text);
    }
    // The crate writes no VTIMEZONE of its own (its components gain a UID
    // and DTSTAMP, which a VTIMEZONE must not have): they go in before
    // the first VEVENT.
    let zones: String = zones(entries.iter().map(|e| e.ev))
        .into_iter()
        .map(|(tz, a, b)| vtimezone(tz, a, b))
        .collect();
    // A line of its own (a calendar's name may hold the words).
    let at = text
        .find("\r\nBEGIN:VEVENT\r\n")
        .or_else(|| text.find("\r\nEND:VCALENDAR"))
        .map_or(text.len(), |i| i + 2);
    format!("{}{zones}{}", &text[..at], &text[at..])
}

/// Marks where an event's kept properties go (see [`calendar`]).
const EXTRA_MARK: &str = "X-AGENDA-KEPT";

/// `text` without the UID and DTSTAMP the crate gives each VALARM anew
/// at every rendering (RFC 5545 asks neither of an alarm): the same
/// version of an event must be the same bytes, as its ETag says.
fn without_alarm_stamps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_alarm = false;
    for line in text.split_inclusive("\r\n") {
        match line.trim_end() {
            "BEGIN:VALARM" => in_alarm = true,
            "END:VALARM" => in_alarm = false,
            l if in_alarm && (l.starts_with("UID:") || l.starts_with("DTSTAMP:")) => continue,
            _ => {}
        }
        out.push_str(line);
    }
    out
}

/// `text` with each mark line replaced by the kept lines of its entry, in
/// one pass.
fn with_kept_lines(text: &str, entries: &[Entry]) -> String {
    let mark = format!("\r\n{EXTRA_MARK}:");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&mark) {
        out.push_str(&rest[..at + 2]);
        let after = &rest[at + mark.len()..];
        let end = after.find("\r\n").unwrap_or(after.len());
        if let Some(e) = after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| entries.get(i))
        {
            for line in extra_of(e.ev) {
                out.push_str(&fold(line));
            }
        }
        rest = after.get(end + 2..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

fn extra_of(ev: &EventRecord) -> &[String] {
    ev.ical.as_ref().map_or(&[], |o| o.extra.as_slice())
}

/// A content line folded at 75 octets (RFC 5545 3.1), with its CRLF.
fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
    out
}

/// One event as a VCALENDAR of its own (a CalDAV resource).
pub fn resource(entry: &Entry, people: &People) -> String {
    calendar("", std::slice::from_ref(entry), people)
}

/// The zones `events` use (UTC needs none) and the years each must cover.
fn zones<'a>(events: impl Iterator<Item = &'a EventRecord>) -> Vec<(Tz, i32, i32)> {
    let mut years: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    for ev in events {
        if ev.time_zone == "UTC" {
            continue;
        }
        let first = ev.start.year() - 1;
        // A series runs on: the zone's rules for a good while after its
        // start (clients use their own zone data beyond, by the TZID).
        let last = if ev.rrule.is_some() {
            ev.start.year() + 10
        } else {
            ev.end.year()
        };
        let e = years.entry(ev.time_zone.clone()).or_insert((first, last));
        e.0 = e.0.min(first);
        e.1 = e.1.max(last);
    }
    years
        .into_iter()
        .filter_map(|(name, (a, b))| Some((name.parse().ok()?, a, b.min(2100))))
        .collect()
}

/// A VTIMEZONE for `tz` listing every offset change from `first` to
/// `last` (years), each as an observance of its own. Its values are
/// numbers and an IANA name: nothing to escape or fold.
fn vtimezone(tz: Tz, first: i32, last: i32) -> String {
    let offset_at = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc());
    let same = |a: &chrono_tz::TzOffset, b: &chrono_tz::TzOffset| {
        a.fix() == b.fix() && a.abbreviation() == b.abbreviation()
    };
    let year = |y: i32| {
        Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    };
    let (start, end) = (year(first), year(last + 1));
    let mut out = format!("BEGIN:VTIMEZONE\r\nTZID:{}\r\n", tz.name());
    let mut t = start;
    let mut before = offset_at(t);
    out.push_str(&observance(&before, &before, t));
    while t < end {
        let next = t + Duration::days(1);
        let after = offset_at(next);
        if !same(&after, &before) {
            // The change lies in (t, next]: find its second.
            let (mut lo, mut hi) = (t, next);
            while hi - lo > Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if same(&offset_at(mid), &before) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            out.push_str(&observance(&before, &after, hi));
        }
        before = after;
        t = next;
    }
    out.push_str("END:VTIMEZONE\r\n");
    out
}

/// One observance: from `at` on, `to` replaces `from`.
fn observance(from: &chrono_tz::TzOffset, to: &chrono_tz::TzOffset, at: DateTime<Utc>) -> String {
    let kind = if to.dst_offset().is_zero() {
        "STANDARD"
    } else {
        "DAYLIGHT"
    };
    // DTSTART is the onset in the local time in force before it.
    let local = at.naive_utc() + Duration::seconds(from.fix().local_minus_utc().into());
    let name = to
        .abbreviation()
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
        })
        .map(|n| format!("TZNAME:{n}\r\n"))
        .unwrap_or_default();
    format!(
        "BEGIN:{kind}\r\nDTSTART:{}\r\nTZOFFSETFROM:{}\r\nTZOFFSETTO:{}\r\n{name}END:{kind}\r\n",
        local.format("%Y%m%dT%H%M%S"),
        utc_offset(from.fix().local_minus_utc()),
        utc_offset(to.fix().local_minus_utc()),
    )
}

fn utc_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.abs();
    if s % 60 == 0 {
        format!("{sign}{:02}{:02}", s / 3600, s % 3600 / 60)
    } else {
        format!("{sign}{:02}{:02}{:02}", s / 3600, s % 3600 / 60, s % 60)
    }
}

/// `t` as iCalendar writes it for an event in `zone`: UTC with `Z`, else
/// local time with a TZID.
fn when(t: DateTime<Utc>, zone: &str) -> CalendarDateTime {
    match zone.parse::<Tz>() {
        Ok(tz) if zone != "UTC" => CalendarDateTime::WithTimezone {
            date_time: t.with_timezone(&tz).naive_local(),
            tzid: zone.to_string(),
        },
        _ => CalendarDateTime::Utc(t),
    }
}

/// `t` as a property value (and its TZID, if any).
fn when_value(t: DateTime<Utc>, zone: &str, all_day: bool) -> (String, Option<String>) {
    let tz: Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    if all_day {
        return (t.with_timezone(&tz).format("%Y%m%d").to_string(), None);
    }
    if zone == "UTC" {
        return (t.format("%Y%m%dT%H%M%SZ").to_string(), None);
    }
    (
        t.with_timezone(&tz)
            .naive_local()
            .format("%Y%m%dT%H%M%S")
            .to_string(),
        Some(zone.to_string()),
    )
}

/// A DATE-TIME (or DATE) property `name` at `t`.
fn time_property(name: &str, t: DateTime<Utc>, zone: &str, all_day: bool) -> Property {
    let (value, tzid) = when_value(t, zone, all_day);
    let mut p = Property::new(name, value);
    if all_day {
        p.add_parameter("VALUE", "DATE");
    }
    if let Some(tzid) = tzid {
        p.add_parameter("TZID", &tzid);
    }
    p
}

fn partstat(status: AttendeeStatus) -> &'static str {
    match status {
        AttendeeStatus::Accepted => "ACCEPTED",
        AttendeeStatus::Declined => "DECLINED",
        AttendeeStatus::Tentative => "TENTATIVE",
        AttendeeStatus::NeedsAction | AttendeeStatus::Invited => "NEEDS-ACTION",
    }
}

fn person(name: &str, cn: &str, email: &str) -> Property {
    let mut p = Property::new(name, format!("mailto:{email}"));
    if !cn.is_empty() {
        p.add_parameter("CN", cn);
    }
    p
}

/// The VEVENTs of one entry: the series (or one-off event) and each
/// occurrence changed on its own.
fn vevents(entry: &Entry, people: &People) -> Vec<VEvent> {
    let ev = entry.ev;
    let uid = match entry.shown {
        Shown::Details => uid(ev),
        // Nothing of the hidden event, not even its id.
        Shown::Busy { .. } => format!("busy-{}", Uuid::new_v5(&BUSY_UIDS, ev.id.as_bytes())),
    };
    let mut master = VEvent::new();
    master.uid(&uid);
    common(&mut master, ev, ev.start, ev.end);
    if let Some(rule) = &ev.rrule {
        master.add_property("RRULE", rule);
    }
    for x in &ev.exdates {
        master.append_multi_property(time_property("EXDATE", *x, &ev.time_zone, ev.all_day));
    }
    let mut out = vec![];
    match &entry.shown {
        Shown::Busy { label } => {
            master.summary(label);
            master.class(icalendar::Class::Private);
            out.push(master);
            // Moved occurrences still show when they happen now.
            for (original, change) in &ev.overrides {
                let mut o = VEvent::new();
                o.uid(&uid).summary(label).class(icalendar::Class::Private);
                common(&mut o, ev, change.start, change.end);
                o.append_property(time_property(
                    "RECURRENCE-ID",
                    *original,
                    &ev.time_zone,
                    ev.all_day,
                ));
                out.push(o);
            }
            return out;
        }
        Shown::Details => {}
    }
    details(
        &mut master,
        ev,
        &ev.title,
        &ev.description,
        &ev.location,
        people,
    );
    let mine = entry.alarms_for.and_then(|u| ev.reminders.get(&u));
    for m in mine.into_iter().flatten() {
        master.alarm(icalendar::Alarm::display(
            &ev.title,
            -Duration::minutes(i64::from(*m)),
        ));
    }
    out.push(master);
    for (original, change) in &ev.overrides {
        let mut o = VEvent::new();
        o.uid(&uid);
        common(&mut o, ev, change.start, change.end);
        o.append_property(time_property(
            "RECURRENCE-ID",
            *original,
            &ev.time_zone,
            ev.all_day,
        ));
        details(
            &mut o,
            ev,
            change.title.as_deref().unwrap_or(&ev.title),
            change.description.as_deref().unwrap_or(&ev.description),
            change.location.as_deref().unwrap_or(&ev.location),
            people,
        );
        out.push(o);
    }
    out
}

/// What every VEVENT of `ev` carries: times, stamps, transparency.
fn common(v: &mut VEvent, ev: &EventRecord, start: DateTime<Utc>, end: DateTime<Utc>) {
    if ev.all_day {
        let tz: Tz = ev.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let day = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();
        // Midnight to midnight may be 23 or 25 hours across DST.
        let days = ((end - start).num_hours() + 12).div_euclid(24).max(1);
        v.starts(day(start));
        v.ends(day(start) + Duration::days(days));
        // All-day events are free time here (no conflicts, not busy).
        v.add_property("TRANSP", "TRANSPARENT");
    } else {
        v.starts(when(start, &ev.time_zone));
        v.ends(when(end, &ev.time_zone));
        v.add_property("TRANSP", "OPAQUE");
    }
    // Stable, so the same version of an event is the same bytes (its ETag
    // names them).
    v.timestamp(ev.created_at);
    v.add_property(
        "CREATED",
        ev.created_at.format("%Y%m%dT%H%M%SZ").to_string(),
    );
}

fn details(
    v: &mut VEvent,
    ev: &EventRecord,
    title: &str,
    description: &str,
    location: &str,
    people: &People,
) {
    v.summary(title);
    if !description.is_empty() {
        v.description(description);
    }
    if !location.is_empty() {
        v.location(location);
    }
    v.class(match ev.visibility {
        Visibility::Private => icalendar::Class::Private,
        Visibility::Default => icalendar::Class::Public,
    });
    // Emails are private: people appear by their address here, but the
    // viewer by their own email (how a calendar app knows which attendee
    // it is).
    let named = |id: Uuid, username: &str| {
        people
            .get(&id)
            .cloned()
            .unwrap_or_else(|| (username.to_string(), address_of(username)))
    };
    let organizer = ev.attendees.iter().find(|a| a.user_id == ev.organizer_id);
    if let Some(o) = organizer {
        let (name, email) = named(o.user_id, &o.username);
        v.append_property(person("ORGANIZER", &name, &email));
    }
    if ev.attendees.len() + ev.external_attendees.len() > 1 {
        for a in &ev.attendees {
            let (name, email) = named(a.user_id, &a.username);
            let mut p = person("ATTENDEE", &name, &email);
            p.add_parameter("PARTSTAT", partstat(a.status));
            p.add_parameter("ROLE", "REQ-PARTICIPANT");
            v.append_multi_property(p);
        }
        for a in &ev.external_attendees {
            let mut p = person("ATTENDEE", &a.name, &a.email);
            p.add_parameter("PARTSTAT", partstat(a.status));
            p.add_parameter("ROLE", "REQ-PARTICIPANT");
            v.append_multi_property(p);
        }
    }
}

// ---------------------------------------------------------------------
// Reading

/// One event of a file, as requests of the public API.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub uid: String,
    /// The series (or one-off event). `attendees` is left empty: see
    /// [`Parsed::attendees`].
    pub request: CreateEventRequest,
    /// Every attendee but the organizer, by email.
    pub attendees: Vec<ExternalAttendee>,
    /// Occurrences changed on their own: the start the rule gives each,
    /// and the change.
    pub overrides: Vec<(DateTime<Utc>, UpdateEventRequest)>,
    /// Occurrences a RECURRENCE-ID cancels (STATUS:CANCELLED).
    pub cancelled: Vec<DateTime<Utc>>,
    /// The writer's reminders, from its VALARMs (minutes before).
    pub reminders: Vec<u32>,
    /// The series' properties Agenda has no field for, as written.
    pub extra: Vec<String>,
    /// Something in it could not be kept (an alarm at a fixed time, an
    /// RDATE, a property of a changed occurrence...): what is stored is
    /// not what was sent.
    pub lossy: bool,
}

/// A VEVENT left out of an import, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    pub uid: String,
    pub reason: String,
}

/// The events of an iCalendar text: each parsed, or skipped with a
/// reason. Floating times (no zone) are read in `default_zone`. A text
/// that is not iCalendar at all is a 400.
pub fn parse(text: &str, default_zone: &str) -> ApiResult<Vec<Result<Parsed, Skipped>>> {
    let unfolded = parser::unfold(text);
    if !unfolded
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("BEGIN:VCALENDAR")
    {
        return Err(ApiError::bad_request(
            "not an iCalendar file: it should start with BEGIN:VCALENDAR",
        ));
    }
    let cal = parser::read_calendar(&unfolded).map_err(|e| {
        // The parser's own words name its internals: logged, not sent.
        tracing::debug!(error = %first_line(&e), "unreadable iCalendar text");
        ApiError::bad_request(
            "the iCalendar file could not be read: every line must be NAME:VALUE (RFC 5545), BEGIN and END in pairs",
        )
    })?;
    let vcalendars: Vec<&parser::Component> = cal
        .components
        .iter()
        .filter(|c| c.name.as_str().eq_ignore_ascii_case("VCALENDAR"))
        .collect();
    let components: Vec<&parser::Component> = if vcalendars.is_empty() {
        cal.components.iter().collect()
    } else {
        vcalendars
            .iter()
            .flat_map(|c| c.components.iter())
            .collect()
    };
    let vevents: Vec<&parser::Component> = components
        .into_iter()
        .filter(|c| c.name.as_str().eq_ignore_ascii_case("VEVENT"))
        .collect();
    if vevents.is_empty() {
        return Err(ApiError::bad_request(
            "the file holds no VEVENT (an iCalendar file: BEGIN:VCALENDAR ... BEGIN:VEVENT ...)",
        ));
    }
    // Series first, then the occurrences changed on their own, by UID.
    let mut masters: Vec<(String, VEvent, &parser::Component)> = Vec::new();
    let mut changed: HashMap<String, Vec<VEvent>> = HashMap::new();
    let mut out = Vec::new();
    for (i, c) in vevents.into_iter().enumerate() {
        if i >= MAX_EVENTS {
            out.push(Err(Skipped {
                uid: c
                    .find_prop("UID")
                    .map_or_else(String::new, |p| p.val.to_string()),
                reason: format!("more than {MAX_EVENTS} events in one file"),
            }));
            continue;
        }
        let v: VEvent = match icalendar::CalendarComponent::from(c.clone()) {
            icalendar::CalendarComponent::Event(v) => v,
            _ => continue,
        };
        let Some(uid) = v.get_uid().map(str::to_string).filter(|u| !u.is_empty()) else {
            out.push(Err(Skipped {
                uid: String::new(),
                reason: "no UID".into(),
            }));
            continue;
        };
        if v.property_value("RECURRENCE-ID").is_some() {
            changed.entry(uid).or_default().push(v);
        } else {
            masters.push((uid, v, c));
        }
    }
    let mut seen = BTreeSet::new();
    for (uid, master, raw) in masters {
        if !seen.insert(uid.clone()) {
            out.push(Err(Skipped {
                uid,
                reason: "a second event with the same UID".into(),
            }));
            continue;
        }
        let overrides = changed.remove(&uid).unwrap_or_default();
        out.push(
            series(&uid, &master, raw, &overrides, default_zone).map_err(|reason| Skipped {
                uid: uid.clone(),
                reason,
            }),
        );
    }
    for (uid, _) in changed {
        out.push(Err(Skipped {
            uid,
            reason: "a changed occurrence (RECURRENCE-ID) without its series".into(),
        }));
    }
    Ok(out)
}

fn first_line(e: &str) -> String {
    e.lines().next().unwrap_or("").chars().take(200).collect()
}

/// An instant of a parsed DTSTART and the like, with the zone it names.
enum Time {
    Date(NaiveDate),
    At(DateTime<Utc>, String),
}

/// A zone name as calendar apps write TZIDs: an IANA name, perhaps
/// behind a vendor prefix (`/mozilla.org/20050126_1/Europe/Madrid`).
fn zone_named(tzid: &str) -> Option<Tz> {
    let tzid = tzid.trim_matches('"');
    if let Ok(tz) = tzid.parse() {
        return Some(tz);
    }
    let parts: Vec<&str> = tzid.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(tz) = (1..parts.len()).find_map(|i| parts[i..].join("/").parse().ok()) {
        return Some(tz);
    }
    // Outlook and Exchange write Windows names.
    WINDOWS_ZONES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(tzid))
        .and_then(|(_, iana)| iana.parse().ok())
}

/// Windows time zone names and the IANA zone each stands for (CLDR's
/// windowsZones, territory 001).
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("Dateline Standard Time", "Etc/GMT+12"),
    ("UTC-11", "Etc/GMT+11"),
    ("Aleutian Standard Time", "America/Adak"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Marquesas Standard Time", "Pacific/Marquesas"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("UTC-09", "Etc/GMT+9"),
    ("Pacific Standard Time (Mexico)", "America/Tijuana"),
    ("UTC-08", "Etc/GMT+8"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time (Mexico)", "America/Mazatlan"),
    ("Mountain Standard Time", "America/Denver"),
    ("Yukon Standard Time", "America/Whitehorse"),
    ("Central America Standard Time", "America/Guatemala"),
    ("Central Standard Time", "America/Chicago"),
    ("Easter Island Standard Time", "Pacific/Easter"),
    ("Central Standard Time (Mexico)", "America/Mexico_City"),
    ("Canada Central Standard Time", "America/Regina"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("Eastern Standard Time (Mexico)", "America/Cancun"),
    ("Eastern Standard Time", "America/New_York"),
    ("Haiti Standard Time", "America/Port-au-Prince"),
    ("Cuba Standard Time", "America/Havana"),
    ("US Eastern Standard Time", "America/Indiana/Indianapolis"),
    ("Turks And Caicos Standard Time", "America/Grand_Turk"),
    ("Paraguay Standard Time", "America/Asuncion"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("Venezuela Standard Time", "America/Caracas"),
    ("Central Brazilian Standard Time", "America/Cuiaba"),
    ("SA Western Standard Time", "America/La_Paz"),
    ("Pacific SA Standard Time", "America/Santiago"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("Tocantins Standard Time", "America/Araguaina"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("SA Eastern Standard Time", "America/Cayenne"),
    ("Argentina Standard Time", "America/Argentina/Buenos_Aires"),
    ("Greenland Standard Time", "America/Nuuk"),
    ("Montevideo Standard Time", "America/Montevideo"),
    ("Magallanes Standard Time", "America/Punta_Arenas"),
    ("Saint Pierre Standard Time", "America/Miquelon"),
    ("Bahia Standard Time", "America/Bahia"),
    ("UTC-02", "Etc/GMT+2"),
    ("Azores Standard Time", "Atlantic/Azores"),
    ("Cape Verde Standard Time", "Atlantic/Cape_Verde"),
    ("UTC", "Etc/UTC"),
    ("Coordinated Universal Time", "Etc/UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("Sao Tome Standard Time", "Africa/Sao_Tome"),
    ("Morocco Standard Time", "Africa/Casablanca"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("W. Central Africa Standard Time", "Africa/Lagos"),
    ("Jordan Standard Time", "Asia/Amman"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Middle East Standard Time", "Asia/Beirut"),
    ("Egypt Standard Time", "Africa/Cairo"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("Syria Standard Time", "Asia/Damascus"),
    ("West Bank Standard Time", "Asia/Hebron"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("FLE Standard Time", "Europe/Kyiv"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("South Sudan Standard Time", "Africa/Juba"),
    ("Kaliningrad Standard Time", "Europe/Kaliningrad"),
    ("Sudan Standard Time", "Africa/Khartoum"),
    ("Libya Standard Time", "Africa/Tripoli"),
    ("Namibia Standard Time", "Africa/Windhoek"),
    ("Arabic Standard Time", "Asia/Baghdad"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Arab Standard Time", "Asia/Riyadh"),
    ("Belarus Standard Time", "Europe/Minsk"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("E. Africa Standard Time", "Africa/Nairobi"),
    ("Volgograd Standard Time", "Europe/Volgograd"),
    ("Iran Standard Time", "Asia/Tehran"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Astrakhan Standard Time", "Europe/Astrakhan"),
    ("Azerbaijan Standard Time", "Asia/Baku"),
    ("Russia Time Zone 3", "Europe/Samara"),
    ("Mauritius Standard Time", "Indian/Mauritius"),
    ("Saratov Standard Time", "Europe/Saratov"),
    ("Georgian Standard Time", "Asia/Tbilisi"),
    ("Caucasus Standard Time", "Asia/Yerevan"),
    ("Afghanistan Standard Time", "Asia/Kabul"),
    ("West Asia Standard Time", "Asia/Tashkent"),
    ("Ekaterinburg Standard Time", "Asia/Yekaterinburg"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("Qyzylorda Standard Time", "Asia/Qyzylorda"),
    ("India Standard Time", "Asia/Kolkata"),
    ("Sri Lanka Standard Time", "Asia/Colombo"),
    ("Nepal Standard Time", "Asia/Kathmandu"),
    ("Central Asia Standard Time", "Asia/Almaty"),
    ("Bangladesh Standard Time", "Asia/Dhaka"),
    ("Omsk Standard Time", "Asia/Omsk"),
    ("Myanmar Standard Time", "Asia/Yangon"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("Altai Standard Time", "Asia/Barnaul"),
    ("W. Mongolia Standard Time", "Asia/Hovd"),
    ("North Asia Standard Time", "Asia/Krasnoyarsk"),
    ("N. Central Asia Standard Time", "Asia/Novosibirsk"),
    ("Tomsk Standard Time", "Asia/Tomsk"),
    ("China Standard Time", "Asia/Shanghai"),
    ("North Asia East Standard Time", "Asia/Irkutsk"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("W. Australia Standard Time", "Australia/Perth"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("Ulaanbaatar Standard Time", "Asia/Ulaanbaatar"),
    ("Aus Central W. Standard Time", "Australia/Eucla"),
    ("Transbaikal Standard Time", "Asia/Chita"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("North Korea Standard Time", "Asia/Pyongyang"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("Yakutsk Standard Time", "Asia/Yakutsk"),
    ("Cen. Australia Standard Time", "Australia/Adelaide"),
    ("AUS Central Standard Time", "Australia/Darwin"),
    ("E. Australia Standard Time", "Australia/Brisbane"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("West Pacific Standard Time", "Pacific/Port_Moresby"),
    ("Tasmania Standard Time", "Australia/Hobart"),
    ("Vladivostok Standard Time", "Asia/Vladivostok"),
    ("Lord Howe Standard Time", "Australia/Lord_Howe"),
    ("Bougainville Standard Time", "Pacific/Bougainville"),
    ("Russia Time Zone 10", "Asia/Srednekolymsk"),
    ("Magadan Standard Time", "Asia/Magadan"),
    ("Norfolk Standard Time", "Pacific/Norfolk"),
    ("Sakhalin Standard Time", "Asia/Sakhalin"),
    ("Central Pacific Standard Time", "Pacific/Guadalcanal"),
    ("Russia Time Zone 11", "Asia/Kamchatka"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("UTC+12", "Etc/GMT-12"),
    ("Fiji Standard Time", "Pacific/Fiji"),
    ("Chatham Islands Standard Time", "Pacific/Chatham"),
    ("UTC+13", "Etc/GMT-13"),
    ("Tonga Standard Time", "Pacific/Tongatapu"),
    ("Samoa Standard Time", "Pacific/Apia"),
    ("Line Islands Standard Time", "Pacific/Kiritimati"),
];

fn resolve(t: DatePerhapsTime, default_zone: &str) -> Result<Time, String> {
    match t {
        DatePerhapsTime::Date(d) => Ok(Time::Date(d)),
        DatePerhapsTime::DateTime(CalendarDateTime::Utc(t)) => Ok(Time::At(t, "UTC".into())),
        DatePerhapsTime::DateTime(CalendarDateTime::Floating(n)) => {
            local(n, default_zone).map(|t| Time::At(t, default_zone.into()))
        }
        DatePerhapsTime::DateTime(CalendarDateTime::WithTimezone { date_time, tzid }) => {
            let tz = zone_named(&tzid).ok_or_else(|| format!("unknown time zone {tzid:?}"))?;
            local(date_time, tz.name()).map(|t| Time::At(t, tz.name().into()))
        }
    }
}

/// `n` read in `zone` (in a DST gap: as if the clock had gone on).
fn local(n: NaiveDateTime, zone: &str) -> Result<DateTime<Utc>, String> {
    let tz: Tz = zone
        .parse()
        .map_err(|_| format!("unknown time zone {zone:?}"))?;
    tz.from_local_datetime(&n)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(n + Duration::hours(1))).earliest())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{n} does not exist in {zone}"))
}

fn text(v: &VEvent, name: &str) -> Option<String> {
    v.properties()
        .get(name)
        .map(|p| unescape(p.value()))
        .filter(|s| !s.is_empty())
}

/// Undoes RFC 5545 TEXT escaping (the parser keeps values as written).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') | Some('N') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The times of `v` (DTSTART, and DTEND or DURATION, or the defaults of
/// RFC 5545 3.6.1): start, end, zone and whether it is all-day.
fn span_of(v: &VEvent, default_zone: &str) -> Result<(Time, Time), String> {
    let start = v.get_start().ok_or("no DTSTART")?;
    let start = resolve(start, default_zone)?;
    let end = match v.get_end() {
        Some(e) => resolve(e, default_zone)?,
        None => {
            let length = v
                .properties()
                .get("DURATION")
                .map(|p| duration(p.value()))
                .transpose()?;
            // `duration` keeps lengths to ten years: no overflow here.
            let days = length.map_or(1, |l| l.num_days().max(1));
            match &start {
                Time::Date(d) => Time::Date(
                    d.checked_add_signed(Duration::days(days))
                        .ok_or("DURATION runs past the calendar")?,
                ),
                Time::At(t, z) => Time::At(
                    t.checked_add_signed(length.unwrap_or(Duration::zero()))
                        .ok_or("DURATION runs past the calendar")?,
                    z.clone(),
                ),
            }
        }
    };
    Ok((start, end))
}

/// An RFC 5545 DURATION (`PT1H30M`, `P1D`, `P2W`).
fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("DURATION {s:?} is not a duration");
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let rest = rest.strip_prefix('P').ok_or_else(bad)?;
    let mut total = Duration::zero();
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' => {}
            'W' | 'D' | 'H' | 'M' | 'S' => {
                // Ten years of seconds fit any unit: larger is refused
                // before any arithmetic can overflow.
                let n: i64 = number
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_DURATION.num_seconds())
                    .ok_or_else(bad)?;
                number.clear();
                let part = match c {
                    'W' => Duration::try_weeks(n),
                    'D' => Duration::try_days(n),
                    'H' => Duration::try_hours(n),
                    'M' => Duration::try_minutes(n),
                    _ => Duration::try_seconds(n),
                };
                total = part
                    .and_then(|p| total.checked_add(&p))
                    .filter(|t| *t <= MAX_DURATION)
                    .ok_or_else(|| format!("DURATION {s:?} is longer than ten years"))?;
            }
            _ => return Err(bad()),
        }
    }
    Ok(total * sign)
}

/// The longest DURATION (or alarm offset) read.
const MAX_DURATION: Duration = Duration::days(3660);

/// A request field for `t`: a date for an all-day event, else RFC 3339.
fn field(t: &Time) -> String {
    match t {
        Time::Date(d) => d.to_string(),
        Time::At(t, _) => t.to_rfc3339(),
    }
}

/// Properties of a series mapped to fields (or written by us).
const MAPPED: &[&str] = &[
    "UID",
    "DTSTART",
    "DTEND",
    "DURATION",
    "RRULE",
    "EXDATE",
    "SUMMARY",
    "DESCRIPTION",
    "LOCATION",
    "CLASS",
    "ORGANIZER",
    "ATTENDEE",
    "DTSTAMP",
    "CREATED",
    "LAST-MODIFIED",
    "SEQUENCE",
    "TRANSP",
];
/// Properties with a meaning Agenda cannot keep (more occurrences).
const UNSUPPORTED: &[&str] = &["RDATE", "EXRULE"];
/// Properties of a changed occurrence that are mapped.
const MAPPED_OCCURRENCE: &[&str] = &[
    "UID",
    "RECURRENCE-ID",
    "DTSTART",
    "DTEND",
    "DURATION",
    "SUMMARY",
    "DESCRIPTION",
    "LOCATION",
    "DTSTAMP",
    "CREATED",
    "LAST-MODIFIED",
    "SEQUENCE",
    "ORGANIZER",
    "ATTENDEE",
    "CLASS",
    "TRANSP",
    "STATUS",
    "RRULE",
    "EXDATE",
];
/// Most kept properties of one event, and their total size.
const MAX_EXTRA: usize = 50;
const MAX_EXTRA_BYTES: usize = 8192;

/// A parsed property as its (unfolded) content line.
fn content_line(p: &parser::Property) -> String {
    let mut line = p.name.as_str().to_string();
    for param in &p.params {
        line.push(';');
        line.push_str(param.key.as_str());
        if let Some(v) = &param.val {
            line.push('=');
            line.push_str(v.as_str());
        }
    }
    line.push(':');
    line.push_str(p.val.as_str());
    line
}

/// The writer's reminders from the VALARMs of `raw`, and whether any
/// alarm could not be one (a fixed time, after the start, relative to
/// the end, too many or too far).
fn alarms(raw: &parser::Component) -> (Vec<u32>, bool) {
    let mut minutes = Vec::new();
    let mut lossy = false;
    for a in raw
        .components
        .iter()
        .filter(|c| c.name.as_str().eq_ignore_ascii_case("VALARM"))
    {
        let Some(t) = a.find_prop("TRIGGER") else {
            lossy = true;
            continue;
        };
        let relative = t.params.iter().all(|p| {
            let (k, v) = (p.key.as_str(), p.val.as_ref().map_or("", |v| v.as_str()));
            !(k.eq_ignore_ascii_case("VALUE") && v.eq_ignore_ascii_case("DATE-TIME")
                || k.eq_ignore_ascii_case("RELATED") && v.eq_ignore_ascii_case("END"))
        });
        match duration(t.val.as_str()) {
            Ok(d) if relative && d <= Duration::zero() && -d <= Duration::minutes(40320) => {
                let m = (-d).num_minutes() as u32;
                if !minutes.contains(&m) {
                    minutes.push(m);
                }
            }
            _ => lossy = true,
        }
    }
    if minutes.len() > 5 {
        minutes.truncate(5);
        lossy = true;
    }
    (minutes, lossy)
}

fn series(
    uid: &str,
    v: &VEvent,
    raw: &parser::Component,
    changed: &[VEvent],
    default_zone: &str,
) -> Result<Parsed, String> {
    if uid.len() > 255 {
        return Err("a UID longer than 255 characters".into());
    }
    let (start, end) = span_of(v, default_zone)?;
    let all_day = matches!(start, Time::Date(_));
    let zone = match (&start, &end) {
        (Time::At(_, z), _) => z.clone(),
        (Time::Date(_), _) => default_zone.to_string(),
    };
    if all_day != matches!(end, Time::Date(_)) {
        return Err("DTSTART and DTEND are not both dates or both times".into());
    }
    let rrule = v
        .properties()
        .get("RRULE")
        .map(|p| p.value().trim().to_string());
    let mut exdates = Vec::new();
    for p in v.multi_properties().get("EXDATE").into_iter().flatten() {
        let tzid = p.params().get("TZID").map(|x| x.value().to_string());
        for value in p.value().split(',').filter(|x| !x.trim().is_empty()) {
            let t = instant(value.trim(), tzid.as_deref(), &zone, default_zone)?;
            exdates.push(t.to_rfc3339());
        }
    }
    let visibility = match v.property_value("CLASS").map(str::to_ascii_uppercase) {
        Some(c) if c == "PRIVATE" || c == "CONFIDENTIAL" => Some("private".to_string()),
        _ => None,
    };
    let organizer = v
        .properties()
        .get("ORGANIZER")
        .and_then(|p| email_of(p.value()));
    let mut attendees = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in v.multi_properties().get("ATTENDEE").into_iter().flatten() {
        let Some(email) = email_of(p.value()) else {
            continue;
        };
        if attendees.len() > crate::events::MAX_ATTENDEES {
            // More than an event may have: refused when created, so no
            // more are read.
            break;
        }
        if Some(&email) == organizer.as_ref() || !seen.insert(email.clone()) {
            continue;
        }
        let status = match p
            .params()
            .get("PARTSTAT")
            .map(|x| x.value().to_ascii_uppercase())
            .as_deref()
        {
            Some("ACCEPTED") => AttendeeStatus::Accepted,
            Some("DECLINED") => AttendeeStatus::Declined,
            Some("TENTATIVE") => AttendeeStatus::Tentative,
            _ => AttendeeStatus::NeedsAction,
        };
        let name = p
            .params()
            .get("CN")
            .map(|x| x.value().trim_matches('"').to_string())
            .unwrap_or_default();
        attendees.push(ExternalAttendee {
            email,
            name,
            status,
        });
    }
    let request = CreateEventRequest {
        title: text(v, "SUMMARY").unwrap_or_else(|| "(no title)".into()),
        start: field(&start),
        end: field(&end),
        all_day: all_day.then_some(true),
        reminders: None,
        time_zone: zone.clone(),
        description: text(v, "DESCRIPTION"),
        location: text(v, "LOCATION"),
        rrule,
        exdates: (!exdates.is_empty()).then_some(exdates),
        attendees: None,
        group_id: None,
        visibility,
    };
    let mut overrides = Vec::new();
    let mut cancelled = Vec::new();
    for o in changed {
        let rid = o
            .properties()
            .get("RECURRENCE-ID")
            .ok_or("a RECURRENCE-ID without a value")?;
        let tzid = rid.params().get("TZID").map(|x| x.value().to_string());
        let original = instant(rid.value(), tzid.as_deref(), &zone, default_zone)?;
        if o.property_value("STATUS")
            .is_some_and(|s| s.eq_ignore_ascii_case("CANCELLED"))
        {
            cancelled.push(original);
            continue;
        }
        let (s, e) = span_of(o, default_zone)?;
        overrides.push((
            original,
            UpdateEventRequest {
                title: text(o, "SUMMARY"),
                start: Some(field(&s)),
                end: Some(field(&e)),
                description: text(o, "DESCRIPTION"),
                location: text(o, "LOCATION"),
                ..Default::default()
            },
        ));
    }
    let (reminders, mut lossy) = alarms(raw);
    let mut extra = Vec::new();
    let mut size = 0;
    for p in &raw.properties {
        let name = p.name.as_str().to_ascii_uppercase();
        if MAPPED.contains(&name.as_str()) {
            continue;
        }
        let line = content_line(p);
        if UNSUPPORTED.contains(&name.as_str())
            || extra.len() >= MAX_EXTRA
            || size + line.len() > MAX_EXTRA_BYTES
        {
            lossy = true;
            continue;
        }
        size += line.len();
        extra.push(line);
    }
    lossy |= raw
        .components
        .iter()
        .any(|c| !c.name.as_str().eq_ignore_ascii_case("VALARM"));
    lossy |= changed.iter().any(|o| {
        o.properties()
            .keys()
            .chain(o.multi_properties().keys())
            .any(|k| !MAPPED_OCCURRENCE.contains(&k.to_ascii_uppercase().as_str()))
            || !o.components().is_empty()
    });
    Ok(Parsed {
        uid: uid.to_string(),
        request,
        attendees,
        overrides,
        cancelled,
        reminders,
        extra,
        lossy,
    })
}

/// A DATE or DATE-TIME value (an EXDATE, a RECURRENCE-ID) as an instant:
/// with `tzid` in it, with `Z` in UTC, a date at the start of that day
/// (and a floating time) in the event's `zone`.
fn instant(
    value: &str,
    tzid: Option<&str>,
    zone: &str,
    default_zone: &str,
) -> Result<DateTime<Utc>, String> {
    let bad = || format!("{value:?} is not an iCalendar date or time");
    if let Some(utc) = value.strip_suffix('Z') {
        let n = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").map_err(|_| bad())?;
        return Ok(n.and_utc());
    }
    let zone = match tzid {
        Some(t) => zone_named(t)
            .ok_or_else(|| format!("unknown time zone {t:?}"))?
            .name()
            .to_string(),
        None if zone.is_empty() => default_zone.to_string(),
        None => zone.to_string(),
    };
    if let Ok(n) = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S") {
        return local(n, &zone);
    }
    let d = NaiveDate::parse_from_str(value, "%Y%m%d").map_err(|_| bad())?;
    local(d.and_hms_opt(0, 0, 0).ok_or_else(bad)?, &zone)
}

/// The address of a `mailto:` value.
fn email_of(value: &str) -> Option<String> {
    let v = value.trim();
    let rest = v
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("mailto:"))
        .map(|_| &v[7..])?;
    let rest = rest.trim();
    (rest.contains('@') && rest.len() <= 254).then(|| rest.to_lowercase())
}

/// A VFREEBUSY of `busy` in `[from, to)` (a CalDAV free-busy-query's
/// answer).
pub fn free_busy(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    busy: &[(DateTime<Utc>, DateTime<Utc>)],
) -> String {
    let utc = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    // Times only (no text to escape, lines short): written directly.
    let mut out = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:{PRODID}\r\nBEGIN:VFREEBUSY\r\nDTSTAMP:{}\r\nDTSTART:{}\r\nDTEND:{}\r\n",
        utc(Utc::now()),
        utc(from),
        utc(to)
    );
    for (s, e) in busy {
        out.push_str(&format!("FREEBUSY;FBTYPE=BUSY:{}/{}\r\n", utc(*s), utc(*e)));
    }
    out.push_str("END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
    out
}

/// The occurrences of `ev` a client's time-range asks for: whether any
/// of them overlaps `[from, to)`.
pub fn overlaps(ev: &EventRecord, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    !recurrence::occurrences(ev, from, to).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attendee, IcalOrigin, OccurrenceChange};

    /// `ev` as its own calendar resource, in full, nobody's alarms.
    fn detailed(ev: &EventRecord) -> String {
        resource(
            &Entry {
                ev,
                shown: Shown::Details,
                alarms_for: None,
            },
            &People::new(),
        )
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn weekly() -> EventRecord {
        let mut ev = EventRecord::sample(
            "2030-03-04T09:00:00Z",
            60,
            "Europe/Madrid",
            Some("FREQ=WEEKLY;COUNT=6"),
        );
        ev.title = "Stand-up, daily; with \"quotes\"".into();
        ev.description = "line one\nline two".into();
        ev.exdates = vec![at("2030-03-11T09:00:00Z")];
        ev.overrides.insert(
            at("2030-03-18T09:00:00Z"),
            OccurrenceChange {
                start: at("2030-03-18T11:00:00Z"),
                end: at("2030-03-18T12:30:00Z"),
                title: Some("Moved".into()),
                description: None,
                location: None,
            },
        );
        ev.attendees = vec![
            Attendee {
                user_id: ev.organizer_id,
                username: "ana".into(),
                status: AttendeeStatus::Accepted,
            },
            Attendee {
                user_id: Uuid::new_v4(),
                username: "bob".into(),
                status: AttendeeStatus::Tentative,
            },
        ];
        ev
    }

    #[test]
    fn a_series_goes_out_and_comes_back_the_same() {
        let ev = weekly();
        let people: People = [(ev.organizer_id, ("ana".into(), "ana@example.com".into()))].into();
        let text = calendar(
            "Ana",
            &[Entry {
                ev: &ev,
                shown: Shown::Details,
                alarms_for: None,
            }],
            &people,
        );
        assert!(
            text.contains("BEGIN:VTIMEZONE\r\nTZID:Europe/Madrid"),
            "{text}"
        );
        assert!(text.contains("TZOFFSETTO:+0200"), "{text}");
        assert!(text.contains("RRULE:FREQ=WEEKLY;COUNT=6"), "{text}");
        assert!(
            text.contains("EXDATE;TZID=Europe/Madrid:20300311T100000"),
            "{text}"
        );
        assert!(text.contains("PARTSTAT=TENTATIVE"), "{text}");
        assert!(
            text.contains("ORGANIZER;CN=ana:mailto:ana@example.com"),
            "{text}"
        );
        let parsed = parse(&text, "UTC").unwrap();
        assert_eq!(parsed.len(), 1);
        let p = parsed[0].as_ref().unwrap();
        assert_eq!(p.uid, ev.id.to_string());
        assert_eq!(p.request.title, ev.title);
        assert_eq!(p.request.description.as_deref(), Some("line one\nline two"));
        assert_eq!(p.request.time_zone, "Europe/Madrid");
        assert_eq!(at(&p.request.start), ev.start);
        assert_eq!(at(&p.request.end), ev.end);
        assert_eq!(p.request.rrule.as_deref(), Some("FREQ=WEEKLY;COUNT=6"));
        let ex: Vec<_> = p
            .request
            .exdates
            .clone()
            .unwrap()
            .iter()
            .map(|x| at(x))
            .collect();
        assert_eq!(ex, ev.exdates);
        assert_eq!(p.overrides.len(), 1);
        let (original, change) = &p.overrides[0];
        assert_eq!(*original, at("2030-03-18T09:00:00Z"));
        assert_eq!(change.title.as_deref(), Some("Moved"));
        assert_eq!(
            at(change.start.as_deref().unwrap()),
            at("2030-03-18T11:00:00Z")
        );
        // bob has no email in `people`: an address that cannot deliver.
        assert_eq!(p.attendees.len(), 1);
        assert_eq!(p.attendees[0].status, AttendeeStatus::Tentative);
    }

    #[test]
    fn busy_blocks_say_nothing_but_when() {
        let mut ev = weekly();
        ev.location = "Room 1".into();
        let text = calendar(
            "g",
            &[Entry {
                ev: &ev,
                shown: Shown::Busy {
                    label: "Busy (ana)".into(),
                },
                alarms_for: None,
            }],
            &People::new(),
        );
        assert!(text.contains("SUMMARY:Busy (ana)"));
        for secret in ["Stand-up", "line one", "Room 1", "ATTENDEE", "Moved"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("RECURRENCE-ID;TZID=Europe/Madrid:20300318T100000"));
    }

    #[test]
    fn all_day_events_are_dates_both_ways() {
        let mut ev = EventRecord::sample("2030-10-26T22:00:00Z", 48 * 60, "Europe/Madrid", None);
        ev.all_day = true;
        ev.ical = Some(IcalOrigin {
            uid: "abc@elsewhere".into(),
            dav_name: None,
            extra: vec![
                "CATEGORIES:Work,Travel".into(),
                "X-LONG:".to_string() + &"x".repeat(100),
            ],
        });
        let text = detailed(&ev);
        assert!(text.contains("DTSTART;VALUE=DATE:20301027"), "{text}");
        assert!(text.contains("DTEND;VALUE=DATE:20301029"), "{text}");
        assert!(text.contains("UID:abc@elsewhere"));
        // Kept properties come back as written, folded.
        assert!(text.contains("\r\nCATEGORIES:Work,Travel\r\n"), "{text}");
        assert!(
            text.contains("X-LONG:xxx") && !text.contains("X-AGENDA-KEPT"),
            "{text}"
        );
        let p = parse(&text, "Europe/Madrid").unwrap().remove(0).unwrap();
        assert_eq!(
            (p.request.start.as_str(), p.request.end.as_str()),
            ("2030-10-27", "2030-10-29")
        );
        assert_eq!(p.request.all_day, Some(true));
    }

    #[test]
    fn files_from_other_apps_are_read() {
        let text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Other//EN\r\n\
BEGIN:VEVENT\r\nUID:one@x\r\nDTSTART;TZID=/mozilla.org/20050126_1/America/New_York:20300105T090000\r\n\
DURATION:PT1H30M\r\nSUMMARY:Long title that goes on and on and on and on and on and on and on\r\n  folded\r\n\
RRULE:FREQ=DAILY;COUNT=3\r\nEXDATE;TZID=America/New_York:20300106T090000,20300107T090000\r\n\
ATTENDEE;CN=Zoe;PARTSTAT=ACCEPTED:mailto:Zoe@Example.org\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:two@x\r\nDTSTART:20300105\r\nSUMMARY:floating day\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:three@x\r\nDTSTART;TZID=Mars/Olympus:20300105T090000\r\nSUMMARY:x\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:orphan@x\r\nRECURRENCE-ID:20300105T090000Z\r\nDTSTART:20300105T100000Z\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nSUMMARY:no uid\r\nDTSTART:20300105T100000Z\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";
        let out = parse(text, "Europe/Madrid").unwrap();
        let ok: Vec<&Parsed> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
        let skipped: Vec<&Skipped> = out.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(ok.len(), 2, "{out:?}");
        let one = ok.iter().find(|p| p.uid == "one@x").unwrap();
        assert_eq!(one.request.time_zone, "America/New_York");
        assert_eq!(at(&one.request.start), at("2030-01-05T14:00:00Z"));
        assert_eq!(at(&one.request.end), at("2030-01-05T15:30:00Z"));
        assert!(
            one.request.title.ends_with("and on folded"),
            "{}",
            one.request.title
        );
        assert_eq!(one.request.exdates.as_ref().unwrap().len(), 2);
        assert_eq!(one.attendees[0].email, "zoe@example.org");
        let two = ok.iter().find(|p| p.uid == "two@x").unwrap();
        assert_eq!(
            (two.request.start.as_str(), two.request.end.as_str()),
            ("2030-01-05", "2030-01-06")
        );
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.uid, s.reason))
            .collect();
        assert_eq!(skipped.len(), 3, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("three@x: unknown time zone")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("orphan@x: a changed occurrence")),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r == ": no UID"), "{reasons:?}");
        assert!(parse("hello", "UTC").is_err());
        assert!(parse("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "UTC").is_err());
    }

    #[test]
    fn the_same_version_renders_the_same_bytes() {
        let mut ev = weekly();
        let me = ev.organizer_id;
        ev.reminders.insert(me, vec![15]);
        let render = || {
            resource(
                &Entry {
                    ev: &ev,
                    shown: Shown::Details,
                    alarms_for: Some(me),
                },
                &People::new(),
            )
        };
        let first = render();
        assert!(
            first.contains("BEGIN:VALARM") && first.contains("TRIGGER:-PT900S"),
            "{first}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(first, render());
    }

    #[test]
    fn windows_zone_names_are_known() {
        for (w, iana) in WINDOWS_ZONES {
            assert!(iana.parse::<Tz>().is_ok(), "{w}: {iana}");
        }
        assert_eq!(
            zone_named("W. Europe Standard Time"),
            Some(chrono_tz::Europe::Berlin)
        );
        assert_eq!(
            zone_named("\"Romance Standard Time\""),
            Some(chrono_tz::Europe::Paris)
        );
    }

    #[test]
    fn alarms_become_reminders_and_the_rest_is_kept() {
        let file = |body: &str| {
            format!(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a@x\r\n\
                 DTSTART:20300105T090000Z\r\nDTEND:20300105T100000Z\r\nSUMMARY:s\r\n{body}END:VEVENT\r\nEND:VCALENDAR\r\n"
            )
        };
        let one = |body: &str| parse(&file(body), "UTC").unwrap().remove(0).unwrap();
        let p = one(
            "CATEGORIES:Work,Travel\r\nSTATUS:TENTATIVE\r\nURL;VALUE=URI:https://x.example/a\r\n\
             BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:r\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n\
             BEGIN:VALARM\r\nACTION:AUDIO\r\nTRIGGER;RELATED=START:-P1D\r\nEND:VALARM\r\n",
        );
        assert_eq!(p.reminders, [15, 1440]);
        assert_eq!(
            p.extra,
            [
                "CATEGORIES:Work,Travel",
                "STATUS:TENTATIVE",
                "URL;VALUE=URI:https://x.example/a"
            ]
        );
        assert!(!p.lossy);
        // What cannot be kept says so.
        for body in [
            "RDATE:20300107T090000Z\r\n",
            "BEGIN:VALARM\r\nTRIGGER;VALUE=DATE-TIME:20300101T000000Z\r\nEND:VALARM\r\n",
            "BEGIN:VALARM\r\nTRIGGER;RELATED=END:-PT5M\r\nEND:VALARM\r\n",
        ] {
            assert!(one(body).lossy, "{body}");
        }
    }

    #[test]
    fn durations_read_as_rfc5545_says() {
        assert_eq!(duration("PT1H30M").unwrap(), Duration::minutes(90));
        assert_eq!(duration("P1W").unwrap(), Duration::weeks(1));
        assert_eq!(duration("P1DT2H").unwrap(), Duration::hours(26));
        assert!(duration("1H").is_err());
        for huge in [
            "P99999999999W",
            "P200000000D",
            "-P9999999999999W",
            "PT99999999999999999999S",
        ] {
            assert!(duration(huge).is_err(), "{huge}");
        }
    }

    #[test]
    fn a_zone_without_changes_still_has_an_observance() {
        let ev = EventRecord::sample("2030-03-04T09:00:00Z", 60, "Asia/Tokyo", None);
        let text = detailed(&ev);
        assert!(text.contains("TZOFFSETTO:+0900"), "{text}");
        assert!(
            text.contains("DTSTART;TZID=Asia/Tokyo:20300304T180000"),
            "{text}"
        );
    }
}
