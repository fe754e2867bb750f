//! Folders and conventions: `pack -r` packs a tree into a mirrored vault; `verify` and `info` take
//! many containers and whole vaults; `--json` describes what pack, unpack, verify and
//! `rekey --list` did; `-o/--output` works on every command that writes a file.
//!
//! Every case drives the real binary in a temporary folder; keys come from a key file or the
//! environment, never from argv.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A folder with a key file `key` and a source tree `src/`: a.txt (text), sub/b.bin (several
/// blocks of random bytes), sub/deeper/c (empty).
fn tree() -> Work {
    let w = Work::with_key();
    w.write("src/a.txt", &text_bytes(10 * KIB, 1));
    w.write("src/sub/b.bin", &random_bytes(300 * KIB, 2));
    w.write("src/sub/deeper/c", b"");
    w
}

/// The files under `dir`, as sorted paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Unpacks `container` (relative to the work folder) with the key file and returns the plaintext.
fn unpacked(w: &Work, container: &str) -> Vec<u8> {
    let line = format!("unpack -q {container} - --key-file key");
    let out = w.run(&line);
    assert_code(&out, 0, &line);
    out.stdout
}

/// Stdout's JSON lines, parsed.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

// --- 1. pack -r ------------------------------------------------------------------------------

#[test]
fn pack_r_mirrors_a_tree_skipping_links_special_files_and_hidden_names() {
    let w = tree();
    w.write("src/.hidden", b"dot file");
    symlink("a.txt", w.path("src/link")).unwrap();
    let fifo = std::ffi::CString::new(w.path("src/sub/fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let out = w.run("pack -r src vault --key-file key");
    assert_code(&out, 0, "pack -r");
    let err = stderr_of(&out);
    assert_eq!(
        files_under(&w.path("vault")),
        strings(&["a.txt.qltx", "sub/b.bin.qltx", "sub/deeper/c.qltx"])
    );
    for (plain, container) in [
        ("src/a.txt", "vault/a.txt.qltx"),
        ("src/sub/b.bin", "vault/sub/b.bin.qltx"),
        ("src/sub/deeper/c", "vault/sub/deeper/c.qltx"),
    ] {
        assert!(unpacked(&w, container) == w.read(plain), "{container}");
    }
    for skipped in [
        "src/.hidden",
        "src/link: a symbolic link",
        "src/sub/fifo: not a regular file",
    ] {
        assert!(err.contains(&format!("skipping {skipped}")), "{skipped}: {err}");
    }
    assert!(err.contains("Packed 3 of 3 files"), "{err}");

    // -q: no warnings, no summary; --json: one object per file, in name order.
    let out = w.run("pack -r -q --json src vault2 --key-file key");
    assert_code(&out, 0, "pack -r --json");
    assert_eq!(stderr_of(&out), "");
    let lines = json_lines(&out.stdout);
    let outputs: Vec<&str> = lines.iter().map(|j| j["output"].as_str().unwrap()).collect();
    assert_eq!(
        outputs,
        [
            "vault2/a.txt.qltx",
            "vault2/sub/b.bin.qltx",
            "vault2/sub/deeper/c.qltx"
        ]
    );
    assert_eq!(lines[1]["original_size"], 300 * KIB);
    assert_eq!(lines[1]["blocks"], 1);
    assert_eq!(lines[2]["original_size"], 0);

    // The vault inside the tree it packs is not packed into itself.
    fs::create_dir(w.path("inner")).unwrap();
    let out = w.run("pack -r -q . inner --key-file key");
    assert_code(&out, 0, "pack -r . inner");
    assert!(!w.exists("inner/inner"));
    assert!(w.exists("inner/src/sub/b.bin.qltx") && w.exists("inner/key.qltx"));
}

#[test]
fn pack_r_refuses_existing_outputs_before_writing_anything() {
    let w = tree();
    w.write("vault/sub/b.bin.qltx", b"old");
    let err = w.fails("pack -r src vault --key-file key", 2);
    assert!(
        err.contains("vault/sub/b.bin.qltx") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(files_under(&w.path("vault")), strings(&["sub/b.bin.qltx"]));
    assert_eq!(w.read("vault/sub/b.bin.qltx"), b"old");

    w.ok("pack -r -q --force src vault --key-file key");
    assert!(unpacked(&w, "vault/sub/b.bin.qltx") == w.read("src/sub/b.bin"));
    assert_eq!(files_under(&w.path("vault")).len(), 3);
}

#[test]
fn pack_r_reports_a_failing_file_names_it_and_packs_the_others() {
    let w = tree();
    // A file where the folder for sub/ must go: sub/b.bin and sub/deeper/c cannot be written.
    w.write("vault/sub", b"in the way");
    let out = w.run("pack -r src vault --key-file key");
    assert_code(&out, 1, "pack -r over a blocking file");
    let err = stderr_of(&out);
    assert!(err.contains("vault/sub"), "{err}");
    assert!(err.contains("2 of 3 files failed"), "{err}");
    assert!(unpacked(&w, "vault/a.txt.qltx") == w.read("src/a.txt"));
    assert_eq!(files_under(&w.path("vault")), strings(&["a.txt.qltx", "sub"]));

    // --json names each failure with its exit code.
    let out = w.run("pack -r -q --json --force src vault --key-file key");
    assert_code(&out, 1, "pack -r --json");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["error"].is_null());
    for j in &lines[1..] {
        assert!(j["error"].as_str().unwrap().contains("vault/sub"), "{j}");
        assert_eq!(j["exit_code"], 1);
    }

    // Not a folder, and no output folder: usage errors.
    w.fails("pack -r src/a.txt out --key-file key", 2);
    w.fails("pack -r src --key-file key", 2);
    w.fails("pack -r src - --key-file key", 2);
}

#[test]
fn pack_r_into_a_keyring_vault_uses_the_vault_passphrase() {
    let w = tree();
    let init = w
        .cmd("init vault --kdf-iterations 1000")
        .env(qeltrix::cli::PASSPHRASE_ENV, PASSPHRASE)
        .output()
        .unwrap();
    assert_code(&init, 0, "init");
    let out = w
        .cmd("pack -r -q src vault --kdf-iterations 1000")
        .env(qeltrix::cli::PASSPHRASE_ENV, PASSPHRASE)
        .output()
        .unwrap();
    assert_code(&out, 0, "pack -r into a vault");
    let info = w.ok("info --json vault/sub/b.bin.qltx");
    let j: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(j["key_slots"], serde_json::json!([{"type": "keyring"}]));
    // One passphrase opens the whole vault.
    let out = w
        .cmd("verify vault")
        .env(qeltrix::cli::PASSPHRASE_ENV, PASSPHRASE)
        .output()
        .unwrap();
    assert_code(&out, 0, "verify vault");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified 3 containers: 3 OK, 0 failed"));
}

/// The descriptor `pid` has open on a file under `dir` (named, or unnamed and shown deleted).
fn output_fd(pid: u32, dir: &Path) -> Option<PathBuf> {
    let dir = fs::canonicalize(dir).ok()?;
    let prefix = format!("{}/", dir.display());
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with(&prefix)))
        .map(|e| e.path())
}

#[test]
fn pack_r_interrupted_leaves_only_complete_containers_and_no_temporary_file() {
    let w = Work::with_key();
    for i in 0..6 {
        w.write(
            &format!("src/d{}/f{i}", i % 2),
            &random_bytes(12 * MIB, 10 + i as u64),
        );
    }
    fs::create_dir(w.path("vault")).unwrap();
    // Named temporary files (the fallback without O_TMPFILE): the case where one could be left.
    let mut cmd = w.std_cmd("pack -r -q src vault --key-file key");
    cmd.env("QELTRIX_TEST_NO_O_TMPFILE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Reaped(cmd.spawn().unwrap());
    let pid = child.0.id();
    let mut caught = false;
    wait_until("pack -r to write an output", || {
        if output_fd(pid, &w.path("vault")).is_some() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            caught = true;
        }
        caught || child.0.try_wait().unwrap().is_some()
    });
    assert!(caught, "pack -r finished before it could be interrupted");
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "pack -r survived SIGINT: {status:?}");
    // Whatever was committed is a whole container of a source file; nothing else is there.
    let left = files_under(&w.path("vault"));
    for name in &left {
        let plain = name
            .strip_suffix(".qltx")
            .unwrap_or_else(|| panic!("left behind: {name}"));
        assert!(w.exists(&format!("src/{plain}")), "left behind: {name}");
        assert!(unpacked(&w, &format!("vault/{name}")) == w.read(&format!("src/{plain}")));
    }
}

// --- 2. verify and info of many --------------------------------------------------------------

/// A vault `v/` of three containers (one in a subfolder) and a file that is not one.
fn vault() -> Work {
    let w = tree();
    w.ok("pack -r -q src v --key-file key");
    w.write("v/notes.txt", b"not a container");
    w
}

fn damage_block(path: &Path, block: usize) {
    let mut bytes = fs::read(path).unwrap();
    let l = layout(&bytes);
    bytes[l.blocks[block].end - 10] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

#[test]
fn verify_many_files_and_a_vault_prints_a_line_each_and_the_worst_exit_code() {
    let w = vault();
    let text = w.ok("verify v --key-file key");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("OK: v/a.txt.qltx: 1 blocks"), "{text}");
    assert!(lines[1].starts_with("OK: v/sub/b.bin.qltx"), "{text}");
    assert!(lines[2].starts_with("OK: v/sub/deeper/c.qltx"), "{text}");
    assert_eq!(lines[3], "Verified 3 containers: 3 OK, 0 failed");

    // A missing file fails with 1; a damaged block with 3, the worst of the two.
    damage_block(&w.path("v/sub/b.bin.qltx"), 0);
    let out = w.run("verify v/a.txt.qltx missing.qltx --key-file key");
    assert_code(&out, 1, "verify with a missing file");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED: missing.qltx"), "{text}");
    assert!(stderr_of(&out).contains("1 of 2 containers failed"));

    let out = w.run("verify missing.qltx v --key-file key");
    assert_code(&out, 3, "verify with a damaged container");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAILED: v/sub/b.bin.qltx") && l.contains("block 0")),
        "{text}"
    );
    assert!(text.contains("OK: v/a.txt.qltx") && text.contains("OK: v/sub/deeper/c.qltx"));
    assert!(
        text.ends_with("Verified 4 containers: 2 OK, 2 failed\n"),
        "{text}"
    );

    // A folder with no container is an error, not an empty success; a folder holding one bad
    // container fails as that file alone would, with its error on stderr.
    fs::create_dir_all(w.path("empty/sub")).unwrap();
    for line in ["verify empty --key-file key", "info empty"] {
        let err = w.fails(line, 1);
        assert!(
            err.contains("empty: no container") && err.contains("is a directory"),
            "{err}"
        );
    }
    fs::create_dir(w.path("one")).unwrap();
    fs::copy(w.path("v/sub/b.bin.qltx"), w.path("one/b.bin.qltx")).unwrap();
    let err = w.fails("verify one --key-file key", 3);
    assert!(err.contains("one/b.bin.qltx") && err.contains("block 0"), "{err}");

    // --json: one object per container, per line.
    let out = w.run("verify --json v --key-file key");
    assert_code(&out, 3, "verify --json");
    let lines = json_lines(&out.stdout);
    let oks: Vec<(&str, bool)> = lines
        .iter()
        .map(|j| (j["file"].as_str().unwrap(), j["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        oks,
        [
            ("v/a.txt.qltx", true),
            ("v/sub/b.bin.qltx", false),
            ("v/sub/deeper/c.qltx", true)
        ]
    );
    assert_eq!(lines[1]["exit_code"], 3);
    assert!(lines[1]["error"].as_str().unwrap().contains("block 0"));
    assert_eq!(lines[0]["original_size"], 10 * KIB);
}

#[test]
fn info_of_many_files_and_a_vault_needs_no_key() {
    let w = vault();
    let text = w.ok("info v");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].starts_with("v/sub/b.bin.qltx: 300.00 KiB in 1 blocks"),
        "{text}"
    );
    assert!(lines[1].contains("#0 key-file"), "{text}");
    assert!(lines[3].starts_with("3 containers: "), "{text}");

    let out = w.run("info --json v/a.txt.qltx v/notes.txt");
    assert_code(&out, 4, "info of a non-container");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["file"], "v/a.txt.qltx");
    assert_eq!(lines[0]["original_size"], 10 * KIB);
    assert_eq!(lines[0]["key_slots"], serde_json::json!([{"type": "key-file"}]));
    assert_eq!(lines[1]["file"], "v/notes.txt");
    assert_eq!(lines[1]["exit_code"], 4);

    // One file: the full text and the pretty object, as before.
    let text = w.ok("info v/a.txt.qltx");
    assert!(text.starts_with("File:           v/a.txt.qltx\n"), "{text}");
    let pretty = w.ok("info --json v/a.txt.qltx");
    assert!(pretty.starts_with("{\n"), "{pretty}");
    let j: serde_json::Value = serde_json::from_str(&pretty).unwrap();
    assert_eq!(j["blocks"], 1);
}

// --- 3. --json -------------------------------------------------------------------------------

#[test]
fn json_describes_pack_unpack_verify_and_the_slot_list() {
    let w = tree();
    let j: serde_json::Value = serde_json::from_str(
        &w.ok("pack --json --cipher chacha --block-size 64 src/sub/b.bin c.qltx --key-file key"),
    )
    .unwrap();
    let size = fs::metadata(w.path("c.qltx")).unwrap().len();
    assert_eq!(j["input"], "src/sub/b.bin");
    assert_eq!(j["output"], "c.qltx");
    assert_eq!(j["original_size"], 300 * KIB);
    assert_eq!(j["container_size"], size);
    assert_eq!(j["blocks"], 5);
    assert_eq!(j["cipher"], "ChaCha20-Poly1305");
    assert_eq!(j["block_size"], 64 * KIB);
    assert_eq!(j["key_slots"], serde_json::json!([{"type": "key-file"}]));

    let j: serde_json::Value =
        serde_json::from_str(&w.ok("unpack --json c.qltx plain --key-file key")).unwrap();
    assert_eq!(j["output"], "plain");
    assert_eq!(j["original_size"], 300 * KIB);
    assert_eq!(j["blocks"], 5);
    assert_eq!(j["hash_checked"], true);
    assert!(w.read("plain") == w.read("src/sub/b.bin"));

    let j: serde_json::Value = serde_json::from_str(&w.ok("verify --json c.qltx --key-file key")).unwrap();
    assert_eq!(
        (j["file"].as_str(), j["ok"].as_bool()),
        (Some("c.qltx"), Some(true))
    );
    assert_eq!(j["blocks"], 5);

    let j: serde_json::Value = serde_json::from_str(&w.ok("rekey --list --json c.qltx")).unwrap();
    assert_eq!(j["file"], "c.qltx");
    assert_eq!(j["key_slot_area_sequence"], 1);
    assert_eq!(j["key_slots"], serde_json::json!([{"type": "key-file"}]));

    // The data on stdout leaves no room for JSON there: refused before anything is written.
    let err = w.fails("pack --json src/a.txt - --key-file key", 2);
    assert!(err.contains("--json"), "{err}");
    let out = w.run("unpack --json c.qltx - --key-file key");
    assert_code(&out, 2, "unpack --json -");
    assert!(out.stdout.is_empty());
    // A failing verify --json still prints its object.
    damage_block(&w.path("c.qltx"), 3);
    let out = w.run("verify --json c.qltx --key-file key");
    assert_code(&out, 3, "verify --json of a damaged container");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["ok"].as_bool(), j["exit_code"].as_u64()),
        (Some(false), Some(3))
    );
    assert!(j["error"].as_str().unwrap().contains("block 3"));
}

// --- 4. -o/--output --------------------------------------------------------------------------

#[test]
fn dash_o_names_the_output_of_every_writing_command() {
    let w = tree();
    let plain = w.read("src/sub/b.bin");
    w.ok("pack -q src/sub/b.bin -o c.qltx --key-file key");
    w.ok("pack -q src/sub/b.bin --output c2.qltx --key-file key");
    w.ok("unpack -q c.qltx -o p1 --key-file key");
    w.ok("unpack -q c2.qltx --output p2 --key-file key");
    assert!(w.read("p1") == plain && w.read("p2") == plain);
    w.write_key("key2", 9);
    w.ok("reencrypt -q c.qltx -o re.qltx --key-file key --new-key-file key2");
    let out = w.run("unpack -q re.qltx - --key-file key2");
    assert_code(&out, 0, "unpack the reencrypted container");
    assert!(out.stdout == plain);

    // `-` is stdout: pack, unpack and reencrypt stream there.
    let packed = w.cmd("pack -q src/a.txt -o - --key-file key").output().unwrap();
    assert_code(&packed, 0, "pack -o -");
    fs::write(w.path("s.qltx"), &packed.stdout).unwrap();
    assert!(unpacked(&w, "s.qltx") == w.read("src/a.txt"));
    let out = w.run("unpack -q s.qltx -o - --key-file key");
    assert_code(&out, 0, "unpack -o -");
    assert!(out.stdout == w.read("src/a.txt"));
    let re = w
        .cmd("reencrypt -q c.qltx -o - --key-file key --new-key-file key2")
        .output()
        .unwrap();
    assert_code(&re, 0, "reencrypt -o -");
    fs::write(w.path("re2.qltx"), &re.stdout).unwrap();
    let out = w.run("unpack -q re2.qltx - --key-file key2");
    assert!(out.stdout == plain, "{}", stderr_of(&out));

    // repair: -o names the repaired file; stdout is refused (the header is written last).
    let bytes = w.read("c.qltx");
    w.write("cut.qltx", &bytes[..bytes.len() - 100]);
    w.ok("repair cut.qltx -o fixed.qltx --key-file key");
    w.ok("verify -q fixed.qltx --key-file key");
    let err = w.fails("repair cut.qltx -o - --key-file key", 2);
    assert!(err.contains("stdout"), "{err}");

    // The option and the positional OUTPUT together: a usage error, nothing written.
    for line in [
        "pack src/a.txt x.qltx -o y.qltx --key-file key",
        "unpack c.qltx x -o y --key-file key",
        "reencrypt c.qltx x -o y --key-file key",
        "repair cut.qltx x -o y --key-file key",
    ] {
        w.fails(line, 2);
        assert!(!w.exists("x") && !w.exists("y") && !w.exists("x.qltx") && !w.exists("y.qltx"));
    }
    // reencrypt without any output.
    w.fails("reencrypt c.qltx --key-file key", 2);
}
