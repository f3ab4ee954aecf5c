//! Races through the gateway, which spreads requests over two replicas of
//! each service: one winner for a username, for a time slot with
//! `on_conflict=reject`, for an invitation answered both ways; and service
//! continues when one replica is killed with SIGKILL.
//! Run: `cargo test -p agenda-tests --test api_concurrency -- --test-threads=1`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_tests::cluster::wait_for;
use agenda_tests::system::{
    error_shape_problem, expect, expect_ok, fmt_time, instant, items, range, Api, Reply, System,
    PASSWORD,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

async fn start() -> (System, Api) {
    System::start_with_api().await
}

/// Runs `n` requests at once (each on its own client, released together
/// by a barrier); returns the replies in task order.
async fn race<F, Fut>(sys: &System, n: usize, f: F) -> Vec<Reply>
where
    F: Fn(usize, Api) -> Fut,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let mut set = JoinSet::new();
    for i in 0..n {
        let fut = f(i, Api::new(&sys.url()));
        let barrier = barrier.clone();
        set.spawn(async move {
            barrier.wait().await;
            (i, fut.await)
        });
    }
    let mut out: Vec<(usize, Reply)> = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("race task"));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Asserts exactly one reply with status `win` and every other a 409
/// `conflict`; returns the winner's index.
fn one_winner(what: &str, replies: &[Reply], win: impl Fn(StatusCode) -> bool) -> usize {
    let winners: Vec<usize> = (0..replies.len()).filter(|i| win(replies[*i].0)).collect();
    let summary: Vec<String> = replies.iter().map(|(s, b)| format!("{s} {b}")).collect();
    assert_eq!(
        winners.len(),
        1,
        "{what}: one winner expected: {summary:#?}"
    );
    for (i, (st, body)) in replies.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(*st, StatusCode::CONFLICT, "{what}: loser {i}: {body}");
            if let Some(p) = error_shape_problem(body, "conflict") {
                panic!("{what}: loser {i}: {p}: {body}");
            }
        }
    }
    winners[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_register_one_username() {
    let (sys, api) = start().await;
    // Case variants: usernames are unique case-insensitively. Emails differ,
    // so the username alone decides.
    let names = ["racer", "RACER", "Racer", "rAcEr"];
    let replies = race(&sys, 20, |i, api| async move {
        let body = json!({"username": names[i % names.len()],
                          "email": format!("racer{i}@example.com"), "password": PASSWORD});
        api.call(Method::POST, "/v1/auth/register", None, Some(&body))
            .await
    })
    .await;
    let w = one_winner("register", &replies, |s| s == StatusCode::CREATED);

    // The one account is the winner's, and only it can log in.
    let login = |email: String| {
        let api = api.clone();
        async move {
            api.call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(&json!({"email": email, "password": PASSWORD})),
            )
            .await
        }
    };
    let ok = expect(
        login(format!("racer{w}@example.com")).await,
        StatusCode::OK,
        "the winner logs in",
    );
    assert_eq!(ok["user"]["id"], replies[w].1["id"]);
    let loser = (w + 1) % 20;
    let (st, body) = login(format!("racer{loser}@example.com")).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a loser's account exists: {body}"
    );
    let token = ok["access_token"].as_str().expect("token");
    let found = expect(
        api.get("/v1/users?q=racer", token).await,
        StatusCode::OK,
        "search",
    );
    let n = items(&found)
        .iter()
        .filter(|u| {
            u["username"]
                .as_str()
                .unwrap_or_default()
                .eq_ignore_ascii_case("racer")
        })
        .count();
    assert_eq!(n, 1, "one racer account: {found}");
    assert!(api.server_errors().is_empty(), "{:#?}", api.server_errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_creates_race_for_one_slot() {
    let (sys, api) = start().await;
    let (_, x) = api.register("xavier").await;
    let (start, end) = ("2030-09-10T10:00:00Z", "2030-09-10T11:00:00Z");
    let replies = race(&sys, 16, |i, api| {
        let x = x.clone();
        async move {
            api.post(
                "/v1/events?on_conflict=reject",
                &x,
                json!({"title": format!("slot-{i}"), "start": start, "end": end,
                       "time_zone": "UTC"}),
            )
            .await
        }
    })
    .await;
    let w = one_winner("one slot", &replies, |s| s == StatusCode::CREATED);
    for (i, (st, body)) in replies.iter().enumerate() {
        if *st == StatusCode::CONFLICT {
            let list = body["error"]["details"]["conflicts"].as_array();
            assert!(
                list.is_some_and(|l| !l.is_empty()),
                "409 {i} lists the conflict: {body}"
            );
        }
    }
    let agenda = expect(
        api.get(
            &format!(
                "/v1/events?{}",
                range("2030-09-10T00:00:00Z", "2030-09-11T00:00:00Z")
            ),
            &x,
        )
        .await,
        StatusCode::OK,
        "agenda",
    );
    let titles: Vec<&Value> = items(&agenda).iter().map(|e| &e["title"]).collect();
    assert_eq!(
        titles,
        [&json!(format!("slot-{w}"))],
        "exactly the winner's event: {agenda}"
    );
    assert!(api.server_errors().is_empty(), "{:#?}", api.server_errors());
}

/// An `Idempotency-Key` makes a creation safe to repeat, even eight times
/// at once: one event, one invitation, the same event in every answer; the
/// key reused for another request is a 409, a malformed key a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_creation_repeated_with_its_idempotency_key_happens_once() {
    let (sys, api) = start().await;
    let (_, token) = api.register("repeater").await;
    let (_, guest) = api.register("guest").await;
    let body = json!({"title": "Once", "start": "2031-07-01T09:00:00Z",
                      "end": "2031-07-01T10:00:00Z", "time_zone": "UTC",
                      "attendees": ["guest"]});
    let create = |api: Api, key: &str, body: Value| {
        let req = api
            .request(Method::POST, "/v1/events")
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { api.try_send(req).await.expect("transport") }
    };
    let replies = race(&sys, 8, |_, api| create(api, "order-1", body.clone())).await;
    let ids: Vec<&Value> = replies.iter().map(|(_, b)| &b["event"]["id"]).collect();
    for (st, b) in &replies {
        assert_eq!(*st, StatusCode::CREATED, "{b}");
    }
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.is_string()),
        "one event in every answer: {ids:?}"
    );
    let later = create(api.clone(), "order-1", body.clone()).await;
    assert_eq!(later.0, StatusCode::CREATED, "{}", later.1);
    assert_eq!(&later.1["event"]["id"], ids[0], "a later repeat");
    // A repeat answers as the first request did, even with a rule that
    // would refuse a new creation now (the slot is taken by itself and,
    // since, by another event: that one is reported, not refused).
    let mut overlapping = body.clone();
    overlapping["title"] = json!("Overlap");
    overlapping["attendees"] = json!([]);
    let (st, b) = create(api.clone(), "order-overlap", overlapping).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let req = api
        .request(Method::POST, "/v1/events?on_conflict=reject")
        .bearer_auth(&token)
        .header("Idempotency-Key", "order-1")
        .json(&body);
    let (st, b) = api.try_send(req).await.expect("transport");
    assert_eq!(
        st,
        StatusCode::CREATED,
        "a repeat with on_conflict=reject: {b}"
    );
    assert_eq!(
        &b["event"]["id"], ids[0],
        "a repeat with on_conflict=reject"
    );
    assert_eq!(b["conflicts"].as_array().map(Vec::len), Some(1), "{b}");

    let day = range("2031-07-01T00:00:00Z", "2031-07-02T00:00:00Z");
    for t in [&token, &guest] {
        let agenda = expect(
            api.get(&format!("/v1/events?{day}"), t).await,
            StatusCode::OK,
            "agenda",
        );
        let once = items(&agenda)
            .iter()
            .filter(|e| e["title"] == "Once")
            .count();
        assert_eq!(once, 1, "one event: {agenda}");
    }
    let notes = expect(
        api.get("/v1/notifications", &guest).await,
        StatusCode::OK,
        "notifications",
    );
    let invited = items(&notes)
        .iter()
        .filter(|n| n["kind"] == "event_invited")
        .count();
    assert_eq!(invited, 1, "one invitation: {notes}");

    let mut other = body.clone();
    other["title"] = json!("Twice");
    let (st, b) = create(api.clone(), "order-1", other).await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "the key reused for another request: {b}"
    );
    let (st, b) = create(api.clone(), "two words", body.clone()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a malformed key: {b}");
    let (st, b) = create(api.clone(), "order-2", body).await;
    assert_eq!(st, StatusCode::CREATED, "another key: {b}");
    assert_ne!(&b["event"]["id"], ids[0], "another key, another event");
    assert!(api.server_errors().is_empty(), "{:#?}", api.server_errors());
}

/// The same answer to an event sent six times at once is one answer: the
/// organizer is told once (which is what lets the gateway retry answers);
/// a different answer is news again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_answer_repeated_is_one_answer() {
    let (sys, api) = start().await;
    let (_, host) = api.register("host").await;
    let (_, guest) = api.register("visitor").await;
    let created = expect(
        api.post(
            "/v1/events",
            &host,
            json!({"title": "Tea", "start": "2031-08-01T16:00:00Z",
                   "end": "2031-08-01T17:00:00Z", "time_zone": "UTC",
                   "attendees": ["visitor"]}),
        )
        .await,
        StatusCode::CREATED,
        "create",
    );
    let path = format!(
        "/v1/events/{}/rsvp",
        created["event"]["id"].as_str().expect("id")
    );
    let replies = race(&sys, 6, |_, api| {
        let (path, guest) = (path.clone(), guest.clone());
        async move { api.post(&path, &guest, json!({"status": "accepted"})).await }
    })
    .await;
    for (st, body) in &replies {
        assert_eq!(*st, StatusCode::OK, "{body}");
        assert_eq!(body["event"]["my_status"], "accepted", "{body}");
    }
    let told = |kind: &'static str| {
        let (api, host) = (api.clone(), host.clone());
        async move {
            let all = expect(
                api.get("/v1/notifications", &host).await,
                StatusCode::OK,
                "list",
            );
            items(&all).iter().filter(|n| n["kind"] == kind).count()
        }
    };
    assert_eq!(told("rsvp").await, 1, "one answer, one notification");
    expect(
        api.post(&path, &guest, json!({"status": "declined"})).await,
        StatusCode::OK,
        "another answer",
    );
    assert_eq!(told("rsvp").await, 2, "a changed answer is told");
    assert!(api.server_errors().is_empty(), "{:#?}", api.server_errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invitation_accepted_and_declined_at_once() {
    let (sys, api) = start().await;
    let (_, alice) = api.register("alice").await;
    // Three rounds, one invitee each, ten answers per round.
    for round in 0..3 {
        let name = format!("invitee{round}");
        let (user_id, token) = api.register(&name).await;
        let g = expect(
            api.post(
                "/v1/groups",
                &alice,
                json!({"name": format!("G{round}"), "kind": "hierarchical"}),
            )
            .await,
            StatusCode::CREATED,
            "group",
        )["id"]
            .as_str()
            .expect("group id")
            .to_string();
        let inv = expect_ok(
            api.post(
                &format!("/v1/groups/{g}/invitations"),
                &alice,
                json!({"username": name}),
            )
            .await,
            "invite",
        )["id"]
            .as_str()
            .expect("invitation id")
            .to_string();
        let answer = |i: usize| {
            if i.is_multiple_of(2) {
                "accept"
            } else {
                "decline"
            }
        };
        let replies = race(&sys, 10, |i, api| {
            let (token, inv) = (token.clone(), inv.clone());
            async move {
                api.post(
                    &format!("/v1/invitations/{inv}/{}", answer(i)),
                    &token,
                    json!({}),
                )
                .await
            }
        })
        .await;
        let w = one_winner(&format!("round {round}"), &replies, |s| s.is_success());
        let accepted = answer(w) == "accept";

        // Membership follows the winner, as seen by the owner and the invitee.
        let members = expect(
            api.get(&format!("/v1/groups/{g}/members"), &alice).await,
            StatusCode::OK,
            "members",
        );
        let is_member = items(&members)
            .iter()
            .any(|m| m["user_id"] == user_id.as_str());
        assert_eq!(
            is_member,
            accepted,
            "round {round}: winner {}: {members}",
            answer(w)
        );
        let (st, _) = api.get(&format!("/v1/groups/{g}"), &token).await;
        let want = if accepted {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(st, want, "round {round}: the invitee's view of the group");
        // The invitation, if still listed, carries the winner's answer.
        let list = expect(
            api.get("/v1/invitations", &token).await,
            StatusCode::OK,
            "list",
        );
        if let Some(i) = items(&list).iter().find(|i| i["id"] == inv.as_str()) {
            let status = if accepted { "accepted" } else { "declined" };
            assert_eq!(i["status"], status, "round {round}: {i}");
        }
        // And it stays answered.
        let (st, body) = api
            .post(&format!("/v1/invitations/{inv}/accept"), &token, json!({}))
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "answered twice: {body}");
    }
    assert!(api.server_errors().is_empty(), "{:#?}", api.server_errors());
}

/// One request of the users service (`GET /v1/me` or a new event) or of
/// the groups service (`GET /v1/groups` or a new group); status, and
/// `Retry-After` on a 503.
async fn probe(
    api: &Api,
    token: &str,
    service: &str,
    i: usize,
) -> Result<(StatusCode, bool), String> {
    let req = match (service, i % 2) {
        ("users", 0) => api.request(Method::GET, "/v1/me"),
        ("users", _) => {
            let t = instant(&json!("2031-01-01T00:00:00Z")) + 3600 * i as i64;
            api.request(Method::POST, "/v1/events").json(&json!({
                "title": format!("probe-{i}"), "start": fmt_time(t),
                "end": fmt_time(t + 1800), "time_zone": "UTC"}))
        }
        (_, 0) => api.request(Method::GET, "/v1/groups"),
        _ => api
            .request(Method::POST, "/v1/groups")
            .json(&json!({"name": format!("probe-{i}"), "kind": "flat"})),
    };
    let resp = req
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let retry_after = resp.headers().contains_key("retry-after");
    Ok((resp.status(), retry_after))
}

/// The titles in `token`'s agenda over `[from, to)`, sorted.
async fn titles_in(api: &Api, token: &str, from: &str, to: &str) -> Vec<String> {
    let agenda = expect(
        api.get(&format!("/v1/events?{}", range(from, to)), token)
            .await,
        StatusCode::OK,
        "agenda",
    );
    let mut titles: Vec<String> = items(&agenda)
        .iter()
        .filter_map(|e| e["title"].as_str().map(str::to_string))
        .collect();
    titles.sort_unstable();
    titles
}

/// After a SIGKILL of one replica, requests succeed again within a few
/// seconds and then keep succeeding; meanwhile failures are 503s, and none
/// at all for users, whose probes are all safe to retry. Returns
/// the titles of the events whose creation was acknowledged.
async fn survives_kill(sys: &mut System, api: &Api, token: &str, service: &str) -> Vec<String> {
    let mut acked = Vec::new();
    let mut ack = |n: usize| {
        if service == "users" && n % 2 == 1 {
            acked.push(format!("probe-{n}"));
        }
    };
    let mut n = 0;
    for _ in 0..20 {
        let (st, _) = probe(api, token, service, n)
            .await
            .expect("before the kill");
        assert!(st.is_success(), "{service} before the kill: {st}");
        ack(n);
        n += 1;
    }
    match service {
        "users" => sys.kill_users(0),
        _ => sys.kill_groups(0),
    }
    let killed = Instant::now();
    let deadline = Duration::from_secs(15);
    let mut streak = 0;
    let mut failures = Vec::new();
    // Bounded: at most 2,000 probes and the deadline.
    while streak < 20 {
        assert!(
            killed.elapsed() < deadline && n < 2000,
            "{service}: no 20 successes in a row {:?} after the kill ({n} probes); failures: {failures:?}\n{}",
            killed.elapsed(),
            sys.log_tail("gateway")
        );
        match probe(api, token, service, n).await {
            Ok((st, _)) if st.is_success() => {
                streak += 1;
                ack(n);
            }
            other => {
                streak = 0;
                failures.push((killed.elapsed(), other));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        n += 1;
    }
    eprintln!(
        "{service}: 20 successes in a row {:?} after the kill; {} failures before",
        killed.elapsed(),
        failures.len()
    );
    // The users probes are reads and keyed creations: the gateway retries
    // them on the other replica, so the kill costs no request at all.
    if service == "users" {
        assert!(
            failures.is_empty(),
            "users: requests failed although all are safe to retry: {failures:?}"
        );
    }
    // A failure while the gateway itself is up is a 503 with Retry-After
    // (DESIGN: "503 temporarily unavailable with Retry-After").
    for (at, f) in &failures {
        assert!(
            matches!(f, Ok((StatusCode::SERVICE_UNAVAILABLE, true))),
            "{service}: failure {at:?} after the kill is not a 503 with Retry-After: {f:?}"
        );
    }
    // And from now on, every request succeeds.
    for _ in 0..40 {
        let r = probe(api, token, service, n).await;
        assert!(
            matches!(r, Ok((st, _)) if st.is_success()),
            "{service}: request {n} after recovery: {r:?}"
        );
        ack(n);
        n += 1;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_survive_a_killed_replica() {
    let (mut sys, api) = start().await;
    let (_, token) = api.register("survivor").await;
    let acked = survives_kill(&mut sys, &api, &token, "users").await;
    survives_kill(&mut sys, &api, &token, "groups").await;
    // Nothing was lost or doubled: every acknowledged event is there, and
    // no event twice.
    let mut titles = titles_in(&api, &token, "2031-01-01T00:00:00Z", "2031-06-01T00:00:00Z").await;
    let total = titles.len();
    titles.dedup();
    assert_eq!(titles.len(), total, "duplicated events: {titles:?}");
    let lost: Vec<&String> = acked.iter().filter(|t| !titles.contains(t)).collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
}

/// Creations in flight when a users replica is killed are retried by the
/// gateway on the other one under the same key: none fails, none is lost,
/// none is doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creations_in_flight_survive_a_killed_replica() {
    let (mut sys, api) = start().await;
    let (_, token) = api.register("busy").await;
    let started = Arc::new(Barrier::new(5));
    let mut load = JoinSet::new();
    for worker in 0..4 {
        let (api, token, started) = (api.clone(), token.clone(), started.clone());
        load.spawn(async move {
            started.wait().await;
            let mut replies = Vec::new();
            // Bounded: 60 creations per worker.
            for n in 0..60 {
                let i = worker * 100 + n;
                let t = instant(&json!("2032-01-01T00:00:00Z")) + 3600 * i as i64;
                let body = json!({"title": format!("inflight-{i}"), "start": fmt_time(t),
                                  "end": fmt_time(t + 1800), "time_zone": "UTC"});
                replies.push((i, api.post("/v1/events", &token, body).await));
            }
            replies
        });
    }
    started.wait().await;
    // Let the creations get going, then kill a replica under them.
    wait_for("creations under way", Duration::from_secs(20), || async {
        let day = range("2032-01-01T00:00:00Z", "2032-02-01T00:00:00Z");
        let (st, body) = api.get(&format!("/v1/events?{day}"), &token).await;
        (st == StatusCode::OK && items(&body).len() >= 20).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    sys.kill_users(0);
    let mut titles = Vec::new();
    while let Some(replies) = load.join_next().await {
        for (i, (st, body)) in replies.expect("worker") {
            assert_eq!(st, StatusCode::CREATED, "creation {i}: {body}");
            titles.push(format!("inflight-{i}"));
        }
    }
    let seen = titles_in(&api, &token, "2032-01-01T00:00:00Z", "2032-02-01T00:00:00Z").await;
    titles.sort_unstable();
    assert_eq!(seen, titles, "each acknowledged creation exactly once");
}

/// A replica stopped with SIGTERM leaves the registry before it exits and
/// drains: clients see no failure at all, unlike a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_stopped_gracefully_costs_no_request() {
    // The load is one person's, as fast as the system answers: its 429s
    // are not what is tested.
    let mut sys = System::start_without_person_rate().await;
    let api = sys.api();
    let (_, token) = api.register("steady").await;
    let db = sys.db.client();
    let registered = |service: &'static str| {
        let db = db.clone();
        async move {
            db.get_prefix(format!("/registry/services/{service}/"))
                .await
                .expect("list the registry")
                .kvs
                .len()
        }
    };
    assert_eq!(registered("users").await, 2);
    assert_eq!(registered("groups").await, 2);

    // Clients keep calling both services while the replicas stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = JoinSet::new();
    for worker in 0..4 {
        let (api, token, stop) = (api.clone(), token.clone(), stop.clone());
        load.spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            // Bounded: the stop flag, and at most 5,000 requests.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                let service = if worker % 2 == 0 { "users" } else { "groups" };
                match probe(&api, &token, service, 1000 * worker + n).await {
                    Ok((st, _)) if st.is_success() => {}
                    other => failures.push(format!("{service} #{n}: {other:?}")),
                }
                n += 1;
            }
            (n, failures)
        });
    }
    for name in ["users-0", "groups-0"] {
        let status = tokio::task::block_in_place(|| sys.stop(name)).expect("running");
        assert!(
            status.success(),
            "{name} exit status after SIGTERM: {status}"
        );
    }
    // Deregistration happens before the exit, not by lease expiry.
    assert_eq!(registered("users").await, 1, "users-0 still registered");
    assert_eq!(registered("groups").await, 1, "groups-0 still registered");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    while let Some(r) = load.join_next().await {
        let (n, failures) = r.expect("load task");
        assert!(
            failures.is_empty(),
            "requests failed during a graceful stop: {failures:?}"
        );
        total += n;
    }
    assert!(
        total > 20,
        "too little load to prove anything: {total} requests"
    );
}
