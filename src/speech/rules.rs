//! The built-in responder: keyword rules with answers, objection handling and a closing. It needs
//! no network, so asterai holds a sensible conversation with no API key at all (and `asterai
//! demo` shows it). The same classifier reads the caller's intent and emotion for every
//! responder that does not say them itself.
//!
//! The rules come from [`RuleSet::default_rules`] or a TOML file (`responder.rules_file`) of the
//! same shape:
//!
//! ```toml
//! fallback = "I see. Could you tell me a little more?"
//! [[intent]]
//! name = "pricing"
//! keywords = ["price", "how much", "cost"]
//! answer = "Our standard plan is 20 dollars a month."
//! action = "continue"          # continue | end | do_not_call | transfer | callback
//! ```
//!
//! Answers may use `{agent_name}`, `{company}` and any contact field such as `{first_name}`
//! (see [`render`]).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::llm::{Action, Analysis, Chunk, ChunkStream, Responder, ResponseRequest, Role};
use super::{BoxFuture, SpeechError};

/// One intent: the phrases that reveal it and what to answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentRule {
    pub name: String,
    pub keywords: Vec<String>,
    pub answer: String,
    /// An answer for the second time the intent comes up (objection handling): the first
    /// "not interested" gets a gentle question, the second a polite close.
    #[serde(default)]
    pub second_answer: Option<String>,
    #[serde(default)]
    pub action: Action,
    /// The action the second time, with `second_answer`.
    #[serde(default)]
    pub second_action: Option<Action>,
}

/// The whole rule set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// The answer when no rule matches.
    pub fallback: String,
    #[serde(rename = "intent")]
    pub intents: Vec<IntentRule>,
}

const DEFAULT_RULES: &str = include_str!("default_rules.toml");

impl RuleSet {
    /// The rules asterai ships with: a polite general-purpose agent.
    pub fn default_rules() -> RuleSet {
        toml::from_str(DEFAULT_RULES).expect("the embedded rules are valid")
    }

    /// Reads a rules file; errors name the file and what is wrong.
    pub fn from_file(path: &std::path::Path) -> Result<RuleSet, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read rules file {}: {e}", path.display()))?;
        let rules: RuleSet = toml::from_str(&text).map_err(|e| format!("rules file {}: {e}", path.display()))?;
        if rules.intents.iter().any(|i| i.keywords.is_empty()) {
            return Err(format!("rules file {}: every [[intent]] needs keywords", path.display()));
        }
        Ok(rules)
    }
}

/// One `{name}` or `{name|fallback}` in a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placeholder<'a> {
    pub name: &'a str,
    pub fallback: Option<&'a str>,
    /// Byte range of the whole placeholder, braces included.
    pub start: usize,
    pub end: usize,
}

/// The placeholders of a template, in order. A name is letters, digits and `_` (not starting
/// with a digit), so braces that are not a placeholder (the JSON a system prompt shows the
/// model, an unclosed `{`) stay text.
pub fn placeholders(template: &str) -> Vec<Placeholder<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = template[from..].find('{').map(|i| i + from) {
        let after = &template[open + 1..];
        let Some(close) = after.find('}') else { break };
        let inner = &after[..close];
        let (name, fallback) = match inner.split_once('|') {
            Some((name, fallback)) => (name.trim(), Some(fallback)),
            None => (inner.trim(), None),
        };
        if is_name(name) {
            found.push(Placeholder { name, fallback, start: open, end: open + 2 + close });
            from = open + 2 + close;
        } else {
            from = open + 1;
        }
    }
    found
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Fills `{name}` placeholders from `values`; `{name|fallback}` uses the fallback when the value
/// is missing or empty. Unknown placeholders without a fallback become empty (agents refuse
/// unknown names when they are saved). Braces that are not a placeholder stay as they are.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut at = 0;
    // "calling {company}." with "Acme Inc." must not end in "..".
    let text_after = |at: usize, value: &str| {
        let text = &template[at..];
        if value.ends_with(['.', '!', '?']) && text.starts_with('.') { at + 1 } else { at }
    };
    let mut value_before = "";
    for placeholder in placeholders(template) {
        out.push_str(&template[text_after(at, value_before)..placeholder.start]);
        let value = match values.get(placeholder.name).filter(|v| !v.trim().is_empty()) {
            Some(value) => value.trim(),
            None => placeholder.fallback.unwrap_or(""),
        };
        out.push_str(value);
        at = placeholder.end;
        value_before = value;
    }
    out.push_str(&template[text_after(at, value_before)..]);
    // Collapse the double spaces an empty value leaves behind.
    let mut collapsed = String::with_capacity(out.len());
    for word in out.split(' ') {
        if word.is_empty() && collapsed.ends_with(' ') {
            continue;
        }
        collapsed.push_str(word);
        collapsed.push(' ');
    }
    // "No problem at all, {first_name|}." without a name ends the sentence after "all".
    let mut text = collapsed.trim_end().to_owned();
    for (stray, end) in [(" ,", ","), (" .", "."), (" !", "!"), (" ?", "?"), (",.", "."), (",!", "!"), (",?", "?")] {
        text = text.replace(stray, end);
    }
    text
}

/// The caller's words, lower-cased, with punctuation turned into spaces.
fn normalize(text: &str) -> String {
    let lowered: String =
        text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' }).collect();
    format!(" {} ", lowered.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn contains_phrase(normalized: &str, phrase: &str) -> bool {
    let phrase = normalize(phrase);
    normalized.contains(&phrase)
}

/// What the rules read in one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub intent: String,
    pub emotion: String,
    pub confidence: f64,
}

const EMOTIONS: &[(&str, &[&str])] = &[
    (
        "angry",
        &[
            "stop calling",
            "ridiculous",
            "annoying",
            "harassment",
            "leave me alone",
            "waste of time",
            "hate",
            "sick of",
            "how dare",
            "shut up",
            "damn",
        ],
    ),
    ("confused", &["what do you mean", "don't understand", "confused", "pardon", "say that again", "i'm lost", "huh"]),
    (
        "positive",
        &[
            "great",
            "thank you",
            "thanks",
            "wonderful",
            "perfect",
            "awesome",
            "love",
            "excellent",
            "sounds good",
            "nice",
            "happy",
        ],
    ),
    (
        "negative",
        &[
            "not interested",
            "no thanks",
            "bad",
            "terrible",
            "expensive",
            "don't like",
            "worried",
            "unfortunately",
            "problem",
        ],
    ),
];

impl RuleSet {
    /// The best-matching intent rule: the most keywords matched, ties to the earlier rule.
    fn matching(&self, normalized: &str) -> Option<(&IntentRule, usize)> {
        self.intents
            .iter()
            .map(|rule| (rule, rule.keywords.iter().filter(|k| contains_phrase(normalized, k)).count()))
            .filter(|(_, hits)| *hits > 0)
            .fold(None, |best: Option<(&IntentRule, usize)>, (rule, hits)| match best {
                Some((_, best_hits)) if best_hits >= hits => best,
                _ => Some((rule, hits)),
            })
    }

    /// Reads intent, emotion and a confidence from one utterance.
    pub fn classify(&self, text: &str) -> Classification {
        let normalized = normalize(text);
        let emotion = EMOTIONS
            .iter()
            .find(|(_, words)| words.iter().any(|w| contains_phrase(&normalized, w)))
            .map_or("neutral", |(name, _)| name)
            .to_owned();
        let words = normalized.split_whitespace().count();
        match self.matching(&normalized) {
            Some((rule, hits)) => {
                // More matched phrases and a shorter utterance mean a clearer intent.
                let confidence = (0.6 + 0.15 * hits as f64 + if words <= 6 { 0.1 } else { 0.0 }).min(0.95);
                Classification { intent: rule.name.clone(), emotion, confidence }
            }
            None if words == 0 => Classification { intent: "silence".into(), emotion, confidence: 0.5 },
            None if text.trim_end().ends_with('?') => {
                Classification { intent: "question".into(), emotion, confidence: 0.5 }
            }
            None => Classification { intent: "statement".into(), emotion, confidence: 0.4 },
        }
    }
}

/// The rules engine as a responder.
pub struct RulesResponder {
    pub rules: RuleSet,
    /// Values for the answers' placeholders (agent name, company, contact fields).
    pub values: BTreeMap<String, String>,
}

impl RulesResponder {
    /// The answer to `caller` given the conversation so far, and its analysis. `values` (the
    /// call's) fill the answer's placeholders over the responder's own.
    pub fn answer(
        &self,
        history: &[super::llm::Message],
        caller: &str,
        values: &BTreeMap<String, String>,
    ) -> (String, Analysis) {
        let normalized = normalize(caller);
        let classification = self.rules.classify(caller);
        let (answer, action) = match self.rules.matching(&normalized) {
            Some((rule, _)) => {
                // How often the caller already hit this intent.
                let earlier = history
                    .iter()
                    .filter(|m| m.role == Role::User)
                    .filter(|m| self.rules.matching(&normalize(&m.content)).is_some_and(|(r, _)| r.name == rule.name))
                    .count();
                match (&rule.second_answer, earlier) {
                    (Some(second), n) if n >= 1 => (second.clone(), rule.second_action.unwrap_or(rule.action)),
                    _ => (rule.answer.clone(), rule.action),
                }
            }
            None => (self.rules.fallback.clone(), Action::Continue),
        };
        let analysis = Analysis {
            intent: Some(classification.intent),
            emotion: Some(classification.emotion),
            confidence: Some(classification.confidence),
            action: Some(action),
        };
        let mut all = self.values.clone();
        all.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
        (render(&answer, &all), analysis)
    }
}

impl Responder for RulesResponder {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn respond<'a>(&'a self, request: ResponseRequest<'a>) -> BoxFuture<'a, Result<ChunkStream, SpeechError>> {
        Box::pin(async move {
            let (answer, analysis) = self.answer(request.history, request.caller, request.values);
            let chunks = vec![Ok(Chunk::Text(answer)), Ok(Chunk::Analysis(analysis))];
            Ok(Box::pin(futures_util::stream::iter(chunks)) as ChunkStream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::llm::Message;
    use super::*;

    fn responder() -> RulesResponder {
        let values =
            BTreeMap::from([("agent_name".to_owned(), "Ava".to_owned()), ("company".to_owned(), "Acme".to_owned())]);
        RulesResponder { rules: RuleSet::default_rules(), values }
    }

    #[test]
    fn templates() {
        let values =
            BTreeMap::from([("first_name".to_owned(), "Jane".to_owned()), ("empty".to_owned(), " ".to_owned())]);
        assert_eq!(render("Hi {first_name|there}, this is {agent}.", &values), "Hi Jane, this is.");
        assert_eq!(render("Hi {empty|there}!", &values), "Hi there!");
        assert_eq!(render("Hello {last_name} from {x|us}", &values), "Hello from us");
        assert_eq!(render("Unclosed {brace", &values), "Unclosed {brace");
        // An empty name leaves no stray comma before the sentence's end.
        assert_eq!(render("No problem at all, {last_name|}.", &values), "No problem at all.");
        assert_eq!(render("Thank you, {last_name|}!", &values), "Thank you!");
        assert_eq!(render("Thank you, {first_name|}!", &values), "Thank you, Jane!");
        // JSON shown to a model is not a placeholder.
        assert_eq!(
            render("Write {\"intent\": \"a|b\"} for {first_name}.", &values),
            "Write {\"intent\": \"a|b\"} for Jane."
        );
        let found = placeholders("{a} {b|x} {\"c\"} {d");
        assert_eq!(found.iter().map(|p| (p.name, p.fallback)).collect::<Vec<_>>(), [("a", None), ("b", Some("x"))]);
        let company = BTreeMap::from([("company".to_owned(), "Acme Inc.".to_owned())]);
        assert_eq!(render("Thanks for calling {company}. Bye.", &company), "Thanks for calling Acme Inc. Bye.");
    }

    #[test]
    fn intents_and_answers() {
        let r = responder();
        let (answer, analysis) = r.answer(&[], "How much does it cost?", &BTreeMap::new());
        assert!(answer.contains("20 dollars"), "{answer}");
        assert_eq!(analysis.intent.as_deref(), Some("pricing"));
        assert_eq!(analysis.action, Some(Action::Continue));

        let (answer, analysis) =
            r.answer(&[], "Please take me off your list and don't call me again.", &BTreeMap::new());
        assert_eq!(analysis.action, Some(Action::DoNotCall), "{answer}");

        let (_, analysis) = r.answer(&[], "Can I speak to a real person?", &BTreeMap::new());
        assert_eq!(analysis.action, Some(Action::Transfer));

        let (answer, analysis) = r.answer(&[], "Are you a robot?", &BTreeMap::new());
        assert!(answer.contains("Ava") && answer.contains("AI"), "{answer}");
        assert_eq!(analysis.intent.as_deref(), Some("identity"));

        let (_, analysis) = r.answer(&[], "Okay, goodbye.", &BTreeMap::new());
        assert_eq!(analysis.action, Some(Action::End));

        let (_, analysis) = r.answer(&[], "Can you call me back tomorrow?", &BTreeMap::new());
        assert_eq!(analysis.action, Some(Action::Callback));

        let (answer, analysis) = r.answer(&[], "The weather is nice today.", &BTreeMap::new());
        assert_eq!(analysis.action, Some(Action::Continue));
        assert_eq!(answer, render(&RuleSet::default_rules().fallback, &r.values));
    }

    #[test]
    fn objections_are_handled_before_closing() {
        let r = responder();
        let (first, analysis) = r.answer(&[], "I'm not interested.", &BTreeMap::new());
        assert_eq!(analysis.action, Some(Action::Continue), "the first objection gets an answer: {first}");
        let history = vec![Message::new(Role::User, "I'm not interested."), Message::new(Role::Assistant, first)];
        let (second, analysis) = r.answer(&history, "No, really, not interested.", &BTreeMap::new());
        assert_eq!(analysis.action, Some(Action::End), "the second closes politely: {second}");
    }

    #[test]
    fn emotions() {
        let rules = RuleSet::default_rules();
        assert_eq!(rules.classify("This is ridiculous, stop calling me!").emotion, "angry");
        assert_eq!(rules.classify("That sounds great, thanks").emotion, "positive");
        assert_eq!(rules.classify("Sorry, what do you mean?").emotion, "confused");
        assert_eq!(rules.classify("I'm at home").emotion, "neutral");
        assert_eq!(rules.classify("").intent, "silence");
    }
}
