//! The one helpers module of the integration tests (`mod common;` then `use common::*;`):
//!
//! - `data`: deterministic test data (one generator), unique suffixes;
//! - `container`: keys, pack options, containers packed and unpacked in memory, byte layouts;
//! - `work`: the temporary working folder, the `qeltrix` command, file helpers;
//! - `process`: deadlines, the waiters on processes and their output, process and mount guards;
//! - `net`: server processes and sockets;
//! - `garage`: a real Garage S3 cluster (three nodes or one) for the remote-storage tests.
//!
//! Each test binary uses a subset, hence the `dead_code` allowance. `work`, `process` and `net`
//! drive the binary and the front ends, so they exist only with the `cli` feature; the library's
//! own tests (`cargo test --no-default-features`) use `data` and `container`.
#![allow(dead_code, unused_imports)]

mod container;
mod data;
#[cfg(feature = "cli")]
mod garage;
#[cfg(feature = "cli")]
mod net;
#[cfg(feature = "cli")]
mod process;
#[cfg(feature = "cli")]
mod work;

pub use container::*;
pub use data::*;
#[cfg(feature = "cli")]
pub use garage::*;
#[cfg(feature = "cli")]
pub use net::*;
#[cfg(feature = "cli")]
pub use process::*;
#[cfg(feature = "cli")]
pub use work::*;
