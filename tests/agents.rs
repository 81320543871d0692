//! Agents: definitions checked like the config, versions that are never changed in place,
//! rollbacks, the organization's default, isolation between organizations, the REST routes and
//! their scopes, and the CLI. Both backends.

mod support;

use asterai::agent::{self, AgentError, AgentSpec};
use asterai::store::{Direction, NewCall, Store, StoreError};
use support::db::{Backend, TestDb};

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

fn spec(text: &str) -> AgentSpec {
    AgentSpec::parse(text).unwrap()
}

async fn org(store: &Store, slug: &str) -> i64 {
    store.create_org(slug, &format!("{slug} Inc.")).await.unwrap().id
}

#[tokio::test]
async fn versions_rollback_and_default_on_both_backends() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        let acme = org(store, "acme").await;

        let created =
            agent::create(store, acme, &spec("name = \"sales\"\ngreeting_inbound = \"Hi, {agent_name} here.\""), false)
                .await
                .unwrap();
        assert_eq!((created.name.as_str(), created.version, created.default), ("sales", 1, false));
        assert_eq!(created.spec, serde_json::json!({"greeting_inbound": "Hi, {agent_name} here."}));

        let edited =
            agent::update(store, acme, "sales", &spec("greeting_inbound = \"Hello!\"\n[limits]\nmax_turns = 4"), false)
                .await
                .unwrap();
        assert_eq!(edited.version, 2, "{backend:?}");
        assert_eq!(edited.spec["limits"]["max_turns"], 4);

        let rolled = store.rollback_agent(acme, "sales", 1).await.unwrap();
        assert_eq!(rolled.version, 3);
        assert_eq!(rolled.spec, created.spec);
        let versions = store.agent_versions(acme, "sales").await.unwrap();
        assert_eq!(
            versions.iter().map(|v| (v.version, v.note.as_str())).collect::<Vec<_>>(),
            [(1, "created"), (2, "edited"), (3, "rollback to 1")]
        );
        // Version 2 is kept as it was.
        assert_eq!(store.agent_version(acme, "sales", 2).await.unwrap().unwrap().spec, edited.spec);
        assert!(matches!(store.rollback_agent(acme, "sales", 9).await, Err(StoreError::NotFound(_))));

        // A second agent, made the default; then the default moves.
        assert!(store.default_agent(acme).await.unwrap().is_none());
        agent::create(store, acme, &spec("name = \"support\""), true).await.unwrap();
        assert_eq!(store.default_agent(acme).await.unwrap().unwrap().name, "support");
        store.set_default_agent(acme, Some("sales")).await.unwrap();
        let list = store.list_agents(acme).await.unwrap();
        assert_eq!(
            list.iter().map(|a| (a.name.as_str(), a.default)).collect::<Vec<_>>(),
            [("sales", true), ("support", false)]
        );
        store.set_default_agent(acme, None).await.unwrap();
        assert!(store.default_agent(acme).await.unwrap().is_none());

        // A name used twice, a bad template and a secret in clear are refused, nothing saved.
        assert!(matches!(
            agent::create(store, acme, &spec("name = \"sales\""), false).await,
            Err(AgentError::Store(StoreError::Conflict(_)))
        ));
        let bad = agent::update(store, acme, "sales", &spec("greeting_outbound = \"Hi {nickname}\""), false).await;
        assert!(matches!(&bad, Err(AgentError::Invalid(m)) if m.contains("unknown variable {nickname}")), "{bad:?}");
        let bad = agent::update(store, acme, "sales", &spec("[voice]\napi_key = \"xi-secret\""), false).await;
        assert!(matches!(&bad, Err(AgentError::Invalid(m)) if !m.contains("xi-secret")), "{bad:?}");
        assert_eq!(store.agent(acme, "sales").await.unwrap().unwrap().version, 3);

        // A call records the version it ran.
        let call = store
            .create_call(&NewCall {
                id: None,
                org_id: acme,
                direction: Direction::Inbound,
                from: "+15550001111".into(),
                to: "5550100".into(),
                channel: None,
                campaign_id: None,
                contact_id: None,
            })
            .await
            .unwrap()
            .0;
        store.set_call_agent(acme, &call.id, "sales", 3).await.unwrap();
        let call = store.call(acme, &call.id).await.unwrap().unwrap();
        assert_eq!((call.agent.as_deref(), call.agent_version), (Some("sales"), Some(3)));
    }
}

#[tokio::test]
async fn organizations_never_see_each_others_agents() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        let acme = org(store, "acme").await;
        let globex = org(store, "globex").await;
        agent::create(store, globex, &spec("name = \"secret\"\nsystem_prompt = \"globex only\""), true).await.unwrap();
        // The same name in another organization is another agent.
        let mine = agent::create(store, acme, &spec("name = \"secret\""), false).await.unwrap();
        assert_eq!(mine.version, 1);

        assert!(store.agent(acme, "secret").await.unwrap().unwrap().spec.get("system_prompt").is_none());
        assert_eq!(store.list_agents(acme).await.unwrap().len(), 1);
        assert!(store.default_agent(acme).await.unwrap().is_none(), "{backend:?}: globex's default is not acme's");
        assert!(matches!(store.set_default_agent(acme, Some("nope")).await, Err(StoreError::NotFound(_))));
        store.update_agent(acme, "secret", &serde_json::json!({"greeting_inbound": "acme"})).await.unwrap();
        store.rollback_agent(acme, "secret", 1).await.unwrap();
        let theirs = store.agent(globex, "secret").await.unwrap().unwrap();
        assert_eq!((theirs.version, theirs.default), (1, true));
        assert_eq!(store.agent_versions(globex, "secret").await.unwrap().len(), 1);

        let call = store
            .create_call(&NewCall {
                id: None,
                org_id: globex,
                direction: Direction::Inbound,
                from: "+15550001111".into(),
                to: "5550100".into(),
                channel: None,
                campaign_id: None,
                contact_id: None,
            })
            .await
            .unwrap()
            .0;
        assert!(matches!(store.set_call_agent(acme, &call.id, "secret", 1).await, Err(StoreError::NotFound(_))));
        assert_eq!(store.call(globex, &call.id).await.unwrap().unwrap().agent, None);
    }
}

#[tokio::test]
async fn rest_routes_scopes_and_isolation() {
    use asterai::auth::Scopes;
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let daemon = support::http::TestDaemon::start(db.store.clone()).await;
        let admin = daemon.token("acme").await;
        let monitor = daemon.token_with("acme", Scopes::parse("monitor").unwrap()).await;
        let other = daemon.token("globex").await;
        let http = reqwest::Client::new();
        let url = |path: &str| daemon.url(path);

        let body = r#"{"name": "sales", "greeting_inbound": "Hi, {first_name|there}!", "limits": {"max_turns": 5}}"#;
        let r = http.post(url("/v1/agents")).bearer_auth(&monitor).body(body).send().await.unwrap();
        assert_eq!(r.status(), 403, "writing takes admin");
        let r = http.post(url("/v1/agents?default=true")).bearer_auth(&admin).body(body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let created: serde_json::Value = r.json().await.unwrap();
        assert_eq!((created["version"].as_i64(), created["default"].as_bool()), (Some(1), Some(true)));

        // Bad definitions: 400 naming the key; nothing saved.
        for (bad, says) in [
            (r#"{"greeting_inbound": "Hi {nick}"}"#, "unknown variable {nick}"),
            (r#"{"phrases": {"bye": "x"}}"#, "phrases.bye: unknown field"),
            (r#"{"responder": {"api_key": "sk-123"}}"#, "responder.api_key"),
            (r#"{"name": "other"}"#, "not renamed"),
            ("max_turns = 3", "expected a JSON agent definition"),
        ] {
            let r = http.put(url("/v1/agents/sales")).bearer_auth(&admin).body(bad).send().await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
            let text = r.text().await.unwrap();
            assert!(text.contains(says) && !text.contains("sk-123"), "{bad}: {text}");
        }
        let r = http
            .put(url("/v1/agents/sales"))
            .bearer_auth(&admin)
            .body(r#"{"greeting_inbound": "Hello"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let edited: serde_json::Value = r.json().await.unwrap();
        assert_eq!(edited["version"], 2);

        let r = http
            .post(url("/v1/agents/sales/rollback"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"version": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let rolled: serde_json::Value = r.json().await.unwrap();
        assert_eq!((rolled["version"].as_i64(), &rolled["spec"]), (Some(3), &created["spec"]));

        let versions: serde_json::Value = http
            .get(url("/v1/agents/sales/versions"))
            .bearer_auth(&monitor)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(versions["versions"].as_array().unwrap().len(), 3);
        let v2: serde_json::Value = http
            .get(url("/v1/agents/sales/versions/2"))
            .bearer_auth(&monitor)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v2["spec"]["greeting_inbound"], "Hello");
        let listed: serde_json::Value =
            http.get(url("/v1/agents")).bearer_auth(&monitor).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["agents"][0]["name"], "sales");

        // Another organization sees none of it and changes none of it.
        for path in ["/v1/agents/sales", "/v1/agents/sales/versions", "/v1/agents/sales/versions/1"] {
            let r = http.get(url(path)).bearer_auth(&other).send().await.unwrap();
            assert_eq!(r.status(), 404, "{path}");
        }
        let r = http.put(url("/v1/agents/sales")).bearer_auth(&other).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 404);
        let r = http
            .post(url("/v1/agents/sales/rollback"))
            .bearer_auth(&other)
            .json(&serde_json::json!({"version": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = http.post(url("/v1/agents/sales/default")).bearer_auth(&other).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let theirs: serde_json::Value =
            http.get(url("/v1/agents")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
        assert_eq!(theirs["agents"], serde_json::json!([]));
        let acme = db.store.org_by_slug("acme").await.unwrap().unwrap().id;
        assert_eq!(db.store.agent(acme, "sales").await.unwrap().unwrap().version, 3);
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_create_edit_show_versions_rollback() {
    use support::daemon::command;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = command(dir.path()).args(args).output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    assert!(run(&["org", "create", "acme"]).0);
    let file = dir.path().join("sales.toml");
    std::fs::write(&file, "name = \"sales\"\ncontact_fields = [\"plan\"]\ngreeting_outbound = \"Hi {first_name}, about your {plan} plan\"\n[limits]\nmax_turns = 6\nmax_duration = \"5m\"\n").unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, err) = run(&["agent", "create", f, "--default"]);
    assert!(ok, "{err}");
    assert!(out.contains("agent sales version 1 (default) created in acme"), "{out}");

    // show prints what edit reads back.
    let (ok, shown, err) = run(&["agent", "show", "sales"]);
    assert!(ok, "{err}");
    assert!(shown.contains("max_duration = \"5m\"") && shown.contains("name = \"sales\""), "{shown}");
    std::fs::write(&file, shown.replace("max_turns = 6", "max_turns = 8")).unwrap();
    let (ok, out, err) = run(&["agent", "edit", f]);
    assert!(ok && out.contains("agent sales version 2"), "{out}{err}");

    // Unknown key and unknown variable: named, refused, nothing saved.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name": "sales", "limits": {"max_turn": 3}}"#).unwrap();
    let (ok, _, err) = run(&["agent", "edit", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("limits.max_turn: unknown field"), "{err}");
    std::fs::write(&bad, r#"{"name": "sales", "greeting_inbound": "Hi {plan_name}"}"#).unwrap();
    let (ok, _, err) = run(&["agent", "edit", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown variable {plan_name}"), "{err}");

    let (ok, out, _) = run(&["agent", "rollback", "sales", "1"]);
    assert!(ok && out.contains("version 3"), "{out}");
    let (ok, out, _) = run(&["agent", "versions", "sales"]);
    assert!(ok && out.contains("created") && out.contains("edited") && out.contains("rollback to 1"), "{out}");
    let (ok, out, _) = run(&["agent", "show", "sales", "2", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && shown["spec"]["limits"]["max_turns"] == 8 && shown["current_version"] == 3, "{out}");
    let (ok, out, _) = run(&["agent", "list"]);
    assert!(ok && out.contains("sales") && out.contains("v3") && out.contains("default"), "{out}");
    let (ok, _, _) = run(&["agent", "default", "--builtin"]);
    assert!(ok);
    let (_, out, _) = run(&["agent", "list", "--json"]);
    assert!(out.contains("\"default\": false"), "{out}");

    // `calls show` names the agent version a call ran.
    let url = format!("sqlite://{}", dir.path().join("asterai.db").display());
    let store = Store::connect(&support::db::options(&url)).await.unwrap();
    let acme = store.org_by_slug("acme").await.unwrap().unwrap().id;
    let new = NewCall {
        id: None,
        org_id: acme,
        direction: Direction::Inbound,
        from: "+15550001111".into(),
        to: "5550100".into(),
        channel: None,
        campaign_id: None,
        contact_id: None,
    };
    let (call, _) = store.create_call(&new).await.unwrap();
    let (_, out, _) = run(&["calls", "show", &call.id]);
    assert!(out.contains("agent     built-in"), "{out}");
    store.set_call_agent(acme, &call.id, "sales", 2).await.unwrap();
    store.close().await;
    let (_, out, _) = run(&["calls", "show", &call.id]);
    assert!(out.contains("agent     sales version 2"), "{out}");
}

#[tokio::test]
async fn choosing_route_then_campaign_then_default_then_built_in() {
    use asterai::agent::ChosenBy;
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        let acme = org(store, "acme").await;
        let globex = org(store, "globex").await;
        agent::create(store, globex, &spec("name = \"theirs\""), true).await.unwrap();
        let chosen = |route: Option<&'static str>, campaign: Option<i64>| async move {
            let (agent, by) = agent::choose(store, acme, route, campaign).await.unwrap();
            (agent.map(|a| a.name), by)
        };
        assert_eq!(chosen(None, None).await, (None, ChosenBy::BuiltIn), "{backend:?}: globex's default is not acme's");
        assert_eq!(chosen(Some("theirs"), None).await, (None, ChosenBy::BuiltIn));

        agent::create(store, acme, &spec("name = \"house\""), true).await.unwrap();
        agent::create(store, acme, &spec("name = \"sales\""), false).await.unwrap();
        agent::create(store, acme, &spec("name = \"vip\""), false).await.unwrap();
        let campaign = store.create_campaign(acme, "spring", &serde_json::json!({"agent": "sales"})).await.unwrap();
        let plain = store.create_campaign(acme, "plain", &serde_json::json!({})).await.unwrap();
        let theirs = store.create_campaign(globex, "theirs", &serde_json::json!({"agent": "theirs"})).await.unwrap();

        assert_eq!(chosen(Some("vip"), Some(campaign.id)).await, (Some("vip".into()), ChosenBy::Route));
        assert_eq!(chosen(None, Some(campaign.id)).await, (Some("sales".into()), ChosenBy::Campaign));
        assert_eq!(chosen(Some("nope"), Some(campaign.id)).await, (Some("sales".into()), ChosenBy::Campaign));
        assert_eq!(chosen(None, Some(plain.id)).await, (Some("house".into()), ChosenBy::Default));
        assert_eq!(
            chosen(None, Some(theirs.id)).await,
            (Some("house".into()), ChosenBy::Default),
            "another organization's campaign"
        );
        assert_eq!(chosen(None, None).await, (Some("house".into()), ChosenBy::Default));
    }
}
