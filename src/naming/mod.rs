//! Naming: a stream's file name ↔ position mapping.
//!
//! A stream's `pattern` (`PREFIX{seq}SUFFIX` for a decimal sequence number,
//! `PREFIX{hex}SUFFIX` for a hexadecimal one) says which file names are its
//! segments and the position each stands for; [`Naming::name`] gives the
//! shortest name for a position. PostgreSQL WAL naming (`naming =
//! postgres`: 24 hex digits for timeline, log and segment, and the history
//! and backup files archived beside them) is the other naming, in [`wal`],
//! where its position scheme is described.
//!
//! Everything here is a pure function of strings: no directory is read. A
//! name is classified in time linear in its length, whatever it holds (this
//! parser is fuzzed: `check_name`). What to do with names whose number is too
//! large is the caller's business ([`NameMatch::Overflow`] tells it apart
//! from a name that is not a segment at all).

use std::fmt;

pub mod wal;

pub use wal::{SideFile, WalNaming};

/// How a stream's file names carry positions: `PREFIX{seq}SUFFIX` (decimal),
/// `PREFIX{hex}SUFFIX` (hexadecimal), or PostgreSQL's WAL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Pattern { prefix: String, suffix: String, radix: u32 },
    Postgres(WalNaming),
}

/// What a file name is under a [`Naming`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// A segment at this position.
    Position(u64),
    /// The name has the pattern's shape, but its number does not fit in 64
    /// bits: a segment walship can never place.
    Overflow,
    /// Not a segment of this stream (another shape, a dot-file, a temporary
    /// or partial file).
    NotASegment,
}

/// File name endings walship never treats as segments: files still being
/// written, or set aside (`.archived` is what `on_archived = mark` adds).
const IGNORED_SUFFIXES: [&str; 6] = [".tmp", ".temp", ".partial", ".part", "~", ".archived"];

/// Names never treated as segments, whatever the pattern: dot-files, and
/// files that are still being written or were set aside.
pub fn is_ignored_name(file_name: &str) -> bool {
    file_name.starts_with('.') || IGNORED_SUFFIXES.iter().any(|s| file_name.ends_with(s))
}

/// An ignored ending that some name `PREFIX DIGITS SUFFIX` can have, if
/// any: one the suffix ends with, or one made of the suffix, the digits
/// before it and the prefix's end (hex digits are letters: `x.archive{hex}`
/// gives `x.archived` for position 13).
fn ignored_ending(prefix: &str, suffix: &str, radix: u32) -> Option<&'static str> {
    IGNORED_SUFFIXES.into_iter().find(|ending| {
        if suffix.ends_with(ending) {
            return true;
        }
        // The ending is `PREFIX_END DIGITS SUFFIX`, DIGITS not empty.
        let Some(before_suffix) = ending.strip_suffix(suffix) else { return false };
        before_suffix.char_indices().any(|(split, _)| {
            let (prefix_end, digits) = before_suffix.split_at(split);
            digits.chars().all(|c| c.is_digit(radix)) && prefix.ends_with(prefix_end)
        })
    })
}

impl Naming {
    /// Parse a `pattern` value such as `data-{seq}.log` or `{hex}.wal`.
    /// Exactly one placeholder; no '/' (segments live directly in the
    /// stream's directory); no name of the pattern may be one walship
    /// ignores (a dot-file, or an ending such as `.tmp`), since such a
    /// stream would silently never archive anything.
    pub fn from_pattern(pattern: &str) -> Result<Naming, String> {
        if pattern.contains('/') {
            return Err("a pattern names files inside `dir` and cannot contain '/'".into());
        }
        let placeholders = pattern.matches("{seq}").count() + pattern.matches("{hex}").count();
        if placeholders != 1 {
            return Err("expected exactly one {seq} (decimal) or {hex} placeholder, \
                        e.g. data-{seq}.log"
                .into());
        }
        let (token, radix) = if pattern.contains("{seq}") { ("{seq}", 10) } else { ("{hex}", 16) };
        let Some((prefix, suffix)) = pattern.split_once(token) else {
            return Err(format!("expected {token} in the pattern"));
        };
        if prefix.starts_with('.') {
            return Err("segment names cannot start with '.': dot-files are ignored".into());
        }
        if let Some(ignored) = ignored_ending(prefix, suffix, radix) {
            return Err(format!(
                "segment names of this pattern can end in `{ignored}`, and walship ignores such \
                 files (temporary, partial or already archived)"
            ));
        }
        Ok(Naming(Kind::Pattern { prefix: prefix.to_string(), suffix: suffix.to_string(), radix }))
    }

    /// PostgreSQL's WAL naming (`naming = postgres`) for segments of
    /// `segment_size` bytes (see [`WalNaming::new`] for the sizes allowed).
    pub fn postgres(segment_size: u64) -> Result<Naming, String> {
        WalNaming::new(segment_size).map(|wal| Naming(Kind::Postgres(wal)))
    }

    /// The WAL naming, when this is `naming = postgres`.
    pub fn wal(&self) -> Option<&WalNaming> {
        match &self.0 {
            Kind::Postgres(wal) => Some(wal),
            Kind::Pattern { .. } => None,
        }
    }

    /// A file archived beside the segments but outside the log (a
    /// PostgreSQL history or backup file), if `file_name` is one.
    pub fn side_file(&self, file_name: &str) -> Option<SideFile> {
        self.wal().and_then(|_| wal::side_file(file_name))
    }

    /// What `file_name` is under this naming. Under a pattern any number of
    /// leading zeros is accepted, and letters of a hex number may be upper
    /// or lower case; WAL names are exactly PostgreSQL's.
    pub fn classify(&self, file_name: &str) -> NameMatch {
        if is_ignored_name(file_name) {
            return NameMatch::NotASegment;
        }
        let (prefix, suffix, radix) = match &self.0 {
            Kind::Postgres(wal) => return wal.classify(file_name),
            Kind::Pattern { prefix, suffix, radix } => (prefix, suffix, *radix),
        };
        let Some(digits) =
            file_name.strip_prefix(prefix.as_str()).and_then(|s| s.strip_suffix(suffix.as_str()))
        else {
            return NameMatch::NotASegment;
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return NameMatch::NotASegment;
        }
        // Only digits remain, so the one way this can fail is overflow.
        match u64::from_str_radix(digits, radix) {
            Ok(position) => NameMatch::Position(position),
            Err(_) => NameMatch::Overflow,
        }
    }

    /// The position a file name stands for, or `None` if it is not a segment
    /// of this stream or its number does not fit (see [`Naming::classify`]).
    pub fn position(&self, file_name: &str) -> Option<u64> {
        match self.classify(file_name) {
            NameMatch::Position(position) => Some(position),
            NameMatch::Overflow | NameMatch::NotASegment => None,
        }
    }

    /// The file name for `position`: under a pattern the shortest (no
    /// leading zeros, lowercase hex; real producers often pad, and any
    /// padding parses to the same position); under WAL naming PostgreSQL's.
    pub fn name(&self, position: u64) -> String {
        match &self.0 {
            Kind::Postgres(wal) => wal.name(position),
            Kind::Pattern { prefix, suffix, radix: 16 } => format!("{prefix}{position:x}{suffix}"),
            Kind::Pattern { prefix, suffix, .. } => format!("{prefix}{position}{suffix}"),
        }
    }

    /// Check that `name`, recorded in the archive at `position`, stands for
    /// that position under this naming (the manifest's rule for segment
    /// names; a mismatch names the likely cause and the fix).
    pub fn check_recorded(&self, name: &str, position: u64) -> Result<(), NameMismatch> {
        match self.classify(name) {
            NameMatch::Position(p) if p == position => Ok(()),
            now => {
                Err(NameMismatch { name: name.to_string(), recorded: position, now, naming: self.clone() })
            }
        }
    }
}

/// Shows the pattern, as written in the config (`data-{seq}.log`), or
/// `postgres` and its segment size.
impl fmt::Display for Naming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Postgres(wal) => write!(f, "postgres, wal_segment_size {}MiB", wal.segment_size() >> 20),
            Kind::Pattern { prefix, suffix, radix } => {
                let token = if *radix == 16 { "{hex}" } else { "{seq}" };
                write!(f, "{prefix}{token}{suffix}")
            }
        }
    }
}

/// A name recorded in the archive at a position the current naming does not
/// give it: the stream's `pattern` changed since it was archived, or the
/// record is hostile. The manifest's validator refuses such records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMismatch {
    /// The recorded file name.
    pub name: String,
    /// The position the archive records for it.
    pub recorded: u64,
    /// What the current naming makes of it.
    pub now: NameMatch,
    /// The current naming.
    pub naming: Naming,
}

impl fmt::Display for NameMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NameMismatch { name, recorded, now, naming } = self;
        let name = name.escape_debug();
        match now {
            NameMatch::Position(p) => write!(
                f,
                "segment name `{name}` stands for position {p} under the stream's naming, not {recorded}"
            )?,
            NameMatch::Overflow => write!(
                f,
                "segment name `{name}` has a number too large for a position under the stream's naming"
            )?,
            NameMatch::NotASegment => {
                write!(f, "segment name `{name}` is not a segment name under the stream's naming")?
            }
        }
        let (what, setting) = match naming.wal() {
            Some(_) => ("naming", "wal_segment_size"),
            None => ("pattern", "pattern"),
        };
        write!(
            f,
            " ({what} `{naming}`): either the stream's `{setting}` changed after this was archived \
             (archiving on would store old files again at new positions: put the old {setting} \
             back, or archive under a new stream name), or the record is hostile"
        )
    }
}

impl std::error::Error for NameMismatch {}

/// The namings the fuzzer tries every name under, besides the one an input
/// may define itself.
const FUZZ_PATTERNS: [&str; 6] = ["{seq}", "{hex}", "data-{seq}.log", "{hex}.wal", "seg_{seq}_", "7{hex}7"];

/// For the fuzzer: `data` is a name, or `PATTERN\nNAME`. Under each naming
/// (the fixed patterns, WAL naming with 1 MiB and 16 MiB segments, and the
/// input's own pattern, if it parses) the name is classified without
/// panicking; a name that is a segment is the name of its position again
/// once re-generated; and position → name → position holds for a position
/// taken from the input (under WAL naming, for one on a timeline).
pub fn check_name(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (own_pattern, name) = match text.split_once('\n') {
        Some((pattern, name)) => (Some(pattern), name),
        None => (None, text.as_ref()),
    };
    let patterns = FUZZ_PATTERNS
        .iter()
        .filter_map(|p| Naming::from_pattern(p).ok())
        .chain(own_pattern.and_then(|p| Naming::from_pattern(p).ok()));
    let wal_namings = [1 << 20, 16 << 20].into_iter().filter_map(|size| Naming::postgres(size).ok());
    let mut position_bytes = [0u8; 8];
    for (byte, input) in position_bytes.iter_mut().zip(data.iter().rev()) {
        *byte = *input;
    }
    let position = u64::from_le_bytes(position_bytes);
    let _ = wal::side_file(name);
    for naming in patterns.chain(wal_namings) {
        if naming.wal().is_none() {
            assert_eq!(Naming::from_pattern(&naming.to_string()).as_ref(), Ok(&naming), "{naming}");
        }
        if let NameMatch::Position(p) = naming.classify(name) {
            assert_eq!(
                naming.name(p),
                if naming.wal().is_some() { name.to_string() } else { naming.name(p) }
            );
            assert_eq!(naming.classify(&naming.name(p)), NameMatch::Position(p), "{naming}: {name:?}");
            assert!(naming.check_recorded(name, p).is_ok(), "{naming}: {name:?}");
        }
        let position = match naming.wal() {
            Some(_) => (position % (u64::from(wal::MAX_TIMELINE) << 40)) + (1 << 40),
            None => position,
        };
        let generated = naming.name(position);
        assert_eq!(naming.classify(&generated), NameMatch::Position(position), "{naming}: {generated:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_positions() {
        let dec = Naming::from_pattern("data-{seq}.log").unwrap();
        assert_eq!(dec.position("data-0001.log"), Some(1));
        assert_eq!(dec.position("data-42.log"), Some(42));
        assert_eq!(dec.position("data-.log"), None);
        assert_eq!(dec.position("data-12a.log"), None);
        assert_eq!(dec.position("data-+12.log"), None);
        assert_eq!(dec.position("data-1.log.partial"), None);
        assert_eq!(dec.position("other-1.log"), None);
        let hex = Naming::from_pattern("{hex}").unwrap();
        assert_eq!(hex.position("00ff"), Some(255));
        assert_eq!(hex.position("00FF"), Some(255));
        assert_eq!(hex.position(".00ff"), None);
        assert_eq!(hex.position("00ff.tmp"), None);
        assert_eq!(hex.position("00ff~"), None);
    }

    /// A name whose number does not fit in 64 bits used to look like any
    /// other foreign file (skipped without a word); it is told apart now.
    #[test]
    fn overflowing_numbers_are_told_apart_from_foreign_names() {
        let dec = Naming::from_pattern("data-{seq}.log").unwrap();
        assert_eq!(dec.classify("data-18446744073709551615.log"), NameMatch::Position(u64::MAX));
        assert_eq!(dec.classify("data-18446744073709551616.log"), NameMatch::Overflow);
        assert_eq!(dec.classify("data-99999999999999999999999.log"), NameMatch::Overflow);
        assert_eq!(dec.classify("data-x.log"), NameMatch::NotASegment);
        // Zero padding beyond 20 digits is still the same small position.
        assert_eq!(dec.classify("data-0000000000000000000000042.log"), NameMatch::Position(42));
        let hex = Naming::from_pattern("{hex}.wal").unwrap();
        assert_eq!(hex.classify("ffffffffffffffff.wal"), NameMatch::Position(u64::MAX));
        assert_eq!(hex.classify("10000000000000000.wal"), NameMatch::Overflow);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Naming::from_pattern("data.log").is_err());
        assert!(Naming::from_pattern("{seq}-{seq}").is_err());
        assert!(Naming::from_pattern("{seq}-{hex}").is_err());
        assert!(Naming::from_pattern("dir/{seq}").is_err());
        assert!(Naming::from_pattern(".{seq}").is_err());
    }

    /// A pattern whose every name is one walship ignores used to be
    /// accepted, and the stream then archived nothing, silently.
    #[test]
    fn patterns_of_ignored_names_are_refused() {
        for pattern in ["{seq}.tmp", "{hex}.part", "x-{seq}.log.partial", "{seq}~", "{seq}.archived"] {
            let err = Naming::from_pattern(pattern).unwrap_err();
            assert!(err.contains("walship ignores such files"), "{pattern}: {err}");
        }
        assert!(Naming::from_pattern("{seq}.tmp.log").is_ok());
        // Hex digits are letters: these patterns would name position 13
        // `x.archived` and 14 `x.temp`.
        for pattern in ["x.archive{hex}", "x.t{hex}mp", "x.p{hex}rt", "x.{hex}rchived"] {
            assert!(Naming::from_pattern(pattern).is_err(), "{pattern}");
        }
        assert!(Naming::from_pattern("x.archive{seq}").is_ok());
        assert!(Naming::from_pattern("{hex}").is_ok());
    }

    #[test]
    fn names_round_trip_and_display_as_the_pattern() {
        for pattern in ["data-{seq}.log", "{hex}", "1{seq}1", "{hex}.wal"] {
            let naming = Naming::from_pattern(pattern).unwrap();
            assert_eq!(naming.to_string(), pattern);
            for position in [0, 1, 9, 10, 255, 1 << 62, u64::MAX] {
                assert_eq!(naming.position(&naming.name(position)), Some(position), "{pattern}");
            }
        }
        assert_eq!(Naming::from_pattern("{hex}.wal").unwrap().name(255), "ff.wal");
    }

    #[test]
    fn recorded_names_are_checked_against_the_current_pattern() {
        let dec = Naming::from_pattern("seg-{seq}.log").unwrap();
        assert!(dec.check_recorded("seg-000010.log", 10).is_ok());
        let hex = Naming::from_pattern("seg-{hex}.log").unwrap();
        let err = hex.check_recorded("seg-000010.log", 10).unwrap_err();
        assert_eq!(err.now, NameMatch::Position(16));
        let message = err.to_string();
        assert!(
            message.contains("`seg-000010.log` stands for position 16 under the stream's naming, not 10")
        );
        assert!(message.contains("(pattern `seg-{hex}.log`)"), "{message}");
        assert!(message.contains("put the old pattern back"), "{message}");
        let hostile = dec.check_recorded("pass\nwd", 1).unwrap_err().to_string();
        assert!(hostile.starts_with("segment name `pass\\nwd` is not a segment name"), "{hostile}");
        let other = Naming::from_pattern("log-{seq}").unwrap();
        assert_eq!(other.check_recorded("seg-000010.log", 10).unwrap_err().now, NameMatch::NotASegment);
    }

    /// Classifying is linear in the name's length: a megabyte of digits (or
    /// of near-misses) takes a moment, not minutes.
    #[test]
    fn long_names_are_classified_in_linear_time() {
        let naming = Naming::from_pattern("data-{seq}.log").unwrap();
        let started = std::time::Instant::now();
        let digits = "0".repeat(1 << 20);
        assert_eq!(naming.classify(&format!("data-{digits}7.log")), NameMatch::Position(7));
        assert_eq!(naming.classify(&format!("data-{digits}x.log")), NameMatch::NotASegment);
        assert_eq!(naming.classify(&format!("data-9{digits}.log")), NameMatch::Overflow);
        check_name(format!("data-{{seq}}.log\ndata-{digits}").as_bytes());
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn fuzz_check_accepts_odd_inputs() {
        for input in
            [&b""[..], b"\n", b"{seq}\n", b"{hex}\nFFFF", b"\xff\xfe", b"{seq}{seq}\n12", b"a{seq}\na1"]
        {
            check_name(input);
        }
    }
}
