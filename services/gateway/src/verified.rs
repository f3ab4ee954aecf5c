//! Access tokens already verified: checking an Ed25519 signature costs
//! tens of microseconds, more than the rest of a cached read, and a
//! client sends the same token with every request of its session.
//!
//! An entry is the whole token (compared whole: a forged token never
//! matches a verified one), the id of the key that signed it and what it
//! says. A hit is only good while that key is still in the published set
//! (a rotated-out key ends its tokens at once, as without the cache) and
//! before the token's expiry; ended sessions are checked after, on every
//! request, as before. Bounded: [`SHARDS`] maps of at most
//! [`PER_SHARD`] tokens, a full shard first drops its expired tokens,
//! then everything (the next requests verify again).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use agenda_common::auth::Claims;

/// Shards (locks) of the cache.
const SHARDS: usize = 16;
/// Tokens per shard at most.
pub const PER_SHARD: usize = 4096;

/// The cache.
pub struct VerifiedTokens {
    shards: Vec<Mutex<HashMap<Box<str>, Entry>>>,
    hasher: RandomState,
}

#[derive(Clone)]
struct Entry {
    kid: Box<str>,
    claims: Claims,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl VerifiedTokens {
    fn shard(&self, token: &str) -> &Mutex<HashMap<Box<str>, Entry>> {
        &self.shards[(self.hasher.hash_one(token) as usize) % SHARDS]
    }

    /// What `token` says if it was verified under a key `key_known`
    /// still accepts and has not expired at `now` (unix seconds).
    pub fn get(&self, token: &str, now: u64, key_known: impl Fn(&str) -> bool) -> Option<Claims> {
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        let entry = shard.get(token)?;
        if entry.claims.exp > now && key_known(&entry.kid) {
            return Some(entry.claims.clone());
        }
        shard.remove(token);
        None
    }

    /// Remembers a token just verified with key `kid`.
    pub fn insert(&self, token: &str, kid: &str, claims: &Claims, now: u64) {
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= PER_SHARD {
            shard.retain(|_, e| e.claims.exp > now);
            if shard.len() >= PER_SHARD {
                shard.clear();
            }
        }
        shard.insert(
            token.into(),
            Entry {
                kid: kid.into(),
                claims: claims.clone(),
            },
        );
    }

    /// Tokens held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "u".into(),
            username: "alice".into(),
            iat: 0,
            exp,
            gen: 0,
            iss: String::new(),
            aud: String::new(),
        }
    }

    #[test]
    fn a_hit_needs_the_same_token_a_known_key_and_no_expiry() {
        let c = VerifiedTokens::default();
        c.insert("tok-1", "k1", &claims(100), 10);
        assert_eq!(c.get("tok-1", 50, |k| k == "k1").map(|c| c.exp), Some(100));
        assert!(c.get("tok-1x", 50, |_| true).is_none());
        assert!(c.get("tok-", 50, |_| true).is_none());
        // The key rotated out: gone, and forgotten.
        assert!(c.get("tok-1", 50, |k| k == "k2").is_none());
        assert!(c.get("tok-1", 50, |_| true).is_none());
        c.insert("tok-2", "k1", &claims(100), 10);
        assert!(c.get("tok-2", 100, |_| true).is_none(), "expired at exp");
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn it_stays_bounded() {
        let c = VerifiedTokens::default();
        for i in 0..(SHARDS * PER_SHARD * 3) {
            c.insert(&format!("t{i}"), "k", &claims(1000), 0);
        }
        assert!(c.held() <= SHARDS * PER_SHARD);
        // Expired ones go first.
        let c = VerifiedTokens::default();
        for i in 0..(SHARDS * PER_SHARD * 2) {
            c.insert(&format!("old{i}"), "k", &claims(5), 0);
        }
        c.insert("fresh", "k", &claims(1000), 10);
        assert!(c.get("fresh", 10, |_| true).is_some());
    }
}
