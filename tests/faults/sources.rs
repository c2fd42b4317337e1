//! Sources that cannot hang or bloat the relay: a camera that holds the WebSocket upgrade
//! unanswered, one that sends hundreds of events with 200 KiB topics, one that sends a frame
//! over 1 MiB. Each runs between normal events, against the emulator, Mosquitto and the relay
//! binary, and asserts that the normal events after the fault arrive and the fault is counted.

use std::time::{Duration, Instant};

use crate::common::{Mosquitto, RelayProcess, Subscriber, numbered};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig, Fault, Notification};

const T: Duration = Duration::from_secs(30);

/// Camera `lobby` on `emu`, every event to Mosquitto as `fault/{camera}` with payload `n`
/// (the normal events are [`numbered`]), and the HTTP endpoint for `/metrics`.
fn config(emu: &Emulator, broker: &Mosquitto) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
http = "{{http}}"
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
max_backoff = "2s"
[destination.broker]
kind = "mqtt"
url = "{}"
client_id = "sources-faults"
[[rule]]
name = "numbered"
to = ["broker"]
mqtt_topic = "fault/{{camera}}"
payload = "{{data.n}}"
"#,
        emu.base_url(),
        broker.url()
    )
}

/// `/metrics` of the relay, `None` while it does not answer.
async fn scrape(relay: &RelayProcess) -> Option<String> {
    let resp = reqwest::get(format!("{}/metrics", relay.http)).await.ok()?;
    resp.text().await.ok()
}

/// The value of `name{camera="lobby"}`.
fn lobby(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{camera=\"lobby\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `/metrics` until `name{camera="lobby"}` satisfies `done`; returns its value.
async fn wait_lobby_metric(relay: &RelayProcess, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let end = Instant::now() + T;
    loop {
        let v = scrape(relay).await.and_then(|t| lobby(&t, name));
        if let Some(v) = v.filter(|v| done(*v)) {
            return v;
        }
        assert!(
            Instant::now() < end,
            "{name} never as expected (last {v:?}):\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the next payload on `fault/lobby`.
async fn next_n(sub: &mut Subscriber) -> String {
    let m = sub.next(T).await;
    assert_eq!(m.topic, "fault/lobby");
    m.payload
}

/// kB from a `/proc/PID/status` line such as `VmHWM: 23456 kB`.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test]
async fn a_camera_holding_the_upgrade_unanswered_times_out_and_streams_again() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_fault(Some(Fault::HoldUpgrade));
    let mut sub = Subscriber::connect(broker.port, "fault/#").await;
    let held_from = Instant::now();
    let relay = RelayProcess::start(&config(&emu, &broker));
    // The first upgrade gets no answer: after the deadline the source counts a timeout, backs
    // off and asks again, instead of "connecting" for good.
    relay
        .wait_for_log("no answer to the WebSocket upgrade within 10s", T)
        .await;
    wait_lobby_metric(&relay, "edgerelay_source_timeouts_total", |v| v >= 1.0).await;
    // The camera hangs for 20 s in all, then answers again.
    tokio::time::sleep_until((held_from + Duration::from_secs(20)).into()).await;
    emu.set_fault(None);
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    emu.emit(&numbered(1));
    assert_eq!(next_n(&mut sub).await, "1");
    let held = emu.counters().upgrades_held;
    assert!(held >= 2, "the relay retried after the timeout: {held}");
    // Logged once, however often the same timeout repeated.
    let log = relay.log();
    assert_eq!(
        log.matches("camera connection lost; reconnecting with back-off")
            .count(),
        1,
        "{log}"
    );
    let m = scrape(&relay).await.unwrap();
    assert_eq!(lobby(&m, "edgerelay_source_state"), Some(1.0), "streaming");
}

#[tokio::test]
async fn events_with_huge_topics_are_refused_at_parse_and_memory_stays_bounded() {
    const BAD: u64 = 300;
    const TOPIC_BYTES: usize = 200 * 1024;
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut sub = Subscriber::connect(broker.port, "fault/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker));
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    emu.emit(&numbered(0));
    assert_eq!(next_n(&mut sub).await, "0");
    let pid = relay.pid().unwrap();
    let before = proc_kb(pid, "VmHWM:");
    // 300 events, each with its own 200 KiB topic (60 MiB in all), a normal event after
    // every 30 of them.
    let mut normal = 1;
    for i in 0..BAD {
        let mut n = Notification::new(format!("tns1:Flood/{i}/{}", "x".repeat(TOPIC_BYTES)));
        n.data.push(("n".into(), format!("bad {i}")));
        emu.emit(&n);
        if (i + 1) % 30 == 0 {
            emu.emit(&numbered(normal));
            normal += 1;
        }
    }
    for want in 1..normal {
        assert_eq!(next_n(&mut sub).await, want.to_string());
    }
    let malformed = wait_lobby_metric(&relay, "edgerelay_source_malformed_frames_total", |v| {
        v >= BAD as f64
    })
    .await;
    assert_eq!(malformed, BAD as f64);
    let after = proc_kb(pid, "VmHWM:");
    let rss = proc_kb(pid, "VmRSS:");
    eprintln!("relay VmHWM {before} kB before the flood, {after} kB after; VmRSS {rss} kB");
    // One frame at a time is read and parsed (200 KiB, a few copies): nothing accumulates.
    assert!(
        after - before < 16 * 1024,
        "peak RSS grew by {} kB (from {before} kB)",
        after - before
    );
    // Logged once per burst, not once per frame.
    let log = relay.log();
    let lines = log.matches("skipping malformed frame").count();
    assert!(lines <= 10, "{lines} log lines for {BAD} bad frames");
    assert!(log.contains("topic of 2048"), "{log}");
    // The stream was never reopened for them.
    assert_eq!(emu.counters().configures_ok, 1);
    sub.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_frame_over_one_mib_is_refused_and_the_stream_recovers() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut sub = Subscriber::connect(broker.port, "fault/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker));
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    emu.emit(&numbered(1));
    assert_eq!(next_n(&mut sub).await, "1");
    // Stateless: the emulator re-sends stateful topics' last state on every connect (as
    // cameras do), and a state over the cap would be refused again on each.
    let mut big = Notification::new("tns1:VideoSource/tnsaxis:Tampering");
    big.data.push(("n".into(), "2".into()));
    big.data.push(("blob".into(), "x".repeat(3 << 19))); // 1.5 MiB
    emu.emit(&big);
    relay.wait_for_log("frame refused", T).await;
    assert_eq!(
        wait_lobby_metric(&relay, "edgerelay_source_malformed_frames_total", |v| v
            >= 1.0)
        .await,
        1.0
    );
    // tungstenite cannot read past a refused frame: the stream is reopened (announced by the
    // relay's `EdgeRelay/CameraConnection` event, which has no `n`), and events flow again.
    assert_eq!(
        next_n(&mut sub).await,
        "",
        "the reconnect announcement, not the big event"
    );
    assert_eq!(emu.counters().configures_ok, 2);
    // The camera re-sends its states on connect: event 1 is the virtual input's.
    assert_eq!(next_n(&mut sub).await, "1");
    emu.emit(&numbered(3));
    assert_eq!(next_n(&mut sub).await, "3");
    assert!(!relay.log().contains("panicked"));
}
