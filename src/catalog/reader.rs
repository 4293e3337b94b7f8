//! A stream's manifest for the commands that read it (`list`, `fetch`,
//! `verify`, `restore`), streamed: the local journal's log is read entry by entry, once to learn
//! where it ends and again for each pass a command makes; the remote
//! records after it (what the journal lacks: usually nothing) and the
//! snapshot and prune records (few; a prune's batch keys as runs,
//! `retention::deleted`) are held in memory. With no journal
//! (a node whose state directory is gone) the whole log is read from the
//! target for each pass instead, an entry at a time as each record object
//! is parsed; the prune and snapshot records only in the first pass (what
//! they say is held, as above). Memory stays flat however long the log
//! is.
//!
//! Every pass reads the journal only up to where the first one ended, so a
//! daemon appending meanwhile does not change what a command sees.

use std::path::{Path, PathBuf};

use super::{RebuildScan, check_start, each_remote_entry, with_batch_objects};
use crate::error::Error;
use crate::manifest::journal;
use crate::manifest::{Entry, Manifest, Record, Sequences, StreamRules};
use crate::retention::{self, DeletedBatches, PrunedLogCheck};
use crate::target::Target;
use crate::target::keys;

/// How far back the remote records are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Only what follows the journal.
    End,
    /// Also from the start when the journal's log begins above this
    /// position (and above the pruned mark): a journal that lost its first
    /// records is then a hole, not a later start.
    Position(u64),
    /// Also from the start whenever the journal's log begins above the
    /// pruned mark (or above 0).
    Whole,
}

/// Where the log records after the journal's come from in each pass.
enum Remote<'r> {
    /// Fetched once (what a journal lacks: usually nothing), held.
    Held(Vec<Record>),
    /// The journal is empty: the whole log is read from the target again
    /// for each pass, after the snapshots and prunes the first one read
    /// (where they end: their records are not read again).
    Streamed(&'r dyn Target, Sequences),
}

impl std::fmt::Debug for Remote<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Held(log) => write!(f, "Held({} records)", log.len()),
            Remote::Streamed(target, _) => write!(f, "Streamed({})", target.describe()),
        }
    }
}

/// A stream's manifest, ready to be read in passes.
#[derive(Debug)]
pub struct ManifestReader<'r> {
    rules: StreamRules<'r>,
    journal: PathBuf,
    /// How much of the journal every pass reads.
    journal_len: u64,
    /// The remote log records after the journal's.
    remote: Remote<'r>,
    /// The snapshots and prunes, journal's and remote's (few: held), the
    /// prunes without their batch keys, which are in `deleted`.
    side: Manifest,
    /// The batch keys the prunes deleted, as runs.
    deleted: DeletedBatches,
    /// The "pruned before P" mark of the latest prune, journal's or remote's.
    pruned_before: Option<u64>,
    /// The last position the log covers.
    end: Option<u64>,
}

impl<'r> ManifestReader<'r> {
    /// Read the journal under `state_dir` once (checking every entry), then
    /// fetch the remote records after it, listed back as far as `reach`
    /// says. Writes nothing.
    pub fn open(
        state_dir: &Path,
        target: &'r dyn Target,
        rules: &StreamRules<'r>,
        reach: Reach,
    ) -> Result<ManifestReader<'r>, Error> {
        ManifestReader::open_visiting(state_dir, target, rules, reach, |_| {})
    }

    /// [`ManifestReader::open`], handing every log record of the journal
    /// and of the remote records after it to `visit` on the way, in order
    /// (before the pruned mark is known: those below it too).
    pub fn open_visiting(
        state_dir: &Path,
        target: &'r dyn Target,
        rules: &StreamRules<'r>,
        reach: Reach,
        mut visit: impl FnMut(&Record),
    ) -> Result<ManifestReader<'r>, Error> {
        let stream = rules.name;
        let path = crate::statedir::journal(state_dir, stream);
        let mut first_log: Option<u64> = None;
        let mut side = Manifest::default();
        let mut deleted = DeletedBatches::default();
        let read = journal::read_from(&path, rules, 0, |entry, _, _| {
            match entry {
                Entry::Log(record) => {
                    first_log = first_log.or(Some(record.first()));
                    visit(&record);
                }
                other => keep_side(&mut side, &mut deleted, stream, other),
            }
            true
        })?;
        if let Some(line) = read.dropped_torn_tail {
            log::warn!("stream {stream}: {}:{line}: torn final record ignored", path.display());
        }
        let known = read.ends;
        let journal_len = read.valid_len;
        let mut end = known.log_end();
        if known == Sequences::default() {
            // Nothing local: the whole manifest is remote; its log is read
            // again for every pass rather than held.
            with_batch_objects(target, stream, |objects| {
                let mut rebuild = RebuildScan::new(stream, objects);
                each_remote_entry(target, rules, &known, None, &mut |entry| {
                    rebuild.entry(&entry)?;
                    match entry {
                        Entry::Log(record) => {
                            visit(&record);
                            end = Some(record.last());
                        }
                        side_entry => keep_side(&mut side, &mut deleted, stream, side_entry),
                    }
                    Ok(true)
                })?;
                rebuild.report();
                Ok(())
            })?;
            let pruned_before = side.pruned_before();
            let side_ends = Sequences {
                last: None,
                last_snapshot: side.snapshots.last().map(|s| s.position),
                last_prune: side.prunes.last().map(|p| (p.sequence, p.before)),
            };
            let (journal, remote) = (path, Remote::Streamed(target, side_ends));
            return Ok(ManifestReader {
                rules: *rules,
                journal,
                journal_len,
                remote,
                side,
                deleted,
                pruned_before,
                end,
            });
        }
        let after = known.last.map(|span| keys::record_key(stream, span.first, span.last, span.kind));
        // What the journal lacks (usually nothing): the log held, the
        // prunes' batch keys taken as runs as they come.
        let (mut remote_log, mut remote_mark) = (Vec::new(), None);
        each_remote_entry(target, rules, &known, after.as_deref(), &mut |entry| {
            match entry {
                Entry::Log(record) => remote_log.push(record),
                side_entry => {
                    if let Entry::Prune(prune) = &side_entry {
                        remote_mark = Some(prune.before);
                    }
                    keep_side(&mut side, &mut deleted, stream, side_entry);
                }
            }
            Ok(true)
        })?;
        let pruned_before = remote_mark.or(known.pruned_before());
        let start = first_log.or_else(|| remote_log.first().map(Record::first));
        let check = match reach {
            Reach::End => false,
            Reach::Position(position) => start.is_some_and(|start| position < start),
            Reach::Whole => true,
        };
        if check && known.last.is_some() {
            check_start(state_dir, target, rules, start, pruned_before)?;
        }
        remote_log.iter().for_each(&mut visit);
        end = remote_log.last().map(Record::last).or(end);
        let remote = Remote::Held(remote_log);
        Ok(ManifestReader {
            rules: *rules,
            journal: path,
            journal_len,
            remote,
            side,
            deleted,
            pruned_before,
            end,
        })
    }

    /// The "pruned before P" mark of the latest prune.
    pub fn pruned_before(&self) -> Option<u64> {
        self.pruned_before
    }

    /// The snapshots and prunes (an empty log), the prunes without their
    /// batch keys ([`ManifestReader::deleted_batches`] holds them).
    pub fn side(&self) -> &Manifest {
        &self.side
    }

    /// The batch keys the prunes deleted.
    pub fn deleted_batches(&self) -> &DeletedBatches {
        &self.deleted
    }

    /// What retention reads besides the log's batches: the snapshots, the
    /// prunes and where the log ends.
    pub fn survey(&self) -> retention::Survey {
        let mut survey = retention::Survey::default();
        self.side.entries().for_each(|entry| survey.add(self.rules.name, entry));
        survey.end = self.end;
        survey
    }

    /// Whether the prune records agree with the manifest
    /// ([`retention::check_prunes`], checked in a pass over the log below
    /// the pruned mark): `Ok(Err(why))` when they do not.
    pub fn prune_consistency(&self) -> Result<Result<(), String>, Error> {
        let check = PrunedLogCheck::new(self.rules.name, &self.side, &self.deleted);
        let mut found = Ok(());
        if self.pruned_before.is_some() {
            self.each_record(|record| match check.record(&record) {
                Ok(going) => Ok(going),
                Err(why) => {
                    found = Err(why);
                    Ok(false)
                }
            })?;
        }
        Ok(found.and_then(|()| retention::check_prune_snapshots(&self.side)))
    }

    /// The last position the log covers, pruned or not.
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// Hand every live log record (not below the pruned mark) to `visit`,
    /// in order, while it returns `Ok(true)`.
    pub fn each_live_record(
        &self,
        mut visit: impl FnMut(Record) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mark = self.pruned_before().unwrap_or(0);
        self.each_record(|record| if record.last() >= mark { visit(record) } else { Ok(true) })
    }

    /// Hand every log record (those below the pruned mark too) to `visit`,
    /// in order, while it returns `Ok(true)`.
    fn each_record(&self, mut visit: impl FnMut(Record) -> Result<bool, Error>) -> Result<(), Error> {
        let mut outcome = Ok(true);
        journal::read_from(&self.journal, &self.rules, 0, |entry, _, end| {
            if end > self.journal_len {
                return false;
            }
            match entry {
                Entry::Log(record) => {
                    outcome = visit(record);
                    matches!(outcome, Ok(true))
                }
                _ => true,
            }
        })?;
        if !outcome? {
            return Ok(());
        }
        match &self.remote {
            Remote::Held(log) => {
                for record in log {
                    if !visit(record.clone())? {
                        break;
                    }
                }
            }
            Remote::Streamed(target, side_ends) => {
                each_remote_entry(*target, &self.rules, side_ends, None, &mut |entry| match entry {
                    Entry::Log(record) => visit(record),
                    // A prune or snapshot recorded since the first pass.
                    _ => Ok(true),
                })?;
            }
        }
        Ok(())
    }
}

/// Keep `entry` (a snapshot or a prune) of `stream` in `side`, a prune's
/// batch keys as runs in `deleted`.
fn keep_side(side: &mut Manifest, deleted: &mut DeletedBatches, stream: &str, mut entry: Entry) {
    if let Entry::Prune(prune) = &mut entry {
        deleted.take_from(stream, prune);
    }
    side.push(entry);
}
