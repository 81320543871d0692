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
