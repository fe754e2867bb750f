//! Processes under test: waiting with a deadline (never sleeping as synchronization), their
//! output collected or logged to a file, guards that end them, FUSE mounts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any wait in these tests: a guard against hangs, not a performance limit.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` every 10 ms until it holds; panics naming `what` at the deadline.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(POLL);
    }
}

/// Somewhere a process writes its output: a pipe being [`Captured`], or a log file (a `Path`).
pub trait OutputSource {
    /// Everything written so far.
    fn text(&self) -> String;
    /// Whether everything the (exited) process wrote has been gathered.
    fn complete(&self) -> bool {
        true
    }
}

impl OutputSource for Path {
    fn text(&self) -> String {
        std::fs::read_to_string(self).unwrap_or_default()
    }
}

impl OutputSource for PathBuf {
    fn text(&self) -> String {
        self.as_path().text()
    }
}

/// A pipe's bytes gathered by a thread as they come (also output with no newline, such as a
/// prompt).
#[derive(Clone)]
pub struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    ended: Arc<AtomicBool>,
}

impl Captured {
    pub fn start(mut pipe: impl Read + Send + 'static) -> Captured {
        let c = Captured {
            bytes: Arc::new(Mutex::new(Vec::new())),
            ended: Arc::new(AtomicBool::new(false)),
        };
        let sink = c.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            sink.ended.store(true, Ordering::Release);
        });
        c
    }

    /// The complete lines gathered so far (a line still being written is left out).
    pub fn lines(&self) -> Vec<String> {
        complete_lines(&self.text()).map(str::to_string).collect()
    }
}

impl OutputSource for Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
    fn complete(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }
}

/// The lines of `text` that end with a newline.
pub fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text[..end].lines()
}

/// The first complete line of `text` that satisfies `pred`.
pub fn line_where(text: &str, pred: impl Fn(&str) -> bool) -> Option<String> {
    complete_lines(text).find(|l| pred(l)).map(str::to_string)
}

/// THE waiter on a process: polls until `found` picks its answer out of the process's `output`,
/// and returns it. Panics naming `what`, with the output, at the deadline or if the process exits
/// first (after a last look at all it wrote).
pub fn wait_for_output<T, O: OutputSource + ?Sized>(
    what: &str,
    child: &mut Child,
    output: &O,
    mut found: impl FnMut(&str) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        let text = output.text();
        if let Some(v) = found(&text) {
            return v;
        }
        if let Some(status) = child.try_wait().unwrap() {
            while !output.complete() {
                assert!(
                    start.elapsed() < DEADLINE,
                    "the output of an exited process never ended"
                );
                thread::sleep(POLL);
            }
            let text = output.text();
            if let Some(v) = found(&text) {
                return v;
            }
            panic!("the process exited ({status}) before {what}; output:\n{text}");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; output:\n{text}"
        );
        thread::sleep(POLL);
    }
}

/// Waits until `output` contains `needle`; returns the output.
pub fn wait_for_text<O: OutputSource + ?Sized>(child: &mut Child, output: &O, needle: &str) -> String {
    wait_for_output(&format!("{needle:?}"), child, output, |t| {
        t.contains(needle).then(|| t.to_string())
    })
}

/// Waits for the process to end; `None` at the deadline.
pub fn try_wait_exit(child: &mut Child) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > DEADLINE {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Waits for the process to end by itself; panics with its output at the deadline.
pub fn wait_exit<O: OutputSource + ?Sized>(child: &mut Child, output: &O) -> ExitStatus {
    try_wait_exit(child).unwrap_or_else(|| panic!("the process did not exit; output:\n{}", output.text()))
}

/// A child process killed and reaped on drop, also when the test fails.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of `/proc/PID/status` of a process, in its unit (kB for VmRSS/VmHWM, a count for
/// Threads).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
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

/// Whether FUSE mounts can be tested here. Under CI (`CI=true`) its absence is a failure: CI
/// installs fuse3.
pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("/dev/fuse is missing under CI: install fuse3 (apt-get install fuse3)");
    }
    eprintln!("skipping: /dev/fuse is missing (install fuse3 to run the mount tests)");
    false
}

/// The pid a daemonizing command printed as "(pid N)" on stderr.
pub fn daemon_pid(stderr: &str) -> i32 {
    stderr
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in: {stderr}"))
}

/// A daemon's mount, detached and the daemon killed on drop (also when the test fails).
pub struct DaemonMount {
    pub mnt: PathBuf,
    pub pid: i32,
}

/// Detaches (lazily) whatever is mounted at `mnt`, if anything is.
pub fn detach_mount(mnt: &Path) {
    if qeltrix::mount::mount_type(mnt).is_some() {
        let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a plain syscall on our own mount point.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for DaemonMount {
    fn drop(&mut self) {
        detach_mount(&self.mnt);
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

/// `PROGRAM ARGS` must succeed; returns its stdout.
pub fn run_ok(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed (scripts/test.sh installs it): {e}"));
    ok_output(program, &out)
}

/// `out` is a success; its stdout.
pub fn ok_output(what: &str, out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `diff -r A B` finds nothing.
pub fn assert_diff_r(a: &Path, b: &Path) {
    run_ok("diff", &["-r".as_ref(), a.as_os_str(), b.as_os_str()]);
}
