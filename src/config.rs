//! Configuration: the INI file of SPEC.md, parsed into typed values.
//!
//! `load(path)` reads the file and hands the text to `parse`, which does no
//! I/O and is what tests and the fuzzer call. Every error names the file,
//! the line and the key, and says what is expected. Unknown sections and keys
//! are errors. The rule checks (batch_size > 0, snapshot_interval a multiple
//! of batch_size) run at load through `plan::check_rules`, so a bad config
//! never reaches a stream.
//!
//! The syntax is deliberately small: `[global]` and `[stream NAME]` headers,
//! `key = value` lines, whole-line comments starting with `#` or `;`, and
//! trailing comments that start with whitespace then `#` or `;`. There is no
//! quoting, escaping, line continuation or variable expansion, so a value is
//! exactly what is written between `=` and the comment. Nothing here looks at
//! the directories or targets the config names: that is `walship check`'s job.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::source::Naming;

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

/// Where archives go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetUrl {
    /// `file:///abs/path`
    File(PathBuf),
    /// `s3://bucket/optional/prefix` (prefix without leading or trailing '/').
    S3 { bucket: String, prefix: String },
}

/// The `[global]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Required; absolute path.
    pub state_dir: PathBuf,
    /// Required; `file:///abs/path` or `s3://bucket[/prefix]`.
    pub target: TargetUrl,
    /// s3 only; required with an s3 target. `http://` or `https://` URL,
    /// stored without a trailing '/'.
    pub endpoint: Option<String>,
    /// s3 only; default `us-east-1`.
    pub region: String,
    /// Optional; absolute path. Absent: environment or `$CREDENTIALS_DIRECTORY`.
    pub credentials_file: Option<PathBuf>,
    /// Optional; absolute path to extra PEM trust anchors.
    pub ca_file: Option<PathBuf>,
    /// Default 8 MiB; more than 0; 5 MiB to 5 GiB with an s3 target.
    pub part_size: u64,
    /// Default 2; 1..=16.
    pub parallel_uploads: usize,
    /// Default 1 s; more than 0.
    pub poll_interval: Duration,
    /// s3 only. Default 10 s; DNS, TCP and TLS setup, each.
    pub connect_timeout: Duration,
    /// s3 only. Default 30 s; the longest wait for a response, and the
    /// longest any send or receive may stall, so no request can hang.
    pub io_timeout: Duration,
    /// Default 10 ms; more than 0.
    pub backoff_min: Duration,
    /// Default 5 s; >= backoff_min.
    pub backoff_max: Duration,
    /// Optional; `IP:PORT` (checked to parse as a socket address).
    pub metrics_listen: Option<String>,
    /// Optional; absolute path of a node_exporter textfile.
    pub metrics_file: Option<PathBuf>,
    /// Default info.
    pub log_level: log::LevelFilter,
}

/// How a stream decides a segment is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealMode {
    /// Sealed once a higher-numbered segment exists.
    Next,
    /// Every file is sealed on sight (files arrive by atomic rename).
    Spool,
}

/// What to do with local segments once archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnArchived {
    Keep,
    Delete,
    /// Rename `NAME` to `NAME.archived` (ignored by later scans).
    Mark,
}

/// A `[stream NAME]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// `[A-Za-z0-9_.-]`, 1..=64 chars, not starting with '.'.
    pub name: String,
    /// Required; absolute path.
    pub dir: PathBuf,
    /// Required, from `pattern` (`naming = postgres` is refused in this version).
    pub naming: Naming,
    /// Default `next`.
    pub seal: SealMode,
    /// Only with `seal = next`: the newest segment is sealed after this idle time.
    /// Default none.
    pub seal_idle: Option<Duration>,
    /// Required; 1..=100000.
    pub batch_size: u64,
    /// Default none: wait for full batches.
    pub max_batch_delay: Option<Duration>,
    /// Default 0: no snapshots. Otherwise a multiple of `batch_size`, and
    /// `snapshot_command` is required.
    pub snapshot_interval: u64,
    /// Optional (also usable by a manual snapshot); absolute path.
    pub snapshot_command: Option<PathBuf>,
    /// Default 7, 1..=100.
    pub keep_snapshots: u32,
    /// Default keep.
    pub on_archived: OnArchived,
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
    parse(path, text)
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
    let sections = read_sections(path, text)?;
    let Some(global_section) = sections.iter().find(|s| s.kind == SectionKind::Global) else {
        return Err(invalid(
            path,
            None,
            None,
            "no [global] section; add one with at least `state_dir` and `target`".into(),
        ));
    };
    let global = parse_global(&Fields::new(path, global_section))?;
    let mut streams = Vec::new();
    for section in &sections {
        if let SectionKind::Stream(name) = &section.kind {
            streams.push(parse_stream(&Fields::new(path, section), name)?);
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
    Ok(Config { path: path.to_path_buf(), global, streams })
}

fn invalid(path: &Path, line: Option<usize>, key: Option<String>, message: String) -> ConfigError {
    ConfigError::Invalid { path: path.to_path_buf(), line, key, message }
}

// ---------------------------------------------------------------------------
// Syntax: lines into sections of raw `key = value` entries.

/// Keys of `[global]`, in SPEC order.
const GLOBAL_KEYS: &[&str] = &[
    "state_dir",
    "target",
    "endpoint",
    "region",
    "credentials_file",
    "ca_file",
    "part_size",
    "parallel_uploads",
    "poll_interval",
    "connect_timeout",
    "io_timeout",
    "backoff_min",
    "backoff_max",
    "metrics_listen",
    "metrics_file",
    "log_level",
];

/// Keys of `[stream NAME]`, in SPEC order.
const STREAM_KEYS: &[&str] = &[
    "dir",
    "pattern",
    "naming",
    "seal",
    "seal_idle",
    "batch_size",
    "max_batch_delay",
    "snapshot_interval",
    "snapshot_command",
    "keep_snapshots",
    "on_archived",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SectionKind {
    Global,
    Stream(String),
}

impl SectionKind {
    fn label(&self) -> String {
        match self {
            SectionKind::Global => "[global]".to_string(),
            SectionKind::Stream(name) => format!("[stream {name}]"),
        }
    }

    fn keys(&self) -> &'static [&'static str] {
        match self {
            SectionKind::Global => GLOBAL_KEYS,
            SectionKind::Stream(_) => STREAM_KEYS,
        }
    }
}

/// One `key = value` line.
#[derive(Debug)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// A section header and the entries under it.
#[derive(Debug)]
struct Section {
    kind: SectionKind,
    line: usize,
    entries: Vec<Entry>,
}

/// Split the text into sections, rejecting bad syntax, unknown sections and
/// keys, duplicates and empty values. Types are checked later.
fn read_sections(path: &Path, text: &str) -> Result<Vec<Section>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<Section> = Vec::new();
    // Header line of each section seen so far, to report duplicates.
    let mut headers: HashMap<SectionKind, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let located = |(key, message)| invalid(path, Some(line), key, message);
        if content.starts_with('[') {
            let section =
                start_section(content, line, &mut headers).map_err(|message| located((None, message)))?;
            sections.push(section);
        } else {
            add_entry(sections.last_mut(), content, line).map_err(located)?;
        }
    }
    Ok(sections)
}

/// A new section from its header line, unless it repeats an earlier one.
fn start_section(
    content: &str,
    line: usize,
    headers: &mut HashMap<SectionKind, usize>,
) -> Result<Section, String> {
    let kind = parse_header(content)?;
    if let Some(first) = headers.get(&kind) {
        let fix = match kind {
            SectionKind::Global => "merge the two",
            SectionKind::Stream(_) => "give each stream its own name",
        };
        return Err(format!("{} appears twice (first at line {first}); {fix}", kind.label()));
    }
    headers.insert(kind.clone(), line);
    Ok(Section { kind, line, entries: Vec::new() })
}

/// Add a `key = value` line to the current section; the error carries the
/// key (qualified by its section) when there is one.
fn add_entry(
    section: Option<&mut Section>,
    content: &str,
    line: usize,
) -> Result<(), (Option<String>, String)> {
    let Some((key, value)) = content.split_once('=') else {
        return Err((
            None,
            format!("expected `key = value`, a [section] header or a comment, got {}", quote(content)),
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err((None, "a line starts with '=': the key is missing".into()));
    }
    let Some(section) = section else {
        return Err((
            Some(shorten(key)),
            "outside any section; put it under [global] or a [stream NAME] header".into(),
        ));
    };
    let qualified = Some(format!("{} {}", section.kind.label(), shorten(key)));
    if !section.kind.keys().contains(&key) {
        return Err((qualified, unknown_key_message(&section.kind, key)));
    }
    if let Some(first) = section.entries.iter().find(|e| e.key == key) {
        let message = format!("set twice (first at line {}); keep one", first.line);
        return Err((qualified, message));
    }
    if value.is_empty() {
        let message = "no value after '='; give one, or remove the line to use the default";
        return Err((qualified, message.into()));
    }
    section.entries.push(Entry { key: key.to_string(), value: value.to_string(), line });
    Ok(())
}

/// The line without a trailing comment: one that starts the line (after
/// blanks), or a `#` or `;` that follows whitespace.
fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return "";
    }
    let start =
        line.as_bytes().windows(2).position(|w| w[0].is_ascii_whitespace() && (w[1] == b'#' || w[1] == b';'));
    match start {
        // `i` is an ASCII byte, so `..=i` ends on a character boundary.
        Some(i) => line.get(..=i).unwrap_or(line),
        None => line,
    }
}

/// `[global]` or `[stream NAME]`.
fn parse_header(content: &str) -> Result<SectionKind, String> {
    let Some(inner) = content.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) else {
        return Err(format!("a section header must end with ']', got {}", quote(content)));
    };
    let words: Vec<&str> = inner.split_whitespace().take(3).collect();
    match words.as_slice() {
        ["global"] => Ok(SectionKind::Global),
        ["stream", name] => {
            check_stream_name(name)?;
            Ok(SectionKind::Stream((*name).to_string()))
        }
        ["stream"] => Err("a stream section needs a name: [stream NAME]".into()),
        ["stream", ..] => Err("a stream name cannot contain spaces: [stream NAME]".into()),
        ["global", ..] => Err("[global] takes no name".into()),
        _ => Err(format!("unknown section {}; expected [global] or [stream NAME]", quote(content))),
    }
}

/// Check a stream name: `[A-Za-z0-9_.-]`, 1 to 64 characters, not starting
/// with '.' (it becomes a directory and an object key prefix).
pub fn check_stream_name(name: &str) -> Result<(), String> {
    const ALLOWED: &str = "letters, digits, '_', '.' and '-'";
    if name.is_empty() || name.len() > 64 {
        return Err(format!("a stream name is 1 to 64 characters of {ALLOWED}, got {}", quote(name)));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(format!("a stream name uses only {ALLOWED}, got {}", quote(name)));
    }
    if name.starts_with('.') {
        return Err(format!("a stream name cannot start with '.', got {}", quote(name)));
    }
    Ok(())
}

/// "unknown key", with the likely intended key or where it belongs.
fn unknown_key_message(kind: &SectionKind, key: &str) -> String {
    let (other_label, other_keys) = match kind {
        SectionKind::Global => ("a [stream NAME] section", STREAM_KEYS),
        SectionKind::Stream(_) => ("[global]", GLOBAL_KEYS),
    };
    if other_keys.contains(&key) {
        return format!("unknown key here; `{key}` belongs in {other_label}");
    }
    match closest_key(key, kind.keys()) {
        Some(guess) => format!("unknown key; did you mean `{guess}`?"),
        None => format!("unknown key; {} takes: {}", kind.label(), kind.keys().join(", ")),
    }
}

/// The known key within two edits of `key`, if any.
fn closest_key(key: &str, known: &[&'static str]) -> Option<&'static str> {
    if key.chars().count() > 64 {
        return None;
    }
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters (both strings are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// `text` in double quotes with escapes, cut to a readable length.
fn quote(text: &str) -> String {
    format!("{:?}", shorten(text))
}

/// At most 64 characters of `text`, with "…" when cut.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Typed values of one section.

/// Read access to one section's entries, with errors located in the file.
struct Fields<'a> {
    path: &'a Path,
    section: &'a Section,
    label: String,
}

impl<'a> Fields<'a> {
    fn new(path: &'a Path, section: &'a Section) -> Fields<'a> {
        Fields { path, section, label: section.kind.label() }
    }

    /// The line `key` is set on, or the section header's when it is absent.
    fn line_of(&self, key: &str) -> usize {
        self.entry(key).map_or(self.section.line, |e| e.line)
    }

    fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.section.entries.iter().find(|e| e.key == key)
    }

    /// An error about `key` on `key`'s line (or the header's when unset).
    fn error(&self, key: &str, message: String) -> ConfigError {
        invalid(self.path, Some(self.line_of(key)), Some(format!("{} {key}", self.label)), message)
    }

    /// The value of `key` parsed by `parse`, or `None` when unset.
    fn optional<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.entry(key) {
            None => Ok(None),
            Some(entry) => parse(&entry.value).map(Some).map_err(|message| self.error(key, message)),
        }
    }

    /// The value of `key` parsed by `parse`; `example` shows how to add it.
    fn required<T>(
        &self,
        key: &str,
        example: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.optional(key, parse)?
            .ok_or_else(|| self.error(key, format!("missing; add a line such as `{key} = {example}`")))
    }
}

/// The longest duration any key accepts: longer ones are surely typos, and
/// would overflow clock arithmetic elsewhere.
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parse a duration for a key: more than 0, at most `MAX_DURATION`.
fn positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value)?;
    if duration.is_zero() {
        return Err(format!("expected a duration > 0, got {}", quote(value)));
    }
    if duration > MAX_DURATION {
        return Err(format!("expected at most 365d, got {}", quote(value)));
    }
    Ok(duration)
}

/// Parse a whole number within `min..=max`.
fn number_in(value: &str, min: u64, max: u64) -> Result<u64, String> {
    match parse_whole(value) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}, got {}", quote(value))),
    }
}

/// A run of ASCII digits as a u64; `None` for anything else or overflow.
fn parse_whole(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn absolute_path(value: &str) -> Result<PathBuf, String> {
    if !value.starts_with('/') {
        return Err(format!("expected an absolute path (starting with '/'), got {}", quote(value)));
    }
    Ok(PathBuf::from(value))
}

/// One of `choices` (name, value), exactly as written.
fn one_of<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        format!("expected {}, got {}", names.join(" | "), quote(value))
    })
}

// ---------------------------------------------------------------------------
// [global]

fn parse_global(f: &Fields) -> Result<Global, ConfigError> {
    let state_dir = f.required("state_dir", "/var/lib/walship", absolute_path)?;
    let target = f.required("target", "s3://bucket/prefix", parse_target)?;
    let is_s3 = matches!(target, TargetUrl::S3 { .. });
    let (endpoint, region) = parse_s3_keys(f, is_s3)?;
    let (backoff_min, backoff_max) = parse_backoff(f)?;
    Ok(Global {
        state_dir,
        target,
        endpoint,
        region,
        credentials_file: f.optional("credentials_file", absolute_path)?,
        ca_file: f.optional("ca_file", absolute_path)?,
        part_size: f.optional("part_size", |v| check_part_size(v, is_s3))?.unwrap_or(8 << 20),
        parallel_uploads: f.optional("parallel_uploads", |v| number_in(v, 1, 16))?.map_or(2, |n| n as usize),
        poll_interval: f.optional("poll_interval", positive_duration)?.unwrap_or(Duration::from_secs(1)),
        connect_timeout: f.optional("connect_timeout", positive_duration)?.unwrap_or(Duration::from_secs(10)),
        io_timeout: f.optional("io_timeout", positive_duration)?.unwrap_or(Duration::from_secs(30)),
        backoff_min,
        backoff_max,
        metrics_listen: f.optional("metrics_listen", parse_listen)?,
        metrics_file: f.optional("metrics_file", absolute_path)?,
        log_level: f.optional("log_level", parse_log_level)?.unwrap_or(log::LevelFilter::Info),
    })
}

/// `endpoint` (required) and `region` (default us-east-1) for an s3 target;
/// refused with a file target.
fn parse_s3_keys(f: &Fields, is_s3: bool) -> Result<(Option<String>, String), ConfigError> {
    let endpoint = f.optional("endpoint", parse_endpoint)?;
    let region = f.optional("region", parse_region)?;
    if !is_s3 {
        let set = [("endpoint", endpoint.is_some()), ("region", region.is_some())];
        if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
            return Err(f.error(
                key,
                "only applies to an s3:// target, and target is file://; remove this line".into(),
            ));
        }
    }
    if is_s3 && endpoint.is_none() {
        return Err(f.error(
            "endpoint",
            format!(
                "required with an s3:// target (line {}); add a line such as \
                 `endpoint = https://s3.example.net`",
                f.line_of("target")
            ),
        ));
    }
    Ok((endpoint, region.unwrap_or_else(|| "us-east-1".to_string())))
}

/// `backoff_min` (default 10 ms) and `backoff_max` (default 5 s), min <= max.
fn parse_backoff(f: &Fields) -> Result<(Duration, Duration), ConfigError> {
    let backoff_min = f.optional("backoff_min", positive_duration)?.unwrap_or(Duration::from_millis(10));
    let backoff_max = f.optional("backoff_max", positive_duration)?.unwrap_or(Duration::from_secs(5));
    if backoff_max < backoff_min {
        // Blame the line that is written; backoff_max when both are.
        let key = if f.entry("backoff_max").is_some() { "backoff_max" } else { "backoff_min" };
        return Err(f.error(
            key,
            format!(
                "backoff_max ({backoff_max:?}) must be at least backoff_min ({backoff_min:?}); \
                 raise backoff_max or lower backoff_min"
            ),
        ));
    }
    Ok((backoff_min, backoff_max))
}

/// `file:///abs/path` or `s3://bucket[/prefix]`.
pub fn parse_target(value: &str) -> Result<TargetUrl, String> {
    if let Some(rest) = value.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!(
                "a file target takes an absolute path, as in file:///mnt/archive \
                 (three slashes), got {}",
                quote(value)
            ));
        }
        return Ok(TargetUrl::File(PathBuf::from(rest)));
    }
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        let prefix = prefix.trim_matches('/');
        check_prefix(prefix)?;
        return Ok(TargetUrl::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() });
    }
    Err(format!("expected s3://bucket/prefix or file:///absolute/path, got {}", quote(value)))
}

/// S3 bucket naming rules: 3 to 63 characters of lowercase letters, digits,
/// '.' and '-'; starting and ending with a letter or digit; no "..", not
/// shaped like an IP address.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let rule = if bucket.len() < 3 || bucket.len() > 63 {
        Some("is 3 to 63 characters")
    } else if !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        Some("uses only lowercase letters, digits, '.' and '-'")
    } else if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("starts and ends with a letter or digit")
    } else if bucket.contains("..") {
        Some("has no two dots in a row")
    } else if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        Some("is not shaped like an IP address")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(format!("invalid bucket name {}: a bucket name {rule}", quote(bucket))),
        None => Ok(()),
    }
}

/// An object key prefix: '/'-separated segments of S3's safe characters
/// (letters, digits, `!-_.*'()`), none empty, `.` or `..`, at most 512 bytes.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > 512 {
        return Err("the prefix is longer than 512 bytes".into());
    }
    for segment in prefix.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("the prefix {} has an empty, '.' or '..' part", quote(prefix)));
        }
        let safe = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
        if !segment.chars().all(safe) {
            return Err(format!(
                "the prefix {} may use only letters, digits, '/' and !-_.*'()",
                quote(prefix)
            ));
        }
    }
    Ok(())
}

/// `http://HOST[:PORT][/path]` or `https://…`, stored without a trailing '/'.
fn parse_endpoint(value: &str) -> Result<String, String> {
    let expected = || {
        format!("expected an http:// or https:// URL such as https://s3.example.net, got {}", quote(value))
    };
    let rest =
        value.strip_prefix("https://").or_else(|| value.strip_prefix("http://")).ok_or_else(expected)?;
    let host = rest.split('/').next().unwrap_or_default();
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@');
    if host.is_empty() || rest.contains(bad_char) {
        return Err(expected());
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// A SigV4 region: letters, digits, '-' and '_', 1 to 64 characters.
fn parse_region(value: &str) -> Result<String, String> {
    let ok = value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(format!(
            "expected a region name such as us-east-1 (or garage for Garage), got {}",
            quote(value)
        ));
    }
    Ok(value.to_string())
}

fn check_part_size(value: &str, is_s3: bool) -> Result<u64, String> {
    const MIN_S3: u64 = 5 << 20;
    const MAX_S3: u64 = 5 << 30;
    let size = parse_size(value)?;
    if size == 0 {
        return Err(format!("expected a size > 0, got {}", quote(value)));
    }
    if is_s3 && size < MIN_S3 {
        return Err(format!(
            "expected at least 5MiB with an s3:// target (S3 refuses smaller parts), got {}",
            quote(value)
        ));
    }
    if is_s3 && size > MAX_S3 {
        return Err(format!(
            "expected at most 5GiB with an s3:// target (S3's largest part), got {}",
            quote(value)
        ));
    }
    Ok(size)
}

fn parse_listen(value: &str) -> Result<String, String> {
    value
        .parse::<SocketAddr>()
        .map(|_| value.to_string())
        .map_err(|_| format!("expected IP:PORT such as 127.0.0.1:9187 or [::1]:9187, got {}", quote(value)))
}

fn parse_log_level(value: &str) -> Result<log::LevelFilter, String> {
    use log::LevelFilter as L;
    one_of(
        value,
        &[
            ("off", L::Off),
            ("error", L::Error),
            ("warn", L::Warn),
            ("info", L::Info),
            ("debug", L::Debug),
            ("trace", L::Trace),
        ],
    )
}

// ---------------------------------------------------------------------------
// [stream NAME]

/// Largest `batch_size`: a batch is one object, downloaded whole to restore
/// any position in it.
const MAX_BATCH_SIZE: u64 = 100_000;

fn parse_stream(f: &Fields, name: &str) -> Result<StreamConfig, ConfigError> {
    let dir = f.required("dir", "/var/spool/NAME", absolute_path)?;
    let naming = parse_naming(f)?;
    let (seal, seal_idle) = parse_sealing(f)?;
    let batch_size = f.required("batch_size", "100", parse_batch_size)?;
    let (snapshot_interval, snapshot_command) = parse_snapshots(f, batch_size)?;
    Ok(StreamConfig {
        name: name.to_string(),
        dir,
        naming,
        seal,
        seal_idle,
        batch_size,
        max_batch_delay: f.optional("max_batch_delay", positive_duration)?,
        snapshot_interval,
        snapshot_command,
        keep_snapshots: f.optional("keep_snapshots", |v| number_in(v, 1, 100))?.map_or(7, |n| n as u32),
        on_archived: f.optional("on_archived", parse_on_archived)?.unwrap_or(OnArchived::Keep),
    })
}

/// The segment naming, from `pattern`; `naming` is refused in this version.
fn parse_naming(f: &Fields) -> Result<Naming, ConfigError> {
    if let Some(entry) = f.entry("naming") {
        let message = if entry.value == "postgres" {
            "PostgreSQL WAL naming is not supported in this version; \
             remove this line and name segments with `pattern` (e.g. data-{seq}.log)"
                .to_string()
        } else {
            format!(
                "unknown naming {}; remove this line and use `pattern` \
                 (e.g. data-{{seq}}.log)",
                quote(&entry.value)
            )
        };
        return Err(f.error("naming", message));
    }
    f.required("pattern", "data-{seq}.log", Naming::from_pattern)
}

/// `seal` (default next) and `seal_idle`, which only goes with next.
fn parse_sealing(f: &Fields) -> Result<(SealMode, Option<Duration>), ConfigError> {
    let seal = f
        .optional("seal", |v| one_of(v, &[("next", SealMode::Next), ("spool", SealMode::Spool)]))?
        .unwrap_or(SealMode::Next);
    let seal_idle = f.optional("seal_idle", positive_duration)?;
    if seal_idle.is_some() && seal == SealMode::Spool {
        return Err(f.error(
            "seal_idle",
            format!(
                "only applies with seal = next (line {}: seal = spool seals every file \
                 on sight); remove this line",
                f.line_of("seal")
            ),
        ));
    }
    Ok((seal, seal_idle))
}

/// A whole number up to `MAX_BATCH_SIZE`; 0 is left to `plan::check_rules`.
fn parse_batch_size(value: &str) -> Result<u64, String> {
    let n = parse_whole(value).ok_or_else(|| format!("expected a whole number > 0, got {}", quote(value)))?;
    if n > MAX_BATCH_SIZE {
        return Err(format!("expected at most {MAX_BATCH_SIZE} segments per batch, got {n}"));
    }
    Ok(n)
}

/// `snapshot_interval` (default 0: off) and `snapshot_command`, after the
/// rule check of `plan::check_rules`; snapshots on need the command.
fn parse_snapshots(f: &Fields, batch_size: u64) -> Result<(u64, Option<PathBuf>), ConfigError> {
    let snapshot_interval = f
        .optional("snapshot_interval", |v| {
            parse_whole(v).ok_or_else(|| {
                format!("expected a whole number of positions (0: no snapshots), got {}", quote(v))
            })
        })?
        .unwrap_or(0);
    if let Err(reason) = crate::plan::check_rules(batch_size, snapshot_interval) {
        let key = if batch_size == 0 { "batch_size" } else { "snapshot_interval" };
        return Err(f.error(key, reason));
    }
    let snapshot_command = f.optional("snapshot_command", absolute_path)?;
    if snapshot_interval > 0 && snapshot_command.is_none() {
        return Err(invalid(
            f.path,
            Some(f.line_of("snapshot_interval")),
            Some(format!("{} snapshot_command", f.label)),
            "missing: snapshot_interval turns snapshots on, and they are taken by this \
             command; add `snapshot_command = /absolute/path`, or set snapshot_interval = 0"
                .into(),
        ));
    }
    Ok((snapshot_interval, snapshot_command))
}

fn parse_on_archived(value: &str) -> Result<OnArchived, String> {
    one_of(value, &[("keep", OnArchived::Keep), ("delete", OnArchived::Delete), ("mark", OnArchived::Mark)])
}

// ---------------------------------------------------------------------------
// Units

/// Size units and their multipliers.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

/// Duration units and their length in milliseconds.
const DURATION_UNITS: &[(&str, u64)] =
    &[("ms", 1), ("s", 1_000), ("m", 60_000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parse a size in bytes: a whole number, optionally followed (with or
/// without a space) by `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) or
/// `KB`, `MB`, `GB`, `TB` (powers of 1000). `8MiB`, `8 MiB`, `65536`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text, "a size such as 8MiB")?;
    let multiplier = if unit.is_empty() {
        1
    } else {
        unit_value(unit, text, SIZE_UNITS, "B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB")?
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{} is too large", quote(text)))
}

/// Parse a duration: a whole number followed (with or without a space) by
/// `ms`, `s`, `m` or `min`, `h` or `d`. `500ms`, `30s`, `5 min`. A number
/// without a unit is refused, since it could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: &str = "ms, s, m or min, h, d";
    let (number, unit) = split_number(text, "a duration such as 30s")?;
    if unit.is_empty() {
        return Err(format!(
            "{} has no unit; write e.g. {number}s or {number}ms (units: {UNITS})",
            quote(text)
        ));
    }
    let millis_per_unit = unit_value(unit, text, DURATION_UNITS, UNITS)?;
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{} is too large", quote(text)))
}

/// Split `text` (trimmed) into its leading whole number and the unit after it.
fn split_number<'t>(text: &'t str, expected: &str) -> Result<(u64, &'t str), String> {
    let text_trimmed = text.trim();
    let digits_end = text_trimmed.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text_trimmed.len());
    let (digits, rest) = text_trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("expected {expected}, got {}", quote(text)));
    }
    let number = digits.parse::<u64>().map_err(|_| format!("{} is too large", quote(text)))?;
    let unit = rest.trim_start();
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "expected a whole number, got {}; use a smaller unit instead of a fraction",
            quote(text)
        ));
    }
    Ok((number, unit))
}

/// The value of `unit` in `units`; a near miss in letter case is suggested.
fn unit_value(unit: &str, text: &str, units: &[(&str, u64)], listing: &str) -> Result<u64, String> {
    if let Some((_, value)) = units.iter().find(|(name, _)| *name == unit) {
        return Ok(*value);
    }
    let hint = match units.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit)) {
        Some((name, _)) => format!("did you mean {name}? "),
        None => String::new(),
    };
    Err(format!("unknown unit {} in {}; {hint}units are {listing}", quote(unit), quote(text)))
}

/// For the fuzzer: whatever `data` is, parsing must not panic; an error
/// must name the file; a config that parses must keep the rules (at least
/// one stream, unique valid names, batch_size in 1..=100000, snapshots a
/// multiple of batch_size with a command, backoff_min <= backoff_max).
/// Panics otherwise.
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("walship.conf"), text)
    }

    /// A valid config with `global_extra` as line 4 and `stream_extra` from
    /// line 9. Line 1 is `[global]`, line 5 `[stream sensors]`, line 8
    /// `batch_size = 100`.
    fn config_text(global_extra: &str, stream_extra: &str) -> String {
        format!(
            "[global]\n\
             state_dir = /var/lib/walship\n\
             target = file:///mnt/archive\n\
             {global_extra}\n\
             [stream sensors]\n\
             dir = /var/spool/sensors\n\
             pattern = data-{{seq}}.log\n\
             batch_size = 100\n\
             {stream_extra}\n"
        )
    }

    /// Like `config_text` with an s3 target and its endpoint; `global_extra`
    /// is line 5, the stream header line 6.
    fn s3_text(target: &str, global_extra: &str) -> String {
        format!(
            "[global]\n\
             state_dir = /var/lib/walship\n\
             target = {target}\n\
             endpoint = https://s3.example.net\n\
             {global_extra}\n\
             [stream sensors]\n\
             dir = /var/spool/sensors\n\
             pattern = data-{{seq}}.log\n\
             batch_size = 100\n"
        )
    }

    /// (line, key, message, Display) of the error `text` must give.
    fn error_of(text: &str) -> (Option<usize>, Option<String>, String, String) {
        match parse_text(text) {
            Ok(config) => panic!("expected an error, got {config:?}\nfrom:\n{text}"),
            Err(e @ ConfigError::Invalid { .. }) => {
                let shown = e.to_string();
                let ConfigError::Invalid { line, key, message, .. } = e else { unreachable!() };
                (line, key, message, shown)
            }
            Err(e) => panic!("expected Invalid, got {e:?}"),
        }
    }

    /// Assert `text` fails at `line` on `key` with a message containing `part`.
    fn assert_error(text: &str, line: Option<usize>, key: Option<&str>, part: &str) {
        let (got_line, got_key, message, shown) = error_of(text);
        assert_eq!(got_line, line, "line of: {shown}");
        assert_eq!(got_key.as_deref(), key, "key of: {shown}");
        assert!(message.contains(part), "{shown:?} lacks {part:?}");
        let location = match line {
            Some(n) => format!("walship.conf:{n}: "),
            None => "walship.conf: ".to_string(),
        };
        assert!(shown.starts_with(&location), "{shown:?}");
        if let Some(key) = key {
            assert!(shown.contains(&format!("{key}: ")), "{shown:?}");
        }
    }

    /// The configuration block of SPEC.md, verbatim: every key, with comments.
    const SPEC_EXAMPLE: &str = r#"[global]
state_dir = /var/lib/walship          # manifests, positions, status
target = s3://bucket/prefix           # or file:///mnt/archive
endpoint = https://s3.example.net     # s3 only
region = us-east-1                    # s3 only; "garage" for Garage
credentials_file = /etc/walship/credentials   # AWS shared-credentials format ([default]
                                      # aws_access_key_id / aws_secret_access_key);
                                      # else env / $CREDENTIALS_DIRECTORY
ca_file = /etc/walship/ca.pem         # optional extra trust anchors
part_size = 8MiB                      # chunk size; >= 5MiB for s3
parallel_uploads = 2                  # per stream
poll_interval = 1s
backoff_min = 10ms
backoff_max = 5s
metrics_listen = 127.0.0.1:9187       # optional
metrics_file = /var/lib/node_exporter/walship.prom   # optional
log_level = info

[stream sensors]
dir = /var/spool/sensors
pattern = data-{seq}.log              # {seq} decimal digits, {hex} hex digits
                                      # or: naming = postgres
seal = next                           # next | spool
seal_idle = 30s                       # optional, with seal = next
batch_size = 100
max_batch_delay = 60s                 # optional
snapshot_interval = 10000             # 0 or absent: no snapshots
snapshot_command = /usr/local/bin/sensors-snapshot
keep_snapshots = 7
on_archived = keep                    # keep | delete | mark
"#;

    #[test]
    fn spec_example_parses_with_every_key() {
        let config = parse_text(SPEC_EXAMPLE).expect("the SPEC example is valid");
        let global = &config.global;
        assert_eq!(config.path, PathBuf::from("walship.conf"));
        assert_eq!(global.state_dir, PathBuf::from("/var/lib/walship"));
        assert_eq!(global.target, TargetUrl::S3 { bucket: "bucket".into(), prefix: "prefix".into() });
        assert_eq!(global.endpoint.as_deref(), Some("https://s3.example.net"));
        assert_eq!(global.region, "us-east-1");
        assert_eq!(global.credentials_file, Some(PathBuf::from("/etc/walship/credentials")));
        assert_eq!(global.ca_file, Some(PathBuf::from("/etc/walship/ca.pem")));
        assert_eq!(global.part_size, 8 << 20);
        assert_eq!(global.parallel_uploads, 2);
        assert_eq!(global.poll_interval, Duration::from_secs(1));
        assert_eq!(global.backoff_min, Duration::from_millis(10));
        assert_eq!(global.backoff_max, Duration::from_secs(5));
        assert_eq!(global.metrics_listen.as_deref(), Some("127.0.0.1:9187"));
        assert_eq!(global.metrics_file, Some(PathBuf::from("/var/lib/node_exporter/walship.prom")));
        assert_eq!(global.log_level, log::LevelFilter::Info);

        assert_eq!(config.streams.len(), 1);
        let stream = config.stream("sensors").expect("stream sensors");
        assert_eq!(stream.name, "sensors");
        assert_eq!(stream.dir, PathBuf::from("/var/spool/sensors"));
        assert_eq!(Ok(stream.naming.clone()), Naming::from_pattern("data-{seq}.log"));
        assert_eq!(stream.naming.position("data-42.log"), Some(42));
        assert_eq!(stream.seal, SealMode::Next);
        assert_eq!(stream.seal_idle, Some(Duration::from_secs(30)));
        assert_eq!(stream.batch_size, 100);
        assert_eq!(stream.max_batch_delay, Some(Duration::from_secs(60)));
        assert_eq!(stream.snapshot_interval, 10_000);
        assert_eq!(stream.snapshot_command, Some(PathBuf::from("/usr/local/bin/sensors-snapshot")));
        assert_eq!(stream.keep_snapshots, 7);
        assert_eq!(stream.on_archived, OnArchived::Keep);
    }

    #[test]
    fn non_default_values_of_every_key() {
        let text = "\
; a comment
[global]
state_dir=/srv/walship
target = s3://my-bucket.eu/fleet/node-7/
endpoint = http://minio.local:9000/
region = garage
part_size = 16 MiB
parallel_uploads = 16
poll_interval = 250ms
backoff_min = 1s
backoff_max = 2min
metrics_listen = [::1]:9187
log_level = debug

[stream wal.main]
dir = /var/lib/app/wal
pattern = {hex}.seg
seal = spool
batch_size = 1
snapshot_command = /usr/bin/snap   # no interval: manual snapshots only
keep_snapshots = 100
on_archived = mark

[stream b-2_x]
dir = /b
pattern = b{seq}
on_archived = delete
batch_size = 100000
snapshot_interval = 200000
snapshot_command = /usr/bin/snap-b
keep_snapshots = 1
";
        let config = parse_text(text).expect("valid");
        let global = &config.global;
        assert_eq!(global.state_dir, PathBuf::from("/srv/walship"));
        assert_eq!(
            global.target,
            TargetUrl::S3 { bucket: "my-bucket.eu".into(), prefix: "fleet/node-7".into() }
        );
        assert_eq!(global.endpoint.as_deref(), Some("http://minio.local:9000"));
        assert_eq!(global.region, "garage");
        assert_eq!(global.part_size, 16 << 20);
        assert_eq!(global.parallel_uploads, 16);
        assert_eq!(global.poll_interval, Duration::from_millis(250));
        assert_eq!(global.backoff_min, Duration::from_secs(1));
        assert_eq!(global.backoff_max, Duration::from_secs(120));
        assert_eq!(global.metrics_listen.as_deref(), Some("[::1]:9187"));
        assert_eq!(global.log_level, log::LevelFilter::Debug);

        let names: Vec<&str> = config.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["wal.main", "b-2_x"]);
        let wal = &config.streams[0];
        assert_eq!(wal.naming.position("00ff.seg"), Some(255));
        assert_eq!(wal.seal, SealMode::Spool);
        assert_eq!(wal.batch_size, 1);
        assert_eq!(wal.snapshot_interval, 0);
        assert_eq!(wal.snapshot_command, Some(PathBuf::from("/usr/bin/snap")));
        assert_eq!(wal.keep_snapshots, 100);
        assert_eq!(wal.on_archived, OnArchived::Mark);
        let b = &config.streams[1];
        assert_eq!(b.on_archived, OnArchived::Delete);
        assert_eq!(b.batch_size, 100_000);
        assert_eq!(b.snapshot_interval, 200_000);
        assert_eq!(b.keep_snapshots, 1);
    }

    #[test]
    fn defaults() {
        let config = parse_text(&config_text("", "")).expect("valid");
        let global = &config.global;
        assert_eq!(global.target, TargetUrl::File(PathBuf::from("/mnt/archive")));
        assert_eq!(global.endpoint, None);
        assert_eq!(global.region, "us-east-1");
        assert_eq!(global.credentials_file, None);
        assert_eq!(global.ca_file, None);
        assert_eq!(global.part_size, 8 * 1024 * 1024);
        assert_eq!(global.parallel_uploads, 2);
        assert_eq!(global.poll_interval, Duration::from_secs(1));
        assert_eq!(global.backoff_min, Duration::from_millis(10));
        assert_eq!(global.backoff_max, Duration::from_secs(5));
        assert_eq!(global.metrics_listen, None);
        assert_eq!(global.metrics_file, None);
        assert_eq!(global.log_level, log::LevelFilter::Info);
        let stream = &config.streams[0];
        assert_eq!(stream.seal, SealMode::Next);
        assert_eq!(stream.seal_idle, None);
        assert_eq!(stream.max_batch_delay, None);
        assert_eq!(stream.snapshot_interval, 0);
        assert_eq!(stream.snapshot_command, None);
        assert_eq!(stream.keep_snapshots, 7);
        assert_eq!(stream.on_archived, OnArchived::Keep);
    }

    #[test]
    fn log_levels() {
        use log::LevelFilter as L;
        for (text, level) in [
            ("off", L::Off),
            ("error", L::Error),
            ("warn", L::Warn),
            ("info", L::Info),
            ("debug", L::Debug),
            ("trace", L::Trace),
        ] {
            let config = parse_text(&config_text(&format!("log_level = {text}"), ""));
            assert_eq!(config.expect("valid").global.log_level, level, "{text}");
        }
    }

    #[test]
    fn syntax_comments_whitespace_and_line_endings() {
        let text = "\u{feff}# leading comment\r\n\
                    \t[global]   ; trailing comment on a header\r\n\
                    \tstate_dir\t=\t/var/lib/walship\t# tab before the comment\r\n\
                    target = file:///mnt/archive\r\n\
                    [ stream  sensors ]\r\n\
                    dir = /var/spool/sensors\r\n\
                    pattern = data#{seq};x.log\r\n\
                    batch_size = 100 ; comment\r\n";
        let config = parse_text(text).expect("valid");
        assert_eq!(config.global.state_dir, PathBuf::from("/var/lib/walship"));
        let stream = &config.streams[0];
        assert_eq!(stream.name, "sensors");
        assert_eq!(stream.naming.position("data#7;x.log"), Some(7));
        assert_eq!(stream.batch_size, 100);
    }

    #[test]
    fn display_names_file_line_section_key_and_expectation() {
        let text = config_text("", "").replace("batch_size = 100", "batch_size = abc");
        let (_, _, _, shown) = error_of(&text);
        assert_eq!(
            shown,
            r#"walship.conf:8: [stream sensors] batch_size: expected a whole number > 0, got "abc""#
        );
    }

    #[test]
    fn global_errors() {
        // (line 4 of the config, key in [global] or "" for none, part of the message)
        #[rustfmt::skip]
        let cases = [
            ("part_size = 0", "part_size", "> 0"),
            ("part_size = abc", "part_size", "expected a size"),
            ("part_size = 8 mib", "part_size", "did you mean MiB"),
            ("parallel_uploads = 0", "parallel_uploads", "from 1 to 16"),
            ("parallel_uploads = 17", "parallel_uploads", "from 1 to 16"),
            ("parallel_uploads = two", "parallel_uploads", "\"two\""),
            ("poll_interval = 5", "poll_interval", "no unit; write e.g. 5s"),
            ("poll_interval = 0s", "poll_interval", "> 0"),
            ("poll_interval = 400d", "poll_interval", "at most 365d"),
            ("backoff_min = 10s", "backoff_min", "must be at least backoff_min"),
            ("backoff_max = 1ms", "backoff_max", "must be at least backoff_min"),
            ("metrics_listen = localhost", "metrics_listen", "IP:PORT"),
            ("metrics_file = walship.prom", "metrics_file", "absolute path"),
            ("ca_file = ca.pem", "ca_file", "absolute path"),
            ("credentials_file = creds", "credentials_file", "absolute path"),
            ("log_level = loud", "log_level", "off | error | warn"),
            ("endpoint = https://s3.example.net", "endpoint", "only applies to an s3"),
            ("region = garage", "region", "only applies to an s3"),
            ("tagret = s3://x", "tagret", "did you mean `target`?"),
            ("colour = blue", "colour", "[global] takes: state_dir, target"),
            ("batch_size = 5", "batch_size", "belongs in a [stream NAME] section"),
            ("state_dir = /other", "state_dir", "set twice (first at line 2)"),
            ("endpoint =", "endpoint", "no value after '='"),
            ("just some words", "", "expected `key = value`"),
            ("= 5", "", "the key is missing"),
        ];
        for (line, key, part) in cases {
            let key = (!key.is_empty()).then(|| format!("[global] {key}"));
            assert_error(&config_text(line, ""), Some(4), key.as_deref(), part);
        }
    }

    #[test]
    fn stream_errors() {
        let key = |k: &str| format!("[stream sensors] {k}");
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("batch_size = 5", "batch_size", "set twice (first at line 8)"),
            ("seal = sometimes", "seal", "expected next | spool"),
            ("seal_idle = 30", "seal_idle", "no unit"),
            ("max_batch_delay = 0ms", "max_batch_delay", "> 0"),
            ("max_batch_delay = 1.5s", "max_batch_delay", "fraction"),
            ("snapshot_interval = 150", "snapshot_interval", "must be a multiple of batch_size"),
            ("snapshot_interval = abc", "snapshot_interval", "whole number"),
            ("snapshot_interval = 200", "snapshot_command", "missing"),
            ("snapshot_command = snap", "snapshot_command", "absolute path"),
            ("keep_snapshots = 0", "keep_snapshots", "from 1 to 100"),
            ("keep_snapshots = 101", "keep_snapshots", "from 1 to 100"),
            ("on_archived = shred", "on_archived", "expected keep | delete | mark"),
            ("naming = postgres", "naming", "not supported in this version"),
            ("naming = oracle", "naming", "unknown naming"),
            ("dri = /x", "dri", "did you mean `dir`?"),
            ("state_dir = /x", "state_dir", "belongs in [global]"),
            ("seal_idle = ", "seal_idle", "no value"),
        ];
        for (line, k, part) in cases {
            assert_error(&config_text("", line), Some(9), Some(&key(k)), part);
        }
        // seal_idle with seal = spool, on the seal_idle line.
        assert_error(
            &config_text("", "seal = spool\nseal_idle = 30s"),
            Some(10),
            Some(&key("seal_idle")),
            "only applies with seal = next (line 9",
        );
    }

    #[test]
    fn stream_value_errors() {
        // (line of the base config, its replacement, key in [stream sensors], part of the message)
        #[rustfmt::skip]
        let cases = [
            ("batch_size = 100", "batch_size = 0", "batch_size", "must be greater than 0"),
            ("batch_size = 100", "batch_size = -1", "batch_size", "whole number > 0"),
            ("batch_size = 100", "batch_size = 100001", "batch_size", "at most 100000"),
            ("pattern = data-{seq}.log", "pattern = x.log", "pattern", "exactly one {seq}"),
            ("pattern = data-{seq}.log", "pattern = a/{seq}", "pattern", "cannot contain '/'"),
            ("dir = /var/spool/sensors", "dir = spool", "dir", "absolute path"),
        ];
        let base = config_text("", "");
        let line_of = |text: &str| base.lines().position(|l| l == text).map(|i| i + 1);
        for (from, to, key, part) in cases {
            let key = format!("[stream sensors] {key}");
            assert_error(&base.replace(from, to), line_of(from), Some(&key), part);
        }
        // Missing required keys are reported at the section header.
        for (line, key) in [
            ("dir = /var/spool/sensors\n", "dir"),
            ("pattern = data-{seq}.log\n", "pattern"),
            ("batch_size = 100\n", "batch_size"),
        ] {
            let key = format!("[stream sensors] {key}");
            let text = base.replace(line, "");
            assert_error(&text, Some(5), Some(&key), "missing; add a line such as");
        }
    }

    #[test]
    fn structure_errors() {
        let base = config_text("", "");
        let header = |h: &str| base.replace("[stream sensors]", h);
        let stream2 = "[stream other]\ndir = /o\npattern = {seq}\nbatch_size = 1\n";
        let long_name = format!("[stream {}]", "x".repeat(65));
        let without = |line: &str| base.replace(line, "");
        // (text, line, key, part of the message)
        #[rustfmt::skip]
        let cases = [
            (without("state_dir = /var/lib/walship\n"), Some(1), "[global] state_dir", "missing"),
            (without("target = file:///mnt/archive\n"), Some(1), "[global] target", "missing"),
            (without("[global]\n"), Some(1), "state_dir", "outside any section"),
            (base.replace("[global]", "[globals]"), Some(1), "", "unknown section \"[globals]\""),
            (base.replace("[global]", "[Global]"), Some(1), "", "expected [global] or [stream"),
            (base.replace("[global]", "[global x]"), Some(1), "", "[global] takes no name"),
            (base.replace("[global]", "[global"), Some(1), "", "must end with ']'"),
            (header("[stream]"), Some(5), "", "needs a name"),
            (header("[stream a b]"), Some(5), "", "cannot contain spaces"),
            (header("[stream .hidden]"), Some(5), "", "cannot start with '.'"),
            (header("[stream a/b]"), Some(5), "", "uses only letters"),
            (header("[stream ü]"), Some(5), "", "uses only letters"),
            (header(&long_name), Some(5), "", "1 to 64 characters"),
            (format!("{base}[global]\n"), Some(10), "", "[global] appears twice (first at line 1)"),
            (format!("{base}[stream sensors]\n"), Some(10), "", "(first at line 5)"),
            (stream2.to_string(), None, "", "no [global] section"),
            (String::new(), None, "", "no [global] section"),
            ("[global]\nstate_dir = /s\ntarget = file:///t\n".into(), None, "", "no [stream NAME]"),
        ];
        for (text, line, key, part) in &cases {
            let key = (!key.is_empty()).then_some(*key);
            assert_error(text, *line, key, part);
        }
        // A second, valid stream is fine.
        let two = parse_text(&format!("{base}{stream2}")).expect("valid");
        assert_eq!(two.streams.len(), 2);
    }

    #[test]
    fn targets() {
        let s3 = |bucket: &str, prefix: &str| TargetUrl::S3 { bucket: bucket.into(), prefix: prefix.into() };
        #[rustfmt::skip]
        let cases = [
            ("file:///mnt/archive", TargetUrl::File("/mnt/archive".into())),
            ("file:///", TargetUrl::File("/".into())),
            ("s3://bucket", s3("bucket", "")),
            ("s3://bucket/", s3("bucket", "")),
            ("s3://my.bucket-1/a/b/", s3("my.bucket-1", "a/b")),
            ("s3://abc//a", s3("abc", "a")),
            ("s3://abc/x_y-z.(1)!*'", s3("abc", "x_y-z.(1)!*'")),
        ];
        for (text, target) in cases {
            assert_eq!(parse_target(text), Ok(target), "{text}");
        }
        #[rustfmt::skip]
        let errors = [
            ("file://mnt/archive", "three slashes"),
            ("http://x/y", "expected s3://bucket/prefix or file:///absolute/path"),
            ("S3://bucket", "expected s3://"),
            ("s3://", "3 to 63 characters"),
            ("s3://ab", "3 to 63 characters"),
            ("s3://My-Bucket", "lowercase letters"),
            ("s3://bu_cket", "lowercase letters"),
            ("s3://-abc", "starts and ends with a letter or digit"),
            ("s3://abc-", "starts and ends with a letter or digit"),
            ("s3://a..b", "no two dots in a row"),
            ("s3://192.168.1.1", "IP address"),
            ("s3://abc/a//b", "empty, '.' or '..' part"),
            ("s3://abc/../x", "empty, '.' or '..' part"),
            ("s3://abc/a/./b", "empty, '.' or '..' part"),
            ("s3://abc/a b", "only letters, digits"),
            ("s3://abc/é", "only letters, digits"),
        ];
        for (text, part) in errors {
            let message = parse_target(text).expect_err(text);
            assert!(message.contains(part), "{text}: {message}");
        }
        let long = format!("s3://{}", "a".repeat(64));
        assert!(parse_target(&long).is_err());
        assert!(parse_target(&format!("s3://abc/{}", "p".repeat(513))).is_err());
        // The target error is reported on its line.
        let text = config_text("", "").replace("file:///mnt/archive", "ftp://x");
        assert_error(&text, Some(3), Some("[global] target"), "expected s3://");
    }

    #[test]
    fn s3_settings() {
        let ok = parse_text(&s3_text("s3://bucket/p", "part_size = 5MiB")).expect("valid");
        assert_eq!(ok.global.part_size, 5 << 20);
        assert!(parse_text(&s3_text("s3://bucket/p", "part_size = 5GiB")).is_ok());
        assert!(parse_text(&s3_text("s3://bucket", "region = garage")).is_ok());
        let part = Some("[global] part_size");
        assert_error(&s3_text("s3://bucket", "part_size = 1MiB"), Some(5), part, "at least 5MiB");
        assert_error(&s3_text("s3://bucket", "part_size = 6GiB"), Some(5), part, "at most 5GiB");
        assert_error(
            &s3_text("s3://bucket", "region = us east"),
            Some(5),
            Some("[global] region"),
            "region name",
        );
        // A file target takes small parts.
        let small = parse_text(&config_text("part_size = 1KiB", "")).expect("valid");
        assert_eq!(small.global.part_size, 1024);
        // No endpoint: reported at the [global] header, pointing at target.
        let text = s3_text("s3://bucket", "").replace("endpoint = https://s3.example.net\n", "");
        assert_error(&text, Some(1), Some("[global] endpoint"), "required with an s3:// target (line 3)");
        for bad in ["ftp://x", "https://", "https:// x", "s3.example.net", "https://a?b", "https://u@h"] {
            let text = s3_text("s3://bucket", "").replace("https://s3.example.net", bad);
            assert_error(&text, Some(4), Some("[global] endpoint"), "http:// or https:// URL");
        }
    }

    #[test]
    fn rule_check() {
        let interval = |n: u64, cmd: bool| {
            let command = if cmd { "\nsnapshot_command = /usr/bin/snap" } else { "" };
            config_text("", &format!("snapshot_interval = {n}{command}"))
        };
        let (line, key, message, shown) = error_of(&interval(150, true));
        assert_eq!(line, Some(9));
        assert_eq!(key.as_deref(), Some("[stream sensors] snapshot_interval"));
        assert!(
            message.contains("snapshot_interval (150) must be a multiple of batch_size (100)"),
            "{shown}"
        );
        assert!(message.contains("restore"), "{shown}");
        let config = parse_text(&interval(200, true)).expect("200 is a multiple of 100");
        assert_eq!(config.streams[0].snapshot_interval, 200);
        assert!(parse_text(&interval(0, false)).is_ok(), "0: snapshots off");
        let zero = config_text("", "").replace("batch_size = 100", "batch_size = 0");
        let (line, key, _, _) = error_of(&zero);
        assert_eq!((line, key.as_deref()), (Some(8), Some("[stream sensors] batch_size")));
        // The same rules, straight from the function.
        assert!(crate::plan::check_rules(100, 150).is_err());
        assert!(crate::plan::check_rules(100, 200).is_ok());
        assert!(crate::plan::check_rules(0, 0).is_err());
    }

    #[test]
    fn sizes() {
        #[rustfmt::skip]
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("65536", 65_536),
            (" 7 ", 7),
            ("10B", 10),
            ("10 B", 10),
            ("1KiB", 1024),
            ("8MiB", 8 << 20),
            ("8 MiB", 8 << 20),
            ("2GiB", 2 << 30),
            ("1TiB", 1 << 40),
            ("1KB", 1_000),
            ("1kB", 1_000),
            ("5MB", 5_000_000),
            ("3GB", 3_000_000_000),
            ("2TB", 2_000_000_000_000),
            ("16777215TiB", 16_777_215 << 40),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(*bytes), "{text:?}");
        }
        #[rustfmt::skip]
        let errors = [
            ("", "expected a size such as 8MiB"),
            ("MiB", "expected a size"),
            ("-1", "expected a size"),
            ("8 mib", "did you mean MiB?"),
            ("8M", "units are B, KiB"),
            ("8 MiB extra", "unknown unit"),
            ("1.5GiB", "use a smaller unit"),
            ("16777216TiB", "too large"),
            ("18446744073709551616", "too large"),
            ("99999999999999999999999999999999999999", "too large"),
            ("8🦀", "unknown unit"),
        ];
        for (text, part) in errors {
            let message = parse_size(text).expect_err(text);
            assert!(message.contains(part), "{text:?}: {message}");
        }
    }

    #[test]
    fn durations() {
        #[rustfmt::skip]
        let cases: &[(&str, Duration)] = &[
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("30 s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("5min", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7_200)),
            ("1d", Duration::from_secs(86_400)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(*duration), "{text:?}");
        }
        #[rustfmt::skip]
        let errors = [
            ("30", "has no unit; write e.g. 30s or 30ms"),
            ("30S", "did you mean s?"),
            ("30sec", "unknown unit"),
            ("1.5s", "use a smaller unit"),
            ("s", "expected a duration"),
            ("", "expected a duration"),
            ("-5s", "expected a duration"),
            ("1h30m", "unknown unit"),
            ("18446744073709551615d", "too large"),
            ("213503982334602d", "too large"),
            ("99999999999999999999999ms", "too large"),
        ];
        for (text, part) in errors {
            let message = parse_duration(text).expect_err(text);
            assert!(message.contains(part), "{text:?}: {message}");
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let (_, key, message, _) = error_of(&config_text(&format!("{long} = 1"), ""));
        assert!(key.is_some_and(|k| k.chars().count() < 100));
        assert!(message.len() < 1_000);
        let (_, _, message, _) = error_of(&config_text(&format!("log_level = {long}"), ""));
        assert!(message.contains('…') && message.len() < 1_000);
    }

    #[test]
    fn no_input_panics() {
        let long_number = "9".repeat(5_000);
        let mut inputs: Vec<String> = [
            "",
            "[",
            "]",
            "[]",
            "[ ]",
            "=",
            "==",
            "[global",
            "[global]]",
            "\u{feff}",
            "\0",
            "[global]\n=\n",
            "ü = ö",
            "[stream ü]",
            "[stream \u{202e}]",
            "#",
            ";",
            " #",
            "\r",
            "[global]\ntarget = s3://",
            "[global]\ntarget = file://",
            "a\u{0}b = c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for key in GLOBAL_KEYS {
            inputs.push(config_text(&format!("{key} = {long_number}"), ""));
            inputs.push(config_text(&format!("{key} = ℌ𝔢𝔩𝔩𝔬 🦀"), ""));
        }
        for key in STREAM_KEYS {
            inputs.push(config_text("", &format!("{key} = {long_number}")));
            inputs.push(config_text("", &format!("{key} = -{long_number}ms")));
            inputs.push(config_text("", &format!("{key} = \u{0}\u{7f}é")));
        }
        for input in &inputs {
            let _ = parse_text(input);
        }
        // Mutations of a valid config: cut, duplicate and replace characters.
        let chars: Vec<char> = SPEC_EXAMPLE.chars().collect();
        let alphabet: Vec<char> = "[]=#; \n\t/0123456789aé🦀{}.:-sMiB\r\u{feff}".chars().collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for _ in 0..3_000 {
            let mut mutated = chars.clone();
            for _ in 0..1 + next(8) {
                let at = next(mutated.len());
                match next(3) {
                    0 => {
                        mutated.remove(at);
                    }
                    1 => mutated.insert(at, alphabet[next(alphabet.len())]),
                    _ => mutated[at] = alphabet[next(alphabet.len())],
                }
            }
            let text: String = mutated.into_iter().collect();
            let _ = parse_text(&text);
        }
    }

    #[test]
    fn load_reads_files_and_names_them_in_errors() {
        let dir = std::env::temp_dir().join(format!("walship-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let missing = dir.join("missing.conf");
        let error = load(&missing).expect_err("missing file");
        assert!(matches!(&error, ConfigError::Read { path, .. } if *path == missing));
        let shown = error.to_string();
        assert!(shown.starts_with(&missing.display().to_string()), "{shown}");
        assert!(shown.contains("create it or pass -c FILE"), "{shown}");

        let shown = load(&dir).expect_err("a directory").to_string();
        assert!(shown.contains("pass -c"), "{shown}");

        let good = dir.join("good.conf");
        std::fs::write(&good, config_text("", "")).expect("write");
        assert_eq!(load(&good).expect("valid").path, good);

        let latin1 = dir.join("latin1.conf");
        std::fs::write(&latin1, b"[global]\n# caf\xe9\n").expect("write");
        let error = load(&latin1).expect_err("not UTF-8");
        assert!(matches!(error, ConfigError::Invalid { line: Some(2), .. }), "{error}");

        let huge = dir.join("huge.conf");
        std::fs::write(&huge, vec![b'#'; (MAX_FILE_BYTES + 10) as usize]).expect("write");
        assert!(load(&huge).expect_err("too large").to_string().contains("check the path"));

        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
