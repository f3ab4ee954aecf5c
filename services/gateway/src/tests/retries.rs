//! The retry policy of `upstream` (its module doc), against replicas that
//! fail in each way: a call that may be repeated (a read, an RSVP, a
//! creation with its idempotency key) moves to another replica after any
//! failure; any other change only when it never left (connection
//! refused), since a replica that broke or went silent mid-call may have
//! applied it. Time is paused: a hanging replica costs nothing real.

use std::time::Duration;

use agenda_calendar::api::Op;
use axum::http::Method;
use serde_json::json;
use uuid::Uuid;

use super::fake::{Fake, Reply};
use super::{bare, json, signed_in, Gateway, REQUEST_TIMEOUT};

async fn get_me(gw: &Gateway) -> super::Answer {
    gw.send(signed_in(bare(Method::GET, "/v1/me"), Uuid::new_v4()))
        .await
}

/// A change that is not safe to repeat (renaming a group).
async fn rename_group(gw: &Gateway) -> super::Answer {
    gw.send(signed_in(
        json(
            Method::PATCH,
            &format!("/v1/groups/{}", Uuid::new_v4()),
            json!({"name": "renamed"}),
        ),
        Uuid::new_v4(),
    ))
    .await
}

#[tokio::test(start_paused = true)]
async fn a_read_moves_to_another_replica_after_any_failure() {
    for failure in [
        Reply::Refused,
        Reply::Broken,
        Reply::Fail(tonic::Code::Internal),
        Reply::Hang,
    ] {
        let gw = Gateway::new(Fake::two_each().script("u1", [failure.clone()]));
        let a = get_me(&gw).await;
        assert_eq!(a.status, 200, "{failure:?}: {:?}", a.body);
        assert_eq!(a.body, json!({"replica": "u2"}), "{failure:?}");
        assert_eq!(gw.fake.called(), ["u1", "u2"], "{failure:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_at_capacity_is_not_asked_again_elsewhere() {
    // Even a read: spreading an overload over the other replicas would
    // multiply it. The caller gets 503 with Retry-After instead.
    let gw = Gateway::new(Fake::two_each().script("u1", [Reply::Overloaded]));
    let a = get_me(&gw).await;
    a.error(503, "unavailable");
    assert_eq!(a.body["error"]["details"]["reason"], "overloaded");
    assert!(a.header("retry-after").is_some(), "{a:?}");
    assert_eq!(gw.fake.called(), ["u1"]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_replica_gets_a_short_first_attempt_on_a_read() {
    let gw = Gateway::new(Fake::two_each().script("u1", [Reply::Hang]));
    let started = tokio::time::Instant::now();
    let a = get_me(&gw).await;
    assert_eq!(a.status, 200);
    let took = started.elapsed();
    // The first attempt's deadline (1 s), not the request's (3 s).
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_moves_on_only_when_it_never_left() {
    // Refused: nothing reached u1's service, so g2 may do it.
    let gw = Gateway::new(Fake::two_each().script("g1", [Reply::Refused]));
    let a = rename_group(&gw).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(gw.fake.called(), ["g1", "g2"]);

    // Broken mid-call or failed on the replica: it may have been applied,
    // so it is not sent again.
    for failure in [Reply::Broken, Reply::Fail(tonic::Code::Internal)] {
        let gw = Gateway::new(Fake::two_each().script("g1", [failure.clone()]));
        let a = rename_group(&gw).await;
        let message = a.error(503, "unavailable");
        assert!(message.contains("groups service failed"), "{message}");
        assert_eq!(a.header("retry-after"), Some("1"));
        assert_eq!(gw.fake.called(), ["g1"], "{failure:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_change_to_a_silent_replica_gets_the_whole_deadline_and_no_retry() {
    let gw = Gateway::new(Fake::two_each().script("g1", [Reply::Hang]));
    let started = tokio::time::Instant::now();
    let a = rename_group(&gw).await;
    assert!(a.error(503, "unavailable").contains("timed out"));
    assert_eq!(gw.fake.called(), ["g1"]);
    let took = started.elapsed();
    assert!(
        took >= REQUEST_TIMEOUT && took < REQUEST_TIMEOUT + Duration::from_millis(100),
        "{took:?}"
    );
    // A slow answer within the deadline is an answer, whatever the first
    // attempt of a read would have been given.
    let gw = Gateway::new(Fake::two_each().script(
        "g1",
        [Reply::After(
            Duration::from_secs(2),
            Box::new(Reply::Answer(200, json!({"renamed": true}))),
        )],
    ));
    let a = rename_group(&gw).await;
    assert_eq!(a.body, json!({"renamed": true}));
    assert_eq!(gw.fake.called(), ["g1"]);
}

#[tokio::test(start_paused = true)]
async fn an_event_creation_is_repeated_with_the_same_idempotency_key() {
    let event = json!({"title": "standup", "start": "2026-10-12T09:00:00+02:00",
                       "end": "2026-10-12T09:15:00+02:00", "time_zone": "Europe/Madrid"});
    for given in [None, Some("client-key-1")] {
        let gw = Gateway::new(Fake::two_each().script("u1", [Reply::Broken]));
        let mut req = signed_in(
            json(Method::POST, "/v1/events", event.clone()),
            Uuid::new_v4(),
        );
        if let Some(key) = given {
            req.headers_mut()
                .insert("idempotency-key", key.parse().unwrap());
        }
        let a = gw.send(req).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let calls = gw.fake.calls();
        assert_eq!(gw.fake.called(), ["u1", "u2"]);
        let key = |op: &Op| match op {
            Op::CreateEvent {
                idempotency_key, ..
            } => idempotency_key.clone(),
            other => panic!("{other:?}"),
        };
        let first = key(&calls[0].op).expect("the gateway always sends a key");
        if let Some(k) = given {
            assert_eq!(first, k);
        }
        // The very same operation, key included.
        assert_eq!(calls[0].payload, calls[1].payload);
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_is_never_retried_whatever_its_status() {
    let refusal = json!({"error": {"code": "internal", "message": "internal error (reference x)",
                                   "details": {}}});
    let gw = Gateway::new(Fake::two_each().script("u1", [Reply::Answer(500, refusal.clone())]));
    let a = get_me(&gw).await;
    a.error(500, "internal");
    assert_eq!(a.body, refusal);
    assert_eq!(gw.fake.called(), ["u1"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_replica_is_stepped_over_by_the_next_calls() {
    let gw = Gateway::new(Fake::two_each().script("u1", [Reply::Refused]));
    get_me(&gw).await;
    assert_eq!(gw.fake.called(), ["u1", "u2"]);
    // Round-robin would start the next calls on u1; it is suspect for a
    // while, so they go to u2.
    get_me(&gw).await;
    get_me(&gw).await;
    assert_eq!(gw.fake.called(), ["u1", "u2", "u2", "u2"]);
    // Once its suspicion is over, it gets calls again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    get_me(&gw).await;
    get_me(&gw).await;
    let called = gw.fake.called();
    assert!(called[4..].contains(&"u1".to_string()), "{called:?}");
}

#[tokio::test(start_paused = true)]
async fn reads_keep_trying_until_the_deadline_then_503() {
    let gw = Gateway::new(
        Fake::two_each()
            .always("u1", Reply::Refused)
            .always("u2", Reply::Broken),
    );
    let started = tokio::time::Instant::now();
    let a = get_me(&gw).await;
    assert!(a.error(503, "unavailable").contains("users service failed"));
    let took = started.elapsed();
    assert!(took <= REQUEST_TIMEOUT, "{took:?}");
    let called = gw.fake.called();
    assert!(called.len() > 4, "tried again and again: {called:?}");
    assert!(called.contains(&"u1".into()) && called.contains(&"u2".into()));
}
