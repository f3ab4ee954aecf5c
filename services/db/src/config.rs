//! Command-line and environment configuration of `agenda-db`.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// One node of Agenda's replicated store (raft over redb, etcd-v3-like API).
///
/// Start five nodes with the same --peers list and distinct --id values.
/// Every flag can also be given as an environment variable (shown in
/// brackets).
#[derive(Debug, Clone, Parser)]
#[command(name = "agenda-db", version, about, long_about = None)]
pub struct Config {
    /// This node's id: a positive integer that appears in --peers.
    #[arg(long, env = "AGENDA_DB_ID")]
    pub id: u64,

    /// Address for gRPC (the client API, and raft traffic from peers
    /// unless --peer-listen), host:port.
    #[arg(long, env = "AGENDA_DB_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: String,

    /// Address for the operator REST API, /healthz and /metrics, host:port.
    #[arg(long, env = "AGENDA_DB_HTTP", default_value = "127.0.0.1:7101")]
    pub http: String,

    /// Address for raft traffic from peers (host:port), apart from the
    /// client port so the two can be firewalled apart: it serves only the
    /// raft stream (only to `peer` certificates with --tls-dir), and the
    /// client port then serves none. --peers and member adds name these
    /// addresses. Unset: raft traffic shares --listen.
    #[arg(long, env = "AGENDA_DB_PEER_LISTEN")]
    pub peer_listen: Option<String>,

    /// Initial members as ID=HOST:PORT pairs separated by commas, e.g.
    /// "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003". Used to
    /// bootstrap a new cluster; later membership lives in the data itself.
    #[arg(long, env = "AGENDA_DB_PEERS")]
    pub peers: String,

    /// Directory for this node's database file (created if missing).
    #[arg(long, env = "AGENDA_DB_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Join an existing cluster instead of bootstrapping a new one: the node
    /// starts empty and waits for the leader to send it a snapshot. Add it
    /// first with `POST /v1/cluster/members` on any member.
    #[arg(long, env = "AGENDA_DB_JOIN")]
    pub join: bool,

    /// Name shared by every node of one cluster; a data dir or a peer from
    /// another cluster is refused.
    #[arg(long, env = "AGENDA_DB_CLUSTER_TOKEN", default_value = "agenda")]
    pub cluster_token: String,

    /// TLS: with --tls-dir, the gRPC port (clients and peers) accepts only
    /// mutual TLS with a certificate of the cluster CA, and raft traffic
    /// to peers goes over it too.
    #[command(flatten)]
    pub tls: agenda_common::args::TlsArgs,

    /// Raft tick in milliseconds (heartbeats every 2 ticks, elections after
    /// 10-20 ticks without a leader). Every member must use the same tick
    /// and election ticks: the leader's read lease (3/4 of election ticks
    /// minus one, in ticks) relies on the others waiting that long before
    /// electing another.
    #[arg(long, env = "AGENDA_DB_TICK_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(5..=1000))]
    pub tick_ms: u64,

    /// Election timeout in ticks (randomized between this and twice this).
    #[arg(long, env = "AGENDA_DB_ELECTION_TICKS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..=1000))]
    pub election_ticks: u64,

    /// Compact the raft log once it holds this many applied entries; a
    /// follower further behind than that catches up by snapshot.
    #[arg(long, env = "AGENDA_DB_SNAPSHOT_THRESHOLD", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_threshold: u64,

    /// Least time between two state files, in milliseconds. The state lives
    /// in memory; a state file (written in the background) lets a restart
    /// replay only the log after it, and the log is kept back to the last
    /// one. Acknowledged writes are durable in the raft log regardless.
    #[arg(long, env = "AGENDA_DB_STATE_SYNC_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub state_sync_ms: u64,

    /// Write a state file once the log applied since the last one holds
    /// this many bytes, or as many as the last state file if that is more:
    /// a file costs time in proportion to the whole state, so it is paid
    /// for by as many bytes of new log, and a restart never replays more
    /// log than about the state's own size.
    #[arg(long, env = "AGENDA_DB_STATE_SYNC_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub state_sync_bytes: u64,

    /// Revisions of history kept for Watch replay and past-revision reads.
    #[arg(long, env = "AGENDA_DB_HISTORY", default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub history: i64,

    /// Most bytes of history kept (the encoded size of its events), besides
    /// `--history` revisions: history lives in memory and in every state
    /// file, so large values must not make it grow without bound.
    #[arg(long, env = "AGENDA_DB_HISTORY_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub history_bytes: u64,

    /// Client requests (proposals, linearizable reads) the raft thread
    /// queues at most; beyond that they are refused at once with
    /// UNAVAILABLE ("overloaded") rather than queued without bound. Peer
    /// traffic has a queue of its own and is never refused for them.
    #[arg(long, env = "AGENDA_DB_MAX_QUEUED_REQUESTS", default_value_t = crate::node::mailbox::CLIENT_QUEUE, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=10_000_000), |v| v as usize))]
    pub max_queued_requests: usize,

    /// Scheduled backups: the leader writes a snapshot file (as
    /// `agendactl snapshot save` does) into this directory every
    /// --backup-every, keeping the newest --backup-keep. Unset: none.
    #[arg(long, env = "AGENDA_DB_BACKUP_DIR")]
    pub backup_dir: Option<std::path::PathBuf>,
    /// How often the leader writes a backup, e.g. 1h, 30m, 10s, 500ms.
    #[arg(long, env = "AGENDA_DB_BACKUP_EVERY", default_value = "1h", value_parser = parse_duration)]
    pub backup_every: Duration,
    /// How many backup files are kept (the oldest go first).
    #[arg(long, env = "AGENDA_DB_BACKUP_KEEP", default_value_t = 24, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=100_000), |v| v as usize))]
    pub backup_keep: usize,

    /// Longest a request waits (e.g. for a leader) before failing with
    /// UNAVAILABLE, in milliseconds.
    #[arg(long, env = "AGENDA_DB_REQUEST_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    pub request_timeout_ms: u64,

    /// Client requests the gRPC port serves at once; one more is answered
    /// UNAVAILABLE at once with a retry hint (`grpc-retry-pushback-ms`)
    /// instead of waiting. Far above what the services and gateways send
    /// (each gateway caps its own requests); raft traffic is never refused.
    #[arg(long, env = "AGENDA_DB_MAX_CONCURRENT_REQUESTS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,

    /// Connections the gRPC port holds open at once (--peer-listen the
    /// same, counted apart); one more is closed as soon as it is
    /// accepted. Keep it under the process's file descriptor limit.
    #[arg(long, env = "AGENDA_DB_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "agenda_db=debug".
    #[arg(long, env = "AGENDA_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// Parses and checks --peers: id -> address, including this node's.
    pub fn members(&self) -> Result<BTreeMap<u64, String>, String> {
        if self.id == 0 {
            return Err("--id must be a positive integer".into());
        }
        let mut out = parse_members(&self.peers, "--peers")?;
        if self.join {
            out.entry(self.id).or_insert_with(|| self.listen.clone());
        } else if !out.contains_key(&self.id) {
            return Err(format!(
                "--id {} is not in --peers ({}); list every initial member including this one",
                self.id, self.peers
            ));
        }
        Ok(out)
    }

    /// Raft tick length.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// Request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The caps of the gRPC port (--max-concurrent-requests,
    /// --max-connections).
    pub fn admission(&self) -> agenda_common::admission::Admission {
        let cap = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        agenda_common::admission::Admission::new(
            cap(self.max_concurrent_requests),
            cap(self.max_connections),
        )
    }
}

/// Checks that `addr` is host:port and resolves.
pub fn check_addr(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("address must not be empty".into());
    }
    match addr.to_socket_addrs() {
        Ok(mut it) => match it.next() {
            Some(_) => Ok(()),
            None => Err(format!("address {addr:?} resolves to nothing")),
        },
        Err(e) => Err(format!(
            "address {addr:?} is not a reachable HOST:PORT ({e})"
        )),
    }
}

/// Members as ID=HOST:PORT pairs separated by commas (`--peers`, and
/// `agendactl snapshot restore --members`); errors name `flag`.
pub fn parse_members(list: &str, flag: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{flag}: {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{flag}: {id:?} is not a positive integer id"))?;
        if id == 0 {
            return Err(format!("{flag}: ids must be positive"));
        }
        check_addr(addr.trim()).map_err(|e| format!("{flag}: member {id}: {e}"))?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("{flag}: member {id} is listed twice"));
        }
    }
    Ok(out)
}

/// A duration as `NUMBER` and a unit: `ms`, `s`, `m` or `h` (`1h`,
/// `30m`, `500ms`); at least 100 ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: want a number and a unit, e.g. 1h, 30m, 10s, 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: the unit is one of ms, s, m, h")),
    };
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?}: at least 100ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "h", "10", "10d", "50ms", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    fn cfg(id: u64, peers: &str, join: bool) -> Config {
        let mut args = vec![
            "agenda-db".to_string(),
            format!("--id={id}"),
            format!("--peers={peers}"),
            "--data-dir=/tmp/x".to_string(),
        ];
        if join {
            args.push("--join".into());
        }
        Config::try_parse_from(args).unwrap()
    }

    #[test]
    fn peers_are_parsed_and_checked() {
        let c = cfg(2, "1=127.0.0.1:1, 2=127.0.0.1:2", false);
        assert_eq!(c.members().unwrap().len(), 2);
        assert!(cfg(3, "1=127.0.0.1:1", false)
            .members()
            .unwrap_err()
            .contains("not in --peers"));
        assert!(cfg(1, "1=127.0.0.1:1,1=127.0.0.1:2", false)
            .members()
            .is_err());
        assert!(cfg(1, "1=nonsense", false).members().is_err());
        assert!(cfg(1, "x=127.0.0.1:1", false).members().is_err());
        let joined = cfg(6, "1=127.0.0.1:1", true).members().unwrap();
        assert!(joined.contains_key(&6));
    }
}
