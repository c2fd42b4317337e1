//! The broker goes away under load and comes back: every event arrives, in order.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{INFLIGHT, Mosquitto, RelayProcess, Subscriber, load_config, numbered};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn broker_stopped_under_load_and_restarted_loses_nothing_and_keeps_order() {
    let mut broker = Mosquitto::start_persistent().await;
    let mut sub = Subscriber::persistent(broker.port, "load/#", "outage-watcher").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let relay = RelayProcess::start(&load_config(&emu, &broker, ""));
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
            let missing: Vec<u64> = (0..N).filter(|n| !seen.contains(n)).collect();
            panic!(
                "stuck at {} of {N} events; last {:?}; missing {missing:?}\n{}",
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
