//! The OpenAPI document served at `/openapi.json`.
//!
//! [`ApiDoc`] gathers the route annotations (`routes/*`) and the schema
//! derives of the request and resource types. [`document`] then adds what
//! those cannot say, so that the document is faithful to the code (the
//! system test `tests/tests/api_schema.rs` runs schemathesis against it,
//! live: every documented request must be accepted, every answer
//! documented):
//! - statuses every route of a kind answers, once each here because each
//!   comes from one place in the code: 401 (the token extractor), 400, 413,
//!   415 and 422 (the JSON body extractor), 400 (the query extractor),
//!   414, 429, 431 and 503 (the limits layer, in front of every route:
//!   503 when the gateway is at its cap of requests at once), 503 also
//!   from the relay to a service; every 4xx/5xx has the shared
//!   [`ErrorBody`] schema, every response the `x-request-id` header and
//!   every 429 and 503 `Retry-After`;
//! - the field rules of `agenda_calendar::validate` on the request bodies
//!   and query parameters ([`body_rules`], [`param_rules`]): lengths after
//!   trimming, character sets, time zones, RFC 3339 times, enums, bounds;
//! - the request bodies whose fields depend on each other, as `oneOf`:
//!   login by username or by email, a password change with the current
//!   password, a personal event (attendees) or a group event (`group_id`).
//!
//! What JSON Schema cannot say is in the descriptions: an event's `end`
//! after its `start` and at most 31 days later, a window's `to` after
//! `from` and at most 366 days later, which RRULEs are accepted (density,
//! COUNT, a rule must occur), and names that must be existing users.

use std::collections::HashMap;

use agenda_calendar::model::{Event, Group, Interval, Invitation, Member, Notification, User};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::routes::{
    admin, auth, calendar_apps, events, groups, notifications, ops, stream, users,
};

/// The API document as the annotations and derives give it; what
/// `/openapi.json` serves is [`document`].
#[derive(OpenApi)]
#[openapi(
    info(title = "Agenda", description = "Distributed shared calendar: personal agendas, groups, invitations, conflicts, free/busy, notifications. Every error is {\"error\":{\"code\",\"message\",\"details\"}} (ErrorBody); every response carries x-request-id. Times are RFC 3339. Rules JSON Schema cannot express: an event's end is after its start and at most 31 days later; a window's `to` is after `from` and at most 366 days later; an rrule must occur at least once, at most 24 times a day, hourly at the densest (SECONDLY, MINUTELY and BYSECOND are refused), COUNT 1..=10000 and not with UNTIL; attendees, invitees and parent groups must exist."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout,
        users::get_me, users::update_me, users::delete_me, users::search,
        groups::create, groups::list, groups::get, groups::update, groups::delete,
        groups::members, groups::update_member, groups::remove_member, groups::invite,
        groups::group_invitations, groups::revoke_invitation,
        groups::agenda, groups::invitations, groups::accept, groups::decline,
        events::create, events::list, events::search, events::get, events::update, events::delete,
        events::rsvp, events::set_reminders, events::free_busy,
        notifications::list, notifications::read, notifications::read_all, stream::stream,
        admin::audit,
        calendar_apps::my_feed, calendar_apps::group_feed, calendar_apps::feed,
        calendar_apps::import, calendar_apps::create_app_password,
        calendar_apps::list_app_passwords, calendar_apps::delete_app_password,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
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

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable, machine-readable: bad_request, unauthenticated, forbidden,
    /// not_found, conflict, payload_too_large, unsupported_media_type,
    /// invalid_field, rate_limited, unavailable, internal...
    code: String,
    /// For a person.
    message: String,
    /// `field` (422), `conflicts` (409 with on_conflict=reject),
    /// `retry_after` (429)...
    #[schema(value_type = Object)]
    details: Value,
}

/// `{"items": [user]}`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UserList {
    items: Vec<User>,
}

/// `{"items": [app password]}`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AppPasswordList {
    items: Vec<agenda_calendar::store::app_passwords::AppPassword>,
}

/// `{"items": [group]}`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct GroupList {
    items: Vec<Group>,
}

/// `{"items": [member]}`, best rank first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MemberList {
    items: Vec<Member>,
}

/// `{"items": [invitation]}`, newest first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InvitationList {
    items: Vec<Invitation>,
}

/// `{"items": [event]}`: recurring events expanded, by start.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventList {
    items: Vec<Event>,
}

/// `{"items": [notification], "next": id}`, newest first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NotificationList {
    items: Vec<Notification>,
    /// Older notifications exist: ask with `before` = this.
    next: Option<uuid::Uuid>,
}

/// How many notifications were marked read.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Marked {
    marked: u64,
}

/// Busy intervals by username, merged and sorted.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FreeBusy {
    users: HashMap<String, Vec<Interval>>,
}

/// Every member's agenda in the window.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct GroupAgenda {
    members: Vec<AgendaMember>,
}

/// One member's busy time in a group agenda.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AgendaMember {
    user_id: Uuid,
    username: String,
    rank: u32,
    items: Vec<AgendaItem>,
}

/// A busy block; `event` only where the viewer may see the details.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AgendaItem {
    #[schema(value_type = String, format = DateTime)]
    start: String,
    #[schema(value_type = String, format = DateTime)]
    end: String,
    /// Present (true) for an all-day event, shown as its days.
    #[schema(required = false)]
    all_day: Option<bool>,
    #[schema(required = false)]
    event: Option<Event>,
}

/// `/healthz`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`
    status: String,
}

/// `/readyz` when ready.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    /// `ready`
    status: String,
    /// agenda_db, users_instances, groups_instances, token_keys.
    #[schema(value_type = Object)]
    checks: Value,
}

/// The document `/openapi.json` serves: [`ApiDoc`] made faithful (see the
/// module documentation).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (schema, property, rule) in body_rules() {
            constrain(schemas, schema, property, rule);
        }
        split_bodies(schemas);
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                complete_operation(path, method, op);
            }
        }
    }
    doc
}

// ---- field rules ----------------------------------------------------------

/// What `char::is_whitespace` trims (Unicode White_Space), as the inside
/// of a regex character class.
const WS: &str = r"\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// What `char::is_control` refuses (Unicode Cc).
const CTRL: &str = r"\u0000-\u001F\u007F-\u009F";

/// `validate::text(min, max)` (min 0 or 1): trimmed, then min..=max
/// characters, none a control character. The pattern counts the trimmed
/// characters, so it needs no maxLength (surrounding whitespace is free).
fn text(min: usize, max: usize) -> Value {
    let edge = format!("[^{WS}{CTRL}]");
    let core = format!("{edge}(?:[^{CTRL}]{{0,{}}}{edge})?", max.saturating_sub(2));
    let core = if min == 0 {
        format!("(?:{core})?")
    } else {
        core
    };
    json!({ "pattern": format!("^[{WS}]*{core}[{WS}]*$") })
}

/// `validate::username`: trimmed, 3..=32 of `[A-Za-z0-9_.-]`.
fn username() -> Value {
    json!({ "pattern": format!("^[{WS}]*[A-Za-z0-9_.-]{{3,32}}[{WS}]*$") })
}

/// `validate::email`: trimmed, 3..=254 characters, one `@` with something
/// on both sides, no space, no control character.
fn email() -> Value {
    let any = format!("[^@ {CTRL}]");
    let edge = format!("[^@{WS}{CTRL}]");
    json!({ "allOf": [
        { "pattern": format!("^[{WS}]*{edge}{any}*@{any}*{edge}[{WS}]*$") },
        { "pattern": format!(r"^[{WS}]*[^{WS}][\s\S]{{1,252}}[^{WS}][{WS}]*$") },
    ]})
}

/// `validate::password`: 8..=128 characters, as given (not trimmed). The
/// 8364 common passwords it also refuses are said in words: as a `not`
/// `enum` they would be most of the document, and each a test case.
fn password() -> Value {
    json!({ "minLength": 8, "maxLength": 128,
            "description": "8 to 128 characters, not one of the most common passwords (Django's list, compared case-insensitively: 422)." })
}

/// `validate::time_zone`: an IANA name, trimmed. A pattern rather than an
/// `enum`: it says the trimming too, and a generator draws from it rather
/// than trying each of the ~600 names.
fn time_zone() -> Value {
    let names: Vec<String> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| tz.name().replace('+', r"\+"))
        .collect();
    json!({ "pattern": format!("^[{WS}]*(?:{})[{WS}]*$", names.join("|")),
            "description": "An IANA time zone name such as Europe/Madrid." })
}

/// A refresh token as `RefreshToken::parse` reads it (trimmed):
/// `{family}.{secret}`, the family a UUID in any form `Uuid::parse_str`
/// takes, the secret 64 hex digits.
fn refresh_token() -> Value {
    json!({ "type": "string",
            "pattern": format!(r"^[{WS}]*{}\.[0-9a-fA-F]{{64}}[{WS}]*$", any_uuid()),
            "description": "A refresh token of yours (another user's is 422; an unknown or spent one ends nothing: 204)." })
}

/// `validate::instant`: RFC 3339.
/// A person's reminders: minutes before each occurrence.
fn reminders() -> Value {
    json!({
        "maxItems": 5,
        "items": { "type": "integer", "minimum": 0, "maximum": 40320 },
        "description": "Minutes before each occurrence: at most 5, each 0 to 40320 (four weeks).",
    })
}

/// An event's `start` or `end`: an RFC 3339 time, or a date for an all-day
/// event (`all_day: true`; a date without it, or a time with it, is 422).
fn event_time() -> Value {
    json!({
        "anyOf": [{ "format": "date-time" }, { "format": "date" }],
        "description": "RFC 3339; a date (YYYY-MM-DD) for an all-day event, the end then the day after its last",
    })
}

/// An RRULE (`recurrence::check`). What a rule must be to be accepted
/// (density, COUNT, occurring at all) is beyond a pattern; this one says
/// what every accepted rule has: `FREQ=` (any case), or nothing (blank: no
/// rule, or in a PATCH, none any more).
fn rrule() -> Value {
    json!({ "pattern": format!("^[{WS}]*$|[Ff][Rr][Ee][Qq]="),
            "description": "RFC 5545 RRULE value (an `RRULE:` prefix is allowed), e.g. `FREQ=WEEKLY;BYDAY=MO;COUNT=10`; blank for none. Hourly at the densest and at most 24 occurrences a day (SECONDLY, MINUTELY and BYSECOND are refused); COUNT 1..=10000, not with UNTIL; INTERVAL at least 1; the rule must occur. Expanded in the event's time zone." })
}

fn one_of(values: &[&str]) -> Value {
    json!({ "enum": values })
}

/// The rules of each request body's fields: (schema, property, keywords
/// added to what the derive gives). Every property of every request body
/// has one (a unit test checks), so a new field cannot go undocumented.
fn body_rules() -> Vec<(&'static str, &'static str, Value)> {
    let any = json!({});
    let exdates = json!({ "items": { "type": "string", "format": "date-time" }, "maxItems": 500 });
    let title = text(1, 200);
    let long_text = text(0, 2000);
    let visibility = one_of(&["default", "private"]);
    let add_me = one_of(&["anyone", "shared_group", "nobody"]);
    vec![
        ("AppPasswordRequest", "name", text(1, 100)),
        ("RegisterRequest", "username", username()),
        ("RegisterRequest", "email", email()),
        ("RegisterRequest", "password", password()),
        ("RegisterRequest", "display_name", text(1, 100)),
        ("RegisterRequest", "time_zone", time_zone()),
        ("RegisterRequest", "add_me", add_me.clone()),
        // Looked up, never judged: a wrong one is 401.
        ("RefreshRequest", "refresh_token", any.clone()),
        ("LogoutRequest", "refresh_token", any.clone()),
        ("LogoutRequest", "everywhere", any.clone()),
        // Looked up, never judged: a wrong one is 401 like a wrong password.
        ("LoginRequest", "username", any.clone()),
        ("LoginRequest", "email", any.clone()),
        ("LoginRequest", "password", any.clone()),
        ("UpdateMeRequest", "email", email()),
        ("UpdateMeRequest", "password", password()),
        ("UpdateMeRequest", "current_password", any.clone()),
        ("UpdateMeRequest", "display_name", text(1, 100)),
        ("UpdateMeRequest", "time_zone", time_zone()),
        ("UpdateMeRequest", "add_me", add_me),
        ("CreateEventRequest", "title", title.clone()),
        ("CreateEventRequest", "start", event_time()),
        ("CreateEventRequest", "end", event_time()),
        ("CreateEventRequest", "time_zone", time_zone()),
        ("CreateEventRequest", "description", long_text.clone()),
        ("CreateEventRequest", "location", long_text.clone()),
        ("CreateEventRequest", "rrule", rrule()),
        ("CreateEventRequest", "exdates", exdates.clone()),
        (
            "CreateEventRequest",
            "attendees",
            json!({ "maxItems": 100, "description": "Usernames of existing users (an unknown one is 422)." }),
        ),
        ("CreateEventRequest", "group_id", any.clone()),
        ("CreateEventRequest", "visibility", visibility.clone()),
        // Whether start and end are dates: a rule between fields.
        ("CreateEventRequest", "all_day", any.clone()),
        ("UpdateEventRequest", "all_day", any.clone()),
        (
            "UpdateEventRequest",
            "attendees",
            json!({ "maxItems": 100, "description": "Usernames of existing users, the whole new list (an unknown one is 422)." }),
        ),
        ("UpdateEventRequest", "title", title),
        ("UpdateEventRequest", "start", event_time()),
        ("UpdateEventRequest", "end", event_time()),
        ("UpdateEventRequest", "time_zone", time_zone()),
        ("UpdateEventRequest", "description", long_text.clone()),
        ("UpdateEventRequest", "location", long_text.clone()),
        ("UpdateEventRequest", "rrule", rrule()),
        ("UpdateEventRequest", "exdates", exdates),
        ("UpdateEventRequest", "visibility", visibility),
        ("CreateEventRequest", "reminders", reminders()),
        ("RemindersRequest", "minutes_before", reminders()),
        (
            "RsvpRequest",
            "status",
            one_of(&["accepted", "declined", "tentative"]),
        ),
        ("CreateGroupRequest", "name", text(1, 100)),
        ("CreateGroupRequest", "description", long_text.clone()),
        (
            "CreateGroupRequest",
            "kind",
            one_of(&["hierarchical", "flat"]),
        ),
        (
            "CreateGroupRequest",
            "parent_id",
            json!({ "description": "A group the caller belongs to (another is 422)." }),
        ),
        ("UpdateGroupRequest", "name", text(1, 100)),
        ("UpdateGroupRequest", "description", long_text),
        (
            "UpdateMemberRequest",
            "rank",
            json!({ "maximum": 1000, "description": "0 hands the group over (owner only); otherwise below your own rank (a larger number), at most 1000." }),
        ),
        (
            "InviteRequest",
            "username",
            json!({ "description": "An existing user (another is 422)." }),
        ),
        (
            "InviteRequest",
            "rank",
            json!({ "maximum": 1000, "description": "Hierarchical groups: below your own rank (default one below), at most 1000; ignored in flat groups." }),
        ),
    ]
}

/// Adds `rule`'s keywords to `schema.properties[property]`; a nullable
/// property keeps null in an `enum`.
fn constrain(schemas: &mut Map<String, Value>, schema: &str, property: &str, rule: Value) {
    let Some(target) = schemas
        .get_mut(schema)
        .and_then(|s| s.get_mut("properties"))
        .and_then(|p| p.get_mut(property))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let nullable = target
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|t| t == "null"));
    let Value::Object(rule) = rule else { return };
    for (key, mut value) in rule {
        if key == "enum" && nullable {
            if let Some(values) = value.as_array_mut() {
                values.push(Value::Null);
            }
        }
        if key == "description" {
            if let Some(Value::String(before)) = target.get("description") {
                value = Value::String(format!("{before} {}", value.as_str().unwrap_or_default()));
            }
        }
        target.insert(key, value);
    }
}

/// One variant of a body: its title, the properties it replaces, and the
/// ones it requires besides the body's own.
type Variant<'a> = (&'a str, Vec<(&'a str, Value)>, Vec<&'a str>);

/// `schema` as a `oneOf` of variants of it.
fn split(schemas: &mut Map<String, Value>, schema: &str, variants: Vec<Variant>) {
    let Some(base) = schemas.get(schema).cloned() else {
        return;
    };
    let variants: Vec<Value> = variants
        .into_iter()
        .map(|(title, replaced, required)| {
            let mut v = base.clone();
            v["title"] = json!(title);
            if let Some(d) = v.as_object_mut() {
                d.remove("description");
            }
            for (property, replacement) in replaced {
                v["properties"][property] = replacement;
            }
            if let Some(req) = v.get_mut("required").and_then(Value::as_array_mut) {
                req.extend(required.into_iter().map(|r| json!(r)));
            } else {
                v["required"] = json!(required);
            }
            v
        })
        .collect();
    let mut out = json!({ "oneOf": variants });
    if let Some(d) = base.get("description") {
        out["description"] = d.clone();
    }
    schemas.insert(schema.to_string(), out);
}

/// The request bodies whose fields depend on each other.
fn split_bodies(schemas: &mut Map<String, Value>) {
    let null = || json!({ "type": "null" });
    let string = || json!({ "type": "string" });
    split(
        schemas,
        "LoginRequest",
        vec![
            (
                "by username",
                vec![("username", string()), ("email", null())],
                vec!["username"],
            ),
            (
                "by email",
                vec![("email", string()), ("username", null())],
                vec!["email"],
            ),
        ],
    );
    let new_password = {
        let mut p =
            json!({ "type": "string", "description": "A new password; needs current_password." });
        if let (Some(p), Value::Object(rule)) = (p.as_object_mut(), password()) {
            p.extend(rule);
        }
        p
    };
    split(
        schemas,
        "UpdateMeRequest",
        vec![
            ("profile", vec![("password", null())], Vec::new()),
            (
                "password change",
                vec![
                    ("password", new_password),
                    (
                        "current_password",
                        json!({ "type": "string", "description": "The password in use now (wrong: 403)." }),
                    ),
                ],
                vec!["password", "current_password"],
            ),
        ],
    );
    split(
        schemas,
        "LogoutRequest",
        vec![
            (
                "everywhere",
                vec![
                    ("everywhere", json!({ "const": true })),
                    (
                        "refresh_token",
                        json!({ "type": ["string", "null"], "description": "Ignored." }),
                    ),
                ],
                vec!["everywhere"],
            ),
            (
                "one session",
                vec![
                    ("everywhere", json!({ "enum": [false, null] })),
                    ("refresh_token", refresh_token()),
                ],
                vec!["refresh_token"],
            ),
        ],
    );
    split(
        schemas,
        "CreateEventRequest",
        vec![
            ("personal event", vec![("group_id", null())], Vec::new()),
            (
                "group event",
                vec![
                    (
                        "group_id",
                        json!({ "type": "string", "format": "uuid", "description": "A group you belong to; every member attends." }),
                    ),
                    (
                        "attendees",
                        json!({ "type": ["array", "null"], "items": string(), "maxItems": 0, "description": "Not for a group event: the members attend." }),
                    ),
                ],
                vec!["group_id"],
            ),
        ],
    );
}

/// A UUID in any form `Uuid::parse_str` takes: hyphenated, simple,
/// braced or URN.
fn any_uuid() -> String {
    let h = |n: usize| format!("[0-9a-fA-F]{{{n}}}");
    let hyphenated = format!("{}-{}-{}-{}-{}", h(8), h(4), h(4), h(4), h(12));
    format!(
        r"(?:{hyphenated}|{}|\{{{hyphenated}\}}|urn:uuid:{hyphenated})",
        h(32)
    )
}

/// The rules of the query and header parameters of operation `op` (its
/// operationId), by name; `{}` for a parameter any value of its type
/// suits. Every parameter has one (a unit test checks).
fn param_rules(op: &str, name: &str) -> Option<Value> {
    Some(match (op, name) {
        ("audit", "from" | "to") => json!({ "schema": { "format": "date-time" },
            "description": "RFC 3339 (from: default 30 days ago; to: exclusive, default now, after from)." }),
        ("audit", "limit") => json!({ "schema": { "minimum": 1, "maximum": 500 },
            "description": "Entries per page, 1 to 500 (default 100)." }),
        ("audit", "after") => json!({ "schema": { "pattern": format!("^{}$", any_uuid()) },
            "description": "The `next` of the previous page." }),
        ("audit", "actor") | ("list_notifications", "unread") => json!({}),
        ("list_notifications", "limit") => json!({ "schema": { "minimum": 1, "maximum": 200 },
            "description": "Items per page, 1 to 200 (default 200)." }),
        ("list_notifications", "before") => {
            json!({ "schema": { "pattern": format!("^{}$", any_uuid()) },
            "description": "The `next` of the previous page." })
        }
        ("stream", "access_token" | "last_id") => json!({}),
        // Looked up, never judged: an unknown key is 404.
        ("calendar_feed", "key") => json!({}),
        (_, "from" | "to") => {
            json!({ "required": true, "schema": { "type": "string", "format": "date-time" },
            "description": "RFC 3339; `to` after `from`, at most 366 days later." })
        }
        ("search_events", "q") => {
            // Counted after trimming, as `events::search_text` does.
            let pattern = format!(r"^[{WS}]*[^{WS}](?:[\s\S]{{0,198}}[^{WS}])?[{WS}]*$");
            json!({ "required": true, "schema": { "type": "string", "pattern": pattern },
            "description": "Text to find in titles, locations and descriptions, any case (not blank, at most 200 characters)." })
        }
        (_, "q") => {
            json!({ "required": true, "schema": { "type": "string", "pattern": format!("[^{WS}]") },
            "description": "Part of a username or display name (not blank)." })
        }
        (_, "users") => {
            let name = format!("[^,]*[^,{WS}][^,]*");
            let blanks = format!("(?:[{WS}]*,)*");
            json!({ "required": true,
                "schema": { "type": "string", "pattern": format!("^{blanks}{name}(?:,{blanks}{name}){{0,49}}(?:,[{WS}]*)*$") },
                "description": "1 to 50 usernames, comma-separated (an unknown one is 404)." })
        }
        (_, "on_conflict") => json!({ "schema": { "type": "string", "enum": ["reject", "allow"] },
            "description": "`reject`: a conflict is 409 and nothing changes (default `allow`)." }),
        (_, "scope") => json!({ "schema": { "type": "string", "enum": ["this", "following"] },
            "description": "For an occurrence id: `this` occurrence alone (default) or it and every one `following` it." }),
        (_, "Idempotency-Key") => {
            json!({ "schema": { "type": "string", "pattern": "^[!-~]{1,255}$" } })
        }
        _ => return None,
    })
}

// ---- statuses every route of a kind answers -------------------------------

fn default_description(status: &str) -> &'static str {
    match status {
        "400" => "malformed request: broken JSON, unknown field, a body that is not an object, a malformed query string",
        "401" => "no valid bearer token",
        "403" => "you may see it but not do this",
        "404" => "not found, or not visible to you",
        "409" => "conflicts with the current state",
        "413" => "body over the size limit",
        "415" => "body declared as something other than JSON",
        "422" => "a field is invalid (details.field names it)",
        "414" => "the request line is over 8 KiB",
        "429" => "rate limited (your requests, failed logins, invalid credentials or taken names from this address, or too many costly requests of yours at once); retry after Retry-After seconds",
        "431" => "the request headers are over 16 KiB",
        "503" => "temporarily unavailable (overloaded: the gateway or a service is at its cap of requests at once; no service replica; or the data store has no quorum); retry after Retry-After seconds",
        _ => "",
    }
}

fn error_response(status: &str) -> Value {
    json!({
        "description": default_description(status),
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}

/// Adds the statuses, parameters and headers an operation has by kind.
fn complete_operation(path: &str, method: &str, op: &mut Value) {
    let op_id = op["operationId"].as_str().unwrap_or_default().to_string();
    let op_id = op_id.as_str();
    let secured = op.get("security").is_some();
    let body = op.get("requestBody").is_some();
    let has_query = op["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    // The limits layer stands in front of every route, with the
    // admission cap (503 when the gateway works on as many requests as
    // it takes at once).
    let mut added: Vec<&str> = vec!["414", "429", "431", "503"];
    if secured {
        added.push("401");
    }
    if body {
        added.extend(["400", "413", "415", "422"]);
    }
    if has_query {
        added.push("400");
    }
    if path == "/v1/stream" && method == "get" {
        websocket_handshake(op);
    }
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            let rule = p["name"].as_str().and_then(|name| param_rules(op_id, name));
            if let Some(Value::Object(rule)) = rule {
                for (k, v) in rule {
                    if k == "schema" {
                        if let (Some(s), Value::Object(v)) = (p["schema"].as_object_mut(), v) {
                            s.extend(v);
                        }
                    } else {
                        p[k] = v;
                    }
                }
            }
        }
    }
    let params = op
        .as_object_mut()
        .map(|o| o.entry("parameters").or_insert_with(|| json!([])));
    if let Some(Value::Array(params)) = params {
        params.push(json!({
            "name": "X-Request-Id", "in": "header", "required": false,
            "description": "Your id for this request (1 to 128 visible characters), echoed in the x-request-id response header; otherwise the gateway makes one.",
            "schema": { "type": "string" },
        }));
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    for status in added {
        responses
            .entry(status)
            .or_insert_with(|| error_response(status));
    }
    for (status, response) in responses.iter_mut() {
        let error = status.starts_with('4') || status.starts_with('5');
        if error {
            if response.get("content").is_none() {
                response["content"] = error_response(status)["content"].take();
            }
            if response["description"].as_str().is_none_or(str::is_empty) {
                response["description"] = json!(default_description(status));
            }
        }
        let mut headers = json!({ "x-request-id": {
            "description": "The request's id (yours, or one the gateway made).",
            "required": true, "schema": { "type": "string" } } });
        if status == "503" || status == "429" {
            headers["Retry-After"] = json!({
                "description": "Seconds to wait before retrying.",
                "required": true, "schema": { "type": "string", "pattern": "^[0-9]+$" } });
        }
        response["headers"] = headers;
    }
}

/// `GET /v1/stream` is a WebSocket handshake (RFC 6455): without these
/// headers it is refused before anything else.
fn websocket_handshake(op: &mut Value) {
    let ci = |word: &str| -> String {
        word.chars()
            .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
            .collect()
    };
    let headers = [
        (
            "Connection",
            format!("^(?:[ -~]*,)?[ \\t]*{}[ \\t]*(?:,[ -~]*)?$", ci("upgrade")),
            "Lists `upgrade`.",
        ),
        ("Upgrade", format!("^{}$", ci("websocket")), "`websocket`."),
        ("Sec-WebSocket-Version", "^13$".to_string(), "`13`."),
    ];
    let mut params: Vec<Value> = headers
        .into_iter()
        .map(|(name, pattern, description)| {
            json!({ "name": name, "in": "header", "required": true, "description": description,
                    "schema": { "type": "string", "pattern": pattern } })
        })
        .collect();
    params.push(
        json!({ "name": "Sec-WebSocket-Key", "in": "header", "required": true,
        "description": "The client's nonce (RFC 6455: 16 random bytes, base64).",
        "schema": { "type": "string" } }),
    );
    match op.get_mut("parameters").and_then(Value::as_array_mut) {
        Some(existing) => existing.extend(params),
        None => op["parameters"] = Value::Array(params),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every property of every request body has a rule, and every rule a
    /// property: a field added to a body must say what it accepts.
    #[test]
    fn every_request_field_has_a_rule() {
        let raw = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = raw["components"]["schemas"].as_object().unwrap();
        let mut bodies: Vec<String> = Vec::new();
        for item in raw["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                if let Some(r) = op
                    .pointer("/requestBody/content/application~1json/schema/$ref")
                    .and_then(Value::as_str)
                {
                    bodies.push(r.rsplit('/').next().unwrap().to_string());
                }
            }
        }
        bodies.sort();
        bodies.dedup();
        let rules = body_rules();
        let mut missing = Vec::new();
        for body in &bodies {
            for property in schemas[body]["properties"].as_object().unwrap().keys() {
                if !rules.iter().any(|(s, p, _)| s == body && p == property) {
                    missing.push(format!("{body}.{property}"));
                }
            }
        }
        assert!(missing.is_empty(), "no rule in body_rules for {missing:?}");
        let stale: Vec<String> = rules
            .iter()
            .filter(|(s, p, _)| {
                schemas
                    .get(*s)
                    .and_then(|s| s["properties"].get(*p))
                    .is_none()
            })
            .map(|(s, p, _)| format!("{s}.{p}"))
            .collect();
        assert!(
            stale.is_empty(),
            "rules for properties that do not exist: {stale:?}"
        );
    }

    /// Every query and header parameter has a rule too.
    #[test]
    fn every_parameter_has_a_rule() {
        let raw = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut missing = Vec::new();
        for item in raw["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap();
                    if p["in"] != "path" && param_rules(id, name).is_none() {
                        missing.push(format!("{id}: {name}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "no rule in param_rules for {missing:?}");
    }

    #[test]
    fn every_operation_documents_its_errors_with_the_shared_shape() {
        let doc = document();
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let what = format!("{method} {path}");
                ids.push(op["operationId"].as_str().unwrap().to_string());
                let responses = op["responses"].as_object().unwrap();
                if op.get("security").is_some() {
                    assert!(responses.contains_key("401"), "{what}: no 401");
                }
                if op.get("requestBody").is_some() {
                    for s in ["400", "413", "415", "422"] {
                        assert!(responses.contains_key(s), "{what}: no {s}");
                    }
                }
                for (status, r) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            r.pointer("/content/application~1json/schema/$ref"),
                            Some(&json!("#/components/schemas/ErrorBody")),
                            "{what} {status}"
                        );
                    }
                    assert!(
                        !r["description"].as_str().unwrap_or_default().is_empty(),
                        "{what} {status}: no description"
                    );
                }
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "operationIds must be unique");
    }

    #[test]
    fn bodies_whose_fields_depend_on_each_other_are_one_of_their_variants() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        assert_eq!(s["LoginRequest"]["oneOf"].as_array().unwrap().len(), 2);
        let group = &s["CreateEventRequest"]["oneOf"][1];
        assert_eq!(group["properties"]["attendees"]["maxItems"], 0);
        assert!(group["required"]
            .as_array()
            .unwrap()
            .contains(&json!("group_id")));
        let tz = s["RegisterRequest"]["properties"]["time_zone"]["pattern"]
            .as_str()
            .unwrap();
        assert!(
            tz.contains("|Europe/Madrid|") && tz.contains(r"Etc/GMT\+1|"),
            "{tz}"
        );
    }
}
