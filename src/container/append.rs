//! Version 3: a new generation of a container, appended in place (`docs/FORMAT.md`, "Version 3").
//!
//! The read-write mount edits a large file by sealing only the blocks that changed, as new
//! versions after the current data, followed by a new footer and trailer; then it writes the
//! header's commit record for the new generation. The commit record is the commit point: a
//! crash before it leaves the previous generation current (the bytes after its trailer are a
//! torn tail, ignored and later overwritten), a crash after it leaves the new one. Readers that
//! opened the previous generation keep reading it: nothing they use is overwritten.

use crate::container::reader::ContainerInfo;
use crate::core::codec::CompressPolicy;
use crate::core::codec_v2::seal_block_v2;
use crate::core::crypto::{derive_container_keys, footer_mac_v2, DataKey, Entropy};
use crate::core::file_record::{seal_file_record, FileMeta};
use crate::core::format::{
    array, CommitRecord, FooterEntry, FooterEntryV2, FooterV2, FormatVersion, Trailer, BLOCK_PREFIX_LEN,
    TRAILER_LEN,
};
use crate::core::integrity_v2::footer_root;
use crate::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Where block *i* of the new generation comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planned {
    /// The current generation's block *i*, unchanged: its entry is kept as is.
    Keep,
    /// New plaintext `[plain_offset, plain_offset + plain_size)`, sealed now.
    Seal {
        /// Plaintext offset of the block.
        plain_offset: u64,
        /// Plaintext bytes in the block, 1 … block size.
        plain_size: u64,
    },
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The generation now current.
    pub generation: u64,
    /// Blocks sealed.
    pub sealed: u64,
    /// The container's bytes up to the new trailer's end.
    pub end: u64,
}

/// Bytes gathered before one positioned write.
const WRITE_BATCH: usize = 4 << 20;

/// Appends generation g + 1 to `file`, a version-3 container whose current generation g is
/// described by `info` (read from this same file), with the blocks `plan` says and the file
/// record `meta`, reading new plaintext through `read`. `durable`: the commit record is synced
/// too before this returns (the blocks and footer always are, before the record is written).
#[allow(clippy::too_many_arguments)]
pub fn append_generation(
    file: &File,
    info: &ContainerInfo,
    data_key: &DataKey,
    plan: &[Planned],
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    meta: &FileMeta,
    policy: CompressPolicy,
    entropy: &dyn Entropy,
    durable: bool,
) -> Result<Appended> {
    let header = &info.header;
    let current = info
        .footer_v2
        .as_ref()
        .filter(|_| header.version == FormatVersion::V3);
    let Some(generation) = current.and_then(|f| f.generation) else {
        return Err(Error::InvalidArgument(
            "only a version-3 container takes a generation in place".into(),
        ));
    };
    let current = current.expect("checked above");
    let next = generation + 1;
    let keys = derive_container_keys(data_key.clone(), header.cipher, header.container_id);
    let block_size = header.block_size as u64;

    let mut pos = info.trailer.footer_offset + info.trailer.footer_size + TRAILER_LEN as u64;
    let mut batch: Vec<u8> = Vec::new();
    let mut batch_at = pos;
    let flush = |batch: &mut Vec<u8>, at: u64| -> Result<()> {
        file.write_all_at(batch, at)
            .map_err(|e| Error::io("appending blocks", e))?;
        batch.clear();
        Ok(())
    };
    let mut entries = Vec::with_capacity(plan.len());
    let mut plain = vec![0u8; 0];
    let mut payload = Vec::new();
    let (mut original_size, mut sealed) = (0u64, 0u64);
    for (i, step) in plan.iter().enumerate() {
        let entry = match *step {
            Planned::Keep => *current.entries.get(i).ok_or_else(|| {
                Error::InvalidArgument(format!("block {i} kept, but the container has no such block"))
            })?,
            Planned::Seal {
                plain_offset,
                plain_size,
            } => {
                if plain_size == 0 || plain_size > block_size {
                    return Err(Error::InvalidArgument(format!(
                        "block {i}: {plain_size} bytes is not 1 … {block_size}"
                    )));
                }
                plain.resize(plain_size as usize, 0);
                read(plain_offset, &mut plain)?;
                let head = seal_block_v2(&keys, i as u64, &plain, policy, entropy, &mut payload).head;
                let mut hash = blake3::Hasher::new();
                hash.update(&head);
                hash.update(&payload);
                let len = (head.len() + payload.len()) as u64;
                batch.extend_from_slice(&head);
                batch.extend_from_slice(&payload);
                let e = FooterEntryV2 {
                    entry: FooterEntry {
                        offset: pos,
                        len,
                        plain_offset,
                        plain_size,
                    },
                    block_hash: *hash.finalize().as_bytes(),
                    sealed_meta: array(&head, BLOCK_PREFIX_LEN),
                    generation: next,
                };
                pos += len;
                sealed += 1;
                if batch.len() >= WRITE_BATCH {
                    flush(&mut batch, batch_at)?;
                    batch_at = pos;
                }
                e
            }
        };
        if entry.entry.plain_offset != original_size {
            return Err(Error::InvalidArgument(format!(
                "block {i} starts at plaintext {} instead of {original_size}",
                entry.entry.plain_offset
            )));
        }
        original_size += entry.entry.plain_size;
        entries.push(entry);
    }

    let mut footer = FooterV2 {
        original_size,
        root: [0; 32],
        file_record: Some(seal_file_record(&keys, meta, entropy)),
        entries,
        mac: [0; 32],
        generation: Some(next),
    };
    footer.root = footer_root(&footer);
    footer.mac = footer_mac_v2(&keys, &header.bound_fields(), &footer.encode_unsigned());
    let footer = footer.encode();
    let trailer = Trailer {
        footer_offset: pos,
        footer_size: footer.len() as u64,
    };
    batch.extend_from_slice(&footer);
    batch.extend_from_slice(&trailer.encode());
    flush(&mut batch, batch_at)?;
    let end = pos + footer.len() as u64 + TRAILER_LEN as u64;
    // A torn tail longer than this commit (from an earlier, interrupted one) goes.
    file.set_len(end)
        .map_err(|e| Error::io("setting the container's length", e))?;
    // The blocks and footer reach the disk before the record that names them.
    file.sync_data()
        .map_err(|e| Error::io("syncing the new generation", e))?;
    let record = CommitRecord {
        generation: next,
        footer_offset: trailer.footer_offset,
        footer_size: trailer.footer_size,
    };
    file.write_all_at(&record.encode(), CommitRecord::slot_of(next) as u64)
        .map_err(|e| Error::io("writing the commit record", e))?;
    if durable {
        file.sync_data()
            .map_err(|e| Error::io("syncing the commit record", e))?;
    }
    Ok(Appended {
        generation: next,
        sealed,
        end,
    })
}
