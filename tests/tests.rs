//! walship's integration tests: one test binary, a module per concern, all
//! driving the built `walship` binary or the public library API.

mod util;

/// on_archived = delete | mark touches only files whose content the archive holds.
mod acknowledge;
/// `run --once` over many segments: batch objects, manifest, restore.
mod archive;
/// Command-line behaviour: help, exit codes, config errors, fetch, restore safety.
mod cli;
/// Compaction of the remote manifest: layout, rebuild from it, SIGKILL at each step.
mod compaction;
/// compression = zstd: frames `zstd -d` reads, decoding restore/fetch/verify, mixed archives, healing.
mod compression;
/// The target contract, run against every target.
mod conformance;
/// SIGKILL at random points, wiped state directory, healing half-done commits.
mod crash;
/// The daemon: metrics, gaps, SIGTERM, per-stream reload, locks, status.
mod daemon;
/// A fault-injecting HTTP proxy for the S3 tests: refuse, reset, stall, error, cut short.
mod faultproxy;
/// Segments changing during upload; a full disk under the state directory.
mod faults;
/// Heartbeat objects and `walship fleet`, on a file target and on Garage.
mod fleet;
/// Replays the fuzz seed corpus and every fuzz crash found, as named tests.
mod fuzz_corpus;
/// Temp files a killed walship left, cleaned by the next run.
mod leftovers;
/// The embedding API: start, wake with water marks, archive now, status, stop.
mod library;
/// `list` of a long archive: summary first, paging on a terminal, --all, --range, streamed.
mod list;
/// Torn, corrupted, hostile and incomplete manifests, local and remote.
mod manifest_damage;
/// Metered links: bandwidth limit and schedule, data budget, backlog limit.
mod metered;
/// The systemd unit and example config; the notify protocol and SIGHUP reload.
mod packaging;
/// Overlapping state_dir, target and stream directories are refused.
mod places;
/// A real PostgreSQL archiving through push into Garage: point-in-time recovery, timelines.
mod postgres;
/// The daemon against Garage through the fault proxy: archives everything, loses nothing.
mod proxy_faults;
/// `push` of a multipart WAL segment through the fault proxy: parts out of order, a failing part, SIGKILL mid-push.
mod push_faults;
/// replicas = on: two and three daemons elect one offloader; takeover after SIGKILL.
mod replicas;
/// Restore and fetch safety: no link followed, no name replaced, devices written through.
mod restore;
/// Restore to a position from snapshots; retention, `prune`, crashes mid-prune.
mod retention;
/// The S3 target against a real Garage server; curl as an independent client.
mod s3;
/// Long generated histories: a first prune in chunks healing after SIGKILL, verify over listing pages.
mod scale;
/// Snapshots: schedule and jump, jobs through the daemon and without, refusals, failures, a slow job.
mod snapshot;
/// Odd entries in a stream directory: beyond-limit positions, links, pipes, late files, a changed pattern.
mod source;
/// The state directory: no write through a planted link.
mod state_dir;
/// An archive written by the first release: listed, restored, verified, continued.
mod v1_archive;
/// naming = postgres: push and fetch as archive_command and restore_command, timelines, prefetch.
mod wal;
/// inotify wakes a stream at once; polling where it is off or the watch ended.
mod watch;
