//! The embedding API: start, wake (with water marks), archive a file now,
//! status, stop.

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
    // What the file shows, not its inode: two rewrites may give the file
    // its first inode number back.
    let shown =
        walship::status::StreamStatus::from_file_text(&std::fs::read_to_string(&status_file).unwrap());
    assert_eq!(shown.archived_position, Some(3), "a new archived position must reach the status file");
    archiver.stop();
}

/// A config for stream `s` with `batch_size`, `seal = next` and an hour
/// between polls: only the library's messages make it archive promptly.
fn quiet_config(setup: &Setup, batch_size: u64) -> walship::Config {
    setup.write_config(batch_size, "", "");
    let text =
        std::fs::read_to_string(&setup.config).unwrap().replace("poll_interval = 10ms", "poll_interval = 1h");
    walship::config::parse(Path::new("embedded.conf"), &text).unwrap()
}

/// `notify_new_entries(low, high)`, as Gitaly's `NotifyNewEntries`: the high
/// water mark seals the newest segment (which `seal = next` alone would
/// hold back), and a low water mark above the next position is a gap.
#[test]
fn water_marks_seal_the_newest_segment_and_report_gaps() {
    let setup = Setup::new("water-marks", 1, "");
    let config = quiet_config(&setup, 1);
    setup.write_segments(1..=1, 100);
    let archiver = Archiver::start(&config).unwrap();
    let archived = |a: &Archiver| a.status()[0].archived_position;
    // The first pass holds back the newest (and only) segment.
    wait_for("the first pass", || archiver.status()[0].last_success.is_some());
    assert_eq!(archived(&archiver), None);

    assert!(archiver.notify_new_entries("s", 1, 1));
    wait_for("the sealed segment", || archived(&archiver) == Some(1));

    // The application dropped 2..=4 before they could be archived.
    assert!(archiver.notify_new_entries("s", 5, 4));
    wait_for("the gap", || archived(&archiver) == Some(4));
    assert_eq!(archiver.status()[0].gaps_recorded, 1);
    assert!(!archiver.notify_new_entries("no-such-stream", 1, 1));
    archiver.stop();
    let list = setup.ok(&["list"]);
    assert!(list.contains("GAP: the application no longer holds positions below 5"), "{list}");
}

/// `archive_now(path)`: archive a file (and what precedes it) now, a short
/// batch included, and answer once it is committed — for `push`.
#[test]
fn archive_now_answers_once_the_file_is_committed() {
    let setup = Setup::new("archive-now", 10, "");
    let config = quiet_config(&setup, 10);
    setup.write_segments(1..=3, 100);
    let archiver = Archiver::start(&config).unwrap();
    let third = setup.src.join(segment_name(3));

    assert_eq!(archiver.archive_now("s", &third).unwrap(), 3);
    assert_eq!(archiver.status()[0].archived_position, Some(3));
    assert!(setup.archive.join("s/batches/0000000000000001-0000000000000003").exists());
    // Already archived: answered at once.
    assert_eq!(archiver.archive_now("s", &setup.src.join(segment_name(2))).unwrap(), 3);

    // Not a segment of the stream, or not there: a clear error.
    let stranger = setup.dir.path.join(segment_name(4));
    std::fs::write(&stranger, b"x").unwrap();
    let error = archiver.archive_now("s", &stranger).unwrap_err();
    assert!(error.to_string().contains("is not a segment of stream s"), "{error}");
    let missing = archiver.archive_now("s", &setup.src.join(segment_name(9))).unwrap_err();
    assert!(missing.to_string().contains(&segment_name(9)), "{missing}");
    assert!(archiver.archive_now("nope", &third).is_err());

    // The next batch waits for its boundary as usual.
    setup.write_segments(4..=5, 100);
    assert!(archiver.wake("s"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(archiver.status()[0].archived_position, Some(3));
    archiver.stop();
}
