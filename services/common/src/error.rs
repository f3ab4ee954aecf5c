//! Errors of the shared client code.

/// What a call to agenda-db (or the registry) can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// agenda-db (no node answered in time: no leader, partition, all
    /// down) or Redis is unavailable; the message says which.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused as malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named thing does not exist (e.g. an expired lease).
    #[error("not found: {0}")]
    NotFound(String),
    /// The state does not allow the request.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A watch or read asked for compacted history.
    #[error("compacted: {0}")]
    Compacted(String),
    /// This caller's role may not do that (agenda-db over TLS).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Anything else the server reported.
    #[error("agenda-db error: {0}")]
    Internal(String),
    /// Bad client configuration (e.g. an endpoint that is not a URL).
    #[error("configuration: {0}")]
    Config(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the same call may succeed later or on another node.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => Error::InvalidArgument(msg),
            Code::NotFound => Error::NotFound(msg),
            Code::FailedPrecondition | Code::AlreadyExists => Error::FailedPrecondition(msg),
            // agenda-db says OutOfRange for compacted history only; tonic
            // says it too for an answer over the message size limit, which
            // retrying from a newer revision would never fix.
            Code::OutOfRange if msg.contains("is compacted") => Error::Compacted(msg),
            Code::OutOfRange => Error::Internal(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                Error::Unavailable(msg)
            }
            // Our servers never answer Unknown: tonic gives it to failures
            // of the link itself (connection refused or reset, a TLS
            // session or HTTP/2 stream cut, as a partition does), whose
            // messages vary. A call that met one may succeed elsewhere.
            Code::Unknown => Error::Unavailable(msg),
            // tonic makes Internal of an HTTP/2 stream reset or GOAWAY
            // (NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR...: what a link cut
            // while a partition heals gives) and keeps the h2 error as the
            // status's source; a status our servers send carries none.
            Code::Internal if std::error::Error::source(&s).is_some() => Error::Unavailable(msg),
            // A connection's cap of requests at once (tower's load shed):
            // busy, not broken.
            Code::ResourceExhausted => Error::Unavailable(msg),
            _ => Error::Internal(format!("{:?}: {msg}", s.code())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_failures_are_unavailable_and_server_faults_are_not() {
        for msg in [
            "transport error",
            "h2 protocol error: stream reset",
            "tls: eof",
        ] {
            let e = Error::from(tonic::Status::unknown(msg));
            assert!(e.is_retryable(), "{msg}: {e:?}");
        }
        assert!(!Error::from(tonic::Status::internal("see the node's log")).is_retryable());
        let mut reset = tonic::Status::internal("h2 protocol error: stream no longer needed");
        reset.set_source(std::sync::Arc::new(std::io::Error::other("RST_STREAM")));
        assert!(
            Error::from(reset).is_retryable(),
            "a reset stream is the link's"
        );
        assert!(Error::from(tonic::Status::resource_exhausted(
            "too many active requests"
        ))
        .is_retryable());
        assert!(matches!(
            Error::from(tonic::Status::not_found("lease")),
            Error::NotFound(_)
        ));
    }

    #[test]
    fn only_compacted_history_reads_as_compacted() {
        assert!(matches!(
            Error::from(tonic::Status::out_of_range(
                "revision 5 is compacted; the oldest available revision is 9"
            )),
            Error::Compacted(_)
        ));
        // tonic's own OutOfRange: an answer over the size limit.
        let big = Error::from(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 86000000 bytes, the limit is: 67108864 bytes",
        ));
        assert!(matches!(big, Error::Internal(_)), "{big:?}");
        assert!(!big.is_retryable());
    }
}
