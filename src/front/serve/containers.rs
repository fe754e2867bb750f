//! Containers opened by the server, shared by every request for them: the vault's
//! [`Registry`], which opens each container once (keyed by path and version, failures kept as
//! the vault layer says), plus what the server says about each one.

use super::conditional::Validators;
use crate::container::cache::{BlockCache, CachedContainer};
use crate::vault::{naming, Failure, Opened, Registry, Vault};
use crate::{Error, Key};
use hyper::StatusCode;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// An opened container and what the server says about it.
pub struct ServedFile {
    pub cached: CachedContainer,
    /// The container file as shown in log lines.
    pub path: PathBuf,
    pub content_type: &'static str,
    pub validators: Validators,
    pub block_size: u64,
    /// Where the last response for this file ended: a request that starts there is a
    /// sequential reader (a player fetching chunk after chunk) and gets read-ahead.
    pub last_end: AtomicU64,
}

impl ServedFile {
    fn new(opened: Opened) -> Self {
        let container = opened.cached.container();
        let header = &container.info().header;
        // Last-Modified: the packed file's own mtime from a v2 file record (the plaintext's
        // time, kept by rekey and reencrypt), else the container file's. A record that fails to
        // open is left to the reads, which check everything.
        let modified = match container.file_meta() {
            Ok(Some(meta)) => meta.mtime(),
            _ => opened.entry.modified,
        };
        let validators = Validators::new(hex::encode(header.container_id), modified);
        let block_size = u64::from(header.block_size);
        let file_name = opened.path.file_name().unwrap_or_default();
        let name = naming::plaintext_name(file_name).unwrap_or(file_name);
        ServedFile {
            content_type: content_type(&name.to_string_lossy()),
            validators,
            block_size,
            path: opened.display.into(),
            cached: opened.cached,
            last_end: AtomicU64::new(u64::MAX),
        }
    }
}

/// Why a container cannot be served: the status, a short reason for the client (no server
/// paths), and the full error for the log.
#[derive(Clone, Debug)]
pub struct OpenFailure {
    pub status: StatusCode,
    pub reason: &'static str,
    pub detail: String,
}

/// The opened containers of one server.
pub struct Containers {
    registry: Registry<ServedFile>,
}

impl Containers {
    pub fn new(vault: &Vault, key: Key, cache: Arc<BlockCache>) -> Self {
        Containers {
            registry: vault.registry(key, cache, ServedFile::new),
        }
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        self.registry.cache()
    }

    /// The opened container at `file` (its path in the vault). Blocking: may open it and derive
    /// its key. Concurrent requests for one file wait for a single open.
    pub fn get(&self, file: &Path) -> Result<Arc<ServedFile>, OpenFailure> {
        self.registry.get(file).map_err(failure)
    }

    /// Opens a container now and keeps it, returning the library's error (for a startup check:
    /// a wrong key is reported before the server listens).
    pub fn preload(&self, file: &Path) -> crate::Result<()> {
        self.registry.preload(file).map(drop)
    }

    /// Opens every container of the vault now and keeps them (see
    /// [`Registry::check_key`](crate::vault::Registry::check_key)).
    pub fn check_key(&self) -> crate::Result<crate::vault::KeyCheck> {
        self.registry.check_key()
    }

    /// How many containers are open now.
    pub fn open_count(&self) -> usize {
        self.registry.open_count()
    }
}

/// A container that did not open: a wrong key is 403, one that is not there 404, anything else
/// 500.
fn failure(f: Failure) -> OpenFailure {
    let (status, reason) = match f.error.root() {
        e if e.is_wrong_key() => (
            StatusCode::FORBIDDEN,
            "the server's key does not open this container",
        ),
        Error::Io { source: cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, "not found")
        }
        Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "the container cannot be read"),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the container is damaged or incomplete",
        ),
    };
    OpenFailure {
        status,
        reason,
        detail: f.error.to_string(),
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
