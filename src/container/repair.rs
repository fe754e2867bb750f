//! Recovering an incomplete container (a cut stream, an interrupted writer): every block that
//! arrived whole is kept, and a new footer and trailer are written for them.
//!
//! The blocks are walked front to back with [`StreamReader`], and each one is authenticated in
//! full (head, payload and plaintext hash) before it is kept, so a repaired container holds only
//! genuine blocks, in their original order, under the original header and key slots. The walk
//! stops at the first block that is cut short or fails to authenticate: a later block cannot be
//! kept without leaving a hole in the plaintext. The new index is signed with the container's own
//! footer MAC key, which is why repair needs the key.
//!
//! ```no_run
//! use qeltrix::{Key, crypto::KeyFileKey, repair::repair};
//! let key = Key::KeyFile(KeyFileKey::from_bytes([7; 32]));
//! let report = repair("cut.qltx.part".as_ref(), "cut.qltx".as_ref(), &key, false)?;
//! println!("{} blocks, {} bytes recovered", report.blocks, report.plain_bytes);
//! # Ok::<(), qeltrix::Error>(())
//! ```

use crate::container::reader::Container;
use crate::container::stream_reader::StreamReader;
use crate::container::writer::footer_for;
use crate::core::crypto::Key;
use crate::core::format::{array, FormatVersion, Trailer, BLOCK_PREFIX_LEN, HEADER_LEN};
use crate::storage::{LocalStorage, ReadAt, SequentialReader, Storage, WriteOptions};
use crate::{Error, Result};
use std::io::{BufReader, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// What a repair found and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// The input was already a complete, authentic container: nothing was written.
    pub already_complete: bool,
    /// Blocks recovered.
    pub blocks: u64,
    /// Plaintext bytes in the recovered blocks.
    pub plain_bytes: u64,
    /// Size of the input file in bytes.
    pub input_size: u64,
    /// Size of the repaired container.
    pub output_size: u64,
    /// Input bytes after the last recovered block that could not be kept.
    pub discarded_bytes: u64,
    /// Why the walk stopped (a cut, a block failing authentication), if it did not reach a footer.
    pub stopped_by: Option<String>,
}

/// Rebuilds the footer and trailer of `input` from its whole blocks, into `output` (which may be
/// `input` itself: the repaired file replaces it atomically). Fails, writing nothing, on a wrong
/// key or an input that is not a container.
pub fn repair(input: &Path, output: &Path, key: &Key, overwrite: bool) -> Result<RepairReport> {
    repair_in(&LocalStorage::anywhere(), input, output, key, overwrite)
}

/// [`repair`], with `input` and `output` in `storage`. The header is written last, so the
/// storage's writer must be able to seek (a local file can).
pub fn repair_in(
    storage: &dyn Storage,
    input: &Path,
    output: &Path,
    key: &Key,
    overwrite: bool,
) -> Result<RepairReport> {
    repair_inner(storage, input, output, key, overwrite).map_err(|e| e.in_file(storage.display(input)))
}

fn repair_inner(
    storage: &dyn Storage,
    input: &Path,
    output: &Path,
    key: &Key,
    overwrite: bool,
) -> Result<RepairReport> {
    let source: Arc<dyn ReadAt> = Arc::from(storage.open(input).map_err(|e| Error::io("opening", e))?);
    let input_size = source.size().map_err(|e| Error::io("reading the length", e))?;
    if Container::from_source(Arc::clone(&source), key).is_ok() {
        return Ok(RepairReport {
            already_complete: true,
            blocks: 0,
            plain_bytes: 0,
            input_size,
            output_size: input_size,
            discarded_bytes: 0,
            stopped_by: None,
        });
    }
    let sequential = SequentialReader::new(source).map_err(|e| Error::io("reading the length", e))?;
    let mut stream = StreamReader::open(BufReader::with_capacity(1 << 20, sequential), key)?;
    let output_name = storage.display(output);
    let mut out = storage.create(output, WriteOptions::overwrite(overwrite))?;
    let write_err = |e| Error::io("writing the repaired container", e).in_file(&output_name);
    let Some(writer) = out.seekable() else {
        return Err(Error::InvalidArgument(format!(
            "{output_name}: repair writes the header last, which this storage cannot do"
        )));
    };
    writer.write_all(&[0u8; HEADER_LEN]).map_err(write_err)?;
    let mut written = 0;
    let mut v2 = Vec::new();
    let stopped_by = loop {
        let block = match stream.next_sealed() {
            Ok(Some(block)) => block,
            Ok(None) => break None,
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => break Some(e.to_string()),
        };
        let (head, payload) = (block.head, block.payload.clone());
        if let Err(e) = block.open(stream.keys(), true) {
            break Some(e.to_string());
        }
        writer
            .write_all(&head)
            .and_then(|()| writer.write_all(&payload))
            .map_err(write_err)?;
        if stream.header().version == FormatVersion::V2 {
            let mut hash = blake3::Hasher::new();
            hash.update(&head);
            hash.update(&payload);
            v2.push((*hash.finalize().as_bytes(), array(&head, BLOCK_PREFIX_LEN)));
        }
        written += 1;
    };
    // A block whose payload failed is in the reader's index but not in the output.
    let kept = stream.entries()[..written].to_vec();
    let plain_bytes = kept.last().map_or(0, |e| e.plain_offset + e.plain_size);
    let blocks_end = kept.last().map_or(HEADER_LEN as u64, |e| e.offset + e.len);
    let mut header = stream.header().clone();
    // A v2 file record lives in the footer, which a cut container has lost.
    let (footer, _root) = footer_for(&header, stream.keys(), plain_bytes, &kept, &v2, None, None);
    let trailer = Trailer {
        footer_offset: blocks_end,
        footer_size: footer.len() as u64,
    };
    writer
        .write_all(&footer)
        .and_then(|()| writer.write_all(&trailer.encode()))
        .map_err(write_err)?;
    // A new footer: a signature of the old one would no longer match.
    header.signature = [0; crate::core::format::SIGNATURE_LEN];
    header.total_blocks = kept.len() as u64;
    header.original_size = plain_bytes;
    header.footer_offset = trailer.footer_offset;
    header.footer_size = trailer.footer_size;
    writer
        .seek(SeekFrom::Start(0))
        .and_then(|_| writer.write_all(&header.encode()))
        .and_then(|()| writer.flush())
        .map_err(write_err)?;
    out.commit().map_err(|e| e.in_file(&output_name))?;
    let output_size = blocks_end + trailer.footer_size + trailer.encode().len() as u64;
    Ok(RepairReport {
        already_complete: false,
        blocks: kept.len() as u64,
        plain_bytes,
        input_size,
        output_size,
        discarded_bytes: input_size.saturating_sub(blocks_end),
        stopped_by,
    })
}
