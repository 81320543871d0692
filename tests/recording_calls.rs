//! Whole-call recordings on the real Asterisk of the harness (tests/support/asterisk.rs), with
//! the real `asterai serve` and mocked speech providers (tests/support/live.rs): MixMonitor on
//! the FastAGI path after the consent announcement, the refusal to record without one where
//! every party must consent, and the download with Range requests, header token only, scoped
//! to the organization.

mod support;

use std::time::{Duration, Instant};

use asterai::agent::{self, AgentSpec};
use asterai::store::{Recording, RecordingStatus, RecordingVia};
use support::asterisk::{Asterisk, Exchange, Script, WAIT, unique};
use support::live::Agent;

/// A Miami number: area code 305 is Florida, where the shipped rules want every party's consent.
const FLORIDA_CALLER: &str = "\"Caller\" <+13055550100>";

const CONSENT: &str = "This call is recorded for quality.";

fn analysis(intent: &str, action: &str) -> String {
    format!(
        "\n<analysis>{{\"intent\": \"{intent}\", \"emotion\": \"neutral\", \"confidence\": 0.9, \"action\": \"{action}\"}}</analysis>"
    )
}

async fn default_agent(agent: &Agent, spec: &str) {
    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    agent::create(&agent.store, org.id, &AgentSpec::parse(spec).unwrap(), true).await.unwrap();
}

/// A call from Florida to the daemon: the person says goodbye once the agent spoke, and the
/// agent ends the call. Returns the call's id and the AGI side's channel.
async fn call_from_florida(asterisk: &Asterisk, agent: &Agent) -> (String, String) {
    agent.transcripts(&["Okay, goodbye."]).await;
    agent.answers(&[&["Thank you for calling. Goodbye!", &analysis("goodbye", "end")]]).await;
    let key = unique().to_string();
    let script = Script::new().wait_for_agent().say(&asterisk.utterance("Okay, goodbye.")).wait_for_agent().quiet(10);
    asterisk.put_script(&key, None, &script).await;
    let person =
        asterisk.originate("Local/s@asterai-inbound", &key, FLORIDA_CALLER, &[("ASTERAI", &agent.agi_url())]).await;
    let channel = person.other_leg();
    let call_id = agent.call_on(&channel).await;
    agent.finished(&call_id).await;
    (call_id, channel)
}

/// The audit log's downloads of a recording by an organization's tokens: (status, range).
async fn downloads(agent: &Agent, org_id: i64, url: &str) -> Vec<(u64, Option<String>)> {
    let entries = agent.store.audit_log(Some(org_id), 0, 1000).await.unwrap();
    entries
        .into_iter()
        .filter(|e| e.action == "call.recording_downloaded")
        .map(|e| {
            assert_eq!(e.target.as_deref(), Some(url));
            assert!(e.actor.starts_with("token:"), "{}", e.actor);
            (e.detail["status"].as_u64().unwrap(), e.detail["range"].as_str().map(str::to_owned))
        })
        .collect()
}

/// Waits until the call's recordings are all settled (none `recording`), and returns them.
async fn settled_recordings(agent: &Agent, call_id: &str) -> Vec<Recording> {
    let org = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let recordings = agent.store.call_recordings(org.id, call_id).await.unwrap();
        if !recordings.is_empty() && recordings.iter().all(|r| r.status != RecordingStatus::Recording) {
            return recordings;
        }
        assert!(
            Instant::now() < deadline,
            "the recording of {call_id} never settled: {recordings:#?}\n{}",
            agent.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn get(agent: &Agent, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().get(format!("http://{}{path}", agent.http))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_announces_consent_first_and_downloads_with_ranges() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[]).await;
    default_agent(
        &agent,
        &format!("name = \"recorder\"\n[recording]\nenabled = true\nconsent_announcement = \"{CONSENT}\"\n"),
    )
    .await;
    let mark = asterisk.log_mark();
    let (call_id, channel) = call_from_florida(asterisk, &agent).await;
    let exchange = asterisk.finished_agi(mark, &channel).await;

    // Asterisk's side: the announcement played to its end, then MixMonitor started.
    let exchanged = exchange.commands();
    let commands: Vec<String> = exchanged.iter().map(|(command, _)| command.clone()).collect();
    let consent_file = agent.files_for(CONSENT).remove(0);
    let announced = commands
        .iter()
        .position(|c| c.starts_with("STREAM FILE ") && c.contains(&consent_file))
        .unwrap_or_else(|| panic!("the consent announcement was not played: {commands:#?}"));
    let mixmonitor = commands
        .iter()
        .position(|c| c.starts_with("EXEC MixMonitor "))
        .unwrap_or_else(|| panic!("no MixMonitor: {commands:#?}"));
    assert!(announced < mixmonitor, "the announcement comes before the recording: {commands:#?}");
    let reply = exchanged[announced].1.as_deref().unwrap_or_default();
    assert!(Exchange::endpos(reply).unwrap_or(0) > 0, "the announcement played to its end: {reply:?}");
    // Asterisk's own log: it played the announcement, then began recording.
    let log = asterisk.log_since(mark);
    let playing = log.find(&format!("Playing '{consent_file}")).expect("Asterisk logged the announcement's playback");
    let begin = log.find("Begin MixMonitor Recording").expect("Asterisk logged MixMonitor's start");
    assert!(playing < begin, "Asterisk played the announcement before MixMonitor began");

    // asterai's side: the row, and the file, a WAV that plays.
    let recordings = settled_recordings(&agent, &call_id).await;
    assert_eq!(recordings.len(), 1, "{recordings:#?}");
    let r = &recordings[0];
    assert_eq!(r.status, RecordingStatus::Available, "{r:#?}\n{}", agent.log().join("\n"));
    assert_eq!(r.via, RecordingVia::MixMonitor);
    assert_eq!(r.region.as_deref(), Some("US-FL"));
    assert!(r.consent_required && r.consent_announced, "{r:#?}");
    assert!(r.ended_at.is_some_and(|end| end >= r.started_at));
    let bytes = std::fs::read(&r.path).expect("the recording's file");
    assert_eq!(r.size_bytes, Some(bytes.len() as i64));
    let reader = hound::WavReader::new(std::io::Cursor::new(&bytes)).expect("a WAV hound reads");
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (1, 8000, 16), "{spec:?}");
    let samples: Vec<i16> = reader.into_samples::<i16>().map(Result::unwrap).collect();
    assert!(!samples.is_empty(), "the recording holds audio");
    assert!(r.duration_ms.unwrap() > 0);
    assert_eq!(r.duration_ms.unwrap(), samples.len() as i64 * 1000 / 8000);
    assert!(!asterai::speech::audio::is_silence(&samples, -45.0), "the recording holds the conversation");
    assert!(commands.iter().any(|c| c == "SET VARIABLE ASTERAI_RECORDING on"), "{commands:#?}");

    // GET /v1/calls/{id} lists it.
    let token = agent.token().await;
    let detail: serde_json::Value =
        get(&agent, &format!("/v1/calls/{call_id}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let url = format!("/v1/calls/{call_id}/recording");
    assert_eq!(detail["recording_url"], url.as_str(), "{detail:#}");
    assert_eq!(detail["recordings"][0]["status"], "available", "{detail:#}");
    assert_eq!(detail["recordings"][0]["consent_announced"], true, "{detail:#}");
    assert!(detail["recordings"][0].get("path").is_none(), "the daemon's paths are not shown: {detail:#}");

    // The download: whole, one range, a bad range.
    let whole = get(&agent, &url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let part = get(&agent, &url).bearer_auth(&token).header("Range", "bytes=40-139").send().await.unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 40-139/{}", bytes.len()).as_str());
    assert_eq!(part.headers()["content-length"], "100");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[40..140]);
    let tail = get(&agent, &url).bearer_auth(&token).header("Range", "bytes=-10").send().await.unwrap();
    assert_eq!(tail.status().as_u16(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &bytes[bytes.len() - 10..]);
    let beyond =
        get(&agent, &url).bearer_auth(&token).header("Range", format!("bytes={}-", bytes.len())).send().await.unwrap();
    assert_eq!(beyond.status().as_u16(), 416);
    assert_eq!(beyond.headers()["content-range"], format!("bytes */{}", bytes.len()).as_str());

    // Never with ?token=.
    let in_query = get(&agent, &format!("{url}?token={token}")).send().await.unwrap();
    assert_eq!(in_query.status().as_u16(), 401, "a token in the URL is refused");
    let both = get(&agent, &format!("{url}?token={token}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(both.status().as_u16(), 400, "?token= is refused even beside the header");

    // Another organization sees neither the call nor its recording.
    let globex = agent.store.create_org("globex", "Globex").await.unwrap();
    let other =
        asterai::auth::create_token(&agent.store, globex.id, "test", asterai::auth::Scopes::all()).await.unwrap().token;
    assert_eq!(get(&agent, &format!("/v1/calls/{call_id}")).bearer_auth(&other).send().await.unwrap().status(), 404);
    let foreign = get(&agent, &url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(foreign.status().as_u16(), 404);
    assert!(agent.store.call_recordings(globex.id, &call_id).await.unwrap().is_empty());

    // Every download by a token is in the audit log, with the bytes asked for; the URL token,
    // refused before any token was checked, acted for nobody.
    let acme = agent.store.org_by_slug("acme").await.unwrap().unwrap();
    let range = |r: &str| Some(r.to_owned());
    assert_eq!(
        downloads(&agent, acme.id, &url).await,
        vec![
            (200, None),
            (206, range("bytes=40-139")),
            (206, range("bytes=-10")),
            (416, Some(format!("bytes={}-", bytes.len()))),
            (400, None),
        ]
    );
    assert_eq!(downloads(&agent, globex.id, &url).await, vec![(404, None)], "globex's attempt is globex's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_announcement_a_florida_call_is_not_recorded() {
    let asterisk = Asterisk::shared().await;
    let agent = Agent::start(asterisk, &[]).await;
    default_agent(&agent, "name = \"silent-recorder\"\n[recording]\nenabled = true\n").await;
    let mark = asterisk.log_mark();
    let (call_id, channel) = call_from_florida(asterisk, &agent).await;
    let exchange = asterisk.finished_agi(mark, &channel).await;

    let commands: Vec<String> = exchange.commands().into_iter().map(|(command, _)| command).collect();
    assert!(!commands.iter().any(|c| c.contains("MixMonitor")), "nothing recorded: {commands:#?}");
    assert!(commands.iter().any(|c| c == "SET VARIABLE ASTERAI_RECORDING refused"), "{commands:#?}");
    // Said on the call (Asterisk's log) and in the daemon's log.
    asterisk.wait_for_log(mark, &["asterai: call recording refused: US-FL requires every party's consent"]).await;
    assert!(
        agent.warnings().iter().any(|w| w.contains("US-FL requires every party's consent")),
        "{}",
        agent.log().join("\n")
    );

    let recordings = settled_recordings(&agent, &call_id).await;
    assert_eq!(recordings.len(), 1, "{recordings:#?}");
    let r = &recordings[0];
    assert_eq!(r.status, RecordingStatus::Refused);
    assert!(r.consent_required && !r.consent_announced, "{r:#?}");
    assert!(r.status_reason.as_deref().unwrap().contains("consent_announcement"), "{r:#?}");
    assert!(!std::path::Path::new(&r.path).exists(), "no file");

    let token = agent.token().await;
    let url = format!("/v1/calls/{call_id}/recording");
    let response = get(&agent, &url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("refused"), "{body}");
    let detail: serde_json::Value =
        get(&agent, &format!("/v1/calls/{call_id}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert!(detail["recording_url"].is_null(), "{detail:#}");
    assert_eq!(detail["recordings"][0]["status"], "refused", "{detail:#}");
}
