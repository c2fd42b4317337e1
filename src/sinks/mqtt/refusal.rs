//! A publish the broker refuses by closing the connection (MQTT 3.1.1 has no other way to say
//! no): found, tried alone, and dead-lettered after [`MAX_REFUSALS`] lone tries instead of being
//! resent for ever with every later delivery stuck behind it.
//!
//! When a connection that was up ends with publishes in flight, one of them may be to blame.
//! The next connections then send those entries one at a time (probing), so each is judged
//! alone: an entry the broker acknowledges is innocent; an entry after which the connection
//! closes again within [`REFUSAL_WINDOW_MS`] of being written gets a strike; at
//! [`MAX_REFUSALS`] strikes it is dead-lettered with the reason "refused by the broker". Past
//! the last entry that was in flight, the window opens again. A broker restart costs the
//! entries in flight one lone resend each, never their delivery: only the same entry failing
//! alone, right after being written, three times in a row, is dead-lettered. Pure state; the
//! sink loop drives it.

/// Lone tries of the same entry (counted across reconnects) before it is dead-lettered.
pub const MAX_REFUSALS: u32 = 3;
/// A connection closing this soon after the entry was written implicates it (ms).
pub const REFUSAL_WINDOW_MS: i64 = 5_000;

/// Which entries are sent alone, and the strikes of the one under suspicion.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefusalGuard {
    /// Entries up to this sequence are sent one at a time.
    probe_through: Option<u64>,
    suspect: Option<u64>,
    strikes: u32,
    last_error: String,
}

impl RefusalGuard {
    /// A connection that was up ended with `error` at `now_ms`. `head` is the oldest
    /// unacknowledged outbox entry and when it was written
    /// ([`super::window::AckWindow::head`]); `last_in_flight` the newest entry handed to
    /// the client; `alone` whether the head was the only entry in flight.
    pub fn connection_lost(
        &mut self,
        head: Option<(u64, Option<i64>)>,
        last_in_flight: Option<u64>,
        alone: bool,
        now_ms: i64,
        error: &str,
    ) {
        let Some((seq, written_ms)) = head else {
            return;
        };
        if let Some(last) = last_in_flight {
            self.probe_through = Some(self.probe_through.map_or(last, |p| p.max(last)));
        }
        // Written moments ago, or never written because the client itself failed on it.
        let implicated = written_ms.is_none_or(|t| now_ms - t <= REFUSAL_WINDOW_MS);
        if !alone || !implicated {
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

    /// How many entries may be in flight when the next entry to send is `next`: one while
    /// probing what was in flight at a lost connection.
    pub fn window(&self, next: u64, normal: usize) -> usize {
        if self.probe_through.is_some_and(|p| next <= p) {
            1
        } else {
            normal
        }
    }

    /// The dead-letter reason for `seq` if the broker refused it [`MAX_REFUSALS`] times.
    pub fn verdict(&self, seq: u64) -> Option<String> {
        (self.suspect == Some(seq) && self.strikes >= MAX_REFUSALS).then(|| {
            format!(
                "refused by the broker: the connection closed right after this publish, sent alone, {} times in a row (last: {})",
                self.strikes, self.last_error
            )
        })
    }

    /// Entries up to `seq` left the outbox (acknowledged or dead-lettered): a suspect among
    /// them is cleared, and probing ends once past what was in flight.
    pub fn released_through(&mut self, seq: u64) {
        if self.suspect.is_some_and(|s| s <= seq) {
            self.suspect = None;
            self.strikes = 0;
            self.last_error.clear();
        }
        if self.probe_through.is_some_and(|p| p <= seq) {
            self.probe_through = None;
        }
    }

    /// The entry under suspicion, if any (for logs and tests).
    pub fn suspect(&self) -> Option<u64> {
        self.suspect
    }

    /// Whether entries are being sent one at a time.
    pub fn probing(&self) -> bool {
        self.probe_through.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_in_flight_at_a_lost_connection_are_probed_one_at_a_time() {
        let mut g = RefusalGuard::default();
        assert_eq!(g.window(0, 100), 100);
        // 1..=5 in flight, the connection resets: nobody is blamed yet, all are probed.
        g.connection_lost(Some((1, Some(1_000))), Some(5), false, 1_010, "reset");
        assert_eq!(
            (g.suspect(), g.window(1, 100), g.window(5, 100)),
            (None, 1, 1)
        );
        assert_eq!(g.window(6, 100), 100);
        g.released_through(4);
        assert!(g.probing());
        g.released_through(5);
        assert!(!g.probing());
        assert_eq!(g.window(6, 100), 100);
    }

    #[test]
    fn the_same_entry_refused_three_times_alone_is_dead_lettered() {
        let mut g = RefusalGuard::default();
        g.connection_lost(Some((1, Some(1_000))), Some(7), false, 1_010, "reset");
        g.released_through(6);
        for (i, t) in [2_000, 3_000, 4_000].into_iter().enumerate() {
            assert_eq!(g.verdict(7), None, "try {i}");
            g.connection_lost(
                Some((7, Some(t))),
                Some(7),
                true,
                t + 10,
                "connection reset",
            );
            assert_eq!(g.window(7, 100), 1);
        }
        let why = g.verdict(7).unwrap();
        assert!(why.starts_with("refused by the broker"), "{why}");
        assert!(
            why.contains("3 times") && why.contains("connection reset"),
            "{why}"
        );
        assert_eq!(g.verdict(8), None);
        g.released_through(7);
        assert_eq!(g, RefusalGuard::default());
    }

    #[test]
    fn an_entry_acknowledged_when_sent_alone_is_cleared() {
        let mut g = RefusalGuard::default();
        g.connection_lost(
            Some((7, Some(1_000))),
            Some(7),
            true,
            1_100,
            "broker restarted",
        );
        assert_eq!(g.suspect(), Some(7));
        g.released_through(7);
        assert_eq!(g, RefusalGuard::default());
    }

    #[test]
    fn a_connection_lost_long_after_the_write_or_with_nothing_in_flight_blames_nobody() {
        let mut g = RefusalGuard::default();
        g.connection_lost(None, None, true, 10_000, "keep-alive timeout");
        assert_eq!(g, RefusalGuard::default());
        g.connection_lost(
            Some((7, Some(1_000))),
            Some(7),
            true,
            1_000 + REFUSAL_WINDOW_MS + 1,
            "timeout",
        );
        assert_eq!(g.suspect(), None);
        // Never written: the client failed on it, which implicates it.
        g.connection_lost(Some((7, None)), Some(7), true, 1_000, "packet too large");
        assert_eq!(g.suspect(), Some(7));
    }
}
