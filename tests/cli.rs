//! The command line as a user meets it: help, exit codes, config errors,
//! check, fetch, restore safety, status, verify.

use std::fs;

use crate::util::*;

#[test]
fn help_lists_commands_and_exits_zero() {
    for args in [&["--help"][..], &["help"]] {
        let out = walship(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        for command in ["run", "list", "restore", "fetch", "status", "check", "verify"] {
            assert!(text.contains(command), "help for {args:?} lacks {command}:\n{text}");
        }
    }
    for command in ["run", "list", "restore", "fetch", "status", "check", "verify"] {
        let out = walship(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{command} --help");
        assert!(stdout(&out).contains(command), "{}", stdout(&out));
    }
}

#[test]
fn usage_errors_exit_two() {
    let out = walship(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("frobnicate"), "{}", stderr(&out));
    let out = walship(&["restore", "-c", "/nonexistent.conf"]);
    assert_eq!(out.status.code(), Some(2), "restore without -s/--to: {}", stderr(&out));
}

#[test]
fn missing_config_names_the_file_and_exits_two() {
    let out = walship(&["list", "-c", "/nonexistent/walship.conf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/walship.conf"), "{}", stderr(&out));
}

#[test]
fn config_errors_name_file_line_and_key() {
    let setup = Setup::new("badconf", 10, "colour = blue");
    let out = setup.walship(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("walship.conf:") && err.contains("colour"), "{err}");

    setup.write_config(100, "snapshot_interval = 150\nsnapshot_command = /bin/true", "");
    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("snapshot_interval") && err.contains("multiple of batch_size"), "{err}");

    setup.write_config(0, "", "");
    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("batch_size"), "{}", stderr(&out));

    setup.write_config(10, "", "poll_interval = 5");
    let out = setup.walship(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("poll_interval"), "{}", stderr(&out));
}

#[test]
fn check_reports_each_part_and_fails_on_a_missing_target() {
    let setup = Setup::new("check", 10, "");
    let out = setup.ok(&["check"]);
    assert!(out.contains("target file://") && out.contains(": ok"), "{out}");
    fs::remove_dir_all(&setup.archive).unwrap();
    let out = setup.walship(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("does not exist"), "{}", stdout(&out));
    assert!(stdout(&out).contains("mount"), "{}", stdout(&out));
    // run --once fails the same way, and writes nothing.
    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn fetch_returns_one_segment_and_has_a_not_found_code() {
    let setup = Setup::new("fetch", 10, "seal = spool");
    setup.write_segments(1..=25, 4000);
    setup.ok(&["run", "--once"]);
    let dest = setup.dir.path.join("fetched");
    setup.ok(&["fetch", "-s", "s", &segment_name(17), dest.to_str().unwrap()]);
    assert_eq!(fs::read(&dest).unwrap(), segment_bytes(17, 4000));

    let out = setup.walship(&["fetch", "-s", "s", "seg-999999.log", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not in the archive"), "{}", stderr(&out));

    let out = setup.walship(&["fetch", "-s", "nosuch", "x", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no stream named nosuch"), "{}", stderr(&out));
}

#[test]
fn restore_never_overwrites_existing_files() {
    let setup = Setup::new("noclobber", 5, "seal = spool");
    setup.write_segments(1..=5, 100);
    setup.ok(&["run", "--once"]);
    let restored = setup.dir.path.join("restored");
    fs::create_dir_all(&restored).unwrap();
    fs::write(restored.join(segment_name(3)), b"precious").unwrap();
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(fs::read(restored.join(segment_name(3))).unwrap(), b"precious");
}

#[test]
fn status_reports_positions_and_lag() {
    let setup = Setup::new("status", 10, "");
    setup.write_segments(1..=25, 100);
    setup.ok(&["run", "--once"]);
    setup.write_segments(26..=30, 100);
    let json = setup.ok(&["status", "--json"]);
    assert!(json.contains(r#""archived_position":24"#), "{json}");
    assert!(json.contains(r#""committed_position":29"#), "{json}");
    assert!(json.contains(r#""lag_segments":5"#), "{json}");
    let human = setup.ok(&["status"]);
    assert!(human.contains("archived position:") && human.contains("lag:"), "{human}");
}

#[test]
fn verify_detects_missing_and_corrupt_objects() {
    let setup = Setup::new("verify", 5, "seal = spool");
    setup.write_segments(1..=15, 500);
    setup.ok(&["run", "--once"]);
    let out = setup.ok(&["verify", "--deep"]);
    assert!(out.contains("3 batches checked"), "{out}");
    let objects = setup.batch_objects();
    fs::remove_file(&objects[0]).unwrap();
    let mut bytes = fs::read(&objects[1]).unwrap();
    bytes[7] ^= 0xff;
    fs::write(&objects[1], bytes).unwrap();
    let out = setup.walship(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("MISSING") && text.contains("CORRUPT"), "{text}");
}

/// Stdout whose reader is already gone, as for `walship list | head -0`.
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors that we then own; the read end
    // is closed at once, the write end handed to the child.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::process::Stdio::from(OwnedFd::from_raw_fd(fds[1]))
    }
}

/// `walship list | head -1` panicked ("failed printing to stdout: Broken
/// pipe"), as did every printing command: they now exit quietly.
#[test]
fn printing_commands_exit_quietly_on_a_closed_pipe() {
    let setup = Setup::new("closed-pipe", 5, "seal = spool");
    setup.write_segments(1..=10, 100);
    setup.ok(&["run", "--once"]);
    setup.write_segments(11..=12, 100);
    let restored = setup.dir.path.join("restored");
    let config = setup.config.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["list"],
        &["status"],
        &["status", "--json"],
        &["verify"],
        &["verify", "--deep"],
        &["check"],
        &["run", "--once"],
        &["restore", "-s", "s", "--to", restored.to_str().unwrap()],
        &["list", "--help"],
    ];
    for args in commands {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(*args)
            .args(["-c", config])
            .stdout(closed_pipe())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        // Only the log may speak (run logs what it archived); no error.
        let err = stderr(&out);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert!(!err.contains("walship:") && !err.contains("ERROR"), "{args:?}: {err}");
    }
    for args in [&["--help"][..], &["help", "restore"], &["--version"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(args)
            .stdout(closed_pipe())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?} printed on stderr");
    }
}

/// `walship` alone is a usage error (it exited 0), with the usage on stderr.
#[test]
fn no_arguments_is_a_usage_error() {
    let out = walship(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Usage: walship COMMAND"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

/// `walship help --help` failed; the top-level help lacked exit status 3.
#[test]
fn help_of_help_and_every_exit_status_listed() {
    let out = walship(&["help", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Usage: walship"), "{}", stdout(&out));
    let help = stdout(&walship(&["--help"]));
    for code in ["0 ", "1 ", "2 ", "3 "] {
        assert!(help.contains(code), "exit status {code}missing:\n{help}");
    }
    assert!(help.contains("3 fetch: the segment is not in the archive"), "{help}");
}

/// A target path that is a regular file was reported as "does not exist",
/// behind a stray "check : " prefix.
#[test]
fn check_says_a_target_that_is_a_file_is_not_a_directory() {
    let setup = Setup::new("target-file", 10, "");
    fs::remove_dir_all(&setup.archive).unwrap();
    fs::write(&setup.archive, b"").unwrap();
    let out = setup.walship(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("is not a directory"), "{text}");
    assert!(!text.contains("does not exist") && !text.contains(" : "), "{text}");
}

/// "1 segments", "1 streams", "1 gaps": counts read right in every output.
#[test]
fn counts_of_one_are_singular() {
    let setup = Setup::new("singular", 5, "seal = spool");
    setup.write_segments(1..=1, 100);
    setup.write_segments(3..=3, 100);
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 2 batches (2 segments"), "{out}");
    assert!(out.contains("1 gap"), "{out}");
    let check = setup.ok(&["check"]);
    assert!(check.contains("(1 stream)"), "{check}");
    let list = setup.ok(&["list"]);
    assert!(list.contains("2 batches, 2 segments") && list.contains("1 gap,"), "{list}");
    let restored = setup.dir.path.join("r");
    let out = setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap(), "--position", "1"]);
    assert!(out.contains("restored 1 segment ("), "{out}");
    let out = setup.ok(&["verify"]);
    assert!(out.contains("2 batches checked"), "{out}");
    for text in [out, check, list] {
        for wrong in ["1 segments", "1 streams", "1 gaps", "1 batches"] {
            assert!(!text.contains(wrong), "{wrong:?} in {text}");
        }
    }
}
