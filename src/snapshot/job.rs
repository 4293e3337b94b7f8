//! One snapshot job from start to stored object: run the command into the
//! job's output file (`STATE_DIR/STREAM/snapshot/job-N`), map the file and
//! checksum it, store it at the snapshot key through the batches' store
//! path (multipart above `part_size`, CRC32 on every part and the object;
//! the same bytes found already stored are not sent again), remove the
//! output. What comes back is the record to commit, which the stream's
//! thread does (remote record, then journal).
//!
//! Output files never outlive their job: each is removed when its job ends,
//! and [`clean_outputs`] removes those a killed process left, at the next
//! start. A marker (`job-N.running`) is there while the command may run; a
//! marker found at the next start means the command's shell died with
//! walship, and whatever it left running is killed then
//! (`command::kill_leftovers`).

use std::path::Path;
use std::time::Duration;

use super::command::{self, CommandRun};
use crate::config::Compression;
use crate::durable;
use crate::error::Error;
use crate::frames::{self, FrameEncoder, encode::FramesReader};
use crate::manifest::{
    Encoding, Entry, ManifestError, SnapshotRecord, StoredObject, StreamRules, validate_entry,
};
use crate::source::SegmentMap;
use crate::statedir;
use crate::status::StatusCell;
use crate::stream::upload::{self, OnDifferent};
use crate::target::{Target, Upload, keys};

/// What a job is to do.
#[derive(Debug, Clone)]
pub struct JobSpec<'a> {
    pub state_dir: &'a Path,
    pub rules: StreamRules<'a>,
    /// The command line (`snapshot_command`).
    pub command: &'a str,
    pub timeout: Duration,
    pub position: u64,
    pub id: u64,
    /// The stream's: a zstd snapshot is stored as one zstd frame.
    pub compression: Compression,
}

/// Run the job (see the module doc): the record of the stored snapshot, or
/// the message saying why the job failed. The command is killed once
/// `stop` says so.
pub fn run(
    spec: &JobSpec<'_>,
    target: &dyn Target,
    status: &StatusCell,
    stop: &dyn Fn() -> bool,
) -> Result<SnapshotRecord, String> {
    let stream = spec.rules.name;
    let dir = statedir::snapshot_dir(spec.state_dir, stream);
    durable::create_dir_all(&dir)
        .map_err(|e| Error::local("create the snapshot directory", &dir, e).to_string())?;
    let output = Output(statedir::snapshot_output(spec.state_dir, stream, spec.id));
    let _ = std::fs::remove_file(&output.0);
    let marker = Output(statedir::snapshot_running_marker(spec.state_dir, stream, spec.id));
    std::fs::write(&marker.0, b"").map_err(|e| Error::local("write", &marker.0, e).to_string())?;
    let run = CommandRun {
        command: spec.command,
        stream,
        position: spec.position,
        job: spec.id,
        output: &output.0,
        timeout: spec.timeout,
    };
    let ran = command::run(&run, stop);
    drop(marker); // the command's processes are gone, whatever happened
    ran.map_err(|failure| failure.to_string())?;
    store_output(spec, &output.0, target, status).map_err(|e| e.to_string())
}

/// Map the output, checksum it, store it; the record to commit.
fn store_output(
    spec: &JobSpec<'_>,
    output: &Path,
    target: &dyn Target,
    status: &StatusCell,
) -> Result<SnapshotRecord, Error> {
    let stream = spec.rules.name;
    let len =
        std::fs::metadata(output).map_err(|e| Error::local("read the snapshot output", output, e))?.len();
    let map =
        SegmentMap::open(output, len).map_err(|e| Error::local("map the snapshot output", output, e))?;
    let crc32 = crc32fast::hash(map.bytes());
    let key = keys::snapshot_key(stream, spec.position);
    // With zstd, the image's frame is measured now and made again as it is
    // sent (as a batch's frames are: see `frames`).
    let compression_failed = |source| Error::Compression { stream: stream.into(), source };
    let (stored, frame) = match spec.compression {
        Compression::None => (StoredObject { size: len, crc32, encoding: Encoding::Identity }, None),
        Compression::Zstd { level } => {
            let mut encoder = FrameEncoder::new(level).map_err(compression_failed)?;
            let plan = frames::plan_frame(&mut encoder, map.bytes()).map_err(compression_failed)?;
            let stored =
                StoredObject { size: plan.stored_len, crc32: plan.crc32, encoding: Encoding::ZstdFrames };
            (stored, Some((encoder, plan.kind)))
        }
    };
    let record = SnapshotRecord { position: spec.position, key: key.clone(), size: len, crc32, stored };
    validate_entry(&Entry::Snapshot(record.clone()), &spec.rules).map_err(|message| {
        Error::Manifest(ManifestError::Refused { source: key.clone(), line: 0, message })
    })?;
    let changed = |expected: u32, actual: u32| {
        let detail = format!(
            "it changed while it was being sent (CRC32 {expected:08x} before, {actual:08x} while \
             sending); the command must be done writing it when it exits"
        );
        Error::local("store the snapshot output", output, std::io::Error::other(detail))
    };
    let pieces = [map.bytes()];
    match frame {
        None => {
            let body = Upload::pieces(&pieces, len, crc32);
            upload::store(target, status, stream, &key, &body, Some(OnDifferent::Replace), &changed)?;
        }
        Some((encoder, kind)) => {
            let mut reader = FramesReader::new(encoder, vec![(map.bytes(), kind)]);
            let body = Upload::stream(&mut reader, stored.size, stored.crc32);
            upload::store(target, status, stream, &key, &body, Some(OnDifferent::Replace), &changed)?;
        }
    }
    if !map.intact() {
        let truncated = std::io::Error::other("it was truncated while it was being sent");
        return Err(Error::local("store the snapshot output", output, truncated));
    }
    Ok(record)
}

/// A job's output file (or its running marker), removed when the job ends
/// whatever happened.
struct Output(std::path::PathBuf);

impl Drop for Output {
    fn drop(&mut self) {
        match remove_output(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove the snapshot output {}: {e}", self.0.display()),
        }
    }
}

/// Remove an output: a file, or a directory a command left in its place.
fn remove_output(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    }
}

/// Remove the output files a killed process left in the stream's snapshot
/// directory, after killing what still runs of the commands it left
/// running (their running markers say which). Call only while holding the
/// stream's lock.
pub fn clean_outputs(state_dir: &Path, stream: &str) -> Result<(), Error> {
    let dir = statedir::snapshot_dir(state_dir, stream);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::local("read the snapshot directory", &dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::local("read the snapshot directory", &dir, e))?.path();
        if let Some(output) = path.to_str().and_then(|p| p.strip_suffix(".running")) {
            let killed = command::kill_leftovers(Path::new(output));
            if killed > 0 {
                log::warn!(
                    "stream {stream}: killed {} left running by an interrupted snapshot job",
                    crate::human::count(killed as u64, "process")
                );
            }
        }
        match remove_output(&path) {
            Ok(()) => log::info!(
                "stream {stream}: removed {}, left by a snapshot job that was interrupted",
                path.display()
            ),
            Err(e) => return Err(Error::local("remove the interrupted snapshot output", &path, e)),
        }
    }
    Ok(())
}
