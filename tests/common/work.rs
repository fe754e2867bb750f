//! A temporary working folder and the `qeltrix` binary run in it: the fixture most tests start
//! from, and small file helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use tempfile::TempDir;

/// Environment variables a test's `qeltrix` must not inherit: a passphrase, the crash hook of the
/// rekey tests, a reader's KDF cap.
pub const HERMETIC_ENV: [&str; 4] = [
    qeltrix::cli::PASSPHRASE_ENV,
    "QELTRIX_KEY_FILE",
    "QELTRIX_TEST_CRASH_AT",
    "QELTRIX_MAX_KDF_ITERATIONS",
];

/// The `qeltrix` binary with no passphrase in its environment and no controlling terminal.
pub fn qeltrix() -> assert_cmd::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qeltrix"));
    cmd.env_remove(qeltrix::cli::PASSPHRASE_ENV);
    assert_cmd::Command::from_std(without_terminal(cmd))
}

/// The `qeltrix` binary as a plain process (to spawn, signal, or give a pty), with none of the
/// test hooks' variables in its environment and no controlling terminal.
pub fn qeltrix_process() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qeltrix"));
    for var in HERMETIC_ENV {
        cmd.env_remove(var);
    }
    without_terminal(cmd)
}

/// Runs `cmd` in a session of its own, which has no controlling terminal: a passphrase prompt
/// (which reads `/dev/tty`, whatever stdin is) then fails at once with its error, the same
/// whether `cargo test` runs under CI or in someone's terminal, where it would wait for typing.
/// Tests that want a terminal give the command one (`script`).
fn without_terminal(mut cmd: std::process::Command) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory; nothing else runs between fork
    // and exec. It fails only for a process group leader, which a freshly forked child is not.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd
}

/// A fresh temporary folder (removed on drop, also when the test fails). Commands run in it, so
/// paths are short and relative; command lines are one string split on whitespace.
pub struct Work {
    pub dir: TempDir,
}

impl Work {
    pub fn new() -> Self {
        Work {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A folder with key file `key` holding the key `key_file_key(7)`.
    pub fn with_key() -> Self {
        let w = Work::new();
        w.write_key("key", 7);
        w
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` (creating its folders) and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("writing {name}: {e}"));
        p
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// Writes key file `name` for the key `key_file_key(fill)` and returns its path.
    pub fn write_key(&self, name: &str, fill: u8) -> PathBuf {
        let p = self.path(name);
        super::write_key_file(&p, fill);
        p
    }

    /// `qeltrix LINE` in this folder, hermetic as [`qeltrix_process`] (no terminal).
    pub fn cmd(&self, line: &str) -> assert_cmd::Command {
        let mut c = qeltrix_process();
        c.current_dir(self.dir.path()).args(line.split_whitespace());
        assert_cmd::Command::from_std(c)
    }

    /// [`Work::cmd`] as a plain process.
    pub fn std_cmd(&self, line: &str) -> std::process::Command {
        let mut c = qeltrix_process();
        c.current_dir(self.dir.path()).args(line.split_whitespace());
        c
    }

    pub fn run(&self, line: &str) -> Output {
        self.cmd(line).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, line: &str) -> String {
        let out = self.run(line);
        assert_code(&out, 0, line);
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires exit `code`; returns stderr.
    pub fn fails(&self, line: &str, code: i32) -> String {
        let out = self.run(line);
        assert_code(&out, code, line);
        stderr_of(&out)
    }

    /// Runs two command lines at once (output discarded); returns their exit codes.
    pub fn race(&self, a: &str, b: &str) -> (Option<i32>, Option<i32>) {
        let spawn = |line: &str| {
            self.std_cmd(line)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn(a), spawn(b));
        (a.wait().unwrap().code(), b.wait().unwrap().code())
    }
}

/// Requires exit `code` of `qeltrix LINE`, showing its output otherwise.
pub fn assert_code(out: &Output, code: i32, line: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "qeltrix {line}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Names in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The files in `dir` whose names end with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The permission bits of a file.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Where `needle` first stands in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
