//! The 4096-byte header region: fixed fields, then the two key-slot areas.

use super::{
    array, le_u16, le_u32, le_u64, ContainerId, SlotArea, FORMAT_VERSION, SLOT_AREA_A, SLOT_AREA_B,
    SLOT_AREA_LEN,
};
use crate::{Error, Result};

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
    Aes256Gcm = 0,
    ChaCha20Poly1305 = 1,
}

impl CipherId {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(CipherId::Aes256Gcm),
            1 => Some(CipherId::ChaCha20Poly1305),
            _ => None,
        }
    }
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
    pub flags: u16,
    pub cipher: CipherId,
    pub block_size: u32,
    /// Zero in a streamed header that was never patched; the footer is authoritative.
    pub total_blocks: u64,
    pub original_size: u64,
    pub footer_offset: u64,
    pub footer_size: u64,
    pub container_id: ContainerId,
    pub slot_area_a: [u8; SLOT_AREA_LEN],
    pub slot_area_b: [u8; SLOT_AREA_LEN],
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12] = self.cipher as u8;
        b[16..20].copy_from_slice(&self.block_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.total_blocks.to_le_bytes());
        b[32..40].copy_from_slice(&self.original_size.to_le_bytes());
        b[40..48].copy_from_slice(&self.footer_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.footer_size.to_le_bytes());
        b[56..72].copy_from_slice(&self.container_id);
        b[SLOT_AREA_A..SLOT_AREA_A + SLOT_AREA_LEN].copy_from_slice(&self.slot_area_a);
        b[SLOT_AREA_B..SLOT_AREA_B + SLOT_AREA_LEN].copy_from_slice(&self.slot_area_b);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_LEN {
            return Err(Error::NotAContainer(format!(
                "{} bytes is shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        }
        if &b[0..8] != MAGIC {
            return Err(Error::NotAContainer("bad magic at offset 0".into()));
        }
        let version = le_u16(b, 8);
        if version != FORMAT_VERSION {
            return Err(Error::NotAContainer(format!(
                "unsupported format version {version}"
            )));
        }
        let flags = le_u16(b, 10);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::corrupt(format!("unknown header flags {flags:#06x}")));
        }
        let reserved = [
            13..16,
            20..24,
            72..SLOT_AREA_A,
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
        let cipher = CipherId::from_byte(b[12])
            .ok_or_else(|| Error::NotAContainer(format!("unknown cipher id {}", b[12])))?;
        let block_size = le_u32(b, 16);
        super::check_block_size(block_size).map_err(|e| Error::corrupt(format!("header: {e}")))?;
        Ok(Header {
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
}
