//! Errors: why a store could not be opened ([`OpenError`], naming the file and what to do), and
//! how storage failures become the core's [`StoreError`] reasons.

use std::fmt;
use std::io;
use std::path::PathBuf;

use jetmq_core::js::StoreError;

/// Why [`crate::Store::open`] failed. Each message names the file and what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory or file could not be created, opened or read.
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another process (or another `Store` in this one) has the data file open.
    Locked {
        /// The data file.
        path: PathBuf,
    },
    /// The data file is damaged or truncated, or is not a jetmq store.
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// What the check found.
        detail: String,
    },
    /// The data file was written by an incompatible version.
    Incompatible {
        /// The data file.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
}

impl OpenError {
    /// The file or directory the error is about.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::Locked { path }
            | Self::Corrupt { path, .. }
            | Self::Incompatible { path, .. } => path,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } if is_disk_full(source) => write!(
                f,
                "cannot open the store at {}: the disk is full ({source}); free space on it",
                path.display()
            ),
            Self::Io { path, source } => write!(
                f,
                "cannot open the store at {}: {source}; check that the path exists, is writable \
                 by this user and that the disk is mounted",
                path.display()
            ),
            Self::Locked { path } => write!(
                f,
                "the store file {} is in use by another process; stop the other jetmq or \
                 configure another data directory",
                path.display()
            ),
            Self::Corrupt { path, detail } => write!(
                f,
                "the store file {} is damaged ({detail}); the store did not start. Restore it from \
                 a backup, or move it aside to start with an empty store (sessions, retained and \
                 queued messages in it are then lost)",
                path.display()
            ),
            Self::Incompatible { path, detail } => write!(
                f,
                "the store file {} was written by an incompatible version ({detail}); run the \
                 jetmq version that wrote it, or move the file aside to start with an empty store",
                path.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Whether an I/O error means the disk is full.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

/// The reason a storage failure gives the core.
pub(crate) fn describe(e: &redb::Error) -> String {
    match e {
        redb::Error::Io(io) if is_disk_full(io) => format!("disk full: {io}"),
        redb::Error::Io(io) => format!("I/O error: {io}"),
        redb::Error::Corrupted(detail) => format!("damaged data: {detail}"),
        other => format!("storage error: {other}"),
    }
}

/// A storage failure as the core sees it: the store cannot take this request now.
pub(crate) fn unavailable(reason: &str) -> StoreError {
    StoreError::Unavailable(reason.into())
}
