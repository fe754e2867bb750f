//! The tamper matrix (after Tink's streaming-AEAD reader tests): every single-byte change to a
//! block, the footer, the trailer or the active key-slot area, every truncation, swapped, spliced
//! and dropped blocks, and appended garbage must be rejected as an authentication failure, by the
//! library and by the CLI (exit code 3, no output file and no temporary file left behind). Header
//! bytes outside the slot areas must either be rejected or change nothing.

mod common;

use common::*;
use qeltrix::format::{
    FormatVersion, Header, Trailer, BLOCK_HEAD_LEN, BLOCK_PREFIX_LEN, HEADER_LEN, SEGMENT_LEN, SLOT_AREA_B,
    SLOT_AREA_LEN, TAG_LEN, TRAILER_LEN,
};
use qeltrix::stream_reader::StreamReader;
use qeltrix::{CipherId, CompressMode, Container, ContainerInfo, Error, FileMeta, ReadAt};
use std::fs::OpenOptions;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

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
                    let known_version = (1..=3).contains(&u16::from_le_bytes([bytes[8], bytes[9]]));
                    if pos < 8 || (pos < 10 && !known_version) {
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

// Format v2: payloads in 16 KiB segments, each its own AEAD, read three ways. `Container::read_at`
// opens only the segments a range needs (with the block key from the footer's metadata copy),
// `unpack_to` opens whole blocks, and `StreamReader` reads front to back. Each must stop at the
// first tampered byte it meets, name the block (and the segment), and never return a wrong byte.

const SEG: usize = SEGMENT_LEN as usize;
const SEALED_SEG: usize = SEG + TAG_LEN;
const V2_BLOCK: usize = 64 * KIB;

/// A v2 container whose blocks hold several segments: block 0 is four full segments, block 1
/// one full segment and a 100-byte one. The footer holds a file record. Its compressed twin has
/// the same shape, but each block is one (compressed) segment.
struct SegFixture {
    compressed: bool,
    plain: Vec<u8>,
    bytes: Arc<Vec<u8>>,
    layout: Layout,
    /// Per block, where each sealed segment lies in the container.
    segments: Vec<Vec<Range<usize>>>,
}

fn seg_fixture(cipher: CipherId) -> SegFixture {
    v2_fixture(cipher, false)
}

fn v2_fixture(cipher: CipherId, compressed: bool) -> SegFixture {
    let len = V2_BLOCK + SEG + 100;
    let (plain, mode) = if compressed {
        (text_bytes(len, 8), CompressMode::Always)
    } else {
        (random_bytes(len, 9), CompressMode::Never)
    };
    let mut o = opts(cipher, V2_BLOCK, mode);
    o.file_meta = Some(FileMeta {
        name: b"segments.bin".to_vec(),
        mode: 0o640,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
    });
    let bytes = pack_seekable(&plain, &[key_file_key(KEY_BYTE)], &o);
    let layout = layout(&bytes);
    let info = ContainerInfo::read(&bytes).unwrap();
    assert_eq!(info.version(), FormatVersion::V2);
    let record = info.footer_v2.as_ref().unwrap().file_record.as_ref();
    assert!(record.is_some(), "the fixture has a file record");
    let segments: Vec<Vec<Range<usize>>> = layout
        .blocks
        .iter()
        .map(|b| {
            let payload = b.start + BLOCK_HEAD_LEN..b.end;
            if compressed {
                return vec![payload];
            }
            payload
                .clone()
                .step_by(SEALED_SEG)
                .map(|s| s..(s + SEALED_SEG).min(payload.end))
                .collect()
        })
        .collect();
    let counts: Vec<usize> = segments.iter().map(Vec::len).collect();
    if compressed {
        let raw_len = BLOCK_HEAD_LEN + V2_BLOCK + 4 * TAG_LEN;
        assert!(layout.blocks[0].len() < raw_len, "the fixture compresses");
    } else {
        assert_eq!(counts, [4, 2], "the fixture's segments");
        assert_eq!(segments[1][1].len(), 100 + TAG_LEN);
    }
    let c = Container::from_source(bytes.clone(), &key_file_key(KEY_BYTE)).unwrap();
    assert_eq!(c.file_meta().unwrap().unwrap().name, b"segments.bin");
    assert!(unpack_all(c).unwrap() == plain);
    SegFixture {
        compressed,
        plain,
        bytes: Arc::new(bytes),
        layout,
        segments,
    }
}

impl SegFixture {
    /// The block and segment holding container byte `pos`, if it is in a segment.
    fn segment_of(&self, pos: usize) -> Option<(u64, u32)> {
        self.segments.iter().enumerate().find_map(|(b, segs)| {
            let j = segs.iter().position(|s| s.contains(&pos))?;
            Some((b as u64, j as u32))
        })
    }

    fn block_of(&self, pos: usize) -> Option<u64> {
        self.layout
            .blocks
            .iter()
            .position(|b| b.contains(&pos))
            .map(|b| b as u64)
    }

    /// Plaintext offsets of segment `j` of block `block` (every block but the last is full).
    fn plain_of(&self, block: u64, j: u32) -> Range<usize> {
        if self.compressed {
            let start = block as usize * V2_BLOCK;
            return start..(start + V2_BLOCK).min(self.plain.len());
        }
        let start = block as usize * V2_BLOCK + j as usize * SEG;
        start
            ..(start + SEG)
                .min((block as usize + 1) * V2_BLOCK)
                .min(self.plain.len())
    }
}

/// A container held in memory with one byte changed, read without copying the rest.
struct Flipped {
    base: Arc<Vec<u8>>,
    pos: usize,
    byte: u8,
}

impl ReadAt for Flipped {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.base.read_exact_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        if (offset..end).contains(&(self.pos as u64)) {
            buf[self.pos - offset as usize] = self.byte;
        }
        Ok(())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.base.len() as u64)
    }
}

/// A container held in memory, cut after `len` bytes.
struct Cut {
    base: Arc<Vec<u8>>,
    len: usize,
}

impl ReadAt for Cut {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset + buf.len() as u64 > self.len as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.base.read_exact_at(buf, offset)
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len as u64)
    }
}

/// Reads the whole container with the stream reader, checking every block it returns against
/// `plain` as it arrives. `Ok` only once the footer is verified.
fn stream_all(input: impl Read, plain: &[u8]) -> qeltrix::Result<()> {
    let mut r = StreamReader::open(input, &key_file_key(KEY_BYTE))?;
    let mut at = 0;
    while let Some(block) = r.next_block(true)? {
        assert!(
            plain.get(at..at + block.len()) == Some(&block[..]),
            "the stream reader returned wrong plaintext at {at}"
        );
        at += block.len();
    }
    assert_eq!(at, plain.len(), "the stream reader finished early");
    Ok(())
}

/// True when `e` is corruption of block `block` and, if `segment` is given, says so.
fn names(e: &Error, block: u64, segment: Option<u32>) -> bool {
    match e.root() {
        Error::Corrupt {
            what, block: Some(b), ..
        } => *b == block && segment.is_none_or(|j| what.starts_with(&format!("segment {j} "))),
        _ => false,
    }
}

/// Reads plaintext `range` through `read_at`; a success must be the original bytes.
fn read_range<S: ReadAt>(c: &Container<S>, plain: &[u8], range: Range<usize>) -> qeltrix::Result<()> {
    let mut buf = vec![0u8; range.len()];
    let n = c.read_at(range.start as u64, &mut buf)?;
    assert_eq!(n, range.len());
    assert!(
        buf == plain[range.clone()],
        "read_at {range:?} returned wrong plaintext"
    );
    Ok(())
}

/// Small `read_at` ranges: the start and the end of each segment, and one across each segment
/// boundary.
fn small_ranges(f: &SegFixture) -> Vec<Range<usize>> {
    let mut r = Vec::new();
    for (b, segs) in f.segments.iter().enumerate() {
        for j in 0..segs.len() {
            let p = f.plain_of(b as u64, j as u32);
            r.extend([p.start..p.start + 10, p.end - 10..p.end, p.end - 5..p.end + 5]);
        }
    }
    r.retain(|r| r.end <= f.plain.len());
    r
}

/// Checks the three readers on `f` with byte `pos` changed to `byte`: each fails (or, where the
/// byte is one the format may ignore, returns exactly the original), and names the block and
/// segment the byte is in.
fn check_v2_flip(f: &SegFixture, pos: usize, byte: u8, must_fail: bool) {
    let key = key_file_key(KEY_BYTE);
    let what = format!("byte {pos} set to {byte:#04x}");
    let block = f.block_of(pos);
    let segment = f.segment_of(pos);
    let source = || Flipped {
        base: Arc::clone(&f.bytes),
        pos,
        byte,
    };
    let check_err = |e: &Error, reader: &str| {
        assert!(
            e.is_auth_failure() || e.is_not_a_container(),
            "{what}: {reader}: {e}"
        );
        if let Some(b) = block {
            let j = segment.map(|(_, j)| j);
            assert!(
                names(e, b, j),
                "{what}: {reader} does not name block {b} segment {j:?}: {e}"
            );
        }
    };
    let opened = Container::from_source(source(), &key);
    let failed = match opened {
        Err(e) => {
            check_err(&e, "open");
            true
        }
        Ok(c) => {
            // Ranges first: only the segments they need are read, with the footer's metadata.
            let c = Arc::new(c);
            let mut ranges_failed = false;
            for r in small_ranges(f) {
                let in_flipped = segment.is_some_and(|(b, j)| {
                    let p = f.plain_of(b, j);
                    r.start < p.end && p.start < r.end
                });
                match read_range(&c, &f.plain, r.clone()) {
                    Ok(()) => assert!(!in_flipped, "{what}: read_at {r:?} read a changed segment"),
                    Err(e) => {
                        check_err(&e, &format!("read_at {r:?}"));
                        ranges_failed = true;
                    }
                }
            }
            if let Some(b) = block {
                let e = c.read_block(b, true).expect_err(&what);
                check_err(&e, "read_block");
            }
            let mut out = Vec::new();
            match c.unpack_to(&mut out, true, 1, &|_| {}) {
                Err(e) => {
                    check_err(&e, "unpack_to");
                    true
                }
                Ok(_) => {
                    assert!(!ranges_failed, "{what}: read_at failed where unpack_to did not");
                    assert!(out == f.plain, "{what}: unpack_to returned wrong plaintext");
                    false
                }
            }
        }
    };
    let one = [byte];
    let input = Read::chain(&f.bytes[..pos], &one[..]).chain(&f.bytes[pos + 1..]);
    let streamed = stream_all(input, &f.plain);
    if let Err(e) = &streamed {
        check_err(e, "stream reader");
    }
    assert_eq!(
        streamed.is_err(),
        failed,
        "{what}: the stream reader and unpack_to disagree"
    );
    if must_fail {
        assert!(failed, "{what}: read back without an error");
    }
}

/// Where every byte is checked, and where a payload is sampled (the AEAD treats its bytes
/// alike): a segment's first and last 32 bytes (its tag among them) always, between them every
/// 29th.
fn v2_positions(f: &SegFixture) -> Vec<usize> {
    let l = &f.layout;
    let mut positions: Vec<usize> = (0..72).chain(l.slot_area_a.clone()).collect();
    for (b, segs) in l.blocks.iter().zip(&f.segments) {
        positions.extend(b.start..b.start + BLOCK_HEAD_LEN);
        for s in segs {
            positions.extend(s.start..s.start + 32);
            positions.extend((s.start + 32..s.end - 32).step_by(29));
            positions.extend(s.end - 32..s.end);
        }
    }
    positions.extend(l.footer.clone());
    positions.extend(l.trailer.clone());
    positions
}

#[test]
fn v2_every_flip_is_caught_by_every_reader_naming_the_block_and_segment() {
    for (cipher, compressed) in [
        (CipherId::Aes256Gcm, false),
        (CipherId::ChaCha20Poly1305, false),
        (CipherId::Aes256Gcm, true),
    ] {
        let f = v2_fixture(cipher, compressed);
        let positions = v2_positions(&f);
        // The whole head, the footer (file record included) and the trailer, every byte.
        assert!(positions.len() > 72 + 1072 + 2 * BLOCK_HEAD_LEN + f.layout.footer.len());
        for pos in positions {
            check_v2_flip(&f, pos, flipped(f.bytes[pos], pos), true);
        }
    }
}

#[test]
fn v2_header_flips_outside_the_used_fields_fail_or_change_nothing() {
    let f = seg_fixture(CipherId::Aes256Gcm);
    for pos in (72..HEADER_LEN)
        .step_by(7)
        .filter(|p| !f.layout.slot_area_a.contains(p))
    {
        check_v2_flip(&f, pos, flipped(f.bytes[pos], pos), false);
    }
}

#[test]
fn v2_every_truncation_fails_in_every_reader() {
    let f = seg_fixture(CipherId::ChaCha20Poly1305);
    let key = key_file_key(KEY_BYTE);
    for len in 0..f.bytes.len() {
        let cut = Cut {
            base: Arc::clone(&f.bytes),
            len,
        };
        let e = Container::from_source(cut, &key).map(drop).expect_err("cut");
        assert!(
            e.is_auth_failure() || len == 0 && e.is_not_a_container(),
            "cut at {len}: {e}"
        );
    }
    // The stream reader reads up to the cut; every cut in the heads, the footer and the trailer,
    // at and around each segment boundary, and a sample of the payloads.
    let l = &f.layout;
    let mut cuts: Vec<usize> = (0..HEADER_LEN).step_by(509).collect();
    for (b, segs) in l.blocks.iter().zip(&f.segments) {
        cuts.extend(b.start..b.start + BLOCK_HEAD_LEN + 1);
        for s in segs {
            cuts.extend((s.start..s.end).step_by(1021));
            cuts.extend([s.end - 17, s.end - 16, s.end - 1, s.end, s.end + 1]);
        }
    }
    cuts.extend(l.footer.start..l.len);
    for len in cuts.into_iter().filter(|&len| len < l.len) {
        let e = stream_all(&f.bytes[..len], &f.plain).expect_err("a cut stream");
        assert!(
            e.is_auth_failure() || len == 0 && e.is_not_a_container(),
            "cut at {len}: {e}"
        );
        if let Some(b) = f.block_of(len) {
            assert!(e.to_string().contains(&format!("block {b}")), "cut at {len}: {e}");
        }
    }
}

/// The container with sealed segment `from` (block, segment) copied over segment `to`.
fn with_segment(f: &SegFixture, from: (usize, usize), to: (usize, usize)) -> Vec<u8> {
    let (src, dst) = (f.segments[from.0][from.1].clone(), f.segments[to.0][to.1].clone());
    assert_eq!(src.len(), dst.len());
    let mut bytes = f.bytes.to_vec();
    bytes[dst].copy_from_slice(&f.bytes[src]);
    bytes
}

/// Every reader must fail on `bytes`, naming `block` and `segment`; `read_at` of the segment
/// fails, and of the others in the block succeeds.
fn segments_rejected(f: &SegFixture, bytes: Vec<u8>, block: u64, bad: &[u32], what: &str) {
    let key = key_file_key(KEY_BYTE);
    let first = bad[0];
    let c = Arc::new(Container::from_source(bytes.clone(), &key).unwrap());
    let e = c.read_block(block, true).expect_err(what);
    assert!(names(&e, block, Some(first)), "{what}: read_block: {e}");
    let e = c
        .unpack_to(&mut std::io::sink(), true, 1, &|_| {})
        .expect_err(what);
    assert!(names(&e, block, Some(first)), "{what}: unpack_to: {e}");
    for j in 0..f.segments[block as usize].len() as u32 {
        let p = f.plain_of(block, j);
        let got = read_range(&c, &f.plain, p.start + 1..p.start + 100);
        if bad.contains(&j) {
            let e = got.expect_err(what);
            assert!(names(&e, block, Some(j)), "{what}: read_at segment {j}: {e}");
        } else {
            got.unwrap_or_else(|e| panic!("{what}: read_at of untouched segment {j}: {e}"));
        }
    }
    let e = stream_all(&bytes[..], &f.plain).expect_err(what);
    assert!(names(&e, block, Some(first)), "{what}: stream reader: {e}");
}

#[test]
fn v2_swapped_moved_and_duplicated_segments_fail_naming_the_segment() {
    let f = seg_fixture(CipherId::Aes256Gcm);
    // Swapped within block 0.
    let mut swapped = with_segment(&f, (0, 2), (0, 1));
    let s2 = f.segments[0][2].clone();
    swapped[s2].copy_from_slice(&f.bytes[f.segments[0][1].clone()]);
    segments_rejected(&f, swapped, 0, &[1, 2], "segments 1 and 2 of block 0 swapped");
    // Moved across blocks, both ways: same index, other block; other index, other block.
    let moved = with_segment(&f, (1, 0), (0, 0));
    segments_rejected(
        &f,
        moved,
        0,
        &[0],
        "segment 0 of block 1 over segment 0 of block 0",
    );
    let moved = with_segment(&f, (0, 3), (1, 0));
    segments_rejected(
        &f,
        moved,
        1,
        &[0],
        "segment 3 of block 0 over segment 0 of block 1",
    );
    // Duplicated: a segment written again in its neighbour's place.
    let dup = with_segment(&f, (0, 0), (0, 1));
    segments_rejected(&f, dup, 0, &[1], "segment 0 of block 0 duplicated over segment 1");
    // The last segment of block 0 is full, like the others, but sealed with the last flag.
    let dup = with_segment(&f, (0, 3), (0, 2));
    segments_rejected(&f, dup, 0, &[2], "the last segment of block 0 over segment 2");
    let dup = with_segment(&f, (0, 2), (0, 3));
    segments_rejected(&f, dup, 0, &[3], "segment 2 of block 0 over its last segment");
}

/// `bytes` without container bytes `cut`, with the trailer (and the header's copy) pointing at the
/// footer again, which moved up by `cut.len()`.
fn without(f: &SegFixture, cut: Range<usize>) -> Vec<u8> {
    let info = ContainerInfo::read(&f.bytes[..].to_vec()).unwrap();
    let mut bytes = f.bytes.to_vec();
    bytes.drain(cut.clone());
    let trailer = Trailer {
        footer_offset: info.trailer.footer_offset - cut.len() as u64,
        footer_size: info.trailer.footer_size,
    };
    let n = bytes.len();
    bytes[n - TRAILER_LEN..].copy_from_slice(&trailer.encode());
    let mut h = info.header.clone();
    h.footer_offset = trailer.footer_offset;
    bytes[..HEADER_LEN].copy_from_slice(&h.encode());
    bytes
}

#[test]
fn v2_a_dropped_last_segment_fails_naming_the_block() {
    let f = seg_fixture(CipherId::ChaCha20Poly1305);
    let key = key_file_key(KEY_BYTE);
    // The last segment of the last block dropped, the footer found again: the footer's entry says
    // the block is longer.
    let last = f.segments[1][1].clone();
    let dropped = without(&f, last.clone());
    let e = ContainerInfo::read(&dropped).map(drop).expect_err("dropped");
    assert!(names(&e, 1, None), "ContainerInfo::read: {e}");
    let e = open_and_unpack(dropped.clone(), &key).expect_err("dropped");
    assert!(names(&e, 1, None), "open: {e}");
    // The stream reader takes the block's length from its prefix, so it reads on into the
    // footer and the segment's AEAD fails.
    let e = stream_all(&dropped[..], &f.plain).expect_err("dropped");
    assert!(names(&e, 1, Some(1)), "stream reader: {e}");

    // The last segment of block 0 dropped: the stream reader reads block 1's head as its end.
    let e = stream_all(&without(&f, f.segments[0][3].clone())[..], &f.plain).expect_err("dropped");
    assert!(names(&e, 0, Some(3)), "stream reader, block 0: {e}");

    // Re-indexed as far as can be done without the key (prefix length, footer entry, block
    // hash, root, trailer, header): the structure is consistent, the AEADs and the MAC are not.
    let mut forged = without(&f, last.clone());
    let mut info = ContainerInfo::read(&f.bytes[..].to_vec()).unwrap();
    let b1 = f.layout.blocks[1].start;
    let payload_len = (f.layout.blocks[1].len() - BLOCK_HEAD_LEN - last.len()) as u32;
    forged[b1 + 16..b1 + 20].copy_from_slice(&payload_len.to_le_bytes());
    let v2 = info.footer_v2.as_mut().unwrap();
    v2.entries[1].entry.len -= last.len() as u64;
    v2.entries[1].block_hash = *blake3::hash(&forged[b1..last.start]).as_bytes();
    v2.root = v2_root(v2);
    let footer = v2.encode();
    let fo = info.trailer.footer_offset as usize - last.len();
    forged[fo..fo + footer.len()].copy_from_slice(&footer);
    assert!(ContainerInfo::read(&forged).is_ok(), "a consistent structure");
    let e = open_and_unpack(forged.clone(), &key).expect_err("forged");
    assert!(e.to_string().contains("footer"), "open: {e}");
    let e = stream_all(&forged[..], &f.plain).expect_err("forged");
    assert!(names(&e, 1, None), "stream reader: {e}");
}

#[test]
fn v2_a_block_of_a_newer_version_is_not_a_container() {
    // A reader that knows only versions 1 to 4 meets version 5: not a container (exit 4), and
    // the message says which version.
    let f = seg_fixture(CipherId::Aes256Gcm);
    let mut bytes = f.bytes.to_vec();
    bytes[8..10].copy_from_slice(&5u16.to_le_bytes());
    match Header::decode(&bytes[..HEADER_LEN]) {
        Err(Error::NotAContainer(m)) => assert_eq!(m, "unsupported format version 5"),
        r => panic!("version 5: {r:?}"),
    }
    let e = open_and_unpack(bytes.clone(), &key_file_key(KEY_BYTE)).unwrap_err();
    assert!(e.is_not_a_container(), "{e}");
    let e = stream_all(&bytes[..], &f.plain).unwrap_err();
    assert!(e.is_not_a_container(), "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]


    /// Any byte anywhere, set to any other value: no reader returns other plaintext with `Ok`.
    #[test]
    fn v2_no_change_of_a_byte_yields_other_plaintext(at in 0usize..1 << 20, to in 1u8..=255) {
        let f = v2_shared();
        let pos = at % f.bytes.len();
        check_v2_flip(f, pos, f.bytes[pos] ^ to, false);
    }
}

fn v2_shared() -> &'static SegFixture {
    static F: std::sync::OnceLock<SegFixture> = std::sync::OnceLock::new();
    F.get_or_init(|| seg_fixture(CipherId::ChaCha20Poly1305))
}

/// Format 3: bytes of an edited-in-place container (the frozen one: four generations, with
/// superseded block versions and footers between the current ones), flipped, either fails to
/// open or read, or reads back the same plaintext (the byte was superseded, reserved, a commit
/// record's stale copy, or an inactive slot area). The flipped file is read whole, as unpack does.
#[test]
fn v3_every_byte_flip_fails_or_changes_nothing() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let bytes = std::fs::read(data.join("good/v3-edited.qltx")).unwrap();
    let hex = std::fs::read_to_string(data.join("keys/keyfile.hex")).unwrap();
    let key = qeltrix::Key::KeyFile(qeltrix::crypto::KeyFileKey::from_bytes(
        hex::decode(hex.trim()).unwrap().try_into().unwrap(),
    ));
    let plain = open_and_unpack(bytes.clone(), &key).unwrap();
    let info = ContainerInfo::read(&bytes).unwrap();
    let live = |p: usize| {
        info.footer
            .entries
            .iter()
            .any(|e| (e.offset..e.offset + e.len).contains(&(p as u64)))
    };
    let (mut changed_nothing, mut failed) = (0, 0);
    // Every byte of the header's fields and commit records and of the current footer and
    // trailer; every fifth byte elsewhere (slot areas, blocks current and superseded).
    let footer = info.trailer.footer_offset as usize;
    let every = |pos: &usize| *pos < 200 || *pos >= footer || pos.is_multiple_of(5);
    for pos in (0..bytes.len()).filter(every) {
        let mut b = bytes.clone();
        b[pos] ^= 0x01 << (pos % 8);
        match open_and_unpack(b, &key) {
            Ok(p) => {
                assert!(p == plain, "byte {pos} flipped: other plaintext returned");
                assert!(
                    !live(pos),
                    "byte {pos} of a current block flipped and not noticed"
                );
                changed_nothing += 1;
            }
            Err(_) => failed += 1,
        }
    }
    assert!(
        changed_nothing > 0 && failed > 0,
        "{changed_nothing} unchanged, {failed} failed"
    );
}
