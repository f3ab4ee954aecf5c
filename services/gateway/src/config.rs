//! Flags and environment of `agenda-gateway`.

use std::time::Duration;

use clap::Parser;

/// agenda-gateway: the public HTTP/JSON API. Checks tokens, finds the
/// users and groups replicas in the registry and balances calls over them.
#[derive(Debug, Clone, Parser)]
#[command(name = "agenda-gateway", version)]
pub struct Config {
    /// HTTP address to listen on.
    #[arg(long, env = "AGENDA_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub db: agenda_common::args::DbArgs,
    /// TLS identity (--tls-dir, --tls-name): mutual TLS on its gRPC links.
    #[command(flatten)]
    pub tls: agenda_common::args::TlsArgs,
    /// After SIGTERM or SIGINT, how long requests in flight get to finish,
    /// in milliseconds (WebSocket streams are told to close at once and get
    /// the same time to do so). New connections are refused meanwhile;
    /// when the time is up the process exits with whatever is left open.
    /// Keep it below the orchestrator's own grace period (docker compose
    /// waits 15 s, the Kubernetes manifests 30 s).
    #[arg(long, env = "AGENDA_SHUTDOWN_GRACE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,
    /// Deadline of one API request, retries included, in milliseconds.
    #[arg(long, env = "AGENDA_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub request_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AGENDA_MAX_BODY_BYTES", default_value_t = 65_536)]
    pub max_body_bytes: usize,
    /// Connections one client address may hold open at once; one more is
    /// closed at once.
    #[arg(long, env = "AGENDA_MAX_CONNECTIONS_PER_SOURCE", default_value_t = crate::limits::MAX_CONNECTIONS_PER_SOURCE)]
    pub max_connections_per_source: usize,
    /// Most requests worked on at once; one more is answered 503 with
    /// Retry-After at once rather than queued (/healthz, /readyz and
    /// /metrics are never refused). Under this ceiling the cap follows the
    /// latency of what is admitted (see --latency-tolerance), so a flood
    /// is refused while what is admitted keeps its latency.
    #[arg(long, env = "AGENDA_MAX_CONCURRENT_REQUESTS", default_value_t = crate::limits::MAX_CONCURRENT_REQUESTS, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=1_000_000), |v| v as usize))]
    pub max_concurrent_requests: usize,
    /// How many times their usual latency the admitted requests may take
    /// under a flood (twice what is served, or more) before fewer are
    /// admitted: the request cap comes down (to 4 at least) while answers
    /// are slower than that and grows back once they are not; out of a
    /// flood it keeps room for bursts (32 at least). 0: no adaptation,
    /// --max-concurrent-requests always.
    #[arg(long, env = "AGENDA_LATENCY_TOLERANCE", default_value_t = 1.5)]
    pub latency_tolerance: f64,
    /// Connections held open at once from all addresses; one more is
    /// closed at once. Keep it under the process's file descriptor limit.
    #[arg(long, env = "AGENDA_MAX_CONNECTIONS", default_value_t = crate::limits::MAX_CONNECTIONS, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=10_000_000), |v| v as usize))]
    pub max_connections: usize,
    /// Answers 401 (and 409 for a taken name or email) one client address
    /// may cause per second, after a burst of --address-failure-burst
    /// (then 429 with Retry-After for everything from there).
    #[arg(long, env = "AGENDA_ADDRESS_FAILURE_RATE", default_value_t = 20.0)]
    pub address_failure_rate: f64,
    /// Such answers one address may cause at once before
    /// --address-failure-rate applies.
    #[arg(long, env = "AGENDA_ADDRESS_FAILURE_BURST", default_value_t = 200.0)]
    pub address_failure_burst: f64,
    /// Requests one signed-in person may send per second, after a burst
    /// of --person-burst (then 429 with Retry-After).
    #[arg(long, env = "AGENDA_PERSON_RATE", default_value_t = 100.0)]
    pub person_rate: f64,
    /// Requests one signed-in person may send at once before
    /// --person-rate applies.
    #[arg(long, env = "AGENDA_PERSON_BURST", default_value_t = 400.0)]
    pub person_burst: f64,
    #[command(flatten)]
    pub redis: agenda_common::args::RedisAuthArgs,
    /// Interval of WebSocket heartbeats (ping frame + heartbeat message), ms.
    #[arg(long, env = "AGENDA_WS_HEARTBEAT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub ws_heartbeat_ms: u64,
    /// Notifications queued per WebSocket before the client counts as too
    /// slow and is disconnected (others are never held up by it).
    #[arg(long, env = "AGENDA_WS_QUEUE", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub ws_queue: u64,
    /// Kernel send buffer of each client connection, in bytes. It bounds
    /// what piles up for a client that stops reading: once it is full, the
    /// WebSocket queue fills and that client is cut (the kernel's own
    /// autotuned default lets megabytes pile up first).
    #[arg(long, env = "AGENDA_SEND_BUFFER_BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(4096..=16_777_216))]
    pub send_buffer_bytes: u64,
    /// The virtual IP clients use (two-machine deployments, with
    /// --vip-holder-id): requests that arrive on it are served only while
    /// this machine holds the VIP lease in agenda-db, so an address left
    /// behind on a machine that lost the lease answers nobody.
    #[arg(long, env = "AGENDA_GATEWAY_VIP", requires = "vip_holder_id")]
    pub vip_addr: Option<std::net::IpAddr>,
    /// The `--id` of the agenda-vip daemon on this machine.
    #[arg(long, env = "AGENDA_GATEWAY_VIP_HOLDER", requires = "vip_addr")]
    pub vip_holder_id: Option<String>,
    /// The web app's built files (`web/dist`, made by `npm run build` in
    /// `web/`), served at `/` on the same origin as the API. Unset: `/`
    /// answers 404 and only the API is served.
    #[arg(long, env = "AGENDA_WEB_DIR")]
    pub web_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub log: agenda_common::args::LogArgs,
}

impl Config {
    /// [`Config::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`Config::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The caps on requests and connections at once
    /// (--max-concurrent-requests, --latency-tolerance, --max-connections).
    pub fn admission(&self) -> agenda_common::admission::Admission {
        let (requests, connections) = (self.max_concurrent_requests, self.max_connections);
        if self.latency_tolerance > 0.0 && self.latency_tolerance.is_finite() {
            let how = agenda_common::admission::Adaptive {
                min: crate::limits::MIN_CONCURRENT_REQUESTS,
                tolerance: self.latency_tolerance.max(1.0),
            };
            agenda_common::admission::Admission::adaptive(requests, connections, how)
        } else {
            agenda_common::admission::Admission::new(requests, connections)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_shutdown_grace_defaults_to_ten_seconds_and_is_explained() {
        let cfg = Config::try_parse_from(["agenda-gateway"]).expect("defaults");
        assert_eq!(cfg.shutdown_grace(), Duration::from_secs(10));
        let cfg =
            Config::try_parse_from(["agenda-gateway", "--shutdown-grace-ms=250"]).expect("parse");
        assert_eq!(cfg.shutdown_grace(), Duration::from_millis(250));
        let help = Config::command().render_long_help().to_string();
        assert!(help.contains("--shutdown-grace-ms"), "{help}");
        assert!(help.contains("AGENDA_SHUTDOWN_GRACE_MS"), "{help}");
    }
}
