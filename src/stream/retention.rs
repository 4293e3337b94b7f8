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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::Stream;
use super::mailbox::PruneReply;
use crate::error::Error;
use crate::manifest::{Entry, Manifest, ManifestError, journal};
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
    /// What `walship prune` prints for this stream, after applying
    /// retention now (or with `dry_run`, only planning it); see
    /// [`Stream::apply_retention`] for `should_stop`.
    pub fn prune_now(&mut self, dry_run: bool, should_stop: &dyn Fn() -> bool) -> Result<String, Error> {
        let pruned = if dry_run { self.plan_retention()? } else { self.apply_retention(should_stop)? };
        let keep = self.config.keep_snapshots as usize;
        Ok(retention::render(self.name(), pruned.plan.as_ref(), pruned.snapshots_kept, keep, dry_run))
    }

    /// What retention would delete now (`prune --dry-run`): the same plan
    /// [`Stream::apply_retention`] carries out.
    pub fn plan_retention(&self) -> Result<Pruned, Error> {
        let manifest = self.retention_view()?;
        let plan = retention::plan(&manifest, self.config.keep_snapshots as usize);
        Ok(Pruned { plan, snapshots_kept: manifest.live_snapshots().count() })
    }

    /// Apply retention now. A prune recorded as several prune records
    /// stops between two of them when `should_stop` (the daemon stopping);
    /// the next run carries on from there.
    pub fn apply_retention(&mut self, should_stop: &dyn Fn() -> bool) -> Result<Pruned, Error> {
        let manifest = self.retention_view()?;
        if let Some(latest) = manifest.prunes.last() {
            self.delete_objects(&latest.deleted)?;
        }
        let live = manifest.live_snapshots().count();
        let Some(plan) = retention::plan(&manifest, self.config.keep_snapshots as usize) else {
            return Ok(Pruned { plan: None, snapshots_kept: live });
        };
        let snapshots_kept =
            live - plan.doomed.iter().filter(|d| matches!(d.object, Object::Snapshot { .. })).count();
        let next = manifest.prunes.last().map_or(1, |p| p.sequence + 1);
        let records = plan.records(next);
        let total = records.len();
        for (done, record) in records.into_iter().enumerate() {
            if should_stop() {
                return Err(Error::Prune(format!(
                    "stream {}: walship is stopping: {done} of the {total} prune records of this prune \
                     are carried out, the next start carries out the rest",
                    self.name()
                )));
            }
            self.commit_entry(Entry::Prune(record.clone()))?;
            self.source.prune(Some(record.before));
            self.delete_objects(&record.deleted)?;
            log::info!(
                "stream {}: prune {}: deleted {}; positions before {} are pruned",
                self.name(),
                record.sequence,
                crate::human::count(record.deleted.len() as u64, "object"),
                record.before
            );
        }
        Ok(Pruned { plan: Some(plan), snapshots_kept })
    }

    /// What retention needs of the manifest the journal holds (caught up
    /// with the archive when the stream opened; this thread is its only
    /// writer), read as a stream into [`retention::add_to_view`]'s small
    /// view. The prune marks are checked against the snapshots
    /// ([`retention::check_prune_snapshots`]); that every batch below the
    /// mark was named deleted is checked by the readers that hold the whole
    /// log (`list`, `restore`, `verify`).
    fn retention_view(&self) -> Result<Manifest, Error> {
        let stream = self.name();
        let mut view = Manifest::default();
        journal::read_each(self.journal.path(), &self.journal.rules(), |entry| {
            retention::add_to_view(&mut view, stream, entry)
        })?;
        retention::check_prune_snapshots(&view).map_err(|message| inconsistent(stream, message))?;
        Ok(view)
    }

    fn delete_objects(&self, keys: &[String]) -> Result<(), Error> {
        self.target.delete(keys).map_err(|e| Error::target(self.name(), e))
    }
}

/// When a daemon's stream thread applies retention: at its first
/// successful pass (which also finishes a prune a crash cut short), then
/// every `prune_interval` — reading the manifest only when the stream holds
/// more snapshots than it keeps, so an idle daemon does not read its whole
/// journal every interval. A failed prune is logged (once while it keeps
/// failing the same way) and tried again after a minute at most.
pub struct PruneSchedule {
    interval: Duration,
    /// Set when the daemon stops: a long prune stops between its records.
    stop: Arc<AtomicBool>,
    next: Instant,
    /// The last prune ran to its end: nothing is left to finish.
    settled: bool,
    last_error: Option<String>,
}

/// The longest wait before a failed prune is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

impl PruneSchedule {
    pub fn new(interval: Duration, stop: Arc<AtomicBool>) -> PruneSchedule {
        PruneSchedule { interval, stop, next: Instant::now(), settled: false, last_error: None }
    }

    /// How long until the next prune is due (so that a stream's thread
    /// wakes for it).
    pub fn due_in(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Apply retention to `stream` if it is due.
    pub fn run_if_due(&mut self, stream: &mut Stream) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        if self.settled && stream.snapshot_count() <= stream.config.keep_snapshots as usize {
            return;
        }
        match stream.apply_retention(&|| self.stop.load(Ordering::SeqCst)) {
            Ok(_) => {
                self.settled = true;
                if self.last_error.take().is_some() {
                    log::info!("stream {}: retention applies again", stream.name());
                }
            }
            Err(error) => {
                self.settled = false;
                let message = error.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    log::error!("stream {}: retention failed: {message}", stream.name());
                }
                self.last_error = Some(message);
                self.next = now + self.interval.min(RETRY_AFTER_FAILURE);
            }
        }
    }

    /// Answer `walship prune` requests (`dry_run`, reply): with the text
    /// the command prints, once `stream` is open; otherwise with why not
    /// (`unavailable`: the stream's last error, or that it stops).
    pub fn answer(
        &mut self,
        requests: impl Iterator<Item = (bool, Sender<PruneReply>)>,
        mut stream: Option<&mut Stream>,
        unavailable: Option<&str>,
    ) {
        for (dry_run, reply) in requests {
            let answer = match stream.as_deref_mut() {
                Some(stream) => {
                    stream.prune_now(dry_run, &|| self.stop.load(Ordering::SeqCst)).map_err(|e| e.to_string())
                }
                None => Err(format!(
                    "the stream is not open: {}",
                    unavailable.unwrap_or("it has not started yet")
                )),
            };
            if !dry_run {
                // A prune cut short is finished by the next scheduled run.
                self.settled = answer.is_ok();
                if answer.is_ok() {
                    self.last_error = None;
                }
            }
            let _ = reply.send(answer);
        }
    }
}

/// `manifest`, unless its prune records disagree with it
/// ([`retention::check_prunes`]): then an error naming the stream and
/// saying what to do.
pub fn checked_prunes(stream: &str, manifest: &Manifest) -> Result<(), Error> {
    retention::check_prunes(manifest).map_err(|message| inconsistent(stream, message))
}

/// The error for a prune record of `stream` that disagrees with its
/// manifest, as `message` says.
fn inconsistent(stream: &str, message: String) -> Error {
    Error::Manifest(ManifestError::Invalid {
        source: format!("stream {stream}"),
        line: 0,
        message: format!(
            "{message}: a prune record that retention did not write (forged, or damaged); move \
             that prune record object ({stream}/manifest/prune-…) aside on the target, and the \
             local journal too (walship rebuilds it from the archive)"
        ),
    })
}
