//! Operator REST face: `/v1/kv`, `/v1/txn`, `/v1/leases`, `/v1/watch`,
//! `/v1/cluster`, plus `/healthz` and `/metrics`.
//!
//! Keys in paths and JSON are UTF-8 text; `GET /v1/kv/{key}` returns the raw
//! value bytes. Errors always have the shape
//! `{"error":{"code","message","details"}}`; "no leader" is 503 with
//! `Retry-After`.

use std::collections::BTreeMap;
use std::convert::Infallible;

use agenda_proto::db::{
    compare, event, request_op, response_op, Compare, DeleteRequest, KeyValue, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, MemberAddRequest, MemberRemoveRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchRequest,
};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::service::Db;

/// State shared by the handlers.
#[derive(Clone)]
pub struct HttpState {
    /// Request layer.
    pub db: Db,
    /// Metrics to render.
    pub metrics: Metrics,
}

/// Builds the operator router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/kv", get(list))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/txn", post(txn))
        .route("/v1/leases", post(lease_grant))
        .route("/v1/leases/{id}/keepalive", post(lease_keep_alive))
        .route("/v1/leases/{id}", delete(lease_revoke))
        .route("/v1/watch", get(watch))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/members", post(member_add))
        .route("/v1/cluster/members/{id}", delete(member_remove))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// With TLS: everything but `/healthz` and `/metrics` for operators only
/// (the REST reads and writes every key). A plaintext deployment has no
/// roles (no connect info) and is not checked.
/// Refusals are counted for the audit log (`refusals`).
pub async fn operators_only(
    State(refusals): State<std::sync::Arc<crate::refusals::Refusals>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use agenda_common::net::CallerRole;
    use axum::extract::ConnectInfo;
    if let Some(ConnectInfo(CallerRole(role))) = req.extensions().get::<ConnectInfo<CallerRole>>() {
        let open = matches!(req.uri().path(), "/healthz" | "/metrics");
        if !open && role.as_deref() != Some("operator") {
            let who = role.as_deref().unwrap_or("(no role)");
            let why = format!(
                "the {who} role may use /healthz and /metrics only; the rest is the operator's"
            );
            refusals.note(who, "", &why);
            return ApiError::new(StatusCode::FORBIDDEN, "permission_denied", why).into_response();
        }
    }
    next.run(req).await
}

/// An error in the shared JSON shape.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidArgument(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::FailedPrecondition(_) => StatusCode::CONFLICT,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::Compacted { .. } => StatusCode::GONE,
            Error::NoLeader
            | Error::Timeout(_)
            | Error::Stopped
            | Error::Overloaded(_)
            | Error::DiskFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_)
            | Error::Fatal(_)
            | Error::Storage(_)
            | Error::Io(_)
            | Error::Corrupt(_)
            | Error::Raft(_) => {
                tracing::error!(error = %e, "internal error while serving a request");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the node's log",
                );
            }
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({
            "error": {"code": self.code, "message": self.message, "details": {}}
        }));
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Query-string extractor whose failures use the error shape.
pub struct Q<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q)
            .map(Q)
            .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
    }
}

fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A key-value as JSON: text when the value is UTF-8, base64 otherwise.
fn kv_json(kv: &KeyValue) -> Value {
    let mut v = json!({
        "key": String::from_utf8_lossy(&kv.key),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    });
    match std::str::from_utf8(&kv.value) {
        Ok(s) => v["value"] = json!(s),
        Err(_) => {
            v["value_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&kv.value))
        }
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    stale: bool,
    #[serde(default)]
    revision: i64,
}

async fn list(State(s): State<HttpState>, Q(q): Q<ListQuery>) -> ApiResult<Json<Value>> {
    let resp =
        s.db.range(RangeRequest {
            key: q.prefix.into_bytes(),
            prefix: true,
            limit: q.limit,
            stale: q.stale,
            revision: q.revision,
            ..Default::default()
        })
        .await?;
    Ok(Json(json!({
        "items": resp.kvs.iter().map(kv_json).collect::<Vec<_>>(),
        "more": resp.more,
        // With a limit, the items plus one if `more` (see db.proto).
        "count": resp.count,
        "revision": resp.header.map_or(0, |h| h.revision),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    #[serde(default)]
    stale: bool,
    #[serde(default)]
    revision: i64,
}

async fn get_key(
    State(s): State<HttpState>,
    Path(key): Path<String>,
    Q(q): Q<GetQuery>,
) -> ApiResult<Response> {
    let resp =
        s.db.range(RangeRequest {
            key: key.clone().into_bytes(),
            stale: q.stale,
            revision: q.revision,
            ..Default::default()
        })
        .await?;
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    let Some(kv) = resp.kvs.into_iter().next() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("key {key:?} not found"),
        ));
    };
    let mut out = Response::new(Body::from(kv.value));
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, v) in [
        ("x-mod-revision", kv.mod_revision),
        ("x-create-revision", kv.create_revision),
        ("x-version", kv.version),
        ("x-lease", kv.lease),
        ("x-revision", revision),
    ] {
        h.insert(name, HeaderValue::from(v));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    #[serde(default)]
    lease: i64,
}

async fn put_key(
    State(s): State<HttpState>,
    Path(key): Path<String>,
    Q(q): Q<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let resp =
        s.db.put(PutRequest {
            key: key.into_bytes(),
            value: body.to_vec(),
            lease: q.lease,
            prev_kv: false,
            request_id: request_id(&headers),
        })
        .await?;
    Ok(Json(
        json!({"revision": resp.header.map_or(0, |h| h.revision)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    prefix: bool,
}

async fn delete_key(
    State(s): State<HttpState>,
    Path(key): Path<String>,
    Q(q): Q<DeleteQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let resp =
        s.db.delete(DeleteRequest {
            key: key.into_bytes(),
            prefix: q.prefix,
            prev_kv: false,
            request_id: request_id(&headers),
        })
        .await?;
    Ok(Json(json!({
        "deleted": resp.deleted,
        "revision": resp.header.map_or(0, |h| h.revision),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    compare: Vec<CompareBody>,
    #[serde(default)]
    success: Vec<OpBody>,
    #[serde(default)]
    failure: Vec<OpBody>,
    #[serde(default)]
    request_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    key: String,
    target: String,
    result: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    number: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum OpBody {
    Put {
        key: String,
        value: String,
        #[serde(default)]
        lease: i64,
    },
    Delete {
        key: String,
        #[serde(default)]
        prefix: bool,
    },
    Range {
        key: String,
        #[serde(default)]
        prefix: bool,
        #[serde(default)]
        limit: i64,
    },
}

impl CompareBody {
    fn into_proto(self) -> ApiResult<Compare> {
        let target = match self.target.as_str() {
            "value" => compare::Target::Value,
            "version" => compare::Target::Version,
            "mod_revision" => compare::Target::ModRevision,
            "create_revision" => compare::Target::CreateRevision,
            "lease" => compare::Target::Lease,
            other => {
                return Err(ApiError::bad_request(format!(
                    "compare target {other:?} is not one of value, version, mod_revision, create_revision, lease"
                )));
            }
        };
        let result = match self.result.as_str() {
            "equal" => compare::Result::Equal,
            "not_equal" => compare::Result::NotEqual,
            "less" => compare::Result::Less,
            "greater" => compare::Result::Greater,
            other => {
                return Err(ApiError::bad_request(format!(
                    "compare result {other:?} is not one of equal, not_equal, less, greater"
                )));
            }
        };
        Ok(Compare {
            key: self.key.into_bytes(),
            target: target as i32,
            result: result as i32,
            value: self.value.unwrap_or_default().into_bytes(),
            number: self.number,
        })
    }
}

impl OpBody {
    fn into_proto(self) -> RequestOp {
        let request = match self {
            OpBody::Put { key, value, lease } => request_op::Request::Put(PutRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
                lease,
                ..Default::default()
            }),
            OpBody::Delete { key, prefix } => request_op::Request::Delete(DeleteRequest {
                key: key.into_bytes(),
                prefix,
                ..Default::default()
            }),
            OpBody::Range { key, prefix, limit } => request_op::Request::Range(RangeRequest {
                key: key.into_bytes(),
                prefix,
                limit,
                ..Default::default()
            }),
        };
        RequestOp {
            request: Some(request),
        }
    }
}

async fn txn(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b: TxnBody = parse_json(&body)?;
    let compare = b
        .compare
        .into_iter()
        .map(CompareBody::into_proto)
        .collect::<ApiResult<Vec<_>>>()?;
    let request_id = if b.request_id.is_empty() {
        request_id(&headers)
    } else {
        b.request_id
    };
    let resp =
        s.db.txn(TxnRequest {
            compare,
            success: b.success.into_iter().map(OpBody::into_proto).collect(),
            failure: b.failure.into_iter().map(OpBody::into_proto).collect(),
            request_id,
        })
        .await?;
    let responses: Vec<Value> = resp
        .responses
        .iter()
        .filter_map(|r| r.response.as_ref())
        .map(|r| match r {
            response_op::Response::Range(r) => json!({"range": {
                "items": r.kvs.iter().map(kv_json).collect::<Vec<_>>(),
                "more": r.more, "count": r.count,
            }}),
            response_op::Response::Put(_) => json!({"put": {}}),
            response_op::Response::Delete(d) => json!({"delete": {"deleted": d.deleted}}),
        })
        .collect();
    Ok(Json(json!({
        "succeeded": resp.succeeded,
        "revision": resp.header.map_or(0, |h| h.revision),
        "responses": responses,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    /// Seconds; or `ttl_ms` for a sub-second lease.
    #[serde(default)]
    ttl: i64,
    #[serde(default)]
    ttl_ms: i64,
    #[serde(default)]
    id: i64,
}

async fn lease_grant(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b: LeaseBody = parse_json(&body)?;
    let resp =
        s.db.lease_grant(LeaseGrantRequest {
            ttl: b.ttl,
            ttl_ms: b.ttl_ms,
            id: b.id,
            request_id: request_id(&headers),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": resp.id, "ttl": resp.ttl, "ttl_ms": resp.ttl_ms})),
    ))
}

fn lease_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("lease id {raw:?} is not an integer")))
}

async fn lease_keep_alive(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let resp =
        s.db.lease_keep_alive(LeaseKeepAliveRequest {
            id: lease_id(&id)?,
            request_id: request_id(&headers),
        })
        .await?;
    Ok(Json(
        json!({"id": resp.id, "ttl": resp.ttl, "ttl_ms": resp.ttl_ms}),
    ))
}

async fn lease_revoke(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let resp =
        s.db.lease_revoke(LeaseRevokeRequest {
            id: lease_id(&id)?,
            request_id: request_id(&headers),
        })
        .await?;
    Ok(Json(
        json!({"revision": resp.header.map_or(0, |h| h.revision)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    from_revision: i64,
    #[serde(default)]
    prev_kv: bool,
}

/// Streams newline-delimited JSON, one line per revision batch.
async fn watch(State(s): State<HttpState>, Q(q): Q<WatchQuery>) -> ApiResult<Response> {
    let (key, prefix) = match (q.key, q.prefix) {
        (Some(k), None) => (k, false),
        (None, Some(p)) => (p, true),
        _ => return Err(ApiError::bad_request("give exactly one of key= or prefix=")),
    };
    let rx =
        s.db.watch(WatchRequest {
            key: key.into_bytes(),
            prefix,
            start_revision: q.from_revision,
            prev_kv: q.prev_kv,
        })
        .await?;
    let stream = ReceiverStream::new(rx).map(|item| {
        let line = match item {
            Ok(resp) => json!({
                "revision": resp.header.map_or(0, |h| h.revision),
                "events": resp.events.iter().map(|e| json!({
                    "type": if e.r#type == event::EventType::Delete as i32 { "delete" } else { "put" },
                    "kv": e.kv.as_ref().map(kv_json),
                    "prev_kv": e.prev_kv.as_ref().map(kv_json),
                })).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"error": {"code": e.code(), "message": e.to_string(), "details": {}}}),
        };
        Ok::<_, Infallible>(Bytes::from(format!("{line}\n")))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

#[derive(Serialize)]
struct ClusterJson {
    member_id: u64,
    leader_id: u64,
    role: &'static str,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    revision: i64,
    compact_revision: i64,
    members: BTreeMap<u64, String>,
    voters: Vec<u64>,
}

async fn cluster(State(s): State<HttpState>) -> ApiResult<Json<ClusterJson>> {
    let st = s.db.status().await?;
    Ok(Json(ClusterJson {
        member_id: st.id,
        leader_id: st.leader,
        role: st.role,
        term: st.term,
        commit_index: st.commit,
        applied_index: st.applied,
        revision: st.revision,
        compact_revision: st.compact_revision,
        members: st.members,
        voters: st.voters,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    id: u64,
    addr: String,
}

fn members_json(members: &[agenda_proto::db::Member]) -> Value {
    json!({"members": members.iter().map(|m| json!({"id": m.id, "addr": m.addr})).collect::<Vec<_>>()})
}

async fn member_add(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b: MemberBody = parse_json(&body)?;
    let resp =
        s.db.member_add(MemberAddRequest {
            id: b.id,
            addr: b.addr,
            request_id: request_id(&headers),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(members_json(&resp.members))))
}

async fn member_remove(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(format!("member id {id:?} is not a positive integer"))
    })?;
    let resp =
        s.db.member_remove(MemberRemoveRequest {
            id,
            request_id: request_id(&headers),
        })
        .await?;
    Ok(Json(members_json(&resp.members)))
}

async fn healthz(State(s): State<HttpState>) -> Response {
    let node = s.db.node();
    let running = node
        .shared
        .running
        .load(std::sync::atomic::Ordering::Acquire);
    let leader = node.leader();
    let body = json!({"member_id": node.id, "running": running, "leader_id": leader});
    if running && leader != 0 {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// Fuzzing of the operator REST's bodies and query strings (target
/// `db_rest`, docs/FUZZING.md): the input is read as every body
/// (transaction, lease, member) and every query string, as a lease id,
/// and as a key and value to render. Properties: nothing panics; a body
/// or query that does not read is a 400 in the error shape; a transaction
/// that reads becomes requests whose compares name a known target and
/// result, or a 400; a rendered value gives its bytes back (as text or
/// base64).
#[cfg(test)]
pub(crate) mod fuzz {
    use base64::Engine as _;
    use serde_json::{json, Value};

    use super::*;
    use crate::transport::fuzz::harness::{Rng, Target};

    pub(crate) const TARGET: Target = Target {
        name: "db_rest",
        run,
        generate,
    };

    fn bad_request(e: ApiError, input: &[u8]) {
        assert_eq!(
            e.status,
            StatusCode::BAD_REQUEST,
            "{input:?}: {}",
            e.message
        );
        assert_eq!(e.code, "bad_request");
        assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
    }

    fn run(data: &[u8]) {
        let body = Bytes::copy_from_slice(data);
        match parse_json::<TxnBody>(&body) {
            Err(e) => bad_request(e, data),
            Ok(b) => {
                for c in b.compare {
                    let key = c.key.clone();
                    match c.into_proto() {
                        Ok(p) => {
                            assert_eq!(p.key, key.into_bytes());
                            assert!(compare::Target::try_from(p.target).is_ok());
                            assert!(compare::Result::try_from(p.result).is_ok());
                        }
                        Err(e) => bad_request(e, data),
                    }
                }
                for op in b.success.into_iter().chain(b.failure) {
                    assert!(op.into_proto().request.is_some());
                }
            }
        }
        if let Err(e) = parse_json::<LeaseBody>(&body) {
            bad_request(e, data);
        }
        if let Err(e) = parse_json::<MemberBody>(&body) {
            bad_request(e, data);
        }
        let text = String::from_utf8_lossy(data);
        let _ = serde_urlencoded::from_str::<ListQuery>(&text);
        let _ = serde_urlencoded::from_str::<GetQuery>(&text);
        let _ = serde_urlencoded::from_str::<PutQuery>(&text);
        let _ = serde_urlencoded::from_str::<DeleteQuery>(&text);
        let _ = serde_urlencoded::from_str::<WatchQuery>(&text);
        match lease_id(&text) {
            Ok(id) => assert_eq!(lease_id(&id.to_string()).ok(), Some(id)),
            Err(e) => bad_request(e, data),
        }
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(data) {
            headers.insert("x-request-id", v);
        }
        let _ = request_id(&headers);
        let kv = KeyValue {
            key: data.to_vec(),
            value: data.to_vec(),
            ..Default::default()
        };
        let rendered = kv_json(&kv);
        let back = match (&rendered["value"], &rendered["value_base64"]) {
            (Value::String(s), Value::Null) => s.clone().into_bytes(),
            (Value::Null, Value::String(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .expect("base64 of the value"),
            other => panic!("a value renders as text or base64, not {other:?}"),
        };
        assert_eq!(back, data);
    }

    fn text(rng: &mut Rng) -> Value {
        const PIECES: &[&str] = &[
            "/",
            "registry",
            "a",
            "%2F",
            "é",
            "\u{0}",
            "\"",
            " ",
            "\u{1f600}",
        ];
        let n = rng.below(6);
        json!((0..n).map(|_| *rng.pick(PIECES)).collect::<String>())
    }

    fn number(rng: &mut Rng) -> Value {
        match rng.below(6) {
            0 => json!(i64::MAX),
            1 => json!(i64::MIN),
            2 => json!(u64::MAX),
            3 => json!(1.5),
            4 => json!("7"),
            _ => json!(rng.range(-2, 100)),
        }
    }

    fn op(rng: &mut Rng) -> Value {
        let kind = *rng.pick(&["put", "delete", "range", "get", "txn"]);
        let mut args = serde_json::Map::new();
        args.insert("key".into(), text(rng));
        if rng.one_in(2) {
            args.insert("value".into(), text(rng));
        }
        if rng.one_in(3) {
            args.insert("prefix".into(), json!(rng.one_in(2)));
        }
        for f in ["lease", "limit"] {
            if rng.one_in(3) {
                args.insert(f.into(), number(rng));
            }
        }
        json!({ kind: args })
    }

    fn generate(rng: &mut Rng) -> Vec<u8> {
        let v = match rng.below(5) {
            0 | 1 => {
                let compares: Vec<Value> = (0..rng.below(4))
                    .map(|_| {
                        json!({
                            "key": text(rng),
                            "target": rng.pick(&["value", "version", "mod_revision",
                                                 "create_revision", "lease", "size"]),
                            "result": rng.pick(&["equal", "not_equal", "less", "greater", "="]),
                            "value": text(rng),
                            "number": number(rng),
                        })
                    })
                    .collect();
                let success: Vec<Value> = (0..rng.below(4)).map(|_| op(rng)).collect();
                let failure: Vec<Value> = (0..rng.below(3)).map(|_| op(rng)).collect();
                json!({"compare": compares, "success": success, "failure": failure,
                       "request_id": text(rng)})
            }
            2 => json!({"ttl": number(rng), "ttl_ms": number(rng), "id": number(rng)}),
            3 => json!({"id": number(rng), "addr": text(rng)}),
            _ => {
                let keys = [
                    "prefix",
                    "limit",
                    "stale",
                    "revision",
                    "lease",
                    "key",
                    "from_revision",
                    "prev_kv",
                    "other",
                ];
                let pairs: Vec<String> = (0..rng.below(5))
                    .map(|_| {
                        let k = rng.pick(&keys);
                        let v =
                            rng.pick(&["1", "-1", "true", "false", "%2Fa%2F", "%zz", "", "1e3"]);
                        format!("{k}={v}")
                    })
                    .collect();
                return pairs.join("&").into_bytes();
            }
        };
        v.to_string().into_bytes()
    }

    /// The bounded run (`make test`).
    #[test]
    fn db_rest_bounded() {
        crate::transport::fuzz::harness::bounded(&TARGET, 20_000);
    }
}
