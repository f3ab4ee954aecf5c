//! The groups service's operations, each a call into the shared store.

use agenda_calendar::api::Op;
use agenda_calendar::events::with_conflicts;
use agenda_calendar::store::Store;
use agenda_calendar::{validate, ApiError, ApiResult};
use agenda_serving::{Caller, Handler, Reply};

/// The groups service.
pub struct Groups {
    pub store: Store,
}

impl Handler for Groups {
    async fn handle(&self, caller: Caller, op: Op) -> ApiResult<Reply> {
        let s = &self.store;
        let me = caller.user()?;
        let group = |id: &str| validate::id("group", id);
        match op {
            Op::CreateGroup(req) => Reply::created(s.create_group(me, req).await?),
            Op::ListGroups => Reply::items(s.list_groups(me).await?),
            Op::GetGroup { id } => Reply::ok(s.group_view(me, group(&id)?).await?),
            Op::UpdateGroup { id, body } => Reply::ok(s.update_group(me, group(&id)?, body).await?),
            Op::DeleteGroup { id } => {
                s.delete_group(me, group(&id)?).await?;
                Reply::no_content()
            }
            Op::ListMembers { id } => {
                let gid = group(&id)?;
                s.membership(me, gid).await?;
                Reply::items(s.members(gid).await?)
            }
            Op::UpdateMember { id, user_id, body } => Reply::ok(
                s.update_member(
                    me,
                    group(&id)?,
                    validate::id("member", &user_id)?,
                    body.rank,
                )
                .await?,
            ),
            Op::RemoveMember { id, user_id } => {
                s.remove_member(me, group(&id)?, validate::id("member", &user_id)?)
                    .await?;
                Reply::no_content()
            }
            Op::Invite { id, body } => Reply::created(s.invite(me, group(&id)?, body).await?),
            Op::ListInvitations => Reply::items(s.invitations(me).await?),
            Op::GroupInvitations { id } => {
                Reply::items(s.group_invitations(me, group(&id)?).await?)
            }
            Op::RevokeInvitation { id, invitation_id } => Reply::ok(
                s.revoke_invitation(me, group(&id)?, validate::id("invitation", &invitation_id)?)
                    .await?,
            ),
            Op::AnswerInvitation { id, accept } => Reply::ok(
                s.answer_invitation(me, validate::id("invitation", &id)?, accept)
                    .await?,
            ),
            Op::CreateGroupEvent {
                body,
                reject,
                idempotency_key,
            } => {
                let (ev, conflicts) = s
                    .create_group_event(me, body, reject, idempotency_key.as_deref())
                    .await?;
                Reply::created(with_conflicts(&ev, me, conflicts))
            }
            Op::GroupAgenda { id, window } => {
                let (from, to) = validate::window(window.from.as_deref(), window.to.as_deref())?;
                Reply::ok(s.group_agenda(me, group(&id)?, from, to).await?)
            }
            other => Err(ApiError::bad_request(format!(
                "operation {:?} is not served by agenda-groups",
                other.service()
            ))),
        }
    }
}
