//! The stream's policy against the fault-injecting in-memory target:
//! healing a crash between upload and commit, conflicts, gaps, the order of
//! commits, failed puts retried without duplicates, and a segment truncated
//! under a batch larger than the first guard table.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Hints, PassReport, Stream};
use crate::config::{self, StreamConfig};
use crate::error::Error;
use crate::manifest::{StreamRules, journal};
use crate::statedir;
use crate::status::{StatusCell, StreamStatus};
use crate::target::Target;
use crate::target::memory::MemoryTarget;

struct Fixture {
    root: PathBuf,
    config: StreamConfig,
    target: Arc<MemoryTarget>,
}

impl Fixture {
    fn new(name: &str, batch_size: u64, extra: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!("walship-policy-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("src")).unwrap();
        let text = format!(
            "[global]\nstate_dir = {0}/state\ntarget = file://{0}/unused\n\n[stream s]\ndir = {0}/src\n\
             pattern = seg-{{seq}}.log\nbatch_size = {batch_size}\nseal = spool\n{extra}\n",
            root.display()
        );
        let config = config::parse(Path::new("policy.conf"), &text).unwrap().streams.remove(0);
        Fixture { root, config, target: Arc::new(MemoryTarget::default()) }
    }

    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    fn write(&self, positions: std::ops::RangeInclusive<u64>, len: usize) {
        for p in positions {
            fs::write(self.segment(p), content(p, len)).unwrap();
        }
    }

    fn segment(&self, position: u64) -> PathBuf {
        self.root.join("src").join(format!("seg-{position:06}.log"))
    }

    fn open(&self) -> Result<Stream, Error> {
        let status = Arc::new(StatusCell::default());
        let lock = Arc::new(statedir::lock_stream(&self.state(), "s")?);
        let target: Arc<dyn Target> = Arc::clone(&self.target) as Arc<dyn Target>;
        Stream::open(self.config.clone(), &self.state(), target, status, lock)
    }

    fn pass(&self) -> Result<PassReport, Error> {
        self.open()?.pass(true, Hints::default(), &|| false)
    }

    fn journal_ranges(&self) -> Vec<(u64, u64, &'static str)> {
        let rules = StreamRules::new("s", &self.config.naming);
        let parsed = journal::read_all(&statedir::journal(&self.state(), "s"), &rules).unwrap();
        parsed.manifest.log.iter().map(|r| (r.first(), r.last(), r.kind())).collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn content(position: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (position as usize * 31 + i) as u8).collect()
}

fn batch_key(first: u64, last: u64) -> String {
    format!("s/batches/{first:016x}-{last:016x}")
}

#[test]
fn crash_between_upload_and_commit_heals_without_resending() {
    let f = Fixture::new("heal", 3, "");
    f.write(1..=3, 100);
    // An earlier run stored the object, then died before recording it.
    let bytes: Vec<u8> = (1..=3).flat_map(|p| content(p, 100)).collect();
    f.target.insert(&batch_key(1, 3), &bytes);
    let report = f.pass().unwrap();
    assert_eq!((report.batches, report.healed), (1, 1));
    assert!(f.target.put_log().iter().all(|k| k.contains("/manifest/")), "{:?}", f.target.put_log());
    assert_eq!(f.journal_ranges(), [(1, 3, "batch")]);
}

#[test]
fn different_content_at_a_key_stops_the_stream_and_overwrites_nothing() {
    let f = Fixture::new("conflict", 3, "");
    f.write(1..=3, 100);
    f.target.insert(&batch_key(1, 3), b"someone else's bytes");
    let error = f.pass().unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error}");
    assert_eq!(f.target.object(&batch_key(1, 3)).unwrap(), b"someone else's bytes");
    assert!(f.target.put_log().is_empty());
    assert!(f.journal_ranges().is_empty());
}

#[test]
fn segments_removed_before_archiving_become_a_gap() {
    let f = Fixture::new("gap", 2, "");
    f.write(1..=2, 10);
    f.pass().unwrap();
    f.write(5..=6, 10); // 3 and 4 never arrive
    let report = f.pass().unwrap();
    assert_eq!(report.gaps, 1);
    assert_eq!(f.journal_ranges(), [(1, 2, "batch"), (3, 4, "gap"), (5, 6, "batch")]);
}

/// Uploads overlap commits (the object of batch N+1 may be stored before
/// the record of batch N), but records go in position order, each after
/// its object, and never more than one object is stored ahead of the
/// records: what a crash leaves is a run the next start heals.
#[test]
fn commits_are_strictly_in_position_order() {
    let f = Fixture::new("order", 2, "");
    f.write(1..=9, 10);
    f.pass().unwrap();
    let log = f.target.put_log();
    let batches = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 9)];
    let objects: Vec<String> = batches.iter().map(|&(first, last)| batch_key(first, last)).collect();
    let records: Vec<String> =
        batches.iter().map(|(first, last)| format!("s/manifest/{first:016x}-{last:016x}.batch")).collect();
    let put = |prefix: &str| log.iter().filter(|k| k.starts_with(prefix)).cloned().collect::<Vec<_>>();
    assert_eq!(put("s/batches/"), objects, "objects in order");
    assert_eq!(put("s/manifest/"), records, "records in order");
    for (n, record) in records.iter().enumerate() {
        let at = log.iter().position(|k| k == record).unwrap();
        let objects_before = log[..at].iter().filter(|k| k.starts_with("s/batches/")).count();
        assert!(objects_before > n, "record {n} before its object: {log:?}");
        assert!(objects_before <= n + 2, "more than one object ahead of record {n}: {log:?}");
    }
    assert_eq!(f.journal_ranges().len(), 5);
}

#[test]
fn failed_puts_are_retried_without_duplicates() {
    let f = Fixture::new("retry", 2, "");
    f.write(1..=4, 10);
    f.target.faults.lock().unwrap().failing_batch_puts = 1;
    assert!(matches!(f.pass(), Err(Error::Target { .. })));
    assert!(f.journal_ranges().is_empty());
    // The object of 1..=2 is stored, its record put fails: nothing recorded.
    f.target.faults.lock().unwrap().failing_record_puts = 1;
    assert!(matches!(f.pass(), Err(Error::Target { .. })));
    assert!(f.journal_ranges().is_empty());
    // The next pass finds the object, records it once, and goes on. (The
    // object of 3..=4 was stored while the record of 1..=2 failed: after a
    // batch found stored the next is looked for too, and found.)
    let report = f.pass().unwrap();
    assert_eq!((report.batches, report.healed), (2, 2));
    assert_eq!(f.journal_ranges(), [(1, 2, "batch"), (3, 4, "batch")]);
    let log = f.target.put_log();
    let mut unique = log.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), log.len(), "a key was stored twice: {log:?}");
}

/// Regression: with more segments in a batch than the guard had slots, a
/// segment truncated under its map killed the process with SIGBUS.
#[test]
fn segment_truncated_in_a_batch_larger_than_the_guard_table_is_refused() {
    let count = 4200u64;
    let f = Fixture::new("big-batch", 5000, "");
    f.write(1..=count, 4096);
    let last = f.segment(count);
    f.target.faults.lock().unwrap().before_put = Some(Box::new(move |key: &str| {
        if key.contains("/batches/") {
            fs::File::options().write(true).open(&last).unwrap().set_len(0).unwrap();
        }
    }));
    let error = f.pass().unwrap_err();
    assert!(matches!(error, Error::SegmentChanged { .. }), "{error}");
    assert!(f.journal_ranges().is_empty());
    assert!(f.target.object(&batch_key(1, count)).is_none());
}

#[test]
fn low_water_mark_records_the_applications_gap() {
    let f = Fixture::new("low-mark", 10, "");
    f.write(1..=2, 10);
    let mut stream = f.open().unwrap();
    stream.pass(true, Hints::default(), &|| false).unwrap();
    let hints = Hints { low_water_mark: Some(6), ..Hints::default() };
    assert_eq!(stream.pass(false, hints, &|| false).unwrap().gaps, 1);
    assert_eq!(stream.archived(), Some(5));
    match f.target.object("s/manifest/0000000000000003-0000000000000005.gap") {
        Some(text) => assert!(String::from_utf8_lossy(&text).contains("application"), "gap reason"),
        None => panic!("no gap record"),
    }
}

#[test]
fn records_adopted_from_the_target_must_match_local_segments() {
    let f = Fixture::new("adopt", 2, "on_archived = delete");
    f.write(1..=2, 10);
    f.pass().unwrap();
    // The state directory is lost, and the local segments differ from what
    // the archive's records say.
    fs::remove_dir_all(f.state()).unwrap();
    f.write(1..=2, 11);
    let error = f.open().err().expect("a conflict");
    assert!(matches!(error, Error::Conflict { .. }), "{error}");
    assert!(f.segment(1).exists() && f.segment(2).exists(), "a segment was acknowledged");
    assert!(f.journal_ranges().is_empty(), "records adopted despite the mismatch");
    // Identical content is adopted and acknowledged.
    f.write(1..=2, 10);
    let report = f.pass().unwrap();
    assert_eq!(report.batches, 0);
    assert_eq!(f.journal_ranges(), [(1, 2, "batch")]);
    assert!(!f.segment(1).exists());
}

#[test]
fn pass_with_nothing_to_archive_still_records_a_success() {
    let f = Fixture::new("idle-success", 2, "");
    f.pass().unwrap();
    let text = fs::read_to_string(statedir::status_file(&f.state(), "s")).unwrap();
    assert!(StreamStatus::from_file_text(&text).last_success.is_some(), "{text}");
}

/// Regression: a spool file renamed over a segment while its batch was
/// being uploaded (same size, other content) was deleted after the commit:
/// the archive held the old content, the new one was lost. Only the files
/// that were archived are acknowledged; the new one is a conflict.
/// The batch after the one uploading is mapped and checksummed ahead (see
/// `pipeline`): a segment of it truncated after that, before or while it is
/// sent, is still refused, nothing recorded or kept for it, and the
/// batches before it are recorded.
#[test]
fn segment_truncated_after_its_batch_was_prepared_ahead_is_refused() {
    let f = Fixture::new("ahead", 2, "");
    f.write(1..=6, 4096);
    let sixth = f.segment(6);
    f.target.faults.lock().unwrap().before_put = Some(Box::new(move |key: &str| {
        // By now 5..=6 has been prepared: ahead, while 3..=4 uploaded.
        if key == batch_key(5, 6) {
            fs::File::options().write(true).open(&sixth).unwrap().set_len(100).unwrap();
        }
    }));
    let error = f.pass().unwrap_err();
    assert!(matches!(error, Error::SegmentChanged { .. }), "{error}");
    assert_eq!(f.journal_ranges(), [(1, 2, "batch"), (3, 4, "batch")]);
    assert!(f.target.object(&batch_key(5, 6)).is_none());
}

#[test]
fn file_replaced_during_its_upload_is_not_acknowledged() {
    let f = Fixture::new("replaced", 3, "on_archived = delete");
    f.write(1..=3, 100);
    let (path, spare) = (f.segment(2), f.root.join("spare"));
    fs::write(&spare, vec![7u8; 100]).unwrap();
    f.target.faults.lock().unwrap().before_put = Some(Box::new(move |key: &str| {
        if key.contains("/batches/") && spare.exists() {
            fs::rename(&spare, &path).unwrap();
        }
    }));
    let error = f.pass().unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error}");
    assert_eq!(f.journal_ranges(), [(1, 3, "batch")]);
    assert_eq!(fs::read(f.segment(2)).ok(), Some(vec![7u8; 100]), "the new file was acknowledged");
    assert!(!f.segment(1).exists() && !f.segment(3).exists(), "the archived files are acknowledged");
}

/// Object stores bill per request: in steady state a batch that fits one
/// PUT costs two (its object and its record) and nothing is listed; the
/// exists-check (HEAD) runs only where the outcome is uncertain: the first
/// batch after a start, after a failed attempt, and after a batch found
/// already stored (until a look finds nothing).
#[test]
fn steady_state_batches_cost_two_requests_and_no_listing() {
    let f = Fixture::new("requests", 2, "");
    // Uploads overlap commits: the order of the requests varies, so they
    // are compared sorted.
    let methods = || -> Vec<String> {
        let mut methods: Vec<String> =
            f.target.take_requests().iter().map(|r| r.split(' ').next().unwrap_or("").to_string()).collect();
        methods.sort();
        methods
    };
    f.write(1..=6, 10);
    let mut stream = f.open().unwrap();
    methods(); // opening catches up with the target's manifest: listings
    stream.pass(true, Hints::default(), &|| false).unwrap();
    assert_eq!(methods(), ["HEAD", "PUT", "PUT", "PUT", "PUT", "PUT", "PUT"], "first batch after a start");
    f.write(7..=10, 10);
    stream.pass(true, Hints::default(), &|| false).unwrap();
    assert_eq!(methods(), ["PUT"; 4], "steady state");

    f.write(11..=12, 10);
    f.target.faults.lock().unwrap().failing_record_puts = 1;
    assert!(stream.pass(true, Hints::default(), &|| false).is_err());
    assert_eq!(methods(), ["PUT", "PUT"], "the object stored, its record failed");
    f.write(13..=14, 10);
    stream.pass(true, Hints::default(), &|| false).unwrap();
    assert_eq!(
        methods(),
        ["HEAD", "HEAD", "PUT", "PUT", "PUT"],
        "after a failure: found stored, then looked again"
    );
    f.write(15..=16, 10);
    stream.pass(true, Hints::default(), &|| false).unwrap();
    assert_eq!(methods(), ["PUT", "PUT"]);
    assert_eq!(f.journal_ranges().len(), 8);
}

/// A replicated stream (`replicas = on`) looks before every upload:
/// another node may have stored the batch before this one took over.
#[test]
fn a_replicated_stream_looks_before_every_upload() {
    let mut f = Fixture::new("requests-replicas", 2, "");
    f.config.replicas = Some(crate::config::Replicas { max_offloader_lag: 16 });
    f.write(1..=6, 10);
    let mut stream = f.open().unwrap();
    f.target.take_requests();
    stream.pass(true, Hints::default(), &|| false).unwrap();
    let heads = f.target.take_requests().iter().filter(|r| r.starts_with("HEAD ")).count();
    assert_eq!(heads, 3, "one look per batch");
}

/// The backlog is what waits in the directory: counted at each look, less
/// each batch as it commits; `walship status` counts it from a scan.
#[test]
fn backlog_counts_segments_and_bytes_waiting() {
    let f = Fixture::new("backlog", 2, "");
    f.write(1..=5, 10);
    let status = Arc::new(StatusCell::default());
    let lock = Arc::new(statedir::lock_stream(&f.state(), "s").unwrap());
    let target: Arc<dyn Target> = Arc::clone(&f.target) as Arc<dyn Target>;
    let mut stream = Stream::open(f.config.clone(), &f.state(), target, Arc::clone(&status), lock).unwrap();
    stream.pass(false, Hints::default(), &|| false).unwrap();
    let now = status.get();
    assert_eq!((now.archived_position, now.backlog_segments, now.backlog_bytes), (Some(4), 1, 10));
    f.write(6..=8, 10);
    stream.pass(false, Hints::default(), &|| false).unwrap();
    assert_eq!((status.get().backlog_segments, status.get().backlog_bytes), (0, 0), "5..8 archived");
    f.write(9..=9, 10);
    drop(stream);
    let from_disk = super::status_from_disk(&f.state(), &f.config).unwrap();
    assert_eq!((from_disk.backlog_segments, from_disk.backlog_bytes), (1, 10));
}

/// Regression: with the link going down between a batch's upload and its
/// record, `backlog_limit` deleted that batch's segments; the gap then lay
/// over a stored object, which is never recorded, and the stream stopped
/// for good. The next batches are kept; the oldest after them go, here
/// every one up to the newest, and that range is recorded as a gap though
/// no newer segment has come.
#[test]
fn backlog_limit_keeps_the_batch_whose_commit_was_cut_short() {
    let f = Fixture::new("backlog-cut", 1, "backlog_limit = 2KiB");
    f.write(0..=0, 1024);
    f.target.faults.lock().unwrap().failing_record_puts = 100;
    assert!(f.pass().is_err(), "the record of 0..0 cannot be put");
    assert!(f.target.object(&batch_key(0, 0)).is_some());
    f.write(1..=5, 1024);
    assert!(f.pass().is_err(), "still down");
    let present: Vec<u64> = (0..=5).filter(|p| f.segment(*p).exists()).collect();
    assert_eq!(present, vec![0, 1], "the two batches that may be stored; 2 KiB is full");
    f.target.faults.lock().unwrap().failing_record_puts = 0;
    let report = f.pass().expect("the link is back");
    // 1 went up beside 0's failed commit in the pass that was still down.
    assert_eq!((report.batches, report.healed, report.gaps), (2, 2, 1));
    assert_eq!(f.journal_ranges(), vec![(0, 0, "batch"), (1, 1, "batch"), (2, 5, "gap")]);
}

/// With zstd, a segment rewritten between the first pass (frames measured)
/// and the upload (frames made again) gives other frames than planned: the
/// batch is refused, nothing stored or recorded, and archived once the
/// segment holds still.
#[test]
fn zstd_segment_rewritten_between_the_two_passes_is_refused() {
    let f = Fixture::new("zstd-rewritten", 3, "compression = zstd");
    f.write(1..=3, 50_000);
    let second = f.segment(2);
    f.target.faults.lock().unwrap().before_put = Some(Box::new(move |key: &str| {
        if key.contains("/batches/") {
            use std::os::unix::fs::FileExt;
            fs::File::options().write(true).open(&second).unwrap().write_all_at(b"rewritten", 100).unwrap();
        }
    }));
    let error = f.pass().unwrap_err();
    assert!(matches!(error, Error::SegmentChanged { .. }), "{error}");
    assert!(f.journal_ranges().is_empty());
    assert!(f.target.object(&batch_key(1, 3)).is_none());

    f.target.faults.lock().unwrap().before_put = None;
    assert_eq!(f.pass().unwrap().batches, 1);
    assert_eq!(f.journal_ranges(), [(1, 3, "batch")]);
}

/// Regression: the pipeline stores a batch while the one before it
/// commits, so an outage can leave two batches stored without records;
/// `backlog_limit` deleting the second one's segments left a gap over a
/// stored object, and the stream stopped for good. Both are kept.
#[test]
fn backlog_limit_keeps_both_batches_the_pipeline_may_have_stored() {
    let f = Fixture::new("backlog-pipeline", 1, "backlog_limit = 3KiB");
    f.write(0..=1, 1024);
    f.target.faults.lock().unwrap().failing_record_puts = 100;
    assert!(f.pass().is_err(), "the record of 0..0 cannot be put");
    assert!(f.target.object(&batch_key(1, 1)).is_some(), "batch 1 went up while 0 committed");
    f.write(2..=5, 1024);
    assert!(f.pass().is_err(), "still down");
    let present: Vec<u64> = (0..=5).filter(|p| f.segment(*p).exists()).collect();
    assert_eq!(present, vec![0, 1, 5], "both stored batches kept, then the newest that fits");
    f.target.faults.lock().unwrap().failing_record_puts = 0;
    let report = f.pass().expect("the link is back");
    assert_eq!((report.batches, report.healed, report.gaps), (3, 2, 1));
    assert_eq!(f.journal_ranges(), vec![(0, 0, "batch"), (1, 1, "batch"), (2, 4, "gap"), (5, 5, "batch")]);
}
