//! Stage 3 of the commit path: record a stored batch (or a gap) durably —
//! remote record object first, then the local journal (fsync), then the
//! position file published for the application — and only then acknowledge
//! the local segments (delete or mark them, per `on_archived`).
//!
//! Acknowledging at scan time (segments still present at or below the
//! archived position, after a crash between commit and deletion) relies on
//! records this node wrote, or adopted only after `adopt` found them to match
//! the local segments.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::prepare::PreparedBatch;
use super::upload::Uploaded;
use super::{MARK_SUFFIX, Stream};
use crate::catalog;
use crate::config::OnArchived;
use crate::durable;
use crate::error::Error;
use crate::manifest::{GapRecord, Record, StreamRules};
use crate::source::Segment;
use crate::statedir;
use crate::status::unix_now;

impl Stream {
    /// Record `batch` (stored as `uploaded` says) and acknowledge its segments.
    pub(super) fn commit_batch(&mut self, batch: PreparedBatch<'_>, uploaded: Uploaded) -> Result<(), Error> {
        let (first, last, size) = (batch.first, batch.last, batch.size);
        let (record, segments) = batch.into_record();
        self.commit(record)?;
        let how = if uploaded == Uploaded::AlreadyStored { ", found already stored" } else { "" };
        log::info!(
            "stream {}: archived positions {first}..{last} ({}, {size} bytes{how})",
            self.name(),
            crate::human::count(segments.len() as u64, "segment")
        );
        self.acknowledge_batch(&segments)
    }

    /// Record that `first..=last` will never be archived. `told`: the
    /// application's low water mark said so, rather than the directory.
    pub(super) fn record_gap(&mut self, first: u64, last: u64, told: bool) -> Result<(), Error> {
        let dir = self.config.dir.display().to_string();
        let reason = if told {
            log::error!(
                "stream {}: positions {first}..{last} were never archived and the application no \
                 longer holds them (its low water mark is {}); recording a gap and moving on",
                self.name(),
                last + 1
            );
            format!("the application no longer holds positions below {}", last + 1)
        } else {
            log::error!(
                "stream {}: positions {first}..{last} are missing from {dir} and were never archived; \
                 recording a gap and moving on",
                self.name(),
            );
            format!("segments removed from {dir} before they were archived")
        };
        self.commit(Record::Gap(GapRecord { first, last, reason }))
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
            match record {
                Record::Batch(_) => s.batches_archived += 1,
                Record::Gap(_) => s.gaps_recorded += 1,
            }
        });
        Ok(())
    }

    /// Publish the archived position for the application.
    pub(super) fn write_position(&self) -> Result<(), Error> {
        let path = statedir::position_file(&self.state_root, self.name());
        let text = self.archived().map_or(String::new(), |p| format!("{p}\n"));
        durable::write_file(&path, text.as_bytes()).map_err(|e| Error::local("write", &path, e))
    }

    /// Delete or mark the present segments the archive holds (heals a crash
    /// between commit and acknowledgement). Late files are not among them:
    /// they are never touched.
    pub(super) fn acknowledge(&self, archived: &[Segment]) -> Result<(), Error> {
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

fn marked_path(path: &Path) -> PathBuf {
    let mut marked = path.as_os_str().to_owned();
    marked.push(MARK_SUFFIX);
    PathBuf::from(marked)
}
