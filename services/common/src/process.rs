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
    no_transparent_huge_pages();
    crate::telemetry::init(log);
    crate::metrics::set_process(name);
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

/// Turns transparent huge pages off for this process. The servers use
/// mimalloc, which asks for them and later hands parts back to the
/// kernel; under agenda-db's write load the kernel then spent about a
/// quarter of the raft threads' time zeroing fresh 2 MiB pages, and
/// writes at 512 clients ran ~35% slower with twice the p99 (`make
/// bench-db`, with and without). Harmless where THP is absent.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches
    // no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Whether `pid` runs. A zombie counts as dead: nothing may reap a
/// detached process promptly (PID 1 of a container or VM need not), and
/// `kill(pid, 0)` succeeds on a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}
