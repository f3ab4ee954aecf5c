//! The terminal calendar, for people who prefer a terminal (like
//! gcalcli): `agendactl login`, `agenda [--week|--month]`, `event add`,
//! `invitations`, `rsvp`, `logout`, all over the public API as the person
//! who signed in.
//!
//! [`session`] keeps the sign-in and makes the calls; this module reads
//! what people type (`--at tomorrow 10:00`, `--for 1h30m`) and lays out
//! what the API answers, both pure and unit-tested.

pub mod session;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use reqwest::Method;
use serde_json::{json, Value};

use crate::error::{Error, Result};
pub use session::Session;

/// The span `agenda` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Monday to Sunday.
    Week,
    /// The calendar month.
    Month,
}

/// The local days `[first, after_last)` of the week (from Monday) or month
/// holding `day`.
pub fn days(span: Span, day: NaiveDate) -> (NaiveDate, NaiveDate) {
    match span {
        Span::Week => {
            let first = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
            (first, first + Duration::days(7))
        }
        Span::Month => {
            let first = day.with_day(1).unwrap_or(day);
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(first + Duration::days(31));
            (first, next)
        }
    }
}

/// The first instant of `day` in `tz` (a DST gap at midnight: the first
/// hour that exists).
fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&day.and_hms_opt(h, 0, 0)?)
                .earliest()
        })
        .map_or_else(
            || day.and_time(NaiveTime::MIN).and_utc(),
            |t| t.with_timezone(&Utc),
        )
}

/// A date as people type it: `2030-01-31`, `today`, `tomorrow`.
pub fn parse_day(text: &str, today: NaiveDate) -> Result<NaiveDate> {
    match text.trim().to_lowercase().as_str() {
        "today" => Ok(today),
        "tomorrow" => Ok(today + Duration::days(1)),
        t => NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| {
            Error::Refused(format!(
                "{text:?} is not a day: give YYYY-MM-DD, today or tomorrow"
            ))
        }),
    }
}

/// When an event starts, as people type it, in their zone `tz`:
/// `2030-01-31 10:00` (or with `T`), `today 10:00`, `tomorrow 9:30`,
/// `10:00` (today), or an RFC 3339 time.
pub fn parse_at(text: &str, tz: Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let today = now.with_timezone(&tz).date_naive();
    let bad = || {
        Error::Refused(format!(
            "{text:?} is not a time: give \"YYYY-MM-DD HH:MM\", \"tomorrow HH:MM\" or \"HH:MM\""
        ))
    };
    // `2030-01-31T10:00`: the T between the date and the time only.
    let text = match text.trim() {
        t if t.len() == 16 && t.as_bytes()[10] == b'T' => format!("{} {}", &t[..10], &t[11..]),
        t => t.to_string(),
    };
    let (day, time) = match text.rsplit_once(' ') {
        Some((day, time)) => (parse_day(day, today)?, time.to_string()),
        None => (today, text.clone()),
    };
    let time = NaiveTime::parse_from_str(&time, "%H:%M").map_err(|_| bad())?;
    tz.from_local_datetime(&NaiveDateTime::new(day, time))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| Error::Refused(format!("{text} does not exist in {tz} (a clock change)")))
}

/// A length as people type it: `30m`, `1h`, `1h30m`, `90` (minutes).
pub fn parse_for(text: &str) -> Result<Duration> {
    let bad = || {
        Error::Refused(format!(
            "{text:?} is not a length: give 30m, 1h, 1h30m or minutes"
        ))
    };
    let t = text.trim().to_lowercase();
    if let Ok(m) = t.parse::<i64>() {
        return (m > 0).then(|| Duration::minutes(m)).ok_or_else(bad);
    }
    let (hours, rest) = match t.split_once('h') {
        Some((h, rest)) => (h.parse::<i64>().map_err(|_| bad())?, rest),
        None => (0, t.as_str()),
    };
    let minutes = match rest.strip_suffix('m') {
        Some(m) => m.parse::<i64>().map_err(|_| bad())?,
        None if rest.is_empty() => 0,
        None => return Err(bad()),
    };
    let total = hours * 60 + minutes;
    (total > 0)
        .then(|| Duration::minutes(total))
        .ok_or_else(bad)
}

/// `items` (events as `GET /v1/events` lists them) laid out by day in
/// `tz`, days `[first, after)`: a heading per day with events, one line
/// per event (time, title, your answer when it is not accepted, where).
pub fn render(items: &[Value], tz: Tz, first: NaiveDate, after: NaiveDate) -> String {
    let mut out = String::new();
    let mut any = false;
    let mut day = first;
    while day < after {
        let mut lines = Vec::new();
        for e in items {
            let start = instant(&e["start"]);
            let end = instant(&e["end"]);
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            let all_day = e["all_day"] == true;
            let on_day = if all_day {
                let first = e["start_date"]
                    .as_str()
                    .and_then(|d| d.parse::<NaiveDate>().ok());
                let after = e["end_date"]
                    .as_str()
                    .and_then(|d| d.parse::<NaiveDate>().ok());
                matches!((first, after), (Some(f), Some(a)) if f <= day && day < a)
            } else {
                start.with_timezone(&tz).date_naive() == day
            };
            if !on_day {
                continue;
            }
            let when = if all_day {
                "all day    ".to_string()
            } else {
                format!(
                    "{}-{}",
                    start.with_timezone(&tz).format("%H:%M"),
                    end.with_timezone(&tz).format("%H:%M")
                )
            };
            let mut line = format!("  {when}  {}", e["title"].as_str().unwrap_or(""));
            match e["my_status"].as_str() {
                Some("accepted") | None => {}
                Some(s) => line.push_str(&format!("  [{}]", s.replace('_', " "))),
            }
            if let Some(place) = e["location"].as_str().filter(|l| !l.is_empty()) {
                line.push_str(&format!("  @ {place}"));
            }
            lines.push((start, line));
        }
        if !lines.is_empty() {
            any = true;
            lines.sort_by_key(|(s, _)| *s);
            out.push_str(&day.format("%a %d %b %Y").to_string());
            out.push('\n');
            for (_, l) in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        day += Duration::days(1);
    }
    if !any {
        out.push_str("  nothing planned\n");
    }
    out
}

fn instant(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn zone(session: &Session) -> Tz {
    session.saved().time_zone.parse().unwrap_or(chrono_tz::UTC)
}

/// `agendactl agenda`: the week or month holding `from` (default today).
pub async fn agenda(session: &mut Session, span: Span, from: Option<&str>) -> Result<String> {
    let tz = zone(session);
    let today = Utc::now().with_timezone(&tz).date_naive();
    let day = from.map_or(Ok(today), |d| parse_day(d, today))?;
    let (first, after) = days(span, day);
    let query = format!(
        "/v1/events?from={}&to={}",
        day_start(tz, first).format("%Y-%m-%dT%H:%M:%SZ"),
        day_start(tz, after).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let listed = session
        .call("your agenda", Method::GET, &query, None)
        .await?;
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    let title = match span {
        Span::Week => format!("Week of {}", first.format("%a %d %b %Y")),
        Span::Month => first.format("%B %Y").to_string(),
    };
    Ok(format!(
        "{title} ({tz}, {})\n{}",
        session.saved().username,
        render(&items, tz, first, after)
    ))
}

/// What `agendactl event add` asks for.
pub struct NewEvent<'a> {
    /// Its title.
    pub title: &'a str,
    /// When it starts, as [`parse_at`] reads it.
    pub at: &'a str,
    /// How long, as [`parse_for`] reads it.
    pub length: &'a str,
    /// Attendees' usernames.
    pub with: &'a [String],
    /// Where.
    pub location: Option<&'a str>,
    /// An RRULE.
    pub repeat: Option<&'a str>,
}

/// `agendactl event add`: creates it; says when, its id and its conflicts.
pub async fn add_event(session: &mut Session, ev: NewEvent<'_>) -> Result<String> {
    let tz = zone(session);
    let start = parse_at(ev.at, tz, Utc::now())?;
    let end = start + parse_for(ev.length)?;
    let mut body = json!({
        "title": ev.title,
        "start": start.to_rfc3339(),
        "end": end.to_rfc3339(),
        "time_zone": tz.name(),
        "attendees": ev.with,
    });
    if let Some(l) = ev.location {
        body["location"] = json!(l);
    }
    if let Some(r) = ev.repeat {
        body["rrule"] = json!(r);
    }
    let created = session
        .call("creating the event", Method::POST, "/v1/events", Some(body))
        .await?;
    let e = &created["event"];
    let mut out = format!(
        "created {:?} {} {}-{} ({tz}), id {}\n",
        ev.title,
        start.with_timezone(&tz).format("%a %d %b %Y"),
        start.with_timezone(&tz).format("%H:%M"),
        end.with_timezone(&tz).format("%H:%M"),
        e["id"].as_str().unwrap_or("?")
    );
    for c in created["conflicts"].as_array().into_iter().flatten() {
        let who = e["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["user_id"] == c["user_id"])
            .and_then(|a| a["username"].as_str())
            .unwrap_or("someone");
        let what = c["title"].as_str().unwrap_or("busy");
        let (s, t) = (instant(&c["start"]), instant(&c["end"]));
        if let (Some(s), Some(t)) = (s, t) {
            out.push_str(&format!(
                "  conflict: {who} has {what:?} {}-{}\n",
                s.with_timezone(&tz).format("%a %d %b %H:%M"),
                t.with_timezone(&tz).format("%H:%M")
            ));
        }
    }
    Ok(out)
}

/// `agendactl invitations`: events waiting for your answer (those you
/// were invited or added to, from your notifications) and groups.
pub async fn invitations(session: &mut Session) -> Result<String> {
    let tz = zone(session);
    let notes = session
        .call("your notifications", Method::GET, "/v1/notifications", None)
        .await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    for n in notes["items"].as_array().into_iter().flatten() {
        if !matches!(
            n["kind"].as_str(),
            Some("event_invited" | "event_added" | "event_updated")
        ) {
            continue;
        }
        let Some(id) = n["data"]["event_id"].as_str() else {
            continue;
        };
        if !seen.insert(id.to_string()) {
            continue;
        }
        let Ok(e) = session
            .call("an event", Method::GET, &format!("/v1/events/{id}"), None)
            .await
        else {
            continue; // cancelled since
        };
        let status = e["my_status"].as_str().unwrap_or_default();
        if !matches!(status, "invited" | "needs_action") {
            continue;
        }
        let Some(start) = instant(&e["start"]) else {
            continue;
        };
        let organizer = e["attendees"][0]["username"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "  event  {}  {:?}  {} from {organizer}  (agendactl rsvp {id} accepted|tentative|declined)\n",
            start.with_timezone(&tz).format("%a %d %b %Y %H:%M"),
            e["title"].as_str().unwrap_or(""),
            status.replace('_', " "),
        ));
    }
    let groups = session
        .call(
            "your group invitations",
            Method::GET,
            "/v1/invitations",
            None,
        )
        .await?;
    for g in groups["items"].as_array().into_iter().flatten() {
        if g["status"] != "pending" {
            continue;
        }
        out.push_str(&format!(
            "  group  {:?} at rank {}  (answer in the web app, id {})\n",
            g["group_name"].as_str().unwrap_or(""),
            g["rank"],
            g["id"].as_str().unwrap_or("?")
        ));
    }
    if out.is_empty() {
        out.push_str("  nothing waits for your answer\n");
    }
    Ok(format!("Waiting for your answer:\n{out}"))
}

/// `agendactl rsvp ID STATUS`.
pub async fn rsvp(session: &mut Session, id: &str, status: &str) -> Result<String> {
    let answered = session
        .call(
            "answering",
            Method::POST,
            &format!("/v1/events/{id}/rsvp"),
            Some(json!({ "status": status })),
        )
        .await?;
    let conflicts = answered["conflicts"].as_array().map_or(0, Vec::len);
    Ok(format!(
        "{status} {:?}{}\n",
        answered["event"]["title"].as_str().unwrap_or(""),
        if conflicts > 0 {
            format!(" ({conflicts} conflicts)")
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        assert_eq!(
            days(Span::Week, d("2026-11-26")),
            (d("2026-11-23"), d("2026-11-30"))
        );
        assert_eq!(
            days(Span::Month, d("2026-12-31")),
            (d("2026-12-01"), d("2027-01-01"))
        );
    }

    #[test]
    fn times_and_lengths_are_read_as_people_type_them() {
        let tz: Tz = "Europe/Madrid".parse().unwrap();
        let now = "2026-11-26T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let at = |s: &str| parse_at(s, tz, now).map(|t| t.to_rfc3339());
        assert_eq!(at("2026-12-01 09:30").unwrap(), "2026-12-01T08:30:00+00:00");
        assert_eq!(at("2026-12-01T09:30").unwrap(), "2026-12-01T08:30:00+00:00");
        assert_eq!(at("tomorrow 10:00").unwrap(), "2026-11-27T09:00:00+00:00");
        assert_eq!(at("Today 10:00").unwrap(), "2026-11-26T09:00:00+00:00");
        assert_eq!(at("16:00").unwrap(), "2026-11-26T15:00:00+00:00");
        assert_eq!(
            at("2026-12-01T09:30:00Z").unwrap(),
            "2026-12-01T09:30:00+00:00"
        );
        assert!(at("someday").is_err());
        assert!(at("2026-03-29 02:30").is_err(), "lost to the clock change");
        assert_eq!(parse_for("30m").unwrap(), Duration::minutes(30));
        assert_eq!(parse_for("1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_for("2h").unwrap(), Duration::hours(2));
        assert_eq!(parse_for("45").unwrap(), Duration::minutes(45));
        for bad in ["0", "x", "1h30", "-5", "m"] {
            assert!(parse_for(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_agenda_is_laid_out_by_day_in_the_persons_zone() {
        let tz: Tz = "Europe/Madrid".parse().unwrap();
        let items = vec![
            json!({"title": "Review", "start": "2026-11-24T09:00:00Z", "end": "2026-11-24T10:00:00Z",
                   "my_status": "needs_action", "location": "Room 1"}),
            json!({"title": "Standup", "start": "2026-11-24T08:00:00Z", "end": "2026-11-24T08:15:00Z",
                   "my_status": "accepted", "location": ""}),
            json!({"title": "Holiday", "start": "2026-11-25T23:00:00Z", "end": "2026-11-27T23:00:00Z",
                   "all_day": true, "start_date": "2026-11-26", "end_date": "2026-11-28"}),
        ];
        let text = render(&items, tz, d("2026-11-23"), d("2026-11-30"));
        assert_eq!(
            text,
            "Tue 24 Nov 2026\n  09:00-09:15  Standup\n  10:00-11:00  Review  [needs action]  @ Room 1\n\
             Thu 26 Nov 2026\n  all day      Holiday\nFri 27 Nov 2026\n  all day      Holiday\n"
        );
        assert_eq!(
            render(&[], tz, d("2026-11-23"), d("2026-11-30")),
            "  nothing planned\n"
        );
    }
}
