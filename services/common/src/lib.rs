//! Code shared by every Agenda process.
//!
//! Layout:
//! - [`admission`]: caps on the requests and connections every server
//!   takes at once; what is over them is refused at once, not queued.
//! - [`args`]: flags every process shares (agenda-db endpoints, log, Redis password).
//! - [`auth`]: access tokens (JWT) and their signing keys in the registry.
//! - [`election`]: one leader at a time through a leased key.
//! - [`bus`]: connections to the current Redis primary (from the registry).
//! - [`db_client`]: the agenda-db client (any node, retries with the same
//!   request id, deadlines, leader failover).
//! - [`registry`]: service registry on top of agenda-db (instances under
//!   leases, config keys, watches).
//! - [`metrics`]: metrics every process exports (build, agenda-db calls,
//!   admission refusals) and the `/metrics` text.
//! - [`net`]: every listener and client link is built here (one place to
//!   switch TLS on for all links).
//! - [`process`]: the shared `main` (logging, runtime, exit code).
//! - [`shutdown`]: SIGINT/SIGTERM fanned out through a cancellation token,
//!   and the waits that give way to it (retrying until agenda-db answers).
//! - [`telemetry`]: logging set-up and the request id a task works for.
//! - [`tls`]: a process's certificate (reloaded when its files change) and
//!   the rustls configurations, mutual on internal links.
//! - [`error`]: the crate's error type.
#![deny(missing_docs)]

pub mod admission;
pub mod args;
pub mod auth;
pub mod bus;
pub mod db_client;
pub mod election;
pub mod error;
pub mod metrics;
pub mod net;
pub mod process;
pub mod registry;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use db_client::DbClient;
pub use error::{Error, Result};
