//! Qeltrix in the system's hands: a vault in /etc/fstab mounted by `mount(8)` through the
//! `mount.fuse.qeltrix` helper, and the systemd units in contrib/systemd/ run as systemd would
//! run them (their own ExecStart and ExecStop lines), so the shipped examples cannot rot.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where util-linux looks for `mount.TYPE` helpers (first of /sbin, /sbin/fs.d, /sbin/fs; on
/// Debian /sbin is a link to /usr/sbin).
const HELPER: &str = "/sbin/mount.fuse.qeltrix";

/// The helper linked to the binary under test for the test's duration; whatever was there
/// before is put back on drop, also when the test fails.
struct HelperLink {
    path: PathBuf,
    saved: Option<PathBuf>,
    // One test at a time owns the helper's name. Last, so it is released after the clean-up.
    _alone: std::sync::MutexGuard<'static, ()>,
}

static HELPER_OWNER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl HelperLink {
    fn install() -> HelperLink {
        let alone = HELPER_OWNER.lock().unwrap_or_else(|p| p.into_inner());
        let path = PathBuf::from(HELPER);
        let saved = path.symlink_metadata().is_ok().then(|| {
            let saved = PathBuf::from(format!("{HELPER}.saved-by-test-{}", unique_suffix()));
            std::fs::rename(&path, &saved).unwrap();
            saved
        });
        let link = HelperLink {
            path,
            saved,
            _alone: alone,
        };
        symlink(env!("CARGO_BIN_EXE_qeltrix"), &link.path).unwrap();
        link
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(saved) = &self.saved {
            let _ = std::fs::rename(saved, &self.path);
        }
    }
}

/// A mount made by the test: detached (and its daemon killed, once known) on drop.
struct MountGuard {
    mnt: PathBuf,
    pid: Option<i32>,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if qeltrix::mount::mount_type(&self.mnt).is_some() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .output();
        }
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) on the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Whether the process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// FUSE and, for `mount(8)` and the helper directory, root.
fn fuse_as_root() -> bool {
    if !fuse_available() {
        return false;
    }
    if !qeltrix::sys::process::is_root() {
        eprintln!("skipping: mounting through /etc/fstab and {HELPER} needs root");
        return false;
    }
    true
}

/// A vault `v` holding `movie.bin` (its plaintext also kept as `movie.bin` in the work folder),
/// key file `key`, and an empty `mnt`.
fn vault() -> (Work, Vec<u8>) {
    let w = Work::with_key();
    let plain = random_bytes(3 * MIB + 12_345, 42);
    w.write("movie.bin", &plain);
    std::fs::create_dir_all(w.path("v")).unwrap();
    std::fs::create_dir_all(w.path("mnt")).unwrap();
    w.ok("pack movie.bin v/ --key-file key --block-size 64 -q");
    (w, plain)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn an_fstab_line_mounts_a_vault_through_the_mount_helper() {
    if !fuse_as_root() {
        return;
    }
    let (w, plain) = vault();
    let (v, mnt, key) = (w.path("v"), w.path("mnt"), w.path("key"));
    let fstab = w.write(
        "fstab",
        format!(
            "# a test root's fstab\n{} {} fuse.qeltrix key_file={},log_file={},allow_other,noauto,nofail,_netdev,x-systemd.automount 0 0\n",
            path_str(&v),
            path_str(&mnt),
            path_str(&key),
            path_str(&w.path("mount.log")),
        )
        .as_bytes(),
    );
    let _helper = HelperLink::install();
    let mut guard = MountGuard {
        mnt: mnt.clone(),
        pid: None,
    };
    let out = assert_cmd::Command::new("mount")
        .arg("--fstab")
        .arg(&fstab)
        .arg(&mnt)
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert_code(&out, 0, "mount --fstab FILE DIR");
    guard.pid = Some(daemon_pid(&stderr_of(&out)));
    assert!(
        qeltrix::mount::mount_type(&mnt).is_some_and(|t| t.starts_with("fuse")),
        "live when mount(8) returns"
    );
    assert!(
        std::fs::read(mnt.join("movie.bin")).unwrap() == plain,
        "read through the mount"
    );

    let out = assert_cmd::Command::new("umount")
        .arg(&mnt)
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert_code(&out, 0, "umount DIR");
    assert_eq!(qeltrix::mount::mount_type(&mnt), None);
    let pid = guard.pid.unwrap();
    wait_until("the mount's process to end after umount", || ended(pid));
}

#[test]
fn the_mount_helper_refuses_unknown_options_and_passphrases() {
    if !fuse_as_root() {
        return;
    }
    let (w, _) = vault();
    let (v, mnt, key) = (w.path("v"), w.path("mnt"), w.path("key"));
    let _helper = HelperLink::install();
    let _guard = MountGuard {
        mnt: mnt.clone(),
        pid: None,
    };
    for (options, expected) in [
        (
            format!("key_file={},colour=blue", path_str(&key)),
            "unknown mount option colour=blue",
        ),
        ("passphrase=hunter2".to_string(), "passphrase_file=FILE"),
    ] {
        let out = assert_cmd::Command::new("mount")
            .args(["-t", "fuse.qeltrix", "-o", &options])
            .arg(&v)
            .arg(&mnt)
            .timeout(DEADLINE)
            .output()
            .unwrap();
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{options}: {stderr}");
        assert!(stderr.contains(expected), "{options}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "the passphrase is not echoed: {stderr}"
        );
        assert_eq!(
            qeltrix::mount::mount_type(&mnt),
            None,
            "{options}: nothing mounted"
        );
    }
}

/// The command lines of `directive` (ExecStart, ExecStop) in contrib/systemd/`unit`, with the
/// example's paths replaced by the test's: `paths` maps each to its replacement, and a path of
/// the example left unreplaced fails the test (a new one must be added here).
fn unit_commands(unit: &str, directive: &str, paths: &[(&str, String)]) -> Vec<Vec<String>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/systemd")
        .join(unit);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let prefix = format!("{directive}=");
    let lines: Vec<Vec<String>> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(|command| {
            // systemd's prefixes: ignore failure, argv0, privileges.
            let mut command = command.trim_start_matches(['-', '@', '+', '!', ':']).to_string();
            for (from, to) in paths {
                command = command.replace(from, to);
            }
            let words: Vec<String> = command.split_whitespace().map(String::from).collect();
            for word in &words {
                assert!(
                    !word.contains('%') && !word.contains('$'),
                    "{unit}: {word} is left for systemd to expand: add it to this test"
                );
                for example in ["/usr/", "/srv/", "/mnt/", "/var/", "/etc/", "/run/"] {
                    assert!(
                        !word.starts_with(example),
                        "{unit}: {word} is not replaced by this test: add it"
                    );
                }
            }
            words
        })
        .collect();
    assert!(!lines.is_empty(), "{unit} has no {directive}=");
    lines
}

/// The credentials folder systemd would make from the unit's `LoadCredential=NAME:…` lines,
/// each credential holding the key file `key`.
fn credentials(w: &Work, unit: &str) -> PathBuf {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/systemd")
        .join(unit);
    let text = std::fs::read_to_string(file).unwrap();
    let dir = w.path("credentials");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LoadCredential="))
        .map(|c| c.split(':').next().unwrap())
        .collect();
    assert!(!names.is_empty(), "{unit}: the key comes as a credential");
    for name in names {
        std::fs::copy(w.path("key"), dir.join(name)).unwrap();
    }
    dir
}

fn program(words: &[String]) -> std::process::Command {
    let mut c = qeltrix_process();
    assert_eq!(words[0], env!("CARGO_BIN_EXE_qeltrix"));
    c.args(&words[1..]).stdin(Stdio::null());
    c
}

#[test]
fn the_serve_unit_serves_and_stops_cleanly_on_sigterm() {
    let (w, plain) = vault();
    let creds = credentials(&w, "qeltrix-serve.service");
    let paths = [
        (
            "/usr/local/bin/qeltrix",
            env!("CARGO_BIN_EXE_qeltrix").to_string(),
        ),
        ("%d", path_str(&creds).to_string()),
        ("/srv/vault", path_str(&w.path("v")).to_string()),
        ("127.0.0.1:7621", "127.0.0.1:0".to_string()),
    ];
    let start = unit_commands("qeltrix-serve.service", "ExecStart", &paths);
    assert_eq!(start.len(), 1);
    let log = w.path("serve.log");
    let child = program(&start[0])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let addr: std::net::SocketAddr = serve_addr(&mut child.0, &log);
    assert!(addr.ip().is_loopback());
    let body = ureq::get(&format!("http://{addr}/movie.bin"))
        .call()
        .unwrap()
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    assert!(body == plain, "served byte-exact");

    // What systemd's stop does: SIGTERM (KillSignal=SIGTERM), then wait.
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child.0, &log);
    assert_eq!(status.code(), Some(0), "{}", log.as_path().text());
    assert!(log.as_path().text().contains("stopped"));
}

#[test]
fn the_watch_unit_packs_the_inbox_and_stops_cleanly_on_sigterm() {
    let w = Work::new();
    std::fs::create_dir_all(w.path("inbox/sub")).unwrap();
    std::fs::create_dir_all(w.path("vault")).unwrap();
    std::fs::create_dir_all(w.path("state")).unwrap();
    std::fs::write(w.path("inbox/sub/note.txt"), b"a note").unwrap();
    let out = w.run("keygen --x25519 -o id.key");
    assert_code(&out, 0, "keygen");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr_of(&out));
    let recipient = text
        .split_whitespace()
        .find(|t| t.starts_with("qeltrix-x25519:"))
        .unwrap()
        .to_string();
    let paths = [
        (
            "/usr/local/bin/qeltrix",
            env!("CARGO_BIN_EXE_qeltrix").to_string(),
        ),
        ("/srv/inbox", path_str(&w.path("inbox")).to_string()),
        ("/srv/vault", path_str(&w.path("vault")).to_string()),
        (
            "qeltrix-x25519:0000000000000000000000000000000000000000000000000000000000000000",
            recipient,
        ),
    ];
    let start = unit_commands("qeltrix-watch.service", "ExecStart", &paths);
    assert_eq!(start.len(), 1);
    let log = w.path("watch.log");
    let child = program(&start[0])
        .env("XDG_STATE_HOME", w.path("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    wait_for_text(&mut child.0, &log, "packed sub/note.txt");
    let out = w.run("unpack vault/sub/note.txt.qltx - --identity id.key");
    assert_code(&out, 0, "unpack");
    assert_eq!(out.stdout, b"a note");
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child.0, &log);
    assert_eq!(
        status.code(),
        Some(143),
        "SuccessExitStatus=143: {}",
        log.as_path().text()
    );
    assert!(log.as_path().text().contains("stopped"));
}

#[test]
fn the_mount_unit_mounts_and_its_stop_command_unmounts() {
    if !fuse_available() {
        return;
    }
    let (w, plain) = vault();
    let creds = credentials(&w, "qeltrix-mount.service");
    let mnt = w.path("mnt");
    let paths = [
        (
            "/usr/local/bin/qeltrix",
            env!("CARGO_BIN_EXE_qeltrix").to_string(),
        ),
        ("%d", path_str(&creds).to_string()),
        ("/srv/vault", path_str(&w.path("v")).to_string()),
        ("/mnt/vault", path_str(&mnt).to_string()),
        (
            "/var/log/qeltrix-mount.log",
            path_str(&w.path("mount.log")).to_string(),
        ),
    ];
    let start = unit_commands("qeltrix-mount.service", "ExecStart", &paths);
    let stop = unit_commands("qeltrix-mount.service", "ExecStop", &paths);
    let mut guard = MountGuard {
        mnt: mnt.clone(),
        pid: None,
    };
    // Type=forking: the command returns once the mount is live.
    let out = program(&start[0]).output().unwrap();
    assert_code(&out, 0, "ExecStart");
    guard.pid = Some(daemon_pid(&stderr_of(&out)));
    assert!(
        std::fs::read(mnt.join("movie.bin")).unwrap() == plain,
        "read through the mount"
    );
    for command in &stop {
        let out = program(command).output().unwrap();
        assert_code(&out, 0, "ExecStop");
    }
    assert_eq!(qeltrix::mount::mount_type(&mnt), None, "unmounted by ExecStop");
    let pid = guard.pid.unwrap();
    wait_until("the mount's process to end", || ended(pid));
}

#[test]
fn the_units_pass_systemd_analyze_verify_where_it_is_installed() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("skipping: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    for unit in [
        "qeltrix-mount.service",
        "qeltrix-serve.service",
        "qeltrix-watch.service",
    ] {
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.join(unit))
            .output()
            .unwrap();
        let stderr = stderr_of(&out);
        // Only what says the unit itself is wrong: the example's binary is not installed here,
        // and a machine without a running systemd adds notes of its own.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                [
                    "Unknown key",
                    "Unknown section",
                    "Failed to parse",
                    "Invalid",
                    "Ignoring",
                    "bad-setting",
                ]
                .iter()
                .any(|p| l.contains(p))
            })
            .collect();
        assert!(problems.is_empty(), "{unit}:\n{stderr}");
    }
}
