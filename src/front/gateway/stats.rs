//! Gateway counters: connections (total, active), bytes in and out, blocks. Updated with relaxed
//! atomics from every connection thread and printed by a reporter thread every few seconds.

use serde::Serialize;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Counters of one server, or of one connection.
#[derive(Debug, Default)]
pub struct Stats {
    connections_total: AtomicU64,
    connections_active: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    blocks: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub connections_total: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Bytes read from clients (plaintext when encrypting, container bytes when decrypting).
    pub bytes_in: u64,
    /// Bytes written towards the output (the destination, or back to the client).
    pub bytes_out: u64,
    /// Blocks sealed (encrypting) or authenticated and decrypted (decrypting).
    pub blocks: u64,
}

impl Stats {
    /// The counters now (each read on its own, not as one atomic snapshot).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            blocks: self.blocks.load(Relaxed),
        }
    }

    /// Counts a new connection as active until the guard is dropped.
    pub(crate) fn opened(self: &Arc<Self>) -> ActiveGuard {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_active.fetch_add(1, Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

pub(crate) struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Relaxed);
    }
}

/// One connection's counters and the server's, updated together.
#[derive(Clone)]
pub(crate) struct Meter {
    pub conn: Arc<Stats>,
    pub server: Arc<Stats>,
}

impl Meter {
    pub fn new(server: &Arc<Stats>) -> Self {
        Meter {
            conn: Arc::default(),
            server: Arc::clone(server),
        }
    }
    pub fn bytes_in(&self, n: u64) {
        self.conn.bytes_in.fetch_add(n, Relaxed);
        self.server.bytes_in.fetch_add(n, Relaxed);
    }
    pub fn bytes_out(&self, n: u64) {
        self.conn.bytes_out.fetch_add(n, Relaxed);
        self.server.bytes_out.fetch_add(n, Relaxed);
    }
    pub fn blocks(&self, n: u64) {
        self.conn.blocks.fetch_add(n, Relaxed);
        self.server.blocks.fetch_add(n, Relaxed);
    }
}

/// A reader that counts what it reads as bytes in.
pub(crate) struct MeteredReader<R>(pub R, pub Meter);

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.bytes_in(n as u64);
        Ok(n)
    }
}

/// A writer that counts what it writes as bytes out.
pub(crate) struct MeteredWriter<W>(pub W, pub Meter);

impl<W: Write> Write for MeteredWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.bytes_out(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections {} total, {} active; {} bytes in, {} bytes out; {} blocks",
            self.connections_total, self.connections_active, self.bytes_in, self.bytes_out, self.blocks
        )
    }
}

/// Reports `stats` every `interval` on a background thread. As a log event (`info`, target
/// `qeltrix::gateway` or `qeltrix::sink`, by `name`), only when a counter changed since the last
/// report, so an idle server does not repeat the same line; an unchanged interval is a `debug`
/// event. With `json`, one JSON object per line on stdout every interval (a collector's samples).
pub fn spawn_reporter(
    name: &'static str,
    stats: Arc<Stats>,
    interval: Duration,
    json: bool,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("{name}-stats"))
        .spawn(move || {
            let mut last = None;
            loop {
                thread::sleep(interval);
                let s = stats.snapshot();
                if json {
                    let line = serde_json::to_string(&s).expect("stats serialize");
                    let mut out = io::stdout().lock();
                    // A closed stdout ends the reports, not the server.
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        return;
                    }
                } else if last == Some(s) {
                    super::server_event!(name, debug, "stats: unchanged");
                } else {
                    super::server_event!(
                        name,
                        info,
                        connections_total = s.connections_total,
                        connections_active = s.connections_active,
                        bytes_in = s.bytes_in,
                        bytes_out = s.bytes_out,
                        blocks = s.blocks,
                        "stats: {s}"
                    );
                }
                last = Some(s);
            }
        })
}
