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
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use super::Stream;
use super::mailbox::PruneReply;
use crate::catalog::reader::ManifestReader;
use crate::error::Error;
use crate::manifest::{Entry, ManifestError, PruneRecord, Record, StreamRules, journal};
use crate::retention::{self, DoomedScan, Plan, PruneRecords, Survey};

/// A pass over a manifest's log: hands every log record, in order, to the
/// function it gets.
pub type LogPass<'a> = dyn Fn(&mut dyn FnMut(&Record)) -> Result<(), Error> + 'a;

/// Plan retention over a manifest read in passes (`survey` from a first
/// one, `log` for the rest) and print it to `say` as `walship prune
/// --dry-run` does: the header, then a line per object, in position order.
pub fn print_plan(
    stream: &str,
    survey: &Survey,
    keep: usize,
    log: &LogPass<'_>,
    say: &mut dyn FnMut(&str),
) -> Result<Option<Plan>, Error> {
    let plan = match survey.cut(keep) {
        Some(cut) => retention::plan_from(survey, cut, |visit| log(visit))?,
        None => None,
    };
    say(&retention::render_header(stream, plan.as_ref(), survey.live_snapshots(), keep, true));
    if let Some(plan) = plan {
        let mut scan = DoomedScan::new(survey, plan.cut);
        let mut line = |doomed| say(&retention::render_doomed(&doomed));
        log(&mut |record| scan.record(record, &mut line))?;
        scan.finish(&mut line);
    }
    Ok(plan)
}

impl Stream {
    /// `walship prune` for this stream: apply retention now (or with
    /// `dry_run`, only plan it), handing what it prints to `say` line by
    /// line; see [`Stream::apply_retention`] for `should_stop`.
    pub fn prune_now(
        &mut self,
        dry_run: bool,
        should_stop: &dyn Fn() -> bool,
        say: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        if dry_run {
            let (survey, journal_len) = self.retention_survey()?;
            let keep = self.config.keep_snapshots as usize;
            print_plan(self.name(), &survey, keep, &|visit| self.each_log_record(journal_len, visit), say)?;
            return Ok(());
        }
        self.retain(should_stop, say).map(|_| ())
    }

    /// Apply retention now. A prune recorded as several prune records
    /// stops between two of them when `should_stop` (the daemon stopping);
    /// the next run carries on from there.
    pub fn apply_retention(&mut self, should_stop: &dyn Fn() -> bool) -> Result<Option<Plan>, Error> {
        self.retain(should_stop, &mut |_| {})
    }

    /// Finish the latest prune's deletions, plan the next prune (a pass
    /// over the journal to count what goes), print its header, then in a
    /// last pass record and carry out its prune records one at a time as
    /// the doomed objects come, each line printed as its object comes.
    fn retain(
        &mut self,
        should_stop: &dyn Fn() -> bool,
        say: &mut dyn FnMut(&str),
    ) -> Result<Option<Plan>, Error> {
        let (survey, journal_len) = self.retention_survey()?;
        if let Some(latest) = survey.side.prunes.last() {
            self.delete_objects(&latest.deleted)?;
        }
        let keep = self.config.keep_snapshots as usize;
        let plan = match survey.cut(keep) {
            Some(cut) => {
                retention::plan_from(&survey, cut, |visit| self.each_log_record(journal_len, visit))?
            }
            None => None,
        };
        // (The snapshot count is shown only when nothing goes.)
        let live = survey.live_snapshots();
        say(&retention::render_header(self.name(), plan.as_ref(), live, keep, false));
        let Some(plan) = plan else { return Ok(None) };
        let next = survey.side.prunes.last().map_or(1, |p| p.sequence + 1);
        let mut records = PruneRecords::new(plan, next);
        let mut scan = DoomedScan::new(&survey, plan.cut);
        let mut done = 0;
        let mut carry_out = |stream: &mut Stream, record: PruneRecord| {
            if should_stop() {
                return Err(Error::Prune(format!(
                    "stream {}: walship is stopping: {done} prune records of this prune are carried \
                     out, the next start carries out the rest",
                    stream.name()
                )));
            }
            stream.carry_out(record)?;
            done += 1;
            Ok(())
        };
        // The log is read up to each full prune record, which is carried
        // out before reading on (its entry goes after `journal_len`).
        let (name, naming) = (self.config.name.clone(), self.config.naming.clone());
        let rules = StreamRules::new(&name, &naming);
        let path = self.journal.path().to_path_buf();
        let mut offset = 0;
        loop {
            // The records completed by one log record (its snapshots and
            // itself), at most two.
            let mut ready = Vec::new();
            journal::read_from(&path, &rules, offset, |entry, _, end| {
                if end > journal_len {
                    return false;
                }
                offset = end;
                if let Entry::Log(record) = entry {
                    scan.record(&record, &mut |doomed| {
                        say(&retention::render_doomed(&doomed));
                        ready.extend(records.push(doomed));
                    });
                }
                ready.is_empty()
            })?;
            if ready.is_empty() {
                break;
            }
            for record in ready {
                carry_out(self, record)?;
            }
        }
        let mut ready = Vec::new();
        scan.finish(&mut |doomed| {
            say(&retention::render_doomed(&doomed));
            ready.extend(records.push(doomed));
        });
        for record in ready {
            carry_out(self, record)?;
        }
        Ok(Some(plan))
    }

    /// Record `prune` (remote record object, then journal) and only then
    /// delete the objects it names.
    fn carry_out(&mut self, prune: PruneRecord) -> Result<(), Error> {
        let (sequence, before, count) = (prune.sequence, prune.before, prune.deleted.len());
        let deleted = prune.deleted.clone();
        self.commit_entry(Entry::Prune(prune))?;
        self.source.prune(Some(before));
        self.delete_objects(&deleted)?;
        log::info!(
            "stream {}: prune {sequence}: deleted {}; positions before {before} are pruned",
            self.name(),
            crate::human::count(count as u64, "object"),
        );
        Ok(())
    }

    /// What retention needs of the manifest the journal holds (caught up
    /// with the archive when the stream opened; this thread is its only
    /// writer), read as a stream into a [`Survey`], and how long the
    /// journal was then (the later passes read that far). The prune marks
    /// are checked against the snapshots
    /// ([`retention::check_prune_snapshots`]); that every batch below the
    /// mark was named deleted is checked by `list`, `restore` and `verify`.
    fn retention_survey(&self) -> Result<(Survey, u64), Error> {
        let stream = self.name();
        let mut survey = Survey::default();
        let read = journal::read_each(self.journal.path(), &self.journal.rules(), |entry| {
            survey.add(stream, entry)
        })?;
        retention::check_prune_snapshots(&survey.side).map_err(|message| inconsistent(stream, message))?;
        Ok((survey, read.valid_len))
    }

    /// Hand every log record of the journal's first `journal_len` bytes
    /// to `visit`, in order.
    fn each_log_record(&self, journal_len: u64, visit: &mut dyn FnMut(&Record)) -> Result<(), Error> {
        journal::read_from(self.journal.path(), &self.journal.rules(), 0, |entry, _, end| {
            if end > journal_len {
                return false;
            }
            if let Entry::Log(record) = entry {
                visit(&record);
            }
            true
        })?;
        Ok(())
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
        requests: impl Iterator<Item = (bool, SyncSender<PruneReply>)>,
        mut stream: Option<&mut Stream>,
        unavailable: Option<&str>,
    ) {
        for (dry_run, reply) in requests {
            let mut say = |line: &str| {
                // A reader gone (the command stopped) stops no prune.
                let _ = reply.send(PruneReply::Line(line.trim_end().to_string()));
            };
            let answer = match stream.as_deref_mut() {
                Some(stream) => stream
                    .prune_now(dry_run, &|| self.stop.load(Ordering::SeqCst), &mut say)
                    .map_err(|e| e.to_string()),
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
            let _ = reply.send(PruneReply::Done(answer));
        }
    }
}

/// An error naming the stream and saying what to do when the prune
/// records of the manifest `reader` reads disagree with it
/// ([`retention::check_prunes`]).
pub fn checked_prunes(stream: &str, reader: &ManifestReader<'_>) -> Result<(), Error> {
    reader.prune_consistency()?.map_err(|message| inconsistent(stream, message))
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
