//! Logging set-up shared by every binary.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing to stderr. `filter` uses the
/// EnvFilter syntax ("info", "agenda_db=debug,raft=warn"); a bad filter
/// falls back to "info" with a warning rather than failing start-up.
pub fn init(filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!(error = %e, "bad log filter; using \"info\"");
    }
}
