//! Calls to the users and groups replicas: discovery through the
//! registry, round-robin balancing, a deadline per request, and retries
//! only where they are safe.
//!
//! A read-only operation, or a creation carrying an idempotency key, may
//! be retried on another replica after any failure. Any other change is
//! retried only when the call never reached a replica (connection
//! refused), because a replica that died mid-call may have committed it.
//!
//! A replica on a machine that lost power does not refuse anything: calls
//! to it hang. So a retry-safe call gives one replica a short first
//! attempt (`ATTEMPT_TIMEOUTS`), and a replica that failed or timed out is
//! stepped over by every call for `SUSPECT_FOR` (unless all are suspect),
//! until the registry drops it with its lease.
//!
//! The policy lives in [`Upstream`]; where the replicas are and how one
//! call reaches one of them is a [`Replicas`] ([`GrpcReplicas`]: the
//! registry and gRPC), so tests drive the policy over an in-process fake.
//! Time is tokio's, so such tests can pause it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use agenda_calendar::api::{Op, Service, MAX_CALL_BYTES};
use agenda_calendar::ApiError;
use agenda_common::registry::{self, Instance};
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use agenda_proto::calendar::{
    groups_client::GroupsClient, users_client::UsersClient, CallReply, CallRequest,
};
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;
use uuid::Uuid;

/// Deadline of the n-th attempt of a retry-safe call (the last repeats).
const ATTEMPT_TIMEOUTS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// How long a replica that failed a call is stepped over.
const SUSPECT_FOR: Duration = Duration::from_secs(2);

/// Where the replicas of both services are, and one call to one of them.
pub trait Replicas: Send + Sync {
    /// Registered instances of `service`.
    fn instances(&self, service: Service) -> Vec<Instance>;

    /// Starts one call to the replica at `addr`. An `Err` here means the
    /// replica cannot even be addressed (a malformed registered address):
    /// the call is not tried anywhere else.
    fn send(
        &self,
        service: Service,
        addr: &str,
        request: tonic::Request<CallRequest>,
    ) -> Result<Sending, ApiError>;
}

/// A call on its way: the replica's answer, or the gRPC status it failed
/// with (connection refused, deadline, the replica's own refusal).
pub type Sending = BoxFuture<'static, Result<CallReply, tonic::Status>>;

/// The replicas of both services as the registry lists them, reached
/// over gRPC (one lazily connected channel per address).
pub struct GrpcReplicas {
    users: watch::Receiver<Vec<Instance>>,
    groups: watch::Receiver<Vec<Instance>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// How channels to replicas are made (TLS or not).
    links: agenda_common::net::Links,
}

impl GrpcReplicas {
    /// Follows both services in the registry until `stop`.
    pub fn new(db: &DbClient, links: agenda_common::net::Links, stop: CancellationToken) -> Self {
        GrpcReplicas {
            users: registry::watch_instances(db, Service::Users.name(), stop.clone()),
            groups: registry::watch_instances(db, Service::Groups.name(), stop),
            channels: Mutex::new(HashMap::new()),
            links,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = self.links.channel(addr).map_err(ApiError::internal)?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

impl Replicas for GrpcReplicas {
    fn instances(&self, service: Service) -> Vec<Instance> {
        match service {
            Service::Users => self.users.borrow().clone(),
            Service::Groups => self.groups.borrow().clone(),
        }
    }

    fn send(
        &self,
        service: Service,
        addr: &str,
        request: tonic::Request<CallRequest>,
    ) -> Result<Sending, ApiError> {
        let channel = self.channel(addr)?;
        Ok(Box::pin(async move {
            let reply = match service {
                Service::Users => {
                    UsersClient::new(channel)
                        .max_decoding_message_size(MAX_CALL_BYTES)
                        .max_encoding_message_size(MAX_CALL_BYTES)
                        .call(request)
                        .await
                }
                Service::Groups => {
                    GroupsClient::new(channel)
                        .max_decoding_message_size(MAX_CALL_BYTES)
                        .max_encoding_message_size(MAX_CALL_BYTES)
                        .call(request)
                        .await
                }
            };
            reply.map(tonic::Response::into_inner)
        }))
    }
}

/// The replicas of both services, and the policy of calls to them.
pub struct Upstream {
    replicas: Box<dyn Replicas>,
    /// Replicas to step over until then, by address.
    suspects: Mutex<HashMap<String, Instant>>,
    next: AtomicUsize,
    timeout: Duration,
}

/// An answer relayed from a service: status and JSON body.
pub struct Relayed {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Upstream {
    /// Follows both services in the registry until `stop`; each request
    /// gets `timeout`, retries included.
    pub fn new(
        db: &DbClient,
        links: agenda_common::net::Links,
        timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        Self::with_replicas(GrpcReplicas::new(db, links, stop), timeout)
    }

    /// Calls `replicas`; each request gets `timeout`, retries included.
    pub fn with_replicas(replicas: impl Replicas + 'static, timeout: Duration) -> Self {
        Upstream {
            replicas: Box::new(replicas),
            suspects: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Registered instances of `service`.
    pub fn instances(&self, service: Service) -> Vec<Instance> {
        self.replicas.instances(service)
    }

    /// The next replica in round-robin order that is not suspect (or the
    /// next one, when all are).
    fn pick<'a>(&self, instances: &'a [Instance]) -> &'a Instance {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects.retain(|_, until| *until > now);
        (0..instances.len())
            .map(|k| &instances[start.wrapping_add(k) % instances.len()])
            .find(|i| !suspects.contains_key(&i.addr))
            .unwrap_or(&instances[start % instances.len()])
    }

    fn suspect(&self, addr: &str) {
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), Instant::now() + SUSPECT_FOR);
    }

    /// Sends `op` for `caller` (who connected from `source`, for the audit
    /// log); retries as the module doc says until the request deadline.
    pub async fn call(
        &self,
        caller: Option<Uuid>,
        source: &str,
        request_id: &str,
        op: &Op,
    ) -> Result<Relayed, ApiError> {
        let service = op.service();
        let payload = serde_json::to_vec(op).map_err(ApiError::internal)?;
        let deadline = Instant::now() + self.timeout;
        let retry_safe = op.is_retry_safe();
        let mut attempt = 0usize;
        loop {
            let instances = self.instances(service);
            if instances.is_empty() {
                if Instant::now() + Duration::from_millis(100) >= deadline {
                    return Err(ApiError::unavailable(format!(
                        "no {} service instance is available; retry shortly",
                        service.name()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let addr = &self.pick(&instances).addr;
            let req = CallRequest {
                caller_id: caller.map(|c| c.to_string()).unwrap_or_default(),
                request_id: request_id.to_string(),
                op: payload.clone(),
                source: source.to_string(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // Only a call that may be repeated is cut short: any other one
            // gets the whole deadline, since it cannot be sent again.
            let budget = if retry_safe {
                ATTEMPT_TIMEOUTS[attempt.min(ATTEMPT_TIMEOUTS.len() - 1)].min(left)
            } else {
                left
            };
            let mut request = tonic::Request::new(req);
            request.set_timeout(budget);
            let call = self.replicas.send(service, addr, request)?;
            // The grpc-timeout header only bounds a replica that answers;
            // one that lost power is bounded here.
            let result = tokio::time::timeout(budget, call)
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
            let status = match result {
                Ok(reply) => {
                    return Ok(Relayed {
                        status: reply.status as u16,
                        body: reply.body,
                    });
                }
                Err(status) => status,
            };
            // A replica at capacity says so at once; asking the next one
            // would only multiply the load that made it refuse.
            if agenda_common::admission::is_overloaded(&status) {
                return Err(
                    ApiError::unavailable("the service is at capacity; retry in 1 s").with_details(
                        serde_json::json!({"reason": "overloaded", "retry_after": 1}),
                    ),
                );
            }
            attempt += 1;
            let never_sent = is_connect_error(&status);
            let timed_out = status.code() == tonic::Code::DeadlineExceeded;
            if never_sent || timed_out || status.code() == tonic::Code::Unavailable {
                self.suspect(addr);
            }
            tracing::warn!(request_id, %addr, service = service.name(), code = ?status.code(), message = status.message(), attempt, never_sent, "service call failed");
            let retry = (retry_safe || (never_sent && !timed_out))
                && Instant::now() + Duration::from_millis(50) < deadline;
            if !retry {
                return Err(if timed_out {
                    ApiError::unavailable("the request timed out; retry shortly")
                } else {
                    ApiError::unavailable(format!(
                        "the {} service failed during the request; retry shortly",
                        service.name()
                    ))
                });
            }
            // Back off a little once every replica was tried.
            if attempt.is_multiple_of(instances.len()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// True when the connection could not be established, so the request
/// cannot have reached the replica.
fn is_connect_error(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            );
        }
        if e.to_string().contains("tcp connect error") {
            return true;
        }
        source = e.source();
    }
    status.message().contains("tcp connect error")
}
