//! The `main` of every Agenda binary: logging, the runtime, and an exit
//! code with a readable message instead of a panic.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Sets up logging with `log`, runs `body` on a multi-threaded runtime and
/// turns its result into the process exit code (errors printed with their
/// cause chain, prefixed by `name`).
pub fn run_main<E: Display>(
    name: &str,
    log: &str,
    body: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    crate::telemetry::init(log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
