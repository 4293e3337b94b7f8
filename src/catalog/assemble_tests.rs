//! Table tests for turning listed record objects into entries.

use super::*;
use crate::manifest::validate::tests::{batch, naming};
use crate::manifest::{GapRecord, PruneRecord};
use crate::naming::Naming;

const STREAM: &str = "s";

fn gap(first: u64, last: u64, reason: &str) -> Record {
    Record::Gap(GapRecord { first, last, reason: reason.into() })
}

fn level0(record: &Record) -> String {
    keys::record_key(STREAM, record.first(), record.last(), record.kind())
}

fn compacted(first: u64, last: u64, level: u8) -> String {
    RecordKey::Log { first, last, level: LogLevel::Compacted(level) }.key(STREAM)
}

/// A fetched object holding `records` under `key`.
fn object(key: &str, records: &[Record]) -> Fetched {
    Fetched { key: key.to_string(), text: format::serialize_log(records).into_bytes() }
}

fn single(record: &Record) -> Fetched {
    object(&level0(record), std::slice::from_ref(record))
}

fn listed(key: &str, size: u64) -> ObjectInfo {
    ObjectInfo { key: key.to_string(), size, crc32: None }
}

fn run(known: &Sequences, fetched: &[Fetched]) -> Result<Manifest, ManifestError> {
    let naming: Naming = naming();
    assemble(&StreamRules::new(STREAM, &naming), known, fetched)
}

fn known_up_to(last: u64) -> Sequences {
    Sequences { last: Some(LogSpan { first: 0, last, kind: "gap" }), ..Sequences::default() }
}

#[test]
fn level_zero_objects_make_the_log_in_order() {
    let records = [batch(STREAM, 0, &[b"a"]), gap(1, 3, "lost"), batch(STREAM, 4, &[b"b", b"c"])];
    let fetched: Vec<Fetched> = records.iter().rev().map(single).collect();
    assert_eq!(run(&Sequences::default(), &fetched).expect("assembles").log, records);
    let after = run(&known_up_to(0), &fetched).expect("assembles");
    assert_eq!(after.log, records[1..]);
}

#[test]
fn a_missing_record_object_is_a_hole_naming_both_neighbours() {
    let (a, c) = (gap(0, 3, "a"), gap(7, 9, "c"));
    let error = run(&Sequences::default(), &[single(&a), single(&c)]).expect_err("hole");
    assert!(matches!(error, ManifestError::Hole { first: 4, last: 6, .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("between {} and {}: positions 4..6", level0(&a), level0(&c))),
        "{text}"
    );
}

#[test]
fn remote_records_must_continue_the_journal() {
    let later = gap(6, 9, "b");
    let error = run(&known_up_to(3), &[single(&later)]).expect_err("hole after the journal");
    assert!(matches!(error, ManifestError::Hole { first: 4, last: 5, .. }), "{error}");
    assert!(error.to_string().contains(&format!("before {}", level0(&later))), "{error}");
    let straddling = gap(2, 9, "b");
    let error = run(&known_up_to(3), &[single(&straddling)]).expect_err("overlaps the journal");
    assert!(error.to_string().contains("overlaps the local journal's last position 3"), "{error}");
}

#[test]
fn objects_must_hold_what_their_keys_say() {
    let record = gap(0, 3, "a");
    let cases = [
        object(&keys::record_key(STREAM, 0, 4, "gap"), std::slice::from_ref(&record)),
        object(&keys::record_key(STREAM, 0, 3, "batch"), std::slice::from_ref(&record)),
        object(&level0(&record), &[record.clone(), gap(4, 4, "b")]),
        object(&level0(&record), &[]),
        object(&compacted(0, 9, 1), &[record.clone(), gap(4, 8, "b")]),
        object(&RecordKey::Snapshot { position: 0 }.key(STREAM), std::slice::from_ref(&record)),
        object(&RecordKey::Prune { sequence: 1 }.key(STREAM), std::slice::from_ref(&record)),
        object("s/manifest/junk", std::slice::from_ref(&record)),
    ];
    for fetched in cases {
        let error = run(&Sequences::default(), std::slice::from_ref(&fetched)).expect_err("hostile");
        assert!(error.to_string().starts_with(&fetched.key), "{}: {error}", fetched.key);
    }
}

#[test]
fn hostile_content_is_refused_naming_the_key() {
    let mut passwd = batch(STREAM, 0, &[b"root"]);
    if let Record::Batch(b) = &mut passwd {
        b.segments[0].name = "passwd".into();
    }
    let key = level0(&passwd);
    let text = format::serialize_log(std::slice::from_ref(&passwd)).into_bytes();
    let error = run(&Sequences::default(), &[Fetched { key: key.clone(), text }]).expect_err("hostile");
    assert!(
        error.to_string().starts_with(&format!(
            "{key}:2: invalid remote manifest record: segment 0: segment name `passwd`"
        ))
    );
    let flipped = Fetched {
        key: key.clone(),
        text: b"walship-manifest v2\n00000000 gap first=0 last=0 reason=x\n".to_vec(),
    };
    let error = run(&Sequences::default(), &[flipped]).expect_err("damaged");
    assert!(
        error.to_string().starts_with(&format!(
            "{key}:2: damaged remote manifest record (incomplete or corrupt final line"
        )),
        "{error}"
    );
}

#[test]
fn overlapping_level_zero_objects_conflict_naming_both_keys() {
    let (a, b) = (gap(0, 5, "a"), gap(3, 9, "b"));
    let error = run(&Sequences::default(), &[single(&a), single(&b)]).expect_err("conflict");
    let ManifestError::Conflict { first_key, second_key, .. } = &error else { panic!("{error}") };
    let mut named = [first_key.clone(), second_key.clone()];
    named.sort();
    assert_eq!(named, [level0(&a), level0(&b)]);
}

#[test]
fn the_larger_object_wins_and_identical_records_are_one() {
    let records = [gap(0, 3, "a"), batch(STREAM, 4, &[b"x", b"y"]), gap(6, 9, "b")];
    let big = object(&compacted(0, 9, 1), &records);
    let small: Vec<Fetched> = records.iter().map(single).collect();
    let mut all = vec![big.clone()];
    all.extend(small.iter().cloned());
    assert_eq!(run(&Sequences::default(), &all).expect("identical").log, records);
    let listing = classify(
        STREAM,
        all.iter()
            .map(|f| listed(&f.key, f.text.len() as u64))
            .chain([listed("s/manifest/notes.txt", 3)])
            .collect(),
    );
    let wanted: Vec<&str> =
        to_fetch(&listing, &Sequences::default()).expect("plan").iter().map(|o| o.key.as_str()).collect();
    assert_eq!(wanted, [big.key.as_str()], "objects inside a larger one are not fetched");
    assert_eq!(listing.foreign, ["s/manifest/notes.txt"]);
}

#[test]
fn a_smaller_object_that_differs_conflicts_with_the_larger() {
    let records = [gap(0, 3, "a"), gap(4, 9, "b")];
    let big = object(&compacted(0, 9, 2), &records);
    let forged = single(&gap(4, 9, "forged"));
    let error = run(&Sequences::default(), &[forged.clone(), big.clone()]).expect_err("conflict");
    let ManifestError::Conflict { first_key, second_key, message } = &error else { panic!("{error}") };
    assert_eq!((first_key, second_key), (&big.key, &forged.key));
    assert!(message.contains("with different content"), "{message}");
    let split = [single(&gap(4, 5, "b")), big];
    let error = run(&Sequences::default(), &split).expect_err("overlap");
    assert!(matches!(error, ManifestError::Conflict { .. }), "{error}");
}

#[test]
fn fetch_plan_skips_what_the_journal_has_and_refuses_absurd_sizes() {
    let keys = [
        keys::record_key(STREAM, 0, 3, "gap"),
        keys::record_key(STREAM, 4, 9, "gap"),
        RecordKey::Prune { sequence: 1 }.key(STREAM),
        RecordKey::Prune { sequence: 2 }.key(STREAM),
        RecordKey::Snapshot { position: 3 }.key(STREAM),
    ];
    let listing = classify(STREAM, keys.iter().map(|k| listed(k, 100)).collect());
    let known = Sequences { last_prune: Some((1, 0)), last_snapshot: Some(3), ..known_up_to(3) };
    let wanted: Vec<&str> =
        to_fetch(&listing, &known).expect("plan").iter().map(|o| o.key.as_str()).collect();
    assert_eq!(wanted, [keys[1].as_str(), keys[3].as_str()]);
    let huge = classify(STREAM, vec![listed(&keys[1], MAX_RECORD_OBJECT + 1)]);
    let error = to_fetch(&huge, &known).expect_err("absurd");
    assert!(error.to_string().contains("far larger than any record object"), "{error}");
}

#[test]
fn prunes_and_snapshots_come_back_and_the_mark_excuses_pruned_holes() {
    let prune = PruneRecord { sequence: 1, before: 10, deleted: vec![keys::batch_key(STREAM, 0, 3)] };
    let prune_object = Fetched {
        key: RecordKey::Prune { sequence: 1 }.key(STREAM),
        text: format::serialize(&[Entry::Prune(prune.clone())]).into_bytes(),
    };
    let (old, live) = (gap(0, 3, "old"), gap(10, 12, "live"));
    let assembled = run(&Sequences::default(), &[single(&old), single(&live), prune_object]).expect("pruned");
    assert_eq!((assembled.log, assembled.prunes), (vec![old, live.clone()], vec![prune]));
    let error =
        run(&Sequences::default(), &[single(&gap(0, 3, "old")), single(&live)]).expect_err("not pruned");
    assert!(matches!(error, ManifestError::Hole { first: 4, last: 9, .. }), "{error}");
}

#[test]
fn batch_objects_without_records() {
    let log = vec![batch(STREAM, 4, &[b"a"]), gap(5, 6, "lost"), batch(STREAM, 7, &[b"b"])];
    let manifest = Manifest { log, ..Manifest::default() };
    let objects = |ranges: &[(u64, u64)]| -> Vec<ObjectInfo> {
        ranges.iter().map(|&(f, l)| listed(&keys::batch_key(STREAM, f, l), 1)).collect()
    };
    // The scan over the whole log at once.
    fn unrecorded(objects: &[ObjectInfo], manifest: &Manifest) -> Result<Vec<Unrecorded>, ManifestError> {
        let mut scan = UnrecordedScan::new(STREAM, objects.iter().cloned(), manifest.pruned_before());
        manifest.live_log().iter().try_for_each(|record| scan.record(record))?;
        Ok(scan.finish())
    }
    let found = unrecorded(&objects(&[(4, 4), (5, 6), (7, 7), (8, 9)]), &manifest);
    assert_eq!(
        found.expect("no hole"),
        [
            Unrecorded::Orphan(keys::batch_key(STREAM, 5, 6)),
            Unrecorded::Pending(keys::batch_key(STREAM, 8, 9))
        ]
    );
    let error = unrecorded(&objects(&[(0, 3), (4, 4)]), &manifest).expect_err("lost first record");
    assert!(matches!(error, ManifestError::Hole { first: 0, last: 3, .. }), "{error}");
    assert!(error.to_string().starts_with(&keys::batch_key(STREAM, 0, 3)), "{error}");
    let pruned =
        Manifest { prunes: vec![PruneRecord { sequence: 1, before: 4, deleted: vec![] }], ..manifest };
    assert_eq!(unrecorded(&objects(&[(0, 3)]), &pruned).expect("pruned"), []);
}

#[test]
fn ranges_inside_larger_ones() {
    let ranges =
        vec![(0, 999), (0, 0), (1, 3), (0, 999), (1000, 1999), (1500, 2500), (1500, 1600), (3000, 3000)];
    assert_eq!(inside_larger(ranges), [(0, 0), (1, 3), (1500, 1600)]);
    assert_eq!(inside_larger(vec![(5, 9), (5, 9)]), []);
}

#[test]
fn log_objects_below_the_journal_start_are_missing_from_it() {
    let keys = [
        keys::record_key(STREAM, 0, 0, "batch"),
        keys::record_key(STREAM, 1, 5, "gap"),
        compacted(6, 20, 1),
        keys::record_key(STREAM, 21, 21, "batch"),
        RecordKey::Prune { sequence: 0 }.key(STREAM),
        RecordKey::Snapshot { position: 2 }.key(STREAM),
    ];
    let listing = classify(STREAM, keys.iter().map(|key| listed(key, 10)).collect());
    type Row<'a> = (u64, Option<u64>, Option<(u64, u64, &'a str)>);
    let table: [Row<'_>; 7] = [
        (0, None, None),
        (1, None, Some((0, 0, keys[0].as_str()))),
        (6, None, Some((0, 5, keys[0].as_str()))),
        (6, Some(3), Some((3, 5, keys[1].as_str()))),
        (6, Some(6), None),
        (10, Some(8), Some((8, 9, keys[2].as_str()))),
        (22, Some(22), None),
    ];
    for (start, pruned_before, expected) in table {
        assert_eq!(
            missing_before(&listing, start, pruned_before),
            expected,
            "start {start}, {pruned_before:?}"
        );
    }
}

#[test]
fn batch_objects_within_a_range_are_found() {
    let objects: Vec<ObjectInfo> = [keys::batch_key(STREAM, 6, 10), keys::batch_key(STREAM, 11, 11)]
        .iter()
        .chain([keys::batch_key("other", 0, 100), format!("{}6-10", keys::batches_prefix(STREAM))].iter())
        .map(|key| listed(key, 1))
        .collect();
    let within = |first, last| batch_object_within(STREAM, &objects, first, last);
    assert_eq!(within(6, 6), Some(objects[0].key.as_str()));
    assert_eq!(within(10, 12), Some(objects[0].key.as_str()));
    assert_eq!(within(11, 20), Some(objects[1].key.as_str()));
    assert_eq!(within(0, 5), None, "another stream's or a foreign key is not this stream's batch");
    assert_eq!(within(12, u64::MAX), None);
}

#[test]
fn partially_overlapping_objects_must_agree_where_they_overlap() {
    let records = [gap(0, 3, "a"), gap(4, 5, "b"), gap(6, 9, "c"), gap(10, 12, "d")];
    let (first, second) =
        (object(&compacted(0, 9, 1), &records[..3]), object(&compacted(4, 12, 1), &records[1..]));
    let assembled = run(&Sequences::default(), &[second.clone(), first.clone()]).expect("they agree");
    assert_eq!(assembled.log, records);
    let forged = object(&compacted(4, 12, 1), &[gap(4, 5, "forged"), records[2].clone(), records[3].clone()]);
    let error = run(&Sequences::default(), &[first.clone(), forged.clone()]).expect_err("conflict");
    let ManifestError::Conflict { first_key, second_key, message } = &error else { panic!("{error}") };
    assert_eq!((first_key, second_key), (&first.key, &forged.key));
    assert!(message.contains("gap 4..5, the second gap 4..5 with different content"), "{message}");
}

/// A reader that lists again goes on from what it handed out: records
/// read again are passed over, and one that differs from a record it kept
/// for comparison is still a conflict (listing again must not hide it).
#[test]
fn an_assembly_resumed_passes_over_what_it_handed_out_and_still_finds_conflicts() {
    let naming: Naming = naming();
    let rules = StreamRules::new(STREAM, &naming);
    let records = [gap(0, 3, "a"), gap(4, 5, "b"), gap(6, 9, "c"), gap(10, 12, "d")];
    let first = object(&compacted(0, 9, 1), &records[..3]);
    let forged = object(&compacted(4, 12, 1), &[gap(4, 5, "forged"), records[2].clone(), records[3].clone()]);
    let mut assembly = Assembly::new(&Sequences::default());
    let mut handed = Vec::new();
    let mut read = |assembly: &mut Assembly, object: &Fetched, next_first| -> Result<(), ManifestError> {
        let mut entries = assembly.read(&rules, &object.key, &object.text, next_first)?;
        while let Some(entry) = entries.next_entry()? {
            handed.push(entry);
        }
        Ok(())
    };
    read(&mut assembly, &first, Some(4)).expect("the first object");
    let conflict = read(&mut assembly, &forged, None).expect_err("conflict");
    assert!(matches!(conflict, ManifestError::Conflict { .. }), "{conflict}");
    assembly.resume();
    let again = read(&mut assembly, &forged, None).expect_err("still a conflict after listing again");
    assert!(matches!(again, ManifestError::Conflict { .. }), "{again}");
    assembly.resume();
    let folded = object(&compacted(0, 12, 2), &records);
    read(&mut assembly, &folded, None).expect("the records after those handed out");
    let expected: Vec<Entry> = records.iter().cloned().map(Entry::Log).collect();
    assert_eq!(handed, expected, "nothing twice, nothing skipped");
}
