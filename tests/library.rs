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
