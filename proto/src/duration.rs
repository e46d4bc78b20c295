//! Durations as people type them on the command line: `90s`, `30m`, `24h`,
//! `7d`, or `never`.
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("'{0}' is not a duration: use a number with s, m, h or d (like 30m, 24h, 7d), or 'never'")]
    Malformed(String),
    #[error("'{0}' is no time at all: give a positive duration (like 30m, 24h, 7d), or 'never'")]
    Zero(String),
    #[error("'{0}' is too long: at most 36500d (100 years), or 'never' where that is taken")]
    TooLong(String),
}

/// The longest duration [`parse`] takes: 100 years. Longer ones overflowed
/// a deadline (`Instant + d`) and the coordinator panicked on every
/// connection with `--authenticate-within 107000000000000d`, or wrapped a
/// hold's end into the past (found by a review, 2026-12-08).
pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

/// `None` means never.
pub fn parse(s: &str) -> Result<Option<Duration>, DurationError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| DurationError::Malformed(s.to_string()))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n.checked_mul(60).ok_or_else(|| DurationError::Malformed(s.to_string()))?,
        "h" => n.checked_mul(3600).ok_or_else(|| DurationError::Malformed(s.to_string()))?,
        "d" => n.checked_mul(86_400).ok_or_else(|| DurationError::Malformed(s.to_string()))?,
        _ => return Err(DurationError::Malformed(s.to_string())),
    };
    if secs == 0 {
        return Err(DurationError::Zero(s.to_string()));
    }
    if secs > MAX.as_secs() {
        return Err(DurationError::TooLong(s.to_string()));
    }
    Ok(Some(Duration::from_secs(secs)))
}

/// `secs` as [`parse`] reads it back, in the largest unit that divides
/// it: 600 is "10m", 90 is "90s", 172800 is "2d".
pub fn format(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_largest_unit_that_divides_and_parses_back() {
        for (secs, text) in [(600, "10m"), (90, "90s"), (172_800, "2d"), (7200, "2h"), (86_401, "86401s")] {
            assert_eq!(format(secs), text);
            assert_eq!(parse(text).unwrap(), Some(Duration::from_secs(secs)));
        }
        assert_eq!(format(0), "0s");
    }

    #[test]
    fn parses_units_and_never() {
        assert_eq!(parse("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse("24h"), Ok(Some(Duration::from_secs(86_400))));
        assert_eq!(parse("7d"), Ok(Some(Duration::from_secs(604_800))));
        assert_eq!(parse("never"), Ok(None));
        assert!(parse("0").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("5w").is_err());
        assert!(parse("").is_err());
        assert_eq!(parse("36500d"), Ok(Some(MAX)));
        for long in ["36501d", "107000000000000d", "18446744073709551615s", "99999999999d"] {
            assert_eq!(parse(long), Err(DurationError::TooLong(long.into())), "{long}");
        }
    }
}
