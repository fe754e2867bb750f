//! The container's byte layout: header, key-slot areas, block prefix and metadata, footer index and
//! trailer, as plain structs that encode to and decode from bytes. No cryptography and no I/O here:
//! `crypto` seals what this module lays out, and `reader`/`writer` move the bytes.
//!
//! `docs/FORMAT.md` is the normative description; the constants below are its numbers, stated once.
//! Every decoder checks lengths and ranges before it trusts a field, and returns
//! [`crate::Error::Corrupt`] or [`crate::Error::NotAContainer`] instead of panicking.

mod block;
mod block_v2;
mod commit;
mod footer;
mod footer_v2;
mod header;
mod patch;
mod signature;
mod slots;

pub use block::{
    BlockMeta, BlockPrefix, Compression, BLOCK_HEAD_LEN, BLOCK_OVERHEAD, BLOCK_PREFIX_LEN, META_LEN,
    META_PLAIN_LEN,
};
pub use block_v2::{
    BlockMetaV2, CompressionV2, SegmentSpan, Segments, NONCE_BASE_USED, SEGMENT_LEN, SEGMENT_SHIFT,
    UNSEGMENTED,
};
pub use commit::{CommitRecord, COMMIT_A, COMMIT_B, COMMIT_LEN};
pub use footer::{
    Footer, FooterEntry, LayoutCheck, Trailer, FOOTER_ENTRY_LEN, FOOTER_FIXED_LEN, FOOTER_HEAD_LEN,
    TRAILER_LEN,
};
pub use footer_v2::{
    max_block_len_v2, min_block_len_v2, FooterEntryV2, FooterV2, FILE_RECORD_FIXED_PLAIN,
    FILE_RECORD_MAX_LEN, FILE_RECORD_MAX_NAME, FILE_RECORD_MIN_LEN, FOOTER_V2_ENTRY_LEN, FOOTER_V2_FIXED_LEN,
    FOOTER_V2_HEAD_LEN, FOOTER_V3_ENTRY_LEN, FOOTER_V3_MAGIC,
};
pub use header::{short_header, CipherId, Header, FLAG_NO_VERIFY, FLAG_STREAMING, HEADER_LEN};
pub use patch::{
    unit_aad, unit_nonce, PatchFooter, UnitEntry, MAX_CHAIN_UNITS, MAX_DEPTH, MAX_UNITS, PATCH_HEAD_LEN,
    PATCH_MAC_LEN, PATCH_MAGIC, UNIT, UNIT_ENTRY_LEN,
};
pub use signature::{can_sign, signed_message, SignatureRecord, ALG_ED25519, SIGNATURE_AT, SIGNATURE_LEN};
pub use slots::{
    KeySlot, SlotArea, SlotKind, MAX_SLOTS, SLOT_AAD_LEN, SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN, SLOT_LEN,
};

/// Format version written and read by this implementation.
pub const FORMAT_VERSION: u16 = 2;

/// A container format version: what the header's bytes 8..10 say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FormatVersion {
    /// Version 1: whole-block payloads, SHA-256 content hashes, deflate.
    V1 = 1,
    /// Version 2: 16 KiB payload segments, BLAKE3 content and block hashes, a keyless root,
    /// zstd, the file record. What writers write.
    #[default]
    V2 = 2,
    /// Version 3: version 2's blocks and file record, edited in place by the read-write mount:
    /// blocks in any order with superseded versions between them, a footer with a generation,
    /// and two commit records in the header that say which footer is current.
    V3 = 3,
    /// Version 4 (`docs/FORMAT.md`, "Version 4"): version 3 whose current generation may be a
    /// chain of patches (sealed 4 KiB units over a version-3 base footer), so that a small
    /// overwrite commits a few pages, not whole blocks.
    V4 = 4,
}

impl FormatVersion {
    /// The version with header number `v`, or `None` for one this build does not know.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(FormatVersion::V1),
            2 => Some(FormatVersion::V2),
            3 => Some(FormatVersion::V3),
            4 => Some(FormatVersion::V4),
            _ => None,
        }
    }

    /// The number in the header.
    pub fn number(self) -> u16 {
        self as u16
    }

    /// True for the versions whose blocks are sealed as version 2's (segments, BLAKE3, the
    /// footer's metadata copies): 2, 3 and 4.
    pub fn has_v2_blocks(self) -> bool {
        self != FormatVersion::V1
    }

    /// True for the versions edited in place, whose header holds commit records naming the
    /// current footer: 3 and 4.
    pub fn has_commits(self) -> bool {
        matches!(self, FormatVersion::V3 | FormatVersion::V4)
    }
}
/// Length of the random per-container identifier.
pub const CONTAINER_ID_LEN: usize = 16;
/// AEAD nonce length for both ciphers.
pub const NONCE_LEN: usize = 12;
/// AEAD tag length for both ciphers.
pub const TAG_LEN: usize = 16;
/// Smallest and largest block size, and the granularity between them.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// The largest block size: 64 MiB.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// The block size used when none is given: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;

/// A container's random identifier, bound into every key derivation and AAD.
pub type ContainerId = [u8; CONTAINER_ID_LEN];

/// A block size outside the format's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("block size {block_size} bytes: must be a multiple of 4 KiB between 4 KiB and 64 MiB")]
#[non_exhaustive]
pub struct BlockSizeError {
    /// The rejected block size, in bytes.
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
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_from_4_kib_to_64_mib_in_4_kib_steps_are_accepted() {
        for size in [
            4096,
            8192,
            1 << 20,
            DEFAULT_BLOCK_SIZE,
            MAX_BLOCK_SIZE - 4096,
            MAX_BLOCK_SIZE,
        ] {
            assert_eq!(check_block_size(size), Ok(()), "{size}");
        }
    }

    #[test]
    fn block_sizes_outside_the_range_or_off_the_4_kib_grid_are_refused() {
        for size in [
            0,
            1,
            4095,
            4097,
            6144,
            8191,
            MAX_BLOCK_SIZE + 4096,
            MAX_BLOCK_SIZE + 1,
            u32::MAX,
        ] {
            let err = check_block_size(size).expect_err(&size.to_string()).to_string();
            assert!(err.contains(&size.to_string()), "{err}");
        }
    }

    #[test]
    fn the_default_block_size_is_within_the_limits() {
        assert_eq!(check_block_size(DEFAULT_BLOCK_SIZE), Ok(()));
        assert_eq!(MIN_BLOCK_SIZE, 4096);
        assert_eq!(MAX_BLOCK_SIZE, 67_108_864);
    }

    #[test]
    fn little_endian_readers_take_the_bytes_at_the_given_offset() {
        let b = [0xaa, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xbb];
        assert_eq!(le_u16(&b, 1), 0x0201);
        assert_eq!(le_u32(&b, 1), 0x0403_0201);
        assert_eq!(le_u64(&b, 1), 0x0807_0605_0403_0201);
        assert_eq!(le_u16(&b, 8), 0xbb08);
    }

    #[test]
    fn array_copies_exactly_n_bytes_from_the_offset() {
        let b: Vec<u8> = (0..20).collect();
        let a: [u8; 4] = array(&b, 3);
        assert_eq!(a, [3, 4, 5, 6]);
        let whole: [u8; 20] = array(&b, 0);
        assert_eq!(whole.as_slice(), b.as_slice());
        let none: [u8; 0] = array(&b, 20);
        assert_eq!(none, [0u8; 0]);
    }

    #[test]
    #[should_panic]
    fn array_past_the_end_panics_rather_than_reading_garbage() {
        let b = [0u8; 8];
        let _: [u8; 4] = array(&b, 5);
    }

    #[test]
    fn the_format_constants_match_format_md() {
        assert_eq!(FORMAT_VERSION, 2);
        assert_eq!(FormatVersion::default().number(), FORMAT_VERSION);
        assert_eq!(CONTAINER_ID_LEN, 16);
        assert_eq!(NONCE_LEN, 12);
        assert_eq!(TAG_LEN, 16);
        assert_eq!(HEADER_LEN, 4096);
        assert_eq!((SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN), (1024, 2560, 1072));
        assert_eq!((SLOT_LEN, MAX_SLOTS, SLOT_AAD_LEN), (128, 8, 52));
        assert_eq!((BLOCK_PREFIX_LEN, META_PLAIN_LEN, META_LEN), (24, 88, 116));
        assert_eq!((BLOCK_HEAD_LEN, BLOCK_OVERHEAD), (140, 156));
        assert_eq!(
            (FOOTER_HEAD_LEN, FOOTER_ENTRY_LEN, FOOTER_FIXED_LEN),
            (24, 32, 56)
        );
        assert_eq!(TRAILER_LEN, 32);
    }
}
