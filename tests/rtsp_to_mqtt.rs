//! End to end: emulated camera (real RTSP, Digest, interleaved RTP, ONVIF XML) → edgerelay
//! binary → Mosquitto → subscriber, asserting the exact output of every fixture document.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Mosquitto, RelayProcess, Subscriber};
use edgerelay::sources::emulator::rtsp::{RtspEmulator, RtspEmulatorConfig};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn config(emu: &RtspEmulator, broker: &Mosquitto) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
[[camera]]
name = "gate"
url = "http://127.0.0.1"
transport = "rtsp"
rtsp_port = {}
analytics = true
ptz = true
username = "bridge"
password = "fixture-pass"
max_backoff = "2s"
[destination.broker]
kind = "mqtt"
availability_topic = ""
url = "{}"
[[rule]]
name = "all"
to = ["broker"]
include_serial = true
retain = "property"
"#,
        emu.addr().port(),
        broker.url()
    )
}

#[tokio::test]
async fn every_metadata_document_gives_its_expected_messages_and_deleted_clears_retained_state() {
    let broker = Mosquitto::start().await;
    let emu = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker));
    assert!(emu.wait_for_sessions(1, T).await, "{}", relay.log());

    let expected: Vec<Value> = fixture("expected-mqtt-rtsp.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(expected.len(), 13);
    for exp in &expected {
        emu.send_document(&fixture(exp["fixture"].as_str().unwrap()));
    }
    for exp in &expected {
        for msg in exp["messages"].as_array().unwrap() {
            let m = sub.next(T).await;
            assert_eq!(
                m.topic,
                msg["topic"].as_str().unwrap(),
                "{}",
                exp["fixture"]
            );
            assert_eq!(
                m.payload,
                msg["payload"].to_string(),
                "{}: byte for byte",
                exp["fixture"]
            );
        }
    }
    // The same event over RTSP and over WebSocket gives the same message (file 02 = line 2).
    let ws_line2: Value =
        serde_json::from_str(fixture("expected-mqtt.jsonl").lines().nth(1).unwrap()).unwrap();
    let rtsp02 = expected
        .iter()
        .find(|e| e["fixture"].as_str().unwrap().contains("-02-"))
        .unwrap();
    assert_eq!(rtsp02["messages"][0]["payload"], ws_line2["payload"]);
    assert_eq!(rtsp02["messages"][0]["topic"], ws_line2["topic"]);

    // The PIR property disappears: its retained state must be cleared.
    let deleted = fixture("rtsp-metadata-02-pir-changed.xml").replace(
        "PropertyOperation=\"Changed\"",
        "PropertyOperation=\"Deleted\"",
    );
    assert!(deleted.contains("Deleted"));
    emu.send_document(&deleted);
    let m = sub.next(T).await;
    assert!(m.topic.ends_with("Sensor/PIR/$source/sensor/0"));
    assert_eq!(m.payload, "", "an empty message clears the retained state");

    let mut late = Subscriber::connect(broker.port, "#").await;
    common::publish_once(broker.port, "test/marker", "end").await;
    let mut retained = Vec::new();
    loop {
        let m = late.next(T).await;
        if m.topic == "test/marker" {
            break;
        }
        retained.push(m.topic);
    }
    let want: Vec<&str> = expected
        .iter()
        .flat_map(|e| e["messages"].as_array().unwrap())
        .filter(|m| m["retain_under_property"].as_bool().unwrap())
        .map(|m| m["topic"].as_str().unwrap())
        .filter(|t| !t.contains("Sensor/PIR"))
        .collect();
    retained.sort();
    let mut want: Vec<String> = want.into_iter().map(str::to_string).collect();
    want.sort();
    want.dedup();
    assert_eq!(
        retained, want,
        "stateful topics only; PIR cleared; no frames, PTZ or stateless events"
    );
}

#[tokio::test]
async fn rtsp_connection_dropped_mid_document_recovers() {
    let broker = Mosquitto::start().await;
    let emu = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker));
    assert!(emu.wait_for_sessions(1, T).await);
    emu.drop_mid_next_document();
    emu.send_document(&fixture("rtsp-metadata-01-pir-initialized.xml"));
    assert!(
        emu.wait_for_sessions(2, T).await,
        "reconnected\n{}",
        relay.log()
    );
    // The relay announces the gap in the camera's own format before anything else.
    let m = sub.next(T).await;
    assert_eq!(
        m.topic,
        "axis/B8A44F3E9D21/event/EdgeRelay/CameraConnection/$source/camera/gate"
    );
    assert!(m.payload.contains(r#""connected":"1""#), "{}", m.payload);
    emu.send_document(&fixture("rtsp-metadata-05-tampering-stateless.xml"));
    let m = sub.next(T).await;
    assert!(
        m.topic.contains("Tampering"),
        "only the cut document is lost: {m:?}"
    );
}

#[tokio::test]
async fn analytics_frames_without_objects_are_filtered_and_the_rest_summarised() {
    let broker = Mosquitto::start().await;
    let emu = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let mut sub = Subscriber::connect(broker.port, "frames/#").await;
    let config = config(&emu, &broker).replace(
        "[[rule]]\nname = \"all\"",
        "[[rule]]\nname = \"frames\"\nwhen = \"$.objects[*]\"\npayload = \"summary\"\nmqtt_topic = \"frames/{camera}\"\nto = [\"broker\"]\nstop = true\n[[rule]]\nname = \"all\"",
    );
    let relay = RelayProcess::start(&config);
    assert!(emu.wait_for_sessions(1, T).await, "{}", relay.log());
    let with_objects = fixture("rtsp-metadata-06-analytics-frame.xml");
    let start = with_objects.find("<tt:Object ").unwrap();
    let end = with_objects.rfind("</tt:Object>").unwrap() + "</tt:Object>".len();
    let empty = format!("{}{}", &with_objects[..start], &with_objects[end..]);
    emu.send_document(&empty);
    emu.send_document(&with_objects);
    emu.send_document(&empty);
    let m = sub.next(T).await;
    assert_eq!(m.topic, "frames/gate");
    assert_eq!(
        m.payload,
        r#"{"timestamp":1750148434133,"objects":2,"classes":{"Bicycle":1,"Human":1}}"#
    );
    sub.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_stream_asks_only_for_the_topics_the_rules_use_on_the_configured_channel() {
    let broker = Mosquitto::start().await;
    let emu = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let config = config(&emu, &broker)
        .replace("ptz = true\n", "ptz = true\nchannel = 2\n")
        .replace(
            "name = \"all\"\n",
            "name = \"all\"\ntopic = \"tnsaxis:CameraApplicationPlatform/VMD//.|tns1:Device/tnsaxis:IO/VirtualPort\"\n",
        );
    let relay = RelayProcess::start(&config);
    assert!(emu.wait_for_sessions(1, T).await, "{}", relay.log());
    let describe = emu
        .requests()
        .into_iter()
        .find(|r| r.starts_with("DESCRIBE "))
        .unwrap();
    assert!(
        describe.ends_with(
            "media.amp?camera=2&video=0&audio=0&event=on&analytics=polygon&ptz=all&eventtopic=axis:CameraApplicationPlatform/VMD//.%7Convif:Device/axis:IO/VirtualPort"
        ),
        "{describe}"
    );
}
