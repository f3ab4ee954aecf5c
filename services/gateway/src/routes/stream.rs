//! `GET /v1/stream`: live notifications over a WebSocket.
//!
//! The token comes in the `Authorization` header or, for browsers (which
//! cannot set headers on a WebSocket), as `?access_token=`. A missing or
//! bad token still completes the handshake and is then refused with close
//! code 4401 and the reason, so every client library can show it.
//! `?last_id=<notification id>` first replays what the client missed.
//!
//! Messages (text, JSON): `{"type":"ready"}`, `{"type":"notification",
//! "notification":{...}}`, `{"type":"heartbeat"}` (with a ping frame).
//!
//! A stream lives as long as its token: it closes (4401) when the token
//! expires, unless the client sends a fresh one first
//! (`{"type":"token","token":"..."}`, answered `{"type":"token_accepted"}`),
//! and at once when the person's sessions end (password changed, logged
//! out everywhere, account deleted).

use std::sync::Arc;
use std::time::Duration;

use agenda_calendar::api::Op;
use agenda_calendar::{ApiError, ErrorKind};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::HttpError;
use crate::extract::{caller_for, strip_bearer, verify, Query, Session};
use crate::limits;
use crate::live::{Pushed, Sent};
use crate::metrics::RequestId;
use crate::AppState;

/// Close code for a refused token (like HTTP 401).
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
/// Close code for a client that did not read fast enough.
pub const CLOSE_TOO_SLOW: u16 = 4408;
/// Close code for a client breaking the rules (too many messages).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code when the gateway shuts down (going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// How long one send may wait for a client before it counts as too slow.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `?access_token=&last_id=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The access token, when the Authorization header cannot be set.
    pub access_token: Option<String>,
    /// Id of the last notification received; what came after is sent first.
    pub last_id: Option<String>,
}

/// Live notifications (WebSocket).
#[utoipa::path(get, path = "/v1/stream", tag = "notifications", operation_id = "stream", params(StreamQuery),
    responses((status = 101, description = "WebSocket: ready, notification and heartbeat messages; close 4401 for a refused token, 4408 for a client too slow"),
              (status = 400, description = "not a WebSocket handshake")))]
pub async fn stream(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request_id: Option<axum::Extension<RequestId>>,
    Query(q): Query<StreamQuery>,
) -> Response {
    // Not a (valid) handshake: the error shape, not axum's plain text.
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return HttpError(ApiError::bad_request(format!(
                "not a WebSocket handshake: {}",
                e.body_text()
            )))
            .into_response()
        }
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(strip_bearer)
        .map(str::to_string)
        .or(q.access_token);
    let auth = match token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => Err(
            "unauthenticated: pass the access token as Authorization: Bearer or ?access_token="
                .to_string(),
        ),
        Some(t) => verify(&state, t).map_err(|e| format!("{}: {}", e.code, e.message)),
    };
    let request_id = request_id.map(|r| r.0 .0.clone()).unwrap_or_default();
    ws.max_message_size(limits::WS_MAX_MESSAGE_BYTES)
        .max_frame_size(limits::WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| session(socket, state, auth, q.last_id, request_id))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

fn notification_message(n: &Pushed) -> String {
    format!("{{\"type\":\"notification\",\"notification\":{}}}", n.json)
}

async fn session(
    mut socket: WebSocket,
    state: Arc<AppState>,
    auth: Result<Session, String>,
    last_id: Option<String>,
    request_id: String,
) {
    let mut token = match auth {
        Ok(t) => t,
        Err(reason) => {
            tracing::debug!(%request_id, %reason, "WebSocket refused");
            close(&mut socket, CLOSE_UNAUTHENTICATED, &reason).await;
            return;
        }
    };
    let user = token.user;
    // Told of ended sessions from here on; then checked once, for an end
    // between the handshake and now.
    let mut ended = state.sessions.subscribe();
    if let Err(e) = state.sessions.check(user, token.generation) {
        close(&mut socket, CLOSE_UNAUTHENTICATED, &e.message).await;
        return;
    }
    let metrics = state.metrics.clone();
    metrics.ws_open.inc();
    let _open = scopeguard(move || metrics.ws_open.dec());
    // Subscribe before reading the backlog: what arrives meanwhile waits in
    // the queue and repeats are dropped by id.
    let mut sub = state.hub.subscribe(user);
    let mut sent = Sent::new(10_000);
    // What the client already has: everything up to its last_id (ids are
    // time-ordered). A consumer that re-reads the Redis stream after a
    // failover pushes older entries again; the client received those on
    // an earlier connection, which this one's `sent` never saw.
    let floor = last_id.as_deref().and_then(|s| Uuid::parse_str(s).ok());
    let already_had = |id: &str| floor.is_some_and(|f| Uuid::parse_str(id).is_ok_and(|id| id <= f));
    if let Some(after) = last_id.filter(|s| !s.is_empty()) {
        let caller = caller_for(state.clone(), request_id.clone(), user);
        match caller
            .call_json(Op::NotificationsAfter { after: Some(after) })
            .await
        {
            Ok((status, body)) if ErrorKind::from_status(status).is_none() => {
                for n in body["items"].as_array().into_iter().flatten() {
                    let id = n["id"].as_str().unwrap_or_default().to_string();
                    if sent.first(&id) {
                        let msg = json!({"type": "notification", "notification": n}).to_string();
                        if !send_text(&mut socket, msg).await {
                            return;
                        }
                        state.metrics.ws_pushed.inc();
                    }
                }
            }
            Ok((status, body)) => {
                let reason = body["error"]["message"]
                    .as_str()
                    .unwrap_or("cannot replay")
                    .to_string();
                let code = if ErrorKind::from_status(status) == Some(ErrorKind::Unauthenticated) {
                    CLOSE_UNAUTHENTICATED
                } else {
                    4000 + status.min(999)
                };
                close(&mut socket, code, &reason).await;
                return;
            }
            Err(e) => {
                close(
                    &mut socket,
                    1013,
                    &format!("{}; reconnect with the same last_id", e.message),
                )
                .await;
                return;
            }
        }
    }
    if !send_text(&mut socket, json!({"type": "ready"}).to_string()).await {
        return;
    }
    let mut allowance = limits::Allowance::new(limits::WS_MESSAGES);
    let mut heartbeat = tokio::time::interval(state.ws_heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                close(&mut socket, CLOSE_GOING_AWAY, "the gateway is shutting down; reconnect").await;
                return;
            }
            () = sub.slow.cancelled() => {
                state.metrics.ws_slow.inc();
                close(&mut socket, CLOSE_TOO_SLOW, "too slow: notifications were not read in time; reconnect with last_id").await;
                return;
            }
            n = sub.rx.recv() => {
                let Some(n) = n else { return };
                if !already_had(&n.id) && sent.first(&n.id) {
                    if !send_text(&mut socket, notification_message(&n)).await {
                        state.metrics.ws_slow.inc();
                        close(&mut socket, CLOSE_TOO_SLOW, "too slow: a send timed out; reconnect with last_id").await;
                        return;
                    }
                    state.metrics.ws_pushed.inc();
                }
            }
            _ = heartbeat.tick() => {
                let ok = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Vec::new().into()))).await;
                if !matches!(ok, Ok(Ok(()))) || !send_text(&mut socket, json!({"type": "heartbeat"}).to_string()).await {
                    return;
                }
            }
            () = tokio::time::sleep_until(until(token.expires_at)) => {
                close(&mut socket, CLOSE_UNAUTHENTICATED, "the access token expired: send a fresh one before it does, or reconnect with last_id").await;
                return;
            }
            who = ended.recv() => {
                let mine = match who {
                    Ok(u) => u == user,
                    // Missed some: check this one.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if mine {
                    if let Err(e) = state.sessions.check(user, token.generation) {
                        close(&mut socket, CLOSE_UNAUTHENTICATED, &e.message).await;
                        return;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(_) | Message::Binary(_))) if !allowance.take(std::time::Instant::now()) => {
                    close(&mut socket, CLOSE_POLICY, "too many messages: a client only sends a fresh token now and then").await;
                    return;
                }
                Some(Ok(Message::Text(text))) => {
                    match fresh_token(&state, user, &text) {
                        Ok(Some(t)) => {
                            token = t;
                            let ack = json!({"type": "token_accepted", "expires_at": t.expires_at});
                            if !send_text(&mut socket, ack.to_string()).await {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            close(&mut socket, CLOSE_UNAUTHENTICATED, &reason).await;
                            return;
                        }
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// When a token that expires at `exp` (unix seconds) runs out.
fn until(exp: u64) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now);
    tokio::time::Instant::now() + left
}

/// A client message offering a fresh token for the same person: the token
/// (None for any other message), or why it is refused.
fn fresh_token(state: &AppState, user: Uuid, text: &str) -> Result<Option<Session>, String> {
    let Ok(msg) = serde_json::from_str::<serde_json::Value>(text) else {
        return Ok(None);
    };
    if msg["type"] != "token" {
        return Ok(None);
    }
    let t = msg["token"].as_str().unwrap_or_default();
    match verify(state, t) {
        Ok(s) if s.user == user => Ok(Some(s)),
        Ok(_) => Err("the fresh token is another person's".into()),
        Err(e) => Err(format!("{}: {}", e.code, e.message)),
    }
}

/// Runs `f` when dropped (however the session ends).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
