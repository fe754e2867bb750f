//! Sealing and opening one block: hash → (compress) → derive CDK → AEAD, and back. The writer and
//! every reader go through these two functions, so there is one implementation of the block
//! cryptography in the whole crate.

use crate::core::compress::{inflate, maybe_compress, CompressMode};
use crate::core::crypto::{derive_cdk, ContainerKeys, Entropy};
use crate::core::format::{
    array, BlockMeta, BlockPrefix, Compression, BLOCK_HEAD_LEN, BLOCK_PREFIX_LEN, NONCE_LEN, TAG_LEN,
};
use crate::{Error, Result};
use sha2::{Digest, Sha256};

/// A sealed block, ready to be written: prefix and sealed metadata, then the sealed payload.
pub struct SealedBlock {
    pub head: [u8; BLOCK_HEAD_LEN],
    pub payload: Vec<u8>,
    pub plain_size: u64,
    pub compressed: bool,
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
    pub mode: CompressMode,
    pub level: u32,
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

    let prefix = BlockPrefix {
        index,
        payload_len: data.len() as u32,
    }
    .encode();
    let mut sealed_meta = meta.encode().to_vec();
    keys.meta_key
        .seal(&meta_nonce, &meta_aad(keys, &prefix), &mut sealed_meta);

    let mut head = [0u8; BLOCK_HEAD_LEN];
    head[..BLOCK_PREFIX_LEN].copy_from_slice(&prefix);
    head[BLOCK_PREFIX_LEN..BLOCK_PREFIX_LEN + NONCE_LEN].copy_from_slice(&meta_nonce);
    head[BLOCK_PREFIX_LEN + NONCE_LEN..].copy_from_slice(&sealed_meta);
    SealedBlock {
        head,
        payload: data,
        plain_size: plain_size as u64,
        compressed: compression == Compression::Deflate,
    }
}

/// Checks and decrypts a block's head, found at container offset `offset` where block `index`
/// is expected. Returns the prefix and the authenticated metadata.
pub fn open_block_head(
    keys: &ContainerKeys,
    index: u64,
    head: &[u8; BLOCK_HEAD_LEN],
    offset: u64,
) -> Result<(BlockPrefix, BlockMeta)> {
    let prefix_bytes: [u8; BLOCK_PREFIX_LEN] = array(head, 0);
    let prefix = BlockPrefix::decode(&prefix_bytes, offset).map_err(|e| match e {
        Error::Corrupt { what, offset, .. } => Error::Corrupt {
            what,
            block: Some(index),
            offset,
        },
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
