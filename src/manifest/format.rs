//! The manifest's text format, version 1: records to text and back.
//!
//! ```text
//! manifest  = header *line
//! header    = "walship-manifest v1" LF            ; first line, exactly
//! line      = crc SP body LF                      ; one record per line
//! crc       = 8 lower-case hex digits             ; CRC32 (IEEE) of body's bytes
//! body      = batch / gap
//! batch     = "batch" SP "first=" dec SP "last=" dec SP "size=" dec
//!             SP "crc32=" crc SP "key=" text 1*(SP "seg=" segment)
//! segment   = dec "," name "," dec "," dec "," crc ; position,name,offset,length,crc32
//! gap       = "gap" SP "first=" dec SP "last=" dec SP "reason=" text
//! dec       = "0" / %x31-39 *DIGIT                ; no sign, no leading zeros
//! text      = *(plain / "/" / escape)             ; object key, gap reason
//! name      = *(plain / escape)                   ; segment file name ('/' escaped)
//! plain     = ALPHA / DIGIT / "." / "_" / "~" / "-"
//! escape    = "%" 2(DIGIT / %x41-46)              ; upper-case hex, only for bytes
//!                                                 ; that are not written plain
//! ```
//!
//! The named fields of a record may come in any order but each only once;
//! `seg` fields repeat, in position order. [`serialize_record`] writes the
//! order shown. Every spelling is canonical (one encoding per value), so a
//! parsed manifest serializes back to the same text.
//!
//! Each record is checked by [`validate_record`] (its key is exactly the
//! stream's own batch key, its segments add up to its size and CRC32, sizes
//! and positions are bounded) and the records must be strictly increasing
//! and non-overlapping.
//!
//! A torn tail: the last line of the input may be cut short by power loss.
//! A final line with no '\n', or whose CRC32 or structure is wrong, is
//! dropped and reported in `dropped_torn_tail` (so is a cut-short header).
//! A final line whose CRC32 matches but whose content is invalid is not torn
//! and is an error, like any damage before the last line.
//!
//! Parsing never panics and never holds more than one line (at most
//! [`MAX_LINE`] bytes) plus the records it returns. A new format version
//! gets a new header; this code refuses any header but v1's.

use std::io::{self, BufRead, Read};

use super::percent;
use super::validate::{MAX_SEGMENTS, validate_record};
use super::{BatchRecord, GapRecord, ManifestError, Record, SegmentEntry, shown};

/// First line of every manifest, '\n' included.
const HEADER: &str = "walship-manifest v1\n";
/// What a header with some other version starts with.
const HEADER_PREFIX: &[u8] = b"walship-manifest ";
/// Longest line accepted, '\n' excluded (8 MiB).
pub const MAX_LINE: usize = 8 << 20;
/// Stream name [`check_round_trip`] parses with (seed keys use it).
pub const FUZZ_STREAM: &str = "sensors";

/// A whole parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub records: Vec<Record>,
    /// 1-based line number of a torn final line that was dropped.
    pub dropped_torn_tail: Option<usize>,
}

/// What [`parse_each`] saw, besides the records it handed out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParseSummary {
    /// How many records were read.
    pub records: usize,
    /// The last record read.
    pub last: Option<Record>,
    /// 1-based line number of a torn final line that was dropped.
    pub dropped_torn_tail: Option<usize>,
    /// Bytes from the start of the input to the end of the last good line
    /// (header included): where a journal is cut back to after a torn tail.
    pub valid_len: u64,
}

/// The header line, '\n' included.
pub fn header() -> &'static str {
    HEADER
}

/// A record's body: the line without its CRC32 and '\n'.
pub fn serialize_record(record: &Record) -> String {
    match record {
        Record::Batch(batch) => serialize_batch(batch),
        Record::Gap(gap) => {
            format!("gap first={} last={} reason={}", gap.first, gap.last, percent::encode(&gap.reason, true))
        }
    }
}

fn serialize_batch(batch: &BatchRecord) -> String {
    let mut body = format!(
        "batch first={} last={} size={} crc32={:08x} key={}",
        batch.first,
        batch.last,
        batch.size,
        batch.crc32,
        percent::encode(&batch.key, true)
    );
    for segment in &batch.segments {
        body.push_str(&format!(
            " seg={},{},{},{},{:08x}",
            segment.position,
            percent::encode(&segment.name, false),
            segment.offset,
            segment.len,
            segment.crc32
        ));
    }
    body
}

/// A record's whole line: CRC32 of the body, space, body, '\n'.
pub fn record_line(record: &Record) -> String {
    let body = serialize_record(record);
    format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
}

/// A whole manifest: header, then one line per record.
pub fn serialize(records: &[Record]) -> String {
    let mut text = String::from(header());
    for record in records {
        text.push_str(&record_line(record));
    }
    text
}

/// Parse and validate one record body of `stream`; the error says what is
/// wrong with it.
pub fn parse_record(body: &str, stream: &str) -> Result<Record, String> {
    if let Some(byte) = body.bytes().find(|byte| !(b' '..=b'~').contains(byte)) {
        return Err(format!("record contains byte {byte:#04x}, outside printable ASCII"));
    }
    let mut tokens = body.split(' ');
    let record = match tokens.next().unwrap_or_default() {
        "batch" => Record::Batch(parse_batch(tokens)?),
        "gap" => Record::Gap(parse_gap(tokens)?),
        kind => {
            return Err(format!("unknown record kind `{}` (this walship knows batch and gap)", shown(kind)));
        }
    };
    validate_record(&record, stream)?;
    Ok(record)
}

fn parse_batch<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<BatchRecord, String> {
    let fields = Fields::collect(tokens, &["first", "last", "size", "crc32", "key", "seg"])?;
    if fields.segments.is_empty() {
        return Err("missing field `seg` (a batch lists its segments)".into());
    }
    let segments: Result<Vec<SegmentEntry>, String> =
        fields.segments.iter().map(|value| parse_segment(value)).collect();
    Ok(BatchRecord {
        first: decimal("first", fields.get("first")?)?,
        last: decimal("last", fields.get("last")?)?,
        key: text("key", fields.get("key")?, true)?,
        size: decimal("size", fields.get("size")?)?,
        crc32: crc("crc32", fields.get("crc32")?)?,
        segments: segments?,
    })
}

fn parse_gap<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<GapRecord, String> {
    let fields = Fields::collect(tokens, &["first", "last", "reason"])?;
    Ok(GapRecord {
        first: decimal("first", fields.get("first")?)?,
        last: decimal("last", fields.get("last")?)?,
        reason: text("reason", fields.get("reason")?, true)?,
    })
}

/// `POSITION,NAME,OFFSET,LENGTH,CRC32`
fn parse_segment(value: &str) -> Result<SegmentEntry, String> {
    let parts: Vec<&str> = value.splitn(6, ',').collect();
    let [position, name, offset, len, crc32] = parts[..] else {
        return Err(format!("segment `{}` is not POSITION,NAME,OFFSET,LENGTH,CRC32", shown(value)));
    };
    Ok(SegmentEntry {
        position: decimal("seg position", position)?,
        name: text("seg name", name, false)?,
        offset: decimal("seg offset", offset)?,
        len: decimal("seg length", len)?,
        crc32: crc("seg crc32", crc32)?,
    })
}

/// The `name=value` fields of one record body.
struct Fields<'a> {
    named: Vec<(&'a str, &'a str)>,
    segments: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// Split `tokens` into fields, refusing names not in `allowed`,
    /// duplicates, and more than [`MAX_SEGMENTS`] segments.
    fn collect(tokens: impl Iterator<Item = &'a str>, allowed: &[&str]) -> Result<Self, String> {
        let mut fields = Fields { named: Vec::new(), segments: Vec::new() };
        for token in tokens {
            let Some((name, value)) = token.split_once('=') else {
                return Err(if token.is_empty() {
                    "empty field (two spaces in a row, or a space at the end)".into()
                } else {
                    format!("field `{}` has no `=`", shown(token))
                });
            };
            if !allowed.contains(&name) {
                return Err(format!("unknown field `{}`", shown(name)));
            }
            if name == "seg" {
                if fields.segments.len() == MAX_SEGMENTS {
                    return Err(format!("more than {MAX_SEGMENTS} segments in one batch"));
                }
                fields.segments.push(value);
            } else if fields.named.iter().any(|&(seen, _)| seen == name) {
                return Err(format!("duplicate field `{name}`"));
            } else {
                fields.named.push((name, value));
            }
        }
        Ok(fields)
    }

    fn get(&self, name: &str) -> Result<&'a str, String> {
        self.named
            .iter()
            .find(|&&(seen, _)| seen == name)
            .map(|&(_, value)| value)
            .ok_or_else(|| format!("missing field `{name}`"))
    }
}

/// A canonical decimal u64: digits only, no leading zeros.
fn decimal(field: &str, value: &str) -> Result<u64, String> {
    let digits_only = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    if !digits_only || (value.len() > 1 && value.starts_with('0')) {
        return Err(format!(
            "field `{field}` must be a decimal number without sign or leading zeros, not `{}`",
            shown(value)
        ));
    }
    value.parse().map_err(|_| format!("field `{field}` value {} does not fit in 64 bits", shown(value)))
}

/// A CRC32 written as exactly 8 lower-case hex digits.
fn crc(field: &str, value: &str) -> Result<u32, String> {
    parse_crc(value.as_bytes())
        .ok_or_else(|| format!("field `{field}` must be 8 lower-case hex digits, not `{}`", shown(value)))
}

fn parse_crc(digits: &[u8]) -> Option<u32> {
    if digits.len() != 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |crc, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(crc << 4 | u32::from(nibble))
    })
}

fn text(field: &str, value: &str, slash_plain: bool) -> Result<String, String> {
    percent::decode(value, slash_plain).map_err(|why| format!("field `{field}`: {why}"))
}

/// Parse a whole manifest held in memory; see [`parse_each`].
pub fn parse(text: &[u8], source: &str, stream: &str) -> Result<Parsed, ManifestError> {
    let mut records = Vec::new();
    let summary = parse_each(text, source, stream, |record| records.push(record))?;
    Ok(Parsed { records, dropped_torn_tail: summary.dropped_torn_tail })
}

/// Parse a record object of the remote archive, which is written whole:
/// a torn final line there is damage, not an interrupted append.
pub fn parse_object(text: &[u8], source: &str, stream: &str) -> Result<Vec<Record>, ManifestError> {
    let parsed = parse(text, source, stream)?;
    match parsed.dropped_torn_tail {
        Some(line) => Err(ManifestError::Damaged {
            source: source.to_string(),
            line,
            message: "incomplete or corrupt final line in an object that is written whole".into(),
        }),
        None => Ok(parsed.records),
    }
}

/// Parse a manifest from `reader`, handing each record to `visit` in order
/// without keeping them. `source` names the input in errors; `stream` is the
/// stream the records must belong to. On error, `visit` may already have
/// seen some records: the caller must discard what it built.
pub fn parse_each<R: BufRead>(
    reader: R,
    source: &str,
    stream: &str,
    mut visit: impl FnMut(Record),
) -> Result<ParseSummary, ManifestError> {
    let mut lines = Lines { reader, source, buf: Vec::new(), number: 0, offset: 0 };
    let mut summary = ParseSummary::default();
    let Some(line) = lines.next()? else {
        return Ok(summary);
    };
    if read_header(&line, source)? == Header::Torn {
        summary.dropped_torn_tail = Some(line.number);
        return Ok(summary);
    }
    summary.valid_len = line.end;
    while let Some(line) = lines.next()? {
        // A line without '\n' is the final one, cut short: torn whatever it holds.
        let parsed = if line.complete {
            read_record_line(&line, stream)
        } else {
            Err(LineError::Damaged("no '\\n' at the end".into()))
        };
        let record = match parsed {
            Ok(record) => record,
            Err(LineError::Damaged(_)) if line.is_final => {
                summary.dropped_torn_tail = Some(line.number);
                break;
            }
            Err(error) => return Err(error.at(source, line.number)),
        };
        check_follows(summary.last.as_ref(), &record)
            .map_err(|message| LineError::Invalid(message).at(source, line.number))?;
        summary.records += 1;
        summary.valid_len = line.end;
        // Hand out the previous record and keep this one: one clone in all.
        if let Some(previous) = summary.last.replace(record) {
            visit(previous);
        }
    }
    if let Some(last) = &summary.last {
        visit(last.clone());
    }
    Ok(summary)
}

/// Refuse `record` unless it starts after `previous` ends.
pub(crate) fn check_follows(previous: Option<&Record>, record: &Record) -> Result<(), String> {
    match previous {
        Some(previous) if record.first() <= previous.last() => Err(format!(
            "{} {}..{} overlaps or comes before the previous {} {}..{} (records must be in \
             increasing, non-overlapping order)",
            record.kind(),
            record.first(),
            record.last(),
            previous.kind(),
            previous.first(),
            previous.last()
        )),
        _ => Ok(()),
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

#[derive(Debug, PartialEq, Eq)]
enum Header {
    Valid,
    Torn,
}

/// Check the first line: the v1 header, a cut-short one, or an error.
fn read_header(line: &Line<'_>, source: &str) -> Result<Header, ManifestError> {
    let header_line = HEADER.trim_end_matches('\n');
    if line.complete && line.bytes == header_line.as_bytes() {
        return Ok(Header::Valid);
    }
    let without_nuls = line.bytes.iter().rposition(|&byte| byte != 0).map_or(0, |i| i + 1);
    if !line.complete && header_line.as_bytes().starts_with(&line.bytes[..without_nuls]) {
        return Ok(Header::Torn);
    }
    if let Some(version) = line.bytes.strip_prefix(HEADER_PREFIX) {
        let found = shown(&String::from_utf8_lossy(version));
        return Err(ManifestError::UnsupportedVersion { source: source.to_string(), found });
    }
    Err(LineError::Damaged(format!("not a walship manifest (the first line must be `{header_line}`)"))
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
fn read_record_line(line: &Line<'_>, stream: &str) -> Result<Record, LineError> {
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
    parse_record(body, stream).map_err(LineError::Invalid)
}

/// For the fuzzer: whatever `data` is, parsing must not panic; parsing it
/// whole and in small chunks must agree; and if it parses, serializing the
/// records and parsing again must give the same records. Panics otherwise.
pub fn check_round_trip(data: &[u8]) {
    let parsed = parse(data, "fuzz-input", FUZZ_STREAM);
    let mut streamed = Vec::new();
    let chunked =
        parse_each(io::BufReader::with_capacity(7, data), "fuzz-input", FUZZ_STREAM, |r| streamed.push(r));
    let parsed = match (parsed, chunked) {
        (Ok(parsed), Ok(summary)) => {
            assert_eq!(parsed.records, streamed, "chunked parse read other records");
            assert_eq!(parsed.dropped_torn_tail, summary.dropped_torn_tail);
            parsed
        }
        (Err(_), Err(_)) => return,
        (whole, chunked) => panic!("whole and chunked parses disagree: {whole:?} / {chunked:?}"),
    };
    let text = serialize(&parsed.records);
    let again = parse(text.as_bytes(), "round-trip", FUZZ_STREAM)
        .unwrap_or_else(|error| panic!("serialized manifest does not parse: {error}\n{text}"));
    assert_eq!(again.records, parsed.records, "serialize-then-parse changed the records");
    assert_eq!(again.dropped_torn_tail, None, "serialized manifest has a torn tail");
}

/// For the fuzzer: one record body, without the line CRC32 that keeps
/// mutated manifests from ever reaching the record parser. Parsing must not
/// panic; a record that parses must serialize to a body that parses to the
/// same record, made of the same fields (one spelling per value, only the
/// order of named fields may differ), and a manifest of it must parse back.
pub fn check_record_round_trip(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(record) = parse_record(body, FUZZ_STREAM) else {
        return;
    };
    let text = serialize_record(&record);
    let again = parse_record(&text, FUZZ_STREAM)
        .unwrap_or_else(|error| panic!("serialized record does not parse: {error}\n{text}"));
    assert_eq!(again, record, "serialize-then-parse changed the record");
    let (mut read, mut written): (Vec<&str>, Vec<&str>) =
        (body.split(' ').collect(), text.split(' ').collect());
    read.sort_unstable();
    written.sort_unstable();
    assert_eq!(read, written, "a parsed field has another spelling than the one written back");
    let manifest = serialize(std::slice::from_ref(&record));
    let parsed = parse(manifest.as_bytes(), "round-trip", FUZZ_STREAM)
        .unwrap_or_else(|error| panic!("manifest of one record does not parse: {error}\n{manifest}"));
    assert_eq!(parsed.records, [record], "manifest of one record read back otherwise");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::validate::tests::batch;

    const STREAM: &str = "sensors";
    const SOURCE: &str = "/var/lib/walship/sensors/manifest";

    fn gap(first: u64, last: u64, reason: &str) -> Record {
        Record::Gap(GapRecord { first, last, reason: reason.into() })
    }

    fn sample() -> Vec<Record> {
        vec![
            batch(STREAM, 0, &["data-0.log"], &[b"hello"]),
            gap(1, 2, "segment removed before archiving"),
            batch(STREAM, 3, &["a b,c=d%e", "zürich ✓"], &[b"abc", b""]),
        ]
    }

    /// A line with a correct CRC32 around an arbitrary body.
    fn line(body: &str) -> String {
        format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
    }

    fn manifest(bodies: &[&str]) -> String {
        let lines: String = bodies.iter().map(|body| line(body)).collect();
        format!("{}{lines}", header())
    }

    fn parse_text(text: &str) -> Result<Parsed, ManifestError> {
        parse(text.as_bytes(), SOURCE, STREAM)
    }

    fn expect_error(text: &str, needle: &str) -> ManifestError {
        let error = parse_text(text).expect_err("must be refused");
        let message = error.to_string();
        assert!(message.contains(needle), "`{message}` should contain `{needle}`");
        error
    }

    const GOLDEN: &str = "walship-manifest v1
338e6c41 batch first=0 last=0 size=5 crc32=3610a686 \
key=sensors/batches/0000000000000000-0000000000000000 seg=0,data-0.log,0,5,3610a686
edd53f58 gap first=1 last=2 reason=segment%20removed%20before%20archiving
5be38516 batch first=3 last=4 size=3 crc32=352441c2 \
key=sensors/batches/0000000000000003-0000000000000004 \
seg=3,a%20b%2Cc%3Dd%25e,0,3,352441c2 seg=4,z%C3%BCrich%20%E2%9C%93,3,0,00000000
";

    #[test]
    fn golden_text() {
        let text = serialize(&sample());
        assert_eq!(text, GOLDEN, "format changed: update GOLDEN only on purpose");
    }

    #[test]
    fn round_trip_batches_and_gaps() {
        let text = serialize(&sample());
        let parsed = parse_text(&text).expect("parses");
        assert_eq!(parsed, Parsed { records: sample(), dropped_torn_tail: None });
        check_round_trip(text.as_bytes());
    }

    #[test]
    fn empty_input_and_lone_header_are_empty_manifests() {
        for text in ["", header()] {
            assert_eq!(parse_text(text).expect("parses"), Parsed::default());
        }
    }

    #[test]
    fn parse_each_reports_last_and_valid_length() {
        let text = serialize(&sample());
        let mut seen = Vec::new();
        let summary = parse_each(text.as_bytes(), SOURCE, STREAM, |r| seen.push(r)).expect("ok");
        assert_eq!(seen, sample());
        assert_eq!(summary.records, 3);
        assert_eq!(summary.last, sample().pop());
        assert_eq!(summary.valid_len, text.len() as u64);
    }

    #[test]
    fn torn_tails_are_dropped() {
        let good = serialize(&sample()[..2]);
        let last = record_line(&sample()[2]);
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
            let parsed = parse_text(&format!("{good}{tail}")).expect("torn tail is not an error");
            assert_eq!(parsed.records, sample()[..2], "tail {tail:?}");
            assert_eq!(parsed.dropped_torn_tail, Some(4), "tail {tail:?}");
            check_round_trip(format!("{good}{tail}").as_bytes());
        }
    }

    #[test]
    fn torn_header_is_dropped() {
        for text in ["walship-man", "walship-manifest v1", "w", "walship\0\0", "\0\0\0"] {
            let parsed = parse_text(text).expect("torn header is not an error");
            assert_eq!(parsed, Parsed { records: Vec::new(), dropped_torn_tail: Some(1) });
        }
    }

    #[test]
    fn damaged_middle_record_names_the_line() {
        let mut text = serialize(&sample());
        let start = header().len() + record_line(&sample()[0]).len();
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
        let error = expect_error("walship-manifest v2\n", "version `v2`: this walship reads v1");
        assert!(matches!(error, ManifestError::UnsupportedVersion { .. }));
        expect_error("walship-manifest v2", "upgrade walship");
        expect_error("hello world\n", ":1: not a walship manifest");
        expect_error("walship-manifest v1\r\n", "version `v1\\r`");
    }

    #[test]
    fn hostile_keys_are_refused() {
        let record =
            |key: &str| format!("batch first=0 last=0 size=0 crc32=00000000 key={key} seg=0,a,0,0,00000000");
        for key in [
            "sensors/batches/../../../etc/passwd",
            "/etc/passwd",
            "sensors/batches/0000000000000000-0000000000000000%00",
            "other/batches/0000000000000000-0000000000000000",
            "sensors/batches/0000000000000000-0000000000000001",
        ] {
            expect_error(&manifest(&[&record(key)]), "is not this batch's object key");
        }
        let own = "sensors/batches/0000000000000000-0000000000000000";
        assert!(parse_text(&manifest(&[&record(own)])).is_ok());
    }

    #[test]
    fn overlapping_and_out_of_order_records_are_refused() {
        let overlapping = manifest(&["gap first=0 last=5 reason=a", "gap first=5 last=9 reason=b"]);
        expect_error(&overlapping, ":3: invalid record: gap 5..9 overlaps or comes before");
        let backwards = manifest(&["gap first=10 last=12 reason=a", "gap first=0 last=3 reason=b"]);
        expect_error(&backwards, "overlaps or comes before the previous gap 10..12");
    }

    #[test]
    fn absurd_numbers_are_refused() {
        expect_error(&manifest(&["gap first=0 last=4611686018427387905 reason=a"]), "2^62");
        expect_error(&manifest(&["gap first=0 last=99999999999999999999 reason=a"]), "64 bits");
        let size = "batch first=0 last=0 size=2251799813685248 crc32=00000000 \
                    key=sensors/batches/0000000000000000-0000000000000000 seg=0,a,0,0,00000000";
        expect_error(&manifest(&[size]), "size 2251799813685248 is beyond the limit 2^50");
        for bad in ["+5", "05", "-1", "0x1", "", "1e3"] {
            let body = format!("gap first={bad} last=7 reason=a");
            expect_error(&manifest(&[&body]), "field `first` must be a decimal number");
        }
    }

    #[test]
    fn huge_segment_count_is_refused_early() {
        let segs = " seg=0,a,0,0,00000000".repeat(MAX_SEGMENTS + 1);
        let body = format!("batch first=0 last=0 size=0 crc32=00000000 key=k{segs}");
        expect_error(&manifest(&[&body]), "more than 100000 segments in one batch");
        let wide = "batch first=0 last=200000 size=0 crc32=00000000 \
                    key=sensors/batches/0000000000000000-0000000000030d40 seg=0,a,0,0,00000000";
        expect_error(&manifest(&[wide]), "at most 100000 fit in one batch");
    }

    #[test]
    fn overlong_line_is_refused() {
        let text = format!("{}{}\n", header(), "x".repeat(MAX_LINE + 1));
        expect_error(&text, ":2: line is longer than 8 MiB");
    }

    #[test]
    fn malformed_fields_are_refused() {
        let key = "key=sensors/batches/0000000000000000-0000000000000000";
        let seg = "seg=0,a,0,0,00000000";
        for (body, needle) in [
            ("snapshot first=0 last=0".to_string(), "unknown record kind `snapshot`"),
            ("gap first=0 last=0 reason=a first=0".into(), "duplicate field `first`"),
            ("gap first=0 last=0 reason=a colour=red".into(), "unknown field `colour`"),
            ("gap first=0 last=0".into(), "missing field `reason`"),
            ("gap first=0 last=0  reason=a".into(), "empty field"),
            ("gap first=0 last=0 reason".into(), "field `reason` has no `=`"),
            ("gap first=0 last=0 reason=a\tb".into(), "outside printable ASCII"),
            ("gap first=0 last=0 reason=a,b".into(), "must be percent-encoded"),
            (format!("batch first=0 last=0 size=0 crc32=00000000 {key}"), "missing field `seg`"),
            (format!("batch first=0 last=0 size=0 crc32=0 {key} {seg}"), "8 lower-case hex"),
            (format!("batch first=0 last=0 size=0 crc32=00000000 {key} seg=0,a"), "POSITION,NAME"),
            (format!("batch first=0 last=0 size=0 {key} {seg}"), "missing field `crc32`"),
            (format!("batch first=0 last=0 size=0 crc32=00000000 {key} seg=0,a/b,0,0,00000000"), "seg name"),
        ] {
            expect_error(&manifest(&[&body]), needle);
        }
    }

    #[test]
    fn segment_lists_that_do_not_add_up_are_refused() {
        let key = "key=sensors/batches/0000000000000000-0000000000000001";
        let head = format!("batch first=0 last=1 size=4 crc32=00000000 {key}");
        let gappy = format!("{head} seg=0,a,0,2,00000000 seg=1,b,3,2,00000000");
        expect_error(&manifest(&[&gappy]), "offsets must be contiguous from 0");
        let crc = combine_crc(&[(0xdeadbeef, 2), (0x12345678, 2)]);
        let wrong = format!(
            "batch first=0 last=1 size=4 crc32={:08x} {key} seg=0,a,0,2,deadbeef seg=1,b,2,2,12345679",
            crc
        );
        expect_error(&manifest(&[&wrong]), "combined from its segments");
        let right = wrong.replace("12345679", "12345678");
        assert!(parse_text(&manifest(&[&right])).is_ok());
    }

    fn combine_crc(parts: &[(u32, u64)]) -> u32 {
        parts.iter().fold(0, |crc, &(part, len)| crate::manifest::combine_crc32(crc, part, len))
    }

    #[test]
    fn object_parse_treats_torn_tail_as_damage() {
        let text = serialize(&sample());
        assert_eq!(parse_object(text.as_bytes(), "k", STREAM).expect("ok"), sample());
        let cut = &text.as_bytes()[..text.len() - 1];
        let error = parse_object(cut, "k", STREAM).expect_err("damaged");
        assert!(matches!(error, ManifestError::Damaged { line: 4, .. }));
    }

    #[test]
    fn round_trip_check_accepts_junk() {
        for data in [&b""[..], b"\xff\xfe", b"walship-manifest v1\n\n\n", b"walship-manifest v1\nxx"] {
            check_round_trip(data);
        }
    }

    #[test]
    fn largest_batch_round_trips() {
        let names: Vec<String> = (0..MAX_SEGMENTS).map(|i| format!("{i:024x}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let contents = vec![b"0123456789".as_slice(); MAX_SEGMENTS];
        let record = batch(STREAM, 1, &names, &contents);
        let text = serialize(std::slice::from_ref(&record));
        assert!(text.len() < MAX_LINE);
        assert_eq!(parse_text(&text).expect("parses").records, vec![record]);
    }
}
