use std::fs;

use crate::util::*;

fn archived_setup(name: &str) -> Setup {
    let setup = Setup::new(name, 5, "seal = spool");
    setup.write_segments(1..=20, 700);
    setup.ok(&["run", "--once"]);
    setup
}

/// Power loss mid-append: the torn final record is dropped with a warning
/// that names the file, and the record comes back from the archive.
#[test]
fn torn_final_record_is_dropped_with_a_warning() {
    let setup = archived_setup("torn");
    let journal = fs::read(setup.journal()).unwrap();
    fs::write(setup.journal(), &journal[..journal.len() - 40]).unwrap();

    let out = setup.walship(&["list"]);
    assert_success(&out, &["list"]);
    assert!(stderr(&out).contains(setup.journal().to_str().unwrap()), "{}", stderr(&out));
    assert!(stdout(&out).contains("4 batches, 20 segments"), "{}", stdout(&out));

    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(stderr(&out).to_lowercase().contains("torn"), "{}", stderr(&out));
    assert_eq!(fs::read(setup.journal()).unwrap(), journal, "journal not healed from the archive");
}

/// Damage anywhere but the end is an error naming the file and the line.
#[test]
fn corrupted_middle_record_is_an_error_naming_file_and_line() {
    let setup = archived_setup("corrupt");
    let text = fs::read_to_string(setup.journal()).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[2] = lines[2].replacen("size=", "size=9", 1);
    fs::write(setup.journal(), lines.join("\n") + "\n").unwrap();

    for args in [&["list"][..], &["run", "--once"]] {
        let out = setup.walship(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let expected = format!("{}:3", setup.journal().display());
        assert!(stderr(&out).contains(&expected), "{args:?} should name {expected}: {}", stderr(&out));
    }
}
