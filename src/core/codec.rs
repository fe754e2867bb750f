//! Sealing and opening one block: hash → (compress) → derive CDK → AEAD, and back. The writer and
//! every reader go through these two functions, so there is one implementation of the block
//! cryptography in the whole crate.

use crate::core::compress::{inflate, maybe_compress, Codec, CompressMode};
use crate::core::crypto::{derive_cdk, ContainerKeys, Entropy};
use crate::core::format::{
    array, BlockMeta, BlockPrefix, Compression, BLOCK_HEAD_LEN, BLOCK_PREFIX_LEN, NONCE_LEN, TAG_LEN,
};
use crate::{Error, Result};
use sha2::{Digest, Sha256};

/// A sealed block, ready to be written: prefix and sealed metadata, then the sealed payload.
pub struct SealedBlock {
    /// The clear prefix followed by the sealed metadata.
    pub head: [u8; BLOCK_HEAD_LEN],
    /// The sealed payload: stored bytes followed by the 16-byte tag.
    pub payload: Vec<u8>,
    /// Plaintext bytes in the block.
    pub plain_size: u64,
    /// True when the payload holds compressed bytes.
    pub compressed: bool,
    /// v2: BLAKE3 of the stored block (head and payload), for the footer.
    pub block_hash: Option<[u8; 32]>,
    /// v2: the plaintext buffer, handed back for reuse (v1 seals in place, in `payload`).
    pub plain: Option<Vec<u8>>,
}

impl SealedBlock {
    /// Bytes the block occupies in the container.
    pub fn stored_len(&self) -> u64 {
        (BLOCK_HEAD_LEN + self.payload.len()) as u64
    }
}

/// How blocks are compressed while packing.
#[derive(Clone, Copy, Debug)]
pub struct CompressPolicy {
    /// When to compress a block.
    pub mode: CompressMode,
    /// Level, 0 to 9 (deflate's levels; zstd's are mapped by `zstd_level`).
    pub level: u32,
    /// The compressor of a v2 block (a v1 block is always deflate).
    pub codec: Codec,
}

fn meta_aad(keys: &ContainerKeys, prefix: &[u8; BLOCK_PREFIX_LEN]) -> Vec<u8> {
    let mut aad = keys.container_id.to_vec();
    aad.extend_from_slice(prefix);
    aad
}

fn payload_aad(keys: &ContainerKeys, index: u64, plain_size: u32, compression: Compression) -> Vec<u8> {
    let mut aad = keys.container_id.to_vec();
    aad.extend_from_slice(&index.to_le_bytes());
    aad.extend_from_slice(&plain_size.to_le_bytes());
    aad.push(compression as u8);
    aad
}

/// Seals block `index` holding `plain` (at most one block size; the caller guarantees it).
pub fn seal_block(
    keys: &ContainerKeys,
    index: u64,
    plain: Vec<u8>,
    policy: CompressPolicy,
    entropy: &dyn Entropy,
) -> SealedBlock {
    let plain_size = u32::try_from(plain.len()).expect("a block is at most 64 MiB");
    let content_hash: [u8; 32] = Sha256::digest(&plain).into();
    let (mut data, compression) = match maybe_compress(&plain, policy.mode, policy.level) {
        Some(c) => (c, Compression::Deflate),
        None => (plain, Compression::None),
    };

    let mut random = [0u8; 2 * NONCE_LEN + 32];
    let mut context = b"block ".to_vec();
    context.extend_from_slice(&index.to_le_bytes());
    entropy.fill(&context, &mut random);
    let meta_nonce: [u8; NONCE_LEN] = array(&random, 0);
    let meta = BlockMeta {
        plain_size,
        stored_size: data.len() as u32,
        compression,
        content_hash,
        payload_nonce: array(&random, NONCE_LEN),
        cdk_salt: array(&random, 2 * NONCE_LEN),
    };

    let cdk = derive_cdk(keys, &meta.cdk_salt, index, &content_hash);
    cdk.seal(
        &meta.payload_nonce,
        &payload_aad(keys, index, plain_size, compression),
        &mut data,
    );

    let head = seal_head(keys, index, data.len() as u32, &meta_nonce, &meta.encode());
    SealedBlock {
        head,
        payload: data,
        plain_size: plain_size as u64,
        compressed: compression == Compression::Deflate,
        block_hash: None,
        plain: None,
    }
}

/// A block's head: the clear prefix of block `index` with a sealed payload of `payload_len`
/// bytes, then `meta_plain` sealed under the metadata key with the prefix as AAD. Both format
/// versions lay out and seal the head this way; only the metadata's plaintext differs.
pub(crate) fn seal_head(
    keys: &ContainerKeys,
    index: u64,
    payload_len: u32,
    meta_nonce: &[u8; NONCE_LEN],
    meta_plain: &[u8],
) -> [u8; BLOCK_HEAD_LEN] {
    let prefix = BlockPrefix { index, payload_len }.encode();
    let mut sealed_meta = meta_plain.to_vec();
    keys.meta_key
        .seal(meta_nonce, &meta_aad(keys, &prefix), &mut sealed_meta);
    let mut head = [0u8; BLOCK_HEAD_LEN];
    head[..BLOCK_PREFIX_LEN].copy_from_slice(&prefix);
    head[BLOCK_PREFIX_LEN..BLOCK_PREFIX_LEN + NONCE_LEN].copy_from_slice(meta_nonce);
    head[BLOCK_PREFIX_LEN + NONCE_LEN..].copy_from_slice(&sealed_meta);
    head
}

/// Checks a block head's clear prefix (found at container offset `offset` where block `index`
/// is expected) and opens its sealed metadata: the prefix and the metadata's plaintext, for the
/// version's decoder. Shared by both format versions.
pub(crate) fn open_head(
    keys: &ContainerKeys,
    index: u64,
    head: &[u8; BLOCK_HEAD_LEN],
    offset: u64,
) -> Result<(BlockPrefix, Vec<u8>)> {
    let prefix_bytes: [u8; BLOCK_PREFIX_LEN] = array(head, 0);
    let prefix = BlockPrefix::decode(&prefix_bytes, offset).map_err(|e| match e {
        Error::Corrupt { what, .. } => Error::corrupt_block(index, offset, what),
        e => e,
    })?;
    if prefix.index != index {
        return Err(Error::corrupt_block(
            index,
            offset,
            format!(
                "block prefix says it is block {} (moved or reordered)",
                prefix.index
            ),
        ));
    }
    let meta_nonce: [u8; NONCE_LEN] = array(head, BLOCK_PREFIX_LEN);
    let mut meta = head[BLOCK_PREFIX_LEN + NONCE_LEN..].to_vec();
    keys.meta_key
        .open(&meta_nonce, &meta_aad(keys, &prefix_bytes), &mut meta)
        .map_err(|_| Error::corrupt_block(index, offset, "block metadata fails authentication"))?;
    Ok((prefix, meta))
}

/// Checks and decrypts a block's head, found at container offset `offset` where block `index`
/// is expected. Returns the prefix and the authenticated metadata.
pub fn open_block_head(
    keys: &ContainerKeys,
    index: u64,
    head: &[u8; BLOCK_HEAD_LEN],
    offset: u64,
) -> Result<(BlockPrefix, BlockMeta)> {
    let (prefix, meta) = open_head(keys, index, head, offset)?;
    let meta = BlockMeta::decode(&meta, index)?;
    if meta.stored_size as u64 + TAG_LEN as u64 != prefix.payload_len as u64 {
        return Err(Error::corrupt_block(
            index,
            offset,
            "payload length disagrees with metadata",
        ));
    }
    Ok((prefix, meta))
}

/// Decrypts (and inflates) a block's payload. With `verify`, also recomputes the plaintext's
/// SHA-256 and compares it with the metadata; the AEAD already authenticates every byte.
pub fn open_payload(
    keys: &ContainerKeys,
    index: u64,
    meta: &BlockMeta,
    payload: Vec<u8>,
    verify: bool,
    offset: u64,
) -> Result<Vec<u8>> {
    open_payload_from(keys, index, meta, payload, 0, verify, offset)
}

/// [`open_payload`] for a payload at `buf[start..]`, e.g. a whole block read in one go with its
/// head in front.
pub fn open_payload_from(
    keys: &ContainerKeys,
    index: u64,
    meta: &BlockMeta,
    mut payload: Vec<u8>,
    start: usize,
    verify: bool,
    offset: u64,
) -> Result<Vec<u8>> {
    let cdk = derive_cdk(keys, &meta.cdk_salt, index, &meta.content_hash);
    cdk.open_from(
        &meta.payload_nonce,
        &payload_aad(keys, index, meta.plain_size, meta.compression),
        &mut payload,
        start,
    )
    .map_err(|_| Error::corrupt_block(index, offset, "block payload fails authentication"))?;
    let plain = match meta.compression {
        Compression::None => payload,
        Compression::Deflate => inflate(&payload, meta.plain_size as usize)
            .map_err(|e| Error::corrupt_block(index, offset, e.to_string()))?,
    };
    if verify && Sha256::digest(&plain).as_slice() != meta.content_hash {
        return Err(Error::corrupt_block(
            index,
            offset,
            "plaintext SHA-256 does not match",
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::{derive_container_keys, AeadKey, DataKey, SeededEntropy};
    use crate::core::format::{CipherId, BLOCK_OVERHEAD, META_PLAIN_LEN};

    const CIPHERS: [CipherId; 2] = [CipherId::Aes256Gcm, CipherId::ChaCha20Poly1305];
    const RAW: CompressPolicy = CompressPolicy {
        mode: CompressMode::Never,
        level: 1,
        codec: Codec::Deflate,
    };
    const DEFLATE: CompressPolicy = CompressPolicy {
        mode: CompressMode::Always,
        level: 6,
        codec: Codec::Deflate,
    };

    fn keys(cipher: CipherId) -> ContainerKeys {
        keys_for(cipher, [0xc0; 16])
    }

    fn keys_for(cipher: CipherId, id: [u8; 16]) -> ContainerKeys {
        derive_container_keys(DataKey::generate(&SeededEntropy([0x77; 32])), cipher, id)
    }

    fn text(len: usize) -> Vec<u8> {
        b"seekable encrypted containers, block by block. "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        SeededEntropy([0x99; 32]).fill(b"noise", &mut v);
        v
    }

    fn seal(keys: &ContainerKeys, index: u64, plain: &[u8], policy: CompressPolicy) -> SealedBlock {
        seal_block(keys, index, plain.to_vec(), policy, &SeededEntropy([0x33; 32]))
    }

    /// Opens a sealed block (head, then payload) as a reader would at `offset`.
    fn open(
        keys: &ContainerKeys,
        index: u64,
        head: &[u8; BLOCK_HEAD_LEN],
        payload: &[u8],
        verify: bool,
    ) -> Result<Vec<u8>> {
        let (_, meta) = open_block_head(keys, index, head, 5000)?;
        open_payload(keys, index, &meta, payload.to_vec(), verify, 5000)
    }

    fn assert_names_block(r: Result<Vec<u8>>, index: u64) {
        match r {
            Err(Error::Corrupt { block: Some(b), .. }) if b == index => {}
            Err(e) => panic!("expected an error naming block {index}, got {e:?}"),
            Ok(_) => panic!("expected an error naming block {index}, got plaintext"),
        }
    }

    #[test]
    fn a_raw_block_opens_to_its_plaintext_with_both_ciphers() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            let plain = noise(4096);
            let sealed = seal(&keys, 3, &plain, RAW);
            assert!(!sealed.compressed);
            assert_eq!(sealed.plain_size, 4096);
            assert_eq!(sealed.payload.len(), 4096 + TAG_LEN);
            assert_eq!(sealed.stored_len(), 4096 + BLOCK_OVERHEAD);
            let (prefix, meta) = open_block_head(&keys, 3, &sealed.head, 0).unwrap();
            assert_eq!(
                prefix,
                BlockPrefix {
                    index: 3,
                    payload_len: 4096 + 16
                }
            );
            assert_eq!(meta.compression, Compression::None);
            assert_eq!((meta.plain_size, meta.stored_size), (4096, 4096));
            assert_eq!(meta.content_hash, <[u8; 32]>::from(Sha256::digest(&plain)));
            assert_eq!(
                open_payload(&keys, 3, &meta, sealed.payload, true, 0).unwrap(),
                plain
            );
        }
    }

    #[test]
    fn a_deflated_block_opens_to_its_plaintext_with_both_ciphers() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            let plain = text(20_000);
            let sealed = seal(&keys, 0, &plain, DEFLATE);
            assert!(sealed.compressed);
            assert!(sealed.payload.len() < plain.len() / 4);
            let (_, meta) = open_block_head(&keys, 0, &sealed.head, 4096).unwrap();
            assert_eq!(meta.compression, Compression::Deflate);
            assert_eq!(meta.plain_size, 20_000);
            assert_eq!(meta.stored_size as usize + TAG_LEN, sealed.payload.len());
            assert_eq!(
                open_payload(&keys, 0, &meta, sealed.payload, true, 4096).unwrap(),
                plain
            );
        }
    }

    #[test]
    fn incompressible_data_is_stored_raw_even_when_deflate_is_asked_for() {
        let keys = keys(CipherId::Aes256Gcm);
        let sealed = seal(&keys, 0, &noise(8000), DEFLATE);
        assert!(!sealed.compressed);
        assert_eq!(sealed.payload.len(), 8000 + TAG_LEN);
    }

    #[test]
    fn a_whole_block_read_in_one_buffer_opens_in_place() {
        let keys = keys(CipherId::ChaCha20Poly1305);
        let plain = text(3000);
        let sealed = seal(&keys, 9, &plain, DEFLATE);
        let mut whole = sealed.head.to_vec();
        whole.extend_from_slice(&sealed.payload);
        let (_, meta) = open_block_head(&keys, 9, &sealed.head, 0).unwrap();
        assert_eq!(
            open_payload_from(&keys, 9, &meta, whole, BLOCK_HEAD_LEN, true, 0).unwrap(),
            plain
        );
    }

    #[test]
    fn the_head_is_the_prefix_then_the_metadata_nonce_and_sealed_metadata_of_format_md() {
        let keys = keys(CipherId::Aes256Gcm);
        let sealed = seal(&keys, 2, &text(100), RAW);
        let prefix: [u8; BLOCK_PREFIX_LEN] = array(&sealed.head, 0);
        assert_eq!(
            prefix,
            BlockPrefix {
                index: 2,
                payload_len: 116
            }
            .encode()
        );
        let nonce: [u8; NONCE_LEN] = array(&sealed.head, 24);
        let mut meta = sealed.head[36..].to_vec();
        assert_eq!(meta.len(), META_PLAIN_LEN + TAG_LEN);
        let aad = [&keys.container_id[..], &prefix].concat();
        keys.meta_key.open(&nonce, &aad, &mut meta).unwrap();
        let meta = BlockMeta::decode(&meta, 2).unwrap();
        // The payload AAD as FORMAT.md states it: container_id ‖ u64(i) ‖ u32(plain_size) ‖ u8(compression).
        let aad = [
            &keys.container_id[..],
            &2u64.to_le_bytes(),
            &100u32.to_le_bytes(),
            &[0],
        ]
        .concat();
        let mut payload = sealed.payload.clone();
        derive_cdk(&keys, &meta.cdk_salt, 2, &meta.content_hash)
            .open(&meta.payload_nonce, &aad, &mut payload)
            .unwrap();
        assert_eq!(payload, text(100));
    }

    #[test]
    fn sealing_with_seeded_entropy_is_reproducible_per_index() {
        let keys = keys(CipherId::Aes256Gcm);
        let (a, b) = (seal(&keys, 4, &text(500), RAW), seal(&keys, 4, &text(500), RAW));
        assert_eq!((a.head, a.payload.clone()), (b.head, b.payload));
        let c = seal(&keys, 5, &text(500), RAW);
        assert_ne!(a.payload, c.payload);
    }

    #[test]
    fn a_flipped_byte_anywhere_in_a_sealed_block_fails_naming_its_index() {
        for (cipher, policy) in [(CipherId::Aes256Gcm, RAW), (CipherId::ChaCha20Poly1305, DEFLATE)] {
            let keys = keys(cipher);
            let sealed = seal(&keys, 6, &text(300), policy);
            let mut whole = sealed.head.to_vec();
            whole.extend_from_slice(&sealed.payload);
            for at in 0..whole.len() {
                for bit in [0x01, 0x80] {
                    let mut b = whole.clone();
                    b[at] ^= bit;
                    let head: [u8; BLOCK_HEAD_LEN] = array(&b, 0);
                    assert_names_block(open(&keys, 6, &head, &b[BLOCK_HEAD_LEN..], false), 6);
                }
            }
        }
    }

    #[test]
    fn a_truncated_or_extended_payload_fails_naming_the_block() {
        let keys = keys(CipherId::Aes256Gcm);
        let sealed = seal(&keys, 1, &text(300), RAW);
        let p = &sealed.payload;
        assert_names_block(open(&keys, 1, &sealed.head, &p[..p.len() - 1], false), 1);
        assert_names_block(open(&keys, 1, &sealed.head, &p[..10], false), 1);
        assert_names_block(open(&keys, 1, &sealed.head, &[], false), 1);
        let mut longer = p.clone();
        longer.push(0);
        assert_names_block(open(&keys, 1, &sealed.head, &longer, false), 1);
    }

    #[test]
    fn a_block_moved_to_another_position_fails() {
        let keys = keys(CipherId::Aes256Gcm);
        let sealed = seal(&keys, 2, &text(300), RAW);
        assert_names_block(open(&keys, 3, &sealed.head, &sealed.payload, false), 3);
        assert_names_block(open(&keys, 1, &sealed.head, &sealed.payload, false), 1);
    }

    #[test]
    fn a_moved_block_whose_prefix_was_rewritten_to_match_still_fails() {
        let keys = keys(CipherId::Aes256Gcm);
        let sealed = seal(&keys, 2, &text(300), RAW);
        let mut head = sealed.head;
        head[..BLOCK_PREFIX_LEN].copy_from_slice(
            &BlockPrefix {
                index: 3,
                payload_len: 316,
            }
            .encode(),
        );
        assert_names_block(open(&keys, 3, &head, &sealed.payload, false), 3);
        // Even with the real metadata in hand, the payload is bound to index 2.
        let (_, meta) = open_block_head(&keys, 2, &sealed.head, 0).unwrap();
        assert_names_block(open_payload(&keys, 3, &meta, sealed.payload, false, 0), 3);
    }

    #[test]
    fn a_block_from_another_container_fails() {
        let ours = keys_for(CipherId::Aes256Gcm, [1; 16]);
        let theirs = keys_for(CipherId::Aes256Gcm, [2; 16]);
        let sealed = seal(&theirs, 0, &text(300), RAW);
        assert_names_block(open(&ours, 0, &sealed.head, &sealed.payload, false), 0);
    }

    #[test]
    fn a_payload_length_that_disagrees_with_the_metadata_is_corrupt() {
        // A writer bug, not an attack: the metadata is sealed correctly over a wrong prefix.
        let keys = keys(CipherId::Aes256Gcm);
        let sealed = seal(&keys, 0, &text(300), RAW);
        let (_, meta) = open_block_head(&keys, 0, &sealed.head, 0).unwrap();
        let prefix = BlockPrefix {
            index: 0,
            payload_len: 317,
        }
        .encode();
        let nonce = [9u8; NONCE_LEN];
        let mut sealed_meta = meta.encode().to_vec();
        keys.meta_key
            .seal(&nonce, &meta_aad(&keys, &prefix), &mut sealed_meta);
        let mut head = [0u8; BLOCK_HEAD_LEN];
        head[..24].copy_from_slice(&prefix);
        head[24..36].copy_from_slice(&nonce);
        head[36..].copy_from_slice(&sealed_meta);
        match open_block_head(&keys, 0, &head, 77) {
            Err(Error::Corrupt {
                what,
                block: Some(0),
                offset: Some(77),
            }) => {
                assert!(what.contains("payload length"), "{what}")
            }
            r => panic!("{r:?}"),
        }
    }

    /// A payload sealed under a content hash that is not the plaintext's (only a buggy writer
    /// makes one): the AEAD accepts it, only the verify path notices.
    fn payload_with_wrong_hash(keys: &ContainerKeys, index: u64, plain: &[u8]) -> (BlockMeta, Vec<u8>) {
        let meta = BlockMeta {
            plain_size: plain.len() as u32,
            stored_size: plain.len() as u32,
            compression: Compression::None,
            content_hash: Sha256::digest(b"something else").into(),
            payload_nonce: [4; NONCE_LEN],
            cdk_salt: [5; 32],
        };
        let mut data = plain.to_vec();
        let cdk: AeadKey = derive_cdk(keys, &meta.cdk_salt, index, &meta.content_hash);
        cdk.seal(
            &meta.payload_nonce,
            &payload_aad(keys, index, meta.plain_size, meta.compression),
            &mut data,
        );
        (meta, data)
    }

    #[test]
    fn verify_recomputes_the_plaintext_hash_and_names_the_block() {
        let keys = keys(CipherId::ChaCha20Poly1305);
        let (meta, payload) = payload_with_wrong_hash(&keys, 11, b"plaintext");
        match open_payload(&keys, 11, &meta, payload.clone(), true, 640) {
            Err(Error::Corrupt {
                what,
                block: Some(11),
                offset: Some(640),
            }) => {
                assert!(what.contains("SHA-256"), "{what}")
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(
            open_payload(&keys, 11, &meta, payload, false, 640).unwrap(),
            b"plaintext"
        );
    }

    #[test]
    fn verify_passes_on_an_honest_block() {
        let keys = keys(CipherId::Aes256Gcm);
        let plain = text(1234);
        let sealed = seal(&keys, 0, &plain, DEFLATE);
        assert_eq!(
            open(&keys, 0, &sealed.head, &sealed.payload, true).unwrap(),
            plain
        );
        assert_eq!(
            open(&keys, 0, &sealed.head, &sealed.payload, false).unwrap(),
            plain
        );
    }
}
