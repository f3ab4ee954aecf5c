//! The terminal calendar (`agendactl login`, `agenda`, `event add`,
//! `invitations`, `rsvp`, `logout`) used as two people would, through the
//! real binary, against a whole system over HTTPS.

use std::io::Write;
use std::process::{Command, Stdio};

use agenda_tests::cluster::bin;
use agenda_tests::system::{System, SystemOptions};

/// Runs `agendactl ARGS` as the person whose session is `session`, with
/// `stdin`; its output, or a panic with what it said.
fn agendactl(session: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let (ok, text) = try_agendactl(session, args, stdin);
    assert!(ok, "agendactl {args:?} failed: {text}");
    text
}

fn try_agendactl(session: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(bin("agendactl").expect("agendactl built"))
        .args(args)
        .env("AGENDA_SESSION", session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agendactl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("agendactl ran");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_people_plan_a_meeting_from_the_terminal() {
    let sys = System::start(SystemOptions {
        tls: true,
        ..SystemOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("start the system: {e:#}"));
    let api = sys.api();
    api.register("alice").await;
    api.register("bob").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, bob) = (dir.path().join("alice.json"), dir.path().join("bob.json"));
    let url = sys.url();
    let ca = sys.certs_dir().join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let password = format!("{}\n", agenda_tests::system::PASSWORD);

    let (ok, text) = try_agendactl(
        &alice,
        &["login", "alice", "--url", &url, "--ca", ca],
        "wrong\n",
    );
    assert!(
        !ok && text.contains("401"),
        "a wrong password is refused: {text}"
    );
    let text = agendactl(
        &alice,
        &["login", "alice", "--url", &url, "--ca", ca],
        &password,
    );
    assert!(text.contains("signed in as alice"), "{text}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&alice).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the session is the person's alone");
    agendactl(
        &bob,
        &[
            "login",
            "bob",
            "--url",
            &url,
            "--ca",
            ca,
            "--password-stdin",
        ],
        &password,
    );

    let text = agendactl(
        &alice,
        &[
            "event",
            "add",
            "Plan Q3",
            "--at",
            "2031-03-04 10:00",
            "--for",
            "1h30m",
            "--with",
            "bob",
            "--location",
            "Room 2",
        ],
        "",
    );
    assert!(
        text.contains("created \"Plan Q3\" Tue 04 Mar 2031 10:00-11:30 (UTC)"),
        "{text}"
    );
    let id = text
        .split("id ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("the new event's id")
        .to_string();
    let (ok, text) = try_agendactl(&alice, &["event", "add", "x", "--at", "someday"], "");
    assert!(!ok && text.contains("is not a time"), "{text}");
    let (ok, text) = try_agendactl(
        &alice,
        &[
            "event",
            "add",
            "x",
            "--at",
            "10:00",
            "--with",
            "nobody-here",
        ],
        "",
    );
    assert!(
        !ok && text.contains("422") && text.contains("attendees"),
        "the API's refusal: {text}"
    );

    let week = agendactl(&alice, &["agenda", "--week", "--from", "2031-03-05"], "");
    assert!(
        week.starts_with("Week of Mon 03 Mar 2031 (UTC, alice)"),
        "{week}"
    );
    assert!(
        week.contains("Tue 04 Mar 2031\n  10:00-11:30  Plan Q3  @ Room 2"),
        "{week}"
    );
    let month = agendactl(&bob, &["agenda", "--month", "--from", "2031-03-20"], "");
    assert!(
        month.contains("March 2031") && month.contains("Plan Q3  [needs action]"),
        "{month}"
    );

    let waiting = agendactl(&bob, &["invitations"], "");
    assert!(
        waiting.contains("\"Plan Q3\"") && waiting.contains(&id),
        "{waiting}"
    );
    let answered = agendactl(&bob, &["rsvp", &id, "accepted"], "");
    assert!(answered.contains("accepted \"Plan Q3\""), "{answered}");
    let waiting = agendactl(&bob, &["invitations"], "");
    assert!(
        waiting.contains("nothing waits for your answer"),
        "{waiting}"
    );
    let month = agendactl(&bob, &["agenda", "--month", "--from", "2031-03-20"], "");
    assert!(
        month.contains("10:00-11:30  Plan Q3  @ Room 2"),
        "accepted now: {month}"
    );

    agendactl(&alice, &["logout"], "");
    assert!(!alice.exists(), "the session file goes");
    let (ok, text) = try_agendactl(&alice, &["agenda"], "");
    assert!(
        !ok && text.contains("agendactl login"),
        "says how to sign in: {text}"
    );
}
