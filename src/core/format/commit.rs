//! Format version 3, commit records: which footer of an edited-in-place container is current.
//!
//! ```text
//! 0   8   magic "QLTXCMT3"
//! 8   8   generation (≥ 1)
//! 16  8   footer_offset
//! 24  8   footer_size
//! 32  8   reserved (zero)
//! 40  24  check: the first 24 bytes of BLAKE3(bytes 0..40)
//! ```
//!
//! Two records sit in the header's reserved bytes, A at offset 72 and B at 136. Generation `g`
//! is written to A when `g` is odd and to B when it is even, so a commit overwrites the record
//! of the generation before last and a torn write of it leaves the last commit's record whole.
//! The current record is the valid one with the higher generation.

use super::{array, le_u64};
use crate::{Error, Result};

const COMMIT_MAGIC: &[u8; 8] = b"QLTXCMT3";
/// Length of one commit record.
pub const COMMIT_LEN: usize = 64;
/// Header offset of commit record A (odd generations).
pub const COMMIT_A: usize = 72;
/// Header offset of commit record B (even generations).
pub const COMMIT_B: usize = COMMIT_A + COMMIT_LEN;
const CHECKED_LEN: usize = 40;

/// A decoded commit record: where the footer of `generation` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    /// The commit's number, 1 for the first; each commit adds one.
    pub generation: u64,
    /// Container offset of this generation's footer.
    pub footer_offset: u64,
    /// Length of that footer in bytes.
    pub footer_size: u64,
}

impl CommitRecord {
    /// The 64 bytes of this record.
    pub fn encode(&self) -> [u8; COMMIT_LEN] {
        let mut b = [0u8; COMMIT_LEN];
        b[0..8].copy_from_slice(COMMIT_MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.footer_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.footer_size.to_le_bytes());
        let check = blake3::hash(&b[..CHECKED_LEN]);
        b[CHECKED_LEN..].copy_from_slice(&check.as_bytes()[..COMMIT_LEN - CHECKED_LEN]);
        b
    }

    /// The record in `b`, or `None` when it is not a valid one (never written, or torn): a bad
    /// magic or check, non-zero reserved bytes, or generation 0.
    pub fn decode(b: &[u8; COMMIT_LEN]) -> Option<Self> {
        let check = blake3::hash(&b[..CHECKED_LEN]);
        let valid = &b[0..8] == COMMIT_MAGIC
            && b[CHECKED_LEN..] == check.as_bytes()[..COMMIT_LEN - CHECKED_LEN]
            && b[32..40].iter().all(|&x| x == 0);
        let r = CommitRecord {
            generation: le_u64(b, 8),
            footer_offset: le_u64(b, 16),
            footer_size: le_u64(b, 24),
        };
        (valid && r.generation >= 1).then_some(r)
    }

    /// The header offset generation `generation`'s record is written at.
    pub fn slot_of(generation: u64) -> usize {
        if generation % 2 == 1 {
            COMMIT_A
        } else {
            COMMIT_B
        }
    }

    /// The current record of a header holding records `a` and `b`: the valid one with the
    /// higher generation. Each must sit in the slot its generation's parity names.
    pub fn current(a: &[u8; COMMIT_LEN], b: &[u8; COMMIT_LEN]) -> Result<Self> {
        let a = Self::decode(a).filter(|r| Self::slot_of(r.generation) == COMMIT_A);
        let b = Self::decode(b).filter(|r| Self::slot_of(r.generation) == COMMIT_B);
        match (a, b) {
            (Some(a), Some(b)) => Ok(if b.generation > a.generation { b } else { a }),
            (Some(r), None) | (None, Some(r)) => Ok(r),
            (None, None) => Err(Error::corrupt(
                "version-3 header: neither commit record (offsets 72 and 136) is valid",
            )),
        }
    }

    /// The bytes of record `at` (`COMMIT_A` or `COMMIT_B`) in a header region.
    pub fn raw(header: &[u8], at: usize) -> [u8; COMMIT_LEN] {
        array(header, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(generation: u64) -> CommitRecord {
        CommitRecord {
            generation,
            footer_offset: 4096 + generation * 1000,
            footer_size: 104,
        }
    }

    #[test]
    fn the_layout_is_format_md_s() {
        let b = rec(7).encode();
        assert_eq!(&b[0..8], b"QLTXCMT3");
        assert_eq!(le_u64(&b, 8), 7);
        assert_eq!(le_u64(&b, 16), 4096 + 7000);
        assert_eq!(le_u64(&b, 24), 104);
        assert_eq!(&b[32..40], &[0; 8]);
        assert_eq!(&b[40..], &blake3::hash(&b[..40]).as_bytes()[..24]);
        assert_eq!(CommitRecord::decode(&b), Some(rec(7)));
    }

    #[test]
    fn a_flipped_bit_anywhere_or_generation_zero_makes_a_record_invalid() {
        let good = rec(3).encode();
        for i in 0..COMMIT_LEN * 8 {
            let mut b = good;
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(CommitRecord::decode(&b), None, "bit {i}");
        }
        assert_eq!(CommitRecord::decode(&rec(0).encode()), None);
        assert_eq!(CommitRecord::decode(&[0; COMMIT_LEN]), None);
    }

    #[test]
    fn the_higher_valid_generation_is_current_and_a_torn_one_leaves_the_other() {
        let (a, b) = (rec(5).encode(), rec(6).encode());
        assert_eq!(CommitRecord::current(&a, &b).unwrap(), rec(6));
        let (a7, b6) = (rec(7).encode(), rec(6).encode());
        assert_eq!(CommitRecord::current(&a7, &b6).unwrap(), rec(7));
        let mut torn = a7;
        torn[20] ^= 0xff;
        assert_eq!(CommitRecord::current(&torn, &b6).unwrap(), rec(6));
        assert_eq!(CommitRecord::current(&a, &[0; COMMIT_LEN]).unwrap(), rec(5));
        assert!(CommitRecord::current(&[0; COMMIT_LEN], &[0; COMMIT_LEN]).is_err());
        // A record in the other parity's slot is not taken.
        assert!(CommitRecord::current(&b, &[0; COMMIT_LEN]).is_err());
        assert_eq!(CommitRecord::slot_of(1), COMMIT_A);
        assert_eq!(CommitRecord::slot_of(2), COMMIT_B);
    }
}
