//! walship: continuous archiving of append-only segment logs.
pub mod cli;
pub mod config;
pub mod plan;
pub mod source;
pub mod target;
