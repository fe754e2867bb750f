//! The core layer: the container format, its cryptography and the block codec. Pure functions
//! over bytes: no I/O, no threads, no `unsafe`. Everything above reaches the format through here.

#![forbid(unsafe_code)]

pub mod codec;
// Format v2, work in progress on branch v2-wip: tested here, not yet called by any reader or
// writer, so nothing outside its tests uses it. Drop the allow when the writer calls it.
#[allow(dead_code)]
pub mod codec_v2;
pub mod compress;
pub mod crypto;
pub mod format;
// Format v2 keyless integrity, work in progress like codec_v2: nothing calls it yet.
#[allow(dead_code)]
pub mod integrity_v2;
pub mod ranges;
