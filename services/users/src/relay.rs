//! The notification relay: agenda-db's notifications to the Redis stream,
//! in order, losing nothing across any failover.
//!
//! One relay acts at a time (an election in agenda-db). It watches the
//! notifications prefix from the cursor, `XADD`s each new notification to
//! the current primary, waits until the replica holds them (`WAIT 1`) and
//! only then moves the cursor, in a transaction fenced by its election.
//! Whatever happens in between — the relay, Redis or agenda-db dying — the
//! next relay starts again from the cursor: entries may be sent twice
//! (consumers drop repeated ids), never lost.

use std::sync::Arc;
use std::time::Duration;

use agenda_calendar::keys;
use agenda_common::bus::{Bus, NOTIFICATIONS_STREAM};
use agenda_common::election;
use agenda_common::shutdown::{self, CancellationToken};
use agenda_common::{DbClient, Error};
use agenda_proto::db::{
    event::EventType, request_op, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchRequest,
};
use futures::{FutureExt, StreamExt};

/// Election key of the relay.
pub const ELECTION_KEY: &str = agenda_common::registry::NOTIFICATION_RELAY_ELECTION;
/// The last revision relayed and replicated.
pub const CURSOR_KEY: &str = keys::RELAY_CURSOR;
/// Approximate length the stream is trimmed to.
pub const STREAM_MAXLEN: usize = 100_000;

/// Most watch responses folded into one publish.
const MAX_BATCH_RESPONSES: usize = 512;

/// How long one `WAIT` for the replica may take.
const WAIT_MS: u64 = 1000;

/// One notification to publish.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    user: String,
    data: Vec<u8>,
}

/// `agenda_relay_active` (1 in the replica relaying),
/// `agenda_relay_published_total` and `agenda_relay_lag_seconds` (from a
/// notification's arrival on the watch to the Redis replica's
/// acknowledgement, the time a person's live notification waits here).
struct Metrics {
    active: prometheus::IntGauge,
    published: prometheus::IntCounter,
    lag: prometheus::Histogram,
}

static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(|| {
    let active = prometheus::IntGauge::new(
        "agenda_relay_active",
        "1 while this replica is the notification relay.",
    )
    .expect("static metric options are valid");
    let published = prometheus::IntCounter::new(
        "agenda_relay_published_total",
        "Notifications published to Redis and acknowledged by its replica.",
    )
    .expect("static metric options are valid");
    let lag = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(
            "agenda_relay_lag_seconds",
            "From a notification's arrival on the watch to the Redis replica's acknowledgement.",
        )
        .buckets(agenda_common::metrics::LATENCY_BUCKETS.to_vec()),
    )
    .expect("static metric options are valid");
    let r = prometheus::default_registry();
    let _ = r.register(Box::new(active.clone()));
    let _ = r.register(Box::new(published.clone()));
    let _ = r.register(Box::new(lag.clone()));
    Metrics {
        active,
        published,
        lag,
    }
});

/// Runs as a relay candidate until `stop`.
pub async fn run(db: DbClient, bus: Arc<Bus>, instance: String, stop: CancellationToken) {
    let metrics = &*METRICS;
    while !stop.is_cancelled() {
        let Some(lead) =
            election::campaign(&db, ELECTION_KEY, &instance, Duration::from_secs(3), &stop).await
        else {
            return;
        };
        tracing::info!(%instance, "acting as the notification relay");
        metrics.active.set(1);
        let result = tokio::select! {
            () = lead.lost.cancelled() => Ok(()),
            r = relay(&db, &bus, &lead) => r,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "relay interrupted; resuming from the cursor");
        }
        metrics.active.set(0);
        lead.resign().await;
        if !shutdown::pause(&stop, Duration::from_millis(200)).await {
            return;
        }
    }
}

async fn cursor(db: &DbClient) -> Result<i64, Error> {
    Ok(match db.get(CURSOR_KEY).await? {
        Some(kv) => String::from_utf8_lossy(&kv.value).parse().unwrap_or(0),
        None => 0,
    })
}

async fn relay(db: &DbClient, bus: &Bus, lead: &election::Leadership) -> Result<(), Error> {
    let mut from = cursor(db).await?;
    tracing::info!(cursor = from, "relaying notifications");
    loop {
        let stream = match db
            .watch(WatchRequest {
                key: keys::NOTIFICATIONS.as_bytes().to_vec(),
                prefix: true,
                start_revision: from + 1,
                ..Default::default()
            })
            .await
        {
            Ok(s) => s,
            Err(Error::Compacted(m)) => {
                from = catch_up(db, bus, lead, from, &m).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut stream = Box::pin(stream.into_stream());
        while let Some(first) = stream.next().await {
            let arrived = std::time::Instant::now();
            // Take every response already waiting, so one XADD pipeline,
            // one WAIT and one cursor write cover them all: under load the
            // relay then keeps up instead of paying those per transaction.
            let mut responses = vec![first];
            while responses.len() < MAX_BATCH_RESPONSES {
                match stream.next().now_or_never() {
                    Some(Some(r)) => responses.push(r),
                    _ => break,
                }
            }
            let mut last = from;
            let mut batch = Vec::new();
            let mut compacted = None;
            let mut lost_node = false;
            for msg in responses {
                let resp = match msg {
                    Ok(r) => r,
                    Err(Error::Compacted(m)) => {
                        compacted = Some(m);
                        break;
                    }
                    // Its node died or was cut off: publish what came, then
                    // watch again from there on another node.
                    Err(e) if e.is_retryable() => {
                        tracing::info!(error = %e, "notification watch lost its node; watching again");
                        lost_node = true;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                for ev in resp.events {
                    let Some(kv) = ev.kv else { continue };
                    last = last.max(kv.mod_revision);
                    // New notifications only; marking one read rewrites it.
                    if ev.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision {
                        if let Some(e) = entry(&kv.key, kv.value) {
                            batch.push(e);
                        }
                    }
                }
            }
            if last > from {
                publish(bus, &batch).await?;
                if !batch.is_empty() {
                    METRICS.published.inc_by(batch.len() as u64);
                    METRICS.lag.observe(arrived.elapsed().as_secs_f64());
                }
                advance(db, lead, last).await?;
                from = last;
            }
            if let Some(m) = compacted {
                from = catch_up(db, bus, lead, from, &m).await?;
                break;
            }
            if lost_node {
                break;
            }
        }
    }
}

/// Notifications read per page by [`catch_up`]: one read of everyone's
/// notifications at once passed agenda-db's 64 MiB answer limit at about
/// 170,000 of them, failed every time, and the relay stopped for good
/// (GROWTH.md Found 4).
const CATCH_UP_PAGE: i64 = 100;

/// The history was compacted past the cursor: republish every stored
/// notification created after it (consumers drop the repeats), reading
/// them page by page and publishing each page as it comes.
async fn catch_up(
    db: &DbClient,
    bus: &Bus,
    lead: &election::Leadership,
    from: i64,
    why: &str,
) -> Result<i64, Error> {
    tracing::warn!(
        cursor = from,
        why,
        "history compacted past the cursor; republishing from a scan"
    );
    let end = keys::prefix_end(keys::NOTIFICATIONS).into_bytes();
    let mut start = keys::NOTIFICATIONS.as_bytes().to_vec();
    // Whatever is created after the first page's revision the watch
    // delivers from there; pages read later may repeat some of it.
    let mut now = None;
    let mut published = 0usize;
    loop {
        let resp = db
            .range(RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: CATCH_UP_PAGE,
                min_mod_revision: from,
                ..Default::default()
            })
            .await?;
        now.get_or_insert(resp.header.map_or(from, |h| h.revision));
        let Some(last) = resp.kvs.last() else { break };
        start = [last.key.as_slice(), &[0]].concat();
        let batch: Vec<Entry> = resp
            .kvs
            .into_iter()
            .filter(|kv| kv.create_revision > from)
            .filter_map(|kv| entry(&kv.key, kv.value))
            .collect();
        publish(bus, &batch).await?;
        published += batch.len();
        if !resp.more {
            break;
        }
    }
    let now = now.unwrap_or(from);
    advance(db, lead, now).await?;
    tracing::info!(cursor = now, published, "caught up");
    Ok(now)
}

fn entry(key: &[u8], data: Vec<u8>) -> Option<Entry> {
    let (user, id) = keys::notification_parts(key)?;
    Some(Entry {
        id: id.to_string(),
        user: user.to_string(),
        data,
    })
}

/// Appends `batch` to the stream on the current primary and returns once
/// the replica acknowledged it; on any failure starts over on whatever is
/// primary then.
async fn publish(bus: &Bus, batch: &[Entry]) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match try_publish(bus, batch).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, entries = batch.len(), "publishing to Redis failed; retrying");
                bus.reset();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn try_publish(bus: &Bus, batch: &[Entry]) -> Result<(), Error> {
    // The shared connection to the current primary (made again after an
    // error or a failover), not a new one per batch. Its response timeout
    // (5 s) covers the WAIT below.
    bus.wait_primary().await;
    let (primary, mut conn) = bus.connection().await?;
    // In pipelines of a bounded size: after a stall the backlog comes as
    // hundreds of entries, and one pipeline of hundreds of XADDs failed
    // every time ("broken pipe" on a fresh connection to a healthy
    // primary, seen in the chaos runs), which stopped the relay for good.
    for chunk in batch.chunks(PIPELINE_MAX) {
        publish_chunk(&mut conn, chunk).await?;
    }
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(WAIT_MS)
        .query_async(&mut conn)
        .await
        .map_err(agenda_common::bus::redis_error)?;
    if acked < 1 {
        // With no replica attached at all (its machine is down or cut off
        // and the primary timed the link out) there is nothing to wait
        // for: waiting would stop every live notification for as long as
        // the machine is away. The entries are on the primary, and every
        // notification is kept in agenda-db, where a reconnecting client
        // replays it from; what a second failure could lose is only a
        // live push.
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(agenda_common::bus::redis_error)?;
        if info.lines().any(|l| l.trim() == "connected_slaves:0") {
            tracing::warn!(primary = %primary.addr, entries = batch.len(),
                "no Redis replica attached: published without replication");
            return Ok(());
        }
        return Err(Error::Unavailable(format!(
            "the replica did not acknowledge within {WAIT_MS} ms (primary {})",
            primary.addr
        )));
    }
    Ok(())
}

/// Most XADDs in one pipeline.
const PIPELINE_MAX: usize = 32;

async fn publish_chunk(
    conn: &mut redis::aio::MultiplexedConnection,
    chunk: &[Entry],
) -> Result<(), Error> {
    let mut pipe = redis::pipe();
    for e in chunk {
        pipe.cmd("XADD")
            .arg(NOTIFICATIONS_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("id")
            .arg(&e.id)
            .arg("user")
            .arg(&e.user)
            .arg("data")
            .arg(&e.data)
            .ignore();
    }
    pipe.query_async::<()>(conn)
        .await
        .map_err(agenda_common::bus::redis_error)
}

async fn advance(db: &DbClient, lead: &election::Leadership, to: i64) -> Result<(), Error> {
    let resp = db
        .txn(TxnRequest {
            compare: vec![lead.guard()],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: CURSOR_KEY.as_bytes().to_vec(),
                    value: to.to_string().into_bytes(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        })
        .await?;
    if !resp.succeeded {
        lead.lost.cancel();
        return Err(Error::FailedPrecondition(
            "no longer the relay; the cursor stays with the new one".into(),
        ));
    }
    Ok(())
}
