//! The container's byte layout: header, key-slot areas, block prefix and metadata, footer index and
//! trailer, as plain structs that encode to and decode from bytes. No cryptography and no I/O here:
//! `crypto` seals what this module lays out, and `reader`/`writer` move the bytes.
//!
//! `docs/FORMAT.md` is the normative description; the constants below are its numbers, stated once.
//! Every decoder checks lengths and ranges before it trusts a field, and returns
//! [`crate::Error::Corrupt`] or [`crate::Error::NotAContainer`] instead of panicking.

mod block;
mod footer;
mod header;
mod slots;

pub use block::{
    BlockMeta, BlockPrefix, Compression, BLOCK_HEAD_LEN, BLOCK_OVERHEAD, BLOCK_PREFIX_LEN, META_LEN,
    META_PLAIN_LEN,
};
pub use footer::{
    Footer, FooterEntry, LayoutCheck, Trailer, FOOTER_ENTRY_LEN, FOOTER_FIXED_LEN, FOOTER_HEAD_LEN,
    TRAILER_LEN,
};
pub use header::{CipherId, Header, FLAG_NO_VERIFY, FLAG_STREAMING, HEADER_LEN};
pub use slots::{
    KeySlot, SlotArea, SlotKind, MAX_SLOTS, SLOT_AAD_LEN, SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN, SLOT_LEN,
};

/// Format version written and read by this implementation.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the random per-container identifier.
pub const CONTAINER_ID_LEN: usize = 16;
/// AEAD nonce length for both ciphers.
pub const NONCE_LEN: usize = 12;
/// AEAD tag length for both ciphers.
pub const TAG_LEN: usize = 16;
/// Smallest and largest block size, and the granularity between them.
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;

pub type ContainerId = [u8; CONTAINER_ID_LEN];

/// A block size outside the format's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("block size {block_size} bytes: must be a multiple of 4 KiB between 4 KiB and 64 MiB")]
#[non_exhaustive]
pub struct BlockSizeError {
    pub block_size: u32,
}

impl From<BlockSizeError> for crate::Error {
    fn from(e: BlockSizeError) -> Self {
        crate::Error::InvalidArgument(e.to_string())
    }
}

/// Checks a block size against the format's limits.
pub fn check_block_size(block_size: u32) -> Result<(), BlockSizeError> {
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_multiple_of(MIN_BLOCK_SIZE)
    {
        return Err(BlockSizeError { block_size });
    }
    Ok(())
}

/// Little-endian field access on fixed-size byte slices. Callers check lengths first; these
/// helpers only ever see slices of the size the layout says.
pub fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
pub fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
pub fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}
