//! Whole-file tests of the configuration: the SPEC example, every key set,
//! syntax, structure errors, robustness, and reading files.

use std::path::PathBuf;
use std::time::Duration;

use super::test_support::*;
use super::*;
use crate::naming::Naming;
use crate::target::url::TargetUrl;

#[test]
fn spec_example_parses_with_every_key() {
    let config = parse_text(SPEC_EXAMPLE).expect("the SPEC example is valid");
    let global = &config.global;
    assert_eq!(config.path, PathBuf::from("walship.conf"));
    assert_eq!(global.state_dir, PathBuf::from("/var/lib/walship"));
    assert_eq!(global.target, TargetUrl::S3 { bucket: "bucket".into(), prefix: "prefix".into() });
    assert_eq!(global.endpoint.as_deref(), Some("https://s3.example.net"));
    assert_eq!(global.region, "us-east-1");
    assert_eq!(global.credentials_file, Some(PathBuf::from("/etc/walship/credentials")));
    assert_eq!(global.ca_file, Some(PathBuf::from("/etc/walship/ca.pem")));
    assert_eq!(global.part_size, 8 << 20);
    assert_eq!(global.parallel_uploads, 2);
    assert_eq!(global.poll_interval, Duration::from_secs(1));
    assert_eq!(global.backoff_min, Duration::from_millis(10));
    assert_eq!(global.backoff_max, Duration::from_secs(5));
    assert_eq!(global.metrics_listen.as_deref(), Some("127.0.0.1:9187"));
    assert_eq!(global.metrics_file, Some(PathBuf::from("/var/lib/node_exporter/walship.prom")));
    assert_eq!(global.log_level, log::LevelFilter::Info);
    assert_eq!(global.prune_interval, Duration::from_secs(3600));

    assert_eq!(config.streams.len(), 1);
    let stream = config.stream("sensors").expect("stream sensors");
    assert_eq!(stream.name, "sensors");
    assert_eq!(stream.dir, PathBuf::from("/var/spool/sensors"));
    assert_eq!(Ok(stream.naming.clone()), Naming::from_pattern("data-{seq}.log"));
    assert_eq!(stream.naming.position("data-42.log"), Some(42));
    assert_eq!(stream.seal, SealMode::Next);
    assert_eq!(stream.seal_idle, Some(Duration::from_secs(30)));
    assert_eq!(stream.batch_size, 100);
    assert_eq!(stream.max_batch_delay, Some(Duration::from_secs(60)));
    assert_eq!(stream.snapshot_interval, 10_000);
    assert_eq!(stream.snapshot_command, Some("/usr/local/bin/sensors-snapshot".to_string()));
    assert_eq!(stream.keep_snapshots, 7);
    assert_eq!(stream.on_archived, OnArchived::Keep);
}

#[test]
fn non_default_values_of_every_key() {
    let text = "\
; a comment
[global]
state_dir=/srv/walship
target = s3://my-bucket.eu/fleet/node-7/
endpoint = http://minio.local:9000/
region = garage
part_size = 16 MiB
parallel_uploads = 16
poll_interval = 250ms
backoff_min = 1s
backoff_max = 2min
metrics_listen = [::1]:9187
log_level = debug
prune_interval = 90s

[stream wal.main]
dir = /var/lib/app/wal
pattern = {hex}.seg
seal = spool
batch_size = 1
snapshot_command = /usr/bin/snap   # no interval: manual snapshots only
keep_snapshots = 100
on_archived = mark

[stream b-2_x]
dir = /b
pattern = b{seq}
on_archived = delete
batch_size = 100000
snapshot_interval = 200000
snapshot_command = /usr/bin/snap-b
keep_snapshots = 1
";
    let config = parse_text(text).expect("valid");
    let global = &config.global;
    assert_eq!(global.state_dir, PathBuf::from("/srv/walship"));
    assert_eq!(global.target, TargetUrl::S3 { bucket: "my-bucket.eu".into(), prefix: "fleet/node-7".into() });
    assert_eq!(global.endpoint.as_deref(), Some("http://minio.local:9000"));
    assert_eq!(global.region, "garage");
    assert_eq!(global.part_size, 16 << 20);
    assert_eq!(global.parallel_uploads, 16);
    assert_eq!(global.poll_interval, Duration::from_millis(250));
    assert_eq!(global.backoff_min, Duration::from_secs(1));
    assert_eq!(global.backoff_max, Duration::from_secs(120));
    assert_eq!(global.metrics_listen.as_deref(), Some("[::1]:9187"));
    assert_eq!(global.log_level, log::LevelFilter::Debug);
    assert_eq!(global.prune_interval, Duration::from_secs(90));

    let names: Vec<&str> = config.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["wal.main", "b-2_x"]);
    let wal = &config.streams[0];
    assert_eq!(wal.naming.position("00ff.seg"), Some(255));
    assert_eq!(wal.seal, SealMode::Spool);
    assert_eq!(wal.batch_size, 1);
    assert_eq!(wal.snapshot_interval, 0);
    assert_eq!(wal.snapshot_command, Some("/usr/bin/snap".to_string()));
    assert_eq!(wal.keep_snapshots, 100);
    assert_eq!(wal.on_archived, OnArchived::Mark);
    let b = &config.streams[1];
    assert_eq!(b.on_archived, OnArchived::Delete);
    assert_eq!(b.batch_size, 100_000);
    assert_eq!(b.snapshot_interval, 200_000);
    assert_eq!(b.keep_snapshots, 1);
}

#[test]
fn defaults() {
    let config = parse_text(&config_text("", "")).expect("valid");
    let global = &config.global;
    assert_eq!(global.target, TargetUrl::File(PathBuf::from("/mnt/archive")));
    assert_eq!(global.endpoint, None);
    assert_eq!(global.region, "us-east-1");
    assert_eq!(global.credentials_file, None);
    assert_eq!(global.ca_file, None);
    assert_eq!(global.part_size, 8 * 1024 * 1024);
    assert_eq!(global.parallel_uploads, 2);
    assert_eq!(global.poll_interval, Duration::from_secs(1));
    assert_eq!(global.connect_timeout, Duration::from_secs(10));
    assert_eq!(global.io_timeout, Duration::from_secs(30));
    assert_eq!(global.backoff_min, Duration::from_millis(10));
    assert_eq!(global.backoff_max, Duration::from_secs(5));
    assert_eq!(global.metrics_listen, None);
    assert_eq!(global.metrics_file, None);
    assert_eq!(global.log_level, log::LevelFilter::Info);
    let stream = &config.streams[0];
    assert_eq!(stream.seal, SealMode::Next);
    assert_eq!(stream.seal_idle, None);
    assert_eq!(stream.max_batch_delay, None);
    assert_eq!(stream.snapshot_interval, 0);
    assert_eq!(stream.snapshot_command, None);
    assert_eq!(stream.keep_snapshots, 7);
    assert_eq!(stream.on_archived, OnArchived::Keep);
}

#[test]
fn syntax_comments_whitespace_and_line_endings() {
    let text = "\u{feff}# leading comment\r\n\
                \t[global]   ; trailing comment on a header\r\n\
                \tstate_dir\t=\t/var/lib/walship\t# tab before the comment\r\n\
                target = file:///mnt/archive\r\n\
                [ stream  sensors ]\r\n\
                dir = /var/spool/sensors\r\n\
                pattern = data#{seq};x.log\r\n\
                batch_size = 100 ; comment\r\n";
    let config = parse_text(text).expect("valid");
    assert_eq!(config.global.state_dir, PathBuf::from("/var/lib/walship"));
    let stream = &config.streams[0];
    assert_eq!(stream.name, "sensors");
    assert_eq!(stream.naming.position("data#7;x.log"), Some(7));
    assert_eq!(stream.batch_size, 100);
}

#[test]
fn display_names_file_line_section_key_and_expectation() {
    let text = config_text("", "").replace("batch_size = 100", "batch_size = abc");
    let (_, _, _, shown) = error_of(&text);
    assert_eq!(
        shown,
        r#"walship.conf:8: [stream sensors] batch_size: expected a whole number > 0, got "abc""#
    );
}

#[test]
fn structure_errors() {
    let base = config_text("", "");
    let header = |h: &str| base.replace("[stream sensors]", h);
    let stream2 = "[stream other]\ndir = /o\npattern = {seq}\nbatch_size = 1\n";
    let long_name = format!("[stream {}]", "x".repeat(65));
    let without = |line: &str| base.replace(line, "");
    // (text, line, key, part of the message)
    #[rustfmt::skip]
    let cases = [
        (without("state_dir = /var/lib/walship\n"), Some(1), "[global] state_dir", "missing"),
        (without("target = file:///mnt/archive\n"), Some(1), "[global] target", "missing"),
        (without("[global]\n"), Some(1), "state_dir", "outside any section"),
        (base.replace("[global]", "[globals]"), Some(1), "", "unknown section \"[globals]\""),
        (base.replace("[global]", "[Global]"), Some(1), "", "expected [global] or [stream"),
        (base.replace("[global]", "[global x]"), Some(1), "", "[global] takes no name"),
        (base.replace("[global]", "[global"), Some(1), "", "must end with ']'"),
        (header("[stream]"), Some(5), "", "needs a name"),
        (header("[stream a b]"), Some(5), "", "cannot contain spaces"),
        (header("[stream .hidden]"), Some(5), "", "cannot start with '.'"),
        (header("[stream a/b]"), Some(5), "", "uses only letters"),
        (header("[stream ü]"), Some(5), "", "uses only letters"),
        (header(&long_name), Some(5), "", "1 to 64 characters"),
        (format!("{base}[global]\n"), Some(10), "", "[global] appears twice (first at line 1)"),
        (format!("{base}[stream sensors]\n"), Some(10), "", "(first at line 5)"),
        (stream2.to_string(), None, "", "no [global] section"),
        (String::new(), None, "", "no [global] section"),
        ("[global]\nstate_dir = /s\ntarget = file:///t\n".into(), None, "", "no [stream NAME]"),
    ];
    for (text, line, key, part) in &cases {
        let key = (!key.is_empty()).then_some(*key);
        assert_error(text, *line, key, part);
    }
    // A second, valid stream is fine.
    let two = parse_text(&format!("{base}{stream2}")).expect("valid");
    assert_eq!(two.streams.len(), 2);
}

#[test]
fn long_values_are_shortened_in_messages() {
    let long = "x".repeat(10_000);
    let (_, key, message, _) = error_of(&config_text(&format!("{long} = 1"), ""));
    assert!(key.is_some_and(|k| k.chars().count() < 100));
    assert!(message.len() < 1_000);
    let (_, _, message, _) = error_of(&config_text(&format!("log_level = {long}"), ""));
    assert!(message.contains('…') && message.len() < 1_000);
}

#[test]
fn no_input_panics() {
    let long_number = "9".repeat(5_000);
    let mut inputs: Vec<String> = [
        "",
        "[",
        "]",
        "[]",
        "[ ]",
        "=",
        "==",
        "[global",
        "[global]]",
        "\u{feff}",
        "\0",
        "[global]\n=\n",
        "ü = ö",
        "[stream ü]",
        "[stream \u{202e}]",
        "#",
        ";",
        " #",
        "\r",
        "[global]\ntarget = s3://",
        "[global]\ntarget = file://",
        "a\u{0}b = c",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for key in keys::names(keys::Section::Global) {
        inputs.push(config_text(&format!("{key} = {long_number}"), ""));
        inputs.push(config_text(&format!("{key} = ℌ𝔢𝔩𝔩𝔬 🦀"), ""));
    }
    for key in keys::names(keys::Section::Stream) {
        inputs.push(config_text("", &format!("{key} = {long_number}")));
        inputs.push(config_text("", &format!("{key} = -{long_number}ms")));
        inputs.push(config_text("", &format!("{key} = \u{0}\u{7f}é")));
    }
    for input in &inputs {
        let _ = parse_text(input);
    }
    // Mutations of a valid config: cut, duplicate and replace characters.
    let chars: Vec<char> = SPEC_EXAMPLE.chars().collect();
    let alphabet: Vec<char> = "[]=#; \n\t/0123456789aé🦀{}.:-sMiB\r\u{feff}".chars().collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };
    for _ in 0..3_000 {
        let mut mutated = chars.clone();
        for _ in 0..1 + next(8) {
            let at = next(mutated.len());
            match next(3) {
                0 => {
                    mutated.remove(at);
                }
                1 => mutated.insert(at, alphabet[next(alphabet.len())]),
                _ => mutated[at] = alphabet[next(alphabet.len())],
            }
        }
        let text: String = mutated.into_iter().collect();
        let _ = parse_text(&text);
    }
}

#[test]
fn load_reads_files_and_names_them_in_errors() {
    let dir = std::env::temp_dir().join(format!("walship-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let missing = dir.join("missing.conf");
    let error = load(&missing).expect_err("missing file");
    assert!(matches!(&error, ConfigError::Read { path, .. } if *path == missing));
    let shown = error.to_string();
    assert!(shown.starts_with(&missing.display().to_string()), "{shown}");
    assert!(shown.contains("create it or pass -c FILE"), "{shown}");

    let shown = load(&dir).expect_err("a directory").to_string();
    assert!(shown.contains("pass -c"), "{shown}");

    let good = dir.join("good.conf");
    std::fs::write(&good, config_text("", "")).expect("write");
    assert_eq!(load(&good).expect("valid").path, good);

    let latin1 = dir.join("latin1.conf");
    std::fs::write(&latin1, b"[global]\n# caf\xe9\n").expect("write");
    let error = load(&latin1).expect_err("not UTF-8");
    assert!(matches!(error, ConfigError::Invalid { line: Some(2), .. }), "{error}");

    let huge = dir.join("huge.conf");
    std::fs::write(&huge, vec![b'#'; (MAX_FILE_BYTES + 10) as usize]).expect("write");
    assert!(load(&huge).expect_err("too large").to_string().contains("check the path"));

    std::fs::remove_dir_all(&dir).expect("clean up");
}
