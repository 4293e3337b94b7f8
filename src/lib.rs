//! walship: continuous archiving of append-only segment logs to object
//! storage or a mounted filesystem.
//!
//! Data flow, per stream (one thread each):
//!
//! ```text
//! mailbox (wake, archive now, stop) ─▶ worker ─▶ pass:
//!   source (scan dir) ─facts─▶ plan (seal, committed, next step: pure)
//!   ─▶ prepare (mmap + CRC32) ─▶ upload (target.put, or heal) ─▶ commit:
//!      remote record (catalog) ─▶ journal (fsync) ─▶ position file ─▶ delete/mark
//! ```
//!
//! To follow one batch from directory to stored object to record, read in
//! this order: [`archiver`] (starts one thread per stream, the library API,
//! reload) → [`stream::worker`] (the thread: mailbox, passes, backoff;
//! messages in [`stream::mailbox`]; [`source::watch`] posts a wake-up when
//! the directory changes, through inotify) → [`stream`] (opening a stream: the
//! state directory's binding to its archive, records adopted from the
//! target checked against the local segments; then a pass: scan, plan, the
//! three stages, which `stream::pipeline` overlaps: batch N+1 uploads while
//! batch N commits and batch N+2 is prepared) → [`source`] (which files are segments, through
//! [`naming`]: file name ↔ position; what waits, what is archived, what
//! came late; memory maps) → [`plan`] (sealing, committed position, the
//! batch and gap rules: pure) → `stream::prepare` (map, checksum, build and
//! validate the record; [`mapguard`] survives a segment truncated under its
//! map; with `compression = zstd`, [`frames`] measures each segment's zstd
//! frame) → `stream::upload` (store, or find it already stored; [`target`]
//! with its [`target::keys`], file (whose paged listing sorts each walk of
//! a directory in a byte budget: `target::fs::smallest`) and S3 backends;
//! zstd frames produced again into the part buffers) → `stream::commit` (the
//! remote record through [`catalog`], the local journal of [`manifest`],
//! the position file, the acknowledgement; between passes
//! [`catalog::compact`] folds the remote record objects into larger ones).
//!
//! Snapshots: between passes the stream's thread starts a [`snapshot`] job
//! when the rule says one is due or one is asked for (`stream::snapshots`);
//! the job runs the command and stores its output on a thread of its own
//! and comes back through the mailbox to be recorded. The daemon answers
//! `walship snapshot` over its [`control`] socket.
//!
//! Around them: [`config`] (the INI file, every setting validated once),
//! [`statedir`] (every path under `state_dir`, the stream lock, stale temp
//! files), [`durable`] (the one path for durable local writes: temp, fsync,
//! rename, directory fsync; and for opening walship's own files), [`status`]
//! (what a stream reports, mirrored to its status file) and [`metrics`] (its
//! Prometheus page), [`fleet`] (heartbeat objects on the target and the
//! fleet index of one object per node that `walship fleet` reads, and the
//! offloader election of `replicas = on` streams, whose standbys follow the
//! offloader's records instead of uploading; `run --once` takes part too),
//! [`retry`] (backoff), [`crc`] (CRC32 of a concatenation
//! from its pieces'), [`human`] (counts and sizes for people), [`progress`]
//! (the terminal progress line of restore and verify), and for metered
//! links [`bandwidth`] (the process-wide token buckets that pace upload and
//! download bytes where targets write them, and the daily schedule),
//! [`budget`] (the data budget's durable count per billing period) and
//! [`calendar`] (local dates and time of day, via `localtime_r`); a
//! stream's `backlog_limit` is `stream::backlog`'s. The remote records
//! alone suffice to restore ([`restore`], from the newest snapshot at or
//! before a position: `restore::start`; it decodes and checks zstd frames
//! through [`frames::decode`] and writes large segments around the page
//! cache, `restore::direct`), to verify
//! ([`catalog::verify`]) and to resume. [`retention`] is the pure rule of
//! what a prune deletes; `stream::retention` records each prune before
//! deleting (the daemon every `prune_interval`, `run --once`, `prune`). PostgreSQL:
//! [`naming::wal`] (WAL names as positions, timelines, history and backup
//! files), [`push`] (`archive_command`: through the daemon's stream
//! thread, or under the stream's lock, with `stream::confirm`),
//! [`sidefile`] (history and backup files stored beside the log),
//! [`fetch`] (`restore_command`: cheapest lookup first) and [`prefetch`]
//! (the bounded spool a detached child fills ahead). [`commands`] implements the CLI
//! ([`cli`] parses it) on top, [`daemon`] the long-running process (signals,
//! reload, systemd [`notify`]); `main.rs` only maps errors to exit codes.
//!
//! Embedding: [`archiver::Archiver`] starts the streams, wakes one at once
//! (with Gitaly-style water marks), archives a file now, reports status,
//! reloads and stops them.

pub mod archiver;
pub mod bandwidth;
pub mod budget;
pub mod calendar;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod crc;
pub mod daemon;
pub mod durable;
pub mod error;
pub mod fetch;
pub mod fleet;
pub mod frames;
pub mod human;
pub mod list;
pub mod manifest;
pub mod mapguard;
pub mod metrics;
pub mod naming;
pub mod notify;
pub mod plan;
pub mod prefetch;
pub mod progress;
pub mod push;
pub mod restore;
pub mod retention;
pub mod retry;
pub mod sidefile;
pub mod signals;
pub mod snapshot;
pub mod source;
pub mod statedir;
pub mod status;
pub mod stream;
pub mod target;
#[cfg(test)]
mod test_support;

pub use archiver::Archiver;
pub use config::Config;
pub use error::Error;
