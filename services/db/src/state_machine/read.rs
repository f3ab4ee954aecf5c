//! What readers see: the [`ReadView`] the raft thread publishes, and the
//! queries on it (ranges now and in the past, read-only txns, history for
//! watches).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use agenda_proto::db::{
    compare, request_op, response_op, Compare, Event, KeyValue, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use imbl::OrdMap;

use super::limits::validate_key;
use super::{Key, StateMachine};
use crate::error::{Error, Result};

/// What readers see of the state: the keys, history and revisions. The raft
/// thread publishes one after every apply batch; it shares all unchanged
/// tree nodes with the live state, and a reader holds it as long as it
/// likes without holding anything up, like a read transaction. Dedup
/// records and leases stay out: copying their trees on every publish would
/// cost the raft thread for nothing.
#[derive(Clone)]
pub struct ReadView {
    /// Store revision of this view.
    pub revision: i64,
    /// Oldest revision whose history is gone.
    pub compact_revision: i64,
    /// When the view was taken from the state (how stale it may be).
    pub taken: Instant,
    kv: OrdMap<Key, Arc<KeyValue>>,
    history: OrdMap<i64, Arc<Vec<Event>>>,
}

impl StateMachine {
    /// What readers get to see of the current state (O(1)).
    pub fn view(&self) -> ReadView {
        ReadView {
            revision: self.revision,
            compact_revision: self.compact_revision,
            taken: Instant::now(),
            kv: self.t.kv.clone(),
            history: self.t.history.clone(),
        }
    }
}

/// Checks a range request's fields.
pub fn validate_range(r: &RangeRequest) -> Result<()> {
    validate_key(&r.key, r.prefix)?;
    if r.prefix && !r.range_end.is_empty() {
        return Err(Error::InvalidArgument(
            "give either prefix or range_end, not both".into(),
        ));
    }
    if r.limit < 0 {
        return Err(Error::InvalidArgument("limit must not be negative".into()));
    }
    if r.revision < 0 {
        return Err(Error::InvalidArgument(
            "revision must not be negative".into(),
        ));
    }
    Ok(())
}

/// The first key after every key that starts with `prefix`, or `None` when
/// no such key exists (an empty or all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether `key` falls in what `(key, prefix)` selects.
pub fn selects(sel_key: &[u8], prefix: bool, key: &[u8]) -> bool {
    if prefix {
        key.starts_with(sel_key)
    } else {
        key == sel_key
    }
}

/// Whether `key` falls in what a range request selects: one key, a
/// prefix, or `[key, range_end)`.
fn range_selects(req: &RangeRequest, key: &[u8]) -> bool {
    if req.range_end.is_empty() {
        selects(&req.key, req.prefix, key)
    } else {
        req.key.as_slice() <= key && key < req.range_end.as_slice()
    }
}

/// Range over the current keys (used by reads and by txn range ops).
///
/// With a limit (and not `count_only`) the walk stops at the first
/// matching key past the limit: a page costs its own keys, not the rest of
/// the span, so `count` is then the keys returned plus one if `more`.
/// Without a limit, or with `count_only`, every matching key is visited and
/// `count` is exact.
pub(super) fn range(kv: &OrdMap<Key, Arc<KeyValue>>, req: &RangeRequest) -> RangeResponse {
    let fresh = |v: &KeyValue| v.mod_revision > req.min_mod_revision;
    if !req.prefix && req.range_end.is_empty() {
        let mut resp = RangeResponse::default();
        if let Some(v) = kv.get(req.key.as_slice()).filter(|v| fresh(v)) {
            resp.count = 1;
            if !req.count_only {
                resp.kvs.push(KeyValue::clone(v));
            }
        }
        return resp;
    }
    if !req.range_end.is_empty() && req.range_end <= req.key {
        return RangeResponse::default();
    }
    let end = if req.range_end.is_empty() {
        prefix_end(&req.key)
    } else {
        Some(req.range_end.clone())
    };
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
        Bound::Included(req.key.as_slice()),
        match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        },
    );
    page(
        kv.range::<_, [u8]>(bounds)
            .map(|(_, v)| v.as_ref())
            .filter(|v| fresh(v)),
        req,
    )
}

/// Fills a response from the matching keys of a span, in key order: every
/// key for `count_only` or no limit, else at most one key past the limit
/// (enough to know `more`). Taking an iterator lets the tests count the
/// keys visited.
fn page<'a>(matching: impl Iterator<Item = &'a KeyValue>, req: &RangeRequest) -> RangeResponse {
    let mut resp = RangeResponse::default();
    if req.count_only {
        resp.count = matching.count() as i64;
        return resp;
    }
    for v in matching {
        if req.limit > 0 && resp.kvs.len() as i64 >= req.limit {
            resp.more = true;
            break;
        }
        resp.kvs.push(v.clone());
    }
    resp.count = resp.kvs.len() as i64 + i64::from(resp.more);
    resp
}

/// Range as of `req.revision` (0 = now), undoing newer history.
pub fn range_at(sm: &ReadView, req: &RangeRequest) -> Result<RangeResponse> {
    let header = Some(ResponseHeader {
        revision: sm.revision,
        ..Default::default()
    });
    if req.revision == 0 || req.revision >= sm.revision {
        let mut resp = range(&sm.kv, req);
        resp.header = header;
        return Ok(resp);
    }
    if req.revision < sm.compact_revision {
        return Err(Error::Compacted {
            requested: req.revision,
            oldest: sm.compact_revision,
        });
    }
    let all = range(
        &sm.kv,
        &RangeRequest {
            key: req.key.clone(),
            prefix: req.prefix,
            range_end: req.range_end.clone(),
            ..Default::default()
        },
    );
    let mut state: BTreeMap<Vec<u8>, KeyValue> =
        all.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    for (_, events) in sm.history.range(req.revision + 1..).rev() {
        for ev in events.iter().rev() {
            let Some(kv) = &ev.kv else { continue };
            if !range_selects(req, &kv.key) {
                continue;
            }
            match &ev.prev_kv {
                Some(prev) => state.insert(kv.key.clone(), prev.clone()),
                None => state.remove(&kv.key),
            };
        }
    }
    // The same `count` as now, though the whole span is at hand here: a
    // client must not see its meaning change with the revision it asks for.
    let mut resp = page(
        state
            .values()
            .filter(|kv| kv.mod_revision > req.min_mod_revision),
        req,
    );
    resp.header = header;
    Ok(resp)
}

/// Runs a read-only txn on one state: the compares against the current
/// keys pick the branch, whose ranges each read as of their own revision
/// (0: the state's).
pub fn read_txn(sm: &ReadView, req: &TxnRequest) -> Result<TxnResponse> {
    for c in &req.compare {
        validate_key(&c.key, false)?;
    }
    let ranges = |ops: &[RequestOp]| -> Result<Vec<RangeRequest>> {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::Range(r)) => validate_range(r).map(|()| r.clone()),
                _ => Err(Error::InvalidArgument("not a read-only txn".into())),
            })
            .collect()
    };
    let (success, failure) = (ranges(&req.success)?, ranges(&req.failure)?);
    let succeeded = req
        .compare
        .iter()
        .all(|c| compare_holds(c, sm.kv.get(c.key.as_slice()).map(|kv| kv.as_ref())));
    let mut responses = Vec::new();
    for r in if succeeded { success } else { failure } {
        responses.push(ResponseOp {
            response: Some(response_op::Response::Range(range_at(sm, &r)?)),
        });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader {
            revision: sm.revision,
            ..Default::default()
        }),
        succeeded,
        responses,
    })
}

/// Revisions after `from` (inclusive) still in history, oldest first.
pub fn history_since(sm: &ReadView, from: i64) -> Vec<(i64, Arc<Vec<Event>>)> {
    sm.history
        .range(from..)
        .map(|(rev, events)| (*rev, events.clone()))
        .collect()
}

/// Evaluates one txn compare against a key's current state.
pub fn compare_holds(c: &Compare, kv: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering;
    let target = compare::Target::try_from(c.target).unwrap_or(compare::Target::Value);
    let ord = match target {
        compare::Target::Value => match kv {
            Some(kv) => kv.value.as_slice().cmp(c.value.as_slice()),
            None => return false,
        },
        other => {
            let have = kv.map_or(0, |kv| match other {
                compare::Target::Version => kv.version,
                compare::Target::ModRevision => kv.mod_revision,
                compare::Target::CreateRevision => kv.create_revision,
                _ => kv.lease,
            });
            have.cmp(&c.number)
        }
    };
    match compare::Result::try_from(c.result).unwrap_or(compare::Result::Equal) {
        compare::Result::Equal => ord == Ordering::Equal,
        compare::Result::NotEqual => ord != Ordering::Equal,
        compare::Result::Less => ord == Ordering::Less,
        compare::Result::Greater => ord == Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::fixture::*;
    use agenda_proto::db::PutRequest;
    use agenda_proto::raft::{command, command_error};

    #[test]
    fn compare_semantics_for_missing_keys_and_orders() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"b".to_vec(),
            version: 3,
            mod_revision: 9,
            ..Default::default()
        };
        let c =
            |target: compare::Target, result: compare::Result, value: &str, number: i64| Compare {
                key: b"k".to_vec(),
                target: target as i32,
                result: result as i32,
                value: value.into(),
                number,
            };
        use compare::{Result as R, Target as T};
        assert!(compare_holds(&c(T::Value, R::Equal, "b", 0), Some(&kv)));
        assert!(compare_holds(&c(T::Value, R::Greater, "a", 0), Some(&kv)));
        assert!(compare_holds(&c(T::Value, R::Less, "c", 0), Some(&kv)));
        assert!(!compare_holds(&c(T::Value, R::NotEqual, "x", 0), None));
        assert!(compare_holds(&c(T::Version, R::Equal, "", 0), None));
        assert!(compare_holds(
            &c(T::ModRevision, R::Greater, "", 8),
            Some(&kv)
        ));
        assert!(compare_holds(&c(T::Version, R::NotEqual, "", 2), Some(&kv)));
    }

    #[test]
    fn a_read_only_txn_reads_one_snapshot_under_its_compares() {
        let mut f = Fixture::new();
        f.apply("1", put("v", "1"));
        f.apply("2", put("a/1", "x"));
        f.apply("3", put("a/1", "y"));
        let range = |key: &str, revision: i64| RequestOp {
            request: Some(request_op::Request::Range(RangeRequest {
                key: key.into(),
                prefix: true,
                revision,
                ..Default::default()
            })),
        };
        let read = |version_rev: i64| TxnRequest {
            compare: vec![Compare {
                key: b"v".to_vec(),
                target: compare::Target::ModRevision as i32,
                result: compare::Result::Equal as i32,
                number: version_rev,
                ..Default::default()
            }],
            success: vec![range("a/", 0), range("a/", 2)],
            failure: vec![range("v", 0)],
            request_id: String::new(),
        };
        assert!(read(1).is_read_only());
        let values = |resp: &TxnResponse| -> Vec<Vec<u8>> {
            resp.responses
                .iter()
                .map(|r| match &r.response {
                    Some(response_op::Response::Range(r)) => r.kvs[0].value.clone(),
                    other => panic!("range expected, got {other:?}"),
                })
                .collect()
        };
        let held = read_txn(&f.sm.view(), &read(1)).unwrap();
        assert!(held.succeeded);
        assert_eq!(held.header.unwrap().revision, 3);
        assert_eq!(values(&held), vec![b"y".to_vec(), b"x".to_vec()]);
        let failed = read_txn(&f.sm.view(), &read(2)).unwrap();
        assert!(!failed.succeeded);
        assert_eq!(values(&failed), vec![b"1".to_vec()]);
        // A txn that writes reads the latest state only.
        let mut write = read(1);
        write.success.push(RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: b"w".to_vec(),
                ..Default::default()
            })),
        });
        assert!(!write.is_read_only());
        let (r, _) = f.apply("4", command::Op::Txn(write));
        assert_eq!(error_code(&r), Some(command_error::Code::InvalidArgument));
    }

    #[test]
    fn min_mod_revision_keeps_only_what_changed_since() {
        let mut f = Fixture::new();
        for k in ["a/1", "a/2", "a/3"] {
            f.apply(k, put(k, "x"));
        }
        let before = f.sm.view().revision;
        f.apply("late", put("a/2", "y"));
        let sm = f.sm.view();
        let since = |rev: i64, at: i64| -> Vec<String> {
            range_at(
                &sm,
                &RangeRequest {
                    key: b"a/".to_vec(),
                    prefix: true,
                    min_mod_revision: rev,
                    revision: at,
                    ..Default::default()
                },
            )
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
        };
        assert_eq!(since(before, 0), ["a/2"]);
        assert_eq!(since(0, 0).len(), 3);
        assert!(since(sm.revision, 0).is_empty());
        // As of a past revision, filtered by the revisions of then.
        assert!(since(before, before).is_empty());
        let one = |rev: i64| {
            range_at(
                &sm,
                &RangeRequest {
                    key: b"a/1".to_vec(),
                    min_mod_revision: rev,
                    ..Default::default()
                },
            )
            .unwrap()
            .count
        };
        assert_eq!((one(0), one(before)), (1, 0));
    }

    #[test]
    fn range_end_selects_a_half_open_span_now_and_in_the_past() {
        let mut f = Fixture::new();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            f.apply(k, put(k, "x"));
        }
        f.apply("late", put("a/2", "y"));
        f.apply("late2", put("a/25", "z"));
        let sm = f.sm.view();
        let span = |rev: i64, from: &str, to: &str| -> Vec<(String, String)> {
            range_at(
                &sm,
                &RangeRequest {
                    key: from.into(),
                    range_end: to.into(),
                    revision: rev,
                    ..Default::default()
                },
            )
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).unwrap(),
                    String::from_utf8(kv.value).unwrap(),
                )
            })
            .collect()
        };
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(span(0, "a/2", "a/3"), vec![kv("a/2", "y"), kv("a/25", "z")]);
        // As of revision 4: before the overwrite and the new key.
        assert_eq!(span(4, "a/2", "a/3"), vec![kv("a/2", "x")]);
        assert_eq!(span(0, "a/3", "b/2").len(), 2);
        assert!(
            span(0, "b", "a").is_empty(),
            "an empty span selects nothing"
        );
        let both = RangeRequest {
            key: b"a".to_vec(),
            prefix: true,
            range_end: b"b".to_vec(),
            ..Default::default()
        };
        assert!(validate_range(&both).is_err());
    }

    #[test]
    fn past_revisions_are_readable_until_compacted() {
        let mut f = Fixture::new();
        f.sm.history_keep = 3;
        for i in 1..=5 {
            f.apply(&format!("p{i}"), put("k", &i.to_string()));
        }
        f.apply("d", delete("k"));
        let view = f.sm.view();
        let at = |rev: i64| {
            range_at(
                &view,
                &RangeRequest {
                    key: b"k".to_vec(),
                    revision: rev,
                    ..Default::default()
                },
            )
        };
        assert_eq!(at(5).unwrap().kvs[0].value, b"5");
        assert_eq!(at(4).unwrap().kvs[0].value, b"4");
        assert!(at(6).unwrap().kvs.is_empty());
        assert!(matches!(at(1), Err(Error::Compacted { .. })));
        let hist = history_since(&view, f.sm.compact_revision + 1);
        assert_eq!(hist.len(), 3);
    }

    #[test]
    fn a_published_view_does_not_see_later_writes() {
        let mut f = Fixture::new();
        f.apply("1", put("k", "old"));
        let view = f.sm.view();
        f.apply("2", put("k", "new"));
        f.apply("3", put("other", "x"));
        let read = |v: &ReadView, key: &str| {
            range_at(
                v,
                &RangeRequest {
                    key: key.into(),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        assert_eq!(read(&view, "k").kvs[0].value, b"old");
        assert!(read(&view, "other").kvs.is_empty());
        assert_eq!(read(&view, "k").header.unwrap().revision, 1);
        assert_eq!(read(&f.sm.view(), "k").kvs[0].value, b"new");
    }

    #[test]
    fn a_limited_read_counts_the_page_plus_one_if_more_matched() {
        let mut f = Fixture::new();
        for k in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"] {
            f.apply(k, put(k, "x"));
        }
        let then = f.sm.view().revision;
        f.apply("late", put("a/4", "y"));
        f.apply("gone", delete("a/1"));
        let sm = f.sm.view();
        let read = |limit: i64, count_only: bool, revision: i64, min_mod: i64| {
            let resp = range_at(
                &sm,
                &RangeRequest {
                    key: b"a/".to_vec(),
                    prefix: true,
                    limit,
                    count_only,
                    revision,
                    min_mod_revision: min_mod,
                    ..Default::default()
                },
            )
            .unwrap();
            (resp.kvs.len(), resp.more, resp.count)
        };
        // Now: a/2..a/5.
        assert_eq!(read(2, false, 0, 0), (2, true, 3));
        assert_eq!(read(3, false, 0, 0), (3, true, 4));
        assert_eq!(read(4, false, 0, 0), (4, false, 4), "exactly the limit");
        assert_eq!(read(9, false, 0, 0), (4, false, 4));
        assert_eq!(read(0, false, 0, 0), (4, false, 4), "no limit: exact");
        assert_eq!(read(2, true, 0, 0), (0, false, 4), "count_only: exact");
        // Only the keys changed since count toward the limit.
        assert_eq!(read(1, false, 0, then), (1, false, 1));
        // As of a past revision (a/1..a/5), the same meaning of count.
        assert_eq!(read(2, false, then, 0), (2, true, 3));
        assert_eq!(read(5, false, then, 0), (5, false, 5));
        assert_eq!(read(2, true, then, 0), (0, false, 5));
        // The same over a span ending past the prefix.
        let span = range(
            &f.sm.t.kv,
            &RangeRequest {
                key: b"a/3".to_vec(),
                range_end: b"b/2".to_vec(),
                limit: 1,
                ..Default::default()
            },
        );
        assert_eq!((span.kvs.len(), span.more, span.count), (1, true, 2));
        assert_eq!(span.kvs[0].key, b"a/3");
    }

    #[test]
    fn a_page_of_a_big_span_visits_one_key_past_its_limit() {
        let kv: OrdMap<Key, Arc<KeyValue>> = (0..10_000)
            .map(|i| {
                let key = format!("k/{i:05}").into_bytes();
                let v = KeyValue {
                    key: key.clone(),
                    mod_revision: i + 1,
                    ..Default::default()
                };
                (Key::from(key), Arc::new(v))
            })
            .collect();
        let visits = |req: &RangeRequest| {
            let mut visited = 0;
            let resp = page(
                kv.values().map(|v| v.as_ref()).inspect(|_| visited += 1),
                req,
            );
            assert_eq!(resp, range(&kv, req), "range() pages the same way");
            (visited, resp.kvs.len(), resp.more, resp.count)
        };
        let req = |limit: i64, count_only: bool| RangeRequest {
            key: b"k/".to_vec(),
            prefix: true,
            limit,
            count_only,
            ..Default::default()
        };
        assert_eq!(visits(&req(100, false)), (101, 100, true, 101));
        assert_eq!(visits(&req(0, false)), (10_000, 10_000, false, 10_000));
        // Asking for the count is asking for the whole walk.
        assert_eq!(visits(&req(100, true)), (10_000, 0, false, 10_000));
    }

    #[test]
    fn prefix_end_handles_edge_bytes() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
