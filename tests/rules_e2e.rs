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
        "[[camera]]\nname = \"lobby\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\nmax_backoff_s = 1\n",
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
async fn home_assistant_discovery_announces_each_stateful_instance_once() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut ha = Subscriber::connect(broker.port, "homeassistant/#").await;
    let mut events = Subscriber::connect(broker.port, "axis/#").await;
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

    // Same instance again, a stateless event, then a marker instance: one new config only.
    emu.emit(&vi("3", &[("active", "0")]));
    emu.emit(&tampering());
    emu.emit(&vi("4", &[("active", "1")]));
    for _ in 0..3 {
        next(&mut events).await;
    }
    let c = ha.next(T).await;
    assert!(c.topic.contains("VirtualInput_port_4"), "{}", c.topic);
    ha.expect_nothing(Duration::from_millis(300)).await;

    // Retained: Home Assistant starting later still finds both sensors.
    let mut late = Subscriber::connect(broker.port, "homeassistant/#").await;
    let (a, b) = (late.next(T).await, late.next(T).await);
    assert!(a.retain && b.retain);
    let mut topics = vec![a.topic, b.topic];
    topics.sort();
    assert!(
        topics[0].contains("port_3") && topics[1].contains("port_4"),
        "{topics:?}"
    );
}
