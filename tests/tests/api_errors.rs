//! The public API's error table, route by route, against real processes:
//! 401 without or with a bad token, 400 malformed bodies, 413, 422 invalid
//! fields (with `details.field`), 401 logins, 404 for what one may not see,
//! 403 for what one may see but not change, 409 duplicates, and never a 5xx.
//!
//! Every error must have the DESIGN shape
//! `{"error":{"code","message","details"}}`. Each test runs a table of
//! cases, one per line, and reports every mismatch at once.
//! Run: `cargo test -p agenda-tests --test api_errors -- --test-threads=1`.

use std::time::Duration;

use agenda_tests::cluster::wait_for;
use agenda_tests::system::{
    error_shape_problem, expect, expect_ok, items, range, Api, Reply, System, PASSWORD,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

const FROM: &str = "2030-09-01T00:00:00Z";
const TO: &str = "2030-09-08T00:00:00Z";
/// A well-formed id nobody has.
const NOBODY: &str = "7b0e6c4e-3f6a-4c1e-9d55-2d2f6a0c9e41";

/// What a case expects.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// This status and this `error.code`.
    Error(StatusCode, &'static str),
    /// 422 `invalid_field` naming one of these fields in `details.field`.
    Field(&'static [&'static str]),
    /// One of these statuses (where the docs leave the choice open).
    AnyOf(&'static [StatusCode]),
}

const UNAUTH: Want = Want::Error(StatusCode::UNAUTHORIZED, "unauthenticated");
const BAD: Want = Want::Error(StatusCode::BAD_REQUEST, "bad_request");
const NOT_FOUND: Want = Want::Error(StatusCode::NOT_FOUND, "not_found");
const FORBIDDEN: Want = Want::Error(StatusCode::FORBIDDEN, "forbidden");
const CONFLICT: Want = Want::Error(StatusCode::CONFLICT, "conflict");
/// A client error where the docs do not say which (400, 404, 415 or 422).
const CLIENT: Want = Want::AnyOf(&[
    StatusCode::BAD_REQUEST,
    StatusCode::NOT_FOUND,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    StatusCode::UNPROCESSABLE_ENTITY,
]);
/// Rank rules: API.md says an invitation's rank "must be below the
/// inviter's" and a superior moves members "to a rank still below their
/// own", but not with which code; 403 (not allowed) or 422 (invalid rank)
/// are both read as right.
const RANK: Want = Want::AnyOf(&[StatusCode::FORBIDDEN, StatusCode::UNPROCESSABLE_ENTITY]);

const RANK_OR_400: Want = Want::AnyOf(&[
    StatusCode::BAD_REQUEST,
    StatusCode::FORBIDDEN,
    StatusCode::UNPROCESSABLE_ENTITY,
]);

/// The body of a case.
#[derive(Clone, Debug)]
enum Body {
    None,
    Json(Value),
    /// Sent as is with `Content-Type: application/json`.
    Raw(&'static str),
    /// Sent as is with `Content-Type: text/plain`.
    Text(&'static str),
}
use Body::Json as J;
const NO: Body = Body::None;

/// One row of a table.
struct Case {
    what: String,
    method: Method,
    path: String,
    /// The whole `Authorization` header value, if any.
    auth: Option<String>,
    body: Body,
    want: Want,
}

/// A case with `Bearer token` (when given).
fn case(
    what: impl Into<String>,
    method: Method,
    path: impl Into<String>,
    token: Option<&str>,
    body: Body,
    want: Want,
) -> Case {
    Case {
        what: what.into(),
        method,
        path: path.into(),
        auth: token.map(|t| format!("Bearer {t}")),
        body,
        want,
    }
}

async fn send(api: &Api, c: &Case) -> Reply {
    let mut req = api.request(c.method.clone(), &c.path);
    if let Some(a) = &c.auth {
        req = req.header("authorization", a);
    }
    req = match &c.body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Raw(s) => req.header("content-type", "application/json").body(*s),
        Body::Text(s) => req.header("content-type", "text/plain").body(*s),
    };
    api.try_send(req)
        .await
        .unwrap_or_else(|e| panic!("{} {}: transport error: {e:#}", c.method, c.path))
}

/// What is wrong with a reply, if anything. Every error reply must have
/// the DESIGN shape, and every 422 must name its field.
fn problem(want: Want, (st, body): &Reply) -> Option<String> {
    let ok = match want {
        Want::Error(status, _) => *st == status,
        Want::Field(_) => *st == StatusCode::UNPROCESSABLE_ENTITY,
        Want::AnyOf(statuses) => statuses.contains(st),
    };
    if !ok {
        return Some(format!("want {want:?}, got {st} {body}"));
    }
    if st.is_success() {
        return None;
    }
    let code = match want {
        Want::Error(_, code) => code,
        Want::Field(_) => "invalid_field",
        Want::AnyOf(_) => body["error"]["code"].as_str().unwrap_or("(none)"),
    };
    if let Some(p) = error_shape_problem(body, code) {
        return Some(format!("{p}: {body}"));
    }
    let field = body["error"]["details"]["field"].as_str();
    if *st == StatusCode::UNPROCESSABLE_ENTITY && field.is_none() {
        return Some(format!("422 without details.field: {body}"));
    }
    match want {
        Want::Field(fields) if !fields.contains(&field.unwrap_or_default()) => {
            Some(format!("details.field should be one of {fields:?}: {body}"))
        }
        _ => None,
    }
}

/// Runs a table; returns one line per mismatch.
async fn run(api: &Api, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let reply = send(api, c).await;
        if let Some(p) = problem(c.want, &reply) {
            failures.push(format!("{} ({} {}): {p}", c.what, c.method, c.path));
        }
    }
    failures
}

fn report(failures: Vec<String>, api: &Api) {
    let server = api.server_errors();
    assert!(
        failures.is_empty() && server.is_empty(),
        "{} mismatches:\n{}\n5xx replies (never allowed): {server:#?}",
        failures.len(),
        failures.join("\n")
    );
}

async fn start() -> (System, Api) {
    System::start_with_api().await
}

/// A valid event body.
fn event(title: &str) -> Value {
    json!({"title": title, "start": "2030-09-02T10:00:00Z", "end": "2030-09-02T11:00:00Z",
           "time_zone": "UTC"})
}

/// `base` with `key` set to `value`.
fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[key] = value;
    v
}

/// A JSON value in a case name, shortened.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(24) {
        Some((i, _)) => format!("{}... ({} chars)", &s[..i], s.chars().count()),
        None => s,
    }
}

/// Every protected route with a plausible body.
#[rustfmt::skip]
fn protected_routes() -> Vec<(Method, String, Body)> {
    let r = range(FROM, TO);
    let n = NOBODY;
    vec![
        (GET, "/v1/me".into(), NO),
        (PATCH, "/v1/me".into(), J(json!({"display_name": "x"}))),
        (DELETE, "/v1/me".into(), NO),
        (GET, "/v1/users?q=al".into(), NO),
        (POST, "/v1/groups".into(), J(json!({"name": "g", "kind": "flat"}))),
        (GET, "/v1/groups".into(), NO),
        (GET, format!("/v1/groups/{n}"), NO),
        (PATCH, format!("/v1/groups/{n}"), J(json!({"name": "g"}))),
        (DELETE, format!("/v1/groups/{n}"), NO),
        (GET, format!("/v1/groups/{n}/members"), NO),
        (PATCH, format!("/v1/groups/{n}/members/{n}"), J(json!({"rank": 2}))),
        (DELETE, format!("/v1/groups/{n}/members/{n}"), NO),
        (POST, format!("/v1/groups/{n}/invitations"), J(json!({"username": "bob"}))),
        (GET, format!("/v1/groups/{n}/agenda?{r}"), NO),
        (GET, "/v1/invitations".into(), NO),
        (POST, format!("/v1/invitations/{n}/accept"), J(json!({}))),
        (POST, format!("/v1/invitations/{n}/decline"), J(json!({}))),
        (POST, "/v1/events".into(), J(event("x"))),
        (GET, format!("/v1/events?{r}"), NO),
        (GET, format!("/v1/events/{n}"), NO),
        (PATCH, format!("/v1/events/{n}"), J(json!({"title": "x"}))),
        (DELETE, format!("/v1/events/{n}"), NO),
        (POST, format!("/v1/events/{n}/rsvp"), J(json!({"status": "accepted"}))),
        (GET, format!("/v1/freebusy?users=alice&{r}"), NO),
        (GET, "/v1/notifications".into(), NO),
        (POST, format!("/v1/notifications/{n}/read"), J(json!({}))),
    ]
}

/// 401 everywhere without a valid token; login failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_requests_are_401() {
    let (_sys, api) = start().await;
    let (_, token) = api.register("alice").await;
    // Forgeries of a real token: another signature, and `alg: none`.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let mut sig: Vec<char> = parts[2].chars().collect();
    let i = sig.len() - 2; // not the last char: its low bits may be padding
    sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
    let sig: String = sig.into_iter().collect();
    let bad_sig = format!("{}.{}.{sig}", parts[0], parts[1]);
    // base64url of {"alg":"none","typ":"JWT"}
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    let bad_auth = [
        None,
        Some("Bearer garbage".to_string()),
        Some("Bearer ".into()),
        Some(format!("Basic {token}")),
        Some(format!("Bearer {bad_sig}")),
        Some(format!("Bearer {alg_none}")),
    ];
    let mut cases = Vec::new();
    for (method, path, body) in protected_routes() {
        for auth in &bad_auth {
            cases.push(Case {
                what: format!("Authorization: {auth:?}"),
                method: method.clone(),
                path: path.clone(),
                auth: auth.clone(),
                body: body.clone(),
                want: UNAUTH,
            });
        }
    }
    let mut failures = run(&api, &cases).await;

    // `GET /v1/stream` (WebSocket) comes with the messaging issue; its
    // token checks are tested there.
    // Public routes need no token (API.md).
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (st, body) = api.call(GET, path, None, None).await;
        if st != StatusCode::OK {
            failures.push(format!("GET {path} without a token: {st} {body}"));
        }
    }
    // Every response carries x-request-id; a client's own is kept.
    for (path, auth) in [
        ("/v1/me", None),
        ("/v1/me", Some(&token)),
        ("/v1/nope", Some(&token)),
    ] {
        let mut req = api
            .request(GET, path)
            .header("x-request-id", "client-chosen-42");
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        let id = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap_or("?"));
        if id != Some("client-chosen-42") {
            failures.push(format!(
                "GET {path}: x-request-id {id:?}, want the client's"
            ));
        }
        let resp = api.request(GET, path).send().await.expect("send");
        if !resp.headers().contains_key("x-request-id") {
            failures.push(format!("GET {path}: no x-request-id"));
        }
    }
    // The control: the real token works, so the table failed for the
    // right reason.
    expect(
        api.get("/v1/me", &token).await,
        StatusCode::OK,
        "real token",
    );

    // Wrong password, unknown user: 401 with one message for both.
    #[rustfmt::skip]
    let logins = [
        json!({"username": "alice", "password": "wrong-password-1"}),
        json!({"username": "nobody_here", "password": PASSWORD}),
        json!({"email": "alice@example.com", "password": "wrong-password-1"}),
        json!({"email": "nobody@example.com", "password": PASSWORD}),
    ];
    let mut messages = Vec::new();
    for body in logins {
        let c = case(
            format!("login {body}"),
            POST,
            "/v1/auth/login",
            None,
            J(body),
            UNAUTH,
        );
        let reply = send(&api, &c).await;
        if let Some(p) = problem(c.want, &reply) {
            failures.push(format!("{}: {p}", c.what));
        }
        messages.push(reply.1["error"]["message"].clone());
    }
    if messages.windows(2).any(|w| w[0] != w[1]) {
        failures.push(format!("login failures must not tell why: {messages:?}"));
    }
    report(failures, &api);
}

/// 400 malformed bodies and unknown fields, 413, 422 invalid fields and
/// ranges; refused writes leave no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_invalid_input() {
    let (_sys, api) = start().await;
    let (_, token) = api.register("alice").await;
    api.register("bob").await; // for the free/busy queries
    let t = Some(token.as_str());
    let g = expect(
        api.post(
            "/v1/groups",
            &token,
            json!({"name": "Lab", "kind": "hierarchical"}),
        )
        .await,
        StatusCode::CREATED,
        "group",
    )["id"]
        .as_str()
        .expect("group id")
        .to_string();
    let e = expect(
        api.post("/v1/events", &token, event("mine")).await,
        StatusCode::CREATED,
        "event",
    )["event"]["id"]
        .as_str()
        .expect("event id")
        .to_string();

    let reg = json!({"username": "newbie", "email": "newbie@example.com", "password": PASSWORD});
    let ev = event("ok");
    // Every route with a body: (name, method, path, token, a valid body).
    #[rustfmt::skip]
    let writes = [
        ("register", POST, "/v1/auth/register".to_string(), None, reg.clone()),
        ("login", POST, "/v1/auth/login".into(), None, json!({"username": "alice", "password": PASSWORD})),
        ("PATCH me", PATCH, "/v1/me".into(), t, json!({"display_name": "A"})),
        ("create group", POST, "/v1/groups".into(), t, json!({"name": "G2", "kind": "flat"})),
        ("PATCH group", PATCH, format!("/v1/groups/{g}"), t, json!({"name": "G3"})),
        ("invite", POST, format!("/v1/groups/{g}/invitations"), t, json!({"username": "bob"})),
        ("create event", POST, "/v1/events".into(), t, ev.clone()),
        ("PATCH event", PATCH, format!("/v1/events/{e}"), t, json!({"title": "x"})),
        ("rsvp", POST, format!("/v1/events/{e}/rsvp"), t, json!({"status": "accepted"})),
    ];
    let mut cases = Vec::new();
    for (what, method, path, auth, valid) in &writes {
        for (kind, raw) in [
            ("truncated JSON", "{\"title\": "),
            ("not JSON", "title=x"),
            ("a JSON array", "[1, 2]"),
        ] {
            let name = format!("{what}: {kind}");
            cases.push(case(name, method.clone(), path, *auth, Body::Raw(raw), BAD));
        }
        let body = J(with(valid, "bogus_field", json!(1)));
        let name = format!("{what}: unknown field");
        cases.push(case(name, method.clone(), path, *auth, body, BAD));
    }

    let huge = J(with(&ev, "description", json!("x".repeat(70 * 1024))));
    let too_large = Want::Error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let reg_f = |k: &str, v: Value, f| {
        let name = format!("register {k}={}", short(&v));
        case(
            name,
            POST,
            "/v1/auth/register",
            None,
            J(with(&reg, k, v)),
            Want::Field(f),
        )
    };
    let me_f = |k: &str, v: Value, f| {
        let name = format!("PATCH /v1/me {k}={}", short(&v));
        case(name, PATCH, "/v1/me", t, J(json!({k: v})), Want::Field(f))
    };
    let ev_f = |k: &str, v: Value, f| {
        let name = format!("create event {k}={}", short(&v));
        case(
            name,
            POST,
            "/v1/events",
            t,
            J(with(&ev, k, v)),
            Want::Field(f),
        )
    };
    let patch_f = |k: &str, v: Value, f| {
        let name = format!("PATCH event {k}={}", short(&v));
        case(
            name,
            PATCH,
            format!("/v1/events/{e}"),
            t,
            J(json!({k: v})),
            Want::Field(f),
        )
    };
    let grp = json!({"name": "G", "kind": "flat"});
    let grp_f = |k: &str, v: Value, f| {
        let name = format!("create group {k}={}", short(&v));
        case(
            name,
            POST,
            "/v1/groups",
            t,
            J(with(&grp, k, v)),
            Want::Field(f),
        )
    };
    let end: &[&str] = &["end", "start"];
    #[rustfmt::skip]
    let table = [
        // Over 64 KiB: 413 before anything else.
        case("70 KiB body", POST, "/v1/events", t, huge, too_large),
        // No body, no content type: "JSON bodies only" (axum says 415).
        case("event without a body", POST, "/v1/events", t, NO, CLIENT),
        reg_f("username", json!(""), &["username"]),
        reg_f("username", json!("ab"), &["username"]),
        reg_f("username", json!("a".repeat(33)), &["username"]),
        reg_f("username", json!("white space"), &["username"]),
        reg_f("username", json!("émile"), &["username"]),
        reg_f("email", json!("no-at-sign"), &["email"]),
        reg_f("email", json!("two@@example.com"), &["email"]),
        reg_f("email", json!(format!("{}@example.com", "a".repeat(250))), &["email"]),
        reg_f("password", json!("short7!"), &["password"]),
        reg_f("password", json!("p".repeat(129)), &["password"]),
        reg_f("display_name", json!(""), &["display_name"]),
        reg_f("display_name", json!("d".repeat(101)), &["display_name"]),
        reg_f("time_zone", json!("Mars/Olympus_Mons"), &["time_zone"]),
        me_f("display_name", json!(""), &["display_name"]),
        me_f("display_name", json!("d".repeat(101)), &["display_name"]),
        me_f("time_zone", json!("Nowhere/Land"), &["time_zone"]),
        ev_f("title", json!(""), &["title"]),
        ev_f("title", json!("t".repeat(201)), &["title"]),
        ev_f("description", json!("d".repeat(2001)), &["description"]),
        ev_f("location", json!("l".repeat(2001)), &["location"]),
        ev_f("time_zone", json!("Europe/Atlantis"), &["time_zone"]),
        ev_f("time_zone", json!(""), &["time_zone"]),
        // "RFC 3339" is a field rule, so 422 (not 400) is the reading here.
        ev_f("start", json!("next tuesday"), &["start"]),
        ev_f("start", json!("2030-09-02 10:00"), &["start"]),
        // End before start, equal, over 31 days: which field is named is
        // not written; `end` is the natural one, `start` accepted.
        ev_f("end", json!("2030-09-02T09:00:00Z"), end),
        ev_f("end", json!("2030-09-02T10:00:00Z"), end),
        ev_f("end", json!("2030-10-04T10:00:00Z"), end),
        ev_f("rrule", json!("FREQ=SOMETIMES"), &["rrule"]),
        ev_f("rrule", json!("FREQ=WEEKLY;BYDAY=XX"), &["rrule"]),
        ev_f("rrule", json!("not a rule"), &["rrule"]),
        // Too dense for a calendar, or never occurring (issue 13).
        ev_f("rrule", json!("FREQ=SECONDLY"), &["rrule"]),
        ev_f("rrule", json!("FREQ=HOURLY;BYMINUTE=0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30,32,34,36,38,40,42,44,46,48,50,52,54,56,58"), &["rrule"]),
        ev_f("rrule", json!("FREQ=DAILY;COUNT=1000000"), &["rrule"]),
        ev_f("rrule", json!("FREQ=DAILY;COUNT=0"), &["rrule"]),
        ev_f("rrule", json!("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"), &["rrule"]),
        ev_f("exdates", json!(["garbage"]), &["exdates"]),
        // An enum value out of range: an invalid field, not a malformed body.
        ev_f("visibility", json!("secret"), &["visibility"]),
        ev_f("attendees", json!(["nobody_here"]), &["attendees"]),
        patch_f("title", json!(""), &["title"]),
        patch_f("end", json!("2030-09-02T09:00:00Z"), end),
        patch_f("time_zone", json!("Europe/Atlantis"), &["time_zone"]),
        patch_f("rrule", json!("FREQ=SOMETIMES"), &["rrule"]),
        patch_f("rrule", json!("FREQ=MINUTELY"), &["rrule"]),
        grp_f("name", json!(""), &["name"]),
        grp_f("name", json!("n".repeat(101)), &["name"]),
        grp_f("description", json!("d".repeat(2001)), &["description"]),
        grp_f("kind", json!("pyramid"), &["kind"]),
        case("PATCH group name=\"\"", PATCH, format!("/v1/groups/{g}"), t, J(json!({"name": ""})), Want::Field(&["name"])),
        case("rsvp maybe", POST, format!("/v1/events/{e}/rsvp"), t, J(json!({"status": "maybe"})), Want::Field(&["status"])),
        // Missing required fields and wrong JSON types: 422 naming the
        // field (issue 13; they were 400 in serde's words).
        case("register without password", POST, "/v1/auth/register", None, J(json!({"username": "x_y_z", "email": "xyz@example.com"})), Want::Field(&["password"])),
        case("event without time_zone", POST, "/v1/events", t, J(json!({"title": "x", "start": "2030-09-02T10:00:00Z", "end": "2030-09-02T11:00:00Z"})), Want::Field(&["time_zone"])),
        case("event without title", POST, "/v1/events", t, J(json!({"start": "2030-09-02T10:00:00Z", "end": "2030-09-02T11:00:00Z", "time_zone": "UTC"})), Want::Field(&["title"])),
        case("group without kind", POST, "/v1/groups", t, J(json!({"name": "G"})), Want::Field(&["kind"])),
        case("title is a number", POST, "/v1/events", t, J(with(&ev, "title", json!(5))), Want::Field(&["title"])),
        // A body that says it is not JSON is refused, not read as JSON.
        case("event as text/plain", POST, "/v1/events", t, Body::Text(r#"{"title":"x","start":"2030-09-02T10:00:00Z","end":"2030-09-02T11:00:00Z","time_zone":"UTC"}"#), Want::Error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")),
        // Unknown users on free/busy: 404 (API.md).
        case("free/busy of an unknown user", GET, format!("/v1/freebusy?users=alice,nobody_here&{}", range(FROM, TO)), t, NO, NOT_FOUND),
    ];
    cases.extend(table);

    // Ranges, on the three routes that take one. Missing or malformed:
    // 400 or 422, never 5xx.
    let ranged = [
        "/v1/events?".to_string(),
        "/v1/freebusy?users=alice,bob&".into(),
        format!("/v1/groups/{g}/agenda?"),
    ];
    let ok = Want::AnyOf(&[StatusCode::OK]);
    let to: &[&str] = &["to", "from"];
    for route in &ranged {
        #[rustfmt::skip]
        let queries = [
            ("no range", String::new(), CLIENT),
            ("no to", format!("from={FROM}"), CLIENT),
            ("no from", format!("to={TO}"), CLIENT),
            ("from not RFC 3339", range("yesterday", TO), CLIENT),
            ("to before from", range(TO, FROM), Want::Field(to)),
            ("to equals from", range(FROM, FROM), Want::Field(to)),
            ("367 days", range("2030-01-01T00:00:00Z", "2031-01-03T00:00:00Z"), Want::Field(to)),
            ("366 days (allowed)", range("2030-01-01T00:00:00Z", "2031-01-02T00:00:00Z"), ok),
        ];
        for (what, query, want) in queries {
            cases.push(case(
                format!("{route} {what}"),
                GET,
                format!("{route}{query}"),
                t,
                NO,
                want,
            ));
        }
    }
    let mut failures = run(&api, &cases).await;

    // Refused writes leave no trace: alice still has one event, "mine".
    let (_, mine) = api
        .get(&format!("/v1/events?{}", range(FROM, TO)), &token)
        .await;
    let titles: Vec<&Value> = items(&mine).iter().map(|e| &e["title"]).collect();
    if titles != [&json!("mine")] {
        failures.push(format!("refused writes left traces: agenda is {titles:?}"));
    }
    report(failures, &api);
}

/// 404 for what one may not see, 403 for what one may see but not change,
/// 409 for duplicates and a leaving owner, rank rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn visibility_permissions_and_duplicates() {
    let (_sys, api) = start().await;
    let (alice_id, alice) = api.register("alice").await;
    let (bob_id, bob) = api.register("bob").await;
    let (carol_id, carol) = api.register("carol").await;
    let (_, dave) = api.register("dave").await;
    api.register("erin").await; // in no group: the invitee of the rank cases
    let id = |v: Value, what: &str| -> String {
        v.as_str()
            .unwrap_or_else(|| panic!("{what}: no id"))
            .to_string()
    };

    // alice's hierarchical group: bob rank 1, carol rank 2; dave invited.
    let g = id(
        expect(
            api.post(
                "/v1/groups",
                &alice,
                json!({"name": "Lab", "kind": "hierarchical"}),
            )
            .await,
            StatusCode::CREATED,
            "group",
        )["id"]
            .take(),
        "group",
    );
    let invitations = format!("/v1/groups/{g}/invitations");
    for (name, token, rank) in [("bob", &bob, 1), ("carol", &carol, 2)] {
        let body = json!({"username": name, "rank": rank});
        let inv = expect_ok(api.post(&invitations, &alice, body).await, "invite");
        let path = format!("/v1/invitations/{}/accept", id(inv["id"].clone(), "invite"));
        expect_ok(api.post(&path, token, json!({})).await, "accept");
    }
    let body = json!({"username": "dave", "rank": 3});
    let inv_dave = id(
        expect_ok(api.post(&invitations, &alice, body).await, "invite dave")["id"].take(),
        "invite",
    );
    // dave's own group, which alice is not in.
    let h = id(
        expect(
            api.post(
                "/v1/groups",
                &dave,
                json!({"name": "Dave's", "kind": "flat"}),
            )
            .await,
            StatusCode::CREATED,
            "group",
        )["id"]
            .take(),
        "group",
    );
    // alice's event with bob attending; dave's event for himself.
    let body = with(&event("shared"), "attendees", json!(["bob"]));
    let shared = expect(
        api.post("/v1/events", &alice, body).await,
        StatusCode::CREATED,
        "event",
    );
    let shared = id(shared["event"]["id"].clone(), "event");
    let daves = expect(
        api.post("/v1/events", &dave, event("dave's")).await,
        StatusCode::CREATED,
        "event",
    );
    let daves = id(daves["event"]["id"].clone(), "event");
    // A notification of bob's (alice's invitation, or her event).
    let bobs_note = wait_for(
        "a notification for bob",
        Duration::from_secs(15),
        || async {
            let (_, b) = api.get("/v1/notifications", &bob).await;
            b["items"].as_array()?.first()?["id"]
                .as_str()
                .map(String::from)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    let (a, b, c) = (
        Some(alice.as_str()),
        Some(bob.as_str()),
        Some(carol.as_str()),
    );
    let agenda = range(FROM, TO);
    let title = || J(json!({"title": "x"}));
    let accepted = || J(json!({"status": "accepted"}));
    let empty = || J(json!({}));
    let in_group = |group: &str| J(with(&event("x"), "group_id", json!(group)));
    let new_user = |name: &str, email: &str| {
        J(json!({"username": name, "email": email, "password": PASSWORD}))
    };
    let member = |user: &str| format!("/v1/groups/{g}/members/{user}");
    let invite = |name: &str, rank: i64| J(json!({"username": name, "rank": rank}));
    #[rustfmt::skip]
    let cases = [
        // Other people's events, random and malformed ids: 404.
        case("dave's event", GET, format!("/v1/events/{daves}"), a, NO, NOT_FOUND),
        case("PATCH dave's event", PATCH, format!("/v1/events/{daves}"), a, title(), NOT_FOUND),
        case("DELETE dave's event", DELETE, format!("/v1/events/{daves}"), a, NO, NOT_FOUND),
        case("rsvp to dave's event", POST, format!("/v1/events/{daves}/rsvp"), a, accepted(), NOT_FOUND),
        case("random event id", GET, format!("/v1/events/{NOBODY}"), a, NO, NOT_FOUND),
        case("malformed event id", GET, "/v1/events/not-a-uuid", a, NO, NOT_FOUND),
        case("numeric event id", GET, "/v1/events/123", a, NO, NOT_FOUND),
        case("PATCH random event", PATCH, format!("/v1/events/{NOBODY}"), a, title(), NOT_FOUND),
        case("rsvp, malformed id", POST, "/v1/events/zzz/rsvp", a, accepted(), NOT_FOUND),
        // Groups one is not in.
        case("dave's group", GET, format!("/v1/groups/{h}"), a, NO, NOT_FOUND),
        case("dave's group members", GET, format!("/v1/groups/{h}/members"), a, NO, NOT_FOUND),
        case("dave's group agenda", GET, format!("/v1/groups/{h}/agenda?{agenda}"), a, NO, NOT_FOUND),
        case("PATCH dave's group", PATCH, format!("/v1/groups/{h}"), a, J(json!({"name": "x"})), NOT_FOUND),
        case("DELETE dave's group", DELETE, format!("/v1/groups/{h}"), a, NO, NOT_FOUND),
        case("invite into dave's group", POST, format!("/v1/groups/{h}/invitations"), a, invite("carol", 1), NOT_FOUND),
        case("event in dave's group", POST, "/v1/events", a, in_group(&h), NOT_FOUND),
        case("event in a random group", POST, "/v1/events", a, in_group(NOBODY), NOT_FOUND),
        case("random group id", GET, format!("/v1/groups/{NOBODY}"), a, NO, NOT_FOUND),
        case("malformed group id", GET, "/v1/groups/not-a-uuid/members", a, NO, NOT_FOUND),
        case("random member id", PATCH, member(NOBODY), a, J(json!({"rank": 3})), NOT_FOUND),
        case("malformed member id", DELETE, member("xyz"), a, NO, NOT_FOUND),
        // Other people's invitations and notifications.
        case("carol accepts dave's invitation", POST, format!("/v1/invitations/{inv_dave}/accept"), c, empty(), NOT_FOUND),
        case("random invitation id", POST, format!("/v1/invitations/{NOBODY}/decline"), a, empty(), NOT_FOUND),
        case("malformed invitation id", POST, "/v1/invitations/nope/accept", a, empty(), NOT_FOUND),
        case("bob's notification", POST, format!("/v1/notifications/{bobs_note}/read"), a, empty(), NOT_FOUND),
        case("random notification id", POST, format!("/v1/notifications/{NOBODY}/read"), a, empty(), NOT_FOUND),
        // "Errors are always {error: ...}": the router's own 404 too.
        case("unknown route", GET, "/v1/no-such-thing", a, NO, NOT_FOUND),
        // Visible, but not theirs to change: 403.
        case("an attendee PATCHes the event", PATCH, format!("/v1/events/{shared}"), b, title(), FORBIDDEN),
        case("an attendee DELETEs the event", DELETE, format!("/v1/events/{shared}"), b, NO, FORBIDDEN),
        case("a member deletes the group", DELETE, format!("/v1/groups/{g}"), b, NO, FORBIDDEN),
        case("rank 2 changes rank 1", PATCH, member(&bob_id), c, J(json!({"rank": 3})), FORBIDDEN),
        case("rank 2 removes rank 1", DELETE, member(&bob_id), c, NO, FORBIDDEN),
        case("rank 1 changes the owner", PATCH, member(&alice_id), b, J(json!({"rank": 2})), FORBIDDEN),
        case("rank 1 removes the owner", DELETE, member(&alice_id), b, NO, FORBIDDEN),
        // Ranks: only below one's own.
        case("rank 1 invites at rank 1", POST, &invitations, b, invite("erin", 1), RANK),
        case("rank 1 invites at rank 0", POST, &invitations, b, invite("erin", 0), RANK),
        case("rank 2 invites at rank 2", POST, &invitations, c, invite("erin", 2), RANK),
        case("rank 2 invites at rank 1", POST, &invitations, c, invite("erin", 1), RANK),
        // A negative rank may also be refused as malformed (400).
        case("owner invites at rank -1", POST, &invitations, a, invite("erin", -1), RANK_OR_400),
        case("rank 1 moves rank 2 to rank 1", PATCH, member(&carol_id), b, J(json!({"rank": 1})), RANK),
        // Duplicates, and an owner leaving: 409.
        case("taken username", POST, "/v1/auth/register", None, new_user("alice", "other@example.com"), CONFLICT),
        case("taken username, other case", POST, "/v1/auth/register", None, new_user("ALICE", "other2@example.com"), CONFLICT),
        case("taken email, other case", POST, "/v1/auth/register", None, new_user("alice2", "Alice@Example.com"), CONFLICT),
        case("invite a member", POST, &invitations, a, invite("bob", 2), CONFLICT),
        case("invite someone already invited", POST, &invitations, a, invite("dave", 2), CONFLICT),
        case("the owner leaves", DELETE, member(&alice_id), a, NO, CONFLICT),
    ];
    let mut failures = run(&api, &cases).await;

    // Controls: what the table refused exists, for those allowed.
    #[rustfmt::skip]
    let controls = [
        ("bob sees the shared event", &bob, format!("/v1/events/{shared}")),
        ("dave sees his event", &dave, format!("/v1/events/{daves}")),
        ("bob sees the group", &bob, format!("/v1/groups/{g}")),
    ];
    for (what, token, path) in controls {
        let (st, body) = api.get(&path, token).await;
        if st != StatusCode::OK {
            failures.push(format!("control: {what}: {st} {body}"));
        }
    }
    // And nothing refused changed anything.
    let (_, members) = api.get(&format!("/v1/groups/{g}/members"), &alice).await;
    let mut ranks: Vec<(String, i64)> = items(&members)
        .iter()
        .map(|m| {
            (
                m["username"].as_str().unwrap_or_default().into(),
                m["rank"].as_i64().unwrap_or(-9),
            )
        })
        .collect();
    ranks.sort();
    let want = [
        ("alice".to_string(), 0),
        ("bob".into(), 1),
        ("carol".into(), 2),
    ];
    if ranks != want {
        failures.push(format!("refused member changes left traces: {ranks:?}"));
    }
    let (_, ev) = api.get(&format!("/v1/events/{shared}"), &alice).await;
    if ev["title"] != "shared" {
        failures.push(format!("a refused PATCH changed the event: {ev}"));
    }
    let (st, _) = api.login("alice", PASSWORD).await;
    if st != StatusCode::OK {
        failures.push("alice cannot log in after the duplicate attempts".into());
    }
    report(failures, &api);
}
