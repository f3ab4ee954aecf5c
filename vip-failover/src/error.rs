//! The crate's error type.

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
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
