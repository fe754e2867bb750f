//! Parser robustness: `ContainerInfo::read` and `Container::from_source` on arbitrary bytes and on
//! mutated valid containers (overwrites, cuts, extensions, insertions, removals) never panic,
//! fail only as authentication failures, and never return wrong plaintext. Headers and trailers
//! that claim huge footers or block counts are rejected without allocating what they claim: a
//! counting global allocator measures the largest allocation made while opening.

mod common;

use common::*;
use proptest::prelude::*;
use qeltrix::format::{
    Footer, FooterEntry, FooterEntryV2, FooterV2, FormatVersion, Header, Trailer, BLOCK_HEAD_LEN,
    FOOTER_ENTRY_LEN, FOOTER_FIXED_LEN, FOOTER_HEAD_LEN, FOOTER_V2_ENTRY_LEN, FOOTER_V2_FIXED_LEN,
    FOOTER_V2_HEAD_LEN, HEADER_LEN, META_LEN, TAG_LEN, TRAILER_LEN,
};
use qeltrix::{CipherId, CompressMode, Container, ContainerInfo, Error, Key, ReadAt};
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::sync::OnceLock;

/// Records, per thread, the largest single allocation requested.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards every call to the system allocator unchanged; it only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the largest allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

struct Valid {
    plain: Vec<u8>,
    bytes: Vec<u8>,
}

fn key() -> Key {
    key_file_key(0x5a)
}

/// Both format versions: every parser test runs on v1 (still writable) and v2.
const VERSIONS: [FormatVersion; 2] = [FormatVersion::V1, FormatVersion::V2];

/// A seekable (compressed and raw blocks) and a streamed container of each version, made once.
fn valid(streamed: bool, version: FormatVersion) -> &'static Valid {
    static CELLS: [OnceLock<Valid>; 4] = [const { OnceLock::new() }; 4];
    let v2 = version == FormatVersion::V2;
    CELLS[streamed as usize + 2 * v2 as usize].get_or_init(|| {
        let plain = data(DataKind::Mixed, 3 * 4096 + 2000, 77);
        let o = in_version(opts(CipherId::Aes256Gcm, 4096, CompressMode::Auto), version);
        let bytes = if streamed {
            pack_stream(&plain, &[key()], &o)
        } else {
            pack_seekable(&plain, &[key()], &o)
        };
        Valid { plain, bytes }
    })
}

/// Feeds `bytes` to both parsers and checks the invariants: no panic, errors are authentication
/// failures, `from_source` fails whenever `ContainerInfo::read` does, and whatever decrypts is
/// the original plaintext (`plain`, when the bytes came from a valid container).
fn check_parsers(bytes: Vec<u8>, plain: Option<&[u8]>) {
    let info = ContainerInfo::read(&bytes);
    if let Err(e) = &info {
        assert!(
            e.is_auth_failure() || e.is_not_a_container(),
            "ContainerInfo::read: {e}"
        );
        let _ = e.to_string();
    }
    let opened = Container::from_source(bytes, &key());
    let c = match opened {
        Err(e) => {
            assert!(e.is_auth_failure() || e.is_not_a_container(), "from_source: {e}");
            return;
        }
        Ok(c) => c,
    };
    assert!(
        info.is_ok(),
        "from_source opened what ContainerInfo::read rejects"
    );
    let plain = plain.expect("random bytes never open with the key");
    for i in 0..c.block_count() {
        match c.read_block(i, true) {
            Ok(block) => {
                let e = c.entry(i).unwrap();
                let want = &plain[e.plain_offset as usize..(e.plain_offset + e.plain_size) as usize];
                assert!(block == want, "block {i} decrypted to other bytes");
            }
            Err(e) => assert!(e.is_auth_failure(), "block {i}: {e}"),
        }
    }
    match unpack_all(c) {
        Ok(out) => assert!(out == plain, "a modified container decrypted to other bytes"),
        Err(e) => assert!(e.is_auth_failure(), "unpack: {e}"),
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Overwrite {
        at: usize,
        from_end: bool,
        byte: u8,
    },
    Truncate {
        at: usize,
        from_end: bool,
    },
    Extend(Vec<u8>),
    Insert {
        at: usize,
        from_end: bool,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        from_end: bool,
        len: usize,
    },
}

/// A position in `0..len` (or `len` for an empty buffer), counted from either end; positions near
/// the end hit the footer and trailer more often than uniform ones would.
fn resolve(at: usize, from_end: bool, len: usize) -> usize {
    if len == 0 {
        0
    } else if from_end {
        len - 1 - at % len
    } else {
        at % len
    }
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Overwrite { at, from_end, byte } => {
            if !bytes.is_empty() {
                let p = resolve(*at, *from_end, bytes.len());
                bytes[p] = *byte;
            }
        }
        Mutation::Truncate { at, from_end } => bytes.truncate(resolve(*at, *from_end, bytes.len())),
        Mutation::Extend(tail) => bytes.extend_from_slice(tail),
        Mutation::Insert {
            at,
            from_end,
            bytes: ins,
        } => {
            let p = resolve(*at, *from_end, bytes.len());
            bytes.splice(p..p, ins.iter().copied());
        }
        Mutation::Remove { at, from_end, len } => {
            let p = resolve(*at, *from_end, bytes.len());
            let end = (p + len).min(bytes.len());
            bytes.drain(p..end);
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = (0usize..20_000, any::<bool>());
    prop_oneof![
        4 => (pos.clone(), any::<u8>()).prop_map(|((at, from_end), byte)| Mutation::Overwrite { at, from_end, byte }),
        1 => pos.clone().prop_map(|(at, from_end)| Mutation::Truncate { at, from_end }),
        1 => proptest::collection::vec(any::<u8>(), 1..100).prop_map(Mutation::Extend),
        1 => (pos.clone(), proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|((at, from_end), bytes)| Mutation::Insert { at, from_end, bytes }),
        1 => (pos, 1usize..200).prop_map(|((at, from_end), len)| Mutation::Remove { at, from_end, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
        check_parsers(bytes, None);
    }

    /// A valid header (so the slot areas parse and the key unwraps), then arbitrary bytes, then
    /// optionally a well-formed trailer that points at part of them as the footer.
    #[test]
    fn a_valid_header_over_arbitrary_bytes_never_panics(
        tail in proptest::collection::vec(any::<u8>(), 0..3000),
        footer_at in 0usize..3000,
        with_trailer in any::<bool>(),
        v2 in any::<bool>(),
    ) {
        let version = if v2 { FormatVersion::V2 } else { FormatVersion::V1 };
        let mut bytes = valid(false, version).bytes[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&tail);
        if with_trailer {
            let footer_offset = (HEADER_LEN + footer_at.min(tail.len())) as u64;
            let trailer = Trailer { footer_offset, footer_size: bytes.len() as u64 - footer_offset };
            bytes.extend_from_slice(&trailer.encode());
        }
        check_parsers(bytes, None);
    }

    #[test]
    fn mutated_containers_never_panic_nor_give_wrong_plaintext(
        streamed in any::<bool>(),
        v2 in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let version = if v2 { FormatVersion::V2 } else { FormatVersion::V1 };
        let v = valid(streamed, version);
        let mut bytes = v.bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_parsers(bytes, Some(&v.plain));
    }
}

#[test]
fn the_valid_fixtures_open() {
    for streamed in [false, true] {
        for version in VERSIONS {
            let v = valid(streamed, version);
            assert_eq!(v.bytes[8..10], version.number().to_le_bytes());
            assert!(open_and_unpack(v.bytes.clone(), &key()).unwrap() == v.plain);
        }
    }
}

/// Rewrites the trailer (and, for a patched header, the header's copy) to claim a footer of
/// `footer_size` bytes at `footer_offset`.
fn claim_footer(bytes: &mut [u8], footer_offset: u64, footer_size: u64) {
    let n = bytes.len();
    bytes[n - TRAILER_LEN..].copy_from_slice(
        &Trailer {
            footer_offset,
            footer_size,
        }
        .encode(),
    );
    let mut h = Header::decode(&bytes[..HEADER_LEN]).unwrap();
    h.footer_offset = footer_offset;
    h.footer_size = footer_size;
    bytes[..HEADER_LEN].copy_from_slice(&h.encode());
}

/// Opens `bytes` both ways; both must fail, allocating no more than `limit` bytes at once.
fn rejected_without_allocating<S: ReadAt>(source: S, limit: usize, what: &str) {
    let (info, largest) = largest_allocation(|| ContainerInfo::read(&source).map(drop));
    let e = info.expect_err(what);
    assert!(e.is_auth_failure(), "{what}: {e}");
    assert!(
        largest <= limit,
        "{what}: ContainerInfo::read allocated {largest} bytes"
    );
    let (opened, largest) = largest_allocation(|| Container::from_source(source, &key()).map(drop));
    let e = opened.expect_err(what);
    assert!(e.is_auth_failure(), "{what}: {e}");
    assert!(
        largest <= limit,
        "{what}: Container::from_source allocated {largest} bytes"
    );
}

#[test]
fn huge_claims_in_memory_are_rejected_without_allocating() {
    for version in VERSIONS {
        huge_claims_are_rejected(version);
    }
}

fn huge_claims_are_rejected(version: FormatVersion) {
    let v = valid(false, version);
    let fixed_len = match version {
        FormatVersion::V1 => FOOTER_FIXED_LEN,
        FormatVersion::V2 => FOOTER_V2_FIXED_LEN,
        FormatVersion::V3 | FormatVersion::V4 => unreachable!("versions 3 and 4 have their own tests"),
    };
    let info = ContainerInfo::read(&v.bytes).unwrap();
    let (fo, fs) = (info.trailer.footer_offset, info.trailer.footer_size);
    let limit = 64 * KIB;
    for (offset, size) in [
        (fo, u64::MAX),
        (fo, u64::MAX - fo + 1), // offset + size wraps to 0
        (fo, 1 << 40),
        (HEADER_LEN as u64, 1 << 40),
        (u64::MAX - 10, fs),
        (fo + 1, fs),
        (fo, fs + 1),
        (fo, (fixed_len - 1) as u64),
    ] {
        let mut bytes = v.bytes.clone();
        claim_footer(&mut bytes, offset, size);
        let what = format!("v{}: footer of {size} at {offset}", version.number());
        rejected_without_allocating(bytes, limit, &what);
    }

    // The footer's entry count, huge, in a footer of the right length.
    for count in [u64::MAX, 1 << 40, 1 << 20, info.block_count() + 1] {
        let mut bytes = v.bytes.clone();
        bytes[fo as usize + 8..fo as usize + 16].copy_from_slice(&count.to_le_bytes());
        let what = format!("v{}: footer count {count}", version.number());
        rejected_without_allocating(bytes, limit, &what);
    }

    // The header's totals, huge.
    for field in 0..2 {
        let mut bytes = v.bytes.clone();
        let mut h = info.header.clone();
        if field == 0 {
            h.total_blocks = u64::MAX;
        } else {
            h.original_size = 1 << 60;
        }
        bytes[..HEADER_LEN].copy_from_slice(&h.encode());
        let what = format!("v{}: header total {field}", version.number());
        rejected_without_allocating(bytes, limit, &what);
    }
}

/// A source that claims `size` bytes but holds only a few pieces; everything else reads as
/// zeros, like a sparse file (or an object store that lies about its length).
struct Sparse {
    size: u64,
    pieces: Vec<(u64, Vec<u8>)>,
}

impl ReadAt for Sparse {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.fill(0);
        for (at, piece) in &self.pieces {
            let (from, to) = (offset.max(*at), end.min(at + piece.len() as u64));
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&piece[(from - at) as usize..(to - at) as usize]);
            }
        }
        Ok(())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.size)
    }
}

#[test]
fn a_huge_sparse_source_claiming_a_huge_footer_is_rejected_without_allocating() {
    for version in VERSIONS {
        sparse_source_is_rejected(version);
    }
}

fn sparse_source_is_rejected(version: FormatVersion) {
    let v = valid(false, version);
    let info = ContainerInfo::read(&v.bytes).unwrap();
    let fo = info.trailer.footer_offset as usize;
    let size: u64 = 1 << 40;
    let trailer_at = size - TRAILER_LEN as u64;
    let limit = 4 * MIB;

    // A footer that fills everything between the header and the trailer: zeros, or a real
    // footer head and entries followed by zeros.
    let real_footer = v.bytes[fo..v.bytes.len() - TRAILER_LEN].to_vec();
    for footer_start in [None, Some(real_footer.clone())] {
        let mut header_and_blocks = v.bytes[..fo].to_vec();
        let footer_offset = fo as u64;
        let footer_size = trailer_at - footer_offset;
        claim_footer(&mut header_and_blocks[..], footer_offset, footer_size);
        let mut pieces = vec![(0, header_and_blocks)];
        if let Some(f) = &footer_start {
            pieces.push((footer_offset, f.clone()));
        }
        pieces.push((
            trailer_at,
            Trailer {
                footer_offset,
                footer_size,
            }
            .encode()
            .to_vec(),
        ));
        let what = format!(
            "v{}: 1 TiB source, footer starting with real entries: {}",
            version.number(),
            footer_start.is_some()
        );
        rejected_without_allocating(Sparse { size, pieces }, limit, &what);
    }
}

#[test]
fn cli_info_rejects_a_sparse_file_claiming_a_huge_footer() {
    for version in VERSIONS {
        cli_info_rejects_sparse(version);
    }
}

fn cli_info_rejects_sparse(version: FormatVersion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.qltx");
    let v = valid(false, version);
    let size: u64 = 1 << 40;
    let trailer_at = size - TRAILER_LEN as u64;
    // claim_footer writes a trailer at the end of the slice it is given: give it room for one.
    let mut head = v.bytes[..HEADER_LEN + TRAILER_LEN].to_vec();
    claim_footer(&mut head, HEADER_LEN as u64, trailer_at - HEADER_LEN as u64);
    head.truncate(HEADER_LEN);
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&head, 0).unwrap();
    let trailer = Trailer {
        footer_offset: HEADER_LEN as u64,
        footer_size: trailer_at - HEADER_LEN as u64,
    };
    file.write_all_at(&trailer.encode(), trailer_at).unwrap();
    drop(file);
    let out = qeltrix().arg("info").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "v{}: {stderr}", version.number());
    assert!(stderr.contains("sparse.qltx"), "{stderr}");
}

/// A structurally valid container whose footer indexes `count` one-byte blocks, held by a sparse
/// source (the blocks themselves are never read by `ContainerInfo::read`). A v2 footer gets a
/// root that matches its (made-up) block hashes, so that only its MAC is wrong.
fn many_blocks(count: u64, version: FormatVersion) -> (Sparse, u64) {
    let v = valid(false, version);
    let block_len = (BLOCK_HEAD_LEN + TAG_LEN + 1) as u64;
    let entries: Vec<FooterEntry> = (0..count)
        .map(|i| FooterEntry {
            offset: HEADER_LEN as u64 + i * block_len,
            len: block_len,
            plain_offset: i,
            plain_size: 1,
        })
        .collect();
    let footer_offset = HEADER_LEN as u64 + count * block_len;
    let footer = match version {
        FormatVersion::V1 => {
            let mut footer = Footer::encode_unsigned(count, &entries);
            footer.extend_from_slice(&[0xee; 32]);
            footer
        }
        FormatVersion::V2 => {
            let mut f = FooterV2 {
                original_size: count,
                root: [0; 32],
                file_record: None,
                entries: entries
                    .iter()
                    .map(|&entry| FooterEntryV2 {
                        entry,
                        block_hash: [0x11; 32],
                        sealed_meta: [0x22; META_LEN],
                        generation: 0,
                    })
                    .collect(),
                mac: [0xee; 32],
                generation: None,
            };
            f.root = v2_root(&f);
            f.encode()
        }
        FormatVersion::V3 | FormatVersion::V4 => unreachable!("versions 3 and 4 have their own tests"),
    };
    let trailer = Trailer {
        footer_offset,
        footer_size: footer.len() as u64,
    };
    let mut h = Header::decode(&v.bytes[..HEADER_LEN]).unwrap();
    assert_eq!(h.version, version);
    (h.total_blocks, h.original_size) = (count, count);
    (h.footer_offset, h.footer_size) = (trailer.footer_offset, trailer.footer_size);
    let size = footer_offset + footer.len() as u64 + TRAILER_LEN as u64;
    let pieces = vec![
        (0, h.encode()),
        (footer_offset, footer),
        (size - TRAILER_LEN as u64, trailer.encode().to_vec()),
    ];
    (Sparse { size, pieces }, footer_offset)
}

#[test]
fn a_footer_larger_than_one_read_is_read_in_pieces() {
    for version in VERSIONS {
        footer_is_read_in_pieces(version);
    }
}

fn footer_is_read_in_pieces(version: FormatVersion) {
    // 2.2 MB of v1 entries (three pieces), 12.6 MB of v2 entries (thirteen pieces).
    let count = 70_000;
    let (head_len, entry_len) = match version {
        FormatVersion::V1 => (FOOTER_HEAD_LEN, FOOTER_ENTRY_LEN),
        FormatVersion::V2 => (FOOTER_V2_HEAD_LEN, FOOTER_V2_ENTRY_LEN),
        FormatVersion::V3 | FormatVersion::V4 => unreachable!("versions 3 and 4 have their own tests"),
    };
    let what = format!("v{}", version.number());
    let (source, footer_offset) = many_blocks(count, version);
    let info = ContainerInfo::read(&source).expect("a large, consistent index");
    assert_eq!(info.version(), version);
    assert_eq!(info.block_count(), count);
    assert_eq!(info.footer.entries[69_999].plain_offset, 69_999);
    // Its MAC is made up, so opening it with the key fails, naming the footer.
    let e = Container::from_source(source, &key())
        .map(drop)
        .expect_err("fake MAC");
    assert!(
        matches!(e.root(), Error::Corrupt { offset: Some(o), .. } if *o == footer_offset),
        "{what}: {e}"
    );

    // One bad entry past the first piece stops the read there, naming the block.
    let (mut source, _) = many_blocks(count, version);
    let bad = 40_000u64;
    let at = head_len + bad as usize * entry_len;
    assert!(at > 1 << 20, "{what}: the bad entry is in the first piece");
    source.pieces[1].1[at + 8..at + 16].copy_from_slice(&1_000u64.to_le_bytes());
    let e = ContainerInfo::read(&source).map(drop).expect_err("bad entry");
    assert!(
        matches!(e.root(), Error::Corrupt { block: Some(b), .. } if *b == bad),
        "{what}: {e}"
    );
}
