//! `agenda-supervisor`: one per machine. It owns the machine's
//! redis-server (starts it, restarts it as a replica when it dies, stops
//! it on shutdown) and, while it holds the supervisor lease in agenda-db,
//! keeps exactly one Redis primary: it checks every node, promotes the
//! best replica when the primary has been down for `--down-after-ms`,
//! fences any other master, and publishes the primary with an epoch in the
//! registry (docs/MESSAGING.md).
//!
//! Layout:
//! - [`config`]: flags and environment, and their validation.
//! - [`election`]: the supervisor lease and key in agenda-db.
//! - [`redis_node`]: health checks (PING, INFO replication) and REPLICAOF,
//!   each with a deadline.
//! - [`failover`]: the decisions, pure (no I/O), unit-tested.
//! - [`control`]: the loop that checks, decides and acts.
//! - [`published`]: the primary record in the registry (read, publish).
//! - [`local`]: the local redis-server process.
//! - [`metrics`]: Prometheus metrics, `/metrics` and `/healthz`.
//! - [`error`]: the crate's error type.
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod election;
pub mod error;
pub mod failover;
pub mod local;
pub mod metrics;
pub mod published;
pub mod redis_node;

use std::sync::Arc;
use std::time::Duration;

use agenda_common::shutdown::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use error::{Error, Result};

/// Supervises until `shutdown`, serving metrics on `http_listener`.
pub async fn run(
    cfg: Config,
    http_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    cfg.validate()?;
    let binary = match &cfg.local_redis {
        Some(_) => Some(local::resolve_binary(&cfg.redis_server)?),
        None => None,
    };
    let id = cfg.id();
    // Cancelled on shutdown, or when a part fails and the rest must stop.
    let stop = shutdown.child_token();
    let metrics = Arc::new(Metrics::new().map_err(Error::Metrics)?);
    let http = tokio::spawn(metrics::serve(http_listener, metrics.clone(), stop.clone()));
    let links =
        agenda_common::net::Links::from_args(&cfg.tls, &stop).map_err(Error::setup("TLS"))?;
    let db = links
        .db_client(&cfg.db.db)
        .map_err(Error::setup("--db"))?
        .with_reads(cfg.db.db_reads);
    let redis_link = links.redis(&cfg.redis.redis_password);
    let loop_db = db.with_timeout(Duration::from_secs(2));
    tracing::info!(%id, nodes = ?cfg.redis_nodes, local = ?cfg.local_redis, "agenda-supervisor starting");

    // The processes of a deployment start in any order: wait for agenda-db.
    let first = agenda_common::shutdown::retry(
        &stop,
        "agenda-db not reachable yet",
        |_| true,
        || published::read(&loop_db),
    )
    .await;
    // Every error is retried: only a stop ends the wait.
    let Some(Ok(first)) = first else {
        return Ok(());
    };
    let (primary_tx, primary_rx) = watch::channel(first.primary.clone());

    let (leader, election) = election::spawn(
        db.clone(),
        id.clone(),
        cfg.lease_ttl(),
        metrics.clone(),
        stop.clone(),
    );

    let local = match (&cfg.local_redis, &cfg.redis_dir, binary) {
        (Some(addr), Some(dir), Some(binary)) => {
            let spec = local::Spec {
                addr: addr.clone(),
                nodes: cfg.redis_nodes.clone(),
                binary,
                dir: dir.clone(),
                password: cfg.redis.redis_password.clone(),
                link: redis_link.clone(),
                tls: cfg.tls.tls_dir.as_ref().map(|dir| {
                    agenda_common::tls::TlsFiles::in_dir(dir, cfg.redis_tls_name.trim())
                }),
                timeout: cfg.check_timeout(),
                primary_wait: (cfg.down_after() * 3 + cfg.lease_ttl()).max(Duration::from_secs(3)),
            };
            tokio::spawn(local::follow_tls(spec.clone(), stop.clone()));
            Some(tokio::spawn(local::run(
                spec,
                loop_db.clone(),
                primary_rx,
                metrics.clone(),
                stop.clone(),
            )))
        }
        _ => None,
    };

    let mut nodes = Vec::new();
    for addr in &cfg.redis_nodes {
        nodes.push(redis_node::RedisNode::new(
            addr,
            &redis_link,
            cfg.check_timeout(),
        )?);
    }
    let control = control::Control::new(
        id,
        loop_db,
        nodes,
        cfg.down_after(),
        metrics,
        leader,
        primary_tx,
        cfg.check_interval(),
    );
    let mut local = local;
    let early = tokio::select! {
        () = control.run(stop.clone()) => None,
        // The local process manager only ends early on an error (e.g. the
        // first redis-server could not be started): stop everything.
        r = async {
            match local.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        } => {
            local = None;
            Some(r)
        }
    };
    stop.cancel();

    // Shutdown: give the lease up, stop the local Redis, stop serving.
    let _ = election.await;
    let local_task = |cause| Error::Task {
        what: "local redis task",
        cause,
    };
    let local_result = match (early, local) {
        (Some(r), _) => r.map_err(local_task)?,
        (None, Some(task)) => task.await.map_err(local_task)?,
        (None, None) => Ok(()),
    };
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
        Err(e) => tracing::warn!(error = %e, "metrics server task failed"),
    }
    local_result
}

use metrics::Metrics;
