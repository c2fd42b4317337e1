//! Which Home Assistant entity fits an event instance, from what the catalog says and the
//! value the camera sent:
//!
//! | event | state value | entity |
//! |---|---|---|
//! | stateful | JSON boolean (`typed_values`) | `binary_sensor`, `payload_on: true` |
//! | stateful, declared number (`xsd:int`, `xsd:double`) | any | `sensor` |
//! | stateful, other | `1`/`0`, `true`/`false`, `ON`/`OFF`, `yes`/`no` (any case) | `binary_sensor` with that pair |
//! | stateful, other | anything else | `sensor` |
//! | stateless | — | `event`, one event type named after the topic |
//!
//! The first value seen decides (a string state the camera later changes to a third value
//! then shows as unknown on a binary sensor). `device_class` comes from the topic
//! ([`device_class`]).

use serde_json::{Value, json};

use super::jinja;
use crate::event::{Event, ValueType, split_segment};

/// Where the state item is read in the camera-format payload.
const DATA: &str = "value_json.message.data";

/// Two-valued states cameras send, lower case; matched ignoring case.
const PAIRS: &[(&str, &str)] = &[("1", "0"), ("true", "false"), ("on", "off"), ("yes", "no")];

/// The kind of Home Assistant entity, with what only that kind needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Component {
    /// On/off: `payload_on`/`payload_off` as the rendered value template reads them.
    BinarySensor {
        /// Value meaning on.
        on: Value,
        /// Value meaning off.
        off: Value,
    },
    /// Any other state, shown as it is.
    Sensor,
    /// A stateless occurrence.
    Event {
        /// The one event type.
        event_type: String,
    },
}

impl Component {
    /// The discovery topic's component level.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BinarySensor { .. } => "binary_sensor",
            Self::Sensor => "sensor",
            Self::Event { .. } => "event",
        }
    }
}

/// What to announce for one delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// The kind.
    pub component: Component,
    /// `value_template`.
    pub value_template: String,
    /// `device_class`, when the topic says one this kind accepts.
    pub device_class: Option<&'static str>,
}

/// The entity for `ev` delivered with `payload`; `None` when Home Assistant could read nothing
/// from it (a payload template, a stateful event without a known state item, an empty
/// payload clearing a retained state).
pub fn describe(ev: &Event, payload: &[u8]) -> Option<Entity> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let data = v.get("message")?.get("data")?.as_object()?;
    let levels = topic_levels(&ev.topic);
    if !ev.stateful {
        let component = Component::Event {
            event_type: event_type(&levels),
        };
        let value_template = json!({"event_type": event_type(&levels)}).to_string();
        return Some(Entity {
            device_class: device_class(&levels, &component),
            component,
            value_template,
        });
    }
    let item = state_item(ev)?;
    let declared = ev
        .item_types
        .as_ref()
        .and_then(|t| t.data.get(item))
        .copied();
    let component = match data.get(item)? {
        Value::Bool(_) => Component::BinarySensor {
            on: Value::Bool(true),
            off: Value::Bool(false),
        },
        Value::String(_) if matches!(declared, Some(ValueType::Integer | ValueType::Decimal)) => {
            Component::Sensor
        }
        Value::String(s) => match pair(s) {
            Some((on, off)) => Component::BinarySensor {
                on: on.into(),
                off: off.into(),
            },
            None => Component::Sensor,
        },
        _ => Component::Sensor,
    };
    Some(Entity {
        device_class: device_class(&levels, &component),
        value_template: format!("{{{{ {} }}}}", jinja::member(DATA, item)),
        component,
    })
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

/// The on/off pair `value` belongs to, in its spelling (`ON` → `ON`/`OFF`, `Yes` → `Yes`/`No`).
fn pair(value: &str) -> Option<(String, String)> {
    let lower = value.to_ascii_lowercase();
    let &(on, off) = PAIRS
        .iter()
        .find(|(on, off)| lower == *on || lower == *off)?;
    let spell = |w: &str| {
        if value == value.to_ascii_uppercase() {
            w.to_ascii_uppercase()
        } else if value == lower {
            w.to_string()
        } else {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
    };
    Some((spell(on), spell(off)))
}

/// Topic levels without namespace prefixes: `tns1:Device/tnsaxis:IO/Port` → `Device`, `IO`, `Port`.
pub fn topic_levels(topic: &str) -> Vec<&str> {
    topic.split('/').map(|s| split_segment(s).1).collect()
}

/// The event type of a stateless topic: its last level in lower case, `[a-z0-9_-]` only.
fn event_type(levels: &[&str]) -> String {
    super::id_safe(levels.last().copied().unwrap_or("event")).to_ascii_lowercase()
}

/// Topic levels (consecutive, anywhere in the topic) → device class. First match wins.
const CLASSES: &[(&str, &str)] = &[
    ("Tampering", "tamper"),
    ("Storage/Alert", "problem"),
    ("Storage/Disruption", "problem"),
    ("HardwareFailure", "problem"),
    ("Light/Status", "light"),
    ("Heater/Status", "heat"),
    ("TriggerLevel", "sound"),
    ("PIR", "motion"),
    ("MotionAlarm", "motion"),
    ("MotionRegionDetector", "motion"),
    ("VMD", "motion"),
    ("VMD4", "motion"),
    ("ObjectAnalytics", "motion"),
    ("FenceGuard", "motion"),
    ("MotionGuard", "motion"),
    ("LoiteringGuard", "motion"),
];

/// Device classes Home Assistant documents for `event` entities.
const EVENT_CLASSES: &[&str] = &["button", "doorbell", "motion"];

/// The device class the topic says, if the component accepts it (sensors get none: their
/// classes are units of measurement cameras' events do not carry).
pub fn device_class(levels: &[&str], component: &Component) -> Option<&'static str> {
    let class = CLASSES.iter().find_map(|(pattern, class)| {
        let want: Vec<&str> = pattern.split('/').collect();
        levels
            .windows(want.len())
            .any(|w| w == want.as_slice())
            .then_some(*class)
    })?;
    match component {
        Component::BinarySensor { .. } => Some(class),
        Component::Event { .. } => EVENT_CLASSES.contains(&class).then_some(class),
        Component::Sensor => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{ItemTypes, Items};

    fn event(topic: &str, stateful: bool, item: &str, value: &str, ty: ValueType) -> Event {
        let mut ev = Event::new("lobby".into(), "S".into(), topic.into(), 0);
        ev.stateful = stateful;
        ev.state_item = Some(item.into());
        ev.data = Items::from([(item.to_string(), value.to_string())]);
        ev.item_types = Some(Arc::new(ItemTypes {
            data: [(item.to_string(), ty)].into(),
            ..Default::default()
        }));
        ev
    }

    fn entity(ev: &Event) -> Entity {
        describe(ev, ev.payload(false).as_bytes()).unwrap()
    }

    #[test]
    fn the_state_value_and_its_declared_type_choose_the_component() {
        use ValueType::*;
        let bin = |on: &str, off: &str| Component::BinarySensor {
            on: on.into(),
            off: off.into(),
        };
        for (value, ty, want) in [
            ("1", Boolean, bin("1", "0")),
            ("0", Boolean, bin("1", "0")),
            ("false", Boolean, bin("true", "false")),
            ("ON", String, bin("ON", "OFF")),
            ("off", String, bin("on", "off")),
            ("Yes", String, bin("Yes", "No")),
            ("NO", Other, bin("YES", "NO")),
            ("DIMMED", String, Component::Sensor),
            ("1", Integer, Component::Sensor),
            ("21.5", Decimal, Component::Sensor),
            ("", Boolean, Component::Sensor),
        ] {
            let ev = event("tnsaxis:Some/Thing", true, "state", value, ty);
            assert_eq!(entity(&ev).component, want, "{value:?} {ty:?}");
        }
    }

    #[test]
    fn typed_payloads_announce_json_booleans() {
        let ev = event("tnsaxis:Some/Thing", true, "state", "1", ValueType::Boolean);
        let typed = crate::rules::typed::payload(&ev, false);
        assert_eq!(
            describe(&ev, typed.as_bytes()).unwrap().component,
            Component::BinarySensor {
                on: Value::Bool(true),
                off: Value::Bool(false)
            }
        );
    }

    #[test]
    fn stateless_events_are_event_entities_named_after_their_topic() {
        let ev = event(
            "tns1:VideoSource/tnsaxis:Tampering",
            false,
            "tampering",
            "1",
            ValueType::Integer,
        );
        let e = entity(&ev);
        assert_eq!(
            e.component,
            Component::Event {
                event_type: "tampering".into()
            }
        );
        assert_eq!(e.value_template, r#"{"event_type":"tampering"}"#);
        assert_eq!(e.device_class, None, "tamper is no event device class");
        let mut motion = ev.clone();
        motion.topic = "tnsaxis:CameraApplicationPlatform/ObjectAnalytics/Device1Scenario1".into();
        let e = entity(&motion);
        assert_eq!(e.device_class, Some("motion"));
        assert_eq!(
            e.component,
            Component::Event {
                event_type: "device1scenario1".into()
            }
        );
    }

    #[test]
    fn device_class_follows_the_topic() {
        let bin = Component::BinarySensor {
            on: "1".into(),
            off: "0".into(),
        };
        for (topic, want) in [
            ("tns1:VideoSource/tnsaxis:Tampering", Some("tamper")),
            ("tnsaxis:Storage/Alert", Some("problem")),
            ("tnsaxis:Storage/Disruption", Some("problem")),
            ("tns1:Device/tnsaxis:Light/Status", Some("light")),
            ("tns1:Device/tnsaxis:Sensor/PIR", Some("motion")),
            (
                "tns1:RuleEngine/MotionRegionDetector/Motion",
                Some("motion"),
            ),
            ("tns1:VideoSource/MotionAlarm", Some("motion")),
            (
                "tnsaxis:CameraApplicationPlatform/FenceGuard/Camera1Profile2",
                Some("motion"),
            ),
            ("tns1:Device/tnsaxis:IO/VirtualInput", None),
            ("tnsaxis:Storage/AlertX", None),
        ] {
            assert_eq!(device_class(&topic_levels(topic), &bin), want, "{topic}");
        }
        let levels = topic_levels("tnsaxis:Storage/Alert");
        assert_eq!(device_class(&levels, &Component::Sensor), None);
    }

    #[test]
    fn nothing_is_announced_without_a_readable_state() {
        let ev = event("t", true, "state", "1", ValueType::Boolean);
        assert_eq!(describe(&ev, b"{\"on\":1}"), None, "payload template");
        assert_eq!(describe(&ev, b""), None, "cleared retained state");
        let mut no_item = ev.clone();
        no_item.state_item = None;
        no_item.data.insert("other".into(), "x".into());
        assert_eq!(describe(&no_item, no_item.payload(false).as_bytes()), None);
    }
}
