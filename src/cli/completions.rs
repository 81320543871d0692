//! `asterai completions <shell>`: shell completion scripts, generated from the same clap
//! definitions as the commands themselves, so they never drift.

use clap::CommandFactory;
use clap_complete::Shell;

/// Print a shell completion script (bash, zsh, fish, elvish or powershell).
///
/// For bash: `asterai completions bash | sudo tee /usr/share/bash-completion/completions/asterai`.
/// For zsh: write it to a directory in $fpath as `_asterai`. For fish:
/// `~/.config/fish/completions/asterai.fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut command = super::Cli::command();
    // Into memory first: clap_complete panics when its writer fails (`| head` closing the pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "asterai", &mut script);
    super::write_stdout(&script)
}
