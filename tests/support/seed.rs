//! A day of calls for the figures' tests (`tests/stats.rs`, `tests/monitor.rs`), and the figures
//! worked out again from what the store holds, by code of its own: the calls as listed, each
//! call's turns, the campaign's contacts.

use std::collections::BTreeMap;

use asterai::store::contacts::NewContactRow;
use asterai::store::{
    Call, CallFilter, CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Outcome, Store, ToolUse,
};
use chrono::{DateTime, Utc};

/// What [`seed`] made.
pub struct Seeded {
    pub org_id: i64,
    pub other_org_id: i64,
    pub campaign_id: i64,
    pub campaign_name: String,
    /// The call that was answered and then failed (status completed, outcome failed).
    pub failed_call: String,
    /// The call whose turn used a tool.
    pub tool_call: String,
}

fn latency(endpoint: u32, stt: u32, llm: u32, tts: u32) -> Latency {
    Latency {
        endpoint,
        stt,
        llm_first: llm,
        tts_first: tts,
        total: endpoint + stt + llm + tts,
        overhead_us: None,
        voice_to_voice: None,
    }
}

fn turn(call_id: &str, n: i32, latency: Latency) -> NewTurn {
    NewTurn {
        call_id: call_id.into(),
        turn: n,
        caller: format!("caller line {n}"),
        agent: format!("agent line {n}"),
        emotion: Some("neutral".into()),
        intent: Some("question".into()),
        confidence: Some(0.8),
        latency,
        interrupted: false,
        tools: Vec::new(),
    }
}

fn finish(status: CallStatus, outcome: Outcome) -> FinishCall {
    FinishCall {
        status,
        reason: Some(format!("ended {}", status.as_str())),
        outcome: Some(outcome),
        outcome_reason: None,
        emotion: None,
        intent_score: None,
    }
}

async fn org(store: &Store, slug: &str) -> i64 {
    match store.org_by_slug(slug).await.unwrap() {
        Some(org) => org.id,
        None => store.create_org(slug, slug).await.unwrap().id,
    }
}

async fn call(store: &Store, org_id: i64, to: &str, campaign: Option<(i64, i64)>) -> Call {
    let new = NewCall {
        id: None,
        org_id,
        direction: if campaign.is_some() { Direction::Outbound } else { Direction::Inbound },
        from: if campaign.is_some() { "+15550001000".into() } else { to.replace("+1555", "+1666") },
        to: to.into(),
        channel: None,
        campaign_id: campaign.map(|(c, _)| c),
        contact_id: campaign.map(|(_, contact)| contact),
    };
    store.create_call(&new).await.unwrap().0
}

/// Seeds organization `acme` (and `globex`, whose calls must never count for acme): a running
/// campaign "Spring renewals" with six contacts in every state, and calls of every kind today.
pub async fn seed(store: &Store) -> Seeded {
    let acme = org(store, "acme").await;
    let globex = org(store, "globex").await;
    let campaign = store.create_campaign(acme, "Spring renewals", &serde_json::json!({})).await.unwrap();
    let rows: Vec<NewContactRow> = ["Ann Lee", "Bo Diaz", "Cy Park", "Di Moss", "Ed Fox", "Flo Roy"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (first, last) = name.split_once(' ').unwrap();
            NewContactRow {
                phone: format!("+1555777{i:04}"),
                first_name: Some(first.into()),
                last_name: Some(last.into()),
                ..NewContactRow::default()
            }
        })
        .collect();
    store.add_contacts(acme, campaign.id, &rows).await.unwrap();
    let contacts = store.list_contacts(campaign.id).await.unwrap();
    for (contact, status) in contacts.iter().zip(["done", "pending", "failed", "dialing", "dnc", "done"]) {
        if status != "pending" {
            store.release_contact(contact.id, status, None).await.unwrap();
        }
    }
    store.set_campaign_status(acme, campaign.id, "running").await.unwrap();
    let of = |i: usize| Some((campaign.id, contacts[i].id));

    // Answered and interested, two measured turns, the second with a tool.
    let a = call(store, acme, &contacts[0].phone, of(0)).await;
    store.set_call_status(acme, &a.id, CallStatus::InProgress, None).await.unwrap();
    store.add_turn(acme, &turn(&a.id, 1, latency(1000, 300, 400, 200))).await.unwrap();
    let tool = ToolUse {
        name: "end_call".into(),
        arguments: serde_json::json!({"outcome": "interested"}),
        result: serde_json::json!({"ended": true}),
    };
    let with_tool = NewTurn { tools: vec![tool], ..turn(&a.id, 2, latency(800, 250, 900, 150)) };
    store.add_turn(acme, &with_tool).await.unwrap();
    let analysed = FinishCall { intent_score: Some(0.9), ..finish(CallStatus::Completed, Outcome::Interested) };
    store.finish_call(acme, &a.id, &analysed).await.unwrap();
    // Not answered.
    let b = call(store, acme, &contacts[1].phone, of(1)).await;
    store.finish_call(acme, &b.id, &finish(CallStatus::NoAnswer, Outcome::NoAnswer)).await.unwrap();
    // Answered, then failed: its status is completed, its outcome failed.
    let c = call(store, acme, &contacts[2].phone, of(2)).await;
    store.set_call_status(acme, &c.id, CallStatus::InProgress, None).await.unwrap();
    store.add_turn(acme, &turn(&c.id, 1, latency(1200, 700, 2500, 400))).await.unwrap();
    store.finish_call(acme, &c.id, &finish(CallStatus::Completed, Outcome::Failed)).await.unwrap();
    // Still ringing.
    let d = call(store, acme, &contacts[3].phone, of(3)).await;
    store.set_call_status(acme, &d.id, CallStatus::Ringing, None).await.unwrap();
    // Answered after a busy line, the second attempt of contact 5.
    let e = call(store, acme, &contacts[5].phone, of(5)).await;
    store.finish_call(acme, &e.id, &finish(CallStatus::Busy, Outcome::Busy)).await.unwrap();
    let f = call(store, acme, &contacts[5].phone, of(5)).await;
    store.set_call_status(acme, &f.id, CallStatus::InProgress, None).await.unwrap();
    store.add_turn(acme, &turn(&f.id, 1, latency(900, 280, 600, 180))).await.unwrap();
    store.finish_call(acme, &f.id, &finish(CallStatus::Completed, Outcome::CallbackRequested)).await.unwrap();
    // An inbound call outside the campaign, with a turn that has no measurement (left out).
    let g = call(store, acme, "+15558880001", None).await;
    store.set_call_status(acme, &g.id, CallStatus::InProgress, None).await.unwrap();
    store.add_turn(acme, &turn(&g.id, 0, Latency::default())).await.unwrap();
    store.add_turn(acme, &turn(&g.id, 1, latency(1100, 320, 450, 210))).await.unwrap();
    store.finish_call(acme, &g.id, &finish(CallStatus::Completed, Outcome::NotInterested)).await.unwrap();

    // Another organization's busy day, which must not show.
    for i in 0..3 {
        let other = call(store, globex, &format!("+1555999{i:04}"), None).await;
        store.set_call_status(globex, &other.id, CallStatus::InProgress, None).await.unwrap();
        store.add_turn(globex, &turn(&other.id, 1, latency(9000, 9000, 9000, 9000))).await.unwrap();
        store.finish_call(globex, &other.id, &finish(CallStatus::Completed, Outcome::DoNotCall)).await.unwrap();
    }
    Seeded {
        org_id: acme,
        other_org_id: globex,
        campaign_id: campaign.id,
        campaign_name: campaign.name,
        failed_call: c.id,
        tool_call: a.id,
    }
}

/// The figures worked out from the store's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub calls: i64,
    pub active: i64,
    pub answered: i64,
    pub answer_rate: Option<f64>,
    pub outcomes: BTreeMap<String, i64>,
    pub average_handling_s: Option<f64>,
    /// Stage → (p50, p95), over measured turns.
    pub latency: BTreeMap<&'static str, (Option<u32>, Option<u32>)>,
    /// Campaign only: contacts by state.
    pub contacts: BTreeMap<String, i64>,
}

fn nearest_rank(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank - 1])
}

/// The figures of `org_id`'s calls started since `since` (and, with `campaign`, of that
/// campaign's calls and contacts).
pub async fn expected(store: &Store, org_id: i64, since: DateTime<Utc>, campaign: Option<i64>) -> Expected {
    let filter = CallFilter { since: Some(since), campaign_id: campaign, limit: Some(500), ..Default::default() };
    let calls = store.list_calls(org_id, &filter).await.unwrap().calls;
    let answered: Vec<&Call> = calls.iter().filter(|c| c.answered_at.is_some()).collect();
    let decided = calls.iter().filter(|c| c.answered_at.is_some() || c.ended_at.is_some()).count();
    let handled: Vec<f64> =
        answered.iter().filter_map(|c| Some((c.ended_at? - c.answered_at?).num_microseconds()? as f64 / 1e6)).collect();
    let mut outcomes = BTreeMap::new();
    for c in &calls {
        if let Some(outcome) = c.outcome {
            *outcomes.entry(outcome.as_str().to_owned()).or_insert(0) += 1;
        }
    }
    let mut stages: BTreeMap<&'static str, Vec<u32>> = BTreeMap::new();
    for c in &calls {
        for t in store.turns(org_id, &c.id).await.unwrap() {
            let l = t.latency_ms;
            if l.total == 0 {
                continue;
            }
            for (name, value) in [
                ("endpoint", l.endpoint),
                ("stt", l.stt),
                ("llm_first", l.llm_first),
                ("tts_first", l.tts_first),
                ("total", l.total),
            ] {
                stages.entry(name).or_default().push(value);
            }
        }
    }
    let latency = stages
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_unstable();
            (name, (nearest_rank(&values, 50.0), nearest_rank(&values, 95.0)))
        })
        .collect();
    let mut contacts = BTreeMap::new();
    if let Some(campaign) = campaign {
        for contact in store.list_contacts(campaign).await.unwrap() {
            *contacts.entry(contact.status).or_insert(0) += 1;
        }
    }
    Expected {
        calls: calls.len() as i64,
        active: calls.iter().filter(|c| c.ended_at.is_none()).count() as i64,
        answered: answered.len() as i64,
        answer_rate: (decided > 0).then(|| answered.len() as f64 / decided as f64),
        outcomes,
        average_handling_s: (!handled.is_empty()).then(|| handled.iter().sum::<f64>() / handled.len() as f64),
        latency,
        contacts,
    }
}
