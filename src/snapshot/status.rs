//! What a stream reports about its snapshots: the last job, the newest
//! snapshot recorded and where the next one falls, and the job counters
//! and durations metrics are made of. Part of [`crate::status::StreamStatus`];
//! its lines of the status file, of `status` (table and JSON) and of the
//! metrics page are written and read here.
//!
//! In the status file: `snapshot_position=P`, `next_snapshot=P`,
//! `last_job=ID POSITION STATE STARTED ENDED` (times in seconds since the
//! epoch, `-` while running) and `last_job_message=TEXT` (a failed job's
//! message). The counters and durations stay in memory.

use std::fmt::Write as _;

use super::{JobReport, JobState};
use crate::metrics::{label, render_histogram};
use crate::status::{Histogram, SNAPSHOT_BUCKETS_MS, StreamStatus, json_string};

/// A stream's snapshots, as status shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// The last job of the stream (running, or how it ended).
    pub last_job: Option<JobReport>,
    /// The newest snapshot recorded.
    pub position: Option<u64>,
    /// Where the next scheduled snapshot falls (none: not scheduled).
    pub next_position: Option<u64>,
    /// Jobs that succeeded / failed since the process started.
    pub jobs_succeeded: u64,
    pub jobs_failed: u64,
    /// How long the jobs took.
    pub seconds: Histogram,
}

impl Default for SnapshotStatus {
    fn default() -> SnapshotStatus {
        SnapshotStatus {
            last_job: None,
            position: None,
            next_position: None,
            jobs_succeeded: 0,
            jobs_failed: 0,
            seconds: Histogram::new(&SNAPSHOT_BUCKETS_MS),
        }
    }
}

impl SnapshotStatus {
    /// Count the end of `job` (its report once ended).
    pub fn ended(&mut self, job: &JobReport, now: u64) {
        match job.state {
            JobState::Succeeded => self.jobs_succeeded += 1,
            _ => self.jobs_failed += 1,
        }
        self.seconds.observe(job.duration(now));
        self.last_job = Some(job.clone());
    }

    /// The status file's lines.
    pub fn write_file_lines(&self, out: &mut String) {
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let _ = writeln!(out, "snapshot_position={}", opt(self.position));
        let _ = writeln!(out, "next_snapshot={}", opt(self.next_position));
        let (job, message) = match &self.last_job {
            Some(job) => {
                let ended = job.ended.map_or("-".to_string(), |t| t.to_string());
                let message = match &job.state {
                    JobState::Failed(message) => message.replace('\n', " "),
                    _ => String::new(),
                };
                (format!("{} {} {} {} {ended}", job.id, job.position, job.state.word(), job.started), message)
            }
            None => (String::new(), String::new()),
        };
        let _ = writeln!(out, "last_job={job}");
        let _ = writeln!(out, "last_job_message={message}");
    }

    /// Read one status file line; false when it is not one of ours.
    pub fn read_file_line(&mut self, key: &str, value: &str, stream: &str) -> bool {
        match key {
            "snapshot_position" => self.position = value.parse().ok(),
            "next_snapshot" => self.next_position = value.parse().ok(),
            "last_job" => self.last_job = parse_job(value, stream),
            "last_job_message" => {
                if let Some(JobReport { state: JobState::Failed(message), .. }) = &mut self.last_job {
                    *message = value.to_string();
                }
            }
            _ => return false,
        }
        true
    }

    /// The JSON members (without braces): `"snapshot_position":…`.
    pub fn json_members(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        let job = self.last_job.as_ref().map_or("null".to_string(), |job| {
            let message = match &job.state {
                JobState::Failed(message) => json_string(message),
                _ => "null".into(),
            };
            format!(
                "{{\"id\":{},\"position\":{},\"state\":\"{}\",\"started\":{},\"ended\":{},\"message\":{message}}}",
                job.id,
                job.position,
                job.state.word(),
                job.started,
                opt(job.ended)
            )
        });
        format!(
            "\"snapshot_position\":{},\"next_snapshot\":{},\"last_snapshot_job\":{job}",
            opt(self.position),
            opt(self.next_position)
        )
    }

    /// The lines of `status`'s table; none for a stream that has never
    /// had a snapshot and schedules none.
    pub fn write_human_lines(&self, out: &mut String, now: u64) {
        if *self == SnapshotStatus::default() {
            return;
        }
        let pos = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
        let _ = writeln!(out, "  last snapshot:      {}", pos(self.position));
        let _ = writeln!(out, "  next snapshot:      {}", pos(self.next_position));
        let job = self.last_job.as_ref().map_or("none".to_string(), |job| {
            let took = crate::human::duration(job.duration(now));
            let ago = crate::human::duration(std::time::Duration::from_secs(now.saturating_sub(job.started)));
            match (job.ended, &job.state) {
                (Some(_), _) => format!("{job} (started {ago} ago, took {took})"),
                (None, JobState::Running) => format!("{job} (started {ago} ago, running)"),
                (None, _) => format!("{job} (started {ago} ago)"),
            }
        });
        let _ = writeln!(out, "  last snapshot job:  {job}");
    }
}

/// `ID POSITION STATE STARTED ENDED` as written by `write_file_lines`.
fn parse_job(value: &str, stream: &str) -> Option<JobReport> {
    let fields: Vec<&str> = value.split(' ').collect();
    let [id, position, state, started, ended] = fields[..] else { return None };
    let state = match state {
        "running" => JobState::Running,
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed(String::new()),
        _ => return None,
    };
    Some(JobReport {
        id: id.parse().ok()?,
        stream: stream.to_string(),
        position: position.parse().ok()?,
        state,
        started: started.parse().ok()?,
        ended: if ended == "-" { None } else { Some(ended.parse().ok()?) },
    })
}

/// The snapshot series of the metrics page.
pub fn render_metrics(out: &mut String, streams: &[StreamStatus]) {
    let name = "walship_snapshot_position";
    let _ = writeln!(out, "# HELP {name} Position of the newest snapshot recorded.\n# TYPE {name} gauge");
    for s in streams {
        if let Some(position) = s.snapshots.position {
            let _ = writeln!(out, "{name}{{stream=\"{}\"}} {position}", label(&s.stream));
        }
    }
    let name = "walship_snapshot_jobs_total";
    let _ = writeln!(out, "# HELP {name} Snapshot jobs ended, by result.\n# TYPE {name} counter");
    for s in streams {
        let stream = label(&s.stream);
        let _ = writeln!(
            out,
            "{name}{{stream=\"{stream}\",result=\"succeeded\"}} {}",
            s.snapshots.jobs_succeeded
        );
        let _ = writeln!(out, "{name}{{stream=\"{stream}\",result=\"failed\"}} {}", s.snapshots.jobs_failed);
    }
    render_histogram(
        out,
        streams,
        "walship_snapshot_duration_seconds",
        "Time a snapshot job took, command and upload.",
        |s| &s.snapshots.seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, ended: Option<u64>) -> JobReport {
        JobReport { id: 9, stream: "s".into(), position: 300, state, started: 1_000, ended }
    }

    #[test]
    fn file_lines_round_trip_through_the_status_file() {
        for last_job in [
            None,
            Some(job(JobState::Running, None)),
            Some(job(JobState::Succeeded, Some(1_005))),
            Some(job(JobState::Failed("exit status 3\nand more".into()), Some(1_002))),
        ] {
            let status = StreamStatus {
                stream: "s".into(),
                snapshots: SnapshotStatus {
                    last_job,
                    position: Some(200),
                    next_position: Some(400),
                    ..Default::default()
                },
                ..Default::default()
            };
            let back = StreamStatus::from_file_text(&status.to_file_text());
            let mut expected = status.snapshots.clone();
            if let Some(JobReport { state: JobState::Failed(m), .. }) = &mut expected.last_job {
                *m = m.replace('\n', " ");
            }
            assert_eq!(back.snapshots, expected);
        }
    }

    #[test]
    fn json_and_table_show_the_last_job() {
        let mut snapshots =
            SnapshotStatus { position: Some(200), next_position: Some(400), ..Default::default() };
        snapshots.ended(&job(JobState::Failed("the command \"x\" failed".into()), Some(1_030)), 1_030);
        let json = snapshots.json_members();
        assert!(json.contains("\"snapshot_position\":200,\"next_snapshot\":400"), "{json}");
        assert!(json.contains("\"id\":9,\"position\":300,\"state\":\"failed\""), "{json}");
        assert!(json.contains(r#""message":"the command \"x\" failed""#), "{json}");
        let mut table = String::new();
        snapshots.write_human_lines(&mut table, 1_030);
        assert!(table.contains("next snapshot:      400"), "{table}");
        assert!(table.contains("snapshot job 9 of stream s at position 300 failed: the command"), "{table}");
        assert!(table.contains("(started 30s ago, took 30s)"), "{table}");
        assert_eq!((snapshots.jobs_failed, snapshots.seconds.count), (1, 1));
    }

    #[test]
    fn a_stream_without_snapshots_shows_no_snapshot_lines() {
        let mut table = String::new();
        SnapshotStatus::default().write_human_lines(&mut table, 0);
        assert_eq!(table, "");
    }

    #[test]
    fn metrics_carry_the_stream_and_result() {
        let mut status = StreamStatus { stream: "s".into(), ..Default::default() };
        status.snapshots.position = Some(200);
        status.snapshots.ended(&job(JobState::Succeeded, Some(1_045)), 1_045);
        let mut page = String::new();
        render_metrics(&mut page, &[status]);
        for line in [
            "walship_snapshot_position{stream=\"s\"} 200",
            "walship_snapshot_jobs_total{stream=\"s\",result=\"succeeded\"} 1",
            "walship_snapshot_jobs_total{stream=\"s\",result=\"failed\"} 0",
            "walship_snapshot_duration_seconds_bucket{stream=\"s\",le=\"30\"} 0",
            "walship_snapshot_duration_seconds_bucket{stream=\"s\",le=\"60\"} 1",
            "walship_snapshot_duration_seconds_count{stream=\"s\"} 1",
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line:?} in:\n{page}");
        }
    }
}
