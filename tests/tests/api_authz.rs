//! The authorization matrix, route by route, against the real system: for
//! every operation of the live `/openapi.json`, what the owner, a member,
//! a member of a lower rank, an outsider, an anonymous caller and a
//! deleted account get. A route without a row here fails the test (and so
//! does a row for a route that no longer exists), so a new route cannot
//! ship without its permissions being written down and checked.
//! Run: `cargo test -p agenda-tests --test api_authz -- --test-threads=1`.

use std::collections::BTreeSet;

use agenda_tests::system::{expect, expect_ok, Api, System, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Owns the group (rank 0) and organizes the event.
    Owner,
    /// Rank 1 in the group, an attendee of the event.
    Member,
    /// Rank 2 in the group, not an attendee.
    Lower,
    /// In nothing of the others'.
    Outsider,
    /// No token.
    Anonymous,
    /// A token of an account deleted since.
    Deleted,
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::Deleted,
    Who::Outsider,
    Who::Lower,
    Who::Member,
    Who::Owner,
];

/// The fixture: people, their tokens, and the things they share.
struct World {
    tokens: Vec<(Who, String)>,
    ids: Vec<(Who, String)>,
    group: String,
    event: String,
    /// Per caller: an invitation to them, pending (accept and decline).
    invitation_for: Vec<(Who, String)>,
    /// A pending invitation of the group (for the revoke route).
    pending: String,
    /// A notification of each caller's own.
    notification_of: Vec<(Who, String)>,
    /// Things the owner may destroy, one per destructive route.
    spare_group: String,
    spare_event: String,
}

impl World {
    fn token(&self, who: Who) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(w, _)| *w == who)
            .map(|(_, t)| t.as_str())
    }
    fn id(&self, who: Who) -> &str {
        &self.ids.iter().find(|(w, _)| *w == who).expect("id").1
    }
    fn of(list: &[(Who, String)], who: Who) -> &str {
        list.iter()
            .find(|(w, _)| *w == who)
            .map_or("7b0e6c4e-3f6a-4c1e-9d55-2d2f6a0c9e41", |(_, v)| v.as_str())
    }
}

/// One cell: the path to call (ids filled in), the body, what is allowed.
struct Cell {
    path: String,
    body: Option<Value>,
    want: &'static [u16],
}

const OK: &[u16] = &[200];
const CREATED: &[u16] = &[201];
const GONE: &[u16] = &[204];
const UNAUTH: &[u16] = &[401];
const HIDDEN: &[u16] = &[404];
const FORBIDDEN: &[u16] = &[403];

/// The matrix. None: no row (the test fails naming the route).
fn row(w: &World, method: &Method, route: &str, who: Who) -> Option<Cell> {
    use Who::*;
    let signed_in = !matches!(who, Anonymous | Deleted);
    // Most routes: any signed-in person, else 401.
    let open = |ok: &'static [u16]| if signed_in { ok } else { UNAUTH };
    let g = &w.group;
    let e = &w.event;
    let name = format!("{who:?}").to_lowercase();
    let cell =
        |path: String, body: Option<Value>, want: &'static [u16]| Some(Cell { path, body, want });
    match (method.as_str(), route) {
        // Public: the token does not matter.
        ("POST", "/v1/auth/register") => cell(
            route.into(),
            Some(
                json!({"username": format!("new{name}"), "email": format!("new{name}@example.com"), "password": PASSWORD}),
            ),
            CREATED,
        ),
        ("POST", "/v1/auth/login") => cell(
            route.into(),
            Some(json!({"username": "owner", "password": PASSWORD})),
            OK,
        ),
        ("POST", "/v1/auth/refresh") => cell(
            route.into(),
            Some(json!({"refresh_token": "not-a-refresh-token"})),
            UNAUTH,
        ),
        // A refresh token of nobody's: 422 for the signed in, 401 else.
        ("POST", "/v1/auth/logout") => cell(
            route.into(),
            Some(json!({"refresh_token": "nobody.s"})),
            open(&[422]),
        ),
        ("GET", "/v1/me") => cell(route.into(), None, open(OK)),
        ("PATCH", "/v1/me") => cell(
            route.into(),
            Some(json!({"display_name": "Renamed"})),
            open(OK),
        ),
        // Destroys the caller: only anonymous and deleted are tried here
        // (the deleted account's deletion is the fixture's).
        ("DELETE", "/v1/me") => match who {
            Anonymous | Deleted => cell(route.into(), None, UNAUTH),
            _ => None,
        },
        ("GET", "/v1/users") => cell("/v1/users?q=a".into(), None, open(OK)),
        ("POST", "/v1/groups") => cell(
            route.into(),
            Some(json!({"name": "G", "kind": "flat"})),
            open(CREATED),
        ),
        ("GET", "/v1/groups") => cell(route.into(), None, open(OK)),
        ("GET", "/v1/groups/{id}") => cell(format!("/v1/groups/{g}"), None, in_group(who, OK, OK)),
        ("PATCH", "/v1/groups/{id}") => cell(
            format!("/v1/groups/{g}"),
            Some(json!({"description": "d"})),
            in_group(who, OK, FORBIDDEN),
        ),
        ("DELETE", "/v1/groups/{id}") => {
            // The owner deletes the spare group (of which the others are
            // not members: 404 for them).
            let want = match who {
                Owner => GONE,
                Anonymous | Deleted => UNAUTH,
                _ => HIDDEN,
            };
            cell(format!("/v1/groups/{}", w.spare_group), None, want)
        }
        ("GET", "/v1/groups/{id}/members") => cell(
            format!("/v1/groups/{g}/members"),
            None,
            in_group(who, OK, OK),
        ),
        // Changing the lower member's rank (2 -> 3): superiors only.
        ("PATCH", "/v1/groups/{id}/members/{user_id}") => cell(
            format!("/v1/groups/{g}/members/{}", w.id(Lower)),
            Some(json!({"rank": 3})),
            match who {
                Owner | Member => OK,
                Lower => FORBIDDEN,
                Anonymous | Deleted => UNAUTH,
                Outsider => HIDDEN,
            },
        ),
        // Removing the owner: nobody may (the owner themselves cannot leave).
        ("DELETE", "/v1/groups/{id}/members/{user_id}") => cell(
            format!("/v1/groups/{g}/members/{}", w.id(Owner)),
            None,
            match who {
                Owner => &[409],
                Member | Lower => FORBIDDEN,
                Anonymous | Deleted => UNAUTH,
                Outsider => HIDDEN,
            },
        ),
        ("POST", "/v1/groups/{id}/invitations") => cell(
            format!("/v1/groups/{g}/invitations"),
            Some(json!({"username": format!("inv{name}"), "rank": 9})),
            in_group(who, CREATED, CREATED),
        ),
        ("GET", "/v1/groups/{id}/invitations") => cell(
            format!("/v1/groups/{g}/invitations"),
            None,
            in_group(who, OK, OK),
        ),
        // The pending invitation was sent by the owner at rank 5: the
        // lower member (2, tried first) ranks above it and revokes it;
        // then it is revoked already.
        ("DELETE", "/v1/groups/{id}/invitations/{invitation_id}") => cell(
            format!("/v1/groups/{g}/invitations/{}", w.pending),
            None,
            match who {
                Owner | Member => &[409],
                Lower => OK,
                Anonymous | Deleted => UNAUTH,
                Outsider => HIDDEN,
            },
        ),
        ("GET", "/v1/groups/{id}/agenda") => cell(
            format!("/v1/groups/{g}/agenda?from=2031-01-01T00:00:00Z&to=2031-01-08T00:00:00Z"),
            None,
            in_group(who, OK, OK),
        ),
        ("GET", "/v1/invitations") => cell(route.into(), None, open(OK)),
        // Each caller answers an invitation addressed to the outsider (to
        // another group): only the outsider may.
        ("POST", "/v1/invitations/{id}/accept") | ("POST", "/v1/invitations/{id}/decline") => {
            let action = route.rsplit('/').next().unwrap_or_default();
            let inv = World::of(&w.invitation_for, Outsider);
            let want = match (who, action) {
                (Outsider, "accept") => OK,
                // Accepted already by the time decline is tried.
                (Outsider, _) => &[409],
                (Anonymous | Deleted, _) => UNAUTH,
                _ => HIDDEN,
            };
            cell(
                format!("/v1/invitations/{inv}/{action}"),
                Some(json!({})),
                want,
            )
        }
        ("POST", "/v1/events") => cell(
            route.into(),
            Some(
                json!({"title": "t", "start": "2031-02-01T09:00:00Z", "end": "2031-02-01T10:00:00Z", "time_zone": "UTC"}),
            ),
            open(CREATED),
        ),
        ("GET", "/v1/events") => cell(
            "/v1/events?from=2031-01-01T00:00:00Z&to=2031-01-08T00:00:00Z".into(),
            None,
            open(OK),
        ),
        // Searches the caller's own agenda only: open to anyone signed in.
        ("GET", "/v1/events/search") => cell(
            "/v1/events/search?q=shared&from=2031-01-01T00:00:00Z&to=2031-01-08T00:00:00Z".into(),
            None,
            open(OK),
        ),
        ("GET", "/v1/events/{id}") => cell(format!("/v1/events/{e}"), None, in_event(who, OK, OK)),
        ("PATCH", "/v1/events/{id}") => cell(
            format!("/v1/events/{e}"),
            Some(json!({"title": "Changed"})),
            in_event(who, OK, FORBIDDEN),
        ),
        ("DELETE", "/v1/events/{id}") => cell(
            format!("/v1/events/{}", w.spare_event),
            None,
            in_event(who, GONE, FORBIDDEN),
        ),
        ("POST", "/v1/events/{id}/rsvp") => cell(
            format!("/v1/events/{e}/rsvp"),
            Some(json!({"status": "tentative"})),
            in_event(who, OK, OK),
        ),
        // Each participant sets their own reminders.
        ("PUT", "/v1/events/{id}/reminders") => cell(
            format!("/v1/events/{e}/reminders"),
            Some(json!({"minutes_before": [15]})),
            in_event(who, OK, OK),
        ),
        ("GET", "/v1/freebusy") => cell(
            "/v1/freebusy?users=owner&from=2031-01-01T00:00:00Z&to=2031-01-08T00:00:00Z".into(),
            None,
            open(OK),
        ),
        ("GET", "/v1/notifications") => cell(route.into(), None, open(OK)),
        // Marks the caller's own notifications only.
        ("POST", "/v1/notifications/read-all") => cell(route.into(), Some(json!({})), open(OK)),
        // The member's notification: theirs alone.
        ("POST", "/v1/notifications/{id}/read") => cell(
            format!(
                "/v1/notifications/{}/read",
                World::of(&w.notification_of, Member)
            ),
            Some(json!({})),
            match who {
                Member => OK,
                Anonymous | Deleted => UNAUTH,
                _ => HIDDEN,
            },
        ),
        // A WebSocket: a plain GET is not a handshake (400); who may open
        // one is tested in notifications and api_sessions.
        ("GET", "/v1/stream") => cell(route.into(), None, &[400, 426]),
        ("GET", "/v1/admin/audit") => cell(route.into(), None, open(FORBIDDEN)),
        // Feeds: each person their own; a group's for its members.
        ("POST", "/v1/me/calendar-feed") => cell(route.into(), None, open(CREATED)),
        ("POST", "/v1/groups/{id}/calendar-feed") => cell(
            format!("/v1/groups/{g}/calendar-feed"),
            None,
            in_group(who, CREATED, CREATED),
        ),
        // The key is the credential (calendar apps send no token): an
        // unknown one is 404 whoever asks.
        ("GET", "/v1/calendar.ics") => cell("/v1/calendar.ics?key=not-a-key".into(), None, HIDDEN),
        // Into the caller's own agenda; the matrix sends JSON, which is
        // not an iCalendar file.
        ("POST", "/v1/events/import") => cell(route.into(), Some(json!({})), open(&[415])),
        ("POST", "/v1/me/app-passwords") => cell(
            route.into(),
            Some(json!({"name": format!("client of {name}")})),
            open(CREATED),
        ),
        ("GET", "/v1/me/app-passwords") => cell(route.into(), None, open(OK)),
        // Someone else's (or nobody's) app password: hidden.
        ("DELETE", "/v1/me/app-passwords/{id}") => cell(
            "/v1/me/app-passwords/7b0e6c4e-3f6a-4c1e-9d55-2d2f6a0c9e41".into(),
            None,
            open(HIDDEN),
        ),
        ("GET", "/healthz") | ("GET", "/openapi.json") | ("GET", "/metrics") => {
            cell(route.into(), None, OK)
        }
        // Ready only with a raft leader and token keys: 200, or 503.
        ("GET", "/readyz") => cell(route.into(), None, &[200, 503]),
        _ => None,
    }
}

/// Group routes: members get `member_ok` (the owner `owner_ok`), an
/// outsider 404, no valid token 401.
fn in_group(who: Who, owner_ok: &'static [u16], member_ok: &'static [u16]) -> &'static [u16] {
    match who {
        Who::Owner => owner_ok,
        Who::Member | Who::Lower => member_ok,
        Who::Outsider => HIDDEN,
        Who::Anonymous | Who::Deleted => UNAUTH,
    }
}

/// Event routes: the organizer gets `owner_ok`, the attendee
/// `attendee_ok`, anyone else 404, no valid token 401.
fn in_event(who: Who, owner_ok: &'static [u16], attendee_ok: &'static [u16]) -> &'static [u16] {
    match who {
        Who::Owner => owner_ok,
        Who::Member => attendee_ok,
        Who::Lower | Who::Outsider => HIDDEN,
        Who::Anonymous | Who::Deleted => UNAUTH,
    }
}

async fn world(api: &Api) -> World {
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for (who, name) in [
        (Who::Owner, "owner"),
        (Who::Member, "member"),
        (Who::Lower, "lower"),
        (Who::Outsider, "outsider"),
        (Who::Deleted, "deleted"),
    ] {
        let (id, token) = api.register(name).await;
        ids.push((who, id));
        tokens.push((who, token));
    }
    // Invitees of the invitation routes.
    for name in [
        "invowner",
        "invmember",
        "invlower",
        "invoutsider",
        "pendingone",
    ] {
        api.register(name).await;
    }
    let t = |who: Who| tokens.iter().find(|(w, _)| *w == who).unwrap().1.clone();
    let group = api
        .create_group(&t(Who::Owner), "Lab", "hierarchical")
        .await;
    for (who, rank) in [(Who::Member, 1), (Who::Lower, 2)] {
        let name = format!("{who:?}").to_lowercase();
        let inv = api.invite(&t(Who::Owner), &group, &name, rank).await;
        expect_ok(api.accept(&t(who), &inv).await, "join");
    }
    let pending = api.invite(&t(Who::Owner), &group, "pendingone", 5).await;
    let other = api.create_group(&t(Who::Owner), "Other", "flat").await;
    let to_outsider = api.invite(&t(Who::Owner), &other, "outsider", 1).await;
    let spare_group = api.create_group(&t(Who::Owner), "Spare", "flat").await;
    let event = |title: &str| {
        json!({"title": title, "start": "2031-01-02T09:00:00Z", "end": "2031-01-02T10:00:00Z",
               "time_zone": "UTC", "attendees": ["member"]})
    };
    let ev = expect(
        api.post("/v1/events", &t(Who::Owner), event("Shared"))
            .await,
        StatusCode::CREATED,
        "event",
    )["event"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let spare = expect(
        api.post("/v1/events", &t(Who::Owner), event("Spare")).await,
        StatusCode::CREATED,
        "spare event",
    )["event"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let notes = expect_ok(api.get("/v1/notifications", &t(Who::Member)).await, "notes");
    let note = notes["items"][0]["id"]
        .as_str()
        .expect("a notification")
        .to_string();
    expect(
        api.delete("/v1/me", &t(Who::Deleted)).await,
        StatusCode::NO_CONTENT,
        "delete the deleted account",
    );
    World {
        tokens,
        ids,
        group,
        event: ev,
        invitation_for: vec![(Who::Outsider, to_outsider)],
        pending,
        notification_of: vec![(Who::Member, note)],
        spare_group,
        spare_event: spare,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_has_a_row_and_every_row_holds() {
    let (_sys, api) = System::start_with_api().await;
    let spec = expect_ok(api.get("/openapi.json", "").await, "openapi");
    let mut routes = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 30, "too few operations: {routes:?}");
    let w = world(&api).await;
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (method, route) in &routes {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let cells: Vec<(Who, Cell)> = EVERYONE
            .iter()
            .filter_map(|who| row(&w, &method, route, *who).map(|c| (*who, c)))
            .collect();
        if cells.is_empty() {
            missing.push(format!("{method} {route}"));
            continue;
        }
        // Those refused first, the owner last: a permitted change (a
        // deletion) must not spoil the fixture for the others.
        for (who, cell) in cells {
            let mut req = api.request(method.clone(), &cell.path);
            if let Some(t) = w.token(who) {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &cell.body {
                req = req.json(b);
            }
            let (st, body) = api.try_send(req).await.expect("send");
            checked += 1;
            if !cell.want.contains(&st.as_u16()) {
                wrong.push(format!(
                    "{method} {route} as {who:?}: {st}, want {:?}: {body}",
                    cell.want
                ));
            }
        }
    }
    assert!(missing.is_empty(), "routes without a row: {missing:#?}");
    assert!(
        wrong.is_empty(),
        "{} of {checked} cells wrong: {wrong:#?}",
        wrong.len()
    );
    // And no row for a route that is gone.
    let known = [
        ("POST", "/v1/auth/register"),
        ("GET", "/v1/me"),
        ("GET", "/v1/admin/audit"),
    ];
    for (m, r) in known {
        assert!(
            routes.contains(&(m.to_string(), r.to_string())),
            "{m} {r} left the spec"
        );
    }
    println!("{checked} cells over {} operations", routes.len());
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}
