//! `qeltrix watch`: every regular file under an inbox folder, at any depth, packed into a vault
//! at the mirrored path (`INBOX/a/b.txt` → `VAULT/a/b.txt.qltx`) once it is finished, and again
//! whenever it changes (docs/WATCH.md).
//!
//! - Events come from inotify (the `notify` crate, recursive); a queue overflow, a start, or a
//!   lost watch means a full rescan against the state ([`state`]), which also catches what
//!   changed while the watcher was down.
//! - When a file is finished is [`pending`]'s rule: closed after writing (or renamed in, or found
//!   quiet by a scan), then quiet for the settle time; or `max_wait` after its first change.
//! - Packing is [`ingest`]: the container is written through the storage seam and committed
//!   whole, so nothing partial is ever visible in the vault, whatever ends the process.
//! - A server's upload API is a destination too ([`upload`]).

pub mod ingest;
pub mod pending;
pub mod state;
pub mod upload;

pub use ingest::{container_path, Destination, Ingest, Outcome};
pub use state::{Record, StateStore};
pub use upload::UploadClient;

use crate::container::pipeline::WorkerPool;
use crate::{Error, PackOptions, Recipient, Result};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use pending::{Pending, Seen, Timing};
use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where a deleted file's container goes, inside the vault.
pub const TRASH: &str = ".qeltrix/trash";
/// The state is saved at most this often while files keep coming (and always when idle).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// What happens to a container when its inbox file is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDelete {
    /// Nothing: the watcher never destroys data unless told to.
    Keep,
    /// The container is removed.
    Remove,
    /// The container moves to the vault's `.qeltrix/trash/`, at the same relative path.
    Trash,
}

/// How to watch.
#[derive(Clone)]
pub struct WatchOptions {
    /// Quiet time after a file is finished.
    pub settle: Duration,
    /// Longest wait for a file that is never finished (a log held open).
    pub max_wait: Duration,
    /// Names to skip (matched against the file name and the relative path). Hidden names are
    /// always skipped: a vault never shows them.
    pub ignore: Vec<glob::Pattern>,
    /// Earlier versions kept on update (`NAME.qltx.~N~`).
    pub keep_versions: u32,
    /// The delete policy.
    pub on_delete: OnDelete,
    /// Files packed at once.
    pub jobs: usize,
    /// Scan, pack what is new, and return.
    pub once: bool,
    /// How containers are packed (`file_meta` is set per file; `pool` is made here).
    pub pack: PackOptions,
    /// How often the inbox is rescanned when inotify cannot watch it (the watch limit).
    pub poll: Duration,
}

/// The default `--ignore` patterns: partial and temporary names.
pub const DEFAULT_IGNORE: &[&str] = &["*.part", "*.tmp", "*.swp", ".#*", "*~"];

/// One thing that happened, for the log.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// What: `started`, `scanned`, `packed`, `unchanged`, `changed`, `failed`, `deleted`,
    /// `removed`, `trashed`, `rescan`, `degraded`, `stopping`, `stopped`.
    pub kind: &'static str,
    /// The inbox file (relative).
    pub path: Option<String>,
    /// Where its container is.
    pub container: Option<String>,
    /// The file's size.
    pub size: Option<u64>,
    /// Bytes stored.
    pub stored: Option<u64>,
    /// How long it took.
    pub millis: Option<u64>,
    /// Words for a person: an error, a count.
    pub message: Option<String>,
}

/// Receives the watcher's events (the CLI prints them as text or JSON lines).
pub trait Report: Send + Sync {
    /// One event.
    fn event(&self, e: Event);
}

/// Totals of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Files packed and stored.
    pub packed: u64,
    /// Files that failed (to be retried; with `--once`, not retried).
    pub failed: u64,
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Done {
        rel: PathBuf,
        failures: u32,
        started: Instant,
        result: Result<Outcome>,
    },
}

/// A watcher of one inbox into one destination.
pub struct Watch {
    inbox: PathBuf,
    ingest: Arc<Ingest>,
    state: StateStore,
    opts: WatchOptions,
}

impl Watch {
    /// Prepares to watch `inbox` (an existing folder) into `dest`, sealing every container to
    /// `keys`; content hashes are keyed with `hash_key` (see [`state`]).
    pub fn new(
        inbox: &Path,
        dest: Destination,
        state: StateStore,
        keys: Vec<Recipient>,
        hash_key: [u8; 32],
        mut opts: WatchOptions,
    ) -> Result<Self> {
        let inbox =
            std::fs::canonicalize(inbox).map_err(|e| Error::io("opening the inbox", e).in_file(inbox))?;
        if !inbox.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{}: the inbox must be a folder",
                inbox.display()
            )));
        }
        if keys.is_empty() {
            return Err(Error::InvalidArgument("no key to seal the containers to".into()));
        }
        opts.jobs = opts.jobs.max(1);
        if opts.pack.pool.is_none() {
            // One pool of sealing threads for all the files packed at once.
            let pool =
                WorkerPool::new(opts.pack.workers).map_err(|e| Error::io("starting the workers", e))?;
            opts.pack.pool = Some(pool);
        }
        let ingest = Ingest {
            inbox: inbox.clone(),
            dest,
            keys,
            pack: opts.pack.clone(),
            keep_versions: opts.keep_versions,
            hash_key,
        };
        Ok(Watch {
            inbox,
            ingest: Arc::new(ingest),
            state,
            opts,
        })
    }

    /// The inbox, as resolved.
    pub fn inbox(&self) -> &Path {
        &self.inbox
    }

    /// Whether `rel` (relative to the inbox) is skipped: a hidden component, or an ignored name.
    fn ignored(&self, rel: &Path) -> bool {
        let hidden = rel.components().any(|c| match c {
            Component::Normal(n) => n.as_encoded_bytes().first() == Some(&b'.'),
            _ => true,
        });
        if hidden {
            return true;
        }
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let path = rel.to_str().unwrap_or("");
        self.opts
            .ignore
            .iter()
            .any(|p| p.matches(name) || p.matches(path))
    }

    fn relative(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.inbox).ok()?;
        (!rel.as_os_str().is_empty()).then(|| rel.to_path_buf())
    }

    /// Watches until `stop` is set (or, with `once`, until what was found is packed).
    pub fn run(&self, report: &dyn Report, stop: &AtomicBool) -> Result<Summary> {
        let mut run = Run::new(self, report, self.state.load()?);
        let (tx, rx) = mpsc::channel::<Msg>();
        // Watch before the first scan: what changes during the scan is seen either way.
        let _inotify = if self.opts.once {
            None
        } else {
            let events = tx.clone();
            let watcher = notify::RecommendedWatcher::new(
                move |e| {
                    let _ = events.send(Msg::Fs(e));
                },
                notify::Config::default().with_follow_symlinks(false),
            )
            .and_then(|mut w| w.watch(&self.inbox, RecursiveMode::Recursive).map(|()| w));
            match watcher {
                Ok(w) => Some(w),
                Err(e) => {
                    run.degraded(&e);
                    None
                }
            }
        };
        report.event(Event {
            kind: "started",
            path: Some(self.inbox.display().to_string()),
            message: Some(format!(
                "{} file(s) in the state at {}",
                run.records.len(),
                self.state.display()
            )),
            ..Event::default()
        });
        run.full_scan();

        let jobs = self.jobs(tx.clone());
        let mut stopping = false;
        loop {
            if !stopping && stop.load(Ordering::Relaxed) {
                stopping = true;
                report.event(Event {
                    kind: "stopping",
                    message: Some(format!(
                        "finishing the {} file(s) being packed; no new one is started",
                        run.in_flight.len()
                    )),
                    ..Event::default()
                });
            }
            let now = Instant::now();
            // Scans asked for by new folders.
            let (due_scans, later): (Vec<_>, Vec<_>) = run.scans.drain(..).partition(|(at, _)| *at <= now);
            run.scans = later;
            for (_, folder) in due_scans {
                run.scan(&folder);
            }
            if run.poll.is_some_and(|at| at <= now) {
                run.full_scan();
            }
            // Start what is due, as far as the job slots allow.
            let mut free = self.opts.jobs.saturating_sub(run.in_flight.len());
            while free > 0 && !stop.load(Ordering::Relaxed) {
                let Some((rel, failures)) = run.pending.pop_due(now, self.opts.once) else {
                    break;
                };
                if run.in_flight.contains(&rel) {
                    // Being packed: looked at again when that ends.
                    run.deferred.insert(rel);
                    continue;
                }
                run.in_flight.insert(rel.clone());
                free -= 1;
                let previous = run.records.get(&key_of(&rel)).cloned();
                jobs.send((rel, failures, previous));
            }
            let idle = run.in_flight.is_empty() && (run.pending.is_empty() || stop.load(Ordering::Relaxed));
            if run.dirty && (idle || run.last_save.elapsed() >= SAVE_EVERY) {
                run.save();
            }
            if idle && (self.opts.once || stop.load(Ordering::Relaxed)) {
                break;
            }
            // Sleep until the next thing to do, or an event. With every job slot taken, a due
            // file waits for a job to end, which is a message: no need to wake for it.
            let mut wake = if run.in_flight.len() < self.opts.jobs {
                run.pending.next_due()
            } else {
                None
            };
            for at in run.scans.iter().map(|(at, _)| *at).chain(run.poll) {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            if run.dirty {
                let at = run.last_save + SAVE_EVERY;
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            let now = Instant::now();
            let wait = wake
                .map_or(Duration::from_millis(500), |at| at.saturating_duration_since(now))
                .clamp(Duration::from_millis(1), Duration::from_millis(500));
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    run.handle(msg);
                    // Take everything queued before deciding what is due.
                    while let Ok(msg) = rx.try_recv() {
                        run.handle(msg);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        run.save();
        report.event(Event {
            kind: "stopped",
            message: Some(format!(
                "{} packed, {} failed",
                run.summary.packed, run.summary.failed
            )),
            ..Event::default()
        });
        Ok(run.summary)
    }

    /// Starts the packing threads; each sends its result back as a [`Msg::Done`].
    fn jobs(&self, done: mpsc::Sender<Msg>) -> Jobs {
        let (tx, rx) = mpsc::channel::<(PathBuf, u32, Option<Record>)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..self.opts.jobs {
            let rx = Arc::clone(&rx);
            let done = done.clone();
            let ingest = Arc::clone(&self.ingest);
            let _ = std::thread::Builder::new()
                .name(format!("qeltrix-watch-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((rel, failures, previous)) = job else {
                        return;
                    };
                    let started = Instant::now();
                    let result = crate::catch_panic(None, || ingest.run(&rel, previous.as_ref()));
                    if done
                        .send(Msg::Done {
                            rel,
                            failures,
                            started,
                            result,
                        })
                        .is_err()
                    {
                        return;
                    }
                });
        }
        Jobs(tx)
    }
}

struct Jobs(mpsc::Sender<(PathBuf, u32, Option<Record>)>);

impl Jobs {
    fn send(&self, job: (PathBuf, u32, Option<Record>)) {
        let _ = self.0.send(job);
    }
}

/// The state's key for a relative path: `/`-separated.
fn key_of(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// One run's mutable state, owned by the loop.
struct Run<'a> {
    watch: &'a Watch,
    report: &'a dyn Report,
    records: BTreeMap<String, Record>,
    pending: Pending,
    in_flight: HashSet<PathBuf>,
    /// Files that came due while being packed: looked at again when that ends.
    deferred: HashSet<PathBuf>,
    dirty: bool,
    last_save: Instant,
    summary: Summary,
    /// Folders to scan (again) at a time: a new folder, once its watch surely exists.
    scans: Vec<(Instant, PathBuf)>,
    /// Without inotify: the next full rescan.
    poll: Option<Instant>,
}

impl<'a> Run<'a> {
    fn new(watch: &'a Watch, report: &'a dyn Report, records: BTreeMap<String, Record>) -> Self {
        Run {
            watch,
            report,
            records,
            pending: Pending::new(Timing {
                settle: watch.opts.settle,
                max_wait: watch.opts.max_wait,
            }),
            in_flight: HashSet::new(),
            deferred: HashSet::new(),
            dirty: false,
            last_save: Instant::now(),
            summary: Summary::default(),
            scans: Vec::new(),
            poll: None,
        }
    }

    fn save(&mut self) {
        match self.watch.state.save(&self.records) {
            Ok(()) => self.dirty = false,
            Err(e) => self.report.event(Event {
                kind: "failed",
                message: Some(format!("saving the state: {e}")),
                ..Event::default()
            }),
        }
        self.last_save = Instant::now();
    }

    /// inotify is unavailable or lost: report it, and rescan every `poll`.
    fn degraded(&mut self, e: &notify::Error) {
        let why = match e.kind {
            notify::ErrorKind::MaxFilesWatch => "the inotify watch limit is reached: raise it with \
                 `sysctl fs.inotify.max_user_watches=1048576` (and in /etc/sysctl.d/ to keep it)"
                .to_string(),
            _ => format!("inotify failed: {e}"),
        };
        self.report.event(Event {
            kind: "degraded",
            message: Some(format!(
                "{why}; rescanning the inbox every {} s instead",
                self.watch.opts.poll.as_secs_f64()
            )),
            ..Event::default()
        });
        self.poll = Some(Instant::now() + self.watch.opts.poll);
    }

    /// Scans the whole inbox, and applies the delete policy to recorded files that are gone.
    fn full_scan(&mut self) {
        let mut found = HashSet::new();
        let count = self.walk(Path::new(""), &mut found);
        let gone: Vec<String> = self
            .records
            .keys()
            .filter(|k| !found.contains(*k) && !self.in_flight.contains(Path::new(k.as_str())))
            .cloned()
            .collect();
        for k in gone {
            self.deleted(Path::new(&k));
        }
        self.report.event(Event {
            kind: "scanned",
            message: Some(format!(
                "{count} file(s) in the inbox, {} to pack",
                self.pending.len()
            )),
            ..Event::default()
        });
        if self.poll.is_some() {
            self.poll = Some(Instant::now() + self.watch.opts.poll);
        }
    }

    /// Scans the folder `rel` (a new one: files may have been written into it before its watch
    /// existed).
    fn scan(&mut self, rel: &Path) {
        let mut found = HashSet::new();
        self.walk(rel, &mut found);
    }

    /// Walks `rel`, noting each file not stored as it is now; returns the count of files seen.
    fn walk(&mut self, rel: &Path, found: &mut HashSet<String>) -> usize {
        let mut count = 0;
        let mut stack = vec![rel.to_path_buf()];
        let now = Instant::now();
        let wall = SystemTime::now();
        while let Some(dir) = stack.pop() {
            let full = self.watch.inbox.join(&dir);
            let entries = match std::fs::read_dir(&full) {
                Ok(e) => e,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        self.report.event(Event {
                            kind: "failed",
                            path: Some(key_of(&dir)),
                            message: Some(format!("listing {}: {e}", full.display())),
                            ..Event::default()
                        });
                    }
                    continue;
                }
            };
            for entry in entries.flatten() {
                let child = dir.join(entry.file_name());
                if self.watch.ignored(&child) {
                    continue;
                }
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(child);
                } else if ft.is_file() {
                    count += 1;
                    let key = key_of(&child);
                    found.insert(key.clone());
                    let Ok(md) = entry.metadata() else { continue };
                    use std::os::unix::fs::MetadataExt;
                    let mtime_ns = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
                    let stored = self
                        .records
                        .get(&key)
                        .is_some_and(|r| r.size == md.size() && r.mtime_ns == mtime_ns);
                    if !stored && !self.in_flight.contains(&child) {
                        let age = md
                            .modified()
                            .ok()
                            .and_then(|m| wall.duration_since(m).ok())
                            .unwrap_or_default();
                        let quiet_since = now.checked_sub(age).unwrap_or(now);
                        self.pending.found(&child, quiet_since, now);
                    }
                }
            }
        }
        count
    }

    /// The inbox file `rel` is gone.
    fn deleted(&mut self, rel: &Path) {
        self.pending.forget(rel);
        if self.records.remove(&key_of(rel)).is_none() {
            return;
        }
        self.dirty = true;
        let policy = self.watch.opts.on_delete;
        let (kind, result) = match policy {
            OnDelete::Keep => ("deleted", Ok(None)),
            OnDelete::Remove => ("removed", self.watch.ingest.delete(rel, policy)),
            OnDelete::Trash => ("trashed", self.watch.ingest.delete(rel, policy)),
        };
        match result {
            Ok(container) => self.report.event(Event {
                kind,
                path: Some(key_of(rel)),
                container,
                message: (policy == OnDelete::Keep)
                    .then(|| "its container is kept (--on-delete keep)".into()),
                ..Event::default()
            }),
            Err(e) => self.report.event(Event {
                kind: "failed",
                path: Some(key_of(rel)),
                message: Some(e.to_string()),
                ..Event::default()
            }),
        }
    }

    /// Everything recorded at or under `rel` is gone (a folder removed or renamed away).
    fn deleted_under(&mut self, rel: &Path) {
        self.pending.forget_under(rel);
        let under: Vec<String> = self
            .records
            .keys()
            .filter(|k| Path::new(k.as_str()).starts_with(rel))
            .cloned()
            .collect();
        for k in under {
            self.deleted(Path::new(&k));
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Fs(Ok(event)) => self.fs_event(event),
            Msg::Fs(Err(e)) => self.degraded(&e),
            Msg::Done {
                rel,
                failures,
                started,
                result,
            } => self.done(rel, failures, started, result),
        }
    }

    fn fs_event(&mut self, event: notify::Event) {
        if event.need_rescan() {
            self.report.event(Event {
                kind: "rescan",
                message: Some("the kernel's event queue overflowed: rescanning the inbox".into()),
                ..Event::default()
            });
            self.full_scan();
            return;
        }
        let now = Instant::now();
        for path in &event.paths {
            let Some(rel) = self.watch.relative(path) else {
                continue;
            };
            if self.watch.ignored(&rel) {
                continue;
            }
            match event.kind {
                EventKind::Create(CreateKind::Folder) => self.new_folder(&rel, now),
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) if !path.is_dir() => {
                    self.pending.seen(&rel, Seen::Written, now);
                }
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    self.pending.seen(&rel, Seen::Finished, now);
                }
                // A touch or a chmod: looked at once it settles (the state tells whether the
                // content changed).
                EventKind::Modify(ModifyKind::Metadata(_)) if path.is_file() => {
                    self.pending.found(&rel, now, now);
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    if path.is_dir() {
                        self.new_folder(&rel, now);
                    } else {
                        // Renamed into place: an atomic save, or a file moved in. Finished.
                        self.pending.seen(&rel, Seen::Finished, now);
                    }
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                    if matches!(event.kind, EventKind::Remove(RemoveKind::File)) {
                        self.deleted(&rel);
                    } else {
                        self.deleted(&rel);
                        self.deleted_under(&rel);
                    }
                }
                _ => {}
            }
        }
    }

    /// A folder appeared (made, or moved in): scan it now, and once more after the settle time,
    /// by when its watch exists for sure.
    fn new_folder(&mut self, rel: &Path, now: Instant) {
        self.scan(rel);
        self.scans.push((
            now + self.watch.opts.settle.max(Duration::from_millis(50)),
            rel.to_path_buf(),
        ));
    }

    fn done(&mut self, rel: PathBuf, failures: u32, started: Instant, result: Result<Outcome>) {
        self.in_flight.remove(&rel);
        if self.deferred.remove(&rel) {
            self.pending.seen(&rel, Seen::Finished, Instant::now());
        }
        let key = key_of(&rel);
        let millis = Some(started.elapsed().as_millis() as u64);
        match result {
            Ok(Outcome::Stored { record, stored }) => {
                self.summary.packed += 1;
                self.report.event(Event {
                    kind: "packed",
                    path: Some(key.clone()),
                    container: Some(self.watch.ingest.dest.display(&container_path(&rel))),
                    size: Some(record.size),
                    stored: Some(stored),
                    millis,
                    message: None,
                });
                self.records.insert(key, record);
                self.dirty = true;
            }
            Ok(Outcome::Unchanged(record)) => {
                if self.records.get(&key) != Some(&record) {
                    self.records.insert(key.clone(), record);
                    self.dirty = true;
                }
                self.report.event(Event {
                    kind: "unchanged",
                    path: Some(key),
                    millis,
                    ..Event::default()
                });
            }
            Ok(Outcome::Changed) => {
                self.report.event(Event {
                    kind: "changed",
                    path: Some(key),
                    message: Some(
                        "changed while packed: nothing stored; packed again once it settles".into(),
                    ),
                    ..Event::default()
                });
                self.pending.seen(&rel, Seen::Finished, Instant::now());
            }
            Ok(Outcome::Vanished) => self.deleted(&rel),
            Err(e) => {
                self.summary.failed += 1;
                let message = if self.watch.opts.once {
                    e.to_string()
                } else {
                    let pause = self.pending.retry(&rel, failures, Instant::now());
                    format!("{e} (trying again in {} s)", pause.as_secs())
                };
                self.report.event(Event {
                    kind: "failed",
                    path: Some(key),
                    message: Some(message),
                    millis,
                    ..Event::default()
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyFileKey;
    use crate::storage::LocalStorage;

    struct Quiet;
    impl Report for Quiet {
        fn event(&self, _: Event) {}
    }

    fn watch(dir: &Path) -> Watch {
        std::fs::create_dir_all(dir.join("inbox/sub")).unwrap();
        std::fs::create_dir_all(dir.join("vault")).unwrap();
        let storage: Arc<dyn crate::storage::Storage> =
            Arc::new(LocalStorage::new(dir.join("vault")).unwrap());
        let key = crate::Key::KeyFile(KeyFileKey::from_bytes([7; 32]));
        Watch::new(
            &dir.join("inbox"),
            Destination::Vault(Arc::clone(&storage)),
            StateStore::new(storage, state::VAULT_STATE),
            vec![Recipient::try_from(key).unwrap()],
            [1; 32],
            WatchOptions {
                settle: Duration::from_millis(100),
                max_wait: Duration::from_secs(60),
                ignore: DEFAULT_IGNORE
                    .iter()
                    .map(|p| glob::Pattern::new(p).unwrap())
                    .collect(),
                keep_versions: 0,
                on_delete: OnDelete::Keep,
                jobs: 1,
                once: true,
                pack: PackOptions::default(),
                poll: Duration::from_secs(30),
            },
        )
        .unwrap()
    }

    #[test]
    fn a_queue_overflow_rescans_the_inbox_and_finds_what_no_event_reported() {
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path());
        let mut run = Run::new(&w, &Quiet, BTreeMap::new());
        // Written while the kernel's queue overflowed: no event for them reached the watcher.
        std::fs::write(dir.path().join("inbox/sub/lost.txt"), b"lost event").unwrap();
        std::fs::write(dir.path().join("inbox/sub/x.part"), b"partial").unwrap();
        assert!(run.pending.is_empty());
        run.fs_event(notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan));
        let due: Vec<_> = std::iter::from_fn(|| run.pending.pop_due(Instant::now(), true)).collect();
        assert_eq!(
            due,
            [(PathBuf::from("sub/lost.txt"), 0)],
            "found, and the partial name skipped"
        );
    }

    #[test]
    fn hidden_and_ignored_names_are_skipped_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path());
        for skipped in [
            ".hidden",
            "a/.git/config",
            "a/b.tmp",
            "a/.#lock",
            "notes~",
            "x.swp",
            "dl.part",
        ] {
            assert!(w.ignored(Path::new(skipped)), "{skipped}");
        }
        for packed in ["a/b.txt", "photo.jpg", "a.qltx", "part"] {
            assert!(!w.ignored(Path::new(packed)), "{packed}");
        }
    }
}
