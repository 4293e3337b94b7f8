//! Compaction: the pure rules (progress text, level-2 folding, groups) as
//! tables; then whole runs against the in-memory target, with a crash
//! injected at every step, each time checking that a reader of the target
//! sees exactly the journal's manifest.

use std::path::PathBuf;
use std::sync::Mutex;

use super::super::hooked::{Hooked, PagesHook, WriteHook};
use super::*;
use crate::manifest::validate::tests::{batch, naming};
use crate::manifest::{
    Encoding, GapRecord, Manifest, PruneRecord, Sequences, SnapshotRecord, StoredObject, StreamRules,
};
use crate::target::TargetError;
use crate::target::keys::{self, RecordKey};
use crate::target::memory::MemoryTarget;

const STREAM: &str = "s";

#[test]
fn progress_text_round_trips_and_refuses_junk() {
    let progress = Progress {
        level2_through: Some(99),
        level1: vec![Level1 { first: 100, last: 109, bytes: 5 }, Level1 { first: 110, last: 200, bytes: 7 }],
    };
    assert_eq!(Progress::parse(&progress.to_text()), Ok(progress));
    assert_eq!(Progress::parse(&Progress::default().to_text()), Ok(Progress::default()));
    for junk in [
        "",
        "walship-compaction v2\n",
        "walship-compaction v1\nlevel1 5 4 1\n",
        "walship-compaction v1\nlevel1 0 4 1\nlevel1 6 9 1\n",
        "walship-compaction v1\nlevel1 0 4 1\nlevel2-through 4\n",
        "walship-compaction v1\nlevel2-through x\n",
        "walship-compaction v1\nlevel1 0 4\n",
        "walship-compaction v1\nlevel9 0\n",
    ] {
        assert!(Progress::parse(junk).is_err(), "{junk:?}");
    }
}

#[test]
fn level2_folds_full_or_size_bound_runs_of_level1_objects() {
    let small = |first: u64| Level1 { first, last: first, bytes: 1000 };
    let big = |first: u64| Level1 { first, last: first, bytes: MAX_COMPACTED_BYTES / 2 + 100 };
    let cases: Vec<(Vec<Level1>, usize, Option<usize>)> = vec![
        (vec![], 4, None),
        (vec![small(0), small(1), small(2)], 4, None),
        (vec![small(0), small(1), small(2), small(3)], 4, Some(4)),
        (vec![small(0), small(1), small(2), small(3), small(4)], 4, Some(4)),
        // Size-bound: the first two do not fit together.
        (vec![big(0), big(1)], 4, Some(1)),
        (vec![small(0), big(1), big(2)], 4, Some(2)),
        (vec![small(0), big(1)], 4, None),
        // One object past the limit alone (a group of one large record).
        (vec![Level1 { first: 0, last: 0, bytes: MAX_COMPACTED_BYTES + 1 }], 4, Some(1)),
    ];
    for (level1, fanout, expected) in cases {
        assert_eq!(level2_fold(&level1, fanout), expected, "{level1:?}");
    }
}

#[test]
fn a_group_closes_when_full_too_large_or_at_a_hole() {
    let mut full = Group::new(3);
    assert!(full.offer(0, 0, 10) && full.offer(1, 5, 10) && full.offer(6, 6, 10));
    assert!(full.complete && !full.offer(7, 7, 10));
    assert_eq!((full.first, full.last, full.records), (Some(0), Some(6), 3));

    let mut open = Group::new(3);
    assert!(open.offer(0, 0, 10) && !open.complete);

    let mut hole = Group::new(3);
    assert!(hole.offer(0, 0, 10) && !hole.offer(2, 2, 10) && hole.complete);
    assert_eq!(hole.last, Some(0));

    let mut large = Group::new(3);
    assert!(large.offer(0, 0, MAX_COMPACTED_BYTES), "a group takes at least one record");
    assert!(!large.offer(1, 1, 10) && large.complete);
}

/// A temp directory, a journal of `count` one-segment batches (with a
/// snapshot and a prune among them), each record also stored as its
/// level-0 object, as commits leave them.
struct Archive {
    dir: PathBuf,
    target: MemoryTarget,
    journal: Journal,
}

fn archive(test: &str, count: u64) -> Archive {
    let dir = std::env::temp_dir().join(format!("walship-compact-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(STREAM)).expect("create temp dir");
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let (mut journal, _) =
        Journal::open(&crate::statedir::journal(&dir, STREAM), &rules, |_| {}).expect("open");
    let target = MemoryTarget::default();
    for position in 0..count {
        let mut entries = vec![Entry::Log(if position == 7 {
            Record::Gap(GapRecord { first: 7, last: 7, reason: "removed".into() })
        } else {
            batch(STREAM, position, &[format!("segment {position}").as_bytes()])
        })];
        if position == 3 {
            let stored = StoredObject { size: 1, crc32: 0, encoding: Encoding::Identity };
            let key = keys::snapshot_key(STREAM, 3);
            entries.push(Entry::Snapshot(SnapshotRecord { position: 3, key, size: 1, crc32: 0, stored }));
        }
        if position == 5 {
            entries.push(Entry::Prune(PruneRecord { sequence: 1, before: 0, deleted: Vec::new() }));
        }
        for entry in &entries {
            super::super::put_remote_entry(&target, &rules, entry).expect("stored");
        }
        journal.append_entries(&entries).expect("appended");
    }
    Archive { dir, target, journal }
}

impl Archive {
    fn compactor(&self, fanout: usize) -> Compactor {
        Compactor::load(&self.dir, STREAM, fanout, &self.journal)
    }

    /// Steps until none is due; the steps done.
    fn compact(&self, compactor: &mut Compactor, target: &dyn Target) -> Result<Vec<Done>, Error> {
        let mut done = Vec::new();
        while let Some(step) = compactor.step(target, &self.journal)? {
            done.push(step);
        }
        Ok(done)
    }

    /// The journal's manifest.
    fn journal_manifest(&self) -> Manifest {
        let naming = naming();
        crate::manifest::read_all(self.journal.path(), &StreamRules::new(STREAM, &naming))
            .expect("read")
            .manifest
    }

    /// The manifest a reader with no journal assembles from the target.
    fn remote_manifest(&self) -> Manifest {
        let naming = naming();
        let rules = StreamRules::new(STREAM, &naming);
        let (manifest, _) =
            super::super::remote_after(&self.target, &rules, &Sequences::default(), None).expect("readable");
        manifest
    }

    fn record_keys(&self) -> Vec<String> {
        let listed = self.target.list(&keys::records_prefix(STREAM), None).expect("list");
        listed.into_iter().map(|o| o.key.trim_start_matches("s/manifest/").to_string()).collect()
    }
}

fn range(first: u64, last: u64, tag: &str) -> String {
    format!("{first:016x}-{last:016x}.{tag}")
}

#[test]
fn compaction_folds_two_levels_and_readers_see_the_same_manifest() {
    let archive = archive("levels", 35);
    let expected = archive.journal_manifest();
    assert_eq!(archive.remote_manifest(), expected);
    let mut compactor = archive.compactor(4);
    let done = archive.compact(&mut compactor, &archive.target).expect("compacts");
    // 35 records: 8 level-1 groups of 4; level 2 folds them by 4: 2 level-2
    // objects (0..15, 16..31), 3 records stay level 0.
    assert_eq!(done.len(), 10, "{done:?}");
    assert_eq!(done[4], Done::Wrote { level: 2, first: 0, last: 15, folded: 4 });
    let mut expected_keys = vec![range(0, 15, "l2"), range(16, 31, "l2")];
    expected_keys.extend((32..35).map(|p| range(p, p, "batch")));
    expected_keys.extend(["prune-0000000000000001".into(), "snapshot-0000000000000003".into()]);
    assert_eq!(archive.record_keys(), expected_keys);
    assert_eq!(archive.remote_manifest(), expected);
    assert_eq!(compactor.progress(), &Progress { level2_through: Some(31), level1: vec![] });
    assert_eq!(compactor.listing_start(), Some(32));

    // Nothing more to do until 4 new records complete a group; the progress
    // file carries over to a new compactor (a restart).
    assert_eq!(archive.compact(&mut archive.compactor(4), &archive.target).expect("idle"), []);
}

#[test]
fn a_rebuild_after_a_wipe_equals_the_journal_and_continues_compaction() {
    let archive = archive("rebuild", 23);
    let mut compactor = archive.compactor(3);
    archive.compact(&mut compactor, &archive.target).expect("compacts");
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let wiped = archive.dir.join("wiped");
    std::fs::create_dir_all(wiped.join(STREAM)).expect("mkdir");
    let (mut rebuilt, _) =
        Journal::open(&crate::statedir::journal(&wiped, STREAM), &rules, |_| {}).expect("open");
    let caught_up =
        super::super::catch_up(&mut rebuilt, &archive.target, None, |_| Ok(()), |_| {}).expect("rebuilt");
    let read = |path: &std::path::Path| crate::manifest::read_all(path, &rules).expect("read").manifest;
    assert_eq!(read(rebuilt.path()), archive.journal_manifest());
    assert_eq!(caught_up.compaction.as_ref(), Some(compactor.progress()));
}

/// The memory target failing its `crash_at`-th write (put or delete),
/// before or after doing it: what a process killed there leaves behind.
fn crashing_at(inner: &MemoryTarget, crash_at: usize, after: bool) -> Hooked<'_> {
    let writes = Mutex::new(0);
    let crash = |key: &str| {
        Err(TargetError::Transient { op: "write".into(), key: key.into(), detail: "crash".into() })
    };
    let write: WriteHook<'_> = Box::new(move |key, write| {
        let mut writes = writes.lock().unwrap();
        *writes += 1;
        let crashes = *writes == crash_at;
        if crashes && !after {
            return crash(key);
        }
        write()?;
        if crashes {
            return crash(key);
        }
        Ok(())
    });
    Hooked { write: Some(write), ..Hooked::new(inner) }
}

#[test]
fn a_crash_at_every_step_leaves_a_complete_manifest_and_compaction_finishes() {
    let reference = archive("crash-reference", 20);
    reference.compact(&mut reference.compactor(3), &reference.target).expect("compacts");
    let final_keys = reference.record_keys();
    // 20 records, fanout 3: 6 level-1 steps and 2 level-2 steps, each a put
    // and a delete.
    for crash_at in 1..=16 {
        for after in [false, true] {
            let archive = archive(&format!("crash-{crash_at}-{after}"), 20);
            let expected = archive.journal_manifest();
            let crashing = crashing_at(&archive.target, crash_at, after);
            let crashed = archive.compact(&mut archive.compactor(3), &crashing);
            assert!(crashed.is_err(), "write {crash_at} was not reached");
            assert_eq!(archive.remote_manifest(), expected, "after a crash at write {crash_at} ({after})");
            // A restart: the progress as saved, the same journal.
            archive.compact(&mut archive.compactor(3), &archive.target).expect("resumes");
            assert_eq!(archive.remote_manifest(), expected, "after resuming from write {crash_at}");
            assert_eq!(archive.record_keys(), final_keys, "leftovers after a crash at write {crash_at}");
        }
    }
}

#[test]
fn compaction_off_does_nothing_and_a_foreign_progress_file_is_set_aside() {
    let archive = archive("off", 10);
    assert_eq!(archive.compact(&mut archive.compactor(0), &archive.target).expect("off"), []);
    let path = crate::statedir::compaction(&archive.dir, STREAM);
    std::fs::write(&path, "walship-compaction v1\nlevel2-through 500\n").expect("write");
    let compactor = archive.compactor(4);
    assert_eq!(compactor.progress(), &Progress::default(), "reaches past the journal's end");
    std::fs::write(&path, "junk").expect("write");
    assert_eq!(archive.compactor(4).progress(), &Progress::default());
}

#[test]
fn a_rebuild_of_more_records_than_a_group_adopts_them_all_in_order() {
    let count = 2 * super::super::ADOPT_WEIGHT as u64 + 7;
    let archive = archive("chunks", count);
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let wiped = archive.dir.join("wiped");
    std::fs::create_dir_all(wiped.join(STREAM)).expect("mkdir");
    let (mut rebuilt, _) =
        Journal::open(&crate::statedir::journal(&wiped, STREAM), &rules, |_| {}).expect("open");
    let mut chunks = 0;
    let caught_up = super::super::catch_up(
        &mut rebuilt,
        &archive.target,
        None,
        |records| {
            chunks += 1;
            assert!(records.len() <= super::super::ADOPT_WEIGHT, "a group of {}", records.len());
            Ok(())
        },
        |_| {},
    );
    assert_eq!(caught_up.expect("rebuilt").adopted as u64, count + 2, "every record, a snapshot, a prune");
    assert_eq!(chunks, 3, "the prune, the snapshot and the log, in groups of 1 segment per record");
    let read = |path: &std::path::Path| crate::manifest::read_all(path, &rules).expect("read").manifest;
    assert_eq!(read(rebuilt.path()), archive.journal_manifest());
}

#[test]
fn an_incomplete_group_is_not_read_again_until_the_journal_grows() {
    let archive = archive("idle", 10);
    let mut compactor = archive.compactor(4);
    archive.compact(&mut compactor, &archive.target).expect("compacts");
    assert_eq!(compactor.progress().through(), Some(7), "two groups of 4, 2 records left");
    // The journal is not read again while it has not grown: here it could
    // not be (it is gone), yet the step finds nothing to do.
    std::fs::rename(archive.journal.path(), archive.dir.join("aside")).expect("move");
    assert_eq!(compactor.step(&archive.target, &archive.journal).expect("nothing read"), None);
    std::fs::rename(archive.dir.join("aside"), archive.journal.path()).expect("move back");
}

#[test]
fn a_reader_that_finds_a_listed_object_folded_lists_again() {
    let archive = archive("mid-read", 20);
    let expected = archive.journal_manifest();
    // A compaction step runs between the reader's listing and its first
    // download: what a reader meets while the daemon compacts.
    let compacted = Mutex::new(false);
    let compact_once = |_key: &str| {
        let mut compacted = compacted.lock().unwrap();
        if !*compacted {
            *compacted = true;
            archive.compact(&mut archive.compactor(3), &archive.target).expect("compacts");
        }
    };
    let target = Hooked { before_get: Some(Box::new(compact_once)), ..Hooked::new(&archive.target) };
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let (manifest, _) = super::super::remote_after(&target, &rules, &Sequences::default(), None)
        .expect("read again after the fold");
    assert_eq!(manifest, expected);
    assert!(archive.record_keys().iter().any(|key| key.ends_with(".l2")), "the fold happened");
}

/// The memory target, listing two keys per page (and failing, if asked,
/// after the first page).
fn two_per_page(inner: &MemoryTarget, fail_after_first: bool) -> Hooked<'_> {
    let pages: PagesHook<'_> = Box::new(move |prefix, start_after, visit| {
        for (index, page) in inner.list(prefix, start_after)?.chunks(2).enumerate() {
            if index == 1 && fail_after_first {
                return Err(TargetError::Transient {
                    op: "list".into(),
                    key: prefix.into(),
                    detail: "x".into(),
                });
            }
            if !visit(page.to_vec()) {
                break;
            }
        }
        Ok(())
    });
    Hooked { pages: Some(pages), ..Hooked::new(inner) }
}

#[test]
fn batch_objects_are_walked_page_by_page_and_a_listing_failure_is_reported() {
    let memory = MemoryTarget::default();
    for position in 0..7 {
        memory.insert(&keys::batch_key(STREAM, position, position), b"x");
    }
    let paged = two_per_page(&memory, false);
    let all = super::super::with_batch_objects(&paged, STREAM, |objects| {
        Ok(objects.map(|o| o.key).collect::<Vec<_>>())
    });
    let expected: Vec<String> = (0..7).map(|p| keys::batch_key(STREAM, p, p)).collect();
    assert_eq!(all.expect("listed"), expected);
    let first = super::super::with_batch_objects(&paged, STREAM, |objects| Ok(objects.next().map(|o| o.key)));
    assert_eq!(first.expect("stops early"), Some(expected[0].clone()));
    let failing = two_per_page(&memory, true);
    let error = super::super::with_batch_objects(&failing, STREAM, |objects| Ok(objects.count()));
    assert!(error.expect_err("the listing failed").to_string().contains("list"), "reported");
}

/// The archive's target, whose `list` misses the log records below
/// `below` (or, with `tail`, from `below` on) `misses` times (as a listing
/// misses the records a compaction step folded while it passed: the larger
/// object written behind it, the smaller ones deleted ahead of it), while
/// its first page, listed again (`list_pages`), shows them.
fn missing(archive: &Archive, below: u64, tail: bool, misses: usize) -> Hooked<'_> {
    let misses = Mutex::new(misses);
    let listed = move |listed: &mut Vec<ObjectInfo>| {
        let mut misses = misses.lock().unwrap();
        if *misses > 0 {
            *misses -= 1;
            listed.retain(|object| match RecordKey::parse(STREAM, &object.key) {
                Some(RecordKey::Log { first, .. }) => (first >= below) != tail,
                _ => true,
            });
        }
    };
    Hooked { listed: Some(Box::new(listed)), ..Hooked::new(&archive.target) }
}

/// A stream may begin at any position, so a reader that knows nothing
/// cannot tell a listing that missed the first records from a later start
/// by the log alone: it lists the first page again and, finding records
/// below, lists again; a start that keeps moving is an error, never a
/// shorter log. (Found by two nodes compacting under load: a reader got
/// the log from 7.)
#[test]
fn a_reader_that_knows_nothing_lists_again_when_the_start_was_missed() {
    let archive = archive("missing-start", 20);
    let expected = archive.journal_manifest();
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let once = missing(&archive, 7, false, 1);
    let (manifest, _) =
        super::super::remote_after(&once, &rules, &Sequences::default(), None).expect("listed again");
    assert_eq!(manifest, expected);
    let always = missing(&archive, 7, false, usize::MAX);
    let error = super::super::remote_after(&always, &rules, &Sequences::default(), None)
        .expect_err("never a log from 7");
    assert!(error.to_string().contains("records from 0 below it, three times over"), "{error}");
}

/// The same at the log's end: a listing that missed the newest records (a
/// fold of them while it passed) would end the log early without a sign,
/// so the page after the last log record object is listed again.
#[test]
fn a_reader_lists_again_when_records_beyond_the_end_appear() {
    let archive = archive("missing-tail", 20);
    let expected = archive.journal_manifest();
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let once = missing(&archive, 12, true, 1);
    let (manifest, _) =
        super::super::remote_after(&once, &rules, &Sequences::default(), None).expect("listed again");
    assert_eq!(manifest, expected);
}
