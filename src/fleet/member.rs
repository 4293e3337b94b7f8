//! One stream's place in the fleet, shared by its worker thread and the
//! fleet thread: the status its heartbeat is made of, and, with
//! `replicas = on`, whether this node is the elected offloader.
//!
//! The fleet thread writes the standing ([`Member::apply`]); the worker
//! only asks: may I upload ([`Member::may_upload`]), did I just take over
//! ([`Member::take_takeover`]), is it time to follow the offloader's
//! records again ([`Member::follow_due`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::election::Election;
use crate::config::Replicas;
use crate::status::{ReplicaStatus, StatusCell};

/// A stream as the fleet sees it.
pub struct Member {
    pub stream: String,
    pub status: Arc<StatusCell>,
    /// `None`: `replicas = off`, the node always archives.
    pub replicas: Option<Replicas>,
    /// This node's id (`None` without `node_id`).
    node: Option<String>,
    /// How often a standby reads the offloader's records.
    follow_interval: Duration,
    elected: AtomicBool,
    took_over: AtomicBool,
    last_follow: Mutex<Option<Instant>>,
}

impl Member {
    pub fn new(
        stream: &str,
        status: Arc<StatusCell>,
        replicas: Option<Replicas>,
        node: Option<String>,
        follow_interval: Duration,
    ) -> Member {
        Member {
            stream: stream.to_string(),
            status,
            replicas,
            node,
            follow_interval,
            elected: AtomicBool::new(false),
            took_over: AtomicBool::new(false),
            last_follow: Mutex::new(None),
        }
    }

    /// Whether this node may upload the stream now: always without
    /// replicas; with them, only while elected (a standby until the first
    /// election).
    pub fn may_upload(&self) -> bool {
        self.replicas.is_none() || self.elected.load(Ordering::SeqCst)
    }

    /// True once after this node became the offloader: the worker then
    /// reads the records the previous offloader wrote before it uploads.
    pub fn take_takeover(&self) -> bool {
        self.took_over.swap(false, Ordering::SeqCst)
    }

    /// Whether a standby should read the remote records now (at most once
    /// per heartbeat interval; the local scan runs at every poll).
    pub fn follow_due(&self) -> bool {
        let mut last = self.last_follow.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= self.follow_interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Record an election's outcome: the standing, the status, a log line
    /// when the offloader changes.
    pub fn apply(&self, election: &Election) {
        let Some(node) = &self.node else { return };
        let elected = election.offloader.as_deref() == Some(node.as_str());
        let was = self.elected.swap(elected, Ordering::SeqCst);
        if elected && !was {
            self.took_over.store(true, Ordering::SeqCst);
        }
        let mut changed = false;
        self.status.update(|status| {
            let before = status.replica.as_ref().and_then(|r| r.offloader.clone());
            changed = status.replica.is_none() || before != election.offloader;
            status.replica = Some(ReplicaStatus {
                node: node.clone(),
                offloader: election.offloader.clone(),
                reason: election.reason.clone(),
            });
        });
        if changed {
            let stream = &self.stream;
            match (&election.offloader, elected) {
                (_, true) => log::info!("stream {stream}: this node ({node}) offloads: {}", election.reason),
                (Some(other), false) => {
                    log::info!("stream {stream}: {other} offloads, {node} stands by: {}", election.reason)
                }
                (None, false) => log::warn!("stream {stream}: nobody offloads: {}", election.reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StreamStatus;

    fn member(replicas: bool) -> Member {
        let status = Arc::new(StatusCell::new(StreamStatus { stream: "s".into(), ..Default::default() }));
        let replicas = replicas.then_some(Replicas { max_offloader_lag: 16 });
        Member::new("s", status, replicas, Some("n1".into()), Duration::from_secs(3600))
    }

    fn election(offloader: Option<&str>) -> Election {
        let reason = format!("elected {offloader:?}");
        Election { offloader: offloader.map(String::from), reason, offloader_alive_for: None }
    }

    #[test]
    fn without_replicas_a_node_always_uploads() {
        let plain = member(false);
        assert!(plain.may_upload());
        assert!(!plain.take_takeover());
    }

    #[test]
    fn standing_follows_the_elections() {
        let m = member(true);
        assert!(!m.may_upload(), "a standby until the first election");
        m.apply(&election(Some("n2")));
        assert!(!m.may_upload() && !m.take_takeover());
        let replica = m.status.get().replica.unwrap();
        assert_eq!((replica.node.as_str(), replica.offloader.as_deref()), ("n1", Some("n2")));
        m.apply(&election(Some("n1")));
        assert!(m.may_upload());
        assert!(m.take_takeover(), "taking over reads the records first");
        assert!(!m.take_takeover(), "once");
        m.apply(&election(Some("n1")));
        assert!(!m.take_takeover(), "staying elected is no takeover");
        m.apply(&election(None));
        assert!(!m.may_upload(), "nobody elected: nobody uploads");
        assert_eq!(m.status.get().replica.unwrap().offloader, None);
    }

    #[test]
    fn a_standby_reads_the_records_once_per_interval() {
        let m = member(true);
        assert!(m.follow_due());
        assert!(!m.follow_due(), "not again within the interval");
    }
}
