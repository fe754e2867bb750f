//! Editing a container's plaintext in place: reads and writes at any offset, truncation, and
//! new versions committed whole, all or nothing. The read-write mount keeps one [`Editor`] per
//! file being written; nothing in here knows about FUSE.
//!
//! - **New versions keep the keys.** A new version has the container id, data key and key-slot
//!   areas of the one it replaces ([`StreamPacker::resume_seekable`]): every key that opened the
//!   file opens it after an edit, a recipient's slot included, and the editor needs no secret
//!   but the data key. Every block of a version is sealed under fresh random salts and nonces,
//!   so no nonce is used twice under one key. A file that had no container yet is sealed to
//!   [`EditOptions::recipients`].
//! - **Writes from the start of an empty file stream.** They go through the packer into a
//!   scratch file as they come, in bounded memory, whatever the size (a copy, an untar, a
//!   download). Anything else (a read, a seek back, a truncation) first finishes that stream into
//!   a complete, unpublished container, which becomes the base the edits apply to.
//! - **Other writes are kept as pages** ([`PAGE`] bytes of plaintext each) over the base. The pages
//!   of all editors share one [`MemoryBudget`]; an editor over its share writes a complete new
//!   version into a scratch file (a *spill*) and drops its pages.
//! - **[`Editor::commit`] publishes**: the new version is renamed over the container, at once,
//!   so a reader (or a crash) sees the old version or the new one, never a mix. With `durable`,
//!   data and folder are synced first, as `fsync(2)` promises. Until then, nothing of the edit is
//!   in the vault: a scratch file has no name (`O_TMPFILE`) and vanishes with the process.
//!
//! A file of [`EditOptions::in_place_min`] bytes or more is a version-3 container, and a commit
//! appends only the blocks its edits touched, with a new footer and commit record
//! ([`append_generation`]); the superseded versions are copied away by compaction
//! ([`Editor::tidy`], and a commit past [`EditOptions::slack_while_open`]). An object on an
//! object store cannot be appended to: [`Editor::commit_upload`] uploads the file whole.

use crate::container::append::{append_generation, Planned};
use crate::container::cache::CachedContainer;
use crate::container::compact::compact_into;
use crate::container::reader::{Container, ContainerInfo};
use crate::container::writer::{PackOptions, StreamPacker};
use crate::core::crypto::{derive_container_keys, DataKey, Recipient};
use crate::core::file_record::FileMeta;
use crate::core::format::{CommitRecord, FooterV2, FormatVersion, Header, COMMIT_B, SIGNATURE_LEN};
use crate::storage::atomic::Scratch;
use crate::storage::spool::Spool;
use crate::storage::{ReadAt, Storage, WriteOptions};
use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes handed at a time to a scratch file's writer thread ([`Spool`]).
const WRITE_CHUNK: usize = 256 << 10;

/// Bytes read from a scratch container per write into an upload.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Bytes of plaintext per edited page.
pub const PAGE: usize = 64 << 10;

/// The granularity at which writes are remembered for an in-place commit: the smallest block,
/// and a version-4 patch's unit.
const UNIT: u64 = crate::core::format::MIN_BLOCK_SIZE as u64;

/// One page of written plaintext: the units of it ever written, or loaded from the base
/// because a write covered them in part, are `loaded` (bit *i*: unit *i*); the others read
/// as the base's (a 4 KiB-aligned write never reads the base).
struct Page {
    data: Box<[u8]>,
    loaded: u16,
}

/// Every unit of a page loaded.
const ALL_UNITS: u16 = u16::MAX;
const _: () = assert!(PAGE as u64 / UNIT == 16 && UNIT == crate::core::format::UNIT);

/// The fewest page bytes an editor spills for the shared budget's sake (its own limit aside):
/// past the budget, pages may exceed it by this much per file being written.
const SPILL_MIN: usize = 16 * PAGE;

/// Files of at least this many bytes are written as version 3 and take later edits in place
/// (only the changed blocks and a new footer appended); smaller ones are written whole at every
/// commit, which also compacts them.
pub const IN_PLACE_MIN: u64 = 1 << 20;

/// Memory for edited pages, shared by every editor of a process: past its limit, an editor that
/// takes a page spills its own pages to a scratch file.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes of pages held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn over(&self) -> bool {
        self.used() > self.limit
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What an edited file was before the edits: a container opened with its key.
pub trait Source: Send + Sync {
    /// Reads plaintext at `offset`; fewer bytes only at the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// The plaintext length.
    fn plain_len(&self) -> u64;
    /// The data key and header a new version keeps.
    fn key_material(&self) -> (DataKey, Header);
    /// The file record (name, mode, mtime), if the container has one.
    fn file_meta(&self) -> Result<Option<FileMeta>>;
    /// The container's structure: header, footer, where the footer is.
    fn info(&self) -> &ContainerInfo;
}

impl<S: ReadAt> Source for Container<S> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Container::read_at(self, offset, buf)
    }
    fn plain_len(&self) -> u64 {
        self.len()
    }
    fn key_material(&self) -> (DataKey, Header) {
        (self.data_key().clone(), self.info().header.clone())
    }
    fn file_meta(&self) -> Result<Option<FileMeta>> {
        Container::file_meta(self)
    }
    fn info(&self) -> &ContainerInfo {
        Container::info(self)
    }
}

impl<S: ReadAt + 'static> Source for CachedContainer<S> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        CachedContainer::read_at(self, offset, buf)
    }
    fn plain_len(&self) -> u64 {
        self.container().len()
    }
    fn key_material(&self) -> (DataKey, Header) {
        Source::key_material(&**self.container())
    }
    fn file_meta(&self) -> Result<Option<FileMeta>> {
        self.container().file_meta()
    }
    fn info(&self) -> &ContainerInfo {
        self.container().info()
    }
}

/// How editors write.
#[derive(Clone)]
pub struct EditOptions {
    /// Block size, compression and worker pool of new versions (the format is always 2; an
    /// existing container's block size and cipher are kept).
    pub pack: PackOptions,
    /// What a file that has no container yet is sealed to.
    pub recipients: Vec<Recipient>,
    /// A folder for scratch files, on the file system of every container edited.
    pub scratch: PathBuf,
    /// Memory for pages, shared by all editors.
    pub budget: Arc<MemoryBudget>,
    /// Most page bytes one editor keeps before it spills.
    pub file_limit: usize,
    /// Files of at least this many bytes are written as format 3 or 4 and edited in place
    /// ([`IN_PLACE_MIN`] in the mount).
    pub in_place_min: u64,
    /// The format such files are written as: 3 (a commit seals again every block a write
    /// touched) or 4 (a commit that keeps the size writes the touched 4 KiB pages as a patch;
    /// the mount's).
    pub in_place_format: FormatVersion,
    /// A commit compacts a format-3 file once its superseded bytes pass this many times its
    /// live ones (1: as soon as they pass them). Above 1, compaction waits for
    /// [`Editor::tidy`] (the mount calls it at a file's last close), so that a file being
    /// edited does not stall an `fsync` on a copy of itself; the file may then take up to
    /// `1 + slack` times its size while it is open ([`OPEN_SLACK`] in the mount).
    pub slack_while_open: u64,
}

/// The read-write mount's [`EditOptions::slack_while_open`]: a file being edited takes at most
/// about five times its size until its last close.
pub const OPEN_SLACK: u64 = 4;

/// A new file being written from its start, straight into a container.
struct Stream {
    packer: StreamPacker<Spool>,
    scratch: Scratch,
}

/// One file's edits. See the module docs.
pub struct Editor {
    opts: Arc<EditOptions>,
    /// The version the edits apply to; `None` for a file that has no container yet, or while
    /// the version is `unopened`.
    base: Option<Arc<dyn Source>>,
    /// A version written by this editor, not opened yet (see [`Editor::adopt`]).
    unopened: Option<File>,
    /// The base's complete version in a scratch file not yet published (after a spill), and
    /// the file record it holds.
    unpublished: Option<(Scratch, FileMeta)>,
    /// The file last published by this editor, kept to sync it on a later `fsync`.
    published: Option<File>,
    /// The data key and header new versions keep, once there is a container.
    keys: Option<(DataKey, Header)>,
    /// Base bytes below this offset are the file's; above it, the file reads zeros.
    base_valid: u64,
    len: u64,
    pages: BTreeMap<u64, Page>,
    /// The [`UNIT`]s written since the base was written: the blocks holding one are sealed
    /// again by an in-place commit (a page is larger than a block can be).
    written: BTreeSet<u64>,
    stream: Option<Stream>,
    meta: FileMeta,
    /// The file differs from the last version published.
    dirty: bool,
    /// A stream failed part-way (the disk filled up): what it held is lost, so the editor
    /// refuses everything, and never publishes; the last published version stays.
    broken: Option<String>,
    /// The name in the file record changed since the base was written: a version-4 patch,
    /// which carries only the mode and mtime, cannot commit it.
    renamed: bool,
}

/// What a commit published.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Plaintext length.
    pub len: u64,
    /// The file record written.
    pub meta: FileMeta,
}

impl Editor {
    /// An editor of a new, empty file (nothing is in the vault until the first commit).
    pub fn new_file(opts: Arc<EditOptions>, meta: FileMeta) -> Self {
        Editor {
            opts,
            base: None,
            unopened: None,
            unpublished: None,
            published: None,
            keys: None,
            base_valid: 0,
            len: 0,
            pages: BTreeMap::new(),
            written: BTreeSet::new(),
            stream: None,
            meta,
            dirty: true,
            broken: None,
            renamed: false,
        }
    }

    /// An editor of the file whose current version is `base`. `meta` is what the file shows
    /// (its record, or the container file's own mode and time when it has none).
    pub fn open(opts: Arc<EditOptions>, base: Arc<dyn Source>, meta: FileMeta) -> Self {
        let len = base.plain_len();
        Editor {
            opts,
            keys: Some(base.key_material()),
            base: Some(base),
            unopened: None,
            unpublished: None,
            published: None,
            base_valid: len,
            len,
            pages: BTreeMap::new(),
            written: BTreeSet::new(),
            stream: None,
            meta,
            dirty: false,
            broken: None,
            renamed: false,
        }
    }

    /// An error if a failed stream lost the file's edits.
    fn check(&self) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::io(
                format!("the file's unsaved writes were lost ({why}); its last saved version is kept"),
                std::io::Error::from_raw_os_error(libc::EIO),
            )),
        }
    }

    /// The file's length now.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name, mode and mtime the file shows now.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// True when the file differs from its last published version.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// True while a new file is streamed straight into a container (writes at its end are a
    /// copy into the packer's block, never a read or a rewrite).
    pub fn is_streaming(&self) -> bool {
        self.stream.is_some()
    }

    /// Bytes of pages held in memory.
    pub fn page_bytes(&self) -> usize {
        self.pages.len() * PAGE
    }

    /// Sets the mode's permission bits (`chmod`).
    pub fn set_mode(&mut self, mode: u32) {
        self.meta.mode = mode & 0o7777;
        self.dirty = true;
    }

    /// Sets the modification time (`utimensat`).
    pub fn set_mtime(&mut self, time: SystemTime) {
        set_time(&mut self.meta, time);
        self.dirty = true;
    }

    /// Sets the name the file record keeps (after a rename).
    pub fn set_name(&mut self, name: &[u8]) {
        if self.meta.name != name {
            self.meta.name = name.to_vec();
            self.dirty = true;
            self.renamed = true;
        }
    }

    /// Reads plaintext at `offset` into `buf`; returns the bytes read (fewer only at the end).
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.check()?;
        self.open_base()?;
        if self.stream.is_some() {
            self.spill()?;
        }
        self.read_current(offset, buf)
    }

    fn read_current(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - offset) as usize);
        let mut done = 0;
        while done < n {
            let at = offset + done as u64;
            let (page, within) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let take = (PAGE - within).min(n - done);
            let out = &mut buf[done..done + take];
            match self.pages.get(&page) {
                Some(p) if p.loaded == ALL_UNITS => out.copy_from_slice(&p.data[within..within + take]),
                // A page of which only some units were written: the others are the base's.
                Some(p) => {
                    let mut i = 0;
                    while i < take {
                        let unit = (within + i) / UNIT as usize;
                        let run = ((unit + 1) * UNIT as usize - within - i).min(take - i);
                        let part = &mut out[i..i + run];
                        if p.loaded & (1 << unit) != 0 {
                            part.copy_from_slice(&p.data[within + i..within + i + run]);
                        } else {
                            self.read_base(at + i as u64, part)?;
                        }
                        i += run;
                    }
                }
                None => self.read_base(at, out)?,
            }
            done += take;
        }
        Ok(n)
    }

    /// Fills `buf` with the base's bytes at `offset`, zeros where the base has none.
    fn read_base(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let have = self.base_valid.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (from_base, zeros) = buf.split_at_mut(have);
        zeros.fill(0);
        let Some(base) = &self.base else {
            // A file with no container yet has nothing below `base_valid` (0), unless its last
            // version is still unopened, which every caller opens first.
            debug_assert!(self.unopened.is_none() || from_base.is_empty());
            from_base.fill(0);
            return Ok(());
        };
        let mut done = 0;
        while done < from_base.len() {
            let n = base.read_at(offset + done as u64, &mut from_base[done..])?;
            if n == 0 {
                return Err(Error::Corrupt {
                    what: format!(
                        "the file ends at {} bytes, before its length {}",
                        offset + done as u64,
                        self.base_valid
                    ),
                    block: None,
                    offset: None,
                });
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (past the end: the gap reads as zeros).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check()?;
        self.open_base()?;
        set_time(&mut self.meta, SystemTime::now());
        self.dirty = true;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::InvalidArgument("a write past the largest file size".into()))?;
        if self.stream.is_none() && offset == 0 && self.len == 0 && self.pages.is_empty() {
            self.start_stream()?;
        }
        if let Some(stream) = &mut self.stream {
            if offset == self.len {
                if let Err(e) = stream.packer.write_all(data) {
                    self.lose_stream(&e);
                    return Err(Error::io("writing the scratch container", e));
                }
                self.len = end;
                return Ok(());
            }
            self.spill()?;
        }
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (page, within) = (at / PAGE as u64, (at % PAGE as u64) as usize);
            let take = (PAGE - within).min(data.len() - done);
            self.page_mut(page, within..within + take)?[within..within + take]
                .copy_from_slice(&data[done..done + take]);
            self.written.extend(at / UNIT..(at + take as u64).div_ceil(UNIT));
            done += take;
        }
        self.len = self.len.max(end);
        // Over the shared budget, the editors that hold a share of it spill; one holding less
        // than SPILL_MIN would spill at every write and gain nothing.
        let share = self.page_bytes();
        if share > self.opts.file_limit || (self.opts.budget.over() && share >= SPILL_MIN) {
            self.spill()?;
        }
        Ok(())
    }

    /// The page `page`, about to be written in bytes `range` of it: each 4 KiB unit of it the
    /// write covers only in part is loaded from the base (or zeros) first; one it covers whole
    /// is not read at all.
    fn page_mut(&mut self, page: u64, range: std::ops::Range<usize>) -> Result<&mut [u8]> {
        if !self.pages.contains_key(&page) {
            self.opts.budget.take(PAGE);
            let fresh = Page {
                data: vec![0u8; PAGE].into_boxed_slice(),
                loaded: 0,
            };
            self.pages.insert(page, fresh);
        }
        let start = page * PAGE as u64;
        let unit = UNIT as usize;
        let (first, last) = (range.start / unit, (range.end - 1) / unit);
        for u in [first, last] {
            let whole = range.start <= u * unit && range.end >= (u + 1) * unit;
            let loaded = self.pages[&page].loaded & (1 << u) != 0;
            if !whole && !loaded {
                let mut buf = [0u8; UNIT as usize];
                self.read_base(start + (u * unit) as u64, &mut buf)?;
                let p = self.pages.get_mut(&page).expect("inserted above");
                p.data[u * unit..(u + 1) * unit].copy_from_slice(&buf);
                p.loaded |= 1 << u;
            }
        }
        let p = self.pages.get_mut(&page).expect("inserted above");
        for u in first..=last {
            p.loaded |= 1 << u;
        }
        Ok(&mut p.data)
    }

    /// Sets the length (`truncate`): bytes past it are dropped, and read as zeros if the file
    /// grows again.
    pub fn set_len(&mut self, len: u64) -> Result<()> {
        self.check()?;
        self.open_base()?;
        set_time(&mut self.meta, SystemTime::now());
        self.dirty = true;
        if len == self.len {
            return Ok(());
        }
        if self.stream.is_some() {
            self.spill()?;
        }
        if len < self.len {
            let keep = len.div_ceil(PAGE as u64);
            let dropped = self.pages.split_off(&keep);
            self.written.split_off(&len.div_ceil(UNIT));
            self.opts.budget.give(dropped.len() * PAGE);
            let within = (len % PAGE as u64) as usize;
            if within != 0 {
                if let Some(p) = self.pages.get_mut(&(len / PAGE as u64)) {
                    p.data[within..].fill(0);
                }
            }
            self.base_valid = self.base_valid.min(len);
        }
        self.len = len;
        Ok(())
    }

    /// A write into the stream failed: what it held cannot be trusted any more.
    fn lose_stream(&mut self, e: &std::io::Error) {
        self.stream = None;
        self.broken = Some(e.to_string());
    }

    fn start_stream(&mut self) -> Result<()> {
        let scratch = self.scratch()?;
        let out = Spool::new(clone(&scratch)?, WRITE_CHUNK);
        let packer = self.packer(out)?;
        self.stream = Some(Stream { packer, scratch });
        Ok(())
    }

    fn scratch(&self) -> Result<Scratch> {
        Scratch::new(&self.opts.scratch)
            .map_err(|e| Error::io("creating a scratch file", e).in_file(&self.opts.scratch))
    }

    /// A packer of a new version into `out`: the keys of the file's container, or, for a file
    /// that has none yet, its recipients.
    fn packer(&self, out: Spool) -> Result<StreamPacker<Spool>> {
        let opts = PackOptions {
            file_meta: Some(self.meta.clone()),
            ..self.opts.pack.clone()
        };
        let mut packer = match &self.keys {
            Some((data_key, header)) => StreamPacker::resume_seekable(out, header, data_key.clone(), &opts)?,
            None => StreamPacker::new_seekable(out, &self.opts.recipients, &opts)?,
        };
        // A large file is written as version 3 or 4, so that its next edits go in place.
        let base = self.base.as_ref().map(|b| b.info());
        let generation = base.and_then(|i| i.generation()).unwrap_or(0) + 1;
        packer.version_3_from(self.opts.in_place_min, generation, self.opts.in_place_format);
        Ok(packer)
    }

    /// Writes the file as it is now into a complete container in a scratch file.
    fn write_version(&mut self) -> Result<Scratch> {
        if let Some(Stream { mut packer, scratch }) = self.stream.take() {
            packer.set_file_meta(Some(self.meta.clone()));
            let material = packer.key_material();
            let finished = packer.finish().and_then(|(out, _)| {
                out.into_file()
                    .map_err(|e| Error::io("writing the scratch container", e))
            });
            if let Err(e) = finished {
                self.broken = Some(e.to_string());
                return Err(e);
            }
            self.keys.get_or_insert(material);
            return Ok(scratch);
        }
        let scratch = self.scratch()?;
        let out = Spool::new(clone(&scratch)?, WRITE_CHUNK);
        let mut packer = self.packer(out)?;
        let mut buf = vec![0u8; PAGE];
        let mut at = 0;
        while at < self.len {
            let n = self.read_current(at, &mut buf)?;
            packer
                .write_all(&buf[..n])
                .map_err(|e| Error::io("writing the scratch container", e))?;
            at += n as u64;
        }
        let material = packer.key_material();
        let (out, _) = packer.finish()?;
        out.into_file()
            .map_err(|e| Error::io("writing the scratch container", e))?;
        self.keys.get_or_insert(material);
        Ok(scratch)
    }

    /// Makes `file`, a complete version just written, the base of further edits.
    fn adopt(&mut self, file: &File) -> Result<()> {
        let source = file
            .try_clone()
            .map_err(|e| Error::io("reopening the new version", e))?;
        // Opened when first needed: a file written and closed (a copy, an untar) never is.
        self.base = None;
        self.unopened = Some(source);
        self.opts.budget.give(self.pages.len() * PAGE);
        self.pages.clear();
        self.written.clear();
        self.renamed = false;
        self.base_valid = self.len;
        Ok(())
    }

    /// Opens the version [`Editor::adopt`] kept, before anything reads the base.
    fn open_base(&mut self) -> Result<()> {
        if let Some(source) = self.unopened.take() {
            let info = ContainerInfo::read(&source)?;
            let (data_key, _) = self.keys.clone().expect("a version was written");
            self.base = Some(Arc::new(Container::with_data_key(source, info, data_key)?));
        }
        Ok(())
    }

    /// Writes the pages out into a complete, unpublished version that becomes the base.
    fn spill(&mut self) -> Result<()> {
        let scratch = self.write_version()?;
        self.adopt(scratch.file())?;
        self.unpublished = Some((scratch, self.meta.clone()));
        // The edits go on at once, over this version.
        self.open_base()
    }

    /// Publishes the file as it is now at `dest` (replacing the container there), if it changed
    /// since the last commit. `durable`: synced before this returns, as `fsync(2)` promises.
    /// `None` when nothing changed.
    pub fn commit(&mut self, dest: &Path, durable: bool) -> Result<Option<Committed>> {
        self.check()?;
        let in_file = |e: std::io::Error, what: &str| Error::io(what.to_string(), e).in_file(dest);
        if !self.dirty {
            if durable {
                if let Some(f) = &self.published {
                    f.sync_all().map_err(|e| in_file(e, "syncing"))?;
                    sync_parent(dest).map_err(|e| in_file(e, "syncing the folder"))?;
                }
            }
            return Ok(None);
        }
        if self.stream.is_none() && self.unpublished.is_none() {
            self.open_base()?;
            if let Some(done) = self.commit_in_place(dest, durable, true)? {
                return Ok(Some(done));
            }
        }
        let mut scratch = self.whole_version()?;
        // The container file shows the file's own mtime, as `pack` makes it: a listing that
        // reads no key (`ls -l` of the vault, a mount before it opens the container) agrees.
        let _ = scratch.file().set_modified(self.meta.mtime());
        let file = match scratch.publish(dest, durable) {
            Ok(file) => file,
            Err(e) => {
                // Kept as the base, unpublished: a stream's bytes are only there, and the next
                // commit publishes it.
                self.adopt(scratch.file())?;
                self.unpublished = Some((scratch, self.meta.clone()));
                return Err(in_file(e, "publishing the new version"));
            }
        };
        self.adopt(&file)?;
        self.published = Some(file);
        self.dirty = false;
        Ok(Some(Committed {
            len: self.len,
            meta: self.meta.clone(),
        }))
    }
}

impl Editor {
    /// The file as it is now, a complete container in a scratch file: the one a spill wrote if
    /// nothing changed since, else a new one.
    fn whole_version(&mut self) -> Result<Scratch> {
        match self.unpublished.take() {
            // A spill wrote the file as it is now: it has only been read since.
            Some((s, meta))
                if self.stream.is_none()
                    && self.pages.is_empty()
                    && self.base_valid == self.len
                    && meta == self.meta =>
            {
                Ok(s)
            }
            _ => {
                self.open_base()?;
                self.write_version()
            }
        }
    }

    /// Publishes the file as it is now as the object `path` of `storage` (an object store), if
    /// it changed since the last commit: the version is written whole into a scratch file, then
    /// uploaded, and the object is replaced when the upload completes, all at once. Durable when
    /// this returns: a store keeps what it acknowledged. The scratch file stays the base of
    /// further edits and reads. `None` when nothing changed.
    pub fn commit_upload(&mut self, storage: &dyn Storage, path: &Path) -> Result<Option<Committed>> {
        self.check()?;
        if !self.dirty {
            return Ok(None);
        }
        // The version becomes the base before the upload: if the upload fails, nothing of the
        // file is lost (a stream's bytes are only there), and the next commit sends it again.
        let scratch = self.whole_version()?;
        self.adopt(scratch.file())?;
        self.unpublished = Some((scratch, self.meta.clone()));
        self.upload(storage, path)?;
        self.unpublished = None;
        self.dirty = false;
        Ok(Some(Committed {
            len: self.len,
            meta: self.meta.clone(),
        }))
    }

    /// Uploads the unpublished version to `path` of `storage`, replacing the object there.
    fn upload(&self, storage: &dyn Storage, path: &Path) -> Result<()> {
        let Some((scratch, _)) = &self.unpublished else {
            return Ok(());
        };
        let options = WriteOptions {
            overwrite: true,
            mode: self.meta.mode,
        };
        let mut out = storage.create(path, options)?;
        let shown = || storage.display(path);
        let file = scratch.file();
        let size = file
            .metadata()
            .map_err(|e| Error::io("reading the scratch container", e))?
            .len();
        let mut buf = vec![0u8; UPLOAD_CHUNK.min(size as usize)];
        let mut at = 0;
        while at < size {
            let n = buf.len().min((size - at) as usize);
            ReadAt::read_exact_at(file, &mut buf[..n], at)
                .map_err(|e| Error::io("reading the scratch container", e))?;
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("uploading", e).in_file(shown()))?;
            at += n as u64;
        }
        out.commit()
    }

    /// Commits by appending a new generation to the version-3 container at `dest`, when the
    /// base is that container, the file is large enough, and what the commit supersedes keeps
    /// the superseded bytes below the live ones. `None`: not taken (the caller writes the file
    /// whole, which also compacts it).
    /// `patch`: a version-4 patch commit may be taken; without, the commit is a base commit
    /// and compacts the file (the last close's [`Editor::tidy`] of a chain).
    fn commit_in_place(&mut self, dest: &Path, durable: bool, patch: bool) -> Result<Option<Committed>> {
        let Some(base) = self.base.clone() else {
            return Ok(None);
        };
        let info = base.info();
        let Some(footer) = info.footer_v2.as_ref().filter(|f| f.generation.is_some()) else {
            return Ok(None);
        };
        if self.len < self.opts.in_place_min {
            return Ok(None);
        }
        let plan = self.plan(footer, info);
        let kept: u64 = plan
            .iter()
            .zip(&footer.entries)
            .filter(|(p, _)| **p == Planned::Keep)
            .map(|(_, e)| e.entry.len)
            .sum();
        let live: u64 = footer.entries.iter().map(|e| e.entry.len).sum();
        let replaced = live - kept;
        // What is superseded now, and what this commit supersedes: the blocks it seals again,
        // the footer and trailer, and a version-4 chain's patches and units.
        let footer_end = info.footer_end();
        let chain_live = info.chain.as_ref().map_or(0, |c| c.live_bytes());
        let superseded =
            info.superseded_bytes() + replaced + footer_end - info.trailer.footer_offset + chain_live;
        // Past `slack_while_open` times the stored live bytes superseded (and at least
        // `in_place_min`), the file is compacted after the append.
        let slack = self.opts.slack_while_open.max(1);
        let compacting = !patch || superseded > live.saturating_mul(slack).max(self.opts.in_place_min);
        let in_file = |e: Error| e.in_file(dest);
        let file = match std::fs::OpenOptions::new().read(true).write(true).open(dest) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(in_file(Error::io("opening the container to append", e))),
        };
        // The container there must be the base, at the same generation (its header holds the
        // same id and commit records): else it is written whole.
        if !holds(&file, info) {
            return Ok(None);
        }
        if patch {
            if let Some(done) = self.commit_patch(&file, info, durable).map_err(in_file)? {
                return Ok(Some(done));
            }
        }
        let (data_key, _) = self.keys.clone().expect("a base has keys");
        let base_key = data_key.clone();
        let pack = &self.opts.pack;
        let policy = pack.compress_policy();
        let len = self.len;
        let mut read = |offset: u64, buf: &mut [u8]| -> Result<()> {
            match self.read_current(offset, buf)? {
                n if n == buf.len() => Ok(()),
                n => Err(Error::corrupt(format!(
                    "the file ends at {} bytes, before its length {len}",
                    offset + n as u64
                ))),
            }
        };
        let appended = append_generation(
            &file,
            info,
            None,
            &data_key,
            &plan,
            &mut read,
            &self.meta,
            policy,
            pack.entropy.as_ref(),
            durable && !compacting,
        )
        .map_err(in_file)?;
        let file = if compacting {
            let compacted = self.compact(&file, &appended.info, dest)?;
            let _ = compacted.set_modified(self.meta.mtime());
            self.adopt(&compacted)?;
            compacted
        } else {
            let _ = file.set_modified(self.meta.mtime());
            // The new generation's structure is known: the base is opened without reading it.
            let source = file
                .try_clone()
                .map_err(|e| Error::io("reopening the new version", e))?;
            self.adopt(&file)?;
            self.unopened = None;
            self.base = Some(Arc::new(Container::written(source, appended.info, base_key)));
            file
        };
        self.published = Some(file);
        self.dirty = false;
        Ok(Some(Committed {
            len: self.len,
            meta: self.meta.clone(),
        }))
    }

    /// Commits the 4 KiB pages written since the base as a version-4 patch to `file` (the
    /// container at the editor's destination, holding the base `info`), when the base is a
    /// version-4 container, the size and name are unchanged, the written pages are a minority
    /// of the file, and the chain has room for them. `None`: not taken (the caller makes a
    /// base commit, which also folds the chain).
    fn commit_patch(
        &mut self,
        file: &File,
        info: &ContainerInfo,
        durable: bool,
    ) -> Result<Option<Committed>> {
        let Some(chain) = &info.chain else {
            return Ok(None);
        };
        let pages = self.written.len();
        let small = (pages as u64 + chain.overlay.len() as u64) * UNIT * 2 <= self.len;
        if self.renamed
            || self.len != info.original_size()
            || self.base_valid != self.len
            || !small
            || !chain.has_room(pages)
        {
            return Ok(None);
        }
        let mut plain = vec![0u8; pages * UNIT as usize];
        let mut offsets = Vec::with_capacity(pages);
        for (i, &unit) in self.written.iter().enumerate() {
            let offset = unit * UNIT;
            let buf = &mut plain[i * UNIT as usize..][..UNIT as usize];
            let n = self.read_current(offset, buf)?;
            offsets.push((offset, n));
        }
        let units: Vec<(u64, &[u8])> = offsets
            .iter()
            .enumerate()
            .map(|(i, &(offset, n))| (offset, &plain[i * UNIT as usize..][..n]))
            .collect();
        let (data_key, header) = self.keys.clone().expect("a base has keys");
        let keys = derive_container_keys(data_key.clone(), header.cipher, header.container_id);
        let next = chain.append(
            file,
            &info.header.bound_fields(),
            &keys,
            &units,
            &self.meta,
            self.opts.pack.entropy.as_ref(),
            durable,
        )?;
        // The structure now on disk, as `ContainerInfo::read` would find it.
        let tip = next.tip();
        let mut now = info.clone();
        let record = CommitRecord {
            generation: tip.generation,
            footer_offset: tip.offset,
            footer_size: tip.size,
        };
        now.header.commits[usize::from(CommitRecord::slot_of(tip.generation) == COMMIT_B)] = record.encode();
        now.header.signature = [0; SIGNATURE_LEN];
        now.container_size = tip.end();
        now.chain = Some(next);
        let _ = file.set_modified(self.meta.mtime());
        let source = file
            .try_clone()
            .map_err(|e| Error::io("reopening the new version", e))?;
        let published = file
            .try_clone()
            .map_err(|e| Error::io("reopening the new version", e))?;
        self.adopt(file)?;
        self.unopened = None;
        self.base = Some(Arc::new(Container::written(source, now, data_key)));
        self.published = Some(published);
        self.dirty = false;
        Ok(Some(Committed {
            len: self.len,
            meta: self.meta.clone(),
        }))
    }

    /// Compacts the version-3 container at `dest`, the editor's base with nothing changed since
    /// its last commit, if its superseded bytes pass its live ones (and `in_place_min`): what a
    /// commit leaves while the file is open ([`EditOptions::slack_while_open`]). For the last
    /// close of a file. True if it was compacted.
    pub fn tidy(&mut self, dest: &Path) -> Result<bool> {
        self.check()?;
        if self.dirty || self.stream.is_some() || self.unpublished.is_some() {
            return Ok(false);
        }
        // A version written whole (kept unopened: a copy, an untar) has nothing superseded, and
        // a small file is never appended to: neither is opened here.
        if self.len < self.opts.in_place_min || self.unopened.is_some() {
            return Ok(false);
        }
        let Some(base) = self.base.clone() else {
            return Ok(false);
        };
        let info = base.info();
        let Some(footer) = info.footer_v2.as_ref().filter(|f| f.generation.is_some()) else {
            return Ok(false);
        };
        let live: u64 = footer.entries.iter().map(|e| e.entry.len).sum();
        if info.superseded_bytes() <= live.max(self.opts.in_place_min) {
            return Ok(false);
        }
        if info.patch_count() > 0 {
            // A version-4 chain is folded first (a base commit), then compacted below.
            return self.commit_in_place(dest, true, false).map(|c| c.is_some());
        }
        let file = match File::open(dest) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("opening the container to compact", e).in_file(dest)),
        };
        if !holds(&file, info) {
            return Ok(false);
        }
        let compacted = self.compact(&file, info, dest)?;
        let _ = compacted.set_modified(self.meta.mtime());
        self.adopt(&compacted)?;
        self.published = Some(compacted);
        Ok(true)
    }

    /// Copies the current blocks of `file`, the version-3 container at `dest` (its structure
    /// `info`), into a new version-3 container at the same generation, and publishes it over
    /// `dest`, always durably: it replaces versions an `fsync` may have promised, so a power cut
    /// must not find the new name before its bytes.
    fn compact(&self, file: &File, info: &ContainerInfo, dest: &Path) -> Result<File> {
        let in_file = |e: Error| e.in_file(dest);
        let generation = info.footer_v2.as_ref().and_then(|f| f.generation);
        let (data_key, _) = self.keys.clone().expect("a base has keys");
        let header = &info.header;
        let keys = derive_container_keys(data_key, header.cipher, header.container_id);
        let mut scratch = self.scratch()?;
        compact_into(file, info, &keys, scratch.file(), generation, false).map_err(in_file)?;
        scratch
            .publish(dest, true)
            .map_err(|e| Error::io("publishing the compacted version", e).in_file(dest))
    }

    /// The blocks of a new generation over `footer`'s: each current block keeps its plaintext
    /// range (cut at the new length), and is sealed again if a page or a truncation touched it;
    /// a short last block grows to the block size when the file grew past it; new blocks of
    /// the block size follow.
    fn plan(&self, footer: &FooterV2, info: &ContainerInfo) -> Vec<Planned> {
        let block_size = info.header.block_size as u64;
        let len = self.len;
        let mut plan = Vec::with_capacity(len.div_ceil(block_size) as usize);
        let mut at = 0;
        let n = footer.entries.len();
        for (i, e) in footer.entries.iter().enumerate() {
            let (start, end) = (e.entry.plain_offset, e.entry.plain_offset + e.entry.plain_size);
            if start >= len {
                break;
            }
            let mut new_end = end.min(len);
            if i + 1 == n && end < len && e.entry.plain_size < block_size {
                new_end = (start + block_size).min(len);
            }
            let paged = self
                .written
                .range(start / UNIT..=(new_end - 1) / UNIT)
                .next()
                .is_some();
            // A block a version-4 patch overrides is sealed again with the units applied: the
            // new base footer starts a chain of none.
            let patched = info.chain.as_ref().is_some_and(|c| c.touches(start, end - start));
            plan.push(if new_end != end || end > self.base_valid || paged || patched {
                Planned::Seal {
                    plain_offset: start,
                    plain_size: new_end - start,
                }
            } else {
                Planned::Keep
            });
            at = new_end;
        }
        while at < len {
            let size = (len - at).min(block_size);
            plan.push(Planned::Seal {
                plain_offset: at,
                plain_size: size,
            });
            at += size;
        }
        plan
    }
}

impl Drop for Editor {
    fn drop(&mut self) {
        self.opts.budget.give(self.pages.len() * PAGE);
    }
}

/// True when `file` holds the container `info` describes, at the same generation: its header
/// (id, key slots' place, commit records) is the same.
fn holds(file: &File, info: &ContainerInfo) -> bool {
    let mut head = vec![0u8; crate::core::format::HEADER_LEN];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut head, 0).is_ok()
        && Header::decode(&head).is_ok_and(|h| h == info.header)
}

fn clone(scratch: &Scratch) -> Result<File> {
    scratch
        .file()
        .try_clone()
        .map_err(|e| Error::io("opening the scratch file", e))
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => File::open(p)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Sets a file record's modification time.
pub fn set_time(meta: &mut FileMeta, time: SystemTime) {
    let (sec, nsec) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs().min(i64::MAX as u64) as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let whole = -(d.as_secs().min(i64::MAX as u64) as i64);
            match d.subsec_nanos() {
                0 => (whole, 0),
                n => (whole - 1, 1_000_000_000 - n),
            }
        }
    };
    meta.mtime_sec = sec;
    meta.mtime_nsec = nsec;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::KeyFileKey;
    use crate::core::format::{CommitRecord, TRAILER_LEN};
    use crate::Key;

    fn key() -> Key {
        Key::KeyFile(KeyFileKey::from_bytes([7; 32]))
    }

    fn options(dir: &Path, budget: usize) -> Arc<EditOptions> {
        Arc::new(EditOptions {
            pack: PackOptions {
                block_size: 16 << 10,
                workers: 1,
                ..PackOptions::default()
            },
            recipients: vec![Recipient::try_from(&key()).unwrap()],
            scratch: dir.to_path_buf(),
            budget: MemoryBudget::new(budget),
            file_limit: budget,
            in_place_min: IN_PLACE_MIN,
            in_place_format: FormatVersion::V3,
            slack_while_open: 1,
        })
    }

    fn meta(name: &str) -> FileMeta {
        FileMeta {
            name: name.as_bytes().to_vec(),
            mode: 0o640,
            mtime_sec: 1,
            mtime_nsec: 2,
        }
    }

    fn read_all(e: &mut Editor) -> Vec<u8> {
        let mut out = vec![0u8; e.len() as usize];
        assert_eq!(e.read_at(0, &mut out).unwrap(), out.len());
        out
    }

    fn unpacked(path: &Path) -> (Vec<u8>, Option<FileMeta>) {
        let c = Container::open(path, &key()).unwrap();
        let mut out = vec![0u8; c.len() as usize];
        assert_eq!(c.read_at(0, &mut out).unwrap(), out.len());
        (out, c.file_meta().unwrap())
    }

    /// A small xorshift: the same operations every run.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Uploads to an object store: each commit replaces the object whole with the file as it is
    /// (format 2), with its mode; the scratch copy serves the reads in between; nothing changed,
    /// nothing is uploaded.
    #[cfg(feature = "remote")]
    #[test]
    fn commits_to_an_object_store_upload_the_whole_file_each_time() {
        use crate::storage::RemoteStorage;
        use object_store::memory::InMemory;
        let dir = tempfile::tempdir().unwrap();
        let store = RemoteStorage::from_store(Arc::new(InMemory::new()), "s3://test");
        let object = Path::new("folder/f.qltx");
        let read_object = || {
            let c = Container::open_in(&store, object, &key()).unwrap();
            let mut out = vec![0u8; c.len() as usize];
            assert_eq!(c.read_at(0, &mut out).unwrap(), out.len());
            (out, c.file_meta().unwrap().unwrap(), c.info().header.version)
        };
        // In-place edits off, as the mount sets them for an object store.
        let mut opts = (*options(dir.path(), 1 << 20)).clone();
        opts.in_place_min = u64::MAX;
        let mut e = Editor::new_file(Arc::new(opts), meta("f"));
        let mut model = vec![0u8; 3 << 20];
        let mut state = 5u64;
        model.iter_mut().for_each(|b| *b = next(&mut state) as u8);
        e.write_at(0, &model).unwrap();
        // A failed upload (here: a folder that is not there) loses nothing: the next one sends it.
        let nowhere = crate::storage::LocalStorage::new(dir.path()).unwrap();
        e.commit_upload(&nowhere, Path::new("missing/f.qltx"))
            .expect_err("an upload into a missing folder");
        assert!(read_all(&mut e) == model, "reads after the failed upload");
        assert!(e.commit_upload(&store, object).unwrap().is_some());
        let (got, record, version) = read_object();
        assert!(got == model, "the first upload");
        assert_eq!(record.mode, 0o640);
        assert_eq!(
            version,
            crate::core::format::FormatVersion::V2,
            "an object is never format 3"
        );

        // An edit and growth: read back through the editor (its scratch copy), then uploaded.
        e.write_at(100_000, b"edited").unwrap();
        model[100_000..100_006].copy_from_slice(b"edited");
        e.set_len(model.len() as u64 + 9).unwrap();
        model.extend_from_slice(&[0; 9]);
        e.set_mode(0o600);
        assert!(read_all(&mut e) == model);
        assert!(e.commit_upload(&store, object).unwrap().is_some());
        assert!(
            e.commit_upload(&store, object).unwrap().is_none(),
            "nothing changed since"
        );
        let (got, record, _) = read_object();
        assert!(got == model, "the second upload");
        assert_eq!(record.mode, 0o600);
        assert!(read_all(&mut e) == model, "reads after the upload");
    }

    /// A publish that fails (here: into a folder that is not there) loses nothing of a streamed
    /// file, whose bytes were only in the stream: it reads back, and the next commit publishes it.
    #[test]
    fn a_failed_publish_of_a_streamed_file_keeps_it_for_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Editor::new_file(options(dir.path(), 1 << 20), meta("f"));
        let mut model = vec![0u8; 300_000];
        let mut state = 9u64;
        model.iter_mut().for_each(|b| *b = next(&mut state) as u8);
        e.write_at(0, &model).unwrap();
        assert!(e.is_streaming());
        let missing = dir.path().join("missing/f.qltx");
        e.commit(&missing, true)
            .expect_err("a publish into a missing folder");
        assert!(!missing.exists());
        assert!(read_all(&mut e) == model, "reads after the failed publish");
        let dest = dir.path().join("f.qltx");
        assert!(e.commit(&dest, true).unwrap().is_some());
        assert!(
            unpacked(&dest).0 == model,
            "the file published by the next commit"
        );
    }

    #[test]
    fn a_streamed_new_file_commits_and_reopens_with_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.qltx");
        let mut e = Editor::new_file(options(dir.path(), 1 << 20), meta("f"));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in data.chunks(4096 + 3) {
            let at = e.len();
            e.write_at(at, chunk).unwrap();
        }
        assert!(e.page_bytes() == 0, "a sequential writer keeps no pages");
        e.set_mode(0o600);
        assert!(e.commit(&dest, true).unwrap().is_some());
        assert!(e.commit(&dest, true).unwrap().is_none(), "nothing changed since");
        let (plain, record) = unpacked(&dest);
        assert_eq!(plain, data);
        let record = record.unwrap();
        assert_eq!((record.name.as_slice(), record.mode), (&b"f"[..], 0o600));

        // Edit it again through an editor opened on the committed container.
        let id = ContainerInfo::read(&File::open(&dest).unwrap())
            .unwrap()
            .header
            .container_id;
        let base = Arc::new(Container::open(&dest, &key()).unwrap());
        let mut e = Editor::open(options(dir.path(), 1 << 20), base, record);
        e.write_at(100_000, b"hello").unwrap();
        e.commit(&dest, false).unwrap().unwrap();
        let mut want = data.clone();
        want[100_000..100_005].copy_from_slice(b"hello");
        assert_eq!(unpacked(&dest).0, want);
        let info = ContainerInfo::read(&File::open(&dest).unwrap()).unwrap();
        assert_eq!(
            info.header.container_id, id,
            "a new version keeps the container id and slots"
        );
    }

    #[test]
    fn random_writes_and_truncations_match_a_model_through_spills() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.qltx");
        // A budget of three pages: most rounds spill.
        let mut e = Editor::new_file(options(dir.path(), 3 * PAGE), meta("m"));
        let mut model: Vec<u8> = Vec::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..300 {
            match next(&mut rng) % 10 {
                0 => {
                    let len = (next(&mut rng) % 400_000) as usize;
                    e.set_len(len as u64).unwrap();
                    model.resize(len, 0);
                }
                1 => {
                    e.commit(&dest, false).unwrap();
                    assert_eq!(unpacked(&dest).0, model, "round {round}");
                }
                _ => {
                    let at = (next(&mut rng) % 300_000) as usize;
                    let len = (next(&mut rng) % 70_000) as usize;
                    let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ round) as u8).collect();
                    e.write_at(at as u64, &data).unwrap();
                    if model.len() < at + len {
                        model.resize(at + len, 0);
                    }
                    model[at..at + len].copy_from_slice(&data);
                }
            }
            assert_eq!(e.len(), model.len() as u64);
            if round % 25 == 0 {
                assert_eq!(read_all(&mut e), model, "round {round}");
            }
            assert!(
                e.page_bytes() <= 3 * PAGE + 2 * PAGE,
                "pages stay within the budget"
            );
        }
        e.commit(&dest, true).unwrap();
        assert_eq!(unpacked(&dest).0, model);
    }

    fn generation(path: &Path) -> Option<u64> {
        let info = ContainerInfo::read(&File::open(path).unwrap()).unwrap();
        info.generation()
    }

    fn structure(path: &Path) -> ContainerInfo {
        ContainerInfo::read(&File::open(path).unwrap()).unwrap()
    }

    fn options_v4(dir: &Path) -> Arc<EditOptions> {
        let mut o = (*options(dir, 64 * PAGE)).clone();
        o.in_place_format = FormatVersion::V4;
        Arc::new(o)
    }

    /// Format 4: a commit that keeps the size appends the written 4 KiB pages as a patch (a
    /// few KiB, not whole blocks) with the file's mode and mtime; every reader reads them; a
    /// rename or a size change is a base commit that folds the chain; `compact` folds and
    /// rewrites.
    #[test]
    fn a_version_4_file_commits_small_overwrites_as_patches() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("p.qltx");
        let size = 3 * IN_PLACE_MIN as usize / 2 + 123;
        let mut rng = 0x0bad_cafe_u64;
        let mut model: Vec<u8> = (0..size).map(|_| next(&mut rng) as u8).collect();
        let mut e = Editor::new_file(options_v4(dir.path()), meta("p"));
        e.write_at(0, &model).unwrap();
        e.commit(&dest, true).unwrap().unwrap();
        let info = structure(&dest);
        assert_eq!(
            (info.version(), info.generation(), info.patch_count()),
            (FormatVersion::V4, Some(1), 0)
        );
        let at = |secs: i64| UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        let mut last_len = std::fs::metadata(&dest).unwrap().len();
        for round in 1..=8u64 {
            for _ in 0..3 {
                let len = 1 + (next(&mut rng) % 5000) as usize;
                let offset = (next(&mut rng) % (size - len) as u64) as usize;
                let data: Vec<u8> = (0..len).map(|_| next(&mut rng) as u8).collect();
                e.write_at(offset as u64, &data).unwrap();
                model[offset..offset + len].copy_from_slice(&data);
            }
            if round == 3 {
                // The last page, short.
                e.write_at(size as u64 - 5, b"tail!").unwrap();
                model[size - 5..].copy_from_slice(b"tail!");
            }
            e.set_mtime(at(1_000 + round as i64));
            e.commit(&dest, round % 2 == 0).unwrap().unwrap();
            let info = structure(&dest);
            assert_eq!(info.generation(), Some(1 + round), "round {round}");
            assert_eq!(info.patch_count(), round as usize, "round {round}: a patch");
            let len = std::fs::metadata(&dest).unwrap().len();
            assert!(
                len - last_len < 60_000,
                "round {round}: appended {} bytes",
                len - last_len
            );
            last_len = len;
            let (plain, record) = unpacked(&dest);
            assert!(plain == model, "round {round}: the file reads as the model");
            let record = record.unwrap();
            assert_eq!(
                (record.mode, record.mtime_sec, record.name),
                (0o640, 1_000 + round as i64, b"p".to_vec())
            );
            assert!(
                read_all(&mut e) == model,
                "round {round}: the editor reads the model"
            );
            // The stream reader refuses it by name; verify without the key checks every unit.
            let ok = crate::ops::verify_keyless(&File::open(&dest).unwrap(), &info, &|_| {}).unwrap();
            assert_eq!(ok, info.block_count());
        }
        // Every block read whole (unpack's path, with its content hash) gets the units too.
        let c = Arc::new(Container::open(&dest, &key()).unwrap());
        let mut whole = Vec::new();
        c.unpack_to(&mut whole, true, 1, &|_| {}).unwrap();
        assert!(whole == model);
        let e2 = crate::container::stream_reader::StreamReader::open(File::open(&dest).unwrap(), &key());
        assert!(e2.err().unwrap().to_string().contains("version-4"));

        // A chmod travels in a patch only with a page: alone, it is a base commit.
        e.set_mode(0o600);
        e.write_at(9, b"m").unwrap();
        model[9] = b'm';
        e.commit(&dest, true).unwrap().unwrap();
        assert_eq!(structure(&dest).patch_count(), 9);
        assert_eq!(unpacked(&dest).1.unwrap().mode, 0o600);

        // A rename is a base commit: the chain is folded, the record names the new name.
        e.set_name(b"q");
        e.write_at(70_000, b"renamed").unwrap();
        model[70_000..70_007].copy_from_slice(b"renamed");
        e.commit(&dest, true).unwrap().unwrap();
        let info = structure(&dest);
        assert_eq!((info.generation(), info.patch_count()), (Some(11), 0));
        let (plain, record) = unpacked(&dest);
        assert!(plain == model);
        let record = record.unwrap();
        assert_eq!((record.name, record.mode), (b"q".to_vec(), 0o600));

        // A size change is a base commit too; then patches start again over the new base.
        e.set_len(size as u64 - 1000).unwrap();
        model.truncate(size - 1000);
        e.commit(&dest, true).unwrap().unwrap();
        assert_eq!(structure(&dest).patch_count(), 0);
        e.write_at(4096 * 3, &[1u8; 4096]).unwrap();
        model[4096 * 3..4096 * 4].fill(1);
        e.commit(&dest, true).unwrap().unwrap();
        assert_eq!(structure(&dest).patch_count(), 1);
        assert!(unpacked(&dest).0 == model);

        // `qeltrix compact` folds the chain, then rewrites the file as version 2.
        drop(e);
        let done = crate::container::compact::compact(&dest, &key()).unwrap();
        assert!(done.rewritten && done.after < done.before);
        let info = structure(&dest);
        assert_eq!((info.version(), info.patch_count()), (FormatVersion::V2, 0));
        assert!(unpacked(&dest).0 == model);
    }

    /// Format 4: a changed unit fails the reads of its page (and only those) and `verify`
    /// without the key; a changed patch footer fails the open.
    #[test]
    fn a_changed_unit_or_patch_footer_of_a_version_4_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("u.qltx");
        let model = vec![3u8; IN_PLACE_MIN as usize];
        let mut e = Editor::new_file(options_v4(dir.path()), meta("u"));
        e.write_at(0, &model).unwrap();
        e.commit(&dest, true).unwrap().unwrap();
        e.write_at(8192, &[9u8; 4096]).unwrap();
        e.commit(&dest, true).unwrap().unwrap();
        let info = structure(&dest);
        let (link, footer) = info.chain.as_ref().unwrap().patches[0].clone();
        let unit = footer.units[0];
        assert_eq!((unit.plain_offset, unit.len), (8192, 4096));
        let good = std::fs::read(&dest).unwrap();

        let changed = dir.path().join("changed-unit.qltx");
        let mut bytes = good.clone();
        bytes[unit.offset as usize + 100] ^= 1;
        std::fs::write(&changed, &bytes).unwrap();
        let c = Container::open(&changed, &key()).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(c.read_at(0, &mut buf).unwrap(), 4096, "another page reads");
        assert_eq!(buf, vec![3u8; 4096]);
        let e1 = c.read_at(8192 + 10, &mut buf[..10]).unwrap_err();
        assert!(matches!(e1, Error::Corrupt { .. }), "{e1}");
        assert!(c.read_block(0, false).is_err(), "the block holding it");
        let e2 = crate::ops::verify_keyless(&File::open(&changed).unwrap(), &structure(&changed), &|_| {})
            .unwrap_err();
        assert!(e2.to_string().contains("unit 0"), "{e2}");

        for at in [
            link.offset + 8,
            link.offset + 80,
            link.offset + 200,
            link.offset + link.size - 1,
        ] {
            let mut bytes = good.clone();
            bytes[at as usize] ^= 1;
            std::fs::write(&changed, &bytes).unwrap();
            assert!(
                Container::open(&changed, &key()).is_err(),
                "a changed patch footer byte at {at}"
            );
        }
    }

    /// Format 4: patches past the live bytes are folded and compacted away at the last close.
    #[test]
    fn a_version_4_chain_is_folded_and_compacted_at_the_last_close() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("t.qltx");
        let size = IN_PLACE_MIN as usize;
        let mut rng = 0x7a11_u64;
        let mut model: Vec<u8> = (0..size).map(|_| next(&mut rng) as u8).collect();
        let mut e = Editor::new_file(options_v4(dir.path()), meta("t"));
        e.write_at(0, &model).unwrap();
        e.commit(&dest, true).unwrap().unwrap();
        assert!(!e.tidy(&dest).unwrap(), "nothing superseded yet");
        // The same pages rewritten again and again: superseded units pile up.
        let mut round = 0;
        while structure(&dest).superseded_bytes() <= size as u64 {
            round += 1;
            let data: Vec<u8> = (0..40 * 4096).map(|_| next(&mut rng) as u8).collect();
            e.write_at(8192, &data).unwrap();
            model[8192..8192 + data.len()].copy_from_slice(&data);
            e.commit(&dest, false).unwrap().unwrap();
            assert_eq!(structure(&dest).patch_count(), round, "round {round}: a patch");
            assert!(round < 20);
        }
        let before = std::fs::metadata(&dest).unwrap().len();
        assert!(e.tidy(&dest).unwrap(), "compacted at the last close");
        let info = structure(&dest);
        assert_eq!(info.patch_count(), 0);
        assert_eq!(info.version(), FormatVersion::V4);
        assert!(std::fs::metadata(&dest).unwrap().len() < before / 2);
        assert!(unpacked(&dest).0 == model);
        assert!(read_all(&mut e) == model);
    }

    #[test]
    fn a_large_file_takes_edits_in_place_one_generation_per_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("big.qltx");
        let size = 3 * IN_PLACE_MIN as usize / 2;
        let mut model: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
        let mut e = Editor::new_file(options(dir.path(), 64 * PAGE), meta("big"));
        e.write_at(0, &model).unwrap();
        e.commit(&dest, false).unwrap().unwrap();
        assert_eq!(generation(&dest), Some(1), "a large new file is version 3");

        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut last_len = std::fs::metadata(&dest).unwrap().len();
        for round in 1..=12u64 {
            for _ in 0..5 {
                let at = (next(&mut rng) % (model.len() as u64 + 10_000)) as usize;
                let data = vec![round as u8; 1 + (next(&mut rng) % 5000) as usize];
                e.write_at(at as u64, &data).unwrap();
                if model.len() < at + data.len() {
                    model.resize(at + data.len(), 0);
                }
                model[at..at + data.len()].copy_from_slice(&data);
            }
            if round == 6 {
                let cut = model.len() - 40_000;
                e.set_len(cut as u64).unwrap();
                model.truncate(cut);
            }
            e.commit(&dest, round % 2 == 0).unwrap().unwrap();
            assert_eq!(unpacked(&dest).0, model, "round {round}");
            // Every round appends a generation.
            assert_eq!(generation(&dest), Some(round + 1), "round {round}");
            let len = std::fs::metadata(&dest).unwrap().len();
            {
                assert!(
                    len - last_len < 200_000,
                    "round {round}: appended {} bytes, not the whole file",
                    len - last_len
                );
            }
            last_len = len;
            assert_eq!(read_all(&mut e), model, "round {round}");
        }
        // A chmod alone is a new footer.
        e.set_mode(0o600);
        e.commit(&dest, true).unwrap().unwrap();
        assert_eq!(generation(&dest), Some(14));
        let (plain, record) = unpacked(&dest);
        assert_eq!((plain, record.unwrap().mode), (model, 0o600));
    }

    #[test]
    fn an_interrupted_append_leaves_the_last_generation_and_is_overwritten_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("c.qltx");
        let size = IN_PLACE_MIN as usize + 100_000;
        let mut model = vec![5u8; size];
        let mut e = Editor::new_file(options(dir.path(), 64 * PAGE), meta("c"));
        e.write_at(0, &model).unwrap();
        e.write_at(10, b"v3").unwrap(); // not streaming any more: written whole as version 3
        model[10..12].copy_from_slice(b"v3");
        e.commit(&dest, true).unwrap().unwrap();
        assert_eq!(generation(&dest), Some(2));
        e.write_at(500_000, b"second").unwrap();
        model[500_000..500_006].copy_from_slice(b"second");
        e.commit(&dest, true).unwrap().unwrap();
        assert_eq!(generation(&dest), Some(3));
        let committed = std::fs::read(&dest).unwrap();

        // A crash after the blocks and footer of generation 3 but before its commit record:
        // the file reads as generation 2, whatever the tail holds.
        let mut torn = committed.clone();
        torn.extend(std::iter::repeat_n(0xa5, 70_000));
        std::fs::write(&dest, &torn).unwrap();
        assert_eq!(generation(&dest), Some(3));
        assert_eq!(unpacked(&dest).0, model);

        // A torn commit record (generation 3, slot A) leaves generation 2 current.
        let mut bad = torn.clone();
        bad[CommitRecord::slot_of(4)..][..8].copy_from_slice(b"QLTXCMT3");
        bad[CommitRecord::slot_of(4) + 8] = 4;
        std::fs::write(&dest, &bad).unwrap();
        assert_eq!(generation(&dest), Some(3));

        // The next commit overwrites the tail and ends where its own trailer ends.
        std::fs::write(&dest, &torn).unwrap();
        let base = Arc::new(Container::open(&dest, &key()).unwrap());
        let meta_now = base.file_meta().unwrap().unwrap();
        let mut e = Editor::open(options(dir.path(), 64 * PAGE), base, meta_now);
        e.write_at(0, b"third").unwrap();
        model[0..5].copy_from_slice(b"third");
        e.commit(&dest, true).unwrap().unwrap();
        assert_eq!(generation(&dest), Some(4));
        assert_eq!(unpacked(&dest).0, model);
        let info = ContainerInfo::read(&File::open(&dest).unwrap()).unwrap();
        assert_eq!(
            info.trailer.footer_offset + info.trailer.footer_size + TRAILER_LEN as u64,
            std::fs::metadata(&dest).unwrap().len(),
            "no torn tail is left after a commit"
        );
    }

    #[test]
    fn superseded_versions_past_the_live_bytes_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("k.qltx");
        let size = IN_PLACE_MIN as usize + 50_000;
        // Incompressible, so that the stored bytes are about the plaintext's.
        let mut rng = 0x5eed_u64;
        let mut model: Vec<u8> = (0..size).map(|_| next(&mut rng) as u8).collect();
        let mut e = Editor::new_file(options(dir.path(), 64 * PAGE), meta("k"));
        e.write_at(0, &model).unwrap();
        e.commit(&dest, true).unwrap().unwrap();
        let mut compacted = 0;
        let mut last = std::fs::metadata(&dest).unwrap().len();
        for round in 2..=12u64 {
            // A third of the file rewritten each round: the second or third round passes the
            // live bytes.
            let data: Vec<u8> = (0..size / 3).map(|_| next(&mut rng) as u8).collect();
            e.write_at(100, &data).unwrap();
            model[100..100 + data.len()].copy_from_slice(&data);
            e.commit(&dest, round % 2 == 0).unwrap().unwrap();
            let len = std::fs::metadata(&dest).unwrap().len();
            assert!(len < 2 * size as u64 + 200_000, "round {round}: {len} bytes");
            compacted += (len < last) as u32;
            last = len;
            assert_eq!(
                generation(&dest),
                Some(round),
                "round {round}: the generation goes on"
            );
            assert_eq!(unpacked(&dest).0, model, "round {round}");
        }
        assert!(compacted >= 2, "compacted {compacted} times");
    }

    /// With a slack while open, commits let the superseded bytes grow to that many times the
    /// live ones before compacting; `tidy` (the last close) compacts what is past the live
    /// bytes, and does nothing to a compact file or one with changes not committed.
    #[test]
    fn a_slack_while_open_defers_compaction_to_tidy() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("t.qltx");
        let size = IN_PLACE_MIN as usize + 50_000;
        let mut rng = 0x7107_u64;
        let mut model: Vec<u8> = (0..size).map(|_| next(&mut rng) as u8).collect();
        let mut opts = (*options(dir.path(), 64 * PAGE)).clone();
        opts.slack_while_open = 3;
        let mut e = Editor::new_file(Arc::new(opts), meta("t"));
        e.write_at(0, &model).unwrap();
        e.commit(&dest, true).unwrap().unwrap();
        assert!(!e.tidy(&dest).unwrap(), "a file with nothing superseded");
        let mut lens = Vec::new();
        for round in 2..=11u64 {
            // A third of the file rewritten each round.
            let data: Vec<u8> = (0..size / 3).map(|_| next(&mut rng) as u8).collect();
            e.write_at(100, &data).unwrap();
            model[100..100 + data.len()].copy_from_slice(&data);
            e.commit(&dest, true).unwrap().unwrap();
            let len = std::fs::metadata(&dest).unwrap().len();
            assert!(len < 4 * size as u64 + 200_000, "round {round}: {len} bytes");
            lens.push(len);
            assert_eq!(unpacked(&dest).0, model, "round {round}");
        }
        // Grown past twice the size (no compaction at 1x), then compacted past 3x.
        assert!(lens.iter().any(|&l| l > 2 * size as u64), "{lens:?}");
        assert!(lens.windows(2).any(|w| w[1] < w[0]), "never compacted: {lens:?}");
        // Grown past the live bytes again, then tidied: compacted, same plaintext, same
        // generation, and tidy again does nothing.
        let data: Vec<u8> = (0..size / 2).map(|_| next(&mut rng) as u8).collect();
        for _ in 0..3 {
            e.write_at(7, &data).unwrap();
            e.commit(&dest, false).unwrap().unwrap();
        }
        model[7..7 + data.len()].copy_from_slice(&data);
        let before = std::fs::metadata(&dest).unwrap().len();
        let gen = generation(&dest);
        assert!(before > 2 * size as u64, "{before} bytes before tidy");
        e.write_at(0, b"x").unwrap();
        assert!(!e.tidy(&dest).unwrap(), "tidy with a change not committed");
        model[0] = b'x';
        e.commit(&dest, false).unwrap().unwrap();
        let gen = gen.map(|g| g + 1);
        assert!(e.tidy(&dest).unwrap(), "tidy of {before} bytes");
        let after = std::fs::metadata(&dest).unwrap().len();
        assert!(after < size as u64 + 200_000, "{after} bytes after tidy");
        assert_eq!(generation(&dest), gen);
        assert_eq!(unpacked(&dest).0, model);
        assert!(!e.tidy(&dest).unwrap(), "tidy of a compact file");
        assert!(read_all(&mut e) == model, "reads after tidy");
    }

    #[test]
    fn nothing_reaches_the_destination_before_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("n.qltx");
        let mut e = Editor::new_file(options(dir.path(), PAGE), meta("n"));
        e.write_at(0, &vec![1u8; 5 * PAGE]).unwrap();
        e.write_at(3, b"xyz").unwrap(); // a spill: a scratch version, unpublished
        assert!(!dest.exists());
        drop(e);
        assert!(!dest.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "no scratch file is left: {left:?}");
    }
}
