//! Format version 2, payload cryptography (`docs/FORMAT.md`, "Version 2"): a
//! block's stored bytes sealed as segments, each opened on its own. The writer seals every v2
//! block here, and every reader opens v2 blocks here; v1 blocks go through [`crate::core::codec`].
//!
//! Segment `j` of block `i` (STREAM: a counter and a last-segment flag in the nonce):
//! ```text
//! nonce_j   = payload_nonce_base[0..7] ‖ u32be(j) ‖ u8(last)
//! AAD_j     = container_id ‖ u64(i) ‖ u32(j) ‖ u8(last) ‖ u32(plain_size) ‖ u8(compression)
//! segment_j = AEAD(CDK_i, nonce_j, stored[j·S .. min((j+1)·S, stored_size)], AAD_j) ‖ tag
//! ```
//! with `CDK_i = HKDF(MK, cdk_salt_i, "qeltrix v2 cdk" ‖ container_id ‖ u64(i) ‖ content_hash_i)`
//! ([`derive_cdk_v2`]). Integers in the AAD are little-endian, as everywhere in the format; the
//! counter in the nonce is big-endian, as the design states.

use std::ops::Range;

use crate::core::codec::{open_head, seal_head, CompressPolicy};
use crate::core::compress::{inflate, maybe_compress, maybe_compress_zstd, unzstd, Codec};
use crate::core::crypto::{derive_cdk_v2, AeadKey, ContainerKeys, Entropy};
use crate::core::format::{
    array, BlockMetaV2, BlockPrefix, CompressionV2, ContainerId, Segments, BLOCK_HEAD_LEN, CONTAINER_ID_LEN,
    NONCE_BASE_USED, NONCE_LEN, TAG_LEN,
};
use crate::{Error, Result};

/// Length of a segment's AAD.
pub const SEGMENT_AAD_LEN: usize = CONTAINER_ID_LEN + 8 + 4 + 1 + 4 + 1;

/// The v2 content hash of a block's plaintext: BLAKE3.
pub fn content_hash_v2(plain: &[u8]) -> [u8; 32] {
    *blake3::hash(plain).as_bytes()
}

/// The nonce of segment `j`: `base[0..7] ‖ u32be(j) ‖ u8(last)`.
pub fn segment_nonce(base: &[u8; NONCE_LEN], j: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..NONCE_BASE_USED].copy_from_slice(&base[..NONCE_BASE_USED]);
    n[NONCE_BASE_USED..NONCE_BASE_USED + 4].copy_from_slice(&j.to_be_bytes());
    n[NONCE_LEN - 1] = last as u8;
    n
}

/// The AAD of segment `j` of block `index`.
pub fn segment_aad(
    container_id: &ContainerId,
    index: u64,
    j: u32,
    last: bool,
    plain_size: u32,
    compression: CompressionV2,
) -> [u8; SEGMENT_AAD_LEN] {
    let mut a = [0u8; SEGMENT_AAD_LEN];
    let mut at = 0;
    for field in [
        &container_id[..],
        &index.to_le_bytes(),
        &j.to_le_bytes(),
        &[last as u8],
        &plain_size.to_le_bytes(),
        &[compression as u8],
    ] {
        a[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    a
}

/// What seals and opens the segments of one block: its content key and the metadata fields the
/// nonces and AADs take. Derive it once per block (an HKDF) and open any number of segments.
pub struct PayloadKey {
    cdk: AeadKey,
    container_id: ContainerId,
    index: u64,
    plain_size: u32,
    compression: CompressionV2,
    nonce_base: [u8; NONCE_LEN],
    segments: Segments,
}

impl PayloadKey {
    /// The payload key of block `index`, whose authenticated metadata is `meta`.
    pub fn new(keys: &ContainerKeys, index: u64, meta: &BlockMetaV2) -> Self {
        PayloadKey {
            cdk: derive_cdk_v2(keys, &meta.cdk_salt, index, &meta.content_hash),
            container_id: keys.container_id,
            index,
            plain_size: meta.plain_size,
            compression: meta.compression,
            nonce_base: meta.payload_nonce_base,
            segments: meta.segments(),
        }
    }

    /// The block's segment layout.
    pub fn segments(&self) -> Segments {
        self.segments
    }

    fn nonce_aad(&self, j: u32, last: bool) -> ([u8; NONCE_LEN], [u8; SEGMENT_AAD_LEN]) {
        (
            segment_nonce(&self.nonce_base, j, last),
            segment_aad(
                &self.container_id,
                self.index,
                j,
                last,
                self.plain_size,
                self.compression,
            ),
        )
    }

    fn corrupt(&self, what: String) -> Error {
        Error::Corrupt {
            what,
            block: Some(self.index),
            offset: None,
        }
    }

    /// Seals the block's `stored` bytes (exactly `stored_size` of them) into `out`, which is
    /// cleared first: a writer reuses one buffer for every block.
    pub fn seal_payload(&self, stored: &[u8], out: &mut Vec<u8>) {
        let g = self.segments;
        assert_eq!(
            stored.len() as u64,
            g.payload_len() - TAG_LEN as u64 * g.count() as u64,
            "stored bytes of block {}",
            self.index
        );
        out.clear();
        out.reserve(g.payload_len() as usize);
        for j in 0..g.count() {
            let r = g.stored_range(j);
            let start = out.len();
            out.extend_from_slice(&stored[r.start as usize..r.end as usize]);
            let (nonce, aad) = self.nonce_aad(j, g.is_last(j));
            let tag = self.cdk.seal_detached(&nonce, &aad, &mut out[start..]);
            out.extend_from_slice(&tag);
        }
    }

    /// Checks and decrypts sealed segment `j`, which the caller takes to be the last segment when
    /// `last`. `sealed` must be exactly the segment's length. Returns the plaintext's length: it is
    /// `sealed[..len]`.
    pub fn open_segment(&self, j: u32, last: bool, sealed: &mut [u8]) -> Result<usize> {
        let g = self.segments;
        if j >= g.count() {
            return Err(self.corrupt(format!("segment {j}: the block has {} segments", g.count())));
        }
        if last != g.is_last(j) {
            return Err(self.corrupt(format!(
                "segment {j}: opened as {} but it is segment {j} of {}",
                if last { "the last" } else { "not the last" },
                g.count()
            )));
        }
        let want = g.sealed_range(j..j + 1);
        if sealed.len() as u64 != want.end - want.start {
            return Err(self.corrupt(format!(
                "segment {j}: {} sealed bytes, expected {}",
                sealed.len(),
                want.end - want.start
            )));
        }
        let (nonce, aad) = self.nonce_aad(j, last);
        self.cdk
            .open_in_slice(&nonce, &aad, sealed)
            .map_err(|_| self.corrupt(format!("segment {j} fails authentication")))
    }

    /// Checks and decrypts the consecutive sealed segments `segs`, which `sealed` must hold
    /// exactly (as [`Segments::sealed_range`] gives them). Their plaintext is moved to the front
    /// of `sealed`; returns its length.
    pub fn open_segments(&self, segs: Range<u32>, sealed: &mut [u8]) -> Result<usize> {
        let g = self.segments;
        if segs.start > segs.end || segs.end > g.count() {
            return Err(self.corrupt(format!(
                "segments {}..{}: the block has {} segments",
                segs.start,
                segs.end,
                g.count()
            )));
        }
        let want = g.sealed_range(segs.clone());
        if sealed.len() as u64 != want.end - want.start {
            return Err(self.corrupt(format!(
                "segments {}..{}: {} sealed bytes, expected {}",
                segs.start,
                segs.end,
                sealed.len(),
                want.end - want.start
            )));
        }
        let (mut at, mut plain) = (0usize, 0usize);
        for j in segs {
            let r = g.sealed_range(j..j + 1);
            let len = (r.end - r.start) as usize;
            let n = self.open_segment(j, g.is_last(j), &mut sealed[at..at + len])?;
            sealed.copy_within(at..at + n, plain);
            at += len;
            plain += n;
        }
        Ok(plain)
    }

    /// Checks and decrypts a whole sealed payload in place, leaving the stored bytes.
    pub fn open_payload(&self, payload: &mut Vec<u8>) -> Result<()> {
        let n = self.open_segments(0..self.segments.count(), payload)?;
        payload.truncate(n);
        Ok(())
    }
}

/// The head of a sealed v2 block: the clear prefix, then the metadata nonce and sealed metadata,
/// laid out as in v1. The payload is in the buffer given to [`seal_block_v2`].
pub struct SealedHeadV2 {
    /// Prefix and sealed metadata.
    pub head: [u8; BLOCK_HEAD_LEN],
    /// The block's metadata, as sealed in `head`.
    pub meta: BlockMetaV2,
}

/// A v2 block's plaintext from its opened (authenticated) payload: the payload itself for an
/// uncompressed block, else exactly `plain_size` bytes decoded from it, bounded by `plain_size`
/// before any allocation. Failures name block `index` at `offset`.
pub fn decompress_payload_v2(
    meta: &BlockMetaV2,
    payload: Vec<u8>,
    index: u64,
    offset: u64,
) -> Result<Vec<u8>> {
    let plain_size = meta.plain_size as usize;
    let decoded = match meta.compression {
        CompressionV2::None => return Ok(payload),
        CompressionV2::Deflate => inflate(&payload, plain_size).map_err(|e| e.to_string()),
        CompressionV2::Zstd => unzstd(&payload, plain_size).map_err(|e| e.to_string()),
    };
    decoded.map_err(|what| Error::corrupt_block(index, offset, what))
}

/// Seals block `index` holding `plain` (1 byte to one block size; the caller guarantees it) as a
/// v2 block: BLAKE3 content hash, compressed with `policy.codec` (zstd, or deflate for
/// `--compress deflate`) when `policy` asks and the sample says it pays, the payload as segments
/// into `payload` (cleared first), and the head.
pub fn seal_block_v2(
    keys: &ContainerKeys,
    index: u64,
    plain: &[u8],
    policy: CompressPolicy,
    entropy: &dyn Entropy,
    payload: &mut Vec<u8>,
) -> SealedHeadV2 {
    let plain_size = u32::try_from(plain.len()).expect("a block is at most 64 MiB");
    let (compressed, id) = match policy.codec {
        Codec::Zstd => (
            maybe_compress_zstd(plain, policy.mode, policy.level),
            CompressionV2::Zstd,
        ),
        Codec::Deflate => (
            maybe_compress(plain, policy.mode, policy.level),
            CompressionV2::Deflate,
        ),
    };
    let (stored, compression) = match &compressed {
        Some(c) => (&c[..], id),
        None => (plain, CompressionV2::None),
    };

    let mut random = [0u8; NONCE_LEN + NONCE_BASE_USED + 32];
    let context = [&b"v2 block "[..], &index.to_le_bytes()].concat();
    entropy.fill(&context, &mut random);
    let meta_nonce: [u8; NONCE_LEN] = array(&random, 0);
    let mut payload_nonce_base = [0u8; NONCE_LEN];
    payload_nonce_base[..NONCE_BASE_USED].copy_from_slice(&random[NONCE_LEN..NONCE_LEN + NONCE_BASE_USED]);
    let meta = BlockMetaV2 {
        plain_size,
        stored_size: stored.len() as u32,
        compression,
        content_hash: content_hash_v2(plain),
        payload_nonce_base,
        cdk_salt: array(&random, NONCE_LEN + NONCE_BASE_USED),
    };
    PayloadKey::new(keys, index, &meta).seal_payload(stored, payload);

    let payload_len = u32::try_from(payload.len()).expect("a sealed block is below 4 GiB");
    let head = seal_head(keys, index, payload_len, &meta_nonce, &meta.encode());
    SealedHeadV2 { head, meta }
}

/// Checks and decrypts the head of v2 block `index`, found at container offset `offset` in a
/// container of `block_size`: prefix, metadata authentication, every metadata field, and that the
/// prefix's payload length is the metadata's stored size plus a tag per segment.
pub fn open_block_head_v2(
    keys: &ContainerKeys,
    index: u64,
    head: &[u8; BLOCK_HEAD_LEN],
    offset: u64,
    block_size: u32,
) -> Result<(BlockPrefix, BlockMetaV2)> {
    let at = |e: Error| match e {
        Error::Corrupt { what, .. } => Error::corrupt_block(index, offset, what),
        e => e,
    };
    let (prefix, meta) = open_head(keys, index, head, offset)?;
    let meta = BlockMetaV2::decode(&meta, index, block_size).map_err(at)?;
    let want = meta.segments().payload_len();
    if prefix.payload_len as u64 != want {
        return Err(Error::corrupt_block(
            index,
            offset,
            format!(
                "payload length {} disagrees with metadata ({want} for {} segments)",
                prefix.payload_len,
                meta.segments().count()
            ),
        ));
    }
    Ok((prefix, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::{derive_container_keys, DataKey, Entropy, SeededEntropy};
    use crate::core::format::{CipherId, SEGMENT_LEN};

    const CIPHERS: [CipherId; 2] = [CipherId::Aes256Gcm, CipherId::ChaCha20Poly1305];
    const S: usize = SEGMENT_LEN as usize;
    const SEALED_S: usize = S + TAG_LEN;

    fn keys_for(cipher: CipherId, id: [u8; 16]) -> ContainerKeys {
        derive_container_keys(DataKey::generate(&SeededEntropy([0x77; 32])), cipher, id)
    }

    fn keys(cipher: CipherId) -> ContainerKeys {
        keys_for(cipher, [0xc0; 16])
    }

    /// Incompressible test bytes of any length (BLAKE3's XOF; seeded entropy is for short draws).
    fn noise(len: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut v);
        v
    }

    /// The metadata a writer would make for `stored` bytes of block `index`.
    fn meta(index: u64, plain: &[u8], stored: &[u8], compression: CompressionV2) -> BlockMetaV2 {
        let mut random = [0u8; NONCE_LEN + 32];
        SeededEntropy([0x33; 32]).fill(&index.to_le_bytes(), &mut random);
        let mut base = [0u8; NONCE_LEN];
        base[..NONCE_BASE_USED].copy_from_slice(&random[..NONCE_BASE_USED]);
        BlockMetaV2 {
            plain_size: plain.len() as u32,
            stored_size: stored.len() as u32,
            compression,
            content_hash: content_hash_v2(plain),
            payload_nonce_base: base,
            cdk_salt: random[NONCE_LEN..].try_into().unwrap(),
        }
    }

    /// Seals uncompressed block `index` holding `plain`: its payload key and sealed payload.
    fn seal(keys: &ContainerKeys, index: u64, plain: &[u8]) -> (PayloadKey, Vec<u8>) {
        let m = meta(index, plain, plain, CompressionV2::None);
        let pk = PayloadKey::new(keys, index, &m);
        let mut out = Vec::new();
        pk.seal_payload(plain, &mut out);
        (pk, out)
    }

    fn assert_names_block<T: std::fmt::Debug>(r: Result<T>, index: u64, text: &str) {
        match r {
            Err(Error::Corrupt {
                block: Some(b), what, ..
            }) if b == index && what.contains(text) => {}
            r => panic!("expected an error naming block {index} and {text:?}, got {r:?}"),
        }
    }

    const BS: u32 = 1 << 20;
    const RAW: CompressPolicy = CompressPolicy {
        mode: crate::core::compress::CompressMode::Never,
        level: 1,
        codec: crate::core::compress::Codec::Zstd,
    };
    const ALWAYS: CompressPolicy = CompressPolicy {
        mode: crate::core::compress::CompressMode::Always,
        level: 6,
        codec: crate::core::compress::Codec::Zstd,
    };
    const AUTO: CompressPolicy = CompressPolicy {
        mode: crate::core::compress::CompressMode::Auto,
        level: 1,
        codec: crate::core::compress::Codec::Zstd,
    };

    fn text(len: usize) -> Vec<u8> {
        b"seekable encrypted containers, segment by segment. "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[test]
    fn a_whole_v2_block_seals_and_opens_raw_and_zstd() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            for (plain, policy, compression) in [
                (noise(S + 1, 20), RAW, CompressionV2::None),
                (noise(BS as usize, 21), ALWAYS, CompressionV2::None),
                (noise(BS as usize, 23), AUTO, CompressionV2::None),
                (text(100_000), ALWAYS, CompressionV2::Zstd),
                (text(BS as usize), AUTO, CompressionV2::Zstd),
            ] {
                let mut payload = Vec::new();
                let sealed =
                    seal_block_v2(&keys, 5, &plain, policy, &SeededEntropy([0x44; 32]), &mut payload);
                let (prefix, meta) = open_block_head_v2(&keys, 5, &sealed.head, 9000, BS).unwrap();
                assert_eq!(meta, sealed.meta);
                assert_eq!(meta.compression, compression);
                assert_eq!(meta.content_hash, *blake3::hash(&plain).as_bytes());
                assert_eq!(prefix.payload_len as usize, payload.len());
                PayloadKey::new(&keys, 5, &meta)
                    .open_payload(&mut payload)
                    .unwrap();
                if compression == CompressionV2::Zstd {
                    assert!(meta.stored_size < meta.plain_size);
                    assert!(decompress_payload_v2(&meta, payload.clone(), 5, 9000).is_ok());
                    let mut short = meta.clone();
                    short.plain_size -= 1;
                    let e = decompress_payload_v2(&short, payload.clone(), 5, 9000).unwrap_err();
                    assert!(matches!(e, Error::Corrupt { block: Some(5), .. }), "{e:?}");
                }
                assert_eq!(decompress_payload_v2(&meta, payload, 5, 9000).unwrap(), plain);
            }
        }
    }

    #[test]
    fn a_deflate_v2_payload_still_decodes_and_each_codec_refuses_the_others() {
        use crate::core::compress::{maybe_compress, CompressMode};
        let plain = text(10_000);
        let deflated = maybe_compress(&plain, CompressMode::Always, 6).unwrap();
        let zstd = maybe_compress_zstd(&plain, CompressMode::Always, 1).unwrap();
        let m = meta(3, &plain, &deflated, CompressionV2::Deflate);
        assert_eq!(decompress_payload_v2(&m, deflated.clone(), 3, 0).unwrap(), plain);
        assert!(decompress_payload_v2(&m, zstd.clone(), 3, 0).is_err());
        let m = meta(3, &plain, &zstd, CompressionV2::Zstd);
        assert_eq!(decompress_payload_v2(&m, zstd, 3, 0).unwrap(), plain);
        assert!(decompress_payload_v2(&m, deflated, 3, 0).is_err());
    }

    #[test]
    fn a_v2_head_that_is_flipped_moved_or_from_v1_fails_naming_the_block() {
        let keys = keys(CipherId::Aes256Gcm);
        let mut payload = Vec::new();
        let sealed = seal_block_v2(
            &keys,
            2,
            &noise(3000, 22),
            RAW,
            &SeededEntropy([0x44; 32]),
            &mut payload,
        );
        for at in 0..BLOCK_HEAD_LEN {
            let mut head = sealed.head;
            head[at] ^= 0x04;
            assert_names_block(open_block_head_v2(&keys, 2, &head, 0, BS), 2, "");
        }
        assert_names_block(open_block_head_v2(&keys, 3, &sealed.head, 0, BS), 3, "moved");
        // The container's block size bounds plain_size.
        let big = seal_block_v2(
            &keys,
            0,
            &noise(8192, 23),
            RAW,
            &SeededEntropy([0x44; 32]),
            &mut payload,
        );
        assert_names_block(
            open_block_head_v2(&keys, 0, &big.head, 0, 4096),
            0,
            "plain_size 8192",
        );
        // A v1 head has v1 metadata: compression 0 with segment_shift 0.
        let v1 = crate::core::codec::seal_block(&keys, 0, noise(3000, 22), RAW, &SeededEntropy([0x44; 32]));
        assert_names_block(
            open_block_head_v2(&keys, 0, &v1.head, 0, BS),
            0,
            "segment_shift 0",
        );
    }

    #[test]
    fn a_v2_head_whose_prefix_disagrees_with_the_segment_count_fails() {
        // A writer that put v1's payload length (stored + one tag) in the prefix of a two-segment
        // block: the metadata authenticates, the lengths do not add up.
        let keys = keys(CipherId::ChaCha20Poly1305);
        let plain = noise(S + 1, 24);
        let meta = meta(1, &plain, &plain, CompressionV2::None);
        for payload_len in [(S + 1 + TAG_LEN) as u32, (S + 1 + 3 * TAG_LEN) as u32] {
            let head = seal_head(&keys, 1, payload_len, &[9; NONCE_LEN], &meta.encode());
            assert_names_block(open_block_head_v2(&keys, 1, &head, 0, BS), 1, "for 2 segments");
        }
    }

    #[test]
    fn blocks_of_every_size_round_trip_with_both_ciphers() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            for (size, count) in [(4096, 1), (S, 1), (S + 1, 2), (1 << 20, 64)] {
                let plain = noise(size, size as u8);
                let (pk, sealed) = seal(&keys, 3, &plain);
                assert_eq!(pk.segments().count(), count, "{size}");
                assert_eq!(sealed.len(), size + TAG_LEN * count as usize, "{size}");
                assert_ne!(&sealed[..64], &plain[..64], "encrypted");
                let mut whole = sealed.clone();
                pk.open_payload(&mut whole).unwrap();
                assert_eq!(whole, plain, "{cipher:?} {size}");
                // Every segment opens alone, to its stored bytes.
                for j in 0..count {
                    let r = pk.segments().sealed_range(j..j + 1);
                    let mut seg = sealed[r.start as usize..r.end as usize].to_vec();
                    let n = pk.open_segment(j, j + 1 == count, &mut seg).unwrap();
                    let p = pk.segments().stored_range(j);
                    assert_eq!(&seg[..n], &plain[p.start as usize..p.end as usize]);
                }
            }
        }
    }

    #[test]
    fn a_range_read_opens_only_its_segments() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            let plain = noise(1 << 20, 1);
            let (pk, sealed) = seal(&keys, 0, &plain);
            let s = S as u64;
            for range in [
                0..1,
                3 * s - 1000..3 * s + 3096,
                s - 1..s + 1,
                5 * s..6 * s,
                (1 << 20) - 4096..1 << 20,
                0..1 << 20,
                77..77,
            ] {
                let span = pk.segments().span(range.clone()).unwrap();
                let mut buf = sealed[span.sealed.start as usize..span.sealed.end as usize].to_vec();
                let n = pk.open_segments(span.segments.clone(), &mut buf).unwrap();
                assert!(span.skip + span.len <= n);
                assert_eq!(
                    &buf[span.skip..span.skip + span.len],
                    &plain[range.start as usize..range.end as usize],
                    "{range:?}"
                );
            }
        }
    }

    #[test]
    fn the_output_buffer_is_reused_across_blocks() {
        let keys = keys(CipherId::Aes256Gcm);
        let (big, small) = (noise(1 << 20, 2), noise(5000, 3));
        let (_, want) = seal(&keys, 1, &small);
        let mut out = Vec::new();
        let m = meta(0, &big, &big, CompressionV2::None);
        PayloadKey::new(&keys, 0, &m).seal_payload(&big, &mut out);
        let capacity = out.capacity();
        let m = meta(1, &small, &small, CompressionV2::None);
        PayloadKey::new(&keys, 1, &m).seal_payload(&small, &mut out);
        assert_eq!(out, want);
        assert_eq!(out.capacity(), capacity, "no new allocation for a smaller block");
    }

    #[test]
    fn a_compressed_payload_is_one_segment() {
        for cipher in CIPHERS {
            for compression in [CompressionV2::Deflate, CompressionV2::Zstd] {
                let keys = keys(cipher);
                let (plain, stored) = (noise(100_000, 4), noise(40_000, 5));
                let m = meta(2, &plain, &stored, compression);
                let pk = PayloadKey::new(&keys, 2, &m);
                assert_eq!(pk.segments().count(), 1);
                let mut sealed = Vec::new();
                pk.seal_payload(&stored, &mut sealed);
                assert_eq!(sealed.len(), 40_000 + TAG_LEN);
                pk.open_payload(&mut sealed).unwrap();
                assert_eq!(sealed, stored);
            }
        }
    }

    #[test]
    fn segments_are_sealed_as_the_design_states() {
        let keys = keys(CipherId::ChaCha20Poly1305);
        let plain = noise(S + 10, 6);
        let m = meta(9, &plain, &plain, CompressionV2::None);
        let pk = PayloadKey::new(&keys, 9, &m);
        let mut sealed = Vec::new();
        pk.seal_payload(&plain, &mut sealed);
        let cdk = derive_cdk_v2(&keys, &m.cdk_salt, 9, &blake3::hash(&plain).into());
        for (j, last, range) in [(0u32, 0u8, 0..SEALED_S), (1, 1, SEALED_S..sealed.len())] {
            let nonce = [&m.payload_nonce_base[..7], &j.to_be_bytes(), &[last]].concat();
            let aad = [
                &keys.container_id[..],
                &9u64.to_le_bytes(),
                &j.to_le_bytes(),
                &[last],
                &((S + 10) as u32).to_le_bytes(),
                &[0],
            ]
            .concat();
            let mut seg = sealed[range.clone()].to_vec();
            cdk.open(&nonce.try_into().unwrap(), &aad, &mut seg).unwrap();
            assert_eq!(seg, plain[j as usize * S..(j as usize * S + S).min(S + 10)]);
        }
    }

    #[test]
    fn a_segment_moved_within_the_block_fails() {
        let keys = keys(CipherId::Aes256Gcm);
        let plain = noise(3 * S, 7);
        let (pk, sealed) = seal(&keys, 4, &plain);
        let seg = |j: usize| sealed[j * SEALED_S..(j + 1) * SEALED_S].to_vec();
        // Swapped, duplicated.
        for order in [[1, 0, 2], [0, 0, 2], [0, 1, 1]] {
            let mut p: Vec<u8> = order.iter().flat_map(|&j| seg(j)).collect();
            assert_names_block(pk.open_payload(&mut p), 4, "fails authentication");
        }
        assert_names_block(pk.open_segment(1, false, &mut seg(0)), 4, "segment 1 fails");
        assert_names_block(
            pk.open_segments(0..2, &mut [seg(1), seg(0)].concat()),
            4,
            "segment 0 fails",
        );
    }

    #[test]
    fn a_segment_from_another_block_or_container_fails() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            let plain = noise(2 * S, 8);
            let (pk4, sealed4) = seal(&keys, 4, &plain);
            let (_, sealed5) = seal(&keys, 5, &plain);
            let other = keys_for(cipher, [0xc1; 16]);
            let (_, foreign) = seal(&other, 4, &plain);
            for donor in [&sealed5, &foreign] {
                let mut p = sealed4.clone();
                p[SEALED_S..].copy_from_slice(&donor[SEALED_S..]);
                assert_names_block(pk4.open_payload(&mut p), 4, "segment 1 fails");
                let mut p = donor[..SEALED_S].to_vec();
                assert_names_block(pk4.open_segment(0, false, &mut p), 4, "segment 0 fails");
            }
        }
    }

    #[test]
    fn the_last_flag_must_match_the_segment_position() {
        let keys = keys(CipherId::Aes256Gcm);
        let plain = noise(2 * S + 5, 9);
        let (pk, sealed) = seal(&keys, 1, &plain);
        let mut seg0 = sealed[..SEALED_S].to_vec();
        let mut seg2 = sealed[2 * SEALED_S..].to_vec();
        assert_names_block(
            pk.open_segment(0, true, &mut seg0.clone()),
            1,
            "opened as the last",
        );
        assert_names_block(
            pk.open_segment(2, false, &mut seg2.clone()),
            1,
            "opened as not the last",
        );
        assert!(pk.open_segment(0, false, &mut seg0).is_ok());
        assert!(pk.open_segment(2, true, &mut seg2).is_ok());
        // Below the position check, the AEAD binds the flag itself: in the nonce, the AAD, or both.
        for (j, last) in [(0u32, false), (2, true)] {
            let r = pk.segments().sealed_range(j..j + 1);
            for (flip_nonce, flip_aad) in [(true, false), (false, true), (true, true)] {
                let nonce = segment_nonce(&pk.nonce_base, j, last ^ flip_nonce);
                let aad = segment_aad(
                    &pk.container_id,
                    1,
                    j,
                    last ^ flip_aad,
                    pk.plain_size,
                    pk.compression,
                );
                let mut seg = sealed[r.start as usize..r.end as usize].to_vec();
                assert!(
                    pk.cdk.open_in_slice(&nonce, &aad, &mut seg).is_err(),
                    "{j} {flip_nonce} {flip_aad}"
                );
            }
        }
    }

    #[test]
    fn a_payload_cut_at_a_segment_boundary_fails() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            let plain = noise(3 * S + 1, 10);
            let (pk, sealed) = seal(&keys, 6, &plain);
            for cut in [SEALED_S, 2 * SEALED_S, 3 * SEALED_S] {
                let mut p = sealed[..cut].to_vec();
                assert_names_block(pk.open_payload(&mut p), 6, "sealed bytes, expected");
                // A reader that took the segment before the cut for the last one.
                let j = (cut / SEALED_S - 1) as u32;
                let mut seg = sealed[cut - SEALED_S..cut].to_vec();
                let nonce = segment_nonce(&pk.nonce_base, j, true);
                let aad = segment_aad(&pk.container_id, 6, j, true, pk.plain_size, pk.compression);
                assert!(
                    pk.cdk.open_in_slice(&nonce, &aad, &mut seg).is_err(),
                    "cut at {cut}"
                );
            }
            // Metadata that claimed the shorter length would change plain_size and the hash: it
            // is another key and another AAD, so the cut payload does not open under it either.
            let short = &plain[..3 * S];
            let mut m = meta(6, &plain, &plain, CompressionV2::None);
            (m.plain_size, m.stored_size) = (short.len() as u32, short.len() as u32);
            let mut p = sealed[..3 * SEALED_S].to_vec();
            assert!(PayloadKey::new(&keys, 6, &m).open_payload(&mut p).is_err());
            m.content_hash = content_hash_v2(short);
            let mut p = sealed[..3 * SEALED_S].to_vec();
            assert!(PayloadKey::new(&keys, 6, &m).open_payload(&mut p).is_err());
        }
    }

    #[test]
    fn lengths_other_than_the_segment_length_fail_before_the_aead() {
        let keys = keys(CipherId::Aes256Gcm);
        let (pk, sealed) = seal(&keys, 2, &noise(S + 100, 11));
        for len in [0, 1, TAG_LEN - 1, TAG_LEN, SEALED_S - 1, SEALED_S + 1] {
            let mut b = vec![0u8; len];
            assert_names_block(pk.open_segment(0, false, &mut b), 2, "sealed bytes, expected");
        }
        for len in [0, 100 + TAG_LEN - 1, 100 + TAG_LEN + 1] {
            let mut b = vec![0u8; len];
            assert_names_block(pk.open_segment(1, true, &mut b), 2, "sealed bytes, expected");
        }
        assert_names_block(pk.open_segment(2, true, &mut [0u8; 116]), 2, "has 2 segments");
        assert_names_block(pk.open_segments(1..3, &mut [0u8; 116]), 2, "has 2 segments");
        for extra in [
            sealed[..sealed.len() - 1].to_vec(),
            [&sealed[..], &[0]].concat(),
            Vec::new(),
        ] {
            let mut p = extra;
            assert_names_block(pk.open_payload(&mut p), 2, "sealed bytes, expected");
        }
    }

    #[test]
    fn every_flipped_byte_of_a_small_sealed_payload_fails() {
        for cipher in CIPHERS {
            let keys = keys(cipher);
            let plain = noise(S + 40, 12);
            let (pk, sealed) = seal(&keys, 8, &plain);
            let compressed = meta(8, &plain, &plain[..300], CompressionV2::Zstd);
            let zk = PayloadKey::new(&keys, 8, &compressed);
            let mut zsealed = Vec::new();
            zk.seal_payload(&plain[..300], &mut zsealed);
            for (key, good) in [(&pk, &sealed), (&zk, &zsealed)] {
                for at in 0..good.len() {
                    let mut p = good.clone();
                    p[at] ^= if at % 2 == 0 { 0x01 } else { 0x80 };
                    assert_names_block(key.open_payload(&mut p), 8, "fails authentication");
                }
            }
        }
    }
}
