//! `agendactl snapshot save|restore`: backups of agenda-db.
//!
//! `save` streams a consistent snapshot from any node (every write
//! acknowledged before it began is in it) into an owner-only file, with
//! its revision and checksum. `restore` seeds one member's data dir of a
//! *new* cluster from that file (run it once per member, with the same
//! `--members` and a new `--cluster-token`): what belonged to the old
//! cluster's running processes is left out (leased keys: the VIP holder,
//! elections, service instances; and the Redis primary record, which
//! names a server of the old deployment).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use agenda_db::backup;
use agenda_proto::db::SnapshotHeader;

use crate::error::{Error, Result};

/// What a save wrote.
#[derive(Debug)]
pub struct Saved {
    /// The snapshot's header (revision, size, checksum, node).
    pub header: SnapshotHeader,
}

/// Streams a snapshot from agenda-db into `path`, printing progress to
/// stderr when it is a terminal.
pub async fn save(db: &agenda_common::DbClient, path: &Path) -> Result<Saved> {
    let mut bar = Progress::new("receiving");
    let (header, body) = db.snapshot(|got, total| bar.show(got, total)).await?;
    bar.done();
    backup::write_file(path, &header, &body)?;
    Ok(Saved { header })
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The snapshot's header.
    pub header: SnapshotHeader,
    /// Keys restored.
    pub keys: usize,
    /// What was left out.
    pub dropped: backup::Dropped,
}

/// Seeds the data dir `dir` of member `id` of a new cluster (`members`:
/// `ID=HOST:PORT,...`, as agenda-db's `--peers`) from the snapshot file
/// `file`.
pub fn restore(
    file: &Path,
    dir: &Path,
    id: u64,
    members: &str,
    cluster_token: &str,
    history: i64,
) -> Result<Restored> {
    let members = parse_members(members)?;
    let mut bar = Progress::new("reading the snapshot");
    let read = backup::read_file_with(file, |got, total| bar.show(got, total));
    bar.done();
    let (header, data) = read?;
    let (data, dropped) =
        backup::without_process_state(data, &[agenda_common::registry::REDIS_PRIMARY.as_bytes()]);
    let keys = data.kvs.len();
    backup::restore(dir, id, cluster_token, &members, data, history)?;
    Ok(Restored {
        header,
        keys,
        dropped,
    })
}

/// `ID=HOST:PORT,...` as a member map (read as agenda-db reads `--peers`).
fn parse_members(s: &str) -> Result<BTreeMap<u64, String>> {
    let out = agenda_db::config::parse_members(s, "--members").map_err(Error::Refused)?;
    if out.is_empty() {
        return Err(Error::Refused("--members lists no member".into()));
    }
    Ok(out)
}

/// A progress line on stderr (only on a terminal: logs stay clean).
struct Progress {
    what: &'static str,
    tty: bool,
    last: u64,
}

impl Progress {
    fn new(what: &'static str) -> Self {
        use std::io::IsTerminal as _;
        Progress {
            what,
            tty: std::io::stderr().is_terminal(),
            last: u64::MAX,
        }
    }

    fn show(&mut self, got: u64, total: u64) {
        if !self.tty || total == 0 {
            return;
        }
        let pct = got * 100 / total;
        if pct == self.last {
            return;
        }
        self.last = pct;
        let filled = (pct / 5) as usize;
        eprint!(
            "\r{} [{}{}] {pct:>3}% of {} KiB",
            self.what,
            "#".repeat(filled),
            " ".repeat(20 - filled),
            total / 1024
        );
        let _ = std::io::stderr().flush();
    }

    fn done(&self) {
        if self.tty && self.last != u64::MAX {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_like_peers_and_mistakes_named() {
        let m = parse_members("1=10.0.0.1:7001, 2=10.0.0.2:7001").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&2], "10.0.0.2:7001");
        for bad in ["", "1", "0=a:1", "x=a:1", "1=a:1,1=b:1"] {
            assert!(parse_members(bad).is_err(), "{bad:?}");
        }
    }
}
