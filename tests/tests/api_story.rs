//! The public API as three people use it (alice, bob, carol), end to end,
//! against real processes: accounts, groups and invitations, group and
//! personal events, RSVP, conflicts, recurrence across DST, free/busy,
//! the group agenda's privacy rules, notifications, membership changes.
//!
//! One story, one system: each chapter builds on the previous ones. Every
//! chapter works on its own day so the days do not interfere.
//! Run: `cargo test -p agenda-tests --test api_story -- --test-threads=1`.

use std::time::Duration;

use agenda_tests::cluster::wait_for;
use agenda_tests::system::{
    expect, expect_error, expect_ok, fmt_time, instant, items, parse_time, range, Api, System,
    SystemOptions, PASSWORD,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// One person of the story.
struct P {
    name: &'static str,
    id: String,
    token: String,
}

struct People {
    alice: P,
    bob: P,
    carol: P,
}

/// A whole UTC day of 2030 as a `from=..&to=..` query.
fn day(date: &str) -> String {
    let from = parse_time(&format!("{date}T00:00:00Z")).expect("date").0;
    range(&fmt_time(from), &fmt_time(from + 86_400))
}

fn at(date: &str, hm: &str) -> String {
    format!("{date}T{hm}:00Z")
}

/// An event body on `date`, `from`-`to` UTC.
fn utc_event(title: &str, date: &str, from: &str, to: &str) -> Value {
    json!({"title": title, "start": at(date, from), "end": at(date, to), "time_zone": "UTC"})
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

async fn agenda(api: &Api, p: &P, query: &str) -> Vec<Value> {
    let body = expect(
        api.get(&format!("/v1/events?{query}"), &p.token).await,
        StatusCode::OK,
        &format!("{}'s agenda", p.name),
    );
    items(&body).clone()
}

/// `my_status` of event `id` in `p`'s agenda of `date`.
async fn my_status(api: &Api, p: &P, date: &str, id: &str) -> String {
    let items = agenda(api, p, &day(date)).await;
    let e = items
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("event {id} not in {}'s agenda: {items:?}", p.name));
    s(&e["my_status"]).to_string()
}

/// Creates an event (201) and returns the create reply `{event, conflicts}`.
async fn create_event(api: &Api, p: &P, body: Value) -> Value {
    expect(
        api.post("/v1/events", &p.token, body.clone()).await,
        StatusCode::CREATED,
        &format!("{} creates {body}", p.name),
    )
}

/// Creates `alice`'s event `body` with bob invited, bob accepts; its id.
async fn accepted_by_bob(api: &Api, alice: &P, bob: &P, mut body: Value) -> String {
    body["attendees"] = json!(["bob"]);
    let id = event_id(&create_event(api, alice, body).await);
    expect_ok(
        api.post(
            &format!("/v1/events/{id}/rsvp"),
            &bob.token,
            json!({"status": "accepted"}),
        )
        .await,
        "bob accepts",
    );
    id
}

fn event_id(created: &Value) -> String {
    s(&created["event"]["id"]).to_string()
}

/// Waits until `p` has a notification of `kind` (stored, then pushed:
/// it may land a moment after the change) and returns it.
async fn notification(api: &Api, p: &P, kind: &str) -> Value {
    wait_for(
        &format!("a {kind} notification for {}", p.name),
        Duration::from_secs(15),
        || async {
            let (st, body) = api.get("/v1/notifications", &p.token).await;
            assert_eq!(st, StatusCode::OK, "notifications of {}: {body}", p.name);
            items(&body).iter().find(|n| n["kind"] == kind).cloned()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `{user name -> rank}` of a group, as `viewer` sees it.
async fn ranks(api: &Api, viewer: &P, group: &str) -> Vec<(String, i64)> {
    let body = expect(
        api.get(&format!("/v1/groups/{group}/members"), &viewer.token)
            .await,
        StatusCode::OK,
        "members",
    );
    let mut v: Vec<(String, i64)> = items(&body)
        .iter()
        .map(|m| {
            (
                s(&m["username"]).to_string(),
                m["rank"].as_i64().expect("rank"),
            )
        })
        .collect();
    v.sort();
    v
}

fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = v.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    v.sort();
    v
}

async fn invite(api: &Api, by: &P, group: &str, body: Value) -> Value {
    // DESIGN/API.md give no status for a new invitation: any 2xx.
    let inv = expect_ok(
        api.post(&format!("/v1/groups/{group}/invitations"), &by.token, body)
            .await,
        "invite",
    );
    assert_eq!(inv["group_id"], group, "{inv}");
    assert_eq!(inv["status"], "pending", "{inv}");
    // `invited_by` is not specified as id or username: accept either.
    assert!(
        inv["invited_by"] == by.id.as_str() || inv["invited_by"] == by.name,
        "invited_by: {inv}"
    );
    inv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_people_use_the_calendar() {
    story(SystemOptions::default()).await;
}

/// The same story with mutual TLS on every gRPC link inside (agenda-db
/// nodes and their peers, users, groups, the gateway's calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_story_holds_with_mutual_tls_inside() {
    story(SystemOptions {
        tls: true,
        ..SystemOptions::default()
    })
    .await;
}

/// With TLS the gateway serves HTTPS only. Tokens are Ed25519:
/// agenda-users alone reads the private keys; a
/// gateway certificate cannot (it checks tokens with the public keys).
/// A rotation (`agendactl rotate-token-key`) takes effect without a
/// restart, and tokens signed with the old key stay valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_only_and_token_keys_rotate_with_only_users_holding_the_private_ones() {
    use agenda_common::auth;
    let sys = System::start(SystemOptions {
        tls: true,
        users: 2,
        groups: 1,
        ..SystemOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start the system: {e:#}"));
    let api = sys.api();
    // The public side is HTTPS; plain HTTP on its port gets a 400 that
    // says so, and nothing of the service.
    assert!(sys.url().starts_with("https://"), "{}", sys.url());
    let plain = reqwest::get(sys.url().replacen("https://", "http://", 1) + "/readyz")
        .await
        .expect("a plaintext reply");
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    let text = plain.text().await.unwrap();
    assert!(text.contains("HTTPS only"), "{text}");
    let (_, old) = api.register("rosa").await;
    // The key id from a token's header (base64url JSON before the first dot).
    let kid = |t: &str| -> String {
        use base64::Engine;
        let head = t.split('.').next().unwrap();
        let head = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap();
        let head: Value = serde_json::from_slice(&head).unwrap();
        assert_eq!(head["alg"], "EdDSA");
        head["kid"].as_str().unwrap().to_string()
    };
    let (st, _) = api.get("/v1/me", &old).await;
    assert_eq!(st, StatusCode::OK);

    let grpc: Vec<String> = sys.db.nodes.values().map(|n| n.grpc.clone()).collect();
    let as_cert = |name: &str| {
        let id = agenda_common::tls::Identity::load(&agenda_common::tls::TlsFiles::in_dir(
            &sys.certs_dir(),
            name,
        ))
        .unwrap();
        agenda_common::DbClient::with_tls(&grpc, Some(id.client_config().unwrap())).unwrap()
    };
    let gateway = as_cert("gateway");
    assert!(
        matches!(
            gateway.get(auth::SIGNING_KEYS).await,
            Err(agenda_common::Error::PermissionDenied(_))
        ),
        "a gateway certificate read the private token keys"
    );
    let public = gateway
        .get(format!("/registry/config/{}", auth::PUBLIC_KEYS_CONFIG))
        .await
        .unwrap()
        .expect("public keys published");
    let public: auth::VerifyingKeys = serde_json::from_slice(&public.value).unwrap();
    assert!(public.verify(&old).is_ok());

    let new_kid = auth::rotate(&as_cert("test")).await.unwrap();
    assert_ne!(new_kid, kid(&old));
    // Every users replica follows; logins (any replica) sign with the new key.
    let mut fresh = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fresh.len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "logins still signed with the old key"
        );
        let (st, login) = api.login("rosa", PASSWORD).await;
        assert_eq!(st, StatusCode::OK, "{login}");
        let t = login["access_token"].as_str().unwrap().to_string();
        if kid(&t) == new_kid {
            fresh.push(t);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for t in fresh.iter().chain([&old]) {
        let (st, body) = api.get("/v1/me", t).await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
}

/// `GET /v1/events/search`: text in the titles, locations and
/// descriptions of your agenda (any case, every occurrence of a series in
/// the window), nothing of other people's agendas; blank or overlong text
/// and a missing window are refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_text_in_your_agenda_only() {
    let (_sys, api) = System::start_with_api().await;
    let People { alice, bob, .. } = accounts(&api).await;
    let mut dentist = utc_event("Dentist", "2030-03-04", "09:00", "10:00");
    dentist["location"] = json!("Clinica Norte");
    create_event(&api, &alice, dentist).await;
    let mut standup = utc_event("Standup", "2030-03-05", "08:00", "08:15");
    standup["description"] = json!("Daily STANDUP notes");
    standup["rrule"] = json!("FREQ=DAILY;COUNT=3");
    create_event(&api, &alice, standup).await;
    create_event(
        &api,
        &bob,
        utc_event("Dentist of Bob", "2030-03-04", "11:00", "12:00"),
    )
    .await;
    let window = range("2030-03-01T00:00:00Z", "2030-03-31T00:00:00Z");
    let search = |q: &str| {
        let path = format!("/v1/events/search?q={q}&{window}");
        let api = &api;
        let token = alice.token.clone();
        async move { api.get(&path, &token).await }
    };
    let titles = |body: &Value| -> Vec<String> {
        items(body)
            .iter()
            .map(|e| s(&e["title"]).to_string())
            .collect()
    };
    let found = expect_ok(search("dENTist").await, "search by title");
    assert_eq!(titles(&found), ["Dentist"], "{found}");
    let found = expect_ok(search("norte").await, "search by location");
    assert_eq!(titles(&found), ["Dentist"], "{found}");
    let found = expect_ok(search("standup%20notes").await, "search by description");
    assert_eq!(titles(&found), ["Standup", "Standup", "Standup"], "{found}");
    let found = expect_ok(search("nothing-like-this").await, "no match");
    assert!(items(&found).is_empty(), "{found}");
    expect_error(
        search("%20%20").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "blank q",
    );
    expect_error(
        search(&"x".repeat(201)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "201 characters",
    );
    expect_error(
        api.get("/v1/events/search?q=dentist", &alice.token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "no window",
    );
}

/// Week views are answered again from agenda-users' cache of answered
/// views, yet every change to the agenda shows at once on either replica:
/// an invitation, an edit by its organiser, one's own answer, a deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_week_view_read_again_shows_every_change_at_once() {
    let sys = System::start(SystemOptions {
        metrics: true,
        ..SystemOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start the system: {e:#}"));
    let api = sys.api();
    let (_, alice) = api.register("alice").await;
    let (_, bob) = api.register("bob").await;
    let week = range("2030-06-03T00:00:00Z", "2030-06-10T00:00:00Z");
    // Read several times: both replicas answer, and keep, the view.
    let seen = |what: &'static str| {
        let (api, week, alice) = (&api, &week, &alice);
        async move {
            let mut views = Vec::new();
            for _ in 0..6 {
                let body = expect_ok(api.get(&format!("/v1/events?{week}"), alice).await, what);
                let view: Vec<(String, String)> = items(&body)
                    .iter()
                    .map(|e| (s(&e["title"]).to_string(), s(&e["my_status"]).to_string()))
                    .collect();
                views.push(view);
            }
            assert!(
                views.windows(2).all(|w| w[0] == w[1]),
                "{what}: the replicas answered differently: {views:?}"
            );
            views.pop().unwrap_or_default()
        }
    };
    let pair = |t: &str, st: &str| (t.to_string(), st.to_string());
    expect(
        api.post(
            "/v1/events",
            &alice,
            utc_event("Mine", "2030-06-04", "09:00", "10:00"),
        )
        .await,
        StatusCode::CREATED,
        "alice's event",
    );
    assert_eq!(seen("alice's own").await, [pair("Mine", "accepted")]);

    let mut body = utc_event("Bob's", "2030-06-05", "09:00", "10:00");
    body["attendees"] = json!(["alice"]);
    let id = event_id(&expect(
        api.post("/v1/events", &bob, body).await,
        StatusCode::CREATED,
        "bob invites alice",
    ));
    assert_eq!(
        seen("invited").await,
        [pair("Mine", "accepted"), pair("Bob's", "needs_action")]
    );
    expect_ok(
        api.patch(
            &format!("/v1/events/{id}"),
            &bob,
            json!({"title": "Bob's, renamed"}),
        )
        .await,
        "bob renames it",
    );
    assert_eq!(
        seen("renamed").await,
        [
            pair("Mine", "accepted"),
            pair("Bob's, renamed", "needs_action")
        ]
    );
    expect_ok(
        api.post(
            &format!("/v1/events/{id}/rsvp"),
            &alice,
            json!({"status": "accepted"}),
        )
        .await,
        "alice accepts",
    );
    assert_eq!(
        seen("accepted").await,
        [pair("Mine", "accepted"), pair("Bob's, renamed", "accepted")]
    );
    expect_ok(
        api.delete(&format!("/v1/events/{id}"), &bob).await,
        "bob deletes it",
    );
    assert_eq!(seen("deleted").await, [pair("Mine", "accepted")]);

    // And the views were answered from the cache in between.
    let hits = sys
        .users_metric("agenda_users_week_view_cache_total{result=\"hit\"}")
        .await
        .unwrap_or_else(|e| panic!("cache hits: {e:#}"));
    assert!(
        hits >= 10.0,
        "only {hits} views were answered from the cache"
    );
}

/// Moving a personal event asks its attendees again (their answers go
/// back to needs_action and they are told); other edits keep answers; a
/// PATCH that changes nothing writes nothing and tells nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_asks_again_and_a_patch_that_changes_nothing_tells_nobody() {
    let (_sys, api) = System::start_with_api().await;
    let People { alice, bob, .. } = accounts(&api).await;
    let d = "2030-05-06";
    let id = accepted_by_bob(&api, &alice, &bob, utc_event("Review", d, "09:00", "10:00")).await;
    let path = format!("/v1/events/{id}");
    let told = || async {
        let (st, body) = api.get("/v1/notifications", &bob.token).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        items(&body)
            .iter()
            .filter(|n| n["kind"] == "event_updated")
            .count()
    };
    let renamed = json!({"title": "Design review"});
    expect_ok(
        api.patch(&path, &alice.token, renamed.clone()).await,
        "rename",
    );
    assert_eq!(
        my_status(&api, &bob, d, &id).await,
        "accepted",
        "a rename keeps answers"
    );
    assert_eq!(told().await, 1);
    expect_ok(
        api.patch(&path, &alice.token, renamed).await,
        "the same again",
    );
    expect_ok(
        api.patch(&path, &alice.token, json!({})).await,
        "an empty PATCH",
    );
    assert_eq!(told().await, 1, "a PATCH that changes nothing tells nobody");
    expect_ok(
        api.patch(
            &path,
            &alice.token,
            json!({"start": at(d, "11:00"), "end": at(d, "12:00")}),
        )
        .await,
        "move",
    );
    assert_eq!(
        my_status(&api, &bob, d, &id).await,
        "needs_action",
        "asked again"
    );
    assert_eq!(
        my_status(&api, &alice, d, &id).await,
        "accepted",
        "the organizer's stays"
    );
    assert_eq!(told().await, 2);
}

/// Attendees change after creation: a PATCH with the whole new list keeps
/// the answers of those who stay, asks newcomers (their conflicts
/// reported) and takes the event out of the agendas of those removed,
/// telling each what happened to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attendees_are_added_and_removed_after_creation() {
    let (_sys, api) = System::start_with_api().await;
    let People { alice, bob, carol } = accounts(&api).await;
    let d = "2030-05-07";
    create_event(&api, &carol, utc_event("Carol's own", d, "09:30", "10:30")).await;
    let id = accepted_by_bob(
        &api,
        &alice,
        &bob,
        utc_event("Planning", d, "09:00", "10:00"),
    )
    .await;
    let path = format!("/v1/events/{id}");
    let both = expect_ok(
        api.patch(&path, &alice.token, json!({"attendees": ["bob", "carol"]}))
            .await,
        "carol added",
    );
    let names: Vec<&str> = both["event"]["attendees"]
        .as_array()
        .expect("attendees")
        .iter()
        .map(|a| s(&a["username"]))
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"], "{both}");
    assert_eq!(
        my_status(&api, &bob, d, &id).await,
        "accepted",
        "bob stays as he answered"
    );
    assert_eq!(my_status(&api, &carol, d, &id).await, "needs_action");
    assert!(
        busy_block(&both["conflicts"], &carol.id, &at(d, "09:30")),
        "the newcomer's conflict is reported (a busy block to alice): {both}"
    );
    let invited = notification(&api, &carol, "event_invited").await;
    assert_eq!(invited["data"]["event_id"], id.as_str(), "{invited}");

    let only_carol = expect_ok(
        api.patch(&path, &alice.token, json!({"attendees": ["carol"]}))
            .await,
        "bob removed",
    );
    assert_eq!(
        only_carol["event"]["attendees"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        !lists(&api, &bob, &day(d), &id).await,
        "gone from bob's agenda"
    );
    expect(
        api.get(&path, &bob.token).await,
        StatusCode::NOT_FOUND,
        "bob opens it",
    );
    let cancelled = notification(&api, &bob, "event_cancelled").await;
    assert_eq!(cancelled["data"]["event_id"], id.as_str(), "{cancelled}");
    assert_eq!(my_status(&api, &carol, d, &id).await, "needs_action");

    for (body, what) in [
        (json!({"attendees": ["nobody-here"]}), "an unknown name"),
        (json!({"attendees": vec!["bob"; 101]}), "too many"),
    ] {
        let err = expect(
            api.patch(&path, &alice.token, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            what,
        );
        assert_eq!(
            err["error"]["details"]["field"], "attendees",
            "{what}: {err}"
        );
    }
    expect(
        api.patch(&path, &carol.token, json!({"attendees": []}))
            .await,
        StatusCode::FORBIDDEN,
        "an attendee sets the list",
    );
}

/// `by` invites `who` to `group` at `rank`, and `who` accepts.
async fn join(api: &Api, by: &P, who: &P, group: &str, rank: i64) {
    let inv = invite(api, by, group, json!({"username": who.name, "rank": rank})).await;
    expect_ok(
        api.post(
            &format!("/v1/invitations/{}/accept", s(&inv["id"])),
            &who.token,
            json!({}),
        )
        .await,
        &format!("{} accepts", who.name),
    );
}

/// A group's events reach members who join later (status by the
/// hierarchy) and leave with members who go; the past stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_events_follow_membership() {
    let (_sys, api) = System::start_with_api().await;
    let People { alice, bob, carol } = accounts(&api).await;
    let g = expect(
        api.post(
            "/v1/groups",
            &alice.token,
            json!({"name": "Lab", "kind": "hierarchical"}),
        )
        .await,
        StatusCode::CREATED,
        "create group",
    );
    let g = s(&g["id"]).to_string();
    join(&api, &alice, &bob, &g, 1).await;
    let group_event = |title: &str, start: &str, end: &str, rrule: Option<&str>| {
        let mut body = json!({"title": title, "start": start, "end": end,
                              "time_zone": "UTC", "group_id": g});
        if let Some(r) = rrule {
            body["rrule"] = json!(r);
        }
        body
    };
    let past = event_id(
        &create_event(
            &api,
            &alice,
            group_event(
                "Old kickoff",
                "2020-01-06T09:00:00Z",
                "2020-01-06T10:00:00Z",
                None,
            ),
        )
        .await,
    );
    let weekly = event_id(
        &create_event(
            &api,
            &alice,
            group_event(
                "Lab meeting",
                "2020-01-07T09:00:00Z",
                "2020-01-07T10:00:00Z",
                Some("FREQ=WEEKLY"),
            ),
        )
        .await,
    );
    let ahead = event_id(
        &create_event(
            &api,
            &alice,
            group_event(
                "Retreat",
                "2031-05-05T09:00:00Z",
                "2031-05-05T17:00:00Z",
                None,
            ),
        )
        .await,
    );
    let by_bob = event_id(
        &create_event(
            &api,
            &bob,
            group_event(
                "Reading club",
                "2031-05-06T09:00:00Z",
                "2031-05-06T10:00:00Z",
                None,
            ),
        )
        .await,
    );
    let opened = |who: &P, id: &str| {
        let (api, path, token) = (&api, format!("/v1/events/{id}"), who.token.clone());
        async move {
            let (st, body) = api.get(&path, &token).await;
            (st == StatusCode::OK).then(|| s(&body["my_status"]).to_string())
        }
    };

    // Carol joins below bob: she attends what is ahead, accepted below
    // the creator (alice, bob), never the past.
    join(&api, &bob, &carol, &g, 2).await;
    assert_eq!(opened(&carol, &weekly).await.as_deref(), Some("accepted"));
    assert_eq!(opened(&carol, &ahead).await.as_deref(), Some("accepted"));
    assert_eq!(opened(&carol, &by_bob).await.as_deref(), Some("accepted"));
    // The past is not hers: not in her agenda, though as a member she may
    // open the group's event (as its agenda shows it), not attending.
    assert!(!lists(&api, &carol, &day("2020-01-06"), &past).await);
    assert_eq!(
        opened(&carol, &past).await.as_deref(),
        Some(""),
        "no status of hers"
    );
    assert!(lists(&api, &carol, &day("2031-05-05"), &ahead).await);
    let week = range("2031-05-05T00:00:00Z", "2031-05-12T00:00:00Z");
    assert!(lists(&api, &carol, &week, &weekly).await, "the series");

    // Bob leaves: what is ahead goes from his agenda (his own event stays
    // his), the past stays.
    expect(
        api.delete(&format!("/v1/groups/{g}/members/{}", bob.id), &bob.token)
            .await,
        StatusCode::NO_CONTENT,
        "bob leaves",
    );
    assert_eq!(opened(&bob, &ahead).await, None, "gone with bob");
    assert_eq!(opened(&bob, &weekly).await, None, "the series too");
    assert!(!lists(&api, &bob, &day("2031-05-05"), &ahead).await);
    assert_eq!(
        opened(&bob, &past).await.as_deref(),
        Some("accepted"),
        "the past stays"
    );
    assert_eq!(
        opened(&bob, &by_bob).await.as_deref(),
        Some("accepted"),
        "his own"
    );
    // The others' events no longer list him.
    let ev = expect(
        api.get(&format!("/v1/events/{ahead}"), &alice.token).await,
        StatusCode::OK,
        "alice opens the retreat",
    );
    let names: Vec<&str> = ev["attendees"]
        .as_array()
        .expect("attendees")
        .iter()
        .map(|a| s(&a["username"]))
        .collect();
    assert_eq!(names, ["alice", "carol"], "{ev}");
}

/// Reminders: each person sets their own (on creation, or later with
/// `PUT .../reminders`), sees only their own, and gets one `reminder`
/// notification when it is due, while a users replica is killed at that
/// moment (the other fires it; the transaction that fires it makes it
/// once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reminders_fire_once_each() {
    let (mut sys, api) = System::start_with_api().await;
    let People { alice, bob, carol } = accounts(&api).await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(12);
    let created = create_event(
        &api,
        &alice,
        json!({"title": "Standup", "start": soon.to_rfc3339(),
               "end": (soon + chrono::Duration::minutes(15)).to_rfc3339(),
               "time_zone": "UTC", "attendees": ["bob"], "reminders": [0, 10080]}),
    )
    .await;
    let id = event_id(&created);
    assert_eq!(
        created["event"]["reminders"],
        json!([0, 10080]),
        "{created}"
    );
    let path = format!("/v1/events/{id}/reminders");
    let bobs = expect_ok(
        api.put(&path, &bob.token, json!({"minutes_before": [0]}))
            .await,
        "bob sets his",
    );
    assert_eq!(bobs["reminders"], json!([0]), "his own only: {bobs}");
    let alices = expect_ok(
        api.get(&format!("/v1/events/{id}"), &alice.token).await,
        "alice reads",
    );
    assert_eq!(alices["reminders"], json!([0, 10080]), "{alices}");
    for (body, what) in [
        (json!({"minutes_before": [1, 2, 3, 4, 5, 6]}), "six"),
        (json!({"minutes_before": [40321]}), "too early"),
    ] {
        let err = expect(
            api.put(&path, &bob.token, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            what,
        );
        assert_eq!(
            err["error"]["details"]["field"], "reminders",
            "{what}: {err}"
        );
    }
    expect(
        api.put(&path, &carol.token, json!({"minutes_before": [0]}))
            .await,
        StatusCode::NOT_FOUND,
        "carol takes no part",
    );

    // A replica dies as the reminders come due; the other fires them.
    let wait = (soon - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait.saturating_sub(Duration::from_millis(500))).await;
    sys.kill_users(0);
    let reminders = |who: &P| {
        let (api, token) = (&api, who.token.clone());
        async move {
            let (st, body) = api.get("/v1/notifications", &token).await;
            assert_eq!(st, StatusCode::OK, "{body}");
            items(&body)
                .iter()
                .filter(|n| n["kind"] == "reminder")
                .cloned()
                .collect::<Vec<Value>>()
        }
    };
    for who in [&alice, &bob] {
        let got = wait_for(
            &format!("{}'s reminder", who.name),
            Duration::from_secs(30),
            || async { Some(reminders(who).await).filter(|r| !r.is_empty()) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let n = &got[0]["data"];
        assert_eq!(
            (&n["event_id"], &n["minutes_before"]),
            (&json!(id), &json!(0)),
            "{n}"
        );
        assert_eq!(
            instant(&n["start"]),
            instant(&json!(soon.to_rfc3339())),
            "{n}"
        );
    }
    // Once each: with nothing filed any more for the event (the week-ahead
    // one was already past when it was set), nothing more can fire.
    let db = sys.db.client();
    wait_for(
        "the event's reminders to be settled",
        Duration::from_secs(15),
        || async {
            let filed = db.get(format!("/agenda/event-reminders/{id}")).await.ok()?;
            filed.is_none().then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    for who in [&alice, &bob] {
        assert_eq!(reminders(who).await.len(), 1, "{}'s reminders", who.name);
    }
}

/// One occurrence of a series is opened, moved, cancelled on its own by
/// its occurrence id, and a series splits from an occurrence on
/// (`scope=following`), for organizer and attendee alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn occurrences_change_on_their_own() {
    let (_sys, api) = System::start_with_api().await;
    let People { alice, bob, .. } = accounts(&api).await;
    let mut body = utc_event("Weekly", "2030-10-07", "09:00", "10:00");
    body["rrule"] = json!("FREQ=WEEKLY;COUNT=4");
    let id = accepted_by_bob(&api, &alice, &bob, body).await;
    let month = range("2030-10-01T00:00:00Z", "2030-11-01T00:00:00Z");
    let listed = |who: &P| {
        let (api, month, token) = (&api, month.clone(), who.token.clone());
        async move {
            let (st, body) = api.get(&format!("/v1/events?{month}"), &token).await;
            assert_eq!(st, StatusCode::OK, "{body}");
            items(&body)
                .iter()
                .map(|e| {
                    (
                        s(&e["occurrence_id"]).to_string(),
                        fmt_time(instant(&e["start"])),
                        s(&e["title"]).to_string(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let occ = |date: &str| format!("{id}_{}T090000Z", date.replace('-', ""));
    let first = listed(&bob).await;
    assert_eq!(
        first.iter().map(|(o, _, _)| o.clone()).collect::<Vec<_>>(),
        ["2030-10-07", "2030-10-14", "2030-10-21", "2030-10-28"].map(occ),
        "each occurrence has its id"
    );
    let second = expect_ok(
        api.get(&format!("/v1/events/{}", occ("2030-10-14")), &bob.token)
            .await,
        "open one",
    );
    assert_eq!(
        instant(&second["start"]),
        instant(&json!(at("2030-10-14", "09:00")))
    );
    assert_eq!(second["recurring_event_id"], id.as_str());

    // Moved on its own: the others stay, bob is told.
    let moved = expect_ok(
        api.patch(
            &format!("/v1/events/{}", occ("2030-10-14")),
            &alice.token,
            json!({"start": at("2030-10-15", "15:00"), "end": at("2030-10-15", "16:00"), "title": "Moved once"}),
        )
        .await,
        "move one",
    );
    assert_eq!(
        moved["event"]["occurrence_id"],
        occ("2030-10-14").as_str(),
        "{moved}"
    );
    assert_eq!(
        instant(&moved["event"]["start"]),
        instant(&json!(at("2030-10-15", "15:00")))
    );
    notification(&api, &bob, "event_updated").await;
    // Cancelled on its own.
    expect(
        api.delete(&format!("/v1/events/{}", occ("2030-10-21")), &alice.token)
            .await,
        StatusCode::NO_CONTENT,
        "cancel one",
    );
    let now = listed(&bob).await;
    let want = [
        (occ("2030-10-07"), at("2030-10-07", "09:00"), "Weekly"),
        (occ("2030-10-14"), at("2030-10-15", "15:00"), "Moved once"),
        (occ("2030-10-28"), at("2030-10-28", "09:00"), "Weekly"),
    ]
    .map(|(o, t, title)| (o, fmt_time(instant(&json!(t))), title.to_string()));
    assert_eq!(now, want);
    expect(
        api.get(&format!("/v1/events/{}", occ("2030-10-21")), &bob.token)
            .await,
        StatusCode::NOT_FOUND,
        "a cancelled occurrence",
    );

    // This and following: the series splits at the last one.
    let split = expect_ok(
        api.patch(
            &format!("/v1/events/{}?scope=following", occ("2030-10-28")),
            &alice.token,
            json!({"title": "New format"}),
        )
        .await,
        "this and following",
    );
    let new_id = s(&split["event"]["id"]).to_string();
    assert_ne!(new_id, id, "a new series: {split}");
    let now = listed(&bob).await;
    assert_eq!(now.len(), 3, "{now:?}");
    assert_eq!(now[2].2, "New format");
    assert_eq!(now[2].0, format!("{new_id}_20301028T090000Z"));
    assert_eq!(now[1].2, "Moved once", "the part before keeps its change");
    // ... and the new one ends from its first on: the whole new series.
    expect(
        api.delete(
            &format!("/v1/events/{new_id}_20301028T090000Z?scope=following"),
            &alice.token,
        )
        .await,
        StatusCode::NO_CONTENT,
        "delete following",
    );
    expect(
        api.get(&format!("/v1/events/{new_id}"), &alice.token).await,
        StatusCode::NOT_FOUND,
        "gone",
    );
    assert_eq!(listed(&bob).await.len(), 2);

    expect(
        api.patch(
            &format!("/v1/events/{}", occ("2030-10-07")),
            &bob.token,
            json!({"title": "x"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "an attendee",
    );
    let err = expect(
        api.delete(
            &format!("/v1/events/{}?scope=all", occ("2030-10-07")),
            &alice.token,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a bad scope",
    );
    assert_eq!(err["error"]["details"]["field"], "scope", "{err}");
    expect(
        api.get(&format!("/v1/events/{id}_20301007T093000Z"), &alice.token)
            .await,
        StatusCode::NOT_FOUND,
        "no occurrence starts then",
    );
}

/// Notifications say what happened (an answer names who answered and
/// what), come in pages with a cursor, and can all be marked read at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_page_name_who_answered_and_are_all_marked_read() {
    let (_sys, api) = System::start_with_api().await;
    let People { alice, bob, .. } = accounts(&api).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = utc_event(&format!("Meeting {i}"), "2030-06-03", "09:00", "10:00");
        body["attendees"] = json!(["bob"]);
        ids.push(event_id(&create_event(&api, &alice, body).await));
    }
    // Pages of two, newest first, to the end, nothing twice.
    let mut seen = Vec::new();
    let mut next = String::new();
    for _ in 0..10 {
        let q = if next.is_empty() {
            "limit=2".to_string()
        } else {
            format!("limit=2&before={next}")
        };
        let page = expect_ok(
            api.get(&format!("/v1/notifications?{q}"), &bob.token).await,
            "a page",
        );
        assert!(items(&page).len() <= 2, "{page}");
        seen.extend(items(&page).iter().map(|n| s(&n["id"]).to_string()));
        match page["next"].as_str() {
            Some(n) => next = n.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");
    for bad in ["limit=0", "limit=201", "before=nope"] {
        expect_error(
            api.get(&format!("/v1/notifications?{bad}"), &bob.token)
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            bad,
        );
    }
    // An answer names who answered and what.
    expect_ok(
        api.post(
            &format!("/v1/events/{}/rsvp", ids[0]),
            &bob.token,
            json!({"status": "tentative"}),
        )
        .await,
        "bob answers",
    );
    let n = notification(&api, &alice, "rsvp").await;
    assert_eq!(n["data"]["by_username"], "bob", "{n}");
    assert_eq!(n["data"]["status"], "tentative", "{n}");
    assert_eq!(n["data"]["by"], bob.id.as_str(), "{n}");
    // All read at once.
    let marked = expect_ok(
        api.post("/v1/notifications/read-all", &bob.token, json!({}))
            .await,
        "read all",
    );
    assert_eq!(marked["marked"], 5, "{marked}");
    let unread = expect_ok(
        api.get("/v1/notifications?unread=true", &bob.token).await,
        "unread",
    );
    assert!(items(&unread).is_empty(), "{unread}");
    let again = expect_ok(
        api.post("/v1/notifications/read-all", &bob.token, json!({}))
            .await,
        "read all again",
    );
    assert_eq!(again["marked"], 0, "{again}");
}

async fn story(opts: SystemOptions) {
    let sys = System::start(opts)
        .await
        .unwrap_or_else(|e| panic!("start the system: {e:#}"));
    run_story(&sys.api()).await;
}

/// A backup restored into a new five-node cluster (every node of the old
/// one gone) keeps what people had, their sessions included (the token
/// keys come with it), and the whole story then holds on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_story_holds_on_a_system_restored_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agenda.snap");
    let five = SystemOptions {
        db_nodes: 5,
        ..SystemOptions::default()
    };
    let (dora_token, eve_token, id) = {
        let old = System::start(five.clone())
            .await
            .unwrap_or_else(|e| panic!("start the system: {e:#}"));
        let api = old.api();
        let (_, dora) = api.register("dora").await;
        let (_, eve) = api.register("eve").await;
        let mut body = utc_event("Before the backup", "2030-04-01", "09:00", "10:00");
        body["attendees"] = json!(["eve"]);
        let created = expect(
            api.post("/v1/events", &dora, body).await,
            StatusCode::CREATED,
            "dora's event",
        );
        let id = event_id(&created);
        expect_ok(
            api.post(
                &format!("/v1/events/{id}/rsvp"),
                &eve,
                json!({"status": "accepted"}),
            )
            .await,
            "eve accepts",
        );
        let saved = old
            .agendactl(&["snapshot", "save", file.to_str().expect("path")])
            .unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!("{saved}");
        (dora, eve, id)
        // `old` goes here: every node and its data dir with it.
    };
    let new = System::start(SystemOptions {
        restore_from: Some(file),
        ..five
    })
    .await
    .unwrap_or_else(|e| panic!("start the restored system: {e:#}"));
    let api = new.api();
    let ev = expect_ok(
        api.get(&format!("/v1/events/{id}"), &eve_token).await,
        "eve's session goes on",
    );
    assert_eq!(ev["title"], "Before the backup");
    assert_eq!(ev["my_status"], "accepted", "{ev}");
    let (st, _) = api.login("dora", PASSWORD).await;
    assert_eq!(st, StatusCode::OK, "dora signs in with her password");
    let (st, body) = api
        .get(&format!("/v1/events?{}", day("2030-04-01")), &dora_token)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        items(&body).iter().any(|e| e["id"] == id.as_str()),
        "{body}"
    );
    run_story(&api).await;
}

/// The story of three people, on the system `api` reaches.
async fn run_story(api: &Api) {
    let api = api.clone();
    let p = accounts(&api).await;
    let g = hierarchical_group(&api, &p).await;
    let f = flat_group(&api, &p).await;
    group_events(&api, &p, &g, &f).await;
    let e1 = personal_events_and_rsvp(&api, &p).await;
    conflicts(&api, &p).await;
    moving_events(&api, &p).await;
    recurrence_across_dst(&api, &p).await;
    free_busy(&api, &p).await;
    group_agenda(&api, &p, &g).await;
    notifications(&api, &p).await;
    membership_changes(&api, &p, &g).await;
    delete_event_notifies_attendees(&api, &p, &e1).await;
    deleting_an_account(&api, &p).await;
    assert!(
        api.server_errors().is_empty(),
        "5xx replies: {:#?}",
        api.server_errors()
    );
}

async fn accounts(api: &Api) -> People {
    // Alice registers by hand, with the optional fields.
    let user = expect(
        api.call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(&json!({
                "username": "alice",
                "email": "alice@example.com",
                "password": PASSWORD,
                "display_name": "Alice A.",
                "time_zone": "Europe/Madrid",
            })),
        )
        .await,
        StatusCode::CREATED,
        "register alice",
    );
    assert!(user["id"].as_str().is_some_and(|i| !i.is_empty()), "{user}");
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["display_name"], "Alice A.");
    assert_eq!(user["time_zone"], "Europe/Madrid");
    assert!(
        !user.to_string().contains(PASSWORD),
        "password echoed: {user}"
    );

    let login = expect(api.login("alice", PASSWORD).await, StatusCode::OK, "login");
    assert!(
        s(&login["token_type"]).eq_ignore_ascii_case("bearer"),
        "{login}"
    );
    assert!(
        login["expires_in"].as_i64().is_some_and(|t| t > 0),
        "{login}"
    );
    assert_eq!(login["user"]["id"], user["id"]);
    // Login by email works too.
    let by_email = expect(
        api.call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"email": "alice@example.com", "password": PASSWORD})),
        )
        .await,
        StatusCode::OK,
        "login by email",
    );
    assert_eq!(by_email["user"]["id"], user["id"]);

    let alice = P {
        name: "alice",
        id: s(&user["id"]).into(),
        token: s(&login["access_token"]).into(),
    };
    let (id, token) = api.register("bob").await;
    let bob = P {
        name: "bob",
        id,
        token,
    };
    let (id, token) = api.register("carol").await;
    let carol = P {
        name: "carol",
        id,
        token,
    };

    let me = expect(api.get("/v1/me", &alice.token).await, StatusCode::OK, "me");
    assert_eq!(me["id"], alice.id.as_str());
    assert_eq!(me["username"], "alice");
    assert_eq!(me["time_zone"], "Europe/Madrid");
    let me = expect(api.get("/v1/me", &bob.token).await, StatusCode::OK, "me");
    assert_eq!(me["id"], bob.id.as_str());
    assert_eq!(
        me["display_name"], "bob",
        "display_name defaults to username"
    );
    assert_eq!(me["time_zone"], "UTC", "time_zone defaults to UTC");

    let patched = expect(
        api.patch(
            "/v1/me",
            &alice.token,
            json!({"display_name": "Alice Liddell"}),
        )
        .await,
        StatusCode::OK,
        "PATCH /v1/me",
    );
    assert_eq!(patched["display_name"], "Alice Liddell");
    let me = expect(api.get("/v1/me", &alice.token).await, StatusCode::OK, "me");
    assert_eq!(me["display_name"], "Alice Liddell");
    assert_eq!(me["time_zone"], "Europe/Madrid", "PATCH kept other fields");

    // A new password needs the current one (a stolen token alone must
    // not take the account over); then it is the one that logs in, and
    // every token of before is refused (on a person of its own: the
    // story goes on with alice's token).
    let (_, pat) = api.register("pat").await;
    let new_pw = "a brand new passphrase";
    expect_error(
        api.patch("/v1/me", &pat, json!({"password": new_pw})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "password change without the current one",
    );
    expect_error(
        api.patch(
            "/v1/me",
            &pat,
            json!({"password": new_pw, "current_password": "not the password"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "password change with a wrong current one",
    );
    let mut token = pat;
    for (from, to) in [(PASSWORD, new_pw), (new_pw, PASSWORD)] {
        expect(
            api.patch(
                "/v1/me",
                &token,
                json!({"password": to, "current_password": from}),
            )
            .await,
            StatusCode::OK,
            "password change",
        );
        let (st, _) = api.get("/v1/me", &token).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "the token of before the change"
        );
        let (st, fresh) = api.login("pat", to).await;
        assert_eq!(st, StatusCode::OK, "{to}");
        assert_eq!(api.login("pat", from).await.0, StatusCode::UNAUTHORIZED);
        token = fresh["access_token"].as_str().expect("token").to_string();
    }

    let found = expect(
        api.get("/v1/users?q=car", &bob.token).await,
        StatusCode::OK,
        "search",
    );
    let names: Vec<&str> = items(&found).iter().map(|u| s(&u["username"])).collect();
    assert!(names.contains(&"carol"), "search q=car: {found}");
    assert!(
        !names.contains(&"alice") && !names.contains(&"bob"),
        "{found}"
    );
    let c = items(&found)
        .iter()
        .find(|u| u["username"] == "carol")
        .unwrap();
    assert_eq!(c["id"], carol.id.as_str());
    People { alice, bob, carol }
}

/// Alice's hierarchical group: bob at rank 1, carol at rank 2 (after a
/// declined first invitation).
async fn hierarchical_group(api: &Api, p: &People) -> String {
    let People { alice, bob, carol } = p;
    let g = expect(
        api.post(
            "/v1/groups",
            &alice.token,
            json!({"name": "Research", "description": "the lab", "kind": "hierarchical"}),
        )
        .await,
        StatusCode::CREATED,
        "create group",
    );
    assert_eq!(g["name"], "Research");
    assert_eq!(g["description"], "the lab");
    assert_eq!(g["kind"], "hierarchical");
    assert!(g["parent_id"].is_null(), "{g}");
    assert_eq!(g["my_rank"], 0, "the creator is the owner: {g}");
    let gid = s(&g["id"]).to_string();

    let inv_b = invite(api, alice, &gid, json!({"username": "bob", "rank": 1})).await;
    assert_eq!(inv_b["rank"], 1);
    assert_eq!(inv_b["group_name"], "Research");
    let inv_c1 = invite(api, alice, &gid, json!({"username": "carol", "rank": 2})).await;
    assert_eq!(inv_c1["rank"], 2);

    let list = expect(
        api.get("/v1/invitations", &bob.token).await,
        StatusCode::OK,
        "bob's invitations",
    );
    let mine = items(&list)
        .iter()
        .find(|i| i["id"] == inv_b["id"])
        .unwrap_or_else(|| panic!("bob's invitation missing: {list}"));
    assert_eq!(mine["status"], "pending");
    assert_eq!(mine["group_name"], "Research");

    expect_ok(
        api.post(
            &format!("/v1/invitations/{}/accept", s(&inv_b["id"])),
            &bob.token,
            json!({}),
        )
        .await,
        "bob accepts",
    );
    expect_ok(
        api.post(
            &format!("/v1/invitations/{}/decline", s(&inv_c1["id"])),
            &carol.token,
            json!({}),
        )
        .await,
        "carol declines",
    );
    assert_eq!(
        ranks(api, alice, &gid).await,
        pairs(&[("alice", 0), ("bob", 1)])
    );
    expect_error(
        api.get(&format!("/v1/groups/{gid}"), &carol.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "carol declined: the group is not hers to see",
    );
    // The answered invitations, if still listed, carry their new status.
    for (who, id, status) in [
        (bob, &inv_b["id"], "accepted"),
        (carol, &inv_c1["id"], "declined"),
    ] {
        let list = expect(
            api.get("/v1/invitations", &who.token).await,
            StatusCode::OK,
            "list",
        );
        if let Some(i) = items(&list).iter().find(|i| &i["id"] == id) {
            assert_eq!(i["status"], status, "{}'s invitation: {i}", who.name);
        }
    }

    // Invited again, carol accepts.
    let inv_c2 = invite(api, alice, &gid, json!({"username": "carol", "rank": 2})).await;
    assert_ne!(inv_c2["id"], inv_c1["id"]);
    expect_ok(
        api.post(
            &format!("/v1/invitations/{}/accept", s(&inv_c2["id"])),
            &carol.token,
            json!({}),
        )
        .await,
        "carol accepts",
    );
    assert_eq!(
        ranks(api, bob, &gid).await,
        pairs(&[("alice", 0), ("bob", 1), ("carol", 2)])
    );
    let seen = expect(
        api.get(&format!("/v1/groups/{gid}"), &carol.token).await,
        StatusCode::OK,
        "carol sees the group",
    );
    assert_eq!(seen["my_rank"], 2);
    let bobs = expect(
        api.get("/v1/groups", &bob.token).await,
        StatusCode::OK,
        "groups",
    );
    let entry = items(&bobs)
        .iter()
        .find(|x| x["id"] == gid.as_str())
        .unwrap_or_else(|| panic!("group missing from bob's list: {bobs}"));
    assert_eq!(entry["my_rank"], 1);
    gid
}

/// Alice's flat group: bob invites carol himself (any member may).
async fn flat_group(api: &Api, p: &People) -> String {
    let People { alice, bob, carol } = p;
    let f = expect(
        api.post(
            "/v1/groups",
            &alice.token,
            json!({"name": "Book club", "kind": "flat"}),
        )
        .await,
        StatusCode::CREATED,
        "create flat group",
    );
    assert_eq!(f["kind"], "flat");
    let fid = s(&f["id"]).to_string();
    let inv = invite(api, alice, &fid, json!({"username": "bob"})).await;
    expect_ok(
        api.post(
            &format!("/v1/invitations/{}/accept", s(&inv["id"])),
            &bob.token,
            json!({}),
        )
        .await,
        "bob joins the book club",
    );
    let inv = invite(api, bob, &fid, json!({"username": "carol"})).await;
    expect_ok(
        api.post(
            &format!("/v1/invitations/{}/accept", s(&inv["id"])),
            &carol.token,
            json!({}),
        )
        .await,
        "carol joins the book club",
    );
    assert_eq!(
        ranks(api, carol, &fid).await,
        pairs(&[("alice", 0), ("bob", 1), ("carol", 1)]),
        "a flat group gives every other member rank 1"
    );
    fid
}

/// 2030-09-02: group events are accepted at once for lower ranks only.
async fn group_events(api: &Api, p: &People, g: &str, f: &str) {
    let People { alice, bob, carol } = p;
    let d = "2030-09-02";
    let ev = |title: &str, from: &str, to: &str, group: &str| {
        let mut e = utc_event(title, d, from, to);
        e["group_id"] = json!(group);
        e
    };
    let ge1 = create_event(api, alice, ev("All hands", "10:00", "11:00", g)).await;
    assert_eq!(ge1["event"]["group_id"], g);
    let attendees: Vec<&str> = ge1["event"]["attendees"]
        .as_array()
        .expect("attendees")
        .iter()
        .map(|a| s(&a["username"]))
        .collect();
    assert!(
        attendees.contains(&"bob") && attendees.contains(&"carol"),
        "every member attends a group event: {ge1}"
    );
    let ge2 = create_event(api, bob, ev("Team sync", "12:00", "13:00", g)).await;
    let fe = create_event(api, bob, ev("Chapter 3", "14:00", "15:00", f)).await;
    let (ge1, ge2, fe) = (event_id(&ge1), event_id(&ge2), event_id(&fe));

    let want = [
        // By the owner: everyone below her accepts at once.
        (&ge1, alice, "accepted"),
        (&ge1, bob, "accepted"),
        (&ge1, carol, "accepted"),
        // By rank 1: carol (below) accepted, alice (above) must answer.
        (&ge2, alice, "needs_action"),
        (&ge2, bob, "accepted"),
        (&ge2, carol, "accepted"),
        // Flat: every other member must answer.
        (&fe, alice, "needs_action"),
        (&fe, bob, "accepted"),
        (&fe, carol, "needs_action"),
    ];
    for (id, who, status) in want {
        assert_eq!(
            my_status(api, who, d, id).await,
            status,
            "{}'s status for group event {id}",
            who.name
        );
    }
    expect_ok(
        api.post(
            &format!("/v1/events/{ge2}/rsvp"),
            &alice.token,
            json!({"status": "accepted"}),
        )
        .await,
        "alice accepts bob's group event",
    );
    assert_eq!(my_status(api, alice, d, &ge2).await, "accepted");

    // Told as much: "added" where the hierarchy accepted, "invited" where
    // an answer is expected.
    for (who, id, kind) in [
        (carol, &ge1, "event_added"),
        (carol, &ge2, "event_added"),
        (alice, &ge2, "event_invited"),
        (carol, &fe, "event_invited"),
    ] {
        let all = expect(
            api.get("/v1/notifications", &who.token).await,
            StatusCode::OK,
            "notifications",
        );
        let kinds: Vec<&str> = items(&all)
            .iter()
            .filter(|n| n["data"]["event_id"] == id.as_str())
            .map(|n| s(&n["kind"]))
            .collect();
        assert_eq!(kinds, [kind], "{}'s notifications of {id}: {all}", who.name);
    }
}

/// 2030-09-03: a personal event with attendees, RSVP, an update.
async fn personal_events_and_rsvp(api: &Api, p: &People) -> String {
    let People { alice, bob, carol } = p;
    let d = "2030-09-03";
    let created = create_event(
        api,
        alice,
        json!({"title": "Planning", "description": "Q4", "location": "Room 1",
               "start": at(d, "10:00"), "end": at(d, "11:00"), "time_zone": "UTC",
               "attendees": ["bob", "carol"]}),
    )
    .await;
    let e = &created["event"];
    assert_eq!(e["organizer_id"], alice.id.as_str());
    assert_eq!(e["title"], "Planning");
    assert_eq!(e["time_zone"], "UTC");
    assert_eq!(instant(&e["start"]), instant(&json!(at(d, "10:00"))));
    assert_eq!(e["my_status"], "accepted", "the organizer accepts: {e}");
    for a in e["attendees"].as_array().expect("attendees") {
        if a["username"] != "alice" {
            assert_eq!(a["status"], "needs_action", "{a}");
        }
    }
    let id = event_id(&created);

    // At once, no waiting: in each attendee's agenda, needs_action.
    assert_eq!(my_status(api, bob, d, &id).await, "needs_action");
    assert_eq!(my_status(api, carol, d, &id).await, "needs_action");
    let seen = expect(
        api.get(&format!("/v1/events/{id}"), &bob.token).await,
        StatusCode::OK,
        "an attendee sees the event",
    );
    assert_eq!(seen["title"], "Planning");

    expect_ok(
        api.post(
            &format!("/v1/events/{id}/rsvp"),
            &bob.token,
            json!({"status": "accepted"}),
        )
        .await,
        "bob accepts",
    );
    expect_ok(
        api.post(
            &format!("/v1/events/{id}/rsvp"),
            &carol.token,
            json!({"status": "tentative"}),
        )
        .await,
        "carol: tentative",
    );
    assert_eq!(my_status(api, bob, d, &id).await, "accepted");
    assert_eq!(my_status(api, carol, d, &id).await, "tentative");
    expect_ok(
        api.post(
            &format!("/v1/events/{id}/rsvp"),
            &carol.token,
            json!({"status": "declined"}),
        )
        .await,
        "carol declines",
    );
    let e = expect(
        api.get(&format!("/v1/events/{id}"), &alice.token).await,
        StatusCode::OK,
        "organizer reads",
    );
    let status_of = |name: &str| {
        e["attendees"]
            .as_array()
            .expect("attendees")
            .iter()
            .find(|a| a["username"] == name)
            .map(|a| s(&a["status"]).to_string())
            .unwrap_or_else(|| panic!("{name} not an attendee: {e}"))
    };
    assert_eq!(status_of("bob"), "accepted");
    assert_eq!(status_of("carol"), "declined");
    // A declined event may stay listed, but then as declined.
    if let Some(x) = agenda(api, carol, &day(d))
        .await
        .iter()
        .find(|x| x["id"] == id.as_str())
    {
        assert_eq!(x["my_status"], "declined");
    }

    // The organizer moves it to another room: attendees hear about it.
    expect_ok(
        api.patch(
            &format!("/v1/events/{id}"),
            &alice.token,
            json!({"location": "Room 2"}),
        )
        .await,
        "organizer updates",
    );
    let e = expect(
        api.get(&format!("/v1/events/{id}"), &bob.token).await,
        StatusCode::OK,
        "read after update",
    );
    assert_eq!(e["location"], "Room 2");
    assert_eq!(e["title"], "Planning", "PATCH keeps other fields");
    id
}

fn conflict_ids(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap_or_else(|| panic!("conflicts is not a list: {list}"))
        .iter()
        .map(|c| (s(&c["event_id"]).to_string(), s(&c["user_id"]).to_string()))
        .collect()
}

/// Whether `list` holds a conflict of `user` starting at `start` shown as
/// a busy block (no event id, no title).
fn busy_block(list: &Value, user: &str, start: &str) -> bool {
    list.as_array().is_some_and(|l| {
        l.iter().any(|c| {
            s(&c["user_id"]) == user
                && c["event_id"].is_null()
                && c["title"].is_null()
                && instant(&c["start"]) == instant(&json!(start))
        })
    })
}

/// 2030-09-04: overlaps are reported, or refused with `on_conflict=reject`.
async fn conflicts(api: &Api, p: &People) {
    let People { alice, bob, .. } = p;
    let d = "2030-09-04";
    let ev = |title: &str, from: &str, to: &str| utc_event(title, d, from, to);
    let dentist = create_event(api, bob, ev("Dentist", "10:00", "11:00")).await;
    assert_eq!(dentist["conflicts"], json!([]), "{dentist}");
    let dentist = event_id(&dentist);

    let gym = create_event(api, bob, ev("Gym", "10:30", "11:30")).await;
    assert_eq!(
        conflict_ids(&gym["conflicts"]),
        vec![(dentist.clone(), bob.id.clone())],
        "{gym}"
    );
    let c = &gym["conflicts"][0];
    assert_eq!(instant(&c["start"]), instant(&json!(at(d, "10:00"))), "{c}");
    assert_eq!(instant(&c["end"]), instant(&json!(at(d, "11:00"))), "{c}");
    let gym = event_id(&gym);

    // Alice invites bob over his dentist: the conflict is bob's, and alice
    // learns that he is busy, not with what (she does not take part).
    let mut sync = ev("Sync", "09:30", "10:15");
    sync["attendees"] = json!(["bob"]);
    let sync = create_event(api, alice, sync).await;
    assert!(
        busy_block(&sync["conflicts"], &bob.id, &at(d, "10:00")),
        "an attendee's conflict is reported to the organizer as a busy block: {sync}"
    );
    let sync = event_id(&sync);

    // Nor does a refusal (on_conflict=reject, nothing created) show
    // anything more, a private event least of all.
    let mut secret = ev("SECRET doctor", "14:00", "15:00");
    secret["visibility"] = json!("private");
    create_event(api, bob, secret).await;
    let mut probe = ev("Probe", "13:00", "16:00");
    probe["attendees"] = json!(["bob"]);
    let refused = expect_error(
        api.post("/v1/events?on_conflict=reject", &alice.token, probe)
            .await,
        StatusCode::CONFLICT,
        "conflict",
        "probing bob's agenda",
    );
    assert!(
        busy_block(&refused["conflicts"], &bob.id, &at(d, "14:00"))
            && !refused.to_string().contains("SECRET"),
        "a refusal lists bob's private event as a busy block only: {refused}"
    );

    let details = expect_error(
        api.post(
            "/v1/events?on_conflict=reject",
            &bob.token,
            ev("Overlap", "10:45", "11:15"),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
        "on_conflict=reject",
    );
    let ids: Vec<String> = conflict_ids(&details["conflicts"])
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert!(
        ids.contains(&dentist) && ids.contains(&gym) && !ids.contains(&sync),
        "409 lists exactly the overlapping events: {details}"
    );
    // No conflict, reject or not: created. Touching is not overlapping.
    for (title, from, to) in [("Lunch", "12:00", "13:00"), ("Call", "11:30", "12:00")] {
        let (st, body) = api
            .post(
                "/v1/events?on_conflict=reject",
                &bob.token,
                ev(title, from, to),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{title} {from}-{to}: {body}");
        assert_eq!(body["conflicts"], json!([]), "{body}");
    }
    let mut titles: Vec<String> = agenda(api, bob, &day(d))
        .await
        .iter()
        .map(|e| s(&e["title"]).to_string())
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        ["Call", "Dentist", "Gym", "Lunch", "SECRET doctor", "Sync"]
    );
}

/// Whether event `id` is in `who`'s agenda for `query`.
async fn lists(api: &Api, who: &P, query: &str, id: &str) -> bool {
    agenda(api, who, query).await.iter().any(|e| e["id"] == id)
}

/// Agendas are filed by time (one-off events under their start, long and
/// recurring ones apart): an event moved a month, made long, made
/// recurring or deleted is listed, conflicts and is found exactly where
/// it now is, for organizer and attendee alike.
async fn moving_events(api: &Api, p: &People) {
    let People { alice, bob, .. } = p;
    let (d1, d2) = ("2030-11-05", "2030-12-10");
    let mut body = utc_event("Review", d1, "09:00", "10:00");
    body["attendees"] = json!(["bob"]);
    let id = event_id(&create_event(api, alice, body).await);
    assert!(lists(api, alice, &day(d1), &id).await && lists(api, bob, &day(d1), &id).await);

    // Moved five weeks on: gone from the old day, there on the new one.
    let moved = expect(
        api.patch(
            &format!("/v1/events/{id}"),
            &alice.token,
            json!({"start": at(d2, "09:00"), "end": at(d2, "10:00")}),
        )
        .await,
        StatusCode::OK,
        "move the review",
    );
    assert_eq!(moved["conflicts"], json!([]), "{moved}");
    for who in [alice, bob] {
        assert!(
            !lists(api, who, &day(d1), &id).await,
            "{} still has it on {d1}",
            who.name
        );
        assert!(
            lists(api, who, &day(d2), &id).await,
            "{} misses it on {d2}",
            who.name
        );
    }
    expect(
        api.get(&format!("/v1/events/{id}"), &bob.token).await,
        StatusCode::OK,
        "the attendee reads the moved event",
    );
    // It conflicts where it is now, not where it was.
    let here = create_event(api, bob, utc_event("Here", d2, "09:30", "10:30")).await;
    assert!(
        conflict_ids(&here["conflicts"]).contains(&(id.clone(), bob.id.clone())),
        "{here}"
    );
    let there = create_event(api, bob, utc_event("There", d1, "09:30", "10:30")).await;
    assert_eq!(there["conflicts"], json!([]), "{there}");

    // Three days long, starting the day before: listed on each later day.
    let long = expect(
        api.patch(
            &format!("/v1/events/{id}"),
            &alice.token,
            json!({"start": at("2030-12-09", "12:00"), "end": at("2030-12-12", "12:00")}),
        )
        .await,
        StatusCode::OK,
        "make it long",
    );
    assert!(
        busy_block(&long["conflicts"], &bob.id, &at(d2, "09:30")),
        "bob's own event, as alice (its mover) may see it: {long}"
    );
    assert!(lists(api, bob, &day("2030-12-11"), &id).await);
    assert!(!lists(api, bob, &day("2030-12-13"), &id).await);

    // Weekly from 2030-12-09: listed weeks later, and found by its series.
    expect(
        api.patch(
            &format!("/v1/events/{id}"),
            &alice.token,
            json!({"start": at("2030-12-09", "08:00"), "end": at("2030-12-09", "09:00"),
                   "rrule": "FREQ=WEEKLY"}),
        )
        .await,
        StatusCode::OK,
        "make it weekly",
    );
    let later = agenda(api, bob, &day("2031-01-06")).await;
    assert!(
        later.iter().any(|e| e["recurring_event_id"] == id.as_str()),
        "weekly occurrence on 2031-01-06: {later:?}"
    );
    assert!(
        !lists(api, bob, &day("2030-12-11"), &id).await,
        "no longer three days long"
    );

    // Deleted: gone from every window and from reads by id.
    let (st, _) = api.delete(&format!("/v1/events/{id}"), &alice.token).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(!lists(api, bob, &day("2031-01-06"), &id).await);
    assert!(!lists(api, bob, &day(d2), &id).await);
    expect_error(
        api.get(&format!("/v1/events/{id}"), &bob.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "a deleted event",
    );
}

/// Madrid leaves summer time on Sunday 2030-10-27: a weekly Monday 09:00
/// meeting is 07:00 UTC before and 08:00 UTC after.
async fn recurrence_across_dst(api: &Api, p: &People) {
    let alice = &p.alice;
    let q = range("2030-10-01T00:00:00Z", "2030-11-30T00:00:00Z");
    let weekly = create_event(
        api,
        alice,
        json!({"title": "1:1", "start": "2030-10-14T09:00:00+02:00",
               "end": "2030-10-14T09:30:00+02:00", "time_zone": "Europe/Madrid",
               "rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=4"}),
    )
    .await;
    // The rule comes back as given, up to the order of its parts (the
    // contract does not ask for the exact text).
    let mut parts: Vec<&str> = s(&weekly["event"]["rrule"]).split(';').collect();
    parts.sort();
    assert_eq!(parts, ["BYDAY=MO", "COUNT=4", "FREQ=WEEKLY"], "{weekly}");
    let weekly = event_id(&weekly);
    let occurrences = |items: &[Value], id: &str| -> Vec<(String, i32)> {
        let mut v: Vec<(i64, i32, i64)> = items
            .iter()
            .filter(|e| e["recurring_event_id"] == id)
            .map(|e| {
                let (start, offset) =
                    parse_time(s(&e["start"])).unwrap_or_else(|| panic!("occurrence start: {e}"));
                (start, offset, instant(&e["end"]) - start)
            })
            .collect();
        v.sort();
        for (_, _, len) in &v {
            assert_eq!(*len, 30 * 60, "each occurrence lasts 30 min");
        }
        v.into_iter()
            .map(|(t, off, _)| (fmt_time(t), off))
            .collect()
    };
    let items = agenda(api, alice, &q).await;
    let got = occurrences(&items, &weekly);
    let utc: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        utc,
        [
            "2030-10-14T07:00:00Z",
            "2030-10-21T07:00:00Z",
            "2030-10-28T08:00:00Z",
            "2030-11-04T08:00:00Z",
        ],
        "09:00 Madrid across the DST change"
    );
    // If the server writes local offsets (not Z), they must be Madrid's.
    for ((t, off), want) in got.iter().zip([7200, 7200, 3600, 3600]) {
        assert!(*off == 0 || *off == want, "{t} written with offset {off}s");
    }

    let review = create_event(
        api,
        alice,
        json!({"title": "Review", "start": "2030-10-14T11:00:00+02:00",
               "end": "2030-10-14T11:30:00+02:00", "time_zone": "Europe/Madrid",
               "rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=4",
               "exdates": ["2030-10-28T11:00:00+01:00"]}),
    )
    .await;
    let review = event_id(&review);
    let items = agenda(api, alice, &q).await;
    let utc: Vec<String> = occurrences(&items, &review)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        utc,
        [
            "2030-10-14T09:00:00Z",
            "2030-10-21T09:00:00Z",
            "2030-11-04T10:00:00Z",
        ],
        "EXDATE removes the 28 October occurrence"
    );
}

/// 2030-09-05: free/busy shows merged intervals, never titles.
async fn free_busy(api: &Api, p: &People) {
    let People { alice, bob, carol } = p;
    let d = "2030-09-05";
    for (who, title, from, to) in [
        (alice, "fb-secret-1", "09:00", "10:00"),
        (alice, "fb-secret-2", "09:30", "11:00"),
        (alice, "fb-secret-3", "12:00", "13:00"),
        (bob, "fb-secret-4", "16:00", "17:00"),
    ] {
        create_event(api, who, utc_event(title, d, from, to)).await;
    }
    // An all-day event: dates in and out, in the agenda, and free time
    // (no conflict with bob's 16:00, nothing in his free/busy below).
    let holiday = create_event(
        api,
        bob,
        json!({"title": "fb-holiday", "start": d, "end": "2030-09-06",
               "time_zone": "UTC", "all_day": true}),
    )
    .await;
    let ev = &holiday["event"];
    assert_eq!(
        (&ev["all_day"], &ev["start_date"], &ev["end_date"]),
        (&json!(true), &json!(d), &json!("2030-09-06")),
        "{holiday}"
    );
    assert_eq!(
        instant(&ev["start"]),
        instant(&json!(at(d, "00:00"))),
        "{holiday}"
    );
    assert_eq!(
        holiday["conflicts"],
        json!([]),
        "all-day is free time: {holiday}"
    );
    let listed = agenda(api, bob, &day(d)).await;
    assert!(
        listed
            .iter()
            .any(|e| e["id"] == ev["id"] && e["all_day"] == true),
        "in bob's agenda as all-day: {listed:?}"
    );
    expect_error(
        api.post(
            "/v1/events",
            &bob.token,
            json!({"title": "x", "start": at(d, "00:00"), "end": "2030-09-06",
                   "time_zone": "UTC", "all_day": true}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "an all-day event with a time",
    );
    // Anyone logged in may ask, here carol about alice and bob.
    let body = expect(
        api.get(
            &format!("/v1/freebusy?users=alice,bob&{}", day(d)),
            &carol.token,
        )
        .await,
        StatusCode::OK,
        "free/busy",
    );
    assert!(
        !body.to_string().contains("fb-secret"),
        "titles leak: {body}"
    );
    let intervals = |name: &str| -> Vec<(String, String)> {
        body["users"][name]
            .as_array()
            .unwrap_or_else(|| panic!("no intervals for {name}: {body}"))
            .iter()
            .map(|i| {
                let keys: Vec<&String> = i.as_object().expect("interval").keys().collect();
                assert_eq!(keys, ["end", "start"], "busy intervals only: {i}");
                (fmt_time(instant(&i["start"])), fmt_time(instant(&i["end"])))
            })
            .collect()
    };
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (at(d, a), at(d, b))).collect()
    };
    assert_eq!(
        intervals("alice"),
        want(&[("09:00", "11:00"), ("12:00", "13:00")]),
        "merged and sorted"
    );
    assert_eq!(intervals("bob"), want(&[("16:00", "17:00")]));
}

/// 2030-09-06: the group agenda shows details only where the viewer may
/// see them.
async fn group_agenda(api: &Api, p: &People, g: &str) {
    let People { alice, bob, carol } = p;
    let d = "2030-09-06";
    let mut ids = Vec::new();
    for (who, title, from, to, extra) in [
        (alice, "ga-alice-own", "09:00", "10:00", json!({})),
        (bob, "ga-bob-own", "11:00", "12:00", json!({})),
        (carol, "ga-carol-own", "13:00", "14:00", json!({})),
        (
            carol,
            "ga-carol-private",
            "15:00",
            "16:00",
            json!({"visibility": "private"}),
        ),
        (alice, "ga-group", "17:00", "18:00", json!({"group_id": g})),
    ] {
        let mut body = utc_event(title, d, from, to);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        ids.push(event_id(&create_event(api, who, body).await));
    }
    // (owner, event index, from, to, viewers who see details)
    let rules: [(&P, usize, &str, &str, &[&str]); 5] = [
        // A superior's personal event: busy for those below.
        (alice, 0, "09:00", "10:00", &["alice"]),
        // Lower-ranked members' events: details for those above.
        (bob, 1, "11:00", "12:00", &["alice", "bob"]),
        (carol, 2, "13:00", "14:00", &["alice", "bob", "carol"]),
        // Private: busy even for superiors.
        (carol, 3, "15:00", "16:00", &["carol"]),
        // The group's own event: details for everyone.
        (alice, 4, "17:00", "18:00", &["alice", "bob", "carol"]),
    ];
    for viewer in [alice, bob, carol] {
        let body = expect(
            api.get(&format!("/v1/groups/{g}/agenda?{}", day(d)), &viewer.token)
                .await,
            StatusCode::OK,
            &format!("group agenda for {}", viewer.name),
        );
        let members = body["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{body}");
        for (owner, i, from, to, see) in rules {
            let member = members
                .iter()
                .find(|m| m["user_id"] == owner.id.as_str())
                .unwrap_or_else(|| panic!("{} missing: {body}", owner.name));
            assert_eq!(member["username"], owner.name);
            let item = member["items"]
                .as_array()
                .expect("items")
                .iter()
                .find(|x| {
                    instant(&x["start"]) == instant(&json!(at(d, from)))
                        && instant(&x["end"]) == instant(&json!(at(d, to)))
                })
                .unwrap_or_else(|| panic!("{}'s {from}-{to} missing: {member}", owner.name));
            let ctx = format!(
                "{} viewing {}'s {from}-{to}: {item}",
                viewer.name, owner.name
            );
            // One rule: what the agenda details, the event itself opens.
            let opened = api
                .get(&format!("/v1/events/{}", ids[i]), &viewer.token)
                .await;
            if see.contains(&viewer.name) {
                assert_eq!(
                    item["event"]["id"],
                    ids[i].as_str(),
                    "details expected: {ctx}"
                );
                let opened = expect(opened, StatusCode::OK, &format!("opening {ctx}"));
                assert_eq!(opened["id"], ids[i].as_str(), "{ctx}");
            } else {
                assert!(item["event"].is_null(), "busy block expected: {ctx}");
                expect(opened, StatusCode::NOT_FOUND, &format!("opening {ctx}"));
            }
        }
        let text = body.to_string();
        for (title, see) in [("ga-alice-own", "alice"), ("ga-carol-private", "carol")] {
            assert!(
                viewer.name == see || !text.contains(title),
                "{title} leaks to {}: {text}",
                viewer.name
            );
        }
    }
}

async fn notifications(api: &Api, p: &People) {
    let People { alice, bob, carol } = p;
    for (who, kind) in [
        (bob, "group_invitation"),
        (bob, "event_invited"),
        (bob, "event_updated"),
        (carol, "group_invitation"),
        (alice, "invitation_answered"),
        (alice, "rsvp"),
    ] {
        let n = notification(api, who, kind).await;
        assert!(n["id"].is_string(), "{n}");
        assert_eq!(n["read"], false, "{n}");
        assert!(n["data"].is_object(), "{n}");
        assert!(
            n["created_at"].as_str().and_then(parse_time).is_some(),
            "{n}"
        );
    }
    let all = expect(
        api.get("/v1/notifications", &bob.token).await,
        StatusCode::OK,
        "list",
    );
    let times: Vec<i64> = items(&all)
        .iter()
        .map(|n| instant(&n["created_at"]))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {all}"
    );

    let invited = notification(api, bob, "event_invited").await;
    let nid = s(&invited["id"]).to_string();
    expect_ok(
        api.post(
            &format!("/v1/notifications/{nid}/read"),
            &bob.token,
            json!({}),
        )
        .await,
        "mark read",
    );
    let all = expect(
        api.get("/v1/notifications", &bob.token).await,
        StatusCode::OK,
        "list",
    );
    let n = items(&all)
        .iter()
        .find(|n| n["id"] == nid.as_str())
        .expect("still listed");
    assert_eq!(n["read"], true, "{n}");
    let unread = expect(
        api.get("/v1/notifications?unread=true", &bob.token).await,
        StatusCode::OK,
        "unread",
    );
    assert!(
        items(&unread).iter().all(|n| n["read"] == false),
        "{unread}"
    );
    assert!(
        !items(&unread).iter().any(|n| n["id"] == nid.as_str()),
        "{unread}"
    );
    assert!(
        items(&unread)
            .iter()
            .any(|n| n["kind"] == "group_invitation"),
        "the other notifications stay unread: {unread}"
    );
}

async fn membership_changes(api: &Api, p: &People, g: &str) {
    let People { alice, bob, carol } = p;
    let member = |u: &P| format!("/v1/groups/{g}/members/{}", u.id);

    // A superior moves a member below them further down.
    expect_ok(
        api.patch(&member(carol), &bob.token, json!({"rank": 3}))
            .await,
        "bob changes carol's rank",
    );
    assert_eq!(
        ranks(api, alice, g).await,
        pairs(&[("alice", 0), ("bob", 1), ("carol", 3)])
    );
    notification(api, carol, "member_changed").await;

    // The owner cannot leave before handing over; only the owner deletes.
    expect_error(
        api.delete(&member(alice), &alice.token).await,
        StatusCode::CONFLICT,
        "conflict",
        "the owner leaves without handing over",
    );
    expect_error(
        api.delete(&format!("/v1/groups/{g}"), &bob.token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a non-owner deletes the group",
    );

    // Handover: bob becomes the owner, alice rank 1.
    expect_ok(
        api.patch(&member(bob), &alice.token, json!({"rank": 0}))
            .await,
        "owner hands over",
    );
    assert_eq!(
        ranks(api, carol, g).await,
        pairs(&[("alice", 1), ("bob", 0), ("carol", 3)])
    );
    for (who, rank) in [(bob, 0), (alice, 1)] {
        let grp = expect(
            api.get(&format!("/v1/groups/{g}"), &who.token).await,
            StatusCode::OK,
            "group",
        );
        assert_eq!(grp["my_rank"], rank, "{}: {grp}", who.name);
    }
    expect_error(
        api.delete(&format!("/v1/groups/{g}"), &alice.token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "the former owner deletes the group",
    );

    // The owner removes carol; alice leaves.
    expect_ok(api.delete(&member(carol), &bob.token).await, "remove carol");
    notification(api, carol, "member_removed").await;
    expect_error(
        api.get(&format!("/v1/groups/{g}"), &carol.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "a removed member",
    );
    expect_ok(
        api.delete(&member(alice), &alice.token).await,
        "alice leaves",
    );
    assert_eq!(ranks(api, bob, g).await, pairs(&[("bob", 0)]));
    let theirs = expect(
        api.get("/v1/groups", &alice.token).await,
        StatusCode::OK,
        "groups",
    );
    assert!(!items(&theirs).iter().any(|x| x["id"] == g), "{theirs}");

    expect_ok(
        api.delete(&format!("/v1/groups/{g}"), &bob.token).await,
        "the owner deletes the group",
    );
    expect_error(
        api.get(&format!("/v1/groups/{g}"), &bob.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "a deleted group",
    );
}

async fn delete_event_notifies_attendees(api: &Api, p: &People, id: &str) {
    let People { alice, bob, .. } = p;
    expect_error(
        api.delete(&format!("/v1/events/{id}"), &bob.token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "an attendee deletes the organizer's event",
    );
    expect_ok(
        api.delete(&format!("/v1/events/{id}"), &alice.token).await,
        "the organizer deletes",
    );
    for who in [alice, bob] {
        expect_error(
            api.get(&format!("/v1/events/{id}"), &who.token).await,
            StatusCode::NOT_FOUND,
            "not_found",
            "a deleted event",
        );
    }
    let left = agenda(api, bob, &day("2030-09-03")).await;
    assert!(
        !left.iter().any(|e| e["id"] == id),
        "still in bob's agenda: {left:?}"
    );
    let n = notification(api, bob, "event_cancelled").await;
    assert_eq!(n["read"], false);
}

/// Dave leaves for good: the event he organized is cancelled for alice,
/// alice's event goes on without him, his token and name stop working.
async fn deleting_an_account(api: &Api, p: &People) {
    let alice = &p.alice;
    let (dave_id, dave_token) = api.register("dave").await;
    let d = "2030-12-20";
    let mut his = utc_event("Dave's farewell", d, "16:00", "17:00");
    his["attendees"] = json!(["alice"]);
    let his = event_id(
        &create_event(
            api,
            &P {
                name: "dave",
                id: dave_id.clone(),
                token: dave_token.clone(),
            },
            his,
        )
        .await,
    );
    let mut hers = utc_event("Alice's review", d, "10:00", "11:00");
    hers["attendees"] = json!(["dave"]);
    let hers = event_id(&create_event(api, alice, hers).await);

    let (st, body) = api.delete("/v1/me", &dave_token).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");

    let day_items = agenda(api, alice, &day(d)).await;
    assert!(
        !day_items.iter().any(|e| e["id"] == his.as_str()),
        "the organizer's event is cancelled: {day_items:?}"
    );
    expect_error(
        api.get(&format!("/v1/events/{his}"), &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "a cancelled event",
    );
    let review = expect(
        api.get(&format!("/v1/events/{hers}"), &alice.token).await,
        StatusCode::OK,
        "alice's event",
    );
    assert!(
        !review["attendees"]
            .as_array()
            .expect("attendees")
            .iter()
            .any(|a| a["user_id"] == dave_id.as_str()),
        "dave is off the attendees: {review}"
    );
    for (kind, id) in [("event_cancelled", &his), ("attendee_left", &hers)] {
        let all = expect(
            api.get("/v1/notifications", &alice.token).await,
            StatusCode::OK,
            "list",
        );
        assert!(
            items(&all)
                .iter()
                .any(|n| n["kind"] == kind && n["data"]["event_id"] == id.as_str()),
            "alice is told {kind} for {id}: {all}"
        );
    }
    let (st, _) = api.get("/v1/me", &dave_token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a deleted account's token");
    let (st, _) = api.login("dave", PASSWORD).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a deleted account's login");
    api.register("dave").await;
}
