//! `make chaos`: faults under traffic in the two-machine topology, with
//! history checks and a table of unavailability per fault (see
//! `agenda_tests::chaos`). Also the workload process it starts inside the
//! client namespace (`chaos workload`).

use std::process::ExitCode;

use agenda_tests::chaos;
use clap::{Parser, Subcommand};

/// Chaos runs of Agenda (root: network namespaces).
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the topology, run the plan, check the histories, print the table.
    Run {
        /// `quick` (one fault of each kind) or `full` (also every machine,
        /// pairs of faults and a majority loss).
        #[arg(long, default_value = "full")]
        plan: String,
        /// Multiplies the time targets (debug builds: 3).
        #[arg(long, default_value_t = 1)]
        headroom: u32,
        /// Run only the plan's steps whose name contains this (repeatable),
        /// e.g. `--only "power cut machine-a"`.
        #[arg(long)]
        only: Vec<String>,
        /// Keep the histories and logs even when the run passes.
        #[arg(long)]
        keep: bool,
    },
    /// The workload (run inside the client namespace by `run`).
    Workload(chaos::WorkloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Run {
                plan,
                headroom,
                only,
                keep,
            } => {
                let mut plan = match plan.as_str() {
                    "quick" => chaos::quick_plan(),
                    "full" => chaos::full_plan(),
                    other => anyhow::bail!("unknown plan {other:?} (quick or full)"),
                };
                if !only.is_empty() {
                    plan.retain(|s| only.iter().any(|o| s.name().contains(o.as_str())));
                    anyhow::ensure!(!plan.is_empty(), "no step of the plan matches {only:?}");
                }
                let report = chaos::run(plan, headroom, keep).await?;
                print!("{}", report.table());
                if !report.violations.is_empty() || !report.slow.is_empty() {
                    anyhow::bail!(
                        "{} violations, {} time targets missed",
                        report.violations.len(),
                        report.slow.len()
                    );
                }
                Ok(())
            }
            Cmd::Workload(args) => chaos::workload(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
