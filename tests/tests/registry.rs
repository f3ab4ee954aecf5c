//! The registry helpers of the shared client library, against a real
//! agenda-db cluster.

use std::time::Duration;

use agenda_common::registry::{self, Instance};
use agenda_common::shutdown::CancellationToken;
use agenda_tests::cluster::{wait_for, Cluster, Options};
use anyhow::Result;

fn inst(id: &str, addr: &str) -> Instance {
    Instance {
        id: id.into(),
        addr: addr.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_register_renew_deregister_and_expire() -> Result<()> {
    let mut c = Cluster::start(Options::default()).await?;
    let client = c.client();
    let stop = CancellationToken::new();
    let mut seen = registry::watch_instances(&client, "users", stop.clone());

    let a = registry::register(
        &client,
        "users",
        inst("a", "10.0.0.1:1"),
        Duration::from_secs(2),
    )
    .await?;
    let b = registry::register(
        &client,
        "users",
        inst("b", "10.0.0.2:1"),
        Duration::from_secs(2),
    )
    .await?;
    let both = vec![inst("a", "10.0.0.1:1"), inst("b", "10.0.0.2:1")];
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|v| *v == both)).await??;
    assert_eq!(registry::list_instances(&client, "users").await?, both);

    // Renewal keeps them through several TTLs, across a leader kill.
    let leader = c.leader().await?;
    c.kill(leader);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(registry::list_instances(&client, "users").await?, both);

    // A clean shutdown removes the entry at once...
    a.deregister().await;
    tokio::time::timeout(
        Duration::from_secs(5),
        seen.wait_for(|v| *v == vec![inst("b", "10.0.0.2:1")]),
    )
    .await??;
    // ...a crashed instance (no more keep-alives) vanishes after its TTL.
    drop(b);
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|v| v.is_empty())).await??;
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_keys_are_read_and_followed() -> Result<()> {
    // Bounds are generous: this checks that the watcher follows, not how
    // fast (CI once took over 5 s, with six clusters sharing two cores).
    let mut c = Cluster::start(Options::default()).await?;
    let client = c.client();
    let stop = CancellationToken::new();
    assert_eq!(registry::get_config(&client, "redis-primary").await?, None);
    let mut primary = registry::watch_config(&client, "redis-primary", stop.clone());
    registry::put_config(&client, "redis-primary", b"127.0.0.1:6379").await?;
    // Once failed here and in CI (the watcher never saw the first put):
    // a panic keeps the nodes' logs and shows their tails.
    if tokio::time::timeout(
        Duration::from_secs(15),
        primary.wait_for(|v| v.as_deref() == Some(&b"127.0.0.1:6379"[..])),
    )
    .await
    .is_err()
    {
        let tails: Vec<String> = c
            .nodes
            .keys()
            .map(|id| format!("--- node {id} ---\n{}", c.log_tail(*id, 40)))
            .collect();
        panic!(
            "the watcher did not see the first put in 15 s (it holds {:?})\n{}",
            primary.borrow().as_deref().map(String::from_utf8_lossy),
            tails.join("\n")
        );
    }
    registry::put_config(&client, "redis-primary", b"127.0.0.1:6380").await?;
    tokio::time::timeout(
        Duration::from_secs(15),
        primary.wait_for(|v| v.as_deref() == Some(&b"127.0.0.1:6380"[..])),
    )
    .await??;
    // The watcher keeps following when nodes die (its stream may have been
    // on one of them): it lists again and resumes.
    c.kill(1);
    c.kill(2);
    registry::put_config(&client, "redis-primary", b"127.0.0.1:6381").await?;
    wait_for(
        "the watcher to follow after node kills",
        Duration::from_secs(15),
        || async { (primary.borrow().as_deref() == Some(&b"127.0.0.1:6381"[..])).then_some(()) },
    )
    .await?;
    let value = registry::get_config(&client, "redis-primary").await?;
    assert_eq!(value.as_deref(), Some(&b"127.0.0.1:6381"[..]));
    stop.cancel();
    Ok(())
}

/// The shared client must keep finding the live node among dead ones (it
/// once stopped rotating after wrapping around its list). Each client
/// starts at a random node, so twenty of them cover every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_rotates_past_dead_nodes_from_any_start() -> Result<()> {
    let c = Cluster::start(Options {
        size: 1,
        ..Options::default()
    })
    .await?;
    let dead = || format!("127.0.0.1:{}", agenda_tests::cluster::free_port());
    let endpoints = vec![dead(), c.nodes[&1].grpc.clone(), dead(), dead()];
    for n in 0..20 {
        let client = agenda_common::DbClient::new(&endpoints)?.with_timeout(Duration::from_secs(5));
        for i in 0..3 {
            client
                .put(agenda_proto::db::PutRequest {
                    key: format!("rot/{n}/{i}").into_bytes(),
                    value: b"x".to_vec(),
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

/// Writes through the shared client are proposed on the leader (a follower
/// would only pass them on and answer two raft round trips later).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_sends_writes_to_the_leader() -> Result<()> {
    writes_go_to_the_leader(Options::default()).await
}

/// The same when raft has ports of its own: the members' addresses are
/// then not the client endpoints, and the client maps the leader by the
/// member ids its status calls learn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_finds_the_leader_when_raft_has_its_own_ports() -> Result<()> {
    writes_go_to_the_leader(Options {
        peer_ports: true,
        ..Options::default()
    })
    .await
}

async fn writes_go_to_the_leader(opts: Options) -> Result<()> {
    let c = Cluster::start(opts).await?;
    let client = c.client();
    let leader = c.leader().await?;
    // The client learns the leader in the background, after its first call.
    wait_for(
        "a write proposed on the leader",
        Duration::from_secs(10),
        || {
            let (c, client) = (&c, client.clone());
            async move {
                let before = proposals(c, leader).await.ok()?;
                client
                    .put(agenda_proto::db::PutRequest {
                        key: b"warm-up".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                (proposals(c, leader).await.ok()? > before).then_some(())
            }
        },
    )
    .await?;
    let before = proposals(&c, leader).await?;
    let applied_before = applied(&c, leader).await?;
    for i in 0..100 {
        client
            .put(agenda_proto::db::PutRequest {
                key: format!("lead/{i}").into_bytes(),
                value: b"x".to_vec(),
                ..Default::default()
            })
            .await?;
    }
    let on_leader = proposals(&c, leader).await? - before;
    anyhow::ensure!(
        on_leader >= 95.0,
        "only {on_leader} of 100 writes were proposed on the leader"
    );
    // Every applied entry is counted in the apply batch histogram.
    let applied = applied(&c, leader).await? - applied_before;
    anyhow::ensure!(
        applied >= 100.0,
        "the apply batch histogram counted {applied} entries for 100 writes"
    );
    Ok(())
}

/// Linearizable reads through the shared client: with `--db-reads
/// leader` every one is served by the leader; by default (`spread`) the
/// followers serve a share too (each after a ReadIndex round with the
/// leader), so the read load is not the leader's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_reads_on_the_leader_or_spreads_reads() -> Result<()> {
    use agenda_common::db_client::ReadRouting;
    let c = Cluster::start(Options::default()).await?;
    let leader = c.leader().await?;
    let client = c.client().with_reads(ReadRouting::Leader);
    wait_for(
        "a read served by the leader",
        Duration::from_secs(10),
        || {
            let (c, client) = (&c, client.clone());
            async move {
                let before = reads(c, leader).await.ok()?;
                client.get(b"warm-up".to_vec()).await.ok()?;
                (reads(c, leader).await.ok()? > before).then_some(())
            }
        },
    )
    .await?;
    let before = reads(&c, leader).await?;
    for i in 0..100 {
        client.get(format!("lead/{i}").into_bytes()).await?;
    }
    let on_leader = reads(&c, leader).await? - before;
    anyhow::ensure!(
        on_leader >= 95.0,
        "only {on_leader} of 100 reads were served by the leader"
    );

    let spread = c.client();
    let mut before = Vec::new();
    for id in c.nodes.keys() {
        before.push((*id, reads(&c, *id).await?));
    }
    // 32 readers at once: a node's calls in flight weigh against it, so
    // they spread (one at a time, the leader, the quickest, gets most).
    let mut readers = Vec::new();
    for r in 0..32 {
        let spread = spread.clone();
        readers.push(tokio::spawn(async move {
            for i in 0..20 {
                spread.get(format!("spread/{r}/{i}").into_bytes()).await?;
            }
            Ok::<_, agenda_common::Error>(())
        }));
    }
    for r in readers {
        r.await??;
    }
    let mut by_followers = 0.0;
    for (id, was) in before {
        if id != leader {
            by_followers += reads(&c, id).await? - was;
        }
    }
    anyhow::ensure!(
        by_followers >= 64.0,
        "the followers served only {by_followers} of 640 spread reads"
    );
    Ok(())
}

async fn reads(c: &Cluster, id: u64) -> Result<f64> {
    c.metric(id, "agenda_db_linearizable_reads_total").await
}

async fn applied(c: &Cluster, id: u64) -> Result<f64> {
    c.metric(id, "agenda_db_apply_batch_entries_sum").await
}

async fn proposals(c: &Cluster, id: u64) -> Result<f64> {
    c.metric(id, "agenda_db_raft_proposals_total").await
}

/// One leader at a time; a resigned leader frees the key at once; a
/// restarted candidate takes its own key back; a cancelled campaign ends
/// even when the key is its own (a shutdown must not spin re-electing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elections_have_one_leader_and_end_on_shutdown() -> Result<()> {
    use agenda_common::election;
    let c = Cluster::start(Options {
        size: 3,
        ..Default::default()
    })
    .await?;
    let db = c.client();
    let key = "/registry/election/test";
    let ttl = Duration::from_secs(2);
    let stop = CancellationToken::new();
    let a = election::campaign(&db, key, "a", ttl, &stop)
        .await
        .expect("a is elected");
    // b cannot win while a leads.
    let b_stop = CancellationToken::new();
    let b = tokio::spawn({
        let (db, b_stop) = (db.clone(), b_stop.clone());
        async move { election::campaign(&db, key, "b", ttl, &b_stop).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!b.is_finished(), "b was elected while a leads");
    // a resigns: b is elected well before a's lease would expire.
    a.resign().await;
    let b = tokio::time::timeout(Duration::from_secs(1), b)
        .await??
        .expect("b elected");
    assert!(!b.lost.is_cancelled());
    // A candidate with b's id (b restarted) takes the key back at once.
    let again = tokio::time::timeout(
        Duration::from_secs(1),
        election::campaign(&db, key, "b", ttl, &stop),
    )
    .await?
    .expect("b takes its key back");
    // A cancelled campaign returns None at once, even for its own key.
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let none = tokio::time::timeout(
        Duration::from_secs(1),
        election::campaign(&db, key, "b", ttl, &cancelled),
    )
    .await?;
    assert!(none.is_none());
    again.resign().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_longer_than_a_page_is_listed_whole_at_one_revision() -> Result<()> {
    let c = Cluster::start(Options {
        size: 1,
        ..Options::default()
    })
    .await?;
    let client = c.client();
    let mut last = 0;
    for i in 0..12 {
        let put = client
            .put(agenda_proto::db::PutRequest {
                key: format!("/t/list/{i:02}").into_bytes(),
                value: vec![b'v'; i],
                ..Default::default()
            })
            .await?;
        last = put.header.map_or(0, |h| h.revision);
    }
    // The key just past the prefix stays out.
    client
        .put(agenda_proto::db::PutRequest {
            key: b"/t/list0".to_vec(),
            value: b"outside".to_vec(),
            ..Default::default()
        })
        .await?;
    let (listed, revision) = registry::list_prefix(&client, "/t/list/", 5, |kv| kv.value).await?;
    let want: Vec<Vec<u8>> = (0..12)
        .map(|i| format!("/t/list/{i:02}").into_bytes())
        .collect();
    assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), want);
    assert!(listed.values().enumerate().all(|(i, v)| v.len() == i));
    assert!(
        revision > last,
        "listed at {revision}, the last write was {last}"
    );
    // A watch of the prefix starts from the same listing, page by page.
    let stop = CancellationToken::new();
    let mut seen = registry::watch_prefix(&client, "/t/list/".into(), stop.clone());
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|m| m.len() == 12)).await??;
    stop.cancel();
    Ok(())
}
