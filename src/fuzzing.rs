//! Fuzz harness: one entry point per parser of untrusted bytes, shared by the cargo-fuzz targets
//! (`fuzz/`) and the stable in-process driver (`examples/fuzz_parsers.rs`, `scripts/fuzz.sh`).
//! Not an API: each function feeds `data` to one parser and ignores the result; the only failure
//! is a panic (or a hang). `docs/FUZZING.md` says how to run them.

use crate::container::reader::{Container, ContainerInfo};
use crate::container::stream_reader::StreamReader;
use crate::container::writer::{PackOptions, StreamPacker};
use crate::core::crypto::{KeyFileKey, Passphrase, SeededEntropy};
use crate::{CipherId, CompressMode, Key, Recipient};
use std::io::{Cursor, Write};
use std::sync::Arc;

/// The fixed key every fuzzed container is opened with (and the seeds are packed with).
pub const KEY: [u8; 32] = [0x5a; 32];
/// The fixed passphrase of the fuzzed keyrings.
pub const PASSPHRASE: &str = "fuzz passphrase";

/// A fuzz entry point: feeds its input to one parser.
pub type Target = fn(&[u8]);

/// The parsers, by name: `(name, entry point)`.
pub const TARGETS: &[(&str, Target)] = &[
    ("info", info),
    ("container_open", container_open),
    ("read_at", read_at),
    ("stream_reader", stream_reader),
    ("repair", repair),
    ("keyring", keyring),
];

fn key() -> Key {
    Key::KeyFile(KeyFileKey::from_bytes(KEY))
}

/// The key-less structure check (`ContainerInfo::read`) that `mount` and `serve` listings run on
/// every file in a vault.
pub fn info(data: &[u8]) {
    let _ = ContainerInfo::read(&data.to_vec());
}

/// `Container::from_source` on the bytes, with the fixed key.
pub fn container_open(data: &[u8]) {
    let _ = Container::from_source(data.to_vec(), &key());
}

/// Open, then reads at offsets taken from the input's last bytes, and a whole read.
pub fn read_at(data: &[u8]) {
    let Ok(c) = Container::from_source(data.to_vec(), &key()) else {
        return;
    };
    let len = c.len();
    let pick = |i: usize| -> u64 {
        let b = data.get(data.len().wrapping_sub(1 + i)).copied().unwrap_or(0) as u64;
        if len == 0 {
            b
        } else {
            (b * len / 255).min(len + 10)
        }
    };
    let mut buf = vec![0u8; 5000];
    for i in 0..3 {
        let _ = c.read_at(pick(i), &mut buf);
    }
    let _ = c.read_at(u64::MAX - 10, &mut buf);
    let _ = c.seek_extract(0, len.min(1 << 20));
    for b in 0..c.block_count().min(8) {
        let _ = c.read_block(b, true);
    }
}

/// The sequential reader over the bytes, to its end or first error.
pub fn stream_reader(data: &[u8]) {
    let Ok(mut s) = StreamReader::open(Cursor::new(data), &key()) else {
        return;
    };
    // Each call consumes input or ends: bounded by the input length (plus the footer call).
    for _ in 0..=data.len() {
        match s.next_block(true) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

/// `repair` of the bytes as a file, into a scratch folder.
pub fn repair(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let input = dir.path().join("in.qltx");
    if std::fs::write(&input, data).is_err() {
        return;
    }
    let _ = crate::container::repair::repair(&input, &dir.path().join("out.qltx"), &key(), false);
}

/// The vault keyring decoder with the fixed passphrase. The PBKDF2 iteration count is part of
/// the input: a count the decoder accepts is folded to at most 64 first, so that an input costs
/// parsing, not hashing; counts it refuses (0, above the maximum) are passed as given.
pub fn keyring(data: &[u8]) {
    let passphrase = Passphrase::new(PASSPHRASE);
    let mut data = data.to_vec();
    if data.len() >= 16 {
        let iterations = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes"));
        if (65..=crate::core::crypto::MAX_KDF_ITERATIONS).contains(&iterations) {
            data[12..16].copy_from_slice(&(iterations % 64 + 1).to_le_bytes());
        }
    }
    let _ = crate::vault::keyring::decode_for_fuzzing(&data, &passphrase);
}

/// Valid inputs for each target, to mutate from: containers of several shapes (seekable and
/// streamed, both ciphers, raw and compressed blocks, empty), a cut one, and a keyring.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    if target == "keyring" {
        return vec![keyring_seed()];
    }
    let mut out = Vec::new();
    let plain: Vec<u8> = (0..20_000u32)
        .map(|i| {
            if i % 3000 < 1500 {
                (i * 31 % 251) as u8
            } else {
                b'a'
            }
        })
        .collect();
    for (cipher, compress, len, seekable) in [
        (CipherId::Aes256Gcm, CompressMode::Never, 20_000, true),
        (CipherId::ChaCha20Poly1305, CompressMode::Always, 20_000, false),
        (CipherId::Aes256Gcm, CompressMode::Auto, 4096, true),
        (CipherId::ChaCha20Poly1305, CompressMode::Never, 0, true),
    ] {
        let c = pack(&plain[..len], cipher, compress, seekable);
        if target == "repair" || target == "stream_reader" {
            // A cut container, as repair and a live stream see them.
            out.push(c[..c.len() * 2 / 3].to_vec());
        }
        out.push(c);
    }
    // Format 4: a base and two patches, as the read-write mount writes them (with system
    // randomness: the commits are made once per run).
    if target != "stream_reader" && target != "repair" {
        out.push(patched(&plain));
    }
    out
}

/// A version-4 container of `plain` (16 KiB blocks) with two patches over its base.
fn patched(plain: &[u8]) -> Vec<u8> {
    use crate::container::edit::{EditOptions, Editor, MemoryBudget, OPEN_SLACK};
    use crate::core::file_record::FileMeta;
    use crate::format::FormatVersion;
    let dir = tempfile::tempdir().expect("scratch folder");
    let dest = dir.path().join("v4.qltx");
    let opts = Arc::new(EditOptions {
        pack: PackOptions {
            block_size: 16 << 10,
            workers: 1,
            ..PackOptions::default()
        },
        recipients: vec![Recipient::KeyFile(KeyFileKey::from_bytes(KEY))],
        scratch: dir.path().to_path_buf(),
        budget: MemoryBudget::new(1 << 20),
        file_limit: 1 << 20,
        in_place_min: 16 << 10,
        in_place_format: FormatVersion::V4,
        slack_while_open: OPEN_SLACK,
    });
    let meta = FileMeta {
        name: b"fuzz".to_vec(),
        mode: 0o644,
        mtime_sec: 0,
        mtime_nsec: 0,
    };
    let mut e = Editor::new_file(opts, meta);
    e.write_at(0, plain).expect("stream");
    e.commit(&dest, false).expect("base commit");
    for (at, bytes) in [(100u64, &b"first patch"[..]), (8192, &[7u8; 4096][..])] {
        e.write_at(at, bytes).expect("write");
        e.commit(&dest, false).expect("patch commit");
    }
    std::fs::read(&dest).expect("the container")
}

fn pack(plain: &[u8], cipher: CipherId, compress: CompressMode, seekable: bool) -> Vec<u8> {
    let opts = PackOptions {
        cipher,
        block_size: 4096,
        compress,
        workers: 1,
        kdf_iterations: 1,
        entropy: Arc::new(SeededEntropy([7; 32])),
        ..PackOptions::default()
    };
    let keys = [Recipient::KeyFile(KeyFileKey::from_bytes(KEY))];
    if seekable {
        let mut p = StreamPacker::new_seekable(Cursor::new(Vec::new()), &keys, &opts).expect("packer");
        p.write_all(plain).expect("pack");
        p.finish().expect("finish").0.into_inner()
    } else {
        let mut p = StreamPacker::new(Vec::new(), &keys, &opts).expect("packer");
        p.write_all(plain).expect("pack");
        p.finish().expect("finish").0
    }
}

fn keyring_seed() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("scratch folder");
    crate::vault::keyring::init(
        dir.path(),
        &Passphrase::new(PASSPHRASE),
        1,
        &SeededEntropy([9; 32]),
    )
    .expect("keyring");
    std::fs::read(crate::vault::keyring::keyring_path(dir.path())).expect("keyring bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_its_seeds_and_garbage() {
        for (name, run) in TARGETS {
            for seed in seeds(name) {
                run(&seed);
                run(&seed[..seed.len() / 2]);
            }
            run(&[]);
            run(&[0xff; 300]);
        }
    }

    #[test]
    fn the_format_4_seed_has_patches_and_opens() {
        let seed = seeds("info").pop().unwrap();
        let info = ContainerInfo::read(&seed).unwrap();
        assert_eq!((info.version().number(), info.patch_count()), (4, 2));
        let c = Container::from_source(seed, &key()).unwrap();
        let mut buf = [0u8; 11];
        c.read_at(100, &mut buf).unwrap();
        assert_eq!(&buf, b"first patch");
    }
}
