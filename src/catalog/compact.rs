//! Compaction of a stream's remote log records, in the background of the
//! stream's thread: per-commit record objects (level 0) are folded into
//! level-1 objects of `manifest_compaction` records each (1,000 by
//! default), and level-1 objects into level-2 objects of as many level-1
//! objects, so that reading the remote manifest of a long archive takes
//! few requests. A compacted object stays under [`MAX_COMPACTED_BYTES`]
//! (a group closes early rather than grow past it), so no reader ever
//! holds a large one whole.
//!
//! The stream's own journal holds every record, so a compacted object's
//! text is built from it: the records of the range, in order, exactly as
//! the level-0 objects hold them. Where compaction stands ([`Progress`]:
//! the end of the level-2 prefix and the level-1 objects after it) is kept
//! in `STATE_DIR/STREAM/compaction`, written after every step, so steady
//! state needs no LIST: one PUT and one DELETE request per step.
//!
//! Each step is crash-safe and idempotent: (1) PUT the compacted object,
//! (2) DELETE the objects it folds, (3) save the progress. A crash after
//! (1) leaves both; readers prefer the larger range (`assemble`), and the
//! next step writes the same object again (groups are a function of the
//! journal's records) and deletes the rest. Readers list, then GET: one
//! that finds a listed record object gone (deleted by a step meanwhile)
//! lists again (`catalog`).
//!
//! Only log records are compacted; snapshot and prune records stay level-0
//! objects (few, and written by other jobs).
//!
//! Groups: a level-1 group starts where the compacted prefix ends (the
//! journal's first log record when nothing is compacted) and takes records
//! until it holds `fanout` of them, would grow past the size limit, or
//! meets a hole in the log (pruned positions): the group is complete only
//! then, so the tail of the log stays level 0. Level 2 folds the first
//! level-1 objects once `fanout` of them, or as many as fit the size limit,
//! are there; a level-1 object that cannot fold with its successor is left
//! as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::error::Error;
use crate::manifest::journal::{self, Journal};
use crate::manifest::{Entry, ManifestError, Record, format};
use crate::target::keys::{LogLevel, RecordKey};
use crate::target::{ObjectInfo, Target, Upload};

/// Largest compacted object built (a group of one larger record excepted).
pub const MAX_COMPACTED_BYTES: u64 = 4 << 20;

/// First line of the progress file.
const PROGRESS_HEADER: &str = "walship-compaction v1";

/// A level-1 object: the records `first..=last`, `bytes` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level1 {
    pub first: u64,
    pub last: u64,
    pub bytes: u64,
}

/// Where compaction stands on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The log up to here is in level-2 objects (or level-1 objects that
    /// will not fold further).
    pub level2_through: Option<u64>,
    /// The level-1 objects after it, contiguous, in order.
    pub level1: Vec<Level1>,
}

impl Progress {
    /// The last position the compacted objects cover.
    pub fn through(&self) -> Option<u64> {
        self.level1.last().map(|o| o.last).or(self.level2_through)
    }

    /// Where compaction stands according to a listing of the records
    /// prefix (after a rebuild): the level-2 (and higher) prefix, then the
    /// chain of level-1 objects that continues it.
    pub fn from_listing<'a>(records: impl Iterator<Item = (&'a RecordKey, &'a ObjectInfo)>) -> Progress {
        let mut level2_through: Option<u64> = None;
        let mut level1 = BTreeMap::new();
        for (key, object) in records {
            match *key {
                RecordKey::Log { last, level: LogLevel::Compacted(level), .. } if level >= 2 => {
                    level2_through = level2_through.max(Some(last));
                }
                RecordKey::Log { first, last, level: LogLevel::Compacted(1) } => {
                    level1.insert(first, Level1 { first, last, bytes: object.size });
                }
                _ => {}
            }
        }
        let mut progress = Progress { level2_through, level1: Vec::new() };
        let mut next = level2_through.map(|through| through + 1);
        for object in level1.into_values() {
            if next.is_some_and(|next| object.first < next) {
                continue;
            }
            if next.is_some_and(|next| object.first != next) {
                break;
            }
            next = Some(object.last + 1);
            progress.level1.push(object);
        }
        progress
    }

    /// The progress file's text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{PROGRESS_HEADER}\n");
        if let Some(through) = self.level2_through {
            text.push_str(&format!("level2-through {through}\n"));
        }
        for object in &self.level1 {
            text.push_str(&format!("level1 {} {} {}\n", object.first, object.last, object.bytes));
        }
        text
    }

    /// Parse [`Progress::to_text`]'s output; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Progress, String> {
        let mut lines = text.lines();
        if lines.next() != Some(PROGRESS_HEADER) {
            return Err(format!("the first line is not `{PROGRESS_HEADER}`"));
        }
        let mut progress = Progress::default();
        for (number, line) in lines.enumerate().map(|(i, line)| (i + 2, line)) {
            let fields: Vec<&str> = line.split(' ').collect();
            let numbers: Option<Vec<u64>> = fields[1..].iter().map(|f| f.parse().ok()).collect();
            let next = progress.through().map(|t| t + 1);
            match (fields[0], numbers.as_deref()) {
                ("level2-through", Some(&[through])) if progress.through().is_none() => {
                    progress.level2_through = Some(through)
                }
                ("level1", Some(&[first, last, bytes]))
                    if first <= last && next.is_none_or(|next| next == first) =>
                {
                    progress.level1.push(Level1 { first, last, bytes })
                }
                _ => {
                    return Err(format!(
                        "line {number} is not valid: `{}`",
                        crate::manifest::printable(line)
                    ));
                }
            }
        }
        Ok(progress)
    }
}

/// The next step, from the progress alone: fold the first `count`
/// level-1 objects into one level-2 object (`count` 1: leave the first
/// one as it is, it cannot fold with the next), or `None`: see whether a
/// level-1 group is complete.
pub fn level2_fold(level1: &[Level1], fanout: usize) -> Option<usize> {
    let mut bytes = format::header().len() as u64;
    let mut fits = 0;
    for object in level1.iter().take(fanout) {
        bytes += object.bytes - format::header().len() as u64;
        if bytes > MAX_COMPACTED_BYTES {
            break;
        }
        fits += 1;
    }
    match fits {
        0 if !level1.is_empty() => Some(1),
        n if n == fanout || (n > 0 && n < level1.len()) => Some(n),
        _ => None,
    }
}

/// A group of consecutive log records being gathered for one compacted
/// object; [`Group::offer`] says whether the next record joins it.
#[derive(Debug)]
pub struct Group {
    fanout: usize,
    pub records: usize,
    pub bytes: u64,
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// Whether no more records may join.
    pub complete: bool,
}

impl Group {
    pub fn new(fanout: usize) -> Group {
        let bytes = format::header().len() as u64;
        Group { fanout, records: 0, bytes, first: None, last: None, complete: false }
    }

    /// Offer the next record (`first..=last`, its line `line_bytes` long):
    /// `true` when it joins the group. A record that does not join closes
    /// the group, and so does the one that makes it full.
    pub fn offer(&mut self, first: u64, last: u64, line_bytes: u64) -> bool {
        let continues = self.last.is_none_or(|previous| previous.checked_add(1) == Some(first));
        let fits = self.records == 0 || self.bytes + line_bytes <= MAX_COMPACTED_BYTES;
        if self.complete || !continues || !fits {
            self.complete = true;
            return false;
        }
        self.first = self.first.or(Some(first));
        self.last = Some(last);
        self.records += 1;
        self.bytes += line_bytes;
        self.complete = self.records >= self.fanout;
        true
    }
}

/// One stream's compaction: its progress, where it is kept, and the
/// journal offsets of group starts seen (so a step reads only its range).
#[derive(Debug)]
pub struct Compactor {
    stream: String,
    fanout: usize,
    progress: Progress,
    path: PathBuf,
    /// Journal byte offset of the line holding the log record that starts
    /// at each position (those found so far).
    offsets: BTreeMap<u64, u64>,
    /// The journal's log ended here when the next level-1 group was last
    /// found incomplete: until it grows, there is nothing to read (an idle
    /// stream's passes cost nothing).
    incomplete_at: Option<u64>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Wrote a level-1 or level-2 object holding `first..=last` and
    /// deleted the `folded` objects it replaces.
    Wrote { level: u8, first: u64, last: u64, folded: usize },
    /// Left a level-1 object as it is (it cannot fold with the next).
    Kept { first: u64, last: u64 },
}

impl Compactor {
    /// The compactor of `stream`, whose progress file lies under
    /// `state_root`; `fanout` 0 turns compaction off. An unreadable
    /// progress file, or one that reaches past the journal's end (another
    /// archive's), is set aside with a warning: compaction then starts
    /// again from the journal's start, rewriting the same objects.
    pub fn load(state_root: &Path, stream: &str, fanout: usize, journal: &Journal) -> Compactor {
        let path = crate::statedir::compaction(state_root, stream);
        let text = durable::open_regular(
            &path,
            std::fs::File::options().read(true),
            durable::Links::Refuse,
            "compaction progress",
        )
        .and_then(std::io::read_to_string);
        let progress = match text {
            Ok(text) => Progress::parse(&text).unwrap_or_else(|why| {
                log::warn!(
                    "stream {stream}: {}: {why}; compaction starts again from the journal's start",
                    path.display()
                );
                Progress::default()
            }),
            Err(_) => Progress::default(),
        };
        let end = journal.last().map(Record::last);
        let progress = if progress.through() > end {
            log::warn!(
                "stream {stream}: {} says compaction reached position {:?}, past the journal's end; \
                 compaction starts again from the journal's start",
                path.display(),
                progress.through()
            );
            Progress::default()
        } else {
            progress
        };
        Compactor {
            stream: stream.to_string(),
            fanout,
            progress,
            path,
            offsets: BTreeMap::new(),
            incomplete_at: None,
        }
    }

    /// Where compaction stands.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Take `progress` (read from the target after a rebuild) and save it.
    pub fn adopt(&mut self, progress: Progress) -> Result<(), Error> {
        self.progress = progress;
        self.offsets.clear();
        self.incomplete_at = None;
        self.save()
    }

    /// The position from which the records not yet in level-2 objects are
    /// listed: the first level-1 object's, or after the level-2 prefix.
    pub fn listing_start(&self) -> Option<u64> {
        match self.progress.level1.first() {
            Some(object) => Some(object.first),
            None => self.progress.level2_through.map(|through| through + 1),
        }
    }

    /// Do the next compaction step, if one is due: `None` when there is
    /// nothing to do.
    pub fn step(&mut self, target: &dyn Target, journal: &Journal) -> Result<Option<Done>, Error> {
        if self.fanout == 0 {
            return Ok(None);
        }
        if let Some(count) = level2_fold(&self.progress.level1, self.fanout) {
            return self.fold_level1(target, journal, count).map(Some);
        }
        self.write_level1(target, journal)
    }

    fn fold_level1(&mut self, target: &dyn Target, journal: &Journal, count: usize) -> Result<Done, Error> {
        let folded: Vec<Level1> = self.progress.level1[..count].to_vec();
        let (first, last) = (folded[0].first, folded[count - 1].last);
        if count == 1 {
            self.progress.level1.remove(0);
            self.progress.level2_through = Some(last);
            self.save()?;
            return Ok(Done::Kept { first, last });
        }
        let group = self.read_group(journal, first, usize::MAX, Some(last))?;
        let key = RecordKey::Log { first, last, level: LogLevel::Compacted(2) }.key(&self.stream);
        self.put(target, &key, &group.text)?;
        let keys: Vec<String> = folded
            .iter()
            .map(|o| RecordKey::Log { first: o.first, last: o.last, level: LogLevel::Compacted(1) })
            .map(|key| key.key(&self.stream))
            .collect();
        target.delete(&keys).map_err(|e| Error::target(&self.stream, e))?;
        self.progress.level1.drain(..count);
        self.progress.level2_through = Some(last);
        self.save()?;
        Ok(Done::Wrote { level: 2, first, last, folded: count })
    }

    fn write_level1(&mut self, target: &dyn Target, journal: &Journal) -> Result<Option<Done>, Error> {
        let end = journal.last().map(Record::last);
        if end.is_none() || end == self.incomplete_at {
            return Ok(None);
        }
        let from = match self.progress.through() {
            Some(through) => through + 1,
            None => match self.first_log_position(journal)? {
                Some(first) => first,
                None => return Ok(None),
            },
        };
        if end.is_none_or(|end| end < from) {
            return Ok(None);
        }
        let group = self.read_group(journal, from, self.fanout, None)?;
        if !group.complete {
            self.incomplete_at = end;
            return Ok(None);
        }
        let (first, last) = (group.first, group.last);
        let key = RecordKey::Log { first, last, level: LogLevel::Compacted(1) }.key(&self.stream);
        self.put(target, &key, &group.text)?;
        target.delete(&group.level0_keys).map_err(|e| Error::target(&self.stream, e))?;
        let bytes = group.text.len() as u64;
        self.progress.level1.push(Level1 { first, last, bytes });
        self.save()?;
        Ok(Some(Done::Wrote { level: 1, first, last, folded: group.level0_keys.len() }))
    }

    /// The first log record's position in the journal.
    fn first_log_position(&mut self, journal: &Journal) -> Result<Option<u64>, Error> {
        let mut first = None;
        journal::read_from(journal.path(), &journal.rules(), 0, |entry, start, _| match entry {
            Entry::Log(record) => {
                first = Some((record.first(), start));
                false
            }
            _ => true,
        })?;
        if let Some((position, offset)) = first {
            self.offsets.insert(position, offset);
        }
        Ok(first.map(|(position, _)| position))
    }

    /// The journal's log records from `from` on, as a group of at most
    /// `fanout` (up to `through` when given, which must end a record).
    fn read_group(
        &mut self,
        journal: &Journal,
        from: u64,
        fanout: usize,
        through: Option<u64>,
    ) -> Result<GroupText, Error> {
        let rules = journal.rules();
        let offset = self.offsets.range(..=from).next_back().map_or(0, |(_, &offset)| offset);
        let mut group = Group::new(fanout);
        let mut text = String::from(format::header());
        let mut level0_keys = Vec::new();
        let mut found = false;
        let mut next_start = None;
        journal::read_from(journal.path(), &rules, offset, |entry, start, end| {
            let Entry::Log(record) = entry else { return true };
            if record.last() < from {
                return true;
            }
            if !found && record.first() != from {
                return false;
            }
            found = true;
            let entry = Entry::Log(record);
            let line = format::entry_line(&entry);
            let Entry::Log(record) = entry else { unreachable!("built as a log entry above") };
            if through.is_some_and(|through| record.first() > through)
                || !group.offer(record.first(), record.last(), line.len() as u64)
            {
                next_start = Some((record.first(), start));
                group.complete = true;
                return false;
            }
            text.push_str(&line);
            let more = through.is_none_or(|through| group.last != Some(through)) && !group.complete;
            if !more {
                // The next log record starts at or after this line's end.
                next_start = Some((record.last() + 1, end));
            }
            level0_keys.push(super::entry_key(&self.stream, &Entry::Log(record)));
            more
        })?;
        if let Some((position, offset)) = next_start {
            self.offsets.insert(position, offset);
        }
        // Offsets below the records not yet in level-2 objects are not needed again.
        if let Some(needed) = self.listing_start() {
            self.offsets = self.offsets.split_off(&needed);
        }
        let (Some(first), Some(last)) = (group.first.filter(|_| found), group.last) else {
            return Err(self.journal_disagrees(journal, from));
        };
        if through.is_some_and(|through| through != last) {
            return Err(self.journal_disagrees(journal, from));
        }
        Ok(GroupText { first, last, text, level0_keys, complete: group.complete || through.is_some() })
    }

    fn journal_disagrees(&self, journal: &Journal, from: u64) -> Error {
        ManifestError::Invalid {
            source: self.path.display().to_string(),
            line: 0,
            message: format!(
                "compaction progress expects a log record starting at position {from} in {}, which \
                 holds none; remove {} (compaction starts again from the journal)",
                journal.path().display(),
                self.path.display()
            ),
        }
        .into()
    }

    fn put(&self, target: &dyn Target, key: &str, text: &str) -> Result<(), Error> {
        let bytes = text.as_bytes();
        let pieces = [bytes];
        let body = Upload::pieces(&pieces, bytes.len() as u64, crc32fast::hash(bytes));
        target.put(key, &body).map_err(|e| Error::target(&self.stream, e))
    }

    fn save(&self) -> Result<(), Error> {
        durable::write_file(&self.path, self.progress.to_text().as_bytes())
            .map_err(|e| Error::local("save the compaction progress in", &self.path, e))
    }
}

/// A group read from the journal, as the text of its compacted object.
struct GroupText {
    first: u64,
    last: u64,
    text: String,
    level0_keys: Vec<String>,
    complete: bool,
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
