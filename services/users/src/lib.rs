//! `agenda-users`: accounts (argon2id passwords, JWT login), profiles,
//! personal events with attendees and RSVP, conflicts, free/busy and
//! notifications, and (one replica at a time) the notification relay to
//! Redis. Keeps no state: everything is in agenda-db.
//!
//! Layout:
//! - [`config`]: flags and environment.
//! - [`handler`]: the operations, on top of `agenda_calendar::store`,
//!   served by `agenda_serving`.
//! - [`password`]: argon2id hashing off the async workers.
//! - [`listings`]: week views answered, answered again while the agenda
//!   has not changed.
//! - `calendar_apps`: feeds, imports, app passwords and CalDAV calls.
//! - [`relay`]: notifications from agenda-db to the Redis stream.

mod calendar_apps;
pub mod config;
pub mod handler;
pub mod listings;
pub mod password;
pub mod relay;

use agenda_calendar::api::Service;
use agenda_calendar::store::Store;
use agenda_calendar::ErrorKind;
use agenda_common::shutdown::CancellationToken;
use agenda_serving::Error;
use tokio::net::TcpListener;

pub use config::Config;

/// Serves on `listener` until `shutdown`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    agenda_serving::serve_http(&cfg.http, &shutdown).await?;
    let agenda_serving::Started { links, db, serving } = agenda_serving::start(
        &cfg.tls,
        &cfg.db,
        &cfg.admission,
        listener,
        cfg.advertise.clone(),
        &shutdown,
    )?;
    let advertise = serving.advertise.clone();
    // The signing keys come from agenda-db; wait for it rather than fail,
    // so the processes of a deployment can start in any order.
    let keys = agenda_common::shutdown::retry(
        &shutdown,
        "agenda-db not reachable yet",
        agenda_common::Error::is_retryable,
        || agenda_common::auth::load_or_create(&db),
    )
    .await;
    let Some(keys) = keys else {
        return Ok(());
    };
    let keys = keys.map_err(|e| Error::Start {
        what: "loading the JWT signing keys",
        cause: e.to_string(),
    })?;
    // Every users replica is a relay candidate; one acts at a time.
    let relay = (!cfg.no_relay).then(|| {
        let bus = std::sync::Arc::new(agenda_common::bus::Bus::new(
            &db,
            links.redis(&cfg.redis.redis_password),
            shutdown.clone(),
        ));
        // The address in the id tells operators (and tests) which replica acts.
        let instance = format!("relay-{advertise}-{}", uuid::Uuid::new_v4().simple());
        tokio::spawn(relay::run(db.clone(), bus, instance, shutdown.clone()))
    });
    // Before serving: data from an earlier version moves to today's layout.
    let store = Store::new(db.clone());
    let upgraded = agenda_common::shutdown::retry(
        &shutdown,
        "cannot upgrade the data layout yet",
        |e: &agenda_calendar::ApiError| e.kind == ErrorKind::Unavailable,
        || store.upgrade_layout(),
    )
    .await;
    let already_upgraded = match upgraded {
        None => return Ok(()),
        Some(Ok(moved)) => moved.is_none(),
        Some(Err(e)) => {
            return Err(Error::Start {
                what: "upgrading the data layout",
                cause: e.message,
            })
        }
    };
    // A replica of the previous version may still be serving (a rolling
    // upgrade) and writing where layout 3 kept series; looked for again
    // at every start after the one that upgraded (which just walked them),
    // in the background (see `Store::refile_stragglers`).
    let stragglers = already_upgraded.then(|| {
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                refiled = store.refile_stragglers() => match refiled {
                    Ok(0) => {}
                    Ok(moved) => tracing::info!(moved, "series copies of an older version refiled"),
                    Err(e) => tracing::warn!(error = %e.message, "could not look for series copies of an older version"),
                },
            }
        })
    });
    // Account deletions a stopped process left halfway (see
    // `Store::delete_user`).
    let sweeper = agenda_serving::sweep::spawn(
        "interrupted account deletions finished",
        agenda_serving::sweep::SWEEP_EVERY,
        shutdown.clone(),
        &store,
        |store| async move {
            store
                .finish_pending_deletions(agenda_calendar::store::users::DELETION_GRACE)
                .await
        },
    );
    // Session keys of accounts deleted longer ago than any token lives
    // (see `Store::forget_ended_sessions`).
    let ended_sessions = agenda_serving::sweep::spawn(
        "session keys of deleted accounts forgotten",
        agenda_serving::sweep::SWEEP_EVERY,
        shutdown.clone(),
        &store,
        |store| async move {
            store
                .forget_ended_sessions(agenda_calendar::store::sessions::ENDED_SESSION_KEEP)
                .await
        },
    );
    // Reminders, fired within a second of being due (see
    // `Store::fire_due_reminders`).
    let reminders = agenda_serving::sweep::spawn(
        "reminders fired",
        REMINDERS_EVERY,
        shutdown.clone(),
        &store,
        |store| async move { store.fire_due_reminders(chrono::Utc::now()).await },
    );
    // CalDAV tombstones past the sync history, also of calendars no
    // client reads (see `store::dav`).
    let dav_history = std::time::Duration::from_secs(cfg.dav_sync_history_secs);
    let tombstones = agenda_serving::sweep::spawn(
        "CalDAV tombstones past the sync history dropped",
        TOMBSTONES_EVERY,
        shutdown.clone(),
        &store,
        move |store| async move { store.prune_tombstones(dav_history).await },
    );
    let handler = handler::Users {
        store,
        keys: agenda_common::auth::follow_signing_keys(db.clone(), keys, shutdown.clone()),
        token_ttl_secs: cfg.token_ttl_secs,
        dav_history,
        listings: listings::Listings::new(cfg.week_view_cache_mib as usize * 1024 * 1024),
    };
    agenda_serving::serve(Service::Users, handler, serving, db, shutdown).await?;
    // The shutdown token stops them between rounds.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), sweeper).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), ended_sessions).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), reminders).await;
    if let Some(stragglers) = stragglers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), stragglers).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), tombstones).await;
    if let Some(relay) = relay {
        // The shutdown token stops it; it resigns its election on the way.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), relay).await;
    }
    Ok(())
}

/// How often a replica drops CalDAV tombstones past the sync history.
const TOMBSTONES_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// How often a replica looks for reminders that are due.
const REMINDERS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
