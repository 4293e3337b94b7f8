//! Odd entries in a stream directory, through the built binary: positions
//! beyond what a manifest can record, symbolic links, directories, pipes and
//! sockets with segment names, late files, and a changed `pattern`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Largest position a manifest records (2^62), as messages print it.
const LIMIT: &str = "4611686018427387904";

/// Run `walship ARGS -c CONFIG`, failing the test (instead of hanging it)
/// if it has not exited within 60 s: a named pipe must never block it.
fn walship_within(setup: &Setup, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(args)
        .args(["-c", setup.config.to_str().unwrap()])
        .env_remove("AWS_ACCESS_KEY_ID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run walship");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("walship {args:?} hung; stderr:\n{}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The names of the batch objects, e.g. `0000000000000001-0000000000000002`.
fn batch_names(setup: &Setup) -> Vec<String> {
    setup.batch_objects().iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect()
}

fn key(first: u64, last: u64) -> String {
    format!("{first:016x}-{last:016x}")
}

fn archived_position(setup: &Setup) -> String {
    fs::read_to_string(setup.state.join("s/archived_position")).unwrap()
}

/// Positions 1..=3, then `name`: `run --once` fails naming it and the
/// limit, after archiving 1..=3; no record of any kind is stored for it.
fn assert_refused_beyond_limit(setup_name: &str, name: &str) {
    let setup = Setup::new(setup_name, 5, "seal = spool");
    setup.write_segments(1..=3, 100);
    fs::write(setup.src.join(name), b"far away").unwrap();
    let out = walship_within(&setup, &["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(name) && stderr(&out).contains(LIMIT), "{}", stderr(&out));
    assert_eq!(batch_names(&setup), [key(1, 3)]);
    assert_eq!(setup.record_objects().len(), 1, "{:?}", setup.record_objects());
    assert_eq!(archived_position(&setup), "3\n");
    let list = setup.ok(&["list"]);
    assert!(!list.contains("GAP"), "{list}");
    assert!(setup.src.join(name).exists());
}

/// `seg-5000000000000000000.log` was uploaded and its records stored (a gap
/// up to it, then the batch) before the journal refused the position; from
/// then on `list` and `restore` failed on the stored record.
#[test]
fn segment_beyond_the_position_limit_is_refused_before_anything_is_stored() {
    assert_refused_beyond_limit("beyond-limit", "seg-5000000000000000000.log");
}

/// `seg-18446744073709551615.log` made the batch arithmetic overflow: the
/// daemon panicked.
#[test]
fn segment_at_the_largest_u64_is_refused_not_an_overflow() {
    assert_refused_beyond_limit("u64-max", "seg-18446744073709551615.log");
}

/// A name whose number does not fit in 64 bits was skipped without a word.
#[test]
fn segment_name_whose_number_overflows_is_reported() {
    assert_refused_beyond_limit("overflow-name", "seg-99999999999999999999999.log");
}

/// A segment that is a symbolic link was declared a gap ("removed before it
/// was archived") although it exists. It is archived under the link's
/// name with its target's content; `on_archived = delete` removes the link,
/// never its target.
#[test]
fn symlinked_segment_is_archived_not_a_gap() {
    let setup = Setup::new("symlink", 5, "seal = spool\non_archived = delete");
    setup.write_segments(1..=1, 100);
    setup.write_segments(3..=3, 100);
    let elsewhere = setup.dir.path.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let target = elsewhere.join("two");
    fs::write(&target, segment_bytes(2, 100)).unwrap();
    symlink(&target, setup.src.join(segment_name(2))).unwrap();

    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("0 gaps"), "{out}");
    assert_eq!(batch_names(&setup), [key(1, 3)]);
    assert!(!setup.src.join(segment_name(2)).exists(), "the link is acknowledged like a file");
    assert_eq!(fs::read(&target).unwrap(), segment_bytes(2, 100), "the link's target is never touched");

    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(fs::read(restored.join(segment_name(2))).unwrap(), segment_bytes(2, 100));
}

/// A directory, named pipe, socket or dangling link with a segment's name
/// was declared a gap. Now the stream archives what comes before it, stops
/// there with an error naming it (never opening a pipe), records no gap, and
/// carries on once the entry is replaced by a real segment.
#[test]
fn non_file_with_a_segment_name_holds_the_stream_instead_of_becoming_a_gap() {
    type Make = fn(&Path);
    let kinds: [(&str, Make, &str); 4] = [
        ("dir", |p| fs::create_dir(p).unwrap(), "is a directory"),
        ("fifo", make_fifo, "is a named pipe (FIFO)"),
        (
            "dangling",
            |p| symlink("/nonexistent/walship-segment", p).unwrap(),
            "is a symbolic link to /nonexistent/walship-segment, which cannot be read",
        ),
        ("link-to-dir", |p| symlink("/", p).unwrap(), "is a symbolic link to a directory"),
    ];
    for (kind, make, message) in kinds {
        let setup = Setup::new(&format!("odd-{kind}"), 5, "seal = spool");
        setup.write_segments(1..=2, 100);
        setup.write_segments(4..=5, 100);
        let odd = setup.src.join(segment_name(3));
        make(&odd);
        assert_held_at_3_then_recovers(&setup, &odd, kind, message);
    }
    // A socket, while something listens on it.
    let setup = Setup::new("odd-socket", 5, "seal = spool");
    setup.write_segments(1..=2, 100);
    setup.write_segments(4..=5, 100);
    let odd = setup.src.join(segment_name(3));
    let listener = std::os::unix::net::UnixListener::bind(&odd).unwrap();
    assert_held_at_3_then_recovers(&setup, &odd, "socket", "is a socket");
    drop(listener);
}

fn make_fifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

fn assert_held_at_3_then_recovers(setup: &Setup, odd: &Path, kind: &str, message: &str) {
    let out = walship_within(setup, &["run", "--once"]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{kind}: {log}");
    assert!(log.contains(&format!("{} {message}", segment_name(3))), "{kind}: {log}");
    assert!(log.contains("before position 3"), "{kind}: {log}");
    assert!(!log.contains("missing"), "{kind}: {log}");
    assert_eq!(batch_names(setup), [key(1, 2)], "{kind}");
    assert_eq!(archived_position(setup), "2\n", "{kind}");
    assert!(!setup.ok(&["list"]).contains("GAP"), "{kind}");
    // `check` finds it too.
    let check = setup.walship(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{kind}");
    assert!(stdout(&check).contains(&segment_name(3)), "{kind}: {}", stdout(&check));

    if fs::symlink_metadata(odd).unwrap().is_dir() {
        fs::remove_dir(odd).unwrap();
    } else {
        fs::remove_file(odd).unwrap();
    }
    setup.write_segments(3..=3, 100);
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("0 gaps"), "{kind}: {out}");
    assert_eq!(batch_names(setup), [key(1, 2), key(3, 5)], "{kind}");
}

/// A late file in a spool (its position recorded as a gap before it
/// arrived) was ignored forever without a word — and with
/// `on_archived = delete`, deleted as if it were archived. It is warned
/// about, counted in `status`, and left alone.
#[test]
fn late_file_in_a_spool_is_warned_about_counted_and_left_alone() {
    for on_archived in ["delete", "keep"] {
        let setup = Setup::new(
            &format!("late-{on_archived}"),
            5,
            &format!("seal = spool\non_archived = {on_archived}"),
        );
        setup.write_segments(1..=5, 100);
        setup.ok(&["run", "--once"]);
        setup.write_segments(8..=12, 100);
        let out = setup.walship(&["run", "--once"]);
        assert!(stderr(&out).contains("positions 6..7 are missing"), "{}", stderr(&out));

        setup.write_segments(6..=6, 100);
        let out = setup.walship(&["run", "--once"]);
        assert_success(&out, &["run", "--once"]);
        let log = stderr(&out);
        assert!(
            log.contains("seg-000006.log arrived late: its position 6 is recorded as the gap 6..7"),
            "{log}"
        );
        assert!(log.contains("Keep it elsewhere"), "{log}");
        assert!(setup.src.join(segment_name(6)).exists(), "{on_archived}: the late file was removed");
        assert!(!setup.src.join("seg-000006.log.archived").exists());

        let status = setup.ok(&["status"]);
        assert!(status.contains("late files:         1"), "{status}");
        assert!(setup.ok(&["status", "--json"]).contains("\"late_segments\":1"), "{status}");
    }
}

/// A late file in a recorded gap, then the state directory wiped: the
/// rebuild adopted the gap record as a conflict and stopped the stream for
/// good, where the same file with the journal intact is a late file, warned
/// about and left alone. It is the same late file either way.
#[test]
fn late_file_in_a_gap_after_a_wiped_state_dir_is_late_not_a_conflict() {
    let setup = Setup::new("late-wiped", 5, "seal = spool\non_archived = delete");
    setup.write_segments(1..=5, 100);
    setup.ok(&["run", "--once"]);
    setup.write_segments(8..=12, 100);
    setup.walship(&["run", "--once"]);
    setup.write_segments(6..=6, 100);
    fs::remove_dir_all(&setup.state).unwrap();

    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(stderr(&out).contains("seg-000006.log arrived late"), "{}", stderr(&out));
    assert!(setup.src.join(segment_name(6)).exists(), "the late file was removed");
}

/// A file below the position where the archive starts is late too.
#[test]
fn file_below_the_start_of_the_archive_is_late() {
    let setup = Setup::new("late-below", 5, "seal = spool");
    setup.write_segments(40..=45, 100);
    setup.ok(&["run", "--once"]);
    setup.write_segments(3..=3, 100);
    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(
        stderr(&out).contains("its position 3 is below position 40, where the archive starts"),
        "{}",
        stderr(&out)
    );
}

/// Changing `pattern` from `seg-{seq}.log` to `seg-{hex}.log` read the old
/// files at new positions: `seg-000010.log` became 16, and the stream
/// archived them again after a fake gap. The stream now refuses to open,
/// naming the file, both positions and the fix; nothing is stored.
#[test]
fn changed_pattern_is_refused_instead_of_re_archiving_old_files() {
    let cases = [
        ("seg-{hex}.log", "`seg-000010.log` stands for position 16 under the stream's naming, not 10"),
        ("log-{seq}.seg", "`seg-000001.log` is not a segment name under the stream's naming"),
    ];
    for (new_pattern, what) in cases {
        let setup = Setup::new("pattern-change", 5, "");
        setup.write_segments(1..=12, 100);
        setup.ok(&["run", "--once"]);
        let (batches, records) = (setup.batch_objects().len(), setup.record_objects().len());

        let config = fs::read_to_string(&setup.config).unwrap();
        fs::write(&setup.config, config.replace("seg-{seq}.log", new_pattern)).unwrap();
        let out = setup.walship(&["run", "--once"]);
        let log = stderr(&out);
        assert!(!out.status.success(), "{log}");
        assert!(log.contains(&format!("{what} (pattern `{new_pattern}`)")), "{log}");
        assert!(log.contains("put the old pattern back, or archive under a new stream name"), "{log}");
        assert_eq!(setup.batch_objects().len(), batches);
        assert_eq!(setup.record_objects().len(), records);

        // With the state directory lost, the records adopted from the
        // target are checked the same way.
        fs::remove_dir_all(&setup.state).unwrap();
        let out = setup.walship(&["run", "--once"]);
        assert!(stderr(&out).contains(&format!("{what} (pattern `{new_pattern}`)")), "{}", stderr(&out));
        assert_eq!(setup.batch_objects().len(), batches);
        assert_eq!(setup.record_objects().len(), records);
    }
}

/// The daemon warns about a late file once, not at every poll.
#[test]
fn daemon_warns_about_a_late_file_once() {
    let setup = Setup::new("late-once", 5, "seal = spool");
    setup.write_segments(1..=5, 100);
    setup.ok(&["run", "--once"]);
    setup.write_segments(8..=12, 100);
    setup.walship(&["run", "--once"]);
    setup.write_segments(6..=6, 100);

    let daemon = Daemon::start(&setup.config, true);
    // poll_interval is 10 ms: a second is about a hundred passes.
    std::thread::sleep(Duration::from_secs(1));
    let out = daemon.terminate();
    let log = stderr(&out);
    assert_eq!(log.matches("seg-000006.log arrived late").count(), 1, "{log}");
}
