//! Reconnect back-off: 1 s doubling up to a cap, with jitter so many cameras do not reconnect
//! in lockstep after a network blip. Pure state; the caller sleeps.

use std::time::Duration;

/// Exponential back-off state for one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// 1 s doubling, capped at `cap`.
    pub fn new(cap: Duration) -> Self {
        Self {
            attempt: 0,
            base: Duration::from_secs(1),
            cap: cap.max(Duration::from_secs(1)),
        }
    }

    /// The next delay; `jitter` in `[0, 1)` takes up to a quarter off it.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let d = exp.min(self.cap);
        d.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }

    /// After a connection that worked: start again from 1 s.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let d: Vec<u64> = (0..6).map(|_| b.next_delay(0.0).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.next_delay(0.999).as_millis(), 7502);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_secs(1));
    }
}
