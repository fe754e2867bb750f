//! Reading a container front to back as it arrives (a socket, a pipe), without seeking: header →
//! key slots → blocks one by one → footer → trailer. The decrypting gateway reads through it, and
//! `repair` walks a cut container with it.
//!
//! Each block is authenticated as it arrives (its head here, its payload by
//! [`SealedBlockIn::open`], both through `block.rs`), so plaintext can be passed on before the end
//! of the stream. What a single block cannot prove — that no block was dropped at the end, or the
//! stream cut at a block boundary — is proven by the footer MAC, checked when the footer arrives:
//! a consumer of the plaintext must treat the stream as failed unless [`StreamReader::next_block`]
//! (or [`StreamReader::next_sealed`]) ended with `Ok(None)`.
//!
//! ```no_run
//! use qeltrix::{Key, crypto::KeyFileKey, stream_reader::StreamReader};
//! let key = Key::KeyFile(KeyFileKey::from_bytes([7; 32]));
//! let socket = std::net::TcpStream::connect("127.0.0.1:7620")?;
//! let mut stream = StreamReader::open(std::io::BufReader::new(socket), &key)?;
//! while let Some(block) = stream.next_block(true)? {
//!     // `block` is authenticated plaintext, in order.
//! }
//! // Here the footer MAC has been verified: nothing was dropped or cut.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::container::reader::unlock;
use crate::core::codec::{open_block_head, open_payload};
use crate::core::codec_v2::{content_hash_v2, decompress_payload_v2, open_block_head_v2, PayloadKey};
use crate::core::crypto::{verify_footer_mac, verify_footer_mac_v2, ContainerKeys, Key};
use crate::core::format::{
    array, BlockMeta, BlockMetaV2, BlockPrefix, Footer, FooterEntry, FooterV2, FormatVersion, Header,
    Trailer, BLOCK_HEAD_LEN, BLOCK_PREFIX_LEN, FLAG_STREAMING, FOOTER_HEAD_LEN, FOOTER_V2_HEAD_LEN,
    HEADER_LEN, META_LEN, TRAILER_LEN,
};
use crate::core::integrity_v2::check_root;
use crate::{Error, Result};
use std::io::{self, Read};
use std::sync::Arc;

// A block prefix and a footer head have the same length, so one read tells which comes next.
const _: () = assert!(BLOCK_PREFIX_LEN == FOOTER_HEAD_LEN);

/// A block whose head (prefix and metadata) is authenticated; its payload is not yet.
pub struct SealedBlockIn {
    /// The block's 0-based index.
    pub index: u64,
    /// Where the block starts in the container.
    pub offset: u64,
    /// The block's prefix and sealed metadata, as they arrived.
    pub head: [u8; BLOCK_HEAD_LEN],
    /// The block's decrypted metadata.
    meta: MetaIn,
    /// The sealed payload, exactly as it arrived.
    pub payload: Vec<u8>,
}

/// A block's metadata, in its container's version.
enum MetaIn {
    V1(BlockMeta),
    V2(BlockMetaV2),
}

impl SealedBlockIn {
    /// Plaintext bytes in the block, from its authenticated metadata.
    pub fn plain_size(&self) -> u32 {
        match &self.meta {
            MetaIn::V1(m) => m.plain_size,
            MetaIn::V2(m) => m.plain_size,
        }
    }

    /// Authenticates and decrypts the payload (and with `verify`, checks the plaintext's hash).
    /// Thread-safe: callers run it on a worker pool.
    pub fn open(self, keys: &ContainerKeys, verify: bool) -> Result<Vec<u8>> {
        let meta = match self.meta {
            MetaIn::V1(meta) => {
                return open_payload(keys, self.index, &meta, self.payload, verify, self.offset)
            }
            MetaIn::V2(meta) => meta,
        };
        let mut payload = self.payload;
        let key = PayloadKey::new(keys, self.index, &meta);
        key.open_payload(&mut payload).map_err(|e| match e {
            Error::Corrupt { what, block, .. } => Error::Corrupt {
                what,
                block,
                offset: Some(self.offset),
            },
            e => e,
        })?;
        let plain = decompress_payload_v2(&meta, payload, self.index, self.offset)?;
        if verify && content_hash_v2(&plain) != meta.content_hash {
            return Err(Error::corrupt_block(
                self.index,
                self.offset,
                "plaintext BLAKE3 hash does not match",
            ));
        }
        Ok(plain)
    }

    /// Bytes the block occupies in the container.
    pub fn stored_len(&self) -> u64 {
        (BLOCK_HEAD_LEN + self.payload.len()) as u64
    }
}

/// A container being read sequentially. See the module docs.
pub struct StreamReader<R: Read> {
    input: R,
    header: Header,
    keys: Arc<ContainerKeys>,
    entries: Vec<FooterEntry>,
    /// v2: each block's sealed metadata as it arrived, to compare with the footer's copies.
    metas_v2: Vec<[u8; META_LEN]>,
    /// Container offset of the next byte to read.
    offset: u64,
    plain_offset: u64,
    finished: bool,
}

impl<R: Read> StreamReader<R> {
    /// Reads the header and unwraps the data key. A wrong key fails here, before any block.
    pub fn open(mut input: R, key: &Key) -> Result<Self> {
        let mut head = vec![0u8; HEADER_LEN];
        let n = read_full(&mut input, &mut head).map_err(|e| Error::io("reading the header", e))?;
        if n < HEADER_LEN {
            return Err(crate::core::format::short_header(
                &head[..n],
                "bytes of the stream",
            ));
        }
        let header = Header::decode(&head)?;
        if header.version.has_commits() {
            // Blocks in any order with superseded versions between them (and, in version 4,
            // patches over them), and the current footer named only by the header: it cannot be
            // read front to back.
            return Err(Error::InvalidArgument(format!(
                "a version-{} container (edited in place by a read-write mount) cannot be read as \
                 a stream: read it from a file, or run `qeltrix compact` on it first",
                header.version.number()
            )));
        }
        let keys = unlock(&header, &header.active_slots()?, key)?;
        Ok(StreamReader {
            input,
            header,
            keys: Arc::new(keys),
            entries: Vec::new(),
            metas_v2: Vec::new(),
            offset: HEADER_LEN as u64,
            plain_offset: 0,
            finished: false,
        })
    }

    /// The container's header, as read from the start of the stream.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The container's keys, for opening blocks on other threads.
    pub fn keys(&self) -> &Arc<ContainerKeys> {
        &self.keys
    }

    /// Container bytes consumed so far.
    pub fn container_offset(&self) -> u64 {
        self.offset
    }

    /// Plaintext bytes in the blocks read so far.
    pub fn plain_offset(&self) -> u64 {
        self.plain_offset
    }

    /// The index entries of the blocks read so far.
    pub fn entries(&self) -> &[FooterEntry] {
        &self.entries
    }

    /// True once the footer and trailer have been read and verified.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Returns the underlying reader, positioned after the bytes consumed so far.
    pub fn into_inner(self) -> R {
        self.input
    }

    /// The next block, decrypted and authenticated; `None` once the footer has been verified.
    pub fn next_block(&mut self, verify: bool) -> Result<Option<Vec<u8>>> {
        match self.next_sealed()? {
            Some(block) => block.open(&self.keys, verify).map(Some),
            None => Ok(None),
        }
    }

    /// The next block with its head authenticated and its payload still sealed (open it with
    /// [`SealedBlockIn::open`], on any thread); `None` once the footer and trailer have arrived
    /// and the footer MAC has been verified.
    pub fn next_sealed(&mut self) -> Result<Option<SealedBlockIn>> {
        if self.finished {
            return Ok(None);
        }
        let index = self.entries.len() as u64;
        let at = self.offset;
        let mut head = [0u8; BLOCK_HEAD_LEN];
        self.read_exact(&mut head[..BLOCK_PREFIX_LEN], || {
            format!("before block {index} or the footer")
        })?;
        let prefix: [u8; BLOCK_PREFIX_LEN] = crate::core::format::array(&head, 0);
        let v2 = self.header.version == FormatVersion::V2;
        if !v2 && Footer::starts(&prefix) {
            self.read_footer(&prefix)?;
            return Ok(None);
        }
        if v2 && FooterV2::starts(&prefix) {
            self.read_footer_v2(&prefix)?;
            return Ok(None);
        }
        BlockPrefix::decode(&prefix, at).map_err(|e| match e {
            Error::Corrupt { what, .. } => Error::corrupt_block(index, at, what),
            e => e,
        })?;
        self.read_exact(&mut head[BLOCK_PREFIX_LEN..], || format!("inside block {index}"))?;
        let (payload_len, meta) = if v2 {
            // The metadata's fields are checked against the block size by its decoder.
            let (prefix, meta) = open_block_head_v2(&self.keys, index, &head, at, self.header.block_size)?;
            (prefix.payload_len, MetaIn::V2(meta))
        } else {
            let (prefix, meta) = open_block_head(&self.keys, index, &head, at)?;
            if meta.plain_size == 0 || meta.plain_size > self.header.block_size {
                return Err(Error::corrupt_block(
                    index,
                    at,
                    format!(
                        "block holds {} plaintext bytes; the block size is {}",
                        meta.plain_size, self.header.block_size
                    ),
                ));
            }
            (prefix.payload_len, MetaIn::V1(meta))
        };
        // Bounded by the authenticated metadata (stored size ≤ plain size ≤ block size).
        let mut payload = vec![0u8; payload_len as usize];
        self.read_exact(&mut payload, || format!("inside block {index}"))?;
        let block = SealedBlockIn {
            index,
            offset: at,
            head,
            meta,
            payload,
        };
        if v2 {
            self.metas_v2.push(array(&head, BLOCK_PREFIX_LEN));
        }
        self.push_entry(&block);
        Ok(Some(block))
    }

    fn push_entry(&mut self, block: &SealedBlockIn) {
        self.entries.push(FooterEntry {
            offset: block.offset,
            len: block.stored_len(),
            plain_offset: self.plain_offset,
            plain_size: block.plain_size() as u64,
        });
        self.plain_offset += block.plain_size() as u64;
    }

    /// [`Self::read_footer`] for a v2 footer: its head says its length; then the entries, the
    /// metadata copies, the root, the MAC and the trailer are checked.
    fn read_footer_v2(&mut self, start: &[u8]) -> Result<()> {
        let footer_at = self.offset - start.len() as u64;
        let mut head = [0u8; FOOTER_V2_HEAD_LEN];
        head[..start.len()].copy_from_slice(start);
        self.read_exact(&mut head[start.len()..], || "inside the footer".into())?;
        // The footer may hold no more entries than blocks arrived, and one file record.
        let most = FooterV2::encoded_len(self.entries.len(), crate::core::format::FILE_RECORD_MAX_LEN);
        let footer_len = FooterV2::len_from_head(&head, footer_at, most)? as usize;
        let mut bytes = head.to_vec();
        bytes.resize(footer_len, 0);
        self.read_exact(&mut bytes[FOOTER_V2_HEAD_LEN..], || "inside the footer".into())?;
        let footer = FooterV2::decode(&bytes, footer_at, self.header.block_size)?;
        let corrupt = |what: &str| Error::Corrupt {
            what: what.into(),
            block: None,
            offset: Some(footer_at),
        };
        let same = footer.entries.len() == self.entries.len()
            && footer
                .entries
                .iter()
                .zip(self.entries.iter().zip(&self.metas_v2))
                .all(|(f, (e, m))| f.entry == *e && f.sealed_meta == *m);
        if !same || footer.original_size != self.plain_offset {
            return Err(corrupt(
                "the footer index disagrees with the blocks in the stream",
            ));
        }
        check_root(&footer, footer_at)?;
        if !verify_footer_mac_v2(
            &self.keys,
            &self.header.bound_fields(),
            &footer.encode_unsigned(),
            &footer.mac,
        ) {
            return Err(corrupt(
                "footer index or header fails authentication (edited, truncated or re-indexed)",
            ));
        }
        self.finish_trailer(footer_at, footer_len as u64)
    }

    /// Reads the rest of the footer (whose first bytes are `start`) and the trailer, and checks
    /// that they index exactly the blocks that arrived and that the MAC is genuine.
    fn read_footer(&mut self, start: &[u8]) -> Result<()> {
        let footer_at = self.offset - start.len() as u64;
        let footer_len = Footer::encoded_len(self.entries.len()) as usize;
        let mut bytes = start.to_vec();
        bytes.resize(footer_len, 0);
        self.read_exact(&mut bytes[start.len()..], || "inside the footer".into())?;
        let footer = Footer::decode(&bytes, footer_at)?;
        let corrupt = |what: &str| Error::Corrupt {
            what: what.into(),
            block: None,
            offset: Some(footer_at),
        };
        if footer.entries != self.entries || footer.original_size != self.plain_offset {
            return Err(corrupt(
                "the footer index disagrees with the blocks in the stream",
            ));
        }
        let unsigned = Footer::encode_unsigned(footer.original_size, &footer.entries);
        if !verify_footer_mac(&self.keys, &self.header.bound_fields(), &unsigned, &footer.mac) {
            return Err(corrupt(
                "footer index or header fails authentication (edited, truncated or re-indexed)",
            ));
        }
        self.finish_trailer(footer_at, footer_len as u64)
    }

    /// Reads the trailer after the footer at `footer_at`, and checks it and the header totals.
    fn finish_trailer(&mut self, footer_at: u64, footer_len: u64) -> Result<()> {
        let corrupt = |what: &str| Error::Corrupt {
            what: what.into(),
            block: None,
            offset: Some(footer_at),
        };
        let mut tb = [0u8; TRAILER_LEN];
        self.read_exact(&mut tb, || "inside the trailer".into())?;
        let trailer = Trailer::decode(&tb, self.offset)?;
        if trailer.footer_offset != footer_at || trailer.footer_size != footer_len {
            return Err(corrupt("the trailer does not point at the footer"));
        }
        let h = &self.header;
        if h.is_patched()
            && (h.footer_offset != footer_at
                || h.footer_size != footer_len
                || h.total_blocks != self.entries.len() as u64
                || h.original_size != self.plain_offset)
        {
            return Err(Error::corrupt(
                "header totals disagree with the footer and trailer",
            ));
        }
        if !h.is_patched() && h.flags & FLAG_STREAMING == 0 {
            return Err(Error::corrupt(
                "header totals are missing but the container is not a stream",
            ));
        }
        self.finished = true;
        Ok(())
    }

    /// Fills `buf` from the input, or reports where the stream ended.
    fn read_exact(&mut self, buf: &mut [u8], place: impl Fn() -> String) -> Result<()> {
        let n = read_full(&mut self.input, buf).map_err(|e| {
            Error::io(
                format!("reading the stream at container offset {}", self.offset),
                e,
            )
        })?;
        self.offset += n as u64;
        if n < buf.len() {
            return Err(Error::Incomplete(format!(
                "the stream ends at container offset {}, {} ({} blocks, {} plaintext bytes arrived whole)",
                self.offset,
                place(),
                self.entries.len(),
                self.plain_offset
            )));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read. Interrupted reads retry.
pub(crate) fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
