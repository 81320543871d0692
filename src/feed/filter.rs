//! [`Filter`]: what a supervisor narrows its feed to. The hub applies it before queueing; the
//! subscriber's connection updates it when the client sends a new one.

use serde::{Deserialize, Serialize};

use crate::store::{Event, EventKind};

/// What a client may narrow its feed to. Absent fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<EventKind>>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        self.call_id.as_ref().is_none_or(|id| event.call_id.as_ref() == Some(id))
            && self.campaign.is_none_or(|c| event.campaign == Some(c))
            && self.types.as_ref().is_none_or(|types| types.contains(&event.kind))
    }
}
