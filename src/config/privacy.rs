//! `[retention]` and `[redaction]`: how long what callers said is kept, and what of it is
//! never stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::Redactor;

/// The longest retention that may be configured (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// `[retention]`: calls' recordings and words (turns' text, transcripts, after-call analysis
/// text) older than this are purged, by the daily job of `asterai serve` and by `asterai purge`;
/// the calls' metadata stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days to keep a call's recordings and words (0: forever).
    pub days: u32,
    /// Days per organization (slug → days, 0: forever), over `days`.
    pub orgs: BTreeMap<String, u32>,
}

impl RetentionConfig {
    /// The retention of one organization, in days (`None`: kept forever).
    pub fn days_for(&self, slug: &str) -> Option<u32> {
        Some(self.orgs.get(slug).copied().unwrap_or(self.days)).filter(|d| *d > 0)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.days > MAX_RETENTION_DAYS {
            return Err(format!("retention.days: expected 0 to {MAX_RETENTION_DAYS}, got {}", self.days));
        }
        for (slug, days) in &self.orgs {
            crate::store::orgs::validate_slug(slug).map_err(|e| format!("retention.orgs: {e}"))?;
            if *days > MAX_RETENTION_DAYS {
                return Err(format!("retention.orgs.{slug}: expected 0 to {MAX_RETENTION_DAYS}, got {days}"));
            }
        }
        Ok(())
    }
}

/// `[redaction]`: card numbers and configured patterns masked in what is stored (turns,
/// transcripts, analysis, feed events, exports) before it is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Mask in every organization's calls (see `orgs`).
    pub enabled: bool,
    /// Mask card numbers (13 to 19 digits, spaces or dashes allowed, Luhn-checked).
    pub cards: bool,
    /// More regular expressions to mask (e.g. `\b\d{3}-\d{2}-\d{4}\b`).
    pub patterns: Vec<String>,
    /// Per organization (slug → true or false), over `enabled`.
    pub orgs: BTreeMap<String, bool>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig { enabled: false, cards: true, patterns: Vec::new(), orgs: BTreeMap::new() }
    }
}

impl RedactionConfig {
    /// The redaction policy, or `None` when no organization has redaction on.
    pub fn policy(&self) -> Result<Option<crate::types::redact::Redaction>, String> {
        if !self.enabled && !self.orgs.values().any(|on| *on) {
            return Ok(None);
        }
        let redactor = Redactor::new(self.cards, &self.patterns).map_err(|e| format!("redaction.patterns: {e}"))?;
        Ok(Some(crate::types::redact::Redaction::new(redactor, self.enabled, self.orgs.clone())))
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        for slug in self.orgs.keys() {
            crate::store::orgs::validate_slug(slug).map_err(|e| format!("redaction.orgs: {e}"))?;
        }
        Redactor::new(self.cards, &self.patterns).map_err(|e| format!("redaction.patterns: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn retention_and_redaction_are_checked_at_load() {
        let config = Config::from_toml("[retention]\ndays = 90\norgs = { acme = 30, beta = 0 }\n").unwrap();
        assert_eq!(
            (config.retention.days_for("acme"), config.retention.days_for("beta"), config.retention.days_for("x")),
            (Some(30), None, Some(90))
        );
        assert_eq!(Config::default().retention.days_for("acme"), None, "kept forever by default");
        assert!(Config::default().redaction.policy().unwrap().is_none(), "redaction is off by default");
        let on = Config::from_toml("[redaction]\norgs = { acme = true }\n").unwrap();
        let policy = on.redaction.policy().unwrap().expect("one organization masks");
        assert!(policy.for_org("acme").is_some() && policy.for_org("beta").is_none());
        for (text, key) in [
            ("[retention]\ndays = 40000\n", "retention.days"),
            ("[retention]\norgs = { Acme = 3 }\n", "retention.orgs"),
            ("[retention]\norgs = { acme = 99999 }\n", "retention.orgs.acme"),
            ("[redaction]\npatterns = [\"(\"]\n", "redaction.patterns"),
            ("[redaction]\npatterns = [\"a*\"]\n", "redaction.patterns"),
            ("[redaction]\norgs = { \"a b\" = true }\n", "redaction.orgs"),
            ("[redaction]\nmask = \"x\"\n", "redaction.mask"),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
