//! The VIP fence: with `--vip-addr`, a request that arrived on the
//! virtual IP is served only while this machine's agenda-vip holds the
//! VIP lease (`/registry/vip/holder` = `--vip-holder-id`) and is not
//! handing it over (`/registry/vip/releasing`). An address can outlive
//! its holder on an interface (a daemon killed before its guard ran, a
//! partition); this makes such an address answer nobody, with a 503 that
//! tells clients to retry (they reach the real holder).
//!
//! When the fence closes, the gateway also closes its connections that
//! arrived on the VIP ([`Fence::closed`], `server::serve`): idle ones at
//! once, busy ones after their answer. A planned handover (agenda-vip
//! stopped) goes in two steps before the address moves
//! ([`agenda_common::registry::Handover`]): first every VIP request is
//! answered 503 with `Connection: close` (clients retry, and reconnect),
//! then the connections still idle are closed; so no client is left
//! holding a connection that the next holder would answer with a reset.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use agenda_calendar::ApiError;
use agenda_common::registry::{vip_handover, Handover, VIP, VIP_HOLDER, VIP_RELEASING};
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::error::HttpError;
use crate::listener::Addrs;

/// The VIP's keys in agenda-db, followed.
type Keys = BTreeMap<Vec<u8>, Vec<u8>>;

/// Whether VIP traffic may be served here.
#[derive(Clone)]
pub struct Fence {
    vip: IpAddr,
    keys: watch::Receiver<Keys>,
    me: Vec<u8>,
    /// This machine's handover values at each step (`vip_handover`).
    refusing: Vec<u8>,
    closing: Vec<u8>,
}

impl Fence {
    /// Follows the VIP's keys in agenda-db.
    pub fn new(db: &DbClient, vip: IpAddr, me: &str, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Fence::following(
            vip,
            agenda_common::registry::watch_prefix(db, VIP.to_string(), stop),
            me,
        ))
    }

    fn following(vip: IpAddr, keys: watch::Receiver<Keys>, me: &str) -> Fence {
        Fence {
            vip,
            keys,
            me: me.as_bytes().to_vec(),
            refusing: vip_handover(me, Handover::Refusing),
            closing: vip_handover(me, Handover::Closing),
        }
    }

    fn holding(&self, keys: &Keys) -> bool {
        keys.get(VIP_HOLDER.as_bytes()) == Some(&self.me)
    }

    /// This machine's handover has reached `step` (or a later one).
    fn handing_over_at(&self, keys: &Keys, step: Handover) -> bool {
        let Some(v) = keys.get(VIP_RELEASING.as_bytes()) else {
            return false;
        };
        *v == self.closing || (step == Handover::Refusing && *v == self.refusing)
    }

    /// The VIP may be served here now.
    fn serving(&self, keys: &Keys) -> bool {
        self.holding(keys) && !self.handing_over_at(keys, Handover::Refusing)
    }

    /// VIP connections must close now, idle ones included.
    fn closing(&self, keys: &Keys) -> bool {
        !self.holding(keys) || self.handing_over_at(keys, Handover::Closing)
    }

    /// A request that arrived on `local` may be served.
    pub fn allows(&self, local: IpAddr) -> bool {
        local != self.vip || self.serving(&self.keys.borrow())
    }

    /// Resolves once a connection that arrived on `local` must close,
    /// idle or not: for the VIP, when another machine (or nobody) holds
    /// it (perhaps from the start) or this one's handover reaches
    /// [`Handover::Closing`]; for any other address, never.
    pub async fn closed(&self, local: IpAddr) {
        if local != self.vip {
            return std::future::pending().await;
        }
        let mut keys = self.keys.clone();
        // An error means the follower stopped (the gateway is stopping):
        // the server's own shutdown closes the connection then.
        if keys.wait_for(|k| self.closing(k)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Why VIP requests are refused now (for the 503's message).
    fn handing_over(&self) -> bool {
        let keys = self.keys.borrow();
        self.holding(&keys) && self.handing_over_at(&keys, Handover::Refusing)
    }
}

/// Middleware: refuses VIP requests while another machine (or nobody)
/// holds the VIP lease, or while this one hands it over.
pub async fn fence(
    State(fence): State<Arc<Fence>>,
    ConnectInfo(Addrs { local, .. }): ConnectInfo<Addrs>,
    req: Request,
    next: Next,
) -> Response {
    if fence.allows(local.ip()) {
        return next.run(req).await;
    }
    let message = if fence.handing_over() {
        "this machine is handing the virtual IP over to the other one; retry"
    } else {
        "this machine does not hold the virtual IP; retry (the VIP is moving)"
    };
    let secs = agenda_common::admission::RETRY_AFTER.as_secs().max(1);
    let mut resp = HttpError(
        ApiError::unavailable(message)
            .with_details(serde_json::json!({ "reason": "vip_moving", "retry_after": secs })),
    )
    .into_response();
    let headers = resp.headers_mut();
    headers.insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    headers.insert(axum::http::header::RETRY_AFTER, secs.into());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence() -> (watch::Sender<Keys>, Fence) {
        let (tx, keys) = watch::channel(Keys::new());
        let f = Fence::following("10.77.0.10".parse().unwrap(), keys, "machine-a");
        (tx, f)
    }

    fn set(tx: &watch::Sender<Keys>, key: &str, value: Option<&str>) {
        tx.send_modify(|k| match value {
            Some(v) => {
                k.insert(key.as_bytes().to_vec(), v.as_bytes().to_vec());
            }
            None => {
                k.remove(key.as_bytes());
            }
        });
    }

    #[test]
    fn only_vip_traffic_is_fenced_and_only_while_another_machine_holds_it() {
        let (tx, f) = fence();
        let vip: IpAddr = "10.77.0.10".parse().unwrap();
        let own: IpAddr = "10.77.0.11".parse().unwrap();
        assert!(!f.allows(vip), "nobody holds the lease");
        assert!(f.allows(own), "the machine's own address is never fenced");
        set(&tx, VIP_HOLDER, Some("machine-a"));
        assert!(f.allows(vip));
        set(&tx, VIP_HOLDER, Some("machine-b"));
        assert!(!f.allows(vip));
    }

    #[test]
    fn a_handover_fences_the_vip_before_the_lease_goes() {
        let (tx, f) = fence();
        let vip: IpAddr = "10.77.0.10".parse().unwrap();
        set(&tx, VIP_HOLDER, Some("machine-a"));
        set(&tx, VIP_RELEASING, Some("machine-b"));
        assert!(f.allows(vip), "another machine's handover is not ours");
        set(&tx, VIP_RELEASING, Some("machine-a"));
        assert!(!f.allows(vip) && f.handing_over());
        assert!(
            !f.closing(&f.keys.borrow()),
            "idle connections stay at first"
        );
        set(&tx, VIP_RELEASING, Some("machine-a\nclosing"));
        assert!(!f.allows(vip) && f.handing_over());
        assert!(f.closing(&f.keys.borrow()), "then they close too");
        assert!(f.allows("10.77.0.11".parse().unwrap()));
    }

    #[tokio::test]
    async fn vip_connections_close_when_the_fence_does_and_others_never() {
        let (tx, f) = fence();
        let vip: IpAddr = "10.77.0.10".parse().unwrap();
        set(&tx, VIP_HOLDER, Some("machine-a"));
        let short = std::time::Duration::from_millis(50);
        assert!(
            tokio::time::timeout(short, f.closed(vip)).await.is_err(),
            "served: stays open"
        );
        set(&tx, VIP_RELEASING, Some("machine-a"));
        assert!(
            tokio::time::timeout(short, f.closed(vip)).await.is_err(),
            "refusing: requests end their connections, idle ones stay"
        );
        set(&tx, VIP_RELEASING, Some("machine-a\nclosing"));
        tokio::time::timeout(std::time::Duration::from_secs(5), f.closed(vip))
            .await
            .expect("the handover's last step closes VIP connections");
        set(&tx, VIP_RELEASING, None);
        set(&tx, VIP_HOLDER, Some("machine-b"));
        tokio::time::timeout(std::time::Duration::from_secs(5), f.closed(vip))
            .await
            .expect("another holder: closed at once");
        assert!(
            tokio::time::timeout(short, f.closed("10.77.0.11".parse().unwrap()))
                .await
                .is_err(),
            "the machine's own address: never"
        );
    }
}
