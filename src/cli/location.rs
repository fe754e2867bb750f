//! Where a path on the command line points: the local disk, an S3-compatible object store
//! (`s3://BUCKET/KEY`), or a web server (`http(s)://HOST/PATH`, read-only).

use qeltrix::storage::remote::{self, RemoteOptions, RemoteStorage};
use qeltrix::storage::{EntryKind, LocalStorage, Storage};
use qeltrix::vault::Vault;
use qeltrix::Error;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

static OPTIONS: OnceLock<RemoteOptions> = OnceLock::new();

/// Sets how remote locations are reached (`--s3-endpoint`), once, before any is used.
pub fn set_options(options: RemoteOptions) {
    let _ = OPTIONS.set(options);
}

fn options() -> &'static RemoteOptions {
    OPTIONS.get_or_init(RemoteOptions::default)
}

/// True for `s3://…`, `http://…` and `https://…`.
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(remote::is_remote)
}

fn parse(path: &Path) -> Result<(RemoteStorage, PathBuf), Error> {
    let text = path.to_str().unwrap_or_default();
    RemoteStorage::parse(text, options()).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidInput => Error::InvalidArgument(e.to_string()),
        _ => Error::io("opening", e),
    })
}

/// The storage holding the object `path`, and its path there.
pub fn object(path: &Path) -> Result<(Arc<dyn Storage>, PathBuf), Error> {
    if is_remote(path) {
        let (storage, key) = parse(path)?;
        return Ok((Arc::new(storage), key));
    }
    Ok((Arc::new(LocalStorage::anywhere()), path.to_path_buf()))
}

/// The remote folder `path` as a vault (a prefix, on an object store), and how it is shown. A
/// web server's container is a vault of that one container.
pub fn vault(path: &Path) -> Result<(Vault, PathBuf), Error> {
    let (storage, key) = parse(path)?;
    let shown = PathBuf::from(storage.display(&key));
    let folder = if storage.is_web() {
        Path::new("")
    } else {
        key.as_path()
    };
    let folder = storage
        .at(folder)
        .map_err(|e| Error::io("opening", e).in_file(&shown))?;
    Ok((Vault::new(Arc::new(folder)), shown))
}

/// The remote container `path` as a file in the vault of its folder.
pub fn container_in_vault(path: &Path) -> Result<(Vault, PathBuf), Error> {
    let (storage, key) = parse(path)?;
    let (folder, name) = match (key.parent(), key.file_name()) {
        (Some(folder), Some(name)) => (folder.to_path_buf(), PathBuf::from(name)),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{}: not a container",
                path.display()
            )))
        }
    };
    let shown = storage.display(&key);
    let folder = storage
        .at(&folder)
        .map_err(|e| Error::io("opening", e).in_file(&shown))?;
    Ok((Vault::new(Arc::new(folder)), name))
}

/// What a remote `path` is: `Some(true)` a folder (a prefix with objects under it),
/// `Some(false)` an object, `None` nothing yet. An unreachable endpoint is an error.
pub fn remote_kind(path: &Path) -> Result<Option<bool>, Error> {
    let (storage, key) = parse(path)?;
    match storage.stat(&key) {
        Ok(entry) => Ok(Some(entry.kind == EntryKind::Folder)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("checking", e).in_file(storage.display(&key))),
    }
}

/// True when `path` names an existing object or file.
pub fn exists(path: &Path) -> Result<bool, Error> {
    if is_remote(path) {
        return Ok(remote_kind(path)? == Some(false));
    }
    Ok(path.exists())
}

/// True when `path` is a folder: a local folder, or a remote location ending in `/` or holding
/// objects under it.
pub fn is_folder(path: &Path) -> Result<bool, Error> {
    if is_remote(path) {
        let text = path.to_str().unwrap_or_default();
        return Ok(text.ends_with('/') || remote_kind(path)? == Some(true));
    }
    Ok(path.is_dir())
}

/// Workers reading a container at `path` whole (unpack, verify) when `--workers` is 0: the
/// cores for a local file; for a remote one, enough for requests in flight to hide the network
/// round trip (each worker has one block's GET out at a time).
pub fn workers_for(path: &Path, workers: usize) -> usize {
    match workers {
        0 if is_remote(path) => REMOTE_WORKERS,
        n => n,
    }
}

/// See [`workers_for`].
const REMOTE_WORKERS: usize = 8;
