//! `agenda-gateway` binary: parse flags, bind, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use agenda_gateway::Config;
use clap::Parser;

// Each request allocates and frees many short-lived buffers (TLS records,
// gRPC frames, JSON); glibc's malloc was about a quarter of agenda-users'
// CPU on the week view (perf during `make bench-nginx`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg = Config::parse();
    let log = cfg.log.log.clone();
    agenda_common::process::run_main("agenda-gateway", &log, async move {
        let listener = agenda_common::net::bind(&cfg.listen, "--listen").await?;
        agenda_gateway::run(cfg, listener, agenda_common::shutdown::token_on_signal()).await?;
        Ok::<(), anyhow::Error>(())
    })
}
