//! When a file is finished: the rules, as pure functions of events and times.
//!
//! A file is due once it was closed after writing (or renamed in, or found by a scan) and then
//! stayed quiet for the settle time; a file written again is no longer closed. A file that is
//! never closed (a log held open) is due `max_wait` after its first unpacked change.

use std::collections::HashMap;
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
}

/// The files waiting to be packed.
#[derive(Debug, Default)]
pub struct Pending {
    files: HashMap<PathBuf, File>,
}

/// The timing rules.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Quiet time after a file is finished.
    pub settle: Duration,
    /// Longest wait for a file that is never finished.
    pub max_wait: Duration,
}

impl Pending {
    /// Notes an event on `path` at `now`.
    pub fn seen(&mut self, path: &Path, what: Seen, now: Instant) {
        let file = self.files.entry(path.to_path_buf()).or_insert(File {
            closed: false,
            first: now,
            last: now,
            retry_at: None,
            failures: 0,
        });
        file.last = now;
        file.closed = what == Seen::Finished;
    }

    /// Notes a file found finished by a scan, quiet since `quiet_since` (its mtime, as an
    /// instant): one not changed for the settle time is due at once.
    pub fn found(&mut self, path: &Path, quiet_since: Instant, now: Instant) {
        if self.files.contains_key(path) {
            return;
        }
        self.files.insert(
            path.to_path_buf(),
            File {
                closed: true,
                first: quiet_since.min(now),
                last: quiet_since.min(now),
                retry_at: None,
                failures: 0,
            },
        );
    }

    /// Forgets `path` (removed, renamed away, or taken for packing).
    pub fn forget(&mut self, path: &Path) -> bool {
        self.files.remove(path).is_some()
    }

    /// Forgets every file at or under `folder`.
    pub fn forget_under(&mut self, folder: &Path) {
        self.files.retain(|p, _| !p.starts_with(folder));
    }

    /// Puts `path` back after a failure, to be tried again after a growing pause (1 s doubling
    /// up to 5 min). Returns the pause.
    pub fn retry(&mut self, path: &Path, failures: u32, now: Instant) -> Duration {
        let pause = Duration::from_secs(1 << failures.min(8)).min(Duration::from_secs(300));
        let file = self.files.entry(path.to_path_buf()).or_insert(File {
            closed: true,
            first: now,
            last: now,
            retry_at: None,
            failures: 0,
        });
        file.closed = true;
        file.failures = failures + 1;
        file.retry_at = Some(now + pause);
        pause
    }

    /// How many failures `path` has had in a row.
    pub fn failures(&self, path: &Path) -> u32 {
        self.files.get(path).map_or(0, |f| f.failures)
    }

    /// When `path` becomes due (given nothing else happens).
    fn due_at(file: &File, t: Timing) -> Instant {
        let finished = if file.closed {
            file.last + t.settle
        } else {
            file.first + t.max_wait
        };
        let capped = finished.min(file.first + t.max_wait);
        match file.retry_at {
            Some(r) => capped.max(r),
            None => capped,
        }
    }

    /// The files due at `now`, removed from the waiting set (sorted, for a stable order).
    pub fn take_due(&mut self, t: Timing, now: Instant, limit: usize) -> Vec<(PathBuf, u32)> {
        let mut due: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, f)| Pending::due_at(f, t) <= now)
            .map(|(p, _)| p.clone())
            .collect();
        due.sort();
        due.truncate(limit);
        due.into_iter()
            .map(|p| {
                let failures = self.files.remove(&p).map_or(0, |f| f.failures);
                (p, failures)
            })
            .collect()
    }

    /// Every waiting file, now, whatever its timing (`--once`).
    pub fn take_all(&mut self, limit: usize) -> Vec<(PathBuf, u32)> {
        let mut all: Vec<PathBuf> = self.files.keys().cloned().collect();
        all.sort();
        all.truncate(limit);
        all.into_iter()
            .map(|p| {
                let failures = self.files.remove(&p).map_or(0, |f| f.failures);
                (p, failures)
            })
            .collect()
    }

    /// The earliest time a waiting file becomes due.
    pub fn next_due(&self, t: Timing) -> Option<Instant> {
        self.files.values().map(|f| Pending::due_at(f, t)).min()
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

    const T: Timing = Timing {
        settle: Duration::from_millis(500),
        max_wait: Duration::from_secs(60),
    };

    #[test]
    fn a_file_is_due_only_after_it_is_closed_and_quiet() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        let a = Path::new("a");
        p.seen(a, Seen::Written, t0);
        assert!(
            p.take_due(T, t0 + Duration::from_secs(30), 10).is_empty(),
            "open: waits"
        );
        p.seen(a, Seen::Finished, t0 + Duration::from_secs(30));
        assert!(
            p.take_due(T, t0 + Duration::from_millis(30_400), 10).is_empty(),
            "settling"
        );
        assert_eq!(
            p.take_due(T, t0 + Duration::from_millis(30_500), 10),
            [(a.into(), 0)]
        );
        assert!(p.is_empty());
    }

    #[test]
    fn writing_again_after_a_close_waits_for_the_next_close() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        let a = Path::new("a");
        p.seen(a, Seen::Finished, t0);
        p.seen(a, Seen::Written, t0 + Duration::from_millis(100));
        assert!(p.take_due(T, t0 + Duration::from_secs(5), 10).is_empty());
        assert_eq!(p.next_due(T), Some(t0 + T.max_wait));
    }

    #[test]
    fn a_file_held_open_is_due_after_max_wait_even_while_written() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        let log = Path::new("log");
        p.seen(log, Seen::Written, t0);
        p.seen(log, Seen::Written, t0 + Duration::from_secs(59));
        assert!(p.take_due(T, t0 + Duration::from_millis(59_999), 10).is_empty());
        assert_eq!(p.take_due(T, t0 + T.max_wait, 10).len(), 1);
    }

    #[test]
    fn a_quiet_file_found_by_a_scan_is_due_at_once_and_a_failure_waits_longer_each_time() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut p = Pending::default();
        let a = Path::new("d/a");
        p.found(a, t0 - Duration::from_secs(5), t0);
        assert_eq!(p.take_due(T, t0, 10), [(a.into(), 0)]);
        assert_eq!(p.retry(a, 0, t0), Duration::from_secs(1));
        assert!(p.take_due(T, t0 + Duration::from_millis(999), 10).is_empty());
        let again = p.take_due(T, t0 + Duration::from_secs(1), 10);
        assert_eq!(again, [(a.into(), 1)]);
        assert_eq!(p.retry(a, 1, t0), Duration::from_secs(2));
        p.forget_under(Path::new("d"));
        assert!(p.is_empty());
    }
}
