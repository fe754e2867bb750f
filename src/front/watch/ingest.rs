//! Packing one inbox file into its destination: checked unchanged before (no work), packed while
//! its content is hashed, checked unchanged after (or dropped uncommitted), then committed whole.

use super::state::Record;
use super::upload::UploadClient;
use super::OnDelete;
use crate::container::ops::pack_with;
use crate::file_record::FileMeta;
use crate::storage::{LocalStorage, Storage};
use crate::{Error, PackOptions, Recipient, Result};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where packed files go.
#[derive(Debug)]
pub enum Destination {
    /// A vault on any storage: a local folder, or `s3://`.
    Vault(Arc<dyn Storage>),
    /// A server's upload API (`qeltrix serve --accept-uploads`): containers are packed into a
    /// local spool folder, sent in chunks, and removed from the spool once committed.
    Server {
        /// The client.
        client: UploadClient,
        /// The spool folder (ciphertext only).
        spool: PathBuf,
    },
}

impl Destination {
    /// How the destination is shown.
    pub fn display(&self, path: &Path) -> String {
        match self {
            Destination::Vault(s) => s.display(path),
            Destination::Server { client, .. } => client.display(path),
        }
    }
}

/// What became of one file.
#[derive(Debug)]
pub enum Outcome {
    /// Packed and stored.
    Stored {
        /// What the state now records.
        record: Record,
        /// Bytes stored (the container's size).
        stored: u64,
    },
    /// Its content is what was stored before (only its time moved, or nothing).
    Unchanged(Record),
    /// It changed while it was packed: nothing was stored; pack it again once it settles.
    Changed,
    /// It is gone, or no longer a regular file.
    Vanished,
}

/// Everything a packing job needs; shared by the jobs.
pub struct Ingest {
    pub(super) inbox: PathBuf,
    pub(super) dest: Destination,
    pub(super) keys: Vec<Recipient>,
    pub(super) pack: PackOptions,
    pub(super) keep_versions: u32,
    pub(super) hash_key: [u8; 32],
}

/// The container's path for an inbox file: `a/b.txt` → `a/b.txt.qltx`.
pub fn container_path(rel: &Path) -> PathBuf {
    let mut name = rel.as_os_str().to_os_string();
    name.push(".qltx");
    PathBuf::from(name)
}

fn mtime_ns(m: &Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// The identity of a file's content as far as the file system tells: a change to any of these
/// means it was written (or replaced) meanwhile.
fn fingerprint(m: &Metadata) -> (u64, u64, u64, i128, i64, i64) {
    (m.dev(), m.ino(), m.size(), mtime_ns(m), m.ctime(), m.ctime_nsec())
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl Ingest {
    /// The keyed hash of a whole file's content.
    fn hash_file(&self, file: &File) -> io::Result<String> {
        let mut h = blake3::Hasher::new_keyed(&self.hash_key);
        h.update_reader(file)?;
        Ok(h.finalize().to_hex().to_string())
    }

    /// Packs the inbox file `rel` unless `previous` shows it stored already.
    pub fn run(&self, rel: &Path, previous: Option<&Record>) -> Result<Outcome> {
        let full = self.inbox.join(rel);
        let file = match open_regular(&full) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(Outcome::Vanished),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Vanished),
            Err(e) => return Err(Error::io("opening", e).in_file(&full)),
        };
        let before = file
            .metadata()
            .map_err(|e| Error::io("reading", e).in_file(&full))?;
        let mut file = Some(file);
        if let Some(p) = previous.filter(|p| p.size == before.size()) {
            if p.mtime_ns == mtime_ns(&before) {
                return Ok(Outcome::Unchanged(p.clone()));
            }
            // Same size, new time (a touch, a save of the same bytes): compare contents first,
            // so an unchanged file costs a read, not an upload.
            let read = file.take().expect("opened above");
            let hash = self
                .hash_file(&read)
                .map_err(|e| Error::io("reading", e).in_file(&full))?;
            if hash == p.hash && self.still(&full, &before)? {
                return Ok(Outcome::Unchanged(Record {
                    mtime_ns: mtime_ns(&before),
                    ..p.clone()
                }));
            }
        }
        let file = match file {
            Some(f) => f,
            // The hash read it to its end: open it again to read it from the start.
            None => open_regular(&full)
                .map_err(|e| Error::io("opening", e).in_file(&full))?
                .ok_or_else(|| Error::io("opening", io::ErrorKind::NotFound.into()).in_file(&full))?,
        };
        let mut input = Hashing {
            inner: io::BufReader::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new_keyed(&self.hash_key),
        };
        let opts = PackOptions {
            file_meta: Some(FileMeta::from_file(&full, &before)),
            ..self.pack.clone()
        };
        let target = container_path(rel);
        let mut changed = false;
        let mut fill = |packer: &mut dyn crate::ops::Packer, versions: Option<&dyn Storage>| -> Result<()> {
            packer.pack_from(&mut input).map_err(|e| e.in_file(&full))?;
            if !self.still(&full, &before)? {
                changed = true;
                return Err(Error::InvalidArgument(format!(
                    "{} changed while packed",
                    full.display()
                )));
            }
            if let Some(storage) = versions {
                keep_version(storage, &target, self.keep_versions)?;
            }
            Ok(())
        };
        let stored = match &self.dest {
            Destination::Vault(storage) => {
                storage
                    .make_parents(&target)
                    .map_err(|e| Error::io("creating the folder of", e).in_file(storage.display(&target)))?;
                let versions = (self.keep_versions > 0).then_some(&**storage);
                let packed = pack_with(&**storage, &target, &self.keys, &opts, true, |p| {
                    fill(p, versions)
                });
                match packed {
                    Err(_) if changed => return Ok(Outcome::Changed),
                    r => r?.container_size,
                }
            }
            Destination::Server { client, spool } => {
                let spooled = Spooled::of(spool, rel);
                // Packed before, by a watcher that stopped before the upload ended, from the file
                // as it is now: sent as it is, so the chunks the server holds are not sent again.
                let hash = match spooled.reusable(&before) {
                    Some(hash) => hash,
                    None => {
                        let local = LocalStorage::new(spool)
                            .map_err(|e| Error::io("opening the spool", e).in_file(spool))?;
                        let packed =
                            pack_with(&local, &spooled.container_name(), &self.keys, &opts, true, |p| {
                                fill(p, None)
                            });
                        match packed {
                            Err(_) if changed => return Ok(Outcome::Changed),
                            r => r?,
                        };
                        let hash = input.hasher.finalize().to_hex().to_string();
                        spooled.note(rel, &before, &hash)?;
                        hash
                    }
                };
                let sent = client.upload(&spooled.container, &target, true);
                if sent.is_ok() {
                    spooled.remove();
                }
                return Ok(Outcome::Stored {
                    record: Record {
                        size: before.size(),
                        mtime_ns: mtime_ns(&before),
                        hash,
                    },
                    stored: sent?.size,
                });
            }
        };
        Ok(Outcome::Stored {
            record: Record {
                size: before.size(),
                mtime_ns: mtime_ns(&before),
                hash: input.hasher.finalize().to_hex().to_string(),
            },
            stored,
        })
    }

    /// Whether the file at `full` is still the one described by `before`.
    fn still(&self, full: &Path, before: &Metadata) -> Result<bool> {
        match std::fs::symlink_metadata(full) {
            Ok(now) => Ok(fingerprint(&now) == fingerprint(before)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("checking", e).in_file(full)),
        }
    }

    /// Applies the delete policy to the container of the removed inbox file `rel`. Returns
    /// what was done: `None` when there was no container.
    pub fn delete(&self, rel: &Path, policy: OnDelete) -> Result<Option<String>> {
        let target = container_path(rel);
        let Destination::Vault(storage) = &self.dest else {
            return Ok(None);
        };
        let shown = storage.display(&target);
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        match policy {
            OnDelete::Keep => Ok(None),
            OnDelete::Remove => match storage.remove(&target) {
                Ok(()) => Ok(Some(shown)),
                Err(e) if gone(&e) => Ok(None),
                Err(e) => Err(Error::io("removing", e).in_file(shown)),
            },
            OnDelete::Trash => {
                let trash = free_name(&**storage, &Path::new(super::TRASH).join(&target))?;
                storage
                    .make_parents(&trash)
                    .map_err(|e| Error::io("creating the folder of", e).in_file(storage.display(&trash)))?;
                match storage.copy(&target, &trash) {
                    Ok(()) => {}
                    Err(e) if gone(&e) => return Ok(None),
                    Err(e) => return Err(Error::io("moving to the trash", e).in_file(shown)),
                }
                match storage.remove(&target) {
                    Ok(()) => Ok(Some(storage.display(&trash))),
                    Err(e) if gone(&e) => Ok(Some(storage.display(&trash))),
                    Err(e) => Err(Error::io("removing", e).in_file(shown)),
                }
            }
        }
    }
}

/// Opens `path` if it is a regular file (not a link, a folder or a device); `None` otherwise.
fn open_regular(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) if f.metadata()?.is_file() => Ok(Some(f)),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The name of the `n`-th kept version of `container`: `NAME.qltx.~n~`.
pub fn version_name(container: &Path, n: u64) -> PathBuf {
    let mut name = container.as_os_str().to_os_string();
    name.push(format!(".~{n}~"));
    PathBuf::from(name)
}

/// The kept versions of `container` there are, by number.
fn versions(storage: &dyn Storage, container: &Path) -> Result<Vec<u64>> {
    let folder = container.parent().unwrap_or(Path::new(""));
    let Some(base) = container.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let entries = match storage.list(folder) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", e).in_file(storage.display(folder))),
    };
    let mut found: Vec<u64> = entries
        .iter()
        .filter_map(|e| {
            let name = e.name.to_str()?;
            name.strip_prefix(base)?
                .strip_prefix(".~")?
                .strip_suffix('~')?
                .parse()
                .ok()
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// Before `container` is replaced: keeps the current one as the next numbered version, and
/// removes the oldest beyond `keep` (`NAME.qltx.~1~` is the oldest, as `cp --backup=numbered`).
fn keep_version(storage: &dyn Storage, container: &Path, keep: u32) -> Result<()> {
    let shown = storage.display(container);
    let mut have = versions(storage, container)?;
    let next = have.last().map_or(1, |n| n + 1);
    match storage.copy(container, &version_name(container, next)) {
        Ok(()) => have.push(next),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("keeping the previous version of", e).in_file(shown)),
    }
    let excess = have.len().saturating_sub(keep as usize);
    for n in &have[..excess] {
        let old = version_name(container, *n);
        match storage.remove(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing an old version", e).in_file(storage.display(&old))),
        }
    }
    Ok(())
}

/// `path`, or `path.~n~` for the first `n` not taken.
fn free_name(storage: &dyn Storage, path: &Path) -> Result<PathBuf> {
    let taken = |p: &Path| match storage.stat_now(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("checking", e).in_file(storage.display(p))),
    };
    if !taken(path)? {
        return Ok(path.to_path_buf());
    }
    for n in 1.. {
        let candidate = version_name(path, n);
        if !taken(&candidate)? {
            return Ok(candidate);
        }
    }
    unreachable!("a free name is found before u64 runs out")
}

/// A container in the spool of an upload destination, and its note: which inbox file, as it
/// was, and its content hash. A watcher stopped mid-upload finds it on its next start and sends
/// it again as it is, if the file has not changed: the server holds its chunks sent so far, so
/// only the rest travel.
struct Spooled {
    container: PathBuf,
    note: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SpoolNote {
    path: String,
    fingerprint: String,
    hash: String,
}

fn fingerprint_text(m: &Metadata) -> String {
    let (dev, ino, size, mtime, ctime, ctime_ns) = fingerprint(m);
    format!("{dev}:{ino}:{size}:{mtime}:{ctime}:{ctime_ns}")
}

impl Spooled {
    fn of(spool: &Path, rel: &Path) -> Spooled {
        let stem = blake3::hash(rel.as_os_str().as_encoded_bytes()).to_hex();
        Spooled {
            container: spool.join(format!("{stem}.qltx")),
            note: spool.join(format!("{stem}.json")),
        }
    }

    fn container_name(&self) -> PathBuf {
        PathBuf::from(self.container.file_name().unwrap_or_default())
    }

    fn read_note(path: &Path) -> Option<SpoolNote> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The content hash of the spooled container, if it was packed from the file as `now`.
    fn reusable(&self, now: &Metadata) -> Option<String> {
        let note = Spooled::read_note(&self.note)?;
        (note.fingerprint == fingerprint_text(now) && self.container.is_file()).then_some(note.hash)
    }

    fn note(&self, rel: &Path, m: &Metadata, hash: &str) -> Result<()> {
        let note = SpoolNote {
            path: rel.to_string_lossy().into_owned(),
            fingerprint: fingerprint_text(m),
            hash: hash.to_string(),
        };
        let bytes = serde_json::to_vec(&note).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        crate::storage::atomic::write_file(&self.note, &bytes, true)
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.container);
        let _ = std::fs::remove_file(&self.note);
    }
}

/// Clears what no longer matches its inbox file out of `spool` (the file changed or is gone),
/// and anything without a note. Kept: containers a restarted watcher can send as they are.
pub fn clean_spool(spool: &Path, inbox: &Path) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    let mut keep = std::collections::HashSet::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let current = Spooled::read_note(&path).and_then(|note| {
                let now = std::fs::symlink_metadata(inbox.join(&note.path)).ok()?;
                (note.fingerprint == fingerprint_text(&now)).then_some(())
            });
            if current.is_some() {
                keep.insert(path.with_extension("qltx"));
                keep.insert(path);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(spool) {
        for entry in entries.flatten() {
            if !keep.contains(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
