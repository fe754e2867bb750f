//! The sink: a TCP server that saves each incoming container stream as a file. It needs no key
//! and never decrypts: it is a storage endpoint for a gateway's output.
//!
//! A stream is written to `DIR/<container id>.qltx.part` as it arrives and renamed to
//! `DIR/<container id>.qltx` once it has ended with a structurally valid trailer and footer.
//! A stream that is cut (the sender vanished, a gateway's client vanished) stays as the `.part`
//! file; `qeltrix repair` recovers every block in it that arrived whole. A connection that ends
//! before a whole header arrived, or that does not start like a container, saves nothing.

use super::stats::{Meter, MeteredReader, Stats};
use crate::format::{Header, HEADER_LEN};
use crate::reader::ContainerInfo;
use crate::stream_reader::read_full;
use crate::{Error, Result};
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of a container file still arriving, or cut.
pub const PART_SUFFIX: &str = ".part";

/// A listening sink. See the module docs.
pub struct SinkServer {
    listener: TcpListener,
    out_dir: PathBuf,
    stats: Arc<Stats>,
}

impl SinkServer {
    /// Binds the listening socket; `out_dir` must be an existing folder.
    pub fn bind(addr: impl ToSocketAddrs, out_dir: &Path) -> Result<Self> {
        if !out_dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a folder",
                out_dir.display()
            )));
        }
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("binding the sink's address", e))?;
        Ok(SinkServer {
            listener,
            out_dir: out_dir.to_path_buf(),
            stats: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Accepts connections until the listener fails, saving each on its own thread.
    pub fn run(&self) -> Result<()> {
        let (dir, stats) = (self.out_dir.clone(), Arc::clone(&self.stats));
        super::accept_loop(&self.listener, "sink", move |conn, id, peer| {
            receive(&dir, &stats, conn, id, peer)
        })
    }
}

fn receive(dir: &Path, stats: &Arc<Stats>, conn: TcpStream, id: u64, peer: SocketAddr) {
    let _active = stats.opened();
    let meter = Meter::new(stats);
    eprintln!("qeltrix sink: #{id} {peer} connected");
    let mut input = MeteredReader(conn, meter.clone());
    match save(dir, &mut input) {
        Ok(msg) => eprintln!("qeltrix sink: #{id} {msg}"),
        Err(e) => eprintln!("qeltrix sink: #{id} failed: {e}"),
    }
}

/// Saves one stream; returns the log line for how it ended.
fn save(dir: &Path, input: &mut impl Read) -> Result<String> {
    let mut header = vec![0u8; HEADER_LEN];
    let n = read_full(input, &mut header).map_err(|e| Error::io("reading the header; nothing saved", e))?;
    if n < HEADER_LEN {
        return Err(Error::Incomplete(format!(
            "the stream ended after {n} bytes, before a whole header; nothing saved"
        )));
    }
    let name = format!("{}.qltx", hex::encode(Header::decode(&header)?.container_id));
    let done = dir.join(&name);
    let part = dir.join(format!("{name}{PART_SUFFIX}"));
    if done.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists; stream not saved",
            done.display()
        )));
    }
    let file = OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(&part)
        .map_err(|e| Error::io("creating", e).in_file(&part))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let write_err = |e| Error::io("writing", e).in_file(&part);
    out.write_all(&header).map_err(write_err)?;
    // A read error is a cut stream: keep what arrived.
    let copied = io::copy(input, &mut out);
    out.flush().map_err(write_err)?;
    drop(out);
    file.sync_all().map_err(write_err)?;
    let size = HEADER_LEN as u64 + copied.as_ref().map_or(0, |&n| n);
    let cut_by = match (&copied, ContainerInfo::read(&file)) {
        (Ok(_), Ok(_)) => None,
        (Err(e), _) => Some(format!("the connection failed: {e}")),
        (Ok(_), Err(e)) => Some(e.to_string()),
    };
    if let Some(why) = cut_by {
        return Ok(format!(
            "incomplete container kept as {} ({size} bytes: {why}); `qeltrix repair` recovers its whole blocks",
            part.display()
        ));
    }
    rename_noclobber(&part, &done)?;
    Ok(format!("saved {} ({size} bytes)", done.display()))
}

/// Renames `from` to `to` unless `to` exists (checked again here: another connection could have
/// saved a container with the same id meanwhile; ids are random, so that is an attack or a replay).
fn rename_noclobber(from: &Path, to: &Path) -> Result<()> {
    std::fs::hard_link(from, to)
        .map_err(|e| Error::io(format!("saving as {}", to.display()), e).in_file(from))?;
    std::fs::remove_file(from).map_err(|e| Error::io("removing the temporary name", e).in_file(from))?;
    Ok(())
}
