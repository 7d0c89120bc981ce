//! The file under redb: its own file backend, with fsync switched off for
//! [`crate::SyncPolicy::Never`], and in tests a switch that injects faults (a full disk, a
//! power cut in the middle of a write).

use std::fs::File;
use std::io;
use std::ops::Bound;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// redb's file backend, with `sync_data` optional.
#[derive(Debug)]
pub(crate) struct DiskBackend {
    inner: FileBackend,
    fsync: bool,
    #[cfg(test)]
    faults: Option<std::sync::Arc<Faults>>,
}

impl DiskBackend {
    /// Wraps an open data file.
    pub(crate) fn new(
        file: File,
        fsync: bool,
        #[cfg(test)] faults: Option<std::sync::Arc<Faults>>,
    ) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            fsync,
            #[cfg(test)]
            faults,
        })
    }

    #[cfg(test)]
    fn before_write(&self, data: &[u8]) -> io::Result<usize> {
        self.faults
            .as_ref()
            .map_or(Ok(data.len()), |f| f.before_write(data.len()))
    }

    #[cfg(not(test))]
    #[allow(clippy::unnecessary_wraps)] // the test build can fail here
    fn before_write(&self, data: &[u8]) -> io::Result<usize> {
        Ok(data.len())
    }
}

impl StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        #[cfg(test)]
        if let Some(f) = &self.faults {
            if len > self.inner.len()? {
                f.before_write(0)?;
            }
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        #[cfg(test)]
        if let Some(f) = &self.faults {
            f.before_sync()?;
            if self.fsync {
                f.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        if self.fsync {
            self.inner.sync_data()
        } else {
            Ok(())
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let allowed = self.before_write(data)?;
        if allowed < data.len() {
            // A power cut in the middle of this write: only a prefix reaches the file.
            self.inner.write(offset, &data[..allowed])?;
            return Err(io::Error::other("simulated power cut"));
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Faults a test switches on while a store runs.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Faults {
    /// Writes and file growth fail with `ENOSPC`.
    pub(crate) disk_full: std::sync::atomic::AtomicBool,
    /// Bytes that may still be written before a power cut (`u64::MAX`: no cut planned). The
    /// write that crosses it is cut short; every later write and sync fails.
    pub(crate) write_budget: std::sync::atomic::AtomicU64,
    /// Bytes written so far.
    pub(crate) written: std::sync::atomic::AtomicU64,
    /// fsyncs so far.
    pub(crate) syncs: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl Default for Faults {
    fn default() -> Self {
        Self {
            disk_full: false.into(),
            write_budget: u64::MAX.into(),
            written: 0.into(),
            syncs: 0.into(),
        }
    }
}

#[cfg(test)]
impl Faults {
    pub(crate) fn before_write(&self, len: usize) -> io::Result<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.disk_full.load(SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let len = len as u64;
        self.written.fetch_add(len, SeqCst);
        let budget = self.write_budget.load(SeqCst);
        if budget == u64::MAX {
            return Ok(len as usize);
        }
        if budget == 0 {
            return Err(io::Error::other("simulated power cut"));
        }
        let allowed = budget.min(len);
        self.write_budget.store(budget - allowed, SeqCst);
        if allowed == len {
            Ok(len as usize)
        } else {
            // Everything after this write is lost.
            self.write_budget.store(0, SeqCst);
            Ok(allowed as usize)
        }
    }

    pub(crate) fn before_sync(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.write_budget.load(SeqCst) == 0 {
            return Err(io::Error::other("simulated power cut"));
        }
        Ok(())
    }
}
