//! Metered links through the built binary: the bandwidth limit and its
//! schedule (and a reload that changes them in place), the data budget
//! across a restart, and the bounded spool (`backlog_limit`).
//!
//! Times are asserted as lower bounds (N bytes at a limit cannot take less
//! than N / limit, whatever the load), with generous upper bounds only to
//! catch a stall.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

const KIB: usize = 1024;

/// Write spool segments `positions` of exactly `len` bytes each, each by
/// rename, as a spool's files arrive.
fn write_sized(setup: &Setup, positions: std::ops::RangeInclusive<u64>, len: usize) {
    for p in positions {
        let mut bytes = segment_bytes(p, len);
        bytes.resize(len, p as u8);
        let temp = setup.dir.path.join("incoming");
        fs::write(&temp, bytes).unwrap();
        fs::rename(&temp, setup.src.join(segment_name(p))).unwrap();
    }
}

/// Poll `condition` every 50 ms until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn present(dir: &Path, positions: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    positions.filter(|p| dir.join(segment_name(*p)).exists()).collect()
}

/// 1 MiB at 256 KiB/s cannot go in less than about 4 s (less the 0.1 s
/// burst): the limit holds where the bytes are written.
#[test]
fn bandwidth_limit_holds_uploads_to_the_rate() {
    let setup = Setup::with_global("bw-limit", 1, "seal = spool", "bandwidth_limit = 256KiB/s");
    write_sized(&setup, 0..=3, 256 * KIB);
    let started = Instant::now();
    setup.ok(&["run", "--once"]);
    let elapsed = started.elapsed();
    assert_eq!(setup.batch_objects().len(), 4);
    assert!(elapsed >= Duration::from_millis(3_500), "1 MiB at 256 KiB/s took only {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "stalled: {elapsed:?}");
}

/// With both settings (as in SPEC's example), `bandwidth_limit` caps every
/// window: an `off` window all day still sends at the limit.
#[test]
fn bandwidth_limit_caps_an_off_window_of_the_schedule() {
    let global = "bandwidth_limit = 256KiB/s\nbandwidth_schedule = 00:00=off";
    let setup = Setup::with_global("bw-capped", 1, "seal = spool", global);
    write_sized(&setup, 0..=3, 256 * KIB);
    let started = Instant::now();
    setup.ok(&["run", "--once"]);
    let elapsed = started.elapsed();
    assert_eq!(setup.batch_objects().len(), 4);
    assert!(elapsed >= Duration::from_millis(3_500), "1 MiB under a 256 KiB/s cap took only {elapsed:?}");
}

/// `restore_bandwidth_limit` paces what a restore downloads.
#[test]
fn restore_bandwidth_limit_paces_restores() {
    let setup = Setup::with_global("bw-restore", 1, "seal = spool", "restore_bandwidth_limit = 256KiB/s");
    write_sized(&setup, 0..=3, 256 * KIB);
    setup.ok(&["run", "--once"]);
    let restored = setup.dir.path.join("restored");
    let started = Instant::now();
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(3_500), "1 MiB at 256 KiB/s restored in {elapsed:?}");
    assert_same_files(&setup.src, &restored);
}

/// A SIGHUP that only lifts the limit applies to the upload in flight,
/// restarting no stream: 2 MiB at 64 KiB/s would take 32 s.
#[test]
fn a_reload_changes_the_limit_in_place() {
    let setup = Setup::with_global("bw-reload", 1, "seal = spool", "bandwidth_limit = 64KiB/s");
    write_sized(&setup, 0..=1, 1024 * KIB);
    let log = setup.dir.path.join("daemon.log");
    let daemon_log = fs::File::create(&log).unwrap();
    let mut daemon = Daemon::start_with_stderr(&setup.config, daemon_log);
    std::thread::sleep(Duration::from_millis(1_000));
    let started = Instant::now();
    setup.write_config(1, "seal = spool", "");
    daemon.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(20), "both batches at full speed", || setup.batch_objects().len() == 2);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let out = daemon.terminate();
    assert!(out.status.success());
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("the new bandwidth and data budget settings apply now"), "{log}");
    assert!(!log.contains("stopped for the reload") && !log.contains("every stream restarted"), "{log}");
}

/// A stop does not wait for a slow upload to trickle out: at 1 KiB/s a
/// 1 MiB segment would take 17 minutes.
#[test]
fn a_stop_interrupts_a_slow_upload() {
    let setup = Setup::with_global("bw-stop", 1, "seal = spool", "bandwidth_limit = 1KiB/s");
    write_sized(&setup, 0..=0, 1024 * KIB);
    let daemon = Daemon::start(&setup.config, false);
    std::thread::sleep(Duration::from_millis(1_000));
    let started = Instant::now();
    let out = daemon.terminate();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(5), "the stop took {:?}", started.elapsed());
    assert!(setup.batch_objects().is_empty());
    // Nothing half-written is left: the next start uploads it whole.
    setup.write_config(1, "seal = spool", "");
    setup.ok(&["run", "--once"]);
    assert_eq!(setup.batch_objects().len(), 1);
}

/// A `0` window holds uploads, quietly, and `status` says which window
/// opens them; a reload that drops the schedule lets them go.
#[test]
fn a_zero_window_holds_uploads_and_status_says_why() {
    let now = walship::calendar::LocalTime::now().minute_of_day;
    let opens = (now + 3) % (24 * 60);
    let text = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    let mut windows = [(now, "0"), (opens, "off")];
    windows.sort();
    let schedule: Vec<String> = windows.iter().map(|(m, rate)| format!("{}={rate}", text(*m))).collect();
    let global = format!("bandwidth_schedule = {}", schedule.join(" "));
    let setup = Setup::with_global("bw-window", 1, "seal = spool", &global);
    write_sized(&setup, 0..=2, KIB);
    let daemon = Daemon::start(&setup.config, false);
    let expected = format!("waiting for the {} window", text(opens));
    wait_until(Duration::from_secs(10), "the status to say why", || {
        stdout(&setup.walship(&["status"])).contains(&expected)
    });
    assert!(setup.batch_objects().is_empty());
    let json = stdout(&setup.walship(&["status", "--json"]));
    assert!(json.contains(&format!("\"held\":\"{expected}")), "{json}");
    let mut daemon = daemon;
    setup.write_config(1, "seal = spool", "");
    daemon.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the uploads after the reload", || setup.batch_objects().len() == 3);
    assert!(daemon.terminate().status.success());
}

/// The schedule follows the local clock of the daemon's time zone (`TZ`,
/// through libc): a `0` window at the current time of UTC+14 holds uploads
/// there, though in UTC that time is 14 hours away.
#[test]
fn the_schedule_follows_the_local_time_zone() {
    let utc_minute = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        / 60
        % 1440) as u16;
    let local = (utc_minute + 14 * 60) % 1440;
    let opens = (local + 3) % 1440;
    let text = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    let mut windows = [(local, "0"), (opens, "off")];
    windows.sort();
    let schedule: Vec<String> = windows.iter().map(|(m, rate)| format!("{}={rate}", text(*m))).collect();
    let global = format!("bandwidth_schedule = {}", schedule.join(" "));
    let setup = Setup::with_global("bw-tz", 1, "seal = spool", &global);
    write_sized(&setup, 0..=1, KIB);
    let daemon = Daemon::start_with_env(&setup.config, std::process::Stdio::null(), &[("TZ", "<+14>-14")]);
    let expected = format!("waiting for the {} window", text(opens));
    wait_until(Duration::from_secs(10), "the status to say why", || {
        stdout(&setup.walship(&["status"])).contains(&expected)
    });
    assert!(setup.batch_objects().is_empty());
    assert!(daemon.terminate().status.success());
}

/// The data budget stops new uploads once spent, says until when, and
/// still counts after a restart (the period change is the ledger's unit
/// test, with its dates chosen).
#[test]
fn the_data_budget_holds_uploads_across_a_restart() {
    let setup = Setup::with_global("budget", 1, "seal = spool", "");
    let metrics = setup.dir.path.join("walship.prom");
    let global = format!("data_budget = 2KiB/day\nmetrics_file = {}", metrics.display());
    setup.write_config(1, "seal = spool", &global);
    write_sized(&setup, 0..=5, KIB);
    let tomorrow = walship::calendar::LocalTime::now().date.add_days(1);
    let expected = format!("uploads resume on {tomorrow}");
    let daemon = Daemon::start(&setup.config, false);
    wait_until(Duration::from_secs(10), "the budget to be spent", || {
        stdout(&setup.walship(&["status"])).contains(&expected)
    });
    let archived = setup.batch_objects().len();
    // Two 1 KiB batches and their records pass 2 KiB; a third never starts.
    assert_eq!(archived, 2, "{:?}", setup.batch_objects());
    assert!(daemon.terminate().status.success());
    let page = fs::read_to_string(&metrics).unwrap();
    assert!(page.contains("walship_budget_bytes 2048"), "{page}");
    let spent: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("walship_budget_spent_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("spent bytes in the metrics");
    assert!((2048..4096).contains(&spent), "{page}");
    // After a restart the count holds: still nothing more goes.
    let daemon = Daemon::start(&setup.config, false);
    wait_until(Duration::from_secs(10), "the budget to hold again", || {
        stdout(&setup.walship(&["status"])).contains(&expected)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(setup.batch_objects().len(), archived);
    assert!(daemon.terminate().status.success());
}

/// Regression: `run --once` opens the data budget before any stream has
/// made the state directory; the first run must not fail on it.
#[test]
fn a_first_run_once_with_a_data_budget_makes_its_count() {
    let setup = Setup::with_global("budget-first", 1, "seal = spool", "data_budget = 1GiB/month");
    assert!(!setup.state.exists());
    write_sized(&setup, 0..=1, KIB);
    setup.ok(&["run", "--once"]);
    assert_eq!(setup.batch_objects().len(), 2);
    let ledger = fs::read_to_string(setup.state.join(".data-budget")).unwrap();
    assert!(
        ledger.lines().any(|l| l.strip_prefix("spent=").and_then(|v| v.parse::<u64>().ok()) >= Some(2048)),
        "{ledger}"
    );
}

/// SIGKILL in the middle of an upload: the budget's count on disk already
/// covers every byte written (here, what the file target's temp file holds).
#[test]
fn a_crash_never_leaves_uploaded_bytes_uncounted() {
    let global = "bandwidth_limit = 256KiB/s\ndata_budget = 1GiB/day";
    let setup = Setup::with_global("budget-crash", 1, "seal = spool", global);
    write_sized(&setup, 0..=0, 4096 * KIB);
    let daemon = Daemon::start(&setup.config, false);
    let batches = setup.archive.join("s/batches");
    let temp_len = || -> u64 {
        fs::read_dir(&batches)
            .map_or(0, |entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
    };
    wait_until(Duration::from_secs(10), "part of the upload written", || temp_len() > 256 * KIB as u64);
    daemon.kill();
    let written = temp_len();
    let ledger = fs::read_to_string(setup.state.join(".data-budget")).unwrap();
    let counted: u64 = ledger
        .lines()
        .find_map(|l| l.strip_prefix("spent="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count in {ledger}"));
    assert!(counted >= written, "{written} bytes written, {counted} counted:\n{ledger}");
    // Ahead by at most the reserve (1 % of the budget) and a chunk.
    assert!(counted <= written + (1 << 30) / 100 + 64 * KIB as u64, "{written} written, {counted} counted");
}

/// With the target out of reach, a spool over its backlog_limit loses its
/// oldest waiting segments, exactly as many as needed; the range becomes a
/// gap "backlog limit" once the target is back; a stream without the
/// limit (seal = next) keeps every file.
#[test]
fn backlog_limit_drops_exactly_the_oldest_and_records_a_gap() {
    let setup = Setup::new("backlog", 1, "seal = spool\nbacklog_limit = 3KiB");
    let other = setup.dir.path.join("other");
    fs::create_dir_all(&other).unwrap();
    let extra = format!(
        "seal = spool\nbacklog_limit = 3KiB\n\n[stream n]\ndir = {}\npattern = seg-{{seq}}.log\nbatch_size = 1\n",
        other.display()
    );
    setup.write_config(1, &extra, "");
    for p in 0..=9 {
        fs::write(other.join(segment_name(p)), vec![b'n'; KIB]).unwrap();
    }
    // Segment 0 is archived while the target is there.
    write_sized(&setup, 0..=0, KIB);
    setup.ok(&["run", "--once"]);
    let down = setup.dir.path.join("archive-away");
    fs::rename(&setup.archive, &down).unwrap();
    write_sized(&setup, 1..=10, KIB);
    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // 10 KiB waiting, 3 KiB allowed: 1 and 2 (the next batches, which may
    // be stored already) stay, then the oldest go: 3..9; 10 stays. 0,
    // archived (and kept: on_archived = keep), is not waiting.
    assert_eq!(present(&setup.src, 0..=10), vec![0, 1, 2, 10], "{}", stderr(&out));
    assert!(stderr(&out).contains("exceeded backlog_limit"), "{}", stderr(&out));
    assert_eq!(present(&other, 0..=9).len(), 10, "a stream without backlog_limit lost files");
    // The target is back: the gap is recorded with its reason, the rest archived.
    fs::rename(&down, &setup.archive).unwrap();
    setup.ok(&["run", "--once"]);
    let list = setup.ok(&["list", "-s", "s"]);
    assert!(list.contains("backlog limit: 7 segments (7.0 KiB)"), "{list}");
    assert_eq!(setup.batch_objects().len(), 4, "{list}"); // 0, 1, 2, 10
    assert!(!setup.state.join("s/backlog-dropped").exists());
    let restored = setup.dir.path.join("restored");
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert!(!out.status.success(), "restore went past the gap");
    assert!(stderr(&out).contains("backlog limit"), "{}", stderr(&out));
}

/// The daemon applies the limit to an open stream whose uploads fail,
/// records the gap when the target is back, and then takes a snapshot at
/// the newest position (snapshots are configured).
#[test]
fn the_daemon_bounds_the_spool_while_the_link_is_down() {
    let lines = "seal = spool\nbacklog_limit = 2KiB\nsnapshot_command = echo state > \"$WALSHIP_OUTPUT\"";
    let setup = Setup::new("backlog-daemon", 1, lines);
    write_sized(&setup, 0..=0, KIB);
    let log = setup.dir.path.join("daemon.log");
    let daemon = Daemon::start_with_stderr(&setup.config, fs::File::create(&log).unwrap());
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    let archived = || fs::read_to_string(setup.state.join("s/archived_position")).unwrap_or_default();
    wait_until(Duration::from_secs(10), "segment 0 committed", || archived() == "0\n");
    let down = setup.dir.path.join("archive-away");
    fs::rename(&setup.archive, &down).unwrap();
    write_sized(&setup, 1..=5, KIB);
    // 1 and 2 are the next batches (kept), then the oldest go until 2 KiB fit.
    wait_until(Duration::from_secs(10), "the oldest dropped", || present(&setup.src, 1..=5) == vec![1, 2]);
    fs::rename(&down, &setup.archive).unwrap();
    let started = Instant::now();
    while setup.batch_objects().len() != 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "the rest not archived:\n{}", log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The gap after them is committed once batch 2's record is: wait for it
    // (the batch objects are stored before their records).
    wait_until(Duration::from_secs(10), "the gap recorded after the batches", || {
        setup.ok(&["list", "-s", "s"]).contains("backlog limit: 3 segments")
    });
    let snapshots = setup.archive.join("s/snapshots");
    wait_until(Duration::from_secs(10), "a snapshot after the gap", || !sorted_files(&snapshots).is_empty());
    let names: Vec<String> = sorted_files(&snapshots)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{:016x}", 5)], "the snapshot is at the newest position");
    assert!(daemon.terminate().status.success());
}

/// The limit holds S3 uploads too, multipart parts in parallel included
/// (they share the bucket): 11 MiB at 1 MiB/s through the fault proxy
/// (faulting nothing) cannot take less than about 11 s. Skips without
/// Garage (run it with `scripts/test metered`).
#[test]
fn bandwidth_limit_holds_s3_multipart_uploads() {
    let Some(env) = crate::s3::S3Env::get() else { return };
    let proxy = crate::faultproxy::FaultProxy::start(&env.endpoint);
    let prefix = crate::s3::unique_prefix("bw-s3");
    let mut setup = Setup::new("bw-s3", 1, "seal = spool");
    let credentials = env.credentials_file(&setup.dir.path, &env.secret);
    setup.target_lines = format!(
        "target = s3://{}/{prefix}\nendpoint = {}\nregion = {}\ncredentials_file = {}\n\
         part_size = 5MiB\nparallel_uploads = 2\nbandwidth_limit = 1MiB/s",
        env.bucket,
        proxy.endpoint(),
        env.region,
        credentials.display()
    );
    setup.write_config(1, "seal = spool", "");
    // Two objects of 5.5 MiB: multipart, a 5 MiB and a 0.5 MiB part at once.
    write_sized(&setup, 0..=1, 5632 * KIB);
    let started = Instant::now();
    setup.ok(&["run", "--once"]);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(10_500), "11 MiB at 1 MiB/s took only {elapsed:?}");
    assert!(proxy.requests() >= 6, "not through the proxy: {} requests", proxy.requests());
    setup.ok(&["verify", "--deep"]);
}
