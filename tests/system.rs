//! Qeltrix in the system's hands: a vault in /etc/fstab mounted by `mount(8)` through the
//! `mount.fuse.qeltrix` helper.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

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
