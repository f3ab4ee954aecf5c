//! Rules that must hold as the group changes, through the real gateway and
//! services: invitations decided when answered, not when sent; pending
//! invitations listed and revoked by those who may manage them.
//! Run: `cargo test -p agenda-tests --test api_trust -- --test-threads=1`.

use agenda_tests::system::{expect, expect_error, expect_ok, items, System};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// An invitation sent by a member who was demoted or removed since cannot
/// bring anyone in above them: accepting it is 409 and it is revoked (so
/// a new invitation can be sent). A group's pending invitations are listed
/// and revoked by their sender or anyone ranked above the rank they offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invitations_follow_the_group_as_it_stands() {
    let (_sys, api) = System::start_with_api().await;
    let (_, alice) = api.register("alice").await;
    let (bob_id, bob) = api.register("bob").await;
    let (_, carol) = api.register("carol").await;
    let (_, dave) = api.register("dave").await;
    let (_, erin) = api.register("erin").await;
    let (_, frank) = api.register("frank").await;
    let g = api.create_group(&alice, "Lab", "hierarchical").await;

    // bob (rank 1) invites carol at rank 2, then alice demotes bob to 5.
    let inv = api.invite(&alice, &g, "bob", 1).await;
    expect_ok(api.accept(&bob, &inv).await, "bob joins");
    let to_carol = api.invite(&bob, &g, "carol", 2).await;
    let member = format!("/v1/groups/{g}/members/{bob_id}");
    expect_ok(
        api.patch(&member, &alice, json!({"rank": 5})).await,
        "demote bob",
    );
    let (st, refused) = api.accept(&carol, &to_carol).await;
    assert_eq!(
        st,
        StatusCode::CONFLICT,
        "carol accepts a stale invitation: {refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("rank 5"), "{refused}");
    let mine = expect_ok(
        api.get("/v1/invitations", &carol).await,
        "carol's invitations",
    );
    assert_eq!(items(&mine)[0]["status"], "revoked", "{mine}");
    let members = expect_ok(
        api.get(&format!("/v1/groups/{g}/members"), &alice).await,
        "members",
    );
    assert_eq!(items(&members).len(), 2, "carol did not join: {members}");
    // Nothing blocks a fresh invitation.
    let again = api.invite(&alice, &g, "carol", 2).await;
    expect_ok(
        api.accept(&carol, &again).await,
        "carol joins on a valid invitation",
    );

    // bob (now 5) invites dave at 6, then is removed.
    let to_dave = api.invite(&bob, &g, "dave", 6).await;
    expect(
        api.delete(&member, &alice).await,
        StatusCode::NO_CONTENT,
        "remove bob",
    );
    expect_error(
        api.accept(&dave, &to_dave).await,
        StatusCode::CONFLICT,
        "conflict",
        "dave accepts the invitation of a removed member",
    );

    // Listing and revoking: alice invites erin at 3; frank (4) neither sees
    // it nor may revoke it; alice may.
    let to_frank = api.invite(&alice, &g, "frank", 4).await;
    expect_ok(api.accept(&frank, &to_frank).await, "frank joins");
    let to_erin = api.invite(&alice, &g, "erin", 3).await;
    let pending = format!("/v1/groups/{g}/invitations");
    let seen = expect_ok(api.get(&pending, &alice).await, "alice lists");
    let ids: Vec<String> = items(&seen).iter().map(id).collect();
    assert_eq!(ids, vec![to_erin.clone()], "{seen}");
    let seen = expect_ok(api.get(&pending, &frank).await, "frank lists");
    assert!(items(&seen).is_empty(), "{seen}");
    let revoke = format!("{pending}/{to_erin}");
    expect_error(
        api.delete(&revoke, &frank).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "frank revokes",
    );
    expect_error(
        api.delete(&revoke, &erin).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "an outsider revokes",
    );
    let revoked = expect_ok(api.delete(&revoke, &alice).await, "alice revokes");
    assert_eq!(revoked["status"], "revoked");
    expect_error(
        api.delete(&revoke, &alice).await,
        StatusCode::CONFLICT,
        "conflict",
        "revoked twice",
    );
    expect_error(
        api.accept(&erin, &to_erin).await,
        StatusCode::CONFLICT,
        "conflict",
        "erin accepts a revoked invitation",
    );
    let told = expect_ok(
        api.get("/v1/notifications", &erin).await,
        "erin's notifications",
    );
    assert!(
        items(&told)
            .iter()
            .any(|n| n["kind"] == "invitation_revoked"),
        "{told}"
    );
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}

/// Only a group's owner attaches subgroups to it; its members see them
/// listed; deleting the parent leaves its subgroups detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subgroups_are_attached_by_the_parents_owner() {
    let (_sys, api) = System::start_with_api().await;
    let (_, alice) = api.register("alice").await;
    let (_, bob) = api.register("bob").await;
    let (_, carol) = api.register("carol").await;
    let group = |name: &str, parent: Option<&str>| {
        let mut body = json!({"name": name, "kind": "hierarchical"});
        if let Some(p) = parent {
            body["parent_id"] = json!(p);
        }
        body
    };
    let lab = id(&expect(
        api.post("/v1/groups", &alice, group("Lab", None)).await,
        StatusCode::CREATED,
        "lab",
    ));
    let inv = api.invite(&alice, &lab, "bob", 1).await;
    expect_ok(api.accept(&bob, &inv).await, "bob joins");

    expect_error(
        api.post("/v1/groups", &bob, group("Bob's team", Some(&lab)))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a member attaches a subgroup",
    );
    let field = expect_error(
        api.post("/v1/groups", &carol, group("Carol's", Some(&lab)))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "an outsider attaches a subgroup",
    );
    assert_eq!(field["field"], "parent_id");
    let team = expect(
        api.post("/v1/groups", &alice, group("Team", Some(&lab)))
            .await,
        StatusCode::CREATED,
        "the owner attaches a subgroup",
    );
    assert_eq!(team["parent_id"], json!(lab));
    let team = id(&team);
    let seen = expect_ok(
        api.get(&format!("/v1/groups/{lab}"), &bob).await,
        "bob reads lab",
    );
    assert_eq!(
        seen["subgroups"],
        json!([{"id": team, "name": "Team"}]),
        "{seen}"
    );

    expect(
        api.delete(&format!("/v1/groups/{lab}"), &alice).await,
        StatusCode::NO_CONTENT,
        "delete lab",
    );
    let after = expect_ok(
        api.get(&format!("/v1/groups/{team}"), &alice).await,
        "team after",
    );
    assert_eq!(after["parent_id"], Value::Null, "{after}");
    assert_eq!(after["subgroups"], json!([]), "{after}");
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}

/// Who may fill my agenda: by default people sharing a group with me;
/// anyone else's event arrives as an invitation (`invited`: visible to me,
/// not in my agenda, not busy) until I accept it. `add_me` changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_those_i_allow_put_events_in_my_agenda() {
    let (_sys, api) = System::start_with_api().await;
    let (_, dave) = api.register_with("dave", json!({})).await;
    let (_, stranger) = api.register("stranger").await;
    let (_, mate) = api.register("mate").await;
    let (_, erin) = api.register_with("erin", json!({"add_me": "anyone"})).await;
    let me = expect_ok(api.get("/v1/me", &dave).await, "dave's profile");
    assert_eq!(me["add_me"], "shared_group", "{me}");

    let day = agenda_tests::system::range("2031-05-05T00:00:00Z", "2031-05-06T00:00:00Z");
    let event = |title: &str, hour: u32, who: &str| {
        json!({"title": title, "start": format!("2031-05-05T{hour:02}:00:00Z"),
               "end": format!("2031-05-05T{hour:02}:30:00Z"), "time_zone": "UTC",
               "attendees": [who]})
    };
    let status_of = |ev: &Value, name: &str| -> Value {
        ev["attendees"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["username"] == name))
            .map_or(Value::Null, |x| x["status"].clone())
    };
    let in_agenda = |agenda: &Value, id: &str| items(agenda).iter().any(|e| e["id"] == id);

    // A stranger: an invitation.
    let created = expect(
        api.post("/v1/events", &stranger, event("Pitch", 9, "dave"))
            .await,
        StatusCode::CREATED,
        "a stranger invites dave",
    );
    let pitch = id(&created["event"]);
    assert_eq!(status_of(&created["event"], "dave"), "invited", "{created}");
    let agenda = expect_ok(api.get(&format!("/v1/events?{day}"), &dave).await, "agenda");
    assert!(!in_agenda(&agenda, &pitch), "{agenda}");
    let busy = expect_ok(
        api.get(&format!("/v1/freebusy?users=dave&{day}"), &stranger)
            .await,
        "free/busy",
    );
    assert_eq!(busy["users"]["dave"], json!([]), "{busy}");
    let told = expect_ok(api.get("/v1/notifications", &dave).await, "notifications");
    assert!(
        items(&told)
            .iter()
            .any(|n| n["kind"] == "event_invited" && n["data"]["event_id"] == pitch.as_str()),
        "{told}"
    );
    expect_ok(
        api.get(&format!("/v1/events/{pitch}"), &dave).await,
        "dave sees it",
    );
    let accepted = expect_ok(
        api.post(
            &format!("/v1/events/{pitch}/rsvp"),
            &dave,
            json!({"status": "accepted"}),
        )
        .await,
        "dave accepts",
    );
    assert_eq!(status_of(&accepted["event"], "dave"), "accepted");
    let agenda = expect_ok(api.get(&format!("/v1/events?{day}"), &dave).await, "agenda");
    assert!(in_agenda(&agenda, &pitch), "accepted, it is in: {agenda}");

    // Someone sharing a group: straight in.
    let g = api.create_group(&mate, "Choir", "flat").await;
    let inv = api.invite(&mate, &g, "dave", 1).await;
    expect_ok(api.accept(&dave, &inv).await, "dave joins");
    let created = expect(
        api.post("/v1/events", &mate, event("Rehearsal", 11, "dave"))
            .await,
        StatusCode::CREATED,
        "a group mate adds dave",
    );
    assert_eq!(
        status_of(&created["event"], "dave"),
        "needs_action",
        "{created}"
    );
    let agenda = expect_ok(api.get(&format!("/v1/events?{day}"), &dave).await, "agenda");
    assert!(in_agenda(&agenda, &id(&created["event"])), "{agenda}");

    // Nobody: even the mate's events are invitations now.
    let refused = expect_error(
        api.patch("/v1/me", &dave, json!({"add_me": "friends"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "a bad add_me",
    );
    assert_eq!(refused["field"], "add_me");
    expect_ok(
        api.patch("/v1/me", &dave, json!({"add_me": "nobody"}))
            .await,
        "nobody",
    );
    let created = expect(
        api.post("/v1/events", &mate, event("Concert", 13, "dave"))
            .await,
        StatusCode::CREATED,
        "the mate invites dave",
    );
    assert_eq!(status_of(&created["event"], "dave"), "invited", "{created}");

    // Anyone: a stranger's event lands in erin's agenda.
    let created = expect(
        api.post("/v1/events", &stranger, event("Open", 15, "erin"))
            .await,
        StatusCode::CREATED,
        "a stranger adds erin",
    );
    assert_eq!(
        status_of(&created["event"], "erin"),
        "needs_action",
        "{created}"
    );
    let agenda = expect_ok(api.get(&format!("/v1/events?{day}"), &erin).await, "agenda");
    assert!(in_agenda(&agenda, &id(&created["event"])), "{agenda}");
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}

/// Ids are UUIDs whatever their case: an uppercase id names the same
/// event, group, member and invitation (it was 404 for events).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_name_the_same_thing_in_either_case() {
    let (_sys, api) = System::start_with_api().await;
    let (_, pat) = api.register("pat").await;
    let (quinn_id, quinn) = api.register("quinn").await;
    let ev = expect(
        api.post(
            "/v1/events",
            &pat,
            json!({"title": "x", "start": "2031-01-01T09:00:00Z",
                   "end": "2031-01-01T10:00:00Z", "time_zone": "UTC", "attendees": ["quinn"]}),
        )
        .await,
        StatusCode::CREATED,
        "event",
    );
    let up = id(&ev["event"]).to_uppercase();
    expect_ok(api.get(&format!("/v1/events/{up}"), &pat).await, "GET");
    expect_ok(
        api.patch(&format!("/v1/events/{up}"), &pat, json!({"title": "y"}))
            .await,
        "PATCH",
    );
    expect_ok(
        api.post(
            &format!("/v1/events/{up}/rsvp"),
            &quinn,
            json!({"status": "declined"}),
        )
        .await,
        "RSVP",
    );
    let g = api
        .create_group(&pat, "G", "hierarchical")
        .await
        .to_uppercase();
    expect_ok(api.get(&format!("/v1/groups/{g}"), &pat).await, "GET group");
    let inv = api.invite(&pat, &g, "quinn", 1).await.to_uppercase();
    expect_ok(api.accept(&quinn, &inv).await, "accept");
    let member = format!("/v1/groups/{g}/members/{}", quinn_id.to_uppercase());
    expect_ok(
        api.patch(&member, &pat, json!({"rank": 2})).await,
        "PATCH member",
    );
    expect(
        api.delete(&format!("/v1/events/{up}"), &pat).await,
        StatusCode::NO_CONTENT,
        "DELETE",
    );
}
