//! Remote storage (feature `remote`): containers and vaults on an S3-compatible object store
//! (`s3://BUCKET/PREFIX`: AWS S3, Garage, MinIO, Ceph RGW) or, read-only, on any web server
//! (`http(s)://HOST/PATH/NAME.qltx`), behind the same [`Storage`] seam as the local disk.
//!
//! - **Reading** is ranged GETs. Opening an object is one suffix GET of its last
//!   [`TAIL`] bytes (trailer and footer: the whole index) and, at the same time, one GET of its
//!   first [`HEAD`] bytes (header and key slots); both stay with the open object. Other reads
//!   are GETs of exactly the bytes asked for, split into [`PART`]-sized GETs sent in parallel.
//!   Every GET carries `If-Match` with the entity tag seen at open, and the tag of each answer is
//!   compared too: an object replaced while open is an error, never a mix of two objects' bytes.
//! - **Listings** (and what they say of each object) are reused for [`LISTING_TTL`]; an object
//!   found changed, or written through this storage, drops them at once.
//! - **Writing** is a multipart upload of [`UPLOAD_PART`] parts, [`UPLOADS_IN_FLIGHT`] at a time
//!   (bounded memory, any size, from a pipe too). The object appears only when the upload is
//!   completed, at [`ObjectWriter::commit`]; dropped before (an error), or ended by a signal, the
//!   upload is aborted and its parts deleted. A small object is one PUT, at commit.
//! - **Credentials** come from the environment and profile files ([`RemoteOptions`]) and are
//!   never shown: errors and `Debug` name the object and the endpoint only.

mod config;
mod runtime;

pub use config::RemoteOptions;

use super::{
    Entry, EntryKind, Object, ObjectWriter, ReadAt, Rename, Storage, Version, VersionInner, WriteOptions,
};
use crate::{Error, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
};
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Bytes fetched from the end of an object when it is opened: the trailer and the footer of a
/// container of up to about 1,400 blocks (1.4 GiB at 1 MiB blocks) in one request; a larger
/// footer costs one more.
pub const TAIL: u64 = 256 << 10;
/// Bytes fetched from the start of an object when it is opened, beside the tail: the header and
/// its key-slot areas.
pub const HEAD: u64 = crate::core::format::HEADER_LEN as u64;
/// A large read is split into GETs of this size, sent in parallel.
pub const PART: u64 = 2 << 20;
/// Most GETs of one read in flight at once.
const PARTS_IN_FLIGHT: usize = 8;
/// Size of each part of a multipart upload (S3 wants at least 5 MiB but for the last).
pub const UPLOAD_PART: usize = 8 << 20;
/// Parts of one upload sent at once; a writer that gets ahead waits (memory stays within
/// `(UPLOADS_IN_FLIGHT + 1) × UPLOAD_PART` per upload).
pub const UPLOADS_IN_FLIGHT: usize = 4;
/// How long a listing is reused by default.
pub const LISTING_TTL: Duration = Duration::from_secs(10);

/// True for a location this module reads: `s3://…`, `http://…` or `https://…`.
pub fn is_remote(location: &str) -> bool {
    ["s3://", "http://", "https://"]
        .iter()
        .any(|scheme| location.len() > scheme.len() && location[..scheme.len()].eq_ignore_ascii_case(scheme))
}

/// What kind of service the storage talks to.
#[derive(Debug)]
enum Service {
    /// An S3 bucket: list, read, write.
    S3,
    /// A web server: one object under the base URL, read-only (web servers have no standard
    /// listing).
    Http { name: String },
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    /// `s3://BUCKET` or `https://HOST/FOLDER` (no trailing slash): how locations are shown.
    base: String,
    /// Where requests go (`http://127.0.0.1:3900`, `https://HOST`): named in errors.
    endpoint: String,
    service: Service,
    ttl: Duration,
    meta: Mutex<MetaCache>,
}

/// Listings and object metadata, reused for the TTL.
#[derive(Default)]
struct MetaCache {
    folders: HashMap<String, (Instant, Arc<Vec<Entry>>)>,
    objects: HashMap<String, (Instant, Entry)>,
}

/// An object store as a [`Storage`]: paths are keys under a prefix (`/`-separated).
#[derive(Clone)]
pub struct RemoteStorage {
    shared: Arc<Shared>,
    /// Key prefix of this storage's top folder: `""` or `a/b` (no slashes at the ends).
    prefix: String,
}

impl std::fmt::Debug for RemoteStorage {
    // Never the client: its configuration holds the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStorage")
            .field("location", &self.display(Path::new("")))
            .field("endpoint", &self.shared.endpoint)
            .finish()
    }
}

impl RemoteStorage {
    /// Parses a remote location: the storage holding it (an S3 bucket's top, or a web server's
    /// folder) and the path of the location in it (`""` for a bucket's top).
    pub fn parse(location: &str, options: &RemoteOptions) -> io::Result<(RemoteStorage, PathBuf)> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{location}: {why}"));
        let (scheme, rest) = location.split_once("://").ok_or_else(|| invalid("not a URL"))?;
        let ttl = options.listing_ttl.unwrap_or(LISTING_TTL);
        if scheme.eq_ignore_ascii_case("s3") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket: expected s3://BUCKET/PATH"));
            }
            let (store, endpoint) = config::s3(bucket, options).map_err(|e| invalid(&e.to_string()))?;
            let storage = RemoteStorage::new(store, format!("s3://{bucket}"), endpoint, Service::S3, ttl);
            let path = PathBuf::from(key.trim_matches('/'));
            storage.key(&path)?;
            return Ok((storage, path));
        }
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(invalid("unknown scheme: expected s3://, http:// or https://"));
        }
        let without_query = location.split(['?', '#']).next().unwrap_or(location);
        let (folder, name) = without_query.rsplit_once('/').unwrap_or((without_query, ""));
        if name.is_empty() || folder.len() <= scheme.len() + 2 {
            return Err(invalid(
                "an http(s) location must name a container (…/NAME.qltx): web servers have no standard listing",
            ));
        }
        let host_end = rest.find('/').map_or(rest.len(), |i| i);
        let endpoint = format!("{scheme}://{}", &rest[..host_end]);
        let store = config::http(&format!("{folder}/")).map_err(|e| invalid(&e.to_string()))?;
        let service = Service::Http {
            name: name.to_string(),
        };
        let storage = RemoteStorage::new(store, folder.to_string(), endpoint, service, ttl);
        Ok((storage, PathBuf::from(name)))
    }

    /// A storage over any [`ObjectStore`] (an in-memory one in tests), shown as `base`.
    pub fn from_store(store: Arc<dyn ObjectStore>, base: impl Into<String>) -> RemoteStorage {
        RemoteStorage::new(
            store,
            base.into(),
            "(in process)".into(),
            Service::S3,
            LISTING_TTL,
        )
    }

    fn new(
        store: Arc<dyn ObjectStore>,
        base: String,
        endpoint: String,
        service: Service,
        ttl: Duration,
    ) -> Self {
        RemoteStorage {
            shared: Arc::new(Shared {
                store,
                base,
                endpoint,
                service,
                ttl,
                meta: Mutex::new(MetaCache::default()),
            }),
            prefix: String::new(),
        }
    }

    /// The folder `path` of this storage as a storage of its own (a vault under a prefix),
    /// sharing the client and the listings.
    pub fn at(&self, path: &Path) -> io::Result<RemoteStorage> {
        if matches!(self.shared.service, Service::Http { .. }) && !path.as_os_str().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a web server location has no folders",
            ));
        }
        Ok(RemoteStorage {
            shared: Arc::clone(&self.shared),
            prefix: self.key(path)?,
        })
    }

    /// True for a web server (one read-only container), false for an object store.
    pub fn is_web(&self) -> bool {
        matches!(self.shared.service, Service::Http { .. })
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// The object key of `path`: the prefix and the path's parts, `/`-separated. Only plain
    /// names: no `..`, no root, valid UTF-8 and no control characters.
    fn key(&self, path: &Path) -> io::Result<String> {
        let mut key = self.prefix.clone();
        for c in path.components() {
            let part = match c {
                Component::Normal(p) => p.to_str().filter(|p| !p.chars().any(char::is_control)),
                Component::CurDir => continue,
                _ => None,
            };
            let Some(part) = part else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not a valid object name", path.display()),
                ));
            };
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(part);
        }
        Ok(key)
    }

    fn object_key(&self, path: &Path) -> io::Result<Key> {
        let key = self.key(path)?;
        Key::parse(&key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{key}: {e}")))
    }

    fn shown(&self, key: &str) -> String {
        match key {
            "" => self.shared.base.clone(),
            k => format!("{}/{k}", self.shared.base),
        }
    }

    fn cached_folder(&self, key: &str) -> Option<Arc<Vec<Entry>>> {
        let meta = self.shared.meta.lock().unwrap_or_else(|p| p.into_inner());
        meta.folders
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.shared.ttl)
            .map(|(_, entries)| Arc::clone(entries))
    }

    fn list_folder(&self, key: &str) -> io::Result<Arc<Vec<Entry>>> {
        if let Some(entries) = self.cached_folder(key) {
            return Ok(entries);
        }
        let entries = match &self.shared.service {
            Service::Http { name } if key.is_empty() => vec![self.head(name)?],
            Service::Http { .. } => return Err(io::ErrorKind::NotFound.into()),
            Service::S3 => {
                let prefix = Key::parse(key)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                let store = Arc::clone(&self.shared.store);
                trace("LIST", &self.shown(key));
                let listed = runtime::run(async move {
                    let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
                    store.list_with_delimiter(prefix.as_ref()).await
                })?
                .map_err(|e| self.error("LIST", key, e))?;
                let mut entries = Vec::with_capacity(listed.objects.len() + listed.common_prefixes.len());
                for dir in &listed.common_prefixes {
                    if let Some(name) = dir.filename() {
                        entries.push(folder_entry(name.into()));
                    }
                }
                for object in &listed.objects {
                    if let Some(name) = object.location.filename() {
                        entries.push(object_entry(name.into(), object));
                    }
                }
                entries
            }
        };
        let entries = Arc::new(entries);
        let mut meta = self.shared.meta.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries.iter().filter(|e| e.kind == EntryKind::Object) {
            let name = e.name.to_string_lossy();
            let object = if key.is_empty() {
                name.into_owned()
            } else {
                format!("{key}/{name}")
            };
            meta.objects.insert(object, (Instant::now(), e.clone()));
        }
        meta.folders
            .insert(key.to_string(), (Instant::now(), Arc::clone(&entries)));
        Ok(entries)
    }

    /// The object `key`, from the cache or a HEAD request.
    fn head(&self, key: &str) -> io::Result<Entry> {
        {
            let meta = self.shared.meta.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, entry)) = meta.objects.get(key) {
                if at.elapsed() < self.shared.ttl {
                    return Ok(entry.clone());
                }
            }
        }
        let location =
            Key::parse(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let store = Arc::clone(&self.shared.store);
        trace("HEAD", &self.shown(key));
        let meta = runtime::run(async move {
            store
                .get_opts(
                    &location,
                    GetOptions {
                        head: true,
                        ..GetOptions::default()
                    },
                )
                .await
                .map(|r| r.meta)
        })?
        .map_err(|e| self.error("HEAD", key, e))?;
        let name = key.rsplit('/').next().unwrap_or(key);
        let entry = object_entry(name.into(), &meta);
        self.shared
            .meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .objects
            .insert(key.to_string(), (Instant::now(), entry.clone()));
        Ok(entry)
    }

    /// The object `key` if there is one, else every object under the folder `key`: the keys a
    /// rename moves.
    fn under(&self, key: &str) -> io::Result<Vec<Key>> {
        let location =
            Key::parse(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        match self.head(key) {
            Ok(_) => return Ok(vec![location]),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let store = Arc::clone(&self.shared.store);
        trace("LIST (all under)", &self.shown(key));
        let listed = runtime::run(async move {
            let mut keys = Vec::new();
            let mut stream = store.list(Some(&location));
            while let Some(meta) = stream.next().await {
                keys.push(meta?.location);
            }
            Ok::<_, object_store::Error>(keys)
        })?
        .map_err(|e| self.error("LIST", key, e))?;
        Ok(listed)
    }

    /// Refuses a change to a web server location, which is read-only.
    fn writable(&self, shown: &str) -> io::Result<()> {
        match self.shared.service {
            Service::Http { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{shown}: a web server location is read-only"),
            )),
            Service::S3 => Ok(()),
        }
    }

    fn error(&self, what: &str, key: &str, e: object_store::Error) -> io::Error {
        request_error(&self.shared, what, &self.shown(key), e)
    }
}

/// Forgets what is cached about `key` and everything under it, and the folder holding it.
fn forget_under(shared: &Shared, key: &str) {
    let mut meta = shared.meta.lock().unwrap_or_else(|p| p.into_inner());
    let inside = format!("{key}/");
    meta.objects.retain(|k, _| k != key && !k.starts_with(&inside));
    meta.folders.retain(|k, _| k != key && !k.starts_with(&inside));
    let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
    meta.folders.remove(folder);
}

/// A debug log line for each request (`-v`): what was asked of which object.
fn trace(what: &str, shown: &str) {
    tracing::debug!(target: "qeltrix::remote", "{what} {shown}");
}

/// Forgets what is cached about `key` and its folder (it was written, or found changed).
fn forget(shared: &Shared, key: &str) {
    let mut meta = shared.meta.lock().unwrap_or_else(|p| p.into_inner());
    meta.objects.remove(key);
    let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
    meta.folders.remove(folder);
}

/// An io::Error for a failed request, naming the request, the object and the endpoint (the
/// client's own text names the URL and the cause; it never holds a credential).
fn request_error(shared: &Shared, what: &str, shown: &str, e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            io::ErrorKind::PermissionDenied
        }
        _ => io::ErrorKind::Other,
    };
    let endpoint = &shared.endpoint;
    match kind {
        io::ErrorKind::NotFound => io::Error::new(kind, format!("no such object on {endpoint}")),
        io::ErrorKind::PermissionDenied => io::Error::new(
            kind,
            format!("{what} {shown}: access denied by {endpoint}: check the credentials and the permissions"),
        ),
        _ => io::Error::new(kind, format!("{what} {shown} on {endpoint}: {}", cause(&e))),
    }
}

/// The client error's text, on one line: a server's error page (HTML) is left out.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.trim_end_matches(|c: char| c == '<' || c == ':' || c.is_whitespace())
        .to_string()
}

/// A folder (a common prefix): object stores keep no times for it, so it is shown as of when it
/// was listed.
fn folder_entry(name: OsString) -> Entry {
    let now = SystemTime::now();
    Entry {
        name,
        kind: EntryKind::Folder,
        size: 0,
        modified: now,
        changed: now,
        version: Version(VersionInner::Remote {
            etag: None,
            size: 0,
            modified_ms: 0,
        }),
        link: false,
    }
}

fn object_entry(name: OsString, meta: &ObjectMeta) -> Entry {
    let modified = SystemTime::from(meta.last_modified);
    Entry {
        name,
        kind: EntryKind::Object,
        size: meta.size,
        modified,
        changed: modified,
        version: Version(VersionInner::Remote {
            etag: meta.e_tag.clone(),
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
        }),
        link: false,
    }
}

impl Storage for RemoteStorage {
    fn open(&self, path: &Path) -> io::Result<Object> {
        let key = self.object_key(path)?;
        let shown = self.shown(key.as_ref());
        Ok(Box::new(RemoteObject::open(
            Arc::clone(&self.shared),
            key,
            shown,
        )?))
    }

    fn stat(&self, path: &Path) -> io::Result<Entry> {
        let key = self.key(path)?;
        let name: OsString = path.file_name().map_or_else(OsString::new, Into::into);
        if path.components().all(|c| c == Component::CurDir) {
            // The storage's top (a bucket, or a prefix): listing it proves it is reachable.
            self.list_folder(&key)?;
            return Ok(folder_entry(name));
        }
        let (folder, own) = key.rsplit_once('/').unwrap_or(("", &key));
        if let Some(entries) = self.cached_folder(folder) {
            return entries.iter().find(|e| e.name == own).cloned().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: no such object", self.shown(&key)),
                )
            });
        }
        match self.head(&key) {
            Ok(entry) => Ok(entry),
            Err(e) if e.kind() == io::ErrorKind::NotFound && matches!(self.shared.service, Service::S3) => {
                // Not an object: a folder if anything is under it.
                if self.list_folder(&key)?.is_empty() {
                    Err(e)
                } else {
                    Ok(folder_entry(name))
                }
            }
            Err(e) => Err(e),
        }
    }

    fn stat_now(&self, path: &Path) -> io::Result<Entry> {
        forget(&self.shared, &self.key(path)?);
        self.stat(path)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<Entry>> {
        let key = self.key(path)?;
        Ok(self.list_folder(&key)?.as_ref().clone())
    }

    fn create(&self, path: &Path, options: WriteOptions) -> Result<Box<dyn ObjectWriter>> {
        let key = self.object_key(path).map_err(|e| Error::io("creating", e))?;
        let shown = self.shown(key.as_ref());
        if let Service::Http { .. } = self.shared.service {
            return Err(Error::io(
                "creating",
                io::Error::new(io::ErrorKind::Unsupported, "a web server location is read-only"),
            )
            .in_file(shown));
        }
        let writer = RemoteWriter::new(Arc::clone(&self.shared), key, shown, options.overwrite)?;
        Ok(Box::new(writer))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let key = self.object_key(path)?;
        let shown = self.shown(key.as_ref());
        self.writable(&shown)?;
        // S3 answers a DELETE of a missing key with success: ask first, so `NotFound` means it.
        self.stat_now(path)?;
        forget(&self.shared, key.as_ref());
        let store = Arc::clone(&self.shared.store);
        trace("DELETE", &shown);
        let deleting = key.clone();
        runtime::run(async move { store.delete(&deleting).await })?
            .map_err(|e| self.error("DELETE", key.as_ref(), e))
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<()> {
        let source = self.object_key(from)?;
        let target = self.object_key(to)?;
        let shown = self.shown(target.as_ref());
        self.writable(&shown)?;
        match self.stat_now(to) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{shown}: exists"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        forget(&self.shared, target.as_ref());
        let store = Arc::clone(&self.shared.store);
        trace("COPY", &shown);
        let (a, b) = (source.clone(), target.clone());
        runtime::run(async move { store.copy(&a, &b).await })?
            .map_err(|e| self.error("COPY", source.as_ref(), e))
    }

    /// An object is copied to `to` and then deleted; a folder (a prefix) has each object under
    /// it moved so. Object stores have no rename: this is not atomic, and a failure part-way
    /// leaves some objects at both names, never at neither. `Exchange` is refused
    /// (`Unsupported`). `NoReplace` is checked before the copies, not with them (no store here
    /// offers a conditional copy).
    fn rename(&self, from: &Path, to: &Path, how: Rename) -> io::Result<()> {
        let (source, target) = (self.key(from)?, self.key(to)?);
        let shown = self.shown(&target);
        self.writable(&shown)?;
        if how == Rename::Exchange {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{shown}: an object store cannot swap two names at once"),
            ));
        }
        if source.is_empty() || target.is_empty() || target.starts_with(&format!("{source}/")) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{shown}: cannot move a folder into itself or the storage's top"),
            ));
        }
        let moves = self.under(&source)?;
        if moves.is_empty() {
            // A folder with nothing under it exists only where it was made (a mount's tree).
            return match self.stat_now(from) {
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
        }
        if how == Rename::NoReplace && self.stat_now(to).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{shown}: exists"),
            ));
        }
        let store = &self.shared.store;
        let moves: Vec<(Key, Key)> = moves
            .into_iter()
            .map(|k| {
                let rest = &k.as_ref()[source.len()..];
                let new = format!("{target}{rest}");
                Key::parse(&new)
                    .map(|n| (k, n))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{new}: {e}")))
            })
            .collect::<io::Result<_>>()?;
        forget_under(&self.shared, &source);
        forget_under(&self.shared, &target);
        for (a, b) in &moves {
            trace("COPY", &self.shown(b.as_ref()));
            let (st, a2, b2) = (Arc::clone(store), a.clone(), b.clone());
            runtime::run(async move { st.copy(&a2, &b2).await })?
                .map_err(|e| self.error("COPY", a.as_ref(), e))?;
        }
        for (a, _) in &moves {
            trace("DELETE", &self.shown(a.as_ref()));
            let (st, a2) = (Arc::clone(store), a.clone());
            runtime::run(async move { st.delete(&a2).await })?
                .map_err(|e| self.error("DELETE", a.as_ref(), e))?;
        }
        forget_under(&self.shared, &source);
        forget_under(&self.shared, &target);
        Ok(())
    }

    /// Object stores have no folders: a folder appears with the first object under it. Made
    /// where no object has the name, it is accepted and nothing is stored.
    fn make_folder(&self, path: &Path) -> io::Result<()> {
        let key = self.key(path)?;
        let shown = self.shown(&key);
        self.writable(&shown)?;
        match self.stat_now(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{shown}: exists"),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A folder goes with its last object: removing one is refused only while objects are under
    /// it.
    fn remove_folder(&self, path: &Path) -> io::Result<()> {
        let key = self.key(path)?;
        let shown = self.shown(&key);
        self.writable(&shown)?;
        if key.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{shown}: the storage's top"),
            ));
        }
        forget_under(&self.shared, &key);
        if self.under(&key)?.is_empty() {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOTEMPTY))
        }
    }

    fn display(&self, path: &Path) -> String {
        match self.key(path) {
            Ok(key) => self.shown(&key),
            Err(_) => format!("{}/{}", self.shown(&self.prefix), path.display()),
        }
    }
}

/// An object open for reading: its size and entity tag from the open, and its first and last
/// bytes.
struct RemoteObject {
    shared: Arc<Shared>,
    key: Key,
    shown: String,
    size: u64,
    etag: Option<String>,
    head: Bytes,
    tail: Bytes,
}

impl RemoteObject {
    fn open(shared: Arc<Shared>, key: Key, shown: String) -> io::Result<RemoteObject> {
        let store = Arc::clone(&shared.store);
        let location = key.clone();
        trace(
            &format!("GET the last {TAIL} and the first {HEAD} bytes of"),
            &shown,
        );
        let (tail, head) = runtime::run(async move {
            let get = |range| {
                store.get_opts(
                    &location,
                    GetOptions {
                        range: Some(range),
                        ..GetOptions::default()
                    },
                )
            };
            let (tail, head) = tokio::join!(get(GetRange::Suffix(TAIL)), get(GetRange::Bounded(0..HEAD)));
            let bytes = |r: object_store::Result<object_store::GetResult>| async move {
                let r = r?;
                let meta = r.meta.clone();
                Ok::<_, object_store::Error>((meta, r.bytes().await?))
            };
            (bytes(tail).await, bytes(head).await)
        })?;
        let ((meta, tail), head) = match (tail, head) {
            (Ok(tail), Ok((head_meta, head))) => {
                if head_meta.e_tag != tail.0.e_tag || head_meta.size != tail.0.size {
                    return Err(changed(&shared, &shown, key.as_ref()));
                }
                (tail, head)
            }
            (Err(e), _) | (_, Err(e)) => {
                // An empty object has no byte to range over (416): it is opened by its HEAD.
                let entry = RemoteStorage {
                    shared: Arc::clone(&shared),
                    prefix: String::new(),
                }
                .head(key.as_ref());
                return match entry {
                    Ok(entry) if entry.size == 0 => Ok(RemoteObject {
                        etag: match &entry.version.0 {
                            VersionInner::Remote { etag, .. } => etag.clone(),
                            _ => None,
                        },
                        shared,
                        key,
                        shown,
                        size: 0,
                        head: Bytes::new(),
                        tail: Bytes::new(),
                    }),
                    Ok(_) | Err(_) => Err(request_error(&shared, "GET", &shown, e)),
                };
            }
        };
        let size = meta.size;
        if tail.len() as u64 != size.min(TAIL) || head.len() as u64 != size.min(HEAD) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{shown}: {} answered with fewer bytes than asked for",
                    shared.endpoint
                ),
            ));
        }
        Ok(RemoteObject {
            shared,
            key,
            shown,
            size,
            etag: meta.e_tag,
            head,
            tail,
        })
    }

    /// GETs `range` (within the object), `If-Match` the tag seen at open, and sends the body's
    /// pieces to `to` as they arrive, each with its offset in the object. Ends early if the
    /// reader is gone.
    async fn get(
        store: Arc<dyn ObjectStore>,
        key: Key,
        etag: Option<String>,
        range: std::ops::Range<u64>,
        to: tokio::sync::mpsc::Sender<Piece>,
    ) {
        let fail = |e| {
            let (to, range) = (to.clone(), range.clone());
            async move {
                let _ = to.send(Err((range, e))).await;
            }
        };
        let result = store
            .get_opts(
                &key,
                GetOptions {
                    range: Some(GetRange::Bounded(range.clone())),
                    if_match: etag.clone(),
                    ..GetOptions::default()
                },
            )
            .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return fail(GetError::Client(e)).await,
        };
        if etag.is_some() && result.meta.e_tag != etag {
            return fail(GetError::Changed).await;
        }
        let mut at = range.start;
        let mut body = result.into_stream();
        while let Some(piece) = body.next().await {
            match piece {
                Ok(bytes) if at + bytes.len() as u64 <= range.end => {
                    let len = bytes.len() as u64;
                    if to.send(Ok((at, bytes))).await.is_err() {
                        return;
                    }
                    at += len;
                }
                Ok(_) => return fail(GetError::Short).await,
                Err(e) => return fail(GetError::Client(e)).await,
            }
        }
        if at != range.end {
            fail(GetError::Short).await;
        }
    }
}

/// A piece of a GET's body and its offset in the object, or why a part failed.
type Piece = std::result::Result<(u64, Bytes), (std::ops::Range<u64>, GetError)>;

/// Pieces waiting for the reading thread, across the parts of one read: with the parts in
/// flight, all the memory a read holds beyond its own buffer.
const PIECES_QUEUED: usize = 64;

enum GetError {
    Client(object_store::Error),
    Changed,
    Short,
}

fn changed(shared: &Shared, shown: &str, key: &str) -> io::Error {
    forget(shared, key);
    io::Error::other(format!(
        "{shown} changed on {} while it was open (its entity tag is not the one it was opened with)",
        shared.endpoint
    ))
}

impl ReadAt for RemoteObject {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        if end <= self.head.len() as u64 {
            buf.copy_from_slice(&self.head[offset as usize..end as usize]);
            return Ok(());
        }
        let tail_start = self.size - self.tail.len() as u64;
        if offset >= tail_start {
            let at = (offset - tail_start) as usize;
            buf.copy_from_slice(&self.tail[at..at + buf.len()]);
            return Ok(());
        }
        if buf.is_empty() {
            return Ok(());
        }
        let parts: Vec<std::ops::Range<u64>> = (offset..end)
            .step_by(PART as usize)
            .map(|start| start..(start + PART).min(end))
            .collect();
        let (store, key, etag) = (
            Arc::clone(&self.shared.store),
            self.key.clone(),
            self.etag.clone(),
        );
        tracing::debug!(
            target: "qeltrix::remote",
            "GET bytes {offset}-{} of {} ({} request{})",
            end - 1,
            self.shown,
            parts.len(),
            if parts.len() == 1 { "" } else { "s in parallel" }
        );
        // The parts' bodies stream into `buf` as they arrive: no part is held whole, so a read
        // needs its own buffer and a few pieces, not twice its size.
        let (to, mut pieces) = tokio::sync::mpsc::channel::<Piece>(PIECES_QUEUED);
        let flights = Arc::new(tokio::sync::Semaphore::new(PARTS_IN_FLIGHT));
        let mut tasks = Vec::with_capacity(parts.len());
        for range in parts {
            let (store, key, etag, to) = (Arc::clone(&store), key.clone(), etag.clone(), to.clone());
            let flights = Arc::clone(&flights);
            tasks.push(runtime::spawn(async move {
                let Ok(_permit) = flights.acquire_owned().await else {
                    return;
                };
                RemoteObject::get(store, key, etag, range, to).await;
            })?);
        }
        drop(to);
        let abort_all = |tasks: &[tokio::task::JoinHandle<()>]| tasks.iter().for_each(|t| t.abort());
        let mut received = 0usize;
        while received < buf.len() {
            let piece = match pieces.blocking_recv() {
                Some(piece) => piece,
                None => {
                    abort_all(&tasks);
                    return Err(io::Error::other(format!(
                        "GET of {} on {}: a request ended unexpectedly",
                        self.shown, self.shared.endpoint
                    )));
                }
            };
            let (at, bytes) = match piece {
                Ok(piece) => piece,
                Err((range, e)) => {
                    abort_all(&tasks);
                    let what = format!("GET bytes {}-{} of", range.start, range.end - 1);
                    return Err(match e {
                        GetError::Changed | GetError::Client(object_store::Error::Precondition { .. }) => {
                            changed(&self.shared, &self.shown, self.key.as_ref())
                        }
                        GetError::Client(e) => request_error(&self.shared, &what, &self.shown, e),
                        GetError::Short => io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "{what} {}: {} answered with fewer or more bytes than asked for",
                                self.shown, self.shared.endpoint
                            ),
                        ),
                    });
                }
            };
            let start = (at - offset) as usize;
            buf[start..start + bytes.len()].copy_from_slice(&bytes);
            received += bytes.len();
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

type Upload = Arc<Mutex<Option<Box<dyn MultipartUpload>>>>;

/// An object being uploaded: buffered into parts, sent as a multipart upload once it outgrows
/// one part, completed at commit. Dropped uncommitted, or on a terminating signal, the upload
/// is aborted.
struct RemoteWriter {
    shared: Arc<Shared>,
    key: Key,
    shown: String,
    overwrite: bool,
    buffer: Vec<u8>,
    upload: Option<Upload>,
    in_flight: VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    /// Aborts the upload if a signal ends the process.
    _on_signal: Option<super::atomic::SignalCleanup>,
}

impl RemoteWriter {
    fn new(shared: Arc<Shared>, key: Key, shown: String, overwrite: bool) -> Result<RemoteWriter> {
        let writer = RemoteWriter {
            shared,
            key,
            shown,
            overwrite,
            buffer: Vec::new(),
            upload: None,
            in_flight: VecDeque::new(),
            _on_signal: None,
        };
        writer.refuse_existing()?;
        Ok(writer)
    }

    /// Without `overwrite`, an existing object is an error (checked at create and at commit:
    /// S3 has no "create only" for multipart uploads, so a writer racing another between the
    /// two can still replace it; see docs/REMOTE.md).
    fn refuse_existing(&self) -> Result<()> {
        if self.overwrite {
            return Ok(());
        }
        let storage = RemoteStorage {
            shared: Arc::clone(&self.shared),
            prefix: String::new(),
        };
        forget(&self.shared, self.key.as_ref());
        match storage.head(self.key.as_ref()) {
            Ok(_) => Err(Error::Exists {
                path: PathBuf::from(&self.shown),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("checking", e)),
        }
    }

    fn io_error(&self, what: &str, e: object_store::Error) -> io::Error {
        request_error(&self.shared, what, &self.shown, e)
    }

    /// Sends the buffer as the next part, starting the upload if needed; waits while too many
    /// parts are in flight.
    fn send_part(&mut self) -> io::Result<()> {
        let upload = match &self.upload {
            Some(u) => Arc::clone(u),
            None => {
                let (store, key) = (Arc::clone(&self.shared.store), self.key.clone());
                trace("starting a multipart upload of", &self.shown);
                let started = runtime::run(async move { store.put_multipart(&key).await })?
                    .map_err(|e| self.io_error("starting the upload of", e))?;
                let upload: Upload = Arc::new(Mutex::new(Some(started)));
                let on_signal = Arc::clone(&upload);
                self._on_signal = Some(super::atomic::on_signal(move || abort(&on_signal)));
                self.upload = Some(Arc::clone(&upload));
                upload
            }
        };
        while self.in_flight.len() >= UPLOADS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let part = PutPayload::from(std::mem::take(&mut self.buffer));
        let future = {
            let mut guard = upload.lock().unwrap_or_else(|p| p.into_inner());
            let Some(up) = guard.as_mut() else {
                return Err(io::Error::other("the upload was aborted"));
            };
            up.put_part(part)
        };
        self.in_flight.push_back(runtime::spawn(future)?);
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(oldest) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match runtime::run(oldest)? {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error("uploading a part of", e)),
            Err(_) => Err(io::Error::other(format!(
                "uploading a part of {}: the task failed",
                self.shown
            ))),
        }
    }
}

/// Aborts an upload (deleting its parts), once.
fn abort(upload: &Upload) {
    let taken = upload.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(mut up) = taken {
        let _ = runtime::run(async move { up.abort().await });
    }
}

impl Write for RemoteWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(UPLOAD_PART);
        }
        let n = buf.len().min(UPLOAD_PART - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == UPLOAD_PART {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for RemoteWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let in_file = |e: Error, shown: &str| e.in_file(shown);
        let shown = self.shown.clone();
        let committed = (|| -> Result<()> {
            match self.upload.clone() {
                None => {
                    self.refuse_existing()?;
                    let (store, key) = (Arc::clone(&self.shared.store), self.key.clone());
                    let payload = PutPayload::from(std::mem::take(&mut self.buffer));
                    trace("PUT", &self.shown);
                    runtime::run(async move { store.put(&key, payload).await })
                        .map_err(|e| Error::io("uploading", e))?
                        .map_err(|e| Error::io("uploading", self.io_error("PUT", e)))?;
                }
                Some(upload) => {
                    if !self.buffer.is_empty() {
                        self.send_part().map_err(|e| Error::io("uploading", e))?;
                    }
                    while !self.in_flight.is_empty() {
                        self.wait_oldest().map_err(|e| Error::io("uploading", e))?;
                    }
                    self.refuse_existing()?;
                    // Held until the upload is completed (or failed and aborted): a signal's
                    // cleanup waits for it rather than exit with the completion half sent.
                    let mut held = upload.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(mut up) = held.take() else {
                        return Err(Error::io("uploading", io::Error::other("the upload was aborted")));
                    };
                    trace("completing the multipart upload of", &self.shown);
                    let done = runtime::run(async move {
                        let done = up.complete().await;
                        if done.is_err() {
                            let _ = up.abort().await;
                        }
                        done
                    })
                    .map_err(|e| Error::io("completing the upload", e))?;
                    drop(held);
                    done.map_err(|e| {
                        Error::io(
                            "completing the upload",
                            self.io_error("completing the upload of", e),
                        )
                    })?;
                }
            }
            Ok(())
        })();
        forget(&self.shared, self.key.as_ref());
        committed.map_err(|e| in_file(e, &shown))
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        for part in self.in_flight.drain(..) {
            part.abort();
        }
        if let Some(upload) = &self.upload {
            abort(upload);
        }
    }
}

#[cfg(test)]
mod tests;
