//! The 4096-byte header region: fixed fields, then the two key-slot areas.

use super::{
    array, le_u16, le_u32, le_u64, CommitRecord, ContainerId, FormatVersion, SlotArea, COMMIT_A, COMMIT_B,
    COMMIT_LEN, SIGNATURE_AT, SIGNATURE_LEN, SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN,
};
use crate::{Error, Result};

/// Length of the header region, which the first block follows: 4096 bytes.
pub const HEADER_LEN: usize = 4096;
const MAGIC: &[u8; 8] = b"QELTRIX\0";

/// Flag: the writer asked readers not to recompute plaintext hashes (a hint; AEAD is always checked).
pub const FLAG_NO_VERIFY: u16 = 0x01;
/// Flag: written as a stream, before the totals were known; the header totals may be zero.
pub const FLAG_STREAMING: u16 = 0x02;
const KNOWN_FLAGS: u16 = FLAG_NO_VERIFY | FLAG_STREAMING;

/// Which AEAD seals the blocks and metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherId {
    /// AES-256-GCM (cipher byte `0`).
    Aes256Gcm = 0,
    /// ChaCha20-Poly1305 (cipher byte `1`).
    ChaCha20Poly1305 = 1,
}

impl CipherId {
    /// The cipher with header cipher byte `b`, or `None` for an unknown byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(CipherId::Aes256Gcm),
            1 => Some(CipherId::ChaCha20Poly1305),
            _ => None,
        }
    }
    /// The cipher's display name (`AES-256-GCM`, `ChaCha20-Poly1305`).
    pub fn name(self) -> &'static str {
        match self {
            CipherId::Aes256Gcm => "AES-256-GCM",
            CipherId::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

/// The header's fields. The slot areas are kept as raw bytes here and parsed by [`SlotArea`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version (bytes 8..10): how blocks and the footer are laid out.
    pub version: FormatVersion,
    /// Header flags ([`FLAG_NO_VERIFY`], [`FLAG_STREAMING`]); other bits are rejected on decode.
    pub flags: u16,
    /// The AEAD sealing the blocks and metadata (key slots always use AES-256-GCM).
    pub cipher: CipherId,
    /// Plaintext bytes per block: a multiple of 4096 from 4096 to 64 MiB.
    pub block_size: u32,
    /// Zero in a streamed header that was never patched; the footer is authoritative.
    pub total_blocks: u64,
    /// Plaintext length in bytes; zero in a streamed header that was never patched.
    pub original_size: u64,
    /// Container offset of the footer; zero in a streamed header that was never patched.
    pub footer_offset: u64,
    /// Length of the footer in bytes; zero in a streamed header that was never patched.
    pub footer_size: u64,
    /// The container's random identifier (header bytes 56..72).
    pub container_id: ContainerId,
    /// Raw bytes of key-slot area A (header offset 1024), decoded by [`SlotArea`].
    pub slot_area_a: [u8; SLOT_AREA_LEN],
    /// Raw bytes of key-slot area B (header offset 2560), decoded by [`SlotArea`].
    pub slot_area_b: [u8; SLOT_AREA_LEN],
    /// Version 3: the raw commit records A (offset 72) and B (offset 136), decoded by
    /// [`CommitRecord`]. Zero (reserved) in versions 1 and 2.
    pub commits: [[u8; COMMIT_LEN]; 2],
    /// Versions 2 and 3: the raw signature record (offset 896), decoded by
    /// [`SignatureRecord`](super::SignatureRecord); all zero when unsigned. Zero (reserved) in
    /// version 1. Not under the footer MAC: signing adds it without the data key.
    pub signature: [u8; SIGNATURE_LEN],
}

/// The error for `b`, shorter than a header: a cut container when it starts with the magic (or
/// the part of it there is), otherwise not a container at all. `unit` names what was counted.
pub fn short_header(b: &[u8], unit: &str) -> Error {
    let n = b.len().min(MAGIC.len());
    if n > 0 && b[..n] == MAGIC[..n] {
        Error::Incomplete(format!(
            "cut inside the {HEADER_LEN}-byte header, after {} {unit}",
            b.len()
        ))
    } else {
        Error::NotAContainer(format!(
            "{} {unit} is shorter than the {HEADER_LEN}-byte header",
            b.len()
        ))
    }
}

impl Header {
    /// Encodes the header region: [`HEADER_LEN`] bytes, reserved bytes zero.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&self.version.number().to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12] = self.cipher as u8;
        b[16..20].copy_from_slice(&self.block_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.total_blocks.to_le_bytes());
        b[32..40].copy_from_slice(&self.original_size.to_le_bytes());
        b[40..48].copy_from_slice(&self.footer_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.footer_size.to_le_bytes());
        b[56..72].copy_from_slice(&self.container_id);
        b[COMMIT_A..COMMIT_A + COMMIT_LEN].copy_from_slice(&self.commits[0]);
        b[COMMIT_B..COMMIT_B + COMMIT_LEN].copy_from_slice(&self.commits[1]);
        b[SIGNATURE_AT..SIGNATURE_AT + SIGNATURE_LEN].copy_from_slice(&self.signature);
        b[SLOT_AREA_A..SLOT_AREA_A + SLOT_AREA_LEN].copy_from_slice(&self.slot_area_a);
        b[SLOT_AREA_B..SLOT_AREA_B + SLOT_AREA_LEN].copy_from_slice(&self.slot_area_b);
        b
    }

    /// Decodes the first [`HEADER_LEN`] bytes of `b`.
    ///
    /// # Errors
    /// [`Error::NotAContainer`] for bad magic (also an empty or short input that does not start
    /// like a container) or an unknown version; [`Error::Incomplete`] for a container cut inside
    /// its header; [`Error::Corrupt`] for an unknown cipher or flags, non-zero reserved bytes or
    /// an invalid block size.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_LEN {
            return Err(short_header(b, "bytes"));
        }
        if &b[0..8] != MAGIC {
            return Err(Error::NotAContainer("bad magic at offset 0".into()));
        }
        let number = le_u16(b, 8);
        let version = FormatVersion::from_u16(number)
            .ok_or_else(|| Error::NotAContainer(format!("{} {number}", crate::error::UNSUPPORTED_VERSION)))?;
        let flags = le_u16(b, 10);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::corrupt(format!("unknown header flags {flags:#06x}")));
        }
        if version.has_commits() && flags & FLAG_STREAMING != 0 {
            return Err(Error::corrupt(format!(
                "version-{number} header with the streaming flag"
            )));
        }
        // Versions 3 and 4 keep their commit records in bytes 72..200, and have no totals
        // (24..56). Versions 2, 3 and 4 keep a signature record in 896..1024; it is decoded (and may be
        // damaged) only when a signature is checked.
        let v3 = version.has_commits();
        let signable = version != FormatVersion::V1;
        let reserved = [
            13..16,
            20..24,
            if v3 { 24..56 } else { 0..0 },
            if v3 { COMMIT_B + COMMIT_LEN } else { 72 }..if signable { SIGNATURE_AT } else { SLOT_AREA_A },
            SLOT_AREA_A + SLOT_AREA_LEN..SLOT_AREA_B,
            SLOT_AREA_B + SLOT_AREA_LEN..HEADER_LEN,
        ];
        if let Some(r) = reserved
            .into_iter()
            .find(|r| b[r.clone()].iter().any(|&x| x != 0))
        {
            return Err(Error::corrupt(format!(
                "reserved header bytes {}..{} are not zero",
                r.start, r.end
            )));
        }
        // Past the magic and the version, an unknown value is damage, not another kind of file.
        let cipher = CipherId::from_byte(b[12])
            .ok_or_else(|| Error::corrupt(format!("unknown cipher id {}", b[12])))?;
        let block_size = le_u32(b, 16);
        super::check_block_size(block_size).map_err(|e| Error::corrupt(format!("header: {e}")))?;
        Ok(Header {
            version,
            flags,
            cipher,
            block_size,
            total_blocks: le_u64(b, 24),
            original_size: le_u64(b, 32),
            footer_offset: le_u64(b, 40),
            footer_size: le_u64(b, 48),
            container_id: array(b, 56),
            slot_area_a: array(b, SLOT_AREA_A),
            slot_area_b: array(b, SLOT_AREA_B),
            commits: [array(b, COMMIT_A), array(b, COMMIT_B)],
            signature: array(b, SIGNATURE_AT),
        })
    }

    /// The header bytes that never change after the first write and that the footer MAC covers:
    /// magic, version, flags, cipher, block size (bytes 0..24) and the container id (56..72).
    pub fn bound_fields(&self) -> Vec<u8> {
        let b = self.encode();
        let mut out = Vec::with_capacity(40);
        out.extend_from_slice(&b[0..24]);
        out.extend_from_slice(&b[56..72]);
        out
    }

    /// The currently valid key-slot area: the valid one with the higher sequence number.
    pub fn active_slots(&self) -> Result<SlotArea> {
        let a = SlotArea::decode(&self.slot_area_a);
        let b = SlotArea::decode(&self.slot_area_b);
        match (a, b) {
            (Some(a), Some(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
            (Some(a), None) => Ok(a),
            (None, Some(b)) => Ok(b),
            (None, None) => Err(Error::corrupt("both key-slot areas fail their checksum")),
        }
    }

    /// True when the inactive slot area is valid but differs from the active one: it holds slots
    /// that are no longer in force (a rekey was interrupted before it cleared them).
    pub fn has_stale_slot_area(&self) -> bool {
        let a = SlotArea::decode(&self.slot_area_a);
        let b = SlotArea::decode(&self.slot_area_b);
        matches!((a, b), (Some(a), Some(b)) if a != b)
    }

    /// True when the header totals were written (patched) rather than left zero by a stream.
    pub fn is_patched(&self) -> bool {
        self.footer_offset != 0
    }

    /// A version-3 or -4 header's current commit record: the valid one with the higher generation.
    pub fn current_commit(&self) -> Result<CommitRecord> {
        CommitRecord::current(&self.commits[0], &self.commits[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::format::{KeySlot, SlotKind};

    fn slot_area(sequence: u64) -> [u8; SLOT_AREA_LEN] {
        SlotArea {
            sequence,
            slots: vec![KeySlot {
                kind: SlotKind::KeyFile,
                param: 0,
                salt: [0x51; 32],
                nonce: [0x52; 12],
                wrapped: [0x53; 48],
            }],
        }
        .encode()
    }

    fn patched() -> Header {
        Header {
            version: FormatVersion::V1,
            flags: FLAG_NO_VERIFY,
            cipher: CipherId::ChaCha20Poly1305,
            block_size: 8192,
            total_blocks: 3,
            original_size: 20_000,
            footer_offset: 4096 + 3 * 8348,
            footer_size: 56 + 3 * 32,
            container_id: *b"0123456789abcdef",
            slot_area_a: slot_area(1),
            slot_area_b: [0; SLOT_AREA_LEN],
            commits: [[0; crate::core::format::COMMIT_LEN]; 2],
            signature: [0; crate::core::format::SIGNATURE_LEN],
        }
    }

    fn streaming() -> Header {
        Header {
            version: FormatVersion::V1,
            flags: FLAG_STREAMING,
            cipher: CipherId::Aes256Gcm,
            block_size: 4096,
            total_blocks: 0,
            original_size: 0,
            footer_offset: 0,
            footer_size: 0,
            ..patched()
        }
    }

    fn corrupt_by(edit: impl FnOnce(&mut Vec<u8>)) -> Error {
        let mut b = patched().encode();
        edit(&mut b);
        Header::decode(&b).expect_err("the edited header must be refused")
    }

    #[test]
    fn a_patched_header_round_trips_through_encode_and_decode() {
        let h = patched();
        let b = h.encode();
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert!(h.is_patched());
    }

    #[test]
    fn a_streaming_header_with_zero_totals_round_trips_and_is_not_patched() {
        let h = streaming();
        let back = Header::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert!(!back.is_patched());
        assert_eq!(back.flags & FLAG_STREAMING, FLAG_STREAMING);
        assert_eq!(
            (
                back.total_blocks,
                back.original_size,
                back.footer_offset,
                back.footer_size
            ),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn patching_changes_only_the_four_totals() {
        let mut s = streaming();
        s.flags = 0;
        let mut p = s.clone();
        p.total_blocks = 7;
        p.original_size = 1234;
        p.footer_offset = 99_999;
        p.footer_size = 280;
        let (a, b) = (s.encode(), p.encode());
        let differing: Vec<usize> = (0..HEADER_LEN).filter(|&i| a[i] != b[i]).collect();
        assert!(!differing.is_empty());
        assert!(differing.iter().all(|i| (24..56).contains(i)), "{differing:?}");
    }

    #[test]
    fn fields_sit_at_the_offsets_format_md_gives() {
        let h = patched();
        let b = h.encode();
        assert_eq!(&b[0..8], b"QELTRIX\0");
        assert_eq!(le_u16(&b, 8), 1);
        assert_eq!(le_u16(&b, 10), FLAG_NO_VERIFY);
        assert_eq!(b[12], 1);
        assert_eq!(le_u32(&b, 16), 8192);
        assert_eq!(le_u64(&b, 24), 3);
        assert_eq!(le_u64(&b, 32), 20_000);
        assert_eq!(le_u64(&b, 40), h.footer_offset);
        assert_eq!(le_u64(&b, 48), h.footer_size);
        assert_eq!(&b[56..72], b"0123456789abcdef");
        assert_eq!(&b[1024..1024 + 1072], &h.slot_area_a[..]);
        assert_eq!(&b[2560..2560 + 1072], &h.slot_area_b[..]);
        for r in [13..16, 20..24, 72..1024, 2096..2560, 3632..4096] {
            assert!(b[r.clone()].iter().all(|&x| x == 0), "reserved {r:?}");
        }
    }

    #[test]
    fn a_short_header_is_a_cut_container_if_it_starts_like_one() {
        let b = patched().encode();
        for len in [1, 3, 8, 10, 4095] {
            assert!(
                matches!(Header::decode(&b[..len]), Err(Error::Incomplete(_))),
                "{len}"
            );
        }
        for other in [&b""[..], b"hello", b"QELTRIX!", b"#!/bin/sh\necho hi\n"] {
            assert!(
                matches!(Header::decode(other), Err(Error::NotAContainer(_))),
                "{other:?}"
            );
        }
    }

    #[test]
    fn decode_reads_only_the_first_4096_bytes_of_a_longer_buffer() {
        let mut b = patched().encode();
        b.extend_from_slice(&[0xff; 100]);
        assert_eq!(Header::decode(&b).unwrap(), patched());
    }

    #[test]
    fn a_bad_magic_is_not_a_container() {
        for at in 0..8 {
            let e = corrupt_by(|b| b[at] ^= 0x20);
            assert!(matches!(e, Error::NotAContainer(_)), "byte {at}: {e}");
        }
    }

    #[test]
    fn an_unknown_version_is_not_a_container() {
        for v in [0u16, 5, 0x0100, u16::MAX] {
            let e = corrupt_by(|b| b[8..10].copy_from_slice(&v.to_le_bytes()));
            assert!(
                matches!(&e, Error::NotAContainer(m) if m == &format!("unsupported format version {v}")),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn versions_1_and_2_round_trip() {
        for version in [FormatVersion::V1, FormatVersion::V2] {
            let h = Header { version, ..patched() };
            let b = h.encode();
            assert_eq!(b[8..10], version.number().to_le_bytes());
            assert_eq!(Header::decode(&b).unwrap(), h);
        }
    }

    #[test]
    fn version_3_keeps_commit_records_at_72_and_136_and_no_totals() {
        let a = CommitRecord {
            generation: 3,
            footer_offset: 9000,
            footer_size: 300,
        };
        let b = CommitRecord {
            generation: 2,
            footer_offset: 7000,
            footer_size: 290,
        };
        let h = Header {
            version: FormatVersion::V3,
            flags: 0,
            total_blocks: 0,
            original_size: 0,
            footer_offset: 0,
            footer_size: 0,
            commits: [a.encode(), b.encode()],
            ..patched()
        };
        let bytes = h.encode();
        assert_eq!(bytes[8..10], 3u16.to_le_bytes());
        // Version 4's header is version 3's, with another number.
        let v4 = Header {
            version: FormatVersion::V4,
            ..h.clone()
        };
        let v4_bytes = v4.encode();
        assert_eq!(v4_bytes[8..10], 4u16.to_le_bytes());
        assert_eq!(v4_bytes[10..], bytes[10..]);
        assert_eq!(Header::decode(&v4_bytes).unwrap(), v4);
        assert_eq!(bytes[72..136], a.encode());
        assert_eq!(bytes[136..200], b.encode());
        let back = Header::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.current_commit().unwrap(), a);
        // The same bytes are reserved (must be zero) in versions 1 and 2.
        let mut v2 = bytes.clone();
        v2[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert!(Header::decode(&v2).is_err());
        // Version 3 has no totals and no streaming flag.
        let mut totals = bytes.clone();
        totals[40] = 1;
        assert!(Header::decode(&totals).is_err());
        let mut streaming = bytes.clone();
        streaming[10] |= FLAG_STREAMING as u8;
        assert!(Header::decode(&streaming).is_err());
        // Past the records, the reserved bytes are checked as before.
        let mut past = bytes;
        past[200] = 1;
        assert!(Header::decode(&past).is_err());
    }

    #[test]
    fn an_unknown_cipher_is_damage() {
        for c in [2u8, 3, 0x80, 0xff] {
            let e = corrupt_by(|b| b[12] = c);
            assert!(
                matches!(&e, Error::Corrupt { .. }) && e.to_string().contains("cipher"),
                "{c}: {e}"
            );
        }
    }

    #[test]
    fn both_known_ciphers_decode() {
        for (byte, cipher) in [(0u8, CipherId::Aes256Gcm), (1, CipherId::ChaCha20Poly1305)] {
            let mut b = patched().encode();
            b[12] = byte;
            assert_eq!(Header::decode(&b).unwrap().cipher, cipher);
            assert_eq!(CipherId::from_byte(byte), Some(cipher));
            assert_eq!(cipher as u8, byte);
        }
        assert_eq!(CipherId::Aes256Gcm.name(), "AES-256-GCM");
        assert_eq!(CipherId::ChaCha20Poly1305.name(), "ChaCha20-Poly1305");
        assert_eq!(CipherId::from_byte(2), None);
    }

    #[test]
    fn every_unknown_flag_bit_is_corrupt() {
        for bit in 2..16 {
            let flags = 1u16 << bit;
            let e = corrupt_by(|b| b[10..12].copy_from_slice(&flags.to_le_bytes()));
            assert!(matches!(e, Error::Corrupt { .. }), "flag {flags:#x}: {e}");
        }
    }

    #[test]
    fn the_known_flags_alone_and_together_are_accepted() {
        for flags in [0, FLAG_NO_VERIFY, FLAG_STREAMING, FLAG_NO_VERIFY | FLAG_STREAMING] {
            let h = Header { flags, ..patched() };
            assert_eq!(Header::decode(&h.encode()).unwrap().flags, flags);
        }
        assert_eq!((FLAG_NO_VERIFY, FLAG_STREAMING), (0x01, 0x02));
    }

    #[test]
    fn a_non_zero_byte_in_any_reserved_range_is_corrupt() {
        for at in [13, 15, 20, 23, 72, 500, 1023, 2096, 2559, 3632, 4095] {
            let e = corrupt_by(|b| b[at] = 1);
            assert!(
                matches!(&e, Error::Corrupt { what, .. } if what.contains("reserved")),
                "byte {at}: {e}"
            );
        }
    }

    #[test]
    fn a_block_size_outside_the_format_limits_is_corrupt() {
        for size in [0u32, 4095, 4097, 12_000, (64 << 20) + 4096, u32::MAX] {
            let e = corrupt_by(|b| b[16..20].copy_from_slice(&size.to_le_bytes()));
            assert!(matches!(e, Error::Corrupt { .. }), "{size}: {e}");
        }
        for size in [4096u32, 64 << 20] {
            let h = Header {
                version: FormatVersion::V1,
                block_size: size,
                ..patched()
            };
            assert_eq!(Header::decode(&h.encode()).unwrap().block_size, size);
        }
    }

    #[test]
    fn bound_fields_are_header_bytes_0_to_24_then_56_to_72() {
        let h = patched();
        let b = h.encode();
        let bound = h.bound_fields();
        assert_eq!(bound.len(), 40);
        assert_eq!(&bound[..24], &b[0..24]);
        assert_eq!(&bound[24..], &b[56..72]);
    }

    #[test]
    fn bound_fields_do_not_change_when_the_header_is_patched_or_rekeyed() {
        let s = streaming();
        let p = Header {
            version: FormatVersion::V1,
            total_blocks: 9,
            original_size: 1,
            footer_offset: 5000,
            footer_size: 56,
            slot_area_a: slot_area(2),
            slot_area_b: slot_area(3),
            ..s.clone()
        };
        assert_eq!(s.bound_fields(), p.bound_fields());
    }

    #[test]
    fn bound_fields_change_with_every_field_written_once() {
        let base = patched();
        let edits = [
            Header {
                version: FormatVersion::V1,
                flags: FLAG_STREAMING,
                ..patched()
            },
            Header {
                version: FormatVersion::V1,
                cipher: CipherId::Aes256Gcm,
                ..patched()
            },
            Header {
                version: FormatVersion::V1,
                block_size: 4096,
                ..patched()
            },
            Header {
                version: FormatVersion::V1,
                container_id: [0; 16],
                ..patched()
            },
        ];
        for e in edits {
            assert_ne!(base.bound_fields(), e.bound_fields(), "{e:?}");
        }
    }
}
