//! Helpers for the network tests: running `qeltrix` servers as child processes (killed on drop),
//! reading their log lines, polling conditions with a deadline, deterministic test data.

#![allow(dead_code)]

use qeltrix::crypto::KeyFileKey;
use qeltrix::Key;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any wait in these tests: a guard against hangs, not a performance limit.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Deterministic, incompressible test bytes: stream `seed`, from position 0.
pub struct Data {
    state: u64,
}

impl Data {
    pub fn new(seed: u64) -> Self {
        Data {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            // xorshift64*
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `len` bytes of stream `seed`; lengths are multiples of 8 apart from the last chunk.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        Data::new(seed).fill(&mut v);
        v
    }
}

/// A fresh temporary folder with a key file `key` in it.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Setup { dir };
        s.write_key("key", 7);
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes key file `name` holding 32 bytes of `fill` (as hex) and returns its path.
    pub fn write_key(&self, name: &str, fill: u8) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, format!("{}\n", hex::encode([fill; 32]))).expect("key file");
        p
    }
}

pub fn key(fill: u8) -> Key {
    Key::KeyFile(KeyFileKey::from_bytes([fill; 32]))
}

/// A `qeltrix` server process (gateway or sink), killed when dropped. Its stderr lines are
/// collected so tests can wait for log events.
pub struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `qeltrix ARGS` (which must listen on port 0 of 127.0.0.1) and waits for its
    /// "listening on" line.
    pub fn start(args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_qeltrix"));
        command.args(args);
        Server::start_command(command)
    }

    /// Like [`Server::start`], with the process's open-file limit (soft and hard) set to `nofile`.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Server {
        Server::start_command(command_with_nofile(args, nofile))
    }

    /// Starts a prepared `qeltrix` command as [`Server::start`] does.
    pub fn start_command(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qeltrix");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        collect(child.stderr.take().expect("stderr"), Arc::clone(&lines));
        collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout));
        let mut server = Server {
            child,
            lines,
            stdout,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = server.wait_for_line(|l| l.contains("listening on"));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ',']).next())
            .expect("an address after 'listening on'");
        server.addr = addr.parse().expect("a socket address");
        server
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred` and returns it. Panics with the log if the server
    /// exits or the deadline passes first.
    pub fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the collector catch the last lines before reporting.
                thread::sleep(Duration::from_millis(50));
                if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                    return l.clone();
                }
                panic!(
                    "server exited ({status}) before the expected line; log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for a log line; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A field of `/proc/PID/status` in its unit (kB for VmRSS/VmHWM, a count for Threads).
    pub fn proc_status(&self, field: &str) -> u64 {
        proc_status(self.pid(), field)
    }
}

/// A field of `/proc/PID/status` of any process, in its unit (kB for VmRSS/VmHWM).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(l) => lines.lock().unwrap().push(l),
                Err(_) => return,
            }
        }
    });
}

/// Polls `cond` every 10 ms until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Connects to a server with read and write timeouts as hang guards.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Sends `data` on one thread while reading everything back on this one (a reflecting server
/// needs both at once), half-closing after the last byte. Returns what came back.
pub fn round_trip(addr: SocketAddr, data: Arc<Vec<u8>>) -> Vec<u8> {
    let (back, ended) = try_round_trip(addr, data);
    ended.expect("the reply ends cleanly");
    back
}

/// Like [`round_trip`] for a server that may reset the connection: returns what came back and
/// how the reply ended. Send errors (the server gave up early) are ignored.
pub fn try_round_trip(addr: SocketAddr, data: Arc<Vec<u8>>) -> (Vec<u8>, std::io::Result<usize>) {
    let sock = connect(addr);
    let mut writer = sock.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut back = Vec::new();
    let ended = (&sock).read_to_end(&mut back);
    let _ = sender.join().unwrap();
    (back, ended)
}

/// Closes `stream` with a reset instead of an orderly end-of-stream: a client that vanished.
pub fn close_with_reset(stream: TcpStream) {
    qeltrix::gateway::set_reset_on_close(&stream);
    drop(stream);
}

/// The files in `dir` whose names end with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// `qeltrix ARGS` with its open-file limit (soft and hard) set to `nofile`.
pub fn command_with_nofile(args: &[&str], nofile: u64) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_qeltrix"));
    command.args(args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// True once a server has closed `sock` (end of stream or reset); reads and discards what comes
/// first. Panics if nothing happens by `until` (the hang this guards against; a shared `until`
/// bounds a loop over many sockets).
pub fn closed_by_server(sock: &TcpStream, until: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the server neither closed nor reset the connection in time"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        match (&*sock).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("the server neither closed nor reset the connection: {e}"),
        }
    }
}

/// A complete container of `data` under key file `key(key_fill)`, in memory.
pub fn container_of(data: &[u8], key_fill: u8, block_size: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = qeltrix::PackOptions {
        block_size,
        ..Default::default()
    };
    let mut p = qeltrix::StreamPacker::new(&mut out, &[key(key_fill)], &opts).unwrap();
    p.write_all(data).unwrap();
    p.finish().unwrap();
    out
}

/// Sends `prefix` then `data` to a server and half-closes, reading (and discarding) whatever
/// comes back until the server closes. `Ok` if everything was sent and the server ended in
/// order; `Err` if the server reset the connection, seen by the sending or the reading side
/// (whichever syscall meets the reset first reports it).
pub fn send_and_close(addr: SocketAddr, prefix: &[u8], data: &[u8]) -> std::io::Result<()> {
    let sock = connect(addr);
    let mut writer = sock.try_clone().unwrap();
    let (prefix, data) = (prefix.to_vec(), data.to_vec());
    let sender = thread::spawn(move || {
        writer.write_all(&prefix)?;
        writer.write_all(&data)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut back = Vec::new();
    let ended = (&sock).read_to_end(&mut back);
    let sent = sender.join().unwrap();
    ended.and(sent)
}

/// The permission bits of a file.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
