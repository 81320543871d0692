//! The routes, in one table ([`operations`]), and the OpenAPI 3.1 document built from it, served
//! at `GET /v1/openapi.json`.
//!
//! Each [`Operation`] is one method on one path: its handler, the scope its token needs, and
//! what OpenAPI says of it (summary, parameters, body, answers). [`super::router`] is built from
//! this table and from nothing else, so a route cannot exist without its description, nor a
//! description without its route; `tests/openapi.rs` checks that each documented scope is the
//! one its handler enforces, that the README's table lists the same routes, and that real
//! answers have the fields the schemas name. **To add a route, add one entry to
//! [`operations`]** (and a row to the README's table).
//!
//! Why not `utoipa`: its derive and path macros would put a proc-macro crate and attributes on
//! every handler and store type into a build that runs on two shared cores, to produce the same
//! JSON this module writes with `serde_json::json!`. The handlers read their parameters by hand
//! (a `HashMap` query with its own error messages) and build several answers as JSON values
//! (a call with its turns, a campaign with its counts), which a derive could not see anyway. The
//! price is that a schema is written beside its struct rather than derived from it;
//! `tests/openapi.rs` compares real answers with the schemas so that a new field is not missed.
//!
//! The document needs no token: it describes the API and discloses no organization's data.

use std::sync::LazyLock;

use axum::handler::Handler;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::{Map, Value, json};

use super::{AppState, agents, api, compliance, dialer, feed, health, monitor, recordings, supervise};
use crate::auth::Scope;
use crate::store::{CallStatus, Direction, Outcome};

/// An operation's HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    /// As OpenAPI writes it (the key of the operation in its path item).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// Which body limit a route has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// `http.max_body_bytes`.
    Default,
    /// `http.max_import_bytes`: a campaign's CSV contacts.
    Import,
}

/// One method on one path: how it is served and how it is described.
pub struct Operation {
    pub method: Method,
    /// axum's pattern, which is also OpenAPI's path template (`/v1/calls/{id}`).
    pub path: &'static str,
    /// The scope its token needs; `None`: no token.
    pub scope: Option<Scope>,
    /// The WebSocket feed, which also takes its token as `?token=`.
    pub query_token: bool,
    pub limit: BodyLimit,
    /// OpenAPI's operation object, without `security` and the answers every route shares
    /// (added by [`document`] from `scope`).
    pub spec: Value,
    pub handler: MethodRouter<AppState>,
}

impl Operation {
    fn new<H, T>(method: Method, path: &'static str, scope: Option<Scope>, id: &str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // `/v1/calls/{id}` is tagged `calls`, the page and its files `monitor`, the rest (health,
        // metrics, this document) `daemon`.
        let tag = match path.strip_prefix("/v1/").and_then(|rest| rest.split('/').next()) {
            Some(resource) if resource != "openapi.json" => resource,
            _ if path == "/" || path.starts_with("/ui/") => "monitor",
            _ => "daemon",
        };
        Operation {
            method,
            path,
            scope,
            query_token: false,
            limit: BodyLimit::Default,
            spec: json!({"operationId": id, "tags": [tag], "responses": {}}),
            handler: on(method.filter(), handler),
        }
    }

    fn summary(mut self, summary: &str, description: &str) -> Self {
        self.spec["summary"] = json!(summary);
        if !description.is_empty() {
            self.spec["description"] = json!(description);
        }
        self
    }

    fn param(mut self, place: &str, name: &str, schema: Value, description: &str) -> Self {
        let mut param = json!({"name": name, "in": place, "schema": schema, "description": description});
        if place == "path" {
            param["required"] = json!(true);
        }
        push(&mut self.spec, "parameters", param);
        self
    }

    fn path_param(self, name: &str, schema: Value, description: &str) -> Self {
        self.param("path", name, schema, description)
    }

    fn query(self, name: &str, schema: Value, description: &str) -> Self {
        self.param("query", name, schema, description)
    }

    fn body(mut self, content_type: &str, schema: Value, description: &str) -> Self {
        self.spec["requestBody"] =
            json!({"required": true, "description": description, "content": {content_type: {"schema": schema}}});
        self
    }

    fn json_body(self, schema: Value, description: &str) -> Self {
        self.body("application/json", schema, description)
    }

    /// An answer with a JSON body (`schema` `None`: no body).
    fn answer(mut self, status: u16, description: &str, schema: Option<Value>) -> Self {
        let mut response = json!({"description": description});
        if let Some(schema) = schema {
            response["content"] = json!({"application/json": {"schema": schema}});
        }
        self.spec["responses"][status.to_string()] = response;
        self
    }

    /// An answer that is not JSON: text of one of `content_types`.
    fn answer_as(mut self, status: u16, description: &str, content_types: &[&str]) -> Self {
        let content: Map<String, Value> =
            content_types.iter().map(|t| ((*t).to_owned(), json!({"schema": {"type": "string"}}))).collect();
        self.spec["responses"][status.to_string()] = json!({"description": description, "content": content});
        self
    }

    /// An error answer (`{"error": …}`) this route gives for its own reasons.
    fn error(self, status: u16, description: &str) -> Self {
        self.answer(status, description, Some(schema("Error")))
    }

    fn limit(mut self, limit: BodyLimit) -> Self {
        self.limit = limit;
        self
    }

    /// The token may also come as `?token=` (the feed's WebSocket upgrade only).
    fn query_token(mut self) -> Self {
        self.query_token = true;
        self
    }
}

fn push(spec: &mut Value, key: &str, item: Value) {
    match spec.get_mut(key).and_then(Value::as_array_mut) {
        Some(items) => items.push(item),
        None => spec[key] = json!([item]),
    }
}

/// `{"$ref": "#/components/schemas/<name>"}`.
fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn time_query() -> Value {
    json!({"type": "string", "format": "date-time", "description": "RFC 3339, e.g. 2026-11-21T10:00:00Z"})
}

fn one_of(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

const NAME: &str = "The agent's name.";

/// Every route of the HTTP listener, in the README's order. The router serves exactly these.
pub fn operations() -> Vec<Operation> {
    use Method as M;
    use Scope::{Admin, Dial, Monitor, Supervise};
    vec![
        // The daemon.
        Operation::new(M::Get, "/healthz", None, "healthz", health::healthz).summary("The process is up", "").answer(
            200,
            "The process answers",
            Some(schema("Health")),
        ),
        Operation::new(M::Get, "/readyz", None, "readyz", health::readyz)
            .summary(
                "Ready to take calls",
                "200 when the database answers within 2 s and every supervised task runs; 503 otherwise, \
                 naming what fails.",
            )
            .answer(200, "Ready", Some(schema("Ready")))
            .error(503, "The database does not answer, or a supervised task failed within the last minute"),
        Operation::new(M::Get, "/metrics", None, "metrics", health::metrics)
            .summary("Prometheus metrics", "")
            .answer_as(200, "Prometheus text exposition", &["text/plain"]),
        Operation::new(M::Get, "/", None, "monitorPage", monitor::index)
            .summary("The supervisors' monitor page", "")
            .answer_as(200, "The page", &["text/html"]),
        Operation::new(M::Get, "/ui/{file}", None, "monitorFile", monitor::asset)
            .summary("A file of the monitor page", "")
            .path_param("file", one_of(&monitor::file_names()), "One of the page's ES modules or its style sheet.")
            .answer_as(200, "The file: an ES module or the style sheet", &["text/javascript", "text/css"])
            .error(404, "No such file"),
        Operation::new(M::Get, "/v1/openapi.json", None, "openapi", document_handler)
            .summary("This document", "OpenAPI 3.1. No token: it describes the API and holds no organization's data.")
            .answer(200, "The OpenAPI document", Some(json!({"type": "object"}))),
        // Calls.
        Operation::new(M::Get, "/v1/calls", Some(Monitor), "listCalls", api::list_calls)
            .summary(
                "The organization's calls, newest first",
                "An unknown parameter or a bad value is a 400 naming it. `last_event_id` is the \
                 organization's newest event when the list was read: open the feed with \
                 `since=<last_event_id>` and nothing that changed afterwards is missed.",
            )
            .query("status", one_of(&CallStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()), "A status.")
            .query("active", boolean(), "`true`: only calls initiated, ringing or in progress.")
            .query("outcome", one_of(&Outcome::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>()), "An outcome.")
            .query("campaign", integer(), "A campaign's id.")
            .query("agent", string(), NAME)
            .query(
                "q",
                json!({"type": "string", "minLength": 1, "maxLength": 100}),
                "Search: the call id, the contact's name and both numbers, case-insensitive; a number \
                 written with spaces, dashes or brackets matches by its digits.",
            )
            .query("since", time_query(), "Calls started at or after this time.")
            .query("until", time_query(), "Calls started before this time.")
            .query("limit", json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}), "Page size.")
            .query("cursor", string(), "The `next_cursor` of the previous page.")
            .answer(200, "One page of calls", Some(schema("CallPage")))
            .error(400, "An unknown parameter or a bad value"),
        Operation::new(M::Post, "/v1/calls", Some(Dial), "placeCall", dialer::place_call)
            .summary(
                "Places an outbound call",
                "201 with the call (`initiated`; its statuses follow on the feed). Nothing is dialed \
                 on a 400, 404 or 409.",
            )
            .json_body(schema("CallRequest"), "What to call")
            .answer(201, "The call is stored and Asterisk took the originate", Some(schema("Call")))
            .error(400, "Not E.164, a malformed body, or a contact with another number")
            .error(404, "An unknown campaign or contact")
            .error(409, "The number is on the organization's do-not-call list")
            .error(502, "Asterisk refused the originate; the call is stored as `failed` with its message")
            .error(503, "ARI is not configured or not connected, or Asterisk did not answer"),
        Operation::new(M::Get, "/v1/calls/{id}", Some(Monitor), "getCall", api::get_call)
            .summary("One call with its turns and transcript", "")
            .path_param("id", string(), "The call's id.")
            .answer(200, "The call", Some(schema("CallDetail")))
            .error(404, "No such call in the organization"),
        Operation::new(M::Get, "/v1/calls/{id}/recording", Some(Monitor), "getCallRecording", recordings::download)
            .summary(
                "The call's whole-call recording (WAV)",
                "Streams the call's available recording; one byte range with `Range: bytes=<first>-<last>` \
                 (206 with `Content-Range`). The token in the `Authorization` header only: `?token=` is refused.",
            )
            .path_param("id", string(), "The call's id.")
            .param("header", "Range", string(), "One byte range: `bytes=0-1023`, `bytes=1024-` or `bytes=-1024`.")
            .answer_as(200, "The whole file", &["audio/wav"])
            .answer_as(206, "The range asked for, with `Content-Range`", &["audio/wav"])
            .error(400, "A query parameter (`?token=` included)")
            .error(404, "No such call in the organization, or no available recording (the message says why)")
            .error(416, "A malformed range, several ranges, or a range outside the file (`Content-Range: bytes */<size>`)"),
        // The supervisors' console on a live call.
        Operation::new(M::Post, "/v1/calls/{id}/coach", Some(Supervise), "coachCall", supervise::coach)
            .summary(
                "Coaches the AI of a live call",
                "The text goes into the model's context for its next answers (a system message, never \
                 spoken as it is); the feed gets `coached` with the token's name.",
            )
            .path_param("id", string(), "The call's id.")
            .json_body(schema("Coaching"), "The instruction")
            .answer(200, "The live call", Some(schema("LiveCall")))
            .error(400, "No text, or over 1,000 characters")
            .error(404, "No such call in the organization")
            .error(409, "The call has ended, is not in conversation yet, or another daemon holds it (named); or 10 instructions wait already")
            .error(503, "This daemon runs no conversations"),
        Operation::new(M::Post, "/v1/calls/{id}/pause", Some(Supervise), "pauseCall", supervise::pause)
            .summary(
                "Pauses the AI of a live call",
                "The caller hears music on hold; the AI neither listens nor answers until resumed (at once \
                 while it listens, after its answer while it speaks). `ai_paused` on the feed when it was not \
                 paused already.",
            )
            .path_param("id", string(), "The call's id.")
            .answer(200, "The live call", Some(schema("LiveCall")))
            .error(404, "No such call in the organization")
            .error(409, "The call has ended, is not in conversation yet, or another daemon holds it (named)")
            .error(503, "This daemon runs no conversations"),
        Operation::new(M::Post, "/v1/calls/{id}/resume", Some(Supervise), "resumeCall", supervise::resume)
            .summary("Resumes the AI of a live call", "`ai_resumed` on the feed when it was paused.")
            .path_param("id", string(), "The call's id.")
            .answer(200, "The live call", Some(schema("LiveCall")))
            .error(404, "No such call in the organization")
            .error(409, "The call has ended, is not in conversation yet, or another daemon holds it (named)")
            .error(503, "This daemon runs no conversations"),
        Operation::new(M::Get, "/v1/calls/{id}/listen", Some(Supervise), "listenCall", supervise::listen)
            .summary(
                "Listens to a live call, a WebSocket",
                "The call's audio (both sides, from an ARI snoop): first a text message \
                 `{\"type\": \"listen.start\", \"rate\": 16000, \"format\": \"s16le\", \"channels\": 1}`, \
                 then one binary message of 16-bit little-endian PCM per 20 ms frame. A listener that falls \
                 behind loses frames. `supervisor_joined` and `supervisor_left` on the feed. The token may \
                 come as `?token=`, since a browser cannot set headers on a WebSocket.",
            )
            .path_param("id", string(), "The call's id.")
            .query("token", string(), "The token, for browsers (only the WebSocket routes take it in the URL).")
            .query_token()
            .answer(101, "Switching Protocols: the WebSocket", None)
            .error(404, "No such call in the organization")
            .error(409, "The call has ended, is not in conversation yet, or another daemon holds it (named)")
            .error(426, "Not a WebSocket upgrade")
            .error(502, "Asterisk refused the snoop or the media channel")
            .error(503, "This daemon runs no conversations, or ARI is not configured"),
        Operation::new(M::Get, "/v1/calls/{id}/barge", Some(Supervise), "bargeCall", supervise::barge)
            .summary(
                "Barges in on a live call with the supervisor's microphone, a WebSocket",
                "The caller and the AI hear what the page sends (an ARI snoop whispering into both \
                 directions of the caller's channel); the AI starts no answer while the supervisor's voice \
                 is heard. First the server's text message `{\"type\": \"barge.start\", \"rate\": 16000, \
                 \"format\": \"s16le\", \"channels\": 1}` (8000 on an AGI call); then the page sends binary \
                 messages of 16-bit little-endian mono PCM at that rate (at most 32,000 bytes each). A text message closes the \
                 socket with 1003, an odd length with 1007, a larger one with 1009. One supervisor at a time. \
                 `barge_started` and `barge_ended` on the feed. The token may come as `?token=`.",
            )
            .path_param("id", string(), "The call's id.")
            .query("token", string(), "The token, for browsers (only the WebSocket routes take it in the URL).")
            .query_token()
            .answer(101, "Switching Protocols: the WebSocket", None)
            .error(404, "No such call in the organization")
            .error(409, "The call has ended, is not in conversation yet, or another daemon holds it (named); or another supervisor barges in")
            .error(426, "Not a WebSocket upgrade")
            .error(502, "Asterisk refused the snoop or the media channel")
            .error(503, "This daemon runs no conversations, or ARI is not configured"),
        Operation::new(M::Post, "/v1/calls/{id}/takeover", Some(Supervise), "takeOverCall", supervise::takeover)
            .summary(
                "Takes a live call over from the AI",
                "The AI neither speaks nor answers (at once while it listens, after its answer while it \
                 speaks); it still listens, and stores what the caller says as turns with the supervisor, who \
                 talks with the caller through a barge; the supervisor's words, transcribed from the barge, \
                 are stored as turns of their own (`(supervisor <name>) …`). `takeover_started` on the feed \
                 when it was not taken over already.",
            )
            .path_param("id", string(), "The call's id.")
            .answer(200, "The live call", Some(schema("LiveCall")))
            .error(404, "No such call in the organization")
            .error(409, "The call has ended, is not in conversation yet, or another daemon holds it (named)")
            .error(503, "This daemon runs no conversations"),
        Operation::new(M::Post, "/v1/calls/{id}/giveback", Some(Supervise), "giveBackCall", supervise::giveback)
            .summary(
                "Gives a taken-over call back to the AI",
                "The AI listens and answers again, with what the caller and the supervisor said meanwhile \
                 in its history. \
                 `takeover_ended` on the feed when the call was taken over.",
            )
            .path_param("id", string(), "The call's id.")
            .answer(200, "The live call", Some(schema("LiveCall")))
            .error(404, "No such call in the organization")
            .error(409, "The call has ended, is not in conversation yet, or another daemon holds it (named)")
            .error(503, "This daemon runs no conversations"),
        Operation::new(M::Get, "/v1/token", Some(Monitor), "getToken", supervise::token_info)
            .summary(
                "The token itself",
                "Its id, name, organization and scopes: the monitor page shows the supervisors' console only \
                 to a token with `supervise`.",
            )
            .answer(200, "The token", Some(schema("TokenInfo"))),
        Operation::new(M::Get, "/v1/stats", Some(Monitor), "stats", api::stats)
            .summary(
                "The organization's figures for the calls started in a window",
                "Default window: from midnight UTC today until now; at most 31 days.",
            )
            .query("since", time_query(), "Start of the window.")
            .query("until", time_query(), "End of the window.")
            .answer(200, "The figures", Some(schema("DayStats")))
            .error(400, "An unknown parameter, a bad time or a window over 31 days"),
        // Campaigns.
        Operation::new(M::Get, "/v1/campaigns", Some(Monitor), "listCampaigns", dialer::list_campaigns)
            .summary("The campaigns", "")
            .answer(200, "The campaigns", Some(schema("CampaignList"))),
        Operation::new(M::Post, "/v1/campaigns", Some(Dial), "createCampaign", dialer::create_campaign)
            .summary("Creates a draft campaign", "Bad or out-of-bounds settings are a 400 naming the field.")
            .json_body(schema("NewCampaign"), "Its name and settings")
            .answer(201, "The campaign, `draft`", Some(schema("CampaignDetail")))
            .error(400, "A malformed body or bad settings")
            .error(409, "The name is in use"),
        Operation::new(M::Get, "/v1/campaigns/{id}", Some(Monitor), "getCampaign", dialer::get_campaign)
            .summary("A campaign with its contacts and calls counted by status", "")
            .path_param("id", integer(), "The campaign's id.")
            .answer(200, "The campaign", Some(schema("CampaignDetail")))
            .error(404, "No such campaign in the organization"),
        Operation::new(M::Get, "/v1/campaigns/{id}/stats", Some(Monitor), "campaignStats", compliance::campaign_stats)
            .summary(
                "A campaign's progress and results",
                "The figures `asterai campaign status` prints, and the abandonment figures under `abandon`.",
            )
            .path_param("id", integer(), "The campaign's id.")
            .answer(200, "The figures", Some(schema("CampaignStats")))
            .error(404, "No such campaign in the organization"),
        Operation::new(M::Get, "/v1/campaigns/{id}/compliance", Some(Monitor), "complianceReport", compliance::compliance_report)
            .summary(
                "A campaign's compliance report",
                "Attempts per contact with UTC and local times, the checks passed, refusals and why, the abandon rate; JSON, or CSV with `?format=csv` (see the README's \"Compliance\").",
            )
            .path_param("id", integer(), "The campaign's id.")
            .query("format", one_of(&["json", "csv"]), "`csv`: the report as a CSV file.")
            .answer(200, "The report", Some(free_object("The compliance report (see the README's \"Compliance\").")))
            .error(400, "An unknown format")
            .error(404, "No such campaign in the organization"),
        Operation::new(M::Get, "/v1/audit", Some(Admin), "auditLog", compliance::audit_log)
            .summary("The organization's audit log, oldest first", "Every change made by a token or the CLI: who, what, when, from where.")
            .query("after", integer(), "Entries after this id (`next` of the previous page).")
            .query("limit", integer(), "At most this many entries (default 100, at most 1,000).")
            .answer(200, "The entries and the id to continue after", Some(free_object("`entries` (each with `id`, `at`, `actor`, `action`, `target`, `peer`, …) and `next`.")))
            .error(400, "A bad after or limit"),
        Operation::new(M::Post, "/v1/campaigns/{id}/contacts", Some(Dial), "importContacts", dialer::import_contacts)
            .summary("Imports contacts from CSV", "Up to `http.max_import_bytes` (64 MiB by default).")
            .path_param("id", integer(), "The campaign's id.")
            .body("text/csv", string(), "A CSV file with a header; `,`, `;` or tab delimited")
            .limit(BodyLimit::Import)
            .answer(200, "The import report", Some(schema("ImportReport")))
            .error(400, "The file cannot be read")
            .error(404, "No such campaign in the organization"),
        Operation::new(M::Post, "/v1/campaigns/{id}/{action}", Some(Dial), "campaignAction", dialer::campaign_action)
            .summary("Starts, pauses or stops a campaign", "")
            .path_param("id", integer(), "The campaign's id.")
            .path_param("action", one_of(&["start", "pause", "stop"]), "What to do.")
            .answer(200, "The campaign in its new state", Some(schema("CampaignDetail")))
            .error(400, "Starting a campaign whose settings are not valid")
            .error(404, "No such campaign in the organization, or no such action")
            .error(409, "A change its state does not allow"),
        // Agents.
        Operation::new(M::Get, "/v1/agents", Some(Monitor), "listAgents", agents::list)
            .summary("The organization's agents, each at its current version", "")
            .answer(200, "The agents", Some(schema("AgentList"))),
        Operation::new(M::Post, "/v1/agents", Some(Admin), "createAgent", agents::create)
            .summary("Creates an agent from its definition", "Version 1. A bad definition is a 400 naming the key.")
            .query("default", boolean(), "`true`: it becomes the organization's default agent.")
            .json_body(schema("AgentDefinition"), "The definition")
            .answer(201, "The agent", Some(schema("Agent")))
            .error(400, "A bad definition")
            .error(409, "The name is in use"),
        Operation::new(M::Get, "/v1/agents/{name}", Some(Monitor), "getAgent", agents::get)
            .summary("One agent at its current version", "")
            .path_param("name", string(), NAME)
            .answer(200, "The agent", Some(schema("Agent")))
            .error(404, "No such agent in the organization"),
        Operation::new(M::Put, "/v1/agents/{name}", Some(Admin), "updateAgent", agents::update)
            .summary("Replaces an agent's definition: a new version", "")
            .path_param("name", string(), NAME)
            .query("default", boolean(), "`true`: it becomes the organization's default agent.")
            .json_body(schema("AgentDefinition"), "The definition")
            .answer(200, "The agent at its new version", Some(schema("Agent")))
            .error(400, "A bad definition")
            .error(404, "No such agent in the organization"),
        Operation::new(M::Get, "/v1/agents/{name}/versions", Some(Monitor), "agentVersions", agents::versions)
            .summary("Every version of an agent, oldest first", "")
            .path_param("name", string(), NAME)
            .answer(200, "The versions", Some(schema("AgentVersionList"))),
        Operation::new(M::Get, "/v1/agents/{name}/versions/{version}", Some(Monitor), "agentVersion", agents::version)
            .summary("One version of an agent", "")
            .path_param("name", string(), NAME)
            .path_param("version", integer(), "The version number, from 1.")
            .answer(200, "The version", Some(schema("AgentVersion")))
            .error(404, "No such agent or version"),
        Operation::new(M::Post, "/v1/agents/{name}/rollback", Some(Admin), "rollbackAgent", agents::rollback)
            .summary("A new version that copies an older one", "")
            .path_param("name", string(), NAME)
            .json_body(schema("Rollback"), "The version to copy")
            .answer(200, "The agent at its new version", Some(schema("Agent")))
            .error(400, "A malformed body")
            .error(404, "No such agent or version"),
        Operation::new(M::Post, "/v1/agents/{name}/default", Some(Admin), "defaultAgent", agents::make_default)
            .summary("Makes an agent the organization's default", "")
            .path_param("name", string(), NAME)
            .answer(200, "The agent", Some(schema("Agent")))
            .error(404, "No such agent in the organization"),
        // The do-not-call list.
        Operation::new(M::Get, "/v1/dnc", Some(Dial), "listDnc", dialer::list_dnc)
            .summary("The organization's do-not-call list", "")
            .answer(200, "The numbers", Some(schema("DncList"))),
        Operation::new(M::Post, "/v1/dnc", Some(Dial), "addDnc", dialer::add_dnc)
            .summary("Adds a number to the do-not-call list", "")
            .json_body(schema("NewDnc"), "The number and why")
            .answer(201, "Added", Some(schema("DncAdded")))
            .answer(200, "It was on the list already", Some(schema("DncAdded")))
            .error(400, "Not a phone number, or a malformed body"),
        Operation::new(M::Delete, "/v1/dnc/{number}", Some(Admin), "removeDnc", dialer::remove_dnc)
            .summary("Removes a number from the do-not-call list", "")
            .path_param("number", string(), "The number, E.164 (`+` written `%2B`).")
            .answer(204, "Removed", None)
            .error(404, "The number is not on the list"),
        // The live feed.
        Operation::new(M::Get, "/v1/feed", Some(Monitor), "feed", feed::feed)
            .summary(
                "The live feed, a WebSocket",
                "Upgrades to a WebSocket of the organization's events (see the README's \"The live feed\"). \
                 The token may come as `?token=`, since a browser cannot set headers on a WebSocket.",
            )
            .query(
                "since",
                json!({"type": "integer", "minimum": 0}),
                "Replay from after this event id (0: everything).",
            )
            .query("call_id", string(), "Only this call's events.")
            .query("campaign", integer(), "Only this campaign's events.")
            .query("token", string(), "The token, for browsers (only this route takes it in the URL).")
            .query_token()
            .answer(101, "Switching Protocols: the WebSocket", None)
            .error(400, "A bad `since` or `campaign`")
            .error(426, "Not a WebSocket upgrade")
            .error(503, "The event log cannot be read"),
    ]
}

/// `GET /v1/openapi.json`.
pub async fn document_handler() -> Response {
    static BODY: LazyLock<String> = LazyLock::new(|| document().to_string());
    let mut response = BODY.as_str().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The OpenAPI 3.1 document of [`operations`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in operations() {
        let mut spec = op.spec;
        if let Some(scope) = op.scope {
            let mut security = vec![json!({"bearer": []})];
            if op.query_token {
                security.push(json!({"queryToken": []}));
            }
            spec["security"] = json!(security);
            spec["x-scope"] = json!(scope.as_str());
            let note = format!("Needs a token with the `{scope}` scope.");
            spec["description"] = match spec.get("description").and_then(Value::as_str) {
                Some(text) => json!(format!("{note} {text}")),
                None => json!(note),
            };
            spec["responses"]["401"] = json!({"description": "No token, or a malformed, unknown or revoked one", "content": {"application/json": {"schema": schema("Error")}}});
            spec["responses"]["403"] = json!({"description": format!("The token lacks the `{scope}` scope"), "content": {"application/json": {"schema": schema("Error")}}});
        } else {
            spec["security"] = json!([]);
        }
        if spec.get("requestBody").is_some() {
            let key = if op.limit == BodyLimit::Import { "http.max_import_bytes" } else { "http.max_body_bytes" };
            spec["responses"]["413"] = json!({"description": format!("The body is over `{key}`")});
        }
        spec["responses"]["default"] = json!({"description": "An error: 408 past `http.request_timeout`, 500, …", "content": {"application/json": {"schema": schema("Error")}}});
        let item = paths.entry(op.path).or_insert_with(|| json!({}));
        item[op.method.as_str()] = spec;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "asterai",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of the asterai daemon (`http.listen`). Routes under `/v1` need a token \
                (`asterai token create`) in `Authorization: Bearer <token>`; it selects the only organization \
                whose data the request can see (another organization's rows are \"not found\"), and each route \
                needs the scope named in its `x-scope` (monitor, dial, admin or supervise; 403 without it). Generated from \
                the table the router is built from (src/http/openapi.rs).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of `asterai token create` (`ast_<id>_<secret>`). Its scopes: `monitor` \
                        reads, `dial` places calls, runs campaigns and reads and adds to the do-not-call list, \
                        `admin` removes from it and changes agents, `supervise` listens to, coaches, pauses, barges in on and takes over live calls. \
                        Each operation's `x-scope` names the one it needs.",
                },
                "queryToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The same token in the URL: the WebSocket upgrades only (the feed, listening and barging; \
                        any other route answers 401 to it, since URLs end up in logs).",
                },
            },
            "schemas": schemas(),
        },
    })
}

/// An object schema: every field in `fields` is always present (an `Option` is `null`), and no
/// other field is (`additionalProperties: false`), so that `tests/openapi.rs` can compare it
/// with real answers. `optional` fields may be absent.
fn object(fields: &[(&str, Value)], optional: &[(&str, Value)]) -> Value {
    let mut properties = Map::new();
    for (name, schema) in fields.iter().chain(optional) {
        properties.insert((*name).to_owned(), schema.clone());
    }
    let required: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// `schema` or `null`.
fn nullable(schema: Value) -> Value {
    match schema.get("type").cloned() {
        Some(Value::String(kind)) if schema.get("enum").is_none() => {
            let mut schema = schema;
            schema["type"] = json!([kind, "null"]);
            schema
        }
        _ => json!({"oneOf": [schema, {"type": "null"}]}),
    }
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// A JSON object whose values are counts (`{"completed": 3}`).
fn counts() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "integer"}})
}

fn number() -> Value {
    json!({"type": "number"})
}

fn free_object(description: &str) -> Value {
    json!({"type": "object", "description": description})
}

fn with_properties(base: &Value, extra: &[(&str, Value)]) -> Value {
    let mut schema = base.clone();
    for (name, value) in extra {
        schema["properties"][*name] = value.clone();
        if let Some(required) = schema["required"].as_array_mut()
            && !required.iter().any(|r| r == name)
        {
            required.push(json!(name));
        }
    }
    schema
}

/// The schemas of the answers and bodies, field for field as the store's `Serialize` types and
/// the handlers write them.
fn schemas() -> Value {
    let statuses: Vec<&str> = CallStatus::ALL.iter().map(|s| s.as_str()).collect();
    let outcomes: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    let directions: Vec<&str> = Direction::ALL.iter().map(|d| d.as_str()).collect();
    let opt_string = || nullable(string());
    let opt_integer = || nullable(integer());
    let opt_number = || nullable(number());
    let opt_time = || nullable(time());
    // crate::store::Call
    let call = object(
        &[
            ("id", string()),
            ("org", string()),
            ("direction", one_of(&directions)),
            ("from", string()),
            ("to", string()),
            ("channel", opt_string()),
            ("campaign_id", opt_integer()),
            ("contact_id", opt_integer()),
            ("status", one_of(&statuses)),
            ("status_reason", opt_string()),
            ("outcome", nullable(one_of(&outcomes))),
            ("outcome_reason", opt_string()),
            ("started_at", time()),
            ("answered_at", opt_time()),
            ("ended_at", opt_time()),
            ("duration_s", opt_number()),
            ("transcript", opt_string()),
            ("emotion", opt_string()),
            ("intent_score", opt_number()),
            ("turns", integer()),
            ("contact_name", opt_string()),
            ("campaign_name", opt_string()),
            ("agent", opt_string()),
            ("agent_version", opt_integer()),
            ("purged_at", opt_time()),
        ],
        &[(
            "analysis",
            free_object(
                "The agent's after-call analysis once it ran: `summary`, `success`, `success_reason`, `data`, `data_error`, `error`.",
            ),
        )],
    );
    // `GET /v1/calls/{id}`: the call, with `turns` the turns themselves rather than their count.
    let mut call_detail = with_properties(
        &call,
        &[
            ("turns", array(schema("Turn"))),
            ("transcript", string()),
            ("recordings", array(schema("Recording"))),
            ("recording_url", opt_string()),
        ],
    );
    call_detail["description"] = json!(
        "A call with its turns, its transcript (one line per utterance) and its whole-call recordings; \
         `recording_url` is where the available one downloads (null: none)."
    );
    let recording_statuses: Vec<&str> = crate::store::RecordingStatus::ALL.iter().map(|s| s.as_str()).collect();
    let recording_vias: Vec<&str> = crate::store::RecordingVia::ALL.iter().map(|s| s.as_str()).collect();
    // crate::store::Recording
    let recording = object(
        &[
            ("id", integer()),
            ("call_id", string()),
            ("via", one_of(&recording_vias)),
            ("name", string()),
            ("format", string()),
            ("size_bytes", opt_integer()),
            ("duration_ms", opt_integer()),
            ("region", opt_string()),
            ("consent_required", boolean()),
            ("consent_announced", boolean()),
            ("status", one_of(&recording_statuses)),
            ("status_reason", opt_string()),
            ("started_at", time()),
            ("ended_at", opt_time()),
            ("purged_at", opt_time()),
        ],
        &[],
    );
    // crate::store::stats::CallFigures, flattened into both kinds of figures.
    let figures = [
        ("calls", integer()),
        ("active", integer()),
        ("answered", integer()),
        ("answer_rate", opt_number()),
        ("outcomes", counts()),
        ("statuses", counts()),
        ("average_handling_s", opt_number()),
    ];
    let percentiles = object(&[("p50", opt_integer()), ("p95", opt_integer())], &[]);
    let campaign = object(
        &[
            ("id", integer()),
            ("org_id", integer()),
            ("name", string()),
            ("status", one_of(crate::store::campaigns::CAMPAIGN_STATES)),
            ("status_reason", opt_string()),
            ("settings", free_object("The dialer's settings (see the README's \"Campaigns\").")),
            ("slowed_at", opt_time()),
            ("slowed_reason", opt_string()),
            ("created_at", time()),
            ("updated_at", time()),
        ],
        &[],
    );
    let rejected = object(&[("line", integer()), ("reason", string())], &[]);
    let agent_spec = || free_object("The agent's definition (see the README's \"Agents\").");
    json!({
        "Error": object(&[("error", object(&[("code", string()), ("message", string())], &[("reference", string())]))], &[]),
        "Health": object(&[("status", string()), ("version", string())], &[]),
        "Ready": object(&[("status", string()), ("database", string()), ("tasks", nullable(free_object("Each supervised task's state")))], &[]),
        "Call": call,
        "CallDetail": call_detail,
        "Recording": recording,
        "CallPage": object(&[("calls", array(schema("Call"))), ("next_cursor", opt_string()), ("last_event_id", integer())], &[]),
        "Turn": object(
            &[
                ("turn", integer()),
                ("caller", string()),
                ("agent", string()),
                ("emotion", opt_string()),
                ("intent", opt_string()),
                ("confidence", opt_number()),
                ("latency_ms", schema("Latency")),
                ("tools", array(schema("ToolUse"))),
                ("at", time()),
            ],
            &[("interrupted", json!({"const": true, "description": "The caller talked over the answer: `agent` is the part they heard. Absent otherwise."}))],
        ),
        "Latency": object(
            &[("endpoint", integer()), ("stt", integer()), ("llm_first", integer()), ("tts_first", integer()), ("total", integer())],
            &[("overhead_us", integer()), ("voice_to_voice", integer())],
        ),
        "ToolUse": object(&[("name", string()), ("arguments", json!({})), ("result", json!({}))], &[]),
        "CallRequest": object(
            &[("to", string())],
            &[("campaign", integer()), ("contact", integer()), ("media", one_of(&["agi", "stream"]))],
        ),
        "DayStats": object(
            &[&[("since", time()), ("until", time())][..], &figures[..], &[("by_hour", array(schema("HourCount"))), ("latency", schema("StageLatency"))][..]].concat(),
            &[],
        ),
        "HourCount": object(&[("start", time()), ("calls", integer()), ("answered", integer())], &[]),
        "StageLatency": object(
            &[
                ("turns", integer()),
                ("endpoint", percentiles.clone()),
                ("stt", percentiles.clone()),
                ("llm_first", percentiles.clone()),
                ("tts_first", percentiles.clone()),
                ("total", percentiles),
            ],
            &[],
        ),
        "Campaign": campaign,
        "CampaignDetail": with_properties(&campaign, &[("contacts", counts()), ("calls", counts())]),
        "CampaignList": object(&[("campaigns", array(schema("Campaign")))], &[]),
        "NewCampaign": object(&[("name", string())], &[("settings", free_object("The dialer's settings (see the README's \"Campaigns\")."))]),
        "CampaignStats": object(
            &[
                &[("campaign_id", integer()), ("name", string()), ("status", one_of(crate::store::campaigns::CAMPAIGN_STATES)), ("at", time()), ("progress", schema("CampaignProgress"))][..],
                &figures[..],
                &[("calls_per_hour", integer()), ("eta", opt_time()), ("abandon", schema("AbandonStats"))][..],
            ]
            .concat(),
            &[],
        ),
        "AbandonStats": object(
            &[
                ("answered", integer()),
                ("abandoned", integer()),
                ("rate", number()),
                ("threshold", number()),
                ("max_wait_ms", integer()),
                ("since", time()),
                ("slowed_at", opt_time()),
                ("slowed_reason", nullable(string())),
            ],
            &[],
        ),
        "CampaignProgress": object(
            &[("pending", integer()), ("dialing", integer()), ("done", integer()), ("failed", integer()), ("do_not_call", integer()), ("total", integer())],
            &[],
        ),
        "ImportReport": object(&[("rows", integer()), ("imported", integer()), ("duplicates", array(rejected.clone())), ("rejected", array(rejected))], &[]),
        "Agent": object(
            &[("name", string()), ("version", integer()), ("default", boolean()), ("spec", agent_spec()), ("created_at", time()), ("updated_at", time())],
            &[],
        ),
        "AgentList": object(&[("agents", array(schema("Agent")))], &[]),
        "AgentVersion": object(
            &[("agent", string()), ("version", integer()), ("note", string()), ("spec", agent_spec()), ("created_at", time())],
            &[],
        ),
        "AgentVersionList": object(&[("agent", string()), ("versions", array(schema("AgentVersion")))], &[]),
        "AgentDefinition": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": string()},
            "description": "An agent's definition: `name` and the keys of the README's \"Agents\". An unknown key is a 400 naming it.",
        },
        "Rollback": object(&[("version", integer())], &[]),
        "Coaching": object(&[("text", json!({"type": "string", "minLength": 1, "maxLength": 1000}))], &[]),
        "LiveCall": object(
            &[
                ("call_id", string()),
                ("media", one_of(&["agi", "stream"])),
                ("ai", one_of(&["active", "paused", "taken_over"])),
                ("pending_coaching", integer()),
                ("listeners", integer()),
                ("barging", opt_string()),
                ("taken_over_by", opt_string()),
            ],
            &[],
        ),
        "TokenInfo": object(
            &[
                ("token_id", string()),
                ("name", string()),
                ("org", string()),
                ("scopes", array(one_of(&["monitor", "dial", "admin", "supervise"]))),
            ],
            &[],
        ),
        "DncEntry": object(&[("number", string()), ("reason", opt_string()), ("source", string()), ("created_at", time())], &[]),
        "DncList": object(&[("numbers", array(schema("DncEntry")))], &[]),
        "NewDnc": object(&[("number", string())], &[("reason", string())]),
        "DncAdded": object(&[("number", string()), ("added", boolean())], &[]),
    })
}
