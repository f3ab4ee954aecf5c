//! Sessions: the per-person generation every access token carries, and
//! the refresh tokens of each login (see [`crate::keys::session`] and
//! [`RefreshFamily`]).
//!
//! What ends sessions, and how fast:
//! - a password change, "log out everywhere" and the account's deletion
//!   move the person's generation in the same transaction as the change;
//!   the gateways follow it, so every access token issued before is
//!   refused at once, and every refresh token with it;
//! - a logout ends its own refresh chain (its access token lives out its
//!   short lifetime);
//! - a spent refresh token presented again ends its whole chain (someone
//!   kept a copy), unless it is the repeat of the use that spent it.
//!
//! A repeat: a refresh whose answer was lost (a connection closed as the
//! VIP moved, a replica that died after committing) can be sent again with
//! the same `Idempotency-Key`. A use with a key makes the next secret from
//! the spent one and the key ([`RefreshToken::next_for`]), so the repeat
//! is recognised by the chain's current hash alone and answered with the
//! same next token, for [`REPEAT_WINDOW`] and while the chain has not
//! moved again. Only someone holding both the spent secret and the key
//! gets that answer.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use serde_json::json;

use super::app_passwords::keyed_hash;
use super::{Attempt, Batch, Read, Store};
use crate::audit;
use crate::error::{ApiError, ApiResult};
use crate::keys;
use crate::model::{RefreshFamily, UserRecord};

/// How long a refresh token stays usable without being used.
pub const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest an access token may live (`agenda-users --token-ttl-secs`
/// accepts no more): a week.
pub const MAX_ACCESS_TTL_SECS: u64 = 7 * 24 * 3600;

/// How long a deleted account's session key stays: past the longest an
/// access token lives (and an hour for clocks), so none of the account's
/// tokens is alive to be let through once it is gone.
pub const ENDED_SESSION_KEEP: Duration = Duration::from_secs(MAX_ACCESS_TTL_SECS + 3600);

/// Ended session keys forgotten per transaction.
const FORGET_PAGE: i64 = 200;

/// How long after a use with an idempotency key its repeat is answered.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(300);

const REFUSED: &str = "this refresh token is not valid (log in again)";
const RACED: &str = "this refresh token was used at the same moment by another request";

/// A refresh token as handed out: the family it belongs to and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub family: Uuid,
    secret: String,
}

impl RefreshToken {
    fn fresh(family: Uuid) -> RefreshToken {
        let bytes: [u8; 32] = rand::rng().random();
        RefreshToken {
            family,
            secret: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The token a use of `self` with `idempotency_key` moves the chain
    /// to: the same for every repeat of that use, unknowable without the
    /// secret.
    fn next_for(&self, idempotency_key: &str) -> RefreshToken {
        RefreshToken {
            family: self.family,
            secret: keyed_hash(self.secret.as_bytes(), idempotency_key),
        }
    }

    /// Reads `{family}.{secret}`; anything else is None.
    pub fn parse(s: &str) -> Option<RefreshToken> {
        let (family, secret) = s.split_once('.')?;
        let family = Uuid::parse_str(family).ok()?;
        let ok = secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| RefreshToken {
            family,
            secret: secret.to_string(),
        })
    }

    /// What is stored: only the secret's hash.
    fn hash(&self) -> String {
        Sha256::digest(self.secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl std::fmt::Display for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.family, self.secret)
    }
}

/// What a successful refresh gives: the person, their generation and the
/// next refresh token of the chain.
pub struct Refreshed {
    pub user: UserRecord,
    pub generation: u64,
    pub refresh_token: RefreshToken,
}

/// Adds to `batch` the move of `user`'s generation (and with `deleted`,
/// the mark that the account is gone, filed to be forgotten after
/// [`ENDED_SESSION_KEEP`]).
pub fn end_all_sessions(batch: &mut Batch, user: Uuid, deleted: bool) {
    let value = if deleted {
        batch.put_raw(&keys::ended_session(Utc::now(), user), Vec::new());
        keys::SESSION_DELETED.to_vec()
    } else {
        Vec::new()
    };
    batch.put_raw(&keys::session(user), value);
}

impl Store {
    /// `user`'s session generation now, and whether the account is gone.
    pub async fn session_generation(&self, user: Uuid) -> ApiResult<(u64, bool)> {
        Ok(
            match self.db().get(keys::session(user).into_bytes()).await? {
                Some(kv) => (
                    u64::try_from(kv.version).unwrap_or(0),
                    kv.value == keys::SESSION_DELETED,
                ),
                None => (0, false),
            },
        )
    }

    /// Starts the refresh chain of a login at `generation` (and records
    /// the login).
    pub async fn start_refresh_chain(
        &self,
        user: &UserRecord,
        generation: u64,
    ) -> ApiResult<RefreshToken> {
        let token = RefreshToken::fresh(Uuid::new_v4());
        let family = RefreshFamily {
            user_id: user.id,
            hash: token.hash(),
            generation,
            expires_at: Utc::now() + REFRESH_TTL,
            moved_at: None,
        };
        let key = keys::refresh_family(token.family);
        let mut batch = Batch::default();
        batch.unchanged(&key, 0).put(&key, &family)?;
        audit::add(
            &mut batch,
            Some(user.id),
            &user.username,
            "login",
            json!({"session": token.family}),
        )?;
        if !self.commit(batch).await? {
            return Err(ApiError::internal("a fresh refresh family id was taken"));
        }
        Ok(token)
    }

    /// Uses a refresh token: the chain moves to a new one (of two
    /// concurrent uses one wins, the other is refused). A spent token,
    /// a chain of an older generation or an expired one is 401; a spent
    /// one ends its chain for good, unless this is a repeat (the same
    /// `idempotency_key`) of the use that spent it, which is answered with
    /// the same next token.
    pub async fn refresh(
        &self,
        presented: &str,
        idempotency_key: Option<&str>,
    ) -> ApiResult<Refreshed> {
        let token = RefreshToken::parse(presented.trim())
            .ok_or_else(|| ApiError::unauthenticated(REFUSED))?;
        let key = keys::refresh_family(token.family);
        let next = match idempotency_key {
            Some(k) => token.next_for(k),
            None => RefreshToken::fresh(token.family),
        };
        // Twice at most: a use that lost the race to a concurrent one may
        // have lost it to its own earlier attempt, which the second read
        // shows as a repeat.
        for round in 0..2 {
            let cur = self
                .get::<RefreshFamily>(&key)
                .await?
                .ok_or_else(|| ApiError::unauthenticated(REFUSED))?;
            let family = cur.value;
            let repeat = idempotency_key.is_some()
                && family.hash == next.hash()
                && family.moved_at.is_some_and(|at| {
                    Utc::now() - at <= chrono::Duration::from_std(REPEAT_WINDOW).expect("small")
                });
            if family.hash != token.hash() && !repeat {
                if round > 0 {
                    return Err(ApiError::unauthenticated(RACED));
                }
                return Err(self
                    .end_reused_chain(&token, &key, cur.mod_revision, &family)
                    .await?);
            }
            let (generation, deleted) = self.session_generation(family.user_id).await?;
            if deleted || generation != family.generation || family.expires_at <= Utc::now() {
                return Err(ApiError::unauthenticated(REFUSED));
            }
            let user = self
                .get::<UserRecord>(&keys::user(family.user_id))
                .await?
                .ok_or_else(|| ApiError::unauthenticated(REFUSED))?;
            if repeat {
                return Ok(Refreshed {
                    user: user.value,
                    generation,
                    refresh_token: next,
                });
            }
            let moved = RefreshFamily {
                hash: next.hash(),
                expires_at: Utc::now() + REFRESH_TTL,
                moved_at: idempotency_key.map(|_| Utc::now()),
                ..family
            };
            // Both as read: the chain not moved by a concurrent use, the
            // generation not moved by a password change meanwhile.
            let mut batch = Batch::default();
            batch
                .unchanged(&key, cur.mod_revision)
                .at_version(&keys::session(user.value.id), generation as i64)
                .put(&key, &moved)?;
            audit::add(
                &mut batch,
                Some(user.value.id),
                &user.value.username,
                "token_refreshed",
                json!({"session": token.family}),
            )?;
            if self.commit(batch).await? {
                return Ok(Refreshed {
                    user: user.value,
                    generation,
                    refresh_token: next,
                });
            }
            if idempotency_key.is_none() {
                break;
            }
        }
        Err(ApiError::unauthenticated(RACED))
    }

    /// A spent token was presented (or one made up by someone who knows
    /// the family id, which only a token of it shows): the chain is
    /// compromised and ends. Returns the refusal to give.
    async fn end_reused_chain(
        &self,
        token: &RefreshToken,
        key: &str,
        revision: i64,
        family: &RefreshFamily,
    ) -> ApiResult<ApiError> {
        let mut batch = Batch::default();
        batch.unchanged(key, revision).delete(key);
        audit::add(
            &mut batch,
            Some(family.user_id),
            "",
            "refresh_token_reused",
            json!({"session": token.family, "ended": true}),
        )?;
        self.commit(batch).await?;
        tracing::warn!(user = %family.user_id, family = %token.family, "a spent refresh token was presented: its chain is ended");
        Ok(ApiError::unauthenticated(
            "this refresh token was already used; its session is ended (log in again)",
        ))
    }

    /// Ends the refresh chain of `presented` if it is `user`'s (a logout).
    pub async fn end_refresh_chain(&self, user: Uuid, presented: &str) -> ApiResult<()> {
        let Some(token) = RefreshToken::parse(presented.trim()) else {
            return Err(ApiError::invalid_field(
                "refresh_token",
                "not a refresh token of this service",
            ));
        };
        let key = keys::refresh_family(token.family);
        self.optimistic("this session", || async {
            let Some(cur) = self.get::<RefreshFamily>(&key).await? else {
                return Ok(Attempt::Done(()));
            };
            if cur.value.user_id != user {
                return Err(ApiError::invalid_field(
                    "refresh_token",
                    "not a refresh token of yours",
                ));
            }
            let mut batch = Batch::default();
            batch.unchanged(&key, cur.mod_revision).delete(&key);
            audit::add(
                &mut batch,
                Some(user),
                "",
                "logout",
                json!({"session": token.family}),
            )?;
            self.commit_or_retry(batch, ()).await
        })
        .await
    }

    /// Deletes the session keys of accounts deleted longer than
    /// `older_than` ago ([`ENDED_SESSION_KEEP`] but in tests), with their
    /// [`keys::ended_session`] entries, a page per transaction; returns
    /// how many. Every gateway keeps each session key in memory, so
    /// without this they would grow with every account ever deleted.
    /// Blind deletes: a deleted account's key is never
    /// written again (its id is never reused).
    pub async fn forget_ended_sessions(&self, older_than: Duration) -> ApiResult<usize> {
        let older_than = chrono::Duration::from_std(older_than).map_err(ApiError::internal)?;
        let end = keys::ended_sessions_until(Utc::now() - older_than);
        let mut forgotten = 0;
        loop {
            let read = Read::span(keys::ENDED_SESSIONS, &end).limit(FORGET_PAGE);
            let Some(snap) = self.snapshot(&[], [read]).await? else {
                return Ok(forgotten);
            };
            let page = snap.keys(0);
            if page.is_empty() {
                return Ok(forgotten);
            }
            let mut batch = Batch::default();
            for key in &page {
                batch.delete(key);
                if let Some(user) = keys::last_id(key.as_bytes()) {
                    batch.delete(&keys::session(user));
                }
            }
            self.commit(batch).await?;
            forgotten += page.len();
            if page.len() < FORGET_PAGE as usize {
                return Ok(forgotten);
            }
        }
    }

    /// "Log out everywhere": every access and refresh token of `user` ends.
    pub async fn end_sessions(&self, user: Uuid) -> ApiResult<()> {
        let mut batch = Batch::default();
        batch.exists(&keys::user(user));
        end_all_sessions(&mut batch, user, false);
        audit::add(&mut batch, Some(user), "", "logout_everywhere", json!({}))?;
        if !self.commit(batch).await? {
            return Err(ApiError::unauthenticated("this account no longer exists"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_read_back_and_store_only_a_hash() {
        let t = RefreshToken::fresh(Uuid::new_v4());
        let shown = t.to_string();
        assert_eq!(RefreshToken::parse(&shown), Some(t.clone()));
        assert!(!t.hash().contains(&t.secret));
        assert_eq!(t.hash().len(), 64);
        assert_ne!(RefreshToken::fresh(t.family).hash(), t.hash());
        // A use with a key moves to the same next token every time, which
        // depends on the secret and the key and belongs to the same chain.
        let next = t.next_for("k-1");
        assert_eq!(next, t.next_for("k-1"));
        assert_eq!(next.family, t.family);
        assert_eq!(RefreshToken::parse(&next.to_string()), Some(next.clone()));
        assert_ne!(next, t.next_for("k-2"));
        assert_ne!(next, RefreshToken::fresh(t.family).next_for("k-1"));
        assert_ne!(next.secret, t.secret);
        for bad in [
            "",
            "x.y",
            &format!("{}.short", t.family),
            &format!("not-a-uuid.{}", t.secret),
            &format!("{}.{}", t.family, "z".repeat(64)),
            &t.secret,
        ] {
            assert_eq!(RefreshToken::parse(bad), None, "{bad:?}");
        }
    }
}
