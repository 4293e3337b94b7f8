//! The local side of a stream: which directory entries are segments, their
//! positions, which are sealed, which the archive already holds, and
//! read-only memory maps of their bytes.
//!
//! A directory scan gathers facts (name, position, size, modification time);
//! file names are read through the stream's [`Naming`]; sealing is decided by
//! a pure function of those facts. [`Source`] sorts what a scan found
//! against what the archive records: segments waiting to be archived,
//! segments the archive holds (to acknowledge), late files (at positions the
//! archive passed without them: warned about, never touched) and entries it
//! refuses (not a regular file, or a position beyond what a manifest can
//! record), which hold the stream at their position with an error instead of
//! becoming gaps. A symbolic link to a regular file is a segment like the
//! file itself, under the link's name. Nothing here uploads, plans batches or
//! writes the manifest.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memmap2::Mmap;

use crate::manifest::Record;
use crate::manifest::validate::MAX_POSITION;
use crate::mapguard::{self, Registration};
pub use crate::naming::{NameMatch, NameMismatch, Naming, is_ignored_name};
use crate::plan::SealMode;

/// One segment file found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub position: u64,
    /// File name inside the stream's directory.
    pub name: String,
    pub path: PathBuf,
    pub len: u64,
    pub modified: SystemTime,
}

/// A directory entry with a segment's name that cannot be archived.
#[derive(Debug)]
pub struct Refused {
    /// Its file name inside the stream's directory.
    pub name: String,
    /// Its position, when the name has one.
    pub position: Option<u64>,
    pub reason: RefusedReason,
}

/// Why a [`Refused`] entry cannot be archived.
#[derive(Debug)]
pub enum RefusedReason {
    /// Not a regular file (nor a symbolic link to one): "a directory", "a
    /// named pipe (FIFO)", "a socket", "a device", or a link to one of those.
    NotAFile(String),
    /// A symbolic link whose target cannot be read (missing, a loop, no
    /// permission), or an entry that cannot be stat'ed.
    Unreadable(io::Error),
    /// Its position is beyond what a manifest can record.
    BeyondLimit,
    /// Its number does not even fit in 64 bits.
    Overflow,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match (&self.reason, self.position) {
            (RefusedReason::NotAFile(kind), _) => write!(
                f,
                "{name} is {kind}, not a segment file; a segment must be a regular file or a \
                 symbolic link to one: move it out of the stream directory or rename it so that \
                 it does not match the pattern"
            ),
            (RefusedReason::Unreadable(e), _) => write!(
                f,
                "{name} cannot be read ({e}); if it is a symbolic link, make it point to the \
                 segment file, or remove it"
            ),
            (RefusedReason::BeyondLimit, Some(position)) => write!(
                f,
                "{name} stands for position {position}, beyond the largest position walship can \
                 record ({MAX_POSITION} = 2^62); rename or remove it"
            ),
            (RefusedReason::BeyondLimit | RefusedReason::Overflow, _) => write!(
                f,
                "{name} has a number too large for a position (the largest walship can record \
                 is {MAX_POSITION} = 2^62); rename or remove it"
            ),
        }
    }
}

/// What one directory read found: segments (sorted by position) and the
/// entries with segment names that cannot be archived.
#[derive(Debug, Default)]
pub struct Scan {
    pub segments: Vec<Segment>,
    pub refused: Vec<Refused>,
}

/// Why a scan failed. Messages name the directory or file and the fix.
#[derive(Debug)]
pub enum ScanError {
    /// The stream's directory cannot be listed.
    Dir { dir: PathBuf, source: io::Error },
    /// Two file names stand for the same position (e.g. `x-1` and `x-01`).
    Ambiguous { position: u64, a: String, b: String },
    /// Entries with segment names that cannot be archived (sorted by
    /// position, those without one last). Nothing at or after the first of
    /// them is archived until it is dealt with; no gap is recorded for it.
    Refused { dir: PathBuf, entries: Vec<Refused> },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Dir { dir, source } => write!(
                f,
                "cannot read stream directory {}: {source}; create it or fix `dir` in the config",
                dir.display()
            ),
            ScanError::Ambiguous { position, a, b } => {
                write!(f, "files {a} and {b} both stand for position {position}; remove or rename one")
            }
            ScanError::Refused { dir, entries } => {
                write!(f, "in {}: ", dir.display())?;
                for (i, entry) in entries.iter().enumerate() {
                    write!(f, "{}{entry}", if i > 0 { "; " } else { "" })?;
                }
                let held = entries.iter().filter_map(|e| e.position).min();
                match held {
                    Some(p) => write!(f, ". Archiving stops before position {p} until then"),
                    None => write!(f, ". Nothing was archived for it"),
                }
            }
        }
    }
}

impl std::error::Error for ScanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScanError::Dir { source, .. } => Some(source),
            ScanError::Ambiguous { .. } | ScanError::Refused { .. } => None,
        }
    }
}

/// List the segments in `dir` whose position is `wanted` (see
/// [`scan_entries`]), refusing entries that cannot be archived: what
/// `status` and `check` use.
pub fn scan(dir: &Path, naming: &Naming, wanted: impl Fn(u64) -> bool) -> Result<Vec<Segment>, ScanError> {
    let scan = scan_entries(dir, naming, wanted)?;
    if !scan.refused.is_empty() {
        return Err(ScanError::Refused { dir: dir.to_path_buf(), entries: scan.refused });
    }
    Ok(scan.segments)
}

/// Read `dir`: the segments whose position is `wanted`, sorted by position,
/// and the entries with segment names that cannot be archived. Only wanted
/// entries are stat'ed, so a directory keeping thousands of archived
/// segments costs one directory read. Non-UTF-8 names and names that are
/// not segments are skipped; a symbolic link to a regular file is a segment
/// (its target's size and time, the link's name); a directory, pipe,
/// socket, device or unreadable link is refused, never opened; so is a
/// name whose position is beyond [`MAX_POSITION`].
pub fn scan_entries(dir: &Path, naming: &Naming, wanted: impl Fn(u64) -> bool) -> Result<Scan, ScanError> {
    let dir_error = |source| ScanError::Dir { dir: dir.to_path_buf(), source };
    let mut scan = Scan::default();
    for entry in fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let position = match naming.classify(&name) {
            NameMatch::NotASegment => continue,
            NameMatch::Overflow => {
                scan.refused.push(Refused { name, position: None, reason: RefusedReason::Overflow });
                continue;
            }
            NameMatch::Position(p) if p > MAX_POSITION => {
                let reason = RefusedReason::BeyondLimit;
                scan.refused.push(Refused { name, position: Some(p), reason });
                continue;
            }
            NameMatch::Position(p) if wanted(p) => p,
            NameMatch::Position(_) => continue,
        };
        let path = entry.path();
        match regular_file_metadata(&entry, &path) {
            // A file can vanish between listing and stat (spool consumers,
            // races with rotation): it is simply not present.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !is_present(&path) => {}
            Err(e) => {
                let reason = RefusedReason::Unreadable(e);
                scan.refused.push(Refused { name, position: Some(position), reason });
            }
            Ok(Err(kind)) => {
                let reason = RefusedReason::NotAFile(kind);
                scan.refused.push(Refused { name, position: Some(position), reason });
            }
            Ok(Ok(meta)) => scan.segments.push(Segment {
                position,
                name,
                path,
                len: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            }),
        }
    }
    scan.segments.sort_by_key(|s| s.position);
    scan.refused.sort_by_key(|r| r.position.unwrap_or(u64::MAX));
    if let Some(pair) = scan.segments.windows(2).find(|w| w[0].position == w[1].position) {
        return Err(ScanError::Ambiguous {
            position: pair[0].position,
            a: pair[0].name.clone(),
            b: pair[1].name.clone(),
        });
    }
    Ok(scan)
}

/// The metadata of a regular file, or of the regular file a symbolic link
/// points to; otherwise what kind of entry it is. Never opens the entry (a
/// named pipe would block the stream).
fn regular_file_metadata(entry: &fs::DirEntry, path: &Path) -> io::Result<Result<fs::Metadata, String>> {
    let file_type = entry.file_type()?;
    if file_type.is_symlink() {
        let meta = fs::metadata(path)?;
        return Ok(match meta.is_file() {
            true => Ok(meta),
            false => Err(format!("a symbolic link to {}", kind_of(meta.file_type()))),
        });
    }
    if !file_type.is_file() {
        return Ok(Err(kind_of(file_type).to_string()));
    }
    entry.metadata().map(Ok)
}

/// Whether a directory entry is still there (a dangling symbolic link is).
fn is_present(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// "a directory", "a named pipe (FIFO)"…: what a non-regular entry is.
fn kind_of(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a named pipe (FIFO)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// A directory whose modification time is younger than this is always read
/// again: a change within the timestamp's granularity could go unseen.
const SETTLE: Duration = Duration::from_secs(2);

/// Scans that skip re-reading a directory when it has not changed.
///
/// Entries are added, removed and renamed only through the directory, which
/// updates its modification time; so an unchanged, settled directory holds
/// the same files as at the last scan. Only the newest segment can still be
/// growing (and sealing by `seal_idle` looks at its age), so it alone is
/// stat'ed again. An idle poll then costs one or two `stat` calls however
/// many files the directory keeps. A scan that refused an entry is not
/// kept: what a symbolic link points to can change without the directory
/// changing, so the entry is looked at again every time.
#[derive(Default)]
pub struct CachedScan {
    last: Option<(SystemTime, Vec<Segment>)>,
}

impl CachedScan {
    /// The entries of `dir` whose position is `wanted` (see
    /// [`scan_entries`]), read again only when the directory changed or has
    /// not settled.
    pub fn scan(
        &mut self,
        dir: &Path,
        naming: &Naming,
        wanted: impl Fn(u64) -> bool,
        now: SystemTime,
    ) -> Result<Scan, ScanError> {
        let dir_error = |source| ScanError::Dir { dir: dir.to_path_buf(), source };
        let dir_mtime = fs::metadata(dir).and_then(|m| m.modified()).map_err(dir_error)?;
        if let Some((seen, segments)) = &mut self.last
            && *seen == dir_mtime
            && age(dir_mtime, now) >= SETTLE
        {
            refresh_newest(segments);
            return Ok(Scan { segments: segments.clone(), refused: Vec::new() });
        }
        let scan = scan_entries(dir, naming, wanted)?;
        self.last = scan.refused.is_empty().then(|| (dir_mtime, scan.segments.clone()));
        Ok(scan)
    }
}

/// Re-read the size and time of the newest segment, which may still grow.
fn refresh_newest(segments: &mut [Segment]) {
    if let Some(newest) = segments.last_mut()
        && let Ok(meta) = std::fs::metadata(&newest.path)
    {
        newest.len = meta.len();
        newest.modified = meta.modified().unwrap_or(newest.modified);
    }
}

/// The position ranges the archive's records cover, merged: those stored
/// as batches, and those recorded as gaps. Kept small (one range per run of
/// adjacent batches, one per run of gaps), whatever the archive's length.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchivedRanges {
    batches: Vec<(u64, u64)>,
    gaps: Vec<(u64, u64)>,
}

impl ArchivedRanges {
    /// Take in the next record (records come in position order).
    pub fn record(&mut self, record: &Record) {
        let ranges = match record {
            Record::Batch(_) => &mut self.batches,
            Record::Gap(_) => &mut self.gaps,
        };
        let (first, last) = (record.first(), record.last());
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(first) => *end = last,
            _ => ranges.push((first, last)),
        }
    }

    /// Whether the archive holds position `p` as batch content.
    pub fn holds(&self, position: u64) -> bool {
        covering(&self.batches, position).is_some()
    }

    /// The last position the records cover.
    pub fn last(&self) -> Option<u64> {
        let end = |ranges: &[(u64, u64)]| ranges.last().map(|r| r.1);
        end(&self.batches).max(end(&self.gaps))
    }

    /// What the archive says about a position it does not hold, for the
    /// warning about a late file there.
    fn describe_missing(&self, position: u64) -> String {
        if let Some((first, last)) = covering(&self.gaps, position) {
            return format!("recorded as the gap {first}..{last} when it was missing");
        }
        let starts = [self.batches.first(), self.gaps.first()];
        match starts.into_iter().flatten().map(|r| r.0).min() {
            Some(start) if position < start => format!("below position {start}, where the archive starts"),
            _ => "not in any record of the archive".into(),
        }
    }
}

/// The range of `ranges` (sorted, disjoint) that holds `position`.
fn covering(ranges: &[(u64, u64)], position: u64) -> Option<(u64, u64)> {
    let after = ranges.partition_point(|&(first, _)| first <= position);
    after.checked_sub(1).map(|i| ranges[i]).filter(|&(_, last)| position <= last)
}

/// What a [`Source`] found, sorted against what the archive records.
#[derive(Debug, Default)]
pub struct Survey {
    /// Segments after the last recorded position, sorted, and all below the
    /// first refused entry: what the planner may archive.
    pub waiting: Vec<Segment>,
    /// Segments the archive holds as batch content: what `on_archived` may
    /// delete or mark.
    pub archived: Vec<Segment>,
    /// Late files: at positions the archive passed without them (a gap, or
    /// below its start). Never archived, deleted or marked by walship.
    pub late: Vec<Segment>,
    /// Entries that cannot be archived (see [`scan_entries`]).
    pub refused: Vec<Refused>,
}

/// A stream's source directory as the stream sees it: read through a
/// [`CachedScan`] and sorted against the ranges the archive records. Late
/// files are warned about once each while they stay.
pub struct Source {
    stream: String,
    dir: PathBuf,
    naming: Naming,
    /// Archived segments are kept in the directory (`on_archived = keep`):
    /// they need not be looked at.
    keep_archived: bool,
    cache: CachedScan,
    archive: ArchivedRanges,
    /// Late files already warned about (pruned to those still present).
    warned_late: BTreeSet<String>,
}

impl Source {
    /// The source of stream `stream`, reading `dir` through `naming`.
    pub fn new(stream: &str, dir: &Path, naming: &Naming, keep_archived: bool) -> Source {
        Source {
            stream: stream.to_string(),
            dir: dir.to_path_buf(),
            naming: naming.clone(),
            keep_archived,
            cache: CachedScan::default(),
            archive: ArchivedRanges::default(),
            warned_late: BTreeSet::new(),
        }
    }

    /// Take in the archive's next record, checking that the segment names
    /// it holds still stand for their positions under the stream's naming.
    pub fn record(&mut self, record: &Record) -> Result<(), NameMismatch> {
        self.archive.record(record);
        match record {
            Record::Batch(batch) => {
                batch.segments.iter().try_for_each(|seg| self.naming.check_recorded(&seg.name, seg.position))
            }
            Record::Gap(_) => Ok(()),
        }
    }

    /// Read the directory and sort what is there (see [`Survey`]), warning
    /// once about each late file.
    pub fn survey(&mut self, now: SystemTime) -> Result<Survey, ScanError> {
        let archive = &self.archive;
        let last = archive.last();
        let after_archive = |p: u64| last.is_none_or(|last| p > last);
        let keep = self.keep_archived;
        let wanted = |p: u64| after_archive(p) || !keep || !archive.holds(p);
        let scan = self.cache.scan(&self.dir, &self.naming, wanted, now)?;
        // An entry the archive already passed holds nothing back: it is
        // warned about like a late file, not an error.
        let (refused, passed): (Vec<Refused>, Vec<Refused>) =
            scan.refused.into_iter().partition(|r| r.position.is_none_or(after_archive));
        let held_at = refused.iter().filter_map(|r| r.position).min().unwrap_or(u64::MAX);
        let mut survey = Survey { refused, ..Survey::default() };
        for segment in scan.segments {
            let position = segment.position;
            if after_archive(position) {
                if position < held_at {
                    survey.waiting.push(segment);
                }
            } else if archive.holds(position) {
                survey.archived.push(segment);
            } else {
                survey.late.push(segment);
            }
        }
        self.warn_late(&survey.late, &passed);
        Ok(survey)
    }

    /// Warn about each late file, and each refused entry at a position the
    /// archive passed, once while it stays in the directory.
    fn warn_late(&mut self, late: &[Segment], passed: &[Refused]) {
        let present: BTreeSet<&str> =
            late.iter().map(|s| s.name.as_str()).chain(passed.iter().map(|r| r.name.as_str())).collect();
        self.warned_late.retain(|name| present.contains(name.as_str()));
        for segment in late {
            if self.warned_late.insert(segment.name.clone()) {
                log::warn!(
                    "stream {}: {} arrived late: its position {} is {}, so it will not be archived; \
                     walship leaves it untouched. Keep it elsewhere if its data matters (the \
                     archive will not hold it), then remove it from {}",
                    self.stream,
                    segment.name,
                    segment.position,
                    self.archive.describe_missing(segment.position),
                    self.dir.display(),
                );
            }
        }
        for entry in passed {
            if self.warned_late.insert(entry.name.clone()) {
                log::warn!(
                    "stream {}: in {}: {entry} (its position is one the archive already passed, \
                     so nothing waits on it)",
                    self.stream,
                    self.dir.display(),
                );
            }
        }
    }
}

/// How many of `segments` (sorted by position) are sealed: all of them in a
/// spool, every one but the newest otherwise — and the newest too once it has
/// been idle for `seal_idle` (or when `flush_newest` asks for it).
/// Only the newest can be unsealed, so sealed segments are always a prefix.
pub fn sealed_count(
    segments: &[Segment],
    mode: SealMode,
    seal_idle: Option<Duration>,
    now: SystemTime,
) -> usize {
    let Some(newest) = segments.last() else { return 0 };
    let newest_idle = seal_idle.is_some_and(|idle| age(newest.modified, now) >= idle);
    match mode {
        SealMode::Spool => segments.len(),
        SealMode::Next if newest_idle => segments.len(),
        SealMode::Next => segments.len() - 1,
    }
}

/// The committed position: the last of the `sealed` leading `segments`
/// (sealed ones are always a prefix), never behind what is already archived
/// (archived segments may have been deleted or skipped by the scan).
pub fn committed_position(segments: &[Segment], sealed: usize, archived: Option<u64>) -> Option<u64> {
    let last_sealed = sealed.checked_sub(1).and_then(|i| segments.get(i)).map(|s| s.position);
    last_sealed.max(archived)
}

/// Time since `modified`; zero for timestamps in the future (clock steps).
pub fn age(modified: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(modified).unwrap_or(Duration::ZERO)
}

/// A read-only view of a segment's bytes, guarded against truncation
/// while mapped (see `mapguard`).
pub struct SegmentMap {
    // Declared before `map` so it is dropped (unregistered) first.
    guard: Option<Registration>,
    map: Option<Mmap>,
}

impl SegmentMap {
    /// Map `path`, expecting `expected_len` bytes. A file whose length no
    /// longer matches its scan changed under us and is refused.
    /// Opened without blocking, so an entry swapped for a named pipe since
    /// the scan is refused instead of hanging the stream.
    pub fn open(path: &Path, expected_len: u64) -> io::Result<SegmentMap> {
        let file = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("it is no longer a regular file"));
        }
        let len = meta.len();
        if len != expected_len {
            return Err(io::Error::other(format!(
                "size changed from {expected_len} to {len} bytes after it was sealed"
            )));
        }
        if len == 0 {
            return Ok(SegmentMap { guard: None, map: None });
        }
        // SAFETY: the map is read-only and only read while the segment is
        // sealed. A sealed segment is not written again by its producer; if
        // that promise is broken, the CRC computed before upload and the one
        // the target verifies disagree, and the batch is refused. If the file
        // is truncated while mapped, the guard turns the SIGBUS into zeros
        // plus a flag, and the size check after upload refuses the batch.
        let map = unsafe { Mmap::map(&file)? };
        let guard = mapguard::register(map.as_ptr(), map.len());
        Ok(SegmentMap { guard: Some(guard), map: Some(map) })
    }

    /// False once a read hit a page the file no longer has (truncated
    /// while mapped): the bytes read are not the segment's.
    pub fn intact(&self) -> bool {
        !self.guard.as_ref().is_some_and(Registration::faulted)
    }

    /// The segment's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(position: u64, modified: SystemTime) -> Segment {
        Segment { position, name: position.to_string(), path: PathBuf::new(), len: 0, modified }
    }

    /// Set a directory's modification time (as if its last change was then).
    fn set_dir_mtime(dir: &Path, when: SystemTime) {
        File::open(dir).unwrap().set_modified(when).unwrap();
    }

    #[test]
    fn cached_scan_rereads_only_changed_or_unsettled_directories() {
        let dir = std::env::temp_dir().join(format!("walship-cached-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        let names = |scan: Scan| -> Vec<String> { scan.segments.into_iter().map(|s| s.name).collect() };
        let now = SystemTime::now();
        let settled = now - Duration::from_secs(60);
        std::fs::write(dir.join("1.log"), b"a").unwrap();
        set_dir_mtime(&dir, settled);
        let mut cache = CachedScan::default();
        assert_eq!(names(cache.scan(&dir, &naming, |_| true, now).unwrap()), ["1.log"]);

        // A new file slipped in without the directory's time moving: the
        // cache is used (which proves no directory read happened)...
        std::fs::write(dir.join("2.log"), b"b").unwrap();
        set_dir_mtime(&dir, settled);
        assert_eq!(names(cache.scan(&dir, &naming, |_| true, now).unwrap()), ["1.log"]);
        // ...but the newest segment's size is refreshed: it may be growing.
        std::fs::write(dir.join("1.log"), b"abc").unwrap();
        assert_eq!(cache.scan(&dir, &naming, |_| true, now).unwrap().segments[0].len, 3);

        // A changed directory is read again.
        set_dir_mtime(&dir, settled + Duration::from_secs(1));
        assert_eq!(names(cache.scan(&dir, &naming, |_| true, now).unwrap()), ["1.log", "2.log"]);
        // One changed just now is read every time, even at the same time
        // stamp (a second change may hide within its granularity).
        std::fs::write(dir.join("3.log"), b"c").unwrap();
        let fresh = std::fs::metadata(&dir).unwrap().modified().unwrap();
        assert_eq!(names(cache.scan(&dir, &naming, |_| true, fresh).unwrap()), ["1.log", "2.log", "3.log"]);
        std::fs::write(dir.join("4.log"), b"d").unwrap();
        set_dir_mtime(&dir, fresh);
        assert_eq!(names(cache.scan(&dir, &naming, |_| true, fresh).unwrap()).len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn batch(first: u64, last: u64) -> Record {
        Record::Batch(crate::manifest::BatchRecord {
            first,
            last,
            key: String::new(),
            size: 0,
            crc32: 0,
            segments: (first..=last)
                .map(|position| crate::manifest::SegmentEntry {
                    position,
                    name: format!("{position}.log"),
                    offset: 0,
                    len: 0,
                    crc32: 0,
                })
                .collect(),
        })
    }

    fn gap(first: u64, last: u64) -> Record {
        Record::Gap(crate::manifest::GapRecord { first, last, reason: String::new() })
    }

    #[test]
    fn archived_ranges_merge_and_tell_batches_from_gaps() {
        let mut ranges = ArchivedRanges::default();
        assert_eq!(ranges.last(), None);
        for record in [batch(10, 10), batch(11, 20), gap(21, 22), gap(23, 23), batch(24, 30)] {
            ranges.record(&record);
        }
        assert_eq!(ranges.batches, [(10, 20), (24, 30)]);
        assert_eq!(ranges.gaps, [(21, 23)]);
        assert_eq!(ranges.last(), Some(30));
        let held: Vec<u64> = (8..=32).filter(|&p| ranges.holds(p)).collect();
        assert_eq!(held, [10..=20, 24..=30].into_iter().flatten().collect::<Vec<_>>());
        assert_eq!(ranges.describe_missing(22), "recorded as the gap 21..23 when it was missing");
        assert_eq!(ranges.describe_missing(3), "below position 10, where the archive starts");
        let mut gap_first = ArchivedRanges::default();
        gap_first.record(&gap(5, 6));
        assert_eq!(gap_first.describe_missing(1), "below position 5, where the archive starts");
    }

    /// A temporary stream directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("walship-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn positions(segments: &[Segment]) -> Vec<u64> {
        segments.iter().map(|s| s.position).collect()
    }

    #[test]
    fn survey_sorts_waiting_archived_and_late_and_holds_at_a_refused_entry() {
        let dir = TempDir::new("survey");
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        for p in [1, 2, 3, 6, 7, 9, 11, 12] {
            fs::write(dir.0.join(format!("{p}.log")), b"x").unwrap();
        }
        fs::create_dir(dir.0.join("10.log")).unwrap();
        let mut source = Source::new("s", &dir.0, &naming, false);
        for record in [batch(2, 5), gap(6, 6), batch(7, 8)] {
            source.record(&record).unwrap();
        }
        let survey = source.survey(SystemTime::now()).unwrap();
        assert_eq!(positions(&survey.waiting), [9], "held below the directory at 10");
        assert_eq!(positions(&survey.archived), [2, 3, 7]);
        assert_eq!(positions(&survey.late), [1, 6]);
        assert_eq!(survey.refused.len(), 1);
        assert_eq!(
            survey.refused[0].to_string().split(';').next(),
            Some("10.log is a directory, not a segment file")
        );
        assert_eq!(source.warned_late.len(), 2);

        // An entry refused at a position the archive passed holds nothing.
        fs::remove_dir(dir.0.join("10.log")).unwrap();
        fs::remove_file(dir.0.join("3.log")).unwrap();
        fs::create_dir(dir.0.join("3.log")).unwrap();
        let survey = source.survey(SystemTime::now() + Duration::from_secs(60)).unwrap();
        assert_eq!(positions(&survey.waiting), [9, 11, 12]);
        assert!(survey.refused.is_empty());
        assert!(source.warned_late.contains("3.log"));

        // Archived segments kept in place are not even looked at; late ones are.
        fs::remove_dir(dir.0.join("3.log")).unwrap();
        let mut keeping = Source::new("s", &dir.0, &naming, true);
        for record in [batch(2, 5), gap(6, 6), batch(7, 8)] {
            keeping.record(&record).unwrap();
        }
        let survey = keeping.survey(SystemTime::now()).unwrap();
        assert_eq!(positions(&survey.waiting), [9, 11, 12]);
        assert!(survey.archived.is_empty());
        assert_eq!(positions(&survey.late), [1, 6]);
        // Once a late file is gone it is forgotten (warned again if it returns).
        fs::remove_file(dir.0.join("6.log")).unwrap();
        keeping.survey(SystemTime::now() + Duration::from_secs(60)).unwrap();
        assert_eq!(keeping.warned_late.iter().collect::<Vec<_>>(), ["1.log"]);
    }

    #[test]
    fn records_whose_names_the_naming_reads_differently_are_a_mismatch() {
        let naming = Naming::from_pattern("{hex}.log").unwrap();
        let mut source = Source::new("s", Path::new("/nonexistent"), &naming, true);
        assert!(source.record(&batch(1, 9)).is_ok());
        let mismatch = source.record(&batch(10, 12)).unwrap_err();
        assert_eq!(
            (mismatch.name.as_str(), mismatch.recorded, mismatch.now),
            ("10.log", 10, NameMatch::Position(16))
        );
        assert!(source.record(&gap(13, 14)).is_ok());
    }

    /// A named pipe is refused from its type alone: opening it would block.
    #[test]
    fn scan_refuses_pipes_sockets_and_links_to_nothing_without_opening_them() {
        let dir = TempDir::new("scan-kinds");
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        let fifo = std::ffi::CString::new(dir.0.join("1.log").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let _socket = std::os::unix::net::UnixListener::bind(dir.0.join("2.log")).unwrap();
        std::os::unix::fs::symlink(dir.0.join("nothing"), dir.0.join("3.log")).unwrap();
        fs::write(dir.0.join("target"), b"abc").unwrap();
        std::os::unix::fs::symlink(dir.0.join("target"), dir.0.join("4.log")).unwrap();
        let found = scan_entries(&dir.0, &naming, |_| true).unwrap();
        assert_eq!(positions(&found.segments), [4]);
        assert_eq!(found.segments[0].len, 3, "a link's segment has its target's size");
        let reasons: Vec<String> = found.refused.iter().map(|r| format!("{:?}", r.reason)).collect();
        assert!(reasons[0].contains("named pipe") && reasons[1].contains("socket"), "{reasons:?}");
        assert!(reasons[2].starts_with("Unreadable"), "{reasons:?}");
        let err = scan(&dir.0, &naming, |_| true).unwrap_err().to_string();
        assert!(err.contains("Archiving stops before position 1 until then"), "{err}");
        // Mapping refuses anything but a regular file, without blocking.
        let err = SegmentMap::open(&dir.0.join("1.log"), 0).err().unwrap();
        assert!(err.to_string().contains("no longer a regular file"), "{err}");
    }

    #[test]
    fn committed_position_is_the_last_sealed_and_never_behind_archived() {
        let now = SystemTime::UNIX_EPOCH;
        let segs = [seg(4, now), seg(5, now), seg(6, now)];
        assert_eq!(committed_position(&segs, 2, None), Some(5));
        assert_eq!(committed_position(&segs, 2, Some(3)), Some(5));
        assert_eq!(committed_position(&segs, 0, None), None);
        assert_eq!(committed_position(&segs, 0, Some(9)), Some(9));
        assert_eq!(committed_position(&[], 0, Some(9)), Some(9));
    }

    #[test]
    fn sealing_modes() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let old = now - Duration::from_secs(60);
        let segs = [seg(1, old), seg(2, old), seg(3, now)];
        assert_eq!(sealed_count(&segs, SealMode::Next, None, now), 2);
        assert_eq!(sealed_count(&segs, SealMode::Spool, None, now), 3);
        assert_eq!(sealed_count(&segs, SealMode::Next, Some(Duration::from_secs(30)), now), 2);
        let idle = [seg(1, old), seg(2, old)];
        assert_eq!(sealed_count(&idle, SealMode::Next, Some(Duration::from_secs(30)), now), 2);
        assert_eq!(sealed_count(&idle, SealMode::Next, None, now), 1);
        assert_eq!(sealed_count(&[], SealMode::Spool, None, now), 0);
    }
}
