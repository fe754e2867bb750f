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
use crate::container::writer::PackOptions;
use crate::core::crypto::{derive_container_keys, footer_mac_v2, ContainerKeys, Key, SystemEntropy};
use crate::core::file_record::FileMeta;
use crate::core::format::{
    CommitRecord, FooterV2, FormatVersion, Header, Trailer, COMMIT_B, COMMIT_LEN, HEADER_LEN, TRAILER_LEN,
};
use crate::core::integrity_v2::{check_block_keyless, footer_root};
use crate::storage::atomic::AtomicOutput;
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
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
    let mut info = ContainerInfo::read(&file).map_err(|e| e.in_file(path))?;
    let before = stat.len();
    if !info.header.version.has_commits() {
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
    if info.patch_count() > 0 {
        // Version 4's patches are first folded into the blocks they touch, in place (a base
        // commit, as crash-safe as any): what is left is copied as for version 3.
        info = fold_in_place(path, &opened, &stat).map_err(|e| e.in_file(path))?;
    }
    let mut out = AtomicOutput::create_with_mode(path, true, stat.mode() & 0o7777)?;
    let after = compact_into(&file, &info, &keys, out.file(), None, true).map_err(|e| e.in_file(path))?;
    if let Ok(mtime) = stat.modified() {
        let _ = out.file().set_modified(mtime);
    }
    out.commit()?;
    Ok(Compacted {
        before,
        after,
        rewritten: true,
    })
}

/// Folds the patches of the version-4 container `opened` (at `path`, whose metadata is `stat`)
/// into a new base generation appended to it, durably. Returns its structure.
fn fold_in_place(path: &Path, opened: &Container, stat: &std::fs::Metadata) -> Result<ContainerInfo> {
    let info = opened.info();
    let chain = info.chain.as_ref().expect("a chain with patches");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening the container to fold its patches", e))?;
    let meta = opened
        .file_meta()?
        .unwrap_or_else(|| FileMeta::from_file(path, stat));
    let policy = PackOptions::default().compress_policy();
    let header = &info.header;
    let keys = derive_container_keys(opened.data_key().clone(), header.cipher, header.container_id);
    let mut base = |offset: u64, buf: &mut [u8]| -> Result<()> {
        match opened.read_at(offset, buf)? {
            n if n == buf.len() => Ok(()),
            _ => Err(Error::corrupt(format!(
                "the plaintext ends before byte {}",
                offset + buf.len() as u64
            ))),
        }
    };
    let folded = chain.fold(
        &file,
        info,
        opened.data_key(),
        &keys,
        &mut base,
        &meta,
        policy,
        &SystemEntropy,
        true,
    )?;
    Ok(folded.info)
}

/// Writes the current blocks of the version-3 container `file` (structure `info`, keys `keys`)
/// into `out`, an empty file, as a container of its own: version 2, or with `v3` version 3 at
/// that generation (every block keeps its block generation). The blocks are copied as stored,
/// each checked against its entry's block hash when `check`. Returns the new length.
pub(crate) fn compact_into(
    file: &File,
    info: &ContainerInfo,
    keys: &ContainerKeys,
    out: &File,
    v3: Option<u64>,
    check: bool,
) -> Result<u64> {
    let header = &info.header;
    let footer = info
        .footer_v2
        .as_ref()
        .filter(|f| f.generation.is_some())
        .ok_or_else(|| Error::InvalidArgument("only a version-3 or -4 container is compacted".into()))?;
    if info.patch_count() > 0 {
        return Err(Error::InvalidArgument(
            "a version-4 container's patches are folded before it is compacted".into(),
        ));
    }
    let new_header = Header {
        // With `v3`, the version is kept (3 or 4: a version-4 base with no patches yet).
        version: if v3.is_some() {
            header.version
        } else {
            FormatVersion::V2
        },
        commits: [[0; COMMIT_LEN]; 2],
        // A new footer: a signature of the old one would no longer match.
        signature: [0; crate::core::format::SIGNATURE_LEN],
        ..header.clone()
    };
    let io = |what: &str, e: std::io::Error| Error::io(what.to_string(), e);
    let mut w = std::io::BufWriter::with_capacity(4 << 20, out);
    w.write_all(&new_header.encode())
        .map_err(|e| io("writing the header", e))?;
    let mut entries = footer.entries.clone();
    let mut at = HEADER_LEN as u64;
    let mut block = Vec::new();
    for (i, e) in footer.entries.iter().enumerate() {
        block.resize(e.entry.len as usize, 0);
        file.read_exact_at(&mut block, e.entry.offset)
            .map_err(|err| Error::corrupt_block(i as u64, e.entry.offset, format!("reading: {err}")))?;
        if check {
            check_block_keyless(i as u64, e, &block)?;
        }
        w.write_all(&block).map_err(|err| io("writing a block", err))?;
        entries[i].entry.offset = at;
        at += e.entry.len;
    }
    let mut new_footer = FooterV2 {
        entries,
        generation: v3,
        ..footer.clone()
    };
    if v3.is_none() {
        for e in &mut new_footer.entries {
            e.generation = 0;
        }
    }
    new_footer.root = footer_root(&new_footer);
    new_footer.mac = footer_mac_v2(keys, &new_header.bound_fields(), &new_footer.encode_unsigned());
    let encoded = new_footer.encode();
    let trailer = Trailer {
        footer_offset: at,
        footer_size: encoded.len() as u64,
    };
    w.write_all(&encoded)
        .and_then(|()| w.write_all(&trailer.encode()))
        .and_then(|()| w.flush())
        .map_err(|e| io("writing the footer", e))?;
    drop(w);
    let mut patched = new_header;
    match v3 {
        Some(generation) => {
            let record = CommitRecord {
                generation,
                footer_offset: trailer.footer_offset,
                footer_size: trailer.footer_size,
            };
            patched.commits[usize::from(CommitRecord::slot_of(generation) == COMMIT_B)] = record.encode();
        }
        None => {
            patched.total_blocks = new_footer.entries.len() as u64;
            patched.original_size = new_footer.original_size;
            patched.footer_offset = trailer.footer_offset;
            patched.footer_size = trailer.footer_size;
        }
    }
    out.write_all_at(&patched.encode(), 0)
        .map_err(|e| io("patching the header", e))?;
    Ok(at + trailer.footer_size + TRAILER_LEN as u64)
}
