//! The serving loop both services share: listen, register the instance in
//! the registry once agenda-db answers, and on shutdown deregister first,
//! keep serving while gateways notice, then drain in-flight calls.

use std::sync::Arc;
use std::time::Duration;

use agenda_calendar::api::{Service, MAX_CALL_BYTES};
use agenda_common::admission::Admission;
use agenda_common::registry::{self, Instance};
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use agenda_proto::calendar::{groups_server::GroupsServer, users_server::UsersServer};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::endpoint::Endpoint;
use crate::handler::Handler;

/// How long a registry entry outlives a crashed instance.
pub const REGISTRY_TTL: Duration = Duration::from_secs(3);

/// How long a stopping instance keeps serving after deregistering: time
/// for gateways to see it leave, so no call is sent to a closed port.
pub const DRAIN_GRACE: Duration = Duration::from_millis(1000);

/// Where a replica serves: its listener, the address it registers, TLS
/// (mutual) when the process has an identity, and its caps on requests
/// and connections at once.
pub struct Serving {
    listener: TcpListener,
    /// The address registered for gateways to call.
    pub advertise: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    admission: Admission,
}

impl Serving {
    /// `listener`, registered as `advertise` (default: its local address),
    /// with `links`' TLS and the caps of `admission`.
    pub fn new(
        listener: TcpListener,
        advertise: Option<String>,
        links: &agenda_common::net::Links,
        admission: &agenda_common::admission::Args,
    ) -> agenda_common::Result<Serving> {
        let advertise = match advertise {
            Some(a) => a,
            None => listener
                .local_addr()
                .map_err(|e| agenda_common::Error::Config(format!("listener: {e}")))?
                .to_string(),
        };
        Ok(Serving {
            listener,
            advertise,
            tls: links.server_config()?,
            admission: admission.admission(),
        })
    }
}

/// What a replica sets up before it serves: its links (plaintext or
/// mutual TLS), the agenda-db client, and where it serves.
pub struct Started {
    /// Every link of the process.
    pub links: agenda_common::net::Links,
    /// The agenda-db client.
    pub db: DbClient,
    /// The listener, its address for the registry, TLS and caps.
    pub serving: Serving,
}

/// The set-up users and groups share: links from `tls`, the client of
/// `db`, and `listener` served as `advertise` with the caps of
/// `admission`.
pub fn start(
    tls: &agenda_common::args::TlsArgs,
    db: &agenda_common::args::DbArgs,
    admission: &agenda_common::admission::Args,
    listener: TcpListener,
    advertise: Option<String>,
    shutdown: &CancellationToken,
) -> Result<Started, crate::Error> {
    use crate::Error;
    let links = agenda_common::net::Links::from_args(tls, shutdown).map_err(Error::setup("TLS"))?;
    let db = links
        .db_client(&db.db)
        .map_err(Error::setup("--db"))?
        .with_reads(db.db_reads);
    let serving =
        Serving::new(listener, advertise, &links, admission).map_err(Error::setup("TLS"))?;
    Ok(Started { links, db, serving })
}

/// Starts `/metrics` and `/healthz` on `http.http`, if given, until
/// `shutdown`.
pub async fn serve_http(
    http: &agenda_common::args::HttpArgs,
    shutdown: &CancellationToken,
) -> Result<(), crate::Error> {
    let Some(addr) = &http.http else {
        return Ok(());
    };
    let listener = agenda_common::net::bind(addr, "--http")
        .await
        .map_err(crate::Error::setup("--http"))?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = agenda_common::metrics::serve(listener, stop).await {
            tracing::warn!(error = %e, "the --http listener stopped");
        }
    });
    Ok(())
}

/// Serves `handler` as `service` until `shutdown`: registers the instance
/// (`serving.advertise`) in the registry once listening; on shutdown
/// deregisters first, keeps serving for [`DRAIN_GRACE`] while gateways
/// notice, then stops accepting and drains in-flight calls.
pub async fn serve<H: Handler>(
    service: Service,
    handler: H,
    serving: Serving,
    db: DbClient,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let Serving {
        listener,
        advertise,
        tls,
        admission,
    } = serving;
    let endpoint = Endpoint::new(service, handler);
    let mut router = admission.grpc_server();
    let router = match service {
        Service::Users => router.add_service(
            UsersServer::new(endpoint)
                .max_decoding_message_size(MAX_CALL_BYTES)
                .max_encoding_message_size(MAX_CALL_BYTES),
        ),
        Service::Groups => router.add_service(
            GroupsServer::new(endpoint)
                .max_decoding_message_size(MAX_CALL_BYTES)
                .max_encoding_message_size(MAX_CALL_BYTES),
        ),
    };
    let stop_serving = CancellationToken::new();
    let stopped = stop_serving.clone();
    let server = tokio::spawn(async move {
        match tls {
            Some(config) => {
                router
                    .serve_with_incoming_shutdown(
                        agenda_common::net::tls_incoming_admitted(listener, config, &admission),
                        stopped.cancelled_owned(),
                    )
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(
                        agenda_common::net::incoming_admitted(listener, &admission),
                        stopped.cancelled_owned(),
                    )
                    .await
            }
        }
    });
    let instance = Instance {
        id: format!("{}-{}", service.name(), Uuid::new_v4().simple()),
        addr: advertise,
    };
    let registered = agenda_common::shutdown::retry(
        &shutdown,
        "cannot register in agenda-db yet",
        |_| true,
        || registry::register(&db, service.name(), instance.clone(), REGISTRY_TTL),
    )
    .await;
    // Every error is retried: only a shutdown ends the wait.
    let Some(Ok(registration)) = registered else {
        stop_serving.cancel();
        let _ = server.await;
        return Ok(());
    };
    tracing::info!(service = service.name(), addr = %instance.addr, "serving");
    shutdown.cancelled().await;
    tracing::info!("shutting down: deregistering, then draining in-flight calls");
    registration.deregister().await;
    tokio::time::sleep(DRAIN_GRACE).await;
    stop_serving.cancel();
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "gRPC server task failed");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("calls still running after 10 s; exiting anyway");
            Ok(())
        }
    }
}
