//! What ends an `agenda-users` or `agenda-groups` process with an error
//! (their `run` returns it; `main` prints it and exits non-zero).

/// Why a replica could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or link could not be set up (`what`: the flag or part).
    #[error("{what}: {cause}")]
    Setup {
        /// The flag or part, e.g. `--db` or `TLS`.
        what: &'static str,
        /// Why.
        cause: agenda_common::Error,
    },
    /// A start-up step against agenda-db failed for good (`what`: the step).
    #[error("{what}: {cause}")]
    Start {
        /// The step, e.g. "loading the JWT signing keys".
        what: &'static str,
        /// Why, as agenda-db or the domain said it.
        cause: String,
    },
    /// The gRPC server failed.
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl Error {
    /// A [`Error::Setup`] maker for `map_err`.
    pub fn setup(what: &'static str) -> impl FnOnce(agenda_common::Error) -> Error {
        move |cause| Error::Setup { what, cause }
    }
}
