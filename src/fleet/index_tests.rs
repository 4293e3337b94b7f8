use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::*;
use crate::fleet::heartbeat::Heartbeat;
use crate::fleet::publisher::publish_all;
use crate::fleet::view;
use crate::target::fs::FileTarget;
use crate::target::{DatedListing, ObjectInfo, Upload};
use crate::test_support::TempDir;

/// A file target that counts the requests made of it.
struct Counting {
    inner: FileTarget,
    lists: AtomicU64,
    gets: AtomicU64,
}

impl Counting {
    fn new(dir: &Path) -> Counting {
        Counting {
            inner: FileTarget::new(dir.to_path_buf()),
            lists: AtomicU64::new(0),
            gets: AtomicU64::new(0),
        }
    }

    /// (LISTs, GETs) since the last call.
    fn take(&self) -> (u64, u64) {
        (self.lists.swap(0, Ordering::SeqCst), self.gets.swap(0, Ordering::SeqCst))
    }
}

impl Target for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn place(&self) -> String {
        self.inner.place()
    }
    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
        self.inner.put(key, body)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
        self.inner.head(key)
    }
    fn get(&self, key: &str, range: Option<(u64, u64)>, out: &mut dyn Write) -> Result<u64, TargetError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key, range, out)
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix, start_after)
    }
    fn list_dated(&self, prefix: &str) -> Result<DatedListing, TargetError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_dated(prefix)
    }
    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_dirs(prefix)
    }
    fn delete(&self, keys: &[String]) -> Result<(), TargetError> {
        self.inner.delete(keys)
    }
    fn check(&self) -> Result<(), TargetError> {
        self.inner.check()
    }
}

fn beat(node: &str, stream: &str, error: Option<&str>) -> Heartbeat {
    Heartbeat {
        node: node.into(),
        stream: stream.into(),
        version: "1".into(),
        written: 7,
        archived: Some(3),
        last_error: error.map(String::from),
        ..Default::default()
    }
}

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const STREAMS: [&str; 4] = ["a", "b", "c", "d"];

/// Three nodes of four streams each, as their fleet threads write them.
fn publish_fleet(target: &dyn Target) {
    for node in NODES {
        let beats: Vec<Heartbeat> = STREAMS.iter().map(|stream| beat(node, stream, None)).collect();
        publish_all(target, node, &beats).unwrap();
    }
}

/// What a view shows of entries, but their ages (the file target's clock
/// moves between two reads).
fn shown(entries: &[Entry]) -> Vec<(String, String, SystemTime, Result<Heartbeat, String>)> {
    entries.iter().map(|e| (e.node.clone(), e.stream.clone(), e.modified, e.heartbeat.clone())).collect()
}

fn read_with(target: &dyn Target, cache_file: &Path) -> (Vec<Entry>, Counts) {
    let mut cache = Cache::load(cache_file, &target.place());
    let mut counts = Counts::default();
    let entries = read(target, &mut cache, &mut counts).unwrap();
    cache.save(cache_file);
    (entries, counts)
}

/// The cost the issue asks of `fleet`: one LIST per 1,000 nodes, GETs of
/// the index objects that changed since the last run (none on a second
/// run), where reading every stream's heartbeats takes a LIST per stream
/// and a GET per heartbeat.
#[test]
fn fleet_lists_once_and_gets_only_changed_nodes() {
    let dir = TempDir::new("fleet-index-cost");
    let (archive, state) = (dir.0.join("archive"), dir.0.join("state"));
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let target = Counting::new(&archive);
    publish_fleet(&target);
    let cache_file = state.join(".walship-fleet-cache");

    let (entries, counts) = read_with(&target, &cache_file);
    assert_eq!(target.take(), (1, 3), "first run: one LIST, a GET per node");
    assert_eq!(counts, Counts { lists: 1, gets: 3 });
    let pairs: Vec<(&str, &str)> = entries.iter().map(|e| (e.node.as_str(), e.stream.as_str())).collect();
    assert_eq!(pairs.len(), 12, "{pairs:?}");
    assert_eq!(entries[5].heartbeat, Ok(beat("n2", "b", None)));

    let (again, _) = read_with(&target, &cache_file);
    assert_eq!(target.take(), (1, 0), "nothing changed: no GET");
    assert_eq!(shown(&again), shown(&entries));

    publish_all(&target, "n2", &[beat("n2", "a", Some("put failed"))]).unwrap();
    let (changed, _) = read_with(&target, &cache_file);
    assert_eq!(target.take(), (1, 1), "one node changed: one GET");
    assert_eq!(changed.len(), 9, "n2 now has one stream");
    assert!(changed.iter().any(|e| e.heartbeat == Ok(beat("n2", "a", Some("put failed")))));

    target.delete(&[keys::fleet_index_key("n3")]).unwrap();
    assert_eq!(read_with(&target, &cache_file).0.len(), 5, "n3 gone");
    assert_eq!(target.take(), (1, 0));

    // Before the index: a delimited LIST for the streams, a LIST per
    // stream and a GET per heartbeat.
    let mut reader = view::HeartbeatReader::default();
    assert_eq!(view::read_all(&target, &mut reader).unwrap().len(), 12);
    assert_eq!(target.take(), (1 + 4, 12));
}

/// A damaged cache, another target's, one that cannot be kept: every node
/// is read again, and the view is the same.
#[test]
fn a_cache_that_cannot_be_used_only_costs_requests() {
    let dir = TempDir::new("fleet-index-cache");
    let (archive, state) = (dir.0.join("archive"), dir.0.join("state"));
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let target = Counting::new(&archive);
    publish_fleet(&target);
    let cache_file = state.join(".walship-fleet-cache");
    let (entries, _) = read_with(&target, &cache_file);
    target.take();

    let mut bytes = std::fs::read(&cache_file).unwrap();
    let kept = Cache::parse(&bytes).unwrap();
    assert_eq!(kept.nodes.len(), 3);
    assert_eq!(Cache::parse(&kept.to_bytes()).unwrap(), kept, "round trip");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&cache_file, &bytes).unwrap();
    assert_eq!(shown(&read_with(&target, &cache_file).0), shown(&entries));
    assert_eq!(target.take(), (1, 3), "damaged: everything read");
    assert_eq!(shown(&read_with(&target, &cache_file).0), shown(&entries));
    assert_eq!(target.take(), (1, 0), "and the cache written again");

    let other = Cache::load(&cache_file, "file:///elsewhere");
    assert!(other.nodes.is_empty(), "another target's cache is not used");
    for junk in [&b""[..], b"walship-fleet-cache 1 00000000\n", &[0xff; 9], b"node n1 x 99999\n"] {
        assert!(Cache::parse(junk).is_err(), "{junk:?}");
    }

    let nowhere = dir.0.join("missing/.walship-fleet-cache");
    assert_eq!(shown(&read_with(&target, &nowhere).0), shown(&entries), "a cache that cannot be kept");
    assert_eq!(target.take(), (1, 3));
    assert!(!nowhere.exists());
}

/// An index object that is not one is an unreadable line for its node, not
/// a failure of the whole view.
#[test]
fn a_damaged_index_is_an_unreadable_node() {
    let dir = TempDir::new("fleet-index-damaged");
    let target = FileTarget::new(dir.0.clone());
    publish_fleet(&target);
    let pieces: [&[u8]; 1] = [b"not an index\n"];
    let garbage = Upload::pieces(&pieces, 13, crc32fast::hash(pieces[0]));
    target.put(&keys::fleet_index_key("n2"), &garbage).unwrap();
    let stranger = crate::fleet::heartbeat::index_text(&[beat("n9", "a", None)]);
    let pieces = [stranger.as_bytes()];
    let stranger = Upload::pieces(&pieces, stranger.len() as u64, crc32fast::hash(stranger.as_bytes()));
    target.put(&keys::fleet_index_key("n3"), &stranger).unwrap();
    let mut cache = Cache::new(&target.place());
    let entries = read(&target, &mut cache, &mut Counts::default()).unwrap();
    assert_eq!(entries.len(), 4 + 2);
    let n2 = entries.iter().find(|e| e.node == "n2").unwrap();
    assert_eq!(n2.stream, "-");
    let why = n2.heartbeat.clone().unwrap_err();
    assert!(why.starts_with(".walship/fleet/n2: not a fleet index: not a heartbeat: line 1"), "{why}");
    let n3 = entries.iter().find(|e| e.node == "n3").unwrap();
    assert!(n3.heartbeat.clone().unwrap_err().contains("another node"), "{n3:?}");
    assert_eq!(cache.nodes.keys().collect::<Vec<_>>(), ["n1"], "only what parsed is kept");
}
