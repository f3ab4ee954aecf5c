//! `/v1/groups/...` and `/v1/invitations/...`.

use agenda_calendar::api::{
    CreateGroupRequest, InviteRequest, Op, UpdateGroupRequest, UpdateMemberRequest, Window,
};
use agenda_calendar::model::{Group, Invitation, Member};
use axum::response::Response;

use crate::error::HttpError;
use crate::extract::{Authed, JsonBody, Path, Query};

/// Creates a group; you become its owner (rank 0).
#[utoipa::path(post, path = "/v1/groups", tag = "groups", operation_id = "create_group", security(("bearer" = [])),
    request_body = CreateGroupRequest,
    responses((status = 201, description = "the group, you its owner", body = Group),
              (status = 409, description = "the parent group changed meanwhile; retry")))]
pub async fn create(
    Authed(c): Authed,
    JsonBody(body): JsonBody<CreateGroupRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::CreateGroup(body)).await
}

/// Your groups.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", operation_id = "list_groups", security(("bearer" = [])),
    responses((status = 200, description = "your groups", body = crate::openapi::GroupList)))]
pub async fn list(Authed(c): Authed) -> Result<Response, HttpError> {
    c.call(Op::ListGroups).await
}

/// A group you belong to.
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups", operation_id = "get_group", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)")),
    responses((status = 200, description = "the group", body = Group),
              (status = 404, description = "no such group among yours")))]
pub async fn get(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::GetGroup { id }).await
}

/// Renames or re-describes a group (owner only).
#[utoipa::path(patch, path = "/v1/groups/{id}", tag = "groups", operation_id = "update_group", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)")), request_body = UpdateGroupRequest,
    responses((status = 200, description = "the group as changed", body = Group),
              (status = 403, description = "only the owner may change the group"),
              (status = 404, description = "no such group among yours")))]
pub async fn update(
    Authed(c): Authed,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateGroupRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::UpdateGroup { id, body }).await
}

/// Deletes a group (owner only).
#[utoipa::path(delete, path = "/v1/groups/{id}", tag = "groups", operation_id = "delete_group", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)")),
    responses((status = 204, description = "deleted"),
              (status = 403, description = "only the owner may delete the group"),
              (status = 404, description = "no such group among yours")))]
pub async fn delete(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::DeleteGroup { id }).await
}

/// Members of a group you belong to, best rank first.
#[utoipa::path(get, path = "/v1/groups/{id}/members", tag = "groups", operation_id = "list_members", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)")),
    responses((status = 200, description = "the members, best rank first", body = crate::openapi::MemberList),
              (status = 404, description = "no such group among yours")))]
pub async fn members(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::ListMembers { id }).await
}

/// Changes a member's rank (a superior), or hands the group over (rank 0,
/// owner only).
#[utoipa::path(patch, path = "/v1/groups/{id}/members/{user_id}", tag = "groups", operation_id = "update_member", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)"),
           ("user_id" = Uuid, Path, description = "A member's user id (anything else is 404)")),
    request_body = UpdateMemberRequest,
    responses((status = 200, description = "the member as changed", body = Member),
              (status = 403, description = "you do not rank above this member, or the rank is not below yours, or only the owner hands over"),
              (status = 404, description = "no such group among yours, or no such member"),
              (status = 422, description = "rank above 1000, or a rank other than 0 in a flat group")))]
pub async fn update_member(
    Authed(c): Authed,
    Path((id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateMemberRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::UpdateMember { id, user_id, body }).await
}

/// Removes a member (a superior) or leaves the group (yourself).
#[utoipa::path(delete, path = "/v1/groups/{id}/members/{user_id}", tag = "groups", operation_id = "remove_member", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)"),
           ("user_id" = Uuid, Path, description = "A member's user id (anything else is 404)")),
    responses((status = 204, description = "removed, or you left"),
              (status = 403, description = "only members ranked above this member may remove them"),
              (status = 404, description = "no such group among yours, or no such member"),
              (status = 409, description = "the owner must hand over first")))]
pub async fn remove_member(
    Authed(c): Authed,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    c.call(Op::RemoveMember { id, user_id }).await
}

/// Invites someone by username.
#[utoipa::path(post, path = "/v1/groups/{id}/invitations", tag = "groups", operation_id = "invite", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)")), request_body = InviteRequest,
    responses((status = 201, description = "the invitation", body = Invitation),
              (status = 403, description = "the rank is not below yours"),
              (status = 404, description = "no such group among yours"),
              (status = 409, description = "already a member, or already invited")))]
pub async fn invite(
    Authed(c): Authed,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<InviteRequest>,
) -> Result<Response, HttpError> {
    c.call(Op::Invite { id, body }).await
}

/// The group's pending invitations you may manage: those you sent, and
/// those offering a rank below yours.
#[utoipa::path(get, path = "/v1/groups/{id}/invitations", tag = "groups", operation_id = "group_invitations", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)")),
    responses((status = 200, description = "pending invitations, newest first", body = crate::openapi::InvitationList),
              (status = 404, description = "no such group among yours")))]
pub async fn group_invitations(
    Authed(c): Authed,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    c.call(Op::GroupInvitations { id }).await
}

/// Revokes a pending invitation (its sender, or a member ranked above the
/// rank it offers); the invitee is notified.
#[utoipa::path(delete, path = "/v1/groups/{id}/invitations/{invitation_id}", tag = "groups", operation_id = "revoke_invitation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)"),
           ("invitation_id" = Uuid, Path, description = "An invitation of that group (anything else is 404)")),
    responses((status = 200, description = "the invitation, now revoked", body = Invitation),
              (status = 403, description = "you neither sent it nor rank above the rank it offers"),
              (status = 404, description = "no such group among yours, or no such invitation in it"),
              (status = 409, description = "already answered or revoked")))]
pub async fn revoke_invitation(
    Authed(c): Authed,
    Path((id, invitation_id)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    c.call(Op::RevokeInvitation { id, invitation_id }).await
}

/// Every member's agenda; details only where you may see them.
#[utoipa::path(get, path = "/v1/groups/{id}/agenda", tag = "groups", operation_id = "group_agenda", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "A group id (anything else is 404)"), Window),
    responses((status = 200, description = "every member's busy time; details only where you may see them", body = crate::openapi::GroupAgenda),
              (status = 404, description = "no such group among yours"),
              (status = 422, description = "from or to missing or not RFC 3339, to not after from, or more than 366 days apart")))]
pub async fn agenda(
    Authed(c): Authed,
    Path(id): Path<String>,
    Query(window): Query<Window>,
) -> Result<Response, HttpError> {
    c.call(Op::GroupAgenda { id, window }).await
}

/// Your invitations, newest first.
#[utoipa::path(get, path = "/v1/invitations", tag = "groups", operation_id = "list_invitations", security(("bearer" = [])),
    responses((status = 200, description = "your invitations, newest first", body = crate::openapi::InvitationList)))]
pub async fn invitations(Authed(c): Authed) -> Result<Response, HttpError> {
    c.call(Op::ListInvitations).await
}

/// Accepts an invitation: you join the group at its rank.
#[utoipa::path(post, path = "/v1/invitations/{id}/accept", tag = "groups", operation_id = "accept_invitation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "An invitation id (anything else is 404)")),
    responses((status = 200, description = "the invitation, accepted", body = Invitation),
              (status = 404, description = "no such invitation of yours"),
              (status = 409, description = "already answered, or the group is gone")))]
pub async fn accept(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::AnswerInvitation { id, accept: true }).await
}

/// Declines an invitation.
#[utoipa::path(post, path = "/v1/invitations/{id}/decline", tag = "groups", operation_id = "decline_invitation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "An invitation id (anything else is 404)")),
    responses((status = 200, description = "the invitation, declined", body = Invitation),
              (status = 404, description = "no such invitation of yours"),
              (status = 409, description = "already answered, or the group is gone")))]
pub async fn decline(Authed(c): Authed, Path(id): Path<String>) -> Result<Response, HttpError> {
    c.call(Op::AnswerInvitation { id, accept: false }).await
}
