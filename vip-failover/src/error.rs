//! The crate's error type.
//!
//! The variants added for start-up carry their cause in their message
//! (logs print errors with `%`) and not as `source()`, so `main`'s
//! anyhow chain does not print it twice.

/// What can go wrong in agenda-vip.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ip`, `arping` or the guard failed.
    #[error("{0}")]
    Command(String),
    /// agenda-db refused or could not be reached.
    #[error("agenda-db: {0}")]
    Db(#[from] agenda_common::Error),
    /// Another daemon holds the VIP lease.
    #[error("the VIP lease is held by {0}")]
    Held(String),
    /// A flag's value cannot be used; the message names the flag.
    #[error("{0}")]
    Config(String),
    /// Setting up a link failed (`what`: the flag or part, e.g. `--db`).
    #[error("{what}: {cause}")]
    Setup {
        /// The flag or part.
        what: &'static str,
        /// Why.
        cause: agenda_common::Error,
    },
    /// A socket or name lookup failed (`what`: the flag and its value).
    #[error("{what}: {cause}")]
    Io {
        /// The flag and its value.
        what: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A start-up step on the interface failed.
    #[error("{what}: {cause}")]
    Interface {
        /// The step.
        what: &'static str,
        /// Why.
        cause: Box<Error>,
    },
    /// The Prometheus metrics could not be registered.
    #[error("registering metrics: {0}")]
    Metrics(prometheus::Error),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
