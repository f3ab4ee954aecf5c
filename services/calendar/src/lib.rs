//! The calendar domain, shared by `agenda-users` and `agenda-groups` so no
//! rule is written twice.
//!
//! Layout:
//! - [`model`]: stored records and the public resource shapes.
//! - [`api`]: request bodies and the [`api::Op`]erations the gateway sends.
//! - [`audit`]: the audit log's entries.
//! - [`error`]: [`ApiError`] and its [`ErrorKind`], the one error shape of
//!   the public API.
//! - [`validate`], [`recurrence`], [`rules`] (hierarchy, invitations,
//!   conflicts, privacy and who may do what), [`events`] (an event built,
//!   changed, answered, announced and shown), [`reminders`] (when each
//!   person's reminders are due): pure domain rules.
//! - [`ical`]: iCalendar in and out (feeds, imports, CalDAV resources).
//! - [`cpu`]: where costly steps run, and how many at once.
//! - [`keys`]: the agenda-db key layout.
//! - [`store`]: transactions on agenda-db that apply the rules atomically.
//!
//! Serving the operations is `agenda-serving`'s; relaying notifications to
//! Redis is `agenda-users`'.

pub mod api;
pub mod audit;
pub mod cpu;
pub mod error;
pub mod events;
pub mod ical;
pub mod keys;
pub mod model;
pub mod recurrence;
pub mod reminders;
pub mod rules;
pub mod store;
pub mod validate;

pub use error::{ApiError, ApiResult, ErrorKind};
