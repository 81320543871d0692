//! Calling rules by region, caps per number and holidays, on top of a campaign's window.
//!
//! Nothing here is legal advice: the shipped figures are the common US ones, for an
//! organization to check and override.
//!
//! * **Where a contact is.** Its region is its `state` column (`FL`, `Florida`, `US-FL`), else
//!   the region of its number's area code (`data/area_codes.csv`, NANP only). The timezones it
//!   may be in are its `timezone` column, else every timezone its area code spans (850 spans
//!   Central and Eastern: a call must be inside the hours in both), else the campaign's.
//! * **Rules** (`data/calling_rules.toml`, embedded): `US` applies to every `US-XX` region, `US-FL`
//!   to Florida. Each says the local hours calls may start and, optionally, how many calls one
//!   number may get about one subject (one campaign) in 24 hours.
//! * **Per organization** (the file named by `dialer.compliance`, TOML): rules that replace the
//!   shipped rule of the same region or add new ones, caps per number across the organization's
//!   campaigns (24 hours and 30 days), holidays, and the abandonment policy. A `[defaults]`
//!   table applies to every organization, `[orgs.<slug>]` to one. A config file rather than a
//!   REST endpoint: the rules are legal policy that belongs under review with the rest of the
//!   deployment, every daemon of a fleet reads the same file, and no token, leaked or not, can
//!   widen the hours a number may be called.
//!
//! [`Policy::check`] is run when a contact is claimed and again just before it is dialed; every
//! verdict is stored in `compliance_checks` with its reason, region and local time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Duration as Span, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::campaign::{CallingWindow, parse_tz};

/// The shipped rules.
const SHIPPED_RULES: &str = include_str!("../../data/calling_rules.toml");
/// The NANP area codes: region and timezones (see the file's header for its source).
const AREA_CODES: &str = include_str!("../../data/area_codes.csv");

/// One NANP area code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaCode {
    /// `US-FL`, `CA-ON`, or another NANP country's ISO code (`JM`).
    pub region: String,
    /// Every timezone the area code spans.
    pub timezones: Vec<Tz>,
}

fn area_codes() -> &'static HashMap<u16, AreaCode> {
    static TABLE: OnceLock<HashMap<u16, AreaCode>> = OnceLock::new();
    TABLE.get_or_init(|| {
        AREA_CODES
            .lines()
            .filter(|line| !line.starts_with('#') && !line.starts_with("npa,") && !line.trim().is_empty())
            .filter_map(|line| {
                let mut parts = line.split(',');
                let npa = parts.next()?.trim().parse().ok()?;
                let region = parts.next()?.trim().to_owned();
                let timezones = parts.next()?.split_whitespace().filter_map(|t| t.parse::<Tz>().ok()).collect();
                Some((npa, AreaCode { region, timezones }))
            })
            .collect()
    })
}

/// The area code of an E.164 NANP number (`+1NPA…`), when the table knows it.
pub fn area_code(number: &str) -> Option<&'static AreaCode> {
    let digits = number.strip_prefix("+1")?;
    if digits.len() != 10 {
        return None;
    }
    area_codes().get(&digits.get(..3)?.parse().ok()?)
}

/// How many area codes the table holds.
pub fn area_code_count() -> usize {
    area_codes().len()
}

const US_STATES: &[(&str, &str)] = &[
    ("AL", "Alabama"),
    ("AK", "Alaska"),
    ("AZ", "Arizona"),
    ("AR", "Arkansas"),
    ("CA", "California"),
    ("CO", "Colorado"),
    ("CT", "Connecticut"),
    ("DE", "Delaware"),
    ("DC", "District of Columbia"),
    ("FL", "Florida"),
    ("GA", "Georgia"),
    ("HI", "Hawaii"),
    ("ID", "Idaho"),
    ("IL", "Illinois"),
    ("IN", "Indiana"),
    ("IA", "Iowa"),
    ("KS", "Kansas"),
    ("KY", "Kentucky"),
    ("LA", "Louisiana"),
    ("ME", "Maine"),
    ("MD", "Maryland"),
    ("MA", "Massachusetts"),
    ("MI", "Michigan"),
    ("MN", "Minnesota"),
    ("MS", "Mississippi"),
    ("MO", "Missouri"),
    ("MT", "Montana"),
    ("NE", "Nebraska"),
    ("NV", "Nevada"),
    ("NH", "New Hampshire"),
    ("NJ", "New Jersey"),
    ("NM", "New Mexico"),
    ("NY", "New York"),
    ("NC", "North Carolina"),
    ("ND", "North Dakota"),
    ("OH", "Ohio"),
    ("OK", "Oklahoma"),
    ("OR", "Oregon"),
    ("PA", "Pennsylvania"),
    ("RI", "Rhode Island"),
    ("SC", "South Carolina"),
    ("SD", "South Dakota"),
    ("TN", "Tennessee"),
    ("TX", "Texas"),
    ("UT", "Utah"),
    ("VT", "Vermont"),
    ("VA", "Virginia"),
    ("WA", "Washington"),
    ("WV", "West Virginia"),
    ("WI", "Wisconsin"),
    ("WY", "Wyoming"),
    ("PR", "Puerto Rico"),
    ("GU", "Guam"),
    ("VI", "U.S. Virgin Islands"),
    ("AS", "American Samoa"),
    ("MP", "Northern Mariana Islands"),
];

/// A contact's `state` column as a region: `FL`, `fl`, `Florida` and `US-FL` are all `US-FL`;
/// other ISO 3166-2 codes (`CA-ON`) are kept. The error says what was expected.
pub fn region_of_state(text: &str) -> Result<String, String> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    if let Some((code, _)) = US_STATES.iter().find(|(code, name)| upper == *code || text.eq_ignore_ascii_case(name)) {
        return Ok(format!("US-{code}"));
    }
    let iso = upper.len() <= 6
        && upper.split_once('-').is_some_and(|(country, sub)| {
            country.len() == 2
                && country.bytes().all(|b| b.is_ascii_uppercase())
                && (1..=3).contains(&sub.len())
                && sub.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if iso {
        return Ok(upper);
    }
    Err(format!("state: expected a US state (FL, Florida) or an ISO 3166-2 code (US-FL, CA-ON), got {text:?}"))
}

/// A calling rule for a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// `US` (every US state and territory) or an ISO 3166-2 code (`US-FL`).
    pub region: String,
    /// `HH:MM`, local time, inclusive.
    pub start: String,
    /// `HH:MM`, local time, exclusive.
    pub end: String,
    /// Calls to one number about one subject (one campaign) in 24 hours, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_24h_per_campaign: Option<u32>,
    /// Where the rule comes from (a statute, a policy).
    #[serde(default)]
    pub source: String,
}

/// A rule, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub region: String,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub max_per_24h_per_campaign: Option<u32>,
    pub source: String,
}

impl Rule {
    fn parse(spec: &RuleSpec, at: &str) -> Result<Rule, String> {
        let time = |field: &str, text: &str| {
            NaiveTime::parse_from_str(text.trim(), "%H:%M")
                .map_err(|_| format!("{at}: rule {}: {field}: expected HH:MM such as 08:00, got {text:?}", spec.region))
        };
        let (start, end) = (time("start", &spec.start)?, time("end", &spec.end)?);
        if start >= end {
            return Err(format!("{at}: rule {}: start {} must come before end {}", spec.region, spec.start, spec.end));
        }
        let region = spec.region.trim().to_ascii_uppercase();
        if region.len() != 2 && region_of_state(&region).as_deref() != Ok(region.as_str()) {
            return Err(format!(
                "{at}: rule region: expected a country (US) or an ISO 3166-2 code (US-FL), got {:?}",
                spec.region
            ));
        }
        Ok(Rule {
            region,
            start,
            end,
            max_per_24h_per_campaign: spec.max_per_24h_per_campaign,
            source: spec.source.clone(),
        })
    }

    /// Whether the rule covers `region`: its own, or its country's (`US` covers `US-FL`).
    pub fn covers(&self, region: &str) -> bool {
        region == self.region || region.split_once('-').is_some_and(|(country, _)| country == self.region)
    }
}

/// Attempts to one number across all the organization's campaigns, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Caps {
    pub per_24h: u32,
    pub per_30d: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { per_24h: 3, per_30d: 15 }
    }
}

/// When a campaign's abandon rate slows it, then pauses it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbandonPolicy {
    /// Percent of answered live calls abandoned over the rolling 30 days.
    pub threshold: f64,
    /// Answered live calls before the rate is acted on (a rate over 3 calls means little).
    pub min_answered: u32,
    /// Answered live calls after the slowdown before a rate still above pauses the campaign.
    pub pause_after: u32,
    /// Milliseconds from answer to the first agent audio past which a live call is abandoned.
    pub max_wait_ms: u32,
}

impl Default for AbandonPolicy {
    fn default() -> Self {
        AbandonPolicy { threshold: 3.0, min_answered: 20, pause_after: 10, max_wait_ms: 2000 }
    }
}

/// One organization's part of the compliance file (or its `[defaults]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrgSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
    /// `YYYY-MM-DD`: days no campaign of the organization calls (the contact's local date).
    pub holidays: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandon: Option<AbandonPolicy>,
    /// Replace the shipped rule of the same region, or add one.
    pub rules: Vec<RuleSpec>,
    /// Regions where recording a call needs every party's consent (`CA`, `US-FL`, `Florida`):
    /// replaces the shipped list (`[]`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_party_consent_regions: Option<Vec<String>>,
}

/// The compliance file (`dialer.compliance`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceFile {
    pub defaults: OrgSpec,
    pub orgs: HashMap<String, OrgSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Shipped {
    rule: Vec<RuleSpec>,
    all_party_consent_regions: Vec<String>,
}

fn shipped() -> Result<Shipped, String> {
    toml::from_str::<Shipped>(SHIPPED_RULES).map_err(|e| e.to_string())
}

/// The shipped regions whose calls are recorded only with every party's consent.
pub fn shipped_consent_regions() -> Vec<String> {
    shipped().and_then(|s| consent_regions("data/calling_rules.toml", &s.all_party_consent_regions)).unwrap_or_else(
        |e| {
            tracing::error!("the shipped all-party consent regions are unreadable: {e}");
            Vec::new()
        },
    )
}

/// Regions as `US-FL` (a US state, or an ISO 3166-2 code; a bare country `US` is kept).
fn consent_regions(at: &str, regions: &[String]) -> Result<Vec<String>, String> {
    regions
        .iter()
        .map(|r| {
            let upper = r.trim().to_ascii_uppercase();
            if upper.len() == 2 && upper.bytes().all(|b| b.is_ascii_uppercase()) && region_of_state(&upper).is_err() {
                return Ok(upper);
            }
            region_of_state(r).map_err(|e| format!("{at}.all_party_consent_regions: {e}"))
        })
        .collect()
}

/// The shipped rules, parsed.
pub fn shipped_rules() -> Vec<Rule> {
    // The file is part of the binary and checked by a test; a broken one is a build mistake.
    shipped().and_then(|s| s.rule.iter().map(|r| Rule::parse(r, "data/calling_rules.toml")).collect()).unwrap_or_else(
        |e| {
            tracing::error!("the shipped calling rules are unreadable: {e}");
            Vec::new()
        },
    )
}

/// Every organization's rules: the shipped ones with the compliance file on top.
#[derive(Debug, Clone)]
pub struct Compliance {
    defaults: Policy,
    orgs: HashMap<String, Policy>,
}

impl Default for Compliance {
    fn default() -> Self {
        Compliance::from_file(&ComplianceFile::default()).unwrap_or_else(|_| Compliance {
            defaults: Policy {
                rules: shipped_rules(),
                all_party_consent: shipped_consent_regions(),
                ..Policy::default()
            },
            orgs: HashMap::new(),
        })
    }
}

impl Compliance {
    /// Reads the compliance file; an empty path is the shipped rules and the defaults.
    pub fn load(path: &str) -> Result<Compliance, String> {
        if path.trim().is_empty() {
            return Ok(Compliance::default());
        }
        let text = std::fs::read_to_string(Path::new(path))
            .map_err(|e| format!("dialer.compliance: cannot read {path}: {e}"))?;
        Compliance::parse(&text).map_err(|e| format!("dialer.compliance ({path}): {e}"))
    }

    /// Parses the compliance file's text.
    pub fn parse(text: &str) -> Result<Compliance, String> {
        let file: ComplianceFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Compliance::from_file(&file)
    }

    pub fn from_file(file: &ComplianceFile) -> Result<Compliance, String> {
        let shipped =
            Policy { rules: shipped_rules(), all_party_consent: shipped_consent_regions(), ..Policy::default() };
        let defaults = Policy::build(&shipped, &file.defaults, "defaults")?;
        let mut orgs = HashMap::new();
        for (slug, spec) in &file.orgs {
            orgs.insert(slug.clone(), Policy::build(&defaults, spec, &format!("orgs.{slug}"))?);
        }
        Ok(Compliance { defaults, orgs })
    }

    /// The policy of one organization.
    pub fn for_org(&self, slug: &str) -> &Policy {
        self.orgs.get(slug).unwrap_or(&self.defaults)
    }
}

/// One organization's rules, caps, holidays and abandonment policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub caps: Caps,
    pub holidays: Vec<NaiveDate>,
    pub abandon: AbandonPolicy,
    /// Regions (`US-FL`, or a country `DE`) where recording needs every party's consent.
    pub all_party_consent: Vec<String>,
}

/// `YYYY-MM-DD` dates; the error names `field`.
pub fn parse_dates(field: &str, dates: &[String]) -> Result<Vec<NaiveDate>, String> {
    dates
        .iter()
        .map(|d| {
            NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
                .map_err(|_| format!("{field}: expected dates as YYYY-MM-DD such as 2026-12-25, got {d:?}"))
        })
        .collect()
}

impl Policy {
    /// Whether recording a call to `region` needs every party's consent: the region is listed,
    /// or its country is (`DE` covers `DE-BY`).
    pub fn needs_all_party_consent(&self, region: &str) -> bool {
        self.all_party_consent
            .iter()
            .any(|listed| listed == region || region.split_once('-').is_some_and(|(country, _)| country == listed))
    }

    fn build(base: &Policy, spec: &OrgSpec, at: &str) -> Result<Policy, String> {
        let mut rules = base.rules.clone();
        for spec in &spec.rules {
            let rule = Rule::parse(spec, at)?;
            rules.retain(|r| r.region != rule.region);
            rules.push(rule);
        }
        let caps = spec.caps.unwrap_or(base.caps);
        if caps.per_24h == 0 || caps.per_30d == 0 || caps.per_24h > caps.per_30d {
            return Err(format!(
                "{at}.caps: expected 1 ≤ per_24h ≤ per_30d, got per_24h = {}, per_30d = {}",
                caps.per_24h, caps.per_30d
            ));
        }
        let abandon = spec.abandon.unwrap_or(base.abandon);
        if !(abandon.threshold > 0.0 && abandon.threshold <= 100.0) {
            return Err(format!("{at}.abandon.threshold: expected a percentage above 0, got {}", abandon.threshold));
        }
        let mut holidays = base.holidays.clone();
        holidays.extend(parse_dates(&format!("{at}.holidays"), &spec.holidays)?);
        let all_party_consent = match &spec.all_party_consent_regions {
            Some(regions) => consent_regions(at, regions)?,
            None => base.all_party_consent.clone(),
        };
        Ok(Policy { rules, caps, holidays, abandon, all_party_consent })
    }
}

/// Where a contact is, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// `US-FL`; none when neither the contact nor its number say.
    pub region: Option<String>,
    /// `state`, `area_code` or `unknown`.
    pub region_from: &'static str,
    /// Every timezone the contact may be in (at least one).
    pub timezones: Vec<Tz>,
}

impl Place {
    /// From the contact's `state`, `timezone` and number, with `default_tz` (the campaign's)
    /// when nothing says.
    pub fn of(number: &str, state: Option<&str>, timezone: Option<&str>, default_tz: Tz) -> Place {
        let code = area_code(number);
        let state = state.and_then(|s| region_of_state(s).ok());
        let (region, region_from) = match (state, code) {
            (Some(state), _) => (Some(state), "state"),
            (None, Some(code)) => (Some(code.region.clone()), "area_code"),
            (None, None) => (None, "unknown"),
        };
        let timezones = match (timezone.and_then(|t| parse_tz(t).ok()), code) {
            (Some(tz), _) => vec![tz],
            // The area code's zones only when they belong to the contact's region.
            (None, Some(code)) if !code.timezones.is_empty() && region.as_deref() == Some(code.region.as_str()) => {
                code.timezones.clone()
            }
            _ => vec![default_tz],
        };
        Place { region, region_from, timezones }
    }

    /// The local time at `at` in each of the contact's timezones (`2026-11-23 10:00 America/New_York`).
    pub fn local_time(&self, at: DateTime<Utc>) -> String {
        self.timezones
            .iter()
            .map(|tz| format!("{} {tz}", at.with_timezone(tz).format("%Y-%m-%d %H:%M")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Calls to a number of the organization in the last 30 days: when each started and its campaign.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub calls: Vec<(DateTime<Utc>, Option<i64>)>,
}

/// Why a contact may not be called now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Window,
    RegionRule,
    Cap,
    Holiday,
    DoNotCall,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Window => "window",
            Reason::RegionRule => "region_rule",
            Reason::Cap => "cap",
            Reason::Holiday => "holiday",
            Reason::DoNotCall => "do_not_call",
        }
    }
}

/// What [`Policy::check`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed; `detail` lists them.
    Pass { detail: String },
    /// Not now: the first failed check, and the first time every check passes.
    Refuse { reason: Reason, detail: String, not_before: DateTime<Utc> },
}

/// What a campaign adds to its organization's policy.
pub struct CampaignRules<'a> {
    pub campaign_id: i64,
    pub window: &'a CallingWindow,
    pub holidays: &'a [NaiveDate],
}

const DAY: i64 = 24 * 3600;

impl Policy {
    /// The checks for one contact at `now`. See the module docs.
    pub fn check(&self, campaign: &CampaignRules<'_>, place: &Place, history: &History, now: DateTime<Utc>) -> Verdict {
        let first = match self.refusal_at(campaign, place, history, now) {
            None => return Verdict::Pass { detail: self.passed(campaign, place, history, now) },
            Some(first) => first,
        };
        // The first instant every check passes: each refusal says when it lifts; look again there.
        let mut at = now;
        let mut lifts = Some(first.2);
        for _ in 0..64 {
            let Some(next) = lifts else { break };
            at = next.max(at + Span::seconds(1));
            lifts = self.refusal_at(campaign, place, history, at).map(|r| r.2);
        }
        Verdict::Refuse { reason: first.0, detail: first.1, not_before: at }
    }

    fn rules_for<'r>(&'r self, place: &'r Place) -> impl Iterator<Item = &'r Rule> + 'r {
        self.rules.iter().filter(move |r| place.region.as_deref().is_some_and(|region| r.covers(region)))
    }

    /// The first failed check at `at`, with when it lifts.
    fn refusal_at(
        &self,
        campaign: &CampaignRules<'_>,
        place: &Place,
        history: &History,
        at: DateTime<Utc>,
    ) -> Option<(Reason, String, DateTime<Utc>)> {
        for tz in &place.timezones {
            let date = at.with_timezone(tz).date_naive();
            if campaign.holidays.contains(&date) || self.holidays.contains(&date) {
                let whose = if campaign.holidays.contains(&date) { "the campaign's" } else { "the organization's" };
                let lifts = local_midnight_after(date, *tz).unwrap_or(at + Span::seconds(DAY));
                return Some((Reason::Holiday, format!("{date} is {whose} holiday in {tz}"), lifts));
            }
        }
        for tz in &place.timezones {
            if !campaign.window.allows(at, *tz) {
                let lifts = campaign.window.next_open(at, *tz);
                let local = at.with_timezone(tz).format("%a %H:%M");
                return Some((
                    Reason::Window,
                    format!(
                        "{local} in {tz} is outside the campaign's window {}–{}",
                        campaign.window.start.format("%H:%M"),
                        campaign.window.end.format("%H:%M")
                    ),
                    lifts,
                ));
            }
        }
        let region = place.region.as_deref().unwrap_or("");
        for rule in self.rules_for(place) {
            for tz in &place.timezones {
                let time = at.with_timezone(tz).time();
                if time < rule.start || time >= rule.end {
                    return Some((
                        Reason::RegionRule,
                        format!(
                            "{} in {tz} is outside {}'s calling hours {}–{} ({region})",
                            at.with_timezone(tz).format("%H:%M"),
                            rule.region,
                            rule.start.format("%H:%M"),
                            rule.end.format("%H:%M")
                        ),
                        next_local(at, *tz, rule.start),
                    ));
                }
            }
        }
        let since = |span: i64| {
            let from = at - Span::seconds(span);
            let mut starts: Vec<_> = history.calls.iter().filter(|(t, _)| *t > from && *t <= at).collect();
            starts.sort_by_key(|(t, _)| *t);
            starts
        };
        for rule in self.rules_for(place) {
            if let Some(max) = rule.max_per_24h_per_campaign {
                let same: Vec<_> = since(DAY).into_iter().filter(|(_, c)| *c == Some(campaign.campaign_id)).collect();
                if same.len() as u32 >= max {
                    let lifts = same[same.len() - max as usize].0 + Span::seconds(DAY);
                    return Some((
                        Reason::RegionRule,
                        format!(
                            "{} calls to this number in this campaign in 24 h; {} allows {max} ({region})",
                            same.len(),
                            rule.region
                        ),
                        lifts,
                    ));
                }
            }
        }
        for (span, cap, label) in [(DAY, self.caps.per_24h, "24 h"), (30 * DAY, self.caps.per_30d, "30 days")] {
            let starts = since(span);
            if starts.len() as u32 >= cap {
                let lifts = starts[starts.len() - cap as usize].0 + Span::seconds(span);
                return Some((
                    Reason::Cap,
                    format!(
                        "{} calls to this number in {label} across the organization's campaigns; the cap is {cap}",
                        starts.len()
                    ),
                    lifts,
                ));
            }
        }
        None
    }

    fn passed(&self, campaign: &CampaignRules<'_>, place: &Place, history: &History, at: DateTime<Utc>) -> String {
        let mut checks =
            vec![format!("window {}–{}", campaign.window.start.format("%H:%M"), campaign.window.end.format("%H:%M"))];
        for rule in self.rules_for(place) {
            checks.push(format!("{} {}–{}", rule.region, rule.start.format("%H:%M"), rule.end.format("%H:%M")));
        }
        let count = |span: i64| history.calls.iter().filter(|(t, _)| *t > at - Span::seconds(span) && *t <= at).count();
        checks.push(format!(
            "cap {}/{} in 24 h, {}/{} in 30 days",
            count(DAY),
            self.caps.per_24h,
            count(30 * DAY),
            self.caps.per_30d
        ));
        checks.push("no holiday".into());
        checks.push("not on the do-not-call list".into());
        format!("passed: {}", checks.join("; "))
    }
}

/// The first instant at or after `at` when the local time in `tz` is `time` (today or later).
fn next_local(at: DateTime<Utc>, tz: Tz, time: NaiveTime) -> DateTime<Utc> {
    let local = at.with_timezone(&tz);
    for offset in 0..3 {
        let Some(date) = local.date_naive().checked_add_signed(Span::days(offset)) else { break };
        if let Some(t) = local_instant(date, time, tz)
            && t >= at
        {
            return t;
        }
    }
    at + Span::seconds(DAY)
}

fn local_midnight_after(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    local_instant(date.succ_opt()?, NaiveTime::MIN, tz)
}

/// A local date and time as an instant; a time in a DST gap becomes the first valid one after.
fn local_instant(date: NaiveDate, time: NaiveTime, tz: Tz) -> Option<DateTime<Utc>> {
    let naive = date.and_time(time);
    let found = match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => Some(t),
        chrono::LocalResult::None => match tz.from_local_datetime(&(naive + Span::hours(1))) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => Some(t),
            chrono::LocalResult::None => None,
        },
    };
    found.map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::CampaignSettings;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_tables_load() {
        assert_eq!(shipped_rules().len(), 3);
        assert!(area_code_count() > 400, "{}", area_code_count());
        let miami = area_code("+13055550100").unwrap();
        assert_eq!((miami.region.as_str(), miami.timezones.clone()), ("US-FL", vec![chrono_tz::America::New_York]));
        assert_eq!(area_code("+18505550100").unwrap().timezones.len(), 2);
        assert_eq!(area_code("+14055550100").unwrap().region, "US-OK");
        assert_eq!(area_code("+18005550100"), None);
        assert_eq!(area_code("+442071234567"), None);
        // Every state and DC has at least one area code.
        for (code, _) in US_STATES {
            let region = format!("US-{code}");
            assert!(area_codes().values().any(|a| a.region == region), "no area code for {region}");
        }
    }

    #[test]
    fn states_read_as_regions() {
        for text in ["FL", "fl", "Florida", "US-FL", " us-fl "] {
            assert_eq!(region_of_state(text).unwrap(), "US-FL", "{text}");
        }
        assert_eq!(region_of_state("CA-ON").unwrap(), "CA-ON");
        assert!(region_of_state("Atlantis").unwrap_err().contains("state"));
    }

    #[test]
    fn florida_closes_at_eight_and_california_at_nine() {
        let policy = Compliance::default().for_org("any").clone();
        let window = CampaignSettings::default().calling_window().unwrap();
        let campaign = CampaignRules { campaign_id: 1, window: &window, holidays: &[] };
        // Monday 20:30 in New York and Miami, 17:30 in Los Angeles.
        let now = at("2026-11-24T01:30:00Z");
        let florida = Place::of("+15555550100", Some("FL"), Some("America/New_York"), Tz::UTC);
        match policy.check(&campaign, &florida, &History::default(), now) {
            Verdict::Refuse { reason: Reason::RegionRule, not_before, .. } => {
                assert_eq!(not_before, at("2026-11-24T13:00:00Z"))
            }
            other => panic!("{other:?}"),
        }
        let california = Place::of("+14155550100", None, None, Tz::UTC);
        assert_eq!(california.region.as_deref(), Some("US-CA"));
        assert!(matches!(policy.check(&campaign, &california, &History::default(), now), Verdict::Pass { .. }));
        // 850 spans Central and Eastern time: 07:30 Central is too early even though it is 08:30 Eastern.
        let panhandle = Place::of("+18505550100", None, None, Tz::UTC);
        match policy.check(&campaign, &panhandle, &History::default(), at("2026-11-23T13:30:00Z")) {
            Verdict::Refuse { reason: Reason::Window, not_before, .. } => {
                assert_eq!(not_before, at("2026-11-23T14:00:00Z"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn organizations_override_and_add() {
        let file = r#"
            [defaults]
            caps = { per_24h = 2, per_30d = 5 }
            holidays = ["2026-12-25"]
            [orgs.acme]
            rules = [{ region = "US-FL", start = "09:00", end = "19:00" }, { region = "US-TX", start = "09:00", end = "20:00" }]
        "#;
        let compliance = Compliance::parse(file).unwrap();
        let acme = compliance.for_org("acme");
        assert_eq!(acme.caps.per_24h, 2);
        let florida = acme.rules.iter().filter(|r| r.region == "US-FL").collect::<Vec<_>>();
        assert_eq!(florida.len(), 1);
        assert_eq!(florida[0].start, NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        assert!(acme.rules.iter().any(|r| r.region == "US-TX"));
        assert!(!compliance.for_org("other").rules.iter().any(|r| r.region == "US-TX"));
        for (bad, why) in [
            ("[defaults]\ncaps = { per_24h = 0 }", "caps"),
            ("[orgs.a]\nrules = [{ region = \"US-FL\", start = \"9\", end = \"20:00\" }]", "start"),
            ("[orgs.a]\nholidays = [\"25/12\"]", "holidays"),
            ("[orgs.a]\nrules = [{ region = \"Florida!\", start = \"09:00\", end = \"20:00\" }]", "region"),
            ("[nope]", "unknown field"),
        ] {
            let err = Compliance::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn caps_lift_when_the_oldest_call_leaves_the_span() {
        let policy = Policy { rules: shipped_rules(), caps: Caps { per_24h: 2, per_30d: 10 }, ..Policy::default() };
        let window = CampaignSettings::default().calling_window().unwrap();
        let campaign = CampaignRules { campaign_id: 1, window: &window, holidays: &[] };
        let place = Place::of("+14155550100", None, None, Tz::UTC);
        let history =
            History { calls: vec![(at("2026-11-23T17:00:00Z"), Some(2)), (at("2026-11-23T18:00:00Z"), Some(1))] };
        match policy.check(&campaign, &place, &history, at("2026-11-23T19:00:00Z")) {
            Verdict::Refuse { reason: Reason::Cap, not_before, .. } => {
                assert_eq!(not_before, at("2026-11-24T17:00:00Z"))
            }
            other => panic!("{other:?}"),
        }
    }
}
