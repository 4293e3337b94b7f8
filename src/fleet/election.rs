//! The offloader election of a `replicas = on` stream, as Neon's
//! safekeepers elect the one that uploads WAL: a pure function of the
//! heartbeats (with their Last-Modified), the store's time and the
//! settings, so every node that reads the same heartbeats computes the same
//! answer, with no coordination service.
//!
//! 1. Alive: heartbeats written within 3 heartbeat intervals, by the store's
//!    clock (nodes' clocks never enter), and not the last word of a node
//!    that stopped cleanly.
//! 2. Capable: alive nodes whose copy holds the next position to archive
//!    (their `first_waiting` is at most one past the highest archived
//!    position; with nothing archived, at most the lowest `first_waiting`),
//!    so an election never makes a gap a peer could fill. A node that never
//!    caught up (its copy starts later) is never elected.
//! 3. Caught up: capable nodes whose own copy reaches (`held`: the highest
//!    sealed position it has held, not what it adopted from the archive)
//!    within `max_offloader_lag` segments of the farthest.
//! 4. The offloader: the caught-up nodes sorted by id, the one at
//!    `crc32(stream name) mod count` — a stable hash, so different streams
//!    spread over the nodes, and an offloader stays elected while the set of
//!    caught-up nodes does not change.
//!
//! Two nodes may both believe they are elected for a moment (their reads
//! differ by an interval): harmless for batches cut at the same positions,
//! as an identical object is recorded, never sent twice, and different
//! content stops the stream loudly. So that this moment stays rare (short
//! batches cut at different positions would record overlapping ranges),
//! a node takes over from a live offloader only once the election has
//! chosen it for an interval (`member`).

use std::time::{Duration, SystemTime};

use super::heartbeat::Heartbeat;

/// Heartbeats older than this many intervals are from nodes taken as gone.
pub const ALIVE_INTERVALS: u32 = 3;

/// The settings an election depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub max_offloader_lag: u64,
}

/// One heartbeat as listed: its content and when the store last wrote it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub heartbeat: &'a Heartbeat,
    pub modified: SystemTime,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The elected node; `None` when no node can archive.
    pub offloader: Option<String>,
    /// Why, for status and logs: `elected n2 among n1,n2,n3, 2 caught up`.
    pub reason: String,
    /// How long, from `now`, the offloader's heartbeat stays alive without
    /// a refresh: a standby looks again then, to take over in time.
    pub offloader_alive_for: Option<Duration>,
    /// The nodes alive, by id (whether a previous offloader is gone).
    pub alive: Vec<String>,
}

/// Elect the offloader of `stream` among `heartbeats`, at the store's time
/// `now` (see the module doc for the rules).
pub fn elect(stream: &str, heartbeats: &[Observed<'_>], now: SystemTime, settings: Settings) -> Election {
    let alive_limit = settings.heartbeat_interval * ALIVE_INTERVALS;
    let age = |o: &Observed<'_>| now.duration_since(o.modified).unwrap_or(Duration::ZERO);
    let alive: Vec<&Observed<'_>> =
        heartbeats.iter().filter(|o| age(o) <= alive_limit && !o.heartbeat.stopped).collect();
    let mut alive_ids: Vec<String> = alive.iter().map(|o| o.heartbeat.node.clone()).collect();
    alive_ids.sort();
    let nobody = |reason: String| Election {
        offloader: None,
        reason,
        offloader_alive_for: None,
        alive: alive_ids.clone(),
    };
    if alive.is_empty() {
        return nobody(format!("no node alive (no heartbeat within {alive_limit:?})"));
    }
    let next = match alive.iter().filter_map(|o| o.heartbeat.archived).max() {
        Some(archived) => archived.saturating_add(1),
        None => alive.iter().filter_map(|o| o.heartbeat.first_waiting).min().unwrap_or(0),
    };
    let mut capable: Vec<&Observed<'_>> = alive
        .iter()
        .copied()
        .filter(|o| o.heartbeat.first_waiting.is_none_or(|first| first <= next))
        .collect();
    capable.sort_by(|a, b| a.heartbeat.node.cmp(&b.heartbeat.node));
    if capable.is_empty() {
        let names: Vec<&str> = alive.iter().map(|o| o.heartbeat.node.as_str()).collect();
        return nobody(format!(
            "none of {} holds position {next}, the next to archive (their copies start later)",
            names.join(",")
        ));
    }
    // How far each copy reaches, as a count (position + 1; 0: nothing held).
    let count = |o: &Observed<'_>| o.heartbeat.held.map_or(0, |c| c.saturating_add(1));
    let highest = capable.iter().map(|o| count(o)).max().unwrap_or(0);
    let caught_up: Vec<&Observed<'_>> = capable
        .iter()
        .copied()
        .filter(|o| count(o).saturating_add(settings.max_offloader_lag) >= highest)
        .collect();
    let chosen = caught_up[crc32fast::hash(stream.as_bytes()) as usize % caught_up.len()];
    let names: Vec<&str> = capable.iter().map(|o| o.heartbeat.node.as_str()).collect();
    Election {
        offloader: Some(chosen.heartbeat.node.clone()),
        reason: format!(
            "elected {} among {}, {} caught up",
            chosen.heartbeat.node,
            names.join(","),
            caught_up.len()
        ),
        offloader_alive_for: Some(alive_limit.saturating_sub(age(chosen))),
        alive: alive_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const SETTINGS: Settings =
        Settings { heartbeat_interval: Duration::from_secs(10), max_offloader_lag: 16 };

    /// (node, held, first_waiting, archived, age in seconds)
    type Row = (&'static str, Option<u64>, Option<u64>, Option<u64>, u64);

    fn run(stream: &str, rows: &[Row]) -> Election {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let beats: Vec<Heartbeat> = rows
            .iter()
            .map(|&(node, held, first_waiting, archived, _)| Heartbeat {
                node: node.into(),
                stream: stream.into(),
                held,
                first_waiting,
                archived,
                ..Default::default()
            })
            .collect();
        let observed: Vec<Observed<'_>> = beats
            .iter()
            .zip(rows)
            .map(|(heartbeat, row)| Observed { heartbeat, modified: now - Duration::from_secs(row.4) })
            .collect();
        elect(stream, &observed, now, SETTINGS)
    }

    /// The stream whose hash picks index `index` of `len` caught-up nodes.
    fn stream_picking(index: usize, len: usize) -> String {
        (0..)
            .map(|n| format!("s{n}"))
            .find(|s| crc32fast::hash(s.as_bytes()) as usize % len == index)
            .unwrap()
    }

    #[test]
    fn neon_cases() {
        let s = "sensors";
        // No peers at all, or only dead ones.
        assert_eq!(run(s, &[]).offloader, None);
        let dead = run(s, &[("n1", Some(9), Some(5), Some(4), 31)]);
        assert_eq!((dead.offloader, dead.reason.as_str()), (None, "no node alive (no heartbeat within 30s)"));
        // Alone: elected, and alive for what is left of its 30 s.
        let alone = run(s, &[("n1", Some(9), Some(5), Some(4), 12)]);
        assert_eq!(alone.offloader.as_deref(), Some("n1"));
        assert_eq!(alone.reason, "elected n1 among n1, 1 caught up");
        assert_eq!(alone.offloader_alive_for, Some(Duration::from_secs(18)));
        assert_eq!(alone.alive, ["n1"]);
        // One lagging peer (17 behind with a lag of 16) is never elected,
        // whatever the stream's hash says.
        for index in 0..2 {
            let stream = stream_picking(index, 2);
            let rows = [("n1", Some(100), Some(90), Some(89), 1), ("n2", Some(83), Some(90), Some(89), 1)];
            let lagging = run(&stream, &rows);
            assert_eq!(lagging.offloader.as_deref(), Some("n1"), "{stream}");
            assert_eq!(lagging.reason, "elected n1 among n1,n2, 1 caught up");
        }
        // Exactly max_offloader_lag behind is still caught up.
        let edge = run(
            &stream_picking(1, 2),
            &[("n1", Some(100), None, Some(100), 1), ("n2", Some(84), None, Some(80), 1)],
        );
        assert_eq!(edge.offloader.as_deref(), Some("n2"));
        // Ties: every node caught up; the stream's hash picks, by sorted id.
        for index in 0..3 {
            let stream = stream_picking(index, 3);
            let rows = [
                ("n3", Some(50), Some(41), Some(40), 2),
                ("n1", Some(50), Some(41), Some(40), 2),
                ("n2", Some(50), Some(41), Some(40), 2),
            ];
            let tie = run(&stream, &rows);
            assert_eq!(tie.offloader, Some(["n1", "n2", "n3"][index].to_string()), "{stream}");
            assert_eq!(
                tie.reason,
                format!("elected {} among n1,n2,n3, 3 caught up", ["n1", "n2", "n3"][index])
            );
        }
        // A peer that never caught up: its copy starts after the archive
        // ends, so electing it would leave a gap, even with the highest
        // committed position.
        let late = run(s, &[("n1", Some(60), Some(41), Some(40), 1), ("n2", Some(900), Some(500), None, 1)]);
        assert_eq!(late.offloader.as_deref(), Some("n1"));
        assert_eq!(late.reason, "elected n1 among n1, 1 caught up");
        let only_late =
            run(s, &[("n2", Some(900), Some(500), None, 1), ("n1", Some(40), None, Some(40), 40)]);
        assert_eq!(only_late.offloader.as_deref(), Some("n2"), "n1 is dead: n2's copy is all there is");
        let stuck = run(s, &[("n2", Some(900), Some(500), None, 1), ("n1", Some(40), None, Some(40), 1)]);
        assert_eq!(stuck.offloader.as_deref(), Some("n1"), "n1 has nothing new but leaves no gap");
        let nobody =
            run(s, &[("n2", Some(900), Some(500), Some(10), 1), ("n3", Some(900), Some(600), None, 1)]);
        assert_eq!(nobody.offloader, None);
        assert!(nobody.reason.starts_with("none of n2,n3 holds position 11"), "{}", nobody.reason);
    }

    #[test]
    fn a_fresh_archive_starts_from_the_lowest_copy() {
        // Nothing archived: the node whose copy starts lowest is capable;
        // one starting later is not, though it is ahead.
        let e = run("s", &[("n1", Some(20), Some(0), None, 1), ("n2", Some(30), Some(5), None, 1)]);
        assert_eq!(e.offloader.as_deref(), Some("n1"));
        // Nodes with nothing sealed yet are all caught up with each other.
        let e = run(&stream_picking(1, 2), &[("n1", None, None, None, 0), ("n2", None, None, None, 0)]);
        assert_eq!(e.offloader.as_deref(), Some("n2"));
    }

    #[test]
    fn a_node_that_stopped_cleanly_is_not_elected() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        let beat = |node: &str, stopped| Heartbeat {
            node: node.into(),
            held: Some(5),
            stopped,
            ..Default::default()
        };
        let (n1, n2) = (beat("n1", true), beat("n2", false));
        let observed =
            [Observed { heartbeat: &n1, modified: now }, Observed { heartbeat: &n2, modified: now }];
        let e = elect("s", &observed, now, SETTINGS);
        assert_eq!(
            (e.offloader.as_deref(), e.reason.as_str()),
            (Some("n2"), "elected n2 among n2, 1 caught up")
        );
        assert_eq!(e.alive, ["n2"], "a stopped node is not alive");
    }

    #[test]
    fn clocks_only_matter_through_the_store() {
        // A heartbeat "from the future" (store clocks never go back, but a
        // listing may be older than a write) is alive with age 0.
        let e = run("s", &[("n1", Some(5), None, Some(5), 0)]);
        assert_eq!(e.offloader_alive_for, Some(Duration::from_secs(30)));
        let future = Heartbeat { node: "n1".into(), held: Some(5), ..Default::default() };
        let now = UNIX_EPOCH + Duration::from_secs(100);
        let observed = [Observed { heartbeat: &future, modified: now + Duration::from_secs(3) }];
        assert_eq!(elect("s", &observed, now, SETTINGS).offloader.as_deref(), Some("n1"));
        // `written` (the node's own clock) is never read.
        let skewed = Heartbeat { written: 1, ..future.clone() };
        let observed = [Observed { heartbeat: &skewed, modified: now }];
        assert_eq!(elect("s", &observed, now, SETTINGS).offloader.as_deref(), Some("n1"));
    }
}
