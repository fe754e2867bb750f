//! Key-slot areas. Each holds up to eight fixed-size slots, each wrapping the container's data key
//! under one key-encryption key. There are two areas (A and B) so that a rekey can write the
//! inactive one, sync, and have it win by its higher sequence number: a torn write fails the
//! checksum and the other area stays in force.

use super::{array, le_u32, le_u64, NONCE_LEN, TAG_LEN};
use sha2::{Digest, Sha256};

/// Offsets of the two areas inside the header region, and their length.
pub const SLOT_AREA_A: usize = 1024;
/// Offset of key-slot area B inside the header region.
pub const SLOT_AREA_B: usize = 2560;
/// Length of a key-slot area: 16-byte head, [`MAX_SLOTS`] slots, 32-byte checksum (1072).
pub const SLOT_AREA_LEN: usize = 16 + MAX_SLOTS * SLOT_LEN + 32;
/// The most slots an area holds.
pub const MAX_SLOTS: usize = 8;
/// Length of one encoded key slot.
pub const SLOT_LEN: usize = 128;
/// The slot bytes bound into the wrap's AAD: kind, parameter, salt, nonce.
pub const SLOT_AAD_LEN: usize = 52;
const SLOTS_AT: usize = 16;
const CHECKSUM_AT: usize = SLOTS_AT + MAX_SLOTS * SLOT_LEN;

/// What unlocks a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// PBKDF2-HMAC-SHA256 of a passphrase; `param` is the iteration count.
    Passphrase = 1,
    /// HKDF-SHA256 of a 32-byte key file.
    KeyFile = 2,
    /// X25519 to a recipient's public key; `salt` holds the ephemeral public key.
    Recipient = 3,
    /// HKDF-SHA256 of a vault key (from the vault's keyring).
    Keyring = 4,
}

impl SlotKind {
    /// The slot kind with kind byte `b`, or `None` for an unknown byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(SlotKind::Passphrase),
            2 => Some(SlotKind::KeyFile),
            3 => Some(SlotKind::Recipient),
            4 => Some(SlotKind::Keyring),
            _ => None,
        }
    }
    /// The kind's name as messages and the CLI print it (`passphrase`, `key-file`, `recipient`, `keyring`).
    pub fn name(self) -> &'static str {
        match self {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "key-file",
            SlotKind::Recipient => "recipient",
            SlotKind::Keyring => "keyring",
        }
    }
}

/// One key slot: the data key sealed with AES-256-GCM under a key derived from `salt` (and `param`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySlot {
    /// What unlocks the slot.
    pub kind: SlotKind,
    /// Kind-specific parameter: the PBKDF2 iteration count for [`SlotKind::Passphrase`], zero otherwise.
    pub param: u32,
    /// KDF salt; for [`SlotKind::Recipient`], the ephemeral X25519 public key.
    pub salt: [u8; 32],
    /// Nonce of the AES-256-GCM wrap.
    pub nonce: [u8; NONCE_LEN],
    /// The 32-byte data key, encrypted, followed by its 16-byte tag.
    pub wrapped: [u8; 32 + TAG_LEN],
}

impl KeySlot {
    /// Encodes the slot as [`SLOT_LEN`] bytes, reserved bytes zero.
    pub fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0] = self.kind as u8;
        b[4..8].copy_from_slice(&self.param.to_le_bytes());
        b[8..40].copy_from_slice(&self.salt);
        b[40..52].copy_from_slice(&self.nonce);
        b[52..100].copy_from_slice(&self.wrapped);
        b
    }

    /// The bytes of this slot that the wrap authenticates as associated data.
    pub fn aad_fields(&self) -> [u8; SLOT_AAD_LEN] {
        array(&self.encode(), 0)
    }

    /// `None` for an unknown kind or non-zero reserved bytes (1..4, 100..128).
    fn decode(b: &[u8]) -> Option<Self> {
        if b[1..4].iter().chain(&b[100..SLOT_LEN]).any(|&x| x != 0) {
            return None;
        }
        Some(KeySlot {
            kind: SlotKind::from_byte(b[0])?,
            param: le_u32(b, 4),
            salt: array(b, 8),
            nonce: array(b, 40),
            wrapped: array(b, 52),
        })
    }
}

/// A decoded, checksum-valid slot area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotArea {
    /// Sequence number (1 or more); of two valid areas, the higher one is active.
    pub sequence: u64,
    /// The slots in use, 1 to [`MAX_SLOTS`] of them.
    pub slots: Vec<KeySlot>,
}

impl SlotArea {
    /// Encodes the area as [`SLOT_AREA_LEN`] bytes with its SHA-256 checksum.
    ///
    /// # Panics
    /// If `slots` is empty or holds more than [`MAX_SLOTS`].
    pub fn encode(&self) -> [u8; SLOT_AREA_LEN] {
        assert!(
            !self.slots.is_empty() && self.slots.len() <= MAX_SLOTS,
            "1 to 8 slots"
        );
        let mut b = [0u8; SLOT_AREA_LEN];
        b[0..8].copy_from_slice(&self.sequence.to_le_bytes());
        b[8] = self.slots.len() as u8;
        for (i, slot) in self.slots.iter().enumerate() {
            let at = SLOTS_AT + i * SLOT_LEN;
            b[at..at + SLOT_LEN].copy_from_slice(&slot.encode());
        }
        let sum = Sha256::digest(&b[..CHECKSUM_AT]);
        b[CHECKSUM_AT..].copy_from_slice(&sum);
        b
    }

    /// `None` when the area is empty, torn or damaged: its checksum, count or a slot kind is
    /// wrong, or a reserved byte is not zero (readers reject those anywhere in the header).
    pub fn decode(b: &[u8; SLOT_AREA_LEN]) -> Option<Self> {
        let sum = Sha256::digest(&b[..CHECKSUM_AT]);
        if sum.as_slice() != &b[CHECKSUM_AT..] || b[9..SLOTS_AT].iter().any(|&x| x != 0) {
            return None;
        }
        let sequence = le_u64(b, 0);
        let count = b[8] as usize;
        if sequence == 0 || count == 0 || count > MAX_SLOTS {
            return None;
        }
        let slots = (0..count)
            .map(|i| KeySlot::decode(&b[SLOTS_AT + i * SLOT_LEN..SLOTS_AT + (i + 1) * SLOT_LEN]))
            .collect::<Option<Vec<_>>>()?;
        Some(SlotArea { sequence, slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::format::{CipherId, Header};

    fn slot(kind: SlotKind, fill: u8) -> KeySlot {
        KeySlot {
            kind,
            param: if kind == SlotKind::Passphrase { 600_000 } else { 0 },
            salt: [fill; 32],
            nonce: [fill.wrapping_add(1); NONCE_LEN],
            wrapped: [fill.wrapping_add(2); 32 + TAG_LEN],
        }
    }

    fn area(sequence: u64, slots: usize) -> SlotArea {
        let kinds = [
            SlotKind::Passphrase,
            SlotKind::KeyFile,
            SlotKind::Recipient,
            SlotKind::Keyring,
        ];
        SlotArea {
            sequence,
            slots: (0..slots)
                .map(|i| slot(kinds[i % 4], 0x10 * i as u8 + 1))
                .collect(),
        }
    }

    /// Recomputes the checksum after a test edits the area, as a deliberate (not torn) writer would.
    fn reseal(b: &mut [u8; SLOT_AREA_LEN]) {
        let sum = Sha256::digest(&b[..CHECKSUM_AT]);
        b[CHECKSUM_AT..].copy_from_slice(&sum);
    }

    fn header(a: [u8; SLOT_AREA_LEN], b: [u8; SLOT_AREA_LEN]) -> Header {
        Header {
            version: crate::core::format::FormatVersion::V1,
            flags: 0,
            cipher: CipherId::Aes256Gcm,
            block_size: 4096,
            total_blocks: 0,
            original_size: 0,
            footer_offset: 0,
            footer_size: 0,
            container_id: [7; 16],
            slot_area_a: a,
            slot_area_b: b,
            commits: [[0; crate::core::format::COMMIT_LEN]; 2],
            signature: [0; crate::core::format::SIGNATURE_LEN],
        }
    }

    #[test]
    fn slot_kinds_are_the_four_format_md_numbers() {
        for (byte, kind, name) in [
            (1, SlotKind::Passphrase, "passphrase"),
            (2, SlotKind::KeyFile, "key-file"),
            (3, SlotKind::Recipient, "recipient"),
            (4, SlotKind::Keyring, "keyring"),
        ] {
            assert_eq!(SlotKind::from_byte(byte), Some(kind));
            assert_eq!(kind as u8, byte);
            assert_eq!(kind.name(), name);
        }
        for byte in [0, 5, 0x80, 0xff] {
            assert_eq!(SlotKind::from_byte(byte), None, "{byte}");
        }
    }

    #[test]
    fn a_slot_encodes_to_the_128_byte_layout_of_format_md() {
        let s = KeySlot {
            param: 0x0102_0304,
            ..slot(SlotKind::Passphrase, 0xa0)
        };
        let b = s.encode();
        assert_eq!(b.len(), 128);
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..4], &[0; 3]);
        assert_eq!(le_u32(&b, 4), 0x0102_0304);
        assert_eq!(&b[8..40], &[0xa0; 32]);
        assert_eq!(&b[40..52], &[0xa1; 12]);
        assert_eq!(&b[52..100], &[0xa2; 48]);
        assert_eq!(&b[100..128], &[0; 28]);
    }

    #[test]
    fn the_aad_fields_are_slot_bytes_0_to_52() {
        let s = slot(SlotKind::Recipient, 0x33);
        assert_eq!(s.aad_fields().as_slice(), &s.encode()[..52]);
    }

    #[test]
    fn an_area_with_one_slot_round_trips() {
        let a = area(1, 1);
        assert_eq!(SlotArea::decode(&a.encode()), Some(a));
    }

    #[test]
    fn an_area_with_eight_slots_of_every_kind_round_trips() {
        let a = area(u64::MAX, MAX_SLOTS);
        assert_eq!(SlotArea::decode(&a.encode()), Some(a));
    }

    #[test]
    fn an_area_encodes_to_the_layout_of_format_md() {
        let a = area(0x0a0b, 3);
        let b = a.encode();
        assert_eq!(le_u64(&b, 0), 0x0a0b);
        assert_eq!(b[8], 3);
        assert_eq!(&b[9..16], &[0; 7]);
        for (i, s) in a.slots.iter().enumerate() {
            assert_eq!(&b[16 + i * 128..16 + (i + 1) * 128], &s.encode()[..]);
        }
        assert!(
            b[16 + 3 * 128..1040].iter().all(|&x| x == 0),
            "unused slots are zero"
        );
        assert_eq!(&b[1040..], Sha256::digest(&b[..1040]).as_slice());
    }

    #[test]
    fn an_all_zero_area_is_not_valid() {
        assert_eq!(SlotArea::decode(&[0; SLOT_AREA_LEN]), None);
    }

    #[test]
    fn a_flipped_bit_anywhere_in_an_area_fails_its_checksum() {
        let good = area(5, 2).encode();
        for at in (0..SLOT_AREA_LEN).step_by(7).chain([SLOT_AREA_LEN - 1]) {
            let mut b = good;
            b[at] ^= 0x01;
            assert_eq!(SlotArea::decode(&b), None, "byte {at}");
        }
    }

    #[test]
    fn sequence_zero_is_invalid_even_with_a_good_checksum() {
        let mut b = area(1, 1).encode();
        b[0..8].copy_from_slice(&0u64.to_le_bytes());
        reseal(&mut b);
        assert_eq!(SlotArea::decode(&b), None);
    }

    #[test]
    fn a_slot_count_of_zero_or_above_eight_is_invalid() {
        for count in [0u8, 9, 200, 255] {
            let mut b = area(1, MAX_SLOTS).encode();
            b[8] = count;
            reseal(&mut b);
            assert_eq!(SlotArea::decode(&b), None, "{count}");
        }
    }

    #[test]
    fn a_counted_slot_of_unknown_kind_makes_the_area_invalid() {
        for kind in [0u8, 5, 0xff] {
            let mut b = area(1, 3).encode();
            b[16 + 2 * SLOT_LEN] = kind;
            reseal(&mut b);
            assert_eq!(SlotArea::decode(&b), None, "{kind}");
        }
    }

    #[test]
    fn the_count_decides_which_slots_are_read() {
        let mut b = area(1, 3).encode();
        b[8] = 2;
        reseal(&mut b);
        let a = SlotArea::decode(&b).unwrap();
        assert_eq!(a.slots, area(1, 3).slots[..2]);
    }

    #[test]
    fn non_zero_reserved_bytes_in_a_slot_area_are_rejected() {
        for at in [9, 15, 16 + 1, 16 + 3, 16 + 100, 16 + 127] {
            let mut b = area(1, 1).encode();
            b[at] = 1;
            reseal(&mut b);
            assert_eq!(SlotArea::decode(&b), None, "byte {at}");
        }
    }

    #[test]
    #[should_panic(expected = "1 to 8 slots")]
    fn encoding_more_than_eight_slots_is_refused() {
        area(1, MAX_SLOTS + 1).encode();
    }

    #[test]
    #[should_panic(expected = "1 to 8 slots")]
    fn encoding_an_area_without_slots_is_refused() {
        area(1, 0).encode();
    }

    #[test]
    fn a_new_container_uses_area_a_with_area_b_zero() {
        let a = area(1, 1);
        let h = header(a.encode(), [0; SLOT_AREA_LEN]);
        assert_eq!(h.active_slots().unwrap(), a);
        assert!(!h.has_stale_slot_area());
    }

    #[test]
    fn the_area_with_the_higher_sequence_is_active_whichever_it_is() {
        let (old, new) = (area(4, 1), area(5, 2));
        assert_eq!(header(old.encode(), new.encode()).active_slots().unwrap(), new);
        assert_eq!(header(new.encode(), old.encode()).active_slots().unwrap(), new);
    }

    #[test]
    fn with_equal_sequences_area_a_is_active() {
        let (a, b) = (area(3, 1), area(3, 2));
        assert_eq!(header(a.encode(), b.encode()).active_slots().unwrap(), a);
    }

    #[test]
    fn only_area_b_valid_makes_b_active() {
        let b = area(2, 1);
        assert_eq!(header([0; SLOT_AREA_LEN], b.encode()).active_slots().unwrap(), b);
    }

    #[test]
    fn a_torn_write_of_the_newer_area_falls_back_to_the_older_one() {
        let old = area(1, 1);
        let new = area(2, 3).encode();
        // The write of area B stopped halfway: its first half is new, the rest still zero.
        let mut torn = [0u8; SLOT_AREA_LEN];
        torn[..SLOT_AREA_LEN / 2].copy_from_slice(&new[..SLOT_AREA_LEN / 2]);
        assert_eq!(header(old.encode(), torn).active_slots().unwrap(), old);
        // And the same the other way round, area A torn over an older B.
        assert_eq!(header(torn, old.encode()).active_slots().unwrap(), old);
    }

    #[test]
    fn a_damaged_newer_area_falls_back_to_the_older_one() {
        let old = area(6, 1);
        let mut newer = area(7, 2).encode();
        newer[16 + 60] ^= 0x80;
        assert_eq!(header(newer, old.encode()).active_slots().unwrap(), old);
    }

    #[test]
    fn when_neither_area_is_valid_the_header_is_corrupt() {
        let mut a = area(1, 1).encode();
        a[CHECKSUM_AT] ^= 1;
        let e = header(a, [0; SLOT_AREA_LEN]).active_slots().unwrap_err();
        assert!(matches!(e, crate::Error::Corrupt { .. }), "{e}");
    }

    #[test]
    fn identical_areas_are_not_stale_but_differing_valid_ones_are() {
        let a = area(2, 2).encode();
        assert!(!header(a, a).has_stale_slot_area());
        assert!(header(a, area(1, 1).encode()).has_stale_slot_area());
        assert!(header(area(3, 1).encode(), a).has_stale_slot_area());
        let mut torn = a;
        torn[100] ^= 1;
        assert!(
            !header(a, torn).has_stale_slot_area(),
            "an invalid area is not stale"
        );
    }
}
