//! Client of agenda-db used by every service.
//!
//! Any node can serve any request, so the client keeps one lazily connected
//! channel per node and sticks to the one that last answered. When a call
//! fails with "unavailable" (node down, no leader, timeout) it moves to the
//! next node and tries again until the overall deadline. Every mutating
//! call carries one request id for all its attempts, so a retry after a lost
//! reply returns the first result instead of applying twice.
//!
//! Reads and writes go to the leader when the client knows it (learnt in
//! the background from cluster status): a follower would only pass a write
//! on and answer after applying it itself, two raft round trips later, and
//! a follower's linearizable read waits for a ReadIndex round through the
//! leader (follower -> leader -> quorum -> leader -> follower), where the
//! leader's own is half of that. Under load that made every read 3-4 raft
//! loop turns of other nodes slower (bench-api p95 45 -> 17 ms). Any node
//! still serves anything, so when the leader is unknown or fails a call
//! goes to the sticky node and on around the ring.
//!
//! A node that lost power answers nothing: its calls only time out. So
//! the first attempts are short (1 s; later ones longer, for calls that
//! are slow rather than lost), and a node that just failed is skipped by
//! every call for a moment (`SUSPECT_FOR`) instead of each call paying
//! the same timeout on it. Watch streams carry progress responses (see
//! `agenda_db::service::WATCH_PROGRESS_EVERY`); [`WatchStream`] ends with
//! an error after `WATCH_SILENCE` without one, so a watcher never follows
//! a dead or cut-off node for long.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_proto::db::db_client::DbClient as Grpc;
use agenda_proto::db::*;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::metrics::DbCall;
use crate::telemetry::PassRequestId;

/// A node's gRPC client; every call carries the task's request id.
type Node = Grpc<InterceptedService<Channel, PassRequestId>>;

/// Default overall deadline of one call (all attempts).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the span of the keys under `prefix` ends: the prefix with its
/// last byte raised by one (prefixes are ASCII paths ending in `/`, so
/// `/` becomes `0`).
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    String::from_utf8(end).expect("an ASCII key prefix")
}
/// Deadline of the n-th attempt of one call against one node (the last
/// one repeats): a dead node is given up on quickly, a slow call still
/// gets its time on later attempts.
const ATTEMPT_TIMEOUTS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(3),
];
/// How long a node that failed an attempt is skipped by other calls
/// (unless every node is).
const SUSPECT_FOR: Duration = Duration::from_secs(2);
/// A lease keep-alive with no answer after this long goes to every node
/// at once (same request id): leadership and the VIP are given up when a
/// renewal is late, and a node cut off from the leader only says so after
/// an election timeout.
const HEDGE_AFTER: Duration = Duration::from_millis(200);
/// A watch stream silent for this long is given up (the server sends
/// progress every 250 ms while it knows a leader).
pub const WATCH_SILENCE: Duration = Duration::from_millis(1500);
/// Pause before trying the next node.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// Where linearizable reads go. Every node serves them (a follower asks
/// the leader for its commit index, a ReadIndex round, and answers once
/// it has applied that far), so spreading them shares the read load
/// over the replicas; writes always go to the leader first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadRouting {
    /// To the node with the least expected wait: its measured latency
    /// (a moving average) times the calls it has in flight from here.
    #[default]
    Spread,
    /// To the leader, like writes.
    Leader,
}

/// One node's load as this client sees it (for [`ReadRouting::Spread`]).
#[derive(Default)]
struct Load {
    /// Moving average of its read latency, microseconds (0: unknown).
    latency_us: AtomicU64,
    /// Calls from this client in flight on it.
    in_flight: AtomicU64,
}

impl Load {
    fn observe(&self, took: Duration) {
        let sample = (took.as_micros() as u64).max(1);
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    /// Expected wait: an unknown node looks fast, so it gets tried.
    fn score(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed).max(50)
            * (self.in_flight.load(Ordering::Relaxed) + 1)
    }
}

/// Counts a call in flight on a node until dropped (also when the call
/// is cancelled).
struct InFlight<'a>(&'a Load);

impl<'a> InFlight<'a> {
    fn new(load: &'a Load) -> Self {
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(load)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One read in this many goes to a node picked at random, so a node
/// whose average is stale (one slow answer long ago) is measured again.
const EXPLORE_EVERY: u64 = 32;

/// A cheap-to-clone handle to the cluster.
#[derive(Clone)]
pub struct DbClient {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<(String, Node)>,
    current: AtomicUsize,
    timeout: Duration,
    /// Index in `nodes` of the believed leader, [`UNKNOWN`] if none.
    leader: AtomicUsize,
    /// A leader probe is running.
    probing: AtomicBool,
    /// When the last probe started (ms since `epoch`).
    last_probe_ms: AtomicU64,
    /// Per node: skip it until then (ms since `epoch`; 0: not suspect).
    /// Shared with [`DbClient::with_timeout`] copies.
    suspect_until_ms: Arc<Vec<AtomicU64>>,
    /// Every data call hedged (see [`DbClient::hedged`]).
    hedge: bool,
    /// Per node: its member id once learnt (0: not yet), from the header
    /// of its status answers. Maps the leader's id to the endpoint to
    /// call: member addresses are raft addresses, which differ from the
    /// client endpoints when nodes take raft traffic on a port of its own.
    ids: Arc<Vec<AtomicU64>>,
    /// Where reads go.
    reads: ReadRouting,
    /// Per node: its load as seen from here; shared with derived copies.
    load: Arc<Vec<Load>>,
    /// Reads routed so far (for [`EXPLORE_EVERY`]).
    routed: Arc<AtomicU64>,
    epoch: Instant,
}

/// No known leader.
const UNKNOWN: usize = usize::MAX;
/// Least time between two leader probes.
const PROBE_EVERY: Duration = Duration::from_millis(500);

impl Inner {
    fn new(nodes: Vec<(String, Node)>, current: usize, timeout: Duration) -> Self {
        Inner {
            suspect_until_ms: Arc::new(nodes.iter().map(|_| AtomicU64::new(0)).collect()),
            ids: Arc::new(nodes.iter().map(|_| AtomicU64::new(0)).collect()),
            hedge: false,
            reads: ReadRouting::default(),
            load: Arc::new(nodes.iter().map(|_| Load::default()).collect()),
            routed: Arc::new(AtomicU64::new(0)),
            nodes,
            current: AtomicUsize::new(current),
            timeout,
            leader: AtomicUsize::new(UNKNOWN),
            probing: AtomicBool::new(false),
            last_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The node a read should go to ([`ReadRouting::Spread`]): the least
    /// expected wait among those not suspect, now and then one at random.
    fn pick_reader(&self) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.is_suspect(i))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        if self.routed.fetch_add(1, Ordering::Relaxed) % EXPLORE_EVERY == EXPLORE_EVERY - 1 {
            return Some(candidates[rand::random_range(0..candidates.len())]);
        }
        candidates.into_iter().min_by_key(|&i| self.load[i].score())
    }

    /// Node `i`'s view of the cluster (within a second), learning its
    /// member id on the way.
    async fn status_of(&self, i: usize) -> Option<ClusterStatusResponse> {
        let mut grpc = self.nodes[i].1.clone();
        let status = tokio::time::timeout(
            Duration::from_secs(1),
            grpc.cluster_status(ClusterStatusRequest {}),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        if let Some(h) = &status.header {
            self.ids[i].store(h.member_id, Ordering::Relaxed);
        }
        Some(status)
    }

    /// The endpoint of the leader `status` names: by learnt member id, or
    /// by address when members are listed at their client endpoints.
    fn index_of_member(&self, status: &ClusterStatusResponse) -> Option<usize> {
        let id = status.leader_id;
        if id == 0 {
            return None;
        }
        if let Some(i) = self
            .ids
            .iter()
            .position(|x| x.load(Ordering::Relaxed) == id)
        {
            return Some(i);
        }
        let addr = status
            .members
            .iter()
            .find(|m| m.id == id)
            .map(|m| host_port(&m.addr).to_string())?;
        self.nodes.iter().position(|(e, _)| host_port(e) == addr)
    }

    /// Node `i` failed an attempt: other calls skip it for a while.
    fn suspect(&self, i: usize) {
        self.suspect_until_ms[i].store(
            self.now_ms() + SUSPECT_FOR.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    /// Node `i` did not answer at all: its whole host is suspect. A
    /// machine that lost power or its link takes every node on it along,
    /// and each of them would otherwise cost every call its own timeout.
    fn silent(&self, i: usize) {
        let host = |a: &str| {
            let hp = host_port(a);
            hp.rsplit_once(':').map_or(hp, |(h, _)| h).to_string()
        };
        let dead = host(&self.nodes[i].0);
        for (j, (addr, _)) in self.nodes.iter().enumerate() {
            if host(addr) == dead {
                self.suspect(j);
            }
        }
    }

    fn is_suspect(&self, i: usize) -> bool {
        self.suspect_until_ms[i].load(Ordering::Relaxed) > self.now_ms()
    }

    /// Node `i` answered.
    fn trusted(&self, i: usize) {
        if self.suspect_until_ms[i].load(Ordering::Relaxed) != 0 {
            self.suspect_until_ms[i].store(0, Ordering::Relaxed);
        }
    }

    /// The counter value of the next node to try at or after `cur`:
    /// suspects are stepped over unless every node is one.
    fn skip_suspects(&self, cur: usize) -> usize {
        let n = self.nodes.len();
        (0..n)
            .map(|k| cur.wrapping_add(k))
            .find(|c| !self.is_suspect(c % n))
            .unwrap_or(cur)
    }
}

/// A node refused the call over its bound ([`crate::admission`]). Every
/// node forwards to the same leader, so trying the next one at once would
/// only add to the load: the refusal goes back to the caller, which
/// passes it on (the gateway answers 503 with `Retry-After`). The node is
/// alive, so it is not marked suspect.
fn overloaded(status: tonic::Status) -> Error {
    Error::Unavailable(format!("agenda-db is overloaded: {}", status.message()))
}

/// Runs one agenda-db call, recording its time and whether it failed.
async fn timed<T>(kind: DbCall, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let result = call.await;
    crate::metrics::db_call(kind, started.elapsed(), result.is_ok());
    result
}

/// A failed attempt's error when another node may still answer; the
/// error to give the caller at once otherwise (an overloaded node, or a
/// refusal any node would repeat).
fn retryable(status: tonic::Status) -> Result<Error> {
    if crate::admission::is_overloaded(&status) {
        return Err(overloaded(status));
    }
    let err = Error::from(status);
    if err.is_retryable() {
        Ok(err)
    } else {
        Err(err)
    }
}

fn attempt_timeout(attempt: usize, left: Duration) -> Duration {
    ATTEMPT_TIMEOUTS[attempt.min(ATTEMPT_TIMEOUTS.len() - 1)].min(left)
}

/// `host:port` of an endpoint or member address, whatever its scheme.
fn host_port(addr: &str) -> &str {
    let a = addr.trim();
    let a = a.split_once("://").map_or(a, |(_, rest)| rest);
    a.trim_end_matches('/')
}

impl DbClient {
    /// Creates a client for the given node addresses (`host:port` or URLs).
    /// Connections are made on first use.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Self> {
        Self::with_tls(endpoints, None)
    }

    /// Like [`Self::new`], over mutual TLS when `tls` is given (see
    /// [`crate::tls::Identity::client_config`]).
    pub fn with_tls<S: AsRef<str>>(
        endpoints: &[S],
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Config("no agenda-db endpoints given".into()));
        }
        let mut nodes = Vec::new();
        for e in endpoints {
            let e = e.as_ref().trim();
            let channel = match &tls {
                Some(config) => crate::net::tls_channel(e, config.clone())?,
                None => crate::net::endpoint(e)?.connect_lazy(),
            };
            let grpc = Grpc::with_interceptor(channel, PassRequestId)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            nodes.push((e.to_string(), grpc));
        }
        let start = rand::random_range(0..nodes.len());
        Ok(DbClient {
            inner: Arc::new(Inner::new(nodes, start, DEFAULT_TIMEOUT)),
        })
    }

    /// Same nodes, another overall deadline per call.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        self.derive(timeout, self.inner.hedge)
    }

    /// The same nodes with reads routed as `reads` says.
    pub fn with_reads(&self, reads: ReadRouting) -> Self {
        let mut copy = self.derive(self.inner.timeout, self.inner.hedge);
        if let Some(inner) = Arc::get_mut(&mut copy.inner) {
            inner.reads = reads;
        }
        copy
    }

    /// The same client with every read, write and lease call hedged like
    /// keep-alives (each carries its request id, so copies apply once):
    /// for a caller whose every call races a deadline (agenda-vip's claim
    /// runs while a dead machine's nodes still look alive), at the price
    /// of copies to every node for calls slower than `HEDGE_AFTER`.
    pub fn hedged(&self) -> Self {
        self.derive(self.inner.timeout, true)
    }

    /// A copy over the same channels that shares what was learnt about
    /// the nodes (suspects, the leader, the sticky node).
    fn derive(&self, timeout: Duration, hedge: bool) -> Self {
        let mut inner = Inner::new(
            self.inner.nodes.clone(),
            self.inner.current.load(Ordering::Relaxed),
            timeout,
        );
        inner.epoch = self.inner.epoch;
        inner.suspect_until_ms = self.inner.suspect_until_ms.clone();
        inner.ids = self.inner.ids.clone();
        inner.hedge = hedge;
        inner.reads = self.inner.reads;
        inner.load = self.inner.load.clone();
        inner.routed = self.inner.routed.clone();
        inner
            .leader
            .store(self.inner.leader.load(Ordering::Relaxed), Ordering::Relaxed);
        DbClient {
            inner: Arc::new(inner),
        }
    }

    /// A read, write or lease call: hedged when the client is; timed in
    /// `agenda_db_client_call_duration_seconds`.
    async fn call_data<T, F, Fut>(&self, kind: DbCall, f: F) -> Result<T>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        timed(kind, async {
            if self.inner.hedge {
                self.call_hedged(f).await
            } else {
                self.call_leader_first(f).await
            }
        })
        .await
    }

    /// A linearizable read: routed by [`ReadRouting`] (hedged when the
    /// client is); timed like every data call.
    async fn call_read<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        if self.inner.hedge || self.inner.reads == ReadRouting::Leader {
            return self.call_data(DbCall::Read, f).await;
        }
        timed(DbCall::Read, async {
            let deadline = Instant::now() + self.inner.timeout;
            let Some(i) = self.inner.pick_reader() else {
                return self.call_until(f, deadline, 0).await;
            };
            let load = &self.inner.load[i];
            let started = Instant::now();
            let attempt = {
                let _counted = InFlight::new(load);
                tokio::time::timeout(
                    attempt_timeout(0, self.inner.timeout),
                    f(self.inner.nodes[i].1.clone()),
                )
                .await
            };
            match attempt {
                Ok(Ok(resp)) => {
                    load.observe(started.elapsed());
                    self.inner.trusted(i);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => {
                    retryable(status)?;
                    self.inner.suspect(i);
                }
                Err(_) => self.inner.silent(i),
            }
            // Its node failed: the usual way round the others (the
            // read has no side effect to repeat).
            self.call_until(f, deadline, 1).await
        })
        .await
    }

    /// Index of the believed leader; starts a background probe when it is
    /// unknown (at most every `PROBE_EVERY`).
    fn leader_index(&self) -> Option<usize> {
        let leader = self.inner.leader.load(Ordering::Relaxed);
        if leader != UNKNOWN && !self.inner.is_suspect(leader) {
            return Some(leader);
        }
        let now = self.inner.now_ms();
        let last = self.inner.last_probe_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= PROBE_EVERY.as_millis() as u64
            && !self.inner.probing.swap(true, Ordering::AcqRel)
        {
            self.inner.last_probe_ms.store(now, Ordering::Relaxed);
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let cur = inner.current.load(Ordering::Relaxed);
                let i = inner.skip_suspects(cur) % inner.nodes.len();
                if let Some(status) = inner.status_of(i).await {
                    let mut found = inner.index_of_member(&status);
                    if found.is_none() && status.leader_id != 0 {
                        // Learn the ids of the nodes not asked yet.
                        let unknown: Vec<usize> = (0..inner.nodes.len())
                            .filter(|j| inner.ids[*j].load(Ordering::Relaxed) == 0)
                            .collect();
                        futures::future::join_all(unknown.into_iter().map(|j| inner.status_of(j)))
                            .await;
                        found = inner.index_of_member(&status);
                    }
                    if let Some(idx) = found {
                        inner.leader.store(idx, Ordering::Relaxed);
                    }
                }
                inner.probing.store(false, Ordering::Release);
            });
        }
        None
    }

    /// A fresh request id for one logical mutation. Version 7 UUIDs start
    /// with a timestamp, so the store's dedup index grows at its right edge
    /// (one hot page per commit instead of one random page per write).
    pub fn request_id() -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }

    /// Runs a call first on the believed leader, then like [`Self::call`].
    async fn call_leader_first<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.inner.timeout;
        let mut attempts = 0;
        if let Some(i) = self.leader_index() {
            let attempt = attempt_timeout(0, self.inner.timeout);
            attempts = 1;
            match tokio::time::timeout(attempt, f(self.inner.nodes[i].1.clone())).await {
                Ok(Ok(resp)) => {
                    self.inner.trusted(i);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => {
                    retryable(status)?;
                }
                Err(_) => self.inner.silent(i),
            }
            // The leader moved or died: forget it and go the normal way
            // (the same request id keeps the retry exactly-once).
            self.inner.suspect(i);
            let _ = self.inner.leader.compare_exchange(
                i,
                UNKNOWN,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        self.call_until(f, deadline, attempts).await
    }

    /// Runs `f` against nodes until one answers or the deadline passes.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_until(f, Instant::now() + self.inner.timeout, 0)
            .await
    }

    /// Runs `f` against nodes until one answers or the deadline passes;
    /// `attempts` were already made (they set the next attempt's timeout).
    async fn call_until<T, F, Fut>(&self, f: F, deadline: Instant, attempts: usize) -> Result<T>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.inner.nodes.len();
        let mut last_err = Error::Unavailable("the deadline passed before any attempt".into());
        let mut attempts = attempts;
        loop {
            let seen = self.inner.current.load(Ordering::Relaxed);
            let cur = self.inner.skip_suspects(seen);
            if cur != seen {
                let _ = self.inner.current.compare_exchange(
                    seen,
                    cur,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            let (addr, grpc) = &self.inner.nodes[cur % n];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last_err);
            }
            let attempt = attempt_timeout(attempts, left);
            attempts += 1;
            match tokio::time::timeout(attempt, f(grpc.clone())).await {
                Ok(Ok(resp)) => {
                    self.inner.trusted(cur % n);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => {
                    let err = retryable(status)?;
                    tracing::debug!(node = %addr, error = %err, "agenda-db call failed; trying the next node");
                    last_err = err;
                }
                Err(_) => {
                    self.inner.silent(cur % n);
                    last_err =
                        Error::Unavailable(format!("{addr} did not answer within {attempt:?}"));
                }
            }
            self.inner.suspect(cur % n);
            // Move on only if no concurrent call already did.
            // Compare with the raw counter, not the index: it keeps growing,
            // and comparing the index stopped the rotation after one lap.
            let _ = self.inner.current.compare_exchange(
                cur,
                cur.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            tokio::time::sleep(
                RETRY_BACKOFF.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }

    /// Reads keys (linearizable unless `req.stale`).
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.call_read(|mut c| {
            let req = req.clone();
            async move { c.range(req).await }
        })
        .await
    }

    /// Reads one key.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let resp = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Reads every key under a prefix.
    pub async fn get_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<RangeResponse> {
        self.range(RangeRequest {
            key: prefix.into(),
            prefix: true,
            ..Default::default()
        })
        .await
    }

    /// Writes a key (exactly once, whatever the retries).
    pub async fn put(&self, mut req: PutRequest) -> Result<PutResponse> {
        fill_id(&mut req.request_id);
        self.call_data(DbCall::Write, |mut c| {
            let req = req.clone();
            async move { c.put(req).await }
        })
        .await
    }

    /// Deletes a key or prefix.
    pub async fn delete(&self, mut req: DeleteRequest) -> Result<DeleteResponse> {
        fill_id(&mut req.request_id);
        self.call_data(DbCall::Write, |mut c| {
            let req = req.clone();
            async move { c.delete(req).await }
        })
        .await
    }

    /// Runs a transaction. One that only reads (every operation a range)
    /// is served like a read, without a log entry or a request id.
    pub async fn txn(&self, mut req: TxnRequest) -> Result<TxnResponse> {
        if req.is_read_only() {
            return self
                .call_read(|mut c| {
                    let req = req.clone();
                    async move { c.txn(req).await }
                })
                .await;
        }
        fill_id(&mut req.request_id);
        self.call_data(DbCall::Write, |mut c| {
            let req = req.clone();
            async move { c.txn(req).await }
        })
        .await
    }

    /// Grants a lease of `ttl` (at least 100 ms; kept to the millisecond).
    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrantResponse> {
        let req = LeaseGrantRequest {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            request_id: Self::request_id(),
            ..Default::default()
        };
        self.call_data(DbCall::Lease, |mut c| {
            let req = req.clone();
            async move { c.lease_grant(req).await }
        })
        .await
    }

    /// Renews a lease; hedged (see `HEDGE_AFTER`), since a late renewal
    /// costs a leadership or the VIP.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse> {
        let req = LeaseKeepAliveRequest {
            id,
            request_id: Self::request_id(),
        };
        timed(
            DbCall::Lease,
            self.call_hedged(|mut c| {
                let req = req.clone();
                async move { c.lease_keep_alive(req).await }
            }),
        )
        .await
    }

    /// Like [`Self::call_leader_first`], but when no answer came within
    /// `HEDGE_AFTER` the call also goes to every node at once; the first
    /// success wins. Only for calls whose request id makes copies apply
    /// once.
    async fn call_hedged<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        use futures::stream::{FuturesUnordered, StreamExt};
        let deadline = Instant::now() + self.inner.timeout;
        let first = self.call_leader_first(&f);
        tokio::pin!(first);
        tokio::select! {
            r = &mut first => return r,
            () = tokio::time::sleep(HEDGE_AFTER.min(self.inner.timeout)) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut copies: FuturesUnordered<_> = self
            .inner
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (_, grpc))| {
                let call = f(grpc.clone());
                async move { (i, tokio::time::timeout(left, call).await) }
            })
            .collect();
        let mut first_err = None;
        loop {
            tokio::select! {
                r = &mut first, if first_err.is_none() => match r {
                    Ok(v) => return Ok(v),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => first_err = Some(e),
                },
                copy = copies.next() => match copy {
                    Some((i, Ok(Ok(resp)))) => {
                        self.inner.trusted(i);
                        return Ok(resp.into_inner());
                    }
                    Some((i, Ok(Err(status)))) => {
                        let err = Error::from(status);
                        if !err.is_retryable() {
                            // An answer (say, the lease is gone), not a failure.
                            return Err(err);
                        }
                        self.inner.suspect(i);
                    }
                    Some((i, Err(_))) => self.inner.silent(i),
                    None => {
                        return match first_err {
                            Some(e) => Err(e),
                            None => first.await,
                        }
                    }
                },
            }
        }
    }

    /// Revokes a lease (its keys vanish).
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse> {
        let req = LeaseRevokeRequest {
            id,
            request_id: Self::request_id(),
        };
        self.call_data(DbCall::Lease, |mut c| {
            let req = req.clone();
            async move { c.lease_revoke(req).await }
        })
        .await
    }

    /// Opens a watch stream on whichever node answers. The stream ends
    /// with an error when its node falls silent (see [`WatchStream`]).
    pub async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        let inner = timed(
            DbCall::Watch,
            self.call(|mut c| {
                let req = req.clone();
                async move { c.watch(req).await }
            }),
        )
        .await?;
        // The node that answered: calls move `current` only on failure.
        let node = self.inner.current.load(Ordering::Relaxed) % self.inner.nodes.len();
        Ok(WatchStream {
            inner: Some(inner),
            silence: WATCH_SILENCE,
            client: self.inner.clone(),
            node,
        })
    }

    /// A backup of the whole state from whichever node answers (operators
    /// only): its header and body, as the node sent them. `progress` is
    /// told the bytes received so far and the total.
    pub async fn snapshot(
        &self,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(SnapshotHeader, Vec<u8>)> {
        let mut stream = self
            .call(|mut c| async move { c.snapshot(SnapshotRequest {}).await })
            .await?;
        let mut header = None;
        let mut body = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(Error::from)? {
            if let Some(h) = chunk.header {
                body.reserve(h.size as usize);
                header = Some(h);
            }
            body.extend_from_slice(&chunk.data);
            progress(body.len() as u64, header.as_ref().map_or(0, |h| h.size));
        }
        let header =
            header.ok_or_else(|| Error::Unavailable("the snapshot stream had no header".into()))?;
        Ok((header, body))
    }

    /// Drops the history up to `revision` (0: all but the newest;
    /// operators only); answers the compact revision.
    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse> {
        let req = CompactionRequest {
            revision,
            request_id: Self::request_id(),
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.compact(req).await }
        })
        .await
    }

    /// Hands leadership to member `target` (operators only); answers once
    /// it leads.
    pub async fn move_leader(&self, target: u64) -> Result<MoveLeaderResponse> {
        self.call(
            |mut c| async move { c.move_leader(MoveLeaderRequest { target_id: target }).await },
        )
        .await
    }

    /// Status of the cluster as one node sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse> {
        self.call(|mut c| async move { c.cluster_status(ClusterStatusRequest {}).await })
            .await
    }

    /// Adds a member.
    pub async fn member_add(&self, id: u64, addr: &str) -> Result<MemberChangeResponse> {
        let req = MemberAddRequest {
            id,
            addr: addr.to_string(),
            request_id: Self::request_id(),
        };
        self.call_leader_first(|mut c| {
            let req = req.clone();
            async move { c.member_add(req).await }
        })
        .await
    }

    /// Removes a member.
    pub async fn member_remove(&self, id: u64) -> Result<MemberChangeResponse> {
        let req = MemberRemoveRequest {
            id,
            request_id: Self::request_id(),
        };
        self.call_leader_first(|mut c| {
            let req = req.clone();
            async move { c.member_remove(req).await }
        })
        .await
    }
}

fn fill_id(id: &mut String) {
    if id.is_empty() {
        *id = DbClient::request_id();
    }
}

/// A watch stream from [`DbClient::watch`]: the node's responses with
/// events, its progress responses skipped. A node that sends nothing for
/// [`WATCH_SILENCE`] (dead, cut off, or without a raft leader) ends the
/// stream with [`Error::Unavailable`]; the caller watches again from the
/// revision it reached, on whichever node answers then.
pub struct WatchStream {
    inner: Option<tonic::Streaming<WatchResponse>>,
    silence: Duration,
    /// To mark the node when it falls silent, so the next watch (and
    /// every other call) goes elsewhere instead of timing out on it.
    client: Arc<Inner>,
    node: usize,
}

impl WatchStream {
    /// The next response with events; `None` when the server ended the
    /// stream. After an error the stream is over.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Ok(None);
            };
            let msg = match tokio::time::timeout(self.silence, inner.message()).await {
                Ok(Ok(Some(msg))) => msg,
                Ok(Ok(None)) => {
                    self.inner = None;
                    return Ok(None);
                }
                Ok(Err(status)) => {
                    self.inner = None;
                    let err = Error::from(status);
                    if err.is_retryable() {
                        self.client.suspect(self.node);
                    }
                    return Err(err);
                }
                Err(_) => {
                    self.inner = None;
                    self.client.silent(self.node);
                    return Err(Error::Unavailable(format!(
                        "watch stream silent for {:?}: its node is down, cut off or without a leader",
                        self.silence
                    )));
                }
            };
            if !msg.events.is_empty() {
                return Ok(Some(msg));
            }
        }
    }

    /// The same as a [`futures::Stream`] of results.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<WatchResponse>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            match s.message().await {
                Ok(Some(msg)) => Some((Ok(msg), s)),
                Ok(None) => None,
                Err(e) => Some((Err(e), s)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moving_average_follows_and_in_flight_calls_weigh() {
        let l = Load::default();
        assert_eq!(l.score(), 50, "unknown looks fast");
        l.observe(Duration::from_micros(800));
        assert_eq!(l.latency_us.load(Ordering::Relaxed), 800);
        l.observe(Duration::from_micros(1600));
        assert_eq!(l.latency_us.load(Ordering::Relaxed), 900);
        {
            let _a = InFlight::new(&l);
            let _b = InFlight::new(&l);
            assert_eq!(l.score(), 900 * 3);
        }
        assert_eq!(l.score(), 900);
    }

    #[tokio::test]
    async fn reads_go_to_the_least_expected_wait_never_to_a_suspect() {
        let c = DbClient::new(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]).unwrap();
        let inner = &c.inner;
        inner.load[0].observe(Duration::from_millis(5));
        inner.load[1].observe(Duration::from_millis(1));
        inner.load[2].observe(Duration::from_millis(2));
        let picks: Vec<usize> = (0..EXPLORE_EVERY - 1)
            .filter_map(|_| inner.pick_reader())
            .collect();
        assert!(picks.iter().all(|&i| i == 1), "{picks:?}");
        // Busy now: three calls in flight make node 1 worse than node 2.
        let _busy: Vec<_> = (0..3).map(|_| InFlight::new(&inner.load[1])).collect();
        inner.routed.store(0, Ordering::Relaxed);
        assert_eq!(inner.pick_reader(), Some(2));
        inner.suspect(2);
        inner.routed.store(0, Ordering::Relaxed);
        assert_eq!(inner.pick_reader(), Some(1));
        // Every so often one at random, among those not suspect.
        for _ in 0..(EXPLORE_EVERY * 4) {
            assert_ne!(inner.pick_reader(), Some(2));
        }
        assert_eq!(
            c.with_reads(ReadRouting::Leader).inner.reads,
            ReadRouting::Leader
        );
    }
}
