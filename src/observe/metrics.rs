//! `/metrics`: every metric name, its help and its labels, defined here and nowhere else.
//!
//! A [`Collector`] reads a fresh [`Snapshot`] on each scrape, so counters are the pipeline's own
//! atomics and no new counter is threaded through a hot path.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{Observed, Snapshot, state_code};

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Per camera (label `camera`). Counter names get `_total` from the encoder.
pub const SOURCE_EVENTS: &str = "edgerelay_source_events_received";
/// Per camera and topic (labels `camera`, `topic`).
pub const EVENTS_BY_TOPIC: &str = "edgerelay_events_received_by_topic";
pub const SOURCE_MALFORMED: &str = "edgerelay_source_malformed_frames";
pub const SOURCE_RECONNECTS: &str = "edgerelay_source_reconnects";
pub const SOURCE_SILENCES: &str = "edgerelay_source_silences";
pub const SOURCE_TIMEOUTS: &str = "edgerelay_source_timeouts";
pub const SOURCE_STATE: &str = "edgerelay_source_state";
pub const SOURCE_CLOCK_SKEW: &str = "edgerelay_source_clock_skew_seconds";
pub const SOURCE_LAST_EVENT: &str = "edgerelay_source_last_event_timestamp_seconds";
pub const SNAPSHOTS_TAKEN: &str = "edgerelay_snapshots_taken";
pub const SNAPSHOTS_FAILED: &str = "edgerelay_snapshots_failed";
pub const SNAPSHOTS_SKIPPED: &str = "edgerelay_snapshots_skipped";
/// Per destination (label `destination`).
pub const DELIVERIES_SENT: &str = "edgerelay_deliveries_sent";
pub const DELIVERIES_ACKED: &str = "edgerelay_deliveries_acked";
pub const DELIVERIES_DEAD_LETTERED: &str = "edgerelay_deliveries_dead_lettered";
pub const OUTBOX_DEPTH: &str = "edgerelay_outbox_depth";
pub const OUTBOX_BYTES: &str = "edgerelay_outbox_bytes";
pub const OUTBOX_OLDEST_AGE: &str = "edgerelay_outbox_oldest_age_seconds";
pub const OUTBOX_DROPPED_FULL: &str = "edgerelay_outbox_dropped_full";
pub const OUTBOX_DROPPED_AGE: &str = "edgerelay_outbox_dropped_age";
pub const OUTBOX_REJECTED: &str = "edgerelay_outbox_rejected";
pub const OUTBOX_LOST_CORRUPT: &str = "edgerelay_outbox_lost_corrupt";
pub const OUTBOX_DURABLE: &str = "edgerelay_outbox_durable";
pub const OUTBOX_WRITE_ERRORS: &str = "edgerelay_outbox_write_errors";
pub const DESTINATION_CONNECTED: &str = "edgerelay_destination_connected";
pub const DESTINATION_CONNECTS: &str = "edgerelay_destination_connects";
pub const DELIVERY_LATENCY: &str = "edgerelay_delivery_latency_seconds";
/// No labels.
pub const RULE_STATE_EVICTIONS: &str = "edgerelay_rule_state_evictions";
/// Per command and result (labels `command`: its index in `[[command]]`, `result`: a
/// [`crate::commands::Verdict`] label).
pub const COMMANDS: &str = "edgerelay_commands";

#[derive(Debug)]
struct RelayCollector(Arc<Observed>);

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// One metric family: a value per camera or destination.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    rows: impl IntoIterator<Item = (String, M)>,
) -> std::fmt::Result {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, metric) in rows {
        let labels = [(label, value.as_str())];
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge<N>(v: N) -> ConstGauge<N> {
    ConstGauge::new(v)
}

impl Collector for RelayCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Snapshot {
            now_ms,
            cameras,
            destinations,
            topics,
            rule_state_evictions,
            commands,
        } = self.0.snapshot();
        {
            let m = enc.encode_descriptor(
                RULE_STATE_EVICTIONS,
                "only_changes entries forgotten and max_rate windows closed early to keep rule state bounded.",
                None,
                MetricType::Counter,
            )?;
            counter(rule_state_evictions).encode(m)?;
        }
        if !commands.is_empty() {
            let mut m = enc.encode_descriptor(
                COMMANDS,
                "Command messages per command (its index in [[command]]) and result: ok, bad_request, retained, rate_limited, busy, camera_error, timeout, not_stored.",
                None,
                MetricType::Counter,
            )?;
            for (command, result, n) in &commands {
                let labels = [("command", command.as_str()), ("result", *result)];
                counter(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        if !topics.is_empty() {
            let mut m = enc.encode_descriptor(
                EVENTS_BY_TOPIC,
                "Events routed, per camera and topic (frames and PTZ status as topic \"analytics\" and \"ptz\").",
                None,
                MetricType::Counter,
            )?;
            for (camera, topic, n) in &topics {
                let labels = [("camera", camera.as_str()), ("topic", topic.as_str())];
                counter(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        let c = &cameras;
        use MetricType::{Counter, Gauge};
        let cam = |f: fn(&super::CameraSnapshot) -> u64| {
            c.iter()
                .map(move |s| (s.name.clone(), counter(f(s))))
                .collect::<Vec<_>>()
        };
        family(
            &mut enc,
            SOURCE_EVENTS,
            "Events received and accepted from the camera.",
            Counter,
            "camera",
            cam(|s| s.events),
        )?;
        family(
            &mut enc,
            SOURCE_MALFORMED,
            "Frames from the camera that could not be parsed (skipped).",
            Counter,
            "camera",
            cam(|s| s.malformed),
        )?;
        family(
            &mut enc,
            SOURCE_RECONNECTS,
            "Connections to the camera opened after the first.",
            Counter,
            "camera",
            cam(|s| s.reconnects),
        )?;
        family(
            &mut enc,
            SOURCE_SILENCES,
            "Connections given up because the stream went silent (no data, no keep-alive answer).",
            Counter,
            "camera",
            cam(|s| s.silences),
        )?;
        family(
            &mut enc,
            SOURCE_TIMEOUTS,
            "Connection attempts given up because the camera did not answer a step in time.",
            Counter,
            "camera",
            cam(|s| s.timeouts),
        )?;
        family(
            &mut enc,
            SOURCE_STATE,
            "Camera connection: 0 connecting, 1 streaming, 2 waiting to retry after an error.",
            Gauge,
            "camera",
            c.iter()
                .map(|s| (s.name.clone(), gauge(state_code(&s.state)))),
        )?;
        family(
            &mut enc,
            SOURCE_CLOCK_SKEW,
            "Camera clock minus relay clock as last measured (ONVIF cameras); 0 when unknown.",
            Gauge,
            "camera",
            c.iter()
                .map(|s| (s.name.clone(), gauge(s.clock_skew_ms as f64 / 1000.0))),
        )?;
        family(
            &mut enc,
            SOURCE_LAST_EVENT,
            "Arrival time of the camera's last event (Unix seconds); 0 before any.",
            Gauge,
            "camera",
            c.iter().map(|s| {
                (
                    s.name.clone(),
                    gauge(s.last_event_ms.unwrap_or(0) as f64 / 1000.0),
                )
            }),
        )?;
        family(
            &mut enc,
            SNAPSHOTS_TAKEN,
            "Snapshots fetched from the camera and queued for their destinations.",
            Counter,
            "camera",
            cam(|s| s.snapshots_taken),
        )?;
        family(
            &mut enc,
            SNAPSHOTS_FAILED,
            "Snapshot fetches that failed (camera unreachable, credentials refused, not a JPEG).",
            Counter,
            "camera",
            cam(|s| s.snapshots_failed),
        )?;
        family(
            &mut enc,
            SNAPSHOTS_SKIPPED,
            "Snapshots not taken because enough fetches from the camera were in flight.",
            Counter,
            "camera",
            cam(|s| s.snapshots_skipped),
        )?;

        let d = &destinations;
        let dest = |f: fn(&super::DestinationSnapshot) -> u64| {
            d.iter()
                .map(move |s| (s.name.clone(), counter(f(s))))
                .collect::<Vec<_>>()
        };
        let level = |f: fn(&super::DestinationSnapshot) -> u64| {
            d.iter()
                .map(move |s| (s.name.clone(), gauge(f(s) as i64)))
                .collect::<Vec<_>>()
        };
        family(
            &mut enc,
            DELIVERIES_SENT,
            "Deliveries handed to the destination's client (resends included).",
            Counter,
            "destination",
            dest(|s| s.sent),
        )?;
        family(
            &mut enc,
            DELIVERIES_ACKED,
            "Deliveries acknowledged by the destination and removed from the outbox.",
            Counter,
            "destination",
            dest(|s| s.acked),
        )?;
        family(
            &mut enc,
            DELIVERIES_DEAD_LETTERED,
            "Deliveries the destination can never accept, moved to the dead-letter file.",
            Counter,
            "destination",
            dest(|s| s.dead_lettered),
        )?;
        family(
            &mut enc,
            OUTBOX_DEPTH,
            "Deliveries queued in the outbox, not yet acknowledged.",
            Gauge,
            "destination",
            level(|s| s.outbox.depth),
        )?;
        family(
            &mut enc,
            OUTBOX_BYTES,
            "Bytes queued in the outbox (what buffer.max_bytes caps).",
            Gauge,
            "destination",
            level(|s| s.outbox.bytes),
        )?;
        family(
            &mut enc,
            OUTBOX_OLDEST_AGE,
            "Age of the oldest queued delivery in seconds; 0 when empty.",
            Gauge,
            "destination",
            d.iter()
                .map(|s| (s.name.clone(), gauge(s.oldest_age_s(now_ms)))),
        )?;
        family(
            &mut enc,
            OUTBOX_DROPPED_FULL,
            "Oldest deliveries dropped because the outbox was full (when_full = drop_oldest), since start.",
            Counter,
            "destination",
            dest(|s| s.outbox.dropped_full),
        )?;
        family(
            &mut enc,
            OUTBOX_DROPPED_AGE,
            "Deliveries dropped because they were older than buffer.max_age, since start.",
            Counter,
            "destination",
            dest(|s| s.outbox.dropped_age),
        )?;
        family(
            &mut enc,
            OUTBOX_REJECTED,
            "New deliveries refused because the outbox was full, since start.",
            Counter,
            "destination",
            dest(|s| s.outbox.rejected),
        )?;
        family(
            &mut enc,
            OUTBOX_LOST_CORRUPT,
            "Queued deliveries lost to damaged outbox files, since start.",
            Counter,
            "destination",
            dest(|s| s.outbox.lost_corrupt),
        )?;
        family(
            &mut enc,
            OUTBOX_DURABLE,
            "Deliveries made durable in the outbox (covered by an fdatasync, so they survive a power cut), since start; stays 0 with buffer.fsync = false.",
            Counter,
            "destination",
            dest(|s| s.outbox.durable),
        )?;
        family(
            &mut enc,
            OUTBOX_WRITE_ERRORS,
            "Deliveries refused because the outbox could not be written (disk full, read-only, I/O error), since start.",
            Counter,
            "destination",
            dest(|s| s.outbox.write_errors),
        )?;
        family(
            &mut enc,
            DESTINATION_CONNECTED,
            "1 while connected to the broker (MQTT) or while uploads succeed (object stores), else 0.",
            Gauge,
            "destination",
            level(|s| u64::from(s.connected)),
        )?;
        family(
            &mut enc,
            DESTINATION_CONNECTS,
            "Connections made to the destination.",
            Counter,
            "destination",
            dest(|s| s.connects),
        )?;
        family(
            &mut enc,
            DELIVERY_LATENCY,
            "End to end: from the outbox accepting an event to the destination acknowledging it.",
            MetricType::Histogram,
            "destination",
            d.iter().map(|s| (s.name.clone(), s.latency.0.clone())),
        )?;
        Ok(())
    }
}

/// A registry whose one collector reads `observed` on every scrape.
pub fn registry(observed: Arc<Observed>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(RelayCollector(observed)));
    r
}

/// The Prometheus text of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}
