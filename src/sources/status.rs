//! Per-source state and counters, read by logs now and by /metrics and /status later.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::clock::{SharedClock, SystemClock};
use crate::observe::health::Health;

/// Where a source's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// Opening the connection (HTTP calls, upgrade, configure).
    Connecting,
    /// Configured and receiving events.
    Streaming,
    /// Waiting before the next attempt, with the error that ended the last one.
    Backoff {
        /// What went wrong.
        error: String,
    },
}

/// Live status of one camera source.
#[derive(Debug)]
pub struct SourceStatus {
    /// Camera name.
    pub name: String,
    state: Mutex<SourceState>,
    /// The camera's serial once known (config, else what the camera said): availability
    /// messages carry it.
    serial: Mutex<Option<std::sync::Arc<str>>>,
    /// Events received and accepted.
    pub events: AtomicU64,
    /// Frames that could not be parsed (skipped).
    pub malformed: AtomicU64,
    /// Connections opened after the first.
    pub reconnects: AtomicU64,
    /// Arrival time of the last event (epoch ms), 0 before any.
    pub last_event_ms: AtomicI64,
    /// Connections given up because the stream went silent (no data, no keep-alive answer).
    pub silences: AtomicU64,
    /// Network steps the camera did not answer in time (connect, TLS, upgrade, configure,
    /// VAPIX calls, RTSP requests): each ended its connection attempt.
    pub timeouts: AtomicU64,
    /// Camera clock minus relay clock, ms, as last measured (ONVIF cameras); 0 when unknown.
    pub clock_skew_ms: AtomicI64,
    /// Snapshots fetched and queued for their destinations.
    pub snapshots_taken: AtomicU64,
    /// Snapshot fetches that failed (camera unreachable, refused, not a JPEG).
    pub snapshots_failed: AtomicU64,
    /// Snapshots not fetched because enough were already in flight for this camera.
    pub snapshots_skipped: AtomicU64,
    /// Virtual inputs the camera has (from its event catalog), 0 while unknown: commands
    /// refuse a port above it.
    virtual_inputs: AtomicU32,
    /// `websocket`, `rtsp` or `mqtt` (empty when not said).
    pub transport: &'static str,
    /// Firmware version, when the camera reported it.
    firmware: Mutex<Option<String>>,
    /// Availability last announced (`true` online), `None` before any.
    available: Mutex<Option<bool>>,
    /// Why it is red and since when (times from `clock`).
    health: Mutex<Health>,
    /// Events received over the last hour (`/status` charts), fed by the history task.
    pub events_history: crate::observe::history::Shared,
    clock: SharedClock,
}

impl SourceStatus {
    /// A status in `Connecting` state, on the system clock.
    pub fn new(name: &str) -> Self {
        Self::with_clock(name, "", std::sync::Arc::new(SystemClock))
    }

    /// A status in `Connecting` state since now on `clock`, for a camera on `transport`.
    pub fn with_clock(name: &str, transport: &'static str, clock: SharedClock) -> Self {
        let mut health = Health::default();
        health.start(clock.now_ms());
        Self {
            name: name.to_string(),
            state: Mutex::new(SourceState::Connecting),
            serial: Mutex::new(None),
            events: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_event_ms: AtomicI64::new(0),
            silences: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            clock_skew_ms: AtomicI64::new(0),
            snapshots_taken: AtomicU64::new(0),
            snapshots_failed: AtomicU64::new(0),
            snapshots_skipped: AtomicU64::new(0),
            virtual_inputs: AtomicU32::new(0),
            transport,
            firmware: Mutex::new(None),
            available: Mutex::new(None),
            health: Mutex::new(health),
            events_history: Default::default(),
            clock,
        }
    }

    /// Current state.
    pub fn state(&self) -> SourceState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the state; returns true when it changed (log only then: one line per change).
    /// Every `Backoff` counts as a failure in [`SourceStatus::health`] with its error's words.
    pub fn set(&self, s: SourceState) -> bool {
        {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            match &s {
                SourceState::Streaming => h.success(self.clock.now_ms()),
                SourceState::Backoff { error } => h.error(self.clock.now_ms(), error),
                SourceState::Connecting => {}
            }
        }
        let mut cur = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *cur == s {
            return false;
        }
        *cur = s;
        true
    }

    /// The serial, once known.
    pub fn serial(&self) -> Option<std::sync::Arc<str>> {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the serial (from config at start, or as the camera reports it).
    pub fn set_serial(&self, serial: std::sync::Arc<str>) {
        *self.serial.lock().unwrap_or_else(|e| e.into_inner()) = Some(serial);
    }

    /// Virtual inputs the camera has, once its event catalog was read.
    pub fn virtual_inputs(&self) -> Option<u32> {
        Some(self.virtual_inputs.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Records the virtual inputs the camera's catalog lists (`None` keeps what was known).
    pub fn set_virtual_inputs(&self, n: Option<u32>) {
        if let Some(n) = n {
            self.virtual_inputs.store(n, Ordering::Relaxed);
        }
    }

    /// Why it is red and since when.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The firmware version, once the camera reported it.
    pub fn firmware(&self) -> Option<String> {
        self.firmware
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the firmware version the camera reported.
    pub fn set_firmware(&self, firmware: Option<String>) {
        *self.firmware.lock().unwrap_or_else(|e| e.into_inner()) = firmware;
    }

    /// The availability last announced (`Some(true)` online), `None` before any.
    pub fn available(&self) -> Option<bool> {
        *self.available.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an availability announcement.
    pub fn set_available(&self, online: bool) {
        *self.available.lock().unwrap_or_else(|e| e.into_inner()) = Some(online);
    }

    /// Counts a malformed frame; true for the first one of a burst (log it, then stay quiet).
    pub fn count_malformed(&self) -> bool {
        let n = self.malformed.fetch_add(1, Ordering::Relaxed);
        n == 0 || n.is_power_of_two()
    }
}
