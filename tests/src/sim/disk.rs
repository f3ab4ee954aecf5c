//! A simulated disk under redb: writes land in memory, `sync_data` makes
//! them durable, and a crash keeps only what was synced. It can also be
//! made full (writes then fail with ENOSPC) and slow (each sync costs
//! virtual time, charged by the world).

use std::io;
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

#[derive(Debug, Default)]
struct Image {
    /// What readers see: every write so far.
    current: Vec<u8>,
    /// What survives a crash: the image as of the last sync.
    durable: Vec<u8>,
    /// Ranges written since the last sync (a sync copies only these: a
    /// whole-image copy per fsync made runs quadratic).
    dirty: Vec<(usize, usize)>,
    /// Set by a crash: the redb instance that used this disk is gone and
    /// may not write any more (its drop must not reach `durable`).
    crashed: bool,
    /// Writes past this size fail (a full disk).
    capacity: Option<u64>,
    syncs: u64,
}

/// One node's disk; cheap to clone (the world keeps a handle to crash it).
#[derive(Debug, Clone, Default)]
pub struct SimDisk(Arc<Mutex<Image>>);

fn gone() -> io::Error {
    io::Error::other("the simulated machine crashed")
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk::default()
    }

    fn image(&self) -> std::sync::MutexGuard<'_, Image> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A crash: what was not synced is lost, and this handle's redb may
    /// not touch the disk again. Returns the disk the restarted node gets.
    pub fn crash(&self) -> SimDisk {
        let mut img = self.image();
        img.crashed = true;
        let durable = img.durable.clone();
        SimDisk(Arc::new(Mutex::new(Image {
            current: durable.clone(),
            durable,
            dirty: Vec::new(),
            crashed: false,
            capacity: img.capacity,
            syncs: 0,
        })))
    }

    /// Fills the disk (`Some`: at most that many bytes) or frees it.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.image().capacity = capacity;
    }

    /// Bytes in use now.
    pub fn used(&self) -> u64 {
        self.image().current.len() as u64
    }

    /// Syncs so far.
    pub fn syncs(&self) -> u64 {
        self.image().syncs
    }
}

impl StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.image().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let img = self.image();
        let start = offset as usize;
        let end = start + out.len();
        if end > img.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&img.current[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut img = self.image();
        if img.crashed {
            return Err(gone());
        }
        if img.capacity.is_some_and(|c| len > c) && len > img.current.len() as u64 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let old = img.current.len();
        img.current.resize(len as usize, 0);
        if len as usize > old {
            img.dirty.push((old, len as usize));
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut img = self.image();
        if img.crashed {
            return Err(gone());
        }
        let img = &mut *img;
        img.durable.resize(img.current.len(), 0);
        for (start, end) in img.dirty.drain(..) {
            let end = end.min(img.current.len());
            if start < end {
                img.durable[start..end].copy_from_slice(&img.current[start..end]);
            }
        }
        img.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut img = self.image();
        if img.crashed {
            return Err(gone());
        }
        let end = offset as usize + data.len();
        if end > img.current.len() {
            if img.capacity.is_some_and(|c| end as u64 > c) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            img.current.resize(end, 0);
        }
        img.current[offset as usize..end].copy_from_slice(data);
        img.dirty.push((offset as usize, end));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_only_what_was_synced() {
        let d = SimDisk::new();
        d.write(0, b"hello").unwrap();
        d.sync_data().unwrap();
        d.write(0, b"HELLO world").unwrap();
        let after = d.crash();
        assert!(d.write(0, b"x").is_err(), "the crashed instance is gone");
        let mut buf = vec![0; 5];
        after.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(after.len().unwrap(), 5);
    }

    #[test]
    fn a_full_disk_refuses_growth() {
        let d = SimDisk::new();
        d.set_capacity(Some(4));
        assert!(d.write(0, b"abcd").is_ok());
        assert!(d.write(2, b"xyz").is_err());
        d.set_capacity(None);
        assert!(d.write(2, b"xyz").is_ok());
    }
}
