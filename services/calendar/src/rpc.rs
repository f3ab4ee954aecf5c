//! The gRPC envelope between the gateway and the services, server side.
//!
//! Both services accept a [`CallRequest`] carrying an [`Op`] as JSON and
//! answer with an HTTP status and JSON body, which the gateway relays. The
//! serving loop (listen, register in the registry, drain on shutdown) is
//! the same for both and lives here too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agenda_common::registry::{self, Instance};
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use agenda_proto::calendar::{
    groups_server::{Groups, GroupsServer},
    users_server::{Users, UsersServer},
    CallReply, CallRequest,
};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::api::{Op, Service};
use crate::error::{ApiError, ApiResult};

/// A successful answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// 200 with `value`.
    pub fn ok(value: impl Serialize) -> ApiResult<Reply> {
        Ok(Reply {
            status: 200,
            body: serde_json::to_value(value).map_err(ApiError::internal)?,
        })
    }
    /// 201 with `value`.
    pub fn created(value: impl Serialize) -> ApiResult<Reply> {
        Ok(Reply {
            status: 201,
            ..Self::ok(value)?
        })
    }
    /// 204.
    pub fn no_content() -> ApiResult<Reply> {
        Ok(Reply {
            status: 204,
            body: Value::Null,
        })
    }
    /// `{"items": [...]}`.
    pub fn items<T: Serialize>(items: Vec<T>) -> ApiResult<Reply> {
        Self::ok(serde_json::json!({ "items": items }))
    }
}

/// Who is calling: the user id the gateway took from a valid token.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Option<Uuid>);

impl Caller {
    /// The authenticated user, or 401.
    pub fn user(&self) -> ApiResult<Uuid> {
        self.0
            .ok_or_else(|| ApiError::unauthenticated("this route needs a bearer token"))
    }
}

/// What a service does with one operation.
pub trait Handler: Send + Sync + 'static {
    /// Executes `op` for `caller`.
    fn handle(&self, caller: Caller, op: Op) -> impl Future<Output = ApiResult<Reply>> + Send;
}

/// The tonic service around a [`Handler`].
pub struct Endpoint<H> {
    service: Service,
    handler: Arc<H>,
}

impl<H: Handler> Endpoint<H> {
    async fn dispatch(&self, req: CallRequest) -> CallReply {
        let result = match self.decode(&req) {
            Ok((caller, op)) => {
                let started = std::time::Instant::now();
                let r = crate::audit::SOURCE
                    .scope(req.source.clone(), self.handler.handle(caller, op))
                    .await;
                let status = match &r {
                    Ok(reply) => reply.status,
                    Err(e) => e.status,
                };
                // The name is only worked out when a line is written.
                if status >= 500 {
                    tracing::warn!(request_id = %req.request_id, op = op_name(&req.op), status, "call failed");
                } else if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(request_id = %req.request_id, op = op_name(&req.op), status, elapsed_ms = started.elapsed().as_millis() as u64, "call");
                }
                r
            }
            Err(e) => Err(e),
        };
        let (status, body) = match result {
            Ok(reply) => (reply.status, reply.body),
            Err(e) => (e.status, e.body()),
        };
        CallReply {
            status: status as u32,
            body: if body.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&body).unwrap_or_default()
            },
        }
    }

    fn decode(&self, req: &CallRequest) -> ApiResult<(Caller, Op)> {
        let op: Op = serde_json::from_slice(&req.op)
            .map_err(|e| ApiError::bad_request(format!("undecodable operation: {e}")))?;
        if op.service() != self.service {
            return Err(ApiError::bad_request(format!(
                "operation not served by the {} service",
                self.service.name()
            )));
        }
        let caller = if req.caller_id.is_empty() {
            None
        } else {
            Some(
                Uuid::parse_str(&req.caller_id)
                    .map_err(|_| ApiError::unauthenticated("malformed caller id"))?,
            )
        };
        if op.needs_caller() && caller.is_none() {
            return Err(ApiError::unauthenticated("this route needs a bearer token"));
        }
        Ok((Caller(caller), op))
    }
}

/// The operation's name (its `op` tag) from the request bytes.
fn op_name(raw: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Tag {
        op: String,
    }
    serde_json::from_slice::<Tag>(raw)
        .map(|t| t.op)
        .unwrap_or_default()
}

#[tonic::async_trait]
impl<H: Handler> Users for Endpoint<H> {
    async fn call(&self, req: Request<CallRequest>) -> Result<Response<CallReply>, Status> {
        Ok(Response::new(self.dispatch(req.into_inner()).await))
    }
}

#[tonic::async_trait]
impl<H: Handler> Groups for Endpoint<H> {
    async fn call(&self, req: Request<CallRequest>) -> Result<Response<CallReply>, Status> {
        Ok(Response::new(self.dispatch(req.into_inner()).await))
    }
}

/// How long a registry entry outlives a crashed instance.
pub const REGISTRY_TTL: Duration = Duration::from_secs(3);

/// How long a stopping instance keeps serving after deregistering: time
/// for gateways to see it leave, so no call is sent to a closed port.
pub const DRAIN_GRACE: Duration = Duration::from_millis(1000);

/// Where a replica serves: its listener, the address it registers, and
/// TLS (mutual) when the process has an identity.
pub struct Serving {
    listener: TcpListener,
    /// The address registered for gateways to call.
    pub advertise: String,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Serving {
    /// `listener`, registered as `advertise` (default: its local address),
    /// with `links`' TLS.
    pub fn new(
        listener: TcpListener,
        advertise: Option<String>,
        links: &agenda_common::net::Links,
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
        })
    }
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
    } = serving;
    let endpoint = Endpoint {
        service,
        handler: Arc::new(handler),
    };
    let mut router = agenda_common::net::grpc_server();
    let router = match service {
        Service::Users => router.add_service(UsersServer::new(endpoint)),
        Service::Groups => router.add_service(GroupsServer::new(endpoint)),
    };
    let stop_serving = CancellationToken::new();
    let stopped = stop_serving.clone();
    let server = tokio::spawn(async move {
        match tls {
            Some(config) => {
                router
                    .serve_with_incoming_shutdown(
                        agenda_common::net::tls_incoming(listener, config),
                        stopped.cancelled_owned(),
                    )
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(
                        agenda_common::net::incoming(listener),
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
    let registration = loop {
        match registry::register(&db, service.name(), instance.clone(), REGISTRY_TTL).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register in agenda-db yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => {
                        stop_serving.cancel();
                        let _ = server.await;
                        return Ok(());
                    }
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
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
