//! `pack -` as the README uses it (`tail -f app.log | qeltrix pack - app.log.qltx`), through a
//! real pipe: Ctrl-C or SIGTERM seals what has arrived into a complete container and exits 130
//! or 143; `--flush-after` gets a trickling stream's blocks out while the stream stays open.

mod common;

use common::*;
use qeltrix::{Container, ContainerInfo};
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;

/// Starts `qeltrix <line>` in `w` with stdin and stdout piped.
fn start(w: &Work, line: &str) -> Child {
    w.std_cmd(line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qeltrix starts")
}

fn signal(child: &Child, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name}");
}

/// Reads `child`'s stdout on a thread; the receiver gets the total so far after each read, and
/// the whole output when it ends.
fn collect_stdout(child: &mut Child) -> (mpsc::Receiver<usize>, std::thread::JoinHandle<Vec<u8>>) {
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    let _ = tx.send(all.len());
                }
            }
        }
    });
    (rx, reader)
}

/// More than a pipe holds (64 KiB): once it is all written, `pack` is reading, so its signal
/// handling is in place, and every byte is in the process or in the pipe.
const STREAMED: usize = 300_000;

#[test]
fn ctrl_c_seals_what_arrived_through_the_pipe_and_exits_130() {
    let w = Work::with_key();
    let plain = random_bytes(STREAMED, 11);
    let mut child = start(&w, "pack - log.qltx --key-file key -q");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&plain).unwrap();
    signal(&child, "INT");
    let status = try_wait_exit(&mut child).expect("pack ends after SIGINT");
    drop(stdin); // the writer of a `tail -f` never closes: the signal alone ended it
    assert_eq!(status.code(), Some(130), "exit code");
    let c = Container::open(w.path("log.qltx"), &key_file_key(7)).expect("a complete container");
    assert_eq!(
        c.seek_extract(0, u64::MAX).unwrap(),
        plain,
        "every byte that arrived"
    );
    assert_eq!(
        dir_names(w.dir.path()),
        ["key", "log.qltx"],
        "nothing else left behind"
    );
}

#[test]
fn sigterm_seals_a_stream_to_stdout_and_exits_143() {
    let w = Work::with_key();
    let plain = random_bytes(STREAMED, 12);
    let mut child = start(&w, "pack - - --key-file key -q");
    let (_progress, reader) = collect_stdout(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&plain).unwrap();
    signal(&child, "TERM");
    let status = try_wait_exit(&mut child).expect("pack ends after SIGTERM");
    drop(stdin);
    assert_eq!(status.code(), Some(143), "exit code");
    let container = reader.join().unwrap();
    let info = ContainerInfo::read(&container).expect("a complete container on stdout");
    assert_eq!(info.original_size(), STREAMED as u64);
    let c = Container::from_source(container, &key_file_key(7)).unwrap();
    assert_eq!(c.seek_extract(0, u64::MAX).unwrap(), plain);
}

#[test]
fn flush_after_gets_a_partial_block_out_while_the_stream_stays_open() {
    let w = Work::with_key();
    let mut child = start(&w, "pack - - --key-file key -q --flush-after 20");
    let (progress, reader) = collect_stdout(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"a first log line\n").unwrap();
    // The header (4096 bytes) and the sealed partial block reach the reader with stdin still
    // open. Without the flush, they would sit in the packer until the end of the stream.
    let header_and_block = qeltrix::format::HEADER_LEN + qeltrix::format::BLOCK_HEAD_LEN + 17;
    let mut seen = 0;
    while seen < header_and_block {
        seen = progress
            .recv_timeout(DEADLINE)
            .expect("the partial block arrives while the stream is open");
    }
    stdin.write_all(b"a second log line\n").unwrap();
    drop(stdin);
    let status = try_wait_exit(&mut child).expect("pack ends at end of input");
    assert_eq!(status.code(), Some(0));
    let container = reader.join().unwrap();
    let c = Container::from_source(container, &key_file_key(7)).unwrap();
    assert_eq!(
        c.seek_extract(0, u64::MAX).unwrap(),
        b"a first log line\na second log line\n"
    );
    assert_eq!(c.block_count(), 2, "the first line was sealed on its own");
}

#[test]
fn flush_after_is_refused_for_a_file_input() {
    let w = Work::with_key();
    w.write("plain.bin", b"x");
    let err = w.fails("pack plain.bin --key-file key --flush-after 20", 2);
    assert!(err.contains("--flush-after"), "{err}");
}
