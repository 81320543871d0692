//! After the call: the analysis an agent defines (`[analysis]`: a summary, a success
//! evaluation against its criteria, structured data against its JSON Schema), asked of the
//! agent's responder once the call ended, off the caller's path.
//!
//! The model is given the transcript and asked for one JSON object with the parts the agent
//! wants. The data is checked against the schema ([`crate::agent::schema`]); an answer that is
//! not JSON or does not fit is asked again once, with the error; then it is stored as it came,
//! with `data_error` saying what is wrong. A responder that fails leaves `error`. Whatever came
//! of it is stored on the call (`calls.analysis`) and published as `call_analyzed`:
//!
//! ```json
//! {"summary": "…", "success": true, "success_reason": "…", "data": {…},
//!  "data_error": null, "error": null, "attempts": 1}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::agent::AnalysisSpec;
use crate::speech::llm::{Chunk, Message, Responder, ResponseRequest, Role};

/// The longest an analysis request may take (each attempt).
pub const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(30);

/// The instructions for the model: one JSON object with the keys the agent wants.
fn instructions(spec: &AnalysisSpec) -> String {
    let mut keys = Vec::new();
    if spec.summary == Some(true) {
        keys.push("\"summary\": a summary of the call in two or three sentences".to_owned());
    }
    if let Some(criteria) = &spec.success_criteria {
        keys.push(format!(
            "\"success\": true or false, whether the call met this goal: {criteria}\n\"success_reason\": why, in one sentence"
        ));
    }
    if let Some(schema) = &spec.data_schema {
        keys.push(format!("\"data\": an object extracted from the call, matching this JSON Schema: {schema}"));
    }
    format!(
        "You analyse a phone call that has ended; the user message is its transcript. Answer with one JSON object and nothing else, with these keys:\n{}",
        keys.join("\n")
    )
}

/// The JSON object in a model's answer (it may wrap it in a code fence or words).
fn json_object(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else {
        return Err("the answer holds no JSON object".into());
    };
    if end < start {
        return Err("the answer holds no JSON object".into());
    }
    match serde_json::from_str::<Value>(&text[start..=end]) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the answer is not a JSON object".into()),
        Err(e) => Err(format!("the answer is not valid JSON: {e}")),
    }
}

/// What is wrong with an answer, for the model to fix: a missing part, or data that does not
/// fit the schema.
fn check(spec: &AnalysisSpec, answer: &serde_json::Map<String, Value>) -> Result<(), String> {
    if spec.summary == Some(true) && !answer.get("summary").is_some_and(Value::is_string) {
        return Err("\"summary\" must be a string".into());
    }
    if spec.success_criteria.is_some() && !answer.get("success").is_some_and(Value::is_boolean) {
        return Err("\"success\" must be true or false".into());
    }
    if let Some(schema) = &spec.data_schema {
        let data = answer.get("data").unwrap_or(&Value::Null);
        crate::agent::schema::validate(schema, data).map_err(|e| format!("\"data\" does not fit the schema: {e}"))?;
    }
    Ok(())
}

/// Asks the responder once; the text of its answer.
async fn ask(responder: &dyn Responder, system: &str, history: &[Message], question: &str) -> Result<String, String> {
    let values = BTreeMap::new();
    let request = ResponseRequest {
        system,
        history,
        caller: question,
        pending: &[],
        values: &values,
        tools: &[],
        deadline: Instant::now() + ANALYSIS_TIMEOUT,
    };
    let mut stream = responder.respond(request).await.map_err(|e| e.to_string())?;
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        if let Chunk::Text(piece) = chunk.map_err(|e| e.to_string())? {
            text.push_str(&piece);
        }
    }
    Ok(text)
}

/// Runs the agent's analysis of a call whose transcript is `transcript`. Never fails: a
/// provider that fails, or an answer that does not fit, is part of the result.
pub async fn analyse(responder: &dyn Responder, spec: &AnalysisSpec, transcript: &str) -> Value {
    let system = instructions(spec);
    let mut history = Vec::new();
    let mut question = transcript.to_owned();
    let mut attempts = 0;
    let mut last: Option<(serde_json::Map<String, Value>, String)> = None;
    while attempts < 2 {
        attempts += 1;
        let text = match ask(responder, &system, &history, &question).await {
            Ok(text) => text,
            Err(e) => {
                metrics::counter!("asterai_call_analyses_total", "result" => "error").increment(1);
                let mut result = json!({"error": format!("the responder failed: {e}"), "attempts": attempts});
                if let Some((answer, problem)) = last {
                    result = stored(spec, answer, Some(problem), attempts);
                    result["error"] = json!(format!("the responder failed on the retry: {e}"));
                }
                return result;
            }
        };
        let problem = match json_object(&text) {
            Ok(answer) => match check(spec, &answer) {
                Ok(()) => {
                    metrics::counter!("asterai_call_analyses_total", "result" => "ok").increment(1);
                    return stored(spec, answer, None, attempts);
                }
                Err(problem) => {
                    last = Some((answer, problem.clone()));
                    problem
                }
            },
            Err(problem) => {
                last = Some((serde_json::Map::new(), problem.clone()));
                problem
            }
        };
        tracing::info!(attempt = attempts, "the call's analysis does not fit: {problem}");
        history = vec![Message::new(Role::User, transcript), Message::new(Role::Assistant, text)];
        question = format!("That answer is invalid: {problem}. Answer again with one corrected JSON object.");
    }
    metrics::counter!("asterai_call_analyses_total", "result" => "invalid").increment(1);
    let (answer, problem) = last.unwrap_or_default();
    stored(spec, answer, Some(problem), attempts)
}

/// The analysis as stored: the parts the agent asked for, and what is wrong with them.
fn stored(
    spec: &AnalysisSpec,
    mut answer: serde_json::Map<String, Value>,
    problem: Option<String>,
    attempts: u32,
) -> Value {
    let mut out = json!({"attempts": attempts});
    if spec.summary == Some(true) {
        out["summary"] = answer.remove("summary").unwrap_or(Value::Null);
    }
    if spec.success_criteria.is_some() {
        out["success"] = answer.remove("success").unwrap_or(Value::Null);
        out["success_reason"] = answer.remove("success_reason").unwrap_or(Value::Null);
    }
    if spec.data_schema.is_some() {
        out["data"] = answer.remove("data").unwrap_or(Value::Null);
    }
    if let Some(problem) = problem {
        out["data_error"] = json!(problem);
    }
    out
}

/// The call as the analysis reads it: who said what, in order.
pub fn transcript(history: &[Message]) -> String {
    history
        .iter()
        .filter(|m| !m.content.trim().is_empty())
        .filter_map(|m| match m.role {
            Role::User => Some(format!("Caller: {}", m.content.trim())),
            Role::Assistant => Some(format!("Agent: {}", m.content.trim())),
            Role::Tool | Role::System => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_checked() {
        let spec = AnalysisSpec {
            summary: Some(true),
            success_criteria: Some("booked".into()),
            data_schema: Some(
                json!({"type": "object", "properties": {"interested": {"type": "boolean"}}, "required": ["interested"]}),
            ),
        };
        let answer =
            json_object("```json\n{\"summary\": \"s\", \"success\": true, \"data\": {\"interested\": true}}\n```")
                .unwrap();
        check(&spec, &answer).unwrap();
        let answer =
            json_object("{\"summary\": \"s\", \"success\": true, \"data\": {\"interested\": \"yes\"}}").unwrap();
        assert_eq!(
            check(&spec, &answer).unwrap_err(),
            "\"data\" does not fit the schema: /interested: expected boolean, got string"
        );
        assert!(json_object("no idea").is_err());
        assert!(json_object("{\"summary\": ").is_err());
        let history = [
            Message::new(Role::Assistant, "Hi."),
            Message::new(Role::User, "Hello"),
            Message::tool_result("c", &json!({})),
        ];
        assert_eq!(transcript(&history), "Agent: Hi.\nCaller: Hello");
    }
}
