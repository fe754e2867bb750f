//! Network tests: `qeltrix` servers (gateway, sink) as child processes, sockets with hang guards.

use super::{qeltrix_process, wait_for_output, Captured, OutputSource, DEADLINE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// A `qeltrix` server process (gateway or sink), killed when dropped. Its stderr and stdout are
/// captured so tests can wait for log lines.
pub struct Server {
    child: Child,
    stderr: Captured,
    stdout: Captured,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `qeltrix ARGS` (which must listen on port 0 of 127.0.0.1) and waits for its
    /// "listening on" line.
    pub fn start(args: &[&str]) -> Server {
        let mut command = qeltrix_process();
        command.args(args);
        Server::start_command(command)
    }

    /// Like [`Server::start`], with the process's open-file limit (soft and hard) set to `nofile`.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Server {
        Server::start_command(super::command_with_nofile(args, nofile))
    }

    /// Starts a prepared `qeltrix` command as [`Server::start`] does.
    pub fn start_command(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qeltrix");
        let stderr = Captured::start(child.stderr.take().expect("stderr"));
        let stdout = Captured::start(child.stdout.take().expect("stdout"));
        let mut server = Server {
            child,
            stderr,
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
        self.stderr.text()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lines()
    }

    /// Waits until a log line satisfies `pred` and returns it (see [`wait_for_output`]).
    pub fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        wait_for_output("the expected log line", &mut self.child, &self.stderr, |t| {
            super::line_where(t, &pred)
        })
    }

    /// A field of `/proc/PID/status` in its unit (kB for VmRSS/VmHWM, a count for Threads).
    pub fn proc_status(&self, field: &str) -> u64 {
        super::proc_status(self.pid(), field)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Waits for `qeltrix serve`'s "... on http://ADDR/ ..." line in its `log` and returns ADDR.
pub fn serve_addr(child: &mut Child, log: &std::path::Path) -> SocketAddr {
    wait_for_output("the server to listen", child, log, |text| {
        text.split("http://").nth(1)?.split('/').next()?.parse().ok()
    })
}

/// A running `qeltrix serve` logging to a file, killed on drop.
pub struct ServeProcess {
    /// In a cell so that waiting on the log (which checks the process is alive) needs no `mut`.
    child: std::cell::RefCell<Child>,
    pub addr: SocketAddr,
    log: std::path::PathBuf,
}

impl ServeProcess {
    /// Spawns `command` (a `qeltrix serve … --listen 127.0.0.1:0`) with its stderr in the file
    /// `log`, and waits for the address it listens on.
    pub fn spawn(mut command: Command, log: std::path::PathBuf) -> ServeProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = super::serve_addr(&mut child, &log);
        ServeProcess {
            child: std::cell::RefCell::new(child),
            addr,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (log lines are written when a response ends).
    pub fn wait_for_log(&self, needle: &str) -> String {
        super::wait_for_text(&mut self.child.borrow_mut(), &self.log, needle)
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        super::wait_exit(self.child.get_mut(), &self.log)
    }

    pub fn pid(&self) -> u32 {
        self.child.borrow().id()
    }

    /// Sends `signal` (SIGTERM, SIGHUP, …) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0);
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// An HTTP client for the server tests: every status is an answer (not an error), redirects
/// are returned rather than followed, and every request has the tests' deadline.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into()
}

/// The whole body of a response, however long.
pub fn body_bytes(resp: &mut ureq::http::Response<ureq::Body>) -> Vec<u8> {
    resp.body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap()
}
