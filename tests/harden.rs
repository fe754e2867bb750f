//! The long-running commands leave no core dump holding their key or plaintext: a real
//! `qeltrix serve` is started with core dumps allowed (as a user with `ulimit -c unlimited` would),
//! then checked from outside through `/proc`, and finally crashed with SIGABRT.

mod common;

use common::{key_file_key, qeltrix_process, recipients, wait_for_text, write_key_file, Reaped};
use qeltrix::PackOptions;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;

/// `nobody`: the server runs as another user than the test, so that `/proc` shows its dumpability.
const NOBODY: u32 = 65534;

/// The soft and hard core file size limits of a process, from `/proc/PID/limits`.
fn core_limits(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[4].to_string(), fields[5].to_string())
}

#[test]
fn serve_is_not_dumpable_and_a_crash_leaves_no_core() {
    let root = unsafe { libc::geteuid() } == 0;
    let dir = tempfile::tempdir().unwrap();
    // Readable (and the crash folder writable) by the unprivileged user the server runs as.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    write_key_file(&dir.path().join("key"), 5);
    let plain = dir.path().join("plain");
    fs::write(&plain, vec![42u8; 100_000]).unwrap();
    let container = dir.path().join("c.bin.qltx");
    let opts = PackOptions::default();
    qeltrix::pack(&plain, &container, &recipients(&[key_file_key(5)]), &opts, true).unwrap();
    for f in ["key", "c.bin.qltx"] {
        fs::set_permissions(dir.path().join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
    let cwd = dir.path().join("cwd");
    fs::create_dir(&cwd).unwrap();
    fs::set_permissions(&cwd, fs::Permissions::from_mode(0o777)).unwrap();
    let log = dir.path().join("serve.log");

    let mut cmd = qeltrix_process();
    cmd.arg("serve")
        .arg(&container)
        .arg("--key-file")
        .arg(dir.path().join("key"))
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap());
    if root {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    // SAFETY: only setrlimit, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let all = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // Raise what this process may raise; as root, everything.
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_CORE, &mut cur);
            let want = if libc::setrlimit(libc::RLIMIT_CORE, &all) == 0 {
                all
            } else {
                libc::rlimit {
                    rlim_cur: cur.rlim_max,
                    rlim_max: cur.rlim_max,
                }
            };
            libc::setrlimit(libc::RLIMIT_CORE, &want);
            Ok(())
        });
    }
    let mut server = Reaped(cmd.spawn().unwrap());
    let pid = server.0.id();
    wait_for_text(&mut server.0, &log, "http://");

    // RLIMIT_CORE: set to 0, hard limit included, whatever it was started with.
    assert_eq!(
        core_limits(pid),
        ("0".to_string(), "0".to_string()),
        "core file size limits of the server"
    );
    if root {
        // A dumpable process's /proc files belong to its user; a non-dumpable one's to root,
        // which is what keeps other processes of that user out of its memory and environment.
        let owner = fs::metadata(format!("/proc/{pid}/environ")).unwrap().uid();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
            "{status}"
        );
        assert_eq!(
            owner, 0,
            "/proc/{pid}/environ belongs to the server's user: it is dumpable"
        );
    } else {
        eprintln!("not root: the dumpable flag is checked through the crash below only");
    }

    // A crash: dies of SIGABRT (a signal whose default action dumps core; a SIGSEGV sent with
    // kill is absorbed once by Rust's stack-overflow handler), and writes no core file (where the
    // kernel writes cores to the crashing process's folder, as with the default `core` pattern).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGABRT) }, 0);
    let status = server.0.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
    assert!(!status.core_dumped(), "the kernel reports a core dump");
    let pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    if !pattern.starts_with('|') && !pattern.contains('/') {
        let cores: Vec<_> = fs::read_dir(&cwd)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(cores.is_empty(), "core files written: {cores:?}");
    }
    assert!(Path::new(&log).exists());
}
