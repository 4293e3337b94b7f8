//! A small application whose state is rebuilt from its segments: each
//! segment holds `key=value` lines, the last write of a key wins. Its
//! snapshot at position P is the state after every segment up to P, one
//! sorted `key=value` line per key. Restore tests compare the state rebuilt
//! from a restored directory (snapshot file, then segments in position
//! order) with the state the application had at the position asked for.
//!
//! Snapshots are stored here as a snapshot job stores them, through
//! walship's own API: the object on the target, then its record (remote
//! record object, then the local journal).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use walship::manifest::{Encoding, Entry, Journal, SnapshotRecord, StoredObject, StreamRules};
use walship::target::{Upload, keys};

use super::{Setup, segment_name};

/// The application's state: key → value.
pub type State = BTreeMap<String, String>;

/// The `key=value` lines of the segment at `position`: three writes, to
/// keys that recur, so later segments overwrite earlier ones.
pub fn segment(position: u64) -> String {
    (0..3).map(|i| format!("k{}=v{position}.{i}\n", (position * 7 + i * 5) % 23)).collect()
}

/// Apply `text` (key=value lines) to `state`.
pub fn apply(state: &mut State, text: &str) {
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
        state.insert(key.to_string(), value.to_string());
    }
}

/// The state after every segment from `first` up to `position`.
pub fn state_at(first: u64, position: u64) -> State {
    let mut state = State::new();
    for p in first..=position {
        apply(&mut state, &segment(p));
    }
    state
}

/// The snapshot image of `state`: sorted key=value lines.
pub fn image(state: &State) -> String {
    state.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Write the segments `positions` of the application into the stream's
/// directory, under the `seg-{seq}.log` names.
pub fn write_segments(setup: &Setup, positions: std::ops::RangeInclusive<u64>) {
    for p in positions {
        fs::write(setup.src.join(segment_name(p)), segment(p)).unwrap();
    }
}

/// The state rebuilt from a restored directory: its snapshot file (at most
/// one), then each segment file in position order. Returns the state, the
/// snapshot's position and the segments' positions.
pub fn rebuild(dir: &Path) -> (State, Option<u64>, Vec<u64>) {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.retain(|n| !n.starts_with('.'));
    let snapshots: Vec<&String> = names.iter().filter(|n| n.starts_with("walship-snapshot-")).collect();
    assert!(snapshots.len() <= 1, "more than one snapshot restored: {snapshots:?}");
    let mut state = State::new();
    let snapshot = snapshots.first().map(|name| {
        let position = u64::from_str_radix(name.trim_start_matches("walship-snapshot-"), 16).unwrap();
        assert_eq!(name.len(), "walship-snapshot-".len() + 16, "16 hex digits: {name}");
        apply(&mut state, &fs::read_to_string(dir.join(name)).unwrap());
        position
    });
    let mut positions: Vec<u64> =
        names.iter().filter_map(|n| n.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()).collect();
    positions.sort_unstable();
    for p in &positions {
        apply(&mut state, &fs::read_to_string(dir.join(segment_name(*p))).unwrap());
    }
    (state, snapshot, positions)
}

/// Store `image` as stream `s`'s snapshot at `position`, as a snapshot job
/// does: the object, then its remote record, then the local journal.
pub fn store_snapshot(setup: &Setup, position: u64, image: &str) {
    let config = walship::config::load(&setup.config).unwrap_or_else(|e| panic!("{e}"));
    let target = walship::target::open(&config.global).unwrap_or_else(|e| panic!("{e}"));
    let stream = config.stream("s").expect("stream s");
    let rules = StreamRules::new(&stream.name, &stream.naming);
    let bytes = image.as_bytes();
    let (size, crc32) = (bytes.len() as u64, crc32fast::hash(bytes));
    let key = keys::snapshot_key("s", position);
    target.put(&key, &Upload { pieces: &[bytes], size, crc32 }).unwrap_or_else(|e| panic!("{e}"));
    let stored = StoredObject { size, crc32, encoding: Encoding::Identity };
    let entry = Entry::Snapshot(SnapshotRecord { position, key, size, crc32, stored });
    walship::catalog::put_remote_entry(target.as_ref(), &rules, &entry).unwrap_or_else(|e| panic!("{e}"));
    let (mut journal, _) = Journal::open(&setup.journal(), &rules, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    journal.append_entries(&[entry]).unwrap_or_else(|e| panic!("{e}"));
}

/// Store the application's snapshot at `position` (its state from `first`).
pub fn snapshot_at(setup: &Setup, first: u64, position: u64) {
    store_snapshot(setup, position, &image(&state_at(first, position)));
}
