//! Camera availability (issue 14 item 1) when cameras fail: a camera lost (its connections
//! dropped and refused) is announced `connected:false` within one heartbeat plus a little, and
//! `connected:true` when back; a camera that never connects is announced down; a clean stop
//! announces every camera down; a later subscriber sees the current state (retained); `""`
//! turns it off. Real emulator, Mosquitto and relay binary.

use std::time::{Duration, Instant};

use crate::common::{Mosquitto, RelayProcess, Subscriber, free_port, numbered};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig, Fault};

const T: Duration = Duration::from_secs(30);
/// The cameras' heartbeat in these tests.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Slack over one heartbeat: the relay polls states every 250 ms, then the broker hop.
const SLACK: Duration = Duration::from_secs(3);
const FILTER: &str = "axis/+/event/connection";

fn camera(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[camera]]\nname = \"{name}\"\nurl = \"{url}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\nheartbeat = \"2s\"\nmax_backoff = \"1s\"\n{extra}\n"
    )
}

fn config(cameras: &str, broker: &Mosquitto, dest_extra: &str) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
{cameras}
[destination.broker]
kind = "mqtt"
url = "{}"
client_id = "availability-faults"
{dest_extra}
[[rule]]
name = "numbered"
to = ["broker"]
mqtt_topic = "marker/{{camera}}"
payload = "{{data.n}}"
"#,
        broker.url()
    )
}

fn msg(serial: &str, connected: bool) -> String {
    format!(r#"{{"serial":"{serial}","connected":{connected}}}"#)
}

/// The retained state on `topic`, as a subscriber connecting now sees it.
async fn retained(broker: &Mosquitto, topic: &str) -> (String, bool) {
    let mut late = Subscriber::connect(broker.port, topic).await;
    let m = late.next(T).await;
    (m.payload, m.retain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_camera_is_announced_down_within_a_heartbeat_and_up_when_back() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let serial = emu.serial().to_string();
    let topic = format!("axis/{serial}/event/connection");
    let mut sub = Subscriber::connect(broker.port, FILTER).await;
    let _relay = RelayProcess::start(&config(&camera("lobby", &emu.base_url(), ""), &broker, ""));

    let up = sub.next(T).await;
    assert_eq!((up.topic.as_str(), up.qos), (topic.as_str(), 1));
    assert_eq!(up.payload, msg(&serial, true));
    assert_eq!(retained(&broker, &topic).await, (msg(&serial, true), true));

    // Lost: the connection dropped, and every new one refused at configure.
    emu.set_fault(Some(Fault::RejectConfigure));
    let lost = Instant::now();
    emu.drop_connections();
    let down = sub.next(HEARTBEAT + SLACK).await;
    let took = lost.elapsed();
    eprintln!("camera lost → connected:false after {took:?} (heartbeat {HEARTBEAT:?})");
    assert_eq!(down.payload, msg(&serial, false), "after {took:?}");
    assert!(
        took >= HEARTBEAT - Duration::from_millis(100),
        "announced before a heartbeat passed: {took:?}"
    );
    assert_eq!(retained(&broker, &topic).await, (msg(&serial, false), true));

    emu.set_fault(None);
    let back = sub.next(T).await;
    assert_eq!(back.payload, msg(&serial, true));
    assert_eq!(retained(&broker, &topic).await, (msg(&serial, true), true));
    // Only changes: a quiet stream repeats nothing.
    sub.expect_nothing(HEARTBEAT + Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_never_connects_is_down_and_a_clean_stop_announces_every_camera_down() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let serial = emu.serial().to_string();
    // Nothing listens there; its serial comes from config (no camera to ask).
    let dead_url = format!("http://127.0.0.1:{}", free_port());
    let cameras = camera("lobby", &emu.base_url(), "")
        + &camera("gate", &dead_url, "serial = \"ACCC8E0000FF\"");
    let mut sub = Subscriber::connect(broker.port, FILTER).await;
    let started = Instant::now();
    let mut relay = RelayProcess::start(&config(&cameras, &broker, ""));

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = sub.next(T).await;
        seen.push((m.topic, m.payload, started.elapsed()));
    }
    seen.sort();
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        (
            "axis/ACCC8E0000FF/event/connection",
            msg("ACCC8E0000FF", false).as_str()
        )
    );
    assert!(
        seen[0].2 < HEARTBEAT + SLACK + Duration::from_secs(2),
        "{seen:?}"
    );
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        (
            format!("axis/{serial}/event/connection").as_str(),
            msg(&serial, true).as_str()
        )
    );

    assert!(relay.terminate(T).await.success());
    let m = sub.next(T).await;
    assert_eq!(
        m.payload,
        msg(&serial, false),
        "the streaming camera goes down at stop"
    );
    for (topic, serial) in [
        (format!("axis/{serial}/event/connection"), serial.as_str()),
        ("axis/ACCC8E0000FF/event/connection".into(), "ACCC8E0000FF"),
    ] {
        assert_eq!(retained(&broker, &topic).await, (msg(serial, false), true));
    }
    // Already announced down: not repeated at stop.
    sub.expect_nothing(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_availability_topic_turns_it_off() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    // A second destination with it on is the witness that the state was announced.
    let witness = format!(
        "availability_topic = \"\"\n[destination.witness]\nkind = \"mqtt\"\nurl = \"{}\"\nclient_id = \"availability-witness\"\navailability_topic = \"on/{{camera}}\"\n",
        broker.url()
    );
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let _relay = RelayProcess::start(&config(
        &camera("lobby", &emu.base_url(), ""),
        &broker,
        &witness,
    ));
    let on = sub.next_event(T).await;
    assert_eq!(on.topic, "on/lobby");
    assert!(emu.wait_for_clients(1, T).await);
    // The marker goes through the same outbox after any availability message would have.
    emu.emit(&numbered(1));
    let m = sub.next_event(T).await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_str()),
        ("marker/lobby", "1")
    );
}
