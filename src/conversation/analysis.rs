//! Reading a turn (intent, emotion, confidence, what to do next) and a whole call (its outcome
//! and a 0–1 intent score).

use crate::speech::llm::{Action, Analysis};
use crate::speech::rules::RuleSet;
use crate::store::Outcome;

/// What one turn meant.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnAnalysis {
    pub intent: String,
    pub emotion: String,
    pub confidence: f64,
    pub action: Action,
}

/// The responder's analysis where it gave one, the rules' reading for the rest.
pub fn analyse(rules: &RuleSet, caller: &str, from_responder: Option<&Analysis>) -> TurnAnalysis {
    let read = rules.classify(caller);
    let given = from_responder.cloned().unwrap_or_default();
    let intent = given
        .intent
        .filter(|i| !i.trim().is_empty())
        .map(|i| i.trim().to_lowercase().replace(' ', "_"))
        .unwrap_or(read.intent);
    let emotion =
        given.emotion.filter(|e| !e.trim().is_empty()).map(|e| e.trim().to_lowercase()).unwrap_or(read.emotion);
    let confidence = given.confidence.filter(|c| (0.0..=1.0).contains(c)).unwrap_or(read.confidence);
    // A responder that names no action but an intent the rules act on (say, "do_not_call") is
    // taken at its word.
    let action = given.action.unwrap_or(match intent.as_str() {
        "do_not_call" => Action::DoNotCall,
        "transfer" => Action::Transfer,
        "callback" => Action::Callback,
        "goodbye" => Action::End,
        _ => Action::Continue,
    });
    TurnAnalysis { intent, emotion, confidence, action }
}

/// The business outcome of a call from its turns.
pub fn outcome(turns: &[TurnAnalysis], do_not_call: bool, caller_spoke: bool) -> Outcome {
    if do_not_call {
        return Outcome::DoNotCall;
    }
    if turns.iter().any(|t| t.action == Action::Callback || t.intent == "callback") {
        return Outcome::CallbackRequested;
    }
    let last_leaning = turns.iter().rev().find_map(|t| match t.intent.as_str() {
        "interested" => Some(Outcome::Interested),
        "not_interested" | "objection_price" | "objection_trust" => Some(Outcome::NotInterested),
        _ => None,
    });
    match last_leaning {
        Some(outcome) => outcome,
        None if !caller_spoke => Outcome::NoResponse,
        None => Outcome::Completed,
    }
}

/// How inclined the caller seemed, from 0 (not at all) to 1.
pub fn intent_score(turns: &[TurnAnalysis]) -> Option<f64> {
    if turns.is_empty() {
        return None;
    }
    let mut score: f64 = 0.5;
    for turn in turns {
        let weight = turn.confidence.clamp(0.3, 1.0);
        score += weight
            * match turn.intent.as_str() {
                "interested" => 0.3,
                "pricing" | "hours" | "affirmative" | "question" => 0.1,
                "not_interested" | "objection_price" | "objection_trust" => -0.3,
                "do_not_call" => -0.5,
                _ => 0.0,
            };
        if turn.emotion == "angry" {
            score -= 0.1;
        }
    }
    Some((score.clamp(0.0, 1.0) * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(intent: &str, action: Action) -> TurnAnalysis {
        TurnAnalysis { intent: intent.into(), emotion: "neutral".into(), confidence: 0.8, action }
    }

    #[test]
    fn the_responders_analysis_wins_where_it_speaks() {
        let rules = RuleSet::default_rules();
        let given = Analysis { intent: Some("Question".into()), emotion: None, confidence: Some(0.97), action: None };
        let a = analyse(&rules, "this is ridiculous, how much is it", Some(&given));
        assert_eq!(
            (a.intent.as_str(), a.emotion.as_str(), a.confidence, a.action),
            ("question", "angry", 0.97, Action::Continue)
        );
        let a = analyse(&rules, "please remove me from your list", None);
        assert_eq!(a.action, Action::DoNotCall);
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(&[turn("interested", Action::Continue)], false, true), Outcome::Interested);
        assert_eq!(
            outcome(&[turn("interested", Action::Continue), turn("not_interested", Action::End)], false, true),
            Outcome::NotInterested
        );
        assert_eq!(outcome(&[turn("callback", Action::Callback)], false, true), Outcome::CallbackRequested);
        assert_eq!(outcome(&[turn("pricing", Action::Continue)], true, true), Outcome::DoNotCall);
        assert_eq!(outcome(&[], false, false), Outcome::NoResponse);
        assert_eq!(outcome(&[turn("pricing", Action::Continue)], false, true), Outcome::Completed);
        assert!(intent_score(&[turn("interested", Action::Continue)]).unwrap() > 0.7);
        assert!(intent_score(&[turn("not_interested", Action::End)]).unwrap() < 0.3);
    }
}
