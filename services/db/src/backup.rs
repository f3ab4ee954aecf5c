//! Backups: the snapshot file `agendactl snapshot save` writes and
//! `agendactl snapshot restore` reads.
//!
//! A snapshot is the whole state machine as of one applied index (what a
//! raft snapshot to a lagging member holds), taken by a node after a
//! ReadIndex round, so every write acknowledged before the save began is
//! in it. Format: the magic `AGDBSNP1`, the header length (u32 LE), the
//! header (prost [`SnapshotHeader`]: revision, applied index, body size,
//! SHA-256 of the body), then the body (prost [`SnapshotData`]). The file
//! is written owner-only (it holds the token signing keys and password
//! hashes), to a temporary name, fsynced and renamed: a crash leaves no
//! half a backup under the real name.
//!
//! [`scheduled`] writes such files on a schedule (`--backup-dir`), on
//! the leader only, keeping the newest few.
//!
//! [`restore`] seeds a new member's data dir from one (etcd's `snapshot
//! restore`): what belonged to the old cluster's running processes goes
//! (every leased key and its lease), membership is the new cluster's, and
//! the new cluster token keeps old data dirs and peers out.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use agenda_proto::db::{SnapshotChunk, SnapshotHeader};
use agenda_proto::raft::SnapshotData;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"AGDBSNP1";
/// Bytes of body per streamed chunk (well under gRPC's 4 MiB message cap).
const CHUNK: usize = 1024 * 1024;

/// The snapshot of `sm`: its header (member id left to the caller) and
/// its body.
pub fn encode(sm: &crate::state_machine::StateMachine) -> (SnapshotHeader, Vec<u8>) {
    let data = sm.snapshot_data();
    let body = data.encode_to_vec();
    let header = SnapshotHeader {
        revision: data.revision,
        applied_index: sm.applied.0,
        size: body.len() as u64,
        sha256: Sha256::digest(&body).to_vec(),
        member_id: 0,
    };
    (header, body)
}

/// `body` in pieces for the stream, the header on the first.
pub fn chunks(header: SnapshotHeader, body: Vec<u8>) -> Vec<SnapshotChunk> {
    let mut out: Vec<SnapshotChunk> = body
        .chunks(CHUNK)
        .map(|c| SnapshotChunk {
            header: None,
            data: c.to_vec(),
        })
        .collect();
    if out.is_empty() {
        out.push(SnapshotChunk::default());
    }
    out[0].header = Some(header);
    out
}

/// Writes a snapshot file at `path` (owner-only, atomically).
pub fn write_file(path: &Path, header: &SnapshotHeader, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension("part");
    let result = (|| {
        let mut f = open_private(&tmp)?;
        let h = header.encode_to_vec();
        f.write_all(MAGIC)?;
        f.write_all(&(h.len() as u32).to_le_bytes())?;
        f.write_all(&h)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e: std::io::Error| Error::Io(format!("writing {}: {e}", path.display())))
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Reads and checks a snapshot file: its header and state.
pub fn read_file(path: &Path) -> Result<(SnapshotHeader, SnapshotData)> {
    read_file_with(path, |_, _| {})
}

/// [`read_file`], telling `progress` the body's bytes read so far and in
/// all as it goes (a large backup takes a while).
pub fn read_file_with(
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<(SnapshotHeader, SnapshotData)> {
    let bad = |why: String| Error::Config(format!("{}: {why}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .map_err(|_| bad("not an agenda-db snapshot (too short)".into()))?;
    if &magic != MAGIC {
        return Err(bad("not an agenda-db snapshot (wrong magic)".into()));
    }
    let mut len = [0u8; 4];
    f.read_exact(&mut len)
        .map_err(|_| bad("truncated header".into()))?;
    let mut h = vec![0u8; u32::from_le_bytes(len) as usize];
    f.read_exact(&mut h)
        .map_err(|_| bad("truncated header".into()))?;
    let header = SnapshotHeader::decode(h.as_slice()).map_err(|e| bad(format!("header: {e}")))?;
    let mut body = Vec::with_capacity(header.size as usize);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut chunk).map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
        progress(body.len() as u64, header.size);
    }
    if body.len() as u64 != header.size {
        return Err(bad(format!(
            "the body has {} bytes, the header says {}: the file is truncated or damaged",
            body.len(),
            header.size
        )));
    }
    if Sha256::digest(&body)[..] != header.sha256[..] {
        return Err(bad(
            "the checksum does not match: the file is damaged".into()
        ));
    }
    let data = SnapshotData::decode(body.as_slice()).map_err(|e| bad(format!("body: {e}")))?;
    Ok((header, data))
}

/// What a restore leaves out of a snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Keys attached to a lease (and so to a process of the old cluster).
    pub leased_keys: usize,
    /// The leases.
    pub leases: usize,
    /// Keys named by the caller (e.g. a stale Redis primary record).
    pub named_keys: usize,
}

/// `data` without what belonged to the old cluster's running processes:
/// every lease and its keys, and the keys in `also_drop`.
pub fn without_process_state(
    mut data: SnapshotData,
    also_drop: &[&[u8]],
) -> (SnapshotData, Dropped) {
    let mut dropped = Dropped {
        leases: data.leases.len(),
        ..Default::default()
    };
    data.leases.clear();
    data.kvs.retain(|kv| {
        if kv.lease != 0 {
            dropped.leased_keys += 1;
            false
        } else if also_drop.contains(&kv.key.as_slice()) {
            dropped.named_keys += 1;
            false
        } else {
            true
        }
    });
    // Retries of the old cluster's clients are not this cluster's.
    data.dedup.clear();
    (data, dropped)
}

/// Seeds the data dir `dir` of member `id` of a new cluster (`members`,
/// token `cluster_token`) with `data`. The dir must not hold a node's
/// files already.
pub fn restore(
    dir: &Path,
    id: u64,
    cluster_token: &str,
    members: &BTreeMap<u64, String>,
    data: SnapshotData,
    history: i64,
) -> Result<()> {
    crate::recovery::seed(dir, id, cluster_token, members, data, history)
}

/// The schedule of `--backup-dir`, `--backup-every`, `--backup-keep`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Where the files go.
    pub dir: std::path::PathBuf,
    /// How often.
    pub every: std::time::Duration,
    /// How many are kept.
    pub keep: usize,
}

/// Writes a backup every `s.every` while this node leads (one file per
/// period for the cluster, not one per node), named by revision and time
/// (`agenda-REVISION-UNIXSECS.snap`), and removes all but the newest
/// `s.keep`. Failures are logged and tried again next period.
pub async fn scheduled(
    db: crate::service::Db,
    s: Schedule,
    stop: tokio_util::sync::CancellationToken,
) {
    if let Err(e) = std::fs::create_dir_all(&s.dir) {
        tracing::error!(dir = %s.dir.display(), error = %e, "cannot create the backup dir; no scheduled backups");
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(s.every) => {}
        }
        match db.status().await {
            Ok(st) if st.role == "leader" => {}
            _ => continue,
        }
        let started = std::time::Instant::now();
        let result = async {
            let sm = db.snapshot().await?;
            let (header, body) = tokio::task::spawn_blocking(move || encode(&sm))
                .await
                .map_err(|e| Error::Io(format!("encoding a backup: {e}")))?;
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let name = format!("agenda-{:012}-{secs}.snap", header.revision);
            let path = s.dir.join(&name);
            let dir = s.dir.clone();
            let keep = s.keep;
            tokio::task::spawn_blocking(move || {
                write_file(&path, &header, &body)?;
                prune(&dir, keep)?;
                Ok::<_, Error>((name, header.revision, header.size))
            })
            .await
            .map_err(|e| Error::Io(format!("writing a backup: {e}")))?
        }
        .await;
        match result {
            Ok((name, revision, bytes)) => tracing::info!(
                file = %name, revision, bytes, took_ms = started.elapsed().as_millis() as u64,
                "scheduled backup written"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "scheduled backup failed; trying again next period")
            }
        }
    }
}

/// Removes all but the newest `keep` backup files of `dir` (by name:
/// revision first, so the newest state wins).
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<std::path::PathBuf>> {
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", dir.display()));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("agenda-") && n.ends_with(".snap"))
        })
        .collect();
    files.sort();
    let extra = files.len().saturating_sub(keep);
    let gone: Vec<_> = files.drain(..extra).collect();
    for f in &gone {
        std::fs::remove_file(f).map_err(io)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenda_proto::db::KeyValue;
    use agenda_proto::raft::Lease;

    fn kv(key: &str, lease: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        }
    }

    fn sample() -> SnapshotData {
        SnapshotData {
            kvs: vec![kv("a", 0), kv("held", 7), kv("primary", 0)],
            leases: vec![Lease {
                id: 7,
                ttl: 3,
                ..Default::default()
            }],
            revision: 42,
            ..Default::default()
        }
    }

    fn header(body: &[u8]) -> SnapshotHeader {
        SnapshotHeader {
            revision: 42,
            size: body.len() as u64,
            sha256: Sha256::digest(body).to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_file_round_trips_and_damage_or_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let body = sample().encode_to_vec();
        write_file(&path, &header(&body), &body).unwrap();
        let (h, data) = read_file(&path).unwrap();
        assert_eq!((h.revision, data), (42, sample()));
        let bytes = std::fs::read(&path).unwrap();
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert!(read_file(&path)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read_file(&path)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        std::fs::write(&path, b"hello").unwrap();
        assert!(read_file(&path)
            .unwrap_err()
            .to_string()
            .contains("not an agenda-db snapshot"));
    }

    #[test]
    fn pruning_keeps_the_newest_backups_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "agenda-000000000010-1.snap",
            "agenda-000000000020-2.snap",
            "agenda-000000000030-3.snap",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let gone = prune(dir.path(), 2).unwrap();
        assert_eq!(gone.len(), 1);
        assert!(gone[0].ends_with("agenda-000000000010-1.snap"));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "agenda-000000000020-2.snap",
                "agenda-000000000030-3.snap",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn a_restore_leaves_leases_their_keys_and_named_records_out() {
        let (data, dropped) = without_process_state(sample(), &[b"primary"]);
        let keys: Vec<&[u8]> = data.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [b"a".as_slice()]);
        assert!(data.leases.is_empty());
        assert_eq!(
            dropped,
            Dropped {
                leased_keys: 1,
                leases: 1,
                named_keys: 1
            }
        );
    }
}
