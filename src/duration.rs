//! Durations as the command line takes them (`250ms`, `1.5s`, `2m`) and as the logs print
//! them, and the one maximum that keeps every `Instant + Duration` far from overflow.

use std::fmt;
use std::time::Duration;

/// The longest `--delay`, `--idle-timeout` and `--shutdown-timeout`: 30 days. Longer values
/// are almost certainly typos, and a bound keeps every `Instant + Duration` in the daemon far
/// from overflow (an `Instant` plus 10^19 s panics).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn too_long() -> String {
    format!("must be at most {}", Human(MAX_DURATION))
}

/// `250ms`, `5s`, `1.5s`, `2m`, `1h`, `100us`, or a bare number of seconds (`0`, `2.5`), up
/// to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("must not be negative".into());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err("expected a duration such as 250ms, 5s, 1.5s or 2m".into()),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| "expected a duration such as 250ms, 5s, 1.5s or 2m".to_string())?;
    match Duration::try_from_secs_f64(value * scale) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(too_long()),
    }
}

/// A duration as a person writes it: `0s`, `250ms`, `1.5s`, `2m30s`, `720h`, `100us`.
/// (`{:?}` says `0ns` and `1.5s` but also `90s` and `2592000s`.)
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// `value` with at most three decimals, trailing zeros dropped.
        fn decimal(f: &mut fmt::Formatter<'_>, value: f64, unit: &str) -> fmt::Result {
            let text = format!("{value:.3}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            write!(f, "{text}{unit}")
        }
        let d = self.0;
        let secs = d.as_secs();
        if d < Duration::from_micros(1) {
            write!(
                f,
                "{}{}",
                d.as_nanos(),
                if d.is_zero() { "s" } else { "ns" }
            )
        } else if d < Duration::from_millis(1) {
            decimal(f, d.as_nanos() as f64 / 1e3, "us")
        } else if d < Duration::from_secs(1) {
            decimal(f, d.as_nanos() as f64 / 1e6, "ms")
        } else if secs < 60 {
            decimal(f, d.as_secs_f64(), "s")
        } else {
            let (h, m) = (secs / 3600, secs / 60 % 60);
            let s = (secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
            if h > 0 {
                write!(f, "{h}h")?;
            }
            if m > 0 {
                write!(f, "{m}m")?;
            }
            if s >= 0.0005 {
                decimal(f, s, "s")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["", "x", "5x", "-1s", "1.2.3s", "ms", "1e3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(parse_duration("-1"), Err("must not be negative".into()));
        assert_eq!(parse_duration("720h"), Ok(MAX_DURATION));
        for long in [
            "721h",
            "2592001",
            "10000000000000000000",
            "1000000000000000000000",
        ] {
            assert_eq!(
                parse_duration(long),
                Err("must be at most 720h".into()),
                "{long}"
            );
        }
    }

    #[test]
    fn durations_read_like_their_input() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(100), "100us"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(3600 + 60), "1h1m"),
            (MAX_DURATION, "720h"),
        ];
        for (d, want) in cases {
            assert_eq!(Human(d).to_string(), want, "{d:?}");
        }
        for text in ["0s", "250ms", "1.5s", "5s", "2m", "100us"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(Human(d).to_string(), text, "round trip");
        }
    }
}
