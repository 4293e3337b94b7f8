//! The steps of a pass, in order, with the upload of each batch (map,
//! checksum, store: `prepare` and `upload`, on a helper thread) overlapping
//! the commit of the batch before it (on the stream's thread): a commit's
//! record, journal fsync and position file no longer leave the link idle.
//!
//! While a batch uploads, the stream's thread, its commit done, also
//! prepares the batch after it (maps and checksums it: `prepare_ahead`),
//! so that the next upload starts as soon as this one ends instead of
//! after its own map and checksum (under load, 10-17 ms of every 64 MiB
//! batch's ~250 ms with nothing in flight). A batch prepared ahead that is
//! not the one planned next (the upload failed, uploads were held) is
//! dropped; one that failed to prepare is prepared again, and its failure
//! reported, when its turn comes.
//!
//! Commits stay strictly in position order, and at most one batch is
//! stored ahead of the archived position, so a crash at any point leaves
//! the stored-but-unrecorded objects as a run right after it, which the
//! next start finds with its exists-checks (`Stream`'s `uncertain`): a look
//! that finds a batch stored looks at the next one too. A gap, or nothing
//! left to do, first waits for the commit of the batch in flight.

use std::sync::Arc;
use std::thread;

use super::prepare::{self, PreparedBatch};
use super::upload::{self, Uploaded};
use super::{PassReport, Stream};
use crate::error::Error;
use crate::manifest::StreamRules;
use crate::plan::{self, BatchPolicy, SegmentFact, Step};
use crate::source::Segment;
use crate::status::StatusCell;
use crate::target::Target;

/// A batch stored on the target (or found stored), waiting for its commit.
type Stored<'a> = (PreparedBatch<'a>, Uploaded);

/// How taking the steps ended.
pub(super) struct Steps {
    /// Anything was done.
    pub progressed: bool,
    /// An upload was due but uploads are held (a `0` bandwidth window, a
    /// spent data budget).
    pub held: bool,
}

impl Stream {
    /// Take the plan's steps over `segments` (with their `facts`) until it
    /// says wait, uploads are held, or `should_stop`. The policy's low water
    /// mark tells a gap the application declared from one the directory
    /// shows.
    pub(super) fn take_steps(
        &mut self,
        segments: &[Segment],
        facts: &[SegmentFact],
        policy: BatchPolicy,
        report: &mut PassReport,
        should_stop: &dyn Fn() -> bool,
    ) -> Result<Steps, Error> {
        let (name, naming) = (self.config.name.clone(), self.config.naming.clone());
        let compression = self.config.compression;
        let (target, status) = (Arc::clone(&self.target), Arc::clone(&self.status));
        thread::scope(|scope| {
            let mut stored: Option<Stored<'_>> = None;
            let mut ahead: Option<PreparedBatch<'_>> = None;
            let (mut progressed, mut held) = (false, false);
            while !should_stop() {
                let planned = stored.as_ref().map(|(batch, _)| batch.last).or_else(|| self.archived());
                let step = plan::next_step(planned, facts, policy);
                if matches!(step, Step::Upload { .. }) && self.uploads_held().is_some() {
                    held = true;
                    break;
                }
                let (first, last) = match step {
                    Step::Upload { first, last, .. } => (first, last),
                    // Anything else comes after the batch in flight's commit.
                    _ if stored.is_some() => {
                        self.commit_last(stored.take(), report)?;
                        continue;
                    }
                    Step::Wait => break,
                    Step::Gap { first, last } => {
                        let told = policy.low_water_mark == Some(last + 1);
                        self.record_gap(first, last, told)?;
                        report.gaps += 1;
                        progressed = true;
                        continue;
                    }
                };
                // Look first where the outcome is uncertain: after a batch
                // found stored, as the stream says (start, failure), and
                // always for a replicated stream (another node may have
                // stored it before this one took over).
                let check = self.config.replicas.is_some()
                    || match &stored {
                        Some((_, uploaded)) => *uploaded == Uploaded::AlreadyStored,
                        None => self.uncertain,
                    };
                // Uncertain again until the batches in flight are committed.
                self.uncertain = true;
                let ready = ahead.take().filter(|batch| (batch.first, batch.last) == (first, last));
                let (target, status, name, naming) = (&target, &status, &name, &naming);
                let upload = thread::Builder::new()
                    .name("walship-upload".into())
                    .spawn_scoped(scope, move || {
                        let rules = StreamRules::new(name, naming);
                        let batch = match ready {
                            Some(batch) => batch,
                            None => prepare::prepare(&rules, compression, first, last, segments)?,
                        };
                        store(target.as_ref(), status, &rules, batch, check)
                    })
                    .map_err(|e| Error::local("start an upload thread for stream", name, e))?;
                let committed = stored.take().map_or(Ok(()), |batch| self.commit_stored(batch, report));
                if committed.is_ok() && !should_stop() {
                    ahead = self.prepare_ahead(last, segments, facts, policy);
                }
                let next = upload.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                committed?;
                stored = Some(next?);
                progressed = true;
            }
            self.commit_last(stored, report)?;
            Ok(Steps { progressed, held })
        })
    }

    /// Commit the batch stored last, if any, with no other in flight: the
    /// next batch's upload need look first only if this one was found
    /// already stored.
    fn commit_last(&mut self, stored: Option<Stored<'_>>, report: &mut PassReport) -> Result<(), Error> {
        if let Some(stored) = stored {
            let found = stored.1 == Uploaded::AlreadyStored;
            self.commit_stored(stored, report)?;
            self.uncertain = found;
        }
        Ok(())
    }

    /// The batch the plan takes after the one ending at `after` (being
    /// uploaded), mapped and checksummed; `None` if the plan does not
    /// upload next or the batch cannot be prepared now (see the module doc).
    fn prepare_ahead<'s>(
        &self,
        after: u64,
        segments: &'s [Segment],
        facts: &[SegmentFact],
        policy: BatchPolicy,
    ) -> Option<PreparedBatch<'s>> {
        let Step::Upload { first, last, .. } = plan::next_step(Some(after), facts, policy) else {
            return None;
        };
        let rules = StreamRules::new(&self.config.name, &self.config.naming);
        prepare::prepare(&rules, self.config.compression, first, last, segments).ok()
    }

    fn commit_stored(&mut self, (batch, uploaded): Stored<'_>, report: &mut PassReport) -> Result<(), Error> {
        let (count, bytes) = (batch.segments.len() as u64, batch.size);
        self.commit_batch(batch, uploaded)?;
        report.batches += 1;
        report.healed += u64::from(uploaded == Uploaded::AlreadyStored);
        report.segments += count;
        report.bytes += bytes;
        Ok(())
    }
}

/// Upload the prepared `batch` (stage 2), looking first with `check`.
fn store<'a>(
    target: &dyn Target,
    status: &StatusCell,
    rules: &StreamRules<'_>,
    mut batch: PreparedBatch<'a>,
    check: bool,
) -> Result<Stored<'a>, Error> {
    let uploaded = upload::upload(target, status, rules, &mut batch, check)?;
    Ok((batch, uploaded))
}
