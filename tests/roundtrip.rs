//! Round trips: what goes in comes out byte for byte, through the library (`StreamPacker`,
//! `Container`, `pack`/`unpack`) and through the CLI (files, stdin, and a streamed container on
//! stdout), for edge sizes, both ciphers, every compression mode, several block sizes and random
//! byte ranges read with `read_at` / `seek_extract` (also a proptest).

mod common;

use common::*;
use proptest::prelude::*;
use qeltrix::format::{BLOCK_HEAD_LEN, FLAG_STREAMING, TAG_LEN};
use qeltrix::{CipherId, CompressMode, Container, ContainerInfo, PackOptions, StreamPacker, UnpackOptions};
use std::io::Write;

const CIPHERS: [CipherId; 2] = [CipherId::Aes256Gcm, CipherId::ChaCha20Poly1305];
const MODES: [CompressMode; 3] = [CompressMode::Auto, CompressMode::Never, CompressMode::Always];

/// Reads `offset..offset+len` both ways and checks both against the plaintext slice (clipped).
fn check_range<S: qeltrix::ReadAt>(c: &Container<S>, plain: &[u8], offset: u64, len: usize) {
    let start = (offset as usize).min(plain.len());
    let end = (offset as usize).saturating_add(len).min(plain.len());
    let want = &plain[start..end];
    let mut buf = vec![0xa5u8; len];
    let n = c.read_at(offset, &mut buf).expect("read_at");
    assert_eq!(n, want.len(), "read_at({offset}, {len}) length");
    assert!(buf[..n] == *want, "read_at({offset}, {len}) bytes differ");
    let got = c.seek_extract(offset, len as u64).expect("seek_extract");
    assert!(got == want, "seek_extract({offset}, {len}) differs");
}

/// Packs through `new_seekable`, reopens from memory, checks the index and reads everything back.
fn library_round_trip(plain: &[u8], opts: &PackOptions) -> Vec<u8> {
    let key = key_file_key(7);
    let bytes = pack_seekable(plain, std::slice::from_ref(&key), opts);
    let c = Container::from_source(bytes.clone(), &key).expect("open");
    let bs = opts.block_size as usize;
    assert_eq!(c.len(), plain.len() as u64);
    assert_eq!(c.block_count() as usize, plain.len().div_ceil(bs));
    assert_eq!(c.info().header.cipher, opts.cipher);
    assert_eq!(c.info().header.flags & FLAG_STREAMING, 0);
    for edge in [
        0,
        1,
        bs - 1,
        bs,
        bs + 1,
        plain.len().saturating_sub(1),
        plain.len(),
    ] {
        check_range(&c, plain, edge as u64, 2 * bs + 3);
        check_range(&c, plain, edge as u64, 1);
    }
    let out = unpack_all(c).expect("unpack");
    assert!(out == plain, "unpacked bytes differ ({} bytes)", plain.len());
    bytes
}

fn is_compressed(e: &qeltrix::format::FooterEntry) -> bool {
    e.len < e.plain_size + (BLOCK_HEAD_LEN + TAG_LEN) as u64
}

#[test]
fn edge_sizes_round_trip_for_each_block_size_and_cipher() {
    for bs in [4 * KIB, 64 * KIB, MIB] {
        for cipher in CIPHERS {
            let o = opts(cipher, bs, CompressMode::Auto);
            for (i, size) in [0, 1, bs - 1, bs, bs + 1].into_iter().enumerate() {
                library_round_trip(&data(DataKind::Mixed, size, i as u64), &o);
            }
        }
    }
    // Several MiB: once per block size, alternating ciphers, with blocks that do and don't compress.
    for (i, bs) in [4 * KIB, 64 * KIB, MIB].into_iter().enumerate() {
        let plain = data(DataKind::Mixed, 3 * MIB + 12_345, 100 + i as u64);
        library_round_trip(&plain, &opts(CIPHERS[i % 2], bs, CompressMode::Auto));
    }
}

#[test]
fn every_compression_mode_round_trips_text_and_random_data() {
    for cipher in CIPHERS {
        for mode in MODES {
            for kind in [DataKind::Text, DataKind::Random] {
                let plain = data(kind, 5 * 64 * KIB + 5, 9);
                let bytes = library_round_trip(&plain, &opts(cipher, 64 * KIB, mode));
                let info = ContainerInfo::read(&bytes).expect("info");
                let compressed = info.footer.entries.iter().filter(|e| is_compressed(e)).count();
                let expected_all = matches!(kind, DataKind::Text) && mode != CompressMode::Never;
                // The 5-byte tail block of text cannot shrink by 1/32 and stays raw.
                let expected = if expected_all {
                    info.footer.entries.len() - 1
                } else {
                    0
                };
                assert_eq!(compressed, expected, "{cipher:?} {mode:?} {kind:?}");
            }
        }
    }
}

#[test]
fn file_to_file_pack_and_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let (input, packed, output) = (
        dir.path().join("in.bin"),
        dir.path().join("in.qltx"),
        dir.path().join("out.bin"),
    );
    let plain = data(DataKind::Mixed, 200 * KIB + 1, 3);
    std::fs::write(&input, &plain).unwrap();
    let keys = [passphrase_key(PASSPHRASE), key_file_key(1)];
    let o = opts(CipherId::ChaCha20Poly1305, 16 * KIB, CompressMode::Auto);
    let summary = qeltrix::pack(&input, &packed, &recipients(&keys), &o, false).expect("pack");
    assert_eq!(summary.blocks, 13);
    assert_eq!(summary.original_size, plain.len() as u64);
    assert_eq!(summary.container_size, std::fs::metadata(&packed).unwrap().len());
    let err = qeltrix::pack(&input, &packed, &recipients(&keys), &o, false)
        .expect_err("packed twice without overwrite");
    assert!(matches!(err.root(), qeltrix::Error::Exists { .. }), "{err}");

    for key in &keys {
        let n = qeltrix::unpack(
            &packed,
            &output,
            key,
            &UnpackOptions {
                overwrite: true,
                ..Default::default()
            },
        )
        .expect("unpack");
        assert_eq!(n, plain.len() as u64);
        assert!(std::fs::read(&output).unwrap() == plain);
        let c = Container::open(&packed, key).expect("open");
        check_range(&c, &plain, 16 * KIB as u64 - 3, 40_000);
    }
    assert_eq!(dir_names(dir.path()), ["in.bin", "in.qltx", "out.bin"]);
}

#[test]
fn streaming_and_seekable_packers_both_read_back_from_memory() {
    let key = key_file_key(2);
    let plain = data(DataKind::Mixed, 100_000, 4);
    let o = opts(CipherId::Aes256Gcm, 8 * KIB, CompressMode::Auto);
    let streamed = pack_stream(&plain, std::slice::from_ref(&key), &o);
    let seekable = pack_seekable(&plain, std::slice::from_ref(&key), &o);
    assert_eq!(streamed.len(), seekable.len());

    let s = ContainerInfo::read(&streamed).expect("streamed info");
    assert_ne!(s.header.flags & FLAG_STREAMING, 0, "a stream is flagged");
    assert!(!s.header.is_patched());
    assert_eq!((s.header.total_blocks, s.header.original_size), (0, 0));
    let f = ContainerInfo::read(&seekable).expect("seekable info");
    assert_eq!(f.header.flags & FLAG_STREAMING, 0);
    assert_eq!(f.header.total_blocks, 13);
    assert_eq!(f.header.original_size, plain.len() as u64);
    assert_eq!(f.header.footer_offset, f.trailer.footer_offset);
    assert_eq!(s.footer.entries.len(), f.footer.entries.len());

    for bytes in [streamed, seekable] {
        let c = Container::from_source(bytes, &key).expect("open");
        for offset in (0..plain.len() as u64 + 10).step_by(2_999) {
            check_range(&c, &plain, offset, 9_000);
        }
        assert!(unpack_all(c).expect("unpack") == plain);
    }
}

#[test]
fn flushed_short_blocks_read_back_at_every_offset() {
    let key = key_file_key(3);
    let bs = 4 * KIB;
    let plain = data(DataKind::Mixed, 30_000, 5);
    // Pieces that leave partial blocks behind a flush, and one that spans two whole blocks.
    let cuts = [
        1,
        1000,
        1001,
        5000,
        5000 + 2 * bs + 3,
        20_000,
        20_001,
        plain.len(),
    ];
    let mut packer = StreamPacker::new(
        Vec::new(),
        &recipients(std::slice::from_ref(&key)),
        &opts(CipherId::ChaCha20Poly1305, bs, CompressMode::Auto),
    )
    .unwrap();
    let mut at = 0;
    for cut in cuts {
        packer.write_all(&plain[at..cut]).unwrap();
        packer.flush_block().unwrap();
        assert_eq!(packer.bytes_in(), cut as u64);
        at = cut;
    }
    packer.flush_block().unwrap(); // nothing pending: no empty block
    let (bytes, summary) = packer.finish().unwrap();
    assert_eq!(summary.original_size, plain.len() as u64);

    let c = Container::from_source(bytes, &key).expect("open");
    let sizes: Vec<u64> = c.info().footer.entries.iter().map(|e| e.plain_size).collect();
    assert_eq!(
        sizes,
        [1, 999, 1, 3999, 4096, 4096, 3, 4096, 2709, 1, 4096, 4096, 1807]
    );
    for offset in 0..=plain.len() as u64 {
        let mut one = [0u8; 1];
        let n = c.read_at(offset, &mut one).unwrap();
        if (offset as usize) < plain.len() {
            assert_eq!((n, one[0]), (1, plain[offset as usize]), "byte at {offset}");
        } else {
            assert_eq!(n, 0);
        }
        if offset % 7 == 0 {
            check_range(&c, &plain, offset, 5_000);
        }
    }
    assert!(unpack_all(c).unwrap() == plain);
}

#[test]
fn reads_past_the_end_are_clipped() {
    let key = key_file_key(4);
    let plain = data(DataKind::Text, 10_000, 6);
    let c = Container::from_source(
        pack_seekable(
            &plain,
            std::slice::from_ref(&key),
            &opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Auto),
        ),
        &key,
    )
    .unwrap();
    for (offset, len) in [
        (9_990, 100),
        (10_000, 10),
        (10_001, 10),
        (1 << 40, 10),
        (u64::MAX, 10),
    ] {
        let mut buf = vec![0u8; len];
        let n = c.read_at(offset, &mut buf).unwrap();
        let expected = plain
            .len()
            .saturating_sub(offset.min(plain.len() as u64) as usize)
            .min(len);
        assert_eq!(n, expected, "read_at({offset})");
        assert_eq!(c.seek_extract(offset, len as u64).unwrap().len(), expected);
    }
    assert_eq!(c.seek_extract(5, u64::MAX).unwrap(), &plain[5..]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_ranges_equal_the_plaintext(
        len in 0usize..300 * KIB,
        seed in any::<u64>(),
        kind in prop_oneof![Just(DataKind::Text), Just(DataKind::Random), Just(DataKind::Mixed)],
        bs in prop_oneof![Just(4 * KIB), Just(8 * KIB), Just(16 * KIB)],
        cipher in prop_oneof![Just(CipherId::Aes256Gcm), Just(CipherId::ChaCha20Poly1305)],
        mode in prop_oneof![Just(CompressMode::Auto), Just(CompressMode::Never), Just(CompressMode::Always)],
        streamed in any::<bool>(),
        reads in proptest::collection::vec((0.0f64..1.1, 0usize..40 * KIB), 1..24),
    ) {
        let key = key_file_key(5);
        let plain = data(kind, len, seed);
        let o = opts(cipher, bs, mode);
        let bytes = if streamed {
            pack_stream(&plain, std::slice::from_ref(&key), &o)
        } else {
            pack_seekable(&plain, std::slice::from_ref(&key), &o)
        };
        let c = Container::from_source(bytes, &key).expect("open");
        prop_assert_eq!(c.len(), len as u64);
        for (at, rlen) in reads {
            let offset = (at * len as f64) as u64;
            check_range(&c, &plain, offset, rlen);
        }
    }
}

// ---- CLI ----

/// Packs `plain` from a file with the given options, unpacks it, and compares.
/// `qeltrix unpack -q KEY_OPTION KEY PACKED OUTPUT` succeeds and writes exactly `plain`.
fn assert_cli_unpacks(
    key_option: &str,
    key: &std::path::Path,
    packed: &std::path::Path,
    output: &std::path::Path,
    plain: &[u8],
    what: &str,
) {
    qeltrix()
        .args(["unpack", "-q", key_option])
        .arg(key)
        .arg(packed)
        .arg(output)
        .assert()
        .success();
    assert!(std::fs::read(output).unwrap() == plain, "{what}");
}

fn cli_round_trip(dir: &std::path::Path, plain: &[u8], cipher: CipherId, bs_kib: usize, mode: CompressMode) {
    let key = dir.join("key");
    write_key_file(&key, 9);
    let (input, packed, output) = (dir.join("in.bin"), dir.join("in.bin.qltx"), dir.join("out.bin"));
    std::fs::write(&input, plain).unwrap();
    let bs = bs_kib.to_string();
    // No OUTPUT: the container goes to INPUT.qltx.
    qeltrix()
        .args(["pack", "-q", "--cipher", cipher_name(cipher), "--block-size", &bs])
        .args(["--compress", compress_name(mode), "--key-file"])
        .arg(&key)
        .arg(&input)
        .assert()
        .success();
    let info = ContainerInfo::read(&std::fs::File::open(&packed).unwrap()).unwrap();
    assert_eq!(info.header.cipher, cipher);
    assert_eq!(info.header.block_size as usize, bs_kib * KIB);
    assert_eq!(info.block_count() as usize, plain.len().div_ceil(bs_kib * KIB));
    assert_cli_unpacks(
        "--key-file",
        &key,
        &packed,
        &output,
        plain,
        &format!("{cipher:?} {bs_kib} KiB {mode:?}"),
    );
    for p in [&input, &packed, &output] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn cli_round_trips_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (0, DataKind::Text, CipherId::Aes256Gcm, 4, CompressMode::Auto),
        (
            1,
            DataKind::Text,
            CipherId::ChaCha20Poly1305,
            4,
            CompressMode::Always,
        ),
        (
            4 * KIB - 1,
            DataKind::Random,
            CipherId::Aes256Gcm,
            4,
            CompressMode::Never,
        ),
        (
            4 * KIB,
            DataKind::Text,
            CipherId::ChaCha20Poly1305,
            4,
            CompressMode::Auto,
        ),
        (
            4 * KIB + 1,
            DataKind::Mixed,
            CipherId::Aes256Gcm,
            4,
            CompressMode::Always,
        ),
        (
            64 * KIB,
            DataKind::Random,
            CipherId::ChaCha20Poly1305,
            64,
            CompressMode::Always,
        ),
        (
            3 * 64 * KIB + 7,
            DataKind::Mixed,
            CipherId::Aes256Gcm,
            64,
            CompressMode::Never,
        ),
        (
            3 * MIB + 5,
            DataKind::Mixed,
            CipherId::ChaCha20Poly1305,
            1024,
            CompressMode::Auto,
        ),
    ];
    for (size, kind, cipher, bs, mode) in cases {
        cli_round_trip(dir.path(), &data(kind, size, size as u64), cipher, bs, mode);
    }
}

#[test]
fn cli_packs_stdin_into_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (packed, output, pass) = (
        dir.path().join("s.qltx"),
        dir.path().join("s.out"),
        dir.path().join("pass"),
    );
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let plain = data(DataKind::Mixed, 2 * MIB + 99, 11);
    qeltrix()
        .args([
            "pack",
            "-q",
            "--block-size",
            "256",
            "--kdf-iterations",
            "1000",
            "--passphrase-file",
        ])
        .arg(&pass)
        .arg("-")
        .arg(&packed)
        .write_stdin(plain.clone())
        .assert()
        .success();
    let info = ContainerInfo::read(&std::fs::File::open(&packed).unwrap()).unwrap();
    assert_eq!(
        info.header.flags & FLAG_STREAMING,
        0,
        "a file output is patched, not streaming"
    );
    assert_eq!(info.header.original_size, plain.len() as u64);
    assert_cli_unpacks("--passphrase-file", &pass, &packed, &output, &plain, "unpacked");
}

#[test]
fn cli_streams_stdin_to_stdout_and_the_stream_is_seekable() {
    let dir = tempfile::tempdir().unwrap();
    let (key, packed, output) = (
        dir.path().join("key"),
        dir.path().join("st.qltx"),
        dir.path().join("st.out"),
    );
    write_key_file(&key, 12);
    let plain = data(DataKind::Mixed, 300 * KIB + 17, 12);
    let out = qeltrix()
        .args([
            "pack",
            "-q",
            "--block-size",
            "16",
            "--cipher",
            "chacha",
            "--key-file",
        ])
        .arg(&key)
        .args(["-", "-"])
        .write_stdin(plain.clone())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    std::fs::write(&packed, &out).unwrap();
    let info = ContainerInfo::read(&out).unwrap();
    assert_ne!(info.header.flags & FLAG_STREAMING, 0, "stdout is a stream");
    assert!(!info.header.is_patched());
    assert_eq!(info.block_count(), 19);

    assert_cli_unpacks("--key-file", &key, &packed, &output, &plain, "unpacked");
    let to_stdout = qeltrix()
        .args(["unpack", "-q", "--key-file"])
        .arg(&key)
        .arg(&packed)
        .arg("-")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(to_stdout == plain);

    for (offset, length) in [
        (0usize, 1usize),
        (16 * KIB - 5, 10),
        (100_000, 70_000),
        (plain.len() - 3, 100),
    ] {
        let got = qeltrix()
            .args(["seek", "--key-file"])
            .arg(&key)
            .arg(&packed)
            .args([
                "--offset",
                &offset.to_string(),
                "--length",
                &length.to_string(),
                "--output",
                "-",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert!(
            got == plain[offset..(offset + length).min(plain.len())],
            "seek {offset}+{length}"
        );
    }
}
