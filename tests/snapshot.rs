//! Snapshots: the schedule (with its jump), jobs through the daemon's
//! control socket and with no daemon, refusals, failing commands, a slow
//! snapshot while segments keep arriving, a daemon killed mid-upload, and
//! the socket refusing other users. The application is `util::kvapp`.

use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::s3::{S3Env, unique_prefix};
use crate::util::kvapp::{self, snapshot_command, state_at, state_text};
use crate::util::*;

/// Stream lines for snapshots every `interval` positions with `command`.
fn snapshot_lines(interval: u64, command: &str, more: &str) -> String {
    format!("seal = spool\nsnapshot_interval = {interval}\nsnapshot_command = {command}\n{more}")
}

/// A setup whose stream takes kvapp snapshots, on the file target or on
/// `s3`.
fn kv_setup_on(
    s3: Option<&S3Env>,
    name: &str,
    batch_size: u64,
    interval: u64,
    prefix: &str,
    more: &str,
) -> Setup {
    let mut setup = Setup::new(name, batch_size, "");
    if let Some(env) = s3 {
        setup.target_lines = env.target_lines(&setup.dir.path, &unique_prefix(name));
    }
    let lines = snapshot_lines(interval, &snapshot_command(prefix, &setup.src), more);
    setup.write_config(batch_size, &lines, "");
    setup
}

/// [`kv_setup_on`] the file target.
fn kv_setup(name: &str, batch_size: u64, interval: u64, prefix: &str, more: &str) -> Setup {
    kv_setup_on(None, name, batch_size, interval, prefix, more)
}

/// The snapshots `walship list` shows: (position, CRC32), whatever the target.
fn listed_snapshots(setup: &Setup) -> Vec<(u64, u32)> {
    setup
        .ok(&["list"])
        .lines()
        .filter(|line| line.contains("/snapshots/"))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words[0].parse().unwrap(), u32::from_str_radix(words[words.len() - 2], 16).unwrap())
        })
        .collect()
}

/// The CRC32 of kvapp's snapshot at `position`.
fn kv_crc(position: u64) -> u32 {
    crc32fast::hash(state_text(&state_at(position)).as_bytes())
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

/// Wait until `done`, failing after `limit` with `what`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet).
fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
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
fn schedule_follows_the_rule_and_jumps(setup: &Setup) {
    let mut expected: Vec<u64> = Vec::new();
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
        let listed: Vec<u64> = listed_snapshots(setup).iter().map(|(p, _)| *p).collect();
        assert_eq!(listed, expected, "after positions up to {last}");
    }
    for (position, crc) in listed_snapshots(setup) {
        assert_eq!(crc, kv_crc(position), "the snapshot at {position} holds the state at {position}");
    }
    let list = setup.ok(&["list"]);
    assert!(list.contains("stream s: 3 snapshots"), "{list}");
    assert!(list.contains("s/snapshots/0000000000000096"), "{list}");
    let verified = setup.ok(&["verify", "--deep"]);
    assert!(verified.contains("and 3 snapshots checked (deep)"), "{verified}");
    let status = status_json(setup);
    assert!(status.contains("\"snapshot_position\":150,\"next_snapshot\":200"), "{status}");
    assert!(status.contains("\"state\":\"succeeded\""), "{status}");
    assert!(fs::read_dir(setup.state.join("s/snapshot")).unwrap().next().is_none(), "outputs removed");
}

#[test]
fn the_schedule_follows_the_rule_and_jumps() {
    let setup = kv_setup("snap-schedule", 10, 50, "", "");
    schedule_follows_the_rule_and_jumps(&setup);
    for (position, content) in snapshot_objects(&setup) {
        assert_eq!(content, state_text(&state_at(position)), "snapshot at {position}");
    }
    // The application rebuilds its state from what a restore writes.
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    let (state, snapshot, _) = kvapp::rebuild(&restored);
    assert_eq!((state, snapshot), (state_at(150), Some(150)));
    // A wiped state directory adopts the snapshot records from the archive:
    // no snapshot is taken again, the next one is still at 200.
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.ok(&["run", "--once"]);
    assert!(!out.contains("snapshot job"), "{out}");
    assert!(status_json(&setup).contains("\"snapshot_position\":150,\"next_snapshot\":200"));
    kvapp::write_segments(&setup.src, 151..=200);
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("at position 200 succeeded"), "{out}");
}

#[test]
fn the_schedule_follows_the_rule_and_jumps_on_garage() {
    let Some(env) = S3Env::get() else { return };
    schedule_follows_the_rule_and_jumps(&kv_setup_on(Some(&env), "snap-schedule-s3", 10, 50, "", ""));
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
    // Usage errors exit 2: an unknown stream, a stream with no command.
    let unknown = setup.walship(&["snapshot", "-s", "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    setup.write_config(10, "seal = spool", "");
    let no_command = snapshot(&setup);
    assert_eq!(no_command.status.code(), Some(2), "{}", stderr(&no_command));
    assert!(stderr(&no_command).contains("has no snapshot_command"), "{}", stderr(&no_command));
}

/// Through a running daemon: the command asks over the control socket,
/// waits and prints the job's outcome; status shows the last job; a stale
/// socket file from a killed daemon is replaced at the next start.
fn through_a_running_daemon_and_after_a_killed_one(setup: &Setup) {
    kvapp::write_segments(&setup.src, 0..=30);
    let mut daemon = Daemon::start(&setup.config, false);
    wait_for("archiving", Duration::from_secs(20), || archived(setup) == Some(30));
    // The snapshot due at 0 runs first.
    wait_for("the scheduled job", Duration::from_secs(20), || {
        status_json(setup).contains("\"state\":\"succeeded\"")
    });
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains("snapshot job 2 of stream s at position 30 succeeded"), "{out}");
    let socket = setup.state.join(".walship-control");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    let status = setup.ok(&["status"]);
    assert!(status.contains("last snapshot:      30"), "{status}");
    assert!(status.contains("at position 30 succeeded"), "{status}");
    // A daemon holds the stream's lock but its socket is gone: said plainly.
    let aside = setup.state.join("socket-aside");
    fs::rename(&socket, &aside).unwrap();
    let unreachable = snapshot(setup);
    assert_eq!(unreachable.status.code(), Some(1));
    let message = stderr(&unreachable);
    assert!(
        message.contains("holds the stream's lock") && message.contains("no control socket"),
        "{message}"
    );
    fs::rename(&aside, &socket).unwrap();
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
    wait_for("archiving", Duration::from_secs(20), || archived(setup) == Some(50));
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains("at position 50 succeeded"), "{out}");
    let stopped = daemon.terminate();
    assert!(stopped.status.success());
    assert!(!socket.exists(), "removed at a clean stop");
    setup.ok(&["verify", "--deep"]);
    let listed = listed_snapshots(setup);
    assert_eq!(listed.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0, 30, 40, 50]);
    assert!(listed.iter().all(|(p, crc)| *crc == kv_crc(*p)), "{listed:?}");
}

#[test]
fn through_a_running_daemon_and_after_a_killed_one_on_file() {
    through_a_running_daemon_and_after_a_killed_one(&kv_setup("snap-daemon", 10, 1000, "", ""));
}

#[test]
fn through_a_running_daemon_and_after_a_killed_one_on_garage() {
    let Some(env) = S3Env::get() else { return };
    through_a_running_daemon_and_after_a_killed_one(&kv_setup_on(
        Some(&env),
        "snap-daemon-s3",
        10,
        1000,
        "",
        "",
    ));
}

/// SIGKILL of the daemon while a large snapshot (multipart on S3) is being
/// stored, at several moments, then a restart: the leftover output is
/// removed, the snapshot is stored (or found stored: the same bytes are not
/// sent again) and recorded once, and `verify --deep` passes.
fn sigkill_during_a_snapshot_upload(setup: &Setup) {
    kvapp::write_segments(&setup.src, 0..=10);
    let output_dir = setup.state.join("s/snapshot");
    let full = 24u64 << 20;
    let mut landed = 0;
    for delay_ms in [0, 10, 30, 60, 100] {
        let daemon = Daemon::start(&setup.config, false);
        // The command wrote its whole output: the upload is under way.
        let deadline = Instant::now() + Duration::from_secs(30);
        let written = loop {
            let done = fs::read_dir(&output_dir)
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() == full));
            if done || Instant::now() > deadline {
                break done;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        daemon.kill();
        landed += usize::from(written);
    }
    assert!(landed > 0, "no kill landed after a command finished; the test proved nothing");
    let daemon = Daemon::start(&setup.config, false);
    // With nothing snapshotted and position 10 committed, the rule jumps
    // straight to 10.
    wait_for("the snapshot recorded", Duration::from_secs(60), || {
        status_json(setup).contains("\"snapshot_position\":10")
    });
    assert!(daemon.terminate().status.success());
    assert!(fs::read_dir(&output_dir).unwrap().next().is_none(), "no output left");
    let verified = setup.ok(&["verify", "--deep"]);
    assert!(verified.contains("and 1 snapshot checked (deep)"), "{verified}");
    let expected_crc = crc32fast::hash(&vec![b'a'; full as usize]);
    assert_eq!(listed_snapshots(setup), [(10, expected_crc)]);
}

/// A 24 MiB snapshot, the same bytes every time (so a stored one heals).
const BIG_SNAPSHOT: &str = "head -c 25165824 /dev/zero | tr '\\000' a > \"$WALSHIP_OUTPUT\"";

#[test]
fn sigkill_during_a_snapshot_upload_on_file() {
    let setup = Setup::new("snap-kill", 10, "");
    setup.write_config(10, &snapshot_lines(10, BIG_SNAPSHOT, ""), "");
    sigkill_during_a_snapshot_upload(&setup);
}

#[test]
fn sigkill_during_a_snapshot_upload_on_garage() {
    let Some(env) = S3Env::get() else { return };
    let mut setup = Setup::new("snap-kill-s3", 10, "");
    setup.target_lines = env.target_lines(&setup.dir.path, &unique_prefix("snap-kill"));
    setup.write_config(10, &snapshot_lines(10, BIG_SNAPSHOT, ""), "");
    sigkill_during_a_snapshot_upload(&setup);
}

/// A second request while a job runs is refused naming the running job;
/// a slow snapshot never stalls shipping: segments arriving meanwhile are
/// archived and the lag stays small.
fn a_slow_job_refuses_a_second_and_shipping_goes_on(setup: &Setup) {
    kvapp::write_segments(&setup.src, 0..=10);
    let daemon = Daemon::start(&setup.config, false);
    wait_for("archiving", Duration::from_secs(20), || archived(setup) == Some(10));
    // The scheduled job at 0 starts; it sleeps 12 s.
    wait_for("the scheduled job", Duration::from_secs(20), || {
        status_json(setup).contains("\"state\":\"running\"")
    });
    let second = snapshot(setup);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    let message = stderr(&second);
    assert!(message.contains("snapshot job 1 is running"), "{message}");
    // Segments keep arriving while it runs: each batch is archived within
    // 2.5 s (no lag builds up), all while the job still runs.
    for batch in 1..=4u64 {
        let (first, last) = (batch * 10 + 1, batch * 10 + 10);
        kvapp::write_segments(&setup.src, first..=last);
        wait_for("shipping during the job", Duration::from_millis(2500), || archived(setup) == Some(last));
        let status = status_json(setup);
        assert!(
            status.contains("\"state\":\"running\"") && status.contains("\"lag_segments\":0"),
            "{status}"
        );
    }
    wait_for("the job's end", Duration::from_secs(20), || {
        status_json(setup).contains("\"state\":\"succeeded\"")
    });
    assert_eq!(listed_snapshots(setup), [(0, kv_crc(0))]);
    drop(daemon);
}

#[test]
fn a_slow_job_refuses_a_second_and_shipping_goes_on_on_file() {
    a_slow_job_refuses_a_second_and_shipping_goes_on(&kv_setup("snap-slow", 5, 1000, "sleep 12;", ""));
}

#[test]
fn a_slow_job_refuses_a_second_and_shipping_goes_on_on_garage() {
    let Some(env) = S3Env::get() else { return };
    let setup = kv_setup_on(Some(&env), "snap-slow-s3", 5, 1000, "sleep 12;", "");
    a_slow_job_refuses_a_second_and_shipping_goes_on(&setup);
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
        ("true", "left no regular file"),
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
    wait_for("the grandchild's end", Duration::from_secs(5), || process_gone(pid));
    let json = status_json(&setup);
    assert!(json.contains("\"state\":\"failed\""), "{json}");
    assert!(snapshot_objects(&setup).is_empty());
    // The stderr of the command went to the log, prefixed with the stream.
    setup.write_config(10, "seal = spool\nsnapshot_command = echo disk on fire >&2; exit 3", "");
    let log = stderr(&snapshot(&setup));
    assert!(log.contains("stream s: snapshot job") && log.contains(": disk on fire"), "{log}");
    // A scheduled job that fails in `run --once` makes it exit 1.
    let lines = "seal = spool\nsnapshot_interval = 10\nsnapshot_command = exit 4";
    setup.write_config(10, lines, "");
    let once = setup.walship(&["run", "--once"]);
    assert_eq!(once.status.code(), Some(1), "{}", stderr(&once));
    assert!(
        stdout(&once).contains("at position 0 failed: the snapshot command failed with exit status 4"),
        "{}",
        stdout(&once)
    );
}

/// More than 100 snapshots recorded refuses new jobs with a message that
/// says to prune (exit 1); no job id is spent.
#[test]
fn more_than_a_hundred_snapshots_refuse_new_jobs() {
    let setup = Setup::new("snap-hundred", 1, "");
    // keep_snapshots = 100: `run --once` applies retention, which keeps
    // 100; the 101st is taken after the last pass.
    let lines = "seal = spool\nkeep_snapshots = 100\nsnapshot_command = : > \"$WALSHIP_OUTPUT\"";
    setup.write_config(1, lines, "");
    for position in 0..=100 {
        kvapp::write_segments(&setup.src, position..=position);
        setup.ok(&["run", "--once"]);
        setup.ok(&["snapshot", "-s", "s"]);
    }
    assert_eq!(snapshot_objects(&setup).len(), 101);
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

/// A scheduled job that fails is tried again after the stream's backoff,
/// while shipping goes on; metrics count both results.
#[test]
fn a_failed_scheduled_job_is_tried_again() {
    let setup = Setup::new("snap-retry", 10, "");
    let marker = setup.dir.path.join("failed-once");
    let prefix =
        format!("test -e {0} || {{ touch {0}; echo first try fails >&2; exit 1; }};", marker.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let lines = snapshot_lines(100, &snapshot_command(&prefix, &setup.src), "");
    setup.write_config(10, &lines, &format!("metrics_listen = 127.0.0.1:{port}"));
    kvapp::write_segments(&setup.src, 0..=10);
    let daemon = Daemon::start(&setup.config, false);
    wait_for("the retried job", Duration::from_secs(30), || {
        status_json(&setup).contains("\"state\":\"succeeded\"")
    });
    assert!(marker.exists(), "the first try ran and failed");
    let json = status_json(&setup);
    assert!(json.contains("\"id\":2,\"position\":0,\"state\":\"succeeded\""), "{json}");
    let page = {
        use std::io::{Read, Write};
        let mut connection = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        connection.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut page = String::new();
        connection.read_to_string(&mut page).unwrap();
        page
    };
    for line in [
        "walship_snapshot_jobs_total{stream=\"s\",result=\"failed\"} 1",
        "walship_snapshot_jobs_total{stream=\"s\",result=\"succeeded\"} 1",
        "walship_snapshot_position{stream=\"s\"} 0",
        "walship_snapshot_duration_seconds_count{stream=\"s\"} 2",
    ] {
        assert!(page.lines().any(|l| l == line), "missing {line:?}:\n{page}");
    }
    drop(daemon);
    assert_eq!(snapshot_objects(&setup), [(0, state_text(&state_at(0)))]);
}

/// A state_dir too deep for a Unix socket's path: the daemon says it cannot
/// serve its control socket and archives all the same.
#[test]
fn a_state_dir_too_deep_for_a_socket_leaves_the_daemon_archiving() {
    let mut setup = Setup::new("snap-deep", 10, "seal = spool");
    setup.state = setup.dir.path.join("d".repeat(120));
    setup.write_config(10, "seal = spool", "");
    setup.write_segments(0..=10, 100);
    let daemon = Daemon::start(&setup.config, true);
    wait_for("archiving", Duration::from_secs(20), || archived(&setup) == Some(10));
    let out = daemon.terminate();
    assert!(out.status.success());
    let log = stderr(&out);
    assert!(log.contains(".walship-control") && log.contains("cannot reach this daemon"), "{log}");
}

/// Two daemons with different streams on one state_dir: the second serves
/// no control socket (it says so); asking it for its stream says plainly
/// that its daemon cannot be reached; once it stops, the job runs here.
#[test]
fn a_second_daemon_on_the_same_state_dir_serves_no_socket() {
    let setup = kv_setup("snap-two", 10, 1000, "", "");
    kvapp::write_segments(&setup.src, 0..=10);
    let other_src = setup.dir.path.join("other");
    fs::create_dir_all(&other_src).unwrap();
    kvapp::write_segments(&other_src, 0..=10);
    let other_config = setup.dir.path.join("other.conf");
    let text = fs::read_to_string(&setup.config).unwrap().replace("[stream s]", "[stream t]");
    fs::write(&other_config, text.replace(setup.src.to_str().unwrap(), other_src.to_str().unwrap())).unwrap();
    let first = Daemon::start(&setup.config, false);
    wait_for("the first daemon's socket", Duration::from_secs(20), || {
        setup.state.join(".walship-control").exists() && archived(&setup) == Some(10)
    });
    let second = Daemon::start(&other_config, true);
    wait_for("the second daemon archiving", Duration::from_secs(20), || {
        fs::read_to_string(setup.state.join("t/archived_position")).is_ok_and(|p| p == "10\n")
    });
    let ask_t = || walship(&["snapshot", "-s", "t", "-c", other_config.to_str().unwrap()]);
    let unreachable = ask_t();
    assert_eq!(unreachable.status.code(), Some(1), "{}", stderr(&unreachable));
    let message = stderr(&unreachable);
    assert!(
        message.contains("runs no stream named t") && message.contains("must be stopped first"),
        "{message}"
    );
    let log = stderr(&second.terminate());
    assert!(log.contains("served by walship PID"), "{log}");
    let here = ask_t();
    assert!(stdout(&here).contains("of stream t at position 10 succeeded"), "{}", stderr(&here));
    drop(first);
}

/// Ctrl-C (SIGINT) on `walship snapshot` running the job itself kills the
/// command's whole process group and fails the job (exit 1); no output is
/// left behind.
#[test]
fn interrupting_the_command_kills_its_group() {
    let setup = Setup::new("snap-interrupt", 10, "");
    let grandchild = setup.dir.path.join("grandchild.pid");
    let command = format!("sh -c 'echo $$ > {}; exec sleep 60' & sleep 60", grandchild.display());
    setup.write_config(10, &format!("seal = spool\nsnapshot_command = {command}"), "");
    kvapp::write_segments(&setup.src, 0..=10);
    setup.ok(&["run", "--once"]);
    let child = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["snapshot", "-s", "s", "-c", setup.config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the grandchild", Duration::from_secs(10), || {
        fs::read_to_string(&grandchild).is_ok_and(|t| t.ends_with('\n'))
    });
    send_signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("walship stopped; the snapshot command was killed"), "{}", stderr(&out));
    let pid: i32 = fs::read_to_string(&grandchild).unwrap().trim().parse().unwrap();
    wait_for("the grandchild's end", Duration::from_secs(5), || process_gone(pid));
    assert!(fs::read_dir(setup.state.join("s/snapshot")).unwrap().next().is_none());
}

/// SIGTERM while a job runs: the daemon kills the command and stops within
/// a bounded time, exit 0; status then shows the job as cut short.
#[test]
fn sigterm_during_a_job_stops_the_daemon_promptly() {
    let setup = kv_setup("snap-term", 10, 1000, "sleep 60;", "");
    kvapp::write_segments(&setup.src, 0..=10);
    let daemon = Daemon::start(&setup.config, false);
    wait_for("the scheduled job", Duration::from_secs(20), || {
        status_json(&setup).contains("\"state\":\"running\"")
    });
    let started = Instant::now();
    let out = daemon.terminate();
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let status = status_json(&setup);
    assert!(status.contains("\"state\":\"failed\"") && status.contains("walship stopped"), "{status}");
    assert!(fs::read_dir(setup.state.join("s/snapshot")).unwrap().next().is_none());
}

/// The embedding API: `Archiver::snapshot_now` reports the job's start and
/// end; an unknown stream gets `None`; dropping the archiver stops it.
#[test]
fn an_embedding_program_takes_a_snapshot_now() {
    use walship::snapshot::{JobEvent, JobState};
    let setup = kv_setup("snap-library", 10, 0, "", "");
    // snapshot_interval = 0: no scheduled snapshot, only those asked for.
    kvapp::write_segments(&setup.src, 0..=10);
    let config = walship::config::load(&setup.config).unwrap();
    let archiver = walship::Archiver::start(&config).unwrap();
    wait_for("archiving", Duration::from_secs(20), || archiver.status()[0].archived_position == Some(10));
    assert!(archiver.snapshot_now("nope").is_none());
    let events: Vec<JobEvent> = archiver.snapshot_now("s").unwrap().iter().collect();
    match &events[..] {
        [JobEvent::Started(started), JobEvent::Ended(ended)] => {
            assert_eq!((started.state.clone(), started.position), (JobState::Running, 10));
            assert_eq!((ended.state.clone(), ended.id), (JobState::Succeeded, started.id));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(archiver.status()[0].snapshots.position, Some(10));
    drop(archiver);
    assert!(!setup.state.join(".walship-control").exists(), "dropping stops it, socket and all");
    assert_eq!(snapshot_objects(&setup), [(10, state_text(&state_at(10)))]);
}

/// SIGKILL of the daemon while a command runs with a child in the
/// background: the shell dies with walship, and the child, which would run
/// on, is found and killed at the next start; nothing is left in the
/// snapshot directory.
#[test]
fn a_killed_daemon_leaves_no_command_running_after_its_restart() {
    let setup = Setup::new("snap-orphan", 10, "");
    let grandchild = setup.dir.path.join("grandchild.pid");
    let command = format!("sh -c 'echo $$ > {}; exec sleep 600' & sleep 600", grandchild.display());
    setup.write_config(10, &snapshot_lines(1000, &command, ""), "");
    kvapp::write_segments(&setup.src, 0..=10);
    let daemon = Daemon::start(&setup.config, false);
    wait_for("the grandchild", Duration::from_secs(20), || {
        fs::read_to_string(&grandchild).is_ok_and(|t| t.ends_with('\n'))
    });
    daemon.kill();
    let pid: i32 = fs::read_to_string(&grandchild).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!process_gone(pid), "the background child outlives a SIGKILL of walship by itself");
    fs::remove_file(&grandchild).unwrap();
    let daemon = Daemon::start(&setup.config, true);
    wait_for("the old child killed", Duration::from_secs(10), || process_gone(pid));
    // The restarted daemon's own job runs (and will be killed at stop).
    wait_for("the new job", Duration::from_secs(20), || grandchild.exists());
    let log = stderr(&daemon.terminate());
    assert!(log.contains("left running by an interrupted snapshot job"), "{log}");
    assert!(fs::read_dir(setup.state.join("s/snapshot")).unwrap().next().is_none());
}
