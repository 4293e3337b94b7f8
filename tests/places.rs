//! Overlapping places in a config (state_dir, a file target, stream
//! directories) are refused with the reason and exit 2: at load by every
//! command, through `..` and symlinks, and by `check` through bind mounts.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use crate::util::*;

/// A config with the given places and two streams `a` and `b`.
fn write_config(setup: &Setup, state: &Path, target: &Path, a: &Path, b: &Path) {
    let text = format!(
        "[global]\nstate_dir = {}\ntarget = file://{}\n\n\
         [stream a]\ndir = {}\npattern = seg-{{seq}}.log\nbatch_size = 1\n\n\
         [stream b]\ndir = {}\npattern = seg-{{seq}}.log\nbatch_size = 1\n",
        state.display(),
        target.display(),
        a.display(),
        b.display()
    );
    std::fs::write(&setup.config, text).unwrap();
}

/// Every command refuses the config with exit 2 and a message holding `parts`.
fn assert_refused(setup: &Setup, parts: &[&str]) {
    for args in [&["check"][..], &["run", "--once"], &["list"]] {
        let out = setup.walship(args);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}{}", stdout(&out));
        for part in parts {
            assert!(text.contains(part), "{args:?}: {part:?} missing from:\n{text}");
        }
    }
}

#[test]
fn two_streams_on_the_same_dir_are_refused_also_through_dotdot_and_symlinks() {
    let setup = Setup::new("places-same", 1, "");
    let root = &setup.dir.path;
    let config = setup.config.display().to_string();
    let (state, archive, src) = (&setup.state, &setup.archive, &setup.src);

    write_config(&setup, state, archive, src, src);
    assert_refused(
        &setup,
        &[&format!("{config}:11: [stream b] dir:"), "same directory as [stream a] dir (line 6)"],
    );

    write_config(&setup, state, archive, src, &root.join("archive/../src/."));
    assert_refused(&setup, &["[stream b] dir", "same directory as [stream a] dir"]);

    let link = root.join("link-to-src");
    symlink(src, &link).unwrap();
    write_config(&setup, state, archive, src, &link);
    assert_refused(&setup, &["[stream b] dir", "once symlinks are resolved", "give each stream a directory"]);

    // A stream directory inside another, through a symlinked parent.
    std::fs::create_dir_all(src.join("inner")).unwrap();
    write_config(&setup, state, archive, src, &link.join("inner"));
    assert_refused(&setup, &["[stream b] dir", "is inside [stream a] dir"]);
}

#[test]
fn state_dir_and_target_must_be_apart_from_each_other_and_the_streams() {
    let setup = Setup::new("places-state", 1, "");
    let (state, archive, src) = (&setup.state, &setup.archive, &setup.src);
    let other = setup.dir.path.join("other");
    std::fs::create_dir_all(&other).unwrap();

    // state_dir equal to or inside the target.
    write_config(&setup, archive, archive, src, &other);
    assert_refused(&setup, &["[global] target", "same directory as [global] state_dir"]);
    write_config(&setup, &archive.join("state"), archive, src, &other);
    assert_refused(
        &setup,
        &["[global] target", "contains [global] state_dir", "state directory and the archive"],
    );
    // state_dir inside a stream directory (through a symlink).
    let link = setup.dir.path.join("src-link");
    symlink(src, &link).unwrap();
    write_config(&setup, &link.join(".walship"), archive, src, &other);
    assert_refused(&setup, &["[stream a] dir", "contains [global] state_dir", "outside every stream"]);
    // The target inside a stream directory, or inside state_dir.
    write_config(&setup, state, &src.join("archive"), src, &other);
    assert_refused(&setup, &["[stream a] dir", "contains [global] target", "archive its own archive"]);
    write_config(&setup, state, &state.join("archive"), src, &other);
    assert_refused(&setup, &["[global] target", "is inside [global] state_dir"]);
    // Apart: accepted.
    write_config(&setup, state, archive, src, &other);
    setup.ok(&["check"]);
}

/// `check` catches what only directory identity shows: the target is the
/// stream directory, bind-mounted elsewhere. Runs `walship check` in a
/// private mount namespace (needs root; skipped with a note otherwise).
#[test]
fn check_sees_a_bind_mount_of_a_stream_dir_used_as_target() {
    let setup = Setup::new("places-bind", 1, "");
    let other = setup.dir.path.join("other");
    std::fs::create_dir_all(&other).unwrap();
    write_config(&setup, &setup.state, &setup.archive, &setup.src, &other);
    setup.ok(&["check"]);

    let script = format!(
        "mount --bind {} {} && exec {} check -c {}",
        setup.src.display(),
        setup.archive.display(),
        env!("CARGO_BIN_EXE_walship"),
        setup.config.display()
    );
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: cannot create a mount namespace (unshare -m needs root)");
        return;
    }
    let out = Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    assert!(text.contains("apart: FAILED"), "{text}");
    assert!(text.contains("same directory as [stream a] dir"), "{text}");
    assert!(text.contains("the same directory on disk"), "{text}");
}
