//! The command line over format 2: `verify --no-key`, `--compress` and `--format`, the file
//! record (`pack` fills it, `unpack` restores mode and mtime) and `reencrypt` upgrading a v1
//! container. The real binary, as a user runs it.

mod common;

use common::*;
use qeltrix::format::FormatVersion;
use qeltrix::ContainerInfo;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A folder with key file `key` and `plain.bin`: four 16 KiB blocks and a bit, half text.
fn setup() -> (Work, Vec<u8>) {
    let w = Work::with_key();
    let plain = data(DataKind::Mixed, 4 * 16 * KIB + 777, 5);
    w.write("plain.bin", &plain);
    (w, plain)
}

fn info_of(w: &Work, name: &str) -> ContainerInfo {
    ContainerInfo::read(&File::open(w.path(name)).unwrap()).unwrap()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `verify --no-key` checks every stored byte of a v2 container with no key given (and no
/// terminal to prompt on: a prompt would fail the command), reports the root; a changed byte in
/// a block is exit 3 naming the block and its offset; a v1 container is refused with advice;
/// several files go through the usual many-files and JSON output.
#[test]
fn verify_no_key_checks_v2_containers_without_any_key() {
    let (w, _) = setup();
    w.ok("pack -q --block-size 16 --key-file key plain.bin c.qltx");
    let info = info_of(&w, "c.qltx");
    let root = hex::encode(info.root().unwrap());

    let out = w.ok("verify --no-key c.qltx");
    assert!(out.starts_with("OK: c.qltx: 5 blocks"), "{out}");
    assert!(out.contains(&root), "{out}");
    let j = &json_lines(&w.ok("verify --no-key --json c.qltx"))[0];
    assert_eq!(
        (j["ok"].as_bool(), j["keyless"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(j["root"], root.as_str());
    assert_eq!(j["blocks"], 5);

    // One byte changed inside block 2's payload.
    fs::copy(w.path("c.qltx"), w.path("bad.qltx")).unwrap();
    let entry = info.footer.entries[2];
    let at = entry.offset + entry.len / 2;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(w.path("bad.qltx"))
        .unwrap();
    let mut b = [0u8];
    File::open(w.path("bad.qltx"))
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);
    let err = w.fails("verify --no-key bad.qltx", 3);
    assert!(err.contains("bad.qltx"), "{err}");
    assert!(err.contains("block 2"), "{err}");
    assert!(err.contains(&entry.offset.to_string()), "{err}");

    // A cut file: exit 3 too, never a panic.
    let bytes = fs::read(w.path("c.qltx")).unwrap();
    w.write("cut.qltx", &bytes[..bytes.len() / 2]);
    w.fails("verify --no-key cut.qltx", 3);

    // Version 1 has no keyless hashes: a clear refusal that says how to upgrade.
    w.ok("pack -q --format 1 --block-size 16 --key-file key plain.bin v1.qltx");
    let err = w.fails("verify --no-key v1.qltx", 2);
    assert!(err.contains("v1.qltx") && err.contains("version 1"), "{err}");
    assert!(err.contains("qeltrix reencrypt"), "{err}");

    // Many files: one line each, the failures counted, the highest exit code.
    let out = w.run("verify --no-key --json c.qltx bad.qltx v1.qltx");
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    let oks: Vec<_> = lines.iter().map(|l| l["ok"].as_bool().unwrap()).collect();
    assert_eq!(oks, [true, false, false]);
    assert_eq!(lines[1]["exit_code"], 3);
    let text = String::from_utf8(w.run("verify --no-key c.qltx bad.qltx").stdout).unwrap();
    assert!(text.contains("1 OK, 1 failed"), "{text}");
}

/// `--compress` picks when and with what: auto and zstd write zstd (v2), deflate writes
/// deflate, never stores; `--format 1` writes version 1 with deflate and refuses zstd with a
/// clear message. Every choice reads back byte for byte.
#[test]
fn compress_and_format_flags() {
    let (w, plain) = setup();
    for (flags, version) in [
        ("", FormatVersion::V2),
        ("--compress auto", FormatVersion::V2),
        ("--compress always", FormatVersion::V2),
        ("--compress zstd", FormatVersion::V2),
        ("--compress deflate", FormatVersion::V2),
        ("--compress never", FormatVersion::V2),
        ("--format 2 --level 9", FormatVersion::V2),
        ("--format 1", FormatVersion::V1),
        ("--format 1 --compress deflate --level 9", FormatVersion::V1),
        ("--format 1 --compress always", FormatVersion::V1),
    ] {
        let _ = fs::remove_file(w.path("c.qltx"));
        w.ok(&format!(
            "pack -q --block-size 16 {flags} --key-file key plain.bin c.qltx"
        ));
        let info = info_of(&w, "c.qltx");
        assert_eq!(info.version(), version, "{flags}");
        let j: serde_json::Value = serde_json::from_str(&w.ok("info --json c.qltx")).unwrap();
        assert_eq!(j["format_version"], version.number(), "{flags}");
        assert_eq!(j["root"].is_string(), version == FormatVersion::V2, "{flags}");
        let compressed = j["compressed_blocks"].as_u64().unwrap();
        if flags.contains("never") {
            assert_eq!(compressed, 0, "{flags}");
        } else {
            assert!(compressed > 0, "{flags}: the text blocks compress");
        }
        w.ok("unpack -q -f --key-file key c.qltx out.bin");
        assert!(w.read("out.bin") == plain, "{flags}: round trip");
    }
    let err = w.fails(
        "pack -q --format 1 --compress zstd --key-file key plain.bin z.qltx",
        2,
    );
    assert!(err.contains("--format 1") && err.contains("deflate"), "{err}");
    assert!(!w.exists("z.qltx"));
    w.fails("pack -q --format 3 --key-file key plain.bin z.qltx", 2);

    let help = w.ok("pack --help");
    for want in ["--format", "zstd", "deflate", "for both zstd and deflate"] {
        assert!(help.contains(want), "pack --help lacks {want:?}");
    }
}

/// `pack FILE` keeps the file's mode and mtime in the file record; `unpack` to a file restores
/// them (the mode minus the umask, as any new file); stdin has no record, and its unpacked file
/// gets the usual mode.
#[test]
fn pack_keeps_mode_and_mtime_and_unpack_restores_them() {
    let (w, plain) = setup();
    let mtime = UNIX_EPOCH + Duration::new(1_234_567_890, 123_456_789);
    fs::set_permissions(w.path("plain.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    File::options()
        .write(true)
        .open(w.path("plain.bin"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    w.ok("pack -q --key-file key plain.bin c.qltx");
    w.ok("unpack -q --key-file key c.qltx out.bin");
    let md = fs::metadata(w.path("out.bin")).unwrap();
    assert!(w.read("out.bin") == plain);
    let umask = current_umask();
    assert_eq!(md.permissions().mode() & 0o777, 0o640 & !umask);
    assert_eq!(md.modified().unwrap(), mtime);

    // reencrypt keeps the record.
    w.ok("reencrypt -q --key-file key c.qltx r.qltx");
    w.ok("unpack -q --key-file key r.qltx r.bin");
    assert_eq!(fs::metadata(w.path("r.bin")).unwrap().modified().unwrap(), mtime);

    // To stdout: just the bytes.
    let out = w.cmd("unpack -q --key-file key c.qltx -").output().unwrap();
    assert!(out.status.success() && out.stdout == plain);

    // From stdin: no record; the unpacked file is new, with the umask's mode.
    let packed = w
        .cmd("pack -q --key-file key - s.qltx")
        .write_stdin(plain.clone())
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}", stderr_of(&packed));
    let before = SystemTime::now() - Duration::from_secs(60);
    w.ok("unpack -q --key-file key s.qltx s.bin");
    let md = fs::metadata(w.path("s.bin")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o666 & !umask);
    assert!(md.modified().unwrap() > before);
}

/// `reencrypt` writes format 2 by default: a v1 container comes out as v2 (info says so) with
/// the same plaintext; `--format 1` keeps version 1.
#[test]
fn reencrypt_upgrades_a_v1_container() {
    let (w, plain) = setup();
    w.ok("pack -q --format 1 --block-size 16 --key-file key plain.bin v1.qltx");
    assert_eq!(info_of(&w, "v1.qltx").version(), FormatVersion::V1);
    w.ok("reencrypt -q --key-file key v1.qltx v2.qltx");
    let j: serde_json::Value = serde_json::from_str(&w.ok("info --json v2.qltx")).unwrap();
    assert_eq!(j["format_version"], 2);
    assert!(w.ok("info v2.qltx").contains("Qeltrix container v2"));
    w.ok("verify --no-key v2.qltx");
    w.ok("unpack -q --key-file key v2.qltx out.bin");
    assert!(w.read("out.bin") == plain);

    w.ok("reencrypt -q --format 1 --key-file key v2.qltx back.qltx");
    assert_eq!(info_of(&w, "back.qltx").version(), FormatVersion::V1);
    w.ok("unpack -q --key-file key back.qltx back.bin");
    assert!(w.read("back.bin") == plain);
}

/// The process umask, read without changing it for longer than a moment (tests in this binary
/// create files only through child processes, which inherit it).
fn current_umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}
