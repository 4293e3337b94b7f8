//! A small application whose state is derived from its segments, for the
//! snapshot and restore tests: each segment holds `key=value` lines, the
//! last write of a key wins, segments apply in position order. Its snapshot
//! command is `tests/fixtures/kv-app/snapshot.sh SEGMENT_DIR`, which writes
//! the state at `$WALSHIP_POSITION`; [`state_at`] is the same state computed
//! here, so a test can compare a snapshot, or a restore, with what the
//! application had at any position.

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

/// The state rebuilt from a restored directory as the application does
/// it: the snapshot file (at most one), then each segment file in position
/// order. Returns the state, the snapshot's position and the segments'
/// positions.
pub fn rebuild(dir: &Path) -> (BTreeMap<String, String>, Option<u64>, Vec<u64>) {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.retain(|n| !n.starts_with('.'));
    let snapshots: Vec<&String> = names.iter().filter(|n| n.starts_with("walship-snapshot-")).collect();
    assert!(snapshots.len() <= 1, "more than one snapshot restored: {snapshots:?}");
    let mut state = BTreeMap::new();
    let snapshot = snapshots.first().map(|name| {
        assert_eq!(name.len(), "walship-snapshot-".len() + 16, "16 hex digits: {name}");
        apply(&mut state, &fs::read_to_string(dir.join(name)).unwrap());
        u64::from_str_radix(name.trim_start_matches("walship-snapshot-"), 16).unwrap()
    });
    let mut positions: Vec<u64> =
        names.iter().filter_map(|n| n.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()).collect();
    positions.sort_unstable();
    for p in &positions {
        apply(&mut state, &fs::read_to_string(dir.join(segment_name(*p))).unwrap());
    }
    (state, snapshot, positions)
}
