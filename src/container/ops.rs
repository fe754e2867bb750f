//! File-to-file operations. Every output goes through [`AtomicOutput`], so a wrong key, a corrupt
//! block, a signal or a crash never leaves a partial file behind.

use crate::container::reader::Container;
use crate::container::writer::{PackOptions, PackSummary, StreamPacker};
pub use crate::storage::atomic::{AtomicOutput, EarlyWriteback};
use crate::{Error, Key, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

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
