//! The front ends: how containers reach people and programs. Each sits behind a cargo feature.

#[cfg(feature = "cap")]
pub mod capability;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "mount")]
pub mod mount;
#[cfg(feature = "cap")]
pub mod registry;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "token")]
pub mod token;
#[cfg(feature = "url")]
pub mod url_input;
#[cfg(feature = "watch")]
pub mod watch;
