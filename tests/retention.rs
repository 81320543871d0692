//! Retention and redaction: the purge of old calls' words (with an injected "now", on both
//! backends), a fleet of two purging at once, the dry run, redaction of card numbers in a real
//! conversation (mocked speech-to-text) down to the bytes of the database file, and the
//! compliance report of the command line against the HTTP route.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use asterai::config::RetentionConfig;
use asterai::feed::Publisher;
use asterai::retention::{Actor, JOB_ACTOR, PurgeReport, purge};
use asterai::store::recordings::{NewRecording, RecordingEnd, RecordingStatus, RecordingVia};
use asterai::store::{CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Outcome, Store, ToolUse};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::db::{Backend, TestDb};

const CARD: &str = "4111 1111 1111 1111";
const CARD_DIGITS: &str = "4111111111111111";

const JOB: Actor<'static> = Actor { name: JOB_ACTOR, via: "daemon", peer: None };

fn turn(call_id: &str, n: i32) -> NewTurn {
    NewTurn {
        call_id: call_id.into(),
        turn: n,
        caller: if n == 0 { String::new() } else { format!("caller line {n}: my card is {CARD}") },
        agent: format!("agent line {n}"),
        emotion: Some("neutral".into()),
        intent: Some("question".into()),
        confidence: Some(0.8),
        latency: Latency {
            endpoint: 1000,
            stt: 300,
            llm_first: 400,
            tts_first: 200,
            total: 1900,
            ..Latency::default()
        },
        interrupted: false,
        tools: vec![ToolUse { name: "lookup".into(), arguments: json!({"card": CARD}), result: json!({"ok": true}) }],
    }
}

/// A finished call of `org_id` with three turns, a transcript and an analysis, started at
/// `started` (written back into the row, as if it had been placed then).
async fn old_call(db: (&str, Backend), publisher: &Publisher, org_id: i64, started: DateTime<Utc>) -> String {
    let rec_dir = std::env::temp_dir().join(format!("asterai-retention-{}", std::process::id()));
    std::fs::create_dir_all(&rec_dir).unwrap();
    let call = publisher
        .call_started(&NewCall {
            id: None,
            org_id,
            direction: Direction::Outbound,
            from: "+15550001111".into(),
            to: "+15551230000".into(),
            channel: None,
            campaign_id: None,
            contact_id: None,
        })
        .await
        .unwrap();
    publisher.call_status(org_id, &call.id, CallStatus::InProgress, None).await.unwrap();
    for n in 0..3 {
        publisher.conversation_turn(org_id, &turn(&call.id, n)).await.unwrap();
    }
    let finish = FinishCall {
        status: CallStatus::Completed,
        reason: None,
        outcome: Some(Outcome::Interested),
        outcome_reason: Some("wants a quote".into()),
        emotion: None,
        intent_score: Some(0.7),
    };
    publisher.call_ended(org_id, &call.id, &finish).await.unwrap();
    let analysis = json!({"summary": format!("The caller gave {CARD}."), "success": true, "data": {"card": CARD}});
    publisher.call_analyzed(org_id, &call.id, &analysis).await.unwrap();
    // Its whole-call recording, a file on disk.
    let name = format!("{}.wav", call.id);
    let file = rec_dir.join(&name);
    std::fs::write(&file, b"RIFF recording").unwrap();
    let path = file.display().to_string();
    publisher
        .store()
        .start_recording(&NewRecording {
            org_id,
            call_id: &call.id,
            via: RecordingVia::MixMonitor,
            name: &name,
            path: &path,
            format: "wav",
            region: None,
            consent_required: false,
            consent_announced: false,
            status: RecordingStatus::Recording,
            reason: None,
        })
        .await
        .unwrap();
    let end = RecordingEnd {
        status: RecordingStatus::Available,
        reason: None,
        size_bytes: Some(14),
        duration_ms: Some(1000),
    };
    assert!(publisher.store().finish_recording(org_id, &name, &end).await.unwrap());
    set_started(db, &call.id, started).await;
    call.id
}

/// The call's recording: whether its file is still on disk, and its row's status.
async fn recording_of(store: &Store, org_id: i64, call_id: &str) -> (bool, String) {
    let recordings = store.call_recordings(org_id, call_id).await.unwrap();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    (std::path::Path::new(&recordings[0].path).exists(), recordings[0].status.to_string())
}

/// Moves a call's start (and end) back in time, as the injected clock of the test sees it.
fn at(db: &TestDb) -> (&str, Backend) {
    (&db.url, db.backend)
}

async fn set_started((url, backend): (&str, Backend), call_id: &str, at: DateTime<Utc>) {
    let ended = at + chrono::Duration::minutes(2);
    let sql = "UPDATE calls SET started_at = $1, answered_at = $1, ended_at = $2 WHERE id = $3";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).bind(at).bind(ended).bind(call_id).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).bind(at).bind(ended).bind(call_id).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

fn ids(report: &PurgeReport, org: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        report.orgs.iter().filter(|o| o.org == org).flat_map(|o| o.calls.iter().map(|c| c.call_id.clone())).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Everything stored of a call that a purge may change, to compare before and after.
async fn snapshot(store: &Store, org_id: i64, id: &str) -> Value {
    let call = store.call(org_id, id).await.unwrap().unwrap();
    let turns = store.turns(org_id, id).await.unwrap();
    let events: Vec<Value> = store.call_events(id).await.unwrap().into_iter().map(|e| e.data).collect();
    json!({"call": call, "turns": turns, "events": events})
}

async fn audit_purges(store: &Store) -> Vec<asterai::store::audit::AuditEntry> {
    store.audit_log(None, 0, 1000).await.unwrap().into_iter().filter(|e| e.action == "retention.purge").collect()
}

backend_tests! {
    async fn purge_removes_exactly_what_is_old(db) {
        support::init();
        let store = &db.store;
        let publisher = Publisher::new(store.clone(), asterai::feed::Hub::new());
        let acme = store.create_org("acme", "Acme").await.unwrap().id;
        let beta = store.create_org("beta", "Beta").await.unwrap().id;
        let gamma = store.create_org("gamma", "Gamma").await.unwrap().id;
        // acme sends its analyses to a webhook: the outbox holds each body as it is sent.
        let endpoint = asterai::store::webhooks::NewWebhookEndpoint {
            org_id: acme,
            url: "http://127.0.0.1:9/hook".into(),
            secret: "env:ASTERAI_SECRET_HOOK".into(),
            events: vec!["call.analyzed".into()],
            enabled: true,
        };
        store.add_webhook_endpoint(&endpoint).await.unwrap();
        // 30 days by default; acme keeps 10, gamma forever.
        let config = RetentionConfig { days: 30, orgs: BTreeMap::from([("acme".into(), 10), ("gamma".into(), 0)]) };
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let days = |d: i64| now - chrono::Duration::days(d);

        let acme_old = old_call(at(&db), &publisher, acme, days(11)).await;
        let acme_older = old_call(at(&db), &publisher, acme, days(200)).await;
        let acme_new = old_call(at(&db), &publisher, acme, days(9)).await;
        let beta_mid = old_call(at(&db), &publisher, beta, days(11)).await;
        let beta_old = old_call(at(&db), &publisher, beta, days(31)).await;
        let gamma_old = old_call(at(&db), &publisher, gamma, days(4000)).await;
        // A call still going on is never purged, however old.
        let live = publisher
            .call_started(&NewCall { id: None, org_id: acme, direction: Direction::Inbound, from: "+15550002222".into(), to: "+15550003333".into(), channel: None, campaign_id: None, contact_id: None })
            .await
            .unwrap();
        publisher.conversation_turn(acme, &turn(&live.id, 1)).await.unwrap();
        let pool_live = live.id.clone();
        sqlx_started_only(&db, &pool_live, days(100)).await;

        let all = [
            (acme, &acme_old), (acme, &acme_older), (acme, &acme_new), (beta, &beta_mid), (beta, &beta_old),
            (gamma, &gamma_old), (acme, &live.id),
        ];
        let mut before = Vec::new();
        for (org, id) in all {
            before.push(snapshot(store, org, id).await);
        }

        // The dry run lists exactly the old calls and changes nothing.
        let dry = purge(store, &config, None, now, JOB, true).await.unwrap();
        assert!(dry.dry_run);
        assert_eq!(ids(&dry, "acme"), sorted(vec![acme_old.clone(), acme_older.clone()]));
        assert_eq!(ids(&dry, "beta"), vec![beta_old.clone()]);
        assert_eq!(ids(&dry, "gamma"), Vec::<String>::new());
        let gamma_part = dry.orgs.iter().find(|o| o.org == "gamma").unwrap();
        assert_eq!((gamma_part.days, gamma_part.before), (None, None), "gamma keeps forever");
        let acme_part = dry.orgs.iter().find(|o| o.org == "acme").unwrap();
        assert_eq!((acme_part.days, acme_part.before), (Some(10), Some(days(10))));
        let item = &acme_part.calls[0];
        assert_eq!((item.call_id.as_str(), item.turns, item.transcript, item.analysis), (acme_older.as_str(), 3, true, true));
        assert_eq!(item.events, 4, "three conversation_turn events and call_analyzed");
        for (i, (org, id)) in all.iter().enumerate() {
            assert_eq!(snapshot(store, *org, id).await, before[i], "the dry run changed {id}");
        }
        assert!(store.purges(acme, 0, 100).await.unwrap().is_empty());
        assert!(audit_purges(store).await.is_empty(), "a dry run writes no audit entry");
        assert_eq!(item.recordings, 1);
        for (org, id) in &all[..6] {
            assert_eq!(recording_of(store, *org, id).await, (true, "available".into()), "the dry run kept {id}'s recording");
        }

        // The purge takes the same set.
        let done = purge(store, &config, None, now, JOB, false).await.unwrap();
        assert_eq!(ids(&done, "acme"), ids(&dry, "acme"));
        assert_eq!(ids(&done, "beta"), ids(&dry, "beta"));
        assert_eq!(done.calls(), 3);
        // The webhook bodies of the purged calls lose the analysis' words too; a newer call's keep them.
        let deliveries = store.webhook_deliveries(acme, None, 100).await.unwrap();
        let body = |id: &str| deliveries.iter().find(|d| d.call_id == id).map(|d| d.body.clone()).unwrap();
        for id in [&acme_old, &acme_older] {
            let body: Value = serde_json::from_str(&body(id)).unwrap();
            assert_eq!(body["data"], json!({"purged": true, "success": true}), "{body}");
            assert_eq!(body["type"], "call.analyzed");
        }
        assert!(body(&acme_new).contains(CARD), "a call inside the retention keeps its webhook body");

        for (i, (org, id)) in all.iter().enumerate() {
            let purged = [&acme_old, &acme_older, &beta_old].contains(id);
            let after = snapshot(store, *org, id).await;
            if !purged {
                assert_eq!(after, before[i], "{id} is not old enough and stays as it was");
                if *id != &live.id {
                    assert_eq!(recording_of(store, *org, id).await, (true, "available".into()), "{id}'s recording stays");
                }
                continue;
            }
            assert_eq!(recording_of(store, *org, id).await, (false, "purged".into()), "{id}'s recording file is deleted, its row kept as purged");
            let call = store.call(*org, id).await.unwrap().unwrap();
            let was = &before[i]["call"];
            // The metadata stays.
            for key in ["id", "from", "to", "direction", "status", "outcome", "outcome_reason", "started_at", "answered_at", "ended_at", "duration_s", "turns", "intent_score"] {
                assert_eq!(after["call"][key], was[key], "{key} of {id} is kept");
            }
            // When, in the call itself (what `GET /v1/calls` answers): null before the purge.
            assert_eq!(was["purged_at"], Value::Null, "{id} was not purged before");
            assert_eq!(call.purged_at, Some(now), "{id} says when it was purged");
            // The words go.
            assert_eq!(call.transcript, None);
            assert_eq!(call.analysis, Some(json!({"purged": true, "success": true})));
            let turns = store.turns(*org, id).await.unwrap();
            assert_eq!(turns.len(), 3, "the turns' rows and timings stay");
            assert!(turns.iter().all(|t| t.caller.is_empty() && t.agent.is_empty() && t.tools.is_empty()), "{turns:?}");
            assert_eq!(turns[1].latency_ms.total, 1900);
            assert_eq!(turns[1].intent.as_deref(), Some("question"));
            let text = after.to_string();
            assert!(!text.contains("4111") && !text.contains("caller line"), "nothing said is left: {text}");
            assert!(text.contains("wants a quote"), "the outcome's reason is metadata");
        }

        // A purge record per call, with who and what.
        let records = store.purges(acme, 0, 100).await.unwrap();
        assert_eq!(sorted(records.iter().map(|r| r.call_id.clone()).collect()), ids(&dry, "acme"));
        assert!(records.iter().all(|r| r.actor == JOB_ACTOR && r.at == now));
        assert_eq!(records[0].purged, json!({"turns": 3, "transcript": true, "analysis": true, "events": 4, "recordings": 1}));
        assert_eq!(store.purges(beta, 0, 100).await.unwrap().len(), 1);
        assert!(store.purges(gamma, 0, 100).await.unwrap().is_empty());
        // One audit entry per organization purged.
        let audits = audit_purges(store).await;
        assert_eq!(audits.len(), 2, "{audits:?}");
        let acme_audit = audits.iter().find(|a| a.org_id == Some(acme)).unwrap();
        assert_eq!((acme_audit.actor.as_str(), acme_audit.via.as_str(), acme_audit.target.as_deref()), (JOB_ACTOR, "daemon", Some("acme")));
        assert_eq!((acme_audit.detail["calls"].as_i64(), acme_audit.detail["turns"].as_i64(), acme_audit.detail["days"].as_i64()), (Some(2), Some(6), Some(10)));

        // Again (another daemon, later the same day): nothing left to do, nothing written.
        let second = db.second_store().await;
        let cli = Actor { name: "cli:root", via: "cli", peer: Some("local") };
        let again = purge(&second, &config, Some("acme"), now + chrono::Duration::hours(1), cli, false).await.unwrap();
        assert_eq!((again.calls(), again.orgs.len()), (0, 1));
        assert_eq!(audit_purges(store).await.len(), 2);

        // Two days later acme's 9-day-old call is 11 days old: it goes, by the CLI's hand.
        let later = purge(&second, &config, Some("acme"), now + chrono::Duration::days(2), cli, false).await.unwrap();
        assert_eq!(ids(&later, "acme"), vec![acme_new.clone()]);
        let records = store.purges(acme, 0, 100).await.unwrap();
        assert_eq!(records.last().map(|r| (r.call_id.as_str(), r.actor.as_str())), Some((acme_new.as_str(), "cli:root")));
        let audits = audit_purges(store).await;
        assert_eq!(audits.last().map(|a| (a.actor.as_str(), a.via.as_str(), a.peer.as_deref())), Some(("cli:root", "cli", Some("local"))));
        // The audit log itself is never purged (and cannot be).
        assert!(store.audit_log(None, 0, 1000).await.unwrap().len() >= 3);
    }

    async fn two_daemons_purging_at_once_purge_each_call_once(db) {
        support::init();
        let store = &db.store;
        let publisher = Publisher::new(store.clone(), asterai::feed::Hub::new());
        let acme = store.create_org("acme", "Acme").await.unwrap().id;
        let config = RetentionConfig { days: 30, orgs: BTreeMap::new() };
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let mut expected = Vec::new();
        for i in 0..12 {
            expected.push(old_call(at(&db), &publisher, acme, now - chrono::Duration::days(40 + i)).await);
        }
        let second = db.second_store().await;
        let (a, b) = tokio::join!(
            purge(store, &config, None, now, JOB, false),
            purge(&second, &config, None, now, JOB, false),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut both = ids(&a, "acme");
        both.extend(ids(&b, "acme"));
        assert_eq!(sorted(both), sorted(expected.clone()), "each call purged by exactly one of the two");
        let records = store.purges(acme, 0, 100).await.unwrap();
        assert_eq!(records.len(), expected.len(), "one purge record per call");
        let audited: i64 = audit_purges(store).await.iter().map(|e| e.detail["calls"].as_i64().unwrap()).sum();
        assert_eq!(audited, expected.len() as i64);
    }
}

/// Moves only the start of an unfinished call back.
async fn sqlx_started_only(db: &TestDb, call_id: &str, at: DateTime<Utc>) {
    let sql = "UPDATE calls SET started_at = $1 WHERE id = $2";
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(sql).bind(at).bind(call_id).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(sql).bind(at).bind(call_id).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

mod redaction {
    use super::*;
    use asterai::agi::{Router, ServerConfig};
    use asterai::config::{Config, Dur, RedactionConfig, Secret};
    use asterai::conversation::{Conversations, Providers, Settings};
    use asterai::demo::caller::{Caller, Line};
    use support::agi::TestServer;
    use support::http::{FeedClient, TestDaemon};
    use support::mocks::{Sequence, sse, wav_24k};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const WAIT: Duration = Duration::from_secs(30);

    fn contains_card(bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes);
        [CARD, CARD_DIGITS, "4111-1111-1111-1111"].iter().any(|c| text.contains(c))
    }

    fn policy(orgs: &[(&str, bool)]) -> Option<asterai::types::redact::Redaction> {
        let config = RedactionConfig {
            enabled: true,
            orgs: orgs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            patterns: vec![r"\b\d{3}-\d{2}-\d{4}\b".into()],
            ..RedactionConfig::default()
        };
        config.policy().unwrap()
    }

    /// A caller reads out a card number (the mocked speech-to-text writes it in digits) and the
    /// model repeats it: the turns, the transcript, the feed, the call's JSON (what the page
    /// exports) and the database file hold only the mask; the model heard the number.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_card_number_said_on_a_call_is_never_stored() {
        support::init();
        let db = TestDb::new(Backend::Sqlite).await;
        db.store.create_org("acme", "Acme Inc.").await.unwrap();
        let daemon = TestDaemon::start(db.store.clone()).await;
        let publisher = daemon.publisher.clone().with_redaction(policy(&[]));
        let (stt, llm, tts) = (MockServer::start().await, MockServer::start().await, MockServer::start().await);
        Mock::given(method("POST"))
            .and(path("/v1/audio/speech"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(wav_24k(400), "audio/wav"))
            .mount(&tts)
            .await;
        let said = [format!("My card is {CARD}, expiry 12 27, SSN 123-45-6789."), "Thanks, goodbye.".to_owned()];
        let templates = said.iter().map(|t| ResponseTemplate::new(200).set_body_json(json!({ "text": t }))).collect();
        Mock::given(method("POST"))
            .and(path("/v1/audio/transcriptions"))
            .respond_with(Sequence::new(templates))
            .mount(&stt)
            .await;
        let bye = "\n<analysis>{\"intent\": \"goodbye\", \"emotion\": \"neutral\", \"confidence\": 0.9, \"action\": \"end\"}</analysis>";
        let answers = vec![sse(&["I have 4111-1111-1111-1111, thank you."]), sse(&["Goodbye!", bye])];
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Sequence::new(answers))
            .mount(&llm)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.daemon.data_dir = dir.path().display().to_string();
        config.stt.provider = "openai".into();
        config.stt.url = format!("{}/v1", stt.uri());
        config.stt.api_key = Secret::new("sk-stt");
        config.responder.provider = "openai".into();
        config.responder.url = format!("{}/v1", llm.uri());
        config.responder.api_key = Secret::new("sk-llm");
        config.tts.provider = "openai".into();
        config.tts.url = format!("{}/v1", tts.uri());
        config.conversation.turn_budget = Dur::secs(5);
        let providers = Providers::from_config(&config).unwrap();
        std::fs::create_dir_all(config.recordings_dir()).unwrap();
        let conversations = Conversations::new(publisher.clone(), providers, Settings::from_config(&config), None);
        let agi = TestServer::start(Router::new().route("ai", conversations.handler()), ServerConfig::default()).await;

        let token = daemon.token("acme").await;
        let mut feed = FeedClient::connect(daemon.addr, &token, "").await.unwrap();
        let caller = Caller::new(vec![Line::Say("card".into()), Line::Say("bye".into())], "acme");
        tokio::time::timeout(WAIT, caller.call(agi.addr)).await.expect("the call ends").expect("the call runs");
        let acme = db.store.org_by_slug("acme").await.unwrap().unwrap();
        let mut ended = None;
        for _ in 0..600 {
            let page = db.store.list_calls(acme.id, &Default::default()).await.unwrap();
            if let Some(call) = page.calls.first().filter(|c| c.ended_at.is_some()) {
                ended = Some(call.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let call = ended.expect("the call's record is finished");
        // An analysis (the model's words about the call) is masked too.
        publisher
            .call_analyzed(
                acme.id,
                &call.id,
                &json!({"summary": format!("Gave card {CARD_DIGITS}"), "data": {"card": CARD}}),
            )
            .await
            .unwrap();

        let turns = db.store.turns(acme.id, &call.id).await.unwrap();
        assert_eq!(turns[1].caller, "My card is [card number], expiry 12 27, SSN [redacted].", "{turns:?}");
        assert_eq!(turns[1].agent, "I have [card number], thank you.");
        let call = db.store.call(acme.id, &call.id).await.unwrap().unwrap();
        let transcript = call.transcript.clone().unwrap();
        assert!(transcript.contains("Caller: My card is [card number]"), "{transcript}");
        assert_eq!(call.analysis.as_ref().unwrap()["summary"], "Gave card [card number]");

        // The feed.
        // call_started, in_progress, three turns (the greeting and two), completed, call_ended,
        // call_analyzed.
        let events = feed.events(8, WAIT).await;
        assert_eq!(events.last().map(|e| e.kind), Some(asterai::store::EventKind::CallAnalyzed), "{events:?}");
        let text = serde_json::to_string(&events.iter().map(|e| &e.data).collect::<Vec<_>>()).unwrap();
        assert!(text.contains("[card number]") && !contains_card(text.as_bytes()), "{text}");
        // The call as the page loads and exports it (`GET /v1/calls/{id}`, with its turns).
        let body = reqwest::Client::new()
            .get(daemon.url(&format!("/v1/calls/{}", call.id)))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("[card number]") && !contains_card(body.as_bytes()), "{body}");
        // The model heard the caller's words as said.
        let requests = llm.received_requests().await.unwrap();
        assert!(contains_card(&requests[0].body), "the model hears the raw text during the call");

        // Nowhere in the database: every table, and the bytes of its files.
        let mut stored = String::new();
        for org_events in db.store.call_events(&call.id).await.unwrap() {
            stored.push_str(&org_events.data.to_string());
        }
        assert!(!contains_card(stored.as_bytes()));
        daemon.stop().await;
        db.store.close().await;
        let path = db.url.trim_start_matches("sqlite://").to_owned();
        for file in [path.clone(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(!contains_card(&bytes), "{file} holds the card number");
            }
        }
        // And the raw bytes would be found: the scan itself works.
        assert!(contains_card(format!("x {CARD} y").as_bytes()));
    }

    /// Per organization: beta opted out keeps its words; an organization whose setting cannot
    /// be read is masked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redaction_is_per_organization() {
        support::init();
        let db = TestDb::new(Backend::Sqlite).await;
        let acme = db.store.create_org("acme", "Acme").await.unwrap().id;
        let beta = db.store.create_org("beta", "Beta").await.unwrap().id;
        let publisher =
            Publisher::new(db.store.clone(), asterai::feed::Hub::new()).with_redaction(policy(&[("beta", false)]));
        assert!(publisher.redactor(acme).await.is_some());
        assert!(publisher.redactor(beta).await.is_none());
        assert!(publisher.redactor(9999).await.is_some(), "unknown: masked");
        let plain = Publisher::new(db.store.clone(), asterai::feed::Hub::new());
        assert!(plain.redactor(acme).await.is_none(), "off by default");
        for (org, masked) in [(acme, true), (beta, false)] {
            let call = publisher
                .call_started(&NewCall {
                    id: None,
                    org_id: org,
                    direction: Direction::Inbound,
                    from: "+15550001111".into(),
                    to: "+15550002222".into(),
                    channel: None,
                    campaign_id: None,
                    contact_id: None,
                })
                .await
                .unwrap();
            publisher.conversation_turn(org, &turn(&call.id, 1)).await.unwrap();
            let turns = db.store.turns(org, &call.id).await.unwrap();
            assert_eq!(!contains_card(turns[0].caller.as_bytes()), masked, "{turns:?}");
            assert_eq!(!contains_card(turns[0].tools[0].arguments.to_string().as_bytes()), masked, "tool arguments");
        }
    }
}

/// `asterai campaign compliance` prints what `GET /v1/campaigns/{id}/compliance` answers, JSON
/// and CSV, from the same code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_command_prints_the_http_report() {
    use asterai::store::compliance::NewCheck;
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("asterai.db").display());
    let store = Store::connect(&support::db::options(&url)).await.unwrap();
    store.migrate().await.unwrap();
    let daemon = support::http::TestDaemon::start(store.clone()).await;
    let token = daemon.token("acme").await;
    let acme = store.org_by_slug("acme").await.unwrap().unwrap().id;
    let campaign = store.create_campaign(acme, "spring", &json!({})).await.unwrap();
    let at: DateTime<Utc> = asterai::store::now();
    for (number, passed, reason) in
        [("+13055550100", true, None), ("+13055550100", false, Some("cap")), ("+12135550100", false, Some("window"))]
    {
        store
            .record_check(&NewCheck {
                org_id: acme,
                campaign_id: Some(campaign.id),
                contact_id: None,
                call_id: None,
                number,
                stage: "dial",
                passed,
                reason,
                detail: "checked",
                region: Some("US-FL"),
                local_time: Some("2026-12-01T09:00:00-05:00"),
                not_before: None,
                at,
            })
            .await
            .unwrap();
    }
    let path = format!("/v1/campaigns/{}/compliance", campaign.id);
    let client = reqwest::Client::new();
    let get = |query: &'static str| {
        let request = client.get(daemon.url(&format!("{path}{query}"))).bearer_auth(&token);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let http_json: Value = serde_json::from_str(&get("").await).unwrap();
    let http_csv = get("?format=csv").await;
    let id = campaign.id.to_string();
    let run = |extra: &[&str]| {
        let out = support::daemon::command(dir.path())
            .args(["campaign", "compliance", &id, "--org", "acme"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let cli_json: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    // The same report, but for when it was made (and the 30 days of the abandon rate with it).
    let timeless = |mut v: Value| {
        v.as_object_mut().unwrap().remove("generated_at");
        v["abandon"].as_object_mut().unwrap().remove("since");
        v
    };
    assert_eq!(timeless(cli_json.clone()), timeless(http_json.clone()));
    assert_eq!(cli_json["attempts"], 1);
    assert_eq!(cli_json["refused"], json!({"cap": 1, "window": 1}));
    let cli_csv = run(&["--csv"]);
    let rows = |csv: &str| csv.lines().filter(|l| !l.starts_with("summary")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(rows(&cli_csv), rows(&http_csv));
    assert_eq!(rows(&cli_csv).len(), 4, "the header, an attempt and two refusals:\n{cli_csv}");
    let text = run(&[]);
    assert!(
        text.contains("attempts  1") && text.contains("cap 1, window 1") && text.contains("legal advice"),
        "{text}"
    );
    daemon.stop().await;
}

/// `asterai purge` through the real binary: `--dry-run` lists and changes nothing, then the
/// purge takes the same call, with the CLI user as actor; `retention.orgs` from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_command_lists_then_purges() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("asterai.db").display());
    let store = Store::connect(&support::db::options(&url)).await.unwrap();
    store.migrate().await.unwrap();
    let acme = store.create_org("acme", "Acme").await.unwrap().id;
    store.create_org("beta", "Beta").await.unwrap();
    let publisher = Publisher::new(store.clone(), asterai::feed::Hub::new());
    let now = asterai::store::now();
    let old = old_call((&url, Backend::Sqlite), &publisher, acme, now - chrono::Duration::days(40)).await;
    let new = old_call((&url, Backend::Sqlite), &publisher, acme, now - chrono::Duration::days(5)).await;
    let run = |args: &[&str]| {
        let out = support::daemon::command(dir.path())
            .arg("purge")
            .args(args)
            .env("ASTERAI_RETENTION_ORGS", "{ acme = 30 }")
            .env("USER", "alice")
            .env_remove("SUDO_USER")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["--dry-run"]);
    assert!(text.contains("acme: keeps 30 days; would purge 1 calls") && text.contains(&old), "{text}");
    assert!(text.contains("beta: kept forever") && !text.contains(&new), "{text}");
    assert!(text.contains("3 turns, transcript, analysis, 4 events, 1 recordings"), "{text}");
    let dry: Value = serde_json::from_str(&run(&["--dry-run", "--json", "--org", "acme"])).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["orgs"][0]["calls"][0]["call_id"], Value::from(old.as_str()));
    assert!(store.call(acme, &old).await.unwrap().unwrap().transcript.is_some(), "the dry run changed nothing");
    assert!(store.purges(acme, 0, 10).await.unwrap().is_empty());

    let done: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(done["orgs"][0]["calls"][0]["call_id"], Value::from(old.as_str()));
    assert_eq!(store.call(acme, &old).await.unwrap().unwrap().transcript, None);
    assert!(store.call(acme, &new).await.unwrap().unwrap().transcript.is_some());
    let records = store.purges(acme, 0, 10).await.unwrap();
    assert_eq!((records.len(), records[0].actor.as_str()), (1, "cli:alice"));
    let audit = audit_purges(&store).await;
    assert_eq!((audit.len(), audit[0].actor.as_str(), audit[0].via.as_str()), (1, "cli:alice", "cli"));
    let again = run(&[]);
    assert!(again.contains("purged 0 calls"), "{again}");
}
