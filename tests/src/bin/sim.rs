//! `make sim`: agenda-db's nodes run over a simulated network, disk and
//! clock, one seed per run (see `agenda_tests::sim`).
//!
//! `sim --seeds N` runs seeds 1..=N (or from `--first`) and prints, per
//! run, the operations checked, crashes, partitions and leader changes,
//! then seeds per second; a failing seed prints itself and how to replay
//! it. `sim --seed S` replays one seed and ends with `trace digest: ...`.
//! `--bug NAME` puts an old defect back to show the simulator finds it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agenda_db::node::Reintroduced;
use agenda_tests::sim::{self, SimConfig};
use clap::Parser;

/// Runs agenda-db's raft loop in a seeded simulation and judges each run.
#[derive(Parser, Debug)]
struct Args {
    /// Run this many seeds (from --first).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of a --seeds run.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Replay this one seed (prints its trace digest).
    #[arg(long)]
    seed: Option<u64>,
    /// Virtual seconds of faults per run (then everything heals).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Register clients per run.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// No faults at all (a sanity run).
    #[arg(long)]
    no_faults: bool,
    /// Put back a defect: ack-before-fsync, local-clock-in-apply,
    /// shared-read-ctx, long-read-lease (agenda-db) or
    /// election-ignores-deadline (a leader acting until told its lease is
    /// gone). With --seeds, stops at the
    /// first seed that catches it.
    #[arg(long)]
    bug: Option<String>,
    /// Run this scenario of `agenda_tests::scenario` (by name) instead of
    /// random faults.
    #[arg(long)]
    scenario: Option<String>,
    /// Keep going after a failing seed (default: stop at the first).
    #[arg(long)]
    keep_going: bool,
    /// With --seed: print the whole trace to stderr as it runs.
    #[arg(long)]
    trace: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A node's panic is a finding, reported with its seed; the default
    // hook would print a backtrace per node thread of thought.
    std::panic::set_hook(Box::new(|_| {}));
    let mut reintroduced = Reintroduced::default();
    let mut election_ignores_deadline = false;
    match args.bug.as_deref() {
        None => {}
        Some("ack-before-fsync") => reintroduced.ack_before_fsync = true,
        Some("local-clock-in-apply") => reintroduced.local_clock_in_apply = true,
        Some("shared-read-ctx") => reintroduced.shared_read_ctx = true,
        Some("long-read-lease") => reintroduced.long_read_lease = true,
        Some("election-ignores-deadline") => election_ignores_deadline = true,
        Some(other) => {
            eprintln!(
                "sim: unknown --bug {other:?}; one of ack-before-fsync, local-clock-in-apply, shared-read-ctx, long-read-lease, election-ignores-deadline"
            );
            return ExitCode::from(2);
        }
    }
    let scenario = match args.scenario.as_deref() {
        None => None,
        Some(name) => match agenda_tests::scenario::named(name) {
            Some(s) => Some(s),
            None => {
                let names: Vec<&str> = agenda_tests::scenario::SCENARIOS
                    .iter()
                    .map(|s| s.name)
                    .collect();
                eprintln!("sim: unknown --scenario {name:?}; one of {names:?}");
                return ExitCode::from(2);
            }
        },
    };
    let run = |seed: u64, cfg: &SimConfig| match scenario {
        Some(s) => sim::run_scenario(seed, cfg, s),
        None => sim::run(seed, cfg),
    };
    let cfg = SimConfig {
        clients: args.clients,
        duration: Duration::from_secs(args.secs),
        faults: !args.no_faults,
        reintroduced,
        print_trace: args.trace && args.seed.is_some(),
        election_ignores_deadline,
        ..SimConfig::default()
    };
    if let Some(seed) = args.seed {
        let r = run(seed, &cfg);
        println!(
            "seed {seed}: {} ops checked ({} writes acknowledged, {} reads under a leader's lease), {} crashes, {} partitions, {} leader changes, {} elections, {} events",
            r.ops_checked, r.acked_writes, r.lease_reads, r.crashes, r.partitions, r.leader_changes, r.elections, r.events
        );
        if let Some(v) = &r.violation {
            println!("seed {seed}: FAILED: {v}");
        }
        println!("trace digest: {}", r.digest);
        return if r.violation.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut ran = 0;
    for seed in args.first..args.first + args.seeds {
        let r = run(seed, &cfg);
        ran += 1;
        println!(
            "seed {seed}: {} ops checked, {} lease reads, {} crashes, {} partitions, {} leader changes, {} elections{}",
            r.ops_checked,
            r.lease_reads,
            r.crashes,
            r.partitions,
            r.leader_changes,
            r.elections,
            r.violation
                .as_ref()
                .map(|v| format!(" FAILED: {v}"))
                .unwrap_or_default()
        );
        if r.violation.is_some() {
            failed.push(seed);
            println!("  replay: make sim SEED={seed}{}", bug_flag(&args));
            if !args.keep_going {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{ran} seeds in {secs:.1} s: {:.2} seeds/s; {} failed{}",
        ran as f64 / secs,
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({failed:?})")
        }
    );
    if let (Some(bug), Some(first)) = (&args.bug, failed.first()) {
        println!(
            "the reintroduced defect {bug} was caught by seed {first}, after {} seeds",
            first - args.first + 1
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bug_flag(args: &Args) -> String {
    let mut flags = Vec::new();
    if let Some(b) = &args.bug {
        flags.push(format!("--bug {b}"));
    }
    if let Some(s) = &args.scenario {
        flags.push(format!("--scenario \"{s}\""));
    }
    if flags.is_empty() {
        String::new()
    } else {
        format!(" SIM_ARGS='{}'", flags.join(" "))
    }
}
