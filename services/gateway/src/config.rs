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
    #[command(flatten)]
    pub log: agenda_common::args::LogArgs,
}

impl Config {
    /// [`Config::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}
