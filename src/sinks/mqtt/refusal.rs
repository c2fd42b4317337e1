//! A publish the broker refuses by closing the connection (MQTT 3.1.1 has no other way to say
//! no): found, tried alone, and dead-lettered after [`MAX_REFUSALS`] tries instead of being
//! resent for ever with every later delivery stuck behind it.
//!
//! When a connection that was up ends while the oldest unacknowledged entry (the head) was
//! written moments before ([`REFUSAL_WINDOW`]), the head becomes a suspect. The next
//! connections send the suspect alone, so nothing else shares the blame; if the broker
//! acknowledges it, it is cleared; if the connection closes right after it again, it gets
//! another strike; at [`MAX_REFUSALS`] strikes it is dead-lettered with the reason "refused by
//! the broker". A broker restart costs an innocent head one lone resend, never its delivery:
//! only the same head failing alone, right after being written, three times in a row, counts.
//! Pure state; the sink loop drives it.

/// Tries of the same head (counted across reconnects) before it is dead-lettered.
pub const MAX_REFUSALS: u32 = 3;
/// A connection closing this soon after the head was written implicates the head (ms).
pub const REFUSAL_WINDOW_MS: i64 = 5_000;

/// The suspect head and its strikes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefusalGuard {
    suspect: Option<u64>,
    strikes: u32,
    last_error: String,
}

impl RefusalGuard {
    /// A connection that was up ended with `error` at `now_ms`; `head` is the oldest
    /// unacknowledged outbox entry and when it was written ([`super::window::AckWindow::head`]).
    pub fn connection_lost(&mut self, head: Option<(u64, Option<i64>)>, now_ms: i64, error: &str) {
        let Some((seq, written_ms)) = head else {
            return;
        };
        // Written moments ago, or never written because the client itself failed on it.
        let implicated = written_ms.is_none_or(|t| now_ms - t <= REFUSAL_WINDOW_MS);
        if !implicated {
            return;
        }
        if self.suspect == Some(seq) {
            self.strikes += 1;
        } else {
            self.suspect = Some(seq);
            self.strikes = 1;
        }
        self.last_error = error.to_string();
    }

    /// How many entries the next connection may have in flight: one while a head is suspected,
    /// so it is tried alone.
    pub fn window(&self, normal: usize) -> usize {
        if self.suspect.is_some() { 1 } else { normal }
    }

    /// The dead-letter reason for `seq` if the broker refused it [`MAX_REFUSALS`] times.
    pub fn verdict(&self, seq: u64) -> Option<String> {
        (self.suspect == Some(seq) && self.strikes >= MAX_REFUSALS).then(|| {
            format!(
                "refused by the broker: the connection closed right after this publish, {} times in a row (last: {})",
                self.strikes, self.last_error
            )
        })
    }

    /// Entries up to `seq` left the outbox (acknowledged or dead-lettered): a suspect among
    /// them is cleared.
    pub fn released_through(&mut self, seq: u64) {
        if self.suspect.is_some_and(|s| s <= seq) {
            *self = Self::default();
        }
    }

    /// The suspected head, if any (for logs and tests).
    pub fn suspect(&self) -> Option<u64> {
        self.suspect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_head_refused_three_times_alone_is_dead_lettered() {
        let mut g = RefusalGuard::default();
        assert_eq!(g.window(100), 100);
        g.connection_lost(Some((7, Some(1_000))), 1_050, "connection closed by peer");
        assert_eq!((g.suspect(), g.window(100)), (Some(7), 1));
        assert_eq!(g.verdict(7), None);
        g.connection_lost(Some((7, Some(2_000))), 2_010, "connection closed by peer");
        assert_eq!(g.verdict(7), None);
        g.connection_lost(Some((7, Some(3_000))), 3_010, "connection closed by peer");
        let why = g.verdict(7).unwrap();
        assert!(why.starts_with("refused by the broker"), "{why}");
        assert!(
            why.contains("3 times") && why.contains("closed by peer"),
            "{why}"
        );
        assert_eq!(g.verdict(8), None);
        g.released_through(7);
        assert_eq!((g.suspect(), g.window(100)), (None, 100));
    }

    #[test]
    fn a_head_acknowledged_when_sent_alone_is_cleared() {
        let mut g = RefusalGuard::default();
        g.connection_lost(Some((7, Some(1_000))), 1_100, "broker restarted");
        g.released_through(7);
        assert_eq!(g, RefusalGuard::default());
        // A new head starts again from one strike.
        g.connection_lost(Some((8, Some(1_000))), 1_100, "x");
        g.connection_lost(Some((9, Some(2_000))), 2_100, "x");
        assert_eq!((g.suspect(), g.strikes), (Some(9), 1));
    }

    #[test]
    fn a_connection_lost_long_after_the_write_or_with_nothing_in_flight_implicates_nobody() {
        let mut g = RefusalGuard::default();
        g.connection_lost(None, 10_000, "keep-alive timeout");
        g.connection_lost(
            Some((7, Some(1_000))),
            1_000 + REFUSAL_WINDOW_MS + 1,
            "timeout",
        );
        assert_eq!(g, RefusalGuard::default());
        // Never written: the client failed on it, which implicates it.
        g.connection_lost(Some((7, None)), 1_000, "packet too large");
        assert_eq!(g.suspect(), Some(7));
    }
}
