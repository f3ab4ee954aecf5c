//! agenda-db refuses bad start-ups with a clear message and a non-zero
//! exit, never a panic.

use std::process::{Command, Output};

use agenda_tests::cluster::{bin, expect_refusal, free_port, run_to_exit, Cluster, Options};
use anyhow::{ensure, Result};

fn run(args: &[String]) -> Result<Output> {
    run_to_exit(Command::new(bin("agenda-db")?).args(args))
}

fn check(args: &[String], want: &str) -> Result<()> {
    expect_refusal(&run(args)?, &format!("agenda-db {args:?}"), want)
}

fn args(id: u64, peers: &str, dir: &std::path::Path) -> Vec<String> {
    vec![
        format!("--id={id}"),
        format!("--peers={peers}"),
        format!("--data-dir={}", dir.display()),
        format!("--listen=127.0.0.1:{}", free_port()),
        format!("--http=127.0.0.1:{}", free_port()),
    ]
}

#[test]
fn bad_flags_fail_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    check(&["--bogus".into()], "unexpected argument")?;
    check(&args(3, "1=127.0.0.1:1", dir.path()), "not in --peers")?;
    check(
        &args(1, "1=no-such-host.invalid:1", dir.path()),
        "--peers: member 1",
    )?;
    check(
        &args(1, "1=127.0.0.1:1,1=127.0.0.1:2", dir.path()),
        "listed twice",
    )?;
    let mut a = args(1, "1=127.0.0.1:1", dir.path());
    a.push("--tick-ms=0".into());
    check(&a, "--tick-ms")?;
    let mut a = args(1, "1=127.0.0.1:1", dir.path());
    a.push(format!("--tls-dir={}", dir.path().display()));
    check(&a, "--tls-name")?;
    a.push("--tls-name=agenda-db-1".into());
    check(&a, "agenda-db-1.pem")?;
    let help = run(&["--help".into()])?;
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--id",
        "--listen",
        "--http",
        "--peers",
        "--data-dir",
        "--join",
        "--tls-dir",
        "AGENDA_DB_PEERS",
    ] {
        ensure!(text.contains(flag), "--help does not explain {flag}");
    }
    Ok(())
}

#[test]
fn a_busy_port_fails_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let mut a = args(1, &format!("1=127.0.0.1:{port}"), dir.path());
    a[3] = format!("--listen=127.0.0.1:{port}");
    check(&a, "cannot listen on --listen")
}

#[test]
fn a_corrupt_database_file_fails_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("raft-log.redb"), vec![0x5a; 64 * 1024])?;
    check(&args(1, "1=127.0.0.1:1", dir.path()), "raft-log.redb")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("state.snap"), vec![0x5a; 64 * 1024])?;
    check(
        &args(1, "1=127.0.0.1:1", dir.path()),
        "state.snap is damaged",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_another_node_or_cluster_is_refused() -> Result<()> {
    let mut c = Cluster::start(Options {
        size: 1,
        ..Options::default()
    })
    .await?;
    c.stop(1);
    let dir = c.nodes[&1].data_dir.clone();
    check(&args(2, "2=127.0.0.1:1", &dir), "belongs to node 1")?;
    let mut other = args(1, "1=127.0.0.1:1", &dir);
    other.push("--cluster-token=elsewhere".into());
    check(&other, "not node 1 of cluster \"elsewhere\"")?;
    Ok(())
}
