//! The core layer: the container format, its cryptography and the block codec. Pure functions
//! over bytes: no I/O, no threads, no `unsafe`. Everything above reaches the format through here.

#![forbid(unsafe_code)]

pub mod codec;
pub mod codec_v2;
pub mod compress;
pub mod crypto;
pub mod file_record;
pub mod format;
pub mod integrity_v2;
pub mod overlay;
pub mod ranges;
pub mod units;
