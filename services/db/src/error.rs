//! The one error type of agenda-db, and how it maps to gRPC and HTTP.

use std::time::Duration;

/// Everything that can go wrong inside a node or while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk store failed; the node stops rather than risk divergence.
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    /// A file of the data dir could not be read or written.
    #[error("{0}")]
    Io(String),
    /// A persisted or received record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Raft refused an operation (e.g. a log entry that no longer exists).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// No leader is known right now; the caller may retry later.
    #[error("no raft leader is available; retry shortly")]
    NoLeader,
    /// The request did not complete within its deadline.
    #[error("request timed out after {0:?} (the cluster may have lost its majority)")]
    Timeout(Duration),
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's role may not do this (see `access`).
    #[error("{0}")]
    PermissionDenied(String),
    /// A watch asked for history that compaction already removed.
    #[error("revision {requested} is compacted; the oldest available revision is {oldest}")]
    Compacted {
        /// Revision the caller asked for.
        requested: i64,
        /// Oldest revision still available.
        oldest: i64,
    },
    /// The node is shutting down or was removed from the cluster.
    #[error("this node is stopping")]
    Stopped,
    /// This node's disk is full: it refuses work until space returns and
    /// it has started over from its files (other nodes keep serving).
    #[error("this agenda-db node's disk is full ({0}); it serves again once space returns")]
    DiskFull(String),
    /// The node's queue of client work is full: refused at once rather
    /// than queued without bound. Not retried here; the caller backs off.
    #[error("this agenda-db node is overloaded ({0} requests queued); retry shortly")]
    Overloaded(usize),
    /// Start-up configuration is unusable (wrong flags, foreign data dir).
    #[error("{0}")]
    Config(String),
    /// The node cannot go on (its raft thread died).
    #[error("{0}")]
    Fatal(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.into())
            }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

impl From<protobuf::ProtobufError> for Error {
    fn from(e: protobuf::ProtobufError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

impl Error {
    /// Whether this is the disk running out of space (the node then
    /// starts over once there is room, instead of exiting).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull(_) => true,
            Error::Storage(redb::Error::Io(e)) => e.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    /// True when retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NoLeader | Error::Timeout(_) | Error::Stopped)
    }

    /// Short machine-readable code, shared by the gRPC and REST faces.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::NotFound(_) => "not_found",
            Error::FailedPrecondition(_) => "failed_precondition",
            Error::PermissionDenied(_) => "permission_denied",
            Error::Compacted { .. } => "compacted",
            Error::NoLeader
            | Error::Timeout(_)
            | Error::Stopped
            | Error::Overloaded(_)
            | Error::DiskFull(_) => "unavailable",
            Error::Config(_) => "config",
            Error::Fatal(_) => "internal",
            Error::Storage(_) | Error::Io(_) | Error::Corrupt(_) | Error::Raft(_) => "internal",
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        match &e {
            Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            Error::NotFound(m) => Status::not_found(m.clone()),
            Error::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
            Error::PermissionDenied(m) => Status::permission_denied(m.clone()),
            Error::Compacted { .. } => Status::out_of_range(e.to_string()),
            // Over the queue's bound: with the retry hint every server
            // gives when it refuses work (callers wait, not hop nodes).
            Error::Overloaded(_) => agenda_common::admission::overloaded_because(e.to_string()),
            Error::NoLeader | Error::Timeout(_) | Error::Stopped | Error::DiskFull(_) => {
                Status::unavailable(e.to_string())
            }
            Error::Config(_)
            | Error::Fatal(_)
            | Error::Storage(_)
            | Error::Io(_)
            | Error::Corrupt(_)
            | Error::Raft(_) => {
                tracing::error!(error = %e, "internal error while serving a request");
                Status::internal("internal error; see the node's log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_refused_with_the_retry_hint_and_other_unavailability_without() {
        let full = tonic::Status::from(Error::Overloaded(8));
        assert!(agenda_common::admission::is_overloaded(&full), "{full:?}");
        assert!(full.message().contains('8'), "{}", full.message());
        let no_leader = tonic::Status::from(Error::NoLeader);
        assert_eq!(no_leader.code(), tonic::Code::Unavailable);
        assert!(!agenda_common::admission::is_overloaded(&no_leader));
    }
}
