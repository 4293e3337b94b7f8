//! The local side of a stream: which files are segments, their positions,
//! which are sealed, and read-only memory maps of their bytes.
//!
//! A directory scan gathers facts (name, position, size, modification time);
//! sealing is decided by a pure function of those facts. Nothing here
//! uploads, plans batches or touches the manifest.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memmap2::Mmap;

use crate::config::SealMode;

/// How a stream's file names carry positions: `PREFIX{seq}SUFFIX` (decimal)
/// or `PREFIX{hex}SUFFIX` (hexadecimal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
    suffix: String,
    radix: u32,
}

/// Longest run of digits accepted as a position (u64 has 20 decimal digits).
const MAX_DIGITS: usize = 20;

impl Naming {
    /// Parse a `pattern` value such as `data-{seq}.log` or `{hex}.wal`.
    /// Exactly one placeholder; no '/' (segments live directly in the
    /// stream's directory).
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
        let (prefix, suffix) = pattern.split_once(token).expect("placeholder counted above");
        if prefix.starts_with('.') {
            return Err("segment names cannot start with '.': dot-files are ignored".into());
        }
        Ok(Naming { prefix: prefix.to_string(), suffix: suffix.to_string(), radix })
    }

    /// The position a file name stands for, or `None` if it is not a segment
    /// of this stream (wrong shape, dot-file, temporary or partial file).
    pub fn position(&self, file_name: &str) -> Option<u64> {
        if is_ignored_name(file_name) {
            return None;
        }
        let digits = file_name.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        if digits.is_empty() || digits.len() > MAX_DIGITS {
            return None;
        }
        if !digits.chars().all(|c| c.is_digit(self.radix)) {
            return None;
        }
        u64::from_str_radix(digits, self.radix).ok()
    }
}

/// Names never treated as segments, whatever the pattern: dot-files, and
/// files that are still being written or were set aside.
pub fn is_ignored_name(file_name: &str) -> bool {
    const IGNORED_SUFFIXES: [&str; 6] = [".tmp", ".temp", ".partial", ".part", "~", ".archived"];
    file_name.starts_with('.') || IGNORED_SUFFIXES.iter().any(|s| file_name.ends_with(s))
}
