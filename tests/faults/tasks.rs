//! A task that dies is noticed: a panic in the router or a sink stops the relay with a non-zero
//! exit (so the container restarts it), and the restarted relay delivers what was accepted.
//! The panics come from the debug build's failpoints (`EDGERELAY_FAILPOINT`).

use std::time::Duration;

use crate::common::{Mosquitto, RelayProcess, Subscriber, load_config, numbered};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sink_stops_the_relay_and_a_restart_delivers_everything_accepted() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut relay = RelayProcess::start_with_env(
        &load_config(&emu, &broker, ""),
        &[("EDGERELAY_FAILPOINT", "sink")],
    );
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    for n in 0..5 {
        emu.emit(&numbered(n));
    }
    let status = relay.wait_exit(T).await;
    assert!(!status.success(), "{status:?}\n{}", relay.log());
    let log = relay.log();
    assert!(
        log.contains("task=\"sink:broker\"") && log.contains("panicked: failpoint sink"),
        "{log}"
    );
    assert!(
        log.contains(
            "task sink:broker panicked: failpoint sink; stopped so that a fresh process takes over"
        ),
        "{log}"
    );
    // Nothing was published; the events wait in the outbox for the next process.
    assert!(sub.try_next(Duration::from_millis(300)).await.is_none());
    relay.clear_env();
    relay.spawn();
    let mut got = Vec::new();
    while got.len() < 5 {
        let n: u64 = sub.next(T).await.payload.parse().unwrap();
        if !got.contains(&n) {
            got.push(n);
        }
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_router_stops_the_relay_with_a_non_zero_exit() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut relay = RelayProcess::start_with_env(
        &load_config(&emu, &broker, ""),
        &[("EDGERELAY_FAILPOINT", "router")],
    );
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    emu.emit(&numbered(1));
    let status = relay.wait_exit(T).await;
    assert!(!status.success(), "{status:?}\n{}", relay.log());
    assert!(
        relay
            .log()
            .contains("task router panicked: failpoint router"),
        "{}",
        relay.log()
    );
}
