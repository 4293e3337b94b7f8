//! `run --once` on a node with `node_id`: what the daemon's fleet thread
//! does over time, done once around the pass. Before a `replicas = on`
//! stream's pass, [`elect`] writes this node's heartbeat (from the scan
//! just made), reads its peers' and elects the offloader, so that only
//! the elected node archives and the others stand by for this run; after
//! every stream's pass, [`publish_heartbeats`] writes each stream's heartbeat and the
//! node's fleet index object, as the daemon does each round.
//!
//! A heartbeat of `run --once` says `state=running`: a node run from a
//! timer counts as alive between its runs while they come within three
//! `heartbeat_interval`s of each other (so set the interval to at least
//! the timer's period).

use std::sync::Arc;

use super::election::{Observed, Settings, elect as elect_among};
use super::member::Member;
use super::publisher::{heartbeat_of, publish, publish_all, scanned};
use super::view::HeartbeatReader;
use crate::config::{Global, Replicas};
use crate::status::StatusCell;
use crate::target::{Target, TargetError};

/// Write this node's heartbeat of the stream (its `status` now: scanned),
/// read the peers' and elect; the returned member holds the outcome (and
/// has put it in `status`, and logged it).
pub fn elect(
    target: &dyn Target,
    global: &Global,
    node: &str,
    replicas: Replicas,
    status: &Arc<StatusCell>,
) -> Result<Member, TargetError> {
    let now = status.get();
    let own = heartbeat_of(node, &now);
    publish(target, &own)?;
    let (entries, store_now) = HeartbeatReader::default().read_knowing(target, &now.stream, Some(&own))?;
    let observed: Vec<Observed<'_>> = entries
        .iter()
        .filter_map(|e| Some(Observed { heartbeat: e.heartbeat.as_ref().ok()?, modified: e.modified }))
        .collect();
    let settings = Settings {
        heartbeat_interval: global.heartbeat_interval,
        max_offloader_lag: replicas.max_offloader_lag,
    };
    let election = elect_among(&now.stream, &observed, store_now, settings);
    // One election, no second round to confirm it: no handover grace.
    let member = Member::new(
        &now.stream,
        Arc::clone(status),
        Some(replicas),
        Some(node.into()),
        global.heartbeat_interval,
    )
    .with_handover_grace(std::time::Duration::ZERO);
    member.apply(&election);
    Ok(member)
}

/// After the run: each stream's heartbeat (of those that scanned their
/// directory) and the node's fleet index.
pub fn publish_heartbeats(
    target: &dyn Target,
    node: &str,
    statuses: &[Arc<StatusCell>],
) -> Result<(), TargetError> {
    let heartbeats: Vec<_> = statuses
        .iter()
        .map(|cell| cell.get())
        .filter(scanned)
        .map(|status| heartbeat_of(node, &status))
        .collect();
    publish_all(target, node, &heartbeats)
}
