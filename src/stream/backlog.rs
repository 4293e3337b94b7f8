//! The bounded spool (`backlog_limit`, spool streams only): when the
//! waiting segments' bytes exceed the limit, the oldest waiting segments
//! are deleted unarchived until the rest fit, and the dropped range is
//! recorded as a gap whose reason starts with "backlog limit", so restore
//! stops there, loudly. Without `backlog_limit` nothing is ever deleted
//! unarchived. Which segments go is a pure rule ([`to_drop`]).
//!
//! The segments of the next two batches to upload are never dropped: when
//! the link went down, their objects may already be stored with their
//! commits cut short (one uploads while the one before it commits), and a
//! gap is never recorded over stored data (the stream would stop until an
//! operator stepped in). So the oldest segments dropped are those after
//! them, and the spool may exceed the limit by those two batches.
//!
//! The order, so that nothing goes unrecorded:
//! 1. the range about to be dropped is written durably to the stream's
//!    `backlog-dropped` file in the state directory;
//! 2. the files are deleted, oldest first;
//! 3. the planner meets the missing positions as a gap, as it does any
//!    segment removed before it was archived (when no segment is left above
//!    the range, the stream records it itself), and records it (remote
//!    record, then journal) with the reason the file gives: at once, or
//!    once the link is back, since the records go to the target first;
//! 4. the file is removed once the archive has passed its range.
//!
//! Where snapshots are configured, a snapshot is requested as soon as a pass
//! that recorded such a gap has caught up, so the newest state restores
//! without the dropped range.
//!
//! A stream whose target is out of reach when it starts cannot open; the
//! limit then applies from the local journal and a scan alone
//! ([`enforce_unopened`]), and the gap is recorded once it opens.
//!
//! A crash between 1 and 2 leaves the files in place: they are archived as
//! usual and the file is cleared once the archive passes them. A crash
//! between 2 and 3 leaves the file: the gap gets its reason at the next
//! start. Only segments after the archived position are candidates, only at
//! the start of a pass (when no upload of the stream is in flight), and
//! each is deleted only while it is still the file scanned (same device,
//! inode, size and time).

use std::fs;
use std::io;
use std::ops::Range;
use std::path::Path;

use std::sync::mpsc;

use super::Stream;
use super::snapshots::SnapshotJobs;
use crate::config::StreamConfig;
use crate::durable;
use crate::error::Error;
use crate::human::human_bytes;
use crate::manifest::journal;
use crate::manifest::{Record, StreamRules};
use crate::plan;
use crate::snapshot::JobEvent;
use crate::source::{self, Segment};
use crate::statedir;
use crate::status::StatusCell;

/// How many batches after the archived position may be stored without
/// their record: the pipeline (`stream::pipeline`) uploads a batch while
/// the one before it commits, so a commit cut short can leave two.
const MAYBE_STORED_BATCHES: usize = 2;

/// Which of the waiting segments (`sizes`, oldest first) to drop so that
/// the rest add up to at most `limit` bytes: the oldest after the first
/// `kept` (the next batches to upload, which may already be stored), as few
/// as that takes, and all of them when even the kept and the newest are
/// too many. Returns indices into `sizes`.
pub fn to_drop(sizes: &[u64], limit: u64, kept: usize) -> Range<usize> {
    let kept = kept.min(sizes.len());
    let mut total: u128 = sizes.iter().map(|size| u128::from(*size)).sum();
    let mut end = kept;
    while total > u128::from(limit) && end < sizes.len() {
        total -= u128::from(sizes[end]);
        end += 1;
    }
    kept..end
}

/// A range dropped for the backlog limit and not yet passed by the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    first: u64,
    last: u64,
    segments: u64,
    bytes: u64,
}

impl Dropped {
    fn load(path: &Path) -> Result<Option<Dropped>, Error> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::local("read", path, e)),
        };
        let field = |name: &str| {
            text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
        };
        match (field("first"), field("last"), field("segments"), field("bytes")) {
            (Some(first), Some(last), Some(segments), Some(bytes)) if first <= last => {
                Ok(Some(Dropped { first, last, segments, bytes }))
            }
            _ => Err(Error::local(
                "read",
                path,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a record of segments dropped for backlog_limit; if the gap it \
                     describes is recorded (walship list), remove the file",
                ),
            )),
        }
    }

    fn save(&self, path: &Path) -> Result<(), Error> {
        let Dropped { first, last, segments, bytes } = self;
        let text = format!("first={first}\nlast={last}\nsegments={segments}\nbytes={bytes}\n");
        durable::write_file(path, text.as_bytes()).map_err(|e| Error::local("write", path, e))
    }

    fn overlaps(&self, first: u64, last: u64) -> bool {
        self.first <= last && first <= self.last
    }
}

/// Apply `backlog_limit` to `waiting`, the segments after `archived` (see
/// the module doc). Returns whether any file was deleted.
fn enforce(
    config: &StreamConfig,
    state_root: &Path,
    archived: Option<u64>,
    waiting: &[Segment],
    status: &StatusCell,
) -> Result<bool, Error> {
    let Some(limit) = config.backlog_limit else { return Ok(false) };
    let name = &config.name;
    let path = statedir::backlog_dropped(state_root, name);
    let mut pending = Dropped::load(&path)?;
    if pending.is_some_and(|p| archived.is_some_and(|a| a >= p.last)) {
        remove_record(&path)?; // the archive passed it: its gap is recorded
        pending = None;
    }
    // The next batches may be stored already, their commits cut short by
    // the outage: never dropped, or a gap would lie over stored data.
    let kept_end = waiting.first().and_then(|lowest| {
        (0..MAYBE_STORED_BATCHES).try_fold(archived, |last, _| {
            plan::next_batch(last, lowest.position, config.batch_size).map(|(_, end)| Some(end))
        })?
    });
    let kept = waiting.iter().take_while(|s| kept_end.is_some_and(|end| s.position <= end)).count();
    let sizes: Vec<u64> = waiting.iter().map(|s| s.len).collect();
    let range = to_drop(&sizes, limit, kept);
    let doomed = &waiting[range.clone()];
    let (Some(oldest), Some(newest)) = (doomed.first(), doomed.last()) else {
        return Ok(false);
    };
    let count = doomed.len();
    let bytes: u64 = sizes[range].iter().sum();
    let total = sizes.iter().fold(0u64, |sum, size| sum.saturating_add(*size));
    let dropped = match pending {
        Some(p) => Dropped {
            first: p.first.min(oldest.position),
            last: p.last.max(newest.position),
            segments: p.segments + count as u64,
            bytes: p.bytes + bytes,
        },
        None => Dropped { first: oldest.position, last: newest.position, segments: count as u64, bytes },
    };
    dropped.save(&path)?;
    for segment in doomed {
        if !super::commit::is_the_file_read(segment) {
            continue; // replaced since the scan: not what was counted
        }
        match fs::remove_file(&segment.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::local("delete for backlog_limit", &segment.path, e));
            }
            _ => {}
        }
    }
    durable::sync_dir(&config.dir).map_err(|e| Error::local("sync", &config.dir, e))?;
    log::error!(
        "stream {name}: {} waiting exceeded backlog_limit ({}): deleted {} \
         (positions {}..{}, {}) unarchived, the oldest after the next batch; the range is recorded as a gap",
        human_bytes(total),
        human_bytes(limit),
        crate::human::count(count as u64, "segment"),
        oldest.position,
        newest.position,
        human_bytes(bytes),
    );
    status.update(|s| s.dropped_bytes += bytes);
    Ok(true)
}

/// Apply `backlog_limit` while the stream cannot open (its target is out of
/// reach at start): from the local journal's end and a scan of the
/// directory alone. The caller holds the stream's lock.
pub fn enforce_unopened(config: &StreamConfig, state_root: &Path, status: &StatusCell) -> Result<(), Error> {
    if config.backlog_limit.is_none() {
        return Ok(());
    }
    let rules = StreamRules::new(&config.name, &config.naming);
    let summary = journal::read_summary(&statedir::journal(state_root, &config.name), &rules)?;
    let archived = summary.last.as_ref().map(Record::last);
    let after = |p: u64| archived.is_none_or(|a| p > a);
    let waiting = source::scan(&config.dir, &config.naming, after)
        .map_err(|source| Error::Scan { stream: config.name.clone(), source })?;
    enforce(config, state_root, archived, &waiting, status).map(|_| ())
}

impl Stream {
    /// Apply `backlog_limit` to the waiting segments (see the module doc).
    /// Returns whether any file was deleted (the directory needs another look).
    pub(super) fn enforce_backlog_limit(&mut self, waiting: &[Segment]) -> Result<bool, Error> {
        enforce(&self.config, &self.state_root, self.archived(), waiting, &self.status)
    }

    /// Record the dropped range as a gap once it is next in line and no
    /// segment waits at or below its end: the planner meets a missing range
    /// only below a present segment, so a range dropped to the last segment
    /// (or before anything was archived) would otherwise go unrecorded until
    /// a newer segment arrives. Returns whether it recorded one.
    pub(super) fn record_dropped_range(&mut self, waiting: &[Segment]) -> Result<bool, Error> {
        let path = statedir::backlog_dropped(&self.state_root, self.name());
        let Some(dropped) = Dropped::load(&path)? else { return Ok(false) };
        if waiting.iter().any(|s| s.position <= dropped.last) {
            return Ok(false); // the kept batches below it go first
        }
        let first = self.archived().map_or(Some(dropped.first), |a| a.checked_add(1));
        match first {
            Some(first) if first <= dropped.last => {
                self.record_gap(first, dropped.last, false)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// After a pass that recorded a gap for the backlog limit and then
    /// caught up without error: where snapshots are configured, ask for one
    /// at the archived position, so the newest state is restorable without
    /// replaying across the gap. Asked once; a refusal is logged.
    pub(super) fn request_snapshot_after_drop(&mut self, jobs: &mut SnapshotJobs) {
        if !self.snapshot_after_drop || self.status.get().last_error.is_some() {
            return;
        }
        if self.config.snapshot_command.is_none() {
            self.snapshot_after_drop = false;
            return;
        }
        if self.uploads_held().is_some() {
            return; // asked once uploads may go again
        }
        self.snapshot_after_drop = false;
        let (reply, events) = mpsc::channel();
        jobs.request(Some(self), reply);
        match events.try_recv() {
            Ok(JobEvent::Refused(why)) => {
                log::warn!("stream {}: no snapshot after the backlog gap: {why}", self.name());
            }
            _ => log::info!(
                "stream {}: snapshot requested after the backlog gap, so the newest state restores \
                 without the dropped range",
                self.name()
            ),
        }
    }

    /// The gap reason for positions `first..=last` when segments dropped
    /// for the backlog limit are among them.
    pub(super) fn backlog_gap_reason(&self, first: u64, last: u64) -> Result<Option<String>, Error> {
        let path = statedir::backlog_dropped(&self.state_root, self.name());
        let Some(dropped) = Dropped::load(&path)?.filter(|d| d.overlaps(first, last)) else {
            return Ok(None);
        };
        let dir = crate::manifest::printable(&self.config.dir.display().to_string());
        Ok(Some(format!(
            "backlog limit: {} ({}) deleted unarchived from {dir} when the waiting segments exceeded backlog_limit",
            crate::human::count(dropped.segments, "segment"),
            human_bytes(dropped.bytes)
        )))
    }

    /// A gap through `last` is recorded: the dropped range it reaches is done.
    pub(super) fn backlog_gap_recorded(&self, last: u64) -> Result<(), Error> {
        let path = statedir::backlog_dropped(&self.state_root, self.name());
        match Dropped::load(&path)? {
            Some(dropped) if last >= dropped.last => remove_record(&path),
            _ => Ok(()),
        }
    }
}

fn remove_record(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::local("remove", path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (waiting sizes oldest first, limit, segments kept first, which go)
    #[test]
    fn the_oldest_after_the_kept_go_until_the_rest_fit() {
        #[rustfmt::skip]
        let cases: &[(&[u64], u64, usize, Range<usize>)] = &[
            (&[],                   10, 0, 0..0),
            (&[5, 5],               10, 0, 0..0), // exactly at the limit: nothing
            (&[5, 5, 1],            10, 0, 0..1),
            (&[1, 1, 1, 9],         10, 0, 0..2),
            (&[4, 3, 2, 1],         3,  0, 0..2),
            (&[4, 3, 2, 1],         0,  0, 0..4),
            (&[1, 2, 30],           10, 0, 0..3), // the newest alone is over: all go
            (&[u64::MAX, u64::MAX], 10, 0, 0..2), // no overflow
            (&[1, 1, 1, 1, 1, 1],   2,  1, 1..5), // the next batch (one segment) is kept
            (&[1, 1, 1, 1, 1, 1],   2,  3, 3..6), // a kept batch of 3 over the limit: all after it go
            (&[1, 1],               0,  5, 2..2), // kept beyond the end
        ];
        for (sizes, limit, kept, expected) in cases {
            assert_eq!(to_drop(sizes, *limit, *kept), *expected, "{sizes:?} limit {limit} kept {kept}");
        }
    }

    #[test]
    fn the_record_round_trips_and_refuses_damage() {
        let dir = crate::test_support::TempDir::new("backlog-record");
        let path = dir.0.join("backlog-dropped");
        assert_eq!(Dropped::load(&path).expect("absent"), None);
        let dropped = Dropped { first: 3, last: 9, segments: 7, bytes: 700 };
        dropped.save(&path).expect("save");
        assert_eq!(Dropped::load(&path).expect("load"), Some(dropped));
        assert!(dropped.overlaps(9, 12) && dropped.overlaps(0, 3) && !dropped.overlaps(10, 11));
        fs::write(&path, "first=9\nlast=3\n").expect("write");
        let error = Dropped::load(&path).expect_err("damaged");
        assert!(error.to_string().contains("remove the file"), "{error}");
    }
}
