//! `agenda-groups` binary: parse flags, bind, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use agenda_groups::Config;
use clap::Parser;

fn main() -> ExitCode {
    let cfg = Config::parse();
    let log = cfg.log.log.clone();
    agenda_common::process::run_main("agenda-groups", &log, async move {
        let listener = agenda_common::net::bind(&cfg.listen, "--listen").await?;
        agenda_groups::run(cfg, listener, agenda_common::shutdown::token_on_signal()).await?;
        Ok::<(), anyhow::Error>(())
    })
}
