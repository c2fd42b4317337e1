//! The relay watching its own destinations: trouble a dashboard must know about (a destination
//! down or back, an outbox above 80 %, deliveries dropped) becomes the relay's own events in
//! the camera event format, published on `relay.status_topic`; a large backlog draining after
//! an outage is logged with what is left, the rate and the time to empty.
//!
//! [`Watch`] is the state machine, fed samples with their time; [`run`] is the I/O around it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::delivery::Delivery;
use crate::event::{Event, Items};
use crate::outbox::SharedOutbox;
use crate::sinks::mqtt::SinkStats;

/// A destination disconnected for this long is down (a reconnect blip is not trouble).
pub const DOWN_AFTER_MS: i64 = 3_000;
/// Outbox fill (bytes / `max_bytes`) from which it is reported as high...
pub const FILL_HIGH: f64 = 0.80;
/// ...and below which it is normal again (hysteresis: no flapping around 80 %).
pub const FILL_NORMAL: f64 = 0.70;
/// Drops are reported at most this often per destination, with the count since the last report.
pub const DROPS_EVERY_MS: i64 = 10_000;
/// A backlog this deep on a connected destination is a drain worth logging...
pub const DRAIN_MIN: u64 = 1_000;
/// ...with a progress line this often...
pub const PROGRESS_EVERY_MS: i64 = 10_000;
/// ...until fewer than this are left.
pub const DRAIN_DONE: u64 = DRAIN_MIN / 10;
/// How often [`run`] samples the destinations.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Topic (camera format) of a destination going down or coming back.
pub const DESTINATION_TOPIC: &str = "EdgeRelay/DestinationConnection";
/// Topic of an outbox crossing [`FILL_HIGH`] or back under [`FILL_NORMAL`].
pub const FILL_TOPIC: &str = "EdgeRelay/OutboxFill";
/// Topic of deliveries dropped (buffer policy, age, dead letters).
pub const DROPS_TOPIC: &str = "EdgeRelay/Drops";

/// One destination at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Connected (MQTT) or last upload succeeded (object stores).
    pub connected: bool,
    /// Queued deliveries.
    pub depth: u64,
    /// Their bytes, and the cap.
    pub bytes: u64,
    /// `buffer.max_bytes`.
    pub max_bytes: u64,
    /// Deliveries dropped since start: full buffer, too old, refused, dead-lettered.
    pub dropped: u64,
    /// Deliveries acknowledged since start.
    pub acked: u64,
}

/// Trouble worth an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Disconnected since `since_ms` (for [`DOWN_AFTER_MS`] at least).
    Down { since_ms: i64 },
    /// Connected again after being down since `since_ms`.
    Up { since_ms: i64 },
    /// The outbox is at least [`FILL_HIGH`] full.
    FillHigh { percent: u32, depth: u64 },
    /// Back under [`FILL_NORMAL`].
    FillNormal { percent: u32, depth: u64 },
    /// `new` deliveries dropped since the last report, `total` since start.
    Drops { new: u64, total: u64 },
}

/// A line for the log while a backlog drains.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A drain of `left` deliveries began.
    Started { left: u64 },
    /// Still `left`; acknowledged at `rate` per second; empty in `eta_s` at the net rate
    /// (`None` while the backlog is not shrinking).
    Draining {
        left: u64,
        rate: f64,
        eta_s: Option<f64>,
    },
    /// Down to a few after `took_ms`, `sent` acknowledged meanwhile.
    Done { took_ms: i64, sent: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Connected (or never seen otherwise).
    Up,
    /// Disconnected since then, not yet reported.
    Flaky { since_ms: i64 },
    /// Reported down; disconnected since then.
    Down { since_ms: i64 },
}

#[derive(Debug, Clone)]
struct Drain {
    started_ms: i64,
    started_acked: u64,
    last_ms: i64,
    last_depth: u64,
    last_acked: u64,
    /// Depth at the latest sample.
    last_seen_depth: u64,
    /// The last progress figures (none before the first [`PROGRESS_EVERY_MS`]): acknowledged
    /// and net shrink per second.
    rate: Option<f64>,
    shrink: Option<f64>,
}

/// A backlog draining now, as `/status` shows it (the figures of the last progress line).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrainView {
    /// When the drain began (epoch ms).
    pub started_ms: i64,
    /// Deliveries left at the last sample.
    pub left: u64,
    /// Acknowledged per second over the last [`PROGRESS_EVERY_MS`]; `None` before that.
    pub rate_per_s: Option<f64>,
    /// Seconds to empty from `left` at the last measured net rate; `None` while not
    /// shrinking (or not yet measured).
    pub eta_s: Option<f64>,
}

#[derive(Debug, Clone)]
struct DestWatch {
    link: Link,
    fill_high: bool,
    drops_reported: u64,
    drops_reported_ms: Option<i64>,
    drain: Option<Drain>,
}

/// Per-destination memory of what was already reported.
#[derive(Debug, Default)]
pub struct Watch {
    dests: HashMap<Arc<str>, DestWatch>,
}

impl Watch {
    /// Takes one sample of `name`; appends what to publish and what to log.
    pub fn observe(
        &mut self,
        name: &Arc<str>,
        now_ms: i64,
        s: &Sample,
        notices: &mut Vec<Notice>,
        progress: &mut Vec<Progress>,
    ) {
        let w = self.dests.entry(name.clone()).or_insert_with(|| DestWatch {
            // A destination that never connects is down after the same grace.
            link: if s.connected {
                Link::Up
            } else {
                Link::Flaky { since_ms: now_ms }
            },
            fill_high: false,
            drops_reported: 0,
            drops_reported_ms: None,
            drain: None,
        });
        w.link = match (w.link, s.connected) {
            (Link::Up, true) => Link::Up,
            (Link::Flaky { .. }, true) => Link::Up,
            (Link::Down { since_ms }, true) => {
                notices.push(Notice::Up { since_ms });
                Link::Up
            }
            (Link::Up, false) => Link::Flaky { since_ms: now_ms },
            (Link::Flaky { since_ms }, false) if now_ms - since_ms >= DOWN_AFTER_MS => {
                notices.push(Notice::Down { since_ms });
                Link::Down { since_ms }
            }
            (l @ (Link::Flaky { .. } | Link::Down { .. }), false) => l,
        };

        if s.max_bytes > 0 {
            let fill = s.bytes as f64 / s.max_bytes as f64;
            let percent = (fill * 100.0).round() as u32;
            if !w.fill_high && fill >= FILL_HIGH {
                w.fill_high = true;
                notices.push(Notice::FillHigh {
                    percent,
                    depth: s.depth,
                });
            } else if w.fill_high && fill < FILL_NORMAL {
                w.fill_high = false;
                notices.push(Notice::FillNormal {
                    percent,
                    depth: s.depth,
                });
            }
        }

        if s.dropped > w.drops_reported
            && w.drops_reported_ms
                .is_none_or(|t| now_ms - t >= DROPS_EVERY_MS)
        {
            notices.push(Notice::Drops {
                new: s.dropped - w.drops_reported,
                total: s.dropped,
            });
            w.drops_reported = s.dropped;
            w.drops_reported_ms = Some(now_ms);
        }

        w.drain = match w.drain.take() {
            None if s.connected && s.depth >= DRAIN_MIN => {
                progress.push(Progress::Started { left: s.depth });
                Some(Drain {
                    started_ms: now_ms,
                    started_acked: s.acked,
                    last_ms: now_ms,
                    last_depth: s.depth,
                    last_acked: s.acked,
                    last_seen_depth: s.depth,
                    rate: None,
                    shrink: None,
                })
            }
            None => None,
            // Down again: the outage is what matters now; a new drain starts when it is back.
            Some(_) if !s.connected => None,
            Some(d) if s.depth < DRAIN_DONE => {
                progress.push(Progress::Done {
                    took_ms: now_ms - d.started_ms,
                    sent: s.acked - d.started_acked,
                });
                None
            }
            Some(mut d) if now_ms - d.last_ms >= PROGRESS_EVERY_MS => {
                let secs = (now_ms - d.last_ms) as f64 / 1000.0;
                let rate = s.acked.saturating_sub(d.last_acked) as f64 / secs;
                let shrink = d.last_depth.saturating_sub(s.depth) as f64 / secs;
                let eta_s = (shrink > 0.0).then(|| s.depth as f64 / shrink);
                progress.push(Progress::Draining {
                    left: s.depth,
                    rate,
                    eta_s,
                });
                d.rate = Some(rate);
                d.shrink = Some(shrink);
                d.last_ms = now_ms;
                d.last_depth = s.depth;
                d.last_acked = s.acked;
                Some(d)
            }
            Some(d) => Some(d),
        };
        if let Some(d) = &mut w.drain {
            d.last_seen_depth = s.depth;
        }
    }

    /// The drain of `name` under way, if any.
    pub fn drain(&self, name: &str) -> Option<DrainView> {
        let d = self.dests.get(name)?.drain.as_ref()?;
        Some(DrainView {
            started_ms: d.started_ms,
            left: d.last_seen_depth,
            rate_per_s: d.rate,
            eta_s: d
                .shrink
                .filter(|&r| r > 0.0)
                .map(|r| d.last_seen_depth as f64 / r),
        })
    }
}

impl Notice {
    /// The relay's own event about destination `name`, in the camera event format.
    pub fn to_event(&self, name: &str, now_ms: i64) -> Event {
        let (topic, data): (&str, Vec<(&str, String)>) = match *self {
            Notice::Down { since_ms } => (
                DESTINATION_TOPIC,
                vec![("connected", "0".into()), ("since", since_ms.to_string())],
            ),
            Notice::Up { since_ms } => (
                DESTINATION_TOPIC,
                vec![
                    ("connected", "1".into()),
                    ("gap_ms", (now_ms - since_ms).max(0).to_string()),
                    ("lost", since_ms.to_string()),
                ],
            ),
            Notice::FillHigh { percent, depth } => (
                FILL_TOPIC,
                vec![
                    ("high", "1".into()),
                    ("percent", percent.to_string()),
                    ("depth", depth.to_string()),
                ],
            ),
            Notice::FillNormal { percent, depth } => (
                FILL_TOPIC,
                vec![
                    ("high", "0".into()),
                    ("percent", percent.to_string()),
                    ("depth", depth.to_string()),
                ],
            ),
            Notice::Drops { new, total } => (
                DROPS_TOPIC,
                vec![("dropped", new.to_string()), ("total", total.to_string())],
            ),
        };
        let mut ev = Event::new("".into(), "".into(), topic.to_string(), now_ms);
        ev.source = Items::from([("destination".to_string(), name.to_string())]);
        ev.data = data.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        ev
    }

    /// Logs it: one line per change of state.
    fn log(&self, name: &str) {
        match self {
            Notice::Down { .. } => {
                tracing::warn!(
                    destination = name,
                    "destination down for {DOWN_AFTER_MS} ms; deliveries wait in the outbox"
                )
            }
            Notice::Up { since_ms } => {
                tracing::info!(
                    destination = name,
                    down_since_ms = since_ms,
                    "destination back"
                )
            }
            Notice::FillHigh { percent, depth } => {
                tracing::warn!(
                    destination = name,
                    percent,
                    depth,
                    "outbox above 80% of buffer.max_bytes"
                )
            }
            Notice::FillNormal { percent, depth } => {
                tracing::info!(
                    destination = name,
                    percent,
                    depth,
                    "outbox fill back to normal"
                )
            }
            Notice::Drops { new, total } => {
                tracing::warn!(
                    destination = name,
                    dropped = new,
                    total,
                    "deliveries dropped"
                )
            }
        }
    }
}

impl Progress {
    fn log(&self, name: &str) {
        match *self {
            Progress::Started { left } => {
                tracing::info!(destination = name, left, "draining a backlog")
            }
            Progress::Draining {
                left,
                rate,
                eta_s: Some(eta),
            } => tracing::info!(
                destination = name,
                left,
                rate_per_s = rate.round(),
                eta_s = eta.ceil(),
                "draining a backlog"
            ),
            Progress::Draining {
                left,
                rate,
                eta_s: None,
            } => tracing::info!(
                destination = name,
                left,
                rate_per_s = rate.round(),
                "draining a backlog; not shrinking (events arrive as fast as they leave)"
            ),
            Progress::Done { took_ms, sent } => {
                tracing::info!(destination = name, took_ms, sent, "backlog drained")
            }
        }
    }
}

/// One destination as [`run`] sees it.
pub struct Watched {
    /// Config name.
    pub name: Arc<str>,
    /// Its queue.
    pub outbox: Arc<SharedOutbox>,
    /// Its counters.
    pub stats: Arc<SinkStats>,
    /// Takes the relay's status events (MQTT kinds, when `status_topic` is set).
    pub takes_status: bool,
}

/// Samples every destination each [`SAMPLE_EVERY`], logs progress and notices, and appends
/// the notices as status events to every destination that takes them and is under
/// [`FILL_HIGH`]. Runs until aborted.
pub async fn run(watched: Vec<Watched>, status_topic: String, clock: SharedClock) {
    let mut watch = Watch::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut notices, mut progress) = (Vec::new(), Vec::new());
    loop {
        tick.tick().await;
        let now = clock.now_ms();
        let mut records = Vec::new();
        for w in &watched {
            let o = w.outbox.stats();
            let sample = Sample {
                connected: w.stats.connected.load(Ordering::Relaxed),
                depth: o.depth,
                bytes: o.bytes,
                max_bytes: o.max_bytes,
                dropped: o.dropped_full
                    + o.dropped_age
                    + o.rejected
                    + w.stats.dead_lettered.load(Ordering::Relaxed),
                acked: w.stats.acked.load(Ordering::Relaxed),
            };
            watch.observe(&w.name, now, &sample, &mut notices, &mut progress);
            *w.stats.drain.lock().unwrap_or_else(|e| e.into_inner()) = watch.drain(&w.name);
            for p in progress.drain(..) {
                p.log(&w.name);
            }
            for n in notices.drain(..) {
                n.log(&w.name);
                if !status_topic.is_empty() {
                    let delivery = Delivery {
                        topic: status_topic.clone(),
                        payload: n.to_event(&w.name, now).payload(false).into_bytes(),
                        qos: 1,
                        retain: false,
                        created_ms: now,
                        camera: String::new(),
                    };
                    records.push(delivery.encode());
                }
            }
        }
        if records.is_empty() {
            continue;
        }
        for w in watched.iter().filter(|w| w.takes_status) {
            // Never into a nearly full outbox: status events must not displace or refuse camera
            // events, nor cause the drops they would then report (a feedback loop).
            let o = w.outbox.stats();
            if o.bytes as f64 >= FILL_HIGH * o.max_bytes as f64 {
                tracing::debug!(destination = %w.name, "outbox nearly full: status events not queued here");
                continue;
            }
            if let Err(e) = w.outbox.append_async(records.clone(), now).await {
                tracing::warn!(destination = %w.name, error = %e, "cannot queue the relay's status events");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(connected: bool) -> Sample {
        Sample {
            connected,
            depth: 0,
            bytes: 0,
            max_bytes: 1000,
            dropped: 0,
            acked: 0,
        }
    }

    fn step(w: &mut Watch, now: i64, s: &Sample) -> (Vec<Notice>, Vec<Progress>) {
        let (mut n, mut p) = (Vec::new(), Vec::new());
        w.observe(&"cloud".into(), now, s, &mut n, &mut p);
        (n, p)
    }

    #[test]
    fn a_blip_is_not_trouble_but_an_outage_is_reported_down_then_up() {
        let mut w = Watch::default();
        assert_eq!(step(&mut w, 0, &sample(true)).0, vec![]);
        assert_eq!(step(&mut w, 1_000, &sample(false)).0, vec![]);
        assert_eq!(step(&mut w, 2_000, &sample(true)).0, vec![], "a blip");
        assert_eq!(step(&mut w, 3_000, &sample(false)).0, vec![]);
        assert_eq!(step(&mut w, 5_999, &sample(false)).0, vec![]);
        assert_eq!(
            step(&mut w, 6_000, &sample(false)).0,
            vec![Notice::Down { since_ms: 3_000 }]
        );
        assert_eq!(step(&mut w, 9_000, &sample(false)).0, vec![], "once");
        assert_eq!(
            step(&mut w, 10_000, &sample(true)).0,
            vec![Notice::Up { since_ms: 3_000 }]
        );
    }

    #[test]
    fn a_destination_that_never_connects_is_down() {
        let mut w = Watch::default();
        assert_eq!(step(&mut w, 0, &sample(false)).0, vec![]);
        assert_eq!(
            step(&mut w, 3_000, &sample(false)).0,
            vec![Notice::Down { since_ms: 0 }]
        );
    }

    #[test]
    fn fill_is_reported_above_80_and_normal_below_70_without_flapping() {
        let mut w = Watch::default();
        let fill = |bytes, depth| Sample {
            bytes,
            depth,
            ..sample(false)
        };
        assert_eq!(step(&mut w, 0, &fill(790, 79)).0, vec![]);
        assert_eq!(
            step(&mut w, 1, &fill(800, 80)).0,
            vec![Notice::FillHigh {
                percent: 80,
                depth: 80
            }]
        );
        assert_eq!(step(&mut w, 2, &fill(790, 79)).0, vec![]);
        assert_eq!(step(&mut w, 3, &fill(850, 85)).0, vec![]);
        assert_eq!(step(&mut w, 4, &fill(700, 70)).0, vec![]);
        assert_eq!(
            step(&mut w, 5, &fill(699, 69)).0,
            vec![Notice::FillNormal {
                percent: 70,
                depth: 69
            }]
        );
    }

    #[test]
    fn drops_are_reported_at_once_then_at_most_every_ten_seconds_with_exact_counts() {
        let mut w = Watch::default();
        let dropped = |n| Sample {
            dropped: n,
            ..sample(true)
        };
        assert_eq!(step(&mut w, 0, &dropped(0)).0, vec![]);
        assert_eq!(
            step(&mut w, 1_000, &dropped(5)).0,
            vec![Notice::Drops { new: 5, total: 5 }]
        );
        assert_eq!(step(&mut w, 2_000, &dropped(9)).0, vec![]);
        assert_eq!(step(&mut w, 10_999, &dropped(12)).0, vec![]);
        assert_eq!(
            step(&mut w, 11_000, &dropped(12)).0,
            vec![Notice::Drops { new: 7, total: 12 }]
        );
        assert_eq!(step(&mut w, 30_000, &dropped(12)).0, vec![], "no news");
    }

    #[test]
    fn a_drain_logs_start_progress_with_rate_and_eta_then_done() {
        let mut w = Watch::default();
        let at = |connected, depth, acked| Sample {
            depth,
            acked,
            ..sample(connected)
        };
        assert_eq!(step(&mut w, 0, &at(false, 50_000, 0)).1, vec![]);
        assert_eq!(
            step(&mut w, 1_000, &at(true, 50_000, 0)).1,
            vec![Progress::Started { left: 50_000 }]
        );
        assert_eq!(step(&mut w, 5_000, &at(true, 30_000, 20_000)).1, vec![]);
        assert_eq!(
            step(&mut w, 11_000, &at(true, 10_000, 45_000)).1,
            vec![Progress::Draining {
                left: 10_000,
                rate: 4_500.0,
                eta_s: Some(2.5)
            }]
        );
        assert_eq!(
            step(&mut w, 13_000, &at(true, 20, 55_000)).1,
            vec![Progress::Done {
                took_ms: 12_000,
                sent: 55_000
            }]
        );
        assert_eq!(step(&mut w, 14_000, &at(true, 20, 55_000)).1, vec![]);
    }

    #[test]
    fn the_drain_under_way_is_readable_for_the_status_page() {
        let name: Arc<str> = "d".into();
        let mut w = Watch::default();
        let (mut n, mut p) = (Vec::new(), Vec::new());
        let s = |depth, acked| Sample {
            depth,
            acked,
            ..sample(true)
        };
        w.observe(&name, 0, &s(10, 0), &mut n, &mut p);
        assert_eq!(w.drain("d"), None, "too small to be a drain");
        w.observe(&name, 1_000, &s(5_000, 0), &mut n, &mut p);
        assert_eq!(
            w.drain("d"),
            Some(DrainView {
                started_ms: 1_000,
                left: 5_000,
                rate_per_s: None,
                eta_s: None
            })
        );
        w.observe(&name, 11_000, &s(4_000, 2_000), &mut n, &mut p);
        assert_eq!(
            w.drain("d"),
            Some(DrainView {
                started_ms: 1_000,
                left: 4_000,
                rate_per_s: Some(200.0),
                eta_s: Some(40.0)
            })
        );
        // Between progress lines: the same rate, the time to empty from what is left now.
        w.observe(&name, 11_500, &s(3_900, 2_100), &mut n, &mut p);
        let v = w.drain("d").unwrap();
        assert_eq!(
            (v.left, v.rate_per_s, v.eta_s),
            (3_900, Some(200.0), Some(39.0))
        );
        w.observe(&name, 12_000, &s(50, 6_000), &mut n, &mut p);
        assert_eq!(w.drain("d"), None, "done");
    }

    #[test]
    fn a_backlog_that_does_not_shrink_has_no_eta() {
        let mut w = Watch::default();
        let at = |depth, acked| Sample {
            depth,
            acked,
            ..sample(true)
        };
        step(&mut w, 0, &at(5_000, 0));
        assert_eq!(
            step(&mut w, 10_000, &at(6_000, 1_000)).1,
            vec![Progress::Draining {
                left: 6_000,
                rate: 100.0,
                eta_s: None
            }]
        );
    }

    #[test]
    fn notices_are_events_in_the_camera_format() {
        let ev = Notice::Up { since_ms: 1_000 }.to_event("cloud", 4_500);
        assert_eq!(
            ev.payload(false),
            r#"{"topic":"EdgeRelay/DestinationConnection","timestamp":4500,"message":{"source":{"destination":"cloud"},"key":{},"data":{"connected":"1","gap_ms":"3500","lost":"1000"}}}"#
        );
        let ev = Notice::Drops { new: 3, total: 10 }.to_event("cloud", 1);
        assert_eq!(
            ev.payload(false),
            r#"{"topic":"EdgeRelay/Drops","timestamp":1,"message":{"source":{"destination":"cloud"},"key":{},"data":{"dropped":"3","total":"10"}}}"#
        );
    }
}
