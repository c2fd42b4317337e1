//! Outbox limits and damage, through the relay binary: the buffer cap under each policy, a
//! corrupted outbox on start, and a dead destination that must not hold up a live one.

mod common;

use std::time::Duration;

use common::{Mosquitto, RelayProcess, Subscriber, load_config, numbered};
use edgerelay::delivery::Delivery;
use edgerelay::outbox::{Outbox, OutboxOptions};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(30);
/// Bytes of a record's frame around its data (crc, len, seq, time: see `outbox` module doc).
const FRAME_HEADER: usize = 24;

fn delivery(n: u64) -> Delivery {
    Delivery {
        topic: "load/lobby".into(),
        payload: n.to_string().into_bytes(),
        qos: 1,
        retain: false,
        created_ms: 0,
        camera: "lobby".into(),
    }
}

/// Emits events 10..35 while the broker refuses the relay, then lets it in: exactly the
/// events the policy keeps arrive, then a marker.
async fn cap_run(when_full: &str) -> Vec<u64> {
    let mut broker = Mosquitto::start_with_users(&[("watcher", "w")]).await;
    let mut sub = Subscriber::connect_as(broker.port, "load/#", Some(("watcher", "w"))).await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let ten_records = 10 * (FRAME_HEADER + delivery(10).encode().len());
    let dest = format!(
        "username = \"relay\"\npassword = \"r\"\nbuffer = {{ max_bytes = \"{ten_records}\", when_full = \"{when_full}\" }}"
    );
    let relay = RelayProcess::start(&load_config(&emu, &broker, &dest));
    assert!(emu.wait_for_clients(1, T).await);
    for n in 10..35 {
        emu.emit(&numbered(n));
    }
    // The router has taken all 25 once the relay logged the full outbox; then let it in.
    let deadline = tokio::time::Instant::now() + T;
    while !relay.log().contains("outbox full") {
        assert!(tokio::time::Instant::now() < deadline, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.add_user("relay", "r");
    let mut got = Vec::new();
    while got.len() < 10 {
        got.push(sub.next(T).await.payload.parse::<u64>().unwrap());
    }
    // Then a marker, after the backlog in FIFO order: nothing else the policy kept may come
    // before it. The outbox can still be full for a moment while the acknowledgements of the
    // backlog land, so a marker refused by it is followed by another.
    for marker in 99.. {
        emu.emit(&numbered(marker));
        if let Some(m) = sub.try_next(Duration::from_secs(2)).await {
            let n: u64 = m.payload.parse().unwrap();
            assert!(n >= 99, "{n} arrived after the {got:?} the policy kept");
            break;
        }
    }
    let log = relay.log();
    assert_eq!(
        log.matches("outbox full").count(),
        1,
        "one log line per burst:\n{log}"
    );
    got
}

#[tokio::test]
async fn full_buffer_drops_the_oldest_deliveries() {
    assert_eq!(cap_run("drop_oldest").await, (25..35).collect::<Vec<_>>());
}

#[tokio::test]
async fn full_buffer_rejects_new_deliveries() {
    assert_eq!(cap_run("reject_new").await, (10..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn corrupted_outbox_on_start_keeps_what_it_can_and_the_relay_runs() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = load_config(&emu, &broker, "");
    // Build the outbox a previous run left behind, then damage record 10 of 20.
    let mut relay = RelayProcess::start("[relay]\ndata_dir = \"{data_dir}\"\n");
    relay.kill9();
    std::fs::write(
        &relay.config,
        cfg.replace(
            "{data_dir}",
            &relay.dir.path().join("data").display().to_string(),
        ),
    )
    .unwrap();
    let dir = relay.dir.path().join("data/outbox/broker");
    {
        let (mut outbox, _) = Outbox::open(&dir, OutboxOptions::default()).unwrap();
        let records: Vec<Vec<u8>> = (0..20).map(|n| delivery(n).encode()).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        outbox.append(&refs, 0).unwrap();
    }
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let framed = FRAME_HEADER + delivery(10).encode().len();
    let header = bytes.len() - (10 * framed + 10 * (FRAME_HEADER + delivery(0).encode().len()));
    bytes[header + 10 * (FRAME_HEADER + delivery(0).encode().len()) + FRAME_HEADER + 2] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    relay.spawn();
    for want in 0..10 {
        let n: u64 = sub.next(T).await.payload.parse().unwrap();
        assert_eq!(n, want, "records before the damage arrive in order");
    }
    assert!(
        emu.wait_for_clients(1, T).await,
        "the relay runs on:\n{}",
        relay.log()
    );
    emu.emit(&numbered(500));
    let n: u64 = sub.next(T).await.payload.parse().unwrap();
    assert_eq!(n, 500, "the damaged records are not sent");
    assert!(
        dir.join("corrupt").read_dir().unwrap().count() > 0,
        "damage moved aside, not deleted"
    );
    assert!(
        relay.log().to_lowercase().contains("corrupt"),
        "{}",
        relay.log()
    );
}

#[tokio::test]
async fn a_dead_destination_does_not_hold_up_a_live_one() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dead_port = common::free_port();
    let cfg = load_config(&emu, &broker, "")
        .replace("to = [\"broker\"]", "to = [\"broker\", \"dead\"]")
        + &format!(
            "[destination.dead]\nkind = \"mqtt\"\navailability_topic = \"\"\nurl = \"mqtt://127.0.0.1:{dead_port}\"\n"
        );
    let mut relay = RelayProcess::start(&cfg);
    assert!(emu.wait_for_clients(1, T).await);
    const N: u64 = 2000;
    for n in 0..N {
        emu.emit(&numbered(n));
        if n % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    for want in 0..N {
        let n: u64 = sub.next(T).await.payload.parse().unwrap();
        assert_eq!(n, want);
    }
    relay.kill9();
    let (mut dead, _) = Outbox::open(
        &relay.dir.path().join("data/outbox/dead"),
        OutboxOptions::default(),
    )
    .unwrap();
    assert_eq!(
        dead.read(0, usize::MAX).unwrap().len(),
        N as usize,
        "the dead destination keeps its own backlog"
    );
}

#[tokio::test]
async fn deliveries_older_than_max_age_are_dropped_and_counted() {
    let mut broker = Mosquitto::start_with_users(&[("watcher", "w")]).await;
    let mut sub = Subscriber::connect_as(broker.port, "load/#", Some(("watcher", "w"))).await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dest = "username = \"relay\"\npassword = \"r\"\nbuffer = { max_age = \"1s\" }";
    let relay = RelayProcess::start(&load_config(&emu, &broker, dest));
    assert!(emu.wait_for_clients(1, T).await);
    for n in 0..5 {
        emu.emit(&numbered(n));
    }
    let deadline = tokio::time::Instant::now() + T;
    while !relay.log().contains("older than buffer.max_age") {
        assert!(tokio::time::Instant::now() < deadline, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relay.log().contains("expired=5"), "{}", relay.log());
    broker.add_user("relay", "r");
    emu.emit(&numbered(77));
    let n: u64 = sub.next(T).await.payload.parse().unwrap();
    assert_eq!(n, 77, "the expired deliveries are gone");
}
