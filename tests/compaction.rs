//! Compaction of the remote manifest through the built binary: the record
//! objects left on the target, a wiped node rebuilding the same journal
//! from compacted objects, and SIGKILL at every compaction step.

use std::fs;
use std::time::{Duration, Instant};

use crate::util::*;

/// The record object names under the archive, without the stream prefix.
fn record_names(setup: &Setup) -> Vec<String> {
    setup.record_objects().iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect()
}

fn range(first: u64, last: u64, tag: &str) -> String {
    format!("{first:016x}-{last:016x}.{tag}")
}

/// `list -s s` succeeds and shows `batches` batches ending at `end`.
fn assert_lists(setup: &Setup, batches: u64, end: u64) {
    let out = setup.ok(&["list", "-s", "s"]);
    let summary = out.lines().next().unwrap_or_default();
    assert!(summary.contains(&format!("{batches} batches")), "{out}");
    assert!(summary.contains(&format!("..{end}")), "{out}");
}

#[test]
fn compaction_folds_records_and_a_wiped_node_rebuilds_the_same_journal() {
    let setup = Setup::new("compaction-rebuild", 1, "seal = spool\nmanifest_compaction = 3");
    setup.write_segments(1..=40, 300);
    setup.ok(&["run", "--once"]);
    // 40 records, 3 per level-1 object, 3 level-1 objects per level-2 one.
    let mut expected: Vec<String> = (0..4).map(|i| range(1 + 9 * i, 9 + 9 * i, "l2")).collect();
    expected.extend([range(37, 39, "l1"), range(40, 40, "batch")]);
    assert_eq!(record_names(&setup), expected);
    assert_lists(&setup, 40, 40);
    let journal = fs::read_to_string(setup.journal()).unwrap();

    // A node whose state directory is gone reads the compacted objects.
    fs::remove_dir_all(&setup.state).unwrap();
    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(stderr(&out).contains("adopted 40 records"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(setup.journal()).unwrap(), journal, "the rebuilt journal differs");
    assert_eq!(record_names(&setup), expected, "a rebuild changed the records");

    // …and carries on compacting from where the target says it stands.
    setup.write_segments(41..=46, 300);
    setup.ok(&["run", "--once"]);
    let mut expected: Vec<String> = (0..5).map(|i| range(1 + 9 * i, 9 + 9 * i, "l2")).collect();
    expected.push(range(46, 46, "batch"));
    assert_eq!(record_names(&setup), expected);
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
}

/// The daemon is killed with SIGKILL right after each change compaction
/// makes on the target (an object written, objects deleted), and at
/// moments in between; after every kill a reader sees the whole manifest,
/// and in the end compaction completes with nothing left behind.
#[test]
fn sigkill_at_every_compaction_step_leaves_a_complete_manifest() {
    let setup = Setup::new("compaction-sigkill", 1, "seal = spool\nmanifest_compaction = 0");
    setup.write_segments(1..=60, 200);
    setup.ok(&["run", "--once"]);
    setup.write_config(1, "seal = spool\nmanifest_compaction = 2", "");
    let journal = fs::read_to_string(setup.journal()).unwrap();

    let mut kills = 0;
    let mut previous = record_names(&setup);
    for round in 0..200u64 {
        let daemon = Daemon::start(&setup.config, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut changed = false;
        while Instant::now() < deadline {
            if record_names(&setup) != previous {
                changed = true;
                break;
            }
            std::hint::spin_loop();
        }
        if round % 3 == 2 {
            std::thread::sleep(Duration::from_millis(round % 7));
        }
        daemon.kill();
        kills += 1;
        assert_lists(&setup, 60, 60);
        let now = record_names(&setup);
        if !changed && now == previous {
            break;
        }
        previous = now;
    }
    assert!(kills > 10, "only {kills} kills: compaction finished too soon to test anything");
    setup.ok(&["run", "--once"]);
    let expected: Vec<String> = (0..15).map(|i| range(1 + 4 * i, 4 + 4 * i, "l2")).collect();
    assert_eq!(record_names(&setup), expected, "after {kills} kills");
    assert_eq!(fs::read_to_string(setup.journal()).unwrap(), journal);
    fs::remove_dir_all(&setup.state).unwrap();
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
}

/// The state directory follows its archive to a new address even when the
/// journal's last record was folded by compaction: the binding check finds
/// the compacted object that holds it.
#[test]
fn a_moved_archive_whose_last_record_was_folded_is_still_recognised() {
    let setup = Setup::new("compaction-moved", 1, "seal = spool\nmanifest_compaction = 3");
    setup.write_segments(1..=9, 100);
    setup.ok(&["run", "--once"]);
    assert_eq!(record_names(&setup), [range(1, 9, "l2")], "every record folded");
    let moved = setup.dir.path.join("moved-archive");
    fs::rename(&setup.archive, &moved).unwrap();
    let text = fs::read_to_string(&setup.config)
        .unwrap()
        .replace(&setup.archive.display().to_string(), &moved.display().to_string());
    fs::write(&setup.config, text).unwrap();
    setup.write_segments(10..=10, 100);

    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(
        stderr(&out).contains(&format!("{}, with the journal's last record", range(1, 9, "l2"))),
        "{}",
        stderr(&out)
    );
    let binding = fs::read_to_string(setup.state.join("s").join("target")).unwrap();
    assert_eq!(binding.trim_end(), format!("file://{}", moved.display()));
}

/// On each S3 server: compaction folds the record objects (PutObject, then
/// DeleteObjects), a wiped node rebuilds the same journal from them, and
/// `verify --deep` finds every record in a sound object.
#[test]
fn compaction_on_s3_folds_and_a_wiped_node_rebuilds_the_same_journal() {
    for env in crate::s3::S3Env::all() {
        let extra = "seal = spool\nmanifest_compaction = 3";
        let prefix = crate::s3::unique_prefix("compaction");
        let setup = Setup::new("s3-compaction", 1, extra);
        let setup = Setup { target_lines: env.target_lines(&setup.dir.path, &prefix), ..setup };
        setup.write_config(1, extra, "");
        setup.write_segments(1..=20, 200);
        setup.ok(&["run", "--once"]);
        let query = format!("?list-type=2&prefix={}", format!("{prefix}/s/manifest/").replace('/', "%2F"));
        let listing = env.curl("GET", &query, &[]).stdout;
        let listing = String::from_utf8_lossy(&listing);
        let keys: Vec<&str> = listing
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(|key| key.rsplit('/').next().unwrap_or(key))
            .collect();
        // 20 records, 3 per level-1 object, 3 of those per level-2 one.
        let expected =
            [range(1, 9, "l2"), range(10, 18, "l2"), range(19, 19, "batch"), range(20, 20, "batch")];
        assert_eq!(keys, expected, "{}: {listing}", env.name);
        let journal = fs::read_to_string(setup.journal()).unwrap();
        fs::remove_dir_all(&setup.state).unwrap();
        let out = setup.walship(&["run", "--once"]);
        assert_success(&out, &["run", "--once"]);
        assert_eq!(fs::read_to_string(setup.journal()).unwrap(), journal, "{}", env.name);
        let verified = setup.ok(&["verify", "--deep"]);
        assert!(verified.contains("20 batches checked (deep)"), "{}: {verified}", env.name);
    }
}

/// Compacted objects are uploads too: a `0` bandwidth window holds them,
/// and a reload that drops the schedule lets compaction go on.
#[test]
fn compaction_waits_while_uploads_are_held() {
    let setup = Setup::new("compaction-held", 1, "seal = spool\nmanifest_compaction = 0");
    setup.write_segments(1..=9, 100);
    setup.ok(&["run", "--once"]);
    let now = walship::calendar::LocalTime::now().minute_of_day;
    let opens = (now + 3) % (24 * 60);
    let text = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    let mut windows = [(now, "0"), (opens, "off")];
    windows.sort();
    let schedule: Vec<String> = windows.iter().map(|(m, rate)| format!("{}={rate}", text(*m))).collect();
    let extra = "seal = spool\nmanifest_compaction = 3";
    setup.write_config(1, extra, &format!("bandwidth_schedule = {}", schedule.join(" ")));
    let mut daemon = Daemon::start(&setup.config, false);
    let held = format!("waiting for the {} window", text(opens));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stdout(&setup.walship(&["status"])).contains(&held) {
        assert!(Instant::now() < deadline, "the status never said the uploads are held");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(record_names(&setup).len(), 9, "compacted while uploads were held");
    setup.write_config(1, extra, "");
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while record_names(&setup) != [range(1, 9, "l2")] {
        assert!(Instant::now() < deadline, "no compaction after the reload: {:?}", record_names(&setup));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.terminate().status.success());
}

/// Regression: `verify --deep` while a daemon compacts read a record
/// object the listing named but a compaction step had just folded (and
/// deleted), and reported it CORRUPT ("not found"). Now a record object
/// gone when read makes verify list again. A target that folds the first
/// record object into a level-1 object of the same range the first time
/// it is read stands in for the daemon.
#[test]
fn verify_deep_lists_again_when_a_record_is_folded_while_it_reads() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use walship::target::{ObjectInfo, Target, TargetError, Upload};

    struct FoldingOnRead {
        inner: walship::target::fs::FileTarget,
        folded: AtomicBool,
    }
    impl Target for FoldingOnRead {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn place(&self) -> String {
            self.inner.place()
        }
        fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
            self.inner.put(key, body)
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
            self.inner.head(key)
        }
        fn get(&self, key: &str, range: Option<(u64, u64)>, out: &mut dyn Write) -> Result<u64, TargetError> {
            if key.ends_with(".batch") && !self.folded.swap(true, Ordering::SeqCst) {
                let mut text = Vec::new();
                self.inner.get(key, None, &mut text)?;
                let compacted = key.replace(".batch", ".l1");
                let pieces = [&text[..]];
                self.inner
                    .put(&compacted, &Upload::pieces(&pieces, text.len() as u64, crc32fast::hash(&text)))?;
                self.inner.delete(&[key.to_string()])?;
            }
            self.inner.get(key, range, out)
        }
        fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError> {
            self.inner.list(prefix, start_after)
        }
        fn delete(&self, keys: &[String]) -> Result<(), TargetError> {
            self.inner.delete(keys)
        }
        fn check(&self) -> Result<(), TargetError> {
            self.inner.check()
        }
    }

    let setup = Setup::new("compaction-verify-race", 1, "seal = spool\nmanifest_compaction = 0");
    setup.write_segments(1..=4, 300);
    setup.ok(&["run", "--once"]);
    let config = walship::config::load(&setup.config).unwrap();
    let stream = &config.streams[0];
    let rules = walship::manifest::StreamRules::new("s", &stream.naming);
    let target = FoldingOnRead {
        inner: walship::target::fs::FileTarget::new(setup.archive.clone()),
        folded: AtomicBool::new(false),
    };
    let mut said = Vec::new();
    let problems =
        walship::catalog::verify::verify_stream(&setup.state, &target, &rules, true, &mut |line| {
            said.push(line)
        });
    assert!(target.folded.load(Ordering::SeqCst), "nothing was folded while verify read");
    assert_eq!(problems, 0, "{said:#?}");
    assert!(record_names(&setup).contains(&range(1, 1, "l1")), "{:?}", record_names(&setup));
}
