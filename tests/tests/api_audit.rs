//! The audit log, through the real gateway, services, agenda-db (with TLS
//! and roles) and `agendactl`: security-relevant actions are recorded with
//! who, what, when and from where, in the change's own transaction; a
//! refused change leaves no entry; failed logins arrive aggregated; only
//! administrators read it, in pages; no role deletes entries.
//! Run: `cargo test -p agenda-tests --test api_audit -- --test-threads=1`.

use std::time::{Duration, Instant};

use agenda_tests::system::{expect, expect_error, expect_ok, items, Api, System, SystemOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Every entry of the audit log, following `next` pages of `limit`.
async fn all_entries(api: &Api, admin: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    for _ in 0..1000 {
        let path = format!("/v1/admin/audit?limit={limit}{query}{after}");
        let page = expect_ok(api.get(&path, admin).await, "audit page");
        out.extend(items(&page).iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return out,
        }
    }
    panic!("endless pages")
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn security_actions_are_audited_in_their_own_transaction() {
    let sys = System::start(SystemOptions {
        tls: true,
        ..SystemOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start the system: {e:#}"));
    let api = sys.api();
    let (_, alice) = api.register("alice").await;
    let (bob_id, bob) = api.register("bob").await;
    api.register("carol").await;

    // Not an administrator yet.
    expect_error(
        api.get("/v1/admin/audit", &alice).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a plain account reads the audit log",
    );
    let said = sys
        .agendactl(&["user", "grant-admin", "alice"])
        .expect("grant-admin");
    assert!(said.contains("alice is an administrator"), "{said}");

    // bob: two wrong passwords, a refused password change, a real one.
    for _ in 0..2 {
        let (st, _) = api.login("bob", "not-his-password").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let wrong = json!({"password": "brand-new-pass-1", "current_password": "nope-nope-1"});
    expect_error(
        api.patch("/v1/me", &bob, wrong).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a wrong current password",
    );
    let right =
        json!({"password": "brand-new-pass-1", "current_password": agenda_tests::system::PASSWORD});
    expect_ok(api.patch("/v1/me", &bob, right).await, "password change");

    // A group: a refused removal (carol is not above bob), then a real one.
    let g = api.create_group(&alice, "Lab", "hierarchical").await;
    let bob_now = expect_ok(api.login("bob", "brand-new-pass-1").await, "bob again");
    let bob = bob_now["access_token"].as_str().unwrap().to_string();
    let carol_login = expect_ok(
        api.login("carol", agenda_tests::system::PASSWORD).await,
        "carol",
    );
    let carol = carol_login["access_token"].as_str().unwrap().to_string();
    for (name, token, rank) in [("bob", &bob, 1), ("carol", &carol, 2)] {
        let inv = api.invite(&alice, &g, name, rank).await;
        expect_ok(api.accept(token, &inv).await, "accept");
    }
    let bob_member = format!("/v1/groups/{g}/members/{bob_id}");
    expect_error(
        api.delete(&bob_member, &carol).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "carol removes bob",
    );
    expect(
        api.delete(&bob_member, &alice).await,
        StatusCode::NO_CONTENT,
        "alice removes bob",
    );

    // The failed logins arrive within a few flush periods, aggregated.
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let entries = all_entries(&api, &alice, "", 3).await;
        let failed: Vec<&Value> = entries
            .iter()
            .filter(|e| e["action"] == "login_failed" && e["actor"] == "bob")
            .collect();
        if failed
            .iter()
            .map(|e| e["details"]["failed"].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= 2
        {
            assert!(
                failed.len() <= 2,
                "aggregated, not one per attempt: {failed:?}"
            );
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "failed logins never audited: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let seen = actions(&entries);
    for want in [
        "admin_granted",
        "login",
        "password_changed",
        "member_removed",
    ] {
        assert!(seen.iter().any(|a| a == want), "{want} missing: {seen:?}");
    }
    assert_eq!(
        seen.iter().filter(|a| *a == "password_changed").count(),
        1,
        "the refused change left no entry: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|a| *a == "member_removed").count(),
        1,
        "the refused removal left no entry: {seen:?}"
    );
    let granted = entries
        .iter()
        .find(|e| e["action"] == "admin_granted")
        .unwrap();
    assert_eq!(granted["actor"], "agendactl");
    let change = entries
        .iter()
        .find(|e| e["action"] == "password_changed")
        .unwrap();
    assert_eq!(change["actor_id"], json!(bob_id));
    assert!(
        change["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.")),
        "from where: {change}"
    );
    // Oldest first, and every page stitched gives the same as one page.
    let one_page = all_entries(&api, &alice, "", 500).await;
    assert_eq!(actions(&one_page)[..seen.len()], seen[..]);

    // The entry's revision is the change's.
    let db = sys.db.client();
    let user_key = format!("/agenda/users/{bob_id}");
    let user_rev = db
        .get(user_key.as_str())
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    let entry_key = format!("/agenda/audit/{}", change["id"].as_str().unwrap());
    let entry_rev = db
        .get(entry_key.as_str())
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    assert_eq!(entry_rev, user_rev, "the password change and its entry");

    // By actor.
    let bobs = all_entries(&api, &alice, "&actor=bob", 100).await;
    assert!(
        !bobs.is_empty() && bobs.iter().all(|e| e["actor"] == "bob"),
        "{bobs:?}"
    );

    // A certificate refused what its role may not do: counted, then one
    // entry (cert_refused) per role and source.
    let as_gateway = sys.db.client_as(&sys.certs_dir(), "gateway");
    for _ in 0..3 {
        let refused = as_gateway.get("/agenda/users/").await;
        assert!(refused.is_err(), "the gateway read the users");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entries = all_entries(&api, &alice, "&actor=gateway", 100).await;
        let counted: u64 = entries
            .iter()
            .filter(|e| e["action"] == "cert_refused")
            .map(|e| e["details"]["count"].as_u64().unwrap_or(0))
            .sum();
        if counted >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refused certificates never audited: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // No role deletes entries, not even the operator.
    let refused = db
        .delete(agenda_proto::db::DeleteRequest {
            key: entry_key.clone().into_bytes(),
            ..Default::default()
        })
        .await;
    assert!(refused.is_err(), "the operator deleted an audit entry");
    assert!(db.get(entry_key.as_str()).await.unwrap().is_some());

    // Revoked: no more reading.
    sys.agendactl(&["user", "revoke-admin", "alice"])
        .expect("revoke-admin");
    expect_error(
        api.get("/v1/admin/audit", &alice).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "after revoke-admin",
    );
    let (st, _) = api.get("/v1/admin/audit?limit=0", &alice).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}
