//! The drain deadline ([`crate::server::drain`]) over a real socket and
//! the real router: after the shutdown signal a request in flight that
//! finishes within the grace is answered, and one that does not finish
//! (a replica that hangs) no longer keeps the gateway from stopping.

use std::time::{Duration, Instant};

use agenda_common::shutdown::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::fake::{Fake, Reply};
use super::Gateway;

/// Serves `gw` on a port of its own until `shutdown`, draining for at
/// most `grace`; the address and the serving task.
async fn serve(
    gw: &Gateway,
    shutdown: &CancellationToken,
    grace: Duration,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), crate::Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let serving = axum::serve(listener, gw.router.clone().into_make_service())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let task = tokio::spawn(crate::server::drain(serving, shutdown.clone(), grace));
    (addr, task)
}

/// Sends a login (a route open to anyone that calls the users service).
async fn login(addr: std::net::SocketAddr) -> TcpStream {
    let body = r#"{"username":"alice","password":"correct-horse-1"}"#;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /v1/auth/login HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.expect("send");
    s
}

/// Waits until the fake replicas got `n` calls.
async fn calls(gw: &Gateway, n: usize) {
    for _ in 0..500 {
        if gw.fake.calls().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the request never reached the replica");
}

#[tokio::test]
async fn a_request_that_never_finishes_is_dropped_after_the_grace() {
    // The replica hangs longer than any deadline of the test.
    let gw = Gateway::with_timeout(
        Fake::new(&["u1"], &["g1"]).script("u1", [Reply::Hang]),
        Duration::from_secs(60),
    );
    let shutdown = CancellationToken::new();
    let grace = Duration::from_millis(300);
    let (addr, task) = serve(&gw, &shutdown, grace).await;
    let _client = login(addr).await;
    calls(&gw, 1).await;

    let signalled = Instant::now();
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the gateway stops despite the request in flight")
        .expect("the serving task");
    assert!(stopped.is_ok(), "{stopped:?}");
    let took = signalled.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_request_that_finishes_within_the_grace_is_answered() {
    let gw = Gateway::new(Fake::new(&["u1"], &["g1"]).script(
        "u1",
        [Reply::After(
            Duration::from_millis(200),
            Box::new(Reply::Answer(200, serde_json::json!({"access_token": "t"}))),
        )],
    ));
    let shutdown = CancellationToken::new();
    let (addr, task) = serve(&gw, &shutdown, Duration::from_secs(10)).await;
    let mut client = login(addr).await;
    calls(&gw, 1).await;

    let signalled = Instant::now();
    shutdown.cancel();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .expect("answered before the grace ran out")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("access_token"), "{answer}");
    // Nothing else was open: the gateway stops at once, not at the end
    // of the grace.
    let stopped = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped")
        .expect("the serving task");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    // And it accepts nobody any more.
    assert!(TcpStream::connect(addr).await.is_err());
}
