//! The users service's operations: accounts, login, personal events,
//! free/busy and notifications, each a call into the shared store.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use agenda_calendar::api::{LoginReply, Op};
use agenda_calendar::events::{view, with_conflicts, with_conflicts_at};
use agenda_calendar::model::UserRecord;
use agenda_calendar::store::sessions::{RefreshToken, REFRESH_TTL};
use agenda_calendar::store::users::NewUser;
use agenda_calendar::store::Store;
use agenda_calendar::{validate, ApiError, ApiResult};
use agenda_common::auth::SigningKeys;
use agenda_serving::{Caller, Handler, Reply};

use crate::listings::{self, Listings};
use crate::password;

/// The users service.
pub struct Users {
    pub store: Store,
    /// Follows the signing keys (rotation without a restart).
    pub keys: tokio::sync::watch::Receiver<SigningKeys>,
    pub token_ttl_secs: u64,
    /// How long CalDAV calendars remember deletions.
    pub dav_history: std::time::Duration,
    /// Week views answered, to answer again (see `listings`).
    pub listings: Listings,
}

const BAD_LOGIN: &str = "unknown user or wrong password";

impl Users {
    /// The answer of a login or a refresh: a short-lived access token at
    /// the person's session `generation`, and the next refresh token.
    fn session_reply(
        &self,
        user: &UserRecord,
        generation: u64,
        refresh: RefreshToken,
    ) -> ApiResult<LoginReply> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(ApiError::internal)?
            .as_secs();
        let access_token = self
            .keys
            .borrow()
            .issue_at_generation(
                &user.id.to_string(),
                &user.username,
                generation,
                now,
                self.token_ttl_secs,
            )
            .map_err(ApiError::internal)?;
        Ok(LoginReply {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.token_ttl_secs,
            refresh_token: refresh.to_string(),
            refresh_expires_in: REFRESH_TTL.as_secs(),
            user: user.view_own(),
        })
    }
}

impl Users {
    /// `GET /v1/events?from&to`, answered again from [`Listings`] while
    /// the person's agenda version has not moved (see `listings`).
    async fn week_view(
        &self,
        me: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<Reply> {
        let key = (me, from, to);
        let kept = self.listings.get(&key);
        if let Some(kept) = &kept {
            if self.store.agenda_revision(me).await? == kept.version {
                listings::count("hit");
                return Ok(Reply {
                    status: 200,
                    body: kept.body.to_vec(),
                });
            }
        }
        listings::count(if kept.is_some() { "stale" } else { "miss" });
        let (version, events) = self.store.list_events_versioned(me, from, to).await?;
        let reply = Reply::items(events)?;
        self.listings.put(key, version, &reply.body);
        Ok(reply)
    }
}

impl Handler for Users {
    async fn handle(&self, caller: Caller, op: Op) -> ApiResult<Reply> {
        let s = &self.store;
        match op {
            Op::Register(req) => {
                let new = NewUser::check(req)?;
                let hash = password::hash(new.password.clone()).await?;
                Reply::created(s.create_user(new, hash).await?.view_own())
            }
            Op::Login(req) => {
                let login = match (&req.username, &req.email) {
                    (Some(u), None) => u.clone(),
                    (None, Some(e)) => e.clone(),
                    _ => {
                        return Err(ApiError::invalid_field(
                            "username",
                            "give either username or email",
                        ))
                    }
                };
                // An unknown name costs the same argon2 work as a wrong
                // password: timing must not tell which accounts exist.
                let user = s.find_login(&login).await?;
                let hash = user.as_ref().map(|u| u.password_hash.clone());
                let matched = password::verify_or_pretend(req.password, hash).await?;
                let Some(user) = user.filter(|_| matched) else {
                    return Err(ApiError::unauthenticated(BAD_LOGIN));
                };
                let (generation, _) = s.session_generation(user.id).await?;
                let refresh = s.start_refresh_chain(&user, generation).await?;
                Reply::ok(self.session_reply(&user, generation, refresh)?)
            }
            Op::Refresh {
                refresh_token,
                idempotency_key,
            } => {
                let r = s
                    .refresh(&refresh_token, idempotency_key.as_deref())
                    .await?;
                Reply::ok(self.session_reply(&r.user, r.generation, r.refresh_token)?)
            }
            Op::Logout(req) => {
                let me = caller.user()?;
                match (req.everywhere.unwrap_or(false), &req.refresh_token) {
                    (true, _) => s.end_sessions(me).await?,
                    (false, Some(token)) => s.end_refresh_chain(me, token).await?,
                    (false, None) => {
                        return Err(ApiError::invalid_field(
                            "refresh_token",
                            "give the refresh_token of the session to end, or everywhere: true",
                        ))
                    }
                }
                Reply::no_content()
            }
            Op::GetMe => Reply::ok(s.me(caller.user()?).await?.view_own()),
            Op::Audit(q) => Reply::ok(s.audit_page(caller.user()?, q).await?),
            Op::UpdateMe(req) => {
                let hash = match &req.password {
                    Some(p) => {
                        let new = validate::password(p)?;
                        let Some(current) = req.current_password.clone() else {
                            return Err(ApiError::invalid_field(
                                "current_password",
                                "give your current password to change it",
                            ));
                        };
                        let me = s.me(caller.user()?).await?;
                        if !password::verify(current, me.password_hash.clone()).await? {
                            return Err(ApiError::forbidden("the current password is wrong"));
                        }
                        Some(password::hash(new).await?)
                    }
                    None => None,
                };
                Reply::ok(s.update_user(caller.user()?, req, hash).await?.view_own())
            }
            Op::DeleteMe => {
                s.delete_user(caller.user()?).await?;
                Reply::no_content()
            }
            Op::SearchUsers { q } => {
                let me = caller.user()?;
                let found = s.search_users(&q).await?;
                Reply::items(
                    found
                        .iter()
                        .map(|u| {
                            if u.id == me {
                                u.view_own()
                            } else {
                                u.view_public()
                            }
                        })
                        .collect(),
                )
            }
            Op::CreateEvent {
                body,
                reject,
                idempotency_key,
            } => {
                let me = caller.user()?;
                let (ev, conflicts) = s
                    .create_event(me, body, reject, idempotency_key.as_deref())
                    .await?;
                Reply::created(with_conflicts(&ev, me, conflicts))
            }
            Op::ListEvents { window } => {
                let me = caller.user()?;
                let (from, to) = validate::window(window.from.as_deref(), window.to.as_deref())?;
                self.week_view(me, from, to).await
            }
            Op::SearchEvents { q, window } => {
                let me = caller.user()?;
                let (from, to) = validate::window(window.from.as_deref(), window.to.as_deref())?;
                Reply::items(s.search_events(me, &q, from, to).await?)
            }
            Op::GetEvent { id } => {
                let me = caller.user()?;
                match validate::event_ref(&id)? {
                    (id, None) => Reply::ok(view(&s.event_to_view(me, id).await?.value, me, None)),
                    (id, Some(original)) => {
                        let (ev, occ) = s.occurrence_to_view(me, id, original).await?;
                        Reply::ok(view(&ev, me, Some(occ)))
                    }
                }
            }
            Op::UpdateEvent {
                id,
                body,
                reject,
                scope,
            } => {
                let me = caller.user()?;
                let following = validate::scope(scope.as_deref())?;
                match validate::event_ref(&id)? {
                    (id, None) => {
                        let (ev, conflicts) = s.update_event(me, id, body, reject).await?;
                        Reply::ok(with_conflicts(&ev, me, conflicts))
                    }
                    (id, Some(original)) => {
                        let (ev, occ, conflicts) = s
                            .update_occurrence(me, id, original, following, body, reject)
                            .await?;
                        Reply::ok(with_conflicts_at(&ev, me, occ, conflicts))
                    }
                }
            }
            Op::DeleteEvent { id, scope } => {
                let me = caller.user()?;
                let following = validate::scope(scope.as_deref())?;
                match validate::event_ref(&id)? {
                    (id, None) => s.delete_event(me, id).await?,
                    (id, Some(original)) => {
                        s.delete_occurrence(me, id, original, following).await?
                    }
                }
                Reply::no_content()
            }
            Op::SetReminders { id, body } => {
                let me = caller.user()?;
                let ev = s
                    .set_reminders(me, validate::id("event", &id)?, &body.minutes_before)
                    .await?;
                Reply::ok(view(&ev, me, None))
            }
            Op::Rsvp { id, body, reject } => {
                let me = caller.user()?;
                let status = validate::rsvp(&body.status)?;
                let (ev, conflicts) = s
                    .rsvp(me, validate::id("event", &id)?, status, reject)
                    .await?;
                Reply::ok(with_conflicts(&ev, me, conflicts))
            }
            Op::FreeBusy { users, window } => {
                caller.user()?;
                let (from, to) = validate::window(window.from.as_deref(), window.to.as_deref())?;
                let names: Vec<String> = users
                    .split(',')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect();
                if names.is_empty() || names.len() > 50 {
                    return Err(ApiError::invalid_field(
                        "users",
                        "users must list 1 to 50 usernames, comma-separated",
                    ));
                }
                Reply::ok(
                    serde_json::json!({ "users": s.free_busy(caller.user()?, &names, from, to).await? }),
                )
            }
            Op::ListNotifications {
                unread,
                limit,
                before,
            } => {
                let before = before
                    .as_deref()
                    .map(|b| {
                        uuid::Uuid::parse_str(b).map_err(|_| {
                            ApiError::invalid_field("before", "before must be the next of a page")
                        })
                    })
                    .transpose()?;
                let limit = match limit {
                    None => agenda_calendar::store::notifications::LIST_LIMIT,
                    Some(l @ 1..=200) => l as usize,
                    Some(_) => {
                        return Err(ApiError::invalid_field("limit", "limit is 1 to 200"));
                    }
                };
                let (items, next) = s
                    .notifications(caller.user()?, unread, limit, before)
                    .await?;
                Reply::ok(serde_json::json!({ "items": items, "next": next }))
            }
            Op::ReadAllNotifications => {
                Reply::ok(serde_json::json!({ "marked": s.mark_all_read(caller.user()?).await? }))
            }
            Op::NotificationsAfter { after } => {
                let after = match after.as_deref() {
                    None | Some("") => None,
                    Some(a) => Some(uuid::Uuid::parse_str(a).map_err(|_| {
                        ApiError::invalid_field("last_id", "last_id must be a notification id")
                    })?),
                };
                Reply::items(s.notifications_after(caller.user()?, after).await?)
            }
            Op::ReadNotification { id } => Reply::ok(
                s.mark_read(caller.user()?, validate::id("notification", &id)?)
                    .await?,
            ),
            op @ (Op::CreateFeed { .. }
            | Op::Feed { .. }
            | Op::ImportEvents { .. }
            | Op::CreateAppPassword(_)
            | Op::ListAppPasswords
            | Op::DeleteAppPassword { .. }
            | Op::CheckAppPassword { .. }
            | Op::Dav(_)) => self.calendar_apps(caller, op).await,
            other => Err(ApiError::bad_request(format!(
                "operation {:?} is not served by agenda-users",
                other.service()
            ))),
        }
    }
}
