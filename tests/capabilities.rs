//! Capability tokens end to end (`docs/CAPABILITIES.md`): `qeltrix cap issue/attenuate/inspect`
//! and `qeltrix serve --cap-root`, the real binary on an ephemeral loopback port and a real HTTP
//! client. Every refusal the issue names, each with its status and reason.

mod common;

use common::{qeltrix_process, random_bytes, unique_suffix, ServeProcess, Work, KIB};
use std::fs;

/// A vault `v` with `media/talk.mp4`, `media/notes.txt` and `private/secret.bin`, a data key
/// `key`, root signing keys `root.key` and `other-root.key`.
struct Fixture {
    w: Work,
    talk: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let w = Work::with_key();
        w.ok("keygen --ed25519 -o root.key");
        w.ok("keygen --ed25519 -o other-root.key");
        let talk = random_bytes(300 * KIB + 17, 1);
        w.write("talk.mp4", &talk);
        w.write("notes.txt", b"notes");
        w.write("secret.bin", b"secret");
        fs::create_dir_all(w.path("v/media")).unwrap();
        fs::create_dir_all(w.path("v/private")).unwrap();
        w.ok("pack -q --key-file key talk.mp4 v/media/talk.mp4.qltx");
        w.ok("pack -q --key-file key notes.txt v/media/notes.txt.qltx");
        w.ok("pack -q --key-file key secret.bin v/private/secret.bin.qltx");
        Fixture { w, talk }
    }

    /// `qeltrix cap ARGS` writing the token to `name`; returns the token.
    fn token(&self, name: &str, args: &str) -> String {
        self.w.ok(&format!("cap {args} -o {name}"));
        fs::read_to_string(self.w.path(name)).unwrap().trim().to_string()
    }
}

/// `qeltrix serve` over the vault, killed on drop.
struct Server;

impl Server {
    /// With `--cap-root root.key --cap-audience tv`.
    fn start(f: &Fixture) -> ServeProcess {
        Server::start_with(f, &[])
    }

    /// With `--cap-root root.key --cap-audience tv EXTRA`.
    fn start_with(f: &Fixture, extra: &[&str]) -> ServeProcess {
        let mut args = vec!["--cap-root", "root.key", "--cap-audience", "tv"];
        args.extend_from_slice(extra);
        Server::start_args(f, &args)
    }

    /// `qeltrix serve v --key-file key --listen 127.0.0.1:0 ARGS`.
    fn start_args(f: &Fixture, extra: &[&str]) -> ServeProcess {
        let mut command = qeltrix_process();
        command
            .current_dir(f.w.path(""))
            .args(["serve", "v", "--key-file", "key", "--listen", "127.0.0.1:0"])
            .args(extra);
        ServeProcess::spawn(command, f.w.path(&format!("serve-{}.log", unique_suffix())))
    }
}

/// GET `url`, with `Authorization: Bearer TOKEN` if given (and `range`); status and body.
fn get(url: &str, bearer: Option<&str>, range: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut req = common::http_agent().get(url);
    if let Some(t) = bearer {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let body = common::body_bytes(&mut resp);
    (status, String::from_utf8_lossy(&body).into_owned(), body)
}

/// Every refusal, each with its status and reason, through a real server: no token, a
/// malformed one, another root's (401); an expired one, another path, another server, another
/// method, an attenuation that tries to widen its parent (403). And the log never holds a token.
#[test]
fn serve_cap_root_refuses_every_token_that_does_not_allow_the_request() {
    let f = Fixture::new();
    let server = Server::start(&f);
    let talk = server.url("/media/talk.mp4");
    let media = f.token(
        "media",
        "issue --root root.key --path /media/ --method read --method list --audience tv --expires 1h",
    );

    let (status, body, _) = get(&talk, None, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("capability token is required"), "{body}");

    let (status, body, _) = get(&talk, Some("not-a-token"), None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("malformed"), "{body}");

    let foreign = f.token("foreign", "issue --root other-root.key --path /media/");
    let (status, body, _) = get(&talk, Some(&foreign), None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not signed by this server's root"), "{body}");

    let expired = f.token(
        "expired",
        "issue --root root.key --path /media/ --expires 2020-01-01T00:00:00Z",
    );
    let (status, body, _) = get(&talk, Some(&expired), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("expired"), "{body}");

    let (status, body, _) = get(&server.url("/private/secret.bin"), Some(&media), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not for this path"), "{body}");

    let elsewhere = f.token("elsewhere", "issue --root root.key --audience radio");
    let (status, body, _) = get(&talk, Some(&elsewhere), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not for this server"), "{body}");

    let list_only = f.token("list-only", "issue --root root.key --method list");
    let (status, body, _) = get(&talk, Some(&list_only), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not for this method"), "{body}");

    // An attenuation claiming all paths and a later expiry: its parent's caveats still hold.
    let wider = f.token("wider", "attenuate media --path / --method upload --expires 30d");
    let (status, body, _) = get(&server.url("/private/secret.bin"), Some(&wider), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not for this path"), "{body}");
    let (status, body, _) = get(&talk, Some(&wider), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not for this method"), "{body}");

    // The parent works; the log names tokens by id only.
    let (status, _, bytes) = get(&talk, Some(&media), None);
    assert_eq!(status, 200);
    assert!(bytes == f.talk);
    // The 200 is logged when its body ends, after every refusal before it.
    let log = server.wait_for_log(" 200 ");
    for token in [&media, &foreign, &expired, &elsewhere, &list_only, &wider] {
        assert!(!log.contains(token.as_str()), "a token reached the log");
    }
    assert!(log.contains("capability refused"), "{log}");
    let served = log
        .lines()
        .find(|l| l.contains(" 200 "))
        .expect("the 200 is logged");
    assert!(
        served.contains(": cap "),
        "an allowed request names its token's id: {served}"
    );
}

/// An attenuated token works exactly within its caveats: one file, ranges of it, through the
/// header or a `?cap=` link (which also survives a redirect and a listing's links), and nothing
/// else; listings show only what a token allows.
#[test]
fn an_attenuated_token_works_exactly_within_its_caveats() {
    let f = Fixture::new();
    let server = Server::start(&f);
    let media = f.token(
        "media",
        "issue --root root.key --path /media/ --method read --method list",
    );
    let one = f.token("one", "attenuate media --path /media/talk.mp4 --expires 1h");

    let (status, _, bytes) = get(
        &server.url("/media/talk.mp4"),
        Some(&one),
        Some("bytes=1000-1999"),
    );
    assert_eq!(status, 206);
    assert!(bytes == f.talk[1000..2000]);
    let link = server.url(&format!("/media/talk.mp4?cap={one}"));
    let (status, _, bytes) = get(&link, None, None);
    assert_eq!(status, 200);
    assert!(bytes == f.talk);
    let (status, body, _) = get(&server.url("/media/notes.txt"), Some(&one), None);
    assert_eq!(status, 403, "{body}");
    let (status, body, _) = get(&server.url("/media/"), Some(&one), None);
    assert_eq!(status, 403, "the narrowed token cannot list: {body}");

    // Listings: the parent sees /media/ but not /private/ nor the root.
    let (status, body, _) = get(&server.url("/media/?format=json"), Some(&media), None);
    assert_eq!(status, 200, "{body}");
    let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt", "talk.mp4"]);
    let (status, _, _) = get(&server.url("/"), Some(&media), None);
    assert_eq!(status, 403);
    // A glob: the folder itself (exact) and only its .mp4 files.
    let glob = f.token("glob", "issue --root root.key --path /media --path /media/*.mp4");
    let (status, body, _) = get(&server.url("/media/?format=json"), Some(&glob), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("talk.mp4") && !body.contains("notes.txt"), "{body}");
    let (status, _, _) = get(&server.url("/media/notes.txt"), Some(&glob), None);
    assert_eq!(status, 403);
    let (status, _, _) = get(&server.url("/media/talk.mp4"), Some(&glob), None);
    assert_eq!(status, 200);
    // Everything (`--path /`), as a listing of the root shows.
    let all = f.token("all", "issue --root root.key --path /");
    let (_, body, _) = get(&server.url("/?format=json"), Some(&all), None);
    assert!(
        body.contains("\"media\"") && body.contains("\"private\""),
        "{body}"
    );

    // A shared folder link: the redirect keeps ?cap=, and the HTML listing's links carry it.
    let shared = server.url(&format!("/media?cap={media}"));
    let resp = common::http_agent().get(&shared).call().unwrap();
    assert_eq!(resp.status().as_u16(), 301);
    let location = resp
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(location.starts_with("/media/?cap="), "{location}");
    let (status, html, _) = get(&server.url(&location), None, None);
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("href=\"talk.mp4?cap="), "{html}");
    let href = html
        .split("href=\"talk.mp4?cap=")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (status, _, bytes) = get(&server.url(&format!("/media/talk.mp4?cap={href}")), None, None);
    assert_eq!(status, 200);
    assert!(bytes == f.talk);
}

/// `cap inspect` says what a token allows in words, checks its root when asked, and refuses
/// garbage; tokens never come from the command line.
#[test]
fn cap_inspect_reads_a_token_in_plain_words() {
    let f = Fixture::new();
    f.token(
        "t",
        "issue --root root.key --path /media/ --method read --audience tv --expires 2099-01-01T00:00:00Z",
    );
    f.token("n", "attenuate t --path /media/talk.mp4");
    let out = f.w.ok("cap inspect n --root root.key");
    for words in [
        "Signed by the root qeltrix-ed25519:",
        "paths: /media/ and everything in it",
        "methods: read",
        "servers: tv",
        "until 2099-01-01T00:00:00Z",
        "Block 1 (attenuation)",
        "paths: exactly /media/talk.mp4",
    ] {
        assert!(out.contains(words), "{words:?} in:\n{out}");
    }
    let e = f.w.fails("cap inspect n --root other-root.key", 2);
    assert!(e.contains("not signed by"), "{e}");
    f.w.write("junk", b"junk\n");
    let e = f.w.fails("cap inspect junk", 2);
    assert!(e.contains("not a capability token"), "{e}");
    // Bad caveats are usage errors.
    for bad in ["--path media/", "--method write", "--expires soon"] {
        f.w.fails(&format!("cap issue --root root.key {bad}"), 2);
    }
    let e = f.w.fails("cap attenuate t", 2);
    assert!(e.contains("at least one caveat"), "{e}");
}

/// `cap revoke` puts a token on the signed list; the server reloads it on SIGHUP and on its
/// period, then refuses that token and every token narrowed from it, but not its siblings or
/// its parent; an older list written back over it (a replay) is refused and the newer stays in
/// force; `/revocations.json` publishes the list in force.
#[test]
fn a_revoked_token_and_its_attenuations_stop_working_after_a_reload() {
    let f = Fixture::new();
    let parent = f.token("parent", "issue --root root.key --path /media/");
    f.token("a", "attenuate parent --method read");
    let a2 = f.token("a2", "attenuate a --path /media/talk.mp4");
    let b = f.token("b", "attenuate parent --method read");
    f.token("unrelated", "issue --root root.key --path /private/");
    let out = f.w.ok("cap revoke unrelated --root root.key --list revoked.json");
    assert!(out.contains("sequence 1"), "{out}");
    let server = Server::start_with(&f, &["--cap-revocations", "revoked.json", "--cap-reload", "3600"]);
    let talk = server.url("/media/talk.mp4");
    assert_eq!(get(&talk, Some(&a2), None).0, 200);
    let (status, list, _) = get(&server.url("/revocations.json"), None, None);
    assert_eq!(status, 200);
    assert!(list.contains("\"sequence\": 1"), "{list}");

    let sequence_1 = f.w.read("revoked.json");
    let out = f.w.ok("cap revoke a --root root.key --list revoked.json");
    assert!(out.contains("revoked a") && out.contains("sequence 2"), "{out}");
    server.signal(libc::SIGHUP);
    server.wait_for_log("loaded sequence 2");
    for (token, status) in [(&a2, 403), (&b, 200), (&parent, 200)] {
        let (got, body, _) = get(&talk, Some(token), None);
        assert_eq!(got, status, "{body}");
        if status == 403 {
            assert!(body.contains("revoked"), "{body}");
        }
    }
    let (_, body, _) = get(
        &talk,
        Some(fs::read_to_string(f.w.path("a")).unwrap().trim()),
        None,
    );
    assert!(body.contains("revoked"), "the revoked token itself: {body}");

    // A replay: the sequence-1 list written back. Refused on reload; revocation 2 stays.
    fs::write(f.w.path("revoked.json"), &sequence_1).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("older than the 2 in force");
    assert_eq!(get(&talk, Some(&a2), None).0, 403);
    let (_, list, _) = get(&server.url("/revocations.json"), None, None);
    assert!(list.contains("\"sequence\": 2"), "{list}");

    // Another signer's list is refused at start.
    f.w.ok("cap issue --root other-root.key -o o");
    f.w.ok("cap revoke o --root other-root.key --list foreign.json");
    let out = qeltrix_process()
        .current_dir(f.w.path(""))
        .args(["serve", "v", "--key-file", "key", "--listen", "127.0.0.1:0"])
        .args(["--cap-root", "root.key", "--cap-revocations", "foreign.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not by the root"),
        "{out:?}"
    );
    // Revoking needs the token's own root.
    let e =
        f.w.fails("cap revoke a --root other-root.key --list revoked.json", 2);
    assert!(e.contains("not signed by the root"), "{e}");
}

/// The period alone reloads the list: a revocation takes effect within `--cap-reload`.
#[test]
fn revocation_takes_effect_within_the_reload_period() {
    let f = Fixture::new();
    let t = f.token("t", "issue --root root.key --path /media/");
    f.token("x", "issue --root root.key --path /private/");
    f.w.ok("cap revoke x --root root.key --list revoked.json");
    let server = Server::start_with(&f, &["--cap-revocations", "revoked.json", "--cap-reload", "1"]);
    let talk = server.url("/media/talk.mp4");
    assert_eq!(get(&talk, Some(&t), None).0, 200);
    f.w.ok("cap revoke t --root root.key --list revoked.json");
    server.wait_for_log("loaded sequence 2");
    assert_eq!(get(&talk, Some(&t), None).0, 403);
}

/// The registry view: `/index.json` lists every container's path, size, root and signer, signed
/// with `--index-key`; `verify --index` checks a container fetched from anywhere against it (a
/// changed container, one not listed, a changed index or another signer all fail); with
/// `--cap-root` the index shows only what the token may read.
#[test]
fn the_signed_index_lets_a_client_check_containers_from_any_mirror() {
    let f = Fixture::new();
    f.w.ok("keygen --ed25519 -o index.key");
    f.w.ok("keygen --ed25519 -o producer.key");
    f.w.ok("sign -q -k producer.key v/media/talk.mp4.qltx");
    let index_pub = f.w.ok("keygen --ed25519 -o unused.key"); // a third key, for the mismatch
    let server = Server::start_args(&f, &["--index-key", "index.key"]);
    let (status, text, _) = get(&server.url("/index.json"), None, None);
    assert_eq!(status, 200, "{text}");
    f.w.write("index.json", text.as_bytes());
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let paths: Vec<&str> = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/media/notes.txt", "/media/talk.mp4", "/private/secret.bin"]
    );
    let talk = &doc["containers"][1];
    let info: serde_json::Value = serde_json::from_str(&f.w.ok("info --json v/media/talk.mp4.qltx")).unwrap();
    assert_eq!(talk["root"], info["root"]);
    assert_eq!(talk["size"], info["container_size"]);
    assert_eq!(
        talk["signer"], info["signer"],
        "the producer's signature is listed"
    );

    // A client with a copy from a mirror: listed, intact.
    fs::copy(f.w.path("v/media/talk.mp4.qltx"), f.w.path("mirror.qltx")).unwrap();
    let out =
        f.w.ok("verify --index index.json --index-signer index.key mirror.qltx");
    assert!(out.contains("listed in the index as /media/talk.mp4"), "{out}");
    // A mirror that changed one byte of a block: its root no longer matches, or its block fails.
    let mut bytes = f.w.read("mirror.qltx");
    bytes[5000] ^= 1;
    f.w.write("changed.qltx", &bytes);
    f.w.fails(
        "verify --index index.json --index-signer index.key changed.qltx",
        3,
    );
    // A container the index does not list.
    f.w.ok("pack -q --key-file key notes.txt stray.qltx");
    let e =
        f.w.fails("verify --index index.json --index-signer index.key stray.qltx", 3);
    assert!(e.contains("not in the index"), "{e}");
    // A changed index, and one checked against another key.
    f.w.write(
        "forged.json",
        text.replace("/media/talk.mp4", "/media/other.mp4").as_bytes(),
    );
    let e = f.w.fails(
        "verify --index forged.json --index-signer index.key mirror.qltx",
        3,
    );
    assert!(e.contains("does not match"), "{e}");
    let e = f.w.fails(
        &format!(
            "verify --index index.json --index-signer {} mirror.qltx",
            index_pub.trim()
        ),
        3,
    );
    assert!(e.contains("not by"), "{e}");
    drop(server);

    // With capability tokens: only what the token may read.
    let capped = Server::start_with(&f, &["--index-key", "index.key"]);
    let media = f.token("media", "issue --root root.key --path /media/");
    let (status, text, _) = get(&capped.url("/index.json"), Some(&media), None);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("/media/talk.mp4") && !text.contains("/private/"),
        "{text}"
    );
    assert_eq!(get(&capped.url("/index.json"), None, None).0, 401);
}

/// SIGHUP reloads the revocation list only for a server that has one; any other server ends on
/// it, as a foreground program does when its terminal closes.
#[test]
fn sighup_ends_a_server_without_a_revocation_list() {
    use std::os::unix::process::ExitStatusExt;
    let f = Fixture::new();
    let mut server = Server::start(&f);
    server.signal(libc::SIGHUP);
    assert_eq!(server.wait_exit().signal(), Some(libc::SIGHUP));
}
