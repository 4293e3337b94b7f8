//! The state directory: walship writes its own files there and never
//! through a link planted in their place.

use std::fs;
use std::os::unix::fs::symlink;

use crate::util::{Setup, stderr};

/// A symlink planted at `STATE_DIR/STREAM/lock` made `run` truncate the
/// file it points to (outside the state directory) and write its PID there.
#[test]
fn planted_symlink_at_the_lock_file_is_not_written_through() {
    let setup = Setup::new("lock-symlink", 1, "seal = spool");
    setup.write_segments(0..=1, 100);
    let victim = setup.dir.path.join("victim");
    fs::write(&victim, b"precious").unwrap();
    fs::create_dir_all(setup.state.join("s")).unwrap();
    symlink(&victim, setup.state.join("s/lock")).unwrap();

    let out = setup.walship(&["run", "--once"]);
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "written through the link: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&setup.state.join("s/lock").display().to_string()), "{}", stderr(&out));
}

/// The same at the journal: a link to an empty file outside the state
/// directory got the journal's header and records written into it.
#[test]
fn planted_symlink_at_the_journal_is_not_written_through() {
    let setup = Setup::new("journal-symlink", 1, "seal = spool");
    setup.write_segments(0..=1, 100);
    let victim = setup.dir.path.join("victim");
    fs::write(&victim, b"").unwrap();
    fs::create_dir_all(setup.state.join("s")).unwrap();
    symlink(&victim, setup.journal()).unwrap();

    let out = setup.walship(&["run", "--once"]);
    assert_eq!(fs::read(&victim).unwrap(), b"", "written through the link: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&setup.journal().display().to_string()), "{}", stderr(&out));
}

/// A wiped state directory is rebuilt from the archive; with one record
/// the log said "adopted 1 records".
#[test]
fn rebuild_of_one_record_says_record() {
    let setup = Setup::new("adopt-one", 5, "seal = spool");
    setup.write_segments(1..=5, 100);
    setup.ok(&["run", "--once"]);
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["run", "--once"]);
    assert!(stderr(&out).contains("adopted 1 record from"), "{}", stderr(&out));
}
