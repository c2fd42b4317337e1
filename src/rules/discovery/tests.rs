//! Discovery behaviours, and every config checked against the schema Home Assistant
//! documents for MQTT discovery (topic layout, keys per component, required keys, device
//! classes) and against the per-component fixtures in `tests/fixtures/home-assistant/`.

use serde_json::Map;

use super::*;
use crate::event::{DeviceInfo, Items};
use crate::rules::RuleSet;
use crate::sources::catalog::Catalog;

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
    let target = Target {
        prefix: "homeassistant".into(),
        ..Target::default()
    };
    Discovery {
        targets: HashMap::from([(Arc::from("ha"), target)]),
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
    assert_eq!(v.get("availability"), None, "no availability topic known");
    assert_eq!(v["device"].get("model"), None, "model unknown");
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
fn custom_payloads_are_not_announced_stateless_events_are_events() {
    let mut d = discovery();
    let mut stateless = vi("1", "1");
    stateless.stateful = false;
    let mut out = vec![routed("ha", &stateless, "t")];
    d.announce(&stateless, &mut out, 0);
    assert_eq!(out.len(), 2);
    assert!(out[0].delivery.topic.starts_with("homeassistant/event/"));

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

/// Keys Home Assistant documents for every MQTT entity used here (availability, device,
/// naming, templates) plus `origin` (discovery only).
const COMMON_KEYS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "default_entity_id",
    "origin",
    "payload_available",
    "payload_not_available",
    "platform",
    "qos",
    "state_topic",
    "unique_id",
    "value_template",
];

/// Keys, required keys and device classes per component (home-assistant.io/integrations/
/// binary_sensor.mqtt, sensor.mqtt, event.mqtt; binary_sensor and event device classes).
fn component_schema(
    component: &str,
) -> Option<(
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
)> {
    match component {
        "binary_sensor" => Some((
            &[
                "expire_after",
                "force_update",
                "off_delay",
                "payload_off",
                "payload_on",
            ],
            &["state_topic"],
            &[
                "battery",
                "battery_charging",
                "carbon_monoxide",
                "cold",
                "connectivity",
                "door",
                "garage_door",
                "gas",
                "heat",
                "light",
                "lock",
                "moisture",
                "motion",
                "moving",
                "occupancy",
                "opening",
                "plug",
                "power",
                "presence",
                "problem",
                "running",
                "safety",
                "smoke",
                "sound",
                "tamper",
                "update",
                "vibration",
                "window",
            ],
        )),
        "sensor" => Some((
            &[
                "expire_after",
                "force_update",
                "last_reset_value_template",
                "options",
                "state_class",
                "suggested_display_precision",
                "unit_of_measurement",
            ],
            &["state_topic"],
            &[],
        )),
        "event" => Some((
            &["event_types"],
            &["state_topic", "event_types"],
            &["button", "doorbell", "motion"],
        )),
        _ => None,
    }
}

const DEVICE_KEYS: &[&str] = &[
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
];
const AVAILABILITY_KEYS: &[&str] = &[
    "payload_available",
    "payload_not_available",
    "topic",
    "value_template",
];

fn id_level(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn only_keys(what: &str, o: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what}: undocumented key {k:?}")),
        None => Ok(()),
    }
}

/// Whether a discovery message follows Home Assistant's documented schema.
fn check_schema(topic: &str, config: &Value) -> Result<(), String> {
    let levels: Vec<&str> = topic.split('/').collect();
    let [_prefix, component, node, object, "config"] = levels[..] else {
        return Err(format!(
            "topic {topic:?} is not <prefix>/<component>/<node_id>/<object_id>/config"
        ));
    };
    if !id_level(node) || !id_level(object) {
        return Err(format!("topic {topic:?}: ids must be [A-Za-z0-9_-]+"));
    }
    let (extra, required, classes) =
        component_schema(component).ok_or(format!("unknown component {component}"))?;
    let o = config.as_object().ok_or("config is not an object")?;
    let allowed: Vec<&str> = COMMON_KEYS.iter().chain(extra).copied().collect();
    only_keys(component, o, &allowed)?;
    for k in required.iter().chain(&["unique_id", "device"]) {
        if !o.contains_key(*k) {
            return Err(format!("{component}: {k} is required"));
        }
    }
    if let Some(types) = o.get("event_types") {
        let types = types.as_array().ok_or("event_types is not a list")?;
        if types.is_empty() || !types.iter().all(Value::is_string) {
            return Err("event_types must be a non-empty list of strings".into());
        }
    }
    if let Some(class) = o.get("device_class")
        && !class.as_str().is_some_and(|c| classes.contains(&c))
    {
        return Err(format!(
            "{component}: device_class {class} is not documented"
        ));
    }
    let device = o["device"].as_object().ok_or("device is not an object")?;
    only_keys("device", device, DEVICE_KEYS)?;
    if device
        .get("identifiers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return Err("device needs identifiers".into());
    }
    if let Some(list) = o.get("availability") {
        for a in list.as_array().ok_or("availability is not a list")? {
            let a = a.as_object().ok_or("availability entry is not an object")?;
            only_keys("availability", a, AVAILABILITY_KEYS)?;
            if !a.get("topic").is_some_and(Value::is_string) {
                return Err("availability entry without topic".into());
            }
        }
        if o.get("availability_mode").and_then(Value::as_str) != Some("all") {
            return Err("availability_mode must be \"all\"".into());
        }
    }
    for k in ["value_template", "state_topic", "name", "unique_id"] {
        if !o[k].is_string() {
            return Err(format!("{k} must be a string"));
        }
    }
    Ok(())
}

#[test]
fn the_schema_check_refuses_what_home_assistant_would() {
    let good = json!({"state_topic": "t", "value_template": "x", "name": "n", "unique_id": "u",
        "event_types": ["a"], "device": {"identifiers": ["d"]}});
    check_schema("homeassistant/event/n/o/config", &good).unwrap();
    for (topic, change) in [
        ("homeassistant/event/n/o", json!({})),
        ("homeassistant/event/n o/o/config", json!({})),
        ("homeassistant/lamp/n/o/config", json!({})),
        ("homeassistant/event/n/o/config", json!({"event_types": []})),
        (
            "homeassistant/event/n/o/config",
            json!({"device_class": "tamper"}),
        ),
        ("homeassistant/event/n/o/config", json!({"payload_on": "1"})),
        (
            "homeassistant/event/n/o/config",
            json!({"device": {"name": "x"}}),
        ),
        (
            "homeassistant/event/n/o/config",
            json!({"availability": [{"t": "x"}], "availability_mode": "all"}),
        ),
    ] {
        let mut bad = good.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        assert!(check_schema(topic, &bad).is_err(), "{topic} {change}");
    }
}

/// The fixture catalog's topics (and two applications installed later: a numeric state and
/// a hostile item name), one event each, as the e2e test emits them.
fn fixture_events() -> Vec<Event> {
    let mut catalog_xml = include_str!("../../../tests/fixtures/event-instances.xml").to_string();
    catalog_xml = catalog_xml.replace(
        "</wstop:TopicSet>",
        concat!(
            r#"<tnsaxis:CameraApplicationPlatform><PeopleCounter wstop:topic="true"><aev:MessageInstance aev:isProperty="true"><aev:DataInstance><aev:SimpleItemInstance Type="xsd:int" Name="count" isPropertyState="true"/></aev:DataInstance></aev:MessageInstance></PeopleCounter></tnsaxis:CameraApplicationPlatform>"#,
            r#"<tnsaxis:CameraApplicationPlatform><Hostile wstop:topic="true"><aev:MessageInstance aev:isProperty="true"><aev:DataInstance><aev:SimpleItemInstance Type="xsd:boolean" Name="x&#39;]}}{{ 7*7 }}" isPropertyState="true"/></aev:DataInstance></aev:MessageInstance></Hostile></tnsaxis:CameraApplicationPlatform>"#,
            "</wstop:TopicSet>"
        ),
    );
    let catalog = Catalog::parse(&catalog_xml).unwrap();
    FIXTURE_EVENTS
        .iter()
        .map(|(topic, source, data)| {
            let info = catalog.get(topic).expect("listed");
            let mut ev = Event::new(
                "lobby".into(),
                "B8A44F3E9D21".into(),
                topic.to_string(),
                1_750_148_043_512,
            );
            ev.stateful = info.stateful;
            ev.state_item = info.state_item.clone();
            ev.item_types = Some(info.item_types.clone());
            ev.device = Some(Arc::new(DeviceInfo {
                model: Some("Q1809-LE".into()),
                firmware: Some("12.3.56".into()),
            }));
            let items = |l: &[(&str, &str)]| -> Items {
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            ev.source = items(source);
            ev.data = items(data);
            ev
        })
        .collect()
}

type Pairs = &'static [(&'static str, &'static str)];

/// Topic, source items, data items: the same list as `tests/rules_e2e.rs`.
const FIXTURE_EVENTS: &[(&str, Pairs, Pairs)] = &[
    (
        "tns1:Device/tnsaxis:IO/VirtualInput",
        &[("port", "3")],
        &[("active", "1")],
    ),
    (
        "tns1:Device/tnsaxis:Sensor/PIR",
        &[("sensor", "0")],
        &[("state", "1")],
    ),
    (
        "tns1:Device/tnsaxis:Light/Status",
        &[("id", "0")],
        &[("state", "ON")],
    ),
    (
        "tns1:VideoSource/tnsaxis:Tampering",
        &[("channel", "1")],
        &[("tampering", "1")],
    ),
    (
        "tns1:RuleEngine/MotionRegionDetector/Motion",
        &[("RuleName", "Gate"), ("VideoSource", "1")],
        &[("State", "1")],
    ),
    (
        "tnsaxis:CameraApplicationPlatform/FenceGuard/Camera1Profile2",
        &[],
        &[("active", "1")],
    ),
    (
        "tnsaxis:Storage/Alert",
        &[("disk_id", "SD_DISK")],
        &[
            ("temperature", "41"),
            ("alert", "0"),
            ("wear", "12"),
            ("overall_health", "98"),
        ],
    ),
    (
        "tnsaxis:CameraApplicationPlatform/PeopleCounter",
        &[],
        &[("count", "3")],
    ),
    (
        "tnsaxis:CameraApplicationPlatform/Hostile",
        &[],
        &[("x']}}{{ 7*7 }}", "1")],
    ),
];

/// The relay and destination settings the fixtures were written for (the e2e test uses the same).
const FIXTURE_CONFIG: &str = r#"
[destination.broker]
kind = "mqtt"
url = "mqtt://127.0.0.1"
home_assistant = true
last_will = { topic = "edgerelay/relay-under-test/status", message = "offline", retain = true }
connect_message = { topic = "edgerelay/relay-under-test/status", message = "online", retain = true }
[[rule]]
name = "all"
to = ["broker"]
retain = "property"
"#;

/// The configs per component for [`fixture_events`], as the fixture files hold them.
fn announced_by_component() -> HashMap<&'static str, Value> {
    let mut rs = RuleSet::compile(&toml::from_str(FIXTURE_CONFIG).unwrap()).unwrap();
    let mut by: HashMap<&str, Value> = HashMap::new();
    for ev in fixture_events() {
        let mut out = Vec::new();
        rs.route(&ev, 0, &mut out);
        for r in out.iter().filter(|r| r.delivery.topic.ends_with("/config")) {
            let v: Value = serde_json::from_slice(&r.delivery.payload).unwrap();
            check_schema(&r.delivery.topic, &v)
                .unwrap_or_else(|e| panic!("{}: {e}", r.delivery.topic));
            let component = ["binary_sensor", "sensor", "event"]
                .into_iter()
                .find(|c| r.delivery.topic.starts_with(&format!("homeassistant/{c}/")))
                .unwrap();
            by.entry(component).or_insert_with(|| json!({}))[&r.delivery.topic] = v;
        }
    }
    by
}

/// A fixture file with the crate version filled in.
fn fixture(component: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/home-assistant/{component}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text.replace("@VERSION@", env!("CARGO_PKG_VERSION"))).unwrap()
}

#[test]
fn the_fixture_catalog_announces_exactly_the_fixture_configs_per_component() {
    let got = announced_by_component();
    assert_eq!(got.len(), 3, "{:?}", got.keys());
    for component in ["binary_sensor", "sensor", "event"] {
        let want = fixture(component);
        for (topic, config) in want.as_object().unwrap() {
            check_schema(topic, config).unwrap_or_else(|e| panic!("fixture {topic}: {e}"));
        }
        assert_eq!(
            got[component],
            want,
            "{component}: got\n{}",
            serde_json::to_string_pretty(&got[component]).unwrap()
        );
    }
}

#[test]
fn a_hostile_item_name_reaches_value_template_only_escaped() {
    let events = fixture_events();
    let hostile = events.last().unwrap();
    let mut out = Vec::new();
    let mut rs = RuleSet::compile(&toml::from_str(FIXTURE_CONFIG).unwrap()).unwrap();
    rs.route(hostile, 0, &mut out);
    let v: Value = serde_json::from_slice(&out[0].delivery.payload).unwrap();
    let t = v["value_template"].as_str().unwrap();
    assert_eq!(
        t,
        r"{{ value_json.message.data['x\x27\x5d\x7d\x7d\x7b\x7b 7\x2a7 \x7d\x7d'] }}"
    );
    assert_eq!(t.matches("{{").count(), 1);
    assert_eq!(t.matches("}}").count(), 1);
}

#[test]
fn availability_needs_both_the_camera_and_the_relay() {
    let cfg: Config = toml::from_str(FIXTURE_CONFIG).unwrap();
    let DestinationConfig::Mqtt(m) = &cfg.destination["broker"] else {
        panic!("mqtt")
    };
    let mut ev = vi("1", "1");
    ev.camera = "gate/1".into();
    let mut t = Target::of(m);
    t.camera_availability = "site/{camera}/{serial}".into();
    assert_eq!(
        json!(t.availability(&ev)),
        json!([
            {"topic": "site/gate%2F1/B8A44F3E9D21", "value_template": CONNECTED_TEMPLATE,
             "payload_available": "online", "payload_not_available": "offline"},
            {"topic": "edgerelay/relay-under-test/status",
             "payload_available": "online", "payload_not_available": "offline"},
        ])
    );
    // A last will without a connect message on its topic never says "available": left out.
    let mut no_birth = m.clone();
    no_birth.connect_message = None;
    no_birth.availability_topic = String::new();
    assert!(Target::of(&no_birth).availability(&ev).is_empty());
}
