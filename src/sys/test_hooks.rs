//! Hooks for the test suite, compiled in only with the `test-hooks` feature (which the test
//! suite turns on for the library and binary it builds; release builds never have them).
//!
//! - `QELTRIX_TEST_CRASH_AT=NAME`: the process kills itself with SIGKILL at crash point `NAME`
//!   (see `rekey`), so tests can check what a crash at each step leaves behind.
//! - `QELTRIX_TEST_NO_O_TMPFILE`: behave as if the file system had no `O_TMPFILE`, so the named
//!   fallback of `storage::atomic` can be tested where it exists.

/// True if the test suite asked for a crash at `name` (never, without the feature).
pub fn crash_requested(name: &str) -> bool {
    #[cfg(feature = "test-hooks")]
    {
        std::env::var("QELTRIX_TEST_CRASH_AT").is_ok_and(|v| v == name)
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        let _ = name;
        false
    }
}

/// Kills the process (SIGKILL, nothing runs after it) if the test suite asked for a crash at `name`.
pub fn crash_point(name: &str) {
    if crash_requested(name) {
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
    }
}

/// True if the test suite asked to act as if `O_TMPFILE` were missing (never, without the feature).
pub fn no_tmpfile() -> bool {
    cfg!(feature = "test-hooks") && std::env::var_os("QELTRIX_TEST_NO_O_TMPFILE").is_some()
}
