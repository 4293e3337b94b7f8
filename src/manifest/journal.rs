//! The local journal: one append-only manifest file per stream.
//!
//! Opening reads and checks every entry (streamed, never all in memory),
//! drops a torn final entry with a warning and cuts the file back to its
//! last complete line, so later appends start on a clean line boundary.
//! A journal written by the first release (format v1) is upgraded first:
//! rewritten as v2 through [`durable::write_atomic`], the v1 file kept
//! beside it as `manifest.v1`, with a log line saying so.
//!
//! Appending validates each entry and its place ([`Sequences`]) before
//! writing anything, writes whole lines and fsyncs before returning: a
//! stream may advance its position only after [`Journal::append`]
//! succeeded. If an append fails midway, the next one first cuts the file
//! back to the last durable line, so a half-written line is never glued to
//! a new one. An append costs O(1): the journal keeps only where each
//! sequence ends.
//!
//! One process appends to a journal at a time; this module takes no lock.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::format::{self, MAX_LINE, ParseSummary, Parsed, entry_line, refused_at};
use super::{Entry, Manifest, ManifestError, Record, Sequences, StreamRules, validate_entry};
use crate::durable;
use crate::naming::Naming;

/// An open journal, ready for appends.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    stream: String,
    naming: Naming,
    /// Opened for reading and appending.
    file: File,
    /// Where each sequence ends.
    ends: Sequences,
    /// The last log record.
    last: Option<Record>,
    /// Length of the file up to the end of its last fsync'd line.
    durable_len: u64,
    /// Lines in the file, header included.
    lines: usize,
    /// An append failed: bytes past `durable_len` may be a partial line.
    unclean_tail: bool,
}

impl Journal {
    /// Open or create `path` (a new file gets its header durably: write,
    /// fsync the file, fsync the directory). A v1 file is upgraded to v2
    /// first. Every existing entry is read, validated and passed to `visit`
    /// (see [`format::parse_each`] for the order). A torn final entry is
    /// dropped with a warning and the file is cut back to the end of the
    /// last good line (and fsync'd). Any other damage, a hole included, is
    /// an error and the file is left untouched.
    pub fn open(
        path: &Path,
        rules: &StreamRules<'_>,
        visit: impl FnMut(Entry),
    ) -> Result<(Journal, ParseSummary), ManifestError> {
        let name = path.display().to_string();
        upgrade_v1(path, rules)?;
        let file = open_file(path, OpenOptions::new().read(true).append(true).create(true))
            .map_err(io_error(&name, "open"))?;
        let summary = format::parse_each(BufReader::new(&file), &name, rules, visit)?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            stream: rules.name.to_string(),
            naming: rules.naming.clone(),
            file,
            ends: summary.ends.clone(),
            last: summary.last.clone(),
            durable_len: summary.valid_len,
            lines: 1 + summary.entries,
            unclean_tail: false,
        };
        if let Some(line) = summary.dropped_torn_tail {
            log::warn!(
                "{name}:{line}: dropped a torn final record (a write cut short by a crash or \
                 power loss); cutting the journal back to its last complete record"
            );
            journal.cut_to_durable_len()?;
        }
        if summary.valid_len == 0 {
            journal.write_header()?;
        }
        Ok((journal, summary))
    }

    /// Append log `records` and fsync before returning; see
    /// [`Journal::append_entries`].
    pub fn append(&mut self, records: &[Record]) -> Result<(), ManifestError> {
        let entries: Vec<Entry> = records.iter().cloned().map(Entry::Log).collect();
        self.append_entries(&entries)
    }

    /// Append `entries` and fsync before returning. Each must be valid for
    /// this stream and fit where its sequence ends (no overlap, no hole);
    /// otherwise nothing is written and the error is
    /// [`ManifestError::Refused`] (or [`ManifestError::Hole`]).
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<(), ManifestError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (text, ends) = self.lines_for(entries)?;
        if self.unclean_tail {
            self.cut_to_durable_len()?;
        }
        self.unclean_tail = true;
        (&self.file).write_all(text.as_bytes()).map_err(self.io_error("append to"))?;
        self.file.sync_data().map_err(self.io_error("fsync"))?;
        self.unclean_tail = false;
        self.durable_len += text.len() as u64;
        self.lines += entries.len();
        self.ends = ends;
        if let Some(Entry::Log(record)) = entries.iter().rev().find(|e| matches!(e, Entry::Log(_))) {
            self.last = Some(record.clone());
        }
        Ok(())
    }

    /// The last log record in the journal.
    pub fn last(&self) -> Option<&Record> {
        self.last.as_ref()
    }

    /// Where each of the journal's sequences ends.
    pub fn ends(&self) -> &Sequences {
        &self.ends
    }

    /// The rules the journal's entries follow.
    pub fn rules(&self) -> StreamRules<'_> {
        StreamRules::new(&self.stream, &self.naming)
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lines to append for `entries`, after checking each one, and where
    /// the sequences end after them.
    fn lines_for(&self, entries: &[Entry]) -> Result<(String, Sequences), ManifestError> {
        let source = self.path.display().to_string();
        let rules = self.rules();
        let mut text = String::new();
        let mut ends = self.ends.clone();
        for (entry, line) in entries.iter().zip(self.lines + 1..) {
            let refuse = |message| ManifestError::Refused { source: source.clone(), line, message };
            validate_entry(entry, &rules).map_err(refuse)?;
            ends.admit(entry).map_err(|refusal| match refused_at(refusal, &source, line) {
                ManifestError::Invalid { message, .. } => refuse(message),
                hole => hole,
            })?;
            let entry_text = entry_line(entry);
            if entry_text.len() > MAX_LINE + 1 {
                return Err(refuse("the record's line would be longer than 8 MiB".into()));
            }
            text.push_str(&entry_text);
        }
        Ok((text, ends))
    }

    /// Cut the file back to its last durable line and fsync.
    fn cut_to_durable_len(&mut self) -> Result<(), ManifestError> {
        self.file.set_len(self.durable_len).map_err(self.io_error("truncate"))?;
        self.file.sync_all().map_err(self.io_error("fsync"))?;
        self.unclean_tail = false;
        Ok(())
    }

    /// Write the header into an empty (or torn-header) file, durably.
    fn write_header(&mut self) -> Result<(), ManifestError> {
        self.file.set_len(0).map_err(self.io_error("truncate"))?;
        (&self.file).write_all(format::header().as_bytes()).map_err(self.io_error("write"))?;
        self.file.sync_all().map_err(self.io_error("fsync"))?;
        durable::sync_dir(parent_dir(&self.path)).map_err(self.io_error("fsync the directory of"))?;
        self.durable_len = format::header().len() as u64;
        self.lines = 1;
        Ok(())
    }

    fn io_error(&self, action: &'static str) -> impl FnOnce(io::Error) -> ManifestError + use<> {
        io_error(&self.path.display().to_string(), action)
    }
}

/// Where a journal written in format v1 is kept after its upgrade.
pub fn v1_copy_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".v1");
    PathBuf::from(name)
}

/// If `path` is a v1 journal, rewrite it as v2 without loss: first a
/// durable copy of the v1 file at [`v1_copy_path`], then the v2 text
/// (streamed, one entry at a time) written over `path` by the one durable
/// write path. A crash in between leaves the v1 journal in place, and the
/// next open upgrades again. A torn final v1 record is dropped, as any
/// open would.
fn upgrade_v1(path: &Path, rules: &StreamRules<'_>) -> Result<(), ManifestError> {
    let name = path.display().to_string();
    let mut reader = match open_file(path, OpenOptions::new().read(true)) {
        Ok(file) => BufReader::new(file),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(&name, "open")(error)),
    };
    let first_line = reader.fill_buf().map_err(io_error(&name, "read"))?;
    if !first_line.starts_with(b"walship-manifest v1\n") {
        return Ok(());
    }
    // Check the whole file before touching anything.
    let summary = format::parse_each(&mut reader_at_start(path)?, &name, rules, |_| {})?;
    let copy = v1_copy_path(path);
    durable::write_atomic(&copy, |out| io::copy(&mut reader_at_start(path).map_err(io::Error::other)?, out))
        .map_err(io_error(&copy.display().to_string(), "keep a copy of the v1 journal at"))?;
    durable::write_atomic(path, |out| {
        let mut out = io::BufWriter::new(out);
        out.write_all(format::header().as_bytes())?;
        let mut written = Ok(());
        let mut source = reader_at_start(path).map_err(io::Error::other)?;
        format::parse_each(&mut source, &name, rules, |entry| {
            if written.is_ok() {
                written = out.write_all(entry_line(&entry).as_bytes());
            }
        })
        .map_err(io::Error::other)?;
        written?;
        out.flush()
    })
    .map_err(io_error(&name, "upgrade"))?;
    log::info!(
        "{name}: upgraded the journal from manifest format v1 to v2 ({} records{}); the v1 file is \
         kept as {}",
        summary.entries,
        summary.dropped_torn_tail.map_or(String::new(), |line| format!(", torn final line {line} dropped")),
        copy.display()
    );
    Ok(())
}

fn reader_at_start(path: &Path) -> Result<BufReader<File>, ManifestError> {
    let name = path.display().to_string();
    open_file(path, OpenOptions::new().read(true)).map(BufReader::new).map_err(io_error(&name, "open"))
}

/// Read-only load of a whole journal (for list and restore). A missing file
/// is an empty manifest; a torn tail is reported, not repaired; a v1 file
/// is read as it is.
pub fn read_all(path: &Path, rules: &StreamRules<'_>) -> Result<Parsed, ManifestError> {
    let mut manifest = Manifest::default();
    let summary = read_each(path, rules, |entry| manifest.push(entry))?;
    Ok(Parsed { manifest, dropped_torn_tail: summary.dropped_torn_tail, version: summary.version })
}

/// Read-only check of a whole journal that keeps only where it ends (for
/// status): memory stays flat however long the journal is.
pub fn read_summary(path: &Path, rules: &StreamRules<'_>) -> Result<ParseSummary, ManifestError> {
    read_each(path, rules, |_| {})
}

/// The batch records of the journal at `path` that hold any of `positions`
/// (in any order), in journal order. Read as a stream: memory grows with
/// the answer, not with the journal. A missing file holds none.
pub fn batches_holding(
    path: &Path,
    rules: &StreamRules<'_>,
    positions: &[u64],
) -> Result<Vec<Record>, ManifestError> {
    let mut sorted = positions.to_vec();
    sorted.sort_unstable();
    let mut found = Vec::new();
    read_each(path, rules, |entry| {
        if let Entry::Log(record @ Record::Batch(_)) = entry {
            let next = sorted.partition_point(|&p| p < record.first());
            if sorted.get(next).is_some_and(|&p| p <= record.last()) {
                found.push(record);
            }
        }
    })?;
    Ok(found)
}

/// What a journal knows of one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The batch record holding it.
    Batch(Record),
    /// Its log covers the position without a batch (a gap): the archive
    /// does not hold it.
    NotHeld,
    /// The position lies before `before`, the mark below which retention
    /// deleted the archive; `oldest`: the first segment of the first live
    /// batch (position, name).
    Pruned { before: u64, oldest: Option<(u64, String)> },
    /// The position lies outside the journal's log (before its first
    /// record or after its last): only the archive's records can tell.
    Unknown,
}

/// What the journal at `path` knows of `position` (see [`Lookup`]), read
/// as a stream. A missing file knows nothing.
pub fn lookup(path: &Path, rules: &StreamRules<'_>, position: u64) -> Result<Lookup, ManifestError> {
    let (mut first, mut holding) = (None, None);
    let summary = read_each(path, rules, |entry| {
        if let Entry::Log(record) = entry {
            first = first.or(Some(record.first()));
            if matches!(record, Record::Batch(_)) && (record.first()..=record.last()).contains(&position) {
                holding = Some(record);
            }
        }
    })?;
    let last = summary.last.as_ref().map(Record::last);
    let pruned_before = summary.ends.last_prune.map_or(0, |(_, before)| before);
    // A batch reaching the mark is live, even for its positions below it.
    if let Some(record) = holding.filter(|record| record.last() >= pruned_before) {
        return Ok(Lookup::Batch(record));
    }
    if position < pruned_before {
        return Ok(Lookup::Pruned {
            before: pruned_before,
            oldest: oldest_held(path, rules, pruned_before)?,
        });
    }
    Ok(match first.zip(last) {
        Some((first, last)) if (first..=last).contains(&position) => Lookup::NotHeld,
        _ => Lookup::Unknown,
    })
}

/// The first segment of the first live batch (one reaching
/// `pruned_before`) of the journal at `path` (position, name): a second
/// pass, only for the error that names it.
fn oldest_held(
    path: &Path,
    rules: &StreamRules<'_>,
    pruned_before: u64,
) -> Result<Option<(u64, String)>, ManifestError> {
    let mut oldest = None;
    read_each(path, rules, |entry| {
        if oldest.is_none()
            && let Entry::Log(Record::Batch(batch)) = entry
            && batch.last >= pruned_before
        {
            oldest = batch.segments.first().map(|s| (s.position, s.name.clone()));
        }
    })?;
    Ok(oldest)
}

/// Read-only pass over the entries of the journal at `path` from byte
/// `offset` on (`0`: from its start; otherwise a line boundary an earlier
/// pass reported), in file order, while `visit` returns `true`. `visit`
/// gets each entry with the byte offsets where its line starts and ends.
/// Memory stays flat however long the journal is. A missing file holds
/// no entries.
pub fn read_from(
    path: &Path,
    rules: &StreamRules<'_>,
    offset: u64,
    mut visit: impl FnMut(Entry, u64, u64) -> bool,
) -> Result<ReadTo, ManifestError> {
    let name = path.display().to_string();
    let mut file = match open_file(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(ReadTo::default()),
        Err(error) => return Err(io_error(&name, "open")(error)),
    };
    let mut entries = if offset == 0 {
        format::EntryReader::new(BufReader::new(file), &name, rules)?
    } else {
        io::Seek::seek(&mut file, io::SeekFrom::Start(offset)).map_err(io_error(&name, "read"))?;
        format::EntryReader::resuming(BufReader::new(file), &name, rules, offset)
    };
    loop {
        let start = entries.valid_len();
        let Some(entry) = entries.next_entry()? else { break };
        if !visit(entry, start, entries.valid_len()) {
            break;
        }
    }
    Ok(ReadTo {
        ends: entries.ends().clone(),
        valid_len: entries.valid_len(),
        dropped_torn_tail: entries.dropped_torn_tail(),
    })
}

/// What [`read_from`] saw, up to where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadTo {
    /// Where each sequence ends (of the entries read from the offset on).
    pub ends: Sequences,
    /// Just past the last entry read.
    pub valid_len: u64,
    /// 1-based line number of a torn final line that was dropped (counted
    /// from the offset).
    pub dropped_torn_tail: Option<usize>,
}

/// Read-only pass over every entry, each handed to `visit` and not kept
/// (see [`format::parse_each`] for the order); a missing file is an empty
/// manifest.
pub fn read_each(
    path: &Path,
    rules: &StreamRules<'_>,
    visit: impl FnMut(Entry),
) -> Result<ParseSummary, ManifestError> {
    let name = path.display().to_string();
    let file = match open_file(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(ParseSummary::default()),
        Err(error) => return Err(io_error(&name, "open")(error)),
    };
    format::parse_each(BufReader::new(file), &name, rules, visit)
}

/// Open the journal at `path` as `options` say, never through a link
/// planted there (`O_NOFOLLOW`) and never waiting on a named pipe
/// (`O_NONBLOCK`, no effect on a file): anything but a regular file is
/// refused.
fn open_file(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    durable::open_regular(path, options, durable::Links::Refuse, "a journal")
}

fn io_error(path: &str, action: &'static str) -> impl FnOnce(io::Error) -> ManifestError + use<> {
    let path = path.to_string();
    move |error| ManifestError::Io { path, action, error }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::format::Version;
    use crate::manifest::validate::tests::{batch, naming};
    use crate::manifest::{GapRecord, PruneRecord};
    use std::fs;

    const STREAM: &str = "sensors";

    /// A fresh, empty directory for one test.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("walship-journal-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    fn gap(first: u64, last: u64) -> Record {
        Record::Gap(GapRecord { first, last, reason: "removed".into() })
    }

    fn records() -> Vec<Record> {
        vec![batch(STREAM, 0, &[b"zero"]), gap(1, 4), batch(STREAM, 5, &[b"a", b"b"])]
    }

    fn open(path: &Path) -> (Journal, ParseSummary, Vec<Record>) {
        let naming = naming();
        let mut seen = Vec::new();
        let (journal, summary) = Journal::open(path, &StreamRules::new(STREAM, &naming), |entry| {
            if let Entry::Log(record) = entry {
                seen.push(record)
            }
        })
        .expect("opens");
        (journal, summary, seen)
    }

    fn read(path: &Path) -> Parsed {
        read_all(path, &StreamRules::new(STREAM, &naming())).expect("read")
    }

    /// What `fetch` learns from the local journal alone: the batch holding
    /// a position, "not in the archive" for a gap inside its log, and
    /// nothing for positions outside it (before its first record: it may
    /// have lost its first records; after its last: the archive may have
    /// more).
    #[test]
    fn lookup_tells_held_not_held_and_unknown() {
        let dir = temp_dir("lookup");
        let path = dir.join("manifest");
        let naming = naming();
        let rules = StreamRules::new(STREAM, &naming);
        assert_eq!(lookup(&path, &rules, 0).unwrap(), Lookup::Unknown, "no journal");
        let (mut journal, _, _) = open(&path);
        journal.append(&[gap(3, 4), batch(STREAM, 5, &[b"a", b"b"])]).unwrap();
        assert!(matches!(lookup(&path, &rules, 6).unwrap(), Lookup::Batch(r) if r.first() == 5));
        assert_eq!(lookup(&path, &rules, 4).unwrap(), Lookup::NotHeld);
        assert_eq!(lookup(&path, &rules, 2).unwrap(), Lookup::Unknown, "before the first record");
        assert_eq!(lookup(&path, &rules, 7).unwrap(), Lookup::Unknown, "after the last");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Below retention's mark the journal answers "pruned", naming the
    /// first segment it still holds, with no request; a batch reaching
    /// across the mark stays live for all its positions.
    #[test]
    fn lookup_below_the_prune_mark_names_the_oldest_segment_held() {
        let dir = temp_dir("lookup-pruned");
        let path = dir.join("manifest");
        let naming = naming();
        let rules = StreamRules::new(STREAM, &naming);
        let (mut journal, _, _) = open(&path);
        let batches = [
            batch(STREAM, 1, &[b"a", b"b"]),
            batch(STREAM, 3, &[b"c", b"d", b"e"]),
            batch(STREAM, 6, &[b"f"]),
        ];
        journal.append(&batches).unwrap();
        let deleted = vec![format!("{STREAM}/batches/0000000000000001-0000000000000002")];
        journal.append_entries(&[Entry::Prune(PruneRecord { sequence: 1, before: 4, deleted })]).unwrap();
        let pruned = Lookup::Pruned { before: 4, oldest: Some((3, "3".to_string())) };
        assert_eq!(lookup(&path, &rules, 1).unwrap(), pruned);
        assert!(
            matches!(lookup(&path, &rules, 3).unwrap(), Lookup::Batch(r) if r.first() == 3),
            "live batch"
        );
        assert!(matches!(lookup(&path, &rules, 6).unwrap(), Lookup::Batch(r) if r.first() == 6));
        assert_eq!(lookup(&path, &rules, 7).unwrap(), Lookup::Unknown, "after the last");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn new_journal_gets_a_header() {
        let path = temp_dir("new").join("manifest");
        let (journal, summary, seen) = open(&path);
        assert_eq!((summary.entries, journal.last(), seen.len()), (0, None, 0));
        assert_eq!(fs::read_to_string(&path).expect("read"), format::header());
    }

    #[test]
    fn append_then_reopen_sees_every_record() {
        let path = temp_dir("reopen").join("manifest");
        let (mut journal, _, _) = open(&path);
        journal.append(&records()[..2]).expect("append");
        journal.append(&records()[2..]).expect("append");
        assert_eq!(journal.last(), records().last());
        drop(journal);
        let (journal, summary, seen) = open(&path);
        assert_eq!(seen, records());
        assert_eq!((summary.entries, summary.dropped_torn_tail), (3, None));
        assert_eq!(journal.last(), records().last());
        assert_eq!(fs::read_to_string(&path).expect("read"), format::serialize_log(&records()));
        assert_eq!(read(&path).manifest.log, records());
        let summary = read_summary(&path, &StreamRules::new(STREAM, &naming())).expect("read");
        assert_eq!((summary.entries, summary.last), (3, records().last().cloned()));
    }

    #[test]
    fn torn_tail_is_cut_off_and_appends_continue_cleanly() {
        let path = temp_dir("torn").join("manifest");
        let (mut journal, _, _) = open(&path);
        journal.append(&records()[..2]).expect("append");
        drop(journal);
        let half_line = &entry_line(&Entry::Log(records()[2].clone()))[..30];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(half_line.as_bytes()))
            .expect("tear");
        assert_eq!(read(&path).dropped_torn_tail, Some(4));

        let (mut journal, summary, seen) = open(&path);
        assert_eq!((summary.dropped_torn_tail, seen), (Some(4), records()[..2].to_vec()));
        assert_eq!(fs::read_to_string(&path).expect("read"), format::serialize_log(&records()[..2]));
        journal.append(&records()[2..]).expect("append");
        drop(journal);
        let (_, summary, seen) = open(&path);
        assert_eq!((summary.dropped_torn_tail, seen), (None, records()));
    }

    #[test]
    fn torn_header_is_rewritten() {
        let path = temp_dir("torn-header").join("manifest");
        fs::write(&path, "walship-man").expect("write");
        let (mut journal, summary, _) = open(&path);
        assert_eq!(summary.dropped_torn_tail, Some(1));
        journal.append(&records()).expect("append");
        assert_eq!(fs::read_to_string(&path).expect("read"), format::serialize_log(&records()));
    }

    #[test]
    fn damage_before_the_last_line_is_an_error_and_the_file_is_kept() {
        let path = temp_dir("damaged").join("manifest");
        let mut text = format::serialize_log(&records());
        let start = format::header().len() + entry_line(&Entry::Log(records()[0].clone())).len() + 10;
        text.replace_range(start..start + 1, "#");
        fs::write(&path, &text).expect("write");
        let error = Journal::open(&path, &StreamRules::new(STREAM, &naming()), |_| {}).expect_err("damaged");
        assert!(error.to_string().starts_with(&format!("{}:3: record CRC32 mismatch", path.display())));
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
    }

    #[test]
    fn a_deleted_line_is_a_hole_naming_file_line_and_range() {
        let path = temp_dir("deleted-line").join("manifest");
        let text = format::serialize_log(&records());
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(2);
        fs::write(&path, lines.join("\n") + "\n").expect("write");
        let error = Journal::open(&path, &StreamRules::new(STREAM, &naming()), |_| {}).expect_err("hole");
        assert!(matches!(error, ManifestError::Hole { first: 1, last: 4, .. }), "{error}");
        assert!(error.to_string().starts_with(&format!("{}:3: positions 1..4 are missing", path.display())));
    }

    #[test]
    fn append_refuses_out_of_order_holes_and_invalid_records() {
        let path = temp_dir("order").join("manifest");
        let (mut journal, _, _) = open(&path);
        journal.append(&records()[..2]).expect("append");
        let before = fs::read_to_string(&path).expect("read");
        let error = journal.append(&[gap(3, 9)]).expect_err("overlaps");
        assert!(matches!(error, ManifestError::Refused { line: 4, .. }), "{error}");
        assert!(error.to_string().contains("gap 3..9 overlaps or comes before the previous gap 1..4"));
        let error = journal.append(&[gap(5, 6), gap(10, 11)]).expect_err("hole");
        assert!(matches!(error, ManifestError::Hole { first: 7, last: 9, .. }), "{error}");
        let foreign = batch("other", 5, &[b"x"]);
        let error = journal.append(&[foreign]).expect_err("foreign key");
        assert!(error.to_string().contains("is not this batch's object key"));
        let beyond = gap(5, crate::manifest::validate::MAX_POSITION + 1);
        let error = journal.append(&[beyond]).expect_err("beyond the limit");
        assert!(error.to_string().contains("beyond the limit 2^62"), "{error}");
        assert_eq!(fs::read_to_string(&path).expect("read"), before);
        assert_eq!(journal.last(), Some(&gap(1, 4)));
    }

    #[test]
    fn append_after_a_failed_append_drops_the_partial_line() {
        let path = temp_dir("failed-append").join("manifest");
        let (mut journal, _, _) = open(&path);
        journal.append(&records()[..1]).expect("append");
        // What a write cut short by ENOSPC leaves behind.
        (&journal.file).write_all(b"0badc0de gap first=1").expect("write");
        journal.unclean_tail = true;
        journal.append(&records()[1..]).expect("append");
        let (_, summary, seen) = open(&path);
        assert_eq!((summary.dropped_torn_tail, seen), (None, records()));
    }

    #[test]
    fn v1_journal_is_upgraded_without_loss_and_kept_aside() {
        let path = temp_dir("upgrade").join("manifest");
        let crc = crc32fast::hash(b"zero");
        let body = format!(
            "batch first=0 last=0 size=4 crc32={crc:08x} \
             key=sensors/batches/0000000000000000-0000000000000000 seg=0,0,0,4,{crc:08x}"
        );
        let v1 = format!(
            "walship-manifest v1\n{:08x} {body}\n{}",
            crc32fast::hash(body.as_bytes()),
            format::entry_line(&Entry::Log(gap(1, 4)))
        );
        fs::write(&path, &v1).expect("write");
        assert_eq!(read(&path).version, Some(Version::V1));
        let (mut journal, summary, seen) = open(&path);
        assert_eq!((summary.version, seen), (Some(Version::V2), records()[..2].to_vec()));
        assert_eq!(fs::read_to_string(v1_copy_path(&path)).expect("v1 kept"), v1);
        journal.append(&records()[2..]).expect("append");
        assert_eq!(fs::read_to_string(&path).expect("read"), format::serialize_log(&records()));
    }

    #[test]
    fn a_v1_journal_with_a_hole_is_not_upgraded() {
        let path = temp_dir("upgrade-hole").join("manifest");
        let v1 = format!(
            "walship-manifest v1\n{}{}",
            format::entry_line(&Entry::Log(gap(0, 1))),
            format::entry_line(&Entry::Log(gap(5, 6)))
        );
        fs::write(&path, &v1).expect("write");
        let error = Journal::open(&path, &StreamRules::new(STREAM, &naming()), |_| {}).expect_err("hole");
        assert!(matches!(error, ManifestError::Hole { first: 2, last: 4, .. }), "{error}");
        assert_eq!(fs::read_to_string(&path).expect("read"), v1);
        assert!(!v1_copy_path(&path).exists());
    }

    #[test]
    fn read_all_of_a_missing_file_is_empty() {
        let path = temp_dir("missing").join("manifest");
        assert_eq!(read(&path), Parsed::default());
        assert!(!path.exists());
    }

    #[test]
    fn batches_holding_finds_only_the_batches_that_hold_a_position() {
        let path = temp_dir("holding").join("manifest");
        let (mut journal, _, _) = open(&path);
        let mut all = records();
        all.push(batch(STREAM, 7, &[b"c", b"d", b"e"]));
        journal.append(&all).expect("append");
        let rules = StreamRules::new(STREAM, &journal.naming);
        let holding = |positions: &[u64]| batches_holding(&path, &rules, positions).expect("read");
        assert_eq!(holding(&[8, 0]), [all[0].clone(), all[3].clone()]);
        assert_eq!(holding(&[2, 3]), [], "a gap is not a batch");
        assert_eq!(holding(&[6, 9]), [all[2].clone(), all[3].clone()]);
        assert_eq!(holding(&[10]), []);
        assert_eq!(holding(&[]), []);
        let missing = temp_dir("holding-missing").join("manifest");
        assert_eq!(batches_holding(&missing, &rules, &[0]).expect("missing"), []);
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = temp_dir("io");
        let error =
            Journal::open(&dir, &StreamRules::new(STREAM, &naming()), |_| {}).expect_err("a directory");
        assert!(error.to_string().starts_with("cannot "), "{error}");
        assert!(error.to_string().contains(&dir.display().to_string()), "{error}");
    }
}
