//! The OpenAPI document against the live API: schemathesis (PyPI, in a
//! virtualenv of its own, `tests/schemathesis/run.sh`) reads
//! `/openapi.json` from a gateway over HTTPS and sends every operation at
//! least [`MIN_CASES`] generated requests, schema-valid and not,
//! authenticated as a registered user, with every check: no 5xx, no
//! response outside its schema, no undocumented status code or content
//! type, no schema-valid request refused, no schema-invalid one accepted.
//!
//! Needs `python3 -m venv` (Debian: `python3-venv`) and PyPI the first time
//! (the virtualenv is kept in `~/.cache/agenda/`). The whole run is bounded
//! ([`SETUP_DEADLINE`], [`RUN_DEADLINE`]); every process it starts is
//! killed at the end, also on failure. `AGENDA_SCHEMATHESIS_SEED` replays
//! or varies the run (default: a fixed seed; `random` for a new one).
//! Run: `cargo test -p agenda-tests --test api_schema -- --test-threads=1 --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agenda_tests::child::{tail, Group};
use agenda_tests::system::{expect, System, SystemOptions};
use reqwest::StatusCode;
use serde_json::Value;

/// Fewest generated requests every operation must get.
const MIN_CASES: usize = 100;
/// Cases schemathesis generates per operation and phase (coverage and
/// stateful add theirs).
const MAX_EXAMPLES: &str = "100";
/// The seed unless `AGENDA_SCHEMATHESIS_SEED` says otherwise: the same
/// cases every run, so a failure here is one to look at, not luck.
const SEED: &str = "20261126";
/// Making the virtualenv (the first run downloads schemathesis).
const SETUP_DEADLINE: Duration = Duration::from_secs(240);
/// The schemathesis run itself (about two minutes here).
const RUN_DEADLINE: Duration = Duration::from_secs(240);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis/run.sh")
}

/// The virtualenv, made or found; panics saying what to install when it
/// cannot be made.
async fn setup(log: &Path) {
    agenda_tests::child::venv_setup(&script(), log, SETUP_DEADLINE, "schemathesis").await;
}

/// What a run's events say.
#[derive(Default)]
struct Outcome {
    /// Cases sent, by operation (`GET /v1/me`), every phase.
    cases: BTreeMap<String, usize>,
    /// Distinct failures: operation, check, what.
    failures: BTreeSet<String>,
    /// Errors schemathesis met (network, schema, hooks).
    errors: Vec<String>,
    /// The engine finished (was not cut short).
    finished: bool,
}

fn first_line(v: &Value) -> String {
    v.as_str()
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Reads schemathesis's NDJSON events.
fn read_events(path: &Path) -> Outcome {
    let mut out = Outcome::default();
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("no schemathesis events at {}: {e}", path.display()));
    for line in std::io::BufReader::new(file).lines() {
        let line = line.expect("read the events");
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event.get("EngineFinished").is_some() {
            out.finished = true;
        }
        if let Some(e) = event.get("NonFatalError").or(event.get("FatalError")) {
            let what = e
                .get("value")
                .or(e.get("exception"))
                .unwrap_or(e)
                .to_string();
            out.errors.push(format!(
                "{} {}",
                e["label"].as_str().unwrap_or_default(),
                what.chars().take(400).collect::<String>()
            ));
        }
        let Some(recorder) = event.pointer("/ScenarioFinished/recorder") else {
            continue;
        };
        for case in recorder["cases"].as_object().into_iter().flatten() {
            let v = &case.1["value"];
            let op = format!(
                "{} {}",
                v["method"].as_str().unwrap_or_default().to_uppercase(),
                v["path"].as_str().unwrap_or_default()
            );
            *out.cases.entry(op).or_default() += 1;
        }
        for checks in recorder["checks"].as_object().into_iter().flatten() {
            for check in checks.1.as_array().into_iter().flatten() {
                if check["status"] != "failure" {
                    continue;
                }
                let f = &check["failure_info"]["failure"];
                out.failures.insert(format!(
                    "{}: {} {} ({}): {}",
                    f["operation"].as_str().unwrap_or_default(),
                    f["code"].as_str().unwrap_or_default(),
                    f["title"].as_str().unwrap_or_default(),
                    check["name"].as_str().unwrap_or_default(),
                    first_line(&f["message"]),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_openapi_document_faithful() {
    let started = Instant::now();
    let reports = tempfile::Builder::new()
        .prefix("agenda-schemathesis")
        .tempdir()
        .expect("report dir");
    setup(&reports.path().join("setup.log")).await;

    // Negative cases are thousands of 401s from one address: that limit
    // has its own test (api_limits); here it would only turn answers into
    // 429s.
    let sys = System::start(SystemOptions {
        tls: true,
        gateway_args: vec![
            "--address-failure-burst".into(),
            "1000000".into(),
            "--person-rate".into(),
            "100000".into(),
        ],
        ..SystemOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start the system: {e:#}"));
    let api = sys.api();
    let (_, token) = api.register("schemathesis").await;
    // An administrator, so that the audit log answers with pages rather
    // than 403 and its parameters are tested too.
    let db: Vec<String> = sys.db.nodes.values().map(|n| n.grpc.clone()).collect();
    let out = Command::new(agenda_tests::cluster::bin("agendactl").expect("agendactl"))
        .args(["user", "grant-admin", "schemathesis", "--db", &db.join(",")])
        .arg("--tls-dir")
        .arg(sys.certs_dir())
        .args(["--tls-name", "test"])
        .output()
        .expect("run agendactl");
    assert!(
        out.status.success(),
        "agendactl user grant-admin: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = expect(
        api.call(reqwest::Method::GET, "/openapi.json", None, None)
            .await,
        StatusCode::OK,
        "GET /openapi.json",
    );
    let operations: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, _)| format!("{} {path}", method.to_uppercase()))
        })
        .collect();

    let seed = match std::env::var("AGENDA_SCHEMATHESIS_SEED") {
        Ok(s) if s == "random" => None,
        Ok(s) => Some(s),
        Err(_) => Some(SEED.to_string()),
    };
    let ca = sys.certs_dir().join("ca.pem");
    let log_path = reports.path().join("run.log");
    let log = std::fs::File::create(&log_path).expect("run log");
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("run")
        .args(["--url", &sys.url()])
        .arg("--ca")
        .arg(&ca)
        .arg("--report-dir")
        .arg(reports.path())
        .args(["--max-examples", MAX_EXAMPLES])
        .env("AGENDA_TOKEN", &token)
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if let Some(seed) = &seed {
        cmd.args(["--seed", seed]);
    }
    let ran = Instant::now();
    let mut group = Group::spawn(&mut cmd);
    let status = group.wait(RUN_DEADLINE).await;
    drop(group);
    let took = ran.elapsed();
    let said = tail(&log_path, 80);
    let Some(status) = status else {
        let kept = reports.keep();
        panic!(
            "schemathesis took over {RUN_DEADLINE:?} and was stopped; reports kept in {}\n{said}",
            kept.display()
        );
    };

    let outcome = read_events(&reports.path().join("events.ndjson"));
    let total: usize = operations
        .iter()
        .map(|op| outcome.cases.get(op).copied().unwrap_or(0))
        .sum();
    println!(
        "schemathesis: {total} cases over {} operations in {:.0} s (seed {}):",
        operations.len(),
        took.as_secs_f64(),
        seed.as_deref().unwrap_or("random")
    );
    for op in &operations {
        println!("  {:6} {op}", outcome.cases.get(op).copied().unwrap_or(0));
    }
    let short: Vec<String> = operations
        .iter()
        .filter(|op| outcome.cases.get(*op).copied().unwrap_or(0) < MIN_CASES)
        .map(|op| format!("{op}: {}", outcome.cases.get(op).copied().unwrap_or(0)))
        .collect();
    let clean = status.success()
        && outcome.finished
        && outcome.failures.is_empty()
        && outcome.errors.is_empty()
        && short.is_empty();
    if !clean {
        let kept = reports.keep();
        panic!(
            "schemathesis: {} failures, {} errors, exit {status}, finished: {}\n\
             failures:\n  {}\nerrors:\n  {}\noperations under {MIN_CASES} cases: {short:?}\n\
             reports kept in {} (events.ndjson, junit.xml, run.log)\n--- run.log (end) ---\n{said}",
            outcome.failures.len(),
            outcome.errors.len(),
            outcome.finished,
            outcome
                .failures
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  "),
            outcome.errors.join("\n  "),
            kept.display(),
        );
    }
    assert!(
        api.server_errors().is_empty(),
        "5xx: {:?}",
        api.server_errors()
    );
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
}
