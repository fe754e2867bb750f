//! The command line's contract: exit codes (0 ok, 1 failure, 2 usage, 3 wrong key or failed
//! authentication), nothing written on failure, `--force`, `keygen`, `info` (text and JSON, no
//! key needed), `seek` output forms, every way of giving a key, `verify`, a broken pipe as a clean
//! exit, and error messages that name the file and the block.

mod common;

use common::*;
use qeltrix::ContainerInfo;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tempfile::TempDir;

/// A folder with `plain.bin` (about 3.3 blocks of 16 KiB, compressible and not), a key file
/// `key`, a second key file `other.key`, and passphrase files `pass` and `wrong.pass`.
struct Setup {
    dir: TempDir,
    plain: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plain = data(DataKind::Mixed, 3 * 16 * KIB + 5000, 21);
        std::fs::write(dir.path().join("plain.bin"), &plain).unwrap();
        write_key_file(&dir.path().join("key"), 1);
        write_key_file(&dir.path().join("other.key"), 2);
        std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
        std::fs::write(dir.path().join("wrong.pass"), "not the passphrase\n").unwrap();
        Setup { dir, plain }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `qeltrix pack -q --block-size 16 --kdf-iterations 1000 <key args> plain.bin <out>`.
    fn pack(&self, out: &str, key_args: &[&str]) {
        qeltrix()
            .current_dir(self.dir.path())
            .args(["pack", "-q", "--block-size", "16", "--kdf-iterations", "1000"])
            .args(key_args)
            .args(["plain.bin", out])
            .assert()
            .success();
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = qeltrix();
        c.current_dir(self.dir.path());
        c
    }

    fn names(&self) -> Vec<String> {
        dir_names(self.dir.path())
    }
}

const INPUTS: [&str; 5] = ["key", "other.key", "pass", "plain.bin", "wrong.pass"];

/// The folder's listing with `extra` files besides the inputs.
fn listing(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = INPUTS.iter().chain(extra).map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_wrong_passphrase_exits_3_says_so_and_writes_nothing() {
    let s = Setup::new();
    s.pack("c.qltx", &["--passphrase-file", "pass"]);
    let runs: [&[&str]; 4] = [
        &["unpack", "c.qltx", "out.bin", "--passphrase-file", "wrong.pass"],
        &["unpack", "c.qltx", "-", "--passphrase-file", "wrong.pass"],
        &[
            "seek",
            "c.qltx",
            "--offset",
            "0",
            "--length",
            "9",
            "-o",
            "out.bin",
            "--passphrase-file",
            "wrong.pass",
        ],
        &["verify", "c.qltx", "--passphrase-file", "wrong.pass"],
    ];
    for args in runs {
        let out = s.cmd().args(args).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("wrong key"), "{args:?}: {err}");
        assert!(err.contains("c.qltx"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
        assert_eq!(s.names(), listing(&["c.qltx"]), "{args:?} left files behind");
    }
    // The same through the environment variable.
    let out = s
        .cmd()
        .args(["unpack", "c.qltx", "out.bin"])
        .env(qeltrix::cli::PASSPHRASE_ENV, "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(s.names(), listing(&["c.qltx"]));
}

#[test]
fn a_wrong_key_file_or_key_kind_exits_3_and_writes_nothing() {
    let s = Setup::new();
    s.pack("c.qltx", &["--key-file", "key"]);
    for key_args in [["--key-file", "other.key"], ["--passphrase-file", "pass"]] {
        let out = s
            .cmd()
            .args(["unpack", "c.qltx", "out.bin"])
            .args(key_args)
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{key_args:?}: {err}");
        assert!(
            err.contains("wrong key") && err.contains("c.qltx"),
            "{key_args:?}: {err}"
        );
        assert_eq!(s.names(), listing(&["c.qltx"]));
    }
    let out = s
        .cmd()
        .args(["unpack", "c.qltx", "out.bin", "--passphrase-file", "pass"])
        .output()
        .unwrap();
    assert!(
        stderr_of(&out).contains("no passphrase slot"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn usage_errors_exit_2_and_create_nothing() {
    let s = Setup::new();
    s.pack("c.qltx", &["--key-file", "key"]);
    let runs: [&[&str]; 14] = [
        &[
            "pack",
            "plain.bin",
            "new.qltx",
            "--key-file",
            "key",
            "--block-size",
            "5",
        ],
        &[
            "pack",
            "plain.bin",
            "new.qltx",
            "--key-file",
            "key",
            "--block-size",
            "65540",
        ],
        &[
            "pack",
            "plain.bin",
            "new.qltx",
            "--key-file",
            "key",
            "--block-size",
            "0",
        ],
        &[
            "pack",
            "plain.bin",
            "new.qltx",
            "--key-file",
            "key",
            "--level",
            "10",
        ],
        &[
            "pack",
            "plain.bin",
            "new.qltx",
            "--key-file",
            "key",
            "--cipher",
            "des",
        ],
        &["pack"],
        &["unpack", "c.qltx"],
        &["seek", "c.qltx", "--key-file", "key", "--length", "3"],
        &["frobnicate"],
        &["pack", "plain.bin", "c.qltx", "--key-file", "key"],
        &["unpack", "c.qltx", "plain.bin", "--key-file", "key"],
        &[
            "seek",
            "c.qltx",
            "--offset",
            "0",
            "--length",
            "1",
            "-o",
            "plain.bin",
            "--key-file",
            "key",
        ],
        // No key given and no terminal to ask on.
        &["unpack", "c.qltx", "out.bin"],
        &["pack", "-", "new.qltx"],
    ];
    for args in runs {
        let out = s.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
        assert_eq!(s.names(), listing(&["c.qltx"]), "{args:?} changed the folder");
        assert!(
            std::fs::read(s.path("plain.bin")).unwrap() == s.plain,
            "{args:?} overwrote the input"
        );
    }
    let out = s.cmd().args(runs[9]).output().unwrap();
    assert!(stderr_of(&out).contains("--force"), "{}", stderr_of(&out));
}

#[test]
fn force_overwrites() {
    let s = Setup::new();
    std::fs::write(s.path("c.qltx"), "old").unwrap();
    std::fs::write(s.path("out.bin"), "old").unwrap();
    std::fs::write(s.path("range.bin"), "old").unwrap();
    s.pack("c.qltx", &["--key-file", "key", "--force"]);
    s.cmd()
        .args(["unpack", "-q", "-f", "--key-file", "key", "c.qltx", "out.bin"])
        .assert()
        .success();
    assert!(std::fs::read(s.path("out.bin")).unwrap() == s.plain);
    s.cmd()
        .args([
            "seek",
            "c.qltx",
            "--offset",
            "100",
            "--length",
            "50000",
            "-o",
            "range.bin",
            "--force",
        ])
        .args(["--key-file", "key"])
        .assert()
        .success();
    assert!(std::fs::read(s.path("range.bin")).unwrap() == s.plain[100..50_100]);
    assert_eq!(s.names(), listing(&["c.qltx", "out.bin", "range.bin"]));
}

#[test]
fn keygen_writes_a_private_hex_key_and_refuses_to_overwrite() {
    let s = Setup::new();
    let out = s.cmd().args(["keygen", "-o", "new.key"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let check = |path: &Path| -> String {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file mode");
        let text = std::fs::read_to_string(path).unwrap();
        let hex = text.strip_suffix('\n').expect("a trailing newline");
        assert_eq!(hex.len(), 64, "{text:?}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{text:?}");
        text
    };
    let first = check(&s.path("new.key"));

    let out = s.cmd().args(["keygen", "-o", "new.key"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read_to_string(s.path("new.key")).unwrap(),
        first,
        "overwritten without --force"
    );

    std::fs::set_permissions(s.path("new.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    s.cmd()
        .args(["keygen", "-o", "new.key", "--force"])
        .assert()
        .success();
    let second = check(&s.path("new.key"));
    assert_ne!(first, second, "a new key");

    // And it is a working key file.
    s.pack("c.qltx", &["--key-file", "new.key"]);
    s.cmd()
        .args(["unpack", "-q", "--key-file", "new.key", "c.qltx", "out.bin"])
        .assert()
        .success();
    assert!(std::fs::read(s.path("out.bin")).unwrap() == s.plain);
}

#[test]
fn info_needs_no_key_and_reports_the_container() {
    let s = Setup::new();
    qeltrix()
        .current_dir(s.dir.path())
        .args([
            "pack",
            "-q",
            "--block-size",
            "16",
            "--kdf-iterations",
            "1000",
            "--cipher",
            "chacha",
        ])
        .args([
            "--key-file",
            "key",
            "--passphrase-file",
            "pass",
            "plain.bin",
            "c.qltx",
        ])
        .assert()
        .success();
    let size = std::fs::metadata(s.path("c.qltx")).unwrap().len();
    let info = ContainerInfo::read(&std::fs::File::open(s.path("c.qltx")).unwrap()).unwrap();

    let out = s.cmd().args(["info", "c.qltx", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info --json is JSON");
    // Writers write format 2, whose root is readable and checked without a key.
    assert_eq!(j["format_version"], 2);
    let root = hex::encode(info.root().expect("a v2 container has a root"));
    assert_eq!(j["root"], root.as_str());
    assert_eq!(j["cipher"], "ChaCha20-Poly1305");
    assert_eq!(j["block_size"], 16 * 1024);
    assert_eq!(j["blocks"], 4);
    assert_eq!(j["original_size"], s.plain.len());
    assert_eq!(j["container_size"], size);
    assert_eq!(j["overhead_bytes"], size as i64 - s.plain.len() as i64);
    assert_eq!(j["footer_offset"], info.trailer.footer_offset);
    assert_eq!(j["footer_size"], info.trailer.footer_size);
    assert_eq!(j["container_id"], hex::encode(info.header.container_id));
    assert_eq!(j["flags"], serde_json::json!([]));
    assert_eq!(j["key_slot_area_sequence"], 1);
    assert_eq!(
        j["key_slots"],
        serde_json::json!([
            {"type": "key-file"},
            {"type": "passphrase", "kdf": "PBKDF2-HMAC-SHA256", "iterations": 1000},
        ])
    );
    // Mixed data: the text runs compress, the random ones do not; the tail block is mixed too.
    let compressed = j["compressed_blocks"].as_u64().unwrap();
    assert!(compressed <= 4, "{compressed}");

    let out = s.cmd().args(["info", "c.qltx"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "Format:         Qeltrix container v2".to_string(),
        format!("Root:           {root}"),
        "ChaCha20-Poly1305".to_string(),
        format!("Blocks:         4 ({compressed} compressed)"),
        format!("({} bytes)", s.plain.len()),
        format!("({size} bytes)"),
        "#0 key-file".into(),
        "#1 passphrase (PBKDF2-HMAC-SHA256, 1000 iterations)".into(),
        hex::encode(info.header.container_id),
    ] {
        assert!(text.contains(&want), "info lacks {want:?}:\n{text}");
    }

    // A streamed container says so.
    let packed = s
        .cmd()
        .args(["pack", "-q", "--key-file", "key", "-", "-"])
        .write_stdin(b"hello".to_vec())
        .output()
        .unwrap();
    std::fs::write(s.path("s.qltx"), &packed.stdout).unwrap();
    let out = s.cmd().args(["info", "--json", "s.qltx"]).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["flags"], serde_json::json!(["streaming"]));
    assert_eq!(
        (j["blocks"].as_u64(), j["original_size"].as_u64()),
        (Some(1), Some(5))
    );

    // info on something that is not a container: exit 4 (not 3, a wrong key or a forgery),
    // naming the file and saying what it is not.
    let out = s.cmd().args(["info", "plain.bin"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("plain.bin: not a Qeltrix container"));
}

#[test]
fn seek_shows_a_hex_dump_or_writes_the_bytes() {
    let s = Setup::new();
    s.pack("c.qltx", &["--key-file", "key"]);
    let len = s.plain.len();
    let (offset, length) = (16 * KIB - 20, 100);

    let out = s
        .cmd()
        .args([
            "seek",
            "c.qltx",
            "--key-file",
            "key",
            "--offset",
            &offset.to_string(),
            "--length",
        ])
        .arg(length.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("{length} bytes at offset {offset} of {len} (showing the first 64)")
    );
    let dump: Vec<&str> = lines.collect();
    assert_eq!(dump.len(), 4);
    for (i, line) in dump.iter().enumerate() {
        let at = offset + i * 16;
        let hex: Vec<String> = s.plain[at..at + 16].iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            line.starts_with(&format!("{at:08x}  {}", hex.join(" "))),
            "{line}"
        );
    }

    let out = s
        .cmd()
        .args([
            "seek",
            "c.qltx",
            "--key-file",
            "key",
            "--offset",
            &offset.to_string(),
            "--length",
            "20000",
        ])
        .args(["--output", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout == s.plain[offset..offset + 20_000]);

    // Past the end: what exists.
    let out = s
        .cmd()
        .args([
            "seek",
            "c.qltx",
            "--key-file",
            "key",
            "--offset",
            &(len - 10).to_string(),
            "--length",
            "99",
        ])
        .args(["-o", "tail.bin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("Wrote 10 bytes"), "{}", stderr_of(&out));
    assert!(std::fs::read(s.path("tail.bin")).unwrap() == s.plain[len - 10..]);
    assert_eq!(s.names(), listing(&["c.qltx", "tail.bin"]));
}

#[test]
fn every_way_of_giving_a_passphrase_works() {
    let s = Setup::new();
    // --passphrase works but warns.
    let out = s
        .cmd()
        .args([
            "pack",
            "-q",
            "--kdf-iterations",
            "1000",
            "--passphrase",
            PASSPHRASE,
            "plain.bin",
            "c.qltx",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("warning: --passphrase"),
        "{}",
        stderr_of(&out)
    );
    // The environment and the file open it, without a warning.
    let out = s
        .cmd()
        .args(["unpack", "-q", "c.qltx", "a.bin"])
        .env(qeltrix::cli::PASSPHRASE_ENV, PASSPHRASE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stderr.is_empty(), "{}", stderr_of(&out));
    s.cmd()
        .args(["unpack", "-q", "--passphrase-file", "pass", "c.qltx", "b.bin"])
        .assert()
        .success();
    // The environment also packs.
    s.cmd()
        .args(["pack", "-q", "--kdf-iterations", "1000", "plain.bin", "d.qltx"])
        .env(qeltrix::cli::PASSPHRASE_ENV, PASSPHRASE)
        .assert()
        .success();
    let out = s
        .cmd()
        .args(["unpack", "-q", "--passphrase", PASSPHRASE, "d.qltx", "c.bin"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && stderr_of(&out).contains("warning"),
        "{}",
        stderr_of(&out)
    );
    for name in ["a.bin", "b.bin", "c.bin"] {
        assert!(std::fs::read(s.path(name)).unwrap() == s.plain, "{name}");
    }
}

#[test]
fn a_container_with_a_key_file_and_a_passphrase_opens_with_either() {
    let s = Setup::new();
    s.pack("c.qltx", &["--key-file", "key", "--passphrase-file", "pass"]);
    let opens: [(&str, &[&str]); 3] = [
        ("a.bin", &["--key-file", "key"]),
        ("b.bin", &["--passphrase-file", "pass"]),
        ("c.bin", &["--passphrase", PASSPHRASE]),
    ];
    for (out, key_args) in opens {
        s.cmd()
            .args(["unpack", "-q", "c.qltx", out])
            .args(key_args)
            .assert()
            .success();
        assert!(std::fs::read(s.path(out)).unwrap() == s.plain, "{key_args:?}");
    }
    // A key file given with a passphrase: the key file is used.
    let out = s
        .cmd()
        .args([
            "verify",
            "c.qltx",
            "--key-file",
            "key",
            "--passphrase-file",
            "wrong.pass",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn verify_prints_ok_and_names_a_corrupt_block() {
    let s = Setup::new();
    s.pack("c.qltx", &["--key-file", "key"]);
    let out = s
        .cmd()
        .args(["verify", "c.qltx", "--key-file", "key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("OK: c.qltx: 4 blocks"), "{text}");

    // Damage block 2's payload: verify and unpack fail with 3, naming the file and the block.
    let mut bytes = std::fs::read(s.path("c.qltx")).unwrap();
    let l = layout(&bytes);
    bytes[l.blocks[2].end - 100] ^= 0x10;
    std::fs::write(s.path("c.qltx"), &bytes).unwrap();
    for args in [&["verify", "c.qltx"][..], &["unpack", "c.qltx", "out.bin"]] {
        let out = s.cmd().args(args).args(["--key-file", "key"]).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("c.qltx") && err.contains("block 2"),
            "{args:?}: {err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("OK"));
    }
    assert_eq!(s.names(), listing(&["c.qltx"]));
    // Blocks before it still read.
    let out = s
        .cmd()
        .args([
            "seek",
            "c.qltx",
            "--key-file",
            "key",
            "--offset",
            "0",
            "--length",
            "32768",
            "-o",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout == s.plain[..32 * KIB]);
}

#[test]
fn missing_files_exit_1_and_name_the_file() {
    let s = Setup::new();
    s.pack("c.qltx", &["--key-file", "key"]);
    let runs: [(&[&str], &str); 4] = [
        (
            &["unpack", "nowhere.qltx", "out.bin", "--key-file", "key"],
            "nowhere.qltx",
        ),
        (
            &["pack", "nowhere.bin", "x.qltx", "--key-file", "key"],
            "nowhere.bin",
        ),
        (&["unpack", "c.qltx", "out.bin", "--key-file", "no.key"], "no.key"),
        (&["info", "nowhere.qltx"], "nowhere.qltx"),
    ];
    for (args, name) in runs {
        let out = s.cmd().args(args).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(name), "{args:?}: {err}");
        assert_eq!(s.names(), listing(&["c.qltx"]));
    }
}

/// Runs the binary with stdout on a pipe, reads one byte, closes the pipe, and returns the exit
/// status and stderr: `qeltrix ... | head -c 1`.
fn close_after_one_byte(dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qeltrix"))
        .current_dir(dir)
        .args(args)
        .env_remove(qeltrix::cli::PASSPHRASE_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_closed_pipe_on_stdout_is_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let plain = data(DataKind::Random, 4 * MIB, 31);
    std::fs::write(dir.path().join("big.bin"), &plain).unwrap();
    write_key_file(&dir.path().join("key"), 3);
    qeltrix()
        .current_dir(dir.path())
        .args([
            "pack",
            "-q",
            "--block-size",
            "64",
            "--key-file",
            "key",
            "big.bin",
            "big.qltx",
        ])
        .assert()
        .success();
    let runs: [&[&str]; 2] = [
        &[
            "seek",
            "big.qltx",
            "--key-file",
            "key",
            "--offset",
            "1",
            "--length",
            "4000000",
            "--output",
            "-",
        ],
        &["unpack", "-q", "big.qltx", "-", "--key-file", "key"],
    ];
    for args in runs {
        let (status, stderr) = close_after_one_byte(dir.path(), args);
        assert!(status.success(), "{args:?}: {status}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
