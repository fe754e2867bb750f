//! Qeltrix: seekable encrypted containers.
//!
//! A file is split into fixed-size blocks, each sealed with its own AEAD key; a footer index,
//! authenticated by a MAC, maps plaintext offsets to blocks, so any byte range can be read by
//! decrypting only the blocks that cover it.
//!
//! - [`StreamPacker`] writes a container (files, stdin, sockets); [`pack`] is the file-to-file
//!   convenience.
//! - [`Container`] reads one: `open`, `read_at`, `seek_extract`, `unpack_to`; [`unpack`] is the
//!   file-to-file convenience.
//! - [`stream_reader::StreamReader`] reads one front to back as it arrives; [`repair`] recovers
//!   the whole blocks of a cut one; [`gateway`] moves streams through TCP.
//! - [`serve::SeekServer`] serves containers over HTTP with `Range` support.
//! - [`format`] and [`crypto`] are the pure layers below them; `docs/FORMAT.md` is the spec.
//!
//! The source is layered (see `docs/ARCHITECTURE.md`): `core` (format, crypto, codec) →
//! `storage` (the one seam to bytes) → `container` → `vault` → `front` (mount, serve, gateway).

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod container;
mod core;
mod error;
mod front;
pub mod storage;
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod sys;
pub mod vault;

#[doc(hidden)]
pub mod fuzzing;

pub use crate::core::{codec, compress, crypto, file_record, format, integrity_v2, overlay, ranges, units};
pub use container::{
    append, cache, chain, compact, edit, ops, pipeline, reader, rekey, repair, sign, stream_reader, writer,
};
#[cfg(feature = "cap")]
pub use front::capability;
#[cfg(feature = "gateway")]
pub use front::gateway;
#[cfg(feature = "mount")]
pub use front::mount;
#[cfg(feature = "cap")]
pub use front::registry;
#[cfg(feature = "serve")]
pub use front::serve;
#[cfg(feature = "token")]
pub use front::token;
#[cfg(feature = "url")]
pub use front::url_input;
#[cfg(feature = "watch")]
pub use front::watch;
pub use storage::atomic;
pub use sys::harden;
pub use vault::keyring;

/// The type of [`PackOptions::file_meta`] and [`Container::file_meta`]: without it, neither can be
/// used outside the crate.
pub use crate::core::file_record::FileMeta;
pub use compress::CompressMode;
pub use crypto::{Key, Recipient};
pub use error::{catch_panic, panic_message, Error, Lock, MountProblem, Result, SlotRefusal};
pub use format::CipherId;
pub use ops::{pack, pack_reader, reencrypt, unpack, unpack_container, AtomicOutput, UnpackOptions};
pub use reader::{Container, ContainerInfo};
pub use storage::ReadAt;
pub use writer::{PackOptions, PackSummary, StreamPacker};

/// Names the `qeltrix` binary reads from its environment.
pub mod cli {
    /// The environment variable holding a passphrase (read once, then cleared from the process).
    pub const PASSPHRASE_ENV: &str = "QELTRIX_PASSPHRASE";
}
