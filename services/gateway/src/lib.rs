//! `agenda-gateway`: the public HTTP/JSON API of Agenda.
//!
//! Layout:
//! - [`config`]: flags and environment.
//! - [`routes`]: one module per resource; handlers turn requests into
//!   operations for the services.
//! - [`dav`]: the CalDAV server (WebDAV in, calls to the users service).
//! - [`extract`]: the caller (JWT checked), JSON bodies, query strings.
//! - [`upstream`]: discovery, balancing and retries over the users/groups
//!   replicas (behind [`upstream::Replicas`], which tests fake).
//! - [`limits`]: what one client may make the system do (sizes, rates,
//!   failed logins): one layer in front of every route.
//! - [`listener`]: accepted connections (socket options, addresses).
//! - [`live`]: the Redis stream to open WebSockets (`routes::stream`).
//! - [`error`]: the error shape on the wire.
//! - [`metrics`]: request ids, per-route latency and status counts.
//! - [`openapi`]: the generated OpenAPI document.
//! - [`sessions`]: session generations followed from agenda-db.
//! - [`server`]: why serving fails, and the deadline on draining at
//!   shutdown (`--shutdown-grace-ms`).
//! - [`shaped`]: the error shape for the answers hyper writes itself.
//! - [`verified`]: access tokens already verified (a bounded cache).
//! - [`web`]: the web app's files at `/` (`--web-dir`).
//! - [`vip`]: the VIP fence (serve VIP traffic only while this machine
//!   holds the VIP lease).

pub mod config;
pub mod dav;
pub mod error;
pub mod extract;
pub mod limits;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod sessions;
pub mod shaped;
pub mod upstream;
pub mod verified;
pub mod vip;
pub mod web;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use agenda_calendar::ApiError;
use agenda_common::auth::VerifyingKeys;
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use server::Error;

use crate::error::HttpError;

/// What every handler shares.
pub struct AppState {
    pub db: DbClient,
    pub upstream: upstream::Upstream,
    pub keys: watch::Receiver<Option<VerifyingKeys>>,
    pub metrics: Arc<metrics::Metrics>,
    pub hub: Arc<live::Hub>,
    pub ws_heartbeat: std::time::Duration,
    /// Cancelled at shutdown (ends WebSocket sessions).
    pub shutdown: CancellationToken,
    /// Failed-login limits.
    pub logins: limits::LoginGuard,
    /// Per-request limits (sizes, rates).
    pub requests: limits::RequestLimits,
    /// Largest request body (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// Session generations (ended sessions refused at once).
    pub sessions: Arc<sessions::Sessions>,
    /// Access tokens already verified.
    pub verified: verified::VerifiedTokens,
    /// The web app's built files (`--web-dir`), served at `/`.
    pub web_dir: Option<std::path::PathBuf>,
    /// Whether the public side is HTTPS (the scheme of the URLs it hands
    /// out, such as feed URLs).
    pub https: bool,
}

/// A request no route took: the web app's files, or the JSON 404.
async fn web_fallback(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    web::fallback(state.web_dir.as_deref(), req).await
}

/// The whole HTTP application.
pub fn app(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .merge(routes::api())
        .merge(dav::routes())
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/openapi.json", get(routes::ops::openapi))
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .fallback(web_fallback)
        .method_not_allowed_fallback(|| async { HttpError(ApiError::method_not_allowed()) })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::guard,
        ))
        .layer(axum::middleware::from_fn(metrics::request_id))
        .with_state(state)
}

/// Serves on `listener` until `shutdown`, then finishes in-flight requests
/// for at most `--shutdown-grace-ms`.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let setup = |what| move |cause| Error::Setup { what, cause };
    let links = agenda_common::net::Links::from_args(&cfg.tls, &shutdown).map_err(setup("TLS"))?;
    let db = links
        .db_client(&cfg.db.db)
        .map_err(setup("--db"))?
        .with_reads(cfg.db.db_reads);
    // With a certificate the public side is HTTPS (and WSS).
    let public_tls = links.public_server_config().map_err(setup("TLS"))?;
    let stop = shutdown.child_token();
    let hub = live::Hub::new(cfg.ws_queue as usize);
    let bus = Arc::new(agenda_common::bus::Bus::new(
        &db,
        links.redis(&cfg.redis.redis_password),
        stop.clone(),
    ));
    tokio::spawn(live::consume(bus, hub.clone(), stop.clone()));
    // Requests and connections at once (--max-concurrent-requests,
    // --max-connections): over them, 503 or a closed connection at once.
    let admission = cfg.admission();
    let state = Arc::new(AppState {
        upstream: upstream::Upstream::new(&db, links, cfg.request_timeout(), stop.clone()),
        keys: agenda_common::auth::watch_public_keys(db.clone(), stop.clone()),
        metrics: Arc::new(metrics::Metrics::new().map_err(Error::Metrics)?),
        hub,
        ws_heartbeat: std::time::Duration::from_millis(cfg.ws_heartbeat_ms),
        shutdown: shutdown.clone(),
        logins: limits::LoginGuard::default(),
        max_body_bytes: cfg.max_body_bytes,
        requests: limits::RequestLimits::new(
            limits::Rate {
                burst: cfg.person_burst.max(1.0),
                per_sec: cfg.person_rate.max(0.1),
            },
            limits::Rate {
                burst: cfg.address_failure_burst.max(1.0),
                per_sec: cfg.address_failure_rate.max(0.1),
            },
        )
        .with_admission(admission.clone()),
        sessions: sessions::follow(&db, stop.clone()),
        verified: verified::VerifiedTokens::default(),
        web_dir: cfg.web_dir.clone(),
        https: public_tls.is_some(),
        db,
    });
    tokio::spawn(limits::write_failed_logins(
        state.clone(),
        agenda_calendar::store::Store::new(state.db.clone()),
        stop.clone(),
    ));
    tracing::info!(
        addr = %listener.local_addr().map_err(Error::Serve)?,
        scheme = if public_tls.is_some() { "https" } else { "http" },
        "gateway listening"
    );
    let mut router = app(state.clone(), cfg.max_body_bytes);
    let mut fence = None;
    if let (Some(vip), Some(me)) = (cfg.vip_addr, &cfg.vip_holder_id) {
        tracing::info!(%vip, holder_id = %me, "serving VIP traffic only while this machine holds the VIP lease");
        let f = vip::Fence::new(&state.db, vip, me, stop.clone());
        router = router.layer(axum::middleware::from_fn_with_state(f.clone(), vip::fence));
        fence = Some(f);
    }
    let grace = cfg.shutdown_grace();
    let send_buffer = cfg.send_buffer_bytes as usize;
    let per_source = cfg.max_connections_per_source;
    match public_tls {
        Some(config) => {
            let listener = agenda_common::net::TlsListener::public(listener, config, send_buffer)
                .map_err(Error::Serve)?;
            let public = shaped::Shaped(
                limits::PerSource::new(listener, per_source).with_admission(admission),
            );
            let serving =
                server::serve(public, router, listener::tls_local, fence, shutdown.clone());
            server::drain(serving, shutdown, grace).await
        }
        None => {
            let public = shaped::Shaped(
                limits::PerSource::new(listener::Tuned::new(listener, send_buffer), per_source)
                    .with_admission(admission),
            );
            let serving = server::serve(
                public,
                router,
                listener::plain_local,
                fence,
                shutdown.clone(),
            );
            server::drain(serving, shutdown, grace).await
        }
    }?;
    stop.cancel();
    tracing::info!("gateway stopped");
    Ok(())
}
