//! What a service implements: a [`Handler`] answering each operation for
//! a [`Caller`] with a [`Reply`] or an [`ApiError`].

use std::future::Future;

use agenda_calendar::api::Op;
use agenda_calendar::{ApiError, ApiResult};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// A successful answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status the gateway answers with.
    pub status: u16,
    /// JSON body (null: none).
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
