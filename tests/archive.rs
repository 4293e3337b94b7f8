//! `run --once` over many segments: batch objects, manifest, restore, gaps,
//! acknowledgement modes.

use std::fs;

use crate::util::*;

/// 1,000 segments with batch_size 10 make exactly 100 batch objects, each
/// the exact concatenation of its segments, and restore gives back every file.
#[test]
fn thousand_segments_make_hundred_batches_and_restore_byte_for_byte() {
    let setup = Setup::new("thousand", 10, "seal = spool");
    setup.write_segments(1..=1000, 3000);
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 100 batches (1000 segments"), "{out}");

    let objects = setup.batch_objects();
    assert_eq!(objects.len(), 100);
    assert_eq!(setup.record_objects().len(), 100);
    for (i, object) in objects.iter().enumerate() {
        let (first, last) = (i as u64 * 10 + 1, i as u64 * 10 + 10);
        let expected: Vec<u8> = (first..=last).flat_map(|p| segment_bytes(p, 3000)).collect();
        assert_eq!(object.file_name().unwrap().to_str().unwrap(), format!("{first:016x}-{last:016x}"));
        assert!(
            fs::read(object).unwrap() == expected,
            "{} is not its segments concatenated",
            object.display()
        );
    }

    let restored = setup.dir.path.join("restored");
    let out = setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert!(out.contains("restored 1000 segments"), "{out}");
    assert_same_files(&setup.src, &restored);

    // A second pass has nothing to do and rewrites nothing.
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 0 batches"), "{out}");
}

/// With `seal = next` the newest segment is still being written and stays
/// local; the batch rule starts at (0, 0) for a stream starting at 0; short
/// final batches ship with --once and the next pass re-aligns.
#[test]
fn seal_next_keeps_the_newest_segment_and_batches_realign() {
    let setup = Setup::new("seal-next", 10, "");
    setup.write_segments(0..=14, 500);
    setup.ok(&["run", "--once"]);
    let names: Vec<String> =
        setup.batch_objects().iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, [(0, 0), (1, 10), (11, 13)].map(|(a, b)| format!("{a:016x}-{b:016x}")));

    setup.write_segments(15..=25, 500);
    setup.ok(&["run", "--once"]);
    let count = setup.batch_objects().len();
    // (14, 20) re-aligned to the boundary, then the short (21, 24).
    assert_eq!(count, 5);
    assert!(setup.archive.join(format!("s/batches/{:016x}-{:016x}", 14, 20)).exists());
    assert!(setup.archive.join(format!("s/batches/{:016x}-{:016x}", 21, 24)).exists());
    assert_eq!(fs::read_to_string(setup.state.join("s/archived_position")).unwrap(), "24\n");
}

/// Restore to a position stops there; list is readable.
#[test]
fn restore_to_a_position_and_list() {
    let setup = Setup::new("position", 5, "seal = spool");
    setup.write_segments(1..=30, 800);
    setup.ok(&["run", "--once"]);
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap(), "--position", "12"]);
    let mut names: Vec<String> =
        fs::read_dir(&restored).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, (1..=12).map(segment_name).collect::<Vec<_>>());
    for p in 1..=12 {
        assert_eq!(fs::read(restored.join(segment_name(p))).unwrap(), segment_bytes(p, 800));
    }

    let list = setup.ok(&["list"]);
    assert!(list.contains("stream s: 6 batches, 30 segments"), "{list}");
    assert!(list.contains("1..5"), "{list}");
    assert!(list.contains("s/batches/0000000000000001-0000000000000005"), "{list}");
}

/// Spool use: `on_archived = delete` removes archived segments, `mark`
/// renames them; nothing unarchived is touched.
#[test]
fn on_archived_delete_and_mark() {
    let del = Setup::new("delete", 5, "seal = spool\non_archived = delete");
    del.write_segments(1..=12, 100);
    del.ok(&["run", "--once"]);
    assert_eq!(fs::read_dir(&del.src).unwrap().count(), 0);
    assert_eq!(del.batch_objects().len(), 3);

    let mark = Setup::new("mark", 5, "seal = spool\non_archived = mark");
    mark.write_segments(1..=7, 100);
    mark.ok(&["run", "--once"]);
    assert!(mark.src.join("seg-000001.log.archived").exists());
    assert!(!mark.src.join("seg-000001.log").exists());
    assert_eq!(fs::read_dir(&mark.src).unwrap().count(), 7);
    // Marked files are not archived again.
    let out = mark.ok(&["run", "--once"]);
    assert!(out.contains("archived 0 batches"), "{out}");
}

/// A segment removed before it was archived becomes a recorded gap; restore
/// stops at it unless --allow-gaps.
#[test]
fn removed_segments_become_gaps_and_restore_stops_there() {
    let setup = Setup::new("gap", 5, "seal = spool");
    setup.write_segments(1..=5, 100);
    setup.ok(&["run", "--once"]);
    setup.write_segments(8..=12, 100); // 6 and 7 never arrive
    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(stdout(&out).contains("1 gap"), "{}", stdout(&out));
    assert!(stderr(&out).contains("positions 6..7 are missing"), "{}", stderr(&out));
    let list = setup.ok(&["list"]);
    assert!(list.contains("GAP"), "{list}");

    let restored = setup.dir.path.join("restored");
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("6..7"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-gaps"), "{}", stderr(&out));
    assert_eq!(fs::read_dir(&restored).unwrap().count(), 5);

    let again = setup.dir.path.join("restored2");
    setup.ok(&["restore", "-s", "s", "--to", again.to_str().unwrap(), "--allow-gaps"]);
    assert_eq!(fs::read_dir(&again).unwrap().count(), 10);
}
