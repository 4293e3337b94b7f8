//! Retention on an open stream (the daemon every `prune_interval`, `run
//! --once`, `walship prune`): read the manifest, refuse prune marks that
//! disagree with it, finish the deletions of the latest prune, then plan
//! the next one (`crate::retention`) and, for each of its prune records,
//! store the remote record object, append it to the journal (fsync), and
//! only then delete the objects it names.
//!
//! A crash anywhere leaves a manifest that says what went or is about to
//! go: the records are written before the objects go, and the next run
//! deletes again what the latest record names (deleting an object that is
//! already gone is no error). Only the latest can be unfinished, since a
//! record is written only once the previous one's deletions are done.

use std::time::{Duration, Instant};

use super::Stream;
use crate::catalog;
use crate::error::Error;
use crate::manifest::{Entry, Manifest, ManifestError, StreamRules, journal};
use crate::retention::{self, Object, Plan};

/// What applying retention did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// What was deleted; `None` when nothing was due.
    pub plan: Option<Plan>,
    /// How many snapshots the stream keeps now.
    pub snapshots_kept: usize,
}

impl Stream {
    /// Apply retention now.
    pub fn apply_retention(&mut self) -> Result<Pruned, Error> {
        let manifest = self.whole_manifest()?;
        checked_prunes(self.name(), &manifest)?;
        if let Some(latest) = manifest.prunes.last() {
            self.delete_objects(&latest.deleted)?;
        }
        let live = manifest.live_snapshots().len();
        let Some(plan) = retention::plan(&manifest, self.config.keep_snapshots as usize) else {
            return Ok(Pruned { plan: None, snapshots_kept: live });
        };
        let snapshots_kept =
            live - plan.doomed.iter().filter(|d| matches!(d.object, Object::Snapshot { .. })).count();
        let next = manifest.prunes.last().map_or(1, |p| p.sequence + 1);
        let rules = StreamRules::new(&self.config.name, &self.config.naming);
        for record in plan.records(next) {
            let (sequence, before, count) = (record.sequence, record.before, record.deleted.len() as u64);
            let entry = Entry::Prune(record);
            catalog::put_remote_entry(self.target.as_ref(), &rules, &entry)?;
            self.journal.append_entries(std::slice::from_ref(&entry))?;
            self.source.prune(Some(before));
            let Entry::Prune(record) = entry else { unreachable!("built as a prune above") };
            self.delete_objects(&record.deleted)?;
            log::info!(
                "stream {}: prune {sequence}: deleted {}; positions before {before} are pruned",
                self.name(),
                crate::human::count(count, "object")
            );
        }
        Ok(Pruned { plan: Some(plan), snapshots_kept })
    }

    /// The whole manifest, as the journal holds it (caught up with the
    /// archive when the stream opened; this thread is its only writer).
    fn whole_manifest(&self) -> Result<Manifest, Error> {
        Ok(journal::read_all(self.journal.path(), &self.journal.rules())?.manifest)
    }

    fn delete_objects(&self, keys: &[String]) -> Result<(), Error> {
        self.target.delete(keys).map_err(|e| Error::target(self.name(), e))
    }
}

/// When a daemon's stream thread applies retention: at its first
/// successful pass (which also finishes a prune a crash cut short), then
/// every `prune_interval`. A failed prune is logged (once while it keeps
/// failing the same way) and tried again after a minute at most.
pub struct PruneSchedule {
    interval: Duration,
    next: Instant,
    last_error: Option<String>,
}

/// The longest wait before a failed prune is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

impl PruneSchedule {
    pub fn new(interval: Duration) -> PruneSchedule {
        PruneSchedule { interval, next: Instant::now(), last_error: None }
    }

    /// Apply retention to `stream` if it is due.
    pub fn run_if_due(&mut self, stream: &mut Stream) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        match stream.apply_retention() {
            Ok(_) => {
                if self.last_error.take().is_some() {
                    log::info!("stream {}: retention applies again", stream.name());
                }
                self.next = now + self.interval;
            }
            Err(error) => {
                let message = error.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    log::error!("stream {}: retention failed: {message}", stream.name());
                }
                self.last_error = Some(message);
                self.next = now + self.interval.min(RETRY_AFTER_FAILURE);
            }
        }
    }
}

/// `manifest`, unless its prune records disagree with it
/// ([`retention::check_prunes`]): then an error naming the stream and
/// saying what to do.
pub fn checked_prunes(stream: &str, manifest: &Manifest) -> Result<(), Error> {
    retention::check_prunes(manifest).map_err(|message| {
        Error::Manifest(ManifestError::Invalid {
            source: format!("stream {stream}"),
            line: 0,
            message: format!(
                "{message}: a prune record that retention did not write (forged, or damaged); \
                 move that prune record object ({stream}/manifest/prune-…) aside on the target, \
                 and the local journal too (walship rebuilds it from the archive)"
            ),
        })
    })
}
