//! Acknowledgement (`on_archived = delete | mark`) touches only files whose
//! content the archive holds: a file that arrives again under a name the
//! archive already holds, with other content, is a conflict, never deleted
//! or marked on the strength of the old record.

use std::fs;

use crate::util::{Setup, segment_bytes, segment_name, stderr};

/// A spool receives `seg-000004.log` again (a re-sent file, another
/// producer's file) after the first one was archived and acknowledged.
/// The leftover-acknowledgement path (meant to heal a crash between commit
/// and acknowledgement) deleted or marked it without comparing it with the
/// record: data the operator expected to be archived was lost, and with
/// `mark` the rename replaced the earlier marked file too.
#[test]
fn file_arriving_again_with_other_content_is_not_acknowledged() {
    for on_archived in ["delete", "mark"] {
        let setup = Setup::new(
            &format!("ack-again-{on_archived}"),
            1,
            &format!("seal = spool\non_archived = {on_archived}"),
        );
        setup.write_segments(4..=6, 100);
        setup.ok(&["run", "--once"]);
        let marked = setup.src.join(format!("{}.archived", segment_name(4)));
        let before_marked = fs::read(&marked).ok();

        let again = setup.src.join(segment_name(4));
        fs::write(&again, b"other content under an archived name").unwrap();
        let out = setup.walship(&["run", "--once"]);

        assert_eq!(
            fs::read(&again).ok().as_deref(),
            Some(&b"other content under an archived name"[..]),
            "{on_archived}: the new file was acknowledged without matching the record: {}",
            stderr(&out)
        );
        assert_eq!(fs::read(&marked).ok(), before_marked, "{on_archived}: the marked file was replaced");
        assert_eq!(out.status.code(), Some(1), "{on_archived}: a conflict fails the pass: {}", stderr(&out));
        assert!(stderr(&out).contains(&segment_name(4)), "{on_archived}: names the file: {}", stderr(&out));
    }
}

/// The healing case still works: a crash between commit and
/// acknowledgement leaves the archived segment in place, with the content
/// the record gives it; the next pass acknowledges it.
#[test]
fn leftover_with_the_recorded_content_is_still_acknowledged() {
    let setup = Setup::new("ack-leftover", 1, "seal = spool\non_archived = delete");
    setup.write_segments(4..=6, 100);
    setup.ok(&["run", "--once"]);
    fs::write(setup.src.join(segment_name(5)), segment_bytes(5, 100)).unwrap();
    setup.ok(&["run", "--once"]);
    assert!(!setup.src.join(segment_name(5)).exists(), "the leftover was not acknowledged");
}

/// Two configs share a state directory and a target and both name their
/// stream `s`, with different directories. The second config's stream
/// found its positions in the first one's journal and deleted all of its
/// own (different) segments, with exit 0.
#[test]
fn second_config_sharing_the_state_dir_does_not_delete_its_different_segments() {
    let first = Setup::new("ack-shared-first", 1, "seal = spool\non_archived = delete");
    let second = Setup::new("ack-shared-second", 1, "seal = spool\non_archived = delete");
    let text = fs::read_to_string(&second.config)
        .unwrap()
        .replace(&second.state.display().to_string(), &first.state.display().to_string())
        .replace(&second.archive.display().to_string(), &first.archive.display().to_string());
    fs::write(&second.config, text).unwrap();
    first.write_segments(0..=2, 100);
    for p in 0..=2 {
        fs::write(second.src.join(segment_name(p)), format!("the second config's segment {p}")).unwrap();
    }
    first.ok(&["run", "--once"]);

    let out = second.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for p in 0..=2 {
        assert!(second.src.join(segment_name(p)).exists(), "segment {p} was deleted: {}", stderr(&out));
    }
}
