//! Every system call the library makes beyond `std`, and every `unsafe` block, live here.

pub mod harden;
pub mod test_hooks;
