//! Snapshots: the schedule (with its jump), jobs through the daemon's
//! control socket and with no daemon, refusals, failing commands, a slow
//! snapshot while segments keep arriving, a daemon killed mid-upload, and
//! the socket refusing other users. The application is `util::kvapp`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::kvapp::{self, snapshot_command, state_at, state_text};
use crate::util::*;

/// Stream lines for snapshots every `interval` positions with `command`.
fn snapshot_lines(interval: u64, command: &str, more: &str) -> String {
    format!("seal = spool\nsnapshot_interval = {interval}\nsnapshot_command = {command}\n{more}")
}

/// A file-target setup whose stream takes kvapp snapshots.
fn kv_setup(name: &str, batch_size: u64, interval: u64, prefix: &str, more: &str) -> Setup {
    let setup = Setup::new(name, batch_size, "");
    let lines = snapshot_lines(interval, &snapshot_command(prefix, &setup.src), more);
    setup.write_config(batch_size, &lines, "");
    setup
}

/// The snapshot objects of the archive (file target): position → content.
fn snapshot_objects(setup: &Setup) -> Vec<(u64, String)> {
    sorted_files(&setup.archive.join("s/snapshots"))
        .into_iter()
        .map(|path| {
            let hex = path.file_name().unwrap().to_str().unwrap().to_string();
            (u64::from_str_radix(&hex, 16).unwrap(), fs::read_to_string(&path).unwrap())
        })
        .collect()
}

fn positions(snapshots: &[(u64, String)]) -> Vec<u64> {
    snapshots.iter().map(|(p, _)| *p).collect()
}

/// Wait until `done`, failing after `limit` with `what`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn archived(setup: &Setup) -> Option<u64> {
    fs::read_to_string(setup.state.join("s/archived_position")).ok()?.trim().parse().ok()
}

fn status_json(setup: &Setup) -> String {
    setup.ok(&["status", "--json"])
}

/// `walship snapshot -s s` against the setup.
fn snapshot(setup: &Setup) -> Output {
    setup.walship(&["snapshot", "-s", "s"])
}

/// The schedule follows the rule over passes of growing data: the first
/// snapshot at 0, a stream far behind jumps to the latest boundary, none
/// until the committed position reaches the next one; each holds the
/// application's state at its position.
#[test]
fn the_schedule_follows_the_rule_and_jumps() {
    let setup = kv_setup("snap-schedule", 10, 50, "", "");
    let mut expected = Vec::new();
    for (last, snapshots) in
        [(34, vec![0]), (120, vec![0, 100]), (149, vec![0, 100]), (150, vec![0, 100, 150])]
    {
        kvapp::write_segments(&setup.src, 0..=last);
        let out = setup.ok(&["run", "--once"]);
        if snapshots.len() > expected.len() {
            let taken = snapshots[snapshots.len() - 1];
            assert!(out.contains(&format!("at position {taken} succeeded")), "{out}");
        }
        expected = snapshots;
        let objects = snapshot_objects(&setup);
        assert_eq!(positions(&objects), expected, "after positions up to {last}");
    }
    for (position, content) in snapshot_objects(&setup) {
        assert_eq!(content, state_text(&state_at(position)), "snapshot at {position}");
    }
    let list = setup.ok(&["list"]);
    assert!(list.contains("stream s: 3 snapshots"), "{list}");
    assert!(list.contains("s/snapshots/0000000000000096"), "{list}");
    let verified = setup.ok(&["verify", "--deep"]);
    assert!(verified.contains("and 3 snapshots checked (deep)"), "{verified}");
    let status = status_json(&setup);
    assert!(status.contains("\"snapshot_position\":150,\"next_snapshot\":200"), "{status}");
    assert!(status.contains("\"state\":\"succeeded\""), "{status}");
    assert!(fs::read_dir(setup.state.join("s/snapshot")).unwrap().next().is_none(), "outputs removed");
}

/// With no daemon, `walship snapshot` runs the job itself at the archived
/// position and prints its outcome with its id; ids grow across runs; asking
/// again with nothing new archived is refused (exit 1).
#[test]
fn with_no_daemon_the_command_runs_the_job_itself() {
    let setup = kv_setup("snap-here", 10, 1000, "", "");
    kvapp::write_segments(&setup.src, 0..=25);
    let nothing = snapshot(&setup);
    assert_eq!(nothing.status.code(), Some(1), "{}", stderr(&nothing));
    assert!(stderr(&nothing).contains("nothing is archived yet"), "{}", stderr(&nothing));
    setup.ok(&["run", "--once"]); // archives 0..=25 and takes the snapshot due at 0
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains("snapshot job 2 of stream s at position 25 succeeded"), "{out}");
    assert_eq!(snapshot_objects(&setup), [(0, state_text(&state_at(0))), (25, state_text(&state_at(25)))]);
    let again = snapshot(&setup);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already at position 25"), "{}", stderr(&again));
    assert_eq!(fs::read_to_string(setup.state.join(".walship-jobs")).unwrap(), "2\n", "refusals take no id");
}

/// Through a running daemon: the command asks over the control socket,
/// waits and prints the job's outcome; status shows the last job; a stale
/// socket file from a killed daemon is replaced at the next start.
#[test]
fn through_a_running_daemon_and_after_a_killed_one() {
    let setup = kv_setup("snap-daemon", 10, 1000, "", "");
    kvapp::write_segments(&setup.src, 0..=30);
    let mut daemon = Daemon::start(&setup.config, false);
    wait_for("archiving", Duration::from_secs(20), || archived(&setup) == Some(30));
    // The snapshot due at 0 runs first.
    wait_for("the scheduled job", Duration::from_secs(20), || {
        status_json(&setup).contains("\"state\":\"succeeded\"")
    });
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains("at position 30 succeeded"), "{out}");
    let socket = setup.state.join(".walship-control");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    let status = setup.ok(&["status"]);
    assert!(status.contains("last snapshot:      30"), "{status}");
    assert!(status.contains("at position 30 succeeded"), "{status}");
    let pid = daemon.id();
    daemon.kill();
    assert!(socket.exists(), "a killed daemon leaves its socket file");
    // No daemon now: the stale socket is no daemon, the job runs here.
    kvapp::write_segments(&setup.src, 31..=40);
    setup.ok(&["run", "--once"]);
    let here = setup.ok(&["snapshot", "-s", "s"]);
    assert!(here.contains("at position 40 succeeded"), "{here}");
    let daemon = Daemon::start(&setup.config, false);
    wait_for("the socket served again", Duration::from_secs(20), || {
        fs::read_to_string(setup.state.join(".walship-control.lock")).is_ok_and(|p| p != pid.to_string())
    });
    kvapp::write_segments(&setup.src, 41..=50);
    wait_for("archiving", Duration::from_secs(20), || archived(&setup) == Some(50));
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains("at position 50 succeeded"), "{out}");
    let stopped = daemon.terminate();
    assert!(stopped.status.success());
    assert!(!socket.exists(), "removed at a clean stop");
    setup.ok(&["verify", "--deep"]);
}

/// A second request while a job runs is refused naming the running job;
/// a slow snapshot never stalls shipping: segments arriving meanwhile are
/// archived and the lag stays small.
#[test]
fn a_slow_job_refuses_a_second_and_shipping_goes_on() {
    let setup = kv_setup("snap-slow", 5, 1000, "sleep 4;", "");
    kvapp::write_segments(&setup.src, 0..=10);
    let daemon = Daemon::start(&setup.config, false);
    wait_for("archiving", Duration::from_secs(20), || archived(&setup) == Some(10));
    // The scheduled job at 0 starts; it sleeps 4 s.
    wait_for("the scheduled job", Duration::from_secs(20), || {
        status_json(&setup).contains("\"state\":\"running\"")
    });
    let second = snapshot(&setup);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let message = stderr(&second);
    assert!(message.contains("snapshot job 1 is running"), "{message}");
    // Segments keep arriving while it runs: every one is archived promptly.
    for batch in 1..=6u64 {
        let (first, last) = (batch * 10 + 1, batch * 10 + 10);
        kvapp::write_segments(&setup.src, first..=last);
        wait_for("shipping during the job", Duration::from_secs(3), || archived(&setup) == Some(last));
    }
    assert!(status_json(&setup).contains("\"state\":\"running\""), "the job was still running meanwhile");
    wait_for("the job's end", Duration::from_secs(20), || {
        status_json(&setup).contains("\"state\":\"succeeded\"")
    });
    assert_eq!(snapshot_objects(&setup), [(0, state_text(&state_at(0)))]);
    drop(daemon);
}

/// Failing, timing-out and output-less commands fail the job with a message
/// saying which (exit 1); the timeout kills the command's whole process
/// group, a grandchild included; nothing is left in the snapshot directory.
#[test]
fn failing_commands_fail_the_job_and_say_why() {
    let setup = Setup::new("snap-fail", 10, "");
    kvapp::write_segments(&setup.src, 0..=9);
    let grandchild = setup.dir.path.join("grandchild.pid");
    let cases = [
        ("echo disk on fire >&2; exit 3", "exit status 3"),
        ("true", "wrote no file"),
        (
            &*format!("sh -c 'echo $$ > {}; exec sleep 60' & sleep 60", grandchild.display()),
            "snapshot_timeout (1s)",
        ),
    ];
    for (command, expected) in cases {
        let lines = format!("seal = spool\nsnapshot_command = {command}\nsnapshot_timeout = 1s");
        setup.write_config(10, &lines, "");
        setup.ok(&["run", "--once"]);
        let started = Instant::now();
        let out = snapshot(&setup);
        assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{command}: {}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(
            fs::read_dir(setup.state.join("s/snapshot")).unwrap().next().is_none(),
            "{command}: output left"
        );
    }
    assert!(stderr(&snapshot(&setup)).contains("was killed with its whole process group"));
    let pid: i32 = fs::read_to_string(&grandchild).unwrap().trim().parse().unwrap();
    wait_for("the grandchild's end", Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists());
    let json = status_json(&setup);
    assert!(json.contains("\"state\":\"failed\""), "{json}");
    assert!(snapshot_objects(&setup).is_empty());
    // The stderr of the command went to the log, prefixed with the stream.
    setup.write_config(10, "seal = spool\nsnapshot_command = echo disk on fire >&2; exit 3", "");
    let log = stderr(&snapshot(&setup));
    assert!(log.contains("stream s: snapshot job") && log.contains(": disk on fire"), "{log}");
}

/// More than 100 snapshots recorded refuses new jobs with a message that
/// says to prune (exit 1); no job id is spent.
#[test]
fn more_than_a_hundred_snapshots_refuse_new_jobs() {
    let setup = Setup::new("snap-hundred", 1, "");
    setup.write_config(1, "seal = spool\nsnapshot_command = : > \"$WALSHIP_OUTPUT\"", "");
    for position in 0..=100 {
        kvapp::write_segments(&setup.src, position..=position);
        setup.ok(&["run", "--once"]);
        setup.ok(&["snapshot", "-s", "s"]);
    }
    assert_eq!(snapshot_objects(&setup).len(), 101);
    kvapp::write_segments(&setup.src, 101..=101);
    setup.ok(&["run", "--once"]);
    let refused = snapshot(&setup);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message.contains("101 snapshots are recorded") && message.contains("walship prune -s s"),
        "{message}"
    );
    assert_eq!(fs::read_to_string(setup.state.join(".walship-jobs")).unwrap(), "101\n");
}

/// The control socket refuses a client running as another user: with its
/// 0600 mode the connection itself is denied, and were the mode wider, the
/// daemon's SO_PEERCRED check refuses it. (Needs root to run a client as
/// another user; skipped otherwise: the rule itself is a unit test.)
#[test]
fn the_control_socket_refuses_other_users() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: not root, cannot run a client as another user");
        return;
    }
    let setup = kv_setup("snap-peer", 10, 1000, "", "");
    kvapp::write_segments(&setup.src, 0..=10);
    // The other user must be able to read the config and reach the state dir.
    use std::os::unix::fs::PermissionsExt;
    for dir in [&setup.dir.path, &setup.state] {
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let daemon = Daemon::start(&setup.config, false);
    wait_for("archiving", Duration::from_secs(20), || archived(&setup) == Some(10));
    let as_nobody = || -> Output {
        use std::os::unix::process::CommandExt;
        Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(["snapshot", "-s", "s", "-c", setup.config.to_str().unwrap()])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let denied = as_nobody();
    assert_eq!(denied.status.code(), Some(1), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("control socket") && stderr(&denied).contains("ermission denied"),
        "{}",
        stderr(&denied)
    );
    let socket = setup.state.join(".walship-control");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("only uid 0 and root may use"), "{}", stderr(&refused));
    assert!(snapshot_objects(&setup).len() <= 1, "no job for the refused client");
    drop(daemon);
}
