//! How `agenda-users` and `agenda-groups` serve the gateway: both accept a
//! `CallRequest` carrying an [`Op`](agenda_calendar::api::Op) as JSON and
//! answer with an HTTP status and JSON body, which the gateway relays.
//! Kept out of the calendar domain, which does no serving.
//!
//! Layout:
//! - [`handler`]: what a service implements ([`Handler`]), for whom
//!   ([`Caller`]) and what it answers ([`Reply`]).
//! - [`endpoint`]: the gRPC envelope around a handler: the call decoded,
//!   its answer (or error) encoded, the call logged.
//! - [`server`]: the serving loop: listen (with the admission caps of
//!   `--max-concurrent-requests` and `--max-connections`), register in the
//!   registry once agenda-db answers, deregister and drain on shutdown.
//! - [`metrics`]: calls served by operation, for `/metrics`.
//! - [`sweep`]: background rounds that finish work a stopped process left
//!   halfway and fire reminders.
//! - [`error`]: why a replica could not serve.
#![deny(missing_docs)]

pub mod endpoint;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod server;
pub mod sweep;

pub use error::Error;
pub use handler::{Caller, Handler, Reply};
pub use server::{serve, serve_http, start, Serving, Started, DRAIN_GRACE, REGISTRY_TTL};
