//! End to end over ONVIF PullPoint: emulated ONVIF camera (SOAP 1.2, WS-Security, PullPoint
//! subscriptions) → edgerelay binary → Mosquitto → subscriber. Asserts the camera-format
//! output of each topic shape, initial states, that subscriptions never leak (restarts, hung
//! pulls, vanished subscriptions), clock-skew handling and refused credentials.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Mosquitto, RelayProcess, Subscriber};
use edgerelay::sources::emulator::onvif::{OnvifEmulator, OnvifEmulatorConfig};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onvif")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn config(emu: &OnvifEmulator, broker: &Mosquitto, password: &str) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
http = "{{http}}"
[[camera]]
name = "gate"
url = "{}"
transport = "pullpoint"
username = "onvif"
password = "{password}"
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
        emu.base_url(),
        broker.url()
    )
}

/// Polls `cond` every 20 ms until it holds; panics with `what` and the relay log after `T`.
async fn wait_until(relay: &RelayProcess, what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < end, "never {what}; log:\n{}", relay.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `name{label}` on the relay's `/metrics`, polled until `ok(value)`.
async fn wait_metric(
    relay: &RelayProcess,
    name: &str,
    label: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let end = Instant::now() + T;
    let prefix = format!("{name}{{{label}}} ");
    loop {
        let body = match reqwest::get(format!("{}/metrics", relay.http)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let v = body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(v) = v
            && ok(v)
        {
            return v;
        }
        assert!(
            Instant::now() < end,
            "{name}{{{label}}} never right (last {v:?}); log:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn expected() -> Vec<Value> {
    fixture("expected-mqtt-pullpoint.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The next camera event (a reconnect announcement, `EdgeRelay/CameraConnection`, skipped)
/// is `exp`, byte for byte.
async fn assert_next(sub: &mut Subscriber, exp: &Value) {
    let mut m = sub.next(T).await;
    if m.topic.contains("/EdgeRelay/CameraConnection/") {
        m = sub.next(T).await;
    }
    assert_eq!(
        m.topic,
        exp["topic"].as_str().unwrap(),
        "{}",
        exp["fixture"]
    );
    assert_eq!(
        m.payload,
        exp["payload"].to_string(),
        "{}: byte for byte",
        exp["fixture"]
    );
}

#[tokio::test]
async fn each_topic_shape_arrives_in_the_camera_format_after_the_initial_states() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig::default())
        .await
        .unwrap();
    // The input was already active when the relay connected: reported as Initialized.
    emu.seed_state(&fixture("03-digital-input.xml"));
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    wait_until(&relay, "streaming", || emu.counters().sync_points == 1).await;
    let exp = expected();
    assert_eq!(exp.len(), 4);
    assert_eq!(exp[0]["fixture"], "initial state of 03-digital-input.xml");
    assert_next(&mut sub, &exp[0]).await;
    for e in &exp[1..] {
        emu.emit(&fixture(e["fixture"].as_str().unwrap()));
        assert_next(&mut sub, e).await;
    }
    assert_eq!(emu.counters().created, 1);
    assert_eq!(emu.counters().sync_points, 1);
}

#[tokio::test]
async fn relay_restarts_never_leak_a_subscription() {
    // As many stops and starts as the issue asks of reconnects: the camera allows only three.
    const ROUNDS: u64 = 20;
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig::default())
        .await
        .unwrap();
    let mut relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    for round in 1..=ROUNDS {
        if round > 1 {
            relay.spawn();
        }
        wait_until(&relay, "streaming", || emu.counters().sync_points == round).await;
        assert_eq!(emu.live_subscriptions(), 1);
        let st = relay.terminate(T).await;
        assert!(st.success(), "{st:?}");
        assert_eq!(
            emu.live_subscriptions(),
            0,
            "round {round}: the stopped relay left its subscription; log:\n{}",
            relay.log()
        );
    }
    let c = emu.counters();
    assert_eq!(c.max_live, 1, "{c:?}");
    assert_eq!(
        (c.created, c.unsubscribed, c.refused),
        (ROUNDS, ROUNDS, 0),
        "{c:?}"
    );
}

#[tokio::test]
async fn short_lifetimes_are_renewed_on_the_same_subscription() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig {
        max_lifetime: Duration::from_secs(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    // 3 s lifetimes: four renewals take about 6 s; without them it would expire twice.
    wait_until(&relay, "renewed 4 times", || emu.counters().renewed >= 4).await;
    let c = emu.counters();
    assert_eq!((c.created, c.max_live), (1, 1), "{c:?}");
    emu.emit(&fixture("02-motion-alarm.xml"));
    assert_next(&mut sub, &expected()[2]).await;
}

#[tokio::test]
async fn a_hung_pull_is_timed_out_and_the_subscription_replaced() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig::default())
        .await
        .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    wait_until(&relay, "streaming", || emu.counters().sync_points == 1).await;
    emu.hang_pulls(true);
    wait_until(&relay, "a pull held", || emu.counters().pulls_held >= 1).await;
    let held_at = Instant::now();
    emu.hang_pulls(false);
    wait_until(&relay, "resubscribed", || emu.counters().created == 2).await;
    // The pull's deadline is its 5 s timeout plus a 5 s margin, then 1 s of back-off.
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(14)).contains(&held_at.elapsed()),
        "{:?}",
        held_at.elapsed()
    );
    eprintln!(
        "hung pull replaced {:?} after it was held",
        held_at.elapsed()
    );
    let c = emu.counters();
    assert_eq!(
        (c.unsubscribed, c.max_live),
        (1, 1),
        "old one unsubscribed first: {c:?}"
    );
    assert!(emu.wait_for_live(1, T).await);
    wait_until(&relay, "new subscription synchronised", || {
        emu.counters().sync_points == 2
    })
    .await;
    emu.emit(&fixture("01-cell-motion.xml"));
    assert_next(&mut sub, &expected()[1]).await;
    wait_metric(
        &relay,
        "edgerelay_source_timeouts_total",
        r#"camera="gate""#,
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test]
async fn a_vanished_subscription_is_replaced() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig::default())
        .await
        .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    wait_until(&relay, "streaming", || emu.counters().sync_points == 1).await;
    emu.drop_subscriptions();
    wait_until(&relay, "resubscribed", || emu.counters().sync_points == 2).await;
    let c = emu.counters();
    assert_eq!((c.created, c.max_live, c.unsubscribed), (2, 1, 0), "{c:?}");
    emu.emit(&fixture("03-digital-input.xml"));
    assert_next(&mut sub, &expected()[3]).await;
}

#[tokio::test]
async fn an_hour_of_clock_skew_still_authenticates_and_is_reported_once() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig {
        clock_skew_ms: 3_600_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    wait_until(&relay, "streaming", || emu.counters().sync_points == 1).await;
    let skew = wait_metric(
        &relay,
        "edgerelay_source_clock_skew_seconds",
        r#"camera="gate""#,
        |v| v != 0.0,
    )
    .await;
    assert!((skew - 3600.0).abs() < 2.0, "{skew}");
    // A reconnect measures again and does not log again.
    emu.drop_subscriptions();
    wait_until(&relay, "resubscribed", || emu.counters().sync_points == 2).await;
    emu.emit(&fixture("02-motion-alarm.xml"));
    assert_next(&mut sub, &expected()[2]).await;
    assert_eq!(emu.counters().auth_failures, 0);
    assert_eq!(
        relay.log().matches("camera clock is off").count(),
        1,
        "{}",
        relay.log()
    );
}

#[tokio::test]
async fn a_wrong_password_is_reported_and_retried_with_back_off() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig::default())
        .await
        .unwrap();
    let relay = RelayProcess::start(&config(&emu, &broker, "not-the-password"));
    relay.wait_for_log("authentication failed", T).await;
    wait_until(&relay, "a second attempt", || {
        emu.counters().auth_failures >= 2
    })
    .await;
    let at = emu.counters().auth_failures;
    // Back-off of 1 s, 2 s, 2 s (max_backoff), less a quarter of jitter: 3 s hold at most 3 more.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let more = emu.counters().auth_failures - at;
    assert!(more <= 3, "{more} attempts in 3 s: no back-off");
    assert_eq!(emu.counters().created, 0);
    wait_metric(&relay, "edgerelay_source_state", r#"camera="gate""#, |v| {
        v == 2.0
    })
    .await;
}

/// `transport = "rtsp"`, `vendor = "onvif"`: the stream URI comes from the Media service
/// (GetProfiles, GetStreamUri), the serial from GetDeviceInformation; RTSP metadata then
/// gives the same messages as from an Axis camera, under the ONVIF serial.
#[tokio::test]
async fn rtsp_metadata_found_through_onvif_media_arrives_in_the_camera_format() {
    use edgerelay::sources::emulator::rtsp::{RtspEmulator, RtspEmulatorConfig};
    let broker = Mosquitto::start().await;
    let rtsp = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let emu = OnvifEmulator::start(OnvifEmulatorConfig {
        username: "bridge".into(),
        password: "fixture-pass".into(),
        stream_uri: Some(format!(
            "rtsp://127.0.0.1:{}/onvif-media/media.amp?profile=meta",
            rtsp.addr().port()
        )),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let cfg = config(&emu, &broker, "fixture-pass")
        .replace(
            "transport = \"pullpoint\"",
            "transport = \"rtsp\"\nvendor = \"onvif\"",
        )
        .replace("username = \"onvif\"", "username = \"bridge\"");
    let relay = RelayProcess::start(&cfg);
    assert!(rtsp.wait_for_sessions(1, T).await, "{}", relay.log());
    let rtsp_fixture = |name: &str| {
        std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    };
    let line: Value = rtsp_fixture("expected-mqtt-rtsp.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["fixture"] == "rtsp-metadata-02-pir-changed.xml")
        .unwrap();
    rtsp.send_document(&rtsp_fixture("rtsp-metadata-02-pir-changed.xml"));
    let want = &line["messages"][0];
    let m = sub.next(T).await;
    assert_eq!(
        m.topic,
        want["topic"]
            .as_str()
            .unwrap()
            .replace("B8A44F3E9D21", "ONVIF-0042")
    );
    assert_eq!(
        m.payload,
        want["payload"]
            .to_string()
            .replace("B8A44F3E9D21", "ONVIF-0042"),
        "byte for byte, the serial apart"
    );
    assert_eq!(
        emu.counters().created,
        0,
        "no PullPoint subscription for an RTSP camera"
    );
}

/// A camera whose subscriptions are all taken (by other clients) refuses a new one: the relay
/// retries with back-off, logs it once, and subscribes as soon as a slot is free.
#[tokio::test]
async fn a_camera_refusing_new_subscriptions_is_retried_with_back_off_and_logged_once() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig {
        max_subscriptions: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    wait_until(&relay, "refused 3 times", || emu.counters().refused >= 3).await;
    let log = relay.log();
    assert_eq!(log.matches("TooManySubscriptions").count(), 1, "{log}");
    assert_eq!(emu.counters().created, 0);
}

/// A device that also wants HTTP Digest on every request is answered (one challenge each).
#[tokio::test]
async fn http_digest_is_answered_where_the_device_asks_for_it() {
    let broker = Mosquitto::start().await;
    let emu = OnvifEmulator::start(OnvifEmulatorConfig {
        http_digest: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sub = Subscriber::connect(broker.port, "axis/#").await;
    let relay = RelayProcess::start(&config(&emu, &broker, "onvif-pass"));
    wait_until(&relay, "streaming", || emu.counters().sync_points == 1).await;
    emu.emit(&fixture("02-motion-alarm.xml"));
    assert_next(&mut sub, &expected()[2]).await;
    let c = emu.counters();
    assert!(c.http_challenges >= 5, "{c:?}");
    assert_eq!(c.auth_failures, 0, "{c:?}");
}

/// `edgerelay probe URL` names what the ONVIF camera offers and prints a stanza that uses it,
/// with the password left to the environment.
#[tokio::test]
async fn probe_reports_the_camera_and_prints_a_pullpoint_stanza() {
    let emu = OnvifEmulator::start(OnvifEmulatorConfig {
        clock_skew_ms: 600_000,
        stream_uri: Some("rtsp://127.0.0.1:8554/meta".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = emu.base_url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_edgerelay"))
            .args(["probe", &url])
            .env("EDGERELAY_PROBE_USERNAME", "onvif")
            .env("EDGERELAY_PROBE_PASSWORD", "onvif-pass")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "serial ONVIF-0042, model ONVIF Camera",
        "ONVIF events (PullPoint): http://",
        "ONVIF metadata stream (Media profile with metadata): rtsp://127.0.0.1:8554/meta",
        "VAPIX (Axis): no",
        "transport = \"pullpoint\"\nusername = \"onvif\"\npassword = \"${CAMERA_PASSWORD}\"",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let skew: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("camera clock minus this host's: "))
        .and_then(|v| v.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("no clock line in:\n{text}"));
    assert!((skew - 600.0).abs() < 1.5, "{skew}");
    assert!(!text.contains("onvif-pass"), "{text}");
    assert_eq!(emu.counters().auth_failures, 0);
}
