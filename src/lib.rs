//! walship: continuous archiving of append-only segment logs.
pub mod config;
pub mod manifest;
pub mod source;
pub mod target;
