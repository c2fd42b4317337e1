//! Home Assistant MQTT discovery: the first time a stateful event instance (camera, topic,
//! source items) is delivered to a destination with `home_assistant = true`, a retained
//! `binary_sensor` config goes out before it, pointing at exactly the topic the rule produced
//! and at the state item inside the camera-format payload. Home Assistant then creates the
//! sensor on its own; a restart re-announces (retained configs are simply overwritten).
//!
//! Only deliveries whose payload has the state item at `message.data.<item>` are announced:
//! a rule with its own payload template has no value Home Assistant could read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{Config, DestinationConfig};
use crate::delivery::Delivery;
use crate::event::{Event, EventKind, split_segment};
use crate::rules::Routed;

/// Instances remembered per relay run; past this, nothing more is announced (a source making
/// up endless topics must not grow memory).
pub const MAX_ANNOUNCED: usize = 100_000;

/// What has been announced, and where announcing is wanted.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Destination → discovery prefix.
    prefixes: HashMap<Arc<str>, String>,
    /// (destination, state topic) already announced.
    announced: HashSet<(Arc<str>, String)>,
}

impl Discovery {
    /// The destinations of `cfg` that want discovery.
    pub fn from_config(cfg: &Config) -> Self {
        let prefixes = cfg
            .destination
            .iter()
            .filter_map(|(name, d)| match d {
                DestinationConfig::Mqtt(m) if m.home_assistant => {
                    Some((Arc::from(name.as_str()), m.home_assistant_prefix.clone()))
                }
                _ => None,
            })
            .collect();
        Self {
            prefixes,
            announced: HashSet::new(),
        }
    }

    /// Whether any destination wants discovery (the router skips the work otherwise).
    pub fn is_active(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Inserts a config before each of `routed[from..]` (the deliveries of `ev`) that announces
    /// a new sensor.
    pub fn announce(&mut self, ev: &Event, routed: &mut Vec<Routed>, from: usize) {
        if !ev.stateful || ev.kind != EventKind::Event {
            return;
        }
        let Some(item) = state_item(ev) else { return };
        let mut i = from;
        while i < routed.len() {
            let r = &routed[i];
            i += 1;
            let Some(prefix) = self.prefixes.get(&r.destination) else {
                continue;
            };
            let key = (r.destination.clone(), r.delivery.topic.clone());
            if self.announced.contains(&key) || self.announced.len() >= MAX_ANNOUNCED {
                continue;
            }
            let Some(on_off) = state_values(&r.delivery.payload, item) else {
                continue;
            };
            let config = Routed {
                destination: r.destination.clone(),
                delivery: config_delivery(ev, item, on_off, &r.delivery, prefix),
                change: None,
            };
            self.announced.insert(key);
            routed.insert(i - 1, config);
            i += 1;
        }
    }
}

/// The state item: the catalog's, else the only data item (ONVIF properties over RTSP carry
/// no catalog).
fn state_item(ev: &Event) -> Option<&str> {
    match &ev.state_item {
        Some(s) => Some(s),
        None if ev.data.len() == 1 => ev.data.keys().next().map(String::as_str),
        None => None,
    }
}

/// `payload_on`/`payload_off` when the payload holds the state item where the value template
/// reads it; `None` otherwise (custom payload: nothing to announce).
fn state_values(payload: &[u8], item: &str) -> Option<(&'static str, &'static str)> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let state = v.get("message")?.get("data")?.get(item)?.as_str()?;
    Some(match state {
        "true" | "false" => ("true", "false"),
        _ => ("1", "0"),
    })
}

/// Topic levels and object ids keep `[A-Za-z0-9_-]` only.
fn id_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn config_delivery(
    ev: &Event,
    item: &str,
    (on, off): (&str, &str),
    state: &Delivery,
    prefix: &str,
) -> Delivery {
    let levels: Vec<&str> = ev.topic.split('/').map(|s| split_segment(s).1).collect();
    let mut name = levels.last().copied().unwrap_or_default().to_string();
    let mut object = levels.join("_");
    for (k, v) in &ev.source {
        name.push_str(&format!(" {k} {v}"));
        object.push_str(&format!("_{k}_{v}"));
    }
    let node = id_safe(&format!("edgerelay_{}", ev.serial));
    let object = id_safe(&object);
    let device_name = if ev.camera.is_empty() {
        ev.serial.to_string()
    } else {
        ev.camera.to_string()
    };
    let payload = json!({
        "name": name,
        "unique_id": format!("{node}_{object}"),
        "state_topic": state.topic,
        "value_template": format!("{{{{ value_json.message.data.{item} }}}}"),
        "payload_on": on,
        "payload_off": off,
        "device": {
            "identifiers": [node],
            "name": device_name,
            "manufacturer": "Axis",
            "serial_number": ev.serial.as_ref(),
        },
        "origin": {"name": "edgerelay", "sw_version": env!("CARGO_PKG_VERSION")},
    });
    Delivery {
        topic: format!("{prefix}/binary_sensor/{node}/{object}/config"),
        payload: payload.to_string().into_bytes(),
        qos: 1,
        retain: true,
        created_ms: state.created_ms,
        camera: state.camera.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Items;

    fn vi(port: &str, active: &str) -> Event {
        let mut ev = Event::new(
            "lobby".into(),
            "B8A44F3E9D21".into(),
            "tns1:Device/tnsaxis:IO/VirtualInput".into(),
            1_000,
        );
        ev.stateful = true;
        ev.state_item = Some("active".into());
        ev.source = Items::from([("port".to_string(), port.to_string())]);
        ev.data = Items::from([("active".to_string(), active.to_string())]);
        ev
    }

    fn routed(dest: &str, ev: &Event, topic: &str) -> Routed {
        Routed {
            destination: dest.into(),
            delivery: Delivery {
                topic: topic.into(),
                payload: ev.payload(false).into_bytes(),
                qos: 1,
                retain: true,
                created_ms: 5,
                camera: "lobby".into(),
            },
            change: None,
        }
    }

    fn discovery() -> Discovery {
        Discovery {
            prefixes: HashMap::from([(Arc::from("ha"), "homeassistant".to_string())]),
            announced: HashSet::new(),
        }
    }

    #[test]
    fn the_first_delivery_of_an_instance_is_announced_once_before_it() {
        let mut d = discovery();
        let ev = vi("3", "1");
        let mut out = vec![
            routed("ha", &ev, "axis/x/port/3"),
            routed("other", &ev, "axis/x/port/3"),
        ];
        d.announce(&ev, &mut out, 0);
        assert_eq!(out.len(), 3);
        let c = &out[0].delivery;
        assert_eq!(
            c.topic,
            "homeassistant/binary_sensor/edgerelay_B8A44F3E9D21/Device_IO_VirtualInput_port_3/config"
        );
        assert!(c.retain);
        let v: Value = serde_json::from_slice(&c.payload).unwrap();
        assert_eq!(v["state_topic"], "axis/x/port/3");
        assert_eq!(v["value_template"], "{{ value_json.message.data.active }}");
        assert_eq!(v["name"], "VirtualInput port 3");
        assert_eq!(
            v["unique_id"],
            "edgerelay_B8A44F3E9D21_Device_IO_VirtualInput_port_3"
        );
        assert_eq!(v["device"]["identifiers"][0], "edgerelay_B8A44F3E9D21");
        assert_eq!(out[1].delivery.topic, "axis/x/port/3");
        assert_eq!(&*out[2].destination, "other");

        let mut again = vec![routed("ha", &vi("3", "0"), "axis/x/port/3")];
        d.announce(&vi("3", "0"), &mut again, 0);
        assert_eq!(again.len(), 1, "announced once");
        let mut other_port = vec![routed("ha", &vi("4", "0"), "axis/x/port/4")];
        d.announce(&vi("4", "0"), &mut other_port, 0);
        assert_eq!(other_port.len(), 2, "each instance is its own sensor");
    }

    #[test]
    fn stateless_events_and_custom_payloads_are_not_announced() {
        let mut d = discovery();
        let mut stateless = vi("1", "1");
        stateless.stateful = false;
        let mut out = vec![routed("ha", &stateless, "t")];
        d.announce(&stateless, &mut out, 0);
        assert_eq!(out.len(), 1);

        let ev = vi("1", "1");
        let mut custom = routed("ha", &ev, "t");
        custom.delivery.payload = b"{\"on\":1}".to_vec();
        let mut out = vec![custom];
        d.announce(&ev, &mut out, 0);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn only_deliveries_from_the_given_index_belong_to_the_event() {
        let mut d = discovery();
        let ev = vi("1", "1");
        let mut out = vec![routed("ha", &ev, "held/earlier"), routed("ha", &ev, "t")];
        d.announce(&ev, &mut out, 1);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].delivery.topic, "held/earlier");
        assert!(out[1].delivery.topic.ends_with("/config"));
    }
}
