//! A member's join is carried into the group's events even when the
//! process doing it stops halfway: the join leaves a marker, and a groups
//! replica settles the member's events from it.

use std::time::Duration;

use agenda_proto::db::PutRequest;
use agenda_tests::cluster::wait_for;
use agenda_tests::system::{expect, System};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_join_reaches_the_groups_events_through_a_replica() {
    let mut sys = System::start_single().await;
    let api = sys.api();
    let db = sys.db.client();
    let (_alice, alice_token) = api.register("alice").await;
    let (bob, bob_token) = api.register("bob").await;
    let g = expect(
        api.post(
            "/v1/groups",
            &alice_token,
            json!({"name": "Lab", "kind": "hierarchical"}),
        )
        .await,
        StatusCode::CREATED,
        "create group",
    );
    let g = g["id"].as_str().expect("group id").to_string();
    let created = expect(
        api.post(
            "/v1/events",
            &alice_token,
            json!({"title": "Retreat", "start": "2031-05-05T09:00:00Z",
                   "end": "2031-05-05T17:00:00Z", "time_zone": "UTC", "group_id": g}),
        )
        .await,
        StatusCode::CREATED,
        "a group event ahead",
    );
    let event = created["event"]["id"].as_str().expect("id").to_string();

    // The groups service stops right after bob's join committed: he is a
    // member with a marker (older than a live join's grace period), not
    // yet an attendee.
    assert!(sys.stop("groups-0").is_some(), "stop groups-0");
    let put = |key: String, value: Vec<u8>| {
        let db = db.clone();
        async move {
            db.put(PutRequest {
                key: key.into_bytes(),
                value,
                ..Default::default()
            })
            .await
            .expect("write")
        }
    };
    let json_bytes = |v: Value| serde_json::to_vec(&v).unwrap();
    put(
        format!("/agenda/members/{g}/{bob}"),
        json_bytes(json!({"user_id": bob, "username": "bob", "rank": 1})),
    )
    .await;
    put(format!("/agenda/user-groups/{bob}/{g}"), Vec::new()).await;
    let marker = format!("/agenda/group-sync/{g}/{bob}");
    put(
        marker.clone(),
        json_bytes(json!({"group_id": g, "user_id": bob, "since": "2001-01-01T00:00:00Z"})),
    )
    .await;
    // As a member he may open the group's event, not attending it yet.
    let ev = expect(
        api.get(&format!("/v1/events/{event}"), &bob_token).await,
        StatusCode::OK,
        "bob opens the retreat",
    );
    assert!(ev["my_status"].is_null(), "not his yet: {ev}");

    sys.start_groups("groups-sweeper")
        .expect("start agenda-groups");
    wait_for("the marker to go", Duration::from_secs(30), || async {
        db.get(marker.clone())
            .await
            .ok()
            .and_then(|m| m.is_none().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sys.log_tail("groups-sweeper")));
    let ev = expect(
        api.get(&format!("/v1/events/{event}"), &bob_token).await,
        StatusCode::OK,
        "bob opens the retreat",
    );
    assert_eq!(ev["my_status"], "accepted", "below its creator: {ev}");
}
