//! The `asterai` command line: one file per subcommand. Each parses its own arguments with clap
//! and receives the loaded [`Config`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigSource, LogFormat};

mod agent;
mod audit;
mod call;
mod calls;
mod campaign;
mod completions;
mod config;
mod demo;
mod dnc;
mod doctor;
pub(crate) mod feed;
mod migrate;
mod org;
mod purge;
pub mod serve;
mod token;
mod webhooks;

/// The heading of the options every command takes, apart from each command's own.
const GLOBAL: &str = "Global options";

/// asterai lets an Asterisk PBX hold AI phone calls.
///
/// Asterisk hands calls to asterai over FastAGI (agi://host:4573/ai); asterai records the
/// caller, transcribes, answers and speaks back. Configuration comes from a TOML file
/// (--config, $ASTERAI_CONFIG or /etc/asterai/asterai.toml) and ASTERAI_* variables; every key
/// has a default, so `asterai serve` runs with no file at all.
#[derive(Debug, Parser)]
#[command(name = "asterai", version, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Default: /etc/asterai/asterai.toml if it exists, else built-in defaults.
    #[arg(long, global = true, help_heading = GLOBAL, env = "ASTERAI_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format; overrides log.format.
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, env = "ASTERAI_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter such as info, debug or info,asterai::agi=debug; overrides log.level.
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "FILTER", env = "ASTERAI_LOG_LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Serve(serve::Args),
    Migrate(migrate::Args),
    Org(org::Args),
    Token(token::Args),
    Calls(calls::Args),
    Call(call::Args),
    Campaign(campaign::Args),
    Agent(agent::Args),
    Dnc(dnc::Args),
    Webhooks(webhooks::Args),
    Audit(audit::Args),
    Purge(purge::Args),
    Feed(feed::Args),
    Demo(demo::Args),
    Doctor(doctor::Args),
    Completions(completions::Args),
    Config(config::Args),
}

/// Everything a subcommand gets besides its own arguments.
pub struct Context {
    pub config: Config,
    pub source: ConfigSource,
}

/// Loads the configuration, starts logging and runs the subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // One TLS provider for every client (PostgreSQL, HTTP APIs); two would make TLS connects fail.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Command::Completions(args) = &cli.command {
        return completions::run(args);
    }
    let loaded = Config::load(cli.config.as_deref(), std::env::vars());
    if let (Command::Doctor(args), Err(error)) = (&cli.command, &loaded) {
        return doctor::config_failed(args, error);
    }
    let (mut config, source) = loaded?;
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    // The demo's output is the conversation; its log stays quiet unless asked for.
    if matches!(cli.command, Command::Demo(_)) && cli.log_level.is_none() && std::env::var_os("RUST_LOG").is_none() {
        config.log.level = "warn".into();
    }
    if let Some(level) = cli.log_level {
        crate::config::check_log_filter(&level)
            .map_err(|e| anyhow::anyhow!("--log-level (or ASTERAI_LOG_LEVEL): {e}"))?;
        config.log.level = level;
    }
    crate::logging::init(config.log.format, &config.log.level, config.secrets());
    crate::phone::set_default_country(config.dialer.default_country()?);
    // A command that changes something is written to the audit log once it succeeded.
    let argv: Vec<String> = std::env::args().collect();
    let audited = audit::changes(&argv).map(|change| (change, config.clone()));
    let context = Context { config, source };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, context),
        Command::Migrate(args) => migrate::run(args, context),
        Command::Org(args) => org::run(args, context),
        Command::Token(args) => token::run(args, context),
        Command::Calls(args) => calls::run(args, context),
        Command::Call(args) => call::run(args, context),
        Command::Campaign(args) => campaign::run(args, context),
        Command::Agent(args) => agent::run(args, context),
        Command::Dnc(args) => dnc::run(args, context),
        Command::Webhooks(args) => webhooks::run(args, context),
        Command::Feed(args) => feed::run(args, context),
        Command::Demo(args) => demo::run(args, context),
        Command::Doctor(args) => doctor::run(args, context),
        Command::Completions(args) => completions::run(&args),
        Command::Config(args) => config::run(args, context),
        Command::Audit(args) => audit::run(args, context),
        Command::Purge(args) => purge::run(args, context),
    };
    if let (Ok(()), Some(((action, target), config))) = (&result, audited) {
        audit::record(&config, &argv, &action, &target)?;
    }
    result
}

/// Opens the configured database and applies pending migrations, for one-shot commands.
pub(crate) async fn store(config: &Config) -> anyhow::Result<crate::store::Store> {
    use anyhow::Context as _;
    config.prepare_data_dir()?;
    let store =
        crate::store::Store::connect(&config.store_options()).await.context("opening the database (database.url)")?;
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}

/// Writes a command's output. A reader that went away (`asterai config --keys | head -1`)
/// is an [`std::io::ErrorKind::BrokenPipe`] error, which `main` ends quietly, never a panic.
pub(crate) fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Whether an error is only the reader of our output having gone away.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// A multi-threaded tokio runtime for the subcommands that need one.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is, and the global options stand apart
    /// from each command's own.
    #[test]
    fn every_argument_is_described() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
                if arg.is_global_set() && arg.get_help_heading() != Some(super::GLOBAL) {
                    missing.push(format!("{path} {id}: a global option outside {:?}", super::GLOBAL));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut command = super::Cli::command();
        command.build();
        walk(&command, "asterai", &mut missing);
        assert!(missing.is_empty(), "arguments without help:\n{}", missing.join("\n"));
    }
}
