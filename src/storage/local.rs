//! The local-disk backend of the storage seam.

use super::atomic::{AtomicOutput, Writeback, WRITE_BUFFER};
use super::{
    Entry, EntryKind, Object, ObjectWriter, Rename, SeekWrite, Storage, Version, VersionInner, WriteOptions,
};
use crate::{Error, Result};
use std::fs::{File, Metadata};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Objects are files under a folder (or anywhere, for [`LocalStorage::anywhere`]).
///
/// A rooted storage never reads outside its root: paths are relative and have no `..`, and a
/// symlink is followed only when its target (all links resolved) is inside the root; listings
/// leave the others out.
#[derive(Clone, Debug)]
pub struct LocalStorage {
    /// Canonical root, or `None` for paths taken as given.
    root: Option<PathBuf>,
}

impl LocalStorage {
    /// The folder `root` (which must exist) as a storage.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        Ok(LocalStorage {
            root: Some(std::fs::canonicalize(root)?),
        })
    }

    /// The whole file system: paths are used as given, relative to the working directory.
    pub fn anywhere() -> Self {
        LocalStorage { root: None }
    }

    /// The canonical root folder, if the storage has one.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The local path of `path` in this storage, with the root's confinement checked (a link
    /// leading outside the root is `NotFound`, as if it were not there).
    pub fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let Some(root) = &self.root else {
            return Ok(path.to_path_buf());
        };
        let outside = || io::Error::new(io::ErrorKind::NotFound, "outside the storage root");
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(outside());
        }
        let full = root.join(path);
        match std::fs::canonicalize(&full) {
            Ok(real) if real.starts_with(root) => Ok(real),
            Ok(_) => Err(outside()),
            // Not there (yet): fine for a writer, as long as its folder is inside.
            Err(e) if e.kind() == io::ErrorKind::NotFound => match full.parent().map(std::fs::canonicalize) {
                Some(Ok(dir)) if dir.starts_with(root) => Ok(full),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

impl LocalStorage {
    /// The local path of the entry `path` itself: its folder resolved (and confined) as by
    /// [`LocalStorage::resolve`], its last component not followed, so that a rename or removal
    /// acts on a link, never on what it points to.
    fn resolve_entry(&self, path: &Path) -> io::Result<PathBuf> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let parent = path.parent().unwrap_or(Path::new(""));
        Ok(self.resolve(parent)?.join(name))
    }
}

fn time(secs: i64, nsec: i64) -> SystemTime {
    let t = Duration::new(secs.unsigned_abs(), nsec.clamp(0, 999_999_999) as u32);
    if secs >= 0 {
        UNIX_EPOCH + t
    } else {
        UNIX_EPOCH - t
    }
}

/// The entry for a file system object's metadata.
pub(crate) fn entry(name: std::ffi::OsString, m: &Metadata) -> Entry {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Entry {
        name,
        kind: if m.is_dir() {
            EntryKind::Folder
        } else {
            EntryKind::Object
        },
        size: if m.is_dir() { 0 } else { m.len() },
        modified: time(m.mtime(), m.mtime_nsec()),
        changed: time(m.ctime(), m.ctime_nsec()),
        version: Version(VersionInner::Local {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }),
        link: false,
    }
}

impl Storage for LocalStorage {
    fn open(&self, path: &Path) -> io::Result<Object> {
        let full = self.resolve(path)?;
        // Only files are objects: opening a FIFO or a device could block, or never end.
        let metadata = std::fs::metadata(&full)?;
        if metadata.is_dir() {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        if !metadata.is_file() {
            return Err(not_an_object());
        }
        Ok(Box::new(File::open(full)?))
    }

    fn stat(&self, path: &Path) -> io::Result<Entry> {
        let full = self.resolve(path)?;
        let name = full.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let metadata = std::fs::metadata(&full)?;
        // As in listings: what is neither a file nor a folder is not there.
        if !metadata.is_file() && !metadata.is_dir() {
            return Err(not_an_object());
        }
        Ok(entry(name, &metadata))
    }

    fn list(&self, path: &Path) -> io::Result<Vec<Entry>> {
        let dir = self.resolve(path)?;
        let mut out = Vec::new();
        for item in std::fs::read_dir(&dir)? {
            let Ok(item) = item else { continue };
            let Ok(file_type) = item.file_type() else { continue };
            let metadata = if file_type.is_symlink() {
                // Followed only when it stays inside the root.
                let inside = match &self.root {
                    Some(root) => std::fs::canonicalize(item.path()).is_ok_and(|real| real.starts_with(root)),
                    None => true,
                };
                if !inside {
                    continue;
                }
                std::fs::metadata(item.path())
            } else {
                item.metadata()
            };
            let Ok(metadata) = metadata else { continue };
            if metadata.is_file() || metadata.is_dir() {
                out.push(Entry {
                    link: file_type.is_symlink(),
                    ..entry(item.file_name(), &metadata)
                });
            }
        }
        Ok(out)
    }

    fn create(&self, path: &Path, options: WriteOptions) -> Result<Box<dyn ObjectWriter>> {
        let full = self
            .resolve(path)
            .map_err(|e| Error::io("creating", e).in_file(path))?;
        let out = AtomicOutput::create_with_mode(&full, options.overwrite, options.mode)?;
        Ok(Box::new(LocalWriter(BufWriter::with_capacity(
            WRITE_BUFFER,
            LocalFile {
                out,
                writeback: Writeback::default(),
            },
        ))))
    }

    fn is_local(&self) -> bool {
        true
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let full = self.resolve(path)?;
        if std::fs::symlink_metadata(&full)?.is_dir() {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        std::fs::remove_file(full)
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<()> {
        let source = self.resolve(from)?;
        let target = self.resolve(to)?;
        match std::fs::hard_link(&source, &target) {
            Ok(()) => Ok(()),
            // Another file system under the root, or one without links: copy the bytes, whole.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM | libc::EMLINK)) => {
                let mut input = File::open(&source)?;
                let mut out = self
                    .create(to, WriteOptions::default())
                    .map_err(io::Error::other)?;
                io::copy(&mut input, &mut out)?;
                out.commit().map_err(io::Error::other)
            }
            Err(e) => Err(e),
        }
    }

    fn make_parents(&self, path: &Path) -> io::Result<()> {
        let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        // One level at a time, each checked to stay inside the root.
        let mut at = PathBuf::new();
        for part in parent.components() {
            at.push(part);
            let full = self.resolve(&at)?;
            match std::fs::create_dir(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && full.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path, how: Rename) -> io::Result<()> {
        let flags = match how {
            Rename::Replace => 0,
            Rename::NoReplace => libc::RENAME_NOREPLACE,
            Rename::Exchange => libc::RENAME_EXCHANGE,
        };
        crate::sys::fs::rename2(&self.resolve_entry(from)?, &self.resolve_entry(to)?, flags)
    }

    fn make_folder(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(self.resolve_entry(path)?)
    }

    fn remove_folder(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(self.resolve_entry(path)?)
    }

    fn display(&self, path: &Path) -> String {
        match &self.root {
            Some(root) => root.join(path).display().to_string(),
            None => path.display().to_string(),
        }
    }
}

fn not_an_object() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "neither a file nor a folder")
}

/// A file being written through [`AtomicOutput`]: buffered, with the kernel's writeback started
/// every few MiB (as [`AtomicOutput::writer`] does), so the fsync at commit finds little left to
/// do. Seekable, to patch what was written.
struct LocalWriter(BufWriter<LocalFile>);

/// The unbuffered side of [`LocalWriter`].
struct LocalFile {
    out: AtomicOutput,
    writeback: Writeback,
}

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writeback.write(self.out.file(), buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for LocalFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.writeback.seek(self.out.file(), pos)
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Seek for LocalWriter {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(self: Box<Self>) -> Result<()> {
        match self.0.into_inner() {
            Ok(file) => file.out.commit(),
            Err(e) => {
                let (e, file) = e.into_parts();
                Err(Error::io("writing", e).in_file(file.get_ref().out.dest()))
            }
        }
    }

    fn set_modified(&mut self, time: std::time::SystemTime) -> io::Result<()> {
        // Buffered bytes written after the time is set would move it again.
        self.0.flush()?;
        let file = self.0.get_mut();
        // A device or FIFO written straight into keeps its own times.
        if file.out.is_direct() {
            return Ok(());
        }
        file.out.file().set_modified(time)
    }

    fn seekable(&mut self) -> Option<&mut dyn SeekWrite> {
        // A device or FIFO written straight into cannot seek back to patch the header.
        if self.0.get_ref().out.is_direct() {
            return None;
        }
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_links_remove_unlinks_and_parents_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path()).unwrap();
        s.make_parents(Path::new("a/b/c.qltx")).unwrap();
        s.put(Path::new("a/b/c.qltx"), b"one", WriteOptions::default())
            .unwrap();
        s.copy(Path::new("a/b/c.qltx"), Path::new("a/b/c.qltx.~1~"))
            .unwrap();
        let e = s
            .copy(Path::new("a/b/c.qltx"), Path::new("a/b/c.qltx.~1~"))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        s.remove(Path::new("a/b/c.qltx")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b/c.qltx.~1~")).unwrap(), b"one");
        assert_eq!(
            s.remove(Path::new("a/b/c.qltx")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(s.remove(Path::new("a/b")).is_err(), "a folder is not removed");
        assert!(s.make_parents(Path::new("../x/y.qltx")).is_err());
    }

    #[test]
    fn a_rooted_storage_lists_reads_and_writes_inside_its_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.qltx"), b"abc").unwrap();
        std::fs::write(dir.path().join("out.qltx"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("out.qltx"), root.join("out.qltx")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.qltx"), root.join("in.qltx")).unwrap();
        let s = LocalStorage::new(&root).unwrap();

        let mut names: Vec<_> = s
            .list(Path::new(""))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        assert_eq!(names, ["in.qltx", "sub"], "the link leading out is not listed");
        assert!(s.open(Path::new("out.qltx")).is_err(), "nor opened");
        assert!(s.open(Path::new("../out.qltx")).is_err());
        assert!(s.open(Path::new("/etc/passwd")).is_err());

        let obj = s.open(Path::new("in.qltx")).unwrap();
        let mut buf = [0u8; 3];
        obj.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abc");
        assert_eq!(s.stat(Path::new("in.qltx")).unwrap().size, 3);

        let before = s.stat(Path::new("sub/a.qltx")).unwrap().version;
        s.put(Path::new("sub/a.qltx"), b"abcd", WriteOptions::overwrite(true))
            .unwrap();
        assert_ne!(
            s.stat(Path::new("sub/a.qltx")).unwrap().version,
            before,
            "a rewrite is a new version"
        );
        assert!(
            s.put(Path::new("sub/a.qltx"), b"x", WriteOptions::default())
                .is_err(),
            "no overwrite"
        );

        let mut w = s
            .create(Path::new("sub/b.qltx"), WriteOptions::default())
            .unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(
            !root.join("sub/b.qltx").exists(),
            "an uncommitted object leaves nothing"
        );
    }
}
