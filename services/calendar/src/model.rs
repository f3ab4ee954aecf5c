//! Resource types: what is stored in agenda-db and what clients see.
//!
//! Stored records are the `*Record` types (JSON values under the keys of
//! [`crate::keys`]); the public shapes of DESIGN.md are the others.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A stored account (the password hash never leaves the users service).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub time_zone: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Who may put events straight into this person's agenda (records of
    /// earlier versions have none: the default).
    #[serde(default)]
    pub add_me: AddMe,
    /// May read the audit log (`agendactl user grant-admin`).
    #[serde(default)]
    pub admin: bool,
}

/// Who may add a person to an event directly (it lands in their agenda at
/// once); anyone else's event arrives as an invitation they accept or
/// decline (attendee status `invited`, not in their agenda meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddMe {
    Anyone,
    /// People who share a group with them.
    #[default]
    SharedGroup,
    /// Nobody: every event arrives as an invitation.
    Nobody,
}

/// Public user shape. `email` and `add_me` only appear on your own profile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub display_name: String,
    pub time_zone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_me: Option<AddMe>,
}

impl UserRecord {
    /// The name others read: the display name, else the username.
    pub fn name_shown(&self) -> &str {
        if self.display_name.is_empty() {
            &self.username
        } else {
            &self.display_name
        }
    }

    /// The profile as its owner sees it.
    pub fn view_own(&self) -> User {
        User {
            email: Some(self.email.clone()),
            add_me: Some(self.add_me),
            ..self.view_public()
        }
    }
    /// The profile as anyone else sees it.
    pub fn view_public(&self) -> User {
        User {
            id: self.id,
            username: self.username.clone(),
            email: None,
            display_name: self.display_name.clone(),
            time_zone: self.time_zone.clone(),
            add_me: None,
        }
    }
}

/// Group structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Ranked members; 0 is the top.
    Hierarchical,
    /// Everyone equal but the owner.
    Flat,
}

/// A stored group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub kind: GroupKind,
    pub parent_id: Option<Uuid>,
    pub owner_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Public group shape, from one member's point of view.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Group {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub kind: GroupKind,
    pub parent_id: Option<Uuid>,
    pub owner_id: Uuid,
    pub my_rank: u32,
    /// Its subgroups (in `GET /v1/groups/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subgroups: Option<Vec<GroupRef>>,
}

/// A group named by id and name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupRef {
    pub id: Uuid,
    pub name: String,
}

impl GroupRecord {
    /// The group as a member of rank `my_rank` sees it.
    pub fn view(&self, my_rank: u32) -> Group {
        Group {
            id: self.id,
            name: self.name.clone(),
            description: self.description.clone(),
            kind: self.kind,
            parent_id: self.parent_id,
            owner_id: self.owner_id,
            my_rank,
            subgroups: None,
        }
    }
}

/// A member of a group (stored and public shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub username: String,
    pub rank: u32,
}

/// Answer to an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    /// Withdrawn by a member who may manage it, or found no longer valid
    /// when answered (its sender left or was demoted).
    Revoked,
}

/// An invitation to join a group (stored and public shape).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Invitation {
    pub id: Uuid,
    pub group_id: Uuid,
    pub group_name: String,
    pub invited_by: Uuid,
    pub invitee_id: Uuid,
    pub rank: u32,
    pub status: InvitationStatus,
    pub created_at: DateTime<Utc>,
}

/// An attendee's answer to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttendeeStatus {
    NeedsAction,
    Accepted,
    Declined,
    Tentative,
    /// Asked by someone they do not let add them directly ([`AddMe`]):
    /// not in their agenda, not busy, until they answer.
    Invited,
}

/// Who sees an event's details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// The hierarchy rules decide.
    #[default]
    Default,
    /// Busy for everyone but the organizer and attendees.
    Private,
}

/// One participant of an event. The organizer is always the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attendee {
    pub user_id: Uuid,
    pub username: String,
    pub status: AttendeeStatus,
}

/// One occurrence of a series as changed on its own: when it happens now
/// and what it says (None: as the series).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OccurrenceChange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// One occurrence of an event: when it happens, and the start the rule
/// gives it (`original`, what names it even when it was moved on its own;
/// for a one-off event its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub original: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Occurrence {
    /// When it happens.
    pub fn interval(&self) -> Interval {
        Interval {
            start: self.start,
            end: self.end,
        }
    }
}

/// A stored event. A copy lives in every participant's agenda.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub location: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub time_zone: String,
    pub rrule: Option<String>,
    #[serde(default)]
    pub exdates: Vec<DateTime<Utc>>,
    pub organizer_id: Uuid,
    pub group_id: Option<Uuid>,
    pub visibility: Visibility,
    pub attendees: Vec<Attendee>,
    pub created_at: DateTime<Utc>,
    /// An all-day event: it runs from midnight to midnight in its time
    /// zone, shown as dates, and is free time (no conflicts, not busy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_day: bool,
    /// Each person's reminders: minutes before every occurrence
    /// (`reminders::check`). A person sees only their own.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reminders: std::collections::BTreeMap<Uuid, Vec<u32>>,
    /// Occurrences of a series changed on their own (iCalendar's
    /// RECURRENCE-ID), by the start the rule gives them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub overrides: std::collections::BTreeMap<DateTime<Utc>, OccurrenceChange>,
    /// For an event created under an idempotency key: a digest of the
    /// creating request, to tell a retry from another request reusing the
    /// key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<Uuid>,
    /// Where the event came from outside (an iCalendar file or a CalDAV
    /// client): its UID there and the resource name a client gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ical: Option<IcalOrigin>,
    /// Attendees without an account here (`mailto:` addresses a calendar
    /// app sent): kept and shown, never told anything by us.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_attendees: Vec<ExternalAttendee>,
}

/// See [`EventRecord::ical`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcalOrigin {
    /// The iCalendar UID it was written with.
    pub uid: String,
    /// The CalDAV resource name (`{name}.ics` in its organizer's
    /// calendar) a client put it under, when not `{id}.ics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dav_name: Option<String>,
    /// Properties of its VEVENT that Agenda has no field for (STATUS,
    /// CATEGORIES, URL, X-...), kept as written (unfolded content lines)
    /// and given back to its organizer's clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

/// See [`EventRecord::external_attendees`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExternalAttendee {
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// As the calendar app said (iCalendar PARTSTAT, lower case).
    pub status: AttendeeStatus,
}

impl EventRecord {
    /// Status of `user` (None: not a participant).
    pub fn status_of(&self, user: Uuid) -> Option<AttendeeStatus> {
        self.attendees
            .iter()
            .find(|a| a.user_id == user)
            .map(|a| a.status)
    }

    /// Every attendee's id, those only invited included (the people told
    /// about changes).
    pub fn attendee_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.attendees.iter().map(|a| a.user_id)
    }

    /// The people whose agendas hold the event: every attendee but those
    /// only invited so far.
    pub fn participants(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.attendees
            .iter()
            .filter(|a| a.status != AttendeeStatus::Invited)
            .map(|a| a.user_id)
    }
}

#[cfg(test)]
impl EventRecord {
    /// An event without attendees, for unit tests: `minutes` long from `start`
    /// (RFC 3339) in `zone`, recurring by `rrule` if given.
    pub(crate) fn sample(start: &str, minutes: i64, zone: &str, rrule: Option<&str>) -> Self {
        let start = DateTime::parse_from_rfc3339(start)
            .expect("RFC 3339 start")
            .with_timezone(&Utc);
        EventRecord {
            id: Uuid::new_v4(),
            title: "t".into(),
            description: String::new(),
            location: String::new(),
            start,
            end: start + chrono::Duration::minutes(minutes),
            time_zone: zone.into(),
            rrule: rrule.map(str::to_string),
            exdates: Vec::new(),
            organizer_id: Uuid::new_v4(),
            group_id: None,
            visibility: Visibility::Default,
            attendees: Vec::new(),
            created_at: Utc::now(),
            all_day: false,
            reminders: Default::default(),
            overrides: Default::default(),
            request_digest: None,
            ical: None,
            external_attendees: Vec::new(),
        }
    }
}

/// Public event shape (also one expanded occurrence of a recurring event).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub location: String,
    #[schema(value_type = String, format = DateTime)]
    pub start: DateTime<FixedOffset>,
    #[schema(value_type = String, format = DateTime)]
    pub end: DateTime<FixedOffset>,
    pub time_zone: String,
    pub rrule: Option<String>,
    #[schema(value_type = Vec<String>)]
    pub exdates: Vec<DateTime<FixedOffset>>,
    pub organizer_id: Uuid,
    pub group_id: Option<Uuid>,
    pub visibility: Visibility,
    pub attendees: Vec<Attendee>,
    pub my_status: Option<AttendeeStatus>,
    /// An all-day event: `start_date` and `end_date` are what it means
    /// (`start` and `end` are the midnights of its time zone).
    pub all_day: bool,
    /// Its first day (all-day events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Date)]
    pub start_date: Option<chrono::NaiveDate>,
    /// The day after its last (exclusive, all-day events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Date)]
    pub end_date: Option<chrono::NaiveDate>,
    /// The viewer's own reminders: minutes before each occurrence.
    pub reminders: Vec<u32>,
    /// Set on an expanded occurrence of a series: its own id
    /// (`{id}_{YYYYMMDDTHHMMSSZ}`, the start the rule gives it, in UTC),
    /// for `GET`, `PATCH` and `DELETE /v1/events/{id}` of that occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurrence_id: Option<String>,
    /// Set on an expanded occurrence: the recurring event it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurring_event_id: Option<Uuid>,
}

/// An overlapping event reported when creating, moving or accepting. The
/// caller sees its id and title only for events they take part in (their
/// own agenda, or an event they organize or attend); anyone else's is a
/// busy block: `event_id` and `title` null, the time and whose it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Conflict {
    pub event_id: Option<Uuid>,
    pub title: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub start: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub end: DateTime<Utc>,
    pub user_id: Uuid,
}

/// A busy interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Interval {
    #[schema(value_type = String, format = DateTime)]
    pub start: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub end: DateTime<Utc>,
}

/// A stored notification for one person.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// Time-ordered (UUID v7), so the key order is the creation order.
    pub id: Uuid,
    pub kind: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    pub read: bool,
    pub data: serde_json::Value,
}

/// One login's chain of refresh tokens. A refresh token is
/// `{family}.{secret}`; only the SHA-256 of the current secret is kept,
/// and each use replaces it (compare-and-swap on this record), so a spent
/// token no longer matches: presenting one ends the whole chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshFamily {
    pub user_id: Uuid,
    /// Hex SHA-256 of the current secret.
    pub hash: String,
    /// The session generation it belongs to: a later one ends it.
    pub generation: u64,
    pub expires_at: DateTime<Utc>,
    /// When the chain last moved, if that move carried an idempotency key
    /// (its repeat is answered again for a while: `store::sessions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_at: Option<DateTime<Utc>>,
}
