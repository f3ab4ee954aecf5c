//! The agenda-db key layout, in one place.
//!
//! Every value is JSON. An event has one record (found by id, compared by
//! every change of it) and a copy in each participant's agenda, filed by
//! time: a one-off event of at most [`SHORT_EVENT`] under its start, the
//! rest (recurring or long) under `r/`. A time window of an agenda is then
//! two reads (a key span and `r/`) instead of the whole agenda. Every write
//! of an event rewrites the record and all copies in one transaction and
//! bumps each participant's agenda version, which is what concurrent
//! writers compare on.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::model::EventRecord;

/// Longest one-off event filed under its start time. A window `[from, to)`
/// reads the starts in `[from - SHORT_EVENT, to)`, so this bounds how much
/// before the window is read.
pub const SHORT_EVENT: Duration = Duration::days(1);

/// Root of all calendar data.
pub const ROOT: &str = "/agenda/";

pub fn user(id: Uuid) -> String {
    format!("/agenda/users/{id}")
}
pub const USERS: &str = "/agenda/users/";
/// A word a person is found by (value: empty; the words are
/// [`crate::rules::words_of`]): the user search reads the span of the
/// words that begin with what was typed, not every account.
pub fn name_word(word: &str, user: Uuid) -> String {
    format!("/agenda/name-words/{word}/{user}")
}
/// Every account's words.
pub const NAME_WORDS: &str = "/agenda/name-words/";
/// The entries of every word that begins with `start`.
pub fn name_words_from(start: &str) -> String {
    format!("/agenda/name-words/{start}")
}
/// Lower-cased username -> user id.
pub fn username(name: &str) -> String {
    format!("/agenda/usernames/{}", name.to_lowercase())
}
/// Lower-cased email -> user id.
pub fn email(email: &str) -> String {
    format!("/agenda/emails/{}", email.to_lowercase())
}
/// Version key of a person's agenda: every change to their events bumps it.
pub fn agenda_version(user: Uuid) -> String {
    format!("/agenda/agenda-version/{user}")
}
/// The record of an event.
pub fn event(id: Uuid) -> String {
    format!("/agenda/events/{id}")
}
/// Every event record.
pub const EVENTS: &str = "/agenda/events/";
/// An event of a group (value: empty, written again at every change of
/// the event, so its revision says when it changed): what members who
/// join or leave later are added to or taken out of. Filed by when its
/// last occurrence ends (`~`: never), so a join reads only those not over
/// yet, not every event the group ever had; under the group's prefix by
/// id alone until layout 5 ([`layout4_group_event`]).
pub fn group_event(group: Uuid, ev: &EventRecord) -> String {
    let ends = match crate::recurrence::ends_by(ev) {
        Some(end) => at(end),
        None => "~".to_string(),
    };
    format!("/agenda/group-events/{group}/{ends}/{}", ev.id)
}
pub fn group_events(group: Uuid) -> String {
    format!("/agenda/group-events/{group}/")
}
/// Every group's event index.
pub const GROUP_EVENTS: &str = "/agenda/group-events/";
/// The key span of `group`'s events not over by `now` (and those that
/// never end).
pub fn group_events_ahead(group: Uuid, now: DateTime<Utc>) -> (String, String) {
    let prefix = group_events(group);
    (format!("{prefix}{}", at(now)), prefix_end(&prefix))
}
/// A layout-4 entry of a group's event index, by id alone.
pub fn group_event_by_id(group: Uuid, event: Uuid) -> String {
    format!("/agenda/group-events/{group}/{event}")
}
/// The key span of `group`'s index entries in layout 4, by id alone: an
/// id's first character is a hex digit, below the `t` and `~` that begin
/// every filed entry.
pub fn group_events_by_id(group: Uuid) -> (String, String) {
    let prefix = group_events(group);
    (prefix.clone(), format!("{prefix}g"))
}
/// Members whose part in their group's events is being brought in line
/// with a join or a departure (see `Store::sync_group_member`).
pub const GROUP_SYNCS: &str = "/agenda/group-sync/";
pub fn group_sync(group: Uuid, user: Uuid) -> String {
    format!("/agenda/group-sync/{group}/{user}")
}
/// A person's copy of an event, filed by time (see [`filing`]).
pub fn agenda_event(user: Uuid, ev: &EventRecord) -> String {
    agenda_copy(user, &filing(ev), ev.id)
}
/// Where `ev`'s copy goes in an agenda: a short one-off event by its
/// start (a window reads the span of starts that may overlap it); a
/// recurring or long one under `r/` by when its last occurrence ends
/// (`r/~`: never), so a window reads only those not over by its start,
/// not every series a person ever had. Worked out once for a write to
/// many agendas: a counted rule is expanded.
pub fn filing(ev: &EventRecord) -> String {
    let long = ev.rrule.is_some() || ev.end - ev.start > SHORT_EVENT;
    if !long {
        return at(ev.start);
    }
    match crate::recurrence::ends_by(ev) {
        Some(end) => format!("r/{}", at(end)),
        None => "r/~".to_string(),
    }
}
/// The copy of event `id` in `user`'s agenda, filed at `filing`.
pub fn agenda_copy(user: Uuid, filing: &str, id: Uuid) -> String {
    format!("/agenda/agenda/{user}/{filing}/{id}")
}
/// Every agenda copy of everyone.
pub const AGENDAS: &str = "/agenda/agenda/";
/// A person's whole agenda.
pub fn agenda(user: Uuid) -> String {
    format!("/agenda/agenda/{user}/")
}
/// A person's recurring and long events.
pub fn agenda_long(user: Uuid) -> String {
    format!("/agenda/agenda/{user}/r/")
}
/// The key span of a person's recurring and long events that may overlap
/// a window from `from` on: those not over before it (the unending last).
pub fn agenda_long_span(user: Uuid, from: DateTime<Utc>) -> (String, String) {
    (
        format!("{}{}", agenda_long(user), at(from)),
        prefix_end(&agenda_long(user)),
    )
}
/// The key span `[start, end)` of a person's one-off events that may
/// overlap `[from, to)` (a little more, never less).
pub fn agenda_span(user: Uuid, from: DateTime<Utc>, to: DateTime<Utc>) -> (String, String) {
    let to = to + Duration::seconds(1); // starts are kept to the second
    (
        format!("/agenda/agenda/{user}/{}", at(from - SHORT_EVENT)),
        format!("/agenda/agenda/{user}/{}", at(to)),
    )
}

/// A start time as a key part whose byte order is time order: `t` and
/// the seconds as 16 hex digits with the sign bit flipped, so times
/// before 1970 sort first too.
fn at(t: DateTime<Utc>) -> String {
    format!("t{:016x}", (t.timestamp() as u64) ^ (1 << 63))
}
/// A reminder waiting to fire, filed by when it is due (value: the
/// [`crate::reminders::Due`]).
pub fn reminder(due: &crate::reminders::Due) -> String {
    format!(
        "/agenda/reminders/{}/{}/{}/{}",
        at(due.at),
        due.event_id,
        due.user_id,
        due.minutes
    )
}
/// Every reminder waiting to fire.
pub const REMINDERS: &str = "/agenda/reminders/";
/// Where the reminders due at `t` or before end (exclusive).
pub fn reminders_until(t: DateTime<Utc>) -> String {
    format!("/agenda/reminders/{}", at(t + chrono::Duration::seconds(1)))
}
/// An event's reminders waiting to fire (value: the list of their
/// [`crate::reminders::Due`]), rewritten with every change of them.
pub fn event_reminders(event: Uuid) -> String {
    format!("/agenda/event-reminders/{event}")
}
pub fn notification(user: Uuid, id: Uuid) -> String {
    format!("/agenda/notifications/{user}/{id}")
}
/// Every notification of every user (the relay's outbox).
pub const NOTIFICATIONS: &str = "/agenda/notifications/";
pub fn notifications(user: Uuid) -> String {
    format!("/agenda/notifications/{user}/")
}
/// The user and id parts of a [`notification`] key, as written (the relay
/// publishes them as they are), None for any other key.
pub fn notification_parts(key: &[u8]) -> Option<(&str, &str)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.strip_prefix(NOTIFICATIONS)?.split('/');
    Some((parts.next()?, parts.next()?))
}
/// A person's session generation: the key's version (every put moves it
/// by one, in the same transaction as a password change, "log out
/// everywhere" or the account's deletion, whose put says `deleted`).
/// Access tokens carry the version they were issued at; the gateways
/// follow this prefix and refuse older ones. Never deleted while the
/// account lives, so a version never starts over; a deleted account's
/// goes once no token of it can be alive ([`ended_session`]).
pub const SESSIONS: &str = "/agenda/sessions/";
pub fn session(user: Uuid) -> String {
    format!("/agenda/sessions/{user}")
}
/// The person a [`session`] key belongs to.
pub fn session_user(key: &[u8]) -> Option<Uuid> {
    let key = std::str::from_utf8(key).ok()?;
    Uuid::parse_str(key.strip_prefix(SESSIONS)?).ok()
}
/// The value the deletion of an account puts in its session key.
pub const SESSION_DELETED: &[u8] = b"deleted";
/// A deleted account's [`session`] key waiting to be forgotten, filed by
/// when the account went (value empty; see
/// `Store::forget_ended_sessions`).
pub fn ended_session(when: DateTime<Utc>, user: Uuid) -> String {
    format!("/agenda/ended-sessions/{}/{user}", at(when))
}
/// Every deleted account's session key waiting to be forgotten.
pub const ENDED_SESSIONS: &str = "/agenda/ended-sessions/";
/// Where those of accounts deleted at `t` or before end (exclusive).
pub fn ended_sessions_until(t: DateTime<Utc>) -> String {
    format!(
        "/agenda/ended-sessions/{}",
        at(t + chrono::Duration::seconds(1))
    )
}
/// One login's chain of refresh tokens (value: [`crate::model::RefreshFamily`]).
pub fn refresh_family(family: Uuid) -> String {
    format!("/agenda/refresh/{family}")
}
/// The layout version of the data (`store::upgrade` moves older data).
pub const LAYOUT: &str = "/agenda/layout";
/// How far the notification relay (in `agenda-users`) has read.
pub const RELAY_CURSOR: &str = "/agenda/relay/cursor";
/// The audit log (value: [`crate::audit::AuditEntry`]), in time order.
pub const AUDIT: &str = "/agenda/audit/";
pub fn audit(id: Uuid) -> String {
    format!("/agenda/audit/{id}")
}
/// The first key after the entry `id` in byte order (where the page after
/// it starts).
pub fn audit_after(id: Uuid) -> String {
    format!("{}\u{0}", audit(id))
}
/// Accounts whose deletion is under way (see `Store::delete_user`).
pub const DELETING: &str = "/agenda/deleting/";
pub fn deleting(user: Uuid) -> String {
    format!("/agenda/deleting/{user}")
}
pub fn group(id: Uuid) -> String {
    format!("/agenda/groups/{id}")
}
/// A subgroup of `parent` (value: empty).
pub fn subgroup(parent: Uuid, child: Uuid) -> String {
    format!("/agenda/subgroups/{parent}/{child}")
}
pub fn subgroups(parent: Uuid) -> String {
    format!("/agenda/subgroups/{parent}/")
}
/// Bumped by every membership change of a group (and by attaching a
/// subgroup to it).
pub fn group_version(id: Uuid) -> String {
    format!("/agenda/group-version/{id}")
}
pub fn member(group: Uuid, user: Uuid) -> String {
    format!("/agenda/members/{group}/{user}")
}
pub fn members(group: Uuid) -> String {
    format!("/agenda/members/{group}/")
}
/// A person's groups (value: empty).
pub fn user_group(user: Uuid, group: Uuid) -> String {
    format!("/agenda/user-groups/{user}/{group}")
}
pub fn user_groups(user: Uuid) -> String {
    format!("/agenda/user-groups/{user}/")
}
pub fn invitation(id: Uuid) -> String {
    format!("/agenda/invitations/{id}")
}
/// A person's invitations (value: empty).
pub fn user_invitation(user: Uuid, id: Uuid) -> String {
    format!("/agenda/user-invitations/{user}/{id}")
}
pub fn user_invitations(user: Uuid) -> String {
    format!("/agenda/user-invitations/{user}/")
}
/// Present while `user` has a pending invitation to `group` (value: its id).
pub fn pending_invitation(group: Uuid, user: Uuid) -> String {
    format!("/agenda/pending-invitations/{group}/{user}")
}
pub fn pending_invitations(group: Uuid) -> String {
    format!("/agenda/pending-invitations/{group}/")
}

/// The key of the keyed hashes of app passwords and feed keys (readable
/// by agenda-users only, as the token keys).
pub const CALENDAR_APPS_SECRET: &str = "/secrets/calendar-apps";
/// An app password of a person (value: [`crate::model::AppPassword`]).
pub fn app_password(user: Uuid, id: Uuid) -> String {
    format!("/agenda/app-passwords/{user}/{id}")
}
pub fn app_passwords(user: Uuid) -> String {
    format!("/agenda/app-passwords/{user}/")
}
/// The keyed hash of an app password -> its owner and id.
pub fn app_password_hash(hash: &str) -> String {
    format!("/agenda/app-password-hashes/{hash}")
}
/// The keyed hash of a feed key -> whose feed it is.
pub fn feed(hash: &str) -> String {
    format!("/agenda/feeds/{hash}")
}
/// The hash of a person's current feed (of their agenda, or of `group`).
pub fn feed_of(user: Uuid, group: Option<Uuid>) -> String {
    match group {
        Some(g) => format!("/agenda/feed-of/{user}/{g}"),
        None => format!("/agenda/feed-of/{user}/me"),
    }
}
pub fn feeds_of(user: Uuid) -> String {
    format!("/agenda/feed-of/{user}/")
}
/// An event gone from a CalDAV calendar (a person's, or a group's), kept
/// so a client's next sync hears of it; its revision is when.
pub fn dav_gone(calendar: Uuid, event: Uuid) -> String {
    format!("/agenda/dav-gone/{calendar}/{event}")
}
pub fn dav_gones(calendar: Uuid) -> String {
    format!("/agenda/dav-gone/{calendar}/")
}
/// Every tombstone of every calendar.
pub const DAV_GONE: &str = "/agenda/dav-gone/";
/// The calendar of a [`dav_gone`] key.
pub fn dav_gone_calendar(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(DAV_GONE)?;
    Uuid::parse_str(rest.split('/').next()?).ok()
}
/// Sync tokens of a calendar up to this key's value (a revision) are
/// expired: the tombstones they would need were dropped.
pub fn dav_floor(calendar: Uuid) -> String {
    format!("/agenda/dav-floor/{calendar}")
}

/// The user and event of an agenda copy in layout 1, which kept it at
/// `/agenda/agenda/{user}/{event}` (see `store::upgrade`); None for any
/// other key, a copy filed by time or under `r/` included.
pub fn layout1_agenda_event(key: &[u8]) -> Option<(Uuid, Uuid)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(AGENDAS)?;
    let (user, event) = rest.split_once('/')?;
    Some((Uuid::parse_str(user).ok()?, Uuid::parse_str(event).ok()?))
}

/// The user and event of a layout-3 copy of a recurring or long event,
/// filed under `r/` by id alone (`/agenda/agenda/{user}/r/{id}`).
pub fn layout3_long_copy(key: &[u8]) -> Option<(Uuid, Uuid)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(AGENDAS)?;
    let (user, rest) = rest.split_once('/')?;
    let id = rest.strip_prefix("r/")?;
    Some((Uuid::parse_str(user).ok()?, Uuid::parse_str(id).ok()?))
}

/// The group and event of a layout-4 entry of a group's event index, by
/// id alone (`/agenda/group-events/{group}/{event}`); None for a filed one.
pub fn layout4_group_event(key: &[u8]) -> Option<(Uuid, Uuid)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(GROUP_EVENTS)?;
    let (group, event) = rest.split_once('/')?;
    Some((Uuid::parse_str(group).ok()?, Uuid::parse_str(event).ok()?))
}

pub use agenda_common::db_client::prefix_end;

/// The id after the last `/` of a key.
pub fn last_id(key: &[u8]) -> Option<Uuid> {
    let s = std::str::from_utf8(key).ok()?;
    Uuid::parse_str(s.rsplit('/').next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(start: &str, hours: i64, rrule: Option<&str>) -> EventRecord {
        EventRecord::sample(start, hours * 60, "UTC", rrule)
    }

    fn in_span(key: &str, span: &(String, String)) -> bool {
        span.0.as_str() <= key && key < span.1.as_str()
    }

    #[test]
    fn a_session_key_names_its_person() {
        let u = Uuid::new_v4();
        assert_eq!(session_user(session(u).as_bytes()), Some(u));
        assert_eq!(session_user(b"/agenda/sessions/not-a-uuid"), None);
        assert_eq!(session_user(refresh_family(u).as_bytes()), None);
        assert_eq!(session_user(&[0xff, 0xfe]), None);
    }

    #[test]
    fn only_layout1_keys_are_recognised() {
        let (u, e) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            layout1_agenda_event(format!("/agenda/agenda/{u}/{e}").as_bytes()),
            Some((u, e))
        );
        let ev = EventRecord::sample("2027-03-10T09:00:00Z", 60, "UTC", None);
        let recurring = EventRecord::sample("2027-03-10T09:00:00Z", 60, "UTC", Some("FREQ=DAILY"));
        for key in [
            agenda_event(u, &ev),
            agenda_event(u, &recurring),
            super::event(e),
        ] {
            assert_eq!(layout1_agenda_event(key.as_bytes()), None, "{key}");
        }
    }

    #[test]
    fn a_prefix_span_ends_just_past_its_keys() {
        let end = prefix_end(NOTIFICATIONS);
        assert_eq!(end, "/agenda/notifications0");
        let key = notification(Uuid::max(), Uuid::max());
        assert!(NOTIFICATIONS < key.as_str() && key.as_str() < end.as_str());
        assert!(
            end.as_str() < "/agenda/notifications1" && "/agenda/notifications-" < NOTIFICATIONS
        );
    }

    #[test]
    fn a_groups_events_are_filed_by_their_end_and_a_join_reads_those_ahead() {
        let g = Uuid::new_v4();
        let now: DateTime<Utc> = "2027-03-10T12:00:00Z".parse().unwrap();
        let ahead = group_events_ahead(g, now);
        let by_id = group_events_by_id(g);
        let cases = [
            (event("2027-03-10T09:00:00Z", 2, None), false), // over at 11:00
            (event("2027-03-10T11:00:00Z", 2, None), true),  // until 13:00
            (
                event("2026-01-05T09:00:00Z", 1, Some("FREQ=WEEKLY;COUNT=3")),
                false,
            ),
            (
                event(
                    "2026-01-05T09:00:00Z",
                    1,
                    Some("FREQ=WEEKLY;UNTIL=20270401T000000Z"),
                ),
                true,
            ),
            (event("2020-01-06T09:00:00Z", 1, Some("FREQ=WEEKLY")), true), // never ends
        ];
        for (ev, is_ahead) in &cases {
            let key = group_event(g, ev);
            assert!(key.starts_with(&group_events(g)) && key.ends_with(&ev.id.to_string()));
            assert_eq!(in_span(&key, &ahead), *is_ahead, "{key}");
            assert!(!in_span(&key, &by_id), "{key}");
            assert_eq!(layout4_group_event(key.as_bytes()), None, "{key}");
            assert_eq!(last_id(key.as_bytes()), Some(ev.id));
        }
        // Layout 4's entries by id: all in their own span, none in the other.
        for id in [Uuid::nil(), Uuid::max(), Uuid::new_v4()] {
            let old = group_event_by_id(g, id);
            assert!(in_span(&old, &by_id) && !in_span(&old, &ahead), "{old}");
            assert_eq!(layout4_group_event(old.as_bytes()), Some((g, id)));
        }
        // Another group's entries are in neither.
        let other = group_event(Uuid::new_v4(), &cases[1].0);
        assert!(!in_span(&other, &ahead) && !in_span(&other, &by_id));
    }

    #[test]
    fn only_layout3_long_copies_are_recognised() {
        let (u, e) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            layout3_long_copy(format!("/agenda/agenda/{u}/r/{e}").as_bytes()),
            Some((u, e))
        );
        let mut recurring = event("2027-03-10T09:00:00Z", 1, Some("FREQ=DAILY"));
        recurring.id = e;
        let ended = event("2027-03-10T09:00:00Z", 1, Some("FREQ=DAILY;COUNT=3"));
        let long = event("2027-03-08T00:00:00Z", 72, None);
        let short = event("2027-03-10T09:00:00Z", 1, None);
        for ev in [&recurring, &ended, &long, &short] {
            let key = agenda_event(u, ev);
            assert_eq!(layout3_long_copy(key.as_bytes()), None, "{key}");
        }
        assert_eq!(
            layout1_agenda_event(format!("/agenda/agenda/{u}/r/{e}").as_bytes()),
            None
        );
    }

    /// A window reads the recurring and long events not over before it:
    /// every one with an occurrence in it, none that ended before it.
    #[test]
    fn a_window_reads_the_series_not_over_before_it() {
        let user = Uuid::new_v4();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let weekly = |rule: &str| event("2019-01-07T09:00:00Z", 1, Some(rule));
        let cases = [
            // (event, a window with one of its occurrences, a window after its end)
            (
                weekly("FREQ=WEEKLY;COUNT=10"),
                "2019-03-11T00:00:00Z",
                Some("2019-03-18T00:00:00Z"),
            ),
            (
                weekly("FREQ=WEEKLY;UNTIL=20190311T090000Z"),
                "2019-03-11T00:00:00Z",
                Some("2019-03-14T00:00:00Z"),
            ),
            (weekly("FREQ=WEEKLY"), "2031-03-10T00:00:00Z", None),
            (
                event("2027-03-08T00:00:00Z", 72, None),
                "2027-03-10T23:00:00Z",
                Some("2027-03-11T00:00:01Z"),
            ),
        ];
        for (ev, during, after) in cases {
            let key = agenda_event(user, &ev);
            assert!(key.starts_with(&agenda_long(user)), "{key}");
            let from = t(during);
            assert!(
                in_span(&key, &agenda_long_span(user, from)),
                "{:?} is not read from {during}",
                ev.rrule
            );
            assert!(in_span(
                &key,
                &agenda_long_span(user, t("2000-01-01T00:00:00Z"))
            ));
            match after {
                Some(after) => assert!(
                    !in_span(&key, &agenda_long_span(user, t(after))),
                    "{:?} is still read from {after}",
                    ev.rrule
                ),
                None => assert!(in_span(
                    &key,
                    &agenda_long_span(user, t("2099-01-01T00:00:00Z"))
                )),
            }
        }
    }

    #[test]
    fn notification_keys_read_back() {
        let (u, n) = (Uuid::new_v4(), Uuid::new_v4());
        let (user, id) = (u.to_string(), n.to_string());
        assert_eq!(
            notification_parts(notification(u, n).as_bytes()),
            Some((user.as_str(), id.as_str()))
        );
        let only_user = format!("{NOTIFICATIONS}{u}");
        assert_eq!(notification_parts(only_user.as_bytes()), None);
        assert_eq!(notification_parts(super::event(n).as_bytes()), None);
    }

    #[test]
    fn the_page_after_an_audit_entry_starts_past_it() {
        let a = Uuid::now_v7();
        assert!(audit(a) < audit_after(a));
        let later = Uuid::from_u128(a.as_u128() + 1);
        assert!(audit_after(a) < audit(later));
    }

    #[test]
    fn start_keys_sort_in_time_order_across_1970() {
        let times = [
            "1960-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "2027-03-01T10:00:00Z",
            "2100-01-01T00:00:00Z",
        ];
        let keys: Vec<String> = times
            .iter()
            .map(|t| at(DateTime::parse_from_rfc3339(t).unwrap().to_utc()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn a_window_span_holds_every_short_event_that_overlaps_it() {
        let user = Uuid::new_v4();
        let from = DateTime::parse_from_rfc3339("2027-03-10T00:00:00Z")
            .unwrap()
            .to_utc();
        let span = agenda_span(user, from, from + Duration::days(7));
        // Started the day before and still running; the last second; a
        // sub-second start just before the end.
        for (start, hours) in [
            ("2027-03-09T01:00:00Z", 23),
            ("2027-03-16T23:59:59Z", 1),
            ("2027-03-16T23:59:59.900Z", 1),
        ] {
            let ev = event(start, hours, None);
            assert!(in_span(&agenda_event(user, &ev), &span), "{start}");
        }
        // Long before, and starting at the window's end.
        for start in ["2027-03-01T00:00:00Z", "2027-03-17T00:00:01Z"] {
            assert!(
                !in_span(&agenda_event(user, &event(start, 1, None)), &span),
                "{start}"
            );
        }
        // Recurring and long events are outside every span: under r/.
        for ev in [
            event("2027-03-10T09:00:00Z", 1, Some("FREQ=DAILY")),
            event("2027-03-08T00:00:00Z", 72, None),
        ] {
            let key = agenda_event(user, &ev);
            assert!(key.starts_with(&agenda_long(user)) && !in_span(&key, &span));
        }
    }
}
