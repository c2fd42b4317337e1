//! Why a camera or destination is red: its last error in words (the text its log line carries),
//! when, how many failures since the last success, and since when it is up or down. Kept
//! inside [`crate::sources::status::SourceStatus`] and [`crate::sinks::mqtt::SinkStats`],
//! changed only on connects and failures (never per event), read by `/status`.

use serde::Serialize;

/// The up/down story of one link, with times in epoch ms of the injected clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Streaming (camera) or connected (destination) now.
    pub up: bool,
    /// Up or down since then; `None` until the link's task started.
    pub since_ms: Option<i64>,
    /// The last error, as its log line says it; kept after a success (then in the past).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_ms: Option<i64>,
    /// Failures since the last success (or since start).
    pub errors_since_success: u64,
    /// The last success (streaming began, broker connected, upload stored).
    pub last_success_ms: Option<i64>,
}

impl Health {
    /// The link's task started at `now_ms`: down (not yet up) since then.
    pub fn start(&mut self, now_ms: i64) {
        if self.since_ms.is_none() {
            self.since_ms = Some(now_ms);
        }
    }

    /// It worked at `now_ms`: up (since now unless it already was), no failures since.
    pub fn success(&mut self, now_ms: i64) {
        if !self.up || self.since_ms.is_none() {
            self.up = true;
            self.since_ms = Some(now_ms);
        }
        self.errors_since_success = 0;
        self.last_success_ms = Some(now_ms);
    }

    /// It failed at `now_ms` with `error`: down (since now unless it already was).
    pub fn error(&mut self, now_ms: i64, error: &str) {
        if self.up || self.since_ms.is_none() {
            self.up = false;
            self.since_ms = Some(now_ms);
        }
        self.last_error = Some(error.to_string());
        self.last_error_ms = Some(now_ms);
        self.errors_since_success += 1;
    }

    /// Seconds in the current state at `now_ms` (0 when unknown).
    pub fn for_s(&self, now_ms: i64) -> f64 {
        self.since_ms
            .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0)
    }
}

/// A duration for people, two units at most: `45 s`, `12 min 5 s`, `3 h 12 min`, `2 days 4 h`.
pub fn duration(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) as u64 } else { 0 };
    match s {
        0..60 => format!("{s} s"),
        60..3600 => pair(s / 60, "min", s % 60, "s"),
        3600..86_400 => pair(s / 3600, "h", s % 3600 / 60, "min"),
        _ => {
            let days = s / 86_400;
            let unit = if days == 1 { "day" } else { "days" };
            pair(days, unit, s % 86_400 / 3600, "h")
        }
    }
}

fn pair(a: u64, ua: &str, b: u64, ub: &str) -> String {
    if b == 0 {
        format!("{a} {ua}")
    } else {
        format!("{a} {ua} {b} {ub}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_two_units_at_most() {
        assert_eq!(duration(0.0), "0 s");
        assert_eq!(duration(59.9), "59 s");
        assert_eq!(duration(60.0), "1 min");
        assert_eq!(duration(725.0), "12 min 5 s");
        assert_eq!(duration(3.0 * 3600.0 + 12.0 * 60.0 + 40.0), "3 h 12 min");
        assert_eq!(duration(7200.0), "2 h");
        assert_eq!(duration(86_400.0 + 3600.0), "1 day 1 h");
        assert_eq!(duration(3.0 * 86_400.0), "3 days");
        assert_eq!(duration(-5.0), "0 s");
        assert_eq!(duration(f64::NAN), "0 s");
    }

    #[test]
    fn failures_count_until_a_success_and_the_state_keeps_its_start() {
        let mut h = Health::default();
        h.start(1_000);
        assert_eq!((h.up, h.since_ms), (false, Some(1_000)));
        h.error(2_000, "refused");
        h.error(3_000, "refused again");
        // Still down since start; two failures, the last one's words.
        assert_eq!(h.since_ms, Some(1_000));
        assert_eq!(h.errors_since_success, 2);
        assert_eq!(h.last_error.as_deref(), Some("refused again"));
        assert_eq!(h.last_error_ms, Some(3_000));
        h.success(4_000);
        assert_eq!(
            (h.up, h.since_ms, h.errors_since_success),
            (true, Some(4_000), 0)
        );
        h.success(5_000);
        assert_eq!(h.since_ms, Some(4_000), "up since the first success");
        assert_eq!(h.last_error.as_deref(), Some("refused again"), "kept");
        h.error(9_000, "lost");
        assert_eq!(
            (h.up, h.since_ms, h.errors_since_success),
            (false, Some(9_000), 1)
        );
        assert_eq!(h.for_s(12_000), 3.0);
    }
}
