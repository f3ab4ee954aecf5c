//! A member whose disk fills: it refuses work cleanly, the cluster keeps
//! serving through the others, and it comes back by itself once space
//! returns. Its data dir is a small tmpfs (root only: the test says so
//! and passes without root, as the namespace tests do).

use std::time::{Duration, Instant};

use agenda_common::DbClient;
use agenda_proto::db::PutRequest;
use agenda_tests::cluster::{wait_for, Cluster, Options};
use anyhow::{ensure, Context, Result};

const MIB: u64 = 1024 * 1024;

fn put(key: String, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: key.into_bytes(),
        value,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_work_and_the_node_recovers_when_space_returns() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: filling a disk needs root (a tmpfs is mounted as node 3's data dir)");
        return Ok(());
    }
    let mut c = Cluster::start(Options {
        size: 3,
        small_disk: Some((3, 12 * MIB)),
        ..Options::default()
    })
    .await?;
    let all = c.client();
    let others = DbClient::new(&[c.nodes[&1].grpc.clone(), c.nodes[&2].grpc.clone()])?;
    let value = vec![b'x'; 256 * 1024];

    // Write until node 3 says its disk is full (bounded: 400 writes, about
    // eight times the tmpfs, and two minutes).
    let started = Instant::now();
    let mut written = 0;
    let mut full = false;
    while written < 400 && started.elapsed() < Duration::from_secs(120) {
        all.put(put(format!("big/{written}"), value.clone()))
            .await
            .with_context(|| format!("write {written} while node 3's disk fills"))?;
        written += 1;
        if written % 8 == 0
            && std::fs::read_to_string(&c.nodes[&3].log)?.contains("the disk is full")
        {
            full = true;
            break;
        }
    }
    ensure!(
        full,
        "node 3 never reported a full disk after {written} writes:\n{}",
        c.log_tail(3, 20)
    );
    ensure!(
        c.nodes.get_mut(&3).map(|n| n.is_running()) == Some(true),
        "node 3 exited instead of waiting for space:\n{}",
        c.log_tail(3, 20)
    );

    // It refuses at once, saying why; the others keep serving.
    let refused_at = Instant::now();
    let err = c
        .node_client(3)
        .with_timeout(Duration::from_secs(3))
        .get("big/0")
        .await
        .err()
        .context("node 3 answered a read with a full disk")?;
    ensure!(
        refused_at.elapsed() < Duration::from_secs(5),
        "node 3 took {:?} to refuse",
        refused_at.elapsed()
    );
    ensure!(
        err.to_string().contains("disk is full"),
        "node 3 refused with: {err}"
    );
    for i in 0..20 {
        others
            .put(put(format!("after/{i}"), b"v".to_vec()))
            .await
            .with_context(|| {
                format!("write {i} through nodes 1 and 2 while node 3's disk is full")
            })?;
    }
    let last = others
        .get("after/19")
        .await?
        .context("after/19 missing on the healthy nodes")?;
    ensure!(last.value == b"v");

    // Space returns: node 3 starts over from its files and catches up.
    c.resize_small_disk(512 * MIB)?;
    let n3 = c.node_client(3).with_timeout(Duration::from_secs(2));
    wait_for(
        "node 3 to serve again after space returned",
        Duration::from_secs(60),
        || {
            let n3 = n3.clone();
            async move {
                let kv = n3.get("after/19").await.ok().flatten()?;
                (kv.value == b"v").then_some(())
            }
        },
    )
    .await
    .with_context(|| c.log_tail(3, 20))?;
    ensure!(
        std::fs::read_to_string(&c.nodes[&3].log)?.contains("space returned"),
        "node 3 serves, but not by starting over:\n{}",
        c.log_tail(3, 20)
    );
    // And it takes writes again as a member.
    all.put(put("back".into(), b"yes".to_vec())).await?;
    let back = n3
        .get("back")
        .await?
        .context("node 3 does not see a new write")?;
    ensure!(back.value == b"yes");
    Ok(())
}
