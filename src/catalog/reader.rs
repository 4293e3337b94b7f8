//! A stream's manifest for the commands that read it (`list`, `fetch`),
//! streamed: the local journal's log is read entry by entry, once to learn
//! where it ends and again for each pass a command makes; the remote
//! records after it (what the journal lacks: usually nothing) and the
//! snapshot and prune records (few) are held in memory. Memory stays flat
//! however long the log is.
//!
//! Every pass reads the journal only up to where the first one ended, so a
//! daemon appending meanwhile does not change what a command sees.

use std::path::{Path, PathBuf};

use super::{check_rebuild, check_start, remote_after};
use crate::error::Error;
use crate::manifest::journal;
use crate::manifest::sequence::LogSpan;
use crate::manifest::{Entry, Manifest, Record, Sequences, StreamRules};
use crate::target::Target;
use crate::target::keys;

/// How far back the remote records are listed (see [`super::load_whole`]).
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

/// A stream's manifest, ready to be read in passes.
#[derive(Debug)]
pub struct ManifestReader<'r> {
    rules: StreamRules<'r>,
    journal: PathBuf,
    /// How much of the journal every pass reads.
    journal_len: u64,
    /// The remote entries after the journal's.
    remote: Manifest,
    /// The snapshots and prunes, journal's and remote's (few: held).
    side: Manifest,
    /// Where each sequence ends, journal and remote together.
    ends: Sequences,
}

impl<'r> ManifestReader<'r> {
    /// Read the journal under `state_dir` once (checking every entry), then
    /// fetch the remote records after it, listed back as far as `reach`
    /// says. Writes nothing.
    pub fn open(
        state_dir: &Path,
        target: &dyn Target,
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
        target: &dyn Target,
        rules: &StreamRules<'r>,
        reach: Reach,
        mut visit: impl FnMut(&Record),
    ) -> Result<ManifestReader<'r>, Error> {
        let stream = rules.name;
        let path = crate::statedir::journal(state_dir, stream);
        let mut first_log: Option<u64> = None;
        let mut side = Manifest::default();
        let read = journal::read_from(&path, rules, 0, |entry, _, _| {
            match entry {
                Entry::Log(record) => {
                    first_log = first_log.or(Some(record.first()));
                    visit(&record);
                }
                other => side.push(other),
            }
            true
        })?;
        if let Some(line) = read.dropped_torn_tail {
            log::warn!("stream {stream}: {}:{line}: torn final record ignored", path.display());
        }
        let known = read.ends;
        let after = known.last.map(|span| keys::record_key(stream, span.first, span.last, span.kind));
        let (remote, _) = remote_after(target, rules, &known, after.as_deref())?;
        if known == Sequences::default() {
            check_rebuild(target, stream, &remote)?;
        }
        let mut ends = known.clone();
        ends.last = remote.log.last().map(LogSpan::of).or(known.last);
        ends.last_snapshot = remote.snapshots.last().map(|s| s.position).or(known.last_snapshot);
        ends.last_prune = remote.prunes.last().map(|p| (p.sequence, p.before)).or(known.last_prune);
        let start = first_log.or_else(|| remote.log.first().map(Record::first));
        let listed_from_start = known.last.is_none();
        let check = match reach {
            Reach::End => false,
            Reach::Position(position) => start.is_some_and(|start| position < start),
            Reach::Whole => true,
        };
        if check && !listed_from_start {
            check_start(state_dir, target, rules, start, ends.pruned_before())?;
        }
        remote.log.iter().for_each(&mut visit);
        let journal_len = read.valid_len;
        side.snapshots.extend(remote.snapshots.iter().cloned());
        side.prunes.extend(remote.prunes.iter().cloned());
        Ok(ManifestReader { rules: *rules, journal: path, journal_len, remote, side, ends })
    }

    /// The "pruned before P" mark of the latest prune.
    pub fn pruned_before(&self) -> Option<u64> {
        self.ends.pruned_before()
    }

    /// The snapshots and prunes (an empty log).
    pub fn side(&self) -> &Manifest {
        &self.side
    }

    /// Where each sequence ends.
    pub fn ends(&self) -> &Sequences {
        &self.ends
    }

    /// Hand every live log record (not below the pruned mark) to `visit`,
    /// in order, while it returns `Ok(true)`.
    pub fn each_live_record(
        &self,
        mut visit: impl FnMut(Record) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mark = self.pruned_before().unwrap_or(0);
        let mut outcome = Ok(true);
        journal::read_from(&self.journal, &self.rules, 0, |entry, _, end| {
            if end > self.journal_len {
                return false;
            }
            match entry {
                Entry::Log(record) if record.last() >= mark => {
                    outcome = visit(record);
                    matches!(outcome, Ok(true))
                }
                _ => true,
            }
        })?;
        if !outcome? {
            return Ok(());
        }
        for record in self.remote.log.iter().filter(|r| r.last() >= mark) {
            if !visit(record.clone())? {
                break;
            }
        }
        Ok(())
    }
}
