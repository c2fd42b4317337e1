//! The relay killed with SIGKILL at random moments under load and restarted, again and again:
//! every delivery that was in the outbox when it died arrives, in order, with duplicates
//! bounded by the in-flight window.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{INFLIGHT, Mosquitto, RelayProcess, Subscriber, load_config, numbered};
use edgerelay::delivery::Delivery;
use edgerelay::outbox::{Outbox, OutboxOptions};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};
use rand::Rng;

const ROUNDS: usize = 10;
const T: Duration = Duration::from_secs(60);

/// What a killed relay left in its outbox (the accepted, unacknowledged deliveries).
fn pending_in_outbox(relay: &RelayProcess) -> Vec<u64> {
    let dir = relay.dir.path().join("data/outbox/broker");
    let (mut outbox, _) = Outbox::open(&dir, OutboxOptions::default()).unwrap();
    let entries = outbox.read(0, usize::MAX).unwrap();
    entries
        .iter()
        .map(|e| {
            let d = Delivery::decode(&e.data).unwrap();
            String::from_utf8(d.payload).unwrap().parse().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_relay_resends_unacknowledged_deliveries_first() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Arc::new(Emulator::start(EmulatorConfig::default()).await.unwrap());
    // A short back-off cap so each restart reconnects to the camera quickly.
    let cfg = load_config(&emu, &broker, "").replace(
        "password = \"fixture-pass\"",
        "password = \"fixture-pass\"\nmax_backoff = \"1s\"",
    );
    let mut relay = RelayProcess::start(&cfg);
    assert!(emu.wait_for_clients(1, T).await);

    // Load: bursts of numbered events, ~4k/s, for as long as the test runs.
    let running = Arc::new(AtomicBool::new(true));
    let emitted = Arc::new(AtomicU64::new(0));
    let load = {
        let (emu, running, emitted) = (emu.clone(), running.clone(), emitted.clone());
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                for _ in 0..40 {
                    emu.emit(&numbered(emitted.fetch_add(1, Ordering::SeqCst)));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut must_arrive = BTreeSet::new();
    let mut backlog_sizes = Vec::new();
    for _ in 0..ROUNDS {
        let wait = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(wait)).await; // a random moment under load
        relay.kill9();
        let pending = pending_in_outbox(&relay);
        backlog_sizes.push(pending.len());
        must_arrive.extend(pending);
        relay.spawn();
    }
    running.store(false, Ordering::SeqCst);
    load.await.unwrap();

    let mut counts: HashMap<u64, usize> = HashMap::new();
    let mut firsts = Vec::new();
    while !must_arrive.iter().all(|n| counts.contains_key(n)) {
        let Some(m) = sub.try_next(Duration::from_secs(30)).await else {
            let missing: Vec<_> = must_arrive
                .iter()
                .filter(|n| !counts.contains_key(n))
                .take(10)
                .collect();
            panic!(
                "deliveries lost after a kill: {missing:?}...\n{}",
                relay.log()
            );
        };
        let n: u64 = m.payload.parse().unwrap();
        let c = counts.entry(n).or_default();
        if *c == 0 {
            firsts.push(n);
        }
        *c += 1;
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    println!(
        "kill -9 x{ROUNDS}: emitted {}, received {} distinct, {duplicates} duplicates, outbox backlog at each kill {backlog_sizes:?}",
        emitted.load(Ordering::SeqCst),
        counts.len()
    );
    assert!(
        backlog_sizes.iter().sum::<usize>() > 0,
        "no kill found a backlog: the test proved nothing"
    );
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "order kept across restarts"
    );
    assert!(
        duplicates <= INFLIGHT * ROUNDS,
        "duplicates {duplicates} beyond the in-flight window"
    );
}
