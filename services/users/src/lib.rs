//! `agenda-users`: accounts (argon2id passwords, JWT login), profiles,
//! personal events with attendees and RSVP, conflicts, free/busy and
//! notifications, and (one replica at a time) the notification relay to
//! Redis. Keeps no state: everything is in agenda-db.
//!
//! Layout:
//! - [`config`]: flags and environment.
//! - [`handler`]: the operations, on top of `agenda_calendar::store`.
//! - [`password`]: argon2id hashing off the async workers.

pub mod config;
pub mod handler;
pub mod password;

use agenda_calendar::api::Service;
use agenda_calendar::rpc::Serving;
use agenda_calendar::store::Store;
use agenda_common::shutdown::CancellationToken;
use anyhow::Context;
use tokio::net::TcpListener;

pub use config::Config;

/// Serves on `listener` until `shutdown`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let links = agenda_common::net::Links::from_args(&cfg.tls, &shutdown).context("TLS")?;
    let db = links.db_client(&cfg.db.db).context("--db")?;
    let serving = Serving::new(listener, cfg.advertise.clone(), &links).context("TLS")?;
    let advertise = serving.advertise.clone();
    // The signing keys come from agenda-db; wait for it rather than fail,
    // so the processes of a deployment can start in any order.
    let keys = loop {
        match agenda_common::auth::load_or_create(&db).await {
            Ok(k) => break k,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "agenda-db not reachable yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
            Err(e) => return Err(e).context("loading the JWT signing keys"),
        }
    };
    // Every users replica is a relay candidate; one acts at a time.
    let relay = (!cfg.no_relay).then(|| {
        let bus = std::sync::Arc::new(agenda_common::bus::Bus::new(
            &db,
            links.redis(&cfg.redis.redis_password),
            shutdown.clone(),
        ));
        // The address in the id tells operators (and tests) which replica acts.
        let instance = format!("relay-{advertise}-{}", uuid::Uuid::new_v4().simple());
        tokio::spawn(agenda_calendar::relay::run(
            db.clone(),
            bus,
            instance,
            shutdown.clone(),
        ))
    });
    // Before serving: data from an earlier version moves to today's layout.
    let store = Store::new(db.clone());
    loop {
        match store.upgrade_layout().await {
            Ok(_) => break,
            Err(e) if e.status == 503 => {
                tracing::warn!(error = %e.message, "cannot upgrade the data layout yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
            Err(e) => anyhow::bail!("upgrading the data layout: {}", e.message),
        }
    }
    let sweeper = tokio::spawn(sweep_deletions(store.clone(), shutdown.clone()));
    let handler = handler::Users {
        store,
        keys: agenda_common::auth::follow_signing_keys(db.clone(), keys, shutdown.clone()),
        token_ttl_secs: cfg.token_ttl_secs,
    };
    agenda_calendar::rpc::serve(Service::Users, handler, serving, db, shutdown).await?;
    // The shutdown token stops it between rounds.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), sweeper).await;
    if let Some(relay) = relay {
        // The shutdown token stops it; it resigns its election on the way.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), relay).await;
    }
    Ok(())
}

/// How often a replica looks for interrupted account deletions.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Finishes account deletions that a stopped process left halfway (see
/// `Store::delete_user`), at start and then every [`SWEEP_EVERY`]. Every
/// replica does it; finishing one twice at once is harmless.
async fn sweep_deletions(store: Store, shutdown: CancellationToken) {
    loop {
        match store
            .finish_pending_deletions(agenda_calendar::store::users::DELETION_GRACE)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(accounts = n, "finished interrupted account deletions"),
            Err(e) => {
                tracing::warn!(error = %e.message, "could not finish interrupted account deletions; will retry")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}
