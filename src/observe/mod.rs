//! Observability in one place: what `/metrics` and `/status` show, read from the counters the
//! pipeline already keeps ([`SourceStatus`], [`SinkStats`], [`OutboxStats`]) at scrape time.
//! Nothing here sits on a hot path.
//!
//! Labels are only camera and destination names (bounded by the config).

pub mod availability;
pub mod health;
pub mod history;
pub mod metrics;
pub mod status_page;
pub mod topics;
pub mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::SharedClock;
use crate::outbox::{OutboxStats, SharedOutbox};
use crate::sinks::mqtt::SinkStats;
use crate::sources::status::{SourceState, SourceStatus};

/// The running relay's parts that can be observed.
pub struct Parts {
    /// Per-camera status.
    pub sources: Vec<Arc<SourceStatus>>,
    /// Per-destination outbox and counters.
    pub destinations: Vec<(Arc<str>, Arc<SharedOutbox>, Arc<SinkStats>)>,
    /// Events per camera and topic.
    pub topics: Arc<topics::TopicCounts>,
    /// Knows whether a task died.
    pub supervisor: Arc<crate::supervise::Supervisor>,
    /// Rule state entries forgotten to stay bounded.
    pub rule_state_evictions: Arc<std::sync::atomic::AtomicU64>,
    /// Outcomes of commands.
    pub commands: Arc<crate::commands::CommandStats>,
}

/// What the HTTP endpoint reads; ready once [`Observed::set_ready`] gave it the relay's parts
/// (config loaded, outboxes open).
pub struct Observed {
    clock: SharedClock,
    parts: Mutex<Option<Arc<Parts>>>,
    stopping: AtomicBool,
}

impl Observed {
    /// Not ready yet.
    pub fn new(clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            clock,
            parts: Mutex::new(None),
            stopping: AtomicBool::new(false),
        })
    }

    /// The relay started: from now on `/readyz` answers 200.
    pub fn set_ready(&self, parts: Parts) {
        *self.parts.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(parts));
        self.stopping.store(false, Ordering::Relaxed);
    }

    /// A reload replaces the relay: forget the old parts (they hold its outboxes open).
    pub fn clear(&self) {
        *self.parts.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn parts(&self) -> Option<Arc<Parts>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The relay is stopping: `/readyz` answers 503 again (`/healthz` still 200).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// A task of the running relay that died, in words (`/healthz` fails with it).
    pub fn dead_task(&self) -> Option<String> {
        self.parts()?.supervisor.dead()
    }

    /// True once the relay started, until it starts stopping.
    pub fn is_ready(&self) -> bool {
        self.parts().is_some() && !self.stopping.load(Ordering::Relaxed)
    }

    /// Why `/readyz` fails, empty when ready: not started, stopping, or a destination whose
    /// outbox cannot be written (its deliveries are being refused). Reads the outboxes' locks:
    /// call it off the async workers.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let Some(parts) = self.parts() else {
            return vec!["starting".into()];
        };
        if self.stopping.load(Ordering::Relaxed) {
            return vec!["stopping".into()];
        }
        parts
            .destinations
            .iter()
            .filter(|(_, outbox, _)| outbox.stats().write_failing)
            .map(|(name, _, _)| format!("destination {name}: outbox cannot be written"))
            .collect()
    }

    /// The figures now (empty lists before the relay started).
    pub fn snapshot(&self) -> Snapshot {
        let now_ms = self.clock.now_ms();
        let Some(parts) = self.parts() else {
            return Snapshot {
                now_ms,
                cameras: Vec::new(),
                destinations: Vec::new(),
                topics: Vec::new(),
                rule_state_evictions: 0,
                commands: Vec::new(),
            };
        };
        let cameras = parts
            .sources
            .iter()
            .map(|s| CameraSnapshot {
                name: s.name.clone(),
                state: s.state(),
                events: s.events.load(Ordering::Relaxed),
                malformed: s.malformed.load(Ordering::Relaxed),
                reconnects: s.reconnects.load(Ordering::Relaxed),
                silences: s.silences.load(Ordering::Relaxed),
                timeouts: s.timeouts.load(Ordering::Relaxed),
                clock_skew_ms: s.clock_skew_ms.load(Ordering::Relaxed),
                last_event_ms: Some(s.last_event_ms.load(Ordering::Relaxed)).filter(|&t| t > 0),
                snapshots_taken: s.snapshots_taken.load(Ordering::Relaxed),
                snapshots_failed: s.snapshots_failed.load(Ordering::Relaxed),
                snapshots_skipped: s.snapshots_skipped.load(Ordering::Relaxed),
                serial: s.serial().map(|s| s.to_string()),
                firmware: s.firmware(),
                transport: s.transport,
                available: s.available(),
                health: s.health(),
                events_history: s.events_history.view(history::Kind::Rate, now_ms),
            })
            .collect();
        let destinations = parts
            .destinations
            .iter()
            .map(|(name, outbox, stats)| DestinationSnapshot {
                name: name.to_string(),
                connected: stats.connected.load(Ordering::Relaxed),
                sent: stats.sent.load(Ordering::Relaxed),
                acked: stats.acked.load(Ordering::Relaxed),
                dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
                connects: stats.connects.load(Ordering::Relaxed),
                latency: stats.latency.clone(),
                outbox: outbox.stats(),
                health: stats.health(),
                recent_dead: stats.recent_dead.list(),
                acked_history: stats.acked_history.view(history::Kind::Rate, now_ms),
                depth_history: stats.depth_history.view(history::Kind::Level, now_ms),
                drain: stats
                    .drain
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            })
            .collect();
        Snapshot {
            now_ms,
            cameras,
            destinations,
            topics: parts.topics.rows(),
            rule_state_evictions: parts.rule_state_evictions.load(Ordering::Relaxed),
            commands: parts.commands.rows(),
        }
    }
}

/// All figures at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken (epoch ms).
    pub now_ms: i64,
    /// One per camera, in config order.
    pub cameras: Vec<CameraSnapshot>,
    /// One per destination, in config order.
    pub destinations: Vec<DestinationSnapshot>,
    /// (camera, topic, events received), sorted.
    pub topics: Vec<(String, String, u64)>,
    /// Rule state entries forgotten to stay bounded.
    pub rule_state_evictions: u64,
    /// (command index, result, count) for every command and result.
    pub commands: Vec<(String, &'static str, u64)>,
}

/// One camera.
#[derive(Debug, Clone)]
pub struct CameraSnapshot {
    pub name: String,
    pub state: SourceState,
    pub events: u64,
    pub malformed: u64,
    pub reconnects: u64,
    pub silences: u64,
    pub timeouts: u64,
    pub clock_skew_ms: i64,
    pub last_event_ms: Option<i64>,
    pub snapshots_taken: u64,
    pub snapshots_failed: u64,
    pub snapshots_skipped: u64,
    /// Configured, else as the camera reported it.
    pub serial: Option<String>,
    /// As the camera reported it.
    pub firmware: Option<String>,
    /// `websocket`, `rtsp` or `mqtt`.
    pub transport: &'static str,
    /// Availability last announced, `None` before any.
    pub available: Option<bool>,
    /// Why it is red and since when.
    pub health: health::Health,
    /// Events received per second over the last hour.
    pub events_history: history::SeriesView,
}

/// One destination.
#[derive(Debug, Clone)]
pub struct DestinationSnapshot {
    pub name: String,
    pub connected: bool,
    pub sent: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    pub connects: u64,
    pub outbox: OutboxStats,
    pub latency: crate::sinks::mqtt::Latency,
    /// Why it is red and since when.
    pub health: health::Health,
    /// The last dead letters, oldest first.
    pub recent_dead: Vec<crate::outbox::dead_letter::DeadLetterView>,
    /// A backlog draining now.
    pub drain: Option<watch::DrainView>,
    /// Deliveries acknowledged per second over the last hour.
    pub acked_history: history::SeriesView,
    /// Outbox depth (largest per interval) over the last hour.
    pub depth_history: history::SeriesView,
}

impl DestinationSnapshot {
    /// Age of the oldest queued delivery in seconds; 0 when the queue is empty.
    pub fn oldest_age_s(&self, now_ms: i64) -> f64 {
        self.outbox
            .oldest_time_ms
            .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0)
    }
}

/// The number a source state has in `edgerelay_source_state`.
pub fn state_code(s: &SourceState) -> i64 {
    match s {
        SourceState::Connecting => 0,
        SourceState::Streaming => 1,
        SourceState::Backoff { .. } => 2,
    }
}

/// A state in words for people.
pub fn state_word(s: &SourceState) -> &'static str {
    match s {
        SourceState::Connecting => "connecting",
        SourceState::Streaming => "streaming",
        SourceState::Backoff { .. } => "retrying",
    }
}
