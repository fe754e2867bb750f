//! Process hardening for the long-running commands (`mount`, `serve`, `gateway`, `sink`): they
//! hold a key, and decrypted plaintext, in memory for hours.
//!
//! - Not dumpable (`prctl(PR_SET_DUMPABLE, 0)`): a crash writes no core file, and other processes
//!   of the same user can neither attach a debugger nor read `/proc/PID/mem` or `environ` (those
//!   files become root's).
//! - `RLIMIT_CORE` 0: no core file even if something makes the process dumpable again.
//! - [`lock_secret`]: keeps the pages of a secret's heap allocation out of swap (`mlock`), when the
//!   process may lock memory. Best effort: without the privilege or the `RLIMIT_MEMLOCK` room it is
//!   skipped. `mlockall` is not used: it would pin the whole block cache.
//!
//! Process-wide settings, so they are made by the command line before any thread starts, not by
//! the library.

use crate::core::crypto::Key;

/// Makes the process non-dumpable and sets its core file limit to 0. Call once at the start of a
/// long-running command, before any thread starts. Failures are ignored: neither call can fail on
/// Linux with these arguments, and the command must not refuse to run if one did.
pub fn harden_long_running_process() {
    // SAFETY: plain system calls with constant, valid arguments; no memory is passed but the
    // rlimit struct, which lives for the call.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
}

/// Locks the pages holding `secret` into memory (never swapped), if permitted. The slice must
/// point into an allocation that stays put (a heap buffer: a `String`'s or `Vec`'s contents, not
/// a value that is moved around). Returns whether the pages are locked; `EPERM` (no privilege) and
/// `ENOMEM` (over `RLIMIT_MEMLOCK`) are expected and not errors.
pub fn lock_secret(secret: &[u8]) -> bool {
    if secret.is_empty() {
        return true;
    }
    // SAFETY: mlock only changes the residency of pages that `secret` already maps; it reads and
    // writes no memory.
    unsafe { libc::mlock(secret.as_ptr().cast(), secret.len()) == 0 }
}

/// Locks the heap-held parts of `key` ([`lock_secret`]): the passphrase text. The fixed-size keys
/// (key files, vault and identity keys) live inside the `Key` value itself, which is moved into
/// the server, so there is no stable address to lock; they are zeroed when dropped.
pub fn lock_key(key: &Key) {
    for k in key.alternatives() {
        if let Key::Passphrase(p) = k {
            lock_secret(p.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locking_a_heap_secret_succeeds_or_is_refused_quietly() {
        let secret = vec![7u8; 100];
        // As root (or with room in RLIMIT_MEMLOCK) it locks; otherwise it says no, never panics.
        let _ = lock_secret(&secret);
        assert!(lock_secret(&[]));
        lock_key(&Key::Passphrase(crate::core::crypto::Passphrase::new(
            "correct horse",
        )));
    }
}
