//! One organization never writes into (or reads) another's calls: every cross-organization path
//! (the `ai` route's `call_id`, `campaign` and `contact`, a race for a call id, the store's
//! writes, the REST routes, the feed's filters) leaves the victim's rows and feed untouched, and
//! event ids say nothing about another organization's volume. Both backends.

mod support;

use std::time::Duration;

use asterai::agi::{Router, ServerConfig};
use asterai::config::Config;
use asterai::conversation::record::Change;
use asterai::conversation::{Conversations, Providers, Settings};
use asterai::demo::caller::{CallLog, Caller, Line};
use asterai::store::contacts::NewContactRow;
use asterai::store::{
    Call, CallFilter, CallStatus, Direction, Event, FinishCall, Latency, NewCall, NewTurn, Outcome, Store, StoreError,
};
use support::agi::TestServer;
use support::db::TestDb;
use support::http::{FeedClient, Received, TestDaemon};
use support::mocks::wav_24k;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(20);

/// A daemon with the `ai` route (scripted speech-to-text, the rules responder, a mocked voice),
/// and two organizations: `acme` (the caller's) and `globex` (the victim).
struct Rig {
    db: TestDb,
    daemon: TestDaemon,
    agi: TestServer,
    conversations: Conversations,
    acme: i64,
    globex: i64,
    _tts: MockServer,
    _dir: tempfile::TempDir,
}

async fn rig(db: TestDb) -> Rig {
    let acme = db.store.create_org("acme", "Acme Inc.").await.unwrap().id;
    let globex = db.store.create_org("globex", "Globex").await.unwrap().id;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let tts = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(wav_24k(200), "audio/wav"))
        .mount(&tts)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.provider = "scripted".into();
    config.responder.provider = "rules".into();
    config.tts.provider = "openai".into();
    config.tts.url = format!("{}/v1", tts.uri());
    std::fs::create_dir_all(config.recordings_dir()).unwrap();
    let conversations = Conversations::new(
        daemon.publisher.clone(),
        Providers::from_config(&config).unwrap(),
        Settings::from_config(&config),
        None,
    );
    let agi = TestServer::start(Router::new().route("ai", conversations.handler()), ServerConfig::default()).await;
    Rig { db, daemon, agi, conversations, acme, globex, _tts: tts, _dir: dir }
}

/// Everything stored about one organization's call: the row, its turns and its events.
#[derive(Debug, PartialEq)]
struct Snapshot {
    call: Option<Call>,
    turns: Vec<asterai::store::Turn>,
    events: Vec<Event>,
    last_event_id: i64,
}

async fn snapshot(store: &Store, org: i64, call_id: &str) -> Snapshot {
    Snapshot {
        call: store.call(org, call_id).await.unwrap(),
        turns: store.turns(org, call_id).await.unwrap(),
        events: store.call_events(call_id).await.unwrap(),
        last_event_id: store.last_event_id(org).await.unwrap(),
    }
}

fn new_call(org_id: i64, id: &str) -> NewCall {
    NewCall {
        id: Some(id.into()),
        org_id,
        direction: Direction::Inbound,
        from: "+15559990000".into(),
        to: "5550199".into(),
        channel: Some("PJSIP/globex-00000001".into()),
        campaign_id: None,
        contact_id: None,
    }
}

fn turn(call_id: &str, n: i32) -> NewTurn {
    NewTurn {
        call_id: call_id.into(),
        turn: n,
        caller: "globex's secret".into(),
        agent: "noted".into(),
        emotion: None,
        intent: None,
        confidence: None,
        latency: Latency::default(),
        interrupted: false,
        tools: Vec::new(),
    }
}

/// globex's live call `id`, answered, with one turn.
async fn victim_call(rig: &Rig, id: &str) -> Call {
    let p = &rig.daemon.publisher;
    let call = p.call_started(&new_call(rig.globex, id)).await.unwrap();
    p.call_status(rig.globex, id, CallStatus::InProgress, Some("answered")).await.unwrap();
    p.conversation_turn(rig.globex, &turn(id, 1)).await.unwrap();
    call
}

fn caller(path: &str) -> Caller {
    let mut caller = Caller::new(vec![Line::Say("hello".into()), Line::Say("goodbye".into())], "acme");
    caller.script_path = path.into();
    caller
}

async fn place(rig: &Rig, caller: &Caller) -> CallLog {
    tokio::time::timeout(WAIT, caller.call(rig.agi.addr)).await.expect("the call ends").expect("the call runs")
}

fn variable<'a>(log: &'a CallLog, name: &str) -> Option<&'a str> {
    log.variables.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// acme's call `id`, once its record is finished.
async fn finished(store: &Store, org: i64, id: &str) -> Call {
    for _ in 0..400 {
        if let Some(call) = store.call(org, id).await.unwrap()
            && call.ended_at.is_some()
        {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("call {id} was never finished");
}

/// The victim's feed shows nothing before a marker published now: every event it receives
/// until the marker is listed (and must be none).
async fn feed_untouched(rig: &Rig, feed: &mut FeedClient) {
    let (_, marker) = rig.daemon.publish(rig.globex, "+15559990001").await;
    let mut before = Vec::new();
    loop {
        let event = feed.event(WAIT).await;
        if event.id == marker {
            break;
        }
        before.push(event);
    }
    assert!(before.is_empty(), "globex's feed received events it did not publish: {before:#?}");
}

backend_tests! {
    async fn a_call_id_of_another_organization_is_never_adopted_nor_written(db) {
        let rig = rig(db).await;
        victim_call(&rig, "victim-1").await;
        let before = snapshot(&rig.db.store, rig.globex, "victim-1").await;
        let token = rig.daemon.token("globex").await;
        let mut feed = FeedClient::connect(rig.daemon.addr, &token, "").await.unwrap();

        let log = place(&rig, &caller("ai?org=acme&call_id=victim-1")).await;
        let id = variable(&log, "ASTERAI_CALL_ID").expect("the call has an id").to_owned();
        assert_ne!(id, "victim-1", "the caller's call is not globex's");
        assert_eq!(variable(&log, "ASTERAI_STATUS"), Some("ok"), "the caller still had a conversation");
        let call = finished(&rig.db.store, rig.acme, &id).await;
        assert_eq!((call.org.as_str(), call.status, call.turns), ("acme", CallStatus::Completed, 2));
        assert_eq!(rig.db.store.turns(rig.acme, &id).await.unwrap()[1].caller, "hello");

        assert_eq!(snapshot(&rig.db.store, rig.globex, "victim-1").await, before, "globex's call is untouched");
        feed_untouched(&rig, &mut feed).await;
    }

    async fn a_race_for_a_call_id_never_crosses_over(db) {
        // The conversation could not check the id (say the database was away when the call
        // started): its writer finds globex's call when it creates the record.
        let rig = rig(db).await;
        victim_call(&rig, "victim-2").await;
        let before = snapshot(&rig.db.store, rig.globex, "victim-2").await;
        let token = rig.daemon.token("globex").await;
        let mut feed = FeedClient::connect(rig.daemon.addr, &token, "").await.unwrap();

        let records = rig.conversations.records();
        let mut recorder = records.recorder(rig.acme, "victim-2".into());
        recorder.push(Change::Start(new_call(rig.acme, "victim-2"))).await;
        recorder.push(Change::Status { status: CallStatus::InProgress, reason: Some("answered".into()) }).await;
        recorder.push(Change::Channel("PJSIP/acme-00000009".into())).await;
        recorder.push(Change::Waiting(Some("stt".into()))).await;
        recorder.push(Change::Turn(turn("victim-2", 1))).await;
        recorder.push(Change::Finish(FinishCall {
            status: CallStatus::Completed,
            reason: Some("caller hung up".into()),
            outcome: Some(Outcome::Completed),
            outcome_reason: None,
            emotion: None,
            intent_score: None,
        })).await;
        recorder.close();
        records.close().await;

        assert_eq!(snapshot(&rig.db.store, rig.globex, "victim-2").await, before, "globex's call is untouched");
        let mine = rig.db.store.list_calls(rig.acme, &CallFilter::default()).await.unwrap().calls;
        assert_eq!(mine.len(), 1, "acme's call is recorded once, under a fresh id");
        assert_ne!(mine[0].id, "victim-2");
        assert_eq!((mine[0].status, mine[0].turns), (CallStatus::Completed, 1));
        feed_untouched(&rig, &mut feed).await;
    }

    async fn a_campaign_and_contact_of_another_organization_are_ignored(db) {
        let rig = rig(db).await;
        let store = &rig.db.store;
        let campaign = store.create_campaign(rig.globex, "globex-spring", &serde_json::json!({})).await.unwrap();
        let row = NewContactRow { phone: "+15559990002".into(), first_name: Some("Zebulon".into()), ..Default::default() };
        store.add_contacts(rig.globex, campaign.id, &[row]).await.unwrap();
        let contact = store.list_contacts(campaign.id).await.unwrap().remove(0);
        let counts = store.campaign_call_counts(campaign.id).await.unwrap();
        let token = rig.daemon.token("globex").await;
        let mut feed = FeedClient::connect(rig.daemon.addr, &token, "").await.unwrap();

        let path = format!("ai?org=acme&campaign={}&contact={}", campaign.id, contact.id);
        let log = place(&rig, &caller(&path)).await;
        let id = variable(&log, "ASTERAI_CALL_ID").unwrap().to_owned();
        let call = finished(store, rig.acme, &id).await;
        assert_eq!((call.campaign_id, call.contact_id, call.contact_name.as_deref(), call.campaign_name.as_deref()), (None, None, None, None));
        let greeting = &store.turns(rig.acme, &id).await.unwrap()[0].agent;
        assert!(!greeting.contains("Zebulon"), "globex's contact never personalises acme's call: {greeting}");
        let started = &store.call_events(&id).await.unwrap()[0];
        assert!(started.data["contact_name"].is_null() && started.data["campaign_name"].is_null(), "{}", started.data);

        assert_eq!(store.campaign_call_counts(campaign.id).await.unwrap(), counts, "globex's campaign counts no call of acme");
        assert_eq!(store.contact(rig.globex, contact.id).await.unwrap().unwrap(), contact, "globex's contact is untouched");
        assert_eq!(store.campaign(rig.globex, campaign.id).await.unwrap().unwrap(), campaign);
        feed_untouched(&rig, &mut feed).await;
    }

    async fn the_store_refuses_every_write_to_another_organizations_call(db) {
        let rig = rig(db).await;
        let store = &rig.db.store;
        victim_call(&rig, "victim-3").await;
        let campaign = store.create_campaign(rig.globex, "globex-fall", &serde_json::json!({})).await.unwrap();
        store.add_contacts(rig.globex, campaign.id, &[NewContactRow { phone: "+15559990003".into(), ..Default::default() }]).await.unwrap();
        let contact = store.list_contacts(campaign.id).await.unwrap().remove(0);
        let before = snapshot(store, rig.globex, "victim-3").await;

        let not_found = |r: Result<(), StoreError>, what: &str| assert!(matches!(r, Err(StoreError::NotFound(_))), "{what}: {r:?}");
        not_found(store.set_call_status(rig.acme, "victim-3", CallStatus::Completed, None).await.map(|_| ()), "status");
        not_found(store.set_call_waiting(rig.acme, "victim-3", Some("stt")).await.map(|_| ()), "waiting");
        not_found(store.add_turn(rig.acme, &turn("victim-3", 2)).await.map(|_| ()), "turn");
        not_found(store.set_call_channel(rig.acme, "victim-3", "PJSIP/x").await, "channel");
        not_found(store.adopt_call(rig.acme, "victim-3", "PJSIP/x", Some("daemon-x")).await, "adopt");
        let finish = FinishCall { status: CallStatus::Failed, reason: None, outcome: None, outcome_reason: None, emotion: None, intent_score: None };
        not_found(store.finish_call(rig.acme, "victim-3", &finish).await.map(|_| ()), "finish");
        store.set_call_asterisk(rig.acme, "victim-3", "asterisk-x").await.unwrap();
        assert!(store.call(rig.acme, "victim-3").await.unwrap().is_none());
        assert!(store.turns(rig.acme, "victim-3").await.unwrap().is_empty());
        assert!(matches!(store.create_call(&new_call(rig.acme, "victim-3")).await, Err(StoreError::Conflict(_))));
        let with = |campaign_id, contact_id| NewCall { id: None, campaign_id, contact_id, ..new_call(rig.acme, "") };
        assert!(matches!(store.create_call(&with(Some(campaign.id), None)).await, Err(StoreError::Invalid(_))));
        assert!(matches!(store.create_call(&with(None, Some(contact.id))).await, Err(StoreError::Invalid(_))));
        assert!(store.list_calls(rig.acme, &CallFilter::default()).await.unwrap().calls.is_empty());
        assert_eq!(snapshot(store, rig.globex, "victim-3").await, before, "globex's call is untouched");
    }

    async fn rest_routes_and_feed_filters_never_reach_another_organization(db) {
        let rig = rig(db).await;
        let store = &rig.db.store;
        victim_call(&rig, "victim-4").await;
        let campaign = store.create_campaign(rig.globex, "globex-winter", &serde_json::json!({})).await.unwrap();
        store.add_contacts(rig.globex, campaign.id, &[NewContactRow { phone: "+15559990004".into(), ..Default::default() }]).await.unwrap();
        let contact = store.list_contacts(campaign.id).await.unwrap().remove(0);
        let campaign_calls = rig.daemon.publisher.call_started(&NewCall { campaign_id: Some(campaign.id), ..new_call(rig.globex, "victim-5") }).await.unwrap();
        let before = snapshot(store, rig.globex, "victim-4").await;
        let token = rig.daemon.token("acme").await;
        let http = reqwest::Client::new();
        let status = |r: reqwest::Response| r.status().as_u16();

        let get = |path: String| http.get(rig.daemon.url(&path)).bearer_auth(&token).send();
        assert_eq!(status(get("/v1/calls/victim-4".into()).await.unwrap()), 404);
        let listed: serde_json::Value = get(format!("/v1/calls?campaign={}", campaign.id)).await.unwrap().json().await.unwrap();
        assert_eq!(listed["calls"], serde_json::json!([]), "{listed}");
        assert_eq!(status(get(format!("/v1/campaigns/{}", campaign.id)).await.unwrap()), 404);
        assert_eq!(status(get(format!("/v1/campaigns/{}/stats", campaign.id)).await.unwrap()), 404);
        // Acme's figures and searches count none of globex's calls.
        let stats: serde_json::Value = get("/v1/stats".into()).await.unwrap().json().await.unwrap();
        assert_eq!(stats["calls"], 0, "{stats}");
        for search in ["victim", "5559990000"] {
            let found: serde_json::Value = get(format!("/v1/calls?q={search}")).await.unwrap().json().await.unwrap();
            assert_eq!(found["calls"], serde_json::json!([]), "{search}: {found}");
        }
        for action in ["start", "pause", "stop"] {
            let r = http.post(rig.daemon.url(&format!("/v1/campaigns/{}/{action}", campaign.id))).bearer_auth(&token).send().await.unwrap();
            assert_eq!(status(r), 404, "{action}");
        }
        let r = http.post(rig.daemon.url(&format!("/v1/campaigns/{}/contacts", campaign.id))).bearer_auth(&token)
            .body("phone\n+15551112222\n").send().await.unwrap();
        assert_eq!(status(r), 404);
        assert_eq!(store.campaign(rig.globex, campaign.id).await.unwrap().unwrap(), campaign, "globex's campaign is untouched");
        assert_eq!(store.list_contacts(campaign.id).await.unwrap(), vec![contact.clone()], "no contact imported into it");

        // Placing a call with globex's campaign or contact is refused before anything is dialed.
        let ari = asterai::ari::AriSettings {
            url: "http://127.0.0.1:9".into(),
            username: "ari".into(),
            password: asterai::config::Secret::new("ari"),
            auth: asterai::ari::Auth::Header,
            timeout: Duration::from_secs(1),
            ca_file: None,
        };
        let dialer = asterai::dialer::Dialer::new(
            rig.daemon.publisher.clone(),
            asterai::ari::AriClient::new(ari).unwrap(),
            asterai::dialer::DialSettings::from_config(&Config::default()),
            None,
        );
        let acme = store.org_by_id(rig.acme).await.unwrap().unwrap();
        for request in [
            asterai::dialer::CallRequest { to: "+15559990004".into(), campaign: Some(campaign.id), contact: None, media: None },
            asterai::dialer::CallRequest { to: "+15559990004".into(), campaign: None, contact: Some(contact.id), media: None },
        ] {
            let refused = dialer.place_call(&acme, &request).await;
            assert!(matches!(refused, Err(asterai::dialer::DialError::NotFound(_))), "{refused:?}");
        }
        assert!(store.list_calls(rig.acme, &CallFilter::default()).await.unwrap().calls.is_empty(), "nothing was created");

        // The feed's filters only narrow acme's own events: a replay from the start filtered on
        // globex's call or campaign holds nothing before `feed.ready`.
        for query in ["?since=0&call_id=victim-4".to_owned(), format!("?since=0&campaign={}", campaign.id)] {
            let mut client = FeedClient::connect(rig.daemon.addr, &token, &query).await.unwrap();
            match client.next(WAIT).await {
                Some(Received::Control(ready)) => assert_eq!(ready["type"], "feed.ready", "{ready}"),
                other => panic!("{query}: expected only feed.ready, got {other:?}"),
            }
        }
        assert_eq!(snapshot(store, rig.globex, "victim-4").await, before);
        assert!(store.call(rig.globex, &campaign_calls.id).await.unwrap().is_some());
    }

    async fn event_ids_say_nothing_about_another_organizations_volume(db) {
        let rig = rig(db).await;
        for i in 0..25 {
            rig.daemon.publish(rig.globex, &format!("+155599900{i:02}")).await;
        }
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(rig.daemon.publish(rig.acme, &format!("+155511100{i:02}")).await.1);
        }
        assert_eq!(ids, [1, 2, 3], "acme's events are numbered by acme alone");
        let token = rig.daemon.token("acme").await;
        let listed: serde_json::Value = reqwest::Client::new().get(rig.daemon.url("/v1/calls")).bearer_auth(&token)
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["last_event_id"], 3, "{listed}");
        let mut client = FeedClient::connect(rig.daemon.addr, &token, "").await.unwrap();
        match client.next(WAIT).await {
            Some(Received::Control(ready)) => assert_eq!((ready["type"].as_str(), ready["last_id"].as_i64()), (Some("feed.ready"), Some(3)), "{ready}"),
            other => panic!("expected feed.ready, got {other:?}"),
        }
        // Resuming is still exact: since=1 gives 2 and 3, then what comes next.
        let mut resumed = FeedClient::connect(rig.daemon.addr, &token, "?since=1").await.unwrap();
        let next = rig.daemon.publish(rig.acme, "+15551110099").await.1;
        rig.daemon.publish(rig.globex, "+15559990099").await;
        let got: Vec<i64> = resumed.events(3, WAIT).await.iter().map(|e| e.id).collect();
        assert_eq!(got, [2, 3, next]);
        assert_eq!(next, 4);
        assert_eq!(client.event(WAIT).await.id, 4);
    }
}
