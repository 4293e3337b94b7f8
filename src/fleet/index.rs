//! The fleet index, `walship fleet`'s cheap read: every node with `node_id`
//! writes one object, `.walship/fleet/NODE_ID`, holding its heartbeats of
//! all its streams (written by the [`publisher`](super::publisher) in the
//! same round as the per-stream heartbeats elections read). `fleet` lists
//! the index (one LIST per 1,000 nodes) and GETs only the objects that
//! changed since its last run, as told by a small [`Cache`] file in the
//! state directory: the ETag (S3) or size and mtime (file target) of each
//! node's object as last read, and its text.
//!
//! Ages are judged as `view` judges them: the index object's Last-Modified
//! against the listing's `Date`, both the store's clock.
//!
//! The cache only ever saves requests: an unreadable, damaged or foreign
//! one (another target's) is ignored and every object is read; one that
//! cannot be written (a read-only state directory) is not kept. It never
//! fails `fleet`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::heartbeat::{self, MAX_INDEX_LEN};
use super::view::{Bounded, Entry};
use crate::config::check_node_id;
use crate::durable;
use crate::target::{DatedObject, Target, TargetError, keys};

/// What names one version of an index object: its ETag, or where the
/// store gives none, its size and mtime (to the nanosecond).
fn version_of(object: &DatedObject) -> String {
    match &object.etag {
        Some(etag) => etag.clone(),
        None => {
            let nanos = object.modified.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos();
            format!("{}:{nanos}", object.size)
        }
    }
}

/// Every node's heartbeats from the fleet index, GETting only the objects
/// whose version differs from `cache`'s (which is brought up to date).
/// Counts its requests in `lists` and `gets` (a LIST of more than 1,000
/// keys counted as one per page).
pub fn read(target: &dyn Target, cache: &mut Cache, counts: &mut Counts) -> Result<Vec<Entry>, TargetError> {
    let listing = target.list_dated(keys::FLEET_INDEX_PREFIX)?;
    counts.lists += (listing.objects.len() as u64).div_ceil(1000).max(1);
    let mut entries = Vec::new();
    let mut listed = Vec::new();
    for object in listing.objects {
        let Some(node) = keys::parse_fleet_index_key(&object.key) else { continue };
        let age = listing.store_now.duration_since(object.modified).unwrap_or(Duration::ZERO);
        let unreadable = |why: String| Entry {
            stream: "-".into(),
            node: node.to_string(),
            modified: object.modified,
            age,
            heartbeat: Err(format!("{}: {why}", object.key)),
        };
        if let Err(why) = check_node_id(node) {
            entries.push(unreadable(why));
            continue;
        }
        let version = version_of(&object);
        let text = match cache.nodes.get(node).filter(|cached| cached.version == version) {
            Some(cached) => cached.text.clone(),
            None if object.size > MAX_INDEX_LEN as u64 => {
                entries.push(unreadable(format!("{} bytes, more than a fleet index holds", object.size)));
                continue;
            }
            None => {
                counts.gets += 1;
                let mut bytes = Bounded::new(MAX_INDEX_LEN);
                match target.get(&object.key, None, &mut bytes) {
                    Ok(_) => {}
                    // Deleted since the listing: not listed.
                    Err(TargetError::NotFound { .. }) => continue,
                    Err(error) if error.is_transient() => return Err(error),
                    Err(error) => {
                        entries.push(unreadable(error.to_string()));
                        continue;
                    }
                }
                match String::from_utf8(bytes.into_inner()) {
                    Ok(text) => text,
                    Err(_) => {
                        entries.push(unreadable("not a fleet index: not UTF-8".into()));
                        continue;
                    }
                }
            }
        };
        match heartbeat::parse_index(text.as_bytes()) {
            Ok(beats) if beats.iter().any(|beat| beat.node != node) => {
                entries.push(unreadable("holds the heartbeats of another node".into()));
            }
            Ok(beats) => {
                listed.push(node.to_string());
                cache.keep(node, version, text);
                entries.extend(beats.into_iter().map(|beat| Entry {
                    stream: beat.stream.clone(),
                    node: node.to_string(),
                    modified: object.modified,
                    age,
                    heartbeat: Ok(beat),
                }));
            }
            Err(error) => entries.push(unreadable(format!("not a fleet index: {error}"))),
        }
    }
    cache.forget_all_but(&listed);
    Ok(entries)
}

/// Requests made, for the cost the fleet section promises.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub lists: u64,
    pub gets: u64,
}

/// First line of the cache file.
const CACHE_MAGIC: &str = "walship-fleet-cache 1";

/// A cache file larger than this is ignored (and rewritten).
const MAX_CACHE_LEN: u64 = 64 << 20;

/// Longest version (ETag) kept.
const MAX_VERSION_LEN: usize = 256;

/// What `fleet` last read of each node's index object, for one target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cache {
    /// The target's place (`Target::place`): a cache of another is not used.
    place: String,
    nodes: BTreeMap<String, Cached>,
    /// Whether it differs from the file it was loaded from.
    changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cached {
    version: String,
    text: String,
}

impl Cache {
    /// An empty cache for the target at `place`.
    pub fn new(place: &str) -> Cache {
        Cache { place: place.to_string(), nodes: BTreeMap::new(), changed: true }
    }

    /// The cache kept at `path` for the target at `place`, or an empty one
    /// when there is none or it cannot be used (missing, unreadable,
    /// damaged, another target's: all mean "read everything").
    pub fn load(path: &Path, place: &str) -> Cache {
        let mut options = std::fs::File::options();
        options.read(true);
        let read = durable::open_regular(path, &mut options, durable::Links::Refuse, "the fleet cache")
            .and_then(|file| {
                let mut bytes = Vec::new();
                file.take(MAX_CACHE_LEN + 1).read_to_end(&mut bytes)?;
                Ok(bytes)
            });
        let parsed = match read {
            Ok(bytes) if bytes.len() as u64 > MAX_CACHE_LEN => Err("too large".to_string()),
            Ok(bytes) => Cache::parse(&bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Cache::new(place),
            Err(error) => Err(error.to_string()),
        };
        match parsed {
            Ok(cache) if cache.place == place => cache,
            Ok(_) => Cache::new(place),
            Err(why) => {
                log::debug!("fleet cache {} not used ({why}): reading every node's index", path.display());
                Cache::new(place)
            }
        }
    }

    /// Keep the cache at `path` if it changed; a failure (a read-only state
    /// directory) only costs the next run its requests.
    pub fn save(&self, path: &Path) {
        if !self.changed {
            return;
        }
        if let Err(error) = durable::write_file(path, &self.to_bytes()) {
            log::debug!("fleet cache {} not kept: {error}", path.display());
        }
    }

    fn keep(&mut self, node: &str, version: String, text: String) {
        if version.len() > MAX_VERSION_LEN || version.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.changed |= self.nodes.remove(node).is_some();
            return;
        }
        let cached = Cached { version, text };
        if self.nodes.get(node) != Some(&cached) {
            self.nodes.insert(node.to_string(), cached);
            self.changed = true;
        }
    }

    fn forget_all_but(&mut self, listed: &[String]) {
        let before = self.nodes.len();
        self.nodes.retain(|node, _| listed.contains(node));
        self.changed |= self.nodes.len() != before;
    }

    /// The file's bytes: the magic and the CRC32 of the rest, the place,
    /// then each node's version and text.
    ///
    /// ```text
    /// walship-fleet-cache 1 CRC32
    /// place s3://bucket/prefix at https://s3.example.net
    /// node gw-17a "9b2cf535f27731c974343645a3985328" 612
    /// (612 bytes: the node's index text)
    /// ```
    fn to_bytes(&self) -> Vec<u8> {
        let mut body = format!("place {}\n", self.place);
        for (node, cached) in &self.nodes {
            body.push_str(&format!("node {node} {} {}\n{}", cached.version, cached.text.len(), cached.text));
        }
        format!("{CACHE_MAGIC} {:08x}\n{body}", crc32fast::hash(body.as_bytes())).into_bytes()
    }

    /// Read [`Cache::to_bytes`]'s output; anything else is an error.
    fn parse(bytes: &[u8]) -> Result<Cache, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
        let (first, body) = text.split_once('\n').ok_or("no first line")?;
        let crc =
            first.strip_prefix(CACHE_MAGIC).and_then(|rest| rest.strip_prefix(' ')).ok_or("no magic")?;
        if crc != format!("{:08x}", crc32fast::hash(body.as_bytes())) {
            return Err("CRC32 mismatch".into());
        }
        let (place, mut rest) = body.split_once('\n').ok_or("no place line")?;
        let place = place.strip_prefix("place ").ok_or("no place line")?;
        let mut cache = Cache { place: place.to_string(), nodes: BTreeMap::new(), changed: false };
        while !rest.is_empty() {
            let (line, after) = rest.split_once('\n').ok_or("a node line without its end")?;
            let fields: Vec<&str> = line.split(' ').collect();
            let ["node", node, version, len] = fields[..] else { return Err(format!("bad line {line:?}")) };
            let len: usize = len.parse().map_err(|_| format!("bad length in {line:?}"))?;
            let text = after.get(..len).ok_or("a node's text is cut short")?;
            check_node_id(node)?;
            cache
                .nodes
                .insert(node.to_string(), Cached { version: version.to_string(), text: text.to_string() });
            rest = &after[len..];
        }
        Ok(cache)
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
