//! Recurring events: RFC 5545 RRULE with EXDATE, expanded in the event's
//! IANA time zone, so a 09:00 Madrid meeting stays at 09:00 local time
//! when daylight saving time starts or ends.

use chrono::{DateTime, Duration, Utc};
use rrule::{RRule, Tz, Unvalidated};

use crate::error::{ApiError, ApiResult};
use crate::model::{EventRecord, Interval};

/// Most occurrences one expansion returns (bounds work per request).
pub const MAX_OCCURRENCES: u16 = 2000;

/// How far ahead a recurring event is checked for conflicts.
pub const CONFLICT_HORIZON: Duration = Duration::days(366);

/// Most occurrences a rule may start in one day (hourly at most). Dense
/// rules cost every expansion that walks past them (expansion starts at
/// the first occurrence), so density is bounded by what a rule says, not
/// by its FREQ name: `FREQ=HOURLY;BYMINUTE=0,1,...,29` is as dense as
/// MINUTELY.
pub const MAX_PER_DAY: usize = 24;

/// Largest COUNT (a never-ending rule stays legal: its density is what
/// bounds the work).
pub const MAX_COUNT: u32 = 10_000;

fn parse(rule: &str) -> ApiResult<RRule<Unvalidated>> {
    let rule = rule.trim();
    let rule = rule.strip_prefix("RRULE:").unwrap_or(rule);
    if rule.is_empty() || rule.contains(['\n', '\r']) {
        return Err(ApiError::invalid_field(
            "rrule",
            "rrule must be one RRULE value such as FREQ=WEEKLY;BYDAY=MO",
        ));
    }
    rule.parse::<RRule<Unvalidated>>()
        .map_err(|e| ApiError::invalid_field("rrule", format!("invalid rrule: {e}")))
}

fn in_zone(t: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Tz> {
    t.with_timezone(&Tz::Tz(tz))
}

/// Refuses rules too dense for a calendar, and ones that say nothing
/// sensible (RFC 5545 forbids COUNT with UNTIL; COUNT=0 and INTERVAL=0
/// never occur).
fn bounds(r: &RRule<Unvalidated>) -> ApiResult<()> {
    use rrule::Frequency;
    let refuse = |m: String| Err(ApiError::invalid_field("rrule", m));
    if matches!(r.get_freq(), Frequency::Secondly | Frequency::Minutely) {
        return refuse(format!(
            "FREQ={} repeats too often for a calendar; the densest rule allowed is hourly",
            r.get_freq()
        ));
    }
    if !r.get_by_second().is_empty() {
        return refuse("BYSECOND is not supported: occurrences start on whole minutes".into());
    }
    if r.get_interval() == 0 {
        return refuse("INTERVAL must be at least 1".into());
    }
    match r.get_count() {
        Some(0) => return refuse("COUNT=0 never occurs".into()),
        Some(c) if c > MAX_COUNT => {
            return refuse(format!(
                "COUNT may be at most {MAX_COUNT} (or leave it out: no end)"
            ))
        }
        _ => {}
    }
    if r.get_count().is_some() && r.get_until().is_some() {
        return refuse("COUNT and UNTIL cannot both be given".into());
    }
    let minutes = r.get_by_minute().len().max(1);
    let hours = match r.get_freq() {
        Frequency::Hourly => {
            let every = 24usize.div_ceil(usize::from(r.get_interval()));
            match r.get_by_hour().len() {
                0 => every,
                n => n.min(every),
            }
        }
        _ => r.get_by_hour().len().max(1),
    };
    if hours * minutes > MAX_PER_DAY {
        return refuse(format!(
            "this rule starts up to {} occurrences a day; at most {MAX_PER_DAY}",
            hours * minutes
        ));
    }
    Ok(())
}

/// Checks that `rule` is a valid RRULE for an event starting at `start` in
/// `tz`, within the bounds above and with at least one occurrence, and
/// returns it normalised (no `RRULE:` prefix).
pub fn check(rule: &str, start: DateTime<Utc>, tz: chrono_tz::Tz) -> ApiResult<String> {
    let parsed = parse(rule)?;
    bounds(&parsed)?;
    let normalised = parsed.to_string();
    let set = parsed
        .build(in_zone(start, tz))
        .map_err(|e| ApiError::invalid_field("rrule", format!("invalid rrule: {e}")))?;
    if set.all(1).dates.is_empty() {
        return Err(ApiError::invalid_field(
            "rrule",
            "this rule never occurs (for example BYMONTHDAY=30 with BYMONTH=2)",
        ));
    }
    Ok(normalised
        .strip_prefix("RRULE:")
        .unwrap_or(&normalised)
        .to_string())
}

/// The occurrences of `ev` that overlap `[from, to)`, sorted by start.
///
/// The work is bounded by the window, not by how long ago the event
/// began: a rule without COUNT is expanded from a start whole periods
/// later ([`fast_forward`]), so a window years after the first occurrence
/// costs what a window next to it costs.
pub fn occurrences(ev: &EventRecord, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
    expand(ev, from, to, true)
}

fn expand(ev: &EventRecord, from: DateTime<Utc>, to: DateTime<Utc>, skip: bool) -> Vec<Interval> {
    let length = ev.end - ev.start;
    let overlaps = |s: DateTime<Utc>| s < to && s + length > from;
    let first_only = || {
        if overlaps(ev.start) {
            vec![Interval {
                start: ev.start,
                end: ev.end,
            }]
        } else {
            Vec::new()
        }
    };
    let Some(rule) = ev.rrule.as_deref() else {
        return first_only();
    };
    let Ok(tz) = ev.time_zone.parse::<chrono_tz::Tz>() else {
        tracing::warn!(event = %ev.id, zone = %ev.time_zone, "stored event has an unknown zone");
        return Vec::new();
    };
    // Validated on write; a rule that fails now (library change) shows the
    // first occurrence rather than failing the whole agenda.
    let parsed = match parse(rule) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(event = %ev.id, error = %e.message, "stored rrule does not parse");
            return first_only();
        }
    };
    let earliest = from - length;
    let start = if skip {
        fast_forward(&parsed, in_zone(ev.start, tz), earliest)
    } else {
        in_zone(ev.start, tz)
    };
    let set = match parsed.build(start) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(event = %ev.id, error = %e, "stored rrule does not expand");
            return first_only();
        }
    };
    let set = set
        .set_exdates(ev.exdates.iter().map(|t| in_zone(*t, tz)).collect())
        .after(in_zone(earliest, tz))
        .before(in_zone(to, tz));
    set.all(MAX_OCCURRENCES)
        .dates
        .into_iter()
        .map(|s| s.with_timezone(&Utc))
        .filter(|s| overlaps(*s))
        .map(|start| Interval {
            start,
            end: start + length,
        })
        .collect()
}

/// A start for expanding `rule` that gives the same occurrences at and
/// after `earliest` as `start` does, as late as possible before it.
///
/// The expansion walks the rule's periods in local wall-clock time from
/// its start (RFC 5545; the start itself counts only if the rule matches
/// it), and every default a rule takes from its start (weekday, day of
/// month, month, minute) is kept by moving the start by a whole number of
/// periods (INTERVAL x FREQ) in wall-clock time. So the occurrences from
/// the new start on are exactly the old ones. A rule with COUNT keeps its
/// start (the count runs from there; COUNT is bounded, so is the walk).
fn fast_forward(
    rule: &RRule<Unvalidated>,
    start: DateTime<Tz>,
    earliest: DateTime<Utc>,
) -> DateTime<Tz> {
    use chrono::{Datelike, Months, NaiveDateTime, TimeZone};
    use rrule::Frequency;
    if rule.get_count().is_some() {
        return start;
    }
    let tz = start.timezone();
    let local = start.naive_local();
    // A day of margin: the target's own wall-clock time may sit in a
    // different offset than the start's.
    let mut target = earliest.with_timezone(&tz).naive_local() - Duration::days(2);
    if let Some(until) = rule.get_until() {
        target = target.min(until.with_timezone(&tz).naive_local() - Duration::days(2));
    }
    if target <= local {
        return start;
    }
    let interval = i64::from(rule.get_interval().max(1));
    let days = (target - local).num_days();
    let months = i64::from(target.year() - local.year()) * 12 + i64::from(target.month())
        - i64::from(local.month());
    // Whole periods to skip, then one wall-clock step per period.
    type Step = fn(NaiveDateTime, i64) -> Option<NaiveDateTime>;
    let (periods, step): (i64, Step) = match rule.get_freq() {
        Frequency::Yearly => (months / 12 / interval, |t, n| {
            t.checked_add_months(Months::new(u32::try_from(n * 12).ok()?))
                .filter(|m| m.day() == t.day())
        }),
        Frequency::Monthly => (months / interval, |t, n| {
            t.checked_add_months(Months::new(u32::try_from(n).ok()?))
                .filter(|m| m.day() == t.day())
        }),
        Frequency::Weekly => (days / (7 * interval), |t, n| {
            t.checked_add_signed(Duration::weeks(n))
        }),
        // A whole number of days is a whole number of hourly periods
        // too (INTERVAL days = 24 x INTERVAL hours).
        Frequency::Daily | Frequency::Hourly => (days / interval, |t, n| {
            t.checked_add_signed(Duration::days(n))
        }),
        Frequency::Minutely | Frequency::Secondly => return start,
    };
    // A month without the start's day (the 31st, 29 February) or a local
    // time that does not exist that day: try one period earlier, a few
    // times, then give up skipping (correct, only slower).
    for k in (periods.saturating_sub(64).max(1)..=periods).rev() {
        let Some(moved) = step(local, k * interval) else {
            continue;
        };
        if moved > target {
            continue;
        }
        if let chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) =
            tz.from_local_datetime(&moved)
        {
            return t;
        }
    }
    start
}

/// The occurrences used for conflict checks: from the event's start up to
/// [`CONFLICT_HORIZON`] later.
pub fn upcoming(ev: &EventRecord) -> Vec<Interval> {
    occurrences(ev, ev.start, ev.start + CONFLICT_HORIZON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Offset, TimeZone, Timelike};

    /// Dense rules are refused by what they say, whatever their FREQ, and
    /// rules that never occur are refused; a never-ending weekly meeting
    /// and an hourly one stay legal.
    #[test]
    fn rules_are_bounded_by_density_and_must_occur() {
        let start = utc("2030-09-02T09:00:00Z");
        let refused = [
            "FREQ=SECONDLY",
            "FREQ=MINUTELY;INTERVAL=30",
            "FREQ=DAILY;BYSECOND=0,30",
            "FREQ=HOURLY;BYMINUTE=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29",
            "FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12;BYMINUTE=0,30",
            "FREQ=WEEKLY;COUNT=0",
            "FREQ=WEEKLY;INTERVAL=0",
            "FREQ=WEEKLY;COUNT=1000000",
            "FREQ=DAILY;COUNT=3;UNTIL=20301001T000000Z",
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
        ];
        for rule in refused {
            let e = check(rule, start, chrono_tz::UTC).expect_err(rule);
            assert_eq!(e.status, 422, "{rule}: {}", e.message);
        }
        for rule in [
            "FREQ=WEEKLY;BYDAY=MO",
            "FREQ=HOURLY",
            "FREQ=HOURLY;INTERVAL=2;BYMINUTE=0,30",
            "FREQ=DAILY;BYHOUR=9,17",
            "FREQ=MONTHLY;COUNT=10000",
        ] {
            check(rule, start, chrono_tz::UTC).unwrap_or_else(|e| panic!("{rule}: {}", e.message));
        }
    }

    /// Expanding from a start moved whole periods later gives exactly the
    /// occurrences expanding from the first one gives, for rules of every
    /// frequency, zones with odd daylight saving rules, starts on days not
    /// every month or year has, and windows up to years later.
    #[test]
    fn skipping_whole_periods_changes_no_occurrence() {
        use rand::{Rng, SeedableRng};
        let rules = [
            "FREQ=WEEKLY;BYDAY=MO,WE",
            "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,SU;WKST=SU",
            "FREQ=WEEKLY;INTERVAL=2",
            "FREQ=DAILY;INTERVAL=5",
            "FREQ=DAILY;BYHOUR=2;BYMINUTE=30",
            "FREQ=HOURLY;INTERVAL=7",
            "FREQ=HOURLY;BYMINUTE=0,30",
            "FREQ=MONTHLY",
            "FREQ=MONTHLY;BYDAY=-1FR",
            "FREQ=MONTHLY;INTERVAL=2;BYSETPOS=2;BYDAY=MO,TU,WE,TH,FR",
            "FREQ=MONTHLY;BYMONTHDAY=31",
            "FREQ=YEARLY",
            "FREQ=YEARLY;INTERVAL=3",
            "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
            "FREQ=DAILY;UNTIL=20310101T000000Z",
            "FREQ=WEEKLY;BYDAY=FR;UNTIL=20280615T120000Z",
        ];
        let zones = [
            "UTC",
            "Europe/Madrid",
            "America/New_York",
            "Australia/Lord_Howe",
            "Pacific/Apia",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut compared = 0;
        for case in 0..600 {
            let rule = rules[case % rules.len()];
            let zone = zones[rng.random_range(0..zones.len())];
            let tz: chrono_tz::Tz = zone.parse().unwrap();
            let (day, month) = match case % 5 {
                0 => (31, 1),
                1 => (29, 2),
                _ => (rng.random_range(1..=28), rng.random_range(1..=12)),
            };
            let year = rng.random_range(2000..2028);
            let hour = [2, 9, 23][rng.random_range(0..3)];
            let Some(local) = chrono::NaiveDate::from_ymd_opt(year, month, day)
                .and_then(|d| d.and_hms_opt(hour, 30, 0))
            else {
                continue;
            };
            let Some(start) = tz.from_local_datetime(&local).earliest() else {
                continue;
            };
            let start = start.with_timezone(&Utc);
            // Dense rules are walked from their start by the reference,
            // so keep their windows within two years of it.
            let reach = if rule.contains("HOURLY") { 700 } else { 5000 };
            let from = start + Duration::days(rng.random_range(0..reach));
            let to = from + Duration::hours(rng.random_range(1..24 * 120));
            let mut ev = EventRecord::sample(&start.to_rfc3339(), 90, zone, Some(rule));
            ev.exdates = vec![start + Duration::days(7)];
            let skipped = expand(&ev, from, to, true);
            let walked = expand(&ev, from, to, false);
            assert_eq!(
                skipped, walked,
                "{rule} in {zone} from {start}, window {from}..{to}"
            );
            compared += 1;
        }
        assert!(compared > 500, "only {compared} cases compared");
    }

    /// A window years after a dense rule's first occurrence costs about
    /// what a window next to it costs (it was a walk from the start).
    #[test]
    fn a_late_window_is_as_cheap_as_an_early_one() {
        let ev = EventRecord::sample(
            "2000-01-03T09:00:00Z",
            30,
            "Europe/Madrid",
            Some("FREQ=HOURLY"),
        );
        let steps = |from: DateTime<Utc>| {
            let started = std::time::Instant::now();
            let n = occurrences(&ev, from, from + Duration::days(7)).len();
            (n, started.elapsed())
        };
        let (early, _) = steps(utc("2000-01-10T00:00:00Z"));
        let (late, took) = steps(utc("2090-01-10T00:00:00Z"));
        assert_eq!((early, late), (7 * 24, 7 * 24));
        // Walking 90 years of hourly occurrences takes seconds; a week, far
        // under one.
        assert!(took < std::time::Duration::from_millis(500), "{took:?}");
    }

    fn event(start: &str, minutes: i64, zone: &str, rrule: Option<&str>) -> EventRecord {
        EventRecord::sample(start, minutes, zone, rrule)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weekly_keeps_local_time_across_dst_end() {
        // Madrid leaves summer time on 2026-10-25.
        let ev = event(
            "2026-10-12T09:00:00+02:00",
            60,
            "Europe/Madrid",
            Some("FREQ=WEEKLY;COUNT=4"),
        );
        let occ = occurrences(
            &ev,
            utc("2026-10-01T00:00:00Z"),
            utc("2026-12-01T00:00:00Z"),
        );
        let hours: Vec<u32> = occ.iter().map(|o| o.start.hour()).collect();
        assert_eq!(hours, vec![7, 7, 8, 8], "UTC hours: {occ:?}");
        let madrid: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
        for o in &occ {
            assert_eq!(o.start.with_timezone(&madrid).hour(), 9);
            assert_eq!(o.end - o.start, Duration::minutes(60));
        }
    }

    #[test]
    fn daily_across_dst_start_in_new_york() {
        // New York enters summer time on 2026-03-08.
        let ev = event(
            "2026-03-06T08:30:00-05:00",
            30,
            "America/New_York",
            Some("FREQ=DAILY;COUNT=4"),
        );
        let occ = occurrences(
            &ev,
            utc("2026-03-01T00:00:00Z"),
            utc("2026-04-01T00:00:00Z"),
        );
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let offsets: Vec<i32> = occ
            .iter()
            .map(|o| o.start.with_timezone(&ny).offset().fix().local_minus_utc() / 3600)
            .collect();
        assert_eq!(offsets, vec![-5, -5, -4, -4]);
        assert!(occ.iter().all(|o| o.start.with_timezone(&ny).hour() == 8));
    }

    #[test]
    fn exdate_removes_one_occurrence() {
        let mut ev = event(
            "2026-01-05T10:00:00Z",
            60,
            "UTC",
            Some("FREQ=DAILY;COUNT=3"),
        );
        ev.exdates = vec![utc("2026-01-06T10:00:00Z")];
        let occ = occurrences(
            &ev,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-02-01T00:00:00Z"),
        );
        let days: Vec<String> = occ.iter().map(|o| o.start.to_rfc3339()).collect();
        assert_eq!(
            days,
            vec!["2026-01-05T10:00:00+00:00", "2026-01-07T10:00:00+00:00"]
        );
    }

    #[test]
    fn window_clips_and_includes_an_occurrence_already_running() {
        let ev = event("2026-01-05T10:00:00Z", 120, "UTC", Some("FREQ=DAILY"));
        let occ = occurrences(
            &ev,
            utc("2026-01-07T11:00:00Z"),
            utc("2026-01-08T11:00:00Z"),
        );
        let starts: Vec<String> = occ.iter().map(|o| o.start.to_rfc3339()).collect();
        assert_eq!(
            starts,
            vec!["2026-01-07T10:00:00+00:00", "2026-01-08T10:00:00+00:00"]
        );
        let single = event("2026-01-05T10:00:00Z", 60, "UTC", None);
        assert!(occurrences(
            &single,
            utc("2026-01-05T11:00:00Z"),
            utc("2026-01-06T00:00:00Z")
        )
        .is_empty());
        assert_eq!(
            occurrences(
                &single,
                utc("2026-01-05T10:30:00Z"),
                utc("2026-01-06T00:00:00Z")
            )
            .len(),
            1
        );
    }

    #[test]
    fn bad_rules_are_field_errors() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let tz: chrono_tz::Tz = "UTC".parse().unwrap();
        for bad in [
            "",
            "FREQ=SOMETIMES",
            "FREQ=DAILY;COUNT=x",
            "DTSTART:2020\nFREQ=DAILY",
        ] {
            let e = check(bad, start, tz).unwrap_err();
            assert_eq!(e.details["field"], "rrule", "{bad:?}");
        }
        assert_eq!(
            check("RRULE:FREQ=WEEKLY;BYDAY=MO", start, tz).unwrap(),
            "FREQ=WEEKLY;BYDAY=MO"
        );
    }
}
