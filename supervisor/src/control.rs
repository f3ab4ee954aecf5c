//! The control loop: every check interval, check every Redis node and read
//! the published primary (in parallel), feed the observations to
//! [`failover::Tracker`], and, when this supervisor leads, carry out what
//! it decides. Every decision is logged with its reason and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_common::registry::RedisPrimary;
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use tokio::sync::watch;

use crate::failover::{Action, Tracker};
use crate::metrics::Metrics;
use crate::published::{self, Published};
use crate::redis_node::RedisNode;

/// State of the loop.
pub struct Control {
    /// This supervisor's id (value of the election key while it leads).
    pub id: String,
    /// agenda-db, with a short per-call deadline.
    pub db: DbClient,
    /// Every configured node, in configured order.
    pub nodes: Vec<RedisNode>,
    /// Observations over time.
    pub tracker: Tracker,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether this supervisor leads now (from `election`).
    pub leader: watch::Receiver<bool>,
    /// The published primary, for `local` (updated on every read).
    pub primary_tx: watch::Sender<Option<RedisPrimary>>,
    /// Time between rounds.
    pub interval: Duration,
    /// The last read of the record.
    published: Option<Published>,
    /// Nodes whose last check failed (log transitions only).
    failing: HashMap<String, bool>,
    /// The current "cannot promote" episode was logged already.
    hold_logged: bool,
    /// agenda-db was unreachable in the last round (log transitions only).
    db_failing: bool,
}

impl Control {
    /// A loop over `nodes` (configured order).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        db: DbClient,
        nodes: Vec<RedisNode>,
        down_after: Duration,
        metrics: Arc<Metrics>,
        leader: watch::Receiver<bool>,
        primary_tx: watch::Sender<Option<RedisPrimary>>,
        interval: Duration,
    ) -> Self {
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        Control {
            id,
            db,
            tracker: Tracker::new(&addrs, down_after),
            nodes,
            metrics,
            leader,
            primary_tx,
            interval,
            published: None,
            failing: HashMap::new(),
            hold_logged: false,
            db_failing: false,
        }
    }

    /// Runs rounds until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.round() => {}
            }
        }
    }

    async fn round(&mut self) {
        let checks = futures::future::join_all(self.nodes.iter_mut().map(|n| async move {
            let r = n.check().await;
            (n.addr.clone(), r)
        }));
        let (results, read) = tokio::join!(checks, published::read(&self.db));
        let now = Instant::now();
        for (addr, r) in results {
            let was_failing = self.failing.get(&addr).copied().unwrap_or(false);
            match &r {
                Err(e) => {
                    self.metrics
                        .check_failures
                        .with_label_values(&[addr.as_str()])
                        .inc();
                    if !was_failing {
                        tracing::warn!(node = %addr, error = %e, "health check failed");
                    }
                }
                Ok(o) if was_failing => {
                    tracing::info!(node = %addr, role = ?o.role, "health check passes again")
                }
                Ok(_) => {}
            }
            self.failing.insert(addr.clone(), r.is_err());
            self.tracker.record(&addr, now, r);
        }
        match read {
            Ok(p) => {
                if self.db_failing {
                    tracing::info!("agenda-db reachable again");
                    self.db_failing = false;
                }
                self.set_published(p);
            }
            Err(e) => {
                if !self.db_failing {
                    tracing::warn!(error = %e, "cannot read the published primary; no decision until agenda-db answers");
                    self.db_failing = true;
                }
                return;
            }
        }
        let leader = *self.leader.borrow();
        let current = self.published.as_ref().and_then(|p| p.primary.clone());
        let actions = self.tracker.decide(now, leader, current.as_ref());
        if !actions.iter().any(|a| matches!(a, Action::Hold { .. })) {
            self.hold_logged = false;
        }
        for action in actions {
            self.act(action).await;
        }
    }

    fn set_published(&mut self, p: Published) {
        self.metrics
            .epoch
            .set(p.primary.as_ref().map_or(0, |p| p.epoch as i64));
        let primary = p.primary.clone();
        self.primary_tx.send_if_modified(|cur| {
            let changed = *cur != primary;
            if changed {
                tracing::info!(primary = ?primary, "published Redis primary");
                *cur = primary;
            }
            changed
        });
        self.published = Some(p);
    }

    fn node(&mut self, addr: &str) -> Option<&mut RedisNode> {
        self.nodes.iter_mut().find(|n| n.addr == addr)
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Hold { reason } => {
                if !self.hold_logged {
                    tracing::warn!(%reason, "decision: hold (nothing to promote yet)");
                    self.metrics.decision("hold");
                    self.hold_logged = true;
                }
            }
            Action::Fence {
                addr,
                primary,
                reason,
            } => {
                tracing::warn!(node = %addr, %primary, %reason, "decision: fence (REPLICAOF the primary)");
                self.metrics.decision("fence");
                self.metrics.fencings.inc();
                let Some(node) = self.node(&addr) else { return };
                if let Err(e) = node.replicate(&primary).await {
                    tracing::warn!(node = %addr, error = %e, "fencing failed; will retry");
                    self.metrics.decision("fence-failed");
                }
            }
            Action::Bootstrap { addr, reason } => {
                tracing::info!(node = %addr, %reason, "decision: bootstrap (first primary, epoch 1)");
                self.metrics.decision("bootstrap");
                self.promote(&addr, 1, "bootstrap").await;
            }
            Action::Promote {
                addr,
                epoch,
                reason,
            } => {
                tracing::warn!(node = %addr, epoch, %reason, "decision: promote");
                self.metrics.decision("promote");
                if self.promote(&addr, epoch, "promote").await {
                    self.metrics.promotions.inc();
                }
            }
        }
    }

    /// `REPLICAOF NO ONE` on `addr` (unless it is a master already), then
    /// publishes it with `epoch`. True when published.
    async fn promote(&mut self, addr: &str, epoch: u64, kind: &str) -> bool {
        if !*self.leader.borrow() {
            tracing::warn!(node = %addr, "not promoting: leadership lost meanwhile");
            return false;
        }
        let is_master = self.tracker.last(addr).is_some_and(|o| o.is_master());
        if !is_master {
            let Some(node) = self.node(addr) else {
                return false;
            };
            if let Err(e) = node.make_master().await {
                tracing::warn!(node = %addr, error = %e, "{kind} failed: REPLICAOF NO ONE did not succeed; will retry");
                self.metrics.decision(&format!("{kind}-failed"));
                return false;
            }
        }
        let read_revision = self.published.as_ref().map_or(0, |p| p.mod_revision);
        let primary = RedisPrimary {
            addr: addr.to_string(),
            epoch,
        };
        match published::publish(&self.db, &self.id, read_revision, &primary).await {
            Ok(revision) => {
                tracing::info!(node = %addr, epoch, revision, "published the new Redis primary");
                self.set_published(Published {
                    primary: Some(primary),
                    mod_revision: revision,
                });
                true
            }
            Err(e) => {
                tracing::warn!(node = %addr, epoch, error = %e, "{kind} not published; will decide again");
                self.metrics.decision(&format!("{kind}-failed"));
                false
            }
        }
    }
}
