//! The OpenAPI document, assembled from the route annotations and the
//! schema derives on the request and resource types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, auth, events, groups, notifications, ops, stream, users};

/// The API document served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Agenda", description = "Distributed shared calendar: personal agendas, groups, invitations, conflicts, free/busy, notifications. Errors are {\"error\":{\"code\",\"message\",\"details\"}}."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout,
        users::get_me, users::update_me, users::delete_me, users::search,
        groups::create, groups::list, groups::get, groups::update, groups::delete,
        groups::members, groups::update_member, groups::remove_member, groups::invite,
        groups::group_invitations, groups::revoke_invitation,
        groups::agenda, groups::invitations, groups::accept, groups::decline,
        events::create, events::list, events::get, events::update, events::delete,
        events::rsvp, events::free_busy,
        notifications::list, notifications::read, stream::stream,
        admin::audit,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
