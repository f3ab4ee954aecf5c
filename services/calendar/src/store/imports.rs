//! iCalendar files into a person's agenda (`POST /v1/events/import`):
//! every event through the same creation as the JSON API, made safe to
//! repeat by its UID (the event id is derived from it, as for an
//! idempotency key), so importing a file twice changes nothing.

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Store;
use crate::api::CreateEventRequest;
use crate::error::ApiResult;
use crate::events::{Idempotent, Origin};
use crate::ical::{self, Parsed, Skipped};
use crate::keys;
use crate::model::{EventRecord, ExternalAttendee};

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// How many events were created.
    pub imported: usize,
    /// The events created: their UID in the file and their id here.
    pub events: Vec<ImportedEvent>,
    /// The events left out, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportedEvent {
    pub uid: String,
    pub id: Uuid,
    /// Something of it could not be kept (an alarm at a fixed time or
    /// after the start, an RDATE, a property of a changed occurrence).
    pub partial: bool,
}

/// Events of one file created at once.
const IN_FLIGHT: usize = 8;

/// The idempotency key an import of `uid` creates under.
fn import_key(uid: &str) -> String {
    format!("ical:{uid}")
}

impl Store {
    /// Imports every event of `text` into `caller`'s agenda.
    pub async fn import_events(&self, caller: Uuid, text: &str) -> ApiResult<ImportReport> {
        let me = self.me(caller).await?;
        let parsed = ical::parse(text, &me.time_zone)?;
        let mut report = ImportReport {
            imported: 0,
            events: Vec::new(),
            skipped: Vec::new(),
        };
        // Several at once (they touch different records; the caller's
        // costly-step queue of `cpu` holds 16): a big file stays well
        // within one request's deadline.
        let outcomes: Vec<ApiResult<Result<ImportedEvent, Skipped>>> =
            futures::stream::iter(parsed.into_iter().map(|p| self.import_one(caller, p)))
                .buffered(IN_FLIGHT)
                .collect()
                .await;
        for o in outcomes {
            match o? {
                Ok(e) => {
                    report.imported += 1;
                    report.events.push(e);
                }
                Err(s) => report.skipped.push(s),
            }
        }
        Ok(report)
    }

    /// One event of a file: created, or skipped with the reason.
    async fn import_one(
        &self,
        caller: Uuid,
        parsed: Result<Parsed, Skipped>,
    ) -> ApiResult<Result<ImportedEvent, Skipped>> {
        let p = match parsed {
            Ok(p) => p,
            Err(s) => return Ok(Err(s)),
        };
        let uid = p.uid.clone();
        let key = import_key(&uid);
        let id = Idempotent::id_for(caller, &key);
        if self.get::<EventRecord>(&keys::event(id)).await?.is_some() {
            return Ok(Err(Skipped {
                uid,
                reason: format!("already imported (event {id})"),
            }));
        }
        let partial = p.lossy;
        let (req, origin) = self.request_of(caller, p, None, false).await?;
        match self
            .create_event_from(caller, req, false, Some(&key), Some(&origin))
            .await
        {
            Ok((ev, _)) => Ok(Ok(ImportedEvent {
                uid,
                id: ev.id,
                partial,
            })),
            Err(e) if e.kind.is_refusal() => Ok(Err(Skipped {
                uid,
                reason: match e.details.get("field").and_then(|f| f.as_str()) {
                    Some(f) => format!("{f}: {}", e.message),
                    None => e.message,
                },
            })),
            Err(e) => Err(e),
        }
    }

    /// The creation request and origin of a parsed event (`client`: what
    /// a CalDAV client wrote, which states the writer's alarms outright): attendees with
    /// an account here (by email) become attendees, the rest stay
    /// external; the caller is never their own attendee.
    pub(crate) async fn request_of(
        &self,
        caller: Uuid,
        p: Parsed,
        dav_name: Option<String>,
        client: bool,
    ) -> ApiResult<(CreateEventRequest, Origin)> {
        let (names, external) = self.attendees_by_email(caller, p.attendees).await?;
        let mut req = p.request;
        req.attendees = (!names.is_empty()).then_some(names);
        // A CalDAV client says the reminders outright (no alarm: none); a
        // file only adds them.
        let reminders = if client || !p.reminders.is_empty() {
            Some(p.reminders)
        } else {
            None
        };
        let origin = Origin {
            uid: p.uid,
            dav_name,
            external,
            overrides: p.overrides,
            cancelled: p.cancelled,
            extra: p.extra,
            reminders,
        };
        Ok((req, origin))
    }

    /// Splits attendees into usernames of accounts here and the rest.
    /// People here are known by their address here (what calendars show
    /// of them, [`crate::ical::address_of`]); an email never names an
    /// account (but the caller's own), so a file cannot probe which
    /// emails have one.
    async fn attendees_by_email(
        &self,
        caller: Uuid,
        list: Vec<ExternalAttendee>,
    ) -> ApiResult<(Vec<String>, Vec<ExternalAttendee>)> {
        let me = self.me(caller).await?;
        let mut names = Vec::new();
        let mut external = Vec::new();
        for a in list {
            if crate::ical::is_address_of(&a.email, &me.username, &me.email) {
                continue;
            }
            let here = match crate::ical::username_in(&a.email) {
                Some(name) => self.user_by_name(name).await?,
                None => None,
            };
            match here {
                Some(u) if !names.contains(&u.username) => names.push(u.username),
                Some(_) => {}
                // Someone elsewhere, or a name no longer here.
                None => external.push(a),
            }
        }
        Ok((names, external))
    }
}
