//! The local journal: one append-only manifest file per stream.
//!
//! Opening reads and checks every record (streamed, never all in memory),
//! drops a torn final record with a warning and cuts the file back to its
//! last complete line, so later appends start on a clean line boundary.
//! Appending writes whole lines and fsyncs before returning: a stream may
//! advance its position only after [`Journal::append`] succeeded. If an
//! append fails midway, the next one first cuts the file back to the last
//! durable line, so a half-written line is never glued to a new one.
//!
//! One process appends to a journal at a time; this module takes no lock.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use super::format::{self, MAX_LINE, ParseSummary, Parsed, check_follows, record_line};
use super::{ManifestError, Record, validate_record};

/// An open journal, ready for appends.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    stream: String,
    /// Opened for reading and appending.
    file: File,
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
    /// fsync the file, fsync the directory). Every existing record is read,
    /// validated and passed to `visit` in order. A torn final record is
    /// dropped with a warning and the file is cut back to the end of the
    /// last good line (and fsync'd). Any other damage is an error and the
    /// file is left untouched.
    pub fn open(
        path: &Path,
        stream: &str,
        visit: impl FnMut(Record),
    ) -> Result<(Journal, ParseSummary), ManifestError> {
        let name = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error(&name, "open"))?;
        let summary = format::parse_each(BufReader::new(&file), &name, stream, visit)?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            stream: stream.to_string(),
            file,
            last: summary.last.clone(),
            durable_len: summary.valid_len,
            lines: 1 + summary.records,
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

    /// Append `records` and fsync before returning. Each must be valid for
    /// this stream and start after the previous one ends; otherwise nothing
    /// is written and the error is [`ManifestError::Refused`].
    pub fn append(&mut self, records: &[Record]) -> Result<(), ManifestError> {
        if records.is_empty() {
            return Ok(());
        }
        let text = self.lines_for(records)?;
        if self.unclean_tail {
            self.cut_to_durable_len()?;
        }
        self.unclean_tail = true;
        (&self.file).write_all(text.as_bytes()).map_err(self.io_error("append to"))?;
        self.file.sync_data().map_err(self.io_error("fsync"))?;
        self.unclean_tail = false;
        self.durable_len += text.len() as u64;
        self.lines += records.len();
        self.last = records.last().cloned();
        Ok(())
    }

    /// The last record in the journal.
    pub fn last(&self) -> Option<&Record> {
        self.last.as_ref()
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lines to append for `records`, after checking each one.
    fn lines_for(&self, records: &[Record]) -> Result<String, ManifestError> {
        let mut text = String::new();
        let mut previous = self.last.as_ref();
        for (record, line) in records.iter().zip(self.lines + 1..) {
            let refuse =
                |message| ManifestError::Refused { source: self.path.display().to_string(), line, message };
            validate_record(record, &self.stream).map_err(refuse)?;
            check_follows(previous, record).map_err(refuse)?;
            let record_text = record_line(record);
            if record_text.len() > MAX_LINE + 1 {
                return Err(refuse("the record's line would be longer than 8 MiB".into()));
            }
            text.push_str(&record_text);
            previous = Some(record);
        }
        Ok(text)
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
        sync_parent_dir(&self.path).map_err(self.io_error("fsync the directory of"))?;
        self.durable_len = format::header().len() as u64;
        self.lines = 1;
        Ok(())
    }

    fn io_error(&self, action: &'static str) -> impl FnOnce(io::Error) -> ManifestError + use<> {
        io_error(&self.path.display().to_string(), action)
    }
}

/// Read-only load of a whole journal (for list and restore). A missing file
/// is an empty manifest; a torn tail is reported, not repaired.
pub fn read_all(path: &Path, stream: &str) -> Result<Parsed, ManifestError> {
    let mut records = Vec::new();
    let summary = read_each(path, stream, |r| records.push(r))?;
    Ok(Parsed { records, dropped_torn_tail: summary.dropped_torn_tail })
}

/// Read-only check of a whole journal that keeps only its last record (for
/// status): memory stays flat however long the journal is.
pub fn read_summary(path: &Path, stream: &str) -> Result<ParseSummary, ManifestError> {
    read_each(path, stream, |_| {})
}

/// Read-only pass over every record; a missing file is an empty manifest.
fn read_each(path: &Path, stream: &str, visit: impl FnMut(Record)) -> Result<ParseSummary, ManifestError> {
    let name = path.display().to_string();
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(ParseSummary::default()),
        Err(error) => return Err(io_error(&name, "open")(error)),
    };
    format::parse_each(BufReader::new(file), &name, stream, visit)
}

fn io_error(path: &str, action: &'static str) -> impl FnOnce(io::Error) -> ManifestError + use<> {
    let path = path.to_string();
    move |error| ManifestError::Io { path, action, error }
}

/// Make a new directory entry durable.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::GapRecord;
    use crate::manifest::validate::tests::batch;
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
        vec![
            batch(STREAM, 0, &["seg 0"], &[b"zero"]),
            gap(1, 4),
            batch(STREAM, 5, &["5", "6"], &[b"a", b"b"]),
        ]
    }

    fn open(path: &Path) -> (Journal, ParseSummary, Vec<Record>) {
        let mut seen = Vec::new();
        let (journal, summary) = Journal::open(path, STREAM, |r| seen.push(r)).expect("opens");
        (journal, summary, seen)
    }

    #[test]
    fn new_journal_gets_a_header() {
        let path = temp_dir("new").join("manifest");
        let (journal, summary, seen) = open(&path);
        assert_eq!((summary.records, journal.last(), seen.len()), (0, None, 0));
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
        assert_eq!((summary.records, summary.dropped_torn_tail), (3, None));
        assert_eq!(journal.last(), records().last());
        assert_eq!(fs::read_to_string(&path).expect("read"), format::serialize(&records()));
        assert_eq!(read_all(&path, STREAM).expect("read").records, records());
        let summary = read_summary(&path, STREAM).expect("read");
        assert_eq!((summary.records, summary.last), (3, records().last().cloned()));
    }

    #[test]
    fn torn_tail_is_cut_off_and_appends_continue_cleanly() {
        let path = temp_dir("torn").join("manifest");
        let (mut journal, _, _) = open(&path);
        journal.append(&records()[..2]).expect("append");
        drop(journal);
        let half_line = &record_line(&records()[2])[..30];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(half_line.as_bytes()))
            .expect("tear");
        assert_eq!(read_all(&path, STREAM).expect("read").dropped_torn_tail, Some(4));

        let (mut journal, summary, seen) = open(&path);
        assert_eq!((summary.dropped_torn_tail, seen), (Some(4), records()[..2].to_vec()));
        assert_eq!(fs::read_to_string(&path).expect("read"), format::serialize(&records()[..2]));
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
        assert_eq!(fs::read_to_string(&path).expect("read"), format::serialize(&records()));
    }

    #[test]
    fn damage_before_the_last_line_is_an_error_and_the_file_is_kept() {
        let path = temp_dir("damaged").join("manifest");
        let mut text = format::serialize(&records());
        let start = format::header().len() + record_line(&records()[0]).len() + 10;
        text.replace_range(start..start + 1, "#");
        fs::write(&path, &text).expect("write");
        let error = Journal::open(&path, STREAM, |_| {}).expect_err("damaged");
        assert!(error.to_string().starts_with(&format!("{}:3: record CRC32 mismatch", path.display())));
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
    }

    #[test]
    fn append_refuses_out_of_order_or_invalid_records() {
        let path = temp_dir("order").join("manifest");
        let (mut journal, _, _) = open(&path);
        journal.append(&records()[..2]).expect("append");
        let before = fs::read_to_string(&path).expect("read");
        let error = journal.append(&[gap(3, 9)]).expect_err("overlaps");
        assert!(matches!(error, ManifestError::Refused { line: 4, .. }), "{error}");
        assert!(error.to_string().contains("gap 3..9 overlaps or comes before the previous gap 1..4"));
        let error = journal.append(&[gap(20, 30), gap(10, 11)]).expect_err("out of order");
        assert!(matches!(error, ManifestError::Refused { line: 5, .. }), "{error}");
        let foreign = batch("other", 5, &["x"], &[b"x"]);
        let error = journal.append(&[foreign]).expect_err("foreign key");
        assert!(error.to_string().contains("is not this batch's object key"));
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
    fn read_all_of_a_missing_file_is_empty() {
        let path = temp_dir("missing").join("manifest");
        assert_eq!(read_all(&path, STREAM).expect("empty"), Parsed::default());
        assert_eq!(read_summary(&path, STREAM).expect("empty"), ParseSummary::default());
        assert!(!path.exists());
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = temp_dir("io");
        let error = Journal::open(&dir, STREAM, |_| {}).expect_err("a directory");
        assert!(error.to_string().starts_with(&format!("cannot open {}: ", dir.display())), "{error}");
    }
}
