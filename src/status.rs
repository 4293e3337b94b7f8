//! What a stream reports about itself: positions, lag, last success and
//! error, backoff, and the counters metrics are made of. The daemon keeps one
//! per stream in memory (read by the library's `Archiver::status` and by
//! `metrics`) and mirrors part of it to the stream's status file (see
//! `statedir`) whenever what the file shows changes, so `walship status` in
//! another process can show it; counters stay in memory. An idle stream's
//! `last_success` reaches the file at most once a minute
//! ([`StatusCell`]). Rendering to text and JSON lives here too;
//! the Prometheus page is `metrics`'.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::snapshot::JobReport;
use crate::snapshot::status::SnapshotStatus;

/// How often an otherwise unchanged status file is refreshed with a new
/// `last_success`.
const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// Upper bounds (milliseconds) of the upload-duration histogram buckets.
pub const UPLOAD_BUCKETS_MS: [u64; 10] = [10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000];

/// Upper bounds (milliseconds) of the snapshot-job-duration buckets: a
/// second to the default `snapshot_timeout`.
pub const SNAPSHOT_BUCKETS_MS: [u64; 8] =
    [1_000, 10_000, 30_000, 60_000, 300_000, 900_000, 1_800_000, 3_600_000];

/// A cumulative histogram of durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// The buckets' upper bounds, in milliseconds.
    pub bounds_ms: &'static [u64],
    /// Observations at or below each bound.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_micros: u64,
}

impl Histogram {
    /// An empty histogram with these bucket bounds (milliseconds).
    pub fn new(bounds_ms: &'static [u64]) -> Histogram {
        Histogram { bounds_ms, buckets: vec![0; bounds_ms.len()], count: 0, sum_micros: 0 }
    }

    pub fn observe(&mut self, duration: Duration) {
        for (bucket, bound) in self.buckets.iter_mut().zip(self.bounds_ms) {
            if duration <= Duration::from_millis(*bound) {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum_micros += duration.as_micros() as u64;
    }
}

/// Upload durations, unless said otherwise.
impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(&UPLOAD_BUCKETS_MS)
    }
}

/// What "committed position" means, where a user reads it.
pub const COMMITTED_MEANING: &str = "every segment up to it is sealed (complete)";

/// One stream's state, as of its last change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStatus {
    pub stream: String,
    /// Last position recorded in the manifest (archived and acknowledged).
    pub archived_position: Option<u64>,
    /// Highest position up to which every present segment is sealed.
    pub committed_position: Option<u64>,
    /// Sealed segments not yet archived (`plan::lag_segments`).
    pub lag_segments: u64,
    /// Segments in the stream's directory waiting to be archived (sealed
    /// or not), and their bytes: a link that cannot keep up shows here
    /// before the disk fills. In memory for the daemon's status and
    /// metrics; `walship status` counts them from a scan.
    pub backlog_segments: u64,
    pub backlog_bytes: u64,
    /// Whether a daemon archives the stream now. Not in the file: whoever
    /// reads the file tells (by the stream's lock).
    pub daemon_running: bool,
    /// Batches archived since the process started.
    pub batches_archived: u64,
    /// Gaps recorded since the process started.
    pub gaps_recorded: u64,
    /// Late files in the stream's directory at its last pass: at positions
    /// the archive passed without them, so never archived (see the log).
    pub late_segments: u64,
    /// When the last pass finished without error (seconds since the epoch).
    pub last_success: Option<u64>,
    /// The error the stream is currently stuck on, if any.
    pub last_error: Option<String>,
    /// Current delay before the next attempt, while failing.
    pub backoff_ms: Option<u64>,
    /// Batch uploads that succeeded / failed since the process started.
    pub uploads_ok: u64,
    pub uploads_failed: u64,
    /// Bytes of batches uploaded since the process started.
    pub uploaded_bytes: u64,
    /// Failed passes retried after a backoff.
    pub retries: u64,
    /// Batch upload durations.
    pub upload_seconds: Histogram,
    /// The lowest position waiting to be archived in the stream's directory
    /// (for heartbeats; not in the file).
    pub first_waiting: Option<u64>,
    /// The highest sealed position the stream's directory has held since
    /// the stream started (waiting, or present at an archived position):
    /// how far this node's own copy reaches, for elections; not in the file.
    pub held_through: Option<u64>,
    /// With `replicas = on`: who offloads the stream, and why.
    pub replica: Option<ReplicaStatus>,
    /// The upload bandwidth in force (`bandwidth_limit`, the schedule's
    /// window); `None` when unlimited.
    pub bandwidth: Option<String>,
    /// Why no new upload starts now (a `0` window, a spent data budget);
    /// `None` when uploads may go.
    pub held: Option<String>,
    /// Bytes of waiting segments deleted unarchived by `backlog_limit`
    /// since the process started.
    pub dropped_bytes: u64,
    /// Snapshots: the last job, the newest and the next.
    pub snapshots: SnapshotStatus,
}

/// A replicated stream's election, as this node last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// This node's `node_id`.
    pub node: String,
    /// The elected node, if any.
    pub offloader: Option<String>,
    /// Why (`elected n2 among n1,n2,n3, 2 caught up`), or why nobody is.
    pub reason: String,
}

impl StreamStatus {
    /// The file form: `key=value` lines (values never contain newlines).
    pub fn to_file_text(&self) -> String {
        let mut out = String::new();
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let _ = writeln!(out, "stream={}", self.stream);
        let _ = writeln!(out, "archived_position={}", opt(self.archived_position));
        let _ = writeln!(out, "committed_position={}", opt(self.committed_position));
        let _ = writeln!(out, "lag_segments={}", self.lag_segments);
        let _ = writeln!(out, "batches_archived={}", self.batches_archived);
        let _ = writeln!(out, "gaps_recorded={}", self.gaps_recorded);
        let _ = writeln!(out, "late_segments={}", self.late_segments);
        let _ = writeln!(out, "last_success={}", opt(self.last_success));
        let _ = writeln!(out, "last_error={}", self.last_error.as_deref().unwrap_or("").replace('\n', " "));
        let _ = writeln!(out, "backoff_ms={}", opt(self.backoff_ms));
        let _ = writeln!(out, "bandwidth={}", self.bandwidth.as_deref().unwrap_or(""));
        let _ = writeln!(out, "held={}", self.held.as_deref().unwrap_or(""));
        self.snapshots.write_file_lines(&mut out);
        if let Some(replica) = &self.replica {
            let _ = writeln!(out, "node={}", replica.node);
            let _ = writeln!(out, "offloader={}", replica.offloader.as_deref().unwrap_or(""));
            let _ = writeln!(out, "election={}", replica.reason.replace('\n', " "));
        }
        out
    }

    /// Parse [`to_file_text`](Self::to_file_text); unknown or bad lines are
    /// skipped (the file is informational, written by another process).
    pub fn from_file_text(text: &str) -> StreamStatus {
        let mut s = StreamStatus::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let num = value.parse::<u64>().ok();
            match key {
                "stream" => s.stream = value.to_string(),
                "archived_position" => s.archived_position = num,
                "committed_position" => s.committed_position = num,
                "lag_segments" => s.lag_segments = num.unwrap_or(0),
                "batches_archived" => s.batches_archived = num.unwrap_or(0),
                "gaps_recorded" => s.gaps_recorded = num.unwrap_or(0),
                "late_segments" => s.late_segments = num.unwrap_or(0),
                "last_success" => s.last_success = num,
                "last_error" => s.last_error = (!value.is_empty()).then(|| value.to_string()),
                "backoff_ms" => s.backoff_ms = num,
                "node" => s.replica.get_or_insert_default().node = value.to_string(),
                "offloader" => {
                    s.replica.get_or_insert_default().offloader =
                        (!value.is_empty()).then(|| value.to_string());
                }
                "election" => s.replica.get_or_insert_default().reason = value.to_string(),
                "bandwidth" => s.bandwidth = (!value.is_empty()).then(|| value.to_string()),
                "held" => s.held = (!value.is_empty()).then(|| value.to_string()),
                _ => {
                    let stream = s.stream.clone();
                    s.snapshots.read_file_line(key, value, &stream);
                }
            }
        }
        s
    }

    /// A JSON object (hand-written: one flat object needs no serializer).
    /// With no daemon running, no retry is pending: `backoff_ms` is null.
    pub fn to_json(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        let text = |v: Option<&str>| v.map_or("null".to_string(), json_string);
        format!(
            "{{\"stream\":{},\"archived_position\":{},\"committed_position\":{},\
             \"lag_segments\":{},\"batches_archived\":{},\"gaps_recorded\":{},\
             \"late_segments\":{},\"backlog_segments\":{},\"backlog_bytes\":{},\"last_success\":{},\
             \"last_error\":{},\"backoff_ms\":{},\"daemon_running\":{},\"bandwidth\":{},\"held\":{},{}{}}}",
            json_string(&self.stream),
            opt(self.archived_position),
            opt(self.committed_position),
            self.lag_segments,
            self.batches_archived,
            self.gaps_recorded,
            self.late_segments,
            self.backlog_segments,
            self.backlog_bytes,
            opt(self.last_success),
            text(self.last_error.as_deref()),
            opt(self.backoff_ms.filter(|_| self.daemon_running)),
            self.daemon_running,
            text(self.bandwidth.as_deref().filter(|_| self.daemon_running)),
            text(self.held.as_deref().filter(|_| self.daemon_running)),
            self.snapshots.json_members(),
            self.replica.as_ref().map_or(String::new(), |r| format!(
                ",\"node\":{},\"offloader\":{},\"election\":{}",
                json_string(&r.node),
                text(r.offloader.as_deref()),
                json_string(&r.reason)
            )),
        )
    }

    /// Lines for a person. A stream no daemon archives says so, and shows
    /// its last error as of when the daemon stopped, with no retry pending.
    pub fn to_human(&self, now: SystemTime) -> String {
        let pos = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
        let mut out = format!("stream {}\n", self.stream);
        let daemon = if self.daemon_running { "running" } else { "not running" };
        let _ = writeln!(out, "  daemon:             {daemon}");
        let _ = writeln!(out, "  archived position:  {}", pos(self.archived_position));
        let _ = writeln!(out, "  committed position: {} ({COMMITTED_MEANING})", pos(self.committed_position));
        let lag = crate::human::count(self.lag_segments, "sealed segment");
        let _ = writeln!(out, "  lag:                {lag} not yet archived");
        let backlog = crate::human::count(self.backlog_segments, "segment");
        let bytes = crate::human::human_bytes(self.backlog_bytes);
        let _ = writeln!(out, "  backlog:            {backlog} ({bytes}) waiting to be archived");
        let success = self.last_success.map_or("never".to_string(), |t| {
            let ago = now.duration_since(UNIX_EPOCH + Duration::from_secs(t)).unwrap_or_default();
            format!("{}s ago", ago.as_secs())
        });
        let _ = writeln!(out, "  last success:       {success}");
        let error = self.last_error.as_deref().unwrap_or("none");
        if self.daemon_running {
            let _ = writeln!(out, "  last error:         {error}");
            if let Some(ms) = self.backoff_ms {
                let _ = writeln!(out, "  backoff:            retrying in {ms} ms");
            }
        } else {
            let _ = writeln!(out, "  last error:         {error} (when the daemon last ran)");
        }
        if let Some(replica) = &self.replica {
            let role = match &replica.offloader {
                Some(offloader) if *offloader == replica.node => "this node offloads".to_string(),
                Some(offloader) => format!("{offloader} offloads; {} stands by", replica.node),
                None => "nobody offloads".to_string(),
            };
            let _ = writeln!(out, "  offloader:          {role} ({})", replica.reason);
        }
        if self.daemon_running {
            if let Some(bandwidth) = &self.bandwidth {
                let _ = writeln!(out, "  bandwidth window:   {bandwidth}");
            }
            if let Some(held) = &self.held {
                let _ = writeln!(out, "  uploads held:       {held}");
            }
        }
        if self.late_segments > 0 {
            let _ = writeln!(
                out,
                "  late files:         {} (arrived after the archive passed their position; \
                 not archived, see the log)",
                self.late_segments
            );
        }
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.snapshots.write_human_lines(&mut out, now);
        out
    }

    /// Mirror this status to `path` (atomically, so a reader never sees
    /// half; not durably: it only informs).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::durable::replace_file(path, self.to_file_text().as_bytes())
    }
}

/// A stream's status, shared by its thread (which changes it) and readers
/// (`Archiver::status`, metrics), and mirrored to the status file once the
/// thread holds the stream's lock.
#[derive(Debug, Default)]
pub struct StatusCell {
    current: Mutex<StreamStatus>,
    mirror: Mutex<Mirror>,
}

/// Where the status is mirrored, and what the file last got (the file text
/// with `last_success` reduced to whether there is one) and when.
#[derive(Debug, Default)]
struct Mirror {
    path: Option<PathBuf>,
    saved: Option<(String, Instant)>,
}

impl StatusCell {
    /// A cell holding `status`, not mirrored yet.
    pub fn new(status: StreamStatus) -> StatusCell {
        StatusCell { current: Mutex::new(status), mirror: Mutex::default() }
    }

    /// The status now.
    pub fn get(&self) -> StreamStatus {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Mirror to `path` from now on (the caller holds the stream's lock),
    /// carrying over the `last_success` and the last snapshot job the file
    /// already shows: they are the stream's, not this process's (a job
    /// shown running was cut short with its process).
    pub fn mirror_to(&self, path: PathBuf) {
        let previous =
            std::fs::read_to_string(&path).map(|t| StreamStatus::from_file_text(&t)).unwrap_or_default();
        *self.mirror.lock().unwrap_or_else(|p| p.into_inner()) = Mirror { path: Some(path), saved: None };
        self.update(|s| {
            s.last_success = s.last_success.max(previous.last_success);
            if s.snapshots.last_job.is_none() {
                s.snapshots.last_job = previous.snapshots.last_job.map(JobReport::interrupted);
            }
        });
    }

    /// Change the status, and mirror it to the file when what `walship
    /// status` shows has changed (a new `last_success` alone at most every
    /// a minute, so an idle stream does not write every poll; the
    /// first one at once, so a pass that archived nothing still counts).
    pub fn update(&self, change: impl FnOnce(&mut StreamStatus)) {
        // The file is written under the status lock: once a reader sees a
        // change, the file shows it too.
        let mut status = self.current.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut status);
        let mut mirror = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = mirror.path.clone() else { return };
        let shown =
            StreamStatus { last_success: status.last_success.map(|_| 0), ..status.clone() }.to_file_text();
        let due = match &mirror.saved {
            Some((text, at)) => {
                *text != shown || (at.elapsed() >= STATUS_REFRESH && status.last_success.is_some())
            }
            None => true,
        };
        if !due {
            return;
        }
        match status.save(&path) {
            Ok(()) => mirror.saved = Some((shown, Instant::now())),
            Err(e) => log::warn!("stream {}: cannot write {}: {e}", status.stream, path.display()),
        }
    }
}

/// Seconds since the epoch, for `last_success`.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_text_round_trips() {
        let s = StreamStatus {
            stream: "sensors".into(),
            archived_position: Some(99),
            committed_position: Some(120),
            lag_segments: 21,
            batches_archived: 10,
            gaps_recorded: 1,
            late_segments: 2,
            last_success: Some(1_700_000_000),
            last_error: Some("stream sensors: boom = bad".into()),
            backoff_ms: Some(250),
            bandwidth: Some("256.0 KiB/s until 19:00".into()),
            held: Some("data budget spent; uploads resume on 2026-12-01".into()),
            ..Default::default()
        };
        assert_eq!(StreamStatus::from_file_text(&s.to_file_text()), s);
        let shown = StreamStatus { daemon_running: true, ..s.clone() }.to_human(SystemTime::now());
        assert!(shown.contains("bandwidth window:   256.0 KiB/s until 19:00"), "{shown}");
        assert!(shown.contains("uploads held:       data budget spent"), "{shown}");
        let empty = StreamStatus { stream: "x".into(), ..Default::default() };
        assert_eq!(StreamStatus::from_file_text(&empty.to_file_text()), empty);
    }

    #[test]
    fn json_escapes() {
        let s = StreamStatus {
            stream: "a".into(),
            last_error: Some("say \"hi\"\n".into()),
            ..Default::default()
        };
        let json = s.to_json();
        assert!(json.contains(r#""last_error":"say \"hi\"\u000a""#), "{json}");
        assert!(json.contains(r#""archived_position":null"#), "{json}");
    }

    /// Regression: after the daemon stopped, `status` still said "retrying
    /// in 1979 ms" and did not say the daemon was not running.
    #[test]
    fn a_stopped_daemon_is_said_and_no_retry_is_shown() {
        let s = StreamStatus {
            stream: "s".into(),
            last_error: Some("boom".into()),
            backoff_ms: Some(1979),
            ..Default::default()
        };
        let text = s.to_human(SystemTime::now());
        assert!(text.contains("daemon:             not running"), "{text}");
        assert!(!text.contains("retrying"), "{text}");
        assert!(text.contains("boom (when the daemon last ran)"), "{text}");
        assert!(s.to_json().contains("\"backoff_ms\":null"), "{}", s.to_json());
        let running = StreamStatus { daemon_running: true, ..s };
        assert!(running.to_json().contains("\"backoff_ms\":1979"), "{}", running.to_json());
        let running = running.to_human(SystemTime::now());
        assert!(running.contains("retrying in 1979 ms"), "{running}");
        assert!(running.contains(COMMITTED_MEANING), "{running}");
    }
}
