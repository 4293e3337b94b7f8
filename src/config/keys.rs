//! Every configuration key in one table: its section, and what it means
//! when the file does not set it (required, a default, or off).
//!
//! A default is written as it would be in the file (`8MiB`, `1s`) and read
//! by the key's own validator, so the defaults obey the same rules as what
//! an operator writes, and this table is the only place they are stated.
//! The order is SPEC.md's; unknown-key messages list keys in this order.

/// The section a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Global,
    Stream,
}

/// What an unset key means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// The key must be set; the example value is shown in the message.
    Required { example: &'static str },
    /// This value, as written in the file.
    Default(&'static str),
    /// Nothing: the feature it configures is off (or another key decides).
    Off,
}

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub section: Section,
    pub name: &'static str,
    pub unset: Unset,
}

const fn global(name: &'static str, unset: Unset) -> Key {
    Key { section: Section::Global, name, unset }
}

const fn stream(name: &'static str, unset: Unset) -> Key {
    Key { section: Section::Stream, name, unset }
}

const fn required(example: &'static str) -> Unset {
    Unset::Required { example }
}

use Unset::{Default, Off};

/// Every key walship reads.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    global("state_dir", required("/var/lib/walship")),
    global("target", required("s3://bucket/prefix")),
    // Required with an s3:// target, refused with file:// (see global.rs).
    global("endpoint", Off),
    global("region", Default("us-east-1")),
    global("credentials_file", Off),
    global("ca_file", Off),
    global("part_size", Default("8MiB")),
    global("parallel_uploads", Default("2")),
    global("poll_interval", Default("1s")),
    global("connect_timeout", Default("10s")),
    global("io_timeout", Default("30s")),
    global("backoff_min", Default("10ms")),
    global("backoff_max", Default("5s")),
    global("metrics_listen", Off),
    global("metrics_file", Off),
    global("log_level", Default("info")),
    global("node_id", Off),
    global("heartbeat_interval", Default("10s")),
    global("bandwidth_limit", Off),
    global("bandwidth_schedule", Off),
    global("restore_bandwidth_limit", Off),
    global("data_budget", Off),
    global("budget_period_start", Off),
    global("prune_interval", Default("1h")),
    stream("dir", required("/var/spool/NAME")),
    stream("pattern", required("data-{seq}.log")),
    // `naming = postgres` replaces `pattern` (see stream.rs).
    stream("naming", Off),
    stream("wal_segment_size", Default("16MiB")),
    // With naming = postgres the default is push (see stream.rs).
    stream("seal", Default("next")),
    stream("seal_idle", Off),
    stream("batch_size", required("100")),
    stream("max_batch_delay", Off),
    stream("snapshot_interval", Default("0")),
    stream("snapshot_command", Off),
    stream("snapshot_timeout", Default("1h")),
    stream("keep_snapshots", Default("7")),
    stream("on_archived", Default("keep")),
    stream("replicas", Default("off")),
    stream("max_offloader_lag", Default("16")),
    stream("manifest_compaction", Default("1000")),
    stream("backlog_limit", Off),
    stream("compression", Default("none")),
    // Only with compression = zstd (see stream.rs).
    stream("compression_level", Off),
    // With naming = postgres only; 0 (off) otherwise (see stream.rs).
    stream("prefetch_segments", Default("8")),
    stream("prefetch_bytes", Default("128MiB")),
];

/// The key `name` of `section`, if there is one.
pub fn find(section: Section, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.section == section && key.name == name)
}

/// The names of `section`'s keys, in table order.
pub fn names(section: Section) -> impl Iterator<Item = &'static str> {
    KEYS.iter().filter(move |key| key.section == section).map(|key| key.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_within_a_section() {
        for (index, key) in KEYS.iter().enumerate() {
            let twin = KEYS[..index].iter().any(|k| k.section == key.section && k.name == key.name);
            assert!(!twin, "{} is in the table twice", key.name);
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(find(Section::Global, "part_size").map(|k| k.unset), Some(Default("8MiB")));
        assert_eq!(find(Section::Stream, "part_size"), None);
        assert_eq!(names(Section::Stream).next(), Some("dir"));
    }
}
