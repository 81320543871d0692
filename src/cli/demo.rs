//! `asterai demo`: one simulated call, watched turn by turn.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::agi::{AgiServer, Router, ServerConfig, Shutdown};
use crate::demo::caller::{Caller, CallerVoice, parse_script};
use crate::feed::Filter;
use crate::feed::{Hub, Publisher};
use crate::store::{EventKind, Store};

/// Try asterai without Asterisk or API keys: one simulated call, shown turn by turn.
///
/// Runs the conversation in-process with the embedded SQLite database, the built-in rules
/// responder and espeak-ng, and places one call from a simulated Asterisk on a real FastAGI port.
/// The caller's lines come from a script (one line per turn; an empty line is silence). The call
/// is stored like a real one, under the organization "demo": see it again with
/// `asterai calls show <id>`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The caller's script. Default: a short built-in conversation.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Playback speed of the agent's speech (1 = real time).
    #[arg(long, default_value_t = 3.0)]
    speed: f64,
    /// The espeak-ng voice of the simulated caller.
    #[arg(long, default_value = "en-us+m3")]
    caller_voice: String,
}

pub fn run(args: Args, context: Context) -> anyhow::Result<()> {
    super::runtime()?.block_on(demo(args, context))
}

async fn demo(args: Args, context: Context) -> anyhow::Result<()> {
    let mut config = context.config;
    let script = match &args.script {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading the script {}", path.display()))?
        }
        None => crate::demo::DEFAULT_SCRIPT.to_owned(),
    };
    let lines = parse_script(&script);
    anyhow::ensure!(!lines.is_empty(), "the script has no lines");

    // The demo's own choices: embedded store, offline responder and voices.
    let db = config.data_dir().join("asterai.db");
    config.database.url = crate::types::Secret::new(format!("sqlite://{}", db.display()));
    config.stt.provider = "scripted".into();
    config.responder.provider = "rules".into();
    config.tts.provider = "espeak".into();
    config.tts.voice = String::new();
    config.conversation.hangup_at_end = true;

    // The caller and the agent both speak with espeak-ng: without it the call would end on
    // "No such file or directory"; say what to install before anything starts.
    espeak_present(&config.tts.espeak_program)?;

    config.prepare_data_dir()?;
    let store = Store::connect(&config.store_options()).await.context("opening the embedded database")?;
    // Several demos may start at once on one database: one migrates and creates the
    // organization, the others wait for it and use what it made.
    let mut attempt = 0;
    let org = loop {
        attempt += 1;
        let ready = async {
            store.migrate().await?;
            match store.org_by_slug("demo").await? {
                Some(org) => Ok(org),
                None => store.create_org("demo", "Demo Company").await,
            }
        };
        match ready.await {
            Ok(org) => break org,
            Err(e) if attempt < 5 => {
                tracing::debug!("demo set-up raced another demo: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e).context("preparing the embedded database"),
        }
    };
    let stop = CancellationToken::new();
    let hub = Hub::new();
    hub.prime(&store).await?;
    tokio::spawn(hub.clone().run(store.clone(), Duration::from_millis(200), Duration::ZERO, stop.clone()));
    let publisher = Publisher::new(store.clone(), hub.clone())
        .with_redaction(config.redaction.policy().map_err(anyhow::Error::msg)?);
    let conversations =
        super::serve::conversations(&config, publisher, &crate::supervise::Supervisor::new(stop.clone()))?;
    let server = AgiServer::bind(
        "127.0.0.1:0".parse()?,
        Router::new().route("ai", conversations.handler()),
        ServerConfig::default(),
    )
    .await?;
    let addr = server.local_addr()?;
    tokio::spawn(server.run(Shutdown::new(stop.clone(), Duration::from_secs(5))));
    println!("asterai demo: FastAGI on {addr}, database {}", db.display());
    println!("a simulated caller dials in; the conversation follows as it happens\n");

    let mut events = hub.subscribe(org.id, Filter::default(), 10_000);
    let caller = Caller {
        voice: CallerVoice::Espeak { program: config.tts.espeak_program.clone(), voice: args.caller_voice.clone() },
        playback_speed: args.speed,
        max_playback: Duration::from_secs(30),
        ..Caller::new(lines, "demo")
    };
    // Other demos may share the database and the organization: follow only this demo's call,
    // the one whose call_started names this caller's channel.
    let channel = caller.channel();
    let call = tokio::spawn(async move { caller.call(addr).await });
    let mut call_id: Option<String> = None;
    'watch: while let Some(batch) =
        tokio::time::timeout(Duration::from_secs(120), events.rx.recv()).await.ok().flatten()
    {
        for published in batch.iter() {
            let event = &published.event;
            if call_id.is_none()
                && event.kind == EventKind::CallStarted
                && event.data["channel"].as_str() == Some(channel.as_str())
            {
                call_id = event.call_id.clone();
            }
            if call_id.is_none() || event.call_id != call_id {
                continue;
            }
            println!("{}", super::feed::human(event));
            if event.kind == EventKind::CallEnded {
                break 'watch;
            }
        }
    }
    let log = call.await?.context("the simulated caller")?;
    stop.cancel();
    println!();
    match call_id {
        Some(id) => {
            println!("the call is stored: asterai calls show {id}");
            println!(
                "the caller heard {} synthesized files; asterai sent {} AGI commands",
                log.played.len(),
                log.commands.len()
            );
        }
        None => anyhow::bail!("the call produced no events; see the log above"),
    }
    Ok(())
}

/// Whether `program` (espeak-ng) can be started; the error says how to install it.
fn espeak_present(program: &str) -> anyhow::Result<()> {
    match std::process::Command::new(program).arg("--version").stdout(std::process::Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "the demo speaks with espeak-ng, and {program:?} is not installed: install espeak-ng \
             (sudo apt-get install -y espeak-ng), or point tts.espeak_program at it"
        ),
        Err(e) => anyhow::bail!("cannot run {program:?} (espeak-ng, which the demo speaks with): {e}"),
    }
}
