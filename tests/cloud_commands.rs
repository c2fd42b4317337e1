//! Commands from the clouds, over each destination's own connection: Mosquitto with a test CA
//! stands in for a TLS broker, AWS IoT Core (mutual TLS) and Azure IoT Hub (direct methods and
//! cloud-to-device messages); the camera emulator answers the VAPIX virtual-input calls.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::{Mosquitto, RelayProcess, Subscriber, free_port};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(20);

/// Mosquitto with its plain listener (the test's clients) plus `tls` (server certificate from
/// the test CA, any login) and `mtls` (client certificate required); every subscription logged.
async fn broker(pki: &Pki) -> (Mosquitto, u16, u16) {
    let (tls, mtls) = (free_port(), free_port());
    let files = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let broker = Mosquitto::start_with(&format!(
        "log_type all\nlistener {tls} 127.0.0.1\n{files}listener {mtls} 127.0.0.1\n{files}require_certificate true\n"
    ))
    .await;
    assert!(common::wait_for_port(tls, T).await && common::wait_for_port(mtls, T).await);
    (broker, tls, mtls)
}

/// Waits until the broker logged `needle` (its record of a subscription).
async fn wait_for_broker_log(broker: &Mosquitto, needle: &str, times: usize) {
    let end = Instant::now() + T;
    while broker.log().matches(needle).count() < times {
        assert!(Instant::now() < end, "no {needle:?} in:\n{}", broker.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn camera(emu: &Emulator) -> String {
    format!(
        "[[camera]]\nname = \"lobby\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\n",
        emu.base_url()
    )
}

/// Publishes `payload` on `topic` and returns the next message `replies` sees.
async fn call(
    broker: &Mosquitto,
    replies: &mut Subscriber,
    topic: &str,
    payload: &str,
) -> (String, String) {
    common::publish_once(broker.port, topic, payload).await;
    let m = replies.next(T).await;
    (m.topic, m.payload)
}

#[tokio::test]
async fn commands_over_mqtts_and_aws_iot_core_toggle_the_virtual_input_and_are_answered() {
    let pki = Pki::new();
    let (broker, tls, mtls) = broker(&pki).await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let ca = pki.path("ca.pem");
    let config = format!(
        r#"[relay]
data_dir = "{{data_dir}}"
{cam}
[destination.site]
kind = "mqtt"
url = "mqtts://localhost:{tls}"
ca_file = "{ca}"
client_id = "site-relay"
[destination.aws]
kind = "aws-iot-core"
endpoint = "127.0.0.1"
port = {mtls}
thing_name = "lobby-thing"
cert_file = "{cert}"
key_file = "{key}"
ca_file = "{ca}"
[[command]]
destination = "site"
camera = "lobby"
action = "virtual_input"
topic = "site/lobby/cmd"
reply_topic = "site/lobby/reply"
[[command]]
destination = "aws"
camera = "lobby"
action = "virtual_input"
topic = "things/lobby/cmd"
reply_topic = "things/lobby/reply"
"#,
        cam = camera(&emu),
        cert = pki.path("client.pem"),
        key = pki.path("client.key"),
    );
    let mut replies = Subscriber::connect(broker.port, "+/lobby/reply").await;
    let relay = RelayProcess::start(&config);
    wait_for_broker_log(&broker, "site-relay 1 site/lobby/cmd", 1).await;
    wait_for_broker_log(&broker, "lobby-thing 1 things/lobby/cmd", 1).await;

    let on = r#"{"port":2,"active":true}"#;
    assert_eq!(
        call(&broker, &mut replies, "site/lobby/cmd", on).await,
        (
            "site/lobby/reply".into(),
            r#"{"ok":true,"changed":true}"#.into()
        )
    );
    // Over the AWS thing's mutual-TLS connection: already active, so unchanged.
    assert_eq!(
        call(&broker, &mut replies, "things/lobby/cmd", on).await,
        (
            "things/lobby/reply".into(),
            r#"{"ok":true,"changed":false}"#.into()
        )
    );
    assert_eq!(
        call(
            &broker,
            &mut replies,
            "things/lobby/cmd",
            r#"{"port":2,"active":false}"#
        )
        .await,
        (
            "things/lobby/reply".into(),
            r#"{"ok":true,"changed":true}"#.into()
        )
    );
    assert_eq!(
        call(&broker, &mut replies, "site/lobby/cmd", r#"{"port":2}"#).await,
        (
            "site/lobby/reply".into(),
            r#"{"ok":false,"error":"missing \"active\""}"#.into()
        )
    );
    // No second, plain connection: only the two destinations' client ids ever connected.
    let log = broker.log();
    let ids: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split(" as ").nth(1)?.split_whitespace().next())
        .filter(|id| !id.starts_with("test-"))
        .collect();
    assert!(
        ids.contains(&"site-relay") && ids.contains(&"lobby-thing"),
        "{ids:?}"
    );
    assert!(
        ids.iter()
            .all(|id| ["site-relay", "lobby-thing"].contains(id)),
        "{ids:?}\n{}",
        relay.log()
    );
}

#[tokio::test]
async fn azure_direct_methods_and_c2d_messages_run_commands_across_sas_renewals() {
    use edgerelay::clock::SystemClock;
    use edgerelay::commands::{Camera, link, serve};
    use edgerelay::outbox::{DeadLetters, Outbox, OutboxOptions, SharedOutbox};
    use edgerelay::sinks::mqtt::{MqttSink, SinkStats};
    use edgerelay::sources::status::SourceStatus;
    use edgerelay::sources::vapix::VapixClient;

    let pki = Pki::new();
    let (broker, tls, _) = broker(&pki).await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let text = format!(
        r#"{cam}
[destination.hub]
kind = "azure-iot-hub"
connection_string = "HostName=localhost;DeviceId=lobby-cam;SharedAccessKey=c2VjcmV0LWRldmljZS1rZXk="
ca_file = "{ca}"
sas_ttl = "2s"
[[command]]
destination = "hub"
camera = "lobby"
action = "virtual_input"
method = "lobby_virtual_input"
[[command]]
destination = "hub"
camera = "lobby"
action = "virtual_input"
method = "lobby_once_an_hour"
max_rate = "1/h"
"#,
        cam = camera(&emu),
        ca = pki.path("ca.pem"),
    );
    let cfg = edgerelay::config::load_str(&text, "c.toml").unwrap();
    let clock = Arc::new(SystemClock);
    // The destination's own code from config; only the port is the stand-in's, not 8883.
    let mut sink = MqttSink::from_config(
        "hub".into(),
        &cfg.destination["hub"],
        false,
        clock.clone(),
        "0123456789abcdef".into(),
    )
    .unwrap();
    sink.config.url = format!("mqtts://localhost:{tls}");
    let mut linked = link(&cfg.command).unwrap();
    sink.commands = linked.links.remove("hub");
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(&dir.path().join("outbox"), OutboxOptions::default()).unwrap();
    let dead = DeadLetters::open(dir.path(), "hub").unwrap();
    let stats = Arc::new(SinkStats::default());
    let sink_task = tokio::spawn(sink.run(SharedOutbox::new(outbox), dead, stats.clone()));
    let vapix = VapixClient::new(
        emu.base_url().parse().unwrap(),
        Some("bridge".into()),
        Some("fixture-pass".into()),
        &Default::default(),
    )
    .unwrap();
    // No source reads the catalog here: the worker reads it itself for the port count.
    let status = Arc::new(SourceStatus::new("lobby"));
    let camera = Camera {
        vapix,
        status: status.clone(),
        clock: clock.clone(),
    };
    let worker_tasks: Vec<_> = linked
        .workers
        .into_iter()
        .map(|w| tokio::spawn(serve(w, camera.clone())))
        .collect();

    let mut responses = Subscriber::connect(broker.port, "$iothub/methods/res/#").await;
    wait_for_broker_log(
        &broker,
        "lobby-cam 1 devices/lobby-cam/messages/devicebound/#",
        1,
    )
    .await;
    let method = |rid: u32| format!("$iothub/methods/POST/lobby_virtual_input/?$rid={rid}");
    assert_eq!(
        call(
            &broker,
            &mut responses,
            &method(41),
            r#"{"port":1,"active":true}"#
        )
        .await,
        (
            "$iothub/methods/res/200/?$rid=41".into(),
            r#"{"ok":true,"changed":true}"#.into()
        )
    );
    assert_eq!(
        call(
            &broker,
            &mut responses,
            &method(42),
            r#"{"port":1,"active":"maybe"}"#
        )
        .await,
        (
            "$iothub/methods/res/400/?$rid=42".into(),
            r#"{"ok":false,"error":"\"active\" must be true or false"}"#.into()
        )
    );
    // The emulator takes ports up to 32; its catalog lists 8, which the worker read.
    assert_eq!(
        call(
            &broker,
            &mut responses,
            &method(142),
            r#"{"port":9,"active":true}"#
        )
        .await,
        (
            "$iothub/methods/res/400/?$rid=142".into(),
            r#"{"ok":false,"error":"\"port\" must be from 1 to 8 (the camera's virtual inputs), not 9"}"#
                .into()
        )
    );
    assert_eq!(status.virtual_inputs(), Some(8));
    // Over max_rate: 429.
    let once = |rid: u32| format!("$iothub/methods/POST/lobby_once_an_hour/?$rid={rid}");
    assert_eq!(
        call(
            &broker,
            &mut responses,
            &once(50),
            r#"{"port":5,"active":true}"#
        )
        .await,
        (
            "$iothub/methods/res/200/?$rid=50".into(),
            r#"{"ok":true,"changed":true}"#.into()
        )
    );
    assert_eq!(
        call(
            &broker,
            &mut responses,
            &once(51),
            r#"{"port":5,"active":false}"#
        )
        .await,
        (
            "$iothub/methods/res/429/?$rid=51".into(),
            r#"{"ok":false,"error":"rate limited: this command takes at most 1/h"}"#.into()
        )
    );
    assert_eq!(emu.counters().virtual_input_calls, 2);
    assert_eq!(
        call(
            &broker,
            &mut responses,
            "$iothub/methods/POST/unlock_all/?$rid=43",
            "{}"
        )
        .await,
        (
            "$iothub/methods/res/404/?$rid=43".into(),
            r#"{"ok":false,"error":"no command for method \"unlock_all\""}"#.into()
        )
    );
    // A C2D message naming the method runs it (no response topic exists for C2D)...
    common::publish_once(
        broker.port,
        "devices/lobby-cam/messages/devicebound/%24.mid=9&%24.to=%2Fdevices%2Flobby-cam%2Fmessages%2Fdevicebound&method=lobby_virtual_input",
        r#"{"port":1,"active":false}"#,
    )
    .await;
    // ... which the next call sees: the input is already off. (Commands run in arrival order.)
    assert_eq!(
        call(
            &broker,
            &mut responses,
            &method(44),
            r#"{"port":1,"active":false}"#
        )
        .await,
        (
            "$iothub/methods/res/200/?$rid=44".into(),
            r#"{"ok":true,"changed":false}"#.into()
        )
    );
    // SAS renewal (2 s tokens) reconnects: the subscriptions are made again on each connect.
    wait_for_broker_log(&broker, "lobby-cam 1 $iothub/methods/POST/#", 2).await;
    assert!(stats.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert_eq!(
        call(
            &broker,
            &mut responses,
            &method(45),
            r#"{"port":1,"active":true}"#
        )
        .await,
        (
            "$iothub/methods/res/200/?$rid=45".into(),
            r#"{"ok":true,"changed":true}"#.into()
        )
    );
    sink_task.abort();
    for t in worker_tasks {
        t.abort();
    }
}
