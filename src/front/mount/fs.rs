//! The FUSE side of the mount: [`VaultFs`] answers the kernel's requests from the vault index
//! ([`Tree`]) and reads plaintext through the shared block cache.
//!
//! Metadata requests (lookup, getattr, readdir) and reads of blocks already in the cache are
//! answered on fuser's threads: they only touch memory. `open` (which may run PBKDF2 to unwrap a
//! key) and reads that must decrypt are handed to a worker pool with their reply, so a slow one
//! never holds up the others.

use super::tree::{FileEntry, NodeKind, Tree};
use super::MountOptions;
use crate::container::cache::{BlockCache, CachedContainer};
use crate::container::reader::block_part;
use crate::core::ranges::BlockSlice;
use crate::vault::{Registry, Vault};
use crate::{Error, Key};
use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

/// How long the kernel may trust a name or an attribute. Changes in the vault are also pushed to
/// the kernel as invalidations, so this only bounds staleness if a notification is lost.
pub(super) const TTL: Duration = Duration::from_secs(1);

/// Block size reported by stat (the unit `du` and `cp` size their I/O by).
const STAT_BLKSIZE: u32 = 1 << 20;

/// The modes shown: those of ordinary files and folders, so that a copy out of the mount
/// (`cp -a`, `rsync -a`) is an ordinary, writable tree. The write bits grant nothing here: the
/// mount is read-only (writes fail with `EROFS`). Who may read is decided before the modes: without
/// `allow_other` the kernel refuses every user but the one who mounted (root included), and with it
/// the modes let everyone read, as `--allow-other` asks.
const FILE_MODE: u16 = 0o644;
const DIR_MODE: u16 = 0o755;

/// File records seen, by path (see [`MountState::records`]).
type Records =
    Arc<Mutex<HashMap<std::path::PathBuf, (crate::storage::Version, Option<(u32, std::time::SystemTime)>)>>>;

fn lock_map<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A folder entry: name, inode, is a folder.
type DirEntry = (OsString, u64, bool);

/// State shared by the fuser threads, the worker pool and the vault watcher.
pub struct MountState {
    pub tree: RwLock<Tree>,
    /// The vault's containers, each opened once (key unwrapped, index authenticated).
    containers: Registry<CachedContainer>,
    /// Each opened container's file record (mode, mtime), by path, with the version it was read
    /// from: the registry keeps only the most recently used containers open, the mount shows
    /// every record. One per path (a newer version replaces it).
    records: Records,
    pub(super) workers: Workers,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    pub(super) next_fh: AtomicU64,
    readahead: u64,
    /// Files open now: the readahead windows share the cache between them.
    open_files: AtomicU64,
    cache_bytes: u64,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// The read-write state (`--read-write`); `None` for a read-only mount.
    pub(super) rw: Option<super::write::Writable>,
}

/// The threads that answer reads and run writes, commits and closes, with a count of the jobs
/// given to them and not done yet. The kernel does not wait for a file's last close (its
/// release): the commit it runs must finish before the process ends, so an unmount waits for
/// the count to reach zero ([`MountState::wait_idle`]).
pub(super) struct Workers {
    pool: rayon::ThreadPool,
    pending: Arc<(Mutex<usize>, Condvar)>,
}

impl Workers {
    pub(super) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        /// Counts the job done however it ends (a panic too).
        struct Done(Arc<(Mutex<usize>, Condvar)>);
        impl Drop for Done {
            fn drop(&mut self) {
                let (count, idle) = &*self.0;
                let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
                *n -= 1;
                if *n == 0 {
                    idle.notify_all();
                }
            }
        }
        *self.pending.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let done = Done(Arc::clone(&self.pending));
        self.pool.spawn(move || {
            let _done = done;
            job();
        });
    }

    fn wait_idle(&self) {
        let (count, idle) = &*self.pending;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            n = idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// An open file: the container it was opened on (fixed for the life of the handle, whatever
/// happens in the vault meanwhile) and where its last read ended, to detect sequential reading.
struct OpenFile {
    entry: Arc<FileEntry>,
    container: Arc<CachedContainer>,
    last_end: AtomicU64,
    /// Blocks to read ahead: 1 after an open or a seek, doubled by each sequential read up to
    /// the mount's limit.
    window: AtomicU64,
}

impl MountState {
    /// Waits until the workers have finished every job given to them: the commits of last
    /// closes the kernel sent before the session ended. Called once the session has ended.
    pub(super) fn wait_idle(&self) {
        self.workers.wait_idle();
    }

    pub fn new(tree: Tree, vault: &Vault, key: Key, opts: &MountOptions) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = if opts.workers == 0 {
            (cores * 2).max(4)
        } else {
            opts.workers
        };
        let (uid, gid) = (crate::sys::process::uid(), crate::sys::process::gid());
        let records = Arc::new(Mutex::new(HashMap::new()));
        Ok(MountState {
            tree: RwLock::new(tree),
            containers: {
                let records = Arc::clone(&records);
                vault.registry(
                    key,
                    Arc::new(BlockCache::new(opts.cache_bytes, cores)),
                    move |opened| {
                        // Kept beyond the registry's most recent containers: `stat` shows a
                        // file's record for as long as the mount runs.
                        let record = opened.cached.container().file_meta().ok().flatten();
                        let shown = record.map(|m| (m.mode, m.mtime()));
                        lock_map(&records).insert(opened.path.clone(), (opened.entry.version.clone(), shown));
                        opened.cached
                    },
                )
            },
            records,
            workers: Workers {
                pool: rayon::ThreadPoolBuilder::new()
                    .num_threads(workers)
                    .thread_name(|i| format!("qeltrix-read-{i}"))
                    // A job that panics drops its reply, which fuser answers with EIO: that one
                    // request fails, the mount goes on.
                    .panic_handler(crate::container::pipeline::pool_panic_handler)
                    .build()
                    .map_err(std::io::Error::other)?,
                pending: Arc::new((Mutex::new(0), Condvar::new())),
            },
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            readahead: opts.readahead_blocks,
            open_files: AtomicU64::new(0),
            cache_bytes: opts.cache_bytes as u64,
            uid,
            gid,
            rw: None,
        })
    }

    /// Tries the key on every container through the mount's registry, which keeps what it
    /// opened (and why the others failed) for the reads to come.
    pub fn check_key(&self) -> crate::Result<crate::vault::KeyCheck> {
        self.containers.check_key()
    }

    /// What a request for something a vault cannot hold (a link, a device file) gets: `EPERM`
    /// read-write, `EROFS` read-only.
    fn cannot_store(&self) -> Errno {
        if self.rw.is_some() {
            Errno::EPERM
        } else {
            Errno::EROFS
        }
    }

    pub(super) fn tree(&self) -> std::sync::RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn attr(&self, tree: &Tree, ino: u64) -> Option<FileAttr> {
        let node = tree.get(ino)?;
        let (kind, size, times, perm, nlink) = match &node.kind {
            NodeKind::Dir { times, subdirs, .. } => (FileType::Directory, 0, *times, DIR_MODE, 2 + subdirs),
            NodeKind::File(f) => match self.rw.as_ref().and_then(|w| w.shown(ino)) {
                // Being written: what the app wrote so far.
                Some((size, mode, mtime)) => {
                    let times = super::tree::Times {
                        atime: mtime,
                        mtime,
                        ..f.times
                    };
                    (FileType::RegularFile, size, times, (mode & 0o7777) as u16, 1)
                }
                None => match self.record(f) {
                    // The packed file's mode and mtime, as `unpack` restores them.
                    Some((mode, mtime)) => {
                        let times = super::tree::Times {
                            atime: mtime,
                            mtime,
                            ..f.times
                        };
                        (FileType::RegularFile, f.size, times, (mode & 0o777) as u16, 1)
                    }
                    None => (FileType::RegularFile, f.size, f.times, FILE_MODE, 1),
                },
            },
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: times.atime,
            mtime: times.mtime,
            ctime: times.ctime,
            crtime: times.ctime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: STAT_BLKSIZE,
            flags: 0,
        })
    }

    /// A file's mode and mtime from its container's file record, once the container is open
    /// (the key check at mount opens them all; never waits for an open). Read once per inode.
    fn record(&self, entry: &FileEntry) -> Option<(u32, std::time::SystemTime)> {
        if let Some(known) = entry.record.get() {
            return *known;
        }
        let seen = lock_map(&self.records)
            .get(&entry.path)
            .filter(|(version, _)| *version == entry.version)
            .map(|(_, record)| *record);
        if let Some(record) = seen {
            return *entry.record.get_or_init(|| record);
        }
        let c = self.containers.peek_version(&entry.path, &entry.version)?;
        Self::note_record(entry, &c)
    }

    fn note_record(entry: &FileEntry, c: &CachedContainer) -> Option<(u32, std::time::SystemTime)> {
        // A record that fails to open is reported by reads' checks; here the file's own show.
        let record = match c.container().file_meta() {
            Ok(meta) => meta.map(|m| (m.mode, m.mtime())),
            Err(_) => None,
        };
        *entry.record.get_or_init(|| record)
    }

    fn open_file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
    }

    /// The container behind `entry`, opened (key unwrapped, index authenticated) on first use
    /// and kept by the vault's registry. A failure that retrying cannot fix (wrong key, damage)
    /// is kept too, and logged once.
    pub(super) fn container(&self, entry: &FileEntry) -> Result<Arc<CachedContainer>, Errno> {
        // The version this inode shows: a container replaced since gets a new inode instead.
        let failure = match self.containers.get_version(&entry.path, &entry.version) {
            Ok(c) => {
                Self::note_record(entry, &c);
                return Ok(c);
            }
            Err(failure) => failure,
        };
        let errno = match failure.error.root() {
            e if e.is_wrong_key() => libc::EACCES,
            // Transient (too many open files, ...): not kept, logged each time.
            Error::Io { source: cause, .. } => cause.raw_os_error().unwrap_or(match cause.kind() {
                std::io::ErrorKind::NotFound => libc::ENOENT,
                _ => libc::EIO,
            }),
            _ => libc::EIO,
        };
        if failure.fresh {
            tracing::warn!(target: "qeltrix::mount", errno, "cannot open {}", failure.error);
        }
        Err(Errno::from_i32(errno))
    }

    /// The most blocks one file reads ahead: the mount's `--readahead`, but no more than a
    /// quarter of the cache shared among the files open, so that many files read at once do not
    /// evict each other's blocks before they are used (memory stays the cache's, whatever the
    /// number of files).
    fn readahead_limit(&self, c: &CachedContainer) -> u64 {
        let block = u64::from(c.container().info().header.block_size).max(1);
        let open = self.open_files.load(Ordering::Relaxed).max(1);
        (self.cache_bytes / block / (4 * open)).clamp(1, self.readahead.max(1))
    }

    /// Starts a read: notes the access pattern, starts readahead, and answers at once if it
    /// can (end of file, or one block already in the cache). Otherwise says what to load.
    fn start_read(
        &self,
        file: &OpenFile,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) -> Option<(Span, ReplyData)> {
        let c = &file.container;
        let mut slices = c.container().slices(offset, size as u64);
        let Some(head) = slices.next() else {
            reply.data(&[]); // at or past the end of file, or an empty read
            return None;
        };
        let end = slices.remaining().end.max(head.end());
        let mut span = Span {
            offset,
            end,
            last: c.block_of(end - 1).unwrap_or(head.index),
            first: head,
            sequential: false,
        };

        // Sequential when this read starts near where the last one ended; the kernel's own
        // readahead sends a few reads at once, so they may arrive slightly out of order.
        let prev_end = file.last_end.swap(end, Ordering::Relaxed);
        let slack = (size as u64).max(block_len(c, span.first.index));
        if offset == 0 || offset.abs_diff(prev_end) <= slack {
            span.sequential = true;
            let window = file.window.load(Ordering::Relaxed).min(self.readahead_limit(c));
            file.window
                .store((window * 2).min(self.readahead_limit(c)), Ordering::Relaxed);
            c.readahead(span.last + 1, window);
        } else {
            file.window.store(1, Ordering::Relaxed);
        }
        if span.first.index == span.last {
            if let Some(block) = c.cached_block(span.first.index) {
                if let Some(part) = block.get(span.first.in_block.clone()) {
                    reply.data(part);
                    return None;
                }
            }
        }
        Some((span, reply))
    }

    /// Finishes a read that needs blocks decrypted (on a worker thread).
    fn finish_read(&self, file: &OpenFile, span: Span, reply: ReplyData) {
        let c = &file.container;
        // One block: answered straight from the cache. Several: copied together.
        let data = if segments_pay(c, &span) {
            // A random read of v2 blocks not in the cache: only the 16 KiB segments it touches
            // are read and decrypted; the cache keeps the blocks sequential readers use.
            let mut buf = vec![0u8; (span.end - span.offset) as usize];
            c.container()
                .read_at(span.offset, &mut buf)
                .map(|n| (Arc::new(buf), 0..n))
        } else if span.first.index == span.last {
            c.block(span.first.index).and_then(|block| {
                block_part(&block, &span.first)?;
                Ok((block, span.first.in_block.clone()))
            })
        } else {
            // The missing blocks of a large read are read from disk together and decrypted in
            // parallel, this thread taking a share.
            c.load(span.first.index, span.last);
            let mut buf = vec![0u8; (span.end - span.offset) as usize];
            c.read_at(span.offset, &mut buf).map(|n| (Arc::new(buf), 0..n))
        };
        match data {
            Ok((bytes, range)) => reply.data(&bytes[range]),
            Err(e) => {
                self.report_read_error(&file.entry, span.offset, span.end, &e);
                reply.error(Errno::EIO);
            }
        }
    }

    fn report_read_error(&self, entry: &FileEntry, offset: u64, end: u64, e: &Error) {
        let block = match e.root() {
            Error::Corrupt { block, .. } => *block,
            _ => None,
        };
        let first_time = match block {
            Some(b) => entry
                .bad_blocks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(b),
            None => true,
        };
        if first_time {
            tracing::warn!(
                target: "qeltrix::mount",
                offset,
                end,
                "{}: read of bytes {offset}..{end} failed: {e}",
                self.containers.vault().display(&entry.path)
            );
        }
    }
}

/// The plaintext range of one read (clipped at the end of file) and the blocks it covers.
struct Span {
    offset: u64,
    end: u64,
    /// The first block and the part of it the read wants.
    first: BlockSlice,
    last: u64,
    /// The read follows the last one (or starts the file): whole blocks and read-ahead pay.
    sequential: bool,
}

/// True when a read is better served by segments than by whole blocks: a format-2 container, a
/// random (not sequential) read, none of its blocks in the cache. A random 1 MiB read of 1 MiB
/// blocks then reads about 1 MiB from the disk, not the 2 MiB of the two blocks it straddles.
fn segments_pay(c: &CachedContainer, span: &Span) -> bool {
    c.container().version().has_v2_blocks()
        && !span.sequential
        && (span.first.index..=span.last).all(|i| c.cached_block(i).is_none())
}

fn block_len(c: &CachedContainer, index: u64) -> u64 {
    c.container().entry(index).map_or(0, |e| e.plain_size)
}

/// The filesystem fuser runs.
pub struct VaultFs {
    pub shared: Arc<MountState>,
}

impl Filesystem for VaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for as much readahead and as many requests in flight as the kernel allows; fuser
        // already asks for the largest reads (max_pages) the kernel offers.
        let _ = config
            .set_max_readahead(u32::MAX)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.shared.tree();
        match tree
            .lookup(parent.0, name)
            .and_then(|ino| Some((ino, self.shared.attr(&tree, ino)?)))
        {
            Some((ino, attr)) => {
                tree.remember(ino);
                reply.entry(&TTL, &attr, Generation(0));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.shared.tree().forget(ino.0, nlookup) {
            self.shared
                .tree
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .collect(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.shared.attr(&self.shared.tree(), ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writes = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if let Some(w) = &self.shared.rw {
            // Read-write: a writer, or a reader of a file being written, goes through its editor.
            if writes || w.is_live(ino.0) {
                let truncate = flags.0 & libc::O_TRUNC != 0 && flags.acc_mode() != OpenAccMode::O_RDONLY;
                return self.shared.open_live(ino.0, truncate, reply);
            }
        } else if writes {
            return reply.error(Errno::EROFS);
        }
        let keep_cache = if self.shared.rw.is_some() {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        };
        let entry = match self.shared.tree().get(ino.0).map(|n| &n.kind) {
            Some(NodeKind::File(f)) => Arc::clone(f),
            Some(NodeKind::Dir { .. }) => return reply.error(Errno::EISDIR),
            None => return reply.error(Errno::ENOENT),
        };
        let shared = Arc::clone(&self.shared);
        self.shared.workers.spawn(move || match shared.container(&entry) {
            Ok(container) => {
                let fh = shared.next_fh.fetch_add(1, Ordering::Relaxed);
                let file = Arc::new(OpenFile {
                    entry,
                    container,
                    // Far from any offset: the first read counts as sequential only at 0.
                    last_end: AtomicU64::new(u64::MAX / 2),
                    window: AtomicU64::new(1),
                });
                let replaced = shared
                    .files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, file);
                if replaced.is_none() {
                    shared.open_files.fetch_add(1, Ordering::Relaxed);
                }
                // Read-only, containers never change under an inode (a replaced one gets a new
                // inode), so the kernel may keep this file's pages across opens. Read-write, a
                // write changes them under the same inode.
                reply.opened(FileHandle(fh), keep_cache);
            }
            Err(errno) => reply.error(errno),
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // A file being written is read through its editor, also by a handle opened before the
        // writer (a reader sees what the writer wrote so far, as on any file system).
        if let Some(live) = self
            .shared
            .rw
            .as_ref()
            .and_then(|w| w.handle(fh.0).or_else(|| w.live_at(ino.0)))
        {
            return self.shared.read_live(live, offset, size, reply);
        }
        let Some(file) = self.shared.open_file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // Cache hits are answered here; only reads that must decrypt go to the pool.
        if let Some((span, reply)) = self.shared.start_read(&file, offset, size, reply) {
            let shared = Arc::clone(&self.shared);
            self.shared
                .workers
                .spawn(move || shared.finish_read(&file, span, reply));
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.shared.rw.as_ref().is_some_and(|w| w.handle(fh.0).is_some()) {
            return self.shared.release_live(ino.0, fh.0, reply);
        }
        let removed = self
            .shared
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        if removed.is_some() {
            self.shared.open_files.fetch_sub(1, Ordering::Relaxed);
        }
        reply.ok();
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _owner: LockOwner, reply: ReplyEmpty) {
        // Each close(2): a file being written is committed, and close reports a failure.
        self.shared.sync(ino.0, fh.0, false, reply);
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.shared.sync(ino.0, fh.0, true, reply);
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.shared.fsyncdir(ino.0, reply);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if mode & libc::S_IFMT != 0 && mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        self.shared.create(parent.0, name, mode, umask, flags, reply);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files come through `create`; devices, FIFOs and sockets cannot be stored.
        reply.error(self.shared.cannot_store());
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.shared.mkdir(parent.0, name, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.shared.unlink(parent.0, name, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.shared.rmdir(parent.0, name, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.shared.rw.is_none() {
            return reply.error(Errno::EROFS);
        }
        self.shared
            .rename(parent.0, name, newparent.0, newname, flags, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.shared.cannot_store());
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(self.shared.cannot_store());
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.shared.write(fh.0, offset, data, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.shared.setattr(ino.0, mode, uid, gid, size, mtime, reply);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let tree = self.shared.tree();
        let Some(node) = tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(children) = tree.children(ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        // A snapshot per open folder, so that offsets stay valid while the vault changes.
        let mut entries = Vec::with_capacity(children.len() + 2);
        entries.push((OsString::from("."), ino.0, true));
        entries.push((OsString::from(".."), node.parent, true));
        entries.extend(children);
        let fh = self.shared.next_fh.fetch_add(1, Ordering::Relaxed);
        self.shared
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(entries));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = self
            .shared
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned();
        let Some(entries) = entries else {
            return reply.error(Errno::EBADF);
        };
        for (i, (name, ino, is_dir)) in entries.iter().enumerate().skip(offset as usize) {
            let kind = if *is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(*ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if self.shared.rw.is_some() {
            // Read-write: the space the vault's own file system has left.
            return self.shared.statfs_backing(reply);
        }
        let tree = self.shared.tree();
        const BSIZE: u64 = 4096;
        reply.statfs(
            tree.total_bytes.div_ceil(BSIZE),
            0,
            0,
            tree.file_count,
            0,
            BSIZE as u32,
            255,
            BSIZE as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let tree = self.shared.tree();
        let Some(node) = tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if mask.contains(AccessFlags::W_OK) && self.shared.rw.is_none() {
            reply.error(Errno::EROFS)
        } else if mask.contains(AccessFlags::X_OK) && !node.is_dir() {
            reply.error(Errno::EACCES)
        } else {
            reply.ok()
        }
    }
}
