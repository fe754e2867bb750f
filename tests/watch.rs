//! `qeltrix watch` with real file-system events and real processes: the events it reports
//! (`--json` lines) are what the tests wait for, never a sleep.

mod common;
use common::*;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// A watch folder: an inbox, a vault, an identity and its recipient, a state home.
struct Setup {
    w: Work,
    recipient: String,
}

impl Setup {
    fn new() -> Setup {
        let w = Work::new();
        fs::create_dir_all(w.path("inbox")).unwrap();
        fs::create_dir_all(w.path("vault")).unwrap();
        let out = w.cmd("keygen --x25519 -o id.key").output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let recipient = text
            .split_whitespace()
            .find(|t| t.starts_with("qeltrix-x25519:"))
            .expect("a recipient string")
            .to_string();
        Setup { w, recipient }
    }

    fn inbox(&self, rel: &str) -> PathBuf {
        self.w.path("inbox").join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.inbox(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    fn command(&self, extra: &str) -> std::process::Command {
        let mut c = self.w.std_cmd(&format!(
            "watch inbox --vault vault --recipient {} --json {extra}",
            self.recipient
        ));
        c.env("XDG_STATE_HOME", self.w.path("state"));
        c
    }

    /// Starts a watcher and waits for its first scan.
    fn start(&self, extra: &str) -> Watcher {
        start_wrapped(self.command(&format!("--settle 100 {extra}")))
    }

    /// `watch --once`: its events.
    fn once(&self, extra: &str) -> Vec<Value> {
        let out = self.command(&format!("--once {extra}")).output().unwrap();
        assert!(
            out.status.success(),
            "watch --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        events(&String::from_utf8_lossy(&out.stdout))
    }

    /// The plaintext of the container for `rel`, decrypted with the owner's identity.
    fn unpacked(&self, rel: &str) -> Vec<u8> {
        let out = self
            .w
            .run(&format!("unpack vault/{rel}.qltx - --identity id.key"));
        assert_code(&out, 0, rel);
        out.stdout
    }

    /// Every file in the vault but its `.qeltrix/` folder, relative.
    fn vault_files(&self) -> Vec<String> {
        let mut all = Vec::new();
        walk(&self.w.path("vault"), Path::new(""), &mut all);
        all.retain(|p| !p.starts_with(".qeltrix/"));
        all.sort();
        all
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            walk(root, &r, out);
        } else {
            out.push(r.to_string_lossy().into_owned());
        }
    }
}

fn events(text: &str) -> Vec<Value> {
    complete_lines(text)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A running watcher, killed on drop.
struct Watcher {
    child: Child,
    stdout: Captured,
    stderr: Captured,
}

impl Watcher {
    fn events(&self) -> Vec<Value> {
        events(&self.stdout.text())
    }

    /// Waits for an event satisfying `pred`, and returns it.
    fn wait(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for_output("a watch event", &mut self.child, &self.stdout, |t| {
            events(t).into_iter().find(|e| pred(e))
        })
    }

    /// Waits until `n` events satisfy `pred`.
    fn wait_count(&mut self, n: usize, pred: impl Fn(&Value) -> bool) {
        wait_for_output("watch events", &mut self.child, &self.stdout, |t| {
            (events(t).iter().filter(|e| pred(e)).count() >= n).then_some(())
        })
    }

    fn packed(&self, path: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "packed" && e["path"] == path)
            .count()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(kind: &'static str, path: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == kind && e["path"] == path
}

#[test]
fn nested_files_are_packed_updated_and_removed_at_their_mirrored_paths() {
    let s = Setup::new();
    let mut w = s.start("--on-delete remove");
    // A folder made after the start, three levels deep, with a file written at once.
    s.write("a/b/c/deep.txt", b"deep one");
    w.wait(is("packed", "a/b/c/deep.txt"));
    assert_eq!(s.unpacked("a/b/c/deep.txt"), b"deep one");

    s.write("a/b/c/deep.txt", b"deep two, longer");
    w.wait_count(2, is("packed", "a/b/c/deep.txt"));
    assert_eq!(s.unpacked("a/b/c/deep.txt"), b"deep two, longer");

    fs::remove_file(s.inbox("a/b/c/deep.txt")).unwrap();
    w.wait(is("removed", "a/b/c/deep.txt"));
    assert!(s.vault_files().is_empty(), "{:?}", s.vault_files());

    // A whole folder moved in, already full.
    let outside = s.w.path("outside/x/y");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("moved.bin"), random_bytes(100_000, 1)).unwrap();
    fs::rename(s.w.path("outside/x"), s.inbox("x")).unwrap();
    w.wait(is("packed", "x/y/moved.bin"));
    assert_eq!(s.unpacked("x/y/moved.bin"), random_bytes(100_000, 1));
}

#[test]
fn an_atomic_save_is_one_update_and_temporary_names_are_never_packed() {
    let s = Setup::new();
    let mut w = s.start("--keep-versions 3");
    s.write("doc.txt", b"version one");
    w.wait(is("packed", "doc.txt"));
    // An editor's save: a temporary file written and renamed over the original.
    let mut tmp = fs::File::create(s.inbox("doc.txt.tmp")).unwrap();
    tmp.write_all(b"version two").unwrap();
    tmp.sync_all().unwrap();
    drop(tmp);
    s.write(".#doc.txt", b"lock");
    s.write("partial.part", b"half");
    fs::rename(s.inbox("doc.txt.tmp"), s.inbox("doc.txt")).unwrap();
    w.wait_count(2, is("packed", "doc.txt"));
    // A later file, packed after the save: by then any second update would have been reported.
    s.write("sentinel", b"s");
    w.wait(is("packed", "sentinel"));
    assert_eq!(w.packed("doc.txt"), 2, "{:?}", w.events());
    assert_eq!(s.unpacked("doc.txt"), b"version two");
    assert_eq!(
        s.vault_files(),
        ["doc.txt.qltx", "doc.txt.qltx.~1~", "sentinel.qltx"]
    );
    let old = s.w.run("unpack vault/doc.txt.qltx.~1~ - --identity id.key");
    assert_eq!(
        old.stdout, b"version one",
        "the kept version is the previous content"
    );
}

#[test]
fn a_slow_writer_is_packed_only_when_it_closes_with_the_whole_content() {
    let s = Setup::new();
    let mut w = s.start("");
    let mut slow = fs::File::create(s.inbox("slow.log")).unwrap();
    slow.write_all(b"first half, ").unwrap();
    slow.flush().unwrap();
    // Another file, finished and packed: the slow one, still open, must not be.
    s.write("probe", b"p");
    w.wait(is("packed", "probe"));
    assert_eq!(w.packed("slow.log"), 0, "packed while still open for writing");
    slow.write_all(b"second half").unwrap();
    drop(slow);
    w.wait(is("packed", "slow.log"));
    assert_eq!(s.unpacked("slow.log"), b"first half, second half");
    assert_eq!(w.packed("slow.log"), 1);
}

#[test]
fn a_file_held_open_is_packed_after_max_wait_with_what_it_holds() {
    let s = Setup::new();
    let mut w = s.start("--max-wait 1");
    let mut log = fs::File::create(s.inbox("app.log")).unwrap();
    log.write_all(b"line 1\n").unwrap();
    log.flush().unwrap();
    w.wait(is("packed", "app.log"));
    assert_eq!(s.unpacked("app.log"), b"line 1\n");
    drop(log);
}

#[test]
fn a_thousand_files_dropped_at_once_are_all_packed_exactly_once() {
    let s = Setup::new();
    let mut w = s.start("--jobs 4");
    let staging = s.w.path("staging/drop");
    fs::create_dir_all(&staging).unwrap();
    for i in 0..1000 {
        fs::write(staging.join(format!("f{i:04}.txt")), format!("file number {i}")).unwrap();
    }
    fs::rename(&staging, s.inbox("drop")).unwrap();
    w.wait_count(1000, |e| e["event"] == "packed");
    let files = s.vault_files();
    assert_eq!(files.len(), 1000, "one container per file");
    let packed: std::collections::HashSet<String> = w
        .events()
        .iter()
        .filter(|e| e["event"] == "packed")
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(packed.len(), 1000, "no file packed twice");
    for i in [0, 499, 999] {
        assert_eq!(
            s.unpacked(&format!("drop/f{i:04}.txt")),
            format!("file number {i}").as_bytes()
        );
    }
}

#[test]
fn a_watcher_killed_mid_pack_and_restarted_stores_every_file_once_and_whole() {
    let s = Setup::new();
    let big = random_bytes(48 << 20, 7);
    s.write("big.bin", &big);
    for i in 0..20 {
        s.write(&format!("small/{i}.txt"), format!("small {i}").as_bytes());
    }
    let mut w = s.start("--jobs 2");
    // Killed while the big file is still being packed (it is reported last of all).
    w.wait(|e| e["event"] == "packed");
    let _ = w.child.kill();
    let _ = w.child.wait();
    for f in s.vault_files() {
        assert!(
            f.ends_with(".qltx"),
            "a partial or temporary file is visible: {f}"
        );
    }
    let again = s.once("");
    let files = s.vault_files();
    assert_eq!(files.len(), 21, "{files:?} after {again:?}");
    assert_eq!(s.unpacked("big.bin"), big);
    for i in 0..20 {
        assert_eq!(
            s.unpacked(&format!("small/{i}.txt")),
            format!("small {i}").as_bytes()
        );
    }
}

#[test]
fn changes_made_while_stopped_are_caught_on_start_and_unchanged_files_are_not_packed() {
    let s = Setup::new();
    s.write("keep.txt", b"same");
    s.write("edit.txt", b"old");
    s.write("gone.txt", b"bye");
    s.write("touched.txt", b"same bytes");
    let first = s.once("--on-delete trash");
    assert_eq!(first.iter().filter(|e| e["event"] == "packed").count(), 4);

    s.write("edit.txt", b"new content");
    s.write("new/added.txt", b"added");
    fs::remove_file(s.inbox("gone.txt")).unwrap();
    // Same bytes, a new time: read and compared, not packed.
    let f = fs::File::options()
        .write(true)
        .open(s.inbox("touched.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);

    let second = s.once("--on-delete trash");
    let of = |kind: &str| -> Vec<&str> {
        let mut v: Vec<&str> = second
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(of("packed"), ["edit.txt", "new/added.txt"]);
    assert_eq!(of("trashed"), ["gone.txt"]);
    assert_eq!(of("unchanged"), ["touched.txt"]);
    assert_eq!(s.unpacked("edit.txt"), b"new content");
    assert!(s.w.path("vault/.qeltrix/trash/gone.txt.qltx").is_file());
    assert!(!s.w.path("vault/gone.txt.qltx").exists());

    let third = s.once("--on-delete trash");
    assert!(
        !third
            .iter()
            .any(|e| e["event"] == "packed" || e["event"] == "unchanged"),
        "a third run finds nothing to do: {third:?}"
    );
}

#[test]
fn a_watcher_holding_only_a_recipient_cannot_decrypt_what_it_stored() {
    let s = Setup::new();
    s.write("secret.txt", b"for the owner only");
    s.once("");
    let info = s.w.ok("info vault/secret.txt.qltx --json");
    let info: Value = serde_json::from_str(&info).unwrap();
    let slots = info["key_slots"].as_array().expect("key slots");
    assert_eq!(slots.len(), 1, "one slot: {info}");
    assert_eq!(slots[0]["type"], "recipient", "{info}");
    // No passphrase, key file or keyring opens it; the owner's identity does.
    s.w.write_key("other.key", 9);
    let out = s.w.run("unpack vault/secret.txt.qltx - --key-file other.key");
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(s.unpacked("secret.txt"), b"for the owner only");
}

#[test]
fn bad_setups_are_refused_with_a_clear_error() {
    let s = Setup::new();
    fs::create_dir_all(s.inbox("v")).unwrap();
    let r = &s.recipient;
    let cases = [
        // No key at all.
        ("watch inbox --vault vault --once".to_string(), 2, "--recipient"),
        // The vault inside the inbox would pack its own containers.
        (
            format!("watch inbox --vault inbox/v --recipient {r} --once"),
            2,
            "must not contain each other",
        ),
        // Nor may the state lie inside the inbox.
        (
            format!("watch inbox --vault vault --recipient {r} --once --state inbox/s.json"),
            2,
            "must not be inside the inbox",
        ),
        // A missing inbox names itself.
        (
            format!("watch nowhere --vault vault --recipient {r} --once"),
            1,
            "nowhere",
        ),
        // A server's URL cannot keep versions.
        (
            format!("watch inbox --vault http://127.0.0.1:9/ --recipient {r} --keep-versions 2"),
            2,
            "--keep-versions",
        ),
    ];
    for (line, code, needle) in cases {
        let err = s.w.fails(&line, code);
        assert!(err.contains(needle), "{line}: {err}");
    }
}

#[test]
fn sigterm_finishes_the_files_being_packed_saves_the_state_and_starts_no_new_one() {
    let s = Setup::new();
    let big = random_bytes(48 << 20, 3);
    s.write("big.bin", &big);
    s.write("zz-later.txt", b"later");
    // One job: the big file is packed first, the small one waits for the slot.
    let mut w = s.start("--jobs 1");
    unsafe_kill(w.child.id(), libc::SIGTERM);
    let status = wait_exit(&mut w.child, &w.stderr);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{}", w.stderr.text());
    let events = w.events();
    assert!(events.iter().any(|e| e["event"] == "stopping"), "{events:?}");
    assert_eq!(events.last().unwrap()["event"], "stopped", "{events:?}");
    for f in s.vault_files() {
        assert!(
            f.ends_with(".qltx"),
            "a partial or temporary file is visible: {f}"
        );
    }
    if s.w.path("vault/big.bin.qltx").exists() {
        assert_eq!(s.unpacked("big.bin"), big, "what is there is whole");
    }
    // The state saved on the way out: a new run packs only what was not stored.
    let again = s.once("");
    let stored_before = s.vault_files().len() - again.iter().filter(|e| e["event"] == "packed").count();
    assert_eq!(
        stored_before,
        events.iter().filter(|e| e["event"] == "packed").count(),
        "everything packed before the stop was recorded: {again:?}"
    );
}

fn unsafe_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0);
}

/// Starts `command` (a watcher wrapped in another program) and waits for its first scan.
fn start_wrapped(mut command: std::process::Command) -> Watcher {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Captured::start(child.stdout.take().unwrap());
    let stderr = Captured::start(child.stderr.take().unwrap());
    let mut w = Watcher {
        child,
        stdout,
        stderr,
    };
    w.wait(|e| e["event"] == "scanned");
    w
}

#[test]
fn the_inotify_watch_limit_is_reported_with_its_sysctl_and_polling_takes_over() {
    let s = Setup::new();
    for d in ["a", "b", "c", "d", "e"] {
        fs::create_dir_all(s.inbox(d)).unwrap();
    }
    // A user namespace of its own, whose watch limit is 3: the inbox needs 6.
    let mut c = std::process::Command::new("unshare");
    c.current_dir(s.w.path(""))
        .env("XDG_STATE_HOME", s.w.path("state"))
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg(format!(
            "echo 3 > /proc/sys/user/max_inotify_watches && exec {} watch inbox --vault vault \
             --recipient {} --json --settle 50 --poll-interval 1",
            env!("CARGO_BIN_EXE_qeltrix"),
            s.recipient
        ));
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: user namespaces are not available here");
        return;
    }
    let mut w = start_wrapped(c);
    let degraded = w.wait(|e| e["event"] == "degraded");
    let text = degraded["message"].as_str().unwrap();
    assert!(text.contains("fs.inotify.max_user_watches"), "{text}");
    // Found by the next rescan instead.
    s.write("c/late.txt", b"late");
    w.wait(is("packed", "c/late.txt"));
    assert_eq!(s.unpacked("c/late.txt"), b"late");
}

#[test]
fn an_unreadable_file_is_reported_and_retried_without_stopping_the_watcher() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    // The watcher runs as nobody, for whom permissions hold (root reads everything).
    for dir in [s.w.path(""), s.w.path("inbox"), s.w.path("vault")] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    }
    s.write("locked.txt", b"locked for now");
    fs::set_permissions(s.inbox("locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    let mut c = std::process::Command::new("setpriv");
    c.current_dir(s.w.path(""))
        .env("XDG_STATE_HOME", s.w.path("state"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_qeltrix"))
        .args(["watch", "inbox", "--vault", "vault", "--recipient", &s.recipient])
        .args(["--json", "--settle", "50"]);
    let mut w = start_wrapped(c);
    let failed = w.wait(is("failed", "locked.txt"));
    let text = failed["message"].as_str().unwrap();
    assert!(
        text.contains("locked.txt") && text.contains("trying again"),
        "{text}"
    );
    // Other files go on being packed meanwhile.
    s.write("open.txt", b"fine");
    w.wait(is("packed", "open.txt"));
    fs::set_permissions(s.inbox("locked.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    w.wait(is("packed", "locked.txt"));
    assert_eq!(s.unpacked("locked.txt"), b"locked for now");
}

/// A TCP proxy in front of a server: counts the bytes clients send through it, and cuts the
/// connection that carries byte number `cut_at` (once), or with `stall`, stops forwarding on it
/// there and leaves it hanging.
struct CuttingProxy {
    addr: std::net::SocketAddr,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CuttingProxy {
    fn start(server: std::net::SocketAddr, cut_at: u64) -> CuttingProxy {
        CuttingProxy::start_with(server, cut_at, false)
    }

    fn start_with(server: std::net::SocketAddr, cut_at: u64, stall: bool) -> CuttingProxy {
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let cut_done = Arc::new(AtomicBool::new(false));
        let counter = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(server) else {
                    return;
                };
                let (sent, cut_done) = (Arc::clone(&counter), Arc::clone(&cut_done));
                let (mut c_read, mut u_write) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut u_read, mut c_write) = (upstream, client);
                // Server → client: copied as is.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_read, &mut c_write);
                    let _ = c_write.shutdown(Shutdown::Both);
                });
                // Client → server: counted, and cut once at `cut_at`.
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match std::io::Read::read(&mut c_read, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let before = sent.fetch_add(n as u64, Ordering::SeqCst);
                        if before + n as u64 >= cut_at && !cut_done.swap(true, Ordering::SeqCst) {
                            let keep = cut_at.saturating_sub(before) as usize;
                            let _ = u_write.write_all(&buf[..keep.min(n)]);
                            if stall {
                                // Nothing more is read: the client's writes block once the
                                // socket's buffers are full.
                                std::mem::forget((c_read, u_write));
                                return;
                            }
                            let _ = u_write.shutdown(Shutdown::Both);
                            let _ = c_read.shutdown(Shutdown::Both);
                            return;
                        }
                        if u_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = u_write.shutdown(Shutdown::Write);
                });
            }
        });
        CuttingProxy { addr, sent }
    }

    fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `qeltrix serve VAULT --accept-uploads --token-file token` (no key: uploads only), its
/// address, and its log.
fn upload_server(s: &Setup) -> (Reaped, std::net::SocketAddr, PathBuf) {
    fs::write(s.w.path("token"), "upload-secret-token\n").unwrap();
    upload_server_with(s, "--token-file token")
}

/// `qeltrix serve server-vault --accept-uploads AUTH` (no key: uploads only), its address, and
/// its log.
fn upload_server_with(s: &Setup, auth: &str) -> (Reaped, std::net::SocketAddr, PathBuf) {
    fs::create_dir_all(s.w.path("server-vault")).unwrap();
    let log = s.w.path("serve.log");
    let child =
        s.w.std_cmd(&format!(
            "serve server-vault --listen 127.0.0.1:0 --accept-uploads {auth}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let addr: std::net::SocketAddr = serve_addr(&mut child.0, &log);
    (child, addr, log)
}

#[test]
fn through_the_upload_api_a_cut_connection_resends_only_the_chunks_the_server_lacks() {
    let s = Setup::new();
    let (_server, addr, log) = upload_server(&s);
    let data = random_bytes(20 << 20, 11);
    s.write("films/clip.bin", &data);
    s.write("notes.txt", b"small");
    // The cut comes 12 MiB in: the first 8 MiB chunk is stored, the second is cut short.
    let proxy = CuttingProxy::start(addr, 12 << 20);
    let mut c = s.w.std_cmd(&format!(
        "watch inbox --vault http://{}/ --token-file token --recipient {} --json --once",
        proxy.addr, s.recipient
    ));
    c.env("XDG_STATE_HOME", s.w.path("state"));
    let out = c.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\nserver:\n{}",
        log.as_path().text()
    );
    let evs = events(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        evs.iter().filter(|e| e["event"] == "packed").count(),
        2,
        "{evs:?}"
    );
    // What arrived is the right container, whole.
    let got =
        s.w.run("unpack server-vault/films/clip.bin.qltx - --identity id.key");
    assert_code(&got, 0, "unpack");
    assert!(got.stdout == data, "the uploaded container holds the file");
    // Bytes on the wire: everything once, plus the piece of the chunk that was cut, plus the
    // requests' own few KiB. Resending the stored chunk would add 8 MiB.
    let container = fs::metadata(s.w.path("server-vault/films/clip.bin.qltx"))
        .unwrap()
        .len()
        + fs::metadata(s.w.path("server-vault/notes.txt.qltx"))
            .unwrap()
            .len();
    let cut_piece = (12 << 20) - (8 << 20);
    assert!(
        proxy.sent() <= container + cut_piece + (256 << 10),
        "{} bytes sent for {container} bytes of containers: a stored chunk was sent again",
        proxy.sent()
    );
    assert!(
        stderr.contains("trying again"),
        "the cut was seen and survived: {stderr}"
    );
    // Nothing of the spool is left behind.
    let spool_left: Vec<_> = fs::read_dir(s.w.path("state/qeltrix/watch"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .flat_map(|e| fs::read_dir(e.path()).unwrap().flatten())
        .collect();
    assert!(spool_left.is_empty(), "{spool_left:?}");
    // Without the token, the server refuses, and the watcher reports the file as failed.
    let mut c = s.w.std_cmd(&format!(
        "watch inbox --vault http://{addr}/ --recipient {} --json --once --state nostate.json",
        s.recipient
    ));
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let evs = events(&String::from_utf8_lossy(&out.stdout));
    assert!(
        evs.iter()
            .any(|e| e["event"] == "failed" && e["message"].as_str().unwrap_or("").contains("401")),
        "{evs:?}"
    );
}

/// POST or PUT `what` on the server at `addr`: `Authorization: Bearer TOKEN` and
/// `X-Qeltrix-Path: PATH` if given; the status and the body.
fn upload_call(
    addr: std::net::SocketAddr,
    method: &str,
    what: &str,
    token: Option<&str>,
    for_path: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let url = format!("http://{addr}/{what}");
    let agent = http_agent();
    let mut req = match method {
        "PUT" => agent.put(&url),
        _ => agent.post(&url),
    };
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(p) = for_path {
        req = req.header("X-Qeltrix-Path", p);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&body_bytes(&mut resp)).into_owned(),
    )
}

/// `serve --accept-uploads --cap-root`: an upload-only server that takes capability tokens in
/// place of a shared one. A watcher holding a token for `upload` under `/ingest/` stores what is
/// under `ingest/`, and is refused anywhere else before a byte is staged; every refusal also
/// through a plain HTTP client, with its status and reason.
#[test]
fn uploads_under_capability_tokens_go_only_where_the_token_allows() {
    let s = Setup::new();
    s.w.ok("keygen --ed25519 -o root.key");
    let token = |name: &str, args: &str| {
        s.w.ok(&format!("cap issue --root root.key {args} -o {name}"));
        fs::read_to_string(s.w.path(name)).unwrap().trim().to_string()
    };
    let ingest = token(
        "ingest.token",
        "--method upload --path /ingest/ --audience up --expires 1h",
    );
    let reader = token("read.token", "--method read --method list --audience up");
    let elsewhere = token("elsewhere.token", "--method upload --audience another-server");
    let expired = token("expired.token", "--method upload --expires 2020-01-01T00:00:00Z");
    let revoked = token("revoked.token", "--method upload --path /ingest/ --audience up");
    s.w.ok("cap revoke revoked.token --root root.key --list revoked.json");
    let (_server, addr, log) = upload_server_with(
        &s,
        "--cap-root root.key --cap-audience up --cap-revocations revoked.json",
    );

    // The watcher presents the token from its --token-file, as it would a shared one.
    let data = random_bytes(3 << 20, 21);
    s.write("ingest/cam1/clip.bin", &data);
    let watch = |state: &str| {
        let mut c = s.w.std_cmd(&format!(
            "watch inbox --vault http://{addr}/ --token-file ingest.token --recipient {} --json --once --state {state}",
            s.recipient
        ));
        c.stdin(Stdio::null()).output().unwrap()
    };
    let out = watch("s1.json");
    assert!(
        out.status.success(),
        "{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.as_path().text()
    );
    let got =
        s.w.run("unpack server-vault/ingest/cam1/clip.bin.qltx - --identity id.key");
    assert_code(&got, 0, "unpack");
    assert!(got.stdout == data, "the uploaded container holds the file");

    // Outside /ingest/: refused at the first question, so nothing is staged or stored.
    s.write("outside.txt", b"not for this token");
    let out = watch("s2.json");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&String::from_utf8_lossy(&out.stdout));
    assert!(
        evs.iter().any(|e| e["event"] == "failed"
            && e["path"] == "outside.txt"
            && e["message"].as_str().unwrap_or("").contains("403")),
        "{evs:?}"
    );
    assert!(!s.w.path("server-vault/outside.txt.qltx").exists());
    let staged = fs::read_dir(s.w.path("server-vault/.qeltrix/uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "a refused upload stages nothing");

    // Each refusal through a plain client.
    let ask = br#"{"request_id":"r1","chunks":[]}"#;
    let chunk = format!("chunks/{}", "0".repeat(64));
    // Method, request, token, X-Qeltrix-Path, body; the status and words of the answer.
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a [u8],
        u16,
        &'a str,
    );
    let cases: [Case; 12] = [
        (
            "POST",
            "upload",
            None,
            Some("ingest/a.qltx"),
            ask,
            401,
            "capability token is required",
        ),
        (
            "POST",
            "upload",
            Some("not-a-token"),
            Some("ingest/a.qltx"),
            ask,
            401,
            "malformed",
        ),
        ("POST", "upload", Some(&ingest), None, ask, 400, "path_required"),
        (
            "POST",
            "upload",
            Some(&ingest),
            Some("../a.qltx"),
            ask,
            400,
            "bad_path",
        ),
        (
            "POST",
            "upload",
            Some(&ingest),
            Some("outside.txt.qltx"),
            ask,
            403,
            "not for this path",
        ),
        (
            "PUT",
            &chunk,
            Some(&ingest),
            Some("private/x.qltx"),
            b"x",
            403,
            "not for this path",
        ),
        (
            "POST",
            "upload",
            Some(&reader),
            Some("ingest/a.qltx"),
            ask,
            403,
            "not for this method",
        ),
        (
            "POST",
            "upload",
            Some(&elsewhere),
            Some("ingest/a.qltx"),
            ask,
            403,
            "not for this server",
        ),
        (
            "POST",
            "upload",
            Some(&expired),
            Some("ingest/a.qltx"),
            ask,
            403,
            "expired",
        ),
        (
            "POST",
            "upload",
            Some(&revoked),
            Some("ingest/a.qltx"),
            ask,
            403,
            "revoked",
        ),
        (
            "POST",
            "commit",
            Some(&ingest),
            None,
            br#"{"path":"outside.txt.qltx","chunks":[]}"#,
            403,
            "not for this path",
        ),
        (
            "POST",
            "upload",
            Some(&ingest),
            Some("ingest/a%20b.qltx"),
            ask,
            200,
            "\"chunks\":[]",
        ),
    ];
    for (method, what, token, for_path, body, status, words) in cases {
        let (got, text) = upload_call(addr, method, what, token, for_path, body);
        assert_eq!(got, status, "{method} /{what} with {for_path:?}: {text}");
        assert!(text.contains(words), "{method} /{what} with {for_path:?}: {text}");
    }
    // An upload-only server reads nothing, whatever the token.
    let mut resp = http_agent()
        .get(format!("http://{addr}/ingest/cam1/clip.bin"))
        .header("Authorization", format!("Bearer {reader}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(String::from_utf8_lossy(&body_bytes(&mut resp)).contains("no_key"));
    // The log names tokens by id, never by their text.
    let text = log.as_path().text();
    for t in [&ingest, &reader, &elsewhere, &expired, &revoked] {
        assert!(!text.contains(t.as_str()), "a token reached the log");
    }
    assert!(text.contains("committed ingest/cam1/clip.bin.qltx"), "{text}");
}

#[test]
fn a_vault_with_a_keyring_gets_a_keyring_slot_so_its_passphrase_opens_what_was_watched_in() {
    let s = Setup::new();
    fs::write(s.w.path("p.pass"), "vault passphrase\n").unwrap();
    s.w.ok("init vault --passphrase-file p.pass --kdf-iterations 5000");
    s.write("doc.txt", b"for the vault");
    // The recipient and the keyring: the owner's identity or the vault's passphrase opens it.
    let out = s
        .command("--once --passphrase-file p.pass")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_str(&s.w.ok("info vault/doc.txt.qltx --json")).unwrap();
    let kinds: Vec<&str> = info["key_slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{info}");
    let out =
        s.w.run("unpack vault/doc.txt.qltx - --vault vault --passphrase-file p.pass");
    assert_code(&out, 0, "unpack with the vault passphrase");
    assert_eq!(out.stdout, b"for the vault");
    assert_eq!(s.unpacked("doc.txt"), b"for the vault");
}

#[test]
fn a_watcher_killed_mid_upload_sends_only_the_missing_chunks_when_restarted() {
    let s = Setup::new();
    let (_server, addr, log) = upload_server(&s);
    let data = random_bytes(20 << 20, 12);
    s.write("clip.bin", &data);
    let watch_through = |proxy: &CuttingProxy| {
        let mut c = s.w.std_cmd(&format!(
            "watch inbox --vault http://{}/ --token-file token --recipient {} --json --once \
             --state watch-state.json",
            proxy.addr, s.recipient
        ));
        c.env("XDG_STATE_HOME", s.w.path("state"));
        c
    };
    // (The same state, and so the same spool, for both runs: in use the URL is the same, and
    // the default state's name comes from it; here each run has a proxy of its own.)
    // The first run hangs 12 MiB in: the first 8 MiB chunk is stored, the second never ends.
    let stalling = CuttingProxy::start_with(addr, 12 << 20, true);
    let first = watch_through(&stalling)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = Reaped(first);
    let staging = s.w.path("server-vault/.qeltrix/uploads");
    wait_until("the first chunk staged and the second under way", || {
        stalling.sent() >= 12 << 20 && fs::read_dir(&staging).is_ok_and(|d| d.count() == 1)
    });
    let _ = first.0.kill();
    let _ = first.0.wait();
    // The restart finds the spooled container unchanged and sends it as it is.
    let counting = CuttingProxy::start(addr, u64::MAX);
    let out = watch_through(&counting).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.as_path().text()
    );
    let got = s.w.run("unpack server-vault/clip.bin.qltx - --identity id.key");
    assert_code(&got, 0, "unpack");
    assert!(got.stdout == data);
    let container = fs::metadata(s.w.path("server-vault/clip.bin.qltx"))
        .unwrap()
        .len();
    assert!(
        counting.sent() <= container - (8 << 20) + (256 << 10),
        "{} bytes sent after the restart for a {container}-byte container: the stored chunk was sent again",
        counting.sent()
    );
}
