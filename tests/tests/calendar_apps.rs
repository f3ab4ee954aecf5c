//! The calendar-app features against client software nobody here wrote:
//! `tests/calendar_apps/run.sh` runs, each in a Python virtualenv kept in
//! `~/.cache/agenda/` (PyPI the first time):
//!
//! - `feeds`: `feeds.py`, the iCalendar feeds parsed by `icalendar` and
//!   expanded by `recurring-ical-events` (a weekly series across the DST
//!   change with an exception date and a moved occurrence, an all-day
//!   event, a private one, one with an attendee) against `GET /v1/events`;
//!   feed rotation; the feed imported into a new account gives the same
//!   agenda, and again imports nothing; a hierarchical group's feed as a
//!   superior and a subordinate see it.
//! - `caldav`: `caldav_client.py`, the Python `caldav` library: discovery,
//!   create, read, update, delete, time-range search, free-busy, the JSON
//!   API and CalDAV seeing each other's changes, sync tokens (changes,
//!   deletions, and a token older than the sync history refused with
//!   `valid-sync-token`, then a full sync), app passwords only (the
//!   account password and a revoked app password refused), external
//!   attendees kept.
//! - `vdirsyncer`: `vdirsyncer_sync.py`, two-way sync of the personal
//!   calendar with a local folder: idempotent, local and server edits
//!   travel, a conflict is reported and nothing is lost.
//!
//! One system over TLS, its agenda-users replicas keeping deletions for
//! [`SYNC_HISTORY_SECS`] (`--dav-sync-history-secs`) so the expiry of sync
//! tokens can be seen. Every script runs to its end even when another
//! failed, each bounded by its deadline and killed with whatever it
//! started; the test fails naming each failed script with its log's end.
//!
//! Needs `python3 -m venv` (Debian: `python3-venv`).
//! Run: `cargo test -p agenda-tests --test calendar_apps -- --nocapture`.
//! `AGENDA_CALENDAR_APPS=feeds,caldav` runs only those scripts;
//! `AGENDA_CALENDAR_APPS_HOLD=SECS` keeps the system up that long after
//! them and prints its AGENDA_URL and AGENDA_CA, to run a script by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agenda_tests::child::{tail, Group};
use agenda_tests::system::{System, SystemOptions};

/// Making the two virtualenvs (the first run downloads the clients).
const SETUP_DEADLINE: Duration = Duration::from_secs(300);
/// How long agenda-users keeps CalDAV deletions: a sync token older than
/// this is refused. Short enough to wait past; long enough that the
/// ordinary sync checks (a token used within a second of being handed
/// out) stay well inside it on a loaded machine.
const SYNC_HISTORY_SECS: u64 = 5;
/// The scripts and their deadlines.
const SCRIPTS: &[(&str, Duration)] = &[
    ("feeds", Duration::from_secs(180)),
    ("caldav", Duration::from_secs(240)),
    ("vdirsyncer", Duration::from_secs(300)),
];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("calendar_apps/run.sh")
}

/// The virtualenvs, made or found; panics saying what to install when
/// they cannot be made.
async fn setup(log: &Path) {
    agenda_tests::child::venv_setup(
        &script(),
        log,
        SETUP_DEADLINE,
        "the calendar-app clients (caldav, icalendar, recurring-ical-events, vdirsyncer)",
    )
    .await;
}

/// How one script ended.
struct Ran {
    name: &'static str,
    took: Duration,
    /// `None`: passed.
    failure: Option<String>,
}

async fn run(sys: &System, name: &'static str, deadline: Duration, dir: &Path) -> Ran {
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("script log");
    let started = Instant::now();
    let mut group = Group::spawn(
        Command::new("bash")
            .arg(script())
            .arg(name)
            .env("AGENDA_URL", sys.url())
            .env("AGENDA_CA", sys.certs_dir().join("ca.pem"))
            .env(
                "AGENDA_DAV_SYNC_HISTORY_SECS",
                SYNC_HISTORY_SECS.to_string(),
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    );
    let status = group.wait(deadline).await;
    drop(group);
    let took = started.elapsed();
    // The whole log: a script prints its checks, then every failure in full.
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    println!("\n===== {name} ({:.0} s) =====\n{text}", took.as_secs_f64());
    let failure = match status {
        Some(st) if st.success() => None,
        Some(st) => Some(format!("{name}: {st}\n{}", failures(&text, &log_path))),
        None => Some(format!(
            "{name}: still running after {deadline:?}, stopped\n{}",
            tail(&log_path, 80)
        )),
    };
    Ran {
        name,
        took,
        failure,
    }
}

/// What a failed script said: its summary and every failure in full (the
/// scripts print them last), or the end of its log when it ended before
/// its summary (a crash).
fn failures(text: &str, log: &Path) -> String {
    match text.rfind(" checks passed, ") {
        Some(i) => {
            let start = text[..i].rfind('\n').map_or(0, |n| n + 1);
            text[start..].to_string()
        }
        None => tail(log, 80),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_apps_work_with_feeds_caldav_and_vdirsyncer() {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("agenda-calendar-apps")
        .tempdir()
        .expect("log dir");
    setup(&dir.path().join("setup.log")).await;

    let sys = System::start(SystemOptions {
        tls: true,
        users_args: vec![
            "--dav-sync-history-secs".into(),
            SYNC_HISTORY_SECS.to_string(),
        ],
        ..SystemOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start the system: {e:#}"));

    let only: Option<Vec<String>> = std::env::var("AGENDA_CALENDAR_APPS")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().to_string()).collect());
    let mut ran = Vec::new();
    for (name, deadline) in SCRIPTS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        ran.push(run(&sys, name, *deadline, dir.path()).await);
    }

    if let Some(secs) = std::env::var("AGENDA_CALENDAR_APPS_HOLD")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        println!(
            "holding the system for {secs} s:\nAGENDA_URL={} AGENDA_CA={} AGENDA_DAV_SYNC_HISTORY_SECS={SYNC_HISTORY_SECS}",
            sys.url(),
            sys.certs_dir().join("ca.pem").display()
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    println!("\ncalendar apps:");
    for r in &ran {
        println!(
            "  {:10} {} in {:.0} s",
            r.name,
            if r.failure.is_none() {
                "passed"
            } else {
                "FAILED"
            },
            r.took.as_secs_f64()
        );
    }
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    let failures: Vec<&String> = ran.iter().filter_map(|r| r.failure.as_ref()).collect();
    if !failures.is_empty() {
        let kept = dir.keep();
        panic!(
            "{} of {} calendar-app scripts failed (logs kept in {}):\n\n{}",
            failures.len(),
            ran.len(),
            kept.display(),
            failures
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        );
    }
}
