//! Flags and environment of `agenda-supervisor`, and their validation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::error::{Error, Result};

/// agenda-supervisor: one per machine. Starts and restarts the local
/// redis-server (always as a replica of the current primary once one is
/// published), and, while it holds the supervisor lease in agenda-db,
/// checks every Redis node, promotes the best replica when the primary is
/// down, fences any other master and publishes the primary and its epoch
/// in the registry (`/registry/config/redis-primary`).
#[derive(Debug, Clone, Parser)]
#[command(name = "agenda-supervisor", version)]
pub struct Config {
    /// Id of this supervisor (its value under the election key; unique per
    /// deployment). Default: `supervisor-<--local-redis or random>`.
    #[arg(long, env = "AGENDA_SUPERVISOR_ID")]
    pub id: Option<String>,
    /// agenda-db endpoints.
    #[command(flatten)]
    pub db: agenda_common::args::DbArgs,
    /// TLS identity (--tls-dir, --tls-name): mutual TLS on its gRPC links
    /// and to every Redis node (`rediss://`).
    #[command(flatten)]
    pub tls: agenda_common::args::TlsArgs,
    /// Address of the HTTP listener serving `/metrics` and `/healthz`.
    #[arg(long, env = "AGENDA_SUPERVISOR_HTTP", default_value = "127.0.0.1:7501")]
    pub http: String,
    /// Every Redis node of the deployment (`host:port`, comma-separated),
    /// the same list on every supervisor.
    #[arg(
        long,
        env = "AGENDA_REDIS_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub redis_nodes: Vec<String>,
    /// The Redis node (`host:port`, one of --redis-nodes) whose
    /// redis-server process this supervisor starts, restarts and stops.
    /// Without it the supervisor manages no process.
    #[arg(long, env = "AGENDA_LOCAL_REDIS")]
    pub local_redis: Option<String>,
    /// Path (or name in PATH) of the redis-server binary.
    #[arg(long, env = "AGENDA_REDIS_SERVER", default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Data dir of the local Redis (AOF, pid file, log). Required with
    /// --local-redis.
    #[arg(long, env = "AGENDA_REDIS_DIR")]
    pub redis_dir: Option<PathBuf>,
    /// Redis password.
    #[command(flatten)]
    pub redis: agenda_common::args::RedisAuthArgs,
    /// With --tls-dir: the certificate name in it of the local
    /// redis-server (e.g. redis-a), which then serves only TLS on its
    /// port, asks every client for a certificate of the cluster CA, and
    /// replicates over TLS. Required with --tls-dir and --local-redis.
    #[arg(long, env = "AGENDA_REDIS_TLS_NAME", default_value = "")]
    pub redis_tls_name: String,
    /// Time between two health checks of every node, in milliseconds.
    #[arg(long, env = "AGENDA_SUPERVISOR_CHECK_INTERVAL_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub check_interval_ms: u64,
    /// Deadline of one health check or command to a Redis node, in
    /// milliseconds.
    #[arg(long, env = "AGENDA_SUPERVISOR_CHECK_TIMEOUT_MS", default_value_t = 400,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub check_timeout_ms: u64,
    /// How long the primary must fail every check (no answer, or not a
    /// master) before a replica is promoted, in milliseconds.
    #[arg(long, env = "AGENDA_SUPERVISOR_DOWN_AFTER_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub down_after_ms: u64,
    /// TTL of the supervisor lease in agenda-db, in milliseconds (rounded
    /// up to whole seconds, at least 1 s): how long a killed acting
    /// supervisor keeps the others from taking over.
    #[arg(long, env = "AGENDA_SUPERVISOR_LEASE_TTL_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1000..=600_000))]
    pub lease_ttl_ms: u64,
    /// Logging.
    #[command(flatten)]
    pub log: agenda_common::args::LogArgs,
}

impl Config {
    /// Checks what clap cannot: node addresses, the local node in the list,
    /// a data dir for the local node.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::Config(m));
        if self.redis_nodes.is_empty() {
            return invalid("--redis-nodes: give at least one host:port".into());
        }
        for n in &self.redis_nodes {
            split_addr(n).map_err(|e| Error::Config(format!("--redis-nodes: {e}")))?;
        }
        let mut sorted = self.redis_nodes.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.redis_nodes.len() {
            return invalid("--redis-nodes: a node is listed twice".into());
        }
        if let Some(local) = &self.local_redis {
            split_addr(local).map_err(|e| Error::Config(format!("--local-redis: {e}")))?;
            if !self.redis_nodes.contains(local) {
                return invalid(format!(
                    "--local-redis {local} is not one of --redis-nodes {}",
                    self.redis_nodes.join(",")
                ));
            }
            if self.redis_dir.is_none() {
                return invalid("--redis-dir is required with --local-redis".into());
            }
            if self.tls.tls_dir.is_some() && self.redis_tls_name.trim().is_empty() {
                return invalid(
                    "--tls-dir with --local-redis needs --redis-tls-name (the local redis-server's certificate in --tls-dir)".into(),
                );
            }
        }
        if self.down_after_ms < self.check_interval_ms {
            return invalid(format!(
                "--down-after-ms {} must be at least --check-interval-ms {}",
                self.down_after_ms, self.check_interval_ms
            ));
        }
        Ok(())
    }

    /// This supervisor's id.
    pub fn id(&self) -> String {
        match (&self.id, &self.local_redis) {
            (Some(id), _) => id.clone(),
            (None, Some(local)) => format!("supervisor-{local}"),
            (None, None) => format!("supervisor-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// --check-interval-ms.
    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }

    /// --check-timeout-ms.
    pub fn check_timeout(&self) -> Duration {
        Duration::from_millis(self.check_timeout_ms)
    }

    /// --down-after-ms.
    pub fn down_after(&self) -> Duration {
        Duration::from_millis(self.down_after_ms)
    }

    /// --lease-ttl-ms.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }
}

/// Splits `host:port`.
pub fn split_addr(addr: &str) -> Result<(String, u16)> {
    let bad = |why: &str| Error::Address(format!("{addr:?} {why}"));
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("is not host:port"))?;
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let port: u16 = port.parse().map_err(|_| bad("has a bad port"))?;
    if port == 0 {
        return Err(bad("has port 0"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Config {
        let mut all = vec!["agenda-supervisor"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("parse")
    }

    #[test]
    fn validates_local_node_and_addresses() {
        let ok = cfg(&[
            "--redis-nodes=127.0.0.1:1,127.0.0.1:2",
            "--local-redis=127.0.0.1:2",
            "--redis-dir=/tmp/x",
        ]);
        assert!(ok.validate().is_ok());
        let not_listed = cfg(&[
            "--redis-nodes=127.0.0.1:1",
            "--local-redis=127.0.0.1:2",
            "--redis-dir=/tmp/x",
        ]);
        let refusal = |c: Config| c.validate().unwrap_err().to_string();
        assert!(refusal(not_listed).contains("not one of"));
        let no_dir = cfg(&["--redis-nodes=127.0.0.1:1", "--local-redis=127.0.0.1:1"]);
        assert!(refusal(no_dir).contains("--redis-dir"));
        let bad = cfg(&["--redis-nodes=localhost"]);
        assert!(refusal(bad).contains("host:port"));
        let dup = cfg(&["--redis-nodes=a:1,a:1"]);
        assert!(refusal(dup).contains("twice"));
    }
}
