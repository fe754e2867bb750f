//! The gateway and the sink over real sockets on 127.0.0.1: reflect, forward, chains, the
//! encrypt→decrypt tunnel, many clients at once, --flush-after, backpressure and every fault.

mod common;

use common::*;
use qeltrix::stream_reader::StreamReader;
use qeltrix::{Container, Error};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// Decrypts a whole container held in memory, checking its index and every block.
fn open_all(container: Vec<u8>, key_fill: u8) -> Vec<u8> {
    let c =
        Container::from_source(container, &key_file_key(key_fill)).expect("a complete, authentic container");
    c.seek_extract(0, c.len()).expect("every block decrypts")
}

fn gateway(setup: &Work, extra: &[&str]) -> Server {
    let key = setup.path("key");
    let mut args = vec![
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        key.to_str().unwrap(),
        "--workers",
        "2",
    ];
    if !extra.contains(&"--stats-interval") {
        args.extend_from_slice(&["--stats-interval", "0"]);
    }
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn reflect_returns_the_clients_bytes_as_a_container() {
    let setup = Work::with_key();
    let mut gw = gateway(&setup, &["--block-size", "64"]);
    let data = Arc::new(Data::bytes(1, 3 * 1024 * 1024 + 123));
    let back = round_trip(gw.addr, Arc::clone(&data));
    assert_eq!(open_all(back.clone(), 7), *data);
    // The same bytes read as a stream, block by block, end with a verified footer.
    let mut stream = StreamReader::open(&back[..], &key_file_key(7)).unwrap();
    let mut plain = Vec::new();
    while let Some(block) = stream.next_block(true).unwrap() {
        assert!(block.len() <= 64 * 1024);
        plain.extend_from_slice(&block);
    }
    assert_eq!(plain, *data);
    gw.wait_for_line(|l| l.contains("#1 closed: 3145851 bytes in"));
}

#[test]
fn forward_to_a_sink_saves_the_container_and_nothing_else() {
    let setup = Work::with_key();
    let out = out_dir(&setup);
    let mut sink = sink(&out, &[]);
    let gw = gateway(&setup, &["--to", &sink.addr_string(), "--block-size", "128"]);
    let data = Arc::new(Data::bytes(2, 2 * 1024 * 1024 + 5));
    let back = round_trip(gw.addr, Arc::clone(&data));
    assert!(back.is_empty(), "a sink sends nothing back");
    let saved = sink.wait_for_line(|l| l.contains("saved "));
    let files = files_ending(&out, ".qltx");
    assert_eq!(files.len(), 1, "{saved}");
    assert!(files_ending(&out, ".part").is_empty());
    let container = std::fs::read(&files[0]).unwrap();
    assert_eq!(open_all(container, 7), *data);
}

#[test]
fn forward_with_the_seeds_dest_host_and_port_options() {
    let setup = Work::with_key();
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dest.local_addr().unwrap().port().to_string();
    let gw = gateway(&setup, &["--dest-host", "127.0.0.1", "--dest-port", &port]);
    let data = Arc::new(Data::bytes(3, 100_000));
    let receiver = thread::spawn(move || {
        let (mut conn, _) = dest.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got
    });
    round_trip(gw.addr, Arc::clone(&data));
    assert_eq!(open_all(receiver.join().unwrap(), 7), *data);
}

#[test]
fn chained_gateways_with_different_keys_unwrap_layer_by_layer() {
    let setup = Work::with_key();
    let key2 = setup.write_key("key2", 9);
    // B reflects; A forwards to B and relays B's output back to the client.
    let b = Server::start(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        key2.to_str().unwrap(),
        "--block-size",
        "64",
        "--stats-interval",
        "0",
    ]);
    let a = gateway(&setup, &["--to", &b.addr_string(), "--block-size", "32"]);
    let data = Arc::new(Data::bytes(4, 1_000_000));
    let outer = round_trip(a.addr, Arc::clone(&data));
    assert!(
        Container::from_source(outer.clone(), &key_file_key(7)).is_err(),
        "the outer layer is key2's"
    );
    let inner = open_all(outer, 9);
    assert_eq!(open_all(inner, 7), *data);
}

/// A server that receives a stream, compares it with `Data` stream `seed` as it arrives,
/// replies with the byte count and closes. Returns (bytes received, all equal, ended cleanly).
fn checking_server(listener: TcpListener, seed: u64) -> thread::JoinHandle<(u64, bool, bool)> {
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut expected = Data::new(seed);
        let (mut buf, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let (mut total, mut equal) = (0u64, true);
        // Data fills in 8-byte words: keep reads aligned by comparing whole words only.
        let mut carry = Vec::new();
        let clean = loop {
            match conn.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    total += n as u64;
                    carry.extend_from_slice(&buf[..n]);
                    let whole = carry.len() / 8 * 8;
                    expected.fill(&mut want[..whole]);
                    equal &= carry[..whole] == want[..whole];
                    carry.drain(..whole);
                }
                Err(_) => break false,
            }
        };
        if !carry.is_empty() {
            let mut tail = vec![0u8; carry.len()];
            expected.fill(&mut tail);
            equal &= carry == tail;
        }
        let _ = conn.write_all(format!("received {total}").as_bytes());
        (total, equal, clean)
    })
}

#[test]
fn encrypt_then_decrypt_gateways_carry_100_mib_byte_exact() {
    let setup = Work::with_key();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap().to_string();
    let receiver = checking_server(server, 5);
    let b = gateway(&setup, &["--decrypt", "--to", &server_addr]);
    let mut a = gateway(&setup, &["--to", &b.addr_string()]);
    const LEN: u64 = 100 << 20;
    let sock = connect(a.addr);
    let mut writer = sock.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let (mut data, mut buf) = (Data::new(5), vec![0u8; 1 << 20]);
        for _ in 0..LEN >> 20 {
            data.fill(&mut buf);
            writer.write_all(&buf).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reply = String::new();
    (&sock).read_to_string(&mut reply).unwrap();
    sender.join().unwrap();
    let (total, equal, clean) = receiver.join().unwrap();
    assert_eq!(total, LEN);
    assert!(equal, "the plaintext differs from what was sent");
    assert!(clean, "the tunnel ended with an error");
    // The server's reply came back through both gateways.
    assert_eq!(reply, format!("received {LEN}"));
    a.wait_for_line(|l| l.contains("closed: 104857600 bytes in"));
}

#[test]
fn thirty_two_concurrent_clients_get_their_own_containers_and_no_thread_leaks() {
    let setup = Work::with_key();
    let gw = gateway(&setup, &["--block-size", "16"]);
    let threads_before = gw.proc_status("Threads");
    let clients: Vec<_> = (0..32u64)
        .map(|i| {
            let addr = gw.addr;
            thread::spawn(move || {
                let data = Arc::new(Data::bytes(100 + i, 200_000 + i as usize * 1000));
                let back = round_trip(addr, Arc::clone(&data));
                let c = Container::from_source(back, &key_file_key(7)).unwrap();
                assert_eq!(c.seek_extract(0, c.len()).unwrap(), *data, "client {i}");
                c.info().header.container_id
            })
        })
        .collect();
    let ids: HashSet<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(ids.len(), 32, "every connection has its own container id");
    wait_until("32 connections to be logged as closed", || {
        gw.log().matches(" closed: ").count() == 32
    });
    wait_until("the connection threads to end", || {
        gw.proc_status("Threads") == threads_before
    });
}

#[test]
fn flush_after_delivers_a_partial_block_promptly() {
    let setup = Work::with_key();
    let gw = gateway(&setup, &["--flush-after", "50"]);
    let sock = connect(gw.addr);
    (&sock).write_all(b"first words").unwrap();
    // The reader blocks until the gateway seals the partial block: no sleep, no end of input.
    let mut stream = StreamReader::open(&sock, &key_file_key(7)).unwrap();
    assert_eq!(stream.next_block(true).unwrap().unwrap(), b"first words");
    (&sock).write_all(b"and more").unwrap();
    assert_eq!(stream.next_block(true).unwrap().unwrap(), b"and more");
    sock.shutdown(Shutdown::Write).unwrap();
    assert_eq!(stream.next_block(true).unwrap(), None, "footer verified");
    assert_eq!(stream.entries().len(), 2);
}

#[test]
fn an_interactive_exchange_passes_through_a_tunnel_with_flush_after() {
    let setup = Work::with_key();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap().to_string();
    let b = gateway(&setup, &["--decrypt", "--to", &server_addr]);
    let a = gateway(&setup, &["--to", &b.addr_string(), "--flush-after", "20"]);
    let client = connect(a.addr);
    (&client).write_all(b"ping").unwrap();
    // The server gets the bytes while the client's stream is still open: no block is held back
    // by either gateway.
    let (conn, _) = server.accept().unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = [0u8; 4];
    (&conn).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    (&conn).write_all(b"pong").unwrap();
    (&client).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    // Both ends close in order; the tunnel reports a clean end on each side.
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    (&conn).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(conn);
    let mut tail = Vec::new();
    (&client).read_to_end(&mut tail).unwrap();
    assert!(tail.is_empty());
}

#[test]
fn a_stalled_destination_does_not_grow_the_gateways_memory_and_a_dropped_one_resets_the_client() {
    let setup = Work::with_key();
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut gw = gateway(&setup, &["--to", &dest.local_addr().unwrap().to_string()]);
    let rss_before = gw.proc_status("VmRSS");
    let sock = connect(gw.addr);
    let (stalled, _) = dest.accept().unwrap(); // accepted, never read
    const TOTAL: u64 = 512 << 20;
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (mut writer, sent) = (sock.try_clone().unwrap(), Arc::clone(&sent));
        thread::spawn(move || {
            let mut data = Data::new(6);
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..TOTAL >> 20 {
                data.fill(&mut buf);
                writer.write_all(&buf)?;
                sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            Ok::<(), std::io::Error>(())
        })
    };
    // Sample the gateway's memory until the sender has been stuck for a while (backpressure).
    let (mut peak, mut last, mut unchanged) = (0, u64::MAX, 0);
    wait_until("the sender to stall", || {
        peak = peak.max(gw.proc_status("VmRSS"));
        let now = sent.load(Ordering::Relaxed);
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        unchanged >= 50 || sender.is_finished()
    });
    let sent_when_stalled = sent.load(Ordering::Relaxed);
    assert!(
        sent_when_stalled < TOTAL,
        "the client could send everything to a destination that reads nothing"
    );
    // Workers × block size, plus socket buffers: far below what was sent.
    let growth_kib = peak.saturating_sub(rss_before);
    assert!(
        growth_kib < 48 * 1024,
        "gateway RSS grew by {growth_kib} KiB while {sent_when_stalled} bytes were sent"
    );

    // The destination drops: the gateway logs it and resets the client, whose send fails.
    close_with_reset(stalled);
    let result = sender.join().unwrap();
    assert!(result.is_err(), "the client's connection should have been closed");
    gw.wait_for_line(|l| l.contains("#1 output failed, client reset"));
}

#[test]
fn a_refusing_destination_closes_the_client_and_is_logged() {
    let setup = Work::with_key();
    let free_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut gw = gateway(&setup, &["--to", &free_port.to_string()]);
    let sock = connect(gw.addr);
    let mut buf = [0u8; 16];
    // Closed without a byte: EOF or a reset, either way promptly and with nothing sent back.
    match (&sock).read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let line = gw.wait_for_line(|l| l.contains("#1 output failed"));
    assert!(line.contains("connecting to the destination"), "{line}");
}

#[test]
fn a_vanished_client_leaves_an_incomplete_container_that_repair_recovers() {
    let setup = Work::with_key();
    let out = out_dir(&setup);
    let mut sink = sink(&out, &[]);
    let mut gw = gateway(
        &setup,
        &[
            "--to",
            &sink.addr_string(),
            "--block-size",
            "64",
            "--stats-interval",
            "1",
            "--stats-json",
        ],
    );
    const LEN: usize = 1_000_000; // 15 whole blocks and a partial one
    let data = Data::bytes(7, LEN);
    let sock = connect(gw.addr);
    (&sock).write_all(&data).unwrap();
    wait_until("the gateway to read every byte", || {
        gw.stdout_lines()
            .iter()
            .any(|l| l.contains(&format!("\"bytes_in\":{LEN}")))
    });
    close_with_reset(sock);
    gw.wait_for_line(|l| l.contains("#1 input failed"));
    sink.wait_for_line(|l| l.contains("incomplete container kept"));
    let parts = files_ending(&out, ".qltx.part");
    assert_eq!(parts.len(), 1);
    assert!(files_ending(&out, ".qltx").is_empty());

    assert_cmd::Command::cargo_bin("qeltrix")
        .unwrap()
        .args(["repair", parts[0].to_str().unwrap(), "--key-file"])
        .arg(setup.path("key"))
        .assert()
        .success();
    let repaired = files_ending(&out, ".qltx");
    assert_eq!(repaired.len(), 1);
    let plain = open_all(std::fs::read(&repaired[0]).unwrap(), 7);
    // Everything the gateway received went out sealed, the partial block too, and repair
    // recovered all of it.
    assert_eq!(plain, data);
}

#[test]
fn a_decrypting_gateway_rejects_a_forged_block_by_index_and_resets_the_output() {
    let setup = Work::with_key();
    let data = Data::bytes(8, 4 * 65536);
    let mut container = container_of(&data, 7, 65536);
    let info = qeltrix::ContainerInfo::read(&container).unwrap();
    let block2 = info.footer.entries[2];
    container[(block2.offset + block2.len - 5) as usize] ^= 1;

    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap().to_string();
    let receiver = thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut got = Vec::new();
        let ended = conn.read_to_end(&mut got);
        (got, ended.is_ok())
    });
    let mut gw = gateway(&setup, &["--decrypt", "--to", &server_addr]);
    let sock = connect(gw.addr);
    let _ = (&sock).write_all(&container);
    let _ = sock.shutdown(Shutdown::Write);
    let (got, clean) = receiver.join().unwrap();
    assert!(!clean, "the destination must see a reset, not a clean end");
    assert!(
        got.len() <= 2 * 65536 && got[..] == data[..got.len()],
        "only blocks before the forged one"
    );
    let line = gw.wait_for_line(|l| l.contains("#1 input failed"));
    assert!(line.contains("block 2"), "{line}");
}

#[test]
fn a_decrypting_gateway_resets_the_output_of_a_stream_cut_at_a_block_boundary() {
    let setup = Work::with_key();
    let data = Data::bytes(9, 3 * 65536);
    let mut container = container_of(&data, 7, 65536);
    let info = qeltrix::ContainerInfo::read(&container).unwrap();
    container.truncate(info.footer.entries[2].offset as usize); // drop block 2 and the footer
    let mut gw = gateway(&setup, &["--decrypt"]);
    let (back, ended) = try_round_trip(gw.addr, Arc::new(container));
    assert!(ended.is_err(), "the client must see a reset, not a clean end");
    assert!(back.len() <= 2 * 65536 && back[..] == data[..back.len()]);
    let line = gw.wait_for_line(|l| l.contains("#1 input failed"));
    assert!(line.contains("incomplete"), "{line}");
}

#[test]
fn a_decrypting_gateway_with_the_wrong_key_sends_nothing_on() {
    let setup = Work::with_key();
    let container = container_of(b"secret", 1, qeltrix::PackOptions::default().block_size);
    let mut gw = gateway(&setup, &["--decrypt"]);
    let (back, _) = try_round_trip(gw.addr, Arc::new(container));
    assert!(back.is_empty());
    let line = gw.wait_for_line(|l| l.contains("#1 input failed"));
    assert!(line.contains("wrong key"), "{line}");
    assert!(matches!(
        StreamReader::open(&[0u8; 10][..], &key_file_key(1))
            .err()
            .unwrap(),
        Error::NotAContainer(_)
    ));
}

#[test]
fn stats_are_printed_as_json_lines() {
    let setup = Work::with_key();
    let key = setup.path("key");
    let gw = Server::start(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        key.to_str().unwrap(),
        "--stats-interval",
        "1",
        "--stats-json",
    ]);
    round_trip(gw.addr, Arc::new(Data::bytes(30, 5000)));
    let mut found = None;
    wait_until("a stats line counting the connection", || {
        found = gw.stdout_lines().into_iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l).expect("JSON stats line");
            (v["connections_total"] == 1 && v["connections_active"] == 0).then_some(v)
        });
        found.is_some()
    });
    let v = found.unwrap();
    assert_eq!(v["bytes_in"], 5000);
    assert_eq!(v["blocks"], 1);
    assert!(v["bytes_out"].as_u64().unwrap() > 5000);
}

/// Polls until a client is served a whole round trip again (a connection's place is freed just
/// after its last log line, so one attempt may still be refused), and checks what came back.
fn served_again(addr: std::net::SocketAddr, seed: u64) {
    let data = Arc::new(Data::bytes(seed, 50_000));
    let mut back = None;
    wait_until("a client to be served again", || {
        let (got, ended) = try_round_trip(addr, Arc::clone(&data));
        // A refused attempt ends with a reset, or (when the sending side met the reset first)
        // with nothing at all; a served one always gets a container.
        back = (ended.is_ok() && !got.is_empty()).then_some(got);
        back.is_some()
    });
    assert_eq!(open_all(back.unwrap(), 7), *data);
}

fn sink(out: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--out-dir",
        out.to_str().unwrap(),
        "--stats-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn out_dir(setup: &Work) -> std::path::PathBuf {
    let out = setup.path("out");
    std::fs::create_dir(&out).unwrap();
    out
}

#[test]
fn connections_beyond_max_connections_are_refused_at_once_and_logged_once_per_burst() {
    let setup = Work::with_key();
    let mut gw = gateway(&setup, &["--max-connections", "3"]);
    let idle: Vec<_> = (0..3).map(|_| connect(gw.addr)).collect();
    gw.wait_for_line(|l| l.contains("#3 ") && l.contains("connected"));
    // Beyond the cap: each one is closed promptly instead of waiting (the read is the proof;
    // a served idle connection would block until the deadline).
    let until = Instant::now() + DEADLINE;
    for _ in 0..5 {
        let extra = connect(gw.addr);
        assert!(closed_by_server(&extra, until));
    }
    // One place frees: a legitimate client is served again, and the burst is summed up.
    close_with_reset(idle.into_iter().next().unwrap());
    gw.wait_for_line(|l| l.contains("#1 input failed"));
    served_again(gw.addr, 40);
    let line = gw.wait_for_line(|l| l.contains("accepting again;"));
    assert!(line.contains("connections were refused at the limit"), "{line}");
    // Read once the burst is over (the log is read as it comes): one line for the whole burst.
    assert_eq!(gw.log().matches("refusing new ones").count(), 1, "{}", gw.log());
}

#[test]
fn with_few_file_descriptors_new_clients_are_refused_not_left_hanging() {
    let setup = Work::with_key();
    let key = setup.path("key");
    let key = key.to_str().unwrap();
    let base = [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        key,
        "--workers",
        "1",
        "--stats-interval",
        "0",
    ];
    // A cap the descriptor limit cannot carry is refused at start, naming both numbers.
    let mut too_many = base.to_vec();
    too_many.extend_from_slice(&["--max-connections", "100"]);
    let out = command_with_nofile(&too_many, 64).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--max-connections 100") && err.contains("limit is 64"),
        "{err}"
    );

    let mut args = base.to_vec();
    args.extend_from_slice(&["--max-connections", "4"]);
    let gw = Server::start_with_nofile(&args, 64);
    // Far more idle clients than descriptors: every one beyond the cap is closed at once.
    // Connecting has a deadline too: a server out of descriptors leaves clients in its backlog.
    let until = Instant::now() + DEADLINE;
    // A refusal can be so prompt that its reset reaches a client before its connect returns:
    // that client (`None`) was refused too.
    let idle: Vec<Option<std::net::TcpStream>> = (0..40)
        .map(|i| {
            let left = until.saturating_duration_since(Instant::now());
            match std::net::TcpStream::connect_timeout(&gw.addr, left) {
                Ok(s) => Some(s),
                Err(e) if i >= 4 && e.kind() == std::io::ErrorKind::ConnectionReset => None,
                Err(e) => panic!("connecting before the deadline: {e}"),
            }
        })
        .collect();
    let refused = idle
        .iter()
        .skip(4)
        .filter(|s| s.as_ref().is_none_or(|s| closed_by_server(s, until)))
        .count();
    assert_eq!(refused, 36);
    drop(idle);
    // Dropped while the gateway reflects to them: each ends as closed or as an output failure.
    wait_until("the idle connections to end", || {
        gw.log()
            .lines()
            .filter(|l| l.contains(" closed: ") || l.contains(" failed"))
            .count()
            == 4
    });
    served_again(gw.addr, 41);
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let setup = Work::with_key();
    let mut gw = gateway(&setup, &["--idle-timeout", "1"]);
    let sock = connect(gw.addr);
    // Nothing sent: the gateway ends the connection (the reflected header, then end of stream).
    let mut back = Vec::new();
    (&sock).read_to_end(&mut back).expect("an orderly close");
    let line = gw.wait_for_line(|l| l.contains("#1 input failed"));
    assert!(line.contains("sent nothing for 1 s (--idle-timeout)"), "{line}");
    // A client that keeps talking is not idle, however long it takes.
    let data = Arc::new(Data::bytes(42, 10_000));
    assert_eq!(open_all(round_trip(gw.addr, Arc::clone(&data)), 7), *data);
}

#[test]
fn a_sink_closes_silent_connections_by_the_header_and_idle_timeouts() {
    let setup = Work::with_key();
    let out = out_dir(&setup);
    let mut sk = sink(&out, &["--header-timeout", "1", "--idle-timeout", "1"]);
    // No header: closed, nothing saved.
    let silent = connect(sk.addr);
    assert!(closed_by_server(&silent, Instant::now() + DEADLINE));
    let line = sk.wait_for_line(|l| l.contains("#1 failed"));
    assert!(line.contains("within 1 s (--header-timeout)"), "{line}");
    // A header, then silence: cut, kept as a part for repair.
    let container = container_of(&Data::bytes(43, 200_000), 7, 65536);
    let stalled = connect(sk.addr);
    (&stalled).write_all(&container[..100_000]).unwrap();
    assert!(closed_by_server(&stalled, Instant::now() + DEADLINE));
    let line = sk.wait_for_line(|l| l.contains("#2 incomplete container kept"));
    assert!(line.contains("sent nothing for 1 s (--idle-timeout)"), "{line}");
    assert_eq!(files_ending(&out, ".qltx.part").len(), 1);
}

#[test]
fn a_stream_over_max_size_is_cut_and_its_part_removed() {
    let setup = Work::with_key();
    let out = out_dir(&setup);
    let mut sk = sink(&out, &["--max-size", "1"]);
    let small = container_of(&Data::bytes(44, 100_000), 7, 65536);
    send_and_close(sk.addr, b"", &small).expect("saved, closed in order");
    sk.wait_for_line(|l| l.contains("#1 saved"));
    let big = container_of(&Data::bytes(45, 3 << 20), 7, 65536);
    assert!(
        send_and_close(sk.addr, b"", &big).is_err(),
        "the sender must see a reset"
    );
    let line = sk.wait_for_line(|l| l.contains("#2 failed"));
    assert!(line.contains("larger than 1048576 bytes (--max-size)"), "{line}");
    assert!(files_ending(&out, ".part").is_empty(), "the part is removed");
    assert_eq!(files_ending(&out, ".qltx").len(), 1);

    // The gateway counts its client's bytes the same way.
    let mut gw = gateway(&setup, &["--max-size", "1"]);
    let sent = send_and_close(gw.addr, b"", &Data::bytes(46, 2 << 20));
    assert!(sent.is_err(), "the client must see a reset");
    let line = gw.wait_for_line(|l| l.contains("#1 input failed"));
    assert!(line.contains("more than 1048576 bytes (--max-size)"), "{line}");
}

#[test]
fn the_sink_quota_counts_files_and_parts_and_cuts_what_would_pass_it() {
    let setup = Work::with_key();
    let out = out_dir(&setup);
    let other = out.join("earlier.bin");
    std::fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let mut sk = sink(&out, &["--quota", "3"]);
    // 1 MiB of other files + 1.5 MiB: within 3 MiB.
    let first = container_of(&Data::bytes(47, 3 << 19), 7, 65536);
    send_and_close(sk.addr, b"", &first).expect("saved");
    sk.wait_for_line(|l| l.contains("#1 saved"));
    // Another MiB would pass the quota: cut, part removed, sender reset.
    let second = container_of(&Data::bytes(48, 1 << 20), 7, 65536);
    assert!(send_and_close(sk.addr, b"", &second).is_err());
    let line = sk.wait_for_line(|l| l.contains("#2 failed"));
    assert!(line.contains("quota of 3145728 bytes (--quota)"), "{line}");
    assert!(files_ending(&out, ".part").is_empty());
    // Space freed by someone else is found again.
    std::fs::remove_file(&other).unwrap();
    send_and_close(sk.addr, b"", &second).expect("saved");
    sk.wait_for_line(|l| l.contains("#3 saved"));
    assert_eq!(files_ending(&out, ".qltx").len(), 2);
}

#[test]
fn a_sink_removes_stale_parts_at_start_and_saves_files_0600() {
    let setup = Work::with_key();
    let out = out_dir(&setup);
    for name in ["a.qltx.part", "b.qltx.part"] {
        std::fs::write(out.join(name), b"left by a crash").unwrap();
    }
    std::fs::write(out.join("notes.part"), b"not ours").unwrap();
    let mut sk = sink(&out, &[]);
    sk.wait_for_line(|l| l.contains("removed 2 stale"));
    assert!(files_ending(&out, ".qltx.part").is_empty());
    assert!(
        out.join("notes.part").exists(),
        "only *.qltx.part files are the sink's"
    );
    let container = container_of(&Data::bytes(49, 10_000), 7, 65536);
    send_and_close(sk.addr, b"", &container).expect("saved");
    sk.wait_for_line(|l| l.contains("#1 saved"));
    let saved = files_ending(&out, ".qltx");
    assert_eq!(saved.len(), 1);
    assert_eq!(mode_of(&saved[0]), 0o600);
}

#[test]
fn tokens_wrong_or_missing_are_refused_and_the_right_one_accepted() {
    let setup = Work::with_key();
    let out = out_dir(&setup);
    let (gw_secret, sink_secret) = ("gw-Secret-4f1c", "sink-Secret-9a7e");
    std::fs::write(setup.path("gw-token"), format!("{gw_secret}\n")).unwrap();
    std::fs::write(setup.path("sink-token"), format!("{sink_secret}\n")).unwrap();
    let sink_token = setup.path("sink-token");
    let gw_token = setup.path("gw-token");
    let mut sk = sink(&out, &["--token-file", sink_token.to_str().unwrap()]);
    let mut gw = gateway(
        &setup,
        &[
            "--to",
            &sk.addr_string(),
            "--token-file",
            gw_token.to_str().unwrap(),
            "--to-token-file",
            sink_token.to_str().unwrap(),
        ],
    );
    let data = Data::bytes(50, 300_000);
    // Missing: the data's first bytes are taken as the token line.
    assert!(send_and_close(gw.addr, b"", &data).is_err());
    gw.wait_for_line(|l| l.contains("#1 refused"));
    // Wrong.
    assert!(send_and_close(gw.addr, b"gw-Secret-4f1d\n", &data).is_err());
    let line = gw.wait_for_line(|l| l.contains("#2 refused"));
    assert!(line.contains("wrong token"), "{line}");
    assert!(files_ending(&out, ".qltx").is_empty());
    // Right (a CR before the LF is allowed): the gateway presents the sink's token onwards.
    send_and_close(gw.addr, format!("{gw_secret}\r\n").as_bytes(), &data).expect("clean end");
    sk.wait_for_line(|l| l.contains("saved "));
    let files = files_ending(&out, ".qltx");
    assert_eq!(files.len(), 1);
    assert_eq!(open_all(std::fs::read(&files[0]).unwrap(), 7), data);
    // A sender without the sink's token is refused by the sink too.
    let container = container_of(&data, 7, 65536);
    assert!(send_and_close(sk.addr, b"", &container).is_err());
    sk.wait_for_line(|l| l.contains("refused"));
    for log in [gw.log(), sk.log()] {
        assert!(!log.contains("Secret"), "a token leaked into the log:\n{log}");
    }
}

#[test]
fn an_idle_gateway_logs_its_stats_once_not_every_interval() {
    let setup = Work::with_key();
    let mut gw = gateway(&setup, &["--stats-interval", "1", "-v"]);
    let data = Arc::new(Data::bytes(11, 10_000));
    assert_eq!(open_all(round_trip(gw.addr, Arc::clone(&data)), 7), *data);
    gw.wait_for_line(|l| l.contains("#1 closed"));
    // The reporter's own clock: `-v` shows each unchanged interval as a debug line. Three of
    // them after the connection closed, and still one info line for the same counters.
    let wanted = "stats: connections 1 total, 0 active";
    gw.wait_for_line(|l| l.contains(wanted));
    let unchanged_after_it = |log: &str| {
        log.split_once(wanted)
            .map_or(0, |(_, after)| after.matches("stats: unchanged").count())
    };
    wait_until("three unchanged intervals", || unchanged_after_it(&gw.log()) >= 3);
    let log = gw.log();
    assert_eq!(log.matches(wanted).count(), 1, "{log}");
}
