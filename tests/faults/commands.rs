//! Faults of a fleet and of the downlink: boxes deployed from one config share a broker, and
//! commands arrive from the cloud. Each test runs the relay binary against Mosquitto.

use std::time::Duration;

use crate::common::{Mosquitto, RelayProcess, Subscriber};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(30);

/// One config for every box: no `client_id`, so each box's default applies.
fn fleet_config(emu: &Emulator, broker: &Mosquitto) -> String {
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
connect_message = {{ topic = "fleet/online", message = "up", qos = 1 }}
[[rule]]
name = "io"
topic = "tns1:Device/tnsaxis:IO/VirtualInput"
to = ["broker"]
"#,
        emu.base_url(),
        broker.url()
    )
}

#[tokio::test]
async fn two_relays_with_one_config_both_stay_connected_to_one_broker() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut online = Subscriber::connect(broker.port, "fleet/online").await;
    let config = fleet_config(&emu, &broker);
    let _a = RelayProcess::start_with_env(&config, &[("EDGERELAY_HOSTNAME", "box-a")]);
    let _b = RelayProcess::start_with_env(&config, &[("EDGERELAY_HOSTNAME", "box.b")]);
    // Each connection says "up" once; a relay kicked off by a twin would reconnect within its
    // first back-off (about a second) and say it again.
    for _ in 0..2 {
        assert_eq!(online.next(T).await.payload, "up", "{}", broker.log());
    }
    online.expect_nothing(Duration::from_secs(4)).await;
    let log = broker.log();
    assert!(log.contains(" as edgerelay-box-a-broker "), "{log}");
    assert!(log.contains(" as edgerelay-box-b-broker "), "{log}");
    assert!(!log.contains("already connected"), "{log}");

    // The host name is what keeps them apart: a third box named like the first takes over
    // its client id.
    let _c = RelayProcess::start_with_env(&config, &[("EDGERELAY_HOSTNAME", "box-a")]);
    assert_eq!(online.next(T).await.payload, "up");
    let end = tokio::time::Instant::now() + T;
    while !broker
        .log()
        .contains("Client edgerelay-box-a-broker already connected")
    {
        assert!(tokio::time::Instant::now() < end, "{}", broker.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the embedded broker answered one connection attempt.
async fn login_to(port: u16, login: Option<(&str, &str)>) -> Result<(), String> {
    use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};
    let mut opts = MqttOptions::new(
        format!("probe-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    let (_client, mut el) = AsyncClient::new(opts, 10);
    tokio::time::timeout(T, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) if a.code == ConnectReturnCode::Success => {
                    return Ok(());
                }
                Ok(Event::Incoming(Packet::ConnAck(a))) => return Err(format!("{:?}", a.code)),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("the broker neither admitted nor refused the client")
}

#[tokio::test]
async fn the_embedded_broker_refuses_a_client_with_a_wrong_password() {
    let port = crate::common::free_port();
    let config = format!(
        r#"[relay]
data_dir = "{{data_dir}}"
broker = "127.0.0.1:{port}"
broker_username = "site"
broker_password = "${{BROKER_PASSWORD}}"
[destination.local]
kind = "mqtt"
url = "mqtt://127.0.0.1:{port}"
username = "site"
password = "${{BROKER_PASSWORD}}"
"#
    );
    let relay = RelayProcess::start_with_env(&config, &[("BROKER_PASSWORD", "s3cret")]);
    // The relay's own destination logs in with the right password.
    relay.wait_for_log("broker connected", T).await;
    assert_eq!(login_to(port, Some(("site", "s3cret"))).await, Ok(()));
    assert!(login_to(port, Some(("site", "guess"))).await.is_err());
    assert!(login_to(port, Some(("root", "s3cret"))).await.is_err());
    assert!(login_to(port, None).await.is_err());
    assert!(!relay.log().contains("s3cret"), "{}", relay.log());
}

/// A relay with one camera and the given `[[command]]`s on an mqtt destination, `/metrics` on.
fn command_config(emu: &Emulator, broker: &Mosquitto, commands: &str) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
http = "{{http}}"
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
[destination.site]
kind = "mqtt"
url = "{}"
client_id = "site-relay"
availability_topic = ""
{commands}"#,
        emu.base_url(),
        broker.url()
    )
}

/// One `virtual_input` command on `cmd/{name}` answering on `cmd/{name}/reply`.
fn command(name: &str, extra: &str) -> String {
    format!(
        "[[command]]\ndestination = \"site\"\ncamera = \"lobby\"\naction = \"virtual_input\"\ntopic = \"cmd/{name}\"\nreply_topic = \"cmd/{name}/reply\"\n{extra}"
    )
}

/// Publishes every `(topic, payload)` in order from one client (QoS 1), and returns once the
/// broker acknowledged them all.
async fn publish_all(port: u16, messages: &[(&str, &str)], retain: bool) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(
        format!("test-cmd-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(opts, messages.len() + 1);
    for (topic, payload) in messages {
        client
            .publish(
                *topic,
                QoS::AtLeastOnce,
                retain,
                payload.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(T, async {
        while acked < messages.len() {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = el.poll().await {
                acked += 1;
            }
        }
    })
    .await
    .expect("the broker did not acknowledge every command");
}

/// `edgerelay_commands_total{command="N",result="R"}` for each result of `want`, polled until
/// they all equal it (exact counts: a count that overshoots never matches).
async fn wait_command_counts(relay: &RelayProcess, command: usize, want: &[(&str, u64)]) {
    let url = format!("{}/metrics", relay.http);
    let end = tokio::time::Instant::now() + T;
    let mut last = String::new();
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && let Ok(body) = r.text().await
        {
            let value = |result: &str| {
                let prefix = format!(
                    "edgerelay_commands_total{{command=\"{command}\",result=\"{result}\"}} "
                );
                body.lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if want.iter().all(|(r, n)| value(r) == Some(*n)) {
                return;
            }
            last = body;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "never {want:?} for command {command}:\n{}\nlog:\n{}",
            last.lines()
                .filter(|l| l.contains("commands"))
                .collect::<Vec<_>>()
                .join("\n"),
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const OK_CHANGED: &str = r#"{"ok":true,"changed":true}"#;

#[tokio::test]
async fn a_retained_command_is_refused_not_executed_across_two_broker_restarts() {
    let mut broker = Mosquitto::start_persistent().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    // Left on the broker before the relay ever connects: replayed on every subscribe.
    publish_all(
        broker.port,
        &[("cmd/door", r#"{"port":1,"active":true}"#)],
        true,
    )
    .await;
    let mut replies = Subscriber::connect(broker.port, "cmd/door/reply").await;
    let relay = RelayProcess::start(&command_config(&emu, &broker, &command("door", "")));
    let m = replies.next(T).await;
    assert_eq!(
        m.payload,
        r#"{"ok":false,"error":"retained message not executed: send commands without the retain flag"}"#
    );
    wait_command_counts(&relay, 0, &[("retained", 1), ("ok", 0)]).await;
    for replays in [2, 3] {
        broker.stop_graceful();
        broker.restart().await;
        wait_command_counts(&relay, 0, &[("retained", replays), ("ok", 0)]).await;
    }
    assert_eq!(emu.counters().virtual_input_calls, 0);
    assert_eq!(
        relay.log().matches("retained message not executed").count(),
        1,
        "logged once:\n{}",
        relay.log()
    );
    // The same command sent live runs, and changes the input: the retained one never ran.
    let mut replies = Subscriber::connect(broker.port, "cmd/door/reply").await;
    publish_all(
        broker.port,
        &[("cmd/door", r#"{"port":1,"active":true}"#)],
        false,
    )
    .await;
    assert_eq!(replies.next(T).await.payload, OK_CHANGED);
    assert_eq!(emu.counters().virtual_input_calls, 1);
    wait_command_counts(&relay, 0, &[("retained", 3), ("ok", 1)]).await;
}

#[tokio::test]
async fn a_burst_over_max_rate_runs_exactly_max_rate_commands() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut replies = Subscriber::connect(broker.port, "cmd/gate/reply").await;
    let relay = RelayProcess::start(&command_config(
        &emu,
        &broker,
        &command("gate", "max_rate = \"5/min\"\n"),
    ));
    relay.wait_for_log("listening for commands", T).await;
    let payloads: Vec<String> = (0..25)
        .map(|i| format!(r#"{{"port":1,"active":{}}}"#, i % 2 == 0))
        .collect();
    let burst: Vec<(&str, &str)> = payloads.iter().map(|p| ("cmd/gate", p.as_str())).collect();
    publish_all(broker.port, &burst, false).await;
    let mut got = Vec::new();
    for _ in 0..25 {
        got.push(replies.next(T).await.payload);
    }
    // In arrival order: the first five ran (each toggled the input), the other 20 refused.
    assert!(got[..5].iter().all(|p| p == OK_CHANGED), "{got:#?}");
    assert!(
        got[5..].iter().all(
            |p| p == r#"{"ok":false,"error":"rate limited: this command takes at most 5/min"}"#
        ),
        "{got:#?}"
    );
    replies.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(emu.counters().virtual_input_calls, 5);
    wait_command_counts(
        &relay,
        0,
        &[
            ("ok", 5),
            ("rate_limited", 20),
            ("bad_request", 0),
            ("busy", 0),
        ],
    )
    .await;
    // Logged once per burst, not once per command.
    let log = relay.log();
    assert!(
        log.matches("command ran").count() + log.matches("command refused").count() <= 2,
        "{log}"
    );
}

#[tokio::test]
async fn bad_payloads_get_an_error_reply_and_run_nothing() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut replies = Subscriber::connect(broker.port, "cmd/door/reply").await;
    let relay = RelayProcess::start(&command_config(&emu, &broker, &command("door", "")));
    // Streaming: the relay has read the catalog, which lists virtual inputs up to 8.
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    relay.wait_for_log("listening for commands", T).await;
    let cases = [
        (
            r#"{"port":0,"active":true}"#,
            r#""port" must be 1 or more, not 0"#,
        ),
        // The emulator itself takes ports up to 32: the relay refuses by the catalog's count.
        (
            r#"{"port":9,"active":true}"#,
            r#""port" must be from 1 to 8 (the camera's virtual inputs), not 9"#,
        ),
        (
            r#"{"port":1,"active":"yes"}"#,
            r#""active" must be true or false"#,
        ),
        (
            r#"{"port":1,"active":true,"unlock":"all"}"#,
            r#"unknown field "unlock": a virtual input command takes "port", "active" and "duration""#,
        ),
        (
            r#"{"port":1,"active":true,"duration":100000}"#,
            r#""duration" must be from 1 to 86400 seconds, not 100000"#,
        ),
    ];
    for (payload, error) in cases {
        publish_all(broker.port, &[("cmd/door", payload)], false).await;
        let reply: serde_json::Value =
            serde_json::from_str(&replies.next(T).await.payload).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"ok": false, "error": error}),
            "{payload}"
        );
    }
    assert_eq!(emu.counters().virtual_input_calls, 0);
    wait_command_counts(&relay, 0, &[("bad_request", 5), ("ok", 0)]).await;
    // A good one still runs.
    publish_all(
        broker.port,
        &[("cmd/door", r#"{"port":8,"active":true}"#)],
        false,
    )
    .await;
    assert_eq!(replies.next(T).await.payload, OK_CHANGED);
    assert_eq!(emu.counters().virtual_input_calls, 1);
}

#[tokio::test]
async fn commands_to_one_camera_run_one_at_a_time_in_arrival_order() {
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut replies = Subscriber::connect(broker.port, "cmd/+/reply").await;
    // Two commands on one camera: "on" switches port 2 on, "off" switches it off.
    let commands = format!(
        "{}{}",
        command("on", "max_rate = \"100/s\"\n"),
        command("off", "max_rate = \"100/s\"\n")
    );
    let relay = RelayProcess::start(&command_config(&emu, &broker, &commands));
    relay.wait_for_log("listening for commands", T).await;
    let burst: Vec<(&str, &str)> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                ("cmd/on", r#"{"port":2,"active":true}"#)
            } else {
                ("cmd/off", r#"{"port":2,"active":false}"#)
            }
        })
        .collect();
    publish_all(broker.port, &burst, false).await;
    // Each one changes the input only if the one before it ran first.
    for i in 0..20 {
        let m = replies.next(T).await;
        let want = if i % 2 == 0 {
            "cmd/on/reply"
        } else {
            "cmd/off/reply"
        };
        assert_eq!(
            (m.topic.as_str(), m.payload.as_str()),
            (want, OK_CHANGED),
            "reply {i}"
        );
    }
    assert_eq!(emu.counters().virtual_input_calls, 20);
    wait_command_counts(&relay, 0, &[("ok", 10)]).await;
    wait_command_counts(&relay, 1, &[("ok", 10)]).await;
}

#[tokio::test]
async fn a_qos1_command_is_acknowledged_only_after_its_reply() {
    let broker = Mosquitto::start_with("log_type all\n").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut replies = Subscriber::connect(broker.port, "cmd/door/reply").await;
    let relay = RelayProcess::start(&command_config(&emu, &broker, &command("door", "")));
    relay.wait_for_log("listening for commands", T).await;
    publish_all(
        broker.port,
        &[("cmd/door", r#"{"port":3,"active":true}"#)],
        false,
    )
    .await;
    assert_eq!(replies.next(T).await.payload, OK_CHANGED);
    // The broker's own record: the command went out to the relay as message id N; the relay's
    // PUBACK for N comes after its reply (the reply is published first, then the ack). An
    // acknowledgement on arrival would come before the reply.
    let end = tokio::time::Instant::now() + T;
    loop {
        let log = broker.log();
        let lines: Vec<&str> = log.lines().collect();
        let sent = lines
            .iter()
            .position(|l| l.contains("Sending PUBLISH to site-relay") && l.contains("'cmd/door'"));
        let mid = sent.and_then(|i| {
            let m = lines[i].split(", m").nth(1)?;
            m.split(',').next()?.parse::<u32>().ok()
        });
        let reply = lines.iter().position(|l| {
            l.contains("Received PUBLISH from site-relay") && l.contains("'cmd/door/reply'")
        });
        let ack = mid.and_then(|m| {
            lines.iter().position(|l| {
                l.contains("Received PUBACK from site-relay") && l.contains(&format!("(Mid: {m},"))
            })
        });
        if let (Some(sent), Some(reply), Some(ack)) = (sent, reply, ack) {
            assert!(sent < reply && reply < ack, "{log}");
            break;
        }
        assert!(tokio::time::Instant::now() < end, "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
