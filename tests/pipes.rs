//! Every command ends quietly when the reader of its stdout has gone (`qeltrix info x --json |
//! true`, `keygen ... | head -0`): no panic, no error message, exit 0, and no output file left
//! half-written.

mod common;

use common::*;
use std::io::Read;
use std::process::Stdio;

/// Runs `line` in `w` with stdout a pipe whose reading end is already closed, so the first write
/// fails with EPIPE (the Rust runtime ignores SIGPIPE). Returns (exit code, stderr).
fn with_closed_stdout(w: &Work, line: &str) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut child = w
        .std_cmd(line)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("qeltrix starts");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    (status.code(), stderr)
}

#[test]
fn every_command_that_writes_to_stdout_ends_quietly_when_stdout_is_closed() {
    let w = Work::with_key();
    w.write("plain.bin", &random_bytes(100_000, 5));
    w.ok("pack plain.bin c.qltx --key-file key -q");
    let lines = [
        "info c.qltx",
        "info c.qltx --json",
        "seek c.qltx --offset 10 --length 100 --key-file key",
        "seek c.qltx --offset 10 --length 50000 --key-file key -o -",
        "unpack c.qltx - --key-file key",
        "pack plain.bin - --key-file key",
        "verify c.qltx --key-file key",
        "keygen --x25519 -o id --force",
        "keygen -o -",
        "keygen --x25519 -o -",
        "rekey c.qltx --list",
        "rekey c.qltx --list --json",
        "info c.qltx c.qltx",
        "info --json c.qltx c.qltx",
        "verify --json c.qltx c.qltx --key-file key",
        "pack --json plain.bin p2.qltx --key-file key --force",
        "unpack --json c.qltx u.bin --key-file key --force",
        "completions bash",
        "completions zsh",
        "man",
        "--version",
        "--help",
        "info --help",
    ];
    let mut failures = Vec::new();
    for line in lines {
        let (code, stderr) = with_closed_stdout(&w, line);
        if code != Some(0) || stderr.contains("panicked") || stderr.contains("error") {
            failures.push(format!("`qeltrix {line}`: exit {code:?}, stderr: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
