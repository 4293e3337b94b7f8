//! What a stream reports about itself: positions, lag, last success and
//! error, backoff. The daemon keeps one per stream in memory (read by the
//! library's `Archiver::status`) and mirrors it to a small file in the state
//! directory whenever what the file shows changes, so `walship status` in
//! another process can show it (counters for metrics are kept in memory
//! only). An idle stream's `last_success` reaches the file at most once a
//! minute (`stream::STATUS_REFRESH_SECS`). Rendering to text and JSON lives
//! here too.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::Histogram;

/// One stream's state, as of its last change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStatus {
    pub stream: String,
    /// Last position recorded in the manifest (archived and acknowledged).
    pub archived_position: Option<u64>,
    /// Highest position up to which every present segment is sealed.
    pub committed_position: Option<u64>,
    /// Batches archived since the process started.
    pub batches_archived: u64,
    /// Gaps recorded since the process started.
    pub gaps_recorded: u64,
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
}

impl StreamStatus {
    /// Segments sealed but not yet archived.
    pub fn lag_segments(&self) -> u64 {
        match (self.committed_position, self.archived_position) {
            (Some(c), Some(a)) => c.saturating_sub(a),
            (Some(c), None) => c + 1,
            _ => 0,
        }
    }

    /// The file form: `key=value` lines (values never contain newlines).
    pub fn to_file_text(&self) -> String {
        let mut out = String::new();
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let _ = writeln!(out, "stream={}", self.stream);
        let _ = writeln!(out, "archived_position={}", opt(self.archived_position));
        let _ = writeln!(out, "committed_position={}", opt(self.committed_position));
        let _ = writeln!(out, "batches_archived={}", self.batches_archived);
        let _ = writeln!(out, "gaps_recorded={}", self.gaps_recorded);
        let _ = writeln!(out, "last_success={}", opt(self.last_success));
        let _ = writeln!(out, "last_error={}", self.last_error.as_deref().unwrap_or("").replace('\n', " "));
        let _ = writeln!(out, "backoff_ms={}", opt(self.backoff_ms));
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
                "batches_archived" => s.batches_archived = num.unwrap_or(0),
                "gaps_recorded" => s.gaps_recorded = num.unwrap_or(0),
                "last_success" => s.last_success = num,
                "last_error" => s.last_error = (!value.is_empty()).then(|| value.to_string()),
                "backoff_ms" => s.backoff_ms = num,
                _ => {}
            }
        }
        s
    }

    /// A JSON object (hand-written: one flat object needs no serializer).
    pub fn to_json(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        let text = |v: Option<&str>| v.map_or("null".to_string(), json_string);
        format!(
            "{{\"stream\":{},\"archived_position\":{},\"committed_position\":{},\
             \"lag_segments\":{},\"batches_archived\":{},\"gaps_recorded\":{},\
             \"last_success\":{},\"last_error\":{},\"backoff_ms\":{}}}",
            json_string(&self.stream),
            opt(self.archived_position),
            opt(self.committed_position),
            self.lag_segments(),
            self.batches_archived,
            self.gaps_recorded,
            opt(self.last_success),
            text(self.last_error.as_deref()),
            opt(self.backoff_ms),
        )
    }

    /// Lines for a person.
    pub fn to_human(&self, now: SystemTime) -> String {
        let pos = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
        let mut out = format!("stream {}\n", self.stream);
        let _ = writeln!(out, "  archived position:  {}", pos(self.archived_position));
        let _ = writeln!(out, "  committed position: {}", pos(self.committed_position));
        let _ =
            writeln!(out, "  lag:                {}", crate::human::count(self.lag_segments(), "segment"));
        let success = self.last_success.map_or("never (since the daemon started)".to_string(), |t| {
            let ago = now.duration_since(UNIX_EPOCH + Duration::from_secs(t)).unwrap_or_default();
            format!("{}s ago", ago.as_secs())
        });
        let _ = writeln!(out, "  last success:       {success}");
        let _ = writeln!(out, "  last error:         {}", self.last_error.as_deref().unwrap_or("none"));
        if let Some(ms) = self.backoff_ms {
            let _ = writeln!(out, "  backoff:            retrying in {ms} ms");
        }
        out
    }

    /// Mirror this status to `path` (durably, so a reader never sees half).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::durable::write_file(path, self.to_file_text().as_bytes())
    }
}

/// Seconds since the epoch, for `last_success`.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
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
            batches_archived: 10,
            gaps_recorded: 1,
            last_success: Some(1_700_000_000),
            last_error: Some("stream sensors: boom = bad".into()),
            backoff_ms: Some(250),
            ..Default::default()
        };
        assert_eq!(StreamStatus::from_file_text(&s.to_file_text()), s);
        assert_eq!(s.lag_segments(), 21);
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
}
