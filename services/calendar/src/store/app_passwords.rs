//! App passwords (what a CalDAV client sends with HTTP Basic, never the
//! account password) and the keyed hash that stores them and feed keys.
//!
//! Secrets are random (160 bits), so a keyed hash (HMAC-SHA256 with a
//! key only agenda-users may read) is enough to store them: checking one
//! costs a hash and one read, not an argon2 run per request, and a copy
//! of the data without the key reveals nothing usable.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Batch, Store};
use crate::error::{ApiError, ApiResult};
use crate::model::UserRecord;
use crate::{audit, keys, validate};

/// Most app passwords one person keeps.
pub const MAX_PER_PERSON: usize = 20;

/// A stored app password (its keyed hash only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppPasswordRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub hash: String,
}

/// An app password as its owner sees it; `password` only in the answer
/// that created it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppPassword {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl AppPasswordRecord {
    fn view(&self) -> AppPassword {
        AppPassword {
            id: self.id,
            name: self.name.clone(),
            created_at: self.created_at,
            password: None,
        }
    }
}

/// What an app password's hash leads to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HashEntry {
    user_id: Uuid,
    id: Uuid,
}

/// A new random secret: 20 bytes, base64url.
pub(crate) fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 of `secret` under `key`, hex.
pub(crate) fn keyed_hash(key: &[u8], secret: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(secret.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// The key of the keyed hashes, made by the first replica that needs
    /// it (a create-if-absent: racing replicas end with the same one).
    pub(crate) async fn hash_key(&self) -> ApiResult<Vec<u8>> {
        if let Some(k) = self.secret.get() {
            return Ok(k.clone());
        }
        let key = keys::CALENDAR_APPS_SECRET;
        let stored = match self.db().get(key.as_bytes().to_vec()).await? {
            Some(kv) => kv.value,
            None => {
                let mut fresh = vec![0u8; 32];
                rand::rng().fill_bytes(&mut fresh);
                let mut batch = Batch::default();
                batch.unchanged(key, 0).put_raw(key, fresh);
                self.commit(batch).await?;
                self.db()
                    .get(key.as_bytes().to_vec())
                    .await?
                    .ok_or_else(|| ApiError::internal("the calendar-apps key vanished"))?
                    .value
            }
        };
        Ok(self.secret.get_or_init(|| stored).clone())
    }

    /// A new app password named `name` for `caller`: answered once.
    pub async fn create_app_password(&self, caller: Uuid, name: &str) -> ApiResult<AppPassword> {
        let name = validate::text("name", name, 1, 100)?;
        let hash_key = self.hash_key().await?;
        let password = new_secret();
        let record = AppPasswordRecord {
            id: Uuid::new_v4(),
            user_id: caller,
            name,
            created_at: Utc::now(),
            hash: keyed_hash(&hash_key, &password),
        };
        self.optimistic("your app passwords", || async {
            let me = self.me(caller).await?;
            let mine = self.keys(&keys::app_passwords(caller), 0).await?;
            if mine.len() >= MAX_PER_PERSON {
                return Err(ApiError::conflict(format!(
                    "you have {MAX_PER_PERSON} app passwords already: delete one first"
                )));
            }
            let mut batch = Batch::default();
            batch
                .unchanged(
                    &keys::user(caller),
                    self.revision(&keys::user(caller)).await?,
                )
                .unchanged(&keys::app_password(caller, record.id), 0)
                .put(&keys::app_password(caller, record.id), &record)?
                .put(
                    &keys::app_password_hash(&record.hash),
                    &HashEntry {
                        user_id: caller,
                        id: record.id,
                    },
                )?;
            audit::add(
                &mut batch,
                Some(caller),
                &me.username,
                "app_password_created",
                json!({"id": record.id, "name": record.name}),
            )?;
            self.commit_or_retry(batch, ()).await
        })
        .await?;
        Ok(AppPassword {
            password: Some(password),
            ..record.view()
        })
    }

    /// The caller's app passwords (never the passwords), oldest first.
    pub async fn app_passwords(&self, caller: Uuid) -> ApiResult<Vec<AppPassword>> {
        let mut all: Vec<AppPassword> = self
            .list::<AppPasswordRecord>(&keys::app_passwords(caller))
            .await?
            .into_iter()
            .map(|v| v.value.view())
            .collect();
        all.sort_by_key(|p| p.created_at);
        Ok(all)
    }

    /// Revokes one of the caller's app passwords: clients using it are
    /// refused from the next request on.
    pub async fn delete_app_password(&self, caller: Uuid, id: Uuid) -> ApiResult<()> {
        self.optimistic("your app passwords", || async {
            let key = keys::app_password(caller, id);
            let Some(cur) = self.get::<AppPasswordRecord>(&key).await? else {
                return Err(ApiError::not_found("app password"));
            };
            let me = self.me(caller).await?;
            let mut batch = Batch::default();
            batch
                .unchanged(&key, cur.mod_revision)
                .delete(&key)
                .delete(&keys::app_password_hash(&cur.value.hash));
            audit::add(
                &mut batch,
                Some(caller),
                &me.username,
                "app_password_revoked",
                json!({"id": id, "name": cur.value.name}),
            )?;
            self.commit_or_retry(batch, ()).await
        })
        .await
    }

    /// The account `username` when `password` is one of its app
    /// passwords; a 401 otherwise (the same for an unknown name).
    pub async fn check_app_password(
        &self,
        username: &str,
        password: &str,
    ) -> ApiResult<UserRecord> {
        let refused = || ApiError::unauthenticated("unknown user or wrong app password");
        if password.is_empty() || password.len() > 200 {
            return Err(refused());
        }
        let hash = keyed_hash(&self.hash_key().await?, password);
        // A confirmed read: a revoked password must be refused from the
        // next request on, and a replica that has not yet applied the
        // revocation (follower reads) would still find it.
        let Some(entry) = self
            .get::<HashEntry>(&keys::app_password_hash(&hash))
            .await?
        else {
            return Err(refused());
        };
        let user = self
            .user(entry.value.user_id)
            .await?
            .filter(|u| {
                u.username.eq_ignore_ascii_case(username) || u.email.eq_ignore_ascii_case(username)
            })
            .ok_or_else(refused)?;
        Ok(user)
    }

    /// Adds to an account's deletion the removal of its app passwords,
    /// feeds and CalDAV tombstones.
    pub(crate) async fn forget_calendar_apps(
        &self,
        batch: &mut Batch,
        user: Uuid,
    ) -> ApiResult<()> {
        for p in self
            .list::<AppPasswordRecord>(&keys::app_passwords(user))
            .await?
        {
            batch.delete(&keys::app_password_hash(&p.value.hash));
        }
        for f in self
            .list::<super::feeds::FeedOf>(&keys::feeds_of(user))
            .await?
        {
            batch.delete(&keys::feed(&f.value.hash));
        }
        batch
            .delete_prefix(&keys::app_passwords(user))
            .delete_prefix(&keys::feeds_of(user))
            .delete_prefix(&keys::dav_gones(user))
            .delete(&keys::dav_floor(user));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hash_by_key() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        // 20 bytes: 160 bits, over the 128 asked.
        assert_eq!(a.len(), 27);
        assert_eq!(keyed_hash(b"k1", &a), keyed_hash(b"k1", &a));
        assert_ne!(keyed_hash(b"k1", &a), keyed_hash(b"k2", &a));
        assert_eq!(keyed_hash(b"k1", &a).len(), 64);
    }
}
