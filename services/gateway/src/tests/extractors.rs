//! What the extractors refuse, each before any service is called: bodies
//! (content type, JSON, shape, fields, size), credentials, query strings,
//! headers and ids the gateway itself reads.

use axum::body::Body;
use axum::http::{header, Method, Request};
use serde_json::{json, Value};
use uuid::Uuid;

use super::fake::Fake;
use super::{bare, json, signed_in, Gateway, MAX_BODY};

fn register(body: Body, content_type: Option<&str>) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/register");
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    req.body(body).expect("request")
}

fn alice() -> Value {
    json!({"username": "alice", "email": "alice@example.org", "password": "correct-horse-1"})
}

fn standup() -> Value {
    json!({"title": "standup", "start": "2026-10-12T09:00:00+02:00",
           "end": "2026-10-12T09:15:00+02:00", "time_zone": "Europe/Madrid"})
}

#[tokio::test]
async fn bodies_are_refused_in_the_error_shape() {
    let gw = Gateway::new(Fake::two_each());
    let send = |body: &str, ct: Option<&str>| gw.send(register(Body::from(body.to_string()), ct));

    let m = send(r#"{"username": "#, Some("application/json")).await;
    assert!(m.error(400, "bad_request").contains("invalid JSON body"));
    let m = send(&alice().to_string(), Some("text/plain")).await;
    assert!(m
        .error(415, "unsupported_media_type")
        .contains("application/json"));
    let m = send("", Some("application/json")).await;
    assert!(m
        .error(400, "bad_request")
        .contains("a JSON body is required"));
    let m = send("[1, 2]", Some("application/json")).await;
    assert!(m.error(400, "bad_request").contains("JSON object"));
    let mut extra = alice();
    extra["admin"] = json!(true);
    let m = send(&extra.to_string(), Some("application/json")).await;
    assert!(m.error(400, "bad_request").contains("unknown field"));

    // A field of the wrong type or missing is 422 and names the field.
    let mut wrong = alice();
    wrong["username"] = json!(5);
    let m = send(&wrong.to_string(), Some("application/json")).await;
    m.error(422, "invalid_field");
    assert_eq!(m.body["error"]["details"]["field"], "username");
    let m = send(r#"{"username": "alice"}"#, None).await;
    m.error(422, "invalid_field");
    assert_eq!(m.body["error"]["details"]["field"], "email");

    let big = format!(r#"{{"username": "{}"}}"#, "a".repeat(MAX_BODY));
    send(&big, Some("application/json"))
        .await
        .error(413, "payload_too_large");

    assert!(gw.fake.calls().is_empty(), "{:?}", gw.fake.calls());
    // A JSON content type with parameters, or none at all, is JSON.
    let a = send(
        &alice().to_string(),
        Some("application/json; charset=utf-8"),
    )
    .await;
    assert_eq!(a.status, 200);
    let a = send(&alice().to_string(), None).await;
    assert_eq!(a.status, 200);
    assert_eq!(gw.fake.calls().len(), 2);
}

#[tokio::test]
async fn signed_in_routes_want_a_bearer_token() {
    let gw = Gateway::new(Fake::two_each());
    let m = gw.send(bare(Method::GET, "/v1/me")).await;
    assert!(m
        .error(401, "unauthenticated")
        .contains("missing Authorization"));
    for value in ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer   "] {
        let mut req = bare(Method::GET, "/v1/events");
        req.headers_mut()
            .insert(header::AUTHORIZATION, value.parse().unwrap());
        let m = gw.send(req).await;
        assert!(
            m.error(401, "unauthenticated").contains("Bearer"),
            "{value}"
        );
    }
    // The body is never read for a caller without credentials.
    let m = gw
        .send(json(Method::POST, "/v1/events", json!({"not": "an event"})))
        .await;
    m.error(401, "unauthenticated");
    assert!(gw.fake.calls().is_empty());
}

#[tokio::test]
async fn query_strings_headers_and_ids_are_checked() {
    let gw = Gateway::new(Fake::two_each());
    let me = Uuid::new_v4();
    let m = gw
        .send(signed_in(
            bare(Method::GET, "/v1/notifications?unread=perhaps"),
            me,
        ))
        .await;
    assert!(m.error(400, "bad_request").contains("invalid query string"));

    let m = gw
        .send(signed_in(
            json(Method::POST, "/v1/events?on_conflict=maybe", standup()),
            me,
        ))
        .await;
    m.error(422, "invalid_field");
    assert_eq!(m.body["error"]["details"]["field"], "on_conflict");

    let mut req = signed_in(json(Method::POST, "/v1/events", standup()), me);
    req.headers_mut()
        .insert("idempotency-key", "two words".parse().unwrap());
    let m = gw.send(req).await;
    assert!(m.error(400, "bad_request").contains("Idempotency-Key"));

    // An id the gateway reads itself (the group of an event) must be one.
    let mut event = standup();
    event["group_id"] = json!("not-a-uuid");
    let m = gw
        .send(signed_in(json(Method::POST, "/v1/events", event), me))
        .await;
    m.error(422, "invalid_field");
    assert_eq!(m.body["error"]["details"]["field"], "group_id");
    assert!(gw.fake.calls().is_empty(), "{:?}", gw.fake.calls());

    // Path ids go to the service as they are: it alone knows what they
    // name (and answers 404 for what is not an id).
    let a = gw
        .send(signed_in(bare(Method::GET, "/v1/groups/not-a-uuid"), me))
        .await;
    assert_eq!(a.status, 200);
    let calls = gw.fake.calls();
    assert!(
        matches!(&calls[..], [c] if matches!(&c.op, agenda_calendar::api::Op::GetGroup { id } if id == "not-a-uuid")),
        "{calls:?}"
    );
}

/// An id that is not even UTF-8 names nothing: 404 like any other id that
/// names nothing (`validate::id`), in the error shape.
#[tokio::test]
async fn a_path_that_is_not_utf8_is_refused_in_the_error_shape() {
    let gw = Gateway::new(Fake::two_each());
    let m = gw
        .send(signed_in(
            bare(Method::GET, "/v1/groups/%FF%FE"),
            Uuid::new_v4(),
        ))
        .await;
    m.error(404, "not_found");
    assert!(gw.fake.calls().is_empty());
}
