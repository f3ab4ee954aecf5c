//! Reminders, pure: each person's "N minutes before" of an event, when the
//! next one is due, and what it says. `store::reminders` files what is due
//! and fires it once.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::model::EventRecord;
use crate::{events, recurrence, rules};

/// Most reminders one person sets on one event.
pub const MAX_PER_PERSON: usize = 5;
/// Earliest a reminder may come: four weeks before.
pub const MAX_MINUTES: u32 = 4 * 7 * 24 * 60;

/// One reminder waiting to fire: `user`'s `minutes` before the occurrence
/// of `event_id` that starts at `occurrence`, due at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub minutes: u32,
    pub occurrence: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

/// A person's reminders as asked: minutes before, 0 to [`MAX_MINUTES`],
/// at most [`MAX_PER_PERSON`]; sorted, each once.
pub fn check(minutes: &[u32]) -> ApiResult<Vec<u32>> {
    if minutes.len() > MAX_PER_PERSON {
        return Err(ApiError::invalid_field(
            "reminders",
            "at most 5 reminders per person and event",
        ));
    }
    if minutes.iter().any(|m| *m > MAX_MINUTES) {
        return Err(ApiError::invalid_field(
            "reminders",
            "a reminder comes at most four weeks (40320 minutes) before",
        ));
    }
    let mut out = minutes.to_vec();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The next reminder of `user` `minutes` before an occurrence of `ev`, due
/// strictly after `after`; None when no occurrence within a year has one
/// (or the event is over).
pub fn next(ev: &EventRecord, user: Uuid, minutes: u32, after: DateTime<Utc>) -> Option<Due> {
    let lead = Duration::minutes(i64::from(minutes));
    let from = after + lead;
    recurrence::occurrences(ev, from, from + recurrence::CONFLICT_HORIZON)
        .into_iter()
        .find(|o| o.start - lead > after)
        .map(|o| Due {
            event_id: ev.id,
            user_id: user,
            minutes,
            occurrence: o.start,
            at: o.start - lead,
        })
}

/// Every reminder of `ev` to file as of `now`: the next one of each
/// minutes of each person who keeps the event as busy time (those who
/// declined or were only invited get none).
pub fn schedule(ev: &EventRecord, now: DateTime<Utc>) -> Vec<Due> {
    refile(ev, now, &[])
}

/// [`schedule`] for an event whose reminders `filed` are waiting: one
/// whose time has come but that no replica has fired yet (they were down,
/// or it waits its turn) stays due when the event changes, rather than
/// skipping to the next occurrence.
pub fn refile(ev: &EventRecord, now: DateTime<Utc>, filed: &[Due]) -> Vec<Due> {
    ev.reminders
        .iter()
        .filter(|(user, _)| rules::is_busy_for(ev, **user))
        .flat_map(|(user, list)| {
            list.iter().filter_map(move |m| {
                let after = filed
                    .iter()
                    .filter(|d| d.user_id == *user && d.minutes == *m)
                    .map(|d| d.at - Duration::seconds(1))
                    .fold(now, DateTime::min);
                next(ev, *user, *m, after)
            })
        })
        .collect()
}

/// What the `reminder` notification of `due` says: the event, which
/// occurrence (`start`, `end`) and how long before (`minutes_before`).
pub fn notice(ev: &EventRecord, due: &Due) -> serde_json::Value {
    let mut v = events::summary(ev);
    v["start"] = json!(due.occurrence);
    v["end"] = json!(due.occurrence + (ev.end - ev.start));
    v["minutes_before"] = json!(due.minutes);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attendee, AttendeeStatus};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn weekly_with(user: Uuid, status: AttendeeStatus, minutes: Vec<u32>) -> EventRecord {
        let mut ev = EventRecord::sample(
            "2031-01-06T09:00:00Z",
            60,
            "UTC",
            Some("FREQ=WEEKLY;COUNT=3"),
        );
        ev.attendees = vec![Attendee {
            user_id: user,
            username: "p".into(),
            status,
        }];
        ev.reminders.insert(user, minutes);
        ev
    }

    #[test]
    fn the_next_reminder_is_before_the_next_occurrence_still_ahead() {
        let p = Uuid::new_v4();
        let ev = weekly_with(p, AttendeeStatus::Accepted, vec![15, 1440]);
        let mut due: Vec<(u32, String)> = schedule(&ev, t("2031-01-06T08:50:00Z"))
            .into_iter()
            .map(|d| (d.minutes, d.at.to_rfc3339()))
            .collect();
        due.sort();
        // 15 minutes before today's has passed at 08:50: next week's.
        assert_eq!(
            due,
            [
                (15, "2031-01-13T08:45:00+00:00".to_string()),
                (1440, "2031-01-12T09:00:00+00:00".to_string())
            ]
        );
        let fired = next(&ev, p, 15, t("2031-01-13T08:45:00Z")).unwrap();
        assert_eq!(
            fired.occurrence,
            t("2031-01-20T09:00:00Z"),
            "after firing, the next"
        );
        assert_eq!(
            next(&ev, p, 15, t("2031-01-20T08:45:00Z")),
            None,
            "the series is over"
        );
        assert!(schedule(
            &weekly_with(p, AttendeeStatus::Declined, vec![15]),
            t("2031-01-01T00:00:00Z")
        )
        .is_empty());
        assert!(schedule(
            &weekly_with(p, AttendeeStatus::Invited, vec![15]),
            t("2031-01-01T00:00:00Z")
        )
        .is_empty());
    }

    #[test]
    fn a_reminder_due_but_not_fired_stays_due_when_the_event_changes() {
        let p = Uuid::new_v4();
        let ev = weekly_with(p, AttendeeStatus::Accepted, vec![15]);
        let waiting = schedule(&ev, t("2031-01-06T08:00:00Z"));
        assert_eq!(waiting[0].at, t("2031-01-06T08:45:00Z"));
        // At 08:50 nobody has fired it yet; the event changes (an answer).
        let again = refile(&ev, t("2031-01-06T08:50:00Z"), &waiting);
        assert_eq!(again, waiting, "still due, not next week's");
        assert_eq!(
            schedule(&ev, t("2031-01-06T08:50:00Z"))[0].at,
            t("2031-01-13T08:45:00Z"),
            "without it filed: the next"
        );
    }

    #[test]
    fn reminders_are_bounded_sorted_and_once_each() {
        assert_eq!(check(&[60, 15, 60]).unwrap(), [15, 60]);
        assert!(check(&[1, 2, 3, 4, 5, 6]).is_err());
        assert!(check(&[MAX_MINUTES + 1]).is_err());
        assert_eq!(check(&[0, MAX_MINUTES]).unwrap(), [0, MAX_MINUTES]);
    }
}
