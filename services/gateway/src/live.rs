//! Live notifications: the Redis stream in, every open WebSocket of the
//! person out.
//!
//! [`consume`] follows the stream on whatever Redis is primary (the
//! registry says which) and hands each entry to the [`Hub`], which queues
//! it on each of that person's connections. A connection whose queue is
//! full is told to close (too slow) instead of slowing anyone else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenda_common::bus::{Bus, Primary, NOTIFICATIONS_STREAM};
use agenda_common::shutdown::CancellationToken;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::mpsc;
use uuid::Uuid;

/// One notification to push: its id and the JSON text of the notification.
#[derive(Debug)]
pub struct Pushed {
    pub id: String,
    pub json: String,
}

struct Conn {
    id: u64,
    tx: mpsc::Sender<Arc<Pushed>>,
    slow: CancellationToken,
}

/// Open connections by person.
pub struct Hub {
    conns: Mutex<HashMap<Uuid, Vec<Conn>>>,
    next: AtomicU64,
    queue: usize,
}

/// One connection's feed; unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    user: Uuid,
    id: u64,
    /// Live notifications for this connection.
    pub rx: mpsc::Receiver<Arc<Pushed>>,
    /// Cancelled when the connection fell behind.
    pub slow: CancellationToken,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut conns = self.hub.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = conns.get_mut(&self.user) {
            list.retain(|c| c.id != self.id);
            if list.is_empty() {
                conns.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// A hub queueing at most `queue` notifications per connection.
    pub fn new(queue: usize) -> Arc<Hub> {
        Arc::new(Hub {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            queue: queue.max(1),
        })
    }

    /// Opens a feed for one connection of `user`.
    pub fn subscribe(self: &Arc<Self>, user: Uuid) -> Subscription {
        let (tx, rx) = mpsc::channel(self.queue);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slow = CancellationToken::new();
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user)
            .or_default()
            .push(Conn {
                id,
                tx,
                slow: slow.clone(),
            });
        Subscription {
            hub: self.clone(),
            user,
            id,
            rx,
            slow,
        }
    }

    /// Open connections (for metrics and tests).
    pub fn connections(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Queues `n` on every connection of `user`, never waiting.
    pub fn publish(&self, user: Uuid, n: Arc<Pushed>) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = conns.get_mut(&user) else {
            return;
        };
        list.retain(|c| match c.tx.try_send(n.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(%user, conn = c.id, "WebSocket client too slow; disconnecting it");
                c.slow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// Ids already sent on one connection (bounded, oldest forgotten first).
pub struct Sent {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Sent {
    /// Remembers up to `cap` ids.
    pub fn new(cap: usize) -> Sent {
        Sent {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True the first time `id` is seen.
    pub fn first(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// How far back a consumer re-reads after a failover: entries the old
/// primary had but never replicated are published again by the relay with
/// new stream ids, which lie after the last id read only if clocks agree;
/// re-reading a margin (repeats are dropped per connection) covers that.
const FAILOVER_REWIND_MS: u64 = 10_000;

/// Reads the stream from the current primary and feeds the hub, until
/// `stop`; follows failovers.
pub async fn consume(bus: Arc<Bus>, hub: Arc<Hub>, stop: CancellationToken) {
    let mut last: Option<String> = None;
    let mut seen_primary: Option<Primary> = None;
    let mut primaries = bus.watch();
    loop {
        let primary = tokio::select! {
            () = stop.cancelled() => return,
            p = bus.wait_primary() => p,
        };
        if seen_primary.as_ref().is_some_and(|s| *s != primary) {
            last = last.map(|id| rewind(&id, FAILOVER_REWIND_MS));
        }
        seen_primary = Some(primary.clone());
        match follow(&bus, &hub, &primary, &mut last, &mut primaries, &stop).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(primary = %primary.addr, error = %e, "reading the notification stream failed; reconnecting");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

fn rewind(id: &str, ms: u64) -> String {
    let t: u64 = id
        .split('-')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    format!("{}-0", t.saturating_sub(ms))
}

/// Reads from `primary` until it stops being the primary (Ok) or fails.
async fn follow(
    bus: &Bus,
    hub: &Hub,
    primary: &Primary,
    last: &mut Option<String>,
    primaries: &mut tokio::sync::watch::Receiver<Option<Primary>>,
    stop: &CancellationToken,
) -> Result<(), agenda_common::Error> {
    let err = agenda_common::bus::redis_error;
    let mut conn = bus.connect(primary, Duration::from_secs(5)).await?;
    if last.is_none() {
        // Start at the current end: earlier notifications reach a client
        // through its `last_id` backlog, not through the live feed.
        let tail: StreamRangeReply = conn
            .xrevrange_count(NOTIFICATIONS_STREAM, "+", "-", 1)
            .await
            .map_err(err)?;
        *last = Some(tail.ids.first().map_or("0-0".to_string(), |e| e.id.clone()));
    }
    tracing::info!(primary = %primary.addr, from = ?last, "following the notification stream");
    let opts = StreamReadOptions::default().block(1000).count(1000);
    loop {
        let from = [last.clone().unwrap_or_else(|| "0-0".into())];
        let keys = [NOTIFICATIONS_STREAM];
        let read = conn.xread_options::<_, _, Option<StreamReadReply>>(&keys, &from, &opts);
        let reply = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            changed = primaries.changed() => {
                if changed.is_err() || primaries.borrow().as_ref() != Some(primary) {
                    return Ok(());
                }
                continue;
            }
            r = read => r.map_err(err)?,
        };
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                *last = Some(entry.id.clone());
                let field = |name: &str| -> Option<String> {
                    entry
                        .map
                        .get(name)
                        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                };
                let (Some(id), Some(user), Some(data)) =
                    (field("id"), field("user"), field("data"))
                else {
                    tracing::warn!(entry = %entry.id, "malformed stream entry skipped");
                    continue;
                };
                let Ok(user) = Uuid::parse_str(&user) else {
                    continue;
                };
                hub.publish(user, Arc::new(Pushed { id, json: data }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(id: &str) -> Arc<Pushed> {
        Arc::new(Pushed {
            id: id.into(),
            json: "{}".into(),
        })
    }

    #[tokio::test]
    async fn every_tab_of_a_person_gets_it_and_others_do_not() {
        let hub = Hub::new(8);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut a1 = hub.subscribe(alice);
        let mut a2 = hub.subscribe(alice);
        let mut b = hub.subscribe(bob);
        hub.publish(alice, pushed("n1"));
        assert_eq!(a1.rx.recv().await.unwrap().id, "n1");
        assert_eq!(a2.rx.recv().await.unwrap().id, "n1");
        assert!(b.rx.try_recv().is_err());
        drop(a1);
        assert_eq!(hub.connections(), 2);
    }

    #[tokio::test]
    async fn a_slow_connection_is_cut_without_blocking_the_others() {
        let hub = Hub::new(2);
        let user = Uuid::new_v4();
        let slow = hub.subscribe(user);
        let mut fast = hub.subscribe(user);
        for i in 0..5 {
            hub.publish(user, pushed(&format!("n{i}")));
            fast.rx.recv().await.unwrap();
        }
        assert!(slow.slow.is_cancelled());
        assert!(!fast.slow.is_cancelled());
        assert_eq!(hub.connections(), 1);
    }

    #[test]
    fn repeats_are_dropped_within_the_window() {
        let mut sent = Sent::new(2);
        assert!(sent.first("a"));
        assert!(!sent.first("a"));
        assert!(sent.first("b"));
        assert!(sent.first("c"));
        assert!(sent.first("a"), "forgotten after the window");
    }

    #[test]
    fn rewind_moves_the_time_part_back() {
        assert_eq!(rewind("1700000010000-5", 10_000), "1700000000000-0");
        assert_eq!(rewind("5-0", 10_000), "0-0");
    }
}
