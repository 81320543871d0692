//! Compliance against the fake ARI with an injected clock: calling rules by region (a contact
//! in Florida by its `state`, one in California, one known only by its area code), the cap per
//! number, holidays, and every refusal recorded with its reason.
//!
//! Ticks are driven by the tests and the clock only moves when told to; deadlines exist only to
//! fail.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use asterai::ari::AriClient;
use asterai::ari::stream::{self, StreamConfig};
use asterai::dialer::compliance::Compliance;
use asterai::dialer::import;
use asterai::dialer::report::Report;
use asterai::dialer::{Clock, DialSettings, Dialer, ManualClock, Runner, RunnerConfig, Tracker, TrackerConfig};
use asterai::feed::{Hub, Publisher};
use asterai::store::campaigns::Campaign;
use asterai::store::contacts::Contact;
use asterai::store::{Org, Store};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::fake_ari::{FakeAri, PATIENCE, Plan, Scenario, derive, line_of};
use tokio_util::sync::CancellationToken;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

struct Daemon {
    store: Store,
    fake: FakeAri,
    org: Org,
    runner: Arc<Runner>,
    stop: CancellationToken,
}

async fn daemon(store: Store, clock: &ManualClock, compliance: Compliance) -> Daemon {
    support::init();
    let fake = FakeAri::start().await;
    let org = store.create_org("acme", "Acme Inc.").await.unwrap();
    let publisher = Publisher::new(store.clone(), Hub::new());
    let client = AriClient::new(fake.settings()).unwrap();
    let tracker = Tracker::new(
        publisher.clone(),
        client.clone(),
        TrackerConfig {
            context: "asterai-outbound".into(),
            extension: "s".into(),
            orphan_grace: Duration::from_secs(600),
            reconcile_unassigned: false,
            conversation_grace: Duration::from_millis(200),
        },
    );
    let stop = CancellationToken::new();
    let mut config = StreamConfig::new(fake.settings(), "asterai", Duration::from_millis(300));
    config.reconnect_min = Duration::from_millis(20);
    tokio::spawn(tracker.clone().run(stream::spawn(config, stop.child_token())));
    wait_for("the tracker to connect", || {
        let tracker = tracker.clone();
        async move { tracker.connected() }
    })
    .await;
    let settings = DialSettings {
        endpoint: "PJSIP/{number}@trunk".into(),
        app: "asterai".into(),
        caller_id: "Acme <+15550000000>".into(),
        ring_timeout: Duration::from_secs(30),
        media: Default::default(),
    };
    let dialer = Arc::new(Dialer::new(publisher, client, settings, Some(tracker)));
    let runner = Runner::new(
        dialer,
        Arc::new(clock.clone()),
        RunnerConfig {
            claimer: "d1".into(),
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            compliance: Arc::new(compliance),
        },
    );
    tokio::spawn(runner.clone().settle_as_calls_end(stop.child_token()));
    Daemon { store, fake, org, runner, stop }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A call that rings out unanswered.
fn no_answer() -> Plan {
    let s = Scenario::load("originate-stasis");
    let id = "1795222386.55";
    let ringing = derive(&line_of(&s, "ChannelStateChange", id), &[("/channel/state", json!("Ringing"))]);
    let dial = derive(&line_of(&s, "Dial", id), &[("/dialstatus", json!("NOANSWER"))]);
    let gone = derive(
        &line_of(&s, "ChannelDestroyed", id),
        &[
            ("/cause", json!(19)),
            ("/cause_txt", json!("User alerting, no answer")),
            ("/channel/state", json!("Ringing")),
        ],
    );
    Plan::replay("originate-stasis", 1).instead(vec![ringing, dial, gone])
}

impl Daemon {
    async fn campaign(&self, name: &str, settings: Value, csv: &str) -> Campaign {
        let campaign = self.store.create_campaign(self.org.id, name, &settings).await.unwrap();
        let report =
            import::import(&self.store, self.org.id, campaign.id, csv.as_bytes(), &mut |_, _| {}).await.unwrap();
        assert!(report.rejected.is_empty(), "{report:?}");
        self.store.set_campaign_status(self.org.id, campaign.id, "running").await.unwrap()
    }

    async fn contacts(&self, campaign: &Campaign) -> BTreeMap<String, Contact> {
        self.store.list_contacts(campaign.id).await.unwrap().into_iter().map(|c| (c.phone.clone(), c)).collect()
    }

    async fn settled(&self, call_id: &str) {
        let store = self.store.clone();
        wait_for(&format!("the attempt of call {call_id} to be settled"), || {
            let store = store.clone();
            async move {
                let call = store.call_any(call_id).await.unwrap().unwrap();
                let contacts = store.list_contacts(call.campaign_id.unwrap()).await.unwrap();
                let contact = contacts.iter().find(|c| Some(c.id) == call.contact_id).unwrap();
                !(contact.status == "dialing" && contact.last_call_id.as_deref() == Some(call_id))
            }
        })
        .await;
    }

    fn dialed_numbers(&self) -> Vec<String> {
        self.fake
            .originates()
            .iter()
            .map(|r| r.query["endpoint"].trim_start_matches("PJSIP/").trim_end_matches("@trunk").to_owned())
            .collect()
    }

    /// The campaign's refusals: (number, stage, reason, region).
    async fn refusals(&self, campaign: &Campaign) -> Vec<(String, String, String, Option<String>)> {
        let checks = self.store.campaign_checks(self.org.id, campaign.id).await.unwrap();
        checks
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| (c.number, c.stage, c.reason.unwrap_or_default(), c.region))
            .collect()
    }
}

const FILE: &str = r#"
[defaults]
caps = { per_24h = 2, per_30d = 10 }
[orgs.acme]
holidays = ["2026-11-26"]
"#;

backend_tests! {
    async fn regions_caps_and_holidays(db) {
        // Monday 2026-11-23, 20:30 in New York, 19:30 in Oklahoma City, 17:30 in San Francisco.
        let clock = ManualClock::new(at("2026-11-24T01:30:00Z"));
        let d = daemon(db.store.clone(), &clock, Compliance::parse(FILE).unwrap()).await;
        let csv = "phone,state,timezone\n\
                   +12125550101,FL,America/New_York\n\
                   +14155550102,California,\n\
                   +14055550103,,\n";
        let settings = json!({"max_concurrent": 5, "retries": {"no_answer": {"attempts": 5, "delay": "10m"}}});
        let campaign = d.campaign("autumn", settings, csv).await;
        d.fake.plan(no_answer());
        d.fake.plan(no_answer());
        let tick = d.runner.tick().await.unwrap();
        // Florida (by its state, whatever its New York number says) closes at 20:00; California
        // is open, and so is Oklahoma (by the 405 area code alone) until 20:00 Central.
        assert_eq!(tick.dialed.len(), 2, "{tick:?}");
        assert_eq!(tick.refused.get("region_rule"), Some(&1), "{tick:?}");
        let mut dialed = d.dialed_numbers();
        dialed.sort();
        assert_eq!(dialed, ["+14055550103", "+14155550102"]);
        let c = d.contacts(&campaign).await;
        assert_eq!(c["+12125550101"].next_attempt_at, Some(at("2026-11-24T13:00:00Z")), "08:00 in Florida");
        assert_eq!(c["+12125550101"].state.as_deref(), Some("US-FL"));
        assert_eq!(
            d.refusals(&campaign).await,
            [("+12125550101".to_owned(), "claim".to_owned(), "region_rule".to_owned(), Some("US-FL".to_owned()))]
        );
        let checks = d.store.campaign_checks(d.org.id, campaign.id).await.unwrap();
        let oklahoma = checks.iter().find(|c| c.number == "+14055550103" && c.passed).unwrap();
        assert_eq!(oklahoma.region.as_deref(), Some("US-OK"), "the region of the 405 area code");
        assert_eq!(oklahoma.local_time.as_deref(), Some("2026-11-23 19:30 America/Chicago"));
        assert!(oklahoma.detail.contains("US-OK 08:00–20:00"), "{}", oklahoma.detail);
        assert!(oklahoma.call_id.is_some());
        for id in &tick.dialed {
            d.settled(id).await;
        }

        // 20:30 Central: Oklahoma's hours are over, California's are not. California rings out
        // a second time; a third call in 24 hours is over the organization's cap of 2.
        clock.set(at("2026-11-24T02:30:00Z"));
        d.fake.plan(no_answer());
        let tick = d.runner.tick().await.unwrap();
        assert_eq!(d.dialed_numbers().last().unwrap(), "+14155550102");
        assert_eq!((tick.dialed.len(), tick.refused.get("region_rule")), (1, Some(&1)), "{tick:?}");
        d.settled(&tick.dialed[0]).await;
        clock.set(at("2026-11-24T03:00:00Z"));
        let tick = d.runner.tick().await.unwrap();
        assert!(tick.dialed.is_empty(), "{tick:?}");
        assert_eq!(tick.refused.get("cap"), Some(&1), "{tick:?}");
        let c = d.contacts(&campaign).await;
        assert_eq!(
            c["+14155550102"].next_attempt_at,
            Some(at("2026-11-25T01:30:00Z")),
            "24 hours after the first of the two calls"
        );
        assert_eq!(d.dialed_numbers().iter().filter(|n| *n == "+14155550102").count(), 2);

        // The cap holds across campaigns: another campaign of the organization is refused too.
        let other = d.campaign("winter", json!({}), "phone\n+14155550102\n").await;
        let tick = d.runner.tick().await.unwrap();
        assert!(tick.dialed.is_empty(), "{tick:?}");
        assert_eq!(d.refusals(&other).await[0].2, "cap");

        // Thanksgiving is the organization's holiday; the campaign adds the day after.
        clock.set(at("2026-11-26T18:00:00Z"));
        let festive = d
            .campaign("festive", json!({"holidays": ["2026-11-27"]}), "phone,state\n+13105550105,CA\n")
            .await;
        let tick = d.runner.tick().await.unwrap();
        assert!(!d.dialed_numbers().contains(&"+13105550105".to_owned()), "{tick:?}");
        assert!(tick.refused.get("holiday").copied().unwrap_or(0) >= 1, "{tick:?}");
        let c = d.contacts(&festive).await;
        assert_eq!(c["+13105550105"].next_attempt_at, Some(at("2026-11-28T16:00:00Z")), "Saturday 08:00 in Los Angeles");
        let reasons: Vec<String> = d.refusals(&festive).await.into_iter().map(|r| r.2).collect();
        assert_eq!(reasons, ["holiday"]);

        // The report's figures are the store's.
        let policy = asterai::dialer::compliance::AbandonPolicy::default();
        let current = d.store.campaign(d.org.id, campaign.id).await.unwrap().unwrap();
        let stats = d.store.abandon_stats(&current, &policy, clock.now()).await.unwrap();
        let report = Report::build(&d.store, &current, stats, clock.now()).await.unwrap();
        let checks = d.store.campaign_checks(d.org.id, campaign.id).await.unwrap();
        let placed = d.dialed_numbers().iter().filter(|n| *n != "+13105550105").count();
        assert_eq!(report.attempts, placed, "every call the campaign placed");
        assert_eq!(report.attempts, checks.iter().filter(|c| c.passed).count());
        let refusals = checks.iter().filter(|c| !c.passed).count();
        assert_eq!(report.refused.values().sum::<usize>(), refusals);
        assert!(report.refused["region_rule"] >= 2 && report.refused["cap"] == 1, "{:?}", report.refused);
        let california = report.contacts.iter().find(|c| c.number == "+14155550102").unwrap();
        assert_eq!(california.attempts.len(), 2);
        assert_eq!(california.attempts[0].local_time.as_deref(), Some("2026-11-23 17:30 America/Los_Angeles"));
        assert_eq!(california.attempts[0].status.as_deref(), Some("no_answer"));
        assert_eq!(california.refused[0].reason, "cap");
        let csv = report.to_csv().unwrap();
        let rows = csv::Reader::from_reader(csv.as_bytes()).records().count();
        assert_eq!(rows, 1 + report.attempts + refusals, "a summary row, then each attempt and refusal");
        assert!(csv.lines().nth(1).unwrap().contains("abandon rate 0.0 %"), "{csv}");
        d.stop.cancel();
    }

    async fn abandonment_slows_then_pauses_the_campaign(db) {
        let clock = ManualClock::new(at("2026-11-23T15:00:00Z"));
        let file = "[defaults]\nabandon = { threshold = 3.0, min_answered = 5, pause_after = 2 }\n";
        let d = daemon(db.store.clone(), &clock, Compliance::parse(file).unwrap()).await;
        // A contact that waits for Sunday, so the campaign stays running without calls.
        let campaign = d.campaign("spring", json!({"window": {"days": ["sun"]}}), "phone\n+33155550009\n").await;
        for waited in [Some(400), Some(1999), Some(2000)] {
            answered_call(&d, &campaign, waited, false).await;
        }
        answered_call(&d, &campaign, None, false).await; // hung up before the agent spoke
        answered_call(&d, &campaign, None, true).await; // an answering machine: not a person
        let tick = d.runner.tick().await.unwrap();
        assert!(tick.paused.is_empty());
        let current = d.store.campaign(d.org.id, campaign.id).await.unwrap().unwrap();
        assert_eq!(current.slowed_at, None, "4 answered live calls: fewer than min_answered");

        answered_call(&d, &campaign, Some(2500), false).await; // waited too long
        d.runner.tick().await.unwrap();
        let current = d.store.campaign(d.org.id, campaign.id).await.unwrap().unwrap();
        assert_eq!(current.status, "running");
        let reason = current.slowed_reason.clone().unwrap();
        assert!(reason.contains("abandon rate 40.0 %") && reason.contains("2 of 5"), "{reason}");
        let policy = asterai::dialer::compliance::AbandonPolicy { threshold: 3.0, ..Default::default() };
        let stats = d.store.abandon_stats(&current, &policy, clock.now()).await.unwrap();
        assert_eq!((stats.answered, stats.abandoned, stats.rate), (5, 2, 40.0));
        let page = d.store.events_after(d.org.id, 0, 1000).await.unwrap();
        let slowed = page.events.iter().find(|e| e.data["slowed"] == json!(true)).expect("the slowdown on the feed");
        assert_eq!(slowed.data["reason"], json!(reason));

        // Still slowed, not paused, until pause_after more answered calls.
        answered_call(&d, &campaign, Some(300), false).await;
        assert!(d.runner.tick().await.unwrap().paused.is_empty());
        answered_call(&d, &campaign, Some(300), false).await;
        let tick = d.runner.tick().await.unwrap();
        assert_eq!(tick.paused, vec![campaign.id]);
        let current = d.store.campaign(d.org.id, campaign.id).await.unwrap().unwrap();
        assert_eq!(current.status, "paused");
        let why = current.status_reason.unwrap();
        assert!(why.starts_with("paused: abandon rate 28.6 %"), "{why}");
        let paused = page_after(&d).await;
        assert!(paused.iter().any(|e| e.data["status"] == json!("paused") && e.data["reason"] == json!(why)));

        // Starting it again (someone fixed the voice) clears the slowdown.
        let restarted = d.store.set_campaign_status(d.org.id, campaign.id, "running").await.unwrap();
        assert_eq!((restarted.slowed_at, restarted.slowed_reason), (None, None));
        d.stop.cancel();
    }

    async fn audit_log_and_report_routes(db) {
        let daemon = support::http::TestDaemon::start(db.store.clone()).await;
        let admin = daemon.token("acme").await;
        let monitor = daemon.token_with("acme", asterai::auth::Scopes::parse("monitor").unwrap()).await;
        let globex = daemon.token("globex").await;
        let http = reqwest::Client::new();
        let created: Value = http
            .post(daemon.url("/v1/campaigns"))
            .bearer_auth(&admin)
            .json(&json!({"name": "spring"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_i64().unwrap();
        let short = http
            .post(daemon.url("/v1/campaigns"))
            .bearer_auth(&admin)
            .json(&json!({"name": "short", "settings": {"ring_timeout": "10s"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(short.status(), 400);
        assert!(short.text().await.unwrap().contains("ring_timeout"));
        let start = http.post(daemon.url(&format!("/v1/campaigns/{id}/start"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(start.status(), 200);
        let added = http
            .post(daemon.url("/v1/dnc"))
            .bearer_auth(&admin)
            .json(&json!({"number": "+15551230000"}))
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 201);
        let removed = http.delete(daemon.url("/v1/dnc/+15551230000")).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(removed.status(), 204);
        // Refused before it acted (scope): nobody acted, nothing is logged.
        let denied = http.delete(daemon.url("/v1/dnc/+15551230000")).bearer_auth(&monitor).send().await.unwrap();
        assert_eq!(denied.status(), 403);
        // Reads are not actions.
        http.get(daemon.url("/v1/campaigns")).bearer_auth(&admin).send().await.unwrap();

        let forbidden = http.get(daemon.url("/v1/audit")).bearer_auth(&monitor).send().await.unwrap();
        assert_eq!(forbidden.status(), 403);
        let log: Value = http.get(daemon.url("/v1/audit")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        let entries = log["entries"].as_array().unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["campaign.created", "campaign.created", "campaign.started", "dnc.added", "dnc.removed"]);
        assert_eq!(entries[0]["detail"]["id"], json!(id));
        assert_eq!(entries[1]["detail"]["status"], json!(400));
        assert_eq!(entries[4]["target"], json!("/v1/dnc/+15551230000"));
        for e in entries {
            assert!(e["actor"].as_str().unwrap().starts_with("token:test ("), "{e}");
            assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
            assert_eq!(e["via"], json!("api"));
        }
        let other: Value = http.get(daemon.url("/v1/audit")).bearer_auth(&globex).send().await.unwrap().json().await.unwrap();
        assert_eq!(other["entries"], json!([]), "another organization's log is its own");
        let page: Value = http
            .get(daemon.url(&format!("/v1/audit?after={}&limit=1", entries[3]["id"])))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["entries"][0]["action"], json!("dnc.removed"));

        // Append-only: the database refuses to change or remove an entry.
        let change = "UPDATE audit_log SET actor = 'someone else'";
        let remove = "DELETE FROM audit_log";
        match db.backend {
            support::db::Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
                for sql in [change, remove] {
                    let err = sqlx::query(sql).execute(&pool).await.unwrap_err().to_string();
                    assert!(err.contains("append-only"), "{err}");
                }
            }
            support::db::Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                for sql in [change, remove] {
                    let err = sqlx::query(sql).execute(&pool).await.unwrap_err().to_string();
                    assert!(err.contains("append-only"), "{err}");
                }
            }
        }
        assert_eq!(db.store.audit_log(None, 0, 100).await.unwrap().len(), 5);

        // The stats and the report, JSON and CSV, scoped to the organization.
        let stats: Value =
            http.get(daemon.url(&format!("/v1/campaigns/{id}/stats"))).bearer_auth(&monitor).send().await.unwrap().json().await.unwrap();
        assert_eq!((stats["campaign_id"].as_i64(), stats["abandon"]["answered"].as_i64()), (Some(id), Some(0)));
        assert_eq!(stats["abandon"]["threshold"], json!(3.0));
        let report: Value = http
            .get(daemon.url(&format!("/v1/campaigns/{id}/compliance")))
            .bearer_auth(&monitor)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((report["campaign"].as_i64(), report["attempts"].as_i64()), (Some(id), Some(0)));
        assert!(report["note"].as_str().unwrap().contains("not legal advice") || report["note"].as_str().unwrap().contains("nothing here is legal advice"));
        let csv = http
            .get(daemon.url(&format!("/v1/campaigns/{id}/compliance?format=csv")))
            .bearer_auth(&monitor)
            .send()
            .await
            .unwrap();
        assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
        assert!(csv.text().await.unwrap().starts_with("kind,contact_id,number,at_utc"));
        let bad = http.get(daemon.url(&format!("/v1/campaigns/{id}/compliance?format=xml"))).bearer_auth(&monitor).send().await.unwrap();
        assert_eq!(bad.status(), 400);
        for path in [format!("/v1/campaigns/{id}/compliance"), format!("/v1/campaigns/{id}/stats")] {
            let theirs = http.get(daemon.url(&path)).bearer_auth(&globex).send().await.unwrap();
            assert_eq!(theirs.status(), 404, "{path}");
        }
        daemon.stop().await;
    }
}

#[test]
fn a_ring_shorter_than_15_seconds_is_refused() {
    let err = asterai::dialer::CampaignSettings::from_json(&json!({"ring_timeout": "10s"})).unwrap_err();
    assert!(err.contains("ring_timeout") && err.contains("15s"), "{err}");
    assert!(asterai::dialer::CampaignSettings::from_json(&json!({"ring_timeout": "15s"})).is_ok());
}

/// An answered call of the campaign: the agent's first audio `waited` ms after the answer (none:
/// the person hung up before any), or an answering machine.
async fn answered_call(d: &Daemon, campaign: &Campaign, waited: Option<i64>, machine: bool) {
    use asterai::store::{CallStatus, Direction, FinishCall, NewCall, Outcome};
    let new = NewCall {
        id: None,
        org_id: d.org.id,
        direction: Direction::Outbound,
        from: "+15550000000".into(),
        to: "+33155550001".into(),
        channel: None,
        campaign_id: Some(campaign.id),
        contact_id: None,
    };
    let (call, _) = d.store.create_call(&new).await.unwrap();
    d.store.set_call_status(d.org.id, &call.id, CallStatus::InProgress, Some("answered")).await.unwrap();
    let answered = d.store.call(d.org.id, &call.id).await.unwrap().unwrap().answered_at.unwrap();
    if let Some(ms) = waited {
        let at = answered + chrono::Duration::milliseconds(ms);
        assert!(d.store.record_first_audio(d.org.id, &call.id, at).await.unwrap());
        assert!(!d.store.record_first_audio(d.org.id, &call.id, at).await.unwrap(), "only the first counts");
    }
    let finish = FinishCall {
        status: CallStatus::Completed,
        reason: None,
        outcome: Some(if machine { Outcome::Voicemail } else { Outcome::Completed }),
        outcome_reason: None,
        emotion: None,
        intent_score: None,
    };
    d.store.finish_call(d.org.id, &call.id, &finish).await.unwrap();
}

async fn page_after(d: &Daemon) -> Vec<asterai::store::Event> {
    d.store.events_after(d.org.id, 0, 1000).await.unwrap().events
}

/// `asterai dnc add` and `asterai campaign create` are written to the audit log with the CLI
/// user; `asterai audit` lists them; reads are not.
#[test]
fn the_cli_writes_and_reads_the_audit_log() {
    use support::daemon::command;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = command(dir.path())
            .args(args)
            .env("USER", "ops")
            .env_remove("SUDO_USER")
            .env_remove("SSH_CLIENT")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["org", "create", "acme"]);
    run(&["dnc", "add", "+15551230000", "--org", "acme"]);
    run(&["dnc", "list", "--org", "acme"]);
    run(&["campaign", "create", "spring", "--org", "acme"]);
    let log: Value = serde_json::from_str(&run(&["audit", "--json"])).unwrap();
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["org create", "dnc add", "campaign create"]);
    assert_eq!(entries[1]["actor"], json!("cli:ops"));
    assert_eq!(entries[1]["via"], json!("cli"));
    assert_eq!(entries[1]["peer"], json!("local"));
    assert_eq!(entries[1]["target"], json!("+15551230000 --org acme"));
    assert!(entries[1]["org_id"].as_i64().is_some());
    let text = run(&["audit", "--org", "acme"]);
    assert!(text.contains("cli:ops") && text.contains("dnc add"), "{text}");
}
