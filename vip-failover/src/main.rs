//! `agenda-vip` binary: parse flags, bind the metrics listener, run until
//! SIGINT/SIGTERM (releasing the VIP on the way out).

use std::process::ExitCode;

use agenda_vip::Config;
use clap::Parser;

fn main() -> ExitCode {
    let cfg = Config::parse();
    let log = cfg.log.log.clone();
    agenda_common::process::run_main("agenda-vip", &log, async move {
        let listener = agenda_common::net::bind(&cfg.http, "--http").await?;
        agenda_vip::run(cfg, listener, agenda_common::shutdown::token_on_signal()).await?;
        Ok::<(), anyhow::Error>(())
    })
}
