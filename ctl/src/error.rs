//! The crate's error type: why a command failed, in words an operator
//! can act on.
//!
//! Each message carries its cause (`main` prints errors with anyhow's
//! `{:#}` and `status` shows them in its table), so no variant also hands
//! the cause out as `source()`, which would print it twice.

use std::time::Duration;

/// What can go wrong in agendactl.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command cannot run as asked, or the files are not in a state
    /// that allows it; the message says what to do instead.
    #[error("{0}")]
    Refused(String),
    /// A file, socket or namespace operation failed.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done, with the path or address.
        what: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Generating a key or signing a certificate failed.
    #[error("{what}: {cause}")]
    Cert {
        /// What was being made.
        what: String,
        /// What rcgen reported.
        cause: rcgen::Error,
    },
    /// A file or an answer is not what it should be.
    #[error("{0}")]
    Malformed(String),
    /// agenda-db refused or could not be reached.
    #[error("agenda-db: {0}")]
    Db(#[from] agenda_common::Error),
    /// A snapshot file or data dir could not be read or written.
    #[error("{0}")]
    Backup(#[from] agenda_db::Error),
    /// No answer within the deadline.
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// The request.
        what: String,
        /// The deadline.
        after: Duration,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |cause| Error::Io { what, cause }
    }

    /// An [`Error::Cert`] for `what`.
    pub fn cert(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Error {
        let what = what.into();
        move |cause| Error::Cert { what, cause }
    }
}
