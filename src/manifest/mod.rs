//! The manifest: the record of what a stream has archived.
//!
//! A manifest holds three sequences, each in its own order ([`model`]):
//! the log (batches and gaps, contiguous in position), snapshots (by
//! position) and prunes (by sequence number, each carrying the "pruned
//! before P" mark from which the log must be contiguous).
//!
//! - [`format`](mod@format) is the versioned text format (its grammar is
//!   documented there): v2 is written, v1 is still read. It opens no files
//!   and is what the fuzzer drives ([`check`]).
//! - [`validate`] holds the rules one entry must satisfy wherever it comes
//!   from (file, remote object, or code about to store it);
//!   [`sequence`] the rules between entries (order, contiguity, holes).
//! - [`journal`] is the local append-only file per stream: open (dropping a
//!   torn final record, upgrading a v1 file), append with fsync, read-only
//!   load.
//!
//! Nothing here talks to a target: `catalog` stores records remotely and
//! turns a listing of remote record objects back into a manifest.

pub mod check;
mod fields;
pub mod format;
pub mod journal;
pub mod model;
mod percent;
pub mod sequence;
pub mod validate;

use std::fmt;
use std::io;

use crate::naming::Naming;

pub use format::{ParseSummary, Parsed, Version};
pub use journal::{Journal, read_all};
pub use model::{
    BatchRecord, Encoding, Entry, GapRecord, Manifest, PruneRecord, Record, SegmentEntry, SnapshotRecord,
    StoredObject,
};
pub use sequence::Sequences;
pub use validate::{validate_entry, validate_record};

/// What a stream's records must agree with: its name (which object keys
/// are its own) and its naming (which segment names are its own).
#[derive(Debug, Clone, Copy)]
pub struct StreamRules<'a> {
    pub name: &'a str,
    pub naming: &'a Naming,
}

impl<'a> StreamRules<'a> {
    pub fn new(name: &'a str, naming: &'a Naming) -> StreamRules<'a> {
        StreamRules { name, naming }
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
    /// An append (or, with `line` 0, the storing of a remote record
    /// object named by `source`) was refused before anything was written: a
    /// caller bug, an out-of-order or invalid record.
    Refused { source: String, line: usize, message: String },
    /// Positions `first..=last` are missing from the log: neither recorded
    /// nor pruned (a deleted journal line, a lost remote record object).
    /// `location` says where: `FILE:LINE`, or between which record objects.
    Hole { location: String, first: u64, last: u64 },
    /// A gap over `first..=last` was about to be recorded although the
    /// archive holds `key`, a batch object for those positions that no
    /// record describes (a lost record object, or a commit cut short whose
    /// segments were removed since): nothing was stored.
    GapOverStoredBatch { stream: String, key: String, first: u64, last: u64 },
    /// Two remote record objects say different things about the same
    /// positions (or the same snapshot or prune).
    Conflict { first_key: String, second_key: String, message: String },
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
                "{source}:1: unknown manifest format version `{found}`: this walship reads v1 and \
                 v2; upgrade walship to a release that reads this version"
            ),
            ManifestError::Hole { location, first, last } => write!(
                f,
                "{location}: positions {first}..{last} are missing from the manifest: they are \
                 neither recorded nor pruned (a deleted journal line or a lost remote record \
                 object); if the local journal lost a line, move it aside and walship rebuilds it \
                 from the archive; if the archive lost a record object, restore it from a backup \
                 (`walship verify` lists every damage)"
            ),
            ManifestError::GapOverStoredBatch { stream, key, first, last } => write!(
                f,
                "stream {stream}: positions {first}..{last} are missing from the stream directory, but the archive \
                 holds {key}, a batch object that no record describes (its record object was lost, \
                 or a commit was cut short and the segments removed since); walship records no gap \
                 over stored data: restore the record object from a backup, or move {key} aside to \
                 record these positions as a gap"
            ),
            ManifestError::Conflict { first_key, second_key, message } => write!(
                f,
                "remote manifest records {first_key} and {second_key} conflict: {message}; move the \
                 wrong one aside (`walship verify --deep` checks every record object)"
            ),
            ManifestError::Refused { source, line: 0, message } => write!(
                f,
                "{source}: refusing to store this record: {message} (a walship bug; nothing was \
                 stored)"
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

/// `text` with its control characters escaped (`\n`, `\u{1b}`…), the rest
/// as it is: how walship puts outside text (a path) into a record's text,
/// where control characters are refused.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
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
    fn hole_and_conflict_messages_name_where() {
        let hole = ManifestError::Hole { location: "/state/s/manifest:4".into(), first: 4, last: 6 };
        assert!(hole.to_string().starts_with("/state/s/manifest:4: positions 4..6 are missing"));
        let conflict = ManifestError::Conflict {
            first_key: "s/manifest/a.l1".into(),
            second_key: "s/manifest/b.batch".into(),
            message: "they record batch 1..3 differently".into(),
        };
        assert!(conflict.to_string().contains("s/manifest/a.l1 and s/manifest/b.batch conflict"));
    }

    #[test]
    fn printable_escapes_only_control_characters() {
        assert_eq!(printable("/var/spool/ü x"), "/var/spool/ü x");
        assert_eq!(printable("a\nb\u{1b}[0m\t"), "a\\nb\\u{1b}[0m\\t");
        assert!(!printable("\u{85}\u{7f}").chars().any(char::is_control));
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown(&"x".repeat(200)).chars().count(), 81);
    }
}
