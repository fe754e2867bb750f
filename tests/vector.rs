//! The format's test vector (docs/FORMAT.md, "Test vector"), checked two ways:
//! 1. the writer, with injected deterministic randomness, produces exactly the published bytes;
//! 2. an independent reader written here from docs/FORMAT.md alone (offsets, labels, AADs; only
//!    the primitive crates, none of qeltrix's format or crypto code) decrypts them.
//!
//! If either fails, the spec and the code disagree.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use qeltrix::crypto::{KeyFileKey, SeededEntropy};
use qeltrix::{CompressMode, PackOptions, Recipient, StreamPacker};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use std::sync::Arc;

const SEED: [u8; 32] = [0x11; 32];
const KEY_FILE: [u8; 32] = [0x42; 32];
const EXPECTED_SHA256: &str = "67ca86fe7ab486bd9f541c69858179406995f0d9a800591269b3acdf331e7347";
const EXPECTED_LEN: usize = 9560;
const EXPECTED_CONTAINER_ID: &str = "b11bb30826e30b9ba68438976b721d50";
const EXPECTED_DATA_KEY: &str = "beded093c917a61d0a7de2e3e658b0a3dd3858cf4cd775f4691e20323d2cfe33";

fn plaintext() -> Vec<u8> {
    (0..5000u32).map(|i| (i % 251) as u8).collect()
}

fn vector_container() -> Vec<u8> {
    let opts = PackOptions {
        block_size: 4096,
        compress: CompressMode::Never,
        entropy: Arc::new(SeededEntropy(SEED)),
        ..PackOptions::default()
    };
    let key = Recipient::KeyFile(KeyFileKey::from_bytes(KEY_FILE));
    let mut packer = StreamPacker::new_seekable(std::io::Cursor::new(Vec::new()), &[key], &opts).unwrap();
    std::io::Write::write_all(&mut packer, &plaintext()).unwrap();
    packer.finish().unwrap().0.into_inner()
}

#[test]
fn writer_reproduces_the_published_vector() {
    let c = vector_container();
    assert_eq!(c.len(), EXPECTED_LEN);
    assert_eq!(hex::encode(Sha256::digest(&c)), EXPECTED_SHA256);
}

// ---- An independent reader, from docs/FORMAT.md ----

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
fn aes_open(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = sealed.to_vec();
    let n = Nonce::try_assume_unique_for_key(nonce).unwrap();
    let len = k
        .open_in_place(n, Aad::from(aad), &mut buf)
        .expect("authenticates")
        .len();
    buf.truncate(len);
    buf
}

#[test]
fn independent_reader_decrypts_the_vector() {
    let c = vector_container();
    // Header.
    assert_eq!(&c[0..8], b"QELTRIX\0");
    assert_eq!(u32le(&c, 16), 4096);
    let cid = &c[56..72];
    // Trailer -> footer.
    let t = c.len() - 32;
    assert_eq!(&c[t..t + 8], b"QLTXTRLR");
    let (foot_off, foot_len) = (u64le(&c, t + 8) as usize, u64le(&c, t + 16) as usize);
    assert_eq!(u64le(&c, 40) as usize, foot_off, "patched header agrees");
    // Key slot area A, slot 0: key file.
    let area = &c[1024..1024 + 1072];
    assert_eq!(&Sha256::digest(&area[..1040])[..], &area[1040..]);
    let slot = &area[16..16 + 128];
    assert_eq!(slot[0], 2, "key-file slot");
    let kek = hkdf(&KEY_FILE, &slot[8..40], b"qeltrix v1 key-file kek");
    let aad = [cid, &slot[0..52]].concat();
    let mk = aes_open(&kek, &slot[40..52], &aad, &slot[52..100]);
    assert_eq!(hex::encode(cid), EXPECTED_CONTAINER_ID);
    assert_eq!(hex::encode(&mk), EXPECTED_DATA_KEY);
    // Footer MAC.
    let mac_key = hkdf(&mk, cid, b"qeltrix v1 footer mac key");
    let footer = &c[foot_off..foot_off + foot_len];
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&mac_key).unwrap();
    mac.update(&c[0..24]);
    mac.update(cid);
    mac.update(&footer[..foot_len - 32]);
    mac.verify_slice(&footer[foot_len - 32..]).expect("footer MAC");
    assert_eq!(&footer[0..8], b"QLTXFOOT");
    let count = u64le(footer, 8) as usize;
    // Blocks.
    let meta_key = hkdf(&mk, cid, b"qeltrix v1 metadata key");
    let mut plain = Vec::new();
    for i in 0..count {
        let e = 24 + i * 32;
        let (off, len) = (u64le(footer, e) as usize, u64le(footer, e + 8) as usize);
        let block = &c[off..off + len];
        assert_eq!(&block[0..4], b"QBLK");
        assert_eq!(u64le(block, 8), i as u64);
        let meta_aad = [cid, &block[0..24]].concat();
        let meta = aes_open(&meta_key, &block[24..36], &meta_aad, &block[36..140]);
        let plain_size = u32le(&meta, 0);
        assert_eq!(meta[8], 0, "stored raw");
        let (hash, nonce, salt) = (&meta[12..44], &meta[44..56], &meta[56..88]);
        let info = [b"qeltrix v1 cdk".as_slice(), cid, &(i as u64).to_le_bytes(), hash].concat();
        let cdk = hkdf(&mk, salt, &info);
        let payload_aad = [cid, &(i as u64).to_le_bytes(), &plain_size.to_le_bytes(), &[0u8]].concat();
        let data = aes_open(&cdk, nonce, &payload_aad, &block[140..]);
        assert_eq!(&Sha256::digest(&data)[..], hash);
        plain.extend_from_slice(&data);
    }
    assert_eq!(plain, plaintext());
}
