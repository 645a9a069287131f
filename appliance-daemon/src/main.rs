//! `oasis`: the Oasis appliance binary. Parses the command line and hands over to the
//! library; errors become one line on stderr and a non-zero exit code.

#![forbid(unsafe_code)] // `unsafe` lives only in `kernels` (ARCHITECTURE.md)

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = appliance_daemon::cli::Cli::parse();
    match appliance_daemon::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
