//! Backups of agenda-db with the real `agendactl`: a snapshot saved under
//! write load restores a new five-node cluster holding every write
//! acknowledged before the save began, and none of the old cluster's
//! process state; damaged files and used data dirs are refused.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_common::registry::REDIS_PRIMARY;
use agenda_proto::db::{PutRequest, RangeRequest};
use agenda_tests::cluster::{bin, wait_for, Cluster, Options};
use anyhow::{ensure, Context, Result};

fn agendactl(args: &[&str]) -> Result<String> {
    let out = Command::new(bin("agendactl")?)
        .args(args)
        .output()
        .context("run agendactl")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "agendactl {args:?} failed: {text}");
    Ok(text)
}

fn put(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_saved_under_load_restores_a_new_cluster_with_every_acknowledged_write(
) -> Result<()> {
    let old = Cluster::start(Options::default()).await?;
    let client = old.client();
    // What belonged to the old deployment's processes.
    let lease = client.lease_grant(Duration::from_secs(60)).await?.id;
    client
        .put(put(
            "/registry/services/users/old-replica",
            "10.0.0.1:7201",
            lease,
        ))
        .await?;
    client
        .put(put(
            REDIS_PRIMARY,
            r#"{"addr":"10.0.0.1:6379","epoch":3}"#,
            0,
        ))
        .await?;

    // Writers under load; each acknowledged write with when it was acked.
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..20_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("bk/{w}/{n:05}");
                if client.put(put(&key, &n.to_string(), 0)).await.is_ok() {
                    acked.lock().unwrap().push((key, Instant::now()));
                }
            }
        }));
    }
    let count = || acked.lock().unwrap().len();
    wait_for(
        "writes before the save",
        Duration::from_secs(30),
        || async { (count() >= 500).then_some(()) },
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agenda.snap");
    let endpoints: Vec<String> = old.nodes.values().map(|n| n.grpc.clone()).collect();
    let save_began = Instant::now();
    let saved = agendactl(&[
        "snapshot",
        "save",
        file.to_str().context("path")?,
        "--db",
        &endpoints.join(","),
    ])?;
    eprintln!("{saved}");
    let after_save = count() + 200;
    wait_for("writes after the save", Duration::from_secs(30), || async {
        (count() >= after_save).then_some(())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let before: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < save_began)
        .map(|(k, _)| k.clone())
        .collect();
    ensure!(
        before.len() >= 500,
        "{} writes before the save",
        before.len()
    );
    drop(old);

    // Owner-only: the file holds password hashes and signing keys.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "the snapshot file has mode {mode:o}");
    }
    // A damaged copy is refused by its checksum.
    let damaged = dir.path().join("damaged.snap");
    let mut bytes = std::fs::read(&file)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&damaged, bytes)?;
    let refused = restore_into(&damaged, &dir.path().join("x"), 1, "1=127.0.0.1:1")
        .expect_err("a damaged file restores");
    ensure!(format!("{refused:#}").contains("checksum"), "{refused:#}");

    let opts = Options {
        args: vec!["--cluster-token=restored".into()],
        ..Options::default()
    };
    let new = Cluster::start_prepared(opts, |id, data_dir, peers| {
        let out = restore_into(&file, data_dir, id, peers)?;
        eprintln!("{out}");
        // A data dir that holds a node's files is not restored over.
        let again = restore_into(&file, data_dir, id, peers);
        ensure!(again.is_err(), "restored twice into {}", data_dir.display());
        Ok(())
    })
    .await?;
    let client = new.client();
    let got = client
        .range(RangeRequest {
            key: b"bk/".to_vec(),
            range_end: b"bk0".to_vec(),
            ..Default::default()
        })
        .await?;
    let have: std::collections::BTreeSet<Vec<u8>> =
        got.kvs.iter().map(|kv| kv.key.clone()).collect();
    let missing: Vec<&String> = before
        .iter()
        .filter(|k| !have.contains(k.as_bytes()))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of {} writes acknowledged before the save are missing, e.g. {:?}",
        missing.len(),
        before.len(),
        missing.first()
    );
    for gone in ["/registry/services/users/old-replica", REDIS_PRIMARY] {
        ensure!(
            client.get(gone).await?.is_none(),
            "{gone} of the old deployment was restored"
        );
    }
    // The restored cluster takes writes.
    client.put(put("bk/after", "restored", 0)).await?;
    ensure!(client.get("bk/after").await?.is_some());
    eprintln!(
        "restored {} keys; all {} writes acknowledged before the save are there",
        got.kvs.len(),
        before.len()
    );
    Ok(())
}

fn restore_into(file: &Path, data_dir: &Path, id: u64, members: &str) -> Result<String> {
    agendactl(&[
        "snapshot",
        "restore",
        file.to_str().context("path")?,
        "--data-dir",
        data_dir.to_str().context("path")?,
        "--id",
        &id.to_string(),
        "--members",
        members,
        "--cluster-token",
        "restored",
    ])
}

/// `--backup-dir`: the leader writes a backup every period and keeps the
/// newest few; each is a snapshot file `agendactl snapshot restore` reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_backups_are_written_by_the_leader_and_pruned() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let backups = dir.path().join("backups");
    let opts = Options {
        args: vec![
            format!("--backup-dir={}", backups.display()),
            "--backup-every=300ms".into(),
            "--backup-keep=2".into(),
        ],
        ..Options::default()
    };
    let c = Cluster::start(opts).await?;
    let client = c.client();
    let files = || -> Vec<std::path::PathBuf> {
        let mut f: Vec<_> = std::fs::read_dir(&backups)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        f.sort();
        f
    };
    let mut newest_revision = 0;
    for round in 0..3 {
        client.put(put(&format!("sched/{round}"), "v", 0)).await?;
        let written = client
            .get(format!("sched/{round}"))
            .await?
            .context("read back")?;
        let want = written.mod_revision;
        let path = wait_for(
            "a backup with the latest write",
            Duration::from_secs(20),
            || async {
                files().into_iter().rev().find(|p| {
                    agenda_db::backup::read_file(p).is_ok_and(|(h, _)| h.revision >= want)
                })
            },
        )
        .await?;
        let (header, data) = agenda_db::backup::read_file(&path)?;
        ensure!(header.revision > newest_revision, "{header:?}");
        newest_revision = header.revision;
        ensure!(
            data.kvs
                .iter()
                .any(|kv| kv.key == format!("sched/{round}").as_bytes()),
            "the backup misses the write before it"
        );
    }
    // Kept: the newest two (a file being replaced may show for a moment).
    wait_for("pruning to two files", Duration::from_secs(10), || async {
        (files().len() <= 2).then_some(())
    })
    .await?;
    ensure!(
        files()
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "snap")),
        "{:?}",
        files()
    );
    Ok(())
}

/// `agendactl compact`: the history up to a revision goes on every
/// member; reads at a dropped revision are refused, later ones served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_drops_the_history_up_to_a_revision() -> Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let client = cluster.client();
    let mut revisions = Vec::new();
    for i in 0..5 {
        let r = client.put(put("cp/k", &i.to_string(), 0)).await?;
        revisions.push(r.header.context("header")?.revision);
    }
    let endpoints: Vec<String> = cluster.nodes.values().map(|n| n.grpc.clone()).collect();
    let upto = revisions[2];
    let out = agendactl(&[
        "compact",
        "--revision",
        &upto.to_string(),
        "--db",
        &endpoints.join(","),
    ])?;
    ensure!(
        out.contains(&format!("history dropped up to revision {upto}")),
        "{out}"
    );
    // On every member, once it has applied the entry (a read at a past
    // revision is served by any member without a ReadIndex round: the
    // past does not change, so a member that lags still has it).
    for node in cluster.nodes.values() {
        let one = agenda_common::DbClient::new(std::slice::from_ref(&node.grpc))?;
        wait_for(
            "the compaction on every member",
            Duration::from_secs(20),
            || async {
                let s = one.cluster_status().await.ok()?;
                (s.compact_revision >= upto).then_some(())
            },
        )
        .await?;
    }
    let at = |revision: i64| RangeRequest {
        key: b"cp/k".to_vec(),
        revision,
        ..Default::default()
    };
    let refused = client.range(at(revisions[1])).await;
    ensure!(
        matches!(refused, Err(agenda_common::Error::Compacted(_))),
        "a read at a dropped revision: {refused:?}"
    );
    let kept = client.range(at(revisions[3])).await?;
    ensure!(kept.kvs[0].value == b"3", "{kept:?}");
    let out = agendactl(&[
        "compact",
        "--revision",
        "999999",
        "--db",
        &endpoints.join(","),
    ])
    .expect_err("a future revision is compacted");
    ensure!(format!("{out:#}").contains("future"), "{out:#}");
    Ok(())
}
