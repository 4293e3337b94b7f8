//! One stream's archiving, as one commit path in three stages, each in its
//! own file, plus the pass that drives them:
//!
//! 1. `prepare`: from the scanned segments the plan chose, map each
//!    segment and checksum it (a `PreparedBatch`);
//! 2. `upload`: store the batch object, or find it already stored with
//!    the same size and CRC32 (how a crash between upload and commit
//!    heals), then make sure no segment changed meanwhile;
//! 3. `commit`: remote record, local journal (fsync), position file,
//!    then the optional deletion or marking of the local segments.
//!
//! `prepare` and `upload` are functions of what they are given (segments,
//! target, status), not of the `Stream`, so `pipeline` prepares and uploads
//! batch N+1 on a helper thread while batch N commits; `commit` alone takes
//! the stream mutably, so commits stay strictly in position order.
//! A [`Stream`] owns the stream's lock, journal and status, and is the only
//! writer of its manifest and position. `pass` gathers facts from the source
//! directory, asks the pure rules of `plan` what to do, and does it, until
//! nothing is ready, then folds remote record objects for a moment
//! (`catalog::compact`, at most [`COMPACTION_SLICE`] per pass). Records
//! adopted from the target are checked against the local segments first
//! (`adopt`).
//!
//! A standby of a `replicas = on` stream runs `follow` instead of a pass:
//! it adopts the elected offloader's records and acknowledges its own
//! copies, never uploading.
//!
//! Scheduling (the thread, its mailbox, backoff) is [`worker`]'s business;
//! snapshot jobs (when one is due, running it beside the passes, recording
//! it through `commit`) are [`snapshots`]'; "archive this file now"
//! requests are checked by [`confirm`].

mod adopt;
pub mod backlog;
mod binding;
mod commit;
pub mod confirm;
mod follow;
pub mod mailbox;
mod pipeline;
mod prepare;
pub mod retention;
pub mod snapshots;
pub(crate) mod upload;
pub mod worker;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::bandwidth;
use crate::budget;
use crate::calendar::LocalTime;
use crate::catalog;
use crate::catalog::compact::Compactor;
use crate::config::{OnArchived, SealMode, StreamConfig};
use crate::durable;
use crate::error::Error;
use crate::manifest::journal::Journal;
use crate::manifest::{Entry, Record, StreamRules};
use crate::plan::{self, BatchPolicy, Sealing, SegmentFact};
use crate::snapshot::SnapshotBook;
use crate::source::{self, ScanError, Segment, Source};
use crate::statedir::{self, StreamLock};
use crate::status::{StatusCell, StreamStatus, unix_now};
use crate::target::Target;

/// Suffix given to archived segments with `on_archived = mark`.
pub const MARK_SUFFIX: &str = ".archived";

/// The longest a pass spends compacting the remote manifest when it ends.
pub const COMPACTION_SLICE: Duration = Duration::from_millis(200);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub batches: u64,
    pub segments: u64,
    pub bytes: u64,
    /// Batches found already stored and recorded without re-sending.
    pub healed: u64,
    pub gaps: u64,
    /// Segments left waiting in the directory when the pass ended (not
    /// sealed yet, or a batch not full yet, or uploads held): what waits
    /// on time.
    pub waiting: u64,
    /// Compaction steps are left for the next pass.
    pub compacting: bool,
}

/// What the application has told the stream (see `mailbox`): facts the
/// directory alone cannot show. Every field only ever grows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// Every position up to here is sealed (high water mark, or a file
    /// asked to be archived now).
    pub sealed_through: Option<u64>,
    /// The oldest position the application still holds (low water mark).
    pub low_water_mark: Option<u64>,
    /// Ship a short batch as soon as it reaches this position ("archive
    /// this file now").
    pub flush_through: Option<u64>,
}

impl Hints {
    /// Add what `newer` says.
    pub fn merge(&mut self, newer: Hints) {
        self.sealed_through = self.sealed_through.max(newer.sealed_through);
        self.low_water_mark = self.low_water_mark.max(newer.low_water_mark);
        self.flush_through = self.flush_through.max(newer.flush_through);
    }
}

/// An open stream: locked, journal loaded and caught up with the archive.
pub struct Stream {
    config: StreamConfig,
    target: Arc<dyn Target>,
    state_root: PathBuf,
    journal: Journal,
    /// Folds the remote log records in the background of passes.
    compactor: Compactor,
    status: Arc<StatusCell>,
    /// The source directory, re-read only when it changed, and what the
    /// archive records of it.
    source: Source,
    /// Whether the next batch may already be stored without a record: at
    /// start (a crash between upload and commit), after a failed attempt,
    /// and after a batch found stored (the one after it may be too). Then
    /// the upload looks first (a HEAD); once a look finds nothing, the
    /// objects after it are this process's own to write, unlooked.
    uncertain: bool,
    /// The snapshots recorded and not pruned.
    snapshots: SnapshotBook,
    /// A gap for `backlog_limit` was recorded: ask for a snapshot once the
    /// pass has caught up (`backlog`).
    snapshot_after_drop: bool,
    /// The segment files the last committed batch read, as its scan saw
    /// them: `confirm_archived` takes their recorded CRC32 instead of
    /// reading a file again that is still one of them.
    last_batch_read: Vec<Segment>,
    _lock: Arc<StreamLock>,
}

impl Stream {
    /// Open the stream under `lock` (kept as long as the stream): mirror its
    /// status to the status file, remove temp files a crash left (state
    /// directory and target), load its journal (dropping a torn final
    /// record), adopt remote records it lacks once they match the local
    /// segments, abort stale uploads.
    pub fn open(
        config: StreamConfig,
        state_root: &Path,
        target: Arc<dyn Target>,
        status: Arc<StatusCell>,
        lock: Arc<StreamLock>,
    ) -> Result<Stream, Error> {
        let name = config.name.clone();
        status.mirror_to(statedir::status_file(state_root, &name));
        statedir::clean_stale_temps(state_root, &name)?;
        crate::snapshot::job::clean_outputs(state_root, &name)?;
        let removed = target
            .clean_stale_temps(&format!("{name}/"), statedir::process_start())
            .map_err(|e| Error::target(&name, e))?;
        if removed > 0 {
            log::info!(
                "stream {name}: removed {removed} temp files an interrupted upload left on the target"
            );
        }
        let rules = StreamRules::new(&name, &config.naming);
        let keep = config.on_archived == OnArchived::Keep;
        let mut source = Source::new(&name, &config.dir, &config.naming, keep);
        let mut snapshots = SnapshotBook::default();
        let (mut journal, _) = Journal::open(&statedir::journal(state_root, &name), &rules, |entry| {
            snapshots.note(&name, &entry);
            if let Entry::Log(record) = entry {
                source.record(&record);
            }
        })?;
        let mut compactor = Compactor::load(state_root, &name, config.manifest_compaction, &journal);
        let listing_start = compactor.listing_start();
        Stream::check_target_binding(state_root, &name, target.as_ref(), journal.last(), listing_start)?;
        let caught_up = catalog::catch_up(
            &mut journal,
            target.as_ref(),
            listing_start,
            |records| adopt::check_local_segments(&config, records),
            |entry| {
                snapshots.note(&name, entry);
                if let Entry::Log(record) = entry {
                    source.record(record);
                }
            },
        )?;
        if let Some(progress) = caught_up.compaction {
            compactor.adopt(progress)?;
        }
        source.prune(journal.ends().pruned_before());
        let adopted = caught_up.adopted;
        if adopted > 0 {
            let adopted = crate::human::count(adopted as u64, "record");
            log::info!("stream {name}: adopted {adopted} from the archive's manifest");
        }
        let stream = Stream {
            config,
            target,
            state_root: state_root.to_path_buf(),
            journal,
            compactor,
            status,
            source,
            uncertain: true,
            snapshots,
            snapshot_after_drop: false,
            last_batch_read: Vec::new(),
            _lock: lock,
        };
        stream.abort_stale_uploads()?;
        stream.update_status(|s| {
            s.archived_position = stream.archived();
            s.snapshots.position = stream.last_snapshot();
        });
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

    /// The newest snapshot's position.
    pub fn last_snapshot(&self) -> Option<u64> {
        self.journal.ends().last_snapshot
    }

    /// How many snapshots are recorded and not pruned.
    pub fn snapshot_count(&self) -> usize {
        self.snapshots.count()
    }

    /// The stream's settings.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// The committed position as of the last pass.
    pub fn committed(&self) -> Option<u64> {
        self.status.get().committed_position
    }

    /// Archive everything ready now. With `flush`, a sealed tail shorter than
    /// a batch goes too; `hints` adds what the application said. Stops early
    /// (between batches) when `should_stop`.
    pub fn pass(
        &mut self,
        flush: bool,
        hints: Hints,
        should_stop: &dyn Fn() -> bool,
    ) -> Result<PassReport, Error> {
        let mut report = PassReport::default();
        loop {
            let survey = self
                .source
                .survey(SystemTime::now())
                .map_err(|source| Error::Scan { stream: self.config.name.clone(), source })?;
            self.acknowledge(&survey.archived)?;
            if self.enforce_backlog_limit(&survey.waiting)? {
                continue; // look at the directory again, without the deleted files
            }
            if self.record_dropped_range(&survey.waiting)? {
                report.gaps += 1;
            }
            let segments = survey.waiting;
            let (backlog, backlog_bytes) = backlog(&segments);
            self.update_status(|s| {
                s.late_segments = survey.late.len() as u64;
                s.backlog_segments = backlog;
                s.backlog_bytes = backlog_bytes;
            });
            let facts = self.facts(&segments, hints);
            self.uploads_held();
            let steps =
                self.take_steps(&segments, &facts, self.policy(flush, hints), &mut report, should_stop)?;
            if should_stop() {
                return Ok(report);
            }
            if steps.held {
                // A `0` bandwidth window or a spent data budget: wait,
                // quietly (the status says why), looking again each poll.
                report.waiting = segments.len() as u64;
                return Ok(report);
            }
            if !steps.progressed {
                if !survey.refused.is_empty() {
                    // Everything before the refused entries is archived;
                    // they hold the stream until an operator deals with them.
                    let (dir, entries) = (self.config.dir.clone(), survey.refused);
                    let source = ScanError::Refused { dir, entries };
                    return Err(Error::Scan { stream: self.config.name.clone(), source });
                }
                self.update_status(|s| s.last_success = Some(unix_now()));
                report.waiting = segments.len() as u64;
                report.compacting = self.compact(flush, should_stop)?;
                return Ok(report);
            }
        }
    }

    /// Fold remote record objects while steps are due, nothing waits to be
    /// archived, and (unless `all`, as `run --once` asks) for at most
    /// [`COMPACTION_SLICE`] per pass, so new segments are not held up.
    /// Nothing is folded while uploads are held (a `0` bandwidth window, a
    /// spent data budget): compacted objects are uploads too, so, like
    /// held segments, the steps that may be due are looked at again each
    /// poll until the hold ends (a window that opens, a reload that lifts
    /// it). Returns whether steps are (or may be) left for a later pass
    /// that should come soon.
    fn compact(&mut self, all: bool, should_stop: &dyn Fn() -> bool) -> Result<bool, Error> {
        if self.uploads_held().is_some() {
            return Ok(true);
        }
        let started = std::time::Instant::now();
        while !should_stop() && (all || started.elapsed() < COMPACTION_SLICE) {
            match self.compactor.step(self.target.as_ref(), &self.journal)? {
                None => return Ok(false),
                Some(done) => log::debug!("stream {}: compaction: {done:?}", self.name()),
            }
        }
        Ok(true)
    }

    /// Why no new upload may start now (a `0` bandwidth window, a spent
    /// data budget), or `None`; the status shows it, with the bandwidth in
    /// force, and the log says it once when it starts and once when it ends.
    fn uploads_held(&self) -> Option<String> {
        let now = LocalTime::now();
        let held = bandwidth::uploads().held(now).or_else(|| budget::held(now));
        let bandwidth = bandwidth::uploads().describe(now);
        let before = self.status.get().held;
        if before != held {
            match &held {
                Some(why) => log::info!("stream {}: uploads held: {why}", self.name()),
                None => log::info!("stream {}: uploads resume", self.name()),
            }
        }
        self.update_status(|s| {
            s.held = held.clone();
            s.bandwidth = bandwidth;
        });
        held
    }

    fn policy(&self, flush: bool, hints: Hints) -> BatchPolicy {
        BatchPolicy {
            batch_size: self.config.batch_size,
            max_batch_delay: self.config.max_batch_delay,
            flush,
            flush_through: hints.flush_through,
            low_water_mark: hints.low_water_mark,
        }
    }

    /// Planner facts for `segments`; the committed position and lag go to
    /// the status.
    fn facts(&self, segments: &[Segment], hints: Hints) -> Vec<SegmentFact> {
        let now = SystemTime::now();
        let sealed = sealed_count(&self.config, segments, hints, now);
        let last_sealed = sealed.checked_sub(1).map(|i| segments[i].position);
        let committed = plan::committed_position(last_sealed, self.archived());
        let lag = plan::lag_segments(committed, self.archived(), segments.first().map(|s| s.position));
        self.update_status(|s| {
            s.committed_position = committed;
            s.lag_segments = lag;
            s.first_waiting = segments.first().map(|seg| seg.position);
            s.held_through = s.held_through.max(last_sealed);
        });
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

    fn update_status(&self, change: impl FnOnce(&mut StreamStatus)) {
        self.status.update(change);
    }
}

/// A stream's status as `walship status` shows it from another process:
/// archived position from the journal (streamed), committed position and lag
/// from a fresh scan, whether a daemon runs from the stream's lock, the rest
/// from the status file the daemon keeps.
pub fn status_from_disk(state_root: &Path, config: &StreamConfig) -> Result<StreamStatus, Error> {
    let name = &config.name;
    // Never waiting on a named pipe put in the status file's place.
    let status_file = statedir::status_file(state_root, name);
    let mut status = durable::open_regular(
        &status_file,
        std::fs::File::options().read(true),
        durable::Links::Refuse,
        "status",
    )
    .and_then(std::io::read_to_string)
    .map(|text| StreamStatus::from_file_text(&text))
    .unwrap_or_default();
    status.stream = name.clone();
    status.daemon_running =
        matches!(statedir::lock_state(state_root, name), Ok(statedir::LockState::Held(_)));
    if !status.daemon_running {
        // Nobody runs the job the file may show running.
        status.snapshots.last_job =
            status.snapshots.last_job.take().map(crate::snapshot::JobReport::interrupted);
    }
    let rules = StreamRules::new(name, &config.naming);
    let journal = crate::manifest::journal::read_summary(&statedir::journal(state_root, name), &rules)?;
    status.archived_position = journal.last.as_ref().map(Record::last);
    match source::scan(&config.dir, &config.naming, |_| true) {
        Ok(segments) => {
            let after_archive = |p: u64| status.archived_position.is_none_or(|a| p > a);
            (status.backlog_segments, status.backlog_bytes) =
                backlog(segments.iter().filter(|s| after_archive(s.position)));
            let sealed = sealed_count(config, &segments, Hints::default(), SystemTime::now());
            let last_sealed = sealed.checked_sub(1).map(|i| segments[i].position);
            status.committed_position = plan::committed_position(last_sealed, status.archived_position);
            let lowest = segments.first().map(|s| s.position);
            status.lag_segments =
                plan::lag_segments(status.committed_position, status.archived_position, lowest);
        }
        Err(e) => status.last_error = Some(e.to_string()),
    }
    let last_snapshot = journal.ends.last_snapshot;
    status.snapshots.position = last_snapshot;
    status.snapshots.next_position = (config.snapshot_interval > 0 && config.snapshot_command.is_some())
        .then(|| {
            let committed = status.committed_position.unwrap_or(0);
            plan::next_snapshot(last_snapshot, committed, config.snapshot_interval)
        })
        .flatten();
    Ok(status)
}

/// How many segments wait, and their bytes.
fn backlog<'a>(waiting: impl IntoIterator<Item = &'a Segment>) -> (u64, u64) {
    waiting.into_iter().fold((0, 0), |(count, bytes), s| (count + 1, bytes + s.len))
}

/// How many of `segments` are sealed, under the stream's sealing settings
/// and what the application said (`plan::sealed_count`); with WAL naming
/// and `seal = push`, also what PostgreSQL marked complete
/// (`marked_complete`).
pub fn sealed_count(config: &StreamConfig, segments: &[Segment], hints: Hints, now: SystemTime) -> usize {
    let positions: Vec<u64> = segments.iter().map(|s| s.position).collect();
    let newest_age = segments.last().map_or(Duration::ZERO, |s| source::age(s.modified, now));
    let declared_only = config.seal == SealMode::Push;
    let marked = if declared_only { marked_complete(config, segments) } else { None };
    let sealing = Sealing {
        on_sight: config.seal == SealMode::Spool,
        idle: config.seal_idle,
        through: hints.sealed_through.max(marked),
        declared_only,
    };
    plan::sealed_count(&positions, newest_age, sealing)
}

/// Under WAL naming, PostgreSQL's own word that segments are complete: the
/// highest present segment with a `.ready` or `.done` mark in the
/// directory's `archive_status` (PostgreSQL marks a segment once it is
/// written and flushed, before it runs `archive_command`; every segment
/// below a complete one is complete). `None` elsewhere.
fn marked_complete(config: &StreamConfig, segments: &[Segment]) -> Option<u64> {
    config.naming.wal()?;
    let marks: std::collections::HashSet<String> = std::fs::read_dir(config.dir.join("archive_status"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let marked =
        |name: &str| marks.contains(&format!("{name}.ready")) || marks.contains(&format!("{name}.done"));
    segments.iter().rev().find(|s| marked(&s.name)).map(|s| s.position)
}
