//! Data written by an earlier version (agenda copies keyed by event id, no
//! event record) is moved to today's layout when `agenda-users` starts:
//! nothing a person had disappears after an upgrade.

use std::time::Duration;

use agenda_calendar::store::upgrade::LAYOUT;
use agenda_proto::db::{DeleteRequest, PutRequest};
use agenda_tests::cluster::wait_for;
use agenda_tests::system::{expect, expect_ok, items, range, System};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Writes `value` at `key` as an earlier version would have.
async fn put(db: &agenda_common::DbClient, key: String, value: &Value) {
    db.put(PutRequest {
        key: key.into_bytes(),
        value: serde_json::to_vec(value).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("write an old key: {e:#}"));
}

/// The keys under `prefix`.
async fn keys_under(db: &agenda_common::DbClient, prefix: String) -> Vec<String> {
    db.get_prefix(prefix.into_bytes())
        .await
        .expect("read the keys")
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// The keys of `user`'s copies of series and long events (under `r/`).
async fn series_copies(db: &agenda_common::DbClient, user: impl std::fmt::Display) -> Vec<String> {
    keys_under(db, format!("/agenda/agenda/{user}/r/")).await
}

/// The keys of `group`'s event index.
async fn group_index(db: &agenda_common::DbClient, group: impl std::fmt::Display) -> Vec<String> {
    keys_under(db, format!("/agenda/group-events/{group}/")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn events_of_the_old_layout_survive_an_upgrade() {
    let mut sys = System::start_single().await;
    let api = sys.api();
    let (alice, alice_token) = api.register("alice").await;
    let (bob, bob_token) = api.register("bob").await;

    // The old version's data: a copy per participant, no record, no marker.
    assert!(sys.stop("users-0").is_some(), "stop users-0");
    let db = sys.db.client();
    let id = uuid::Uuid::new_v4().to_string();
    let event = json!({
        "id": id, "title": "Old planning", "description": "", "location": "",
        "start": "2031-03-03T09:00:00Z", "end": "2031-03-03T10:00:00Z",
        "time_zone": "UTC", "rrule": null, "exdates": [],
        "organizer_id": alice, "group_id": null, "visibility": "default",
        "attendees": [
            {"user_id": alice, "username": "alice", "status": "accepted"},
            {"user_id": bob, "username": "bob", "status": "needs_action"}
        ],
        "created_at": "2026-01-01T00:00:00Z"
    });
    for user in [&alice, &bob] {
        put(&db, format!("/agenda/agenda/{user}/{id}"), &event).await;
    }
    // A group event of layout 2: a record, not yet in its group's index.
    let (group, group_event) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut record = event.clone();
    record["id"] = json!(group_event);
    record["group_id"] = json!(group);
    put(&db, format!("/agenda/events/{group_event}"), &record).await;
    db.delete(DeleteRequest {
        key: b"/agenda/layout".to_vec(),
        ..Default::default()
    })
    .await
    .expect("drop the layout marker");

    // The new version starts: the event is where people look for it.
    sys.start_users("users-upgraded")
        .expect("start agenda-users");
    let day = range("2031-03-03T00:00:00Z", "2031-03-04T00:00:00Z");
    for token in [&alice_token, &bob_token] {
        wait_for(
            "the old event in the day's agenda",
            Duration::from_secs(30),
            || async {
                let (st, body) = api.get(&format!("/v1/events?{day}"), token).await;
                (st == StatusCode::OK && items(&body).iter().any(|e| e["id"] == id.as_str()))
                    .then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", sys.log_tail("users-upgraded")));
    }
    let ev = expect(
        api.get(&format!("/v1/events/{id}"), &bob_token).await,
        StatusCode::OK,
        "the attendee reads the old event by id",
    );
    assert_eq!(ev["title"], "Old planning");
    expect(
        api.post(
            &format!("/v1/events/{id}/rsvp"),
            &bob_token,
            json!({"status": "accepted"}),
        )
        .await,
        StatusCode::OK,
        "the attendee answers the old event",
    );
    let indexed = group_index(&db, group).await;
    assert!(
        indexed.len() == 1
            && indexed[0].contains("/t")
            && indexed[0].ends_with(&group_event.to_string()),
        "the group event is in its group's index, filed by its end: {indexed:?}"
    );
    // No copy is left under the old keys.
    for user in [&alice, &bob] {
        let old = db
            .get(format!("/agenda/agenda/{user}/{id}").into_bytes())
            .await
            .expect("read");
        assert!(old.is_none(), "old copy of {user} still there");
    }
}

/// Layout 3 filed every recurring or long event's copy under `r/` by id
/// alone, and every window read all of them, a series that ended years
/// ago too (docs/GROWTH.md, Found 1). Layout 4 files them by when they
/// end: after an upgrade an ended series is still in its own weeks and
/// no longer read by later ones.
#[tokio::test(flavor = "multi_thread")]
async fn series_of_layout_3_are_filed_by_their_end() {
    let mut sys = System::start_single().await;
    let api = sys.api();
    let (alice, token) = api.register("alice").await;
    assert!(sys.stop("users-0").is_some(), "stop users-0");
    let db = sys.db.client();
    let series = |id: &str, title: &str, rrule: &str| {
        json!({
            "id": id, "title": title, "description": "", "location": "",
            "start": "2019-01-07T09:00:00Z", "end": "2019-01-07T10:00:00Z",
            "time_zone": "UTC", "rrule": rrule, "exdates": [],
            "organizer_id": alice, "group_id": null, "visibility": "default",
            "attendees": [{"user_id": alice, "username": "alice", "status": "accepted"}],
            "created_at": "2019-01-01T00:00:00Z"
        })
    };
    let ended = uuid::Uuid::new_v4().to_string();
    let open = uuid::Uuid::new_v4().to_string();
    for (id, ev) in [
        (
            &ended,
            series(&ended, "Ended weekly", "FREQ=WEEKLY;COUNT=3"),
        ),
        (&open, series(&open, "Open weekly", "FREQ=WEEKLY")),
    ] {
        for key in [
            format!("/agenda/events/{id}"),
            format!("/agenda/agenda/{alice}/r/{id}"),
        ] {
            put(&db, key, &ev).await;
        }
    }
    put(&db, "/agenda/layout".into(), &json!(3)).await;

    sys.start_users("users-upgraded")
        .expect("start agenda-users");
    let week = |from: &str, to: &str| format!("/v1/events?{}", range(from, to));
    let titles = |body: &Value| -> Vec<String> {
        items(body)
            .iter()
            .map(|e| e["title"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let second = week("2019-01-14T00:00:00Z", "2019-01-21T00:00:00Z");
    wait_for("the upgraded agenda", Duration::from_secs(30), || async {
        let (st, body) = api.get(&second, &token).await;
        (st == StatusCode::OK && titles(&body).len() == 2).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sys.log_tail("users-upgraded")));
    let later = expect(
        api.get(
            &week("2031-03-10T00:00:00Z", "2031-03-17T00:00:00Z"),
            &token,
        )
        .await,
        StatusCode::OK,
        "a week of 2031",
    );
    assert_eq!(titles(&later), ["Open weekly"]);
    // Where the copies are now: the ended series by its end, the open one
    // last; none under r/ by id.
    let copies = series_copies(&sys.db.client(), alice).await;
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(
        copies
            .iter()
            .any(|k| k.contains("/r/t") && k.ends_with(ended.as_str())),
        "{copies:?}"
    );
    assert!(
        copies.iter().any(|k| k.ends_with(&format!("/r/~/{open}"))),
        "{copies:?}"
    );
    // A change refiles: the open series, ended now, leaves 2031.
    expect(
        api.patch(
            &format!("/v1/events/{open}"),
            &token,
            json!({"rrule": "FREQ=WEEKLY;UNTIL=20190301T090000Z"}),
        )
        .await,
        StatusCode::OK,
        "end the open series",
    );
    let later = expect(
        api.get(
            &week("2031-03-10T00:00:00Z", "2031-03-17T00:00:00Z"),
            &token,
        )
        .await,
        StatusCode::OK,
        "a week of 2031",
    );
    assert!(titles(&later).is_empty(), "{:?}", titles(&later));
    let (_, body) = api.get(&second, &token).await;
    assert_eq!(titles(&body).len(), 2, "both still in their own week");
}

/// During a rolling upgrade a replica of the previous version still
/// serves and files a series' copy under `r/` by id, where no reader of
/// layout 4 looks, after the data was already upgraded. The next
/// `agenda-users` to start refiles it from the event's record (which a
/// newer replica may have changed since), and drops a copy whose event is
/// gone.
#[tokio::test(flavor = "multi_thread")]
async fn copies_an_older_replica_writes_after_the_upgrade_are_refiled() {
    let mut sys = System::start_single().await;
    let api = sys.api();
    let (alice, token) = api.register("alice").await;
    let db = sys.db.client();
    let series = |id: &str, title: &str| {
        json!({
            "id": id, "title": title, "description": "", "location": "",
            "start": "2027-03-01T09:00:00Z", "end": "2027-03-01T10:00:00Z",
            "time_zone": "UTC", "rrule": "FREQ=WEEKLY;COUNT=4", "exdates": [],
            "organizer_id": alice, "group_id": null, "visibility": "default",
            "attendees": [{"user_id": alice, "username": "alice", "status": "accepted"}],
            "created_at": "2027-01-01T00:00:00Z"
        })
    };
    let week = format!(
        "/v1/events?{}",
        range("2027-03-08T00:00:00Z", "2027-03-15T00:00:00Z")
    );
    let titles = |body: &Value| -> Vec<String> {
        items(body)
            .iter()
            .map(|e| e["title"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // The running replica has brought the (empty) store to the layout.
    let layout = db
        .get(b"/agenda/layout".to_vec())
        .await
        .expect("read the layout")
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    assert_eq!(layout, Some(LAYOUT.to_string()));
    // What the old replica wrote: a series whose record a newer replica
    // renamed since, and the copy of an event deleted since.
    let (kept, gone) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    put(
        &db,
        format!("/agenda/events/{kept}"),
        &series(&kept, "Renamed"),
    )
    .await;
    put(
        &db,
        format!("/agenda/agenda/{alice}/r/{kept}"),
        &series(&kept, "Old name"),
    )
    .await;
    put(
        &db,
        format!("/agenda/agenda/{alice}/r/{gone}"),
        &series(&gone, "Deleted"),
    )
    .await;
    let (st, body) = api.get(&week, &token).await;
    assert_eq!(st, StatusCode::OK);
    assert!(titles(&body).is_empty(), "not seen before: {body}");

    assert!(sys.stop("users-0").is_some(), "stop users-0");
    sys.start_users("users-next").expect("start agenda-users");
    wait_for("the refiled series", Duration::from_secs(30), || async {
        let (st, body) = api.get(&week, &token).await;
        (st == StatusCode::OK && !titles(&body).is_empty()).then_some(titles(&body))
    })
    .await
    .map(|seen| assert_eq!(seen, ["Renamed"], "the record's version, once"))
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sys.log_tail("users-next")));
    let left = series_copies(&db, alice).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains("/r/t") && left[0].ends_with(&kept),
        "{left:?}"
    );
}

/// Layout 5 files a group's event index by when each event ends, so a
/// join reads only the events ahead (docs/GROWTH.md Found 5). The upgrade
/// from layout 4 refiles the entries kept by id from their events'
/// records (one whose event is gone just goes), and an entry by id that a
/// replica of layout 4 writes afterwards is still read by a join.
#[tokio::test(flavor = "multi_thread")]
async fn group_index_of_layout_4_is_filed_by_end() {
    let mut sys = System::start_single().await;
    let api = sys.api();
    let (alice, alice_token) = api.register("alice").await;
    let (_, bob_token) = api.register("bob").await;
    let (_, carol_token) = api.register("carol").await;
    let group = api.create_group(&alice_token, "Lab", "flat").await;
    let mut ids = Vec::new();
    for (title, start, end) in [
        ("Planning", "2031-03-03T09:00:00Z", "2031-03-03T10:00:00Z"),
        ("Kickoff", "2020-01-06T09:00:00Z", "2020-01-06T10:00:00Z"),
    ] {
        let body = json!({"title": title, "start": start, "end": end,
                          "time_zone": "UTC", "group_id": group});
        let ev = expect(
            api.post("/v1/events", &alice_token, body).await,
            StatusCode::CREATED,
            "a group event",
        );
        ids.push(ev["event"]["id"].as_str().expect("event id").to_string());
    }
    let db = sys.db.client();
    assert_eq!(group_index(&db, &group).await.len(), 2);

    // As layout 4 kept the index: by id alone (and one whose event is gone).
    assert!(sys.stop("users-0").is_some(), "stop users-0");
    for key in group_index(&db, &group).await {
        db.delete(DeleteRequest {
            key: key.into_bytes(),
            ..Default::default()
        })
        .await
        .expect("drop a filed entry");
    }
    let gone = uuid::Uuid::new_v4().to_string();
    for id in ids.iter().chain([&gone]) {
        put(
            &db,
            format!("/agenda/group-events/{group}/{id}"),
            &json!(""),
        )
        .await;
    }
    put(&db, "/agenda/layout".into(), &json!(4)).await;

    sys.start_users("users-upgraded")
        .expect("start agenda-users");
    wait_for("the current layout", Duration::from_secs(30), || async {
        let kv = db.get(b"/agenda/layout".to_vec()).await.ok()??;
        (kv.value == LAYOUT.to_string().as_bytes()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sys.log_tail("users-upgraded")));
    let index = group_index(&db, &group).await;
    assert_eq!(index.len(), 2, "{index:?}");
    for id in &ids {
        assert!(
            index
                .iter()
                .any(|k| k.contains("/t") && k.ends_with(id.as_str())),
            "{id} filed by its end: {index:?}"
        );
    }

    // Written by a replica of layout 4 after the upgrade: a group event
    // indexed by id alone.
    let late = uuid::Uuid::new_v4().to_string();
    let record = json!({
        "id": late, "title": "Late review", "description": "", "location": "",
        "start": "2031-03-03T14:00:00Z", "end": "2031-03-03T15:00:00Z",
        "time_zone": "UTC", "rrule": null, "exdates": [],
        "organizer_id": alice, "group_id": group, "visibility": "default",
        "attendees": [{"user_id": alice, "username": "alice", "status": "accepted"}],
        "created_at": "2026-01-01T00:00:00Z"
    });
    put(&db, format!("/agenda/events/{late}"), &record).await;
    put(
        &db,
        format!("/agenda/group-events/{group}/{late}"),
        &json!(""),
    )
    .await;

    // Those who join are added to the events ahead, whichever way they
    // are indexed, and not to the one that is over.
    let titles = |body: &Value| -> Vec<String> {
        let mut t: Vec<String> = items(body)
            .iter()
            .map(|e| e["title"].as_str().unwrap_or_default().to_string())
            .collect();
        t.sort();
        t
    };
    let day = format!(
        "/v1/events?{}",
        range("2031-03-03T00:00:00Z", "2031-03-04T00:00:00Z")
    );
    let old_day = format!(
        "/v1/events?{}",
        range("2020-01-06T00:00:00Z", "2020-01-07T00:00:00Z")
    );
    for (name, token) in [("bob", &bob_token), ("carol", &carol_token)] {
        let inv = api.invite(&alice_token, &group, name, 1).await;
        expect_ok(api.accept(token, &inv).await, "join the group");
        wait_for("the events ahead", Duration::from_secs(30), || async {
            let (st, body) = api.get(&day, token).await;
            (st == StatusCode::OK && titles(&body) == ["Late review", "Planning"]).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", sys.log_tail("users-upgraded")));
        let over = expect(
            api.get(&old_day, token).await,
            StatusCode::OK,
            "the day over",
        );
        assert!(titles(&over).is_empty(), "{name}: {over}");
    }
}
