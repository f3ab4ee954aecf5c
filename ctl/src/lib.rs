//! `agendactl`: the operator's tool, like `etcdctl`, and a terminal
//! calendar for people, like `gcalcli`.
//!
//! Layout:
//! - [`backup`]: `agendactl snapshot save|restore`, backups of agenda-db.
//! - [`calendar`]: the terminal calendar for people (`login`, `agenda`,
//!   `event add`, `invitations`, `rsvp`, `logout`) over the public API.
//! - [`certs`]: `agendactl certs`, the development CA and a certificate
//!   per process.
//! - [`endpoints`]: `.agenda/endpoints.json`, what `make run` started.
//! - [`netns`]: sockets made inside a network namespace (the two-machine
//!   topology's machines are namespaces the host cannot route to).
//! - [`http`]: a minimal HTTP/1.1 GET over such a socket.
//! - [`prometheus`]: `agendactl prometheus-config`, Prometheus scraping
//!   every process of endpoints.json.
//! - [`slo`]: `agendactl slo`, seed 000's SLO table from Prometheus.
//! - [`status`]: `agendactl status`, one table of the whole system.
//! - [`relay`]: `agendactl relay`, the host's loopback port relayed to
//!   the VIP from inside the client namespace.
//! - [`error`]: the crate's error type.
#![deny(missing_docs)]

pub mod backup;
pub mod calendar;
pub mod certs;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod netns;
pub mod prometheus;
pub mod relay;
pub mod slo;
pub mod status;
