//! `naming = postgres` with `push` and `fetch` as archive_command and
//! restore_command, driven as PostgreSQL drives them (no PostgreSQL here:
//! see `postgres.rs` for the real one): idempotence, conflicts, timelines,
//! history files, concurrent pushes, not-found, the prefetch spool.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::*;

/// 1 MiB segments: the smallest PostgreSQL allows, quick to write.
const SEGMENT: usize = 1 << 20;

/// A WAL stream `pg` over a `pg_wal` directory, archiving to a file target.
struct Wal {
    dir: TestDir,
    pg_wal: PathBuf,
    config: PathBuf,
    state: PathBuf,
    archive: PathBuf,
}

impl Wal {
    fn new(name: &str, extra: &str) -> Wal {
        let dir = TestDir::new(name);
        let pg_wal = dir.path.join("pg_wal");
        let (state, archive) = (dir.path.join("state"), dir.path.join("archive"));
        fs::create_dir_all(&pg_wal).unwrap();
        fs::create_dir_all(&archive).unwrap();
        let config = dir.path.join("walship.conf");
        fs::write(
            &config,
            format!(
                "[global]\nstate_dir = {}\ntarget = file://{}\npoll_interval = 10ms\n\n\
                 [stream pg]\ndir = {}\nnaming = postgres\nwal_segment_size = 1MiB\nbatch_size = 16\n{extra}\n",
                state.display(),
                archive.display(),
                pg_wal.display()
            ),
        )
        .unwrap();
        Wal { dir, pg_wal, config, state, archive }
    }

    /// Write the segment `name` with content derived from `seed`.
    fn segment(&self, name: &str, seed: u64) -> PathBuf {
        let mut bytes = segment_bytes(seed + 1, 4096).repeat(SEGMENT / 64);
        bytes.resize(SEGMENT, (seed % 251) as u8);
        let path = self.pg_wal.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["-c", self.config.to_str().unwrap()]);
        walship_within(&all, Duration::from_secs(60))
    }

    fn push(&self, path: &Path) -> Output {
        self.run(&["push", "-s", "pg", path.to_str().unwrap()])
    }

    fn fetch(&self, name: &str, dest: &Path) -> Output {
        self.run(&["fetch", "-s", "pg", name, dest.to_str().unwrap()])
    }
}

fn crc(path: &Path) -> String {
    format!("{:08x}", crc32fast::hash(&fs::read(path).unwrap()))
}

/// PostgreSQL retries archive_command after a crash: the same bytes again
/// succeed; other bytes under an archived name fail, naming both CRCs, and
/// the archived copy stays.
#[test]
fn push_is_idempotent_and_refuses_other_content_naming_both_crcs() {
    let wal = Wal::new("push-idempotent", "");
    let first = wal.segment("000000010000000000000001", 1);
    let out = wal.push(&first);
    assert_success(&out, &["push"]);
    assert!(wal.archive.join("pg/batches").read_dir().unwrap().count() == 1);
    let again = wal.push(&first);
    assert_success(&again, &["push", "again"]);

    let archived_crc = crc(&first);
    wal.segment("000000010000000000000001", 99);
    let local_crc = crc(&first);
    let conflict = wal.push(&first);
    assert_eq!(conflict.status.code(), Some(1), "{}", stderr(&conflict));
    let message = stderr(&conflict);
    assert!(message.contains(&archived_crc) && message.contains(&local_crc), "{message}");
    let dest = wal.dir.path.join("fetched");
    assert_success(&wal.fetch("000000010000000000000001", &dest), &["fetch"]);
    assert_eq!(crc(&dest), archived_crc, "the archived copy is kept");
}

/// Each push is recorded at once (a short batch), in a timeline's
/// positions; a segment of the wrong size, a file outside `dir` and a
/// name that is not PostgreSQL's are refused with the fix.
#[test]
fn push_records_each_segment_and_refuses_what_is_not_one() {
    let wal = Wal::new("push-refusals", "");
    for (i, name) in ["000000010000000000000001", "000000010000000000000002"].iter().enumerate() {
        assert_success(&wal.push(&wal.segment(name, i as u64)), &["push", name]);
    }
    let list = stdout(&wal.run(&["list", "-s", "pg"]));
    assert!(list.contains("000000010000000000000002") || list.contains("1099511627778"), "{list}");

    let short = wal.pg_wal.join("000000010000000000000003");
    fs::write(&short, b"short").unwrap();
    let out = wal.push(&short);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("set wal_segment_size to the cluster's"), "{}", stderr(&out));

    let outside = wal.dir.path.join("000000010000000000000004");
    fs::write(&outside, vec![0u8; SEGMENT]).unwrap();
    let out = wal.push(&outside);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a segment of stream pg"), "{}", stderr(&out));

    for bad in ["00000001000000000000000a", "RECOVERYXLOG", "000000000000000000000005"] {
        let out = wal.push(&wal.segment(bad, 5));
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
    // With 1 MiB segments the last part goes up to FFF; a 16 MiB layout's
    // name beyond it is explained.
    let wal16 = Wal::new("push-size-hint", "");
    let text = fs::read_to_string(&wal16.config).unwrap().replace("1MiB", "16MiB");
    fs::write(&wal16.config, text).unwrap();
    let out = wal16.push(&wal16.segment("000000010000000000000100", 1));
    assert!(stderr(&out).contains("beyond 000000FF"), "{}", stderr(&out));
}

/// A promotion: the new timeline's history file and segments are archived
/// beside the old timeline's, the same segment number on two timelines
/// never collides, `.partial` is accepted and not archived, and fetch
/// returns exactly what was archived under each name.
#[test]
fn timelines_history_files_and_partial_files() {
    let wal = Wal::new("timelines", "");
    let mut pushed = Vec::new();
    for (seed, name) in ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"]
        .into_iter()
        .enumerate()
    {
        let path = wal.segment(name, seed as u64);
        assert_success(&wal.push(&path), &["push", name]);
        pushed.push((name, crc(&path)));
    }
    // The restored cluster branches off at segment 2: its history file
    // first, the old timeline's last segment as .partial, then timeline 2.
    let history = wal.pg_wal.join("00000002.history");
    fs::write(&history, "1\t0/2000060\tbefore 2026-11-30 03:00:00+00\n").unwrap();
    assert_success(&wal.push(&history), &["push", "history"]);
    assert_success(&wal.push(&history), &["push", "history again"]);
    let partial = wal.pg_wal.join("000000010000000000000002.partial");
    fs::write(&partial, vec![7u8; SEGMENT]).unwrap();
    assert_success(&wal.push(&partial), &["push", ".partial"]);
    for (seed, name) in ["000000020000000000000002", "000000020000000000000003"].into_iter().enumerate() {
        let path = wal.segment(name, 10 + seed as u64);
        assert_success(&wal.push(&path), &["push", name]);
        pushed.push((name, crc(&path)));
    }
    let backup = wal.pg_wal.join("000000020000000000000003.00000028.backup");
    fs::write(&backup, "START WAL LOCATION: 0/3000028\n").unwrap();
    assert_success(&wal.push(&backup), &["push", "backup"]);
    fs::write(&history, "2\t0/2000060\tother\n").unwrap();
    let conflict = wal.push(&history);
    assert_eq!(conflict.status.code(), Some(1));
    assert!(stderr(&conflict).contains("CRC32"), "{}", stderr(&conflict));

    // Every name comes back exactly; a same-numbered segment of the other
    // timeline is a different file.
    let out_dir = wal.dir.path.join("restore");
    fs::create_dir(&out_dir).unwrap();
    for (name, crc32) in &pushed {
        let dest = out_dir.join(name);
        assert_success(&wal.fetch(name, &dest), &["fetch", name]);
        assert_eq!(&crc(&dest), crc32, "{name}");
    }
    let dest = out_dir.join("history");
    assert_success(&wal.fetch("00000002.history", &dest), &["fetch history"]);
    assert!(fs::read_to_string(&dest).unwrap().starts_with("1\t0/2000060"));
    assert!(!wal.archive.join("pg/files/000000010000000000000002.partial").exists());
    assert!(wal.archive.join("pg/files/000000020000000000000003.00000028.backup").exists());
    // The timeline switch is one gap in the log, saying so.
    let list = stdout(&wal.run(&["list", "-s", "pg"]));
    assert!(list.contains("timeline 1 ends and timeline 2 begins"), "{list}");
}

/// restore_command is asked for files that do not exist (the next
/// timeline's history, the segment after the end of WAL): exit 3, fast.
#[test]
fn fetch_of_a_missing_name_exits_with_the_not_found_code() {
    let wal = Wal::new("not-found", "");
    assert_success(&wal.push(&wal.segment("000000010000000000000001", 1)), &["push"]);
    let dest = wal.dir.path.join("x");
    for name in ["00000002.history", "000000010000000000000002", "000000020000000000000001"] {
        let started = Instant::now();
        let out = wal.fetch(name, &dest);
        assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        assert!(!dest.exists());
    }
}

/// A recovery on a machine without walship's state (a new state
/// directory): each fetch reads the archive's record objects once, not
/// once to open the manifest and again to look the name up (counted from
/// the file target's debug lines, one per request S3 would take).
#[test]
fn fetch_without_local_state_reads_the_records_once() {
    let wal = Wal::new("fetch-records-once", "prefetch_segments = 0");
    let names: Vec<String> = (1..=4).map(|n| format!("0000000100000000000000{n:02X}")).collect();
    for (seed, name) in names.iter().enumerate() {
        assert_success(&wal.push(&wal.segment(name, seed as u64)), &["push", name]);
    }
    let records = fs::read_dir(wal.archive.join("pg/manifest")).unwrap().count();
    assert!(records >= 4, "one record object per push: {records}");
    let config = fs::read_to_string(&wal.config).unwrap();
    let recovery = wal.dir.path.join("recovery.conf");
    let config = config.replace("[global]\n", "[global]\nlog_level = debug\n");
    let state = wal.state.display().to_string();
    fs::write(&recovery, config.replace(&state, &format!("{state}-recovery"))).unwrap();
    let dest = wal.dir.path.join("fetched");
    let out = walship_within(
        &["fetch", "-s", "pg", &names[1], dest.to_str().unwrap(), "-c", recovery.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_success(&out, &["fetch without local state"]);
    assert_eq!(crc(&dest), crc(&wal.pg_wal.join(&names[1])));
    let gets = stderr(&out).lines().filter(|l| l.contains("file target: GET pg/manifest/")).count();
    assert_eq!(gets, records, "GETs of record objects:\n{}", stderr(&out));
}

/// Several archive_commands at once (no daemon): every push exits 0 once
/// its file is recorded, and the log holds each segment exactly once.
#[test]
fn concurrent_pushes_without_a_daemon_lose_and_duplicate_nothing() {
    let wal = Wal::new("concurrent-push", "prefetch_segments = 0");
    let (names, paths) = push_eight_at_once(&wal, "concurrent push");
    assert_every_segment_recorded_once(&wal, &names, &paths);
}

/// The local journal holds each segment once; fetch returns each.
fn assert_every_segment_recorded_once(wal: &Wal, names: &[String], paths: &[PathBuf]) {
    let journal = fs::read_to_string(wal.state.join("pg/manifest")).unwrap();
    for name in names {
        assert_eq!(journal.matches(name.as_str()).count(), 1, "{name} in\n{journal}");
    }
    let out_dir = wal.dir.path.join("fetched");
    fs::create_dir_all(&out_dir).unwrap();
    for (name, path) in names.iter().zip(paths) {
        let dest = out_dir.join(name);
        assert_success(&wal.fetch(name, &dest), &["fetch", name]);
        assert_eq!(crc(&dest), crc(path), "{name}");
    }
}

/// The prefetch: fetching segment N fills the spool with N+1.. in the
/// background; the next fetch is served from it (checked by CRC, removed
/// once handed over); a damaged spool file is never handed over; the spool
/// stays within prefetch_bytes.
#[test]
fn fetch_prefetches_the_next_segments_into_a_bounded_spool() {
    let wal = Wal::new("prefetch", "prefetch_segments = 3\nprefetch_bytes = 2MiB");
    let names: Vec<String> = (1..=6).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    for (i, name) in names.iter().enumerate() {
        assert_success(&wal.push(&wal.segment(name, i as u64)), &["push", name]);
    }
    let spool = wal.state.join("pg/prefetch");
    let spooled = || -> Vec<String> {
        let mut names: Vec<String> = sorted_files(&spool)
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let out_dir = wal.dir.path.join("out");
    fs::create_dir(&out_dir).unwrap();
    assert_success(&wal.fetch(&names[0], &out_dir.join(&names[0])), &["fetch 1"]);
    // Two of the next three fit in 2 MiB.
    let deadline = Instant::now() + Duration::from_secs(20);
    while spooled().len() < 2 {
        assert!(Instant::now() < deadline, "nothing prefetched: {:?}", spooled());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let now = spooled();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now[0].starts_with(&names[1]) && now[1].starts_with(&names[2]), "{now:?}");

    // Served from the spool: with the archive's objects gone, it still works.
    let batches = wal.archive.join("pg/batches");
    let hidden = wal.dir.path.join("hidden-batches");
    fs::rename(&batches, &hidden).unwrap();
    assert_success(&wal.fetch(&names[1], &out_dir.join(&names[1])), &["fetch 2 from the spool"]);
    assert_eq!(crc(&out_dir.join(&names[1])), crc(&wal.pg_wal.join(&names[1])));
    // A damaged spool file is not handed over: with the archive away, the
    // fetch fails instead of writing wrong bytes.
    let damaged = spool.join(spooled().into_iter().find(|n| n.starts_with(&names[2])).unwrap());
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[100] ^= 1;
    fs::write(&damaged, bytes).unwrap();
    let out = wal.fetch(&names[2], &out_dir.join(&names[2]));
    assert_ne!(out.status.code(), Some(0));
    assert!(!out_dir.join(&names[2]).exists());
    fs::rename(&hidden, &batches).unwrap();
    assert_success(&wal.fetch(&names[2], &out_dir.join(&names[2])), &["fetch 3"]);
    assert_eq!(crc(&out_dir.join(&names[2])), crc(&wal.pg_wal.join(&names[2])));
    let total: u64 = sorted_files(&spool).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(total <= 2 << 20, "{total}");
}

/// Start the daemon on `wal`'s config and wait for its control socket.
fn start_daemon(wal: &Wal) -> Daemon {
    let daemon = Daemon::start(&wal.config, false);
    let socket = wal.state.join(".walship-control");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no control socket at {}", socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

/// With the daemon running on the stream, push hands each file to the
/// stream's thread and waits for it: several at once all succeed, each
/// segment is recorded once, a retry of the same bytes succeeds, other
/// bytes fail naming both CRCs, and a file outside `dir` is a usage error.
#[test]
fn concurrent_pushes_through_the_daemon_lose_and_duplicate_nothing() {
    let wal = Wal::new("daemon-push", "prefetch_segments = 0");
    let daemon = start_daemon(&wal);
    let (names, paths) = push_eight_at_once(&wal, "push through the daemon");
    assert_success(&wal.push(&paths[3]), &["push again"]);
    let archived_crc = crc(&paths[3]);
    wal.segment(&names[3], 77);
    let conflict = wal.push(&paths[3]);
    assert_eq!(conflict.status.code(), Some(1), "{}", stderr(&conflict));
    let message = stderr(&conflict);
    assert!(message.contains(&archived_crc) && message.contains(&crc(&paths[3])), "{message}");
    assert!(message.contains("the daemon could not archive it"), "through the daemon: {message}");
    let outside = wal.dir.path.join("000000010000000000000010");
    fs::write(&outside, vec![0u8; SEGMENT]).unwrap();
    let out = wal.push(&outside);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    drop(daemon);
    wal.segment(&names[3], 3);
    assert_every_segment_recorded_once(&wal, &names, &paths);
}

/// PostgreSQL marks a complete segment `.ready` in `pg_wal/archive_status`
/// before it runs archive_command: such segments count as sealed, so
/// `status` shows the backlog PostgreSQL has not pushed yet, and the daemon
/// archives them by itself (here once they have waited `max_batch_delay`);
/// the push that follows finds them archived. A recycled segment under a
/// future name, never marked, stays out.
#[test]
fn segments_postgresql_marked_ready_are_sealed_backlog_and_archived_by_the_daemon() {
    let wal = Wal::new("ready-marks", "max_batch_delay = 100ms\nprefetch_segments = 0");
    let names: Vec<String> = (1..=4).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    let paths: Vec<PathBuf> = names.iter().enumerate().map(|(i, n)| wal.segment(n, i as u64)).collect();
    let marks = wal.pg_wal.join("archive_status");
    fs::create_dir(&marks).unwrap();
    for name in &names[..2] {
        fs::write(marks.join(format!("{name}.ready")), "").unwrap();
    }
    let status = stdout(&wal.run(&["status"]));
    assert!(status.contains("lag:                2 sealed segments"), "{status}");

    let daemon = start_daemon(&wal);
    let journal = wal.state.join("pg/manifest");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&journal).unwrap_or_default().contains(names[1].as_str()) {
        assert!(Instant::now() < deadline, "the daemon archived nothing marked ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_success(&wal.push(&paths[1]), &["push of an archived segment"]);
    drop(daemon);
    let journal = fs::read_to_string(&journal).unwrap();
    assert!(!journal.contains(names[2].as_str()) && !journal.contains(names[3].as_str()), "{journal}");
}

/// Eight WAL segments written and pushed by eight `walship push` processes
/// at once, each of which must succeed; their names and paths.
fn push_eight_at_once(wal: &Wal, what: &str) -> (Vec<String>, Vec<PathBuf>) {
    let names: Vec<String> = (1..=8).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    let paths: Vec<PathBuf> = names.iter().enumerate().map(|(i, n)| wal.segment(n, i as u64)).collect();
    let children: Vec<_> = paths
        .iter()
        .map(|path| {
            std::process::Command::new(env!("CARGO_BIN_EXE_walship"))
                .args(["push", "-s", "pg", path.to_str().unwrap(), "-c", wal.config.to_str().unwrap()])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &[what]);
    }
    (names, paths)
}
