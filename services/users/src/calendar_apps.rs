//! The users service's part in calendar apps: iCalendar feeds and
//! imports, app passwords, and the CalDAV operations the gateway
//! translates from WebDAV. Each is a call into the shared store.

use agenda_calendar::api::{DavOp, Op};
use agenda_calendar::store::dav::Calendar;
use agenda_calendar::{validate, ApiError, ApiResult};
use agenda_serving::{Caller, Reply};
use serde_json::json;

use crate::handler::Users;

impl Users {
    /// Serves one of the calendar-app operations (the others are refused).
    pub(crate) async fn calendar_apps(&self, caller: Caller, op: Op) -> ApiResult<Reply> {
        let s = &self.store;
        match op {
            Op::CreateFeed { group_id } => {
                let group = group_id
                    .as_deref()
                    .map(|g| validate::id("group", g))
                    .transpose()?;
                let key = s.create_feed(caller.user()?, group).await?;
                // The gateway makes it absolute (it knows the host asked).
                Reply::created(json!({ "path": format!("/v1/calendar.ics?key={key}") }))
            }
            Op::Feed { key } => {
                let feed = s.feed(&key).await?;
                Reply::ok(json!({ "name": feed.name, "ics": feed.ics }))
            }
            Op::ImportEvents { ics } => Reply::ok(s.import_events(caller.user()?, &ics).await?),
            Op::CreateAppPassword(req) => {
                Reply::created(s.create_app_password(caller.user()?, &req.name).await?)
            }
            Op::ListAppPasswords => Reply::items(s.app_passwords(caller.user()?).await?),
            Op::DeleteAppPassword { id } => {
                s.delete_app_password(caller.user()?, validate::id("app password", &id)?)
                    .await?;
                Reply::no_content()
            }
            Op::CheckAppPassword { username, password } => {
                let user = s.check_app_password(&username, &password).await?;
                Reply::ok(
                    json!({ "user_id": user.id, "username": user.username, "email": user.email }),
                )
            }
            Op::Dav(d) => self.dav(caller.user()?, d).await,
            other => Err(ApiError::bad_request(format!(
                "operation {other:?} is not a calendar-app operation"
            ))),
        }
    }

    async fn dav(&self, me: uuid::Uuid, op: DavOp) -> ApiResult<Reply> {
        let s = &self.store;
        let history = self.dav_history;
        match op {
            DavOp::Calendars => Reply::items(s.dav_calendars(me).await?),
            DavOp::Sync {
                calendar,
                token,
                data,
            } => Reply::ok(
                s.dav_sync(
                    me,
                    Calendar::parse(&calendar)?,
                    token.as_deref(),
                    data,
                    history,
                )
                .await?,
            ),
            DavOp::Query { calendar, from, to } => Reply::items(
                s.dav_query(
                    me,
                    Calendar::parse(&calendar)?,
                    from.as_deref(),
                    to.as_deref(),
                    history,
                )
                .await?,
            ),
            DavOp::Get { calendar, names } => {
                Reply::items(s.dav_get(me, Calendar::parse(&calendar)?, &names).await?)
            }
            DavOp::Put {
                calendar,
                name,
                ics,
                if_match,
                if_none_match,
            } => {
                let w = s
                    .dav_put(
                        me,
                        Calendar::parse(&calendar)?,
                        &name,
                        &ics,
                        if_match.as_deref(),
                        if_none_match,
                    )
                    .await?;
                if w.created {
                    Reply::created(w)
                } else {
                    Reply::ok(w)
                }
            }
            DavOp::Delete {
                calendar,
                name,
                if_match,
            } => {
                s.dav_delete(me, Calendar::parse(&calendar)?, &name, if_match.as_deref())
                    .await?;
                Reply::no_content()
            }
        }
    }
}
