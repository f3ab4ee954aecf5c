//! `agenda-groups`: groups (hierarchical or flat), ranks, invitations,
//! group events with per-member status, the group agenda with privacy.
//! Keeps no state: everything is in agenda-db.
//!
//! Layout:
//! - [`config`]: flags and environment.
//! - [`handler`]: the operations, on top of `agenda_calendar::store`,
//!   served by `agenda_serving`.

pub mod config;
pub mod handler;

use agenda_calendar::api::Service;
use agenda_calendar::store::Store;
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
    // The links stay alive while serving (they hold the certificate reloads).
    agenda_serving::serve_http(&cfg.http, &shutdown).await?;
    let agenda_serving::Started {
        links: _links,
        db,
        serving,
    } = agenda_serving::start(
        &cfg.tls,
        &cfg.db,
        &cfg.admission,
        listener,
        cfg.advertise.clone(),
        &shutdown,
    )?;
    let store = Store::new(db.clone());
    // Group events of members who joined or left while a process died
    // (see `Store::sync_group_member`).
    let sweeper = agenda_serving::sweep::spawn(
        "interrupted syncs of group events finished",
        agenda_serving::sweep::SWEEP_EVERY,
        shutdown.clone(),
        &store,
        |store| async move {
            store
                .finish_pending_group_syncs(agenda_calendar::store::groups::SYNC_GRACE)
                .await
        },
    );
    let handler = handler::Groups { store };
    agenda_serving::serve(Service::Groups, handler, serving, db, shutdown).await?;
    // The shutdown token stops it between rounds.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), sweeper).await;
    Ok(())
}
