//! Helpers of the config tests: a small valid config to vary, and
//! assertions on where an error points.

use std::path::Path;

use super::{Config, ConfigError, parse};

pub fn parse_text(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("walship.conf"), text)
}

/// A valid config with `global_extra` as line 4 and `stream_extra` from
/// line 9. Line 1 is `[global]`, line 5 `[stream sensors]`, line 8
/// `batch_size = 100`.
pub fn config_text(global_extra: &str, stream_extra: &str) -> String {
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
pub fn s3_text(target: &str, global_extra: &str) -> String {
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
pub fn error_of(text: &str) -> (Option<usize>, Option<String>, String, String) {
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
pub fn assert_error(text: &str, line: Option<usize>, key: Option<&str>, part: &str) {
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
pub const SPEC_EXAMPLE: &str = r#"[global]
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
prune_interval = 1h

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
