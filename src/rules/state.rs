//! Rule state, apart from I/O and with time passed in: `only_changes` ([`ChangeFilter`]) and
//! `max_rate` ([`RateLimiter`]).
//!
//! **only_changes** remembers, per rule, camera, topic and source items, the data items of the
//! last stateful event it saw, and drops an event whose data equals them. A `Deleted` property
//! forgets the entry. The map survives restarts: the router saves [`ChangeFilter::to_json`] to
//! `rules-state.json` in `data_dir` (beside the outbox, written atomically by temp file and
//! rename, at most every [`SAVE_INTERVAL_MS`]), after the outbox write that accepted the
//! events, so a crash can repeat a state at worst, never lose one. A state is remembered only
//! once its deliveries were accepted: a change is tentative ([`ChangeId`]) until the router
//! settles the batch; a change whose delivery an outbox refused is rolled back, so the next
//! event with that state is delivered again instead of being dropped as a repeat.
//!
//! **max_rate = "N/period"** allows `B = max(1, floor(N))` deliveries per window of
//! `B / N` periods (10/s: 10 per second; 0.5/h: one per two hours), per rule, camera and topic.
//! A window opens with the first event after the previous one ended, so a burst inside one
//! window delivers exactly `B`. With `keep = "first"` the rest of the window is dropped; with
//! `keep = "latest"` the last of them is held and delivered when the window ends (by
//! [`RateLimiter::due`], or by the next event if that comes first), opening the next window.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use serde::{Deserialize, Serialize};

use crate::config::units::Rate;
use crate::event::Items;

/// The state file is written at most this often: a burst of changes is one write, and a crash
/// within this time repeats a state at worst (the outbox already holds the deliveries).
pub const SAVE_INTERVAL_MS: i64 = 200;

/// Name of the state file in `data_dir`.
pub const STATE_FILE: &str = "rules-state.json";

/// Most (rule, camera, topic, source) entries `only_changes` remembers: a camera or MQTT
/// source sending topics or source values of unbounded variety must not grow the relay (or
/// `rules-state.json`) without end. Far above what real sites have (hundreds).
pub const MAX_CHANGE_ENTRIES: usize = 65_536;
/// Most bytes of keys and values `only_changes` remembers.
pub const MAX_CHANGE_BYTES: usize = 16 * 1024 * 1024;
/// Most `max_rate` windows one rule keeps open.
pub const MAX_RATE_WINDOWS: usize = 16_384;

/// Last data seen per (rule, camera, topic, source), bounded by [`MAX_CHANGE_ENTRIES`] and
/// [`MAX_CHANGE_BYTES`]: past them an arbitrary entry is forgotten (counted), so at worst one
/// repeated state of it is delivered again.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    last: HashMap<String, String, FxBuild>,
    bytes: usize,
    evictions: u64,
    dirty: bool,
    /// This batch's changes, in order, until [`ChangeFilter::settle`].
    pending: Vec<Pending>,
}

/// A tentative change: the deliveries it let through carry it until the outbox answered.
pub type ChangeId = u32;

/// Tentative changes kept at most: a caller that never settles (tests, the rules bench) only
/// loses the roll-back, never memory.
const MAX_PENDING: usize = 65_536;

#[derive(Debug, Clone)]
struct Pending {
    key: String,
    /// The value before this change.
    before: Option<String>,
    /// The value after it (`None`: forgotten).
    after: Option<String>,
    refused: bool,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    only_changes: HashMap<String, String, FxBuild>,
}

impl ChangeFilter {
    /// `true` if `data` differs from the last data under `key` (which it then becomes).
    pub fn admit(&mut self, key: &str, data: &str) -> bool {
        match self.last.get_mut(key) {
            Some(old) if old == data => false,
            Some(old) => {
                self.bytes = self.bytes - old.len() + data.len();
                data.clone_into(old);
                self.dirty = true;
                true
            }
            None => {
                while !self.last.is_empty()
                    && (self.last.len() >= MAX_CHANGE_ENTRIES
                        || self.bytes + key.len() + data.len() > MAX_CHANGE_BYTES)
                {
                    self.evict_one();
                }
                self.bytes += key.len() + data.len();
                self.last.insert(key.to_string(), data.to_string());
                self.dirty = true;
                true
            }
        }
    }

    fn evict_one(&mut self) {
        if let Some(k) = self.last.keys().next().cloned() {
            self.forget(&k);
            self.evictions += 1;
        }
    }

    /// Forgets a key (its property was deleted).
    pub fn forget(&mut self, key: &str) {
        if let Some((k, v)) = self.last.remove_entry(key) {
            self.bytes -= k.len() + v.len();
            self.dirty = true;
        }
    }

    /// Entries forgotten to stay within the bounds, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// [`ChangeFilter::admit`] as a tentative change: `None` for a repeat, else the id that
    /// [`ChangeFilter::refuse`] takes if its deliveries are refused.
    pub fn admit_tentative(&mut self, key: &str, data: &str) -> Option<ChangeId> {
        let before = self.last.get(key).cloned();
        if !self.admit(key, data) {
            return None;
        }
        Some(self.push_pending(key, before, Some(data.to_string())))
    }

    /// [`ChangeFilter::forget`] as a tentative change.
    pub fn forget_tentative(&mut self, key: &str) -> ChangeId {
        let before = self.last.get(key).cloned();
        self.forget(key);
        self.push_pending(key, before, None)
    }

    fn push_pending(
        &mut self,
        key: &str,
        before: Option<String>,
        after: Option<String>,
    ) -> ChangeId {
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        self.pending.push(Pending {
            key: key.to_string(),
            before,
            after,
            refused: false,
        });
        (self.pending.len() - 1) as ChangeId
    }

    /// A delivery carrying `id` was refused by its outbox.
    pub fn refuse(&mut self, id: ChangeId) {
        if let Some(p) = self.pending.get_mut(id as usize) {
            p.refused = true;
        }
    }

    /// Ends the batch: each key keeps the value of its last accepted change, or the value it
    /// had before the batch when every change of it was refused.
    pub fn settle(&mut self) {
        if !self.pending.iter().any(|p| p.refused) {
            self.pending.clear();
            return;
        }
        let mut kept: HashMap<String, Option<String>, FxBuild> = HashMap::default();
        for p in self.pending.drain(..) {
            let v = kept.entry(p.key).or_insert(p.before);
            if !p.refused {
                *v = p.after;
            }
        }
        for (k, v) in kept {
            match v {
                Some(v) => {
                    self.admit(&k, &v);
                }
                None => self.forget(&k),
            }
        }
        self.dirty = true;
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Whether something changed since the last [`ChangeFilter::take_dirty`].
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The state as JSON, for the state file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Saved {
            version: 1,
            only_changes: self.last.clone(),
        })
        .expect("strings serialize")
    }

    /// Restores from [`ChangeFilter::to_json`] output; unreadable state is ignored (every
    /// state then counts as a change once).
    pub fn restore(&mut self, json: &str) -> bool {
        match serde_json::from_str::<Saved>(json) {
            Ok(s) if s.version == 1 => {
                self.last.clear();
                self.bytes = 0;
                for (k, v) in s.only_changes {
                    self.admit(&k, &v);
                }
                self.dirty = false;
                true
            }
            _ => false,
        }
    }
}

/// The key of an event for [`ChangeFilter`]: rule, camera, topic and source items, joined by
/// control characters that topics and item names do not hold.
pub fn change_key(rule: &str, camera: &str, topic: &str, source: &Items) -> String {
    let mut k = String::with_capacity(rule.len() + camera.len() + topic.len() + 32);
    for part in [rule, camera, topic] {
        k.push_str(part);
        k.push('\u{1f}');
    }
    push_items(&mut k, source);
    k
}

/// Items as `name\u{1e}value\u{1d}...`: what [`ChangeFilter`] compares.
pub fn items_text(items: &Items) -> String {
    let mut s = String::with_capacity(32);
    push_items(&mut s, items);
    s
}

fn push_items(out: &mut String, items: &Items) {
    for (k, v) in items {
        out.push_str(k);
        out.push('\u{1e}');
        out.push_str(v);
        out.push('\u{1d}');
    }
}

/// A fast non-cryptographic hasher (FxHash) for in-memory maps keyed by camera and topic:
/// SipHash was a tenth of the routing time. Never persisted.
#[derive(Debug, Clone, Copy, Default)]
pub struct FxBuild;

/// The hasher [`FxBuild`] builds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

/// Writes at most once per interval, and only when something changed.
#[derive(Debug, Clone)]
pub struct Debounce {
    interval_ms: i64,
    last_ms: Option<i64>,
}

impl Debounce {
    /// Writes no more often than every `interval_ms`.
    pub fn new(interval_ms: i64) -> Self {
        Self {
            interval_ms,
            last_ms: None,
        }
    }

    /// Whether a pending change may be written now; if so, records the write.
    pub fn ready(&mut self, now_ms: i64) -> bool {
        if self
            .last_ms
            .is_some_and(|last| now_ms - last < self.interval_ms)
        {
            return false;
        }
        self.last_ms = Some(now_ms);
        true
    }
}

/// Which events of a full window `max_rate` delivers.
pub use crate::config::RateKeep as Keep;

/// What to do with one event under a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it now.
    Pass,
    /// Drop it.
    Drop,
    /// Hold it (replacing any held one): it goes out when the window ends.
    Hold,
}

#[derive(Debug, Clone)]
struct Window<T> {
    start_ms: i64,
    used: u32,
    held: Option<T>,
}

/// `max_rate` for one rule: fixed windows per key (camera and topic), opened by an event.
#[derive(Debug, Clone)]
pub struct RateLimiter<T> {
    budget: u32,
    window_ms: i64,
    keep: Keep,
    windows: HashMap<u64, Window<T>, FxBuild>,
    evictions: u64,
}

impl<T> RateLimiter<T> {
    /// A limiter for `rate`.
    pub fn new(rate: Rate, keep: Keep) -> Self {
        let budget = rate.count.floor().max(1.0);
        let window_ms = (rate.per.as_secs_f64() * 1000.0 * budget / rate.count).round() as i64;
        Self {
            budget: budget as u32,
            window_ms: window_ms.max(1),
            keep,
            windows: HashMap::default(),
            evictions: 0,
        }
    }

    /// Windows closed early to stay within [`MAX_RATE_WINDOWS`], since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Makes room for a new window: forgets windows that ended, then, if still full, closes
    /// an eighth of the others early (their held events go out now, into `flushed`; their
    /// keys start a fresh window on their next event).
    fn make_room(&mut self, now_ms: i64, flushed: &mut Vec<T>) {
        let window_ms = self.window_ms;
        self.windows
            .retain(|_, w| now_ms < w.start_ms + window_ms || w.held.is_some());
        if self.windows.len() < MAX_RATE_WINDOWS {
            return;
        }
        let victims: Vec<u64> = self
            .windows
            .keys()
            .take(MAX_RATE_WINDOWS / 8)
            .copied()
            .collect();
        for k in victims {
            if let Some(w) = self.windows.remove(&k) {
                flushed.extend(w.held);
                self.evictions += 1;
            }
        }
    }

    /// Deliveries allowed per window, and the window length in ms.
    pub fn shape(&self) -> (u32, i64) {
        (self.budget, self.window_ms)
    }

    /// Whether this limiter holds events for later ([`RateLimiter::due`] must be called).
    pub fn holds(&self) -> bool {
        self.keep == Keep::Latest
    }

    /// The key of an event: a 64-bit hash of what identifies its stream (no allocation).
    pub fn key(&self, parts: impl Hash) -> u64 {
        FxBuild.hash_one(parts)
    }

    /// Decides about one event under `key` at `now_ms`; `item` is stored when held. A held
    /// event whose window has ended is appended to `flushed` first.
    pub fn admit(
        &mut self,
        key: u64,
        now_ms: i64,
        item: impl FnOnce() -> T,
        flushed: &mut Vec<T>,
    ) -> Decision {
        let (budget, window_ms, keep) = (self.budget, self.window_ms, self.keep);
        if self.windows.len() >= MAX_RATE_WINDOWS && !self.windows.contains_key(&key) {
            self.make_room(now_ms, flushed);
        }
        let w = self.windows.entry(key).or_insert(Window {
            start_ms: now_ms,
            used: 0,
            held: None,
        });
        if now_ms >= w.start_ms + window_ms {
            match w.held.take() {
                Some(h) => {
                    flushed.push(h);
                    *w = Window {
                        start_ms: now_ms,
                        used: 1,
                        held: None,
                    };
                }
                None => {
                    *w = Window {
                        start_ms: now_ms,
                        used: 0,
                        held: None,
                    }
                }
            }
        }
        if w.used < budget {
            w.used += 1;
            return Decision::Pass;
        }
        match keep {
            Keep::First => Decision::Drop,
            Keep::Latest => {
                w.held = Some(item());
                Decision::Hold
            }
        }
    }

    /// Held events whose window has ended by `now_ms`; each opens the next window. Also
    /// forgets windows that ended with nothing held.
    pub fn due(&mut self, now_ms: i64) -> Vec<T> {
        let mut out = Vec::new();
        let window_ms = self.window_ms;
        self.windows.retain(|_, w| {
            if now_ms < w.start_ms + window_ms {
                return true;
            }
            match w.held.take() {
                Some(h) => {
                    out.push(h);
                    *w = Window {
                        start_ms: now_ms,
                        used: 1,
                        held: None,
                    };
                    true
                }
                None => false,
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::units::parse_rate;

    fn limiter(rate: &str, keep: Keep) -> RateLimiter<u32> {
        RateLimiter::new(parse_rate(rate).unwrap(), keep)
    }

    /// Feeds `n` events numbered 0.. spaced `step_ms` apart, calling `due` before each one as
    /// an idle router would; returns what was delivered (immediately or when due).
    fn burst(l: &mut RateLimiter<u32>, clock: &ManualClock, n: u32, step_ms: i64) -> Vec<u32> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(l.due(clock.now_ms()));
            let mut flushed = Vec::new();
            if l.admit(7, clock.now_ms(), || i, &mut flushed) == Decision::Pass {
                flushed.push(i);
            }
            out.extend(flushed);
            clock.advance(step_ms);
        }
        out
    }

    #[test]
    fn keep_first_delivers_exactly_the_budget_of_a_burst() {
        let clock = ManualClock::new(1_000_000);
        let mut l = limiter("10/s", Keep::First);
        // 100 events in one second.
        let got = burst(&mut l, &clock, 100, 10);
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        // The next second opens a new window.
        clock.advance(1000);
        let got = burst(&mut l, &clock, 100, 0);
        assert_eq!(got.len(), 10);
        assert!(l.due(clock.now_ms() + 5000).is_empty());
        assert!(l.windows.is_empty(), "ended windows are forgotten");
    }

    #[test]
    fn keep_latest_delivers_the_last_event_when_the_window_ends() {
        let clock = ManualClock::new(0);
        let mut l = limiter("10/s", Keep::Latest);
        let got = burst(&mut l, &clock, 100, 10);
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "the window is still open");
        assert!(l.due(999).is_empty());
        assert_eq!(l.due(1000), vec![99]);
        assert!(l.due(5000).is_empty());
    }

    #[test]
    fn keep_latest_one_per_window_under_a_steady_stream() {
        let clock = ManualClock::new(0);
        let mut l = limiter("1/s", Keep::Latest);
        // 30 events, 100 ms apart: 0 passes, then the last event of each window follows it.
        let got = burst(&mut l, &clock, 30, 100);
        assert_eq!(got, vec![0, 9, 19]);
        assert_eq!(l.due(clock.now_ms() + 1000), vec![29]);
    }

    #[test]
    fn a_held_event_goes_out_before_a_later_event_of_the_next_window() {
        let mut l = limiter("1/s", Keep::Latest);
        let mut flushed = Vec::new();
        assert_eq!(l.admit(1, 0, || 0, &mut flushed), Decision::Pass);
        assert_eq!(l.admit(1, 10, || 1, &mut flushed), Decision::Hold);
        assert_eq!(l.admit(1, 20, || 2, &mut flushed), Decision::Hold);
        // No `due` call in between: the next event flushes the held one first.
        assert_eq!(l.admit(1, 1500, || 3, &mut flushed), Decision::Hold);
        assert_eq!(flushed, vec![2]);
        assert_eq!(l.due(2500), vec![3]);
    }

    #[test]
    fn keys_are_limited_separately_and_fractional_rates_widen_the_window() {
        let mut l = limiter("0.5/h", Keep::First);
        assert_eq!(l.shape(), (1, 2 * 3600 * 1000));
        let mut f = Vec::new();
        assert_eq!(l.admit(1, 0, || 0, &mut f), Decision::Pass);
        assert_eq!(l.admit(2, 0, || 0, &mut f), Decision::Pass);
        assert_eq!(l.admit(1, 3_600_000, || 0, &mut f), Decision::Drop);
        assert_eq!(l.admit(1, 7_200_000, || 0, &mut f), Decision::Pass);
        assert_eq!(limiter("2.5/s", Keep::First).shape(), (2, 800));
    }

    #[test]
    fn change_filter_stays_within_its_bounds_and_counts_what_it_forgets() {
        let mut f = ChangeFilter::default();
        for i in 0..MAX_CHANGE_ENTRIES + 10 {
            assert!(f.admit(&format!("k{i}"), "1"));
        }
        assert_eq!(f.len(), MAX_CHANGE_ENTRIES);
        assert_eq!(f.evictions(), 10);
        // Bytes: a few huge values evict older entries instead of growing past the cap.
        let big = "x".repeat(MAX_CHANGE_BYTES / 4);
        for i in 0..8 {
            assert!(f.admit(&format!("big{i}"), &big));
        }
        assert!(f.bytes <= MAX_CHANGE_BYTES, "{}", f.bytes);
        let restored = {
            let mut r = ChangeFilter::default();
            assert!(r.restore(&f.to_json()));
            r
        };
        assert_eq!((restored.len(), restored.bytes), (f.len(), f.bytes));
    }

    #[test]
    fn rate_windows_stay_within_their_bound_and_held_events_are_not_lost() {
        let clock = ManualClock::new(0);
        let mut l: RateLimiter<u32> = limiter("1/h", Keep::Latest);
        let mut flushed = Vec::new();
        let mut held = 0;
        for k in 0..MAX_RATE_WINDOWS as u64 + 100 {
            // Two events per key inside the window: the second is held.
            assert_eq!(
                l.admit(k, clock.now_ms(), || 0, &mut flushed),
                Decision::Pass
            );
            assert_eq!(
                l.admit(k, clock.now_ms(), || k as u32, &mut flushed),
                Decision::Hold
            );
            held += 1;
        }
        assert!(l.windows.len() <= MAX_RATE_WINDOWS);
        assert!(l.evictions() > 0);
        // Every held event either still waits in a window or went out early.
        let waiting = l.windows.values().filter(|w| w.held.is_some()).count();
        assert_eq!(waiting + flushed.len(), held);
    }

    #[test]
    fn change_filter_drops_repeats_and_survives_a_round_trip() {
        let mut c = ChangeFilter::default();
        assert!(c.admit("k", r#"{"active":"1"}"#));
        assert!(c.take_dirty());
        assert!(!c.admit("k", r#"{"active":"1"}"#));
        assert!(!c.take_dirty(), "a repeat changes nothing to save");
        assert!(c.admit("k2", r#"{"active":"1"}"#));
        assert!(c.admit("k", r#"{"active":"0"}"#));
        let saved = c.to_json();
        let mut d = ChangeFilter::default();
        assert!(d.restore(&saved));
        assert!(!d.admit("k", r#"{"active":"0"}"#));
        d.forget("k");
        assert!(d.admit("k", r#"{"active":"0"}"#));
        assert!(!ChangeFilter::default().restore("garbage"));
    }

    #[test]
    fn debounce_writes_at_most_once_per_interval() {
        let mut d = Debounce::new(200);
        assert!(d.ready(0));
        assert!(!d.ready(199));
        assert!(d.ready(200));
    }
}
