//! An archive written by the first release (manifest format v1, fixture in
//! tests/fixtures/v1-archive/, see its README) is listed, restored byte for
//! byte, verified and continued by this walship, and its journal upgraded
//! to v2 without loss.

use std::fs;
use std::path::Path;

use crate::util::*;

/// Copy `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The fixture's archive and state in a fresh setup whose stream directory
/// holds the fixture's original segments. Same settings as when it was made.
fn v1_setup(name: &str) -> Setup {
    let setup = Setup::new(name, 3, "seal = spool");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-archive");
    copy_tree(&fixture.join("archive"), &setup.archive);
    copy_tree(&fixture.join("state"), &setup.state);
    copy_tree(&fixture.join("segments"), &setup.src);
    setup
}

fn fixture_segments() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-archive/segments")
}

#[test]
fn v1_archive_is_listed_restored_and_verified_as_it_is() {
    let setup = v1_setup("v1-read");
    let journal = fs::read_to_string(setup.journal()).unwrap();
    assert!(journal.starts_with("walship-manifest v1\n"));

    let listed = setup.ok(&["list"]);
    assert!(listed.contains("stream s: 5 batches, 12 segments, 348 B, 1 gap, positions 0..12"), "{listed}");
    let verified = setup.ok(&["verify", "--deep"]);
    assert!(verified.contains("5 batches checked (deep)"), "{verified}");

    let out = setup.dir.path.join("restored");
    let to = out.to_str().unwrap();
    let stopped = setup.walship(&["restore", "-s", "s", "--to", to]);
    assert_eq!(stopped.status.code(), Some(1), "restore must stop at the gap: {}", stderr(&stopped));
    fs::remove_dir_all(&out).unwrap();
    setup.ok(&["restore", "-s", "s", "--to", to, "--allow-gaps"]);
    assert_same_files(&fixture_segments(), &out);

    assert_eq!(fs::read_to_string(setup.journal()).unwrap(), journal, "reading must not rewrite the journal");
}

#[test]
fn v1_archive_is_continued_and_its_journal_upgraded_without_loss() {
    let setup = v1_setup("v1-continue");
    let v1_journal = fs::read_to_string(setup.journal()).unwrap();
    setup.write_segments(13..=17, 300);

    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    let log = stderr(&out);
    assert!(log.contains("upgraded the journal from manifest format v1 to v2 (6 records)"), "{log}");
    assert!(log.contains(&format!("kept as {}.v1", setup.journal().display())), "{log}");
    assert!(stdout(&out).contains("archived 2 batches (5 segments"), "{}", stdout(&out));
    assert_eq!(fs::read_to_string(setup.state.join("s/manifest.v1")).unwrap(), v1_journal);
    let journal = fs::read_to_string(setup.journal()).unwrap();
    assert!(journal.starts_with("walship-manifest v2\n"), "{journal}");
    assert_eq!(journal.lines().count(), 1 + 6 + 2, "{journal}");

    let listed = setup.ok(&["list"]);
    assert!(listed.contains("stream s: 7 batches, 17 segments"), "{listed}");
    assert!(listed.contains("1 gap, positions 0..17"), "{listed}");
    setup.ok(&["verify", "--deep"]);

    let out = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", out.to_str().unwrap(), "--allow-gaps"]);
    assert_same_files(&setup.src, &out);
}

#[test]
fn v1_remote_records_alone_rebuild_the_manifest() {
    let setup = v1_setup("v1-rebuild");
    fs::remove_dir_all(&setup.state).unwrap();
    let listed = setup.ok(&["list"]);
    assert!(listed.contains("stream s: 5 batches, 12 segments, 348 B, 1 gap, positions 0..12"), "{listed}");
    setup.write_segments(13..=13, 300);
    setup.ok(&["run", "--once"]);
    assert!(setup.ok(&["list"]).contains("6 batches, 13 segments"));
    setup.ok(&["verify", "--deep"]);
}
