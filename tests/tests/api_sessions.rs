//! Sessions end when they should, through the real gateway and services:
//! refresh tokens rotate (one winner of two at once, a spent one ends its
//! chain), a password change, "log out everywhere" and an account deletion
//! refuse every earlier token at once on every route and close open
//! streams, and a stream closes when its token expires unless the client
//! sends a fresh one.
//! Run: `cargo test -p agenda-tests --test api_sessions -- --test-threads=1`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agenda_tests::system::{expect, expect_error, expect_ok, Api, System, PASSWORD};
use agenda_tests::ws::Frame;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Logs `name` in; returns the whole answer.
async fn login(api: &Api, name: &str, password: &str) -> Value {
    expect_ok(api.login(name, password).await, &format!("login {name}"))
}

async fn refresh(api: &Api, token: &str) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(&json!({"refresh_token": token})),
    )
    .await
}

/// A refresh with an `Idempotency-Key`.
async fn refresh_with(api: &Api, token: &str, key: &str) -> (StatusCode, Value) {
    let req = api
        .request(Method::POST, "/v1/auth/refresh")
        .header("idempotency-key", key)
        .json(&json!({"refresh_token": token}));
    api.try_send(req).await.expect("transport")
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or_else(|| panic!("no {name}: {v}"))
}

/// Every route a signed-in person reads refuses `token` (401).
async fn refused_everywhere(api: &Api, token: &str, what: &str) {
    for path in [
        "/v1/me",
        "/v1/freebusy?users=someone&from=2031-01-01T00:00:00Z&to=2031-01-02T00:00:00Z",
        "/v1/users?q=a",
        "/v1/groups",
        "/v1/invitations",
        "/v1/notifications",
        "/v1/events?from=2031-01-01T00:00:00Z&to=2031-01-02T00:00:00Z",
    ] {
        let (st, body) = api.get(path, token).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what}: GET {path}: {body}");
    }
}

/// The next frame that is not a heartbeat (or a close), within `secs`.
async fn next_frame(ws: &mut agenda_tests::ws::Ws, secs: u64) -> Frame {
    loop {
        match ws.next(Duration::from_secs(secs)).await.expect("a frame") {
            Frame::Heartbeat => continue,
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_tokens_rotate_and_a_spent_one_ends_its_chain() {
    let (_sys, api) = System::start_with_api().await;
    api.register("rita").await;
    let first = login(&api, "rita", PASSWORD).await;
    assert_eq!(
        first["expires_in"], 900,
        "access tokens live 15 minutes: {first}"
    );
    let r0 = field(&first, "refresh_token").to_string();

    let second = expect_ok(refresh(&api, &r0).await, "refresh");
    let r1 = field(&second, "refresh_token").to_string();
    assert_ne!(r1, r0);
    expect_ok(
        api.get("/v1/me", field(&second, "access_token")).await,
        "new token works",
    );

    // r0 is spent: presenting it again ends the chain, r1 included.
    let (st, body) = refresh(&api, &r0).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a spent token: {body}");
    let (st, body) = refresh(&api, &r1).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the chain is ended: {body}");

    // Two uses at once: exactly one wins.
    let fresh = login(&api, "rita", PASSWORD).await;
    let r = field(&fresh, "refresh_token").to_string();
    let (a, b) = tokio::join!(refresh(&api, &r), refresh(&api, &r));
    let wins = [&a, &b].iter().filter(|x| x.0 == StatusCode::OK).count();
    assert_eq!(wins, 1, "one winner: {a:?} {b:?}");

    // Garbage and forged ones are 401, in the error shape.
    for bad in [
        "",
        "nonsense",
        &format!("{}.{}", uuid::Uuid::new_v4(), "a".repeat(64)),
    ] {
        expect_error(
            refresh(&api, bad).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            bad,
        );
    }

    // Logout ends that session's refresh chain only.
    let one = login(&api, "rita", PASSWORD).await;
    let two = login(&api, "rita", PASSWORD).await;
    let body = json!({"refresh_token": field(&one, "refresh_token")});
    expect(
        api.post("/v1/auth/logout", field(&one, "access_token"), body)
            .await,
        StatusCode::NO_CONTENT,
        "logout",
    );
    let (st, _) = refresh(&api, field(&one, "refresh_token")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a logged-out session");
    expect_ok(
        refresh(&api, field(&two, "refresh_token")).await,
        "the other session",
    );
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}

/// A refresh whose answer was lost can be sent again with the same key
/// and gets the same next token; anything else that presents a spent
/// token still ends the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_with_a_key_is_safe_to_repeat() {
    let (_sys, api) = System::start_with_api().await;
    api.register("rosa").await;
    let r0 = field(&login(&api, "rosa", PASSWORD).await, "refresh_token").to_string();

    let first = expect_ok(refresh_with(&api, &r0, "k-1").await, "refresh with a key");
    let r1 = field(&first, "refresh_token").to_string();
    assert_ne!(r1, r0);
    let again = expect_ok(refresh_with(&api, &r0, "k-1").await, "its repeat");
    assert_eq!(field(&again, "refresh_token"), r1, "the same next token");
    expect_ok(
        api.get("/v1/me", field(&again, "access_token")).await,
        "the repeat's access token works",
    );
    // Two repeats at once both get it.
    let (a, b) = tokio::join!(
        refresh_with(&api, &r0, "k-1"),
        refresh_with(&api, &r0, "k-1")
    );
    for x in [&a, &b] {
        assert_eq!(x.0, StatusCode::OK, "{x:?}");
        assert_eq!(field(&x.1, "refresh_token"), r1);
    }

    // The spent token with another key (or none) is a reuse: the chain ends.
    let (st, body) = refresh_with(&api, &r0, "k-2").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "another key: {body}");
    let (st, body) = refresh_with(&api, &r1, "k-3").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the chain is ended: {body}");

    // Once the next token is used, the old use is no longer repeatable.
    let s0 = field(&login(&api, "rosa", PASSWORD).await, "refresh_token").to_string();
    let s1 = expect_ok(refresh_with(&api, &s0, "a").await, "refresh");
    let s1 = field(&s1, "refresh_token").to_string();
    let s2 = expect_ok(refresh_with(&api, &s1, "b").await, "next refresh");
    let s2 = field(&s2, "refresh_token").to_string();
    let (st, body) = refresh_with(&api, &s0, "a").await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a repeat after the chain moved on: {body}"
    );
    let (st, _) = refresh_with(&api, &s2, "c").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "and that ended the chain");

    // The same token at once with two keys: still exactly one wins.
    let t0 = field(&login(&api, "rosa", PASSWORD).await, "refresh_token").to_string();
    let (a, b) = tokio::join!(refresh_with(&api, &t0, "x"), refresh_with(&api, &t0, "y"));
    let won: Vec<_> = [&a, &b]
        .into_iter()
        .filter(|r| r.0 == StatusCode::OK)
        .collect();
    assert_eq!(won.len(), 1, "one winner: {a:?} {b:?}");

    expect_error(
        refresh_with(&api, &t0, "two words").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "a malformed key",
    );
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}

/// A password change, "log out everywhere" and an account deletion end
/// every earlier access token at once (the very next request), every
/// refresh token, and every open stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_sessions_reaches_every_token_and_stream_at_once() {
    let (sys, api) = System::start_with_api().await;
    api.register("sam").await;
    let before = login(&api, "sam", PASSWORD).await;
    let token = field(&before, "access_token").to_string();
    let mut stream = sys.ws(Some(&token), None).await.expect("stream");
    stream.ready(Duration::from_secs(10)).await.expect("ready");

    let change = json!({"password": "a-new-secret-7", "current_password": PASSWORD});
    expect_ok(
        api.patch("/v1/me", &token, change).await,
        "change the password",
    );
    refused_everywhere(&api, &token, "after a password change").await;
    match next_frame(&mut stream, 10).await {
        Frame::Closed(4401, why) => assert!(why.contains("ended"), "{why}"),
        other => panic!("the stream stays open: {other:?}"),
    }
    let (st, _) = refresh(&api, field(&before, "refresh_token")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a refresh token of before");
    let refused = sys.ws(Some(&token), None).await.expect("handshake");
    let mut refused = refused;
    assert!(matches!(
        next_frame(&mut refused, 10).await,
        Frame::Closed(4401, _)
    ));

    // Log out everywhere: both sessions end.
    let a = login(&api, "sam", "a-new-secret-7").await;
    let b = login(&api, "sam", "a-new-secret-7").await;
    let mut stream = sys
        .ws(Some(field(&b, "access_token")), None)
        .await
        .expect("stream");
    stream.ready(Duration::from_secs(10)).await.expect("ready");
    expect(
        api.post(
            "/v1/auth/logout",
            field(&a, "access_token"),
            json!({"everywhere": true}),
        )
        .await,
        StatusCode::NO_CONTENT,
        "log out everywhere",
    );
    for s in [&a, &b] {
        refused_everywhere(
            &api,
            field(s, "access_token"),
            "after logging out everywhere",
        )
        .await;
        let (st, _) = refresh(&api, field(s, "refresh_token")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    assert!(matches!(
        next_frame(&mut stream, 10).await,
        Frame::Closed(4401, _)
    ));

    // Deleting the account.
    let c = login(&api, "sam", "a-new-secret-7").await;
    let token = field(&c, "access_token").to_string();
    let mut stream = sys.ws(Some(&token), None).await.expect("stream");
    stream.ready(Duration::from_secs(10)).await.expect("ready");
    expect(
        api.delete("/v1/me", &token).await,
        StatusCode::NO_CONTENT,
        "delete",
    );
    refused_everywhere(&api, &token, "after deleting the account").await;
    assert!(matches!(
        next_frame(&mut stream, 10).await,
        Frame::Closed(4401, _)
    ));
    let (st, _) = refresh(&api, field(&c, "refresh_token")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(api.server_errors().is_empty(), "{:?}", api.server_errors());
}

/// A stream closes when its token expires, unless the client sent a
/// fresh one in time; another person's token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_lives_as_long_as_its_token() {
    let (sys, api) = System::start_with_api().await;
    let (user_id, _) = api.register("tess").await;
    let (_, other) = api.register("ugo").await;
    let keys = sys.signing_keys().await;
    let unix_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let short = |secs| {
        keys.issue(&user_id, "tess", unix_now(), secs)
            .expect("sign")
    };

    let mut s = sys.ws(Some(&short(3)), None).await.expect("stream");
    s.ready(Duration::from_secs(10)).await.expect("ready");
    match next_frame(&mut s, 15).await {
        Frame::Closed(4401, why) => assert!(why.contains("expired"), "{why}"),
        other => panic!("an expired token's stream stays open: {other:?}"),
    }

    // The first token must outlive connecting and renewing on a loaded
    // machine (CI once took over two seconds), so it gets eight.
    let issued = unix_now();
    let first = keys.issue(&user_id, "tess", issued, 8).expect("sign");
    let first_expiry = issued + 8;
    let mut s = sys.ws(Some(&first), None).await.expect("stream");
    s.ready(Duration::from_secs(10)).await.expect("ready");
    s.send_json(&json!({"type": "token", "token": short(600)}))
        .await
        .expect("send");
    match next_frame(&mut s, 10).await {
        Frame::TokenAccepted => {}
        other => panic!("the renewal was not accepted: {other:?}"),
    }
    // Until two seconds past the first token's expiry, nothing closes it.
    while unix_now() < first_expiry + 2 {
        match s.next(Duration::from_secs(1)).await {
            Err(_) | Ok(Frame::Heartbeat) => {}
            Ok(other) => panic!("after the renewal: {other:?}"),
        }
    }
    s.ping().await.expect("still open");
    s.send_json(&json!({"type": "token", "token": other}))
        .await
        .expect("send");
    match next_frame(&mut s, 10).await {
        Frame::Closed(4401, why) => assert!(why.contains("another person"), "{why}"),
        other => panic!("another person's token was taken: {other:?}"),
    }
}

/// Every forged or wrong token is 401, on a route and on the stream: alg
/// none, HS256 signed with the published public key, another key, expired,
/// another audience or issuer, tampered, and a revoked refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_tokens_are_refused() {
    use agenda_common::auth::{Claims, SigningKeys, AUDIENCE, ISSUER};
    use base64::Engine;
    let (sys, api) = System::start_with_api().await;
    let (user_id, good) = api.register("vic").await;
    let keys = sys.signing_keys().await;
    let public = keys.public().expect("public keys");
    let kid = public.keys.keys().last().expect("a key id").clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |iss: &str, aud: &str, iat: u64, exp: u64| Claims {
        sub: user_id.clone(),
        username: "vic".into(),
        iat,
        exp,
        gen: 0,
        iss: iss.into(),
        aud: aud.into(),
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = serde_json::to_value(claims(ISSUER, AUDIENCE, now, now + 600)).unwrap();
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&payload)
    );
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        let secret = public.keys[&kid].clone();
        jsonwebtoken::encode(
            &header,
            &payload,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let other_key = SigningKeys::generate()
        .unwrap()
        .sign(&claims(ISSUER, AUDIENCE, now, now + 600))
        .unwrap();
    let expired = keys
        .sign(&claims(ISSUER, AUDIENCE, now - 700, now - 100))
        .unwrap();
    let audience = keys
        .sign(&claims(ISSUER, "another-api", now, now + 600))
        .unwrap();
    let issuer = keys
        .sign(&claims("someone-else", AUDIENCE, now, now + 600))
        .unwrap();
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut body: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap();
        body["sub"] = json!(uuid::Uuid::new_v4().to_string());
        format!("{}.{}.{}", parts[0], b64(&body), parts[2])
    };
    for (what, token) in [
        ("alg none", &none),
        ("HS256 with the public key", &hs256),
        ("another key", &other_key),
        ("expired", &expired),
        ("another audience", &audience),
        ("another issuer", &issuer),
        ("tampered", &tampered),
    ] {
        expect_error(
            api.get("/v1/me", token).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            what,
        );
        let mut s = sys.ws(Some(token), None).await.expect("handshake");
        assert!(
            matches!(next_frame(&mut s, 10).await, Frame::Closed(4401, _)),
            "{what}: the stream"
        );
    }
    expect_ok(api.get("/v1/me", &good).await, "the genuine token");

    let l = login(&api, "vic", PASSWORD).await;
    let r = field(&l, "refresh_token").to_string();
    expect(
        api.post(
            "/v1/auth/logout",
            field(&l, "access_token"),
            json!({"refresh_token": r}),
        )
        .await,
        StatusCode::NO_CONTENT,
        "logout",
    );
    expect_error(
        refresh(&api, &r).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "a revoked refresh token",
    );
}
