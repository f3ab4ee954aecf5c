//! The state file, `state.snap`: the whole state machine as of an applied
//! index, written whole and off the raft thread.
//!
//! The state machine lives in memory (`state_machine/`); the raft log
//! (`raft-log.redb`) is what makes an acknowledged write durable. This file
//! only bounds how much of the log a restart replays and how much log must
//! be kept: the node never compacts the log past the applied index of the
//! last file written here. A restart loads the file and replays the log
//! after it, so it neither loses nor re-applies anything.
//!
//! Format: the magic `AGDBSTA1`, the body length (u64 LE), the body (prost
//! [`StateFile`]) and its CRC-32 (u32 LE). A write goes to
//! `state.snap.tmp`, is fsynced and renamed over `state.snap`, and the
//! directory is fsynced: a crash leaves the old file or the new one, and a
//! torn or damaged file is refused at start instead of being half-read.
//!
//! Data dirs from before this file existed keep the state in `state.redb`;
//! the first start converts it ([`StateFiles::load`]).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use agenda_proto::db::KeyValue;
use agenda_proto::raft::{
    Applied, DedupRecord, Lease, Members, Revision, RevisionRecord, SnapshotData, StateFile,
};
use prost::{encoding, Message as _};
use protobuf::Message as _;
use raft::prelude::ConfState;
use redb::{ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::schema;
use crate::state_machine::StateMachine;

/// The state file inside the data dir.
pub const STATE_FILE: &str = "state.snap";
/// Where earlier versions kept the state (converted at first start).
pub const LEGACY_STATE_FILE: &str = "state.redb";
const TMP_FILE: &str = "state.snap.tmp";
const MAGIC: &[u8; 8] = b"AGDBSTA1";
/// The body goes to disk in pieces of this size, each synced before the
/// next, so a large file never queues a burst of dirty pages in front of
/// the raft log's small fsyncs on the same disk.
const SYNC_EVERY: usize = 4 * 1024 * 1024;
/// The state is encoded in pieces of about this size, which [`Body`]
/// gathers into [`SYNC_EVERY`] before writing.
const ENCODE_PIECE: usize = 64 * 1024;
/// Background writes go no faster than this (bytes per second), for the
/// same reason: the raft log's fsyncs, which every acknowledgement waits
/// for, keep most of the disk.
pub const BACKGROUND_RATE: u64 = 32 * 1024 * 1024;

/// Reads and writes one node's state file. Writes are serialized and never
/// go backwards: a file older than the one on disk is not written.
pub struct StateFiles {
    dir: PathBuf,
    identity: String,
    /// Applied index of the file on disk (`None`: no file yet). Locked
    /// only for a moment: the raft thread reads it on every log write.
    written: Mutex<Option<u64>>,
    /// Held for a whole write, so writes are serialized.
    writing: Mutex<()>,
    /// Size of the file on disk, in bytes.
    size: AtomicU64,
    /// Observes how long each write takes (see [`StateFiles::timed`]).
    timer: Option<prometheus::Histogram>,
}

impl StateFiles {
    /// The state file of the node `id` of cluster `token` in `dir`.
    pub fn new(dir: &Path, token: &str, id: u64) -> Self {
        StateFiles {
            dir: dir.to_path_buf(),
            identity: format!("{token}\n{id}"),
            written: Mutex::new(None),
            writing: Mutex::new(()),
            size: AtomicU64::new(0),
            timer: None,
        }
    }

    /// Reports the duration of every write to `timer`.
    pub fn timed(mut self, timer: prometheus::Histogram) -> Self {
        self.timer = Some(timer);
        self
    }

    /// Applied index covered by the file on disk (0 if none).
    pub fn durable_applied(&self) -> u64 {
        self.lock().unwrap_or(0)
    }

    /// Size of the file on disk (0 if none).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        // A writer that panicked left a complete file or none: the index
        // is still right.
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the state, `None` for a data dir without one. A data dir of
    /// an earlier version is converted (its `state.redb` is removed once
    /// the new file is durable).
    pub fn load(&self, history_keep: i64) -> Result<Option<StateMachine>> {
        let path = self.path();
        if path.exists() {
            let sm = self.read(&path, history_keep)?;
            *self.lock() = Some(sm.applied.0);
            return Ok(Some(sm));
        }
        let legacy = self.dir.join(LEGACY_STATE_FILE);
        if !legacy.exists() {
            return Ok(None);
        }
        tracing::info!(file = %legacy.display(), "converting the state from an earlier version");
        let sm = self.read_legacy(&legacy, history_keep)?;
        self.write(&sm)?;
        std::fs::remove_file(&legacy).map_err(|e| io("remove", &legacy, e))?;
        tracing::info!(
            applied = sm.applied.0,
            keys = sm.len(),
            "state converted to {STATE_FILE}"
        );
        Ok(Some(sm))
    }

    fn read(&self, path: &Path, history_keep: i64) -> Result<StateMachine> {
        let bytes = std::fs::read(path).map_err(|e| io("read", path, e))?;
        self.size.store(bytes.len() as u64, Ordering::Relaxed);
        let corrupt = |why: &str| {
            Error::Config(format!(
                "{} is damaged ({why}); remove this data dir and re-add the member so it \
                 catches up from the others",
                path.display()
            ))
        };
        if bytes.len() < MAGIC.len() + 12 || &bytes[..8] != MAGIC {
            return Err(corrupt("not an agenda-db state file"));
        }
        let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if len != (bytes.len() - 20) as u64 {
            return Err(corrupt("truncated"));
        }
        let body = &bytes[16..bytes.len() - 4];
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(body) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let file = StateFile::decode(body).map_err(|e| corrupt(&e.to_string()))?;
        self.check_identity(&file.identity)?;
        let conf_state = ConfState::parse_from_bytes(&file.conf_state)?;
        let mut sm = StateMachine::new(history_keep);
        sm.load(
            (file.applied_index, file.applied_term),
            conf_state,
            file.data.unwrap_or_default(),
        );
        sm.restore_history(file.compact_revision, file.history);
        Ok(sm)
    }

    fn check_identity(&self, found: &str) -> Result<()> {
        if found == self.identity {
            return Ok(());
        }
        let (t, i) = found.split_once('\n').unwrap_or((found, "?"));
        let (want_t, want_i) = self.identity.split_once('\n').unwrap_or_default();
        Err(Error::Config(format!(
            "data dir belongs to node {i} of cluster {t:?}, not node {want_i} of cluster \
             {want_t:?}; use that node's flags or an empty data dir"
        )))
    }

    /// Writes `sm` durably, unless the file on disk is as new. Returns
    /// whether it wrote.
    pub fn write(&self, sm: &StateMachine) -> Result<bool> {
        self.write_paced(sm, None)
    }

    /// [`write`](Self::write), at most `rate` bytes per second if given.
    pub fn write_paced(&self, sm: &StateMachine, rate: Option<u64>) -> Result<bool> {
        // A paced write takes seconds; the raft thread must not wait for
        // it to learn the applied index on disk (`durable_applied`): that
        // stalled the leader's loop for the whole write (1-3 s, leader
        // changes) before this lock was separate.
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if self.lock().is_some_and(|w| sm.applied.0 <= w) {
            return Ok(false);
        }
        let started = Instant::now();
        let tmp = self.dir.join(TMP_FILE);
        let f = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        let conf_state = sm.conf_state.write_to_bytes()?;
        let mut body = Body::new(f, rate, started);
        let put = |body: &mut Body| -> std::io::Result<()> {
            body.start()?;
            // The body is `StateFile`'s encoding, written field by field in
            // prost's order (so byte for byte what `encode_to_vec` gives)
            // without ever holding the whole of it: the scalars, then the
            // state (5) piece by piece, then the history (7) record by
            // record.
            let head = StateFile {
                identity: self.identity.clone(),
                applied_index: sm.applied.0,
                applied_term: sm.applied.1,
                conf_state,
                ..Default::default()
            };
            body.put(&head.encode_to_vec())?;
            let mut field = Vec::new();
            encoding::encode_key(5, encoding::WireType::LengthDelimited, &mut field);
            encoding::encode_varint(sm.snapshot_data_len() as u64, &mut field);
            body.put(&field)?;
            sm.encode_snapshot_data(ENCODE_PIECE, |piece| body.put(piece))?;
            field.clear();
            if sm.compact_revision != 0 {
                encoding::int64::encode(6, &sm.compact_revision, &mut field);
            }
            body.put(&field)?;
            for record in sm.history_records() {
                field.clear();
                encoding::message::encode(7, &record, &mut field);
                body.put(&field)?;
            }
            body.finish()
        };
        put(&mut body).map_err(|e| io("write", &tmp, e))?;
        let len = body.len;
        drop(body);
        let path = self.path();
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", &path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", &self.dir, e))?;
        *self.lock() = Some(sm.applied.0);
        self.size.store(len + 20, Ordering::Relaxed);
        if let Some(timer) = &self.timer {
            timer.observe(started.elapsed().as_secs_f64());
        }
        Ok(true)
    }

    /// Reads an earlier version's `state.redb`.
    fn read_legacy(&self, path: &Path, history_keep: i64) -> Result<StateMachine> {
        let db = crate::open_database(path)?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(schema::META)?;
        let record = |name: &str| -> Result<Option<Vec<u8>>> {
            Ok(meta.get(name)?.map(|v| v.value().to_vec()))
        };
        if let Some(id) = record(schema::META_IDENTITY)? {
            self.check_identity(&String::from_utf8_lossy(&id))?;
        }
        let pair = |name: &str| -> Result<(u64, u64)> {
            match record(name)? {
                Some(v) => schema::read_pair_u64(&v)
                    .ok_or_else(|| Error::Corrupt(format!("{name} record"))),
                None => Ok((0, 0)),
            }
        };
        let applied = pair(schema::META_APPLIED)?;
        let (revision, compact_revision) = pair(schema::META_REVISION)?;
        let conf_state = match record(schema::META_CONF_STATE)? {
            Some(v) => ConfState::parse_from_bytes(&v)?,
            None => ConfState::default(),
        };
        let mut data = SnapshotData {
            revision: revision as i64,
            members: match record(schema::META_MEMBERS)? {
                Some(v) => Some(Members::decode(v.as_slice())?),
                None => None,
            },
            ..Default::default()
        };
        for item in txn.open_table(schema::KV)?.iter()? {
            data.kvs.push(KeyValue::decode(item?.1.value())?);
        }
        for item in txn.open_table(schema::LEASES)?.iter()? {
            data.leases.push(Lease::decode(item?.1.value())?);
        }
        for item in txn.open_table(schema::DEDUP)?.iter()? {
            let (k, v) = item?;
            data.dedup.push(DedupRecord {
                request_id: k.value().to_string(),
                applied: Some(Applied::decode(v.value())?),
            });
        }
        let mut history = Vec::new();
        for item in txn.open_table(schema::HISTORY)?.iter()? {
            let (k, v) = item?;
            history.push(RevisionRecord {
                revision: k.value(),
                events: Revision::decode(v.value())?.events,
            });
        }
        let mut sm = StateMachine::new(history_keep);
        sm.load(applied, conf_state, data);
        sm.restore_history(compact_revision as i64, history);
        Ok(sm)
    }
}

/// A state file's body on its way to disk: kept in pieces of
/// [`SYNC_EVERY`], each written, checksummed and synced before the next,
/// and paced to `rate`; the length goes in the header at the end.
struct Body {
    f: File,
    pending: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    rate: Option<u64>,
    started: Instant,
}

impl Body {
    fn new(f: File, rate: Option<u64>, started: Instant) -> Self {
        Body {
            f,
            pending: Vec::with_capacity(SYNC_EVERY + 1024),
            crc: crc32fast::Hasher::new(),
            len: 0,
            rate,
            started,
        }
    }

    /// The magic and a length to be filled in by [`finish`](Self::finish).
    fn start(&mut self) -> std::io::Result<()> {
        self.f.write_all(MAGIC)?;
        self.f.write_all(&0u64.to_le_bytes())
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= SYNC_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.f.write_all(&self.pending)?;
        self.f.sync_data()?;
        self.crc.update(&self.pending);
        self.len += self.pending.len() as u64;
        self.pending.clear();
        if let Some(rate) = self.rate {
            let due = std::time::Duration::from_secs_f64(self.len as f64 / rate as f64);
            std::thread::sleep(due.saturating_sub(self.started.elapsed()));
        }
        Ok(())
    }

    /// The checksum after the body and the body's length in the header.
    fn finish(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.flush()?;
        self.f
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        self.f
            .write_all_at(&self.len.to_le_bytes(), MAGIC.len() as u64)?;
        self.f.sync_all()
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    let msg = format!("cannot {what} {}: {e}", path.display());
    if e.kind() == std::io::ErrorKind::StorageFull {
        Error::DiskFull(msg)
    } else {
        Error::Io(msg)
    }
}

/// Writes state files on their own thread, so the raft thread only pays
/// for an O(1) clone of the state; or inline, in the simulator, where no
/// thread may decide when a file lands.
pub struct Background {
    tx: Option<SyncSender<StateMachine>>,
    thread: Option<JoinHandle<()>>,
    inline: Option<Arc<StateFiles>>,
}

impl Background {
    /// Starts the writer thread of node `id`.
    pub fn start(id: u64, files: Arc<StateFiles>) -> Result<Self> {
        // One file at a time: while one is being written, newer states are
        // simply offered again later.
        let (tx, rx) = sync_channel::<StateMachine>(0);
        let thread = std::thread::Builder::new()
            .name(format!("state-file-{id}"))
            .spawn(move || {
                for sm in rx {
                    // The log is kept until a file is written, so a failure
                    // costs disk, not data; the next offer tries again.
                    if let Err(e) = files.write_paced(&sm, Some(BACKGROUND_RATE)) {
                        tracing::error!(error = %e, "writing the state file failed");
                    }
                }
            })
            .map_err(|e| Error::Config(format!("cannot start the state-file thread: {e}")))?;
        Ok(Background {
            tx: Some(tx),
            thread: Some(thread),
            inline: None,
        })
    }

    /// Writes each offered state at once, on the caller's thread.
    pub fn inline(files: Arc<StateFiles>) -> Self {
        Background {
            tx: None,
            thread: None,
            inline: Some(files),
        }
    }

    /// Hands a state to the writer; false if it is busy with another.
    pub fn offer(&self, sm: &StateMachine) -> bool {
        if let Some(files) = &self.inline {
            if let Err(e) = files.write(sm) {
                tracing::error!(error = %e, "writing the state file failed");
                return false;
            }
            return true;
        }
        match &self.tx {
            Some(tx) => match tx.try_send(sm.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        }
    }

    /// Stops the thread without waiting for a write in progress (a crash
    /// in the simulator, where writes are inline anyway).
    pub fn abandon(&mut self) {
        self.tx.take();
        self.thread.take();
        self.inline.take();
    }

    /// Waits for the write in progress, if any, and stops the thread.
    pub fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenda_proto::db::PutRequest;
    use agenda_proto::raft::{command, Command};

    fn state_with(keys: usize) -> StateMachine {
        let mut sm = StateMachine::new(100);
        sm.set_members([(1, "127.0.0.1:1".to_string())].into());
        sm.conf_state = ConfState {
            voters: vec![1],
            ..Default::default()
        };
        for i in 0..keys {
            let put = put(&format!("k{i}"), b"v".to_vec());
            sm.apply(10 + i as u64, 2, 1, &command(&format!("r{i}"), put))
                .unwrap();
        }
        sm
    }

    fn put(key: &str, value: Vec<u8>) -> command::Op {
        command::Op::Put(PutRequest {
            key: key.into(),
            value,
            ..Default::default()
        })
    }

    fn command(request_id: &str, op: command::Op) -> Command {
        Command {
            request_id: request_id.into(),
            proposed_at_ms: 1,
            caller_role: String::new(),
            op: Some(op),
        }
    }

    #[test]
    fn a_written_state_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path(), "t", 1);
        assert!(files.load(100).unwrap().is_none());
        let sm = state_with(20);
        assert!(files.write(&sm).unwrap());
        assert!(
            !files.write(&sm).unwrap(),
            "the same state is not written twice"
        );
        let back = StateFiles::new(dir.path(), "t", 1)
            .load(100)
            .unwrap()
            .unwrap();
        assert_eq!(back.applied, sm.applied);
        assert_eq!(back.revision, 20);
        assert_eq!(back.members, sm.members);
        assert_eq!(back.conf_state.voters, vec![1]);
        assert_eq!(back.get(b"k7").unwrap().mod_revision, 8);
        assert!(back.dedup_lookup("r3").is_some(), "dedup survives");
        let history = crate::state_machine::history_since(&back.view(), 1);
        assert_eq!(history.len(), 20, "history survives");
    }

    #[test]
    fn the_body_is_written_piece_by_piece_as_the_whole_message_would_be() {
        use agenda_proto::db::LeaseGrantRequest;
        // Enough keys for several pieces, history past its keep (so a
        // compact revision), a lease and dedup records: every field.
        let mut sm = state_with(3000);
        let grant = command::Op::LeaseGrant(LeaseGrantRequest {
            id: 7,
            ttl: 30,
            ..Default::default()
        });
        sm.apply(5000, 2, 1, &command("grant", grant)).unwrap();
        for i in 0..6 {
            let big = put(&format!("big{i}"), vec![i as u8; 1 << 20]);
            sm.apply(5001 + i, 2, 1, &command(&format!("big{i}"), big))
                .unwrap();
        }
        assert!(sm.compact_revision > 0);
        let whole = StateFile {
            identity: "t\n1".into(),
            applied_index: sm.applied.0,
            applied_term: sm.applied.1,
            conf_state: sm.conf_state.write_to_bytes().unwrap(),
            data: Some(sm.snapshot_data()),
            compact_revision: sm.compact_revision,
            history: sm.history_records().collect(),
        }
        .encode_to_vec();
        assert!(whole.len() > 2 * SYNC_EVERY, "{} bytes", whole.len());

        let dir = tempfile::tempdir().unwrap();
        StateFiles::new(dir.path(), "t", 1).write(&sm).unwrap();
        let bytes = std::fs::read(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes[8..16], (whole.len() as u64).to_le_bytes());
        assert!(bytes[16..bytes.len() - 4] == whole[..], "the body differs");
        assert_eq!(
            bytes[bytes.len() - 4..],
            crc32fast::hash(&whole).to_le_bytes()
        );

        // A raft snapshot's data is encoded the same way, in small pieces.
        let mut pieces = Vec::new();
        sm.encode_snapshot_data(1000, |p| {
            pieces.push(p.len());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(pieces.len() > 10, "{pieces:?}");
        let snap = sm.to_snapshot().unwrap();
        assert!(snap.get_data() == &sm.snapshot_data().encode_to_vec()[..]);
        assert_eq!(sm.snapshot_data_len(), snap.get_data().len());
    }

    #[test]
    fn an_earlier_versions_state_redb_is_converted() {
        use agenda_proto::db::{event, Event};
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_STATE_FILE);
        {
            let db = crate::open_database(&legacy).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(schema::META).unwrap();
                meta.insert(schema::META_IDENTITY, b"t\n1".as_slice())
                    .unwrap();
                meta.insert(schema::META_APPLIED, schema::pair_u64(42, 3).as_slice())
                    .unwrap();
                meta.insert(schema::META_REVISION, schema::pair_u64(9, 7).as_slice())
                    .unwrap();
                let cs = ConfState {
                    voters: vec![1, 2, 3],
                    ..Default::default()
                };
                meta.insert(
                    schema::META_CONF_STATE,
                    cs.write_to_bytes().unwrap().as_slice(),
                )
                .unwrap();
                let kv = KeyValue {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    create_revision: 9,
                    mod_revision: 9,
                    version: 1,
                    lease: 5,
                };
                txn.open_table(schema::KV)
                    .unwrap()
                    .insert(b"k".as_slice(), kv.encode_to_vec().as_slice())
                    .unwrap();
                txn.open_table(schema::LEASES)
                    .unwrap()
                    .insert(
                        5,
                        Lease {
                            id: 5,
                            ttl: 30,
                            ttl_ms: 0,
                        }
                        .encode_to_vec()
                        .as_slice(),
                    )
                    .unwrap();
                let applied = Applied {
                    result: None,
                    at_ms: 1,
                };
                txn.open_table(schema::DEDUP)
                    .unwrap()
                    .insert("req-1", applied.encode_to_vec().as_slice())
                    .unwrap();
                let rev = Revision {
                    events: vec![Event {
                        r#type: event::EventType::Put as i32,
                        kv: Some(kv),
                        prev_kv: None,
                    }],
                };
                txn.open_table(schema::HISTORY)
                    .unwrap()
                    .insert(9, rev.encode_to_vec().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let sm = StateFiles::new(dir.path(), "t", 1)
            .load(100)
            .unwrap()
            .unwrap();
        assert_eq!(sm.applied, (42, 3));
        assert_eq!((sm.revision, sm.compact_revision), (9, 7));
        assert_eq!(sm.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(sm.get(b"k").unwrap().value, b"v");
        assert_eq!(sm.leases(), vec![(5, 30_000)]);
        assert_eq!(crate::state_machine::history_since(&sm.view(), 8).len(), 1);
        assert!(!legacy.exists(), "the old file is gone once converted");
        // The next start reads the new file.
        let again = StateFiles::new(dir.path(), "t", 1)
            .load(100)
            .unwrap()
            .unwrap();
        assert_eq!(again.applied, (42, 3));
        assert_eq!(again.get(b"k").unwrap().lease, 5);
    }

    #[test]
    fn the_index_on_disk_is_readable_during_a_paced_write() {
        // The raft thread asks on every log write; it must not wait for a
        // background write to end (it did, for seconds, under load).
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(StateFiles::new(dir.path(), "t", 1));
        files.write(&state_with(1)).unwrap();
        assert_eq!(files.durable_applied(), 10);
        let sm = state_with(100);
        let writer = {
            let files = files.clone();
            std::thread::spawn(move || files.write_paced(&sm, Some(8 * 1024)))
        };
        let tmp = dir.path().join(TMP_FILE);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !tmp.exists() {
            assert!(Instant::now() < deadline, "the paced write never started");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(files.durable_applied(), 10, "waited for the write");
        assert!(writer.join().unwrap().unwrap());
        assert_eq!(files.durable_applied(), 109);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path(), "t", 1);
        files.write(&state_with(3)).unwrap();
        let err = StateFiles::new(dir.path(), "t", 2).load(100).unwrap_err();
        assert!(err.to_string().contains("belongs to node 1"), "{err}");
        let path = dir.path().join(STATE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = StateFiles::new(dir.path(), "t", 1).load(100).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::write(&path, &bytes[..mid]).unwrap();
        let err = StateFiles::new(dir.path(), "t", 1).load(100).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

/// Replicas must agree byte for byte whatever happens to each of them:
/// every input of apply comes from the log, and a state file carries all
/// of the state. Random command logs, one replica restarted from its state
/// file halfway.
#[cfg(test)]
mod determinism {
    use std::collections::BTreeMap;

    use agenda_proto::db::MemberChangeResponse;
    use agenda_proto::db::{
        compare, request_op, CompactionRequest, Compare, DeleteRequest, LeaseGrantRequest,
        LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
    };
    use agenda_proto::raft::{command, command_result, Command, CommandResult, MemberChange};
    use prost::Message as _;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::StateFiles;
    use crate::state_machine::StateMachine;

    /// One entry of a generated log.
    #[derive(Clone)]
    enum Entry {
        Cmd(Command),
        Member { change: MemberChange, add: bool },
    }

    /// History kept per replica: small, so compaction happens often.
    const HISTORY_KEEP: i64 = 40;

    /// A random log: puts (some under leases), deletes, compare-and-set
    /// txns, lease grants and the revokes their expiry proposes, member
    /// changes, and retries of earlier request ids, spanning minutes of
    /// proposer time so dedup records expire along the way.
    fn random_log(seed: u64, len: usize) -> Vec<Entry> {
        let mut rng = StdRng::seed_from_u64(seed);
        // Far from today's clock: a replica that used its own clock in
        // apply would expire different records than the log says.
        let mut at_ms: u64 = 1_000_000_000_000;
        let mut leases: Vec<i64> = Vec::new();
        let mut next_lease = 1;
        let mut sent: Vec<Command> = Vec::new();
        let mut out = Vec::new();
        for n in 0..len {
            at_ms += rng.random_range(0..3_000);
            let key = format!("k{}", rng.random_range(0..30)).into_bytes();
            let id = format!("req-{n}");
            let op = match rng.random_range(0..100) {
                0..=34 => command::Op::Put(PutRequest {
                    key,
                    value: format!("v{n}").into_bytes(),
                    lease: if rng.random_bool(0.2) {
                        leases.last().copied().unwrap_or(0)
                    } else {
                        0
                    },
                    ..Default::default()
                }),
                35..=44 => command::Op::Delete(DeleteRequest {
                    key: if rng.random_bool(0.2) {
                        b"k1".to_vec()
                    } else {
                        key
                    },
                    prefix: rng.random_bool(0.2),
                    prev_kv: true,
                    ..Default::default()
                }),
                45..=59 => command::Op::Txn(TxnRequest {
                    compare: vec![Compare {
                        key: key.clone(),
                        target: compare::Target::Version as i32,
                        result: compare::Result::Greater as i32,
                        number: rng.random_range(0..3),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::Put(PutRequest {
                            key: key.clone(),
                            value: format!("t{n}").into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![RequestOp {
                        request: Some(request_op::Request::Delete(DeleteRequest {
                            key,
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                }),
                60..=67 => {
                    next_lease += 1;
                    leases.push(next_lease);
                    command::Op::LeaseGrant(LeaseGrantRequest {
                        id: next_lease,
                        ttl_ms: rng.random_range(100..5_000),
                        ..Default::default()
                    })
                }
                68..=74 if !leases.is_empty() => {
                    // Expiry: the leader proposes a revoke with no request id.
                    let lease = leases.remove(rng.random_range(0..leases.len()));
                    out.push(Entry::Cmd(Command {
                        request_id: String::new(),
                        proposed_at_ms: at_ms,
                        caller_role: String::new(),
                        op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest {
                            id: lease,
                            ..Default::default()
                        })),
                    }));
                    continue;
                }
                75..=82 => {
                    let node = rng.random_range(2..6);
                    out.push(Entry::Member {
                        change: MemberChange {
                            request_id: id,
                            id: node,
                            addr: format!("127.0.0.1:{}", 7000 + node),
                            proposed_at_ms: at_ms,
                        },
                        add: rng.random_bool(0.5),
                    });
                    continue;
                }
                83..=94 if !sent.is_empty() => {
                    // A client retry: the same request, proposed again later.
                    let mut again = sent[rng.random_range(0..sent.len())].clone();
                    again.proposed_at_ms = at_ms;
                    out.push(Entry::Cmd(again));
                    continue;
                }
                95..=96 => command::Op::Compact(CompactionRequest {
                    // Sometimes behind what is already compacted, or ahead
                    // of the store (refused alike everywhere).
                    revision: rng.random_range(0..n as i64 + 5),
                    request_id: String::new(),
                }),
                _ => command::Op::Put(PutRequest {
                    key: b"hot".to_vec(),
                    value: format!("h{n}").into_bytes(),
                    ..Default::default()
                }),
            };
            let cmd = Command {
                request_id: id,
                proposed_at_ms: at_ms,
                caller_role: String::new(),
                op: Some(op),
            };
            sent.push(cmd.clone());
            out.push(Entry::Cmd(cmd));
        }
        out
    }

    /// Applies `log[from..]` at raft indexes starting after `sm.applied`,
    /// the way the node does (member changes included).
    fn apply(sm: &mut StateMachine, log: &[Entry]) {
        for e in log {
            let index = sm.applied.0 + 1;
            match e {
                Entry::Cmd(cmd) => {
                    sm.apply(index, 1, 1, cmd).unwrap();
                }
                Entry::Member { change, add } => {
                    let mut members = BTreeMap::clone(&sm.members);
                    if *add {
                        members.insert(change.id, change.addr.clone());
                    } else {
                        members.remove(&change.id);
                    }
                    sm.set_members(members);
                    sm.conf_state.voters = sm.members.keys().copied().collect();
                    let result = CommandResult {
                        result: Some(command_result::Result::MemberChange(MemberChangeResponse {
                            header: Some(sm.header(1, 1)),
                            members: sm.member_list(),
                        })),
                    };
                    sm.record_member_change(index, 1, change, *add, &result);
                }
            }
        }
    }

    /// Everything a replica holds, in a canonical byte form (maps sorted).
    fn canonical(sm: &StateMachine) -> Vec<u8> {
        let mut data = sm.snapshot_data();
        data.dedup.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        let mut out = data.encode_to_vec();
        for r in sm.history_records() {
            out.extend(r.encode_to_vec());
        }
        out.extend(
            format!(
                "{:?}|{}|{:?}",
                sm.applied, sm.compact_revision, sm.conf_state.voters
            )
            .bytes(),
        );
        out
    }

    fn fresh() -> StateMachine {
        let mut sm = StateMachine::new(HISTORY_KEEP);
        sm.set_members(BTreeMap::from([(1, "127.0.0.1:7001".to_string())]));
        sm.conf_state.voters = vec![1];
        sm
    }

    #[test]
    fn replicas_agree_byte_for_byte_with_a_restart_from_a_state_file_halfway() {
        for seed in 0..12 {
            let log = random_log(seed, 900);
            let mut straight = fresh();
            apply(&mut straight, &log);

            let dir = tempfile::tempdir().unwrap();
            let files = StateFiles::new(dir.path(), "t", 1);
            let mut restarted = fresh();
            let half = log.len() / 2 + seed as usize * 7;
            apply(&mut restarted, &log[..half]);
            assert!(files.write(&restarted).unwrap());
            drop(restarted);
            let mut restarted = StateFiles::new(dir.path(), "t", 1)
                .load(HISTORY_KEEP)
                .unwrap()
                .unwrap();
            apply(&mut restarted, &log[half..]);

            assert_eq!(straight.applied, restarted.applied, "seed {seed}");
            assert!(
                canonical(&straight) == canonical(&restarted),
                "seed {seed}: replicas diverged (revision {} vs {}, dedup {} vs {}, leases {:?} vs {:?})",
                straight.revision,
                restarted.revision,
                straight.snapshot_data().dedup.len(),
                restarted.snapshot_data().dedup.len(),
                straight.leases(),
                restarted.leases(),
            );
        }
    }

    #[test]
    fn a_retry_after_a_member_change_at_an_expiry_round_is_still_a_duplicate() {
        let at = 1_000_000_000_000;
        let put = Command {
            request_id: "r1".into(),
            proposed_at_ms: at,
            caller_role: String::new(),
            op: Some(command::Op::Put(PutRequest {
                key: b"x".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })),
        };
        let mut sm = fresh();
        // Fill up to index 63 so the member change lands on index 64, an
        // expiry round.
        let filler: Vec<Entry> = (0..62)
            .map(|i| {
                Entry::Cmd(Command {
                    request_id: format!("f{i}"),
                    proposed_at_ms: at,
                    caller_role: String::new(),
                    op: Some(command::Op::Put(PutRequest {
                        key: b"f".to_vec(),
                        ..Default::default()
                    })),
                })
            })
            .collect();
        apply(&mut sm, &filler);
        apply(&mut sm, &[Entry::Cmd(put.clone())]);
        assert_eq!(sm.applied.0, 63);
        let change = MemberChange {
            request_id: "m1".into(),
            id: 2,
            addr: "127.0.0.1:7002".into(),
            proposed_at_ms: at + 1_000,
        };
        apply(&mut sm, &[Entry::Member { change, add: true }]);
        assert_eq!(sm.applied.0, 64);
        // The client retries well inside the retention.
        let mut retry = put;
        retry.proposed_at_ms = at + 2_000;
        apply(&mut sm, &[Entry::Cmd(retry)]);
        assert_eq!(
            sm.get(b"x").unwrap().version,
            1,
            "the retry was applied a second time: the member change expired r1"
        );
    }
}
