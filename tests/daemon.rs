//! The daemon: metrics listener and textfile, gap counting, idle quiet,
//! SIGTERM, per-stream reload, locks held by another daemon, and what
//! `status` shows of a daemon (running or not, last success, lag).

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

/// Wait until the log file contains `part` `times` times; returns the log.
fn wait_for_log(log: &std::path::Path, part: &str, times: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.matches(part).count() >= times {
            return text;
        }
        assert!(Instant::now() < deadline, "log never showed {part:?} {times} times:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_file(path: &std::path::Path, content: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(path).unwrap_or_default() != content {
        assert!(Instant::now() < deadline, "{} never became {content:?}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Regression: SIGHUP stopped and restarted every stream whatever changed.
/// Now a changed stream restarts (and its new setting applies), a removed
/// one stops, and the others keep running undisturbed.
#[test]
fn sighup_restarts_only_the_streams_whose_settings_changed() {
    let setup = Setup::new("reload-one", 1, "seal = spool");
    let other = setup.dir.path.join("src-t");
    fs::create_dir_all(&other).unwrap();
    let original = fs::read_to_string(&setup.config).unwrap();
    let with_t = |batch_size: u64| {
        format!(
            "{original}\n[stream t]\ndir = {}\npattern = seg-{{seq}}.log\nseal = spool\nbatch_size = {batch_size}\n",
            other.display()
        )
    };
    fs::write(&setup.config, with_t(1)).unwrap();
    setup.write_segments(0..=1, 100);
    let log = setup.dir.path.join("walship.log");
    let mut daemon = Daemon::start_with_stderr(&setup.config, fs::File::create(&log).unwrap());
    wait_for_file(&setup.state.join("s/archived_position"), "1\n");
    wait_for_log(&log, "stream t: started", 1);

    fs::write(&setup.config, with_t(5)).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for_log(&log, "stream t: started", 2);
    let text = wait_for_log(&log, "reloaded ", 1);
    assert_eq!(text.matches("stream s: started").count(), 1, "stream s was restarted:\n{text}");
    assert!(text.contains("stream t: stopped for the reload"), "{text}");
    assert!(text.contains("changed [stream t]"), "{text}");

    // t runs with its new batch size; s archives on, undisturbed.
    for p in 0..=5 {
        fs::write(other.join(segment_name(p)), segment_bytes(p, 100)).unwrap();
    }
    wait_for_file(&setup.state.join("t/archived_position"), "5\n");
    assert!(setup.dir.path.join("archive/t/batches/0000000000000001-0000000000000005").exists());
    setup.write_segments(2..=2, 100);
    wait_for_file(&setup.state.join("s/archived_position"), "2\n");

    // A removed stream stops; s still runs in the same thread.
    fs::write(&setup.config, &original).unwrap();
    daemon.signal(libc::SIGHUP);
    let text = wait_for_log(&log, "removed t", 1);
    assert_eq!(text.matches("stream s: started").count(), 1, "stream s was restarted:\n{text}");
    let output = daemon.terminate();
    assert!(output.status.success(), "{}", fs::read_to_string(&log).unwrap());
}

/// Regression: a second `walship run` whose streams were all locked by a
/// running daemon logged errors forever; now it exits 1 naming the lock and
/// the process holding it.
#[test]
fn second_daemon_with_every_stream_locked_exits_naming_the_lock_and_holder() {
    let setup = Setup::new("locked-run", 5, "seal = spool");
    setup.write_segments(1..=5, 100);
    let mut first = Daemon::start(&setup.config, false);
    wait_for_file(&setup.state.join("s/archived_position"), "5\n");
    let mut second = Daemon::start(&setup.config, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.exited().is_none() {
        assert!(Instant::now() < deadline, "the second daemon kept running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = second.wait();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains(&setup.state.join("s/lock").display().to_string()), "{log}");
    assert!(log.contains(&format!("PID {}", first.id())), "{log}");
    assert!(first.terminate().status.success());
}

/// Regression: after the daemon stopped, `status` still showed "retrying in
/// N ms" and did not say the daemon was not running.
#[test]
fn status_after_the_daemon_stopped_says_it_is_not_running() {
    let setup = Setup::new("status-stopped", 5, "seal = spool");
    setup.write_segments(1..=3, 100);
    fs::remove_dir_all(&setup.archive).unwrap(); // every pass fails
    let daemon = Daemon::start(&setup.config, false);
    let status_file = setup.state.join("s/status");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&status_file).unwrap_or_default().contains("backoff_ms=1") {
        assert!(Instant::now() < deadline, "the stream never backed off");
        std::thread::sleep(Duration::from_millis(10));
    }
    let running = setup.ok(&["status"]);
    assert!(running.contains("daemon:             running"), "{running}");
    assert!(running.contains("retrying in"), "{running}");
    assert!(daemon.terminate().status.success());

    let stopped = setup.ok(&["status"]);
    assert!(stopped.contains("daemon:             not running"), "{stopped}");
    assert!(!stopped.contains("retrying"), "{stopped}");
    assert!(setup.ok(&["status", "--json"]).contains("\"daemon_running\":false"));
}

/// Regression: a `run --once` that found nothing to archive reset "last
/// success" to "never".
#[test]
fn once_pass_with_nothing_to_archive_keeps_the_last_success() {
    let setup = Setup::new("once-success", 5, "seal = spool");
    setup.write_segments(1..=3, 100);
    setup.ok(&["run", "--once"]);
    setup.ok(&["run", "--once"]);
    let text = setup.ok(&["status"]);
    assert!(!text.contains("last success:       never"), "{text}");
    assert!(text.contains("s ago"), "{text}");
}

/// Regression: the lag of a stream whose first segment is above 0 counted
/// from position 0 (1002 with two segments waiting); `walship_lag_segments`
/// too.
#[test]
fn lag_counts_from_the_first_present_segment() {
    let port = free_port();
    let setup = Setup::new("lag", 5, "");
    setup.write_config(5, "", &format!("metrics_listen = 127.0.0.1:{port}"));
    setup.write_segments(1001..=1003, 100); // seal = next: 1001 and 1002 sealed
    let json = setup.ok(&["status", "--json"]);
    assert!(json.contains("\"committed_position\":1002"), "{json}");
    assert!(json.contains("\"lag_segments\":2"), "{json}");
    assert!(setup.ok(&["status"]).contains("lag:                2 sealed segments not yet archived"));

    // With batch_size 5 the daemon waits for 1005; its metrics show the
    // same lag.
    let daemon = Daemon::start(&setup.config, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut page = String::new();
    while !page.contains("walship_lag_segments{stream=\"s\"} 2\n") {
        assert!(Instant::now() < deadline, "lag never reached the metrics:\n{page}");
        std::thread::sleep(Duration::from_millis(20));
        page = TcpStream::connect(("127.0.0.1", port)).map(|_| scrape(port)).unwrap_or_default();
    }
    assert!(daemon.terminate().status.success());
}
