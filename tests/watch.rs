//! A stream notices new segments through inotify, not by polling; where
//! inotify is switched off or the watch ends, polling still archives.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{Daemon, Setup, segment_bytes, segment_name};

/// A config whose streams poll only every `poll`.
fn write_config(setup: &Setup, poll: &str) {
    let text = format!(
        "[global]\nstate_dir = {}\n{}\npoll_interval = {poll}\nbackoff_min = 10ms\nbackoff_max = 50ms\n\n\
         [stream s]\ndir = {}\npattern = seg-{{seq}}.log\nbatch_size = 1\nseal = spool\n",
        setup.state.display(),
        setup.target_lines,
        setup.src.display(),
    );
    fs::write(&setup.config, text).unwrap();
}

/// Rename segment `position` into the stream's directory (as a spool does).
fn rename_in(setup: &Setup, position: u64) {
    let temp = setup.dir.path.join("incoming");
    fs::write(&temp, segment_bytes(position, 4096)).unwrap();
    fs::rename(&temp, setup.src.join(segment_name(position))).unwrap();
}

/// How long until the position file says `position` (panics after `limit`).
fn archived_within(setup: &Setup, position: u64, limit: Duration) -> Duration {
    let file = setup.state.join("s").join("archived_position");
    let started = Instant::now();
    while fs::read_to_string(&file).unwrap_or_default() != format!("{position}\n") {
        assert!(started.elapsed() < limit, "position {position} not archived within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

fn wait_for_log(log: &Path, part: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(part) {
            return text;
        }
        assert!(Instant::now() < deadline, "log never showed {part:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// With a poll interval of a minute, a segment renamed in is archived at
/// once: the directory's inotify events wake the stream.
#[test]
fn a_segment_renamed_in_is_archived_at_once_without_a_poll() {
    let setup = Setup::new("watch-wake", 1, "seal = spool");
    write_config(&setup, "60s");
    rename_in(&setup, 1);
    let _daemon = Daemon::start(&setup.config, false);
    archived_within(&setup, 1, Duration::from_secs(20));
    // The stream now waits with nothing to do; only an event can wake it
    // before a minute has passed.
    for position in 2..=4 {
        std::thread::sleep(Duration::from_millis(100));
        rename_in(&setup, position);
        let took = archived_within(&setup, position, Duration::from_secs(10));
        eprintln!("segment {position} archived {took:?} after its rename");
    }
}

/// `WALSHIP_INOTIFY=off` (as on a filesystem without change events): the
/// stream says it polls, and polling archives.
#[test]
fn with_inotify_switched_off_polling_archives() {
    let setup = Setup::new("watch-off", 1, "seal = spool");
    write_config(&setup, "50ms");
    let log = setup.dir.path.join("log");
    let stderr = fs::File::create(&log).unwrap();
    let _daemon = Daemon::start_with_env(&setup.config, stderr, &[("WALSHIP_INOTIFY", "off")]);
    wait_for_log(&log, "instead of watching it: inotify is switched off (WALSHIP_INOTIFY=off)");
    for position in 1..=3 {
        rename_in(&setup, position);
        archived_within(&setup, position, Duration::from_secs(20));
    }
}

/// The stream's directory removed and created again ends the watch: the
/// stream polls while it is missing, then watches the new one, whose
/// segments it notices at once again.
#[test]
fn a_directory_removed_and_recreated_is_watched_again() {
    let setup = Setup::new("watch-again", 1, "seal = spool");
    write_config(&setup, "60s");
    let log = setup.dir.path.join("log");
    let stderr = fs::File::create(&log).unwrap();
    let _daemon = Daemon::start_with_env(&setup.config, stderr, &[]);
    rename_in(&setup, 1);
    archived_within(&setup, 1, Duration::from_secs(20));
    fs::remove_dir_all(&setup.src).unwrap();
    wait_for_log(&log, "instead of watching it: inotify_add_watch failed");
    fs::create_dir(&setup.src).unwrap();
    wait_for_log(&log, "for changes again");
    rename_in(&setup, 2);
    archived_within(&setup, 2, Duration::from_secs(10));
}
