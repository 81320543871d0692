//! Every store operation, on SQLite (temp files) and on the real PostgreSQL server.

mod support;

use asterai::store::calls::transcript;
use asterai::store::{
    CallFilter, CallStatus, Direction, EventKind, FinishCall, Latency, NewCall, NewTurn, Outcome, Store, StoreError,
};
use support::db::{Backend, TestDb};

async fn org(store: &Store, slug: &str) -> i64 {
    store.create_org(slug, &format!("{slug} Inc.")).await.unwrap().id
}

fn new_call(org_id: i64, to: &str) -> NewCall {
    NewCall {
        id: None,
        org_id,
        direction: Direction::Outbound,
        from: "+15550001111".into(),
        to: to.into(),
        channel: None,
        campaign_id: None,
        contact_id: None,
    }
}

fn turn(call_id: &str, n: i32, caller: &str, agent: &str) -> NewTurn {
    NewTurn {
        call_id: call_id.into(),
        turn: n,
        caller: caller.into(),
        agent: agent.into(),
        emotion: Some("neutral".into()),
        intent: Some("question".into()),
        confidence: Some(0.9),
        latency: Latency {
            endpoint: 1000,
            stt: 300,
            llm_first: 400,
            tts_first: 200,
            total: 1900,
            overhead_us: Some(1500),
            voice_to_voice: None,
        },
        interrupted: false,
        tools: Vec::new(),
    }
}

#[tokio::test]
async fn migrations_from_empty_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::empty(backend).await;
        assert_eq!(db.store.applied_migrations().await.unwrap(), 0, "{backend:?}");
        let ran = db.store.migrate().await.unwrap();
        assert_eq!(ran, db.store.known_migrations(), "{backend:?}");
        assert_eq!(db.store.migrate().await.unwrap(), 0, "{backend:?}: migrating twice is a no-op");
        db.store.ping().await.unwrap();
        assert_eq!(db.store.last_log_id().await.unwrap(), 0);
    }
}

backend_tests! {
    async fn organizations(db) {
        let store = &db.store;
        let acme = store.create_org("acme", "Acme Inc.").await.unwrap();
        assert_eq!((acme.slug.as_str(), acme.name.as_str()), ("acme", "Acme Inc."));
        assert!(matches!(store.create_org("acme", "again").await, Err(StoreError::Conflict(_))));
        assert!(matches!(store.create_org("Bad Slug", "x").await, Err(StoreError::Invalid(_))));
        store.create_org("globex", "Globex").await.unwrap();
        let slugs: Vec<String> = store.list_orgs().await.unwrap().into_iter().map(|o| o.slug).collect();
        assert_eq!(slugs, ["acme", "globex"]);
        assert_eq!(store.org_by_slug("acme").await.unwrap().unwrap(), acme);
        assert!(store.org_by_slug("nope").await.unwrap().is_none());
        assert!(matches!(store.require_org("nope").await, Err(StoreError::NotFound(m)) if m.contains("asterai org create nope")));
    }

    async fn tokens(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let token = store.insert_token("abc123", acme, "wallboard", "hmac-sha256:aa", "monitor").await.unwrap();
        assert_eq!((token.org_slug.as_str(), token.name.as_str(), token.revoked_at), ("acme", "wallboard", None));
        assert_eq!(token.scopes, ["monitor"]);
        assert_eq!(store.token("abc123").await.unwrap().unwrap().secret_hash, "hmac-sha256:aa");
        assert_eq!(store.token_by_hash("hmac-sha256:aa").await.unwrap().unwrap().id, "abc123");
        assert!(store.token_by_hash("hmac-sha256:bb").await.unwrap().is_none());
        store.insert_token("def456", acme, "cli", "$argon2id$other", "monitor,dial").await.unwrap();
        assert_eq!(store.legacy_tokens().await.unwrap(), 1);
        assert!(store.rehash_token("def456", "$argon2id$other", "hmac-sha256:cc").await.unwrap());
        assert!(!store.rehash_token("def456", "$argon2id$other", "hmac-sha256:dd").await.unwrap(), "only once");
        assert_eq!(store.legacy_tokens().await.unwrap(), 0);
        let key = store.server_key("k", "first").await.unwrap();
        assert_eq!((key.as_str(), store.server_key("k", "second").await.unwrap().as_str()), ("first", "first"));
        assert_eq!(store.list_tokens(acme).await.unwrap().len(), 2);
        assert!(store.revoke_token("abc123").await.unwrap());
        assert!(!store.revoke_token("abc123").await.unwrap(), "revoking twice reports no change");
        assert!(store.token("abc123").await.unwrap().unwrap().revoked_at.is_some());
        assert!(matches!(store.revoke_token("missing").await, Err(StoreError::NotFound(_))));
        store.touch_token("def456").await.unwrap();
        assert!(store.token("def456").await.unwrap().unwrap().last_used_at.is_some());
    }

    async fn call_lifecycle_writes_its_events(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let (call, started) = store.create_call(&new_call(acme, "+15551230000")).await.unwrap();
        assert_eq!(call.status, CallStatus::Initiated);
        assert_eq!(started.kind, EventKind::CallStarted);
        assert_eq!(started.org, "acme");
        assert_eq!(started.data["to"], "+15551230000");
        assert_eq!(started.data["direction"], "outbound");

        let ringing = store.set_call_status(acme, &call.id, CallStatus::Ringing, None).await.unwrap().unwrap();
        assert_eq!(ringing.data["previous"], "initiated");
        let answered = store.set_call_status(acme, &call.id, CallStatus::InProgress, Some("ANSWER")).await.unwrap().unwrap();
        assert_eq!((answered.data["status"].as_str(), answered.data["reason"].as_str()), (Some("in_progress"), Some("ANSWER")));
        // Statuses only move forward: a late "ringing" changes nothing.
        assert!(store.set_call_status(acme, &call.id, CallStatus::Ringing, None).await.unwrap().is_none());
        assert!(store.call_any(&call.id).await.unwrap().unwrap().answered_at.is_some());

        let t1 = store.add_turn(acme, &turn(&call.id, 1, "how much is it?", "It is 20 dollars a month.")).await.unwrap();
        assert_eq!(t1.kind, EventKind::ConversationTurn);
        assert_eq!(t1.data["latency_ms"]["total"], 1900);
        assert!(t1.data.get("interrupted").is_none(), "only an interrupted turn says so");
        // A turn the caller talked over (streaming barge-in) is stored, and published, as such.
        let talked_over = NewTurn {
            interrupted: true,
            latency: Latency { voice_to_voice: Some(640), ..Latency::default() },
            ..turn(&call.id, 2, "sounds good", "Great, I will")
        };
        let t2 = store.add_turn(acme, &talked_over).await.unwrap();
        assert_eq!((t2.data["interrupted"].as_bool(), t2.data["latency_ms"]["voice_to_voice"].as_u64()), (Some(true), Some(640)));
        // A turn keeps the tools the model called in it (JSON on both backends), and its event shows them.
        let booked = asterai::store::ToolUse {
            name: "end_call".into(),
            arguments: serde_json::json!({"outcome": "interested", "reason": "booked"}),
            result: serde_json::json!({"ended": true, "outcome": "interested"}),
        };
        let t3 = NewTurn { tools: vec![booked.clone()], ..turn(&call.id, 3, "yes please", "Great, I will send the details.") };
        let t3 = store.add_turn(acme, &t3).await.unwrap();
        assert_eq!(t3.data["tools"], serde_json::json!([serde_json::to_value(&booked).unwrap()]));
        assert_eq!(t1.data["tools"], serde_json::json!([]));

        let finish = FinishCall {
            status: CallStatus::Completed,
            reason: Some("caller hung up".into()),
            outcome: Some(Outcome::Interested),
            outcome_reason: None,
            emotion: Some("positive".into()),
            intent_score: Some(0.8),
        };
        let ended = store.finish_call(acme, &call.id, &finish).await.unwrap();
        let kinds: Vec<EventKind> = ended.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::CallStatusUpdate, EventKind::CallEnded]);
        assert_eq!(ended[1].data["outcome"], "interested");
        assert_eq!(ended[1].data["turns"], 3);
        assert!(store.finish_call(acme, &call.id, &finish).await.unwrap().is_empty(), "finishing twice appends nothing");

        let done = store.call(acme, &call.id).await.unwrap().unwrap();
        assert_eq!((done.status, done.outcome, done.turns), (CallStatus::Completed, Some(Outcome::Interested), 3));
        assert!(done.ended_at.is_some() && done.duration_s.unwrap() >= 0.0);
        assert_eq!(done.intent_score, Some(0.8));
        let turns = store.turns(acme, &call.id).await.unwrap();
        assert_eq!(turns.iter().map(|t| t.interrupted).collect::<Vec<_>>(), [false, true, false]);
        assert_eq!(turns[1].latency_ms.voice_to_voice, Some(640));
        assert_eq!((turns[0].tools.as_slice(), turns[2].tools.as_slice()), (&[][..], std::slice::from_ref(&booked)));
        assert_eq!(done.transcript.as_deref(), Some(transcript(&turns).as_str()));
        assert!(done.transcript.unwrap().starts_with("Caller: how much is it?\nAgent: It is 20 dollars a month.\n"));

        let events = store.call_events(&call.id).await.unwrap();
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "event ids increase: {ids:?}");
        assert_eq!(events.len(), 8);
    }

    async fn the_after_call_analysis_is_stored_on_the_call(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let globex = org(store, "globex").await;
        let (call, _) = store.create_call(&new_call(acme, "+15551230000")).await.unwrap();
        assert_eq!(store.call(acme, &call.id).await.unwrap().unwrap().analysis, None);
        let analysis = serde_json::json!({"summary": "Booked a demo.", "success": true, "data": {"interested": true, "budget": 500.5}, "attempts": 1});
        assert!(store.set_call_analysis(globex, &call.id, &analysis).await.is_err(), "another organization's call is not found");
        let event = store.set_call_analysis(acme, &call.id, &analysis).await.unwrap();
        assert_eq!((event.kind, event.call_id.as_deref(), &event.data), (EventKind::CallAnalyzed, Some(call.id.as_str()), &analysis));
        assert_eq!(store.call(acme, &call.id).await.unwrap().unwrap().analysis, Some(analysis.clone()));
        let listed = store.list_calls(acme, &CallFilter::default()).await.unwrap();
        assert_eq!(listed.calls[0].analysis, Some(analysis));
        let kinds: Vec<EventKind> = store.call_events(&call.id).await.unwrap().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::CallStarted, EventKind::CallAnalyzed]);
    }

    async fn calls_are_scoped_to_their_organization(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let globex = org(store, "globex").await;
        let (call, _) = store.create_call(&new_call(acme, "+15551230000")).await.unwrap();
        assert!(store.call(acme, &call.id).await.unwrap().is_some());
        assert!(store.call(globex, &call.id).await.unwrap().is_none());
        assert!(store.list_calls(globex, &CallFilter::default()).await.unwrap().calls.is_empty());
        assert_eq!(store.events_after(globex, 0, 100).await.unwrap().events.len(), 0);
        assert_eq!(store.events_after(acme, 0, 100).await.unwrap().events.len(), 1);
    }

    async fn listing_filters_and_pages(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let campaign = store.create_campaign(acme, "spring", &serde_json::json!({})).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut new = new_call(acme, &format!("+1555123000{i}"));
            if i % 2 == 0 {
                new.campaign_id = Some(campaign.id);
            }
            let (call, _) = store.create_call(&new).await.unwrap();
            if i < 3 {
                store.set_call_status(acme, &call.id, CallStatus::Busy, Some("17")).await.unwrap();
            }
            ids.push(call.id);
        }
        let busy = store.list_calls(acme, &CallFilter { status: Some(CallStatus::Busy), ..Default::default() }).await.unwrap();
        assert_eq!(busy.calls.len(), 3);
        let in_campaign = store.list_calls(acme, &CallFilter { campaign_id: Some(campaign.id), ..Default::default() }).await.unwrap();
        assert_eq!(in_campaign.calls.len(), 4);
        assert!(in_campaign.calls.iter().all(|c| c.campaign_name.as_deref() == Some("spring")));
        let active = store.list_calls(acme, &CallFilter { active: true, ..Default::default() }).await.unwrap();
        assert_eq!(active.calls.len(), 4, "busy calls are over");
        assert!(active.calls.iter().all(|c| c.status == CallStatus::Initiated));
        let started = store.call_events(&ids[0]).await.unwrap();
        assert_eq!(started[0].data["campaign_name"], "spring");

        // Pages of 3, newest first, covering every call exactly once.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.list_calls(acme, &CallFilter { limit: Some(3), cursor: cursor.clone(), ..Default::default() }).await.unwrap();
            seen.extend(page.calls.iter().map(|c| c.id.clone()));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(seen, expected);

        let future = chrono::Utc::now() + chrono::Duration::hours(1);
        assert!(store.list_calls(acme, &CallFilter { since: Some(future), ..Default::default() }).await.unwrap().calls.is_empty());
        assert_eq!(store.list_calls(acme, &CallFilter { until: Some(future), ..Default::default() }).await.unwrap().calls.len(), 7);
        assert!(matches!(store.list_calls(acme, &CallFilter { limit: Some(0), ..Default::default() }).await, Err(StoreError::Invalid(_))));
        assert!(matches!(store.list_calls(acme, &CallFilter { cursor: Some("garbage!".into()), ..Default::default() }).await, Err(StoreError::Invalid(_))));
    }

    async fn events_read_back_in_order(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        for i in 0..5 {
            store.create_call(&new_call(acme, &format!("+1555123100{i}"))).await.unwrap();
        }
        let all = store.events_after(acme, 0, 100).await.unwrap().events;
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5], "each organization counts from 1");
        let after = store.events_after(acme, all[1].id, 2).await.unwrap();
        assert_eq!(after.events.iter().map(|e| e.id).collect::<Vec<_>>(), [all[2].id, all[3].id]);
        assert!(after.full && after.next == all[3].id);
        assert_eq!(store.last_event_id(acme).await.unwrap(), all[4].id);
        let json = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(json["type"], "call_started");
        assert_eq!(json["org"], "acme");
        assert!(json["at"].as_str().unwrap().ends_with('Z'));
    }

    async fn concurrent_writers_get_distinct_ordered_ids(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.create_call(&new_call(acme, &format!("+155512320{i:02}"))).await.unwrap().1.id }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 40);
        let stored: Vec<i64> = store.events_after(acme, 0, 100).await.unwrap().events.iter().map(|e| e.id).collect();
        assert_eq!(stored, ids);
    }

    async fn do_not_call_list(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let globex = org(store, "globex").await;
        assert!(store.add_dnc(acme, "+15551230000", Some("asked on a call"), "caller").await.unwrap());
        assert!(!store.add_dnc(acme, "+15551230000", None, "cli").await.unwrap());
        assert!(store.is_dnc(acme, "+15551230000").await.unwrap());
        assert!(!store.is_dnc(globex, "+15551230000").await.unwrap(), "each organization has its own list");
        assert!(matches!(store.add_dnc(acme, "555-1234", None, "cli").await, Err(StoreError::Invalid(_))));
        let list = store.list_dnc(acme).await.unwrap();
        assert_eq!((list.len(), list[0].source.as_str()), (1, "caller"));
        assert!(store.remove_dnc(acme, "+15551230000").await.unwrap());
        assert!(!store.remove_dnc(acme, "+15551230000").await.unwrap());
    }

    async fn campaigns(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let spring = store.create_campaign(acme, "spring", &serde_json::json!({"max_concurrent": 5})).await.unwrap();
        assert_eq!(spring.settings["max_concurrent"], 5);
        assert!(matches!(store.create_campaign(acme, "spring", &serde_json::json!({})).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.list_campaigns(acme).await.unwrap().len(), 1);
        assert_eq!(store.campaign(acme, spring.id).await.unwrap().unwrap().name, "spring");
    }

    async fn unfinished_calls_are_listed(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let (a, _) = store.create_call(&new_call(acme, "+15551230001")).await.unwrap();
        let (b, _) = store.create_call(&new_call(acme, "+15551230002")).await.unwrap();
        let finish = FinishCall { status: CallStatus::Failed, reason: Some("0 Unknown".into()), outcome: None, outcome_reason: None, emotion: None, intent_score: None };
        store.finish_call(acme, &a.id, &finish).await.unwrap();
        let open: Vec<String> = store.unfinished_calls(None).await.unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(open, [b.id]);
    }
}
