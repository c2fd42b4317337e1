//! The broker goes away under load and comes back: every event arrives, in order.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Mosquitto, RelayProcess, Subscriber};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig, Notification};

const T: Duration = Duration::from_secs(60);
/// The relay's in-flight window in these tests: the bound on duplicates per disconnection.
const INFLIGHT: usize = 100;

/// A numbered event: its `n` lets the test check loss, order and duplicates.
pub fn numbered(n: u64) -> Notification {
    Notification {
        topic: "tns1:Device/tnsaxis:IO/VirtualInput".into(),
        timestamp: Some(1_750_000_000_000 + n as i64),
        source: vec![("port".into(), "1".into())],
        key: vec![],
        data: vec![("n".into(), n.to_string())],
    }
}

pub fn relay_config(emu: &Emulator, broker: &Mosquitto, extra_dest: &str) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
[destination.broker]
kind = "mqtt"
url = "{}"
client_id = "relay-under-test"
inflight = {INFLIGHT}
{extra_dest}
[[rule]]
name = "load"
to = ["broker"]
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
"#,
        emu.base_url(),
        broker.url()
    )
}

#[tokio::test]
async fn broker_stopped_under_load_and_restarted_loses_nothing_and_keeps_order() {
    let mut broker = Mosquitto::start_persistent().await;
    let mut sub = Subscriber::persistent(broker.port, "load/#", "outage-watcher").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let relay = RelayProcess::start(&relay_config(&emu, &broker, ""));
    assert!(emu.wait_for_clients(1, T).await);

    const N: u64 = 3000;
    for n in 0..N {
        emu.emit(&numbered(n));
        if n == 1000 {
            broker.stop_graceful();
        }
        if n == 2000 {
            broker.restart().await;
        }
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await; // pacing the load, ~5k/s
        }
    }
    let mut firsts = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    while seen.len() < N as usize {
        let Some(m) = sub.try_next(Duration::from_secs(20)).await else {
            panic!(
                "stuck at {} of {N} events; last {:?}\n{}",
                seen.len(),
                firsts.last(),
                relay.log()
            );
        };
        let n: u64 = m.payload.parse().unwrap();
        if seen.insert(n) {
            firsts.push(n);
        } else {
            duplicates += 1;
        }
    }
    println!("broker outage: {N} events, {duplicates} duplicates");
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "order kept");
    assert!(
        duplicates <= INFLIGHT,
        "duplicates {duplicates} beyond the in-flight window"
    );
    assert!(
        relay.log().contains("broker connection lost"),
        "the outage happened"
    );
}
