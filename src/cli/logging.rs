//! The binary's log subscriber: the library emits `tracing` events (connections, failures of one
//! request, unreadable containers in a mount); this writes them to stderr with a timestamp, the
//! level and the target (`qeltrix::gateway`, `qeltrix::sink`, `qeltrix::serve`,
//! `qeltrix::serve::access`, `qeltrix::mount`, ...).
//!
//! The level is `info` by default, `debug` with `-v`, `trace` with `-vv`, `error` with `-q`;
//! `RUST_LOG` (e.g. `RUST_LOG=qeltrix::serve::access=off` or `qeltrix::mount=debug`) adds to or
//! overrides that. A command's own output (the "listening on" line, the summary of a pack) is not
//! a log event: the CLI prints it itself, in the same words whatever the level.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// The level the flags ask for: `quiet` wins over `verbose`.
pub fn level(verbose: u8, quiet: bool) -> LevelFilter {
    match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    }
}

/// Installs the subscriber for the whole process. Events go to the stderr of the moment, so a
/// detached mount's events follow its stderr into the log file.
pub fn init(verbose: u8, quiet: bool) {
    let filter = EnvFilter::builder()
        .with_default_directive(level(verbose, quiet).into())
        .from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
