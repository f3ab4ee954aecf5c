//! `agenda-supervisor` binary: parse flags, bind the metrics listener,
//! supervise until SIGINT/SIGTERM.

use std::process::ExitCode;

use agenda_supervisor::Config;
use clap::Parser;

fn main() -> ExitCode {
    let cfg = Config::parse();
    let log = cfg.log.log.clone();
    agenda_common::process::run_main("agenda-supervisor", &log, async move {
        let listener = agenda_common::net::bind(&cfg.http, "--http").await?;
        agenda_supervisor::run(cfg, listener, agenda_common::shutdown::token_on_signal()).await?;
        Ok::<(), anyhow::Error>(())
    })
}
