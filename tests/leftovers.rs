//! What a killed walship leaves behind is cleaned by the next run of the
//! same command: only walship's own temp names, only files older than the
//! process.

use std::fs;
use std::time::{Duration, SystemTime};

use crate::util::{Setup, segment_name};

/// A restore killed by SIGKILL leaves `.NAME.PID-N.walship-tmp` in DIR (a
/// 114 MB one in a test with a 286 MiB segment). Running the restore again
/// succeeded but left the temp file there for good.
#[test]
fn temp_file_left_by_a_killed_restore_is_removed_by_the_next_restore() {
    let setup = Setup::new("restore-leftover", 5, "seal = spool");
    setup.write_segments(1..=5, 700);
    setup.ok(&["run", "--once"]);
    let to = setup.dir.path.join("restored");
    fs::create_dir_all(&to).unwrap();
    let stale = to.join(format!(".{}.4194303-0.walship-tmp", segment_name(3)));
    let file = fs::File::create(&stale).unwrap();
    file.set_len(1 << 20).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
    drop(file);
    let foreign = to.join(".notes.walship-tmp");
    fs::write(&foreign, b"not walship's").unwrap();

    setup.ok(&["restore", "-s", "s", "--to", to.to_str().unwrap()]);
    assert!(to.join(segment_name(3)).exists());
    assert!(!stale.exists(), "the killed restore's temp file is still in DIR");
    assert!(foreign.exists(), "a name that is not walship's temp name was removed");
}
