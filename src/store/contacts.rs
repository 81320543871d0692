//! Contacts: the people a campaign calls, with fields for the prompt.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, RowExt, Store, with_pool};

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
    /// Extra columns of the import, for the prompt.
    pub fields: BTreeMap<String, String>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
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
        ] {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                values.insert(key.to_owned(), value.clone());
            }
        }
        values.insert("phone".to_owned(), self.phone.clone());
        values
    }
}

pub(crate) const CONTACT_COLUMNS: &str = "SELECT id, org_id, campaign_id, phone, first_name, last_name, email, company, timezone, fields, \
     status, attempts, next_attempt_at, last_outcome, created_at FROM contacts";

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
        fields,
        status: row.text("status")?,
        attempts: row.int32("attempts")?,
        next_attempt_at: row.opt_time("next_attempt_at")?,
        last_outcome: row.opt_text("last_outcome")?,
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
