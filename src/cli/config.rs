//! `asterai config`: prints the effective configuration.

use super::Context;

/// Print the effective configuration as TOML, after validating it.
///
/// Shows what the daemon would run with: the config file, then ASTERAI_* variables, then the
/// defaults for everything else. Secrets are redacted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// List every key with its environment variable instead.
    #[arg(long)]
    keys: bool,
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    let mut out = String::new();
    if args.keys {
        for key in crate::config::Config::keys() {
            out.push_str(&format!("{:<40} {}\n", key.path, key.env));
        }
    } else {
        out.push_str(&format!("# source: {}\n", context.source));
        out.push_str(&format!("# data directory: {}\n", context.config.data_dir().display()));
        out.push_str(&context.config.to_toml());
    }
    super::write_stdout(out.as_bytes())
}
