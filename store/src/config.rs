//! How a store is opened: its directory, when commits reach the disk, and a few limits.

use std::path::PathBuf;
use std::time::Duration;

/// The name of the data file inside [`StoreConfig::dir`].
pub const DATA_FILE: &str = "jetmq-store.redb";

/// When a commit is forced to the disk (fsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every commit is fsynced before its requests are acknowledged: an acknowledged write
    /// survives `kill -9` and power loss. Concurrent writes share one fsync (group commit).
    /// The sync is of the commit's record in the write-ahead log ([`crate::wal`]), made while
    /// the commit is applied to the data file.
    #[default]
    Always,
    /// Commits are acknowledged at once and fsynced at most this long afterwards: a crash of the
    /// process or the machine loses at most the last interval of acknowledged writes, and the
    /// file stays consistent.
    Interval(Duration),
    /// Commits are never fsynced by the store (the kernel writes them back when it likes): an
    /// acknowledged write survives `kill -9` of the process, but a power loss or kernel crash may
    /// lose it or leave a file that fails its start-up check.
    Never,
}

/// Everything [`crate::Store::open`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The data directory; created if missing. The store keeps one file in it, [`DATA_FILE`].
    pub dir: PathBuf,
    /// When commits are fsynced.
    pub sync: SyncPolicy,
    /// How long [`crate::Store::execute`] waits for its reply before answering
    /// [`jetmq_core::js::StoreError::Timeout`] (the request may still be carried out later).
    pub request_timeout: Duration,
    /// Memory the storage engine may use to cache pages, in bytes.
    pub cache_bytes: usize,
    /// Verify the checksum of every page at start-up, so a damaged file is refused with a clear
    /// error instead of failing later. Costs one read of the whole file.
    pub verify_on_open: bool,
    /// The file size below which automatic compaction never runs, in bytes.
    pub compact_min_bytes: u64,
    /// How often, at most, the store looks at the file to decide on automatic compaction.
    pub compact_check: Duration,
    /// The most requests one commit carries.
    pub max_batch: usize,
    /// With [`SyncPolicy::Always`], the write-ahead log's size at which the data file is
    /// committed durably and the log starts over, in bytes (the log file grows to about this
    /// size; a restart replays at most this much).
    pub log_bytes: u64,
    #[cfg(test)]
    pub(crate) faults: Option<std::sync::Arc<crate::backend::Faults>>,
}

impl StoreConfig {
    /// The defaults for a data directory: sync [`SyncPolicy::Always`], 30 s request timeout,
    /// 64 MiB page cache, verification at start-up, automatic compaction of files above 64 MiB
    /// that are more than half free, looked at every 10 minutes, a 16 MiB write-ahead log.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync: SyncPolicy::Always,
            request_timeout: Duration::from_secs(30),
            cache_bytes: 64 << 20,
            verify_on_open: true,
            compact_min_bytes: 64 << 20,
            compact_check: Duration::from_secs(600),
            max_batch: 4096,
            log_bytes: 16 << 20,
            #[cfg(test)]
            faults: None,
        }
    }

    /// The same configuration with another sync policy.
    #[must_use]
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// The path of the data file.
    #[must_use]
    pub fn data_file(&self) -> PathBuf {
        self.dir.join(DATA_FILE)
    }
}
