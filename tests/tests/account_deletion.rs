//! Deleting an account is finished even when the process doing it stops
//! halfway: the account's removal leaves a marker, and a users replica
//! settles the person's events from it.

use std::time::Duration;

use agenda_proto::db::{PutRequest, RangeRequest};
use agenda_tests::cluster::wait_for;
use agenda_tests::system::{expect, expect_error, items, Api, System};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_account_deletion_is_finished_by_a_replica() {
    let mut sys = System::start_single().await;
    let api = sys.api();
    let db = sys.db.client();
    let (alice, alice_token) = api.register("alice").await;
    let (_bob, bob_token) = api.register("bob").await;
    let hers = create(&api, &alice_token, "Alice's talk", "bob").await;
    let his = create(&api, &bob_token, "Bob's review", "alice").await;

    // A completed deletion leaves no marker behind.
    let (carol, carol_token) = api.register("carol").await;
    let (st, body) = api.delete("/v1/me", &carol_token).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let marker = db
        .get(format!("/agenda/deleting/{carol}"))
        .await
        .expect("read");
    assert!(marker.is_none(), "marker left after a finished deletion");

    // The service stops right after removing alice's account: the marker
    // is there, her events are not settled yet.
    assert!(sys.stop("users-0").is_some(), "stop users-0");
    // (Its marker is older than the grace period a live deletion gets.)
    db.put(PutRequest {
        key: format!("/agenda/deleting/{alice}").into_bytes(),
        value: serde_json::to_vec(&json!({"user_id": alice, "since": "2001-01-01T00:00:00Z"}))
            .unwrap(),
        ..Default::default()
    })
    .await
    .expect("write the marker");
    db.delete(agenda_proto::db::DeleteRequest {
        key: format!("/agenda/users/{alice}").into_bytes(),
        ..Default::default()
    })
    .await
    .expect("remove the account record");
    sys.start_users("users-sweeper")
        .expect("start agenda-users");
    wait_for("the marker to go", Duration::from_secs(30), || async {
        db.get(format!("/agenda/deleting/{alice}"))
            .await
            .ok()
            .and_then(|m| m.is_none().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sys.log_tail("users-sweeper")));

    expect_error(
        api.get(&format!("/v1/events/{hers}"), &bob_token).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "the event she organized is cancelled",
    );
    let review = expect(
        api.get(&format!("/v1/events/{his}"), &bob_token).await,
        StatusCode::OK,
        "bob's event goes on",
    );
    assert!(
        !review["attendees"]
            .as_array()
            .expect("attendees")
            .iter()
            .any(|a| a["user_id"] == alice.as_str()),
        "alice is off the attendees: {review}"
    );
    let all = expect(
        api.get("/v1/notifications", &bob_token).await,
        StatusCode::OK,
        "notifications",
    );
    for (kind, id) in [("event_cancelled", &hers), ("attendee_left", &his)] {
        assert!(
            items(&all)
                .iter()
                .any(|n| n["kind"] == kind && n["data"]["event_id"] == id.as_str()),
            "bob is told {kind} for {id}: {all}"
        );
    }
    let copies = db
        .range(RangeRequest {
            key: format!("/agenda/agenda/{alice}/").into_bytes(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("read");
    assert!(copies.kvs.is_empty(), "alice's agenda copies are left");
}

/// Creates a one-hour event with one attendee; returns its id.
async fn create(api: &Api, token: &str, title: &str, with: &str) -> String {
    let body = json!({"title": title, "start": "2031-05-05T09:00:00Z",
                      "end": "2031-05-05T10:00:00Z", "time_zone": "UTC", "attendees": [with]});
    let created = expect(
        api.post("/v1/events", token, body).await,
        StatusCode::CREATED,
        title,
    );
    created["event"]["id"].as_str().expect("id").to_string()
}
