//! Getting data back: `restore` recreates a stream's original files up to a
//! position, `fetch` returns one segment by name.
//!
//! Both read the manifest (local journal plus remote records, see
//! `catalog::load_whole`), download with one request per batch (or one ranged
//! request per fetched segment) and verify every segment's CRC32 before its
//! file takes its final name.
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
//! Here: the restore flow and its pure rules (what to restore, up to where);
//! `dest` does the directory I/O; `fetch` the one-segment command.

mod dest;
mod fetch;

use std::ffi::CString;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::durable;
use crate::error::Error;
use crate::manifest::{BatchRecord, Encoding, ManifestError, Record, SegmentEntry};
use crate::target::{Target, TargetError};
use dest::{DestDir, TempFile};
pub use fetch::{FetchDest, fetch};

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
}

/// What to restore.
pub struct RestoreRequest<'a> {
    pub stream: &'a str,
    pub to: &'a Path,
    /// Restore up to and including this position (default: everything).
    pub position: Option<u64>,
    pub allow_gaps: bool,
}

/// Restore `request.stream` from `records` into `request.to`.
pub fn restore(
    records: &[Record],
    target: &dyn Target,
    request: &RestoreRequest<'_>,
) -> Result<RestoreReport, Error> {
    let limit = restore_limit(request.stream, records, request.position)?;
    let dir = open_destination(request.to)?;
    let to_restore = || records_to_restore(records, limit, request.allow_gaps);
    let names = to_restore().flat_map(|r| wanted_segments(r, limit)).map(|s| s.name.as_str());
    check_names_are_free(&dir, names)?;

    let total = to_restore().filter(|r| matches!(r, Record::Batch(_))).count();
    let mut publisher = Publisher::new(&dir, Progress::new(total));
    let outcome = write_records(&mut publisher, target, request, to_restore(), limit);
    // Whatever was completely received and verified is kept, even after a
    // failure: the directory then holds a verified prefix of the stream.
    let published = publisher.publish();
    outcome.and(published)?;
    Ok(publisher.durable)
}

/// The last position to restore: the one asked for, or the archive's end.
fn restore_limit(stream: &str, records: &[Record], position: Option<u64>) -> Result<u64, Error> {
    let end = records.last().map(Record::last);
    match (position, end) {
        (Some(asked), Some(end)) if asked > end => {
            Err(Error::ArchiveEnds { stream: stream.into(), end: Some(end), asked: Some(asked) })
        }
        (_, None) => Err(Error::ArchiveEnds { stream: stream.into(), end: None, asked: position }),
        (asked, Some(end)) => Ok(asked.unwrap_or(end)),
    }
}

/// The records a restore up to `limit` goes through: up to and including
/// the first gap unless gaps are allowed (restore stops there).
fn records_to_restore(records: &[Record], limit: u64, allow_gaps: bool) -> impl Iterator<Item = &Record> {
    let mut stopped = false;
    records.iter().take_while(move |r| r.first() <= limit).take_while(move |r| {
        let go = !stopped;
        stopped |= !allow_gaps && matches!(r, Record::Gap(_));
        go
    })
}

/// The segments of `record` at or before `limit`.
fn wanted_segments(record: &Record, limit: u64) -> impl Iterator<Item = &SegmentEntry> {
    let segments = match record {
        Record::Batch(batch) => batch.segments.as_slice(),
        Record::Gap(_) => &[],
    };
    segments.iter().take_while(move |s| s.position <= limit)
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

/// Download each batch into temp files; the publisher gives them their
/// names in durable groups. Stops at a gap unless gaps are allowed.
fn write_records<'r>(
    publisher: &mut Publisher<'_>,
    target: &dyn Target,
    request: &RestoreRequest<'_>,
    records: impl Iterator<Item = &'r Record>,
    limit: u64,
) -> Result<(), Error> {
    let stream = request.stream;
    for record in records {
        match record {
            Record::Gap(gap) if !request.allow_gaps => {
                publisher.publish()?;
                return Err(Error::Gap {
                    stream: stream.into(),
                    first: gap.first,
                    last: gap.last,
                    reason: gap.reason.clone(),
                    restored_to: publisher.durable.last_position,
                });
            }
            Record::Gap(gap) => {
                log::warn!("stream {stream}: skipping gap {}..{} ({})", gap.first, gap.last, gap.reason);
                publisher.pending_report.gaps_skipped.push((gap.first, gap.last));
            }
            Record::Batch(batch) => {
                let wanted: Vec<&SegmentEntry> = wanted_segments(record, limit).collect();
                restore_batch(publisher, target, stream, batch, &wanted)?;
                publisher.batch_written()?;
            }
        }
    }
    Ok(())
}

/// Download the prefix of `batch` that holds `wanted` and split it into
/// temp files, each verified against its CRC32.
fn restore_batch(
    publisher: &mut Publisher<'_>,
    target: &dyn Target,
    stream: &str,
    batch: &BatchRecord,
    wanted: &[&SegmentEntry],
) -> Result<(), Error> {
    let Some(last) = wanted.last() else { return Ok(()) };
    readable(batch)?;
    let mut splitter = Splitter {
        publisher,
        segments: wanted,
        index: 0,
        current: None,
        failure: None,
        stream,
        key: &batch.key,
    };
    let range = (0, last.offset + last.stored_len);
    let fetched = target.get(&batch.key, Some(range), &mut splitter);
    let finished = match fetched {
        Ok(_) => splitter.finish(),
        Err(e) => Err(splitter.failure.take().unwrap_or_else(|| Error::target(stream, e))),
    };
    if finished.is_err() {
        splitter.discard_current();
    }
    finished
}

/// Refuse a batch whose stored bytes are not its segments as they are:
/// this walship reads only identity-encoded batches back.
fn readable(batch: &BatchRecord) -> Result<(), Error> {
    match batch.stored.encoding {
        Encoding::Identity => Ok(()),
        other => Err(Error::Manifest(ManifestError::Invalid {
            source: batch.key.clone(),
            line: 0,
            message: format!(
                "this batch is stored with encoding {}, which this walship cannot decode; restore with \
                 a walship release that reads it",
                other.as_str()
            ),
        })),
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
    pending_batches: usize,
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
            pending_batches: 0,
            durable: RestoreReport::default(),
            progress,
        }
    }

    /// A segment is complete and verified in `temp`.
    fn segment_written(&mut self, temp: CString, seg: &SegmentEntry) {
        self.pending.push(Pending { temp, name: seg.name.clone() });
        self.pending_bytes += seg.len;
        self.pending_report.segments += 1;
        self.pending_report.bytes += seg.len;
        self.pending_report.last_position = Some(seg.position);
    }

    /// A whole batch is written; publish if the group is full.
    fn batch_written(&mut self) -> Result<(), Error> {
        self.pending_batches += 1;
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
        self.progress.advance(std::mem::take(&mut self.pending_batches));
        Ok(())
    }
}

/// Splits a batch's bytes into its segment files: each segment goes to a
/// temp file, is checked against its CRC32, and is handed to the publisher.
struct Splitter<'p, 'a> {
    publisher: &'p mut Publisher<'a>,
    segments: &'p [&'p SegmentEntry],
    index: usize,
    current: Option<(TempFile, crc32fast::Hasher, u64)>,
    /// The error this writer caused, reported instead of the target's.
    failure: Option<Error>,
    stream: &'p str,
    key: &'p str,
}

impl Splitter<'_, '_> {
    fn fail(&mut self, error: Error) -> io::Error {
        let shown = io::Error::other(error.to_string());
        self.failure = Some(error);
        shown
    }

    /// Open the file for the current segment if none is open.
    fn open_current(&mut self) -> io::Result<()> {
        if self.current.is_none() && self.index < self.segments.len() {
            let name = &self.segments[self.index].name;
            match self.publisher.dir.create_temp(name) {
                Ok(temp) => self.current = Some((temp, crc32fast::Hasher::new(), 0)),
                Err(e) => {
                    let path = self.publisher.dir.path().join(name);
                    return Err(self.fail(Error::local("create a temp file for", path, e)));
                }
            }
        }
        Ok(())
    }

    /// Verify and hand over the current segment if it is complete.
    fn close_if_complete(&mut self) -> io::Result<()> {
        let seg = self.segments[self.index];
        let Some((temp, hasher, written)) = self.current.take() else { return Ok(()) };
        if written < seg.len {
            self.current = Some((temp, hasher, written));
            return Ok(());
        }
        let actual = hasher.finalize();
        if actual != seg.crc32 {
            let _ = self.publisher.dir.remove(&temp.name);
            let mismatch = TargetError::Checksum {
                key: format!("{} (segment {})", self.key, seg.name),
                expected: seg.crc32,
                actual,
            };
            return Err(self.fail(Error::target(self.stream, mismatch)));
        }
        self.publisher.segment_written(temp.name, seg);
        self.index += 1;
        Ok(())
    }

    /// Complete trailing empty segments and check everything arrived.
    fn finish(&mut self) -> Result<(), Error> {
        while self.index < self.segments.len() {
            let before = self.index;
            let step = self.open_current().and_then(|()| self.close_if_complete());
            if let Err(e) = step {
                return Err(self
                    .failure
                    .take()
                    .unwrap_or_else(|| Error::local("write", self.publisher.dir.path(), e)));
            }
            if self.index == before {
                let early = TargetError::Fatal {
                    op: "get".into(),
                    key: self.key.into(),
                    detail: "the object ended before its last recorded segment".into(),
                    fix: "run `walship verify --deep`; the object is damaged".into(),
                };
                return Err(Error::target(self.stream, early));
            }
        }
        Ok(())
    }

    /// Remove a half-written temp file after a failure.
    fn discard_current(&mut self) {
        if let Some((temp, _, _)) = self.current.take() {
            let _ = self.publisher.dir.remove(&temp.name);
        }
    }
}

impl Write for Splitter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.index >= self.segments.len() {
                return Err(io::Error::other("more bytes than the manifest records"));
            }
            self.open_current()?;
            let seg_len = self.segments[self.index].len;
            if let Some((temp, hasher, written)) = self.current.as_mut() {
                let take = ((seg_len - *written) as usize).min(rest.len());
                if let Err(e) = temp.file.write_all(&rest[..take]) {
                    let path = self.publisher.dir.path().join(&self.segments[self.index].name);
                    return Err(self.fail(Error::local("write", path, e)));
                }
                hasher.update(&rest[..take]);
                *written += take as u64;
                rest = &rest[take..];
            }
            self.close_if_complete()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// "restored N/M batches" on a terminal, as groups become durable; silent
/// otherwise.
struct Progress {
    total: usize,
    done: usize,
    visible: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress { total, done: 0, visible: io::stderr().is_terminal() && total > 1 }
    }

    fn advance(&mut self, batches: usize) {
        self.done += batches;
        if self.visible && batches > 0 {
            let end = if self.done == self.total { "\n" } else { "" };
            let _ = write!(io::stderr(), "\r{}{end}", progress_line(self.done, self.total));
        }
    }
}

/// The progress text: `restored 3/21 batches`.
fn progress_line(done: usize, total: usize) -> String {
    format!("restored {done}/{total} {}", if total == 1 { "batch" } else { "batches" })
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
        let ranges = |limit, allow| -> Vec<(u64, u64)> {
            records_to_restore(&records, limit, allow).map(|r| (r.first(), r.last())).collect()
        };
        assert_eq!(ranges(15, false), [(1, 5), (6, 7)]);
        assert_eq!(ranges(15, true), [(1, 5), (6, 7), (8, 10), (11, 15)]);
        assert_eq!(ranges(9, true), [(1, 5), (6, 7), (8, 10)]);
        assert_eq!(ranges(3, false), [(1, 5)]);
        let names: Vec<&str> = records_to_restore(&records, 9, true)
            .flat_map(|r| wanted_segments(r, 9))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["s-1", "s-2", "s-3", "s-4", "s-5", "s-8", "s-9"]);
    }

    #[test]
    fn the_limit_is_the_position_asked_or_the_archive_end() {
        let records = [batch(1, 5)];
        assert_eq!(restore_limit("s", &records, None).unwrap(), 5);
        assert_eq!(restore_limit("s", &records, Some(3)).unwrap(), 3);
        let beyond = restore_limit("s", &records, Some(6)).unwrap_err();
        assert!(beyond.to_string().contains("ends at position 5"), "{beyond}");
        assert_eq!(beyond.exit_code(), crate::error::EXIT_FAILURE);
        let empty = restore_limit("s", &[], None).unwrap_err();
        assert!(empty.to_string().contains("nothing is archived"), "{empty}");
        assert_eq!(empty.exit_code(), crate::error::EXIT_FAILURE);
    }

    #[test]
    fn only_identity_encoded_batches_are_read_back() {
        let Record::Batch(mut record) = crate::manifest::validate::tests::batch("s", 0, &[b"abc"]) else {
            unreachable!("a batch")
        };
        assert!(readable(&record).is_ok());
        record.stored.encoding = Encoding::ZstdFrames;
        let error = readable(&record).expect_err("cannot decode");
        assert!(error.to_string().contains("stored with encoding zstd-frames"), "{error}");
    }

    #[test]
    fn progress_counts_batches() {
        assert_eq!(progress_line(3, 21), "restored 3/21 batches");
        assert_eq!(progress_line(1, 1), "restored 1/1 batch");
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
