//! Local MQTT source (`[[mqtt_source]]`): sensors and other site-local publishers on the
//! embedded broker or any MQTT broker, turned into [`Event`]s so they go through the same
//! rules and outbox as camera events.
//!
//! A message becomes: camera = the source's name, serial = its `serial` (default: the name),
//! topic = the MQTT topic, time = arrival time, data = the payload's top-level JSON members
//! as strings (a string as its text, anything else as JSON text), or `{"value": TEXT}` when
//! the payload is not a JSON object. Sensor readings are state, so the events are stateful
//! (`only_changes` and `retain = "property"` apply). Don't subscribe a source to topics the
//! relay publishes on the same broker: that is a loop.
//!
//! Bounded like camera events: packets of at most 1 MiB, JSON of at most
//! [`MAX_JSON_NODES`] values (else the payload is taken as text), and the topic and items
//! within [`crate::sources::limits`]; a message over a cap is counted as malformed, logged once
//! per burst and skipped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

use crate::clock::SharedClock;
use crate::config::MqttSourceConfig;
use crate::event::{Event, EventKind, Items};
use crate::sources::backoff::Backoff;
use crate::sources::limits::{self, MAX_JSON_NODES};
use crate::sources::queue::EventSender;
use crate::sources::status::{SourceState, SourceStatus};

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The event for one MQTT message (pure; see the module doc for the mapping).
pub fn event_from_message(
    name: &Arc<str>,
    serial: &Arc<str>,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) -> Event {
    let mut data = Items::new();
    let json = (limits::json_nodes(payload) <= MAX_JSON_NODES)
        .then(|| serde_json::from_slice::<serde_json::Value>(payload).ok())
        .flatten();
    match json {
        Some(serde_json::Value::Object(members)) => {
            for (k, v) in members {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                data.insert(k, text);
            }
        }
        _ => {
            data.insert(
                "value".into(),
                String::from_utf8_lossy(payload).trim().to_string(),
            );
        }
    }
    Event {
        camera: name.clone(),
        serial: serial.clone(),
        kind: EventKind::Event,
        topic: topic.to_string(),
        time_ms: now_ms,
        operation: None,
        stateful: true,
        state_item: None,
        item_types: None,
        device: None,
        source: Items::new(),
        key: Items::new(),
        data,
        analytics: None,
        ptz: None,
    }
}

/// QoS from its number (validated to be 0-2).
pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// rumqttc options for a plain `mqtt://host[:port]` broker.
pub fn client_options(
    url: &str,
    client_id: String,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<MqttOptions, String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if u.scheme() != "mqtt" {
        return Err(format!("{url}: only mqtt:// is supported here"));
    }
    let host = u.host_str().ok_or_else(|| format!("{url}: no host"))?;
    let mut o = MqttOptions::new(client_id, host, u.port().unwrap_or(1883));
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(user) = username {
        o.set_credentials(user, password.unwrap_or_default());
    }
    Ok(o)
}

/// Runs one MQTT source until the task is aborted or the router is gone.
pub async fn run(
    cfg: MqttSourceConfig,
    tx: EventSender,
    status: Arc<SourceStatus>,
    clock: SharedClock,
) {
    let name: Arc<str> = cfg.name.as_str().into();
    let serial: Arc<str> = cfg.serial.as_deref().unwrap_or(&cfg.name).into();
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| crate::identity::default_client_id(&format!("source-{}", cfg.name)));
    let opts = match client_options(
        &cfg.url,
        client_id,
        cfg.username.as_deref(),
        cfg.password.as_deref(),
    ) {
        Ok(o) => o,
        Err(e) => {
            status.set(SourceState::Backoff { error: e.clone() });
            tracing::error!(source = %name, error = %e, "mqtt source cannot start");
            return;
        }
    };
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let mut backoff = Backoff::new(MAX_BACKOFF);
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                // Clean session: subscribe again on every connect.
                for t in &cfg.topics {
                    if let Err(e) = client.try_subscribe(t.as_str(), qos(cfg.qos)) {
                        tracing::warn!(source = %name, error = %e, "subscribe failed");
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                backoff.reset();
                if status.set(SourceState::Streaming) {
                    tracing::info!(source = %name, topics = ?cfg.topics, "mqtt source subscribed");
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let now = clock.now_ms();
                let ev = event_from_message(&name, &serial, &p.topic, &p.payload, now);
                if let Err(e) = limits::check_event(&ev) {
                    if status.count_malformed() {
                        tracing::warn!(source = %name, error = %e,
                            count = status.malformed.load(Ordering::Relaxed), "skipping malformed message");
                    }
                    continue;
                }
                status.last_event_ms.store(now, Ordering::Relaxed);
                if tx.send(ev).await.is_err() {
                    return;
                }
                // Counted once queued: a stop that aborts the send must not count it as received.
                status.events.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                let error = e.to_string();
                if status.set(SourceState::Backoff {
                    error: error.clone(),
                }) {
                    tracing::warn!(source = %name, %error, "mqtt source disconnected");
                }
                status.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_members_become_string_data_and_other_payloads_a_value() {
        let (n, s): (Arc<str>, Arc<str>) = ("garden".into(), "garden".into());
        let ev = event_from_message(
            &n,
            &s,
            "sensors/temp/1",
            br#"{"temperature":21.5,"unit":"C","ok":true,"raw":{"a":1}}"#,
            7,
        );
        assert_eq!(
            (&*ev.camera, &*ev.serial, ev.topic.as_str(), ev.time_ms),
            ("garden", "garden", "sensors/temp/1", 7)
        );
        assert_eq!(
            serde_json::to_string(&ev.data).unwrap(),
            r#"{"temperature":"21.5","unit":"C","ok":"true","raw":"{\"a\":1}"}"#
        );
        assert!(ev.stateful && ev.source.is_empty());
        let ev = event_from_message(&n, &s, "sensors/door", b"open\n", 8);
        assert_eq!(
            serde_json::to_string(&ev.data).unwrap(),
            r#"{"value":"open"}"#
        );
        let ev = event_from_message(&n, &s, "sensors/n", b"42", 8);
        assert_eq!(
            serde_json::to_string(&ev.data).unwrap(),
            r#"{"value":"42"}"#
        );
    }

    #[test]
    fn messages_over_the_caps_are_refused() {
        let (n, s): (Arc<str>, Arc<str>) = ("garden".into(), "garden".into());
        let long_topic = "t/".repeat(limits::MAX_TOPIC_BYTES);
        let ev = event_from_message(&n, &s, &long_topic, b"1", 0);
        assert!(limits::check_event(&ev).is_err());
        let members: Vec<String> = (0..=limits::MAX_ITEMS)
            .map(|i| format!(r#""m{i}":1"#))
            .collect();
        let many = format!("{{{}}}", members.join(","));
        let ev = event_from_message(&n, &s, "t", many.as_bytes(), 0);
        assert!(limits::check_event(&ev).is_err());
        // Countless values are not parsed as JSON: one text value.
        let array = format!("[{}0]", "0,".repeat(MAX_JSON_NODES));
        let ev = event_from_message(&n, &s, "t", array.as_bytes(), 0);
        assert_eq!(ev.data.len(), 1);
        assert!(limits::check_event(&ev).is_ok());
    }
}
