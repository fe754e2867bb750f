//! The one helpers module of the integration tests (`mod common;` then `use common::*;`):
//!
//! - `data`: deterministic test data (one generator), unique suffixes;
//! - `container`: keys, pack options, containers packed and unpacked in memory, byte layouts;
//! - `work`: the temporary working folder, the `qeltrix` command, file helpers;
//! - `process`: deadlines, the waiters on processes and their output, process and mount guards;
//! - `net`: server processes and sockets.
//!
//! Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

mod container;
mod data;
mod net;
mod process;
mod work;

pub use container::*;
pub use data::*;
pub use net::*;
pub use process::*;
pub use work::*;
