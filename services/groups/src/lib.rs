//! `agenda-groups`: groups (hierarchical or flat), ranks, invitations,
//! group events with per-member status, the group agenda with privacy.
//! Keeps no state: everything is in agenda-db.
//!
//! Layout:
//! - [`config`]: flags and environment.
//! - [`handler`]: the operations, on top of `agenda_calendar::store`.

pub mod config;
pub mod handler;

use agenda_calendar::api::Service;
use agenda_calendar::store::Store;
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use anyhow::Context;
use tokio::net::TcpListener;

pub use config::Config;

/// Serves on `listener` until `shutdown`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = DbClient::new(&cfg.db.db).context("--db")?;
    let advertise = match cfg.advertise.clone() {
        Some(a) => a,
        None => listener.local_addr()?.to_string(),
    };
    let handler = handler::Groups {
        store: Store::new(db.clone()),
    };
    agenda_calendar::rpc::serve(Service::Groups, handler, listener, advertise, db, shutdown)
        .await?;
    Ok(())
}
