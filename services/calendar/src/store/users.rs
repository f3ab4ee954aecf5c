//! Accounts: unique usernames and emails (case-insensitive), profiles.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Attempt, Batch, Read, Store, Versioned};
use crate::api::{RegisterRequest, UpdateMeRequest};
use crate::audit;
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::{AddMe, GroupRecord, UserRecord};
use crate::{rules, validate};
use serde_json::json;

/// An account and the accounts it names, each with its revision.
type People = (Versioned<UserRecord>, Vec<Versioned<UserRecord>>);

/// Most users one search returns.
pub const SEARCH_LIMIT: usize = 50;
/// Most word-index entries one search reads per word of the query.
const SEARCH_CANDIDATES: usize = 4 * SEARCH_LIMIT;
/// Most words of one search whose spans are read (the longest).
const SEARCH_WORDS: usize = 8;

/// Adds to `batch` the entries `user` is found by ([`keys::name_word`],
/// one per word of [`rules::words_of`]).
pub fn index_name_words(batch: &mut Batch, user: &UserRecord) {
    put_name_words(batch, user.id, &rules::words_of(user));
}

/// Adds to `batch` an entry for each of `words` of account `id`.
pub(crate) fn put_name_words(batch: &mut Batch, id: Uuid, words: &BTreeSet<String>) {
    for word in words {
        batch.put_raw(&keys::name_word(word, id), Vec::new());
    }
}

/// An account deletion still marked as under way after this long was
/// interrupted (a live one finishes in seconds); a users replica finishes
/// it (see [`Store::finish_pending_deletions`]).
pub const DELETION_GRACE: Duration = Duration::from_secs(60);

/// The marker of an account deletion under way: written with the account's
/// removal, removed once the last of its events is settled.
#[derive(Debug, Serialize, Deserialize)]
struct PendingDeletion {
    user_id: Uuid,
    since: DateTime<Utc>,
}

/// A registration with its fields checked (the password still in clear,
/// for the caller to hash).
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub time_zone: String,
    pub add_me: AddMe,
}

impl NewUser {
    /// Checks every field of a registration.
    pub fn check(req: RegisterRequest) -> ApiResult<NewUser> {
        let username = validate::username(&req.username)?;
        let display_name = match req.display_name {
            Some(d) => validate::text("display_name", &d, 1, 100)?,
            None => username.clone(),
        };
        let time_zone = match req.time_zone {
            Some(tz) => validate::time_zone("time_zone", &tz)?.name().to_string(),
            None => "UTC".to_string(),
        };
        let add_me = req.add_me.as_deref().map(validate::add_me).transpose()?;
        Ok(NewUser {
            add_me: add_me.unwrap_or_default(),
            email: validate::email(&req.email)?,
            password: validate::password(&req.password)?,
            username,
            display_name,
            time_zone,
        })
    }
}

impl Store {
    /// Creates an account; 409 naming the field if the username or email
    /// is taken (by anyone, on any replica, at the same moment).
    pub async fn create_user(&self, new: NewUser, password_hash: String) -> ApiResult<UserRecord> {
        let user = UserRecord {
            id: Uuid::new_v4(),
            username: new.username,
            email: new.email,
            display_name: new.display_name,
            time_zone: new.time_zone,
            password_hash,
            created_at: Utc::now(),
            add_me: new.add_me,
            admin: false,
        };
        let (name_key, email_key) = (keys::username(&user.username), keys::email(&user.email));
        let mut batch = Batch::default();
        batch
            .unchanged(&name_key, 0)
            .unchanged(&email_key, 0)
            .put(&keys::user(user.id), &user)?
            .put(&name_key, &user.id)?
            .put(&email_key, &user.id)?;
        index_name_words(&mut batch, &user);
        if self.commit(batch).await? {
            return Ok(user);
        }
        if self.revision(&name_key).await? != 0 {
            return Err(ApiError::conflict("this username is already taken")
                .with_details(serde_json::json!({"field": "username"})));
        }
        Err(
            ApiError::conflict("an account with this email already exists")
                .with_details(serde_json::json!({"field": "email"})),
        )
    }

    /// The account with this username or email, if any.
    pub async fn find_login(&self, login: &str) -> ApiResult<Option<UserRecord>> {
        let key = if login.contains('@') {
            keys::email(login.trim())
        } else {
            keys::username(login.trim())
        };
        let Some(id) = self.get::<Uuid>(&key).await? else {
            return Ok(None);
        };
        Ok(self
            .get::<UserRecord>(&keys::user(id.value))
            .await?
            .map(|v| v.value))
    }

    /// An account by id.
    pub async fn user(&self, id: Uuid) -> ApiResult<Option<UserRecord>> {
        Ok(self
            .get::<UserRecord>(&keys::user(id))
            .await?
            .map(|v| v.value))
    }

    /// The caller's own account; a token of a deleted account is refused.
    pub async fn me(&self, id: Uuid) -> ApiResult<UserRecord> {
        self.user(id)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("this account no longer exists"))
    }

    /// The account with this username (not an email), if any.
    pub async fn user_by_name(&self, name: &str) -> ApiResult<Option<UserRecord>> {
        if name.contains('@') {
            return Ok(None);
        }
        self.find_login(name).await
    }

    /// The caller's account and the accounts named `names` (each must
    /// exist: 422 naming `field`), each with its revision, for the
    /// compares that guard a write decided on them. `confirmed`: through
    /// ReadIndex; otherwise as the leader's replica stands (no round), and
    /// the caller confirms a refusal before giving it.
    pub async fn people(
        &self,
        caller: Uuid,
        names: &[String],
        field: &str,
        confirmed: bool,
    ) -> ApiResult<People> {
        let my_key = keys::user(caller);
        let (me, others) = tokio::try_join!(
            self.read::<UserRecord>(&my_key, confirmed),
            futures::future::try_join_all(names.iter().map(|n| self.person(n, field, confirmed)))
        )?;
        let me = me.ok_or_else(|| ApiError::unauthenticated("this account no longer exists"))?;
        Ok((me, others))
    }

    /// The account with the username `name` (422 naming `field` if none).
    async fn person(
        &self,
        name: &str,
        field: &str,
        confirmed: bool,
    ) -> ApiResult<Versioned<UserRecord>> {
        let id = match name.contains('@') {
            true => None,
            false => {
                self.read::<Uuid>(&keys::username(name.trim()), confirmed)
                    .await?
            }
        };
        let user = match id {
            Some(id) => self.read(&keys::user(id.value), confirmed).await?,
            None => None,
        };
        user.ok_or_else(|| ApiError::invalid_field(field, format!("no user named {name:?}")))
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        confirmed: bool,
    ) -> ApiResult<Option<Versioned<T>>> {
        if confirmed {
            self.get(key).await
        } else {
            self.get_unconfirmed(key).await
        }
    }

    /// Accounts by username (each must exist: 422 naming `field`).
    pub async fn users_by_name(&self, names: &[String], field: &str) -> ApiResult<Vec<UserRecord>> {
        let found =
            futures::future::try_join_all(names.iter().map(|n| self.person(n, field, true)))
                .await?;
        Ok(found.into_iter().map(|v| v.value).collect())
    }

    /// Updates the caller's profile; `hash` is the new password's hash.
    pub async fn update_user(
        &self,
        id: Uuid,
        req: UpdateMeRequest,
        hash: Option<String>,
    ) -> ApiResult<UserRecord> {
        let display_name = req
            .display_name
            .map(|d| validate::text("display_name", &d, 1, 100))
            .transpose()?;
        let time_zone = req
            .time_zone
            .map(|tz| validate::time_zone("time_zone", &tz).map(|t| t.name().to_string()))
            .transpose()?;
        let email = req.email.map(|e| validate::email(&e)).transpose()?;
        let add_me = req.add_me.as_deref().map(validate::add_me).transpose()?;
        self.optimistic("profile", || async {
            let key = keys::user(id);
            let Some(cur) = self.get::<UserRecord>(&key).await? else {
                return Err(ApiError::unauthenticated("this account no longer exists"));
            };
            let mut user = cur.value.clone();
            let mut batch = Batch::default();
            batch.unchanged(&key, cur.mod_revision);
            if let Some(email) = &email {
                if email.to_lowercase() != user.email.to_lowercase() {
                    let new_key = keys::email(email);
                    batch
                        .unchanged(&new_key, 0)
                        .delete(&keys::email(&user.email))
                        .put(&new_key, &id)?;
                }
                user.email = email.clone();
            }
            if let Some(d) = &display_name {
                user.display_name = d.clone();
            }
            if let Some(tz) = &time_zone {
                user.time_zone = tz.clone();
            }
            if let Some(h) = &hash {
                user.password_hash = h.clone();
                // A new password ends every session, this one included.
                super::sessions::end_all_sessions(&mut batch, id, false);
                audit::add(
                    &mut batch,
                    Some(id),
                    &user.username,
                    "password_changed",
                    json!({}),
                )?;
            }
            if let Some(a) = add_me {
                user.add_me = a;
            }
            // A new display name: the words it is found by follow. Every
            // word is written (not only the new ones), so an account that
            // a replica of layout 5 registered without them has them all.
            let (was, now) = (rules::words_of(&cur.value), rules::words_of(&user));
            for word in was.difference(&now) {
                batch.delete(&keys::name_word(word, id));
            }
            put_name_words(&mut batch, id, &now);
            batch.put(&key, &user)?;
            if self.commit(batch).await? {
                return Ok(Attempt::Done(user));
            }
            if let Some(e) = &email {
                let owner = self.get::<Uuid>(&keys::email(e)).await?;
                if owner.is_some_and(|o| o.value != id) {
                    return Err(
                        ApiError::conflict("an account with this email already exists")
                            .with_details(serde_json::json!({"field": "email"})),
                    );
                }
            }
            Ok(Attempt::Retry)
        })
        .await
    }

    /// Deletes the caller's account, their memberships, events and
    /// notifications. An owner must hand their groups over first (409).
    /// The events they organized are cancelled for everyone; the ones they
    /// attend go on without them.
    ///
    /// The account goes in one transaction with a marker; the events follow
    /// one at a time, and the marker goes with the last of them. The
    /// second part runs detached, so a caller who hangs up does not stop
    /// it halfway; if the process dies halfway, a users replica finishes it
    /// later from the marker.
    pub async fn delete_user(&self, id: Uuid) -> ApiResult<()> {
        self.delete_account(id).await?;
        let store = self.clone();
        tokio::spawn(async move { store.finish_deletion(id).await })
            .await
            .map_err(ApiError::internal)?
    }

    /// Finishes the account deletions that were interrupted: those marked
    /// as under way for longer than `older_than`. Returns how many.
    pub async fn finish_pending_deletions(&self, older_than: Duration) -> ApiResult<usize> {
        let cutoff = Utc::now() - older_than;
        let mut finished = 0;
        for pending in self.list::<PendingDeletion>(keys::DELETING).await? {
            let p = pending.value;
            if p.since > cutoff {
                continue;
            }
            tracing::info!(user = %p.user_id, since = %p.since, "finishing an interrupted account deletion");
            self.finish_deletion(p.user_id).await?;
            finished += 1;
        }
        Ok(finished)
    }

    /// The events of a deleted account, then its marker. Safe to run again
    /// or twice at once: each event is decided like any other change of
    /// it, and one the person no longer takes part in is skipped.
    async fn finish_deletion(&self, id: Uuid) -> ApiResult<()> {
        // The account is gone, so nobody can add this person to anything
        // now (a write naming them compares their account record).
        for kv in self.keys(&keys::agenda(id), 0).await? {
            if let Some(event) = keys::last_id(&kv.key) {
                self.leave_event(id, event).await?;
            }
        }
        let mut rest = Batch::default();
        rest.delete_prefix(&keys::agenda(id))
            .bump(&keys::agenda_version(id))
            .delete(&keys::deleting(id));
        self.commit(rest).await?;
        Ok(())
    }

    async fn delete_account(&self, id: Uuid) -> ApiResult<()> {
        self.optimistic("account", || async {
            let key = keys::user(id);
            let Some(user) = self.get::<UserRecord>(&key).await? else {
                return Err(ApiError::unauthenticated("this account no longer exists"));
            };
            let groups = self.keys(&keys::user_groups(id), 0).await?;
            let mut batch = Batch::default();
            batch.unchanged(&key, user.mod_revision);
            for kv in &groups {
                let Some(gid) = keys::last_id(&kv.key) else {
                    continue;
                };
                if let Some(g) = self.get::<GroupRecord>(&keys::group(gid)).await? {
                    rules::check_account_may_leave(&g.value, id)?;
                }
                batch
                    .delete(&keys::member(gid, id))
                    .bump(&keys::group_version(gid));
            }
            batch
                .delete(&key)
                .delete(&keys::username(&user.value.username))
                .delete(&keys::email(&user.value.email))
                .delete_prefix(&keys::user_groups(id))
                .delete_prefix(&keys::notifications(id));
            for word in rules::words_of(&user.value) {
                batch.delete(&keys::name_word(&word, id));
            }
            self.forget_calendar_apps(&mut batch, id).await?;
            super::sessions::end_all_sessions(&mut batch, id, true);
            audit::add(
                &mut batch,
                Some(id),
                &user.value.username,
                "account_deleted",
                json!({"email": user.value.email}),
            )?;
            batch.put(
                &keys::deleting(id),
                &PendingDeletion {
                    user_id: id,
                    since: Utc::now(),
                },
            )?;
            self.commit_or_retry(batch, ()).await
        })
        .await
    }

    /// Grants (or revokes) the administrator role to the account `name`,
    /// as `by` (who the audit log names: the operator's tool).
    pub async fn set_admin(&self, name: &str, admin: bool, by: &str) -> ApiResult<UserRecord> {
        let found = self
            .user_by_name(name)
            .await?
            .ok_or_else(|| ApiError::not_found(&format!("user {name:?}")))?;
        self.optimistic("account", || async {
            let key = keys::user(found.id);
            let Some(cur) = self.get::<UserRecord>(&key).await? else {
                return Err(ApiError::not_found(&format!("user {name:?}")));
            };
            let mut user = cur.value;
            user.admin = admin;
            let mut batch = Batch::default();
            batch.unchanged(&key, cur.mod_revision).put(&key, &user)?;
            let action = if admin {
                "admin_granted"
            } else {
                "admin_revoked"
            };
            audit::add(
                &mut batch,
                None,
                by,
                action,
                json!({"user_id": user.id, "username": user.username}),
            )?;
            self.commit_or_retry(batch, user.clone()).await
        })
        .await
    }

    /// People found by `q`: every word of it begins a word of their
    /// username or display name ([`rules::found_by`]), the first
    /// [`SEARCH_LIMIT`] by username. Reads, for each word of `q` (its
    /// [`SEARCH_WORDS`] longest), the span of the index's words that begin
    /// with it (at most [`SEARCH_CANDIDATES`] entries each), then the
    /// accounts of the smallest: the answer is exact when one word names fewer people
    /// than that, and neither time nor memory grows with the store
    /// (docs/GROWTH.md Found 3; the search read every account).
    pub async fn search_users(&self, q: &str) -> ApiResult<Vec<UserRecord>> {
        if q.trim().is_empty() {
            return Err(ApiError::invalid_field("q", "q must not be empty"));
        }
        let query = rules::search_words(q);
        // Longer than any display name: it begins no one's word (and is
        // not sent to agenda-db as a key). No letter or digit: no word.
        if query.is_empty() || query.iter().any(|w| w.chars().count() > 100) {
            return Ok(Vec::new());
        }
        // The spans of the longest words (the others still filter).
        let mut longest: Vec<&String> = query.iter().collect();
        longest.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
        longest.truncate(SEARCH_WORDS);
        let unguarded = || ApiError::internal("a read without guards was refused");
        let spans = longest
            .iter()
            .map(|word| Read::prefix(&keys::name_words_from(word)).limit(SEARCH_CANDIDATES as i64));
        let snap = self.snapshot(&[], spans).await?.ok_or_else(unguarded)?;
        // The word that names fewest people.
        let ids: BTreeSet<Uuid> = (0..longest.len())
            .map(|i| snap.ids(i))
            .min_by_key(|ids| ids.len())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let accounts = self
            .snapshot(&[], ids.iter().map(|id| Read::key(&keys::user(*id))))
            .await?
            .ok_or_else(unguarded)?;
        let mut out = Vec::new();
        for i in 0..ids.len() {
            // Gone since, or its words changed since: not found.
            if let Some(u) = accounts.value::<UserRecord>(i)? {
                if rules::found_by(&query, &u.value) {
                    out.push(u.value);
                }
            }
        }
        keep_first(&mut out);
        Ok(out)
    }
}

/// The first [`SEARCH_LIMIT`] people by username.
fn keep_first(people: &mut Vec<UserRecord>) {
    people.sort_by(|a, b| a.username.cmp(&b.username));
    people.truncate(SEARCH_LIMIT);
}
