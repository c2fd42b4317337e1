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
