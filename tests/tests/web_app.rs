//! The web app in a real browser: `web/tests/browser.mjs` (Playwright
//! driving Debian's chromium, two people in two browser contexts, an
//! axe-core scan) against the whole system over TLS, Redis included, with
//! the gateway serving `web/dist` at `/`. Screenshots of every view land
//! in `target/web-artifacts/`; a failing step names its screenshot.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use agenda_tests::system::{System, SystemOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_app_works_in_a_real_browser() {
    let web = repo().join("web");
    let dist = web.join("dist");
    assert!(
        dist.join("index.html").exists(),
        "the web app is not built: run `make web` (npm ci and npm run build in web/)"
    );
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "web/node_modules is missing: run `make web`"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: apt-get install chromium (make test does it as root)"
    );
    let sys = System::start(SystemOptions {
        redis: true,
        tls: true,
        gateway_args: vec!["--web-dir".into(), dist.display().to_string()],
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start the system: {e:#}"));
    let artifacts = repo().join("target/web-artifacts");
    // The browser test kills one of these during a save (a failover of
    // the users replica must not lose the event).
    let users_pids: Vec<String> = sys
        .pids()
        .into_iter()
        .filter(|(name, _)| name.starts_with("users"))
        .map(|(_, pid)| pid.to_string())
        .collect();
    assert_eq!(users_pids.len(), 2, "{:?}", sys.pids());
    let child = tokio::process::Command::new("node")
        .arg(web.join("tests/browser.mjs"))
        .env("AGENDA_URL", sys.url())
        .env("NODE_EXTRA_CA_CERTS", sys.certs_dir().join("ca.pem"))
        .env("ARTIFACTS", &artifacts)
        .env("AGENDA_USERS_PIDS", users_pids.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (apt-get install nodejs)");
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the browser test did not end within 300 s")
        .expect("the browser test's output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{text}",
        artifacts.display()
    );
}
