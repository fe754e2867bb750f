//! `qeltrix compact`: a version-3 container (edited in place by the read-write mount) rewritten
//! as a version-2 one holding only its current blocks.
//!
//! The blocks are copied as they are stored, never decrypted: a v3 block is sealed exactly as a
//! v2 block (its keys bind the container id and index, not where it lies), and each is checked
//! against its footer entry's BLAKE3 hash on the way. The sealed file record is kept too. Only
//! the footer is new: v2's, under the container's footer MAC key, so compaction needs the key.
//! The new file replaces the old one atomically (temporary name, rename), with its mode and
//! modification time.

use crate::container::reader::{Container, ContainerInfo};
use crate::container::writer::footer_for;
use crate::core::crypto::{derive_container_keys, Key};
use crate::core::format::{array, FooterEntry, FormatVersion, Header, Trailer, BLOCK_PREFIX_LEN, HEADER_LEN};
use crate::core::integrity_v2::check_block_keyless;
use crate::storage::atomic::AtomicOutput;
use crate::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// What [`compact`] did to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compacted {
    /// The container's length before.
    pub before: u64,
    /// Its length after (equal to `before` when it was left as it was).
    pub after: u64,
    /// False for a container that had nothing to reclaim (versions 1 and 2).
    pub rewritten: bool,
}

/// Rewrites the version-3 container at `path` as version 2, keeping only its current blocks;
/// leaves versions 1 and 2 as they are. `key` opens the container (the footer MAC is checked
/// before anything is written, and the new one needs the key).
pub fn compact(path: &Path, key: &Key) -> Result<Compacted> {
    let file = File::open(path).map_err(|e| Error::io("opening the container", e).in_file(path))?;
    let stat = file
        .metadata()
        .map_err(|e| Error::io("reading the container's metadata", e).in_file(path))?;
    let info = ContainerInfo::read(&file).map_err(|e| e.in_file(path))?;
    let before = stat.len();
    if info.header.version != FormatVersion::V3 {
        return Ok(Compacted {
            before,
            after: before,
            rewritten: false,
        });
    }
    let header = &info.header;
    // Opening checks the current footer's MAC: it must be the writer's before it is rewritten
    // under the key.
    let reopened = file
        .try_clone()
        .map_err(|e| Error::io("opening the container", e).in_file(path))?;
    let opened = Container::from_info(reopened, info.clone(), key).map_err(|e| e.in_file(path))?;
    let keys = derive_container_keys(opened.data_key().clone(), header.cipher, header.container_id);
    let footer = info.footer_v2.as_ref().expect("a v3 container has a v3 footer");

    let v2 = Header {
        version: FormatVersion::V2,
        commits: [[0; crate::core::format::COMMIT_LEN]; 2],
        ..header.clone()
    };
    let mut out = AtomicOutput::create_with_mode(path, true, stat.mode() & 0o7777)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out.file());
    let io = |what: &str, e: std::io::Error| Error::io(what.to_string(), e).in_file(path);
    w.write_all(&v2.encode())
        .map_err(|e| io("writing the header", e))?;
    let (mut entries, mut hashes) = (Vec::with_capacity(footer.entries.len()), Vec::new());
    let mut at = HEADER_LEN as u64;
    let mut block = Vec::new();
    for (i, e) in footer.entries.iter().enumerate() {
        block.resize(e.entry.len as usize, 0);
        file.read_exact_at(&mut block, e.entry.offset).map_err(|err| {
            Error::corrupt_block(i as u64, e.entry.offset, format!("reading: {err}")).in_file(path)
        })?;
        check_block_keyless(i as u64, e, &block).map_err(|err| err.in_file(path))?;
        w.write_all(&block).map_err(|err| io("writing a block", err))?;
        entries.push(FooterEntry {
            offset: at,
            ..e.entry
        });
        hashes.push((e.block_hash, array(&block, BLOCK_PREFIX_LEN)));
        at += e.entry.len;
    }
    let (new_footer, _) = footer_for(
        &v2,
        &keys,
        footer.original_size,
        &entries,
        &hashes,
        footer.file_record.clone(),
        None,
    );
    let trailer = Trailer {
        footer_offset: at,
        footer_size: new_footer.len() as u64,
    };
    w.write_all(&new_footer)
        .and_then(|()| w.write_all(&trailer.encode()))
        .map_err(|e| io("writing the footer", e))?;
    w.flush().map_err(|e| io("writing the container", e))?;
    drop(w);
    let patched = Header {
        total_blocks: entries.len() as u64,
        original_size: footer.original_size,
        footer_offset: trailer.footer_offset,
        footer_size: trailer.footer_size,
        ..v2
    };
    out.file()
        .write_all_at(&patched.encode(), 0)
        .map_err(|e| io("patching the header", e))?;
    if let Ok(mtime) = stat.modified() {
        let _ = out.file().set_modified(mtime);
    }
    out.commit()?;
    Ok(Compacted {
        before,
        after: at + trailer.footer_size + crate::core::format::TRAILER_LEN as u64,
        rewritten: true,
    })
}
