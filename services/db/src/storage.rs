//! Raft log, hard state and conf state: raft-rs's `Storage`, backed by redb.
//!
//! The log and the hard state live in the log file (`raft-log.redb`),
//! committed with an fsync on every Ready that must sync. The conf state
//! belongs to the state machine: it is the configuration as of the applied
//! index, saved with the state (`state_file.rs`). Writes happen only inside
//! transactions opened by the node loop. The live part of the log
//! (everything after the last compaction) is also kept in memory: raft-rs
//! reads it on every append and heartbeat, and the compaction threshold
//! bounds its size.
//!
//! What callers may rely on: `first_index() == truncated index + 1`,
//! `term(truncated index)` always answers, after `apply_snapshot` the log
//! is empty and starts right after the snapshot, and the log is never
//! compacted past the state file's applied index (the node's job), so a
//! restart can always replay what the state file does not hold.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, ReadableDatabase, WriteTransaction};

use crate::error::{Error, Result};
use crate::schema::{self, LOG, META};
use crate::state_machine::{Published, StateMachine};

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
    /// Entries `truncated.0 + 1 ..= last_index`.
    entries: VecDeque<Entry>,
}

impl RaftStorage {
    /// Loads the persisted log and hard state (log file); the conf state
    /// comes from the loaded state machine.
    pub fn load(log_db: &Database, state: Published<StateMachine>) -> Result<Self> {
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
        let mut entries = VecDeque::new();
        for (expect, item) in (truncated.0 + 1..).zip(log.range(truncated.0 + 1..)?) {
            let (k, v) = item?;
            if k.value() != expect {
                return Err(Error::Corrupt(format!(
                    "raft log has a hole: expected index {expect}, found {}",
                    k.value()
                )));
            }
            entries.push_back(Entry::parse_from_bytes(v.value())?);
        }
        Ok(RaftStorage {
            state,
            wants_state: AtomicBool::new(false),
            hard_state,
            conf_state,
            truncated,
            entries,
        })
    }

    /// Whether a snapshot was refused because the state it is built from
    /// was too old (the request is cleared).
    pub fn take_snapshot_request(&self) -> bool {
        self.wants_state.swap(false, Ordering::AcqRel)
    }

    /// True once the node has a configuration, a vote or log entries: a
    /// fresh data dir is not initialized.
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty()
            || self.hard_state != HardState::default()
            || !self.entries.is_empty()
            || self.truncated.0 > 0
    }

    /// The index after the last compaction.
    pub fn first(&self) -> u64 {
        self.truncated.0 + 1
    }

    /// The index of the last entry.
    pub fn last(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
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
            self.entries.truncate((first_new - self.first()) as usize);
        }
        for e in ents {
            log.insert(e.index, e.write_to_bytes()?.as_slice())?;
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
        let n = (index - self.truncated.0) as usize;
        self.entries.drain(..n);
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
        self.truncated = (meta.index, meta.term);
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
        match self.entries.get((idx - self.first()) as usize) {
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
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        let mut out: Vec<Entry> = self.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut out, max_size.into());
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
        // Its index is never below the log start, so the leader can always
        // continue with the entries after it. But the receiver must find
        // itself in the snapshot's configuration: one from before the last
        // membership change is no use (a new member would ignore it), so
        // ask the node for a current state and let raft try again.
        let state = self.state.load();
        if state.conf_state != self.conf_state {
            self.wants_state.store(true, Ordering::Release);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        state.to_snapshot().map_err(other)
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

    fn open() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_database(&dir.path().join("db.redb")).unwrap();
        (dir, db)
    }

    fn load(db: &Database) -> RaftStorage {
        let state = Published::new(StateMachine::new(10));
        RaftStorage::load(db, state).unwrap()
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

    #[test]
    fn appending_with_a_hole_is_refused() {
        let (_dir, db) = open();
        let mut s = load(&db);
        let txn = db.begin_write().unwrap();
        s.append(&txn, &[entry(1, 1)]).unwrap();
        assert!(s.append(&txn, &[entry(3, 1)]).is_err());
    }
}
