//! Transactions on agenda-db that apply the domain rules atomically.
//!
//! Every change follows one pattern: read what the decision depends on
//! (including the version keys of [`crate::keys`]), decide with the pure
//! rules, then commit in one transaction that compares those versions.
//! If another writer got there first the compare fails and the change is
//! decided again on fresh data, so concurrent requests on any replicas end
//! as if one central server had run them one after the other.
//!
//! Submodules: [`users`], [`events`], [`groups`], [`notifications`],
//! [`feeds`] (iCalendar feeds), [`imports`] (iCalendar files in),
//! [`app_passwords`], [`dav`] (CalDAV calendars and their sync),
//! [`reminders`] (filed by when due, fired once),
//! [`audit`] (reading the audit log),
//! [`sessions`] (token generations and refresh chains), [`upgrade`] (data
//! of earlier versions).

pub mod app_passwords;
pub mod audit;
pub mod dav;
pub mod events;
pub mod feeds;
pub mod groups;
pub mod imports;
pub mod notifications;
pub mod reminders;
pub mod sessions;
pub mod upgrade;
pub mod users;

use std::future::Future;
use std::time::Duration;

use agenda_common::DbClient;
use agenda_proto::db::{
    compare, request_op, response_op, Compare, DeleteRequest, KeyValue, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// How many times a change is decided again after losing a race.
const MAX_ATTEMPTS: u32 = 64;

/// Keys per read of [`Store::scan`]: about 1 MB of accounts.
pub const SCAN_PAGE: usize = 2_000;

/// The calendar's view of agenda-db.
#[derive(Clone)]
pub struct Store {
    db: DbClient,
    /// The key of the keyed hashes (`app_passwords`), once read.
    secret: std::sync::Arc<std::sync::OnceLock<Vec<u8>>>,
}

/// A value read together with the revision it was last changed at (0 if
/// absent), for the compare of the transaction that follows.
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// One read of a [`Store::snapshot`].
pub struct Read(RangeRequest);

impl Read {
    /// One key.
    pub fn key(key: &str) -> Read {
        Read(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
    }

    /// Every key under `prefix`.
    pub fn prefix(prefix: &str) -> Read {
        Read(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            prefix: true,
            ..Default::default()
        })
    }

    /// Every key in `[start, end)`.
    pub fn span(start: &str, end: &str) -> Read {
        Read(RangeRequest {
            key: start.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
            ..Default::default()
        })
    }

    /// At most `n` keys (the first ones).
    pub fn limit(mut self, n: i64) -> Read {
        self.0.limit = n;
        self
    }

    /// Only the number of keys, every one counted (see [`Snapshot::count`]).
    pub fn count_only(mut self) -> Read {
        self.0.count_only = true;
        self
    }

    /// Only keys changed after `revision` (0: all).
    pub fn changed_after(mut self, revision: i64) -> Read {
        self.0.min_mod_revision = revision;
        self
    }

    /// As of a past `revision` (0: the snapshot's own).
    pub fn at(mut self, revision: i64) -> Read {
        self.0.revision = revision;
        self
    }
}

/// What a [`Store::snapshot`] read, in the order of its reads.
pub struct Snapshot {
    /// The store's revision at the read.
    pub revision: i64,
    results: Vec<Vec<KeyValue>>,
    counts: Vec<i64>,
}

impl Snapshot {
    /// Revision of read `i`'s key (0 when absent), for a later compare.
    pub fn mod_revision(&self, i: usize) -> i64 {
        self.raw(i).first().map_or(0, |kv| kv.mod_revision)
    }

    /// Read `i` as one JSON value.
    pub fn value<T: DeserializeOwned>(&self, i: usize) -> ApiResult<Option<Versioned<T>>> {
        self.raw(i).first().map(decode).transpose()
    }

    /// Read `i` as JSON values, in key order.
    pub fn values<T: DeserializeOwned>(&self, i: usize) -> ApiResult<Vec<Versioned<T>>> {
        self.raw(i).iter().map(decode).collect()
    }

    /// Read `i` as JSON values with their keys, in key order.
    pub fn entries<T: DeserializeOwned>(&self, i: usize) -> ApiResult<Vec<(String, Versioned<T>)>> {
        self.raw(i)
            .iter()
            .map(|kv| Ok((String::from_utf8_lossy(&kv.key).into_owned(), decode(kv)?)))
            .collect()
    }

    /// The keys of read `i`, in key order.
    pub fn keys(&self, i: usize) -> Vec<String> {
        self.raw(i)
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    /// Read `i` as an index: the id each key ends in, with its revision.
    pub fn ids(&self, i: usize) -> Vec<(uuid::Uuid, i64)> {
        self.raw(i)
            .iter()
            .filter_map(|kv| Some((crate::keys::last_id(&kv.key)?, kv.mod_revision)))
            .collect()
    }

    /// The number of keys read `i` matched: every one for a
    /// [`Read::count_only`] or a read without a limit (agenda-db's
    /// `RangeResponse.count`).
    pub fn count(&self, i: usize) -> i64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    fn raw(&self, i: usize) -> &[KeyValue] {
        self.results.get(i).map_or(&[], Vec::as_slice)
    }
}

/// The writes and guards of one transaction.
#[derive(Default)]
pub struct Batch {
    compares: Vec<Compare>,
    ops: Vec<RequestOp>,
    /// People this batch adds notifications for: how many, and whether one
    /// of them was drawn to trim the person's list once committed
    /// ([`notifications::add`]).
    notified: std::collections::BTreeMap<uuid::Uuid, (usize, bool)>,
}

impl Batch {
    /// Requires `key` to be unchanged since `mod_revision` (0: absent).
    pub fn unchanged(&mut self, key: &str, mod_revision: i64) -> &mut Self {
        self.compares.push(Compare {
            key: key.as_bytes().to_vec(),
            target: compare::Target::ModRevision as i32,
            result: compare::Result::Equal as i32,
            number: mod_revision,
            ..Default::default()
        });
        self
    }

    /// Requires `key`'s version (puts since it was created; 0: absent) to
    /// be `version`.
    pub fn at_version(&mut self, key: &str, version: i64) -> &mut Self {
        self.compares.push(Compare {
            key: key.as_bytes().to_vec(),
            target: compare::Target::Version as i32,
            result: compare::Result::Equal as i32,
            number: version,
            ..Default::default()
        });
        self
    }

    /// Requires `key` to exist.
    pub fn exists(&mut self, key: &str) -> &mut Self {
        self.compares.push(Compare {
            key: key.as_bytes().to_vec(),
            target: compare::Target::Version as i32,
            result: compare::Result::Greater as i32,
            number: 0,
            ..Default::default()
        });
        self
    }

    /// Writes `value` as JSON.
    pub fn put(&mut self, key: &str, value: &impl Serialize) -> ApiResult<&mut Self> {
        let value = serde_json::to_vec(value).map_err(ApiError::internal)?;
        Ok(self.put_raw(key, value))
    }

    /// Writes raw bytes.
    pub fn put_raw(&mut self, key: &str, value: Vec<u8>) -> &mut Self {
        self.ops.push(RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                ..Default::default()
            })),
        });
        self
    }

    /// Touches a version key (its mod_revision moves on).
    pub fn bump(&mut self, key: &str) -> &mut Self {
        self.put_raw(key, Vec::new())
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &str) -> &mut Self {
        self.ops.push(RequestOp {
            request: Some(request_op::Request::Delete(DeleteRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        });
        self
    }

    /// Deletes every key under `prefix`.
    pub fn delete_prefix(&mut self, prefix: &str) -> &mut Self {
        self.ops.push(RequestOp {
            request: Some(request_op::Request::Delete(DeleteRequest {
                key: prefix.as_bytes().to_vec(),
                prefix: true,
                ..Default::default()
            })),
        });
        self
    }
}

/// Outcome of one optimistic attempt.
pub enum Attempt<T> {
    /// Decided and committed (or failed for good).
    Done(T),
    /// Lost a race: decide again on fresh data.
    Retry,
}

impl<T> Attempt<T> {
    /// Maps the decided value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Attempt::Done(v) => Attempt::Done(f(v)),
            Attempt::Retry => Attempt::Retry,
        }
    }
}

impl Store {
    /// A store over `db`.
    pub fn new(db: DbClient) -> Self {
        Store {
            db,
            secret: Default::default(),
        }
    }

    /// The underlying client.
    pub fn db(&self) -> &DbClient {
        &self.db
    }

    /// Reads one JSON value.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> ApiResult<Option<Versioned<T>>> {
        match self.db.get(key.as_bytes().to_vec()).await? {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// Reads one JSON value from the leader's replica as it stands, without
    /// a ReadIndex round: it may miss a write in flight, so a caller
    /// guards what it decides on with compares (and reads with [`get`]
    /// after a lost race).
    ///
    /// [`get`]: Store::get
    pub async fn get_unconfirmed<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> ApiResult<Option<Versioned<T>>> {
        let resp = self
            .db
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                stale: true,
                ..Default::default()
            })
            .await?;
        resp.kvs.first().map(decode).transpose()
    }

    /// Revision of a key (0 when absent), for a later compare.
    pub async fn revision(&self, key: &str) -> ApiResult<i64> {
        Ok(self
            .db
            .get(key.as_bytes().to_vec())
            .await?
            .map_or(0, |kv| kv.mod_revision))
    }

    /// Reads several keys, prefixes or spans in one consistent snapshot,
    /// in one round trip, if every guard `(key, mod_revision)` still holds
    /// (None when one does not: something changed, decide again).
    pub async fn snapshot(
        &self,
        guards: &[(String, i64)],
        reads: impl IntoIterator<Item = Read>,
    ) -> ApiResult<Option<Snapshot>> {
        let mut batch = Batch::default();
        for (key, rev) in guards {
            batch.unchanged(key, *rev);
        }
        let resp = self
            .db
            .txn(TxnRequest {
                compare: batch.compares,
                success: reads
                    .into_iter()
                    .map(|r| RequestOp {
                        request: Some(request_op::Request::Range(r.0)),
                    })
                    .collect(),
                failure: Vec::new(),
                request_id: String::new(),
            })
            .await?;
        if !resp.succeeded {
            return Ok(None);
        }
        let (results, counts) = resp
            .responses
            .into_iter()
            .map(|r| match r.response {
                Some(response_op::Response::Range(r)) => Ok((r.kvs, r.count)),
                other => Err(ApiError::internal(format!(
                    "a read-only txn answered {other:?}"
                ))),
            })
            .collect::<ApiResult<Vec<_>>>()?
            .into_iter()
            .unzip();
        Ok(Some(Snapshot {
            revision: resp.header.map_or(0, |h| h.revision),
            results,
            counts,
        }))
    }

    /// Every JSON value under `prefix`, in key order, handed to `each`
    /// with its key a page of [`SCAN_PAGE`] keys at a time (see
    /// [`Store::scan_raw`]).
    pub async fn scan<T: DeserializeOwned>(
        &self,
        prefix: &str,
        mut each: impl FnMut(String, Versioned<T>),
    ) -> ApiResult<()> {
        let mut failed = None;
        self.scan_raw(prefix, |kv| match decode(&kv) {
            Ok(v) => each(String::from_utf8_lossy(&kv.key).into_owned(), v),
            Err(e) => {
                failed.get_or_insert(e);
            }
        })
        .await?;
        failed.map_or(Ok(()), Err)
    }

    /// Every key under `prefix` with its value, undecoded, in key order,
    /// read [`SCAN_PAGE`] keys at a time: no read is larger than a page
    /// however much the prefix holds (one read of every account passed
    /// the client's 64 MiB at 200,000 people). The pages are separate
    /// reads, so a key changed during the walk may be seen either way.
    pub async fn scan_raw(&self, prefix: &str, mut each: impl FnMut(KeyValue)) -> ApiResult<()> {
        let end = crate::keys::prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        loop {
            let read = Read(RangeRequest {
                key: start.clone(),
                range_end: end.as_bytes().to_vec(),
                limit: SCAN_PAGE as i64,
                ..Default::default()
            });
            let Some(mut snap) = self.snapshot(&[], [read]).await? else {
                return Ok(());
            };
            let page = std::mem::take(&mut snap.results[0]);
            let full = page.len() == SCAN_PAGE;
            for kv in page {
                // Just past it: the next key in byte order.
                start = kv.key.clone();
                start.push(0);
                each(kv);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Every JSON value under `prefix`, in key order.
    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> ApiResult<Vec<Versioned<T>>> {
        self.keys(prefix, 0).await?.iter().map(decode).collect()
    }

    /// The ids an index lists: the last segment of each key under
    /// `prefix` (indexes such as a person's groups hold empty values).
    pub async fn indexed_ids(&self, prefix: &str) -> ApiResult<Vec<uuid::Uuid>> {
        Ok(self
            .keys(prefix, 0)
            .await?
            .iter()
            .filter_map(|kv| crate::keys::last_id(&kv.key))
            .collect())
    }

    /// The records at `key(id)` for each of `ids`, read at once; those
    /// gone meanwhile are left out.
    pub async fn records<T: DeserializeOwned>(
        &self,
        ids: impl IntoIterator<Item = uuid::Uuid>,
        key: impl Fn(uuid::Uuid) -> String,
    ) -> ApiResult<Vec<Versioned<T>>> {
        let reads = ids.into_iter().map(|id| {
            let k = key(id);
            async move { self.get::<T>(&k).await }
        });
        Ok(futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Raw entries under `prefix` (`limit` 0: all).
    pub async fn keys(&self, prefix: &str, limit: i64) -> ApiResult<Vec<KeyValue>> {
        let resp = self
            .db
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                prefix: true,
                limit,
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs)
    }

    /// Commits `batch` if its compares hold; false when they do not.
    pub async fn commit(&self, batch: Batch) -> ApiResult<bool> {
        Ok(self.commit_at(batch).await?.is_some())
    }

    /// Like [`Store::commit`], returning the revision of the commit.
    pub async fn commit_at(&self, mut batch: Batch) -> ApiResult<Option<i64>> {
        let notified = std::mem::take(&mut batch.notified);
        let revision = self.commit_untrimmed(batch).await?;
        if revision.is_some() {
            self.trim_notified(notified).await;
        }
        Ok(revision)
    }

    /// Commits `batch` without the trims of notification lists it asks
    /// for (what a trim's own deletes commit with).
    async fn commit_untrimmed(&self, batch: Batch) -> ApiResult<Option<i64>> {
        let resp = self
            .db
            .txn(TxnRequest {
                compare: batch.compares,
                success: batch.ops,
                failure: Vec::new(),
                request_id: String::new(),
            })
            .await?;
        Ok(resp
            .succeeded
            .then(|| resp.header.map_or(0, |h| h.revision)))
    }

    /// Commits `batch`: [`Attempt::Done`] with `value` when its compares
    /// held, [`Attempt::Retry`] when another writer got there first.
    pub async fn commit_or_retry<T>(&self, batch: Batch, value: T) -> ApiResult<Attempt<T>> {
        Ok(if self.commit(batch).await? {
            Attempt::Done(value)
        } else {
            Attempt::Retry
        })
    }

    /// Like [`Store::optimistic`], for attempts that may read without a
    /// ReadIndex round: `attempt(confirmed)` runs first with `confirmed`
    /// false (reads as the leader's replica stands, their revisions
    /// guarded by the write's compares, so stale data only loses the
    /// race) and then with `confirmed` true. A refusal (4xx) decided on
    /// unconfirmed reads is decided again: none is given on stale data.
    pub async fn optimistic_unconfirmed_first<T, F, Fut>(
        &self,
        what: &str,
        mut attempt: F,
    ) -> ApiResult<T>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = ApiResult<Attempt<T>>>,
    {
        let mut confirmed = false;
        self.optimistic(what, || {
            let this = std::mem::replace(&mut confirmed, true);
            let decided = attempt(this);
            async move { confirm_refusal(this, decided.await) }
        })
        .await
    }

    /// Runs `attempt` until it is [`Attempt::Done`], with a short random
    /// back-off between rounds so racing writers spread out.
    pub async fn optimistic<T, F, Fut>(&self, what: &str, mut attempt: F) -> ApiResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ApiResult<Attempt<T>>>,
    {
        for round in 0..MAX_ATTEMPTS {
            match attempt().await? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry => {
                    let max = 2 + u64::from(round.min(8)) * 4;
                    let pause = rand::rng().random_range(0..=max);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
        tracing::warn!(what, "gave up after {MAX_ATTEMPTS} lost races");
        Err(ApiError::unavailable(format!(
            "too many concurrent changes to {what}; retry"
        )))
    }
}

/// A refusal decided on unconfirmed reads becomes another round.
fn confirm_refusal<T>(confirmed: bool, decided: ApiResult<Attempt<T>>) -> ApiResult<Attempt<T>> {
    match decided {
        Err(e) if !confirmed && e.kind.is_refusal() => Ok(Attempt::Retry),
        other => other,
    }
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> ApiResult<Versioned<T>> {
    let value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored value at {} does not decode: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    Ok(Versioned {
        value,
        mod_revision: kv.mod_revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confirmed_reads_give_a_refusal() {
        let refused = || -> ApiResult<Attempt<()>> { Err(ApiError::not_found("event")) };
        assert!(matches!(
            confirm_refusal(false, refused()),
            Ok(Attempt::Retry)
        ));
        assert_eq!(
            confirm_refusal(true, refused()).err().map(|e| e.kind),
            Some(crate::error::ErrorKind::NotFound)
        );
        let broken = || -> ApiResult<Attempt<()>> { Err(ApiError::internal("disk")) };
        assert!(
            confirm_refusal(false, broken()).is_err(),
            "a 5xx is not retried"
        );
        assert!(matches!(
            confirm_refusal(false, Ok(Attempt::Done(()))),
            Ok(Attempt::Done(()))
        ));
    }
}
