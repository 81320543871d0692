//! Masking what must not be stored: card numbers (13 to 19 digits, written with or without
//! spaces or dashes, that pass the Luhn check) and the patterns an administrator configured
//! (`redaction.patterns`, regular expressions).
//!
//! Numbers are found as speech-to-text writes them, in digits: a card number read out as words
//! ("four one one one …") is not recognised, and a pattern can be configured for what else a
//! deployment needs.

use std::borrow::Cow;

use regex::Regex;

/// What a card number becomes.
pub const CARD_MASK: &str = "[card number]";
/// What a configured pattern's match becomes.
pub const PATTERN_MASK: &str = "[redacted]";

/// Masks card numbers and configured patterns in text.
#[derive(Debug, Clone)]
pub struct Redactor {
    cards: bool,
    patterns: Vec<Regex>,
}

impl Redactor {
    /// A redactor of card numbers (when `cards`) and of `patterns` (regular expressions, in the
    /// syntax of the `regex` crate). The error names the pattern that does not compile.
    pub fn new(cards: bool, patterns: &[String]) -> Result<Redactor, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("{p:?} is not a valid regular expression: {e}"))
                    .and_then(|re| {
                        if re.is_match("") {
                            Err(format!("{p:?} matches empty text; a pattern must match something"))
                        } else {
                            Ok(re)
                        }
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Redactor { cards, patterns })
    }

    /// The text with card numbers and configured patterns masked (borrowed when nothing was).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = if self.cards { mask_cards(text) } else { Cow::Borrowed(text) };
        for pattern in &self.patterns {
            if let Cow::Owned(masked) = pattern.replace_all(&out, PATTERN_MASK) {
                out = Cow::Owned(masked);
            }
        }
        out
    }

    /// Masks `text` in place.
    pub fn redact_string(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.redact(text) {
            *text = masked;
        }
    }

    /// Masks every string (keys stay) of a JSON value in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => self.redact_string(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }
}

/// Which organizations' calls are masked, and how: `redaction` of the config.
#[derive(Debug, Clone)]
pub struct Redaction {
    redactor: std::sync::Arc<Redactor>,
    default: bool,
    orgs: std::collections::BTreeMap<String, bool>,
}

impl Redaction {
    /// Masks with `redactor` the calls of the organizations `orgs` says (by slug), and of the
    /// others when `default`.
    pub fn new(redactor: Redactor, default: bool, orgs: std::collections::BTreeMap<String, bool>) -> Redaction {
        Redaction { redactor: std::sync::Arc::new(redactor), default, orgs }
    }

    /// The redactor, when the organization `slug`'s calls are masked.
    pub fn for_org(&self, slug: &str) -> Option<std::sync::Arc<Redactor>> {
        self.orgs.get(slug).copied().unwrap_or(self.default).then(|| self.redactor.clone())
    }

    /// The redactor, for an organization that cannot be told (the database is away): masked,
    /// rather than a card number stored.
    pub fn unknown_org(&self) -> std::sync::Arc<Redactor> {
        self.redactor.clone()
    }
}

/// Whether a digit string passes the Luhn check.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(*d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// One run of digit groups: where each group starts and ends (byte offsets) and its digits.
struct Group {
    start: usize,
    end: usize,
    digits: Vec<u8>,
}

/// Masks card numbers: within each run of digit groups joined by one space or dash, the
/// longest sequence of whole groups, earliest first, with 13 to 19 digits that passes Luhn
/// (a run may hold a card number and then its expiry date).
fn mask_cards(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        // A run: groups of digits, each joined to the next by one separator.
        let mut groups: Vec<Group> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            groups.push(Group { start, end: j, digits: bytes[start..j].iter().map(|b| b - b'0').collect() });
            if j + 1 < bytes.len() && matches!(bytes[j], b' ' | b'-') && bytes[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        let mut g = 0;
        while g < groups.len() {
            let mut found = None;
            let mut digits: Vec<u8> = Vec::new();
            for (h, group) in groups.iter().enumerate().skip(g) {
                digits.extend_from_slice(&group.digits);
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && luhn(&digits) {
                    found = Some(h);
                }
            }
            match found {
                // A card number must not run on into letters ("4111…1111abc" is an identifier).
                Some(h) if !bytes.get(groups[h].end).is_some_and(u8::is_ascii_alphabetic) => {
                    ranges.push((groups[g].start, groups[h].end));
                    g = h + 1;
                }
                _ => g += 1,
            }
        }
        i = j.max(i + 1);
    }
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in ranges {
        out.push_str(&text[at..start]);
        out.push_str(CARD_MASK);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards() -> Redactor {
        Redactor::new(true, &[]).unwrap()
    }

    #[test]
    fn card_numbers_are_masked_however_written() {
        let r = cards();
        for text in [
            "my card is 4111111111111111 thanks",
            "my card is 4111 1111 1111 1111 thanks",
            "my card is 4111-1111-1111-1111 thanks",
            "my card is 3782 822463 10005 thanks", // Amex, 15 digits
        ] {
            let masked = r.redact(text);
            assert_eq!(masked, format!("my card is {CARD_MASK} thanks"), "{text}");
        }
        // The expiry after the number stays; the number goes.
        assert_eq!(r.redact("4111 1111 1111 1111 12 27"), format!("{CARD_MASK} 12 27"));
        assert_eq!(r.redact("cards 4111111111111111, 5555555555554444."), format!("cards {CARD_MASK}, {CARD_MASK}."));
    }

    #[test]
    fn other_numbers_stay() {
        let r = cards();
        for text in [
            "call me on 555 123 4567",
            "4111 1111 1111 1112",      // fails Luhn
            "order 411111111111",       // 12 digits
            "id x4111111111111111",     // part of an identifier
            "the 12345678901234567890", // 20 digits, not a card
            "",
        ] {
            assert_eq!(r.redact(text), text, "{text}");
        }
    }

    #[test]
    fn patterns_are_masked_and_checked() {
        let r = Redactor::new(false, &[r"\b\d{3}-\d{2}-\d{4}\b".into()]).unwrap();
        assert_eq!(r.redact("ssn 123-45-6789 ok"), format!("ssn {PATTERN_MASK} ok"));
        assert_eq!(r.redact("4111111111111111"), "4111111111111111", "cards off");
        assert!(Redactor::new(true, &["(".into()]).unwrap_err().contains("\"(\""));
        assert!(Redactor::new(true, &["x*".into()]).unwrap_err().contains("empty"));
        let mut value =
            serde_json::json!({"a": ["4111 1111 1111 1111"], "b": {"4111111111111111": 4111111111111111u64}});
        cards().redact_json(&mut value);
        assert_eq!(value["a"][0], CARD_MASK);
    }

    #[test]
    fn luhn_checks() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(!luhn(&[]));
    }
}
