//! `fetch`'s prefetch: when PostgreSQL asks for segment N, the segments
//! after it are downloaded ahead into a spool, so that recovery does not
//! wait one round trip per segment (as WAL-G's prefetch and pgBackRest's
//! asynchronous archive-get do).
//!
//! A `fetch` process lives for one segment, so the prefetch runs as a
//! detached child (`walship fetch --prefetch NAME`, its own process group,
//! stdin and stdout closed, stderr to `.log` in the spool): `fetch` hands N
//! over and exits at once; the child fills the spool and exits. It does a bounded amount of
//! work (at most `prefetch_segments` downloads, each bounded by the
//! target's timeouts), so it never outlives a recovery by more than that;
//! one runs at a time per stream (a lock in the spool; a second one exits
//! at once).
//!
//! The spool, `STATE_DIR/STREAM/prefetch/` (owner-only), holds whole
//! segments named `NAME.CRC32` (8 hex digits), the CRC32 the manifest gives
//! the segment. A file appears under that name only once downloaded and
//! checked (a temp name first, then the name). A later `fetch` of NAME
//! checks the file against that CRC32 again as it hands it over, then
//! removes it; a file that fails the check is removed and the segment
//! fetched from the archive. Bounds: each prefetch first removes every
//! spool file that is not among the next `prefetch_segments` segments after
//! N (consumed, skipped, or of another timeline), then adds segments only
//! while the spool stays within `prefetch_bytes`; so the spool never holds
//! more than that, whatever PostgreSQL asks for.
//!
//! The next segments are the archive's own: the segment entries after N in
//! the log, in order, up to a gap and (WAL naming) within N's timeline.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::catalog::reader::{ManifestReader, Reach};
use crate::config::{Config, StreamConfig};
use crate::durable;
use crate::error::Error;
use crate::fetch::whole_object;
use crate::manifest::{Record, SegmentEntry, StreamRules};
use crate::naming::wal;
use crate::restore::{self, FetchDest};
use crate::statedir;
use crate::target;
use crate::target::fs::FileTarget;

/// The name of the lock file a running prefetch holds.
const LOCK_NAME: &str = ".lock";
/// Where the last prefetch's messages go.
const LOG_NAME: &str = ".log";
/// How a download in progress into the spool ends its temp file's name
/// (`restore::fetch`'s temp names).
const RESTORE_TEMP_SUFFIX: &str = ".walship-tmp";
/// A fetch waits at most this long for the prefetch downloading its segment.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);
/// A temp file not written to for this long is not a download in progress.
const IN_FLIGHT_IDLE: Duration = Duration::from_secs(5);
/// Segments the prefetch downloads at once (in order of position).
const PREFETCH_THREADS: usize = 4;

/// A stream's prefetch spool.
pub struct Spool {
    dir: PathBuf,
}

/// A segment in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spooled {
    /// The segment's name.
    name: String,
    /// The file's name in the spool (`NAME.CRC32`).
    file_name: String,
    crc32: u32,
    len: u64,
}

impl Spool {
    /// The spool of `stream` (nothing is created).
    pub fn at(state_dir: &Path, stream: &str) -> Spool {
        Spool { dir: statedir::prefetch_dir(state_dir, stream) }
    }

    /// Hand the spooled segment `name` over to `dest` if the spool holds
    /// it (or a prefetch is downloading it: then it waits for it) and it
    /// checks against its CRC32; it leaves the spool either way. `None`
    /// when it is not there (or failed its check).
    pub fn take(&self, stream: &str, name: &str, dest: &FetchDest) -> Result<Option<u64>, Error> {
        let started = Instant::now();
        let spooled = loop {
            if let Some(spooled) = self.list().into_iter().find(|s| s.name == name) {
                break spooled;
            }
            if !self.downloading(name) || started.elapsed() > IN_FLIGHT_WAIT {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let record = whole_object(spooled.file_name.clone(), name, spooled.len, spooled.crc32);
        let handed = restore::fetch(&[record], &FileTarget::new(self.dir.clone()), stream, name, dest);
        let _ = fs::remove_file(self.dir.join(&spooled.file_name));
        match handed {
            Ok(len) => Ok(Some(len)),
            // A damaged or vanished spool file, nothing written to `dest`:
            // fetched from the archive instead.
            Err(error @ Error::Target { .. }) => {
                log::warn!("stream {stream}: prefetched {name} cannot be used ({error}); fetching it again");
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// Whether a prefetch is writing `name` into the spool now: its temp
    /// file (restore's `.NAME.CRC32.PID-N.walship-tmp`) exists and was
    /// written to within [`IN_FLIGHT_IDLE`] (one a killed prefetch left
    /// does not count).
    fn downloading(&self, name: &str) -> bool {
        let Ok(entries) = fs::read_dir(&self.dir) else { return false };
        let prefix = format!(".{name}.");
        entries.filter_map(Result::ok).any(|entry| {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            file_name.starts_with(&prefix)
                && file_name.ends_with(RESTORE_TEMP_SUFFIX)
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at.elapsed().unwrap_or_default() < IN_FLIGHT_IDLE)
        })
    }

    /// The segments in the spool (temp files and the lock left out).
    fn list(&self) -> Vec<Spooled> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let file_name = entry.file_name().into_string().ok()?;
                let (name, crc) = file_name.rsplit_once('.')?;
                let canonical = crc.len() == 8 && crc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if name.starts_with('.') || !canonical {
                    return None;
                }
                let meta = entry.metadata().ok().filter(fs::Metadata::is_file)?;
                let crc32 = u32::from_str_radix(crc, 16).ok()?;
                Some(Spooled { name: name.to_string(), file_name: file_name.clone(), crc32, len: meta.len() })
            })
            .collect()
    }
}

/// Start the background prefetch of the segments after `name`. Its
/// messages go to `.log` in the spool (the last run's only), not to
/// `fetch`'s stderr: whoever reads that would otherwise wait for the
/// prefetch too. A failure to start it is only logged: the fetch itself
/// has succeeded.
pub fn start(config: &Config, stream: &StreamConfig, name: &str) {
    if stream.prefetch_segments == 0 {
        return;
    }
    let dir = statedir::prefetch_dir(&config.global.state_dir, &stream.name);
    let log = create_owner_only(&dir).and_then(|()| File::create(dir.join(LOG_NAME)));
    let spawned = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg("fetch")
            .arg("-c")
            .arg(&config.path)
            .args(["-s", &stream.name, "--prefetch", "--", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.map_or_else(|_| Stdio::null(), Stdio::from))
            .process_group(0)
            .spawn()
    });
    if let Err(e) = spawned {
        log::warn!("stream {}: cannot start the prefetch after {name}: {e}", stream.name);
    }
}

/// The prefetch itself (`fetch --prefetch NAME`): fill the spool with the
/// segments after `name` (see the module doc). Returns how many it
/// downloaded; 0 when another prefetch of the stream is running.
pub fn run(config: &Config, stream: &StreamConfig, name: &str) -> Result<usize, Error> {
    let state_dir = &config.global.state_dir;
    let spool = Spool::at(state_dir, &stream.name);
    let Some(position) = stream.naming.position(name) else {
        return Err(Error::Usage(format!("{name} is not a segment name of stream {}", stream.name)));
    };
    create_owner_only(&spool.dir).map_err(|e| Error::local("create", &spool.dir, e))?;
    let Some(_lock) = try_lock(&spool.dir.join(LOCK_NAME))? else {
        return Ok(0);
    };
    let k = u64::from(stream.prefetch_segments);
    // WAL naming: the next names are known without the archive; when the
    // spool holds them all, there is nothing to do.
    if let Some(wal) = stream.naming.wal() {
        let next: Vec<String> = (1..=k).map(|i| wal.name(position + i)).collect();
        let spooled: Vec<String> = spool.list().into_iter().map(|s| s.name).collect();
        evict(&spool, |s| next.contains(&s.name));
        if next.iter().all(|n| spooled.contains(n)) {
            return Ok(0);
        }
    }
    let target = target::open(&config.global)?;
    let rules = StreamRules::new(&stream.name, &stream.naming);
    // The log records after `position`, taken while the manifest is opened
    // (one pass over the archive's records when the state directory has no
    // journal), kept only until they hold the segments wanted (at most
    // `prefetch_segments` records); then those retention left.
    let count = stream.prefetch_segments as usize;
    let mut after = Vec::new();
    let mut held = 0;
    let reach = Reach::Position(position + 1);
    let reader = ManifestReader::open_visiting(state_dir, target.as_ref(), &rules, reach, |record| {
        if record.last() > position && held < count {
            held += match record {
                Record::Batch(batch) => batch.segments.iter().filter(|s| s.position > position).count(),
                Record::Gap(_) => count,
            };
            after.push(record.clone());
        }
    })?;
    let mark = reader.pruned_before().unwrap_or(0);
    after.retain(|record| record.last() >= mark);
    let wanted = next_segments(&after, position, count, stream.naming.wal().is_some());
    evict(&spool, |s| wanted.iter().any(|(_, e)| e.name == s.name && e.crc32 == s.crc32));
    // Stale temp files of a killed prefetch (none is running: we hold the lock).
    remove_temps(&spool.dir);
    let present = spool.list();
    let mut bytes: u64 = present.iter().map(|s| s.len).sum();
    let mut to_fetch = Vec::new();
    for (batch, entry) in wanted {
        if present.iter().any(|s| s.name == entry.name) {
            continue;
        }
        if bytes + entry.len > stream.prefetch_bytes {
            break;
        }
        bytes += entry.len;
        to_fetch.push((batch, entry));
    }
    download(&spool, target.as_ref(), &stream.name, &to_fetch)?;
    Ok(to_fetch.len())
}

/// Download `segments` into the spool, [`PREFETCH_THREADS`] at a time,
/// starting in order of position. The first error is returned once all
/// are done.
fn download(
    spool: &Spool,
    target: &dyn target::Target,
    stream: &str,
    segments: &[(&Record, &SegmentEntry)],
) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PREFETCH_THREADS.min(segments.len()) {
            scope.spawn(|| {
                while let Some((batch, entry)) = segments.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let file = spool.dir.join(format!("{}.{:08x}", entry.name, entry.crc32));
                    let dest = FetchDest::Path(file);
                    if let Err(e) =
                        restore::fetch(std::slice::from_ref(*batch), target, stream, &entry.name, &dest)
                    {
                        errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                    }
                }
            });
        }
    });
    match errors.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// The segment entries after `position` in `log`, in order: at most
/// `count`, consecutive positions only (up to a gap), and with WAL naming
/// within `position`'s timeline.
fn next_segments(
    log: &[Record],
    position: u64,
    count: usize,
    wal_naming: bool,
) -> Vec<(&Record, &SegmentEntry)> {
    let start = log.partition_point(|r| r.last() <= position);
    let mut expected = position + 1;
    let mut next = Vec::new();
    for record in &log[start..] {
        let Record::Batch(batch) = record else { break };
        for entry in batch.segments.iter().filter(|e| e.position > position) {
            let other_timeline = wal_naming && wal::timeline_of(entry.position) != wal::timeline_of(position);
            if entry.position != expected || other_timeline || next.len() == count {
                return next;
            }
            next.push((record, entry));
            expected += 1;
        }
    }
    next
}

/// Create the spool directory (owner-only) if needed.
fn create_owner_only(dir: &Path) -> io::Result<()> {
    durable::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Remove restore's temp files from the spool.
fn remove_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(RESTORE_TEMP_SUFFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Remove the spool files `keep` refuses.
fn evict(spool: &Spool, keep: impl Fn(&Spooled) -> bool) {
    for spooled in spool.list().iter().filter(|s| !keep(s)) {
        let _ = fs::remove_file(spool.dir.join(&spooled.file_name));
    }
}

/// The prefetch lock, or `None` while another prefetch holds it.
fn try_lock(path: &Path) -> Result<Option<File>, Error> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::local("open lock file", path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(Error::local("lock", path, io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::GapRecord;

    fn batch(first: u64, last: u64) -> Record {
        let segments =
            (first..=last).map(|p| SegmentEntry::identity(p, format!("s{p}"), 0, 1, p as u32)).collect();
        Record::Batch(crate::manifest::BatchRecord::identity("s", first, last, segments))
    }

    fn names(next: &[(&Record, &SegmentEntry)]) -> Vec<u64> {
        next.iter().map(|(_, e)| e.position).collect()
    }

    #[test]
    fn next_segments_follow_the_log_up_to_a_gap_a_timeline_or_the_count() {
        let gap = Record::Gap(GapRecord { first: 8, last: 9, reason: "x".into() });
        let log = [batch(1, 3), batch(4, 7), gap, batch(10, 12)];
        assert_eq!(names(&next_segments(&log, 2, 8, false)), [3, 4, 5, 6, 7]);
        assert_eq!(names(&next_segments(&log, 2, 2, false)), [3, 4]);
        assert_eq!(names(&next_segments(&log, 7, 8, false)), Vec::<u64>::new());
        assert_eq!(names(&next_segments(&log, 10, 8, false)), [11, 12]);
        assert_eq!(names(&next_segments(&log, 12, 8, false)), Vec::<u64>::new());
        // WAL naming: the next timeline is not prefetched.
        let tl1 = 1 << 40;
        let log = [batch(tl1 + 1, tl1 + 3), batch(2 << 40, (2 << 40) + 2)];
        assert_eq!(names(&next_segments(&log, tl1 + 1, 8, true)), [tl1 + 2, tl1 + 3]);
    }
}
