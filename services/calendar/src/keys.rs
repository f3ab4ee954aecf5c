//! The agenda-db key layout, in one place.
//!
//! Every value is JSON. Events are stored once per participant (a copy in
//! each agenda), so an agenda is one prefix read; every write of an event
//! rewrites all copies in one transaction and bumps each participant's
//! agenda version, which is what concurrent writers compare on.

use uuid::Uuid;

/// Root of all calendar data.
pub const ROOT: &str = "/agenda/";

pub fn user(id: Uuid) -> String {
    format!("/agenda/users/{id}")
}
pub const USERS: &str = "/agenda/users/";
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
/// A person's copy of an event.
pub fn agenda_event(user: Uuid, event: Uuid) -> String {
    format!("/agenda/agenda/{user}/{event}")
}
pub fn agenda(user: Uuid) -> String {
    format!("/agenda/agenda/{user}/")
}
pub fn notification(user: Uuid, id: Uuid) -> String {
    format!("/agenda/notifications/{user}/{id}")
}
/// Every notification of every user (the relay's outbox).
pub const NOTIFICATIONS: &str = "/agenda/notifications/";
pub fn notifications(user: Uuid) -> String {
    format!("/agenda/notifications/{user}/")
}
pub fn group(id: Uuid) -> String {
    format!("/agenda/groups/{id}")
}
/// Bumped by every membership change of a group.
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

/// The id after the last `/` of a key.
pub fn last_id(key: &[u8]) -> Option<Uuid> {
    let s = std::str::from_utf8(key).ok()?;
    Uuid::parse_str(s.rsplit('/').next()?).ok()
}
