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
pub fn occurrences(ev: &EventRecord, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
    let length = ev.end - ev.start;
    let overlaps = |s: DateTime<Utc>| s < to && s + length > from;
    let Some(rule) = ev.rrule.as_deref() else {
        return if overlaps(ev.start) {
            vec![Interval {
                start: ev.start,
                end: ev.end,
            }]
        } else {
            Vec::new()
        };
    };
    let Ok(tz) = ev.time_zone.parse::<chrono_tz::Tz>() else {
        tracing::warn!(event = %ev.id, zone = %ev.time_zone, "stored event has an unknown zone");
        return Vec::new();
    };
    // Validated on write; a rule that fails now (library change) shows the
    // first occurrence rather than failing the whole agenda.
    let set = match parse(rule).and_then(|r| {
        r.build(in_zone(ev.start, tz))
            .map_err(|e| ApiError::invalid_field("rrule", e.to_string()))
    }) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(event = %ev.id, error = %e.message, "stored rrule does not expand");
            return if overlaps(ev.start) {
                vec![Interval {
                    start: ev.start,
                    end: ev.end,
                }]
            } else {
                Vec::new()
            };
        }
    };
    let set = set
        .set_exdates(ev.exdates.iter().map(|t| in_zone(*t, tz)).collect())
        .after(in_zone(from - length, tz))
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
