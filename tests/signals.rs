//! No file survives a signal: every writing command (pack, unpack, seek --output, reencrypt),
//! interrupted by SIGINT, SIGTERM, SIGHUP or SIGKILL at a random point of its output, leaves its
//! output folder exactly as it was: no partial plaintext, no temporary file. And a key written to
//! a full disk neither leaves an empty key nor destroys the one it was to replace.
//!
//! Each case starts the real binary, waits (by polling `/proc/PID/fd`, not by sleeping) until the
//! output file it writes has reached a random size, stops it there, sends the signal, and checks
//! the folder once the process is gone.

mod common;
use common::{dir_names, qeltrix_process, random_bytes, Reaped, Rng, Work, DEADLINE};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const SIGNALS: [(i32, &str); 4] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGKILL, "SIGKILL"),
];

/// Input plaintext size: large enough that every command is still writing when caught.
const SIZE: usize = 64 << 20;

/// A temporary folder with an input plaintext, a key and a container in `in/`, and an output
/// folder `out/` holding one file that must survive.
fn work() -> Work {
    let w = Work::new();
    fs::create_dir(w.path("in")).unwrap();
    fs::create_dir(w.path("out")).unwrap();
    fs::write(w.path("in/data"), random_bytes(SIZE, 11)).unwrap();
    quiet_ok(&w, &["keygen", "-o", "in/k.key"]);
    quiet_ok(
        &w,
        &["pack", "in/data", "in/c.qltx", "--key-file", "in/k.key", "-q"],
    );
    // An existing file in the output folder, which must survive untouched.
    fs::write(w.path("out/keep"), b"keep me").unwrap();
    w
}

/// `qeltrix ARGS` in the folder, all output discarded.
fn quiet(w: &Work, args: &[&str]) -> Command {
    let mut c = qeltrix_process();
    c.current_dir(w.dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn quiet_ok(w: &Work, args: &[&str]) {
    let st = quiet(w, args).status().unwrap();
    assert!(st.success(), "{args:?}: {st}");
}

/// The descriptor of `pid` open on a file in `dir` (named, or unnamed and shown as deleted).
fn output_fd(pid: u32, dir: &Path) -> Option<PathBuf> {
    let dir = fs::canonicalize(dir).ok()?;
    let prefix = format!("{}/", dir.display());
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with(&prefix)))
        .map(|e| e.path())
}

/// Runs `args`, catches it once its output in `out/` holds at least `at` bytes, sends `signal`.
/// Returns false if the command finished before it could be caught (the case proves nothing).
fn interrupt(w: &Work, args: &[&str], env: Option<(&str, &str)>, signal: i32, at: u64) -> bool {
    let mut cmd = quiet(w, args);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let mut child = Reaped(cmd.spawn().unwrap());
    let pid = child.0.id();
    let deadline = Instant::now() + DEADLINE;
    let caught = loop {
        if let Some(fd) = output_fd(pid, &w.path("out")) {
            if fs::metadata(&fd).is_ok_and(|m| m.len() >= at) {
                // SAFETY: signals to our own child.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                break true;
            }
        }
        if child.0.try_wait().unwrap().is_some() {
            break false;
        }
        assert!(Instant::now() < deadline, "{args:?} never wrote its output");
    };
    if caught {
        // SAFETY: as above; a stopped process gets the signal when continued (SIGKILL at once).
        unsafe {
            libc::kill(pid as i32, signal);
            libc::kill(pid as i32, libc::SIGCONT);
        }
        let status = child.0.wait().unwrap();
        assert!(!status.success(), "{args:?} survived signal {signal}");
    }
    caught
}

fn commands() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "pack",
            vec!["pack", "in/data", "out/new.qltx", "--key-file", "in/k.key", "-q"],
        ),
        (
            "unpack",
            vec!["unpack", "in/c.qltx", "out/plain", "--key-file", "in/k.key", "-q"],
        ),
        (
            "seek --output",
            vec![
                "seek",
                "in/c.qltx",
                "--offset",
                "1000",
                "--length",
                "60000000",
                "--output",
                "out/part",
                "--key-file",
                "in/k.key",
            ],
        ),
        (
            "reencrypt",
            vec![
                "reencrypt",
                "in/c.qltx",
                "out/re.qltx",
                "--key-file",
                "in/k.key",
                "-q",
            ],
        ),
    ]
}

fn check_every_command_and_signal(env: Option<(&str, &str)>, signals: &[(i32, &str)], seed: u64) {
    let w = work();
    let before = dir_names(&w.path("out"));
    let mut rng = Rng::new(seed);
    let mut caught = 0;
    for (name, args) in commands() {
        for &(signal, signame) in signals {
            // A random point in the first 16 MiB of output.
            let at = rng.below(16 << 20);
            if interrupt(&w, &args, env, signal, at) {
                caught += 1;
            } else {
                // Finished first: its complete output is fine; remove it for the next case.
                for n in dir_names(&w.path("out")) {
                    if !before.contains(&n) {
                        fs::remove_file(w.path("out").join(n)).unwrap();
                    }
                }
                continue;
            }
            assert_eq!(
                dir_names(&w.path("out")),
                before,
                "{name} interrupted by {signame} at {at} bytes left a file behind"
            );
        }
        assert_eq!(fs::read(w.path("out/keep")).unwrap(), b"keep me");
    }
    assert!(
        caught >= commands().len() * signals.len() / 2,
        "only {caught} cases were caught mid-write"
    );
}

#[test]
fn a_signal_at_any_point_leaves_no_output_behind() {
    check_every_command_and_signal(None, &SIGNALS, 1);
}

/// Where the file system has no O_TMPFILE, the named temporary file is removed on every signal
/// that can be caught (SIGKILL cannot be; `docs` say so).
#[test]
fn without_o_tmpfile_catchable_signals_remove_the_temporary_file() {
    check_every_command_and_signal(Some(("QELTRIX_TEST_NO_O_TMPFILE", "1")), &SIGNALS[..3], 2);
}

/// `keygen` on a full disk (here: a file-size limit of 0) fails without leaving an empty key, and
/// `keygen --force` keeps the old key instead of deleting it first.
#[test]
fn keygen_on_a_full_disk_keeps_the_old_key() {
    let w = work();
    let full_disk = |args: &[&str]| {
        let mut cmd = quiet(&w, args);
        // SAFETY: setrlimit and signal are async-signal-safe and affect only the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let zero = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &zero) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.status().unwrap()
    };
    for x25519 in [false, true] {
        let mut args = vec!["keygen", "-o", "out/new.key"];
        if x25519 {
            args.push("--x25519");
        }
        assert!(!full_disk(&args).success());
        assert!(!w.path("out/new.key").exists(), "an empty key was left behind");
    }
    let old = fs::read(w.path("in/k.key")).unwrap();
    assert!(!full_disk(&["keygen", "-o", "in/k.key", "--force"]).success());
    assert_eq!(
        fs::read(w.path("in/k.key")).unwrap(),
        old,
        "--force destroyed the old key"
    );
    quiet_ok(&w, &["keygen", "-o", "in/k.key", "--force"]);
    assert_ne!(fs::read(w.path("in/k.key")).unwrap(), old);
}
