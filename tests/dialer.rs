//! Campaigns against the fake ARI built from the captures, with an injected clock: pacing and
//! max concurrent, retries by outcome, calling windows across timezones, do-not-call numbers
//! added mid-campaign, CSV imports, and three dialers sharing one PostgreSQL database.
//!
//! Ticks are driven by the tests ([`Runner::tick`]) and the clock only moves when told to, so
//! nothing here depends on timing; deadlines exist only to fail.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use asterai::ari::AriClient;
use asterai::ari::stream::{self, StreamConfig};
use asterai::dialer::import::{self, ImportReport};
use asterai::dialer::{DialSettings, Dialer, ManualClock, Runner, RunnerConfig, Tracker, TrackerConfig};
use asterai::feed::{Hub, Publisher};
use asterai::store::campaigns::Campaign;
use asterai::store::contacts::Contact;
use asterai::store::{Org, Store};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::db::{Backend, TestDb};
use support::fake_ari::{FakeAri, PATIENCE, Plan, Scenario, derive, line_of};
use tokio_util::sync::CancellationToken;

/// Monday 2026-11-23, 15:00 UTC.
fn monday_15h() -> DateTime<Utc> {
    at("2026-11-23T15:00:00Z")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// One daemon's dialer against its own fake Asterisk.
struct Daemon {
    store: Store,
    fake: FakeAri,
    org: Org,
    runner: Arc<Runner>,
    stop: CancellationToken,
}

async fn daemon(store: Store, claimer: &str, clock: &ManualClock) -> Daemon {
    support::init();
    let fake = FakeAri::start().await;
    let org = match store.org_by_slug("acme").await.unwrap() {
        Some(org) => org,
        None => store.create_org("acme", "Acme Inc.").await.unwrap(),
    };
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
            claimer: claimer.into(),
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            // These calls have no agent, so no agent audio: every answered call would count as
            // abandoned (tests/compliance.rs tests abandonment).
            compliance: Arc::new(
                asterai::dialer::compliance::Compliance::parse("[defaults]\nabandon = { threshold = 100.0 }\n")
                    .unwrap(),
            ),
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

/// A call that stays up (answered, in Stasis) until the test releases the rest of its events.
fn held() -> Plan {
    Plan::replay("originate-stasis", 1).events(9)
}

/// Captured originate-stasis events with the cause changed: how a busy, unanswered or failed
/// call looks to the application.
fn ending(kind: &str) -> Plan {
    let s = Scenario::load("originate-stasis");
    let id = "1795222386.55";
    let ringing = derive(&line_of(&s, "ChannelStateChange", id), &[("/channel/state", json!("Ringing"))]);
    let dial = |status: &str| derive(&line_of(&s, "Dial", id), &[("/dialstatus", json!(status))]);
    let gone = |cause: i64, text: &str| {
        derive(
            &line_of(&s, "ChannelDestroyed", id),
            &[("/cause", json!(cause)), ("/cause_txt", json!(text)), ("/channel/state", json!("Ringing"))],
        )
    };
    let lines = match kind {
        "busy" => vec![ringing, dial("BUSY"), gone(17, "User busy")],
        "no_answer" => vec![ringing, dial("NOANSWER"), gone(19, "User alerting, no answer")],
        "failed" => vec![dial("CHANUNAVAIL"), gone(0, "Unknown")],
        other => panic!("{other}"),
    };
    Plan::replay("originate-stasis", 1).instead(lines)
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

    async fn dialing(&self, campaign: &Campaign) -> usize {
        self.contacts(campaign).await.values().filter(|c| c.status == "dialing").count()
    }

    /// Waits until no contact of the campaign is on the attempt `call_id` any more.
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

    /// The numbers Asterisk was asked to call, in order.
    fn dialed_numbers(&self) -> Vec<String> {
        self.fake
            .originates()
            .iter()
            .map(|r| r.query["endpoint"].trim_start_matches("PJSIP/").trim_end_matches("@trunk").to_owned())
            .collect()
    }
}

fn csv(numbers: &[(&str, &str)]) -> String {
    let mut text = "phone,first_name,timezone\n".to_owned();
    for (number, tz) in numbers {
        text.push_str(&format!("{number},Pat,{tz}\n"));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_and_pacing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = ManualClock::new(monday_15h());
    let d = daemon(db.store.clone(), "d1", &clock).await;
    d.fake.default_plan(held());
    let numbers: Vec<(String, &str)> = (1..=5).map(|i| (format!("+1555123000{i}"), "")).collect();
    let list: Vec<(&str, &str)> = numbers.iter().map(|(n, t)| (n.as_str(), *t)).collect();

    // At most two calls at once.
    let two = d.campaign("two at once", json!({"max_concurrent": 2}), &csv(&list)).await;
    let first = d.runner.tick().await.unwrap();
    assert_eq!(first.dialed.len(), 2);
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 0, "both slots are taken");
    assert_eq!(d.dialing(&two).await, 2);
    d.fake.release(&first.dialed[0]);
    d.settled(&first.dialed[0]).await;
    let next = d.runner.tick().await.unwrap();
    assert_eq!(next.dialed.len(), 1, "a freed slot is used");
    assert_eq!(d.dialing(&two).await, 2);
    d.store.set_campaign_status(d.org.id, two.id, "paused").await.unwrap();
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 0, "a paused campaign dials nothing");

    // One call start per 10 s, whatever the free slots.
    let list: Vec<(String, &str)> = (1..=4).map(|i| (format!("+1555987000{i}"), "")).collect();
    let list: Vec<(&str, &str)> = list.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let _paced = d.campaign("paced", json!({"max_concurrent": 5, "pacing": "10s"}), &csv(&list)).await;
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 1);
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 0);
    clock.advance(Duration::from_secs(5));
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 0, "5 s after the last start");
    clock.advance(Duration::from_secs(5));
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 1, "10 s after it");
    clock.advance(Duration::from_secs(10));
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 1);
    d.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_each_outcome() {
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = ManualClock::new(monday_15h());
    let d = daemon(db.store.clone(), "d1", &clock).await;
    let settings = json!({
        "max_concurrent": 3,
        "retries": {
            "busy": {"attempts": 1, "delay": "10m"},
            "no_answer": {"attempts": 2, "delay": "1h"},
            "failed": {"attempts": 0, "delay": "5m"}
        }
    });
    let campaign = d
        .campaign("retries", settings, &csv(&[("+15551110001", ""), ("+15551110002", ""), ("+15551110003", "")]))
        .await;
    for kind in ["busy", "no_answer", "failed"] {
        d.fake.plan(ending(kind));
    }
    let tick = d.runner.tick().await.unwrap();
    assert_eq!(tick.dialed.len(), 3);
    for id in &tick.dialed {
        d.settled(id).await;
    }
    let c = d.contacts(&campaign).await;
    let (busy, none, failed) = (&c["+15551110001"], &c["+15551110002"], &c["+15551110003"]);
    assert_eq!(
        (busy.status.as_str(), busy.last_outcome.as_deref(), busy.next_attempt_at),
        ("pending", Some("busy"), Some(monday_15h() + chrono::Duration::minutes(10)))
    );
    assert_eq!(
        (none.status.as_str(), none.next_attempt_at),
        ("pending", Some(monday_15h() + chrono::Duration::hours(1)))
    );
    assert_eq!(
        (failed.status.as_str(), failed.last_outcome.as_deref()),
        ("failed", Some("failed")),
        "no retry after failed"
    );
    assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 0, "nothing is due yet");

    // Busy again after 10 minutes: its one retry is used, then it is over.
    clock.advance(Duration::from_secs(600));
    d.fake.plan(ending("busy"));
    let tick = d.runner.tick().await.unwrap();
    assert_eq!(d.dialed_numbers().last().unwrap(), "+15551110001");
    d.settled(&tick.dialed[0]).await;
    assert_eq!(d.contacts(&campaign).await["+15551110001"].status, "failed");

    // No answer: two retries, an hour apart.
    for (round, expect) in [(1, "pending"), (2, "failed")] {
        clock.advance(Duration::from_secs(3600));
        d.fake.plan(ending("no_answer"));
        let tick = d.runner.tick().await.unwrap();
        assert_eq!(tick.dialed.len(), 1, "round {round}");
        d.settled(&tick.dialed[0]).await;
        let contact = &d.contacts(&campaign).await["+15551110002"];
        assert_eq!((contact.status.as_str(), contact.attempts), (expect, round + 1));
    }
    let numbers = d.dialed_numbers();
    let count = |n: &str| numbers.iter().filter(|x| x.as_str() == n).count();
    assert_eq!((count("+15551110001"), count("+15551110002"), count("+15551110003")), (2, 3, 1));
    assert_eq!(d.runner.tick().await.unwrap().completed, vec![campaign.id], "every contact is done");
    assert_eq!(d.store.campaign(d.org.id, campaign.id).await.unwrap().unwrap().status, "completed");
    d.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calling_window_is_each_contacts_local_time() {
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = ManualClock::new(monday_15h());
    let d = daemon(db.store.clone(), "d1", &clock).await;
    let settings = json!({
        "max_concurrent": 10,
        "timezone": "Europe/Paris",
        "window": {"start": "08:00", "end": "21:00", "days": ["mon", "tue", "wed", "thu", "fri"]}
    });
    let contacts = [
        ("+12125550001", "America/New_York"),    // 10:00 Monday: inside
        ("+81355550002", "Asia/Tokyo"),          // 00:00 Tuesday: outside
        ("+33155550003", ""),                    // the campaign's Paris, 16:00: inside
        ("+13105550004", "America/Los_Angeles"), // 07:00: outside, while the server's 15:00 is inside
        ("+68655550005", "Pacific/Kiritimati"),  // 05:00 Tuesday: outside
    ];
    let campaign = d.campaign("windows", settings, &csv(&contacts)).await;
    let tick = d.runner.tick().await.unwrap();
    assert_eq!((tick.dialed.len(), tick.deferred), (2, 3));
    assert_eq!(d.dialed_numbers(), ["+12125550001", "+33155550003"]);
    let c = d.contacts(&campaign).await;
    assert_eq!(c["+81355550002"].next_attempt_at, Some(at("2026-11-23T23:00:00Z")), "08:00 Tuesday in Tokyo");
    assert_eq!(c["+13105550004"].next_attempt_at, Some(at("2026-11-23T16:00:00Z")), "08:00 in Los Angeles");
    assert_eq!(c["+68655550005"].next_attempt_at, Some(at("2026-11-23T18:00:00Z")), "08:00 Tuesday at UTC+14");
    assert_eq!(c["+13105550004"].attempts, 0, "waiting is not an attempt");
    for id in &tick.dialed {
        d.settled(id).await;
    }

    for (time, number) in [
        ("2026-11-23T16:00:00Z", "+13105550004"),
        ("2026-11-23T18:00:00Z", "+68655550005"),
        ("2026-11-23T23:00:00Z", "+81355550002"),
    ] {
        clock.set(at(time) - chrono::Duration::seconds(1));
        assert!(d.runner.tick().await.unwrap().dialed.is_empty(), "not a second before {time}");
        clock.set(at(time));
        let tick = d.runner.tick().await.unwrap();
        assert_eq!(tick.dialed.len(), 1, "{time}");
        assert_eq!(d.dialed_numbers().last().unwrap(), number);
        d.settled(&tick.dialed[0]).await;
    }

    // Days of the week, locally: Friday 11:00 UTC is already Saturday at UTC+14.
    clock.set(at("2026-11-27T11:00:00Z"));
    let weekend = d
        .campaign(
            "weekend",
            json!({"max_concurrent": 10, "window": {"days": ["mon", "tue", "wed", "thu", "fri"]}}),
            &csv(&[("+68655550006", "Pacific/Kiritimati"), ("+12125550007", "America/New_York")]),
        )
        .await;
    let tick = d.runner.tick().await.unwrap();
    assert!(tick.dialed.is_empty(), "Saturday at UTC+14, 06:00 in New York");
    let c = d.contacts(&weekend).await;
    assert_eq!(c["+12125550007"].next_attempt_at, Some(at("2026-11-27T13:00:00Z")), "08:00 Friday in New York");
    assert_eq!(c["+68655550006"].next_attempt_at, Some(at("2026-11-29T18:00:00Z")), "Monday 08:00 at UTC+14");
    d.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_put_on_the_do_not_call_list_mid_campaign_is_never_dialed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = ManualClock::new(monday_15h());
    let d = daemon(db.store.clone(), "d1", &clock).await;
    d.fake.default_plan(held());
    let campaign = d
        .campaign(
            "dnc",
            json!({"max_concurrent": 1}),
            &csv(&[("+15552220001", ""), ("+15552220002", ""), ("+15552220003", "")]),
        )
        .await;
    let first = d.runner.tick().await.unwrap();
    assert_eq!(d.dialed_numbers(), ["+15552220001"]);
    // The second contact asks, elsewhere, not to be called while the first call goes on.
    d.store.add_dnc(d.org.id, "+15552220002", Some("asked by email"), "api").await.unwrap();
    d.fake.release(&first.dialed[0]);
    d.settled(&first.dialed[0]).await;
    let next = d.runner.tick().await.unwrap();
    assert_eq!(next.do_not_call, 1);
    assert_eq!(d.dialed_numbers(), ["+15552220001", "+15552220003"], "the listed number is skipped");
    let c = d.contacts(&campaign).await;
    assert_eq!((c["+15552220002"].status.as_str(), c["+15552220002"].attempts), ("dnc", 0));
    d.fake.release(&next.dialed[0]);
    d.settled(&next.dialed[0]).await;
    assert_eq!(d.runner.tick().await.unwrap().completed, vec![campaign.id]);
    assert!(!d.dialed_numbers().contains(&"+15552220002".to_owned()));
    d.stop.cancel();
}

backend_tests! {
    async fn csv_imports_report_bad_rows_skip_duplicates_and_land_the_rest(db) {
        let store = &db.store;
        let org = store.create_org("acme", "Acme").await.unwrap();
        let campaign = store.create_campaign(org.id, "import", &json!({})).await.unwrap();
        let mut file = b"phone,first_name,last_name,email,company,timezone,plan\n\
            +15553330001,Ann,Lee,ann@example.com,\"Acme, Inc.\",America/New_York,gold\n\
            not a number,Bad,,,,,\n\
            +15553330002,Bo,,bo-at-example,,,\n\
            +15553330003,Cy,,,,Mars/Olympus,\n\
            +15553330001,Ann again,,,,,\n".to_vec();
        file.extend_from_slice(b"+15553330004,Jos\xE9,,,,,\n");
        file.extend_from_slice(b"+15553330005,Di,,,,Europe/Paris,silver\n");
        let mut progress = Vec::new();
        let report = import::import(store, org.id, campaign.id, &file, &mut |done, total| progress.push((done, total))).await.unwrap();
        assert_eq!((report.rows, report.imported), (7, 2));
        let rejected: Vec<(usize, &str)> = report.rejected.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4, 5, 6, 7], "{rejected:#?}");
        assert!(rejected[0].1.contains("E.164"));
        assert!(rejected[1].1.contains("not an address"));
        assert!(rejected[2].1.contains("unknown timezone"));
        assert!(rejected[3].1.contains("duplicate of line 2"));
        assert!(rejected[4].1.contains("UTF-8"), "a bad encoding is reported: {}", rejected[4].1);
        assert_eq!(progress.last(), Some(&(2, 2)));
        let contacts = store.list_contacts(campaign.id).await.unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].company.as_deref(), Some("Acme, Inc."));
        assert_eq!(contacts[0].fields.get("plan").map(String::as_str), Some("gold"));
        assert_eq!(contacts[1].timezone.as_deref(), Some("Europe/Paris"));

        // The same file again: nothing new, every good row a duplicate.
        let again: ImportReport = import::import(store, org.id, campaign.id, &file, &mut |_, _| {}).await.unwrap();
        assert_eq!((again.imported, again.duplicates.len()), (0, 2));
        assert_eq!(again.duplicates[0].line, 2);
        assert_eq!(store.list_contacts(campaign.id).await.unwrap().len(), 2);

        // A file that is not contacts at all.
        let err = import::import(store, org.id, campaign.id, b"name;mail\nAnn;a@b.c\n", &mut |_, _| {}).await.unwrap_err();
        assert!(err.to_string().contains("no phone column"), "{err}");
        let latin1 = import::import(store, org.id, campaign.id, b"ph\xF6ne\n+15553330009\n", &mut |_, _| {}).await.unwrap_err();
        assert!(latin1.to_string().contains("UTF-8"), "{latin1}");
    }
}

/// A daemon that dies mid-call stops renewing its claims; once the lease is over another daemon
/// calls the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_daemons_claims_are_picked_up_after_the_lease() {
    let db = TestDb::new(Backend::Postgres).await;
    let clock = ManualClock::new(monday_15h());
    let first = daemon(db.store.clone(), "first", &clock).await;
    let second = daemon(db.second_store().await, "second", &clock).await;
    first.fake.default_plan(held());
    second.fake.default_plan(held());
    let campaign = first.campaign("lease", json!({"max_concurrent": 1}), &csv(&[("+15554440001", "")])).await;
    assert_eq!(first.runner.tick().await.unwrap().dialed.len(), 1);
    first.stop.cancel();
    assert_eq!(second.runner.tick().await.unwrap().dialed.len(), 0, "the claim holds");
    clock.advance(Duration::from_secs(119));
    assert_eq!(second.runner.tick().await.unwrap().dialed.len(), 0, "until the lease ends");
    clock.advance(Duration::from_secs(1));
    let taken = second.runner.tick().await.unwrap();
    assert_eq!(taken.dialed.len(), 1);
    let contact = &second.contacts(&campaign).await["+15554440001"];
    assert_eq!((contact.attempts, contact.last_call_id.as_deref()), (2, Some(taken.dialed[0].as_str())));
    second.stop.cancel();
}

/// Three daemons, each with its own Asterisk, on one PostgreSQL database, dialing one campaign:
/// every contact is dialed exactly once and the campaign's limit holds across the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dialers_on_one_postgres_dial_each_contact_once_within_the_limit() {
    let db = TestDb::new(Backend::Postgres).await;
    let clock = ManualClock::new(monday_15h());
    let mut fleet = Vec::new();
    for name in ["d1", "d2", "d3"] {
        let store = if fleet.is_empty() { db.store.clone() } else { db.second_store().await };
        let d = daemon(store, name, &clock).await;
        d.fake.default_plan(held());
        fleet.push(d);
    }
    const CONTACTS: usize = 30;
    const LIMIT: usize = 4;
    let numbers: Vec<String> = (0..CONTACTS).map(|i| format!("+1555666{i:04}")).collect();
    let list: Vec<(&str, &str)> = numbers.iter().map(|n| (n.as_str(), "")).collect();
    let campaign = fleet[0].campaign("fleet", json!({"max_concurrent": LIMIT}), &csv(&list)).await;
    let store = db.store.clone();
    let mut rounds = 0;
    let mut most = 0;
    loop {
        rounds += 1;
        assert!(rounds < 200, "the campaign never finished");
        let (a, b, c) = tokio::join!(fleet[0].runner.tick(), fleet[1].runner.tick(), fleet[2].runner.tick());
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        let dialing = store.list_contacts(campaign.id).await.unwrap().iter().filter(|c| c.status == "dialing").count();
        let live: usize = fleet.iter().map(|d| d.fake.live_channels().len()).sum();
        assert!(dialing <= LIMIT && live <= LIMIT, "round {rounds}: {dialing} claimed, {live} live");
        most = most.max(live);
        if !(a.completed.is_empty() && b.completed.is_empty() && c.completed.is_empty()) {
            break;
        }
        // Each Asterisk ends its oldest call; the runners settle them.
        for d in &fleet {
            if let Some(id) = d.fake.live_channels().first() {
                d.fake.release(id);
                d.settled(id).await;
            }
        }
    }
    assert_eq!(most, LIMIT, "the fleet used the whole limit");
    let calls = store
        .list_calls(fleet[0].org.id, &asterai::store::CallFilter { limit: Some(500), ..Default::default() })
        .await
        .unwrap()
        .calls;
    assert_eq!(calls.len(), CONTACTS);
    let mut per_contact: BTreeMap<i64, usize> = BTreeMap::new();
    for call in &calls {
        *per_contact.entry(call.contact_id.unwrap()).or_default() += 1;
    }
    assert_eq!(per_contact.len(), CONTACTS);
    assert!(per_contact.values().all(|n| *n == 1), "every contact dialed exactly once: {per_contact:?}");
    let originated: usize = fleet.iter().map(|d| d.fake.originates().len()).sum();
    assert_eq!(originated, CONTACTS);
    assert!(fleet.iter().all(|d| !d.fake.originates().is_empty()), "every daemon dialed");
    // The calls' own times: never more than the limit at once.
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for call in &calls {
        edges.push((call.started_at, 1));
        edges.push((call.ended_at.unwrap(), -1));
    }
    edges.sort();
    let mut overlap = 0;
    for (_, step) in edges {
        overlap += step;
        assert!(overlap <= LIMIT as i32, "{overlap} calls at once");
    }
    for d in &fleet {
        d.stop.cancel();
    }
}

/// A campaign whose stored settings the dialer cannot use (written before settings had bounds,
/// or by hand: a pacing beyond the calendar panicked the runner) is paused with its reason,
/// stored and published, and the other campaigns are dialed as usual. On PostgreSQL two daemons
/// share the bad campaign and both go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_that_cannot_be_dialed_is_paused_and_the_others_go_on() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let clock = ManualClock::new(monday_15h());
        let first = daemon(db.store.clone(), "first", &clock).await;
        let second = daemon(db.second_store().await, "second", &clock).await;
        first.fake.default_plan(held());
        second.fake.default_plan(held());
        let bad = first.campaign("bad", json!({}), &csv(&[("+15553330001", "")])).await;
        db.store.set_campaign_settings(first.org.id, bad.id, &json!({"pacing": "10000000000h"})).await.unwrap();
        let good = first
            .campaign("good", json!({"max_concurrent": 1}), &csv(&[("+15553330002", ""), ("+15553330003", "")]))
            .await;
        let tick = first.runner.tick().await.expect("the tick goes on past the bad campaign");
        assert_eq!(tick.dialed.len(), 1, "{backend:?}: the good campaign is dialed");
        let stored = serde_json::to_value(db.store.campaign(first.org.id, bad.id).await.unwrap().unwrap()).unwrap();
        assert_eq!(stored["status"], "paused", "{backend:?}: {stored}");
        let reason = stored["status_reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains("pacing"), "{backend:?}: the reason names the field: {reason:?}");
        let events = db.store.events_after(first.org.id, 0, 1000).await.unwrap().events;
        let published = events
            .iter()
            .find(|e| e.campaign == Some(bad.id) && serde_json::to_value(e.kind).unwrap() == "campaign_status_update")
            .expect("the pause is on the feed");
        assert_eq!(
            (published.data["status"].as_str(), published.data["reason"].as_str()),
            (Some("paused"), Some(reason.as_str()))
        );
        // The second daemon neither trips on it nor dials it; the good campaign goes on.
        clock.advance(Duration::from_secs(1));
        second.runner.tick().await.expect("the second daemon's tick");
        assert_eq!(first.dialing(&good).await, 1);
        assert!(first.dialed_numbers().iter().chain(second.dialed_numbers().iter()).all(|n| n != "+15553330001"));
        // Started again with its settings unchanged, it is refused (the CLI and API check first).
        let started = db.store.set_campaign_status(first.org.id, bad.id, "running").await.unwrap();
        assert_eq!(started.status, "running");
        let tick = second.runner.tick().await.unwrap();
        assert_eq!(tick.paused, vec![bad.id], "{backend:?}");
        first.stop.cancel();
        second.stop.cancel();
    }
}

/// Arbitrary settings through create (the REST API) → import → start → tick: settings the API
/// accepts are dialed and never paused; settings it refuses get a 400 naming a field, and the
/// same settings forced into the database are paused with a reason. Nothing panics.
#[test]
fn arbitrary_settings_never_stop_the_dialer() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (db, d, http, token) = rt.block_on(async {
        let db = TestDb::new(Backend::Sqlite).await;
        let clock = ManualClock::new(monday_15h());
        let d = daemon(db.store.clone(), "d1", &clock).await;
        d.fake.default_plan(held());
        let http = support::http::TestDaemon::start(db.store.clone()).await;
        let token = http.token("acme").await;
        (db, d, http, token)
    });
    let number = || {
        prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(u64::MAX)),
            Just(json!(1.5)),
            (0u64..20_000).prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
        ]
    };
    let duration = || {
        prop_oneof![
            (any::<u64>(), prop::sample::select(vec!["ms", "s", "m", "h", "d", "w", "y", "", " s", "x"]))
                .prop_map(|(n, unit)| json!(format!("{n}{unit}"))),
            (0u64..100, prop::sample::select(vec!["ms", "s", "m", "h", "d"]))
                .prop_map(|(n, unit)| json!(format!("{n}{unit}"))),
            Just(json!("1h 30m")),
            Just(json!(5)),
            Just(json!(null)),
        ]
    };
    let time =
        || prop::sample::select(vec!["08:00", "00:00", "23:59", "21:00", "24:00", "9am", ""]).prop_map(|t| json!(t));
    let days = prop::collection::vec(prop::sample::select(vec!["mon", "tue", "sun", "someday"]), 0..10);
    let rule = (prop::option::of(number()), prop::option::of(duration())).prop_map(|(attempts, delay)| {
        let mut rule = serde_json::Map::new();
        if let Some(a) = attempts {
            rule.insert("attempts".into(), a);
        }
        if let Some(d) = delay {
            rule.insert("delay".into(), d);
        }
        Value::Object(rule)
    });
    let settings = (
        prop::option::of(number()),
        prop::option::of(duration()),
        prop::option::of(duration()),
        prop::option::of(prop::sample::select(vec!["UTC", "America/New_York", "Asia/Tokyo", "Mars/Olympus"])),
        prop::option::of((time(), time(), days)),
        prop::option::of((rule.clone(), rule.clone(), rule)),
    )
        .prop_map(|(max, pacing, ring, tz, window, retries)| {
            let mut s = serde_json::Map::new();
            if let Some(v) = max {
                s.insert("max_concurrent".into(), v);
            }
            if let Some(v) = pacing {
                s.insert("pacing".into(), v);
            }
            if let Some(v) = ring {
                s.insert("ring_timeout".into(), v);
            }
            if let Some(v) = tz {
                s.insert("timezone".into(), json!(v));
            }
            if let Some((start, end, days)) = window {
                s.insert("window".into(), json!({"start": start, "end": end, "days": days}));
            }
            if let Some((busy, no_answer, failed)) = retries {
                s.insert("retries".into(), json!({"busy": busy, "no_answer": no_answer, "failed": failed}));
            }
            Value::Object(s)
        });

    let client = reqwest::Client::new();
    let case = std::sync::atomic::AtomicU32::new(0);
    let (accepted, refused) = (std::sync::atomic::AtomicU32::new(0), std::sync::atomic::AtomicU32::new(0));
    // A fixed seed: the same 48 cases every run, so the run always holds both kinds (asserted
    // below) and a failure is reproduced by running the test again.
    let mut runner = TestRunner::new_with_rng(
        Config { cases: 48, failure_persistence: None, ..Config::default() },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let result = runner.run(&settings, |settings| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rt.block_on(async {
            let name = format!("case {n}");
            let created = client
                .post(http.url("/v1/campaigns"))
                .bearer_auth(&token)
                .json(&json!({"name": name, "settings": settings}))
                .send()
                .await
                .unwrap();
            let status = created.status().as_u16();
            let body: Value = created.json().await.unwrap();
            let valid = status == 201;
            (if valid { &accepted } else { &refused }).fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let id = if valid {
                body["id"].as_i64().unwrap()
            } else {
                prop_assert_eq!(status, 400, "{}", body);
                let message = body["error"]["message"].as_str().unwrap_or_default();
                prop_assert!(message.starts_with("campaign settings: "), "the 400 names a field: {}", message);
                // The same settings, as a database written before the bounds would hold them.
                let campaign = db.store.create_campaign(d.org.id, &name, &json!({})).await.unwrap();
                db.store.set_campaign_settings(d.org.id, campaign.id, &settings).await.unwrap();
                campaign.id
            };
            let number = format!("+1555{:07}", 1_000_000 + n);
            let imported = client
                .post(http.url(&format!("/v1/campaigns/{id}/contacts")))
                .bearer_auth(&token)
                .body(format!("phone\n{number}\n"))
                .send()
                .await
                .unwrap();
            prop_assert_eq!(imported.status().as_u16(), 200);
            let start =
                client.post(http.url(&format!("/v1/campaigns/{id}/start"))).bearer_auth(&token).send().await.unwrap();
            if valid {
                prop_assert_eq!(start.status().as_u16(), 200);
            } else {
                prop_assert_eq!(start.status().as_u16(), 400, "invalid settings are not started");
                db.store.set_campaign_status(d.org.id, id, "running").await.unwrap();
            }
            let tick = d.runner.tick().await;
            prop_assert!(tick.is_ok(), "{:?}", tick.err());
            let tick = tick.unwrap();
            let stored = serde_json::to_value(db.store.campaign(d.org.id, id).await.unwrap().unwrap()).unwrap();
            if valid {
                prop_assert!(!tick.paused.contains(&id), "valid settings were paused: {}", stored);
                prop_assert!(stored["status"] == "running" || stored["status"] == "completed", "{}", stored);
            } else {
                prop_assert!(tick.paused.contains(&id), "{}", stored);
                prop_assert_eq!(&stored["status"], "paused");
                prop_assert!(
                    stored["status_reason"].as_str().is_some_and(|r| r.contains("campaign settings")),
                    "{}",
                    stored
                );
            }
            // Out of the way of the next case's tick.
            db.store.set_campaign_status(d.org.id, id, "stopped").await.unwrap();
            Ok(())
        })
    });
    rt.block_on(async move {
        d.stop.cancel();
        http.stop().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    assert!(accepted > 0 && refused > 0, "both kinds were tried: {accepted} accepted, {refused} refused");
}

/// The commands: `asterai campaign create|import|start|pause|stop|status|list` and
/// `asterai dnc add|remove|list|import`.
#[test]
fn campaign_and_dnc_commands() {
    use support::daemon::command;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = command(dir.path()).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(run(&["org", "create", "acme"]).0);
    let (ok, out, err) = run(&[
        "campaign",
        "create",
        "spring",
        "--max-concurrent",
        "2",
        "--window",
        "09:00-20:00",
        "--days",
        "mon,tue,wed",
        "--timezone",
        "America/Chicago",
        "--retry-busy",
        "3x5m",
    ]);
    assert!(ok, "{err}");
    let id = out.lines().last().unwrap().trim().to_owned();
    let (ok, _, err) = run(&["campaign", "create", "bad", "--window", "9-5"]);
    assert!(!ok && err.contains("window"), "{err}");
    let (ok, _, err) = run(&["campaign", "create", "bad", "--timezone", "Mars/Olympus"]);
    assert!(!ok && err.contains("unknown timezone"), "{err}");
    // Durations and counts are bounded at the edge, the error naming the setting.
    for (option, value, field) in [
        ("--pacing", "10000000000h", "pacing"),
        ("--ring-timeout", "18446744073709551615s", "ring_timeout"),
        ("--retry-busy", "3x10000000000h", "retries.busy.delay"),
        ("--retry-no-answer", "1000x1h", "retries.no_answer.attempts"),
        ("--max-concurrent", "4000000000", "max_concurrent"),
    ] {
        let (ok, _, err) = run(&["campaign", "create", "bad", option, value]);
        assert!(!ok && err.contains(field) && !err.contains("panicked"), "{option} {value}: {err}");
    }

    let file = dir.path().join("contacts.csv");
    std::fs::write(&file, "phone,first_name\n+15557770001,Ann\nnope,Bo\n+15557770002,Cy\n").unwrap();
    let (ok, out, err) = run(&["campaign", "import", &id, file.to_str().unwrap()]);
    assert!(!ok && err.contains("1 row rejected (the others were imported)"), "rejected rows fail the import: {err}");
    assert!(out.contains("3 rows: 2 imported, 0 already in the campaign, 1 rejected"), "{out}");
    assert!(out.contains("line 3: phone"), "{out}");
    let (_, out, _) = run(&["campaign", "import", &id, file.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["imported"].as_u64(), report["duplicates"].as_array().map(Vec::len)), (Some(0), Some(2)));

    for (action, state) in [("start", "running"), ("pause", "paused"), ("stop", "stopped")] {
        let (ok, out, err) = run(&["campaign", action, &id]);
        assert!(ok && out.contains(state), "{action}: {out}{err}");
        // Started where no daemon of this configuration dials: said, not left to be found out.
        assert_eq!(err.contains("no ari.url, so a daemon started with it dials nothing"), action == "start", "{err}");
    }
    // Stopped is for good: neither paused nor started again.
    for action in ["pause", "start"] {
        let (ok, _, err) = run(&["campaign", action, &id]);
        assert!(!ok && err.contains("stopped, for good"), "{action}: {err}");
    }
    let (ok, out, _) = run(&["campaign", "status", &id, "--json"]);
    assert!(ok);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["contacts"]["pending"], 2);
    assert_eq!(status["settings"]["window"]["start"], "09:00");
    assert_eq!(status["settings"]["retries"]["busy"]["attempts"], 3);
    let (_, out, _) = run(&["campaign", "list"]);
    assert!(out.contains("spring") && out.contains("stopped"), "{out}");
    let (ok, _, err) = run(&["campaign", "status", "999"]);
    assert!(!ok && err.contains("no campaign 999"), "{err}");

    let (ok, out, _) = run(&["dnc", "add", "+1 555 777-0001", "--reason", "asked"]);
    assert!(ok && out.contains("+15557770001 added"), "written as people write it, stored in E.164: {out}");
    let (ok, _, err) = run(&["dnc", "add", "12345"]);
    assert!(!ok && err.contains("E.164"), "{err}");
    let list = dir.path().join("dnc.txt");
    std::fs::write(&list, "+15557770003\nnot a number\n+15557770001\n").unwrap();
    let (ok, out, err) = run(&["dnc", "import", list.to_str().unwrap()]);
    assert!(!ok && err.contains("1 line rejected"), "{err}");
    assert!(out.contains("3 numbers: 1 added, 1 on the list already, 1 rejected") && out.contains("line 2"), "{out}");
    let (_, out, _) = run(&["dnc", "list", "--json"]);
    let numbers: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(numbers.len(), 2);
    assert!(run(&["dnc", "remove", "+1 (555) 777-0001"]).0);
    let (ok, _, err) = run(&["dnc", "remove", "+15557770001"]);
    assert!(!ok && err.contains("not on"), "{err}");
    // National numbers, read in dialer.default_country; an unknown country stops every command.
    let in_country = |country: &str, args: &[&str]| {
        let out = command(dir.path()).env("ASTERAI_DIALER_DEFAULT_COUNTRY", country).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = in_country("US", &["dnc", "add", "(555) 777-0009"]);
    assert!(ok && out.contains("+15557770009 added"), "{out}{err}");
    let (ok, _, err) = run(&["dnc", "add", "(555) 777-0010"]);
    assert!(!ok && err.contains("dialer.default_country"), "without a country the error says how to read it: {err}");
    let (ok, _, err) = in_country("XX", &["dnc", "list"]);
    assert!(!ok && err.contains("dialer.default_country") && err.contains("unknown country \"XX\""), "{err}");
    // With two organizations, --org is needed, and the error names them.
    assert!(run(&["org", "create", "globex"]).0);
    let (ok, _, err) = run(&["dnc", "list"]);
    assert!(!ok && err.contains("several organizations exist (acme, globex); choose one with --org"), "{err}");
}

/// The same over the REST API, scoped to the token's organization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_and_dnc_routes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = support::http::TestDaemon::start(db.store.clone()).await;
    let (acme, globex) = (daemon.token("acme").await, daemon.token("globex").await);
    let http = reqwest::Client::new();
    let created: Value = http
        .post(daemon.url("/v1/campaigns"))
        .bearer_auth(&acme)
        .json(&json!({"name": "spring", "settings": {"max_concurrent": 3, "pacing": "2s"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!((created["status"].as_str(), created["settings"]["max_concurrent"].as_i64()), (Some("draft"), Some(3)));
    let bad = http
        .post(daemon.url("/v1/campaigns"))
        .bearer_auth(&acme)
        .json(&json!({"name": "x", "settings": {"max_concurrent": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let huge = http
        .post(daemon.url("/v1/campaigns"))
        .bearer_auth(&acme)
        .json(&json!({"name": "x", "settings": {"retries": {"busy": {"delay": "10000000000h"}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 400);
    let body: Value = huge.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("retries.busy.delay"), "{body}");
    let report: Value = http
        .post(daemon.url(&format!("/v1/campaigns/{id}/contacts")))
        .bearer_auth(&acme)
        .header("content-type", "text/csv")
        .body("phone,first_name\n+15558880001,Ann\n+1555,Bo\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((report["imported"].as_u64(), report["rejected"][0]["line"].as_u64()), (Some(1), Some(3)));
    let no_phone = http
        .post(daemon.url(&format!("/v1/campaigns/{id}/contacts")))
        .bearer_auth(&acme)
        .body("name\nAnn\n")
        .send()
        .await
        .unwrap();
    assert_eq!(no_phone.status(), 400);
    let started: Value = http
        .post(daemon.url(&format!("/v1/campaigns/{id}/start")))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((started["status"].as_str(), started["contacts"]["pending"].as_i64()), (Some("running"), Some(1)));
    assert_eq!(
        http.post(daemon.url(&format!("/v1/campaigns/{id}/explode"))).bearer_auth(&acme).send().await.unwrap().status(),
        404
    );
    // Another organization sees none of it.
    assert_eq!(
        http.get(daemon.url(&format!("/v1/campaigns/{id}"))).bearer_auth(&globex).send().await.unwrap().status(),
        404
    );
    let theirs: Value =
        http.get(daemon.url("/v1/campaigns")).bearer_auth(&globex).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["campaigns"].as_array().unwrap().len(), 0);

    let added = http
        .post(daemon.url("/v1/dnc"))
        .bearer_auth(&acme)
        .json(&json!({"number": "+15558880002"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let again = http
        .post(daemon.url("/v1/dnc"))
        .bearer_auth(&acme)
        .json(&json!({"number": "+15558880002"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let bad =
        http.post(daemon.url("/v1/dnc")).bearer_auth(&acme).json(&json!({"number": "0800"})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let list: Value = http.get(daemon.url("/v1/dnc")).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["numbers"][0]["number"], "+15558880002");
    let other: Value = http.get(daemon.url("/v1/dnc")).bearer_auth(&globex).send().await.unwrap().json().await.unwrap();
    assert_eq!(other["numbers"].as_array().unwrap().len(), 0);
    assert_eq!(http.delete(daemon.url("/v1/dnc/+15558880002")).bearer_auth(&acme).send().await.unwrap().status(), 204);
    assert_eq!(http.delete(daemon.url("/v1/dnc/+15558880002")).bearer_auth(&acme).send().await.unwrap().status(), 404);
    daemon.stop().await;
}

/// A callback the contact booked during the call (the `schedule_callback` tool writes it with
/// `Store::schedule_callback`) is the next attempt: the answered call's attempt settles as
/// `pending` at that time rather than `done`, and the campaign dials the contact then, not
/// before. Another organization cannot book one for the contact. Both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booked_callback_is_dialled_at_its_time() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let clock = ManualClock::new(monday_15h());
        let d = daemon(db.store.clone(), "d1", &clock).await;
        d.fake.default_plan(held());
        let settings = json!({"timezone": "Europe/Paris",
            "window": {"start": "08:00", "end": "21:00", "days": ["mon", "tue", "wed", "thu", "fri"]}});
        let campaign = d.campaign("callbacks", settings, &csv(&[("+15551112222", "")])).await;
        let tick = d.runner.tick().await.unwrap();
        assert_eq!(tick.dialed.len(), 1, "{backend:?}");
        let contact = d.contacts(&campaign).await["+15551112222"].clone();
        // Tuesday 10:00 in Paris.
        let booked = at("2026-11-24T09:00:00Z");
        let other = d.store.create_org("other", "Other").await.unwrap();
        assert!(!d.store.schedule_callback(other.id, contact.id, booked).await.unwrap(), "{backend:?}");
        assert!(d.store.schedule_callback(d.org.id, contact.id, booked).await.unwrap(), "{backend:?}");
        d.fake.release(&tick.dialed[0]);
        d.settled(&tick.dialed[0]).await;
        let settled = &d.contacts(&campaign).await["+15551112222"];
        assert_eq!((settled.status.as_str(), settled.next_attempt_at), ("pending", Some(booked)), "{backend:?}");

        clock.set(booked - chrono::Duration::minutes(1));
        assert_eq!(d.runner.tick().await.unwrap().dialed.len(), 0, "{backend:?}: not before the booked time");
        clock.set(booked);
        let tick = d.runner.tick().await.unwrap();
        assert_eq!(tick.dialed.len(), 1, "{backend:?}: dialled at the booked time");
        assert_eq!(d.dialed_numbers(), ["+15551112222", "+15551112222"], "{backend:?}");
        // An answered call without a booking is done.
        d.fake.release(&tick.dialed[0]);
        d.settled(&tick.dialed[0]).await;
        assert_eq!(d.contacts(&campaign).await["+15551112222"].status, "done", "{backend:?}");
        d.stop.cancel();
    }
}
