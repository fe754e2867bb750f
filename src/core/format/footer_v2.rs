//! Format version 2, footer: v1's index entries, each followed by the BLAKE3 hash of the stored
//! block and a copy of its sealed metadata, a root over the block hashes and the file record, and
//! the sealed file record itself.
//!
//! ```text
//! 0        8      magic "QLTXFOT2"
//! 8        8      n
//! 16       8      original_size
//! 24       32     root
//! 56       4      r: file-record length (0: none, else 46 … 4142)
//! 60       12     reserved (zero)
//! 72       180·n  entries: offset, len, plain_offset, plain_size (u64 each), block_hash (32),
//!                 sealed metadata (116)
//! 72+180·n r      the sealed file record
//! …        32     MAC
//! ```
//!
//! The file record lives inside the footer, so a stream reader meets nothing but blocks before
//! the footer's magic, and the footer's length is known once its 72-byte head has arrived.
//! Decoding checks the structure only: no key and no block is needed. The root and the block
//! hashes are checked against the blocks by `crate::core::integrity_v2`, the MAC by the reader.

use super::{array, le_u32, le_u64, FooterEntry, BLOCK_HEAD_LEN, HEADER_LEN, META_LEN, NONCE_LEN, TAG_LEN};
use crate::{Error, Result};

const FOOTER_V2_MAGIC: &[u8; 8] = b"QLTXFOT2";
/// Magic of a version-3 footer (and of format 4's base footer).
pub const FOOTER_V3_MAGIC: &[u8; 8] = b"QLTXFOT3";
/// Length of one v3 footer entry: v2's and the block's generation (u64).
pub const FOOTER_V3_ENTRY_LEN: usize = FOOTER_V2_ENTRY_LEN + 8;
/// Length of the v2 footer's head: magic, n, original size, root, record length, reserved.
pub const FOOTER_V2_HEAD_LEN: usize = 72;
/// Length of one v2 footer entry: v1's 32 bytes, the block hash, the sealed metadata copy.
pub const FOOTER_V2_ENTRY_LEN: usize = 32 + 32 + META_LEN;
const MAC_LEN: usize = 32;
/// v2 footer bytes besides the entries and the file record: head and MAC.
pub const FOOTER_V2_FIXED_LEN: usize = FOOTER_V2_HEAD_LEN + MAC_LEN;

/// Largest file-record name, in bytes.
pub const FILE_RECORD_MAX_NAME: usize = 4096;
/// Plaintext bytes of a file record besides the name: `u16 name_len`, `u32 mode`,
/// `i64 mtime_sec`, `u32 mtime_nsec`.
pub const FILE_RECORD_FIXED_PLAIN: usize = 2 + 4 + 8 + 4;
/// Smallest stored file record: nonce, the fixed fields with an empty name, tag.
pub const FILE_RECORD_MIN_LEN: u32 = (NONCE_LEN + FILE_RECORD_FIXED_PLAIN + TAG_LEN) as u32;
/// Largest stored file record: nonce, the fixed fields with a 4096-byte name, tag (4142 bytes).
pub const FILE_RECORD_MAX_LEN: u32 = FILE_RECORD_MIN_LEN + FILE_RECORD_MAX_NAME as u32;

/// Smallest v2 block: head, one stored byte and one tag.
const BLOCK_V2_MIN_LEN: u64 = BLOCK_HEAD_LEN as u64 + 1 + TAG_LEN as u64;
/// Segment length bounding the number of tags in a block (`SEGMENT_LEN`, 16 KiB).
const SEGMENT_LEN: u64 = super::SEGMENT_LEN as u64;

/// Largest v2 block holding `plain_size` plaintext bytes: stored raw in 16 KiB segments, each
/// with a tag (a compressed block is one segment of at most `plain_size` bytes, so smaller).
pub fn max_block_len_v2(plain_size: u64) -> u64 {
    BLOCK_HEAD_LEN as u64 + plain_size + TAG_LEN as u64 * plain_size.div_ceil(SEGMENT_LEN).max(1)
}

/// Smallest v2 block: see [`max_block_len_v2`] for the largest.
pub const fn min_block_len_v2() -> u64 {
    BLOCK_V2_MIN_LEN
}

/// One v2 footer entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FooterEntryV2 {
    /// Where the block is and which plaintext it holds, as in v1.
    pub entry: FooterEntry,
    /// BLAKE3 of the stored block: prefix, sealed metadata and sealed payload.
    pub block_hash: [u8; 32],
    /// A copy of the block's sealed metadata (nonce, ciphertext, tag), as stored inline.
    pub sealed_meta: [u8; META_LEN],
    /// Version 3: the generation (commit) that wrote this version of the block, 1 … the
    /// footer's generation. 0 in a v2 footer.
    pub generation: u64,
}

/// The decoded v2 footer. The MAC is checked by the reader (it needs the key), the root and the
/// block hashes by `integrity_v2` (it needs the blocks), not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FooterV2 {
    /// Plaintext length in bytes: the sum of the entries' plain sizes.
    pub original_size: u64,
    /// BLAKE3(`"qeltrix v2 root"` ‖ u64(n) ‖ block_hash_0 ‖ … ‖ block_hash_{n−1} ‖ u32(r) ‖
    /// file record).
    pub root: [u8; 32],
    /// The sealed file record (nonce, ciphertext, tag), if the container has one.
    pub file_record: Option<Vec<u8>>,
    /// One entry per block, in block order.
    pub entries: Vec<FooterEntryV2>,
    /// HMAC-SHA256 under the v2 footer MAC key over the bound header fields and the footer
    /// bytes before it.
    pub mac: [u8; MAC_LEN],
    /// A version-3 footer's generation (≥ 1): the commit it belongs to. `None` for v2.
    pub generation: Option<u64>,
}

impl FooterV2 {
    /// True when `b` begins with the v2 footer's magic.
    pub fn starts(b: &[u8]) -> bool {
        b.starts_with(FOOTER_V2_MAGIC)
    }

    /// Length of one entry in a footer of this kind (v2 or v3).
    pub fn entry_len(v3: bool) -> usize {
        if v3 {
            FOOTER_V3_ENTRY_LEN
        } else {
            FOOTER_V2_ENTRY_LEN
        }
    }

    /// Length in bytes of a v2 footer with `entries` entries and a file record of `record`
    /// bytes (0: none), MAC included.
    pub fn encoded_len(entries: usize, record: u32) -> u64 {
        FOOTER_V2_FIXED_LEN as u64 + entries as u64 * FOOTER_V2_ENTRY_LEN as u64 + record as u64
    }

    /// Length in bytes of this footer, encoded.
    pub fn encoded_size(&self) -> u64 {
        let record = self.file_record.as_ref().map_or(0, |r| r.len() as u64);
        FOOTER_V2_FIXED_LEN as u64
            + self.entries.len() as u64 * Self::entry_len(self.generation.is_some()) as u64
            + record
    }

    /// The footer's length, from its head (the first [`FOOTER_V2_HEAD_LEN`] bytes): what a
    /// stream reader reads next. Checks the magic and the record length; `n` is bounded by the
    /// caller's limit on what it will read (`max_len`).
    pub fn len_from_head(head: &[u8; FOOTER_V2_HEAD_LEN], footer_offset: u64, max_len: u64) -> Result<u64> {
        let bad = |what: String| Error::Corrupt {
            what: format!("v2 footer: {what}"),
            block: None,
            offset: Some(footer_offset),
        };
        if !Self::starts(head) {
            return Err(bad("bad magic".into()));
        }
        let r = record_len(head, false).map_err(bad)?;
        let n = le_u64(head, 8);
        let len = n
            .checked_mul(FOOTER_V2_ENTRY_LEN as u64)
            .and_then(|e| e.checked_add(FOOTER_V2_FIXED_LEN as u64 + r as u64))
            .filter(|&len| len <= max_len)
            .ok_or_else(|| bad(format!("entry count n = {n} is more than the container can hold")))?;
        Ok(len)
    }

    /// The footer bytes the MAC covers (after the header's bound fields): all but the last 32.
    /// `b` is a footer that [`FooterV2::decode`] accepted, or at least [`FOOTER_V2_FIXED_LEN`]
    /// bytes long.
    pub fn unsigned_part(b: &[u8]) -> &[u8] {
        &b[..b.len().saturating_sub(MAC_LEN)]
    }

    /// Footer bytes without the MAC: what the MAC covers.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let record = self.file_record.as_deref().unwrap_or(&[]);
        let mut b = Vec::with_capacity(self.encoded_size() as usize);
        b.extend_from_slice(if self.generation.is_some() {
            FOOTER_V3_MAGIC
        } else {
            FOOTER_V2_MAGIC
        });
        b.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        b.extend_from_slice(&self.original_size.to_le_bytes());
        b.extend_from_slice(&self.root);
        b.extend_from_slice(&(record.len() as u32).to_le_bytes());
        match self.generation {
            None => b.extend_from_slice(&[0; 12]),
            Some(g) => {
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(&g.to_le_bytes());
            }
        }
        for e in &self.entries {
            let v = e.entry;
            for x in [v.offset, v.len, v.plain_offset, v.plain_size] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b.extend_from_slice(&e.block_hash);
            b.extend_from_slice(&e.sealed_meta);
            if self.generation.is_some() {
                b.extend_from_slice(&e.generation.to_le_bytes());
            }
        }
        b.extend_from_slice(record);
        b
    }

    /// The whole footer: [`FooterV2::encode_unsigned`] followed by `self.mac`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.encode_unsigned();
        b.extend_from_slice(&self.mac);
        b
    }

    /// Decodes the v2 footer `b` found at container offset `footer_offset` in a container of
    /// `block_size`, and checks its structure: magic; reserved bytes zero; the record length
    /// (0, or 46 … 4142); `n` against the footer's length (before anything is allocated);
    /// entries that start at the end of the header, follow each other without gaps in the
    /// container and in the plaintext, hold 1 … `block_size` plaintext bytes each in a length a
    /// v2 block of that size can have, the last ending where the footer starts; and
    /// `original_size` the sum of the plain sizes. An error names the field, and the entry
    /// (index and block offset) if any.
    pub fn decode(b: &[u8], footer_offset: u64, block_size: u32) -> Result<Self> {
        Self::decode_as(b, footer_offset, block_size, None)
    }

    /// Decodes a version-3 footer of generation `generation` (the current commit record's),
    /// found at `footer_offset`. As [`FooterV2::decode`], except: the magic is `QLTXFOT3`; bytes
    /// 60..64 are reserved and 64..72 hold the generation, which must be `generation`; each entry
    /// ends with its block's generation, 1 … `generation`; and blocks may lie anywhere in
    /// `[4096, footer_offset)` in any order, as long as no two overlap.
    pub fn decode_v3(b: &[u8], footer_offset: u64, block_size: u32, generation: u64) -> Result<Self> {
        Self::decode_as(b, footer_offset, block_size, Some(generation))
    }

    fn decode_as(b: &[u8], footer_offset: u64, block_size: u32, generation: Option<u64>) -> Result<Self> {
        let v3 = generation.is_some();
        let name = if v3 { "v3 footer" } else { "v2 footer" };
        let bad = |what: String| Error::Corrupt {
            what: format!("{name}: {what}"),
            block: None,
            offset: Some(footer_offset),
        };
        let magic = if v3 { FOOTER_V3_MAGIC } else { FOOTER_V2_MAGIC };
        if b.len() < FOOTER_V2_FIXED_LEN || &b[0..8] != magic {
            return Err(bad("bad magic".into()));
        }
        let r = record_len(b, v3).map_err(bad)? as usize;
        if let Some(g) = generation {
            let stored = le_u64(b, 64);
            if stored != g {
                return Err(bad(format!(
                    "generation {stored}, but the commit record says {g}"
                )));
            }
        }
        let entry_len = Self::entry_len(v3);
        let n = le_u64(b, 8);
        let room = (b.len() - FOOTER_V2_FIXED_LEN).checked_sub(r);
        let count = room
            .filter(|room| room.is_multiple_of(entry_len))
            .map(|room| room / entry_len)
            .filter(|&count| count as u64 == n)
            .ok_or_else(|| {
                bad(format!(
                    "entry count n = {n} and record length {r} do not match its length of {} bytes",
                    b.len()
                ))
            })?;

        // `n` equals the length-derived count, so this allocation is bounded by `b`.
        let mut entries = Vec::with_capacity(count);
        let (mut offset, mut plain) = (HEADER_LEN as u64, 0u64);
        for i in 0..count {
            let at = FOOTER_V2_HEAD_LEN + i * entry_len;
            let mut e = FooterEntryV2::decode(&b[at..]);
            let v = e.entry;
            let bad_entry =
                |what: &str| Error::corrupt_block(i as u64, v.offset, format!("{name} entry {i}: {what}"));
            if let Some(g) = generation {
                e.generation = le_u64(b, at + FOOTER_V2_ENTRY_LEN);
                if !(1..=g).contains(&e.generation) {
                    return Err(bad_entry("block generation out of range"));
                }
                // Blocks lie anywhere after the header; overlaps are checked below.
                if v.offset < HEADER_LEN as u64 {
                    return Err(bad_entry("block inside the header"));
                }
                offset = v.offset;
            }
            if v.offset != offset {
                return Err(bad_entry("block offset is not contiguous"));
            }
            if v.plain_offset != plain {
                return Err(bad_entry("plaintext offset is not contiguous"));
            }
            if v.plain_size == 0 || v.plain_size > block_size as u64 {
                return Err(bad_entry("plaintext size out of range"));
            }
            if v.len < BLOCK_V2_MIN_LEN || v.len > max_block_len_v2(v.plain_size) {
                return Err(bad_entry("block length out of range"));
            }
            offset = offset
                .checked_add(v.len)
                .filter(|&end| end <= footer_offset)
                .ok_or_else(|| bad_entry("block runs into the footer"))?;
            plain += v.plain_size;
            entries.push(e);
        }
        if v3 {
            check_no_overlap(&entries)?;
        } else if offset != footer_offset {
            return Err(Error::Corrupt {
                what: format!("v2 footer: blocks end at {offset} but the footer starts at {footer_offset}"),
                block: None,
                offset: Some(footer_offset),
            });
        }
        let original_size = le_u64(b, 16);
        if plain != original_size {
            return Err(bad(format!(
                "original_size {original_size} but the entries add up to {plain}"
            )));
        }
        let record_at = FOOTER_V2_HEAD_LEN + count * entry_len;
        Ok(FooterV2 {
            original_size,
            root: array(b, 24),
            file_record: (r > 0).then(|| b[record_at..record_at + r].to_vec()),
            entries,
            mac: array(b, b.len() - MAC_LEN),
            generation,
        })
    }

    /// Version 3: container bytes in `[4096, footer_offset)` that no entry of this footer holds:
    /// superseded block versions and earlier footers, which `qeltrix compact` reclaims.
    pub fn superseded_bytes(&self, footer_offset: u64) -> u64 {
        let live: u64 = self.entries.iter().map(|e| e.entry.len).sum();
        footer_offset
            .saturating_sub(HEADER_LEN as u64)
            .saturating_sub(live)
    }
}

/// Version 3: no two blocks may share a byte (each lies within `[4096, footer_offset)`, checked
/// per entry). Sorts a list of (offset, end, index): n log n on n entries the footer's length
/// already bounds.
fn check_no_overlap(entries: &[FooterEntryV2]) -> Result<()> {
    let mut spans: Vec<(u64, u64, usize)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.entry.offset, e.entry.offset + e.entry.len, i))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::corrupt_block(
                w[1].2 as u64,
                w[1].0,
                format!("v3 footer entry {}: block overlaps block {}", w[1].2, w[0].2),
            ));
        }
    }
    Ok(())
}

/// The record length in a footer head, checked with the reserved bytes (60..72 in v2; 60..64
/// in v3, whose 64..72 hold the generation).
fn record_len(head: &[u8], v3: bool) -> std::result::Result<u32, String> {
    let reserved = if v3 { 60..64 } else { 60..72 };
    if head[reserved.clone()].iter().any(|&x| x != 0) {
        return Err(format!(
            "reserved bytes {}..{} are not zero",
            reserved.start, reserved.end
        ));
    }
    let r = le_u32(head, 56);
    if r != 0 && !(FILE_RECORD_MIN_LEN..=FILE_RECORD_MAX_LEN).contains(&r) {
        return Err(format!(
            "file-record length {r} outside {FILE_RECORD_MIN_LEN}..={FILE_RECORD_MAX_LEN}"
        ));
    }
    Ok(r)
}

impl FooterEntryV2 {
    /// Decodes the entry at the start of `b` (at least [`FOOTER_V2_ENTRY_LEN`] bytes).
    pub fn decode(b: &[u8]) -> Self {
        FooterEntryV2 {
            entry: FooterEntry::decode(b),
            block_hash: array(b, 32),
            sealed_meta: array(b, 64),
            generation: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u32 = 65536;

    /// Entries for raw blocks of the given plain sizes, laid out one after the other.
    fn entries(plain_sizes: &[u64]) -> Vec<FooterEntryV2> {
        let (mut offset, mut plain) = (HEADER_LEN as u64, 0);
        plain_sizes
            .iter()
            .enumerate()
            .map(|(i, &ps)| {
                let e = FooterEntry {
                    offset,
                    len: max_block_len_v2(ps),
                    plain_offset: plain,
                    plain_size: ps,
                };
                offset += e.len;
                plain += ps;
                FooterEntryV2 {
                    entry: e,
                    block_hash: [i as u8 + 1; 32],
                    sealed_meta: [0x80 + i as u8; META_LEN],
                    generation: 0,
                }
            })
            .collect()
    }

    fn footer(entries: Vec<FooterEntryV2>, record: Option<u32>) -> (FooterV2, u64) {
        let end = entries
            .last()
            .map_or(HEADER_LEN as u64, |e| e.entry.offset + e.entry.len);
        let f = FooterV2 {
            original_size: entries.iter().map(|e| e.entry.plain_size).sum(),
            root: [0x33; 32],
            file_record: record.map(|len| vec![0x5a; len as usize]),
            entries,
            mac: [0xee; 32],
            generation: None,
        };
        (f, end)
    }

    fn error(b: &[u8], at: u64) -> (String, Option<u64>) {
        match FooterV2::decode(b, at, BS) {
            Err(Error::Corrupt { what, block, .. }) => (what, block),
            r => panic!("expected a corrupt footer, got {r:?}"),
        }
    }

    #[test]
    fn the_layout_is_the_designs() {
        assert_eq!(
            (FOOTER_V2_HEAD_LEN, FOOTER_V2_ENTRY_LEN, FOOTER_V2_FIXED_LEN),
            (72, 180, 104)
        );
        assert_eq!((FILE_RECORD_MIN_LEN, FILE_RECORD_MAX_LEN), (46, 4142));
        let (f, _) = footer(entries(&[100, 200]), Some(50));
        let b = f.encode();
        assert_eq!(b.len() as u64, FooterV2::encoded_len(2, 50));
        let head: [u8; 72] = array(&b, 0);
        assert_eq!(
            FooterV2::len_from_head(&head, 0, u64::MAX).unwrap(),
            b.len() as u64
        );
        assert_eq!(&b[0..8], b"QLTXFOT2");
        assert_eq!(le_u64(&b, 8), 2);
        assert_eq!(le_u64(&b, 16), 300);
        assert_eq!(b[24..56], [0x33; 32]);
        assert_eq!(le_u32(&b, 56), 50);
        assert_eq!(b[60..72], [0; 12]);
        for (i, e) in f.entries.iter().enumerate() {
            let at = 72 + 180 * i;
            let v = e.entry;
            assert_eq!(
                [
                    le_u64(&b, at),
                    le_u64(&b, at + 8),
                    le_u64(&b, at + 16),
                    le_u64(&b, at + 24)
                ],
                [v.offset, v.len, v.plain_offset, v.plain_size]
            );
            assert_eq!(b[at + 32..at + 64], e.block_hash);
            assert_eq!(b[at + 64..at + 180], e.sealed_meta);
        }
        assert_eq!(b[72 + 360..72 + 360 + 50], [0x5a; 50]);
        assert_eq!(b[b.len() - 32..], [0xee; 32]);
        assert_eq!(FooterV2::unsigned_part(&b), &f.encode_unsigned()[..]);
        assert!(FooterV2::starts(&b) && !FooterV2::starts(b"QLTXFOOT"));
    }

    #[test]
    fn a_footer_round_trips_with_zero_one_and_many_entries_with_and_without_a_record() {
        for sizes in [&[][..], &[1][..], &[65536, 16384, 16385, 17][..]] {
            for record in [None, Some(FILE_RECORD_MIN_LEN), Some(FILE_RECORD_MAX_LEN)] {
                let (f, at) = footer(entries(sizes), record);
                assert_eq!(FooterV2::decode(&f.encode(), at, BS).unwrap(), f);
            }
        }
    }

    #[test]
    fn a_block_may_be_as_short_as_one_stored_byte_and_as_long_as_raw_segments() {
        assert_eq!(max_block_len_v2(1), 140 + 1 + 16);
        assert_eq!(max_block_len_v2(16384), 140 + 16384 + 16);
        assert_eq!(max_block_len_v2(16385), 140 + 16385 + 32);
        let mut es = entries(&[100, 16385]);
        es[0].entry.len = BLOCK_V2_MIN_LEN;
        es[1].entry.offset = HEADER_LEN as u64 + BLOCK_V2_MIN_LEN;
        let (f, at) = footer(es, None);
        FooterV2::decode(&f.encode(), at, BS).unwrap();
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let (f, at) = footer(entries(&[100, 200]), None);
        let b = f.encode();
        for cut in 0..b.len() {
            let (what, _) = error(&b[..cut], at);
            assert!(
                what.contains("magic") || what.contains("n = 2") || what.contains("reserved"),
                "{cut}: {what}"
            );
        }
        for extra in [1, 32, 180] {
            let mut long = b.clone();
            long.resize(b.len() + extra, 0);
            assert!(error(&long, at).0.contains("n = 2"));
        }
    }

    #[test]
    fn an_absurd_n_is_refused_from_the_length_before_allocating() {
        let (f, at) = footer(entries(&[100]), None);
        for n in [
            2,
            u64::MAX,
            u64::MAX / 180,
            1 << 60,
            (usize::MAX / FOOTER_V2_ENTRY_LEN) as u64,
        ] {
            let mut b = f.encode();
            b[8..16].copy_from_slice(&n.to_le_bytes());
            assert!(error(&b, at).0.contains(&format!("n = {n}")), "{n}");
        }
    }

    #[test]
    fn reserved_bytes_must_be_zero() {
        let (f, at) = footer(entries(&[100]), None);
        for i in 60..72 {
            let mut b = f.encode();
            b[i] = 1;
            assert!(error(&b, at).0.contains("reserved"));
        }
    }

    #[test]
    fn the_file_record_length_is_bounded_and_must_match_the_footer_length() {
        let (f, at) = footer(entries(&[100]), Some(60));
        let set = |len: u32| {
            let mut b = f.encode();
            b[56..60].copy_from_slice(&len.to_le_bytes());
            b
        };
        for len in [1, FILE_RECORD_MIN_LEN - 1, FILE_RECORD_MAX_LEN + 1, u32::MAX] {
            assert!(error(&set(len), at).0.contains("outside"), "{len}");
            let head: [u8; 72] = array(&set(len), 0);
            assert!(FooterV2::len_from_head(&head, at, u64::MAX).is_err());
        }
        // A length that moves bytes between the entries and the record.
        for len in [0, 59, 61, FILE_RECORD_MAX_LEN] {
            assert!(error(&set(len), at).0.contains("do not match"), "{len}");
        }
        // A head claiming more than the container holds.
        let mut b = f.encode();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let head: [u8; 72] = array(&b, 0);
        assert!(FooterV2::len_from_head(&head, at, 1 << 40).is_err());
    }

    #[test]
    fn entries_must_tile_the_blocks_and_the_plaintext() {
        type Edit = fn(&mut [FooterEntryV2]);
        let cases: [(Edit, u64, &str); 8] = [
            (|e| e[0].entry.offset += 1, 0, "block offset"),
            (|e| e[1].entry.offset -= 1, 1, "block offset"),
            (|e| e[1].entry.plain_offset += 1, 1, "plaintext offset"),
            (|e| e[2].entry.plain_size = 0, 2, "plaintext size"),
            (|e| e[2].entry.plain_size = BS as u64 + 1, 2, "plaintext size"),
            (|e| e[1].entry.len = BLOCK_V2_MIN_LEN - 1, 1, "block length"),
            (|e| e[1].entry.len = max_block_len_v2(200) + 1, 1, "block length"),
            (|e| e.swap(0, 1), 0, "block offset"),
        ];
        for (edit, block, what) in cases {
            let (f, at) = footer(entries(&[100, 200, 300]), None);
            let mut g = f.clone();
            edit(&mut g.entries);
            let (msg, b) = error(&g.encode(), at);
            assert_eq!(b, Some(block), "{msg}");
            assert!(
                msg.starts_with(&format!("v2 footer entry {block}: {what}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_block_may_not_run_into_the_footer_nor_stop_short_of_it() {
        let (f, at) = footer(entries(&[100, 200]), None);
        let b = f.encode();
        assert_eq!(
            error(&b, at - 1),
            ("v2 footer entry 1: block runs into the footer".into(), Some(1))
        );
        assert!(error(&b, at + 1).0.contains("blocks end at"));
        // A container without blocks has its footer right after the header.
        let (e, e_at) = footer(vec![], None);
        assert_eq!(e_at, HEADER_LEN as u64);
        assert!(error(&e.encode(), e_at + 1).0.contains("blocks end at 4096"));
    }

    #[test]
    fn original_size_must_be_the_sum_of_the_plain_sizes() {
        let (mut f, at) = footer(entries(&[100, 200]), None);
        f.original_size += 1;
        assert!(error(&f.encode(), at).0.contains("original_size 301"));
    }
}
