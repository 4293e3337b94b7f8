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
