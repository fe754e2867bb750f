//! The one place for system calls: every call into `libc` beyond constants, and every `unsafe`
//! block of the crate, live here as small safe wrappers, each `unsafe` block with a `SAFETY:`
//! comment saying why it is sound. The rest of the library (`#![deny(unsafe_code)]`) and the
//! `qeltrix` binary (`#![forbid(unsafe_code)]`) call these wrappers.
//!
//! Public only so that the binary can reach it: not a stable API.
//!
//! - `fs`: linking an unnamed file, early writeback, statfs, unmount.
//! - `net`: socket options.
//! - `process`: ids, resource limits, fork, sessions, stdio, the environment, malloc tuning.
//! - `poll`: waiting until one of several descriptors can be read.
//! - `signal`: blocking termination signals and waiting for them.
//! - `harden`: not dumpable, no core files, locked secrets.
//! - `test_hooks`: crash points for the test suite.

pub mod fs;
pub mod harden;
#[cfg(feature = "gateway")]
pub mod net;
#[cfg(feature = "cli")]
pub mod poll;
pub mod process;
#[cfg(feature = "cli")]
pub mod signal;
pub mod test_hooks;
