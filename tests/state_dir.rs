//! The state directory: walship writes its own files there and never
//! through a link planted in their place.

use std::fs;
use std::os::unix::fs::symlink;

use crate::util::{Setup, stderr, stdout};

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

/// The state directory is not bound to its target: pointed at a new, empty
/// target, `run` went on from the journal's position, so the new archive
/// lacks everything before it (its `list` and `restore` from the state
/// directory name objects it does not hold), with exit 0.
#[test]
fn state_dir_of_another_target_is_refused() {
    let setup = Setup::new("other-target", 5, "seal = spool");
    setup.write_segments(1..=5, 100);
    setup.ok(&["run", "--once"]);
    let new_archive = setup.dir.path.join("new-archive");
    fs::create_dir_all(&new_archive).unwrap();
    let text = fs::read_to_string(&setup.config)
        .unwrap()
        .replace(&setup.archive.display().to_string(), &new_archive.display().to_string());
    fs::write(&setup.config, text).unwrap();
    setup.write_segments(6..=10, 100);

    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&new_archive.display().to_string()), "{}", stderr(&out));
}

/// The same archive under a new path (moved, or mounted elsewhere) holds
/// the journal's last record: the state directory follows it, and nothing
/// is archived twice.
#[test]
fn state_dir_follows_its_archive_to_a_new_place() {
    let setup = Setup::new("moved-target", 5, "seal = spool");
    setup.write_segments(1..=5, 100);
    setup.ok(&["run", "--once"]);
    let moved = setup.dir.path.join("moved-archive");
    fs::rename(&setup.archive, &moved).unwrap();
    let text = fs::read_to_string(&setup.config)
        .unwrap()
        .replace(&setup.archive.display().to_string(), &moved.display().to_string());
    fs::write(&setup.config, text).unwrap();
    setup.write_segments(6..=10, 100);

    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("0 already in the archive"), "{out}");
    let binding = fs::read_to_string(setup.state.join("s").join("target")).unwrap();
    assert_eq!(binding.trim_end(), format!("file://{}", moved.display()));
}

/// A named pipe in place of the journal made `list` (and `run`) wait for
/// ever for a writer.
#[test]
fn named_pipe_in_place_of_the_journal_is_an_error_not_a_hang() {
    let setup = Setup::new("journal-fifo", 1, "seal = spool");
    setup.write_segments(0..=1, 100);
    fs::create_dir_all(setup.state.join("s")).unwrap();
    let c_path = std::ffi::CString::new(setup.journal().to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let config = setup.config.to_str().unwrap();
    let commands: [&[&str]; 2] = [&["list", "-c", config], &["run", "--once", "-c", config]];
    for args in commands {
        let out = crate::util::walship_within(args, std::time::Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&setup.journal().display().to_string()), "{}", stderr(&out));
    }
}

/// Named pipes in place of the status file or the lock made `status` wait
/// for ever for a writer.
#[test]
fn named_pipes_in_the_state_dir_do_not_hang_status() {
    for name in ["status", "lock"] {
        let setup = Setup::new(&format!("state-fifo-{name}"), 1, "seal = spool");
        setup.write_segments(0..=1, 100);
        setup.ok(&["run", "--once"]);
        let path = setup.state.join("s").join(name);
        fs::remove_file(&path).unwrap();
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let args = ["status", "-c", setup.config.to_str().unwrap()];
        let out = crate::util::walship_within(&args, std::time::Duration::from_secs(10));
        assert!(stdout(&out).contains("stream s"), "{name}: {}{}", stdout(&out), stderr(&out));
    }
}
