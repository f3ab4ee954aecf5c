//! Flags every Agenda process shares, flattened into each binary's clap
//! config so their names, environment variables and help stay the same
//! everywhere.

use clap::Args;

/// Where agenda-db is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// agenda-db gRPC endpoints, comma-separated (any subset of the nodes).
    #[arg(
        long,
        env = "AGENDA_DB",
        default_value = "127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub db: Vec<String>,
}

/// Logging.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `agenda_users=debug`.
    #[arg(long, env = "AGENDA_LOG", default_value = "info")]
    pub log: String,
}

/// Redis credentials (the address always comes from the registry).
#[derive(Debug, Clone, Args)]
pub struct RedisAuthArgs {
    /// Password of the Redis servers; the current primary is the one the
    /// acting agenda-supervisor publishes in the registry.
    #[arg(
        long,
        env = "AGENDA_REDIS_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub redis_password: String,
}
