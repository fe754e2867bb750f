//! `repair`: containers cut at many points, with blocks of varying size, recover exactly their
//! whole blocks; damage, wrong keys and complete containers are handled; the CLI names outputs.

mod common;

use common::*;
use qeltrix::repair::repair;
use qeltrix::{Container, ContainerInfo, Error, PackOptions, StreamPacker};
use std::io::Write;
use std::path::Path;

/// A streamed container of `data` with 16 KiB blocks, some flushed early so sizes vary.
fn container_with_ragged_blocks(data: &[u8]) -> Vec<u8> {
    let opts = PackOptions {
        block_size: 16 * 1024,
        kdf_iterations: 1000,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut p = StreamPacker::new(&mut out, &recipients(&[key_file_key(7)]), &opts).unwrap();
    for (i, piece) in data.chunks(10_000).enumerate() {
        p.write_all(piece).unwrap();
        if i % 3 == 0 {
            p.flush_block().unwrap();
        }
    }
    p.finish().unwrap();
    out
}

fn plaintext(path: &Path) -> Vec<u8> {
    let c = Container::open(path, &key_file_key(7)).expect("the repaired container opens");
    c.seek_extract(0, c.len()).unwrap()
}

#[test]
fn a_container_cut_at_random_points_recovers_every_whole_block() {
    let setup = Work::with_key();
    let data = Data::bytes(11, 300_000);
    let full = container_with_ragged_blocks(&data);
    let entries = ContainerInfo::read(&full).unwrap().footer.entries;
    assert!(
        entries[..entries.len() - 1]
            .iter()
            .any(|e| e.plain_size < 16 * 1024),
        "blocks of varying size"
    );
    let footer_at = entries.last().map(|e| e.offset + e.len).unwrap();

    // Random points, every block boundary and the bytes around them, and cuts in the footer.
    let mut cuts: Vec<u64> = (0..60)
        .map(|i| Data::bytes(i, 8))
        .map(|b| 4096 + u64::from_le_bytes(b.try_into().unwrap()) % (full.len() as u64 - 4096))
        .collect();
    for e in &entries {
        cuts.extend([e.offset, e.offset + 1, e.offset + e.len - 1]);
    }
    cuts.extend([footer_at, footer_at + 10, full.len() as u64 - 1]);

    let cut_path = setup.path("cut.qltx.part");
    for cut in cuts {
        std::fs::write(&cut_path, &full[..cut as usize]).unwrap();
        let out = setup.path("repaired.qltx");
        let report =
            repair(&cut_path, &out, &key_file_key(7), true).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole: Vec<_> = entries.iter().filter(|e| e.offset + e.len <= cut).collect();
        let plain_len = whole.last().map_or(0, |e| e.plain_offset + e.plain_size) as usize;
        assert!(!report.already_complete);
        assert_eq!(report.blocks, whole.len() as u64, "cut at {cut}");
        assert_eq!(report.plain_bytes, plain_len as u64, "cut at {cut}");
        assert_eq!(plaintext(&out), data[..plain_len], "cut at {cut}");
        assert_eq!(std::fs::metadata(&out).unwrap().len(), report.output_size);
    }
}

#[test]
fn a_complete_container_is_left_alone() {
    let setup = Work::with_key();
    let full = container_with_ragged_blocks(&Data::bytes(12, 50_000));
    let path = setup.path("whole.qltx");
    std::fs::write(&path, &full).unwrap();
    let out = setup.path("out.qltx");
    let report = repair(&path, &out, &key_file_key(7), false).unwrap();
    assert!(report.already_complete);
    assert!(!out.exists());
}

#[test]
fn repair_stops_at_a_damaged_block_and_keeps_the_ones_before() {
    let setup = Work::with_key();
    let data = Data::bytes(13, 100_000);
    let mut full = container_with_ragged_blocks(&data);
    let entries = ContainerInfo::read(&full).unwrap().footer.entries;
    let bad = entries[3];
    full[(bad.offset + bad.len - 1) as usize] ^= 0x80;
    full.truncate(full.len() - 40); // and cut the trailer
    let path = setup.path("damaged.qltx");
    std::fs::write(&path, &full).unwrap();
    let report = repair(&path, &path, &key_file_key(7), true).unwrap();
    assert_eq!(report.blocks, 3);
    assert!(
        report.stopped_by.as_deref().unwrap().contains("block 3"),
        "{report:?}"
    );
    assert_eq!(plaintext(&path), data[..bad.plain_offset as usize]);
}

#[test]
fn repair_rebuilds_a_forged_footer_from_the_blocks() {
    let setup = Work::with_key();
    let data = Data::bytes(14, 60_000);
    let mut full = container_with_ragged_blocks(&data);
    let info = ContainerInfo::read(&full).unwrap();
    let mac_at = (info.trailer.footer_offset + info.trailer.footer_size - 1) as usize;
    full[mac_at] ^= 1;
    let path = setup.path("forged.qltx");
    std::fs::write(&path, &full).unwrap();
    assert!(Container::open(&path, &key_file_key(7)).is_err());
    let report = repair(&path, &path, &key_file_key(7), true).unwrap();
    assert_eq!(report.blocks, info.block_count());
    assert_eq!(plaintext(&path), data);
}

#[test]
fn repair_with_the_wrong_key_or_on_a_non_container_writes_nothing() {
    let setup = Work::with_key();
    let full = container_with_ragged_blocks(&Data::bytes(15, 40_000));
    let path = setup.path("cut.qltx.part");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let out = setup.path("cut.qltx");
    let err = repair(&path, &out, &key_file_key(8), false).unwrap_err();
    assert!(err.is_wrong_key(), "{err}");
    std::fs::write(&path, b"not a container at all").unwrap();
    let err = repair(&path, &out, &key_file_key(7), false).unwrap_err();
    assert!(matches!(err.root(), Error::NotAContainer(_)), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(setup.dir.path()).unwrap().count(),
        2,
        "no temporary files left"
    );
}

#[test]
fn cli_repair_drops_the_part_suffix_and_refuses_to_overwrite() {
    let setup = Work::with_key();
    let data = Data::bytes(16, 70_000);
    let full = container_with_ragged_blocks(&data);
    let part = setup.path("stream.qltx.part");
    std::fs::write(&part, &full[..full.len() - 100]).unwrap();
    let run = || {
        let mut cmd = qeltrix();
        cmd.arg("repair")
            .arg(&part)
            .arg("--key-file")
            .arg(setup.path("key"));
        cmd
    };
    let out = run().assert().success().get_output().stderr.clone();
    let msg = String::from_utf8_lossy(&out);
    assert!(msg.contains("recovered:"), "{msg}");
    assert_eq!(plaintext(&setup.path("stream.qltx")), data);
    // A second run would overwrite stream.qltx: refused without --force (usage error).
    run().assert().code(2);
    run().arg("--force").assert().success();
    // In place, on a file without the suffix.
    let other = setup.path("other.qltx");
    std::fs::write(&other, &full[..full.len() - 100]).unwrap();
    qeltrix()
        .arg("repair")
        .arg(&other)
        .arg("--key-file")
        .arg(setup.path("key"))
        .assert()
        .success();
    assert_eq!(plaintext(&other), data);
}
