//! `qeltrix mount --read-write` through real FUSE mounts: the binary is started as a user would
//! start it, real programs (cp, rsync, tar, git, sqlite3, ffmpeg, an editor's save) write into the
//! mount, and what they wrote is compared with the same program's output on a plain folder, read
//! back through the mount, after a remount, and with `qeltrix unpack` / `qeltrix verify` on the
//! vault. Every mount is undone by a guard, also when a test fails.
//!
//! The vault starts empty in every test (a read-write mount accepts an empty vault). The crash
//! test (`kill -9` of the mount at random points of real workloads) is `#[ignore]`d for its
//! length; `scripts/test.sh` runs it.
//!
//! Without `/dev/fuse` these tests skip with a message, except under CI (`CI=true`), where that
//! is a failure: CI installs fuse3.
#![cfg(feature = "cli")]

mod common;
use common::Rng;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use qeltrix::mount::mount_type;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tempfile::TempDir;

/// What marks a stored file in the vault: `FOO` is kept as `FOO.qltx`.
const SUFFIX: &str = ".qltx";

/// A folder with a key file, an empty vault, two mount points and room for plain copies.
struct Space {
    dir: TempDir,
}

impl Space {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_key_file(&dir.path().join("key"), 5);
        for d in ["vault", "mnt", "mnt2"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        Space { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn vault(&self) -> PathBuf {
        self.path("vault")
    }

    fn key(&self) -> PathBuf {
        self.path("key")
    }

    fn mount_rw(&self) -> Option<Mount> {
        Mount::start(self, "mnt", &["--read-write"])
    }

    fn mount_ro(&self) -> Option<Mount> {
        Mount::start(self, "mnt", &[])
    }

    /// The files the vault stores, by their names in the mount (`a/b.txt` for
    /// `vault/a/b.txt.qltx`), sorted. Names of the mount's own (`.qeltrix…`) are left out.
    fn stored(&self) -> Vec<String> {
        let mut names: Vec<String> = walk_files(&self.vault())
            .into_iter()
            .filter(|rel| !rel.split('/').any(|c| c.starts_with(".qeltrix")))
            .filter_map(|rel| rel.strip_suffix(SUFFIX).map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// `qeltrix verify` on every stored container: each one opens and authenticates.
    fn verify_all(&self) {
        let stored = self.stored();
        if stored.is_empty() {
            return;
        }
        let out = qeltrix()
            .arg("-q")
            .arg("verify")
            .arg("--key-file")
            .arg(self.key())
            .args(
                stored
                    .iter()
                    .map(|rel| self.vault().join(format!("{rel}{SUFFIX}"))),
            )
            .timeout(DEADLINE)
            .output()
            .unwrap();
        assert!(out.status.success(), "qeltrix verify: {}", stderr_of(&out));
    }

    /// `qeltrix unpack vault/REL.qltx`: the stored file's plaintext.
    fn unpack(&self, rel: &str) -> Vec<u8> {
        let out_path = self.path(&format!("unpacked-{}", unique_suffix()));
        let out = qeltrix()
            .arg("-q")
            .arg("unpack")
            .arg(self.vault().join(format!("{rel}{SUFFIX}")))
            .arg(&out_path)
            .arg("--key-file")
            .arg(self.key())
            .timeout(DEADLINE)
            .output()
            .unwrap();
        assert!(out.status.success(), "qeltrix unpack {rel}: {}", stderr_of(&out));
        let bytes = fs::read(&out_path).unwrap();
        fs::remove_file(&out_path).unwrap();
        bytes
    }
}

/// A running `qeltrix mount` in the foreground. [`Mount::unmount`] ends it the user's way
/// (SIGTERM) and requires a clean exit; dropping it (a failed test) ends it whatever it takes.
struct Mount {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(space: &Space, mnt: &str, extra: &[&str]) -> Option<Mount> {
        if !fuse_available() {
            return None;
        }
        let mnt = space.path(mnt).canonicalize().unwrap();
        let log = space.path(&format!("mount-{}.log", unique_suffix()));
        let mut child = qeltrix_process()
            .arg("mount")
            .arg(space.vault())
            .arg(&mnt)
            .arg("--key-file")
            .arg(space.key())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_output("the mount to appear", &mut child, &log, |_| {
            mount_type(&mnt).map(|_| ())
        });
        Some(Mount {
            child: Some(child),
            mnt,
            log,
        })
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as Ctrl-C or systemd would: the mount must go and the process exit 0 (by then
    /// every closed file is in the vault).
    fn unmount(mut self) {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = try_wait_exit(&mut child);
        let log = self.log_text();
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "the mount did not exit 0 on SIGTERM ({status:?}); log:\n{log}"
        );
        assert!(mount_type(&self.mnt).is_none(), "still mounted after exit");
    }

    /// `kill -9` of the mount process, then the dead mount detached (`umount -l`), as an
    /// administrator would after a crash.
    fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        detach(&self.mnt);
        assert!(mount_type(&self.mnt).is_none(), "the dead mount is detached");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                if try_wait_exit(&mut child).is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        if mount_type(&self.mnt).is_some() {
            detach(&self.mnt);
        }
    }
}

/// `umount -l`: detaches a mount even while it is busy or its process is dead.
fn detach(mnt: &Path) {
    let c = cstr(mnt);
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// The files under `root` (not folders), as sorted `/`-separated relative names.
fn walk_files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(root, &entry.path(), out);
            } else {
                let rel = entry.path().strip_prefix(root).unwrap().to_owned();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `got` equals `want`; on failure says where they first differ instead of printing megabytes.
#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} bytes, want {}; first difference at byte {at}",
            got.len(),
            want.len()
        );
    }
}

/// Every file under `src` is under `dst` with the same bytes, permission bits and mtime (to the
/// nanosecond), and `dst` holds no other files.
fn assert_same_files(src: &Path, dst: &Path) {
    let (want, got) = (walk_files(src), walk_files(dst));
    assert_eq!(got, want, "the files under {}", dst.display());
    for rel in &want {
        let (a, b) = (src.join(rel), dst.join(rel));
        assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "{rel}: contents");
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert_eq!(mb.mode() & 0o7777, ma.mode() & 0o7777, "{rel}: mode");
        assert_eq!(
            (mb.mtime(), mb.mtime_nsec()),
            (ma.mtime(), ma.mtime_nsec()),
            "{rel}: mtime"
        );
    }
}

/// Sets the mtime (and atime) of `path` to `secs`.`nanos`.
fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    let f = File::options().write(true).open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
}

/// The tree a user copies in: nested folders, dot files and a dot folder, empty files and an
/// empty folder, sizes around a page and a block, a name with a space, assorted modes and
/// nanosecond mtimes. The files' bytes differ with `seed`.
fn make_tree(root: &Path, seed: u64) {
    let files: [(&str, usize); 12] = [
        ("empty", 0),
        ("one", 1),
        ("page-1", 4095),
        ("page", 4096),
        ("a/mib+17", MIB + 17),
        ("a/b/c/five-mib", 5 * MIB),
        (".gitignore", 40),
        ("a/.hidden", 700),
        (".dotdir/inner.txt", 9000),
        ("a/b/empty", 0),
        ("with space.txt", 300),
        ("a/b/text.log", 70_000),
    ];
    for (i, (rel, len)) in files.iter().enumerate() {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes = if rel.ends_with(".txt") || rel.ends_with(".log") {
            text_bytes(*len, seed + i as u64)
        } else {
            random_bytes(*len, seed + i as u64)
        };
        fs::write(&path, bytes).unwrap();
        let mode = [0o644, 0o600, 0o755][i % 3];
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, 1_600_000_000 + i as u64 * 1000 + seed, i as u32 * 111_111);
    }
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::create_dir_all(root.join("a/b/c/deep-empty")).unwrap();
}

/// `cp -a` of a tree into the mount reads back the same, is stored file by file, and reads back
/// the same after a remount read-only. Mounted with `--daemon`, ended with `qeltrix umount`.
#[test]
fn cp_a_a_tree_in_and_read_it_back_after_a_read_only_remount() {
    let s = Space::new();
    if !fuse_available() {
        return;
    }
    let src = s.path("src");
    make_tree(&src, 1);
    let mnt = s.path("mnt").canonicalize().unwrap();
    let out = qeltrix()
        .arg("mount")
        .arg(s.vault())
        .arg(&mnt)
        .arg("--read-write")
        .arg("--key-file")
        .arg(s.key())
        .arg("--daemon")
        .arg("--log-file")
        .arg(s.path("daemon.log"))
        .timeout(DEADLINE)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "an empty vault mounts read-write: {stderr}");
    let pid = daemon_pid(&stderr);
    let daemon = DaemonMount {
        mnt: mnt.clone(),
        pid,
    };

    run_ok(
        "cp",
        &["-a".as_ref(), src.as_os_str(), mnt.join("tree").as_os_str()],
    );
    assert_diff_r(&src, &mnt.join("tree"));
    assert_same_files(&src, &mnt.join("tree"));
    assert!(mnt.join("tree/emptydir").is_dir() && mnt.join("tree/a/b/c/deep-empty").is_dir());

    qeltrix()
        .arg("umount")
        .arg(&mnt)
        .timeout(DEADLINE)
        .assert()
        .success();
    wait_until("the daemon to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid)
    });
    drop(daemon);

    let want: Vec<String> = walk_files(&src).iter().map(|r| format!("tree/{r}")).collect();
    assert_eq!(s.stored(), want, "one container per file, and nothing else");
    assert!(s.vault().join("tree/emptydir").is_dir(), "folders mirrored");
    s.verify_all();
    assert_bytes(
        &s.unpack("tree/a/b/c/five-mib"),
        &fs::read(src.join("a/b/c/five-mib")).unwrap(),
        "five-mib unpacked",
    );

    let Some(m) = s.mount_ro() else { return };
    assert_diff_r(&src, &m.file("tree"));
    assert_same_files(&src, &m.file("tree"));
    m.unmount();
}

fn zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// `rsync -a` (temporary dot names renamed into place, times and modes set afterwards), then an
/// update with `--delete`: changed files, a removed one, a new folder.
#[test]
fn rsync_a_in_and_update_with_delete() {
    let s = Space::new();
    let src = s.path("src");
    make_tree(&src, 2);
    let Some(m) = s.mount_rw() else { return };
    let dst = m.file("tree");
    let rsync = |extra: &[&str]| {
        let out = Command::new("rsync")
            .arg("-a")
            .args(extra)
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", dst.display()))
            .output()
            .expect("rsync is installed (scripts/test.sh installs it)");
        ok_output("rsync", &out);
    };
    rsync(&[]);
    assert_diff_r(&src, &dst);
    assert_same_files(&src, &dst);

    fs::write(src.join("one"), b"2").unwrap();
    set_mtime(&src.join("one"), 1_700_000_000, 5);
    fs::write(src.join("a/mib+17"), random_bytes(MIB + 17, 99)).unwrap();
    set_mtime(&src.join("a/mib+17"), 1_700_000_001, 7);
    fs::remove_file(src.join("page")).unwrap();
    fs::create_dir(src.join("new")).unwrap();
    fs::write(src.join("new/file"), text_bytes(12_345, 3)).unwrap();
    rsync(&["--delete"]);
    assert_diff_r(&src, &dst);
    assert_same_files(&src, &dst);
    m.unmount();

    let want: Vec<String> = walk_files(&src).iter().map(|r| format!("tree/{r}")).collect();
    assert_eq!(s.stored(), want, "rsync's temporary files are gone");
    s.verify_all();
    assert_bytes(
        &s.unpack("tree/a/mib+17"),
        &random_bytes(MIB + 17, 99),
        "mib+17 unpacked",
    );
    // rsync sets times and modes by name once a file is in place: kept in the vault too.
    let Some(m) = s.mount_ro() else { return };
    assert_same_files(&src, &m.file("tree"));
    m.unmount();
}

/// The mtime of `path` as the file system answers now: `statx` with `AT_STATX_FORCE_SYNC`,
/// which makes FUSE ask the mount rather than answer from the kernel's attribute cache.
fn fresh_mtime(path: &Path) -> (i64, i64) {
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            cstr(path).as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_MTIME,
            &mut st,
        )
    };
    assert_eq!(rc, 0, "statx {}: {}", path.display(), io::Error::last_os_error());
    (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec as i64)
}

/// rsync's way in: a temporary dot name written and closed, its times set by name at once
/// (the kernel sends the setattr while the file's last release may still be committing, and
/// both may publish a version), then a rename over the final name while the tree may not show
/// the last version yet. The time set is what the mount answers, then and after a remount,
/// however they interleave.
#[test]
fn times_set_by_name_right_after_close_are_the_ones_shown() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let dir = m.file("t");
    fs::create_dir(&dir).unwrap();
    let data = random_bytes(MIB + 17, 5);
    let want = |i: u32| (1_600_000_000 + i as i64, 1_000 * i as i64 + 7);
    for i in 0..200u32 {
        let (temp, path) = (dir.join(format!(".f{i}.tmp")), dir.join(format!("f{i}")));
        fs::write(&temp, &data).unwrap();
        let (secs, nanos) = want(i);
        let times = [libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }; 2];
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cstr(&temp).as_ptr(), times.as_ptr(), 0) };
        assert_eq!(
            rc,
            0,
            "utimensat {}: {}",
            temp.display(),
            io::Error::last_os_error()
        );
        assert_eq!(fresh_mtime(&temp), (secs, nanos), "f{i}: mtime after utimensat");
        fs::rename(&temp, &path).unwrap();
        assert_eq!(fresh_mtime(&path), (secs, nanos), "f{i}: mtime after the rename");
    }
    m.unmount();
    let Some(m) = s.mount_ro() else { return };
    for i in 0..200u32 {
        let meta = fs::metadata(m.file(&format!("t/f{i}"))).unwrap();
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            want(i),
            "f{i}: mtime after a remount"
        );
    }
    m.unmount();
}

/// A source tree of a few hundred files of assorted sizes.
fn make_source_tree(root: &Path, files: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..files {
        let rel = format!(
            "d{}/s{}/f{i:03}.{}",
            i % 7,
            i % 5,
            ["c", "h", "txt", "bin"][i % 4]
        );
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let len = match rng.below(10) {
            0 => 0,
            1..=6 => rng.below(8 * KIB as u64) as usize,
            7 | 8 => rng.below(64 * KIB as u64) as usize,
            _ => rng.below(300 * KIB as u64) as usize,
        };
        let bytes = if i % 4 == 3 {
            random_bytes(len, seed + i as u64)
        } else {
            text_bytes(len, seed + i as u64)
        };
        fs::write(&path, bytes).unwrap();
        set_mtime(&path, 1_650_000_000 + i as u64, 0);
    }
}

/// `tar x` into the mount gives the same tree as into a plain folder.
#[test]
fn tar_x_of_a_few_hundred_files() {
    let s = Space::new();
    let src = s.path("src");
    make_source_tree(&src, 300, 3);
    let tarball = s.path("src.tar");
    run_ok(
        "tar",
        &[
            "-C".as_ref(),
            src.as_os_str(),
            "-cf".as_ref(),
            tarball.as_os_str(),
            ".".as_ref(),
        ],
    );
    let plain = s.path("plain");
    fs::create_dir(&plain).unwrap();
    run_ok(
        "tar",
        &[
            "-C".as_ref(),
            plain.as_os_str(),
            "-xf".as_ref(),
            tarball.as_os_str(),
        ],
    );
    let Some(m) = s.mount_rw() else { return };
    let dst = m.file("x");
    fs::create_dir(&dst).unwrap();
    run_ok(
        "tar",
        &[
            "-C".as_ref(),
            dst.as_os_str(),
            "-xf".as_ref(),
            tarball.as_os_str(),
        ],
    );
    assert_diff_r(&plain, &dst);
    assert_same_files(&plain, &dst);
    m.unmount();

    assert_eq!(s.stored().len(), 300);
    s.verify_all();
    assert_eq!(
        s.unpack("x/d3/s3/f003.bin"),
        fs::read(plain.join("d3/s3/f003.bin")).unwrap()
    );
    // tar sets each file's time after closing it (utimensat by name): kept in the vault too.
    let Some(m) = s.mount_ro() else { return };
    assert_same_files(&plain, &m.file("x"));
    m.unmount();
}

/// `git` run hermetically (no user or system config, no background gc that would keep files in
/// the mount open) in `dir`, with fixed names and dates so the same history gives the same
/// hashes; must succeed; returns stdout.
fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .stdin(Stdio::null())
        .output()
        .expect("git is installed (scripts/test.sh installs it)");
    ok_output(&format!("git {}", args.join(" ")), &out)
}

/// `git clone --no-hardlinks` into the mount (loose objects and a pack, `.git` and its lock
/// files, objects renamed into place and made read-only), then a commit and `git gc` inside the
/// clone: `git fsck --full` passes and the history is the source's, also after a remount.
#[test]
fn git_clone_commit_gc_and_fsck_in_the_mount() {
    let s = Space::new();
    let home = s.path("home");
    fs::create_dir(&home).unwrap();
    let repo = s.path("repo");
    fs::create_dir(&repo).unwrap();
    git(&repo, &home, &["init", "-q", "-b", "main"]);
    for c in 0..6u64 {
        fs::write(
            repo.join(format!("file{c}.txt")),
            text_bytes(2000 + c as usize * 500, c),
        )
        .unwrap();
        fs::create_dir_all(repo.join("src/deep")).unwrap();
        fs::write(repo.join("src/deep/lib.rs"), text_bytes(5000, 100 + c)).unwrap();
        fs::write(repo.join(".gitignore"), format!("target{c}\n")).unwrap();
        if c == 3 {
            fs::remove_file(repo.join("file1.txt")).unwrap();
            fs::write(repo.join("blob.bin"), random_bytes(200_000, 7)).unwrap();
        }
        git(&repo, &home, &["add", "-A"]);
        git(&repo, &home, &["commit", "-q", "-m", &format!("commit {c}")]);
        if c == 3 {
            git(&repo, &home, &["gc", "-q"]);
        }
    }
    let log = git(&repo, &home, &["log", "--format=%H %s", "main"]);
    let Some(m) = s.mount_rw() else { return };
    let clone = m.file("clone");
    git(
        &s.path("."),
        &home,
        &[
            "clone",
            "-q",
            "--no-hardlinks",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    git(&clone, &home, &["fsck", "--full", "--strict"]);
    assert_eq!(git(&clone, &home, &["log", "--format=%H %s", "main"]), log);
    assert_eq!(git(&clone, &home, &["status", "--porcelain"]), "");
    assert_diff_r(&repo.join("src"), &clone.join("src"));

    fs::write(clone.join("added.txt"), b"made in the mount\n").unwrap();
    git(&clone, &home, &["add", "added.txt"]);
    git(&clone, &home, &["commit", "-q", "-m", "in the mount"]);
    git(&clone, &home, &["gc", "-q"]);
    git(&clone, &home, &["fsck", "--full", "--strict"]);
    let log = git(&clone, &home, &["log", "--format=%H %s", "main"]);
    m.unmount();

    s.verify_all();
    let Some(m) = s.mount_rw() else { return };
    let clone = m.file("clone");
    git(&clone, &home, &["fsck", "--full", "--strict"]);
    assert_eq!(git(&clone, &home, &["log", "--format=%H %s", "main"]), log);
    assert_eq!(git(&clone, &home, &["status", "--porcelain"]), "");
    assert_eq!(fs::read(clone.join("added.txt")).unwrap(), b"made in the mount\n");
    m.unmount();
}

/// `sqlite3 DB` fed `SQL` on stdin; must succeed; returns stdout.
fn sqlite(db: &Path, sql: &str) -> String {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 is installed (scripts/test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let sql = sql.to_string();
    let feeder = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    let stdout = ok_output("sqlite3", &out);
    assert!(
        out.stderr.is_empty(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A database in the mount through 1,000 transactions (a rollback journal created, fsynced and
/// deleted for each): intact, with every row, also after a remount.
#[test]
fn sqlite_a_thousand_transactions() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let db = m.file("db/app.sqlite");
    fs::create_dir(m.file("db")).unwrap();
    let mut script = String::from("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);\n");
    for i in 1..=1000 {
        script.push_str(&format!(
            "BEGIN; INSERT INTO t(v) VALUES ('row {i} {}'); COMMIT;\n",
            "x".repeat(i % 300)
        ));
    }
    sqlite(&db, &script);
    let check = "PRAGMA integrity_check; SELECT count(*), sum(length(v)) FROM t;";
    let want = sqlite(&db, check);
    assert!(want.starts_with("ok\n1000|"), "{want}");
    m.unmount();

    assert_eq!(s.stored(), ["db/app.sqlite"], "the journal is gone");
    s.verify_all();
    let Some(m) = s.mount_rw() else { return };
    assert_eq!(sqlite(&m.file("db/app.sqlite"), check), want);
    m.unmount();
}

/// SQLite in WAL mode: its `-shm` index is shared memory, an `mmap(MAP_SHARED)` of a file in
/// the mount, written through the mapping; a checkpoint folds the log into the database.
#[test]
fn sqlite_in_wal_mode_maps_its_shared_memory_file() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let db = m.file("wal.sqlite");
    let mut script =
        String::from("PRAGMA journal_mode=WAL;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);\n");
    for i in 1..=200 {
        script.push_str(&format!("BEGIN; INSERT INTO t(v) VALUES ('row {i}'); COMMIT;\n"));
    }
    assert_eq!(sqlite(&db, &script), "wal\n");
    let check = "PRAGMA integrity_check; SELECT count(*) FROM t;";
    assert_eq!(sqlite(&db, check), "ok\n200\n");
    assert_eq!(
        sqlite(&db, "PRAGMA wal_checkpoint(TRUNCATE);"),
        "0|0|0\n",
        "checkpointed"
    );
    m.unmount();

    s.verify_all();
    let Some(m) = s.mount_rw() else { return };
    assert_eq!(sqlite(&m.file("wal.sqlite"), check), "ok\n200\n");
    m.unmount();
}

/// An editor's save: the new text to a temporary file, fsync, rename over the original. The
/// name shows the new text each time; a reader holding the old file keeps the old text.
#[test]
fn editor_saves_write_fsync_and_rename_over_the_original() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let doc = m.file("notes/doc.txt");
    fs::create_dir(m.file("notes")).unwrap();
    fs::write(&doc, text_bytes(3000, 0)).unwrap();
    for i in 1..=6u64 {
        let held = File::open(&doc).unwrap();
        let before = fs::read(&doc).unwrap();
        let text = text_bytes(2000 + 700 * i as usize, i);
        let tmp = m.file(&format!("notes/.doc.txt.swp{i}"));
        let mut f = File::create(&tmp).unwrap();
        f.write_all(&text).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(&tmp, &doc).unwrap();
        File::open(m.file("notes")).unwrap().sync_all().unwrap();
        assert_eq!(fs::read(&doc).unwrap(), text, "save {i}");
        assert_eq!(dir_names(&m.file("notes")), ["doc.txt"], "save {i}");
        let mut old = vec![0u8; before.len()];
        held.read_exact_at(&mut old, 0).unwrap();
        assert_eq!(old, before, "an open file keeps what it opened");
    }
    m.unmount();
    assert_eq!(s.stored(), ["notes/doc.txt"]);
    assert_eq!(s.unpack("notes/doc.txt"), text_bytes(2000 + 700 * 6, 6));
}

/// `ffprobe`'s codec types and duration of `file`.
fn probe(file: &Path) -> (Vec<String>, f64) {
    let out = run_ok(
        "ffprobe",
        &[
            "-v".as_ref(),
            "error".as_ref(),
            "-show_entries".as_ref(),
            "stream=codec_type:format=duration".as_ref(),
            "-of".as_ref(),
            "default=nw=1".as_ref(),
            file.as_os_str(),
        ],
    );
    let types = out
        .lines()
        .filter_map(|l| l.strip_prefix("codec_type="))
        .map(str::to_string)
        .collect();
    let duration = out
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration from ffprobe: {out}"));
    (types, duration)
}

/// ffmpeg writes an MP4 straight into the mount: the index at the end after seeking back to
/// patch the data size, and with `+faststart` read back and moved to the front. The bytes equal
/// the same command's output on a plain folder, and ffprobe reads a 3 s video.
#[test]
fn ffmpeg_writes_an_mp4_into_the_mount() {
    let s = Space::new();
    let encode = |out: &Path, faststart: bool| {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc=duration=3:size=320x240:rate=25"])
            .args([
                "-c:v",
                "mpeg4",
                "-threads",
                "1",
                "-fflags",
                "+bitexact",
                "-flags:v",
                "+bitexact",
            ]);
        if faststart {
            cmd.args(["-movflags", "+faststart"]);
        }
        let out = cmd
            .arg(out)
            .output()
            .expect("ffmpeg is installed (scripts/test.sh installs it)");
        ok_output("ffmpeg", &out);
    };
    let plain = s.path("plain");
    fs::create_dir(&plain).unwrap();
    encode(&plain.join("clip.mp4"), false);
    encode(&plain.join("fast.mp4"), true);
    let Some(m) = s.mount_rw() else { return };
    for (name, faststart) in [("clip.mp4", false), ("fast.mp4", true)] {
        encode(&m.file(name), faststart);
        let (types, duration) = probe(&m.file(name));
        assert_eq!(types, ["video"], "{name}");
        assert!((duration - 3.0).abs() < 0.1, "{name}: duration {duration}");
        assert!(
            fs::read(m.file(name)).unwrap() == fs::read(plain.join(name)).unwrap(),
            "{name}: the same bytes as on a plain folder"
        );
    }
    m.unmount();
    for name in ["clip.mp4", "fast.mp4"] {
        assert!(
            s.unpack(name) == fs::read(plain.join(name)).unwrap(),
            "{name} unpacked"
        );
    }
}

/// One step of the random-overwrite model test.
#[derive(Clone, Debug)]
enum Op {
    Write { at: u64, len: usize, seed: u64 },
    Truncate(u64),
    Read { at: u64, len: usize },
    Fsync,
    Reopen,
}

/// Operations on files of up to 400 KB times `scale`: at 8, most files pass 1 MiB, where the
/// mount writes them as format 4 and edits them in place.
fn op(scale: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..300_000 * scale, 0usize..70_000, any::<u64>())
            .prop_map(|(at, len, seed)| Op::Write { at, len, seed }),
        1 => (0u64..400_000 * scale).prop_map(Op::Truncate),
        2 => (0u64..400_000 * scale, 0usize..70_000).prop_map(|(at, len)| Op::Read { at, len }),
        1 => Just(Op::Fsync),
        1 => Just(Op::Reopen),
    ]
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// pread until `len` bytes or the end of the file.
fn pread(file: &File, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], at + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// The file `a` in mount `m` has the bytes of its model `b`.
fn same_contents(m: &Mount, a: &Path, b: &Path) -> Result<(), TestCaseError> {
    let x = fs::read(a)
        .map_err(|e| TestCaseError::fail(format!("reading {}: {e}; log:\n{}", a.display(), m.log_text())))?;
    let y = fs::read(b).unwrap();
    prop_assert!(
        x == y,
        "{} ({} bytes) differs from its model ({} bytes)",
        a.display(),
        x.len(),
        y.len()
    );
    Ok(())
}

/// Random pwrites (also past the end, leaving holes), truncates, reads, fsyncs and reopens of a
/// file in the mount, applied alike to a model file on a plain folder: the same bytes after every
/// close, and after a remount.
#[test]
fn random_overwrites_match_a_model_file() {
    random_overwrites_with(&[], 1);
}

#[test]
fn random_overwrites_of_large_files_go_in_place_and_match_a_model_file() {
    random_overwrites_with(&[], 8);
}

/// The same with 1 MiB of write memory: a file of more than 256 KiB of edits is written out to a
/// scratch container and its pages dropped, mid-edit.
#[test]
fn random_overwrites_match_a_model_file_when_edits_spill() {
    random_overwrites_with(&["--write-memory", "1"], 1);
}

fn random_overwrites_with(extra: &[&str], scale: u64) {
    let s = Space::new();
    let models = s.path("models");
    fs::create_dir(&models).unwrap();
    let args = [&["--read-write"], extra].concat();
    let Some(m) = Mount::start(&s, "mnt", &args) else {
        return;
    };
    let case = AtomicUsize::new(0);
    let mut runner = TestRunner::new(PropConfig::with_cases(24));
    runner
        .run(&prop::collection::vec(op(scale), 1..24), |ops| {
            let name = format!("f{}", case.fetch_add(1, Ordering::Relaxed));
            let (real, model) = (m.file(&name), models.join(&name));
            let (mut rf, mut mf) = (open_rw(&real), open_rw(&model));
            // A failed call on the mount fails the case with the call, the errno and the log.
            let failed = |k: usize, op: &Op, e: io::Error| {
                TestCaseError::fail(format!("{name}: op {k} {op:?}: {e}; log:\n{}", m.log_text()))
            };
            for (k, op) in ops.iter().enumerate() {
                match *op {
                    Op::Write { at, len, seed } => {
                        let bytes = random_bytes(len, seed);
                        rf.write_all_at(&bytes, at).map_err(|e| failed(k, op, e))?;
                        mf.write_all_at(&bytes, at).unwrap();
                    }
                    Op::Truncate(len) => {
                        rf.set_len(len).map_err(|e| failed(k, op, e))?;
                        mf.set_len(len).unwrap();
                    }
                    Op::Read { at, len } => {
                        let got = pread(&rf, at, len).map_err(|e| failed(k, op, e))?;
                        let want = pread(&mf, at, len).unwrap();
                        prop_assert!(got == want, "{name}: op {k}: read {at}+{len} differs");
                    }
                    Op::Fsync => {
                        rf.sync_all().map_err(|e| failed(k, op, e))?;
                        prop_assert_eq!(rf.metadata().unwrap().len(), mf.metadata().unwrap().len());
                    }
                    Op::Reopen => {
                        drop((rf, mf));
                        same_contents(&m, &real, &model)?;
                        (rf, mf) = (open_rw(&real), open_rw(&model));
                    }
                }
            }
            drop((rf, mf));
            same_contents(&m, &real, &model)?;
            Ok(())
        })
        .unwrap();
    m.unmount();

    s.verify_all();
    if scale > 1 {
        // Files past 1 MiB were kept as format 4, their edits appended in place.
        let in_place = s
            .stored()
            .iter()
            .filter(|c| {
                let json = run_ok(
                    env!("CARGO_BIN_EXE_qeltrix"),
                    &[
                        "info".as_ref(),
                        "--json".as_ref(),
                        s.vault().join(format!("{c}{SUFFIX}")).as_os_str(),
                    ],
                );
                json.replace(" ", "").contains("\"format_version\":4")
            })
            .count();
        assert!(in_place > 0, "no file was written as format 4");
    }
    let Some(m) = s.mount_ro() else { return };
    let names = walk_files(&models);
    assert_eq!(names.len(), 24);
    assert_eq!(walk_files(&m.mnt), names);
    for name in &names {
        assert!(
            fs::read(m.file(name)).unwrap() == fs::read(models.join(name)).unwrap(),
            "{name} after the remount"
        );
    }
    m.unmount();
}

/// The errno of a failed call returning -1, or 0 on success.
fn errno_of(ret: libc::c_int) -> i32 {
    if ret == 0 {
        0
    } else {
        io::Error::last_os_error().raw_os_error().unwrap()
    }
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> i32 {
    let (a, b) = (cstr(from), cstr(to));
    errno_of(unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) })
}

/// Appends (`>>`), truncating opens, and a second descriptor reading what the first one wrote
/// before it is closed.
#[test]
fn appends_truncating_opens_and_a_second_reader() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let log = m.file("app.log");
    let append = || OpenOptions::new().append(true).create(true).open(&log).unwrap();
    let mut a = append();
    a.write_all(b"one\n").unwrap();
    a.write_all(b"two\n").unwrap();
    drop(a);
    let mut a = append();
    a.write_all(b"three\n").unwrap();
    let reader = File::open(&log).unwrap();
    assert_eq!(
        pread(&reader, 0, 100).unwrap(),
        b"one\ntwo\nthree\n",
        "before close"
    );
    drop((a, reader));
    assert_eq!(fs::read(&log).unwrap(), b"one\ntwo\nthree\n");

    fs::write(m.file("t"), text_bytes(100_000, 1)).unwrap();
    fs::write(m.file("t"), b"short").unwrap();
    assert_eq!(fs::read(m.file("t")).unwrap(), b"short");
    let mut w = File::create(m.file("t")).unwrap();
    assert_eq!(fs::read(m.file("t")).unwrap(), b"", "O_TRUNC shows at once");
    w.write_all(b"again").unwrap();
    drop(w);
    m.unmount();

    assert_eq!(s.unpack("app.log"), b"one\ntwo\nthree\n");
    assert_eq!(s.unpack("t"), b"again");
}

/// Eight threads write files of their own at once (sharing the mount's write memory), each
/// read back and compared, also after a remount.
#[test]
fn eight_threads_write_files_at_once() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let expected = |t: u64, i: u64| random_bytes((t * 7919 + i * 104_729) as usize % 300_000, t * 100 + i);
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let dir = m.file(&format!("t{t}"));
            scope.spawn(move || {
                fs::create_dir(&dir).unwrap();
                for i in 0..12u64 {
                    let path = dir.join(format!("f{i}"));
                    let data = expected(t, i);
                    let mut f = File::create(&path).unwrap();
                    for chunk in data.chunks(1 + (i as usize * 9_973) % 70_000) {
                        f.write_all(chunk).unwrap();
                    }
                    if i % 3 == 0 {
                        f.sync_all().unwrap();
                    }
                    drop(f);
                    assert!(fs::read(&path).unwrap() == data, "t{t}/f{i}");
                }
            });
        }
    });
    m.unmount();
    s.verify_all();
    let Some(m) = s.mount_ro() else { return };
    for t in 0..8 {
        for i in 0..12 {
            let got = fs::read(m.file(&format!("t{t}/f{i}"))).unwrap();
            assert!(got == expected(t, i), "t{t}/f{i} after the remount");
        }
    }
    m.unmount();
}

/// rename(2) as POSIX has it: over an existing file, `RENAME_NOREPLACE` (EEXIST),
/// `RENAME_EXCHANGE`, folders with their files, open files, and EXDEV out of the mount.
#[test]
fn renames_over_noreplace_exchange_folders_and_out_of_the_mount() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    fs::write(m.file("a"), b"AAAA").unwrap();
    fs::write(m.file("b"), b"BB").unwrap();

    assert_eq!(
        renameat2(&m.file("a"), &m.file("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(
        (fs::read(m.file("a")).unwrap(), fs::read(m.file("b")).unwrap()),
        (b"AAAA".to_vec(), b"BB".to_vec())
    );
    assert_eq!(renameat2(&m.file("a"), &m.file("b"), libc::RENAME_EXCHANGE), 0);
    assert_eq!(
        (fs::read(m.file("a")).unwrap(), fs::read(m.file("b")).unwrap()),
        (b"BB".to_vec(), b"AAAA".to_vec())
    );
    assert_eq!(renameat2(&m.file("a"), &m.file("c"), libc::RENAME_NOREPLACE), 0);

    // Over an existing file, with the replaced one still open.
    let held = File::open(m.file("b")).unwrap();
    fs::rename(m.file("c"), m.file("b")).unwrap();
    assert_eq!(fs::read(m.file("b")).unwrap(), b"BB");
    assert!(!m.file("c").exists() && !m.file("a").exists());
    assert_eq!(
        pread(&held, 0, 10).unwrap(),
        b"AAAA",
        "the replaced file stays readable while open"
    );
    drop(held);

    // A folder with files in it, renamed and moved down a level.
    fs::create_dir_all(m.file("dir/sub")).unwrap();
    fs::write(m.file("dir/sub/x"), b"x").unwrap();
    fs::create_dir(m.file("other")).unwrap();
    fs::rename(m.file("dir"), m.file("other/moved")).unwrap();
    assert_eq!(fs::read(m.file("other/moved/sub/x")).unwrap(), b"x");
    assert!(!m.file("dir").exists());
    // Two folders swap; a file and a folder do not.
    fs::create_dir(m.file("swap")).unwrap();
    fs::write(m.file("swap/y"), b"y").unwrap();
    assert_eq!(
        renameat2(&m.file("swap"), &m.file("other/moved"), libc::RENAME_EXCHANGE),
        0
    );
    assert_eq!(fs::read(m.file("swap/sub/x")).unwrap(), b"x");
    assert_eq!(fs::read(m.file("other/moved/y")).unwrap(), b"y");
    assert_eq!(
        renameat2(&m.file("swap"), &m.file("other/moved"), libc::RENAME_EXCHANGE),
        0
    );
    assert_eq!(
        renameat2(&m.file("b"), &m.file("swap"), libc::RENAME_EXCHANGE),
        libc::EINVAL
    );
    fs::remove_dir_all(m.file("swap")).unwrap();

    // A file renamed while open for writing: the writes land under the new name.
    let mut f = File::create(m.file("growing")).unwrap();
    f.write_all(b"first ").unwrap();
    fs::rename(m.file("growing"), m.file("other/grown")).unwrap();
    f.write_all(b"second").unwrap();
    drop(f);
    assert_eq!(fs::read(m.file("other/grown")).unwrap(), b"first second");

    // Out of the mount: EXDEV, which mv turns into copy + unlink.
    let outside = s.path("outside");
    let err = fs::rename(m.file("b"), &outside).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    run_ok("mv", &[m.file("b").as_os_str(), outside.as_os_str()]);
    assert_eq!(fs::read(&outside).unwrap(), b"BB");
    assert!(!m.file("b").exists());
    m.unmount();

    assert_eq!(s.stored(), ["other/grown", "other/moved/sub/x"]);
    assert_eq!(s.unpack("other/grown"), b"first second");
}

/// unlink of an open file, mkdir/rmdir, ENOTEMPTY, truncate by path, the reserved `.qeltrix`
/// names, name lengths, and what is refused: hard links, symlinks, FIFOs and chown to another
/// owner (EPERM), extended attributes (ENOTSUP).
#[test]
fn unlink_folders_reserved_names_and_refused_calls() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };

    // Unlinked while open: still readable and writable through the descriptor, gone for good.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.file("doomed"))
        .unwrap();
    f.write_all(b"before").unwrap();
    fs::remove_file(m.file("doomed")).unwrap();
    f.write_all(b" after").unwrap();
    assert_eq!(pread(&f, 0, 100).unwrap(), b"before after");
    assert!(!m.file("doomed").exists());
    drop(f);
    assert!(!m.file("doomed").exists());
    assert_eq!(dir_names(&m.mnt), Vec::<String>::new());

    fs::create_dir_all(m.file("p/q/r")).unwrap();
    fs::write(m.file("p/q/file"), b"1").unwrap();
    let err = fs::remove_dir(m.file("p/q")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY), "{err}");
    fs::remove_dir(m.file("p/q/r")).unwrap();
    assert_eq!(dir_names(&m.file("p/q")), ["file"]);
    let err = fs::remove_dir(m.file("p/q/file")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR), "{err}");
    fs::create_dir(m.file("gone")).unwrap();
    fs::remove_dir(m.file("gone")).unwrap();
    let err = fs::create_dir(m.file("p")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");

    // truncate(2) by path, larger then smaller.
    fs::write(m.file("t"), b"0123456789").unwrap();
    let c = cstr(&m.file("t"));
    assert_eq!(errno_of(unsafe { libc::truncate(c.as_ptr(), 20) }), 0);
    assert_eq!(fs::read(m.file("t")).unwrap(), b"0123456789\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(errno_of(unsafe { libc::truncate(c.as_ptr(), 4) }), 0);
    assert_eq!(fs::read(m.file("t")).unwrap(), b"0123");

    // The vault's own names: its top folder `.qeltrix`, and `.qeltrix-*` anywhere.
    let reserved = |what: &str, r: io::Result<()>| {
        let err = r.expect_err(what);
        assert!(
            matches!(err.raw_os_error(), Some(libc::EINVAL | libc::EPERM)),
            "{what}: {err}"
        );
    };
    for name in [".qeltrix", ".qeltrix-tmp", "p/.qeltrix-x.part"] {
        reserved(&format!("create {name}"), fs::write(m.file(name), b"x"));
        reserved(&format!("mkdir {name}"), fs::create_dir(m.file(name)));
        reserved(
            &format!("rename to {name}"),
            fs::rename(m.file("t"), m.file(name)),
        );
    }
    assert_eq!(fs::read(m.file("t")).unwrap(), b"0123");
    // Other dot names are ordinary.
    fs::write(m.file(".env"), b"dot").unwrap();
    assert_eq!(fs::read(m.file(".env")).unwrap(), b"dot");
    // The longest name whose container name (NAME.qltx) fits the backing file system's 255 bytes.
    let longest = "n".repeat(255 - SUFFIX.len());
    fs::write(m.file(&longest), b"long").unwrap();
    let err = fs::write(m.file(&format!("{longest}n")), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
    fs::remove_file(m.file(&longest)).unwrap();
    let err = fs::write(m.file("back\\slash"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");

    let err = fs::hard_link(m.file("t"), m.file("t2")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "link: {err}");
    let err = std::os::unix::fs::symlink("t", m.file("sym")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "symlink: {err}");
    let (path, name) = (cstr(&m.file("t")), CString::new("user.test").unwrap());
    let ret = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(errno_of(ret), libc::ENOTSUP, "setxattr");
    let fifo = cstr(&m.file("fifo"));
    assert_eq!(
        errno_of(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }),
        libc::EPERM,
        "mkfifo"
    );
    // chown to the owner it has is a no-op (cp -a and tar do it as root); to another, EPERM.
    let md = fs::metadata(m.file("t")).unwrap();
    std::os::unix::fs::chown(m.file("t"), Some(md.uid()), Some(md.gid())).unwrap();
    let err = std::os::unix::fs::chown(m.file("t"), Some(md.uid() + 4242), None).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "chown: {err}");
    m.unmount();

    assert_eq!(s.stored(), [".env", "p/q/file", "t"]);
    s.verify_all();
}

/// chmod and utimens on files are kept in the container's record: stat shows them after a
/// remount, read-only too. statfs shows the backing file system's free space.
#[test]
fn modes_and_times_survive_a_remount_and_statfs_shows_free_space() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let when = UNIX_EPOCH + Duration::new(1_234_567_890, 123_456_789);
    for (name, mode) in [("private", 0o600), ("script", 0o755), ("readonly", 0o444)] {
        fs::write(m.file(name), name.as_bytes()).unwrap();
        let f = File::options().write(true).open(m.file(name)).unwrap();
        f.set_modified(when).unwrap();
        drop(f);
        fs::set_permissions(m.file(name), fs::Permissions::from_mode(mode)).unwrap();
        let md = fs::metadata(m.file(name)).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.modified().unwrap()),
            (mode, when),
            "{name}"
        );
    }
    // Times set by name on a closed file (as tar and `touch -d` do).
    fs::write(m.file("touched"), b"touched").unwrap();
    let path = cstr(&m.file("touched"));
    let times = [
        libc::timespec {
            tv_sec: 1_234_567_890,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_234_567_890,
            tv_nsec: 123_456_789,
        },
    ];
    let ret = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(errno_of(ret), 0, "utimensat");
    assert_eq!(fs::metadata(m.file("touched")).unwrap().modified().unwrap(), when);
    // A folder's chmod and utimens are accepted (not stored).
    fs::create_dir(m.file("dir")).unwrap();
    fs::set_permissions(m.file("dir"), fs::Permissions::from_mode(0o700)).unwrap();
    File::open(m.file("dir")).unwrap().set_modified(when).unwrap();

    let statvfs = |p: &Path| {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(errno_of(unsafe { libc::statvfs(cstr(p).as_ptr(), &mut st) }), 0);
        (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, st.f_namemax)
    };
    let ((free, total, namemax), (backing_free, backing_total, backing_namemax)) =
        (statvfs(&m.mnt), statvfs(&s.vault()));
    assert_eq!(
        namemax,
        backing_namemax - SUFFIX.len() as u64,
        "room for the suffix"
    );
    assert!(free > 0 && total > 0, "the mount shows room: {free} of {total}");
    assert!(
        free.abs_diff(backing_free) < backing_total / 20,
        "free space {free} is the backing file system's {backing_free}"
    );
    m.unmount();

    let remounts: [fn(&Space) -> Option<Mount>; 2] = [Space::mount_rw, Space::mount_ro];
    for remount in remounts {
        let Some(m) = remount(&s) else { return };
        for (name, mode) in [("private", 0o600), ("script", 0o755), ("readonly", 0o444)] {
            let md = fs::metadata(m.file(name)).unwrap();
            assert_eq!(
                (md.mode() & 0o7777, md.modified().unwrap()),
                (mode, when),
                "{name}"
            );
            assert_eq!(fs::read(m.file(name)).unwrap(), name.as_bytes());
        }
        let md = fs::metadata(m.file("touched")).unwrap();
        assert_eq!(md.modified().unwrap(), when, "touched: utimensat by name is kept");
        m.unmount();
    }
}

/// More files than the vault layer keeps open (its registry holds the 1,024 most recently used
/// containers): after a remount, stat shows every file's recorded mode and mtime before the file
/// is opened, as `ls -l`, `rsync` and `make` need (found by the write benchmark: after a remount
/// of 5,000 untarred files, `tar -d` saw every mtime differ).
#[test]
fn a_remount_of_1100_files_shows_their_recorded_times_before_any_open() {
    const FILES: u64 = 1100;
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let time_of = |i: u64| UNIX_EPOCH + Duration::new(1_500_000_000 + i * 60, 7);
    for i in 0..FILES {
        let path = m.file(&format!("d{}/f{i:04}", i % 10));
        if i < 10 {
            fs::create_dir(path.parent().unwrap()).unwrap();
        }
        let f = File::create(&path).unwrap();
        (&f).write_all(&i.to_le_bytes()).unwrap();
        f.set_permissions(fs::Permissions::from_mode(0o600)).unwrap();
        f.set_modified(time_of(i)).unwrap();
    }
    m.unmount();

    let remounts: [fn(&Space) -> Option<Mount>; 2] = [Space::mount_ro, Space::mount_rw];
    for remount in remounts {
        let Some(m) = remount(&s) else { return };
        let wrong: Vec<String> = (0..FILES)
            .filter_map(|i| {
                let name = format!("d{}/f{i:04}", i % 10);
                let md = fs::metadata(m.file(&name)).unwrap();
                let shown = (md.modified().unwrap(), md.mode() & 0o7777);
                (shown != (time_of(i), 0o600)).then(|| format!("{name}: {shown:?}"))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {FILES} files show another mtime or mode than they were given, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        );
        m.unmount();
    }
}

/// A tmpfs mounted on `path` (root only), detached on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        run_ok(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                format!("size={size}").as_ref(),
                "tmpfs".as_ref(),
                path.as_os_str(),
            ],
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        detach(&self.0);
    }
}

/// A vault whose disk fills up: the fsync (or write) that cannot be stored fails with ENOSPC,
/// the stored version stays a complete earlier one, and once the file is small again the next
/// fsync stores it.
#[test]
fn a_full_disk_fails_the_sync_and_keeps_the_stored_version() {
    if !qeltrix::sys::process::is_root() {
        eprintln!("skipping: a small file system for the vault (tmpfs) needs root");
        return;
    }
    let s = Space::new();
    if !fuse_available() {
        return;
    }
    let _tmpfs = Tmpfs::mount(&s.vault(), "4m");
    let Some(m) = s.mount_rw() else { return };
    let original = text_bytes(1000, 1);
    fs::write(m.file("f"), &original).unwrap();

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.file("f"))
        .unwrap();
    let data = random_bytes(6 * MIB, 2);
    let mut model = original.clone();
    // The call that fails: a write (the edits no longer fit) or the fsync (the new version does
    // not fit).
    let (mut failed, mut chunks_written) = (None, 0);
    for (i, chunk) in data.chunks(64 * KIB).enumerate() {
        let at = i * 64 * KIB;
        if let Err(e) = f.write_all_at(chunk, at as u64) {
            failed = Some((format!("write at {at}"), e));
            break;
        }
        model.resize(model.len().max(at + chunk.len()), 0);
        model[at..at + chunk.len()].copy_from_slice(chunk);
        chunks_written += 1;
    }
    let (call, err) = failed.unwrap_or_else(|| ("fsync".into(), f.sync_all().unwrap_err()));
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{call}: {err}");
    // Any close of the file commits it as it is then, and the other tests' child processes
    // close inherited copies of this descriptor between fork and exec: the stored version is the
    // original or the file as it was after some of the writes, complete, never more than fitted.
    let stored = s.unpack("f");
    let state_after = |chunks: usize| {
        let mut state = original.clone();
        let written = &data[..(chunks * 64 * KIB).min(data.len())];
        state.resize(state.len().max(written.len()), 0);
        state[..written.len()].copy_from_slice(written);
        state
    };
    assert!(
        (0..=chunks_written).any(|k| stored == state_after(k)),
        "after {call} failed, the stored version ({} bytes) is neither the original nor the file \
         after some of the writes; log:\n{}",
        stored.len(),
        m.log_text()
    );

    f.set_len(2000).unwrap();
    f.sync_all().expect("the next fsync, with room again");
    drop(f);
    model.truncate(2000);
    assert_bytes(&fs::read(m.file("f")).unwrap(), &model, "f after the next fsync");
    assert_bytes(&s.unpack("f"), &model, "f stored by the next fsync");
    m.unmount();
    s.verify_all();
}

/// Two read-write mounts of one vault would overwrite each other's files: the second is
/// refused, and the first keeps working.
#[test]
fn a_second_read_write_mount_of_the_vault_is_refused() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    fs::write(m.file("first"), b"1").unwrap();
    let mnt2 = s.path("mnt2").canonicalize().unwrap();
    let out = qeltrix()
        .arg("mount")
        .arg(s.vault())
        .arg(&mnt2)
        .arg("--read-write")
        .arg("--key-file")
        .arg(s.key())
        .arg("--daemon")
        .timeout(DEADLINE)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    if out.status.success() {
        let _cleanup = DaemonMount {
            mnt: mnt2,
            pid: daemon_pid(&stderr),
        };
        panic!("a second read-write mount of the vault was allowed: {stderr}");
    }
    assert!(mount_type(&mnt2).is_none());
    let msg = stderr.to_lowercase();
    assert!(msg.contains("another") || msg.contains("lock"), "{stderr}");
    fs::write(m.file("second"), b"2").unwrap();
    assert_eq!(fs::read(m.file("first")).unwrap(), b"1");
    m.unmount();
    assert_eq!(s.stored(), ["first", "second"]);
}

// ---------------------------------------------------------------------------------------------
// Crash safety: kill -9 of the mount at random points of real workloads.

/// What the mount must hold for one file: its bytes, or its absence.
type Files = BTreeMap<String, Option<Vec<u8>>>;

/// The files under `root`, with their bytes.
fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    walk_files(root)
        .into_iter()
        .map(|rel| {
            let bytes = fs::read(root.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// Under `dir` of the mount, each file of `allowed` is one of its allowed states (`None`:
/// absent) and nothing else is there. Returns what is there now.
fn check_each_file(what: &str, dir: &Path, allowed: &BTreeMap<String, Vec<Option<Vec<u8>>>>) -> Files {
    let found = read_tree(dir);
    for rel in found.keys() {
        assert!(allowed.contains_key(rel), "{what}: {rel} should not exist");
    }
    allowed
        .iter()
        .map(|(rel, states)| {
            let got = found.get(rel).cloned();
            assert!(
                states.contains(&got),
                "{what}: {rel} is {:?} bytes, none of its allowed states ({:?})",
                got.as_ref().map(Vec::len),
                states
                    .iter()
                    .map(|s| s.as_ref().map(Vec::len))
                    .collect::<Vec<_>>()
            );
            (rel.clone(), got)
        })
        .collect()
}

/// A small tree for the crash rounds: the same names for every `seed`, other bytes and sizes.
fn make_crash_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..40 {
        let rel = format!("d{}/f{i:02}", i % 4);
        let len = match i % 8 {
            0 => 0,
            1 => MIB + rng.below(MIB as u64) as usize,
            _ => rng.below(100 * KIB as u64) as usize,
        };
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(len, seed * 1000 + i)).unwrap();
    }
}

/// The sqlite writer of the crash rounds: inserts `count` rows after those there, one
/// transaction each, and prints each row's id once its COMMIT has returned.
const SQLITE_WRITER: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
start = db.execute("SELECT count(*) FROM t").fetchone()[0]
for i in range(start + 1, start + int(sys.argv[2]) + 1):
    db.execute("BEGIN")
    db.execute("INSERT INTO t(id, v) VALUES (?, ?)", (i, "row %d %s" % (i, "x" * (i % 500))))
    db.execute("COMMIT")
    print(i, flush=True)
"#;

/// The rows the crash rounds' sqlite writer made, checked: the database is intact and holds
/// rows 1..=N, each with its text. Returns N.
fn sqlite_rows(db: &Path) -> u64 {
    let out = sqlite(
        db,
        "PRAGMA integrity_check; SELECT count(*), coalesce(max(id), 0), coalesce(sum(length(v)), 0) FROM t;",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ok"), "{out}");
    let nums: Vec<u64> = lines
        .next()
        .unwrap()
        .split('|')
        .map(|n| n.parse().unwrap())
        .collect();
    let n = nums[0];
    assert_eq!(nums[1], n, "ids are 1..=count");
    let want: u64 = (1..=n)
        .map(|i| format!("row {i} {}", "x".repeat((i % 500) as usize)).len() as u64)
        .sum();
    assert_eq!(nums[2], want, "every row's text");
    n
}

/// The overwrite writer of the crash rounds: random pwrites and truncates of `file`, an fsync
/// every few; each fsynced state is pushed to `synced` once fsync has returned.
struct Overwriter {
    file: File,
    model: Vec<u8>,
    rng: Rng,
    synced: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Overwriter {
    /// One operation; an error once the mount is gone.
    fn step(&mut self, i: u64) -> io::Result<()> {
        if i % 7 == 6 {
            self.file.sync_all()?;
            self.synced.lock().unwrap().push(self.model.clone());
        } else if i % 13 == 12 {
            // Up to 2 MiB: past 1 MiB the mount edits the file in place (format 4).
            let len = self.rng.below(2 * MIB as u64) as usize;
            self.file.set_len(len as u64)?;
            self.model.resize(len, 0);
        } else {
            let at = self.rng.below(2 * MIB as u64) as usize;
            let len = 1 + self.rng.below(16 * KIB as u64) as usize;
            let bytes = random_bytes(len, self.rng.next_u64());
            self.file.write_all_at(&bytes, at as u64)?;
            if self.model.len() < at + len {
                self.model.resize(at + len, 0);
            }
            self.model[at..at + len].copy_from_slice(&bytes);
        }
        Ok(())
    }
}

/// The bytes `pid` has passed to write(2) and its kin so far (`wchar` of /proc/PID/io).
fn bytes_written(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:")?.trim().parse().ok())
}

/// A random point of a copy: waits until `child` has written a random part of `total` bytes (or
/// has ended). Returns whether it still runs: the kill then lands mid-workload.
fn random_point(rng: &mut Rng, total: u64, child: &mut Child) -> bool {
    let target = rng.below(total);
    wait_until("the workload to reach its kill point", || {
        child.try_wait().unwrap().is_some() || bytes_written(child.id()).is_none_or(|n| n >= target)
    });
    child.try_wait().unwrap().is_none()
}

/// Real workloads (cp -a over an earlier copy, tar x, sqlite transactions, random overwrites with
/// fsync) killed with `kill -9` at random points, 60 times: cp and tar once they have written a
/// random part of their bytes, sqlite after a random number of acknowledged commits, the
/// overwriter after a random number of calls (paused) or fsyncs (running). After each kill the
/// dead mount is detached and the vault remounted, and:
/// - every container in the vault opens and authenticates (`qeltrix verify`);
/// - cp -a over an earlier copy: each file is its earlier bytes or the new ones, never a mix;
/// - tar x into a fresh folder: each file is absent or complete;
/// - sqlite: intact, and holds at least every row whose COMMIT had returned;
/// - overwrites: the file is exactly its last fsynced state (its earlier bytes if none) when
///   the writer was paused at the kill; when the kill came mid-write, one of the states fsynced
///   from the last acknowledged fsync on;
/// - what earlier rounds left is untouched.
#[test]
#[ignore = "60 kill -9 rounds, over a minute; scripts/test.sh runs it"]
fn kill_9_at_random_points_keeps_every_file_whole() {
    const ROUNDS: u64 = 60;
    let s = Space::new();
    if !fuse_available() {
        return;
    }
    let mut rng = Rng::new(0x9e11);
    let trees = [s.path("treeA"), s.path("treeB")];
    let tarballs = [s.path("A.tar"), s.path("B.tar")];
    let mut sources = Vec::new();
    for (i, (tree, tarball)) in trees.iter().zip(&tarballs).enumerate() {
        make_crash_tree(tree, i as u64 + 1);
        run_ok(
            "tar",
            &[
                "-C".as_ref(),
                tree.as_os_str(),
                "-cf".as_ref(),
                tarball.as_os_str(),
                ".".as_ref(),
            ],
        );
        sources.push(read_tree(tree));
    }
    let writer = s.path("writer.py");
    fs::write(&writer, SQLITE_WRITER).unwrap();

    let mut cp_state: Files = sources[0].keys().map(|k| (k.clone(), None)).collect();
    let mut tar_states: Vec<(String, Files)> = Vec::new();
    let mut ow_state: Option<Vec<u8>> = None;
    let mut rows = 0u64;
    // Kills that landed while the workload was running (the others: paused, or just done).
    let mut mid = 0u64;
    let mut patched_rounds = 0u64;
    let mut m = s.mount_rw().unwrap();
    fs::create_dir_all(m.file("cp")).unwrap();
    sqlite(
        &m.file("app.db"),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
    );
    for round in 0..ROUNDS {
        let workload = round % 4;
        let source = &sources[(round / 4 % 2) as usize];
        let total: u64 = source.values().map(|b| b.len() as u64).sum();
        let tar_dir = format!("tar{round}");
        let mut ow_allowed: Vec<Option<Vec<u8>>> = vec![ow_state.clone()];
        let mut rows_acked = rows;
        match workload {
            0 => {
                let mut cp = Reaped(
                    Command::new("cp")
                        .arg("-a")
                        .arg(format!("{}/.", trees[(round / 4 % 2) as usize].display()))
                        .arg(m.file("cp"))
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                );
                mid += random_point(&mut rng, total, &mut cp.0) as u64;
                m.kill9();
            }
            1 => {
                fs::create_dir(m.file(&tar_dir)).unwrap();
                let mut tar = Reaped(
                    Command::new("tar")
                        .arg("-C")
                        .arg(m.file(&tar_dir))
                        .arg("-xf")
                        .arg(&tarballs[(round / 4 % 2) as usize])
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                );
                mid += random_point(&mut rng, total, &mut tar.0) as u64;
                m.kill9();
            }
            2 => {
                let mut py = Reaped(
                    Command::new("python3")
                        .arg(&writer)
                        .arg(m.file("app.db"))
                        .arg("100000")
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("python3 is installed (scripts/test.sh installs it)"),
                );
                let out = Captured::start(py.0.stdout.take().unwrap());
                let acked = |out: &Captured| {
                    out.lines()
                        .last()
                        .map_or(rows, |l| l.trim().parse::<u64>().unwrap())
                };
                // Once a random number of further commits have been acknowledged: the writer
                // is inside the next transaction.
                let target = rows + 1 + rng.below(30);
                wait_for_output("commits", &mut py.0, &out, |_| {
                    (acked(&out) >= target).then_some(())
                });
                rows_acked = acked(&out);
                mid += py.0.try_wait().unwrap().is_none() as u64;
                m.kill9();
            }
            _ => {
                let mut w = Overwriter {
                    file: open_rw(&m.file("ow.bin")),
                    model: ow_state.clone().unwrap_or_default(),
                    rng: Rng::new(round),
                    synced: Arc::new(Mutex::new(Vec::new())),
                };
                if round % 8 == 3 {
                    // The writer paused between calls: exactly its last fsynced state.
                    for i in 0..rng.below(60) {
                        w.step(i).unwrap();
                    }
                    m.kill9();
                    let synced = w.synced.lock().unwrap();
                    if let Some(last) = synced.last() {
                        ow_allowed = vec![Some(last.clone())];
                    }
                } else {
                    // The kill lands while calls are in flight.
                    let synced = w.synced.clone();
                    let writer = std::thread::spawn(move || {
                        for i in 0..1_000_000 {
                            if w.step(i).is_err() {
                                break;
                            }
                        }
                    });
                    let target = rng.below(6) as usize;
                    let start = Instant::now();
                    while synced.lock().unwrap().len() < target {
                        assert!(start.elapsed() < DEADLINE, "the overwriter stalled");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let acked = synced.lock().unwrap().len();
                    mid += !writer.is_finished() as u64;
                    m.kill9();
                    writer.join().unwrap();
                    let synced = synced.lock().unwrap();
                    if acked > 0 {
                        ow_allowed.clear();
                    }
                    ow_allowed.extend(synced[acked.saturating_sub(1)..].iter().cloned().map(Some));
                }
            }
        }

        s.verify_all();
        m = s.mount_rw().unwrap_or_else(|| panic!("round {round}: remount"));
        let what = |w: &str| format!("round {round} ({w})");
        // cp -a: earlier bytes or new ones.
        let allowed = cp_state
            .iter()
            .map(|(rel, before)| {
                let mut states = vec![before.clone()];
                if workload == 0 {
                    states.push(Some(source[rel].clone()));
                }
                (rel.clone(), states)
            })
            .collect();
        cp_state = check_each_file(&what("cp -a"), &m.file("cp"), &allowed);
        // tar x: absent or complete; earlier rounds' as they were left.
        if workload == 1 {
            let allowed = source
                .iter()
                .map(|(rel, bytes)| (rel.clone(), vec![None, Some(bytes.clone())]))
                .collect();
            let found = check_each_file(&what("tar x"), &m.file(&tar_dir), &allowed);
            tar_states.push((tar_dir, found));
        }
        for (dir, state) in &tar_states {
            let allowed = state
                .iter()
                .map(|(rel, s)| (rel.clone(), vec![s.clone()]))
                .collect();
            check_each_file(&what(&format!("{dir} left as it was")), &m.file(dir), &allowed);
        }
        // sqlite: intact, nothing acknowledged lost.
        let n = sqlite_rows(&m.file("app.db"));
        assert!(
            n >= rows_acked,
            "{}: {n} rows, {rows_acked} acknowledged",
            what("sqlite")
        );
        rows = n;
        // Overwrites.
        let got = read_if_there(&m.file("ow.bin"));
        assert!(
            ow_allowed.contains(&got),
            "{}: ow.bin is {:?} bytes, not one of the allowed states {:?}",
            what("overwrites"),
            got.as_ref().map(Vec::len),
            ow_allowed
                .iter()
                .map(|s| s.as_ref().map(Vec::len))
                .collect::<Vec<_>>()
        );
        ow_state = got;
        // How the overwriter's file was last committed: a format-4 chain of patches, or not.
        if ow_state.is_some() {
            let json = info_json(&s, "ow.bin");
            let patches = json.split("\"patches\":").nth(1).and_then(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            });
            patched_rounds += u64::from(patches.is_some_and(|n| n > 0));
        }
    }
    m.unmount();
    s.verify_all();
    eprintln!(
        "{ROUNDS} kills, {mid} of them while the workload ran; {patched_rounds} found the overwritten \
         file with format-4 patches"
    );
    assert!(
        patched_rounds > 0,
        "no round found the overwriter's file committed as patches: the crash rounds did not cover them"
    );
}

/// Reads `path`, `None` if it does not exist.
fn read_if_there(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// `qeltrix info --json` of a stored container, whitespace removed.
fn info_json(s: &Space, rel: &str) -> String {
    let out = qeltrix()
        .arg("info")
        .arg("--json")
        .arg(s.vault().join(format!("{rel}{SUFFIX}")))
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert!(out.status.success(), "qeltrix info {rel}: {}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).split_whitespace().collect()
}

/// `qeltrix compact` of a stored container: its exit status and output.
fn compact(s: &Space, rel: &str) -> Output {
    qeltrix()
        .arg("compact")
        .arg("--key-file")
        .arg(s.key())
        .arg(s.vault().join(format!("{rel}{SUFFIX}")))
        .timeout(DEADLINE)
        .output()
        .unwrap()
}

#[test]
fn a_large_file_is_edited_in_place_then_compacted_after_the_unmount() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let mut model = random_bytes(3 * MIB / 2, 77);
    fs::write(m.file("big.bin"), &model).unwrap();
    assert!(
        info_json(&s, "big.bin").contains("\"format_version\":4"),
        "a large file is format 4"
    );
    let size_after_copy = fs::metadata(s.vault().join("big.bin.qltx")).unwrap().len();

    // Small edits, each fsynced: each commit appends the changed 4 KiB pages as a patch.
    let f = open_rw(&m.file("big.bin"));
    for (i, at) in [10u64, 700_000, 1_500_000].into_iter().enumerate() {
        let bytes = random_bytes(3000, i as u64);
        f.write_all_at(&bytes, at).unwrap();
        let end = at as usize + bytes.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[at as usize..end].copy_from_slice(&bytes);
        f.sync_all().unwrap();
    }
    drop(f);
    let json = info_json(&s, "big.bin");
    assert!(
        json.contains("\"generation\":4") && json.contains("\"patches\":3"),
        "three patch commits after the first: {json}"
    );
    let grown = fs::metadata(s.vault().join("big.bin.qltx")).unwrap().len() - size_after_copy;
    assert!(
        grown < 40_000,
        "the edits appended {grown} bytes, not whole blocks"
    );
    assert!(
        fs::read(m.file("big.bin")).unwrap() == model,
        "read back in the mount"
    );

    // The mount is the vault's writer: compact waits for it to stop.
    let out = compact(&s, "big.bin");
    assert!(!out.status.success(), "compact while mounted read-write");
    assert!(
        stderr_of(&out).contains("mounted read-write"),
        "{}",
        stderr_of(&out)
    );
    m.unmount();

    s.verify_all();
    let out = compact(&s, "big.bin");
    assert!(out.status.success(), "qeltrix compact: {}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("compacted"));
    let json = info_json(&s, "big.bin");
    assert!(json.contains("\"format_version\":2"), "{json}");
    assert!(
        s.unpack("big.bin") == model,
        "the compacted file holds the same plaintext"
    );
    let out = compact(&s, "big.bin");
    assert!(String::from_utf8_lossy(&out.stdout).contains("already compact"));
    s.verify_all();
}

/// Superseded versions of a file being edited are kept while it is open (an `fsync` never waits
/// for a copy of the file), up to a bound; its last close compacts it, with the same plaintext.
#[test]
fn a_file_edited_past_its_size_is_compacted_at_its_last_close() {
    let s = Space::new();
    let Some(m) = s.mount_rw() else { return };
    let mut model = random_bytes(3 * MIB / 2, 78);
    fs::write(m.file("hot.bin"), &model).unwrap();
    let container = s.vault().join("hot.bin.qltx");
    let size = fs::metadata(&container).unwrap().len();
    let f = open_rw(&m.file("hot.bin"));
    for i in 0..8u64 {
        // 600 KB rewritten per fsync: 8 rounds supersede about 3 times the file.
        let bytes = random_bytes(600_000, 100 + i);
        let at = (i * 100_000) as usize;
        f.write_all_at(&bytes, at as u64).unwrap();
        model[at..at + bytes.len()].copy_from_slice(&bytes);
        f.sync_all().unwrap();
    }
    let open_len = fs::metadata(&container).unwrap().len();
    assert!(
        open_len > 2 * size && open_len < 6 * size,
        "{open_len} bytes while open, for a file of {size}"
    );
    drop(f);
    // The release (after close returns) compacts the file.
    wait_until("the last close to compact hot.bin", || {
        fs::metadata(&container).is_ok_and(|md| md.len() < size + 300_000)
    });
    assert!(
        fs::read(m.file("hot.bin")).unwrap() == model,
        "read back in the mount"
    );
    m.unmount();
    s.verify_all();
    assert!(s.unpack("hot.bin") == model, "unpacked after the unmount");
}
