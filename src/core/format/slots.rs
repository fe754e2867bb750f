//! Key-slot areas. Each holds up to eight fixed-size slots, each wrapping the container's data key
//! under one key-encryption key. There are two areas (A and B) so that a rekey can write the
//! inactive one, sync, and have it win by its higher sequence number: a torn write fails the
//! checksum and the other area stays in force.

use super::{array, le_u32, le_u64, NONCE_LEN, TAG_LEN};
use sha2::{Digest, Sha256};

/// Offsets of the two areas inside the header region, and their length.
pub const SLOT_AREA_A: usize = 1024;
pub const SLOT_AREA_B: usize = 2560;
pub const SLOT_AREA_LEN: usize = 16 + MAX_SLOTS * SLOT_LEN + 32;
pub const MAX_SLOTS: usize = 8;
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
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(SlotKind::Passphrase),
            2 => Some(SlotKind::KeyFile),
            3 => Some(SlotKind::Recipient),
            4 => Some(SlotKind::Keyring),
            _ => None,
        }
    }
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
    pub kind: SlotKind,
    pub param: u32,
    pub salt: [u8; 32],
    pub nonce: [u8; NONCE_LEN],
    /// The 32-byte data key, encrypted, followed by its 16-byte tag.
    pub wrapped: [u8; 32 + TAG_LEN],
}

impl KeySlot {
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

    fn decode(b: &[u8]) -> Option<Self> {
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
    pub sequence: u64,
    pub slots: Vec<KeySlot>,
}

impl SlotArea {
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

    /// `None` when the area is empty, torn or damaged: its checksum, count or a slot kind is wrong.
    pub fn decode(b: &[u8; SLOT_AREA_LEN]) -> Option<Self> {
        let sum = Sha256::digest(&b[..CHECKSUM_AT]);
        if sum.as_slice() != &b[CHECKSUM_AT..] {
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
