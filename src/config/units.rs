//! Human-friendly units in the config: sizes (`512MiB`), durations (`7d`) and rates (`10/s`).
//!
//! Numbers may be fractional (`1.5GiB`, `0.5/s`); a size rounds down to whole bytes. Errors are
//! short phrases that say what was expected, for `file:line: key: ...` messages.

use std::time::Duration;

/// A rate limit: at most `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events allowed per period (positive, may be fractional).
    pub count: f64,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Events per second, for token buckets.
    pub fn per_second(&self) -> f64 {
        self.count / self.per.as_secs_f64()
    }
}

/// Splits `"12.5 MiB"` into `(12.5, "MiB")`; the number must be finite and non-negative.
fn split_number(s: &str) -> Result<(f64, &str), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() {
        return Err("expected a number first".into());
    }
    let n: f64 = num
        .parse()
        .map_err(|_| format!("\"{num}\" is not a number"))?;
    if !n.is_finite() {
        return Err(format!("\"{num}\" is not a finite number"));
    }
    Ok((n, unit.trim()))
}

/// Parses a size: `1000` (bytes), `10B`, `10kB`/`10MB`/`10GB`/`10TB` (powers of 1000),
/// `10KiB`/`512MiB`/`1GiB`/`1TiB` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected a size like 1000, 10MB, 512MiB or 1GiB";
    let (n, unit) = split_number(s).map_err(|e| format!("{e}: {EXPECTED}"))?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("unknown size unit \"{unit}\": {EXPECTED}")),
    };
    let bytes = (n * factor).floor();
    if bytes >= u64::MAX as f64 {
        return Err(format!("size \"{}\" is too large", s.trim()));
    }
    Ok(bytes as u64)
}

/// Parses a duration: a number and a unit `ms`, `s`, `m` (or `min`), `h`, `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration like 250ms, 60s, 5m, 1h or 7d";
    let (n, unit) = split_number(s).map_err(|e| format!("{e}: {EXPECTED}"))?;
    let seconds = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "" => return Err(format!("missing unit: {EXPECTED}")),
        _ => return Err(format!("unknown duration unit \"{unit}\": {EXPECTED}")),
    };
    Duration::try_from_secs_f64(n * seconds)
        .map_err(|_| format!("duration \"{}\" is out of range", s.trim()))
}

/// Parses a rate: `N/s`, `N/min` or `N/h`, with N positive (may be fractional).
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    const EXPECTED: &str = "expected a rate like 10/s, 30/min or 0.5/h";
    let Some((count, per)) = s.trim().split_once('/') else {
        return Err(format!("missing \"/\": {EXPECTED}"));
    };
    let (count, rest) = split_number(count).map_err(|e| format!("{e}: {EXPECTED}"))?;
    if !rest.is_empty() {
        return Err(format!("unexpected \"{rest}\" in the count: {EXPECTED}"));
    }
    if count <= 0.0 {
        return Err(format!("the count must be positive: {EXPECTED}"));
    }
    let per = match per.trim() {
        "s" => Duration::from_secs(1),
        // "m" as durations spell minutes ("5m"), so both read the same.
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("unknown period \"{other}\": {EXPECTED}")),
    };
    Ok(Rate { count, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_decimal_and_binary_units() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("10B"), Ok(10));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5 KiB"), Ok(1536));
        assert_eq!(parse_bytes("2TiB"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        for bad in [
            "",
            "MiB",
            "1 parsec",
            "-1",
            "1..2MB",
            "99999999999999999999999TiB",
        ] {
            let err = parse_bytes(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse_bytes("5 furlongs").unwrap_err().contains("512MiB"));
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for bad in [
            "",
            "60",
            "s",
            "5 weeks",
            "1e400d",
            "99999999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(
            parse_duration("60")
                .unwrap_err()
                .starts_with("missing unit")
        );
    }

    #[test]
    fn rates_per_second_minute_hour() {
        let r = parse_rate("10/s").unwrap();
        assert_eq!((r.count, r.per), (10.0, Duration::from_secs(1)));
        assert_eq!(parse_rate("30/min").unwrap().per, Duration::from_secs(60));
        assert_eq!(parse_rate("5/m").unwrap().per, Duration::from_secs(60));
        let r = parse_rate("0.5/h").unwrap();
        assert_eq!((r.count, r.per), (0.5, Duration::from_secs(3600)));
        assert!((parse_rate("30/min").unwrap().per_second() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn bad_rates_are_rejected() {
        for bad in ["", "10", "0/s", "-1/s", "10/day", "ten/s", "10x/s", "/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
