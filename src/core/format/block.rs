//! A block on disk: a clear prefix (so `repair` can find blocks without the index), the sealed
//! metadata (V6-C), then the sealed payload.

use super::{array, le_u32, le_u64, NONCE_LEN, TAG_LEN};
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"QBLK";
pub const BLOCK_PREFIX_LEN: usize = 24;
/// Length of the metadata once decrypted.
pub const META_PLAIN_LEN: usize = 88;
/// Length of the sealed metadata on disk: nonce, ciphertext, tag.
pub const META_LEN: usize = NONCE_LEN + META_PLAIN_LEN + TAG_LEN;
/// Prefix plus sealed metadata: everything before the payload.
pub const BLOCK_HEAD_LEN: usize = BLOCK_PREFIX_LEN + META_LEN;
/// Bytes a block adds to its stored data: head plus the payload's tag (156).
pub const BLOCK_OVERHEAD: u64 = (BLOCK_HEAD_LEN + TAG_LEN) as u64;

/// How a block's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Deflate = 1,
}

/// The clear block prefix. It is authenticated as the metadata's associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPrefix {
    pub index: u64,
    /// Sealed payload length: stored size plus the tag.
    pub payload_len: u32,
}

impl BlockPrefix {
    pub fn encode(&self) -> [u8; BLOCK_PREFIX_LEN] {
        let mut b = [0u8; BLOCK_PREFIX_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&(META_LEN as u32).to_le_bytes());
        b[8..16].copy_from_slice(&self.index.to_le_bytes());
        b[16..20].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Decodes a prefix found at container offset `offset`.
    pub fn decode(b: &[u8; BLOCK_PREFIX_LEN], offset: u64) -> Result<Self> {
        let bad = |what: String| Error::Corrupt {
            what,
            block: None,
            offset: Some(offset),
        };
        if &b[0..4] != MAGIC {
            return Err(bad("bad block magic".into()));
        }
        let meta_len = le_u32(b, 4);
        if meta_len as usize != META_LEN {
            return Err(bad(format!(
                "block metadata length {meta_len}, expected {META_LEN}"
            )));
        }
        if b[20..24] != [0; 4] {
            return Err(bad("reserved block prefix bytes are not zero".into()));
        }
        let payload_len = le_u32(b, 16);
        if (payload_len as usize) < TAG_LEN {
            return Err(bad(format!(
                "block payload length {payload_len} is shorter than a tag"
            )));
        }
        Ok(BlockPrefix {
            index: le_u64(b, 8),
            payload_len,
        })
    }
}

/// The per-block metadata, decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMeta {
    pub plain_size: u32,
    pub stored_size: u32,
    pub compression: Compression,
    /// SHA-256 of the block's plaintext; also an input of the block's key.
    pub content_hash: [u8; 32],
    pub payload_nonce: [u8; NONCE_LEN],
    /// HKDF salt for the block's content key.
    pub cdk_salt: [u8; 32],
}

impl BlockMeta {
    pub fn encode(&self) -> [u8; META_PLAIN_LEN] {
        let mut b = [0u8; META_PLAIN_LEN];
        b[0..4].copy_from_slice(&self.plain_size.to_le_bytes());
        b[4..8].copy_from_slice(&self.stored_size.to_le_bytes());
        b[8] = self.compression as u8;
        b[12..44].copy_from_slice(&self.content_hash);
        b[44..56].copy_from_slice(&self.payload_nonce);
        b[56..88].copy_from_slice(&self.cdk_salt);
        b
    }

    /// Decodes authenticated metadata. It is authentic, yet still checked: a writer bug must not
    /// become an out-of-bounds read.
    pub fn decode(b: &[u8], block: u64) -> Result<Self> {
        let bad = |what: &str| Error::Corrupt {
            what: what.into(),
            block: Some(block),
            offset: None,
        };
        if b.len() != META_PLAIN_LEN {
            return Err(bad("metadata has the wrong length"));
        }
        let compression = match b[8] {
            0 => Compression::None,
            1 => Compression::Deflate,
            _ => return Err(bad("unknown compression id")),
        };
        let meta = BlockMeta {
            plain_size: le_u32(b, 0),
            stored_size: le_u32(b, 4),
            compression,
            content_hash: array(b, 12),
            payload_nonce: array(b, 44),
            cdk_salt: array(b, 56),
        };
        if meta.stored_size > meta.plain_size
            || (compression == Compression::None && meta.stored_size != meta.plain_size)
        {
            return Err(bad("stored size is inconsistent with plaintext size"));
        }
        Ok(meta)
    }
}
