//! End to end through real peers: emulated camera (in process) → edgerelay binary → Mosquitto
//! → subscriber, for conditions, templates, only_changes across a restart, max_rate, a local
//! MQTT source and commands back to the camera.

mod common;

use std::time::Duration;

use common::{Mosquitto, RelayProcess, Subscriber};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig, Notification};

const T: Duration = Duration::from_secs(20);
const VI: &str = "tns1:Device/tnsaxis:IO/VirtualInput";

fn camera(emu: &Emulator) -> String {
    format!(
        "[[camera]]\nname = \"lobby\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\nmax_backoff = \"1s\"\n",
        emu.base_url()
    )
}

fn relay_config(cameras: &str, broker: &Mosquitto, rules: &str) -> String {
    format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{cameras}\n[destination.broker]\nkind = \"mqtt\"\navailability_topic = \"\"\nurl = \"{}\"\nclient_id = \"relay-under-test\"\n\n{rules}",
        broker.url()
    )
}

fn vi(port: &str, data: &[(&str, &str)]) -> Notification {
    Notification {
        topic: VI.into(),
        timestamp: Some(1_750_148_043_512),
        source: vec![("port".into(), port.into())],
        key: vec![],
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn tampering() -> Notification {
    Notification {
        topic: "tns1:VideoSource/tnsaxis:Tampering".into(),
        timestamp: Some(1_750_148_043_512),
        source: vec![("channel".into(), "1".into())],
        key: vec![],
        data: vec![("tampering".into(), "1".into())],
    }
}

async fn start_camera() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

/// Waits until the relay log holds `what` (a state the relay reports, not a guess of time).
async fn wait_for_log(relay: &RelayProcess, what: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while !relay.log().contains(what) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never logged {what:?}:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (topic, payload) of the next message that is not the relay's own status.
async fn next(sub: &mut Subscriber) -> (String, String) {
    let m = sub.next_event(T).await;
    (m.topic, m.payload)
}

#[tokio::test]
async fn a_jsonpath_condition_selects_only_active_inputs() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "vi/#").await;
    let rules = r#"
[[rule]]
name = "active-only"
topic = "tns1:Device/tnsaxis:IO//."
when = "$.message[?(@.active == '1')]"
to = ["broker"]
mqtt_topic = "vi/{source.port}"
payload = "{data.active}"
"#;
    let _relay = RelayProcess::start(&relay_config(&camera(&emu), &broker, rules));
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    emu.emit(&vi("7", &[("active", "1")]));
    emu.emit(&vi("7", &[("active", "0")]));
    emu.emit(&vi("8", &[("active", "1")]));
    // One outbox, one connection: deliveries keep their order, so an inactive event that got
    // through would arrive between these two.
    assert_eq!(next(&mut sub).await, ("vi/7".into(), "1".into()));
    assert_eq!(next(&mut sub).await, ("vi/8".into(), "1".into()));
}

#[tokio::test]
async fn topic_and_payload_templates_render_every_placeholder() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "t/#").await;
    let rules = r#"
[[rule]]
name = "templated"
to = ["broker"]
mqtt_topic = "t/{camera}/{serial}/{topic}/{topic_raw}/{timestamp}/{iso_time}/{source.port}/{key.k}/{data.active}/{$.message.source.port}"
payload = '{{"camera":"{camera}","serial":"{serial}","topic":"{topic}","raw":"{topic_raw}","ts":{timestamp},"iso":"{iso_time}","port":"{source.port}","key":"{key.k}","active":{data.active},"data":{$.message.data},"first":"{$.message.source.port}","none":{$.nope}}}'
"#;
    let _relay = RelayProcess::start(&relay_config(&camera(&emu), &broker, rules));
    assert!(emu.wait_for_clients(1, T).await);
    emu.emit(&vi("7", &[("active", "1")]));
    let (topic, payload) = next(&mut sub).await;
    assert_eq!(
        topic,
        "t/lobby/B8A44F3E9D21/tns:onvif/Device/tns:axis/IO/VirtualInput/tns1:Device%2Ftnsaxis:IO%2FVirtualInput/1750148043512/2025-06-17T08:14:03.512Z/7//1/7"
    );
    assert_eq!(
        payload,
        r#"{"camera":"lobby","serial":"B8A44F3E9D21","topic":"tns:onvif/Device/tns:axis/IO/VirtualInput","raw":"tns1:Device/tnsaxis:IO/VirtualInput","ts":1750148043512,"iso":"2025-06-17T08:14:03.512Z","port":"7","key":"","active":"1","data":{"active":"1"},"first":"7","none":null}"#
    );
}

#[tokio::test]
async fn only_changes_remembers_the_last_state_across_a_relay_restart() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "oc/#").await;
    let rules = r#"
[[rule]]
name = "changes"
topic = "tns1:Device/tnsaxis:IO/VirtualInput"
only_changes = true
to = ["broker"]
mqtt_topic = "oc/{source.port}"
payload = "{data.active}"
"#;
    let mut relay = RelayProcess::start(&relay_config(&camera(&emu), &broker, rules));
    assert!(emu.wait_for_clients(1, T).await);
    assert!(emu.set_virtual_input(7, true));
    assert_eq!(next(&mut sub).await, ("oc/7".into(), "1".into()));
    // The state is saved after the outbox write; wait for it, then crash.
    let state = relay.dir.path().join("data").join("rules-state.json");
    let deadline = tokio::time::Instant::now() + T;
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("active")) {
        assert!(tokio::time::Instant::now() < deadline, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill9();
    // What the killed relay had not yet seen acknowledged is sent again (at-least-once): that
    // resend is not a repeat the rule lets through, so count it.
    let outbox = relay.dir.path().join("data/outbox/broker");
    let resends = {
        let (mut o, _) = edgerelay::outbox::Outbox::open(&outbox, Default::default()).unwrap();
        o.read(0, usize::MAX).unwrap().len()
    };
    relay.spawn();
    for _ in 0..resends {
        assert_eq!(
            next(&mut sub).await,
            ("oc/7".into(), "1".into()),
            "the resend"
        );
    }
    // On connect the camera reports the input's current state (active=1) again: a repeat.
    let deadline = tokio::time::Instant::now() + T;
    while emu.counters().configures_ok < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{}", relay.log());
        emu.wait_for_clients(1, Duration::from_millis(100)).await;
    }
    assert!(emu.set_virtual_input(7, false));
    assert_eq!(
        next(&mut sub).await,
        ("oc/7".into(), "0".into()),
        "the initial state after the restart is a repeat and must be dropped"
    );
}

#[tokio::test]
async fn max_rate_delivers_exact_counts_under_a_burst() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "rate/#").await;
    let rules = r#"
[[rule]]
name = "first"
topic = "tns1:Device/tnsaxis:IO/VirtualInput"
max_rate = "10/min"
to = ["broker"]
mqtt_topic = "rate/first"
payload = "{data.n}"

[[rule]]
name = "latest"
topic = "tns1:Device/tnsaxis:IO/VirtualInput"
max_rate = "5/s"
max_rate_keep = "latest"
to = ["broker"]
mqtt_topic = "rate/latest"
payload = "{data.n}"

[[rule]]
name = "marker"
topic = "tns1:VideoSource/tnsaxis:Tampering"
to = ["broker"]
mqtt_topic = "rate/marker"
payload = "marker"
"#;
    let _relay = RelayProcess::start(&relay_config(&camera(&emu), &broker, rules));
    assert!(emu.wait_for_clients(1, T).await);
    for n in 0..100 {
        emu.emit(&vi("7", &[("active", "1"), ("n", &n.to_string())]));
    }
    emu.emit(&tampering());
    let (mut first, mut latest) = (Vec::new(), Vec::new());
    loop {
        match next(&mut sub).await {
            (t, _) if t == "rate/marker" => break,
            (t, p) if t == "rate/first" => first.push(p),
            (_, p) => latest.push(p),
        }
    }
    let numbers = |r: std::ops::Range<u32>| r.map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(first, numbers(0..10), "keep = first: the first 10 of 100");
    assert_eq!(latest, numbers(0..5), "keep = latest: the first 5 at once");
    // The last of the burst follows when the window ends; nothing else does.
    assert_eq!(next(&mut sub).await, ("rate/latest".into(), "99".into()));
    emu.emit(&tampering());
    assert_eq!(
        next(&mut sub).await,
        ("rate/marker".into(), "marker".into())
    );
}

#[tokio::test]
async fn a_local_sensor_message_goes_through_the_rules_to_the_destination() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "site/#").await;
    let config = format!(
        r#"
[relay]
data_dir = "{{data_dir}}"

[[mqtt_source]]
name = "garden"
url = "{url}"
topics = ["sensors/#"]

[destination.broker]
kind = "mqtt"
availability_topic = ""
url = "{url}"
client_id = "relay-under-test"

[[rule]]
name = "sensors"
cameras = ["garden"]
topic = "sensors//."
when = "$.message.data.temperature"
to = ["broker"]
mqtt_topic = "site/{{camera}}/{{topic}}"
payload = "temp={{data.temperature}} unit={{data.unit}} from={{serial}}"
"#,
        url = broker.url()
    );
    let relay = RelayProcess::start(&config);
    wait_for_log(&relay, "mqtt source subscribed").await;
    common::publish_once(broker.port, "sensors/garden/door", "open").await;
    common::publish_once(
        broker.port,
        "sensors/garden/temp",
        r#"{"temperature":21.5,"unit":"C"}"#,
    )
    .await;
    // The door message has no temperature: the condition drops it; the reading comes through.
    assert_eq!(
        next(&mut sub).await,
        (
            "site/garden/sensors/garden/temp".into(),
            "temp=21.5 unit=C from=garden".into()
        )
    );
}

#[tokio::test]
async fn a_command_message_toggles_the_cameras_virtual_input_and_is_answered() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let rules = r#"
[[rule]]
name = "io"
topic = "tns1:Device/tnsaxis:IO/VirtualInput"
to = ["broker"]
mqtt_topic = "io/{source.port}"
payload = "{data.active}"

[[command]]
destination = "broker"
topic = "cmd/lobby/virtual_input"
camera = "lobby"
action = "virtual_input"
reply_topic = "cmd/lobby/reply"
"#;
    let relay = RelayProcess::start(&relay_config(&camera(&emu), &broker, rules));
    assert!(emu.wait_for_clients(1, T).await);
    wait_for_log(&relay, "listening for commands").await;

    let mut command = async |payload: &str| {
        common::publish_once(broker.port, "cmd/lobby/virtual_input", payload).await;
        let mut got = Vec::new();
        while got.len() < 2 {
            let m = next(&mut sub).await;
            if m.0 != "cmd/lobby/virtual_input" {
                got.push(m);
            }
            if got.iter().any(|(_, p)| p.contains("\"ok\":false")) {
                break;
            }
        }
        got.sort();
        got
    };
    assert_eq!(
        command(r#"{"port":7,"active":true}"#).await,
        [
            (
                "cmd/lobby/reply".into(),
                r#"{"ok":true,"changed":true}"#.into()
            ),
            ("io/7".into(), "1".into()),
        ]
    );
    assert_eq!(
        command(r#"{"port":7,"active":false}"#).await,
        [
            (
                "cmd/lobby/reply".into(),
                r#"{"ok":true,"changed":true}"#.into()
            ),
            ("io/7".into(), "0".into()),
        ]
    );
    assert_eq!(
        command(r#"{"port":7}"#).await,
        [(
            "cmd/lobby/reply".into(),
            r#"{"ok":false,"error":"missing \"active\""}"#.into()
        )]
    );
}

#[tokio::test]
async fn home_assistant_discovery_announces_each_instance_once() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut ha = Subscriber::connect(broker.port, "homeassistant/#").await;
    let mut events = Subscriber::connect(broker.port, "axis/+/event/tns:onvif/#").await;
    let config = relay_config(
        &camera(&emu),
        &broker,
        "[[rule]]\nname = \"all\"\nto = [\"broker\"]\nretain = \"property\"\n",
    )
    .replace(
        "client_id = \"relay-under-test\"\n",
        "client_id = \"relay-under-test\"\nhome_assistant = true\n",
    );
    let relay = RelayProcess::start(&config);
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());

    emu.emit(&vi("3", &[("active", "1")]));
    let c = ha.next(T).await;
    assert_eq!(
        c.topic,
        "homeassistant/binary_sensor/edgerelay_B8A44F3E9D21/Device_IO_VirtualInput_port_3/config"
    );
    let v: serde_json::Value = serde_json::from_str(&c.payload).unwrap();
    let (state_topic, state) = next(&mut events).await;
    assert_eq!(
        v["state_topic"],
        state_topic.as_str(),
        "points at the real topic"
    );
    assert_eq!(v["value_template"], "{{ value_json.message.data.active }}");
    assert_eq!(
        (v["payload_on"].as_str(), v["payload_off"].as_str()),
        (Some("1"), Some("0"))
    );
    assert_eq!(v["device"]["name"], "lobby");
    assert!(state.contains(r#""data":{"active":"1"}"#), "{state}");

    // Same instance again: nothing; a stateless event: an event entity; a new instance: its
    // own sensor.
    emu.emit(&vi("3", &[("active", "0")]));
    emu.emit(&tampering());
    emu.emit(&vi("4", &[("active", "1")]));
    for _ in 0..3 {
        next(&mut events).await;
    }
    let c = ha.next(T).await;
    assert!(
        c.topic.starts_with("homeassistant/event/") && c.topic.contains("Tampering"),
        "{}",
        c.topic
    );
    let c = ha.next(T).await;
    assert!(c.topic.contains("VirtualInput_port_4"), "{}", c.topic);
    ha.expect_nothing(Duration::from_millis(300)).await;

    // Retained: Home Assistant starting later still finds all three.
    let mut late = Subscriber::connect(broker.port, "homeassistant/#").await;
    let mut topics = Vec::new();
    for _ in 0..3 {
        let m = late.next(T).await;
        assert!(m.retain, "{}", m.topic);
        topics.push(m.topic);
    }
    topics.sort();
    assert!(
        topics[0].contains("port_3")
            && topics[1].contains("port_4")
            && topics[2].contains("Tampering"),
        "{topics:?}"
    );
}

/// The relay settings `tests/fixtures/home-assistant/` was written for (the unit test in
/// `src/rules/discovery/tests.rs` uses the same).
const HA_DESTINATION: &str = "client_id = \"relay-under-test\"\nhome_assistant = true\nlast_will = { topic = \"edgerelay/relay-under-test/status\", message = \"offline\", retain = true }\nconnect_message = { topic = \"edgerelay/relay-under-test/status\", message = \"online\", retain = true }\n";

/// A hostile catalog item name: it tries to end the template expression and add its own.
const HOSTILE_ITEM: &str = "x']}}{{ 7*7 }}";

fn notification(topic: &str, source: &[(&str, &str)], data: &[(&str, &str)]) -> Notification {
    let items = |l: &[(&str, &str)]| {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Notification {
        topic: topic.into(),
        timestamp: Some(1_750_148_043_512),
        source: items(source),
        key: vec![],
        data: items(data),
    }
}

/// One event per topic of the fixture catalog and of the two applications installed in
/// [`home_assistant_discovery_fits_what_the_camera_sends`], as in the unit test.
fn fixture_catalog_events() -> Vec<Notification> {
    vec![
        notification(VI, &[("port", "3")], &[("active", "1")]),
        notification(
            "tns1:Device/tnsaxis:Sensor/PIR",
            &[("sensor", "0")],
            &[("state", "1")],
        ),
        notification(
            "tns1:Device/tnsaxis:Light/Status",
            &[("id", "0")],
            &[("state", "ON")],
        ),
        tampering(),
        notification(
            "tns1:RuleEngine/MotionRegionDetector/Motion",
            &[("RuleName", "Gate"), ("VideoSource", "1")],
            &[("State", "1")],
        ),
        notification(
            "tnsaxis:CameraApplicationPlatform/FenceGuard/Camera1Profile2",
            &[],
            &[("active", "1")],
        ),
        notification(
            "tnsaxis:Storage/Alert",
            &[("disk_id", "SD_DISK")],
            &[
                ("temperature", "41"),
                ("alert", "0"),
                ("wear", "12"),
                ("overall_health", "98"),
            ],
        ),
        notification(
            "tnsaxis:CameraApplicationPlatform/PeopleCounter",
            &[],
            &[("count", "3")],
        ),
        notification(
            "tnsaxis:CameraApplicationPlatform/Hostile",
            &[],
            &[(HOSTILE_ITEM, "1")],
        ),
    ]
}

/// What Home Assistant's `value_template` yields for `payload`, for the two forms discovery
/// writes: `{{ value_json.message.data.NAME }}` and `{{ value_json.message.data['ESCAPED'] }}`
/// (Jinja `\xNN`/`\uNNNN`/`\UNNNNNNNN` escapes). Anything else fails the test.
fn render_value_template(template: &str, payload: &str) -> String {
    let expr = template
        .strip_prefix("{{ value_json.message.data")
        .and_then(|t| t.strip_suffix(" }}"))
        .unwrap_or_else(|| panic!("unexpected template {template:?}"));
    let name = if let Some(plain) = expr.strip_prefix('.') {
        assert!(
            plain.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{plain}"
        );
        plain.to_string()
    } else {
        let lit = expr
            .strip_prefix("['")
            .and_then(|t| t.strip_suffix("']"))
            .unwrap_or_else(|| panic!("unexpected template {template:?}"));
        let mut out = String::new();
        let mut it = lit.chars();
        while let Some(c) = it.next() {
            assert!(
                c != '\'' && c != '{' && c != '}',
                "unescaped {c:?} in {lit:?}"
            );
            if c != '\\' {
                out.push(c);
                continue;
            }
            let width = match it.next() {
                Some('x') => 2,
                Some('u') => 4,
                Some('U') => 8,
                other => panic!("escape {other:?} in {lit:?}"),
            };
            let hex: String = it.by_ref().take(width).collect();
            out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
        }
        out
    };
    let v: serde_json::Value = serde_json::from_str(payload).unwrap();
    match &v["message"]["data"][&name] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A fixture of `tests/fixtures/home-assistant/` with the crate version filled in.
fn ha_fixture(component: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/home-assistant/{component}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str(&text.replace("@VERSION@", env!("CARGO_PKG_VERSION"))).unwrap()
}

#[tokio::test]
async fn home_assistant_discovery_fits_what_the_camera_sends() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    emu.install_typed_app("PeopleCounter", "count", "xsd:int");
    emu.install_typed_app("Hostile", HOSTILE_ITEM, "xsd:boolean");
    let mut ha = Subscriber::connect(broker.port, "homeassistant/#").await;
    let mut events = Subscriber::connect(broker.port, "axis/+/event/tns:onvif/#").await;
    let mut apps = Subscriber::connect(broker.port, "axis/+/event/tns:axis/#").await;
    let config = relay_config(
        &camera(&emu),
        &broker,
        "[[rule]]\nname = \"all\"\nto = [\"broker\"]\nretain = \"property\"\n",
    )
    // Discovery points at the camera's availability too: keep it on here.
    .replace("availability_topic = \"\"\n", "")
    .replace("client_id = \"relay-under-test\"\n", HA_DESTINATION);
    let relay = RelayProcess::start(&config);
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());

    let sent = fixture_catalog_events();
    for n in &sent {
        emu.emit(n);
    }
    let mut state: std::collections::HashMap<String, String> = Default::default();
    for _ in 0..sent.len() {
        let m = tokio::select! {
            m = events.next_event(T) => m,
            m = apps.next_event(T) => m,
        };
        state.insert(m.topic, m.payload);
    }
    let mut got: std::collections::BTreeMap<&str, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for _ in 0..sent.len() {
        let c = ha.next(T).await;
        let component = c.topic.split('/').nth(1).unwrap().to_string();
        let component = ["binary_sensor", "sensor", "event"]
            .into_iter()
            .find(|k| *k == component)
            .unwrap_or_else(|| panic!("{}", c.topic));
        got.entry(component)
            .or_default()
            .insert(c.topic, serde_json::from_str(&c.payload).unwrap());
    }
    ha.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(got.len(), 3, "{:?}", got.keys());
    for (component, configs) in &got {
        assert_eq!(
            serde_json::Value::Object(configs.clone()),
            ha_fixture(component),
            "{component}: exactly the fixture's configs"
        );
    }

    // The light's state message turns its entity on: what its template reads is payload_on.
    let light = &got["binary_sensor"]["homeassistant/binary_sensor/edgerelay_B8A44F3E9D21/Device_Light_Status_id_0/config"];
    let topic = light["state_topic"].as_str().unwrap();
    let payload = state
        .get(topic)
        .unwrap_or_else(|| panic!("no state on {topic}: {state:?}"));
    let template = light["value_template"].as_str().unwrap();
    assert_eq!(render_value_template(template, payload), "ON");
    assert_eq!(light["payload_on"], "ON");
    assert_eq!(light["payload_off"], "OFF");
    assert_eq!(light["device"]["model"], "Q1809-LE");
    assert_eq!(light["device"]["sw_version"], "12.3.56");

    // The hostile name is in the template only as an escaped literal, and still reads its value.
    let hostile = &got["binary_sensor"]["homeassistant/binary_sensor/edgerelay_B8A44F3E9D21/CameraApplicationPlatform_Hostile/config"];
    let template = hostile["value_template"].as_str().unwrap();
    assert!(!template.contains(HOSTILE_ITEM), "{template}");
    assert_eq!(
        (
            template.matches("{{").count(),
            template.matches("}}").count()
        ),
        (1, 1)
    );
    let payload = &state[hostile["state_topic"].as_str().unwrap()];
    assert!(payload.contains(r#""x']}}{{ 7*7 }}":"1""#), "{payload}");
    assert_eq!(render_value_template(template, payload), "1");
    assert_eq!(hostile["payload_on"], "1");
}

#[tokio::test]
async fn typed_values_turns_catalog_typed_items_into_json_booleans_and_numbers() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut typed = Subscriber::connect(broker.port, "typed/#").await;
    let mut plain = Subscriber::connect(broker.port, "plain/#").await;
    let rules = "[[rule]]\nname = \"typed\"\nto = [\"broker\"]\nprefix = \"typed\"\ntyped_values = true\n[[rule]]\nname = \"plain\"\nto = [\"broker\"]\nprefix = \"plain\"\n";
    let relay = RelayProcess::start(&relay_config(&camera(&emu), &broker, rules));
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());

    emu.emit(&notification(
        "tnsaxis:Storage/Alert",
        &[("disk_id", "SD_DISK")],
        &[
            ("temperature", "41"),
            ("alert", "1"),
            ("wear", "n/a"),
            ("overall_health", "-3"),
        ],
    ));
    emu.emit(&vi("7", &[("active", "0")]));
    let (_, alert) = next(&mut typed).await;
    assert_eq!(
        alert,
        r#"{"topic":"axis:Storage/Alert","timestamp":1750148043512,"message":{"source":{"disk_id":"SD_DISK"},"key":{},"data":{"temperature":41,"alert":true,"wear":"n/a","overall_health":-3}}}"#
    );
    let (_, port) = next(&mut typed).await;
    assert!(
        port.ends_with(r#""message":{"source":{"port":7},"key":{},"data":{"active":false}}}"#),
        "{port}"
    );
    // The default stays the camera's text.
    let (_, alert) = next(&mut plain).await;
    assert!(
        alert.contains(
            r#""data":{"temperature":"41","alert":"1","wear":"n/a","overall_health":"-3"}"#
        ),
        "{alert}"
    );
}
