use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = asterai::cli::Cli::parse();
    match asterai::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asterai: {e:#}");
            ExitCode::FAILURE
        }
    }
}
