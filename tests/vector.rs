//! The format's test vectors (docs/FORMAT.md, "Test vectors"), one per format version, each
//! checked two ways:
//! 1. the writer, with injected deterministic randomness, produces exactly the published bytes;
//! 2. an independent reader written here from docs/FORMAT.md alone (offsets, labels, AADs, nonces;
//!    only the primitive crates ring, hkdf, sha2, hmac, blake3 and zstd, none of qeltrix's format,
//!    codec or crypto code) decrypts them and checks every hash, tag and MAC they carry.
//!
//! Formats 3 and 4 have no writer vector; the independent reader reads the frozen v3 and v4
//! files instead.
//!
//! If either fails, the spec and the code disagree. The v1 vector must stay byte-identical
//! forever (a v1 writer is kept for readers of the original format); the v2 vector pins what
//! writers write by default.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use qeltrix::compress::Codec;
use qeltrix::crypto::{KeyFileKey, SeededEntropy};
use qeltrix::file_record::FileMeta;
use qeltrix::format::FormatVersion;
use qeltrix::{CompressMode, PackOptions, Recipient, StreamPacker};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use std::sync::Arc;

const KEY_FILE: [u8; 32] = [0x42; 32];

// ---- Version 1 ----

const SEED: [u8; 32] = [0x11; 32];
const EXPECTED_SHA256: &str = "67ca86fe7ab486bd9f541c69858179406995f0d9a800591269b3acdf331e7347";
const EXPECTED_LEN: usize = 9560;
const EXPECTED_CONTAINER_ID: &str = "b11bb30826e30b9ba68438976b721d50";
const EXPECTED_DATA_KEY: &str = "beded093c917a61d0a7de2e3e658b0a3dd3858cf4cd775f4691e20323d2cfe33";

fn plaintext() -> Vec<u8> {
    (0..5000u32).map(|i| (i % 251) as u8).collect()
}

fn pack(plain: &[u8], opts: &PackOptions) -> Vec<u8> {
    let key = Recipient::KeyFile(KeyFileKey::from_bytes(KEY_FILE));
    let mut packer = StreamPacker::new_seekable(std::io::Cursor::new(Vec::new()), &[key], opts).unwrap();
    std::io::Write::write_all(&mut packer, plain).unwrap();
    packer.finish().unwrap().0.into_inner()
}

fn vector_container() -> Vec<u8> {
    let opts = PackOptions {
        // Pinned: writers default to version 2 (zstd), but this vector is version 1's for good.
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: 4096,
        compress: CompressMode::Never,
        entropy: Arc::new(SeededEntropy(SEED)),
        ..PackOptions::default()
    };
    pack(&plaintext(), &opts)
}

#[test]
fn writer_reproduces_the_published_vector() {
    let c = vector_container();
    assert_eq!(c.len(), EXPECTED_LEN);
    assert_eq!(hex::encode(Sha256::digest(&c)), EXPECTED_SHA256);
}

// ---- Version 2 ----

const SEED_V2: [u8; 32] = [0x22; 32];
const BLOCK_SIZE_V2: u32 = 20480;
const EXPECTED_V2_SHA256: &str = "61683a83e10379ca0ffd17a6090ee4b513c04ba7ee81d4e5868aa55151ff0b1c";
const EXPECTED_V2_LEN: usize = 25508;
const EXPECTED_V2_CONTAINER_ID: &str = "70e4eb66337390608bcae1976c762bba";
const EXPECTED_V2_DATA_KEY: &str = "71e1719db2d9d363f0669ba71546314957f2896d67e3999d2a0adc89a59825f7";
const EXPECTED_V2_ROOT: &str = "a8dc08d05a9ee2afb22ec2671c5c3056dcdb7c4f83cfe97586450563bf7da622";
/// Block lengths in the container: block 0 raw in two segments, block 1 one zstd segment.
const EXPECTED_V2_BLOCK_LENS: [usize; 2] = [140 + 20480 + 2 * 16, 208];

/// 27,480 bytes: block 0 is 20,480 incompressible bytes (SHA-256 of
/// `"qeltrix v2 vector " ‖ u32le(j)` for j = 0 … 639, concatenated), block 1 is 7,000 bytes of
/// text that zstd shrinks (byte k = byte k mod 33 of `"qeltrix v2 test vector, block 1. "`).
fn plaintext_v2() -> Vec<u8> {
    let mut p = Vec::with_capacity(27_480);
    for j in 0..640u32 {
        p.extend_from_slice(&Sha256::digest(
            [&b"qeltrix v2 vector "[..], &j.to_le_bytes()].concat(),
        ));
    }
    let text = b"qeltrix v2 test vector, block 1. ";
    p.extend((0..7000).map(|k| text[k % text.len()]));
    p
}

/// The file record the v2 vector carries.
fn file_meta_v2() -> FileMeta {
    FileMeta {
        name: b"vector.txt".to_vec(),
        mode: 0o640,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 123_456_789,
    }
}

fn vector_container_v2() -> Vec<u8> {
    let opts = PackOptions {
        format: FormatVersion::V2,
        codec: Codec::Zstd,
        block_size: BLOCK_SIZE_V2,
        compress: CompressMode::Auto,
        level: 1,
        file_meta: Some(file_meta_v2()),
        entropy: Arc::new(SeededEntropy(SEED_V2)),
        ..PackOptions::default()
    };
    pack(&plaintext_v2(), &opts)
}

#[test]
fn writer_reproduces_the_published_v2_vector() {
    let c = vector_container_v2();
    assert_eq!(c.len(), EXPECTED_V2_LEN);
    assert_eq!(hex::encode(Sha256::digest(&c)), EXPECTED_V2_SHA256);
}

// ---- An independent reader, from docs/FORMAT.md ----

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .unwrap();
    out
}
fn aes_try_open(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = sealed.to_vec();
    let n = Nonce::try_assume_unique_for_key(nonce).unwrap();
    let len = k.open_in_place(n, Aad::from(aad), &mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}
fn aes_open(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    aes_try_open(key, nonce, aad, sealed).expect("authenticates")
}
fn blake3(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// What the independent reader found in a container.
struct Opened {
    container_id: Vec<u8>,
    data_key: [u8; 32],
    plain: Vec<u8>,
}

/// The parts every version shares: header, trailer, key slot 0 (a key file). Returns the
/// container id, the data key and where the footer is.
fn open_common(c: &[u8], version: u16, block_size: u32) -> (Vec<u8>, [u8; 32], usize, usize) {
    assert_eq!(&c[0..8], b"QELTRIX\0");
    assert_eq!(u16le(c, 8), version);
    assert_eq!(u32le(c, 16), block_size);
    let cid = c[56..72].to_vec();
    // Trailer -> footer.
    let t = c.len() - 32;
    assert_eq!(&c[t..t + 8], b"QLTXTRLR");
    assert_eq!(&c[t + 24..t + 32], b"QLTXEND\0");
    let (foot_off, foot_len) = (u64le(c, t + 8) as usize, u64le(c, t + 16) as usize);
    assert_eq!(foot_off + foot_len, t);
    assert_eq!(u64le(c, 40) as usize, foot_off, "patched header agrees");
    assert_eq!(u64le(c, 48) as usize, foot_len, "patched header agrees");
    let mk = unwrap_key_file_slot(c, &cid, &KEY_FILE);
    (cid, mk, foot_off, foot_len)
}

/// Key slot area A, slot 0: a key-file slot, unwrapped with `key_file`. Returns the data key.
fn unwrap_key_file_slot(c: &[u8], cid: &[u8], key_file: &[u8; 32]) -> [u8; 32] {
    let area = &c[1024..1024 + 1072];
    assert_eq!(&Sha256::digest(&area[..1040])[..], &area[1040..]);
    let slot = &area[16..16 + 128];
    assert_eq!(slot[0], 2, "key-file slot");
    let kek = hkdf(key_file, &slot[8..40], b"qeltrix v1 key-file kek");
    let aad = [cid, &slot[0..52]].concat();
    aes_open(&kek, &slot[40..52], &aad, &slot[52..100])
        .try_into()
        .unwrap()
}

/// Checks the footer MAC: HMAC-SHA256 under `HKDF(MK, cid, label)` over header bytes 0..24,
/// the container id and the footer before its MAC.
fn check_mac(c: &[u8], mk: &[u8; 32], cid: &[u8], footer: &[u8], label: &[u8]) {
    let mac_key = hkdf(mk, cid, label);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&mac_key).unwrap();
    mac.update(&c[0..24]);
    mac.update(cid);
    mac.update(&footer[..footer.len() - 32]);
    mac.verify_slice(&footer[footer.len() - 32..])
        .expect("footer MAC");
}

/// Opens a block's clear prefix and sealed metadata (identical in both versions): returns the
/// 88 metadata bytes.
fn open_meta(mk: &[u8; 32], cid: &[u8], block: &[u8], i: usize) -> Vec<u8> {
    assert_eq!(&block[0..4], b"QBLK");
    assert_eq!(u32le(block, 4), 116, "meta_len");
    assert_eq!(u64le(block, 8), i as u64, "block index");
    assert_eq!(u32le(block, 16) as usize, block.len() - 140, "payload_len");
    assert_eq!(&block[20..24], &[0; 4], "reserved");
    let meta_key = hkdf(mk, cid, b"qeltrix v1 metadata key");
    let meta_aad = [cid, &block[0..24]].concat();
    aes_open(&meta_key, &block[24..36], &meta_aad, &block[36..140])
}

fn read_v1(c: &[u8]) -> Opened {
    let (cid, mk, foot_off, foot_len) = open_common(c, 1, 4096);
    let footer = &c[foot_off..foot_off + foot_len];
    check_mac(c, &mk, &cid, footer, b"qeltrix v1 footer mac key");
    assert_eq!(&footer[0..8], b"QLTXFOOT");
    let count = u64le(footer, 8) as usize;
    assert_eq!(foot_len, 56 + 32 * count);
    let mut plain = Vec::new();
    for i in 0..count {
        let e = 24 + i * 32;
        let (off, len) = (u64le(footer, e) as usize, u64le(footer, e + 8) as usize);
        let block = &c[off..off + len];
        let meta = open_meta(&mk, &cid, block, i);
        let plain_size = u32le(&meta, 0);
        assert_eq!(meta[8], 0, "stored raw");
        let (hash, nonce, salt) = (&meta[12..44], &meta[44..56], &meta[56..88]);
        let info = [
            b"qeltrix v1 cdk".as_slice(),
            &cid[..],
            &(i as u64).to_le_bytes(),
            hash,
        ]
        .concat();
        let cdk = hkdf(&mk, salt, &info);
        let payload_aad = [
            &cid[..],
            &(i as u64).to_le_bytes(),
            &plain_size.to_le_bytes(),
            &[0u8],
        ]
        .concat();
        let data = aes_open(&cdk, nonce, &payload_aad, &block[140..]);
        assert_eq!(&Sha256::digest(&data)[..], hash);
        plain.extend_from_slice(&data);
    }
    assert_eq!(u64le(footer, 16) as usize, plain.len(), "original_size");
    Opened {
        container_id: cid,
        data_key: mk,
        plain,
    }
}

/// One opened v2 block, as the reader found it.
#[derive(Debug, PartialEq, Eq)]
struct BlockV2 {
    compression: u8,
    /// Stored bytes of each segment, in order.
    segments: Vec<usize>,
    len: usize,
}

/// A v2 file record's plaintext fields.
#[derive(Debug, PartialEq, Eq)]
struct RecordV2 {
    name: Vec<u8>,
    mode: u32,
    mtime_sec: i64,
    mtime_nsec: u32,
}

fn read_v2(c: &[u8], block_size: u32) -> (Opened, Vec<BlockV2>, [u8; 32], Option<RecordV2>) {
    let (cid, mk, foot_off, foot_len) = open_common(c, 2, block_size);
    let footer = &c[foot_off..foot_off + foot_len];
    check_mac(c, &mk, &cid, footer, b"qeltrix v2 footer mac key");
    // Footer head.
    assert_eq!(&footer[0..8], b"QLTXFOT2");
    let n = u64le(footer, 8) as usize;
    let original_size = u64le(footer, 16) as usize;
    let root = &footer[24..56];
    let r = u32le(footer, 56) as usize;
    assert_eq!(&footer[60..72], &[0; 12], "reserved");
    assert!(r == 0 || (46..=4142).contains(&r), "record length {r}");
    assert_eq!(foot_len, 72 + 180 * n + r + 32);
    assert_eq!(u64le(c, 24) as usize, n, "patched header: total_blocks");
    assert_eq!(
        u64le(c, 32) as usize,
        original_size,
        "patched header: original_size"
    );

    let mut plain = Vec::new();
    let mut blocks = Vec::new();
    let mut hashes = Vec::new();
    let mut next = 4096;
    for i in 0..n {
        let e = &footer[72 + 180 * i..72 + 180 * (i + 1)];
        let (off, len) = (u64le(e, 0) as usize, u64le(e, 8) as usize);
        let (plain_off, entry_plain) = (u64le(e, 16) as usize, u64le(e, 24) as usize);
        assert_eq!((off, plain_off), (next, plain.len()), "entries tile");
        next = off + len;
        let block = &c[off..off + len];
        // Keyless: the block hash and the metadata copy.
        let block_hash = blake3(&[block]);
        assert_eq!(&e[32..64], &block_hash, "block hash of block {i}");
        assert_eq!(
            &e[64..180],
            &block[24..140],
            "footer's metadata copy of block {i}"
        );
        hashes.push(block_hash);

        let meta = open_meta(&mk, &cid, block, i);
        let plain_size = u32le(&meta, 0);
        let stored_size = u32le(&meta, 4) as usize;
        let (compression, shift) = (meta[8], meta[9]);
        assert_eq!(&meta[10..12], &[0; 2], "reserved");
        let (hash, base, salt) = (&meta[12..44], &meta[44..56], &meta[56..88]);
        assert_eq!(&base[7..], &[0; 5], "unused nonce base bytes");
        assert!((1..=block_size).contains(&plain_size));
        assert_eq!(plain_size as usize, entry_plain);
        assert!((1..=plain_size as usize).contains(&stored_size));
        match compression {
            0 => assert_eq!((shift, stored_size), (14, plain_size as usize)),
            1 | 2 => assert_eq!(shift, 0),
            other => panic!("compression {other}"),
        }
        let seg_len = if shift == 0 { stored_size } else { 1 << shift };
        let count = stored_size.div_ceil(seg_len);
        assert_eq!(len, 140 + stored_size + 16 * count, "payload_len");

        let info = [
            b"qeltrix v2 cdk".as_slice(),
            &cid[..],
            &(i as u64).to_le_bytes(),
            hash,
        ]
        .concat();
        let cdk = hkdf(&mk, salt, &info);
        let mut stored = Vec::new();
        let mut segments = Vec::new();
        let mut at = 140;
        for j in 0..count {
            let this = seg_len.min(stored_size - j * seg_len);
            let last = u8::from(j + 1 == count);
            let nonce = [&base[..7], &(j as u32).to_be_bytes(), &[last]].concat();
            let aad = [
                &cid[..],
                &(i as u64).to_le_bytes(),
                &(j as u32).to_le_bytes(),
                &[last],
                &plain_size.to_le_bytes(),
                &[compression],
            ]
            .concat();
            let sealed = &block[at..at + this + 16];
            // The last flag is bound: the same segment under the other flag does not open.
            let flipped = [&nonce[..11], &[last ^ 1]].concat();
            let flipped_aad = [&aad[..28], &[last ^ 1], &aad[29..]].concat();
            assert!(aes_try_open(&cdk, &flipped, &flipped_aad, sealed).is_none());
            stored.extend_from_slice(&aes_open(&cdk, &nonce, &aad, sealed));
            segments.push(this);
            at += this + 16;
        }
        assert_eq!(at, len);
        let data = match compression {
            0 => stored,
            2 => {
                assert_eq!(&stored[0..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
                assert_eq!(stored[4] & 0x07, 0, "no checksum, no dictionary id");
                zstd::bulk::decompress(&stored, plain_size as usize).expect("one zstd frame")
            }
            other => panic!("the vector has no compression {other}"),
        };
        assert_eq!(data.len(), plain_size as usize);
        assert_eq!(&blake3(&[&data[..]]), hash, "content hash of block {i}");
        plain.extend_from_slice(&data);
        blocks.push(BlockV2 {
            compression,
            segments,
            len,
        });
    }
    assert_eq!(next, foot_off, "the last block ends at the footer");
    assert_eq!(plain.len(), original_size);

    // The record, and the root over the block hashes and the record.
    let record = &footer[72 + 180 * n..72 + 180 * n + r];
    let mut root_input = b"qeltrix v2 root".to_vec();
    root_input.extend_from_slice(&(n as u64).to_le_bytes());
    for h in &hashes {
        root_input.extend_from_slice(h);
    }
    root_input.extend_from_slice(&(r as u32).to_le_bytes());
    root_input.extend_from_slice(record);
    let computed_root = blake3(&[&root_input[..]]);
    assert_eq!(&computed_root[..], root, "root");

    let record = (r > 0).then(|| {
        let key = hkdf(&mk, &cid, b"qeltrix v2 file record key");
        let aad = [&cid[..], b"file record"].concat();
        let p = aes_open(&key, &record[..12], &aad, &record[12..]);
        let name_len = u16le(&p, 0) as usize;
        assert_eq!(p.len(), 2 + name_len + 4 + 8 + 4);
        let at = 2 + name_len;
        RecordV2 {
            name: p[2..at].to_vec(),
            mode: u32le(&p, at),
            mtime_sec: u64le(&p, at + 4) as i64,
            mtime_nsec: u32le(&p, at + 12),
        }
    });
    (
        Opened {
            container_id: cid,
            data_key: mk,
            plain,
        },
        blocks,
        computed_root,
        record,
    )
}

#[test]
fn independent_reader_decrypts_the_vector() {
    let opened = read_v1(&vector_container());
    assert_eq!(hex::encode(&opened.container_id), EXPECTED_CONTAINER_ID);
    assert_eq!(hex::encode(opened.data_key), EXPECTED_DATA_KEY);
    assert_eq!(opened.plain, plaintext());
}

#[test]
fn independent_reader_decrypts_the_v2_vector() {
    let c = vector_container_v2();
    let (opened, blocks, root, record) = read_v2(&c, BLOCK_SIZE_V2);
    assert_eq!(hex::encode(&opened.container_id), EXPECTED_V2_CONTAINER_ID);
    assert_eq!(hex::encode(opened.data_key), EXPECTED_V2_DATA_KEY);
    assert_eq!(hex::encode(root), EXPECTED_V2_ROOT);
    assert_eq!(
        blocks,
        [
            BlockV2 {
                compression: 0,
                segments: vec![16384, 4096],
                len: EXPECTED_V2_BLOCK_LENS[0],
            },
            BlockV2 {
                compression: 2,
                segments: vec![EXPECTED_V2_BLOCK_LENS[1] - 140 - 16],
                len: EXPECTED_V2_BLOCK_LENS[1],
            },
        ]
    );
    let m = file_meta_v2();
    assert_eq!(
        record,
        Some(RecordV2 {
            name: m.name,
            mode: m.mode,
            mtime_sec: m.mtime_sec,
            mtime_nsec: m.mtime_nsec,
        })
    );
    assert_eq!(opened.plain, plaintext_v2());
}

/// The independent reader is not a rubber stamp: the published containers, one bit flipped in
/// any structure it checks, stop it.
#[test]
fn independent_reader_refuses_a_flipped_bit() {
    let v1 = vector_container();
    let v2 = vector_container_v2();
    let t = v2.len() - 32;
    let foot = u64le(&v2, t + 8) as usize;
    let record = foot + 72 + 2 * 180;
    for (c, at, what) in [
        (&v1, 4096 + 140 + 100, "v1 payload"),
        (&v1, v1.len() - 40, "v1 footer MAC"),
        (&v2, 4096 + 140 + 16384 + 16 + 5, "v2 second segment"),
        (&v2, 4096 + 30, "v2 sealed metadata"),
        (&v2, foot + 30, "v2 root"),
        (&v2, foot + 72 + 40, "v2 block hash"),
        (&v2, record + 20, "v2 file record"),
    ] {
        let mut bad = c.clone();
        bad[at] ^= 0x01;
        let r = std::panic::catch_unwind(|| {
            if u16le(&bad, 8) == 1 {
                read_v1(&bad);
            } else {
                read_v2(&bad, BLOCK_SIZE_V2);
            }
        });
        assert!(r.is_err(), "{what}: a flipped bit at {at} went unnoticed");
    }
}

/// The current commit record of a version-3 or -4 header (docs/FORMAT.md, "Commit record"):
/// records A (72) and B (136): magic, generation, footer offset and size, reserved, then the
/// first 24 bytes of BLAKE3 over bytes 0..40; odd generations in A, even in B. Returns
/// (generation, footer offset, footer size).
fn current_record(c: &[u8]) -> (u64, usize, usize) {
    let record = |at: usize| {
        let r = &c[at..at + 64];
        let valid = &r[0..8] == b"QLTXCMT3"
            && r[40..64] == blake3(&[&r[0..40]])[..24]
            && r[32..40] == [0; 8]
            && u64le(r, 8) >= 1
            && (u64le(r, 8) % 2 == 1) == (at == 72);
        valid.then(|| (u64le(r, 8), u64le(r, 16) as usize, u64le(r, 24) as usize))
    };
    match (record(72), record(136)) {
        (Some(a), Some(b)) => {
            if b.0 > a.0 {
                b
            } else {
                a
            }
        }
        (Some(r), None) | (None, Some(r)) => r,
        (None, None) => panic!("no valid commit record"),
    }
}

/// A version-3 footer (`QLTXFOT3`) of generation `generation` at `foot_off`, with the trailer
/// after it, its MAC and root checked, and every block it names opened as a v2 block. Returns
/// the plaintext.
fn read_v3_footer(c: &[u8], mk: &[u8; 32], generation: u64, foot_off: usize, foot_len: usize) -> Vec<u8> {
    let block_size = u32le(c, 16) as usize;
    let cid = c[56..72].to_vec();
    // The trailer right after the footer names it too.
    let t = foot_off + foot_len;
    assert!(t + 32 <= c.len());
    assert_eq!(&c[t..t + 8], b"QLTXTRLR");
    assert_eq!(&c[t + 24..t + 32], b"QLTXEND\0");
    assert_eq!(
        (u64le(c, t + 8) as usize, u64le(c, t + 16) as usize),
        (foot_off, foot_len)
    );

    // The footer: v2's MAC key; the header's version and the magic are under the MAC.
    let footer = &c[foot_off..foot_off + foot_len];
    check_mac(c, mk, &cid, footer, b"qeltrix v2 footer mac key");
    assert_eq!(&footer[0..8], b"QLTXFOT3");
    let n = u64le(footer, 8) as usize;
    let original_size = u64le(footer, 16) as usize;
    let r = u32le(footer, 56) as usize;
    assert_eq!(&footer[60..64], &[0; 4], "reserved");
    assert_eq!(
        u64le(footer, 64),
        generation,
        "the footer's generation is the record's"
    );
    assert_eq!(foot_len, 72 + 188 * n + r + 32);

    let mut plain = Vec::new();
    let mut spans = Vec::new();
    let mut root_input = b"qeltrix v3 root".to_vec();
    root_input.extend_from_slice(&generation.to_le_bytes());
    root_input.extend_from_slice(&(n as u64).to_le_bytes());
    for i in 0..n {
        let e = &footer[72 + 188 * i..72 + 188 * (i + 1)];
        let (off, len) = (u64le(e, 0) as usize, u64le(e, 8) as usize);
        assert_eq!(u64le(e, 16) as usize, plain.len(), "plaintext contiguous");
        let block_generation = u64le(e, 180);
        assert!((1..=generation).contains(&block_generation));
        assert!(
            off >= 4096 && off + len <= foot_off,
            "block {i} lies before the footer"
        );
        spans.push((off, off + len));
        let block = &c[off..off + len];
        assert_eq!(&e[32..64], &blake3(&[block]), "block hash of block {i}");
        assert_eq!(&e[64..180], &block[24..140], "metadata copy of block {i}");
        root_input.extend_from_slice(&block_generation.to_le_bytes());
        root_input.extend_from_slice(&e[32..64]);

        // A v2 block: raw segments of 16 KiB (these files have no compressed block).
        let meta = open_meta(mk, &cid, block, i);
        let plain_size = u32le(&meta, 0) as usize;
        assert_eq!(plain_size, u64le(e, 24) as usize);
        assert!(plain_size <= block_size);
        assert_eq!((meta[8], meta[9]), (0, 14), "raw, 16 KiB segments");
        let (hash, base, salt) = (&meta[12..44], &meta[44..56], &meta[56..88]);
        let info = [
            b"qeltrix v2 cdk".as_slice(),
            &cid[..],
            &(i as u64).to_le_bytes(),
            hash,
        ]
        .concat();
        let cdk = hkdf(mk, salt, &info);
        let count = plain_size.div_ceil(1 << 14);
        let (mut data, mut at) = (Vec::new(), 140);
        for j in 0..count {
            let this = (1usize << 14).min(plain_size - j * (1 << 14));
            let last = u8::from(j + 1 == count);
            let nonce = [&base[..7], &(j as u32).to_be_bytes(), &[last]].concat();
            let aad = [
                &cid[..],
                &(i as u64).to_le_bytes(),
                &(j as u32).to_le_bytes(),
                &[last],
                &(plain_size as u32).to_le_bytes(),
                &[0u8],
            ]
            .concat();
            data.extend_from_slice(&aes_open(&cdk, &nonce, &aad, &block[at..at + this + 16]));
            at += this + 16;
        }
        assert_eq!(at, len);
        assert_eq!(&blake3(&[&data[..]]), hash, "content hash of block {i}");
        plain.extend_from_slice(&data);
    }
    spans.sort_unstable();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "no two blocks overlap"
    );
    assert_eq!(plain.len(), original_size);
    let record = &footer[72 + 188 * n..72 + 188 * n + r];
    root_input.extend_from_slice(&(r as u32).to_le_bytes());
    root_input.extend_from_slice(record);
    assert_eq!(&blake3(&[&root_input[..]]), &footer[24..56], "v3 root");
    plain
}

/// The frozen test data folder and its key file.
fn frozen(name: &str) -> (Vec<u8>, [u8; 32], std::path::PathBuf) {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let c = std::fs::read(data.join("good").join(name)).unwrap();
    let hex_key = std::fs::read_to_string(data.join("keys/keyfile.hex")).unwrap();
    let key_file: [u8; 32] = hex::decode(hex_key.trim()).unwrap().try_into().unwrap();
    (c, key_file, data.join("good").join(name))
}

/// What the library reads from the container at `path`.
fn library_plaintext(path: &std::path::Path, key_file: [u8; 32]) -> Vec<u8> {
    let key = qeltrix::Key::KeyFile(KeyFileKey::from_bytes(key_file));
    let lib = qeltrix::Container::open(path, &key).unwrap();
    let mut want = vec![0u8; lib.len() as usize];
    assert_eq!(lib.read_at(0, &mut want).unwrap(), want.len());
    want
}

/// The header checks versions 3 and 4 share.
fn check_v3_header(c: &[u8], version: u16) {
    assert_eq!(&c[0..8], b"QELTRIX\0");
    assert_eq!(u16le(c, 8), version);
    assert_eq!(u16le(c, 10) & 0x02, 0, "no streaming flag");
    assert_eq!(&c[24..56], &[0; 32], "no totals in versions 3 and 4");
    assert!(
        c[200..1024].iter().all(|&b| b == 0),
        "reserved after the commit records"
    );
}

/// Format 3 (docs/FORMAT.md, "Version 3"), read from the page alone: the frozen
/// `tests/data/good/v3-edited.qltx` (four generations appended in place). Header without
/// totals, the commit records and the current one, the footer and trailer it names, the v3
/// footer (generation, 188-byte entries), its MAC and root, and every current block opened as
/// a v2 block. The plaintext must be what the library reads.
#[test]
fn independent_reader_decrypts_a_v3_container() {
    let (c, key_file, path) = frozen("v3-edited.qltx");
    check_v3_header(&c, 3);
    let (generation, foot_off, foot_len) = current_record(&c);
    assert_eq!(generation, 4, "the frozen file's last generation");
    let mk = unwrap_key_file_slot(&c, &c[56..72], &key_file);
    let plain = read_v3_footer(&c, &mk, generation, foot_off, foot_len);
    assert!(
        plain == library_plaintext(&path, key_file),
        "the independent reader and the library agree"
    );
}

/// Format 4 (docs/FORMAT.md, "Version 4"), read from the page alone: the frozen
/// `tests/data/good/v4-patched.qltx` (a base and three patches). The chain walked from the
/// commit record back to the base footer (each link's prev_mac, generation and magic), the
/// base read as a version-3 footer, then each patch footer checked (layout, MAC) and its units
/// opened (hash, AEAD under the patch's unit key) and laid over the plaintext, oldest first.
#[test]
fn independent_reader_decrypts_a_v4_container() {
    let (c, key_file, path) = frozen("v4-patched.qltx");
    check_v3_header(&c, 4);
    let cid = c[56..72].to_vec();
    let mk = unwrap_key_file_slot(&c, &cid, &key_file);
    let (mut generation, mut off, mut len) = current_record(&c);
    assert_eq!(generation, 4, "the frozen file's last generation");

    // The walk, newest first: (generation, offset, size) of each patch footer.
    let mut patches = Vec::new();
    let mut successor_prev_mac: Option<Vec<u8>> = None;
    while &c[off..off + 8] == b"QLTXPAT4" {
        let f = &c[off..off + len];
        if let Some(mac) = &successor_prev_mac {
            assert_eq!(&f[len - 32..], &mac[..], "prev_mac names this footer");
        }
        assert_eq!(u64le(f, 8), generation);
        patches.push((generation, off, len));
        successor_prev_mac = Some(f[32..64].to_vec());
        (generation, off, len) = (generation - 1, u64le(f, 16) as usize, u64le(f, 24) as usize);
        assert!(
            off + len + 32 <= patches.last().unwrap().1,
            "the predecessor lies before"
        );
    }
    assert_eq!(patches.len(), 3, "three patches over the base");
    assert_eq!(&c[off + len - 32..off + len], &successor_prev_mac.unwrap()[..]);
    let base_generation = generation;
    let mut plain = read_v3_footer(&c, &mk, base_generation, off, len);
    let size = plain.len() as u64;

    let mac_key = hkdf(&mk, &cid, b"qeltrix v2 footer mac key");
    let mut mode_mtime = None;
    for &(g, off, len) in patches.iter().rev() {
        let f = &c[off..off + len];
        // The MAC: as a footer's, over header bytes 0..24, the id and everything before it.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&mac_key).unwrap();
        mac.update(&c[0..24]);
        mac.update(&cid);
        mac.update(&f[..len - 32]);
        mac.verify_slice(&f[len - 32..]).expect("patch footer MAC");
        assert_eq!(u64le(f, 64), base_generation);
        let m = u32le(f, 72) as usize;
        assert_eq!(len, 144 + 56 * m + 32);
        let (mode, nsec, sec) = (u32le(f, 76), u32le(f, 124), u64le(f, 128) as i64);
        assert!(mode <= 0o7777 && nsec < 1_000_000_000);
        assert_eq!(&f[136..144], &[0; 8], "reserved");
        let (salt, nonce_base) = (&f[80..112], &f[112..124]);
        assert_eq!(&nonce_base[7..], &[0; 5]);
        mode_mtime = Some((mode, sec, nsec));
        let info = [b"qeltrix v4 unit key".as_slice(), &cid[..], &g.to_le_bytes()].concat();
        let uk = hkdf(&mk, salt, &info);
        let mut last_plain = None;
        for k in 0..m {
            let e = &f[144 + 56 * k..144 + 56 * (k + 1)];
            let (plain_offset, at, ulen) = (u64le(e, 0), u64le(e, 8) as usize, u32le(e, 16) as usize);
            assert_eq!(plain_offset % 4096, 0);
            assert!(last_plain.is_none_or(|p| plain_offset > p), "ascending");
            last_plain = Some(plain_offset);
            assert!((1..=4096).contains(&ulen));
            assert!(
                ulen == 4096 || plain_offset + ulen as u64 == size,
                "only the last unit is short"
            );
            assert_eq!(&e[20..24], &[0; 4]);
            assert!(at + ulen + 16 <= off, "the unit lies before its footer");
            let sealed = &c[at..at + ulen + 16];
            assert_eq!(&e[24..56], &blake3(&[sealed]), "unit hash");
            let nonce = [&nonce_base[..7], &(k as u32).to_be_bytes(), &[0u8]].concat();
            let aad = [
                &cid[..],
                &g.to_le_bytes(),
                &(k as u32).to_le_bytes(),
                &plain_offset.to_le_bytes(),
                &(ulen as u32).to_le_bytes(),
            ]
            .concat();
            let page = aes_open(&uk, &nonce, &aad, sealed);
            plain[plain_offset as usize..plain_offset as usize + ulen].copy_from_slice(&page);
        }
    }
    assert_eq!(
        mode_mtime,
        Some((0o600, 1_700_000_013, 0)),
        "the newest patch's mode and mtime"
    );
    assert!(
        plain == library_plaintext(&path, key_file),
        "the independent reader and the library agree"
    );
}

/// The signed message of `docs/FORMAT.md`, "Signatures", built from a container's bytes with
/// nothing but the page: the current footer is the trailer's (v2) or the commit record's (v3).
fn independent_signed_message(file: &[u8]) -> (Vec<u8>, [u8; 32], [u8; 64]) {
    let le = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    let record = &file[896..1024];
    assert_eq!(&record[0..8], b"QLTXSIG1");
    assert_eq!(record[8], 1, "Ed25519");
    assert!(record[9..16].iter().chain(&record[112..128]).all(|&b| b == 0));
    let (footer_offset, footer_size) = match u16::from_le_bytes([file[8], file[9]]) {
        2 => {
            let t = file.len() - 32;
            (le(t + 8), le(t + 16))
        }
        3 => {
            // The valid commit record with the higher generation (both are valid here).
            let (a, b) = (le(72 + 8), le(136 + 8));
            let at = if a > b { 72 } else { 136 };
            (le(at + 16), le(at + 24))
        }
        v => panic!("version {v} is not signed"),
    };
    let footer = &file[footer_offset as usize..(footer_offset + footer_size) as usize];
    let public: [u8; 32] = record[16..48].try_into().unwrap();
    let mut m = Vec::new();
    m.extend_from_slice(b"qeltrix signature v1");
    m.extend_from_slice(&file[0..24]);
    m.extend_from_slice(&file[56..72]);
    m.push(1);
    m.extend_from_slice(&public);
    m.extend_from_slice(&footer_offset.to_le_bytes());
    m.extend_from_slice(&footer_size.to_le_bytes());
    m.extend_from_slice(&footer[24..56]); // the root (v2 and v3 footers alike)
    m.extend_from_slice(blake3::hash(footer).as_bytes());
    assert_eq!(m.len(), 173);
    (m, public, record[48..112].try_into().unwrap())
}

/// The frozen signed containers (`tests/data/good/v2-signed.qltx`, `v3-signed.qltx`) carry valid
/// Ed25519 signatures by the documented key, checked from `docs/FORMAT.md` alone.
#[test]
fn independent_check_of_signed_containers() {
    use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
    let expected = SigningKey::from_bytes(&[0x3d; 32]).verifying_key();
    assert_eq!(
        hex::encode(expected.to_bytes()),
        "70df9e2279adbec6d12bf2921184c9222eb24ed852005bf640139f52e59cd9ae"
    );
    for name in ["v2-signed.qltx", "v3-signed.qltx"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/good")
            .join(name);
        let file = std::fs::read(&path).unwrap();
        let (message, public, signature) = independent_signed_message(&file);
        assert_eq!(public, expected.to_bytes(), "{name}: signer");
        let key = VerifyingKey::from_bytes(&public).unwrap();
        key.verify_strict(&message, &Signature::from_bytes(&signature))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // One flipped bit of the footer hash input fails it.
        let mut other = message.clone();
        other[172] ^= 1;
        assert!(key
            .verify_strict(&other, &Signature::from_bytes(&signature))
            .is_err());
    }
}
