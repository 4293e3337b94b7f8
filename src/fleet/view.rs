//! Reading heartbeats back from the target, and `walship fleet`'s view of
//! them: one entry per node and stream, stale and failing ones first.
//!
//! Ages are judged by one clock, the store's: an object's Last-Modified
//! against the listing's `Date` (file target: the file's mtime against the
//! local clock). A node whose clock is off by hours still looks exactly as
//! fresh as it is.
//!
//! Cost: a [`HeartbeatReader`] lists a stream's `nodes/` prefix (one LIST
//! per 1,000 heartbeats of the stream) and GETs only the heartbeats whose
//! Last-Modified or size changed since it last read them, and never the
//! reading node's own, which it was just given; `fleet --deep` finds the
//! streams with one delimited LIST per 1,000 streams first.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::heartbeat::{self, Heartbeat};
use crate::config::check_stream_name;
use crate::target::{Target, TargetError, keys};

/// One node's heartbeat for one stream, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stream: String,
    pub node: String,
    /// When the store last wrote the object (its clock).
    pub modified: SystemTime,
    /// Since then, by the store's clock.
    pub age: Duration,
    /// The heartbeat, or why it cannot be read.
    pub heartbeat: Result<Heartbeat, String>,
}

/// How an entry looks to an operator, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Not refreshed within the stale limit, or unreadable.
    Stale,
    /// Fresh, but the stream is stuck on an error.
    Failing,
    /// The node stopped cleanly (its last heartbeat says so).
    Stopped,
    Ok,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Stale => "stale",
            Health::Failing => "failing",
            Health::Stopped => "stopped",
            Health::Ok => "ok",
        }
    }
}

impl Entry {
    /// Stale when older than `stale` or unreadable; failing with an error;
    /// stopped when it said so last.
    pub fn health(&self, stale: Duration) -> Health {
        match &self.heartbeat {
            Err(_) => Health::Stale,
            Ok(_) if self.age > stale => Health::Stale,
            Ok(beat) if beat.last_error.is_some() => Health::Failing,
            Ok(beat) if beat.stopped => Health::Stopped,
            Ok(_) => Health::Ok,
        }
    }
}

/// What a heartbeat object looked like when last read.
#[derive(Debug, Clone)]
struct Cached {
    modified: SystemTime,
    size: u64,
    heartbeat: Result<Heartbeat, String>,
}

/// Reads a stream's heartbeats, GETting only those that changed since the
/// last read (by Last-Modified and size). Counts its requests.
#[derive(Debug, Default)]
pub struct HeartbeatReader {
    cache: HashMap<String, Cached>,
    /// LIST and GET requests made so far (a LIST may be several pages:
    /// counted as one per 1,000 keys).
    pub lists: u64,
    pub gets: u64,
}

impl HeartbeatReader {
    /// Every heartbeat of `stream`, in node order, and the store's time of
    /// the listing.
    pub fn read(
        &mut self,
        target: &dyn Target,
        stream: &str,
    ) -> Result<(Vec<Entry>, SystemTime), TargetError> {
        self.read_knowing(target, stream, None)
    }

    /// [`HeartbeatReader::read`], taking `own` (the reading node's
    /// heartbeat of the stream, just written) as what its object holds,
    /// without a GET.
    pub fn read_knowing(
        &mut self,
        target: &dyn Target,
        stream: &str,
        own: Option<&Heartbeat>,
    ) -> Result<(Vec<Entry>, SystemTime), TargetError> {
        let prefix = keys::heartbeats_prefix(stream);
        let listing = target.list_dated(&prefix)?;
        self.lists += (listing.objects.len() as u64).div_ceil(1000).max(1);
        let mut entries = Vec::new();
        let mut listed = Vec::new();
        for object in listing.objects {
            let Some(node) = keys::parse_heartbeat_key(stream, &object.key) else { continue };
            let fresh = self
                .cache
                .get(&object.key)
                .is_some_and(|c| c.modified == object.modified && c.size == object.size);
            let known = own.filter(|own| own.node == node && own.stream == stream);
            if let (false, Some(known)) = (fresh, known) {
                let heartbeat = Ok(known.clone());
                let cached = Cached { modified: object.modified, size: object.size, heartbeat };
                self.cache.insert(object.key.clone(), cached);
            } else if !fresh {
                let heartbeat = self.fetch(target, stream, node, &object.key, object.size)?;
                let cached = Cached { modified: object.modified, size: object.size, heartbeat };
                self.cache.insert(object.key.clone(), cached);
            }
            let heartbeat = self.cache[&object.key].heartbeat.clone();
            let age = listing.store_now.duration_since(object.modified).unwrap_or(Duration::ZERO);
            let (stream, node, modified) = (stream.to_string(), node.to_string(), object.modified);
            entries.push(Entry { stream, node, modified, age, heartbeat });
            listed.push(object.key);
        }
        self.cache.retain(|key, _| !key.starts_with(&prefix) || listed.contains(key));
        Ok((entries, listing.store_now))
    }

    /// GET and parse one heartbeat; a missing or malformed one is an
    /// unreadable entry, not an error of the whole read.
    fn fetch(
        &mut self,
        target: &dyn Target,
        stream: &str,
        node: &str,
        key: &str,
        size: u64,
    ) -> Result<Result<Heartbeat, String>, TargetError> {
        if size > heartbeat::MAX_LEN as u64 {
            return Ok(Err(format!("{key}: {size} bytes, more than a heartbeat holds")));
        }
        self.gets += 1;
        let mut bytes = Bounded::new(heartbeat::MAX_LEN);
        match target.get(key, None, &mut bytes) {
            Ok(_) => {}
            Err(TargetError::NotFound { .. }) => return Ok(Err(format!("{key}: deleted while read"))),
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => return Ok(Err(error.to_string())),
        }
        Ok(match heartbeat::parse(&bytes.into_inner()) {
            Ok(beat) if beat.node != node || beat.stream != stream => {
                Err(format!("{key}: holds the heartbeat of node {} for stream {}", beat.node, beat.stream))
            }
            Ok(beat) => Ok(beat),
            Err(error) => Err(format!("{key}: {error}")),
        })
    }
}

/// A buffer that refuses to grow past a limit (a heartbeat's, an index's
/// maximum size).
pub(super) struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl Bounded {
    pub(super) fn new(limit: usize) -> Bounded {
        Bounded { bytes: Vec::new(), limit }
    }

    pub(super) fn into_inner(self) -> Vec<u8> {
        self.bytes
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!("larger than the {} bytes it may be", self.limit)));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every heartbeat on the target: the streams found by a delimited listing
/// of its root, then each stream's heartbeats.
pub fn read_all(target: &dyn Target, reader: &mut HeartbeatReader) -> Result<Vec<Entry>, TargetError> {
    let streams = target.list_dirs("")?;
    reader.lists += (streams.len() as u64).div_ceil(1000).max(1);
    let mut entries = Vec::new();
    for stream in streams.iter().filter(|name| check_stream_name(name).is_ok()) {
        entries.extend(reader.read(target, stream)?.0);
    }
    Ok(entries)
}

/// Worst first (stale, failing, stopped, ok), then by stream and node.
pub fn sort(entries: &mut [Entry], stale: Duration) {
    entries.sort_by(|a, b| (a.health(stale), &a.stream, &a.node).cmp(&(b.health(stale), &b.stream, &b.node)));
}

/// A duration as an operator reads an age: `42s`, `5m03s`, `2h10m`, `3d04h`.
pub fn age_text(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The text view: a header, one line per entry (in the given order), and a
/// summary line.
pub fn render_text(entries: &[Entry], stale: Duration) -> String {
    let mut rows = vec![
        ["STATE", "STREAM", "NODE", "AGE", "ARCHIVED", "COMMITTED", "BACKLOG", "SUCCESS", "VERSION", "ERROR"]
            .map(String::from),
    ];
    let position = |p: Option<u64>| p.map_or("-".to_string(), |p| p.to_string());
    for entry in entries {
        let mut row =
            [entry.health(stale).name(), &entry.stream, &entry.node, "", "-", "-", "-", "-", "-", ""]
                .map(String::from);
        row[3] = age_text(entry.age);
        match &entry.heartbeat {
            Ok(beat) => {
                row[4] = position(beat.archived);
                row[5] = position(beat.committed);
                row[6] = beat.backlog_segments.to_string();
                // By the writer's own clock, as `written` is.
                row[7] = beat.last_success.map_or("never".into(), |at| {
                    format!("{} ago", age_text(Duration::from_secs(beat.written.saturating_sub(at))))
                });
                row[8] = beat.version.clone();
                row[9] = beat.last_error.clone().unwrap_or_default();
            }
            Err(why) => row[9] = format!("unreadable: {why}"),
        }
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..9).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[9]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let count = |h: Health| entries.iter().filter(|e| e.health(stale) == h).count();
    let streams: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.stream.as_str()).collect();
    let nodes: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.node.as_str()).collect();
    out.push_str(&format!(
        "{} of {} on {}: {} stale (older than {}), {} failing, {} stopped, {} ok\n",
        crate::human::count(entries.len() as u64, "heartbeat"),
        crate::human::count(streams.len() as u64, "stream"),
        crate::human::count(nodes.len() as u64, "node"),
        count(Health::Stale),
        age_text(stale),
        count(Health::Failing),
        count(Health::Stopped),
        count(Health::Ok),
    ));
    out
}

/// The JSON view: an array of one object per entry, in the given order.
pub fn render_json(entries: &[Entry], stale: Duration) -> String {
    let text = |v: &str| crate::status::json_string(v);
    let number = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let items: Vec<String> = entries
        .iter()
        .map(|entry| {
            let common = format!(
                "\"state\":{},\"stream\":{},\"node\":{},\"age_seconds\":{}",
                text(entry.health(stale).name()),
                text(&entry.stream),
                text(&entry.node),
                entry.age.as_secs()
            );
            match &entry.heartbeat {
                Ok(beat) => format!(
                    "{{{common},\"version\":{},\"written\":{},\"archived_position\":{},\
                     \"committed_position\":{},\"backlog_segments\":{},\"first_waiting\":{},\
                     \"held_position\":{},\"last_success\":{},\"last_error\":{}}}",
                    text(&beat.version),
                    beat.written,
                    number(beat.archived),
                    number(beat.committed),
                    beat.backlog_segments,
                    number(beat.first_waiting),
                    number(beat.held),
                    number(beat.last_success),
                    beat.last_error.as_deref().map_or("null".to_string(), text),
                ),
                Err(why) => format!("{{{common},\"unreadable\":{}}}", text(why)),
            }
        })
        .collect();
    format!("[{}]\n", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: &str, node: &str, age: u64, error: Option<&str>) -> Entry {
        let heartbeat = Heartbeat {
            node: node.into(),
            stream: stream.into(),
            version: "0.1.0".into(),
            written: 1000,
            archived: Some(7),
            committed: Some(9),
            backlog_segments: 2,
            first_waiting: Some(8),
            held: Some(9),
            last_success: Some(990),
            last_error: error.map(String::from),
            stopped: false,
        };
        Entry {
            stream: stream.into(),
            node: node.into(),
            modified: SystemTime::UNIX_EPOCH,
            age: Duration::from_secs(age),
            heartbeat: Ok(heartbeat),
        }
    }

    #[test]
    fn stale_and_failing_come_first() {
        let stale = Duration::from_secs(30);
        let mut entries = vec![
            entry("a", "n1", 5, None),
            entry("a", "n2", 5, Some("put failed")),
            entry("b", "n1", 31, None),
            Entry {
                stream: "a".into(),
                node: "n3".into(),
                modified: SystemTime::UNIX_EPOCH,
                age: Duration::ZERO,
                heartbeat: Err("bad".into()),
            },
        ];
        sort(&mut entries, stale);
        let order: Vec<(&str, &str, Health)> =
            entries.iter().map(|e| (e.stream.as_str(), e.node.as_str(), e.health(stale))).collect();
        assert_eq!(
            order,
            [
                ("a", "n3", Health::Stale),
                ("b", "n1", Health::Stale),
                ("a", "n2", Health::Failing),
                ("a", "n1", Health::Ok)
            ]
        );
        let text = render_text(&entries, stale);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("STATE    STREAM  NODE  AGE  ARCHIVED"), "{text}");
        assert!(
            lines[1].starts_with("stale    a       n3    0s   -") && lines[1].ends_with("unreadable: bad"),
            "{text}"
        );
        assert!(lines[3].contains("failing") && lines[3].ends_with("put failed"), "{text}");
        assert!(lines[4].contains(" 7 ") && lines[4].contains("10s ago"), "{text}");
        assert_eq!(
            lines[5],
            "4 heartbeats of 2 streams on 3 nodes: 2 stale (older than 30s), 1 failing, 0 stopped, 1 ok"
        );
        let json = render_json(&entries, stale);
        assert!(json.starts_with("[{\"state\":\"stale\",\"stream\":\"a\",\"node\":\"n3\",\"age_seconds\":0,\"unreadable\":\"bad\"}"), "{json}");
        assert!(json.contains("\"last_error\":\"put failed\""), "{json}");
    }

    /// The cost the fleet section promises: one LIST per read, a GET only
    /// for heartbeats that changed since the last read.
    #[test]
    fn a_reader_gets_only_changed_heartbeats() {
        use crate::target::Target;
        let dir = crate::test_support::TempDir::new("heartbeat-reader");
        let target = crate::target::fs::FileTarget::new(dir.0.clone());
        let write = |node: &str, written: u64| {
            let beat = Heartbeat {
                node: node.into(),
                stream: "s".into(),
                version: "1".into(),
                written,
                ..Default::default()
            };
            super::super::publisher::publish(&target, &beat).unwrap();
        };
        for node in ["n1", "n2", "n3"] {
            write(node, 1);
        }
        let mut reader = HeartbeatReader::default();
        let (entries, _) = reader.read(&target, "s").unwrap();
        assert_eq!(entries.iter().map(|e| e.node.as_str()).collect::<Vec<_>>(), ["n1", "n2", "n3"]);
        assert_eq!((reader.lists, reader.gets), (1, 3));
        reader.read(&target, "s").unwrap();
        assert_eq!((reader.lists, reader.gets), (2, 3), "nothing changed: no GET");
        write("n2", 22);
        let (entries, _) = reader.read(&target, "s").unwrap();
        assert_eq!((reader.lists, reader.gets), (3, 4), "one changed: one GET");
        assert_eq!(entries[1].heartbeat.as_ref().unwrap().written, 22);
        target.delete(&["s/nodes/n3".to_string()]).unwrap();
        assert_eq!(reader.read(&target, "s").unwrap().0.len(), 2);
        // A node's own heartbeat, just written, is not read back.
        write("n1", 33);
        let own = Heartbeat {
            node: "n1".into(),
            stream: "s".into(),
            version: "1".into(),
            written: 33,
            ..Default::default()
        };
        let (entries, _) = reader.read_knowing(&target, "s", Some(&own)).unwrap();
        assert_eq!(reader.gets, 4, "no GET for its own");
        assert_eq!(entries[0].heartbeat, Ok(own));
    }

    #[test]
    fn ages_read_like_durations() {
        for (seconds, text) in [(0, "0s"), (59, "59s"), (61, "1m01s"), (3600, "1h00m"), (90_061, "1d01h")] {
            assert_eq!(age_text(Duration::from_secs(seconds)), text);
        }
    }
}
