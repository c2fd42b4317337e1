//! Faults on the way out: deliveries no broker can take. Each test puts one bad event between
//! ten numbered ones (camera emulator → relay binary → Mosquitto) and asserts that every
//! numbered event arrives, in order, and that the bad one was escaped or dead-lettered with
//! its reason and counted.

use std::time::Duration;

use crate::common::{
    Mosquitto, Received, RelayProcess, Subscriber, dead_letter_record, dead_letters, numbered,
};
use edgerelay::delivery::Delivery;
use edgerelay::sources::emulator::{Emulator, EmulatorConfig, Notification};

const T: Duration = Duration::from_secs(30);
/// A stateless topic for the bad event, apart from the numbered events' virtual input.
const FAULT_TOPIC: &str = "tnsaxis:CameraApplicationPlatform/ObjectAnalytics/Device1ScenarioANY";

/// The numbered events go to `load/{camera}` with payload `n`; the bad one through `fault_rule`.
fn config(emu: &Emulator, broker: &Mosquitto, dest_extra: &str, fault_rule: &str) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
http = "{{http}}"
status_topic = ""
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
[destination.broker]
kind = "mqtt"
url = "{}"
{dest_extra}
[[rule]]
name = "load"
topic = "tns1:Device/tnsaxis:IO/VirtualInput"
to = ["broker"]
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
[[rule]]
name = "fault"
topic = "{FAULT_TOPIC}"
to = ["broker"]
{fault_rule}
"#,
        emu.base_url(),
        broker.url()
    )
}

fn fault(source: &[(&str, &str)], data: &[(&str, String)], timestamp: i64) -> Notification {
    Notification {
        topic: FAULT_TOPIC.into(),
        timestamp: Some(timestamp),
        source: source
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        key: vec![],
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// A run: numbered events 0..5, the bad event, numbered 5..10, against a broker with
/// `broker_conf`. Returns what reached the broker apart from the numbered events, and the
/// relay (for its dead letters, metrics and log).
async fn run(
    broker_conf: &str,
    dest_extra: &str,
    fault_rule: &str,
    bad: Notification,
) -> (Vec<Received>, RelayProcess, Mosquitto) {
    let broker = Mosquitto::start_with(broker_conf).await;
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let relay = RelayProcess::start(&config(&emu, &broker, dest_extra, fault_rule));
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    for n in 0..5 {
        emu.emit(&numbered(n));
    }
    emu.emit(&bad);
    for n in 5..10 {
        emu.emit(&numbered(n));
    }
    let (mut numbers, mut others) = (Vec::<u64>::new(), Vec::new());
    while numbers.last() != Some(&9) {
        let Some(m) = sub.try_next(T).await else {
            panic!(
                "numbered events stopped after {numbers:?}; others {others:?}\n{}",
                relay.log()
            );
        };
        match m.topic.as_str() {
            "load/lobby" => numbers.push(m.payload.parse::<u64>().unwrap()),
            _ => others.push(m),
        }
    }
    // Publishes in flight when a broker closes the connection are sent again (at least once):
    // a number may repeat, but none is lost and their first arrivals keep their order.
    let mut first = Vec::new();
    for n in numbers {
        if !first.contains(&n) {
            first.push(n);
        }
    }
    assert_eq!(first, (0..10).collect::<Vec<_>>(), "{}", relay.log());
    (others, relay, broker)
}

/// `edgerelay_deliveries_dead_lettered_total` of destination `broker`.
async fn dead_lettered_metric(relay: &RelayProcess) -> f64 {
    let text = reqwest::get(format!("{}/metrics", relay.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = "edgerelay_deliveries_dead_lettered_total{destination=\"broker\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

/// The one dead letter of destination `broker`: its reason and the delivery it held.
fn only_dead_letter(relay: &RelayProcess) -> (String, Delivery) {
    let dead = dead_letters(relay, "broker");
    assert_eq!(dead.len(), 1, "{dead:?}\n{}", relay.log());
    let reason = dead[0]["reason"].as_str().unwrap().to_string();
    (
        reason,
        Delivery::decode(&dead_letter_record(&dead[0])).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_source_value_is_escaped_in_the_topic_and_delivered() {
    let bad = fault(
        &[("port", "a\0b")],
        &[("active", "1".into())],
        1_750_000_000_500,
    );
    let (others, relay, broker) = run("", "", "", bad).await;
    assert_eq!(others.len(), 1, "{others:?}");
    assert!(
        others[0].topic.ends_with("/$source/port/a%00b"),
        "{}",
        others[0].topic
    );
    let payload: serde_json::Value = serde_json::from_str(&others[0].payload).unwrap();
    assert_eq!(payload["message"]["source"]["port"], "a\0b");
    assert!(dead_letters(&relay, "broker").is_empty());
    assert!(
        !relay.log().contains("broker connection lost"),
        "{}\n--- broker ---\n{}",
        relay.log(),
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_camera_timestamp_under_iso_time_renders_a_valid_topic() {
    // Year -10: the topic used to read `fault/lobby/000+-10-...`, which brokers refuse.
    let bad = fault(&[], &[("active", "1".into())], -62_500_000_000_000);
    let rule = r#"mqtt_topic = "fault/{camera}/{iso_time}""#;
    let (others, relay, _broker) = run("", "", rule, bad).await;
    let topics: Vec<&str> = others.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["fault/lobby/0000-01-01T00:00:00.000Z"]);
    assert!(dead_letters(&relay, "broker").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_over_max_packet_size_is_dead_lettered_with_its_reason() {
    let bad = fault(&[], &[("blob", "x".repeat(20_000))], 1_750_000_000_500);
    let (others, relay, _broker) = run("", r#"max_packet_size = "8KiB""#, "", bad).await;
    assert!(others.is_empty(), "{others:?}");
    let (reason, d) = only_dead_letter(&relay);
    assert!(reason.contains("max_packet_size is 8192"), "{reason}");
    assert!(String::from_utf8_lossy(&d.payload).contains(&"x".repeat(20_000)));
    assert_eq!(dead_lettered_metric(&relay).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_over_mqtts_65535_bytes_is_dead_lettered_with_its_reason() {
    let v = "t".repeat(20_000);
    let rule = r#"mqtt_topic = "fault/{data.v}/{data.v}/{data.v}/{data.v}""#;
    let bad = fault(&[], &[("v", v)], 1_750_000_000_500);
    let (others, relay, _broker) = run("", "", rule, bad).await;
    assert!(others.is_empty(), "{others:?}");
    let (reason, d) = only_dead_letter(&relay);
    assert_eq!(d.topic.len(), 80_009);
    assert!(
        reason.contains("topic is 80009 bytes; MQTT allows 65535"),
        "{reason}"
    );
    assert_eq!(dead_lettered_metric(&relay).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_refuses_by_disconnecting_is_dead_lettered_after_three_tries() {
    // Mosquitto disconnects a client that sends a packet over its `max_packet_size`: the
    // relay does not know that limit, so only the broker's refusal can tell it.
    let bad = fault(&[], &[("blob", "x".repeat(10_000))], 1_750_000_000_500);
    let (others, relay, _broker) = run("max_packet_size 4096\n", "", "", bad).await;
    assert!(others.is_empty(), "{others:?}");
    let (reason, d) = only_dead_letter(&relay);
    assert!(
        reason.starts_with("refused by the broker") && reason.contains("3 times in a row"),
        "{reason}"
    );
    assert!(String::from_utf8_lossy(&d.payload).contains(&"x".repeat(10_000)));
    assert_eq!(dead_lettered_metric(&relay).await, 1.0);
}
