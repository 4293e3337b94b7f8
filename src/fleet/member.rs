//! One stream's place in the fleet, shared by its worker thread and the
//! fleet thread: the status its heartbeat is made of, and, with
//! `replicas = on`, whether this node is the elected offloader.
//!
//! The fleet thread writes the standing ([`Member::apply`]), and wakes
//! the worker when it changes; the worker only asks: may I upload
//! ([`Member::may_upload`]), did I just take over
//! ([`Member::take_takeover`]), is it time to follow the offloader's
//! records again ([`Member::follow_due`], [`Member::follow_in`]), so a
//! standby sleeps between those reads like any watched stream.
//!
//! Taking over: a node the election chooses starts uploading at once when
//! the previous offloader is gone (its heartbeat stale or `stopped`, or
//! nobody offloaded), or when it just started and no other node is alive.
//! While the previous offloader is alive — a live handover, or a node
//! that just started beside others and has not yet seen their choice — it
//! waits until the election has chosen it for one
//! heartbeat interval (the handover grace), by when the other node has
//! read the same election and stepped down: two nodes uploading at once,
//! which could cut a short batch at different positions, stays rare.

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
    /// How long a node chosen while the previous offloader is alive (or
    /// unknown) waits before it uploads.
    handover_grace: Duration,
    elected: AtomicBool,
    took_over: AtomicBool,
    last_follow: Mutex<Option<Instant>>,
    /// The offloader of the last election applied (`None`: none applied
    /// yet), and since when this node has been chosen without uploading.
    handover: Mutex<Handover>,
    /// Wakes the stream's worker (when its standing changes).
    waker: Option<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
struct Handover {
    last_offloader: Option<Option<String>>,
    chosen_since: Option<Instant>,
}

/// How much earlier than a full grace a choice confirms: elections come
/// one interval apart, give or take the time a round of writes takes.
const GRACE_SLACK_DIVISOR: u32 = 4;

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
            handover_grace: follow_interval,
            elected: AtomicBool::new(false),
            took_over: AtomicBool::new(false),
            last_follow: Mutex::new(None),
            handover: Mutex::new(Handover::default()),
            waker: None,
        }
    }

    /// The same member, calling `wake` when this node starts or stops
    /// offloading (the worker then passes or follows at once, whatever
    /// it was waiting for).
    pub fn with_waker(self, wake: impl Fn() + Send + Sync + 'static) -> Member {
        Member { waker: Some(Box::new(wake)), ..self }
    }

    /// The same member with another handover grace (`run --once`, which
    /// elects once, takes none).
    pub fn with_handover_grace(self, grace: Duration) -> Member {
        Member { handover_grace: grace, ..self }
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

    /// How long until a standby should read the remote records again
    /// (zero: now).
    pub fn follow_in(&self) -> Duration {
        let last = self.last_follow.lock().unwrap_or_else(|p| p.into_inner());
        last.map_or(Duration::ZERO, |at| self.follow_interval.saturating_sub(at.elapsed()))
    }

    /// Whether a standby should read the remote records now (at most once
    /// per heartbeat interval; the local scan runs whenever it wakes).
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
        let chosen = election.offloader.as_deref() == Some(node.as_str());
        let was = self.elected.load(Ordering::SeqCst);
        let waiting = self.wait_for_handover(election, chosen && !was);
        let elected = chosen && waiting.is_none();
        self.elected.store(elected, Ordering::SeqCst);
        if elected != was
            && let Some(wake) = &self.waker
        {
            wake();
        }
        if elected && !was {
            self.took_over.store(true, Ordering::SeqCst);
        }
        let mut changed = false;
        self.status.update(|status| {
            let before = status.replica.as_ref().and_then(|r| r.offloader.clone());
            changed = status.replica.is_none() || before != election.offloader;
            let reason = match &waiting {
                Some(why) => format!("{}; {why}", election.reason),
                None => election.reason.clone(),
            };
            status.replica =
                Some(ReplicaStatus { node: node.clone(), offloader: election.offloader.clone(), reason });
        });
        if changed {
            let stream = &self.stream;
            match (&election.offloader, elected) {
                (_, true) => log::info!("stream {stream}: this node ({node}) offloads: {}", election.reason),
                (Some(_), false) if chosen => log::info!(
                    "stream {stream}: this node ({node}) is elected ({}); {}",
                    election.reason,
                    waiting.as_deref().unwrap_or_default()
                ),
                (Some(other), false) => {
                    log::info!("stream {stream}: {other} offloads, {node} stands by: {}", election.reason)
                }
                (None, false) => log::warn!("stream {stream}: nobody offloads: {}", election.reason),
            }
        }
    }
}

impl Member {
    /// Whether a node the election chose (`newly`: not uploading yet) must
    /// wait before it uploads, and why (see the module doc). Remembers who
    /// offloads as far as this node knows: the election's choice, unless
    /// that is this node still waiting (then the one before goes on).
    fn wait_for_handover(&self, election: &Election, newly: bool) -> Option<String> {
        let mut handover = self.handover.lock().unwrap_or_else(|p| p.into_inner());
        if !newly {
            handover.chosen_since = None;
            handover.last_offloader = Some(election.offloader.clone());
            return None;
        }
        let previous_gone = match &handover.last_offloader {
            Some(None) => true,
            Some(Some(node)) => !election.alive.contains(node),
            // Just started: the others' choice is not known yet, unless
            // there are no others.
            None => election.alive.iter().all(|alive| Some(alive) == self.node.as_ref()),
        };
        let since = *handover.chosen_since.get_or_insert_with(Instant::now);
        let slack = self.handover_grace / GRACE_SLACK_DIVISOR;
        if previous_gone || since.elapsed() + slack >= self.handover_grace {
            handover.chosen_since = None;
            handover.last_offloader = Some(election.offloader.clone());
            return None;
        }
        let from = match handover.last_offloader.clone().flatten() {
            Some(node) => format!("{node} is alive and may still upload"),
            None => "this node just started and the others may not have seen it yet".into(),
        };
        Some(format!("takes over once chosen for {:?} ({from})", self.handover_grace))
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

    /// An election of `offloader` where only it is alive.
    fn election(offloader: Option<&str>) -> Election {
        election_among(offloader, offloader.as_slice())
    }

    fn election_among(offloader: Option<&str>, alive: &[&str]) -> Election {
        let reason = format!("elected {offloader:?}");
        let alive = alive.iter().map(|n| n.to_string()).collect();
        Election { offloader: offloader.map(String::from), reason, offloader_alive_for: None, alive }
    }

    #[test]
    fn without_replicas_a_node_always_uploads() {
        let plain = member(false);
        assert!(plain.may_upload());
        assert!(!plain.take_takeover());
    }

    #[test]
    fn standing_follows_the_elections() {
        let m = member(true).with_handover_grace(Duration::ZERO);
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

    /// A choice confirms at once when the last offloader is gone, after
    /// the grace while it is alive or unknown (a node that just started).
    #[test]
    fn a_live_offloader_hands_over_after_the_grace() {
        let grace = Duration::from_millis(200);
        let m = member(true).with_handover_grace(grace);
        m.apply(&election_among(Some("n1"), &["n1", "n2"]));
        assert!(!m.may_upload(), "just started: waits");
        let reason = m.status.get().replica.unwrap().reason;
        assert!(
            reason.ends_with("(this node just started and the others may not have seen it yet)"),
            "{reason}"
        );
        std::thread::sleep(grace);
        m.apply(&election_among(Some("n1"), &["n1", "n2"]));
        assert!(m.may_upload() && m.take_takeover(), "chosen for the grace: offloads");

        let m = member(true).with_handover_grace(grace);
        m.apply(&election_among(Some("n2"), &["n1", "n2"]));
        m.apply(&election_among(Some("n1"), &["n1", "n2"]));
        assert!(!m.may_upload(), "n2 is alive: waits");
        assert!(m.status.get().replica.unwrap().reason.contains("(n2 is alive and may still upload)"));
        m.apply(&election_among(Some("n2"), &["n1", "n2"]));
        std::thread::sleep(grace);
        m.apply(&election_among(Some("n1"), &["n1", "n2"]));
        assert!(!m.may_upload(), "the grace starts again after a choice of another");
        m.apply(&election_among(Some("n1"), &["n1"]));
        assert!(m.may_upload(), "n2 gone: at once");

        let m = member(true).with_handover_grace(grace);
        m.apply(&election_among(None, &[]));
        m.apply(&election_among(Some("n1"), &["n1"]));
        assert!(m.may_upload(), "nobody offloaded: at once");

        let m = member(true).with_handover_grace(grace);
        m.apply(&election_among(Some("n1"), &["n1"]));
        assert!(m.may_upload(), "just started, and no other node alive: at once");
    }

    #[test]
    fn a_standby_reads_the_records_once_per_interval() {
        let m = member(true);
        assert_eq!(m.follow_in(), Duration::ZERO);
        assert!(m.follow_due());
        assert!(!m.follow_due(), "not again within the interval");
        let left = m.follow_in();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600), "{left:?}");
    }

    #[test]
    fn a_change_of_standing_wakes_the_worker() {
        use std::sync::atomic::AtomicUsize;
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&wakes);
        let m = member(true).with_handover_grace(Duration::ZERO).with_waker(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        m.apply(&election(Some("n2")));
        assert_eq!(wakes.load(Ordering::SeqCst), 0, "still a standby");
        m.apply(&election(Some("n1")));
        m.apply(&election(Some("n1")));
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "elected: woken once");
        m.apply(&election(Some("n2")));
        assert_eq!(wakes.load(Ordering::SeqCst), 2, "stepped down: woken");
    }
}
