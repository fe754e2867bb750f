//! Remote `http://` containers, read-only, from a real nginx: `info`, `verify`, `seek`, `unpack`,
//! `serve` and `mount` of `http://127.0.0.1:PORT/NAME.qltx`, every byte compared with the
//! original; a missing URL; a container replaced on the server while it is being read.
//!
//! nginx (Debian `nginx-light`; `scripts/test.sh` installs it) runs in the foreground as the
//! test's user with a generated configuration in a temporary folder, on a free port of
//! 127.0.0.1, serving containers the test packs. Without nginx the tests skip with a message,
//! except under CI (`CI=true`), where that is a failure.

mod common;

use common::*;
use qeltrix::mount::mount_type;
use std::fs::{self, File};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const KIB: usize = 1024;

/// The nginx binary, or `None` (skip) when it is not installed outside CI.
fn nginx_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("nginx"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("nginx is missing under CI: apt-get install nginx-light");
        }
        eprintln!("skipping: nginx is not installed (apt-get install nginx-light)");
    }
    found
}

/// A foreground nginx serving `root` on 127.0.0.1, killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx on a free port serving `dir/www`, with its configuration, pid file, logs and
    /// temporary files in `dir`. Returns once it accepts connections.
    fn start(dir: &Path) -> Option<Nginx> {
        let bin = nginx_binary()?;
        fs::create_dir_all(dir.join("www")).unwrap();
        fs::create_dir_all(dir.join("tmp")).unwrap();
        // A port taken between our probe and nginx's bind is retried with another.
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let conf = dir.join("nginx.conf");
            let d = dir.display();
            // As root, nginx's workers would switch to `nobody`, who cannot read the test's
            // private temporary folder; as anyone else the directive would be ignored.
            // SAFETY: geteuid has no preconditions.
            let user = if unsafe { libc::geteuid() } == 0 {
                "user root;"
            } else {
                ""
            };
            fs::write(
                &conf,
                format!(
                    r#"{user}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ application/octet-stream qltx; }}
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
    }}
}}
"#
                ),
            )
            .unwrap();
            let log = dir.join("nginx.stderr");
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .expect("start nginx");
            let mut up = false;
            wait_until("nginx to listen or exit", || {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    return true;
                }
                child.try_wait().unwrap().is_some()
            });
            if up {
                return Some(Nginx {
                    child,
                    port,
                    dir: dir.to_path_buf(),
                });
            }
            let err = fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                + &fs::read_to_string(&log).unwrap_or_default();
            assert!(
                err.contains("Address already in use"),
                "nginx did not start:\n{err}"
            );
        }
        panic!("nginx found no free port in 5 tries");
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn www(&self, name: &str) -> PathBuf {
        self.dir.join("www").join(name)
    }

    fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown (master and workers); SIGKILL would orphan workers.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if try_wait_exit(&mut self.child).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A working folder with key `key`, an nginx serving `www/`, and containers packed into it.
struct Site {
    w: Work,
    nginx: Nginx,
}

impl Site {
    fn new() -> Option<Site> {
        let w = Work::with_key();
        let nginx = Nginx::start(&w.path("nginx"))?;
        Some(Site { w, nginx })
    }

    /// Packs `bytes` as `www/NAME.qltx` with the CLI (64 KiB blocks); returns its URL.
    fn publish(&self, name: &str, bytes: &[u8]) -> String {
        let plain = self.w.write(&format!("{name}.plain"), bytes);
        let dest = self.nginx.www(&format!("{name}.qltx"));
        let tmp = self.w.path(&format!("{name}.qltx"));
        let _ = fs::remove_file(&tmp);
        self.w.ok(&format!(
            "pack {} {} --key-file key --block-size 64",
            plain.display(),
            tmp.display()
        ));
        // Moved into place whole, as a deployment would.
        fs::rename(&tmp, &dest).unwrap();
        self.nginx.url(&format!("{name}.qltx"))
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = qeltrix_process();
        c.current_dir(self.w.dir.path()).args(args).stdin(Stdio::null());
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "qeltrix {args:?}: {}\nstdout: {}\nstderr: {}\nnginx access log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.nginx.access_log()
        );
        out.stdout
    }
}

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("big.bin", striped(3 * 1024 * KIB + 1234, 21, 50_000, 3)),
        ("small.txt", text_bytes(5_000, 2)),
        ("empty.bin", Vec::new()),
    ]
}

/// Deterministic (start, end) ranges inside a file of `len` > 0 bytes, both ends included.
fn ranges(len: usize, n: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = Rng::new(seed);
    let mut v = vec![(0, len.min(1000)), (len.saturating_sub(10), len)];
    for _ in 0..n {
        let start = rng.below(len as u64) as usize;
        let end = (start + 1 + rng.below(150_000) as usize).min(len);
        v.push((start, end));
    }
    v
}

#[test]
fn info_verify_seek_and_unpack_of_http_containers_are_byte_exact() {
    let Some(site) = Site::new() else { return };
    for (name, want) in files() {
        let url = site.publish(name, &want);
        let info = String::from_utf8(site.ok(&["info", &url])).unwrap();
        assert!(!info.trim().is_empty(), "info {url} printed nothing");
        site.ok(&["verify", &url, "--key-file", "key"]);
        let out = format!("{name}.out");
        site.ok(&["unpack", &url, &out, "--key-file", "key"]);
        assert!(site.w.read(&out) == want, "{name}: unpack differs");
        assert!(
            site.ok(&["unpack", &url, "-", "--key-file", "key"]) == want,
            "{name}: unpack - differs"
        );
        if want.is_empty() {
            continue;
        }
        for (i, (start, end)) in ranges(want.len(), 5, 7).into_iter().enumerate() {
            let o = format!("{name}.seek{i}");
            site.ok(&[
                "seek",
                &url,
                "--offset",
                &start.to_string(),
                "--length",
                &(end - start).to_string(),
                "-o",
                &o,
                "--key-file",
                "key",
            ]);
            assert!(site.w.read(&o) == want[start..end], "{name}: seek {start}..{end}");
        }
    }
    // The readers asked for ranges (nginx logs 206), not only for whole containers.
    assert!(
        site.nginx.access_log().contains(" 206 "),
        "no ranged request reached nginx"
    );
}

/// A running `qeltrix serve` of one URL, killed on drop.
struct Serve {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Serve {
    fn start(site: &Site, source: &str, extra: &[&str]) -> Serve {
        let log = site.w.path(&format!("serve-{}.log", unique_suffix()));
        let mut c = qeltrix_process();
        c.current_dir(site.w.dir.path())
            .args(["serve", source, "--key-file", "key", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        let mut child = c.spawn().unwrap();
        let base = wait_for_output("the server to listen", &mut child, &log, |text| {
            let line = line_where(text, |l| l.contains("serving") && l.contains(" on http://"))?;
            let addr = line.split(" on http://").nth(1)?.split('/').next()?.to_string();
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

/// GET with an optional Range: the status and the body, or the transport error as text.
fn http_get(a: &ureq::Agent, url: &str, range: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    let mut req = a.get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// The path under which `serve http://HOST/NAME.qltx` shows its one file: `/NAME`.
fn served_url(s: &Serve, name: &str) -> String {
    format!("{}/{name}", s.base)
}

#[test]
fn serve_of_an_http_container_answers_ranges_byte_exact() {
    let Some(site) = Site::new() else { return };
    let (name, want) = files().swap_remove(0);
    let url = site.publish(name, &want);
    let s = Serve::start(&site, &url, &[]);
    let a = agent();
    let file_url = served_url(&s, name);
    let (status, body) = http_get(&a, &file_url, None).unwrap();
    assert_eq!(
        status,
        200,
        "GET {file_url} (listing: {:?})\n{}",
        http_get(&a, &format!("{}/", s.base), None)
            .map(|(st, b)| (st, String::from_utf8_lossy(&b).into_owned())),
        s.log()
    );
    assert!(body == want, "whole GET differs");
    for (start, end) in ranges(want.len(), 30, 9) {
        let range = format!("bytes={start}-{}", end - 1);
        let (status, body) = http_get(&a, &file_url, Some(&range)).unwrap();
        assert_eq!(status, 206, "{range}\n{}", s.log());
        assert!(body == want[start..end], "{range} differs");
    }
}

#[test]
fn mount_of_an_http_container_reads_byte_exact() {
    let Some(site) = Site::new() else { return };
    if !fuse_available() {
        return;
    }
    let (name, want) = files().swap_remove(0);
    let url = site.publish(name, &want);
    let mnt = site.w.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let log = site.w.path("mount.log");
    let mut c = qeltrix_process();
    c.current_dir(site.w.dir.path())
        .args(["mount", &url, "mnt", "--key-file", "key"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap());
    let mut m = Mounted {
        child: c.spawn().unwrap(),
        mnt: mnt.canonicalize().unwrap(),
    };
    let at = m.mnt.clone();
    wait_for_output("the mount to appear", &mut m.child, &log, |_| {
        mount_type(&at).map(|_| ())
    });
    let got = fs::read(m.mnt.join(name)).unwrap_or_else(|e| {
        panic!(
            "reading {name} through the mount: {e}; listing {:?}\n{}",
            fs::read_dir(&m.mnt).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
            log.text()
        )
    });
    assert!(got == want, "whole read through the mount differs");
    let f = File::open(m.mnt.join(name)).unwrap();
    for (start, end) in ranges(want.len(), 30, 13) {
        let mut buf = vec![0u8; end - start];
        f.read_exact_at(&mut buf, start as u64).unwrap();
        assert!(buf == want[start..end], "pread {start}..{end} differs");
    }
}

/// A foreground mount: SIGTERM on drop, then SIGKILL and a lazy detach if needed.
struct Mounted {
    child: Child,
    mnt: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            if try_wait_exit(&mut self.child).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if mount_type(&self.mnt).is_some() {
            let c = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a plain syscall on our own mount point.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn a_missing_url_fails_naming_it() {
    let Some(site) = Site::new() else { return };
    let url = site.nginx.url("nowhere/missing.qltx");
    for args in [
        vec!["info", url.as_str()],
        vec!["verify", url.as_str(), "--key-file", "key"],
        vec!["unpack", url.as_str(), "out.bin", "--key-file", "key"],
        vec![
            "seek",
            url.as_str(),
            "--offset",
            "0",
            "--length",
            "10",
            "--key-file",
            "key",
        ],
    ] {
        let out = site.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} of a missing URL succeeded");
        assert!(
            err.contains(&url),
            "{args:?}: the error does not name {url}: {err}"
        );
        let lower = err.to_lowercase();
        assert!(
            lower.contains("404") || lower.contains("not found") || lower.contains("no such"),
            "{args:?}: the error does not say the URL is missing: {err}"
        );
    }
    assert!(
        !site.w.exists("out.bin"),
        "unpack of a missing URL left an output file"
    );
}

#[test]
fn a_container_replaced_on_the_server_is_detected_not_misread() {
    let Some(site) = Site::new() else { return };
    let old = striped(2 * 1024 * KIB, 31, 50_000, 3);
    let new = striped(2 * 1024 * KIB, 32, 50_000, 3);
    let url = site.publish("x", &old);
    let s = Serve::start(&site, &url, &["--cache-size", "1"]);
    let a = agent();
    let file_url = served_url(&s, "x");
    let (status, body) = http_get(&a, &file_url, Some("bytes=0-9999")).unwrap();
    assert_eq!(status, 206, "{}", s.log());
    assert!(body == old[..10_000]);

    // Replace it: same size, other bytes, an mtime far from the old one (nginx's ETag is
    // mtime-size, so it changes whatever the clock did).
    let www = site.nginx.www("x.qltx");
    let before = fs::metadata(&www).unwrap().modified().unwrap();
    site.publish("x", &new);
    let f = File::options().write(true).open(&www).unwrap();
    f.set_modified(before + Duration::from_secs(1000)).unwrap();
    drop(f);
    assert_ne!(fs::metadata(&www).unwrap().modified().unwrap(), before);

    // A range never read before (so not in any cache): either an error or, if the server
    // reopened the new container, the new bytes. Never anything else.
    let (start, end) = (1_500_000, 1_600_000);
    let got = http_get(&a, &file_url, Some(&format!("bytes={start}-{}", end - 1)));
    match got {
        Err(e) => {
            eprintln!("replaced container: transport error ({e})");
            assert!(s.log().contains("changed"), "serve did not say why:\n{}", s.log());
        }
        Ok((206, body)) if body.len() == end - start => {
            assert!(
                body == new[start..end],
                "bytes after the replacement are neither an error nor the new file's ({})",
                if body == old[start..end] {
                    "the old file's"
                } else {
                    "garbage"
                }
            );
            eprintln!("replaced container: served the new file's bytes");
        }
        Ok((206, body)) => panic!("a short 206 body ({} bytes) after the replacement", body.len()),
        Ok((status, _)) => {
            assert!(status >= 400, "status {status} after the replacement");
            assert!(
                s.log().contains("changed"),
                "serve did not say the container changed:\n{}",
                s.log()
            );
            eprintln!("replaced container: status {status}");
        }
    }
    eprintln!("serve's log:\n{}", s.log());
}
