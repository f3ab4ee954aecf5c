//! The crate's error type: every way supervising can fail, each variant
//! carrying what the operator needs to act on it.
//!
//! Each message includes its cause (logs print errors with `%`, which
//! shows `Display` only), so no variant also hands the cause out as
//! `source()`: whoever walks the chain (anyhow's `{:#}` in `main`) would
//! print it twice.

use std::time::Duration;

/// What can go wrong in agenda-supervisor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value cannot be used; the message names the flag.
    #[error("{0}")]
    Config(String),
    /// An address is not `host:port`.
    #[error("{0}")]
    Address(String),
    /// Setting up a link failed (`what`: the flag or part, e.g. `--db`).
    #[error("{what}: {cause}")]
    Setup {
        /// The flag or part that failed.
        what: &'static str,
        /// Why.
        cause: agenda_common::Error,
    },
    /// agenda-db did not answer or refused the call.
    #[error("agenda-db: {0}")]
    Db(agenda_common::Error),
    /// The published primary changed since it was read, or this supervisor
    /// no longer holds the election key: nothing was written.
    #[error(
        "not published: the record changed since it was read or this supervisor no longer leads"
    )]
    Conflict,
    /// A Redis command failed or the connection to the node broke.
    #[error("{what}: {cause}")]
    Redis {
        /// The command (or `connect`).
        what: String,
        /// What the Redis client reported.
        cause: redis::RedisError,
    },
    /// A Redis node did not answer within the deadline.
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// The command.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// A Redis node answered something the supervisor cannot use (a
    /// `PING` that is not `PONG`, `INFO` without a role).
    #[error("{0}")]
    Unexpected(String),
    /// A file or process operation on the local redis-server failed.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The Prometheus metrics could not be registered.
    #[error("registering metrics: {0}")]
    Metrics(prometheus::Error),
    /// A task of the supervisor panicked or was cancelled.
    #[error("{what}: {cause}")]
    Task {
        /// The task.
        what: &'static str,
        /// How it ended.
        cause: tokio::task::JoinError,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<agenda_common::Error> for Error {
    fn from(e: agenda_common::Error) -> Self {
        Error::Db(e)
    }
}

impl Error {
    /// An [`Error::Io`] for `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |cause| Error::Io { what, cause }
    }

    /// An [`Error::Redis`] for the command `what`.
    pub fn redis(what: impl Into<String>) -> impl FnOnce(redis::RedisError) -> Error {
        let what = what.into();
        move |cause| Error::Redis { what, cause }
    }

    /// An [`Error::Setup`] of `what`.
    pub fn setup(what: &'static str) -> impl FnOnce(agenda_common::Error) -> Error {
        move |cause| Error::Setup { what, cause }
    }
}
