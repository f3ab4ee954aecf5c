//! Access tokens: HS256 JWTs whose signing keys live in the registry, so
//! every users replica signs and every gateway verifies with the same set.
//!
//! The key set (`/registry/config/jwt-keys`) holds several keys by id and
//! names the current one: tokens carry the key id (`kid`) in their header,
//! so a new key can be added and made current while tokens signed with the
//! old one stay valid until they expire.

use std::collections::BTreeMap;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db_client::DbClient;
use crate::error::{Error, Result};
use crate::registry;

/// Registry config name of the key set.
pub const KEYS_CONFIG: &str = "jwt-keys";

/// Signing keys by id, and which one signs new tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeySet {
    /// Id of the key that signs new tokens.
    pub current: String,
    /// Secrets (base64) by key id.
    pub keys: BTreeMap<String, String>,
}

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Username at login time (for logs).
    pub username: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expiry (unix seconds).
    pub exp: u64,
}

/// Why a token was refused (safe to show to its holder).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its `exp`.
    #[error("the access token has expired; log in again")]
    Expired,
    /// Malformed, unknown key or bad signature.
    #[error("the access token is not valid")]
    Invalid,
}

impl KeySet {
    /// A fresh set with one random key.
    pub fn generate() -> KeySet {
        let secret: [u8; 32] = rand::random();
        let kid = format!("k{}", uuid::Uuid::new_v4().simple());
        KeySet {
            current: kid.clone(),
            keys: BTreeMap::from([(
                kid,
                base64::engine::general_purpose::STANDARD.encode(secret),
            )]),
        }
    }

    fn secret(&self, kid: &str) -> Option<Vec<u8>> {
        let b64 = self.keys.get(kid)?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }

    /// Signs a token for `user` valid `ttl_secs` from `now`.
    pub fn issue(&self, user: &str, username: &str, now: u64, ttl_secs: u64) -> Result<String> {
        let secret = self
            .secret(&self.current)
            .ok_or_else(|| Error::Config("the current JWT key is missing or not base64".into()))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.clone());
        let claims = Claims {
            sub: user.to_string(),
            username: username.to_string(),
            iat: now,
            exp: now + ttl_secs,
        };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret))
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))
    }

    /// Checks a token's key id, signature and expiry.
    pub fn verify(&self, token: &str) -> std::result::Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let secret = self.secret(&kid).ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&secret), &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

/// Reads the key set, creating it if no one has yet (the first users
/// replica to start wins the race; the others read its set).
pub async fn load_or_create(db: &DbClient) -> Result<KeySet> {
    use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};
    let key = format!("{}{KEYS_CONFIG}", registry::CONFIG);
    let fresh = KeySet::generate();
    let value = serde_json::to_vec(&fresh).map_err(|e| Error::Internal(e.to_string()))?;
    db.txn(TxnRequest {
        compare: vec![Compare {
            key: key.as_bytes().to_vec(),
            target: compare::Target::CreateRevision as i32,
            result: compare::Result::Equal as i32,
            number: 0,
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                ..Default::default()
            })),
        }],
        ..Default::default()
    })
    .await?;
    load(db)
        .await?
        .ok_or_else(|| Error::Internal("JWT key set vanished after creation".into()))
}

/// Reads the key set, if any.
pub async fn load(db: &DbClient) -> Result<Option<KeySet>> {
    match registry::get_config(db, KEYS_CONFIG).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Config(format!("the JWT key set in the registry is malformed: {e}"))
        }),
        None => Ok(None),
    }
}

/// Follows the key set in the registry (rotation takes effect without a
/// restart). The receiver holds `None` until a set exists.
pub fn watch_keys(db: DbClient, stop: CancellationToken) -> watch::Receiver<Option<KeySet>> {
    let raw = registry::watch_config(&db, KEYS_CONFIG, stop.clone());
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut raw = raw;
        loop {
            let parsed = raw.borrow_and_update().as_ref().and_then(|b| {
                serde_json::from_slice::<KeySet>(b)
                    .map_err(|e| tracing::error!(error = %e, "ignoring a malformed JWT key set"))
                    .ok()
            });
            if parsed.is_some() || tx.borrow().is_none() {
                let _ = tx.send(parsed);
            }
            tokio::select! {
                () = stop.cancelled() => break,
                changed = raw.changed() => if changed.is_err() { break },
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn issue_and_verify() {
        let keys = KeySet::generate();
        let t = keys.issue("u1", "alice", now(), 60).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.username.as_str()), ("u1", "alice"));
    }

    #[test]
    fn expired_foreign_and_garbage_tokens_are_refused() {
        let keys = KeySet::generate();
        let old = keys.issue("u1", "alice", now() - 120, 60).unwrap();
        assert_eq!(keys.verify(&old).unwrap_err(), TokenError::Expired);
        let other = KeySet::generate().issue("u1", "alice", now(), 60).unwrap();
        assert_eq!(keys.verify(&other).unwrap_err(), TokenError::Invalid);
        assert_eq!(keys.verify("garbage").unwrap_err(), TokenError::Invalid);
        let mut tampered = keys.issue("u1", "alice", now(), 60).unwrap();
        tampered.push('x');
        assert_eq!(keys.verify(&tampered).unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let mut keys = KeySet::generate();
        let old = keys.issue("u1", "alice", now(), 60).unwrap();
        let next = KeySet::generate();
        keys.keys.extend(next.keys.clone());
        keys.current = next.current.clone();
        let new = keys.issue("u2", "bob", now(), 60).unwrap();
        assert!(keys.verify(&old).is_ok());
        assert!(keys.verify(&new).is_ok());
        assert!(next.verify(&old).is_err());
    }
}
