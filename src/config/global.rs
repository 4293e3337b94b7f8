//! The `[global]` section: state directory, target and its S3 settings,
//! upload sizes, timeouts, backoff, metrics and logging.
//!
//! Target settings are validated by the target module's own validators
//! ([`crate::target::url`], [`crate::target::s3::settings`]); this file only
//! places them in the file (line, key) and checks the rules that tie keys
//! together (an endpoint only with s3, backoff_min <= backoff_max).

use std::path::PathBuf;
use std::time::Duration;

use crate::target::s3::settings as s3;
use crate::target::url::TargetUrl;

use super::ConfigError;
use super::ini::{Fields, quote};
use super::metered::{Metered, parse_metered};
use super::values::{absolute_path, number_in, parse_listen, parse_log_level, parse_size, positive_duration};

/// The `[global]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Required; absolute path.
    pub state_dir: PathBuf,
    /// Required; `file:///abs/path` or `s3://bucket[/prefix]`.
    pub target: TargetUrl,
    /// s3 only; required with an s3 target. `http://` or `https://` and an
    /// authority (no path), stored as its origin without a trailing '/'.
    pub endpoint: Option<String>,
    /// s3 only.
    pub region: String,
    /// Optional; absolute path. Absent: environment or `$CREDENTIALS_DIRECTORY`.
    pub credentials_file: Option<PathBuf>,
    /// Optional; absolute path to a PEM file of CA certificates. When set,
    /// TLS trusts these certificates only, instead of the bundled WebPKI
    /// roots (ureq keeps one root set per agent).
    pub ca_file: Option<PathBuf>,
    /// More than 0; 5 MiB to 5 GiB with an s3 target.
    pub part_size: u64,
    /// 1..=16.
    pub parallel_uploads: usize,
    /// More than 0.
    pub poll_interval: Duration,
    /// s3 only. DNS, TCP and TLS setup, each.
    pub connect_timeout: Duration,
    /// s3 only. The longest wait for a response, and the longest any send
    /// or receive may stall, so no request can hang.
    pub io_timeout: Duration,
    /// More than 0.
    pub backoff_min: Duration,
    /// At least backoff_min.
    pub backoff_max: Duration,
    /// Optional; `IP:PORT` (checked to parse as a socket address).
    pub metrics_listen: Option<String>,
    /// Optional; absolute path of a node_exporter textfile.
    pub metrics_file: Option<PathBuf>,
    pub log_level: log::LevelFilter,
    /// Optional; this node's name among the nodes archiving into the same
    /// target ([`check_node_id`]). Set: every stream keeps a heartbeat
    /// object `STREAM/nodes/NODE_ID` current (see `fleet`).
    pub node_id: Option<String>,
    /// 1s..=1h; how often heartbeats are written.
    pub heartbeat_interval: Duration,
    /// Bandwidth and data budgets (see [`Metered`]).
    pub metered: Metered,
    /// More than 0: how often a running daemon applies retention.
    pub prune_interval: Duration,
}

/// Check a node id: 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting with '.'
/// (it is an object key component, `STREAM/nodes/NODE_ID`, and a metric
/// label, like a stream name).
pub fn check_node_id(id: &str) -> Result<(), String> {
    let plain = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "a node id is 1 to 64 letters, digits, '_', '.' and '-', not starting with '.' \
             (it names an object on the target and a metric label), got {}",
            quote(id)
        ))
    }
}

/// A heartbeat interval: from 1s to 1h.
fn parse_heartbeat_interval(value: &str) -> Result<Duration, String> {
    let interval = positive_duration(value)?;
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(3600) {
        return Err(format!("expected a duration from 1s to 1h, got {}", quote(value)));
    }
    Ok(interval)
}

/// Read the `[global]` section.
pub fn parse_global(f: &Fields) -> Result<Global, ConfigError> {
    let state_dir = f.value("state_dir", absolute_path)?;
    let target = f.value("target", TargetUrl::parse)?;
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
        part_size: f.value("part_size", |v| parse_part_size(v, is_s3))?,
        parallel_uploads: f.value("parallel_uploads", |v| number_in(v, 1, 16))? as usize,
        poll_interval: f.value("poll_interval", positive_duration)?,
        connect_timeout: f.value("connect_timeout", positive_duration)?,
        io_timeout: f.value("io_timeout", positive_duration)?,
        backoff_min,
        backoff_max,
        metrics_listen: f.optional("metrics_listen", parse_listen)?,
        metrics_file: f.optional("metrics_file", absolute_path)?,
        log_level: f.value("log_level", parse_log_level)?,
        node_id: f.optional("node_id", |v| check_node_id(v).map(|()| v.to_string()))?,
        heartbeat_interval: f.value("heartbeat_interval", parse_heartbeat_interval)?,
        metered: parse_metered(f)?,
        prune_interval: f.value("prune_interval", positive_duration)?,
    })
}

/// `endpoint` (required) and `region` for an s3 target; both refused with a
/// file target.
fn parse_s3_keys(f: &Fields, is_s3: bool) -> Result<(Option<String>, String), ConfigError> {
    let endpoint = f.optional("endpoint", |v| s3::parse_endpoint(v).map(|e| e.origin))?;
    let region = f.value("region", |v| s3::check_region(v).map(|()| v.to_string()))?;
    let set_without_s3 = ["endpoint", "region"].into_iter().find(|key| !is_s3 && f.entry(key).is_some());
    if let Some(key) = set_without_s3 {
        return Err(
            f.error(key, "only applies to an s3:// target, and target is file://; remove this line".into())
        );
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
    Ok((endpoint, region))
}

/// `backoff_min` and `backoff_max`, min <= max.
fn parse_backoff(f: &Fields) -> Result<(Duration, Duration), ConfigError> {
    let backoff_min = f.value("backoff_min", positive_duration)?;
    let backoff_max = f.value("backoff_max", positive_duration)?;
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

/// A size above 0; within S3's part limits with an s3 target.
fn parse_part_size(value: &str, is_s3: bool) -> Result<u64, String> {
    let size = parse_size(value)?;
    if size == 0 {
        return Err(format!("expected a size > 0, got {}", quote(value)));
    }
    if is_s3 {
        s3::check_part_size(size).map_err(|why| format!("{why} ({})", quote(value)))?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

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
            ("prune_interval = 0s", "prune_interval", "> 0"),
            ("backoff_min = 10s", "backoff_min", "must be at least backoff_min"),
            ("backoff_max = 1ms", "backoff_max", "must be at least backoff_min"),
            ("metrics_listen = localhost", "metrics_listen", "IP:PORT"),
            ("metrics_file = walship.prom", "metrics_file", "absolute path"),
            ("ca_file = ca.pem", "ca_file", "absolute path"),
            ("credentials_file = creds", "credentials_file", "absolute path"),
            ("log_level = loud", "log_level", "off | error | warn"),
            ("node_id = gw 17", "node_id", "a node id is 1 to 64"),
            ("node_id = .hidden", "node_id", "not starting with '.'"),
            ("heartbeat_interval = 500ms", "heartbeat_interval", "from 1s to 1h"),
            ("heartbeat_interval = 2h", "heartbeat_interval", "from 1s to 1h"),
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
    fn target_errors_are_reported_on_their_line() {
        let text = config_text("", "").replace("file:///mnt/archive", "ftp://x");
        assert_error(&text, Some(3), Some("[global] target"), "expected s3://");
        let text = s3_text("s3://abc/a//b", "");
        assert_error(&text, Some(3), Some("[global] target"), "empty, '.' or '..' part");
        let ok = parse_text(&s3_text("s3://abc/site+7:edge/wal", "")).expect("valid");
        assert_eq!(
            ok.global.target,
            TargetUrl::S3 { bucket: "abc".into(), prefix: "site+7:edge/wal".into() }
        );
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
            assert_error(&text, Some(4), Some("[global] endpoint"), "http");
        }
    }

    /// Regression: an endpoint with a path passed the config (and `check`
    /// printed "ok"), then every request failed at run time with exit 1.
    #[test]
    fn endpoint_with_a_path_is_refused_at_load() {
        let text =
            s3_text("s3://bucket", "").replace("https://s3.example.net", "https://s3.example.net/base");
        assert_error(&text, Some(4), Some("[global] endpoint"), "takes no path");
        let ok = s3_text("s3://bucket", "").replace("https://s3.example.net", "http://minio.local:9000/");
        assert_eq!(
            parse_text(&ok).expect("valid").global.endpoint.as_deref(),
            Some("http://minio.local:9000")
        );
    }
}
