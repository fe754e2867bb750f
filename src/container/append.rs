//! Version 3: a new generation of a container, appended in place (`docs/FORMAT.md`, "Version 3").
//!
//! The read-write mount edits a large file by sealing only the blocks that changed, as new
//! versions after the current data, followed by a new footer and trailer; then it writes the
//! header's commit record for the new generation. The commit record is the commit point: a
//! crash before it leaves the previous generation current (the bytes after its trailer are a
//! torn tail, ignored and later overwritten), a crash after it leaves the new one. Readers that
//! opened the previous generation keep reading it: nothing they use is overwritten.

use crate::container::chain::{Chain, Link};
use crate::container::reader::ContainerInfo;
use crate::core::codec::CompressPolicy;
use crate::core::codec_v2::seal_block_v2;
use crate::core::compress::CompressMode;
use crate::core::crypto::{derive_container_keys, footer_mac_v2, ContainerKeys, DataKey, Entropy};
use crate::core::file_record::{seal_file_record, FileMeta};
use crate::core::format::{
    array, max_block_len_v2, CommitRecord, Footer, FooterEntry, FooterEntryV2, FooterV2, FormatVersion,
    Trailer, BLOCK_PREFIX_LEN, COMMIT_B, SIGNATURE_AT, SIGNATURE_LEN, TRAILER_LEN,
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
#[derive(Debug, Clone)]
pub struct Appended {
    /// The generation now current.
    pub generation: u64,
    /// Blocks sealed.
    pub sealed: u64,
    /// The container's bytes up to the new trailer's end.
    pub end: u64,
    /// The container's structure at the new generation (as `ContainerInfo::read` would find it).
    pub info: ContainerInfo,
}

/// A new block's index, plaintext and compression, and what sealing it gives: its head, sealed
/// payload and block hash.
type Job = (u64, Vec<u8>, CompressPolicy);
type Sealed = (Vec<u8>, Vec<u8>, [u8; 32]);

/// Seals `jobs` on up to one thread per core, results in the jobs' order. Plain scoped threads,
/// not a work-stealing pool: the caller may run on a pool whose other jobs wait for locks it
/// holds (the mount's), and a pool thread waiting for its parallel work may pick one of them up.
fn seal_all(jobs: Vec<Job>, keys: &ContainerKeys, entropy: &(dyn Entropy + Sync)) -> Vec<Sealed> {
    let seal = |(index, plain, policy): &Job| -> Sealed {
        let mut payload = Vec::new();
        let head = seal_block_v2(keys, *index, plain, *policy, entropy, &mut payload).head;
        let mut hash = blake3::Hasher::new();
        hash.update(&head);
        hash.update(&payload);
        (head.to_vec(), payload, *hash.finalize().as_bytes())
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if threads < 2 || jobs.len() < 2 {
        return jobs.iter().map(seal).collect();
    }
    let per = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per)
            .map(|chunk| scope.spawn(move || chunk.iter().map(seal).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// True when a v2 block (entry `e`) is stored compressed: shorter than raw segments would be.
fn is_compressed(e: &FooterEntry) -> bool {
    e.len < max_block_len_v2(e.plain_size)
}

/// Bytes gathered before one positioned write.
const WRITE_BATCH: usize = 4 << 20;

/// Plaintext bytes of new blocks read, then sealed in parallel, at a time.
const SEAL_BATCH: u64 = 8 << 20;

/// The container's current generation and where its committed bytes end: what an append goes
/// after. For a version-3 container, its footer's; for one with a chain of patches over that
/// footer (format 4, proposed), the newest patch's (`chain::Chain::fold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    /// The end of the current generation's trailer.
    pub end: u64,
    /// The current generation.
    pub generation: u64,
}

/// Appends generation g + 1 to `file`, a version-3 container whose current generation g is
/// described by `info` (read from this same file), with the blocks `plan` says and the file
/// record `meta`, reading new plaintext through `read`. `after`: append after this tip instead
/// of after `info`'s footer (`info` still gives the blocks that [`Planned::Keep`] keeps, the
/// header and the key slots). `durable`: the commit record is synced too before this returns
/// (the blocks and footer always are, before the record is written).
#[allow(clippy::too_many_arguments)]
pub fn append_generation(
    file: &File,
    info: &ContainerInfo,
    after: Option<Tip>,
    data_key: &DataKey,
    plan: &[Planned],
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    meta: &FileMeta,
    policy: CompressPolicy,
    entropy: &(dyn Entropy + Sync),
    durable: bool,
) -> Result<Appended> {
    let Some(tip) = after.or_else(|| info.tip()) else {
        return Err(Error::InvalidArgument(
            "only a version-3 or -4 container takes a generation in place".into(),
        ));
    };
    let result = append(
        file, info, tip, data_key, plan, read, meta, policy, entropy, durable,
    );
    if let Err(Failed::BeforeRecord(_)) = &result {
        // What was appended is a torn tail no record names: it goes at once, so that a full
        // disk gets its room back (the next commit would overwrite it anyway).
        let _ = file.set_len(tip.end);
    }
    result.map_err(|f| match f {
        Failed::BeforeRecord(e) | Failed::AtRecord(e) => e,
    })
}

/// Where an append failed: before its commit record was written (nothing of it is current),
/// or at or after it.
enum Failed {
    BeforeRecord(Error),
    AtRecord(Error),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed::BeforeRecord(e)
    }
}

#[allow(clippy::too_many_arguments)]
fn append(
    file: &File,
    info: &ContainerInfo,
    tip: Tip,
    data_key: &DataKey,
    plan: &[Planned],
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    meta: &FileMeta,
    policy: CompressPolicy,
    entropy: &(dyn Entropy + Sync),
    durable: bool,
) -> std::result::Result<Appended, Failed> {
    let header = &info.header;
    let current = info.footer_v2.as_ref().filter(|_| header.version.has_commits());
    let Some(current) = current.filter(|f| f.generation.is_some_and(|g| g <= tip.generation)) else {
        return Err(Error::InvalidArgument(
            "only a version-3 or -4 container takes a generation in place".into(),
        )
        .into());
    };
    let next = tip.generation + 1;
    let keys = derive_container_keys(data_key.clone(), header.cipher, header.container_id);
    let block_size = header.block_size as u64;

    let mut pos = tip.end;
    let mut batch: Vec<u8> = Vec::new();
    let mut batch_at = pos;
    let flush = |batch: &mut Vec<u8>, at: u64| -> Result<()> {
        file.write_all_at(batch, at)
            .map_err(|e| Error::io("appending blocks", e))?;
        batch.clear();
        Ok(())
    };
    let mut entries = Vec::with_capacity(plan.len());
    let (mut original_size, mut sealed) = (0u64, 0u64);
    let mut at = 0;
    while at < plan.len() {
        // A run of steps whose new blocks hold at most SEAL_BATCH plaintext bytes: read in
        // order, sealed in parallel, written in order.
        let (mut to, mut bytes, mut jobs) = (at, 0u64, Vec::new());
        while to < plan.len() && (jobs.is_empty() || bytes < SEAL_BATCH) {
            if let Planned::Seal {
                plain_offset,
                plain_size,
            } = plan[to]
            {
                if plain_size == 0 || plain_size > block_size {
                    return Err(Error::InvalidArgument(format!(
                        "block {to}: {plain_size} bytes is not 1 … {block_size}"
                    ))
                    .into());
                }
                let mut plain = vec![0u8; plain_size as usize];
                read(plain_offset, &mut plain)?;
                bytes += plain_size;
                // A block that was stored raw is not tried for compression again: an edit rarely
                // changes what kind of data a block holds, and the try costs more than the seal.
                let policy = match current.entries.get(to) {
                    Some(old) if !is_compressed(&old.entry) => CompressPolicy {
                        mode: CompressMode::Never,
                        ..policy
                    },
                    _ => policy,
                };
                jobs.push((to as u64, plain, policy));
            }
            to += 1;
        }
        let mut done = seal_all(jobs, &keys, entropy).into_iter();
        for (i, step) in plan.iter().enumerate().take(to).skip(at) {
            let entry = match *step {
                Planned::Keep => *current.entries.get(i).ok_or_else(|| {
                    Error::InvalidArgument(format!("block {i} kept, but the container has no such block"))
                })?,
                Planned::Seal {
                    plain_offset,
                    plain_size,
                } => {
                    let (head, payload, block_hash) = done.next().expect("one sealed block per step");
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
                        block_hash,
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
                ))
                .into());
            }
            original_size += entry.entry.plain_size;
            entries.push(entry);
        }
        at = to;
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
    let footer_v2 = footer;
    let footer = footer_v2.encode();
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
        .map_err(|e| Failed::AtRecord(Error::io("writing the commit record", e)))?;
    // The new footer is not what a signer signed, so a signature goes: always written, since
    // `qeltrix sign` may have signed the file since this editor read its header (a page-cache
    // write of 128 bytes, synced with the record). After the record: a crash between the two
    // leaves the new generation with a signature that fails its check, rather than the old
    // generation unsigned.
    file.write_all_at(&[0; SIGNATURE_LEN], SIGNATURE_AT as u64)
        .map_err(|e| Failed::AtRecord(Error::io("removing the signature", e)))?;
    if durable {
        file.sync_data()
            .map_err(|e| Failed::AtRecord(Error::io("syncing the commit record", e)))?;
    }
    let mut new_header = header.clone();
    new_header.commits[usize::from(CommitRecord::slot_of(next) == COMMIT_B)] = record.encode();
    new_header.signature = [0; SIGNATURE_LEN];
    let info = ContainerInfo {
        header: new_header,
        slots: info.slots.clone(),
        trailer,
        footer: Footer {
            original_size,
            entries: footer_v2.entries.iter().map(|e| e.entry).collect(),
            mac: footer_v2.mac,
        },
        // A version-4 container's new base footer starts a chain of no patches.
        chain: (header.version == FormatVersion::V4).then(|| {
            let base = Link {
                generation: next,
                offset: trailer.footer_offset,
                size: trailer.footer_size,
                mac: footer_v2.mac,
            };
            Chain::over(base, original_size)
        }),
        footer_v2: Some(footer_v2),
        container_size: end,
    };
    Ok(Appended {
        generation: next,
        sealed,
        end,
        info,
    })
}
