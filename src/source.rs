//! The local side of a stream: which files are segments, their positions,
//! which are sealed, and read-only memory maps of their bytes.
//!
//! A directory scan gathers facts (name, position, size, modification time);
//! sealing is decided from those facts by `plan::sealed_count`. Nothing here
//! uploads, plans batches or touches the manifest.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memmap2::Mmap;

use crate::mapguard::{self, Registration};

/// How a stream's file names carry positions: `PREFIX{seq}SUFFIX` (decimal)
/// or `PREFIX{hex}SUFFIX` (hexadecimal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
    suffix: String,
    radix: u32,
}

/// Longest run of digits accepted as a position (u64 has 20 decimal digits).
const MAX_DIGITS: usize = 20;

impl Naming {
    /// Parse a `pattern` value such as `data-{seq}.log` or `{hex}.wal`.
    /// Exactly one placeholder; no '/' (segments live directly in the
    /// stream's directory).
    pub fn from_pattern(pattern: &str) -> Result<Naming, String> {
        if pattern.contains('/') {
            return Err("a pattern names files inside `dir` and cannot contain '/'".into());
        }
        let placeholders = pattern.matches("{seq}").count() + pattern.matches("{hex}").count();
        if placeholders != 1 {
            return Err("expected exactly one {seq} (decimal) or {hex} placeholder, \
                        e.g. data-{seq}.log"
                .into());
        }
        let (token, radix) = if pattern.contains("{seq}") { ("{seq}", 10) } else { ("{hex}", 16) };
        let (prefix, suffix) = pattern.split_once(token).expect("placeholder counted above");
        if prefix.starts_with('.') {
            return Err("segment names cannot start with '.': dot-files are ignored".into());
        }
        Ok(Naming { prefix: prefix.to_string(), suffix: suffix.to_string(), radix })
    }

    /// The position a file name stands for, or `None` if it is not a segment
    /// of this stream (wrong shape, dot-file, temporary or partial file).
    pub fn position(&self, file_name: &str) -> Option<u64> {
        if is_ignored_name(file_name) {
            return None;
        }
        let digits = file_name.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        if digits.is_empty() || digits.len() > MAX_DIGITS {
            return None;
        }
        if !digits.chars().all(|c| c.is_digit(self.radix)) {
            return None;
        }
        u64::from_str_radix(digits, self.radix).ok()
    }
}

/// Names never treated as segments, whatever the pattern: dot-files, and
/// files that are still being written or were set aside.
pub fn is_ignored_name(file_name: &str) -> bool {
    const IGNORED_SUFFIXES: [&str; 6] = [".tmp", ".temp", ".partial", ".part", "~", ".archived"];
    file_name.starts_with('.') || IGNORED_SUFFIXES.iter().any(|s| file_name.ends_with(s))
}

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

/// Why a scan failed. Messages name the directory or file and the fix.
#[derive(Debug)]
pub enum ScanError {
    /// The stream's directory cannot be listed.
    Dir { dir: PathBuf, source: io::Error },
    /// Two file names stand for the same position (e.g. `x-1` and `x-01`).
    Ambiguous { position: u64, a: String, b: String },
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Dir { dir, source } => write!(
                f,
                "cannot read stream directory {}: {source}; create it or fix `dir` in the config",
                dir.display()
            ),
            ScanError::Ambiguous { position, a, b } => {
                write!(f, "files {a} and {b} both stand for position {position}; remove or rename one")
            }
        }
    }
}

impl std::error::Error for ScanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScanError::Dir { source, .. } => Some(source),
            ScanError::Ambiguous { .. } => None,
        }
    }
}

/// List the segments in `dir` whose position is `wanted`, sorted by
/// position. Only wanted files are stat'ed, so a directory keeping thousands
/// of archived segments costs one directory read per poll. Subdirectories,
/// non-UTF-8 names and names that are not segments are skipped.
pub fn scan(dir: &Path, naming: &Naming, wanted: impl Fn(u64) -> bool) -> Result<Vec<Segment>, ScanError> {
    let dir_error = |source| ScanError::Dir { dir: dir.to_path_buf(), source };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let Some(position) = naming.position(&name).filter(|&p| wanted(p)) else { continue };
        // A file can vanish between listing and stat (spool consumers, races
        // with rotation): it is simply not present.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        segments.push(Segment {
            position,
            name,
            path: entry.path(),
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    segments.sort_by_key(|s| s.position);
    if let Some(pair) = segments.windows(2).find(|w| w[0].position == w[1].position) {
        return Err(ScanError::Ambiguous {
            position: pair[0].position,
            a: pair[0].name.clone(),
            b: pair[1].name.clone(),
        });
    }
    Ok(segments)
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
/// many files the directory keeps.
#[derive(Default)]
pub struct CachedScan {
    last: Option<(SystemTime, Vec<Segment>)>,
}

impl CachedScan {
    /// The segments of `dir` whose position is `wanted` (see [`scan`]), read
    /// again only when the directory changed or has not settled.
    pub fn scan(
        &mut self,
        dir: &Path,
        naming: &Naming,
        wanted: impl Fn(u64) -> bool,
        now: SystemTime,
    ) -> Result<Vec<Segment>, ScanError> {
        let dir_error = |source| ScanError::Dir { dir: dir.to_path_buf(), source };
        let dir_mtime = std::fs::metadata(dir).and_then(|m| m.modified()).map_err(dir_error)?;
        if let Some((seen, segments)) = &mut self.last
            && *seen == dir_mtime
            && age(dir_mtime, now) >= SETTLE
        {
            refresh_newest(segments);
            return Ok(segments.clone());
        }
        let segments = scan(dir, naming, wanted)?;
        self.last = Some((dir_mtime, segments.clone()));
        Ok(segments)
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
    pub fn open(path: &Path, expected_len: u64) -> io::Result<SegmentMap> {
        let file = File::open(path)?;
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

    #[test]
    fn pattern_positions() {
        let dec = Naming::from_pattern("data-{seq}.log").unwrap();
        assert_eq!(dec.position("data-0001.log"), Some(1));
        assert_eq!(dec.position("data-42.log"), Some(42));
        assert_eq!(dec.position("data-.log"), None);
        assert_eq!(dec.position("data-12a.log"), None);
        assert_eq!(dec.position("data-1.log.partial"), None);
        assert_eq!(dec.position("other-1.log"), None);
        assert_eq!(dec.position("data-99999999999999999999999.log"), None);
        let hex = Naming::from_pattern("{hex}").unwrap();
        assert_eq!(hex.position("00ff"), Some(255));
        assert_eq!(hex.position(".00ff"), None);
        assert_eq!(hex.position("00ff.tmp"), None);
        assert_eq!(hex.position("00ff~"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Naming::from_pattern("data.log").is_err());
        assert!(Naming::from_pattern("{seq}-{seq}").is_err());
        assert!(Naming::from_pattern("{seq}-{hex}").is_err());
        assert!(Naming::from_pattern("dir/{seq}").is_err());
        assert!(Naming::from_pattern(".{seq}").is_err());
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
        let names =
            |segments: Vec<Segment>| -> Vec<String> { segments.into_iter().map(|s| s.name).collect() };
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
        assert_eq!(cache.scan(&dir, &naming, |_| true, now).unwrap()[0].len, 3);

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
}
