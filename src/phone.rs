//! Phone numbers in E.164 form: `+`, a country code, the number; 7 to 15 digits in all.

/// Checks that `number` is E.164 (`+15551230000`) and returns it trimmed.
pub fn e164(number: &str) -> Result<String, String> {
    let number = number.trim();
    let digits = number.strip_prefix('+').ok_or_else(|| format!("{number:?} is not E.164: it must start with +"))?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{number:?} is not E.164: only digits may follow the +"));
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(format!("{number:?} is not E.164: expected 7 to 15 digits, got {}", digits.len()));
    }
    if digits.starts_with('0') {
        return Err(format!("{number:?} is not E.164: a country code never starts with 0"));
    }
    Ok(number.to_owned())
}

/// A number as people write it, in E.164 form: spaces, dashes, dots and parentheses are
/// dropped and a `00` international prefix becomes `+` (`+1 555 123-0005`, `0044 20 7946 0000`).
/// The one reading of a number for everything a person or a file hands in: `dnc add`, imports,
/// `asterai call` and `POST /v1/calls`. The error quotes the number as it was given.
pub fn parse(number: &str) -> Result<String, String> {
    let given = number.trim();
    let compact: String = given.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    let compact = match compact.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => compact,
    };
    e164(&compact)
        .map_err(|e| if compact == given { e } else { e.replacen(&format!("{compact:?}"), &format!("{given:?}"), 1) })
}

/// Best effort: a number as Asterisk reports it (`agi_callerid`, a CallerID) in E.164 form, when
/// it already is one or is 00-prefixed international ([`parse`], without the reason).
pub fn normalize(number: &str) -> Option<String> {
    parse(number).ok()
}

/// The number with all but its last four digits masked, for logs.
pub fn mask(number: &str) -> String {
    let keep = number.len().saturating_sub(4);
    number.char_indices().map(|(i, c)| if i < keep && c.is_ascii_digit() { '•' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers() {
        assert_eq!(e164(" +15551230000 ").unwrap(), "+15551230000");
        for bad in ["15551230000", "+1555", "+1234567890123456", "+0123456789", "+1555-123-0000", ""] {
            assert!(e164(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize("0044 20 7946 0000").as_deref(), Some("+442079460000"));
        assert_eq!(normalize("unknown"), None);
        assert_eq!(mask("+15551230000"), "+•••••••0000");
    }

    #[test]
    fn numbers_as_people_write_them() {
        for (given, want) in [
            ("+1 555 123 0005", "+15551230005"),
            (" +1 (555) 123-0005 ", "+15551230005"),
            ("0044 20 7946 0000", "+442079460000"),
            ("+44.20.7946.0000", "+442079460000"),
        ] {
            assert_eq!(parse(given).as_deref(), Ok(want), "{given}");
        }
        let err = parse("555 123 0005").unwrap_err();
        assert!(err.starts_with("\"555 123 0005\" is not E.164: it must start with +"), "{err}");
        assert!(parse("+1 555 12x 0005").unwrap_err().contains("\"+1 555 12x 0005\""));
        assert!(parse("+1 555").unwrap_err().contains("7 to 15 digits"));
    }
}
