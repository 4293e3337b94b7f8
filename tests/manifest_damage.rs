//! Damaged and hostile manifests: torn tails, corrupted and hostile records,
//! unknown versions, forged remote records.

use std::fs;

use crate::util::*;

fn archived_setup(name: &str) -> Setup {
    let setup = Setup::new(name, 5, "seal = spool");
    setup.write_segments(1..=20, 700);
    setup.ok(&["run", "--once"]);
    setup
}

/// Power loss mid-append: the torn final record is dropped with a warning
/// that names the file, and the record comes back from the archive.
#[test]
fn torn_final_record_is_dropped_with_a_warning() {
    let setup = archived_setup("torn");
    let journal = fs::read(setup.journal()).unwrap();
    fs::write(setup.journal(), &journal[..journal.len() - 40]).unwrap();

    let out = setup.walship(&["list"]);
    assert_success(&out, &["list"]);
    assert!(stderr(&out).contains(setup.journal().to_str().unwrap()), "{}", stderr(&out));
    assert!(stdout(&out).contains("4 batches, 20 segments"), "{}", stdout(&out));

    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(stderr(&out).to_lowercase().contains("torn"), "{}", stderr(&out));
    assert_eq!(fs::read(setup.journal()).unwrap(), journal, "journal not healed from the archive");
}

/// Damage anywhere but the end is an error naming the file and the line.
#[test]
fn corrupted_middle_record_is_an_error_naming_file_and_line() {
    let setup = archived_setup("corrupt");
    let text = fs::read_to_string(setup.journal()).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[2] = lines[2].replacen("size=", "size=9", 1);
    fs::write(setup.journal(), lines.join("\n") + "\n").unwrap();

    for args in [&["list"][..], &["run", "--once"]] {
        let out = setup.walship(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let expected = format!("{}:3", setup.journal().display());
        assert!(stderr(&out).contains(&expected), "{args:?} should name {expected}: {}", stderr(&out));
    }
}

/// A line with a valid CRC32 (so it is not mere damage) and `body`.
fn line_with_crc(body: &str) -> String {
    format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
}

/// Hostile records that checksum correctly are still refused, each with an
/// error naming the file, the line and what is wrong; nothing is written.
#[test]
fn hostile_journal_records_are_refused_with_clear_errors() {
    let cases = [
        (
            "traversal key",
            "batch first=21 last=21 size=1 crc32=e8b7be43 key=../../etc/passwd encoding=identity \
             stored_size=1 stored_crc32=e8b7be43 seg=21,seg-000021.log,1,e8b7be43,0,1",
            "key",
        ),
        ("overlapping range", "gap first=18 last=30 reason=x", "overlap"),
        (
            "absurd size",
            "batch first=21 last=21 size=99999999999999999 crc32=e8b7be43 \
             key=s/batches/0000000000000015-0000000000000015 encoding=identity \
             stored_size=99999999999999999 stored_crc32=e8b7be43 \
             seg=21,seg-000021.log,99999999999999999,e8b7be43,0,99999999999999999",
            "size",
        ),
    ];
    for (what, body, expected) in cases {
        let setup = archived_setup("hostile");
        let mut text = fs::read_to_string(setup.journal()).unwrap();
        text.push_str(&line_with_crc(body));
        // Another good-looking line after it, so it is not a torn tail.
        text.push_str(&line_with_crc("gap first=40 last=41 reason=x"));
        fs::write(setup.journal(), &text).unwrap();
        let out = setup.walship(&["run", "--once"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let err = stderr(&out);
        let location = format!("{}:6", setup.journal().display());
        assert!(err.contains(&location), "{what}: should name {location}: {err}");
        assert!(err.to_lowercase().contains(expected), "{what}: should mention {expected}: {err}");
        assert_eq!(fs::read_to_string(setup.journal()).unwrap(), text, "{what}: the journal was changed");
    }
}

#[test]
fn unknown_manifest_version_is_refused() {
    let setup = archived_setup("version");
    let text = fs::read_to_string(setup.journal()).unwrap().replacen(
        "walship-manifest v2",
        "walship-manifest v9",
        1,
    );
    fs::write(setup.journal(), &text).unwrap();
    let out = setup.walship(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("v9") && stderr(&out).to_lowercase().contains("upgrade"),
        "{}",
        stderr(&out)
    );
}

/// A record object on the target whose content does not match its key is
/// refused (the archive alone is trusted only when it is consistent).
#[test]
fn hostile_remote_record_is_refused() {
    let setup = archived_setup("hostile-remote");
    let records = setup.record_objects();
    let forged = setup.archive.join(format!("s/manifest/{:016x}-{:016x}.gap", 30, 31));
    fs::copy(&records[0], &forged).unwrap(); // holds the record of 1..5
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(forged.file_name().unwrap().to_str().unwrap()), "{err}");
    assert!(err.contains("does not match its key"), "{err}");
}

/// A remote gap record whose reason holds control characters (a terminal
/// escape, a newline that forges a row) was accepted, and `list` printed
/// it raw. Control characters in a record's text are hostile.
#[test]
fn gap_reason_with_control_characters_is_hostile() {
    let setup = archived_setup("hostile-reason");
    let key = format!("s/manifest/{:016x}-{:016x}.gap", 21, 22);
    let body = "gap first=21 last=22 reason=%1B%5B2J%0A%20%2021..30%20batch%20looks%20fine";
    fs::write(setup.archive.join(&key), format!("walship-manifest v2\n{}", line_with_crc(body))).unwrap();
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["list"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&key), "names the object: {said}");
    assert!(!said.contains('\u{1b}') && !said.contains("\n  21..30"), "printed raw: {said}");
}

/// What every manifest reader must do with a hole: `list`, `restore`,
/// `verify` and `run` fail (exit 1) and name the missing range and where.
fn assert_hole_refused_everywhere(setup: &Setup, range: &str, location: &str) {
    let restored = setup.dir.path.join("restored");
    let to = restored.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["list"],
        &["restore", "-s", "s", "--to", to],
        &["restore", "-s", "s", "--to", to, "--allow-gaps"],
        &["verify"],
        &["run", "--once"],
    ];
    for args in commands {
        let out = setup.walship(args);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{args:?} must fail on the hole: {said}");
        assert!(
            said.contains(&format!("positions {range} are missing")),
            "{args:?} should name {range}: {said}"
        );
        assert!(said.contains(location), "{args:?} should say where ({location}): {said}");
    }
    assert!(!restored.join(segment_name(11)).exists(), "restore went past the hole");
}

/// Deleting one valid line from the journal used to make `list` report
/// "0 gaps", `restore` skip those segments with exit 0 and `verify` pass.
#[test]
fn deleted_journal_line_is_a_hole_naming_file_and_line() {
    let setup = archived_setup("deleted-line");
    let text = fs::read_to_string(setup.journal()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.remove(2).contains("first=6 last=10"));
    fs::write(setup.journal(), lines.join("\n") + "\n").unwrap();
    assert_hole_refused_everywhere(&setup, "6..10", &format!("{}:3", setup.journal().display()));
}

/// The same with the journal's first record line: the journal alone cannot
/// tell (a stream may start above 0), so `list` reported positions 6..20
/// and "0 gaps", and `restore` began at 6, with exit 0. The remote records
/// before the journal's first one show the hole.
#[test]
fn deleted_first_journal_line_is_a_hole_for_list_and_restore() {
    let setup = archived_setup("deleted-first-line");
    let text = fs::read_to_string(setup.journal()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.remove(1).contains("first=1 last=5"));
    fs::write(setup.journal(), lines.join("\n") + "\n").unwrap();
    let restored = setup.dir.path.join("restored");
    let to = restored.to_str().unwrap();
    let commands: [&[&str]; 3] = [&["list"], &["restore", "-s", "s", "--to", to], &["verify"]];
    for args in commands {
        let out = setup.walship(args);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{args:?} must fail on the hole: {said}");
        assert!(said.contains("positions 1..5 are missing"), "{args:?} should name 1..5: {said}");
    }
    assert!(!restored.join(segment_name(6)).exists(), "restore skipped the hole");
}

/// `fetch` of a segment below the journal's first record answered "not in
/// the archive" (exit 3: for PostgreSQL's restore_command, "no such WAL")
/// although the archive holds it.
#[test]
fn fetch_below_a_journal_that_lost_its_first_line_is_a_hole_not_not_found() {
    let setup = archived_setup("deleted-first-line-fetch");
    let text = fs::read_to_string(setup.journal()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.remove(1).contains("first=1 last=5"));
    fs::write(setup.journal(), lines.join("\n") + "\n").unwrap();
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(2), "-"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("positions 1..5 are missing"), "{}", stderr(&out));
    setup.ok(&["fetch", "-s", "s", &segment_name(7), "-"]);
}

/// Losing one remote record object and then the state directory used to
/// rebuild a manifest that silently lacked those positions.
#[test]
fn lost_remote_record_object_then_wiped_state_is_a_hole_naming_the_keys() {
    let setup = archived_setup("lost-record");
    let records = setup.record_objects();
    fs::remove_file(&records[1]).unwrap();
    fs::remove_dir_all(&setup.state).unwrap();
    let name = |i: usize| records[i].file_name().unwrap().to_str().unwrap().to_string();
    assert_hole_refused_everywhere(
        &setup,
        "6..10",
        &format!("between s/manifest/{} and s/manifest/{}", name(0), name(2)),
    );
}

/// Losing the first record object: the rebuild finds the batch object that
/// no record names.
#[test]
fn lost_first_record_object_is_found_through_its_batch_object() {
    let setup = archived_setup("lost-first-record");
    fs::remove_file(&setup.record_objects()[0]).unwrap();
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let expected = format!("s/batches/{:016x}-{:016x}: positions 1..5 are missing", 1, 5);
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

/// With `on_archived = delete`, losing the last record object and then the
/// state directory: the segments are gone locally, the batch object is in
/// the archive. The rebuild said "the next run records it", then the run
/// recorded a gap ("never archived") over the stored data and `verify`
/// passed. A gap is never recorded over a stored batch object.
#[test]
fn gap_is_not_recorded_over_a_stored_batch_whose_record_was_lost() {
    let setup = Setup::new("gap-over-stored", 5, "seal = spool\non_archived = delete");
    setup.write_segments(1..=10, 700);
    setup.ok(&["run", "--once"]);
    assert!(!setup.src.join(segment_name(10)).exists(), "segments were acknowledged");
    fs::remove_file(setup.record_objects().pop().unwrap()).unwrap();
    fs::remove_dir_all(&setup.state).unwrap();
    setup.write_segments(11..=11, 700);

    let out = setup.walship(&["run", "--once"]);
    let key = format!("s/batches/{:016x}-{:016x}", 6, 10);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&key), "names the stored object: {}", stderr(&out));
    assert!(!stderr(&out).contains("never archived"), "{}", stderr(&out));
    assert!(
        setup.record_objects().iter().all(|p| !p.to_string_lossy().ends_with(".gap")),
        "a gap record was stored"
    );
    let list = setup.walship(&["list"]);
    assert!(!stdout(&list).contains("GAP"), "{}", stdout(&list));
}

/// `verify --deep` used to pass with a flipped byte in, or a deletion of, a
/// remote record object: the objects a rebuild relies on.
#[test]
fn verify_deep_reports_damaged_and_missing_record_objects_by_key() {
    let setup = archived_setup("verify-records");
    setup.ok(&["verify", "--deep"]);
    let records = setup.record_objects();
    let mut bytes = fs::read(&records[1]).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x01;
    fs::write(&records[1], bytes).unwrap();
    fs::remove_file(&records[2]).unwrap();
    let name = |i: usize| format!("s/manifest/{}", records[i].file_name().unwrap().to_str().unwrap());

    // Without --deep nothing is downloaded, but the listing shows a lost
    // record object (it used to pass).
    let out = setup.walship(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("{}: MISSING record object", name(2))), "{}", stdout(&out));
    assert!(!stdout(&out).contains("CORRUPT"), "{}", stdout(&out));
    let out = setup.walship(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let said = stdout(&out);
    assert!(said.contains(&format!("{}: CORRUPT record object", name(1))), "{said}");
    assert!(said.contains(&format!("{}: MISSING record object", name(2))), "{said}");
}

/// `verify` finds a missing and a corrupt batch object.
#[test]
fn verify_reports_missing_and_corrupt_batch_objects() {
    let setup = archived_setup("verify-batches");
    let batches = setup.batch_objects();
    fs::remove_file(&batches[0]).unwrap();
    let mut bytes = fs::read(&batches[1]).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&batches[1], bytes).unwrap();
    let out = setup.walship(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("MISSING from the archive"), "{}", stdout(&out));
    assert!(stdout(&out).contains("CORRUPT: CRC32"), "{}", stdout(&out));
}

/// A record naming a file that is not one of the stream's segments (here
/// `passwd`) used to be restored as given.
#[test]
fn remote_record_naming_a_foreign_file_is_hostile() {
    let setup = archived_setup("passwd");
    let crc = format!("{:08x}", crc32fast::hash(b"root"));
    let body = format!(
        "batch first=21 last=21 size=4 crc32={crc} key=s/batches/0000000000000015-0000000000000015 \
         encoding=identity stored_size=4 stored_crc32={crc} seg=21,passwd,4,{crc},0,4"
    );
    let forged = setup.archive.join("s/manifest/0000000000000015-0000000000000015.batch");
    fs::write(&forged, format!("walship-manifest v2\n{}", line_with_crc(&body))).unwrap();
    fs::write(setup.archive.join("s/batches/0000000000000015-0000000000000015"), b"root").unwrap();
    for args in [&["list"][..], &["run", "--once"]] {
        let out = setup.walship(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("0000000000000015-0000000000000015.batch:2"), "{args:?}: {err}");
        assert!(err.contains("`passwd` is not a segment name under the stream's naming"), "{args:?}: {err}");
    }
}

/// The text of a compacted record object holding every record of the
/// journal (what compaction will write): the journal's own lines.
fn compacted_object(setup: &Setup, first: u64, last: u64, level: u8) -> std::path::PathBuf {
    let path = setup.archive.join(format!("s/manifest/{first:016x}-{last:016x}.l{level}"));
    fs::copy(setup.journal(), &path).unwrap();
    path
}

/// A rebuild reads compacted record objects: the larger object wins over
/// the level-0 objects it folds, which need not exist any more.
#[test]
fn rebuild_reads_compacted_record_objects() {
    let setup = archived_setup("compacted");
    let listed_before = setup.ok(&["list"]);
    compacted_object(&setup, 1, 20, 1);
    for record in setup.record_objects().iter().filter(|p| !p.to_str().unwrap().ends_with(".l1")).skip(1) {
        fs::remove_file(record).unwrap();
    }
    fs::remove_dir_all(&setup.state).unwrap();
    assert_eq!(setup.ok(&["list"]), listed_before);
    setup.write_segments(21..=25, 700);
    setup.ok(&["run", "--once"]);
    assert!(setup.ok(&["list"]).contains("5 batches, 25 segments"));
}

/// Two record objects that overlap and disagree (here two compacted
/// objects, neither inside the other) are an error naming both keys; the
/// one of a differing level-0 object inside a larger object is not read by
/// a rebuild (the larger wins) but `verify --deep` reports it.
#[test]
fn conflicting_record_objects_are_an_error_naming_both_keys() {
    let setup = archived_setup("conflict");
    let journal = fs::read_to_string(setup.journal()).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    let level0 = setup.record_objects();
    let first = setup.archive.join(format!("s/manifest/{:016x}-{:016x}.l1", 1, 15));
    fs::write(&first, format!("{}\n{}\n", lines[0], lines[1..4].join("\n"))).unwrap();
    let second = setup.archive.join(format!("s/manifest/{:016x}-{:016x}.l1", 11, 20));
    let forged = line_with_crc("gap first=11 last=15 reason=forged");
    fs::write(&second, format!("{}\n{forged}{}\n", lines[0], lines[4])).unwrap();
    for record in &level0 {
        fs::remove_file(record).unwrap();
    }
    fs::write(&level0[2], format!("walship-manifest v2\n{forged}")).unwrap();
    fs::remove_dir_all(&setup.state).unwrap();

    let out = setup.walship(&["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (a, b) =
        (first.file_name().unwrap().to_str().unwrap(), second.file_name().unwrap().to_str().unwrap());
    assert!(
        stderr(&out).contains(&format!("records s/manifest/{a} and s/manifest/{b} conflict")),
        "{}",
        stderr(&out)
    );

    fs::remove_file(&second).unwrap();
    let whole = setup.archive.join(format!("s/manifest/{:016x}-{:016x}.l2", 1, 20));
    fs::write(&whole, &journal).unwrap();
    setup.ok(&["list"]);
    let out = setup.walship(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let name = level0[2].file_name().unwrap().to_str().unwrap();
    assert!(stdout(&out).contains(&format!("s/manifest/{name}: CORRUPT record object")), "{}", stdout(&out));
}

/// Every record object lost with the state directory: the batch objects
/// are still there, and walship says so instead of starting over silently.
#[test]
fn all_record_objects_lost_is_said_not_silent() {
    let setup = archived_setup("all-records-lost");
    fs::remove_dir_all(setup.archive.join("s/manifest")).unwrap();
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["list"]);
    assert_success(&out, &["list"]);
    assert!(
        stderr(&out).contains("4 batch objects beyond the last record are stored but not recorded"),
        "{}",
        stderr(&out)
    );
}

/// A prune record (as retention writes it) tells every reader that the
/// positions before its mark were removed on purpose: contiguity is checked
/// from there, and restore starts from the snapshot kept at the mark.
#[test]
fn pruned_positions_are_not_a_hole() {
    let setup = archived_setup("pruned");
    store_snapshot(&setup, 5, "state at 5\n");
    let (batch, record) = (&setup.batch_objects()[0], &setup.record_objects()[0]);
    let prune = line_with_crc("prune seq=1 before=6 delete=s/batches/0000000000000001-0000000000000005");
    fs::write(
        setup.archive.join("s/manifest/prune-0000000000000001"),
        format!("walship-manifest v2\n{prune}"),
    )
    .unwrap();
    fs::remove_file(batch).unwrap();
    fs::remove_file(record).unwrap();
    fs::remove_dir_all(&setup.state).unwrap();

    let listed = setup.ok(&["list"]);
    assert!(listed.contains("positions before 6 were pruned"), "{listed}");
    assert!(listed.contains("3 batches, 15 segments"), "{listed}");
    setup.ok(&["verify", "--deep"]);
    let out = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", out.to_str().unwrap()]);
    assert!(!out.join(segment_name(5)).exists() && out.join(segment_name(6)).exists());
    assert_eq!(fs::read_to_string(out.join("walship-snapshot-0000000000000005")).unwrap(), "state at 5\n");
    setup.write_segments(21..=21, 700);
    setup.ok(&["run", "--once"]);
    assert!(fs::read_to_string(setup.journal()).unwrap().contains("prune seq=1 before=6"));
}

/// A prune record whose mark hides batches it never deleted (a stray or
/// forged record: retention deletes every batch below its mark, and names
/// it) made `list` and `restore` start later and `verify` pass, while the
/// archive still held those positions.
#[test]
fn prune_mark_over_batches_no_prune_deleted_is_reported_by_verify() {
    let setup = archived_setup("pruned-forged");
    let prune = line_with_crc("prune seq=1 before=6");
    fs::write(
        setup.archive.join("s/manifest/prune-0000000000000001"),
        format!("walship-manifest v2\n{prune}"),
    )
    .unwrap();
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let key = format!("s/batches/{:016x}-{:016x}", 1, 5);
    assert!(stdout(&out).contains(&format!("{key}: below the pruned mark")), "{}", stdout(&out));
    // `list`, `restore` and `prune` do not honour it: it names no deleted
    // batch and leaves no snapshot to restore from.
    let restored = setup.dir.path.join("restored");
    let restore = vec!["restore", "-s", "s", "--to", restored.to_str().unwrap()];
    for (args, why) in [
        (vec!["list"], format!("but no prune deleted {key}")),
        (restore, format!("but no prune deleted {key}")),
        (vec!["prune", "--dry-run"], format!("but no prune deleted {key}")),
        // Retention itself reads only the log above the mark.
        (vec!["prune"], "but no snapshot remains to restore from".to_string()),
    ] {
        let out = setup.walship(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let message = stderr(&out);
        assert!(
            message.contains(&format!("prune 1 marks the positions before 6 as pruned, {why}")),
            "{args:?}: {message}"
        );
        assert!(message.contains("move that prune record object (s/manifest/prune-…) aside"), "{message}");
    }
    assert!(!restored.join(segment_name(1)).exists());
}

/// A named pipe at a batch object's key in a file target made `verify`
/// and `restore` hang for ever (the object was opened for reading, which
/// blocks on a pipe with no writer). An object that is not a regular file
/// is damage, reported with its key.
#[test]
fn named_pipe_in_a_file_target_is_damage_not_a_hang() {
    let setup = archived_setup("fifo-object");
    let object = setup.batch_objects()[1].clone();
    fs::remove_file(&object).unwrap();
    let c_path = std::ffi::CString::new(object.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let key = format!("s/batches/{}", object.file_name().unwrap().to_str().unwrap());
    let config = setup.config.to_str().unwrap();
    let to = setup.dir.path.join("restored");
    let limit = std::time::Duration::from_secs(10);
    for args in [
        vec!["verify", "-c", config],
        vec!["restore", "-s", "s", "--to", to.to_str().unwrap(), "-c", config],
        vec!["fetch", "-s", "s", &segment_name(7), "-", "-c", config],
    ] {
        let out = walship_within(&args, limit);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(said.contains(&key), "{args:?} names the object: {said}");
    }
}

/// `status` with one stream's journal damaged printed only the error and
/// nothing about the other streams (the daemon may be archiving them fine).
#[test]
fn status_shows_every_stream_when_one_journal_is_damaged() {
    let setup = archived_setup("status-damaged");
    let other = setup.dir.path.join("other");
    fs::create_dir_all(&other).unwrap();
    let mut config = fs::read_to_string(&setup.config).unwrap();
    config.push_str(&format!(
        "\n[stream t]\ndir = {}\npattern = t-{{seq}}.log\nbatch_size = 1\n",
        other.display()
    ));
    fs::write(&setup.config, config).unwrap();
    let text = fs::read_to_string(setup.journal()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(2);
    fs::write(setup.journal(), lines.join("\n") + "\n").unwrap();

    let out = setup.walship(&["status"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("stream t"), "the healthy stream is not shown: {said}");
    assert!(said.contains("positions 6..10 are missing"), "the damage is not shown: {said}");
    assert_eq!(out.status.code(), Some(1), "{said}");
}
