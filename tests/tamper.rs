//! The tamper matrix (after Tink's streaming-AEAD reader tests): every single-byte change to a
//! block, the footer, the trailer or the active key-slot area, every truncation, swapped, spliced
//! and dropped blocks, and appended garbage must be rejected as an authentication failure, by the
//! library and by the CLI (exit code 3, no output file and no temporary file left behind). Header
//! bytes outside the slot areas must either be rejected or change nothing.

mod common;

use common::*;
use qeltrix::format::{FormatVersion, BLOCK_HEAD_LEN, BLOCK_PREFIX_LEN, SLOT_AREA_B, SLOT_AREA_LEN, TAG_LEN};
use qeltrix::{CipherId, CompressMode, Container, ContainerInfo, Error};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

const KEY_BYTE: u8 = 0x42;
const BLOCK: usize = 4 * KIB;

/// Both format versions: every test of the matrix runs on v1 (still writable) and v2.
const VERSIONS: [FormatVersion; 2] = [FormatVersion::V1, FormatVersion::V2];

/// A small container: 4 KiB blocks, 4.25 blocks of plaintext.
struct Fixture {
    name: String,
    version: FormatVersion,
    plain: Vec<u8>,
    bytes: Vec<u8>,
    layout: Layout,
}

fn fixture(compressed: bool, version: FormatVersion) -> Fixture {
    let len = 4 * BLOCK + 1000;
    let (name, plain, o) = if compressed {
        let o = opts(CipherId::Aes256Gcm, BLOCK, CompressMode::Auto);
        ("compressed", text_bytes(len, 1), o)
    } else {
        let o = opts(CipherId::ChaCha20Poly1305, BLOCK, CompressMode::Never);
        ("raw", random_bytes(len, 2), o)
    };
    let o = in_version(o, version);
    let name = format!("{name} v{}", version.number());
    let bytes = pack_seekable(&plain, &[key_file_key(KEY_BYTE)], &o);
    assert_eq!(bytes[8..10], version.number().to_le_bytes(), "{name}: version");
    let layout = layout(&bytes);
    assert_eq!(layout.blocks.len(), 5);
    // A raw 4 KiB block is one segment in v2: the same length as in v1.
    let raw_len = BLOCK_HEAD_LEN + BLOCK + TAG_LEN;
    let raw_blocks = layout.blocks.iter().filter(|b| b.len() == raw_len).count();
    assert_eq!(
        raw_blocks,
        if compressed { 0 } else { 4 },
        "{name}: the fixture's blocks"
    );
    Fixture {
        name,
        version,
        plain,
        bytes,
        layout,
    }
}

/// Every byte that authentication must cover: blocks, footer, trailer, active key-slot area.
fn authenticated_positions(l: &Layout) -> Vec<usize> {
    let mut positions: Vec<usize> = l.slot_area_a.clone().collect();
    positions.extend(l.blocks.first().unwrap().start..l.footer.end);
    positions.extend(l.trailer.clone());
    positions
}

/// Changes one bit of the byte, a different bit from one position to the next.
fn flipped(b: u8, pos: usize) -> u8 {
    b ^ (1 << (pos % 8))
}

fn open_and_unpack_file(path: &Path) -> qeltrix::Result<Vec<u8>> {
    unpack_all(Container::open(path, &key_file_key(KEY_BYTE))?)
}

fn expect_auth_failure(result: qeltrix::Result<Vec<u8>>, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what}: read back without an error"),
        Err(e) => {
            assert!(e.is_auth_failure(), "{what}: not an authentication failure: {e}");
            e
        }
    }
}

fn check_every_byte_flip(f: &Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.qltx");
    std::fs::write(&path, &f.bytes).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    for pos in authenticated_positions(&f.layout) {
        file.write_all_at(&[flipped(f.bytes[pos], pos)], pos as u64)
            .unwrap();
        let what = format!("{}: byte {pos} flipped", f.name);
        let err = expect_auth_failure(open_and_unpack_file(&path), &what);
        if f.layout.blocks.iter().all(|b| !b.contains(&pos)) {
            // Caught by `open`, which knows the path (block errors get it from the caller: the CLI).
            assert!(
                err.to_string().contains("c.qltx"),
                "{what}: error does not name the file: {err}"
            );
        }
        if let Some(block) = f.layout.blocks.iter().position(|b| b.contains(&pos)) {
            assert!(
                matches!(err.root(), Error::Corrupt { block: Some(b), .. } if *b == block as u64),
                "{what}: error does not name block {block}: {err}"
            );
        }
        file.write_all_at(&[f.bytes[pos]], pos as u64).unwrap();
    }
    assert!(
        open_and_unpack_file(&path).unwrap() == f.plain,
        "restored file reads back"
    );
}

#[test]
fn every_authenticated_byte_flip_fails_compressed() {
    for v in VERSIONS {
        check_every_byte_flip(&fixture(true, v));
    }
}

#[test]
fn every_authenticated_byte_flip_fails_raw() {
    for v in VERSIONS {
        check_every_byte_flip(&fixture(false, v));
    }
}

/// Every fixture: compressed and raw, in both versions.
fn fixtures() -> Vec<Fixture> {
    VERSIONS
        .into_iter()
        .flat_map(|v| [fixture(true, v), fixture(false, v)])
        .collect()
}

#[test]
fn header_flips_outside_the_active_slots_fail_or_change_nothing() {
    // Magic, version, flags, cipher, block size, totals, footer position and container id: every
    // field the reader uses must be checked. Reserved bytes and the inactive area B may be ignored.
    let used = |p: usize| p < 13 || (16..20).contains(&p) || (24..72).contains(&p);
    let area_b = SLOT_AREA_B..SLOT_AREA_B + SLOT_AREA_LEN;
    let key = key_file_key(KEY_BYTE);
    for f in fixtures() {
        let mut bytes = f.bytes.clone();
        for pos in (0..qeltrix::format::HEADER_LEN).filter(|p| !f.layout.slot_area_a.contains(p)) {
            bytes[pos] = flipped(f.bytes[pos], pos);
            let what = format!("{}: header byte {pos} flipped", f.name);
            match open_and_unpack(bytes.clone(), &key) {
                Ok(plain) => {
                    assert!(plain == f.plain, "{what}: the plaintext changed");
                    assert!(!used(pos), "{what}: a used header field is not checked");
                }
                Err(e) => {
                    // The magic and the version say what kind of file this is: changed, it is
                    // not a container (exit 4); any other header byte is damage (exit 3).
                    if pos < 10 {
                        assert!(e.is_not_a_container(), "{what}: {e}");
                    } else {
                        assert!(e.is_auth_failure(), "{what}: {e}");
                    }
                    assert!(
                        !area_b.contains(&pos),
                        "{what}: the inactive slot area matters: {e}"
                    );
                }
            }
            bytes[pos] = f.bytes[pos];
        }
    }
}

#[test]
fn every_truncation_fails_cleanly() {
    let key = key_file_key(KEY_BYTE);
    for f in fixtures() {
        // Nothing left is not a container at all (exit 4); any cut that keeps a byte of it is a
        // cut container, an authentication failure (exit 3).
        let empty = open_and_unpack(Vec::new(), &key).unwrap_err();
        assert!(empty.is_not_a_container(), "truncated to 0: {empty}");
        for len in 1..f.bytes.len() {
            let result = open_and_unpack(f.bytes[..len].to_vec(), &key);
            expect_auth_failure(result, &format!("{}: truncated to {len}", f.name));
        }
    }
}

/// Writes `bytes` as `dir/c.qltx`, runs `unpack` and `verify` on it, and checks both exit with 3,
/// name the file (and `must_name`), and leave nothing but the container in `dir`.
fn cli_rejects(
    dir: &Path,
    key: &Path,
    bytes: &[u8],
    version: FormatVersion,
    must_name: Option<String>,
    what: &str,
) {
    let path = dir.join("c.qltx");
    std::fs::write(&path, bytes).unwrap();
    for command in ["unpack", "verify"] {
        let mut cmd = qeltrix();
        cmd.args([command, "-q", "--key-file"]).arg(key).arg(&path);
        if command == "unpack" {
            cmd.arg(dir.join("out.bin"));
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // An empty file, or one whose magic or version changed, is not a container (exit 4);
        // everything else that fails is an authentication failure (exit 3).
        let kind_changed = bytes.is_empty()
            || bytes.len() >= 10
                && (&bytes[..8] != b"QELTRIX\0" || bytes[8..10] != version.number().to_le_bytes());
        let expected = if kind_changed { 4 } else { 3 };
        assert_eq!(out.status.code(), Some(expected), "{what}: {command}: {stderr}");
        assert!(
            stderr.contains("c.qltx"),
            "{what}: {command} does not name the file: {stderr}"
        );
        if let Some(s) = &must_name {
            assert!(
                stderr.contains(s.as_str()),
                "{what}: {command} does not say {s}: {stderr}"
            );
        }
        assert!(out.stdout.is_empty() || command == "verify" && !out.stdout.starts_with(b"OK"));
        assert_eq!(dir_names(dir), ["c.qltx"], "{what}: {command} left files behind");
    }
}

fn check_cli_sample(f: &Fixture) {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key");
    write_key_file(&key, KEY_BYTE);
    let dir = tempfile::tempdir().unwrap();
    let l = &f.layout;

    let mut positions: Vec<usize> = authenticated_positions(l).into_iter().step_by(97).collect();
    for b in &l.blocks {
        // Prefix magic, index, payload length; sealed metadata; first and last payload byte.
        positions.extend([
            b.start,
            b.start + 8,
            b.start + 16,
            b.start + BLOCK_PREFIX_LEN + 20,
        ]);
        positions.extend([b.start + BLOCK_HEAD_LEN, b.end - 1]);
    }
    positions.extend([
        l.footer.start,
        l.footer.start + 8,
        l.footer.start + 16,
        l.footer.end - 1,
    ]);
    positions.extend([
        l.trailer.start,
        l.trailer.start + 8,
        l.trailer.start + 16,
        l.trailer.end - 1,
    ]);
    positions.extend([
        l.slot_area_a.start,
        l.slot_area_a.start + 16,
        l.slot_area_a.end - 1,
    ]);
    for pos in positions {
        let mut bytes = f.bytes.clone();
        bytes[pos] = flipped(bytes[pos], pos);
        let block = l.blocks.iter().position(|b| b.contains(&pos));
        let what = format!("{}: byte {pos} flipped", f.name);
        cli_rejects(
            dir.path(),
            &key,
            &bytes,
            f.version,
            block.map(|b| format!("block {b}")),
            &what,
        );
    }

    let mut cuts = vec![0, 1, 4095, 4096, 4097, l.footer.start, l.trailer.start, l.len - 1];
    cuts.extend(l.blocks.iter().map(|b| b.end - 1));
    for len in cuts {
        cli_rejects(
            dir.path(),
            &key,
            &f.bytes[..len],
            f.version,
            None,
            &format!("{}: cut at {len}", f.name),
        );
    }

    // The untouched container works, so the failures above are the tampering's doing.
    std::fs::write(dir.path().join("c.qltx"), &f.bytes).unwrap();
    qeltrix()
        .args(["unpack", "-q", "--key-file"])
        .arg(&key)
        .arg(dir.path().join("c.qltx"))
        .arg(dir.path().join("out.bin"))
        .assert()
        .success();
    assert!(std::fs::read(dir.path().join("out.bin")).unwrap() == f.plain);
}

#[test]
fn cli_rejects_a_sample_of_flips_and_cuts_compressed() {
    for v in VERSIONS {
        check_cli_sample(&fixture(true, v));
    }
}

#[test]
fn cli_rejects_a_sample_of_flips_and_cuts_raw() {
    for v in VERSIONS {
        check_cli_sample(&fixture(false, v));
    }
}

#[test]
fn swapped_blocks_fail() {
    for v in VERSIONS {
        check_swapped_blocks(&fixture(false, v));
    }
}

fn check_swapped_blocks(f: &Fixture) {
    let key = key_file_key(KEY_BYTE);
    let (a, b) = (f.layout.blocks[1].clone(), f.layout.blocks[2].clone());
    assert_eq!(a.len(), b.len());
    let mut swapped = f.bytes.clone();
    swapped[a.clone()].copy_from_slice(&f.bytes[b.clone()]);
    swapped[b.clone()].copy_from_slice(&f.bytes[a.clone()]);
    let what = format!("{}: blocks 1 and 2 swapped", f.name);
    let err = expect_auth_failure(open_and_unpack(swapped.clone(), &key), &what);
    assert!(
        matches!(err.root(), Error::Corrupt { block: Some(1), .. }),
        "{what}: {err}"
    );

    // Also with the clear block index rewritten to match the new position: the metadata's AAD
    // holds the prefix, so that fails too.
    swapped[a.start + 8..a.start + 16].copy_from_slice(&1u64.to_le_bytes());
    swapped[b.start + 8..b.start + 16].copy_from_slice(&2u64.to_le_bytes());
    let what = format!("{}: swapped, prefixes renumbered", f.name);
    let err = expect_auth_failure(open_and_unpack(swapped, &key), &what);
    assert!(
        matches!(err.root(), Error::Corrupt { block: Some(1), .. }),
        "{what}: {err}"
    );
}

#[test]
fn a_block_spliced_from_another_container_with_the_same_key_fails() {
    let key = key_file_key(KEY_BYTE);
    for (compressed, v) in [false, true].into_iter().flat_map(|c| VERSIONS.map(|v| (c, v))) {
        let (f, other) = (fixture(compressed, v), fixture(compressed, v));
        assert!(other.plain == f.plain);
        let mut spliced_blocks = 0;
        for i in 0..f.layout.blocks.len() {
            let (mine, theirs) = (f.layout.blocks[i].clone(), other.layout.blocks[i].clone());
            if mine != theirs {
                continue; // compressed sizes may differ; splicing needs the same length
            }
            let mut spliced = f.bytes.clone();
            spliced[mine].copy_from_slice(&other.bytes[theirs]);
            let what = format!("{}: block {i} spliced", f.name);
            let err = expect_auth_failure(open_and_unpack(spliced, &key), &what);
            assert!(
                matches!(err.root(), Error::Corrupt { block: Some(b), .. } if *b == i as u64),
                "{what}: {err}"
            );
            spliced_blocks += 1;
        }
        // Same plaintext and options give the same block lengths, so every block was tried.
        assert_eq!(spliced_blocks, f.layout.blocks.len(), "{}", f.name);
    }
}

#[test]
fn dropping_the_last_block_and_reindexing_without_the_key_fails() {
    let key = key_file_key(KEY_BYTE);
    for f in fixtures() {
        let n = f.layout.blocks.len();
        // The helper rebuilds exactly the original when nothing is dropped...
        assert!(reindex_without_key(&f.bytes, n) == f.bytes);
        for keep in [n - 1, 1, 0] {
            let cut = reindex_without_key(&f.bytes, keep);
            // ...and a structurally consistent container otherwise: only the MAC can catch it.
            let info = ContainerInfo::read(&cut).expect("consistent structure");
            assert_eq!(info.block_count(), keep as u64);
            let what = format!("{}: kept {keep} blocks", f.name);
            let err = expect_auth_failure(open_and_unpack(cut, &key), &what);
            assert!(matches!(err.root(), Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("footer"), "{err}");
        }
    }
}

#[test]
fn appended_bytes_fail() {
    let key = key_file_key(KEY_BYTE);
    for f in VERSIONS.map(|v| fixture(true, v)) {
        check_appended_bytes(&f, &key);
    }
}

fn check_appended_bytes(f: &Fixture, key: &qeltrix::Key) {
    let trailer = f.bytes[f.layout.trailer.clone()].to_vec();
    for tail in [
        vec![0u8],
        vec![0u8; 31],
        random_bytes(100, 3),
        trailer,
        vec![0u8; 4096],
    ] {
        let mut longer = f.bytes.clone();
        longer.extend_from_slice(&tail);
        expect_auth_failure(
            open_and_unpack(longer, key),
            &format!("{}: {} bytes appended", f.name, tail.len()),
        );
    }
}
