//! Format version 4 (proposed, `docs/design/format-4.md`; nothing writes it yet): the patch
//! footer, which names a generation's sealed 4 KiB units and the footer before it.
//!
//! ```text
//! 0    8     magic "QLTXPAT4"
//! 8    8     generation g (≥ 2)
//! 16   8     prev_offset: the footer of generation g − 1
//! 24   8     prev_size
//! 32   32    prev_mac: that footer's MAC
//! 64   8     base_generation: 1 … g − 1, with g − base_generation ≤ 64
//! 72   4     m = unit count, 1 … 16384 (and at most 2^18 in the whole chain)
//! 76   4     mode: the file's permission bits (≤ 0o7777) as of this generation
//! 80   32    patch_salt
//! 112  12    unit nonce base: bytes 0..7 random, 7..12 zero
//! 124  4     mtime_nsec (below 10⁹)
//! 128  8     mtime_sec (i64): the file's modification time as of this generation
//! 136  8     reserved (zero)
//! 144  56·m  unit entries, plain_offset strictly ascending
//! …    32    MAC (HMAC-SHA256 under the v2 footer MAC key; checked by the caller)
//! ```
//!
//! Unit entry (56 bytes): u64 plain_offset (a multiple of 4096), u64 offset of the sealed unit,
//! u32 len (1 … 4096), u32 reserved (zero), unit_hash = BLAKE3(sealed unit).
//!
//! This module lays the bytes out and checks everything that needs no key: lengths, ranges,
//! order, overlaps. A patch's units lie after its predecessor's footer and trailer and before
//! its own footer (commits only append). The unit's nonce and AAD are laid out here too; the key is
//! `crypto::derive_unit_key`.

use super::{array, le_u32, le_u64, ContainerId, NONCE_BASE_USED, NONCE_LEN, TAG_LEN, TRAILER_LEN};
use crate::{Error, Result};

/// Magic of a patch footer.
pub const PATCH_MAGIC: &[u8; 8] = b"QLTXPAT4";
/// Bytes of a patch footer before its entries.
pub const PATCH_HEAD_LEN: usize = 144;
/// Bytes of one unit entry.
pub const UNIT_ENTRY_LEN: usize = 56;
/// Plaintext bytes a unit covers at most, and the alignment of its plain_offset.
pub const UNIT: u64 = 4096;
/// Units one patch may hold.
pub const MAX_UNITS: usize = 16384;
/// Patches a chain may hold, from its base (exclusive) to its newest (inclusive). Deep enough
/// that a file kept open under small `fsync`ed writes folds its chain (rewriting the blocks the
/// units touch) once per thousand commits, not once per few dozen.
pub const MAX_DEPTH: u64 = 1024;
/// Units a whole chain may hold (every patch's, superseded or not): bounds a reader's memory
/// for the chain (about 100 bytes a unit) and the walk at open.
pub const MAX_CHAIN_UNITS: u64 = 1 << 18;
/// Bytes of the MAC that ends a patch footer.
pub const PATCH_MAC_LEN: usize = 32;

/// One sealed unit: which plaintext it overrides and where its ciphertext lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitEntry {
    /// First plaintext byte the unit overrides: a multiple of [`UNIT`].
    pub plain_offset: u64,
    /// Container offset of the sealed unit (ciphertext, then its tag).
    pub offset: u64,
    /// Plaintext bytes, 1 … [`UNIT`].
    pub len: u32,
    /// BLAKE3 of the sealed unit.
    pub unit_hash: [u8; 32],
}

impl UnitEntry {
    /// Bytes the sealed unit takes in the container.
    pub fn sealed_len(&self) -> u64 {
        u64::from(self.len) + TAG_LEN as u64
    }
}

/// A decoded patch footer, without its MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchFooter {
    /// The generation this patch commits.
    pub generation: u64,
    /// Container offset of generation `generation − 1`'s footer.
    pub prev_offset: u64,
    /// Its length in bytes.
    pub prev_size: u64,
    /// Its MAC: ties this patch to exactly that predecessor.
    pub prev_mac: [u8; 32],
    /// Generation of the base footer the chain starts at.
    pub base_generation: u64,
    /// Salt of this patch's unit key.
    pub patch_salt: [u8; 32],
    /// Nonce base of this patch's units; only bytes 0..7 are used.
    pub nonce_base: [u8; NONCE_LEN],
    /// The file's permission bits as of this generation (they override the base's file
    /// record, whose name is kept).
    pub mode: u32,
    /// The file's modification time as of this generation: seconds since the epoch.
    pub mtime_sec: i64,
    /// Its nanoseconds, below 10⁹.
    pub mtime_nsec: u32,
    /// The units, by plain_offset ascending.
    pub units: Vec<UnitEntry>,
}

impl PatchFooter {
    /// Length of an encoded patch footer of `units` units, MAC included.
    pub fn encoded_len(units: usize) -> u64 {
        (PATCH_HEAD_LEN + UNIT_ENTRY_LEN * units + PATCH_MAC_LEN) as u64
    }

    /// Patches in the chain up to and including this one.
    pub fn depth(&self) -> u64 {
        self.generation - self.base_generation
    }

    /// The bytes the MAC covers (everything before it).
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::encoded_len(self.units.len()) as usize);
        b.extend_from_slice(PATCH_MAGIC);
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.prev_offset.to_le_bytes());
        b.extend_from_slice(&self.prev_size.to_le_bytes());
        b.extend_from_slice(&self.prev_mac);
        b.extend_from_slice(&self.base_generation.to_le_bytes());
        b.extend_from_slice(&(self.units.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.mode.to_le_bytes());
        b.extend_from_slice(&self.patch_salt);
        b.extend_from_slice(&self.nonce_base);
        b.extend_from_slice(&self.mtime_nsec.to_le_bytes());
        b.extend_from_slice(&self.mtime_sec.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        for u in &self.units {
            b.extend_from_slice(&u.plain_offset.to_le_bytes());
            b.extend_from_slice(&u.offset.to_le_bytes());
            b.extend_from_slice(&u.len.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&u.unit_hash);
        }
        b
    }

    /// The patch footer in `b` (MAC included, not checked here), found at `footer_offset` of a
    /// container whose plaintext is `size` bytes long, as generation `generation`. Every check
    /// that needs no key: magic, reserved bytes, length, generation, chain depth, unit count,
    /// the nonce base, each unit's range (within the plaintext and between the header and this
    /// footer), their order and that no two overlap, in the plaintext or in the file.
    pub fn decode(b: &[u8], footer_offset: u64, size: u64, generation: u64) -> Result<Self> {
        let bad = |what: String| Error::Corrupt {
            what: format!("patch footer of generation {generation}: {what}"),
            block: None,
            offset: Some(footer_offset),
        };
        if b.len() < PATCH_HEAD_LEN + PATCH_MAC_LEN {
            return Err(bad(format!("{} bytes, shorter than any patch footer", b.len())));
        }
        if &b[0..8] != PATCH_MAGIC {
            return Err(bad("bad magic (expected QLTXPAT4)".into()));
        }
        if b[136..144] != [0; 8] {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let (mode, mtime_nsec) = (le_u32(b, 76), le_u32(b, 124));
        if mode > 0o7777 || mtime_nsec >= 1_000_000_000 {
            return Err(bad(format!(
                "mode {mode:#o} or mtime nanoseconds {mtime_nsec} out of range"
            )));
        }
        let m = le_u32(b, 72) as usize;
        if !(1..=MAX_UNITS).contains(&m) {
            return Err(bad(format!("{m} units (1 … {MAX_UNITS} allowed)")));
        }
        if b.len() as u64 != Self::encoded_len(m) {
            return Err(bad(format!(
                "{} bytes, but {m} units make {}",
                b.len(),
                Self::encoded_len(m)
            )));
        }
        let footer = PatchFooter {
            generation: le_u64(b, 8),
            prev_offset: le_u64(b, 16),
            prev_size: le_u64(b, 24),
            prev_mac: array(b, 32),
            base_generation: le_u64(b, 64),
            patch_salt: array(b, 80),
            nonce_base: array(b, 112),
            mode,
            mtime_sec: le_u64(b, 128) as i64,
            mtime_nsec,
            units: (0..m)
                .map(|k| {
                    let e = &b[PATCH_HEAD_LEN + k * UNIT_ENTRY_LEN..][..UNIT_ENTRY_LEN];
                    (
                        UnitEntry {
                            plain_offset: le_u64(e, 0),
                            offset: le_u64(e, 8),
                            len: le_u32(e, 16),
                            unit_hash: array(e, 24),
                        },
                        e[20..24] == [0; 4],
                    )
                })
                .map(|(u, zero)| zero.then_some(u))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("a unit entry's reserved bytes are not zero".into()))?,
        };
        if footer.generation != generation {
            return Err(bad(format!("it says generation {}", footer.generation)));
        }
        if footer.base_generation == 0 || footer.base_generation >= generation || footer.depth() > MAX_DEPTH {
            return Err(bad(format!(
                "base generation {} (1 … {} and at most {MAX_DEPTH} patches back allowed)",
                footer.base_generation,
                generation.saturating_sub(1)
            )));
        }
        if footer.nonce_base[NONCE_BASE_USED..].iter().any(|&x| x != 0) {
            return Err(bad("unit nonce base bytes 7..12 are not zero".into()));
        }
        // Units are appended after the previous generation's trailer, before this footer.
        let units_from = footer
            .prev_offset
            .checked_add(footer.prev_size)
            .and_then(|end| end.checked_add(TRAILER_LEN as u64))
            .filter(|&from| footer.prev_offset >= super::HEADER_LEN as u64 && from <= footer_offset);
        let Some(units_from) = units_from else {
            return Err(bad(format!(
                "previous footer at {} ({} bytes) and its trailer are not between the header and this footer",
                footer.prev_offset, footer.prev_size
            )));
        };
        footer.check_units(units_from, footer_offset, size).map_err(bad)?;
        Ok(footer)
    }

    fn check_units(&self, units_from: u64, footer_offset: u64, size: u64) -> std::result::Result<(), String> {
        let mut next_plain = 0;
        for (k, u) in self.units.iter().enumerate() {
            let what = |s: String| format!("unit {k} (plaintext {}): {s}", u.plain_offset);
            let plain_end = u.plain_offset.checked_add(u64::from(u.len));
            if !u.plain_offset.is_multiple_of(UNIT) || u.len == 0 || u64::from(u.len) > UNIT {
                return Err(what(format!("{} bytes, or not on a 4 KiB boundary", u.len)));
            }
            if u.plain_offset < next_plain {
                return Err(what("not after the unit before it".into()));
            }
            match plain_end {
                Some(end) if end == size || (end < size && u64::from(u.len) == UNIT) => {}
                _ => {
                    return Err(what(format!(
                        "{} bytes do not fit a plaintext of {size} bytes (only the last unit is short)",
                        u.len
                    )))
                }
            }
            next_plain = u.plain_offset.saturating_add(UNIT);
            let sealed_end = u.offset.checked_add(u.sealed_len());
            if u.offset < units_from || sealed_end.is_none_or(|end| end > footer_offset) {
                return Err(what(format!(
                    "sealed at {} ({} bytes), not between the previous trailer and this footer",
                    u.offset,
                    u.sealed_len()
                )));
            }
        }
        let mut by_offset: Vec<&UnitEntry> = self.units.iter().collect();
        by_offset.sort_unstable_by_key(|u| u.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].sealed_len() > pair[1].offset {
                return Err(format!(
                    "the sealed units at {} and {} overlap",
                    pair[0].offset, pair[1].offset
                ));
            }
        }
        Ok(())
    }
}

/// Nonce of unit `k` of a patch: `nonce_base[0..7] ‖ u32be(k) ‖ 0`.
pub fn unit_nonce(nonce_base: &[u8; NONCE_LEN], k: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..NONCE_BASE_USED].copy_from_slice(&nonce_base[..NONCE_BASE_USED]);
    n[NONCE_BASE_USED..NONCE_BASE_USED + 4].copy_from_slice(&k.to_be_bytes());
    n
}

/// AAD of unit `k` of generation `generation`'s patch:
/// `container_id ‖ u64(generation) ‖ u32(k) ‖ u64(plain_offset) ‖ u32(len)` (40 bytes).
pub fn unit_aad(container_id: &ContainerId, generation: u64, k: u32, unit: &UnitEntry) -> [u8; 40] {
    let mut a = [0u8; 40];
    a[..16].copy_from_slice(container_id);
    a[16..24].copy_from_slice(&generation.to_le_bytes());
    a[24..28].copy_from_slice(&k.to_le_bytes());
    a[28..36].copy_from_slice(&unit.plain_offset.to_le_bytes());
    a[36..40].copy_from_slice(&unit.len.to_le_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 1 << 20;

    fn unit(k: u64, offset: u64, len: u32) -> UnitEntry {
        UnitEntry {
            plain_offset: k * UNIT,
            offset,
            len,
            unit_hash: [k as u8; 32],
        }
    }

    fn patch(units: Vec<UnitEntry>) -> PatchFooter {
        PatchFooter {
            generation: 5,
            prev_offset: 4096,
            prev_size: 500,
            prev_mac: [7; 32],
            base_generation: 3,
            patch_salt: [9; 32],
            nonce_base: [1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0],
            mode: 0o640,
            mtime_sec: -2,
            mtime_nsec: 999_999_999,
            units,
        }
    }

    fn sample() -> PatchFooter {
        patch(vec![
            unit(2, 10_000, 4096),
            unit(9, 10_000 + 4112, 4096),
            unit(255, 10_000 + 2 * 4112, 4096),
        ])
    }

    const AT: u64 = 100_000;

    fn signed(p: &PatchFooter) -> Vec<u8> {
        let mut b = p.encode_unsigned();
        b.extend_from_slice(&[0xee; PATCH_MAC_LEN]);
        b
    }

    #[test]
    fn the_layout_is_the_design_s() {
        let p = sample();
        let b = signed(&p);
        assert_eq!(b.len() as u64, PatchFooter::encoded_len(3));
        assert_eq!(b.len(), 144 + 3 * 56 + 32);
        assert_eq!(&b[0..8], b"QLTXPAT4");
        assert_eq!(le_u64(&b, 8), 5);
        assert_eq!((le_u64(&b, 16), le_u64(&b, 24)), (4096, 500));
        assert_eq!(&b[32..64], &[7; 32]);
        assert_eq!(le_u64(&b, 64), 3);
        assert_eq!(le_u32(&b, 72), 3);
        assert_eq!(&b[80..112], &[9; 32]);
        assert_eq!(&b[112..124], &p.nonce_base);
        assert_eq!((le_u32(&b, 76), le_u32(&b, 124)), (0o640, 999_999_999));
        assert_eq!(le_u64(&b, 128) as i64, -2);
        assert_eq!(&b[136..144], &[0; 8]);
        let e = &b[144 + 56..144 + 112];
        assert_eq!(
            (le_u64(e, 0), le_u64(e, 8), le_u32(e, 16)),
            (9 * 4096, 14_112, 4096)
        );
        assert_eq!(&e[24..56], &[9; 32]);
        assert_eq!(PatchFooter::decode(&b, AT, SIZE, 5).unwrap(), p);
        assert_eq!(p.depth(), 2);
    }

    #[test]
    fn every_reserved_magic_or_count_byte_changed_is_refused() {
        let b = signed(&sample());
        // The magic, the count, the nonce base's zero bytes, the mode's and nanoseconds' high
        // bits, the reserved bytes, an entry's reserved bytes.
        let fields = (0..8)
            .chain(72..76)
            .chain(77..80)
            .chain(119..124)
            .chain(136..144)
            .chain(144 + 20..144 + 24);
        for i in fields {
            let mut c = b.clone();
            c[i] ^= 0x10;
            let e = PatchFooter::decode(&c, AT, SIZE, 5).expect_err(&format!("byte {i}"));
            assert!(e.to_string().contains("patch footer of generation 5"), "{e}");
        }
    }

    #[test]
    fn a_mode_or_mtime_out_of_range_is_refused() {
        for (mode, nsec) in [(0o10000, 0), (0, 1_000_000_000), (u32::MAX, u32::MAX)] {
            let p = PatchFooter {
                mode,
                mtime_nsec: nsec,
                ..sample()
            };
            let e = PatchFooter::decode(&signed(&p), AT, SIZE, 5).expect_err(&format!("{mode} {nsec}"));
            assert!(e.to_string().contains("out of range"), "{e}");
        }
    }

    #[test]
    fn a_short_or_long_footer_is_refused() {
        let b = signed(&sample());
        for len in [0, 10, 175, b.len() - 1] {
            assert!(PatchFooter::decode(&b[..len], AT, SIZE, 5).is_err(), "{len}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(PatchFooter::decode(&long, AT, SIZE, 5).is_err());
    }

    #[test]
    fn the_generation_and_chain_are_checked() {
        let b = signed(&sample());
        assert!(PatchFooter::decode(&b, AT, SIZE, 6).is_err());
        for base in [0, 5, 6] {
            let mut p = sample();
            p.base_generation = base;
            assert!(PatchFooter::decode(&signed(&p), AT, SIZE, 5).is_err(), "{base}");
        }
        let mut deep = sample();
        (deep.generation, deep.base_generation) = (2000, 2000 - MAX_DEPTH);
        assert!(PatchFooter::decode(&signed(&deep), AT, SIZE, 2000).is_ok());
        deep.base_generation -= 1;
        assert!(PatchFooter::decode(&signed(&deep), AT, SIZE, 2000).is_err());
        for (prev_offset, prev_size) in [(0, 10), (4095, 10), (AT - 10, 11), (u64::MAX, 2)] {
            let mut p = sample();
            (p.prev_offset, p.prev_size) = (prev_offset, prev_size);
            assert!(
                PatchFooter::decode(&signed(&p), AT, SIZE, 5).is_err(),
                "{prev_offset}"
            );
        }
    }

    #[test]
    fn units_out_of_order_overlapping_or_out_of_range_are_refused() {
        let cases = [
            vec![unit(9, 10_000, 4096), unit(2, 20_000, 4096)],
            vec![unit(2, 10_000, 4096), unit(2, 20_000, 4096)],
            vec![unit(2, 10_000, 4096), unit(3, 10_000 + 4111, 4096)],
            vec![unit(2, 10_000, 4095)],
            vec![unit(2, 10_000, 0)],
            vec![unit(2, 10_000, 4097)],
            vec![UnitEntry {
                plain_offset: 100,
                ..unit(0, 10_000, 4096)
            }],
            vec![unit(SIZE / UNIT, 10_000, 4096)],
            vec![unit(SIZE / UNIT - 1, 10_000, 4096), unit(SIZE / UNIT, 20_000, 1)],
            vec![unit(2, 4096 + 500 + 31, 4096)],
            vec![unit(2, AT - 4111, 4096)],
            vec![unit(2, u64::MAX - 10, 4096)],
        ];
        for (i, units) in cases.into_iter().enumerate() {
            let e = PatchFooter::decode(&signed(&patch(units)), AT, SIZE, 5).expect_err(&i.to_string());
            assert!(e.to_string().contains("unit"), "{i}: {e}");
        }
        let fits = vec![unit(0, 4096 + 500 + 32, 4096), unit(2, AT - 4112, 4096)];
        assert!(PatchFooter::decode(&signed(&patch(fits)), AT, SIZE, 5).is_ok());
    }

    #[test]
    fn units_at_the_top_of_the_u64_range_are_checked_without_overflow() {
        let top = u64::MAX / UNIT;
        let (last, past) = (unit(top, 10_000, 4095), unit(top - 1, 20_000, 4096));
        assert!(PatchFooter::decode(&signed(&patch(vec![past, last])), AT, u64::MAX, 5).is_ok());
        let twice = vec![
            last,
            UnitEntry {
                offset: 20_000,
                ..last
            },
        ];
        assert!(PatchFooter::decode(&signed(&patch(twice)), AT, u64::MAX, 5).is_err());
    }

    #[test]
    fn only_the_unit_ending_at_the_size_may_be_short() {
        let size = 3 * UNIT + 100;
        let last = vec![unit(1, 10_000, 4096), unit(3, 20_000, 100)];
        assert!(PatchFooter::decode(&signed(&patch(last)), AT, size, 5).is_ok());
        let short_inside = vec![unit(1, 10_000, 100)];
        assert!(PatchFooter::decode(&signed(&patch(short_inside)), AT, size, 5).is_err());
        let past = vec![unit(3, 20_000, 101)];
        assert!(PatchFooter::decode(&signed(&patch(past)), AT, size, 5).is_err());
    }

    #[test]
    fn unit_nonces_and_aads_differ_by_index_offset_and_generation() {
        let base = [1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0];
        assert_eq!(
            unit_nonce(&base, 0x0102_0304),
            [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 0]
        );
        assert_ne!(unit_nonce(&base, 0), unit_nonce(&base, 1));
        let id = [3; 16];
        let u = unit(2, 10_000, 4096);
        let a = unit_aad(&id, 5, 1, &u);
        assert_eq!(&a[..16], &id);
        assert_eq!((le_u64(&a, 16), le_u32(&a, 24)), (5, 1));
        assert_eq!((le_u64(&a, 28), le_u32(&a, 36)), (8192, 4096));
        assert_ne!(a, unit_aad(&id, 6, 1, &u));
        assert_ne!(a, unit_aad(&id, 5, 2, &u));
        assert_ne!(a, unit_aad(&id, 5, 1, &unit(3, 10_000, 4096)));
        assert_ne!(a, unit_aad(&[4; 16], 5, 1, &u));
    }
}
