//! Remote vaults on a real S3 cluster: a three-node Garage cluster (`replication_factor = 3`) on
//! 127.0.0.1, started by each test (`common::Garage`), and the real `qeltrix` binary writing to
//! it and reading from it through `s3://BUCKET/KEY` — CLI readers, a FUSE mount and `serve` —
//! with every byte compared with the original. Then one node is SIGKILLed and everything must
//! still read and write.
//!
//! Every test is `#[ignore]`d: they need Garage (`$QELTRIX_GARAGE` or `garage` on PATH), FUSE
//! and ffmpeg, and take seconds each. `scripts/test.sh` runs them in a network namespace of
//! their own with delayed ACKs off on loopback (Garage sets no TCP_NODELAY, so each small
//! request would otherwise wait ~40 ms):
//!
//! ```text
//! cargo test --test remote_cluster -- --ignored --test-threads=1
//! ```
//!
//! Nodes are numbered from 0; node 0 is always the endpoint the clients use, so the node killed
//! is never the one they talk to. Guards undo every mount and end every process and node, also
//! when a test fails.

mod common;

use common::*;
use qeltrix::mount::mount_type;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The node every client talks to.
const ENDPOINT: usize = 0;
/// The node killed in the failure tests (not the endpoint).
const VICTIM: usize = 2;
const MIB: usize = 1024 * 1024;

/// A cluster, a working folder with the key file `key`, and `qeltrix` run against node 0.
struct Remote {
    g: Garage,
    w: Work,
}

impl Remote {
    fn new() -> Remote {
        Remote {
            g: Garage::cluster(),
            w: Work::with_key(),
        }
    }

    fn single_node() -> Remote {
        Remote {
            g: Garage::single_node(),
            w: Work::with_key(),
        }
    }

    /// `qeltrix ARGS` in the working folder with node 0's S3 variables.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = qeltrix_process();
        c.current_dir(self.w.dir.path()).args(args);
        self.g.apply_env(&mut c, ENDPOINT);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "qeltrix {args:?}: {}\nstdout: {}\nstderr: {}\ncluster:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.g.logs()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains(GARAGE_SECRET),
            "the secret in stderr of {args:?}: {err}"
        );
        out.stdout
    }

    /// Runs and requires failure; returns stderr (checked for the secret).
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "qeltrix {args:?} should fail\nstdout: {}\nstderr: {err}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_no_secret(&err, &format!("{args:?}"));
        assert_no_secret(&String::from_utf8_lossy(&out.stdout), &format!("{args:?}"));
        err
    }

    /// Packs local file `name` (in the working folder) to `s3://BUCKET/vault/NAME.qltx`.
    fn pack(&self, name: &str) -> String {
        let url = self.g.url(&format!("vault/{name}.qltx"));
        self.ok(&["pack", name, &url, "--key-file", "key"]);
        url
    }

    fn path(&self, name: &str) -> PathBuf {
        self.w.path(name)
    }
}

fn assert_no_secret(text: &str, what: &str) {
    assert!(
        !text.contains(GARAGE_SECRET),
        "the S3 secret appears in the output of {what}: {text}"
    );
}

/// The files of the test vault: name and bytes. A several-MiB file, an empty one, a small text
/// and a 60 s video.
fn vault_files(w: &Work) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        ("big.bin".to_string(), striped(6 * MIB + 12_345, 11, 50_000, 3)),
        ("empty.bin".to_string(), Vec::new()),
        ("notes.txt".to_string(), text_bytes(70_000, 5)),
    ];
    files.push(("video.mp4".to_string(), make_video(w)));
    for (name, bytes) in &files {
        if name != "video.mp4" {
            w.write(name, bytes);
        }
    }
    files
}

/// A 60-second test-pattern video made by ffmpeg in the working folder; returns its bytes.
fn make_video(w: &Work) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .current_dir(w.dir.path())
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=60:size=320x240:rate=10",
            "-c:v",
            "mpeg4",
            "-g",
            "20",
            "-y",
            "video.mp4",
        ])
        .output()
        .expect("run ffmpeg (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.read("video.mp4")
}

/// Deterministic (offset, length) pairs over a file of `len` bytes, including both ends.
fn offsets(len: usize, n: usize, seed: u64) -> Vec<(u64, usize)> {
    let mut rng = Rng::new(seed);
    let mut v = vec![(0, 1000), (len.saturating_sub(100) as u64, 200)];
    for _ in 0..n {
        let off = rng.below(len as u64 + 1);
        let l = 1 + rng.below(200_000) as usize;
        v.push((off, l));
    }
    v
}

/// A foreground `qeltrix mount`: SIGTERM on drop, then (should it hang) SIGKILL and a lazy
/// detach.
struct Mount {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
}

impl Mount {
    /// Mounts `source` on `mnt` through `r`'s node-0 environment; `None` without FUSE.
    fn start(r: &Remote, source: &str, mnt: &Path, extra: &[&str]) -> Option<Mount> {
        if !fuse_available() {
            return None;
        }
        fs::create_dir_all(mnt).unwrap();
        let log = mnt.with_extension("log");
        let mut args = vec!["mount", source, mnt.to_str().unwrap(), "--key-file", "key"];
        args.extend_from_slice(extra);
        let child = r
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            child,
            mnt: mnt.canonicalize().unwrap(),
            log,
        };
        let at = m.mnt.clone();
        wait_for_output("the mount to appear", &mut m.child, &m.log, |_| {
            mount_type(&at).map(|_| ())
        });
        Some(m)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            if try_wait_exit(&mut self.child).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        detach_mount(&self.mnt);
    }
}

/// A running `qeltrix serve`, its log in a file, killed on drop.
struct Serve {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Serve {
    fn start(r: &Remote, source: &str, extra: &[&str]) -> Serve {
        let log = r.path(&format!("serve-{}.log", unique_suffix()));
        let mut args = vec!["serve", source, "--key-file", "key", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = r
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let base = wait_for_output("the server to listen", &mut child, &log, |text| {
            let line = line_where(text, |l| l.contains("serving") && l.contains(" on http://"))?;
            let rest = line.split(" on http://").nth(1)?;
            let addr = rest.split('/').next()?;
            Some(format!("http://{addr}"))
        });
        Serve { child, base, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into()
}

/// GET `url` with an optional Range; the status and the body.
fn http_get(a: &ureq::Agent, url: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = a.get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap();
    (status, body)
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

/// Drops the kernel's cached pages of a file (so the next reads reach the mount, hence S3).
fn drop_page_cache(path: &Path) {
    let f = File::open(path).unwrap();
    // SAFETY: posix_fadvise on a descriptor we own.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Every file read whole and at many offsets through the mount, byte for byte.
fn check_mount(m: &Mount, files: &[(String, Vec<u8>)], seed: u64) {
    for (name, want) in files {
        let p = m.file(name);
        drop_page_cache(&p);
        let got =
            fs::read(&p).unwrap_or_else(|e| panic!("reading {name} through the mount: {e}\n{}", m.log()));
        assert!(got == *want, "{name}: whole read differs through the mount");
        drop_page_cache(&p);
        let f = File::open(&p).unwrap();
        for (off, len) in offsets(want.len(), 40, seed) {
            let mut buf = vec![0u8; len];
            let n = pread_full(&f, &mut buf, off)
                .unwrap_or_else(|e| panic!("{name}: pread {off}+{len}: {e}\n{}", m.log()));
            let start = (off as usize).min(want.len());
            let end = (start + len).min(want.len());
            assert_eq!(n, end - start, "{name}: pread {off}+{len} length");
            assert!(buf[..n] == want[start..end], "{name}: pread {off}+{len} differs");
        }
    }
}

/// `ffmpeg -ss 40` on the mounted video decodes a frame.
fn check_ffmpeg_seek(m: &Mount) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-ss", "40", "-i"])
        .arg(m.file("video.mp4"))
        .args(["-frames:v", "1", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg -ss 40 on the mount: {}\nmount log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
}

/// Every file whole and in many ranges through serve, byte for byte.
fn check_serve(s: &Serve, files: &[(String, Vec<u8>)], seed: u64) {
    let a = agent();
    for (name, want) in files {
        let url = format!("{}/{name}", s.base);
        let (status, body) = http_get(&a, &url, None);
        assert_eq!(status, 200, "GET {url}\n{}", s.log());
        assert!(body == *want, "{name}: whole GET differs");
        if want.is_empty() {
            continue;
        }
        for (off, len) in offsets(want.len(), 25, seed) {
            let start = (off as usize).min(want.len() - 1);
            let end = (start + len).min(want.len()) - 1;
            let range = format!("bytes={start}-{end}");
            let (status, body) = http_get(&a, &url, Some(&range));
            assert_eq!(status, 206, "GET {url} {range}\n{}", s.log());
            assert!(body == want[start..=end], "{name}: {range} differs");
        }
        let (status, body) = http_get(&a, &url, Some("bytes=-100"));
        assert_eq!(status, 206);
        assert!(
            body == want[want.len().saturating_sub(100)..],
            "{name}: suffix range"
        );
    }
}

/// The harness alone: the cluster forms, a node killed is noticed and the others keep
/// answering, the node restarted rejoins; and a single node starts.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn harness_cluster_forms_loses_a_node_and_gets_it_back() {
    let mut g = Garage::cluster();
    assert_eq!(g.len(), 3);
    assert!(g.list_objects(ENDPOINT, "").is_empty());
    assert!(g.pending_uploads(ENDPOINT).is_empty());
    g.kill(VICTIM);
    g.wait_storage_nodes_up(ENDPOINT, 2);
    for i in [0, 1] {
        let (status, body) = g.s3_get(i, &format!("/{GARAGE_BUCKET}?list-type=2"));
        assert_eq!(status, 200, "node {i} with a node down: {body}");
    }
    g.restart(VICTIM);
    assert_eq!(g.health(VICTIM).storage_nodes_up, 3);
    drop(g);

    let one = Garage::single_node();
    assert_eq!(one.len(), 1);
    assert!(one.list_objects(0, "").is_empty());
}

/// pack into the cluster, then info, verify, seek and unpack read it back byte for byte; the
/// empty file too; reencrypt writes a second object the new key opens.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn cli_readers_of_packed_objects_are_byte_exact() {
    let r = Remote::new();
    let files = vault_files(&r.w);
    let mut urls = Vec::new();
    for (name, _) in &files {
        urls.push(r.pack(name));
    }
    let listed = r.g.list_objects(ENDPOINT, "vault/");
    for (name, _) in &files {
        assert!(
            listed.contains(&format!("vault/{name}.qltx")),
            "{name} not in {listed:?}"
        );
    }
    assert!(r.g.pending_uploads(ENDPOINT).is_empty());

    for ((name, want), url) in files.iter().zip(&urls) {
        let info = String::from_utf8(r.ok(&["info", url])).unwrap();
        assert!(!info.trim().is_empty(), "info {url} printed nothing");
        r.ok(&["verify", url, "--key-file", "key"]);
        let out = format!("{name}.out");
        r.ok(&["unpack", url, &out, "--key-file", "key"]);
        assert!(r.w.read(&out) == *want, "{name}: unpack differs");
        // unpack to stdout too
        let stdout = r.ok(&["unpack", url, "-", "--key-file", "key"]);
        assert!(stdout == *want, "{name}: unpack - differs");
        if want.is_empty() {
            continue;
        }
        for (i, (off, len)) in offsets(want.len(), 6, 3).into_iter().enumerate() {
            let start = (off as usize).min(want.len());
            let end = (start + len).min(want.len());
            if end == start {
                continue;
            }
            let o = format!("{name}.seek{i}");
            r.ok(&[
                "seek",
                url,
                "--offset",
                &start.to_string(),
                "--length",
                &(end - start).to_string(),
                "-o",
                &o,
                "--key-file",
                "key",
            ]);
            assert!(
                r.w.read(&o) == want[start..end],
                "{name}: seek {start}+{}",
                end - start
            );
        }
    }

    // A wrong key is refused, naming no secret.
    r.w.write_key("other.key", 9);
    r.fails(&["verify", &urls[0], "--key-file", "other.key"]);

    // reencrypt from one object to another; the new key opens it, the old one no longer does.
    let (name, want) = &files[0];
    let moved = r.g.url(&format!("rekeyed/{name}.qltx"));
    r.ok(&[
        "reencrypt",
        &urls[0],
        &moved,
        "--key-file",
        "key",
        "--new-key-file",
        "other.key",
    ]);
    let back = r.ok(&["unpack", &moved, "-", "--key-file", "other.key"]);
    assert!(back == *want, "reencrypted {name} differs");
    r.fails(&["unpack", &moved, "-", "--key-file", "key"]);
}

/// The whole vault through a FUSE mount and through serve, byte for byte (whole reads, preads at
/// many offsets, HTTP ranges, an ffmpeg seek); then a node that is not the endpoint is SIGKILLed:
/// everything still reads, a new pack succeeds and reads back; then the node comes back.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn mount_and_serve_read_the_vault_and_survive_a_node_kill() {
    let mut r = Remote::new();
    let files = vault_files(&r.w);
    for (name, _) in &files {
        r.pack(name);
    }
    let vault = r.g.url("vault");
    // A 1 MiB block cache: reads after the kill must reach the cluster, not the cache.
    let mnt = r.path("mnt");
    let Some(m) = Mount::start(&r, &vault, &mnt, &["--cache-size", "1"]) else {
        return;
    };
    let s = Serve::start(&r, &vault, &["--cache-size", "1"]);
    check_mount(&m, &files, 1);
    check_ffmpeg_seek(&m);
    check_serve(&s, &files, 2);

    r.g.kill(VICTIM);
    check_mount(&m, &files, 3);
    check_ffmpeg_seek(&m);
    check_serve(&s, &files, 4);
    // Writes keep working with one node down (write quorum 2 of 3).
    let late = random_bytes(3 * MIB + 7, 99);
    r.w.write("late.bin", &late);
    let late_url = r.pack("late.bin");
    let back = r.ok(&["unpack", &late_url, "-", "--key-file", "key"]);
    assert!(
        back == late,
        "late.bin packed with a node down reads back differently"
    );
    // Its object is there, and no upload is left pending.
    assert!(r
        .g
        .list_objects(ENDPOINT, "vault/")
        .contains(&"vault/late.bin.qltx".to_string()));
    assert!(r.g.pending_uploads(ENDPOINT).is_empty());

    r.g.restart(VICTIM);
    check_serve(&s, &files, 5);
    let _ = (m.log(), s.log());
}

/// The S3 variables of node 0 with the secret replaced by a wrong one.
fn wrong_secret(c: &mut Command) {
    c.env("AWS_SECRET_ACCESS_KEY", "0".repeat(64));
}

/// Starts `qeltrix ARGS` (node 0's environment) with its stderr in `log`, writes 24 MiB (past
/// the first multipart parts whatever the part size) into `sink` (its stdin or a FIFO it
/// reads), keeps it open, sends SIGINT, and returns the exit status.
fn interrupt_mid_stream(
    r: &Remote,
    args: &[&str],
    stdin: Stdio,
    fifo: Option<&Path>,
    log: &Path,
) -> std::process::ExitStatus {
    let child = r
        .cmd(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let mut sink: Box<dyn Write> = match fifo {
        Some(p) => Box::new(File::options().write(true).open(p).unwrap()),
        None => Box::new(child.0.stdin.take().unwrap()),
    };
    let chunk = random_bytes(MIB, 3);
    for _ in 0..24 {
        sink.write_all(&chunk)
            .expect("pack stopped reading its input early");
    }
    sink.flush().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    let status = wait_exit(&mut child.0, &log.to_path_buf());
    drop(sink);
    status
}

/// `pack -` ended by SIGINT while its stdin still streams seals what arrived into a complete
/// container (the documented stream behaviour, exit 130): the object is a whole container of a
/// prefix of what was sent, and no multipart upload is left pending.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn sigint_on_pack_stdin_seals_the_object_and_leaves_no_pending_upload() {
    let r = Remote::new();
    let url = r.g.url("cut/stdin.qltx");
    let log = r.path("pack.log");
    let status = interrupt_mid_stream(
        &r,
        &["pack", "-", &url, "--key-file", "key"],
        Stdio::piped(),
        None,
        &log,
    );
    assert_no_secret(&log.text(), "pack - (SIGINT)");
    assert_eq!(
        r.g.pending_uploads(ENDPOINT),
        Vec::<String>::new(),
        "pending uploads after SIGINT ({status}); pack's stderr:\n{}",
        log.text()
    );
    assert_eq!(
        status.code(),
        Some(130),
        "pack - stopped by SIGINT should seal and exit 130; pack's stderr:\n{}",
        log.text()
    );
    let back = r.ok(&["unpack", &url, "-", "--key-file", "key"]);
    let sent: Vec<u8> = random_bytes(MIB, 3).repeat(24);
    assert!(
        !back.is_empty() && sent.starts_with(&back),
        "the sealed object ({} bytes) is not a prefix of what was sent",
        back.len()
    );
}

/// `pack FIFO s3://…` (a named input, not a stream) ended by SIGINT after several parts went
/// up leaves no object and no pending multipart upload.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn an_interrupted_upload_leaves_no_object_and_no_pending_upload() {
    let r = Remote::new();
    let fifo = r.path("input.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a path in our own temporary folder.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let url = r.g.url("cut/fifo.qltx");
    let log = r.path("pack.log");
    let status = interrupt_mid_stream(
        &r,
        &["pack", "input.fifo", &url, "--key-file", "key"],
        Stdio::null(),
        Some(&fifo),
        &log,
    );
    assert!(!status.success(), "pack interrupted by SIGINT succeeded");
    assert_no_secret(&log.text(), "pack FIFO (SIGINT)");
    assert!(
        !r.g.list_objects(ENDPOINT, "cut/")
            .contains(&"cut/fifo.qltx".to_string()),
        "an interrupted pack ({status}) left an object; pack's stderr:\n{}",
        log.text()
    );
    assert_eq!(
        r.g.pending_uploads(ENDPOINT),
        Vec::<String>::new(),
        "pending uploads after SIGINT ({status}); pack's stderr:\n{}",
        log.text()
    );
}

/// A pack whose input fails to read (a directory as stdin: EISDIR on the first read) leaves no
/// object and no pending multipart upload. (It fails before any part is sent; a read error in
/// mid-stream has no deterministic source here, so the SIGINT test covers the mid-stream case.)
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn a_pack_whose_input_fails_leaves_no_object_and_no_pending_upload() {
    let r = Remote::new();
    let url = r.g.url("cut/dir.qltx");
    let dir = File::open(r.w.dir.path()).unwrap();
    let out = r
        .cmd(&["pack", "-", &url, "--key-file", "key"])
        .stdin(Stdio::from(dir))
        .output()
        .unwrap();
    assert!(!out.status.success(), "pack - from a directory succeeded");
    assert_no_secret(&String::from_utf8_lossy(&out.stderr), "pack - (EISDIR)");
    assert!(
        r.g.list_objects(ENDPOINT, "cut/").is_empty(),
        "a failed pack left an object"
    );
    assert!(
        r.g.pending_uploads(ENDPOINT).is_empty(),
        "a failed pack left an upload"
    );
}

/// A mount of an endpoint nobody listens on fails at start, non-zero, with a clear message
/// naming the endpoint and not the secret; so do the CLI readers. A wrong secret is refused
/// without echoing it.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn unreachable_endpoints_and_wrong_credentials_fail_clearly_without_the_secret() {
    let r = Remote::new();
    r.w.write("f.bin", &random_bytes(100_000, 1));
    let url = r.pack("f.bin");

    // A closed port: bound then released.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let mnt = r.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    if fuse_available() {
        let mut c = r.cmd(&["mount", &r.g.url("vault"), "mnt", "--key-file", "key"]);
        c.env("AWS_ENDPOINT_URL", &endpoint);
        let out = c.stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "mount of an unreachable endpoint succeeded: {err}"
        );
        assert!(mount_type(&mnt).is_none(), "a mount is left after the failure");
        assert!(
            err.contains(&closed.to_string()) || err.contains("s3://"),
            "the error names neither the endpoint nor the location: {err}"
        );
        assert_no_secret(&err, "mount (unreachable)");
    }
    for args in [
        vec!["info", url.as_str()],
        vec!["unpack", url.as_str(), "-", "--key-file", "key"],
    ] {
        let mut c = r.cmd(&args);
        c.env("AWS_ENDPOINT_URL", &endpoint);
        let out = c.stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} against a closed port succeeded");
        assert_no_secret(&err, &format!("{args:?} (unreachable)"));
        assert!(!err.trim().is_empty(), "{args:?}: no message");
    }
    // The global flag names the endpoint too.
    let out = r
        .cmd(&["--s3-endpoint", &endpoint, "info", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "--s3-endpoint to a closed port succeeded");
    assert_no_secret(&String::from_utf8_lossy(&out.stderr), "--s3-endpoint");

    // A wrong secret: refused (403), the secret — right or wrong — never printed.
    for args in [
        vec!["info", url.as_str()],
        vec!["unpack", url.as_str(), "-", "--key-file", "key"],
    ] {
        let mut c = r.cmd(&args);
        wrong_secret(&mut c);
        let out = c.stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} with a wrong secret succeeded");
        assert!(!err.contains(&"0".repeat(64)), "the wrong secret echoed: {err}");
        assert_no_secret(&err, &format!("{args:?} (wrong secret)"));
    }
    // A missing object: a clear error naming it.
    let missing = r.g.url("vault/missing.qltx");
    let err = r.fails(&["info", &missing]);
    assert!(
        err.contains("missing.qltx"),
        "the error does not name the object: {err}"
    );
}

/// The single-node variant: pack and unpack round trip.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn a_single_node_round_trip() {
    let r = Remote::single_node();
    let data = striped(2 * MIB + 3, 4, 50_000, 3);
    r.w.write("s.bin", &data);
    let url = r.pack("s.bin");
    assert!(r.ok(&["unpack", &url, "-", "--key-file", "key"]) == data);
}

/// When the store goes away under a running mount and server (the single node SIGKILLed), reads
/// that need it fail: `EIO` through the mount, and through serve an error status or a response
/// cut short. Never wrong bytes: what does arrive matches the file.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn reads_after_the_store_is_gone_fail_with_eio_and_a_cut_response_never_wrong_bytes() {
    let mut r = Remote::single_node();
    let data = random_bytes(6 * MIB, 21);
    r.w.write("gone.bin", &data);
    r.pack("gone.bin");
    let vault = r.g.url("vault");
    // A 1 MiB cache: almost nothing the reads below need is kept.
    let mnt = r.path("mnt-gone");
    let Some(m) = Mount::start(&r, &vault, &mnt, &["--cache-size", "1"]) else {
        eprintln!("no FUSE here: skipping the mount half");
        return;
    };
    let s = Serve::start(&r, &vault, &["--cache-size", "1"]);
    let file = File::open(m.file("gone.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    pread_full(&file, &mut head, 0).unwrap();
    assert_eq!(head, data[..4096], "the read before the kill");

    r.g.kill(0);
    drop_page_cache(&m.file("gone.bin"));
    let mut buf = vec![0u8; 64 * 1024];
    // Block 5 is in no cache (1 MiB of blocks, page cache dropped): the read must fail.
    let e = pread_full(&file, &mut buf, 5 * MIB as u64)
        .expect_err("a read of an uncached block succeeded with the store gone");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let (status, body) = http_get_partial(&format!("{}/gone.bin", s.base), "bytes=3145728-");
    assert!(
        status == 0 || status >= 500 || body.len() < data.len() - 3 * MIB,
        "serve answered {status} with all {} bytes though the store is gone",
        body.len()
    );
    if (200..300).contains(&status) {
        assert_eq!(
            body,
            data[3 * MIB..3 * MIB + body.len()],
            "serve sent wrong bytes"
        );
    }
    drop(file);
    assert!(
        m.log().contains("127.0.0.1"),
        "the mount's log does not name the endpoint:\n{}",
        m.log()
    );
}

/// Credentials from a profile file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE), and the region and
/// endpoint from the config file, with none of the AWS_* variables set.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn credentials_and_endpoint_come_from_the_profile_files() {
    let r = Remote::single_node();
    r.w.write("p.bin", &random_bytes(300_000, 5));
    let url = r.pack("p.bin");
    let creds = r.path("credentials");
    let config = r.path("config");
    fs::write(
        &creds,
        format!("[default]\naws_access_key_id = nope\n\n[media]\naws_access_key_id = {GARAGE_KEY_ID}\naws_secret_access_key = {GARAGE_SECRET}\n"),
    )
    .unwrap();
    fs::write(
        &config,
        format!(
            "[profile media]\nregion = {GARAGE_REGION}\nendpoint_url = {}\n",
            r.g.endpoint(ENDPOINT)
        ),
    )
    .unwrap();
    let mut c = r.cmd(&[
        "seek",
        &url,
        "--offset",
        "1000",
        "--length",
        "100",
        "-o",
        "-",
        "--key-file",
        "key",
    ]);
    for (k, _) in r.g.env(ENDPOINT) {
        c.env_remove(k);
    }
    let out = c
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_PROFILE", "media")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seek with profile credentials: {err}");
    assert_eq!(out.stdout, random_bytes(300_000, 5)[1000..1100]);
    assert_no_secret(&err, "seek with a profile");
    // No credentials anywhere: refused at once, saying where they are looked for.
    let mut c = r.cmd(&["info", &url]);
    for (k, _) in r.g.env(ENDPOINT) {
        c.env_remove(k);
    }
    let out = c
        .env("AWS_ENDPOINT_URL", r.g.endpoint(ENDPOINT))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
}

/// GET with a Range that may fail midway: the status (0 if the request itself failed) and the
/// body bytes that arrived before the response ended or was cut.
fn http_get_partial(url: &str, range: &str) -> (u16, Vec<u8>) {
    let Ok(mut resp) = agent().get(url).header("Range", range).call() else {
        return (0, Vec::new());
    };
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match io::Read::read(&mut reader, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    (status, body)
}

/// `qeltrix watch` into an S3 vault: files packed at their mirrored keys (one over a multipart
/// part), an update keeping the previous version, a delete moved to the trash, the state in the
/// vault's `.qeltrix/`, and no pending upload left.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn watch_packs_an_inbox_into_an_s3_vault_with_versions_and_a_trash() {
    let r = Remote::single_node();
    let big = striped(10 * MIB + 5, 8, 40_000, 2);
    r.w.write("inbox/a/one.txt", b"one, first");
    r.w.write("inbox/two.bin", &big);
    let vault = r.g.url("wv");
    // `watch inbox --vault VAULT --once --json EXTRA...`: its event lines.
    let watch = |r: &Remote, extra: &[&str]| {
        let out = r
            .cmd(&[
                "watch",
                "inbox",
                "--vault",
                &vault,
                "--key-file",
                "key",
                "--once",
                "--json",
            ])
            .args(extra)
            .env("XDG_STATE_HOME", r.path("state-home"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_no_secret(&stderr, "watch");
        String::from_utf8(out.stdout).unwrap()
    };
    let once = |r: &Remote| {
        watch(
            r,
            &[
                "--keep-versions",
                "1",
                "--on-delete",
                "trash",
                "--state",
                "state.json",
            ],
        )
    };
    let first = once(&r);
    assert_eq!(first.matches("\"event\":\"packed\"").count(), 2, "{first}");
    let mut listed = r.g.list_objects(ENDPOINT, "wv/");
    listed.sort();
    assert_eq!(
        listed,
        ["wv/a/one.txt.qltx", "wv/two.bin.qltx"],
        "the state is local here (--state)"
    );
    assert!(r.ok(&["unpack", &r.g.url("wv/two.bin.qltx"), "-", "--key-file", "key"]) == big);

    r.w.write("inbox/a/one.txt", b"one, second version");
    fs::remove_file(r.path("inbox/two.bin")).unwrap();
    let second = once(&r);
    assert!(second.contains("\"event\":\"trashed\""), "{second}");
    let mut listed = r.g.list_objects(ENDPOINT, "wv/");
    listed.sort();
    assert_eq!(
        listed,
        [
            "wv/.qeltrix/trash/two.bin.qltx",
            "wv/a/one.txt.qltx",
            "wv/a/one.txt.qltx.~1~"
        ]
    );
    assert_eq!(
        r.ok(&["unpack", &r.g.url("wv/a/one.txt.qltx"), "-", "--key-file", "key"]),
        b"one, second version"
    );
    assert_eq!(
        r.ok(&[
            "unpack",
            &r.g.url("wv/a/one.txt.qltx.~1~"),
            "-",
            "--key-file",
            "key"
        ]),
        b"one, first"
    );
    assert!(r.g.pending_uploads(ENDPOINT).is_empty());

    // Without --state, the state lives in the vault, and a second run finds nothing to do.
    let plain = |r: &Remote| watch(r, &[]);
    let third = plain(&r);
    assert!(r
        .g
        .list_objects(ENDPOINT, "wv/.qeltrix/")
        .contains(&"wv/.qeltrix/watch-state.json".to_string()));
    assert!(
        third.contains("\"event\":\"packed\"") || third.contains("\"event\":\"unchanged\""),
        "{third}"
    );
    let fourth = plain(&r);
    assert!(!fourth.contains("\"event\":\"packed\""), "nothing new: {fourth}");
}

/// The watcher sending through a keyless `serve --accept-uploads` whose vault is on S3: chunks
/// staged as objects, the container assembled into the bucket after the keyless check, the
/// staged chunks removed.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn watch_uploads_through_a_keyless_server_into_an_s3_vault() {
    let r = Remote::single_node();
    fs::write(r.path("token"), "a-token-for-uploads\n").unwrap();
    let big = striped(9 * MIB + 7, 5, 30_000, 2);
    r.w.write("inbox/a/big.bin", &big);
    r.w.write("inbox/small.txt", b"small");
    let log = r.path("serve.log");
    let server = r
        .cmd(&[
            "serve",
            &r.g.url("up"),
            "--listen",
            "127.0.0.1:0",
            "--accept-uploads",
            "--no-key",
            "--token-file",
            "token",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Reaped(server);
    let addr: std::net::SocketAddr = serve_addr(&mut server.0, &log);
    let out = qeltrix_process()
        .current_dir(r.w.dir.path())
        .args([
            "watch",
            "inbox",
            "--vault",
            &format!("http://{addr}/"),
            "--token-file",
            "token",
        ])
        .args(["--key-file", "key", "--once", "--json", "--state", "state.json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.text()
    );
    let mut listed = r.g.list_objects(ENDPOINT, "up/");
    listed.sort();
    assert_eq!(
        listed,
        ["up/a/big.bin.qltx", "up/small.txt.qltx"],
        "staged chunks are removed"
    );
    assert!(r.ok(&["unpack", &r.g.url("up/a/big.bin.qltx"), "-", "--key-file", "key"]) == big);
    r.ok(&["verify", "--no-key", &r.g.url("up/small.txt.qltx")]);
    assert!(r.g.pending_uploads(ENDPOINT).is_empty());
    assert_no_secret(&log.text(), "serve --accept-uploads");
    assert!(
        !log.text().contains("a-token-for-uploads"),
        "the token is not logged"
    );
}

/// Detaches whatever is mounted at its path when dropped.
struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        detach_mount(&self.0);
    }
}

/// `renameat2(2)` with `flags`, the error it gave.
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (a, b) = (
        std::ffi::CString::new(from.as_os_str().as_encoded_bytes()).unwrap(),
        std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).unwrap(),
    );
    // SAFETY: two valid C strings, descriptors AT_FDCWD.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The plaintext of the object `vault/NAME.qltx`, read by `qeltrix unpack` (not the mount).
fn object_plaintext(r: &Remote, name: &str) -> Vec<u8> {
    r.ok(&[
        "unpack",
        &r.g.url(&format!("vault/{name}.qltx")),
        "-",
        "--key-file",
        "key",
    ])
}

/// `qeltrix mount s3://… --read-write`: each file is uploaded whole when closed, as a container
/// the CLI reads; edits, truncation, renames of files and folders, removal, folders, an
/// editor-style save and `cp -a` of a tree all reach the bucket; a second read-write mount is
/// refused while the first holds its lease, which is gone after the unmount, with no upload
/// left pending; a read-only mount then shows every file as written.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn a_read_write_mount_of_a_bucket_uploads_each_file_when_closed() {
    let r = Remote::new();
    let old = random_bytes(3 * MIB + 11, 31);
    r.w.write("old.bin", &old);
    r.pack("old.bin");
    let vault = r.g.url("vault");
    let mnt = r.path("mnt-rw");
    let Some(m) = Mount::start(&r, &vault, &mnt, &["--read-write"]) else {
        eprintln!("no FUSE here: skipping");
        return;
    };
    let objects = || r.g.list_objects(ENDPOINT, "vault/");
    let has = |key: &str| objects().contains(&format!("vault/{key}"));

    // One writer per vault: the lease refuses a second read-write mount, naming the holder.
    // (With --daemon, so that a mount that wrongly comes up returns; the guard undoes it.)
    let mnt2 = r.path("mnt-rw2");
    fs::create_dir_all(&mnt2).unwrap();
    let _undo = Detach(mnt2.canonicalize().unwrap());
    let err = r.fails(&[
        "mount",
        &vault,
        mnt2.to_str().unwrap(),
        "--key-file",
        "key",
        "--read-write",
        "--daemon",
    ]);
    assert!(err.contains("mounted read-write by"), "second mount: {err}");
    assert!(mount_type(&mnt2).is_none(), "the second mount is in place");

    // A new file: on close, the object holds it.
    let new = random_bytes(5 * MIB + 3, 32);
    fs::write(m.file("new.bin"), &new).unwrap();
    assert!(object_plaintext(&r, "new.bin") == new, "new.bin as uploaded");

    // An edit in the middle and one past the end of an existing file, then a truncation.
    let mut model = old.clone();
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.file("old.bin"))
            .unwrap();
        f.write_all_at(b"edited in the middle", MIB as u64 + 5).unwrap();
        model[MIB + 5..MIB + 25].copy_from_slice(b"edited in the middle");
        f.write_all_at(b"tail", model.len() as u64 + 100).unwrap();
        model.resize(model.len() + 100, 0);
        model.extend_from_slice(b"tail");
        f.sync_all().unwrap();
        // fsync returned: the upload is in the bucket before the close.
        assert!(object_plaintext(&r, "old.bin") == model, "old.bin after fsync");
        f.set_len(2 * MIB as u64 + 1).unwrap();
        model.truncate(2 * MIB + 1);
    }
    assert!(
        object_plaintext(&r, "old.bin") == model,
        "old.bin after the truncation"
    );
    assert!(
        fs::read(m.file("old.bin")).unwrap() == model,
        "old.bin through the mount"
    );

    // A mode change is kept in the container's record.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.file("new.bin"), fs::Permissions::from_mode(0o600)).unwrap();

    // An editor's save: a temporary file written and synced, renamed over the original.
    let saved = b"the saved document".to_vec();
    {
        let mut t = File::create(m.file(".doc.swp")).unwrap();
        t.write_all(&saved).unwrap();
        t.sync_all().unwrap();
    }
    fs::write(m.file("doc.txt"), b"the first draft").unwrap();
    fs::rename(m.file(".doc.swp"), m.file("doc.txt")).unwrap();
    assert!(
        has("doc.txt.qltx") && !has(".doc.swp.qltx"),
        "after the save: {:?}",
        objects()
    );
    assert!(object_plaintext(&r, "doc.txt") == saved);

    // cp -a of a tree, then diff -r through the mount.
    let tree = r.path("tree");
    fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    fs::write(tree.join("top.txt"), b"top").unwrap();
    fs::write(tree.join("sub/mid.bin"), random_bytes(200_000, 33)).unwrap();
    fs::write(tree.join("sub/deeper/low.bin"), random_bytes(MIB + 1, 34)).unwrap();
    fs::write(tree.join("sub/deeper/empty"), b"").unwrap();
    let into = m.file("tree");
    run_ok("cp", &["-a".as_ref(), tree.as_os_str(), into.as_os_str()]);
    assert_diff_r(&tree, &m.file("tree"));
    assert!(has("tree/sub/deeper/low.bin.qltx") && has("tree/sub/deeper/empty.qltx"));

    // Renames: a file, then a folder (every object under it moves).
    fs::rename(m.file("new.bin"), m.file("renamed.bin")).unwrap();
    assert!(has("renamed.bin.qltx") && !has("new.bin.qltx"), "{:?}", objects());
    fs::rename(m.file("tree"), m.file("moved")).unwrap();
    let keys = objects();
    assert!(
        keys.iter().all(|k| !k.starts_with("vault/tree/"))
            && keys.contains(&"vault/moved/sub/deeper/low.bin.qltx".to_string()),
        "after the folder rename: {keys:?}"
    );
    assert_diff_r(&tree, &m.file("moved"));
    // RENAME_NOREPLACE over a file that exists; RENAME_EXCHANGE, which an object store cannot do.
    let e = rename2(&m.file("doc.txt"), &m.file("old.bin"), libc::RENAME_NOREPLACE).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    let e = rename2(&m.file("doc.txt"), &m.file("old.bin"), libc::RENAME_EXCHANGE).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");

    // Folders: an empty one lives in the mount; a full one is not removed; removal of a file.
    fs::create_dir(m.file("empty-dir")).unwrap();
    assert!(m.file("empty-dir").is_dir());
    fs::rename(m.file("empty-dir"), m.file("renamed-dir")).unwrap();
    assert!(m.file("renamed-dir").is_dir() && !m.file("empty-dir").exists());
    fs::remove_dir(m.file("renamed-dir")).unwrap();
    let e = fs::remove_dir(m.file("moved/sub")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    fs::remove_file(m.file("moved/top.txt")).unwrap();
    assert!(!has("moved/top.txt.qltx"));
    assert!(fs::metadata(m.file("moved/top.txt")).is_err());
    let log = m.log();
    drop(m);

    // The lease is gone with the mount, and nothing is left half uploaded.
    let keys = objects();
    assert!(
        !keys.iter().any(|k| k.contains("mount.lock")),
        "the lease outlived the mount: {keys:?}\n{log}"
    );
    assert!(r.g.pending_uploads(ENDPOINT).is_empty(), "pending uploads");
    assert_no_secret(&log, "the read-write mount's log");

    // Mounted again, read-only: every file as written, with its mode.
    let Some(m) = Mount::start(&r, &vault, &mnt, &[]) else {
        return;
    };
    assert!(fs::read(m.file("old.bin")).unwrap() == model, "old.bin remounted");
    assert!(
        fs::read(m.file("renamed.bin")).unwrap() == new,
        "renamed.bin remounted"
    );
    assert!(fs::read(m.file("doc.txt")).unwrap() == saved, "doc.txt remounted");
    let mode = fs::metadata(m.file("renamed.bin")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the mode set through the read-write mount");
    fs::remove_file(tree.join("top.txt")).unwrap();
    assert_diff_r(&tree, &m.file("moved"));
}

/// With the store gone, a read-write mount's `fsync` (an upload) fails with `EIO` and nothing of
/// the file is lost: once the store is back, the next `fsync` uploads it whole, and a later edit
/// goes up too. The vault starts empty (a read-write mount takes one).
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn a_failed_upload_is_the_syncs_eio_and_the_next_commit_sends_the_file() {
    let mut r = Remote::single_node();
    let vault = r.g.url("vault");
    let mnt = r.path("mnt-rw-gone");
    let Some(m) = Mount::start(&r, &vault, &mnt, &["--read-write"]) else {
        eprintln!("no FUSE here: skipping");
        return;
    };
    let mut model = random_bytes(2 * MIB + 5, 41);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.file("f.bin"))
        .unwrap();
    f.write_all(&model).unwrap();

    r.g.kill(0);
    let e = f.sync_all().expect_err("an fsync succeeded with the store gone");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        m.log().contains("f.bin") && m.log().contains("127.0.0.1"),
        "the mount's log names neither the file nor the endpoint:\n{}",
        m.log()
    );
    // The mount still has the file.
    let mut back = vec![0u8; model.len()];
    pread_full(&f, &mut back, 0).unwrap();
    assert!(
        back == model,
        "the file read back through the mount after the failed upload"
    );

    r.g.restart(0);
    f.sync_all().unwrap();
    assert!(
        object_plaintext(&r, "f.bin") == model,
        "f.bin after the store came back"
    );
    f.write_all_at(b"later", 7).unwrap();
    model[7..12].copy_from_slice(b"later");
    drop(f);
    assert!(object_plaintext(&r, "f.bin") == model, "f.bin after a later edit");
    assert!(r.g.pending_uploads(ENDPOINT).is_empty(), "pending uploads");
    assert_no_secret(&m.log(), "the read-write mount's log");
}

/// Capability revocation lists on the store (docs/CAPABILITIES.md): `cap revoke --list s3://…`
/// creates and updates the signed list through the storage seam, and `serve --cap-root
/// --cap-revocations s3://…` over the s3 vault loads it at start and again on SIGHUP, refusing
/// the newly revoked token and publishing the list.
#[test]
#[ignore = "needs Garage; scripts/test.sh runs it"]
fn capability_revocations_live_on_the_store() {
    let r = Remote::single_node();
    r.w.write("a.bin", &random_bytes(100_000, 5));
    r.pack("a.bin");
    r.ok(&["keygen", "--ed25519", "-o", "root.key"]);
    r.ok(&[
        "cap",
        "issue",
        "--root",
        "root.key",
        "--path",
        "/",
        "-o",
        "everything",
    ]);
    r.ok(&[
        "cap", "issue", "--root", "root.key", "--path", "/other/", "-o", "other",
    ]);
    let list = r.g.url("caps/revoked.json");
    let out = r.ok(&["cap", "revoke", "other", "--root", "root.key", "--list", &list]);
    assert!(String::from_utf8_lossy(&out).contains("sequence 1"));
    let mut s = Serve::start(
        &r,
        &r.g.url("vault"),
        &[
            "--cap-root",
            "root.key",
            "--cap-revocations",
            &list,
            "--cap-reload",
            "3600",
        ],
    );
    let token = fs::read_to_string(r.path("everything"))
        .unwrap()
        .trim()
        .to_string();
    let get = |path: &str| {
        let mut resp = agent()
            .get(format!("{}{path}", s.base))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    };
    assert_eq!(get("/a.bin").0, 200);
    r.ok(&[
        "cap",
        "revoke",
        "everything",
        "--root",
        "root.key",
        "--list",
        &list,
    ]);
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) }, 0);
    wait_for_text(&mut s.child, &s.log, "loaded sequence 2");
    let (status, body) = get("/a.bin");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let (status, list) = get("/revocations.json");
    assert_eq!(status, 200);
    assert!(list.contains("\"sequence\": 2"), "{list}");
}
