//! `qeltrix mount` through real FUSE mounts: the binary is started as a user would start it, and
//! the mounted files are read with ordinary file APIs and compared byte for byte with the
//! originals. Every mount is undone by a guard, also when a test fails.
//!
//! Without `/dev/fuse` these tests skip with a message, except under CI (`CI=true`), where that
//! is a failure: CI installs fuse3.

mod common;
use assert_cmd::cargo::cargo_bin;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use qeltrix::crypto::KeyFileKey;
use qeltrix::format::BLOCK_HEAD_LEN;
use qeltrix::mount::mount_type;
use qeltrix::{CipherId, CompressMode, ContainerInfo, Key, PackOptions};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tempfile::TempDir;

/// A folder with a key file, a vault and a mount point.
struct Workspace {
    dir: TempDir,
    key: Key,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        fs::write(dir.path().join("key"), bytes).unwrap();
        fs::create_dir(dir.path().join("vault")).unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        Workspace {
            dir,
            key: Key::KeyFile(KeyFileKey::from_bytes(bytes)),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn vault(&self) -> PathBuf {
        self.path("vault")
    }
    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }
    /// Packs `data` into `vault/REL.qltx` (via a temporary name, as `qeltrix pack` does).
    fn pack(&self, rel: &str, data: &[u8], opts: &PackOptions) -> PathBuf {
        self.pack_with(rel, data, opts, &self.key)
    }
    fn pack_with(&self, rel: &str, data: &[u8], opts: &PackOptions, key: &Key) -> PathBuf {
        let dest = self.vault().join(format!("{rel}.qltx"));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let plain = self.path("plain.tmp");
        fs::write(&plain, data).unwrap();
        qeltrix::pack(&plain, &dest, &recipients(std::slice::from_ref(key)), opts, true).unwrap();
        dest
    }
    fn mount(&self, extra: &[&str]) -> Option<MountGuard> {
        MountGuard::start(&self.vault(), &self.mnt(), &self.path("key"), extra)
    }
    /// Mounts with rescans an hour apart: any change that shows up came through inotify.
    fn mount_watched(&self) -> Option<MountGuard> {
        self.mount(&["--rescan-interval", "3600", "-v"])
    }
}

/// A running `qeltrix mount` in the foreground. Dropping it sends SIGTERM (the user's way to
/// stop it) and, should that not end the mount, detaches the mount and kills the process.
struct MountGuard {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
}

impl MountGuard {
    fn start(vault: &Path, mnt: &Path, key: &Path, extra: &[&str]) -> Option<Self> {
        let mut command = qeltrix_process();
        command
            .arg("mount")
            .arg(vault)
            .arg(mnt)
            .arg("--key-file")
            .arg(key)
            .args(extra);
        Self::spawn(command, mnt)
    }

    /// Starts `command` (a `qeltrix mount` in the foreground on `mnt`) and waits for the mount.
    fn spawn(mut command: Command, mnt: &Path) -> Option<Self> {
        if !fuse_available() {
            return None;
        }
        let log = mnt.with_extension("log");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut guard = MountGuard {
            child,
            mnt: mnt.canonicalize().unwrap(),
            log,
        };
        let mnt = guard.mnt.clone();
        wait_for_output("the mount to appear", &mut guard.child, &guard.log, |_| {
            mount_type(&mnt).map(|_| ())
        });
        Some(guard)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the process to end; returns its exit status.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.wait_exit()
    }

    /// Waits (up to the deadline) for the process to end by itself.
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        try_wait_exit(&mut self.child)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() && self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mount_type(&self.mnt).is_some() {
            let c = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn nested_vault_reads_back_byte_for_byte() {
    let ws = Workspace::new();
    let files: Vec<(&str, Vec<u8>, PackOptions)> = vec![
        (
            "empty.bin",
            vec![],
            opts(CipherId::Aes256Gcm, 1024 * KIB, CompressMode::Auto),
        ),
        (
            "small.txt",
            b"hello, mount\n".to_vec(),
            opts(CipherId::ChaCha20Poly1305, 4 * KIB, CompressMode::Always),
        ),
        (
            "a/multi.bin",
            random_bytes(5 * 16384 + 123, 1),
            opts(CipherId::Aes256Gcm, 16 * KIB, CompressMode::Never),
        ),
        (
            "a/b/text.log",
            text_bytes(3 * 65536 + 7, 1),
            opts(CipherId::ChaCha20Poly1305, 64 * KIB, CompressMode::Always),
        ),
        (
            "a/b/c/exact.bin",
            random_bytes(2 * 4096, 2),
            opts(CipherId::ChaCha20Poly1305, 4 * KIB, CompressMode::Auto),
        ),
        (
            "other/one block.bin",
            random_bytes(4000, 3),
            opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never),
        ),
    ];
    for (rel, data, o) in &files {
        ws.pack(rel, data, o);
    }
    fs::write(ws.vault().join("notes.txt"), b"not a container").unwrap();
    fs::write(ws.vault().join("a/broken.qltx"), b"not a container either").unwrap();
    fs::create_dir(ws.vault().join("emptydir")).unwrap();
    let Some(m) = ws.mount(&[]) else { return };

    for (rel, data, _) in &files {
        let got = fs::read(m.file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(
            got == *data,
            "{rel}: contents differ ({} vs {} bytes)",
            got.len(),
            data.len()
        );
        let meta = fs::metadata(m.file(rel)).unwrap();
        let container = fs::metadata(ws.vault().join(format!("{rel}.qltx"))).unwrap();
        assert_eq!(meta.len(), data.len() as u64, "{rel}: size");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "{rel}: mode");
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (container.mtime(), container.mtime_nsec())
        );
        assert_eq!(
            meta.blocks(),
            (data.len() as u64).div_ceil(512),
            "{rel}: blocks for du"
        );
    }
    let mut top: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["a", "empty.bin", "emptydir", "other", "small.txt"]);
    assert!(
        m.log_text().contains("broken.qltx"),
        "unreadable container logged: {}",
        m.log_text()
    );

    // Read-only, and says so.
    let err = fs::OpenOptions::new()
        .write(true)
        .open(m.file("small.txt"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = fs::write(m.file("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let c = std::ffi::CString::new(m.file("small.txt").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::access(c.as_ptr(), libc::R_OK) }, 0);
    assert_ne!(unsafe { libc::access(c.as_ptr(), libc::W_OK) }, 0);

    // statfs: the plaintext total, nothing free.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(m.mnt.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    let total: u64 = files.iter().map(|(_, d, _)| d.len() as u64).sum();
    assert_eq!(st.f_blocks * st.f_frsize, total.div_ceil(4096) * 4096);
    assert_eq!(st.f_bavail, 0);
}

#[test]
fn random_preads_match_the_original() {
    let ws = Workspace::new();
    let data = Arc::new(random_bytes(300_000, 7));
    ws.pack(
        "f.bin",
        &data,
        &opts(CipherId::Aes256Gcm, 16 * KIB, CompressMode::Auto),
    );
    let Some(m) = ws.mount(&[]) else { return };
    let file = File::open(m.file("f.bin")).unwrap();
    let mut runner = TestRunner::new(PropConfig::with_cases(96));
    runner
        .run(&(0u64..320_000, 0usize..70_000), |(offset, len)| {
            let mut buf = vec![0u8; len];
            let n = pread_full(&file, &mut buf, offset).unwrap();
            let start = (offset as usize).min(data.len());
            let want = &data[start..(start + len).min(data.len())];
            prop_assert_eq!(n, want.len());
            prop_assert!(&buf[..n] == want, "bytes differ at {}+{}", offset, len);
            Ok(())
        })
        .unwrap();
}

/// pread until `buf` is full or end of file.
fn pread_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[test]
fn eight_threads_read_random_ranges_of_same_and_different_files() {
    let ws = Workspace::new();
    let originals: Vec<Arc<Vec<u8>>> = (0..3)
        .map(|i| Arc::new(random_bytes(400_000 + i * 1000, 10 + i as u64)))
        .collect();
    for (i, data) in originals.iter().enumerate() {
        let cipher = if i % 2 == 0 {
            CipherId::Aes256Gcm
        } else {
            CipherId::ChaCha20Poly1305
        };
        ws.pack(
            &format!("f{i}"),
            data,
            &opts(cipher, 8 * KIB, CompressMode::Never),
        );
    }
    let Some(m) = ws.mount(&["--cache-size", "1"]) else {
        return;
    };
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let originals = originals.clone();
            let paths: Vec<PathBuf> = (0..3).map(|i| m.file(&format!("f{i}"))).collect();
            std::thread::spawn(move || {
                let files: Vec<File> = paths.iter().map(|p| File::open(p).unwrap()).collect();
                let mut x = t * 7919 + 1;
                for _ in 0..60 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Threads 0-3 share file 0; the others spread over all three.
                    let which = if t < 4 { 0 } else { (x >> 60) as usize % 3 };
                    let data = &originals[which];
                    let offset = (x >> 20) as usize % data.len();
                    let len = ((x >> 8) as usize % 50_000).min(data.len() - offset);
                    let mut buf = vec![0u8; len];
                    let n = pread_full(&files[which], &mut buf, offset as u64).unwrap();
                    assert_eq!(n, len);
                    assert!(
                        buf == data[offset..offset + len],
                        "thread {t}: f{which} {offset}+{len}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sequential_read_of_a_multi_block_file() {
    let ws = Workspace::new();
    let data = random_bytes(3 << 20, 42);
    ws.pack(
        "movie.bin",
        &data,
        &opts(CipherId::Aes256Gcm, 64 * KIB, CompressMode::Auto),
    );
    // A larger kernel readahead window too (root only; set before the mount serves requests).
    let Some(m) = ws.mount(&["--readahead", "8", "--kernel-readahead", "1024"]) else {
        return;
    };
    let mut f = File::open(m.file("movie.bin")).unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 100_000];
    loop {
        let n = f.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got == data, "sequential read differs ({} bytes)", got.len());
}

#[test]
fn containers_added_replaced_and_removed_while_mounted() {
    let ws = Workspace::new();
    let o = opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never);
    let old = random_bytes(50_000, 1);
    ws.pack("keep", b"stays", &o);
    ws.pack("replace", &old, &o);
    ws.pack("remove", b"goes away", &o);
    let Some(m) = ws.mount(&[]) else { return };
    assert_eq!(fs::read(m.file("replace")).unwrap(), old);
    let mut held = File::open(m.file("replace")).unwrap();

    // Added: a container, and a folder with one.
    let added = random_bytes(10_000, 2);
    ws.pack("new", &added, &o);
    ws.pack("sub/deeper", b"deep", &o);
    wait_until("new containers to appear", || {
        m.file("new").exists() && m.file("sub/deeper").exists()
    });
    assert_eq!(fs::read(m.file("new")).unwrap(), added);
    assert_eq!(fs::read(m.file("sub/deeper")).unwrap(), b"deep");

    // Replaced by one of the same size: the kernel's page cache and ours must both let go.
    let new = random_bytes(50_000, 3);
    ws.pack("replace", &new, &o);
    wait_until("the replacement to show", || {
        fs::read(m.file("replace")).unwrap() != old
    });
    assert_eq!(
        fs::read(m.file("replace")).unwrap(),
        new,
        "never a mix of old and new blocks"
    );
    // A file opened before the replacement keeps reading what it opened.
    let mut before = Vec::new();
    held.read_to_end(&mut before).unwrap();
    assert_eq!(before, old);

    // Removed.
    fs::remove_file(ws.vault().join("remove.qltx")).unwrap();
    wait_until("the removed container to vanish", || !m.file("remove").exists());
    assert_eq!(fs::read(m.file("keep")).unwrap(), b"stays");
}

#[test]
fn a_corrupt_block_fails_with_eio_and_the_rest_reads() {
    let ws = Workspace::new();
    let data = random_bytes(6 * 16384, 5);
    let path = ws.pack(
        "damaged.bin",
        &data,
        &opts(CipherId::Aes256Gcm, 16 * KIB, CompressMode::Never),
    );
    let info = ContainerInfo::read(&File::open(&path).unwrap()).unwrap();
    let entry = info.footer.entries[2];
    let mut bytes = fs::read(&path).unwrap();
    bytes[(entry.offset + BLOCK_HEAD_LEN as u64 + 100) as usize] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let Some(m) = ws.mount(&[]) else { return };

    let f = File::open(m.file("damaged.bin")).unwrap();
    let mut buf = vec![0u8; 100];
    let err = f.read_at(&mut buf, 2 * 16384 + 50).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    for block in [0u64, 1, 3, 4, 5] {
        let mut buf = vec![0u8; 16384];
        let n = pread_full(&f, &mut buf, block * 16384).unwrap();
        assert_eq!(n, 16384, "block {block}");
        let at = (block * 16384) as usize;
        assert!(buf == data[at..at + 16384], "block {block} differs");
    }
    // A whole-file read fails rather than returning wrong bytes.
    assert_eq!(
        fs::read(m.file("damaged.bin")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    let log = m.log_text();
    assert!(
        log.contains("damaged.bin.qltx") && log.contains("block 2"),
        "log: {log}"
    );
}

#[test]
fn a_container_the_key_cannot_open_is_listed_but_eacces() {
    let ws = Workspace::new();
    let o = opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never);
    ws.pack("mine", b"readable", &o);
    let other = key_file_key(9);
    ws.pack_with("theirs", &random_bytes(12_345, 1), &o, &other);
    let Some(m) = ws.mount(&[]) else { return };
    assert_eq!(
        fs::metadata(m.file("theirs")).unwrap().len(),
        12_345,
        "size without the key"
    );
    for _ in 0..3 {
        let err = File::open(m.file("theirs")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    }
    assert_eq!(fs::read(m.file("mine")).unwrap(), b"readable");
    let log = m.log_text();
    assert_eq!(
        log.matches("theirs.qltx").count(),
        1,
        "logged once, with its path: {log}"
    );
}

#[test]
fn sigterm_unmounts_even_with_a_file_open() {
    let ws = Workspace::new();
    ws.pack(
        "f",
        b"data",
        &opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never),
    );
    let Some(mut m) = ws.mount(&[]) else { return };
    let open = File::open(m.file("f")).unwrap();
    unsafe { libc::kill(m.pid(), libc::SIGTERM) };
    wait_until("the busy mount to be detached", || mount_type(&m.mnt).is_none());
    let mut buf = [0u8; 4];
    assert_eq!(open.read_at(&mut buf, 0).unwrap(), 4, "an open file still reads");
    assert_eq!(&buf, b"data");
    drop(open);
    let status = m.wait_exit().expect("the process ends once the file is closed");
    assert!(status.success(), "{status}: {}", m.log_text());
}

#[test]
fn daemon_mode_returns_once_mounted_and_umount_ends_it() {
    if !fuse_available() {
        return;
    }
    let ws = Workspace::new();
    ws.pack(
        "f",
        b"daemon data",
        &opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never),
    );
    let mnt = ws.mnt().canonicalize().unwrap();
    let out = qeltrix()
        .arg("mount")
        .arg(ws.vault())
        .arg(&mnt)
        .arg("--key-file")
        .arg(ws.path("key"))
        .arg("--daemon")
        .arg("--log-file")
        .arg(ws.path("daemon.log"))
        .timeout(DEADLINE)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let pid = daemon_pid(&stderr);
    let _cleanup = DaemonMount {
        mnt: mnt.clone(),
        pid,
    };
    assert!(out.status.success(), "{stderr}");
    assert!(mount_type(&mnt).is_some(), "mounted when the command returns");
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"daemon data");

    qeltrix()
        .arg("umount")
        .arg(&mnt)
        .timeout(DEADLINE)
        .assert()
        .success();
    assert!(mount_type(&mnt).is_none());
    wait_until("the daemon to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid)
    });
    let e = qeltrix()
        .arg("umount")
        .arg(&mnt)
        .timeout(DEADLINE)
        .assert()
        .failure();
    let msg = String::from_utf8_lossy(&e.get_output().stderr).to_string();
    assert!(msg.contains("not a mount point"), "{msg}");
}

fn zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Runs `qeltrix mount` expecting a prompt failure, and returns its stderr.
fn mount_fails(vault: &Path, mnt: &Path, key: &Path) -> String {
    let out = qeltrix()
        .arg("mount")
        .arg(vault)
        .arg(mnt)
        .arg("--key-file")
        .arg(key)
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert!(!out.status.success(), "mount should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn clear_errors_for_bad_mount_points_and_empty_vaults() {
    if !fuse_available() {
        return;
    }
    let ws = Workspace::new();
    let key = ws.path("key");
    let msg = mount_fails(&ws.vault(), &ws.path("missing"), &key);
    assert!(msg.contains("does not exist"), "{msg}");
    let msg = mount_fails(&ws.vault(), &ws.mnt(), &key);
    assert!(msg.contains("holds no readable containers"), "{msg}");
    let msg = mount_fails(&ws.path("novault"), &ws.mnt(), &key);
    assert!(msg.contains("novault"), "{msg}");

    ws.pack(
        "f",
        b"x",
        &opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never),
    );
    let Some(mut m) = ws.mount(&[]) else { return };
    let msg = mount_fails(&ws.vault(), &ws.mnt(), &key);
    assert!(msg.contains("busy"), "{msg}");

    // A stale mount: the process behind it killed outright.
    unsafe { libc::kill(m.pid(), libc::SIGKILL) };
    let _ = m.child.wait();
    let msg = mount_fails(&ws.vault(), &ws.mnt(), &key);
    assert!(msg.contains("stale"), "{msg}");
    qeltrix()
        .arg("umount")
        .arg(ws.mnt())
        .timeout(DEADLINE)
        .assert()
        .success();
    assert!(mount_type(&m.mnt).is_none());
}

#[test]
fn a_folder_of_ten_thousand_containers_lists_normally() {
    let ws = Workspace::new();
    let one = ws.pack(
        "big/c00000",
        b"tiny",
        &opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never),
    );
    // Hard links: 10,000 containers without 10,000 times the disk space.
    for i in 1..10_000 {
        fs::hard_link(&one, ws.vault().join(format!("big/c{i:05}.qltx"))).unwrap();
    }
    let Some(m) = ws.mount(&[]) else { return };
    let mut names: Vec<String> = fs::read_dir(m.file("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 10_000);
    assert_eq!((names[0].as_str(), names[9_999].as_str()), ("c00000", "c09999"));

    let ls = Command::new("ls").arg("-l").arg(m.file("big")).output().unwrap();
    assert!(ls.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout).lines().count(),
        10_001,
        "total line + entries"
    );
    let find = Command::new("find")
        .arg(&m.mnt)
        .arg("-type")
        .arg("f")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&find.stdout).lines().count(), 10_000);
    let du = Command::new("du")
        .arg("-s")
        .arg("--apparent-size")
        .arg("-B1")
        .arg(&m.mnt)
        .output()
        .unwrap();
    let bytes: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes >= 40_000, "du counts 10,000 files of 4 bytes: {bytes}");
    assert_eq!(fs::read(m.file("big/c07777")).unwrap(), b"tiny");
}

/// `scripts/test-mount-tools.sh`: sha256sum, cmp, tail -c, dd skip=, ls, find, du and
/// ffmpeg/ffprobe through a mount, each compared with the same program on the original.
#[test]
fn real_tools_read_the_mount_like_the_originals() {
    if !fuse_available() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-mount-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("QELTRIX", cargo_bin("qeltrix"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
}

/// The vault's own `.qeltrix/` is never shown, and no symlink is followed out of the vault (one
/// to a container inside it is). Before the rule, the mount showed `.qeltrix/`, and `outside`
/// decrypted a container from outside the vault. Dot names are shown, as a file system shows them
/// (the read-write mount stores `.git`); `serve` does not publish them.
#[test]
fn the_vault_folder_and_symlinks_out_of_the_vault_are_not_shown() {
    let ws = Workspace::new();
    let o = opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never);
    let inside = random_bytes(5000, 11);
    ws.pack("real", &inside, &o);
    ws.pack(".qeltrix/secret", &random_bytes(100, 12), &o);
    ws.pack(".hidden", &random_bytes(100, 13), &o);
    // A container outside the vault, and links to it and to one inside.
    let outside = ws.path("outside.qltx");
    let plain = ws.path("outside.plain");
    fs::write(&plain, random_bytes(3000, 14)).unwrap();
    qeltrix::pack(
        &plain,
        &outside,
        &recipients(std::slice::from_ref(&ws.key)),
        &o,
        true,
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, ws.vault().join("outside.qltx")).unwrap();
    std::os::unix::fs::symlink(ws.path("."), ws.vault().join("up.qltx")).unwrap();
    std::os::unix::fs::symlink(ws.vault().join("real.qltx"), ws.vault().join("alias.qltx")).unwrap();
    let Some(m) = ws.mount(&[]) else { return };

    let mut top: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, [".hidden", "alias", "real"], "{}", m.log_text());
    assert_eq!(fs::read(m.file(".hidden")).unwrap(), random_bytes(100, 13));
    for name in ["outside", ".qeltrix", ".qeltrix/secret", "up"] {
        let err = fs::metadata(m.file(name)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{name}");
    }
    assert_eq!(fs::read(m.file("alias")).unwrap(), inside);
    assert_eq!(fs::read(m.file("real")).unwrap(), inside);

    // The mount is a long-running process holding the key: no core dumps.
    let limits = fs::read_to_string(format!("/proc/{}/limits", m.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
}

/// Reads `path` through the mount, `None` if it is not there (yet, or any more).
fn read_if_there(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// With rescans an hour apart, only inotify can explain that containers added, replaced and
/// removed show up (before inotify, the vault was polled, and these waits ran into the deadline).
#[test]
fn inotify_shows_changes_without_waiting_for_a_rescan() {
    let ws = Workspace::new();
    let o = opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never);
    ws.pack("keep", b"stays", &o);
    let Some(m) = ws.mount_watched() else { return };
    assert_eq!(fs::read(m.file("keep")).unwrap(), b"stays");

    // Added: a container, and a new folder with one.
    let added = random_bytes(10_000, 21);
    ws.pack("new", &added, &o);
    ws.pack("sub/deeper", b"deep", &o);
    wait_until("the added containers to appear", || {
        read_if_there(&m.file("new")).as_ref() == Some(&added)
            && read_if_there(&m.file("sub/deeper")).as_deref() == Some(&b"deep"[..])
    });

    // Replaced (pack renames its finished output over the old one).
    let replaced = random_bytes(10_000, 22);
    ws.pack("new", &replaced, &o);
    wait_until("the replacement to show", || {
        read_if_there(&m.file("new")).as_ref() == Some(&replaced)
    });

    // Removed.
    fs::remove_file(ws.vault().join("new.qltx")).unwrap();
    wait_until("the removed container to vanish", || {
        read_if_there(&m.file("new")).is_none()
    });
    assert_eq!(fs::read(m.file("keep")).unwrap(), b"stays");
    let log = m.log_text();
    assert!(log.contains("with inotify"), "the mode is logged: {log}");
}

/// Where inotify cannot be used, the vault is polled instead, and the log says so.
#[test]
fn without_inotify_the_vault_is_polled_and_the_log_says_so() {
    let ws = Workspace::new();
    let o = opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never);
    ws.pack("keep", b"stays", &o);
    let mut command = qeltrix_process();
    command
        .env("QELTRIX_TEST_NO_INOTIFY", "1")
        .arg("mount")
        .arg(ws.vault())
        .arg(ws.mnt())
        .arg("--key-file")
        .arg(ws.path("key"));
    let Some(m) = MountGuard::spawn(command, &ws.mnt()) else {
        return;
    };
    ws.pack("new", b"polled", &o);
    wait_until("the added container to appear", || {
        read_if_there(&m.file("new")).as_deref() == Some(&b"polled"[..])
    });
    let log = m.log_text();
    assert!(
        log.contains("cannot watch") && log.contains("with inotify") && log.contains("rescanning it every"),
        "the fallback is logged: {log}"
    );
}

/// Copies out of the mount (`cp -a`, `rsync -a`) are ordinary trees their owner can change:
/// files 0644, folders 0755, the same bytes. Before, the mount showed 0400 and 0500, and the
/// copies were read-only trees.
#[test]
fn cp_a_and_rsync_a_copy_out_writable_trees() {
    let ws = Workspace::new();
    let o = opts(CipherId::ChaCha20Poly1305, 4 * KIB, CompressMode::Auto);
    let files = [
        ("top.txt", text_bytes(9000, 31)),
        ("d/inner.bin", random_bytes(20_000, 32)),
        ("d/e/deep.bin", random_bytes(100, 33)),
    ];
    for (rel, data) in &files {
        ws.pack(rel, data, &o);
    }
    let Some(m) = ws.mount(&[]) else { return };
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&m.file("top.txt")), 0o644);
    assert_eq!(mode(&m.file("d")), 0o755);

    let cp = ws.path("cp");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&m.mnt)
        .arg(&cp)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a");
    let rsync = ws.path("rsync");
    let out = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", m.mnt.display()))
        .arg(&rsync)
        .output()
        .expect("rsync is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "rsync -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for copy in [&cp, &rsync] {
        for dir in [copy.clone(), copy.join("d"), copy.join("d/e")] {
            assert_eq!(mode(&dir), 0o755, "{}", dir.display());
        }
        for (rel, data) in &files {
            let path = copy.join(rel);
            assert_eq!(mode(&path), 0o644, "{}", path.display());
            assert!(fs::read(&path).unwrap() == *data, "{}: contents", path.display());
        }
        // The owner can change the copy: add a file to a folder, append to a file.
        fs::write(copy.join("d/e/added"), b"x").unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(copy.join("top.txt"))
            .unwrap();
    }
}

/// `tail -F` through the mount follows a container replaced by a longer one (as a log packed
/// again would be): the replacement is a new inode, which tail notices and reopens.
#[test]
fn tail_follows_a_replaced_container() {
    let ws = Workspace::new();
    let o = opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never);
    ws.pack("app.log", b"line A\n", &o);
    let Some(m) = ws.mount_watched() else { return };
    let mut tail = Reaped(
        Command::new("tail")
            .arg("-F")
            .arg("-n")
            .arg("+1")
            .arg(m.file("app.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tail (coreutils) is installed"),
    );
    let out = Captured::start(tail.0.stdout.take().unwrap());
    wait_for_output("tail to print line A", &mut tail.0, &out, |_| {
        out.lines().contains(&"line A".to_string()).then_some(())
    });

    ws.pack("app.log", b"line A\nline B\n", &o);
    wait_for_output("tail to follow the replacement", &mut tail.0, &out, |_| {
        out.lines().contains(&"line B".to_string()).then_some(())
    });
}

/// A vault made by `qeltrix init` keeps its keyring in `.qeltrix/`, which the mount never shows
/// (the vault rule, as in `serve`).
#[test]
fn the_keyring_folder_of_an_init_vault_is_not_shown() {
    let ws = Workspace::new();
    let pw = ws.path("pw");
    fs::write(&pw, "correct horse battery\n").unwrap();
    let vault = ws.path("ivault");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = qeltrix_process().args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let plain = {
        let p = ws.path("plain");
        fs::write(&p, b"through the keyring\n").unwrap();
        p
    };
    let container = vault.join("doc.txt.qltx");
    run(&[
        "init".as_ref(),
        vault.as_ref(),
        "--passphrase-file".as_ref(),
        pw.as_ref(),
        "--kdf-iterations".as_ref(),
        "1000".as_ref(),
    ]);
    assert!(vault.join(".qeltrix").is_dir(), "init made the keyring folder");
    run(&[
        "pack".as_ref(),
        plain.as_ref(),
        container.as_ref(),
        "--passphrase-file".as_ref(),
        pw.as_ref(),
        "-q".as_ref(),
    ]);
    let mut command = qeltrix_process();
    command
        .arg("mount")
        .arg(&vault)
        .arg(ws.mnt())
        .arg("--passphrase-file")
        .arg(&pw);
    let Some(m) = MountGuard::spawn(command, &ws.mnt()) else {
        return;
    };

    let names: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["doc.txt"], "{}", m.log_text());
    let err = fs::metadata(m.file(".qeltrix")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(fs::read(m.file("doc.txt")).unwrap(), b"through the keyring\n");
}

/// The modes let every user read, but the kernel decides first who reaches the mount at all:
/// without `--allow-other` another user is refused whatever the modes say; with it, they read.
#[test]
fn other_users_are_kept_out_unless_allow_other() {
    if !qeltrix::sys::process::is_root() {
        eprintln!("skipping: acting as another user needs root");
        return;
    }
    let ws = Workspace::new();
    // The way to the mount point must be open to the other user, or the test proves nothing.
    fs::set_permissions(ws.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let o = opts(CipherId::Aes256Gcm, 4 * KIB, CompressMode::Never);
    ws.pack("shared.txt", b"for everyone\n", &o);
    let as_nobody = |m: &MountGuard| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(m.file("shared.txt"))
            .output()
            .expect("setpriv (util-linux) is installed")
    };
    {
        let Some(m) = ws.mount(&[]) else { return };
        let out = as_nobody(&m);
        assert!(!out.status.success(), "another user read the mount");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(m.file("shared.txt")).unwrap(), b"for everyone\n");
    }
    let Some(m) = ws.mount(&["--allow-other"]) else {
        return;
    };
    let out = as_nobody(&m);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"for everyone\n");
}

/// Format 2 in the mount: a file packed with `qeltrix pack FILE` shows the mode and mtime its
/// file record keeps (a stream, which has none, shows the container file's time and 0644), and
/// small random reads inside blocks (served from 16 KiB segments) return the right bytes, as do
/// a sequential read of the whole file afterwards.
#[test]
fn v2_files_show_their_mode_and_mtime_and_small_reads_are_exact() {
    let ws = Workspace::new();
    let original = random_bytes(5 * 64 * KIB + 3000, 77);
    let plain = ws.path("clip.bin");
    fs::write(&plain, &original).unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o640)).unwrap();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::new(1_400_000_000, 5_000);
    File::options()
        .write(true)
        .open(&plain)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let packed = common::qeltrix_process()
        .current_dir(ws.dir.path())
        .args(["pack", "-q", "--block-size", "64", "--key-file", "key"])
        .args(["clip.bin", "vault/clip.bin.qltx"])
        .status()
        .unwrap();
    assert!(packed.success());
    ws.pack("stream", b"no record here", &PackOptions::default());

    let Some(m) = ws.mount(&[]) else { return };
    let md = fs::metadata(m.file("clip.bin")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!(md.modified().unwrap(), mtime);
    assert_eq!(md.len(), original.len() as u64);
    let md = fs::metadata(m.file("stream")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o644);

    let f = File::open(m.file("clip.bin")).unwrap();
    let mut rng = common::Rng::new(9);
    for _ in 0..40 {
        let len = 1 + rng.below(5000) as usize;
        let offset = 1 + rng.below((original.len() - len) as u64) as usize;
        let mut buf = vec![0u8; len];
        let n = pread_full(&f, &mut buf, offset as u64).unwrap();
        assert_eq!(n, len);
        assert!(buf == original[offset..offset + len], "{offset}+{len}");
    }
    let mut all = Vec::new();
    File::open(m.file("clip.bin"))
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    assert!(all == original, "sequential read");
}
