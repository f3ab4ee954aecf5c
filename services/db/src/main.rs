//! `agenda-db` binary: parse flags, bind listeners, run the node.

use std::process::ExitCode;

use agenda_common::shutdown;
use agenda_db::Config;
use clap::Parser;

// The raft loop and redb allocate and free many short-lived buffers per
// write; glibc's malloc spent ~15% of the CPU on them under load
// (perf, `make bench-db`), mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    agenda_common::process::no_transparent_huge_pages();
    let cfg = Config::parse();
    agenda_common::telemetry::init(&cfg.log);
    agenda_common::metrics::set_process("agenda-db");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agenda-db: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agenda-db: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    // Fail fast on bad peers before touching the data dir.
    cfg.members().map_err(anyhow::Error::msg)?;
    let grpc = agenda_common::net::bind(&cfg.listen, "--listen").await?;
    let http = agenda_common::net::bind(&cfg.http, "--http").await?;
    let peer = match &cfg.peer_listen {
        Some(addr) => Some(agenda_common::net::bind(addr, "--peer-listen").await?),
        None => None,
    };
    let token = shutdown::token_on_signal();
    agenda_db::run(cfg, agenda_db::Listeners { grpc, http, peer }, token).await?;
    Ok(())
}
