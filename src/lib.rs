//! walship: continuous archiving of append-only segment logs to object
//! storage or a mounted filesystem.
//!
//! Data flow, per stream (one thread each, see [`archiver`]):
//!
//! ```text
//! source (scan dir, seal) ──facts──▶ plan (pure rules) ──step──▶ stream
//!   stream: mmap segments ─▶ CRC32 ─▶ target.put(batch) ─▶ catalog (remote record)
//!           ─▶ manifest journal (fsync) ─▶ position file ─▶ delete/mark segments
//! ```
//!
//! The rules of what to archive when ([`plan`], [`retry`]) are pure
//! functions; [`source`] and [`target`] only do I/O; [`stream`] ties them
//! together for one stream; [`manifest`] is the durable record and its
//! format; [`catalog`] joins the local journal with the records on the
//! target, which alone suffice to restore ([`restore`]) and to resume.
//! [`commands`] implements the CLI on top, [`daemon`] the long-running
//! process (signals, reload, systemd [`notify`]); `main.rs` only maps errors
//! to exit codes. Around them: [`metrics`] (Prometheus text), [`status`],
//! [`mapguard`] (surviving a segment truncated under its memory map),
//! [`durable`] (the one path for durable local writes), [`crc`] (CRC32 of a
//! concatenation from its pieces').
//!
//! Embedding: [`archiver::Archiver`] starts the streams, wakes one at once,
//! reports status, and stops them.

pub mod archiver;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crc;
pub mod daemon;
pub mod durable;
pub mod error;
pub mod human;
pub mod manifest;
pub mod mapguard;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod restore;
pub mod retry;
pub mod signals;
pub mod source;
pub mod status;
pub mod stream;
pub mod target;

pub use archiver::Archiver;
pub use config::Config;
pub use error::Error;
