//! Replays the committed fuzz inputs through the functions the fuzz targets
//! call: the seed corpus (`fuzz/corpus/`) and every crash found so far
//! (`fuzz/regressions/`). Every crash found also gets a named test here,
//! holding the input and a sentence on the bug (fuzz/README.md says how);
//! none has been found so far.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use walship::catalog::assemble::check_assemble;
use walship::config::check_parse;
use walship::fleet::heartbeat;
use walship::frames::check::check_frames;
use walship::manifest::check::{check_record_round_trip, check_round_trip, parse_fuzz_manifest};
use walship::manifest::format;
use walship::naming::{NameMatch, Naming, check_name};
use walship::target::s3::{credentials, xml};

/// Fewest seed files a corpus directory may hold: an emptied corpus fails.
const MIN_SEEDS: usize = 10;

/// The files of `fuzz/<dir>`, sorted; none if the directory is absent.
fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).path())
        .filter(|path| path.is_file() && !is_hidden(path))
        .collect();
    files.sort();
    files
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with('.'))
}

/// Run `check` on every input of `fuzz/<dir>`, which must hold at least
/// `min`; names the file that panics.
fn replay(dir: &str, min: usize, check: fn(&[u8])) {
    let files = inputs(dir);
    assert!(files.len() >= min, "fuzz/{dir} holds {} inputs, expected at least {min}", files.len());
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails its check (see the panic above)", path.display());
    }
}

#[test]
fn manifest_seed_corpus_and_regressions_pass() {
    replay("corpus/manifest", MIN_SEEDS, check_round_trip);
    replay("regressions/manifest", 0, check_round_trip);
}

#[test]
fn frames_seed_corpus_and_regressions_pass() {
    replay("corpus/frames", MIN_SEEDS, check_frames);
    replay("regressions/frames", 0, check_frames);
}

#[test]
fn manifest_record_seed_corpus_and_regressions_pass() {
    replay("corpus/manifest_record", MIN_SEEDS, check_record_round_trip);
    replay("regressions/manifest_record", 0, check_record_round_trip);
}

#[test]
fn manifest_remote_seed_corpus_and_regressions_pass() {
    replay("corpus/manifest_remote", MIN_SEEDS, assemble_seed);
    replay("regressions/manifest_remote", 0, assemble_seed);
}

fn assemble_seed(data: &[u8]) {
    let _ = check_assemble(data);
}

/// The remote-record seeds that must assemble do, and the hostile ones are
/// refused: the fuzzer starts from both sides of every rule.
#[test]
fn manifest_remote_seeds_assemble_or_are_refused() {
    let valid = [
        "valid-three-level0",
        "compacted-with-identical-level0",
        "prune-and-snapshot",
        "prune-mark-excuses-hole",
        "v1-record-object",
        "foreign-key",
    ];
    for name in inputs("corpus/manifest_remote") {
        let seed_name = name.file_name().unwrap().to_str().unwrap().to_string();
        let result = check_assemble(&std::fs::read(&name).unwrap());
        let expected_ok = valid.contains(&seed_name.as_str()) || seed_name == "empty";
        assert_eq!(result.is_ok(), expected_ok, "seed {seed_name}: {result:?}");
    }
}

#[test]
fn config_seed_corpus_and_regressions_pass() {
    replay("corpus/config", MIN_SEEDS, check_parse);
    replay("regressions/config", 0, check_parse);
}

#[test]
fn segment_name_seed_corpus_and_regressions_pass() {
    replay("corpus/segment_name", MIN_SEEDS, check_name);
    replay("regressions/segment_name", 0, check_name);
}

/// Segment-name seeds (`PATTERN` newline `NAME`) and what their own pattern
/// makes of the name: a wrong expectation means the seed no longer tests
/// what its name says.
const SEGMENT_NAME_SEEDS: &[(&str, Option<NameMatch>)] = &[
    ("decimal-padded", Some(NameMatch::Position(42))),
    ("hex-upper-case", Some(NameMatch::Position(0xdead_beef))),
    ("hex-u64-max", Some(NameMatch::Position(u64::MAX))),
    ("hex-overflow", Some(NameMatch::Overflow)),
    ("decimal-u64-max", Some(NameMatch::Position(u64::MAX))),
    ("decimal-overflow", Some(NameMatch::Overflow)),
    ("beyond-manifest-limit", Some(NameMatch::Position(5_000_000_000_000_000_000))),
    ("decimal-long-padding", Some(NameMatch::Position(1))),
    ("dot-file", Some(NameMatch::NotASegment)),
    ("temp-file", Some(NameMatch::NotASegment)),
    ("sign-before-digits", Some(NameMatch::NotASegment)),
    ("unicode-non-ascii-digit", Some(NameMatch::NotASegment)),
    ("refused-pattern-ignored-ending", None),
    ("refused-pattern-two-placeholders", None),
];

#[test]
fn segment_name_seeds_classify_as_their_names_say() {
    for (name, expected) in SEGMENT_NAME_SEEDS {
        let seed = String::from_utf8(seed("segment_name", name)).expect("UTF-8 seed");
        let (pattern, file_name) = seed.split_once('\n').expect("PATTERN newline NAME");
        let got = Naming::from_pattern(pattern).ok().map(|naming| naming.classify(file_name));
        assert_eq!(got, *expected, "seed {name}");
    }
}

#[test]
fn s3_xml_seed_corpus_and_regressions_pass() {
    replay("corpus/s3_xml", MIN_SEEDS, xml::check_parse);
    replay("regressions/s3_xml", 0, xml::check_parse);
}

#[test]
fn credentials_seed_corpus_and_regressions_pass() {
    replay("corpus/credentials", MIN_SEEDS, credentials::check_parse);
    replay("regressions/credentials", 0, credentials::check_parse);
}

#[test]
fn heartbeat_seed_corpus_and_regressions_pass() {
    replay("corpus/heartbeat", MIN_SEEDS, heartbeat::check_parse);
    replay("regressions/heartbeat", 0, heartbeat::check_parse);
    let valid = [
        "valid",
        "valid-fresh",
        "valid-failing",
        "valid-stopped",
        "unknown-keys",
        "crlf",
        "index-key-like-magic",
    ];
    // Fleet indexes: the valid heartbeats, an empty node, and two streams.
    let valid_indexes = [&valid[..], &["empty", "index-two-streams"]].concat();
    for name in inputs("corpus/heartbeat") {
        let file = name.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(&name).unwrap();
        let parsed = heartbeat::parse(&bytes);
        assert_eq!(parsed.is_ok(), valid.contains(&file), "seed {file}: {parsed:?}");
        let index = heartbeat::parse_index(&bytes);
        assert_eq!(index.is_ok(), valid_indexes.contains(&file), "index seed {file}: {index:?}");
    }
}

/// Manifest seeds that must parse to records.
const VALID_MANIFESTS: &[&str] = &[
    "valid-batches-and-gaps",
    "valid-many-segments",
    "valid-field-order",
    "valid-unicode-reason",
    "v2-valid-all-kinds",
    "v2-valid-zstd-batch",
    "v2-valid-prune-mark",
    "v2-valid-escaped-reason",
];
/// Config seeds that must parse.
const VALID_CONFIGS: &[&str] =
    &["spec-example", "minimal", "two-streams", "s3-full", "unicode", "crlf", "s3-prefix-utf8"];
/// Manifest seeds the SPEC requires a clear error for.
const REFUSED_MANIFESTS: &[&str] = &[
    "hostile-key-dotdot",
    "hostile-key-absolute",
    "hostile-seg-name-slash",
    "overlapping-ranges",
    "out-of-order",
    "absurd-size",
    "absurd-position",
    "unknown-version",
    "bad-crc-middle-line",
    "v2-hole-deleted-line",
    "v2-hostile-seg-name-passwd",
    "v2-seg-name-wrong-position",
    "v2-seg-name-duplicate",
    "v2-identity-stored-mismatch",
    "v2-snapshot-out-of-order",
    "v2-prune-sequence-skipped",
    "v2-prune-mark-backwards",
    "v2-prune-deletes-foreign",
    "v2-prune-deletes-live-batch",
    "v2-unknown-encoding",
    "v2-v1-segment-syntax",
    "v2-snapshot-foreign-key",
];
/// Config seeds that must be refused.
const REFUSED_CONFIGS: &[&str] = &[
    "unknown-key",
    "bad-unit-case",
    "snapshot-not-multiple",
    "huge-numbers",
    "s3-prefix-dotdot",
    "s3-endpoint-with-path",
    "places-same-dir",
    "places-state-inside-target",
];

/// Credentials seeds that must parse, and those that must be refused.
const VALID_CREDENTIALS: &[&str] = &[
    "valid-default",
    "valid-with-token-no-spaces",
    "valid-other-profile-first-mixed-case",
    "valid-crlf",
    "valid-spaced-header-no-final-newline",
];
const REFUSED_CREDENTIALS: &[&str] = &[
    "missing-secret",
    "missing-key-id",
    "header-unterminated",
    "line-without-equals",
    "empty-key-id",
    "empty",
];

fn seed(dir: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(dir).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse_manifest(name: &str) -> Result<format::Parsed, walship::manifest::ManifestError> {
    parse_fuzz_manifest(&seed("manifest", name), name)
}

fn parse_config(name: &str) -> Result<walship::config::Config, walship::config::ConfigError> {
    let text = String::from_utf8(seed("config", name)).expect("UTF-8 seed");
    walship::config::parse(Path::new(name), &text)
}

/// The seeds that must parse do: a broken generator or a format change
/// would otherwise leave a corpus of inputs rejected at the first byte.
#[test]
fn valid_seeds_parse() {
    for name in VALID_MANIFESTS {
        let parsed = parse_manifest(name).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        assert!(!parsed.manifest.is_empty() && parsed.dropped_torn_tail.is_none(), "seed {name}");
    }
    for name in VALID_CONFIGS {
        parse_config(name).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    for name in VALID_CREDENTIALS {
        let text = String::from_utf8(seed("credentials", name)).expect("UTF-8 seed");
        credentials::parse_shared_credentials(&text).unwrap_or_else(|e| panic!("seed {name}: {e:?}"));
    }
    let listing = String::from_utf8(seed("s3_xml", "list-objects-utf8-entities-cdata")).expect("UTF-8");
    let page = xml::parse_list_objects(&listing).expect("the UTF-8 listing seed parses");
    assert_eq!(page.objects[0], ("site+7:edge/wal/ünï cödé/ a ".to_string(), 3));
    assert_eq!(page.objects[2], ("p/<raw>&amp;".to_string(), 12));
}

/// The hostile and damaged seeds are refused, not read.
#[test]
fn hostile_seeds_are_refused() {
    for name in REFUSED_MANIFESTS {
        assert!(parse_manifest(name).is_err(), "seed {name} parsed");
    }
    for name in REFUSED_CONFIGS {
        assert!(parse_config(name).is_err(), "seed {name} parsed");
    }
    for name in REFUSED_CREDENTIALS {
        let text = String::from_utf8(seed("credentials", name)).expect("UTF-8 seed");
        assert!(credentials::parse_shared_credentials(&text).is_err(), "seed {name} parsed");
    }
}

/// A named generator of inputs of a given scale.
type Pathology = (&'static str, fn(usize) -> String);

/// How long `runs` runs of `check` on `input` take, back to back.
fn time(check: fn(&[u8]), input: &[u8], runs: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..runs {
        check(input);
    }
    started.elapsed()
}

/// How many times larger the large input is than the small one.
const SCALE: u32 = 32;

/// `check` takes time linear in the input: `make(n)` is grown until one
/// run takes a few milliseconds (small inputs time mostly noise), then one
/// run on `make(SCALE * n)` is timed against `SCALE` runs on `make(n)`:
/// the same amount of input, so linear work takes about as long and
/// quadratic work `SCALE` times as long. Timing equal amounts of work
/// keeps the comparison fair on a loaded machine, where a long run is
/// preempted and a short one may not be (one short run against one long
/// run measured 85 times for linear code at 16 times the input, under a
/// load of 10 on 2 cores). Each side is timed five times, taking turns,
/// and the fastest are compared. The bound, 12, leaves room for the larger
/// input outgrowing the caches (measured up to 7.5 times for linear code
/// at 16 MiB) and is well below quadratic's 32. Relative, so a slow
/// machine does not matter.
fn assert_linear(what: &str, check: fn(&[u8]), make: impl Fn(usize) -> String) {
    assert_linear_in_rounds(what, check, make, 5);
}

/// [`assert_linear`] with the number of timing rounds given.
fn assert_linear_in_rounds(what: &str, check: fn(&[u8]), make: impl Fn(usize) -> String, rounds: u32) {
    let mut n = 256;
    // The fastest of three runs, so that one preempted run does not stop
    // the growth early.
    let fastest_of_three = |input: &[u8]| (0..3).map(|_| time(check, input, 1)).min().unwrap_or_default();
    while fastest_of_three(make(n).as_bytes()) < Duration::from_millis(4) && n < 1 << 22 {
        n *= 2;
    }
    let (small, large) = (make(n), make(SCALE as usize * n));
    let (mut t_small, mut t_large) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        t_small = t_small.min(time(check, small.as_bytes(), SCALE));
        t_large = t_large.min(time(check, large.as_bytes(), 1));
    }
    let ratio = t_large.as_secs_f64() / t_small.as_secs_f64().max(1e-9);
    assert!(
        ratio < 12.0,
        "{what}: {SCALE} runs on {} bytes took {t_small:?}, one run on {SCALE} times as many {t_large:?} \
         ({ratio:.1}x): not linear",
        small.len()
    );
}

/// The linearity check itself tells quadratic work apart, on a loaded
/// machine too: a check that rescans its input for every line fails it
/// (in one round: quadratic work is 32 times over, far above the bound,
/// and its large input alone takes a thousand times the small one).
#[test]
#[should_panic(expected = "not linear")]
fn the_linearity_check_catches_quadratic_work() {
    fn rescans_per_line(data: &[u8]) {
        let lines = data.iter().filter(|&&b| b == b'\n').count();
        let mut total = 0usize;
        for _ in 0..lines {
            total = total.wrapping_add(data.iter().filter(|&&b| b == b'x').count());
        }
        std::hint::black_box(total);
    }
    assert_linear_in_rounds("quadratic", rescans_per_line, |n| "x\n".repeat(n), 1);
}

/// Pathological S3 responses (deep nesting, closed and not, many
/// attributes, entities, entries, comments) are read in linear time.
#[test]
fn s3_xml_reading_takes_linear_time() {
    let cases: [Pathology; 8] = [
        ("deep nesting", |n| {
            format!("{}<Key>k</Key><Size>1</Size>{}", "<Contents>".repeat(n), "</Contents>".repeat(n))
        }),
        ("unclosed nesting", |n| "<Contents><Upload><Error>".repeat(n)),
        ("many attributes", |n| {
            format!("<Contents{}><Key>k</Key><Size>1</Size></Contents>", " a=\"1\" b='>'".repeat(n))
        }),
        ("many entities", |n| format!("<Error><Code>{}</Code></Error>", "&amp;&#233;&bogus;&".repeat(n))),
        ("many entries", |n| {
            format!(
                "<ListBucketResult>{}</ListBucketResult>",
                "<Contents><Key>k</Key><Size>1</Size></Contents>".repeat(n)
            )
        }),
        ("unterminated markup", |n| format!("{}<!-- {}", "<Key>".repeat(n), "<Size>".repeat(n))),
        ("end tags only", |n| "</Contents></Key>".repeat(n)),
        ("open brackets", |n| "<".repeat(n * 8)),
    ];
    for (what, make) in cases {
        assert_linear(what, xml::check_parse, make);
    }
}

/// Long and numerous lines of a credentials file are read in linear time.
#[test]
fn credentials_parsing_takes_linear_time() {
    let cases: [Pathology; 3] = [
        ("many profiles", |n| {
            "[p]\naws_access_key_id = A\n".repeat(n)
                + "[default]\naws_access_key_id = A\naws_secret_access_key = S\n"
        }),
        ("long value", |n| {
            format!("[default]\naws_access_key_id = {}\naws_secret_access_key = S\n", "x".repeat(n * 16))
        }),
        ("many comments", |n| "# c\n;\n\n".repeat(n)),
    ];
    for (what, make) in cases {
        assert_linear(what, credentials::check_parse, make);
    }
}

/// Found by the fuzzer: a 24-byte name whose characters are not all ASCII
/// (`\xd7` `00` `в`…) was cut at byte 8 as a WAL name's timeline, inside a
/// character, and classifying it panicked. It is simply not a WAL name.
#[test]
fn wal_name_with_a_multibyte_character_across_a_cut_is_not_a_segment() {
    let input = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/segment_name/wal-name-multibyte-across-a-cut"),
    )
    .unwrap();
    check_name(&input);
    let wal = Naming::postgres(16 << 20).unwrap();
    assert_eq!(wal.classify("0000000é000000000000000"), NameMatch::NotASegment);
}
