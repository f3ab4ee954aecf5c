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
    #[command(flatten)]
    pub db: agenda_common::args::DbArgs,
    /// Caps on requests and connections at once (over them: refused at once).
    #[command(flatten)]
    pub admission: agenda_common::admission::Args,
    /// TLS identity (--tls-dir, --tls-name): mutual TLS on its gRPC links.
    #[command(flatten)]
    pub tls: agenda_common::args::TlsArgs,
    /// Lifetime of issued access tokens, in seconds (short: a client
    /// keeps its session with the refresh token of its login).
    #[arg(long, env = "AGENDA_TOKEN_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=agenda_calendar::store::sessions::MAX_ACCESS_TTL_SECS))]
    pub token_ttl_secs: u64,
    /// How long a CalDAV calendar remembers deletions, in seconds: a
    /// client that has not synced for longer is told its sync token
    /// expired and syncs afresh.
    #[arg(long, env = "AGENDA_DAV_SYNC_HISTORY_SECS", default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..=31_622_400))]
    pub dav_sync_history_secs: u64,
    #[command(flatten)]
    pub redis: agenda_common::args::RedisAuthArgs,
    /// Memory for week views already answered, in MiB (0: none). A view
    /// kept is answered again after one read of the person's agenda
    /// version instead of the agenda itself, only while that version has
    /// not moved; the oldest views go first.
    #[arg(long, env = "AGENDA_USERS_WEEK_VIEW_CACHE_MIB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub week_view_cache_mib: u64,
    /// Do not run the notification relay in this replica.
    #[arg(long, env = "AGENDA_NO_RELAY")]
    pub no_relay: bool,
    /// `/metrics` and `/healthz` (--http).
    #[command(flatten)]
    pub http: agenda_common::args::HttpArgs,
    #[command(flatten)]
    pub log: agenda_common::args::LogArgs,
}
