//! ARI and single outbound calls against the fake ARI built from the Asterisk 22.10.1 captures
//! (tests/support/fake_ari.rs): the REST client on every captured answer, call statuses from
//! every captured scenario's events (and from captured events with the causes the captures do
//! not contain), the event stream's reconnect and resync, originate refusals with non-JSON
//! bodies, do-not-call and bad-number refusals, `POST /v1/calls`, and transfers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use asterai::ari::stream::{self, StreamConfig};
use asterai::ari::{AriClient, AriError, Destination, HangupReason, Originate, Record};
use asterai::dialer::{CallRequest, DialError, DialSettings, Dialer, Tracker, TrackerConfig};
use asterai::feed::{Hub, Publisher};
use asterai::store::{Call, CallStatus, EventKind, Org};
use axum::http::Method;
use serde_json::{Value, json};
use support::db::{Backend, TestDb};
use support::fake_ari::{Canned, FakeAri, PATIENCE, Plan, Scenario, derive, line_of};
use tokio_util::sync::CancellationToken;

/// A daemon's ARI side against the fake: store, tracker on the event stream, dialer.
struct Rig {
    db: TestDb,
    fake: FakeAri,
    org: Org,
    tracker: Tracker,
    dialer: Arc<Dialer>,
    stop: CancellationToken,
}

fn stream_config(fake: &FakeAri, subscribe_all: bool) -> StreamConfig {
    let mut config = StreamConfig::new(fake.settings(), "asterai", Duration::from_millis(300));
    config.reconnect_min = Duration::from_millis(20);
    config.subscribe_all = subscribe_all;
    config
}

fn tracker_config() -> TrackerConfig {
    TrackerConfig {
        context: "asterai-outbound".into(),
        extension: "s".into(),
        orphan_grace: Duration::ZERO,
        reconcile_unassigned: false,
        conversation_grace: Duration::from_millis(200),
    }
}

fn dial_settings() -> DialSettings {
    DialSettings {
        endpoint: "PJSIP/{number}@trunk".into(),
        app: "asterai".into(),
        caller_id: "Acme <+15550000000>".into(),
        ring_timeout: Duration::from_secs(30),
        media: Default::default(),
    }
}

async fn rig(subscribe_all: bool) -> Rig {
    rig_on(TestDb::new(Backend::Sqlite).await, FakeAri::start().await, subscribe_all).await
}

async fn rig_on(db: TestDb, fake: FakeAri, subscribe_all: bool) -> Rig {
    support::init();
    let org = match db.store.org_by_slug("acme").await.unwrap() {
        Some(org) => org,
        None => db.store.create_org("acme", "Acme Inc.").await.unwrap(),
    };
    let publisher = Publisher::new(db.store.clone(), Hub::new());
    let client = AriClient::new(fake.settings()).unwrap();
    let tracker = Tracker::new(publisher.clone(), client.clone(), tracker_config());
    let stop = CancellationToken::new();
    let before = fake.connections();
    let items = stream::spawn(stream_config(&fake, subscribe_all), stop.child_token());
    tokio::spawn(tracker.clone().run(items));
    fake.wait_connections(before + 1).await;
    wait_for("the tracker to connect and resync", || {
        let tracker = tracker.clone();
        async move { tracker.connected() && tracker.asterisk_id().is_some() }
    })
    .await;
    let dialer = Arc::new(Dialer::new(publisher, client, dial_settings(), Some(tracker.clone())));
    Rig { db, fake, org, tracker, dialer, stop }
}

/// Polls `check` until it holds; fails after [`PATIENCE`].
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Rig {
    async fn call(&self, plan: Plan) -> Call {
        self.fake.plan(plan);
        self.dialer
            .place_call(&self.org, &CallRequest { to: "+15551230000".into(), ..Default::default() })
            .await
            .unwrap()
    }

    async fn get(&self, id: &str) -> Call {
        self.db.store.call_any(id).await.unwrap().unwrap()
    }

    async fn ended(&self, id: &str) -> Call {
        let store = self.db.store.clone();
        wait_for(&format!("call {id} to end"), || {
            let store = store.clone();
            async move { store.call_any(id).await.unwrap().unwrap().ended_at.is_some() }
        })
        .await;
        self.get(id).await
    }

    async fn reaches(&self, id: &str, status: CallStatus) {
        let store = self.db.store.clone();
        wait_for(&format!("call {id} to be {status}"), || {
            let store = store.clone();
            async move { store.call_any(id).await.unwrap().unwrap().status == status }
        })
        .await;
    }

    /// The statuses published for a call, with their reasons, in order.
    async fn statuses(&self, id: &str) -> Vec<(String, String)> {
        self.db
            .store
            .call_events(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::CallStatusUpdate && e.data.get("waiting").is_none())
            .map(|e| {
                (e.data["status"].as_str().unwrap().to_owned(), e.data["reason"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

/// Statuses with their reasons, as expected.
type Expected<'a> = &'a [(&'a str, &'a str)];

fn pairs(list: Expected<'_>) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// The REST client against every captured exchange.

fn originate_app(endpoint: &str, app: &str, args: &[&str]) -> Originate {
    Originate {
        endpoint: endpoint.into(),
        destination: Destination::App { app: app.into(), args: args.iter().map(|a| a.to_string()).collect() },
        variables: Default::default(),
        channel_id: None,
        other_channel_id: None,
        caller_id: None,
        timeout: None,
    }
}

fn originate_dialplan(endpoint: &str, context: &str) -> Originate {
    Originate {
        destination: Destination::Dialplan { context: context.into(), extension: "s".into(), priority: 1 },
        ..originate_app(endpoint, "", &[])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_client_reads_every_captured_answer() {
    support::init();
    let fake = FakeAri::start().await;
    let ari = AriClient::new(fake.settings()).unwrap();

    // asterisk-info: the version and entity id; the channel and application lists.
    fake.activate_only("asterisk-info");
    let info = ari.asterisk_info().await.unwrap();
    assert_eq!((info.version(), info.entity_id()), (Some("22.10.1"), Some("02:fc:00:00:00:01")));
    assert!(ari.channels().await.unwrap().is_empty());
    assert!(ari.applications().await.unwrap().is_empty());
    let mut wrong = fake.settings();
    wrong.password = asterai::config::Secret::new("wrong");
    let refused = AriClient::new(wrong).unwrap().asterisk_info().await.unwrap_err();
    assert!(
        matches!(refused, AriError::Unauthorized { status: 401, ref message } if message == "Authentication required"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("ari.password"), "{refused}");
    let mut api_key = fake.settings();
    api_key.auth = asterai::ari::Auth::ApiKey;
    assert_eq!(AriClient::new(api_key).unwrap().asterisk_info().await.unwrap().version(), Some("22.10.1"));

    // originate-stasis: app mode, then everything done to the channel in Stasis.
    fake.activate_only("originate-stasis");
    let mut o = originate_app("Local/s@caller-sim", "ai-dialer", &["campaign1", "contact7"]);
    o.caller_id = Some("AI Dialer <5551234>".into());
    let channel = ari.originate(&o).await.unwrap();
    assert_eq!((channel.id.as_str(), channel.state.as_str()), ("1795222386.55", "Down"), "200 and Down proves nothing");
    assert_eq!(ari.channel("1795222386.55").await.unwrap().state, "Up");
    ari.answer("1795222386.55").await.unwrap();
    let playback = ari.play("1795222386.55", &["sound:hello-world"], None).await.unwrap();
    assert_eq!(playback.state, "playing");
    let record = Record {
        max_silence_s: Some(2),
        max_duration_s: Some(4),
        if_exists: Some("overwrite".into()),
        ..Record::wav("rec1")
    };
    assert_eq!(ari.record("1795222386.55", &record).await.unwrap().state, "recording");
    assert_eq!(ari.stored_recording("rec1").await.unwrap().format, "wav");
    assert_eq!(ari.variable("1795222386.55", "CALLERID(all)").await.unwrap(), "\"AI Dialer\" <5551234>");
    ari.continue_in_dialplan("1795222386.55", "agi-test", "s", 1).await.unwrap();
    ari.hangup("1795222386.55", None).await.unwrap();
    let again = ari.hangup("1795222386.55", None).await.unwrap_err();
    assert_eq!(again, AriError::NotFound("Channel not found".into()));

    // originate-dialplan: not in Stasis, so answer and play are 409s; DELETE with a reason.
    fake.activate_only("originate-dialplan");
    let mut o = originate_dialplan("Local/s@caller-sim", "agi-test");
    o.caller_id = Some("AI Dialer <5551234>".into());
    o.timeout = Some(Duration::from_secs(30));
    assert_eq!(ari.originate(&o).await.unwrap().id, "1795222258.34");
    assert_eq!(ari.channel("1795222258.34").await.unwrap().state, "Up");
    let not_in_stasis = ari.answer("1795222258.34").await.unwrap_err();
    assert_eq!(not_in_stasis, AriError::Conflict("Channel not in Stasis application".into()));
    assert_eq!(not_in_stasis.reason(), "409 Channel not in Stasis application");
    assert!(matches!(ari.play("1795222258.34", &["sound:hello-world"], None).await, Err(AriError::Conflict(_))));
    ari.hangup("1795222258.34", Some(HangupReason::Normal)).await.unwrap();

    // caller-hangup-in-stasis: channel ids and variables in a JSON body; a duplicate id.
    fake.activate_only("caller-hangup-in-stasis");
    let mut o = originate_app("Local/s@caller-sim", "ai-dialer", &["campaign1", "contact8"]);
    o.channel_id = Some("ai-call-0001".into());
    o.other_channel_id = Some("ai-call-0001-peer".into());
    o.variables = [("CAMPAIGN_ID", "campaign1"), ("CALLERID(name)", "AI")].map(|(k, v)| (k.into(), v.into())).into();
    assert_eq!(ari.originate(&o).await.unwrap().id, "ai-call-0001");
    let sent =
        fake.originates().into_iter().find(|r| r.query.get("channelId").is_some_and(|c| c == "ai-call-0001")).unwrap();
    assert_eq!(sent.json(), json!({"variables": {"CAMPAIGN_ID": "campaign1", "CALLERID(name)": "AI"}}));
    assert_eq!(ari.variable("ai-call-0001", "CAMPAIGN_ID").await.unwrap(), "campaign1");
    let mut dup = originate_app("Local/s@caller-sim", "ai-dialer", &[]);
    dup.channel_id = Some("ai-call-0001".into());
    assert_eq!(
        ari.originate(&dup).await.unwrap_err(),
        AriError::Conflict("Channel with given unique ID already exists".into())
    );

    // inbound-stasis: ring, answer, record with every option, two media, a missing sound.
    fake.activate_only("inbound-stasis");
    let mut o = originate_dialplan("Local/s@stasis-test", "caller-sim");
    o.caller_id = Some("Caller <5550001>".into());
    assert_eq!(ari.originate(&o).await.unwrap().id, "1795222265.36");
    ari.ring("1795222265.37").await.unwrap();
    ari.answer("1795222265.37").await.unwrap();
    let record = Record {
        max_silence_s: Some(2),
        max_duration_s: Some(6),
        if_exists: Some("overwrite".into()),
        beep: Some(false),
        terminate_on: Some("#".into()),
        ..Record::wav("rec2")
    };
    assert_eq!(ari.record("1795222265.37", &record).await.unwrap().state, "queued");
    let two = ari.play("1795222265.37", &["sound:hello-world", "sound:beep"], Some("pb-fixed-1")).await.unwrap();
    assert_eq!((two.id.as_str(), two.next_media_uri.as_deref()), ("pb-fixed-1", Some("sound:beep")));
    assert_eq!(ari.play("1795222265.37", &["sound:nonexistent-file"], None).await.unwrap().state, "playing");
    ari.hangup("1795222265.37", None).await.unwrap();

    // inbound-stasis-dtmf.
    fake.activate_only("inbound-stasis-dtmf");
    assert_eq!(
        ari.originate(&originate_dialplan("Local/s@stasis-test", "caller-dtmf")).await.unwrap().id,
        "1795222305.49"
    );
    ari.answer("1795222305.50").await.unwrap();

    // playback-recording-control: playbacks, live and stored recordings, and their 404s.
    fake.activate_only("playback-recording-control");
    assert_eq!(
        ari.originate(&originate_dialplan("Local/s@stasis-test", "caller-sim")).await.unwrap().id,
        "1795222319.51"
    );
    ari.answer("1795222319.52").await.unwrap();
    assert_eq!(ari.play("1795222319.52", &["sound:tt-monkeys"], Some("pb-long")).await.unwrap().id, "pb-long");
    assert_eq!(ari.playback("pb-long").await.unwrap().state, "playing");
    ari.control_playback("pb-long", "pause").await.unwrap();
    ari.control_playback("pb-long", "unpause").await.unwrap();
    ari.stop_playback("pb-long").await.unwrap();
    assert_eq!(ari.stop_playback("pb-long").await.unwrap_err(), AriError::NotFound("Playback not found".into()));
    let rec3 = Record { if_exists: Some("overwrite".into()), ..Record::wav("rec3") };
    assert_eq!(ari.record("1795222319.52", &rec3).await.unwrap().name, "rec3");
    assert_eq!(ari.live_recording("rec3").await.unwrap().state, "recording");
    ari.stop_recording("rec3").await.unwrap();
    assert_eq!(ari.stop_recording("rec3").await.unwrap_err(), AriError::NotFound("Recording not found".into()));
    assert_eq!(ari.stored_recordings().await.unwrap().len(), 3);
    ari.delete_stored_recording("rec3").await.unwrap();
    assert!(matches!(ari.delete_stored_recording("rec3").await, Err(AriError::NotFound(_))));
    ari.hangup("1795222319.52", Some(HangupReason::Code(16))).await.unwrap();

    // playback-errors: a missing sound and an unknown scheme are still 201s.
    fake.activate_only("playback-errors");
    assert_eq!(
        ari.originate(&originate_app("Local/s@caller-sim", "ai-dialer", &[])).await.unwrap().id,
        "1795222325.53"
    );
    assert!(ari.play("1795222325.53", &["sound:nonexistent-file"], None).await.is_ok());
    assert!(ari.play("1795222325.53", &["bogus:thing"], None).await.is_ok());

    // errors: every refusal keeps Asterisk's words.
    fake.activate_only("errors");
    assert_eq!(
        ari.originate(&originate_app("Local/s@nonexistent-context", "ai-dialer", &[])).await.unwrap().id,
        "1795222294.41"
    );
    let mut o = originate_dialplan("Local/s@caller-sim", "nonexistent-context");
    o.destination = Destination::Dialplan { context: "nonexistent-context".into(), extension: "s".into(), priority: 1 };
    assert_eq!(ari.originate(&o).await.unwrap().id, "1795222296.43", "a missing context is still a 200");
    let bogus = ari.originate(&originate_app("Bogus/foo", "ai-dialer", &[])).await.unwrap_err();
    assert_eq!(
        bogus,
        AriError::Status { status: 500, message: "Allocation failed".into() },
        "the {{\"error\": …}} body"
    );
    let noslash = ari.originate(&originate_app("noslash", "ai-dialer", &[])).await.unwrap_err();
    assert_eq!(noslash, AriError::BadRequest("Invalid endpoint specified".into()));
    assert!(
        matches!(ari.originate(&originate_app("", "ai-dialer", &[])).await, Err(AriError::Invalid(_))),
        "refused before sending"
    );
    assert!(ari.originate(&originate_app("Local/s@caller-sim", "no-such-app", &[])).await.is_ok());
    for result in [
        ari.hangup("does-not-exist", None).await,
        ari.channel("does-not-exist").await.map(drop),
        ari.answer("does-not-exist").await,
        ari.play("does-not-exist", &["sound:hello-world"], None).await.map(drop),
        ari.record("does-not-exist", &Record::wav("x")).await.map(drop),
    ] {
        assert_eq!(result.unwrap_err(), AriError::NotFound("Channel not found".into()));
    }
    let missing = ari.continue_in_dialplan("does-not-exist", "agi-test", "s", 1);
    // The capture continued with only a context; the fake answers the same 404 for any location.
    assert!(matches!(missing.await, Err(AriError::NotFound(_))));
    assert_eq!(
        ari.stored_recording("does-not-exist").await.unwrap_err(),
        AriError::NotFound("Recording not found".into())
    );
    assert_eq!(
        ari.originate(&originate_app("Local/s@caller-sim", "ai-dialer", &[])).await.unwrap().id,
        "1795222300.47"
    );
    assert_eq!(ari.play("1795222300.47", &["bogus:thing"], None).await.unwrap().media_uri, "bogus:thing");
    assert!(
        matches!(ari.play("1795222300.47", &[], None).await, Err(AriError::Invalid(_))),
        "no media: refused before sending"
    );
    let bad_format = Record { format: "nosuchformat".into(), ..Record::wav("rec-bad") };
    assert_eq!(
        ari.record("1795222300.47", &bad_format).await.unwrap_err(),
        AriError::Unprocessable("specified format is unknown on this system".into())
    );
    let exists = Record { if_exists: Some("fail".into()), ..Record::wav("rec1") };
    assert_eq!(
        ari.record("1795222300.47", &exists).await.unwrap_err(),
        AriError::Conflict("Recording 'rec1' already exists and can not be overwritten".into())
    );
    ari.continue_in_dialplan("1795222300.47", "nonexistent-context", "s", 1).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Call statuses from the captured scenarios.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_captured_originate_gives_the_right_statuses() {
    let rig = rig(false).await;
    let cases: &[(&str, u64, Expected)] = &[
        // Answered, sent on to the dialplan, hung up normally.
        ("originate-stasis", 1, &[("in_progress", "Up"), ("completed", "16 Normal Clearing")]),
        // The far end hangs up while the channel is in Stasis.
        ("caller-hangup-in-stasis", 1, &[("in_progress", "Up"), ("completed", "16 Normal Clearing")]),
        ("playback-errors", 1, &[("in_progress", "Up"), ("completed", "16 Normal Clearing")]),
        // A Local channel into a context that does not exist: destroyed before any answer.
        ("errors", 1, &[("failed", "0 Unknown")]),
        // Answered, then sent to a context that does not exist: hung up with cause 0.
        ("errors", 17, &[("in_progress", "Up"), ("failed", "0 Unknown")]),
    ];
    for (scenario, seq, expected) in cases {
        let call = rig.call(Plan::replay(scenario, *seq)).await;
        let ended = rig.ended(&call.id).await;
        // The dialer's `watch` can come after every event of the call when the originate's
        // answer is slow: an ended call is not followed again.
        rig.tracker.watch(call.org_id, &call.id);
        assert_eq!(rig.statuses(&call.id).await, pairs(expected), "{scenario} #{seq}");
        assert_eq!(ended.status_reason.as_deref(), Some(expected.last().unwrap().1), "{scenario} #{seq}");
        let kinds: Vec<EventKind> = rig.db.store.call_events(&call.id).await.unwrap().iter().map(|e| e.kind).collect();
        assert_eq!((kinds.first(), kinds.last()), (Some(&EventKind::CallStarted), Some(&EventKind::CallEnded)));
    }
    // Answered calls were sent on to the dialplan's ai route.
    let continues = rig.fake.requests_to("POST", "/continue");
    assert!(continues.len() >= 3, "{continues:?}");
    for request in &continues {
        assert_eq!(request.query.get("context").map(String::as_str), Some("asterai-outbound"));
        assert_eq!(request.query.get("extension").map(String::as_str), Some("s"));
        assert_eq!(request.query.get("priority").map(String::as_str), Some("1"));
    }
    // The last call's remaining events (StasisEnd, ChannelDestroyed) may still be on their way.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.tracker.followed() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rig.tracker.followed(), 0, "ended calls are no longer followed");
    rig.stop();
}

/// A dialplan-mode originate sends the application nothing (originate-dialplan.jsonl is
/// empty); with `subscribeAll=true` the channel is followed from the system-wide events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialplan_originates_are_followed_with_subscribe_all() {
    assert!(Scenario::load("originate-dialplan").events.is_empty());
    let rig = rig(true).await;
    let cases: &[(&str, u64, Expected)] = &[
        ("originate-dialplan", 1, &[("in_progress", "Up"), ("completed", "16 Normal Clearing")]),
        // A dialplan originate into a context that does not exist: up, then gone with cause 0.
        ("errors", 2, &[("in_progress", "Up"), ("failed", "0 Unknown")]),
        // An application with no WebSocket: STASISSTATUS=FAILED, then hung up.
        ("errors", 7, &[("in_progress", "Up"), ("failed", "0 Unknown")]),
    ];
    for (scenario, seq, expected) in cases {
        let call = rig.call(Plan::replay(scenario, *seq)).await;
        rig.ended(&call.id).await;
        assert_eq!(rig.statuses(&call.id).await, pairs(expected), "{scenario} #{seq}");
    }
    rig.stop();
}

/// Channels that enter the application from the dialplan (`Stasis(app,arg1)`) are no calls of
/// asterai: they are returned to the dialplan, nothing is stored, and their events (DTMF,
/// recordings, playbacks) never disturb the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_asterai_did_not_place_are_returned_to_the_dialplan() {
    let rig = rig(false).await;
    for name in ["inbound-stasis", "inbound-stasis-dtmf", "playback-recording-control"] {
        let scenario = Scenario::load(name);
        rig.fake.push_lines(&scenario.events);
        let entered: Value = serde_json::from_str(&scenario.events[0]).unwrap();
        let id = entered["channel"]["id"].as_str().unwrap().to_owned();
        let fake = &rig.fake;
        fake.wait_until(&format!("{name}: the stranger continued"), |f| {
            f.requests_to("POST", &format!("/channels/{id}/continue")).iter().any(|r| r.query.is_empty())
        })
        .await;
    }
    // The stream still works: a call placed afterwards is followed to its end.
    let call = rig.call(Plan::replay("originate-stasis", 1)).await;
    assert_eq!(rig.ended(&call.id).await.status, CallStatus::Completed);
    let page = rig.db.store.list_calls(rig.org.id, &Default::default()).await.unwrap();
    assert_eq!(page.calls.len(), 1, "only the call asterai placed is stored");
    rig.stop();
}

/// The causes the Local-channel captures cannot show (ringing, busy, no answer, unallocated,
/// congestion, cancel), as captured events with the cause changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_busy_no_answer_failed_and_canceled() {
    let rig = rig(false).await;
    let s = Scenario::load("originate-stasis");
    let id = "1795222386.55";
    let dial = line_of(&s, "Dial", id);
    let state = line_of(&s, "ChannelStateChange", id);
    let destroyed = line_of(&s, "ChannelDestroyed", id);
    let ringing_state = derive(&state, &[("/channel/state", json!("Ringing"))]);
    let dial_status =
        |status: &str| derive(&dial, &[("/dialstatus", json!(status)), ("/peer/state", json!("Ringing"))]);
    let gone = |cause: i64, text: &str| {
        derive(
            &destroyed,
            &[("/cause", json!(cause)), ("/cause_txt", json!(text)), ("/channel/state", json!("Ringing"))],
        )
    };
    let cases: Vec<(Vec<String>, Expected)> = vec![
        (
            vec![
                dial.clone(),
                ringing_state.clone(),
                dial_status("RINGING"),
                dial_status("BUSY"),
                gone(17, "User busy"),
            ],
            &[("ringing", "Ringing"), ("busy", "BUSY")],
        ),
        (vec![ringing_state.clone(), gone(17, "User busy")], &[("ringing", "Ringing"), ("busy", "17 User busy")]),
        (
            vec![dial_status("RINGING"), dial_status("NOANSWER"), gone(19, "User alerting, no answer")],
            &[("ringing", "RINGING"), ("no_answer", "NOANSWER")],
        ),
        (
            vec![ringing_state.clone(), gone(18, "No user responding")],
            &[("ringing", "Ringing"), ("no_answer", "18 No user responding")],
        ),
        (vec![gone(1, "Unallocated (unassigned) number")], &[("failed", "1 Unallocated (unassigned) number")]),
        (vec![dial_status("CHANUNAVAIL"), gone(0, "Unknown")], &[("failed", "CHANUNAVAIL")]),
        (vec![dial_status("CONGESTION"), gone(34, "Circuit/channel congestion")], &[("failed", "CONGESTION")]),
        (
            vec![ringing_state.clone(), dial_status("CANCEL"), gone(16, "Normal Clearing")],
            &[("ringing", "Ringing"), ("canceled", "CANCEL")],
        ),
    ];
    for (lines, expected) in cases {
        let call = rig.call(Plan::replay("originate-stasis", 1).instead(lines.clone())).await;
        rig.ended(&call.id).await;
        assert_eq!(rig.statuses(&call.id).await, pairs(expected), "{lines:#?}");
    }

    // Hung up by asterai before the answer: canceled, whatever the cause says.
    let call = rig.call(Plan::replay("originate-stasis", 1).instead(vec![ringing_state.clone()])).await;
    rig.reaches(&call.id, CallStatus::Ringing).await;
    rig.dialer.hang_up(&call.id).await.unwrap();
    assert_eq!(rig.fake.requests_to("DELETE", &format!("/channels/{}", call.id)).len(), 1);
    let soft = derive(&line_of(&s, "ChannelHangupRequest", id), &[("/channel/id", json!(call.id))]);
    rig.fake.push_lines(&[soft, derive(&destroyed, &[("/channel/id", json!(call.id))])]);
    assert_eq!(rig.ended(&call.id).await.status, CallStatus::Canceled);
    rig.stop();
}

// ---------------------------------------------------------------------------------------------
// The event stream: reconnect, resync, application replaced, refused handshakes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_drop_mid_call_then_reconnect_and_resync() {
    let rig = rig(false).await;
    // A: answered (events up to StasisStart); B: answered too; C: ringing.
    let a = rig.call(Plan::replay("originate-stasis", 1).events(9)).await;
    let b = rig.call(Plan::replay("caller-hangup-in-stasis", 1).events(9)).await;
    let s = Scenario::load("originate-stasis");
    let ringing = derive(&line_of(&s, "ChannelStateChange", "1795222386.55"), &[("/channel/state", json!("Ringing"))]);
    let c = rig.call(Plan::replay("originate-stasis", 1).instead(vec![ringing]).events(1)).await;
    rig.reaches(&a.id, CallStatus::InProgress).await;
    rig.reaches(&b.id, CallStatus::InProgress).await;
    rig.reaches(&c.id, CallStatus::Ringing).await;

    // The connection drops; meanwhile A's and C's channels end (their events are lost).
    let connections = rig.fake.connections();
    rig.fake.drop_sockets();
    rig.fake.end_channel(&a.id);
    rig.fake.end_channel(&c.id);
    rig.fake.wait_connections(connections + 1).await;

    // The resync finishes the calls whose channel is gone...
    let a = rig.ended(&a.id).await;
    assert_eq!((a.status, a.status_reason.as_deref()), (CallStatus::Completed, Some("channel gone after reconnect")));
    let c = rig.ended(&c.id).await;
    assert_eq!((c.status, c.status_reason.as_deref()), (CallStatus::Failed, Some("channel gone after reconnect")));
    // ...and keeps following the live one: its remaining events end it normally.
    rig.fake.release(&b.id);
    let b = rig.ended(&b.id).await;
    assert_eq!((b.status, b.status_reason.as_deref()), (CallStatus::Completed, Some("16 Normal Clearing")));
    assert!(rig.fake.requests_to("GET", "/ari/channels").len() >= 2, "a channel list per connection");
    rig.stop();
}

/// A daemon that restarts knows nothing of the calls in flight: the first resync adopts the
/// live ones and finishes the others, so none stays in progress forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_reconciles_the_calls_left_live() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        restart_on(backend).await;
    }
}

async fn restart_on(backend: Backend) {
    let first = rig_on(TestDb::new(backend).await, FakeAri::start().await, false).await;
    let live = first.call(Plan::replay("originate-stasis", 1).events(9)).await;
    let lost = first.call(Plan::replay("caller-hangup-in-stasis", 1).events(9)).await;
    first.reaches(&live.id, CallStatus::InProgress).await;
    first.reaches(&lost.id, CallStatus::InProgress).await;
    first.stop();
    first.fake.drop_sockets();
    first.fake.end_channel(&lost.id);
    let Rig { db, fake, .. } = first;
    let second = rig_on(db, fake, false).await;
    let lost = second.ended(&lost.id).await;
    assert_eq!(lost.status_reason.as_deref(), Some("channel gone after reconnect"));
    assert_eq!(second.get(&live.id).await.status, CallStatus::InProgress);
    second.fake.release(&live.id);
    assert_eq!(second.ended(&live.id).await.status_reason.as_deref(), Some("16 Normal Clearing"));
    second.stop();
}

#[tokio::test]
async fn application_replaced_is_logged_loudly_and_the_stream_comes_back() {
    let (logs, _guard) = support::logs::Logs::capture();
    let rig = rig(false).await;
    let replaced = Scenario::load("ws-app-replaced");
    let connections = rig.fake.connections();
    rig.fake.push_lines(&replaced.events);
    let line = logs.wait_for(&["ERROR", "application replaced", "asterai"]).await;
    assert!(line.contains("ari.app"), "the log says what to change: {line}");
    rig.fake.wait_connections(connections + 1).await;
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_keep_asterisks_message_and_are_retried() {
    support::init();
    let fake = FakeAri::start().await;
    let mut config = stream_config(&fake, false);
    config.settings.password = asterai::config::Secret::new("wrong");
    let stop = CancellationToken::new();
    let mut items = stream::spawn(config, stop.child_token());
    fake.wait_until("three refused upgrades", |f| f.refused_upgrades() >= 3).await;
    assert_eq!(fake.connections(), 0);
    assert!(items.try_recv().is_err(), "nothing is reported as connected");
    stop.cancel();
    // The refusal, as the stream sees it: the captured 401 JSON and 400 HTML bodies.
    let page = support::fake_ari::handshake("no app parameter");
    let html = AriError::from_response(400, Some("text/html"), page["body_text"].as_str().unwrap().as_bytes());
    assert_eq!(html, AriError::BadRequest("HTTP request is missing param: [app]".into()));
    let auth = support::fake_ari::handshake("bad api_key");
    let json = AriError::from_response(401, Some("application/json"), auth["body_text"].as_str().unwrap().as_bytes());
    assert_eq!(json.message(), "Authentication required");
}

// ---------------------------------------------------------------------------------------------
// Single calls: refusals, originate errors, the REST route.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_errors_keep_asterisks_message_and_fail_the_call() {
    let rig = rig(false).await;
    let errors = Scenario::load("errors");
    let cases: Vec<(Plan, u16, &str)> = vec![
        (Plan::refuse(Canned::captured_html_400()), 400, "HTTP request is missing param: [app]"),
        (
            Plan::refuse(Canned::text(409, "Channel with given unique ID already exists\n")),
            409,
            "Channel with given unique ID already exists",
        ),
        (Plan::refuse(Canned::html(500, "Internal Server Error", "Allocation failed")), 500, "Allocation failed"),
        (Plan::refuse(Canned::text(500, "")), 500, "Internal Server Error"),
        (
            Plan::refuse(Canned::html(503, "Service Unavailable", "Asterisk is shutting down")),
            503,
            "Asterisk is shutting down",
        ),
        (Plan::replay("errors", 3), 500, "Allocation failed"),
        (Plan::replay("errors", 4), 400, "Invalid endpoint specified"),
        (Plan::refuse(Canned::from(errors.exchange(5))), 400, "Application or extension must be specified"),
    ];
    for (plan, status, message) in cases {
        rig.fake.plan(plan);
        let err =
            rig.dialer.place_call(&rig.org, &CallRequest { to: "+15551230000".into(), ..Default::default() }).await;
        let Err(DialError::Refused { call_id, error }) = err else { panic!("{status}: {err:?}") };
        assert_eq!((error.status(), error.message()), (Some(status), message));
        let call = rig.get(&call_id).await;
        assert_eq!(call.status, CallStatus::Failed);
        assert_eq!(call.status_reason.as_deref(), Some(format!("{status} {message}").as_str()));
        assert!(call.ended_at.is_some());
        let statuses = rig.statuses(&call_id).await;
        assert_eq!(statuses, vec![("failed".to_owned(), format!("{status} {message}"))]);
    }
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_not_call_and_bad_numbers_are_refused_with_nothing_originated() {
    let rig = rig(false).await;
    rig.db.store.add_dnc(rig.org.id, "+15557654321", Some("asked"), "cli").await.unwrap();
    let place = |to: &str| {
        let request = CallRequest { to: to.into(), ..Default::default() };
        let dialer = rig.dialer.clone();
        let org = rig.org.clone();
        async move { dialer.place_call(&org, &request).await }
    };
    let dnc = place("+15557654321").await.unwrap_err();
    assert!(matches!(dnc, DialError::DoNotCall { .. }), "{dnc:?}");
    assert!(dnc.to_string().contains("do-not-call") && dnc.to_string().contains("nothing was dialed"), "{dnc}");
    for bad in ["5557654321", "+1555", "+1 555 765 4321x", "", "+0123456789"] {
        let err = place(bad).await.unwrap_err();
        assert!(matches!(err, DialError::InvalidNumber(_)), "{bad}: {err:?}");
        assert!(err.to_string().contains("E.164"), "{err}");
    }
    let unknown = rig
        .dialer
        .place_call(
            &rig.org,
            &CallRequest { to: "+15551230000".into(), campaign: Some(99), contact: None, media: None },
        )
        .await
        .unwrap_err();
    assert!(matches!(unknown, DialError::NotFound(_)), "{unknown:?}");
    assert!(rig.fake.originates().is_empty(), "nothing was sent to Asterisk");
    assert!(rig.db.store.list_calls(rig.org.id, &Default::default()).await.unwrap().calls.is_empty(), "nor stored");
    rig.stop();
}

/// `POST /v1/calls`: token-scoped, 201 with the call; refusals as JSON errors with the status
/// that says why; the originate carries the variables the dialplan's ai route needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_v1_calls_places_a_call() {
    let rig = rig(false).await;
    let daemon = support::http::TestDaemon::start(rig.db.store.clone()).await;
    let token = daemon.token("acme").await;
    // TestDaemon's state has no dialer: the route says so.
    let http = reqwest::Client::new();
    let response = http
        .post(daemon.url("/v1/calls"))
        .bearer_auth(&token)
        .json(&json!({"to": "+15551230000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    daemon.stop().await;

    // A server with the dialer, as `asterai serve` builds it when ari.url is set.
    let state = asterai::http::AppState::new(asterai::http::HttpParts {
        store: rig.db.store.clone(),
        hub: Hub::new(),
        feed: support::http::feed_config(),
        metrics: None,
        shutdown: CancellationToken::new(),
        limits: Default::default(),
        supervisor: None,
        dialer: Some(rig.dialer.clone()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(asterai::http::serve(listener, state, rig.stop.child_token()));
    let post = |body: Value, token: String| {
        let request = http.post(format!("{base}/v1/calls")).bearer_auth(token).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, body) = post(json!({"to": "+15551230000"}), "nonsense".into()).await;
    assert_eq!(status, 401, "{body}");
    rig.fake.plan(Plan::replay("originate-stasis", 1));
    let (status, call) = post(json!({"to": "+15551230000"}), token.clone()).await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(
        (call["status"].as_str(), call["direction"].as_str(), call["org"].as_str()),
        (Some("initiated"), Some("outbound"), Some("acme"))
    );
    assert_eq!((call["to"].as_str(), call["from"].as_str()), (Some("+15551230000"), Some("+15550000000")));
    let id = call["id"].as_str().unwrap().to_owned();
    let sent = rig.fake.originates().pop().unwrap();
    let q = |k: &str| sent.query.get(k).cloned().unwrap_or_default();
    assert_eq!(
        (q("endpoint"), q("app"), q("appArgs"), q("channelId"), q("callerId"), q("timeout")),
        (
            "PJSIP/+15551230000@trunk".into(),
            "asterai".into(),
            "outbound".into(),
            id.clone(),
            "Acme <+15550000000>".into(),
            "30".into()
        )
    );
    assert_eq!(
        sent.json(),
        json!({"variables": {"ASTERAI_CALL_ID": id, "ASTERAI_ORG": "acme", "ASTERAI_CAMPAIGN": "", "ASTERAI_CONTACT": ""}})
    );
    assert_eq!(rig.ended(&id).await.status, CallStatus::Completed);

    rig.db.store.add_dnc(rig.org.id, "+15557654321", None, "api").await.unwrap();
    let (status, body) = post(json!({"to": "+15557654321"}), token.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("do-not-call"), "{body}");
    let (status, body) = post(json!({"to": "555"}), token.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = post(json!({"number": "+15551230000"}), token.clone()).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post(json!({"to": "+15551230000", "contact": 5}), token.clone()).await;
    assert_eq!(status, 404);
    rig.fake.plan(Plan::refuse(Canned::captured_html_400()));
    let (status, body) = post(json!({"to": "+15551230000"}), token.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("bad_gateway")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("HTTP request is missing param: [app]"), "{body}");
    assert_eq!(rig.fake.originates().len(), 2, "refusals sent nothing");

    // Another organization's token sees none of acme's calls.
    let globex = rig.db.store.create_org("globex", "Globex").await.unwrap();
    let globex_token =
        asterai::auth::create_token(&rig.db.store, globex.id, "t", asterai::auth::Scopes::all()).await.unwrap().token;
    let listed: Value =
        http.get(format!("{base}/v1/calls")).bearer_auth(&globex_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["calls"].as_array().unwrap().len(), 0);
    rig.stop();
}

// ---------------------------------------------------------------------------------------------
// Transfers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_continues_or_redirects_the_channel_and_reports_refusals() {
    use asterai::conversation::{TransferRequest, Transferer};
    use asterai::dialer::{AriTransferer, TransferTarget};
    let rig = rig(false).await;
    let call = rig.call(Plan::replay("originate-stasis", 1).events(9)).await;
    rig.reaches(&call.id, CallStatus::InProgress).await;
    let client = AriClient::new(rig.fake.settings()).unwrap();
    let request = TransferRequest {
        call_id: call.id.clone(),
        org_id: rig.org.id,
        channel: "PJSIP/x".into(),
        uniqueid: call.id.clone(),
        destination: None,
    };

    let to_queue = AriTransferer::new(client.clone(), TransferTarget::parse("Local/support@asterai-transfer").unwrap());
    to_queue.transfer(&request).await.unwrap();
    let sent = rig.fake.requests_to("POST", &format!("/channels/{}/continue", call.id));
    let last = sent.last().unwrap();
    assert_eq!(
        (last.query.get("context").unwrap().as_str(), last.query.get("extension").unwrap().as_str(), last.status),
        ("asterai-transfer", "support", 204)
    );
    let to_phone = AriTransferer::new(client.clone(), TransferTarget::parse("PJSIP/100").unwrap());
    to_phone.transfer(&request).await.unwrap();
    assert_eq!(rig.fake.requests_to("POST", "/redirect").pop().unwrap().query.get("endpoint").unwrap(), "PJSIP/100");
    // An agent's named target goes where the agent says, with or without dialer.transfer_target.
    let named = TransferRequest { destination: Some("Local/600@from-internal".into()), ..request.clone() };
    for transferer in [&AriTransferer::named_only(client.clone()), &to_phone] {
        transferer.transfer(&named).await.unwrap();
        let last = rig.fake.requests_to("POST", &format!("/channels/{}/continue", call.id)).pop().unwrap();
        assert_eq!(
            (last.query.get("context").unwrap().as_str(), last.query.get("extension").unwrap().as_str()),
            ("from-internal", "600")
        );
    }
    let nowhere = AriTransferer::named_only(client.clone()).transfer(&request).await.unwrap_err();
    assert_eq!(nowhere, "no transfer target is configured (dialer.transfer_target)");

    // Not in Stasis (the captured 409): the channel runs AGI() in the dialplan, which takes the
    // transfer over once the conversation ends with outcome `transferred`.
    let dialplan = Scenario::load("originate-dialplan");
    rig.fake.force(Method::POST, "/continue", Canned::from(dialplan.exchange(3)));
    to_queue.transfer(&request).await.unwrap();
    assert!(!rig.fake.requests_to("GET", &format!("/channels/{}", call.id)).is_empty(), "the channel is checked first");
    // The dialplan's hand-over cannot reach a named target: refused, not sent elsewhere.
    let refused = to_queue.transfer(&named).await.unwrap_err();
    assert!(refused.contains("not in Stasis"), "{refused}");
    // ...unless the channel is gone too (the captured 404s): then it is an error.
    let gone = TransferRequest { uniqueid: "does-not-exist".into(), ..request.clone() };
    let refused = to_queue.transfer(&gone).await.unwrap_err();
    assert!(refused.contains("Channel not found"), "{refused}");
    let errors = Scenario::load("errors");
    rig.fake.force(Method::POST, "/continue", Canned::from(errors.exchange(14)));
    let missing = to_queue.transfer(&request).await.unwrap_err();
    assert!(missing.contains("Channel not found"), "{missing}");
    let missing = to_phone.transfer(&gone).await.unwrap_err();
    assert!(missing.contains("Channel not found"), "{missing}");
    rig.stop();
}

/// The whole path: a caller asks for a person during an AI conversation; with the transfer
/// working the call ends `transferred` and is not hung up; with Asterisk refusing (the channel
/// gone), the agent says `transfer_unavailable` and the conversation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_asks_for_a_person_is_transferred_or_told_it_is_not_possible() {
    use asterai::agi::{Router, ServerConfig};
    use asterai::conversation::{Conversations, Providers, Settings, Transferer};
    use asterai::demo::caller::{Caller, Line};
    use asterai::dialer::{AriTransferer, TransferTarget};
    support::init();
    let fake = FakeAri::start().await;
    let db = TestDb::new(Backend::Sqlite).await;
    db.store.create_org("acme", "Acme Inc.").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = asterai::config::Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.provider = "scripted".into();
    config.responder.provider = "rules".into();
    config.tts.provider = "espeak".into();
    std::fs::create_dir_all(config.recordings_dir()).unwrap();
    let client = AriClient::new(fake.settings()).unwrap();
    let transferer: Arc<dyn Transferer> =
        Arc::new(AriTransferer::new(client, TransferTarget::parse("Local/support@asterai-transfer").unwrap()));
    let publisher = Publisher::new(db.store.clone(), Hub::new());
    let conversations = Conversations::new(
        publisher,
        Providers::from_config(&config).unwrap(),
        Settings::from_config(&config),
        Some(transferer),
    );
    let agi =
        support::agi::TestServer::start(Router::new().route("ai", conversations.handler()), ServerConfig::default())
            .await;
    let say = |lines: &[&str]| Caller::new(lines.iter().map(|l| Line::Say(l.to_string())).collect(), "acme");
    let finished = |uniqueid: String| {
        let store = db.store.clone();
        async move {
            let org = store.org_by_slug("acme").await.unwrap().unwrap();
            for _ in 0..1000 {
                let page = store.list_calls(org.id, &Default::default()).await.unwrap();
                let channel = format!("PJSIP/demo-{}", uniqueid.replace('.', ""));
                if let Some(call) = page.calls.into_iter().find(|c| c.channel.as_deref() == Some(channel.as_str()))
                    && call.ended_at.is_some()
                {
                    return call;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("the call never ended");
        }
    };

    // Asterisk takes the transfer (the captured 204 of a continue).
    fake.force(Method::POST, "/continue", Canned::from(Scenario::load("originate-stasis").exchange(8)));
    let caller = say(&["Can I talk to a person please?", "Hello?"]);
    let log = tokio::time::timeout(PATIENCE * 3, caller.call(agi.addr)).await.unwrap().unwrap();
    let call = finished(caller.uniqueid.clone()).await;
    assert_eq!(call.outcome.map(|o| o.as_str()), Some("transferred"), "{call:?}");
    assert!(
        !log.commands.iter().any(|c| c.eq_ignore_ascii_case("HANGUP")),
        "a transferred call is not hung up: {:?}",
        log.commands
    );
    let sent = fake.requests_to("POST", &format!("/channels/{}/continue", caller.uniqueid));
    assert_eq!(sent.len(), 1, "the channel named by agi_uniqueid is moved");

    // Asterisk refuses (the captured 404): the agent says so and the call goes on.
    fake.force(Method::POST, "/continue", Canned::from(Scenario::load("errors").exchange(14)));
    let caller = say(&["Can I talk to a person please?", "OK, goodbye."]);
    let log = tokio::time::timeout(PATIENCE * 3, caller.call(agi.addr)).await.unwrap().unwrap();
    let call = finished(caller.uniqueid.clone()).await;
    assert_ne!(call.outcome.map(|o| o.as_str()), Some("transferred"));
    let sorry = Providers::from_config(&config).unwrap().voice.path_for(&config.conversation.transfer_unavailable);
    assert!(
        log.played.iter().any(|p| p.with_extension("") == sorry.with_extension("")),
        "the caller heard transfer_unavailable: {:?}",
        log.played
    );
    let turns = db.store.turns(call.org_id, &call.id).await.unwrap();
    assert_eq!(turns.last().unwrap().caller, "OK, goodbye.", "the conversation went on after the refusal");
    agi.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The binary: `asterai serve` with ari.url set, and `asterai call`.

/// `asterai serve` connects to ARI and follows calls; `asterai call` places one from the
/// command line (the daemon follows it through the shared database); refusals exit 1 with
/// nothing originated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_calls_placed_by_the_call_command() {
    use support::daemon::{Daemon, command};
    support::init();
    let fake = FakeAri::start().await;
    let url = fake.url();
    let env = [
        ("ASTERAI_ARI_URL", url.as_str()),
        ("ASTERAI_ARI_USERNAME", support::fake_ari::USER),
        ("ASTERAI_ARI_PASSWORD", support::fake_ari::PASSWORD),
    ];
    let daemon = Daemon::start(&[], &env);
    fake.wait_connections(1).await;
    tokio::task::block_in_place(|| daemon.wait_for_line(&["ARI resync done"]));
    let run = |args: Vec<String>| {
        let mut cmd = command(daemon.dir.path());
        cmd.args(&args).envs(env);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let (ok, _, err) = run(args(&["org", "create", "acme"])).await;
    assert!(ok, "{err}");

    let (ok, out, err) = run(args(&["call", "+15551230000", "--org", "acme", "--wait", "--json"])).await;
    assert!(ok, "{err}");
    let call: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        (call["status"].as_str(), call["status_reason"].as_str()),
        (Some("completed"), Some("16 Normal Clearing")),
        "{call:#}"
    );
    assert_eq!(fake.originates().len(), 1);
    let sent = fake.originates().pop().unwrap();
    assert_eq!(sent.query.get("channelId").map(String::as_str), call["id"].as_str());
    assert!(
        fake.requests_to("POST", &format!("/channels/{}/continue", call["id"].as_str().unwrap())).len() == 1,
        "the daemon sent the answered call to the dialplan"
    );

    // Refusals: nothing reaches Asterisk.
    let store = asterai::store::Store::connect(&support::db::options(&format!(
        "sqlite://{}",
        daemon.dir.path().join("asterai.db").display()
    )))
    .await
    .unwrap();
    let acme = store.org_by_slug("acme").await.unwrap().unwrap();
    let followed = store.call(acme.id, call["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert!(followed.daemon_id.is_some(), "the daemon that followed the command's call holds it");
    store.add_dnc(acme.id, "+15557654321", None, "cli").await.unwrap();
    let (ok, _, err) = run(args(&["call", "+15557654321", "--org", "acme"])).await;
    assert!(!ok && err.contains("do-not-call") && err.contains("nothing was dialed"), "{err}");
    let (ok, _, err) = run(args(&["call", "5551230000", "--org", "acme"])).await;
    assert!(!ok && err.contains("E.164"), "{err}");
    assert_eq!(fake.originates().len(), 1, "refused calls were never originated");

    // The daemon's own route, with a token that may dial (the default, monitor, may not).
    let (ok, out, err) = run(args(&["token", "create", "--org", "acme"])).await;
    assert!(ok, "{err}");
    let monitor = out.lines().last().unwrap().to_owned();
    let http = tokio::task::block_in_place(|| daemon.listener("HTTP"));
    let refused = reqwest::Client::new()
        .post(format!("http://{http}/v1/calls"))
        .bearer_auth(&monitor)
        .json(&json!({"to": "+15551230001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "a monitor token cannot place calls");
    let (ok, out, err) = run(args(&["token", "create", "--org", "acme", "--scope", "dial"])).await;
    assert!(ok, "{err}");
    let token = out.lines().last().unwrap().to_owned();
    let http = tokio::task::block_in_place(|| daemon.listener("HTTP"));
    let response = reqwest::Client::new()
        .post(format!("http://{http}/v1/calls"))
        .bearer_auth(&token)
        .json(&json!({"to": "+15551230001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    let id = placed["id"].as_str().unwrap().to_owned();
    wait_for("the daemon to finish the call", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.call_any(&id).await.unwrap().unwrap().ended_at.is_some() }
    })
    .await;
    store.close().await;
    drop(daemon);
}

/// Alone on its database, a daemon also reconciles the inbound calls a previous run left
/// behind; an inbound call begun since it started belongs to a running conversation and is
/// never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_calls_left_by_a_previous_run_are_reconciled() {
    use asterai::store::{Direction, NewCall};
    support::init();
    let db = TestDb::new(Backend::Sqlite).await;
    let fake = FakeAri::start().await;
    let org = db.store.create_org("acme", "Acme").await.unwrap();
    let publisher = Publisher::new(db.store.clone(), Hub::new());
    let inbound = |channel: &str| NewCall {
        id: None,
        org_id: org.id,
        direction: Direction::Inbound,
        from: "+15551230000".into(),
        to: "5550100".into(),
        channel: Some(channel.into()),
        campaign_id: None,
        contact_id: None,
    };
    let old = publisher.call_started(&inbound("PJSIP/trunk-00000001")).await.unwrap();
    publisher.call_status(org.id, &old.id, CallStatus::InProgress, Some("answered")).await.unwrap();
    let config = TrackerConfig { reconcile_unassigned: true, ..tracker_config() };
    let tracker = Tracker::new(publisher.clone(), AriClient::new(fake.settings()).unwrap(), config);
    let current = publisher.call_started(&inbound("PJSIP/trunk-00000002")).await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(tracker.clone().run(stream::spawn(stream_config(&fake, false), stop.child_token())));
    let store = db.store.clone();
    let id = old.id.clone();
    wait_for("the old inbound call to be finished", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.call_any(&id).await.unwrap().unwrap().ended_at.is_some() }
    })
    .await;
    let old = db.store.call_any(&old.id).await.unwrap().unwrap();
    assert_eq!(
        (old.status, old.status_reason.as_deref()),
        (CallStatus::Completed, Some("channel gone after reconnect"))
    );
    // A reconnect later, the current one is still live.
    let connections = fake.connections();
    fake.drop_sockets();
    fake.wait_connections(connections + 1).await;
    fake.wait_until("a second channel list", |f| f.requests_to("GET", "/ari/channels").len() >= 2).await;
    wait_for("the tracker to reconnect", || {
        let tracker = tracker.clone();
        async move { tracker.connected() }
    })
    .await;
    assert!(db.store.call_any(&current.id).await.unwrap().unwrap().ended_at.is_none());
    stop.cancel();
}

/// `send_dtmf` on the streaming path: `POST /channels/{id}/dtmf` with the digits as the `dtmf`
/// query parameter (URL-encoded, so `#` is a digit, not a fragment); a channel that is gone is
/// `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_is_sent_through_ari() {
    support::init();
    let fake = FakeAri::start().await;
    let client = AriClient::new(fake.settings()).unwrap();
    let e = client.send_dtmf("1795222386.99", "1#w2").await.unwrap_err();
    assert!(matches!(e, AriError::NotFound(_)), "{e:?}");
    let seen = fake.requests_to("POST", "/channels/1795222386.99/dtmf");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].query.get("dtmf").map(String::as_str), Some("1#w2"));
}
