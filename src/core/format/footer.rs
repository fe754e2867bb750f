//! The footer (the index of blocks, authenticated by a MAC) and the 32-byte trailer that points
//! at it from the end of the file.

use super::{array, le_u64, HEADER_LEN};
use crate::{Error, Result};

const FOOTER_MAGIC: &[u8; 8] = b"QLTXFOOT";
const TRAILER_MAGIC: &[u8; 8] = b"QLTXTRLR";
const TRAILER_END: &[u8; 8] = b"QLTXEND\0";
pub const FOOTER_HEAD_LEN: usize = 24;
pub const FOOTER_ENTRY_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// Footer bytes besides the entries: head and MAC.
pub const FOOTER_FIXED_LEN: usize = FOOTER_HEAD_LEN + MAC_LEN;
pub const TRAILER_LEN: usize = 32;

/// Where one block is and which plaintext it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FooterEntry {
    /// Offset of the block prefix in the container.
    pub offset: u64,
    /// Length of the whole block: prefix, metadata and payload.
    pub len: u64,
    pub plain_offset: u64,
    pub plain_size: u64,
}

/// The decoded footer. `mac` is checked by the reader (it needs the key), not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub original_size: u64,
    pub entries: Vec<FooterEntry>,
    pub mac: [u8; MAC_LEN],
}

impl Footer {
    /// True when `b` begins with the footer's magic: what follows the last block of a stream.
    pub fn starts(b: &[u8]) -> bool {
        b.starts_with(FOOTER_MAGIC)
    }

    pub fn encoded_len(entries: usize) -> u64 {
        (FOOTER_FIXED_LEN + entries * FOOTER_ENTRY_LEN) as u64
    }

    /// Footer bytes without the MAC: what the MAC covers (after the header's bound fields).
    pub fn encode_unsigned(original_size: u64, entries: &[FooterEntry]) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::encoded_len(entries.len()) as usize);
        b.extend_from_slice(FOOTER_MAGIC);
        b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        b.extend_from_slice(&original_size.to_le_bytes());
        for e in entries {
            for v in [e.offset, e.len, e.plain_offset, e.plain_size] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b
    }

    /// Decodes footer bytes found at `offset`. The length must match the entry count exactly.
    pub fn decode(b: &[u8], offset: u64) -> Result<Self> {
        let bad = |what: String| Error::Corrupt {
            what,
            block: None,
            offset: Some(offset),
        };
        if b.len() < FOOTER_FIXED_LEN || &b[0..8] != FOOTER_MAGIC {
            return Err(bad("bad footer magic".into()));
        }
        let count = le_u64(b, 8);
        let expected = (b.len() - FOOTER_FIXED_LEN) / FOOTER_ENTRY_LEN;
        if count != expected as u64 || !(b.len() - FOOTER_FIXED_LEN).is_multiple_of(FOOTER_ENTRY_LEN) {
            return Err(bad(format!(
                "footer entry count {count} does not match its length of {} bytes",
                b.len()
            )));
        }
        let entries = (0..expected)
            .map(|i| FooterEntry::decode(&b[FOOTER_HEAD_LEN + i * FOOTER_ENTRY_LEN..]))
            .collect();
        Ok(Footer {
            original_size: le_u64(b, 16),
            entries,
            mac: array(b, b.len() - MAC_LEN),
        })
    }

    /// Checks that the entries tile the block area and the plaintext without gaps or overlaps,
    /// and that each block is no larger than its plaintext allows. Run before any block is read.
    pub fn check_layout(&self, block_size: u32, blocks_end: u64) -> Result<()> {
        let mut check = LayoutCheck::new(block_size, blocks_end);
        for e in &self.entries {
            check.next(e)?;
        }
        check.finish(self.original_size)
    }
}

impl FooterEntry {
    /// Decodes the entry at the start of `b` (at least [`FOOTER_ENTRY_LEN`] bytes).
    pub fn decode(b: &[u8]) -> Self {
        FooterEntry {
            offset: le_u64(b, 0),
            len: le_u64(b, 8),
            plain_offset: le_u64(b, 16),
            plain_size: le_u64(b, 24),
        }
    }
}

/// [`Footer::check_layout`] one entry at a time, so a reader can stop at the first bad entry of
/// a footer it is still reading.
pub struct LayoutCheck {
    block_size: u32,
    blocks_end: u64,
    index: u64,
    offset: u64,
    plain: u64,
}

impl LayoutCheck {
    pub fn new(block_size: u32, blocks_end: u64) -> Self {
        LayoutCheck {
            block_size,
            blocks_end,
            index: 0,
            offset: HEADER_LEN as u64,
            plain: 0,
        }
    }

    /// Checks the next entry: it starts where the previous block ended, holds 1 to `block_size`
    /// plaintext bytes in a plausible length, and ends before the footer.
    pub fn next(&mut self, e: &FooterEntry) -> Result<()> {
        let bad = |what: &str| Error::corrupt_block(self.index, e.offset, format!("footer index: {what}"));
        if e.offset != self.offset {
            return Err(bad("block offset is not contiguous"));
        }
        if e.plain_offset != self.plain {
            return Err(bad("plaintext offset is not contiguous"));
        }
        if e.plain_size == 0 || e.plain_size > self.block_size as u64 {
            return Err(bad("plaintext size out of range"));
        }
        if e.len < super::BLOCK_OVERHEAD || e.len > super::BLOCK_OVERHEAD + e.plain_size {
            return Err(bad("block length out of range"));
        }
        let end = self
            .offset
            .checked_add(e.len)
            .filter(|&end| end <= self.blocks_end);
        self.offset = end.ok_or_else(|| bad("block runs into the footer"))?;
        self.plain += e.plain_size;
        self.index += 1;
        Ok(())
    }

    /// Checks that the entries seen cover the block area and add up to `original_size`.
    pub fn finish(&self, original_size: u64) -> Result<()> {
        if self.offset != self.blocks_end {
            return Err(Error::Corrupt {
                what: format!(
                    "blocks end at {} but the footer starts at {}",
                    self.offset, self.blocks_end
                ),
                block: None,
                offset: Some(self.blocks_end),
            });
        }
        if self.plain != original_size {
            return Err(Error::corrupt(format!(
                "footer says {original_size} plaintext bytes but its entries add up to {}",
                self.plain
            )));
        }
        Ok(())
    }
}

/// The last 32 bytes of a complete container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub footer_offset: u64,
    pub footer_size: u64,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(TRAILER_MAGIC);
        b[8..16].copy_from_slice(&self.footer_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.footer_size.to_le_bytes());
        b[24..32].copy_from_slice(TRAILER_END);
        b
    }

    /// Decodes the trailer of a file of `file_len` bytes and checks that the footer it points at
    /// lies between the header and the trailer and ends exactly where the trailer starts.
    pub fn decode(b: &[u8; TRAILER_LEN], file_len: u64) -> Result<Self> {
        if &b[0..8] != TRAILER_MAGIC || &b[24..32] != TRAILER_END {
            return Err(Error::NoTrailer);
        }
        let t = Trailer {
            footer_offset: le_u64(b, 8),
            footer_size: le_u64(b, 16),
        };
        let fits = t.footer_offset >= HEADER_LEN as u64
            && t.footer_size >= FOOTER_FIXED_LEN as u64
            && t.footer_offset.checked_add(t.footer_size) == Some(file_len - TRAILER_LEN as u64);
        if !fits {
            return Err(Error::Corrupt {
                what: format!(
                    "trailer points at a footer of {} bytes at {} that does not fit a file of {file_len} bytes",
                    t.footer_size, t.footer_offset
                ),
                block: None,
                offset: Some(file_len - TRAILER_LEN as u64),
            });
        }
        Ok(t)
    }
}
