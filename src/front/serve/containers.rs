//! Containers opened by the server, shared by every request for them.
//!
//! Opening a container costs a key derivation (PBKDF2 for a passphrase: a large fraction of a
//! second by design), so each one is opened once and kept, together with its handle in the
//! shared block cache. A failure to open (wrong key, damaged file) is kept too, so a client cannot
//! make the server run the KDF again and again for a container the key does not open; an I/O
//! error is not, since it may pass. Both are keyed by the file's
//! identity (device, inode, size, modification time): a container replaced on disk is opened
//! afresh on the next request, and the old one's cached blocks are dropped once no response
//! uses it any more.

use super::conditional::Validators;
use crate::container::cache::{BlockCache, CachedContainer};
use crate::container::reader::Container;
use crate::{Error, Key};
use hyper::StatusCode;
use lru::LruCache;
use std::fs::{self, File, Metadata};
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// How many opened containers are kept (each holds a file descriptor and its index).
pub const MAX_OPEN: usize = 1024;

/// An opened container and what the server says about it.
pub struct ServedFile {
    pub cached: CachedContainer,
    /// The container file (canonical), for log lines.
    pub path: PathBuf,
    pub content_type: &'static str,
    pub validators: Validators,
    pub block_size: u64,
    /// Where the last response for this file ended: a request that starts there is a
    /// sequential reader (a player fetching chunk after chunk) and gets read-ahead.
    pub last_end: AtomicU64,
}

/// Why a container cannot be served: the status, a short reason for the client (no server
/// paths), and the full error for the log.
#[derive(Clone, Debug)]
pub struct OpenFailure {
    pub status: StatusCode,
    pub reason: &'static str,
    pub detail: String,
}

type Opened = Result<Arc<ServedFile>, OpenFailure>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Identity {
    fn of(m: &Metadata) -> Self {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

type Slot = Arc<Mutex<Option<(Identity, Opened)>>>;

/// The opened containers of one server.
pub struct Containers {
    key: Key,
    cache: Arc<BlockCache>,
    slots: Mutex<LruCache<PathBuf, Slot>>,
}

impl Containers {
    pub fn new(key: Key, cache: Arc<BlockCache>) -> Self {
        Containers {
            key,
            cache,
            slots: Mutex::new(LruCache::new(NonZeroUsize::new(MAX_OPEN).expect("non-zero"))),
        }
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// The opened container at `file` (canonical path) whose plaintext is called `name`.
    /// Blocking: may open the file and derive its key. Concurrent requests for one file wait for
    /// a single open.
    pub fn get(&self, file: &Path, name: &str) -> Opened {
        let slot = self.slot(file);
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        let current = fs::metadata(file).map_err(|e| io_failure(file, e))?;
        if let Some((identity, opened)) = slot.as_ref() {
            if *identity == Identity::of(&current) {
                return opened.clone();
            }
        }
        let handle = File::open(file).map_err(|e| io_failure(file, e))?;
        let meta = handle.metadata().map_err(|e| io_failure(file, e))?;
        match self.open(handle, &meta, file, name) {
            Ok(opened) => {
                *slot = Some((Identity::of(&meta), Ok(Arc::clone(&opened))));
                Ok(opened)
            }
            // An I/O error may pass (too many open files, a flaky disk): try again next time.
            Err(e) if matches!(e.root(), Error::Io { .. }) => Err(failure(e, file)),
            // The key or the bytes are wrong: remembered until the file changes.
            Err(e) => {
                let failed = failure(e, file);
                *slot = Some((Identity::of(&meta), Err(failed.clone())));
                Err(failed)
            }
        }
    }

    /// Opens a container now and keeps it, returning the library's error (for a startup check:
    /// a wrong key is reported before the server listens).
    pub fn preload(&self, file: &Path, name: &str) -> crate::Result<()> {
        let in_file = |e: Error| e.in_file(file);
        let handle = File::open(file).map_err(|e| in_file(Error::io("opening", e)))?;
        let meta = handle
            .metadata()
            .map_err(|e| in_file(Error::io("reading metadata", e)))?;
        let opened = self.open(handle, &meta, file, name).map_err(in_file)?;
        *self.slot(file).lock().unwrap_or_else(|p| p.into_inner()) = Some((Identity::of(&meta), Ok(opened)));
        Ok(())
    }

    fn slot(&self, file: &Path) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.get_or_insert(file.to_path_buf(), Slot::default))
    }

    fn open(&self, handle: File, meta: &Metadata, file: &Path, name: &str) -> crate::Result<Arc<ServedFile>> {
        let container = Container::from_source(handle, &self.key)?;
        let header = &container.info().header;
        let validators = Validators::new(
            hex::encode(header.container_id),
            meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        );
        let block_size = u64::from(header.block_size);
        Ok(Arc::new(ServedFile {
            cached: CachedContainer::new(Arc::new(container), Arc::clone(&self.cache)),
            path: file.to_path_buf(),
            content_type: content_type(name),
            validators,
            block_size,
            last_end: AtomicU64::new(u64::MAX),
        }))
    }

    /// How many containers are open now.
    pub fn open_count(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A container that did not open: a wrong key is 403, anything else 500.
fn failure(e: Error, file: &Path) -> OpenFailure {
    let e = e.in_file(file);
    let (status, reason) = match e.root() {
        e if e.is_wrong_key() => (
            StatusCode::FORBIDDEN,
            "the server's key does not open this container",
        ),
        Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "the container cannot be read"),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the container is damaged or incomplete",
        ),
    };
    OpenFailure {
        status,
        reason,
        detail: e.to_string(),
    }
}

fn io_failure(file: &Path, e: std::io::Error) -> OpenFailure {
    let not_found = e.kind() == std::io::ErrorKind::NotFound;
    OpenFailure {
        status: if not_found {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        },
        reason: if not_found {
            "not found"
        } else {
            "the container cannot be read"
        },
        detail: format!("{}: {e}", file.display()),
    }
}

/// The media type for a plaintext name, from its extension.
pub fn content_type(name: &str) -> &'static str {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn media_types_from_the_plaintext_name() {
        assert_eq!(content_type("movie.mp4"), "video/mp4");
        assert_eq!(content_type("notes.txt"), "text/plain");
        assert_eq!(content_type("a/b/page.html"), "text/html");
        assert_eq!(content_type("no-extension"), "application/octet-stream");
    }
}
