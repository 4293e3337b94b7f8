//! Metrics in the Prometheus text format: rendering (a pure function of the
//! streams' status), a tiny HTTP listener for `metrics_listen`, and a
//! textfile for node_exporter's collector (`metrics_file`).
//!
//! Every series carries `stream="NAME"` except the process-wide heartbeat.
//! The listener answers any request with the metrics and closes the
//! connection; it is not a general HTTP server.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::status::{Histogram, StreamStatus};

/// The metrics page for `streams`, with the process heartbeat (seconds since
/// the epoch).
pub fn render(streams: &[StreamStatus], heartbeat: u64) -> String {
    let mut out = String::new();
    let gauge = |out: &mut String,
                 name: &str,
                 help: &str,
                 kind: &str,
                 value: &dyn Fn(&StreamStatus) -> Option<u64>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in streams {
            if let Some(v) = value(s) {
                let _ = writeln!(out, "{name}{{stream=\"{}\"}} {v}", label(&s.stream));
            }
        }
    };
    gauge(&mut out, "walship_archived_position", "Last archived position.", "gauge", &|s| {
        s.archived_position
    });
    gauge(
        &mut out,
        "walship_committed_position",
        "Highest position sealed with all before it.",
        "gauge",
        &|s| s.committed_position,
    );
    gauge(&mut out, "walship_lag_segments", "Sealed segments not yet archived.", "gauge", &|s| {
        Some(s.lag_segments)
    });
    gauge(
        &mut out,
        "walship_backlog_segments",
        "Segments in the stream directory waiting to be archived, sealed or not.",
        "gauge",
        &|s| Some(s.backlog_segments),
    );
    gauge(
        &mut out,
        "walship_backlog_bytes",
        "Bytes of the segments waiting to be archived.",
        "gauge",
        &|s| Some(s.backlog_bytes),
    );
    gauge(
        &mut out,
        "walship_uploaded_bytes_total",
        "Bytes of batches uploaded (as stored: compressed with zstd).",
        "counter",
        &|s| Some(s.uploaded_bytes),
    );
    gauge(
        &mut out,
        "walship_gaps_total",
        "Gaps recorded: segments lost before archiving.",
        "counter",
        &|s| Some(s.gaps_recorded),
    );
    gauge(
        &mut out,
        "walship_late_segments",
        "Late files in the stream directory: arrived after the archive passed their position.",
        "gauge",
        &|s| Some(s.late_segments),
    );
    gauge(
        &mut out,
        "walship_dropped_bytes_total",
        "Bytes of waiting segments deleted unarchived by backlog_limit (recorded as gaps).",
        "counter",
        &|s| Some(s.dropped_bytes),
    );
    gauge(&mut out, "walship_retries_total", "Failed passes retried after a backoff.", "counter", &|s| {
        Some(s.retries)
    });
    gauge(
        &mut out,
        "walship_last_success_timestamp_seconds",
        "When the stream last succeeded.",
        "gauge",
        &|s| s.last_success,
    );

    let _ = writeln!(
        out,
        "# HELP walship_uploads_total Batch uploads by result.\n# TYPE walship_uploads_total counter"
    );
    for s in streams {
        let name = label(&s.stream);
        let _ = writeln!(out, "walship_uploads_total{{stream=\"{name}\",result=\"ok\"}} {}", s.uploads_ok);
        let _ =
            writeln!(out, "walship_uploads_total{{stream=\"{name}\",result=\"error\"}} {}", s.uploads_failed);
    }
    render_histogram(
        &mut out,
        streams,
        "walship_upload_duration_seconds",
        "Time to upload one batch.",
        |s| &s.upload_seconds,
    );
    crate::snapshot::status::render_metrics(&mut out, streams);
    render_offloader(&mut out, streams);
    let _ = writeln!(
        out,
        "# HELP walship_heartbeat_timestamp_seconds When the daemon last showed it is alive.\n\
         # TYPE walship_heartbeat_timestamp_seconds gauge\nwalship_heartbeat_timestamp_seconds {heartbeat}"
    );
    out
}

/// The process-wide data budget series, given `(budget, spent)` bytes of
/// the current period; nothing without a budget.
pub fn render_budget(usage: Option<(u64, u64)>) -> String {
    let Some((budget, spent)) = usage else { return String::new() };
    format!(
        "# HELP walship_budget_bytes Upload bytes allowed in the data budget's period.\n\
         # TYPE walship_budget_bytes gauge\nwalship_budget_bytes {budget}\n\
         # HELP walship_budget_spent_bytes Upload bytes counted in the current period.\n\
         # TYPE walship_budget_spent_bytes gauge\nwalship_budget_spent_bytes {spent}\n"
    )
}

/// A histogram series `name` of every stream, read by `histogram`.
pub fn render_histogram(
    out: &mut String,
    streams: &[StreamStatus],
    name: &str,
    help: &str,
    histogram: impl Fn(&StreamStatus) -> &Histogram,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for s in streams {
        let stream = label(&s.stream);
        let h = histogram(s);
        for (count, bound) in h.buckets.iter().zip(h.bounds_ms) {
            let bound = *bound as f64 / 1000.0;
            let _ = writeln!(out, "{name}_bucket{{stream=\"{stream}\",le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{stream=\"{stream}\",le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{stream=\"{stream}\"}} {}", h.sum_micros as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{stream=\"{stream}\"}} {}", h.count);
    }
}

/// `walship_offloader{stream,node}`: 1 where this node is the elected
/// offloader of a `replicas = on` stream, 0 where it stands by.
fn render_offloader(out: &mut String, streams: &[StreamStatus]) {
    let name = "walship_offloader";
    let replicated: Vec<_> = streams.iter().filter_map(|s| Some((s, s.replica.as_ref()?))).collect();
    if replicated.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} 1 if this node archives the replicated stream, 0 if it stands by.");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (s, replica) in replicated {
        let elected = replica.offloader.as_deref() == Some(replica.node.as_str());
        let _ = writeln!(
            out,
            "{name}{{stream=\"{}\",node=\"{}\"}} {}",
            label(&s.stream),
            label(&replica.node),
            u8::from(elected)
        );
    }
}

/// A label value, escaped as the text format requires.
pub fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Write the page to `path` atomically (node_exporter never sees half).
pub fn write_file(path: &Path, page: &str) -> std::io::Result<()> {
    crate::durable::write_file(path, page.as_bytes())
}

/// Answer one connection on the metrics listener with `page`.
pub fn serve_one(mut connection: TcpStream, page: &str) {
    let _ = connection.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = connection.set_write_timeout(Some(Duration::from_secs(2)));
    // Read (and ignore) the request head; a client that sends nothing still
    // gets the page after the timeout.
    let mut head = [0u8; 2048];
    let _ = connection.read(&mut head);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{page}",
        page.len()
    );
    let _ = connection.write_all(response.as_bytes());
}

/// Bind the metrics listener.
pub fn bind(address: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloader_series_only_for_replicated_streams() {
        use crate::status::ReplicaStatus;
        let replica = |offloader: &str| ReplicaStatus {
            node: "n1".into(),
            offloader: Some(offloader.into()),
            reason: "elected".into(),
        };
        let plain = StreamStatus { stream: "p".into(), ..Default::default() };
        assert!(!render(std::slice::from_ref(&plain), 0).contains("walship_offloader"));
        let mine = StreamStatus { stream: "a".into(), replica: Some(replica("n1")), ..Default::default() };
        let theirs = StreamStatus { stream: "b".into(), replica: Some(replica("n2")), ..Default::default() };
        let page = render(&[plain, mine, theirs], 0);
        assert!(page.contains("# TYPE walship_offloader gauge\n"), "{page}");
        assert!(page.contains("walship_offloader{stream=\"a\",node=\"n1\"} 1\n"), "{page}");
        assert!(page.contains("walship_offloader{stream=\"b\",node=\"n1\"} 0\n"), "{page}");
    }

    #[test]
    fn renders_every_series_with_stream_labels() {
        let mut s = StreamStatus {
            stream: "sensors".into(),
            archived_position: Some(99),
            committed_position: Some(104),
            lag_segments: 5,
            backlog_segments: 6,
            backlog_bytes: 6144,
            gaps_recorded: 2,
            uploads_ok: 10,
            uploads_failed: 1,
            uploaded_bytes: 4096,
            retries: 3,
            last_success: Some(1_700_000_000),
            ..Default::default()
        };
        s.upload_seconds.observe(Duration::from_millis(30));
        s.upload_seconds.observe(Duration::from_secs(3));
        let page = render(&[s], 1_700_000_005);
        for line in [
            "walship_archived_position{stream=\"sensors\"} 99",
            "walship_committed_position{stream=\"sensors\"} 104",
            "walship_lag_segments{stream=\"sensors\"} 5",
            "walship_backlog_segments{stream=\"sensors\"} 6",
            "walship_backlog_bytes{stream=\"sensors\"} 6144",
            "walship_uploads_total{stream=\"sensors\",result=\"ok\"} 10",
            "walship_uploads_total{stream=\"sensors\",result=\"error\"} 1",
            "walship_uploaded_bytes_total{stream=\"sensors\"} 4096",
            "walship_gaps_total{stream=\"sensors\"} 2",
            "walship_retries_total{stream=\"sensors\"} 3",
            "walship_last_success_timestamp_seconds{stream=\"sensors\"} 1700000000",
            "walship_upload_duration_seconds_bucket{stream=\"sensors\",le=\"0.05\"} 1",
            "walship_upload_duration_seconds_bucket{stream=\"sensors\",le=\"5\"} 2",
            "walship_upload_duration_seconds_bucket{stream=\"sensors\",le=\"+Inf\"} 2",
            "walship_upload_duration_seconds_count{stream=\"sensors\"} 2",
            "walship_upload_duration_seconds_sum{stream=\"sensors\"} 3.03",
            "walship_heartbeat_timestamp_seconds 1700000005",
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line:?} in:\n{page}");
        }
    }

    #[test]
    fn unknown_positions_are_left_out_and_labels_escaped() {
        let s = StreamStatus { stream: "a\"b".into(), ..Default::default() };
        let page = render(&[s], 0);
        assert!(!page.contains("walship_archived_position{"), "{page}");
        assert!(page.contains("walship_gaps_total{stream=\"a\\\"b\"} 0"), "{page}");
        assert!(page.contains("walship_dropped_bytes_total{stream=\"a\\\"b\"} 0"), "{page}");
    }

    #[test]
    fn the_budget_series_only_with_a_budget() {
        assert_eq!(render_budget(None), "");
        let page = render_budget(Some((5 << 30, 1234)));
        assert!(page.lines().any(|l| l == "walship_budget_bytes 5368709120"), "{page}");
        assert!(page.lines().any(|l| l == "walship_budget_spent_bytes 1234"), "{page}");
        assert!(page.contains("# TYPE walship_budget_spent_bytes gauge"), "{page}");
    }
}
