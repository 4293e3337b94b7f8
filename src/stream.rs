//! One stream's archiving: scan, plan, upload, commit, acknowledge.
//!
//! A [`Stream`] owns the stream's lock, journal and status. `pass` gathers
//! facts from the source directory, asks `plan::next_step` what to do, and
//! does it, until nothing is ready. Commits are strictly in position order:
//! batch object, remote record, local journal (fsync), position file, then
//! the optional deletion or marking of the local segments. A crash anywhere
//! in that sequence heals on restart: an object already present with the
//! same size and CRC32 is recorded without being sent again.
//!
//! Scheduling (threads, waking, backoff) is `archiver`'s business, not this
//! module's.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::catalog;
use crate::config::{OnArchived, StreamConfig};
use crate::crc;
use crate::durable;
use crate::error::Error;
use crate::manifest::journal::Journal;
use crate::manifest::{BatchRecord, GapRecord, Record, SegmentEntry, StreamRules};
use crate::plan::{self, BatchPolicy, SegmentFact, Step};
use crate::source::{self, CachedScan, Segment, SegmentMap};
use crate::status::{StreamStatus, unix_now};
use crate::target::{self, Target, TargetError, Upload, keys};

/// How often an otherwise unchanged status file is refreshed with a new
/// `last_success`.
const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// Suffix given to archived segments with `on_archived = mark`.
pub const MARK_SUFFIX: &str = ".archived";

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub batches: u64,
    pub segments: u64,
    pub bytes: u64,
    /// Batches found already stored and recorded without re-sending.
    pub healed: u64,
    pub gaps: u64,
}

/// An open stream: locked, journal loaded and caught up with the archive.
pub struct Stream {
    config: StreamConfig,
    target: Arc<dyn Target>,
    state_dir: PathBuf,
    journal: Journal,
    status: Arc<Mutex<StreamStatus>>,
    /// What the status file last got, and when.
    saved_status: RefCell<Option<(String, Instant)>>,
    /// The source directory, re-read only when it changed.
    source: CachedScan,
    _lock: File,
}

impl Stream {
    /// Open the stream: take its lock, load its journal (dropping a torn
    /// final record), adopt remote records it lacks, abort stale uploads.
    pub fn open(
        config: StreamConfig,
        state_root: &Path,
        target: Arc<dyn Target>,
        status: Arc<Mutex<StreamStatus>>,
    ) -> Result<Stream, Error> {
        let name = config.name.clone();
        let state_dir = catalog::stream_state_dir(state_root, &name);
        durable::create_dir_all(&state_dir)
            .map_err(|e| Error::local("create state directory", &state_dir, e))?;
        let lock = lock_stream(&state_dir, &name)?;
        let rules = StreamRules::new(&name, &config.naming);
        let (mut journal, _) = Journal::open(&catalog::journal_path(state_root, &name), &rules, |_| {})?;
        let adopted = catalog::catch_up(&mut journal, target.as_ref())?;
        if adopted > 0 {
            log::info!("stream {name}: adopted {adopted} records from the archive's manifest");
        }
        let stream = Stream {
            config,
            target,
            state_dir,
            journal,
            status,
            saved_status: RefCell::new(None),
            source: CachedScan::default(),
            _lock: lock,
        };
        stream.abort_stale_uploads()?;
        stream.update_status(|s| s.archived_position = stream.archived());
        stream.write_position()?;
        Ok(stream)
    }

    /// Abort the stream's unfinished multipart uploads: left by an earlier
    /// run (at open), or by a failed pass whose abort did not get through.
    /// Only called while this stream has no upload in flight.
    pub fn abort_stale_uploads(&self) -> Result<(), Error> {
        let name = self.name();
        let aborted =
            self.target.abort_stale_uploads(&format!("{name}/")).map_err(|e| Error::target(name, e))?;
        if aborted > 0 {
            log::info!("stream {name}: aborted {aborted} unfinished uploads left by an earlier attempt");
        }
        Ok(())
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The last archived (or gap-recorded) position.
    pub fn archived(&self) -> Option<u64> {
        self.journal.last().map(Record::last)
    }

    /// Archive everything ready now. With `flush`, a sealed tail shorter than
    /// a batch goes too. Stops early (between batches) when `should_stop`.
    pub fn pass(&mut self, flush: bool, should_stop: &dyn Fn() -> bool) -> Result<PassReport, Error> {
        let mut report = PassReport::default();
        loop {
            // Archived segments matter only when they are still to be
            // deleted or marked.
            let archived = self.archived();
            let keep = self.config.on_archived == OnArchived::Keep;
            let wanted = |p: u64| !keep || archived.is_none_or(|a| p > a);
            let segments = self
                .source
                .scan(&self.config.dir, &self.config.naming, wanted, SystemTime::now())
                .map_err(|source| Error::Scan { stream: self.config.name.clone(), source })?;
            self.acknowledge(&segments)?;
            let facts = self.facts(&segments);
            let mut progressed = false;
            loop {
                if should_stop() {
                    return Ok(report);
                }
                match plan::next_step(self.archived(), &facts, self.policy(flush)) {
                    Step::Wait => break,
                    Step::Gap { first, last } => {
                        self.record_gap(first, last)?;
                        report.gaps += 1;
                    }
                    Step::Upload { first, last, .. } => {
                        let batch: Vec<&Segment> =
                            segments.iter().filter(|s| (first..=last).contains(&s.position)).collect();
                        let healed = self.archive_batch(first, last, &batch)?;
                        report.batches += 1;
                        report.healed += u64::from(healed);
                        report.segments += batch.len() as u64;
                        report.bytes += batch.iter().map(|s| s.len).sum::<u64>();
                    }
                }
                progressed = true;
            }
            if !progressed {
                self.update_status(|s| s.last_success = Some(unix_now()));
                return Ok(report);
            }
        }
    }

    fn policy(&self, flush: bool) -> BatchPolicy {
        BatchPolicy {
            batch_size: self.config.batch_size,
            max_batch_delay: self.config.max_batch_delay,
            flush,
        }
    }

    /// Planner facts for `segments`, and the committed position for status.
    fn facts(&self, segments: &[Segment]) -> Vec<SegmentFact> {
        let now = SystemTime::now();
        let sealed = source::sealed_count(segments, self.config.seal, self.config.seal_idle, now);
        let committed = source::committed_position(segments, sealed, self.archived());
        self.update_status(|s| s.committed_position = committed);
        segments
            .iter()
            .enumerate()
            .map(|(i, seg)| SegmentFact {
                position: seg.position,
                sealed: i < sealed,
                age: source::age(seg.modified, now),
            })
            .collect()
    }

    /// Archive `first..=last` (the contiguous `batch`). Returns true when the
    /// object was already stored and only needed recording.
    fn archive_batch(&mut self, first: u64, last: u64, batch: &[&Segment]) -> Result<bool, Error> {
        let name = self.config.name.clone();
        let maps = batch
            .iter()
            .map(|seg| SegmentMap::open(&seg.path, seg.len).map_err(|e| self.segment_error(seg, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let (entries, size, crc32) = checksum_segments(batch, &maps);
        self.confirm_intact(batch, &maps)?;
        let key = keys::batch_key(&name, first, last);
        let pieces: Vec<&[u8]> = maps.iter().map(SegmentMap::bytes).collect();
        let upload = Upload { pieces: &pieces, size, crc32 };

        let healed = self.already_stored(&key, size, crc32)?;
        if healed {
            log::info!("stream {name}: {key} is already in the archive; recording it without re-sending");
        } else {
            let started = Instant::now();
            let stored = self.target.put(&key, &upload);
            self.update_status(|s| match &stored {
                Ok(()) => {
                    s.uploads_ok += 1;
                    s.uploaded_bytes += size;
                    s.upload_seconds.observe(started.elapsed());
                }
                Err(_) => s.uploads_failed += 1,
            });
            stored.map_err(|e| match e {
                TargetError::Checksum { expected, actual, .. } => Error::SegmentChanged {
                    stream: name.clone(),
                    name: format!("in positions {first}..{last}"),
                    detail: format!("CRC32 {expected:08x} before upload, {actual:08x} while sending"),
                },
                other => Error::target(&name, other),
            })?;
        }
        let unchanged = self.confirm_intact(batch, &maps).and_then(|()| self.confirm_unchanged(batch));
        drop(maps);
        if let Err(changed) = unchanged {
            if !healed {
                // What was just stored is not the segment's final content and
                // is recorded nowhere: take it back so the next pass can store
                // the real bytes instead of meeting a false conflict.
                let _ = self.target.delete(std::slice::from_ref(&key));
            }
            return Err(changed);
        }

        let record = Record::Batch(BatchRecord::identity(&name, first, last, entries));
        self.commit(record)?;
        log::info!(
            "stream {name}: archived positions {first}..{last} ({}, {size} bytes)",
            crate::human::count(batch.len() as u64, "segment")
        );
        self.acknowledge_batch(batch)?;
        Ok(healed)
    }

    /// Whether `key` already holds exactly these bytes. A different object
    /// at the same key is a conflict: never overwritten.
    fn already_stored(&self, key: &str, size: u64, crc32: u32) -> Result<bool, Error> {
        let name = self.name();
        let Some(existing) = self.target.head(key).map_err(|e| Error::target(name, e))? else {
            return Ok(false);
        };
        let existing_crc = match existing.crc32 {
            Some(crc) => crc,
            // The target cannot tell the whole-object CRC cheaply (e.g. a
            // multipart object): read it back. Only on this healing path.
            None => target::stored_crc32(self.target.as_ref(), key).map_err(|e| Error::target(name, e))?,
        };
        if existing.size == size && existing_crc == crc32 {
            return Ok(true);
        }
        Err(Error::Conflict {
            stream: name.into(),
            key: key.into(),
            detail: format!(
                "stored {} bytes with CRC32 {existing_crc:08x}, local segments are {size} bytes \
                 with CRC32 {crc32:08x}",
                existing.size
            ),
        })
    }

    /// Make sure no read of `maps` hit a page its file no longer has.
    fn confirm_intact(&self, batch: &[&Segment], maps: &[SegmentMap]) -> Result<(), Error> {
        match batch.iter().zip(maps).find(|(_, map)| !map.intact()) {
            Some((seg, _)) => Err(Error::SegmentChanged {
                stream: self.name().into(),
                name: seg.name.clone(),
                detail: "truncated while it was being read".into(),
            }),
            None => Ok(()),
        }
    }

    /// After upload, make sure no segment grew or shrank meanwhile (bytes
    /// appended after sealing would otherwise be silently left out).
    fn confirm_unchanged(&self, batch: &[&Segment]) -> Result<(), Error> {
        for seg in batch {
            let len = fs::metadata(&seg.path).map(|m| m.len());
            if len.as_ref().ok() != Some(&seg.len) {
                let now = len.map_or_else(|e| e.to_string(), |l| format!("now {l} bytes"));
                return Err(Error::SegmentChanged {
                    stream: self.name().into(),
                    name: seg.name.clone(),
                    detail: format!("{} bytes when sealed, {now}", seg.len),
                });
            }
        }
        Ok(())
    }

    fn segment_error(&self, seg: &Segment, err: io::Error) -> Error {
        match err.kind() {
            io::ErrorKind::Other => Error::SegmentChanged {
                stream: self.name().into(),
                name: seg.name.clone(),
                detail: err.to_string(),
            },
            _ => Error::local("read segment", &seg.path, err),
        }
    }

    fn record_gap(&mut self, first: u64, last: u64) -> Result<(), Error> {
        let reason = format!("segments removed from {} before they were archived", self.config.dir.display());
        log::error!(
            "stream {}: positions {first}..{last} are missing from {} and were never archived; \
             recording a gap and moving on",
            self.name(),
            self.config.dir.display()
        );
        self.commit(Record::Gap(GapRecord { first, last, reason }))?;
        Ok(())
    }

    /// Record durably, remote first, then advance the published position.
    fn commit(&mut self, record: Record) -> Result<(), Error> {
        let rules = StreamRules::new(&self.config.name, &self.config.naming);
        catalog::put_remote(self.target.as_ref(), &rules, &record)?;
        self.journal.append(std::slice::from_ref(&record))?;
        self.write_position()?;
        // One status update (and status file write) per commit.
        self.update_status(|s| {
            s.last_success = Some(unix_now());
            s.archived_position = Some(record.last());
            s.committed_position = s.committed_position.max(Some(record.last()));
            match record {
                Record::Batch(_) => s.batches_archived += 1,
                Record::Gap(_) => s.gaps_recorded += 1,
            }
        });
        Ok(())
    }

    /// Publish the archived position for the application.
    fn write_position(&self) -> Result<(), Error> {
        let path = self.state_dir.join("archived_position");
        let text = self.archived().map_or(String::new(), |p| format!("{p}\n"));
        durable::write_file(&path, text.as_bytes()).map_err(|e| Error::local("write", &path, e))
    }

    /// Delete or mark every present segment already archived (also heals a
    /// crash between commit and acknowledgement).
    fn acknowledge(&self, segments: &[Segment]) -> Result<(), Error> {
        let Some(archived) = self.archived() else { return Ok(()) };
        let done: Vec<&Segment> = segments.iter().filter(|s| s.position <= archived).collect();
        self.acknowledge_batch(&done)
    }

    fn acknowledge_batch(&self, segments: &[&Segment]) -> Result<(), Error> {
        if segments.is_empty() || self.config.on_archived == OnArchived::Keep {
            return Ok(());
        }
        for seg in segments {
            let result = match self.config.on_archived {
                OnArchived::Delete => fs::remove_file(&seg.path),
                OnArchived::Mark => fs::rename(&seg.path, marked_path(&seg.path)),
                OnArchived::Keep => Ok(()),
            };
            match result {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::local("acknowledge archived segment", &seg.path, e));
                }
                _ => {}
            }
        }
        durable::sync_dir(&self.config.dir).map_err(|e| Error::local("sync", &self.config.dir, e))
    }

    /// Change the shared status, and mirror it to the status file when what
    /// `walship status` shows has changed (a new `last_success` alone at most
    /// every [`STATUS_REFRESH`], so an idle stream does not write every poll).
    fn update_status(&self, change: impl FnOnce(&mut StreamStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut status);
        let shown = StreamStatus { last_success: None, ..status.clone() }.to_file_text();
        let mut saved = self.saved_status.borrow_mut();
        let due = match &*saved {
            Some((text, at)) => {
                *text != shown || (at.elapsed() >= STATUS_REFRESH && status.last_success.is_some())
            }
            None => true,
        };
        if !due {
            return;
        }
        let path = self.state_dir.join("status");
        match status.save(&path) {
            Ok(()) => *saved = Some((shown, Instant::now())),
            Err(e) => log::warn!("stream {}: cannot write {}: {e}", self.name(), path.display()),
        }
    }
}

/// Per-segment entries, total size and whole-object CRC32 of a batch, the
/// whole CRC combined from the segments' so each byte is read once.
fn checksum_segments(batch: &[&Segment], maps: &[SegmentMap]) -> (Vec<SegmentEntry>, u64, u32) {
    let mut whole = 0;
    let mut entries = Vec::with_capacity(batch.len());
    let mut offset = 0u64;
    for (seg, map) in batch.iter().zip(maps) {
        let (crc32, len) = (crc32fast::hash(map.bytes()), map.bytes().len() as u64);
        whole = crc::combine(whole, crc32, len);
        entries.push(SegmentEntry::identity(seg.position, seg.name.clone(), offset, len, crc32));
        offset += len;
    }
    (entries, offset, whole)
}

fn marked_path(path: &Path) -> PathBuf {
    let mut marked = path.as_os_str().to_owned();
    marked.push(MARK_SUFFIX);
    PathBuf::from(marked)
}

/// Take the stream's lock so two processes never archive it at once.
fn lock_stream(state_dir: &Path, stream: &str) -> Result<File, Error> {
    let path = state_dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::local("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { stream: stream.into(), path }),
        Err(fs::TryLockError::Error(e)) => Err(Error::local("lock", &path, e)),
    }
}
