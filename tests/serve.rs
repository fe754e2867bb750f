//! `qeltrix serve` end to end: the real binary on an ephemeral loopback port, a real HTTP client
//! (ureq) or raw sockets, and every answer compared byte for byte with the original file.

mod common;

use common::{
    connect, find, key_file_key, proc_status, recipients, striped, unique_suffix, wait_until, ServeProcess,
    Work, DEADLINE,
};
use qeltrix::{format::BLOCK_HEAD_LEN, ContainerInfo, PackOptions};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const BLOCK: usize = 64 * 1024;
/// The key file `key` holds `key_file_key(KEY)`; `other.key` another key.
const KEY: u8 = 7;

/// Deterministic test bytes: 50,000-byte stretches, one in three compressible text, so
/// containers hold both raw and deflated blocks.
fn data(len: usize, seed: u64) -> Vec<u8> {
    striped(len, seed, 50_000, 3)
}

/// A temporary folder with key files `key` and `other.key`, and helpers to pack files into it.
struct Fixture(Work);

impl Deref for Fixture {
    type Target = Work;
    fn deref(&self) -> &Work {
        &self.0
    }
}

impl Fixture {
    fn new() -> Self {
        let w = Work::with_key();
        w.write_key("other.key", 9);
        Fixture(w)
    }

    /// Packs `bytes` into `rel` (relative to the fixture) for `key_file_key(key)`, with 64 KiB
    /// blocks.
    fn pack(&self, rel: &str, bytes: &[u8], key: u8) -> PathBuf {
        let plain = self.write(&format!("{rel}.plain"), bytes);
        let out = self.path(rel);
        let opts = PackOptions {
            block_size: BLOCK as u32,
            ..PackOptions::default()
        };
        qeltrix::pack(&plain, &out, &recipients(&[key_file_key(key)]), &opts, true).unwrap();
        fs::remove_file(plain).unwrap();
        out
    }
}

type Server = ServeProcess;

/// `qeltrix serve PATH --key-file key --listen 127.0.0.1:0 EXTRA`.
fn start_server(f: &Fixture, path: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    start_server_with(f, path, &args)
}

/// `qeltrix serve PATH --key-file key ARGS`.
fn start_server_with(f: &Fixture, path: &Path, args: &[&str]) -> Server {
    let mut command = common::qeltrix_process();
    command
        .arg("serve")
        .arg(path)
        .arg("--key-file")
        .arg(f.path("key"))
        .args(args);
    ServeProcess::spawn(command, f.path(&format!("serve-{}.log", unique_suffix())))
}

/// A response: status, headers (lower-case names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn get(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)]) -> Reply {
    request(agent.get(url), headers)
}

fn request(mut req: ureq::RequestBuilder<ureq::typestate::WithoutBody>, headers: &[(&str, &str)]) -> Reply {
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = common::body_bytes(&mut resp);
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends raw bytes on a fresh connection and reads until the server closes it.
fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Splits a multipart/byteranges body into (Content-Range, bytes) parts.
fn multipart(body: &[u8], content_type: &str) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1).unwrap();
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    loop {
        let at = find(rest, delim.as_bytes()).expect("a delimiter");
        rest = &rest[at + delim.len()..];
        if rest.starts_with(b"--") {
            return parts;
        }
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_string();
        let (a, b) = range
            .trim_start_matches("bytes ")
            .split('/')
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let len = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        let start = head_end + 4;
        parts.push((range, rest[start..start + len].to_vec()));
        rest = &rest[start + len..];
        assert!(rest.starts_with(b"\r\n"), "CRLF before the next delimiter");
    }
}

#[test]
fn every_range_form_is_byte_exact() {
    let f = Fixture::new();
    let size = 1_000_003;
    let original = data(size, 1);
    let file = f.pack("video.mp4.qltx", &original, KEY);
    let server = start_server(&f, &file, &[]);
    let a = common::http_agent();

    let full = get(&a, &server.url("/"), &[]);
    assert_eq!(full.status, 200);
    assert!(full.body == original, "full GET differs");
    assert_eq!(full.header("content-length"), Some("1000003"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(full.header("content-type"), Some("video/mp4"));
    let etag = full.header("etag").unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.len() == 34,
        "strong ETag from the container id: {etag}"
    );
    assert!(full.header("last-modified").is_some());
    assert!(
        get(&a, &server.url("/video.mp4"), &[]).body == original,
        "also at /NAME"
    );

    let cases: &[(&str, usize, usize)] = &[
        ("bytes=0-0", 0, 1),
        ("bytes=0-99", 0, 100),
        ("bytes=65535-65536", 65535, 65537), // straddles a block boundary
        ("bytes=100000-700000", 100_000, 700_001),
        ("bytes=999000-", 999_000, size),
        ("bytes=-1", size - 1, size),
        ("bytes=-70000", size - 70_000, size),
        ("bytes=900000-99999999", 900_000, size), // clipped
        ("bytes=-99999999", 0, size),
    ];
    for &(range, start, end) in cases {
        let r = get(&a, &server.url("/"), &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range").unwrap(),
            format!("bytes {start}-{}/{size}", end - 1),
            "{range}"
        );
        assert_eq!(r.header("content-length").unwrap(), (end - start).to_string());
        assert!(r.body == original[start..end], "{range}: bytes differ");
    }

    let r = get(&a, &server.url("/"), &[("Range", "bytes=500000-500009, 0-9,-5")]);
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_string();
    assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
    assert_eq!(r.header("content-length").unwrap(), r.body.len().to_string());
    let parts = multipart(&r.body, &ct);
    let expect = [(0, 10), (500_000, 500_010), (size - 5, size)];
    assert_eq!(parts.len(), 3);
    for ((range, bytes), (s, e)) in parts.iter().zip(expect) {
        assert_eq!(range, &format!("bytes {s}-{}/{size}", e - 1));
        assert!(bytes == &original[s..e], "{range}");
    }
    let merged = get(&a, &server.url("/"), &[("Range", "bytes=0-99,50-199")]);
    assert_eq!(merged.status, 206);
    assert_eq!(
        merged.header("content-range"),
        Some(format!("bytes 0-199/{size}").as_str())
    );
    assert!(merged.body == original[..200]);

    for unsatisfiable in ["bytes=1000003-", "bytes=2000000-3000000", "bytes=-0"] {
        let r = get(&a, &server.url("/"), &[("Range", unsatisfiable)]);
        assert_eq!(r.status, 416, "{unsatisfiable}");
        assert_eq!(r.header("content-range"), Some("bytes */1000003"));
    }
    for malformed in ["bytes=5-1", "bytes=abc", "pages=1-2", "bytes=1-2-3"] {
        let r = get(&a, &server.url("/"), &[("Range", malformed)]);
        assert_eq!(r.status, 200, "{malformed} is ignored");
        assert!(r.body == original);
    }

    let head = request(a.head(&server.url("/")), &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000003"));
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert!(head.body.is_empty());
    let head = request(a.head(&server.url("/")), &[("Range", "bytes=10-19")]);
    assert_eq!(head.status, 206);
    assert_eq!(head.header("content-length"), Some("10"));
    assert_eq!(head.header("content-range"), Some("bytes 10-19/1000003"));

    assert_eq!(get(&a, &server.url("/other"), &[]).status, 404);
    let post = raw(
        server.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&post), 405);

    let log = server.wait_for_log("range=bytes=10-19 206");
    assert!(
        log.contains("GET / range=bytes=0-99 206 100B"),
        "one log line per request:\n{log}"
    );
}

#[test]
fn conditional_requests() {
    let f = Fixture::new();
    let original = data(300_000, 2);
    let file = f.pack("notes.txt.qltx", &original, KEY);
    let server = start_server(&f, &file, &[]);
    let a = common::http_agent();
    let url = server.url("/notes.txt");
    let first = get(&a, &url, &[]);
    assert_eq!(first.header("content-type"), Some("text/plain"));
    let etag = first.header("etag").unwrap().to_string();
    let modified = first.header("last-modified").unwrap().to_string();
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");

    for (name, value) in [
        ("If-None-Match", etag.as_str()),
        ("If-None-Match", weak.as_str()),
        ("If-None-Match", listed.as_str()),
        ("If-None-Match", "*"),
        ("If-Modified-Since", modified.as_str()),
        ("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT"),
    ] {
        let r = get(&a, &url, &[(name, value)]);
        assert_eq!(r.status, 304, "{name}: {value}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    for (name, value) in [
        ("If-None-Match", "\"other\""),
        ("If-Modified-Since", "Thu, 01 Jan 1970 00:00:01 GMT"),
        ("If-Modified-Since", "garbage"),
    ] {
        let r = get(&a, &url, &[(name, value)]);
        assert_eq!(r.status, 200, "{name}: {value}");
        assert!(r.body == original);
    }
    let r = get(
        &a,
        &url,
        &[("If-None-Match", "\"other\""), ("If-Modified-Since", &modified)],
    );
    assert_eq!(r.status, 200, "If-None-Match wins over If-Modified-Since");

    let r = get(&a, &url, &[("Range", "bytes=100-199"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    assert!(r.body == original[100..200]);
    let r = get(&a, &url, &[("Range", "bytes=100-199"), ("If-Range", &modified)]);
    assert_eq!(r.status, 206);
    for stale in ["\"old\"", weak.as_str(), "Thu, 01 Jan 1970 00:00:01 GMT"] {
        let r = get(&a, &url, &[("Range", "bytes=100-199"), ("If-Range", stale)]);
        assert_eq!(r.status, 200, "If-Range {stale} does not match: whole file");
        assert!(r.body == original);
    }

    assert_eq!(get(&a, &url, &[("If-Match", "\"other\"")]).status, 412);
    assert_eq!(get(&a, &url, &[("If-Match", &etag)]).status, 200);
    let r = get(
        &a,
        &url,
        &[("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:01 GMT")],
    );
    assert_eq!(r.status, 412);
}

#[test]
fn vault_listing_json_index_and_health() {
    let f = Fixture::new();
    let a_txt = data(70_000, 3);
    let b_mp4 = data(200_000, 4);
    f.pack("vault/a.txt.qltx", &a_txt, KEY);
    f.pack("vault/sub dir/b.mp4.qltx", &b_mp4, KEY);
    fs::write(f.path("vault/plain.txt"), b"not a container").unwrap();
    fs::write(f.path("vault/.hidden.qltx"), b"x").unwrap();
    let server = start_server(&f, &f.path("vault"), &[]);
    let a = common::http_agent();

    let html = get(&a, &server.url("/"), &[]);
    assert_eq!(html.status, 200);
    assert_eq!(html.header("content-type"), Some("text/html; charset=utf-8"));
    let page = String::from_utf8(html.body).unwrap();
    assert!(page.contains("<a href=\"a.txt\">a.txt</a>"), "{page}");
    assert!(page.contains("<a href=\"sub%20dir/\">sub dir/</a>"), "{page}");
    assert!(!page.contains("plain") && !page.contains("hidden"), "{page}");
    // For people: binary units with the exact count as a tooltip; a UTC date the page's script
    // shows in the browser's time zone (scripts/e2e-browser.sh checks that in Chromium).
    assert!(
        page.contains("<span title=\"70000 bytes\">68 KiB</span>"),
        "{page}"
    );
    assert!(page.contains("<time datetime=\"20"), "{page}");

    // The top folder's `/index.json` is the registry view (docs/CAPABILITIES.md): every
    // container at any depth, with its size and root.
    let registry = get(&a, &server.url("/index.json"), &[]);
    assert_eq!(registry.status, 200);
    let registry: serde_json::Value = serde_json::from_slice(&registry.body).unwrap();
    let paths: Vec<&str> = registry["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/a.txt", "/sub dir/b.mp4"], "{registry}");
    let r = get(&a, &server.url("/?format=json"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{json}");
    assert_eq!(entries[0]["name"], "sub dir");
    assert_eq!(entries[0]["type"], "dir");
    assert_eq!(entries[1]["name"], "a.txt");
    assert_eq!(entries[1]["size"], 70_000);
    assert!(entries[1]["modified"].as_str().unwrap().ends_with('Z'));
    let sub = get(&a, &server.url("/sub%20dir"), &[]);
    assert_eq!(sub.status, 301);
    assert_eq!(sub.header("location"), Some("/sub%20dir/"));
    let json: serde_json::Value =
        serde_json::from_slice(&get(&a, &server.url("/sub%20dir/index.json"), &[]).body).unwrap();
    assert_eq!(json["path"], "/sub%20dir/");
    assert_eq!(json["entries"][0]["name"], "b.mp4");
    assert_eq!(json["entries"][0]["size"], 200_000);

    let b = get(&a, &server.url("/sub%20dir/b.mp4"), &[("Range", "bytes=-1000")]);
    assert_eq!(b.status, 206);
    assert_eq!(b.header("content-type"), Some("video/mp4"));
    assert!(b.body == b_mp4[b_mp4.len() - 1000..]);
    assert!(get(&a, &server.url("/a.txt"), &[]).body == a_txt);
    assert_eq!(get(&a, &server.url("/a.txt.qltx"), &[]).status, 404);
    assert_eq!(get(&a, &server.url("/plain.txt"), &[]).status, 404);
    assert_eq!(get(&a, &server.url("/nope/"), &[]).status, 404);

    let health = get(&a, &server.url("/health"), &[]);
    assert_eq!(health.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["serving"], "vault");
}

#[test]
fn traversal_attempts_are_not_found() {
    let f = Fixture::new();
    f.pack("vault/inside.qltx", &data(1000, 5), KEY);
    f.pack("secret.qltx", &data(1000, 6), KEY); // same key, outside the vault
    fs::create_dir_all(f.path("vault/dir")).unwrap();
    std::os::unix::fs::symlink(f.path("secret.qltx"), f.path("vault/link.qltx")).unwrap();
    std::os::unix::fs::symlink(f.dir.path(), f.path("vault/dir/up")).unwrap();
    let server = start_server(&f, &f.path("vault"), &[]);

    let ok = raw(
        server.addr,
        b"GET /inside HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&ok), 200);
    let secret = f.path("secret").display().to_string();
    let absolute = format!("/{}", secret.trim_start_matches('/'));
    for path in [
        "/../secret",
        "/dir/../../secret",
        "/%2e%2e/secret",
        "/%2E%2E/secret",
        "/dir/%2e%2e/%2e%2e/secret",
        "/.%2e/secret",
        "/dir%2f..%2f..%2fsecret",
        "/..%2fsecret",
        "/..%5csecret",
        "//secret",
        absolute.as_str(),
        "/link",
        "/dir/up/secret",
        "/inside%00",
        "/.hidden",
        "/./inside",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = raw(server.addr, request.as_bytes());
        assert_eq!(
            status_of(&response),
            404,
            "{path}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    let absolute_form = raw(
        server.addr,
        b"GET http://127.0.0.1/../secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&absolute_form), 404);
}

#[test]
fn bearer_token_on_and_off() {
    let f = Fixture::new();
    let original = data(50_000, 7);
    let file = f.pack("a.bin.qltx", &original, KEY);
    fs::write(f.path("token"), "correct-horse-battery\n").unwrap();
    let token_file = f.path("token").display().to_string();
    let a = common::http_agent();

    let open = start_server(&f, &file, &[]);
    assert!(
        get(&a, &open.url("/"), &[]).body == original,
        "no token needed without --token-file"
    );

    let guarded = start_server(&f, &file, &["--token-file", &token_file]);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer correct-horse-batter"),
        Some("Basic correct-horse-battery"),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", *v)).collect();
        let r = get(&a, &guarded.url("/"), &headers);
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"qeltrix\""));
        assert_eq!(r.body, b"a bearer token is required\n");
    }
    let r = get(
        &a,
        &guarded.url("/"),
        &[("Authorization", "Bearer correct-horse-battery")],
    );
    assert_eq!(r.status, 200);
    assert!(r.body == original);
    assert_eq!(
        get(&a, &guarded.url("/health"), &[]).status,
        200,
        "health needs no token"
    );
}

#[test]
fn a_container_the_key_cannot_open_is_403_and_logged() {
    let f = Fixture::new();
    f.pack("vault/mine.qltx", &data(1000, 8), KEY);
    f.pack("vault/theirs.qltx", &data(1000, 9), 9);
    let server = start_server(&f, &f.path("vault"), &[]);
    let a = common::http_agent();
    assert_eq!(get(&a, &server.url("/mine"), &[]).status, 200);
    let r = get(&a, &server.url("/theirs"), &[]);
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("key does not open"));
    let again = get(&a, &server.url("/theirs"), &[]);
    assert_eq!(again.status, 403, "the failure is remembered");
    let log = server.wait_for_log("/theirs range=- 403");
    assert!(log.contains("theirs.qltx") && log.contains("wrong key"), "{log}");

    // A single container that the key cannot open stops the server before it listens.
    let out = common::qeltrix_process()
        .arg("serve")
        .arg(f.path("vault/theirs.qltx"))
        .args(["--listen", "127.0.0.1:0", "--key-file"])
        .arg(f.path("key"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong key"));
}

#[test]
fn thirty_two_clients_fetch_random_ranges_of_several_files() {
    let f = Fixture::new();
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            let bytes = data(600_000 + i * 250_000, 10 + i as u64);
            f.pack(&format!("vault/f{i}.bin.qltx"), &bytes, KEY);
            (format!("/f{i}.bin"), bytes)
        })
        .collect();
    // A 1 MiB cache (16 blocks) for ~3 MiB of files: evictions and reloads under contention.
    let server = start_server(&f, &f.path("vault"), &["--cache-size", "1"]);
    let files = std::sync::Arc::new(files);
    let threads: Vec<_> = (0..32u64)
        .map(|t| {
            let (files, base) = (std::sync::Arc::clone(&files), server.url(""));
            std::thread::spawn(move || {
                let a = common::http_agent();
                let mut x = t.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                for _ in 0..12 {
                    let (path, bytes) = &files[(next() % files.len() as u64) as usize];
                    let start = (next() % bytes.len() as u64) as usize;
                    let len = 1 + (next() % 200_000) as usize;
                    let end = (start + len).min(bytes.len());
                    let range = format!("bytes={start}-{}", end - 1);
                    let r = get(&a, &format!("{base}{path}"), &[("Range", &range)]);
                    assert_eq!(r.status, 206, "{path} {range}");
                    assert!(r.body == bytes[start..end], "{path} {range}: bytes differ");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
}

#[test]
fn a_corrupt_block_cuts_the_response_and_never_sends_wrong_bytes() {
    let f = Fixture::new();
    let original = data(16 * BLOCK, 11);
    let file = f.pack("movie.mp4.qltx", &original, KEY);
    let bad = 8;
    let info = ContainerInfo::read(&File::open(&file).unwrap()).unwrap();
    let entry = info.footer.entries[bad];
    let flip_at = entry.offset + BLOCK_HEAD_LEN as u64 + (entry.len - BLOCK_HEAD_LEN as u64) / 2;
    let handle = fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
    let mut byte = [0u8];
    handle.read_exact_at(&mut byte, flip_at).unwrap();
    handle.write_all_at(&[byte[0] ^ 0x01], flip_at).unwrap();
    drop(handle);

    let server = start_server(&f, &file, &[]);
    let a = common::http_agent();
    let before = format!("bytes=0-{}", bad * BLOCK - 1);
    let r = get(&a, &server.url("/"), &[("Range", &before)]);
    assert_eq!(r.status, 206);
    assert!(
        r.body == original[..bad * BLOCK],
        "a range before the bad block is served"
    );
    let after = format!("bytes={}-", (bad + 1) * BLOCK + 5);
    let r = get(&a, &server.url("/"), &[("Range", &after)]);
    assert_eq!(r.status, 206);
    assert!(
        r.body == original[(bad + 1) * BLOCK + 5..],
        "a range after it too"
    );
    let at = format!("bytes={}-", bad * BLOCK + 10);
    assert_eq!(
        get(&a, &server.url("/"), &[("Range", &at)]).status,
        500,
        "starts in the bad block"
    );

    // A full GET: headers promise everything, the body stops before the bad block.
    let mut resp = a.get(&server.url("/")).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        original.len().to_string().as_str()
    );
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let outcome = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    assert!(
        outcome.is_err() || got.len() < original.len(),
        "the response was not cut"
    );
    assert!(
        got.len() <= bad * BLOCK,
        "{} bytes: past the bad block",
        got.len()
    );
    assert!(
        got == original[..got.len()],
        "the bytes sent are a correct prefix"
    );
    let log = server.wait_for_log("CUT after");
    assert!(
        log.contains("movie.mp4.qltx") && log.contains(&format!("block {bad}")),
        "{log}"
    );
}

#[test]
fn sigterm_with_requests_in_flight_exits_zero() {
    let f = Fixture::new();
    let original = data(24 << 20, 12);
    let file = f.pack("big.bin.qltx", &original, KEY);
    let mut server = start_server(&f, &file, &["--shutdown-grace", "3"]);

    // One client reads a little of a full GET and then waits; another never reads at all.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut reader = connect(server.addr);
    reader.write_all(request).unwrap();
    let mut first = vec![0u8; 64 * 1024];
    reader.read_exact(&mut first).unwrap();
    let mut staller = connect(server.addr);
    staller.write_all(request).unwrap();
    let mut status_line = [0u8; 12];
    staller.read_exact(&mut status_line).unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 200");

    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down");
    // The in-flight response still completes, byte for byte.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let split = find(&first, b"\r\n\r\n").unwrap() + 4;
    assert!(
        first[split..] == original[..],
        "the in-flight response finished intact"
    );

    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    drop(staller);
}

#[test]
fn slow_or_oversized_requests_do_not_hold_the_server() {
    let f = Fixture::new();
    let file = f.pack("a.qltx", &data(10_000, 13), KEY);
    let server = start_server(&f, &file, &["--idle-timeout", "5", "--header-timeout", "1"]);

    // Half a request, then silence: the header deadline closes it (before the idle timeout). The server must close the socket itself: a read that only ends at our own guard
    // timeout fails here.
    let mut silent = connect(server.addr);
    let silent_addr = silent.local_addr().unwrap();
    silent.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut sink = Vec::new();
    silent
        .read_to_end(&mut sink)
        .expect("the server closes a connection whose request head never ends");
    assert!(
        !sink.windows(6).any(|w| w == b"200 OK"),
        "no answer to half a request"
    );
    server.wait_for_log(&format!(
        "{silent_addr}: connection closed: read header from client timeout"
    ));

    // A header dribbled one byte at a time: bytes keep moving, so the idle timeout never fires;
    // the header deadline must close it.
    let mut dribble = TcpStream::connect(server.addr).unwrap();
    let dribble_addr = dribble.local_addr().unwrap();
    dribble
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "a dribbling client kept its connection"
        );
        if dribble.write_all(b"X").is_err() {
            break; // the server closed it (EPIPE / reset)
        }
        let mut b = [0u8; 256];
        match dribble.read(&mut b) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&b[..n]), // an error status may come before the close
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
            }
            Err(_) => break,
        }
    }
    assert!(
        !answer.windows(3).any(|w| w == b"200"),
        "no success for a dribbled head: {:?}",
        String::from_utf8_lossy(&answer)
    );
    server.wait_for_log(&format!(
        "{dribble_addr}: connection closed: read header from client timeout"
    ));

    // Headers larger than the limit: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status_of(&raw(server.addr, big.as_bytes())), 431);

    // The server still answers, and keeps a connection alive across requests.
    let mut s = connect(server.addr);
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        while find(&head, b"\r\n\r\n").is_none() {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        assert_eq!(status_of(&head), 206);
        let mut body = [0u8; 10];
        s.read_exact(&mut body).unwrap();
    }
}

#[test]
fn a_replaced_container_is_served_afresh() {
    let f = Fixture::new();
    let first = data(100_000, 14);
    f.pack("vault/doc.txt.qltx", &first, KEY);
    // The seeds' --host/--port spelling.
    let server = start_server_with(&f, &f.path("vault"), &["--host", "127.0.0.1", "--port", "0"]);
    let a = common::http_agent();
    let before = get(&a, &server.url("/doc.txt"), &[]);
    assert!(before.body == first);

    let second = data(120_000, 15);
    f.pack("vault/doc.txt.qltx", &second, KEY); // a new file renamed over the old one
    let after = get(&a, &server.url("/doc.txt"), &[]);
    assert!(after.body == second, "the new container's plaintext");
    assert_ne!(after.header("etag"), before.header("etag"));
    let stale = get(
        &a,
        &server.url("/doc.txt"),
        &[("If-None-Match", before.header("etag").unwrap())],
    );
    assert_eq!(stale.status, 200, "the old ETag no longer matches");
}

/// Packs `len` bytes of one repeated byte (compressible, so the file on disk stays small while
/// every block still decrypts to `block` bytes of plaintext) into `rel`.
fn pack_repeated(f: &Fixture, rel: &str, len: u64, block: u32) -> PathBuf {
    let out = f.path(rel);
    let opts = PackOptions {
        block_size: block,
        ..PackOptions::default()
    };
    let file = File::create(&out).unwrap();
    let keys = [key_file_key(KEY)];
    let mut packer = qeltrix::StreamPacker::new_seekable(file, &recipients(&keys), &opts).unwrap();
    packer.pack_from(&mut std::io::repeat(0x5a).take(len)).unwrap();
    packer.finish().unwrap();
    out
}

/// Packs `bytes` into `rel` with blocks of `block` bytes.
fn pack_blocks(f: &Fixture, rel: &str, bytes: &[u8], block: u32) -> PathBuf {
    let out = f.path(rel);
    let opts = PackOptions {
        block_size: block,
        ..PackOptions::default()
    };
    let keys = [key_file_key(KEY)];
    let mut packer =
        qeltrix::StreamPacker::new_seekable(File::create(&out).unwrap(), &recipients(&keys), &opts).unwrap();
    packer.pack_from(&mut &bytes[..]).unwrap();
    packer.finish().unwrap();
    out
}

/// `/health` as JSON, with an optional `Authorization` header.
fn health(a: &ureq::Agent, server: &Server, auth: Option<&str>) -> serde_json::Value {
    let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", *v)).collect();
    let r = get(a, &server.url("/health"), &headers);
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn health_details_only_with_the_token() {
    let f = Fixture::new();
    let file = f.pack("a.bin.qltx", &data(1000, 19), KEY);
    fs::write(f.path("token"), "health-token-42\n").unwrap();
    let token_file = f.path("token").display().to_string();
    let a = common::http_agent();

    let guarded = start_server(&f, &file, &["--token-file", &token_file]);
    for auth in [None, Some("Bearer wrong")] {
        let h = health(&a, &guarded, auth);
        assert_eq!(
            h,
            serde_json::json!({"status": "ok"}),
            "{auth:?}: only the status"
        );
    }
    let h = health(&a, &guarded, Some("Bearer health-token-42"));
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["serving"], "container");
    assert!(h["cache_capacity"].as_u64().is_some() && h["open_containers"].as_u64().is_some());
    assert!(
        !guarded.log().contains("health-token-42"),
        "the token is never logged"
    );

    // Without --token-file (loopback by default), everyone gets the details.
    let open = start_server(&f, &file, &[]);
    let h = health(&a, &open, None);
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["cache_capacity"].as_u64().is_some() && h["open_containers"].as_u64().is_some());
}

/// Reads a response head (through the blank line) from a raw socket.
fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    while find(&head, b"\r\n\r\n").is_none() {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    head
}

#[test]
fn stalled_clients_keep_memory_under_the_documented_bound() {
    const MIB: u64 = 1 << 20;
    const BIG: u64 = 4 * MIB;
    const CLIENTS: u64 = 40;
    const MAX_CONNECTIONS: u64 = 64;
    const WORKERS: u64 = 1;
    const CACHE: u64 = MIB;
    const INFLIGHT: u64 = 16 * MIB;
    let f = Fixture::new();
    let file = pack_repeated(&f, "big.bin.qltx", (CLIENTS + 8) * BIG, BIG as u32);
    // The minimum rate is off and the idle timeout long: the stalled clients stay for the whole
    // test, and only the in-flight budget keeps their responses from holding memory.
    let server = start_server(
        &f,
        &file,
        &[
            "--cache-size",
            "1",
            "--inflight-size",
            "16",
            "--workers",
            "1",
            "--max-connections",
            "64",
            "--min-rate",
            "0",
            "--idle-timeout",
            "3600",
        ],
    );
    // docs/SERVE.md, "Memory": base + cache + in-flight budget + decryption working set
    // (2 × workers × (2 × block + 8 MiB)) + per-connection fixed cost (256 KiB) × max
    // connections. The base (code, runtime, thread stacks touched) is budgeted at 48 MiB.
    let bound =
        48 * MIB + CACHE + INFLIGHT + 2 * WORKERS * (2 * BIG + 8 * MIB) + MAX_CONNECTIONS * 256 * 1024;
    let a = common::http_agent();
    let pid = server.pid();

    // Each client asks for a different block onward and never reads a byte.
    let stalled: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            let request = format!("GET / HTTP/1.1\r\nHost: x\r\nRange: bytes={}-\r\n\r\n", i * BIG);
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();

    // Steady state: every response the budget cannot hold waits for it. Until then, the peak
    // RSS must already stay under the bound.
    let holders = INFLIGHT / BIG;
    let mut h = serde_json::Value::Null;
    wait_until("the stalled responses to settle", || {
        let peak = proc_status(pid, "VmHWM") * 1024;
        assert!(
            peak <= bound,
            "peak RSS {} MiB over the bound {} MiB with {CLIENTS} stalled clients",
            peak / MIB,
            bound / MIB
        );
        h = health(&a, &server, None);
        h["inflight_waiting"]
            .as_u64()
            .is_some_and(|w| w >= CLIENTS - holders)
    });
    assert!(h["inflight_bytes"].as_u64().unwrap() <= INFLIGHT, "{h}");
    let peak = proc_status(pid, "VmHWM") * 1024;
    eprintln!(
        "peak RSS {:.1} MiB, bound {} MiB, with {CLIENTS} stalled clients",
        peak as f64 / MIB as f64,
        bound / MIB
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB over the bound {} MiB",
        peak / MIB,
        bound / MIB
    );
    // The server still answers (HEAD pulls no block).
    assert_eq!(request(a.head(&server.url("/")), &[]).status, 200);
    drop(stalled);
}

#[test]
fn a_trickling_client_is_dropped_and_a_normal_one_is_served() {
    let f = Fixture::new();
    let original = std::sync::Arc::new(data(24 << 20, 16));
    let file = f.pack("big.bin.qltx", &original, KEY);
    // The idle timeout is far away: only the minimum rate can drop the trickler in time.
    let server = start_server(
        &f,
        &file,
        &[
            "--min-rate",
            "8192",
            "--min-rate-window",
            "2",
            "--idle-timeout",
            "600",
        ],
    );

    let mut trickler = connect(server.addr);
    let trickler_addr = trickler.local_addr().unwrap();
    trickler
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(status_of(&read_head(&mut trickler)), 200);

    let normal = {
        let (url, original) = (server.url("/"), std::sync::Arc::clone(&original));
        std::thread::spawn(move || {
            let r = get(&common::http_agent(), &url, &[]);
            assert_eq!(r.status, 200);
            assert!(r.body[..] == original[..], "the normal client's bytes differ");
        })
    };

    // A byte now and then: bytes keep moving, far below the minimum rate.
    let dropped = format!("{trickler_addr}: connection closed: below the minimum rate");
    let started = Instant::now();
    let mut got = 0u64;
    while !server.log().contains(&dropped) {
        assert!(
            started.elapsed() < DEADLINE,
            "the trickling client was never dropped:\n{}",
            server.log()
        );
        let mut b = [0u8; 1];
        match trickler.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    server.wait_for_log(&dropped);
    // What the kernel had buffered drains, then the stream ends short of the file.
    let mut rest = Vec::new();
    let _ = trickler.read_to_end(&mut rest);
    assert!(
        got + (rest.len() as u64) < original.len() as u64,
        "the trickler got the whole file"
    );
    normal.join().expect("the normal client failed");
}

#[test]
fn idle_sockets_over_the_cap_do_not_lock_out_clients() {
    const CAP: usize = 8;
    const FLOOD: usize = 40;
    let f = Fixture::new();
    let original = data(200_000, 17);
    let file = f.pack("a.bin.qltx", &original, KEY);
    // Header and idle timeouts of an hour: only shedding can free a slot held by an idle socket.
    let server = start_server(
        &f,
        &file,
        &[
            "--max-connections",
            "8",
            "--header-timeout",
            "3600",
            "--idle-timeout",
            "3600",
        ],
    );
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let s = TcpStream::connect(server.addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Each new connection at the cap sheds the one idle the longest: the oldest sockets close.
    let mut shut = vec![false; FLOOD];
    wait_until("the idle sockets over the cap to be shed", || {
        for (i, s) in flood.iter().enumerate() {
            shut[i] = shut[i] || is_closed(s);
        }
        shut.iter().filter(|&&c| c).count() >= FLOOD - CAP
    });
    assert!(
        shut[..FLOOD - CAP].iter().all(|&c| c) && shut[FLOOD - CAP..].iter().all(|&c| !c),
        "the oldest idle sockets are shed first: {shut:?}"
    );

    // A real client gets through, /health included, while the newest idle sockets stay open.
    let a = common::http_agent();
    assert_eq!(health(&a, &server, None)["status"], "ok");
    let r = get(&a, &server.url("/"), &[("Range", "bytes=1000-1999")]);
    assert_eq!(r.status, 206);
    assert!(r.body == original[1000..2000]);
    server.wait_for_log("connection closed: idle the longest at the connection cap (8)");
    drop(flood);
}

/// True if the server closed the nonblocking socket `s` (end of stream or reset).
fn is_closed(mut s: &TcpStream) -> bool {
    match s.read(&mut [0u8; 16]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn sparse_ranges_are_not_amplified() {
    const MIB: usize = 1 << 20;
    const BLOCKS: usize = 24;
    let f = Fixture::new();
    let original = data(BLOCKS * MIB, 18);
    let file = pack_blocks(&f, "big.bin.qltx", &original, MIB as u32);
    let server = start_server(&f, &file, &[]);
    let a = common::http_agent();
    let pulled = || health(&a, &server, None)["pulled_bytes"].as_u64();
    // docs/SERVE.md: ranges are honoured if the blocks they touch hold at most
    // 2 × bytes asked + max(8 MiB, 2 blocks); otherwise the whole file is sent with 200.
    let allowed = |asked: usize| (2 * asked + (8 * MIB).max(2 * MIB)) as u64;

    // One byte per block: 24 MiB to decrypt for 24 bytes.
    let sparse: Vec<String> = (0..BLOCKS).map(|i| format!("{0}-{0}", i * MIB + 7)).collect();
    let header = format!("bytes={}", sparse.join(","));
    let before = pulled();
    let r = get(&a, &server.url("/"), &[("Range", &header)]);
    assert_eq!(r.status, 200, "sparse ranges get the whole file");
    assert!(r.body == original);
    let cost = pulled().unwrap() - before.unwrap();
    assert!(
        cost <= allowed(r.body.len()),
        "{cost} bytes pulled for {}",
        r.body.len()
    );

    // A few small ranges, and large ranges, within the rule: 206 multipart as asked.
    for header in [
        format!("bytes=10-19,{}-{},{}-", 5 * MIB, 5 * MIB + 9, BLOCKS * MIB - 10),
        format!("bytes=0-{},{}-{}", 3 * MIB - 1, 10 * MIB, 14 * MIB - 1),
    ] {
        let before = pulled();
        let r = get(&a, &server.url("/"), &[("Range", &header)]);
        assert_eq!(r.status, 206, "{header}");
        let ct = r.header("content-type").unwrap().to_string();
        let parts = multipart(&r.body, &ct);
        let asked: usize = parts.iter().map(|(_, b)| b.len()).sum();
        let cost = pulled().unwrap() - before.unwrap();
        assert!(
            cost <= allowed(asked),
            "{header}: {cost} bytes pulled for {asked}"
        );
    }
    let log = server.wait_for_log("sparse ranges: whole file sent instead");
    assert!(log.contains(" 200 "), "{log}");
}

#[test]
fn a_client_that_leaves_while_waiting_for_the_budget_stops_waiting() {
    const BIG: u64 = 4 << 20;
    let f = Fixture::new();
    let file = pack_repeated(&f, "big.bin.qltx", 8 * BIG, BIG as u32);
    // A budget of one block: the first stalled response takes it all.
    let server = start_server(
        &f,
        &file,
        &["--cache-size", "1", "--inflight-size", "4", "--min-rate", "0"],
    );
    let a = common::http_agent();
    let waiting = || health(&a, &server, None)["inflight_waiting"].as_u64().unwrap();
    let wait_for = |what: &str, cond: &dyn Fn(u64) -> bool| {
        let mut w = 0;
        wait_until(&format!("{what} (inflight_waiting)"), || {
            w = waiting();
            cond(w)
        });
        w
    };
    let ask = |block: u64| {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nRange: bytes={}-\r\n\r\n",
            block * BIG
        );
        s.write_all(request.as_bytes()).unwrap();
        s
    };
    // The holder's producer waits for its second block; the others wait for their first.
    let holder = ask(0);
    let base = wait_for("the holder", &|w| w >= 1);
    let leavers: Vec<TcpStream> = (1..4).map(ask).collect();
    wait_for("the others", &|w| w >= base + 3);
    for s in leavers {
        common::close_with_reset(s);
    }
    wait_for("the leavers", &|w| w <= base);
    drop(holder);
    wait_for("everyone", &|w| w == 0);
}

/// Format 2 in the server: `Last-Modified` is the packed file's own mtime from the file record
/// (so `If-Modified-Since` with it is 304), and a small random range of a block not in the cache
/// is answered from its 16 KiB segments, byte exact, without loading the block into the cache
/// (`/health` shows the cache still empty); a whole-file GET goes through the cache as before.
#[test]
fn v2_last_modified_is_the_files_and_small_ranges_read_segments() {
    let f = Fixture::new();
    let original = data(4 * BLOCK + 1234, 41);
    let plain = f.write("movie.bin", &original);
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    File::options()
        .write(true)
        .open(&plain)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    f.ok("pack -q --block-size 64 --key-file key movie.bin movie.bin.qltx");
    let server = start_server(&f, &f.path("movie.bin.qltx"), &[]);
    let a = common::http_agent();
    let url = server.url("/movie.bin");

    let (start, end) = (BLOCK + 20_000, BLOCK + 20_099);
    let r = get(&a, &url, &[("Range", &format!("bytes={start}-{end}"))]);
    assert_eq!(r.status, 206);
    assert!(r.body == original[start..=end], "segment read differs");
    assert_eq!(
        r.header("last-modified"),
        Some(httpdate::fmt_http_date(mtime).as_str())
    );
    // Another small range in another block, not following the first.
    let r = get(&a, &url, &[("Range", "bytes=200000-200010")]);
    assert!(r.body == original[200_000..=200_010]);
    let h = health(&a, &server, None);
    assert_eq!(
        h["cache_bytes"], 0,
        "small random ranges leave the cache alone: {h}"
    );

    let r = get(
        &a,
        &url,
        &[("If-Modified-Since", &httpdate::fmt_http_date(mtime))],
    );
    assert_eq!(r.status, 304);
    let full = get(&a, &url, &[]);
    assert!(full.body == original);
    assert!(health(&a, &server, None)["cache_bytes"].as_u64().unwrap() > 0);
}
