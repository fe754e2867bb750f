//! `mount` and `serve` try their key on the vault at start: a key that opens none of its
//! containers is exit 3 naming the vault, worded like a wrong vault passphrase; a key that opens
//! some is a warning with the counts, and the reason of each container that does not open is
//! logged once.

mod common;

use common::*;
use std::fs::File;
use std::process::{Child, Stdio};

/// A vault `v` with `a` and `b` under key 7 (`key`) and `sub/c` under key 9 (`other`).
fn mixed_vault() -> Work {
    let w = Work::with_key();
    w.write_key("other", 9);
    w.write_key("wrong", 3);
    w.write("a", b"alpha contents");
    w.write("b", b"bravo contents");
    w.write("c", b"charlie contents");
    std::fs::create_dir_all(w.path("v/sub")).unwrap();
    w.ok("pack a v/ --key-file key -q");
    w.ok("pack b v/ --key-file key -q");
    w.ok("pack c v/sub/ --key-file other -q");
    w
}

/// A vault made with `qeltrix init` (passphrase in file `pass`), holding `a`.
fn keyring_vault() -> Work {
    let w = Work::new();
    w.write("pass", b"the vault passphrase\n");
    w.write("notpass", b"not the vault passphrase\n");
    w.write("a", b"alpha contents");
    std::fs::create_dir(w.path("v")).unwrap();
    w.ok("init v --passphrase-file pass --kdf-iterations 1000");
    w.ok("pack a v/ --passphrase-file pass -q");
    w
}

fn mount_dir(w: &Work) -> std::path::PathBuf {
    let mnt = w.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    mnt
}

/// Unmounts on drop, also when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = qeltrix_process().arg("umount").arg(&self.0).output();
    }
}

#[test]
fn mount_with_a_key_that_opens_no_container_exits_3_naming_the_vault() {
    if !fuse_available() {
        return;
    }
    let w = mixed_vault();
    let mnt = mount_dir(&w);
    let _unmount = Unmount(mnt.clone());
    for extra in ["--daemon", ""] {
        let line = format!("mount v mnt --key-file wrong {extra}");
        let err = w.fails(&line, 3);
        assert!(
            err.contains("error: vault v: wrong key: the key opens 0 of 3 containers"),
            "{line}: {err}"
        );
        assert!(err.contains("sub/c.qltx"), "each reason is logged: {err}");
        assert!(
            qeltrix::mount::mount_type(&mnt).is_none(),
            "{line}: nothing mounted"
        );
    }
}

#[test]
fn mount_with_a_key_that_opens_some_warns_with_the_counts_and_mounts() {
    if !fuse_available() {
        return;
    }
    let w = mixed_vault();
    let mnt = mount_dir(&w);
    let out = w.run("mount v mnt --key-file key --daemon --log-file mount.log");
    assert_code(&out, 0, "mount --daemon");
    let stderr = stderr_of(&out);
    let _cleanup = DaemonMount {
        mnt: mnt.clone(),
        pid: daemon_pid(&stderr),
    };
    assert!(
        stderr.contains("warning: vault v: the key opens 2 of 3 containers; the others will fail to read"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"alpha contents");
    for _ in 0..2 {
        let denied = std::fs::read(mnt.join("sub/c")).unwrap_err();
        assert_eq!(denied.raw_os_error(), Some(libc::EACCES), "{denied}");
    }
    // The reason is logged before the error is answered, once per container (not also at
    // start), however often it is read.
    let log = String::from_utf8_lossy(&w.read("mount.log")).into_owned();
    let said = format!("{stderr}\n{log}");
    let reasons: Vec<&str> = said.lines().filter(|l| l.contains("sub/c.qltx")).collect();
    assert_eq!(reasons.len(), 1, "{said}");
    assert!(
        reasons[0].contains("WARN") && reasons[0].contains("wrong key"),
        "{said}"
    );
}

#[test]
fn mount_with_a_wrong_vault_passphrase_is_worded_like_a_key_that_opens_nothing() {
    if !fuse_available() {
        return;
    }
    let w = keyring_vault();
    let mnt = mount_dir(&w);
    let _unmount = Unmount(mnt.clone());
    let err = w.fails("mount v mnt --passphrase-file notpass --daemon", 3);
    // Like a key that opens nothing: "wrong key", the vault named, exit 3.
    let vault = w.path("v").canonicalize().unwrap();
    let said = format!(
        "error: wrong key: the passphrase does not open vault {}",
        vault.display()
    );
    assert!(err.contains(&said), "{err}");
    assert!(
        !err.contains(".qeltrix/keyring"),
        "the vault is named, not its keyring: {err}"
    );
}

/// `qeltrix serve ARGS` on a free loopback port, logging to a file, killed on drop.
struct Serve {
    child: Child,
    log: std::path::PathBuf,
}

impl Serve {
    fn spawn(w: &Work, args: &str) -> Serve {
        let log = w.path(&format!("serve-{}.log", unique_suffix()));
        let child = w
            .std_cmd(&format!("serve {args} --listen 127.0.0.1:0"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Serve { child, log }
    }

    /// The base URL once it serves.
    fn url(&mut self) -> String {
        let addr: std::net::SocketAddr = serve_addr(&mut self.child, &self.log);
        format!("http://{addr}/")
    }

    /// Waits for it to exit by itself; its exit code and log.
    fn exit(&mut self) -> (Option<i32>, String) {
        let status = wait_exit(&mut self.child, &self.log);
        (status.code(), self.log.as_path().text())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_with_a_key_that_opens_no_container_exits_3_before_serving() {
    let w = mixed_vault();
    let (code, log) = Serve::spawn(&w, "v --key-file wrong").exit();
    assert_eq!(code, Some(3), "{log}");
    assert!(
        log.contains("error: vault v: wrong key: the key opens 0 of 3 containers"),
        "{log}"
    );
    assert!(!log.contains("http://"), "it never served: {log}");
    assert!(log.contains("sub/c.qltx"), "each reason is logged: {log}");

    // One container with the wrong key: the container's own error, also exit 3.
    let (code, log) = Serve::spawn(&w, "v/a.qltx --key-file other").exit();
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("a.qltx: wrong key"), "{log}");
}

#[test]
fn serve_with_a_key_that_opens_some_warns_with_the_counts_and_serves() {
    let w = mixed_vault();
    let mut serve = Serve::spawn(&w, "v --key-file key");
    let base = serve.url();
    let log = serve.log.as_path().text();
    assert!(
        log.contains("warning: vault v: the key opens 2 of 3 containers; the others will fail to read"),
        "{log}"
    );
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut ok = agent.get(&format!("{base}a")).call().unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.body_mut().read_to_vec().unwrap(), b"alpha contents");
    assert_eq!(agent.get(&format!("{base}sub/c")).call().unwrap().status(), 403);
    let log = wait_for_text(&mut serve.child, &serve.log, "/sub/c range=- 403");
    let reason = line_where(&log, |l| l.contains("403") && l.contains("sub/c.qltx"));
    assert!(
        reason.is_some_and(|r| r.contains("wrong key")),
        "the reason is logged with the 403: {log}"
    );
}

#[test]
fn serve_of_an_empty_vault_starts() {
    let w = Work::new();
    std::fs::create_dir(w.path("empty")).unwrap();
    w.write_key("key", 1);
    let mut serve = Serve::spawn(&w, "empty --key-file key");
    let base = serve.url();
    let listing = ureq::get(&base)
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(!listing.is_empty());
    assert!(!serve.log.as_path().text().contains("warning"));
}

#[test]
fn serve_with_a_wrong_vault_passphrase_is_worded_like_a_key_that_opens_nothing() {
    let w = keyring_vault();
    let (code, log) = Serve::spawn(&w, "v --passphrase-file notpass").exit();
    assert_eq!(code, Some(3), "{log}");
    let vault = w.path("v").canonicalize().unwrap();
    let said = format!(
        "error: wrong key: the passphrase does not open vault {}",
        vault.display()
    );
    assert!(log.contains(&said), "{log}");
}
