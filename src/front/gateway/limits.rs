//! What bounds a server's connections (gateway and sink alike): how many at once, how long one
//! may stay silent, how long its opening (token line, container header) may take, how many bytes
//! one may send, and who may connect at all (the token).
//!
//! The token wire format (docs/GATEWAY.md): before its stream a client sends one line, the
//! token's bytes followed by LF (0x0A), at most [`MAX_TOKEN_LINE`] bytes with the LF. ASCII
//! whitespace around the token (a CR before the LF) is ignored. The server answers nothing: a
//! wrong or missing token resets the connection; the right one lets the stream begin with the
//! next byte. The check is [`Token::matches`] (SHA-256 of both, compared in constant time).

use crate::{Error, Result};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Default for `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// Default for `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for `--header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `--max-size`: 64 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;
/// The longest token line a server reads, LF included.
pub const MAX_TOKEN_LINE: usize = 1024;
/// Descriptors kept free for everything but connections (listener, stdio, pipes).
const FD_RESERVE: u64 = 32;

/// How a server bounds each connection and their number.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once; more are reset as soon as they are accepted.
    pub max_connections: usize,
    /// A connection that moves no byte for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The token line (and, for the sink, the container header) must arrive within this long.
    pub header_timeout: Duration,
    /// Bytes one connection may send (`None`: no cap).
    pub max_size: Option<u64>,
    /// Clients must first send this token.
    pub token: Option<Token>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_size: Some(DEFAULT_MAX_SIZE),
            token: None,
        }
    }
}

impl Limits {
    pub(crate) fn check(&self) -> Result<()> {
        if self.max_connections == 0 {
            return Err(Error::InvalidArgument(
                "--max-connections must be at least 1".into(),
            ));
        }
        if self.header_timeout.is_zero() || self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidArgument("timeouts must be at least 1 s".into()));
        }
        Ok(())
    }
}

pub use crate::front::token::Token;

/// Sends the token line to a server.
pub(crate) fn present_token(token: &Token, out: &mut impl Write) -> io::Result<()> {
    let mut line = Zeroizing::new(Vec::with_capacity(token.secret().len() + 1));
    line.extend_from_slice(token.secret());
    line.push(b'\n');
    out.write_all(&line)
}

/// Reads a client's token line before `deadline` and checks it. The error says why it was
/// refused without repeating what the client sent.
pub(crate) fn check_token(
    token: &Token,
    conn: &TcpStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    let mut line = Zeroizing::new(Vec::with_capacity(64));
    let mut input = DeadlineReader::new(conn, deadline, timeout, "the token line");
    let mut byte = [0u8; 1];
    // One byte at a time: nothing after the LF may be consumed, it is the stream.
    loop {
        match input.read(&mut byte) {
            Ok(0) => return Err(refused("the connection ended before a token line")),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() + 1 >= MAX_TOKEN_LINE => {
                return Err(refused(format!(
                    "no token line in the first {MAX_TOKEN_LINE} bytes"
                )))
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("refused: reading the token line", e)),
        }
    }
    if token.matches(&line) {
        Ok(())
    } else {
        Err(refused("wrong token"))
    }
}

/// A connection refused before its stream: `refused: WHY` (never what the client sent).
fn refused(why: impl Into<String>) -> Error {
    Error::io(
        "refused",
        io::Error::new(io::ErrorKind::PermissionDenied, why.into()),
    )
}

/// A stream cut for its size: `cut: WHY`.
pub(crate) fn cut(why: impl Into<String>) -> Error {
    Error::io("cut", io::Error::other(why.into()))
}

/// Reads from a socket until a deadline; past it, reads fail with a `TimedOut` error naming
/// `what` and the `--header-timeout`.
pub(crate) struct DeadlineReader<'a> {
    conn: &'a TcpStream,
    deadline: Instant,
    timeout: Duration,
    what: &'static str,
}

impl<'a> DeadlineReader<'a> {
    pub fn new(conn: &'a TcpStream, deadline: Instant, timeout: Duration, what: &'static str) -> Self {
        DeadlineReader {
            conn,
            deadline,
            timeout,
            what,
        }
    }

    fn late(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{} did not arrive within {} s (--header-timeout)",
                self.what,
                self.timeout.as_secs()
            ),
        )
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.late());
            }
            self.conn.set_read_timeout(Some(left))?;
            match self.conn.read(buf) {
                Err(e) if is_timeout(&e) => continue,
                r => return r,
            }
        }
    }
}

/// True for the error a socket read or write returns when its timeout (SO_RCVTIMEO,
/// SO_SNDTIMEO) expires: EAGAIN on Unix. `TimedOut` is not one: it is a connection that failed
/// (or one of our own timeout errors).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// When a connection last moved a byte in either direction, shared by its threads.
#[derive(Clone)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// True when nothing has moved for `idle` (never with `None`).
    pub fn idle_for(&self, idle: Option<Duration>) -> bool {
        let last = self.start + Duration::from_millis(self.last_ms.load(Relaxed));
        idle.is_some_and(|idle| last.elapsed() >= idle)
    }
}

/// The error of a connection closed for silence.
pub(crate) fn idle_error(who: &str, idle: Option<Duration>) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{who} for {} s (--idle-timeout)", idle.map_or(0, |d| d.as_secs())),
    )
}

/// A socket reader that waits out read timeouts until the whole connection (input and
/// replies) has been silent for the idle timeout, then fails with a clear error. The socket's
/// read timeout must be set to the idle timeout.
pub(crate) struct IdleReader<R> {
    pub inner: R,
    pub idle: Option<Duration>,
    pub activity: Activity,
}

impl<R: Read> Read for IdleReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.activity.touch();
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => {
                    if self.activity.idle_for(self.idle) {
                        return Err(idle_error("the client sent nothing", self.idle));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A socket writer whose write timeout (the idle timeout) becomes a clear error: the peer has
/// read nothing for that long.
pub(crate) struct StallWriter<W> {
    pub inner: W,
    pub idle: Option<Duration>,
}

impl<W: Write> Write for StallWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| {
            if is_timeout(&e) {
                idle_error("the receiving side read nothing", self.idle)
            } else {
                e
            }
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Makes sure the process may open the descriptors `max_connections` connections need
/// (`per_connection` each, plus a reserve): raises the soft `RLIMIT_NOFILE` up to the hard one
/// if needed, or fails naming both numbers. Without this, running out of descriptors leaves new
/// clients hanging in the listen backlog instead of being refused.
pub(crate) fn reserve_descriptors(max_connections: usize, per_connection: u64) -> Result<()> {
    let need = (max_connections as u64)
        .saturating_mul(per_connection)
        .saturating_add(FD_RESERVE);
    let (soft, hard) =
        crate::sys::process::open_file_limit().map_err(|e| Error::io("reading the open-file limit", e))?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(Error::InvalidArgument(format!(
            "--max-connections {max_connections} needs up to {need} open files, but the limit is {hard} \
             (ulimit -n): lower --max-connections or raise the limit"
        )));
    }
    crate::sys::process::set_open_file_limit(need, hard)
        .map_err(|e| Error::io("raising the open-file limit", e))
}
