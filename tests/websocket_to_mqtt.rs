//! End to end: emulated camera (real WebSocket + Digest) → edgerelay binary → Mosquitto →
//! subscriber, asserting exact topics and payloads.

mod common;

use std::time::Duration;

use common::{Mosquitto, RelayProcess, Subscriber};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig, EmulatorTls, Fault, Notification};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

fn expected() -> Vec<Value> {
    include_str!("fixtures/expected-mqtt.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn camera(name: &str, emu: &Emulator) -> String {
    format!(
        "[[camera]]\nname = \"{name}\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\nmax_backoff = \"2s\"\n",
        emu.base_url()
    )
}

fn relay_config(cameras: &str, broker: &Mosquitto, rules: &str) -> String {
    format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{cameras}\n[destination.broker]\nkind = \"mqtt\"\navailability_topic = \"\"\nurl = \"{}\"\nclient_id = \"relay-under-test\"\n\n{rules}",
        broker.url()
    )
}

const ALL_RULE: &str =
    "[[rule]]\nname = \"all\"\nto = [\"broker\"]\ninclude_serial = true\nretain = \"property\"\n";

async fn start_camera() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

fn payload_without_serial(p: &Value) -> String {
    let mut p = p.clone();
    p.as_object_mut().unwrap().shift_remove("serial");
    p.to_string()
}

#[tokio::test]
async fn every_fixture_event_arrives_with_the_exact_topic_and_payload() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let rules = r#"
[[rule]]
name = "full"
to = ["broker"]
include_serial = true
[[rule]]
name = "no-namespaces"
to = ["broker"]
prefix = "nons/{serial}"
include_namespaces = false
[[rule]]
name = "no-condition"
to = ["broker"]
prefix = "nocond/{serial}"
include_condition_name = false
[[rule]]
name = "no-serial-qos0"
to = ["broker"]
prefix = "q0/{serial}"
qos = 0
"#;
    let _relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, rules));
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    for line in 1..=9 {
        emu.emit_fixture_line(line);
    }
    // Order is asserted per rule stream: a broker may interleave QoS 0 and QoS 1 flows.
    let mut streams: std::collections::BTreeMap<String, Vec<common::Received>> = Default::default();
    for _ in 0..9 * 4 {
        let m = sub.next_event(T).await;
        streams
            .entry(m.topic.split('/').next().unwrap().to_string())
            .or_default()
            .push(m);
    }
    for (i, exp) in expected().iter().enumerate() {
        let payload = exp["payload"].to_string();
        let no_serial = payload_without_serial(&exp["payload"]);
        let m = &streams["axis"][i];
        assert_eq!(m.topic, exp["topic"].as_str().unwrap());
        assert_eq!(m.payload, payload, "byte for byte, key order included");
        assert_eq!(m.qos, 1);
        let m = &streams["nons"][i];
        let nons = exp["topic_no_namespaces"]
            .as_str()
            .unwrap()
            .replacen("axis/", "nons/", 1);
        assert_eq!(
            (m.topic.as_str(), m.payload.as_str()),
            (nons.as_str(), no_serial.as_str())
        );
        let m = &streams["nocond"][i];
        assert_eq!(
            (m.topic.as_str(), m.payload.as_str()),
            ("nocond/B8A44F3E9D21", no_serial.as_str())
        );
        let m = &streams["q0"][i];
        assert_eq!(
            m.topic,
            exp["topic"].as_str().unwrap().replacen("axis/", "q0/", 1)
        );
        assert_eq!(m.payload, no_serial);
        assert_eq!(m.qos, 0);
    }
}

#[tokio::test]
async fn late_subscriber_gets_retained_state_of_stateful_events_only() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut live = Subscriber::connect(broker.port, "axis/#").await;
    let _relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, ALL_RULE));
    assert!(emu.wait_for_clients(1, T).await);
    for line in 1..=9 {
        emu.emit_fixture_line(line);
    }
    for _ in 1..=9 {
        live.next_event(T).await;
    }
    // Everything is on the broker now. A newcomer gets the retained messages first, then our marker.
    let mut late = Subscriber::connect(broker.port, "#").await;
    common::publish_once(broker.port, "test/marker", "end").await;
    let mut retained = Vec::new();
    loop {
        let m = late.next(T).await;
        if m.topic == "test/marker" {
            break;
        }
        assert!(m.retain, "{m:?}");
        retained.push(m);
    }
    let exp = expected();
    // The last state of each stateful topic+source, never the stateless tampering event (line 4).
    let mut want: Vec<(String, String)> = Vec::new();
    for e in &exp {
        if e["retain_under_property"].as_bool().unwrap() {
            let t = e["topic"].as_str().unwrap().to_string();
            want.retain(|(topic, _)| *topic != t);
            want.push((t, e["payload"].to_string()));
        }
    }
    let mut got: Vec<(String, String)> =
        retained.into_iter().map(|m| (m.topic, m.payload)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(!got.iter().any(|(t, _)| t.contains("Tampering")));
}

fn vi(port: &str, active: &str) -> Notification {
    Notification {
        topic: "tns1:Device/tnsaxis:IO/VirtualInput".into(),
        timestamp: Some(1_750_148_043_512),
        source: vec![("port".into(), port.into())],
        key: vec![],
        data: vec![("active".into(), active.into())],
    }
}

#[tokio::test]
async fn stateful_event_initialized_on_connect_then_changed() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    emu.seed_state(&vi("3", "1"));
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let _relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, ALL_RULE));
    let m = sub.next_event(T).await;
    assert_eq!(
        m.topic,
        "axis/B8A44F3E9D21/event/tns:onvif/Device/tns:axis/IO/VirtualInput/$source/port/3"
    );
    assert!(
        m.payload.contains(r#""data":{"active":"1"}"#),
        "{}",
        m.payload
    );
    assert!(emu.set_virtual_input(3, false));
    let m = sub.next_event(T).await;
    assert!(m.topic.ends_with("/IO/VirtualInput/$source/port/3"));
    assert!(
        m.payload.contains(r#""data":{"active":"0"}"#),
        "{}",
        m.payload
    );
}

#[tokio::test]
async fn dropped_camera_connection_resumes_and_events_flow_again() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, ALL_RULE));
    assert!(emu.wait_for_clients(1, T).await);
    emu.emit_fixture_line(4);
    assert!(sub.next_event(T).await.topic.contains("Tampering"));
    emu.drop_connections();
    // A new configure proves the relay reconnected on its own.
    let deadline = tokio::time::Instant::now() + T;
    while emu.counters().configures_ok < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect:\n{}",
            relay.log()
        );
        emu.wait_for_clients(1, Duration::from_millis(200)).await;
    }
    // Dashboards learn that events may be missing: the relay's own connection event, with the gap.
    let m = sub.next_event(T).await;
    assert_eq!(
        m.topic,
        "axis/B8A44F3E9D21/event/EdgeRelay/CameraConnection/$source/camera/lobby"
    );
    let v: Value = serde_json::from_str(&m.payload).unwrap();
    let gap: i64 = v["message"]["data"]["gap_ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(gap > 0 && gap < 30_000, "{v}");
    emu.emit_fixture_line(2);
    assert!(sub.next_event(T).await.topic.contains("Sensor/PIR"));
}

#[tokio::test]
async fn a_silent_stream_is_reported_and_reconnected() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let cam = format!("{}heartbeat = \"300ms\"\n", camera("lobby", &emu));
    let relay = RelayProcess::start(&relay_config(&cam, &broker, ALL_RULE));
    assert!(emu.wait_for_clients(1, T).await);
    emu.emit_fixture_line(4);
    assert!(sub.next_event(T).await.topic.contains("Tampering"));
    // Longer than two heartbeats of quiet on a healthy stream: the pings keep it alive.
    sub.expect_nothing(Duration::from_millis(1_500)).await;
    assert_eq!(emu.counters().configures_ok, 1, "{}", relay.log());
    // The link hangs: TCP stays open, nothing comes back, not even pongs.
    emu.freeze_connections();
    relay.wait_for_log("stream silent for", T).await;
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    assert_eq!(emu.counters().configures_ok, 2);
    let m = sub.next_event(T).await;
    assert!(
        m.topic.contains("EdgeRelay/CameraConnection"),
        "{}",
        m.topic
    );
    emu.emit_fixture_line(2);
    assert!(sub.next_event(T).await.topic.contains("Sensor/PIR"));
}

#[tokio::test]
async fn an_application_installed_while_streaming_is_learned_from_a_catalog_re_read() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, ALL_RULE));
    assert!(emu.wait_for_clients(1, T).await);
    assert_eq!(emu.counters().catalog_reads, 1);
    emu.install_app("ObjectAnalytics", "active");
    let app = |active: &str| Notification {
        topic: "tnsaxis:CameraApplicationPlatform/ObjectAnalytics".into(),
        timestamp: Some(1_750_148_043_512),
        source: vec![],
        key: vec![],
        data: vec![("active".into(), active.into())],
    };
    // Unknown to the catalog read on connect: delivered as stateless, and the catalog re-read.
    emu.emit(&app("1"));
    assert!(sub.next_event(T).await.topic.contains("ObjectAnalytics"));
    relay.wait_for_log("event catalog re-read", T).await;
    assert_eq!(emu.counters().catalog_reads, 2);
    // Now a property: retained like every other state.
    emu.emit(&app("0"));
    assert!(sub.next_event(T).await.payload.contains(r#""active":"0""#));
    let mut late = Subscriber::connect(
        broker.port,
        "axis/+/event/tns:axis/CameraApplicationPlatform/#",
    )
    .await;
    let m = late.next(T).await;
    assert!(m.retain && m.payload.contains(r#""active":"0""#), "{m:?}");
}

#[tokio::test]
async fn two_cameras_at_once_with_their_own_serials() {
    let broker = Mosquitto::start().await;
    let a = start_camera().await;
    let b = Emulator::start(EmulatorConfig {
        serial: "ACCC8E012345".into(),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let cams = format!("{}\n{}", camera("lobby", &a), camera("yard", &b));
    let _relay = RelayProcess::start(&relay_config(&cams, &broker, ALL_RULE));
    assert!(a.wait_for_clients(1, T).await && b.wait_for_clients(1, T).await);
    a.emit_fixture_line(1);
    let m = sub.next_event(T).await;
    assert!(m.topic.starts_with("axis/B8A44F3E9D21/"), "{}", m.topic);
    b.emit_fixture_line(1);
    let m = sub.next_event(T).await;
    assert!(m.topic.starts_with("axis/ACCC8E012345/"), "{}", m.topic);
    assert!(m.payload.contains(r#""serial":"ACCC8E012345""#));
}

#[tokio::test]
async fn garbage_frames_are_skipped_and_counted_and_the_stream_goes_on() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    emu.set_fault(Some(Fault::SendGarbageThenContinue));
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, ALL_RULE));
    assert!(emu.wait_for_clients(1, T).await);
    emu.emit_fixture_line(2);
    assert!(sub.next_event(T).await.topic.contains("Sensor/PIR"));
    let log = relay.log();
    assert_eq!(log.matches("skipping malformed frame").count(), 1, "{log}");
    assert!(log.contains("lobby"));
    assert_eq!(
        emu.counters().configures_ok,
        1,
        "the relay must not reconnect over a bad frame"
    );
}

#[tokio::test]
async fn rejected_credentials_back_off_then_recover() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    emu.set_fault(Some(Fault::RejectCredentials));
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, ALL_RULE));
    let deadline = tokio::time::Instant::now() + T;
    while emu.counters().auth_failures == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        emu.wait_for_clients(1, Duration::from_millis(100)).await;
    }
    // Back-off, not a hot loop: a handful of attempts at most in the first second.
    emu.wait_for_clients(1, Duration::from_secs(1)).await;
    assert!(emu.counters().auth_failures <= 4, "{:?}", emu.counters());
    emu.set_fault(None);
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    emu.emit_fixture_line(1);
    assert!(sub.next_event(T).await.topic.contains("VirtualInput"));
    let log = relay.log();
    assert!(log.contains("authentication failed"), "{log}");
    assert_eq!(
        log.matches("camera connection lost").count(),
        1,
        "logged once per state change:\n{log}"
    );
}

#[tokio::test]
async fn camera_closing_during_configure_is_retried() {
    let broker = Mosquitto::start().await;
    let emu = start_camera().await;
    emu.set_fault(Some(Fault::CloseOnConfigure));
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&relay_config(&camera("lobby", &emu), &broker, ALL_RULE));
    let deadline = tokio::time::Instant::now() + T;
    while emu.counters().upgrades_ok < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{}", relay.log());
        emu.wait_for_clients(1, Duration::from_millis(100)).await;
    }
    emu.set_fault(None);
    assert!(emu.wait_for_clients(1, T).await);
    emu.emit_fixture_line(5);
    assert!(sub.next_event(T).await.topic.contains("Storage/Alert"));
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_the_broker_refuses_the_relay() {
    // The broker is up but does not know the relay's user yet: CONNACK "not authorized".
    let mut broker = Mosquitto::start_with_users(&[("watcher", "w-pass")]).await;
    let mut sub = Subscriber::connect_as(broker.port, "axis/#", Some(("watcher", "w-pass"))).await;
    let emu = start_camera().await;
    let cfg = relay_config(&camera("lobby", &emu), &broker, ALL_RULE).replace(
        "client_id = \"relay-under-test\"",
        "client_id = \"relay-under-test\"\nusername = \"relay\"\npassword = \"r-pass\"",
    );
    let relay = RelayProcess::start(&cfg);
    assert!(emu.wait_for_clients(1, T).await);
    for line in 1..=9 {
        emu.emit_fixture_line(line);
    }
    let deadline = tokio::time::Instant::now() + T;
    while !relay.log().contains("cannot connect to the broker") {
        assert!(tokio::time::Instant::now() < deadline, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.add_user("relay", "r-pass");
    let mut seen = Vec::new();
    while seen.len() < 9 {
        let m = sub.next_event(T).await;
        let v: Value = serde_json::from_str(&m.payload).unwrap();
        seen.push(v["timestamp"].as_i64().unwrap());
    }
    let want: Vec<i64> = expected()
        .iter()
        .map(|e| e["payload"]["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, want, "every event, in order\n{}", relay.log());
    assert_eq!(
        relay.log().matches("cannot connect to the broker").count(),
        1,
        "logged once, not per retry"
    );
}

#[tokio::test]
async fn https_camera_is_verified_against_its_ca_and_streams_over_wss() {
    let pki = common::pki::Pki::new();
    let broker = Mosquitto::start().await;
    let tls = Some(EmulatorTls {
        cert_pem: pki.read("server.pem"),
        key_pem: pki.read("server.key"),
    });
    let trusted = Emulator::start(EmulatorConfig {
        tls: tls.clone(),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let unknown_ca = Emulator::start(EmulatorConfig {
        tls,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    assert!(trusted.base_url().starts_with("https://"));
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    // "yard" has no ca_file: the system roots do not know the test CA, so it must refuse.
    let cams = format!(
        "{}ca_file = \"{}\"\n{}",
        camera("lobby", &trusted),
        pki.path("ca.pem"),
        camera("yard", &unknown_ca)
    );
    let relay = RelayProcess::start(&relay_config(&cams, &broker, ALL_RULE));
    assert!(trusted.wait_for_clients(1, T).await, "{}", relay.log());
    trusted.emit_fixture_line(2);
    let m = sub.next_event(T).await;
    assert!(m.topic.contains("Sensor/PIR"), "{m:?}");
    let deadline = tokio::time::Instant::now() + T;
    while !relay
        .log()
        .lines()
        .any(|l| l.contains("camera=yard") && l.contains("camera connection lost"))
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = relay
        .log()
        .lines()
        .find(|l| l.contains("camera=yard") && l.contains("connection lost"))
        .unwrap()
        .to_string();
    assert!(
        line.to_lowercase().contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );
    assert_eq!(
        unknown_ca.counters().upgrades_ok,
        0,
        "nothing is sent to a camera that failed verification"
    );
}
