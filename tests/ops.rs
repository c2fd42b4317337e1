//! Operating the relay through its real binary: `/metrics` and `/status` figures after a known
//! sequence of events, a graceful stop under load and a restart that loses nothing, and secrets
//! that never reach the log or the HTTP endpoint.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mosquitto, RelayProcess, Subscriber, load_config, numbered};
use edgerelay::delivery::Delivery;
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(30);

/// HTTP checks on a running relay.
trait RelayHttp {
    async fn get(&self, path: &str) -> Option<(u16, String)>;
    async fn poll(&self, path: &str, what: &str, done: impl Fn(&str) -> bool) -> String;
    async fn wait_metric(&self, name: &str, label: &str, want: f64) -> String;
}

impl RelayHttp for RelayProcess {
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("{}{path}", self.http)).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    /// Polls `path` until it answers 200 and `done(body)`, with a deadline; returns the body.
    async fn poll(&self, path: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + T;
        let mut last = None;
        loop {
            if let Some((200, body)) = self.get(path).await {
                if done(&body) {
                    return body;
                }
                last = Some(body);
            }
            assert!(
                Instant::now() < end,
                "{path}: never {what}; last answer:\n{}\nlog:\n{}",
                last.unwrap_or_default(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `/metrics` until `metric{label}` equals `want`.
    async fn wait_metric(&self, name: &str, label: &str, want: f64) -> String {
        self.poll("/metrics", &format!("{name}{{{label}}} = {want}"), |b| {
            metric(b, name, label) == Some(want)
        })
        .await
    }
}

/// The value of `name{label}` in Prometheus text, e.g. `metric(t, "x_total", r#"camera="a""#)`.
fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    let prefix = format!("{name}{{{label}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// `[relay]` with data dir and HTTP endpoint, and camera `lobby` on `emu`.
fn relay_and_camera(emu: &Emulator) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
http = "{{http}}"
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
"#,
        emu.base_url()
    )
}

/// A config sending every event of camera `lobby` to `broker` as `ops/{camera}`.
fn ops_config(emu: &Emulator, broker: &Mosquitto) -> String {
    format!(
        r#"{}[destination.broker]
kind = "mqtt"
availability_topic = ""
url = "{}"
client_id = "ops-relay"
[[rule]]
name = "everything"
to = ["broker"]
mqtt_topic = "ops/{{camera}}"
"#,
        relay_and_camera(emu),
        broker.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_count_a_known_sequence_exactly() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "ops/#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let relay = RelayProcess::start_with_env(&ops_config(&emu, &broker), &[]);

    relay.poll("/healthz", "healthy", |_| true).await;
    relay.poll("/readyz", "ready", |_| true).await;
    // The container HEALTHCHECK: `edgerelay healthcheck` exits 0 on 200, 1 otherwise.
    for (path, ok) in [("/healthz", true), ("/no-such-page", false)] {
        let st = Command::new(env!("CARGO_BIN_EXE_edgerelay"))
            .args(["healthcheck", "--url", &format!("{}{path}", relay.http)])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.success(), ok, "healthcheck {path}: {st:?}");
    }
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    relay
        .wait_metric(
            "edgerelay_destination_connected",
            r#"destination="broker""#,
            1.0,
        )
        .await;
    relay
        .wait_metric("edgerelay_source_state", r#"camera="lobby""#, 1.0)
        .await;

    let n = Emulator::fixture_lines().len();
    for line in 1..=n {
        emu.emit_fixture_line(line);
    }
    for _ in 0..n {
        assert_eq!(sub.next_event(T).await.topic, "ops/lobby");
    }
    let m = relay
        .wait_metric(
            "edgerelay_deliveries_acked_total",
            r#"destination="broker""#,
            n as f64,
        )
        .await;
    let n = n as f64;
    let cam = r#"camera="lobby""#;
    let dest = r#"destination="broker""#;
    for (name, label, want) in [
        ("edgerelay_source_events_received_total", cam, n),
        ("edgerelay_source_malformed_frames_total", cam, 0.0),
        ("edgerelay_source_state", cam, 1.0),
        ("edgerelay_deliveries_sent_total", dest, n),
        ("edgerelay_deliveries_acked_total", dest, n),
        ("edgerelay_deliveries_dead_lettered_total", dest, 0.0),
        ("edgerelay_outbox_depth", dest, 0.0),
        ("edgerelay_outbox_bytes", dest, 0.0),
        ("edgerelay_outbox_oldest_age_seconds", dest, 0.0),
        ("edgerelay_outbox_dropped_full_total", dest, 0.0),
        ("edgerelay_outbox_dropped_age_total", dest, 0.0),
        ("edgerelay_outbox_rejected_total", dest, 0.0),
        ("edgerelay_destination_connected", dest, 1.0),
        ("edgerelay_destination_connects_total", dest, 1.0),
    ] {
        assert_eq!(
            metric(&m, name, label),
            Some(want),
            "{name}{{{label}}} in\n{m}"
        );
    }
    assert!(
        m.contains("# TYPE edgerelay_source_events_received_total counter"),
        "{m}"
    );
    assert!(m.contains("# TYPE edgerelay_outbox_depth gauge"), "{m}");
    assert!(
        m.lines()
            .any(|l| l == "edgerelay_rule_state_evictions_total 0"),
        "{m}"
    );
    // Labels are only camera and destination names, the camera's topics and histogram bounds.
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        // Relay-wide figures have no labels at all.
        let Some((_, rest)) = l.split_once('{') else {
            continue;
        };
        let labels = rest.split_once('}').unwrap().0;
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap();
            match k {
                "camera" => assert_eq!(v.trim_end_matches('"'), "lobby", "{l}"),
                "destination" => assert_eq!(v.trim_end_matches('"'), "broker", "{l}"),
                "topic" | "le" => {}
                _ => panic!("unexpected label {k} in {l}"),
            }
        }
    }
    // Per camera and topic: exactly the fixture's topics, each as often as it appears.
    let mut by_topic = std::collections::BTreeMap::<String, f64>::new();
    for line in Emulator::fixture_lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let topic = v["params"]["notification"]["topic"].as_str().unwrap();
        *by_topic.entry(topic.to_string()).or_default() += 1.0;
    }
    for (topic, count) in &by_topic {
        let label = format!(r#"camera="lobby",topic="{topic}""#);
        assert_eq!(
            metric(&m, "edgerelay_events_received_by_topic_total", &label),
            Some(*count),
            "{label} in\n{m}"
        );
    }
    // Every acknowledged delivery has its latency recorded.
    assert_eq!(
        metric(&m, "edgerelay_delivery_latency_seconds_count", dest),
        Some(n),
        "{m}"
    );
    assert!(
        m.contains("# TYPE edgerelay_delivery_latency_seconds histogram"),
        "{m}"
    );

    // A delivery can be sent and acknowledged before the sync that makes it durable ends:
    // wait for the durable count before reading the page.
    relay
        .wait_metric("edgerelay_outbox_durable_total", dest, n)
        .await;
    let (code, page) = relay.get("/status").await.unwrap();
    assert_eq!(code, 200);
    let n = n as u64;
    let cam_row = page
        .lines()
        .find(|l| l.contains("<td>lobby</td>"))
        .expect(&page);
    assert!(cam_row.contains("streaming"), "{cam_row}");
    assert!(
        cam_row.contains(&format!("<td class=\"n\">{n}</td>")),
        "{cam_row}"
    );
    assert!(cam_row.contains("UTC ("), "last event time: {cam_row}");
    let dest_row = page
        .lines()
        .find(|l| l.contains("<td>broker</td>"))
        .expect(&page);
    assert!(dest_row.contains(">connected<"), "{dest_row}");
    // Queued 0, bytes 0, oldest -, sent n, acknowledged n, dead 0, dropped 0 0, refused 0,
    // refused by the disk 0, durable n (fsync is on by default).
    let cells: Vec<&str> = dest_row
        .split("<td class=\"n\">")
        .skip(1)
        .map(|c| c.split('<').next().unwrap())
        .collect();
    assert_eq!(
        cells,
        [
            "0",
            "0",
            "-",
            &n.to_string(),
            &n.to_string(),
            "0",
            "0",
            "0",
            "0",
            "0",
            &n.to_string()
        ],
        "{dest_row}"
    );
}

/// Numbered events at about 4k/s from `from` until `running` is cleared.
fn spawn_load(
    emu: Arc<Emulator>,
    running: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while running.load(Ordering::SeqCst) {
            for _ in 0..40 {
                emu.emit(&numbered(next.fetch_add(1, Ordering::SeqCst)));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// `events_received=N` from the relay's "sources stopped" log line (the last one).
fn events_received_at_stop(log: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("sources stopped"))
        .unwrap_or_else(|| panic!("no 'sources stopped' line in:\n{log}"));
    let v = line.split("events_received=").nth(1).expect(line);
    v.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_sends_everything_received_and_restarts_cleanly() {
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Arc::new(Emulator::start(EmulatorConfig::default()).await.unwrap());
    let cfg = load_config(&emu, &broker, "").replace(
        "data_dir = \"{data_dir}\"",
        "data_dir = \"{data_dir}\"\nhttp = \"{http}\"\nshutdown_timeout = \"10s\"",
    );
    let mut relay = RelayProcess::start_with_env(&cfg, &[]);
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");

    let running = Arc::new(AtomicBool::new(true));
    let next = Arc::new(AtomicU64::new(0));
    let load = spawn_load(emu.clone(), running.clone(), next.clone());
    // Under load: some deliveries arrived, more are on their way.
    let mut got = BTreeSet::new();
    while got.len() < 2000 {
        got.insert(sub.next_event(T).await.payload.parse::<u64>().unwrap());
    }
    let status = relay.terminate(Duration::from_secs(15)).await;
    running.store(false, Ordering::SeqCst);
    load.await.unwrap();
    assert!(status.success(), "exit status {status:?}:\n{}", relay.log());
    let log = relay.log();
    let received = events_received_at_stop(&log);
    assert!(received >= 2000, "{received}");
    assert!(log.contains("every queued delivery was sent"), "{log}");

    // Every event the relay took from the camera before it stopped was delivered.
    while !(0..received).all(|n| got.contains(&n)) {
        let Some(m) = sub.try_next(Duration::from_secs(10)).await else {
            let missing: Vec<u64> = (0..received).filter(|n| !got.contains(n)).collect();
            panic!(
                "{} of {received} never arrived: {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        };
        got.insert(m.payload.parse().unwrap());
    }

    // A restart picks up where it was: new events flow again.
    relay.spawn();
    relay
        .wait_metric("edgerelay_source_state", r#"camera="lobby""#, 1.0)
        .await;
    assert!(
        emu.wait_for_clients(1, T).await,
        "relay never subscribed again"
    );
    let first = next.load(Ordering::SeqCst) + 1_000_000;
    for n in first..first + 100 {
        emu.emit(&numbered(n));
    }
    let want: BTreeSet<u64> = (first..first + 100).collect();
    let mut after = BTreeSet::new();
    while !want.is_subset(&after) {
        let m = sub.next_event(T).await;
        after.insert(m.payload.parse::<u64>().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_broker_down_keeps_the_queue_and_sends_it_after_restart() {
    let mut broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = load_config(&emu, &broker, "").replace(
        "data_dir = \"{data_dir}\"",
        "data_dir = \"{data_dir}\"\nhttp = \"{http}\"\nshutdown_timeout = \"1s\"",
    );
    broker.stop();
    let mut relay = RelayProcess::start_with_env(&cfg, &[]);
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    for n in 0..50 {
        emu.emit(&numbered(n));
    }
    relay
        .wait_metric("edgerelay_outbox_depth", r#"destination="broker""#, 50.0)
        .await;
    let m = relay
        .wait_metric(
            "edgerelay_destination_connected",
            r#"destination="broker""#,
            0.0,
        )
        .await;
    assert!(
        metric(
            &m,
            "edgerelay_outbox_oldest_age_seconds",
            r#"destination="broker""#
        )
        .is_some(),
        "{m}"
    );

    let started = Instant::now();
    let status = relay.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        relay.log().contains("the rest stays in the outbox"),
        "{}",
        relay.log()
    );

    broker.restart().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    relay.spawn();
    let mut got = BTreeSet::new();
    while got.len() < 50 {
        got.insert(sub.next_event(T).await.payload.parse::<u64>().unwrap());
    }
    assert_eq!(got, (0..50).collect());
    relay
        .wait_metric("edgerelay_outbox_depth", r#"destination="broker""#, 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_the_environment_never_reach_log_status_or_metrics() {
    const CAM_SECRET: &str = "cam-Secr3t-7d1f";
    const MQTT_SECRET: &str = "mqtt-Secr3t-94ab";
    let broker = Mosquitto::start_with_users(&[("relay", MQTT_SECRET), ("sub", "sub-pass")]).await;
    let mut sub = Subscriber::connect_as(broker.port, "ops/#", Some(("sub", "sub-pass"))).await;
    let emu = Emulator::start(EmulatorConfig {
        password: CAM_SECRET.into(),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    // A second camera refuses the password: its error reaches the log and /status too.
    let refusing = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let gate = format!(
        "[[camera]]\nname = \"gate\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"${{OPS_CAM_PASSWORD}}\"\n[destination.broker]",
        refusing.base_url()
    );
    let cfg = ops_config(&emu, &broker)
        .replace(
            "password = \"fixture-pass\"",
            "password = \"${OPS_CAM_PASSWORD}\"",
        )
        .replace("[destination.broker]", &gate)
        .replace(
            "client_id = \"ops-relay\"",
            "client_id = \"ops-relay\"\nusername = \"relay\"\npassword = \"${OPS_MQTT_PASSWORD}\"",
        );
    let mut relay = RelayProcess::start_with_env(
        &cfg,
        &[
            ("OPS_CAM_PASSWORD", CAM_SECRET),
            ("OPS_MQTT_PASSWORD", MQTT_SECRET),
            ("EDGERELAY_LOG_FORMAT", "json"),
        ],
    );
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    emu.emit_fixture_line(1);
    assert_eq!(sub.next_event(T).await.topic, "ops/lobby");
    relay
        .wait_metric(
            "edgerelay_deliveries_acked_total",
            r#"destination="broker""#,
            1.0,
        )
        .await;

    relay
        .wait_metric("edgerelay_source_state", r#"camera="gate""#, 2.0)
        .await;

    let (_, status) = relay.get("/status").await.unwrap();
    let gate_row = status
        .lines()
        .find(|l| l.contains("<td>gate</td>"))
        .expect(&status);
    assert!(gate_row.contains(">retrying<"), "{gate_row}");
    // Why, in the error cell: the camera's refusal, counted since the last success.
    assert!(
        gate_row.contains("<td class=\"last-error\"><span class=\"bad\"")
            && gate_row.contains("since the last success"),
        "{gate_row}"
    );
    let (_, metrics) = relay.get("/metrics").await.unwrap();
    assert!(relay.terminate(Duration::from_secs(15)).await.success());
    let log = relay.log();
    assert!(
        log.lines().any(|l| l.starts_with('{')),
        "JSON log expected:\n{log}"
    );
    for (what, text) in [("log", &log), ("/status", &status), ("/metrics", &metrics)] {
        for secret in [CAM_SECRET, MQTT_SECRET] {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
        }
    }
}

/// Cameras by name and emulator, a `broker` destination the relay may not log in to yet, and
/// optionally a `dead` one nothing listens for.
fn reload_config(cams: &[(&str, &Emulator)], broker: &Mosquitto, dead: Option<u16>) -> String {
    let mut c = String::from("[relay]\ndata_dir = \"{data_dir}\"\nhttp = \"{http}\"\n");
    for (name, emu) in cams {
        c += &format!(
            "[[camera]]\nname = \"{name}\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\n",
            emu.base_url()
        );
    }
    c += &format!(
        "[destination.broker]\nkind = \"mqtt\"\navailability_topic = \"\"\nurl = \"{}\"\nusername = \"relay\"\npassword = \"r\"\n",
        broker.url()
    );
    let mut to = String::from("\"broker\"");
    if let Some(port) = dead {
        c += &format!(
            "[destination.dead]\nkind = \"mqtt\"\navailability_topic = \"\"\nurl = \"mqtt://127.0.0.1:{port}\"\n"
        );
        to += ", \"dead\"";
    }
    c + &format!(
        "[[rule]]\nname = \"all\"\nto = [{to}]\nmqtt_topic = \"ops/{{camera}}\"\npayload = \"{{data.n}}\"\n"
    )
}

#[tokio::test]
async fn sighup_reload_adds_and_removes_cameras_and_destinations_without_losing_deliveries() {
    let mut broker = Mosquitto::start_with_users(&[("watcher", "w")]).await;
    let mut sub = Subscriber::connect_as(broker.port, "ops/#", Some(("watcher", "w"))).await;
    let lobby = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let yard = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dead = common::free_port();
    let relay = RelayProcess::start(&reload_config(&[("lobby", &lobby)], &broker, Some(dead)));
    assert!(lobby.wait_for_clients(1, T).await);
    for n in 0..50 {
        lobby.emit(&numbered(n));
    }
    relay
        .wait_metric("edgerelay_outbox_depth", r#"destination="broker""#, 50.0)
        .await;

    // A broken config is refused; the running one stays.
    relay.rewrite_config("[relay]\ndata_dir = \"{data_dir}\"\nbogus = 1\n");
    relay.hup();
    relay.wait_for_log("reload refused", T).await;
    assert!(
        relay.log().contains("relay.bogus"),
        "the check error names the key:\n{}",
        relay.log()
    );
    relay.poll("/readyz", "ready", |_| true).await;

    // Add a camera, remove a destination: its queue stays on disk and is reported.
    relay.rewrite_config(&reload_config(
        &[("lobby", &lobby), ("yard", &yard)],
        &broker,
        None,
    ));
    relay.hup();
    relay.wait_for_log("reloaded", T).await;
    let log = relay.log();
    let removed = log
        .lines()
        .find(|l| l.contains("destination removed"))
        .expect("reported");
    assert!(
        removed.contains("dead") && removed.contains("queued=50"),
        "{removed}"
    );
    assert!(yard.wait_for_clients(1, T).await, "the new camera streams");
    let deadline = tokio::time::Instant::now() + T;
    while lobby.counters().configures_ok < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        lobby.wait_for_clients(1, Duration::from_millis(100)).await;
    }
    for n in 50..60 {
        yard.emit(&numbered(n));
    }
    // On the new connection the lobby camera reported its input's state again (n = 49).
    relay
        .wait_metric("edgerelay_outbox_depth", r#"destination="broker""#, 61.0)
        .await;

    // The broker lets the relay in: everything queued before and after the reload, in order.
    broker.add_user("relay", "r");
    let mut got = Vec::new();
    while got.len() < 61 {
        got.push(sub.next(T).await.payload.parse::<u64>().unwrap());
    }
    let want: Vec<u64> = (0..50).chain([49]).chain(50..60).collect();
    assert_eq!(got, want);
}

/// One status event of the relay about a destination: (topic, destination, data).
fn status_event(payload: &str) -> (String, String, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap();
    (
        v["topic"].as_str().unwrap().to_string(),
        v["message"]["source"]["destination"]
            .as_str()
            .unwrap()
            .to_string(),
        v["message"]["data"].clone(),
    )
}

/// Reads the status topic until `want` matches an event; returns every event read.
async fn until_status(
    sub: &mut Subscriber,
    relay: &RelayProcess,
    what: &str,
    want: impl Fn(&str, &str, &serde_json::Value) -> bool,
) -> Vec<(String, String, serde_json::Value)> {
    let mut seen = Vec::new();
    loop {
        let Some(m) = sub.try_next(T).await else {
            panic!(
                "no status event {what}; got {seen:#?}\nlog:\n{}",
                relay.log()
            );
        };
        assert_eq!(m.topic, "edgerelay/status");
        assert_eq!(m.qos, 1);
        let (topic, dest, data) = status_event(&m.payload);
        let hit = want(&topic, &dest, &data);
        seen.push((topic, dest, data));
        if hit {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_its_own_trouble_on_the_status_topic() {
    // `cloud` is refused until the test lets it in; `site` carries the status events.
    let mut broker = Mosquitto::start_with_users(&[("watcher", "w"), ("site", "s")]).await;
    let mut status =
        Subscriber::connect_as(broker.port, "edgerelay/status", Some(("watcher", "w"))).await;
    let mut load = Subscriber::connect_as(broker.port, "load/#", Some(("watcher", "w"))).await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    // One load delivery as the outbox frames it (24 bytes around the encoded record).
    let record = 24
        + Delivery {
            topic: "load/lobby".into(),
            payload: b"10".to_vec(),
            qos: 1,
            retain: false,
            created_ms: 0,
            camera: "lobby".into(),
        }
        .encode()
        .len();
    let config = format!(
        r#"{}[destination.cloud]
kind = "mqtt"
availability_topic = ""
url = "{url}"
client_id = "cloud-relay"
username = "relay"
password = "r"
buffer = {{ max_bytes = "{}", when_full = "reject_new" }}
[destination.site]
kind = "mqtt"
availability_topic = ""
url = "{url}"
client_id = "site-relay"
username = "site"
password = "s"
[[rule]]
name = "load"
to = ["cloud"]
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
"#,
        relay_and_camera(&emu),
        10 * record,
        url = broker.url(),
    );
    let relay = RelayProcess::start(&config);
    assert!(emu.wait_for_clients(1, T).await);
    // Cloud's buffer fills at once (before its outage is even reported, so no status event
    // takes room in it: they go only where there is room).
    for n in 10..35 {
        emu.emit(&numbered(n));
    }
    relay
        .wait_metric(
            "edgerelay_outbox_rejected_total",
            r#"destination="cloud""#,
            15.0,
        )
        .await;
    let seen = until_status(&mut status, &relay, "fill high", |t, _, data| {
        t == "EdgeRelay/OutboxFill" && data["high"] == "1"
    })
    .await;
    let fill = &seen.last().unwrap().2;
    assert_eq!(
        (fill["percent"].as_str(), fill["depth"].as_str()),
        (Some("100"), Some("10"))
    );
    // Never connected for a few seconds: down.
    let mut seen = [
        seen,
        until_status(&mut status, &relay, "cloud down", |t, d, data| {
            t == "EdgeRelay/DestinationConnection" && d == "cloud" && data["connected"] == "0"
        })
        .await,
    ]
    .concat();
    assert!(
        seen.iter().all(|(_, d, _)| d == "cloud"),
        "site itself is fine: {seen:#?}"
    );
    // Every drop reported, exactly, in one report or a few.
    let mut reported = 0;
    let mut drops = std::mem::take(&mut seen);
    loop {
        for (t, d, data) in drops.drain(..) {
            if t == "EdgeRelay/Drops" {
                assert_eq!(d, "cloud");
                reported += data["dropped"].as_str().unwrap().parse::<u64>().unwrap();
                assert_eq!(
                    data["total"].as_str().unwrap().parse::<u64>().unwrap(),
                    reported
                );
            }
        }
        if reported == 15 {
            break;
        }
        drops = until_status(&mut status, &relay, "drops", |t, _, _| {
            t == "EdgeRelay/Drops"
        })
        .await;
    }

    // Let cloud in: it is back, its backlog drains, the fill is normal again.
    broker.add_user("relay", "r");
    let seen = until_status(&mut status, &relay, "fill normal", |t, _, data| {
        t == "EdgeRelay/OutboxFill" && data["high"] == "0"
    })
    .await;
    let back = seen
        .iter()
        .find(|(t, _, data)| t == "EdgeRelay/DestinationConnection" && data["connected"] == "1")
        .unwrap_or_else(|| panic!("no up event before the fill went normal: {seen:#?}"));
    let gap: i64 = back.2["gap_ms"].as_str().unwrap().parse().unwrap();
    assert!(gap >= 3_000, "{gap}");
    for n in 10..20 {
        assert_eq!(load.next(T).await.payload, n.to_string());
    }
    assert!(relay.log().contains("destination down"), "{}", relay.log());
}
