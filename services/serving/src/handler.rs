//! What a service implements: a [`Handler`] answering each operation for
//! a [`Caller`] with a [`Reply`] or an [`ApiError`].

use std::future::Future;

use agenda_calendar::api::Op;
use agenda_calendar::{ApiError, ApiResult};
use serde::Serialize;
use uuid::Uuid;

/// A successful answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status the gateway answers with.
    pub status: u16,
    /// The JSON body, encoded (empty: none). Encoded straight from the
    /// handler's types: going through a `serde_json::Value` first (a map
    /// per object) was a tenth of agenda-users' CPU on the week view.
    pub body: Vec<u8>,
}

impl Reply {
    /// 200 with `value`.
    pub fn ok(value: impl Serialize) -> ApiResult<Reply> {
        Ok(Reply {
            status: 200,
            body: serde_json::to_vec(&value).map_err(ApiError::internal)?,
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
            body: Vec::new(),
        })
    }
    /// `{"items": [...]}`.
    pub fn items<T: Serialize>(items: Vec<T>) -> ApiResult<Reply> {
        #[derive(Serialize)]
        struct Items<T> {
            items: Vec<T>,
        }
        Self::ok(Items { items })
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
