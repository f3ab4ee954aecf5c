//! Flags and environment of `agenda-users`.

use clap::Parser;

/// agenda-users: accounts, login, personal events, conflicts, free/busy.
/// Stateless: every replica works on agenda-db and registers itself in
/// its registry, where the gateway finds it.
#[derive(Debug, Clone, Parser)]
#[command(name = "agenda-users", version)]
pub struct Config {
    /// gRPC address to listen on (gateway calls).
    #[arg(long, env = "AGENDA_USERS_LISTEN", default_value = "127.0.0.1:7201")]
    pub listen: String,
    /// Address published in the registry for gateways to dial (default:
    /// the bound --listen address).
    #[arg(long, env = "AGENDA_USERS_ADVERTISE")]
    pub advertise: Option<String>,
    /// agenda-db gRPC endpoints, comma-separated (any subset of the nodes).
    #[arg(
        long,
        env = "AGENDA_DB",
        default_value = "127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub db: Vec<String>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "AGENDA_TOKEN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(10..=604_800))]
    pub token_ttl_secs: u64,
    /// Password of the Redis servers (the relay publishes notifications
    /// to the primary named in the registry).
    #[arg(
        long,
        env = "AGENDA_REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub redis_password: String,
    /// Do not run the notification relay in this replica.
    #[arg(long, env = "AGENDA_NO_RELAY")]
    pub no_relay: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `agenda_users=debug`.
    #[arg(long, env = "AGENDA_LOG", default_value = "info")]
    pub log: String,
}
