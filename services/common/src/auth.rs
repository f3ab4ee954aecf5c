//! Access tokens: EdDSA (Ed25519) JWTs. Only agenda-users holds the
//! private keys (`/secrets/jwt-keys`, a prefix no other role may read);
//! it publishes their public halves in the registry
//! (`/registry/config/jwt-public-keys`), and every gateway verifies with
//! those alone, so a gateway (or anything that reads the registry) cannot
//! mint a token.
//!
//! Both sets hold several keys by id, and the private set names the
//! current one: tokens carry the key id (`kid`) in their header, so a new
//! key can be added and made current (`agendactl rotate-token-key`) while
//! tokens signed with an older one stay valid until they expire. A users
//! replica publishes a new public set before it signs with a new key.

use std::collections::BTreeMap;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db_client::DbClient;
use crate::error::{Error, Result};
use crate::registry;

/// Where the private key set lives (agenda-users and operators only).
pub const SIGNING_KEYS: &str = "/secrets/jwt-keys";
/// Registry config name of the public key set (what gateways read).
pub const PUBLIC_KEYS_CONFIG: &str = "jwt-public-keys";
/// Most keys a rotation keeps: the new one and the two before it. Rotate
/// no more often than the token lifetime, or the oldest tokens die early.
pub const KEEP_KEYS: usize = 3;

/// Private Ed25519 keys by id, and which one signs new tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeys {
    /// Id of the key that signs new tokens.
    pub current: String,
    /// PKCS#8 DER (base64) by key id.
    pub keys: BTreeMap<String, String>,
}

/// Public Ed25519 keys by id: enough to check tokens, never to make one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyingKeys {
    /// Raw 32-byte public keys (base64url, unpadded: a JWK's `x`) by id.
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
    /// The person's session generation when issued: a token older than
    /// the current one (a password change, "log out everywhere", the
    /// account deleted) is refused at once. Tokens without it are 0.
    #[serde(default)]
    pub gen: u64,
    /// Who issued it: always [`ISSUER`].
    #[serde(default)]
    pub iss: String,
    /// Who it is for: always [`AUDIENCE`] (a token minted for something
    /// else with the same keys is not one of ours).
    #[serde(default)]
    pub aud: String,
}

/// The `iss` of every access token.
pub const ISSUER: &str = "agenda-users";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "agenda-api";

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

/// One fresh key pair: (id, PKCS#8 DER, raw public key).
fn new_key() -> Result<(String, Vec<u8>, Vec<u8>)> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| Error::Internal(format!("generating an Ed25519 key: {e}")))?;
    let kid = format!("k{}", uuid::Uuid::now_v7().simple());
    Ok((kid, pair.serialize_der(), pair.public_key_raw().to_vec()))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

impl SigningKeys {
    /// A fresh set with one random key.
    pub fn generate() -> Result<SigningKeys> {
        let mut keys = SigningKeys::default();
        keys.rotate()?;
        Ok(keys)
    }

    /// Adds a fresh key and makes it current; keeps at most [`KEEP_KEYS`]
    /// (the oldest go: ids are time-ordered). Returns the new key's id.
    pub fn rotate(&mut self) -> Result<String> {
        let (kid, der, _) = new_key()?;
        self.keys.insert(kid.clone(), b64().encode(der));
        self.current = kid.clone();
        while self.keys.len() > KEEP_KEYS {
            let oldest = self.keys.keys().next().cloned().unwrap_or_default();
            self.keys.remove(&oldest);
        }
        Ok(kid)
    }

    fn der(&self, kid: &str) -> Result<Vec<u8>> {
        self.keys
            .get(kid)
            .and_then(|k| b64().decode(k).ok())
            .ok_or_else(|| {
                Error::Config(format!("JWT signing key {kid:?} is missing or not base64"))
            })
    }

    /// The public halves, to publish for the gateways.
    pub fn public(&self) -> Result<VerifyingKeys> {
        let mut keys = BTreeMap::new();
        for kid in self.keys.keys() {
            let der = self.der(kid)?;
            let pair = rcgen::KeyPair::try_from(der.as_slice()).map_err(|e| {
                Error::Config(format!(
                    "JWT signing key {kid:?} is not an Ed25519 key: {e}"
                ))
            })?;
            if pair.algorithm() != &rcgen::PKCS_ED25519 {
                return Err(Error::Config(format!(
                    "JWT signing key {kid:?} is not an Ed25519 key"
                )));
            }
            keys.insert(kid.clone(), b64url().encode(pair.public_key_raw()));
        }
        if !keys.contains_key(&self.current) {
            return Err(Error::Config(format!(
                "the current JWT key {:?} is not in the set",
                self.current
            )));
        }
        Ok(VerifyingKeys { keys })
    }

    /// Signs a token for `user` valid `ttl_secs` from `now`.
    pub fn issue(&self, user: &str, username: &str, now: u64, ttl_secs: u64) -> Result<String> {
        self.issue_at_generation(user, username, 0, now, ttl_secs)
    }

    /// [`SigningKeys::issue`] for session generation `gen`.
    pub fn issue_at_generation(
        &self,
        user: &str,
        username: &str,
        gen: u64,
        now: u64,
        ttl_secs: u64,
    ) -> Result<String> {
        self.sign(&Claims {
            sub: user.to_string(),
            username: username.to_string(),
            iat: now,
            exp: now + ttl_secs,
            gen,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        })
    }

    /// Signs `claims` as they are with the current key (tests use it to
    /// make tokens that are well signed but wrong otherwise).
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let der = self.der(&self.current)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der))
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))
    }
}

impl VerifyingKeys {
    /// Checks a token's algorithm, key id, signature and expiry.
    pub fn verify(&self, token: &str) -> std::result::Result<Claims, TokenError> {
        self.verify_with_kid(token).map(|(_, claims)| claims)
    }

    /// [`Self::verify`], also naming the key that signed the token.
    pub fn verify_with_kid(
        &self,
        token: &str,
    ) -> std::result::Result<(String, Claims), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let raw = self
            .keys
            .get(&kid)
            .and_then(|x| b64url().decode(x).ok())
            .ok_or(TokenError::Invalid)?;
        // jsonwebtoken slices the first 32 bytes unchecked.
        if raw.len() != 32 {
            return Err(TokenError::Invalid);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_ed_der(&raw), &validation)
            .map(|d| (kid, d.claims))
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Config(format!("the JWT {what} in agenda-db is malformed: {e}")))
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))
}

/// Reads the signing keys, creating them if no one has yet (the first
/// users replica to start wins the race; the others read its set), and
/// publishes their public halves.
pub async fn load_or_create(db: &DbClient) -> Result<SigningKeys> {
    use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};
    let value = to_json(&SigningKeys::generate()?)?;
    db.txn(TxnRequest {
        compare: vec![Compare {
            key: SIGNING_KEYS.as_bytes().to_vec(),
            target: compare::Target::CreateRevision as i32,
            result: compare::Result::Equal as i32,
            number: 0,
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: SIGNING_KEYS.as_bytes().to_vec(),
                value,
                ..Default::default()
            })),
        }],
        ..Default::default()
    })
    .await?;
    let kv = db
        .get(SIGNING_KEYS)
        .await?
        .ok_or_else(|| Error::Internal("JWT key set vanished after creation".into()))?;
    let keys: SigningKeys = parse(&kv.value, "signing key set")?;
    publish(db, &keys).await?;
    Ok(keys)
}

/// Writes the public halves of `keys` for the gateways, unless they are
/// there already.
pub async fn publish(db: &DbClient, keys: &SigningKeys) -> Result<()> {
    let public = to_json(&keys.public()?)?;
    if registry::get_config(db, PUBLIC_KEYS_CONFIG).await?.as_ref() != Some(&public) {
        registry::put_config(db, PUBLIC_KEYS_CONFIG, &public).await?;
        tracing::info!(current = %keys.current, "published the JWT public keys");
    }
    Ok(())
}

/// Adds a fresh signing key and makes it current (the operator's
/// rotation); returns its id. A compare on the set's revision keeps two
/// concurrent rotations from losing one.
pub async fn rotate(db: &DbClient) -> Result<String> {
    use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};
    loop {
        let kv = db.get(SIGNING_KEYS).await?.ok_or_else(|| {
            Error::NotFound("no JWT signing keys yet: start an agenda-users first".into())
        })?;
        let mut keys: SigningKeys = parse(&kv.value, "signing key set")?;
        let kid = keys.rotate()?;
        let done = db
            .txn(TxnRequest {
                compare: vec![Compare {
                    key: SIGNING_KEYS.as_bytes().to_vec(),
                    target: compare::Target::ModRevision as i32,
                    result: compare::Result::Equal as i32,
                    number: kv.mod_revision,
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: SIGNING_KEYS.as_bytes().to_vec(),
                        value: to_json(&keys)?,
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })
            .await?;
        if done.succeeded {
            return Ok(kid);
        }
    }
}

/// Follows the signing keys (agenda-users): each new set is published
/// (its public halves) before it is handed out, so no token is signed
/// with a key the gateways do not know yet. Starts from `initial`.
pub fn follow_signing_keys(
    db: DbClient,
    initial: SigningKeys,
    stop: CancellationToken,
) -> watch::Receiver<SigningKeys> {
    let mut raw = registry::watch_key(&db, SIGNING_KEYS.to_string(), stop.clone());
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        loop {
            let next = raw.borrow_and_update().clone();
            if let Some(bytes) = next {
                match parse::<SigningKeys>(&bytes, "signing key set") {
                    Ok(keys) if keys != *tx.borrow() => {
                        publish_until_done(&db, &keys, &raw, &stop).await;
                        if stop.is_cancelled() {
                            break;
                        }
                        tracing::info!(current = %keys.current, "JWT signing keys changed");
                        let _ = tx.send(keys);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "ignoring a malformed JWT key set"),
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                changed = raw.changed() => if changed.is_err() { break },
            }
        }
    });
    rx
}

/// Publishes `keys`, retrying while agenda-db is unreachable, until it
/// works, a newer set arrives or `stop`.
async fn publish_until_done(
    db: &DbClient,
    keys: &SigningKeys,
    raw: &watch::Receiver<Option<Vec<u8>>>,
    stop: &CancellationToken,
) {
    loop {
        match publish(db, keys).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "could not publish the JWT public keys; retrying"),
        }
        if stop.is_cancelled() || raw.has_changed().unwrap_or(true) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Follows the public keys in the registry (gateways: rotation takes
/// effect without a restart). The receiver holds `None` until a set
/// exists; a malformed set is logged and the last good one kept.
pub fn watch_public_keys(
    db: DbClient,
    stop: CancellationToken,
) -> watch::Receiver<Option<VerifyingKeys>> {
    let mut raw = registry::watch_config(&db, PUBLIC_KEYS_CONFIG, stop.clone());
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            let parsed = raw.borrow_and_update().as_ref().and_then(|b| {
                parse::<VerifyingKeys>(b, "public key set")
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
    fn issue_and_verify_with_the_public_keys_only() {
        let keys = SigningKeys::generate().unwrap();
        let t = keys.issue("u1", "alice", now(), 60).unwrap();
        let public = keys.public().unwrap();
        let c = public.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.username.as_str()), ("u1", "alice"));
        // The published set holds no private material.
        let json = serde_json::to_string(&public).unwrap();
        assert!(!json.contains(&keys.keys[&keys.current]), "{json}");
    }

    #[test]
    fn expired_foreign_forged_and_garbage_tokens_are_refused() {
        let keys = SigningKeys::generate().unwrap();
        let public = keys.public().unwrap();
        let old = keys.issue("u1", "alice", now() - 120, 60).unwrap();
        assert_eq!(public.verify(&old).unwrap_err(), TokenError::Expired);
        let other = SigningKeys::generate()
            .unwrap()
            .issue("u1", "alice", now(), 60)
            .unwrap();
        assert_eq!(public.verify(&other).unwrap_err(), TokenError::Invalid);
        assert_eq!(public.verify("garbage").unwrap_err(), TokenError::Invalid);
        let mut tampered = keys.issue("u1", "alice", now(), 60).unwrap();
        tampered.push('x');
        assert_eq!(public.verify(&tampered).unwrap_err(), TokenError::Invalid);
        // HS256 "signed" with the public key itself (the classic
        // algorithm confusion) is refused: only EdDSA is accepted.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.current.clone());
        let claims = Claims {
            sub: "u2".into(),
            username: "mallory".into(),
            iat: now(),
            exp: now() + 60,
            gen: 0,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let x = public.keys[&keys.current].clone();
        let forged =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(x.as_bytes()))
                .unwrap();
        assert_eq!(public.verify(&forged).unwrap_err(), TokenError::Invalid);
        // A short (malformed) public key is refused, not a panic.
        let mut short = public.clone();
        short
            .keys
            .insert(keys.current.clone(), b64url().encode([1u8; 5]));
        let good = keys.issue("u1", "alice", now(), 60).unwrap();
        assert_eq!(short.verify(&good).unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_at_most_three_keys() {
        let mut keys = SigningKeys::generate().unwrap();
        let first = keys.current.clone();
        let old = keys.issue("u1", "alice", now(), 60).unwrap();
        let kid = keys.rotate().unwrap();
        assert_eq!(keys.current, kid);
        let new = keys.issue("u2", "bob", now(), 60).unwrap();
        let public = keys.public().unwrap();
        assert!(public.verify(&old).is_ok());
        assert!(public.verify(&new).is_ok());
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
            Some(kid.as_str())
        );
        keys.rotate().unwrap();
        keys.rotate().unwrap();
        assert_eq!(keys.keys.len(), KEEP_KEYS);
        assert!(!keys.keys.contains_key(&first), "the oldest key is dropped");
        assert!(keys.public().unwrap().verify(&old).is_err());
    }
}
