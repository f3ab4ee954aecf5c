//! The domain rules of DESIGN.md, pure: hierarchy, invitations, conflicts,
//! free/busy and privacy. The store applies them; tests pin them here.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::model::{
    AddMe, Attendee, AttendeeStatus, Conflict, EventRecord, GroupKind, GroupRecord, Interval,
    Invitation, InvitationStatus, Member, UserRecord, Visibility,
};
use crate::recurrence;

/// Rank of a group's owner.
pub const OWNER_RANK: u32 = 0;
/// Rank of every non-owner member of a flat group.
pub const FLAT_RANK: u32 = 1;

/// Attendees of a new group event: the creator accepted; in a hierarchical
/// group members ranked below the creator are accepted at once and the
/// others must answer; in a flat group everyone else must answer.
pub fn group_event_attendees(
    kind: GroupKind,
    creator: &Member,
    members: &[Member],
) -> Vec<Attendee> {
    let mut out = vec![Attendee {
        user_id: creator.user_id,
        username: creator.username.clone(),
        status: AttendeeStatus::Accepted,
    }];
    for m in members.iter().filter(|m| m.user_id != creator.user_id) {
        out.push(Attendee {
            user_id: m.user_id,
            username: m.username.clone(),
            status: group_event_status(kind, Some(creator.rank), m.rank),
        });
    }
    out
}

/// How a member ranked `rank` attends a group event whose creator ranks
/// `creator_rank` (None: no longer a member): accepted at once below the
/// creator in a hierarchical group, asked otherwise.
pub fn group_event_status(kind: GroupKind, creator_rank: Option<u32>, rank: u32) -> AttendeeStatus {
    match (kind, creator_rank) {
        (GroupKind::Hierarchical, Some(c)) if rank > c => AttendeeStatus::Accepted,
        _ => AttendeeStatus::NeedsAction,
    }
}

/// The rank an invitation gives: in a hierarchical group strictly below
/// the inviter (default one below), in a flat group always [`FLAT_RANK`].
pub fn invitation_rank(kind: GroupKind, inviter_rank: u32, asked: Option<u32>) -> ApiResult<u32> {
    if asked.is_some_and(|r| r > 1000) {
        return Err(ApiError::invalid_field("rank", "rank must be at most 1000"));
    }
    match kind {
        GroupKind::Flat => Ok(FLAT_RANK),
        GroupKind::Hierarchical => {
            let rank = asked.unwrap_or(inviter_rank + 1);
            if rank <= inviter_rank {
                return Err(ApiError::forbidden(format!(
                    "you hold rank {inviter_rank} and may only invite at ranks below yours (greater than {inviter_rank})"
                )));
            }
            if rank > 1000 {
                return Err(ApiError::invalid_field("rank", "rank must be at most 1000"));
            }
            Ok(rank)
        }
    }
}

/// Checks that `caller` may attach a new subgroup to `parent`: only its
/// owner shapes a group's structure (any member could before, to any
/// group).
pub fn check_attach_subgroup(parent: &GroupRecord, caller: Uuid) -> ApiResult<()> {
    if parent.owner_id != caller {
        return Err(ApiError::forbidden(
            "only the owner of the parent group may attach a subgroup to it",
        ));
    }
    Ok(())
}

/// Checks that `caller` owns `group`, the only one who may `to` (change
/// it, delete it, hand it over).
pub fn check_owner(group: &GroupRecord, caller: Uuid, to: &str) -> ApiResult<()> {
    if group.owner_id != caller {
        return Err(ApiError::forbidden(format!("only the owner may {to}")));
    }
    Ok(())
}

/// The rank an owner takes on handing the group over: the first below
/// the top.
pub fn rank_after_handover(kind: GroupKind) -> u32 {
    match kind {
        GroupKind::Flat => FLAT_RANK,
        GroupKind::Hierarchical => 1,
    }
}

/// Checks that `actor` may take `target` out of `group`: themselves
/// (leaving) unless they own it, who must hand it over or delete it; anyone
/// else only if ranked below them.
pub fn check_removal(group: &GroupRecord, actor: &Member, target: &Member) -> ApiResult<()> {
    if actor.user_id == target.user_id {
        if group.owner_id == actor.user_id {
            return Err(ApiError::conflict(
                "the owner cannot leave; hand the group over (PATCH a member to rank 0) or delete it",
            ));
        }
    } else if !may_manage(actor, target) {
        return Err(ApiError::forbidden(
            "only members ranked above this member may remove them",
        ));
    }
    Ok(())
}

/// Whether an invitation giving `rank` may still be accepted, decided on
/// the group as it stands: the member who sent it must still be in the
/// group and, in a hierarchical group, still rank above the rank it gives
/// (a member demoted or removed since cannot bring someone in above them).
pub fn invitation_still_valid(
    kind: GroupKind,
    inviter: Option<&Member>,
    rank: u32,
) -> ApiResult<()> {
    let Some(inviter) = inviter else {
        return Err(ApiError::conflict(
            "this invitation is no longer valid: the member who sent it has left the group",
        ));
    };
    if kind == GroupKind::Hierarchical && inviter.rank >= rank {
        return Err(ApiError::conflict(format!(
            "this invitation is no longer valid: the member who sent it now holds rank {}, \
             not above the rank {rank} it offered",
            inviter.rank
        )));
    }
    Ok(())
}

/// Whether `actor` may see and revoke a pending invitation: the member who
/// sent it, or anyone ranked above the rank it gives (who could have sent
/// it themselves).
pub fn may_manage_invitation(actor: &Member, invited_by: Uuid, rank: u32) -> bool {
    actor.user_id == invited_by || actor.rank < rank
}

/// Checks that `actor` may revoke `inv`: one they may manage
/// ([`may_manage_invitation`]), still pending.
pub fn check_revocable(actor: &Member, inv: &Invitation) -> ApiResult<()> {
    if !may_manage_invitation(actor, inv.invited_by, inv.rank) {
        return Err(ApiError::forbidden(
            "only its sender or members ranked above the rank it offers may revoke an invitation",
        ));
    }
    if inv.status != InvitationStatus::Pending {
        return Err(ApiError::conflict(
            "this invitation was already answered or revoked",
        ));
    }
    Ok(())
}

/// Whether `user` may see and answer `inv`: its invitee only (anyone else
/// gets a 404, so ids cannot be probed).
pub fn may_answer_invitation(inv: &Invitation, user: Uuid) -> bool {
    inv.invitee_id == user
}

/// Checks that `inv` is still waiting for its answer: it is answered once.
pub fn check_answerable(inv: &Invitation) -> ApiResult<()> {
    if inv.status != InvitationStatus::Pending {
        return Err(ApiError::conflict(format!(
            "this invitation was already {}",
            match inv.status {
                InvitationStatus::Accepted => "accepted",
                InvitationStatus::Revoked => "revoked",
                _ => "declined",
            }
        )));
    }
    Ok(())
}

/// The words of `text` a search matches: lower-cased, split at anything
/// that is not a letter or a digit (`ann_lee` and "Ann Lee" are both
/// `ann` and `lee`).
pub fn search_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The words `user` is found by: those of their username and their
/// display name.
pub fn words_of(user: &UserRecord) -> BTreeSet<String> {
    let mut words = search_words(&user.username);
    words.extend(search_words(&user.display_name));
    words
}

/// Whether `user` is found by a search of `query` ([`search_words`]):
/// every word of it begins one of their words.
pub fn found_by(query: &BTreeSet<String>, user: &UserRecord) -> bool {
    let words = words_of(user);
    query
        .iter()
        .all(|q| words.iter().any(|w| w.starts_with(q.as_str())))
}

/// How many answered invitations (accepted, declined, revoked) a person
/// keeps, besides every pending one: older answered ones go when the list
/// is next read, so reading it costs what is pending and recent, not every
/// invitation ever received (docs/GROWTH.md Found 8).
pub const KEEP_ANSWERED_INVITATIONS: usize = 100;

/// The ids of the answered invitations of `newest_first` past the newest
/// [`KEEP_ANSWERED_INVITATIONS`] answered ones: those to forget.
pub fn answered_to_forget(newest_first: &[Invitation]) -> Vec<Uuid> {
    newest_first
        .iter()
        .filter(|i| i.status != InvitationStatus::Pending)
        .skip(KEEP_ANSWERED_INVITATIONS)
        .map(|i| i.id)
        .collect()
}

/// Whether `actor` may change or remove `target` (a superior acting on a
/// member ranked below them).
pub fn may_manage(actor: &Member, target: &Member) -> bool {
    actor.rank < target.rank
}

/// Checks a rank change by a superior: the new rank stays below theirs.
pub fn check_rank_change(
    kind: GroupKind,
    actor: &Member,
    target: &Member,
    rank: u32,
) -> ApiResult<()> {
    if !may_manage(actor, target) {
        return Err(ApiError::forbidden(
            "only members ranked above this member may change them",
        ));
    }
    if kind == GroupKind::Flat {
        return Err(ApiError::invalid_field(
            "rank",
            "ranks do not apply in a flat group (only ownership can be handed over, with rank 0)",
        ));
    }
    if rank <= actor.rank {
        return Err(ApiError::forbidden(format!(
            "you may only assign ranks below your own ({})",
            actor.rank
        )));
    }
    if rank > 1000 {
        return Err(ApiError::invalid_field("rank", "rank must be at most 1000"));
    }
    Ok(())
}

/// Whether `user` may see `ev` at all: its attendees, the organizer first
/// among them and those only invited too. Anyone else gets a 404, so ids
/// cannot be probed.
pub fn may_see_event(ev: &EventRecord, user: Uuid) -> bool {
    ev.status_of(user).is_some()
}

/// Checks that `caller` may change `ev`: its organizer only.
pub fn check_may_change_event(ev: &EventRecord, caller: Uuid) -> ApiResult<()> {
    if ev.organizer_id != caller {
        return Err(ApiError::forbidden(
            "only the organizer may change this event",
        ));
    }
    Ok(())
}

/// Checks that `caller` may delete `ev` for everyone: its organizer only
/// (an attendee declines it).
pub fn check_may_delete_event(ev: &EventRecord, caller: Uuid) -> ApiResult<()> {
    if ev.organizer_id != caller {
        return Err(ApiError::forbidden(
            "only the organizer may delete this event; decline it instead",
        ));
    }
    Ok(())
}

/// Whether an answer keeps the event as busy time for whoever gave it
/// (then its conflicts are theirs to see).
pub fn answer_is_busy(status: AttendeeStatus) -> bool {
    matches!(status, AttendeeStatus::Accepted | AttendeeStatus::Tentative)
}

/// Checks that `user` may read the audit log: administrators only.
pub fn check_reads_audit(user: &UserRecord) -> ApiResult<()> {
    if !user.admin {
        return Err(ApiError::forbidden("the audit log is for administrators"));
    }
    Ok(())
}

/// Checks that `user`'s account may go while they are in `group`: not
/// while they own it (a group is never left without an owner).
pub fn check_account_may_leave(group: &GroupRecord, user: Uuid) -> ApiResult<()> {
    if group.owner_id == user {
        return Err(ApiError::conflict(format!(
            "you own the group {:?}; hand it over or delete it first",
            group.name
        )));
    }
    Ok(())
}

/// Whether an event counts as busy time for `user`.
pub fn is_busy_for(ev: &EventRecord, user: Uuid) -> bool {
    !matches!(
        ev.status_of(user),
        Some(AttendeeStatus::Declined | AttendeeStatus::Invited) | None
    )
}

/// How someone named as an attendee of a personal event joins it: straight
/// into their agenda (`needs_action`) if their [`AddMe`] setting lets the
/// organizer add them, else as an invitation (`invited`). Adding anyone to
/// anyone's agenda filled agendas at will.
pub fn attendee_status(setting: AddMe, shares_a_group: bool) -> AttendeeStatus {
    match (setting, shares_a_group) {
        (AddMe::Anyone, _) | (AddMe::SharedGroup, true) => AttendeeStatus::NeedsAction,
        _ => AttendeeStatus::Invited,
    }
}

/// Most conflicts reported for one change (a dense event against busy
/// agendas could list hundreds of thousands); the first found are kept.
pub const MAX_CONFLICTS: usize = 100;

/// Conflicts between a new or moved event and what `user` already has:
/// every occurrence of theirs (not declined, not the event itself) that
/// overlaps an occurrence of `new`, as `viewer` (who asked) may see them:
/// details only of events the viewer takes part in ([`takes_part`]),
/// busy blocks otherwise. Reporting titles of everyone's events to whoever
/// names them as attendees leaked private agendas.
/// At most [`MAX_CONFLICTS`].
pub fn conflicts(
    new: &EventRecord,
    user: Uuid,
    agenda: &[EventRecord],
    viewer: Uuid,
) -> Vec<Conflict> {
    if new.all_day {
        return Vec::new();
    }
    let mine = recurrence::upcoming(new);
    let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
        return Vec::new();
    };
    let (from, to) = (first.start, last.end);
    let mut out = Vec::new();
    for other in agenda
        .iter()
        .filter(|o| o.id != new.id && !o.all_day && is_busy_for(o, user))
    {
        for occ in recurrence::occurrences(other, from, to) {
            // `mine` is sorted by start and, unless occurrences were
            // changed on their own, every one lasts the same, so by end
            // too: the first one ending after `occ` starts is the only
            // candidate (a scan was quadratic).
            let hit = if new.overrides.is_empty() {
                let next = mine.partition_point(|m| m.end <= occ.start);
                mine.get(next).is_some_and(|m| m.start < occ.end)
            } else {
                mine.iter().any(|m| m.start < occ.end && m.end > occ.start)
            };
            if hit {
                let details = takes_part(other, viewer);
                out.push(Conflict {
                    event_id: details.then_some(other.id),
                    title: details.then(|| other.title.clone()),
                    start: occ.start,
                    end: occ.end,
                    user_id: user,
                });
                if out.len() == MAX_CONFLICTS {
                    return out;
                }
            }
        }
    }
    out
}

/// Whether `user` organizes or attends `ev` (then its details are theirs
/// to see, private or not).
pub fn takes_part(ev: &EventRecord, user: Uuid) -> bool {
    ev.organizer_id == user || ev.status_of(user).is_some()
}

/// Busy intervals of `user` in `[from, to)`, merged and sorted.
pub fn busy(
    agenda: &[EventRecord],
    user: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Interval> {
    let mut all: Vec<Interval> = agenda
        .iter()
        .filter(|e| !e.all_day && is_busy_for(e, user))
        .flat_map(|e| recurrence::occurrences(e, from, to))
        .collect();
    merge(&mut all)
}

/// Merges overlapping or touching intervals.
pub fn merge(intervals: &mut [Interval]) -> Vec<Interval> {
    intervals.sort_by_key(|i| (i.start, i.end));
    let mut out: Vec<Interval> = Vec::new();
    for i in intervals.iter() {
        match out.last_mut() {
            Some(last) if i.start <= last.end => last.end = last.end.max(i.end),
            _ => out.push(*i),
        }
    }
    out
}

/// Where a group-agenda viewer stands.
pub struct Viewer {
    pub user_id: Uuid,
    pub rank: u32,
    pub kind: GroupKind,
    pub group_id: Uuid,
}

/// Whether `viewer` sees the details of `ev` in the agenda of `owner` (a
/// member of the group): their own items, the group's own events, and in a
/// hierarchical group the items of members ranked below them. A private
/// event shows only to its organizer and attendees, superiors included.
pub fn sees_details(viewer: &Viewer, owner: &Member, ev: &EventRecord) -> bool {
    let participant = takes_part(ev, viewer.user_id);
    if ev.visibility == Visibility::Private {
        return participant;
    }
    participant
        || owner.user_id == viewer.user_id
        || ev.group_id == Some(viewer.group_id)
        || (viewer.kind == GroupKind::Hierarchical && owner.rank > viewer.rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use chrono::Duration;

    fn member(rank: u32) -> Member {
        Member {
            user_id: Uuid::new_v4(),
            username: format!("m{rank}"),
            rank,
        }
    }

    fn event(owner: Uuid, start_h: i64, len_h: i64) -> EventRecord {
        let mut ev = EventRecord::sample("2026-05-04T00:00:00Z", len_h * 60, "UTC", None);
        ev.start += Duration::hours(start_h);
        ev.end += Duration::hours(start_h);
        ev.title = format!("at {start_h}");
        ev.organizer_id = owner;
        ev.attendees = vec![Attendee {
            user_id: owner,
            username: "o".into(),
            status: AttendeeStatus::Accepted,
        }];
        ev
    }

    #[test]
    fn members_who_join_later_attend_by_the_creators_rank() {
        use AttendeeStatus::{Accepted, NeedsAction};
        let h = GroupKind::Hierarchical;
        assert_eq!(group_event_status(h, Some(1), 2), Accepted);
        assert_eq!(group_event_status(h, Some(2), 2), NeedsAction);
        assert_eq!(group_event_status(h, Some(2), 1), NeedsAction);
        assert_eq!(
            group_event_status(h, None, 5),
            NeedsAction,
            "the creator left"
        );
        assert_eq!(group_event_status(GroupKind::Flat, Some(0), 1), NeedsAction);
    }

    #[test]
    fn hierarchy_accepts_below_the_creator_only() {
        let (top, mid, low, peer) = (member(0), member(1), member(2), member(1));
        let all = vec![top.clone(), mid.clone(), low.clone(), peer.clone()];
        let att = group_event_attendees(GroupKind::Hierarchical, &mid, &all);
        let status = |m: &Member| att.iter().find(|a| a.user_id == m.user_id).unwrap().status;
        assert_eq!(status(&mid), AttendeeStatus::Accepted);
        assert_eq!(status(&low), AttendeeStatus::Accepted);
        assert_eq!(status(&top), AttendeeStatus::NeedsAction);
        assert_eq!(status(&peer), AttendeeStatus::NeedsAction);
        let flat = group_event_attendees(GroupKind::Flat, &top, &all);
        assert_eq!(
            flat.iter()
                .filter(|a| a.status == AttendeeStatus::Accepted)
                .count(),
            1
        );
        assert_eq!(flat.len(), 4);
    }

    #[test]
    fn invitations_only_below_the_inviter() {
        assert_eq!(
            invitation_rank(GroupKind::Hierarchical, 1, None).unwrap(),
            2
        );
        assert_eq!(
            invitation_rank(GroupKind::Hierarchical, 1, Some(5)).unwrap(),
            5
        );
        assert_eq!(
            invitation_rank(GroupKind::Hierarchical, 1, Some(1))
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            invitation_rank(GroupKind::Hierarchical, 2, Some(0))
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            invitation_rank(GroupKind::Flat, 1, Some(0)).unwrap(),
            FLAT_RANK
        );
    }

    #[test]
    fn superiors_manage_members_below() {
        let (a, b, c) = (member(0), member(1), member(2));
        assert!(check_rank_change(GroupKind::Hierarchical, &a, &c, 1).is_ok());
        assert_eq!(
            check_rank_change(GroupKind::Hierarchical, &b, &c, 1)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            check_rank_change(GroupKind::Hierarchical, &c, &b, 3)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            check_rank_change(GroupKind::Flat, &a, &b, 2)
                .unwrap_err()
                .status,
            422
        );
    }

    fn group(kind: GroupKind, owner: &Member) -> GroupRecord {
        GroupRecord {
            id: Uuid::new_v4(),
            name: "g".into(),
            description: String::new(),
            kind,
            parent_id: None,
            owner_id: owner.user_id,
            created_at: chrono::Utc::now(),
        }
    }

    fn invitation(by: &Member, rank: u32, status: InvitationStatus) -> Invitation {
        Invitation {
            id: Uuid::new_v4(),
            group_id: Uuid::new_v4(),
            group_name: "g".into(),
            invited_by: by.user_id,
            invitee_id: Uuid::new_v4(),
            rank,
            status,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn people_are_found_by_the_beginnings_of_their_words() {
        let u = UserRecord {
            id: Uuid::new_v4(),
            username: "ann_lee".into(),
            email: "ann@example.com".into(),
            display_name: "Ana María Ñúñez-Smith".into(),
            time_zone: "UTC".into(),
            password_hash: String::new(),
            created_at: Utc::now(),
            add_me: Default::default(),
            admin: false,
        };
        let words: Vec<String> = words_of(&u).into_iter().collect();
        assert_eq!(words, ["ana", "ann", "lee", "maría", "smith", "ñúñez"]);
        let found = |q: &str| found_by(&search_words(q), &u);
        for q in [
            "ann",
            "ANN_",
            "lee",
            "sm",
            "MARÍA",
            "ñú",
            "ann smi",
            "smith ana",
            "an",
        ] {
            assert!(found(q), "{q}");
        }
        for q in ["nn", "ith", "ann xavier", "mario", "annl"] {
            assert!(!found(q), "{q}");
        }
        assert!(search_words(" -_. ").is_empty());
    }

    #[test]
    fn pending_invitations_stay_and_only_the_newest_answered_ones() {
        let by = member(0);
        let statuses = [
            InvitationStatus::Accepted,
            InvitationStatus::Declined,
            InvitationStatus::Revoked,
        ];
        // Newest first: a pending one every 10th, answered ones between.
        let all: Vec<Invitation> = (0..300)
            .map(|i| {
                let status = if i % 10 == 0 {
                    InvitationStatus::Pending
                } else {
                    statuses[i % 3]
                };
                invitation(&by, 1, status)
            })
            .collect();
        let forget = answered_to_forget(&all);
        let answered: Vec<&Invitation> = all
            .iter()
            .filter(|i| i.status != InvitationStatus::Pending)
            .collect();
        assert_eq!(answered.len(), 270);
        let want: Vec<Uuid> = answered[KEEP_ANSWERED_INVITATIONS..]
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(forget, want, "the oldest 170 answered, no pending one");
        assert!(answered_to_forget(&all[..100]).is_empty());
    }

    #[test]
    fn only_the_owner_shapes_and_hands_over_a_group() {
        let (owner, other) = (member(0), member(1));
        let g = group(GroupKind::Hierarchical, &owner);
        assert!(check_owner(&g, owner.user_id, "delete the group").is_ok());
        let e = check_owner(&g, other.user_id, "delete the group").unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Forbidden, "only the owner may delete the group")
        );
        assert!(check_attach_subgroup(&g, owner.user_id).is_ok());
        assert_eq!(
            check_attach_subgroup(&g, other.user_id).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert_eq!(rank_after_handover(GroupKind::Hierarchical), 1);
        assert_eq!(rank_after_handover(GroupKind::Flat), FLAT_RANK);
    }

    #[test]
    fn members_leave_and_superiors_remove() {
        let (owner, mid, low) = (member(0), member(1), member(2));
        let g = group(GroupKind::Hierarchical, &owner);
        assert!(
            check_removal(&g, &low, &low).is_ok(),
            "anyone but the owner leaves"
        );
        assert!(check_removal(&g, &mid, &low).is_ok());
        assert_eq!(
            check_removal(&g, &owner, &owner).unwrap_err().kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            check_removal(&g, &low, &mid).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert_eq!(
            check_removal(&g, &mid, &member(1)).unwrap_err().kind,
            ErrorKind::Forbidden
        );
    }

    #[test]
    fn invitations_are_revoked_by_who_manages_them_and_answered_once() {
        let (sender, above, peer) = (member(3), member(1), member(4));
        let pending = invitation(&sender, 4, InvitationStatus::Pending);
        assert!(check_revocable(&sender, &pending).is_ok());
        assert!(check_revocable(&above, &pending).is_ok());
        assert_eq!(
            check_revocable(&peer, &pending).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert!(check_answerable(&pending).is_ok());
        assert!(may_answer_invitation(&pending, pending.invitee_id));
        assert!(!may_answer_invitation(&pending, sender.user_id));
        for (status, word) in [
            (InvitationStatus::Accepted, "accepted"),
            (InvitationStatus::Declined, "declined"),
            (InvitationStatus::Revoked, "revoked"),
        ] {
            let done = invitation(&sender, 4, status);
            let e = check_answerable(&done).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Conflict);
            assert_eq!(e.message, format!("this invitation was already {word}"));
            assert_eq!(
                check_revocable(&sender, &done).unwrap_err().kind,
                ErrorKind::Conflict
            );
        }
    }

    #[test]
    fn events_are_seen_by_attendees_and_changed_by_their_organizer() {
        let (organizer, invited, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut ev = event(organizer, 1, 1);
        ev.attendees.push(Attendee {
            user_id: invited,
            username: "i".into(),
            status: AttendeeStatus::Invited,
        });
        assert!(may_see_event(&ev, organizer) && may_see_event(&ev, invited));
        assert!(!may_see_event(&ev, stranger));
        assert!(check_may_change_event(&ev, organizer).is_ok());
        assert!(check_may_delete_event(&ev, organizer).is_ok());
        assert_eq!(
            check_may_change_event(&ev, invited).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert_eq!(
            check_may_delete_event(&ev, invited).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert!(
            answer_is_busy(AttendeeStatus::Accepted) && answer_is_busy(AttendeeStatus::Tentative)
        );
        assert!(!answer_is_busy(AttendeeStatus::Declined));
    }

    #[test]
    fn administrators_read_the_audit_log_and_owners_cannot_just_go() {
        let mut user = UserRecord {
            id: Uuid::new_v4(),
            username: "u".into(),
            email: "u@example.org".into(),
            display_name: "u".into(),
            time_zone: "UTC".into(),
            password_hash: String::new(),
            created_at: chrono::Utc::now(),
            add_me: AddMe::default(),
            admin: false,
        };
        assert_eq!(
            check_reads_audit(&user).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        user.admin = true;
        assert!(check_reads_audit(&user).is_ok());
        let owner = member(0);
        let g = group(GroupKind::Flat, &owner);
        assert_eq!(
            check_account_may_leave(&g, owner.user_id).unwrap_err().kind,
            ErrorKind::Conflict
        );
        assert!(check_account_may_leave(&g, user.id).is_ok());
    }

    #[test]
    fn conflicts_ignore_declined_and_self() {
        let me = Uuid::new_v4();
        let new = event(me, 10, 2);
        let overlapping = event(me, 11, 1);
        let touching = event(me, 12, 1);
        let mut declined = event(Uuid::new_v4(), 10, 1);
        declined.attendees.push(Attendee {
            user_id: me,
            username: "me".into(),
            status: AttendeeStatus::Declined,
        });
        let agenda = vec![new.clone(), overlapping.clone(), touching, declined];
        let c = conflicts(&new, me, &agenda, me);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].event_id, Some(overlapping.id));
    }

    /// Someone naming `dave` as an attendee learns when dave is busy, not
    /// what: no id and no title of events they do not take part in,
    /// private ones above all; details of those they do.
    #[test]
    fn others_conflicts_are_busy_blocks_unless_the_viewer_takes_part() {
        let (dave, stranger) = (Uuid::new_v4(), Uuid::new_v4());
        let new = event(stranger, 10, 2);
        let mut secret = event(dave, 10, 1);
        secret.title = "SECRET doctor".into();
        secret.visibility = Visibility::Private;
        let mut shared = event(dave, 11, 1);
        shared.attendees.push(Attendee {
            user_id: stranger,
            username: "s".into(),
            status: AttendeeStatus::NeedsAction,
        });
        let agenda = vec![secret.clone(), shared.clone()];
        let seen = conflicts(&new, dave, &agenda, stranger);
        assert_eq!(seen.len(), 2);
        let blocked = seen.iter().find(|c| c.start == secret.start).unwrap();
        assert_eq!((blocked.event_id, blocked.title.as_deref()), (None, None));
        assert_eq!((blocked.user_id, blocked.end), (dave, secret.end));
        let open = seen.iter().find(|c| c.start == shared.start).unwrap();
        assert_eq!(open.event_id, Some(shared.id), "the viewer attends it");
        // Dave himself sees his own, private or not.
        let own = conflicts(&new, dave, &agenda, dave);
        assert!(own
            .iter()
            .all(|c| c.event_id.is_some() && c.title.is_some()));
    }

    #[test]
    fn recurring_conflicts_are_found_weeks_later() {
        let me = Uuid::new_v4();
        let mut weekly = event(me, 10, 1);
        weekly.rrule = Some("FREQ=WEEKLY".into());
        let later = event(me, 10 + 24 * 21, 1);
        let c = conflicts(&later, me, &[weekly.clone()], me);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].start, later.start);
        // And the other way round.
        assert_eq!(conflicts(&weekly, me, &[later], me).len(), 1);
    }

    /// Two hourly events overlap thousands of times; the report stops at
    /// MAX_CONFLICTS, the earliest ones.
    #[test]
    fn a_dense_clash_reports_at_most_max_conflicts() {
        let me = Uuid::new_v4();
        let mut a = event(me, 10, 1);
        a.rrule = Some("FREQ=HOURLY".into());
        let mut b = event(me, 10, 1);
        b.rrule = Some("FREQ=HOURLY".into());
        let c = conflicts(&b, me, &[a.clone()], me);
        assert_eq!(c.len(), MAX_CONFLICTS);
        assert_eq!(c[0].start, a.start);
    }

    #[test]
    fn invitations_are_decided_on_the_group_as_it_stands() {
        let member = |rank| Member {
            user_id: Uuid::new_v4(),
            username: "m".into(),
            rank,
        };
        let h = GroupKind::Hierarchical;
        assert!(invitation_still_valid(h, Some(&member(1)), 2).is_ok());
        // Demoted to 5 after inviting at 2; removed; equal rank.
        assert_eq!(
            invitation_still_valid(h, Some(&member(5)), 2)
                .unwrap_err()
                .status,
            409
        );
        assert_eq!(invitation_still_valid(h, None, 2).unwrap_err().status, 409);
        assert_eq!(
            invitation_still_valid(h, Some(&member(2)), 2)
                .unwrap_err()
                .status,
            409
        );
        // Flat groups: only membership matters.
        assert!(
            invitation_still_valid(GroupKind::Flat, Some(&member(FLAT_RANK)), FLAT_RANK).is_ok()
        );
        assert!(invitation_still_valid(GroupKind::Flat, None, FLAT_RANK).is_err());

        let inviter = member(3);
        assert!(may_manage_invitation(&inviter, inviter.user_id, 4));
        assert!(may_manage_invitation(&member(0), inviter.user_id, 4));
        assert!(may_manage_invitation(&member(3), inviter.user_id, 4));
        assert!(!may_manage_invitation(&member(4), inviter.user_id, 4));
        assert!(!may_manage_invitation(&member(7), inviter.user_id, 4));
    }

    #[test]
    fn attendees_join_directly_only_as_they_allow() {
        use AttendeeStatus::{Invited, NeedsAction};
        assert_eq!(attendee_status(AddMe::Anyone, false), NeedsAction);
        assert_eq!(attendee_status(AddMe::SharedGroup, true), NeedsAction);
        assert_eq!(attendee_status(AddMe::SharedGroup, false), Invited);
        assert_eq!(attendee_status(AddMe::Nobody, true), Invited);
        let me = Uuid::new_v4();
        let mut ev = event(Uuid::new_v4(), 10, 1);
        ev.attendees.push(Attendee {
            user_id: me,
            username: "me".into(),
            status: Invited,
        });
        assert!(!is_busy_for(&ev, me));
        assert!(!ev.participants().any(|p| p == me));
    }

    #[test]
    fn busy_merges_intervals() {
        let me = Uuid::new_v4();
        let agenda = vec![event(me, 1, 2), event(me, 2, 2), event(me, 6, 1)];
        let from = agenda[0].start - Duration::hours(5);
        let b = busy(&agenda, me, from, from + Duration::days(1));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].end - b[0].start, Duration::hours(3));
    }

    #[test]
    fn privacy_rules() {
        let boss = member(0);
        let mid = member(1);
        let low = member(2);
        let group_id = Uuid::new_v4();
        let viewer = Viewer {
            user_id: mid.user_id,
            rank: mid.rank,
            kind: GroupKind::Hierarchical,
            group_id,
        };
        let low_ev = event(low.user_id, 1, 1);
        let boss_ev = event(boss.user_id, 1, 1);
        let mut group_ev = event(boss.user_id, 1, 1);
        group_ev.group_id = Some(group_id);
        let mut private_low = event(low.user_id, 1, 1);
        private_low.visibility = Visibility::Private;
        assert!(sees_details(&viewer, &low, &low_ev));
        assert!(!sees_details(&viewer, &boss, &boss_ev));
        assert!(sees_details(&viewer, &boss, &group_ev));
        assert!(
            !sees_details(&viewer, &low, &private_low),
            "private beats rank"
        );
        let flat = Viewer {
            kind: GroupKind::Flat,
            ..viewer
        };
        assert!(!sees_details(&flat, &low, &low_ev));
        let own = event(mid.user_id, 1, 1);
        assert!(sees_details(&flat, &mid, &own));
    }
}
