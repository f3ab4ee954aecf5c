//! The web app's files at `/` (`--web-dir`), beside an API whose unknown
//! routes keep their JSON 404.

use super::*;

const GZ: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A built app: an index, a script and its gzip twin.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>Agenda</title>",
    )
    .expect("index");
    std::fs::write(dir.path().join("app.js"), "console.log('agenda')").expect("script");
    // The build writes a gzip twin of each file; these bytes stand for one.
    std::fs::write(dir.path().join("app.js.gz"), GZ).expect("gz");
    dir
}

fn get(path: &str) -> Request<Body> {
    bare(Method::GET, path)
}

#[tokio::test]
async fn the_app_is_served_at_the_root_with_a_strict_policy() {
    let dir = site();
    let gw = Gateway::with_web_dir(Fake::two_each(), dir.path());
    let (status, headers, body) = gw.send_raw(get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("<title>Agenda</title>"));
    let h = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert!(
        h(header::CONTENT_TYPE).starts_with("text/html"),
        "{headers:?}"
    );
    assert!(
        h(header::CONTENT_SECURITY_POLICY).contains("default-src 'self'"),
        "{headers:?}"
    );
    assert_eq!(h(header::CACHE_CONTROL), "no-cache");
    assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let (status, headers, _) = gw.send_raw(get("/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn a_browser_that_takes_gzip_gets_the_compressed_twin() {
    let dir = site();
    let gw = Gateway::with_web_dir(Fake::two_each(), dir.path());
    let req = Request::builder()
        .uri("/app.js")
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .body(Body::empty())
        .expect("request");
    let (status, headers, body) = gw.send_raw(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(body, GZ, "the twin as written");
}

#[tokio::test]
async fn api_routes_and_missing_files_keep_the_error_shape() {
    let dir = site();
    let gw = Gateway::with_web_dir(Fake::two_each(), dir.path());
    gw.send(get("/v1/no-such-route"))
        .await
        .error(404, "not_found");
    gw.send(get("/missing.png")).await.error(404, "not_found");
    gw.send(get("/../Cargo.toml")).await.error(404, "not_found");
    // A POST to the root is not a page request.
    gw.send(bare(Method::POST, "/"))
        .await
        .error(404, "not_found");
    // Without --web-dir there is no app at all.
    let bare_gw = Gateway::new(Fake::two_each());
    bare_gw.send(get("/")).await.error(404, "not_found");
}
