//! One client connection: the TCP stream wrapper that notices when bytes move (for the idle
//! timeout and the minimum rate), that closes the connection cleanly when a response has to be
//! cut, and the table of open connections that sheds the longest-idle one when the server is at
//! its connection cap.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the server knows about one connection's traffic.
pub struct Activity {
    opened: Instant,
    /// When a byte last moved, in milliseconds since the connection was opened.
    last_ms: AtomicU64,
    /// A response on this connection must be cut once what was sent so far is written.
    cut: AtomicBool,
    /// Bytes written to the socket so far.
    written: AtomicU64,
    /// The last write found the socket full: the client is not taking the bytes we have.
    write_blocked: AtomicBool,
    /// Requests being answered (a handler running or a body not yet finished).
    busy: AtomicUsize,
    /// When the connection last became idle (opened, or its last response ended), in
    /// milliseconds since it was opened.
    idle_since_ms: AtomicU64,
    /// Set when the connection table chose this connection to make room for a new one.
    shed: Notify,
}

/// Why a connection was closed by its watch.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A response was waiting on the client, which took fewer bytes than the minimum rate.
    TooSlow { bytes: u64, window: Duration },
    /// At the connection cap, this idle connection made room for a new one.
    Shed,
}

/// The minimum transfer rate a client must keep while a response waits on it.
#[derive(Clone, Copy, Debug)]
pub struct MinRate {
    /// Bytes per second; 0 turns the check off.
    pub bytes_per_sec: u64,
    pub window: Duration,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            written: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            shed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Asks for the connection to be closed as soon as hyper has written out every byte it
    /// holds: the response stops there, without losing the good bytes already produced.
    pub fn cut_after_flush(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// Counts as traffic now: a byte moved, or the server is working on this connection's
    /// request (the idle timeout is for clients that hold a connection without using it, not
    /// for a server busy on their behalf).
    pub fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Marks a request as being answered until the guard is dropped (when its response body is
    /// finished or abandoned). A busy connection is never shed.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// When this connection became idle, or `None` while a request is being answered.
    fn idle_since(&self) -> Option<Instant> {
        (self.busy.load(Ordering::SeqCst) == 0)
            .then(|| self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)))
    }

    /// Completes when the connection must be closed: nothing moved for `idle`; or, with a
    /// minimum rate, a whole window ended with the socket full (the client, not the server, is
    /// the bottleneck) and fewer than `rate × window` bytes written in it; or the connection
    /// table shed it.
    pub async fn watch(&self, idle: Duration, rate: MinRate) -> Closed {
        let idle_close = async {
            loop {
                let deadline =
                    self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
                if Instant::now() >= deadline {
                    return Closed::Idle;
                }
                tokio::time::sleep_until(deadline).await;
            }
        };
        let too_slow = async {
            if rate.bytes_per_sec == 0 || rate.window.is_zero() {
                return std::future::pending().await;
            }
            let floor = (rate.bytes_per_sec as f64 * rate.window.as_secs_f64()) as u64;
            let mut ticks = tokio::time::interval_at(Instant::now() + rate.window, rate.window);
            let mut before = self.written.load(Ordering::Relaxed);
            loop {
                ticks.tick().await;
                let now = self.written.load(Ordering::Relaxed);
                let bytes = now - before;
                before = now;
                if bytes < floor && self.write_blocked.load(Ordering::Relaxed) {
                    return Closed::TooSlow {
                        bytes,
                        window: rate.window,
                    };
                }
            }
        };
        tokio::select! {
            closed = idle_close => closed,
            closed = too_slow => closed,
            _ = self.shed.notified() => Closed::Shed,
        }
    }
}

/// A request being answered on a connection (see [`Activity::busy`]).
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.now_ms(), Ordering::Relaxed);
        a.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The open connections, so that at the cap the one idle the longest (no request being
/// answered: an idle keep-alive, or a socket that has not sent a whole request head) can be
/// closed to make room. Without this, a client holding `max` idle sockets would lock everyone
/// out for as long as it liked.
#[derive(Default)]
pub struct Table {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// Signalled whenever a connection leaves the table.
    freed: Notify,
}

impl Table {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more connection under the cap of `max`: sheds the longest-idle
    /// connection if the table is full, or waits until one leaves if every one is busy. Returns
    /// once there is room.
    pub async fn make_room(&self, max: usize) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Register for the wake-up before looking, so a connection leaving in between is
            // not missed.
            freed.as_mut().enable();
            {
                let mut open = self.lock();
                if open.len() < max {
                    return;
                }
                let victim = open
                    .iter()
                    .filter_map(|(id, a)| a.idle_since().map(|t| (t, *id)))
                    .min()
                    .map(|(_, id)| id);
                if let Some(id) = victim {
                    let a = open.remove(&id).expect("the victim is in the table");
                    a.shed.notify_one();
                    return;
                }
            }
            freed.await;
        }
    }

    /// Adds a connection; it stays until the returned guard is dropped (or it is shed).
    pub fn insert(self: &Arc<Self>, activity: Arc<Activity>) -> TableEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity);
        TableEntry {
            table: Arc::clone(self),
            id,
        }
    }
}

/// A connection's place in the [`Table`].
pub struct TableEntry {
    table: Arc<Table>,
    id: u64,
}

impl Drop for TableEntry {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
        self.table.freed.notify_waiters();
    }
}

/// A TCP stream that records every read or write that moved bytes, and that fails its flush
/// once a cut was asked for (hyper flushes only when its write buffer is empty, so every byte
/// before the cut has reached the kernel; hyper then drops the connection).
pub struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }

    /// Records a write: the bytes it moved, and whether the socket was full.
    fn wrote(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        let a = &self.activity;
        match &r {
            Poll::Pending => a.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(Ok(n)) => {
                a.write_blocked.store(false, Ordering::Relaxed);
                if *n > 0 {
                    a.written.fetch_add(*n as u64, Ordering::Relaxed);
                    a.touch();
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) && this.activity.cut.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::other("response cut")));
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
