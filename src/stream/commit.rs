//! Stage 3 of the commit path: record a stored batch (or a gap) durably —
//! remote record object first, then the local journal (fsync), then the
//! position file published for the application — and only then acknowledge
//! the local segments (delete or mark them, per `on_archived`).
//!
//! Acknowledging at scan time (segments still present at or below the
//! archived position, after a crash between commit and deletion) first
//! checks each file against its record, as `adopt` does: a file that arrived
//! again under an archived name with other content is a conflict.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::prepare::PreparedBatch;
use super::upload::Uploaded;
use super::{MARK_SUFFIX, Stream};
use crate::catalog;
use crate::config::OnArchived;
use crate::durable;
use crate::error::Error;
use crate::manifest::journal;
use crate::manifest::{Encoding, Entry, GapRecord, Record, SnapshotRecord, StreamRules};
use crate::source::Segment;
use crate::statedir;
use crate::status::unix_now;

impl Stream {
    /// Record `batch` (stored as `uploaded` says) and acknowledge its segments.
    pub(super) fn commit_batch(&mut self, batch: PreparedBatch<'_>, uploaded: Uploaded) -> Result<(), Error> {
        let (first, last, size, object) = (batch.first, batch.last, batch.size, batch.stored);
        let (record, segments) = batch.into_record();
        self.commit(record)?;
        self.last_batch_read = segments.iter().map(|seg| (*seg).clone()).collect();
        let how = if uploaded == Uploaded::AlreadyStored { ", found already stored" } else { "" };
        let stored = match object.encoding {
            Encoding::Identity => String::new(),
            Encoding::ZstdFrames => format!(", {} stored as zstd frames", object.size),
        };
        log::info!(
            "stream {}: archived positions {first}..{last} ({}, {size} bytes{stored}{how})",
            self.name(),
            crate::human::count(segments.len() as u64, "segment")
        );
        let (read, replaced): (Vec<&Segment>, Vec<&Segment>) = segments
            .into_iter()
            .partition(|seg| self.config.on_archived == OnArchived::Keep || is_the_file_read(seg));
        for seg in replaced {
            log::warn!(
                "stream {}: {} was replaced while it was being archived; it is left as it is (the \
                 next pass compares it with the archive)",
                self.name(),
                seg.name
            );
        }
        self.acknowledge_batch(&read)
    }

    /// Record that `first..=last` will never be archived. `told`: the
    /// application's low water mark said so, rather than the directory.
    pub(super) fn record_gap(&mut self, first: u64, last: u64, told: bool) -> Result<(), Error> {
        let dir = crate::manifest::printable(&self.config.dir.display().to_string());
        let backlog = self.backlog_gap_reason(first, last)?;
        let (reason, why) = if let Some(reason) = backlog {
            self.snapshot_after_drop = true;
            (reason, "were deleted unarchived for backlog_limit".to_string())
        } else if told {
            (
                format!("the application no longer holds positions below {}", last + 1),
                format!(
                    "were never archived and the application no longer holds them (its low water mark is {})",
                    last + 1
                ),
            )
        } else if let Some((from, to)) = timeline_switch(&self.config, first, last) {
            (
                format!(
                    "timeline {from} ends and timeline {to} begins (or segments were removed from {dir})"
                ),
                format!("lie between timeline {from}'s last segment and timeline {to}'s first"),
            )
        } else {
            (
                format!("segments removed from {dir} before they were archived"),
                format!("are missing from {dir} and were never archived"),
            )
        };
        let switch = timeline_switch(&self.config, first, last).is_some();
        self.commit(Record::Gap(GapRecord { first, last, reason }))?;
        self.backlog_gap_recorded(last)?;
        // A timeline switch is PostgreSQL's normal course, not a loss.
        let level = if switch { log::Level::Info } else { log::Level::Error };
        log::log!(
            level,
            "stream {}: positions {first}..{last} {why}; recorded a gap and moved on",
            self.name()
        );
        Ok(())
    }

    /// Record durably, remote first, then advance the published position.
    fn commit(&mut self, record: Record) -> Result<(), Error> {
        let rules = StreamRules::new(&self.config.name, &self.config.naming);
        catalog::put_remote(self.target.as_ref(), &rules, &record)?;
        self.journal.append(std::slice::from_ref(&record))?;
        self.source.record(&record);
        self.write_position()?;
        // One status update (and status file write) per commit.
        self.update_status(|s| {
            s.last_success = Some(unix_now());
            s.archived_position = Some(record.last());
            s.committed_position = s.committed_position.max(Some(record.last()));
            s.lag_segments = s.committed_position.map_or(0, |c| c - record.last());
            match &record {
                Record::Batch(batch) => {
                    s.batches_archived += 1;
                    s.backlog_segments = s.backlog_segments.saturating_sub(batch.segments.len() as u64);
                    s.backlog_bytes = s.backlog_bytes.saturating_sub(batch.size);
                }
                Record::Gap(_) => s.gaps_recorded += 1,
            }
        });
        Ok(())
    }

    /// Record the stored snapshot durably: remote record object first, then
    /// the journal.
    pub fn commit_snapshot(&mut self, snapshot: SnapshotRecord) -> Result<(), Error> {
        self.commit_entry(Entry::Snapshot(snapshot))?;
        let position = self.last_snapshot();
        self.update_status(|s| s.snapshots.position = position);
        Ok(())
    }

    /// Record a snapshot or prune entry durably: remote record object first,
    /// then the journal; the count of live snapshots follows.
    pub fn commit_entry(&mut self, entry: Entry) -> Result<(), Error> {
        let rules = StreamRules::new(&self.config.name, &self.config.naming);
        catalog::put_remote_entry(self.target.as_ref(), &rules, &entry)?;
        self.journal.append_entries(std::slice::from_ref(&entry))?;
        self.snapshots.note(&self.config.name, &entry);
        Ok(())
    }

    /// Publish the archived position for the application: atomically, not
    /// durably (the journal is the durable record, and the stream publishes
    /// it again when it opens; a position rolled back by a power loss only
    /// makes the application keep segments a little longer).
    pub(super) fn write_position(&self) -> Result<(), Error> {
        let path = statedir::position_file(&self.state_root, self.name());
        let text = self.archived().map_or(String::new(), |p| format!("{p}\n"));
        durable::replace_file(&path, text.as_bytes()).map_err(|e| Error::local("write", &path, e))
    }

    /// Delete or mark the present segments the archive holds (heals a crash
    /// between commit and acknowledgement). Late files are not among them:
    /// they are never touched.
    /// Each must have the size and CRC32 its record gives it: a file that
    /// arrived again under an archived name, with other content, is a
    /// conflict, and nothing is deleted or marked.
    pub(super) fn acknowledge(&self, archived: &[Segment]) -> Result<(), Error> {
        if archived.is_empty() || self.config.on_archived == OnArchived::Keep {
            return Ok(());
        }
        let positions: Vec<u64> = archived.iter().map(|seg| seg.position).collect();
        let records = journal::batches_holding(self.journal.path(), &self.journal.rules(), &positions)?;
        super::adopt::check_local_segments(&self.config, &records)?;
        self.acknowledge_batch(&archived.iter().collect::<Vec<_>>())
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
}

/// The timelines a WAL stream's gap `first..=last` goes from and to, when
/// it spans a timeline switch (see `naming::wal`).
fn timeline_switch(config: &crate::config::StreamConfig, first: u64, last: u64) -> Option<(u64, u64)> {
    config.naming.wal()?;
    let (from, to) = (crate::naming::wal::timeline_of(first), crate::naming::wal::timeline_of(last + 1));
    (from != to).then_some((from, to))
}

/// Whether `seg.path` still names the file the scan found (and the batch
/// read): same file, size and time.
pub(super) fn is_the_file_read(seg: &Segment) -> bool {
    is_the_file_at(&seg.path, seg)
}

/// Whether `path` names the file `seg`'s scan found: same file, size and
/// time.
pub(super) fn is_the_file_at(path: &Path, seg: &Segment) -> bool {
    fs::metadata(path).is_ok_and(|meta| {
        (meta.dev(), meta.ino()) == seg.file_id
            && meta.len() == seg.len
            && meta.modified().ok() == Some(seg.modified)
    })
}

fn marked_path(path: &Path) -> PathBuf {
    let mut marked = path.as_os_str().to_owned();
    marked.push(MARK_SUFFIX);
    PathBuf::from(marked)
}
