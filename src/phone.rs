//! Phone numbers in E.164 form: `+`, a country code, the number; 7 to 15 digits in all.
//!
//! Numbers written nationally (`(555) 123-0005`, `020 7946 0000`) are read in the country of
//! `dialer.default_country`, set once at start-up ([`set_default_country`]); without it a number
//! must be international.

use std::sync::RwLock;

/// A country whose national numbers asterai reads: its calling code and how a national number
/// is written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, as in the config (`US`).
    pub iso: &'static str,
    /// The country calling code, without `+`.
    pub calling_code: &'static str,
    trunk: Trunk,
}

/// How a national number differs from the international one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trunk {
    /// The North American Numbering Plan: ten digits, or eleven after a `1`.
    Nanp,
    /// A `0` before the national number that the international form drops.
    Zero,
    /// A leading `0` that the international form keeps (Italy).
    KeptZero,
    /// No trunk prefix: the national number follows the calling code as it is.
    None,
}

/// The countries `dialer.default_country` accepts.
const COUNTRIES: &[Country] = &[
    Country { iso: "US", calling_code: "1", trunk: Trunk::Nanp },
    Country { iso: "CA", calling_code: "1", trunk: Trunk::Nanp },
    Country { iso: "PR", calling_code: "1", trunk: Trunk::Nanp },
    Country { iso: "GB", calling_code: "44", trunk: Trunk::Zero },
    Country { iso: "IE", calling_code: "353", trunk: Trunk::Zero },
    Country { iso: "DE", calling_code: "49", trunk: Trunk::Zero },
    Country { iso: "FR", calling_code: "33", trunk: Trunk::Zero },
    Country { iso: "NL", calling_code: "31", trunk: Trunk::Zero },
    Country { iso: "BE", calling_code: "32", trunk: Trunk::Zero },
    Country { iso: "CH", calling_code: "41", trunk: Trunk::Zero },
    Country { iso: "AT", calling_code: "43", trunk: Trunk::Zero },
    Country { iso: "SE", calling_code: "46", trunk: Trunk::Zero },
    Country { iso: "FI", calling_code: "358", trunk: Trunk::Zero },
    Country { iso: "AU", calling_code: "61", trunk: Trunk::Zero },
    Country { iso: "NZ", calling_code: "64", trunk: Trunk::Zero },
    Country { iso: "IN", calling_code: "91", trunk: Trunk::Zero },
    Country { iso: "ZA", calling_code: "27", trunk: Trunk::Zero },
    Country { iso: "JP", calling_code: "81", trunk: Trunk::Zero },
    Country { iso: "IT", calling_code: "39", trunk: Trunk::KeptZero },
    Country { iso: "ES", calling_code: "34", trunk: Trunk::None },
    Country { iso: "PT", calling_code: "351", trunk: Trunk::None },
    Country { iso: "DK", calling_code: "45", trunk: Trunk::None },
    Country { iso: "NO", calling_code: "47", trunk: Trunk::None },
    Country { iso: "PL", calling_code: "48", trunk: Trunk::None },
    Country { iso: "MX", calling_code: "52", trunk: Trunk::None },
];

/// The country of an ISO 3166-1 alpha-2 code (any case); the error lists the ones known.
pub fn country(iso: &str) -> Result<Country, String> {
    let iso = iso.trim();
    COUNTRIES.iter().find(|c| c.iso.eq_ignore_ascii_case(iso)).copied().ok_or_else(|| {
        let known: Vec<&str> = COUNTRIES.iter().map(|c| c.iso).collect();
        format!("unknown country {iso:?}: expected one of {}", known.join(", "))
    })
}

static DEFAULT_COUNTRY: RwLock<Option<Country>> = RwLock::new(None);

/// Sets the country whose national numbers [`parse`] reads (from `dialer.default_country`, at
/// start-up); `None`: numbers must be international.
pub fn set_default_country(country: Option<Country>) {
    *DEFAULT_COUNTRY.write().unwrap_or_else(|e| e.into_inner()) = country;
}

fn default_country() -> Option<Country> {
    *DEFAULT_COUNTRY.read().unwrap_or_else(|e| e.into_inner())
}

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
/// dropped and a `00` international prefix becomes `+` (`+1 555 123-0005`, `0044 20 7946 0000`);
/// a national number is read in `dialer.default_country` ([`set_default_country`]).
/// The one reading of a number for everything a person or a file hands in: `dnc add`, imports,
/// `asterai call` and `POST /v1/calls`. The error quotes the number as it was given.
pub fn parse(number: &str) -> Result<String, String> {
    parse_in(number, default_country())
}

/// [`parse`], reading national numbers in `country` (none: a number must be international).
pub fn parse_in(number: &str, country: Option<Country>) -> Result<String, String> {
    let given = number.trim();
    let compact: String = given.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    let compact = match compact.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => compact,
    };
    let national = !compact.starts_with('+') && !compact.is_empty() && compact.bytes().all(|b| b.is_ascii_digit());
    let compact = match country {
        Some(country) if national => international(&compact, country)
            .ok_or_else(|| format!("{given:?} is not a national number of {}", country.iso))?,
        None if national => {
            return Err(format!(
                "{given:?} is not E.164: it must start with + (or set dialer.default_country to read national numbers)"
            ));
        }
        _ => compact,
    };
    e164(&compact)
        .map_err(|e| if compact == given { e } else { e.replacen(&format!("{compact:?}"), &format!("{given:?}"), 1) })
}

/// The international form of a national number (digits only), if it is written as one.
fn international(digits: &str, country: Country) -> Option<String> {
    let code = country.calling_code;
    match country.trunk {
        Trunk::Nanp => match digits.len() {
            10 => Some(format!("+1{digits}")),
            11 if digits.starts_with('1') => Some(format!("+{digits}")),
            _ => None,
        },
        Trunk::Zero => digits.strip_prefix('0').filter(|rest| !rest.is_empty()).map(|rest| format!("+{code}{rest}")),
        Trunk::KeptZero | Trunk::None => Some(format!("+{code}{digits}")),
    }
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
        let err = parse_in("555 123 0005", None).unwrap_err();
        assert!(err.starts_with("\"555 123 0005\" is not E.164: it must start with +"), "{err}");
        assert!(err.contains("dialer.default_country"), "{err}");
        assert!(parse("+1 555 12x 0005").unwrap_err().contains("\"+1 555 12x 0005\""));
        assert!(parse("+1 555").unwrap_err().contains("7 to 15 digits"));
    }

    #[test]
    fn national_numbers_in_the_default_country() {
        let us = country("us").unwrap();
        let gb = country("GB").unwrap();
        for (given, country, want) in [
            ("(555) 123-0005", us, "+15551230005"),
            ("1 555 123 0005", us, "+15551230005"),
            ("+44 20 7946 0000", us, "+442079460000"),
            ("0044 20 7946 0000", us, "+442079460000"),
            ("020 7946 0000", gb, "+442079460000"),
            ("06 12 34 56 78", country("FR").unwrap(), "+33612345678"),
            ("06 1234 5678", country("IT").unwrap(), "+390612345678"),
            ("612 345 678", country("ES").unwrap(), "+34612345678"),
        ] {
            assert_eq!(parse_in(given, Some(country)).as_deref(), Ok(want), "{given} in {}", country.iso);
        }
        for (given, country) in [("555 0005", us), ("2 555 123 0005", us), ("20 7946 0000", gb), ("0", gb)] {
            let err = parse_in(given, Some(country)).unwrap_err();
            assert!(err.contains(&format!("{given:?} is not a national number of {}", country.iso)), "{err}");
        }
        assert!(parse_in("555 12x 0005", Some(us)).unwrap_err().contains("\"555 12x 0005\""));
        let err = country("XX").unwrap_err();
        assert!(err.contains("unknown country \"XX\"") && err.contains("US, CA"), "{err}");
    }
}
