//! Change detection: containers added, replaced or removed in the vault while it is mounted.
//!
//! Where the kernel allows, inotify (through `notify`) watches the vault folder recursively, and
//! each burst of events becomes one rescan of the whole vault. A rescan is incremental (only
//! containers whose [`Version`](crate::storage::Version) changed are read again), so rescanning
//! on any event costs a listing of the folders and is simpler and safer than mapping events to
//! paths: whatever form a change takes (rename over, rewrite in place, a folder moved in), the
//! rescan sees the result.
//!
//! Events can be lost: the kernel's queue can overflow (reported, and answered with a rescan), and
//! a folder can be filled before its own watch is added. So a slow periodic rescan runs as a
//! safety net. Where inotify cannot be used (the watch limit `fs.inotify.max_user_watches` is
//! reached, also later when a new folder cannot be watched; a file system without inotify), the
//! vault is polled instead, as often as [`MountOptions::rescan_interval`](super::MountOptions)
//! says, and a log line says so.

use super::fs::MountState;
use super::tree::Scanner;
use crate::vault::naming::is_reserved;
use fuser::{INodeNo, Notifier};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A burst of events (a pack renaming its output into place, a copy of many files) is over when
/// the vault has been quiet this long.
const QUIET: Duration = Duration::from_millis(50);

/// A steady stream of events (something rewriting a file for minutes) still gets a rescan this
/// often.
const MAX_SETTLE: Duration = Duration::from_millis(500);

/// What wakes the watcher thread.
pub(super) enum Wake {
    /// The mount is ending.
    Stop,
    /// Something in the vault changed (or events were lost): rescan.
    Changed,
    /// inotify stopped working (the watch limit was reached when a new folder appeared, or the
    /// queue could not be read): poll from now on.
    Lost(String),
}

/// Tells the watcher thread to end when dropped (when the mount ends, or is dropped unrun).
pub(super) struct StopWatcher(pub mpsc::Sender<Wake>);

impl Drop for StopWatcher {
    fn drop(&mut self) {
        let _ = self.0.send(Wake::Stop);
    }
}

/// How often the vault is rescanned: when polling, and as the safety net under inotify.
#[derive(Clone, Copy, Debug)]
pub(super) struct Intervals {
    pub poll: Duration,
    pub safety: Duration,
}

/// The watcher thread's state: what it scans and whom it tells.
pub(super) struct VaultWatcher {
    pub shared: Arc<MountState>,
    pub scanner: Scanner,
    pub notifier: Notifier,
    /// Problems already logged (each is logged once).
    reported: HashSet<String>,
}

impl VaultWatcher {
    pub fn new(shared: Arc<MountState>, scanner: Scanner, notifier: Notifier) -> Self {
        VaultWatcher {
            shared,
            scanner,
            notifier,
            reported: HashSet::new(),
        }
    }

    /// Watches the vault until told to stop. `wakes` is the thread's queue; `sender` feeds it,
    /// and is handed to inotify's event handler.
    pub fn run(mut self, wakes: mpsc::Receiver<Wake>, sender: mpsc::Sender<Wake>, every: Intervals) {
        let root = self.scanner.root().to_path_buf();
        let local = self.scanner.vault().storage().is_local();
        let watched = if local {
            watch_events(&root, sender)
        } else {
            Err(notify::Error::generic("it is not on the local disk"))
        };
        let mut inotify = match watched {
            Ok(w) => {
                tracing::debug!(
                    target: "qeltrix::mount",
                    "watching {} for changes with inotify; full rescan every {:?}",
                    root.display(),
                    every.safety
                );
                Some(w)
            }
            Err(_) if !local => {
                tracing::debug!(
                    target: "qeltrix::mount",
                    "{} is remote: listing it again every {:?}",
                    root.display(),
                    every.poll
                );
                None
            }
            Err(e) => {
                poll_instead(&root, &e.to_string(), every.poll);
                None
            }
        };
        // Whatever changed since the vault was first scanned (before the key was asked for) and
        // before the watch was in place.
        self.rescan();
        loop {
            let period = if inotify.is_some() {
                every.safety
            } else {
                every.poll
            };
            match wakes.recv_timeout(period) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Wake::Changed) => {
                    if !settle(&wakes, &mut inotify, &root, every.poll) {
                        return;
                    }
                }
                Ok(Wake::Lost(why)) => {
                    if inotify.take().is_some() {
                        poll_instead(&root, &why, every.poll);
                    }
                }
            }
            self.rescan();
        }
    }

    /// Rescans the vault, and tells the kernel which names and pages went stale.
    fn rescan(&mut self) {
        let scan = match self.scanner.scan() {
            Ok(scan) => scan,
            Err(e) => {
                let msg = format!("cannot scan the vault {}: {e}", self.scanner.root().display());
                if self.reported.insert(msg.clone()) {
                    super::log(&msg);
                }
                return;
            }
        };
        for p in self.scanner.problems.drain(..) {
            if self.reported.insert(p.clone()) {
                super::log(&p);
            }
        }
        let changes = self
            .shared
            .tree
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(scan);
        // After the lock is released: the kernel may call back into the filesystem.
        let mut parents = HashSet::new();
        for (parent, name) in &changes.entries {
            let _ = self.notifier.inval_entry(INodeNo(*parent), name);
            parents.insert(*parent);
        }
        for parent in parents {
            let _ = self.notifier.inval_inode(INodeNo(parent), -1, 0);
        }
        for ino in changes.inodes {
            let _ = self.notifier.inval_inode(INodeNo(ino), 0, 0);
        }
    }
}

/// Waits until a burst of events is over (no event for [`QUIET`], or [`MAX_SETTLE`] since it
/// began). False if the mount is ending.
fn settle(
    wakes: &mpsc::Receiver<Wake>,
    inotify: &mut Option<notify::RecommendedWatcher>,
    root: &Path,
    poll: Duration,
) -> bool {
    let began = Instant::now();
    loop {
        let left = MAX_SETTLE.saturating_sub(began.elapsed());
        if left.is_zero() {
            return true;
        }
        match wakes.recv_timeout(QUIET.min(left)) {
            Ok(Wake::Changed) => {}
            Ok(Wake::Lost(why)) => {
                if inotify.take().is_some() {
                    poll_instead(root, &why, poll);
                }
            }
            Err(RecvTimeoutError::Timeout) => return true,
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

fn poll_instead(root: &Path, why: &str, poll: Duration) {
    tracing::info!(
        target: "qeltrix::mount",
        "cannot watch {} with inotify ({why}): rescanning it every {poll:?} instead",
        root.display()
    );
}

/// Starts inotify on the whole vault; its events become [`Wake`]s on `sender`.
fn watch_events(root: &Path, sender: mpsc::Sender<Wake>) -> notify::Result<notify::RecommendedWatcher> {
    // The test suite's way to reach the fallback (test-hooks builds only).
    if cfg!(feature = "test-hooks") && std::env::var_os("QELTRIX_TEST_NO_INOTIFY").is_some() {
        return Err(notify::Error::generic("turned off by QELTRIX_TEST_NO_INOTIFY"));
    }
    let top = root.to_path_buf();
    let handler = move |event: notify::Result<notify::Event>| {
        let wake = match event {
            Ok(e) if e.need_rescan() => {
                tracing::debug!(target: "qeltrix::mount", "inotify lost events: rescanning");
                Wake::Changed
            }
            Ok(e) if !matters(&top, &e) => return,
            Ok(_) => Wake::Changed,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                Wake::Lost(format!("{e} (raise fs.inotify.max_user_watches)"))
            }
            Err(e) => Wake::Lost(e.to_string()),
        };
        let _ = sender.send(wake);
    };
    // Links are not followed: the vault does not follow linked folders either, and a link to `/`
    // would otherwise put a watch on every folder of the system.
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(handler, config)?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Whether an event can change what the mount shows. Opening and reading files (the mount's own
/// reads, a scan listing a folder) cannot, nor anything under a reserved name (a writer's
/// `.qeltrix-*.part` temporary file, the keyring); its rename to a shown name is an event of its own.
fn matters(root: &Path, event: &notify::Event) -> bool {
    let access_only = matches!(event.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write));
    !access_only && (event.paths.is_empty() || event.paths.iter().any(|p| shown(root, p)))
}

/// False for a path under a reserved name in the vault (the mount shows dot names).
fn shown(root: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    !rel.components()
        .enumerate()
        .any(|(i, c)| matches!(c, Component::Normal(n) if is_reserved(n.as_bytes(), i == 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};
    use std::path::PathBuf;

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        e.paths = paths.iter().map(PathBuf::from).collect();
        e
    }

    #[test]
    fn reads_and_reserved_names_do_not_wake_the_watcher() {
        let root = Path::new("/v");
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let create = EventKind::Create(CreateKind::File);
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(!matters(root, &event(open, &["/v/a.qltx"])));
        assert!(!matters(root, &event(open, &["/v"])));
        assert!(matters(root, &event(written, &["/v/a.qltx"])));
        assert!(matters(root, &event(create, &["/v/d/a.qltx"])));
        assert!(!matters(root, &event(modify, &["/v/.qeltrix-01.part"])));
        assert!(
            matters(root, &event(modify, &["/v/.profile.qltx"])),
            "dot names are shown"
        );
        assert!(!matters(root, &event(create, &["/v/.qeltrix/keyring"])));
        assert!(matters(
            root,
            &event(modify, &["/v/.qeltrix-01.part", "/v/a.qltx"])
        ));
        assert!(matters(root, &event(modify, &[])));
        assert!(matters(root, &event(modify, &["/v"])));
    }
}
