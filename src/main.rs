//! The `walship` binary: parse the command line, run the command, and turn
//! the outcome into a message and an exit code. Everything else is in the
//! library.
//!
//! Exit codes (listed in `walship --help`): 0 success, 1 operational
//! failure, 2 usage or configuration error, 3 `fetch`: not in the archive.
//! A closed stdout (`walship list | head -1`: the reader has all it wants)
//! ends the command quietly with 0, as for ripgrep and most Unix tools.

use std::io::{self, Write};

use walship::cli::{self, Parsed};
use walship::commands;
use walship::error::{EXIT_OK, EXIT_USAGE, Error};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match cli::parse_args(&args) {
        Ok(Parsed::Help(text)) => exit_code(commands::print(text)),
        Ok(Parsed::Run(invocation)) => exit_code(commands::execute(invocation)),
        Err(usage) => {
            complain(&usage);
            EXIT_USAGE
        }
    };
    std::process::exit(code);
}

/// The exit code for a command's outcome, with its error printed.
fn exit_code(outcome: Result<(), Error>) -> i32 {
    match outcome {
        Ok(()) => EXIT_OK,
        Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(error) => {
            complain(&format_args!("walship: {error}"));
            error.exit_code()
        }
    }
}

/// A message on stderr; if even stderr is gone, there is no one to tell.
fn complain(message: &dyn std::fmt::Display) {
    let _ = writeln!(io::stderr(), "{message}");
}
