//! Getting data back: `restore` recreates a stream's state up to a
//! position (the newest snapshot at or before it, as
//! `walship-snapshot-POSITION`, then the original segment files after it;
//! `start` chooses), `fetch` returns one segment by name.
//!
//! Both read the manifest (local journal plus remote records) in passes
//! through `catalog::reader`, never holding its log: `restore` makes one
//! pass to check the names it will write, one to add up what its progress
//! line counts, and one to download, a bounded chunk of records at a time.
//! They download with one request per batch (or one
//! ranged request per fetched segment; `restore` runs [`PARALLEL_GETS`] at
//! once) and verify every segment's CRC32 before its file takes its final
//! name.
//!
//! Writing never leaves the destination directory and never replaces
//! anything: every file is written through `dest::DestDir` (temp files
//! created with `O_EXCL | O_NOFOLLOW` relative to the directory's
//! descriptor, final names taken only if free). `restore` first checks that
//! every name it will write is a plain file name and free, and writes
//! nothing if one is not.
//!
//! Durability in groups: a restore writes up to [`GROUP_FILES`] files or
//! [`GROUP_BYTES`] bytes to temp names, makes them durable with one
//! `syncfs(2)`, gives them their final names, and syncs the directory. A
//! crash at any point leaves only complete, verified files under final names
//! (plus walship temp names, `.NAME.PID-N.walship-tmp`); nothing is reported
//! restored before it is durable.
//!
//! `fetch` writes a new file the same way (one file, one fsync), refuses an
//! existing DEST (PostgreSQL removes `%p` before it runs `restore_command`,
//! so an existing file is never what it asks for), and writes through a
//! DEST that is not a regular file (a device, a FIFO, `/dev/stdout`, also
//! when it leads to the file stdout is redirected to), or standard output
//! for `-`. Written through, bytes leave before the last
//! one is checked: a CRC32 mismatch then fails the command (exit 1) with a
//! message saying to discard what was written.
//!
//! Here: the restore flow and its pure rules (which segments, up to where);
//! `start` where it starts; `split` cuts a batch's bytes into verified
//! segment files, written through `direct` (around the page cache, with
//! `O_DIRECT`, from 1 MiB on); `dest` does the directory I/O; `fetch` the
//! one-segment command.

mod dest;
mod direct;
mod fetch;
mod split;
pub mod start;

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::reader::ManifestReader;
use crate::durable;
use crate::error::Error;
use crate::frames::decode;
use crate::manifest::{BatchRecord, Encoding, Record, SegmentEntry, SnapshotRecord};
use crate::progress::{Amount, Progress};
use crate::target::{Target, TargetError};
use dest::DestDir;
pub use fetch::{FetchDest, PARALLEL_GETS, fetch};
use split::{Splitter, Written};

/// At most this many restored files wait in temp names for one sync.
pub const GROUP_FILES: usize = 4096;
/// At most this many restored bytes wait in temp names for one sync.
pub const GROUP_BYTES: u64 = 256 << 20;

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub segments: u64,
    pub bytes: u64,
    /// The last position restored.
    pub last_position: Option<u64>,
    /// Gaps passed over with `--allow-gaps`.
    pub gaps_skipped: Vec<(u64, u64)>,
    /// The position of the snapshot restored first (not counted in
    /// `segments`), if any.
    pub snapshot: Option<u64>,
}

/// What to restore.
pub struct RestoreRequest<'a> {
    pub stream: &'a str,
    pub to: &'a Path,
    /// Restore up to and including this position (default: everything).
    pub position: Option<u64>,
    pub allow_gaps: bool,
}

/// The file a restored snapshot is written to: `walship-snapshot-` and
/// its position in 16 hex digits, as in object keys.
pub fn snapshot_file_name(position: u64) -> String {
    format!("walship-snapshot-{position:016x}")
}

/// Most records downloaded as one chunk (also bounded by [`GROUP_FILES`]
/// segments): the records of a chunk are held while its batches download.
const CHUNK_RECORDS: usize = 1024;

/// Restore `request.stream` from the manifest `reader` reads into
/// `request.to`: the snapshot `start::start` chooses, then the segments
/// after it.
pub fn restore(
    reader: &ManifestReader<'_>,
    target: &dyn Target,
    request: &RestoreRequest<'_>,
) -> Result<RestoreReport, Error> {
    let start = start::start(request.stream, reader.side(), reader.end(), request.position)?;
    let (limit, from) = (start.limit, start.first_position());
    let dir = open_destination(request.to)?;
    let each = |visit: &mut dyn FnMut(Record) -> Result<(), Error>| {
        let mut through = Through::new(limit, request.allow_gaps);
        reader.each_live_record(|record| {
            if !start.wants(&record) {
                return Ok(record.first() <= limit);
            }
            if !through.admit(&record) {
                return Ok(false);
            }
            visit(record).map(|()| true)
        })
    };
    let snapshot_name = start.snapshot.map(|s| snapshot_file_name(s.position));
    check_names_are_free(&dir, snapshot_name.as_deref().into_iter())?;
    each(&mut |record| {
        check_names_are_free(&dir, wanted_segments(&record, from, limit).map(|s| s.name.as_str()))
    })?;

    let mut total =
        Amount { objects: u64::from(start.snapshot.is_some()), bytes: start.snapshot.map_or(0, |s| s.size) };
    each(&mut |record| {
        total.objects += u64::from(matches!(record, Record::Batch(_)));
        total.bytes += wanted_segments(&record, from, limit).map(|s| s.len).sum::<u64>();
        Ok(())
    })?;
    let mut publisher = Publisher::new(&dir, Progress::new("restored", total));
    let outcome = match start.snapshot {
        Some(snapshot) => restore_snapshot(&mut publisher, target, request.stream, snapshot),
        None => Ok(()),
    }
    .and_then(|()| {
        let (mut chunk, mut segments) = (Vec::new(), 0);
        each(&mut |record| {
            segments += wanted_segments(&record, from, limit).count();
            chunk.push(record);
            if chunk.len() >= CHUNK_RECORDS || segments >= GROUP_FILES {
                write_records(&mut publisher, target, request, chunk.iter(), from, limit)?;
                (chunk, segments) = (Vec::new(), 0);
            }
            Ok(())
        })?;
        write_records(&mut publisher, target, request, chunk.iter(), from, limit)
    });
    // Whatever was completely received and verified is kept, even after a
    // failure: the directory then holds a verified prefix of the stream.
    let published = publisher.publish();
    publisher.progress.finish();
    outcome.and(published)?;
    Ok(publisher.durable)
}

/// Which of the records after the start a restore up to `limit` goes
/// through, as they come: up to and including the first gap unless gaps
/// are allowed (restore stops there).
struct Through {
    limit: u64,
    allow_gaps: bool,
    stopped: bool,
}

impl Through {
    fn new(limit: u64, allow_gaps: bool) -> Through {
        Through { limit, allow_gaps, stopped: false }
    }

    /// Whether the restore goes through `record`, the next one; once not,
    /// none after it.
    fn admit(&mut self, record: &Record) -> bool {
        let go = !self.stopped && record.first() <= self.limit;
        self.stopped |= !go || (!self.allow_gaps && matches!(record, Record::Gap(_)));
        go
    }
}

/// The segments of `record` from `from` up to `limit`.
fn wanted_segments(record: &Record, from: u64, limit: u64) -> impl Iterator<Item = &SegmentEntry> {
    let segments = match record {
        Record::Batch(batch) => batch.segments.as_slice(),
        Record::Gap(_) => &[],
    };
    segments.iter().skip_while(move |s| s.position < from).take_while(move |s| s.position <= limit)
}

/// Download `snapshot` into its file, verified like a segment: a stored
/// object holding one file, as a one-segment batch does.
fn restore_snapshot(
    publisher: &mut Publisher<'_>,
    target: &dyn Target,
    stream: &str,
    snapshot: &SnapshotRecord,
) -> Result<(), Error> {
    let file = SegmentEntry {
        position: snapshot.position,
        name: snapshot_file_name(snapshot.position),
        len: snapshot.size,
        crc32: snapshot.crc32,
        offset: 0,
        stored_len: snapshot.stored.size,
    };
    let object = BatchRecord {
        first: snapshot.position,
        last: snapshot.position,
        key: snapshot.key.clone(),
        size: snapshot.size,
        crc32: snapshot.crc32,
        stored: snapshot.stored,
        segments: vec![file],
    };
    let wanted: Vec<&SegmentEntry> = object.segments.iter().collect();
    let downloaded = restore_batch(publisher.dir, target, stream, &object, &wanted);
    downloaded.files.into_iter().for_each(|(temp, seg)| publisher.segment_written(temp, seg));
    if let Some(failure) = downloaded.failure {
        return Err(failure);
    }
    publisher.pending_report.segments -= 1;
    publisher.pending_report.snapshot = Some(snapshot.position);
    publisher.batch_written()
}

/// Open (creating it if missing) the directory to restore into.
fn open_destination(to: &Path) -> Result<DestDir, Error> {
    match fs::metadata(to) {
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::UnsafeRestore {
                path: to.to_path_buf(),
                detail: "it is not a directory; --to names the directory to restore into \
                         (created if missing)"
                    .into(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            durable::create_dir_all(to).map_err(|e| Error::local("create", to, e))?;
        }
        Err(e) => return Err(Error::local("read", to, e)),
    }
    let dir = DestDir::open(to).map_err(|e| Error::local("open", to, e))?;
    let removed = dir
        .remove_stale_temps(crate::statedir::process_start())
        .map_err(|e| Error::local("remove stale temp files in", to, e))?;
    for name in removed {
        log::info!("removed {name} from {}, left by an interrupted restore", to.display());
    }
    Ok(dir)
}

/// Refuse, before anything is written, a name that is not a plain file
/// name or that something in the directory already has.
fn check_names_are_free<'a>(dir: &DestDir, names: impl Iterator<Item = &'a str>) -> Result<(), Error> {
    for name in names {
        let path = destination(dir.path(), name)?;
        match dir.is_taken(name) {
            Ok(false) => {}
            Ok(true) => return Err(already_exists(path)),
            Err(e) => return Err(Error::local("check", path, e)),
        }
    }
    Ok(())
}

fn already_exists(path: PathBuf) -> Error {
    Error::UnsafeRestore {
        path,
        detail: "it already exists (restore never replaces or follows anything); restore into an \
                 empty directory, or move it away"
            .into(),
    }
}

/// Download each batch into temp files, [`PARALLEL_GETS`] batches at a
/// time; the publisher gives the files their names in durable groups, in
/// position order. Stops at a gap unless gaps are allowed, and at the first
/// failure (files of batches downloaded past it are removed).
fn write_records<'r>(
    publisher: &mut Publisher<'_>,
    target: &dyn Target,
    request: &RestoreRequest<'_>,
    records: impl Iterator<Item = &'r Record>,
    from: u64,
    limit: u64,
) -> Result<(), Error> {
    let stream = request.stream;
    let records: Vec<&Record> = records.collect();
    let dir = publisher.dir;
    let download = |record: &&'r Record| -> Downloaded<'r> {
        let record: &'r Record = record;
        match record {
            Record::Batch(batch) => {
                let wanted: Vec<&SegmentEntry> = wanted_segments(record, from, limit).collect();
                restore_batch(dir, target, stream, batch, &wanted)
            }
            Record::Gap(_) => Downloaded { files: Vec::new(), failure: None },
        }
    };
    let mut outcome = Ok(());
    let take = |record: &&Record, downloaded: Downloaded<'r>| {
        // A failed batch's segments verified before the failure are kept.
        downloaded.files.into_iter().for_each(|(temp, seg)| publisher.segment_written(temp, seg));
        let taken = match (record, downloaded.failure) {
            (_, Some(error)) => Err(error),
            (Record::Gap(gap), None) if !request.allow_gaps => publisher.publish().and_then(|()| {
                Err(Error::Gap {
                    stream: stream.into(),
                    first: gap.first,
                    last: gap.last,
                    reason: gap.reason.clone(),
                    restored_to: publisher.durable.last_position,
                })
            }),
            (Record::Gap(gap), None) => {
                log::warn!("stream {stream}: skipping gap {}..{} ({})", gap.first, gap.last, gap.reason);
                publisher.pending_report.gaps_skipped.push((gap.first, gap.last));
                Ok(())
            }
            (Record::Batch(_), None) => publisher.batch_written(),
        };
        outcome = taken;
        outcome.is_ok()
    };
    let discard = |downloaded: Downloaded<'r>| {
        for (temp, _) in downloaded.files {
            let _ = dir.remove(&temp);
        }
    };
    fetch::in_order(&records, PARALLEL_GETS, download, take, discard);
    outcome
}

/// What a batch's download wrote: its verified segments, in order, and
/// why it stopped before the last one, if it did.
struct Downloaded<'r> {
    files: Vec<Written<'r>>,
    failure: Option<Error>,
}

/// Download the part of `batch` that holds `wanted` (one ranged GET) and
/// split it into temp files in `dir`, each verified against its CRC32.
fn restore_batch<'r>(
    dir: &DestDir,
    target: &dyn Target,
    stream: &str,
    batch: &BatchRecord,
    wanted: &[&'r SegmentEntry],
) -> Downloaded<'r> {
    let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
        return Downloaded { files: Vec::new(), failure: None };
    };
    let mut splitter = Splitter::new(dir, wanted, stream, &batch.key);
    let fetched = match batch.stored.encoding {
        Encoding::Identity => {
            let range = (first.offset, last.offset + last.stored_len - first.offset);
            target
                .get(&batch.key, Some(range), &mut splitter)
                .map(|_| ())
                .map_err(|e| Error::target(stream, e))
        }
        // From the batch's start: the whole object, so its stored CRC32 is
        // checked too, the frames after the wanted ones checked and
        // dropped. From inside it (the first batch after a snapshot): the
        // frames from the first wanted one to the object's end, each
        // checked against its raw length and CRC32.
        Encoding::ZstdFrames => {
            let skipped = batch.segments.iter().take_while(|s| s.position < first.position).count();
            let expected = decode::expected_of(&batch.segments[skipped..]);
            let (range, whole) = if skipped == 0 {
                (None, Some((batch.stored.size, batch.stored.crc32)))
            } else {
                (Some((first.offset, batch.stored.size - first.offset)), None)
            };
            decode::read_frames(target, &batch.key, range, &expected, wanted.len(), &mut splitter, whole)
                .map(|_| ())
                .map_err(|e| read_error(stream, &batch.key, e))
        }
    };
    let (files, failure) = splitter.end(fetched);
    Downloaded { files, failure }
}

/// A failed read of a zstd batch `key` as an error of `stream`: damaged
/// frames say to verify the archive.
fn read_error(stream: &str, key: &str, error: decode::ReadError) -> Error {
    match error {
        decode::ReadError::Target(e) => Error::target(stream, e),
        decode::ReadError::Frames(damage) => Error::target(
            stream,
            TargetError::Fatal {
                op: "decode".into(),
                key: key.into(),
                detail: damage.to_string(),
                fix: "the stored object is damaged; run `walship verify --deep` to see which".into(),
            },
        ),
    }
}

/// `dir/name`, refusing any name that is not a plain file name.
fn destination(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).components().count() == 1;
    if !plain {
        return Err(Error::UnsafeRestore {
            path: dir.join(name),
            detail: "the manifest names a path that is not a plain file name".into(),
        });
    }
    Ok(dir.join(name))
}

/// A restored file in its temp name, waiting for its group's sync.
struct Pending {
    temp: CString,
    name: String,
}

/// Holds restored files under temp names and publishes them in durable
/// groups: one filesystem sync, the renames, one directory sync.
struct Publisher<'a> {
    dir: &'a DestDir,
    pending: Vec<Pending>,
    pending_bytes: u64,
    /// What the pending files add to the report once durable.
    pending_report: RestoreReport,
    /// What is durable under final names.
    durable: RestoreReport,
    progress: Progress,
}

impl<'a> Publisher<'a> {
    fn new(dir: &'a DestDir, progress: Progress) -> Publisher<'a> {
        Publisher {
            dir,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_report: RestoreReport::default(),
            durable: RestoreReport::default(),
            progress,
        }
    }

    /// A segment is complete and verified in `temp`.
    fn segment_written(&mut self, temp: CString, seg: &SegmentEntry) {
        self.pending.push(Pending { temp, name: seg.name.clone() });
        self.pending_bytes += seg.len;
        self.pending_report.segments += 1;
        self.progress.add(0, seg.len);
        self.pending_report.bytes += seg.len;
        self.pending_report.last_position = Some(seg.position);
    }

    /// A whole batch is written; publish if the group is full.
    fn batch_written(&mut self) -> Result<(), Error> {
        self.progress.add(1, 0);
        if self.pending.len() >= GROUP_FILES || self.pending_bytes >= GROUP_BYTES {
            self.publish()?;
        }
        Ok(())
    }

    /// Make every pending file durable and give it its final name.
    fn publish(&mut self) -> Result<(), Error> {
        let path = self.dir.path();
        if !self.pending.is_empty() {
            self.dir.sync_filesystem().map_err(|e| Error::local("sync", path, e))?;
        }
        let pending = std::mem::take(&mut self.pending);
        for (i, file) in pending.iter().enumerate() {
            if let Err(e) = self.dir.publish(&file.temp, &file.name) {
                // Nothing from this file on is published: remove their temps.
                for rest in &pending[i..] {
                    let _ = self.dir.remove(&rest.temp);
                }
                return Err(match e.kind() {
                    io::ErrorKind::AlreadyExists => already_exists(path.join(&file.name)),
                    _ => Error::local("rename into", path.join(&file.name), e),
                });
            }
        }
        self.dir.sync().map_err(|e| Error::local("sync", path, e))?;
        self.pending_bytes = 0;
        let done = std::mem::take(&mut self.pending_report);
        self.durable.segments += done.segments;
        self.durable.bytes += done.bytes;
        self.durable.last_position = done.last_position.or(self.durable.last_position);
        self.durable.gaps_skipped.extend(done.gaps_skipped);
        self.durable.snapshot = done.snapshot.or(self.durable.snapshot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::GapRecord;

    fn batch(first: u64, last: u64) -> Record {
        let segments =
            (first..=last).map(|p| SegmentEntry::identity(p, format!("s-{p}"), p - first, 1, 0)).collect();
        Record::Batch(BatchRecord::identity("s", first, last, segments))
    }

    fn gap(first: u64, last: u64) -> Record {
        Record::Gap(GapRecord { first, last, reason: "lost".into() })
    }

    #[test]
    fn restore_goes_up_to_the_limit_and_stops_after_a_gap_unless_allowed() {
        let records = [batch(1, 5), gap(6, 7), batch(8, 10), batch(11, 15)];
        let records_to_restore = |limit, allow| {
            let mut through = Through::new(limit, allow);
            records.iter().take_while(move |r| through.admit(r))
        };
        let ranges = |limit, allow| -> Vec<(u64, u64)> {
            records_to_restore(limit, allow).map(|r| (r.first(), r.last())).collect()
        };
        assert_eq!(ranges(15, false), [(1, 5), (6, 7)]);
        assert_eq!(ranges(15, true), [(1, 5), (6, 7), (8, 10), (11, 15)]);
        assert_eq!(ranges(9, true), [(1, 5), (6, 7), (8, 10)]);
        assert_eq!(ranges(3, false), [(1, 5)]);
        let names: Vec<&str> = records_to_restore(9, true)
            .flat_map(|r| wanted_segments(r, 0, 9))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["s-1", "s-2", "s-3", "s-4", "s-5", "s-8", "s-9"]);
    }

    #[test]
    fn after_a_snapshot_only_the_segments_past_it_are_wanted() {
        let straddling = batch(8, 12);
        let names: Vec<&str> = wanted_segments(&straddling, 10, 11).map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s-10", "s-11"]);
        assert_eq!(wanted_segments(&straddling, 13, 20).count(), 0);
        assert_eq!(snapshot_file_name(255), "walship-snapshot-00000000000000ff");
    }

    #[test]
    fn only_plain_file_names_are_destinations() {
        let dir = Path::new("/restore");
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "a\\b", "x\0"] {
            assert!(destination(dir, bad).is_err(), "{bad:?}");
        }
        assert_eq!(destination(dir, "seg-1.log").unwrap(), dir.join("seg-1.log"));
    }
}
