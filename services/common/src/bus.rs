//! The Redis bus: connections to whichever Redis is the primary now.
//!
//! Nothing hard-codes a Redis address. The acting supervisor publishes
//! the primary in the registry (`/registry/config/redis-primary`, see
//! docs/MESSAGING.md); [`Bus`] watches that key and hands out connections
//! to the current primary, reconnecting when the supervisor moves it.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db_client::DbClient;
use crate::error::{Error, Result};
use crate::registry;

/// Stream of notifications (fields `id`, `user`, `data`).
pub const NOTIFICATIONS_STREAM: &str = "agenda:notifications";

/// How the primary is published (the registry's record).
pub use crate::registry::RedisPrimary as Primary;

/// Connections to the current Redis primary.
pub struct Bus {
    primary: watch::Receiver<Option<Primary>>,
    link: crate::net::RedisLink,
    cached: Mutex<Option<(Primary, MultiplexedConnection)>>,
}

/// A Redis failure as this crate's error (retry later).
pub fn redis_error(e: redis::RedisError) -> Error {
    Error::Unavailable(format!("redis: {e}"))
}

impl Bus {
    /// Follows the published primary until `stop`; connects over `link`.
    pub fn new(db: &DbClient, link: crate::net::RedisLink, stop: CancellationToken) -> Bus {
        let raw = registry::watch_key(db, registry::REDIS_PRIMARY.to_string(), stop.clone());
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut raw = raw;
            loop {
                let parsed = raw.borrow_and_update().as_ref().and_then(|b| {
                    Primary::decode(b)
                        .map_err(|e| tracing::error!(error = %e, "ignoring a malformed redis-primary record"))
                        .ok()
                });
                if parsed.is_some() {
                    tx.send_if_modified(|cur| {
                        let changed = *cur != parsed;
                        if changed {
                            tracing::info!(primary = ?parsed, "redis primary");
                            *cur = parsed.clone();
                        }
                        changed
                    });
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    changed = raw.changed() => if changed.is_err() { break },
                }
            }
        });
        Bus {
            primary: rx,
            link,
            cached: Mutex::new(None),
        }
    }

    /// The primary as last published, if any.
    pub fn primary(&self) -> Option<Primary> {
        self.primary.borrow().clone()
    }

    /// A receiver that changes whenever the primary does.
    pub fn watch(&self) -> watch::Receiver<Option<Primary>> {
        self.primary.clone()
    }

    /// Waits until a primary is published.
    pub async fn wait_primary(&self) -> Primary {
        let mut rx = self.primary.clone();
        loop {
            if let Some(p) = rx.borrow_and_update().clone() {
                return p;
            }
            if rx.changed().await.is_err() {
                // The watcher stopped (shutdown): nothing will be published.
                std::future::pending::<()>().await;
            }
        }
    }

    /// A shared (multiplexed) connection to the current primary, for short
    /// commands (and `WAIT`s of up to a few seconds); a new one is made when
    /// the primary moved or after [`Bus::reset`].
    pub async fn connection(&self) -> Result<(Primary, MultiplexedConnection)> {
        let primary = self
            .primary()
            .ok_or_else(|| Error::Unavailable("no Redis primary published yet".into()))?;
        if let Some((p, c)) = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if *p == primary {
                return Ok((p.clone(), c.clone()));
            }
        }
        let conn = self.connect(&primary, Duration::from_secs(5)).await?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((primary.clone(), conn.clone()));
        Ok((primary, conn))
    }

    /// Forgets the shared connection (after an error), so the next call
    /// reconnects.
    pub fn reset(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A connection of its own to `primary`, for blocking reads (they would
    /// stall every other command on a shared one). `response_timeout` must
    /// exceed the longest BLOCK/WAIT sent on it.
    pub async fn connect(
        &self,
        primary: &Primary,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection> {
        let client = self.link.client(&primary.addr)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(redis_error)
    }
}
