//! The container layer: reading and writing whole containers over the storage seam, built on the
//! core's codec. Random access ([`reader`]), streaming writes ([`writer`]), the shared block cache
//! ([`cache`]), in-order streaming reads ([`stream_reader`]), index rebuilding ([`repair`]), key
//! slot rewriting ([`rekey`]) and the file-to-file operations ([`ops`]).

pub mod append;
pub mod cache;
pub mod chain;
pub mod compact;
pub mod edit;
pub mod ops;
pub mod pipeline;
pub mod reader;
pub mod rekey;
pub mod repair;
pub mod sign;
pub mod stream_reader;
pub mod writer;
