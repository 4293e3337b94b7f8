//! The steps of a pass, in order, with the upload of each batch (map,
//! checksum, store: `prepare` and `upload`, on a helper thread) overlapping
//! the commit of the batch before it (on the stream's thread): a commit's
//! record, journal fsync and position file no longer leave the link idle.
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
use crate::config::Compression;
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
                let (target, status, name, naming) = (&target, &status, &name, &naming);
                let upload = thread::Builder::new()
                    .name("walship-upload".into())
                    .spawn_scoped(scope, move || {
                        let rules = StreamRules::new(name, naming);
                        store(target.as_ref(), status, &rules, compression, segments, (first, last), check)
                    })
                    .map_err(|e| Error::local("start an upload thread for stream", name, e))?;
                let committed = stored.take().map_or(Ok(()), |batch| self.commit_stored(batch, report));
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

/// Prepare (with `compression`) and upload the batch `first..=last` of
/// `segments` (stages 1 and 2), looking first with `check`.
fn store<'a>(
    target: &dyn Target,
    status: &StatusCell,
    rules: &StreamRules<'_>,
    compression: Compression,
    segments: &'a [Segment],
    (first, last): (u64, u64),
    check: bool,
) -> Result<Stored<'a>, Error> {
    let mut batch = prepare::prepare(rules, compression, first, last, segments)?;
    let uploaded = upload::upload(target, status, rules, &mut batch, check)?;
    Ok((batch, uploaded))
}
