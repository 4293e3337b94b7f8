//! The one place object keys are built and parsed.
//!
//! Layout under a target's root, per stream:
//!
//! ```text
//! STREAM/batches/FIRST-LAST            batch object: its segments concatenated
//! STREAM/snapshots/POSITION            snapshot object
//! STREAM/files/NAME                    a file archived beside the log under its
//!                                      own name (PostgreSQL history and backup files)
//! STREAM/manifest/FIRST-LAST.batch     remote record of that batch (level 0)
//! STREAM/manifest/FIRST-LAST.gap       remote record of a gap (level 0)
//! STREAM/manifest/FIRST-LAST.lN        compacted records covering FIRST..LAST,
//!                                      level N = 1..9 (written by compaction)
//! STREAM/manifest/prune-SEQUENCE       remote record of prune number SEQUENCE
//! STREAM/manifest/snapshot-POSITION    remote record of the snapshot at POSITION
//! STREAM/nodes/NODE_ID                 that node's heartbeat for the stream (elections)
//! ```
//!
//! and once per target, for `walship fleet`:
//!
//! ```text
//! .walship/fleet/NODE_ID               that node's heartbeats of all its streams
//! ```
//!
//! (A stream name cannot start with '.', so `.walship/` is never a stream.)
//!
//! FIRST, LAST, POSITION and SEQUENCE are 16 lower-case hex digits, so a
//! lexical listing is in position order: log records by first position
//! (a compacted object sorts just after the level-0 record it starts with),
//! then the prunes by sequence, then the snapshots by position.

/// Highest compaction level a record key may name.
pub const MAX_LEVEL: u8 = 9;

/// Key of the batch object covering positions `first..=last`.
pub fn batch_key(stream: &str, first: u64, last: u64) -> String {
    format!("{stream}/batches/{first:016x}-{last:016x}")
}

/// Prefix under which a stream's batch objects live.
pub fn batches_prefix(stream: &str) -> String {
    format!("{stream}/batches/")
}

/// The `(first, last)` of a batch key made by [`batch_key`].
pub fn parse_batch_key(stream: &str, key: &str) -> Option<(u64, u64)> {
    parse_range(key.strip_prefix(&batches_prefix(stream))?)
}

/// Key of a file archived beside the log under its own `name` (one the
/// stream's naming calls a side file: `naming::wal::side_file`).
pub fn side_file_key(stream: &str, name: &str) -> String {
    format!("{stream}/files/{name}")
}

/// Prefix under which a stream's heartbeats live, one per node.
pub fn heartbeats_prefix(stream: &str) -> String {
    format!("{stream}/nodes/")
}

/// Key of `node`'s heartbeat for `stream`.
pub fn heartbeat_key(stream: &str, node: &str) -> String {
    format!("{stream}/nodes/{node}")
}

/// The node id of a heartbeat key made by [`heartbeat_key`] (not checked
/// further: the heartbeat's reader does).
pub fn parse_heartbeat_key<'k>(stream: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(stream)?.strip_prefix("/nodes/").filter(|node| !node.is_empty() && !node.contains('/'))
}

/// Prefix of the fleet index: one object per node, each holding that
/// node's heartbeats of all its streams (`fleet::heartbeat::parse_index`).
pub const FLEET_INDEX_PREFIX: &str = ".walship/fleet/";

/// Key of `node`'s object in the fleet index.
pub fn fleet_index_key(node: &str) -> String {
    format!("{FLEET_INDEX_PREFIX}{node}")
}

/// The node id of a fleet index key made by [`fleet_index_key`] (not
/// checked further: the index's reader does).
pub fn parse_fleet_index_key(key: &str) -> Option<&str> {
    key.strip_prefix(FLEET_INDEX_PREFIX).filter(|node| !node.is_empty() && !node.contains('/'))
}

/// Key of the snapshot object at `position`.
pub fn snapshot_key(stream: &str, position: u64) -> String {
    format!("{stream}/snapshots/{position:016x}")
}

/// The position of a snapshot key made by [`snapshot_key`].
pub fn parse_snapshot_key(stream: &str, key: &str) -> Option<u64> {
    let hex = key.strip_prefix(stream)?.strip_prefix("/snapshots/")?;
    let position = u64::from_str_radix(hex, 16).ok()?;
    (snapshot_key(stream, position) == key).then_some(position)
}

/// Prefix under which a stream's remote manifest records live.
pub fn records_prefix(stream: &str) -> String {
    format!("{stream}/manifest/")
}

/// What a remote record object holds, as its key says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKey {
    /// Log records covering exactly `first..=last`: one record of `kind`
    /// (`"batch"` or `"gap"`) at level 0, or all of them at a higher level.
    Log { first: u64, last: u64, level: LogLevel },
    /// The prune record numbered `sequence`.
    Prune { sequence: u64 },
    /// The snapshot record at `position`.
    Snapshot { position: u64 },
}

/// Level 0 (one record, named by its kind) or a compaction level 1..=9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Single(&'static str),
    Compacted(u8),
}

impl RecordKey {
    /// The object's key for `stream`.
    pub fn key(&self, stream: &str) -> String {
        let prefix = records_prefix(stream);
        match *self {
            RecordKey::Log { first, last, level: LogLevel::Single(kind) } => {
                format!("{prefix}{first:016x}-{last:016x}.{kind}")
            }
            RecordKey::Log { first, last, level: LogLevel::Compacted(level) } => {
                format!("{prefix}{first:016x}-{last:016x}.l{level}")
            }
            RecordKey::Prune { sequence } => format!("{prefix}prune-{sequence:016x}"),
            RecordKey::Snapshot { position } => format!("{prefix}snapshot-{position:016x}"),
        }
    }

    /// Parse a key made by [`RecordKey::key`]; `None` for anything else
    /// (foreign objects under the prefix).
    pub fn parse(stream: &str, key: &str) -> Option<RecordKey> {
        let rest = key.strip_prefix(&records_prefix(stream))?;
        if let Some(sequence) = rest.strip_prefix("prune-") {
            return Some(RecordKey::Prune { sequence: hex16(sequence)? });
        }
        if let Some(position) = rest.strip_prefix("snapshot-") {
            return Some(RecordKey::Snapshot { position: hex16(position)? });
        }
        let (range, tag) = rest.split_once('.')?;
        let (first, last) = parse_range(range)?;
        let level = match tag {
            "batch" => LogLevel::Single("batch"),
            "gap" => LogLevel::Single("gap"),
            _ => {
                let digit = tag.strip_prefix('l').filter(|d| d.len() == 1)?.parse::<u8>().ok()?;
                LogLevel::Compacted(Some(digit).filter(|level| (1..=MAX_LEVEL).contains(level))?)
            }
        };
        Some(RecordKey::Log { first, last, level })
    }
}

/// Key of the level-0 remote record for `first..=last` of `kind`
/// (`"batch"` or `"gap"`).
pub fn record_key(stream: &str, first: u64, last: u64, kind: &'static str) -> String {
    RecordKey::Log { first, last, level: LogLevel::Single(kind) }.key(stream)
}

/// `FIRST-LAST` as two 16-digit hex numbers.
fn parse_range(range: &str) -> Option<(u64, u64)> {
    let (first, last) = range.split_once('-')?;
    Some((hex16(first)?, hex16(last)?))
}

/// Exactly 16 lower-case hex digits.
fn hex16(digits: &str) -> Option<u64> {
    let canonical = digits.len() == 16 && digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical.then(|| u64::from_str_radix(digits, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_position_order() {
        let mut keys: Vec<String> = [(0, 0), (1, 100), (101, 200), (0xff, 0x100), (1000, 1999)]
            .iter()
            .map(|&(a, b)| batch_key("s", a, b))
            .collect();
        let positions: Vec<String> = keys.clone();
        keys.sort();
        assert_eq!(keys[0], positions[0]);
        assert_eq!(keys.last().unwrap(), &batch_key("s", 1000, 1999));
        assert!(batch_key("s", 9, 9) < batch_key("s", 10, 10));
    }

    #[test]
    fn record_keys_round_trip() {
        let key = record_key("sensors", 101, 200, "batch");
        assert_eq!(key, "sensors/manifest/0000000000000065-00000000000000c8.batch");
        let log = RecordKey::Log { first: 101, last: 200, level: LogLevel::Single("batch") };
        assert_eq!(RecordKey::parse("sensors", &key), Some(log));
        for record_key in [
            log,
            RecordKey::Log { first: 0, last: 999, level: LogLevel::Single("gap") },
            RecordKey::Log { first: 0, last: 999, level: LogLevel::Compacted(1) },
            RecordKey::Log { first: 0, last: 999_999, level: LogLevel::Compacted(9) },
            RecordKey::Prune { sequence: 7 },
            RecordKey::Snapshot { position: 10_000 },
        ] {
            assert_eq!(RecordKey::parse("sensors", &record_key.key("sensors")), Some(record_key));
        }
        assert_eq!(RecordKey::parse("other", &key), None);
    }

    #[test]
    fn foreign_record_keys_do_not_parse() {
        for junk in [
            "sensors/manifest/junk",
            "sensors/manifest/0000000000000000-0000000000000000.l0",
            "sensors/manifest/0000000000000000-0000000000000000.l10",
            "sensors/manifest/0000000000000000-0000000000000000.BATCH",
            "sensors/manifest/000000000000000A-0000000000000000.batch",
            "sensors/manifest/0-0.batch",
            "sensors/manifest/prune-7",
            "sensors/manifest/snapshot-+000000000000001",
            "sensors/manifest/../0000000000000000-0000000000000000.batch",
        ] {
            assert_eq!(RecordKey::parse("sensors", junk), None, "{junk}");
        }
    }

    #[test]
    fn fleet_index_keys_round_trip_and_name_no_stream() {
        assert_eq!(fleet_index_key("gw-17a"), ".walship/fleet/gw-17a");
        assert_eq!(parse_fleet_index_key(&fleet_index_key("gw-17a")), Some("gw-17a"));
        for junk in [".walship/fleet/", ".walship/fleet/a/b", "walship/fleet/n1", "s/nodes/n1"] {
            assert_eq!(parse_fleet_index_key(junk), None, "{junk}");
        }
        let top = FLEET_INDEX_PREFIX.split('/').next().unwrap();
        assert!(crate::config::check_stream_name(top).is_err(), "{top} could be a stream");
    }

    #[test]
    fn listing_order_is_log_then_prunes_then_snapshots() {
        let mut keys = vec![
            RecordKey::Snapshot { position: 0 }.key("s"),
            RecordKey::Prune { sequence: 1 }.key("s"),
            record_key("s", 0xffff_ffff_ffff, 0xffff_ffff_ffff, "gap"),
            RecordKey::Log { first: 0, last: 999, level: LogLevel::Compacted(1) }.key("s"),
            record_key("s", 0, 0, "batch"),
            record_key("s", 1, 3, "batch"),
        ];
        keys.sort();
        assert!(keys[0].ends_with("0000000000000000.batch"), "{keys:?}");
        assert!(keys[1].ends_with(".l1"), "{keys:?}");
        assert!(keys[4].contains("prune-") && keys[5].contains("snapshot-"), "{keys:?}");
        assert_eq!(parse_batch_key("s", &batch_key("s", 4, 6)), Some((4, 6)));
    }
}
