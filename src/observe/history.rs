//! The last hour in memory, for `/status` charts: per camera the events received per second,
//! per destination the deliveries acknowledged per second and the outbox depth.
//!
//! Each [`Series`] keeps two bounded rings: [`FINE_LEN`] points of [`FINE_STEP_MS`] (the last
//! 10 minutes in 10-second steps) and [`COARSE_LEN`] points of [`COARSE_STEP_MS`] (the last hour
//! in minutes). A point is 16 bytes, so a series holds at most 120 points, about 2 KiB; a relay
//! with 20 cameras and 5 destinations keeps 30 series, about 60 KiB. [`run`] feeds them from the
//! counters the pipeline already keeps, once per [`SAMPLE_EVERY`], with the injected clock.
//! A rate point is the interval's count over its whole step, so the newest point (the interval
//! so far) reads low until its interval ends.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::clock::SharedClock;
use crate::outbox::SharedOutbox;
use crate::sinks::mqtt::SinkStats;
use crate::sources::status::SourceStatus;

/// Step of the fine ring.
pub const FINE_STEP_MS: i64 = 10_000;
/// Points of the fine ring: 10 minutes.
pub const FINE_LEN: usize = 60;
/// Step of the coarse ring.
pub const COARSE_STEP_MS: i64 = 60_000;
/// Points of the coarse ring: 1 hour.
pub const COARSE_LEN: usize = 60;
/// How often [`run`] reads the counters: a tenth of the fine step, so a point averages ten reads.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One point: the interval starting at `start_ms` and its value (a rate per second or the
/// largest level seen in it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Start of the interval (epoch ms, a multiple of the step).
    pub start_ms: i64,
    /// Its value.
    pub value: f64,
}

/// Points of one step, oldest first, at most `len`, none older than `len` steps.
#[derive(Debug, Clone)]
pub struct Ring {
    step_ms: i64,
    len: usize,
    points: VecDeque<Point>,
}

impl Ring {
    /// An empty ring of `len` points of `step_ms`.
    pub fn new(step_ms: i64, len: usize) -> Self {
        Self {
            step_ms,
            len,
            points: VecDeque::with_capacity(len),
        }
    }

    /// Folds `v` into the interval holding `now_ms` with `combine` (a new interval starts at
    /// `v`); intervals that fell out of the window are forgotten. A clock stepping back folds
    /// into the newest interval.
    pub fn add(&mut self, now_ms: i64, v: f64, combine: fn(f64, f64) -> f64) {
        let start = now_ms - now_ms.rem_euclid(self.step_ms);
        match self.points.back_mut() {
            Some(p) if p.start_ms >= start => p.value = combine(p.value, v),
            _ => self.points.push_back(Point {
                start_ms: start,
                value: v,
            }),
        }
        let oldest = start - (self.len as i64 - 1) * self.step_ms;
        while self.points.len() > self.len
            || self.points.front().is_some_and(|p| p.start_ms < oldest)
        {
            self.points.pop_front();
        }
    }

    /// The points still inside the window ending at `now_ms`, each mapped by `f`.
    pub fn points(&self, now_ms: i64, f: impl Fn(f64) -> f64) -> Vec<Point> {
        let start = now_ms - now_ms.rem_euclid(self.step_ms);
        let oldest = start - (self.len as i64 - 1) * self.step_ms;
        self.points
            .iter()
            .filter(|p| p.start_ms >= oldest)
            .map(|p| Point {
                start_ms: p.start_ms,
                value: f(p.value),
            })
            .collect()
    }

    /// The step in ms.
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    /// The window in ms.
    pub fn window_ms(&self) -> i64 {
        self.step_ms * self.len as i64
    }
}

/// What a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter, shown as its increase per second.
    Rate,
    /// A level, shown as the largest value seen in each interval.
    Level,
}

/// One measured figure over the last hour; its [`Kind`] is the caller's (how it records and
/// views it).
#[derive(Debug, Clone)]
pub struct Series {
    fine: Ring,
    coarse: Ring,
    last: u64,
}

/// A series as `/status` shows it: per-second rates or levels, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesView {
    /// The last 10 minutes in 10-second points.
    pub last_10_min: Vec<Point>,
    /// The last hour in 1-minute points.
    pub last_hour: Vec<Point>,
}

impl Series {
    /// Empty (a counter starts from 0).
    pub fn new() -> Self {
        Self {
            fine: Ring::new(FINE_STEP_MS, FINE_LEN),
            coarse: Ring::new(COARSE_STEP_MS, COARSE_LEN),
            last: 0,
        }
    }

    /// Reads the figure `value` of `kind` at `now_ms`.
    pub fn record(&mut self, kind: Kind, now_ms: i64, value: u64) {
        match kind {
            Kind::Rate => {
                // A counter that went down was replaced (a reload): count from its new value.
                let d = value.checked_sub(self.last).unwrap_or(value) as f64;
                self.last = value;
                self.fine.add(now_ms, d, |a, b| a + b);
                self.coarse.add(now_ms, d, |a, b| a + b);
            }
            Kind::Level => {
                let v = value as f64;
                self.fine.add(now_ms, v, f64::max);
                self.coarse.add(now_ms, v, f64::max);
            }
        }
    }

    /// The points at `now_ms`: counts turned into per-second rates (rounded to 0.01).
    pub fn view(&self, kind: Kind, now_ms: i64) -> SeriesView {
        let per = |ring: &Ring| {
            let secs = ring.step_ms() as f64 / 1000.0;
            match kind {
                Kind::Rate => ring.points(now_ms, |v| (v / secs * 100.0).round() / 100.0),
                Kind::Level => ring.points(now_ms, |v| v),
            }
        };
        SeriesView {
            last_10_min: per(&self.fine),
            last_hour: per(&self.coarse),
        }
    }
}

impl Default for Series {
    fn default() -> Self {
        Self::new()
    }
}

/// A series behind a lock, shared between [`run`] and `/status`.
#[derive(Debug, Default)]
pub struct Shared(Mutex<Series>);

impl Shared {
    /// See [`Series::record`].
    pub fn record(&self, kind: Kind, now_ms: i64, value: u64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(kind, now_ms, value);
    }

    /// See [`Series::view`].
    pub fn view(&self, kind: Kind, now_ms: i64) -> SeriesView {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .view(kind, now_ms)
    }
}

/// Reads every camera's events and every destination's acknowledgements and depth each
/// [`SAMPLE_EVERY`] into their series. Runs until aborted.
pub async fn run(
    sources: Vec<Arc<SourceStatus>>,
    destinations: Vec<(Arc<SharedOutbox>, Arc<SinkStats>)>,
    clock: SharedClock,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = clock.now_ms();
        for s in &sources {
            s.events_history
                .record(Kind::Rate, now, s.events.load(Ordering::Relaxed));
        }
        for (outbox, stats) in &destinations {
            stats
                .acked_history
                .record(Kind::Rate, now, stats.acked.load(Ordering::Relaxed));
            stats
                .depth_history
                .record(Kind::Level, now, outbox.stats().depth);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_one_point_per_step_and_forgets_beyond_its_window() {
        let mut r = Ring::new(10_000, 3);
        r.add(1_000, 1.0, |a, b| a + b);
        r.add(9_999, 2.0, |a, b| a + b);
        r.add(10_000, 5.0, |a, b| a + b);
        assert_eq!(
            r.points(10_000, |v| v),
            vec![
                Point {
                    start_ms: 0,
                    value: 3.0
                },
                Point {
                    start_ms: 10_000,
                    value: 5.0
                }
            ]
        );
        r.add(35_000, 1.0, |a, b| a + b);
        // Window of 3 steps ending in [30 s, 40 s): 10 s, 20 s (none), 30 s.
        let p = r.points(35_000, |v| v);
        assert_eq!(
            p.iter().map(|p| p.start_ms).collect::<Vec<_>>(),
            [10_000, 30_000]
        );
        // Read later, old points fall out even without new samples.
        assert!(r.points(100_000, |v| v).is_empty());
        // Never more than len points, whatever the clock does.
        for i in 0..100 {
            r.add(40_000 + i * 10_000, 1.0, |a, b| a + b);
        }
        assert_eq!(r.points.len(), 3);
        // A clock stepping back folds into the newest point.
        r.add(0, 7.0, |a, b| a + b);
        assert_eq!(r.points.len(), 3);
        assert_eq!(r.points.back().unwrap().value, 8.0);
    }

    #[test]
    fn a_counter_becomes_a_rate_per_second_and_a_level_its_maximum() {
        let (mut events, mut depth) = (Series::new(), Series::new());
        // 30 events in the first 10 s, 5 in the next; depth peaks at 7.
        for (t, n, d) in [(0, 10, 3), (5_000, 30, 7), (10_000, 32, 2), (15_000, 35, 1)] {
            events.record(Kind::Rate, t, n);
            depth.record(Kind::Level, t, d);
        }
        let v = events.view(Kind::Rate, 15_000);
        assert_eq!(
            v.last_10_min,
            vec![
                Point {
                    start_ms: 0,
                    value: 3.0
                },
                Point {
                    start_ms: 10_000,
                    value: 0.5
                }
            ]
        );
        assert_eq!(
            v.last_hour,
            vec![Point {
                start_ms: 0,
                value: 0.58
            }]
        );
        let d = depth.view(Kind::Level, 15_000);
        assert_eq!(
            d.last_10_min.iter().map(|p| p.value).collect::<Vec<_>>(),
            [7.0, 2.0]
        );
        assert_eq!(d.last_hour[0].value, 7.0);
        // A replaced counter (reload) counts from its new value, never negative.
        events.record(Kind::Rate, 20_000, 4);
        assert_eq!(events.view(Kind::Rate, 20_000).last_10_min[2].value, 0.4);
    }

    #[test]
    fn memory_stays_bounded_over_a_day_of_samples() {
        let mut s = Series::new();
        for i in 0..86_400 {
            s.record(Kind::Rate, i * 1_000, i as u64);
        }
        assert_eq!(s.fine.points.len(), FINE_LEN);
        assert_eq!(s.coarse.points.len(), COARSE_LEN);
        assert_eq!(
            std::mem::size_of::<Point>() * (FINE_LEN + COARSE_LEN),
            1920,
            "the size the module doc states"
        );
    }
}
