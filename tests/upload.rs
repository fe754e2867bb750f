//! `qeltrix serve --accept-uploads` end to end (docs/UPLOAD.md): the real binary on an ephemeral
//! loopback port, real HTTP (ureq), containers packed by the library and cut into chunks here,
//! and what lands in the vault checked with `qeltrix verify --no-key` and the key.

mod common;

use common::{
    in_version, key_file_key, open_and_unpack, pack_seekable, serve_addr, striped, unique_suffix, Work,
    DEADLINE, TEST_KDF_ITERATIONS,
};
use qeltrix::format::FormatVersion;
use qeltrix::{ContainerInfo, PackOptions};
use serde_json::{json, Value};
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime};

const TOKEN: &str = "upload-token-for-tests";
/// The key file `key` holds `key_file_key(KEY)`.
const KEY: u8 = 7;
const BLOCK: u32 = 16 * 1024;
/// Chunks that do not line up with blocks.
const CHUNK: usize = 7000;

/// A working folder with the key file `key`, the token file `token` and an empty vault `vault`.
struct Fixture(Work);

impl Fixture {
    fn new() -> Fixture {
        let w = Work::with_key();
        w.write("token", format!("{TOKEN}\n").as_bytes());
        fs::create_dir(w.path("vault")).unwrap();
        Fixture(w)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn vault(&self) -> PathBuf {
        self.path("vault")
    }

    /// The names in the vault's staging folder.
    fn staged(&self) -> Vec<String> {
        match fs::read_dir(self.vault().join(".qeltrix/uploads")) {
            Ok(dir) => dir
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A server taking uploads into the vault, with the key (reads served too).
    fn serve(&self, extra: &[&str]) -> Server {
        let key = self.path("key");
        let token = self.path("token");
        let mut args: Vec<&str> = vec![
            "--accept-uploads",
            "--token-file",
            token.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Server::start(self, &args)
    }

    /// An upload-only server: no key source at all.
    fn serve_keyless(&self, extra: &[&str]) -> Server {
        let token = self.path("token");
        let mut args: Vec<&str> = vec!["--accept-uploads", "--token-file", token.to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::start(self, &args)
    }
}

/// A running `qeltrix serve` logging to a file, killed on drop (also when a test fails).
struct Server {
    child: Child,
    addr: SocketAddr,
    agent: ureq::Agent,
}

impl Server {
    fn start(f: &Fixture, args: &[&str]) -> Server {
        Server::start_env(f, args, &[])
    }

    fn start_env(f: &Fixture, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = f.path(&format!("serve-{}.log", unique_suffix()));
        let mut child = common::qeltrix_process()
            .envs(env.iter().copied())
            .arg("serve")
            .arg(f.vault())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = serve_addr(&mut child, &log);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DEADLINE))
            .build()
            .into();
        Server { child, addr, agent }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the right token.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        self.call_as(Some(&format!("Bearer {TOKEN}")), method, path, body)
    }

    fn call_as(&self, auth: Option<&str>, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        let url = self.url(path);
        let a = &self.agent;
        let result = match (method, body) {
            ("GET", None) => with_auth(a.get(&url), auth).call(),
            ("POST", Some(b)) => with_auth(a.post(&url), auth).send(b),
            ("PUT", Some(b)) => with_auth(a.put(&url), auth).send(b),
            other => panic!("no such request in these tests: {other:?}"),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap();
        Reply { status, body }
    }

    fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(body.to_string().as_bytes()))
    }

    fn negotiate(&self, request_id: &str, chunks: &[Chunk]) -> Reply {
        let list: Vec<Value> = chunks
            .iter()
            .map(|c| json!({ "id": c.id, "size": c.bytes.len() }))
            .collect();
        self.post_json("/upload", &json!({ "request_id": request_id, "chunks": list }))
    }

    fn put(&self, id: &str, bytes: &[u8]) -> Reply {
        self.call("PUT", &format!("/chunks/{id}"), Some(bytes))
    }

    fn put_all(&self, chunks: &[Chunk]) {
        for c in chunks {
            let r = self.put(&c.id, &c.bytes);
            assert_eq!(r.status, 201, "PUT {}: {}", c.id, r.text());
            assert_eq!(r.json(), json!({ "id": c.id, "size": c.bytes.len() }));
        }
    }

    fn commit(&self, path: &str, chunks: &[Chunk], overwrite: bool) -> Reply {
        let ids: Vec<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
        self.post_json(
            "/commit",
            &json!({ "path": path, "chunks": ids, "overwrite": overwrite }),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts an error answer: the status, the reason word, and an error text naming `names`.
    fn refused(&self, status: u16, reason: &str, names: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["reason"], reason, "{v}");
        let error = v["error"].as_str().expect("an error text");
        assert!(error.contains(names), "{error:?} should name {names:?}");
        v
    }
}

/// A piece of a container and its id (BLAKE3, lowercase hex).
#[derive(Clone)]
struct Chunk {
    id: String,
    bytes: Vec<u8>,
}

fn chunk(bytes: &[u8]) -> Chunk {
    Chunk {
        id: blake3::hash(bytes).to_hex().to_string(),
        bytes: bytes.to_vec(),
    }
}

fn chunks_of(container: &[u8]) -> Vec<Chunk> {
    container.chunks(CHUNK).map(chunk).collect()
}

fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    striped(len, seed, 20_000, 3)
}

fn pack(plain: &[u8], version: FormatVersion) -> Vec<u8> {
    let opts = PackOptions {
        block_size: BLOCK,
        workers: 2,
        kdf_iterations: TEST_KDF_ITERATIONS,
        ..PackOptions::default()
    };
    pack_seekable(plain, &[key_file_key(KEY)], &in_version(opts, version))
}

/// The answers of a negotiation, as (id, "OK" or the NOTOK reason).
fn verdicts(r: &Reply) -> Vec<(String, String)> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap().to_string();
            match c["send"].as_str().unwrap() {
                "OK" => (id, "OK".to_string()),
                "NOTOK" => (id, c["reason"].as_str().unwrap().to_string()),
                other => panic!("send: {other}"),
            }
        })
        .collect()
}

fn all(chunks: &[Chunk], verdict: &str) -> Vec<(String, String)> {
    chunks
        .iter()
        .map(|c| (c.id.clone(), verdict.to_string()))
        .collect()
}

fn assert_absent(f: &Fixture, rel: &str) {
    assert!(
        !f.vault().join(rel).exists(),
        "{rel} should not have been created"
    );
}

#[test]
fn upload_negotiate_put_commit_then_the_vault_holds_a_container_that_verifies() {
    let f = Fixture::new();
    let s = f.serve(&[]);
    let plain = plaintext(150_000, 1);
    let container = pack(&plain, FormatVersion::V2);
    let chunks = chunks_of(&container);
    assert!(chunks.len() > 10);

    assert_eq!(verdicts(&s.negotiate("first", &chunks)), all(&chunks, "OK"));
    let (early, late) = chunks.split_at(chunks.len() / 2);
    s.put_all(early);
    // Asked again (a new request): what is staged now answers "exists".
    let again = verdicts(&s.negotiate("second", &chunks));
    assert_eq!(&again[..early.len()], &all(early, "exists")[..]);
    assert_eq!(&again[early.len()..], &all(late, "OK")[..]);
    s.put_all(late);
    // A chunk sent twice: 200 with the same body, nothing new.
    let r = s.put(&chunks[0].id, &chunks[0].bytes);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({ "id": chunks[0].id, "size": chunks[0].bytes.len() })
    );
    assert_eq!(f.staged().len(), chunks.len());

    let r = s.commit("docs/a.txt.qltx", &chunks, false);
    assert_eq!(r.status, 201, "{}", r.text());
    let root = ContainerInfo::read(&container).unwrap().root().unwrap();
    assert_eq!(
        r.json(),
        json!({ "path": "docs/a.txt.qltx", "size": container.len(), "root": hex::encode(root) })
    );
    let stored = fs::read(f.vault().join("docs/a.txt.qltx")).unwrap();
    assert_eq!(stored, container);
    assert!(f.staged().is_empty(), "used chunks are removed: {:?}", f.staged());
    f.0.ok("verify --no-key vault/docs/a.txt.qltx");
    assert_eq!(open_and_unpack(stored, &key_file_key(KEY)).unwrap(), plain);
    // With a key, the same server serves what was uploaded.
    let r = s.call("GET", "/docs/a.txt", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, plain);
}

#[test]
fn negotiation_reasons_and_limits() {
    let f = Fixture::new();
    let s = f.serve(&[
        "--max-chunk-size",
        "4096",
        "--upload-quota",
        "10000",
        "--max-chunks-per-request",
        "5",
    ]);
    let staged = chunk(b"already here");
    s.put_all(std::slice::from_ref(&staged));
    let a = chunk(&[1u8; 3000]);
    let b = chunk(&[2u8; 4000]);
    let c = chunk(&[3u8; 4000]);
    let request = json!({
        "request_id": "r1",
        "chunks": [
            { "id": a.id, "size_in_KB": 2 },            // 2048 bytes: fits
            { "id": staged.id, "size": 12 },
            { "id": a.id.to_uppercase(), "size": 10 },  // ids are lowercase
            { "id": "abc", "size": 10 },
            { "id": b.id, "size_in_KB": 5 },            // 5120 > 4096
        ]
    });
    let r = s.post_json("/upload", &request);
    let got = verdicts(&r);
    let reasons: Vec<&str> = got.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(reasons, ["OK", "exists", "bad_id", "bad_id", "too_large"]);
    assert_eq!(got[2].0, a.id.to_uppercase(), "ids are echoed as sent, in order");
    assert_eq!(r.json()["request_id"], "r1");

    // The quota counts what is staged (12 bytes) and the chunks OKed before in the request.
    let r = s.post_json(
        "/upload",
        &json!({ "request_id": "r2", "chunks": [
            { "id": a.id, "size": 3000 }, { "id": b.id, "size": 4000 }, { "id": c.id, "size": 4000 },
        ]}),
    );
    let reasons: Vec<String> = verdicts(&r).into_iter().map(|(_, v)| v).collect();
    assert_eq!(reasons, ["OK", "OK", "quota"]);

    let six: Vec<Value> = (0..6u8)
        .map(|i| json!({ "id": chunk(&[i]).id, "size": 1 }))
        .collect();
    s.post_json("/upload", &json!({ "request_id": "r3", "chunks": six }))
        .refused(413, "too_many_chunks", "6 chunks");
    s.call("POST", "/upload", Some(b"{not json"))
        .refused(400, "bad_json", "JSON");
    s.post_json(
        "/upload",
        &json!({ "request_id": "r4", "chunks": [{ "id": a.id }] }),
    )
    .refused(400, "bad_json", &a.id);
    s.post_json("/upload", &json!({ "chunks": [] }))
        .refused(400, "bad_json", "request_id");

    // The same limits when the bytes come.
    s.put("abc", b"x").refused(400, "bad_id", "abc");
    let big = chunk(&[9u8; 5000]);
    s.put(&big.id, &big.bytes).refused(413, "too_large", &big.id);
    s.put_all(&[a.clone(), b.clone()]); // 12 + 3000 + 4000 staged
    s.put(&c.id, &c.bytes).refused(507, "quota", &c.id);
    let mut staged_now = f.staged();
    staged_now.sort();
    let mut expected = vec![staged.id.clone(), a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(staged_now, expected);
}

/// A `PUT /chunks/ID` with a chunked body (no Content-Length, so the limits apply as the bytes
/// stream), sent in one write on a raw socket; the status and JSON body of the answer.
fn put_chunked(s: &Server, c: &Chunk) -> Reply {
    use std::io::{Read, Write};
    let mut request = format!(
        "PUT /chunks/{} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        c.id
    )
    .into_bytes();
    for piece in c.bytes.chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut socket = common::connect(s.addr);
    socket.write_all(&request).unwrap();
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Reply {
        status,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn limits_apply_to_a_chunked_body_as_it_streams() {
    let f = Fixture::new();
    let s = f.serve(&["--max-chunk-size", "4096", "--upload-quota", "6000"]);
    let big = chunk(&[5u8; 5000]);
    put_chunked(&s, &big).refused(413, "too_large", &big.id);
    let small = chunk(&[6u8; 3000]);
    let r = put_chunked(&s, &small);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({ "id": small.id, "size": 3000 }));
    let over = chunk(&[7u8; 4000]);
    put_chunked(&s, &over).refused(507, "quota", &over.id);
    assert_eq!(f.staged(), vec![small.id.clone()]);
    // What the refused bodies had counted against the quota was given back.
    let health = s.call("GET", "/health", None).json();
    assert_eq!(health["uploads"]["staged_bytes"], 3000, "{health}");
    let r = s.put(&chunk(&[8u8; 3000]).id, &[8u8; 3000]);
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn a_repeated_request_id_gets_the_same_answer_and_a_reused_one_is_refused() {
    let f = Fixture::new();
    let s = f.serve(&[]);
    let chunks = vec![chunk(b"one"), chunk(b"two")];
    let first = s.negotiate("1234", &chunks);
    assert_eq!(verdicts(&first), all(&chunks, "OK"));
    s.put_all(&chunks);
    // The same request again (a retry after a lost answer): the same answer, though both are
    // staged now.
    let again = s.negotiate("1234", &chunks);
    assert_eq!(again.json(), first.json());
    // A new request id sees the truth.
    assert_eq!(verdicts(&s.negotiate("1235", &chunks)), all(&chunks, "exists"));
    // The old id for another request: refused.
    s.negotiate("1234", &chunks[..1])
        .refused(409, "request_id_reused", "1234");
}

#[test]
fn a_chunk_whose_bytes_do_not_match_its_id_is_not_stored() {
    let f = Fixture::new();
    let s = f.serve(&[]);
    let good = chunk(b"the bytes the id names");
    let r = s.put(&good.id, b"other bytes of the same kind!!");
    let v = r.refused(422, "hash_mismatch", &good.id);
    assert!(v["error"].as_str().unwrap().contains("nothing was stored"));
    assert!(f.staged().is_empty(), "{:?}", f.staged());
    assert_eq!(
        verdicts(&s.negotiate("after", std::slice::from_ref(&good))),
        all(&[good], "OK")
    );
}

#[test]
fn commit_refuses_missing_chunks_wrong_order_tampered_containers_and_bad_paths() {
    let f = Fixture::new();
    let s = f.serve(&[]);
    let plain = plaintext(60_000, 2);
    let container = pack(&plain, FormatVersion::V2);
    let chunks = chunks_of(&container);
    s.put_all(&chunks[1..]);

    // Missing: 409 with the list, nothing created.
    let v = s
        .commit("a.qltx", &chunks, false)
        .refused(409, "missing", &chunks[0].id);
    assert_eq!(v["missing"], json!([chunks[0].id]));
    assert_absent(&f, "a.qltx");
    s.put_all(&chunks[..1]);

    // The right chunks in the wrong order: the keyless check fails.
    let mut swapped = chunks.clone();
    swapped.swap(1, 2);
    s.commit("a.qltx", &swapped, false)
        .refused(422, "verify", "a.qltx");
    assert_absent(&f, "a.qltx");

    // Valid chunks of a modified container: a byte of the second block flipped.
    let layout = common::layout(&container);
    let mut tampered = container.clone();
    tampered[layout.blocks[1].start + 40] ^= 1;
    let bad_chunks = chunks_of(&tampered);
    let fresh: Vec<Chunk> = bad_chunks
        .iter()
        .filter(|c| !chunks.iter().any(|g| g.id == c.id))
        .cloned()
        .collect();
    assert_eq!(fresh.len(), 1);
    s.put_all(&fresh);
    let v = s
        .commit("t.qltx", &bad_chunks, false)
        .refused(422, "verify", "t.qltx");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("block 1"), "names the block: {error}");
    assert!(
        error.contains(&layout.blocks[1].start.to_string()),
        "names the offset: {error}"
    );
    assert_absent(&f, "t.qltx");

    // A version-1 container has no keyless hashes.
    let v1 = pack(&plain, FormatVersion::V1);
    let v1_chunks = chunks_of(&v1);
    s.put_all(&v1_chunks);
    s.commit("v1.qltx", &v1_chunks, false)
        .refused(422, "verify", "version 1");
    assert_absent(&f, "v1.qltx");

    for bad in [
        "../x.qltx",
        ".qeltrix/x.qltx",
        "a.txt",
        "/abs.qltx",
        "a//b.qltx",
        "d/.h.qltx",
    ] {
        s.commit(bad, &chunks, false).refused(400, "bad_path", bad);
    }
    assert!(!f.path("x.qltx").exists());
    assert!(!f.vault().join(".qeltrix/x.qltx").exists());

    // The staged chunks are all still there after every refusal; now it works.
    let r = s.commit("a.qltx", &chunks, false);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(fs::read(f.vault().join("a.qltx")).unwrap(), container);
}

#[test]
fn commit_over_an_existing_container_needs_overwrite() {
    let f = Fixture::new();
    let s = f.serve(&[]);
    let first = pack(&plaintext(30_000, 3), FormatVersion::V2);
    let first_chunks = chunks_of(&first);
    s.put_all(&first_chunks);
    assert_eq!(s.commit("x/c.qltx", &first_chunks, false).status, 201);

    let plain = plaintext(40_000, 4);
    let second = pack(&plain, FormatVersion::V2);
    let chunks = chunks_of(&second);
    s.put_all(&chunks);
    s.commit("x/c.qltx", &chunks, false)
        .refused(409, "exists", "x/c.qltx");
    assert_eq!(fs::read(f.vault().join("x/c.qltx")).unwrap(), first);
    let r = s.commit("x/c.qltx", &chunks, true);
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = fs::read(f.vault().join("x/c.qltx")).unwrap();
    assert_eq!(stored, second);
    assert_eq!(open_and_unpack(stored, &key_file_key(KEY)).unwrap(), plain);
}

#[test]
fn uploads_need_the_token() {
    let f = Fixture::new();
    let s = f.serve(&[]);
    let c = chunk(b"secret-less bytes");
    let body = json!({ "request_id": "1", "chunks": [{ "id": c.id, "size": 17 }] }).to_string();
    for auth in [None, Some("Bearer wrong-token"), Some("Basic dXNlcjpwYXNz")] {
        s.call_as(auth, "POST", "/upload", Some(body.as_bytes())).refused(
            401,
            "unauthorized",
            "bearer token",
        );
        s.call_as(auth, "PUT", &format!("/chunks/{}", c.id), Some(&c.bytes))
            .refused(401, "unauthorized", "bearer token");
        s.call_as(auth, "POST", "/commit", Some(b"{}"))
            .refused(401, "unauthorized", "bearer token");
    }
    assert!(f.staged().is_empty());
    assert_eq!(s.call_as(None, "GET", "/health", None).status, 200);
}

#[test]
fn accept_uploads_without_a_token_file_is_refused_at_start() {
    let f = Fixture::new();
    let out =
        f.0.run("serve vault --accept-uploads --key-file key --listen 127.0.0.1:0");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--accept-uploads needs --token-file"), "{stderr}");
}

#[test]
fn an_upload_only_server_asks_for_no_key_and_refuses_reads() {
    let f = Fixture::new();
    // No key source, no terminal, no stdin: a prompt would fail the start.
    let s = f.serve_keyless(&[]);
    let r = s.call("GET", "/", None);
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("this server holds no key: uploads only"),
        "{}",
        r.text()
    );
    let health = s.call("GET", "/health", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["serving"], "uploads");

    let plain = plaintext(50_000, 5);
    let container = pack(&plain, FormatVersion::V2);
    let chunks = chunks_of(&container);
    assert_eq!(verdicts(&s.negotiate("k1", &chunks)), all(&chunks, "OK"));
    s.put_all(&chunks);
    let r = s.commit("up/load.bin.qltx", &chunks, false);
    assert_eq!(r.status, 201, "{}", r.text());
    f.0.ok("verify --no-key vault/up/load.bin.qltx");
    assert_eq!(s.call("GET", "/up/load.bin", None).status, 403);
    let stored = fs::read(f.vault().join("up/load.bin.qltx")).unwrap();
    assert_eq!(open_and_unpack(stored, &key_file_key(KEY)).unwrap(), plain);

    drop(s);

    // --no-key says so explicitly, and wins over a key file in the environment...
    let s = Server::start_env(
        &f,
        &[
            "--accept-uploads",
            "--no-key",
            "--token-file",
            f.path("token").to_str().unwrap(),
        ],
        &[("QELTRIX_KEY_FILE", f.path("key").to_str().unwrap())],
    );
    assert_eq!(s.call("GET", "/up/load.bin", None).status, 403);
    // ... but not over one given as a flag.
    let out = f
        .0
        .run("serve vault --accept-uploads --no-key --token-file token --key-file key --listen 127.0.0.1:0");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-key and --key-file"));
}

#[test]
fn staged_chunks_past_the_expiry_are_removed_at_start() {
    let f = Fixture::new();
    let staging = f.vault().join(".qeltrix/uploads");
    fs::create_dir_all(&staging).unwrap();
    let old = chunk(b"staged long ago");
    let new = chunk(b"staged just now");
    for c in [&old, &new] {
        fs::write(staging.join(&c.id), &c.bytes).unwrap();
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    File::options()
        .write(true)
        .open(staging.join(&old.id))
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    // The sweep at start runs before the server listens.
    let s = f.serve(&["--upload-expiry", "3600"]);
    assert_eq!(f.staged(), vec![new.id.clone()]);
    let got = verdicts(&s.negotiate("e", &[old.clone(), new.clone()]));
    assert_eq!(got, vec![(old.id, "OK".into()), (new.id, "exists".into())]);
    let health = s.call("GET", "/health", None).json();
    assert_eq!(health["uploads"]["staged_chunks"], 1);
    assert_eq!(health["uploads"]["staged_bytes"], new.bytes.len());
}
