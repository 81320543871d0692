use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = asterai::cli::Cli::parse();
    match asterai::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `asterai … | head`: the reader has what it wanted.
        Err(e) if asterai::cli::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asterai: {e:#}");
            ExitCode::FAILURE
        }
    }
}
