//! The manifest's text format: entries to text and back. Version 2 is
//! written; version 1 (the first release's) is still read.
//!
//! ```text
//! manifest  = header *line
//! header    = "walship-manifest v2" LF            ; first line, exactly
//! line      = crc SP body LF                      ; one entry per line
//! crc       = 8 lower-case hex digits             ; CRC32 (IEEE) of body's bytes
//! body      = batch / gap / snapshot / prune
//! batch     = "batch" SP "first=" dec SP "last=" dec SP "size=" dec
//!             SP "crc32=" crc SP "key=" text SP stored 1*(SP "seg=" segment)
//! segment   = dec "," name "," dec "," crc "," dec "," dec
//!                           ; position,name,length,crc32,stored offset,stored length
//! gap       = "gap" SP "first=" dec SP "last=" dec SP "reason=" text
//! snapshot  = "snapshot" SP "position=" dec SP "size=" dec SP "crc32=" crc
//!             SP "key=" text SP stored
//! prune     = "prune" SP "seq=" dec SP "before=" dec *(SP "delete=" text)
//! stored    = "encoding=" ("identity" / "zstd-frames") SP "stored_size=" dec
//!             SP "stored_crc32=" crc              ; the object as stored
//! dec       = "0" / %x31-39 *DIGIT                ; no sign, no leading zeros
//! text      = *(plain / "/" / escape)             ; object key, gap reason
//! name      = *(plain / escape)                   ; segment file name ('/' escaped)
//! plain     = ALPHA / DIGIT / "." / "_" / "~" / "-"
//! escape    = "%" 2(DIGIT / %x41-46)              ; upper-case hex, only for bytes
//!                                                 ; that are not written plain
//! ```
//!
//! `size` and `crc32` (and each segment's length and CRC32) are the logical
//! bytes: what restore writes. `stored` and each segment's stored offset and
//! length are the bytes in the object: with `identity` they are the same.
//! The named fields of a record may come in any order but each only once;
//! `seg` and `delete` fields repeat, in order. [`serialize_entry`] writes
//! the order shown. Every spelling is canonical (one encoding per value), so
//! a parsed manifest serializes back to the same text.
//!
//! Version 1 (header `walship-manifest v1`) has only `batch` and `gap`; its
//! batch has no `stored` fields and its segments are
//! `position,name,offset,length,crc32` of an identity-encoded object. It is
//! read into the same values, so a v1 manifest written again as v2 loses
//! nothing.
//!
//! Each entry is checked by [`validate_entry`] and its place by
//! [`Sequences`]: the log contiguous (a hole is [`ManifestError::Hole`]
//! naming the file and line), snapshots and prunes each in their order.
//!
//! A torn tail: the last line of the input may be cut short by power loss.
//! A final line with no '\n', or whose CRC32 or structure is wrong, is
//! dropped and reported in `dropped_torn_tail` (so is a cut-short header).
//! A final line whose CRC32 matches but whose content is invalid is not torn
//! and is an error, like any damage before the last line.
//!
//! Parsing never panics and never holds more than one line (at most
//! [`MAX_LINE`] bytes) plus the entries it returns. A new format version
//! gets a new header; this code refuses any header but v1's and v2's.

use std::io::{self, BufRead, Read};

use super::fields::{parse_body, parse_crc};
use super::sequence::{Refusal, Sequences};
use super::{Entry, Manifest, ManifestError, Record, StreamRules, percent, shown, validate_entry};

/// First line of every manifest written, '\n' included.
const HEADER: &str = "walship-manifest v2\n";
/// First line of a manifest written by the first release.
const HEADER_V1: &str = "walship-manifest v1\n";
/// What a header with some other version starts with.
const HEADER_PREFIX: &[u8] = b"walship-manifest ";
/// Longest line accepted, '\n' excluded (8 MiB).
pub const MAX_LINE: usize = 8 << 20;

/// A format version this walship reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A whole parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub manifest: Manifest,
    /// 1-based line number of a torn final line that was dropped.
    pub dropped_torn_tail: Option<usize>,
    /// The version its header names (`None` for an empty input).
    pub version: Option<Version>,
}

/// What [`parse_each`] saw, besides the entries it handed out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParseSummary {
    /// How many entries were read.
    pub entries: usize,
    /// Where each sequence ends.
    pub ends: Sequences,
    /// The last log record read.
    pub last: Option<Record>,
    /// 1-based line number of a torn final line that was dropped.
    pub dropped_torn_tail: Option<usize>,
    /// Bytes from the start of the input to the end of the last good line
    /// (header included): where a journal is cut back to after a torn tail.
    pub valid_len: u64,
    /// The version its header names (`None` for an empty or torn header).
    pub version: Option<Version>,
}

/// The header line written, '\n' included.
pub fn header() -> &'static str {
    HEADER
}

/// An entry's body: the line without its CRC32 and '\n'.
pub fn serialize_entry(entry: &Entry) -> String {
    match entry {
        Entry::Log(Record::Batch(batch)) => {
            let mut body = format!(
                "batch first={} last={} size={} crc32={:08x} key={} {}",
                batch.first,
                batch.last,
                batch.size,
                batch.crc32,
                percent::encode(&batch.key, true),
                stored(&batch.stored)
            );
            for segment in &batch.segments {
                body.push_str(&format!(
                    " seg={},{},{},{:08x},{},{}",
                    segment.position,
                    percent::encode(&segment.name, false),
                    segment.len,
                    segment.crc32,
                    segment.offset,
                    segment.stored_len
                ));
            }
            body
        }
        Entry::Log(Record::Gap(gap)) => {
            format!("gap first={} last={} reason={}", gap.first, gap.last, percent::encode(&gap.reason, true))
        }
        Entry::Snapshot(snapshot) => format!(
            "snapshot position={} size={} crc32={:08x} key={} {}",
            snapshot.position,
            snapshot.size,
            snapshot.crc32,
            percent::encode(&snapshot.key, true),
            stored(&snapshot.stored)
        ),
        Entry::Prune(prune) => {
            let mut body = format!("prune seq={} before={}", prune.sequence, prune.before);
            for key in &prune.deleted {
                body.push_str(" delete=");
                body.push_str(&percent::encode(key, true));
            }
            body
        }
    }
}

fn stored(stored: &super::StoredObject) -> String {
    format!(
        "encoding={} stored_size={} stored_crc32={:08x}",
        stored.encoding.as_str(),
        stored.size,
        stored.crc32
    )
}

/// An entry's whole line: CRC32 of the body, space, body, '\n'.
pub fn entry_line(entry: &Entry) -> String {
    let body = serialize_entry(entry);
    format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
}

/// A whole manifest: header, then one line per entry.
pub fn serialize<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> String {
    let mut text = String::from(header());
    for entry in entries {
        text.push_str(&entry_line(entry));
    }
    text
}

/// A whole manifest of the log records `records`.
pub fn serialize_log(records: &[Record]) -> String {
    let entries: Vec<Entry> = records.iter().cloned().map(Entry::Log).collect();
    serialize(&entries)
}

/// Parse and validate one entry body written in `version`'s grammar; the
/// error says what is wrong with it.
pub fn parse_entry(body: &str, version: Version, rules: &StreamRules<'_>) -> Result<Entry, String> {
    let entry = parse_body(body, version)?;
    validate_entry(&entry, rules)?;
    Ok(entry)
}

/// Parse a whole manifest held in memory; see [`parse_each`].
pub fn parse(text: &[u8], source: &str, rules: &StreamRules<'_>) -> Result<Parsed, ManifestError> {
    let mut manifest = Manifest::default();
    let summary = parse_each(text, source, rules, |entry| manifest.push(entry))?;
    Ok(Parsed { manifest, dropped_torn_tail: summary.dropped_torn_tail, version: summary.version })
}

/// Parse a record object of the remote archive, which is written whole:
/// a torn final line there is damage, not an interrupted append.
pub fn parse_object(text: &[u8], source: &str, rules: &StreamRules<'_>) -> Result<Manifest, ManifestError> {
    let parsed = parse(text, source, rules)?;
    match parsed.dropped_torn_tail {
        Some(line) => Err(ManifestError::Damaged {
            source: source.to_string(),
            line,
            message: "incomplete or corrupt final line in an object that is written whole".into(),
        }),
        None => Ok(parsed.manifest),
    }
}

/// Parse a manifest from `reader`, handing each entry to `visit` without
/// keeping them: each sequence's entries in their order (the newest log
/// record last, after the entries of the other sequences that followed
/// it). `source` names the input in errors; `rules` say what the stream's
/// own keys and names are. On error, `visit` may already have seen some
/// entries: the caller must discard what it built.
pub fn parse_each<R: BufRead>(
    reader: R,
    source: &str,
    rules: &StreamRules<'_>,
    mut visit: impl FnMut(Entry),
) -> Result<ParseSummary, ManifestError> {
    let mut entries = EntryReader::new(reader, source, rules)?;
    let mut last: Option<Record> = None;
    while let Some(entry) = entries.next_entry()? {
        match entry {
            // Hand out the previous log record and keep this one: no clone.
            Entry::Log(record) => {
                if let Some(previous) = last.replace(record) {
                    visit(Entry::Log(previous));
                }
            }
            other => visit(other),
        }
    }
    if let Some(last) = &last {
        visit(Entry::Log(last.clone()));
    }
    Ok(ParseSummary {
        entries: entries.entries,
        ends: entries.ends,
        last,
        dropped_torn_tail: entries.dropped_torn_tail,
        valid_len: entries.lines.offset_of_valid,
        version: entries.version,
    })
}

/// A manifest read one entry at a time, each checked as [`parse_each`]
/// checks it (CRC32, validation, its place after the ones before): what
/// commands that stream a journal use, holding one line at a time.
pub struct EntryReader<'s, R> {
    lines: Lines<'s, R>,
    rules: StreamRules<'s>,
    /// `None` once the input ended (or its header was torn).
    version: Option<Version>,
    reading: bool,
    ends: Sequences,
    entries: usize,
    dropped_torn_tail: Option<usize>,
}

impl<'s, R: BufRead> EntryReader<'s, R> {
    /// Read the header of `reader`; an empty input or a torn header reads
    /// as no entries.
    pub fn new(reader: R, source: &'s str, rules: &StreamRules<'s>) -> Result<Self, ManifestError> {
        let mut entries = EntryReader {
            lines: Lines { reader, source, buf: Vec::new(), number: 0, offset: 0, offset_of_valid: 0 },
            rules: *rules,
            version: None,
            reading: false,
            ends: Sequences::default(),
            entries: 0,
            dropped_torn_tail: None,
        };
        if let Some(line) = entries.lines.next()? {
            match read_header(&line, source)? {
                Some(version) => {
                    let end = line.end;
                    entries.version = Some(version);
                    entries.reading = true;
                    entries.lines.offset_of_valid = end;
                }
                None => entries.dropped_torn_tail = Some(line.number),
            }
        }
        Ok(entries)
    }

    /// Read v2 entry lines of a journal from byte `offset` on, `reader`
    /// being positioned there (a line boundary a previous reader reported
    /// with [`EntryReader::valid_len`]). Order is checked from there on only.
    pub fn resuming(reader: R, source: &'s str, rules: &StreamRules<'s>, offset: u64) -> Self {
        EntryReader {
            lines: Lines { reader, source, buf: Vec::new(), number: 0, offset, offset_of_valid: offset },
            rules: *rules,
            version: Some(Version::V2),
            reading: true,
            ends: Sequences::default(),
            entries: 0,
            dropped_torn_tail: None,
        }
    }

    /// The next entry, or `None` at the end (a torn final line is dropped
    /// and noted in [`EntryReader::dropped_torn_tail`]).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ManifestError> {
        let Some(version) = self.version.filter(|_| self.reading) else { return Ok(None) };
        let source = self.lines.source;
        let Some(line) = self.lines.next()? else {
            self.reading = false;
            return Ok(None);
        };
        // A line without '\n' is the final one, cut short: torn whatever it holds.
        let parsed = if line.complete {
            read_entry_line(&line, version, &self.rules)
        } else {
            Err(LineError::Damaged("no '\\n' at the end".into()))
        };
        let entry = match parsed {
            Ok(entry) => entry,
            Err(LineError::Damaged(_)) if line.is_final => {
                self.dropped_torn_tail = Some(line.number);
                self.reading = false;
                return Ok(None);
            }
            Err(error) => return Err(error.at(source, line.number)),
        };
        let (number, end) = (line.number, line.end);
        self.ends.admit(&entry).map_err(|refusal| refused_at(refusal, source, number))?;
        self.entries += 1;
        self.lines.offset_of_valid = end;
        Ok(Some(entry))
    }

    /// Bytes from the input's start to the end of the last entry read.
    pub fn valid_len(&self) -> u64 {
        self.lines.offset_of_valid
    }

    /// Where each sequence ends, after the entries read so far.
    pub fn ends(&self) -> &Sequences {
        &self.ends
    }

    /// 1-based line number of a torn final line that was dropped.
    pub fn dropped_torn_tail(&self) -> Option<usize> {
        self.dropped_torn_tail
    }
}

/// The error for an entry [`Sequences`] refused at `source:line`.
pub(crate) fn refused_at(refusal: Refusal, source: &str, line: usize) -> ManifestError {
    match refusal {
        Refusal::Hole { first, last } => {
            ManifestError::Hole { location: format!("{source}:{line}"), first, last }
        }
        Refusal::Invalid(message) => LineError::Invalid(message).at(source, line),
    }
}

/// One input line, without its '\n'.
struct Line<'a> {
    bytes: &'a [u8],
    /// 1-based.
    number: usize,
    /// Ended by '\n'.
    complete: bool,
    /// Nothing follows it.
    is_final: bool,
    /// Byte offset just past it ('\n' included).
    end: u64,
}

/// Reads lines of at most [`MAX_LINE`] bytes, reusing one buffer.
struct Lines<'s, R> {
    reader: R,
    source: &'s str,
    buf: Vec<u8>,
    number: usize,
    offset: u64,
    /// Just past the last line that was good (header or entry).
    offset_of_valid: u64,
}

impl<R: BufRead> Lines<'_, R> {
    fn next(&mut self) -> Result<Option<Line<'_>>, ManifestError> {
        self.buf.clear();
        let limit = MAX_LINE as u64 + 1;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|error| self.io_error(error))?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.offset += read as u64;
        let complete = self.buf.last() == Some(&b'\n');
        if complete {
            self.buf.pop();
        } else if self.buf.len() > MAX_LINE {
            return Err(LineError::Damaged("line is longer than 8 MiB".into()).at(self.source, self.number));
        }
        let is_final = !complete || self.at_end()?;
        let (bytes, number, end) = (self.buf.as_slice(), self.number, self.offset);
        Ok(Some(Line { bytes, number, complete, is_final, end }))
    }

    fn at_end(&mut self) -> Result<bool, ManifestError> {
        match self.reader.fill_buf() {
            Ok(rest) => Ok(rest.is_empty()),
            Err(error) => Err(self.io_error(error)),
        }
    }

    fn io_error(&self, error: io::Error) -> ManifestError {
        ManifestError::Io { path: self.source.to_string(), action: "read", error }
    }
}

/// Check the first line: a header this walship reads (its version), a
/// cut-short one (`None`), or an error.
fn read_header(line: &Line<'_>, source: &str) -> Result<Option<Version>, ManifestError> {
    for (header, version) in [(HEADER, Version::V2), (HEADER_V1, Version::V1)] {
        if line.complete && line.bytes == header.trim_end_matches('\n').as_bytes() {
            return Ok(Some(version));
        }
    }
    let without_nuls = line.bytes.iter().rposition(|&byte| byte != 0).map_or(0, |i| i + 1);
    let cut_short = [HEADER, HEADER_V1].iter().any(|h| h.as_bytes().starts_with(&line.bytes[..without_nuls]));
    if !line.complete && cut_short {
        return Ok(None);
    }
    if let Some(version) = line.bytes.strip_prefix(HEADER_PREFIX) {
        let found = shown(&String::from_utf8_lossy(version));
        return Err(ManifestError::UnsupportedVersion { source: source.to_string(), found });
    }
    let expected = HEADER.trim_end_matches('\n');
    Err(LineError::Damaged(format!("not a walship manifest (the first line must be `{expected}`)"))
        .at(source, 1))
}

/// What is wrong with one record line, before it is placed in a file.
enum LineError {
    /// Broken CRC32 or structure: what a torn write leaves.
    Damaged(String),
    /// Intact but unacceptable content.
    Invalid(String),
}

impl LineError {
    fn at(self, source: &str, line: usize) -> ManifestError {
        let source = source.to_string();
        match self {
            LineError::Damaged(message) => ManifestError::Damaged { source, line, message },
            LineError::Invalid(message) => ManifestError::Invalid { source, line, message },
        }
    }
}

/// Check a line's CRC32, then parse and validate its body.
fn read_entry_line(line: &Line<'_>, version: Version, rules: &StreamRules<'_>) -> Result<Entry, LineError> {
    let (stored, body) = match (line.bytes.get(..8), line.bytes.get(8), line.bytes.get(9..)) {
        (Some(digits), Some(b' '), Some(body)) => (parse_crc(digits), body),
        _ => (None, line.bytes),
    };
    let Some(stored) = stored else {
        return Err(LineError::Damaged("line does not start with an 8-digit CRC32 and a space".into()));
    };
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(LineError::Damaged(format!(
            "record CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"
        )));
    }
    let body =
        std::str::from_utf8(body).map_err(|_| LineError::Invalid("record is not valid UTF-8".into()))?;
    parse_entry(body, version, rules).map_err(LineError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::validate::tests::{batch, batch_mut, naming};
    use crate::manifest::{Encoding, GapRecord, PruneRecord, SnapshotRecord, StoredObject};
    use crate::naming::Naming;
    use crate::target::keys;

    const STREAM: &str = "sensors";
    const SOURCE: &str = "/var/lib/walship/sensors/manifest";

    fn gap(first: u64, last: u64, reason: &str) -> Record {
        Record::Gap(GapRecord { first, last, reason: reason.into() })
    }

    /// A naming whose names need percent-escapes.
    fn odd_naming() -> Naming {
        Naming::from_pattern("a b,c=d%e {seq} zürich ✓").expect("pattern")
    }

    fn snapshot(position: u64) -> SnapshotRecord {
        let crc32 = crc32fast::hash(b"image");
        let stored = StoredObject { size: 9, crc32: 0xabcdef01, encoding: Encoding::ZstdFrames };
        SnapshotRecord { position, key: keys::snapshot_key(STREAM, position), size: 5, crc32, stored }
    }

    /// A batch with names under [`odd_naming`].
    fn odd_batch(first: u64, contents: &[&[u8]]) -> Record {
        let mut odd = batch(STREAM, first, contents);
        for segment in &mut batch_mut(&mut odd).segments {
            segment.name = format!("a b,c=d%e {} zürich ✓", segment.position);
        }
        odd
    }

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Log(odd_batch(0, &[b"hello"])),
            Entry::Snapshot(snapshot(0)),
            Entry::Log(gap(1, 2, "segment removed before archiving")),
            Entry::Log(odd_batch(3, &[b"abc", b""])),
            Entry::Prune(PruneRecord {
                sequence: 1,
                before: 1,
                deleted: vec![keys::batch_key(STREAM, 0, 0), keys::snapshot_key(STREAM, 0)],
            }),
        ]
    }

    /// The sample as a manifest value (each sequence in order).
    fn sample_manifest() -> Manifest {
        let mut manifest = Manifest::default();
        sample().into_iter().for_each(|entry| manifest.push(entry));
        manifest
    }

    /// A line with a correct CRC32 around an arbitrary body.
    fn line(body: &str) -> String {
        format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
    }

    fn manifest(bodies: &[&str]) -> String {
        let lines: String = bodies.iter().map(|body| line(body)).collect();
        format!("{}{lines}", header())
    }

    fn parse_with(text: &str, naming: &Naming) -> Result<Parsed, ManifestError> {
        parse(text.as_bytes(), SOURCE, &StreamRules::new(STREAM, naming))
    }

    fn parse_text(text: &str) -> Result<Parsed, ManifestError> {
        let naming = if text.contains("z%C3%BCrich") { odd_naming() } else { naming() };
        parse_with(text, &naming)
    }

    fn expect_error(text: &str, needle: &str) -> ManifestError {
        let error = parse_text(text).expect_err("must be refused");
        let message = error.to_string();
        assert!(message.contains(needle), "`{message}` should contain `{needle}`");
        error
    }

    const GOLDEN: &str = "walship-manifest v2
15892ba9 batch first=0 last=0 size=5 crc32=3610a686 \
key=sensors/batches/0000000000000000-0000000000000000 encoding=identity stored_size=5 \
stored_crc32=3610a686 seg=0,a%20b%2Cc%3Dd%25e%200%20z%C3%BCrich%20%E2%9C%93,5,3610a686,0,5
98869c31 snapshot position=0 size=5 crc32=c53d045f key=sensors/snapshots/0000000000000000 \
encoding=zstd-frames stored_size=9 stored_crc32=abcdef01
edd53f58 gap first=1 last=2 reason=segment%20removed%20before%20archiving
14b0d853 batch first=3 last=4 size=3 crc32=352441c2 \
key=sensors/batches/0000000000000003-0000000000000004 encoding=identity stored_size=3 \
stored_crc32=352441c2 seg=3,a%20b%2Cc%3Dd%25e%203%20z%C3%BCrich%20%E2%9C%93,3,352441c2,0,3 \
seg=4,a%20b%2Cc%3Dd%25e%204%20z%C3%BCrich%20%E2%9C%93,0,00000000,3,0
f7fd5b50 prune seq=1 before=1 delete=sensors/batches/0000000000000000-0000000000000000 \
delete=sensors/snapshots/0000000000000000
";

    #[test]
    fn golden_text() {
        let text = serialize(&sample());
        assert_eq!(text, GOLDEN, "format changed: update GOLDEN only on purpose");
    }

    #[test]
    fn round_trip_every_kind() {
        let text = serialize(&sample());
        let parsed = parse_with(&text, &odd_naming()).expect("parses");
        assert_eq!(parsed.manifest, sample_manifest());
        assert_eq!((parsed.dropped_torn_tail, parsed.version), (None, Some(Version::V2)));
    }

    #[test]
    fn v1_text_reads_into_the_same_values() {
        let v1 = "walship-manifest v1
338e6c41 batch first=0 last=0 size=5 crc32=3610a686 \
key=sensors/batches/0000000000000000-0000000000000000 seg=0,data-0.log,0,5,3610a686
edd53f58 gap first=1 last=2 reason=segment%20removed%20before%20archiving
";
        let naming = Naming::from_pattern("data-{seq}.log").expect("pattern");
        let parsed = parse_with(v1, &naming).expect("v1 parses");
        assert_eq!(parsed.version, Some(Version::V1));
        let mut first = batch(STREAM, 0, &[b"hello"]);
        batch_mut(&mut first).segments[0].name = "data-0.log".into();
        let expected = vec![first, gap(1, 2, "segment removed before archiving")];
        assert_eq!(parsed.manifest.log, expected);
        let v2 = serialize_log(&parsed.manifest.log);
        assert_eq!(parse_with(&v2, &naming).expect("v2 parses").manifest, parsed.manifest);
        for body in ["snapshot position=0", "prune seq=1 before=0"] {
            let text = format!("walship-manifest v1\n{}", line(body));
            let error = parse_with(&text, &naming).expect_err("not in v1");
            assert!(error.to_string().contains("manifest v1 knows batch and gap"), "{error}");
        }
    }

    #[test]
    fn empty_input_and_lone_header_are_empty_manifests() {
        assert_eq!(parse_text("").expect("parses"), Parsed::default());
        let parsed = parse_text(header()).expect("parses");
        assert_eq!((parsed.manifest.is_empty(), parsed.version), (true, Some(Version::V2)));
    }

    #[test]
    fn parse_each_reports_ends_and_valid_length() {
        let text = serialize(&sample());
        let mut seen = Manifest::default();
        let naming = odd_naming();
        let rules = StreamRules::new(STREAM, &naming);
        let summary = parse_each(text.as_bytes(), SOURCE, &rules, |e| seen.push(e)).expect("ok");
        assert_eq!(seen, sample_manifest());
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.last, sample_manifest().log.pop());
        assert_eq!(summary.ends.log_end(), Some(4));
        assert_eq!((summary.ends.last_snapshot, summary.ends.pruned_before()), (Some(0), Some(1)));
        assert_eq!(summary.valid_len, text.len() as u64);
    }

    #[test]
    fn torn_tails_are_dropped() {
        let entries = sample();
        let good = serialize(&entries[..3]);
        let last = entry_line(&entries[3]);
        let without_newline = &last[..last.len() - 1];
        let mut bad_crc = last.clone();
        bad_crc.replace_range(0..1, if bad_crc.starts_with('0') { "1" } else { "0" });
        for tail in [
            without_newline.to_string(),
            last[..20].to_string(),
            bad_crc,
            "\0\0\0\0".to_string(),
            format!("{without_newline}\0\0\0"),
            "12ab".to_string(),
            "\n".to_string(),
        ] {
            let parsed =
                parse_with(&format!("{good}{tail}"), &odd_naming()).expect("torn tail is not an error");
            assert_eq!(parsed.manifest.log.len(), 2, "tail {tail:?}");
            assert_eq!(parsed.dropped_torn_tail, Some(5), "tail {tail:?}");
        }
    }

    #[test]
    fn torn_header_is_dropped() {
        for text in ["walship-man", "walship-manifest v2", "walship-manifest v1", "w", "walship\0\0", "\0\0"]
        {
            let parsed = parse_text(text).expect("torn header is not an error");
            assert_eq!(parsed, Parsed { dropped_torn_tail: Some(1), ..Parsed::default() });
        }
    }

    #[test]
    fn damaged_middle_record_names_the_line() {
        let mut text = serialize(&sample());
        let start = header().len() + entry_line(&sample()[0]).len();
        text.replace_range(start..start + 1, "f");
        let error = expect_error(&text, &format!("{SOURCE}:3: record CRC32 mismatch (stored f"));
        assert!(matches!(error, ManifestError::Damaged { line: 3, .. }));
        assert!(error.to_string().contains("moving it aside"));
    }

    #[test]
    fn invalid_final_line_with_good_crc_is_an_error_not_a_torn_tail() {
        let text = manifest(&["gap first=5 last=4 reason=x"]);
        let error = expect_error(&text, ":2: invalid record: first position 5 is after last");
        assert!(matches!(error, ManifestError::Invalid { line: 2, .. }));
    }

    #[test]
    fn unknown_version_and_foreign_files_are_refused() {
        let error = expect_error("walship-manifest v3\n", "version `v3`: this walship reads v1 and v2");
        assert!(matches!(error, ManifestError::UnsupportedVersion { .. }));
        expect_error("walship-manifest v9", "upgrade walship");
        expect_error("hello world\n", ":1: not a walship manifest");
        expect_error("walship-manifest v2\r\n", "version `v2\\r`");
    }

    #[test]
    fn a_missing_range_is_a_hole_naming_file_and_line() {
        let text = manifest(&["gap first=0 last=3 reason=a", "gap first=7 last=9 reason=b"]);
        let error = expect_error(&text, &format!("{SOURCE}:3: positions 4..6 are missing"));
        assert!(matches!(error, ManifestError::Hole { first: 4, last: 6, .. }));
    }

    #[test]
    fn hostile_keys_are_refused() {
        let record = |key: &str| {
            format!(
                "batch first=0 last=0 size=0 crc32=00000000 key={key} encoding=identity stored_size=0 \
                 stored_crc32=00000000 seg=0,0,0,00000000,0,0"
            )
        };
        for key in [
            "sensors/batches/../../../etc/passwd",
            "/etc/passwd",
            "sensors/batches/0000000000000000-0000000000000000%00",
            "other/batches/0000000000000000-0000000000000000",
            "sensors/batches/0000000000000000-0000000000000001",
        ] {
            expect_error(&manifest(&[&record(key)]), "is not this batch's object key");
        }
        assert!(
            parse_text(&manifest(&[&record("sensors/batches/0000000000000000-0000000000000000")])).is_ok()
        );
    }

    #[test]
    fn overlapping_and_out_of_order_entries_are_refused() {
        let overlapping = manifest(&["gap first=0 last=5 reason=a", "gap first=5 last=9 reason=b"]);
        expect_error(&overlapping, ":3: invalid record: gap 5..9 overlaps or comes before");
        let backwards = manifest(&["gap first=10 last=12 reason=a", "gap first=0 last=3 reason=b"]);
        expect_error(&backwards, "overlaps or comes before the previous gap 10..12");
        let prunes = manifest(&["prune seq=2 before=0", "prune seq=1 before=0"]);
        expect_error(&prunes, ":3: invalid record: prune 1 does not come after prune 2");
    }

    #[test]
    fn absurd_numbers_are_refused() {
        expect_error(&manifest(&["gap first=0 last=4611686018427387905 reason=a"]), "2^62");
        expect_error(&manifest(&["gap first=0 last=99999999999999999999 reason=a"]), "64 bits");
        for bad in ["+5", "05", "-1", "0x1", "", "1e3"] {
            let body = format!("gap first={bad} last=7 reason=a");
            expect_error(&manifest(&[&body]), "field `first` must be a decimal number");
        }
    }

    #[test]
    fn huge_repeats_are_refused_early() {
        let segs = " seg=0,0,0,00000000,0,0".repeat(super::super::validate::MAX_SEGMENTS + 1);
        let body = format!("batch first=0 last=0 size=0 crc32=00000000 key=k{segs}");
        expect_error(&manifest(&[&body]), "more than 100000 `seg` fields in one record");
    }

    #[test]
    fn overlong_line_is_refused() {
        let text = format!("{}{}\n", header(), "x".repeat(MAX_LINE + 1));
        expect_error(&text, ":2: line is longer than 8 MiB");
    }

    #[test]
    fn malformed_fields_are_refused() {
        let head = "batch first=0 last=0 size=0 crc32=00000000 \
                    key=sensors/batches/0000000000000000-0000000000000000";
        let stored = "encoding=identity stored_size=0 stored_crc32=00000000";
        let seg = "seg=0,0,0,00000000,0,0";
        for (body, needle) in [
            ("checkpoint first=0 last=0".to_string(), "unknown record kind `checkpoint`"),
            ("gap first=0 last=0 reason=a first=0".into(), "duplicate field `first`"),
            ("gap first=0 last=0 reason=a colour=red".into(), "unknown field `colour`"),
            ("gap first=0 last=0".into(), "missing field `reason`"),
            ("gap first=0 last=0  reason=a".into(), "empty field"),
            ("gap first=0 last=0 reason".into(), "field `reason` has no `=`"),
            ("gap first=0 last=0 reason=a\tb".into(), "outside printable ASCII"),
            ("gap first=0 last=0 reason=a,b".into(), "must be percent-encoded"),
            (format!("{head} {stored}"), "missing field `seg`"),
            (format!("{head} {seg}"), "missing field `encoding`"),
            (format!("{head} {} {seg}", stored.replace("identity", "gzip")), "unknown encoding `gzip`"),
            (format!("{head} {stored} seg=0,0,0,00000000,0"), "POSITION,NAME,LENGTH,CRC32,STORED_OFFSET"),
            (format!("{head} {stored} seg=0,a/b,0,00000000,0,0"), "seg name"),
            ("snapshot position=0 size=0".into(), "missing field `key`"),
            ("prune seq=1".into(), "missing field `before`"),
            ("prune seq=1 before=0 delete=a,b".into(), "must be percent-encoded"),
        ] {
            expect_error(&manifest(&[&body]), needle);
        }
    }

    #[test]
    fn segment_names_must_be_the_stream_own() {
        let body = "batch first=0 last=0 size=0 crc32=00000000 \
                    key=sensors/batches/0000000000000000-0000000000000000 encoding=identity \
                    stored_size=0 stored_crc32=00000000 seg=0,passwd,0,00000000,0,0";
        expect_error(&manifest(&[body]), "segment 0: segment name `passwd` is not a segment name");
        let twice = manifest(&[
            &body.replace("passwd", "0"),
            &body
                .replace("passwd", "0")
                .replace("0000000000000000-0000000000000000", "0000000000000001-0000000000000001")
                .replace("first=0 last=0", "first=1 last=1")
                .replace("seg=0,", "seg=1,"),
        ]);
        expect_error(&twice, "segment 1: segment name `0` stands for position 0");
    }

    #[test]
    fn object_parse_treats_torn_tail_as_damage() {
        let text = serialize(&sample());
        let naming = odd_naming();
        let rules = StreamRules::new(STREAM, &naming);
        assert_eq!(parse_object(text.as_bytes(), "k", &rules).expect("ok"), sample_manifest());
        let cut = &text.as_bytes()[..text.len() - 1];
        let error = parse_object(cut, "k", &rules).expect_err("damaged");
        assert!(matches!(error, ManifestError::Damaged { line: 6, .. }));
    }

    #[test]
    fn largest_batch_round_trips() {
        let max = super::super::validate::MAX_SEGMENTS;
        let contents = vec![b"0123456789".as_slice(); max];
        let record = batch(STREAM, 1, &contents);
        let text = serialize_log(std::slice::from_ref(&record));
        assert!(text.len() < MAX_LINE);
        assert_eq!(parse_text(&text).expect("parses").manifest.log, vec![record]);
    }
}
