//! Shared helpers for the integration tests: deterministic test data, keys, packing into memory,
//! opening and unpacking, byte-range helpers for tampering, and a `qeltrix` command with a clean
//! environment. Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use qeltrix::crypto::{KeyFileKey, Passphrase};
use qeltrix::format::{
    Footer, Header, Trailer, FOOTER_ENTRY_LEN, FOOTER_HEAD_LEN, HEADER_LEN, SLOT_AREA_A, SLOT_AREA_LEN,
    TRAILER_LEN,
};
use qeltrix::{CipherId, CompressMode, Container, ContainerInfo, Key, PackOptions, ReadAt, StreamPacker};
use std::io::{Cursor, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;
/// PBKDF2 rounds for passphrase slots in tests: enough to exercise the KDF, cheap to run.
pub const TEST_KDF_ITERATIONS: u32 = 1000;
/// The passphrase used wherever a test needs one.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// SplitMix64: a tiny deterministic generator, so every test input is reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Log-like text that deflate shrinks several times over, different for every seed.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "block", "cipher", "footer", "index", "seek", "stream", "vault", "nonce", "salt", "trailer",
        "header", "offset",
    ];
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while out.len() < len {
        line += 1;
        out.extend_from_slice(format!("{line:08} ").as_bytes());
        for _ in 0..6 {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

/// Which kind of plaintext a test packs.
#[derive(Clone, Copy, Debug)]
pub enum DataKind {
    Text,
    Random,
    /// Alternating 3000-byte runs of text and random bytes, so blocks differ in compressibility.
    Mixed,
}

pub fn data(kind: DataKind, len: usize, seed: u64) -> Vec<u8> {
    match kind {
        DataKind::Text => text_bytes(len, seed),
        DataKind::Random => random_bytes(len, seed),
        DataKind::Mixed => {
            let (text, random) = (text_bytes(len, seed), random_bytes(len, seed + 1));
            (0..len)
                .map(|i| if (i / 3000) % 2 == 0 { text[i] } else { random[i] })
                .collect()
        }
    }
}

/// A key-file key whose 32 bytes are all `byte`.
pub fn key_file_key(byte: u8) -> Key {
    Key::KeyFile(KeyFileKey::from_bytes([byte; 32]))
}

pub fn passphrase_key(p: &str) -> Key {
    Key::Passphrase(Passphrase::new(p))
}

/// Pack options for tests: two workers and a cheap KDF.
pub fn opts(cipher: CipherId, block_size: usize, compress: CompressMode) -> PackOptions {
    PackOptions {
        cipher,
        block_size: block_size as u32,
        compress,
        workers: 2,
        kdf_iterations: TEST_KDF_ITERATIONS,
        ..PackOptions::default()
    }
}

/// Packs `plain` through `StreamPacker::new_seekable` into memory (header totals patched).
pub fn pack_seekable(plain: &[u8], keys: &[Key], opts: &PackOptions) -> Vec<u8> {
    let mut packer = StreamPacker::new_seekable(Cursor::new(Vec::new()), keys, opts).expect("start packer");
    packer.write_all(plain).expect("write plaintext");
    let (out, summary) = packer.finish().expect("finish");
    assert_eq!(summary.original_size, plain.len() as u64);
    assert_eq!(summary.container_size, out.get_ref().len() as u64);
    out.into_inner()
}

/// Packs `plain` through `StreamPacker::new` (a non-seekable stream: header totals stay zero).
pub fn pack_stream(plain: &[u8], keys: &[Key], opts: &PackOptions) -> Vec<u8> {
    let mut packer = StreamPacker::new(Vec::new(), keys, opts).expect("start packer");
    let n = packer.pack_from(&mut &plain[..]).expect("pack");
    assert_eq!(n, plain.len() as u64);
    let (out, summary) = packer.finish().expect("finish");
    assert_eq!(summary.container_size, out.len() as u64);
    out
}

/// Decrypts a whole container with `verify` on, one worker.
pub fn unpack_all<S: ReadAt + 'static>(c: Container<S>) -> qeltrix::Result<Vec<u8>> {
    let mut out = Vec::new();
    let n = Arc::new(c).unpack_to(&mut out, true, 1, &|_| {})?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

/// Opens `bytes` with `key` and decrypts all of it.
pub fn open_and_unpack(bytes: Vec<u8>, key: &Key) -> qeltrix::Result<Vec<u8>> {
    unpack_all(Container::from_source(bytes, key)?)
}

/// The byte ranges of a container's parts, found through its (unauthenticated) structure.
#[derive(Clone, Debug)]
pub struct Layout {
    pub len: usize,
    pub header_fixed: Range<usize>,
    pub slot_area_a: Range<usize>,
    pub blocks: Vec<Range<usize>>,
    pub footer: Range<usize>,
    pub trailer: Range<usize>,
}

pub fn layout(bytes: &[u8]) -> Layout {
    let info = ContainerInfo::read(&bytes.to_vec()).expect("a valid container");
    let footer_at = info.trailer.footer_offset as usize;
    Layout {
        len: bytes.len(),
        header_fixed: 0..SLOT_AREA_A,
        slot_area_a: SLOT_AREA_A..SLOT_AREA_A + SLOT_AREA_LEN,
        blocks: info
            .footer
            .entries
            .iter()
            .map(|e| e.offset as usize..(e.offset + e.len) as usize)
            .collect(),
        footer: footer_at..footer_at + info.trailer.footer_size as usize,
        trailer: bytes.len() - TRAILER_LEN..bytes.len(),
    }
}

/// Rewrites a container's footer, trailer and header totals for a new list of entries, keeping
/// the old (now wrong) MAC: what an attacker without the key can do.
pub fn reindex_without_key(bytes: &[u8], keep_blocks: usize) -> Vec<u8> {
    let info = ContainerInfo::read(&bytes.to_vec()).expect("a valid container");
    let entries = &info.footer.entries[..keep_blocks];
    let blocks_end = entries.last().map_or(HEADER_LEN as u64, |e| e.offset + e.len);
    let original_size = entries.last().map_or(0, |e| e.plain_offset + e.plain_size);
    let mut footer = Footer::encode_unsigned(original_size, entries);
    footer.extend_from_slice(&info.footer.mac);
    assert_eq!(
        footer.len(),
        FOOTER_HEAD_LEN + entries.len() * FOOTER_ENTRY_LEN + 32
    );
    let trailer = Trailer {
        footer_offset: blocks_end,
        footer_size: footer.len() as u64,
    };
    let mut header: Header = info.header.clone();
    header.total_blocks = entries.len() as u64;
    header.original_size = original_size;
    header.footer_offset = trailer.footer_offset;
    header.footer_size = trailer.footer_size;
    let mut out = header.encode();
    out.extend_from_slice(&bytes[HEADER_LEN..blocks_end as usize]);
    out.extend_from_slice(&footer);
    out.extend_from_slice(&trailer.encode());
    out
}

/// The `qeltrix` binary with no passphrase in its environment.
pub fn qeltrix() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("qeltrix").expect("the qeltrix binary is built");
    cmd.env_remove(qeltrix::cli::PASSPHRASE_ENV);
    cmd
}

/// Names in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes a key file of 64 hex digits (as `qeltrix keygen` does) for the key `key_file_key(byte)`.
pub fn write_key_file(path: &Path, byte: u8) {
    std::fs::write(path, format!("{}\n", hex::encode([byte; 32]))).expect("write key file");
}

pub fn cipher_name(c: CipherId) -> &'static str {
    match c {
        CipherId::Aes256Gcm => "aes",
        CipherId::ChaCha20Poly1305 => "chacha",
    }
}

pub fn compress_name(c: CompressMode) -> &'static str {
    match c {
        CompressMode::Auto => "auto",
        CompressMode::Never => "never",
        CompressMode::Always => "always",
    }
}
