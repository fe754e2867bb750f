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

pub mod atomic;
pub mod block;
pub mod cache;
pub mod cli;
pub mod compress;
pub mod crypto;
mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod harden;
pub mod keyring;
pub mod mount;
mod ops;
pub mod pipeline;
pub mod reader;
pub mod rekey;
pub mod repair;
pub mod serve;
pub mod source;
pub mod stream_reader;
pub mod token;
pub mod url_input;
pub mod vault_rules;
pub mod writer;

pub use compress::CompressMode;
pub use crypto::Key;
pub use error::{catch_panic, panic_message, Error, Result};
pub use format::CipherId;
pub use ops::{pack, pack_reader, reencrypt, unpack, unpack_container, AtomicOutput, UnpackOptions};
pub use reader::{Container, ContainerInfo};
pub use source::ReadAt;
pub use writer::{PackOptions, PackSummary, StreamPacker};
