//! Configuration: the INI file of SPEC.md, parsed into typed values.
//!
//! `load(path)` reads the file and hands the text to `parse`, which does no
//! I/O and is what tests and the fuzzer call. Every error names the file,
//! the line and the key, and says what is expected. Unknown sections and keys
//! are errors. The rule checks (batch_size > 0, snapshot_interval a multiple
//! of batch_size) run at load, so a bad config never reaches a stream.

use std::path::PathBuf;
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
    /// In file order; names are unique.
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
    pub state_dir: PathBuf,
    pub target: TargetUrl,
    /// s3 only; required with an s3 target. `http://` or `https://` URL.
    pub endpoint: Option<String>,
    /// s3 only; default `us-east-1`.
    pub region: String,
    pub credentials_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Default 8 MiB; at least 5 MiB with an s3 target.
    pub part_size: u64,
    /// Default 2; 1..=16.
    pub parallel_uploads: usize,
    /// Default 1 s.
    pub poll_interval: Duration,
    /// Default 10 ms.
    pub backoff_min: Duration,
    /// Default 5 s; >= backoff_min.
    pub backoff_max: Duration,
    pub metrics_listen: Option<String>,
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
    pub dir: PathBuf,
    pub naming: Naming,
    pub seal: SealMode,
    /// Only with `seal = next`: the newest segment is sealed after this idle time.
    pub seal_idle: Option<Duration>,
    pub batch_size: u64,
    pub max_batch_delay: Option<Duration>,
    /// 0: no snapshots.
    pub snapshot_interval: u64,
    pub snapshot_command: Option<PathBuf>,
    /// Default 7, at most 100.
    pub keep_snapshots: u32,
    pub on_archived: OnArchived,
}

impl Config {
    /// The stream called `name`.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }
}
