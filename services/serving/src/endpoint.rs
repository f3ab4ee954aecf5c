//! The gRPC envelope around a [`Handler`]: a `CallRequest` decoded into
//! its caller and operation (refused with the API's error shape when it
//! does not decode or is not this service's), run in the caller's audit
//! [`SOURCE`](agenda_calendar::audit::SOURCE), and its answer encoded.

use std::sync::Arc;

use agenda_calendar::api::{Op, Service};
use agenda_calendar::{ApiError, ApiResult};
use agenda_proto::calendar::{groups_server::Groups, users_server::Users, CallReply, CallRequest};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::handler::{Caller, Handler};

/// The tonic service around a [`Handler`].
pub struct Endpoint<H> {
    service: Service,
    handler: Arc<H>,
}

impl<H: Handler> Endpoint<H> {
    /// `handler`, answering the operations of `service`.
    pub fn new(service: Service, handler: H) -> Self {
        Endpoint {
            service,
            handler: Arc::new(handler),
        }
    }

    async fn dispatch(&self, req: CallRequest) -> CallReply {
        let started = std::time::Instant::now();
        let mut op_tag = String::new();
        let result = match self.decode(&req) {
            Ok((caller, op)) => {
                op_tag = op_name(&req.op);
                // Every line logged while serving the call, here and in
                // the store, names the request; its calls to agenda-db
                // carry the id on.
                let span = tracing::info_span!("call", request_id = %req.request_id, op = %op_tag);
                let work = agenda_calendar::audit::SOURCE.scope(
                    req.source.clone(),
                    agenda_common::telemetry::with_request_id(
                        req.request_id.clone(),
                        self.handler.handle(caller, op),
                    ),
                );
                let r = tracing::Instrument::instrument(work, span.clone()).await;
                let (status, failed) = match &r {
                    Ok(reply) => (reply.status, false),
                    Err(e) => (e.status, !e.kind.is_refusal()),
                };
                let _in = span.enter();
                if failed {
                    tracing::warn!(status, "call failed");
                } else {
                    tracing::debug!(
                        status,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "call"
                    );
                }
                r
            }
            Err(e) => Err(e),
        };
        let status = match &result {
            Ok(reply) => reply.status,
            Err(e) => e.status,
        };
        crate::metrics::call(self.service.name(), &op_tag, status, started.elapsed());
        let (status, body) = match result {
            Ok(reply) => (reply.status, reply.body),
            Err(e) => (e.status, serde_json::to_vec(&e.body()).unwrap_or_default()),
        };
        CallReply {
            status: status as u32,
            body,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Reply;
    use agenda_calendar::ErrorKind;
    use serde_json::{json, Value};

    /// Answers `GetMe` with who called and `DeleteMe` with a 204; refuses
    /// anything else as the API would.
    struct Echo;

    impl Handler for Echo {
        async fn handle(&self, caller: Caller, op: Op) -> ApiResult<Reply> {
            match op {
                Op::GetMe => Reply::ok(json!({ "me": caller.user()? })),
                Op::DeleteMe => Reply::no_content(),
                _ => Err(ApiError::forbidden("not here")),
            }
        }
    }

    fn call(caller: Option<Uuid>, op: &[u8]) -> CallRequest {
        CallRequest {
            caller_id: caller.map(|c| c.to_string()).unwrap_or_default(),
            request_id: "r1".into(),
            op: op.to_vec(),
            source: String::new(),
        }
    }

    fn op(op: &Op) -> Vec<u8> {
        serde_json::to_vec(op).unwrap()
    }

    async fn answer(req: CallRequest) -> (u32, Value) {
        let reply = Endpoint::new(Service::Users, Echo).dispatch(req).await;
        let body = if reply.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&reply.body).unwrap()
        };
        (reply.status, body)
    }

    #[tokio::test]
    async fn answers_and_errors_are_relayed_as_status_and_json() {
        let me = Uuid::new_v4();
        assert_eq!(
            answer(call(Some(me), &op(&Op::GetMe))).await,
            (200, json!({ "me": me }))
        );
        assert_eq!(
            answer(call(Some(me), &op(&Op::DeleteMe))).await,
            (204, Value::Null),
            "no content, no body"
        );
        let (status, body) = answer(call(
            Some(me),
            &op(&Op::ListNotifications {
                unread: false,
                limit: None,
                before: None,
            }),
        ))
        .await;
        assert_eq!(status, 403);
        assert_eq!(body, ApiError::forbidden("not here").body());
    }

    #[tokio::test]
    async fn calls_that_do_not_decode_are_refused_in_the_error_shape() {
        let me = Uuid::new_v4();
        let refused = |status: u32, body: &Value, kind: ErrorKind| {
            assert_eq!(status, u32::from(kind.status()), "{body}");
            assert_eq!(body["error"]["code"], kind.code(), "{body}");
        };
        let (s, b) = answer(call(Some(me), b"{not json")).await;
        refused(s, &b, ErrorKind::BadRequest);
        let (s, b) = answer(call(Some(me), &op(&Op::ListGroups))).await;
        refused(s, &b, ErrorKind::BadRequest);
        assert_eq!(
            b["error"]["message"],
            "operation not served by the users service"
        );
        let (s, b) = answer(call(None, &op(&Op::GetMe))).await;
        refused(s, &b, ErrorKind::Unauthenticated);
        let mut bad_caller = call(Some(me), &op(&Op::GetMe));
        bad_caller.caller_id = "nobody".into();
        let (s, b) = answer(bad_caller).await;
        refused(s, &b, ErrorKind::Unauthenticated);
    }

    #[test]
    fn the_op_name_is_its_tag() {
        assert_eq!(op_name(&op(&Op::GetMe)), "get_me");
        assert_eq!(op_name(b"garbage"), "");
    }
}
