//! Long generated histories, through the binary: a first prune of 200,000
//! records goes in prune records of at most 10,000 keys and heals after a
//! SIGKILL between them; verify of a file archive longer than a listing
//! page reports what it always did; the readers' peak memory stays far
//! below what holding the manifest takes. Functional, not timed.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Setup, segment_name, stdout};

/// Segment content at `position`: the position, 8 bytes little-endian.
fn segment(position: u64) -> [u8; 8] {
    position.to_le_bytes()
}

fn snapshot_image(position: u64) -> Vec<u8> {
    format!("snapshot at {position}").into_bytes()
}

fn line(body: &str) -> String {
    format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
}

fn batch_key(position: u64) -> String {
    format!("s/batches/{position:016x}-{position:016x}")
}

fn batch_line(position: u64) -> String {
    let data = segment(position);
    let crc = crc32fast::hash(&data);
    line(&format!(
        "batch first={position} last={position} size=8 crc32={crc:08x} key={} encoding=identity \
         stored_size=8 stored_crc32={crc:08x} seg={position},{},8,{crc:08x},0,8",
        batch_key(position),
        segment_name(position)
    ))
}

fn snapshot_line(position: u64) -> String {
    let image = snapshot_image(position);
    let crc = crc32fast::hash(&image);
    line(&format!(
        "snapshot position={position} size={len} crc32={crc:08x} key=s/snapshots/{position:016x} \
         encoding=identity stored_size={len} stored_crc32={crc:08x}",
        len = image.len()
    ))
}

const HEADER: &str = "walship-manifest v2\n";

/// What a run archiving one-segment batches `1..=records` leaves, with a
/// snapshot every `every` positions from `first_snapshot` on: the journal,
/// the snapshot objects and their record objects, the log's record objects
/// (compacted by 1,000, the rest level 0), the state directory's binding,
/// and the batch objects of `stored` (the others as if already gone).
fn generate(
    setup: &Setup,
    records: u64,
    first_snapshot: u64,
    every: u64,
    stored: std::ops::RangeInclusive<u64>,
) {
    let snapshots: Vec<u64> = (first_snapshot..=records).step_by(every as usize).collect();
    let mut journal = String::from(HEADER);
    for position in 1..=records {
        journal.push_str(&batch_line(position));
        if snapshots.binary_search(&position).is_ok() {
            journal.push_str(&snapshot_line(position));
        }
    }
    fs::create_dir_all(setup.state.join("s")).unwrap();
    fs::write(setup.journal(), journal).unwrap();
    fs::write(setup.state.join("s/target"), format!("file://{}\n", setup.archive.display())).unwrap();
    for dir in ["batches", "snapshots", "manifest"] {
        fs::create_dir_all(setup.archive.join("s").join(dir)).unwrap();
    }
    for position in stored {
        fs::write(setup.archive.join(batch_key(position)), segment(position)).unwrap();
    }
    let manifest = setup.archive.join("s/manifest");
    for &position in &snapshots {
        fs::write(setup.archive.join(format!("s/snapshots/{position:016x}")), snapshot_image(position))
            .unwrap();
        let text = format!("{HEADER}{}", snapshot_line(position));
        fs::write(manifest.join(format!("snapshot-{position:016x}")), text).unwrap();
    }
    let mut first = 1;
    while first <= records {
        let last = (first + 999).min(records);
        let (name, text) = if last - first == 999 {
            let lines: String = (first..=last).map(batch_line).collect();
            (format!("{first:016x}-{last:016x}.l1"), format!("{HEADER}{lines}"))
        } else {
            for position in first..=last {
                let text = format!("{HEADER}{}", batch_line(position));
                fs::write(manifest.join(format!("{position:016x}-{position:016x}.batch")), text).unwrap();
            }
            break;
        };
        fs::write(manifest.join(name), text).unwrap();
        first = last + 1;
    }
}

/// The prune records of the journal: (sequence, mark, keys), in order.
fn journal_prunes(setup: &Setup) -> Vec<(u64, u64, Vec<String>)> {
    let journal = fs::read_to_string(setup.journal()).unwrap();
    journal
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, body)| body))
        .filter(|body| body.starts_with("prune "))
        .map(|body| {
            let field = |name: &str| {
                body.split(' ').find_map(|f| f.strip_prefix(name)).unwrap().parse::<u64>().unwrap()
            };
            let keys =
                body.split(' ').filter_map(|f| f.strip_prefix("delete=")).map(str::to_string).collect();
            (field("seq="), field("before="), keys)
        })
        .collect()
}

/// Run `walship ARGS -c CONFIG` to its end: its stdout and its peak
/// resident memory in KiB, the last `VmHWM` read from `/proc` while it
/// ran (a high-water mark: only a peak in its last few milliseconds could
/// go unseen). Not `wait4`'s `ru_maxrss`: that counts this test process,
/// which the child starts as.
fn run_measured(setup: &Setup, args: &[&str]) -> (String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(args)
        .args(["-c", setup.config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut out).unwrap();
        out
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let hwm = fs::read_to_string(&status_file).ok().and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        peak = peak.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = reader.join().unwrap();
    assert!(status.success(), "walship {args:?} failed: {out}");
    (out, peak)
}

/// Far more than any command needs when it streams the manifest (a debug
/// build's own pages included), far less than holding 200,000 records.
const STREAMED_KIB: u64 = 64 << 10;

/// 200,000 records, snapshots every 10,000 from 100,000 on, keep 2: the
/// first prune deletes 190,000 batches and 9 snapshots, as 20 prune
/// records. Killed once the 17th is stored (deleting real objects by
/// then): every deleted object was journaled first, no record twice; the
/// next prune finishes it, and restore and verify still work.
#[test]
fn a_first_prune_of_a_long_history_goes_in_chunks_and_heals_after_sigkill() {
    let setup = Setup::new("scale-prune", 1, "seal = spool\nkeep_snapshots = 2");
    let records = 200_000;
    generate(&setup, records, 100_000, 10_000, 150_001..=records);

    let (dry, peak) = run_measured(&setup, &["prune", "--dry-run"]);
    let header = "stream s: would delete 190009 objects (1.4 MiB); restorable from position 190000 on, \
                  positions before 190001 pruned";
    assert_eq!(dry.lines().next(), Some(header));
    assert_eq!(dry.lines().count(), 1 + 190_009);
    assert!(dry.lines().nth(1).unwrap().ends_with(&batch_key(1)), "{}", &dry[..300]);
    assert!(dry.lines().last().unwrap().ends_with("s/batches/000000000002e630-000000000002e630"));
    assert!(peak < STREAMED_KIB, "prune --dry-run peaked at {peak} KiB");

    let seventeenth = setup.archive.join("s/manifest/prune-0000000000000011");
    let mut child = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["prune", "-c", setup.config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seventeenth.exists() && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Each prune record is stored, then journaled, then carried out: the
    // kill may land between the 17th's two writes.
    let prunes = journal_prunes(&setup);
    let done = prunes.len() as u64;
    assert!((16..20).contains(&done), "killed after {done} of 20 prune records");
    let stored = fs::read_dir(setup.archive.join("s/manifest"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().starts_with("prune-"))
        .count() as u64;
    assert!(stored == done || stored == done + 1, "{stored} prune record objects, {done} journaled");
    let sequences: Vec<u64> = prunes.iter().map(|p| p.0).collect();
    assert_eq!(sequences, (1..=done).collect::<Vec<_>>(), "each prune record once, in order");
    assert!(prunes.iter().all(|p| p.2.len() <= 10_000));
    let recorded: std::collections::HashSet<&str> =
        prunes.iter().flat_map(|p| p.2.iter().map(String::as_str)).collect();
    let mut gone = 0;
    for position in 150_001..=records {
        if !setup.archive.join(batch_key(position)).exists() {
            gone += 1;
            assert!(recorded.contains(batch_key(position).as_str()), "{position} deleted unrecorded");
        }
    }
    assert!(gone > 0, "nothing stored was deleted before the kill");
    // The mark of the latest prune record, journaled or only stored.
    let journaled_mark = prunes.last().unwrap().1;
    let listed = setup.ok(&["list", "-s", "s"]);
    let mark: u64 = listed
        .strip_prefix("stream s: positions before ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|mark| mark.parse().ok())
        .unwrap_or_else(|| panic!("{}", &listed[..200]));
    assert!(journaled_mark <= mark && mark < 190_001, "{mark}, {journaled_mark} journaled");

    let rest = setup.ok(&["prune"]);
    assert!(rest.starts_with("stream s: deleted "), "{}", &rest[..200]);
    let prunes = journal_prunes(&setup);
    let sequences: Vec<u64> = prunes.iter().map(|p| p.0).collect();
    assert_eq!(sequences, (1..=20).collect::<Vec<_>>(), "the rest recorded once each");
    assert_eq!(prunes.last().unwrap().1, 190_001);
    let all: Vec<&String> = prunes.iter().flat_map(|p| &p.2).collect();
    let distinct: std::collections::HashSet<&String> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (190_009, 190_009), "every object named once");
    for position in [150_001, 189_999, 190_000] {
        assert!(!setup.archive.join(batch_key(position)).exists(), "{position}");
    }
    assert_eq!(fs::read_dir(setup.archive.join("s/batches")).unwrap().count(), 10_000);
    assert_eq!(setup.ok(&["prune"]), "stream s: nothing to prune (2 snapshots kept, keep_snapshots = 2)\n");

    let (listed, peak) = run_measured(&setup, &["list", "-s", "s", "--all"]);
    assert_eq!(listed.lines().filter(|l| l.trim_start().starts_with("190001..190001 ")).count(), 1);
    assert!(peak < STREAMED_KIB, "list --all after the prune peaked at {peak} KiB");
    let to = setup.dir.path.join("restored");
    let restored = setup.ok(&["restore", "-s", "s", "--to", to.to_str().unwrap(), "--position", "195000"]);
    assert!(restored.contains("the snapshot at position 190000"), "{restored}");
    assert_eq!(fs::read_dir(&to).unwrap().count(), 5_001);
    assert_eq!(fs::read(to.join(segment_name(195_000))).unwrap(), segment(195_000));
    assert_eq!(fs::read(to.join("walship-snapshot-000000000002e630")).unwrap(), snapshot_image(190_000));
    let (verified, peak) = run_measured(&setup, &["verify", "-s", "s", "--deep"]);
    assert!(verified.ends_with("stream s: 10000 batches and 2 snapshots checked (deep)\n"), "{verified}");
    assert!(peak < STREAMED_KIB, "verify --deep after the prune peaked at {peak} KiB");
}

/// Verify of a file archive of 40,000 batch objects (listed in several
/// pages) finds a missing object, one no record uses and, with --deep, a
/// flipped byte, each with the line it always printed; sound, it finds
/// nothing. Restore without a snapshot replays the whole log.
#[test]
fn verify_of_a_long_file_archive_reports_each_finding() {
    let setup = Setup::new("scale-verify", 1, "seal = spool");
    let records = 40_000;
    generate(&setup, records, records + 1, 1, 1..=records);
    let sound = setup.ok(&["verify", "-s", "s"]);
    assert_eq!(sound, "stream s: 40000 batches checked\n");

    fs::remove_file(setup.archive.join(batch_key(20_000))).unwrap();
    let orphan = "s/batches/00000000000088b8-00000000000088b9";
    fs::write(setup.archive.join(orphan), b"no record uses this").unwrap();
    fs::write(setup.archive.join(batch_key(38_000)), 1u64.to_le_bytes()).unwrap();
    let out = setup.walship(&["verify", "-s", "s", "--deep"]);
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    let expected = [
        format!("stream s: {}: MISSING from the archive", batch_key(20_000)),
        format!(
            "stream s: {}: CORRUPT: CRC32 {:08x} stored, {:08x} recorded",
            batch_key(38_000),
            crc32fast::hash(&1u64.to_le_bytes()),
            crc32fast::hash(&segment(38_000))
        ),
        format!(
            "stream s: {orphan} is stored but no record uses it (its positions are recorded \
             otherwise, e.g. as a gap); it is kept and ignored"
        ),
        "stream s: 40000 batches checked (deep)".to_string(),
    ];
    assert_eq!(report.lines().collect::<Vec<_>>(), expected, "{report}");

    fs::remove_file(setup.archive.join(orphan)).unwrap();
    fs::write(setup.archive.join(batch_key(20_000)), segment(20_000)).unwrap();
    fs::write(setup.archive.join(batch_key(38_000)), segment(38_000)).unwrap();
    let to = setup.dir.path.join("restored");
    let (restored, peak) = run_measured(&setup, &["restore", "-s", "s", "--to", to.to_str().unwrap()]);
    assert!(restored.starts_with("stream s: restored 40000 segments"), "{restored}");
    assert!(peak < STREAMED_KIB, "restore peaked at {peak} KiB");
    assert_eq!(fs::read(to.join(segment_name(records))).unwrap(), segment(records));
    assert!(Path::new(&to).join(segment_name(1)).exists());
}
