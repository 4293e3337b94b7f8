//! Tests of the command line: every command, option and error.

use super::*;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

/// `walship help -c FILE` was a usage error although every command
/// takes `-c FILE`.
#[test]
fn help_takes_a_config_option_like_every_command() {
    for line in ["help -c /etc/w.conf", "help list -c x", "help --config=x list", "--help -cx"] {
        assert!(matches!(parse_args(&args(line)), Ok(Parsed::Help(_))), "{line}");
    }
    assert!(parse_args(&args("help list run -c x")).is_err());
}

fn run(line: &str) -> Invocation {
    match parse_args(&args(line)) {
        Ok(Parsed::Run(invocation)) => invocation,
        other => panic!("{line:?}: expected a command, got {other:?}"),
    }
}

fn help(line: &str) -> String {
    match parse_args(&args(line)) {
        Ok(Parsed::Help(text)) => text,
        other => panic!("{line:?}: expected help, got {other:?}"),
    }
}

fn usage_error(line: &str) -> String {
    match parse_args(&args(line)) {
        Err(error) => error.to_string(),
        other => panic!("{line:?}: expected a usage error, got {other:?}"),
    }
}

#[test]
fn commands() {
    let s = |name: &str| Some(name.to_string());
    let cases = [
        ("run", Command::Run { once: false }),
        ("run --once", Command::Run { once: true }),
        ("list", Command::List { stream: None, rows: ListRows::Paged }),
        ("list -s sensors", Command::List { stream: s("sensors"), rows: ListRows::Paged }),
        ("list --stream=sensors", Command::List { stream: s("sensors"), rows: ListRows::Paged }),
        ("list --all", Command::List { stream: None, rows: ListRows::All }),
        ("list --range 5..0x10", Command::List { stream: None, rows: ListRows::Range(5, 16) }),
        (
            "restore -s sensors --to /tmp/r",
            Command::Restore {
                stream: "sensors".into(),
                to: "/tmp/r".into(),
                position: None,
                allow_gaps: false,
            },
        ),
        (
            "restore --to=out --allow-gaps --position 1234 --stream wal.1",
            Command::Restore {
                stream: "wal.1".into(),
                to: "out".into(),
                position: Some(1234),
                allow_gaps: true,
            },
        ),
        (
            "restore -s a --to d --position 0xFF",
            Command::Restore { stream: "a".into(), to: "d".into(), position: Some(255), allow_gaps: false },
        ),
        (
            "push -s pg pg_wal/000000010000000000000001",
            Command::Push { stream: "pg".into(), path: "pg_wal/000000010000000000000001".into() },
        ),
        (
            "fetch -s pg 000000010000000000000001 pg_wal/RECOVERYXLOG",
            Command::Fetch {
                stream: "pg".into(),
                name: "000000010000000000000001".into(),
                dest: FetchDest::Path("pg_wal/RECOVERYXLOG".into()),
            },
        ),
        (
            "fetch data-7.log /tmp/x -s sensors",
            Command::Fetch {
                stream: "sensors".into(),
                name: "data-7.log".into(),
                dest: FetchDest::Path("/tmp/x".into()),
            },
        ),
        (
            "fetch -s s data-7.log -",
            Command::Fetch { stream: "s".into(), name: "data-7.log".into(), dest: FetchDest::Stdout },
        ),
        ("status", Command::Status { json: false }),
        ("status --json", Command::Status { json: true }),
        ("verify", Command::Verify { stream: None, deep: false }),
        ("verify -s x --deep", Command::Verify { stream: s("x"), deep: true }),
        ("prune", Command::Prune { stream: None, dry_run: false }),
        ("prune -s x --dry-run", Command::Prune { stream: s("x"), dry_run: true }),
        ("snapshot -s x", Command::Snapshot { stream: "x".into() }),
        ("check", Command::Check),
        ("fleet", Command::Fleet { json: false, deep: false, stale: None }),
        (
            "fleet --json --stale 5m --deep",
            Command::Fleet { json: true, deep: true, stale: Some(std::time::Duration::from_secs(300)) },
        ),
    ];
    for (line, command) in cases {
        let invocation = run(line);
        assert_eq!(invocation.command, command, "{line}");
        assert_eq!(invocation.config_path, PathBuf::from(DEFAULT_PATH), "{line}");
    }
}

#[test]
fn fleet_stale_takes_a_duration() {
    assert!(
        usage_error("fleet --stale 5").contains("--stale: \"5\" has no unit"),
        "{}",
        usage_error("fleet --stale 5")
    );
    assert!(usage_error("fleet --stale 0s").contains("--stale: expected a duration > 0"));
    assert!(usage_error("fleet extra").contains("unexpected argument"));
}

#[test]
fn config_option_on_every_command() {
    for spec in COMMANDS {
        let required = match spec.name {
            "restore" => "-s a --to d",
            "fetch" => "-s a NAME DEST",
            "push" => "-s a FILE",
            "snapshot" => "-s a",
            _ => "",
        };
        for flag in ["-c", "--config"] {
            let line = format!("{} {required} {flag} /etc/w.conf", spec.name);
            assert_eq!(run(&line).config_path, PathBuf::from("/etc/w.conf"), "{line}");
        }
        let line = format!("{} {required} --config=rel.conf", spec.name);
        assert_eq!(run(&line).config_path, PathBuf::from("rel.conf"), "{line}");
    }
}

#[test]
fn help_texts() {
    let overall = help("help");
    for spec in COMMANDS {
        assert!(overall.contains(&format!("  {:<9} {}", spec.name, spec.summary)));
    }
    assert!(overall.contains(DEFAULT_PATH));
    assert_eq!(help("--help"), overall);
    assert_eq!(help("-h"), overall);
    assert_eq!(help("help --help"), overall);
    assert_eq!(help("--help help"), overall);
    assert!(overall.contains("3 fetch: the segment is not in the archive"), "{overall}");
    assert_eq!(usage_error(""), overall, "no arguments: the usage, as an error");
    for spec in COMMANDS {
        let text = help(&format!("{} --help", spec.name));
        assert!(text.starts_with(&format!("Usage: walship {}", spec.name)), "{text}");
        assert!(text.contains("-c, --config FILE"), "{text}");
        assert!(text.contains("-h, --help"), "{text}");
        // Help wins over missing required options.
        assert_eq!(help(&format!("{} -h", spec.name)), text);
        assert_eq!(help(&format!("help {}", spec.name)), text);
        assert_eq!(help(&format!("--help {}", spec.name)), text);
    }
    let restore = help("restore -h");
    assert!(
        restore.starts_with(
            "Usage: walship restore -s STREAM --to DIR [--position P] [--allow-gaps] [-c FILE]\n"
        )
    );
    for option in ["-s, --stream STREAM", "--to DIR", "--position P", "--allow-gaps"] {
        assert!(restore.contains(option), "{option}: {restore}");
    }
    assert!(help("check --help").starts_with("Usage: walship check [-c FILE]\n"));
    assert!(help("--version").starts_with("walship "));
}

#[test]
fn errors() {
    #[rustfmt::skip]
    let cases = [
        ("frobnicate", "unknown command \"frobnicate\"", "walship --help"),
        ("push f", "missing -s STREAM", "walship push --help"),
        ("push -s a", "expected one argument, the FILE to archive, got 0", "walship push --help"),
        ("push -s a f g", "got 2", "walship push --help"),
        ("-c /x run", "expected a command before any option", "walship --help"),
        ("help run list", "at most one command", "walship --help"),
        ("help nope", "unknown command", "walship --help"),
        ("run --bogus", "unknown option --bogus", "walship run --help"),
        ("run -x", "unknown option -x", "walship run --help"),
        ("run extra", "unexpected argument \"extra\"", "walship run --help"),
        ("run --once --once", "option --once is given more than once", "walship run --help"),
        ("run --once=yes", "option --once takes no value", "walship run --help"),
        ("run -c", "option -c needs a value", "walship run --help"),
        ("list -s", "option -s needs a value", "walship list --help"),
        ("list -s a -s b", "option --stream is given more than once", "walship list --help"),
        ("list -s ../x", "-s: a stream name uses only", "walship list --help"),
        ("snapshot", "-s STREAM", "walship snapshot --help"),
        ("snapshot -s a b", "", "walship snapshot --help"),
        ("list -s .x", "cannot start with '.'", "walship list --help"),
        ("list --all --range 1..2", "--all and --range exclude each other", "walship list --help"),
        ("list --range 5..4", "--range expects FIRST..LAST", "walship list --help"),
        ("list --range 5", "--range expects FIRST..LAST", "walship list --help"),
        ("restore --to d", "missing -s STREAM", "walship restore --help"),
        ("restore -s a", "missing --to DIR", "walship restore --help"),
        ("restore -s a --to d extra", "unexpected argument", "walship restore --help"),
        ("restore -s a --to d --position abc", "--position expects a whole", "restore --help"),
        ("restore -s a --to d --position -1", "--position expects", "restore --help"),
        ("restore -s a --to d --position 0x", "--position expects", "restore --help"),
        ("restore -s a --to d --position 0xZZ", "--position expects", "restore --help"),
        ("restore -s a --to d --position 18446744073709551616", "too large", "restore --help"),
        ("restore -s a --to d --deep", "unknown option --deep", "restore --help"),
        ("fetch NAME DEST", "missing -s STREAM", "walship fetch --help"),
        ("fetch -s a NAME", "expected two arguments, NAME and DEST, got 1", "fetch --help"),
        ("fetch -s a", "got 0", "walship fetch --help"),
        ("fetch -s a N D E", "got 3", "walship fetch --help"),
        ("fetch -s a dir/NAME D", "NAME must be a segment's file name", "fetch --help"),
        ("fetch -s a .. D", "NAME must be", "walship fetch --help"),
        ("status --json extra", "unexpected argument", "walship status --help"),
        ("status -s a", "unknown option -s", "walship status --help"),
        ("verify --deep x", "unexpected argument", "walship verify --help"),
        ("check now", "unexpected argument \"now\"", "walship check --help"),
    ];
    for (line, part, hint) in cases {
        let shown = usage_error(line);
        let (message, hint_line) = shown.split_once('\n').expect("a hint line");
        assert!(message.contains(part), "{line:?}: {shown}");
        assert!(hint_line.starts_with("run `") && hint_line.contains(hint), "{line:?}: {shown}");
    }
}

#[test]
fn empty_values_are_refused() {
    let with_empty = |mut a: Vec<String>, at: usize| {
        a.insert(at, String::new());
        parse_args(&a).expect_err("empty value").to_string()
    };
    assert!(with_empty(args("run -c"), 2).contains("-c needs the path"));
    assert!(with_empty(args("restore -s a --to"), 4).contains("--to DIR is empty"));
    assert!(with_empty(args("fetch -s a NAME"), 4).contains("DEST is empty"));
    assert!(with_empty(args("fetch -s a DEST"), 3).contains("NAME must be"));
    assert!(with_empty(args("list -s"), 2).contains("-s: a stream name is 1 to 64"));
}

#[test]
fn double_dash_ends_options() {
    let invocation = run("fetch -s a -- -odd-name /tmp/d");
    assert!(matches!(invocation.command, Command::Fetch { name, .. } if name == "-odd-name"));
}

#[test]
fn odd_arguments_do_not_panic() {
    let odd = ["-", "--", "-ü", "--ü=é", "-s", "🦀", "\0", "-c-c", "--to=", "---", "-sü"];
    for command in ["run", "list", "restore", "push", "fetch", "status", "verify", "check", "help"] {
        for a in odd {
            for b in odd {
                let _ = parse_args(&[command.to_string(), a.to_string(), b.to_string()]);
            }
        }
    }
}
