//! The supervisors' figures (`GET /v1/stats`, `GET /v1/campaigns/{id}/stats`, `asterai campaign
//! status`) on SQLite and PostgreSQL, each equal to the figures worked out again from the rows
//! the store holds (`support::seed::expected`); the searches and filters of `GET /v1/calls`.

mod support;

use asterai::auth::Scopes;
use asterai::store::stats::{CallFigures, StageLatency};
use asterai::store::{CallFilter, Store};
use chrono::{Duration, Utc};
use serde_json::Value;
use support::db::TestDb;
use support::http::TestDaemon;
use support::seed::{Expected, Seeded, expected, seed};

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        (None, None) => true,
        _ => false,
    }
}

fn assert_figures(what: &str, got: &CallFigures, latency: Option<&StageLatency>, want: &Expected) {
    assert_eq!((got.calls, got.active, got.answered), (want.calls, want.active, want.answered), "{what}");
    assert!(
        close(got.answer_rate, want.answer_rate),
        "{what}: answer rate {:?} {:?}",
        got.answer_rate,
        want.answer_rate
    );
    assert!(
        close(got.average_handling_s, want.average_handling_s),
        "{what}: AHT {:?} {:?}",
        got.average_handling_s,
        want.average_handling_s
    );
    assert_eq!(got.outcomes, want.outcomes, "{what}");
    if let Some(latency) = latency {
        for (name, p) in [
            ("endpoint", latency.endpoint),
            ("stt", latency.stt),
            ("llm_first", latency.llm_first),
            ("tts_first", latency.tts_first),
            ("total", latency.total),
        ] {
            assert_eq!((p.p50, p.p95), want.latency[name], "{what}: {name}");
        }
    }
}

async fn midnight() -> chrono::DateTime<Utc> {
    Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc()
}

async fn check_store(store: &Store, seeded: &Seeded) {
    let since = midnight().await;
    let until = Utc::now() + Duration::seconds(1);
    let day = store.day_stats(seeded.org_id, since, until).await.unwrap();
    let want = expected(store, seeded.org_id, since, None).await;
    // The seed's figures, as a reader would count them: 7 calls, one ringing; 4 answered of the
    // 6 decided; 5 measured turns (the unmeasured greeting is left out).
    assert_eq!((want.calls, want.active, want.answered), (7, 1, 4));
    assert_eq!(day.latency.turns, 5);
    assert_figures("day", &day.calls, Some(&day.latency), &want);
    assert_eq!(day.by_hour.iter().map(|h| h.calls).sum::<i64>(), 7, "every call in an hour bucket");
    assert_eq!(day.latency.total.p95, Some(4800), "the slowest turn, 1200+700+2500+400");

    let campaign = store.campaign_stats(seeded.org_id, seeded.campaign_id, Utc::now()).await.unwrap().unwrap();
    let want = expected(store, seeded.org_id, since, Some(seeded.campaign_id)).await;
    assert_figures("campaign", &campaign.calls, None, &want);
    let p = campaign.progress;
    let count = |s: &str| want.contacts.get(s).copied().unwrap_or(0);
    assert_eq!(
        (p.pending, p.dialing, p.done, p.failed, p.do_not_call, p.total),
        (count("pending"), count("dialing"), count("done"), count("failed"), count("dnc"), 6)
    );
    assert_eq!((p.pending, p.dialing, p.done, p.failed, p.do_not_call), (1, 1, 2, 1, 1));
    assert_eq!(campaign.calls_per_hour, want.calls, "every call of the campaign started in the last hour");
    // Two contacts left at six calls an hour: twenty minutes.
    let eta = campaign.eta.expect("a running campaign with calls has an ETA");
    assert_eq!((eta - campaign.at).num_seconds(), 2 * 3600 / campaign.calls_per_hour);

    // Another organization sees neither the campaign nor anything of acme's day.
    assert!(store.campaign_stats(seeded.other_org_id, seeded.campaign_id, Utc::now()).await.unwrap().is_none());
    let theirs = store.day_stats(seeded.other_org_id, since, until).await.unwrap();
    assert_eq!((theirs.calls.calls, theirs.calls.outcomes.get("do_not_call")), (3, Some(&3)));
    assert!(!theirs.calls.outcomes.contains_key("interested"));
    // Windows the store refuses.
    assert!(store.day_stats(seeded.org_id, until, since).await.is_err());
    assert!(store.day_stats(seeded.org_id, since - Duration::days(40), until).await.is_err());
}

async fn get(daemon: &TestDaemon, token: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(daemon.url(path)).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn check_http(db: &TestDb, seeded: &Seeded) {
    let daemon = TestDaemon::start(db.store.clone()).await;
    let token = daemon.token("acme").await;
    let since = midnight().await;
    let (status, body) =
        get(&daemon, &token, &format!("/v1/stats?since={}", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
            .await;
    assert_eq!(status, 200, "{body}");
    let want = expected(&db.store, seeded.org_id, since, None).await;
    assert_eq!(body["calls"], want.calls);
    assert_eq!(body["answered"], want.answered);
    assert!(close(body["answer_rate"].as_f64(), want.answer_rate), "{body}");
    assert_eq!(body["outcomes"], serde_json::to_value(&want.outcomes).unwrap());
    assert_eq!(body["latency"]["llm_first"]["p95"], want.latency["llm_first"].1.unwrap());
    // Without since: today, UTC; the same calls.
    let (_, today) = get(&daemon, &token, "/v1/stats").await;
    assert_eq!(today["calls"], want.calls);

    let path = format!("/v1/campaigns/{}/stats", seeded.campaign_id);
    let (status, body) = get(&daemon, &token, &path).await;
    assert_eq!(status, 200, "{body}");
    let want = expected(&db.store, seeded.org_id, since, Some(seeded.campaign_id)).await;
    assert_eq!(body["name"], seeded.campaign_name.as_str());
    assert_eq!(body["progress"]["do_not_call"], want.contacts["dnc"]);
    assert_eq!(body["progress"]["pending"], want.contacts["pending"]);
    assert_eq!(body["calls"], want.calls);
    assert!(close(body["average_handling_s"].as_f64(), want.average_handling_s), "{body}");
    assert!(body["eta"].is_string(), "{body}");

    // Scopes and organizations.
    let dial_only = daemon.token_with("acme", Scopes::parse("dial").unwrap()).await;
    for path in ["/v1/stats", path.as_str()] {
        let (status, body) = get(&daemon, &dial_only, path).await;
        assert_eq!(status, 403, "{path} needs monitor: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("monitor"), "{body}");
        let (status, _) = get(&daemon, "not-a-token", path).await;
        assert_eq!(status, 401, "{path}");
    }
    let globex = daemon.token("globex").await;
    let (status, _) = get(&daemon, &globex, &path).await;
    assert_eq!(status, 404, "another organization's campaign is not found");
    let (_, theirs) = get(&daemon, &globex, "/v1/stats").await;
    assert_eq!(theirs["calls"], 3);
    // Bad parameters are refused with the reason.
    for (query, says) in [
        ("since=yesterday", "RFC 3339"),
        ("tz=UTC", "unknown parameter"),
        ("since=2026-01-01T00:00:00Z&until=2025-01-01T00:00:00Z", "before"),
        ("since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "31 days"),
    ] {
        let (status, body) = get(&daemon, &token, &format!("/v1/stats?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains(says), "{query}: {body}");
    }
    daemon.stop().await;
}

/// `asterai campaign status` prints the figures of the same struct.
fn check_cli(db: &TestDb, seeded: &Seeded, want: &Expected) {
    let dir = tempfile::tempdir().unwrap();
    let id = seeded.campaign_id.to_string();
    let out = support::daemon::command(dir.path())
        .env("ASTERAI_DATABASE_URL", &db.url)
        .args(["campaign", "status", &id, "--org", "acme", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["stats"]["progress"]["done"], want.contacts["done"]);
    assert_eq!(body["stats"]["answered"], want.answered);
    assert_eq!(body["stats"]["outcomes"], serde_json::to_value(&want.outcomes).unwrap());
    let out = support::daemon::command(dir.path())
        .env("ASTERAI_DATABASE_URL", &db.url)
        .args(["campaign", "status", &id, "--org", "acme"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = want.answer_rate.unwrap() * 100.0;
    assert!(text.contains("progress  1 pending, 1 dialing, 2 done, 1 failed, 1 do-not-call (of 6)"), "{text}");
    assert!(
        text.contains(&format!("answered  {} of {} calls (answer rate {rate:.1} %)", want.answered, want.calls)),
        "{text}"
    );
    assert!(text.contains("rate      6 calls in the last hour"), "{text}");
}

/// `GET /v1/calls` searches and filters: by number (as people write it), contact, id, agent.
async fn check_search(db: &TestDb, seeded: &Seeded) {
    let store = &db.store;
    let find = |search: &str| CallFilter { search: Some(search.into()), limit: Some(100), ..Default::default() };
    let ids = |page: asterai::store::CallPage| page.calls.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let failed = store.call(seeded.org_id, &seeded.failed_call).await.unwrap().unwrap();
    // Contact 2 is "Cy Park", +15557770002, called once.
    for search in ["cy park", "PARK", "+1 555 777 0002", "(555) 777-0002", &failed.id[failed.id.len() - 12..]] {
        let found = ids(store.list_calls(seeded.org_id, &find(search)).await.unwrap());
        assert_eq!(found, std::slice::from_ref(&failed.id), "{search:?}");
    }
    // Wildcards are text, not patterns; other organizations' calls never match.
    assert!(store.list_calls(seeded.org_id, &find("%")).await.unwrap().calls.is_empty());
    assert!(store.list_calls(seeded.org_id, &find("_")).await.unwrap().calls.is_empty());
    assert!(store.list_calls(seeded.org_id, &find("5559990000")).await.unwrap().calls.is_empty(), "globex's number");
    assert_eq!(store.list_calls(seeded.other_org_id, &find("5559990000")).await.unwrap().calls.len(), 1);
    assert!(store.list_calls(seeded.org_id, &find(&"x".repeat(101))).await.is_err());
    let by_agent = CallFilter { agent: Some("nobody".into()), ..Default::default() };
    assert!(store.list_calls(seeded.org_id, &by_agent).await.unwrap().calls.is_empty());

    let daemon = TestDaemon::start(store.clone()).await;
    let token = daemon.token("acme").await;
    let (status, body) = get(&daemon, &token, "/v1/calls?q=Cy%20Park&outcome=failed").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["calls"].as_array().unwrap().len(), 1);
    let (status, body) = get(&daemon, &token, &format!("/v1/calls?q={}", "y".repeat(101))).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(&daemon, &token, "/v1/calls?agent=nobody").await;
    assert_eq!(status, 200);
    daemon.stop().await;
}

backend_tests! {
    async fn figures_equal_what_the_store_holds(db) {
        let seeded = seed(&db.store).await;
        check_store(&db.store, &seeded).await;
        check_http(&db, &seeded).await;
        let want = expected(&db.store, seeded.org_id, midnight().await, Some(seeded.campaign_id)).await;
        check_cli(&db, &seeded, &want);
        check_search(&db, &seeded).await;
    }
}
