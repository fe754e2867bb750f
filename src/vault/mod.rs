//! The vault layer: a folder of containers and its rules, the same for every front end.

pub mod keyring;
pub mod rules;
