//! The one way Qeltrix writes a file: all or nothing, and nothing left behind.
//!
//! [`AtomicOutput`] writes into a file that has no name yet (`O_TMPFILE`), syncs it, and only then
//! links it into place (`linkat`), then syncs the folder. A process killed at any moment, even by
//! SIGKILL, leaves no partial file: an unnamed inode is freed by the kernel when its last
//! descriptor closes. Replacing an existing file links the finished data under a hidden
//! temporary name and renames it over the destination, so readers see the old file or the new
//! one, never a mix.
//!
//! Where the file system has no `O_TMPFILE` (some network and FUSE file systems), the data goes
//! to a hidden named temporary file instead. Such names are registered in this module, and
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT remove them before the process ends; only SIGKILL (or a
//! power cut) can leave one there.

use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

/// Prefix and suffix of the hidden temporary names (fallback files and the replace step).
const TEMP_PREFIX: &str = ".qeltrix-";
const TEMP_SUFFIX: &str = ".part";

/// An output file under construction. Commit it with [`AtomicOutput::commit`]; dropped without
/// commit, it vanishes.
pub struct AtomicOutput {
    file: File,
    /// Set when the fallback named file is used; removed on drop unless committed.
    named: Option<TempName>,
    dest: PathBuf,
    dir: PathBuf,
    overwrite: bool,
    /// The destination is a stream (a character device such as `/dev/null`, or a FIFO): written
    /// straight into, never replaced.
    direct: bool,
}

impl AtomicOutput {
    /// Prepares to write `dest` with mode 0600. Unless `overwrite`, an existing `dest` is an
    /// error now, and again at commit should one appear meanwhile (the link refuses to replace).
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        Self::create_with_mode(dest, overwrite, 0o600)
    }

    /// [`AtomicOutput::create`] with another file mode (the umask still applies).
    ///
    /// A destination that is a character device (`/dev/null`) or a FIFO is a stream: it is
    /// written straight into, as `cp` does, and never replaced by a file. Any other existing
    /// non-file (a socket, a block device) is refused.
    pub fn create_with_mode(dest: &Path, overwrite: bool, mode: u32) -> Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(existing) = std::fs::metadata(dest) {
            use std::os::unix::fs::FileTypeExt;
            let kind = existing.file_type();
            if kind.is_char_device() || kind.is_fifo() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(dest)
                    .map_err(|e| Error::io("opening the output", e).in_file(dest))?;
                return Ok(AtomicOutput {
                    file,
                    named: None,
                    dest: dest.to_path_buf(),
                    dir,
                    overwrite,
                    direct: true,
                });
            }
            if !kind.is_file() {
                return Err(Error::InvalidArgument(format!(
                    "{} is not a regular file, so it is not replaced",
                    dest.display()
                )));
            }
        }
        if !overwrite && dest.symlink_metadata().is_ok() {
            return Err(Error::Exists {
                path: dest.to_path_buf(),
            });
        }
        let in_dir = |e| Error::io(format!("creating the output in {}", dir.display()), e).in_file(dest);
        let (file, named) = match open_unnamed(&dir, mode) {
            Ok(file) => (file, None),
            Err(e) if tmpfile_unsupported(&e) => {
                let (file, name) = create_named(&dir, mode).map_err(in_dir)?;
                (file, Some(name))
            }
            Err(e) => return Err(in_dir(e)),
        };
        Ok(AtomicOutput {
            file,
            named,
            dest: dest.to_path_buf(),
            dir,
            overwrite,
            direct: false,
        })
    }

    /// True when the destination is a stream written straight into (see
    /// [`AtomicOutput::create_with_mode`]): it cannot seek, and commit only flushes.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Where the file goes at commit.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The unnamed file being written, for writes and seeks.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// A buffered writer that starts the kernel's writeback every few MiB, so the fsync in
    /// [`AtomicOutput::commit`] finds little left to do and the disk works while the crypto does.
    pub fn writer(&mut self) -> BufWriter<EarlyWriteback<'_>> {
        BufWriter::with_capacity(
            WRITE_BUFFER,
            EarlyWriteback {
                file: &mut self.file,
                writeback: Writeback::default(),
            },
        )
    }

    /// Syncs the data, gives it its name, and syncs the folder.
    pub fn commit(mut self) -> Result<()> {
        if self.direct {
            return Ok(());
        }
        let dest = self.dest.clone();
        // Another writer created `dest` meanwhile: the same refusal as at `create`.
        let overwrite = self.overwrite;
        let io = |what: &str, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::AlreadyExists if !overwrite => Error::Exists { path: dest.clone() },
            _ => Error::io(what, e).in_file(&dest),
        };
        self.file.sync_all().map_err(|e| io("syncing the output", e))?;
        match self.named.take() {
            None => self.link_into_place().map_err(|e| io("naming the output", e))?,
            Some(name) => {
                let placed = if self.overwrite {
                    std::fs::rename(&name.path, &self.dest)
                } else {
                    // link(2) refuses to replace; the temporary name is removed either way.
                    std::fs::hard_link(&name.path, &self.dest)
                };
                drop(name);
                placed.map_err(|e| io("naming the output", e))?;
            }
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("syncing the folder", e).in_file(&self.dir))
    }

    /// Links the unnamed file at `dest`: directly when it must not replace anything, through a
    /// temporary name and a rename when it may.
    fn link_into_place(&self) -> std::io::Result<()> {
        if !self.overwrite {
            return crate::sys::fs::link_unnamed(&self.file, &self.dest);
        }
        loop {
            let temp = TempName::register(self.dir.join(random_temp_name()));
            match crate::sys::fs::link_unnamed(&self.file, &temp.path) {
                Ok(()) => return std::fs::rename(&temp.path, &self.dest),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    temp.forget();
                    return Err(e);
                }
            }
        }
    }
}

/// A file written now and put under a name later, a name not known when it was started (the
/// mount's editor: a file may be renamed while it is being written). Unnamed where the file system
/// has `O_TMPFILE`, so that even SIGKILL leaves nothing; a hidden named file in `dir` otherwise,
/// removed on drop and on terminating signals. [`Scratch::publish`] gives it its name.
pub(crate) struct Scratch {
    file: File,
    named: Option<TempName>,
}

impl Scratch {
    /// A new, empty scratch file in the folder `dir` (which must be on the file system of every
    /// destination it is published to).
    pub(crate) fn new(dir: &Path) -> std::io::Result<Scratch> {
        match open_unnamed(dir, 0o600) {
            Ok(file) => Ok(Scratch { file, named: None }),
            Err(e) if tmpfile_unsupported(&e) => {
                let (file, name) = create_named(dir, 0o600)?;
                Ok(Scratch {
                    file,
                    named: Some(name),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The file, for reads and writes.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Puts the file at `dest`, replacing what is there, all at once. `durable`: the data is
    /// synced before and the folder after, so the new file survives a power cut; without it
    /// the rename is as durable as the file system makes renames. The file stays open (a reader
    /// of the new version may keep using it).
    /// Failed, the scratch file is left as it was, to publish again.
    pub(crate) fn publish(&mut self, dest: &Path, durable: bool) -> std::io::Result<File> {
        if durable {
            self.file.sync_all()?;
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match &self.named {
            Some(name) => {
                std::fs::rename(&name.path, dest)?;
                if let Some(name) = self.named.take() {
                    name.forget();
                }
            }
            // Nothing there yet (a new file): the name is given at once.
            None if crate::sys::fs::link_unnamed(&self.file, dest).is_ok() => {}
            None => loop {
                let temp = TempName::register(dir.join(random_temp_name()));
                match crate::sys::fs::link_unnamed(&self.file, &temp.path) {
                    Ok(()) => {
                        std::fs::rename(&temp.path, dest)?;
                        temp.forget();
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => temp.forget(),
                    Err(e) => {
                        temp.forget();
                        return Err(e);
                    }
                }
            },
        }
        if durable {
            File::open(&dir)?.sync_all()?;
        }
        self.file.try_clone()
    }
}

/// An unnamed file in `dir` (`O_TMPFILE`; not `O_EXCL`, so it can be linked later).
fn open_unnamed(dir: &Path, mode: u32) -> std::io::Result<File> {
    if crate::sys::test_hooks::no_tmpfile() {
        return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// The errors by which a kernel or file system says it has no `O_TMPFILE`.
fn tmpfile_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
    )
}

fn random_temp_name() -> String {
    let mut r = [0u8; 8];
    crate::core::crypto::Entropy::fill(&crate::core::crypto::SystemEntropy, b"temporary name", &mut r);
    format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", hex::encode(r))
}

/// A named temporary file in `dir`, created exclusively and registered for removal on signals.
fn create_named(dir: &Path, mode: u32) -> std::io::Result<(File, TempName)> {
    loop {
        let name = TempName::register(dir.join(random_temp_name()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&name.path)
        {
            Ok(f) => return Ok((f, name)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => name.forget(),
            Err(e) => {
                name.forget();
                return Err(e);
            }
        }
    }
}

/// A hidden temporary path that is removed when dropped, and by the signal handler if the
/// process is interrupted while it exists.
struct TempName {
    path: PathBuf,
}

/// Paths to remove if a terminating signal arrives.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl TempName {
    fn register(path: PathBuf) -> Self {
        install_signal_cleanup();
        pending().push(path.clone());
        TempName { path }
    }

    /// Stops tracking the path without removing it (it was never created, or it is gone).
    fn forget(self) {
        unregister(&self.path);
        std::mem::forget(self);
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        unregister(&self.path);
    }
}

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

fn unregister(path: &Path) {
    pending().retain(|p| p != path);
}

/// Cleanups to run if a terminating signal arrives (an upload to abort), by id.
type Cleanup = Box<dyn FnOnce() + Send>;
static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());
#[cfg(feature = "remote")]
static NEXT_CLEANUP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// Once set, SIGINT and SIGTERM belong to the caller (a stream being packed seals what it has on
/// them and commits it), and the cleanup thread leaves them alone.
static CALLER_STOPS: AtomicBool = AtomicBool::new(false);

/// Runs `cleanup` if a terminating signal ends the process while the returned guard lives (an
/// object store's pending upload, aborted). Dropping the guard forgets it.
#[cfg(feature = "remote")]
pub(crate) fn on_signal(cleanup: impl FnOnce() + Send + 'static) -> SignalCleanup {
    install_signal_cleanup();
    let id = NEXT_CLEANUP.fetch_add(1, Ordering::Relaxed);
    CLEANUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((id, Box::new(cleanup)));
    SignalCleanup(id)
}

/// See [`on_signal`].
#[cfg(feature = "remote")]
pub(crate) struct SignalCleanup(u64);

#[cfg(feature = "remote")]
impl Drop for SignalCleanup {
    fn drop(&mut self) {
        CLEANUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _)| *id != self.0);
    }
}

/// Says that, from now on, the caller handles SIGINT and SIGTERM itself: it stops what it is
/// doing, commits a complete object (a stream being packed is sealed) and ends the process.
/// The cleanup thread then leaves those two signals alone for the rest of the process: had it
/// acted on one, it could remove an output (or abort an upload) the caller is still sealing,
/// since it may take the signal at any moment after it arrived. Other signals still clean up
/// and end the process; an output dropped uncommitted is still removed (or aborted).
pub fn caller_handles_stop_signals() {
    CALLER_STOPS.store(true, Ordering::SeqCst);
}

/// On the first temporary name, a thread starts that waits for SIGINT, SIGTERM, SIGHUP or
/// SIGQUIT, removes every registered temporary file, and then lets the signal end the process
/// as it would have.
fn install_signal_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]) else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("qeltrix-temp-cleanup".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if CALLER_STOPS.load(Ordering::SeqCst) && matches!(signal, SIGINT | SIGTERM) {
                        // The caller seals what it has and commits it: nothing to clean up.
                        continue;
                    }
                    for path in pending().drain(..) {
                        let _ = std::fs::remove_file(path);
                    }
                    let cleanups = std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|p| p.into_inner()));
                    for (_, cleanup) in cleanups {
                        cleanup();
                    }
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
            });
    });
}

/// Bytes written between two writeback starts.
const WRITEBACK_STEP: u64 = 8 << 20;
/// Buffer of [`AtomicOutput::writer`] (and of the local storage's object writer).
pub(crate) const WRITE_BUFFER: usize = 1 << 20;

/// A file writer that asks the kernel to start writing back each [`WRITEBACK_STEP`] as soon as it
/// is written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: asynchronous, no waiting, no durability
/// promise of its own; the fsync at commit gives that).
pub struct EarlyWriteback<'a> {
    file: &'a mut File,
    writeback: Writeback,
}

impl Write for EarlyWriteback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writeback.write(self.file, buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl std::io::Seek for EarlyWriteback<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.writeback.seek(self.file, pos)
    }
}

/// The bookkeeping of [`EarlyWriteback`], for a writer that owns its file (the local storage's
/// object writer): where the file is, and up to where writeback has been started.
#[derive(Default)]
pub(crate) struct Writeback {
    position: u64,
    flushed_to: u64,
}

impl Writeback {
    /// Writes `buf` to `file` and starts the writeback of each full step.
    pub(crate) fn write(&mut self, file: &mut File, buf: &[u8]) -> std::io::Result<usize> {
        let n = file.write(buf)?;
        self.position += n as u64;
        if self.position >= self.flushed_to + WRITEBACK_STEP {
            let len = self.position - self.flushed_to;
            // A failure is not an error for us: commit's fsync still syncs everything.
            crate::sys::fs::start_writeback(file, self.flushed_to, len);
            self.flushed_to = self.position;
        }
        Ok(n)
    }

    /// Seeks `file`, keeping the bookkeeping in step.
    pub(crate) fn seek(&mut self, file: &mut File, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        use std::io::Seek;
        self.position = file.seek(pos)?;
        self.flushed_to = self.flushed_to.min(self.position);
        Ok(self.position)
    }
}

/// Writes `bytes` to `path` all or nothing (mode 0600): see [`AtomicOutput`].
pub fn write_file(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let mut out = AtomicOutput::create(path, overwrite)?;
    out.file()
        .write_all(bytes)
        .map_err(|e| Error::io("writing", e).in_file(path))?;
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_names_the_file_and_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut out = AtomicOutput::create(&dest, false).unwrap();
        out.file().write_all(b"partial").unwrap();
        assert!(names(dir.path()).is_empty(), "an unnamed file has no entry");
        drop(out);
        assert!(names(dir.path()).is_empty());

        write_file(&dest, b"one", false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_file(&dest, b"two", false).unwrap_err();
        assert!(
            matches!(err.root(), Error::Exists { path } if *path == dest),
            "{err}"
        );
        write_file(&dest, b"two", true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["out"]);
    }

    #[test]
    fn a_file_appearing_before_commit_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut out = AtomicOutput::create(&dest, false).unwrap();
        out.file().write_all(b"new").unwrap();
        std::fs::write(&dest, b"theirs").unwrap();
        let err = out.commit().unwrap_err();
        assert!(matches!(&err, Error::Exists { path } if *path == dest), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"theirs");
        assert_eq!(names(dir.path()), ["out"]);
    }
}
