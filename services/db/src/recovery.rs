//! Start-up recovery: a node's data dir opened and checked, and its two
//! files (the raft log and the state file) brought back to one consistent
//! state before the raft loop starts, or made for a new member.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::published::Published;
use crate::schema;
use crate::state_file::{StateFiles, STATE_FILE};
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;

/// The raft log file inside the data dir (see `schema.rs`).
pub const LOG_FILE: &str = "raft-log.redb";

/// The log file's page cache. redb's default is 1 GiB per file, and every
/// page written stays cached until it is full: a soak of half an hour
/// grew each node by that much for a log that is written once and read
/// back only by a far-behind follower or a restart (the newest entries
/// are in memory anyway, see `storage.rs`).
const LOG_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Where the log of a new cluster starts (see `RaftStorage::bootstrap`).
const BOOTSTRAP_INDEX: u64 = 5;
/// Term of that starting point.
const BOOTSTRAP_TERM: u64 = 5;

/// A node's files, consistent with each other, and the state they hold:
/// what the raft loop starts from.
pub struct Recovered {
    /// The raft log's database.
    pub log_db: Arc<Database>,
    /// The state file, written in the background from now on.
    pub state_files: Arc<StateFiles>,
    /// The raft log and hard state, in line with `state`.
    pub storage: RaftStorage,
    /// The state as of its applied index.
    pub state: StateMachine,
    /// What snapshots for lagging members are built from (`storage` reads
    /// it); it holds `state`.
    pub snapshot_source: Published<StateMachine>,
}

/// What start-up needs to know of a node besides its files.
#[derive(Debug, Clone)]
pub struct Start {
    /// The node's id.
    pub id: u64,
    /// The cluster's token (a data dir of another cluster is refused).
    pub cluster_token: String,
    /// Revisions of history kept (`--history`).
    pub history: i64,
    /// Bytes of history kept (`--history-bytes`).
    pub history_bytes: u64,
    /// Joining an existing cluster (`--join`): wait for a snapshot.
    pub join: bool,
}

/// Opens the data dir of `cfg` and brings its files to one consistent
/// state (see [`recover_files`]).
pub fn recover(
    cfg: &Config,
    members: &BTreeMap<u64, String>,
    metrics: &Metrics,
) -> Result<Recovered> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        Error::Config(format!(
            "cannot create data dir {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let log_db = Arc::new(open_database(&cfg.data_dir.join(LOG_FILE))?);
    let state_files = Arc::new(
        StateFiles::new(&cfg.data_dir, &cfg.cluster_token, cfg.id)
            .timed(metrics.state_sync_seconds.clone()),
    );
    let start = Start {
        id: cfg.id,
        cluster_token: cfg.cluster_token.clone(),
        history: cfg.history,
        history_bytes: cfg.history_bytes,
        join: cfg.join,
    };
    recover_files(
        log_db,
        state_files,
        &start,
        members,
        &cfg.data_dir.display().to_string(),
    )
}

/// Brings a node's two files to one consistent state: a restarted node's
/// are reconciled, a founding member's are bootstrapped with `members`, a
/// joining member's wait for the leader's snapshot. `place` names the
/// data dir in errors. The simulator calls this with its own disks.
pub fn recover_files(
    log_db: Arc<Database>,
    state_files: Arc<StateFiles>,
    start: &Start,
    members: &BTreeMap<u64, String>,
    place: &str,
) -> Result<Recovered> {
    let fresh_log = check_identity(&log_db, &start.cluster_token, start.id)?;
    let loaded = state_files.load(start.history)?;
    if fresh_log != loaded.is_none() {
        return Err(Error::Config(format!(
            "{place} has only one of {LOG_FILE} and {STATE_FILE}; it cannot be used (remove it and re-add the member)"
        )));
    }
    let fresh = loaded.is_none();
    let mut sm = loaded.unwrap_or_else(|| StateMachine::new(start.history));
    sm.set_history_bytes(start.history_bytes);
    let snapshot_source = Published::new(sm.clone());

    let mut storage = RaftStorage::load(log_db.clone(), snapshot_source.clone())?;
    if !storage.is_initialized() && !start.join {
        bootstrap(&log_db, &state_files, &mut storage, &mut sm, members)?;
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapped a new cluster member");
    } else if start.join && !storage.is_initialized() {
        if fresh {
            // So a restart finds both files (see the check above).
            state_files.write(&sm)?;
        }
        tracing::info!("starting empty; waiting for the leader to send a snapshot");
    } else {
        reconcile(&log_db, &mut storage, &sm).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{place}: {m}")),
            other => other,
        })?;
        tracing::info!(
            applied = sm.applied.0,
            revision = sm.revision,
            last_log = storage.last(),
            "restarted from disk"
        );
    }

    snapshot_source.store(sm.clone());
    Ok(Recovered {
        log_db,
        state_files,
        storage,
        state: sm,
        snapshot_source,
    })
}

/// Opens (or creates) a node's log file, creating its tables so readers
/// never meet a missing one.
pub fn open_database(path: &Path) -> Result<Database> {
    let db = Database::builder()
        .set_cache_size(LOG_CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Config(format!(
            "{} is already in use by another agenda-db process",
            path.display()
        )),
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == std::io::ErrorKind::StorageFull =>
        {
            Error::DiskFull(format!("cannot open {}: {e}", path.display()))
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => Error::Config(format!(
            "{} is corrupt ({msg}); restore it from a peer by removing this data dir and re-adding the member",
            path.display()
        )),
        other => Error::Config(format!("cannot open {}: {other}", path.display())),
    })?;
    create_tables(&db)?;
    Ok(db)
}

/// Creates the log file's tables if they are missing, so readers never
/// meet a missing one.
pub fn create_tables(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let _ = txn.open_table(schema::LOG)?;
        let _ = txn.open_table(schema::META)?;
    }
    txn.commit()?;
    Ok(())
}

/// Checks that the data dir belongs to this node of this cluster, or stamps
/// a fresh one. Returns true if it was fresh.
fn check_identity(db: &Database, token: &str, id: u64) -> Result<bool> {
    let want = format!("{token}\n{id}");
    let found = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(schema::META)?;
        let v = meta.get(schema::META_IDENTITY)?;
        v.map(|v| String::from_utf8_lossy(v.value()).into_owned())
    };
    match found {
        Some(f) if f == want => Ok(false),
        Some(f) => {
            let (t, i) = f.split_once('\n').unwrap_or((&f, "?"));
            Err(Error::Config(format!(
                "data dir belongs to node {i} of cluster {t:?}, not node {id} of cluster {token:?}; \
                 use that node's flags or an empty data dir"
            )))
        }
        None => {
            let txn = db.begin_write()?;
            txn.open_table(schema::META)?
                .insert(schema::META_IDENTITY, want.as_bytes())?;
            txn.commit()?;
            Ok(true)
        }
    }
}

/// Brings the log file in line with the state file after a restart. The
/// two are written separately, so a crash leaves the state behind the log
/// (normal: the node replays) or, in the middle of a snapshot install,
/// ahead of it.
fn reconcile(log_db: &Database, storage: &mut RaftStorage, sm: &StateMachine) -> Result<()> {
    if storage.hard_state().commit < sm.applied.0 {
        // The commit index is saved lazily; what was applied was
        // committed, so the state file's applied index is a lower bound.
        let txn = log_db.begin_write()?;
        storage.set_commit(&txn, sm.applied.0)?;
        txn.commit()?;
    }
    if sm.applied.0 > storage.last() {
        // Only a crash in the middle of installing a snapshot leaves the
        // state ahead of the log (state first, log second): finish the job
        // by moving the log to the snapshot's position.
        tracing::warn!(
            applied = sm.applied.0,
            last_log = storage.last(),
            "state file is ahead of the raft log (interrupted snapshot install); resetting the log"
        );
        let mut meta = raft::prelude::SnapshotMetadata {
            index: sm.applied.0,
            term: sm.applied.1,
            ..Default::default()
        };
        meta.set_conf_state(storage.conf_state().clone());
        let txn = log_db.begin_write()?;
        storage.apply_snapshot(&txn, &meta)?;
        txn.commit()?;
    }
    if sm.applied.0 + 1 < storage.first() {
        return Err(Error::Config(format!(
            "the state file (applied {}) is older than the start of the raft log ({}..={}); \
             remove the data dir and re-add the member",
            sm.applied.0,
            storage.first(),
            storage.last()
        )));
    }
    Ok(())
}

/// Makes a founding member: the state first, then the log, so a crash in
/// between is repaired by `reconcile` (state ahead of the log).
fn bootstrap(
    log_db: &Database,
    state_files: &StateFiles,
    storage: &mut RaftStorage,
    sm: &mut StateMachine,
    members: &BTreeMap<u64, String>,
) -> Result<()> {
    let cs = raft::prelude::ConfState {
        voters: members.keys().copied().collect(),
        ..Default::default()
    };
    sm.applied = (BOOTSTRAP_INDEX, BOOTSTRAP_TERM);
    sm.set_members(members.clone());
    sm.conf_state = cs.clone();
    state_files.write(sm)?;
    storage.conf_state_applied(cs);
    let txn = log_db.begin_write()?;
    storage.bootstrap(&txn, BOOTSTRAP_INDEX, BOOTSTRAP_TERM)?;
    txn.commit()?;
    Ok(())
}

/// Seeds a new member's data dir from a backup (see `backup::restore`):
/// the state of `data` at the bootstrap index, `members` as the cluster.
/// A dir that already holds a node's files is refused.
pub fn seed(
    dir: &Path,
    id: u64,
    cluster_token: &str,
    members: &BTreeMap<u64, String>,
    data: agenda_proto::raft::SnapshotData,
    history: i64,
) -> Result<()> {
    if dir.join(LOG_FILE).exists() || dir.join(STATE_FILE).exists() {
        return Err(Error::Config(format!(
            "{} already holds a node's files; restore into an empty data dir",
            dir.display()
        )));
    }
    if !members.contains_key(&id) {
        return Err(Error::Config(format!(
            "member {id} is not among the new cluster's members {:?}",
            members.keys().collect::<Vec<_>>()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    let log_db = Arc::new(open_database(&dir.join(LOG_FILE))?);
    check_identity(&log_db, cluster_token, id)?;
    let state_files = StateFiles::new(dir, cluster_token, id);
    let mut sm = StateMachine::new(history);
    sm.load((BOOTSTRAP_INDEX, BOOTSTRAP_TERM), Default::default(), data);
    let mut storage = RaftStorage::load(log_db.clone(), Published::new(sm.clone()))?;
    bootstrap(&log_db, &state_files, &mut storage, &mut sm, members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term: 6,
                ..Default::default()
            })
            .collect()
    }

    /// A founding member's files with log entries 6..=10, compacted up to
    /// `compact_to` (5 = not at all).
    fn setup(
        compact_to: u64,
    ) -> (
        tempfile::TempDir,
        Arc<Database>,
        Published<StateMachine>,
        RaftStorage,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open_database(&dir.path().join(LOG_FILE)).unwrap());
        let state = Published::new(StateMachine::new(100));
        let mut storage = RaftStorage::load(log.clone(), state.clone()).unwrap();
        let txn = log.begin_write().unwrap();
        storage.bootstrap(&txn, 5, 5).unwrap();
        storage.append(&txn, &entries(6, 10)).unwrap();
        storage.compact(&txn, compact_to).unwrap();
        txn.commit().unwrap();
        (dir, log, state, storage)
    }

    #[test]
    fn a_state_ahead_of_the_log_moves_the_log_forward() {
        let (_dir, log, state, mut storage) = setup(5);
        let mut sm = StateMachine::new(100);
        sm.applied = (20, 6); // as if a snapshot at 20 was installed
        reconcile(&log, &mut storage, &sm).unwrap();
        assert_eq!((storage.first(), storage.last()), (21, 20));
        assert!(storage.hard_state().commit >= 20);
        let reloaded = RaftStorage::load(log.clone(), state).unwrap();
        assert_eq!((reloaded.first(), reloaded.last()), (21, 20));
    }

    #[test]
    fn a_state_behind_the_log_is_replayed_and_lifts_the_commit_index() {
        let (_dir, log, _state, mut storage) = setup(5);
        let mut sm = StateMachine::new(100);
        sm.applied = (8, 6);
        reconcile(&log, &mut storage, &sm).unwrap();
        assert_eq!((storage.first(), storage.last()), (6, 10));
        assert_eq!(storage.hard_state().commit, 8);
    }

    #[test]
    fn a_state_older_than_the_log_start_is_refused() {
        let (_dir, log, _state, mut storage) = setup(8);
        let mut sm = StateMachine::new(100);
        sm.applied = (6, 6);
        let err = reconcile(&log, &mut storage, &sm).unwrap_err();
        assert!(err
            .to_string()
            .contains("older than the start of the raft log"));
    }
}
