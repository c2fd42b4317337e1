//! A hostile camera's serial and event frame, routed through rules that use every template
//! placeholder in topics and JSON payloads: every delivery must be one an MQTT broker accepts
//! (no empty topic, no U+0000, no wildcard, at most 65,535 bytes), `{iso_time}` must be RFC
//! 3339, and a JSON payload template must give JSON. Never a panic.
#![no_main]

use std::sync::OnceLock;

use edgerelay::rules::RuleSet;
use edgerelay::sinks::mqtt::limits::{MAX_PACKET_BYTES, publish_problem};
use edgerelay::sources::catalog::Catalog;
use edgerelay::sources::websocket::protocol::{Incoming, parse_frame};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[relay]
data_dir = "/nonexistent"
[[camera]]
name = "cam"
url = "http://127.0.0.1"
serial = "X"
[destination.d]
kind = "mqtt"
url = "mqtt://127.0.0.1"
[[rule]]
name = "default"
to = ["d"]
include_serial = true
[[rule]]
name = "every-placeholder"
to = ["d"]
mqtt_topic = "f/{camera}/{serial}/{topic}/{topic_raw}/{timestamp}/{iso_time}/{source.port}/{key.k}/{data.active}/{$.message.data.active}/{$.message.source}/{$.timestamp}"
payload = '{{"camera":"{camera}","serial":"{serial}","topic":"{topic}","raw":"{topic_raw}","ts":{timestamp},"iso":"{iso_time}","port":"{source.port}","key":"{key.k}","active":{data.active},"data":{$.message.data},"first":"{$.message.source.port}","none":{$.nope}}}'
[[rule]]
name = "time"
to = ["d"]
mqtt_topic = "t/{iso_time}"
payload = "{iso_time}"
"#;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let cfg = edgerelay::config::load_str(CONFIG, "fuzz.toml").expect("fuzz config");
        RuleSet::compile(&cfg).expect("fuzz rules")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // First line: the serial the camera reports; the rest: one event frame.
    let (serial, frame) = text.split_once('\n').unwrap_or(("X", text));
    let Ok(Incoming::Notify(n)) = parse_frame(frame) else {
        return;
    };
    let ev = n.into_event(&"cam".into(), &serial.into(), &Catalog::default(), 0);
    let mut rules = rules().clone();
    let mut routed = Vec::new();
    rules.route(&ev, 0, &mut routed);
    for r in routed {
        let d = r.delivery;
        if let Some(problem) = publish_problem(&d.topic, d.payload.len(), d.qos, MAX_PACKET_BYTES) {
            panic!("{problem}: topic {:?}", d.topic);
        }
        if let Some(iso) = d.topic.strip_prefix("t/") {
            assert!(
                edgerelay::time::parse_rfc3339_ms(iso).is_some(),
                "{{iso_time}} is not RFC 3339: {iso:?}"
            );
        }
        if d.topic.starts_with("f/") {
            serde_json::from_slice::<serde_json::Value>(&d.payload)
                .unwrap_or_else(|e| panic!("JSON payload template gave no JSON ({e}): {:?}", String::from_utf8_lossy(&d.payload)));
        }
    }
});
