//! Configuration: the INI file of SPEC.md, parsed into typed values.
//!
//! `load(path)` reads the file, hands the text to [`parse`], then checks
//! the places the config names against each other on the filesystem
//! ([`places`]: no two of state_dir, a file target and the stream
//! directories may be the same directory or one inside another). `parse`
//! does no I/O and is what tests and the fuzzer call. Every error names the
//! file, the line and the key, and says what is expected. Unknown sections
//! and keys are errors. The rule checks (batch_size > 0, snapshot_interval a
//! multiple of batch_size) run at load through `plan::check_rules`, so a bad
//! config never reaches a stream.
//!
//! The parts, by concern: `ini` (syntax), [`keys`] (every key and its
//! default, in one table), [`values`] (sizes, durations and other value
//! parsers), `global` and `stream` (the two kinds of section),
//! [`metered`] (the bandwidth and data budget keys of `[global]`), and
//! [`places`]. Target settings are validated by the target module's own
//! validators. Whether the directories exist and a target is reachable is
//! `walship check`'s job.

mod global;
mod ini;
pub mod keys;
pub mod metered;
pub mod places;
mod stream;
pub mod values;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use crate::target::url::TargetUrl;
pub use global::{Global, check_node_id};
pub use metered::Metered;
pub use stream::{
    Compression, DEFAULT_ZSTD_LEVEL, MAX_BATCH_SIZE, OnArchived, Replicas, SealMode, StreamConfig,
    ZSTD_LEVELS, check_stream_name,
};
pub use values::{parse_duration, parse_size};

use ini::{Fields, SectionKind};

/// Default config location.
pub const DEFAULT_PATH: &str = "/etc/walship/walship.conf";

/// A whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    pub global: Global,
    /// In file order; names are unique; at least one.
    pub streams: Vec<StreamConfig>,
}

impl Config {
    /// The stream called `name`.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, a directory). The I/O
    /// error is part of the message and is also the `source()`.
    Read { path: PathBuf, source: io::Error },
    /// The file was read but is not a valid configuration. `line` is 1-based;
    /// `key` is qualified by its section, e.g. `[stream sensors] batch_size`.
    Invalid { path: PathBuf, line: Option<usize>, key: Option<String>, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(
                f,
                "{}: cannot read the config file: {source}; {}",
                path.display(),
                read_hint(source.kind())
            ),
            ConfigError::Invalid { path, line, key, message } => {
                write!(f, "{}", path.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                write!(f, ": ")?;
                if let Some(key) = key {
                    write!(f, "{key}: ")?;
                }
                write!(f, "{message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}

/// What to do about a config file that cannot be read.
fn read_hint(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::NotFound => "create it or pass -c FILE",
        io::ErrorKind::PermissionDenied => "make it readable by the user walship runs as, or pass -c FILE",
        io::ErrorKind::IsADirectory => "pass -c with the path of the file itself",
        _ => "check the file, or pass -c FILE",
    }
}

/// Largest config file `load` accepts: far beyond any real config, small
/// enough that a wrong `-c` (a log, a device) cannot fill memory.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Read and parse the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes =
        read_limited(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(
            path,
            None,
            None,
            format!(
                "larger than {} KiB, which is not a config file; check the path given to -c",
                MAX_FILE_BYTES / 1024
            ),
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        invalid(path, Some(line), None, "not valid UTF-8 text; save the file as UTF-8".into())
    })?;
    let (config, lines) = parse_located(path, text)?;
    places::check_resolved(&config, &lines)?;
    Ok(config)
}

/// At most `MAX_FILE_BYTES + 1` bytes of the file (one more, to detect excess).
fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Parse config text; `path` is only used in messages and stored in the result.
/// Pure: no I/O, and any input gives a value or an error, never a panic.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_located(path, text).map(|(config, _)| config)
}

/// [`parse`], also returning the lines of the keys naming places.
fn parse_located(path: &Path, text: &str) -> Result<(Config, places::KeyLines), ConfigError> {
    let sections = ini::read_sections(path, text)?;
    let Some(global_section) = sections.iter().find(|s| s.kind == SectionKind::Global) else {
        return Err(invalid(
            path,
            None,
            None,
            "no [global] section; add one with at least `state_dir` and `target`".into(),
        ));
    };
    let global = global::parse_global(&Fields::new(path, global_section))?;
    let mut streams = Vec::new();
    for section in &sections {
        if let SectionKind::Stream(name) = &section.kind {
            let fields = Fields::new(path, section);
            let stream = stream::parse_stream(&fields, name)?;
            if stream.replicas.is_some() && global.node_id.is_none() {
                let why = "replicas = on needs this node's name: add `node_id = NAME` to [global], \
                           different on every node";
                return Err(fields.error("replicas", why.into()));
            }
            streams.push(stream);
        }
    }
    if streams.is_empty() {
        return Err(invalid(
            path,
            None,
            None,
            "no [stream NAME] section, so there is nothing to archive; \
             add one per directory of segments"
                .into(),
        ));
    }
    let lines = places::KeyLines::of(&sections);
    let config = Config { path: path.to_path_buf(), global, streams };
    places::check_written(&config, &lines)?;
    Ok((config, lines))
}

fn invalid(path: &Path, line: Option<usize>, key: Option<String>, message: String) -> ConfigError {
    ConfigError::Invalid { path: path.to_path_buf(), line, key, message }
}

/// For the fuzzer: whatever `data` is, parsing must not panic; an error
/// must name the file; a config that parses must keep the rules (at least
/// one stream, unique valid names, batch_size in 1..=100000, snapshots a
/// multiple of batch_size with a command, backoff_min <= backoff_max, the
/// places apart as written, backlog_limit only for a spool). Panics otherwise.
pub fn check_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.conf");
    let config = match parse(path, text) {
        Ok(config) => config,
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("fuzz.conf"), "error does not name the file: {message}");
            return;
        }
    };
    assert_eq!(config.path, path);
    assert!(!config.streams.is_empty(), "a config without streams parsed");
    let global = &config.global;
    assert!(global.backoff_min <= global.backoff_max, "backoff_min > backoff_max: {global:?}");
    assert!(global.part_size > 0 && (1..=16).contains(&global.parallel_uploads), "{global:?}");
    let metered = &global.metered;
    assert!(
        metered.data_budget.is_none_or(|b| b.bytes > 0 && (1..=31).contains(&b.start_day)),
        "{metered:?}"
    );
    for (index, stream) in config.streams.iter().enumerate() {
        assert_eq!(check_stream_name(&stream.name), Ok(()), "invalid stream name parsed");
        assert!(
            config.streams[..index].iter().all(|earlier| earlier.name != stream.name),
            "stream `{}` appears twice",
            stream.name
        );
        assert!((1..=MAX_BATCH_SIZE).contains(&stream.batch_size), "{stream:?}");
        assert_eq!(stream.snapshot_interval % stream.batch_size, 0, "{stream:?}");
        assert!(stream.snapshot_interval == 0 || stream.snapshot_command.is_some(), "{stream:?}");
        assert!(stream.seal_idle.is_none() || stream.seal == SealMode::Next, "{stream:?}");
        assert!(
            stream.replicas.is_none() || global.node_id.is_some(),
            "replicas without node_id: {stream:?}"
        );
        assert!(stream.backlog_limit.is_none() || stream.seal == SealMode::Spool, "{stream:?}");
    }
    let written: Vec<PathBuf> = places::places(&config).iter().map(|p| places::normalize(&p.path)).collect();
    for (index, a) in written.iter().enumerate() {
        for b in &written[..index] {
            assert!(
                places::relation(a, b).is_none() && places::relation(b, a).is_none(),
                "{a:?} and {b:?} overlap"
            );
        }
    }
}
