//! The daemon: metrics listener and textfile, gap counting, idle quiet,
//! SIGTERM.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::util::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scrape(port: u16) -> String {
    let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
    connection.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    connection.read_to_string(&mut page).unwrap();
    page
}

/// The daemon serves metrics on `metrics_listen` and writes `metrics_file`;
/// a gap shows as an error line, a record and `walship_gaps_total`; SIGTERM
/// stops it with exit 0 and a final metrics file.
#[test]
fn daemon_serves_metrics_counts_gaps_and_stops_on_sigterm() {
    let port = free_port();
    let setup = Setup::new("metrics", 5, "seal = spool");
    let metrics_file = setup.dir.path.join("walship.prom");
    setup.write_config(
        5,
        "seal = spool",
        &format!("metrics_listen = 127.0.0.1:{port}\nmetrics_file = {}", metrics_file.display()),
    );
    setup.write_segments(1..=5, 200);
    setup.write_segments(8..=10, 200); // 6 and 7 never arrive: a gap
    let daemon = Daemon::start(&setup.config, true);
    let position = setup.state.join("s/archived_position");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&position).unwrap_or_default() != "10\n" {
        assert!(Instant::now() < deadline, "daemon did not archive in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The position file is published a moment before the metrics change.
    let mut page = scrape(port);
    while !page.contains("walship_archived_position{stream=\"s\"} 10\n") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        page = scrape(port);
    }
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for line in [
        "walship_archived_position{stream=\"s\"} 10",
        "walship_gaps_total{stream=\"s\"} 1",
        "walship_uploads_total{stream=\"s\",result=\"ok\"} 2",
    ] {
        assert!(page.lines().any(|l| l == line), "missing {line:?}:\n{page}");
    }
    assert!(page.contains("walship_heartbeat_timestamp_seconds "), "{page}");

    // Idle (poll_interval = 10ms): ~200 polls over two clock seconds must not
    // rewrite the state files.
    // Let the last commit's status update land first (it follows the
    // position file by a moment).
    std::thread::sleep(Duration::from_millis(300));
    let status_file = setup.state.join("s/status");
    let mtime = |p: &std::path::Path| fs::metadata(p).unwrap().modified().unwrap();
    let before = (mtime(&status_file), mtime(&position), mtime(&setup.journal()));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        (mtime(&status_file), mtime(&position), mtime(&setup.journal())),
        before,
        "idle polls wrote state"
    );

    let output = daemon.terminate();
    assert!(output.status.success(), "exit {:?}: {}", output.status, stderr(&output));
    let log = stderr(&output);
    assert_eq!(log.matches("positions 6..7 are missing").count(), 1, "one error line per gap:\n{log}");
    let file = fs::read_to_string(&metrics_file).unwrap();
    assert!(file.contains("walship_gaps_total{stream=\"s\"} 1"), "{file}");
}

/// A metrics port already in use is an operational error naming the key.
#[test]
fn metrics_port_in_use_is_reported() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let setup = Setup::new("metrics-taken", 5, "seal = spool");
    setup.write_config(5, "seal = spool", &format!("metrics_listen = 127.0.0.1:{port}"));
    let mut daemon = Daemon::start(&setup.config, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.exited().is_none() {
        assert!(Instant::now() < deadline, "daemon should refuse to start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = daemon.wait();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("metrics_listen"), "{}", stderr(&output));
}
