//! `GET /v1/openapi.json` describes the routes there are, with the scopes they enforce and the
//! fields they answer: the document is valid OpenAPI 3.1 in shape (every operation answers,
//! every `$ref` resolves, every path parameter is declared), every documented operation is
//! routed and refuses a token without its documented scope, no method is routed that is not
//! documented, the README's route table lists the same routes and scopes, and real answers
//! (a seeded day of calls, a campaign, an agent, the do-not-call list) have exactly the fields
//! their schemas name.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use asterai::auth::{Scope, Scopes};
use serde_json::{Value, json};
use support::db::{Backend, TestDb};
use support::http::TestDaemon;

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The document as a client gets it: no token, `application/json`.
async fn fetch(daemon: &TestDaemon) -> Value {
    let response = reqwest::get(daemon.url("/v1/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200, "the document needs no token");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// Every operation of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for (method, operation) in item.as_object().expect("a path item is an object") {
            found.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    found
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|part| part.strip_prefix('{')?.strip_suffix('}')).collect()
}

/// Every `$ref` in `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                if key == "$ref" {
                    out.push((at.to_owned(), item.as_str().unwrap_or_default().to_owned()));
                } else {
                    refs(item, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => items.iter().enumerate().for_each(|(i, item)| refs(item, &format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// The value a JSON pointer (`#/components/schemas/Call`) names in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let doc = fetch(&daemon).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), "info has a title and version");
    for scheme in ["bearer", "queryToken"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "security scheme {scheme}");
    }
    for schema in ["Call", "CallDetail", "Turn", "Campaign", "CampaignDetail", "Agent", "AgentVersion", "Error"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema}");
    }

    let mut ids = BTreeSet::new();
    let operations = operations(&doc);
    assert!(operations.len() >= 28, "every route is described; found {}", operations.len());
    for (path, method, operation) in &operations {
        let name = format!("{} {path}", method.to_uppercase());
        assert!(METHODS.contains(&method.as_str()), "{name}: a method the router serves");
        assert!(ids.insert(operation["operationId"].as_str().unwrap().to_owned()), "{name}: operationId is unique");
        assert!(operation["summary"].is_string(), "{name} has a summary");
        let responses = operation["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{name} has responses");
        for (status, response) in responses {
            assert!(status == "default" || status.parse::<u16>().is_ok(), "{name}: status {status}");
            assert!(response["description"].is_string(), "{name} {status} has a description");
        }
        assert!(responses.keys().any(|s| s.starts_with('1') || s.starts_with('2')), "{name} has a success answer");

        // Each `{name}` of the path is a required path parameter, and nothing else is one.
        let params = operation["parameters"].as_array().cloned().unwrap_or_default();
        let declared: BTreeSet<&str> =
            params.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(declared, path_params(path).into_iter().collect(), "{name}: path parameters");
        for param in &params {
            assert!(param["schema"].is_object(), "{name}: parameter {} has a schema", param["name"]);
            if param["in"] == "path" {
                assert_eq!(param["required"], true, "{name}: path parameter {} is required", param["name"]);
            }
        }

        // The scope: named, required by a security requirement, and 401/403 described.
        match operation["x-scope"].as_str() {
            Some(scope) => {
                assert!(scope.parse::<Scope>().is_ok(), "{name}: x-scope {scope} is a scope");
                assert!(operation["security"][0]["bearer"].is_array(), "{name}: needs the bearer token");
                assert!(operation["description"].as_str().unwrap().contains(&format!("`{scope}`")), "{name}");
                assert!(responses.contains_key("401") && responses.contains_key("403"), "{name}: 401 and 403");
            }
            None => assert_eq!(operation["security"], json!([]), "{name}: no token, said explicitly"),
        }
    }

    let mut references = Vec::new();
    refs(&doc, "#", &mut references);
    assert!(references.len() > 50, "the document uses its components");
    for (at, reference) in references {
        assert!(resolve(&doc, &reference).is_some(), "{at}: $ref {reference} resolves");
    }
    daemon.stop().await;
}

/// A concrete URL for each value of the path's parameters (every value of an `enum`).
fn urls(path: &str, operation: &Value) -> Vec<String> {
    let mut urls = vec![path.to_owned()];
    for param in operation["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
        let name = param["name"].as_str().unwrap();
        let values: Vec<String> = match param["schema"]["enum"].as_array() {
            Some(values) => values.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
            None if param["schema"]["type"] == "integer" => vec!["1".into()],
            None if name == "number" => vec!["%2B15550001111".into()],
            None => vec!["nobody".into()],
        };
        urls = urls.iter().flat_map(|url| values.iter().map(move |v| url.replace(&format!("{{{name}}}"), v))).collect();
    }
    urls
}

async fn send(http: &reqwest::Client, method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// Not the router's own refusals: an unknown route (the fallback's "no route") or method.
fn routed(status: u16, body: &str) -> bool {
    status != 405 && !(status == 404 && body.contains("no route"))
}

#[tokio::test]
async fn every_operation_is_routed_with_its_documented_scope_and_nothing_else_is() {
    let db = TestDb::new(Backend::Sqlite).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let doc = fetch(&daemon).await;
    let http = reqwest::Client::new();
    let mut tokens = BTreeMap::new();
    for scope in Scope::ALL {
        let only = daemon.token_with("acme", Scopes::from_iter([scope])).await;
        let others = daemon.token_with("acme", Scopes::from_iter(Scope::ALL.into_iter().filter(|s| *s != scope))).await;
        tokens.insert(scope.as_str(), (only, others));
    }

    let mut paths: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, method, operation) in operations(&doc) {
        paths.entry(path.clone()).or_default().insert(method.clone());
        for url in urls(&path, &operation) {
            let name = format!("{} {url}", method.to_uppercase());
            let url = daemon.url(&url);
            let (status, body) = send(&http, &method, &url, None).await;
            match operation["x-scope"].as_str() {
                None => assert!(routed(status, &body) && status != 401, "{name} needs no token: {status} {body}"),
                Some(scope) => {
                    assert_eq!(status, 401, "{name} without a token: {body}");
                    let (only, others) = &tokens[scope];
                    let (status, body) = send(&http, &method, &url, Some(others)).await;
                    assert_eq!(status, 403, "{name} with every scope but {scope}: {body}");
                    assert!(body.contains(&format!("`{scope}`")), "{name}: the 403 names {scope}: {body}");
                    let (status, body) = send(&http, &method, &url, Some(only)).await;
                    assert!(
                        routed(status, &body) && status != 401 && status != 403,
                        "{name} with a {scope} token is routed and allowed: {status} {body}"
                    );
                }
            }
        }
    }
    // The router serves no method the document does not describe. (It has no path the document
    // lacks either: `the_router_is_built_from_the_table_only` below.)
    let (admin, _) = &tokens["admin"];
    for (path, methods) in &paths {
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            let url = path.replace("{id}", "1").replace(['{', '}'], "");
            let (status, body) = send(&http, method, &daemon.url(&url), Some(admin)).await;
            assert_eq!(status, 405, "{} {url} is not documented, so not routed: {body}", method.to_uppercase());
        }
    }
    daemon.stop().await;
}

#[test]
fn the_router_is_built_from_the_table_only() {
    // `http::router` adds each operation of `openapi::operations` and has no route of its own:
    // a `.route(` anywhere else under src/http would be a route the document does not know.
    let mut found = Vec::new();
    for entry in std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for needle in [".route(", ".route_service(", ".nest(", ".nest_service(", ".merge("] {
                found.extend(text.matches(needle).map(|_| format!("{} {needle}", path.display())));
            }
        }
    }
    assert_eq!(found.len(), 1, "one `.route(` (the loop over the table) in src/http; found {found:?}");
    assert!(found[0].ends_with("mod.rs .route("), "{found:?}");
}

/// The routes of the README's table under "HTTP API and live feed": (METHOD path, scope).
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = read("README.md");
    let section = readme.split("## HTTP API and live feed").nth(1).expect("the README has the API section");
    let table = section.split("| route | scope | what |").nth(1).expect("the API section has its route table");
    let mut routes = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let scope = cells[2].trim_matches('`').to_owned();
        let (mut method, mut last) = (String::new(), String::new());
        for (i, span) in cells[1].split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            // `[?default=true]` and `[?since=&until=]` are query parameters, not paths.
            let span = span.split('[').next().unwrap();
            let path = match span.split_once(' ') {
                Some((m, path)) => {
                    method = m.to_owned();
                    path.to_owned()
                }
                // `…/pause`: the previous path with its last segment replaced.
                None => {
                    let rest = span.strip_prefix('…').expect("a route or a `…/` continuation");
                    format!("{}{rest}", &last[..last.rfind('/').unwrap()])
                }
            };
            last = path.clone();
            routes.insert((format!("{method} {path}"), scope.clone()));
        }
    }
    routes
}

#[test]
fn the_readme_table_lists_the_documented_routes_and_scopes() {
    let doc = asterai::http::openapi::document();
    let readme = readme_routes();
    assert!(readme.len() > 20, "the README's table was read: {readme:?}");
    let mut documented = BTreeSet::new();
    for (path, method, operation) in operations(&doc) {
        let scope = operation["x-scope"].as_str().unwrap_or("none").to_owned();
        let route = format!("{} {path}", method.to_uppercase());
        // The README writes `/v1/campaigns/{id}/start`, `…/pause`, `…/stop` for `{action}`.
        let spelled: Vec<String> = if readme.contains(&(route.clone(), scope.clone())) {
            vec![route]
        } else {
            urls(&path, &operation)
                .into_iter()
                .map(|url| url.replace("/1/", "/{id}/").replace("/1", "/{id}"))
                .map(|url| format!("{} {url}", method.to_uppercase()))
                .collect()
        };
        for route in spelled {
            assert!(
                readme.contains(&(route.clone(), scope.clone())),
                "the README's table lists {route} with scope {scope}"
            );
            documented.insert((route, scope.clone()));
        }
    }
    let undocumented: Vec<_> = readme.difference(&documented).collect();
    assert!(undocumented.is_empty(), "README rows the document lacks: {undocumented:?}");
    assert!(read("README.md").contains("/v1/openapi.json"), "the README links the document");
}

/// Whether `value` is what `schema` says, as far as this document's schemas go: `type`, `enum`,
/// `const`, `oneOf`, `required`, `properties`, `additionalProperties` and `items`.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = match schema["$ref"].as_str() {
        Some(reference) => resolve(doc, reference).unwrap(),
        None => schema,
    };
    if let Some(choices) = schema["oneOf"].as_array() {
        let fits = choices.iter().any(|choice| {
            let mut mine = Vec::new();
            check(doc, choice, value, at, &mut mine);
            mine.is_empty()
        });
        if !fits {
            errors.push(format!("{at}: {value} fits none of {choices:?}"));
        }
        return;
    }
    if let Some(kind) = schema.get("type") {
        let kinds: Vec<&str> = match kind {
            Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
            other => vec![other.as_str().unwrap()],
        };
        let fits = kinds.iter().any(|kind| match *kind {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            other => panic!("unknown type {other}"),
        });
        if !fits {
            errors.push(format!("{at}: {value} is not {kinds:?}"));
            return;
        }
    }
    if let Some(values) = schema["enum"].as_array()
        && !value.is_null()
        && !values.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {values:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        errors.push(format!("{at}: {value} is not {constant}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                errors.push(format!("{at}: the answer lacks {name}"));
            }
        }
        for (key, item) in object {
            match schema["properties"].get(key) {
                Some(property) => check(doc, property, item, &format!("{at}.{key}"), errors),
                None if schema["additionalProperties"] == false => {
                    errors.push(format!("{at}: the answer has {key:?}, which the schema does not name"))
                }
                None if schema["additionalProperties"].is_object() => {
                    check(doc, &schema["additionalProperties"], item, &format!("{at}.{key}"), errors)
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

#[tokio::test]
async fn answers_have_exactly_the_fields_their_schemas_name() {
    let db = TestDb::new(Backend::Sqlite).await;
    let seeded = support::seed::seed(&db.store).await;
    let daemon = TestDaemon::start(db.store.clone()).await;
    let doc = fetch(&daemon).await;
    let token = daemon.token("acme").await;
    let http = reqwest::Client::new();

    let agent = r#"{"name": "sales", "greeting_inbound": "Hi, {first_name|there}!"}"#;
    let created = http.post(daemon.url("/v1/agents")).bearer_auth(&token).body(agent).send().await.unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let dnc = json!({"number": "+15550009999", "reason": "asked"});
    let added = http.post(daemon.url("/v1/dnc")).bearer_auth(&token).json(&dnc).send().await.unwrap();
    assert_eq!(added.status(), 201);
    let campaign = seeded.campaign_id;
    let csv = "phone,first_name\n+15550101010,Ann\nnot a number,Bo\n+15550101010,Ann\n";
    let import = daemon.url(&format!("/v1/campaigns/{campaign}/contacts"));
    let imported = http.post(import).bearer_auth(&token).body(csv).send().await.unwrap();
    assert_eq!(imported.status(), 200);
    let report: Value = imported.json().await.unwrap();
    assert!(!report["rejected"].as_array().unwrap().is_empty(), "the report shows a rejected row: {report}");

    let mut checked = 0;
    let mut errors = Vec::new();
    let paths = [
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/v1/calls".to_owned(),
        format!("/v1/calls/{}", seeded.tool_call),
        format!("/v1/calls/{}", seeded.failed_call),
        "/v1/stats".to_owned(),
        "/v1/campaigns".to_owned(),
        format!("/v1/campaigns/{campaign}"),
        format!("/v1/campaigns/{campaign}/stats"),
        "/v1/agents".to_owned(),
        "/v1/agents/sales".to_owned(),
        "/v1/agents/sales/versions".to_owned(),
        "/v1/agents/sales/versions/1".to_owned(),
        "/v1/dnc".to_owned(),
        "/v1/token".to_owned(),
        "/v1/calls/no-such-call".to_owned(),
    ];
    for url in paths {
        let response = http.get(daemon.url(&url)).bearer_auth(&token).send().await.unwrap();
        let status = response.status().as_u16().to_string();
        let body: Value = response.json().await.unwrap();
        // The documented operation whose template matches this URL.
        let (path, _, operation) = operations(&doc)
            .into_iter()
            .filter(|(_, method, _)| method == "get")
            .find(|(path, _, _)| {
                let (a, b): (Vec<_>, Vec<_>) = (path.split('/').collect(), url.split('/').collect());
                a.len() == b.len() && a.iter().zip(&b).all(|(p, u)| p.starts_with('{') || p == u)
            })
            .unwrap_or_else(|| panic!("GET {url} is documented"));
        let response = &operation["responses"][&status];
        assert!(response.is_object(), "GET {url} ({path}) documents its {status} answer");
        check(&doc, &response["content"]["application/json"]["schema"], &body, &format!("GET {url}"), &mut errors);
        checked += 1;
    }
    // The answers of the writes above too.
    let schemas = &doc["components"]["schemas"];
    check(&doc, &schemas["ImportReport"], &report, "import", &mut errors);
    assert!(errors.is_empty(), "answers and schemas differ:\n{}", errors.join("\n"));
    assert_eq!(checked, 16);
    daemon.stop().await;
}
