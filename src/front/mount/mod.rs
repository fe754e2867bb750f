//! `qeltrix mount`: a vault of containers as a plaintext filesystem (FUSE, via `fuser`), read-only
//! or, with `--read-write`, writable through the [`Editor`](crate::container::edit::Editor).
//!
//! Every `NAME.qltx` under the vault appears as `NAME`, folders mirrored. Listing needs no key:
//! sizes come from each container's footer. A container's key is unwrapped when it is first
//! opened and kept for the life of the mount. Reads decrypt only the blocks they touch, through
//! the process-wide [`BlockCache`](crate::container::cache::BlockCache), with readahead for sequential
//! readers. A watcher ([`watch`]) follows the vault's changes through inotify (polling where that
//! is unavailable) and pushes them to the kernel, so containers added, replaced or removed show up
//! at once.
//!
//! ```no_run
//! use qeltrix::mount::{Mountable, MountOptions};
//! # fn demo(key: qeltrix::Key) -> qeltrix::Result<()> {
//! let vault = Mountable::scan("vault".as_ref())?;        // fails if it holds no containers
//! let mounted = vault.mount("/mnt/plain".as_ref(), key, &MountOptions::default())?;
//! mounted.run()?;                                        // serves until unmounted
//! # Ok(()) }
//! ```
//!
//! Layout: [`tree`] is the vault index (inodes, scans), [`fs`] the fuser `Filesystem`, [`watch`]
//! the change detection.

mod fs;
mod lease;
mod tree;
mod watch;
mod write;

pub use write::ReadWrite;

use crate::error::MountProblem;
use crate::vault::KeyCheck;
use crate::{Error, Key, Result};
use fuser::{Config, MountOption, Session, SessionACL};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tree::{Scanner, Tree};

/// Where the kernel's FUSE device lives.
pub const DEV_FUSE: &str = "/dev/fuse";

/// The package that provides `/dev/fuse` support and `fusermount3` on Debian and Ubuntu.
const INSTALL_HINT: &str = "install the fuse3 package (apt-get install fuse3)";

/// Options of a mount; [`Default`] gives the CLI's defaults.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Bytes of decrypted blocks kept in memory, shared by all files.
    pub cache_bytes: usize,
    /// Blocks decrypted ahead of a sequential reader.
    pub readahead_blocks: u64,
    /// Let other users read the mount (needs `user_allow_other` in /etc/fuse.conf unless root).
    /// Without it the kernel refuses every other user, root included.
    pub allow_other: bool,
    /// Threads answering opens and reads (0: twice the cores, at least 4).
    pub workers: usize,
    /// How often the vault is rescanned for added, replaced and removed containers when inotify
    /// cannot watch it (see [`watch`]).
    pub rescan_interval: Duration,
    /// How often the vault is rescanned while inotify watches it: a safety net for lost events.
    pub safety_rescan_interval: Duration,
    /// The kernel's readahead window for this mount in KiB, set when running as root (others
    /// may not write it); 0 leaves the kernel's default of 128 KiB. The default, 4096, keeps
    /// several full-size (1 MiB) requests in flight for a sequential reader, so the worker pool
    /// decrypts them in parallel.
    pub kernel_readahead_kib: u32,
    /// Mount read-write (`--read-write`): files can be created, written, renamed and removed
    /// (see [`ReadWrite`]). `None`: read-only.
    pub read_write: Option<ReadWrite>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            cache_bytes: 256 << 20,
            readahead_blocks: 4,
            allow_other: false,
            workers: 0,
            rescan_interval: Duration::from_millis(500),
            safety_rescan_interval: Duration::from_secs(60),
            kernel_readahead_kib: 4096,
            read_write: None,
        }
    }
}

/// A problem of a running mount that its user should see (an unreadable container, a corrupt
/// block): a `warn` event under the target `qeltrix::mount`. The CLI's subscriber writes events
/// to stderr, which it points at a log file or /dev/null when it detaches.
pub fn log(msg: &str) {
    tracing::warn!(target: "qeltrix::mount", "{msg}");
}

/// A vault folder scanned into an inode tree, ready to mount.
pub struct Mountable {
    scanner: Scanner,
    tree: Tree,
}

impl Mountable {
    /// Scans the vault folder `dir`. An error if it is not a readable folder or holds no
    /// containers.
    pub fn scan(dir: &Path) -> Result<Mountable> {
        Self::scan_local(dir, false)
    }

    /// [`Mountable::scan`] for a read-write mount: an empty vault is fine (files are made in it).
    pub fn scan_writable(dir: &Path) -> Result<Mountable> {
        Self::scan_local(dir, true)
    }

    fn scan_local(dir: &Path, allow_empty: bool) -> Result<Mountable> {
        let invalid = |e: io::Error| Error::InvalidArgument(format!("vault {}: {e}", dir.display()));
        let root = dir.canonicalize().map_err(invalid)?;
        let vault = crate::vault::Vault::local(&root).map_err(invalid)?;
        Mountable::scan_inner(vault, root, allow_empty)
    }

    /// Scans a vault on any storage (an object store, say), shown as `shown`. Its changes are
    /// found by rescanning every [`MountOptions::rescan_interval`] (inotify watches only local
    /// folders).
    pub fn scan_vault(vault: crate::vault::Vault, shown: PathBuf) -> Result<Mountable> {
        Mountable::scan_inner(vault, shown, false)
    }

    /// [`Mountable::scan_vault`] for a read-write mount: an empty vault is fine.
    pub fn scan_vault_writable(vault: crate::vault::Vault, shown: PathBuf) -> Result<Mountable> {
        Mountable::scan_inner(vault, shown, true)
    }

    fn scan_inner(vault: crate::vault::Vault, shown: PathBuf, allow_empty: bool) -> Result<Mountable> {
        let dir = shown.clone();
        let invalid = |e: io::Error| Error::InvalidArgument(format!("vault {}: {e}", dir.display()));
        // A file system shows dot names (`.git`, `.profile`); the reserved ones stay hidden.
        let mut scanner = Scanner::new(vault.with_dot_names(), shown);
        let scan = scanner.scan().map_err(invalid)?;
        for p in &scanner.problems {
            log(p);
        }
        if scan.container_count() == 0 && !allow_empty {
            return Err(Error::InvalidArgument(format!(
                "vault {} holds no readable containers (*.{})",
                dir.display(),
                crate::vault::naming::CONTAINER_EXT
            )));
        }
        let mut tree = Tree::new();
        tree.apply(scan);
        Ok(Mountable { scanner, tree })
    }

    /// The vault folder being mounted.
    pub fn root(&self) -> &Path {
        self.scanner.root()
    }

    /// Containers found.
    pub fn container_count(&self) -> u64 {
        self.tree.file_count
    }

    /// Mounts the vault at `mountpoint` (checked first: see [`check_mountpoint`]). When this
    /// returns, the mount is in place and answering; [`Mounted::run`] keeps serving it.
    pub fn mount(self, mountpoint: &Path, key: Key, opts: &MountOptions) -> Result<Mounted> {
        self.mount_checked(mountpoint, key, opts, None::<fn(KeyCheck) -> Result<()>>)
    }

    /// As [`mount`](Self::mount), after trying `key` on every container through the mount's
    /// own registry ([`Registry::check_key`](crate::vault::Registry::check_key)), so that a
    /// container the check opened stays open for the mount's reads. `accept` sees the counts
    /// and may refuse them with its error; nothing is mounted then.
    pub fn mount_with_key_check<E: From<Error>>(
        self,
        mountpoint: &Path,
        key: Key,
        opts: &MountOptions,
        accept: impl FnOnce(KeyCheck) -> std::result::Result<(), E>,
    ) -> std::result::Result<Mounted, E> {
        self.mount_checked(mountpoint, key, opts, Some(accept))
    }

    fn mount_checked<E: From<Error>>(
        self,
        mountpoint: &Path,
        key: Key,
        opts: &MountOptions,
        accept: Option<impl FnOnce(KeyCheck) -> std::result::Result<(), E>>,
    ) -> std::result::Result<Mounted, E> {
        check_fuse()?;
        let mountpoint = check_mountpoint(mountpoint)?;
        raise_open_file_limit();
        let mut state = fs::MountState::new(self.tree, self.scanner.vault(), key, opts)
            .map_err(|e| Error::io("starting worker threads", e))?;
        if let Some(rw) = &opts.read_write {
            let storage = self.scanner.vault().storage();
            let pool =
                crate::pipeline::WorkerPool::new(0).map_err(|e| Error::io("starting worker threads", e))?;
            state.rw = Some(write::Writable::new(
                Arc::clone(storage),
                self.scanner.root(),
                rw,
                pool,
            )?);
        }
        let shared = Arc::new(state);
        if let Some(accept) = accept {
            accept(shared.check_key()?)?;
        }
        let mut config = Config::default();
        config.mount_options = vec![
            if opts.read_write.is_some() {
                MountOption::RW
            } else {
                MountOption::RO
            },
            MountOption::FSName(self.scanner.root().display().to_string()),
            MountOption::Subtype("qeltrix".into()),
            MountOption::DefaultPermissions,
            MountOption::NoAtime,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        config.acl = if opts.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(2);
        config.clone_fd = true;
        let fs = fs::VaultFs {
            shared: Arc::clone(&shared),
        };
        let state = Arc::clone(&shared);
        let session = Session::new(fs, &mountpoint, &config).map_err(|e| mount_error(&mountpoint, e))?;
        let kib = opts.kernel_readahead_kib;
        if kib > 0 && crate::sys::process::is_root() {
            if let Err(e) = set_kernel_readahead(&mountpoint, kib) {
                tracing::warn!(
                    target: "qeltrix::mount",
                    kib,
                    "could not set the kernel readahead to {kib} KiB: {e}"
                );
            }
        }
        let (wake, wakes) = mpsc::channel();
        // A read-write mount is its vault's one writer (it holds the lock): it does not follow
        // changes made beside it, which would fight its own.
        let watcher = match opts.read_write {
            Some(_) => None,
            None => {
                let vault_watcher = watch::VaultWatcher::new(shared, self.scanner, session.notifier());
                let every = watch::Intervals {
                    poll: opts.rescan_interval,
                    safety: opts.safety_rescan_interval,
                };
                let sender = wake.clone();
                Some(
                    std::thread::Builder::new()
                        .name("qeltrix-watch".into())
                        .spawn(move || vault_watcher.run(wakes, sender, every))
                        .map_err(|e| Error::io("starting the vault watcher", e))?,
                )
            }
        };
        Ok(Mounted {
            session,
            state,
            mountpoint,
            stop: watch::StopWatcher(wake),
            watcher,
        })
    }
}

/// A mounted vault.
pub struct Mounted {
    session: Session<fs::VaultFs>,
    /// Shared with the session's filesystem: waited on when the session ends.
    state: Arc<fs::MountState>,
    mountpoint: PathBuf,
    stop: watch::StopWatcher,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Mounted {
    /// Where the vault is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Serves requests until the filesystem is unmounted ([`unmount`], `fusermount3 -u`).
    pub fn run(self) -> Result<()> {
        let Mounted {
            session,
            state,
            mountpoint,
            stop,
            watcher,
        } = self;
        let result = session.run();
        // The kernel does not wait for a file's last close: its commit may still be running.
        state.wait_idle();
        drop(stop);
        if let Some(w) = watcher {
            let _ = w.join();
        }
        result.map_err(|e| Error::io(format!("serving {}", mountpoint.display()), e))
    }
}

/// Checks that FUSE can be used: `/dev/fuse` exists and, for a user other than root,
/// `fusermount3` is installed.
pub fn check_fuse() -> Result<()> {
    let is_root = crate::sys::process::is_root();
    check_fuse_at(Path::new(DEV_FUSE), std::env::var_os("PATH").as_deref(), is_root)
}

fn check_fuse_at(dev_fuse: &Path, path_var: Option<&OsStr>, is_root: bool) -> Result<()> {
    if !dev_fuse.exists() {
        return Err(Error::io(
            format!(
                "{} is missing: {INSTALL_HINT} and load the module (modprobe fuse)",
                dev_fuse.display()
            ),
            io::ErrorKind::NotFound.into(),
        ));
    }
    // Root mounts with mount(2) itself; other users need the setuid helper.
    if !is_root && find_in_path("fusermount3", path_var).is_none() {
        return Err(Error::io(
            format!("fusermount3 is not installed: {INSTALL_HINT}"),
            io::ErrorKind::NotFound.into(),
        ));
    }
    Ok(())
}

fn find_in_path(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The mount point as an absolute path, without following the last component (a stale mount
/// cannot be followed).
fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(format!("{}", path.display()), e))?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize().unwrap_or(parent.to_path_buf()).join(name)),
        _ => Ok(abs),
    }
}

/// Checks that `path` can be mounted on: an existing folder, not already a mount point, not a
/// stale FUSE mount. Returns it as an absolute path.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let problem = |problem| Error::MountPoint {
        path: path.to_path_buf(),
        problem,
    };
    let abs = absolute(path)?;
    if let Some(fstype) = mount_type(&abs) {
        // statfs is never answered from the kernel's caches, so it sees a dead connection.
        if fstype.starts_with("fuse") && statfs_errno(&abs) == Some(libc::ENOTCONN) {
            return Err(problem(MountProblem::Stale));
        }
        return Err(problem(MountProblem::Mounted { fstype }));
    }
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(problem(MountProblem::Stale)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(problem(MountProblem::Missing)),
        Err(e) => Err(Error::io(format!("mount point {}", path.display()), e)),
        Ok(m) if !m.is_dir() => Err(problem(MountProblem::NotAFolder)),
        Ok(_) => Ok(abs),
    }
}

/// The errno of statfs(2) on `path`, if it fails.
fn statfs_errno(path: &Path) -> Option<i32> {
    crate::sys::fs::statfs(path).err()?.raw_os_error()
}

/// The filesystem type mounted at `path` (absolute), if `path` is a mount point.
pub fn mount_type(path: &Path) -> Option<String> {
    mountinfo(path).map(|(fstype, _)| fstype)
}

/// The type and device number (`major:minor`) of the topmost mount at `path`, from
/// /proc/self/mountinfo: this never touches the mount itself, so it works on a stale mount and
/// on our own mount before it serves requests.
fn mountinfo(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let point = unescape_mountinfo(fields.get(4)?);
        (point == want).then(|| {
            (
                fields.get(sep + 1).unwrap_or(&"?").to_string(),
                fields.get(2).unwrap_or(&"?").to_string(),
            )
        })
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Unmounts a FUSE mount. `lazy` detaches it even while files are open (it goes away when they
/// are closed). As root this is umount2(2); other users go through `fusermount3 -u`.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    if try_unmount(mountpoint, lazy)? {
        return Ok(());
    }
    Err(Error::MountPoint {
        path: mountpoint.to_path_buf(),
        problem: MountProblem::FilesOpen,
    })
}

/// Like [`unmount`], but a mount that is busy (files open) is `Ok(false)` rather than an error.
pub fn try_unmount(mountpoint: &Path, lazy: bool) -> Result<bool> {
    let shown = mountpoint.display();
    let abs = absolute(mountpoint)?;
    match mount_type(&abs) {
        None => return Err(Error::InvalidArgument(format!("{shown} is not a mount point"))),
        Some(t) if !t.starts_with("fuse") => {
            return Err(Error::InvalidArgument(format!(
                "{shown} is a {t} mount, not a qeltrix (FUSE) mount"
            )))
        }
        Some(_) => {}
    }
    if crate::sys::process::is_root() {
        return match crate::sys::fs::unmount(&abs, lazy) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                Err(Error::InvalidArgument(format!("{shown}: path holds a NUL byte")))
            }
            Err(e) => Err(Error::io(format!("unmounting {shown}"), e)),
        };
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg(&abs).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::io(format!("fusermount3 is not installed: {INSTALL_HINT}"), e)
        } else {
            Error::io("running fusermount3", e)
        }
    })?;
    if out.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("busy") {
        return Ok(false);
    }
    Err(Error::io(
        format!("unmounting {shown}: {}", stderr.trim()),
        io::Error::other("fusermount3 failed"),
    ))
}

/// Turns fuser's mount failure into one that says what to do.
fn mount_error(mountpoint: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        return Error::io(
            format!(
                "mounting {}: a FUSE component is missing: {INSTALL_HINT}",
                mountpoint.display()
            ),
            e,
        );
    }
    Error::io(format!("mounting {}", mountpoint.display()), e)
}

/// Sets the kernel's readahead window for the mount (its backing device info in sysfs). Must not
/// touch the mount: it runs before the session serves requests.
fn set_kernel_readahead(mountpoint: &Path, kib: u32) -> io::Result<()> {
    let (_, dev) = mountinfo(mountpoint).ok_or_else(|| io::Error::other("not in mountinfo"))?;
    std::fs::write(format!("/sys/class/bdi/{dev}/read_ahead_kb"), kib.to_string())
}

/// Each opened container keeps its file open; a vault of thousands of them needs more than the
/// usual soft limit of 1024.
fn raise_open_file_limit() {
    if let Ok((soft, hard)) = crate::sys::process::open_file_limit() {
        if soft < hard {
            let _ = crate::sys::process::set_open_file_limit(hard, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fuse_pieces_say_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_fuse_at(&dir.path().join("fuse"), None, true).unwrap_err();
        assert!(e.to_string().contains("fuse3"), "{e}");
        assert!(e.to_string().contains("is missing"), "{e}");

        let dev = dir.path().join("fuse");
        std::fs::write(&dev, b"").unwrap();
        check_fuse_at(&dev, None, true).expect("root needs no fusermount3");
        let e = check_fuse_at(&dev, Some(dir.path().as_os_str()), false).unwrap_err();
        assert!(e.to_string().contains("fusermount3 is not installed"), "{e}");
        assert!(e.to_string().contains("apt-get install fuse3"), "{e}");
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape_mountinfo(r"/x\9"), b"/x\\9");
        assert!(mount_type(Path::new("/")).is_some());
    }

    #[test]
    fn mountpoint_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_mountpoint(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_mountpoint(&file).unwrap_err();
        assert!(e.to_string().contains("not a folder"), "{e}");
        let e = check_mountpoint(Path::new("/proc")).unwrap_err();
        assert!(e.to_string().contains("busy"), "{e}");
        assert_eq!(
            check_mountpoint(dir.path()).unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }
}
