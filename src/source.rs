//! The local side of a stream: which directory entries are segments, their
//! positions, which are sealed, which the archive already holds, and
//! read-only memory maps of their bytes.
//!
//! A directory scan gathers facts (name, position, size, modification time);
//! file names are read through the stream's [`Naming`]; sealing is decided
//! from those facts by `plan::sealed_count`. [`Source`] sorts what a scan found
//! against what the archive records: segments waiting to be archived,
//! segments the archive holds (to acknowledge), late files (at positions the
//! archive passed without them: warned about, never touched) and entries it
//! refuses (not a regular file, or a position beyond what a manifest can
//! record), which hold the stream at their position with an error instead of
//! becoming gaps. A symbolic link to a regular file is a segment like the
//! file itself, under the link's name. [`watch`] reports changes to the
//! directory as they happen (inotify). Nothing here uploads, plans batches
//! or writes the manifest.

use std::fmt;
use std::fs::{self, File, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memmap2::Mmap;

use crate::durable;
use crate::manifest::validate::MAX_POSITION;
use crate::mapguard::{self, Registration};
pub use crate::naming::{NameMatch, Naming, is_ignored_name};

mod survey;
pub mod watch;
pub use survey::{ArchivedRanges, Source, Survey};

/// One segment file found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub position: u64,
    /// File name inside the stream's directory.
    pub name: String,
    pub path: PathBuf,
    pub len: u64,
    pub modified: SystemTime,
    /// Device and inode of the file scanned (a link's target): which file
    /// this is, so that acknowledging never touches one renamed in since.
    pub file_id: (u64, u64),
}

/// A directory entry with a segment's name that cannot be archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its file name inside the stream's directory.
    pub name: String,
    /// Its position, when the name has one.
    pub position: Option<u64>,
    pub reason: RefusedReason,
}

impl Refused {
    /// Whether it is a symbolic link: what it points to can change without
    /// the stream's directory changing.
    pub fn is_link(&self) -> bool {
        match &self.reason {
            RefusedReason::NotAFile(kind) => kind.starts_with(LINK_TO),
            RefusedReason::BrokenLink { .. } => true,
            RefusedReason::Unreadable(_) | RefusedReason::BeyondLimit | RefusedReason::Overflow => false,
        }
    }
}

/// How a [`RefusedReason::NotAFile`] kind that is a link begins.
const LINK_TO: &str = "a symbolic link to ";

/// Why a [`Refused`] entry cannot be archived (errors kept as their
/// messages, so a scan can be kept and compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedReason {
    /// Not a regular file (nor a symbolic link to one): "a directory", "a
    /// named pipe (FIFO)", "a socket", "a device", or a link to one of those.
    NotAFile(String),
    /// A symbolic link whose target cannot be read (missing, a loop, no
    /// permission).
    BrokenLink { target: PathBuf, error: String },
    /// An entry that cannot be stat'ed.
    Unreadable(String),
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
            (RefusedReason::BrokenLink { target, error }, _) => write!(
                f,
                "{name} is a symbolic link to {}, which cannot be read ({error}); make it point \
                 to the segment file, or remove it",
                target.display()
            ),
            (RefusedReason::Unreadable(e), _) => {
                write!(f, "{name} cannot be examined ({e}); check its permissions, or remove it")
            }
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
#[derive(Debug, Default, Clone)]
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
        let reason = match entry_kind(&entry, &path) {
            Ok(EntryKind::File(meta)) => {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let file_id = (meta.dev(), meta.ino());
                scan.segments.push(Segment { position, name, path, len: meta.len(), modified, file_id });
                continue;
            }
            // A file can vanish between listing and stat (spool consumers,
            // races with rotation): it is simply not present.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Ok(EntryKind::Vanished) => continue,
            Ok(EntryKind::NotAFile(kind)) => RefusedReason::NotAFile(kind),
            Ok(EntryKind::BrokenLink { target, error }) => {
                RefusedReason::BrokenLink { target, error: error.to_string() }
            }
            Err(e) => RefusedReason::Unreadable(e.to_string()),
        };
        scan.refused.push(Refused { name, position: Some(position), reason });
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

/// What a directory entry with a segment's name is.
enum EntryKind {
    /// A regular file, or a symbolic link to one: the file's metadata.
    File(fs::Metadata),
    /// Anything else: "a directory", …, "a symbolic link to a directory".
    NotAFile(String),
    /// A symbolic link whose target cannot be stat'ed.
    BrokenLink { target: PathBuf, error: io::Error },
    /// A symbolic link removed while it was looked at.
    Vanished,
}

/// What `entry` (at `path`) is, from `lstat`, and `stat` for a symbolic
/// link. Never opens it (opening a named pipe would block the stream).
fn entry_kind(entry: &fs::DirEntry, path: &Path) -> io::Result<EntryKind> {
    let file_type = entry.file_type()?;
    if file_type.is_symlink() {
        return Ok(match fs::metadata(path) {
            Ok(meta) if meta.is_file() => EntryKind::File(meta),
            Ok(meta) => EntryKind::NotAFile(format!("{LINK_TO}{}", kind_of(meta.file_type()))),
            Err(error) => match fs::read_link(path) {
                Ok(target) => EntryKind::BrokenLink { target, error },
                Err(_) => EntryKind::Vanished,
            },
        });
    }
    if !file_type.is_file() {
        return Ok(EntryKind::NotAFile(kind_of(file_type).to_string()));
    }
    entry.metadata().map(EntryKind::File)
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
/// many files the directory keeps. A scan that refused a symbolic link is
/// not kept: what a link points to can change without the directory
/// changing, so the link is looked at again every time.
#[derive(Default)]
pub struct CachedScan {
    last: Option<(SystemTime, Scan)>,
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
        if let Some((seen, scan)) = &mut self.last
            && *seen == dir_mtime
            && age(dir_mtime, now) >= SETTLE
        {
            refresh_newest(&mut scan.segments);
            return Ok(scan.clone());
        }
        let scan = scan_entries(dir, naming, wanted)?;
        let keep = !scan.refused.iter().any(Refused::is_link);
        self.last = keep.then(|| (dir_mtime, scan.clone()));
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
        let file =
            durable::open_regular(path, File::options().read(true), durable::Links::Follow, "a segment")
                .map_err(|e| io::Error::other(format!("it is no longer a regular file ({e})")))?;
        let len = file.metadata()?.len();
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
    use crate::test_support::TempDir;

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

    fn positions(segments: &[Segment]) -> Vec<u64> {
        segments.iter().map(|s| s.position).collect()
    }

    /// A refused directory is kept like any scan (it changes only through
    /// the stream's directory); a refused link is looked at again every
    /// time, since its target can appear without the directory changing.
    #[test]
    fn cached_scan_keeps_refusals_except_links() {
        let dir = TempDir::new("cached-refusals");
        let outside = TempDir::new("cached-refusals-outside");
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        let now = SystemTime::now();
        let settled = now - Duration::from_secs(60);
        let refused = |scan: &Scan| scan.refused.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        fs::create_dir(dir.0.join("5.log")).unwrap();
        set_dir_mtime(&dir.0, settled);
        let mut cache = CachedScan::default();
        assert_eq!(refused(&cache.scan(&dir.0, &naming, |_| true, now).unwrap()), ["5.log"]);
        fs::write(dir.0.join("6.log"), b"x").unwrap();
        set_dir_mtime(&dir.0, settled);
        let cached = cache.scan(&dir.0, &naming, |_| true, now).unwrap();
        assert!(cached.segments.is_empty(), "the kept scan is used");
        assert_eq!(refused(&cached), ["5.log"]);

        std::os::unix::fs::symlink(outside.0.join("seven"), dir.0.join("7.log")).unwrap();
        set_dir_mtime(&dir.0, settled + Duration::from_secs(1));
        assert_eq!(refused(&cache.scan(&dir.0, &naming, |_| true, now).unwrap()), ["5.log", "7.log"]);
        fs::write(outside.0.join("seven"), b"7").unwrap();
        let scan = cache.scan(&dir.0, &naming, |_| true, now).unwrap();
        assert_eq!(refused(&scan), ["5.log"]);
        assert_eq!(positions(&scan.segments), [6, 7]);
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
        assert!(reasons[2].starts_with("BrokenLink"), "{reasons:?}");
        let err = scan(&dir.0, &naming, |_| true).unwrap_err().to_string();
        assert!(err.contains("Archiving stops before position 1 until then"), "{err}");
        // Mapping refuses anything but a regular file, without blocking.
        let err = SegmentMap::open(&dir.0.join("1.log"), 0).err().unwrap();
        assert!(err.to_string().contains("no longer a regular file"), "{err}");
    }
}
