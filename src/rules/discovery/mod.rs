//! Home Assistant MQTT discovery: the first time an event instance (camera, topic, source
//! items) is delivered to a destination with `home_assistant = true`, a retained config goes
//! out before it on `<prefix>/<component>/<node_id>/<object_id>/config`, pointing at exactly
//! the topic the rule produced and at the state item inside the camera-format payload. Home
//! Assistant then creates the entity on its own; a restart re-announces (retained configs are
//! simply overwritten).
//!
//! - What kind of entity (`binary_sensor`, `sensor`, `event`) and its `device_class`:
//!   [`entity`]. Item names reach `value_template` only through [`jinja`].
//! - One device per camera (`node_id` `edgerelay_<serial>`), with model and firmware when the
//!   camera reported them.
//! - `availability` lists the camera's availability topic (`availability_topic`, payload
//!   `{"connected":true|false}`) and the relay's last will (when `connect_message` publishes
//!   on the same topic, so "available" is ever said there), with `availability_mode = "all"`:
//!   an entity is available only while both the camera and the relay are.
//!
//! Only deliveries whose payload has the camera's shape (`message.data`) are announced: a
//! rule with its own payload template has no value Home Assistant could read.

pub mod entity;
pub mod jinja;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{Config, DestinationConfig, MqttDestination};
use crate::delivery::Delivery;
use crate::event::{Event, EventKind};
use crate::rules::Routed;
use entity::{Component, Entity};

/// Instances remembered per relay run; past this, nothing more is announced (a source making
/// up endless topics must not grow memory).
pub const MAX_ANNOUNCED: usize = 100_000;

/// Renders the camera's availability as `payload_available` / `payload_not_available`.
const CONNECTED_TEMPLATE: &str = "{{ 'online' if value_json.connected else 'offline' }}";

/// What has been announced, and where announcing is wanted.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Destination → where and how it announces.
    targets: HashMap<Arc<str>, Target>,
    /// (destination, state topic) already announced.
    announced: HashSet<(Arc<str>, String)>,
}

/// One destination's discovery settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Discovery prefix (`homeassistant`).
    pub prefix: String,
    /// Camera availability topic template (`{serial}`, `{camera}`); empty: not listed.
    pub camera_availability: String,
    /// The relay's own availability: (topic, available payload, not-available payload).
    pub relay_availability: Option<(String, String, String)>,
}

impl Target {
    /// The discovery settings of an MQTT destination.
    pub fn of(m: &MqttDestination) -> Self {
        let relay_availability = m.last_will.as_ref().and_then(|will| {
            let birth = m
                .connect_message
                .as_ref()
                .filter(|c| c.topic == will.topic)?;
            Some((
                will.topic.clone(),
                birth.message.clone(),
                will.message.clone(),
            ))
        });
        Self {
            prefix: m.home_assistant_prefix.clone(),
            camera_availability: m.availability_topic.clone(),
            relay_availability,
        }
    }

    /// The `availability` list for a camera (empty when neither topic is known).
    fn availability(&self, ev: &Event) -> Vec<Value> {
        let mut out = Vec::new();
        if !self.camera_availability.is_empty() {
            out.push(json!({
                "topic": render_availability_topic(&self.camera_availability, ev),
                "value_template": CONNECTED_TEMPLATE,
                "payload_available": "online",
                "payload_not_available": "offline",
            }));
        }
        if let Some((topic, online, offline)) = &self.relay_availability {
            out.push(json!({
                "topic": topic,
                "payload_available": online,
                "payload_not_available": offline,
            }));
        }
        out
    }
}

/// `availability_topic` for the camera of `ev`: the very topic the relay announces on.
pub fn render_availability_topic(template: &str, ev: &Event) -> String {
    crate::observe::availability::topic(template, &ev.serial, &ev.camera)
}

impl Discovery {
    /// The destinations of `cfg` that want discovery.
    pub fn from_config(cfg: &Config) -> Self {
        let targets = cfg
            .destination
            .iter()
            .filter_map(|(name, d)| match d {
                DestinationConfig::Mqtt(m) if m.home_assistant => {
                    Some((Arc::from(name.as_str()), Target::of(m)))
                }
                _ => None,
            })
            .collect();
        Self {
            targets,
            announced: HashSet::new(),
        }
    }

    /// Whether any destination wants discovery (the router skips the work otherwise).
    pub fn is_active(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Inserts a config before each of `routed[from..]` (the deliveries of `ev`) that announces
    /// a new entity.
    pub fn announce(&mut self, ev: &Event, routed: &mut Vec<Routed>, from: usize) {
        if ev.kind != EventKind::Event {
            return;
        }
        let mut i = from;
        while i < routed.len() {
            let r = &routed[i];
            i += 1;
            let Some(target) = self.targets.get(&r.destination) else {
                continue;
            };
            let key = (r.destination.clone(), r.delivery.topic.clone());
            if self.announced.contains(&key) || self.announced.len() >= MAX_ANNOUNCED {
                continue;
            }
            let Some(entity) = entity::describe(ev, &r.delivery.payload) else {
                continue;
            };
            let config = Routed {
                destination: r.destination.clone(),
                delivery: config_delivery(ev, &entity, &r.delivery, target),
                change: None,
            };
            self.announced.insert(key);
            routed.insert(i - 1, config);
            i += 1;
        }
    }
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

/// The retained config announcing `entity` for the delivery `state`.
fn config_delivery(ev: &Event, entity: &Entity, state: &Delivery, target: &Target) -> Delivery {
    let levels = entity::topic_levels(&ev.topic);
    let mut name = levels.last().copied().unwrap_or_default().to_string();
    let mut object = levels.join("_");
    for (k, v) in &ev.source {
        name.push_str(&format!(" {k} {v}"));
        object.push_str(&format!("_{k}_{v}"));
    }
    let node = id_safe(&format!("edgerelay_{}", ev.serial));
    let object = id_safe(&object);
    let mut config = json!({
        "name": name,
        "unique_id": format!("{node}_{object}"),
        "state_topic": state.topic,
        "value_template": entity.value_template,
    });
    let c = config.as_object_mut().expect("an object");
    match &entity.component {
        Component::BinarySensor { on, off } => {
            c.insert("payload_on".into(), on.clone());
            c.insert("payload_off".into(), off.clone());
        }
        Component::Sensor => {}
        Component::Event { event_type } => {
            c.insert("event_types".into(), json!([event_type]));
        }
    }
    if let Some(class) = entity.device_class {
        c.insert("device_class".into(), class.into());
    }
    let availability = target.availability(ev);
    if !availability.is_empty() {
        c.insert("availability".into(), availability.into());
        c.insert("availability_mode".into(), "all".into());
    }
    c.insert("device".into(), device(ev, &node));
    c.insert(
        "origin".into(),
        json!({"name": "edgerelay", "sw_version": env!("CARGO_PKG_VERSION")}),
    );
    Delivery {
        topic: format!(
            "{}/{}/{node}/{object}/config",
            target.prefix,
            entity.component.name()
        ),
        payload: config.to_string().into_bytes(),
        qos: 1,
        retain: true,
        created_ms: state.created_ms,
        camera: state.camera.clone(),
    }
}

/// The camera as a Home Assistant device: every entity of a camera shares its identifier.
fn device(ev: &Event, node: &str) -> Value {
    let name = if ev.camera.is_empty() {
        ev.serial.to_string()
    } else {
        ev.camera.to_string()
    };
    let mut d = json!({
        "identifiers": [node],
        "name": name,
        "manufacturer": "Axis",
        "serial_number": ev.serial.as_ref(),
    });
    let o = d.as_object_mut().expect("an object");
    if let Some(info) = &ev.device {
        if let Some(m) = &info.model {
            o.insert("model".into(), m.as_str().into());
        }
        if let Some(f) = &info.firmware {
            o.insert("sw_version".into(), f.as_str().into());
        }
    }
    d
}
