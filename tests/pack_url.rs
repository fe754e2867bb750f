//! `qeltrix pack URL OUT` against a small HTTP server on 127.0.0.1 started by each test.

mod common;

use common::*;
use qeltrix::Container;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;

/// Serves one request with `status`, announcing `announced` bytes but sending `body`. Returns
/// the address and the request line it received.
fn serve_once(status: &'static str, announced: usize, body: Vec<u8>) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let mut conn = conn;
        let head = format!("HTTP/1.1 {status}\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n");
        let _ = conn
            .write_all(head.as_bytes())
            .and_then(|()| conn.write_all(&body));
        request_line
    });
    (addr, handle)
}

fn pack(setup: &Work, url: &str, out: Option<&str>) -> assert_cmd::assert::Assert {
    let mut cmd = setup.cmd("pack");
    cmd.arg(url)
        .args(out)
        .arg("--key-file")
        .arg(setup.path("key"))
        .arg("--block-size")
        .arg("64");
    cmd.assert()
}

#[test]
fn a_download_is_streamed_into_a_container() {
    let setup = Work::with_key();
    let body = Data::bytes(21, 1_500_000);
    let (addr, server) = serve_once("200 OK", body.len(), body.clone());
    pack(&setup, &format!("http://{addr}/files/video.bin?x=1"), None).success();
    assert!(server
        .join()
        .unwrap()
        .starts_with("GET /files/video.bin?x=1 HTTP/1.1"));
    // The output is named after the URL's file name.
    let c = Container::open(setup.path("video.bin.qltx"), &key_file_key(7)).unwrap();
    assert_eq!(c.seek_extract(0, c.len()).unwrap(), body);
}

#[test]
fn a_download_cut_short_of_its_content_length_fails_and_leaves_nothing() {
    let setup = Work::with_key();
    let body = Data::bytes(22, 200_000);
    let (addr, server) = serve_once("200 OK", 300_000, body);
    pack(&setup, &format!("http://{addr}/f"), Some("out.qltx"))
        .failure()
        .code(1);
    server.join().unwrap();
    assert!(!setup.path("out.qltx").exists());
    assert_eq!(
        std::fs::read_dir(setup.dir.path()).unwrap().count(),
        1,
        "only the key file"
    );
}

#[test]
fn an_http_error_status_is_reported() {
    let setup = Work::with_key();
    let (addr, server) = serve_once("404 Not Found", 9, b"not found".to_vec());
    let out = pack(&setup, &format!("http://{addr}/missing"), Some("out.qltx"))
        .failure()
        .code(1);
    server.join().unwrap();
    let msg = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(msg.contains("404"), "{msg}");
    assert!(!setup.path("out.qltx").exists());
}

#[test]
fn a_url_without_a_file_name_needs_an_output() {
    let setup = Work::with_key();
    pack(&setup, "http://127.0.0.1:1/", None).failure().code(2);
}
