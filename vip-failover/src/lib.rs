//! `agenda-vip`: one beside each gateway. A VRRP-like election between
//! the machines' daemons decides who should hold the virtual IP; the VIP
//! lease in agenda-db decides who may. Clients reach the system only
//! through the VIP, so this is the active-passive switch of the gateway.
//!
//! Layout:
//! - [`config`]: flags and environment, and their validation.
//! - [`advert`]: the advert on the wire and its HMAC / anti-replay check (pure).
//! - [`vrrp`]: the state machine: timers, priorities, preemption (pure).
//! - [`health`]: the local gateway's debounced liveness.
//! - [`lease`]: the VIP lease in agenda-db, and the order of claim and
//!   release that fences the address.
//! - [`address`]: `ip addr`, gratuitous ARP, and the guard process that
//!   removes the address when this daemon dies.
//! - [`metrics`]: `/metrics`, `/healthz`, `/status`.
//! - [`error`]: the crate's error type.
#![deny(missing_docs)]

pub mod address;
pub mod advert;
pub mod config;
pub mod error;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod vrrp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

pub use config::Config;
pub use error::{Error, Result};

use crate::address::Address;
use crate::advert::{Advert, Codec};
use crate::metrics::{Metrics, Status};
use crate::vrrp::{Action, Params, Vrrp};

/// Everything the loop acts with.
struct Daemon {
    cfg: Config,
    db: DbClient,
    addr: Address,
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    codec: Codec,
    counter: u64,
    vrrp: Vrrp,
    held: Option<lease::Held>,
    timing: lease::Timing,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

/// Runs the daemon until `shutdown`, serving metrics on `http_listener`.
pub async fn run(
    cfg: Config,
    http_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    cfg.validate()?;
    let key = cfg.auth_key()?;
    let addr = Address::new(
        cfg.vip,
        &cfg.interface,
        &cfg.ip_cmd,
        &cfg.arping_cmd,
        (cfg.arp_count, cfg.arp_interval),
    );
    // An address left by an earlier life of this daemon goes first: it is
    // not ours until the lease says so.
    let step = |what| {
        move |e| Error::Interface {
            what,
            cause: Box::new(e),
        }
    };
    if addr
        .present()
        .await
        .map_err(step("checking the interface"))?
    {
        tracing::warn!(vip = %cidr(&cfg), "removing a stale VIP left on the interface");
        addr.remove().await.map_err(step("removing a stale VIP"))?;
    }
    // The guard's stdin is held here for the daemon's whole life (tokio's
    // `Child::wait` would close it, which is the guard's signal to act).
    let (mut guard, mut guard_pipe) = addr.spawn_guard()?;
    let socket = UdpSocket::bind(&cfg.bind)
        .await
        .map_err(|cause| Error::Io {
            what: format!("--bind {}", cfg.bind),
            cause,
        })?;
    let mut peers = Vec::new();
    for p in &cfg.peers {
        let resolved = tokio::net::lookup_host(p)
            .await
            .map_err(|cause| Error::Io {
                what: format!("--peers {p}"),
                cause,
            })?
            .next()
            .ok_or_else(|| Error::Config(format!("--peers {p}: no address")))?;
        peers.push(resolved);
    }
    // Not a child of `shutdown`: the lease must stay renewed through a
    // handover after the signal; cancelled once the VIP is released (or
    // on any way out of here).
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let timing = lease::Timing {
        ttl: cfg.lease_ttl,
        lock_delay: cfg.lock_delay,
    };
    let metrics = Arc::new(
        Metrics::new(Status {
            id: cfg.id.clone(),
            vip: cidr(&cfg),
            state: "backup",
            priority: cfg.priority,
            lease: None,
            reason: "starting".into(),
            since_ms: metrics::now_ms(),
        })
        .map_err(Error::Metrics)?,
    );
    let http = tokio::spawn(metrics::serve(http_listener, metrics.clone(), stop.clone()));
    let setup = |what| move |cause| Error::Setup { what, cause };
    let links = agenda_common::net::Links::from_args(&cfg.tls, &stop).map_err(setup("TLS"))?;
    let mut health = health::spawn(
        cfg.health_url.clone(),
        cfg.health_interval,
        cfg.health_timeout,
        links.public_client_config().map_err(setup("TLS"))?,
        health::Debouncer::new(cfg.health_fall, cfg.health_rise),
        stop.clone(),
    );
    let now = Instant::now();
    let vrrp = Vrrp::new(
        Params {
            id: cfg.id.clone(),
            priority: cfg.priority,
            advert_interval: cfg.advert_interval,
            preempt: cfg.preempt(),
            sole_backup: cfg.peers.len() == 1,
        },
        *health.borrow(),
        now,
    );
    metrics.entered(vrrp.state(), "starting");
    tracing::info!(
        id = %cfg.id, vip = %cidr(&cfg), interface = %cfg.interface, priority = cfg.priority,
        preempt = cfg.preempt(), peers = ?peers, master_down = ?vrrp.master_down_interval(),
        "agenda-vip starting"
    );
    let mut d = Daemon {
        db: links
            .db_client(&cfg.db.db)
            .map_err(setup("--db"))?
            .with_timeout(cfg.lease_ttl)
            .hedged(),
        addr,
        socket,
        peers,
        codec: Codec::new(&key),
        // Grows across restarts (see advert.rs).
        counter: metrics::now_ms() * 1000,
        vrrp,
        held: None,
        timing,
        metrics,
        stop: stop.clone(),
        cfg,
    };
    let mut buf = [0u8; 512];
    loop {
        let deadline = d.vrrp.next_deadline();
        let lost = d.held.as_ref().map(|h| h.lost.clone());
        let actions = tokio::select! {
            () = shutdown.cancelled() => break,
            r = d.socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => d.received(&buf[..n], from),
                Err(e) => {
                    tracing::warn!(error = %e, "advert socket error");
                    Vec::new()
                }
            },
            () = sleep_until(deadline) => d.vrrp.tick(Instant::now()),
            r = health.changed() => match r {
                Ok(()) => {
                    let healthy = *health.borrow_and_update();
                    d.vrrp.on_health(healthy, Instant::now())
                }
                Err(_) => break,
            },
            () = cancelled(lost) => d.vrrp.lease_lost(Instant::now()),
            status = guard.wait() => {
                // Killed by someone: it removed the address on its way
                // out only if it saw EOF, so a master's address may still
                // be up. A new guard takes over; at most one a second.
                tracing::warn!(?status, "the VIP guard exited; starting a new one");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                (guard, guard_pipe) = d.addr.spawn_guard()?;
                Vec::new()
            }
        };
        d.perform(actions).await;
    }
    d.hand_over().await;
    let actions = d.vrrp.shutdown(Instant::now());
    d.perform(actions).await;
    stop.cancel();
    // Closing the guard's stdin lets it run its (now idle) removal.
    let _ = guard_pipe.shutdown().await;
    drop(guard_pipe);
    let _ = guard.wait().await;
    let _ = http.await;
    tracing::info!("agenda-vip stopped");
    Ok(())
}

fn cidr(cfg: &Config) -> String {
    format!("{}/{}", cfg.vip.0, cfg.vip.1)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn cancelled(token: Option<CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    fn received(&mut self, bytes: &[u8], from: SocketAddr) -> Vec<Action> {
        match self.codec.open(bytes) {
            Ok(a) => {
                self.metrics.adverts_received.inc();
                tracing::trace!(from = %from, id = %a.id, priority = a.priority, "advert");
                self.vrrp.on_advert(&a, Instant::now())
            }
            Err(why) => {
                self.metrics
                    .adverts_rejected
                    .with_label_values(&[why.label()])
                    .inc();
                tracing::debug!(from = %from, reason = why.label(), "advert dropped");
                Vec::new()
            }
        }
    }

    async fn advert(&mut self, priority: u8) {
        self.counter += 1;
        let bytes = self.codec.seal(&Advert {
            id: self.cfg.id.clone(),
            priority,
            interval_ms: self.cfg.advert_interval.as_millis().min(u16::MAX as u128) as u16,
            counter: self.counter,
        });
        for p in &self.peers {
            match self.socket.send_to(&bytes, p).await {
                Ok(_) => self.metrics.adverts_sent.inc(),
                // A peer machine that is down or cut off: expected.
                Err(e) => tracing::debug!(peer = %p, error = %e, "advert not sent"),
            }
        }
    }

    /// Carries out actions (and the ones they lead to), then records the
    /// state changes.
    async fn perform(&mut self, mut actions: Vec<Action>) {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for a in actions {
                match a {
                    Action::Advert => self.advert(self.cfg.priority).await,
                    Action::Claim { lock_delay } => {
                        let ok = self.claim(lock_delay).await;
                        next.extend(self.vrrp.claim_result(ok, Instant::now()));
                    }
                    Action::Release => self.release().await,
                }
            }
            actions = next;
        }
        for t in self.vrrp.take_transitions() {
            tracing::info!(from = t.from.name(), to = t.to.name(), reason = %t.reason, "state change");
            self.metrics.entered(t.to, &t.reason.to_string());
            if let Some(cmd) = &self.cfg.notify {
                notify(cmd, t.to.name(), &t.reason.to_string());
            }
        }
    }

    /// Lease first, then the address, then the announcement.
    async fn claim(&mut self, lock_delay: bool) -> bool {
        let started = Instant::now();
        let held =
            match lease::claim(&self.db, &self.cfg.id, self.timing, lock_delay, &self.stop).await {
                Ok(h) => h,
                Err(error::Error::Held(by)) => {
                    self.metrics.claims.with_label_values(&["held"]).inc();
                    tracing::info!(holder = %by, "VIP lease held elsewhere; staying backup");
                    return false;
                }
                Err(e) => {
                    self.metrics.claims.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %e, "VIP claim failed");
                    return false;
                }
            };
        if let Err(e) = self.addr.add().await {
            tracing::error!(error = %e, "VIP lease taken but the address could not be added; giving the lease back");
            lease::release(&self.db, held).await;
            self.metrics.claims.with_label_values(&["error"]).inc();
            return false;
        }
        self.addr.announce();
        self.metrics.claims.with_label_values(&["ok"]).inc();
        self.metrics.set_lease(Some(held.lease));
        tracing::info!(lease = held.lease, lock_delay, took = ?started.elapsed(), "VIP taken");
        self.held = Some(held);
        true
    }

    /// A planned stop while holding the VIP: the handover's steps
    /// (`registry::Handover`) go to `/registry/vip/releasing`, on the
    /// lease (so they go with it). For the first four fifths of
    /// --handover-grace the local gateway answers VIP requests 503 with
    /// `Connection: close` (each connection that carries one ends cleanly;
    /// clients retry on the next holder), for the last fifth it also
    /// closes the idle ones; then the address and the lease go as on any
    /// release. Adverts go on meanwhile (still the master), so the peer
    /// waits for the release and claims without a lock-delay.
    async fn hand_over(&mut self) {
        use agenda_common::registry::{vip_handover, Handover};
        let grace = self.cfg.handover_grace;
        let Some(held) = &self.held else { return };
        if grace.is_zero() {
            return;
        }
        let (lease, lost) = (held.lease, held.lost.clone());
        tracing::info!(
            ?grace,
            "handing the VIP over: the local gateway drains its VIP connections first"
        );
        let start = tokio::time::Instant::now();
        for (step, until) in [
            (Handover::Refusing, start + grace.mul_f64(0.8)),
            (Handover::Closing, start + grace),
        ] {
            let marked = self
                .db
                .put(agenda_proto::db::PutRequest {
                    key: agenda_common::registry::VIP_RELEASING.as_bytes().to_vec(),
                    value: vip_handover(&self.cfg.id, step),
                    lease,
                    ..Default::default()
                })
                .await;
            if let Err(e) = marked {
                tracing::warn!(error = %e, ?step, "cannot announce the handover's step; releasing the VIP now");
                return;
            }
            while tokio::time::Instant::now() < until && !lost.is_cancelled() {
                self.advert(self.cfg.priority).await;
                let next = (tokio::time::Instant::now() + self.cfg.advert_interval).min(until);
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = lost.cancelled() => {}
                }
            }
        }
    }

    /// Address first, then the lease, then the priority-0 advert.
    async fn release(&mut self) {
        if let Err(e) = self.addr.remove().await {
            tracing::error!(error = %e, "cannot remove the VIP; keeping the lease until its deadline passes");
            // Stop renewing: the lease expires on its own after its TTL,
            // and the peer waits for that (plus the lock-delay).
            if let Some(h) = self.held.take() {
                h.lost.cancel();
            }
            self.metrics.set_lease(None);
            return;
        }
        if let Some(h) = self.held.take() {
            lease::release(&self.db, h).await;
            tracing::info!("VIP released");
        }
        self.metrics.set_lease(None);
        self.advert(0).await;
    }
}

/// Runs the notify hook as `CMD STATE REASON`; not waited for.
fn notify(cmd: &str, state: &str, reason: &str) {
    let spawned = tokio::process::Command::new("sh")
        .args([
            "-c",
            &format!("{cmd} \"$1\" \"$2\""),
            "agenda-vip-notify",
            state,
            reason,
        ])
        .stdin(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot run the notify hook"),
    }
}
