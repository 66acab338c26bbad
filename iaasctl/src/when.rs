//! Times on the command line: `--since 15m` or `--since 2026-01-02T03:04:05Z`, and the short
//! ages of the instance table (`42s`, `5m`, `3h`, `2d`).

use chrono::{DateTime, Duration, Utc};

use crate::error::{CliError, Result};

/// Parses `input` as an RFC 3339 time or as an age before `now`: a whole number followed by
/// `s`, `m`, `h`, `d` or `w` (`90s`, `15m`, `2h`, `7d`, `1w`).
pub fn parse_time(
    argument: &'static str,
    input: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>> {
    let input = input.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(input) {
        return Ok(time.with_timezone(&Utc));
    }
    let invalid = || {
        CliError::usage(
            argument,
            input,
            "expected an RFC 3339 time (2026-01-02T03:04:05Z) or an age such as 90s, 15m, 2h, 7d, 1w",
        )
    };
    let split = input.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = input.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let age = match unit {
        "s" => Duration::try_seconds(number),
        "m" => Duration::try_minutes(number),
        "h" => Duration::try_hours(number),
        "d" => Duration::try_days(number),
        "w" => Duration::try_weeks(number),
        _ => None,
    }
    .ok_or_else(invalid)?;
    now.checked_sub_signed(age).ok_or_else(invalid)
}

/// The age of something made at `since`, seen at `now`, in its largest whole unit.
pub fn format_age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iaas_core::{Clock, ManualClock};

    fn clock() -> ManualClock {
        ManualClock::new(DateTime::from_timestamp(1_800_000_000, 0).unwrap())
    }

    #[test]
    fn ages_count_back_from_now() {
        let clock = clock();
        let now = clock.now();
        assert_eq!(parse_time("--since", "90s", now).unwrap(), now - Duration::seconds(90));
        assert_eq!(parse_time("--since", "15m", now).unwrap(), now - Duration::minutes(15));
        assert_eq!(parse_time("--since", "2h", now).unwrap(), now - Duration::hours(2));
        assert_eq!(parse_time("--since", "7d", now).unwrap(), now - Duration::days(7));
        assert_eq!(parse_time("--since", "1w", now).unwrap(), now - Duration::weeks(1));
    }

    #[test]
    fn rfc3339_times_are_taken_as_they_are() {
        let time = parse_time("--until", "2026-01-02T04:04:05+01:00", clock().now()).unwrap();
        assert_eq!(time.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    }

    #[test]
    fn anything_else_is_a_usage_error_naming_the_argument() {
        for bad in ["", "m", "15", "15x", "-5m", "yesterday", "99999999999999999999d"] {
            let err = parse_time("--since", bad, clock().now()).unwrap_err();
            assert!(matches!(err, CliError::Usage { argument: "--since", .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn ages_are_shown_in_their_largest_unit() {
        let clock = clock();
        let start = clock.now();
        let age = |secs| {
            clock.set(start + Duration::seconds(secs));
            format_age(start, clock.now())
        };
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(60), "1m");
        assert_eq!(age(3_599), "59m");
        assert_eq!(age(7_200), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
        assert_eq!(age(-5), "0s", "a clock behind the server shows 0s, not a negative age");
    }
}
