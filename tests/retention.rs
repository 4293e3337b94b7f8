//! Restore to a position from the newest snapshot at or before it, and
//! retention: what `prune` deletes (and prints, dry run or not), the
//! daemon pruning by itself, a prune killed half-way, forged prune marks,
//! and the error for a position retention removed. On the file target and,
//! when it is set up, on Garage.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::faultproxy::{Fault, FaultProxy, Kind, Rule};
use crate::s3::{S3Env, unique_prefix};
use crate::util::kvapp::{self, rebuild, state_at};
use crate::util::*;

/// Stream lines for the key=value application: spool, snapshots taken on
/// request (`walship snapshot`) by its snapshot script, `keep` kept.
fn kv_lines(setup: &Setup, keep: u32) -> String {
    let command = kvapp::snapshot_command("", &setup.src);
    format!("seal = spool\nkeep_snapshots = {keep}\nsnapshot_command = {command}")
}

/// Archive the application's segments up to `last` (`run --once`), then
/// take a snapshot at that position with a real job (`walship snapshot`).
fn archive_and_snapshot(setup: &Setup, positions: std::ops::RangeInclusive<u64>) {
    let last = *positions.end();
    kvapp::write_segments(&setup.src, positions);
    setup.ok(&["run", "--once"]);
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains(&format!("at position {last} succeeded")), "{out}");
}

/// A stream of the key=value application (batch_size 10) archived up to
/// position 60, with snapshots at 20 and 40, on the target `target_lines`
/// names (file:// when `None`), nothing pruned yet: built keeping 7
/// snapshots (`run --once` applies retention), then configured to keep
/// `keep`.
fn kv_archive(name: &str, target_lines: Option<String>, keep: u32) -> Setup {
    let mut setup = Setup::new(name, 10, "");
    if let Some(lines) = target_lines {
        setup.target_lines = lines;
    }
    setup.write_config(10, &kv_lines(&setup, 7), "");
    archive_and_snapshot(&setup, 0..=20);
    archive_and_snapshot(&setup, 21..=40);
    kvapp::write_segments(&setup.src, 41..=60);
    setup.ok(&["run", "--once"]);
    setup.write_config(10, &kv_lines(&setup, keep), "");
    setup
}

/// Restore up to `position` (`None`: the newest) into a fresh directory;
/// the state rebuilt from it, the snapshot used and the segments restored.
fn restore_state(
    setup: &Setup,
    position: Option<u64>,
) -> (std::collections::BTreeMap<String, String>, Option<u64>, Vec<u64>) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = setup.dir.path.join(format!("restored-{n}"));
    let mut args = vec!["restore", "-s", "s", "--to", dir.to_str().unwrap()];
    let position_text = position.map(|p| p.to_string());
    if let Some(p) = &position_text {
        args.extend(["--position", p]);
    }
    let out = setup.walship(&args);
    assert_success(&out, &args);
    assert!(!stderr(&out).contains('\r'), "no progress line off a terminal: {}", stderr(&out));
    rebuild(&dir)
}

/// Restores at a snapshot, between snapshots, at the newest position and
/// before the first snapshot give exactly the application's state there,
/// from the newest snapshot at or before it plus the segments after it.
fn restores_reproduce_the_state(setup: &Setup) {
    // (position asked, position restored, snapshot used, segments restored)
    type Case = (Option<u64>, u64, Option<u64>, Vec<u64>);
    let cases: [Case; 5] = [
        (Some(20), 20, Some(20), vec![]),
        (Some(33), 33, Some(20), (21..=33).collect()),
        (Some(40), 40, Some(40), vec![]),
        (None, 60, Some(40), (41..=60).collect()),
        (Some(13), 13, None, (0..=13).collect()),
    ];
    for (asked, position, snapshot, segments) in cases {
        let (state, used, restored) = restore_state(setup, asked);
        assert_eq!(used, snapshot, "restore to {asked:?}: snapshot used");
        assert_eq!(restored, segments, "restore to {asked:?}: segments restored");
        assert_eq!(state, state_at(position), "restore to {asked:?}: the application's state");
    }
}

/// With compressed batches (zstd frames) too, and a snapshot inside a
/// batch: a restore starting inside a batch reads its frames from the
/// first one it wants.
#[test]
fn restores_from_snapshots_inside_compressed_batches() {
    let setup = Setup::new("restore-zstd", 10, "");
    let lines = format!("{}\ncompression = zstd", kv_lines(&setup, 7));
    setup.write_config(10, &lines, "");
    archive_and_snapshot(&setup, 0..=15);
    archive_and_snapshot(&setup, 16..=37);
    kvapp::write_segments(&setup.src, 38..=60);
    setup.ok(&["run", "--once"]);
    // A snapshot inside the compressed batch 41..50 (jobs take theirs at
    // batch ends).
    store_snapshot(&setup, 45, &kvapp::state_text(&state_at(45)));
    let cases = [
        (Some(15), Some(15), vec![]),
        (Some(18), Some(15), (16..=18).collect()),
        (Some(39), Some(37), vec![38, 39]),
        (Some(47), Some(45), vec![46, 47]),
        (None, Some(45), (46..=60).collect()),
    ];
    for (asked, snapshot, segments) in cases {
        let restored = restore_state(&setup, asked);
        assert_eq!(restored, (state_at(asked.unwrap_or(60)), snapshot, segments), "restore to {asked:?}");
    }
    setup.ok(&["verify", "--deep"]);
}

#[test]
fn restores_at_several_positions_reproduce_the_application_state() {
    let setup = kv_archive("restore-positions", None, 7);
    restores_reproduce_the_state(&setup);
    let listed = setup.ok(&["list"]);
    assert!(!listed.contains("pruned"), "{listed}");
    setup.ok(&["verify", "--deep"]);
    // A snapshot inside a batch (41..50): only the segments after it are
    // restored from that batch.
    store_snapshot(&setup, 45, &kvapp::state_text(&state_at(45)));
    assert_eq!(restore_state(&setup, Some(47)), (state_at(47), Some(45), vec![46, 47]));
    assert_eq!(restore_state(&setup, None), (state_at(60), Some(45), (46..=60).collect()));
}

/// Object keys under the file target's archive, relative to it.
fn stored_keys(setup: &Setup, under: &str) -> Vec<String> {
    sorted_files(&setup.archive.join(under))
        .iter()
        .map(|p| format!("{under}/{}", p.file_name().unwrap().to_str().unwrap()))
        .collect()
}

/// The object lines of `prune`'s output (after its header).
fn object_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("  ")).collect()
}

/// Retention with keep_snapshots = 2 and snapshots at 20, 40 and 60:
/// `prune --dry-run` and `prune` print the same objects, the snapshot at
/// 20 and the batches up to 40 go and nothing else; restores from 40 on
/// still reproduce the state, earlier positions get an error naming 40.
fn prune_removes_exactly_what_it_should(setup: &Setup, file_target: bool) {
    setup.ok(&["snapshot", "-s", "s"]);
    let dry = setup.ok(&["prune", "--dry-run"]);
    assert!(dry.starts_with("stream s: would delete 6 objects"), "{dry}");
    assert!(dry.contains("restorable from position 40 on, positions before 41 pruned"), "{dry}");
    let batch = |a: u64, b: u64| format!("s/batches/{a:016x}-{b:016x}");
    let doomed: Vec<String> = [(0, 0), (1, 10), (11, 20)]
        .iter()
        .map(|&(a, b)| batch(a, b))
        .chain(["s/snapshots/0000000000000014".to_string()])
        .chain([(21, 30), (31, 40)].iter().map(|&(a, b)| batch(a, b)))
        .collect();
    let keys: Vec<&str> = object_lines(&dry).iter().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(keys, doomed, "{dry}");
    let before = file_target.then(|| (stored_keys(setup, "s/batches"), stored_keys(setup, "s/snapshots")));

    let real = setup.ok(&["prune"]);
    assert!(real.starts_with("stream s: deleted 6 objects"), "{real}");
    assert_eq!(object_lines(&real), object_lines(&dry), "dry run and real run agree");
    if let Some((batches, snapshots)) = before {
        let gone =
            |all: Vec<String>| -> Vec<String> { all.into_iter().filter(|k| !doomed.contains(k)).collect() };
        assert_eq!(stored_keys(setup, "s/batches"), gone(batches), "exactly the doomed batches went");
        assert_eq!(stored_keys(setup, "s/snapshots"), gone(snapshots), "exactly the doomed snapshot went");
    }
    assert_eq!(setup.ok(&["prune"]), "stream s: nothing to prune (2 snapshots kept, keep_snapshots = 2)\n");

    let verified = setup.ok(&["verify", "--deep"]);
    assert!(!verified.contains("MISSING"), "{verified}");
    let listed = setup.ok(&["list"]);
    assert!(listed.contains("positions before 41 were pruned"), "{listed}");
    for (asked, snapshot) in [(Some(40), Some(40)), (Some(55), Some(40)), (None, Some(60))] {
        let (state, used, _) = restore_state(setup, asked);
        assert_eq!((state, used), (state_at(asked.unwrap_or(60)), snapshot), "restore to {asked:?}");
    }
    let dir = setup.dir.path.join("too-early");
    let out = setup.walship(&["restore", "-s", "s", "--to", dir.to_str().unwrap(), "--position", "39"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("position 39 can no longer be restored")
            && stderr(&out).contains("the oldest position that can still be restored is 40"),
        "{}",
        stderr(&out)
    );
    assert_fetch_of_pruned_segment_names_the_oldest(setup, "journal");
    // The archive alone still says what was pruned: with the state
    // directory wiped, list, verify, fetch and restore read the same, and
    // the next prune has nothing to do.
    fs::remove_dir_all(&setup.state).unwrap();
    assert_eq!(setup.ok(&["list"]), listed);
    setup.ok(&["verify", "--deep"]);
    assert_fetch_of_pruned_segment_names_the_oldest(setup, "archive's records");
    let (state, used, _) = restore_state(setup, Some(55));
    assert_eq!((state, used), (state_at(55), Some(40)));
    assert!(setup.ok(&["prune"]).contains("nothing to prune"));
}

/// `fetch` of a segment retention deleted (positions before 41) exits
/// with the not-found code and names the oldest archived segment, as
/// restore names the oldest restorable position; one still archived is
/// fetched. `from`: where fetch learns it, for messages.
fn assert_fetch_of_pruned_segment_names_the_oldest(setup: &Setup, from: &str) {
    let dest = setup.dir.path.join(format!("fetched-41-from-{}", from.replace([' ', '\''], "-")));
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(30), dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "from the {from}: {}", stderr(&out));
    let expected = format!(
        "segment {} is not in the archive: retention (keep_snapshots) deleted the positions before 41; \
         the oldest archived segment is {} (position 41)",
        segment_name(30),
        segment_name(41)
    );
    assert!(stderr(&out).contains(&expected), "from the {from}: {}", stderr(&out));
    assert!(!dest.exists(), "from the {from}: nothing written");
    setup.ok(&["fetch", "-s", "s", &segment_name(41), dest.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(&dest).unwrap(), kvapp::segment_text(41), "from the {from}");
}

#[test]
fn prune_deletes_exactly_what_no_kept_snapshot_needs_and_dry_run_agrees() {
    let setup = kv_archive("prune-file", None, 2);
    prune_removes_exactly_what_it_should(&setup, true);
    // The stream archives on after the prune, and restores reach the new end.
    kvapp::write_segments(&setup.src, 61..=75);
    setup.ok(&["run", "--once"]);
    assert_eq!(restore_state(&setup, None).0, state_at(75));
}

#[test]
fn restore_and_prune_on_garage() {
    let Some(env) = S3Env::get() else { return };
    let probe = TestDir::new("retention-s3-lines");
    let lines = env.target_lines(&probe.path, &unique_prefix("retention"));
    let setup = kv_archive("retention-s3", Some(lines), 2);
    restores_reproduce_the_state(&setup);
    prune_removes_exactly_what_it_should(&setup, false);
    drop(probe);
}

/// On Garage, a prune killed while its deletions hang (the store stalls
/// every DeleteObjects request, through the fault proxy) after its record
/// is stored: the manifest reads and says what goes, `verify --deep` notes
/// the objects still stored without calling anything missing, and the rerun
/// deletes them; the newest position restores exactly.
#[test]
fn sigkill_during_a_prune_on_garage() {
    let Some(env) = S3Env::get() else { return };
    let proxy = FaultProxy::start(&env.endpoint);
    let probe = TestDir::new("retention-kill-s3-lines");
    let credentials = env.credentials_file(&probe.path, &env.secret);
    let lines = format!(
        "target = s3://{}/{}\nendpoint = {}\nregion = {}\ncredentials_file = {}\nio_timeout = 1s\n",
        env.bucket,
        unique_prefix("retention-kill"),
        proxy.endpoint(),
        env.region,
        credentials.display()
    );
    let setup = kv_archive("retention-kill-s3", Some(lines), 1);
    let deletes_before = proxy.seen(Kind::Delete).len();
    proxy.push(Rule::burst(Fault::Stall, Kind::Delete, 1000));
    let mut child = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["prune", "-c", setup.config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a stalled DeleteObjects", || proxy.seen(Kind::Delete).len() > deletes_before);
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.heal();

    let listed = setup.ok(&["list"]);
    assert!(listed.contains("positions before 41 were pruned"), "{listed}");
    let verified = setup.ok(&["verify", "--deep"]);
    assert_eq!(verified.matches("deleted by a prune that was cut short").count(), 5, "{verified}");
    assert!(!verified.contains("MISSING"), "{verified}");
    setup.ok(&["prune"]);
    let verified = setup.ok(&["verify", "--deep"]);
    assert!(!verified.contains("cut short"), "{verified}");
    assert_eq!(restore_state(&setup, None), (state_at(60), Some(40), (41..=60).collect()));
    drop(probe);
}

/// Nothing is deleted until more snapshots than keep_snapshots exist, and
/// with no snapshot at all every batch stays; `run --once` applies
/// retention at the end of its pass.
#[test]
fn no_prune_without_more_snapshots_than_kept() {
    let setup = Setup::new("prune-nothing", 10, "");
    setup.write_config(10, &kv_lines(&setup, 2), "");
    kvapp::write_segments(&setup.src, 0..=10);
    setup.ok(&["run", "--once"]);
    assert_eq!(setup.ok(&["prune"]), "stream s: nothing to prune (0 snapshots kept, keep_snapshots = 2)\n");
    setup.ok(&["snapshot", "-s", "s"]);
    archive_and_snapshot(&setup, 11..=20);
    assert_eq!(setup.ok(&["prune"]), "stream s: nothing to prune (2 snapshots kept, keep_snapshots = 2)\n");
    assert_eq!(setup.batch_objects().len(), 3);
    archive_and_snapshot(&setup, 21..=30);
    kvapp::write_segments(&setup.src, 31..=35);
    setup.ok(&["run", "--once"]);
    assert_eq!(
        stored_keys(&setup, "s/snapshots"),
        ["s/snapshots/0000000000000014", "s/snapshots/000000000000001e"]
    );
    assert_eq!(setup.batch_objects().len(), 2, "only 21..30 and 31..35 are left");
}

/// The daemon prunes by itself (at its start, then every prune_interval);
/// while it runs, `prune` and `prune --dry-run` go through its control
/// socket (the journal has one writer) and print what they print without
/// it.
#[test]
fn the_daemon_prunes_by_itself_and_prune_goes_through_it() {
    let setup = kv_archive("prune-daemon", None, 1);
    setup.write_config(10, &kv_lines(&setup, 1), "prune_interval = 1h");
    let daemon = serving_daemon(&setup);
    wait_for("the daemon's first prune", || setup.batch_objects().len() == 2);
    assert_eq!(stored_keys(&setup, "s/snapshots"), ["s/snapshots/0000000000000028"]);
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains("at position 60 succeeded"), "{out}");
    let dry = setup.ok(&["prune", "--dry-run"]);
    assert!(dry.starts_with("stream s: would delete 3 objects"), "{dry}");
    let real = setup.ok(&["prune"]);
    assert!(real.starts_with("stream s: deleted 3 objects"), "{real}");
    assert_eq!(object_lines(&real), object_lines(&dry), "through the daemon too, the plans agree");
    assert_eq!(
        (setup.batch_objects().len(), stored_keys(&setup, "s/snapshots")),
        (0, vec!["s/snapshots/000000000000003c".to_string()])
    );
    assert!(daemon.terminate().status.success());

    // Every prune_interval, by itself.
    setup.write_config(10, &kv_lines(&setup, 1), "prune_interval = 1s");
    let daemon = serving_daemon(&setup);
    kvapp::write_segments(&setup.src, 61..=80);
    wait_for("61..80 archived", || {
        fs::read_to_string(setup.state.join("s/archived_position")).is_ok_and(|p| p == "80\n")
    });
    setup.ok(&["snapshot", "-s", "s"]);
    wait_for("the daemon's own prune", || {
        stored_keys(&setup, "s/snapshots") == ["s/snapshots/0000000000000050"]
    });
    assert!(daemon.terminate().status.success());
    assert_eq!(restore_state(&setup, None), (state_at(80), Some(80), vec![]));
    setup.ok(&["verify", "--deep"]);
}

/// Start the daemon and wait until it serves the control socket.
fn serving_daemon(setup: &Setup) -> Daemon {
    let mut daemon = Daemon::start(&setup.config, false);
    let pid = daemon.id().to_string();
    let lock = setup.state.join(".walship-control.lock");
    wait_for("the control socket", || fs::read_to_string(&lock).is_ok_and(|p| p.trim() == pid));
    daemon
}

/// Wait until `done`, failing after 20 s with `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL while `prune` deletes (as soon as its record is stored, at its
/// first deletion, half-way), then a restart: the manifest reads, nothing
/// still needed is lost, the rerun deletes what is left, `verify --deep`
/// passes and the newest position restores exactly.
#[test]
fn sigkill_during_a_prune_leaves_a_consistent_manifest() {
    let mut cut_short = 0;
    for (round, deleted_before_kill) in [0usize, 1, 100].into_iter().enumerate() {
        let setup = Setup::new(&format!("prune-kill-{round}"), 1, "");
        setup.write_config(1, &kv_lines(&setup, 1), "");
        archive_and_snapshot(&setup, 0..=150);
        archive_and_snapshot(&setup, 151..=300);
        let record = setup.archive.join("s/manifest/prune-0000000000000001");
        let batches = setup.archive.join("s/batches");
        let count = || fs::read_dir(&batches).map_or(0, |d| d.count());
        let mut child = Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(["prune", "-c", setup.config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while (!record.exists() || count() + deleted_before_kill > 301) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let left = setup.batch_objects().len();
        eprintln!("round {round}: killed with {left} of 301 batch objects left");
        cut_short += usize::from(left > 0 && left < 301);

        let listed = setup.ok(&["list"]);
        assert!(listed.contains("positions before 301 were pruned"), "round {round}: {listed}");
        let verified = setup.ok(&["verify", "--deep"]);
        assert!(!verified.contains("MISSING"), "{verified}");
        let noted = verified.matches("deleted by a prune that was cut short").count();
        assert_eq!(noted, left, "{verified}");
        if round % 2 == 0 {
            setup.ok(&["prune"]);
        } else {
            // The daemon finishes the prune at its start.
            let daemon = Daemon::start(&setup.config, false);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !setup.batch_objects().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(daemon.terminate().status.success());
        }
        assert_eq!(setup.batch_objects(), Vec::<PathBuf>::new(), "round {round}: {left} were left");
        assert_eq!(stored_keys(&setup, "s/snapshots"), ["s/snapshots/000000000000012c"]);
        setup.ok(&["verify", "--deep"]);
        let (state, snapshot, segments) = restore_state(&setup, None);
        assert_eq!((state, snapshot, segments), (state_at(300), Some(300), vec![]));
        kvapp::write_segments(&setup.src, 301..=305);
        setup.ok(&["run", "--once"]);
        assert_eq!(restore_state(&setup, None).0, state_at(305));
    }
    assert!(cut_short > 0, "no kill landed between the prune record and the last deletion");
}

/// On a terminal, restore and verify draw one updating progress line on
/// stderr (objects, bytes); piped, they print none (see `restore_state`).
/// Runs them under `script`, which gives them a terminal; skipped without it.
#[test]
fn restore_and_verify_show_progress_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping: no `script` to run walship on a terminal");
        return;
    }
    let setup = kv_archive("progress-tty", None, 7);
    let on_terminal = |args: &str| -> String {
        let line = format!("{} {args} -c {}", env!("CARGO_BIN_EXE_walship"), setup.config.display());
        let out = Command::new("script").args(["-qec", &line, "/dev/null"]).output().unwrap();
        assert!(out.status.success(), "{line}: {}", stdout(&out));
        stdout(&out)
    };
    let dir = setup.dir.path.join("tty-restore");
    let restored = on_terminal(&format!("restore -s s --to {} --position 33", dir.display()));
    assert!(restored.contains("\rrestored 3/3 objects, "), "{restored:?}");
    let verified = on_terminal("verify --deep");
    assert!(verified.contains("\rverified 9/9 objects, "), "{verified:?}");
    let piped = setup.walship(&["verify", "--deep"]);
    assert!(!stderr(&piped).contains('\r') && !stdout(&piped).contains('\r'), "{}", stderr(&piped));
}
