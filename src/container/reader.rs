//! Reading containers: [`Container`] opens one (trailer → footer → key slots → footer MAC) and
//! then decrypts only the blocks a read needs. Seek, unpack, verify, the mount and the HTTP server
//! all read through it.
//!
//! ```no_run
//! use qeltrix::{Container, Key, crypto::Passphrase};
//! let c = Container::open("movie.mp4.qltx", &Key::Passphrase(Passphrase::new("pw")))?;
//! let mut buf = vec![0u8; 4096];
//! let n = c.read_at(1 << 30, &mut buf)?; // decrypts one block
//! # Ok::<(), qeltrix::Error>(())
//! ```

use crate::container::append::Tip;
use crate::container::chain::Chain;
use crate::container::pipeline::OrderedPool;
use crate::core::codec::{open_block_head, open_payload_from};
use crate::core::codec_v2::{content_hash_v2, decompress_payload_v2, open_block_head_v2, PayloadKey};
use crate::core::crypto::{
    derive_container_keys, unwrap_slot, verify_footer_mac, verify_footer_mac_v2, ContainerKeys, DataKey, Key,
};
use crate::core::file_record::{open_file_record, FileMeta};
use crate::core::format::{
    max_block_len_v2, min_block_len_v2, BlockMetaV2, BlockPrefix, CommitRecord, CompressionV2, ContainerId,
    Footer, FooterEntry, FooterV2, FormatVersion, Header, LayoutCheck, SlotArea, SlotKind, Trailer,
    BLOCK_HEAD_LEN, BLOCK_PREFIX_LEN, FLAG_STREAMING, FOOTER_ENTRY_LEN, FOOTER_FIXED_LEN, FOOTER_HEAD_LEN,
    FOOTER_V2_ENTRY_LEN, FOOTER_V2_HEAD_LEN, FOOTER_V3_ENTRY_LEN, HEADER_LEN, TRAILER_LEN,
};
use crate::core::integrity_v2::check_root;
use crate::core::ranges;
use crate::storage::{Object, ReadAt, Storage};
use crate::{Error, Lock, Result, SlotRefusal};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What can be learned about a container without its key: header, trailer and footer, parsed and
/// checked for consistency, but not authenticated (the footer MAC needs the key).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ContainerInfo {
    /// The parsed header.
    pub header: Header,
    /// The active key-slot area.
    pub slots: SlotArea,
    /// The trailer, read from the last [`TRAILER_LEN`](crate::format::TRAILER_LEN) bytes.
    pub trailer: Trailer,
    /// The footer index; its MAC is not checked here. For a v2 container, the v1 part of each
    /// entry (where the block is, which plaintext it holds); the rest is in `footer_v2`.
    pub footer: Footer,
    /// A v2 container's whole footer: block hashes, root, metadata copies, the sealed file
    /// record. Its root has been checked against its block hashes; nothing here needs the key.
    pub footer_v2: Option<FooterV2>,
    /// Length of the container in bytes.
    pub container_size: u64,
    /// Version 4: the chain of patches over the base footer (the one `trailer`, `footer` and
    /// `footer_v2` describe), walked and checked without the key; `None` before version 4.
    pub chain: Option<Chain>,
}

impl ContainerInfo {
    /// Reads and checks the unauthenticated structure of a container.
    pub fn read(source: &dyn ReadAt) -> Result<Self> {
        let io_err = |what: &str, e: io::Error| Error::io(what, e);
        let container_size = source
            .size()
            .map_err(|e| io_err("reading the container's length", e))?;
        if container_size < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(if container_size < HEADER_LEN as u64 {
                // Short: a cut container if it starts like one, otherwise another kind of file.
                let mut head = vec![0u8; container_size as usize];
                source
                    .read_exact_at(&mut head, 0)
                    .map_err(|e| io_err("reading the header", e))?;
                crate::core::format::short_header(&head, "bytes")
            } else {
                Error::Incomplete(format!(
                    "{container_size} bytes: no room for a footer and trailer"
                ))
            });
        }
        let mut head = vec![0u8; HEADER_LEN];
        source
            .read_exact_at(&mut head, 0)
            .map_err(|e| io_err("reading the header", e))?;
        let header = Header::decode(&head)?;
        let slots = header.active_slots()?;

        // Versions 1 and 2 end with the trailer; version 3 says where its current footer (and
        // the trailer after it) is in a commit record, and bytes after that trailer are a torn
        // tail of an interrupted commit, ignored. In version 4 the record may name a patch
        // footer: the chain is walked back to its base footer, which is read as version 3's.
        let mut chain = None;
        let (trailer_end, generation) = if header.version.has_commits() {
            let mut commit = header.current_commit()?;
            if header.version == FormatVersion::V4 {
                let walked = Chain::walk(source, commit)?;
                commit = CommitRecord {
                    generation: walked.base.generation,
                    footer_offset: walked.base.offset,
                    footer_size: walked.base.size,
                };
                chain = Some(walked);
            }
            let end = commit
                .footer_offset
                .checked_add(commit.footer_size)
                .and_then(|e| e.checked_add(TRAILER_LEN as u64))
                .filter(|&end| end <= container_size && commit.footer_offset >= HEADER_LEN as u64)
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "commit record of generation {}: footer at {} ({} bytes) lies outside the \
                         {container_size}-byte container",
                        commit.generation, commit.footer_offset, commit.footer_size
                    ))
                })?;
            let (offset, size) = (commit.footer_offset, commit.footer_size);
            (end, Some((commit.generation, offset, size)))
        } else {
            (container_size, None)
        };
        let mut tb = [0u8; TRAILER_LEN];
        let trailer_at = trailer_end - TRAILER_LEN as u64;
        source
            .read_exact_at(&mut tb, trailer_at)
            .map_err(|e| io_err("reading the trailer", e))?;
        let trailer = Trailer::decode(&tb, trailer_end)?;
        if let Some((g, offset, size)) = generation {
            if (trailer.footer_offset, trailer.footer_size) != (offset, size) {
                return Err(Error::corrupt(format!(
                    "the trailer after the footer of generation {g} disagrees with its commit record"
                )));
            }
        }

        let (footer, footer_v2) = match header.version {
            FormatVersion::V1 => {
                let fb = read_footer(source, &trailer, header.block_size, FooterLayout::V1)?;
                let footer = Footer::decode(&fb, trailer.footer_offset)?;
                footer.check_layout(header.block_size, trailer.footer_offset)?;
                (footer, None)
            }
            FormatVersion::V2 | FormatVersion::V3 | FormatVersion::V4 => {
                let v2 = match generation {
                    None => {
                        let fb = read_footer(source, &trailer, header.block_size, FooterLayout::V2)?;
                        FooterV2::decode(&fb, trailer.footer_offset, header.block_size)?
                    }
                    Some((g, ..)) => {
                        let fb = read_footer(source, &trailer, header.block_size, FooterLayout::V3)?;
                        FooterV2::decode_v3(&fb, trailer.footer_offset, header.block_size, g)?
                    }
                };
                check_root(&v2, trailer.footer_offset)?;
                let footer = Footer {
                    original_size: v2.original_size,
                    entries: v2.entries.iter().map(|e| e.entry).collect(),
                    mac: v2.mac,
                };
                (footer, Some(v2))
            }
        };

        let header_disagrees = header.is_patched()
            && (header.footer_offset != trailer.footer_offset
                || header.footer_size != trailer.footer_size
                || header.total_blocks != footer.entries.len() as u64
                || header.original_size != footer.original_size);
        if header_disagrees {
            return Err(Error::corrupt(
                "header totals disagree with the footer and trailer",
            ));
        }
        if !header.is_patched() && header.flags & FLAG_STREAMING == 0 && generation.is_none() {
            return Err(Error::corrupt(
                "header totals are missing but the container is not a stream",
            ));
        }
        if chain.as_ref().is_some_and(|c| c.size != footer.original_size) {
            return Err(Error::corrupt(
                "the patch chain's size disagrees with its base footer",
            ));
        }
        Ok(ContainerInfo {
            header,
            slots,
            trailer,
            footer,
            footer_v2,
            container_size,
            chain,
        })
    }

    /// The current generation (version 3 and 4; `None` before): the newest patch's, else the
    /// footer's.
    pub fn generation(&self) -> Option<u64> {
        match &self.chain {
            Some(chain) => Some(chain.generation()),
            None => self.footer_v2.as_ref()?.generation,
        }
    }

    /// Where the trailer after the footer ends (the base footer's, in version 4).
    pub fn footer_end(&self) -> u64 {
        self.trailer.footer_offset + self.trailer.footer_size + TRAILER_LEN as u64
    }

    /// The current generation and where its committed bytes end, for an append (version 3
    /// and 4).
    pub fn tip(&self) -> Option<Tip> {
        let end = match &self.chain {
            Some(chain) => chain.tip().end(),
            None => self.footer_end(),
        };
        Some(Tip {
            end,
            generation: self.generation()?,
        })
    }

    /// Version 4 patches in the current generation (0 for a chain of none, and before
    /// version 4).
    pub fn patch_count(&self) -> usize {
        self.chain.as_ref().map_or(0, |c| c.patches.len())
    }

    /// The container's bytes that no current block, unit or footer uses: superseded versions
    /// and footers of earlier generations (version 3 and 4; 0 before).
    pub fn superseded_bytes(&self) -> u64 {
        let Some(v2) = self.footer_v2.as_ref().filter(|f| f.generation.is_some()) else {
            return 0;
        };
        let base = v2.superseded_bytes(self.trailer.footer_offset);
        let Some(chain) = &self.chain else {
            return base;
        };
        // Past the base footer's trailer, everything is patches: only the current units and
        // the patch footers, with their trailers, are live.
        base + (chain.tip().end() - self.footer_end()).saturating_sub(chain.live_bytes())
    }

    /// The format version.
    pub fn version(&self) -> FormatVersion {
        self.header.version
    }

    /// A v2 container's root (BLAKE3 over its block hashes and file record), readable and
    /// checked without a key; `None` for v1.
    pub fn root(&self) -> Option<[u8; 32]> {
        self.footer_v2.as_ref().map(|f| f.root)
    }

    /// Plaintext length in bytes, from the footer.
    pub fn original_size(&self) -> u64 {
        self.footer.original_size
    }

    /// The number of blocks, from the footer.
    pub fn block_count(&self) -> u64 {
        self.footer.entries.len() as u64
    }
}

/// Unwraps the data key from the first slot `key` opens. The error says whether the key is wrong
/// or the container simply has no slot of that kind.
pub fn unlock_data_key(slots: &SlotArea, container_id: &ContainerId, key: &Key) -> Result<DataKey> {
    // The KDF cost of passphrase slots is read from bytes nothing has authenticated yet: slots
    // above the passphrase's limit, and those past the number it may try, are refused unopened.
    let limits = key.alternatives().into_iter().find_map(|k| match k {
        Key::Passphrase(p) => Some(p),
        _ => None,
    });
    let mut refused = Vec::new();
    let mut passphrase_slots = 0;
    for (i, slot) in slots.slots.iter().enumerate() {
        if let (SlotKind::Passphrase, Some(p)) = (slot.kind, limits) {
            if p.check_cost(slot.param, &format!("key slot #{i}")).is_err() {
                refused.push(SlotRefusal::TooCostly {
                    slot: i,
                    iterations: slot.param,
                    limit: p.limits().max_iterations,
                });
                continue;
            }
            passphrase_slots += 1;
            if passphrase_slots > p.limits().max_slots {
                refused.push(SlotRefusal::NotTried {
                    slot: i,
                    max_slots: p.limits().max_slots,
                });
                continue;
            }
        }
        if let Some(k) = unwrap_slot(key, slot, container_id) {
            return Ok(k);
        }
    }
    if !refused.is_empty() {
        return Err(Error::SlotsRefused { refused });
    }
    let present: Vec<SlotKind> = slots.slots.iter().map(|s| s.kind).collect();
    let tried: Vec<SlotKind> = key.alternatives().iter().filter_map(|k| k.slot_kind()).collect();
    Err(if tried.iter().any(|t| present.contains(t)) {
        Error::WrongKey {
            tried,
            lock: Lock::Container,
        }
    } else {
        Error::NoSlot { tried, present }
    })
}

/// Which footer [`read_footer`] reads.
#[derive(Clone, Copy)]
enum FooterLayout {
    V1,
    V2,
    V3,
}

/// Footer bytes read at once. A larger footer is read piece by piece.
const FOOTER_READ_CHUNK: usize = 1 << 20;

/// Reads the footer the trailer points at. Its size fits the file (checked by `Trailer::decode`),
/// but a sparse file or a source that lies about its length can still claim terabytes: so the
/// footer is read a piece at a time, and each further piece only after the entries so far have
/// tiled the block area as they should. Memory then grows with plausible index entries, never
/// with a bare size field.
fn read_footer(
    source: &dyn ReadAt,
    trailer: &Trailer,
    block_size: u32,
    layout: FooterLayout,
) -> Result<Vec<u8>> {
    let size = usize::try_from(trailer.footer_size)
        .map_err(|_| Error::corrupt(format!("footer of {} bytes", trailer.footer_size)))?;
    let (head_len, entry_len) = match layout {
        FooterLayout::V1 => (FOOTER_HEAD_LEN, FOOTER_ENTRY_LEN),
        FooterLayout::V2 => (FOOTER_V2_HEAD_LEN, FOOTER_V2_ENTRY_LEN),
        FooterLayout::V3 => (FOOTER_V2_HEAD_LEN, FOOTER_V3_ENTRY_LEN),
    };
    // The entries end before the MAC (and, in v2, the file record of at most 4142 bytes): only
    // bytes certainly inside the entries are checked early; decoding checks the rest.
    let entries_end = size.saturating_sub(FOOTER_FIXED_LEN - FOOTER_HEAD_LEN + 4142);
    let mut check = LayoutCheck::new(block_size, trailer.footer_offset);
    let mut v2_next = HEADER_LEN as u64;
    let mut checked = head_len;
    let mut fb = Vec::with_capacity(size.min(FOOTER_READ_CHUNK));
    while fb.len() < size {
        if fb.len() >= FOOTER_READ_CHUNK {
            while checked + entry_len <= fb.len().min(entries_end) {
                let e = FooterEntry::decode(&fb[checked..]);
                match layout {
                    FooterLayout::V1 => check.next(&e)?,
                    FooterLayout::V2 | FooterLayout::V3 => {
                        let index = ((checked - head_len) / entry_len) as u64;
                        // Version 3's blocks lie anywhere before the footer, in any order.
                        if matches!(layout, FooterLayout::V3) {
                            v2_next = e.offset.max(HEADER_LEN as u64);
                        }
                        if e.offset != v2_next
                            || e.len < min_block_len_v2()
                            || e.len > max_block_len_v2(e.plain_size.min(block_size as u64))
                        {
                            return Err(Error::corrupt_block(
                                index,
                                e.offset,
                                "v2 footer entry: block offset or length out of place",
                            ));
                        }
                        v2_next = e.offset.saturating_add(e.len);
                    }
                }
                checked += entry_len;
            }
        }
        let at = fb.len();
        fb.resize(at + (size - at).min(FOOTER_READ_CHUNK), 0);
        source
            .read_exact_at(&mut fb[at..], trailer.footer_offset + at as u64)
            .map_err(|e| Error::io("reading the footer", e))?;
    }
    Ok(fb)
}

/// Unwraps the data key from the first key slot `key` opens and derives the container's keys.
/// Every reader (random access, stream, repair) starts here, so a wrong key is reported the same
/// way everywhere, before any output is written.
pub fn unlock(header: &Header, slots: &SlotArea, key: &Key) -> Result<ContainerKeys> {
    let cid = header.container_id;
    Ok(derive_container_keys(
        unlock_data_key(slots, &cid, key)?,
        header.cipher,
        cid,
    ))
}

/// A failed read of a block's bytes: a short file is corruption (a cut container), and names the block.
fn read_error(e: io::Error, block: u64, offset: u64) -> Error {
    let kind = if e.kind() == io::ErrorKind::UnexpectedEof {
        "container ends inside the block"
    } else {
        "reading the block"
    };
    Error::Corrupt {
        what: format!("{kind}: {e}"),
        block: Some(block),
        offset: Some(offset),
    }
}

/// A segment error (named by block) given the block's container offset.
fn with_offset(e: Error, block_offset: u64) -> Error {
    match e {
        Error::Corrupt {
            what,
            block,
            offset: None,
        } => Error::Corrupt {
            what,
            block,
            offset: Some(block_offset),
        },
        e => e,
    }
}

/// The part of a decrypted block a slice wants. A block shorter than its index entry cannot pass
/// `open_stored`; should one get here, it is corruption, not a panic.
pub(crate) fn block_part<'b>(block: &'b [u8], slice: &ranges::BlockSlice) -> Result<&'b [u8]> {
    block.get(slice.in_block.clone()).ok_or_else(|| Error::Corrupt {
        what: "block is shorter than the footer index says".into(),
        block: Some(slice.index),
        offset: None,
    })
}

/// An open, authenticated container: its index is trusted, its blocks are decrypted on demand.
pub struct Container<S: ReadAt = File> {
    source: S,
    info: ContainerInfo,
    keys: ContainerKeys,
    /// v2: the opened metadata and payload key of recently read blocks, from the footer's copy
    /// of their sealed metadata: a small read costs one disk read and no key derivation.
    block_keys: Mutex<lru::LruCache<u64, Arc<BlockKeyV2>>>,
}

/// What reading a v2 block's segments needs: its metadata and its payload key.
struct BlockKeyV2 {
    meta: BlockMetaV2,
    key: PayloadKey,
}

/// Block keys remembered per open container (about 700 bytes each).
const BLOCK_KEYS_CACHED: usize = 1024;

impl Container<File> {
    /// Opens the container at `path` with `key`. Errors name the file.
    pub fn open(path: impl AsRef<Path>, key: &Key) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("opening", e).in_file(path))?;
        Container::from_source(file, key).map_err(|e| e.in_file(path))
    }
}

impl Container<Object> {
    /// Opens the container at `path` in `storage` with `key`. Errors name the object.
    pub fn open_in(storage: &dyn Storage, path: &Path, key: &Key) -> Result<Self> {
        let name = || storage.display(path);
        let object = storage
            .open(path)
            .map_err(|e| Error::io("opening", e).in_file(name()))?;
        Container::from_source(object, key).map_err(|e| e.in_file(name()))
    }
}

impl<S: ReadAt> Container<S> {
    /// Opens a container from any positioned source: checks the structure, unwraps the data key
    /// from a key slot, and authenticates the footer index before any block is read.
    pub fn from_source(source: S, key: &Key) -> Result<Self> {
        Self::from_source_with_data_key(source, key).map(|(container, _)| container)
    }

    /// [`Container::from_source`] for a caller that has already read the structure with
    /// [`ContainerInfo::read`] (to report a damaged or foreign file before asking for a key):
    /// it is not read again, and the key slot and footer MAC are checked as always.
    pub fn from_info(source: S, info: ContainerInfo, key: &Key) -> Result<Self> {
        Self::authenticate(source, info, key).map(|(container, _)| container)
    }

    /// [`Container::from_source`], also returning the data key the slot held: for `rekey`, which
    /// wraps it in new slots. One unwrap (one passphrase KDF) serves both.
    /// The bytes the container reads from.
    pub(crate) fn source(&self) -> &S {
        &self.source
    }

    pub(crate) fn from_source_with_data_key(source: S, key: &Key) -> Result<(Self, DataKey)> {
        let info = ContainerInfo::read(&source)?;
        Self::authenticate(source, info, key)
    }

    /// Unwraps the data key from a slot of `info` and checks the footer MAC.
    fn authenticate(source: S, info: ContainerInfo, key: &Key) -> Result<(Self, DataKey)> {
        let data_key = unlock_data_key(&info.slots, &info.header.container_id, key)?;
        Self::with_data_key(source, info, data_key.clone()).map(|c| (c, data_key))
    }

    /// A container this process has just written, whose structure `info` it made itself (an
    /// editor's new generation): nothing is read or checked again.
    pub(crate) fn written(source: S, info: ContainerInfo, data_key: DataKey) -> Self {
        let keys = derive_container_keys(data_key, info.header.cipher, info.header.container_id);
        Self::assemble(source, info, keys)
    }

    /// The container of `source`, structure `info` and `keys`, with an empty block-key cache.
    fn assemble(source: S, info: ContainerInfo, keys: ContainerKeys) -> Self {
        Container {
            source,
            info,
            keys,
            block_keys: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(BLOCK_KEYS_CACHED).expect("non-zero"),
            )),
        }
    }

    /// Opens a container whose data key the caller already holds (an editor reopening the
    /// version it wrote): no slot is unwrapped; the footer MAC is checked as always.
    pub(crate) fn with_data_key(source: S, info: ContainerInfo, data_key: DataKey) -> Result<Self> {
        let cid = info.header.container_id;
        let keys = derive_container_keys(data_key, info.header.cipher, cid);
        let bound = info.header.bound_fields();
        let authentic = match &info.footer_v2 {
            None => {
                let unsigned = Footer::encode_unsigned(info.footer.original_size, &info.footer.entries);
                verify_footer_mac(&keys, &bound, &unsigned, &info.footer.mac)
            }
            Some(v2) => verify_footer_mac_v2(&keys, &bound, &v2.encode_unsigned(), &v2.mac),
        };
        if !authentic {
            return Err(Error::Corrupt {
                what: "footer index or header fails authentication (edited, truncated or re-indexed)".into(),
                block: None,
                offset: Some(info.trailer.footer_offset),
            });
        }
        if let Some(chain) = &info.chain {
            chain.authenticate(&bound, &keys)?;
        }
        Ok(Self::assemble(source, info, keys))
    }

    /// The data key (for a new version of this container: [`crate::container::edit`]).
    pub(crate) fn data_key(&self) -> &DataKey {
        &self.keys.data_key
    }

    /// The format version.
    pub fn version(&self) -> FormatVersion {
        self.info.version()
    }

    /// A v2 container's file record (name, mode, mtime of the packed file), opened with the key;
    /// `None` for v1 and for a container packed from a stream.
    pub fn file_meta(&self) -> Result<Option<FileMeta>> {
        let record = self.base_file_meta()?;
        // Version 4: the newest patch's mode and mtime are the file's.
        let newest = self.info.chain.as_ref().and_then(|c| c.patches.last());
        Ok(match (record, newest) {
            (Some(record), Some((_, patch))) => Some(FileMeta {
                mode: patch.mode,
                mtime_sec: patch.mtime_sec,
                mtime_nsec: patch.mtime_nsec,
                ..record
            }),
            (record, _) => record,
        })
    }

    /// The file record of the footer (the base's, in version 4).
    fn base_file_meta(&self) -> Result<Option<FileMeta>> {
        match self
            .info
            .footer_v2
            .as_ref()
            .and_then(|f| f.file_record.as_deref())
        {
            Some(sealed) => open_file_record(&self.keys, sealed)
                .map(Some)
                .map_err(|e| match e {
                    Error::Corrupt { what, .. } => Error::Corrupt {
                        what,
                        block: None,
                        offset: Some(self.info.trailer.footer_offset),
                    },
                    e => e,
                }),
            None => Ok(None),
        }
    }

    /// The metadata and payload key of v2 block `index`, from the footer's (authenticated) copy
    /// of its sealed metadata, remembered for the next read of the block.
    fn block_key_v2(&self, index: u64, entry: &FooterEntry) -> Result<Arc<BlockKeyV2>> {
        let mut cache = self.block_keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(&index) {
            return Ok(Arc::clone(k));
        }
        drop(cache);
        let copy = self
            .info
            .footer_v2
            .as_ref()
            .and_then(|f| f.entries.get(index as usize))
            .ok_or_else(|| self.no_such_block(index))?;
        // The head the block has on disk, if it is as the footer says: prefix, then the copy.
        let mut head = [0u8; BLOCK_HEAD_LEN];
        head[..BLOCK_PREFIX_LEN].copy_from_slice(
            &BlockPrefix {
                index,
                payload_len: u32::try_from(entry.len - BLOCK_HEAD_LEN as u64).unwrap_or(u32::MAX),
            }
            .encode(),
        );
        head[BLOCK_PREFIX_LEN..].copy_from_slice(&copy.sealed_meta);
        let (_, meta) = open_block_head_v2(
            &self.keys,
            index,
            &head,
            entry.offset,
            self.info.header.block_size,
        )
        .map_err(|e| match e {
            Error::Corrupt { what, block, offset } => Error::Corrupt {
                what: format!("footer's metadata copy: {what}"),
                block,
                offset,
            },
            e => e,
        })?;
        if meta.plain_size as u64 != entry.plain_size {
            return Err(Error::corrupt_block(
                index,
                entry.offset,
                "block disagrees with the footer index",
            ));
        }
        let k = Arc::new(BlockKeyV2 {
            key: PayloadKey::new(&self.keys, index, &meta),
            meta,
        });
        let mut cache = self.block_keys.lock().unwrap_or_else(|e| e.into_inner());
        cache.put(index, Arc::clone(&k));
        Ok(k)
    }

    /// Reads plaintext bytes `range` of v2 block `index` into `out` (exactly `range`'s length),
    /// reading and opening only the segments that hold them. A compressed block is read whole.
    fn read_part_v2(&self, index: u64, range: std::ops::Range<usize>, out: &mut [u8]) -> Result<()> {
        let entry = *self.entry(index).ok_or_else(|| self.no_such_block(index))?;
        let Some(chain) = self.info.chain.as_ref().filter(|c| !c.patches.is_empty()) else {
            return self.read_base_part_v2(index, &entry, range, out);
        };
        // Version 4: the units over the range, and the base's bytes only where none is.
        let at = entry.plain_offset + range.start as u64;
        if !chain.covers(at, out.len() as u64) {
            self.read_base_part_v2(index, &entry, range, out)?;
        }
        chain.apply(&self.source, &self.keys, at, out)
    }

    /// [`Self::read_part_v2`] of the base's block, without the units of a version-4 chain.
    fn read_base_part_v2(
        &self,
        index: u64,
        entry: &FooterEntry,
        range: std::ops::Range<usize>,
        out: &mut [u8],
    ) -> Result<()> {
        let entry = *entry;
        let k = self.block_key_v2(index, &entry)?;
        if k.meta.compression != CompressionV2::None {
            // The base's block alone: the caller applies the units of the range it wants.
            let block = self.open_stored_base(index, self.read_raw_block(index, Vec::new())?, false)?;
            let part = block.get(range.clone()).ok_or_else(|| {
                Error::corrupt_block(index, entry.offset, "block is shorter than the footer index says")
            })?;
            out.copy_from_slice(part);
            return Ok(());
        }
        let span = k
            .key
            .segments()
            .span(range.start as u64..range.end as u64)
            .map_err(|_| {
                Error::corrupt_block(index, entry.offset, "block is shorter than the footer index says")
            })?;
        if span.len == 0 {
            return Ok(());
        }
        let at = entry.offset + BLOCK_HEAD_LEN as u64 + span.sealed.start;
        let mut sealed = vec![0u8; (span.sealed.end - span.sealed.start) as usize];
        self.source
            .read_exact_at(&mut sealed, at)
            .map_err(|e| read_error(e, index, entry.offset))?;
        k.key
            .open_segments(span.segments.clone(), &mut sealed)
            .map_err(|e| with_offset(e, entry.offset))?;
        out.copy_from_slice(&sealed[span.skip..span.skip + span.len]);
        Ok(())
    }

    /// The container's header, slots, footer and trailer.
    pub fn info(&self) -> &ContainerInfo {
        &self.info
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.info.original_size()
    }

    /// True when the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of blocks.
    pub fn block_count(&self) -> u64 {
        self.info.block_count()
    }

    /// The footer entry of block `index`, or `None` past the last block.
    pub fn entry(&self, index: u64) -> Option<&FooterEntry> {
        self.info.footer.entries.get(usize::try_from(index).ok()?)
    }

    /// The block holding plaintext byte `offset`, if it is inside the file.
    pub fn block_of(&self, offset: u64) -> Option<u64> {
        ranges::block_of(&self.info.footer.entries, offset)
    }

    /// The blocks the plaintext range `offset..offset+len` (clipped at the end of the file)
    /// needs, each with the slice of it the range wants: see [`ranges::slices`].
    pub fn slices(&self, offset: u64, len: u64) -> ranges::Slices<'_> {
        ranges::slices(&self.info.footer.entries, offset, len)
    }

    /// Decrypts one block. With `verify`, also checks the plaintext's content hash (SHA-256 in v1, BLAKE3 in v2) (the AEAD always
    /// authenticates it; the hash additionally proves the writer hashed what it sealed).
    pub fn read_block(&self, index: u64, verify: bool) -> Result<Vec<u8>> {
        self.read_block_into(index, verify, Vec::new())
    }

    /// [`Self::read_block`] into `buffer` (whatever it holds; its allocation is reused) so that a
    /// caller decrypting many blocks need not allocate one per block. Head and payload come in one
    /// read: one disk round trip per cold block, not two.
    fn read_block_into(&self, index: u64, verify: bool, buffer: Vec<u8>) -> Result<Vec<u8>> {
        let block = self.read_raw_block(index, buffer)?;
        self.open_stored(index, block, verify)
    }

    /// Block `index`'s stored bytes (head and sealed payload), read into `buffer`.
    fn read_raw_block(&self, index: u64, mut buffer: Vec<u8>) -> Result<Vec<u8>> {
        let entry = *self.entry(index).ok_or_else(|| self.no_such_block(index))?;
        // Only the part of the buffer it never held is zeroed: the read overwrites all of it, and
        // zeroing a recycled block first cost an eighth of unpack's CPU time.
        buffer.resize(entry.len as usize, 0);
        self.source
            .read_exact_at(&mut buffer, entry.offset)
            .map_err(|e| read_error(e, index, entry.offset))?;
        Ok(buffer)
    }

    fn no_such_block(&self, index: u64) -> Error {
        Error::InvalidArgument(format!(
            "block {index} does not exist ({} blocks)",
            self.block_count()
        ))
    }

    /// The stored bytes (head and sealed payload) of blocks `first..=last`, back to back: one
    /// read where the blocks are contiguous in the container (always, before version 3), one per
    /// run of contiguous blocks otherwise. Split them with [`Container::stored_range`] and open
    /// each with [`Container::open_stored`]. The lengths come from the authenticated index,
    /// bounded for each block when the footer was read; callers bound the number of blocks.
    pub fn read_stored(&self, first: u64, last: u64) -> Result<Vec<u8>> {
        let last = last.max(first);
        let entries = self
            .info
            .footer
            .entries
            .get(first as usize..=last as usize)
            .ok_or_else(|| self.no_such_block(if self.entry(first).is_none() { first } else { last }))?;
        let total: u64 = entries.iter().map(|e| e.len).sum();
        let mut stored = vec![0u8; total as usize];
        let (mut at, mut i) = (0usize, 0usize);
        while i < entries.len() {
            // A run of blocks each starting where the one before ends: one read.
            let mut j = i + 1;
            while j < entries.len() && entries[j].offset == entries[j - 1].offset + entries[j - 1].len {
                j += 1;
            }
            let run: u64 = entries[i..j].iter().map(|e| e.len).sum();
            let (index, offset) = (first + i as u64, entries[i].offset);
            self.source
                .read_exact_at(&mut stored[at..at + run as usize], offset)
                .map_err(|e| read_error(e, index, offset))?;
            at += run as usize;
            i = j;
        }
        Ok(stored)
    }

    /// Where block `index` lies in the bytes [`Container::read_stored`] returned for a range
    /// starting at block `first`.
    pub fn stored_range(&self, first: u64, index: u64) -> Option<std::ops::Range<usize>> {
        let before = self.info.footer.entries.get(first as usize..index as usize)?;
        let start = usize::try_from(before.iter().map(|e| e.len).sum::<u64>()).ok()?;
        Some(start..start + self.entry(index)?.len as usize)
    }

    /// Checks and decrypts block `index` from its stored bytes (exactly the block: head, then
    /// sealed payload).
    pub fn open_stored(&self, index: u64, block: Vec<u8>, verify: bool) -> Result<Vec<u8>> {
        let mut plain = self.open_stored_base(index, block, verify)?;
        // Version 4: the chain's units over the block.
        if let Some(chain) = &self.info.chain {
            let plain_offset = self.entry(index).map_or(0, |e| e.plain_offset);
            chain.apply(&self.source, &self.keys, plain_offset, &mut plain)?;
        }
        Ok(plain)
    }

    /// [`Self::open_stored`] of the base's block, without the units of a version-4 chain.
    fn open_stored_base(&self, index: u64, block: Vec<u8>, verify: bool) -> Result<Vec<u8>> {
        let entry = *self.entry(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "block {index} does not exist ({} blocks)",
                self.block_count()
            ))
        })?;
        if block.len() as u64 != entry.len {
            return Err(Error::corrupt_block(
                index,
                entry.offset,
                "block disagrees with the footer index",
            ));
        }
        let head: [u8; BLOCK_HEAD_LEN] = crate::core::format::array(&block, 0);
        if self.version().has_v2_blocks() {
            return self.open_stored_v2(index, &entry, &head, block, verify);
        }
        let (prefix, meta) = open_block_head(&self.keys, index, &head, entry.offset)?;
        if entry.len != (BLOCK_HEAD_LEN as u64 + prefix.payload_len as u64)
            || meta.plain_size as u64 != entry.plain_size
        {
            return Err(Error::corrupt_block(
                index,
                entry.offset,
                "block disagrees with the footer index",
            ));
        }
        open_payload_from(
            &self.keys,
            index,
            &meta,
            block,
            BLOCK_HEAD_LEN,
            verify,
            entry.offset,
        )
    }

    /// [`Self::open_stored`] for a v2 block: the head (checked against the footer's copy of the
    /// metadata), every segment, decompression, and with `verify` the BLAKE3 content hash.
    fn open_stored_v2(
        &self,
        index: u64,
        entry: &FooterEntry,
        head: &[u8; BLOCK_HEAD_LEN],
        mut block: Vec<u8>,
        verify: bool,
    ) -> Result<Vec<u8>> {
        let disagrees = || Error::corrupt_block(index, entry.offset, "block disagrees with the footer index");
        let copy = self
            .info
            .footer_v2
            .as_ref()
            .and_then(|f| f.entries.get(index as usize))
            .ok_or_else(disagrees)?;
        let (prefix, meta) =
            open_block_head_v2(&self.keys, index, head, entry.offset, self.info.header.block_size)?;
        if head[BLOCK_PREFIX_LEN..] != copy.sealed_meta {
            return Err(Error::corrupt_block(
                index,
                entry.offset,
                "the block's sealed metadata differs from the footer's copy",
            ));
        }
        if entry.len != BLOCK_HEAD_LEN as u64 + prefix.payload_len as u64
            || meta.plain_size as u64 != entry.plain_size
        {
            return Err(disagrees());
        }
        // Each segment is opened in place and its plaintext moved straight to where it belongs
        // in the block (from the buffer's start): one pass over the bytes, not two.
        let key = PayloadKey::new(&self.keys, index, &meta);
        let segments = key.segments();
        let mut plain_len = 0;
        for j in 0..segments.count() {
            let sealed = segments.sealed_range(j..j + 1);
            let at = BLOCK_HEAD_LEN + sealed.start as usize;
            let n = key
                .open_segment(
                    j,
                    segments.is_last(j),
                    &mut block[at..BLOCK_HEAD_LEN + sealed.end as usize],
                )
                .map_err(|e| with_offset(e, entry.offset))?;
            block.copy_within(at..at + n, plain_len);
            plain_len += n;
        }
        block.truncate(plain_len);
        let plain = decompress_payload_v2(&meta, block, index, entry.offset)?;
        if plain.len() as u64 != entry.plain_size {
            return Err(disagrees());
        }
        if verify && content_hash_v2(&plain) != meta.content_hash {
            return Err(Error::corrupt_block(
                index,
                entry.offset,
                "plaintext BLAKE3 hash does not match",
            ));
        }
        Ok(plain)
    }

    /// Reads plaintext at `offset` into `buf`, decrypting only the blocks that cover it (in a v2
    /// container, only the segments). Returns the number of bytes read: less than `buf.len()`
    /// only at the end of the file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        for slice in self.slices(offset, buf.len() as u64) {
            let at = slice.in_output as usize;
            let len = slice.len();
            if self.version().has_v2_blocks() {
                self.read_part_v2(slice.index, slice.in_block.clone(), &mut buf[at..at + len])?;
            } else {
                let block = self.read_block(slice.index, false)?;
                let part = block_part(&block, &slice)?;
                buf[at..at + part.len()].copy_from_slice(part);
            }
            done = at + len;
        }
        Ok(done)
    }

    /// The plaintext range `offset..offset+len`, clipped at the end of the file.
    pub fn seek_extract(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_range(offset, len, &mut out)?;
        Ok(out)
    }

    /// Streams the plaintext range `offset..offset+len` (clipped at the end) to `out`, one block
    /// at a time. Returns the bytes written.
    pub fn write_range(&self, offset: u64, len: u64, out: &mut dyn Write) -> Result<u64> {
        let mut written = 0;
        let mut part = Vec::new();
        for slice in self.slices(offset, len) {
            let whole_block =
                slice.in_block.len() as u64 == self.entry(slice.index).map_or(0, |e| e.plain_size);
            if self.version().has_v2_blocks() && !whole_block {
                part.resize(slice.len(), 0);
                self.read_part_v2(slice.index, slice.in_block.clone(), &mut part)?;
                out.write_all(&part)
            } else {
                let block = self.read_block(slice.index, false)?;
                out.write_all(block_part(&block, &slice)?)
            }
            .map_err(|e| Error::io("writing the output", e))?;
            written += slice.len() as u64;
        }
        Ok(written)
    }
}

impl<S: ReadAt + 'static> Container<S> {
    /// Decrypts every block in parallel on `workers` threads (0: all cores) and writes the
    /// plaintext to `out` in order. With `verify`, checks every block's content hash too. Memory stays
    /// at about three blocks per worker (two in flight, one recycled). Used by `unpack` and, with
    /// a sink, by `verify`.
    pub fn unpack_to(
        self: &Arc<Self>,
        out: &mut dyn Write,
        verify: bool,
        workers: usize,
        progress: &dyn Fn(u64),
    ) -> Result<u64> {
        let mut pool = OrderedPool::new(workers).map_err(|e| Error::io("starting worker threads", e))?;
        // Written blocks' buffers go back to the workers: allocating and freeing one per block
        // made the allocator return memory to the kernel and fault it in again.
        let spares: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let max_spares = pool.workers();
        let mut written = 0u64;
        let mut write_block = |block: Result<Vec<u8>>| -> Result<()> {
            let block = block?;
            out.write_all(&block)
                .map_err(|e| Error::io("writing the output", e))?;
            written += block.len() as u64;
            progress(block.len() as u64);
            let mut spares = spares.lock().unwrap_or_else(|e| e.into_inner());
            if spares.len() < max_spares {
                spares.push(block);
            }
            Ok(())
        };
        for index in 0..self.block_count() {
            while pool.is_full() {
                write_block(pool.next_result().expect("a full pool has results"))?;
            }
            let container = Arc::clone(self);
            let spares = Arc::clone(&spares);
            pool.submit(move || {
                let buffer = spares.lock().unwrap_or_else(|e| e.into_inner()).pop();
                container.read_block_into(index, verify, buffer.unwrap_or_default())
            });
        }
        while let Some(block) = pool.next_result() {
            write_block(block)?;
        }
        Ok(written)
    }
}
