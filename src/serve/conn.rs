//! One client connection: the TCP stream wrapper that notices when bytes move (for the idle
//! timeout) and that closes the connection cleanly when a response has to be cut.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the server knows about one connection's traffic.
pub struct Activity {
    opened: tokio::time::Instant,
    /// When a byte last moved, in milliseconds since the connection was opened.
    last_ms: AtomicU64,
    /// A response on this connection must be cut once what was sent so far is written.
    cut: AtomicBool,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            opened: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        }
    }

    /// Asks for the connection to be closed as soon as hyper has written out every byte it
    /// holds: the response stops there, without losing the good bytes already produced.
    pub fn cut_after_flush(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    fn touch(&self) {
        self.last_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    pub async fn stalled(&self, idle: Duration) {
        loop {
            let deadline = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
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

    fn moved<T>(&self, r: Poll<io::Result<usize>>, f: impl FnOnce(usize) -> T) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.activity.touch();
            }
        }
        r.map_ok(f)
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
        this.moved(r, |n| n)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.moved(r, |n| n)
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
