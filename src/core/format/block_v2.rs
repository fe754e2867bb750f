//! Format version 2, block layer (`docs/FORMAT.md`, "Version 2"): the 88-byte
//! block metadata and the arithmetic of payload segments.
//!
//! A v2 block keeps v1's clear prefix and sealed-metadata layout; what changes is the metadata's
//! plaintext (a `segment_shift`, BLAKE3 as the content hash, zstd as a compression id) and the
//! payload, which is sealed as segments of `2^segment_shift` stored bytes, each with its own tag.

use std::ops::Range;

use super::{array, le_u32, META_PLAIN_LEN, NONCE_LEN, TAG_LEN};
use crate::{Error, Result};

/// `segment_shift` of an uncompressed block: 16 KiB segments.
pub const SEGMENT_SHIFT: u8 = 14;
/// Stored bytes in a full segment of an uncompressed block.
pub const SEGMENT_LEN: u32 = 1 << SEGMENT_SHIFT;
/// `segment_shift` of a compressed block: the whole payload is one segment.
pub const UNSEGMENTED: u8 = 0;
/// Bytes of the payload nonce base that go into a segment nonce; the other 5 must be zero.
pub const NONCE_BASE_USED: usize = 7;

/// How a v2 block's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionV2 {
    /// Stored as is (`0`), in 16 KiB segments.
    None = 0,
    /// Raw deflate, RFC 1951 (`1`), one segment.
    Deflate = 1,
    /// One zstd frame, no dictionary, checksum off (`2`), one segment. Recognised; no codec yet.
    Zstd = 2,
}

impl CompressionV2 {
    /// The `segment_shift` this compression requires.
    pub fn segment_shift(self) -> u8 {
        match self {
            CompressionV2::None => SEGMENT_SHIFT,
            CompressionV2::Deflate | CompressionV2::Zstd => UNSEGMENTED,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(CompressionV2::None),
            1 => Some(CompressionV2::Deflate),
            2 => Some(CompressionV2::Zstd),
            _ => None,
        }
    }
}

/// A v2 block's metadata, decrypted (88 bytes, the same length as v1's). The segment shift is not
/// a field: it follows from the compression, and [`BlockMetaV2::decode`] checks it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMetaV2 {
    /// Plaintext bytes in the block, 1 to the block size.
    pub plain_size: u32,
    /// Payload bytes before the segment tags, 1 to `plain_size`.
    pub stored_size: u32,
    /// How the payload is stored.
    pub compression: CompressionV2,
    /// BLAKE3 of the block's plaintext; also an input of the block's key.
    pub content_hash: [u8; 32],
    /// Base of the segment nonces: bytes 0..7 are used, bytes 7..12 are zero.
    pub payload_nonce_base: [u8; NONCE_LEN],
    /// HKDF salt for the block's content key.
    pub cdk_salt: [u8; 32],
}

impl BlockMetaV2 {
    /// The block's `segment_shift` (14 uncompressed, 0 compressed).
    pub fn segment_shift(&self) -> u8 {
        self.compression.segment_shift()
    }

    /// The segment layout of the block's payload.
    pub fn segments(&self) -> Segments {
        Segments::new(self.stored_size, self.segment_shift())
    }

    /// Encodes the metadata as its 88 plaintext bytes, before sealing.
    pub fn encode(&self) -> [u8; META_PLAIN_LEN] {
        let mut b = [0u8; META_PLAIN_LEN];
        b[0..4].copy_from_slice(&self.plain_size.to_le_bytes());
        b[4..8].copy_from_slice(&self.stored_size.to_le_bytes());
        b[8] = self.compression as u8;
        b[9] = self.segment_shift();
        b[12..44].copy_from_slice(&self.content_hash);
        b[44..56].copy_from_slice(&self.payload_nonce_base);
        b[56..88].copy_from_slice(&self.cdk_salt);
        b
    }

    /// Decodes the authenticated metadata of block `block` in a container of `block_size`. Every
    /// field is checked (a writer bug must not become an out-of-bounds read), and an error names
    /// the field.
    pub fn decode(b: &[u8], block: u64, block_size: u32) -> Result<Self> {
        let bad = |what: String| Error::Corrupt {
            what: format!("block metadata: {what}"),
            block: Some(block),
            offset: None,
        };
        if b.len() != META_PLAIN_LEN {
            return Err(bad(format!("{} bytes, expected {META_PLAIN_LEN}", b.len())));
        }
        let compression =
            CompressionV2::from_id(b[8]).ok_or_else(|| bad(format!("unknown compression id {}", b[8])))?;
        if b[9] != compression.segment_shift() {
            return Err(bad(format!(
                "segment_shift {} with compression {}: must be {}",
                b[9],
                b[8],
                compression.segment_shift()
            )));
        }
        if b[10..12] != [0; 2] {
            return Err(bad("reserved bytes 10..12 are not zero".into()));
        }
        if b[44 + NONCE_BASE_USED..56] != [0; NONCE_LEN - NONCE_BASE_USED] {
            return Err(bad("payload nonce base: unused bytes 7..12 are not zero".into()));
        }
        let plain_size = le_u32(b, 0);
        if plain_size == 0 || plain_size > block_size {
            return Err(bad(format!(
                "plain_size {plain_size} outside 1..={block_size} (the block size)"
            )));
        }
        let stored_size = le_u32(b, 4);
        if stored_size == 0 || stored_size > plain_size {
            return Err(bad(format!(
                "stored_size {stored_size} outside 1..={plain_size} (the plain size)"
            )));
        }
        if compression == CompressionV2::None && stored_size != plain_size {
            return Err(bad(format!(
                "stored_size {stored_size} of an uncompressed block differs from plain_size {plain_size}"
            )));
        }
        Ok(BlockMetaV2 {
            plain_size,
            stored_size,
            compression,
            content_hash: array(b, 12),
            payload_nonce_base: array(b, 44),
            cdk_salt: array(b, 56),
        })
    }
}

/// How a payload of `stored_size` bytes is cut into segments: `2^shift` stored bytes each (the
/// last may be shorter), or a single segment when `shift` is 0. Each sealed segment is its
/// ciphertext followed by a 16-byte tag, the segments back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    stored_size: u32,
    shift: u8,
}

/// The segments that hold a byte range of a block's stored bytes, and where to find the range
/// once they are opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpan {
    /// Indices of the segments to read and open (empty for an empty range).
    pub segments: Range<u32>,
    /// Where those sealed segments lie in the sealed payload.
    pub sealed: Range<u64>,
    /// Where the range starts in the opened segments' plaintext, concatenated.
    pub skip: usize,
    /// Length of the range.
    pub len: usize,
}

impl Segments {
    /// The layout of `stored_size` stored bytes in segments of `2^shift` bytes (0: one segment).
    /// `shift` is [`SEGMENT_SHIFT`] or [`UNSEGMENTED`] in a valid block; at most 31.
    pub fn new(stored_size: u32, shift: u8) -> Self {
        assert!(shift < 32, "segment_shift {shift}");
        Segments { stored_size, shift }
    }

    /// Stored bytes in a full segment.
    fn full(&self) -> u64 {
        if self.shift == UNSEGMENTED {
            (self.stored_size as u64).max(1)
        } else {
            1u64 << self.shift
        }
    }

    /// Number of segments: at least one (an empty payload is one bare tag).
    pub fn count(&self) -> u32 {
        (self.stored_size as u64).div_ceil(self.full()).max(1) as u32
    }

    /// The sealed payload's length: stored size plus a tag per segment.
    pub fn payload_len(&self) -> u64 {
        self.stored_size as u64 + TAG_LEN as u64 * self.count() as u64
    }

    /// True for the last segment, whose nonce and AAD carry `last = 1`.
    pub fn is_last(&self, j: u32) -> bool {
        j + 1 == self.count()
    }

    /// The stored bytes of segment `j` (`j` < [`Segments::count`]).
    pub fn stored_range(&self, j: u32) -> Range<u64> {
        assert!(j < self.count(), "segment {j} of {}", self.count());
        let start = j as u64 * self.full();
        start..(start + self.full()).min(self.stored_size as u64)
    }

    /// Where segments `segs` lie in the sealed payload (`segs.end` ≤ [`Segments::count`]).
    pub fn sealed_range(&self, segs: Range<u32>) -> Range<u64> {
        assert!(
            segs.start <= segs.end && segs.end <= self.count(),
            "segments {segs:?} of {}",
            self.count()
        );
        let at = |j: u32| {
            if j == self.count() {
                self.payload_len()
            } else {
                j as u64 * (self.full() + TAG_LEN as u64)
            }
        };
        at(segs.start)..at(segs.end)
    }

    /// The segments holding stored bytes `range` (for an uncompressed block, the plaintext
    /// bytes): `a/S ..= (b−1)/S`. An empty range needs no segment. A range past the stored size is
    /// an [`Error::InvalidArgument`]: the caller clips reads to the block first.
    pub fn span(&self, range: Range<u64>) -> Result<SegmentSpan> {
        if range.start > range.end || range.end > self.stored_size as u64 {
            return Err(Error::InvalidArgument(format!(
                "byte range {}..{} of a block of {} stored bytes",
                range.start, range.end, self.stored_size
            )));
        }
        if range.is_empty() {
            return Ok(SegmentSpan {
                segments: 0..0,
                sealed: 0..0,
                skip: 0,
                len: 0,
            });
        }
        let first = (range.start / self.full()) as u32;
        let end = ((range.end - 1) / self.full()) as u32 + 1;
        Ok(SegmentSpan {
            segments: first..end,
            sealed: self.sealed_range(first..end),
            skip: (range.start - first as u64 * self.full()) as usize,
            len: (range.end - range.start) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u32 = 1 << 20;

    fn meta(compression: CompressionV2, plain_size: u32, stored_size: u32) -> BlockMetaV2 {
        BlockMetaV2 {
            plain_size,
            stored_size,
            compression,
            content_hash: [0xc1; 32],
            payload_nonce_base: [0xc2, 0xc2, 0xc2, 0xc2, 0xc2, 0xc2, 0xc2, 0, 0, 0, 0, 0],
            cdk_salt: [0xc3; 32],
        }
    }

    fn what(r: Result<BlockMetaV2>, block: u64) -> String {
        match r {
            Err(Error::Corrupt {
                what,
                block: Some(b),
                offset: None,
            }) if b == block => what,
            r => panic!("expected Corrupt in block {block}, got {r:?}"),
        }
    }

    /// Decodes `edit`ed bytes of a valid metadata and returns the error text.
    fn refused(m: &BlockMetaV2, edit: impl FnOnce(&mut [u8; META_PLAIN_LEN])) -> String {
        let mut b = m.encode();
        edit(&mut b);
        what(BlockMetaV2::decode(&b, 7, BS), 7)
    }

    #[test]
    fn metadata_round_trips_for_every_compression() {
        for m in [
            meta(CompressionV2::None, 4096, 4096),
            meta(CompressionV2::None, 1, 1),
            meta(CompressionV2::None, BS, BS),
            meta(CompressionV2::Deflate, BS, 100),
            meta(CompressionV2::Deflate, 5000, 5000),
            meta(CompressionV2::Zstd, 70_000, 1),
        ] {
            assert_eq!(BlockMetaV2::decode(&m.encode(), 9, BS).unwrap(), m);
        }
    }

    #[test]
    fn metadata_encodes_to_the_layout_of_the_design() {
        let b = meta(CompressionV2::None, 0x1000, 0x1000).encode();
        assert_eq!(b.len(), 88);
        assert_eq!(le_u32(&b, 0), 0x1000);
        assert_eq!(le_u32(&b, 4), 0x1000);
        assert_eq!((b[8], b[9]), (0, 14));
        assert_eq!(&b[10..12], &[0; 2]);
        assert_eq!(&b[12..44], &[0xc1; 32]);
        assert_eq!(&b[44..51], &[0xc2; 7]);
        assert_eq!(&b[51..56], &[0; 5]);
        assert_eq!(&b[56..88], &[0xc3; 32]);
        let b = meta(CompressionV2::Deflate, 10, 5).encode();
        assert_eq!((b[8], b[9]), (1, 0));
        let b = meta(CompressionV2::Zstd, 10, 5).encode();
        assert_eq!((b[8], b[9]), (2, 0));
    }

    #[test]
    fn metadata_of_the_wrong_length_is_refused() {
        let b = meta(CompressionV2::None, 10, 10).encode();
        let long = [&b[..], &[0]].concat();
        for bad in [&b[..87], &long[..], &[][..]] {
            let e = what(BlockMetaV2::decode(bad, 5, BS), 5);
            assert!(e.contains(&format!("{} bytes", bad.len())), "{e}");
        }
    }

    #[test]
    fn an_unknown_compression_id_is_refused_by_name() {
        for id in [3u8, 0x80, 0xff] {
            let e = refused(&meta(CompressionV2::None, 10, 10), |b| b[8] = id);
            assert!(e.contains(&format!("compression id {id}")), "{e}");
        }
    }

    #[test]
    fn the_segment_shift_must_be_the_one_the_compression_requires() {
        for (m, shifts) in [
            (
                meta(CompressionV2::None, 10, 10),
                [0u8, 1, 12, 13, 15, 16, 31, 32, 255],
            ),
            (
                meta(CompressionV2::Deflate, 10, 5),
                [14, 1, 12, 13, 15, 16, 31, 32, 255],
            ),
            (
                meta(CompressionV2::Zstd, 10, 5),
                [14, 1, 12, 13, 15, 16, 31, 32, 255],
            ),
        ] {
            for s in shifts {
                let e = refused(&m, |b| b[9] = s);
                assert!(e.contains(&format!("segment_shift {s}")), "{e}");
            }
        }
        // Switching the compression of a valid block without its shift is refused too.
        let e = refused(&meta(CompressionV2::None, 10, 10), |b| b[8] = 2);
        assert!(e.contains("segment_shift 14 with compression 2"), "{e}");
        let e = refused(&meta(CompressionV2::Deflate, 10, 5), |b| b[8] = 0);
        assert!(e.contains("segment_shift 0 with compression 0"), "{e}");
    }

    #[test]
    fn reserved_bytes_must_be_zero() {
        for at in 10..12 {
            for bit in [0x01, 0x80] {
                let e = refused(&meta(CompressionV2::None, 10, 10), |b| b[at] = bit);
                assert!(e.contains("reserved"), "{e}");
            }
        }
    }

    #[test]
    fn the_unused_bytes_of_the_nonce_base_must_be_zero() {
        for at in 51..56 {
            let e = refused(&meta(CompressionV2::None, 10, 10), |b| b[at] = 1);
            assert!(e.contains("nonce base"), "{e}");
        }
    }

    #[test]
    fn sizes_are_bounded_by_the_block_size_and_each_other() {
        let set = |at: usize, v: u32| {
            move |b: &mut [u8; META_PLAIN_LEN]| b[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        let raw = meta(CompressionV2::None, 4096, 4096);
        let packed = meta(CompressionV2::Zstd, 4096, 100);
        for v in [0, BS + 1, u32::MAX] {
            let e = refused(&packed, set(0, v));
            assert!(e.contains(&format!("plain_size {v}")), "{e}");
        }
        for v in [0, 4097, u32::MAX] {
            let e = refused(&packed, set(4, v));
            assert!(e.contains(&format!("stored_size {v}")), "{e}");
        }
        for v in [4095, 1] {
            let e = refused(&raw, set(4, v));
            assert!(
                e.contains(&format!("stored_size {v}")) && e.contains("uncompressed"),
                "{e}"
            );
        }
        // The bound is the container's block size, not the format's maximum.
        let small = meta(CompressionV2::None, 8192, 8192);
        let e = what(BlockMetaV2::decode(&small.encode(), 2, 4096), 2);
        assert!(e.contains("plain_size 8192") && e.contains("4096"), "{e}");
        assert!(BlockMetaV2::decode(&small.encode(), 2, 8192).is_ok());
    }

    #[test]
    fn segment_counts_and_payload_lengths() {
        let s = 16384u32;
        for (stored, count) in [
            (1, 1),
            (4096, 1),
            (s - 1, 1),
            (s, 1),
            (s + 1, 2),
            (2 * s, 2),
            (1 << 20, 64),
            ((1 << 20) - 1, 64),
            (64 << 20, 4096),
        ] {
            let g = Segments::new(stored, SEGMENT_SHIFT);
            assert_eq!(g.count(), count, "{stored}");
            assert_eq!(g.payload_len(), stored as u64 + 16 * count as u64, "{stored}");
            assert_eq!(g.sealed_range(0..count), 0..g.payload_len());
        }
        for stored in [1, 100, 1 << 20, 64 << 20] {
            let g = Segments::new(stored, UNSEGMENTED);
            assert_eq!(g.count(), 1);
            assert_eq!(g.payload_len(), stored as u64 + 16);
            assert_eq!(g.stored_range(0), 0..stored as u64);
            assert!(g.is_last(0));
        }
        assert_eq!(
            Segments::new(0, SEGMENT_SHIFT).count(),
            1,
            "an empty payload is one tag"
        );
    }

    #[test]
    fn segments_tile_the_stored_and_sealed_bytes() {
        let g = Segments::new(3 * SEGMENT_LEN + 5, SEGMENT_SHIFT);
        assert_eq!(g.count(), 4);
        let s = SEGMENT_LEN as u64;
        assert_eq!(g.stored_range(0), 0..s);
        assert_eq!(g.stored_range(3), 3 * s..3 * s + 5);
        assert_eq!(g.sealed_range(1..2), s + 16..2 * (s + 16));
        assert_eq!(g.sealed_range(3..4), 3 * (s + 16)..3 * (s + 16) + 5 + 16);
        assert_eq!(g.sealed_range(2..2), 2 * (s + 16)..2 * (s + 16));
        assert_eq!(
            (0..4).map(|j| g.is_last(j)).collect::<Vec<_>>(),
            [false, false, false, true]
        );
    }

    fn span(stored: u32, range: Range<u64>) -> SegmentSpan {
        Segments::new(stored, SEGMENT_SHIFT).span(range).unwrap()
    }

    #[test]
    fn a_range_maps_to_the_segments_that_hold_it() {
        let (s, t) = (SEGMENT_LEN as u64, SEGMENT_LEN as u64 + 16);
        let mib = 1u32 << 20;
        // The first and last bytes of a segment, and a whole segment.
        assert_eq!(
            span(mib, 0..1),
            SegmentSpan {
                segments: 0..1,
                sealed: 0..t,
                skip: 0,
                len: 1
            }
        );
        assert_eq!(
            span(mib, s - 1..s),
            SegmentSpan {
                segments: 0..1,
                sealed: 0..t,
                skip: s as usize - 1,
                len: 1
            }
        );
        assert_eq!(
            span(mib, s..2 * s),
            SegmentSpan {
                segments: 1..2,
                sealed: t..2 * t,
                skip: 0,
                len: s as usize
            }
        );
        // Two bytes across a boundary.
        assert_eq!(
            span(mib, s - 1..s + 1),
            SegmentSpan {
                segments: 0..2,
                sealed: 0..2 * t,
                skip: s as usize - 1,
                len: 2
            }
        );
        // An unaligned 4 KiB read spanning two segments.
        assert_eq!(
            span(mib, 3 * s - 1000..3 * s + 3096),
            SegmentSpan {
                segments: 2..4,
                sealed: 2 * t..4 * t,
                skip: s as usize - 1000,
                len: 4096
            }
        );
        // An aligned 4 KiB read inside one segment.
        assert_eq!(
            span(mib, 5 * s + 4096..5 * s + 8192),
            SegmentSpan {
                segments: 5..6,
                sealed: 5 * t..6 * t,
                skip: 4096,
                len: 4096
            }
        );
        // The whole block, and its last byte.
        assert_eq!(
            span(mib, 0..mib as u64),
            SegmentSpan {
                segments: 0..64,
                sealed: 0..64 * t,
                skip: 0,
                len: mib as usize
            }
        );
        assert_eq!(
            span(mib, mib as u64 - 1..mib as u64),
            SegmentSpan {
                segments: 63..64,
                sealed: 63 * t..64 * t,
                skip: s as usize - 1,
                len: 1
            }
        );
        // A short last segment.
        let odd = 2 * SEGMENT_LEN + 7;
        assert_eq!(
            span(odd, 2 * s..2 * s + 7),
            SegmentSpan {
                segments: 2..3,
                sealed: 2 * t..2 * t + 7 + 16,
                skip: 0,
                len: 7
            }
        );
        assert_eq!(span(odd, 0..odd as u64).sealed, 0..odd as u64 + 3 * 16);
    }

    #[test]
    fn an_empty_range_needs_no_segment() {
        for at in [0, 1, SEGMENT_LEN as u64, 1 << 20] {
            assert_eq!(
                span(1 << 20, at..at),
                SegmentSpan {
                    segments: 0..0,
                    sealed: 0..0,
                    skip: 0,
                    len: 0
                }
            );
        }
    }

    #[test]
    fn a_range_past_the_block_or_reversed_is_refused() {
        let g = Segments::new(4096, SEGMENT_SHIFT);
        #[allow(clippy::reversed_empty_ranges)] // a reversed range is one of the inputs refused
        let reversed = 10..5;
        for r in [0..4097, 4096..4097, 5000..6000, reversed] {
            let e = g.span(r.clone()).expect_err("refused");
            assert!(matches!(e, Error::InvalidArgument(_)), "{r:?}: {e:?}");
        }
        assert_eq!(g.span(0..4096).unwrap().segments, 0..1);
    }

    #[test]
    fn an_unsegmented_payload_is_read_whole_for_any_range() {
        let g = Segments::new(50_000, UNSEGMENTED);
        assert_eq!(
            g.span(40_000..40_010).unwrap(),
            SegmentSpan {
                segments: 0..1,
                sealed: 0..50_016,
                skip: 40_000,
                len: 10
            }
        );
    }
}
