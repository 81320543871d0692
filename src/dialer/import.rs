//! Contacts from CSV: `asterai campaign import` and `POST /v1/campaigns/{id}/contacts`.
//!
//! * The first row names the columns. `phone` is required; `first_name`, `last_name`, `email`,
//!   `company`, `timezone` and `state` (the region whose calling rules apply: `FL`, `Florida`
//!   or `US-FL`, see [`super::compliance`]) are read as such; any other column becomes a contact
//!   field for the prompt (`{column}`).
//! * RFC 4180 (read with the `csv` crate): fields may be quoted, with `""` for a quote and
//!   delimiters or line breaks inside; CRLF, LF or CR line ends; a UTF-8 byte-order mark is
//!   ignored. The delimiter is `,`, `;` or tab, whichever the header line uses most.
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
pub(crate) struct Record {
    pub(crate) line: usize,
    pub(crate) fields: Vec<Vec<u8>>,
    /// Why the record cannot be read (a quoted field never closed).
    pub(crate) error: Option<String>,
}

/// The delimiter a file uses, read from its header line: whichever of `,` `;` and tab appears
/// there most often outside quotes (a comma when none does, as for a lone `phone` column).
pub(crate) fn delimiter(bytes: &[u8]) -> u8 {
    let header = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for &b in header {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(count) = counts.iter_mut().find(|(d, _)| *d == b) {
            count.1 += 1;
        }
    }
    // The first of the most frequent: a tie, or none at all, goes to the comma.
    counts.iter().fold((b',', 0), |best, &(d, n)| if n > best.1 { (d, n) } else { best }).0
}

/// Splits CSV bytes into records (RFC 4180, with the `csv` crate) without decoding: quotes,
/// delimiters and line ends are ASCII, so a row with bad bytes is still found and reported on
/// its own. Lines that are empty or only blanks are skipped.
pub(crate) fn records(bytes: &[u8]) -> Vec<Record> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let delimiter = delimiter(bytes);
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(bytes);
    let mut out = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut lines = Lines { bytes, at: 0, line: 1 };
    loop {
        let from = reader.position().byte() as usize;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            // Reading from memory, with flexible rows, the reader has no error to give; if it
            // ever does, the rest of the file cannot be split and the row says why.
            Err(e) => {
                let line = lines.record_at(from).1;
                out.push(Record { line, fields: Vec::new(), error: Some(e.to_string()) });
                break;
            }
        }
        // The reader's position is where the last record's line end began: the record itself
        // starts after the line ends (and blank lines) that follow.
        let (start, line) = lines.record_at(from);
        let fields: Vec<Vec<u8>> = record.iter().map(<[u8]>::to_vec).collect();
        let at_end = reader.position().byte() as usize >= bytes.len();
        let error = (at_end && unclosed(&bytes[start..], &fields, delimiter))
            .then(|| "a quoted field is never closed".to_owned());
        let empty = fields.len() == 1 && fields[0].iter().all(|b| b.is_ascii_whitespace());
        if !empty || error.is_some() {
            out.push(Record { line, fields, error });
        }
    }
    out
}

/// Line numbers by byte offset, counted once as the reader moves on (never rescanned). A line
/// ends at LF, CRLF or a lone CR, as for the `csv` crate.
struct Lines<'a> {
    bytes: &'a [u8],
    at: usize,
    line: usize,
}

impl Lines<'_> {
    /// Where the record that follows `from` starts (past any line ends), and its line.
    fn record_at(&mut self, from: usize) -> (usize, usize) {
        let from = from.max(self.at);
        let start = from + self.bytes[from..].iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        for i in self.at..start {
            let line_end = match self.bytes[i] {
                b'\n' => true,
                b'\r' => self.bytes.get(i + 1) != Some(&b'\n'),
                _ => false,
            };
            self.line += usize::from(line_end);
        }
        self.at = start;
        (start, self.line)
    }
}

/// Whether the record that starts `tail` ends inside quotes. The `csv` crate takes an open
/// quote to the end of the input as the field's text, so such a field is the record's last and
/// the input ends with it as written: a delimiter (or the record's start), the quote, and the
/// text with its quotes doubled, with no closing quote after it.
fn unclosed(tail: &[u8], fields: &[Vec<u8>], delimiter: u8) -> bool {
    let Some(last) = fields.last() else { return false };
    let mut written = vec![b'"'];
    for &b in last {
        written.push(b);
        if b == b'"' {
            written.push(b'"');
        }
    }
    if fields.len() == 1 {
        return tail == written.as_slice();
    }
    written.insert(0, delimiter);
    tail.ends_with(&written)
}

const KNOWN: &[&str] = &["phone", "first_name", "last_name", "email", "company", "timezone", "state"];

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
    let state = take("state").map(|s| super::compliance::region_of_state(&s)).transpose()?;
    let (first_name, last_name, company) = (take("first_name"), take("last_name"), take("company"));
    let fields = values.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let contact = NewContactRow { phone, first_name, last_name, email, company, timezone, state, fields };
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
    fn semicolons_and_tabs_are_read_from_the_header() {
        assert_eq!(delimiter(b"phone"), b',');
        assert_eq!(delimiter(b"phone;first_name;company\n+1,\"a,b\",c"), b';');
        assert_eq!(delimiter(b"\"a;b\",phone\n"), b',');
        assert_eq!(delimiter(b"phone\tfirst_name\r\n"), b'\t');
        let file = b"phone;first_name;company\r\n+15551230001;Ann;\"Acme; Inc.\"\r\n+15551230002;Bo,Jr;\r\n+1555;x\r\n";
        let parsed = parse(file).unwrap();
        let [ann, bo] = &parsed.contacts[..] else { panic!("{parsed:?}") };
        assert_eq!((ann.line, ann.company.as_deref()), (2, Some("Acme; Inc.")));
        assert_eq!((bo.line, bo.first_name.as_deref()), (3, Some("Bo,Jr")));
        assert_eq!(parsed.rejected, vec![Rejected { line: 4, reason: "expected 3 columns, got 2".into() }]);
        let file = b"first_name\tphone\n\"Ann\"\t+15551230001\n\nCy\t+1 555 123 0003\n";
        let parsed = parse(file).unwrap();
        let phones: Vec<(usize, &str)> = parsed.contacts.iter().map(|c| (c.line, c.phone.as_str())).collect();
        assert_eq!(phones, [(2, "+15551230001"), (4, "+15551230003")]);
    }

    #[test]
    fn only_an_open_quote_at_the_end_is_unclosed() {
        for file in
            [&b"phone,note\n+15551230001,\"\"\n"[..], b"phone,note\n+15551230001,\"a\"\"\"", b"phone\n\"+15551230001\""]
        {
            let parsed = parse(file).unwrap();
            assert_eq!((parsed.contacts.len(), parsed.rejected.len()), (1, 0), "{:?}", String::from_utf8_lossy(file));
        }
        for file in
            [&b"phone,note\n+15551230001,\""[..], b"phone,note\n+15551230001,\"a\"\"\n", b"phone\n\"+15551230001"]
        {
            let parsed = parse(file).unwrap();
            assert_eq!(parsed.rejected.len(), 1, "{:?}", String::from_utf8_lossy(file));
            assert!(parsed.rejected[0].reason.contains("never closed"), "{:?}", parsed.rejected);
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
