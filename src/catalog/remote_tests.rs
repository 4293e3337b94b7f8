//! A reader with no journal reads the remote records an entry at a time:
//! what it downloads, and how much it has handed out when it downloads
//! the next record object (a whole chunk of objects parsed before any
//! record was handed out took 45 MiB after a first prune of 1,000,000
//! records).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::hooked::{Hooked, PagesHook};
use crate::catalog::entry_key;
use crate::catalog::reader::{ManifestReader, Reach};
use crate::manifest::validate::tests::{batch, naming};
use crate::manifest::{Entry, PruneRecord, Record, Sequences, StreamRules, format};
use crate::target::keys::{self, LogLevel, RecordKey};
use crate::target::memory::MemoryTarget;
use crate::target::{ObjectInfo, Target};

const STREAM: &str = "s";

/// A step run before the GET of a key, once (a compaction step meanwhile).
type Fold = Box<dyn FnOnce(&MemoryTarget) + Send>;

/// A target in memory whose GETs of record objects note how many log
/// records the reader had handed out (`handed`, counted by the test's
/// visitor) when each was asked for, and whose listings (`list` and
/// `list_pages`) are counted.
#[derive(Default)]
struct Watched {
    inner: MemoryTarget,
    handed: AtomicUsize,
    gets: Mutex<Vec<(String, usize)>>,
    fold: Mutex<Option<(String, Fold)>>,
    lists: AtomicUsize,
}

impl Watched {
    fn hand_out(&self) {
        self.handed.fetch_add(1, Ordering::SeqCst);
    }

    /// The record objects asked for since the last call, with what had
    /// been handed out by then.
    fn take_gets(&self) -> Vec<(String, usize)> {
        std::mem::take(&mut *self.gets.lock().unwrap())
    }

    /// The target the reader is given.
    fn target(&self) -> Hooked<'_> {
        let before_get = move |key: &str| {
            let key_name = key.trim_start_matches("s/manifest/").to_string();
            self.gets.lock().unwrap().push((key_name, self.handed.load(Ordering::SeqCst)));
            let mut fold = self.fold.lock().unwrap();
            if fold.as_ref().is_some_and(|(at, _)| at == key) {
                let (_, step) = fold.take().unwrap();
                step(&self.inner);
            }
        };
        let listed = move |_: &mut Vec<ObjectInfo>| {
            self.lists.fetch_add(1, Ordering::SeqCst);
        };
        let pages: PagesHook<'_> = Box::new(move |prefix, start_after, visit| {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list_pages(prefix, start_after, visit)
        });
        Hooked {
            before_get: Some(Box::new(before_get)),
            listed: Some(Box::new(listed)),
            pages: Some(pages),
            ..Hooked::new(&self.inner)
        }
    }
}

fn records(count: u64) -> Vec<Record> {
    (0..count).map(|p| batch(STREAM, p, &[format!("segment {p}").as_bytes()])).collect()
}

fn compacted_key(first: u64, last: u64, level: u8) -> String {
    RecordKey::Log { first, last, level: LogLevel::Compacted(level) }.key(STREAM)
}

/// Store `records[first..=last]` as one compacted object.
fn put_compacted(target: &MemoryTarget, records: &[Record], first: u64, last: u64, level: u8) {
    let text = format::serialize_log(&records[first as usize..=last as usize]);
    target.insert(&compacted_key(first, last, level), text.as_bytes());
}

/// Store each record as its level-0 object.
fn put_level0(target: &MemoryTarget, records: &[Record]) {
    for record in records {
        let entry = Entry::Log(record.clone());
        target.insert(&entry_key(STREAM, &entry), format::serialize(std::slice::from_ref(&entry)).as_bytes());
    }
}

/// Two prune records: positions before 3, then before 5, their batches.
fn put_prunes(target: &MemoryTarget) {
    for (sequence, from, before) in [(1, 0, 3), (2, 3, 5)] {
        let deleted = (from..before).map(|p| keys::batch_key(STREAM, p, p)).collect();
        let entry = Entry::Prune(PruneRecord { sequence, before, deleted });
        target.insert(&entry_key(STREAM, &entry), format::serialize(std::slice::from_ref(&entry)).as_bytes());
    }
}

/// 30 records: 0..9 compacted, 10..29 level 0, two prunes (before 5).
fn archive() -> (Watched, Vec<Record>) {
    let target = Watched::default();
    let log = records(30);
    put_compacted(&target.inner, &log, 0, 9, 1);
    put_level0(&target.inner, &log[10..]);
    put_prunes(&target.inner);
    (target, log)
}

/// A state directory that holds nothing (wiped, another machine).
fn empty_state(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("walship-remote-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn level0_name(position: u64) -> String {
    format!("{position:016x}-{position:016x}.batch")
}

#[test]
fn a_reader_without_a_journal_hands_out_each_object_before_downloading_the_next() {
    let (watched, log) = archive();
    let target = watched.target();
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let state = empty_state("each-object");
    let mut seen = Vec::new();
    let reader = ManifestReader::open_visiting(&state, &target, &rules, Reach::End, |record| {
        watched.hand_out();
        seen.push(record.clone());
    })
    .expect("opens");
    assert_eq!(seen, log);
    let mut expected = vec![
        ("prune-0000000000000001".to_string(), 0),
        ("prune-0000000000000002".to_string(), 0),
        (format!("{:016x}-{:016x}.l1", 0, 9), 0),
    ];
    // Each object's records are handed out before the next one is asked for.
    expected.extend((10..30).map(|p| (level0_name(p), p as usize)));
    assert_eq!(watched.take_gets(), expected);
    assert_eq!(reader.pruned_before(), Some(5));
    for position in 0..5 {
        assert!(reader.deleted_batches().contains_key(STREAM, &keys::batch_key(STREAM, position, position)));
    }
    assert!(!reader.deleted_batches().contains_key(STREAM, &keys::batch_key(STREAM, 5, 5)));
}

#[test]
fn later_passes_read_the_log_again_but_not_the_prune_records() {
    let (watched, log) = archive();
    let target = watched.target();
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let state = empty_state("passes");
    let reader = ManifestReader::open(&state, &target, &rules, Reach::End).expect("opens");
    watched.take_gets();
    let mut live = Vec::new();
    reader
        .each_live_record(|record| {
            live.push(record);
            Ok(true)
        })
        .expect("a pass");
    assert_eq!(live, log[5..], "the records from the pruned mark on");
    let gets: Vec<String> = watched.take_gets().into_iter().map(|(key, _)| key).collect();
    assert!(gets.iter().all(|key| !key.starts_with("prune-")), "{gets:?}");
    assert_eq!(gets.len(), 21, "the log's objects, once each: {gets:?}");
    // A pass that stops reads no further object.
    let mut first = None;
    reader
        .each_live_record(|record| {
            first = Some(record);
            Ok(false)
        })
        .expect("a pass");
    assert_eq!(first.as_ref(), Some(&log[5]));
    assert_eq!(watched.take_gets(), [(format!("{:016x}-{:016x}.l1", 0, 9), 0)]);
}

#[test]
fn compacted_and_level_zero_objects_mixed_read_as_one_log() {
    let watched = Watched::default();
    let target = watched.target();
    let log = records(30);
    // A crash after each compaction's write: the level-0 objects it
    // folded are still there; 20 is also in a compacted object of its own
    // range (the same record twice); 21..25 overlap 24..29's object.
    put_level0(&watched.inner, &log);
    put_compacted(&watched.inner, &log, 0, 9, 2);
    put_compacted(&watched.inner, &log, 0, 4, 1);
    put_compacted(&watched.inner, &log, 10, 19, 1);
    put_compacted(&watched.inner, &log, 20, 20, 1);
    put_compacted(&watched.inner, &log, 21, 25, 1);
    put_compacted(&watched.inner, &log, 24, 29, 1);
    put_prunes(&watched.inner);
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let state = empty_state("mixed");
    let mut seen = Vec::new();
    let reader = ManifestReader::open_visiting(&state, &target, &rules, Reach::End, |record| {
        seen.push(record.clone());
    })
    .expect("opens");
    assert_eq!(seen, log);
    let mut live = Vec::new();
    reader
        .each_live_record(|record| {
            live.push(record);
            Ok(true)
        })
        .expect("a pass");
    assert_eq!(live, log[5..]);
}

/// A compaction step between two downloads: the objects not read yet are
/// folded, with records already handed out, into a larger one (written,
/// then the smaller ones deleted). The reader lists again and goes on
/// from the last record it handed out: none twice, none skipped.
#[test]
fn a_fold_after_some_records_were_handed_out_resumes_by_position() {
    let watched = Watched::default();
    let target = watched.target();
    let log = records(20);
    put_compacted(&watched.inner, &log, 0, 9, 1);
    put_level0(&watched.inner, &log[10..]);
    let folded = log.clone();
    let fold: Fold = Box::new(move |inner: &MemoryTarget| {
        put_compacted(inner, &folded, 0, 19, 2);
        let mut gone = vec![compacted_key(0, 9, 1)];
        gone.extend(folded[10..].iter().map(|r| entry_key(STREAM, &Entry::Log(r.clone()))));
        inner.delete(&gone).expect("folded");
    });
    *watched.fold.lock().unwrap() = Some((entry_key(STREAM, &Entry::Log(log[12].clone())), fold));
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let state = empty_state("fold");
    let mut seen = Vec::new();
    let reader = ManifestReader::open_visiting(&state, &target, &rules, Reach::End, |record| {
        watched.hand_out();
        seen.push(record.clone());
    })
    .expect("opens");
    assert_eq!(seen, log, "every record once, in order");
    let gets = watched.take_gets();
    assert_eq!(gets.last(), Some(&(format!("{:016x}-{:016x}.l2", 0, 19), 12)), "{gets:?}");
    let mut again = Vec::new();
    reader
        .each_live_record(|record| {
            again.push(record);
            Ok(true)
        })
        .expect("a pass");
    assert_eq!(again, log);
}

/// A refusal by the caller is final: the entry is counted as handed out,
/// so listing again would skip it. Only a failure to read lists again.
#[test]
fn a_refusal_by_the_caller_never_lists_again() {
    let (watched, _) = archive();
    let target = watched.target();
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let mut taken = 0;
    let refused = super::each_remote_entry(&target, &rules, &Sequences::default(), None, &mut |_| {
        taken += 1;
        match taken {
            4 => Err(crate::error::Error::Usage("refused".into())),
            _ => Ok(true),
        }
    });
    assert!(refused.expect_err("refused").to_string().contains("refused"));
    // One listing and its first page listed again (a reader that knows
    // nothing checks the start), no second listing.
    assert_eq!(watched.lists.load(Ordering::SeqCst), 2, "no listing again");
    assert_eq!(watched.take_gets().len(), 3, "the two prunes, then the object of the refused record");
}

/// A record object listed every time but gone every time it is read (a
/// compaction folding records faster than they are read, or a store
/// listing what it cannot serve): after three listings an error that says
/// so and to try again, not a bare "not found" that reads as a lost record.
#[test]
fn a_listed_object_gone_in_every_listing_is_an_error_saying_try_again() {
    let (watched, log) = archive();
    let phantom = entry_key(STREAM, &Entry::Log(records(31).pop().expect("a record")));
    let listed = |listed: &mut Vec<ObjectInfo>| {
        watched.lists.fetch_add(1, Ordering::SeqCst);
        listed.push(ObjectInfo { key: phantom.clone(), size: 100, crc32: None });
    };
    let target = Hooked { listed: Some(Box::new(listed)), ..watched.target() };
    let naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let mut taken = 0;
    let error = super::each_remote_entry(&target, &rules, &Sequences::default(), None, &mut |_| {
        taken += 1;
        Ok(true)
    })
    .expect_err("the object is never there");
    let message = error.to_string();
    assert!(message.contains(&phantom) && message.contains("try again"), "{message}");
    assert_eq!(taken, 2 + log.len(), "each record handed out once, the listings resumed after it");
}
