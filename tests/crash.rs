//! Crashes: SIGKILL at random points and inside the commit sequence, a
//! wiped state directory, a crash between upload and commit, conflicts, locks.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

/// Parse the local journal into (first, last) ranges, checking each line's shape.
fn journal_ranges(path: &Path) -> Vec<(u64, u64)> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let field = |name: &str| -> u64 {
                let start = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
                line[start..].split(' ').next().unwrap().parse().unwrap()
            };
            (field("first"), field("last"))
        })
        .collect()
}

/// Ranges must be contiguous from `start` with no overlap or duplicate.
fn assert_contiguous(ranges: &[(u64, u64)], start: u64, end: u64) {
    let mut next = start;
    for &(first, last) in ranges {
        assert_eq!(first, next, "records not contiguous: {ranges:?}");
        assert!(last >= first);
        next = last + 1;
    }
    assert_eq!(next, end + 1, "records end at {} instead of {end}: {ranges:?}", next - 1);
}

/// Object files under the archive with their (inode, mtime): a rewrite changes them.
fn object_identities(archive: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    for sub in ["s/batches", "s/manifest"] {
        for path in sorted_files(&archive.join(sub)) {
            let m = fs::metadata(&path).unwrap();
            out.insert(
                format!("{sub}/{}", path.file_name().unwrap().to_str().unwrap()),
                (m.ino(), m.mtime(), m.mtime_nsec()),
            );
        }
    }
    out
}

/// Where in the daemon's life a kill lands.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// After a random delay: anywhere, mid-upload included.
    Random(u64),
    /// As soon as a new batch object is in place: before its records.
    NewBatchObject,
    /// As soon as a new remote record is in place: before the journal append.
    NewRecordObject,
}

/// Start the daemon, kill it with SIGKILL at `point`, reap it.
fn run_and_kill(setup: &Setup, point: KillPoint) {
    let daemon = Daemon::start(&setup.config, false);
    let count = |dir: &str| fs::read_dir(setup.archive.join(dir)).map_or(0, |d| d.count());
    match point {
        KillPoint::Random(ms) => std::thread::sleep(Duration::from_millis(ms)),
        KillPoint::NewBatchObject | KillPoint::NewRecordObject => {
            let dir = if matches!(point, KillPoint::NewBatchObject) { "s/batches" } else { "s/manifest" };
            let before = count(dir);
            let deadline = Instant::now() + Duration::from_secs(5);
            while count(dir) == before && Instant::now() < deadline {
                std::hint::spin_loop();
            }
        }
    }
    daemon.kill();
}

/// SIGKILL the daemon 45 times while segments keep arriving — at random
/// moments and right inside the commit sequence; after a final pass nothing
/// is lost and nothing duplicated, in the manifest or in the archive.
#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let setup = Setup::new("sigkill", 4, "seal = spool");
    let (total, rounds) = (450u64, 45u64);
    let mut written = 0;
    let mut seed = 12345u64;
    for round in 0..rounds {
        let upto = (round + 1) * total / rounds;
        setup.write_segments(written + 1..=upto, 64 * 1024);
        written = upto;
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let point = match round % 3 {
            0 => KillPoint::Random(2 + (seed >> 33) % 60),
            1 => KillPoint::NewBatchObject,
            _ => KillPoint::NewRecordObject,
        };
        run_and_kill(&setup, point);
    }
    setup.ok(&["run", "--once"]);

    let ranges = journal_ranges(&setup.journal());
    assert_contiguous(&ranges, 1, total);
    let objects: Vec<String> =
        setup.batch_objects().iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    let expected: Vec<String> = ranges.iter().map(|(a, b)| format!("{a:016x}-{b:016x}")).collect();
    assert_eq!(objects, expected, "archive objects and manifest disagree");
    assert_eq!(setup.record_objects().len(), ranges.len());

    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
}

/// Uploads overlap commits: the object of batch N+1 can be stored before
/// the records of batch N. SIGKILL right then, again and again: each
/// restart finds both objects with its exists-checks and records them
/// without sending either again; in the end nothing is lost or duplicated.
#[test]
fn sigkill_with_the_next_object_stored_ahead_of_the_records_heals() {
    let setup = Setup::new("sigkill-ahead", 1, "seal = spool");
    setup.write_segments(1..=400, 256 * 1024);
    let count = |dir: &str| fs::read_dir(setup.archive.join(dir)).map_or(0, |d| d.count());
    let mut caught_ahead = 0;
    let mut stored_before_kills = BTreeMap::new();
    for _ in 0..12 {
        let daemon = Daemon::start(&setup.config, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        // Two objects past the records: one whose record is in flight, one
        // stored ahead of it.
        while count("s/batches") < count("s/manifest") + 2 && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        daemon.kill();
        if count("s/batches") >= count("s/manifest") + 2 {
            caught_ahead += 1;
        }
        stored_before_kills.extend(object_identities(&setup.archive));
    }
    assert!(caught_ahead > 0, "never caught an object stored ahead of the records");
    setup.ok(&["run", "--once"]);
    let ranges = journal_ranges(&setup.journal());
    assert_contiguous(&ranges, 1, 400);
    assert_eq!(setup.batch_objects().len(), 400);
    let after = object_identities(&setup.archive);
    for (key, identity) in stored_before_kills.iter().filter(|(key, _)| key.starts_with("s/batches/")) {
        assert_eq!(after.get(key), Some(identity), "{key} was sent again");
    }
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
}

/// With the state directory wiped, a restart resumes from the archive's own
/// records: nothing is uploaded again, and new segments continue the stream.
#[test]
fn wiped_state_dir_resumes_from_the_archive_without_rewriting() {
    let setup = Setup::new("wiped", 10, "seal = spool");
    setup.write_segments(1..=95, 2000);
    setup.ok(&["run", "--once"]);
    let before = object_identities(&setup.archive);
    let journal_before = fs::read_to_string(setup.journal()).unwrap();

    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(stdout(&out).contains("archived 0 batches"), "{}", stdout(&out));
    assert!(stderr(&out).contains("adopted 10 records"), "{}", stderr(&out));
    assert_eq!(object_identities(&setup.archive), before, "an existing object was rewritten");
    assert_eq!(fs::read_to_string(setup.journal()).unwrap(), journal_before);

    setup.write_segments(96..=120, 2000);
    fs::remove_dir_all(&setup.state).unwrap();
    setup.ok(&["run", "--once"]);
    let after = object_identities(&setup.archive);
    for (key, identity) in &before {
        assert_eq!(after.get(key), Some(identity), "{key} was rewritten");
    }
    assert_contiguous(&journal_ranges(&setup.journal()), 1, 120);
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
}

/// A crash after the batch object was stored but before it was recorded:
/// the restart finds the object, checks size and CRC32, and records it
/// without sending it again.
#[test]
fn crash_between_upload_and_commit_heals_without_resending() {
    let setup = Setup::new("heal", 10, "seal = spool");
    setup.write_segments(1..=30, 1500);
    setup.ok(&["run", "--once"]);
    // Undo the last commit's records, keeping its object.
    let last_record = setup.record_objects().pop().unwrap();
    fs::remove_file(&last_record).unwrap();
    let journal = fs::read_to_string(setup.journal()).unwrap();
    let kept: Vec<&str> = journal.lines().collect();
    fs::write(setup.journal(), kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    let before = object_identities(&setup.archive);

    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 1 batch (") && out.contains("1 already in the archive"), "{out}");
    let after = object_identities(&setup.archive);
    let batch = "s/batches/0000000000000015-000000000000001e";
    assert_eq!(after[batch], before[batch], "the stored batch was sent again");
    assert_contiguous(&journal_ranges(&setup.journal()), 1, 30);
}

/// Different content already archived at a position is never overwritten.
#[test]
fn conflicting_object_stops_the_stream_loudly() {
    let setup = Setup::new("conflict", 5, "seal = spool");
    setup.write_segments(1..=5, 300);
    let key = setup.archive.join("s/batches/0000000000000001-0000000000000005");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, b"someone else's bytes").unwrap();
    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("different content"), "{}", stderr(&out));
    assert_eq!(fs::read(&key).unwrap(), b"someone else's bytes");
}

/// A second daemon on the same state directory is refused, not raced.
#[test]
fn second_process_on_the_same_stream_is_refused() {
    let setup = Setup::new("locked", 5, "seal = spool");
    setup.write_segments(1..=3, 100);
    let daemon = Daemon::start(&setup.config, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !setup.state.join("s/archived_position").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = setup.walship(&["run", "--once"]);
    let status = daemon.terminate().status;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("another walship process"), "{}", stderr(&out));
    assert!(status.success(), "SIGTERM should stop the daemon cleanly with exit 0: {status:?}");
}

/// Regression (records adopted from the target were trusted over local
/// segments): a second config archiving the same stream name to the same
/// target, with different local content and `on_archived = delete`, adopted
/// the first one's records and deleted its own segments. Now that is a
/// conflict: loud, exit 1, nothing deleted, nothing adopted.
#[test]
fn adopted_records_with_different_local_content_delete_nothing() {
    let first = Setup::new("adopt-first", 5, "seal = spool");
    first.write_segments(1..=5, 300);
    first.ok(&["run", "--once"]);

    let mut second = Setup::new("adopt-second", 5, "seal = spool\non_archived = delete");
    second.target_lines = first.target_lines.clone();
    second.write_config(5, "seal = spool\non_archived = delete", "");
    second.write_segments(1..=5, 301);
    let out = second.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("different content") && log.contains("nothing was adopted, deleted or marked"),
        "{log}"
    );
    assert_eq!(sorted_files(&second.src).len(), 5, "local segments were deleted");
    assert!(journal_ranges(&second.journal()).is_empty(), "records were adopted");

    // The same content is adopted, acknowledged, and not uploaded again.
    second.write_segments(1..=5, 300);
    let out = second.ok(&["run", "--once"]);
    assert!(out.contains("archived 0 batches"), "{out}");
    assert!(sorted_files(&second.src).is_empty(), "identical archived segments should be deleted");
}

/// Regression: temp files left by a crash (`.status.*.tmp` in the state
/// directory, a large hidden temp beside the batch objects) were never
/// removed. Now each stream removes walship's own temp names older than the
/// process at start, and nothing else.
#[test]
fn temp_files_left_by_a_crash_are_removed_at_start() {
    let setup = Setup::new("stale-temps", 5, "seal = spool");
    setup.write_segments(1..=5, 300);
    setup.ok(&["run", "--once"]);
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let future = std::time::SystemTime::now() + Duration::from_secs(3600);
    let plant = |path: std::path::PathBuf, when: std::time::SystemTime| {
        fs::write(&path, vec![0u8; 4096]).unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
        path
    };
    let stale = [
        plant(setup.state.join("s/.status.4242-0.tmp"), old),
        plant(setup.archive.join("s/batches/.0000000000000006-000000000000000a.4242-7.tmp"), old),
        plant(setup.archive.join("s/manifest/.0000000000000006-000000000000000a.batch.4242-8.tmp"), old),
    ];
    let kept = [
        plant(setup.state.join("s/.status.4242-1.tmp"), future),
        plant(setup.archive.join("s/batches/.notes.tmp"), old),
        plant(setup.state.join("s/notes.4242-0.tmp"), old),
    ];
    setup.ok(&["run", "--once"]);
    for path in &stale {
        assert!(!path.exists(), "{} was left", path.display());
    }
    for path in &kept {
        assert!(path.exists(), "{} is not a stale walship temp file, yet was removed", path.display());
    }
}
