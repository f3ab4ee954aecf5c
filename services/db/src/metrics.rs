//! Prometheus metrics of one node (its own registry, so several nodes can
//! live in one test process).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Every metric the node exports on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    /// Registry rendered by the HTTP endpoint.
    pub registry: Registry,
    /// Current raft term.
    pub term: IntGauge,
    /// 1 while this node leads.
    pub is_leader: IntGauge,
    /// Leader changes seen.
    pub leader_changes: IntCounter,
    /// Proposals handed to raft.
    pub proposals: IntCounter,
    /// Proposals raft refused (no leader).
    pub proposals_failed: IntCounter,
    /// Linearizable reads (and read-only txns) asked of this node.
    pub linearizable_reads: IntCounter,
    /// Linearizable reads (this leader's or a follower's) answered under
    /// the leader's read lease, with no heartbeat round.
    pub lease_reads: IntCounter,
    /// ReadIndex rounds that got no answer within a second and were asked
    /// again (lost on the way; a leader change is not counted).
    pub read_index_retries: IntCounter,
    /// Applied index.
    pub applied_index: IntGauge,
    /// Proposal to apply on this node.
    pub commit_seconds: Histogram,
    /// Durable write transactions (raft log + state).
    pub fsync_seconds: Histogram,
    /// State files written (see `state_file.rs`).
    pub state_sync_seconds: Histogram,
    /// Entries applied per state-file transaction.
    pub apply_batch_entries: Histogram,
    /// Time to apply one batch and commit its state-file transaction.
    pub apply_seconds: Histogram,
    /// Snapshots installed from a leader.
    pub snapshots_installed: IntCounter,
    /// Log compactions.
    pub compactions: IntCounter,
    /// Raft log entries kept (in memory and in the log file).
    pub log_entries: IntGauge,
    /// Bytes of raft log entries held in memory (see `storage.rs`).
    pub log_memory_bytes: IntGauge,
    /// Live keys of the state.
    pub keys: IntGauge,
    /// Encoded bytes of the watch history kept.
    pub history_bytes: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(node_id: u64) -> Self {
        let registry = Registry::new_custom(
            Some("agenda_db".into()),
            Some([("node".to_string(), node_id.to_string())].into()),
        )
        .expect("static registry options are valid");
        let buckets = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let m = Metrics {
            term: IntGauge::new("raft_term", "Current raft term").unwrap(),
            is_leader: IntGauge::new("raft_is_leader", "1 while this node is the raft leader")
                .unwrap(),
            leader_changes: IntCounter::new("raft_leader_changes_total", "Leader changes observed")
                .unwrap(),
            proposals: IntCounter::new("raft_proposals_total", "Proposals handed to raft").unwrap(),
            proposals_failed: IntCounter::new(
                "raft_proposals_failed_total",
                "Proposals refused (no leader)",
            )
            .unwrap(),
            linearizable_reads: IntCounter::new(
                "linearizable_reads_total",
                "Linearizable reads asked of this node",
            )
            .unwrap(),
            lease_reads: IntCounter::new(
                "lease_reads_total",
                "Linearizable reads answered under this leader's read lease (no heartbeat round)",
            )
            .unwrap(),
            read_index_retries: IntCounter::new(
                "read_index_retries_total",
                "ReadIndex rounds asked again after no answer within 1 s",
            )
            .unwrap(),
            applied_index: IntGauge::new("raft_applied_index", "Last applied log index").unwrap(),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "commit_latency_seconds",
                    "Proposal to apply, on the proposing node",
                )
                .buckets(buckets.clone()),
            )
            .unwrap(),
            fsync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "fsync_latency_seconds",
                    "Durable commit of log + state (one fsync)",
                )
                .buckets(buckets.clone()),
            )
            .unwrap(),
            state_sync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "state_sync_latency_seconds",
                    "Writing one state file (encode, write, fsync, rename)",
                )
                .buckets(buckets.clone()),
            )
            .unwrap(),
            apply_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "apply_seconds",
                    "Applying one batch of committed entries, state-file commit included",
                )
                .buckets(buckets),
            )
            .unwrap(),
            apply_batch_entries: Histogram::with_opts(
                HistogramOpts::new(
                    "apply_batch_entries",
                    "Committed entries applied in one state-file transaction",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ]),
            )
            .unwrap(),
            snapshots_installed: IntCounter::new(
                "snapshots_installed_total",
                "Snapshots installed from a leader",
            )
            .unwrap(),
            compactions: IntCounter::new("log_compactions_total", "Raft log compactions").unwrap(),
            log_entries: IntGauge::new(
                "raft_log_entries",
                "Raft log entries kept until a state file covers them",
            )
            .unwrap(),
            log_memory_bytes: IntGauge::new(
                "raft_log_memory_bytes",
                "Bytes of the newest raft log entries held in memory",
            )
            .unwrap(),
            keys: IntGauge::new("keys", "Live keys of the state").unwrap(),
            history_bytes: IntGauge::new(
                "history_bytes",
                "Encoded bytes of the revision history kept for watches",
            )
            .unwrap(),
            registry,
        };
        for c in [
            Box::new(m.term.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.is_leader.clone()),
            Box::new(m.leader_changes.clone()),
            Box::new(m.proposals.clone()),
            Box::new(m.proposals_failed.clone()),
            Box::new(m.linearizable_reads.clone()),
            Box::new(m.lease_reads.clone()),
            Box::new(m.read_index_retries.clone()),
            Box::new(m.applied_index.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.fsync_seconds.clone()),
            Box::new(m.state_sync_seconds.clone()),
            Box::new(m.apply_batch_entries.clone()),
            Box::new(m.apply_seconds.clone()),
            Box::new(m.snapshots_installed.clone()),
            Box::new(m.compactions.clone()),
            Box::new(m.log_entries.clone()),
            Box::new(m.log_memory_bytes.clone()),
            Box::new(m.keys.clone()),
            Box::new(m.history_bytes.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        agenda_common::metrics::render(Some(&self.registry))
    }
}
