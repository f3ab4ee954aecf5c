//! agenda-db: one node of Agenda's replicated store of record and service
//! registry. raft-rs replicates an etcd-v3-like key-value state machine
//! held in memory; redb keeps the raft log, and a state file written off
//! the raft thread bounds how much of it a restart replays (see
//! [`state_file`]).
//!
//! Layout:
//! - [`config`]: flags and environment.
//! - [`node`]: the raft loop (one thread owns the `RawNode`).
//! - [`storage`]: raft log / hard state in redb (raft-rs `Storage`).
//! - [`state_machine`]: what applying a command does; snapshots.
//! - [`state_file`]: the state on disk, written in the background.
//! - [`schema`]: the redb tables.
//! - [`transport`]: raft messages between nodes over gRPC streams.
//! - [`service`]: the request layer (retries, ReadIndex, watches).
//! - [`api`]: gRPC and REST faces over the request layer.
//! - [`access`]: who may touch which keys (per-role permissions).
//! - [`refusals`]: refused certificates, aggregated for the audit log.
//! - [`lease`], [`watch`], [`metrics`], [`error`].
#![deny(missing_docs)]

pub mod access;
pub mod api;
pub mod config;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod refusals;
pub mod schema;
pub mod service;
pub mod state_file;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod watch;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agenda_proto::db::db_server::DbServer;
use agenda_proto::raft::raft_server::RaftServer;
use redb::{Database, ReadableDatabase};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};

use node::{Exit, Node, NodeConfig};
use state_file::StateFiles;
use state_machine::{Published, StateMachine};
use storage::RaftStorage;

pub use state_file::STATE_FILE;

/// The raft log file inside the data dir (see `schema.rs`).
pub const LOG_FILE: &str = "raft-log.redb";
/// Where the log of a new cluster starts (see `RaftStorage::bootstrap`).
const BOOTSTRAP_INDEX: u64 = 5;
/// Term of that starting point.
const BOOTSTRAP_TERM: u64 = 5;
/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (or creates) a node's log file, creating its tables so readers
/// never meet a missing one.
pub fn open_database(path: &Path) -> Result<Database> {
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Config(format!(
            "{} is already in use by another agenda-db process",
            path.display()
        )),
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => Error::Config(format!(
            "{} is corrupt ({msg}); restore it from a peer by removing this data dir and re-adding the member",
            path.display()
        )),
        other => Error::Config(format!("cannot open {}: {other}", path.display())),
    })?;
    let txn = db.begin_write()?;
    {
        let _ = txn.open_table(schema::LOG)?;
        let _ = txn.open_table(schema::META)?;
    }
    txn.commit()?;
    Ok(db)
}

/// Checks that the data dir belongs to this node of this cluster, or stamps
/// a fresh one. Returns true if it was fresh.
fn check_identity(db: &Database, token: &str, id: u64) -> Result<bool> {
    let want = format!("{token}\n{id}");
    let found = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(schema::META)?;
        let v = meta.get(schema::META_IDENTITY)?;
        v.map(|v| String::from_utf8_lossy(v.value()).into_owned())
    };
    match found {
        Some(f) if f == want => Ok(false),
        Some(f) => {
            let (t, i) = f.split_once('\n').unwrap_or((&f, "?"));
            Err(Error::Config(format!(
                "data dir belongs to node {i} of cluster {t:?}, not node {id} of cluster {token:?}; \
                 use that node's flags or an empty data dir"
            )))
        }
        None => {
            let txn = db.begin_write()?;
            txn.open_table(schema::META)?
                .insert(schema::META_IDENTITY, want.as_bytes())?;
            txn.commit()?;
            Ok(true)
        }
    }
}

/// The sockets a node serves on (bound by `main` from the flags).
pub struct Listeners {
    /// --listen: the gRPC client API (and raft traffic without `peer`).
    pub grpc: TcpListener,
    /// --http: the operator REST.
    pub http: TcpListener,
    /// --peer-listen: raft traffic from peers only.
    pub peer: Option<TcpListener>,
}

type GrpcServing = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), tonic::transport::Error>> + Send>,
>;

/// Serves `router` on `listener` until `stop`: mutual TLS with
/// `identity`, else plaintext.
fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    identity: &Option<std::sync::Arc<agenda_common::tls::Identity>>,
    stop: &CancellationToken,
) -> Result<GrpcServing> {
    Ok(match identity {
        Some(id) => Box::pin(
            router.serve_with_incoming_shutdown(
                agenda_common::net::tls_incoming(
                    listener,
                    id.server_config(true)
                        .map_err(|e| Error::Config(e.to_string()))?,
                ),
                stop.clone().cancelled_owned(),
            ),
        ),
        None => Box::pin(router.serve_with_incoming_shutdown(
            agenda_common::net::incoming(listener),
            stop.clone().cancelled_owned(),
        )),
    })
}

/// Runs a node until `shutdown` is cancelled, the node is removed from the
/// cluster, or a fatal error. Listeners are bound by the caller so tests can
/// use port 0.
pub async fn run(cfg: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
    let Listeners { grpc, http, peer } = listeners;
    let members = cfg.members().map_err(Error::Config)?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        Error::Config(format!(
            "cannot create data dir {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let log_db = Arc::new(open_database(&cfg.data_dir.join(LOG_FILE))?);
    let fresh_log = check_identity(&log_db, &cfg.cluster_token, cfg.id)?;
    let metrics = metrics::Metrics::new(cfg.id);
    let state_files = Arc::new(
        StateFiles::new(&cfg.data_dir, &cfg.cluster_token, cfg.id)
            .timed(metrics.state_sync_seconds.clone()),
    );
    let loaded = state_files.load(cfg.history)?;
    if fresh_log != loaded.is_none() {
        return Err(Error::Config(format!(
            "{} has only one of {LOG_FILE} and {STATE_FILE}; it cannot be used (remove it and re-add the member)",
            cfg.data_dir.display()
        )));
    }
    let fresh = loaded.is_none();
    let mut sm = loaded.unwrap_or_else(|| StateMachine::new(cfg.history));
    sm.set_history_bytes(cfg.history_bytes);
    let snapshot_source = Published::new(sm.clone());

    let mut storage = RaftStorage::load(&log_db, snapshot_source.clone())?;
    if !storage.is_initialized() && !cfg.join {
        bootstrap(&log_db, &state_files, &mut storage, &mut sm, &members)?;
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapped a new cluster member");
    } else if cfg.join && !storage.is_initialized() {
        if fresh {
            // So a restart finds both files (see the check above).
            state_files.write(&sm)?;
        }
        tracing::info!("starting empty; waiting for the leader to send a snapshot");
    } else {
        reconcile(&log_db, &mut storage, &sm).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", cfg.data_dir.display())),
            other => other,
        })?;
        tracing::info!(
            applied = sm.applied.0,
            revision = sm.revision,
            last_log = storage.last(),
            "restarted from disk"
        );
    }

    // Members known from the data win; --peers fills in the rest (a
    // joining node needs them to answer the leader).
    let mut book: BTreeMap<u64, String> = members;
    book.extend(sm.members.iter().map(|(id, addr)| (*id, addr.clone())));
    snapshot_source.store(sm.clone());
    let view = Published::new(sm.view());
    let tls_error = |e: agenda_common::Error| Error::Config(e.to_string());
    let identity = cfg.tls.identity().map_err(tls_error)?;
    if let Some(id) = &identity {
        id.spawn_reload(shutdown.clone());
    }
    let peer_tls = identity
        .as_ref()
        .map(|id| id.client_config())
        .transpose()
        .map_err(tls_error)?;
    let transport = transport::Transport::new(
        cfg.id,
        cfg.cluster_token.clone(),
        book,
        tokio::runtime::Handle::current(),
        peer_tls,
    );
    let hub = watch::WatchHub::default();
    let node_cfg = NodeConfig {
        id: cfg.id,
        tick: cfg.tick(),
        election_ticks: cfg.election_ticks as usize,
        heartbeat_ticks: 2,
        snapshot_threshold: cfg.snapshot_threshold,
        state_sync: Duration::from_millis(cfg.state_sync_ms),
        state_sync_bytes: cfg.state_sync_bytes,
    };
    let (node, handle, rx) = Node::new(
        node_cfg,
        storage,
        log_db.clone(),
        state_files,
        sm,
        view.clone(),
        snapshot_source,
        hub.clone(),
        transport.clone(),
        metrics.clone(),
    )?;
    transport.set_node(handle.clone());
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("raft-{}", cfg.id))
        .spawn(move || {
            let _ = done_tx.send(node.run(rx));
        })
        .map_err(|e| Error::Config(format!("cannot start the raft thread: {e}")))?;

    let stop_servers = CancellationToken::new();
    let db_service = service::Db::new(
        handle.clone(),
        view,
        hub,
        cfg.request_timeout(),
        stop_servers.clone(),
        metrics.read_index_retries.clone(),
    );

    let grpc_addr = grpc.local_addr().ok();
    let refusals = Arc::new(refusals::Refusals::default());
    tokio::spawn(refusals::write(
        refusals.clone(),
        db_service.clone(),
        stop_servers.clone(),
    ));
    let raft_service = || {
        RaftServer::new(transport::RaftService {
            node: handle.clone(),
            token: cfg.cluster_token.clone(),
            shutdown: stop_servers.clone(),
        })
        .max_decoding_message_size(transport::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(transport::MAX_MESSAGE_BYTES)
    };
    let client_router = agenda_common::net::grpc_server().add_service(
        DbServer::new(api::grpc::GrpcApi {
            db: db_service.clone(),
            refusals: refusals.clone(),
        })
        .max_decoding_message_size(8 * 1024 * 1024),
    );
    // Raft traffic on its own port (--peer-listen), so client and peer
    // traffic can be firewalled apart; else beside the client API.
    let (grpc_router, peer_router) = match &peer {
        Some(_) => (
            client_router,
            Some(agenda_common::net::grpc_server().add_service(raft_service())),
        ),
        None => (client_router.add_service(raft_service()), None),
    };
    let peer_addr = peer.as_ref().and_then(|l| l.local_addr().ok());
    let grpc_server = serve_grpc(grpc_router, grpc, &identity, &stop_servers)?;
    let peer_server = match (peer_router, peer) {
        (Some(router), Some(listener)) => {
            Some(serve_grpc(router, listener, &identity, &stop_servers)?)
        }
        _ => None,
    };
    let http_addr = http.local_addr().ok();
    let router = api::http::router(api::http::HttpState {
        db: db_service,
        metrics,
    });
    // With TLS, the operator REST serves operators only (their
    // certificate's role): it reads and writes everything. /healthz and
    // /metrics answer any certificate of the cluster, so health checks
    // and scrapers need no operator's power.
    let http_server: std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>,
    > = match &identity {
        Some(id) => {
            let tls = agenda_common::net::TlsListener::new(
                http,
                id.server_config(true).map_err(tls_error)?,
            )
            .map_err(|e| Error::Config(format!("--http: {e}")))?;
            let router = router.layer(axum::middleware::from_fn_with_state(
                refusals.clone(),
                api::http::operators_only,
            ));
            let serve = axum::serve(
                tls,
                router.into_make_service_with_connect_info::<agenda_common::net::CallerRole>(),
            )
            .with_graceful_shutdown(stop_servers.clone().cancelled_owned());
            Box::pin(async move { serve.await })
        }
        None => {
            let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(http, router)
                .with_graceful_shutdown(stop_servers.clone().cancelled_owned());
            Box::pin(async move { serve.await })
        }
    };
    tracing::info!(id = cfg.id, grpc = ?grpc_addr, http = ?http_addr, peer = ?peer_addr, "agenda-db node serving");

    let grpc_task = tokio::spawn(grpc_server);
    let http_task = tokio::spawn(http_server);
    let peer_task = peer_server.map(tokio::spawn);

    let outcome = tokio::select! {
        () = shutdown.cancelled() => None,
        r = &mut done_rx => Some(r),
    };
    // Stop accepting, let in-flight requests finish (bounded), then stop raft.
    stop_servers.cancel();
    let drain = async {
        let _ = grpc_task.await;
        let _ = http_task.await;
        if let Some(t) = peer_task {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; closing anyway");
    }
    handle.stop();
    let outcome = match outcome {
        Some(r) => r,
        None => done_rx.await,
    };
    transport.shutdown();
    match outcome {
        Ok(Ok(Exit::Stopped)) => {
            tracing::info!("node stopped cleanly");
            Ok(())
        }
        Ok(Ok(Exit::Removed)) => {
            tracing::info!("this member was removed from the cluster; exiting");
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "raft node failed; stopping");
            Err(e)
        }
        Err(_) => Err(Error::Fatal(
            "the raft thread died unexpectedly (see the panic message above)".into(),
        )),
    }
}

/// Brings the log file in line with the state file after a restart. The
/// two are written separately, so a crash leaves the state behind the log
/// (normal: the node replays) or, in the middle of a snapshot install,
/// ahead of it.
fn reconcile(log_db: &Database, storage: &mut RaftStorage, sm: &StateMachine) -> Result<()> {
    if storage.hard_state().commit < sm.applied.0 {
        // The commit index is saved lazily; what was applied was
        // committed, so the state file's applied index is a lower bound.
        let txn = log_db.begin_write()?;
        storage.set_commit(&txn, sm.applied.0)?;
        txn.commit()?;
    }
    if sm.applied.0 > storage.last() {
        // Only a crash in the middle of installing a snapshot leaves the
        // state ahead of the log (state first, log second): finish the job
        // by moving the log to the snapshot's position.
        tracing::warn!(
            applied = sm.applied.0,
            last_log = storage.last(),
            "state file is ahead of the raft log (interrupted snapshot install); resetting the log"
        );
        let mut meta = raft::prelude::SnapshotMetadata {
            index: sm.applied.0,
            term: sm.applied.1,
            ..Default::default()
        };
        meta.set_conf_state(storage.conf_state().clone());
        let txn = log_db.begin_write()?;
        storage.apply_snapshot(&txn, &meta)?;
        txn.commit()?;
    }
    if sm.applied.0 + 1 < storage.first() {
        return Err(Error::Config(format!(
            "the state file (applied {}) is older than the start of the raft log ({}..={}); \
             remove the data dir and re-add the member",
            sm.applied.0,
            storage.first(),
            storage.last()
        )));
    }
    Ok(())
}

/// Makes a founding member: the state first, then the log, so a crash in
/// between is repaired by `reconcile` (state ahead of the log).
fn bootstrap(
    log_db: &Database,
    state_files: &StateFiles,
    storage: &mut RaftStorage,
    sm: &mut StateMachine,
    members: &BTreeMap<u64, String>,
) -> Result<()> {
    let cs = raft::prelude::ConfState {
        voters: members.keys().copied().collect(),
        ..Default::default()
    };
    sm.applied = (BOOTSTRAP_INDEX, BOOTSTRAP_TERM);
    sm.set_members(members.clone());
    sm.conf_state = cs.clone();
    state_files.write(sm)?;
    storage.conf_state_applied(cs);
    let txn = log_db.begin_write()?;
    storage.bootstrap(&txn, BOOTSTRAP_INDEX, BOOTSTRAP_TERM)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term: 6,
                ..Default::default()
            })
            .collect()
    }

    /// A founding member's files with log entries 6..=10, compacted up to
    /// `compact_to` (5 = not at all).
    fn setup(
        compact_to: u64,
    ) -> (
        tempfile::TempDir,
        Database,
        Published<StateMachine>,
        RaftStorage,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = open_database(&dir.path().join(LOG_FILE)).unwrap();
        let state = Published::new(StateMachine::new(100));
        let mut storage = RaftStorage::load(&log, state.clone()).unwrap();
        let txn = log.begin_write().unwrap();
        storage.bootstrap(&txn, 5, 5).unwrap();
        storage.append(&txn, &entries(6, 10)).unwrap();
        storage.compact(&txn, compact_to).unwrap();
        txn.commit().unwrap();
        (dir, log, state, storage)
    }

    #[test]
    fn a_state_ahead_of_the_log_moves_the_log_forward() {
        let (_dir, log, state, mut storage) = setup(5);
        let mut sm = StateMachine::new(100);
        sm.applied = (20, 6); // as if a snapshot at 20 was installed
        reconcile(&log, &mut storage, &sm).unwrap();
        assert_eq!((storage.first(), storage.last()), (21, 20));
        assert!(storage.hard_state().commit >= 20);
        let reloaded = RaftStorage::load(&log, state).unwrap();
        assert_eq!((reloaded.first(), reloaded.last()), (21, 20));
    }

    #[test]
    fn a_state_behind_the_log_is_replayed_and_lifts_the_commit_index() {
        let (_dir, log, _state, mut storage) = setup(5);
        let mut sm = StateMachine::new(100);
        sm.applied = (8, 6);
        reconcile(&log, &mut storage, &sm).unwrap();
        assert_eq!((storage.first(), storage.last()), (6, 10));
        assert_eq!(storage.hard_state().commit, 8);
    }

    #[test]
    fn a_state_older_than_the_log_start_is_refused() {
        let (_dir, log, _state, mut storage) = setup(8);
        let mut sm = StateMachine::new(100);
        sm.applied = (6, 6);
        let err = reconcile(&log, &mut storage, &sm).unwrap_err();
        assert!(err
            .to_string()
            .contains("older than the start of the raft log"));
    }
}
