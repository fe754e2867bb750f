//! Containers in memory: keys, pack options, packing and unpacking, and the byte ranges of a
//! container's parts for tampering.

use qeltrix::crypto::{KeyFileKey, Passphrase};
use qeltrix::format::{
    Footer, FooterV2, Header, Trailer, FOOTER_ENTRY_LEN, FOOTER_HEAD_LEN, HEADER_LEN, SLOT_AREA_A,
    SLOT_AREA_LEN, TRAILER_LEN,
};
use qeltrix::{CipherId, CompressMode, Container, ContainerInfo, Key, PackOptions, ReadAt, StreamPacker};
use std::io::{Cursor, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// PBKDF2 rounds for passphrase slots in tests: enough to exercise the KDF, cheap to run.
pub const TEST_KDF_ITERATIONS: u32 = 1000;
/// The passphrase used wherever a test needs one.
pub const PASSPHRASE: &str = "correct horse battery staple";

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

/// `o` for writing format `version`: v1 knows only deflate, so a v1 container deflates.
pub fn in_version(mut o: PackOptions, version: qeltrix::format::FormatVersion) -> PackOptions {
    o.format = version;
    if version == qeltrix::format::FormatVersion::V1 {
        o.codec = qeltrix::compress::Codec::Deflate;
    }
    o
}

/// The recipients the keys open (packing takes recipients; opening takes a key).
pub fn recipients(keys: &[Key]) -> Vec<qeltrix::Recipient> {
    keys.iter()
        .map(|k| qeltrix::Recipient::try_from(k).expect("a simple key"))
        .collect()
}

/// Packs `plain` through `StreamPacker::new_seekable` into memory (header totals patched).
pub fn pack_seekable(plain: &[u8], keys: &[Key], opts: &PackOptions) -> Vec<u8> {
    let mut packer =
        StreamPacker::new_seekable(Cursor::new(Vec::new()), &recipients(keys), opts).expect("start packer");
    packer.write_all(plain).expect("write plaintext");
    let (out, summary) = packer.finish().expect("finish");
    assert_eq!(summary.original_size, plain.len() as u64);
    assert_eq!(summary.container_size, out.get_ref().len() as u64);
    out.into_inner()
}

/// Packs `plain` through `StreamPacker::new` (a non-seekable stream: header totals stay zero).
pub fn pack_stream(plain: &[u8], keys: &[Key], opts: &PackOptions) -> Vec<u8> {
    let mut packer = StreamPacker::new(Vec::new(), &recipients(keys), opts).expect("start packer");
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
/// the old (now wrong) MAC: what an attacker without the key can do. For a v2 container the root
/// is recomputed over the kept block hashes (it needs no key), so only the MAC can tell.
pub fn reindex_without_key(bytes: &[u8], keep_blocks: usize) -> Vec<u8> {
    let info = ContainerInfo::read(&bytes.to_vec()).expect("a valid container");
    let entries = &info.footer.entries[..keep_blocks];
    let blocks_end = entries.last().map_or(HEADER_LEN as u64, |e| e.offset + e.len);
    let original_size = entries.last().map_or(0, |e| e.plain_offset + e.plain_size);
    let footer = match &info.footer_v2 {
        None => {
            let mut footer = Footer::encode_unsigned(original_size, entries);
            footer.extend_from_slice(&info.footer.mac);
            assert_eq!(
                footer.len(),
                FOOTER_HEAD_LEN + entries.len() * FOOTER_ENTRY_LEN + 32
            );
            footer
        }
        Some(v2) => {
            let mut v2: FooterV2 = v2.clone();
            v2.entries.truncate(keep_blocks);
            v2.original_size = original_size;
            v2.root = v2_root(&v2);
            v2.encode()
        }
    };
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

/// The root a v2 footer's entries and file record give, computed as `docs/FORMAT-V2-DESIGN.md`
/// states it (no key needed): BLAKE3("qeltrix v2 root" ‖ u64(n) ‖ block hashes ‖ u32(r) ‖
/// record).
pub fn v2_root(footer: &FooterV2) -> [u8; 32] {
    let record = footer.file_record.as_deref().unwrap_or(&[]);
    let mut h = blake3::Hasher::new();
    h.update(b"qeltrix v2 root");
    h.update(&(footer.entries.len() as u64).to_le_bytes());
    for e in &footer.entries {
        h.update(&e.block_hash);
    }
    h.update(&(record.len() as u32).to_le_bytes());
    h.update(record);
    *h.finalize().as_bytes()
}

/// A complete container of `data` under key file `key_file_key(key_fill)`, with default options
/// and `block_size`, packed as a stream.
pub fn container_of(data: &[u8], key_fill: u8, block_size: u32) -> Vec<u8> {
    let opts = PackOptions {
        block_size,
        ..Default::default()
    };
    pack_stream(data, &[key_file_key(key_fill)], &opts)
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
