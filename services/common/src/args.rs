//! Flags every Agenda process shares, flattened into each binary's clap
//! config so their names, environment variables and help stay the same
//! everywhere.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::error::{Error, Result};
use crate::tls::{Identity, TlsFiles};

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
    /// Where linearizable reads go: `spread` over every node (a follower
    /// serves them after a ReadIndex round with the leader; the client
    /// picks the node with the least expected wait, by measured latency
    /// and calls in flight) or `leader` (like writes).
    #[arg(long, env = "AGENDA_DB_READS", value_enum, default_value_t = crate::db_client::ReadRouting::Spread)]
    pub db_reads: crate::db_client::ReadRouting,
}

/// The operators' HTTP port of a service without one of its own.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address of a plaintext HTTP listener for `/metrics` (Prometheus)
    /// and `/healthz`, host:port; none when not given.
    #[arg(long)]
    pub http: Option<String>,
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

/// This process's TLS identity. Unset: plaintext links (being phased out,
/// see issue 12); set: mutual TLS on the links that support it so far.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Directory with `ca.pem`, `NAME.pem` and `NAME-key.pem`
    /// (`agendactl certs` writes one); the files are read again when they
    /// change.
    #[arg(long, env = "AGENDA_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// This process's certificate name in --tls-dir (e.g. agenda-db-1).
    #[arg(long, env = "AGENDA_TLS_NAME", default_value = "")]
    pub tls_name: String,
}

impl TlsArgs {
    /// The identity, loaded once, when --tls-dir is given.
    pub fn identity(&self) -> Result<Option<Arc<Identity>>> {
        let Some(dir) = &self.tls_dir else {
            return Ok(None);
        };
        if self.tls_name.trim().is_empty() {
            return Err(Error::Config(
                "--tls-dir needs --tls-name (which certificate in it is this process's)".into(),
            ));
        }
        Identity::load(&TlsFiles::in_dir(dir, self.tls_name.trim())).map(Some)
    }
}
