//! The storage seam: the one way every reader and writer reaches bytes.
//!
//! A [`Storage`] holds objects under relative paths. Readers open an object for positioned reads
//! ([`ReadAt`]), listings name objects and folders with a [`Version`] that changes whenever an
//! object's bytes may have, and writers stream into an [`ObjectWriter`] whose object appears only
//! when it is committed, whole. [`LocalStorage`] (a folder of the local disk) is the first
//! backend; object stores plug in behind the same trait, with no change above.

pub mod atomic;
mod local;
#[cfg(feature = "remote")]
pub mod remote;
pub(crate) mod spool;

pub use local::LocalStorage;
#[cfg(feature = "remote")]
pub use remote::{RemoteOptions, RemoteStorage};

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Positioned, shared reads: `&self`, so many threads read one source at once.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`; a short source is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Length of the source in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(buf.len()).and_then(|end| self.get(start..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
    fn size(&self) -> io::Result<u64> {
        Ok(Vec::len(self) as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

/// An object opened for reading, whatever backend it lives on.
pub type Object = Box<dyn ReadAt>;

/// Which version of an object a listing saw. Two equal versions mean the bytes cannot have
/// changed in between; a replaced or rewritten object gets a new one. Local files: device, inode,
/// size, modification and change times; object stores: entity tag and size.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub(crate) VersionInner);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum VersionInner {
    Local {
        dev: u64,
        ino: u64,
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
    },
    /// An object store's entity tag (where it gives one), size and modification time.
    #[cfg(feature = "remote")]
    Remote {
        etag: Option<String>,
        size: u64,
        modified_ms: i64,
    },
}

/// An object or a folder, as a listing or [`Storage::stat`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// An object: a container, or any other file.
    Object,
    /// A folder (a common prefix, on object stores).
    Folder,
}

/// One entry of a listing, or the answer of [`Storage::stat`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Entry {
    /// The entry's own name (the last path component).
    pub name: OsString,
    /// Object or folder.
    pub kind: EntryKind,
    /// Length in bytes (0 for folders).
    pub size: u64,
    /// Last modification.
    pub modified: SystemTime,
    /// Last change of the entry's metadata, where the backend has it (otherwise `modified`).
    pub changed: SystemTime,
    /// Which version this is.
    pub version: Version,
    /// In a listing: the entry is a link the backend followed (a local symlink leading inside
    /// the storage). Object stores have none.
    pub link: bool,
}

/// How to create an object.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Replace an existing object (otherwise its existence is an error, checked at create and again at commit).
    pub overwrite: bool,
    /// Unix permission bits where the backend has them (before the umask).
    pub mode: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            overwrite: false,
            mode: 0o600,
        }
    }
}

impl WriteOptions {
    /// Default options, replacing an existing object when `overwrite`.
    pub fn overwrite(overwrite: bool) -> Self {
        WriteOptions {
            overwrite,
            ..WriteOptions::default()
        }
    }
}

/// What [`Storage::rename`] does with an existing target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rename {
    /// Replace it (an object, or an empty folder by a folder), as `rename(2)`.
    Replace,
    /// Fail with `AlreadyExists` (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap the two, both of which must exist (`RENAME_EXCHANGE`).
    Exchange,
}

/// An object being written. Nothing is visible under its name until [`ObjectWriter::commit`];
/// dropped uncommitted (an error, a signal), it leaves nothing behind.
pub trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible under its name, whole.
    fn commit(self: Box<Self>) -> crate::Result<()>;

    /// The same writer with `Seek`, where the backend can go back and patch bytes already written
    /// (a local file: `pack` fills in the header's totals, `repair` writes the header last).
    /// `None` where it can only append (an upload). Either way the object appears only at commit.
    fn seekable(&mut self) -> Option<&mut dyn SeekWrite> {
        None
    }

    /// Sets the object's modification time where the backend keeps one (a local file; others
    /// ignore it). Call it after the last write: a later write moves the time again.
    fn set_modified(&mut self, _time: std::time::SystemTime) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that can also seek: see [`ObjectWriter::seekable`].
pub trait SeekWrite: Write + Seek {}

impl<T: Write + Seek + ?Sized> SeekWrite for T {}

/// Reads an object front to back (for the readers that stream: repair's walk over the blocks).
pub struct SequentialReader<R: ReadAt> {
    source: R,
    position: u64,
    len: u64,
}

impl<R: ReadAt> SequentialReader<R> {
    /// Reads `source` from its start to the length it has now.
    pub fn new(source: R) -> io::Result<Self> {
        let len = source.size()?;
        Ok(SequentialReader {
            source,
            position: 0,
            len,
        })
    }
}

impl<R: ReadAt> Read for SequentialReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.position);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        self.source.read_exact_at(&mut buf[..n], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// A place that holds objects under relative paths: the one seam between Qeltrix and bytes.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Opens the object at `path` for positioned reads.
    fn open(&self, path: &Path) -> io::Result<Object>;
    /// What is at `path` (following the backend's rules for links).
    fn stat(&self, path: &Path) -> io::Result<Entry>;
    /// The entries directly inside the folder `path` (`""` for the top), in no particular order.
    /// Entries the backend refuses to show (a link leading outside the storage) are left out.
    fn list(&self, path: &Path) -> io::Result<Vec<Entry>>;
    /// Starts writing the object at `path`; see [`ObjectWriter`].
    fn create(&self, path: &Path, options: WriteOptions) -> crate::Result<Box<dyn ObjectWriter>>;
    /// How `path` is shown to a person: a local path, or a URL.
    fn display(&self, path: &Path) -> String;

    /// [`Storage::stat`] asked of the backend now, not from a cached listing (an object store
    /// reuses listings for a few seconds): for a check that must see the latest version.
    fn stat_now(&self, path: &Path) -> io::Result<Entry> {
        self.stat(path)
    }

    /// True for the local disk, where the kernel can report changes (inotify); other backends
    /// are polled.
    fn is_local(&self) -> bool {
        false
    }

    /// Removes the object at `path` (not a folder). `NotFound` if it is not there.
    fn remove(&self, path: &Path) -> io::Result<()> {
        Err(unsupported("removing", &self.display(path)))
    }

    /// Copies the object `from` to `to`, which must not exist (`AlreadyExists`). Locally a
    /// hard link where it can be, so the copy costs nothing; on an object store a server-side
    /// copy.
    fn copy(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _ = to;
        Err(unsupported("copying", &self.display(from)))
    }

    /// Makes the folders leading to `path` (its parents) where the backend has folders; object
    /// stores have none, and do nothing.
    fn make_parents(&self, path: &Path) -> io::Result<()> {
        let _ = path;
        Ok(())
    }

    /// Renames the object or folder `from` to `to`, at once where the backend can (a local
    /// `renameat2(2)`); see [`Rename`] for what happens to an existing `to`.
    fn rename(&self, from: &Path, to: &Path, how: Rename) -> io::Result<()> {
        let _ = (to, how);
        Err(unsupported("renaming", &self.display(from)))
    }

    /// Makes the folder `path` (its parent must exist). `AlreadyExists` if something is there.
    fn make_folder(&self, path: &Path) -> io::Result<()> {
        Err(unsupported("making the folder", &self.display(path)))
    }

    /// Removes the empty folder `path`.
    fn remove_folder(&self, path: &Path) -> io::Result<()> {
        Err(unsupported("removing the folder", &self.display(path)))
    }

    /// Writes a whole object at once, all or nothing.
    fn put(&self, path: &Path, bytes: &[u8], options: WriteOptions) -> crate::Result<()> {
        let mut out = self.create(path, options)?;
        out.write_all(bytes)
            .map_err(|e| crate::Error::io("writing", e).in_file(self.display(path)))?;
        out.commit()
    }
}

fn unsupported(what: &str, shown: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} {shown}: this storage is read-only"),
    )
}
