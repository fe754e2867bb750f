//! The TCP gateway: a raw byte stream in, a container stream out (or, with `--decrypt`, a
//! container in and its verified plaintext out). Each connection gets its own thread and its own
//! container (own id and keys); the block crypto of all of them runs on one shared worker pool.
//! [`Limits`] bound the connections: at most `max_connections` at once (more are reset as soon as
//! they are accepted), an idle timeout, a size cap per stream and an optional token.
//!
//! Where the output goes:
//! - **reflect** (no destination): back to the client, on the same connection. The client ends
//!   its input by half-closing its sending side, and must read while it writes.
//! - **forward** (`--to HOST:PORT`): to a new connection to the destination, which receives only
//!   the output stream. Bytes the destination sends back are relayed to the client unchanged
//!   (so a gateway forwarding to a reflecting gateway gets the outer container back); the gateway
//!   encrypts one direction only.
//!
//! Streaming and memory: encrypting, each block is sealed and written as soon as it is full
//! (`flush_after` also seals a partial block after that long without input); decrypting, each
//! block is authenticated and written as soon as it has arrived. Either way a connection holds at
//! most about `2 × workers` blocks, plus the index of its blocks (32 bytes each), whatever the
//! stream length; writes block when the output is slow, so a slow destination slows the source.
//!
//! Faults: a destination that refuses or drops ends the client's connection (reset); a client
//! that vanishes mid-stream leaves the destination with an incomplete container (recoverable by
//! `repair`); when decrypting, a block that fails authentication, or a stream that ends before its
//! verified footer, resets the output connection, so its reader cannot take a cut stream for a
//! complete one. Each event is one line on stderr.
//!
//! ```no_run
//! use qeltrix::gateway::{Direction, GatewayConfig, GatewayServer, Limits};
//! use qeltrix::{PackOptions, Recipient, crypto::KeyFileKey};
//! let key = Recipient::KeyFile(KeyFileKey::from_bytes([7; 32]));
//! let config = GatewayConfig {
//!     direction: Direction::Encrypt { keys: vec![key], pack: PackOptions::default(), flush_after: None },
//!     forward_to: Some("127.0.0.1:9000".into()),
//!     forward_token: None,
//!     workers: 0,
//!     limits: Limits::default(),
//! };
//! GatewayServer::bind("127.0.0.1:7620", config)?.run()?;
//! # Ok::<(), qeltrix::Error>(())
//! ```

mod limits;
mod sink;
mod stats;

pub use limits::{
    Limits, Token, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_SIZE,
    MAX_TOKEN_LINE,
};
pub use sink::{SinkConfig, SinkServer, PART_SUFFIX};
pub use stats::{spawn_reporter, Stats, StatsSnapshot};

/// A log event of the accept loop shared by the gateway and the sink, under the target of the
/// server `name` names (`qeltrix::gateway` or `qeltrix::sink`: a target must be a constant).
macro_rules! server_event {
    ($name:expr, $level:ident, $($rest:tt)+) => {
        if $name == "sink" {
            tracing::$level!(target: "qeltrix::sink", $($rest)+)
        } else {
            tracing::$level!(target: "qeltrix::gateway", $($rest)+)
        }
    };
}
pub(crate) use server_event;

use crate::container::pipeline::{ordered_channel, WorkerPool};
use crate::container::stream_reader::StreamReader;
use crate::container::writer::{PackOptions, StreamPacker};
use crate::{Error, Key, Recipient, Result};
use limits::{check_token, is_timeout, Activity, IdleReader, StallWriter};
use stats::{Meter, MeteredReader, MeteredWriter};
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Plaintext bytes read from a client per call when encrypting.
const READ_CHUNK: usize = 256 << 10;
/// Buffer for container bytes read when decrypting.
const DECRYPT_READ_BUFFER: usize = 256 << 10;
/// How long to wait for a destination to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Buffer of the thread relaying a destination's replies to the client.
const RELAY_BUFFER: usize = 16 << 10;
/// Most descriptors one gateway connection holds: the client, the destination, and the
/// duplicates its threads use.
const FDS_PER_CONNECTION: u64 = 5;

/// What a gateway does to the bytes passing through.
pub enum Direction {
    /// Plaintext in, a container out, with one key slot per key.
    Encrypt {
        /// Who the containers are sealed to: one key slot each.
        keys: Vec<Recipient>,
        /// Cipher, block size, compression and workers of the packer.
        pack: PackOptions,
        /// Seal a partial block after this long without input.
        flush_after: Option<Duration>,
    },
    /// A container in, its verified plaintext out.
    Decrypt {
        /// The key that opens the incoming containers.
        key: Key,
        /// Also check each block's plaintext SHA-256 (the AEAD is always checked).
        verify: bool,
    },
}

/// How a gateway is set up.
pub struct GatewayConfig {
    /// Encrypt or decrypt, and with which keys.
    pub direction: Direction,
    /// `HOST:PORT` to forward the output to; `None` reflects it back to the client.
    pub forward_to: Option<String>,
    /// Token line sent to the destination before the output (`--to-token-file`).
    pub forward_token: Option<Token>,
    /// Worker threads shared by all connections (0: one per core).
    pub workers: usize,
    /// Connection cap, timeouts, size cap and the clients' token.
    pub limits: Limits,
}

struct GatewayState {
    config: GatewayConfig,
    pool: WorkerPool,
    stats: Arc<Stats>,
}

/// A listening gateway. See the module docs.
pub struct GatewayServer {
    listener: TcpListener,
    shared: Arc<GatewayState>,
    stop: Arc<AtomicBool>,
}

/// Stops a running [`GatewayServer`] from another thread: its `run` returns once `stop` is
/// called (connections being served finish on their own threads).
#[derive(Clone)]
pub struct GatewayStopper {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl GatewayStopper {
    /// Makes `run` return: sets the flag, then wakes the accept with a connection of its own.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
    }
}

impl GatewayServer {
    /// Binds the listening socket and starts the shared worker pool.
    pub fn bind(addr: impl ToSocketAddrs, mut config: GatewayConfig) -> Result<Self> {
        config.limits.check()?;
        limits::reserve_descriptors(config.limits.max_connections, FDS_PER_CONNECTION)?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("binding the gateway's address", e))?;
        let pool = WorkerPool::new(config.workers).map_err(|e| Error::io("starting worker threads", e))?;
        if let Direction::Encrypt {
            pack, flush_after, ..
        } = &mut config.direction
        {
            crate::core::format::check_block_size(pack.block_size)?;
            if flush_after.is_some_and(|d| d.is_zero()) {
                return Err(Error::InvalidArgument(
                    "--flush-after must be at least 1 ms".into(),
                ));
            }
            pack.pool = Some(pool.clone());
        }
        Ok(GatewayServer {
            listener,
            shared: Arc::new(GatewayState {
                config,
                pool,
                stats: Arc::default(),
            }),
            stop: Arc::default(),
        })
    }

    /// A handle that makes [`GatewayServer::run`] return (for an embedder running it on a
    /// thread of its own).
    pub fn stopper(&self) -> io::Result<GatewayStopper> {
        Ok(GatewayStopper {
            stop: Arc::clone(&self.stop),
            addr: self.local_addr()?,
        })
    }

    /// The address the gateway listens on (the port the OS chose, for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Threads in the worker pool shared by all connections.
    pub fn workers(&self) -> usize {
        self.shared.pool.workers()
    }

    /// Accepts connections until the listener fails or a [`GatewayStopper`] stops it, serving
    /// each on its own thread.
    pub fn run(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let max = shared.config.limits.max_connections;
        accept_loop(
            &self.listener,
            "gateway",
            max,
            Some(&self.stop),
            move |client, id, peer| serve(&shared, client, id, peer),
        )
    }
}

/// Accepts connections until the listener fails (or `stop` is set), running
/// `handle(connection, id, peer)` on a thread of its own for each. With `max_connections` being
/// served, a new connection is reset as soon as it is accepted (never left waiting in the
/// backlog); one line is logged when a burst of refusals starts and one with their count when
/// connections are accepted again. Errors that concern one connection are logged and skipped;
/// when the process is out of descriptors or memory it pauses briefly instead of spinning.
pub(crate) fn accept_loop(
    listener: &TcpListener,
    name: &'static str,
    max_connections: usize,
    stop: Option<&AtomicBool>,
    handle: impl Fn(TcpStream, u64, SocketAddr) + Send + Sync + Clone + 'static,
) -> Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    let mut refused = 0u64;
    let mut next_id = 1u64;
    loop {
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                server_event!(name, warn, "accepting a connection failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(Error::io("accepting connections", e)),
        };
        if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
            return Ok(());
        }
        if active.load(Ordering::Acquire) >= max_connections {
            if refused == 0 {
                server_event!(
                    name,
                    warn,
                    max_connections,
                    "{max_connections} connections (--max-connections): refusing new ones until one ends"
                );
            }
            refused += 1;
            set_reset_on_close(&conn);
            drop(conn);
            continue;
        }
        if refused > 0 {
            server_event!(
                name,
                info,
                refused,
                "accepting again; {refused} connections were refused at the limit"
            );
            refused = 0;
        }
        let id = next_id;
        next_id += 1;
        let handle = handle.clone();
        // The slot is freed when the connection's thread ends, or at once if it cannot start.
        let slot = Slot::take(&active);
        let spawned = thread::Builder::new()
            .name(format!("qeltrix-conn-{id}"))
            .spawn(move || {
                let _slot = slot;
                handle(conn, id, peer)
            });
        if let Err(e) = spawned {
            server_event!(
                name,
                error,
                conn = id,
                %peer,
                "#{id} {peer} refused: cannot start a thread: {e}"
            );
        }
    }
}

/// One of the `max_connections` places, held by a connection's thread.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Slot {
        active.fetch_add(1, Ordering::AcqRel);
        Slot(Arc::clone(active))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection ended early, which decides what its peers are told.
enum Fault {
    /// The destination could not be reached, or failed while we wrote to it (or, reflecting,
    /// the client stopped reading its output): the client is reset.
    Output(Error),
    /// The client's stream failed: it vanished mid-stream, or (decrypting) its container is cut,
    /// forged or damaged. Encrypting, the destination gets an incomplete container; decrypting,
    /// it is reset.
    Input(Error),
}

fn serve(shared: &Arc<GatewayState>, client: TcpStream, id: u64, peer: SocketAddr) {
    let _active = shared.stats.opened();
    let started = Instant::now();
    let meter = Meter::new(&shared.stats);
    let (mode, target) = describe(&shared.config);
    info!(target: "qeltrix::gateway", conn = id, %peer, mode, "#{id} {peer} connected ({mode}, {target})");
    let limits = &shared.config.limits;
    if let Some(token) = &limits.token {
        let deadline = started + limits.header_timeout;
        if let Err(e) = check_token(token, &client, deadline, limits.header_timeout) {
            reset(&client);
            warn!(target: "qeltrix::gateway", conn = id, %peer, "#{id} {e}");
            return;
        }
    }
    // Reads wake up at least every idle timeout to check the connection's silence; a peer
    // that reads nothing for that long fails the write that waits for it.
    if let Err(e) = client
        .set_read_timeout(limits.idle_timeout)
        .and_then(|()| client.set_write_timeout(limits.idle_timeout))
    {
        warn!(target: "qeltrix::gateway", conn = id, "#{id} failed: setting the socket's timeouts: {e}");
        return;
    }
    let activity = Activity::new();
    let conn = Conn {
        shared,
        client: &client,
        meter: &meter,
        activity: &activity,
        id,
    };
    let outcome = match &shared.config.direction {
        Direction::Encrypt {
            keys,
            pack,
            flush_after,
        } => encrypt(&conn, keys, pack, *flush_after),
        Direction::Decrypt { key, verify } => decrypt(&conn, key, *verify),
    };
    let s = meter.conn.snapshot();
    let totals = format!(
        "{} bytes in, {} bytes out, {} blocks, {:.2} s",
        s.bytes_in,
        s.bytes_out,
        s.blocks,
        started.elapsed().as_secs_f64()
    );
    let (bytes_in, bytes_out, blocks) = (s.bytes_in, s.bytes_out, s.blocks);
    match outcome {
        Ok(()) => info!(
            target: "qeltrix::gateway",
            conn = id,
            bytes_in,
            bytes_out,
            blocks,
            "#{id} closed: {totals}"
        ),
        Err(Fault::Output(e)) => warn!(
            target: "qeltrix::gateway",
            conn = id,
            bytes_in,
            bytes_out,
            blocks,
            "#{id} output failed, client reset: {e} ({totals})"
        ),
        Err(Fault::Input(e)) => warn!(
            target: "qeltrix::gateway",
            conn = id,
            bytes_in,
            bytes_out,
            blocks,
            "#{id} input failed: {e} ({totals})"
        ),
    }
}

/// What the steps of one connection share.
struct Conn<'a> {
    shared: &'a GatewayState,
    client: &'a TcpStream,
    meter: &'a Meter,
    activity: &'a Activity,
    id: u64,
}

impl Conn<'_> {
    fn idle(&self) -> Option<Duration> {
        self.shared.config.limits.idle_timeout
    }
}

fn describe(config: &GatewayConfig) -> (&'static str, String) {
    let mode = match config.direction {
        Direction::Encrypt { .. } => "encrypt",
        Direction::Decrypt { .. } => "decrypt",
    };
    let target = match &config.forward_to {
        Some(to) => format!("forward to {to}"),
        None => "reflect".into(),
    };
    (mode, target)
}

/// The output connection (the destination, or the client itself) and, when forwarding, the
/// thread relaying the destination's replies to the client.
struct Output {
    stream: TcpStream,
    relay: Option<JoinHandle<()>>,
    /// Set once the output has ended: from then on the relay stops after the idle timeout.
    ended: Arc<AtomicBool>,
}

impl Output {
    fn open(conn: &Conn) -> Result<Self> {
        let (config, client) = (&conn.shared.config, conn.client);
        let clone_err = |e| Error::io("duplicating a socket", e);
        let ended = Arc::new(AtomicBool::new(false));
        let Some(to) = &config.forward_to else {
            let stream = client.try_clone().map_err(clone_err)?;
            let _ = stream.set_nodelay(true);
            return Ok(Output {
                stream,
                relay: None,
                ended,
            });
        };
        let mut stream = connect(to)?;
        let _ = stream.set_nodelay(true);
        let idle = conn.idle();
        stream
            .set_read_timeout(idle)
            .and_then(|()| stream.set_write_timeout(idle))
            .map_err(|e| Error::io("setting the destination socket's timeouts", e))?;
        if let Some(token) = &config.forward_token {
            limits::present_token(
                token,
                &mut StallWriter {
                    inner: &mut stream,
                    idle,
                },
            )
            .map_err(|e| Error::io(format!("sending the token to the destination {to}"), e))?;
        }
        let (replies, back) = (
            stream.try_clone().map_err(clone_err)?,
            client.try_clone().map_err(clone_err)?,
        );
        let (activity, done) = (conn.activity.clone(), Arc::clone(&ended));
        let relay = thread::Builder::new()
            .name("qeltrix-relay".into())
            .spawn(move || relay(replies, back, activity, idle, done))
            .map_err(|e| Error::io("starting the relay thread", e))?;
        Ok(Output {
            stream,
            relay: Some(relay),
            ended,
        })
    }

    /// The output is complete: send end-of-stream, then wait for the destination to finish its
    /// replies (or to be silent for the idle timeout).
    fn finish(self) {
        self.ended.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Write);
        if let Some(relay) = self.relay {
            let _ = relay.join();
        }
    }

    /// The input failed while encrypting: end the output cleanly, so the destination keeps the
    /// incomplete container it has.
    fn cut(self) {
        self.finish();
    }

    /// End the output with a reset, so its reader cannot mistake it for a complete stream.
    fn abort(self, client: &TcpStream) {
        reset(&self.stream);
        reset(client);
        if let Some(relay) = self.relay {
            let _ = relay.join();
        }
    }
}

/// Relays the destination's replies to the client until either side ends, or the connection
/// has been silent for the idle timeout after the output ended. Faults are the connection
/// thread's to report.
fn relay(
    mut replies: TcpStream,
    mut back: TcpStream,
    activity: Activity,
    idle: Option<Duration>,
    ended: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        match replies.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                activity.touch();
                if back.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {
                if ended.load(Ordering::Acquire) && activity.idle_for(idle) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = back.shutdown(Shutdown::Write);
}

fn connect(to: &str) -> Result<TcpStream> {
    let addrs = to
        .to_socket_addrs()
        .map_err(|e| Error::io(format!("resolving the destination {to}"), e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(Error::io(format!("connecting to the destination {to}"), last))
}

/// Makes the socket close with a reset (RST) instead of an orderly end-of-stream when its last
/// handle is dropped (SO_LINGER with a zero timeout), so a peer can tell a cut from an end.
pub fn set_reset_on_close(stream: &TcpStream) {
    crate::sys::net::set_linger_zero(stream);
}

/// Prepares `stream` to be closed with a reset (not an orderly end-of-stream) and wakes any
/// thread blocked on it. The reset is sent when the last handle to the socket is dropped.
fn reset(stream: &TcpStream) {
    set_reset_on_close(stream);
    // Shutting down reading sends nothing but wakes blocked readers; writing is left alone so
    // that no orderly end-of-stream goes out before the reset.
    let _ = stream.shutdown(Shutdown::Read);
}

fn encrypt(
    conn: &Conn,
    keys: &[Recipient],
    pack: &PackOptions,
    flush_after: Option<Duration>,
) -> Result<(), Fault> {
    let (client, meter, id) = (conn.client, conn.meter, conn.id);
    let output = Output::open(conn).map_err(|e| {
        reset(client);
        Fault::Output(e)
    })?;
    let writer = MeteredWriter(
        StallWriter {
            inner: output
                .stream
                .try_clone()
                .map_err(|e| Fault::Output(Error::io("duplicating a socket", e)))?,
            idle: conn.idle(),
        },
        meter.clone(),
    );
    let mut packer = match StreamPacker::new(writer, keys, pack) {
        Ok(p) => p,
        Err(e) => {
            output.abort(client);
            return Err(Fault::Output(e));
        }
    };
    let container = hex::encode(packer.container_id());
    info!(target: "qeltrix::gateway", conn = id, "#{id} container {container}");
    // Reads wake up for whichever comes first: sealing a partial block, or checking silence.
    let tick = match (flush_after, conn.idle()) {
        (Some(f), Some(i)) => Some(f.min(i)),
        (f, i) => f.or(i),
    };
    if let Err(e) = client.set_read_timeout(tick) {
        output.abort(client);
        return Err(Fault::Input(Error::io("setting the read timeout", e)));
    }
    let mut buf = vec![0u8; READ_CHUNK];
    let mut unflushed = false;
    let mut last_input = Instant::now();
    let (mut blocks, mut received) = (0, 0u64);
    let mut input = client;
    loop {
        let read = match input.read(&mut buf) {
            Ok(n) => {
                received += n as u64;
                size_cap(received, conn.shared.config.limits.max_size).map(|()| n)
            }
            Err(e) if is_timeout(&e) && conn.activity.idle_for(conn.idle()) => {
                Err(limits::idle_error("the client sent nothing", conn.idle()))
            }
            Err(e) => Err(e),
        };
        let step = match read {
            Ok(0) => break,
            Ok(n) => {
                conn.activity.touch();
                last_input = Instant::now();
                meter.bytes_in(n as u64);
                unflushed = true;
                packer
                    .write_all(&buf[..n])
                    .map_err(|e| Error::io("writing the container", e))
            }
            Err(e) if is_timeout(&e) => {
                if unflushed && flush_after.is_some_and(|f| last_input.elapsed() >= f) {
                    unflushed = false;
                    packer.flush_block()
                } else {
                    Ok(())
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Over --max-size: the stream is refused, both sides reset.
                drop(packer);
                output.abort(client);
                return Err(Fault::Input(Error::io("reading from the client", e)));
            }
            Err(e) => {
                // Everything that arrived goes out sealed (the partial block too), so the
                // destination's incomplete container holds all of it for `repair`.
                let _ = packer.flush_block();
                meter.blocks(packer.blocks_written() - blocks);
                drop(packer);
                output.cut();
                return Err(Fault::Input(Error::io(
                    "reading from the client (the destination keeps an incomplete container)",
                    e,
                )));
            }
        };
        meter.blocks(packer.blocks_written() - blocks);
        blocks = packer.blocks_written();
        if let Err(e) = step {
            drop(packer);
            output.abort(client);
            return Err(Fault::Output(e));
        }
    }
    match packer.finish() {
        Ok((_, summary)) => {
            meter.blocks(summary.blocks - blocks);
            output.finish();
            Ok(())
        }
        Err(e) => {
            output.abort(client);
            Err(Fault::Output(e))
        }
    }
}

fn decrypt(conn: &Conn, key: &Key, verify: bool) -> Result<(), Fault> {
    let (shared, client, meter, id) = (conn.shared, conn.client, conn.meter, conn.id);
    let input_err = |e| Fault::Input(Error::io("duplicating a socket", e));
    let input = BufReader::with_capacity(
        DECRYPT_READ_BUFFER,
        SizeCap {
            inner: MeteredReader(
                IdleReader {
                    inner: client.try_clone().map_err(input_err)?,
                    idle: conn.idle(),
                    activity: conn.activity.clone(),
                },
                meter.clone(),
            ),
            received: 0,
            max: shared.config.limits.max_size,
        },
    );
    // The header and key come first, so a wrong key never opens a connection to the destination.
    let mut stream = StreamReader::open(input, key).map_err(|e| {
        reset(client);
        Fault::Input(e)
    })?;
    let container = hex::encode(stream.header().container_id);
    info!(target: "qeltrix::gateway", conn = id, "#{id} container {container}");
    let output = Output::open(conn).map_err(|e| {
        reset(client);
        Fault::Output(e)
    })?;
    let (jobs, results) = ordered_channel(&shared.pool);
    let keys = Arc::clone(stream.keys());
    let reader = thread::Builder::new().name(format!("qeltrix-read-{id}")).spawn(
        move || -> Result<StreamReader<_>> {
            while let Some(block) = stream.next_sealed()? {
                let keys = Arc::clone(&keys);
                if !jobs.submit(move || block.open(&keys, verify)) {
                    break;
                }
            }
            Ok(stream)
        },
    );
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            output.abort(client);
            return Err(Fault::Output(Error::io("starting the reader thread", e)));
        }
    };
    let mut out = MeteredWriter(
        StallWriter {
            inner: &output.stream,
            idle: conn.idle(),
        },
        meter.clone(),
    );
    let mut fault = None;
    while let Some(block) = results.recv() {
        let written = match block {
            Ok(plain) => out
                .write_all(&plain)
                .map_err(|e| Fault::Output(Error::io("writing the plaintext", e))),
            Err(e) => Err(Fault::Input(e)),
        };
        if let Err(f) = written {
            fault = Some(f);
            break;
        }
        meter.blocks(1);
    }
    if fault.is_some() {
        // Wake the reader if it waits for input, and stop taking its results.
        reset(client);
        drop(results);
    }
    let read = reader
        .join()
        .unwrap_or_else(|_| Err(Error::corrupt("the reader thread panicked")));
    let fault = fault.or_else(|| match read {
        Err(e) => Some(Fault::Input(e)),
        Ok(stream) => trailing_data(stream.into_inner()).map(Fault::Input),
    });
    match fault {
        None => {
            output.finish();
            Ok(())
        }
        Some(f) => {
            output.abort(client);
            Err(f)
        }
    }
}

/// A reader that fails once more than `max` bytes have come through (`--max-size`).
struct SizeCap<R> {
    inner: R,
    received: u64,
    max: Option<u64>,
}

impl<R: Read> Read for SizeCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received += n as u64;
        size_cap(self.received, self.max).map(|()| n)
    }
}

/// Fails (`InvalidData`) once more than `max` bytes were received (`--max-size`).
fn size_cap(received: u64, max: Option<u64>) -> io::Result<()> {
    match max {
        Some(max) if received > max => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the client sent more than {max} bytes (--max-size)"),
        )),
        _ => Ok(()),
    }
}

/// After the trailer the client must end its stream: anything more is an error.
fn trailing_data(mut input: impl Read) -> Option<Error> {
    let mut byte = [0u8; 1];
    loop {
        return match input.read(&mut byte) {
            Ok(0) => None,
            Ok(_) => Some(Error::corrupt("data follows the container's trailer")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Some(Error::io("reading after the trailer", e)),
        };
    }
}
