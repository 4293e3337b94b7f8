//! The fleet thread of the daemon (when `node_id` is set): writes every
//! stream's heartbeat, `STREAM/nodes/NODE_ID`, every `heartbeat_interval`,
//! from the streams' in-memory status, and after them the node's fleet
//! index object `.walship/fleet/NODE_ID` holding them all (for `walship
//! fleet`, see `index`); then, for `replicas = on` streams,
//! reads the peers' heartbeats (one LIST, GETs of the changed ones), elects
//! the offloader and tells the stream's [`Member`].
//!
//! When the daemon stops cleanly (after its streams), it writes each
//! stream's last heartbeat with `state=stopped`, so peers elect without
//! it at their next round. It runs beside the stream threads, not inside them, so a long upload
//! never delays a heartbeat (peers would take a busy node for a dead one).
//! A failed write or read is logged once per change of error and tried
//! again at the next round; it never stops archiving. While the peers'
//! heartbeats cannot be read, each stream keeps its last standing.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::election::{Observed, Settings, elect};
use super::heartbeat::{Heartbeat, index_text};
use super::member::Member;
use super::view::HeartbeatReader;
use crate::status::{StreamStatus, unix_now};
use crate::target::{Target, TargetError, Upload, keys};

/// What a node says about a stream, from its status now.
pub fn heartbeat_of(node: &str, status: &StreamStatus) -> Heartbeat {
    Heartbeat {
        node: node.to_string(),
        stream: status.stream.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        written: unix_now(),
        archived: status.archived_position,
        committed: status.committed_position,
        backlog_segments: status.lag_segments,
        first_waiting: status.first_waiting,
        held: status.held_through,
        last_success: status.last_success,
        last_error: status.last_error.clone(),
        stopped: false,
    }
}

/// Write `heartbeat` to its key.
pub fn publish(target: &dyn Target, heartbeat: &Heartbeat) -> Result<(), TargetError> {
    let text = heartbeat.to_text();
    let pieces = [text.as_bytes()];
    let body = Upload::pieces(&pieces, text.len() as u64, crc32fast::hash(text.as_bytes()));
    target.put(&keys::heartbeat_key(&heartbeat.stream, &heartbeat.node), &body)
}

/// Write `node`'s fleet index object, holding `heartbeats` (its streams').
pub fn publish_index(target: &dyn Target, node: &str, heartbeats: &[Heartbeat]) -> Result<(), TargetError> {
    let text = index_text(heartbeats);
    let pieces = [text.as_bytes()];
    let body = Upload::pieces(&pieces, text.len() as u64, crc32fast::hash(text.as_bytes()));
    target.put(&keys::fleet_index_key(node), &body)
}

/// Start the fleet thread: until `stopped()` (then unpark the thread),
/// write the heartbeat of each of `members()` every `interval` (once the
/// stream has scanned its directory, so a heartbeat never shows a node
/// that knows nothing yet as caught up), and elect the offloader of every
/// `replicas = on` stream after each round of writes, and again when the
/// elected offloader's heartbeat would turn stale.
pub fn start(
    target: Arc<dyn Target>,
    node: String,
    interval: Duration,
    members: impl Fn() -> Vec<Arc<Member>> + Send + 'static,
    stopped: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new().name("walship-fleet".into()).spawn(move || {
        let mut fleet = FleetThread {
            writes: Logged::new(
                format!("node {node}: cannot write heartbeats"),
                format!("node {node}: heartbeats written again"),
            ),
            reads: Logged::new(
                format!("node {node}: cannot read peers' heartbeats (elections wait)"),
                format!("node {node}: peers' heartbeats read again"),
            ),
            reader: HeartbeatReader::default(),
            written: Vec::new(),
            target,
            node,
            interval,
        };
        // A write of the fleet index that a crash interrupted left a temp
        // file (file target); the streams clean their own prefixes.
        match fleet.target.clean_stale_temps(keys::FLEET_INDEX_PREFIX, crate::statedir::process_start()) {
            Ok(0) => {}
            Ok(removed) => log::info!("node {}: removed {removed} temp files of the fleet index", fleet.node),
            Err(error) => {
                log::warn!("node {}: cannot clean the fleet index's temp files: {error}", fleet.node)
            }
        }
        // The first heartbeats wait (up to an interval) for every stream's
        // first scan, so the first election already sees positions.
        let first_round = Instant::now() + interval;
        while !stopped()
            && Instant::now() < first_round
            && !members().iter().all(|m| scanned(&m.status.get()))
        {
            thread::park_timeout(Duration::from_millis(20));
        }
        let mut next_write = Instant::now();
        while !stopped() {
            let members = members();
            if Instant::now() >= next_write {
                next_write = Instant::now() + interval;
                fleet.write_heartbeats(&members, false);
            }
            let look_again = fleet.elect_offloaders(&members);
            let wake = look_again.map_or(next_write, |at| at.min(next_write));
            thread::park_timeout(wake.saturating_duration_since(Instant::now()));
        }
        // The last word: this node archives no more, so peers elect without
        // it at their next round instead of waiting for it to turn stale.
        fleet.write_heartbeats(&members(), true);
    })
}

/// The fleet thread's state between rounds.
struct FleetThread {
    target: Arc<dyn Target>,
    node: String,
    interval: Duration,
    reader: HeartbeatReader,
    /// The heartbeats written last, by stream (read back without a GET).
    written: Vec<Heartbeat>,
    writes: Logged,
    reads: Logged,
}

impl FleetThread {
    /// Write the heartbeat of every member that has scanned its directory
    /// (`stopped`: the last one, as the node stops), then the node's fleet
    /// index object holding them all.
    fn write_heartbeats(&mut self, members: &[Arc<Member>], stopped: bool) {
        let heartbeats: Vec<Heartbeat> = members
            .iter()
            .map(|member| member.status.get())
            .filter(scanned)
            .map(|status| Heartbeat { stopped, ..heartbeat_of(&self.node, &status) })
            .collect();
        self.writes.note(publish_all(self.target.as_ref(), &self.node, &heartbeats));
        self.written = heartbeats;
    }

    /// Elect the offloader of every `replicas = on` member from its peers'
    /// heartbeats and tell the member; returns when to look again (just
    /// after another node's offloader heartbeat would turn stale), if
    /// sooner than the next round.
    fn elect_offloaders(&mut self, members: &[Arc<Member>]) -> Option<Instant> {
        let mut look_again: Option<Instant> = None;
        for member in members {
            let Some(replicas) = member.replicas else { continue };
            let settings =
                Settings { heartbeat_interval: self.interval, max_offloader_lag: replicas.max_offloader_lag };
            let own = self.written.iter().find(|beat| beat.stream == member.stream);
            let read = self.reader.read_knowing(self.target.as_ref(), &member.stream, own);
            if let Ok((entries, store_now)) = &read {
                let observed: Vec<Observed<'_>> = entries
                    .iter()
                    .filter_map(|e| {
                        Some(Observed { heartbeat: e.heartbeat.as_ref().ok()?, modified: e.modified })
                    })
                    .collect();
                let election = elect(&member.stream, &observed, *store_now, settings);
                member.apply(&election);
                let others = election.offloader.as_deref() != Some(self.node.as_str());
                if let Some(alive_for) = election.offloader_alive_for.filter(|_| others) {
                    let at = Instant::now() + alive_for + STALE_MARGIN;
                    look_again = Some(look_again.map_or(at, |earlier| earlier.min(at)));
                }
            }
            self.reads.note(read.map(|_| ()));
        }
        look_again
    }
}

/// Write each of `heartbeats` (all of `node`), then `node`'s fleet index
/// holding them (none written: no index either).
pub fn publish_all(target: &dyn Target, node: &str, heartbeats: &[Heartbeat]) -> Result<(), TargetError> {
    if heartbeats.is_empty() {
        return Ok(());
    }
    heartbeats.iter().try_for_each(|heartbeat| publish(target, heartbeat))?;
    publish_index(target, node, heartbeats)
}

/// Whether the stream has looked at its directory at least once.
pub(super) fn scanned(status: &StreamStatus) -> bool {
    status.last_success.is_some() || status.last_error.is_some()
}

/// Past the moment an offloader's heartbeat turns stale, look again this
/// much later (Last-Modified has whole seconds).
const STALE_MARGIN: Duration = Duration::from_millis(1100);

/// A repeated operation's failures, logged once per change of error, and
/// its recovery.
struct Logged {
    /// "node n1: cannot write heartbeats"
    failing: String,
    /// "node n1: heartbeats written again"
    recovered: String,
    last: Option<String>,
}

impl Logged {
    fn new(failing: String, recovered: String) -> Logged {
        Logged { failing, recovered, last: None }
    }

    fn note(&mut self, result: Result<(), TargetError>) {
        let error = result.err().map(|e| e.to_string());
        if error != self.last {
            match &error {
                Some(e) => log::warn!("{}: {e}; trying again", self.failing),
                None => log::info!("{}", self.recovered),
            }
            self.last = error;
        }
    }
}
