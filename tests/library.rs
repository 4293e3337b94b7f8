//! The embedding API: start, wake, status, stop.

use std::path::Path;
use std::time::{Duration, Instant};

use walship::Archiver;

use crate::util::*;

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An embedding program starts the archiver, wakes a stream as soon as it
/// seals a segment, reads status, and stops it.
#[test]
fn embedding_program_starts_wakes_reads_status_and_stops() {
    let setup = Setup::new("library", 1, "seal = spool");
    // A long poll interval: only `wake` can make it archive promptly.
    setup.write_config(1, "seal = spool", "");
    let text =
        std::fs::read_to_string(&setup.config).unwrap().replace("poll_interval = 10ms", "poll_interval = 1h");
    let config = walship::config::parse(Path::new("embedded.conf"), &text).unwrap();

    setup.write_segments(1..=3, 100);
    let archiver = Archiver::start(&config).unwrap();
    let archived = |a: &Archiver| a.status()[0].archived_position;
    wait_for("the first pass", || archived(&archiver) == Some(3));

    setup.write_segments(4..=4, 100);
    assert!(archiver.wake("s"));
    assert!(!archiver.wake("no-such-stream"));
    wait_for("the woken pass", || archived(&archiver) == Some(4));

    let status = &archiver.status()[0];
    assert_eq!(status.stream, "s");
    assert_eq!(status.last_error, None);
    assert!(status.last_success.is_some());
    archiver.stop();
    assert_eq!(setup.batch_objects().len(), 4);
}

/// Regression: every idle poll succeeds, and each rewrote the status file
/// durably (two fsyncs per stream per poll): most of an idle daemon's CPU.
/// Now only a change the file shows rewrites it, or a `last_success` older
/// than a minute.
#[test]
fn idle_polls_leave_the_status_file_alone() {
    use std::os::unix::fs::MetadataExt;

    let setup = Setup::new("idle-status", 1, "seal = spool");
    let config = walship::config::load(&setup.config).unwrap();
    setup.write_segments(1..=2, 100);
    let archiver = Archiver::start(&config).unwrap();
    wait_for("the first pass", || archiver.status()[0].archived_position == Some(2));
    let status_file = setup.state.join("s").join("status");
    let inode = || std::fs::metadata(&status_file).unwrap().ino();
    let before = inode();
    // Well over a second of 10 ms polls: `last_success` (in seconds) moves.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(inode(), before, "an idle poll rewrote the status file");

    setup.write_segments(3..=3, 100);
    assert!(archiver.wake("s"));
    wait_for("the new batch", || archiver.status()[0].archived_position == Some(3));
    assert_ne!(inode(), before, "a new archived position must reach the status file");
    archiver.stop();
}
