//! When a file is finished: the rules, as pure functions of events and times.
//!
//! A file is due once it was closed after writing (or renamed in, or found by a scan) and then
//! stayed quiet for the settle time; a file written again is no longer closed. A file that is
//! never closed (a log held open) is due `max_wait` after its first unpacked change.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What happened to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Created or written: someone has it open for writing.
    Written,
    /// Closed after writing, renamed into the inbox, or found by a scan with nothing writing it.
    Finished,
}

#[derive(Clone, Debug)]
struct File {
    closed: bool,
    /// The first change not yet packed.
    first: Instant,
    /// The latest event.
    last: Instant,
    /// After a failure: not before this.
    retry_at: Option<Instant>,
    failures: u32,
    /// When it becomes due, as filed in [`Pending::order`].
    due: Instant,
}

/// The files waiting to be packed, in the order they become due: taking the due ones costs
/// O(log n) each, however many wait (a million files dropped at once).
#[derive(Debug)]
pub struct Pending {
    timing: Timing,
    files: HashMap<PathBuf, File>,
    order: BTreeSet<(Instant, PathBuf)>,
}

/// The timing rules.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Quiet time after a file is finished.
    pub settle: Duration,
    /// Longest wait for a file that is never finished.
    pub max_wait: Duration,
}

impl Timing {
    /// When `file` becomes due (given nothing else happens).
    fn due(&self, file: &File) -> Instant {
        let finished = if file.closed {
            file.last + self.settle
        } else {
            file.first + self.max_wait
        };
        let capped = finished.min(file.first + self.max_wait);
        match file.retry_at {
            Some(r) => capped.max(r),
            None => capped,
        }
    }
}

impl Pending {
    /// Nothing waiting yet.
    pub fn new(timing: Timing) -> Self {
        Pending {
            timing,
            files: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Files `path` (new or changed) under its due time.
    fn file(&mut self, path: &Path, change: impl FnOnce(Option<File>) -> File) {
        let old = self.files.remove(path);
        if let Some(o) = &old {
            self.order.remove(&(o.due, path.to_path_buf()));
        }
        let mut file = change(old);
        file.due = self.timing.due(&file);
        self.order.insert((file.due, path.to_path_buf()));
        self.files.insert(path.to_path_buf(), file);
    }

    fn fresh(now: Instant) -> File {
        File {
            closed: false,
            first: now,
            last: now,
            retry_at: None,
            failures: 0,
            due: now,
        }
    }

    /// Notes an event on `path` at `now`.
    pub fn seen(&mut self, path: &Path, what: Seen, now: Instant) {
        self.file(path, |old| {
            let mut f = old.unwrap_or_else(|| Pending::fresh(now));
            f.last = now;
            f.closed = what == Seen::Finished;
            f
        });
    }

    /// Notes a file found finished by a scan, quiet since `quiet_since` (its mtime, as an
    /// instant): one not changed for the settle time is due at once.
    pub fn found(&mut self, path: &Path, quiet_since: Instant, now: Instant) {
        if self.files.contains_key(path) {
            return;
        }
        let at = quiet_since.min(now);
        self.file(path, |_| File {
            closed: true,
            ..Pending::fresh(at)
        });
    }

    /// Forgets `path` (removed, renamed away, or taken for packing).
    pub fn forget(&mut self, path: &Path) -> bool {
        match self.files.remove(path) {
            Some(f) => {
                self.order.remove(&(f.due, path.to_path_buf()));
                true
            }
            None => false,
        }
    }

    /// Forgets every file at or under `folder`.
    pub fn forget_under(&mut self, folder: &Path) {
        let under: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.starts_with(folder))
            .cloned()
            .collect();
        for p in under {
            self.forget(&p);
        }
    }

    /// Puts `path` back after a failure, to be tried again after a growing pause (1 s doubling
    /// up to 5 min). Returns the pause.
    pub fn retry(&mut self, path: &Path, failures: u32, now: Instant) -> Duration {
        let pause = Duration::from_secs(1 << failures.min(8)).min(Duration::from_secs(300));
        self.file(path, |old| {
            let mut f = old.unwrap_or_else(|| Pending::fresh(now));
            f.closed = true;
            f.failures = failures + 1;
            f.retry_at = Some(now + pause);
            f
        });
        pause
    }

    /// The first file due at `now` (all of them, whatever their time, when `all`), removed
    /// from the waiting set, with its count of failures so far.
    pub fn pop_due(&mut self, now: Instant, all: bool) -> Option<(PathBuf, u32)> {
        let (due, path) = self.order.first()?.clone();
        if due > now && !all {
            return None;
        }
        self.order.remove(&(due, path.clone()));
        let failures = self.files.remove(&path).map_or(0, |f| f.failures);
        Some((path, failures))
    }

    /// The earliest time a waiting file becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.order.first().map(|(due, _)| *due)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(p: &mut Pending, now: Instant) -> Vec<(PathBuf, u32)> {
        std::iter::from_fn(|| p.pop_due(now, false)).collect()
    }

    const T: Timing = Timing {
        settle: Duration::from_millis(500),
        max_wait: Duration::from_secs(60),
    };

    #[test]
    fn a_file_is_due_only_after_it_is_closed_and_quiet() {
        let t0 = Instant::now();
        let mut p = Pending::new(T);
        let a = Path::new("a");
        p.seen(a, Seen::Written, t0);
        assert!(
            take(&mut p, t0 + Duration::from_secs(30)).is_empty(),
            "open: waits"
        );
        p.seen(a, Seen::Finished, t0 + Duration::from_secs(30));
        assert!(
            take(&mut p, t0 + Duration::from_millis(30_400)).is_empty(),
            "settling"
        );
        assert_eq!(take(&mut p, t0 + Duration::from_millis(30_500)), [(a.into(), 0)]);
        assert!(p.is_empty());
    }

    #[test]
    fn writing_again_after_a_close_waits_for_the_next_close() {
        let t0 = Instant::now();
        let mut p = Pending::new(T);
        let a = Path::new("a");
        p.seen(a, Seen::Finished, t0);
        p.seen(a, Seen::Written, t0 + Duration::from_millis(100));
        assert!(take(&mut p, t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(p.next_due(), Some(t0 + T.max_wait));
    }

    #[test]
    fn a_file_held_open_is_due_after_max_wait_even_while_written() {
        let t0 = Instant::now();
        let mut p = Pending::new(T);
        let log = Path::new("log");
        p.seen(log, Seen::Written, t0);
        p.seen(log, Seen::Written, t0 + Duration::from_secs(59));
        assert!(take(&mut p, t0 + Duration::from_millis(59_999)).is_empty());
        assert_eq!(take(&mut p, t0 + T.max_wait).len(), 1);
    }

    #[test]
    fn a_quiet_file_found_by_a_scan_is_due_at_once_and_a_failure_waits_longer_each_time() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut p = Pending::new(T);
        let a = Path::new("d/a");
        p.found(a, t0 - Duration::from_secs(5), t0);
        assert_eq!(take(&mut p, t0), [(a.into(), 0)]);
        assert_eq!(p.retry(a, 0, t0), Duration::from_secs(1));
        assert!(take(&mut p, t0 + Duration::from_millis(999)).is_empty());
        let again = take(&mut p, t0 + Duration::from_secs(1));
        assert_eq!(again, [(a.into(), 1)]);
        assert_eq!(p.retry(a, 1, t0), Duration::from_secs(2));
        p.forget_under(Path::new("d"));
        assert!(p.is_empty());
    }
}
