//! Raft log, hard state and conf state: raft-rs's `Storage`, backed by redb.
//!
//! The log and the hard state live in the log file (`raft-log.redb`),
//! committed with an fsync on every Ready that must sync. The conf state
//! belongs to the state machine: it is the configuration as of the applied
//! index, saved with the state (`state_file.rs`). Writes happen only inside
//! transactions opened by the node loop. The newest part of the log is
//! also kept in memory (at most [`MEMORY_LOG_BYTES`], see
//! [`RaftStorage::trim_memory`]): raft-rs reads it on every append and
//! heartbeat. Older entries, back to the last compaction, are read from the
//! log file when asked for (a follower far behind, a restart's replay):
//! the log is compacted only once a state file covers it, and that file
//! comes after about the state's own size of log, so the whole live log in
//! memory grew with the store (a 663 MB state kept ~1 GB of log per node).
//!
//! What callers may rely on: `first_index() == truncated index + 1`,
//! `term(truncated index)` always answers, after `apply_snapshot` the log
//! is empty and starts right after the snapshot, and the log is never
//! compacted past the state file's applied index (the node's job), so a
//! restart can always replay what the state file does not hold.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, ReadableDatabase, WriteTransaction};

use crate::error::{Error, Result};
use crate::schema::{self, LOG, META};
use crate::state_machine::{Published, StateMachine};

/// Most bytes of log entries kept in memory. Followers in step, and any
/// within this much of the leader, are served from memory; a restart
/// replays the rest from the file in batches.
pub const MEMORY_LOG_BYTES: u64 = 32 * 1024 * 1024;

/// What an entry counts against [`MEMORY_LOG_BYTES`]: its payload and
/// about the size of the struct around it.
fn entry_bytes(e: &Entry) -> u64 {
    (e.data.len() + e.context.len()) as u64 + 96
}

/// The snapshot for a follower too far behind, built off the raft loop:
/// building one from a large store (about 4 s at 500,000 people) on the
/// loop outlasted the election timeout, so the leader was deposed and the
/// next one did the same (docs/GROWTH.md Found A). raft-rs asks again,
/// on the follower's next heartbeat answer, while this says
/// `SnapshotTemporarilyUnavailable`.
#[derive(Default)]
enum Built {
    #[default]
    Nothing,
    Building,
    /// Handed out once (then sent): a large one is not kept in memory
    /// for a send that may never come.
    Ready(Snapshot),
}

fn lock(built: &Mutex<Built>) -> MutexGuard<'_, Built> {
    built.lock().unwrap_or_else(|e| e.into_inner())
}

fn temporarily_unavailable() -> raft::Error {
    raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
}

/// raft-rs storage of one node.
pub struct RaftStorage {
    /// The state snapshots are built from: the one last handed to the
    /// state-file writer (so never older than what the log was compacted
    /// to), or a newer one the node stored on request.
    state: Published<StateMachine>,
    /// Set when `state` was too old for a snapshot; the node then stores
    /// a current one (see `take_snapshot_request`).
    wants_state: AtomicBool,
    hard_state: HardState,
    /// Configuration as of the applied index; raft-rs reads it at start-up.
    conf_state: ConfState,
    /// (index, term) of the last entry removed from the log.
    truncated: (u64, u64),
    /// The log file, for entries no longer in memory.
    db: Arc<Database>,
    /// Entries after `truncated` that are only in the log file: the log
    /// is `truncated.0 + 1 ..= truncated.0 + on_disk_only` there, then
    /// `entries` in memory.
    on_disk_only: u64,
    /// The newest entries, up to the last index.
    entries: VecDeque<Entry>,
    /// [`entry_bytes`] of `entries`.
    memory_bytes: u64,
    /// The snapshot being built for a follower, or built.
    built: Arc<Mutex<Built>>,
    /// Build snapshots on the caller's thread, still handing each out on
    /// the next ask (the simulated cluster: no threads, same steps).
    build_inline: bool,
}

impl RaftStorage {
    /// Loads the persisted log and hard state (log file); the conf state
    /// comes from the loaded state machine.
    pub fn load(log_db: Arc<Database>, state: Published<StateMachine>) -> Result<Self> {
        let conf_state = state.load().conf_state.clone();
        let txn = log_db.begin_read()?;
        let meta = txn.open_table(META)?;
        let hard_state = match meta.get(schema::META_HARD_STATE)? {
            Some(v) => HardState::parse_from_bytes(v.value())?,
            None => HardState::default(),
        };
        let truncated = match meta.get(schema::META_TRUNCATED)? {
            Some(v) => schema::read_pair_u64(v.value())
                .ok_or_else(|| Error::Corrupt("truncated index record".into()))?,
            None => (0, 0),
        };
        let log = txn.open_table(LOG)?;
        let mut storage = RaftStorage {
            state,
            wants_state: AtomicBool::new(false),
            hard_state,
            conf_state,
            truncated,
            db: log_db.clone(),
            on_disk_only: 0,
            entries: VecDeque::new(),
            memory_bytes: 0,
            built: Arc::default(),
            build_inline: false,
        };
        // Every entry is checked; only the newest stay in memory.
        for (expect, item) in (truncated.0 + 1..).zip(log.range(truncated.0 + 1..)?) {
            let (k, v) = item?;
            if k.value() != expect {
                return Err(Error::Corrupt(format!(
                    "raft log has a hole: expected index {expect}, found {}",
                    k.value()
                )));
            }
            let e = Entry::parse_from_bytes(v.value())?;
            storage.memory_bytes += entry_bytes(&e);
            storage.entries.push_back(e);
            storage.trim_memory();
        }
        Ok(storage)
    }

    /// Drops the oldest entries from memory while they hold more than
    /// [`MEMORY_LOG_BYTES`] (the newest one always stays). Only entries
    /// already in the log file may go: the node calls this after its
    /// write transaction committed.
    pub fn trim_memory(&mut self) {
        while self.memory_bytes > MEMORY_LOG_BYTES && self.entries.len() > 1 {
            if let Some(e) = self.entries.pop_front() {
                self.memory_bytes -= entry_bytes(&e);
                self.on_disk_only += 1;
            }
        }
    }

    /// Bytes of entries held in memory ([`MEMORY_LOG_BYTES`] at most,
    /// past one large entry).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The first index held in memory.
    fn memory_first(&self) -> u64 {
        self.truncated.0 + self.on_disk_only + 1
    }

    /// Entries `low..high` from the log file, stopping once past
    /// `max_size` bytes (raft-rs trims the last one off).
    fn read_from_disk(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(LOG)?;
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in log.range(low..high)? {
            let (k, v) = item?;
            let e = Entry::parse_from_bytes(v.value())?;
            if e.index != k.value() || e.index != low + out.len() as u64 {
                return Err(Error::Corrupt(format!(
                    "raft log entry {} read where {} was expected",
                    e.index,
                    low + out.len() as u64
                )));
            }
            size += u64::from(protobuf::Message::compute_size(&e));
            out.push(e);
            if size > max_size {
                break;
            }
        }
        if out.is_empty() && low < high {
            return Err(Error::Corrupt(format!(
                "raft log entry {low} is missing from the log file"
            )));
        }
        Ok(out)
    }

    /// Whether a snapshot was refused because the state it is built from
    /// was too old (the request is cleared).
    pub fn take_snapshot_request(&self) -> bool {
        self.wants_state.swap(false, Ordering::AcqRel)
    }

    /// Builds snapshots on the caller's thread (see `build_inline`).
    pub fn build_snapshots_inline(&mut self) {
        self.build_inline = true;
    }

    /// Drops a snapshot built and not handed out (leadership lost: the
    /// send it was for will not happen here).
    pub fn forget_built_snapshot(&self) {
        let mut built = lock(&self.built);
        if matches!(*built, Built::Ready(_)) {
            *built = Built::Nothing;
        }
    }

    /// Builds a snapshot of `state` for the next ask (the slot is
    /// already marked `Building`).
    fn build(&self, state: Arc<StateMachine>) {
        let slot = self.built.clone();
        let work = move || {
            let started = Instant::now();
            let next = match state.to_snapshot() {
                Ok(snap) => {
                    tracing::info!(
                        index = snap.get_metadata().index,
                        bytes = snap.get_data().len(),
                        ms = started.elapsed().as_millis() as u64,
                        "built a snapshot for a follower"
                    );
                    Built::Ready(snap)
                }
                Err(e) => {
                    tracing::error!(error = %e, "building a snapshot for a follower failed");
                    Built::Nothing
                }
            };
            *lock(&slot) = next;
        };
        if self.build_inline {
            work();
            return;
        }
        if let Err(e) = std::thread::Builder::new()
            .name("snapshot-build".into())
            .spawn(work)
        {
            tracing::error!(error = %e, "cannot start a thread to build a snapshot");
            *lock(&self.built) = Built::Nothing;
        }
    }

    /// True once the node has a configuration, a vote or log entries: a
    /// fresh data dir is not initialized.
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty()
            || self.hard_state != HardState::default()
            || self.last() > self.truncated.0
            || self.truncated.0 > 0
    }

    /// The index after the last compaction.
    pub fn first(&self) -> u64 {
        self.truncated.0 + 1
    }

    /// The index of the last entry.
    pub fn last(&self) -> u64 {
        self.truncated.0 + self.on_disk_only + self.entries.len() as u64
    }

    /// Current hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Configuration as of the applied index.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Appends entries, first dropping any conflicting suffix.
    pub fn append(&mut self, txn: &WriteTransaction, ents: &[Entry]) -> Result<()> {
        let Some(first_new) = ents.first().map(|e| e.index) else {
            return Ok(());
        };
        if first_new < self.first() {
            return Err(Error::Corrupt(format!(
                "raft asked to append at {first_new}, before the log start {}",
                self.first()
            )));
        }
        if first_new > self.last() + 1 {
            return Err(Error::Corrupt(format!(
                "raft asked to append at {first_new}, leaving a hole after {}",
                self.last()
            )));
        }
        let mut log = txn.open_table(LOG)?;
        if first_new <= self.last() {
            log.retain_in(first_new.., |_, _| false)?;
            if first_new >= self.memory_first() {
                for e in self
                    .entries
                    .drain((first_new - self.memory_first()) as usize..)
                {
                    self.memory_bytes -= entry_bytes(&e);
                }
            } else {
                // The conflict reaches into what is only on disk.
                self.entries.clear();
                self.memory_bytes = 0;
                self.on_disk_only = first_new - self.first();
            }
        }
        for e in ents {
            log.insert(e.index, e.write_to_bytes()?.as_slice())?;
            self.memory_bytes += entry_bytes(e);
            self.entries.push_back(e.clone());
        }
        Ok(())
    }

    /// Persists a new hard state.
    pub fn set_hard_state(&mut self, txn: &WriteTransaction, hs: HardState) -> Result<()> {
        txn.open_table(META)?
            .insert(schema::META_HARD_STATE, hs.write_to_bytes()?.as_slice())?;
        self.hard_state = hs;
        Ok(())
    }

    /// Initializes the log of a founding member of a new cluster: it starts
    /// as if compacted at (`index`, `term`) (the configuration goes with
    /// the state, see `lib.rs`). Every founding member starts from the
    /// same point, and because the entries before it do not exist, a member
    /// added later can only be initialized by a snapshot (it would otherwise
    /// replay a log without the founding configuration).
    pub fn bootstrap(&mut self, txn: &WriteTransaction, index: u64, term: u64) -> Result<()> {
        self.truncated = (index, term);
        {
            // A follower given this one would find the entries after it gone.
            let mut built = lock(&self.built);
            if matches!(&*built, Built::Ready(s) if s.get_metadata().index < index) {
                *built = Built::Nothing;
            }
        }
        txn.open_table(META)?.insert(
            schema::META_TRUNCATED,
            schema::pair_u64(index, term).as_slice(),
        )?;
        let hs = HardState {
            term,
            commit: index,
            ..Default::default()
        };
        self.set_hard_state(txn, hs)
    }

    /// Moves only the commit index of the hard state.
    pub fn set_commit(&mut self, txn: &WriteTransaction, commit: u64) -> Result<()> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(txn, hs)
    }

    /// Records the configuration the state machine now holds (bootstrap,
    /// conf change applied).
    pub fn conf_state_applied(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Drops entries up to and including `index` (which must be applied).
    pub fn compact(&mut self, txn: &WriteTransaction, index: u64) -> Result<()> {
        if index <= self.truncated.0 {
            return Ok(());
        }
        if index > self.last() {
            return Err(Error::Corrupt(format!(
                "compaction to {index} past the last log index {}",
                self.last()
            )));
        }
        let term = self.term_of(index)?;
        let mut log = txn.open_table(LOG)?;
        log.retain_in(..=index, |_, _| false)?;
        let n = index - self.truncated.0;
        if n <= self.on_disk_only {
            self.on_disk_only -= n;
        } else {
            let from_memory = (n - self.on_disk_only) as usize;
            for e in self.entries.drain(..from_memory) {
                self.memory_bytes -= entry_bytes(&e);
            }
            self.on_disk_only = 0;
        }
        self.truncated = (index, term);
        txn.open_table(META)?.insert(
            schema::META_TRUNCATED,
            schema::pair_u64(index, term).as_slice(),
        )?;
        Ok(())
    }

    /// Replaces the log by a snapshot's position (the state machine part is
    /// restored by `StateMachine::restore` first).
    pub fn apply_snapshot(
        &mut self,
        txn: &WriteTransaction,
        meta: &SnapshotMetadata,
    ) -> Result<()> {
        txn.open_table(LOG)?.retain(|_, _| false)?;
        self.entries.clear();
        self.memory_bytes = 0;
        self.on_disk_only = 0;
        self.truncated = (meta.index, meta.term);
        self.forget_built_snapshot();
        txn.open_table(META)?.insert(
            schema::META_TRUNCATED,
            schema::pair_u64(meta.index, meta.term).as_slice(),
        )?;
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        self.set_hard_state(txn, hs)?;
        self.conf_state = meta.get_conf_state().clone();
        Ok(())
    }

    fn term_of(&self, idx: u64) -> Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(Error::Raft(raft::Error::Store(StorageError::Compacted)));
        }
        if idx > self.last() {
            return Err(Error::Raft(raft::Error::Store(StorageError::Unavailable)));
        }
        if idx < self.memory_first() {
            return Ok(self.read_from_disk(idx, idx + 1, 0)?[0].term);
        }
        match self.entries.get((idx - self.memory_first()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(Error::Raft(raft::Error::Store(StorageError::Unavailable))),
        }
    }
}

fn other(e: Error) -> raft::Error {
    match e {
        Error::Raft(e) => e,
        e => raft::Error::Store(StorageError::Other(Box::new(e))),
    }
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mem = self.memory_first();
        let mut out = Vec::new();
        if low < mem {
            out = self
                .read_from_disk(low, high.min(mem), max_size.unwrap_or(u64::MAX))
                .map_err(other)?;
        }
        // The part in memory follows, unless the file's part stopped short
        // on size already.
        if high > mem && out.len() as u64 == mem.saturating_sub(low) {
            let from = (low.max(mem) - mem) as usize;
            let to = (high - mem) as usize;
            out.extend(self.entries.range(from..to).cloned());
        }
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx).map_err(other)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Built off the loop (see `Built`) from the published state, whose
        // index is never below the log start, so the leader can continue
        // with the entries after it; one the log was compacted past since
        // is built again. The receiver must find itself in the snapshot's
        // configuration: one from before the last membership change is no
        // use (a new member would ignore it), so ask the node for a
        // current state and let raft try again.
        let state = self.state.load();
        if state.conf_state != self.conf_state {
            self.wants_state.store(true, Ordering::Release);
            return Err(temporarily_unavailable());
        }
        let mut built = lock(&self.built);
        let usable = match &*built {
            Built::Building => return Err(temporarily_unavailable()),
            Built::Ready(snap) => {
                snap.get_metadata().index >= self.truncated.0
                    && snap.get_metadata().get_conf_state() == &self.conf_state
            }
            Built::Nothing => false,
        };
        if let (true, Built::Ready(snap)) = (usable, std::mem::take(&mut *built)) {
            return Ok(snap);
        }
        // None yet, or one the log or the configuration moved past.
        *built = Built::Building;
        drop(built);
        self.build(state);
        Err(temporarily_unavailable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn open() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_database(&dir.path().join("db.redb")).unwrap();
        (dir, Arc::new(db))
    }

    fn load(db: &Arc<Database>) -> RaftStorage {
        let state = Published::new(StateMachine::new(10));
        RaftStorage::load(db.clone(), state).unwrap()
    }

    #[test]
    fn append_truncates_conflicts_and_survives_reload() {
        let (_dir, db) = open();
        let mut s = load(&db);
        assert!(!s.is_initialized());
        let txn = db.begin_write().unwrap();
        s.append(&txn, &[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        s.append(&txn, &[entry(2, 2)]).unwrap();
        let hs = HardState {
            term: 2,
            vote: 3,
            ..Default::default()
        };
        s.set_hard_state(&txn, hs.clone()).unwrap();
        txn.commit().unwrap();
        assert_eq!(s.last(), 2);

        let s = load(&db);
        assert_eq!(s.last(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(s.hard_state(), &hs);
        assert!(s.is_initialized());
        let got = s
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2)]
        );
    }

    #[test]
    fn compaction_keeps_the_boundary_term() {
        let (_dir, db) = open();
        let mut s = load(&db);
        let txn = db.begin_write().unwrap();
        s.append(
            &txn,
            &(1..=10).map(|i| entry(i, 1 + i / 5)).collect::<Vec<_>>(),
        )
        .unwrap();
        s.compact(&txn, 6).unwrap();
        txn.commit().unwrap();
        let s = load(&db);
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.term(6).unwrap(), 2);
        assert!(matches!(
            s.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(s.term(5).is_err());
        assert_eq!(
            s.entries(7, 11, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            4
        );
    }

    fn unavailable(r: &raft::Result<Snapshot>) -> bool {
        matches!(
            r,
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        )
    }

    #[test]
    fn snapshots_are_built_off_the_loop_handed_out_once_and_rebuilt_when_stale() {
        let (_dir, db) = open();
        let mut sm = StateMachine::new(10);
        sm.applied = (5, 1);
        let state = Published::new(sm);
        let mut s = RaftStorage::load(db.clone(), state.clone()).unwrap();
        let txn = db.begin_write().unwrap();
        s.append(&txn, &(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        txn.commit().unwrap();

        // On a thread: the first ask starts it, a later ask gets it.
        let until_built = |s: &RaftStorage| {
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let r = s.snapshot(0, 2);
                if let Ok(snap) = r {
                    return snap;
                }
                assert!(unavailable(&r), "{r:?}");
                assert!(Instant::now() < deadline, "no snapshot built in 60 s");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        assert!(unavailable(&s.snapshot(0, 2)));
        assert_eq!(until_built(&s).get_metadata().index, 5);
        // Handed out once: the next ask builds another.
        assert!(unavailable(&s.snapshot(0, 2)));
        assert_eq!(until_built(&s).get_metadata().index, 5);

        // Inline (the simulator): still handed out on the next ask.
        s.build_snapshots_inline();
        assert!(unavailable(&s.snapshot(0, 2)));
        // A newer state file let the log be compacted past the one built:
        // it is dropped and the next ask builds from the newer state.
        let mut newer = StateMachine::new(10);
        newer.applied = (8, 1);
        state.store(newer);
        let txn = db.begin_write().unwrap();
        s.compact(&txn, 7).unwrap();
        txn.commit().unwrap();
        assert!(unavailable(&s.snapshot(0, 2)));
        assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 8);

        // Leadership lost: one built and not handed out is dropped.
        assert!(unavailable(&s.snapshot(0, 2)));
        s.forget_built_snapshot();
        assert!(unavailable(&s.snapshot(0, 2)));
        assert!(s.snapshot(0, 2).is_ok());
    }

    /// Entries of 1 MiB each, so a few dozen pass the memory budget.
    fn big(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term,
                data: vec![index as u8; 1 << 20].into(),
                ..Default::default()
            })
            .collect()
    }

    fn indexes(s: &RaftStorage, low: u64, high: u64, max: Option<u64>) -> Vec<(u64, u64)> {
        s.entries(low, high, max, GetEntriesContext::empty(false))
            .unwrap()
            .iter()
            .map(|e| {
                assert!(
                    e.data.iter().all(|b| *b == e.index as u8),
                    "entry {}",
                    e.index
                );
                (e.index, e.term)
            })
            .collect()
    }

    #[test]
    fn only_the_newest_entries_stay_in_memory_and_the_rest_is_read_from_the_file() {
        let (_dir, db) = open();
        let mut s = load(&db);
        let txn = db.begin_write().unwrap();
        s.append(&txn, &big(1, 60, 1)).unwrap();
        txn.commit().unwrap();
        s.trim_memory();
        assert!(s.memory_bytes <= MEMORY_LOG_BYTES, "{}", s.memory_bytes);
        let on_disk = s.on_disk_only;
        assert!(on_disk >= 28, "{on_disk} entries left memory");
        assert_eq!((s.first(), s.last()), (1, 60));

        // Reads cross from the file into memory, in order, within a size.
        let all: Vec<_> = (1..=60).map(|i| (i, 1)).collect();
        assert_eq!(indexes(&s, 1, 61, None), all);
        assert_eq!(
            indexes(&s, on_disk, on_disk + 3, None),
            all[on_disk as usize - 1..on_disk as usize + 2]
        );
        assert_eq!(indexes(&s, 2, 61, Some((3 << 20) + 100)).len(), 3);
        assert_eq!(indexes(&s, 2, 61, Some(0)), vec![(2, 1)]);
        assert_eq!(s.term(5).unwrap(), 1);

        // A conflict that reaches into the file replaces what follows.
        let txn = db.begin_write().unwrap();
        s.append(&txn, &big(10, 12, 2)).unwrap();
        txn.commit().unwrap();
        assert_eq!(s.last(), 12);
        assert_eq!(s.term(9).unwrap(), 1);
        assert_eq!(s.term(10).unwrap(), 2);
        assert_eq!(
            indexes(&s, 8, 13, None),
            vec![(8, 1), (9, 1), (10, 2), (11, 2), (12, 2)]
        );

        // Compaction into the part on disk, then past it.
        let txn = db.begin_write().unwrap();
        s.append(&txn, &big(13, 70, 2)).unwrap();
        txn.commit().unwrap();
        s.trim_memory();
        let txn = db.begin_write().unwrap();
        s.compact(&txn, 20).unwrap();
        txn.commit().unwrap();
        assert_eq!(indexes(&s, 21, 23, None), vec![(21, 2), (22, 2)]);
        let txn = db.begin_write().unwrap();
        s.compact(&txn, 65).unwrap();
        txn.commit().unwrap();
        assert_eq!(s.on_disk_only, 0);
        assert_eq!(indexes(&s, 66, 71, None).len(), 5);

        // A reload keeps only the newest in memory and reads the same log.
        let txn = db.begin_write().unwrap();
        s.append(&txn, &big(71, 120, 2)).unwrap();
        txn.commit().unwrap();
        drop(s);
        let s = load(&db);
        assert!(s.memory_bytes <= MEMORY_LOG_BYTES);
        assert!(s.on_disk_only > 0);
        assert_eq!((s.first(), s.last()), (66, 120));
        assert_eq!(indexes(&s, 66, 121, None).len(), 55);
    }

    #[test]
    fn appending_with_a_hole_is_refused() {
        let (_dir, db) = open();
        let mut s = load(&db);
        let txn = db.begin_write().unwrap();
        s.append(&txn, &[entry(1, 1)]).unwrap();
        assert!(s.append(&txn, &[entry(3, 1)]).is_err());
    }
}
