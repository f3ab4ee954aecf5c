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
    /// agenda-db gRPC endpoints, comma-separated (any subset of the nodes).
    #[arg(
        long,
        env = "AGENDA_DB",
        default_value = "127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub db: Vec<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `agenda_groups=debug`.
    #[arg(long, env = "AGENDA_LOG", default_value = "info")]
    pub log: String,
}
