//! Session generations, followed from agenda-db (`/agenda/sessions/`, see
//! `agenda_calendar::keys::session`): an access token issued before its
//! person's current generation (a password change, "log out everywhere",
//! the account deleted) is refused at once, and that person's open
//! streams are closed.
//!
//! Until the first listing arrives nothing authenticated is served (503):
//! failing open would accept tokens that were ended.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use agenda_calendar::keys;
use agenda_calendar::ApiError;
use agenda_common::shutdown::CancellationToken;
use agenda_common::DbClient;
use agenda_proto::db::KeyValue;
use tokio::sync::broadcast;
use uuid::Uuid;

/// A person's generation: the session key's version, and whether the
/// account is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generation {
    pub version: u64,
    pub deleted: bool,
}

impl Generation {
    fn of(kv: &KeyValue) -> Generation {
        Generation {
            version: u64::try_from(kv.version).unwrap_or(0),
            deleted: kv.value == keys::SESSION_DELETED,
        }
    }
}

/// The generations this gateway knows.
pub struct Sessions {
    known: RwLock<HashMap<Uuid, Generation>>,
    loaded: AtomicBool,
    /// People whose sessions just ended (streams listen).
    ended: broadcast::Sender<Uuid>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            known: RwLock::default(),
            loaded: AtomicBool::new(false),
            ended: broadcast::channel(1024).0,
        }
    }
}

impl Sessions {
    /// Whether a token of `user` at generation `gen` is still good.
    pub fn check(&self, user: Uuid, gen: u64) -> Result<(), ApiError> {
        if !self.loaded.load(Ordering::Acquire) {
            return Err(ApiError::unavailable(
                "sessions are not loaded yet; retry shortly",
            ));
        }
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let current = known.get(&user).copied().unwrap_or_default();
        if current.deleted {
            return Err(ApiError::unauthenticated("this account no longer exists"));
        }
        if gen < current.version {
            return Err(ApiError::unauthenticated(
                "this session has ended (password changed or logged out everywhere); log in again",
            ));
        }
        Ok(())
    }

    /// Learns `user`'s generation; tells the streams if it moved.
    pub fn learn(&self, user: Uuid, now: Generation) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        let before = known.get(&user).copied().unwrap_or_default();
        if now.version > before.version || (now.deleted && !before.deleted) {
            known.insert(user, now);
            drop(known);
            // Nobody listening is fine.
            let _ = self.ended.send(user);
        }
    }

    /// Reads `user`'s generation from agenda-db now: the answer of a
    /// change that ended sessions waits for it, so the very next request
    /// through this gateway already sees it (the other one follows the
    /// watch within milliseconds).
    pub async fn reload(&self, db: &DbClient, user: Uuid) -> Result<(), ApiError> {
        let kv = db.get(keys::session(user).into_bytes()).await?;
        self.learn(user, kv.as_ref().map(Generation::of).unwrap_or_default());
        Ok(())
    }

    /// Takes a whole listing of the session keys: learns each, and
    /// forgets the people whose key is gone since the `listed` before (a
    /// deleted account's, removed once none of its tokens can be alive:
    /// `Store::forget_ended_sessions`), so memory follows the keys that
    /// exist, not every account ever deleted.
    fn mirror(&self, map: &BTreeMap<Vec<u8>, Generation>, listed: &mut HashSet<Uuid>) {
        let now: HashSet<Uuid> = map
            .iter()
            .filter_map(|(key, generation)| {
                let user = keys::session_user(key)?;
                self.learn(user, *generation);
                Some(user)
            })
            .collect();
        let gone: Vec<Uuid> = listed.difference(&now).copied().collect();
        if !gone.is_empty() {
            let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
            for user in &gone {
                known.remove(user);
            }
        }
        *listed = now;
        self.loaded.store(true, Ordering::Release);
    }

    /// People whose sessions end from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.ended.subscribe()
    }
}

/// Follows `/agenda/sessions/` into a new [`Sessions`].
pub fn follow(db: &DbClient, stop: CancellationToken) -> Arc<Sessions> {
    let sessions = Arc::new(Sessions::default());
    let mut rx = agenda_common::registry::watch_prefix_with(
        db,
        keys::SESSIONS.to_string(),
        stop.clone(),
        |kv| Generation::of(&kv),
    );
    let s = sessions.clone();
    tokio::spawn(async move {
        let mut listed = HashSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let map = rx.borrow_and_update().clone();
            s.mirror(&map, &mut listed);
        }
    });
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_tokens_and_deleted_accounts_are_refused_and_streams_told() {
        let s = Sessions::default();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(s.check(alice, 0).unwrap_err().status, 503, "not loaded");
        s.loaded.store(true, Ordering::Release);
        s.check(alice, 0).unwrap();
        let mut told = s.subscribe();
        s.learn(
            alice,
            Generation {
                version: 2,
                deleted: false,
            },
        );
        assert_eq!(told.try_recv().unwrap(), alice);
        assert_eq!(s.check(alice, 1).unwrap_err().status, 401);
        s.check(alice, 2).unwrap();
        // An older report (a watch behind a reload) changes nothing.
        s.learn(
            alice,
            Generation {
                version: 1,
                deleted: false,
            },
        );
        assert!(told.try_recv().is_err());
        s.check(alice, 2).unwrap();
        s.learn(
            bob,
            Generation {
                version: 1,
                deleted: true,
            },
        );
        assert_eq!(s.check(bob, 5).unwrap_err().status, 401);
        s.check(Uuid::new_v4(), 0).unwrap();
    }

    #[test]
    fn a_session_key_that_goes_is_forgotten_and_one_learnt_meanwhile_kept() {
        let s = Sessions::default();
        let (gone, stays, fresh) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let key = |u: Uuid| keys::session(u).into_bytes();
        let deleted = Generation {
            version: 3,
            deleted: true,
        };
        let moved = Generation {
            version: 2,
            deleted: false,
        };
        let mut listed = HashSet::new();
        s.mirror(
            &BTreeMap::from([(key(gone), deleted), (key(stays), moved)]),
            &mut listed,
        );
        assert_eq!(s.check(gone, 9).unwrap_err().status, 401);
        assert_eq!(s.check(stays, 1).unwrap_err().status, 401);
        // A reload learns a key the watch has not listed yet.
        s.learn(fresh, moved);
        s.mirror(&BTreeMap::from([(key(stays), moved)]), &mut listed);
        let known = s.known.read().unwrap().clone();
        assert!(!known.contains_key(&gone), "a deleted key is still kept");
        assert_eq!(known.get(&stays), Some(&moved));
        assert_eq!(
            known.get(&fresh),
            Some(&moved),
            "a reload's news was dropped"
        );
        assert_eq!(s.check(stays, 1).unwrap_err().status, 401);
    }
}
