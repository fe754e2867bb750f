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

use crate::block::{open_block_head, open_payload_from};
use crate::crypto::{derive_container_keys, unwrap_slot, verify_footer_mac, ContainerKeys, Key};
use crate::format::{
    Footer, FooterEntry, Header, SlotArea, Trailer, BLOCK_HEAD_LEN, FLAG_STREAMING, HEADER_LEN, TRAILER_LEN,
};
use crate::pipeline::OrderedPool;
use crate::source::ReadAt;
use crate::{Error, Result};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// What can be learned about a container without its key: header, trailer and footer, parsed and
/// checked for consistency, but not authenticated (the footer MAC needs the key).
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub header: Header,
    pub slots: SlotArea,
    pub trailer: Trailer,
    pub footer: Footer,
    pub container_size: u64,
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
                Error::NotAContainer(format!("{container_size} bytes is shorter than the header"))
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

        let mut tb = [0u8; TRAILER_LEN];
        let trailer_at = container_size - TRAILER_LEN as u64;
        source
            .read_exact_at(&mut tb, trailer_at)
            .map_err(|e| io_err("reading the trailer", e))?;
        let trailer = Trailer::decode(&tb, container_size)?;

        // Bounded by the file's own length (checked by Trailer::decode), never by a bare field.
        let mut fb = vec![0u8; trailer.footer_size as usize];
        source
            .read_exact_at(&mut fb, trailer.footer_offset)
            .map_err(|e| io_err("reading the footer", e))?;
        let footer = Footer::decode(&fb, trailer.footer_offset)?;
        footer.check_layout(header.block_size, trailer.footer_offset)?;

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
        if !header.is_patched() && header.flags & FLAG_STREAMING == 0 {
            return Err(Error::corrupt(
                "header totals are missing but the container is not a stream",
            ));
        }
        Ok(ContainerInfo {
            header,
            slots,
            trailer,
            footer,
            container_size,
        })
    }

    pub fn original_size(&self) -> u64 {
        self.footer.original_size
    }

    pub fn block_count(&self) -> u64 {
        self.footer.entries.len() as u64
    }
}

/// An open, authenticated container: its index is trusted, its blocks are decrypted on demand.
pub struct Container<S: ReadAt = File> {
    source: S,
    info: ContainerInfo,
    keys: ContainerKeys,
}

impl Container<File> {
    /// Opens the container at `path` with `key`. Errors name the file.
    pub fn open(path: impl AsRef<Path>, key: &Key) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("opening", e).in_file(path))?;
        Container::from_source(file, key).map_err(|e| e.in_file(path))
    }
}

impl<S: ReadAt> Container<S> {
    /// Opens a container from any positioned source: checks the structure, unwraps the data key
    /// from a key slot, and authenticates the footer index before any block is read.
    pub fn from_source(source: S, key: &Key) -> Result<Self> {
        let info = ContainerInfo::read(&source)?;
        let cid = info.header.container_id;
        let data_key = info
            .slots
            .slots
            .iter()
            .find_map(|slot| unwrap_slot(key, slot, &cid))
            .ok_or_else(|| {
                let kinds: Vec<&str> = info.slots.slots.iter().map(|s| s.kind.name()).collect();
                if kinds.contains(&key.slot_kind().name()) {
                    Error::WrongKey(format!(
                        "the {} does not open any key slot",
                        key.slot_kind().name()
                    ))
                } else {
                    Error::WrongKey(format!(
                        "the container has no {} slot (its slots: {})",
                        key.slot_kind().name(),
                        kinds.join(", ")
                    ))
                }
            })?;
        let keys = derive_container_keys(data_key, info.header.cipher, cid);
        let unsigned = Footer::encode_unsigned(info.footer.original_size, &info.footer.entries);
        if !verify_footer_mac(&keys, &info.header.bound_fields(), &unsigned, &info.footer.mac) {
            return Err(Error::Corrupt {
                what: "footer index or header fails authentication (edited, truncated or re-indexed)".into(),
                block: None,
                offset: Some(info.trailer.footer_offset),
            });
        }
        Ok(Container { source, info, keys })
    }

    pub fn info(&self) -> &ContainerInfo {
        &self.info
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.info.original_size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn block_count(&self) -> u64 {
        self.info.block_count()
    }

    pub fn entry(&self, index: u64) -> Option<&FooterEntry> {
        self.info.footer.entries.get(usize::try_from(index).ok()?)
    }

    /// The block holding plaintext byte `offset`, if it is inside the file.
    pub fn block_of(&self, offset: u64) -> Option<u64> {
        if offset >= self.len() {
            return None;
        }
        let entries = &self.info.footer.entries;
        Some(entries.partition_point(|e| e.plain_offset + e.plain_size <= offset) as u64)
    }

    /// Decrypts one block. With `verify`, also checks the plaintext's SHA-256 (the AEAD always
    /// authenticates it; the hash additionally proves the writer hashed what it sealed).
    pub fn read_block(&self, index: u64, verify: bool) -> Result<Vec<u8>> {
        // Head and payload in one read: one disk round trip per cold block, not two.
        let stored = self.read_stored(index, index)?;
        self.open_stored(index, stored, verify)
    }

    /// The stored bytes (head and sealed payload) of blocks `first..=last`, with one read: blocks
    /// are contiguous in the container. Split them with [`Container::stored_range`] and open each
    /// with [`Container::open_stored`]. The length comes from the authenticated index, bounded by
    /// `check_layout` for each block; callers bound the number of blocks.
    pub fn read_stored(&self, first: u64, last: u64) -> Result<Vec<u8>> {
        let missing = |index: u64| {
            Error::InvalidArgument(format!(
                "block {index} does not exist ({} blocks)",
                self.block_count()
            ))
        };
        let start = *self.entry(first).ok_or_else(|| missing(first))?;
        let end = *self.entry(last.max(first)).ok_or_else(|| missing(last))?;
        let len = end.offset + end.len - start.offset;
        let mut stored = vec![0u8; len as usize];
        self.source
            .read_exact_at(&mut stored, start.offset)
            .map_err(|e| {
                let kind = if e.kind() == io::ErrorKind::UnexpectedEof {
                    "container ends inside the block"
                } else {
                    "reading the block"
                };
                Error::Corrupt {
                    what: format!("{kind}: {e}"),
                    block: Some(first),
                    offset: Some(start.offset),
                }
            })?;
        Ok(stored)
    }

    /// Where block `index` lies in the bytes [`Container::read_stored`] returned for a range
    /// starting at block `first`.
    pub fn stored_range(&self, first: u64, index: u64) -> Option<std::ops::Range<usize>> {
        let (base, e) = (self.entry(first)?.offset, self.entry(index)?);
        let start = usize::try_from(e.offset.checked_sub(base)?).ok()?;
        Some(start..start + e.len as usize)
    }

    /// Checks and decrypts block `index` from its stored bytes (exactly the block: head, then
    /// sealed payload).
    pub fn open_stored(&self, index: u64, block: Vec<u8>, verify: bool) -> Result<Vec<u8>> {
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
        let head: [u8; BLOCK_HEAD_LEN] = crate::format::array(&block, 0);
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

    /// Reads plaintext at `offset` into `buf`, decrypting only the blocks that cover it. Returns
    /// the number of bytes read: less than `buf.len()` only at the end of the file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some(index) = self.block_of(pos) else { break };
            let block = self.read_block(index, false)?;
            let start = (pos - self.info.footer.entries[index as usize].plain_offset) as usize;
            let n = (block.len() - start).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&block[start..start + n]);
            done += n;
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
        let end = offset.saturating_add(len).min(self.len());
        let mut pos = offset;
        while pos < end {
            let index = self.block_of(pos).expect("pos is inside the file");
            let entry = self.info.footer.entries[index as usize];
            let block = self.read_block(index, false)?;
            let start = (pos - entry.plain_offset) as usize;
            let stop = ((end - entry.plain_offset) as usize).min(block.len());
            out.write_all(&block[start..stop])
                .map_err(|e| Error::io("writing the output", e))?;
            pos = entry.plain_offset + stop as u64;
        }
        Ok(end.saturating_sub(offset))
    }
}

impl<S: ReadAt + 'static> Container<S> {
    /// Decrypts every block in parallel on `workers` threads (0: all cores) and writes the
    /// plaintext to `out` in order. With `verify`, checks every block's SHA-256 too. Memory stays
    /// at about two blocks per worker. Used by `unpack` and, with a sink, by `verify`.
    pub fn unpack_to(
        self: &Arc<Self>,
        out: &mut dyn Write,
        verify: bool,
        workers: usize,
        progress: &dyn Fn(u64),
    ) -> Result<u64> {
        let mut pool = OrderedPool::new(workers).map_err(|e| Error::io("starting worker threads", e))?;
        let mut written = 0u64;
        let mut write_block = |block: Result<Vec<u8>>| -> Result<()> {
            let block = block?;
            out.write_all(&block)
                .map_err(|e| Error::io("writing the output", e))?;
            written += block.len() as u64;
            progress(block.len() as u64);
            Ok(())
        };
        for index in 0..self.block_count() {
            while pool.is_full() {
                write_block(pool.next_result().expect("a full pool has results"))?;
            }
            let container = Arc::clone(self);
            pool.submit(move || container.read_block(index, verify));
        }
        while let Some(block) = pool.next_result() {
            write_block(block)?;
        }
        Ok(written)
    }
}
