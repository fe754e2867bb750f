//! The frozen corpus (after age's testkit): containers written once by an earlier build and checked
//! in under `tests/data/`, which every later build must read exactly as they were written. This is
//! the format-stability promise in test form: a container written by any released build opens in
//! every later one. `tests/vector.rs` pins what the writer produces today; this file pins what the
//! reader must keep accepting (and refusing) forever.
//!
//! Rules (see `tests/data/README.md`):
//! - The checked-in files are never regenerated or edited; their SHA-256 is pinned in [`PINNED`].
//!   If a change to the library makes one of these tests fail, the change breaks old containers.
//! - New files may be added (generate them with `regenerate_corpus`, which writes only files that
//!   do not exist yet and reports existing ones that it would now write differently).
//! - Every use of the library's API is in the first section below, so that a restructured crate
//!   needs only those few functions adapted, never the expectations.

mod common;

/// SplitMix64, the plaintexts' (and the range checks') only source of variety: the tests' common
/// generator, with its state set to the seed as the corpus was made (`Rng::from_state`).
use common::Rng;
use qeltrix::compress::Codec;
use qeltrix::crypto::{IdentityKey, KeyFileKey, Passphrase, RecipientKey, SeededEntropy, SignerKey};
use qeltrix::file_record::FileMeta;
use qeltrix::format::FormatVersion;
use qeltrix::sign::SignatureStatus;
use qeltrix::{
    keyring, CipherId, CompressMode, Container, ContainerInfo, Error, Key, PackOptions, Recipient,
    StreamPacker,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

// ================================================================================================
// The library API, all of it. Adapt these helpers (never the tables or the checks) if it moves.
// ================================================================================================

fn key_file_key(bytes: [u8; 32]) -> Key {
    Key::KeyFile(KeyFileKey::from_bytes(bytes))
}

fn passphrase_key(passphrase: &str) -> Key {
    Key::Passphrase(Passphrase::new(passphrase))
}

/// The key that opens a recipient slot: the identity (private key), from its file's text.
fn identity_key(identity_file_text: &str) -> Key {
    Key::Identity(IdentityKey::parse(identity_file_text).expect("identity file parses"))
}

/// The public key a recipient slot is made for (packing only: it opens nothing).
fn recipient_key(recipient: &str) -> Recipient {
    Recipient::X25519(recipient.parse::<RecipientKey>().expect("recipient parses"))
}

/// The Ed25519 signing key of a seed.
fn signer_key(seed: u8) -> SignerKey {
    SignerKey::from_seed([seed; 32])
}

/// The signer of a container's bytes when its signature is valid, `None` when it is unsigned,
/// an error when the signature fails.
fn signer_of(file: &[u8]) -> qeltrix::Result<Option<String>> {
    let file = file.to_vec();
    let info = ContainerInfo::read(&file)?;
    match qeltrix::sign::signature_status(&file, &info)? {
        SignatureStatus::Unsigned => Ok(None),
        SignatureStatus::Valid(k) => Ok(Some(k.to_string())),
        SignatureStatus::Invalid { reason, .. } => Err(Error::Signature(reason)),
    }
}

/// Signs the container file at `path` in place with the key of `seed`.
fn sign_in_place(path: &Path, seed: u8) -> qeltrix::Result<()> {
    qeltrix::sign::sign_in_place(path, &signer_key(seed)).map(drop)
}

/// What a key seals to, for packing.
fn sealing(key: Key) -> Recipient {
    Recipient::try_from(key).expect("a simple key")
}

/// The recipient (public key) of an identity file's identity, in its text form.
fn recipient_of(identity_file_text: &str) -> String {
    IdentityKey::parse(identity_file_text)
        .expect("identity file parses")
        .recipient()
        .to_string()
}

/// A new identity from a seed: its identity file's text.
fn new_identity_file_text(seed: [u8; 32]) -> String {
    IdentityKey::generate(&SeededEntropy(seed))
        .to_file_text()
        .to_string()
}

/// The vault key of the vault at `vault` (its `.qeltrix/keyring` unlocked with the passphrase).
fn unlock_vault(vault: &Path, passphrase: &str) -> qeltrix::Result<Key> {
    keyring::unlock(vault, &Passphrase::new(passphrase)).map(Key::Vault)
}

/// Initialises a vault at `vault` (writes its keyring) and returns its vault key.
fn init_vault(vault: &Path, passphrase: &str, iterations: u32, seed: [u8; 32]) -> Key {
    let key = keyring::init(
        vault,
        &Passphrase::new(passphrase),
        iterations,
        &SeededEntropy(seed),
    )
    .expect("vault initialises");
    Key::Vault(key)
}

/// The keyring file of the vault at `vault`.
fn keyring_file(vault: &Path) -> PathBuf {
    keyring::keyring_path(vault)
}

fn open(path: &Path, key: &Key) -> qeltrix::Result<Container> {
    Container::open(path, key)
}

/// The opened container's plaintext length and block count.
fn opened_size(c: &Container) -> (u64, u64) {
    (c.len(), c.block_count())
}

/// The whole plaintext, read twice: with `read_at` and with `seek_extract`; both must agree.
fn read_whole(c: &Container) -> qeltrix::Result<Vec<u8>> {
    let len = c.len() as usize;
    let mut buf = vec![0u8; len + 100];
    let n = c.read_at(0, &mut buf)?;
    assert_eq!(n, len, "read_at stops at the end of the plaintext");
    buf.truncate(n);
    let extracted = c.seek_extract(0, len as u64)?;
    assert!(extracted == buf, "seek_extract and read_at disagree");
    Ok(buf)
}

/// The plaintext range `offset..offset + len`, clipped at the end of the file.
fn read_range(c: &Container, offset: u64, len: u64) -> qeltrix::Result<Vec<u8>> {
    c.seek_extract(offset, len)
}

/// One block's plaintext, its SHA-256 checked too.
fn read_block_verified(c: &Container, index: u64) -> qeltrix::Result<Vec<u8>> {
    c.read_block(index, true)
}

/// The opened container's file record (format v2; `None` for v1 and for a stream), opened with
/// the key.
/// A file record as (name, mode, mtime seconds, mtime nanoseconds).
type RecordFields = (Vec<u8>, u32, i64, u32);

fn opened_record(c: &Container) -> qeltrix::Result<Option<RecordFields>> {
    Ok(c.file_meta()?
        .map(|m| (m.name, m.mode, m.mtime_sec, m.mtime_nsec)))
}

/// The keyless check of a v2 container (the core of `verify --no-key`): footer structure, root,
/// and every block's length, BLAKE3 hash, prefix and metadata copy, from the file's bytes alone.
fn verify_without_key(file: &[u8]) -> qeltrix::Result<()> {
    let le = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    let t = file.len() - 32;
    let (footer_offset, footer_size) = (le(t + 8) as usize, le(t + 16) as usize);
    let block_size = u32::from_le_bytes(file[16..20].try_into().unwrap());
    qeltrix::integrity_v2::verify_keyless(
        &file[footer_offset..footer_offset + footer_size],
        footer_offset as u64,
        block_size,
        |e, buf| {
            let start = (e.entry.offset as usize).min(file.len());
            let end = ((e.entry.offset + e.entry.len) as usize).min(file.len());
            buf.extend_from_slice(&file[start..end]);
            Ok(())
        },
    )
    .map(drop)
}

/// The keyless check of any v2 or v3 container: its structure as `ContainerInfo::read` finds it
/// (for v3, through the current commit record), then every current block against its entry.
fn verify_without_key_any(file: &[u8]) -> qeltrix::Result<()> {
    let info = ContainerInfo::read(&file.to_vec())?;
    let footer = info.footer_v2.expect("a v2 or v3 footer");
    qeltrix::integrity_v2::check_blocks_keyless(&footer, |e, buf| {
        let start = (e.entry.offset as usize).min(file.len());
        let end = ((e.entry.offset + e.entry.len) as usize).min(file.len());
        buf.extend_from_slice(&file[start..end]);
        Ok(())
    })
}

/// A format-3 container's current generation and superseded bytes.
fn generation_of(file: &[u8]) -> qeltrix::Result<(u64, u64)> {
    let info = ContainerInfo::read(&file.to_vec())?;
    let footer = info.footer_v2.expect("a v3 footer");
    let superseded = footer.superseded_bytes(info.trailer.footer_offset);
    Ok((footer.generation.expect("a v3 footer"), superseded))
}

/// The editor's options as the read-write mount sets them, made small: blocks of
/// `block_size`, in place (as `format`) from 16 KiB, sealed to the corpus's key file.
fn edit_options(dir: &Path, block_size: u32, format: FormatVersion) -> Arc<qeltrix::edit::EditOptions> {
    use qeltrix::edit::{EditOptions, MemoryBudget};
    Arc::new(EditOptions {
        pack: PackOptions {
            block_size,
            codec: Codec::Zstd,
            level: 6,
            workers: 1,
            ..PackOptions::default()
        },
        recipients: vec![sealing(key_file_key(key_file_bytes()))],
        scratch: dir.to_path_buf(),
        budget: MemoryBudget::new(1 << 20),
        file_limit: 1 << 20,
        in_place_min: V3_IN_PLACE_MIN,
        in_place_format: format,
        slack_while_open: 1,
    })
}

/// Writes `good/v3-edited.qltx` the way the read-write mount does: a new file streamed, then
/// three edits each committed in place (new generations appended), through the library's
/// `Editor`. System randomness (a seeded one would repeat nonces across a block's versions),
/// so it is written once and never compared again. Returns the container's bytes.
fn write_v3_edited(plain: &[u8]) -> Vec<u8> {
    use qeltrix::edit::Editor;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v3.qltx");
    let opts = edit_options(dir.path(), BLOCK_SIZE, FormatVersion::V3);
    let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let mut e = Editor::new_file(opts, file_meta(&V3_RECORD));
    e.write_at(0, &plain[..V3_LEN]).unwrap();
    e.set_mtime(at(1_700_000_001));
    e.commit(&dest, true).unwrap();
    for (i, (offset, bytes, cut)) in V3_EDITS.iter().enumerate() {
        if let Some(len) = cut {
            e.set_len(*len).unwrap();
        }
        e.write_at(*offset, bytes).unwrap();
        e.set_mtime(at(1_700_000_002 + i as u64));
        e.commit(&dest, true).unwrap();
    }
    e.set_mode(0o600);
    e.commit(&dest, true).unwrap();
    fs::read(&dest).unwrap()
}

/// Writes `good/v4-patched.qltx` the way the read-write mount does: a new file streamed (a
/// base of generation 1), then three writes that keep the size, each committed as a patch of
/// the 4 KiB pages it touched (the last one with a chmod). System randomness, written once.
fn write_v4_patched(plain: &[u8]) -> Vec<u8> {
    use qeltrix::edit::Editor;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v4.qltx");
    let opts = edit_options(dir.path(), V4_BLOCK_SIZE, FormatVersion::V4);
    let at = |secs: i64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let mut e = Editor::new_file(opts, file_meta(&V4_RECORD));
    e.write_at(0, &plain[..V4_LEN]).unwrap();
    e.set_mtime(at(V4_RECORD.mtime_sec + 10));
    e.commit(&dest, true).unwrap();
    for (i, writes) in V4_EDITS.iter().enumerate() {
        for (offset, bytes) in *writes {
            e.write_at(*offset, bytes).unwrap();
        }
        if i + 1 == V4_EDITS.len() {
            e.set_mode(0o600);
        }
        e.set_mtime(at(V4_RECORD.mtime_sec + 11 + i as i64));
        e.commit(&dest, true).unwrap();
    }
    fs::read(&dest).unwrap()
}

/// The file record to seal into a v2 container.
fn file_meta(r: &Record) -> FileMeta {
    FileMeta {
        name: r.name.as_bytes().to_vec(),
        mode: r.mode,
        mtime_sec: r.mtime_sec,
        mtime_nsec: r.mtime_nsec,
    }
}

/// One block of the index, as `ContainerInfo` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Offset and length of the whole stored block in the container.
    offset: u64,
    len: u64,
    plain_offset: u64,
    plain_size: u64,
}

/// What `ContainerInfo::read` reports (no key needed).
#[derive(Debug)]
struct Info {
    /// The header's format version (1 or 2).
    version: u16,
    /// A v2 container's root, already checked by `ContainerInfo::read` against the footer's
    /// block hashes and file record (no key needed); `None` for v1.
    root: Option<[u8; 32]>,
    /// A v2 container carries a sealed file record.
    has_record: bool,
    container_size: u64,
    original_size: u64,
    cipher: CipherId,
    flags: u16,
    /// The header's totals were written (false for a container written to a stream).
    patched: bool,
    slot_kinds: Vec<&'static str>,
    /// PBKDF2 iterations of each passphrase slot.
    kdf_iterations: Vec<u32>,
    footer_offset: u64,
    entries: Vec<Entry>,
}

fn read_info(path: &Path) -> qeltrix::Result<Info> {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let info = ContainerInfo::read(&file)?;
    assert_eq!(info.block_count(), info.footer.entries.len() as u64);
    Ok(Info {
        version: info.version().number(),
        root: info.root(),
        has_record: info.footer_v2.as_ref().is_some_and(|f| f.file_record.is_some()),
        container_size: info.container_size,
        original_size: info.original_size(),
        cipher: info.header.cipher,
        flags: info.header.flags,
        patched: info.header.is_patched(),
        slot_kinds: info.slots.slots.iter().map(|s| s.kind.name()).collect(),
        kdf_iterations: info
            .slots
            .slots
            .iter()
            .filter(|s| s.kind.name() == "passphrase")
            .map(|s| s.param)
            .collect(),
        footer_offset: info.trailer.footer_offset,
        entries: info
            .footer
            .entries
            .iter()
            .map(|e| Entry {
                offset: e.offset,
                len: e.len,
                plain_offset: e.plain_offset,
                plain_size: e.plain_size,
            })
            .collect(),
    })
}

/// Packs `segments` of `plain` (sealing a short block after each but the last, as a trickling
/// stream does) with `keys`: to a seekable output, or to a plain `Write` (`streamed`).
fn pack(spec: &Good, plain: &[u8], keys: &[Recipient]) -> Vec<u8> {
    pack_signed_by(spec, plain, keys, spec.signer)
}

/// [`pack`], signed by the key of `signer` (whatever the spec says).
fn pack_signed_by(spec: &Good, plain: &[u8], keys: &[Recipient], signer: Option<u8>) -> Vec<u8> {
    let opts = PackOptions {
        format: spec.format,
        codec: spec.codec,
        file_meta: spec.record.as_ref().map(file_meta),
        cipher: spec.cipher,
        block_size: spec.block_size,
        compress: spec.compress,
        level: 6,
        workers: 1,
        kdf_iterations: KDF_ITERATIONS,
        no_verify_hint: spec.no_verify_hint,
        signer: signer.map(signer_key),
        entropy: Arc::new(SeededEntropy([spec.seed; 32])),
        ..PackOptions::default()
    };
    fn feed<W: Write>(mut p: StreamPacker<W>, segments: &[usize], plain: &[u8]) -> W {
        let mut at = 0;
        for (i, &n) in segments.iter().enumerate() {
            p.write_all(&plain[at..at + n]).unwrap();
            at += n;
            if i + 1 < segments.len() {
                p.flush_block().unwrap();
            }
        }
        p.finish().unwrap().0
    }
    if spec.streamed {
        // A `Vec` is a `Write` but not a `Seek`: the header cannot be patched.
        feed(
            StreamPacker::new(Vec::new(), keys, &opts).unwrap(),
            spec.segments,
            plain,
        )
    } else {
        let out = std::io::Cursor::new(Vec::new());
        feed(
            StreamPacker::new_seekable(out, keys, &opts).unwrap(),
            spec.segments,
            plain,
        )
        .into_inner()
    }
}

// ================================================================================================
// The corpus: keys, plaintexts, files. Never change what is here; only add.
// ================================================================================================

const BLOCK_SIZE: u32 = 4096;
/// PBKDF2 iterations of the passphrase slots and of the vault keyring: far below what the CLI
/// recommends (`KDF_ITERATIONS_FLOOR`, a writer-side warning only) so the tests stay fast, and
/// inside the range 1 ..= 100,000,000 that the format lets a slot ask for. Readers must keep
/// accepting it.
const KDF_ITERATIONS: u32 = 1000;
/// The key file of the key-file slots (also checked in as `keys/keyfile.hex`): the ASCII bytes
/// of "qeltrix frozen corpus key file 1".
const KEY_FILE_HEX: &str = "71656c747269782066726f7a656e20636f72707573206b65792066696c652031";
/// The passphrase of the passphrase slots.
const PASSPHRASE: &str = "frozen corpus passphrase";
/// The passphrase of the vault keyring `vault/.qeltrix/keyring`.
const VAULT_PASSPHRASE: &str = "frozen corpus vault passphrase";
/// The identity (X25519 private key) that opens the recipient slots, and its public key.
const IDENTITY_FILE: &str = "keys/x25519.identity";
const RECIPIENT: &str = "qeltrix-x25519:65d212229a0adf1988273af0cf6311818193b6c9b0b414a1eef591a116f70740";
/// Seeds of the deterministic randomness (identity, vault) used to generate the corpus.
const IDENTITY_SEED: [u8; 32] = [0x50; 32];
const VAULT_SEED: [u8; 32] = [0x60; 32];
/// The folder of the vault (its keyring is `.qeltrix/keyring` inside).
const VAULT: &str = "vault";

/// SHA-256 of every file under `tests/data` except `README.md` and `.gitattributes`. A file changed by accident (or by
/// running the generator over it) fails `corpus_files_are_unchanged`.
const PINNED: &[(&str, &str)] = &[
    (
        "bad/appended-trailer-copy.qltx",
        "28c713bfb77aa76f194520592056ddf2dca2b6df35d55d331e6cb95896dff93d",
    ),
    (
        "bad/bad-tag-block2.qltx",
        "252b90b88705ec1b853ad844fe7fd98155f569d75f18891477d4fcd563c24c93",
    ),
    (
        "bad/cut-stream.qltx",
        "46daa58b88487df19dab22b78a5004262773c476235445a05617993d9833b1a9",
    ),
    (
        "bad/swapped-blocks-1-2.qltx",
        "1ede534eb8b5e2c83f77a9aebfe4d8813cdde07cb7f67fad9feae98b54fc456f",
    ),
    (
        "bad/trailing-garbage.qltx",
        "c4f87d1f7dd4155a092f3e410801ba0a8acd616d4a69323d8c66b16f145c0344",
    ),
    (
        "bad/truncated-footer.qltx",
        "b4e8074996f60a67de0adda2ad6fab55677e985ed0bd2bbac52db8c87557057f",
    ),
    (
        "bad/unknown-header-flag.qltx",
        "71844f399a3b60b89a750c4ead59c46279c4b69045fdd44d9d40363fbe6d4b79",
    ),
    (
        "bad/v2-bad-segment-tag.qltx",
        "4360601b625d168420b3771de8801c66e907a4c1c8745ef4d0069d0b83ef04eb",
    ),
    (
        "bad/v2-flipped-block-hash.qltx",
        "b33167cf2928cb7671167a3acd616766e87fd08107333a30774e74574a69f609",
    ),
    (
        "good/aes256gcm-keyfile-deflate.qltx",
        "ecec05e58eaabbc03d7e04b7646a4d42d59467806ac7350d7404408944596c49",
    ),
    (
        "good/aes256gcm-keyfile-raw.qltx",
        "25344adc4fe677478d910996300ea1c93decb4e06a29cfaa76380db2dcd8f538",
    ),
    (
        "good/aes256gcm-recipient.qltx",
        "c2558c8c95cf3766b7b1022ba5c216fc316366e43c9845de4c73c980d0dfd857",
    ),
    (
        "good/chacha20-keyfile-raw-noverify.qltx",
        "c888dea8cb80a5c9342702b3010aa28db1d7e2cb874cb4e8447c0acee76de2d7",
    ),
    (
        "good/chacha20-passphrase-mixed.qltx",
        "fcb0652a1fe7c6445ba4e9b2639dc0dd826432b254ae968fa07e9513826a0e85",
    ),
    (
        "good/empty.qltx",
        "90b2a341500903e01cf96b12464f9a6a6e17cfb1383ccc266c7fcb80804dbb5d",
    ),
    (
        "good/multi-slot.qltx",
        "2132d189119c0c5198caf38340b310e18e3f4f8e922d73512ecf14d8881bceea",
    ),
    (
        "good/streamed.qltx",
        "eacfb7810096c1a761dab2f9f1dd603d8922e0eb1945639517e0742663338f84",
    ),
    (
        "good/v2-aes256gcm-raw-segments.qltx",
        "dbeacc67cd6305e14551b6691a10e8b72e78364093b8456bfa204b6c85ede868",
    ),
    (
        "good/v2-chacha20-zstd-mixed.qltx",
        "6bf3f99d963eafd1c662c589f71ef8dcee7c9feda00cea654f89ac96bb46f3da",
    ),
    (
        "good/v2-empty.qltx",
        "56f187c39a72e4358d328723f03952299f25cc288519dc1dcda2902aed77c2a2",
    ),
    (
        "good/v2-file-record.qltx",
        "04db535d4e2338ea798eb2ff0decc85163de39ee0253a64e95cf81b8a363892e",
    ),
    (
        "good/v2-passphrase-deflate.qltx",
        "d938661563712d15a14d55059ec67ece8fcf223a7f5f7afa149e27522c92ddf4",
    ),
    (
        "good/v2-streamed.qltx",
        "24161a7733fdf5d52722f363faff8387cb98982a2abaa1b8d406651d58e7c170",
    ),
    (
        "good/v2-signed.qltx",
        "883394b9e4b7927eb2d9a111d16cb1394bec66948fa42e30e64243816bcc8949",
    ),
    (
        "good/v3-edited.qltx",
        "8c4c68a9643296cc53c56bad7a596fe8f2f9a25d43c3d20c7248f5167e8a39b0",
    ),
    (
        "good/v3-signed.qltx",
        "8d7d525805b988731241cf1ef5ddd023b3c757868bc003ad56aba2c1bbb4d5d8",
    ),
    (
        "good/v4-patched.qltx",
        "cbc21c9316d62edbe3b4591e2993eb6c3eb4832ba41ad12859f2014ed23d1f64",
    ),
    (
        "keys/keyfile.hex",
        "a0fad6093de0f6b8705a9d2925c1b27177e58079067a83d6333142990ea24eb6",
    ),
    (
        "keys/x25519.identity",
        "86437b19ab939658347ad544df9a1b6ae98467a6092883fb25d2c486f498b0fa",
    ),
    (
        "vault/.qeltrix/keyring",
        "68f06b6723dcae8ef67ffb04587a33ba5cc67b6ed6d3824f2cb1102acb483513",
    ),
    (
        "vault/in-vault.qltx",
        "1c0b8584f117983f6c4e28932a91dd5b12dd09ab31322aa2dc6bd0c900b82ca1",
    ),
];

/// How a plaintext is made: all are functions of (kind, length, seed) and nothing else.
#[derive(Clone, Copy, Debug)]
enum Data {
    /// Text lines (deflate shrinks them): line n (from 0) is
    /// `format!("{n:06} qeltrix frozen corpus, seed {seed}: {w}\n")` with
    /// `w = WORDS[(7 n + seed) % 8]`, cut at the length.
    Text,
    /// Incompressible: SplitMix64 (the common `Rng`, its raw state set to the seed), each output
    /// as 8 little-endian bytes, cut at the length.
    Noise,
    /// 4096-byte chunks, alternately Text (chunk 0, 2, ...) and Noise (chunk 1, 3, ...): byte k
    /// is byte k of the Text or the Noise plaintext of the same length and seed.
    Mixed,
}

const WORDS: [&str; 8] = [
    "block", "cipher", "footer", "index", "nonce", "salt", "trailer", "vault",
];

fn plaintext(data: Data, len: usize, seed: u8) -> Vec<u8> {
    match data {
        Data::Text => {
            let mut out = Vec::with_capacity(len + 64);
            let mut n = 0usize;
            while out.len() < len {
                let w = WORDS[(7 * n + seed as usize) % WORDS.len()];
                out.extend_from_slice(format!("{n:06} qeltrix frozen corpus, seed {seed}: {w}\n").as_bytes());
                n += 1;
            }
            out.truncate(len);
            out
        }
        Data::Noise => {
            let mut rng = Rng::from_state(seed as u64);
            let mut out = Vec::with_capacity(len + 8);
            while out.len() < len {
                out.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
            out.truncate(len);
            out
        }
        Data::Mixed => {
            let (text, noise) = (
                plaintext(Data::Text, len, seed),
                plaintext(Data::Noise, len, seed),
            );
            (0..len)
                .map(|k| if (k / 4096) % 2 == 0 { text[k] } else { noise[k] })
                .collect()
        }
    }
}

/// A kind of key slot, and the key that opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Passphrase,
    KeyFile,
    Recipient,
    Keyring,
}

impl Slot {
    /// The name `ContainerInfo` gives the slot kind.
    fn name(self) -> &'static str {
        match self {
            Slot::Passphrase => "passphrase",
            Slot::KeyFile => "key-file",
            Slot::Recipient => "recipient",
            Slot::Keyring => "keyring",
        }
    }

    /// The key that opens this slot in the checked-in corpus.
    fn opening_key(self) -> Key {
        match self {
            Slot::Passphrase => passphrase_key(PASSPHRASE),
            Slot::KeyFile => key_file_key(key_file_bytes()),
            Slot::Recipient => identity_key(&read_text(IDENTITY_FILE)),
            Slot::Keyring => unlock_vault(&data_path(VAULT), VAULT_PASSPHRASE).expect("vault unlocks"),
        }
    }
}

/// A container that must open and read back.
struct Good {
    /// Under `tests/data`.
    path: &'static str,
    /// The plaintext's seed, and every byte of the writer's randomness (`SeededEntropy([seed; 32])`).
    seed: u8,
    data: Data,
    /// The plaintext's length, in the pieces it was written in: after each piece but the last the
    /// writer sealed the partial block (`flush_block`), so blocks may be short mid-file.
    segments: &'static [usize],
    cipher: CipherId,
    compress: CompressMode,
    /// Key slots, in order.
    slots: &'static [Slot],
    /// Written by `StreamPacker::new` to a non-seekable output: streaming flag set, header totals zero.
    streamed: bool,
    /// The header's no-verify hint (flag 0x01).
    no_verify_hint: bool,
    /// The format version written. Version 1 files were written when it was the only one;
    /// version 2 files by the build that made it the default.
    format: FormatVersion,
    /// The compressor (v1: always deflate; v2: zstd, or deflate with `--compress deflate`).
    codec: Codec,
    /// Plaintext bytes per block ([`BLOCK_SIZE`] but where a file needs more, for v2 segments).
    block_size: u32,
    /// The file record sealed into a v2 container (`None`: none).
    record: Option<Record>,
    /// The blocks stored compressed (deflate or zstd); the others are stored raw.
    compressed: &'static [u64],
    /// Signed by the Ed25519 key with this seed (`SignerKey::from_seed([seed; 32])`): always
    /// [`SIGNER_SEED`], whose public key is [`SIGNER_PUBLIC`].
    signer: Option<u8>,
}

/// A v2 file record: the packed file's name, permission bits and modification time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    name: &'static str,
    mode: u32,
    mtime_sec: i64,
    mtime_nsec: u32,
}

impl Good {
    fn plaintext(&self) -> Vec<u8> {
        plaintext(self.data, self.segments.iter().sum(), self.seed)
    }

    /// Plaintext bytes in each block: each segment cut into block-size pieces.
    fn block_sizes(&self) -> Vec<u64> {
        let bs = self.block_size as usize;
        let mut sizes = Vec::new();
        for &n in self.segments {
            sizes.extend((0..n.div_ceil(bs)).map(|i| (n - i * bs).min(bs) as u64));
        }
        sizes
    }
}

const GOOD: &[Good] = &[
    Good {
        path: "good/aes256gcm-keyfile-raw.qltx",
        seed: 1,
        data: Data::Noise,
        segments: &[20_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Never,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[],
        signer: None,
    },
    Good {
        path: "good/chacha20-keyfile-raw-noverify.qltx",
        seed: 2,
        data: Data::Noise,
        segments: &[13_000],
        cipher: CipherId::ChaCha20Poly1305,
        compress: CompressMode::Never,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: true,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[],
        signer: None,
    },
    Good {
        path: "good/aes256gcm-keyfile-deflate.qltx",
        seed: 3,
        data: Data::Text,
        segments: &[40_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Always,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        signer: None,
    },
    Good {
        path: "good/chacha20-passphrase-mixed.qltx",
        seed: 4,
        data: Data::Mixed,
        segments: &[24_000],
        cipher: CipherId::ChaCha20Poly1305,
        compress: CompressMode::Auto,
        slots: &[Slot::Passphrase],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[0, 2, 4],
        signer: None,
    },
    Good {
        path: "good/aes256gcm-recipient.qltx",
        seed: 5,
        data: Data::Text,
        segments: &[9_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Auto,
        slots: &[Slot::Recipient],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[0, 1, 2],
        signer: None,
    },
    Good {
        path: "vault/in-vault.qltx",
        seed: 6,
        data: Data::Mixed,
        segments: &[12_000],
        cipher: CipherId::ChaCha20Poly1305,
        compress: CompressMode::Auto,
        slots: &[Slot::Keyring],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[0, 2],
        signer: None,
    },
    Good {
        path: "good/streamed.qltx",
        seed: 7,
        data: Data::Noise,
        segments: &[6_000, 10_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Never,
        slots: &[Slot::KeyFile],
        streamed: true,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[],
        signer: None,
    },
    Good {
        path: "good/multi-slot.qltx",
        seed: 8,
        data: Data::Text,
        segments: &[16_500],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Auto,
        slots: &[Slot::Passphrase, Slot::KeyFile, Slot::Recipient],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[0, 1, 2, 3, 4],
        signer: None,
    },
    Good {
        path: "good/empty.qltx",
        seed: 9,
        data: Data::Text,
        segments: &[0],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Auto,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V1,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[],
        signer: None,
    },
    // Version 2 (written by the build that introduced it; the v1 files above keep proving
    // that version 1 opens).
    Good {
        path: "good/v2-aes256gcm-raw-segments.qltx",
        seed: 10,
        data: Data::Noise,
        segments: &[40_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Never,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V2,
        codec: Codec::Zstd,
        block_size: 36_864,
        record: None,
        compressed: &[],
        signer: None,
    },
    Good {
        path: "good/v2-chacha20-zstd-mixed.qltx",
        seed: 11,
        data: Data::Mixed,
        segments: &[24_000],
        cipher: CipherId::ChaCha20Poly1305,
        compress: CompressMode::Auto,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V2,
        codec: Codec::Zstd,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[0, 2, 4],
        signer: None,
    },
    Good {
        path: "good/v2-file-record.qltx",
        seed: 12,
        data: Data::Text,
        segments: &[9_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Auto,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V2,
        codec: Codec::Zstd,
        block_size: BLOCK_SIZE,
        record: Some(Record {
            name: "frozen corpus.txt",
            mode: 0o640,
            mtime_sec: 1_234_567_890,
            mtime_nsec: 987_654_321,
        }),
        compressed: &[0, 1, 2],
        signer: None,
    },
    Good {
        path: "good/v2-passphrase-deflate.qltx",
        seed: 13,
        data: Data::Text,
        segments: &[16_500],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Always,
        slots: &[Slot::Passphrase, Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V2,
        codec: Codec::Deflate,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[0, 1, 2, 3, 4],
        signer: None,
    },
    Good {
        path: "good/v2-streamed.qltx",
        seed: 14,
        data: Data::Noise,
        segments: &[6_000, 10_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Auto,
        slots: &[Slot::KeyFile],
        streamed: true,
        no_verify_hint: false,
        format: FormatVersion::V2,
        codec: Codec::Zstd,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[],
        signer: None,
    },
    Good {
        path: "good/v2-empty.qltx",
        seed: 15,
        data: Data::Text,
        segments: &[0],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Auto,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V2,
        codec: Codec::Zstd,
        block_size: BLOCK_SIZE,
        record: None,
        compressed: &[],
        signer: None,
    },
    // Signed (written by the build that introduced signatures).
    Good {
        path: "good/v2-signed.qltx",
        seed: 60,
        data: Data::Noise,
        segments: &[20_000],
        cipher: CipherId::Aes256Gcm,
        compress: CompressMode::Never,
        slots: &[Slot::KeyFile],
        streamed: false,
        no_verify_hint: false,
        format: FormatVersion::V2,
        codec: Codec::Zstd,
        block_size: BLOCK_SIZE,
        record: Some(Record {
            name: "signed.bin",
            mode: 0o644,
            mtime_sec: 1_750_000_000,
            mtime_nsec: 5,
        }),
        compressed: &[],
        signer: Some(SIGNER_SEED),
    },
];

/// A container that must be refused: a positive one, damaged.
struct Bad {
    path: &'static str,
    from: &'static str,
    /// How it was made from `from` (and its `Info`): used by the generator only.
    damage: fn(&[u8], &Info) -> Vec<u8>,
}

const BAD: &[Bad] = &[
    Bad {
        path: "bad/bad-tag-block2.qltx",
        from: "good/aes256gcm-keyfile-raw.qltx",
        damage: |c, info| {
            // The last byte of block 2: the last byte of its payload's AEAD tag.
            let e = info.entries[2];
            let mut c = c.to_vec();
            c[(e.offset + e.len - 1) as usize] ^= 0x01;
            c
        },
    },
    Bad {
        path: "bad/truncated-footer.qltx",
        from: "good/aes256gcm-keyfile-raw.qltx",
        damage: |c, info| c[..(info.footer_offset + 40) as usize].to_vec(),
    },
    Bad {
        path: "bad/trailing-garbage.qltx",
        from: "good/aes256gcm-keyfile-raw.qltx",
        damage: |c, _| {
            [
                c,
                b"trailing garbage after the trailer, 64 bytes of it: 0123456789ab".as_slice(),
            ]
            .concat()
        },
    },
    Bad {
        path: "bad/appended-trailer-copy.qltx",
        from: "good/aes256gcm-keyfile-raw.qltx",
        damage: |c, _| [c, &c[c.len() - 32..]].concat(),
    },
    Bad {
        path: "bad/swapped-blocks-1-2.qltx",
        from: "good/aes256gcm-keyfile-raw.qltx",
        damage: |c, info| {
            let (a, b) = (info.entries[1], info.entries[2]);
            assert_eq!(a.len, b.len, "swapping needs blocks of one length");
            let (a, b) = (
                a.offset as usize..(a.offset + a.len) as usize,
                b.offset as usize..(b.offset + b.len) as usize,
            );
            let mut out = c.to_vec();
            out[a.clone()].copy_from_slice(&c[b.clone()]);
            out[b].copy_from_slice(&c[a]);
            out
        },
    },
    Bad {
        path: "bad/unknown-header-flag.qltx",
        from: "good/aes256gcm-keyfile-raw.qltx",
        damage: |c, _| {
            // Flags are the u16 at offset 10: set 0x8000, a bit no version defines.
            let mut c = c.to_vec();
            c[11] |= 0x80;
            c
        },
    },
    Bad {
        path: "bad/cut-stream.qltx",
        from: "good/streamed.qltx",
        damage: |c, info| c[..(info.entries[3].offset + 1000) as usize].to_vec(),
    },
    Bad {
        path: "bad/v2-bad-segment-tag.qltx",
        from: "good/v2-aes256gcm-raw-segments.qltx",
        damage: |c, info| {
            // The last byte of block 0's second segment (its AEAD tag): block 0 holds 36,864
            // bytes in segments of 16,384, 16,384 and 4,096, each sealed with a 16-byte tag.
            let at = info.entries[0].offset + 140 + 2 * (16_384 + 16) - 1;
            let mut c = c.to_vec();
            c[at as usize] ^= 0x01;
            c
        },
    },
    Bad {
        path: "bad/v2-flipped-block-hash.qltx",
        from: "good/v2-aes256gcm-raw-segments.qltx",
        damage: |c, info| {
            // A byte of block 1's BLAKE3 hash in the footer: entry 1 starts at footer byte
            // 72 + 180, its hash 32 bytes into it.
            let at = info.footer_offset + 72 + 180 + 32 + 5;
            let mut c = c.to_vec();
            c[at as usize] ^= 0x01;
            c
        },
    },
];

// ================================================================================================
// Helpers over the corpus (no library API below this line, except matching `Error`).
// ================================================================================================

fn data_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

fn read_bytes(rel: &str) -> Vec<u8> {
    fs::read(data_path(rel)).unwrap_or_else(|e| panic!("tests/data/{rel}: {e}"))
}

fn read_text(rel: &str) -> String {
    String::from_utf8(read_bytes(rel)).expect("UTF-8")
}

fn key_file_bytes() -> [u8; 32] {
    hex::decode(KEY_FILE_HEX).unwrap().try_into().unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn good(path: &str) -> &'static Good {
    GOOD.iter().find(|g| g.path == path).expect("listed in GOOD")
}

/// Checks the file's bytes against its pinned SHA-256.
fn assert_pinned(rel: &str) {
    let (_, sha) = PINNED
        .iter()
        .find(|(p, _)| *p == rel)
        .unwrap_or_else(|| panic!("tests/data/{rel} has no pinned SHA-256"));
    assert_eq!(sha256_hex(&read_bytes(rel)), *sha, "tests/data/{rel} was changed");
}

/// The error of a result that must fail.
fn expect_err<T>(r: qeltrix::Result<T>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: succeeded, but must fail"),
        Err(e) => e,
    }
}

/// The checks of a negative file that ends too early: pinned, and refused as incomplete (or
/// without a trailer) by the info reader and by opening.
fn check_incomplete(path: &str) {
    assert_pinned(path);
    let err = expect_err(read_info(&data_path(path)), "ContainerInfo::read");
    assert!(
        matches!(err.root(), Error::Incomplete(_) | Error::NoTrailer),
        "{err}"
    );
    let err = expect_err(open(&data_path(path), &Slot::KeyFile.opening_key()), "open");
    assert!(
        matches!(err.root(), Error::Incomplete(_) | Error::NoTrailer),
        "{err}"
    );
}

/// Every check a positive file must pass, with every key that should open it.
fn check_good(path: &str) {
    let spec = good(path);
    assert_pinned(path);
    let file = data_path(path);
    let plain = spec.plaintext();
    let sizes = spec.block_sizes();

    // Without a key: the unauthenticated structure.
    let info = read_info(&file).unwrap_or_else(|e| panic!("{path}: ContainerInfo::read: {e}"));
    assert_eq!(info.container_size, read_bytes(path).len() as u64, "{path}");
    assert_eq!(info.version, spec.format.number(), "{path}: format version");
    assert_eq!(
        info.root.is_some(),
        spec.format == FormatVersion::V2,
        "{path}: a root exactly in v2"
    );
    assert_eq!(info.has_record, spec.record.is_some(), "{path}: file record");
    assert_eq!(
        signer_of(&read_bytes(path)).unwrap_or_else(|e| panic!("{path}: signature: {e}")),
        spec.signer.map(|_| SIGNER_PUBLIC.to_string()),
        "{path}: signer"
    );
    if spec.format == FormatVersion::V2 {
        verify_without_key(&read_bytes(path)).unwrap_or_else(|e| panic!("{path}: keyless check: {e}"));
    }
    assert_eq!(info.original_size, plain.len() as u64, "{path}: original size");
    assert_eq!(info.cipher, spec.cipher, "{path}: cipher");
    assert_eq!(info.entries.len(), sizes.len(), "{path}: block count");
    assert_eq!(info.flags & 0x02 != 0, spec.streamed, "{path}: streaming flag");
    assert_eq!(info.patched, !spec.streamed, "{path}: header totals patched");
    assert_eq!(
        info.flags & 0x01 != 0,
        spec.no_verify_hint,
        "{path}: no-verify hint"
    );
    assert_eq!(info.flags & !0x03, 0, "{path}: flags");
    let kinds: Vec<&str> = spec.slots.iter().map(|s| s.name()).collect();
    assert_eq!(info.slot_kinds, kinds, "{path}: key slots");
    assert!(info.kdf_iterations.iter().all(|&i| i == KDF_ITERATIONS), "{path}");
    let mut plain_offset = 0;
    for (i, (e, &size)) in info.entries.iter().zip(&sizes).enumerate() {
        assert_eq!(
            (e.plain_offset, e.plain_size),
            (plain_offset, size),
            "{path}: block {i}"
        );
        // A raw block is prefix + metadata (140 bytes) + plaintext + a 16-byte tag (v2: one
        // per 16 KiB segment).
        let tags = match spec.format {
            FormatVersion::V1 => 1,
            FormatVersion::V2 | FormatVersion::V3 | FormatVersion::V4 => size.div_ceil(16_384),
        };
        let compressed = e.len < 140 + size + 16 * tags;
        assert_eq!(
            compressed,
            spec.compressed.contains(&(i as u64)),
            "{path}: block {i} compressed?"
        );
        plain_offset += size;
    }

    // With each key that should open it: everything reads back.
    for slot in spec.slots {
        let what = format!("{path} opened by its {} slot", slot.name());
        let c = open(&file, &slot.opening_key()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            opened_size(&c),
            (plain.len() as u64, sizes.len() as u64),
            "{what}"
        );
        check_reads(&c, &plain, &sizes, spec.seed, &what);
        let record = opened_record(&c).unwrap_or_else(|e| panic!("{what}: file record: {e}"));
        let want = spec
            .record
            .as_ref()
            .map(|r| (r.name.as_bytes().to_vec(), r.mode, r.mtime_sec, r.mtime_nsec));
        assert_eq!(record, want, "{what}: file record");
    }
}

/// Reads the whole plaintext, each block verified, ranges across every block boundary at
/// (seeded) random offsets, and a range running past the end.
fn check_reads(c: &Container, plain: &[u8], sizes: &[u64], seed: u8, what: &str) {
    assert!(read_whole(c).unwrap() == plain, "{what}: whole plaintext");
    let mut blocks = Vec::new();
    for i in 0..sizes.len() as u64 {
        blocks.extend(read_block_verified(c, i).unwrap_or_else(|e| panic!("{what}: block {i}: {e}")));
    }
    assert!(blocks == plain, "{what}: blocks read one by one");

    let len = plain.len() as u64;
    let mut rng = Rng::from_state(0xf0f0 + seed as u64);
    let mut boundary = 0;
    for pair in sizes.windows(2) {
        boundary += pair[0];
        let start = boundary - 1 - rng.below(pair[0]);
        let end = boundary + 1 + rng.below(pair[1]);
        let got = read_range(c, start, end - start).unwrap();
        assert!(
            got == plain[start as usize..end as usize],
            "{what}: range {start}..{end} across the boundary at {boundary}"
        );
    }
    // Ranges across every 16 KiB boundary inside a block (in v2, a segment boundary): two bytes,
    // and 5000 bytes from a seeded offset before it.
    let mut block_start = 0;
    for &size in sizes {
        for k in (16_384..size).step_by(16_384) {
            let at = block_start + k;
            for start in [at - 1, at - 1 - rng.below(5000)] {
                let end = (at + 1 + rng.below(5000)).min(block_start + size);
                let got = read_range(c, start, end - start).unwrap();
                assert!(
                    got == plain[start as usize..end as usize],
                    "{what}: range {start}..{end} across the segment boundary at {at}"
                );
            }
        }
        block_start += size;
    }
    if len > 0 {
        let start = rng.below(len);
        let got = read_range(c, start, len).unwrap();
        assert!(
            got == plain[start as usize..],
            "{what}: range from {start} past the end"
        );
    }
    assert!(
        read_range(c, len, 10).unwrap().is_empty(),
        "{what}: range at the end"
    );
}

// ================================================================================================
// The tests.
// ================================================================================================

#[test]
fn corpus_files_are_unchanged() {
    let mut on_disk = Vec::new();
    let mut dirs = vec![data_path("")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path
                    .strip_prefix(data_path(""))
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                if rel != "README.md" && rel != ".gitattributes" {
                    on_disk.push(rel);
                }
            }
        }
    }
    on_disk.sort();
    let mut pinned: Vec<String> = PINNED.iter().map(|(p, _)| p.to_string()).collect();
    pinned.sort();
    assert_eq!(
        on_disk, pinned,
        "every file under tests/data (but README.md and .gitattributes) is pinned"
    );
    for (rel, _) in PINNED {
        assert_pinned(rel);
    }
    let listed = GOOD.iter().map(|g| g.path).chain(BAD.iter().map(|b| b.path));
    for rel in listed {
        assert!(PINNED.iter().any(|(p, _)| *p == rel), "{rel} is not pinned");
    }
}

#[test]
fn keys_match_their_published_forms() {
    assert_eq!(read_text("keys/keyfile.hex"), format!("{KEY_FILE_HEX}\n"));
    assert_eq!(recipient_of(&read_text(IDENTITY_FILE)), RECIPIENT);
}

#[test]
fn aes256gcm_keyfile_raw_reads_back() {
    check_good("good/aes256gcm-keyfile-raw.qltx");
}

#[test]
fn chacha20_keyfile_raw_with_no_verify_hint_reads_back() {
    check_good("good/chacha20-keyfile-raw-noverify.qltx");
}

#[test]
fn aes256gcm_deflated_blocks_read_back() {
    check_good("good/aes256gcm-keyfile-deflate.qltx");
}

#[test]
fn chacha20_passphrase_slot_and_mixed_blocks_read_back() {
    check_good("good/chacha20-passphrase-mixed.qltx");
}

#[test]
fn x25519_recipient_slot_opens_with_the_identity() {
    check_good("good/aes256gcm-recipient.qltx");
}

#[test]
fn vault_keyring_slot_opens_with_the_vault_passphrase() {
    assert_pinned(&format!("{VAULT}/.qeltrix/keyring"));
    assert_eq!(
        keyring_file(&data_path(VAULT)),
        data_path(&format!("{VAULT}/.qeltrix/keyring"))
    );
    check_good("vault/in-vault.qltx");
}

#[test]
fn streamed_container_with_unpatched_header_and_short_blocks_reads_back() {
    check_good("good/streamed.qltx");
}

#[test]
fn multi_slot_container_opens_with_each_key() {
    check_good("good/multi-slot.qltx");
}

#[test]
fn empty_container_reads_back() {
    check_good("good/empty.qltx");
}

#[test]
fn v2_raw_blocks_in_several_segments_read_back() {
    check_good("good/v2-aes256gcm-raw-segments.qltx");
}

#[test]
fn v2_zstd_and_raw_blocks_with_chacha20_read_back() {
    check_good("good/v2-chacha20-zstd-mixed.qltx");
}

#[test]
fn v2_file_record_opens_with_the_key() {
    check_good("good/v2-file-record.qltx");
}

#[test]
fn v2_deflate_blocks_and_a_passphrase_slot_read_back() {
    check_good("good/v2-passphrase-deflate.qltx");
}

#[test]
fn v2_streamed_container_reads_back() {
    check_good("good/v2-streamed.qltx");
}

#[test]
fn v2_empty_container_reads_back() {
    check_good("good/v2-empty.qltx");
}

#[test]
fn v2_signed_by_its_signer() {
    check_good(SIGNED_FILE);
}

#[test]
fn signing_the_unsigned_twin_in_place_writes_the_frozen_bytes() {
    // `pack --sign` and `qeltrix sign` write the same record: the signature covers nothing that
    // signing changes, and Ed25519 is deterministic.
    let spec = good(SIGNED_FILE);
    let keys = [sealing(key_file_key(key_file_bytes()))];
    let unsigned = pack_signed_by(spec, &spec.plaintext(), &keys, None);
    assert_eq!(signer_of(&unsigned).unwrap(), None);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("twin.qltx");
    fs::write(&path, &unsigned).unwrap();
    sign_in_place(&path, SIGNER_SEED).unwrap();
    assert!(
        fs::read(&path).unwrap() == read_bytes(SIGNED_FILE),
        "the signed twin equals the frozen file"
    );
}

#[test]
fn v3_signed_in_place_by_its_signer() {
    assert_pinned(SIGNED_V3_FILE);
    let bytes = read_bytes(SIGNED_V3_FILE);
    assert_eq!(signer_of(&bytes).unwrap(), Some(SIGNER_PUBLIC.to_string()));
    verify_without_key_any(&bytes).unwrap();
    let c = open(&data_path(SIGNED_V3_FILE), &key_file_key(key_file_bytes())).unwrap();
    assert_eq!(read_whole(&c).unwrap(), v3_model());
    // Only the signature record differs from the unsigned file it was made from.
    let unsigned = read_bytes(V3_FILE);
    let differ: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != unsigned[i]).collect();
    assert!(
        differ.iter().all(|i| (896..1024).contains(i)),
        "bytes changed outside 896..1024"
    );
    assert_eq!(signer_of(&unsigned).unwrap(), None);
}

#[test]
fn wrong_keys_are_refused() {
    let other_key_file = key_file_key([0x42; 32]);
    let other_identity = identity_key(&new_identity_file_text([0x51; 32]));
    let cases: &[(&str, Key, &str)] = &[
        (
            "good/aes256gcm-keyfile-raw.qltx",
            other_key_file.clone(),
            "another key file",
        ),
        (
            "good/aes256gcm-keyfile-raw.qltx",
            passphrase_key(PASSPHRASE),
            "a passphrase, no such slot",
        ),
        (
            "good/chacha20-passphrase-mixed.qltx",
            passphrase_key("wrong"),
            "a wrong passphrase",
        ),
        (
            "good/aes256gcm-recipient.qltx",
            other_identity.clone(),
            "another identity",
        ),
        ("good/multi-slot.qltx", other_key_file, "another key file"),
        (
            "good/multi-slot.qltx",
            passphrase_key("wrong"),
            "a wrong passphrase",
        ),
        ("good/multi-slot.qltx", other_identity, "another identity"),
        ("good/empty.qltx", key_file_key([0x42; 32]), "another key file"),
        (
            "good/v2-aes256gcm-raw-segments.qltx",
            key_file_key([0x42; 32]),
            "another key file",
        ),
        (
            "good/v2-file-record.qltx",
            passphrase_key(PASSPHRASE),
            "a passphrase, no such slot",
        ),
        (
            "good/v2-passphrase-deflate.qltx",
            passphrase_key("wrong"),
            "a wrong passphrase",
        ),
        (
            "vault/in-vault.qltx",
            key_file_key(key_file_bytes()),
            "a key file, no such slot",
        ),
        (
            "vault/in-vault.qltx",
            passphrase_key(VAULT_PASSPHRASE),
            "the vault passphrase as a passphrase",
        ),
    ];
    for (path, key, what) in cases {
        let err = expect_err(open(&data_path(path), key), &format!("{path} with {what}"));
        assert!(err.is_wrong_key(), "{path} with {what}: {err}");
    }
    // The vault: a wrong passphrase does not unlock its keyring.
    let err = expect_err(
        unlock_vault(&data_path(VAULT), "wrong"),
        "vault with a wrong passphrase",
    );
    assert!(err.is_wrong_key(), "{err}");
}

#[test]
fn bad_tag_fails_naming_block_2() {
    let path = "bad/bad-tag-block2.qltx";
    assert_pinned(path);
    let c = open(&data_path(path), &Slot::KeyFile.opening_key()).expect("the index is intact: opens");
    let plain = good("good/aes256gcm-keyfile-raw.qltx").plaintext();
    // Blocks 0 and 1 still read; block 2 fails with its index and container offset.
    assert!(read_range(&c, 0, 8192).unwrap() == plain[..8192]);
    let err = expect_err(read_range(&c, 8192, 10), "block 2");
    match err.root() {
        Error::Corrupt {
            block: Some(2),
            offset: Some(offset),
            ..
        } => assert_eq!(*offset, 4096 + 2 * (140 + 4096 + 16), "{err}"),
        _ => panic!("not Corrupt naming block 2: {err}"),
    }
    let err = expect_err(read_whole(&c), "the whole plaintext");
    assert!(
        matches!(err.root(), Error::Corrupt { block: Some(2), .. }),
        "{err}"
    );
}

#[test]
fn truncated_footer_is_incomplete() {
    check_incomplete("bad/truncated-footer.qltx");
}

#[test]
fn trailing_garbage_is_incomplete() {
    check_incomplete("bad/trailing-garbage.qltx");
}

#[test]
fn appended_trailer_copy_is_corrupt() {
    // The last 32 bytes are a valid trailer, but the footer it names does not end before it.
    let path = "bad/appended-trailer-copy.qltx";
    assert_pinned(path);
    let len = read_bytes(path).len() as u64;
    for err in [
        expect_err(read_info(&data_path(path)), "ContainerInfo::read"),
        expect_err(open(&data_path(path), &Slot::KeyFile.opening_key()), "open"),
    ] {
        match err.root() {
            Error::Corrupt {
                block: None,
                offset: Some(offset),
                ..
            } => assert_eq!(*offset, len - 32, "{err}"),
            _ => panic!("not Corrupt at the trailer: {err}"),
        }
    }
}

#[test]
fn swapped_blocks_fail_naming_block_1() {
    let path = "bad/swapped-blocks-1-2.qltx";
    assert_pinned(path);
    let c = open(&data_path(path), &Slot::KeyFile.opening_key()).expect("the index is intact: opens");
    let plain = good("good/aes256gcm-keyfile-raw.qltx").plaintext();
    assert!(read_range(&c, 0, 4096).unwrap() == plain[..4096]);
    assert!(read_range(&c, 12288, 8000).unwrap() == plain[12288..]);
    for block in [1u64, 2] {
        let err = expect_err(read_range(&c, block * 4096, 1), &format!("block {block}"));
        assert!(
            matches!(err.root(), Error::Corrupt { block: Some(b), .. } if *b == block),
            "not Corrupt naming block {block}: {err}"
        );
    }
    // Read in order, block 1 is the first to fail, at its own (index) offset.
    let err = expect_err(read_whole(&c), "the whole plaintext");
    match err.root() {
        Error::Corrupt {
            block: Some(1),
            offset: Some(offset),
            ..
        } => assert_eq!(*offset, 4096 + (140 + 4096 + 16), "{err}"),
        _ => panic!("not Corrupt naming block 1: {err}"),
    }
}

#[test]
fn unknown_header_flag_is_refused() {
    let path = "bad/unknown-header-flag.qltx";
    assert_pinned(path);
    for err in [
        expect_err(read_info(&data_path(path)), "ContainerInfo::read"),
        expect_err(open(&data_path(path), &Slot::KeyFile.opening_key()), "open"),
    ] {
        assert!(matches!(err.root(), Error::Corrupt { block: None, .. }), "{err}");
        assert!(
            err.to_string().contains("flag"),
            "the error names the flags: {err}"
        );
    }
}

#[test]
fn cut_stream_is_incomplete() {
    check_incomplete("bad/cut-stream.qltx");
}

#[test]
fn v2_bad_segment_tag_fails_only_reads_of_that_segment() {
    let path = "bad/v2-bad-segment-tag.qltx";
    assert_pinned(path);
    let c = open(&data_path(path), &Slot::KeyFile.opening_key()).expect("the index is intact: opens");
    let plain = good("good/v2-aes256gcm-raw-segments.qltx").plaintext();
    // Segments 0 and 2 of block 0, and block 1, still read: a range read opens only the
    // segments it covers.
    assert!(read_range(&c, 0, 16_384).unwrap() == plain[..16_384]);
    assert!(read_range(&c, 32_768, 7232).unwrap() == plain[32_768..]);
    for (start, len) in [(16_384, 1), (32_767, 2), (16_000, 1000), (0, 40_000)] {
        let err = expect_err(read_range(&c, start, len), &format!("range {start}+{len}"));
        match err.root() {
            Error::Corrupt {
                block: Some(0),
                offset: Some(4096),
                ..
            } => {}
            _ => panic!("range {start}+{len}: not Corrupt naming block 0 at 4096: {err}"),
        }
    }
    let err = expect_err(read_block_verified(&c, 0), "block 0");
    assert!(
        matches!(err.root(), Error::Corrupt { block: Some(0), .. }),
        "{err}"
    );
    // Without the key: block 0 no longer hashes to the footer's block hash.
    let err = expect_err(verify_without_key(&read_bytes(path)), "keyless check");
    match err.root() {
        Error::Corrupt {
            block: Some(0),
            offset: Some(4096),
            ..
        } => {}
        _ => panic!("keyless check: not Corrupt naming block 0 at 4096: {err}"),
    }
}

#[test]
fn v2_flipped_block_hash_is_refused_without_a_key() {
    // The footer's root no longer matches its block hashes: `ContainerInfo::read` (no key)
    // refuses the container, and so does opening it.
    let path = "bad/v2-flipped-block-hash.qltx";
    assert_pinned(path);
    let footer_offset = read_info(&data_path("good/v2-aes256gcm-raw-segments.qltx"))
        .unwrap()
        .footer_offset;
    for err in [
        expect_err(read_info(&data_path(path)), "ContainerInfo::read"),
        expect_err(open(&data_path(path), &Slot::KeyFile.opening_key()), "open"),
        expect_err(verify_without_key(&read_bytes(path)), "keyless check"),
    ] {
        match err.root() {
            Error::Corrupt {
                block: None,
                offset: Some(offset),
                ..
            } => assert_eq!(*offset, footer_offset, "{err}"),
            _ => panic!("not Corrupt at the footer: {err}"),
        }
        assert!(
            err.to_string().contains("root"),
            "the error names the root: {err}"
        );
    }
}

// ================================================================================================
// The generator: how the corpus was made. It writes only missing files; an existing file that it
// would write differently is reported, never overwritten.
// ================================================================================================

// ================================================================================================
// Format 3: a container edited in place by the read-write mount.
// ================================================================================================

const V3_FILE: &str = "good/v3-edited.qltx";
/// A format-2 container packed signed (`pack --sign`).
const SIGNED_FILE: &str = "good/v2-signed.qltx";
/// `good/v3-edited.qltx` signed in place (`qeltrix sign`).
const SIGNED_V3_FILE: &str = "good/v3-signed.qltx";
/// The signers' seed, and its public key.
const SIGNER_SEED: u8 = 61;
const SIGNER_PUBLIC: &str =
    "qeltrix-ed25519:70df9e2279adbec6d12bf2921184c9222eb24ed852005bf640139f52e59cd9ae";
/// The plaintext first streamed: Noise, seed 50.
const V3_LEN: usize = 40_000;
const V3_SEED: u8 = 50;
/// Files of at least this many bytes are format 3 (the mount's 1 MiB, made small here).
const V3_IN_PLACE_MIN: u64 = 16 << 10;
/// The edits, each committed as a generation: (offset, bytes written, truncated first to).
const V3_EDITS: &[(u64, &[u8], Option<u64>)] = &[
    (5_000, &[0xab; 100], None),
    (35_000, b"a tail after a gap of zeros", Some(30_000)),
];
const V3_RECORD: Record = Record {
    name: "v3-edited.txt",
    mode: 0o644,
    mtime_sec: 1_700_000_000,
    mtime_nsec: 0,
};

/// The plaintext `good/v3-edited.qltx` holds: the stream, with the edits applied.
fn v3_model() -> Vec<u8> {
    let mut model = plaintext(Data::Noise, V3_LEN, V3_SEED);
    for (offset, bytes, cut) in V3_EDITS {
        if let Some(len) = cut {
            model.truncate(*len as usize);
        }
        let end = *offset as usize + bytes.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[*offset as usize..end].copy_from_slice(bytes);
    }
    model
}

#[test]
fn v3_an_edited_container_opens_at_its_last_generation() {
    assert_pinned(V3_FILE);
    let bytes = read_bytes(V3_FILE);
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 3, "format 3");
    // The stream (1), two edits (2, 3) and a chmod (4), each a generation appended in place.
    let (generation, superseded) = generation_of(&bytes).unwrap();
    assert_eq!(generation, 4);
    assert!(
        superseded > 0,
        "earlier block versions and footers are still in the file"
    );
    verify_without_key_any(&bytes).unwrap();
    let c = open(&data_path(V3_FILE), &key_file_key(key_file_bytes())).unwrap();
    assert_eq!(read_whole(&c).unwrap(), v3_model());
    let record = opened_record(&c).unwrap().unwrap();
    assert_eq!(record.1, 0o600);
    // A wrong key is refused.
    let e = expect_err(open(&data_path(V3_FILE), &key_file_key([9; 32])), "a wrong key");
    assert!(e.is_auth_failure() || e.to_string().contains("key"), "{e}");
}

// ================================================================================================
// Format 4: a container whose last generations are patches of 4 KiB units.
// ================================================================================================

const V4_FILE: &str = "good/v4-patched.qltx";
const V4_LEN: usize = 40_000;
const V4_SEED: u8 = 51;
const V4_BLOCK_SIZE: u32 = 16 << 10;
/// The writes of each patch: (offset, bytes); none changes the size.
const V4_EDITS: &[&[(u64, &[u8])]] = &[
    &[(5_000, &[0xcd; 100])],
    &[(12_288, &[0x5a; 4096])],
    &[(39_000, b"the last, short unit"), (5_050, b"newer")],
];
const V4_RECORD: Record = Record {
    name: "v4-patched.txt",
    mode: 0o644,
    mtime_sec: 1_700_000_000,
    mtime_nsec: 0,
};

/// The plaintext `good/v4-patched.qltx` holds.
fn v4_model() -> Vec<u8> {
    let mut model = plaintext(Data::Noise, V4_LEN, V4_SEED);
    for writes in V4_EDITS {
        for (offset, bytes) in *writes {
            model[*offset as usize..*offset as usize + bytes.len()].copy_from_slice(bytes);
        }
    }
    model
}

#[test]
fn v4_a_patched_container_opens_at_its_last_patch() {
    assert_pinned(V4_FILE);
    let bytes = read_bytes(V4_FILE);
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 4, "format 4");
    let info = ContainerInfo::read(&bytes).unwrap();
    // The stream (1), then three patches (2, 3, 4).
    assert_eq!((info.generation(), info.patch_count()), (Some(4), 3));
    qeltrix::ops::verify_keyless(&bytes, &info, &|_| {}).unwrap();
    let c = open(&data_path(V4_FILE), &key_file_key(key_file_bytes())).unwrap();
    assert_eq!(read_whole(&c).unwrap(), v4_model());
    // The name from the base's record; the mode and mtime from the newest patch.
    let record = opened_record(&c).unwrap().unwrap();
    assert_eq!(
        record,
        (
            V4_RECORD.name.as_bytes().to_vec(),
            0o600,
            V4_RECORD.mtime_sec + 13,
            0
        )
    );
    let e = expect_err(open(&data_path(V4_FILE), &key_file_key([9; 32])), "a wrong key");
    assert!(e.is_auth_failure() || e.to_string().contains("key"), "{e}");
    // A stream reader refuses it by name; so does a signer.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("v4.qltx");
    fs::write(&copy, &bytes).unwrap();
    let e = expect_err(sign_in_place(&copy, SIGNER_SEED), "signing a file with patches");
    assert!(e.to_string().contains("patches"), "{e}");
}

#[test]
#[ignore = "writes tests/data; run by hand to add new files"]
fn regenerate_corpus() {
    let mut differ = Vec::new();
    let mut put = |rel: &str, bytes: &[u8]| {
        let path = data_path(rel);
        match fs::read(&path) {
            Ok(old) if old == bytes => {}
            Ok(_) => differ.push(rel.to_string()),
            Err(_) => {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, bytes).unwrap();
                println!("wrote tests/data/{rel}");
            }
        }
    };

    put("keys/keyfile.hex", format!("{KEY_FILE_HEX}\n").as_bytes());
    // Written with system randomness: only when missing, never compared.
    if !data_path(V3_FILE).exists() {
        put(
            V3_FILE,
            &write_v3_edited(&plaintext(Data::Noise, V3_LEN, V3_SEED)),
        );
    }
    if !data_path(V4_FILE).exists() {
        put(
            V4_FILE,
            &write_v4_patched(&plaintext(Data::Noise, V4_LEN, V4_SEED)),
        );
    }
    if !data_path(SIGNED_V3_FILE).exists() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("v3.qltx");
        fs::write(&copy, read_bytes(V3_FILE)).unwrap();
        sign_in_place(&copy, SIGNER_SEED).unwrap();
        put(SIGNED_V3_FILE, &fs::read(&copy).unwrap());
    }
    println!("signer: {}", signer_key(SIGNER_SEED).public());
    let identity = new_identity_file_text(IDENTITY_SEED);
    put(IDENTITY_FILE, identity.as_bytes());
    let recipient = recipient_of(&identity);
    println!("recipient: {recipient}");

    let tmp = tempfile::tempdir().unwrap();
    let vault_key = init_vault(tmp.path(), VAULT_PASSPHRASE, KDF_ITERATIONS, VAULT_SEED);
    put(
        &format!("{VAULT}/.qeltrix/keyring"),
        &fs::read(keyring_file(tmp.path())).unwrap(),
    );

    for spec in GOOD {
        let keys: Vec<Recipient> = spec
            .slots
            .iter()
            .map(|s| match s {
                Slot::Passphrase => sealing(passphrase_key(PASSPHRASE)),
                Slot::KeyFile => sealing(key_file_key(key_file_bytes())),
                Slot::Recipient => recipient_key(&recipient),
                Slot::Keyring => sealing(vault_key.clone()),
            })
            .collect();
        put(spec.path, &pack(spec, &spec.plaintext(), &keys));
    }
    for bad in BAD {
        // From the checked-in file, so that the damage is to the very bytes the corpus holds.
        let info = read_info(&data_path(bad.from)).unwrap();
        put(bad.path, &(bad.damage)(&read_bytes(bad.from), &info));
    }

    let mut all: Vec<String> = GOOD.iter().map(|g| g.path.to_string()).collect();
    all.extend(BAD.iter().map(|b| b.path.to_string()));
    all.extend([
        V3_FILE.into(),
        SIGNED_V3_FILE.into(),
        V4_FILE.into(),
        "keys/keyfile.hex".into(),
        IDENTITY_FILE.into(),
        format!("{VAULT}/.qeltrix/keyring"),
    ]);
    all.sort();
    println!("const PINNED: &[(&str, &str)] = &[");
    for rel in all {
        println!("    (\"{rel}\", \"{}\"),", sha256_hex(&read_bytes(&rel)));
    }
    println!("];");
    assert!(
        differ.is_empty(),
        "this build writes these checked-in files differently (they were left as they are; \
         a changed writer is fine as long as the frozen tests pass): {differ:?}"
    );
}
