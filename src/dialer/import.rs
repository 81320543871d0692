//! Contacts from CSV: `asterai campaign import` and `POST /v1/campaigns/{id}/contacts`.
//!
//! * The first row names the columns. `phone` is required; `first_name`, `last_name`, `email`,
//!   `company` and `timezone` are read as such; any other column becomes a contact field for
//!   the prompt (`{column}`).
//! * RFC 4180: fields may be quoted, with `""` for a quote and commas or line breaks inside;
//!   CRLF or LF line ends; a UTF-8 byte-order mark is ignored.
//! * Each bad row is reported with its line number and the reason, and the good rows land
//!   anyway: a number that is not E.164, an unknown timezone, an email without `@`, a row with
//!   the wrong number of columns, bytes that are not UTF-8, a number twice in the file.
//! * Re-importing is safe: a number the campaign has already is counted as a duplicate, never
//!   added twice.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::campaign::parse_tz;
use crate::store::contacts::NewContactRow;

/// A contact read from a row: what the store takes, and the row's line for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewContact {
    /// The row's line number in the file (the header is line 1).
    pub line: usize,
    #[serde(flatten)]
    pub contact: NewContactRow,
}

impl std::ops::Deref for NewContact {
    type Target = NewContactRow;

    fn deref(&self) -> &NewContactRow {
        &self.contact
    }
}

/// A row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: usize,
    pub reason: String,
}

/// What a file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Parsed {
    pub contacts: Vec<NewContact>,
    pub rejected: Vec<Rejected>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Data rows read (not counting the header and empty lines).
    pub rows: usize,
    pub imported: usize,
    /// Rows whose number the campaign had already (`line`, `phone`).
    pub duplicates: Vec<Rejected>,
    pub rejected: Vec<Rejected>,
}

/// One CSV record as raw fields, with the line it starts on.
struct Record {
    line: usize,
    fields: Vec<Vec<u8>>,
    error: Option<String>,
}

/// Splits CSV bytes into records (RFC 4180), without decoding: quotes, commas and line ends
/// are ASCII, so a row with bad bytes is still found and reported on its own.
fn records(bytes: &[u8]) -> Vec<Record> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let start_line = line;
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut quoted = false;
        let mut error = None;
        let mut at_field_start = true;
        loop {
            let Some(&b) = bytes.get(i) else {
                if quoted {
                    error = Some("a quoted field is never closed".into());
                }
                fields.push(std::mem::take(&mut field));
                break;
            };
            i += 1;
            if quoted {
                match b {
                    b'"' if bytes.get(i) == Some(&b'"') => {
                        field.push(b'"');
                        i += 1;
                    }
                    b'"' => quoted = false,
                    b'\n' => {
                        line += 1;
                        field.push(b);
                    }
                    _ => field.push(b),
                }
                continue;
            }
            match b {
                b'"' if at_field_start => {
                    quoted = true;
                    at_field_start = false;
                }
                b',' => {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                }
                b'\r' if bytes.get(i) == Some(&b'\n') => {}
                b'\n' => {
                    line += 1;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                _ => {
                    field.push(b);
                    at_field_start = false;
                }
            }
        }
        let empty = fields.len() == 1 && fields[0].iter().all(|b| b.is_ascii_whitespace());
        if !empty || error.is_some() {
            out.push(Record { line: start_line, fields, error });
        }
    }
    out
}

const KNOWN: &[&str] = &["phone", "first_name", "last_name", "email", "company", "timezone"];

/// Reads a CSV file of contacts. The error is for the file as a whole (no header, no `phone`
/// column); bad rows are in [`Parsed::rejected`].
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut records = records(bytes).into_iter();
    let header = records.next().ok_or("the file is empty; expected a header row with a phone column")?;
    let mut names = Vec::new();
    for (column, raw) in header.fields.iter().enumerate() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| {
                format!("line 1: the header is not valid UTF-8 (column {}); save the file as UTF-8", column + 1)
            })?
            .trim()
            .to_owned();
        let lower = name.to_ascii_lowercase();
        let name = if KNOWN.contains(&lower.as_str()) { lower } else { name };
        if name.is_empty() {
            return Err(format!("line 1: column {} has no name", column + 1));
        }
        if names.contains(&name) {
            return Err(format!("line 1: the column {name:?} appears twice"));
        }
        names.push(name);
    }
    if !names.iter().any(|n| n == "phone") {
        return Err(format!("line 1: no phone column; the columns are {}", names.join(", ")));
    }
    let mut parsed = Parsed::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in records {
        match contact(&names, &record) {
            Ok(contact) => match seen.get(&contact.phone) {
                Some(first) => parsed.rejected.push(Rejected {
                    line: record.line,
                    reason: format!("{} is a duplicate of line {first}", contact.phone),
                }),
                None => {
                    seen.insert(contact.phone.clone(), record.line);
                    parsed.contacts.push(contact);
                }
            },
            Err(reason) => parsed.rejected.push(Rejected { line: record.line, reason }),
        }
    }
    Ok(parsed)
}

fn contact(names: &[String], record: &Record) -> Result<NewContact, String> {
    if let Some(error) = &record.error {
        return Err(error.clone());
    }
    if record.fields.len() != names.len() {
        return Err(format!("expected {} columns, got {}", names.len(), record.fields.len()));
    }
    let mut values = BTreeMap::new();
    for ((name, raw), column) in names.iter().zip(&record.fields).zip(1..) {
        let text = String::from_utf8(raw.clone()).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            format!(
                "column {column} ({name}) is not valid UTF-8 (byte 0x{:02X}); save the file as UTF-8",
                raw.get(at).copied().unwrap_or_default()
            )
        })?;
        values.insert(name.clone(), text.trim().to_owned());
    }
    let mut take = |key: &str| values.remove(key).filter(|v| !v.is_empty());
    let raw_phone = take("phone").ok_or("the phone is empty")?;
    let phone = crate::phone::normalize(&raw_phone).ok_or_else(|| {
        let why = crate::phone::e164(&raw_phone).err().unwrap_or_else(|| format!("{raw_phone:?} is not E.164"));
        format!("phone {why}")
    })?;
    let email = take("email");
    if let Some(email) = &email {
        let ok = email.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
        if !ok {
            return Err(format!("email {email:?} is not an address"));
        }
    }
    let timezone = take("timezone");
    if let Some(tz) = &timezone {
        parse_tz(tz).map_err(|e| format!("timezone: {e}"))?;
    }
    let (first_name, last_name, company) = (take("first_name"), take("last_name"), take("company"));
    let fields = values.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let contact = NewContactRow { phone, first_name, last_name, email, company, timezone, fields };
    Ok(NewContact { line: record.line, contact })
}

/// Rows written per transaction.
const BATCH: usize = 500;

/// Imports a CSV file into a campaign: bad rows are reported, good ones land (in batches of
/// 500, each its own transaction), numbers the campaign has are counted as duplicates.
/// `progress` is told (rows done, rows in all) after each batch.
pub async fn import(
    store: &crate::store::Store,
    org_id: i64,
    campaign_id: i64,
    bytes: &[u8],
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<ImportReport, ImportError> {
    let parsed = parse(bytes).map_err(ImportError::File)?;
    let mut report = ImportReport {
        rows: parsed.contacts.len() + parsed.rejected.len(),
        rejected: parsed.rejected,
        ..Default::default()
    };
    let total = parsed.contacts.len();
    for (n, batch) in parsed.contacts.chunks(BATCH).enumerate() {
        let rows: Vec<NewContactRow> = batch.iter().map(|c| c.contact.clone()).collect();
        let added = store.add_contacts(org_id, campaign_id, &rows).await.map_err(ImportError::Store)?;
        for (contact, added) in batch.iter().zip(added) {
            if added {
                report.imported += 1;
            } else {
                report.duplicates.push(Rejected {
                    line: contact.line,
                    reason: format!("{} is in the campaign already", contact.phone),
                });
            }
        }
        progress((n * BATCH + batch.len()).min(total), total);
    }
    report.rejected.sort_by_key(|r| r.line);
    Ok(report)
}

/// Why an import failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read as contacts (no header, no phone column…).
    #[error("{0}")]
    File(String),
    #[error(transparent)]
    Store(crate::store::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_line_ends_and_extra_columns() {
        let file = b"\xEF\xBB\xBFPhone,First_Name,last_name,email,company,timezone,plan\r\n\
            +15551230001,Ann,Lee,ann@example.com,\"Acme, Inc.\",America/New_York,gold\r\n\
            \r\n\
            \"+1 555 123 0002\",\"Bo \"\"B\"\"\",,,\"two\nlines\",,\n\
            0044 20 7946 0000,Cy,,,,,";
        let parsed = parse(file).unwrap();
        assert_eq!(parsed.rejected, vec![]);
        let [ann, bo, cy] = &parsed.contacts[..] else { panic!("{parsed:?}") };
        assert_eq!((ann.line, ann.phone.as_str(), ann.company.as_deref()), (2, "+15551230001", Some("Acme, Inc.")));
        assert_eq!(ann.fields.get("plan").map(String::as_str), Some("gold"));
        assert_eq!(
            (bo.line, bo.first_name.as_deref(), bo.company.as_deref()),
            (4, Some("Bo \"B\""), Some("two\nlines"))
        );
        assert_eq!((cy.line, cy.phone.as_str()), (6, "+442079460000"));
    }

    #[test]
    fn bad_rows_are_reported_by_line() {
        let file = b"phone,email,timezone\n\
            +15551230001,,\n\
            555-1234,,\n\
            +15551230002,nobody,\n\
            +15551230003,,Mars/Olympus\n\
            +15551230001,,\n\
            +15551230004\n\
            +1555123\xE90005,,\n\
            ,,\n\
            +15551230006,\"open,\n";
        let parsed = parse(file).unwrap();
        assert_eq!(parsed.contacts.iter().map(|c| c.line).collect::<Vec<_>>(), vec![2]);
        let lines: Vec<(usize, &str)> = parsed.rejected.iter().map(|r| (r.line, r.reason.as_str())).collect();
        let expect = [
            (3, "E.164"),
            (4, "not an address"),
            (5, "unknown timezone"),
            (6, "duplicate of line 2"),
            (7, "expected 3 columns, got 1"),
            (8, "not valid UTF-8 (byte 0xE9)"),
            (9, "the phone is empty"),
            (10, "never closed"),
        ];
        assert_eq!(lines.len(), expect.len(), "{lines:#?}");
        for ((line, reason), (want_line, want)) in lines.iter().zip(expect) {
            assert_eq!(*line, want_line, "{reason}");
            assert!(reason.contains(want), "line {line}: {reason}");
        }
    }

    #[test]
    fn files_without_what_is_needed() {
        assert!(parse(b"").unwrap_err().contains("empty"));
        assert!(parse(b"name,email\nAnn,a@b.c\n").unwrap_err().contains("no phone column"));
        assert!(parse(b"phone,phone\n").unwrap_err().contains("twice"));
        assert!(parse(b"ph\xFFone\n").unwrap_err().contains("UTF-8"));
    }
}
