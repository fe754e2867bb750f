//! File-to-file operations, and the rule that output files appear only when complete: they are
//! written under a temporary name in the destination's folder and renamed on success, so a wrong
//! key, a corrupt block or a crash never leaves a partial file behind.

use crate::reader::Container;
use crate::writer::{PackOptions, PackSummary, StreamPacker};
use crate::{Error, Key, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::NamedTempFile;

/// An output file under construction: a temporary file beside the destination, renamed onto it
/// by [`AtomicOutput::commit`]. Dropped without commit, it is removed.
pub struct AtomicOutput {
    temp: NamedTempFile,
    dest: PathBuf,
    overwrite: bool,
}

impl AtomicOutput {
    /// Prepares to write `dest`. Unless `overwrite`, an existing `dest` is an error now (and
    /// again at commit, should one appear meanwhile).
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        if !overwrite && dest.exists() {
            return Err(Error::InvalidArgument(format!(
                "{} exists; use --force to overwrite it",
                dest.display()
            )));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".qeltrix-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
        Ok(AtomicOutput {
            temp,
            dest: dest.to_path_buf(),
            overwrite,
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// A buffered writer for the temporary file that starts the kernel's writeback every few MiB,
    /// so the fsync in [`AtomicOutput::commit`] finds little left to do and the disk works while
    /// the crypto does.
    pub fn writer(&mut self) -> BufWriter<EarlyWriteback<'_>> {
        BufWriter::with_capacity(
            1 << 20,
            EarlyWriteback {
                file: self.temp.as_file_mut(),
                position: 0,
                flushed_to: 0,
            },
        )
    }

    /// Syncs the data and renames the temporary file onto the destination.
    pub fn commit(self) -> Result<()> {
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io("syncing the output", e))?;
        let dest = self.dest;
        let persisted = if self.overwrite {
            self.temp.persist(&dest).map(drop)
        } else {
            self.temp.persist_noclobber(&dest).map(drop)
        };
        persisted.map_err(|e| Error::io(format!("renaming the output to {}", dest.display()), e.error))
    }
}

/// Bytes written between two writeback starts.
const WRITEBACK_STEP: u64 = 8 << 20;

/// A file writer that asks the kernel to start writing back each [`WRITEBACK_STEP`] as soon as it
/// is written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: asynchronous, no waiting, no durability
/// promise of its own; the fsync at commit gives that).
pub struct EarlyWriteback<'a> {
    file: &'a mut File,
    position: u64,
    flushed_to: u64,
}

impl Write for EarlyWriteback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.position += n as u64;
        if self.position >= self.flushed_to + WRITEBACK_STEP {
            use std::os::fd::AsRawFd;
            let len = self.position - self.flushed_to;
            // SAFETY: the descriptor is open for the life of `self.file`; the call only schedules
            // I/O on it. A failure is not an error for us: commit's fsync still syncs everything.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.flushed_to as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed_to = self.position;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl std::io::Seek for EarlyWriteback<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.position = self.file.seek(pos)?;
        self.flushed_to = self.flushed_to.min(self.position);
        Ok(self.position)
    }
}

/// Packs `input` into a new container file `output`.
pub fn pack(
    input: &Path,
    output: &Path,
    keys: &[Key],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    let mut file = File::open(input).map_err(|e| Error::io("opening the input", e).in_file(input))?;
    pack_reader(&mut file, output, keys, opts, overwrite)
}

/// Packs everything `input` yields into a new container file `output` (the stdin path).
pub fn pack_reader(
    input: &mut dyn std::io::Read,
    output: &Path,
    keys: &[Key],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    pack_into_file(output, keys, opts, overwrite, |packer| {
        packer.pack_from(input).map(drop)
    })
}

type FilePacker<'a> = StreamPacker<BufWriter<EarlyWriteback<'a>>>;

/// Creates the container file `output` (all or nothing): `fill` writes the plaintext into the
/// packer, then the container is finished, synced and renamed into place.
fn pack_into_file(
    output: &Path,
    keys: &[Key],
    opts: &PackOptions,
    overwrite: bool,
    fill: impl FnOnce(&mut FilePacker<'_>) -> Result<()>,
) -> Result<PackSummary> {
    let mut out = AtomicOutput::create(output, overwrite)?;
    let writer = out.writer();
    let mut packer = StreamPacker::new_seekable(writer, keys, opts)?;
    fill(&mut packer)?;
    let (writer, summary) = packer.finish()?;
    writer
        .into_inner()
        .map_err(|e| Error::io("writing the container", e.into_error()))?;
    out.commit().map_err(|e| e.in_file(output))?;
    Ok(summary)
}

/// How to unpack.
#[derive(Clone, Copy, Debug)]
pub struct UnpackOptions {
    /// Recompute each block's SHA-256 (the AEAD is checked regardless).
    pub verify: bool,
    pub workers: usize,
    pub overwrite: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            verify: true,
            workers: 0,
            overwrite: false,
        }
    }
}

/// Decrypts the container `input` into the file `output`, in parallel, all or nothing.
pub fn unpack(input: &Path, output: &Path, key: &Key, opts: &UnpackOptions) -> Result<u64> {
    let container = Arc::new(Container::open(input, key)?);
    unpack_container(&container, input, output, opts, &|_| {})
}

/// Decrypts an open container into the file `output`; `progress` gets each block's byte count.
pub fn unpack_container(
    container: &Arc<Container>,
    input: &Path,
    output: &Path,
    opts: &UnpackOptions,
    progress: &dyn Fn(u64),
) -> Result<u64> {
    let mut out = AtomicOutput::create(output, opts.overwrite)?;
    let mut writer = out.writer();
    let n = container
        .unpack_to(&mut writer, opts.verify, opts.workers, progress)
        .map_err(|e| e.in_file(input))?;
    writer
        .flush()
        .map_err(|e| Error::io("writing the output", e).in_file(output))?;
    drop(writer);
    out.commit().map_err(|e| e.in_file(output))?;
    Ok(n)
}

/// Re-encrypts `input` into `output` under a new random data key and fresh block keys, with key
/// slots for `new_keys`, packed with `opts` (cipher, block size, compression). Streams block by
/// block: memory stays bounded whatever the container's size.
pub fn reencrypt(
    input: &Path,
    output: &Path,
    open_key: &Key,
    new_keys: &[Key],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    let container = Container::open(input, open_key)?;
    pack_into_file(output, new_keys, opts, overwrite, |packer| {
        container
            .write_range(0, container.len(), packer)
            .map(drop)
            .map_err(|e| e.in_file(input))
    })
}
