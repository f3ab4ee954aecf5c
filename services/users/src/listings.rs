//! Week views already answered, kept to be answered again while the
//! person's agenda has not changed.
//!
//! Every change to a person's events bumps their agenda version key
//! (`keys::agenda_version`, what CalDAV's sync tokens also rest on). An
//! entry keeps the body of one `GET /v1/events?from&to` and the version's
//! revision it was read at, in the same snapshot as the events. A later
//! call reads that revision again, linearizably (one key, instead of the
//! agenda's two spans), and answers the kept body only if it did not move:
//! the answer is the one a fresh read would build, as of now. What the
//! cache saves is the spans' transfer and decoding, the recurrences'
//! expansion and the JSON.
//!
//! Bounded by bytes; the oldest entries go first. Each replica keeps its
//! own (nothing to invalidate: every use is checked).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, Opts};
use uuid::Uuid;

/// Whose week and which.
pub type Key = (Uuid, DateTime<Utc>, DateTime<Utc>);

/// A kept answer: the body and the agenda version's revision it was read at.
#[derive(Debug, Clone)]
pub struct Kept {
    pub version: i64,
    pub body: Arc<[u8]>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, (u64, Kept)>,
    /// Keys by age (with the insertion number: a key put again leaves an
    /// older, stale place behind).
    order: VecDeque<(u64, Key)>,
    next: u64,
    bytes: usize,
}

/// The cache of one replica.
#[derive(Debug)]
pub struct Listings {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

/// Uses of the cache: `hit` (answered from it), `stale` (kept, but the
/// agenda had changed), `miss` (nothing kept).
static USES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "agenda_users_week_view_cache_total",
            "Week views by what the cache of answered views did: hit, stale (the agenda changed), miss.",
        ),
        &["result"],
    )
    .expect("static metric options are valid");
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
});

/// Counts one use of the cache (see [`USES`]).
pub fn count(result: &'static str) {
    USES.with_label_values(&[result]).inc();
}

impl Listings {
    /// A cache of at most `max_bytes` of bodies (0: keeps nothing).
    pub fn new(max_bytes: usize) -> Self {
        Listings {
            max_bytes,
            inner: Mutex::default(),
        }
    }

    /// What is kept for `key`, if anything (still to be checked).
    pub fn get(&self, key: &Key) -> Option<Kept> {
        let inner = self.inner.lock().expect("listings lock");
        inner.map.get(key).map(|(_, kept)| kept.clone())
    }

    /// Keeps `body`, read at agenda version `version`, for `key`. A body
    /// larger than an eighth of the cache is not kept: it would push out
    /// many small ones for one person.
    pub fn put(&self, key: Key, version: i64, body: &[u8]) {
        if self.max_bytes == 0 || body.len() > self.max_bytes / 8 {
            return;
        }
        let mut inner = self.inner.lock().expect("listings lock");
        let inner = &mut *inner;
        let n = inner.next;
        inner.next += 1;
        let kept = Kept {
            version,
            body: Arc::from(body),
        };
        if let Some((_, old)) = inner.map.insert(key, (n, kept)) {
            inner.bytes -= old.body.len();
        }
        inner.bytes += body.len();
        inner.order.push_back((n, key));
        while inner.bytes > self.max_bytes {
            let Some((n, key)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&key).is_some_and(|(m, _)| *m == n) {
                if let Some((_, gone)) = inner.map.remove(&key) {
                    inner.bytes -= gone.body.len();
                }
            }
        }
        // Places left behind by keys put again: dropped before they
        // outnumber the entries.
        if inner.order.len() > 2 * inner.map.len() + 64 {
            let map = &inner.map;
            inner
                .order
                .retain(|(n, key)| map.get(key).is_some_and(|(m, _)| m == n));
        }
    }

    /// Bytes of bodies kept.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("listings lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u128) -> Key {
        let t = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        (Uuid::from_u128(i), t, t)
    }

    #[test]
    fn an_answer_is_kept_with_its_version_and_replaced() {
        let l = Listings::new(1000);
        assert!(l.get(&key(1)).is_none());
        l.put(key(1), 7, b"seven");
        let k = l.get(&key(1)).unwrap();
        assert_eq!((k.version, &*k.body), (7, &b"seven"[..]));
        l.put(key(1), 9, b"nine!!");
        let k = l.get(&key(1)).unwrap();
        assert_eq!((k.version, &*k.body), (9, &b"nine!!"[..]));
        assert_eq!(l.bytes(), 6, "the replaced body is not counted");
    }

    #[test]
    fn the_oldest_go_first_and_the_bound_holds() {
        let l = Listings::new(80);
        for i in 0..10 {
            l.put(key(i), 1, &[0; 10]);
        }
        assert!(l.bytes() <= 80);
        assert!(l.get(&key(0)).is_none() && l.get(&key(1)).is_none());
        assert!(l.get(&key(9)).is_some() && l.get(&key(2)).is_some());
        // A key put again is young again.
        l.put(key(2), 2, &[0; 10]);
        l.put(key(10), 1, &[0; 10]);
        assert!(l.get(&key(2)).is_some(), "put again: not the oldest");
        assert!(l.get(&key(3)).is_none());
        // Too large for the cache: not kept, nothing pushed out.
        l.put(key(11), 1, &[0; 11]);
        assert!(l.get(&key(11)).is_none());
        assert_eq!(l.bytes(), 80);
    }

    #[test]
    fn a_key_put_again_and_again_leaves_no_pile_of_places() {
        let l = Listings::new(1 << 20);
        for v in 0..10_000 {
            l.put(key(1), v, b"x");
        }
        let inner = l.inner.lock().unwrap();
        assert!(inner.order.len() <= 2 * inner.map.len() + 65);
    }

    #[test]
    fn a_cache_of_nothing_keeps_nothing() {
        let l = Listings::new(0);
        l.put(key(1), 1, b"");
        l.put(key(2), 1, b"x");
        assert!(l.get(&key(1)).is_none() && l.get(&key(2)).is_none());
    }
}
