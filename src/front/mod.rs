//! The front ends: how containers reach people and programs. Each sits behind a cargo feature.

pub mod gateway;
pub mod mount;
pub mod serve;
pub mod token;
pub mod url_input;
