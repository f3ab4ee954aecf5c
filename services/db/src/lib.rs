//! agenda-db: one node of Agenda's replicated store of record and service
//! registry. raft-rs replicates an etcd-v3-like key-value state machine
//! held in memory; redb keeps the raft log, and a state file written off
//! the raft thread bounds how much of it a restart replays (see
//! [`state_file`]).
//!
//! Layout:
//! - [`config`]: flags and environment.
//! - [`backup`]: snapshot files (`agendactl snapshot save`) and seeding
//!   a new cluster's data dirs from one.
//! - [`recovery`]: start-up: the data dir checked and its files brought
//!   back to one consistent state (or made for a new member).
//! - [`node`]: the raft loop (one thread owns the `RawNode`), its
//!   handle, bounded mailbox and ReadIndex queue.
//! - [`keeper`]: runs the raft loop on its thread, and starts it over
//!   from its files once space returns after a full disk.
//! - [`clock`]: where the loop's time comes from (virtual in the
//!   simulator).
//! - [`storage`]: raft log / hard state in redb (raft-rs `Storage`).
//! - [`schema`]: the redb tables.
//! - [`state_machine`]: what applying a command does, the read view and
//!   its queries, snapshots, limits.
//! - [`state_file`]: the state on disk, written in the background.
//! - [`published`]: the latest state handed from the raft thread to
//!   readers.
//! - [`lease`]: the lease expiry clock.
//! - [`watch`]: applied revisions fanned out to watchers.
//! - [`transport`]: raft messages between nodes over gRPC streams.
//! - [`service`]: the request layer (retries, ReadIndex, watches).
//! - [`api`]: gRPC and REST faces over the request layer.
//! - [`access`]: who may touch which keys (per-role permissions).
//! - [`refusals`]: refused certificates, aggregated for the audit log.
//! - [`metrics`]: Prometheus metrics of the node.
//! - [`error`]: the crate's error type and its gRPC and HTTP mapping.
#![deny(missing_docs)]

pub mod access;
pub mod api;
pub mod backup;
pub mod clock;
pub mod config;
pub mod error;
pub mod keeper;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod published;
pub mod recovery;
pub mod refusals;
pub mod schema;
pub mod service;
pub mod state_file;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agenda_proto::db::db_server::DbServer;
use agenda_proto::raft::raft_server::RaftServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};

use node::{Exit, Node, NodeConfig, NodeIo};
use published::Published;
use recovery::Recovered;

pub use recovery::{open_database, LOG_FILE};
pub use state_file::STATE_FILE;

/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
/// `identity`, else plaintext; connections capped by `admission`.
fn serve_grpc(
    router: agenda_common::admission::AdmittedRouter,
    listener: TcpListener,
    identity: &Option<std::sync::Arc<agenda_common::tls::Identity>>,
    admission: &agenda_common::admission::Admission,
    stop: &CancellationToken,
) -> Result<GrpcServing> {
    Ok(match identity {
        Some(id) => Box::pin(
            router.serve_with_incoming_shutdown(
                agenda_common::net::tls_incoming_admitted(
                    listener,
                    id.server_config(true)
                        .map_err(|e| Error::Config(e.to_string()))?,
                    admission,
                ),
                stop.clone().cancelled_owned(),
            ),
        ),
        None => Box::pin(router.serve_with_incoming_shutdown(
            agenda_common::net::incoming_admitted(listener, admission),
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
    let metrics = metrics::Metrics::new(cfg.id);
    let Recovered {
        log_db,
        state_files,
        storage,
        state: sm,
        snapshot_source,
    } = recovery::recover(&cfg, &members, &metrics)?;

    // Members known from the data win; --peers fills in the rest (a
    // joining node needs them to answer the leader).
    let mut book: BTreeMap<u64, String> = members.clone();
    book.extend(sm.members.iter().map(|(id, addr)| (*id, addr.clone())));
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
    let (node, handle) = Node::new(
        node_cfg.clone(),
        storage,
        log_db,
        state_files,
        sm,
        view.clone(),
        snapshot_source,
        hub.clone(),
        NodeIo::server(Box::new(transport.clone()), cfg.max_queued_requests),
        metrics.clone(),
    )?;
    transport.set_node(handle.clone());
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let stop_keeping = CancellationToken::new();
    let keeper = keeper::Keeper {
        cfg: cfg.clone(),
        members: members.clone(),
        node_cfg: node_cfg.clone(),
        metrics: metrics.clone(),
        view: view.clone(),
        hub: hub.clone(),
        transport: transport.clone(),
        handle: handle.clone(),
    };
    tokio::spawn(keeper.keep(node, done_tx, stop_keeping.clone()));

    let stop_servers = CancellationToken::new();
    let db_service = service::Db::new(
        handle.clone(),
        view,
        hub,
        cfg.request_timeout(),
        stop_servers.clone(),
        metrics.read_index_retries.clone(),
    );

    if let Some(dir) = cfg.backup_dir.clone() {
        let schedule = backup::Schedule {
            dir,
            every: cfg.backup_every,
            keep: cfg.backup_keep,
        };
        tracing::info!(dir = %schedule.dir.display(), every = ?schedule.every, keep = schedule.keep, "scheduled backups on (written by the leader)");
        tokio::spawn(backup::scheduled(
            db_service.clone(),
            schedule,
            stop_servers.clone(),
        ));
    }
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
    // Client requests and connections capped (--max-concurrent-requests,
    // --max-connections); raft traffic is never refused.
    let admission = cfg.admission();
    let client_router = admission.grpc_server().add_service(
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
    let grpc_server = serve_grpc(grpc_router, grpc, &identity, &admission, &stop_servers)?;
    let peer_server = match (peer_router, peer) {
        (Some(router), Some(listener)) => Some(serve_grpc(
            router,
            listener,
            &identity,
            &cfg.admission(),
            &stop_servers,
        )?),
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
    stop_keeping.cancel();
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
            "the node's keeper ended without a word".into(),
        )),
    }
}
