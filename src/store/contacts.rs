//! Contacts: the people a campaign calls, with fields for the prompt.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, RowExt, Store, StoreError, now, with_pool, write_tx};

/// A contact as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    pub id: i64,
    pub org_id: i64,
    pub campaign_id: Option<i64>,
    pub phone: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub company: Option<String>,
    pub timezone: Option<String>,
    /// The region whose calling rules apply (`FL`, `US-FL`); none: the number's area code's.
    pub state: Option<String>,
    /// Extra columns of the import, for the prompt.
    pub fields: BTreeMap<String, String>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    /// The call of the latest attempt.
    pub last_call_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Contact {
    /// Every field by name, for templates and prompts: the named columns and the extra ones.
    pub fn values(&self) -> BTreeMap<String, String> {
        let mut values = self.fields.clone();
        for (key, value) in [
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("email", &self.email),
            ("contact_company", &self.company),
            ("timezone", &self.timezone),
            ("state", &self.state),
        ] {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                values.insert(key.to_owned(), value.clone());
            }
        }
        values.insert("phone".to_owned(), self.phone.clone());
        values
    }
}

pub(crate) const CONTACT_COLUMNS: &str = "SELECT id, org_id, campaign_id, phone, first_name, last_name, email, company, timezone, state, fields, \
     status, attempts, next_attempt_at, last_outcome, last_call_id, created_at FROM contacts";

pub(crate) fn contact_from(row: &impl RowExt) -> Result<Contact> {
    let fields = match row.json("fields")? {
        serde_json::Value::Object(map) => {
            map.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
        }
        _ => BTreeMap::new(),
    };
    Ok(Contact {
        id: row.int("id")?,
        org_id: row.int("org_id")?,
        campaign_id: row.opt_int("campaign_id")?,
        phone: row.text("phone")?,
        first_name: row.opt_text("first_name")?,
        last_name: row.opt_text("last_name")?,
        email: row.opt_text("email")?,
        company: row.opt_text("company")?,
        timezone: row.opt_text("timezone")?,
        state: row.opt_text("state")?,
        fields,
        status: row.text("status")?,
        attempts: row.int32("attempts")?,
        next_attempt_at: row.opt_time("next_attempt_at")?,
        last_outcome: row.opt_text("last_outcome")?,
        last_call_id: row.opt_text("last_call_id")?,
        created_at: row.time("created_at")?,
    })
}

impl Store {
    /// A contact of one organization.
    pub async fn contact(&self, org_id: i64, id: i64) -> Result<Option<Contact>> {
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CONTACT_COLUMNS} WHERE org_id = $1 AND id = $2")))
                .bind(org_id)
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| contact_from(&r)).transpose()
        })
    }
}

/// A contact to add to a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NewContactRow {
    /// E.164.
    pub phone: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub company: Option<String>,
    pub timezone: Option<String>,
    /// The region whose calling rules apply (see [`crate::dialer::compliance`]).
    pub state: Option<String>,
    pub fields: BTreeMap<String, String>,
}

/// What the claimer decides about a contact that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Call it now.
    Dial,
    /// Not before this time (outside its calling window).
    Later(DateTime<Utc>),
    /// Not before `refusal.not_before`, for the reason recorded in `compliance_checks`.
    Refuse(Refusal),
}

/// A compliance check that refused a contact (see [`crate::dialer::compliance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `window`, `region_rule`, `cap`, `holiday`, `do_not_call`.
    pub reason: &'static str,
    pub detail: String,
    pub not_before: DateTime<Utc>,
    pub region: Option<String>,
    pub local_time: String,
}

/// Calls placed to a number of an organization since `since` (its passed dial checks, timed by
/// the dialer's clock): when each was placed, and its campaign (for the caps per number and the
/// rules per campaign).
pub(crate) const NUMBER_HISTORY: &str = "SELECT at, campaign_id FROM compliance_checks \
     WHERE org_id = $1 AND number = $2 AND stage = 'dial' AND passed = $3 AND at > $4";

/// A row of `compliance_checks`.
pub(crate) const INSERT_CHECK: &str = "INSERT INTO compliance_checks (org_id, campaign_id, contact_id, call_id, number, stage, passed, reason, detail, region, local_time, not_before, at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// A claim of due contacts for one campaign, under the fleet-wide limits. See
/// [`Store::claim_contacts`].
pub struct Claim<'a> {
    pub campaign_id: i64,
    /// Who claims: unique per daemon.
    pub claimer: &'a str,
    /// The dialer's clock.
    pub now: DateTime<Utc>,
    /// How long the claim holds without renewal.
    pub lease: std::time::Duration,
    /// Contacts of the campaign being dialed at once, fleet-wide.
    pub max_concurrent: i64,
    /// Least time between two claims of the campaign, fleet-wide (zero: none).
    pub pacing: std::time::Duration,
    /// Given the contact and the calls to its number in its organization over the last 30 days.
    pub decide: &'a (dyn Fn(&Contact, &crate::dialer::compliance::History) -> Decision + Send + Sync),
}

/// What a claim did.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// Claimed: status `dialing`, `attempts` counted, leased to the claimer.
    pub contacts: Vec<Contact>,
    /// Due but outside their calling window (or refused by a compliance check): moved to
    /// their next opening.
    pub deferred: usize,
    /// Refused by a compliance check, by reason (`region_rule`, `cap`, …; included in `deferred`).
    pub refused: BTreeMap<&'static str, usize>,
    /// Found on the do-not-call list: status `dnc`, never dialed.
    pub do_not_call: usize,
    /// With pacing: when the campaign's next claim may take a contact (its last call start
    /// plus the pacing), so a runner can claim then rather than at its next poll.
    pub next_claim_at: Option<DateTime<Utc>>,
}

/// How a contact's attempt ended.
#[derive(Debug, Clone)]
pub struct Settle {
    /// `pending` (to be called again at `next_attempt_at`), `done` or `failed`.
    pub status: &'static str,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_outcome: String,
    pub at: DateTime<Utc>,
}

/// `at` plus `span` (a lease, a pacing), checked: a span too long for the calendar is an error
/// naming `what`, never a panic.
pub fn later_by(at: DateTime<Utc>, span: std::time::Duration, what: &str) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| at.checked_add_signed(span))
        .ok_or_else(|| StoreError::Invalid(format!("{what} of {span:?} after {at} is past the end of the calendar")))
}

impl Store {
    /// Adds contacts to a campaign in one transaction. Returns, per row, whether it was added:
    /// a number the campaign has already is skipped, so importing twice adds nothing.
    pub async fn add_contacts(&self, org_id: i64, campaign_id: i64, rows: &[NewContactRow]) -> Result<Vec<bool>> {
        let at = now();
        let added = write_tx!(self, tx => {
            let mut added = Vec::with_capacity(rows.len());
            for row in rows {
                let fields = serde_json::to_value(&row.fields).unwrap_or_default();
                let n = sqlx::query(
                    "INSERT INTO contacts (org_id, campaign_id, phone, first_name, last_name, email, company, timezone, state, fields, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $11) ON CONFLICT (campaign_id, phone) DO NOTHING",
                )
                .bind(org_id)
                .bind(campaign_id)
                .bind(&row.phone)
                .bind(row.first_name.as_deref())
                .bind(row.last_name.as_deref())
                .bind(row.email.as_deref())
                .bind(row.company.as_deref())
                .bind(row.timezone.as_deref())
                .bind(row.state.as_deref())
                .bind(sqlx::types::Json(&fields))
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                added.push(n > 0);
            }
            added
        });
        Ok(added)
    }

    /// A campaign's contacts, by id.
    pub async fn list_contacts(&self, campaign_id: i64) -> Result<Vec<Contact>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{CONTACT_COLUMNS} WHERE campaign_id = $1 ORDER BY id")))
                .bind(campaign_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(contact_from).collect()
        })
    }

    /// Claims due contacts of a running campaign for `claim.claimer`, in one transaction:
    ///
    /// * the campaign row is locked (`FOR UPDATE` on PostgreSQL; SQLite has one writer), so
    ///   claimers of one campaign take turns and `max_concurrent` and `pacing` hold across the
    ///   fleet: contacts `dialing` under an unexpired lease count against the limit;
    /// * due contacts are `pending` ones whose `next_attempt_at` has come, and `dialing` ones
    ///   whose lease expired (a daemon that died); they are read with `FOR UPDATE SKIP LOCKED`;
    /// * a contact on the do-not-call list becomes `dnc`; one outside its calling window (as
    ///   `claim.decide` says) waits for its next opening; the others are claimed up to the
    ///   free slots (one per claim with pacing).
    pub async fn claim_contacts(&self, claim: &Claim<'_>) -> Result<Claimed> {
        let expires = later_by(claim.now, claim.lease, "the claim lease")?;
        let now_t = claim.now;
        let claimed = write_tx!(self, tx, pg => {
            let mut out = Claimed::default();
            let lock = if pg { " FOR UPDATE" } else { "" };
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT status, last_dial_at FROM campaigns WHERE id = $1{lock}")))
                .bind(claim.campaign_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("no campaign {}", claim.campaign_id)));
            };
            let status = row.text("status")?;
            let last_dial = row.opt_time("last_dial_at")?;
            let next_by_pacing = match last_dial {
                Some(last) if !claim.pacing.is_zero() => Some(later_by(last, claim.pacing, "pacing")?),
                _ => None,
            };
            let paced = next_by_pacing.is_some_and(|next| next > now_t);
            if status == "running" && paced {
                out.next_claim_at = next_by_pacing;
            }
            if status == "running" && !paced {
                let active: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM contacts WHERE campaign_id = $1 AND status = 'dialing' AND claim_expires_at > $2",
                )
                .bind(claim.campaign_id)
                .bind(now_t)
                .fetch_one(&mut *tx)
                .await?;
                let mut free = (claim.max_concurrent - active).max(0);
                if !claim.pacing.is_zero() {
                    free = free.min(1);
                }
                if free > 0 {
                    let skip = if pg { " FOR UPDATE SKIP LOCKED" } else { "" };
                    let columns = CONTACT_COLUMNS.replacen(
                        " FROM contacts",
                        ", CASE WHEN EXISTS (SELECT 1 FROM dnc_numbers d WHERE d.org_id = contacts.org_id AND d.number = contacts.phone) THEN 1 ELSE 0 END AS on_dnc FROM contacts",
                        1,
                    );
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "{columns} WHERE campaign_id = $1 AND ((status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)) \
                         OR (status = 'dialing' AND claim_expires_at <= $2)) ORDER BY COALESCE(next_attempt_at, created_at), id LIMIT $3{skip}"
                    )))
                    .bind(claim.campaign_id)
                    .bind(now_t)
                    .bind((free * 4).max(50))
                    .fetch_all(&mut *tx)
                    .await?;
                    for row in rows {
                        let mut contact = contact_from(&row)?;
                        if row.int32("on_dnc")? != 0 {
                            sqlx::query("UPDATE contacts SET status = 'dnc', last_outcome = 'do_not_call', claimed_by = NULL, claim_expires_at = NULL, updated_at = $1 WHERE id = $2")
                                .bind(now_t)
                                .bind(contact.id)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(INSERT_CHECK)
                                .bind(contact.org_id)
                                .bind(claim.campaign_id)
                                .bind(contact.id)
                                .bind(None::<String>)
                                .bind(&contact.phone)
                                .bind("claim")
                                .bind(false)
                                .bind("do_not_call")
                                .bind("the number is on the organization's do-not-call list")
                                .bind(None::<String>)
                                .bind(None::<String>)
                                .bind(None::<DateTime<Utc>>)
                                .bind(now_t)
                                .execute(&mut *tx)
                                .await?;
                            out.do_not_call += 1;
                            continue;
                        }
                        if out.contacts.len() as i64 >= free {
                            continue;
                        }
                        let since = now_t.checked_sub_signed(chrono::Duration::days(30)).unwrap_or(now_t);
                        let calls = sqlx::query(NUMBER_HISTORY)
                            .bind(contact.org_id)
                            .bind(&contact.phone)
                            .bind(true)
                            .bind(since)
                            .fetch_all(&mut *tx)
                            .await?;
                        let history = crate::dialer::compliance::History {
                            calls: calls
                                .iter()
                                .map(|r| Ok((r.time("at")?, r.opt_int("campaign_id")?)))
                                .collect::<Result<_>>()?,
                        };
                        match (claim.decide)(&contact, &history) {
                            Decision::Refuse(refusal) => {
                                sqlx::query("UPDATE contacts SET status = 'pending', next_attempt_at = $1, claimed_by = NULL, claim_expires_at = NULL, updated_at = $2 WHERE id = $3")
                                    .bind(refusal.not_before)
                                    .bind(now_t)
                                    .bind(contact.id)
                                    .execute(&mut *tx)
                                    .await?;
                                sqlx::query(INSERT_CHECK)
                                    .bind(contact.org_id)
                                    .bind(claim.campaign_id)
                                    .bind(contact.id)
                                    .bind(None::<String>)
                                    .bind(&contact.phone)
                                    .bind("claim")
                                    .bind(false)
                                    .bind(refusal.reason)
                                    .bind(&refusal.detail)
                                    .bind(refusal.region.as_deref())
                                    .bind(&refusal.local_time)
                                    .bind(refusal.not_before)
                                    .bind(now_t)
                                    .execute(&mut *tx)
                                    .await?;
                                out.deferred += 1;
                                *out.refused.entry(refusal.reason).or_default() += 1;
                            }
                            Decision::Later(at) => {
                                sqlx::query("UPDATE contacts SET status = 'pending', next_attempt_at = $1, claimed_by = NULL, claim_expires_at = NULL, updated_at = $2 WHERE id = $3")
                                    .bind(at)
                                    .bind(now_t)
                                    .bind(contact.id)
                                    .execute(&mut *tx)
                                    .await?;
                                out.deferred += 1;
                            }
                            Decision::Dial => {
                                sqlx::query("UPDATE contacts SET status = 'dialing', claimed_by = $1, claim_expires_at = $2, attempts = attempts + 1, updated_at = $3 WHERE id = $4")
                                    .bind(claim.claimer)
                                    .bind(expires)
                                    .bind(now_t)
                                    .bind(contact.id)
                                    .execute(&mut *tx)
                                    .await?;
                                contact.status = "dialing".into();
                                contact.attempts += 1;
                                out.contacts.push(contact);
                            }
                        }
                    }
                    if !out.contacts.is_empty() {
                        sqlx::query("UPDATE campaigns SET last_dial_at = $1 WHERE id = $2")
                            .bind(now_t)
                            .bind(claim.campaign_id)
                            .execute(&mut *tx)
                            .await?;
                        if !claim.pacing.is_zero() {
                            out.next_claim_at = Some(later_by(now_t, claim.pacing, "pacing")?);
                        }
                    }
                }
            }
            out
        });
        Ok(claimed)
    }

    /// Records the call of a claimed contact's attempt.
    pub async fn contact_dialed(&self, contact_id: i64, call_id: &str) -> Result<()> {
        let at = now();
        write_tx!(self, tx => {
            sqlx::query("UPDATE contacts SET last_call_id = $1, updated_at = $2 WHERE id = $3")
                .bind(call_id)
                .bind(at)
                .bind(contact_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Ends a claimed contact's attempt `call_id` and releases the claim. Returns false (and
    /// changes nothing) when the contact is no longer on that attempt: a lease that expired
    /// and was claimed again, or an attempt settled already.
    pub async fn settle_contact(&self, contact_id: i64, call_id: &str, settle: &Settle) -> Result<bool> {
        let changed = write_tx!(self, tx => {
            sqlx::query(
                "UPDATE contacts SET status = $1, next_attempt_at = $2, last_outcome = $3, claimed_by = NULL, claim_expires_at = NULL, updated_at = $4 \
                 WHERE id = $5 AND last_call_id = $6 AND status = 'dialing'",
            )
            .bind(settle.status)
            .bind(settle.next_attempt_at)
            .bind(&settle.last_outcome)
            .bind(settle.at)
            .bind(contact_id)
            .bind(call_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(changed > 0)
    }

    /// Books a callback the contact asked for during a call (the `schedule_callback` tool): its
    /// next attempt is `at`. A contact being dialled keeps its status (the end of the attempt
    /// settles it as `pending` at `at`, see [`crate::dialer::runner`]); a finished one is
    /// `pending` again; one on the do-not-call list stays there. Returns whether the contact is
    /// the organization's.
    pub async fn schedule_callback(&self, org_id: i64, contact_id: i64, at: DateTime<Utc>) -> Result<bool> {
        let updated = now();
        let changed = write_tx!(self, tx => {
            sqlx::query(
                "UPDATE contacts SET next_attempt_at = $1, last_outcome = 'callback_requested', \
                 status = CASE WHEN status IN ('done', 'failed') THEN 'pending' ELSE status END, updated_at = $2 \
                 WHERE id = $3 AND org_id = $4 AND status <> 'dnc'",
            )
            .bind(at)
            .bind(updated)
            .bind(contact_id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(changed > 0)
    }

    /// Puts a claimed contact in `status` without a call (`dnc` when the number went on the
    /// list after the claim, `pending` to try again), releasing the claim.
    pub async fn release_contact(&self, contact_id: i64, status: &str, outcome: Option<&str>) -> Result<()> {
        let at = now();
        write_tx!(self, tx => {
            sqlx::query("UPDATE contacts SET status = $1, last_outcome = COALESCE($2, last_outcome), claimed_by = NULL, claim_expires_at = NULL, updated_at = $3 WHERE id = $4")
                .bind(status)
                .bind(outcome)
                .bind(at)
                .bind(contact_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Extends every lease of `claimer` to `until`, while its calls go on. Returns how many.
    pub async fn renew_claims(&self, claimer: &str, until: DateTime<Utc>) -> Result<u64> {
        let renewed = write_tx!(self, tx => {
            sqlx::query("UPDATE contacts SET claim_expires_at = $1 WHERE claimed_by = $2 AND status = 'dialing'")
                .bind(until)
                .bind(claimer)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(renewed)
    }

    /// Contacts of a campaign still `dialing` whose attempt's call has ended (`contact id`,
    /// `call id`): attempts whose end was not settled (a missed notification, a daemon that
    /// stopped), to settle before anything is claimed again.
    pub async fn unsettled_attempts(&self, campaign_id: i64) -> Result<Vec<(i64, String)>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT ct.id, ct.last_call_id FROM contacts ct JOIN calls c ON c.id = ct.last_call_id \
                 WHERE ct.campaign_id = $1 AND ct.status = 'dialing' AND c.ended_at IS NOT NULL",
            )
            .bind(campaign_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| Ok((r.int("id")?, r.text("last_call_id")?))).collect()
        })
    }

    /// How many calls of a contact in a campaign ended with `status` (for retries per outcome).
    pub async fn contact_calls_with_status(&self, contact_id: i64, campaign_id: i64, status: &str) -> Result<i64> {
        with_pool!(self, pool => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE contact_id = $1 AND campaign_id = $2 AND status = $3")
                .bind(contact_id)
                .bind(campaign_id)
                .bind(status)
                .fetch_one(pool)
                .await?;
            Ok(n)
        })
    }
}
