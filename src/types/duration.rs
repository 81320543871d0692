//! [`Dur`]: a duration as people write it in the config and in campaign settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written like `5s`, `250ms`, `2m`, `1h` or `1h 30m` (parsed by `humantime`).
///
/// Whole milliseconds, at most [`Dur::MAX`]: every duration a user writes ends up added to a
/// clock somewhere, and a bound here means no such sum can overflow, whatever the field. Each
/// field has its own, tighter bound on top (see [`Dur::within`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// The longest duration any setting accepts: 366 days.
    pub const MAX: Dur = Dur(Duration::from_secs(366 * 24 * 3600));

    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    /// Checks `min ..= max` for the setting `key`; the error names the key and both bounds.
    pub fn within(self, key: &str, min: Dur, max: Dur) -> Result<Dur, String> {
        if self < min {
            return Err(if min.0.is_zero() {
                format!("{key}: expected a duration of at least {min}, got {self}")
            } else if min == Dur::millis(1) {
                format!("{key}: expected a duration above zero, got {self}")
            } else {
                format!("{key}: expected at least {min}, got {self}")
            });
        }
        if self > max {
            return Err(format!("{key}: expected at most {max}, got {self}"));
        }
        Ok(self)
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let expected = || format!("expected a duration such as \"5s\", \"250ms\", \"2m\" or \"1h\", got {text:?}");
        let trimmed = text.trim();
        // humantime reads a bare "0" as zero; every other number needs its unit.
        if trimmed.is_empty() || (trimmed.bytes().all(|b| b.is_ascii_digit()) && trimmed != "0") {
            return Err(expected());
        }
        let duration = humantime::parse_duration(trimmed).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => format!("{text:?} is too long; expected at most {}", Dur::MAX),
            _ => expected(),
        })?;
        if duration > Dur::MAX.0 {
            return Err(format!("{text:?} is too long; expected at most {}", Dur::MAX));
        }
        if duration.subsec_nanos() % 1_000_000 != 0 {
            return Err(format!("{text:?}: expected whole milliseconds"));
        }
        Ok(Dur(duration))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0s"),
            ms if ms % 86_400_000 == 0 && ms >= 2 * 86_400_000 => write!(f, "{}d", ms / 86_400_000),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("250ms".parse::<Dur>().unwrap(), Dur::millis(250));
        assert_eq!("2m".parse::<Dur>().unwrap(), Dur::secs(120));
        assert_eq!(Dur::secs(90).to_string(), "90s");
        assert_eq!(Dur::secs(120).to_string(), "2m");
        assert!("5".parse::<Dur>().is_err());
        assert!("-5s".parse::<Dur>().is_err());
        assert_eq!("0".parse::<Dur>().unwrap(), Dur::secs(0));
        assert_eq!("1h 30m".parse::<Dur>().unwrap(), Dur::secs(5400));
        assert_eq!("30d".parse::<Dur>().unwrap().to_string(), "30d");
        // Numbers that overflow a u64, or a clock, are refused with a message, never a panic.
        for huge in ["18446744073709551615h", "99999999999999999999999s", "10000000000h", "367d", "2y"] {
            let err = huge.parse::<Dur>().unwrap_err();
            assert!(err.contains("too long") && err.contains("366d"), "{huge}: {err}");
        }
        assert!("1us".parse::<Dur>().unwrap_err().contains("whole milliseconds"));
    }
}
