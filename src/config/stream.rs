//! A `[stream NAME]` section: the directory, how segment names carry
//! positions, sealing, batch size, snapshots, what happens to archived
//! segments and compression; and the rule for stream names.
//!
//! Stream names are 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting with '.'.
//! A name becomes an object key component (`NAME/batches/…`), a directory
//! name in `state_dir`, a metric label and a `-s` argument, so it is kept to
//! characters that need no encoding or quoting in any of them and mean the
//! same on every filesystem and store. A leading '.' is refused because
//! walship's own hidden names (temp files, `check`'s probe objects) start
//! with one. The key prefix in `target` is where any UTF-8 goes.

use std::path::PathBuf;
use std::time::Duration;

use crate::naming::Naming;

use super::ini::{Fields, quote};
use super::values::{
    absolute_path, command_line, number_in, one_of, parse_size, parse_whole, positive_duration,
};
use super::{ConfigError, invalid};

/// How a stream decides a segment is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealMode {
    /// Sealed once a higher-numbered segment exists.
    Next,
    /// Every file is sealed on sight (files arrive by atomic rename).
    Spool,
    /// Sealed only once `walship push` (or the library's `archive_now`)
    /// names it, with every position before it (with `naming = postgres`,
    /// also once PostgreSQL marks it `.ready` or `.done` in
    /// `archive_status`): the default with `naming = postgres`, since
    /// `pg_wal` holds recycled segments under future names.
    Push,
}

/// What to do with local segments once archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnArchived {
    Keep,
    Delete,
    /// Rename `NAME` to `NAME.archived` (ignored by later scans).
    Mark,
}

/// How a stream's batches are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The object is the segments' exact concatenation.
    None,
    /// Each segment its own zstd frame at this level (see `frames`).
    Zstd { level: i32 },
}

/// The zstd levels `compression_level` accepts. Levels 20 to 22 (zstd's
/// `--ultra`) are refused: their windows (up to 128 MiB) break the bound on
/// a stream's memory.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

/// `compression_level`'s value when unset.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// A `[stream NAME]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// `[A-Za-z0-9_.-]`, 1..=64 chars, not starting with '.'.
    pub name: String,
    /// Required; absolute path.
    pub dir: PathBuf,
    /// From `pattern`, or `naming = postgres` with `wal_segment_size`.
    pub naming: Naming,
    /// Default `next` (`push` with `naming = postgres`).
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
    /// Optional (also usable by a manual snapshot): a command line run
    /// through `/bin/sh -c`.
    pub snapshot_command: Option<String>,
    /// Default 1h: a snapshot command running longer is killed (its whole
    /// process group) and the job fails.
    pub snapshot_timeout: Duration,
    /// Default 7, 1..=100.
    pub keep_snapshots: u32,
    /// Default keep.
    pub on_archived: OnArchived,
    /// `replicas = on` (needs `node_id`): the same stream exists on several
    /// nodes, which elect one offloader among them (see `fleet::election`).
    /// Default off: `None`.
    pub replicas: Option<Replicas>,
    /// Default 1000: record objects folded into one compacted object on the
    /// target (`catalog::compact`); 0 turns compaction off; else 2..=100000.
    pub manifest_compaction: usize,
    /// Only with `seal = spool`; default none: nothing is ever deleted
    /// unarchived. Bytes of waiting segments past which the oldest are
    /// dropped (and recorded as a gap).
    pub backlog_limit: Option<u64>,
    /// Default none; `compression_level` (default 3, 1..=19) only with zstd.
    pub compression: Compression,
    /// `fetch` also downloads up to this many following segments into the
    /// stream's prefetch spool (0: off). At most 1000; default 8 with
    /// `naming = postgres`, 0 otherwise.
    pub prefetch_segments: u32,
    /// The spool's bound in bytes (a segment that would pass it is not
    /// prefetched). Default 128MiB.
    pub prefetch_bytes: u64,
}

/// The election settings of a stream with `replicas = on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// Default 16, at most 1,000,000: a node whose own copy reaches more
    /// than this many segments less far than the farthest is not elected.
    pub max_offloader_lag: u64,
}

/// Check a stream name (see the module doc for the rule and why).
pub fn check_stream_name(name: &str) -> Result<(), String> {
    const ALLOWED: &str = "letters, digits, '_', '.' and '-'";
    if name.is_empty() || name.len() > 64 {
        return Err(format!("a stream name is 1 to 64 characters of {ALLOWED}, got {}", quote(name)));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(format!(
            "a stream name uses only {ALLOWED} (it is an object key component, a directory \
             in state_dir and a metric label; the key prefix in target takes any UTF-8), got {}",
            quote(name)
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "a stream name cannot start with '.' (walship's own hidden files and probe objects do), got {}",
            quote(name)
        ));
    }
    Ok(())
}

/// Largest `batch_size`: a batch is one object, downloaded whole to restore
/// any position in it.
pub const MAX_BATCH_SIZE: u64 = 100_000;

/// Read one `[stream NAME]` section.
pub fn parse_stream(f: &Fields, name: &str) -> Result<StreamConfig, ConfigError> {
    let dir = f.value("dir", absolute_path)?;
    let naming = parse_naming(f)?;
    let (seal, seal_idle) = parse_sealing(f, &naming)?;
    let batch_size = f.value("batch_size", parse_batch_size)?;
    let (snapshot_interval, snapshot_command) = parse_snapshots(f, batch_size)?;
    let prefetch_segments = parse_prefetch_segments(f, &naming)?;
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
        snapshot_timeout: f.value("snapshot_timeout", positive_duration)?,
        keep_snapshots: f.value("keep_snapshots", |v| number_in(v, 1, 100))? as u32,
        on_archived: f.value("on_archived", parse_on_archived)?,
        replicas: parse_replicas(f)?,
        manifest_compaction: f.value("manifest_compaction", parse_compaction)?,
        backlog_limit: parse_backlog_limit(f, seal)?,
        compression: parse_compression(f)?,
        prefetch_segments,
        prefetch_bytes: f.value("prefetch_bytes", parse_size)?,
    })
}

/// `replicas` (default off) and `max_offloader_lag`, which only goes with on.
fn parse_replicas(f: &Fields) -> Result<Option<Replicas>, ConfigError> {
    let on = f.value("replicas", |v| one_of(v, &[("off", false), ("on", true)]))?;
    let max_offloader_lag = f.value("max_offloader_lag", |v| number_in(v, 0, 1_000_000))?;
    if !on && f.entry("max_offloader_lag").is_some() {
        return Err(f.error(
            "max_offloader_lag",
            "only applies with replicas = on; remove this line or add `replicas = on`".into(),
        ));
    }
    Ok(on.then_some(Replicas { max_offloader_lag }))
}

/// The segment naming: `pattern`, or `naming = postgres` (with
/// `wal_segment_size`, which goes with it alone).
fn parse_naming(f: &Fields) -> Result<Naming, ConfigError> {
    let Some(entry) = f.entry("naming") else {
        if f.entry("wal_segment_size").is_some() {
            return Err(
                f.error("wal_segment_size", "only applies with naming = postgres; remove this line".into())
            );
        }
        return f.value("pattern", Naming::from_pattern);
    };
    if entry.value != "postgres" {
        return Err(f.error(
            "naming",
            format!(
                "unknown naming {}; write `naming = postgres` for PostgreSQL WAL, or remove this \
                 line and use `pattern` (e.g. data-{{seq}}.log)",
                quote(&entry.value)
            ),
        ));
    }
    if f.entry("pattern").is_some() {
        return Err(f.error(
            "pattern",
            format!(
                "naming = postgres (line {}) names the segments already; remove one of the two",
                f.line_of("naming")
            ),
        ));
    }
    f.value("wal_segment_size", |v| parse_size(v).and_then(Naming::postgres))
}

/// `seal` (default next, push with naming = postgres) and `seal_idle`,
/// which only goes with next.
fn parse_sealing(f: &Fields, naming: &Naming) -> Result<(SealMode, Option<Duration>), ConfigError> {
    let modes = [("next", SealMode::Next), ("spool", SealMode::Spool), ("push", SealMode::Push)];
    let seal = match (naming.wal(), f.entry("seal")) {
        (Some(_), None) => SealMode::Push,
        _ => f.value("seal", |v| one_of(v, &modes))?,
    };
    if naming.wal().is_some() && seal == SealMode::Next {
        return Err(f.error(
            "seal",
            "cannot be next with naming = postgres: pg_wal keeps recycled segments under future \
             names, so a higher-numbered file proves nothing; use push (the default: each \
             segment is archived when archive_command runs `walship push`) or spool"
                .into(),
        ));
    }
    let seal_idle = f.optional("seal_idle", positive_duration)?;
    if seal_idle.is_some() && seal != SealMode::Next {
        let name = modes.iter().find(|(_, mode)| *mode == seal).map_or("", |(name, _)| *name);
        return Err(f.error(
            "seal_idle",
            format!(
                "only applies with seal = next (line {}: seal = {name} decides otherwise); \
                 remove this line",
                f.line_of("seal")
            ),
        ));
    }
    Ok((seal, seal_idle))
}

/// 0 (off) or 2..=100000 record objects per compacted object.
fn parse_compaction(value: &str) -> Result<usize, String> {
    match parse_whole(value) {
        Some(0) => Ok(0),
        Some(n @ 2..=100_000) => Ok(n as usize),
        _ => Err(format!(
            "expected 0 (no compaction) or a whole number from 2 to 100000 (records per compacted \
             manifest object), got {}",
            quote(value)
        )),
    }
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
fn parse_snapshots(f: &Fields, batch_size: u64) -> Result<(u64, Option<String>), ConfigError> {
    let snapshot_interval = f.value("snapshot_interval", |v| {
        parse_whole(v).ok_or_else(|| {
            format!("expected a whole number of positions (0: no snapshots), got {}", quote(v))
        })
    })?;
    if let Err(reason) = crate::plan::check_rules(batch_size, snapshot_interval) {
        let key = if batch_size == 0 { "batch_size" } else { "snapshot_interval" };
        return Err(f.error(key, reason));
    }
    let snapshot_command = f.optional("snapshot_command", command_line)?;
    if snapshot_interval > 0 && snapshot_command.is_none() {
        return Err(invalid(
            f.path,
            Some(f.line_of("snapshot_interval")),
            Some(format!("{} snapshot_command", f.label)),
            "missing: snapshot_interval turns snapshots on, and they are taken by this \
             command; add `snapshot_command = COMMAND LINE` (run through /bin/sh -c), or set \
             snapshot_interval = 0"
                .into(),
        ));
    }
    Ok((snapshot_interval, snapshot_command))
}

/// `backlog_limit`: a size above 0, and only for a spool, whose files were
/// handed over to walship; with `seal = next` the directory is the
/// application's own log, which walship never deletes unarchived.
fn parse_backlog_limit(f: &Fields, seal: SealMode) -> Result<Option<u64>, ConfigError> {
    let limit = f.optional("backlog_limit", |v| match parse_size(v)? {
        0 => Err(format!("expected a size above 0, got {}; remove the line for no limit", quote(v))),
        bytes => Ok(bytes),
    })?;
    if limit.is_some() && seal != SealMode::Spool {
        return Err(f.error(
            "backlog_limit",
            "only applies with seal = spool: it deletes waiting segments unarchived, which walship \
             does only in a spool handed over to it, never in an application's own log directory; \
             set seal = spool or remove this line"
                .into(),
        ));
    }
    Ok(limit)
}

/// `compression` (default none) and `compression_level`, which only goes
/// with zstd.
fn parse_compression(f: &Fields) -> Result<Compression, ConfigError> {
    let zstd = f.value("compression", |v| one_of(v, &[("none", false), ("zstd", true)]))?;
    let level = f.optional("compression_level", parse_zstd_level)?;
    match (zstd, level) {
        (true, level) => Ok(Compression::Zstd { level: level.unwrap_or(DEFAULT_ZSTD_LEVEL) }),
        (false, None) => Ok(Compression::None),
        (false, Some(_)) => Err(f.error(
            "compression_level",
            "only applies with compression = zstd; remove this line or set compression = zstd".into(),
        )),
    }
}

fn parse_zstd_level(value: &str) -> Result<i32, String> {
    let (low, high) = (*ZSTD_LEVELS.start() as u64, *ZSTD_LEVELS.end() as u64);
    let level = number_in(value, low, high).map_err(|_| {
        format!(
            "expected a zstd level from {low} to {high} (3 is zstd's default; 20 to 22 need \
             windows too large for walship's memory bound), got {}",
            quote(value)
        )
    })?;
    Ok(level as i32)
}

/// `prefetch_segments`: default 8 with `naming = postgres` (recovery asks
/// for one segment after another), off otherwise unless set (a prefetch
/// writes into the state directory, which a one-off `fetch` should not).
fn parse_prefetch_segments(f: &Fields, naming: &Naming) -> Result<u32, ConfigError> {
    if naming.wal().is_none() && f.entry("prefetch_segments").is_none() {
        return Ok(0);
    }
    Ok(f.value("prefetch_segments", |v| number_in(v, 0, 1000))? as u32)
}

fn parse_on_archived(value: &str) -> Result<OnArchived, String> {
    one_of(value, &[("keep", OnArchived::Keep), ("delete", OnArchived::Delete), ("mark", OnArchived::Mark)])
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::Compression;

    #[test]
    fn stream_errors() {
        let key = |k: &str| format!("[stream sensors] {k}");
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("batch_size = 5", "batch_size", "set twice (first at line 8)"),
            ("seal = sometimes", "seal", "expected next | spool | push"),
            ("seal_idle = 30", "seal_idle", "no unit"),
            ("max_batch_delay = 0ms", "max_batch_delay", "> 0"),
            ("max_batch_delay = 1.5s", "max_batch_delay", "fraction"),
            ("snapshot_interval = 150", "snapshot_interval", "must be a multiple of batch_size"),
            ("snapshot_interval = abc", "snapshot_interval", "whole number"),
            ("snapshot_interval = 200", "snapshot_command", "missing"),
            ("snapshot_command = ", "snapshot_command", "no value"),
            ("snapshot_timeout = 0s", "snapshot_timeout", "> 0"),
            ("snapshot_timeout = 5", "snapshot_timeout", "no unit"),
            ("keep_snapshots = 0", "keep_snapshots", "from 1 to 100"),
            ("keep_snapshots = 101", "keep_snapshots", "from 1 to 100"),
            ("on_archived = shred", "on_archived", "expected keep | delete | mark"),
            ("wal_segment_size = 16MiB", "wal_segment_size", "only applies with naming = postgres"),
            ("prefetch_segments = 1001", "prefetch_segments", "from 0 to 1000"),
            ("prefetch_bytes = lots", "prefetch_bytes", "a size"),
            ("naming = oracle", "naming", "unknown naming"),
            ("dri = /x", "dri", "did you mean `dir`?"),
            ("state_dir = /x", "state_dir", "belongs in [global]"),
            ("seal_idle = ", "seal_idle", "no value"),
            ("replicas = yes", "replicas", "expected off | on"),
            ("max_offloader_lag = 4", "max_offloader_lag", "only applies with replicas = on"),
            ("replicas = on", "replicas", "add `node_id = NAME` to [global]"),
            ("backlog_limit = 2GiB", "backlog_limit", "only applies with seal = spool"),
            ("compression = gzip", "compression", "expected none | zstd"),
            ("compression_level = 5", "compression_level", "only applies with compression = zstd"),
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
        assert_error(
            &config_text("", "seal = spool\nbacklog_limit = 0"),
            Some(10),
            Some(&key("backlog_limit")),
            "a size above 0",
        );
        let spool = parse_text(&config_text("", "seal = spool\nbacklog_limit = 2GiB")).expect("valid");
        assert_eq!(spool.streams[0].backlog_limit, Some(2 << 30));
    }

    /// `naming = postgres` replaces `pattern`, takes `wal_segment_size`
    /// (one validator: a power of two, 1MiB..1GiB) and seals by push.
    #[test]
    fn postgres_naming() {
        let base = config_text("", "").replace("pattern = data-{seq}.log", "naming = postgres");
        let config = parse_text(&base).expect("naming = postgres");
        let stream = &config.streams[0];
        assert_eq!(stream.naming.wal().map(|w| w.segment_size()), Some(16 << 20));
        assert_eq!(stream.seal, crate::config::SealMode::Push);
        assert_eq!(stream.naming.position("000000020000000000000030"), Some(2 << 40 | 0x30));
        assert_eq!((stream.prefetch_segments, stream.prefetch_bytes), (8, 128 << 20));
        // Off by default under a pattern (a one-off fetch writes nothing
        // into the state directory), on when asked for.
        let pattern = parse_text(&config_text("", "")).unwrap();
        assert_eq!(pattern.streams[0].prefetch_segments, 0);
        let asked = parse_text(&config_text("", "prefetch_segments = 3")).unwrap();
        assert_eq!(asked.streams[0].prefetch_segments, 3);
        let one = parse_text(&format!("{base}wal_segment_size = 1MiB\nseal = spool\n")).expect("1MiB");
        assert_eq!(one.streams[0].naming.wal().map(|w| w.segment_size()), Some(1 << 20));
        assert_eq!(one.streams[0].seal, crate::config::SealMode::Spool);
        let key = |k: &str| format!("[stream sensors] {k}");
        let line = base.lines().count() + 1;
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("wal_segment_size = 3MiB", "wal_segment_size", "power of two from 1MiB to 1GiB"),
            ("wal_segment_size = 512KiB", "wal_segment_size", "power of two from 1MiB to 1GiB"),
            ("wal_segment_size = 2GiB", "wal_segment_size", "power of two from 1MiB to 1GiB"),
            ("wal_segment_size = big", "wal_segment_size", "a size"),
            ("seal = next", "seal", "recycled segments"),
            ("seal_idle = 30s", "seal_idle", "seal = push decides otherwise"),
            ("pattern = x{seq}", "pattern", "names the segments already"),
        ];
        for (text, k, part) in cases {
            assert_error(&format!("{base}{text}\n"), Some(line), Some(&key(k)), part);
        }
        let oracle = base.replace("naming = postgres", "naming = oracle");
        assert_error(
            &oracle,
            base.lines().position(|l| l == "naming = postgres").map(|i| i + 1),
            Some(&key("naming")),
            "unknown naming",
        );
    }

    #[test]
    fn replicas_need_a_node_id_and_take_a_lag() {
        use super::Replicas;
        let on = parse_text(&config_text("node_id = n1", "replicas = on")).expect("valid");
        assert_eq!(on.streams[0].replicas, Some(Replicas { max_offloader_lag: 16 }));
        let lag =
            parse_text(&config_text("node_id = n1", "replicas = on\nmax_offloader_lag = 0")).expect("valid");
        assert_eq!(lag.streams[0].replicas, Some(Replicas { max_offloader_lag: 0 }));
        assert_eq!(parse_text(&config_text("node_id = n1", "")).expect("valid").streams[0].replicas, None);
        let key = "[stream sensors] max_offloader_lag";
        assert_error(
            &config_text("node_id = n1", "replicas = on\nmax_offloader_lag = x"),
            Some(10),
            Some(key),
            "whole number",
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
    fn compression_levels() {
        let with = |extra: &str| config_text("", &format!("compression = zstd{extra}"));
        let compression = |text: &str| parse_text(text).ok().map(|c| c.streams[0].compression);
        assert_eq!(compression(&config_text("", "")), Some(Compression::None));
        assert_eq!(compression(&with("")), Some(Compression::Zstd { level: 3 }));
        assert_eq!(compression(&with("\ncompression_level = 1")), Some(Compression::Zstd { level: 1 }));
        assert_eq!(compression(&with("\ncompression_level = 19")), Some(Compression::Zstd { level: 19 }));
        let key = Some("[stream sensors] compression_level");
        for bad in ["0", "20", "22", "-1", "three", "3.5"] {
            let text = with(&format!("\ncompression_level = {bad}"));
            assert_error(&text, Some(10), key, "expected a zstd level from 1 to 19");
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
}
