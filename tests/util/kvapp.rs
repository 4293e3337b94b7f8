//! A small application whose state is derived from its segments, for the
//! snapshot and restore tests: each segment holds `key=value` lines, the
//! last write of a key wins, segments apply in position order. Its snapshot
//! command is `tests/fixtures/kv-app/snapshot.sh SEGMENT_DIR`, which writes
//! the state at `$WALSHIP_POSITION`; [`state_at`] is the same state computed
//! here, so a test can compare a snapshot, or a restore, with what the
//! application had at any position; [`state_of_restored`] is what the
//! application rebuilds from a restored directory (a snapshot file, then the
//! segments after it).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::segment_name;

/// The snapshot script.
pub const SNAPSHOT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kv-app/snapshot.sh");

/// The `snapshot_command` line for segments in `src`, after `prefix` (for
/// example `sleep 2;`).
pub fn snapshot_command(prefix: &str, src: &Path) -> String {
    format!("{prefix} {SNAPSHOT_SCRIPT} {}", src.display())
}

/// The segment at `position`: one to three `key=value` lines over eleven
/// keys, so later segments overwrite earlier ones.
pub fn segment_text(position: u64) -> String {
    (0..position % 3 + 1).map(|i| format!("k{}=v{position}.{i}\n", (position * 7 + i * 3) % 11)).collect()
}

/// Write segments `positions` into `src`, named as the tests' pattern.
pub fn write_segments(src: &Path, positions: std::ops::RangeInclusive<u64>) {
    for position in positions {
        fs::write(src.join(segment_name(position)), segment_text(position)).unwrap();
    }
}

/// Apply the `key=value` lines of `text` to `state`.
pub fn apply(state: &mut BTreeMap<String, String>, text: &str) {
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            state.insert(key.to_string(), value.to_string());
        }
    }
}

/// The application's state once segments `0..=position` applied.
pub fn state_at(position: u64) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for p in 0..=position {
        apply(&mut state, &segment_text(p));
    }
    state
}

/// A state as the snapshot script writes it: sorted `key=value` lines.
pub fn state_text(state: &BTreeMap<String, String>) -> String {
    state.iter().map(|(key, value)| format!("{key}={value}\n")).collect()
}

/// The state an application rebuilds from a restored directory: the
/// snapshot `walship-snapshot-POSITION` (16 hex digits) if there is one,
/// then the segments after its position, in position order. Returns the
/// state and the newest position it reflects.
pub fn state_of_restored(dir: &Path) -> (BTreeMap<String, String>, Option<u64>) {
    let mut snapshot: Option<(u64, String)> = None;
    let mut segments: Vec<(u64, String)> = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(hex) = name.strip_prefix("walship-snapshot-") {
            assert!(snapshot.is_none(), "more than one snapshot in {}", dir.display());
            snapshot = Some((u64::from_str_radix(hex, 16).unwrap(), name));
        } else if let Some(digits) = name.strip_prefix("seg-").and_then(|n| n.strip_suffix(".log")) {
            segments.push((digits.parse().unwrap(), name));
        }
    }
    segments.sort();
    let mut state = BTreeMap::new();
    let mut newest = None;
    if let Some((position, name)) = &snapshot {
        apply(&mut state, &fs::read_to_string(dir.join(name)).unwrap());
        newest = Some(*position);
    }
    for (position, name) in segments {
        if snapshot.as_ref().is_none_or(|(at, _)| position > *at) {
            apply(&mut state, &fs::read_to_string(dir.join(name)).unwrap());
            newest = Some(position);
        }
    }
    (state, newest)
}
