//! `agendactl` binary: parse the command line and run one command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// agendactl: the operator's tool for an Agenda deployment.
#[derive(Debug, Parser)]
#[command(name = "agendactl", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "AGENDA_LOG", default_value = "warn", global = true)]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One table of the whole system: VIP holder, Redis primary and epoch,
    /// raft leader and every member's term and applied index, service
    /// instances, every process up or down.
    Status {
        /// The endpoints file written by `make run`.
        #[arg(
            long,
            env = "AGENDA_ENDPOINTS",
            default_value = ".agenda/endpoints.json"
        )]
        endpoints: PathBuf,
    },
    /// Relay a port of this host to an address reached from inside a
    /// network namespace (`make run` uses it for the VIP).
    Relay {
        /// Address to listen on (host namespace).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Network namespace to connect from (name under /var/run/netns,
        /// or a path); empty: this one.
        #[arg(long, default_value = "")]
        netns: String,
        /// Where to connect (`ip:port`).
        #[arg(long)]
        to: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    agenda_common::process::run_main("agendactl", &cli.log, async move {
        match cli.cmd {
            Cmd::Status { endpoints } => {
                let ep = agendactl::endpoints::Endpoints::read(&endpoints)?;
                print!("{}", agendactl::status::render(&ep).await);
                Ok::<(), anyhow::Error>(())
            }
            Cmd::Relay { listen, netns, to } => agendactl::relay::run(&listen, &netns, to).await,
        }
    })
}
