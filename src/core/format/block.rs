//! A block on disk: a clear prefix (so `repair` can find blocks without the index), the sealed
//! metadata (V6-C), then the sealed payload.

use super::{array, le_u32, le_u64, NONCE_LEN, TAG_LEN};
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"QBLK";
/// Length of the clear block prefix.
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
    /// Stored as is (`0`): the stored size equals the plain size.
    None = 0,
    /// Raw deflate, RFC 1951 (`1`): the stored size is at most the plain size.
    Deflate = 1,
}

/// The clear block prefix. It is authenticated as the metadata's associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPrefix {
    /// The block's 0-based index in the container.
    pub index: u64,
    /// Sealed payload length: stored size plus the tag.
    pub payload_len: u32,
}

impl BlockPrefix {
    /// Encodes the prefix as [`BLOCK_PREFIX_LEN`] bytes (magic, metadata length, index, payload length).
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
    /// Plaintext bytes in the block, 1 to the block size.
    pub plain_size: u32,
    /// Payload bytes before the tag.
    pub stored_size: u32,
    /// How the payload is stored.
    pub compression: Compression,
    /// SHA-256 of the block's plaintext; also an input of the block's key.
    pub content_hash: [u8; 32],
    /// Nonce of the payload's AEAD.
    pub payload_nonce: [u8; NONCE_LEN],
    /// HKDF salt for the block's content key.
    pub cdk_salt: [u8; 32],
}

impl BlockMeta {
    /// Encodes the metadata as its [`META_PLAIN_LEN`] plaintext bytes, before sealing.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(compression: Compression, plain_size: u32, stored_size: u32) -> BlockMeta {
        BlockMeta {
            plain_size,
            stored_size,
            compression,
            content_hash: [0xc1; 32],
            payload_nonce: [0xc2; NONCE_LEN],
            cdk_salt: [0xc3; 32],
        }
    }

    fn prefix_error(edit: impl FnOnce(&mut [u8; BLOCK_PREFIX_LEN])) -> Error {
        let mut b = BlockPrefix {
            index: 3,
            payload_len: 116,
        }
        .encode();
        edit(&mut b);
        BlockPrefix::decode(&b, 777).expect_err("the edited prefix must be refused")
    }

    fn assert_corrupt_at_offset(e: Error, offset: u64) {
        match e {
            Error::Corrupt {
                block: None,
                offset: Some(o),
                ..
            } if o == offset => {}
            e => panic!("expected Corrupt at offset {offset}, got {e:?}"),
        }
    }

    #[test]
    fn the_block_sizes_add_up_as_format_md_says() {
        assert_eq!(BLOCK_PREFIX_LEN, 24);
        assert_eq!(META_LEN, 12 + 88 + 16);
        assert_eq!(BLOCK_HEAD_LEN, 140);
        assert_eq!(BLOCK_OVERHEAD, 156);
    }

    #[test]
    fn a_prefix_round_trips() {
        for p in [
            BlockPrefix {
                index: 0,
                payload_len: TAG_LEN as u32,
            },
            BlockPrefix {
                index: 41,
                payload_len: 4096 + 16,
            },
            BlockPrefix {
                index: u64::MAX,
                payload_len: u32::MAX,
            },
        ] {
            assert_eq!(BlockPrefix::decode(&p.encode(), 4096).unwrap(), p);
        }
    }

    #[test]
    fn a_prefix_encodes_to_the_layout_of_format_md() {
        let b = BlockPrefix {
            index: 0x0102_0304_0506_0708,
            payload_len: 5016,
        }
        .encode();
        assert_eq!(&b[0..4], b"QBLK");
        assert_eq!(le_u32(&b, 4), 116);
        assert_eq!(le_u64(&b, 8), 0x0102_0304_0506_0708);
        assert_eq!(le_u32(&b, 16), 5016);
        assert_eq!(&b[20..24], &[0; 4]);
    }

    #[test]
    fn a_prefix_with_a_bad_magic_is_corrupt_at_its_offset() {
        for at in 0..4 {
            assert_corrupt_at_offset(prefix_error(|b| b[at] ^= 0x40), 777);
        }
    }

    #[test]
    fn a_prefix_with_another_metadata_length_is_corrupt() {
        for len in [0u32, 115, 117, 88, u32::MAX] {
            assert_corrupt_at_offset(prefix_error(|b| b[4..8].copy_from_slice(&len.to_le_bytes())), 777);
        }
    }

    #[test]
    fn a_prefix_with_non_zero_reserved_bytes_is_corrupt() {
        for at in 20..24 {
            assert_corrupt_at_offset(prefix_error(|b| b[at] = 0x01), 777);
        }
    }

    #[test]
    fn a_payload_shorter_than_a_tag_is_corrupt_and_a_bare_tag_is_not() {
        for len in [0u32, 1, 15] {
            assert_corrupt_at_offset(
                prefix_error(|b| b[16..20].copy_from_slice(&len.to_le_bytes())),
                777,
            );
        }
        let b = BlockPrefix {
            index: 0,
            payload_len: 16,
        }
        .encode();
        assert_eq!(BlockPrefix::decode(&b, 0).unwrap().payload_len, 16);
    }

    #[test]
    fn metadata_round_trips_raw_and_deflated() {
        for m in [
            meta(Compression::None, 4096, 4096),
            meta(Compression::None, 1, 1),
            meta(Compression::Deflate, 1 << 20, 100),
            meta(Compression::Deflate, 5000, 5000),
            meta(Compression::None, 64 << 20, 64 << 20),
        ] {
            assert_eq!(BlockMeta::decode(&m.encode(), 9).unwrap(), m);
        }
    }

    #[test]
    fn metadata_encodes_to_the_layout_of_format_md() {
        let b = meta(Compression::Deflate, 0x1000, 0x0800).encode();
        assert_eq!(b.len(), 88);
        assert_eq!(le_u32(&b, 0), 0x1000);
        assert_eq!(le_u32(&b, 4), 0x0800);
        assert_eq!(b[8], 1);
        assert_eq!(&b[9..12], &[0; 3]);
        assert_eq!(&b[12..44], &[0xc1; 32]);
        assert_eq!(&b[44..56], &[0xc2; 12]);
        assert_eq!(&b[56..88], &[0xc3; 32]);
        assert_eq!(meta(Compression::None, 1, 1).encode()[8], 0);
    }

    fn assert_corrupt_in_block(r: Result<BlockMeta>, block: u64) {
        match r {
            Err(Error::Corrupt { block: Some(b), .. }) if b == block => {}
            r => panic!("expected Corrupt in block {block}, got {r:?}"),
        }
    }

    #[test]
    fn metadata_of_the_wrong_length_is_corrupt() {
        let b = meta(Compression::None, 10, 10).encode();
        let mut long = b.to_vec();
        long.push(0);
        assert_corrupt_in_block(BlockMeta::decode(&b[..87], 5), 5);
        assert_corrupt_in_block(BlockMeta::decode(&long, 5), 5);
        assert_corrupt_in_block(BlockMeta::decode(&[], 5), 5);
    }

    #[test]
    fn an_unknown_compression_id_is_corrupt() {
        for id in [2u8, 0xff] {
            let mut b = meta(Compression::None, 10, 10).encode();
            b[8] = id;
            assert_corrupt_in_block(BlockMeta::decode(&b, 12), 12);
        }
    }

    #[test]
    fn a_stored_size_above_the_plain_size_is_corrupt() {
        for c in [Compression::None, Compression::Deflate] {
            let b = meta(c, 100, 101).encode();
            assert_corrupt_in_block(BlockMeta::decode(&b, 0), 0);
        }
    }

    #[test]
    fn an_uncompressed_block_must_store_exactly_its_plain_size() {
        let b = meta(Compression::None, 100, 99).encode();
        assert_corrupt_in_block(BlockMeta::decode(&b, 1), 1);
    }
}
