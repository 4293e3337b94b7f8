//! The heartbeat publisher: a thread of the daemon (when `node_id` is set)
//! that writes every stream's heartbeat, `STREAM/nodes/NODE_ID`, every
//! `heartbeat_interval`, from the streams' in-memory status.
//!
//! It runs beside the stream threads, not inside them, so a long upload
//! never delays a heartbeat (peers would take a busy node for a dead one).
//! A failed write is logged once per change of error and tried again at
//! the next interval; it never stops archiving.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::heartbeat::Heartbeat;
use crate::status::{StreamStatus, unix_now};
use crate::target::{Target, Upload, keys};

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
        last_success: status.last_success,
        last_error: status.last_error.clone(),
    }
}

/// Write `heartbeat` to its key.
pub fn publish(target: &dyn Target, heartbeat: &Heartbeat) -> Result<(), crate::target::TargetError> {
    let text = heartbeat.to_text();
    let pieces = [text.as_bytes()];
    let body = Upload { pieces: &pieces, size: text.len() as u64, crc32: crc32fast::hash(text.as_bytes()) };
    target.put(&keys::heartbeat_key(&heartbeat.stream, &heartbeat.node), &body)
}

/// Start the publisher: until `stopped()` (then unpark the thread), write a
/// heartbeat for each of `statuses()` every `interval`.
pub fn start(
    target: Arc<dyn Target>,
    node: String,
    interval: Duration,
    statuses: impl Fn() -> Vec<StreamStatus> + Send + 'static,
    stopped: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new().name("walship-heartbeat".into()).spawn(move || {
        let mut last_error: Option<String> = None;
        while !stopped() {
            let result = statuses()
                .iter()
                .try_for_each(|status| publish(target.as_ref(), &heartbeat_of(&node, status)))
                .map_err(|e| e.to_string());
            if result.as_ref().err() != last_error.as_ref() {
                match &result {
                    Err(e) => log::warn!(
                        "node {node}: cannot write heartbeats: {e}; trying again every {interval:?}"
                    ),
                    Ok(()) => log::info!("node {node}: writing heartbeats again"),
                }
                last_error = result.err();
            }
            thread::park_timeout(interval);
        }
    })
}
