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

/// Best effort: a number as Asterisk reports it (`agi_callerid`, a CallerID) in E.164 form, when
/// it already is one or is 00-prefixed international.
pub fn normalize(number: &str) -> Option<String> {
    let trimmed: String = number.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    if trimmed.starts_with('+') {
        return e164(&trimmed).ok();
    }
    if let Some(rest) = trimmed.strip_prefix("00") {
        return e164(&format!("+{rest}")).ok();
    }
    None
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
}
