//! The sink: a TCP server that saves each incoming container stream as a file. It needs no key
//! and never decrypts: it is a storage endpoint for a gateway's output.
//!
//! A stream is written to `DIR/<container id>.qltx.part` as it arrives and renamed to
//! `DIR/<container id>.qltx` once it has ended with a structurally valid trailer and footer.
//! A stream that is cut (the sender vanished, a gateway's client vanished, it went silent for the
//! idle timeout) stays as the `.part` file; [`crate::repair`] recovers every block in it that
//! arrived whole. A connection that ends before a whole header arrived, or that does not start
//! like a container, saves nothing. Files are created 0600.
//!
//! Bounds: the [`Limits`] (connections, idle and header timeouts, `max_size` per stream, token)
//! and an optional quota on the folder: the bytes of its files plus the streams in progress. A
//! stream that would pass `max_size` or the quota is cut, its `.part` removed and its sender
//! reset. At start the sink removes the `*.qltx.part` files an earlier run left behind: one sink
//! per folder.

use super::limits::{self, check_token, is_timeout, DeadlineReader, Limits};
use super::set_reset_on_close;
use super::stats::{Meter, MeteredReader, Stats};
use crate::container::reader::ContainerInfo;
use crate::container::stream_reader::read_full;
use crate::core::format::{Header, HEADER_LEN};
use crate::storage::{Storage, WriteOptions};
use crate::vault::naming::{container_name, CONTAINER_SUFFIX};
use crate::{Error, Result};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{info, warn};

/// Suffix of a container file still arriving, or cut.
pub const PART_SUFFIX: &str = ".part";
/// Bytes read from a stream and written to its file per call.
const COPY_BUFFER: usize = 256 << 10;
/// Descriptors one sink connection holds: the socket and the file.
const FDS_PER_CONNECTION: u64 = 2;

/// How a sink is set up.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// The existing folder the containers are saved in.
    pub out_dir: PathBuf,
    /// Connection cap, timeouts, size cap per stream and the senders' token.
    pub limits: Limits,
    /// Most bytes the folder may hold: its files plus the streams in progress (`None`: no quota).
    pub quota: Option<u64>,
}

/// A listening sink. See the module docs.
pub struct SinkServer {
    listener: TcpListener,
    shared: Arc<SinkState>,
}

struct SinkState {
    config: SinkConfig,
    quota: Quota,
    stats: Arc<Stats>,
    /// Where containers go when it is not the local folder `config.out_dir`: an object store.
    remote: Option<Arc<dyn Storage>>,
}

impl SinkServer {
    /// Removes the `*.qltx.part` files an earlier run left in `out_dir` (an existing folder),
    /// then binds the listening socket.
    pub fn bind(addr: impl ToSocketAddrs, config: SinkConfig) -> Result<Self> {
        let dir = &config.out_dir;
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        config.limits.check()?;
        limits::reserve_descriptors(config.limits.max_connections, FDS_PER_CONNECTION)?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("binding the sink's address", e))?;
        let removed = remove_stale_parts(dir)?;
        if removed > 0 {
            info!(
                target: "qeltrix::sink",
                removed,
                "removed {removed} stale *.qltx{PART_SUFFIX} files left by an earlier run in {}",
                dir.display()
            );
        }
        let quota = Quota::new(dir, config.quota)?;
        Ok(SinkServer {
            listener,
            shared: Arc::new(SinkState {
                config,
                quota,
                stats: Arc::default(),
                remote: None,
            }),
        })
    }

    /// A sink saving into `storage` (an object store, say) rather than a local folder. Each
    /// stream is uploaded as it arrives and appears as `<container id>.qltx` only once it ended
    /// with a valid trailer and footer; a cut stream leaves nothing (there is no `.part` to
    /// repair: the sender is reset and must send again). No quota (the store has its own).
    /// Memory per connection: the upload's parts in flight and the last [`REMOTE_TAIL`] bytes,
    /// kept to check the footer; a container whose footer is larger is refused.
    pub fn bind_storage(addr: impl ToSocketAddrs, storage: Arc<dyn Storage>, limits: Limits) -> Result<Self> {
        limits.check()?;
        limits::reserve_descriptors(limits.max_connections, FDS_PER_CONNECTION)?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("binding the sink's address", e))?;
        let config = SinkConfig {
            out_dir: PathBuf::from(storage.display(Path::new(""))),
            limits,
            quota: None,
        };
        Ok(SinkServer {
            listener,
            shared: Arc::new(SinkState {
                quota: Quota::new(&config.out_dir, None)?,
                config,
                stats: Arc::default(),
                remote: Some(storage),
            }),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters, shared with its connections.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Accepts connections until the listener fails, saving each on its own thread.
    pub fn run(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let max = shared.config.limits.max_connections;
        super::accept_loop(&self.listener, "sink", max, None, move |conn, id, peer| {
            receive(&shared, conn, id, peer)
        })
    }
}

/// Removes the regular files named `*.qltx.part` in `dir`; returns how many.
fn remove_stale_parts(dir: &Path) -> Result<usize> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", e).in_file(dir))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", e).in_file(dir))?;
        let stale = entry
            .file_name()
            .to_string_lossy()
            .ends_with(&format!("{CONTAINER_SUFFIX}{PART_SUFFIX}"))
            && entry.file_type().is_ok_and(|t| t.is_file());
        if stale {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io("removing a stale part", e).in_file(&path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn receive(shared: &SinkState, conn: TcpStream, id: u64, peer: SocketAddr) {
    let _active = shared.stats.opened();
    let meter = Meter::new(&shared.stats);
    info!(target: "qeltrix::sink", conn = id, %peer, "#{id} {peer} connected");
    match save(shared, &conn, &meter) {
        Ok(Saved::Whole { path, size }) => {
            info!(target: "qeltrix::sink", conn = id, size, "#{id} saved {} ({size} bytes)", path.display())
        }
        Ok(Saved::Incomplete { path, size, why }) => warn!(
            target: "qeltrix::sink",
            conn = id,
            size,
            "#{id} incomplete container kept as {} ({size} bytes: {why}); its whole blocks can be recovered",
            path.display()
        ),
        Err(e) => {
            // The sender must not take a refused or cut stream for a delivered one.
            set_reset_on_close(&conn);
            warn!(target: "qeltrix::sink", conn = id, "#{id} failed: {e}")
        }
    }
}

/// How a stream that was saved ended.
enum Saved {
    /// A complete container, renamed to its final name.
    Whole { path: PathBuf, size: u64 },
    /// A cut stream, kept as its `.part` file for [`crate::repair`].
    Incomplete { path: PathBuf, size: u64, why: String },
}

/// Saves one stream.
fn save(shared: &SinkState, conn: &TcpStream, meter: &Meter) -> Result<Saved> {
    let (limits, dir) = (&shared.config.limits, shared.config.out_dir.as_path());
    let deadline = Instant::now() + limits.header_timeout;
    if let Some(token) = &limits.token {
        check_token(token, conn, deadline, limits.header_timeout)?;
    }
    let mut header = vec![0u8; HEADER_LEN];
    let mut opening = MeteredReader(
        DeadlineReader::new(conn, deadline, limits.header_timeout, "the container header"),
        meter.clone(),
    );
    let n = read_full(&mut opening, &mut header)
        .map_err(|e| Error::io("reading the header; nothing saved", e))?;
    if n < HEADER_LEN {
        return Err(Error::Incomplete(format!(
            "the stream ended after {n} bytes, before a whole header; nothing saved"
        )));
    }
    let name = container_name(hex::encode(Header::decode(&header)?.container_id));
    if let Some(storage) = &shared.remote {
        return save_remote(shared, &**storage, conn, meter, &header, Path::new(&name));
    }
    let done = dir.join(&name);
    let mut part_name = name.clone();
    part_name.push(PART_SUFFIX);
    let part = dir.join(&part_name);
    if done.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists; stream not saved",
            done.display()
        )));
    }
    conn.set_read_timeout(limits.idle_timeout)
        .map_err(|e| Error::io("setting the read timeout", e))?;
    let file = OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
        .map_err(|e| Error::io("creating", e).in_file(&part))?;
    let mut stream = Stream {
        shared,
        part: &part,
        name: &part_name,
        written: 0,
        registered: true,
    };
    shared.quota.begin(&part_name);
    let copied = stream.copy(&header, &mut MeteredReader(conn, meter.clone()), &file)?;
    let size = stream.written;
    let cut_by = match (&copied, ContainerInfo::read(&file)) {
        (Ok(()), Ok(_)) => None,
        (Err(e), _) => Some(format!("the connection failed: {e}")),
        (Ok(()), Err(e)) => Some(e.to_string()),
    };
    if let Some(why) = cut_by {
        stream.keep();
        return Ok(Saved::Incomplete {
            path: part,
            size,
            why,
        });
    }
    // Kept first: if the rename fails, the complete stream stays as the part.
    stream.keep();
    rename_noclobber(&part, &done)?;
    Ok(Saved::Whole { path: done, size })
}

/// The last bytes of a stream the remote sink keeps to check its trailer and footer before the
/// upload is completed: the footer of a container of up to about 46,000 blocks (46 GiB at 1 MiB
/// blocks).
pub const REMOTE_TAIL: usize = 8 << 20;

/// Saves one stream into an object store (see [`SinkServer::bind_storage`]).
fn save_remote(
    shared: &SinkState,
    storage: &dyn Storage,
    conn: &TcpStream,
    meter: &Meter,
    header: &[u8],
    name: &Path,
) -> Result<Saved> {
    let limits = &shared.config.limits;
    let shown = storage.display(name);
    conn.set_read_timeout(limits.idle_timeout)
        .map_err(|e| Error::io("setting the read timeout", e))?;
    // Refuses an existing object; dropped uncommitted (any error below), the upload is aborted.
    let mut out = storage
        .create(name, WriteOptions::default())
        .map_err(|e| match e {
            Error::Exists { .. } => {
                Error::InvalidArgument(format!("{shown} already exists; stream not saved"))
            }
            e => e,
        })?;
    let write_err = |e| Error::io("uploading", e).in_file(&shown);
    let mut tail = Tail::default();
    let mut written = header.len() as u64;
    out.write_all(header).map_err(write_err)?;
    tail.push(header);
    let mut input = MeteredReader(conn, meter.clone());
    let mut buf = vec![0u8; COPY_BUFFER];
    let idle = limits.idle_timeout;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let why = if is_timeout(&e) {
                    limits::idle_error("the sender sent nothing", idle).to_string()
                } else {
                    e.to_string()
                };
                return Err(Error::Incomplete(format!(
                    "the stream was cut after {written} bytes ({why}); nothing saved to {shown}"
                )));
            }
        };
        if let Some(max) = limits.max_size.filter(|&max| written + n as u64 > max) {
            return Err(limits::cut(format!(
                "the stream is larger than {max} bytes (--max-size); nothing saved to {shown}"
            )));
        }
        out.write_all(&buf[..n]).map_err(write_err)?;
        tail.push(&buf[..n]);
        written += n as u64;
    }
    let view = TailView {
        header,
        tail: tail.bytes(),
        size: written,
    };
    if let Err(e) = ContainerInfo::read(&view) {
        return Err(Error::Incomplete(format!(
            "the stream ended after {written} bytes without a valid trailer and footer ({e}); nothing saved to {shown}"
        )));
    }
    out.commit()?;
    Ok(Saved::Whole {
        path: PathBuf::from(shown),
        size: written,
    })
}

/// The last [`REMOTE_TAIL`] bytes (or more) of a stream.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > 2 * REMOTE_TAIL {
            let extra = self.0.len() - REMOTE_TAIL;
            self.0.drain(..extra);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A stream as the container reader sees it: its header and its tail; the middle is not there.
struct TailView<'a> {
    header: &'a [u8],
    tail: &'a [u8],
    size: u64,
}

impl crate::storage::ReadAt for TailView<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let tail_start = self.size - self.tail.len() as u64;
        if end <= self.header.len() as u64 {
            buf.copy_from_slice(&self.header[offset as usize..end as usize]);
        } else if offset >= tail_start {
            let at = (offset - tail_start) as usize;
            buf.copy_from_slice(&self.tail[at..at + buf.len()]);
        } else {
            return Err(io::Error::other(format!(
                "the footer is larger than the {REMOTE_TAIL} bytes a remote sink keeps"
            )));
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

/// A stream being written to its `.part` file, counted in the quota until it is kept (or
/// removed, when dropped without `keep`).
struct Stream<'a> {
    shared: &'a SinkState,
    part: &'a Path,
    name: &'a OsStr,
    written: u64,
    registered: bool,
}

impl Stream<'_> {
    /// Writes `header` then the rest of `input` to `file`, within `--max-size` and the quota.
    /// `Ok(Err(_))`: the connection failed or went silent, and what arrived is in the file;
    /// `Err(_)`: the stream was cut for its size or a write failed, and the part is removed
    /// when `self` is dropped.
    fn copy(&mut self, header: &[u8], input: &mut impl Read, mut file: &File) -> Result<io::Result<()>> {
        let idle = self.shared.config.limits.idle_timeout;
        // A failed write (a full disk) resets the sender: it must not take the stream as saved.
        let part = self.part;
        let write_err = |e| Error::io("writing", e).in_file(part);
        self.admit(header.len())?;
        file.write_all(header).map_err(write_err)?;
        let mut buf = vec![0u8; COPY_BUFFER];
        let ended = loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => break Err(limits::idle_error("the sender sent nothing", idle)),
                Err(e) => break Err(e),
            };
            self.admit(n)?;
            file.write_all(&buf[..n]).map_err(write_err)?;
        };
        file.sync_all().map_err(write_err)?;
        Ok(ended)
    }

    /// Counts `n` more bytes against `--max-size` and the quota.
    fn admit(&mut self, n: usize) -> Result<()> {
        let (n, limits) = (n as u64, &self.shared.config.limits);
        if let Some(max) = limits.max_size.filter(|&max| self.written + n > max) {
            return Err(limits::cut(format!(
                "the stream is larger than {max} bytes (--max-size); {} removed",
                self.part.display()
            )));
        }
        if !self.shared.quota.reserve(n) {
            return Err(limits::cut(format!(
                "the stream would pass the folder's quota of {} bytes (--quota); {} removed",
                self.shared.quota.limit.unwrap_or(0),
                self.part.display()
            )));
        }
        self.written += n;
        Ok(())
    }

    /// The file stays (saved, or kept as a cut `.part`): its bytes move to the folder's total.
    fn keep(mut self) {
        self.shared.quota.end(self.name, self.written, true);
        self.registered = false;
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if self.registered {
            let _ = std::fs::remove_file(self.part);
            self.shared.quota.end(self.name, self.written, false);
        }
    }
}

/// The folder's quota: bytes of the files in it plus those reserved by streams in progress.
/// Files removed by someone else are noticed when a reservation would fail: the folder is then
/// measured again.
struct Quota {
    dir: PathBuf,
    limit: Option<u64>,
    state: Mutex<QuotaState>,
}

#[derive(Default)]
struct QuotaState {
    /// Bytes of the folder's files, streams in progress excepted.
    files: u64,
    /// Bytes written by the streams in progress.
    in_progress: u64,
    /// The `.part` names of the streams in progress.
    active: HashSet<OsString>,
}

impl Quota {
    fn new(dir: &Path, limit: Option<u64>) -> Result<Self> {
        let files = match limit {
            Some(_) => {
                folder_bytes(dir, &HashSet::new()).map_err(|e| Error::io("measuring", e).in_file(dir))?
            }
            None => 0,
        };
        Ok(Quota {
            dir: dir.to_path_buf(),
            limit,
            state: Mutex::new(QuotaState {
                files,
                ..Default::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QuotaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream in progress (to be ended with [`Self::end`]).
    fn begin(&self, name: &OsStr) {
        self.lock().active.insert(name.to_os_string());
    }

    /// Reserves `n` more bytes for a stream in progress; false if the quota does not allow it.
    fn reserve(&self, n: u64) -> bool {
        let mut s = self.lock();
        if let Some(limit) = self.limit {
            if s.files + s.in_progress + n > limit {
                // Measure again: files may have been taken away since.
                match folder_bytes(&self.dir, &s.active) {
                    Ok(files) => s.files = files,
                    Err(_) => return false,
                }
                if s.files + s.in_progress + n > limit {
                    return false;
                }
            }
        }
        s.in_progress += n;
        true
    }

    /// A stream has ended with `written` bytes: kept in the folder, or removed.
    fn end(&self, name: &OsStr, written: u64, kept: bool) {
        let mut s = self.lock();
        s.active.remove(name);
        s.in_progress -= written;
        if kept {
            s.files += written;
        }
    }
}

/// The bytes of the regular files in `dir` (not its subfolders), except those named in `skip`.
fn folder_bytes(dir: &Path, skip: &HashSet<OsString>) -> io::Result<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if skip.contains(&entry.file_name()) {
            continue;
        }
        // A file removed while we list is simply not counted.
        if let Ok(meta) = entry.metadata() {
            if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Renames `from` to `to` unless `to` exists (checked again here: another connection could have
/// saved a container with the same id meanwhile; ids are random, so that is an attack or a replay).
fn rename_noclobber(from: &Path, to: &Path) -> Result<()> {
    std::fs::hard_link(from, to)
        .map_err(|e| Error::io(format!("saving as {}", to.display()), e).in_file(from))?;
    std::fs::remove_file(from).map_err(|e| Error::io("removing the temporary name", e).in_file(from))?;
    Ok(())
}

#[cfg(all(test, feature = "remote"))]
mod remote_tests {
    use super::*;
    use crate::storage::RemoteStorage;
    use std::net::Shutdown;

    /// A container of `len` bytes packed in memory, as a gateway would stream it.
    fn container(len: usize) -> Vec<u8> {
        let key = crate::Key::KeyFile(crate::core::crypto::KeyFileKey::from_bytes([4; 32]));
        let to = [crate::Recipient::try_from(&key).unwrap()];
        let opts = crate::writer::PackOptions {
            block_size: 64 << 10,
            compress: crate::CompressMode::Never,
            ..Default::default()
        };
        let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        let mut packer = crate::writer::StreamPacker::new(Vec::new(), &to, &opts).unwrap();
        packer.write_all(&plain).unwrap();
        packer.finish().unwrap().0
    }

    fn send(addr: SocketAddr, bytes: &[u8]) {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(bytes).unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        // The sink closes (or resets) once it has saved or refused the stream.
        let _ = conn.read_to_end(&mut Vec::new());
    }

    #[test]
    fn a_remote_sink_uploads_complete_streams_and_leaves_nothing_of_a_cut_one() {
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let storage = Arc::new(RemoteStorage::from_store(Arc::clone(&store), "s3://sink"));
        let limits = Limits::default();
        let server =
            SinkServer::bind_storage("127.0.0.1:0", storage.clone() as Arc<dyn Storage>, limits).unwrap();
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        std::thread::spawn(move || server.run());

        let whole = container(3 << 20);
        send(addr, &whole);
        // Cut: the same kind of stream without its end.
        let other = container(1 << 20);
        send(addr, &other[..other.len() / 2]);
        while stats.snapshot().connections_active > 0 {
            std::thread::yield_now();
        }
        let listed = storage.list(Path::new("")).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let name = listed[0].name.clone();
        let object = storage.open(Path::new(&name)).unwrap();
        let mut back = vec![0u8; whole.len()];
        object.read_exact_at(&mut back, 0).unwrap();
        assert!(back == whole, "the saved object differs from the stream");
    }
}
