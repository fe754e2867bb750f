//! Process-wide calls: user ids, resource limits, fork and sessions, stdio, the environment and
//! the allocator.

#[cfg(feature = "cli")]
use std::ffi::CString;
#[cfg(any(feature = "mount", feature = "gateway", feature = "cli"))]
use std::io;
#[cfg(feature = "cli")]
use std::os::fd::{AsFd, AsRawFd};

/// The real user id of the process.
#[cfg(feature = "mount")]
pub fn uid() -> u32 {
    // SAFETY: getuid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::getuid() }
}

/// The real group id of the process.
#[cfg(feature = "mount")]
pub fn gid() -> u32 {
    // SAFETY: getgid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::getgid() }
}

/// True if the process runs as root (effective user id 0).
#[cfg(feature = "mount")]
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The soft and hard limits on open files (`RLIMIT_NOFILE`).
#[cfg(any(feature = "mount", feature = "gateway"))]
pub fn open_file_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, narrower on some other targets
    let limits = (lim.rlim_cur as u64, lim.rlim_max as u64);
    Ok(limits)
}

/// Sets the soft limit on open files (`RLIMIT_NOFILE`) to `soft`, keeping the hard limit `hard`
/// (as read by [`open_file_limit`]); fails if `soft` is above it.
#[cfg(any(feature = "mount", feature = "gateway"))]
pub fn set_open_file_limit(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `lim` is a valid rlimit that outlives the call; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fails unless this process has exactly one thread (counted in `/proc/self/task`): what
/// `fork` and writing to the environment block need to be sound. Only the calling thread can
/// start another one, so the answer holds until it does.
#[cfg(feature = "cli")]
fn ensure_single_threaded(what: &str) -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads == 1 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} needs a single-threaded process, and {threads} threads are running"
        )))
    }
}

/// Which side of a [`fork`] the caller is on.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The parent; the child has this process id.
    Parent(i32),
    /// The child.
    Child,
}

/// Forks the process (fork(2)). Refused (an error) unless the process is single-threaded: the
/// child of a multi-threaded process gets only the calling thread, and any lock another thread
/// held (the allocator's, stdio's) stays locked in it forever.
#[cfg(feature = "cli")]
pub fn fork() -> io::Result<Forked> {
    ensure_single_threaded("fork")?;
    // SAFETY: the process has a single thread (checked above, and only this thread could start
    // another), so the child is a complete copy with no lock held by a vanished thread, and may
    // run any code, not only async-signal-safe functions.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent(child)),
    }
}

/// Makes the process the leader of a new session with no controlling terminal (setsid(2)).
#[cfg(feature = "cli")]
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid(2) takes no arguments and touches no memory.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the child `pid` to end and returns its raw wait status (waitpid(2)).
#[cfg(feature = "cli")]
pub fn wait_child(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid, writable int that outlives the call.
    if unsafe { libc::waitpid(pid, &mut status, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(status)
}

/// One of the standard streams, as a target of [`redirect_stdio`].
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    Stdin,
    Stdout,
    Stderr,
}

/// Points the standard stream `to` at the file or socket `from` (dup2(2)).
#[cfg(feature = "cli")]
pub fn redirect_stdio(from: impl AsFd, to: StdStream) -> io::Result<()> {
    let to = match to {
        StdStream::Stdin => libc::STDIN_FILENO,
        StdStream::Stdout => libc::STDOUT_FILENO,
        StdStream::Stderr => libc::STDERR_FILENO,
    };
    // SAFETY: `from` is borrowed, so its descriptor is open across the call; the target is one
    // of the standard descriptors, which std treats as always open and owned by no `OwnedFd`,
    // and dup2 replaces it atomically, so no descriptor owned by other code is closed.
    if unsafe { libc::dup2(from.as_fd().as_raw_fd(), to) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Overwrites the value of the environment variable `name` with zeros in the process's
/// environment block (what `/proc/PID/environ` shows), then removes the variable. Refused (an
/// error, nothing changed) unless the process is single-threaded, as another thread could be
/// reading the environment.
#[cfg(feature = "cli")]
pub fn scrub_env_var(name: &str) -> io::Result<()> {
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name holds a NUL byte"))?;
    ensure_single_threaded("clearing an environment variable")?;
    // SAFETY: no other thread exists (checked above), so nothing reads or changes the
    // environment meanwhile. getenv returns null or a pointer to the value's NUL-terminated
    // bytes inside the environment block, which is writable process memory; exactly strlen
    // bytes of it are overwritten, leaving the terminating NUL in place.
    unsafe {
        let p = libc::getenv(c_name.as_ptr());
        if !p.is_null() {
            std::ptr::write_bytes(p, 0, libc::strlen(p));
        }
    }
    std::env::remove_var(name);
    Ok(())
}

/// Limits glibc's malloc to `arenas` arenas (`mallopt(M_ARENA_MAX)`); a no-op elsewhere. Call
/// before any thread starts.
#[cfg(feature = "cli")]
pub fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;

    /// Runs `f` while a second thread is certainly alive.
    fn with_another_thread<T>(f: impl FnOnce() -> T) -> T {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        let out = f();
        drop(stop);
        other.join().unwrap();
        out
    }

    #[test]
    fn fork_and_environ_scrub_are_refused_with_other_threads_running() {
        let e = with_another_thread(fork).unwrap_err();
        assert!(e.to_string().contains("single-threaded"), "{e}");
        let name = "QELTRIX_SYS_TEST_SCRUB";
        std::env::set_var(name, "secret");
        let e = with_another_thread(|| scrub_env_var(name)).unwrap_err();
        assert!(e.to_string().contains("single-threaded"), "{e}");
        // Refused means untouched.
        assert_eq!(std::env::var(name).unwrap(), "secret");
        std::env::remove_var(name);
    }
}
