//! The read-write side of the mount (`qeltrix mount --read-write`): creating, writing,
//! truncating, renaming and removing files and folders, each change made in the vault through
//! the storage seam and in the inode table at once.
//!
//! - **One editor per file being written** ([`Live`], holding a [`Editor`]): every handle of
//!   the file that writes, and every read handle opened while it is being written, goes through
//!   it, so an app reads what it wrote. The editor commits a new version of the container when
//!   a handle is closed (`flush`, which `close(2)` waits for, so its errors reach the app) or
//!   synced (`fsync`: durable before it returns); the last close drops it.
//! - **Names.** A file `NAME` is the container `NAME.qltx`, a folder is a folder. Dot names are
//!   stored and shown; the reserved ones (`.qeltrix…`) are refused with `EPERM`, a name with a
//!   backslash with `EINVAL`, and a name whose container name would not fit the backing file
//!   system with `ENAMETOOLONG`.
//! - **Not stored:** hard links and symbolic links (`EPERM`), device files, FIFOs and sockets
//!   (`EPERM`), extended attributes (`ENOTSUP`), owners (a `chown` to anyone else is `EPERM`),
//!   a folder's mode and times (accepted, not kept: a vault folder is an ordinary folder).
//! - **One writer per vault.** A read-write mount holds an exclusive lock on
//!   `VAULT/.qeltrix/mount.lock`; a second one is refused. It does not watch the vault for
//!   changes made beside it (it is the vault's writer).

use super::fs::{MountState, TTL};
use super::lease::Lease;
use super::tree::{file_entry, new_dir_kind, FileEntry, NodeKind, ScanFile, Times, Tree};
use crate::container::cache::CachedContainer;
use crate::container::edit::{Committed, EditOptions, Editor, MemoryBudget, Source};
use crate::core::file_record::FileMeta;
use crate::storage::{Rename, Storage, Version, VersionInner};
use crate::vault::naming::{self, container_name};
use crate::{Error, Recipient};
use fuser::{
    Errno, FileHandle, FopenFlags, Generation, RenameFlags, ReplyAttr, ReplyCreate, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, TimeOrNow,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Where a read-write mount keeps its lock and scratch files, under the vault's own folder.
const LOCK_FILE: &str = ".qeltrix/mount.lock";
const SCRATCH_DIR: &str = ".qeltrix/tmp";

/// The longest container file name most file systems take.
const NAME_MAX: usize = 255;

/// Block size of the files a read-write mount writes: 64 KiB. An edit in place seals a 64 KiB
/// block per block it touches, and the footer (rewritten at each commit) holds 188 bytes per
/// block. Measured against gocryptfs (`docs/BENCHMARKS.md`): 16 KiB blocks gave 0.68x on 4 KiB
/// random overwrites but 1.00x on sequential writes; 64 KiB 0.41x and 1.43x; 1 MiB, stage one's,
/// 1.67x sequentially but a 1 MiB block sealed per 4 KiB write.
pub const DEFAULT_RW_BLOCK_SIZE: u32 = 64 << 10;

/// How a read-write mount writes.
#[derive(Clone, Debug)]
pub struct ReadWrite {
    /// What new files are sealed to (a vault's keyring key, the mount's recipients).
    pub recipients: Vec<Recipient>,
    /// Memory for edited pages, shared by every file being written.
    pub memory: usize,
    /// Block size of new files.
    pub block_size: u32,
}

impl Default for ReadWrite {
    fn default() -> Self {
        ReadWrite {
            recipients: Vec::new(),
            memory: 256 << 20,
            block_size: DEFAULT_RW_BLOCK_SIZE,
        }
    }
}

/// A file being written: its editor, and how many handles use it.
pub struct Live {
    editor: Mutex<Editor>,
    handles: AtomicU64,
    /// Unlinked while open: its edits are dropped, never committed.
    unlinked: AtomicBool,
    /// Length, mode and mtime as of the last change, for `stat`, which must not wait behind a
    /// long write or commit holding the editor.
    shown: Mutex<(u64, u32, SystemTime)>,
    /// Versions published (commits and compactions), counted under the editor's lock, so in
    /// the order they reached the vault.
    published: AtomicU64,
    /// The latest of them the tree shows, set under the tree's write lock: a refresh that
    /// lost the race to the tree against a later one is dropped, not shown over it.
    shown_version: AtomicU64,
}

impl Live {
    fn new(editor: Editor) -> Arc<Live> {
        let shown = Mutex::new(shown_of(&editor));
        Arc::new(Live {
            editor: Mutex::new(editor),
            handles: AtomicU64::new(0),
            unlinked: AtomicBool::new(false),
            shown,
            published: AtomicU64::new(0),
            shown_version: AtomicU64::new(0),
        })
    }

    fn editor(&self) -> std::sync::MutexGuard<'_, Editor> {
        self.editor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a change on the editor, then notes what the file shows now.
    fn update<T>(&self, change: impl FnOnce(&mut Editor) -> crate::Result<T>) -> crate::Result<T> {
        let mut e = self.editor();
        let out = change(&mut e);
        *lock(&self.shown) = shown_of(&e);
        out
    }

    /// Numbers a version just published; called under the editor's lock.
    fn publish(&self) -> u64 {
        self.published.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn shown_of(e: &Editor) -> (u64, u32, SystemTime) {
    (e.len(), e.meta().mode, e.meta().mtime())
}

/// The read-write state of a mount.
pub struct Writable {
    storage: Arc<dyn Storage>,
    /// The vault's local folder; `None` for an object store, where files are uploaded whole.
    root: Option<PathBuf>,
    edit: Arc<EditOptions>,
    /// Files being written, by inode.
    live: Mutex<HashMap<u64, Arc<Live>>>,
    /// Handles of files being written: file handle → inode.
    handles: Mutex<HashMap<u64, u64>>,
    /// Held for the life of the mount.
    _lock: VaultLock,
}

/// What keeps a second read-write mount out: held, never read.
#[allow(dead_code)]
enum VaultLock {
    /// A local vault: an exclusive lock on its lock file (released by the kernel when the
    /// process ends).
    File(File),
    /// An object store: a lease object the mount renews, and the local scratch folder of the
    /// files being uploaded (removed when the mount ends).
    Lease(Lease, tempfile::TempDir),
}

impl Writable {
    /// Takes the vault's write lock and prepares its scratch folder. Fails if another
    /// read-write mount holds the lock.
    pub fn new(
        storage: Arc<dyn Storage>,
        root: &Path,
        rw: &ReadWrite,
        pool: crate::pipeline::WorkerPool,
    ) -> crate::Result<Self> {
        if rw.recipients.is_empty() {
            return Err(Error::InvalidArgument(
                "a read-write mount needs a key to seal new files to".into(),
            ));
        }
        if !storage.is_local() {
            return Self::remote(storage, rw, pool);
        }
        let scratch = root.join(SCRATCH_DIR);
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Error::io("creating the scratch folder", e).in_file(&scratch))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening the mount lock", e).in_file(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::InvalidArgument(format!(
                    "{} is mounted read-write by another process (it holds {}): one writer per vault",
                    root.display(),
                    lock_path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io("locking the vault", e).in_file(&lock_path))
            }
        }
        // Scratch files left by a mount killed with SIGKILL where O_TMPFILE is missing: they hold
        // only ciphertext, and this mount is the vault's only writer now.
        if let Ok(entries) = std::fs::read_dir(&scratch) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let edit = edit_options(rw, pool, scratch, crate::container::edit::IN_PLACE_MIN);
        Ok(Writable {
            storage,
            root: Some(root.to_path_buf()),
            edit,
            live: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            _lock: VaultLock::File(lock),
        })
    }

    /// A read-write mount of an object store: each file is written into a local scratch file
    /// and uploaded whole when committed (no edits in place: an object cannot be appended to).
    fn remote(
        storage: Arc<dyn Storage>,
        rw: &ReadWrite,
        pool: crate::pipeline::WorkerPool,
    ) -> crate::Result<Self> {
        let lease = Lease::take(Arc::clone(&storage), Path::new(LOCK_FILE))?;
        let scratch = tempfile::Builder::new()
            .prefix("qeltrix-mount-")
            .tempdir()
            .map_err(|e| Error::io("creating the scratch folder", e).in_file(std::env::temp_dir()))?;
        let edit = edit_options(rw, pool, scratch.path().to_path_buf(), u64::MAX);
        Ok(Writable {
            storage,
            root: None,
            edit,
            live: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            _lock: VaultLock::Lease(lease, scratch),
        })
    }

    fn live_of(&self, ino: u64) -> Option<Arc<Live>> {
        lock(&self.live).get(&ino).cloned()
    }

    /// The editor of the file `ino`, if it is being written.
    pub fn live_at(&self, ino: u64) -> Option<Arc<Live>> {
        self.live_of(ino)
    }

    /// True when the file `ino` is being written.
    pub fn is_live(&self, ino: u64) -> bool {
        lock(&self.live).contains_key(&ino)
    }

    /// The file being written behind the handle `fh`, if it is one.
    pub fn handle(&self, fh: u64) -> Option<Arc<Live>> {
        let ino = *lock(&self.handles).get(&fh)?;
        self.live_of(ino)
    }

    /// The length, mode and mtime a file being written shows.
    pub fn shown(&self, ino: u64) -> Option<(u64, u32, SystemTime)> {
        let live = self.live_of(ino)?;
        let shown = *lock(&live.shown);
        Some(shown)
    }

    /// The local path of a vault path; `None` on an object store.
    fn local(&self, path: &Path) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(path))
    }

    /// Commits `editor` to the vault path `path`: a local container replaced (or appended to),
    /// or an object uploaded.
    fn commit(&self, editor: &mut Editor, path: &Path, durable: bool) -> crate::Result<Option<Committed>> {
        match self.local(path) {
            Some(local) => editor.commit(&local, durable),
            None => editor.commit_upload(&*self.storage, path),
        }
    }
}

/// The editors' options: blocks of `rw.block_size`, stored uncompressed (on small blocks,
/// `Auto`'s zstd sample of each block, a quarter of a 64 KiB block, costs about as much as the
/// seal), edited in place from `in_place_min` bytes.
fn edit_options(
    rw: &ReadWrite,
    pool: crate::pipeline::WorkerPool,
    scratch: PathBuf,
    in_place_min: u64,
) -> Arc<EditOptions> {
    let pack = crate::PackOptions {
        block_size: rw.block_size,
        compress: crate::CompressMode::Never,
        pool: Some(pool),
        ..crate::PackOptions::default()
    };
    Arc::new(EditOptions {
        pack,
        recipients: rw.recipients.clone(),
        scratch,
        budget: MemoryBudget::new(rw.memory),
        file_limit: (rw.memory / 4).max(crate::container::edit::PAGE),
        in_place_min,
        in_place_format: crate::format::FormatVersion::V4,
        slack_while_open: crate::container::edit::OPEN_SLACK,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers an empty reply with `result`.
fn answer(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// The errno an app should see for `e`.
fn errno(e: &Error) -> Errno {
    match e.root() {
        e if e.is_wrong_key() => Errno::EACCES,
        Error::Io { source, .. } => Errno::from_i32(source.raw_os_error().unwrap_or(match source.kind() {
            io::ErrorKind::NotFound => libc::ENOENT,
            io::ErrorKind::AlreadyExists => libc::EEXIST,
            io::ErrorKind::StorageFull => libc::ENOSPC,
            _ => libc::EIO,
        })),
        Error::InvalidArgument(_) => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Checks a name a file or folder is created or renamed to in the folder `parent`.
fn check_name(name: &OsStr, parent: u64, file: bool) -> Result<(), Errno> {
    let b = name.as_bytes();
    if naming::is_reserved(b, parent == Tree::ROOT) {
        return Err(Errno::EPERM);
    }
    if b.is_empty() || b.contains(&b'\\') || b.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    let stored = b.len() + if file { naming::CONTAINER_SUFFIX.len() } else { 0 };
    if stored > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

/// A version for a file not yet in the vault: equal to no listing's.
fn no_version() -> Version {
    Version(VersionInner::Local {
        dev: 0,
        ino: 0,
        size: 0,
        mtime_ns: 0,
        ctime_ns: 0,
    })
}

fn new_meta(name: &OsStr, mode: u32) -> FileMeta {
    let mut meta = FileMeta {
        name: name.as_bytes().to_vec(),
        mode: mode & 0o7777,
        mtime_sec: 0,
        mtime_nsec: 0,
    };
    crate::container::edit::set_time(&mut meta, SystemTime::now());
    meta
}

fn now_times() -> Times {
    let now = SystemTime::now();
    Times {
        atime: now,
        mtime: now,
        ctime: now,
    }
}

impl MountState {
    fn writable(&self) -> Result<&Writable, Errno> {
        self.rw.as_ref().ok_or(Errno::EROFS)
    }

    fn tree_mut(&self) -> std::sync::RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of a file inode.
    fn file_of(&self, ino: u64) -> Result<Arc<FileEntry>, Errno> {
        match self.tree().get(ino).map(|n| &n.kind) {
            Some(NodeKind::File(f)) => Ok(Arc::clone(f)),
            Some(NodeKind::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// The file being written at `ino`, made if there is none (an editor over the container's
    /// current version, opened with the mount's key), with one more use counted on it: the
    /// caller ends it with [`MountState::let_go`].
    fn live(&self, ino: u64) -> Result<Arc<Live>, Errno> {
        let w = self.writable()?;
        // A handle is counted under the map's lock, where the last release removes the editor:
        // a file is never attached to an editor that is leaving the map.
        let take = |map: &HashMap<u64, Arc<Live>>| {
            let live = map.get(&ino)?;
            live.handles.fetch_add(1, Ordering::Relaxed);
            Some(Arc::clone(live))
        };
        if let Some(live) = take(&lock(&w.live)) {
            return Ok(live);
        }
        let entry = self.file_of(ino)?;
        let container: Arc<CachedContainer> = self.container(&entry)?;
        let meta = match container.container().file_meta() {
            Ok(Some(m)) => m,
            Ok(None) => new_meta(entry_name(&entry).as_ref(), 0o644),
            Err(e) => return Err(errno(&e)),
        };
        let base: Arc<dyn Source> = container;
        let mut map = lock(&w.live);
        // Another thread may have made it meanwhile: that one wins.
        if let Some(live) = take(&map) {
            return Ok(live);
        }
        let live = Live::new(Editor::open(Arc::clone(&w.edit), base, meta));
        live.handles.fetch_add(1, Ordering::Relaxed);
        map.insert(ino, Arc::clone(&live));
        Ok(live)
    }

    /// Drops the editor of `ino` from the map if no handle uses it (after its last commit) and
    /// the tree shows every version it published: until then, `stat` reads the editor. (Two
    /// last uses may commit at once, a close and a setattr; the one whose version is still on
    /// its way to the tree drops the editor after showing it.)
    fn retire_live(&self, ino: u64, live: &Arc<Live>) {
        if let Some(w) = &self.rw {
            let mut map = lock(&w.live);
            if live.handles.load(Ordering::Relaxed) == 0
                && live.shown_version.load(Ordering::Relaxed) == live.published.load(Ordering::Relaxed)
                && map.get(&ino).is_some_and(|l| Arc::ptr_eq(l, live))
            {
                map.remove(&ino);
            }
        }
    }

    /// Commits the file being written at `ino` to its current path in the vault, and shows the
    /// new version in the tree (same inode).
    fn commit(&self, ino: u64, live: &Live, durable: bool) -> Result<(), Errno> {
        let w = self.writable()?;
        // The tree is read-locked for the commit: no rename or unlink moves the file while its
        // new version is published under the path it has now. (Lock order: tree, then editor.)
        let tree = self.tree();
        let path = match tree.get(ino).map(|n| &n.kind) {
            Some(NodeKind::File(entry)) => entry.path.clone(),
            // Gone from the tree (unlinked, or replaced by a rename): nothing to publish.
            _ => return Ok(()),
        };
        if live.unlinked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let committed = live
            .update(|e| Ok(w.commit(e, &path, durable)?.map(|c| (c, live.publish()))))
            .map_err(|e| {
                tracing::warn!(target: "qeltrix::mount", "{}: commit failed: {e}", w.storage.display(&path));
                errno(&e)
            })?;
        drop(tree);
        if let Some((c, version)) = committed {
            self.refresh_published(ino, live, version, (c.len, &c.meta));
        }
        Ok(())
    }

    /// Shows version `version` of the file being written (a commit's or a compaction's) in the
    /// tree, unless a later one is shown already: a setattr on a file whose last handle is
    /// closing commits too, and its refresh may reach the tree first. A rename since the commit
    /// (which took the tree after it, so it moved this version) is followed: the version is
    /// shown at the file's new path.
    fn refresh_published(&self, ino: u64, live: &Live, version: u64, shown: (u64, &FileMeta)) {
        let mut tree = self.tree_mut();
        if live.shown_version.fetch_max(version, Ordering::Relaxed) >= version {
            return;
        }
        let Some(NodeKind::File(entry)) = tree.get(ino).map(|n| &n.kind) else {
            return; // unlinked meanwhile
        };
        let path = entry.path.clone();
        self.refresh_in(&mut tree, ino, &path, Some(shown));
    }

    /// Shows the container at `path` as it is in the vault now under the inode `ino` (after a
    /// commit or a rename changed its version), under the caller's write lock of the tree (a
    /// rename: no reader may look the new name up before it shows the version the rename
    /// left). `shown`: its plaintext length and record, when known.
    fn refresh_in(&self, tree: &mut Tree, ino: u64, path: &Path, shown: Option<(u64, &FileMeta)>) {
        let Ok(Ok(stat)) = self.writable().map(|w| w.storage.stat(path)) else {
            return;
        };
        let Some(NodeKind::File(old)) = tree.get(ino).map(|n| &n.kind) else {
            return;
        };
        if old.path != path {
            return; // renamed meanwhile: the rename refreshes it
        }
        let (size, record) = match shown {
            Some((len, meta)) => (len, Some(Some((meta.mode, meta.mtime())))),
            None => (old.size, old.record.get().copied()),
        };
        let entry = file_entry(ScanFile {
            path: path.to_path_buf(),
            version: stat.version.clone(),
            size,
            times: Times {
                atime: stat.modified,
                mtime: stat.modified,
                ctime: stat.changed,
            },
        });
        if let Some(r) = record {
            let _ = entry.record.set(r);
        }
        tree.replace_file(ino, entry);
    }

    /// A file handle for a handle already counted on the file's editor.
    fn add_handle(&self, ino: u64) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = &self.rw {
            lock(&w.handles).insert(fh, ino);
        }
        fh
    }

    /// A file system entry's attributes, `ENOENT` if it is gone.
    fn attr_of(&self, ino: u64) -> Result<fuser::FileAttr, Errno> {
        self.attr(&self.tree(), ino).ok_or(Errno::ENOENT)
    }
}

fn entry_name(entry: &FileEntry) -> std::ffi::OsString {
    entry
        .path
        .file_name()
        .and_then(|n| naming::plaintext_name_in(n, true, false))
        .map(OsStr::to_os_string)
        .unwrap_or_default()
}

/// The requests of a read-write mount, called by [`super::fs::VaultFs`].
impl MountState {
    pub fn create(
        self: &Arc<Self>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            let w = self.writable()?;
            check_name(name, parent, true)?;
            let ino = {
                let mut tree = self.tree_mut();
                let dir = tree.dir_path(parent).ok_or(Errno::ENOTDIR)?.to_path_buf();
                if tree.lookup(parent, name).is_some() {
                    return Err(Errno::EEXIST);
                }
                let entry = file_entry(ScanFile {
                    path: dir.join(container_name(name)),
                    version: no_version(),
                    size: 0,
                    times: now_times(),
                });
                let ino = tree.insert(parent, name, NodeKind::File(Arc::new(entry)));
                tree.touch_dir(parent, SystemTime::now());
                ino
            };
            let live = Live::new(Editor::new_file(
                Arc::clone(&w.edit),
                new_meta(name, mode & !umask),
            ));
            live.handles.fetch_add(1, Ordering::Relaxed);
            lock(&w.live).insert(ino, live);
            let fh = self.add_handle(ino);
            let _ = flags;
            let attr = self.attr_of(ino)?;
            self.tree().remember(ino);
            Ok((attr, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    /// Opens a file for writing (or, while it is being written, for reading).
    pub fn open_live(self: &Arc<Self>, ino: u64, truncate: bool, reply: ReplyOpen) {
        let shared = Arc::clone(self);
        self.workers.spawn(move || {
            let result = shared.live(ino).and_then(|live| {
                let fh = shared.add_handle(ino);
                if truncate {
                    if let Err(e) = live.update(|e| e.set_len(0)) {
                        // The truncation's error is the one to report.
                        let _ = shared.drop_handle(ino, fh, &live);
                        return Err(errno(&e));
                    }
                }
                Ok(fh)
            });
            match result {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }

    pub fn write(self: &Arc<Self>, fh: u64, offset: u64, data: &[u8], reply: ReplyWrite) {
        let Some(live) = self.rw.as_ref().and_then(|w| w.handle(fh)) else {
            return reply.error(Errno::EBADF);
        };
        // A streamed new file takes the write here: a copy into the packer's block (sealing runs
        // on the packer's pool). Anything that may read or rewrite the file goes to the workers.
        if let Ok(mut editor) = live.editor.try_lock() {
            if editor.is_streaming() && offset == editor.len() {
                let result = editor.write_at(offset, data);
                *lock(&live.shown) = shown_of(&editor);
                return match result {
                    Ok(()) => reply.written(data.len() as u32),
                    Err(e) => reply.error(errno(&e)),
                };
            }
        }
        let data = data.to_vec();
        self.workers.spawn(move || {
            let result = live.update(|e| e.write_at(offset, &data));
            match result {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    pub fn read_live(self: &Arc<Self>, live: Arc<Live>, offset: u64, size: u32, reply: fuser::ReplyData) {
        self.workers.spawn(move || {
            let mut buf = vec![0u8; size as usize];
            let result = live.editor().read_at(offset, &mut buf);
            match result {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    /// `flush` (each `close(2)`) and `fsync`: the file's edits committed, durably for `fsync`.
    pub fn sync(self: &Arc<Self>, ino: u64, fh: u64, durable: bool, reply: ReplyEmpty) {
        let Some(live) = self.rw.as_ref().and_then(|w| w.handle(fh)) else {
            return reply.ok(); // a read-only handle of a file not being written
        };
        let shared = Arc::clone(self);
        self.workers
            .spawn(move || answer(reply, shared.commit(ino, &live, durable)));
    }

    /// The last close of a handle: commits what is left and, with no handle left, drops the
    /// editor.
    pub fn release_live(self: &Arc<Self>, ino: u64, fh: u64, reply: ReplyEmpty) {
        let Some(live) = self.rw.as_ref().and_then(|w| w.handle(fh)) else {
            return reply.ok();
        };
        let shared = Arc::clone(self);
        self.workers
            .spawn(move || answer(reply, shared.drop_handle(ino, fh, &live)));
    }

    /// Ends a handle; the last one commits what is left and drops the editor.
    fn drop_handle(&self, ino: u64, fh: u64, live: &Arc<Live>) -> Result<(), Errno> {
        let w = self.writable()?;
        lock(&w.handles).remove(&fh);
        self.let_go(ino, live)
    }

    /// Ends one use of the editor counted in its handles (a file handle, or a setattr's); the
    /// last one commits what is left, compacts if due and drops the editor.
    fn let_go(&self, ino: u64, live: &Arc<Live>) -> Result<(), Errno> {
        let w = self.writable()?;
        let last = {
            let _map = lock(&w.live);
            live.handles.fetch_sub(1, Ordering::Relaxed) == 1
        };
        if !last {
            return Ok(());
        }
        let result = self.commit(ino, live, false);
        if result.is_ok() {
            self.tidy(ino, live);
        }
        self.retire_live(ino, live);
        result
    }

    /// At a file's last close: compacts its container if edits in place left more superseded
    /// bytes than live ones (a commit lets them grow further while the file is open). The
    /// commit is done: a failure here is logged, and the file keeps its versions.
    fn tidy(&self, ino: u64, live: &Live) {
        let Some(w) = &self.rw else { return };
        let tree = self.tree();
        let Some(NodeKind::File(entry)) = tree.get(ino).map(|n| &n.kind) else {
            return;
        };
        let path = entry.path.clone();
        let Some(local) = w.local(&path) else { return };
        if live.unlinked.load(Ordering::Relaxed) {
            return;
        }
        let tidied = live.update(|e| {
            Ok(e.tidy(&local)?
                .then(|| (e.len(), e.meta().clone(), live.publish())))
        });
        match tidied {
            Ok(Some((len, meta, version))) => {
                drop(tree);
                self.refresh_published(ino, live, version, (len, &meta));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                target: "qeltrix::mount",
                "{}: compacting at the last close failed (the file keeps its versions): {e}",
                w.storage.display(&path)
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        self: &Arc<Self>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
        reply: ReplyAttr,
    ) {
        if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
            return reply.error(Errno::EPERM);
        }
        let is_dir = match self.tree().get(ino) {
            Some(n) => n.is_dir(),
            None => return reply.error(Errno::ENOENT),
        };
        if is_dir || (mode.is_none() && size.is_none() && mtime.is_none()) {
            // A folder's mode and times are not kept (see the module docs).
            return match self.attr_of(ino) {
                Ok(attr) => reply.attr(&TTL, &attr),
                Err(e) => reply.error(e),
            };
        }
        if self.rw.is_none() {
            return reply.error(Errno::EROFS);
        }
        let shared = Arc::clone(self);
        self.workers.spawn(move || {
            let result = (|| {
                // Counted as a use while it changes the file, as a handle is: the file's last
                // close cannot drop the editor between the change and its commit.
                let live = shared.live(ino)?;
                let changed = live.update(|e| {
                    if let Some(len) = size {
                        e.set_len(len)?;
                    }
                    if let Some(m) = mode {
                        e.set_mode(m);
                    }
                    match mtime {
                        Some(TimeOrNow::Now) => e.set_mtime(SystemTime::now()),
                        Some(TimeOrNow::SpecificTime(t)) => e.set_mtime(t),
                        None => {}
                    }
                    Ok(())
                });
                // A change to a file no handle has open is committed at once.
                let committed = shared.let_go(ino, &live);
                changed.map_err(|e| errno(&e))?;
                committed?;
                shared.attr_of(ino)
            })();
            match result {
                Ok(attr) => reply.attr(&TTL, &attr),
                Err(e) => reply.error(e),
            }
        });
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let result = (|| {
            let w = self.writable()?;
            check_name(name, parent, false)?;
            let mut tree = self.tree_mut();
            let dir = tree.dir_path(parent).ok_or(Errno::ENOTDIR)?.to_path_buf();
            if tree.lookup(parent, name).is_some() {
                return Err(Errno::EEXIST);
            }
            let path = dir.join(name);
            w.storage.make_folder(&path).map_err(|e| io_errno(&e))?;
            let mut kind = new_dir_kind(path);
            if let NodeKind::Dir { times, .. } = &mut kind {
                *times = now_times();
            }
            let ino = tree.insert(parent, name, kind);
            tree.touch_dir(parent, SystemTime::now());
            let attr = self.attr(&tree, ino).ok_or(Errno::ENOENT)?;
            tree.remember(ino);
            Ok(attr)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    pub fn unlink(&self, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let w = self.writable()?;
            let mut tree = self.tree_mut();
            let ino = tree.lookup(parent, name).ok_or(Errno::ENOENT)?;
            let path = match tree.get(ino).map(|n| &n.kind) {
                Some(NodeKind::File(f)) => f.path.clone(),
                Some(NodeKind::Dir { .. }) => return Err(Errno::EISDIR),
                None => return Err(Errno::ENOENT),
            };
            if let Some(live) = w.live_of(ino) {
                live.unlinked.store(true, Ordering::Relaxed);
            }
            match w.storage.remove(&path) {
                // A new file never committed is not in the vault.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_errno(&e)),
                Ok(()) => {}
            }
            tree.remove(parent, name);
            tree.touch_dir(parent, SystemTime::now());
            Ok(())
        })();
        answer(reply, result);
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            let w = self.writable()?;
            let mut tree = self.tree_mut();
            let ino = tree.lookup(parent, name).ok_or(Errno::ENOENT)?;
            let path = tree.dir_path(ino).ok_or(Errno::ENOTDIR)?.to_path_buf();
            if tree.children(ino).is_some_and(|c| !c.is_empty()) {
                return Err(Errno::ENOTEMPTY);
            }
            w.storage.remove_folder(&path).map_err(|e| io_errno(&e))?;
            tree.remove(parent, name);
            tree.touch_dir(parent, SystemTime::now());
            Ok(())
        })();
        answer(reply, result);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        self: &Arc<Self>,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let shared = Arc::clone(self);
        let (name, new_name) = (name.to_os_string(), new_name.to_os_string());
        self.workers.spawn(move || {
            answer(
                reply,
                shared.rename_now(parent, &name, new_parent, &new_name, flags),
            )
        });
    }

    fn rename_now(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let w = self.writable()?;
        if flags.intersects(!(RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE)) {
            return Err(Errno::EINVAL);
        }
        let ino = self.tree().lookup(parent, name).ok_or(Errno::ENOENT)?;
        let is_dir = self.tree().get(ino).is_some_and(|n| n.is_dir());
        check_name(new_name, new_parent, !is_dir)?;
        // A file being written is committed first, so that the rename moves what the app wrote
        // (a save renames its temporary file over the original, often without closing it).
        if let Some(live) = w.live_of(ino) {
            self.commit(ino, &live, false)?;
        }
        let mut tree = self.tree_mut();
        // Checked again under the write lock: the tree may have changed while committing.
        let ino = tree.lookup(parent, name).ok_or(Errno::ENOENT)?;
        let from = stored_path(&tree, ino).ok_or(Errno::ENOENT)?;
        let dir = tree.dir_path(new_parent).ok_or(Errno::ENOTDIR)?.to_path_buf();
        let target = tree.lookup(new_parent, new_name);
        if target == Some(ino) {
            return Ok(());
        }
        let to = if is_dir {
            dir.join(new_name)
        } else {
            dir.join(container_name(new_name))
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            if !w.storage.is_local() {
                // An object store cannot swap two names at once (renameat2(2): a flag the file
                // system does not support).
                return Err(Errno::EINVAL);
            }
            let other = target.ok_or(Errno::ENOENT)?;
            if tree.get(other).is_some_and(|n| n.is_dir()) != is_dir {
                // A file and a folder have differently formed stored names: no single
                // exchange of the two exists.
                return Err(Errno::EINVAL);
            }
            let committed = |i: u64| w.live_of(i).map_or(Ok(()), |l| self.commit(i, &l, false));
            drop(tree);
            committed(other)?;
            let mut tree = self.tree_mut();
            w.storage
                .rename(&from, &to, Rename::Exchange)
                .map_err(|e| io_errno(&e))?;
            tree.exchange((parent, name), (new_parent, new_name))
                .ok_or(Errno::ENOENT)?;
            for i in [ino, other] {
                self.refresh_tree(&mut tree, i);
            }
            drop(tree);
            for (i, n) in [(ino, new_name), (other, name)] {
                if let Some(live) = w.live_of(i).filter(|_| !is_dir) {
                    live.update(|e| {
                        e.set_name(n.as_bytes());
                        Ok(())
                    })
                    .map_err(|e| errno(&e))?;
                }
            }
            return Ok(());
        }
        if let Some(t) = target {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (tree.get(t).is_some_and(|n| n.is_dir()), is_dir) {
                (true, false) => return Err(Errno::EISDIR),
                (false, true) => return Err(Errno::ENOTDIR),
                (true, true) if tree.children(t).is_some_and(|c| !c.is_empty()) => {
                    return Err(Errno::ENOTEMPTY)
                }
                _ => {}
            }
            if let Some(live) = w.live_of(t) {
                live.unlinked.store(true, Ordering::Relaxed);
            }
        }
        // On an object store, a folder with nothing under it exists only in the tree.
        let in_vault = (is_dir && w.storage.is_local()) || self.vault_has(&from);
        if in_vault {
            let how = if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                Rename::NoReplace
            } else {
                Rename::Replace
            };
            w.storage.rename(&from, &to, how).map_err(|e| io_errno(&e))?;
        } else if target.is_some() {
            // A new file not committed yet (empty, never closed) over an existing one: the
            // old one goes now, the new one arrives at its first commit.
            match w.storage.remove(&to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_errno(&e)),
                _ => {}
            }
        }
        tree.rename(parent, name, new_parent, new_name);
        let now = SystemTime::now();
        tree.touch_dir(parent, now);
        tree.touch_dir(new_parent, now);
        if in_vault {
            self.refresh_tree(&mut tree, ino);
        }
        drop(tree);
        if let Some(live) = w.live_of(ino).filter(|_| !is_dir) {
            live.update(|e| {
                e.set_name(new_name.as_bytes());
                Ok(())
            })
            .map_err(|e| errno(&e))?;
        }
        Ok(())
    }

    fn vault_has(&self, path: &Path) -> bool {
        self.rw.as_ref().is_some_and(|w| w.storage.stat(path).is_ok())
    }

    /// Gives the file `ino`, or every file under the folder `ino`, the version it has in the
    /// vault now (a rename changed their change times), under the caller's write lock.
    fn refresh_tree(&self, tree: &mut Tree, ino: u64) {
        let mut files = Vec::new();
        let mut stack = vec![ino];
        while let Some(n) = stack.pop() {
            match tree.get(n).map(|node| &node.kind) {
                Some(NodeKind::File(f)) => files.push((n, f.path.clone())),
                Some(NodeKind::Dir { .. }) => stack.extend(
                    tree.children(n)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(_, c, _)| c),
                ),
                None => {}
            }
        }
        for (file, path) in files {
            if self.vault_has(&path) {
                self.refresh_in(tree, file, &path, None);
            }
        }
    }

    pub fn statfs_backing(&self, reply: ReplyStatfs) {
        let Some(w) = &self.rw else {
            return reply.error(Errno::EROFS);
        };
        // An object store has no size: the local disk holding the files being uploaded is
        // what limits a write.
        match crate::sys::fs::statvfs(w.root.as_deref().unwrap_or(&w.edit.scratch)) {
            Ok(s) => reply.statfs(
                s.blocks,
                s.free,
                s.available,
                s.files,
                s.free_files,
                s.block_size as u32,
                (s.name_max as u32).saturating_sub(naming::CONTAINER_SUFFIX.len() as u32),
                s.block_size as u32,
            ),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    pub fn fsyncdir(&self, ino: u64, reply: ReplyEmpty) {
        let Some(w) = &self.rw else {
            return reply.ok();
        };
        let Some(path) = self.tree().dir_path(ino).map(Path::to_path_buf) else {
            return reply.error(Errno::ENOENT);
        };
        // An object store keeps what it acknowledged: nothing to sync.
        let Some(local) = w.local(&path) else {
            return reply.ok();
        };
        let synced = File::open(local).and_then(|d| d.sync_all());
        answer(reply, synced.map_err(|e| io_errno(&e)));
    }
}

/// The vault path of a file's container or a folder.
fn stored_path(tree: &Tree, ino: u64) -> Option<PathBuf> {
    match &tree.get(ino)?.kind {
        NodeKind::File(f) => Some(f.path.clone()),
        NodeKind::Dir { path, .. } => Some(path.clone()),
    }
}
