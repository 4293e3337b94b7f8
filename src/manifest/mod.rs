//! The manifest: the record of what a stream has archived.
//!
//! A manifest is a sequence of [`Record`]s in strictly increasing,
//! non-overlapping position order: batches (a range of positions stored as
//! one object, with every segment's name, offset, length and CRC32) and gaps
//! (a range the source lost before it could be archived, with the reason).
//!
//! - [`format`](mod@format) is the versioned text format (its grammar is
//!   documented there): serializing records and parsing them back, with
//!   every record checked for damage and for hostile content. It opens no
//!   files and is what the fuzzer drives.
//! - [`journal`] is the local append-only file per stream: open (dropping a
//!   torn final record), append with fsync, read-only load.
//! - [`validate`] holds the rules a record must satisfy wherever it comes
//!   from (file, remote object, or code about to append it).
//!
//! Nothing here talks to a target: storing records remotely, snapshots,
//! deletions and compaction are the callers' business. A remote record
//! object uses the same text (header plus one line), parsed with
//! [`format::parse`] or [`format::parse_object`].

pub mod format;
pub mod journal;
mod percent;
pub mod validate;

use std::fmt;
use std::io;

pub use format::{ParseSummary, Parsed};
pub use journal::{Journal, read_all};
pub use validate::{combine_crc32, validate_record};

/// One segment inside a batch object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    /// The segment's position in the stream.
    pub position: u64,
    /// Its original file name (restored under this name).
    pub name: String,
    /// Where its bytes start inside the batch object.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// CRC32 of its bytes.
    pub crc32: u32,
}

/// A batch: positions `first..=last` stored as one object under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub first: u64,
    pub last: u64,
    /// Object key, always `keys::batch_key(stream, first, last)`.
    pub key: String,
    /// Object size: the sum of the segments' lengths.
    pub size: u64,
    /// CRC32 of the whole object.
    pub crc32: u32,
    /// One entry per position, in position order.
    pub segments: Vec<SegmentEntry>,
}

/// A gap: positions `first..=last` were never archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRecord {
    pub first: u64,
    pub last: u64,
    /// Why, for the operator (e.g. "segment removed before archiving").
    pub reason: String,
}

/// One manifest record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Batch(BatchRecord),
    Gap(GapRecord),
}

impl Record {
    /// First position the record covers.
    pub fn first(&self) -> u64 {
        match self {
            Record::Batch(b) => b.first,
            Record::Gap(g) => g.first,
        }
    }

    /// Last position the record covers (inclusive).
    pub fn last(&self) -> u64 {
        match self {
            Record::Batch(b) => b.last,
            Record::Gap(g) => g.last,
        }
    }

    /// `"batch"` or `"gap"`, as in the text format and in record keys.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Batch(_) => "batch",
            Record::Gap(_) => "gap",
        }
    }
}

/// Why a manifest could not be read or written. `source` names where the
/// text came from (a file path, or an object key for remote records) and
/// `line` is 1-based, the header being line 1. A `line` of 0 means the
/// problem concerns the whole source (e.g. a remote record object that does
/// not match its key); `message` then carries its own remedy.
#[derive(Debug)]
pub enum ManifestError {
    /// A line is damaged (bad CRC32, unreadable structure) and is not the
    /// torn final line that a crash may leave.
    Damaged { source: String, line: usize, message: String },
    /// A line is intact (its CRC32 matches) but its content is invalid or
    /// hostile: foreign key, overlapping range, absurd size, unknown field…
    Invalid { source: String, line: usize, message: String },
    /// The header names a format version this walship does not read.
    UnsupportedVersion { source: String, found: String },
    /// An append was refused before anything was written (a caller bug:
    /// out-of-order or invalid record).
    Refused { source: String, line: usize, message: String },
    /// Reading or writing the file failed; `action` says what was attempted.
    Io { path: String, action: &'static str, error: io::Error },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Damaged { source, line: 0, message }
            | ManifestError::Invalid { source, line: 0, message } => {
                write!(f, "{source}: {message}")
            }
            ManifestError::Damaged { source, line, message } => write!(
                f,
                "{source}:{line}: {message}: the file is damaged; restore it from the archive \
                 by moving it aside (walship rebuilds it from the remote records)"
            ),
            ManifestError::Invalid { source, line, message } => write!(
                f,
                "{source}:{line}: invalid record: {message}; walship refuses hostile or \
                 hand-edited records: move the file aside (walship rebuilds it from the \
                 remote records)"
            ),
            ManifestError::UnsupportedVersion { source, found } => write!(
                f,
                "{source}:1: unknown manifest format version `{found}`: this walship reads v1; \
                 upgrade walship to a release that reads this version"
            ),
            ManifestError::Refused { source, line, message } => write!(
                f,
                "{source}:{line}: refusing to append: {message} (a walship bug; the journal is \
                 unchanged)"
            ),
            ManifestError::Io { path, action, error } => write!(
                f,
                "cannot {action} {path}: {error}; check that the state directory exists, is \
                 writable and has free space"
            ),
        }
    }
}

impl std::error::Error for ManifestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ManifestError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Untrusted text made safe for an error message: escaped and cut short.
pub(crate) fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out: String = text.chars().take(MAX_CHARS).flat_map(char::escape_debug).collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_accessors() {
        let gap = Record::Gap(GapRecord { first: 3, last: 9, reason: "lost".into() });
        assert_eq!((gap.first(), gap.last(), gap.kind()), (3, 9, "gap"));
        let batch = Record::Batch(BatchRecord {
            first: 0,
            last: 0,
            key: "s/batches/0000000000000000-0000000000000000".into(),
            size: 0,
            crc32: 0,
            segments: Vec::new(),
        });
        assert_eq!((batch.first(), batch.last(), batch.kind()), (0, 0, "batch"));
    }

    #[test]
    fn damaged_message_names_file_line_and_fix() {
        let err = ManifestError::Damaged {
            source: "/var/lib/walship/sensors/manifest".into(),
            line: 17,
            message: "record CRC32 mismatch (stored 1a2b3c4d, computed 00000000)".into(),
        };
        let text = err.to_string();
        assert!(text.starts_with("/var/lib/walship/sensors/manifest:17: record CRC32 mismatch"));
        assert!(text.contains("moving it aside"));
    }

    #[test]
    fn whole_source_errors_carry_their_own_remedy() {
        let err = ManifestError::Invalid {
            source: "sensors/manifest/0000000000000000-0000000000000000.batch".into(),
            line: 0,
            message: "remote manifest record does not match its key; move the object aside".into(),
        };
        assert_eq!(
            err.to_string(),
            "sensors/manifest/0000000000000000-0000000000000000.batch: remote manifest record \
             does not match its key; move the object aside"
        );
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown(&"x".repeat(200)).chars().count(), 81);
    }
}
