//! The footer (the index of blocks, authenticated by a MAC) and the 32-byte trailer that points
//! at it from the end of the file.

use super::{array, le_u64, HEADER_LEN};
use crate::{Error, Result};

const FOOTER_MAGIC: &[u8; 8] = b"QLTXFOOT";
const TRAILER_MAGIC: &[u8; 8] = b"QLTXTRLR";
const TRAILER_END: &[u8; 8] = b"QLTXEND\0";
/// Length of the footer's head: magic, entry count, original size.
pub const FOOTER_HEAD_LEN: usize = 24;
/// Length of one footer entry.
pub const FOOTER_ENTRY_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// Footer bytes besides the entries: head and MAC.
pub const FOOTER_FIXED_LEN: usize = FOOTER_HEAD_LEN + MAC_LEN;
/// Length of the trailer, the last bytes of a complete container.
pub const TRAILER_LEN: usize = 32;

/// Where one block is and which plaintext it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FooterEntry {
    /// Offset of the block prefix in the container.
    pub offset: u64,
    /// Length of the whole block: prefix, metadata and payload.
    pub len: u64,
    /// Offset of the block's first plaintext byte in the original input.
    pub plain_offset: u64,
    /// Plaintext bytes in the block.
    pub plain_size: u64,
}

/// The decoded footer. `mac` is checked by the reader (it needs the key), not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Plaintext length in bytes: the sum of the entries' plain sizes.
    pub original_size: u64,
    /// One entry per block, in block order.
    pub entries: Vec<FooterEntry>,
    /// HMAC-SHA256 over the bound header fields and the footer bytes before it.
    pub mac: [u8; MAC_LEN],
}

impl Footer {
    /// True when `b` begins with the footer's magic: what follows the last block of a stream.
    pub fn starts(b: &[u8]) -> bool {
        b.starts_with(FOOTER_MAGIC)
    }

    /// Length in bytes of a footer with `entries` entries, MAC included.
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
    /// Starts checking the entries of a container with blocks of `block_size` bytes whose last
    /// block ends at container offset `blocks_end` (the footer's offset).
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
    /// Container offset of the footer.
    pub footer_offset: u64,
    /// Length of the footer in bytes; it ends where the trailer starts.
    pub footer_size: u64,
}

impl Trailer {
    /// Encodes the trailer as [`TRAILER_LEN`] bytes.
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
        let trailer_at = file_len.saturating_sub(TRAILER_LEN as u64);
        let fits = t.footer_offset >= HEADER_LEN as u64
            && t.footer_size >= FOOTER_FIXED_LEN as u64
            && file_len >= TRAILER_LEN as u64
            && t.footer_offset.checked_add(t.footer_size) == Some(trailer_at);
        if !fits {
            return Err(Error::Corrupt {
                what: format!(
                    "trailer points at a footer of {} bytes at {} that does not fit a file of {file_len} bytes",
                    t.footer_size, t.footer_offset
                ),
                block: None,
                offset: Some(trailer_at),
            });
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::format::{le_u64, BLOCK_OVERHEAD};

    const BS: u32 = 4096;

    /// Entries for blocks of the given plain sizes, stored raw, laid out one after the other.
    fn entries(plain_sizes: &[u64]) -> Vec<FooterEntry> {
        let (mut offset, mut plain) = (HEADER_LEN as u64, 0);
        plain_sizes
            .iter()
            .map(|&ps| {
                let e = FooterEntry {
                    offset,
                    len: BLOCK_OVERHEAD + ps,
                    plain_offset: plain,
                    plain_size: ps,
                };
                offset += e.len;
                plain += ps;
                e
            })
            .collect()
    }

    fn footer(entries: Vec<FooterEntry>) -> Footer {
        Footer {
            original_size: entries.iter().map(|e| e.plain_size).sum(),
            entries,
            mac: [0xee; 32],
        }
    }

    fn blocks_end(f: &Footer) -> u64 {
        f.entries.last().map_or(HEADER_LEN as u64, |e| e.offset + e.len)
    }

    fn encoded(f: &Footer) -> Vec<u8> {
        let mut b = Footer::encode_unsigned(f.original_size, &f.entries);
        b.extend_from_slice(&f.mac);
        b
    }

    /// The layout error for `f`, which must name `block`.
    fn layout_error_in_block(f: &Footer, block: u64) -> String {
        match f.check_layout(BS, blocks_end(&footer(entries(&[BS as u64; 3])))) {
            Err(Error::Corrupt {
                what, block: Some(b), ..
            }) if b == block => what,
            r => panic!("expected a layout error in block {block}, got {r:?}"),
        }
    }

    #[test]
    fn encode_unsigned_lays_out_magic_count_size_and_entries() {
        let es = entries(&[4096, 100]);
        let b = Footer::encode_unsigned(4196, &es);
        assert_eq!(b.len(), 24 + 2 * 32);
        assert_eq!(&b[0..8], b"QLTXFOOT");
        assert_eq!(le_u64(&b, 8), 2);
        assert_eq!(le_u64(&b, 16), 4196);
        for (i, e) in es.iter().enumerate() {
            let at = 24 + 32 * i;
            assert_eq!(
                [
                    le_u64(&b, at),
                    le_u64(&b, at + 8),
                    le_u64(&b, at + 16),
                    le_u64(&b, at + 24)
                ],
                [e.offset, e.len, e.plain_offset, e.plain_size]
            );
        }
    }

    #[test]
    fn encoded_len_is_56_plus_32_per_entry() {
        assert_eq!(Footer::encoded_len(0), 56);
        assert_eq!(Footer::encoded_len(2), 120);
        let f = footer(entries(&[1, 2, 3]));
        assert_eq!(encoded(&f).len() as u64, Footer::encoded_len(3));
    }

    #[test]
    fn a_footer_round_trips_with_zero_one_and_many_entries() {
        for sizes in [&[][..], &[1][..], &[4096, 4096, 4096, 17][..]] {
            let f = footer(entries(sizes));
            assert_eq!(Footer::decode(&encoded(&f), 9999).unwrap(), f);
        }
    }

    #[test]
    fn an_entry_decodes_from_its_four_little_endian_fields() {
        let e = FooterEntry {
            offset: 1,
            len: 2,
            plain_offset: 3,
            plain_size: u64::MAX,
        };
        let b = Footer::encode_unsigned(0, &[e]);
        assert_eq!(FooterEntry::decode(&b[24..]), e);
    }

    #[test]
    fn starts_recognises_only_the_footer_magic() {
        assert!(Footer::starts(b"QLTXFOOT and more"));
        assert!(!Footer::starts(b"QLTXFOO"));
        assert!(!Footer::starts(b"QBLK...."));
    }

    fn assert_corrupt_at(r: Result<Footer>, offset: u64) {
        match r {
            Err(Error::Corrupt { offset: Some(o), .. }) if o == offset => {}
            r => panic!("expected Corrupt at {offset}, got {r:?}"),
        }
    }

    #[test]
    fn a_footer_with_a_bad_magic_or_too_short_is_corrupt() {
        let good = encoded(&footer(entries(&[10])));
        let mut bad = good.clone();
        bad[3] ^= 1;
        assert_corrupt_at(Footer::decode(&bad, 50), 50);
        assert_corrupt_at(Footer::decode(&good[..55], 50), 50);
        assert_corrupt_at(Footer::decode(&[], 50), 50);
    }

    #[test]
    fn a_footer_whose_count_disagrees_with_its_length_is_corrupt() {
        let good = encoded(&footer(entries(&[10, 20])));
        for count in [0u64, 1, 3, u64::MAX] {
            let mut b = good.clone();
            b[8..16].copy_from_slice(&count.to_le_bytes());
            assert_corrupt_at(Footer::decode(&b, 7), 7);
        }
        let mut ragged = good.clone();
        ragged.extend_from_slice(&[0; 5]);
        assert_corrupt_at(Footer::decode(&ragged, 7), 7);
        assert_corrupt_at(Footer::decode(&good[..good.len() - 1], 7), 7);
    }

    #[test]
    fn entries_that_tile_the_block_area_pass_the_layout_check() {
        let f = footer(entries(&[BS as u64; 3]));
        assert_eq!(
            f.check_layout(BS, blocks_end(&f)).map_err(|e| e.to_string()),
            Ok(())
        );
    }

    #[test]
    fn short_blocks_anywhere_pass_not_only_the_last() {
        let f = footer(entries(&[100, BS as u64, 1, 4000]));
        assert_eq!(
            f.check_layout(BS, blocks_end(&f)).map_err(|e| e.to_string()),
            Ok(())
        );
    }

    #[test]
    fn a_compressed_block_shorter_than_its_plaintext_passes() {
        let mut es = entries(&[BS as u64]);
        es[0].len = BLOCK_OVERHEAD + 1;
        let f = footer(es);
        assert_eq!(
            f.check_layout(BS, blocks_end(&f)).map_err(|e| e.to_string()),
            Ok(())
        );
    }

    #[test]
    fn an_empty_footer_passes_when_the_footer_follows_the_header() {
        let f = footer(vec![]);
        assert_eq!(
            f.check_layout(BS, HEADER_LEN as u64).map_err(|e| e.to_string()),
            Ok(())
        );
        assert!(f.check_layout(BS, HEADER_LEN as u64 + 1).is_err());
    }

    #[test]
    fn a_first_block_not_at_4096_is_rejected() {
        let mut f = footer(entries(&[BS as u64; 3]));
        for e in &mut f.entries {
            e.offset += 1;
        }
        layout_error_in_block(&f, 0);
    }

    #[test]
    fn a_gap_between_blocks_is_rejected() {
        let mut f = footer(entries(&[BS as u64; 3]));
        f.entries[2].offset += 1;
        layout_error_in_block(&f, 2);
    }

    #[test]
    fn overlapping_blocks_are_rejected() {
        let mut f = footer(entries(&[BS as u64; 3]));
        f.entries[1].offset -= 1;
        layout_error_in_block(&f, 1);
    }

    #[test]
    fn swapped_entries_are_rejected() {
        let mut f = footer(entries(&[BS as u64, 100, BS as u64]));
        f.entries.swap(1, 2);
        layout_error_in_block(&f, 1);
    }

    #[test]
    fn plain_offsets_out_of_order_are_rejected() {
        let mut f = footer(entries(&[BS as u64; 3]));
        let (a, b) = (f.entries[1].plain_offset, f.entries[2].plain_offset);
        f.entries[1].plain_offset = b;
        f.entries[2].plain_offset = a;
        assert!(layout_error_in_block(&f, 1).contains("plaintext offset"));
        let mut g = footer(entries(&[BS as u64; 3]));
        g.entries[0].plain_offset = 1;
        layout_error_in_block(&g, 0);
    }

    #[test]
    fn a_plain_size_of_zero_or_above_the_block_size_is_rejected() {
        let mut zero = footer(entries(&[BS as u64; 3]));
        zero.entries[1].plain_size = 0;
        assert!(layout_error_in_block(&zero, 1).contains("plaintext size"));
        let mut big = footer(entries(&[BS as u64; 3]));
        big.entries[2].plain_size = BS as u64 + 1;
        assert!(layout_error_in_block(&big, 2).contains("plaintext size"));
    }

    #[test]
    fn a_block_length_outside_156_to_156_plus_plain_size_is_rejected() {
        let mut short = footer(entries(&[BS as u64; 3]));
        short.entries[0].len = BLOCK_OVERHEAD - 1;
        assert!(layout_error_in_block(&short, 0).contains("length"));
        let mut long = footer(entries(&[BS as u64; 3]));
        long.entries[1].len = BLOCK_OVERHEAD + BS as u64 + 1;
        assert!(layout_error_in_block(&long, 1).contains("length"));
    }

    #[test]
    fn a_block_running_into_the_footer_is_rejected() {
        let f = footer(entries(&[BS as u64; 3]));
        let end = blocks_end(&f);
        match f.check_layout(BS, end - 1) {
            Err(Error::Corrupt { block: Some(2), .. }) => {}
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn blocks_ending_before_the_footer_are_rejected() {
        let f = footer(entries(&[BS as u64; 3]));
        let e = f.check_layout(BS, blocks_end(&f) + 1).unwrap_err();
        assert!(matches!(e, Error::Corrupt { block: None, .. }), "{e}");
    }

    #[test]
    fn a_dropped_trailing_entry_is_rejected() {
        let full = footer(entries(&[BS as u64; 3]));
        let mut f = full.clone();
        f.entries.pop();
        f.original_size = 2 * BS as u64;
        assert!(f.check_layout(BS, blocks_end(&full)).is_err());
    }

    #[test]
    fn an_original_size_other_than_the_sum_of_plain_sizes_is_rejected() {
        for delta in [-1i64, 1] {
            let mut f = footer(entries(&[BS as u64, 10]));
            f.original_size = (f.original_size as i64 + delta) as u64;
            let e = f.check_layout(BS, blocks_end(&f)).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        }
    }

    #[test]
    fn a_hostile_length_near_u64_max_is_rejected_without_panicking() {
        let mut check = LayoutCheck::new(u32::MAX, u64::MAX);
        let e = FooterEntry {
            offset: HEADER_LEN as u64,
            len: u64::MAX - 10,
            plain_offset: 0,
            plain_size: u32::MAX as u64,
        };
        assert!(check.next(&e).is_err());
    }

    #[test]
    fn layout_check_stops_at_the_first_bad_entry_and_names_it() {
        let es = entries(&[BS as u64; 4]);
        let mut check = LayoutCheck::new(BS, es[3].offset + es[3].len);
        check.next(&es[0]).unwrap();
        check.next(&es[1]).unwrap();
        match check.next(&es[3]) {
            Err(Error::Corrupt {
                block: Some(2),
                offset: Some(o),
                ..
            }) => assert_eq!(o, es[3].offset),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn layout_check_one_entry_at_a_time_agrees_with_check_layout() {
        let f = footer(entries(&[1, 2, BS as u64]));
        let mut check = LayoutCheck::new(BS, blocks_end(&f));
        for e in &f.entries {
            check.next(e).unwrap();
        }
        check.finish(f.original_size).unwrap();
        assert!(check.finish(f.original_size + 1).is_err());
    }

    fn trailer_at(footer_offset: u64, footer_size: u64) -> [u8; TRAILER_LEN] {
        Trailer {
            footer_offset,
            footer_size,
        }
        .encode()
    }

    #[test]
    fn a_trailer_encodes_to_the_layout_of_format_md() {
        let b = trailer_at(0x1122, 0x3344);
        assert_eq!(&b[0..8], b"QLTXTRLR");
        assert_eq!(le_u64(&b, 8), 0x1122);
        assert_eq!(le_u64(&b, 16), 0x3344);
        assert_eq!(&b[24..32], b"QLTXEND\0");
    }

    #[test]
    fn a_trailer_round_trips_against_the_right_file_length() {
        let t = Trailer {
            footer_offset: 9408,
            footer_size: 120,
        };
        assert_eq!(Trailer::decode(&t.encode(), 9408 + 120 + 32).unwrap(), t);
        let empty = Trailer {
            footer_offset: 4096,
            footer_size: 56,
        };
        assert_eq!(Trailer::decode(&empty.encode(), 4096 + 56 + 32).unwrap(), empty);
    }

    #[test]
    fn a_file_without_the_trailer_magics_is_incomplete() {
        for at in [0, 7, 24, 31] {
            let mut b = trailer_at(4096, 56);
            b[at] ^= 1;
            let e = Trailer::decode(&b, 4096 + 56 + 32).unwrap_err();
            assert!(matches!(e, Error::NoTrailer), "byte {at}: {e}");
        }
    }

    fn assert_trailer_corrupt(b: [u8; TRAILER_LEN], file_len: u64) {
        match Trailer::decode(&b, file_len) {
            Err(Error::Corrupt { offset: Some(o), .. }) => assert_eq!(o, file_len - 32),
            r => panic!("expected Corrupt, got {r:?}"),
        }
    }

    #[test]
    fn a_footer_that_does_not_end_at_the_trailer_is_corrupt() {
        let file_len = 4096 + 120 + 32;
        assert_trailer_corrupt(trailer_at(4096, 119), file_len);
        assert_trailer_corrupt(trailer_at(4096, 121), file_len);
        assert_trailer_corrupt(trailer_at(4097, 120), file_len);
    }

    #[test]
    fn a_footer_inside_the_header_is_corrupt() {
        assert_trailer_corrupt(trailer_at(4000, 216), 4000 + 216 + 32);
        assert_trailer_corrupt(trailer_at(0, 56), 56 + 32);
    }

    #[test]
    fn a_footer_bigger_than_the_file_is_corrupt_without_overflow() {
        assert_trailer_corrupt(trailer_at(4096, u64::MAX), 10_000);
        assert_trailer_corrupt(trailer_at(u64::MAX, 56), 10_000);
        assert_trailer_corrupt(trailer_at(u64::MAX - 10, 11), 10_000);
    }

    #[test]
    fn a_footer_smaller_than_its_fixed_part_is_corrupt() {
        assert_trailer_corrupt(trailer_at(4096, 55), 4096 + 55 + 32);
        assert_trailer_corrupt(trailer_at(4096, 0), 4096 + 32);
    }

    #[test]
    fn a_file_length_below_the_trailer_size_is_an_error_not_a_panic() {
        let r = std::panic::catch_unwind(|| Trailer::decode(&trailer_at(4096, 56), 10).is_err());
        assert_eq!(r.ok(), Some(true));
    }
}
