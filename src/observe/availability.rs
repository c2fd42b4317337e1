//! Camera availability (DESIGN.md §10), like an Axis camera's own MQTT connect message and
//! last will: on every MQTT-family destination with an `availability_topic`, a retained QoS 1
//! `{"serial":"<serial>","connected":true|false}`.
//!
//! - `true` once the camera streams;
//! - `false` when it stopped streaming and is not back within one `heartbeat` (a reconnect
//!   blip says nothing), when it never streamed within one `heartbeat` of start, and at a
//!   clean stop ([`Availability::announce_stop`], before the sinks drain);
//! - only changes: the same state is never sent twice in a row by one relay.
//!
//! The payload needs the serial: it is the configured `serial`, else what the camera reported
//! on its first connection. A camera with neither is skipped until it is known (so a camera
//! without `serial` in config that is down from start gets no `false`).
//!
//! The messages go through the destinations' outboxes like events (durable, in order, Azure
//! IoT Hub sends them as device-to-cloud messages with `mqtt_topic`). [`CameraLink`] is the
//! state machine; [`run`] polls the sources' state every [`POLL`] and appends what changed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::delivery::Delivery;
use crate::outbox::SharedOutbox;
use crate::sources::status::{SourceState, SourceStatus};

/// How often [`run`] reads the cameras' state: states change rarely and reading them is a few
/// locks, so polling is cheap; it bounds how late a message is (well under a heartbeat).
pub const POLL: Duration = Duration::from_millis(250);

/// Placeholders an `availability_topic` may hold.
pub const PLACEHOLDERS: [&str; 2] = ["{serial}", "{camera}"];

/// What one camera last announced and since when it is not streaming.
#[derive(Debug, Clone)]
pub struct CameraLink {
    heartbeat_ms: i64,
    announced: Option<bool>,
    /// Not streaming since then (start counts as "since start").
    down_since_ms: Option<i64>,
}

impl CameraLink {
    /// A camera not streaming yet at `now_ms`.
    pub fn new(heartbeat: Duration, now_ms: i64) -> Self {
        Self {
            heartbeat_ms: heartbeat.as_millis() as i64,
            announced: None,
            down_since_ms: Some(now_ms),
        }
    }

    /// The state to announce after observing `streaming` at `now_ms`, if it changed.
    /// `can_announce` is false while the serial is unknown: nothing is marked announced then,
    /// so the change goes out once it is.
    pub fn observe(&mut self, now_ms: i64, streaming: bool, can_announce: bool) -> Option<bool> {
        let want = if streaming {
            self.down_since_ms = None;
            true
        } else {
            let since = *self.down_since_ms.get_or_insert(now_ms);
            if now_ms - since < self.heartbeat_ms {
                return None;
            }
            false
        };
        self.announce(want, can_announce)
    }

    /// `false` at a clean stop, unless already announced.
    pub fn stop(&mut self, can_announce: bool) -> Option<bool> {
        self.announce(false, can_announce)
    }

    fn announce(&mut self, want: bool, can_announce: bool) -> Option<bool> {
        if !can_announce || self.announced == Some(want) {
            return None;
        }
        self.announced = Some(want);
        Some(want)
    }
}

/// The message body: `{"serial":"…","connected":…}`.
pub fn payload(serial: &str, connected: bool) -> String {
    let serial = serde_json::to_string(serial).expect("a string serializes");
    format!(r#"{{"serial":{serial},"connected":{connected}}}"#)
}

/// The topic for a camera: `{serial}` and `{camera}` replaced as topic levels, percent-encoded
/// like every value from a camera (DESIGN.md §4: a serial comes from the network and must not
/// add levels or turn the topic into a filter). Home Assistant discovery points at the same.
pub fn topic(template: &str, serial: &str, camera: &str) -> String {
    let level = |s: &str| {
        let mut out = String::new();
        crate::event::push_level(&mut out, s);
        out
    };
    template
        .replace("{serial}", &level(serial))
        .replace("{camera}", &level(camera))
}

/// Why `template` is not a usable `availability_topic`, if it is not (`""` is off, fine).
pub fn check_template(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Ok(());
    }
    if template.contains(['+', '#', '\0']) {
        return Err(format!(
            "\"{template}\": a topic to publish on cannot hold the wildcards + or #"
        ));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let tail = &rest[open..];
        let Some(close) = tail.find('}') else {
            return Err(format!("\"{template}\": unclosed {{"));
        };
        let name = &tail[..=close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "\"{template}\": unknown placeholder {name} (only {{serial}} and {{camera}})"
            ));
        }
        rest = &tail[close + 1..];
    }
    Ok(())
}

/// One camera as [`run`] sees it.
pub struct Camera {
    /// Its live status (state and serial).
    pub status: Arc<SourceStatus>,
    /// What it last announced.
    pub link: CameraLink,
}

/// One destination that takes availability messages.
pub struct Target {
    /// Config name.
    pub name: Arc<str>,
    /// Its queue.
    pub outbox: Arc<SharedOutbox>,
    /// Its `availability_topic` (not empty).
    pub template: String,
}

/// Every camera and destination; shared by [`run`] and the relay's shutdown.
pub struct Availability {
    inner: Mutex<(Vec<Camera>, Vec<Target>)>,
}

impl Availability {
    /// Cameras to watch and destinations to tell.
    pub fn new(cameras: Vec<Camera>, targets: Vec<Target>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new((cameras, targets)),
        })
    }

    /// Observes every camera at `now_ms` and queues what changed.
    pub fn poll(&self, now_ms: i64) {
        self.each(now_ms, |link, status| {
            let streaming = status.state() == SourceState::Streaming;
            link.observe(now_ms, streaming, status.serial().is_some())
        });
    }

    /// Queues `false` for every camera that did not announce it yet (a clean stop: call once
    /// the sources stopped, before the sinks drain).
    pub fn announce_stop(&self, now_ms: i64) {
        self.each(now_ms, |link, status| link.stop(status.serial().is_some()));
    }

    fn each(
        &self,
        now_ms: i64,
        mut step: impl FnMut(&mut CameraLink, &SourceStatus) -> Option<bool>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (cameras, targets) = &mut *inner;
        if targets.is_empty() {
            return;
        }
        let mut per_target: Vec<Vec<Vec<u8>>> = vec![Vec::new(); targets.len()];
        for cam in cameras.iter_mut() {
            let Some(connected) = step(&mut cam.link, &cam.status) else {
                continue;
            };
            cam.status.set_available(connected);
            let serial = cam.status.serial().expect("announced only with a serial");
            tracing::info!(camera = %cam.status.name, %serial, connected, "camera availability");
            let body = payload(&serial, connected).into_bytes();
            for (t, records) in targets.iter().zip(per_target.iter_mut()) {
                records.push(
                    Delivery {
                        topic: topic(&t.template, &serial, &cam.status.name),
                        payload: body.clone(),
                        qos: 1,
                        retain: true,
                        created_ms: now_ms,
                        camera: cam.status.name.clone(),
                    }
                    .encode(),
                );
            }
        }
        for (t, records) in targets.iter().zip(per_target) {
            if records.is_empty() {
                continue;
            }
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            if let Err(e) = t.outbox.append(&refs, now_ms) {
                tracing::warn!(destination = %t.name, error = %e, "cannot queue camera availability");
            }
        }
    }
}

/// Polls every [`POLL`] until aborted.
pub async fn run(availability: Arc<Availability>, clock: SharedClock) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        availability.poll(clock.now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> CameraLink {
        CameraLink::new(Duration::from_secs(2), 0)
    }

    #[test]
    fn streaming_is_announced_once() {
        let mut l = link();
        assert_eq!(l.observe(100, true, true), Some(true));
        assert_eq!(l.observe(200, true, true), None);
    }

    #[test]
    fn a_loss_shorter_than_a_heartbeat_is_not_announced_a_longer_one_is_once() {
        let mut l = link();
        l.observe(0, true, true);
        assert_eq!(l.observe(1_000, false, true), None);
        assert_eq!(l.observe(2_999, false, true), None);
        assert_eq!(l.observe(3_000, true, true), None, "a blip");
        assert_eq!(l.observe(4_000, false, true), None);
        assert_eq!(l.observe(6_000, false, true), Some(false));
        assert_eq!(l.observe(9_000, false, true), None, "once");
        assert_eq!(l.observe(9_500, true, true), Some(true));
    }

    #[test]
    fn a_camera_that_never_streams_is_down_one_heartbeat_after_start() {
        let mut l = link();
        assert_eq!(l.observe(1_999, false, true), None);
        assert_eq!(l.observe(2_000, false, true), Some(false));
    }

    #[test]
    fn an_unknown_serial_holds_the_announcement_until_known() {
        let mut l = link();
        assert_eq!(l.observe(5_000, false, false), None);
        assert_eq!(l.observe(5_100, false, true), Some(false));
    }

    #[test]
    fn a_clean_stop_announces_false_unless_already_announced() {
        let mut l = link();
        l.observe(0, true, true);
        assert_eq!(l.stop(true), Some(false));
        let mut down = link();
        down.observe(3_000, false, true);
        assert_eq!(down.stop(true), None);
    }

    #[test]
    fn payload_and_topic_match_the_camera_format_and_stay_safe() {
        assert_eq!(
            payload("B8A44F3E9D21", true),
            r#"{"serial":"B8A44F3E9D21","connected":true}"#
        );
        assert_eq!(
            payload("a\"b", false),
            r#"{"serial":"a\"b","connected":false}"#
        );
        assert_eq!(
            topic("axis/{serial}/event/connection", "B8A44F3E9D21", "lobby"),
            "axis/B8A44F3E9D21/event/connection"
        );
        assert_eq!(
            topic("{camera}/{serial}", "x/#+\0", "lob+by"),
            "lob%2Bby/x%2F%23%2B%00"
        );
    }

    #[test]
    fn templates_take_serial_and_camera_only() {
        assert!(check_template("").is_ok());
        assert!(check_template("axis/{serial}/event/connection").is_ok());
        assert!(check_template("cams/{camera}").is_ok());
        assert!(
            check_template("cams/{topic}")
                .unwrap_err()
                .contains("{topic}")
        );
        assert!(check_template("cams/+/x").is_err());
        assert!(check_template("cams/{serial").is_err());
    }
}
