//! How many publishes an MQTT destination keeps in flight: a window that grows while
//! acknowledgements come back promptly and shrinks when they slow, never above the
//! destination's `inflight` (the cap, and so the bound on duplicates after a crash).
//!
//! A fixed window is either too small for a fast broker (the throughput of one connection is
//! window ÷ round trip: 100 in flight on loopback made the relay slower than a plain client) or
//! too large for a cloud that throttles (a full window of publishes queued behind a throttled
//! link only adds latency and resends). So the window is paced by the acknowledgements, as TCP
//! paces its congestion window (AIMD with slow start):
//!
//! - It starts at [`INITIAL`] and, while no acknowledgement has been slow, grows by one per
//!   prompt acknowledgement (doubling every round trip) up to the cap.
//! - An acknowledgement is *slow* when its round trip (client wrote it → PUBACK/PUBCOMP) exceeds
//!   [`SLOW_FACTOR`] × the shortest round trip seen lately, and at least [`PROMPT_FLOOR_MS`] (so
//!   the queueing of a full window on a fast link is not taken for congestion). A slow
//!   acknowledgement halves the window, once per round trip (only a publish written after the
//!   last decrease can cause the next one), never below [`MIN`].
//! - After a decrease it grows by an eighth per round trip (an eighth of the window per window of
//!   prompt acknowledgements): a single destination shares its link with no peer of its own, so
//!   it regains its pace in a few round trips rather than the hundreds of a +1 rule.
//! - It grows only while at least half of it is used, so an idle period does not open it wide
//!   unproven; a lost connection restarts it from [`INITIAL`], growing fast again up to half of
//!   what it was.
//!
//! Pure state with injected time (epoch ms of the sink's clock); the sink loop drives it.

/// Window at the start of a connection.
pub const INITIAL: usize = 16;
/// Smallest window a slowdown leaves.
pub const MIN: usize = 4;
/// A round trip this many times the shortest one seen lately is slow...
pub const SLOW_FACTOR: i64 = 4;
/// ...if it also exceeds this (ms). On loopback a full window of 1,000 takes ~25 ms to turn
/// around; a cloud link's round trip is 20–200 ms.
pub const PROMPT_FLOOR_MS: i64 = 250;
/// The shortest round trip is remembered over two periods of this length (ms), so a route that
/// became slower for good raises it again.
pub const RTT_EPOCH_MS: i64 = 30_000;

/// The in-flight window of one destination, paced by its acknowledgements.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    window: f64,
    cap: usize,
    /// Grow fast (slow start) while the window is below this.
    fast_until: f64,
    last_decrease_ms: Option<i64>,
    epoch_start_ms: i64,
    min_rtt: Option<i64>,
    prev_min_rtt: Option<i64>,
}

impl Pace {
    /// A window capped at `cap` (the destination's `inflight`), starting at [`INITIAL`].
    pub fn new(cap: usize, now_ms: i64) -> Self {
        let cap = cap.max(1);
        Self {
            window: INITIAL.min(cap) as f64,
            cap,
            fast_until: cap as f64,
            last_decrease_ms: None,
            epoch_start_ms: now_ms,
            min_rtt: None,
            prev_min_rtt: None,
        }
    }

    /// Publishes that may be in flight now.
    pub fn window(&self) -> usize {
        (self.window as usize).clamp(1, self.cap)
    }

    /// The cap (`inflight`).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The shortest round trip seen lately (ms), if any.
    pub fn base_rtt_ms(&self) -> Option<i64> {
        match (self.min_rtt, self.prev_min_rtt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Round trips above this are slow (ms).
    pub fn slow_after_ms(&self) -> i64 {
        self.base_rtt_ms()
            .map_or(PROMPT_FLOOR_MS, |b| (b * SLOW_FACTOR).max(PROMPT_FLOOR_MS))
    }

    /// A publish written at `written_ms` was acknowledged at `now_ms`, with `in_flight`
    /// publishes outstanding before this acknowledgement.
    pub fn on_ack(&mut self, written_ms: i64, now_ms: i64, in_flight: usize) {
        if now_ms - self.epoch_start_ms >= RTT_EPOCH_MS {
            self.prev_min_rtt = self.min_rtt.take();
            self.epoch_start_ms = now_ms;
        }
        let rtt = (now_ms - written_ms).max(0);
        if rtt > self.slow_after_ms() {
            if self.last_decrease_ms.is_none_or(|d| written_ms > d) {
                self.window = (self.window / 2.0).max(MIN.min(self.cap) as f64);
                self.fast_until = self.window;
                self.last_decrease_ms = Some(now_ms);
            }
        } else if in_flight * 2 >= self.window() {
            let step = if self.window < self.fast_until {
                1.0
            } else {
                (self.window / 8.0).max(1.0) / self.window
            };
            self.window = (self.window + step).min(self.cap as f64);
        }
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
    }

    /// The connection was lost: start again from [`INITIAL`], fast up to half of the window.
    pub fn connection_lost(&mut self) {
        self.fast_until = (self.window / 2.0).max(INITIAL as f64);
        self.window = INITIAL.min(self.cap) as f64;
        self.last_decrease_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` prompt acknowledgements (1 ms round trips) of a full window at `t`.
    fn prompt(p: &mut Pace, n: usize, t: i64) {
        for _ in 0..n {
            let w = p.window();
            p.on_ack(t, t + 1, w);
        }
    }

    #[test]
    fn grows_to_the_cap_while_acknowledgements_are_prompt() {
        let mut p = Pace::new(1000, 0);
        assert_eq!(p.window(), INITIAL);
        // Slow start: one more per acknowledgement, so a round trip of a full window doubles it.
        prompt(&mut p, 16, 0);
        assert_eq!(p.window(), 32);
        prompt(&mut p, 32, 10);
        assert_eq!(p.window(), 64);
        prompt(&mut p, 2000, 20);
        assert_eq!(p.window(), 1000, "never above the cap");
        assert_eq!(
            Pace::new(8, 0).window(),
            8,
            "a cap below INITIAL starts at the cap"
        );
    }

    #[test]
    fn a_slow_acknowledgement_halves_the_window_once_per_round_trip() {
        let mut p = Pace::new(1000, 0);
        prompt(&mut p, 2000, 0);
        assert_eq!(p.window(), 1000);
        assert_eq!(p.slow_after_ms(), PROMPT_FLOOR_MS);
        // Written at 1000, acknowledged 400 ms later: slow.
        p.on_ack(1_000, 1_400, 1000);
        assert_eq!(p.window(), 500);
        // Publishes written before that decrease are slow too, but count as the same signal.
        p.on_ack(1_100, 1_450, 500);
        assert_eq!(p.window(), 500);
        // One written after the decrease and slow again halves again.
        p.on_ack(1_401, 1_900, 500);
        assert_eq!(p.window(), 250);
        for i in 0..20 {
            let t = 2_000 + i * 1_000;
            p.on_ack(t, t + 900, 250);
        }
        assert_eq!(p.window(), MIN, "never below MIN");
    }

    #[test]
    fn after_a_slowdown_it_regains_an_eighth_per_round_trip() {
        let mut p = Pace::new(1000, 0);
        prompt(&mut p, 2000, 0);
        p.on_ack(1_000, 1_400, 1000);
        assert_eq!(p.window(), 500);
        // One window of prompt acknowledgements: +1/8.
        prompt(&mut p, 500, 2_000);
        assert!((561..=563).contains(&p.window()), "{}", p.window());
        // A few more round trips and it is back at the cap.
        for i in 0..10 {
            let w = p.window();
            prompt(&mut p, w, 3_000 + i);
        }
        assert_eq!(p.window(), 1000);
    }

    #[test]
    fn slow_is_relative_to_the_shortest_round_trip_above_a_floor() {
        let mut p = Pace::new(1000, 0);
        // A link of 100 ms round trips: 300 ms is not slow, 500 ms is.
        p.on_ack(0, 100, 16);
        assert_eq!(p.slow_after_ms(), 400);
        let w = p.window();
        p.on_ack(200, 500, w);
        let grown = p.window();
        assert_eq!(grown, w + 1, "300 ms on a 100 ms link is prompt");
        p.on_ack(600, 1_100, w);
        assert_eq!(p.window(), grown / 2, "500 ms is slow");
        // The shortest round trip is forgotten after two epochs.
        p.on_ack(RTT_EPOCH_MS, RTT_EPOCH_MS + 200, 16);
        p.on_ack(2 * RTT_EPOCH_MS, 2 * RTT_EPOCH_MS + 200, 16);
        assert_eq!(p.base_rtt_ms(), Some(200));
    }

    #[test]
    fn an_idle_window_does_not_grow_and_a_lost_connection_restarts_it() {
        let mut p = Pace::new(1000, 0);
        for i in 0..1000 {
            p.on_ack(i, i + 1, 1);
        }
        assert_eq!(p.window(), INITIAL, "one publish at a time proves nothing");
        prompt(&mut p, 2000, 5_000);
        p.connection_lost();
        assert_eq!(p.window(), INITIAL);
        // Fast again up to half of the 1000 it had, then an eighth per round trip.
        for i in 0..5 {
            let w = p.window();
            prompt(&mut p, w, 6_000 + i);
        }
        assert!((500..=520).contains(&p.window()), "{}", p.window());
    }
}
