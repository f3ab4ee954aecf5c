//! Flags and environment of `agenda-groups`.

use clap::Parser;

/// agenda-groups: groups, ranks, invitations, group events and the group
/// agenda. Stateless: every replica works on agenda-db and registers
/// itself in its registry, where the gateway finds it.
#[derive(Debug, Clone, Parser)]
#[command(name = "agenda-groups", version)]
pub struct Config {
    /// gRPC address to listen on (gateway calls).
    #[arg(long, env = "AGENDA_GROUPS_LISTEN", default_value = "127.0.0.1:7301")]
    pub listen: String,
    /// Address published in the registry for gateways to dial (default:
    /// the bound --listen address).
    #[arg(long, env = "AGENDA_GROUPS_ADVERTISE")]
    pub advertise: Option<String>,
    #[command(flatten)]
    pub db: agenda_common::args::DbArgs,
    /// Caps on requests and connections at once (over them: refused at once).
    #[command(flatten)]
    pub admission: agenda_common::admission::Args,
    /// TLS identity (--tls-dir, --tls-name): mutual TLS on its gRPC links.
    #[command(flatten)]
    pub tls: agenda_common::args::TlsArgs,
    /// `/metrics` and `/healthz` (--http).
    #[command(flatten)]
    pub http: agenda_common::args::HttpArgs,
    #[command(flatten)]
    pub log: agenda_common::args::LogArgs,
}
