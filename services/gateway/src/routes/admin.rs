//! `/v1/admin/...`: for administrators (`agendactl user grant-admin`).

use agenda_calendar::api::{AuditQuery, Op};
use agenda_calendar::store::audit::AuditPage;
use axum::response::Response;

use crate::error::HttpError;
use crate::extract::{Authed, Query};

/// The audit log: security-relevant actions, oldest first, in pages.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", operation_id = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, description = "a page of entries; pass `next` as `after` for the next one", body = AuditPage),
              (status = 403, description = "you are not an administrator"),
              (status = 422, description = "a bad from, to, after or limit")))]
pub async fn audit(Authed(c): Authed, Query(q): Query<AuditQuery>) -> Result<Response, HttpError> {
    c.call(Op::Audit(q)).await
}
