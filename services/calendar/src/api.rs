//! Request bodies of the public API and the operations the gateway sends
//! to the services.
//!
//! Bodies refuse unknown fields. Times and enums arrive as strings and are
//! checked by [`crate::validate`], so a bad value is a 422 naming the field
//! rather than a generic parse error.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `POST /v1/auth/register`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub email: String,
    pub password: String,
    pub display_name: Option<String>,
    pub time_zone: Option<String>,
    /// As in `PATCH /v1/me` (default `shared_group`).
    pub add_me: Option<String>,
}

/// `POST /v1/auth/login`: `username` (or an email in it) or `email`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: String,
}

/// `POST /v1/auth/login` reply.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginReply {
    pub access_token: String,
    pub token_type: String,
    /// Seconds the access token is valid for.
    pub expires_in: u64,
    /// Exchanged once for a new access token and a new refresh token
    /// (`POST /v1/auth/refresh`); a spent one presented again ends the
    /// session.
    pub refresh_token: String,
    /// Seconds the refresh token stays usable unused.
    pub refresh_expires_in: u64,
    pub user: crate::model::User,
}

/// `POST /v1/auth/refresh`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `POST /v1/auth/logout`: ends the session of `refresh_token`, or with
/// `everywhere` every session of the caller (every access token at once).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    pub refresh_token: Option<String>,
    pub everywhere: Option<bool>,
}

/// `PATCH /v1/me`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    pub email: Option<String>,
    /// A new password; needs `current_password`.
    pub password: Option<String>,
    /// The password in use now: required to change it, so a stolen
    /// token alone cannot take the account over.
    pub current_password: Option<String>,
    pub display_name: Option<String>,
    pub time_zone: Option<String>,
    /// Who may add you to events directly: `anyone`, `shared_group`
    /// (people in a group with you; the default) or `nobody` (the rest
    /// arrive as invitations).
    pub add_me: Option<String>,
}

/// `POST /v1/events`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventRequest {
    pub title: String,
    /// RFC 3339; a date (`2030-01-31`) for an all-day event.
    pub start: String,
    /// RFC 3339, after `start`; for an all-day event the day after its
    /// last (exclusive, as iCalendar's DTEND).
    pub end: String,
    /// An all-day event: `start` and `end` are dates.
    pub all_day: Option<bool>,
    /// The creator's own reminders: minutes before each occurrence (at
    /// most 5, each at most 40320).
    #[serde(default, deserialize_with = "whole_number::optional_list")]
    pub reminders: Option<Vec<u32>>,
    /// IANA time zone name.
    pub time_zone: String,
    pub description: Option<String>,
    pub location: Option<String>,
    /// RFC 5545 RRULE value, e.g. `FREQ=WEEKLY;COUNT=10`.
    pub rrule: Option<String>,
    /// Occurrence starts (RFC 3339) removed from the recurrence.
    pub exdates: Option<Vec<String>>,
    /// Usernames.
    pub attendees: Option<Vec<String>>,
    pub group_id: Option<Uuid>,
    /// `default` or `private`.
    pub visibility: Option<String>,
}

/// `PATCH /v1/events/{id}`: every field optional; `rrule: ""` clears it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEventRequest {
    pub title: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub time_zone: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub rrule: Option<String>,
    pub exdates: Option<Vec<String>>,
    pub visibility: Option<String>,
    /// Make it an all-day event (`start` and `end` then dates; when left
    /// out they become the days the event was on) or a timed one again
    /// (`start` and `end` then required).
    pub all_day: Option<bool>,
    /// Usernames: the whole new list of attendees of a personal event (the
    /// organizer always stays). Those kept keep their answers, those added
    /// are asked (or invited, as their settings say), those left out are
    /// told the event is cancelled for them.
    pub attendees: Option<Vec<String>>,
}

/// `PUT /v1/events/{id}/reminders`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemindersRequest {
    /// Minutes before each occurrence (at most 5, each 0 to 40320); `[]`
    /// removes them.
    #[serde(deserialize_with = "whole_number::list")]
    pub minutes_before: Vec<u32>,
}

/// `POST /v1/events/{id}/rsvp`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RsvpRequest {
    /// accepted, declined or tentative.
    pub status: String,
}

/// `POST /v1/groups`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
    pub description: Option<String>,
    /// `hierarchical` or `flat`.
    pub kind: String,
    pub parent_id: Option<Uuid>,
}

/// `PATCH /v1/groups/{id}`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// `PATCH /v1/groups/{id}/members/{user_id}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMemberRequest {
    #[serde(deserialize_with = "whole_number::required")]
    #[schema(value_type = u32)]
    pub rank: u32,
}

/// `POST /v1/groups/{id}/invitations`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub username: String,
    #[serde(default, deserialize_with = "whole_number::optional")]
    #[schema(value_type = Option<u32>)]
    pub rank: Option<u32>,
}

/// `POST /v1/me/app-passwords`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPasswordRequest {
    /// What it is for (e.g. `Thunderbird on the laptop`), 1 to 100
    /// characters.
    pub name: String,
}

/// What a CalDAV client asks of a calendar (the gateway speaks WebDAV;
/// these carry what it understood). `calendar` is `personal` or a
/// group's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "dav", rename_all = "snake_case")]
pub enum DavOp {
    /// The caller's calendars.
    Calendars,
    /// Every event of a calendar (`token`: None), or what changed since a
    /// sync token (RFC 6578), with each event's text when `data`.
    Sync {
        calendar: String,
        token: Option<String>,
        data: bool,
    },
    /// The events with an occurrence in `[from, to)` (either end open).
    Query {
        calendar: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// Events by resource name (`{name}.ics`).
    Get {
        calendar: String,
        names: Vec<String>,
    },
    /// Writes a resource: creates the event, or replaces it (`if_match`:
    /// only if its ETag is still that; `if_none_match`: only if absent).
    Put {
        calendar: String,
        name: String,
        ics: String,
        if_match: Option<String>,
        if_none_match: bool,
    },
    Delete {
        calendar: String,
        name: String,
        if_match: Option<String>,
    },
}

impl DavOp {
    fn is_read_only(&self) -> bool {
        !matches!(self, DavOp::Put { .. } | DavOp::Delete { .. })
    }
}

/// A time window (`from`, `to`: RFC 3339).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `?on_conflict=reject|allow`
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictPolicy {
    pub on_conflict: Option<String>,
}

/// `?scope=this|following`: for an occurrence id, that occurrence alone
/// (the default) or it and every one after it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OccurrenceScope {
    pub scope: Option<String>,
}

/// What the gateway asks a service to do, on behalf of `caller`.
///
/// The variants are the public API's operations; [`Op::service`] says which
/// service owns each, and both services share the store code behind them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum Op {
    Register(RegisterRequest),
    Login(LoginRequest),
    /// The body's fields as they are (so a gateway of the version before,
    /// which sent `RefreshRequest` alone, is still understood).
    Refresh {
        refresh_token: String,
        /// Makes the use safe to repeat (see `store::sessions`).
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    Logout(LogoutRequest),
    GetMe,
    UpdateMe(UpdateMeRequest),
    DeleteMe,
    SearchUsers {
        q: String,
    },
    CreateEvent {
        body: CreateEventRequest,
        reject: bool,
        /// Makes the creation safe to repeat: every request with the same
        /// key (per caller) creates the event once (see `store::events`).
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    ListEvents {
        window: Window,
    },
    SearchEvents {
        q: String,
        window: Window,
    },
    GetEvent {
        id: String,
    },
    UpdateEvent {
        id: String,
        body: UpdateEventRequest,
        reject: bool,
        /// For an occurrence id: `this` (default) or `following`.
        #[serde(default)]
        scope: Option<String>,
    },
    DeleteEvent {
        id: String,
        /// For an occurrence id: `this` (default) or `following`.
        #[serde(default)]
        scope: Option<String>,
    },
    Rsvp {
        id: String,
        body: RsvpRequest,
        reject: bool,
    },
    SetReminders {
        id: String,
        body: RemindersRequest,
    },
    FreeBusy {
        users: String,
        window: Window,
    },
    ListNotifications {
        unread: bool,
        /// Items per page (default and most: `store::notifications::LIST_LIMIT`).
        #[serde(default)]
        limit: Option<u32>,
        /// The `next` of the previous page: items older than it.
        #[serde(default)]
        before: Option<String>,
    },
    ReadAllNotifications,
    ReadNotification {
        id: String,
    },
    /// Oldest first, those created after `after` (all when None): what a
    /// reconnecting WebSocket missed.
    NotificationsAfter {
        after: Option<String>,
    },
    CreateGroup(CreateGroupRequest),
    ListGroups,
    GetGroup {
        id: String,
    },
    UpdateGroup {
        id: String,
        body: UpdateGroupRequest,
    },
    DeleteGroup {
        id: String,
    },
    ListMembers {
        id: String,
    },
    UpdateMember {
        id: String,
        user_id: String,
        body: UpdateMemberRequest,
    },
    RemoveMember {
        id: String,
        user_id: String,
    },
    Invite {
        id: String,
        body: InviteRequest,
    },
    ListInvitations,
    /// The pending invitations of a group the caller may manage.
    GroupInvitations {
        id: String,
    },
    RevokeInvitation {
        id: String,
        invitation_id: String,
    },
    AnswerInvitation {
        id: String,
        accept: bool,
    },
    CreateGroupEvent {
        body: CreateEventRequest,
        reject: bool,
        /// As for [`Op::CreateEvent`].
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    GroupAgenda {
        id: String,
        window: Window,
    },
    /// The audit log, for administrators.
    Audit(AuditQuery),
    /// A new secret feed URL of the caller's agenda, or with `group_id`
    /// of a group's (the old one stops working).
    CreateFeed {
        group_id: Option<String>,
    },
    /// A feed by its secret key (no caller: calendar apps send none).
    Feed {
        key: String,
    },
    /// An iCalendar file's events into the caller's agenda.
    ImportEvents {
        ics: String,
    },
    CreateAppPassword(AppPasswordRequest),
    ListAppPasswords,
    DeleteAppPassword {
        id: String,
    },
    /// HTTP Basic of a CalDAV client (no caller yet): the account whose
    /// app password it is.
    CheckAppPassword {
        username: String,
        password: String,
    },
    Dav(DavOp),
}

/// `GET /v1/admin/audit?from=&to=&actor=&after=&limit=`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// RFC 3339; default 30 days ago.
    pub from: Option<String>,
    /// RFC 3339, exclusive; default now.
    pub to: Option<String>,
    /// Only entries of this actor (a username or an account id).
    pub actor: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Entries per page, 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// Largest call or reply between the gateway and the services (gRPC's
/// default of 4 MiB is below a 4 MiB .ics import wrapped in its `Op`, and
/// below the feed of a big agenda).
pub const MAX_CALL_BYTES: usize = 32 << 20;

/// The two stateless services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Users,
    Groups,
}

impl Service {
    /// Name in the registry.
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Groups => "groups",
        }
    }
}

impl Op {
    /// Which service executes this operation.
    pub fn service(&self) -> Service {
        use Op::*;
        match self {
            CreateGroup(_)
            | ListGroups
            | GetGroup { .. }
            | UpdateGroup { .. }
            | DeleteGroup { .. }
            | ListMembers { .. }
            | UpdateMember { .. }
            | RemoveMember { .. }
            | Invite { .. }
            | ListInvitations
            | GroupInvitations { .. }
            | RevokeInvitation { .. }
            | AnswerInvitation { .. }
            | CreateGroupEvent { .. }
            | GroupAgenda { .. } => Service::Groups,
            _ => Service::Users,
        }
    }

    /// True when running it twice is harmless, so the gateway may retry it
    /// on another replica after an ambiguous failure.
    pub fn is_read_only(&self) -> bool {
        use Op::*;
        matches!(
            self,
            GetMe
                | SearchUsers { .. }
                | ListEvents { .. }
                | SearchEvents { .. }
                | GetEvent { .. }
                | FreeBusy { .. }
                | ListNotifications { .. }
                | NotificationsAfter { .. }
                | ListGroups
                | GetGroup { .. }
                | ListMembers { .. }
                | ListInvitations
                | GroupInvitations { .. }
                | GroupAgenda { .. }
                | Audit(_)
                | Feed { .. }
                | ListAppPasswords
                | CheckAppPassword { .. }
        ) || matches!(self, Dav(d) if d.is_read_only())
    }

    /// Whether sending it again after a failure cannot apply it twice:
    /// reads, answers to an event (the same answer again is a no-op), and
    /// creations that carry an idempotency key.
    pub fn is_retry_safe(&self) -> bool {
        self.is_read_only()
            || matches!(
                self,
                Op::Rsvp { .. }
                    | Op::SetReminders { .. }
                    | Op::ReadAllNotifications
                    | Op::CreateEvent {
                        idempotency_key: Some(_),
                        ..
                    }
                    | Op::CreateGroupEvent {
                        idempotency_key: Some(_),
                        ..
                    }
                    | Op::Refresh {
                        idempotency_key: Some(_),
                        ..
                    }
            )
    }

    /// Whether the caller must be authenticated.
    pub fn needs_caller(&self) -> bool {
        !matches!(
            self,
            Op::Register(_)
                | Op::Login(_)
                | Op::Refresh { .. }
                | Op::Feed { .. }
                | Op::CheckAppPassword { .. }
        )
    }
}

/// Counts that JSON may write as `3` or `3.0` (both are the integer 3
/// in JSON Schema, and clients that keep every number as a float send the
/// latter); anything with a fraction, negative or too large is refused.
mod whole_number {
    use serde::{Deserialize, Deserializer};

    fn to_u32<E: serde::de::Error>(v: f64) -> Result<u32, E> {
        if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
            Ok(v as u32)
        } else {
            Err(E::custom(format!(
                "{v} is not a whole number from 0 to {}",
                u32::MAX
            )))
        }
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        to_u32(f64::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Option::<f64>::deserialize(d)?.map(to_u32).transpose()
    }

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        Vec::<f64>::deserialize(d)?
            .into_iter()
            .map(to_u32)
            .collect()
    }

    pub fn optional_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
        Option::<Vec<f64>>::deserialize(d)?
            .map(|l| l.into_iter().map(to_u32).collect())
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_may_be_whole_floats_and_nothing_else() {
        let rank = |v: serde_json::Value| {
            serde_json::from_value::<UpdateMemberRequest>(serde_json::json!({ "rank": v }))
                .map(|r| r.rank)
        };
        assert_eq!(rank(serde_json::json!(3)).unwrap(), 3);
        assert_eq!(rank(serde_json::json!(207.0)).unwrap(), 207);
        for bad in [
            serde_json::json!(2.5),
            serde_json::json!(-1),
            serde_json::json!("3"),
            serde_json::json!(1e12),
        ] {
            assert!(rank(bad.clone()).is_err(), "{bad}");
        }
        let inv: InviteRequest =
            serde_json::from_value(serde_json::json!({"username": "x"})).unwrap();
        assert_eq!(inv.rank, None);
        let inv: InviteRequest =
            serde_json::from_value(serde_json::json!({"username": "x", "rank": 4.0})).unwrap();
        assert_eq!(inv.rank, Some(4));
        let r: RemindersRequest =
            serde_json::from_value(serde_json::json!({"minutes_before": [15, 60.0]})).unwrap();
        assert_eq!(r.minutes_before, [15, 60]);
        assert!(serde_json::from_value::<RemindersRequest>(
            serde_json::json!({"minutes_before": [1.5]})
        )
        .is_err());
    }

    #[test]
    fn only_reads_and_keyed_creations_are_safe_to_retry() {
        let body: CreateEventRequest = serde_json::from_value(serde_json::json!({
            "title": "t", "start": "2031-01-01T09:00:00Z",
            "end": "2031-01-01T10:00:00Z", "time_zone": "UTC"
        }))
        .unwrap();
        let create = |key: Option<&str>| Op::CreateEvent {
            body: body.clone(),
            reject: false,
            idempotency_key: key.map(str::to_string),
        };
        assert!(Op::GetMe.is_retry_safe());
        assert!(create(Some("k")).is_retry_safe());
        assert!(!create(None).is_retry_safe());
        assert!(!Op::DeleteMe.is_retry_safe());
        assert!(Op::Rsvp {
            id: "e".into(),
            body: RsvpRequest {
                status: "accepted".into()
            },
            reject: false
        }
        .is_retry_safe());
        assert!(!Op::CreateGroupEvent {
            body: body.clone(),
            reject: false,
            idempotency_key: None
        }
        .is_retry_safe());
        // An older gateway's call (no key field) still parses.
        let old =
            serde_json::json!({"op": "create_event", "args": {"body": body, "reject": false}});
        let op: Op = serde_json::from_value(old).unwrap();
        assert!(!op.is_retry_safe());
    }
}
