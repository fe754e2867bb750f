//! Response bodies, streamed block by block, and the one log line each request leaves.
//!
//! A file's bytes are never gathered into one buffer: a producer task walks the requested
//! ranges a block at a time, gets each block from the shared cache (decrypting it on a blocking
//! thread if needed), and hands hyper a zero-copy slice of it through a two-slot channel. The
//! producer asks for the next block only once a slot is free, so a response holds the block
//! hyper is writing and at most two more, whatever the file's size, and a client that stops
//! reading stops the producer. (One slot measured 7 % slower for a single full GET: the producer
//! then waits for hyper before fetching the next block.) The blocks after the current one are read ahead on the cache's workers.
//!
//! Every block a body holds is paid for from the server-wide in-flight budget (a semaphore
//! counting bytes): the permit is taken before the block is pulled from the cache and given back
//! when hyper has written and dropped the last slice of it. However many responses stall, the
//! blocks they hold together never exceed the budget. Slices of a few KiB are copied out instead,
//! so a tiny range does not keep a whole (possibly 64 MiB) block alive.
//!
//! A block that fails to decrypt ends the response: the body stops yielding, the connection is
//! closed once the bytes before the bad block are written out, and the client sees a short body
//! (its `Content-Length` unmet), never wrong bytes.
//!
//! The log line is written when hyper drops the body, that is when the response is finished or
//! abandoned, so it can say how many bytes went out and whether the response was cut.

use super::conn::Activity;
use super::containers::ServedFile;
use super::range::ByteRange;
use super::HealthStats;
use crate::container::cache::Block;
use crate::Error;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{Method, StatusCode};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How many chunks may wait between the producer and hyper.
const CHANNEL_SLOTS: usize = 2;
/// Slices this small are copied out of their block, so the block (and its share of the
/// in-flight budget) is released at once.
const COPY_BELOW: usize = 16 * 1024;

/// The log line of one request, written when it is dropped.
pub struct AccessLog {
    started: Instant,
    remote: SocketAddr,
    method: Method,
    target: String,
    range: Option<String>,
    /// `None` until a response is built: a request abandoned before that logs `---`.
    pub status: Option<StatusCode>,
    /// The body length promised (`Content-Length`), when a body is sent.
    pub promised: Option<u64>,
    pub sent: u64,
    pub note: Option<String>,
    /// Marks the connection busy (not to be shed) until the response is over.
    pub busy: Option<super::conn::Busy>,
}

impl AccessLog {
    pub fn new(remote: SocketAddr, method: &Method, target: &str, range: Option<&[u8]>) -> Self {
        AccessLog {
            started: Instant::now(),
            remote,
            method: method.clone(),
            target: printable(target.as_bytes(), 1024),
            range: range.map(|r| printable(r, 200)),
            status: None,
            promised: None,
            sent: 0,
            note: None,
            busy: None,
        }
    }
}

/// Control characters and non-ASCII escaped, so a log line is one line; long values shortened.
fn printable(bytes: &[u8], max: usize) -> String {
    let mut s: String = bytes
        .iter()
        .take(max)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        s.push('…');
    }
    s
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let mut line = format!(
            "{} {} {} range={} {} {}B {:.2}ms",
            self.remote,
            self.method,
            self.target,
            self.range.as_deref().unwrap_or("-"),
            self.status.map_or("---".to_string(), |s| s.as_str().to_string()),
            self.sent,
            self.started.elapsed().as_secs_f64() * 1000.0,
        );
        let short = self.promised.filter(|&p| p != self.sent);
        match (short, &self.note) {
            (Some(promised), Some(note)) => {
                line.push_str(&format!(" CUT after {} of {promised} bytes: {note}", self.sent))
            }
            (Some(promised), None) => line.push_str(&format!(
                " (client closed after {} of {promised} bytes)",
                self.sent
            )),
            (None, Some(note)) => line.push_str(&format!(": {note}")),
            (None, None) if self.status.is_none() => line.push_str(" (client left before the response)"),
            (None, None) => {}
        }
        // One event per request, under its own target so that it can be routed or filtered apart
        // from the server's other events; the line has the fields in a fixed order for scripts.
        tracing::info!(
            target: "qeltrix::serve::access",
            remote = %self.remote,
            status = self.status.map_or(0, |s| s.as_u16()),
            sent = self.sent,
            "{line}"
        );
    }
}

/// A response body: nothing, one buffer, or a stream of block slices.
pub struct ServeBody {
    inner: Inner,
    log: Option<AccessLog>,
}

enum Inner {
    Empty,
    Once(Option<Bytes>),
    Stream {
        rx: mpsc::Receiver<Result<Bytes, Error>>,
        remaining: u64,
        connection: Arc<Activity>,
        /// Set once the response is being cut: nothing more is sent.
        cut: bool,
    },
}

impl ServeBody {
    pub fn empty(log: AccessLog) -> Self {
        ServeBody {
            inner: Inner::Empty,
            log: Some(log),
        }
    }

    pub fn once(bytes: impl Into<Bytes>, mut log: AccessLog) -> Self {
        let bytes = bytes.into();
        log.promised = Some(bytes.len() as u64);
        ServeBody {
            inner: Inner::Once(Some(bytes)),
            log: Some(log),
        }
    }

    fn stream(
        rx: mpsc::Receiver<Result<Bytes, Error>>,
        len: u64,
        connection: Arc<Activity>,
        mut log: AccessLog,
    ) -> Self {
        log.promised = Some(len);
        ServeBody {
            inner: Inner::Stream {
                rx,
                remaining: len,
                connection,
                cut: false,
            },
            log: Some(log),
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(log) = &mut self.log {
            log.sent += n as u64;
        }
    }
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Once(bytes) => match bytes.take() {
                Some(b) => {
                    this.count(b.len());
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                None => Poll::Ready(None),
            },
            Inner::Stream { cut: true, .. } => Poll::Pending,
            Inner::Stream {
                rx,
                remaining,
                connection,
                cut,
            } => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    *remaining = remaining.saturating_sub(chunk.len() as u64);
                    this.count(chunk.len());
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(None) if *remaining == 0 => Poll::Ready(None),
                Poll::Ready(failure) => {
                    // An error from the producer, or (never expected) its end before the promised
                    // length. Returning an error here would make hyper drop the connection with
                    // good bytes still in its buffer; instead stay pending and let the connection
                    // close itself once they are written.
                    connection.cut_after_flush();
                    *cut = true;
                    if let Some(log) = &mut this.log {
                        log.note = Some(match failure {
                            Some(Err(reason)) => reason.to_string(),
                            _ => "the response ended early".to_string(),
                        });
                    }
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Once(b) => b.is_none(),
            Inner::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Once(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// A piece of a response body: literal bytes (multipart headers) or a range of the file.
pub enum Segment {
    Bytes(Bytes),
    Range(ByteRange),
}

/// Streams the file's bytes for one response.
pub struct Streamer {
    pub file: Arc<ServedFile>,
    /// Bounds the decryptions running on blocking threads for requests (not read-ahead).
    pub limiter: Arc<Semaphore>,
    /// The server-wide in-flight budget, in bytes of blocks held by bodies.
    pub budget: Arc<Semaphore>,
    /// The budget's size: a block larger than it takes all of it.
    pub budget_bytes: usize,
    pub stats: Arc<HealthStats>,
    /// How many blocks ahead of the one being sent to decrypt in the background.
    pub readahead: u64,
}

/// A block pulled for a response, with its share of the in-flight budget: both are released
/// when the last slice of it is dropped.
pub struct HeldBlock {
    block: Block,
    _permit: OwnedSemaphorePermit,
}

/// A response waiting for room in the in-flight budget, counted for `/health`.
struct Waiting<'a>(&'a HealthStats);

impl<'a> Waiting<'a> {
    fn new(stats: &'a HealthStats) -> Self {
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(stats)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A held block as the owner of the `Bytes` slices sent from it: no copy.
struct SharedBlock(Arc<HeldBlock>);

impl AsRef<[u8]> for SharedBlock {
    fn as_ref(&self) -> &[u8] {
        &self.0.block
    }
}

impl Streamer {
    /// One block through the cache, decrypted off the async threads, once its size fits in the
    /// in-flight budget.
    pub async fn load(&self, index: u64) -> crate::Result<Arc<HeldBlock>> {
        let size = self
            .file
            .cached
            .container()
            .entry(index)
            .map_or(self.file.block_size, |e| e.plain_size);
        // A block larger than the whole budget takes all of it rather than waiting forever.
        let want = size.min(self.budget_bytes.max(1) as u64).min(u64::from(u32::MAX)) as u32;
        let permit = {
            // Counted while waiting, also if the request is abandoned meanwhile.
            let _waiting = Waiting::new(&self.stats);
            Arc::clone(&self.budget).acquire_many_owned(want).await
        };
        let permit = permit.expect("the budget is never closed");
        let block = {
            let _decrypting = self.limiter.acquire().await.expect("the limiter is never closed");
            let file = Arc::clone(&self.file);
            tokio::task::spawn_blocking(move || file.cached.block(index))
                .await
                .unwrap_or_else(|e| {
                    Err(Error::io(
                        format!("decrypting block {index}"),
                        io::Error::other(e),
                    ))
                })?
        };
        self.stats
            .pulled_bytes
            .fetch_add(block.len() as u64, Ordering::Relaxed);
        Ok(Arc::new(HeldBlock {
            block,
            _permit: permit,
        }))
    }

    /// The one range of a response, read by segments when that is cheaper than the block: a
    /// format-2 container, a range inside one block and smaller than it, the block not in the
    /// cache, and not a sequential reader (who gets whole blocks and read-ahead). Only the
    /// 16 KiB segments the range touches are read and decrypted, and the cache is left alone.
    /// `None`: serve it through the cache as usual. The read-ahead state is updated either way.
    pub async fn read_small(&self, ranges: &[ByteRange]) -> Option<crate::Result<Bytes>> {
        let [range] = ranges else { return None };
        let cached = &self.file.cached;
        let container = cached.container();
        let index = cached.block_of(range.start)?;
        let block_len = container.entry(index)?.plain_size;
        let sequential = range.start > 0 && self.file.last_end.load(Ordering::Relaxed) == range.start;
        if !container.version().has_v2_blocks()
            || sequential
            || cached.block_of(range.end - 1) != Some(index)
            || range.len() >= block_len
            || cached.cached_block(index).is_some()
        {
            return None;
        }
        self.file.last_end.store(range.end, Ordering::Relaxed);
        let want = range.len().min(self.budget_bytes.max(1) as u64) as u32;
        let _permit = {
            let _waiting = Waiting::new(&self.stats);
            Arc::clone(&self.budget).acquire_many_owned(want).await
        };
        let _decrypting = self.limiter.acquire().await.expect("the limiter is never closed");
        let file = Arc::clone(&self.file);
        let (start, len) = (range.start, range.len() as usize);
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let n = file.cached.container().read_at(start, &mut buf)?;
            if n != len {
                return Err(Error::Corrupt {
                    what: "the block is shorter than the index says".into(),
                    block: Some(index),
                    offset: None,
                });
            }
            Ok(Bytes::from(buf))
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::io(
                format!("decrypting block {index}"),
                io::Error::other(e),
            ))
        });
        if let Ok(bytes) = &read {
            self.stats
                .pulled_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Some(read)
    }

    /// Starts read-ahead for the ranges about to be sent: the blocks after the first one, up to
    /// the window, so a multi-block range decrypts on several cores at once; and, when this
    /// request starts where the last one for the file ended (a player fetching chunk after
    /// chunk), the blocks after its end too.
    pub fn start_readahead(&self, ranges: &[ByteRange]) {
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return;
        };
        let cached = &self.file.cached;
        let previous_end = self.file.last_end.swap(last.end, Ordering::Relaxed);
        if let (Some(a), Some(b)) = (cached.block_of(first.start), cached.block_of(first.end - 1)) {
            cached.readahead(a + 1, (b - a).min(self.readahead));
        }
        if first.start == previous_end && first.start > 0 {
            if let Some(end_block) = cached.block_of(last.end - 1) {
                cached.readahead(end_block + 1, self.readahead);
            }
        }
    }

    /// The error text for the log and the cut response: the file and the block.
    pub fn describe(&self, e: &Error) -> String {
        format!("{}: {e}", self.file.path.display())
    }

    /// Starts the producer and returns the body it feeds. `first` is the first block of the first
    /// range, already loaded by the caller (so a failure there became an error status instead).
    pub fn into_body(
        self,
        segments: Vec<Segment>,
        len: u64,
        first: Option<(u64, Arc<HeldBlock>)>,
        connection: Arc<Activity>,
        log: AccessLog,
    ) -> ServeBody {
        let (tx, rx) = mpsc::channel(CHANNEL_SLOTS);
        tokio::spawn(async move {
            if let Err(reason) = self.produce(segments, first, &tx).await {
                let _ = tx.send(Err(reason)).await;
            }
        });
        ServeBody::stream(rx, len, connection, log)
    }

    async fn produce(
        &self,
        segments: Vec<Segment>,
        first: Option<(u64, Arc<HeldBlock>)>,
        tx: &mpsc::Sender<Result<Bytes, Error>>,
    ) -> Result<(), Error> {
        let cached = &self.file.cached;
        // The block the last slice came from, kept while the next slices may need it.
        let mut current = first;
        for segment in segments {
            let range = match segment {
                Segment::Bytes(b) => {
                    if tx.send(Ok(b)).await.is_err() {
                        return Ok(()); // the client went away
                    }
                    continue;
                }
                Segment::Range(r) => r,
            };
            let Some(last) = cached.block_of(range.end - 1) else {
                return Err(Error::Internal {
                    what: "range beyond the end".into(),
                    block: None,
                }
                .in_file(&self.file.path));
            };
            for slice in cached.container().slices(range.start, range.end - range.start) {
                // Wait for the slot before pulling the next block: while hyper writes one block
                // and one more waits in the channel, this task holds nothing else.
                let Ok(slot) = tx.reserve().await else {
                    return Ok(()); // the client went away
                };
                let index = slice.index;
                if index < last {
                    cached.readahead(index + 1, (last - index).min(self.readahead));
                }
                let held = match current.take() {
                    Some((i, b)) if i == index => b,
                    other => {
                        drop(other); // give its share of the budget back before asking again
                        tokio::select! {
                            loaded = self.load(index) => loaded.map_err(|e| e.in_file(&self.file.path))?,
                            // The client left while this waited for the budget: stop waiting.
                            _ = tx.closed() => return Ok(()),
                        }
                    }
                };
                if held.block.len() < slice.in_block.end {
                    return Err(Error::Corrupt {
                        what: "the block is shorter than the index says".into(),
                        block: Some(index),
                        offset: None,
                    }
                    .in_file(&self.file.path));
                }
                let chunk = if slice.len() < COPY_BELOW {
                    Bytes::copy_from_slice(&held.block[slice.in_block])
                } else {
                    Bytes::from_owner(SharedBlock(Arc::clone(&held))).slice(slice.in_block)
                };
                slot.send(Ok(chunk));
                current = Some((index, held));
            }
        }
        Ok(())
    }
}
