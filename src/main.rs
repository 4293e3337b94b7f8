//! The `walship` binary: parse the command line, run the command, and turn
//! the outcome into a message and an exit code. Everything else is in the
//! library.

use walship::cli::{self, Parsed};
use walship::commands;
use walship::error::{EXIT_OK, EXIT_USAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match cli::parse_args(&args) {
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            EXIT_OK
        }
        Ok(Parsed::Run(invocation)) => match commands::execute(invocation) {
            Ok(()) => EXIT_OK,
            Err(error) => {
                eprintln!("walship: {error}");
                error.exit_code()
            }
        },
        Err(usage) => {
            eprintln!("{usage}");
            EXIT_USAGE
        }
    };
    std::process::exit(code);
}
