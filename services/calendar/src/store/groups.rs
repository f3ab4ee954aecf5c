//! Groups, ranks, invitations, group events and the group agenda.
//!
//! Every membership change compares and bumps the group's version key, so
//! two superiors acting at once, or an invitation answered twice, resolve
//! as if one happened after the other.

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::events::{window_events, window_reads, Write};
use super::notifications;
use super::{Attempt, Batch, Read, Store, Versioned};
use crate::api::{CreateEventRequest, CreateGroupRequest, InviteRequest, UpdateGroupRequest};
use crate::audit;
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::events::{self, new_event, notices, view, Change, Idempotent};
use crate::keys;
use crate::model::{
    Attendee, Conflict, EventRecord, Group, GroupRecord, GroupRef, Invitation, InvitationStatus,
    Member,
};
use crate::rules::{self, Viewer, OWNER_RANK};
use crate::{cpu, recurrence, validate};

/// A group as one member sees it, read consistently enough to decide on.
pub struct Membership {
    pub group: GroupRecord,
    pub me: Member,
    /// Revision of the group's version key when read.
    pub version: i64,
}

/// The marker of a member whose part in the group's events is being
/// brought in line with a join or a departure: written with the change of
/// membership, removed once every event ahead is settled.
#[derive(Debug, Serialize, Deserialize)]
struct PendingSync {
    group_id: Uuid,
    user_id: Uuid,
    since: DateTime<Utc>,
}

impl PendingSync {
    fn new(group_id: Uuid, user_id: Uuid) -> Self {
        PendingSync {
            group_id,
            user_id,
            since: Utc::now(),
        }
    }
}

/// Answered invitations deleted per transaction (see `invitations`).
const FORGET_PER_TXN: usize = 200;

/// How long a change of membership waits for its events before it
/// answers (the rest goes on in the background).
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How old a sync marker is before a replica's sweep finishes it (the
/// request that wrote it is done with it by then, or died).
pub const SYNC_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

fn sort_members(m: &mut [Member]) {
    m.sort_by(|a, b| a.rank.cmp(&b.rank).then(a.username.cmp(&b.username)));
}

impl Store {
    /// The group and the caller's membership; 404 if either is missing, so
    /// non-members cannot tell a group exists.
    pub async fn membership(&self, caller: Uuid, group: Uuid) -> ApiResult<Membership> {
        Ok(self.membership_with(caller, group, false).await?.0)
    }

    /// [`Store::membership`] and every member, best rank first, read in
    /// the same snapshot.
    pub async fn membership_and_members(
        &self,
        caller: Uuid,
        group: Uuid,
    ) -> ApiResult<(Membership, Vec<Member>)> {
        self.membership_with(caller, group, true).await
    }

    async fn membership_with(
        &self,
        caller: Uuid,
        group: Uuid,
        with_members: bool,
    ) -> ApiResult<(Membership, Vec<Member>)> {
        let mut reads = vec![
            Read::key(&keys::group_version(group)),
            Read::key(&keys::member(group, caller)),
            Read::key(&keys::group(group)),
        ];
        if with_members {
            reads.push(Read::prefix(&keys::members(group)));
        }
        let Some(snap) = self.snapshot(&[], reads).await? else {
            return Err(ApiError::not_found("group"));
        };
        let (Some(me), Some(g)) = (snap.value::<Member>(1)?, snap.value::<GroupRecord>(2)?) else {
            return Err(ApiError::not_found("group"));
        };
        let mut members: Vec<Member> = snap
            .values::<Member>(3)?
            .into_iter()
            .map(|v| v.value)
            .collect();
        sort_members(&mut members);
        let m = Membership {
            group: g.value,
            me: me.value,
            version: snap.mod_revision(0),
        };
        Ok((m, members))
    }

    /// Members of a group, best rank first.
    pub async fn members(&self, group: Uuid) -> ApiResult<Vec<Member>> {
        let mut m: Vec<Member> = self
            .list::<Member>(&keys::members(group))
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        sort_members(&mut m);
        Ok(m)
    }

    /// Creates a group; the caller becomes its owner (rank 0).
    pub async fn create_group(&self, caller: Uuid, req: CreateGroupRequest) -> ApiResult<Group> {
        let me = self.me(caller).await?;
        let name = validate::text("name", &req.name, 1, 100)?;
        let description = validate::text(
            "description",
            req.description.as_deref().unwrap_or(""),
            0,
            2000,
        )?;
        let kind = validate::group_kind(&req.kind)?;
        let mut batch = Batch::default();
        let id = Uuid::new_v4();
        if let Some(parent) = req.parent_id {
            // The parent's owner decides its structure. Attaching moves
            // the parent's version, so a deletion of the parent decided
            // meanwhile fails its compare and sees the new subgroup.
            let p = self
                .membership(caller, parent)
                .await
                .map_err(|_| ApiError::invalid_field("parent_id", "no such group among yours"))?;
            rules::check_attach_subgroup(&p.group, caller)?;
            batch
                .unchanged(&keys::group_version(parent), p.version)
                .bump(&keys::group_version(parent))
                .put_raw(&keys::subgroup(parent, id), Vec::new());
        }
        let group = GroupRecord {
            id,
            name,
            description,
            kind,
            parent_id: req.parent_id,
            owner_id: caller,
            created_at: Utc::now(),
        };
        let owner = Member {
            user_id: caller,
            username: me.username,
            rank: OWNER_RANK,
        };
        batch
            .put(&keys::group(group.id), &group)?
            .put(&keys::member(group.id, caller), &owner)?
            .put_raw(&keys::user_group(caller, group.id), Vec::new())
            .bump(&keys::group_version(group.id));
        if !self.commit(batch).await? {
            return Err(ApiError::conflict(
                "the parent group changed meanwhile; retry",
            ));
        }
        Ok(group.view(OWNER_RANK))
    }

    /// A group as a member sees it, with its subgroups.
    pub async fn group_view(&self, caller: Uuid, id: Uuid) -> ApiResult<Group> {
        let m = self.membership(caller, id).await?;
        let mut view = m.group.view(m.me.rank);
        let subgroups = self.subgroups_of(id).await?;
        view.subgroups = Some(
            subgroups
                .into_iter()
                .map(|g| GroupRef {
                    id: g.value.id,
                    name: g.value.name,
                })
                .collect(),
        );
        Ok(view)
    }

    async fn subgroups_of(&self, parent: Uuid) -> ApiResult<Vec<Versioned<GroupRecord>>> {
        let ids = self.indexed_ids(&keys::subgroups(parent)).await?;
        let mut out: Vec<Versioned<GroupRecord>> = self.records(ids, keys::group).await?;
        out.sort_by(|a, b| a.value.name.cmp(&b.value.name));
        Ok(out)
    }

    /// The caller's groups.
    pub async fn list_groups(&self, caller: Uuid) -> ApiResult<Vec<Group>> {
        let ids = self.indexed_ids(&keys::user_groups(caller)).await?;
        let found = try_join_all(ids.into_iter().map(|g| async move {
            match self.membership(caller, g).await {
                Ok(m) => Ok(Some(m.group.view(m.me.rank))),
                Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        }))
        .await?;
        let mut out: Vec<Group> = found.into_iter().flatten().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Renames or re-describes a group (owner only).
    pub async fn update_group(
        &self,
        caller: Uuid,
        id: Uuid,
        req: UpdateGroupRequest,
    ) -> ApiResult<Group> {
        let name = req
            .name
            .as_deref()
            .map(|n| validate::text("name", n, 1, 100))
            .transpose()?;
        let description = req
            .description
            .as_deref()
            .map(|d| validate::text("description", d, 0, 2000))
            .transpose()?;
        self.optimistic("this group", || async {
            let m = self.membership(caller, id).await?;
            rules::check_owner(&m.group, caller, "change the group")?;
            let cur: Versioned<GroupRecord> = self
                .get(&keys::group(id))
                .await?
                .ok_or_else(|| ApiError::not_found("group"))?;
            let mut g = cur.value;
            if let Some(n) = &name {
                g.name = n.clone();
            }
            if let Some(d) = &description {
                g.description = d.clone();
            }
            let mut batch = Batch::default();
            batch
                .unchanged(&keys::group(id), cur.mod_revision)
                .put(&keys::group(id), &g)?;
            self.commit_or_retry(batch, g.view(m.me.rank)).await
        })
        .await
    }

    /// Deletes a group and its memberships (owner only); its pending
    /// invitations are withdrawn (the invitees told), not left pending
    /// for a group that is gone.
    pub async fn delete_group(&self, caller: Uuid, id: Uuid) -> ApiResult<()> {
        let invitees = self.optimistic("this group", || async {
            let m = self.membership(caller, id).await?;
            rules::check_owner(&m.group, caller, "delete the group")?;
            let members = self.members(id).await?;
            let pending = self.pending_invitations_of(id).await?;
            let mut batch = Batch::default();
            let mut invitees = Vec::new();
            for cur in pending {
                let mut inv = cur.value;
                if inv.status != InvitationStatus::Pending {
                    continue;
                }
                inv.status = InvitationStatus::Revoked;
                batch
                    .unchanged(&keys::invitation(inv.id), cur.mod_revision)
                    .put(&keys::invitation(inv.id), &inv)?;
                notifications::add(
                    &mut batch,
                    inv.invitee_id,
                    "invitation_revoked",
                    json!({"invitation_id": inv.id, "group_id": id, "group_name": inv.group_name, "by": caller}),
                )?;
                invitees.push(inv.invitee_id);
            }
            batch
                .unchanged(&keys::group_version(id), m.version)
                .delete(&keys::group(id))
                .delete_prefix(&keys::members(id))
                .delete(&keys::group_version(id))
                .delete_prefix(&keys::pending_invitations(id))
                .delete_prefix(&keys::subgroups(id))
                // Its CalDAV calendar goes with it.
                .delete_prefix(&keys::dav_gones(id))
                .delete(&keys::dav_floor(id));
            // Its subgroups stay, detached (a parent that no longer exists
            // names nothing); it leaves its own parent's list.
            for child in self.subgroups_of(id).await? {
                let mut g = child.value;
                g.parent_id = None;
                batch
                    .unchanged(&keys::group(g.id), child.mod_revision)
                    .put(&keys::group(g.id), &g)?;
            }
            if let Some(parent) = m.group.parent_id {
                batch.delete(&keys::subgroup(parent, id));
            }
            audit::add(
                &mut batch,
                Some(caller),
                &m.me.username,
                "group_deleted",
                json!({"group_id": id, "name": m.group.name, "members": members.len()}),
            )?;
            for mem in &members {
                batch.delete(&keys::user_group(mem.user_id, id));
                if mem.user_id != caller {
                    notifications::add(
                        &mut batch,
                        mem.user_id,
                        "group_deleted",
                        json!({"group_id": id, "group_name": m.group.name}),
                    )?;
                }
            }
            self.commit_or_retry(batch, invitees).await
        })
        .await?;
        futures::future::join_all(
            invitees
                .into_iter()
                .map(|u| self.trim_answered_invitations(u)),
        )
        .await;
        Ok(())
    }

    /// Changes a member's rank, or hands ownership over (`rank` 0 by the
    /// owner).
    pub async fn update_member(
        &self,
        caller: Uuid,
        id: Uuid,
        target: Uuid,
        rank: u32,
    ) -> ApiResult<Member> {
        self.optimistic("this group", || async {
            let m = self.membership(caller, id).await?;
            let t = self
                .get::<Member>(&keys::member(id, target))
                .await?
                .ok_or_else(|| ApiError::not_found("member"))?
                .value;
            let mut batch = Batch::default();
            batch
                .unchanged(&keys::group_version(id), m.version)
                .bump(&keys::group_version(id));
            let updated = if rank == OWNER_RANK {
                rules::check_owner(&m.group, caller, "hand the group over")?;
                if target == caller {
                    return Ok(Attempt::Done(m.me));
                }
                let mut g = m.group.clone();
                g.owner_id = target;
                let old_owner = Member {
                    rank: rules::rank_after_handover(g.kind),
                    ..m.me.clone()
                };
                batch
                    .put(&keys::group(id), &g)?
                    .put(&keys::member(id, caller), &old_owner)?;
                Member { rank: OWNER_RANK, ..t }
            } else {
                rules::check_rank_change(m.group.kind, &m.me, &t, rank)?;
                Member { rank, ..t }
            };
            batch.put(&keys::member(id, target), &updated)?;
            let action = if updated.rank == OWNER_RANK {
                "group_handed_over"
            } else {
                "member_rank_changed"
            };
            audit::add(&mut batch, Some(caller),
                &m.me.username,
                action,
                json!({"group_id": id, "member_id": target, "member": updated.username, "rank": updated.rank}))?;
            notifications::add(
                &mut batch,
                target,
                "member_changed",
                json!({"group_id": id, "group_name": m.group.name, "rank": updated.rank, "by": caller}),
            )?;
            self.commit_or_retry(batch, updated).await
        })
        .await
    }

    /// Removes a member (a superior) or leaves (the caller themselves).
    pub async fn remove_member(&self, caller: Uuid, id: Uuid, target: Uuid) -> ApiResult<()> {
        self.optimistic("this group", || async {
            let m = self.membership(caller, id).await?;
            let t = self
                .get::<Member>(&keys::member(id, target))
                .await?
                .ok_or_else(|| ApiError::not_found("member"))?
                .value;
            rules::check_removal(&m.group, &m.me, &t)?;
            let mut batch = Batch::default();
            batch
                .unchanged(&keys::group_version(id), m.version)
                .bump(&keys::group_version(id))
                .delete(&keys::member(id, target))
                .delete(&keys::user_group(target, id))
                .put(&keys::group_sync(id, target), &PendingSync::new(id, target))?;
            // Their feed URL of the group ends with the membership (else
            // it would open again if they came back).
            let feed = keys::feed_of(target, Some(id));
            if let Some(f) = self.get::<super::feeds::FeedOf>(&feed).await? {
                batch
                    .unchanged(&feed, f.mod_revision)
                    .delete(&feed)
                    .delete(&keys::feed(&f.value.hash));
            }
            audit::add(
                &mut batch,
                Some(caller),
                &m.me.username,
                if target == caller {
                    "member_left"
                } else {
                    "member_removed"
                },
                json!({"group_id": id, "member_id": target, "member": t.username}),
            )?;
            if target != caller {
                notifications::add(
                    &mut batch,
                    target,
                    "member_removed",
                    json!({"group_id": id, "group_name": m.group.name, "by": caller}),
                )?;
            }
            self.commit_or_retry(batch, ()).await
        })
        .await?;
        self.sync_group_member_soon(id, target).await;
        Ok(())
    }

    /// Invites a user by name.
    pub async fn invite(
        &self,
        caller: Uuid,
        id: Uuid,
        req: InviteRequest,
    ) -> ApiResult<Invitation> {
        let m = self.membership(caller, id).await?;
        let rank = rules::invitation_rank(m.group.kind, m.me.rank, req.rank)?;
        let invitee = self
            .users_by_name(std::slice::from_ref(&req.username), "username")
            .await?
            .remove(0);
        let member_key = keys::member(id, invitee.id);
        let pending_key = keys::pending_invitation(id, invitee.id);
        let inv = Invitation {
            id: Uuid::new_v4(),
            group_id: id,
            group_name: m.group.name.clone(),
            invited_by: caller,
            invitee_id: invitee.id,
            rank,
            status: InvitationStatus::Pending,
            created_at: Utc::now(),
        };
        let mut batch = Batch::default();
        batch
            .exists(&keys::member(id, caller))
            .unchanged(&member_key, 0)
            .unchanged(&pending_key, 0)
            .put(&keys::invitation(inv.id), &inv)?
            .put_raw(&keys::user_invitation(invitee.id, inv.id), Vec::new())
            .put(&pending_key, &inv.id)?;
        notifications::add(
            &mut batch,
            invitee.id,
            "group_invitation",
            json!({"invitation_id": inv.id, "group_id": id, "group_name": inv.group_name, "invited_by": caller, "rank": rank}),
        )?;
        if self.commit(batch).await? {
            return Ok(inv);
        }
        if self.revision(&member_key).await? != 0 {
            return Err(ApiError::conflict(format!(
                "{} is already a member",
                invitee.username
            )));
        }
        if self.revision(&pending_key).await? != 0 {
            return Err(ApiError::conflict(format!(
                "{} already has a pending invitation to this group",
                invitee.username
            )));
        }
        Err(ApiError::not_found("group"))
    }

    /// The records of a group's pending invitations (by its index of
    /// them), with their revisions.
    async fn pending_invitations_of(&self, group: Uuid) -> ApiResult<Vec<Versioned<Invitation>>> {
        let pending = self.list::<Uuid>(&keys::pending_invitations(group)).await?;
        self.records(pending.into_iter().map(|v| v.value), keys::invitation)
            .await
    }

    /// The pending invitations of a group that the caller may manage
    /// ([`rules::may_manage_invitation`]), newest first.
    pub async fn group_invitations(&self, caller: Uuid, id: Uuid) -> ApiResult<Vec<Invitation>> {
        let m = self.membership(caller, id).await?;
        let mut out: Vec<Invitation> = self
            .pending_invitations_of(id)
            .await?
            .into_iter()
            .map(|v| v.value)
            .filter(|i| {
                i.status == InvitationStatus::Pending
                    && rules::may_manage_invitation(&m.me, i.invited_by, i.rank)
            })
            .collect();
        out.sort_by_key(|i| std::cmp::Reverse(i.created_at));
        Ok(out)
    }

    /// Revokes a pending invitation of a group (its sender, or a member
    /// ranked above the rank it gives); the invitee is told.
    pub async fn revoke_invitation(
        &self,
        caller: Uuid,
        id: Uuid,
        invitation: Uuid,
    ) -> ApiResult<Invitation> {
        let inv = self.optimistic("this invitation", || async {
            let m = self.membership(caller, id).await?;
            let cur = self
                .get::<Invitation>(&keys::invitation(invitation))
                .await?
                .filter(|i| i.value.group_id == id)
                .ok_or_else(|| ApiError::not_found("invitation"))?;
            let mut inv = cur.value;
            rules::check_revocable(&m.me, &inv)?;
            inv.status = InvitationStatus::Revoked;
            let mut batch = Batch::default();
            batch
                .unchanged(&keys::invitation(invitation), cur.mod_revision)
                .unchanged(&keys::group_version(id), m.version)
                .put(&keys::invitation(invitation), &inv)?
                .delete(&keys::pending_invitation(id, inv.invitee_id));
            audit::add(&mut batch, Some(caller),
                &m.me.username,
                "invitation_revoked",
                json!({"group_id": id, "invitation_id": invitation, "invitee_id": inv.invitee_id}))?;
            notifications::add(
                &mut batch,
                inv.invitee_id,
                "invitation_revoked",
                json!({"invitation_id": invitation, "group_id": id, "group_name": inv.group_name, "by": caller}),
            )?;
            self.commit_or_retry(batch, inv.clone()).await
        })
        .await?;
        self.trim_answered_invitations(inv.invitee_id).await;
        Ok(inv)
    }

    /// The caller's invitations, newest first: every pending one and the
    /// newest answered ones; older answered ones are deleted on the way
    /// ([`rules::answered_to_forget`]).
    pub async fn invitations(&self, caller: Uuid) -> ApiResult<Vec<Invitation>> {
        let ids = self.indexed_ids(&keys::user_invitations(caller)).await?;
        let mut out = self.invitations_newest_first(ids).await?;
        let forget = self.forget_answered(caller, &out).await?;
        if !forget.is_empty() {
            let forget: std::collections::HashSet<Uuid> = forget.into_iter().collect();
            out.retain(|i| !forget.contains(&i.id));
        }
        Ok(out)
    }

    async fn invitations_newest_first(&self, ids: Vec<Uuid>) -> ApiResult<Vec<Invitation>> {
        let found = self.records::<Invitation>(ids, keys::invitation).await?;
        let mut out: Vec<Invitation> = found.into_iter().map(|v| v.value).collect();
        out.sort_by_key(|i| std::cmp::Reverse(i.created_at));
        Ok(out)
    }

    /// Deletes `user`'s answered invitations of `newest_first` past the
    /// newest [`rules::KEEP_ANSWERED_INVITATIONS`]; returns their ids.
    async fn forget_answered(
        &self,
        user: Uuid,
        newest_first: &[Invitation],
    ) -> ApiResult<Vec<Uuid>> {
        let forget = rules::answered_to_forget(newest_first);
        for old in forget.chunks(FORGET_PER_TXN) {
            // Blind deletes: an answered invitation is never written again.
            let mut batch = Batch::default();
            for id in old {
                batch
                    .delete(&keys::invitation(*id))
                    .delete(&keys::user_invitation(user, *id));
            }
            self.commit(batch).await?;
        }
        if !forget.is_empty() {
            tracing::info!(%user, deleted = forget.len(), "older answered invitations deleted");
        }
        Ok(forget)
    }

    /// After one of `user`'s invitations was answered or revoked: trims
    /// their answered ones as a listing does, so a person who never lists
    /// them keeps no more than a listing would leave. Only the index is
    /// read while it holds no more than the answered ones kept. A failure
    /// is only logged: the change that called it is committed.
    async fn trim_answered_invitations(&self, user: Uuid) {
        let trimmed = async {
            let ids = self.indexed_ids(&keys::user_invitations(user)).await?;
            if ids.len() <= rules::KEEP_ANSWERED_INVITATIONS {
                return Ok(());
            }
            let list = self.invitations_newest_first(ids).await?;
            self.forget_answered(user, &list).await.map(drop)
        };
        if let Err(e) = trimmed.await {
            tracing::warn!(%user, error = ?e, "answered invitations not trimmed; the next listing does it");
        }
    }

    /// Accepts or declines an invitation, once.
    pub async fn answer_invitation(
        &self,
        caller: Uuid,
        id: Uuid,
        accept: bool,
    ) -> ApiResult<Invitation> {
        let inv = self.optimistic("this invitation", || async {
            let cur = self
                .get::<Invitation>(&keys::invitation(id))
                .await?
                .filter(|i| rules::may_answer_invitation(&i.value, caller))
                .ok_or_else(|| ApiError::not_found("invitation"))?;
            let mut inv = cur.value;
            rules::check_answerable(&inv)?;
            let g = inv.group_id;
            // The group's version, kind and the sender's membership, as of
            // one revision: any change of ranks or members moves the
            // version, so the compare below holds the decision to it.
            let reads = [
                Read::key(&keys::group_version(g)),
                Read::key(&keys::group(g)),
                Read::key(&keys::member(g, inv.invited_by)),
            ];
            let Some(snap) = self.snapshot(&[], reads).await? else {
                return Ok(Attempt::Retry);
            };
            let version = snap.mod_revision(0);
            let group = snap.value::<GroupRecord>(1)?.map(|v| v.value);
            let inviter = snap.value::<Member>(2)?.map(|v| v.value);
            let refused = match &group {
                // One its group's deletion missed (sent as the group
                // went, or left pending by an earlier version, which did
                // not withdraw them) goes the same way.
                None => Some(ApiError::conflict("the group no longer exists")),
                Some(group) if accept => {
                    rules::invitation_still_valid(group.kind, inviter.as_ref(), inv.rank).err()
                }
                Some(_) => None,
            };
            // A refused one is withdrawn for good (and no longer blocks a
            // new invitation of this person), then refused.
            inv.status = match (&refused, accept) {
                (Some(_), _) => InvitationStatus::Revoked,
                (None, true) => InvitationStatus::Accepted,
                (None, false) => InvitationStatus::Declined,
            };
            let mut batch = Batch::default();
            batch
                .unchanged(&keys::invitation(id), cur.mod_revision)
                .unchanged(&keys::group_version(g), version)
                .put(&keys::invitation(id), &inv)?
                .delete(&keys::pending_invitation(g, caller));
            if let Some(refused) = refused {
                return match self.commit_or_retry(batch, ()).await? {
                    Attempt::Done(()) => Err(refused),
                    Attempt::Retry => Ok(Attempt::Retry),
                };
            }
            let me = self.me(caller).await?;
            if accept {
                batch
                    .put(
                        &keys::member(g, caller),
                        &Member { user_id: caller, username: me.username.clone(), rank: inv.rank },
                    )?
                    .put_raw(&keys::user_group(caller, g), Vec::new())
                    .bump(&keys::group_version(g))
                    .put(&keys::group_sync(g, caller), &PendingSync::new(g, caller))?;
            }
            notifications::add(
                &mut batch,
                inv.invited_by,
                "invitation_answered",
                json!({"invitation_id": id, "group_id": g, "group_name": inv.group_name, "user_id": caller, "username": me.username, "status": inv.status}),
            )?;
            self.commit_or_retry(batch, inv.clone()).await
        })
        .await?;
        if inv.status == InvitationStatus::Accepted {
            self.sync_group_member_soon(inv.group_id, caller).await;
        }
        self.trim_answered_invitations(caller).await;
        Ok(inv)
    }

    /// Creates a group event: every member attends, with the status the
    /// hierarchy rules give. With an idempotency `key`, repeating the
    /// request creates it once.
    pub async fn create_group_event(
        &self,
        caller: Uuid,
        req: CreateEventRequest,
        reject: bool,
        key: Option<&str>,
    ) -> ApiResult<(EventRecord, Vec<Conflict>)> {
        let group_id = events::group_of(&req)?;
        let organizer = self.me(caller).await?;
        let idempotent = Idempotent::new(caller, key, &req)?;
        let id = Uuid::new_v4();
        // As for personal events: an earlier request under the key is
        // looked for only once this one lost a race or a conflict check.
        let mut first = true;
        self.optimistic("this group's agendas", || {
            let req = req.clone();
            let organizer = organizer.clone();
            let idempotent = idempotent.as_ref();
            let again = !std::mem::replace(&mut first, false);
            async move {
                if again {
                    if let Some(done) = self.replay(caller, idempotent).await? {
                        return Ok(Attempt::Done(done));
                    }
                }
                let (m, members) = self.membership_and_members(caller, group_id).await?;
                let attendees = rules::group_event_attendees(m.group.kind, &m.me, &members);
                let organizer = organizer.clone();
                let mut ev = cpu::run_sized(caller, cpu::rule_weight(&req.rrule), move || {
                    new_event(req, &organizer, attendees, Some(group_id))
                })
                .await??;
                ev.id = id;
                if let Some(i) = idempotent {
                    i.stamp(&mut ev);
                }
                let everyone: Vec<Uuid> = ev.participants().collect();
                let notify = notices(&ev, caller, Change::Created);
                let w = Write {
                    ev: &ev,
                    viewer: caller,
                    check: everyone,
                    reject,
                    guards: vec![(keys::group_version(group_id), m.version)],
                    notify,
                    previous: None,
                };
                self.write_new(caller, idempotent, w).await
            }
        })
        .await
    }

    /// An event `caller` may open: one they take part in, or one whose
    /// details they see in the agenda of a group they share with an
    /// attendee ([`rules::sees_details`], the group agenda's own rule, so
    /// what a superior sees there opens too). 404 for anyone else.
    pub async fn event_to_view(&self, caller: Uuid, id: Uuid) -> ApiResult<Versioned<EventRecord>> {
        let not_found = || ApiError::not_found("event");
        let ev = self
            .get::<EventRecord>(&keys::event(id))
            .await?
            .ok_or_else(not_found)?;
        if rules::may_see_event(&ev.value, caller) {
            return Ok(ev);
        }
        // Those in whose agenda the event shows (as in the group agenda).
        let owners: Vec<Uuid> = ev
            .value
            .attendee_ids()
            .filter(|a| rules::is_busy_for(&ev.value, *a))
            .collect();
        if ev.value.visibility == crate::model::Visibility::Private || owners.is_empty() {
            return Err(not_found());
        }
        let groups = self.indexed_ids(&keys::user_groups(caller)).await?;
        let seen = try_join_all(groups.into_iter().map(|g| {
            let (ev, owners) = (&ev.value, &owners);
            async move {
                let mut reads = vec![
                    Read::key(&keys::member(g, caller)),
                    Read::key(&keys::group(g)),
                ];
                reads.extend(owners.iter().map(|o| Read::key(&keys::member(g, *o))));
                let Some(snap) = self.snapshot(&[], reads).await? else {
                    return Ok(false);
                };
                let (Some(me), Some(group)) =
                    (snap.value::<Member>(0)?, snap.value::<GroupRecord>(1)?)
                else {
                    return Ok(false);
                };
                let viewer = Viewer {
                    user_id: caller,
                    rank: me.value.rank,
                    kind: group.value.kind,
                    group_id: g,
                };
                for i in 0..owners.len() {
                    if let Some(owner) = snap.value::<Member>(i + 2)? {
                        if rules::sees_details(&viewer, &owner.value, ev) {
                            return Ok(true);
                        }
                    }
                }
                Ok::<_, ApiError>(false)
            }
        }))
        .await?;
        if seen.into_iter().any(|s| s) {
            Ok(ev)
        } else {
            Err(not_found())
        }
    }

    /// Brings `user`'s part in `group`'s events in line with their
    /// membership after the change that wrote the marker, waiting at most
    /// [`SYNC_WAIT`]; the rest goes on detached, and if this process dies,
    /// a sweep ([`Store::finish_pending_group_syncs`]) finishes it.
    async fn sync_group_member_soon(&self, group: Uuid, user: Uuid) {
        let store = self.clone();
        let job = tokio::spawn(async move { store.sync_group_member(group, user).await });
        match tokio::time::timeout(SYNC_WAIT, job).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(%group, %user, error = %e.message, "group events not yet brought in line with a membership change; a sweep will")
            }
            Ok(Err(e)) => tracing::warn!(%group, %user, error = %e, "group event sync failed"),
            Err(_) => {
                tracing::info!(%group, %user, "many group events: the sync goes on in the background")
            }
        }
    }

    /// The ids of `group`'s events not over by `now` (and any a replica
    /// of layout 4 indexed by id alone): what a change of membership
    /// touches. Those over are not read at all (docs/GROWTH.md Found 5).
    async fn group_events_ahead(&self, group: Uuid, now: DateTime<Utc>) -> ApiResult<Vec<Uuid>> {
        let (from, to) = keys::group_events_ahead(group, now);
        let (by_id, by_id_end) = keys::group_events_by_id(group);
        let snap = self
            .snapshot(
                &[],
                [Read::span(&from, &to), Read::span(&by_id, &by_id_end)],
            )
            .await?
            .ok_or_else(|| ApiError::internal("a read without guards was refused"))?;
        Ok(snap
            .ids(0)
            .into_iter()
            .chain(snap.ids(1))
            .map(|(id, _)| id)
            .collect())
    }

    /// Brings `user`'s part in the events ahead of `group` in line with
    /// their membership now: a member is added to those they are not in
    /// (status by the hierarchy, [`rules::group_event_status`]), someone
    /// gone is taken out of them (and their agenda). One small transaction
    /// per event, each compared on the event and on the membership as read
    /// here, so the cost of a join is bounded per write and a later join or
    /// departure (which writes a new marker and runs again) wins. The
    /// marker goes at the end if no newer one replaced it. Safe to run
    /// twice at once. Returns how many events changed.
    pub async fn sync_group_member(&self, group: Uuid, user: Uuid) -> ApiResult<usize> {
        let member_key = keys::member(group, user);
        let reads = [
            Read::key(&keys::group_sync(group, user)),
            Read::key(&member_key),
            Read::key(&keys::group(group)),
        ];
        let Some(snap) = self.snapshot(&[], reads).await? else {
            return Ok(0);
        };
        let marker = snap.mod_revision(0);
        let member_rev = snap.mod_revision(1);
        let member = snap.value::<Member>(1)?.map(|v| v.value);
        let kind = snap.value::<GroupRecord>(2)?.map(|v| v.value.kind);
        let now = Utc::now();
        let mut changed = 0;
        for id in self.group_events_ahead(group, now).await? {
            let mut retried = false;
            let outcome = self
                .optimistic("this group's event", || {
                    let again = std::mem::replace(&mut retried, true);
                    let (member, member_key) = (&member, &member_key);
                    async move {
                        // A lost race may be a newer change of membership:
                        // then its own run decides.
                        if again && self.revision(member_key).await? != member_rev {
                            return Ok(Attempt::Done(None));
                        }
                        let Some(cur) = self.get::<EventRecord>(&keys::event(id)).await? else {
                            return Ok(Attempt::Done(Some(false)));
                        };
                        let joins = match (member, kind) {
                            (Some(m), Some(kind)) => {
                                let organizer = keys::member(group, cur.value.organizer_id);
                                let creator = self.get::<Member>(&organizer).await?;
                                Some(Attendee {
                                    user_id: user,
                                    username: m.username.clone(),
                                    status: rules::group_event_status(
                                        kind,
                                        creator.map(|c| c.value.rank),
                                        m.rank,
                                    ),
                                })
                            }
                            _ => None,
                        };
                        let next = events::synced(&cur.value, user, joins)
                            .filter(|_| events::still_ahead(&cur.value, now));
                        let Some(ev) = next else {
                            return Ok(Attempt::Done(Some(false)));
                        };
                        let w = Write {
                            ev: &ev,
                            viewer: user,
                            check: Vec::new(),
                            reject: false,
                            guards: vec![(member_key.clone(), member_rev)],
                            notify: Vec::new(),
                            previous: Some(&cur),
                        };
                        Ok(self.write_event(w).await?.map(|_| Some(true)))
                    }
                })
                .await?;
            match outcome {
                None => return Ok(changed),
                Some(true) => changed += 1,
                Some(false) => {}
            }
        }
        let mut done = Batch::default();
        done.unchanged(&keys::group_sync(group, user), marker)
            .delete(&keys::group_sync(group, user));
        self.commit(done).await?;
        if changed > 0 {
            tracing::info!(%group, %user, changed, member = member.is_some(), "group events brought in line with a membership change");
        }
        Ok(changed)
    }

    /// Finishes the syncs of group events that were interrupted: those
    /// whose marker is older than `older_than`. Returns how many.
    pub async fn finish_pending_group_syncs(
        &self,
        older_than: std::time::Duration,
    ) -> ApiResult<usize> {
        let cutoff = Utc::now() - older_than;
        let mut finished = 0;
        for pending in self.list::<PendingSync>(keys::GROUP_SYNCS).await? {
            let p = pending.value;
            if p.since > cutoff {
                continue;
            }
            tracing::info!(group = %p.group_id, user = %p.user_id, since = %p.since, "finishing an interrupted sync of group events");
            // One that fails waits for the next round; the others go on.
            match self.sync_group_member(p.group_id, p.user_id).await {
                Ok(_) => finished += 1,
                Err(e) => {
                    tracing::warn!(group = %p.group_id, user = %p.user_id, error = %e.message, "could not finish a sync of group events; will retry")
                }
            }
        }
        Ok(finished)
    }

    /// Every member's agenda in `[from, to)`, with details only where the
    /// caller may see them.
    pub async fn group_agenda(
        &self,
        caller: Uuid,
        id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<serde_json::Value> {
        // One snapshot for the whole view: every agenda is read in one go,
        // and only if the membership is still the one read just before.
        let (m, members, agendas) = self
            .optimistic("this group", || async {
                let (m, members) = self.membership_and_members(caller, id).await?;
                let reads = members
                    .iter()
                    .flat_map(|mem| window_reads(mem.user_id, (from, to), 0));
                let guard = [(keys::group_version(id), m.version)];
                let Some(snap) = self.snapshot(&guard, reads).await? else {
                    return Ok(Attempt::Retry);
                };
                let agendas = (0..members.len())
                    .map(|i| window_events(&snap, 2 * i))
                    .collect::<ApiResult<Vec<_>>>()?;
                Ok(Attempt::Done((m, members, agendas)))
            })
            .await?;
        let viewer = Viewer {
            user_id: caller,
            rank: m.me.rank,
            kind: m.group.kind,
            group_id: id,
        };
        let weight = cpu::weight(agendas.iter().flatten());
        let out = cpu::run_sized(caller, weight, move || {
            members
                .iter()
                .zip(&agendas)
                .map(|(mem, agenda)| {
                    let mut items: Vec<(DateTime<Utc>, serde_json::Value)> = Vec::new();
                    for ev in agenda.iter().filter(|e| rules::is_busy_for(e, mem.user_id)) {
                        let details = rules::sees_details(&viewer, mem, ev);
                        for occ in recurrence::instances(ev, from, to) {
                            let mut item = json!({"start": occ.start, "end": occ.end});
                            if ev.all_day {
                                item["all_day"] = json!(true);
                            }
                            if details {
                                item["event"] = serde_json::to_value(view(ev, caller, Some(occ)))
                                    .unwrap_or_default();
                            }
                            items.push((occ.start, item));
                        }
                    }
                    items.sort_by_key(|(s, _)| *s);
                    json!({
                        "user_id": mem.user_id,
                        "username": mem.username,
                        "rank": mem.rank,
                        "items": items.into_iter().map(|(_, i)| i).collect::<Vec<_>>(),
                    })
                })
                .collect::<Vec<serde_json::Value>>()
        })
        .await?;
        Ok(json!({ "members": out }))
    }
}
