//! The VIP fence: with `--vip-addr`, a request that arrived on the
//! virtual IP is served only while this machine's agenda-vip holds the
//! VIP lease (`/registry/vip/holder` = `--vip-holder-id`). An address can
//! outlive its holder on an interface (a daemon killed before its guard
//! ran, a partition); this makes such an address answer nobody, with a
//! 503 that tells clients to retry (they reach the real holder).

use std::net::IpAddr;
use std::sync::Arc;

use agenda_calendar::ApiError;
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::error::HttpError;
use crate::listener::Addrs;

/// The key agenda-vip holds (see vip-failover's `lease.rs`).
pub const HOLDER_KEY: &str = agenda_common::registry::VIP_HOLDER;

/// Whether VIP traffic may be served here.
#[derive(Clone)]
pub struct Fence {
    vip: IpAddr,
    holder: watch::Receiver<Option<Vec<u8>>>,
    me: Vec<u8>,
}

impl Fence {
    /// Follows the holder key from agenda-db.
    pub fn new(db: &DbClient, vip: IpAddr, me: &str, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Fence {
            vip,
            holder: agenda_common::registry::watch_key(db, HOLDER_KEY.to_string(), stop),
            me: me.as_bytes().to_vec(),
        })
    }

    /// A request that arrived on `local` may be served.
    pub fn allows(&self, local: IpAddr) -> bool {
        local != self.vip || self.holder.borrow().as_deref() == Some(self.me.as_slice())
    }
}

/// Middleware: refuses VIP requests while another machine (or nobody)
/// holds the VIP lease.
pub async fn fence(
    State(fence): State<Arc<Fence>>,
    ConnectInfo(Addrs { local, .. }): ConnectInfo<Addrs>,
    req: Request,
    next: Next,
) -> Response {
    if fence.allows(local.ip()) {
        return next.run(req).await;
    }
    let mut resp = HttpError(ApiError::unavailable(
        "this machine does not hold the virtual IP; retry (the VIP is moving)",
    ))
    .into_response();
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vip_traffic_is_fenced_and_only_while_another_machine_holds_it() {
        let (tx, holder) = watch::channel(None);
        let f = Fence {
            vip: "10.77.0.10".parse().unwrap(),
            holder,
            me: b"machine-a".to_vec(),
        };
        let vip: IpAddr = "10.77.0.10".parse().unwrap();
        let own: IpAddr = "10.77.0.11".parse().unwrap();
        assert!(!f.allows(vip), "nobody holds the lease");
        assert!(f.allows(own), "the machine's own address is never fenced");
        tx.send(Some(b"machine-a".to_vec())).unwrap();
        assert!(f.allows(vip));
        tx.send(Some(b"machine-b".to_vec())).unwrap();
        assert!(!f.allows(vip));
    }
}
