//! Cloud MQTT transports end to end: emulated camera → edgerelay binary → Mosquitto on
//! loopback over TLS (server and client certificates made here with rcgen), passwords over
//! TLS, WebSocket, and an AWS IoT Core stand-in (mutual TLS) that shows the send-time limits.
//!
//! `ws://` and `wss://` go to Mosquitto's own `protocol websockets` listeners (plain and TLS).
//! Two more WebSocket tests put a small WebSocket→TCP bridge in front of Mosquitto's plain
//! listener only to see the request path the relay asks for (`/mqtt`, `/$iothub/websocket`).

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::{Mosquitto, RelayProcess, Subscriber, free_port, wait_for_port};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(20);

/// Mosquitto with three listeners: plain (for the test's subscriber), TLS requiring a client
/// certificate, and TLS with a password file.
struct TlsBroker {
    plain: u16,
    tls_cert: u16,
    tls_password: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsBroker {
    async fn start(pki: &Pki, users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("passwd");
        std::fs::write(&pw, "").unwrap();
        for (u, p) in users {
            let ok = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&pw)
                .arg(u)
                .arg(p)
                .status()
                .expect("mosquitto_passwd (package mosquitto)");
            assert!(ok.success());
        }
        let (plain, tls_cert, tls_password) = (free_port(), free_port(), free_port());
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            pki.path("ca.pem"),
            pki.path("server.pem"),
            pki.path("server.key")
        );
        let conf = format!(
            "per_listener_settings true\npersistence false\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             listener {tls_cert} 127.0.0.1\n{tls}require_certificate true\nallow_anonymous true\n\
             listener {tls_password} 127.0.0.1\n{tls}require_certificate false\nallow_anonymous false\npassword_file {}\n",
            pw.display()
        );
        let path = dir.path().join("mosquitto.conf");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed");
        for port in [plain, tls_cert, tls_password] {
            assert!(
                wait_for_port(port, Duration::from_secs(10)).await,
                "mosquitto did not start:\n{}",
                std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default()
            );
        }
        Self {
            plain,
            tls_cert,
            tls_password,
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn camera(name: &str, emu: &Emulator) -> String {
    format!(
        "[[camera]]\nname = \"{name}\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\nmax_backoff = \"2s\"\n",
        emu.base_url()
    )
}

async fn start_camera() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

/// Waits until the relay's log has a line containing every one of `needles`.
async fn wait_for_log_line(relay: &RelayProcess, needles: &[&str]) -> String {
    let end = Instant::now() + T;
    loop {
        let log = relay.log();
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < end,
            "no log line with {needles:?} in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rule with a fixed, short topic: `{prefix}` alone.
fn rule(name: &str, to: &str, prefix: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\nto = [\"{to}\"]\nprefix = \"{prefix}\"\ninclude_condition_name = false\n"
    )
}

#[tokio::test]
async fn mqtts_with_a_client_certificate_delivers_events() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, &[]).await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.plain, "cloud/#").await;
    let config = format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{}\n[destination.secure]\nkind = \"mqtt\"\nurl = \"mqtts://127.0.0.1:{}\"\nclient_id = \"relay-tls\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n{}",
        camera("lobby", &emu),
        broker.tls_cert,
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
        rule("r", "secure", "cloud/{camera}")
    );
    let relay = RelayProcess::start(&config);
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    wait_for_log_line(&relay, &["broker connected", "destination=secure"]).await;
    emu.emit_fixture_line(1);
    let m = sub.next_event(T).await;
    assert_eq!(m.topic, "cloud/lobby");
    assert!(m.payload.starts_with("{\"topic\":"), "{}", m.payload);
}

#[tokio::test]
async fn tls_and_login_failures_name_the_destination_and_reason_and_the_relay_keeps_running() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, &[("edgerelay", "right-password")]).await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.plain, "good/#").await;
    let dest = |name: &str, port: u16, extra: &str| {
        format!(
            "[destination.{name}]\nkind = \"mqtt\"\nurl = \"mqtts://127.0.0.1:{port}\"\nclient_id = \"relay-{name}\"\n{extra}\n"
        )
    };
    let certs = |ca: &str, cert: &str| {
        format!(
            "ca_file = \"{}\"\ncert_file = \"{}.pem\"\nkey_file = \"{}.key\"\n",
            pki.path(ca),
            pki.path(cert),
            pki.path(cert)
        )
    };
    let config = format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{}\n{}{}{}{}{}{}{}{}{}{}{}{}",
        camera("lobby", &emu),
        dest(
            "wrong_ca",
            broker.tls_cert,
            &certs("other-ca.pem", "client")
        ),
        dest("unknown_cert", broker.tls_cert, &certs("ca.pem", "rogue")),
        dest("expired_cert", broker.tls_cert, &certs("ca.pem", "expired")),
        dest(
            "bad_password",
            broker.tls_password,
            &format!(
                "ca_file = \"{}\"\nusername = \"edgerelay\"\npassword = \"wrong\"\n",
                pki.path("ca.pem")
            )
        ),
        dest("good", broker.tls_cert, &certs("ca.pem", "client")),
        dest(
            "insecure",
            broker.tls_cert,
            &format!(
                "{}tls_insecure_skip_verify = true\n",
                certs("other-ca.pem", "client")
            )
        ),
        rule("e", "insecure", "x"),
        rule("a", "wrong_ca", "x"),
        rule("b", "unknown_cert", "x"),
        rule("f", "expired_cert", "x"),
        rule("c", "bad_password", "x"),
        rule("d", "good", "good/{camera}"),
    );
    let relay = RelayProcess::start(&config);
    let line = wait_for_log_line(&relay, &["destination=wrong_ca", "cannot connect"]).await;
    assert!(
        line.contains("invalid peer certificate") && line.contains("UnknownIssuer"),
        "{line}"
    );
    let line = wait_for_log_line(&relay, &["destination=unknown_cert", "cannot connect"]).await;
    assert!(
        line.contains("the broker does not accept the client certificate")
            && line.contains("UnknownCA"),
        "{line}"
    );
    let line = wait_for_log_line(&relay, &["destination=expired_cert", "cannot connect"]).await;
    assert!(
        line.contains("the broker does not accept the client certificate")
            && line.contains("CertificateExpired"),
        "{line}"
    );
    let line = wait_for_log_line(&relay, &["destination=bad_password", "cannot connect"]).await;
    assert!(line.contains("broker refused the connection"), "{line}");
    assert!(
        line.contains("bad user name or password") || line.contains("not authorized"),
        "{line}"
    );
    // None of the refused ones ever counts as connected; the relay goes on delivering.
    for name in ["wrong_ca", "unknown_cert", "expired_cert", "bad_password"] {
        assert!(
            !relay
                .log()
                .lines()
                .any(|l| l.contains("broker connected")
                    && l.contains(&format!("destination={name} "))),
            "{name} must not connect"
        );
    }
    // The same wrong CA is let through only when verification is switched off, loudly.
    wait_for_log_line(&relay, &["broker connected", "destination=insecure"]).await;
    wait_for_log_line(
        &relay,
        &["WARN", "destination=insecure", "tls_insecure_skip_verify"],
    )
    .await;
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    wait_for_log_line(&relay, &["broker connected", "destination=good"]).await;
    emu.emit_fixture_line(1);
    assert_eq!(sub.next_event(T).await.topic, "good/lobby");
}

/// A WebSocket endpoint (subprotocol `mqtt`), over TLS when given an acceptor, that pipes each
/// connection to a TCP port and reports the request path of each.
async fn websocket_bridge(
    to: u16,
    tls: Option<rumqttc::tokio_rustls::TlsAcceptor>,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (paths_tx, paths_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let paths_tx = paths_tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_websocket(tcp, to, paths_tx).await,
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(tcp).await {
                            serve_websocket(s, to, paths_tx).await
                        }
                    }
                }
            });
        }
    });
    (port, paths_rx)
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
async fn serve_websocket<S>(
    stream: S,
    to: u16,
    paths_tx: tokio::sync::mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    let callback = |req: &Request, mut resp: Response| {
        let _ = paths_tx.send(req.uri().path().to_string());
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
        return;
    };
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut b_rx, mut b_tx) = broker.into_split();
    let up = async move {
        while let Some(Ok(m)) = ws_rx.next().await {
            if let Message::Binary(b) = m
                && b_tx.write_all(&b).await.is_err()
            {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = b_rx.read(&mut buf).await {
            if n == 0
                || ws_tx
                    .send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    };
    tokio::select! { _ = up => {}, _ = down => {} }
}

/// A TLS acceptor with the test server certificate.
fn tls_acceptor(pki: &Pki) -> rumqttc::tokio_rustls::TlsAcceptor {
    use rumqttc::tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    rumqttc::tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

#[tokio::test]
async fn wss_url_carries_mqtt_over_a_websocket_over_tls() {
    let pki = Pki::new();
    let broker = Mosquitto::start().await;
    let (wss_port, mut paths) = websocket_bridge(broker.port, Some(tls_acceptor(&pki))).await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "wss/#").await;
    let config = format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{}\n[destination.web]\nkind = \"mqtt\"\nurl = \"wss://127.0.0.1:{wss_port}/$iothub/websocket\"\nclient_id = \"relay-wss\"\nca_file = \"{}\"\n\n{}",
        camera("lobby", &emu),
        pki.path("ca.pem"),
        rule("r", "web", "wss/{camera}")
    );
    let relay = RelayProcess::start(&config);
    let path = tokio::time::timeout(T, paths.recv())
        .await
        .expect("the relay never opened a WebSocket")
        .unwrap();
    assert_eq!(path, "/$iothub/websocket");
    wait_for_log_line(&relay, &["broker connected", "destination=web"]).await;
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    emu.emit_fixture_line(1);
    assert_eq!(sub.next_event(T).await.topic, "wss/lobby");
}

#[tokio::test]
async fn ws_url_carries_mqtt_over_a_websocket() {
    let broker = Mosquitto::start().await;
    let (ws_port, mut paths) = websocket_bridge(broker.port, None).await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "ws/#").await;
    let config = format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{}\n[destination.web]\nkind = \"mqtt\"\nurl = \"ws://127.0.0.1:{ws_port}/mqtt\"\nclient_id = \"relay-ws\"\n\n{}",
        camera("lobby", &emu),
        rule("r", "web", "ws/{camera}")
    );
    let relay = RelayProcess::start(&config);
    let path = tokio::time::timeout(T, paths.recv())
        .await
        .expect("the relay never opened a WebSocket")
        .unwrap();
    assert_eq!(path, "/mqtt");
    wait_for_log_line(&relay, &["broker connected", "destination=web"]).await;
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    emu.emit_fixture_line(1);
    assert_eq!(sub.next_event(T).await.topic, "ws/lobby");
}

fn dead_letters(relay: &RelayProcess, dest: &str) -> Vec<serde_json::Value> {
    let path: PathBuf = relay
        .dir
        .path()
        .join("data")
        .join("dead-letter")
        .join(format!("{dest}.ndjson"));
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn aws_stand_in_gets_events_over_mutual_tls_and_too_long_topics_are_dead_lettered() {
    let pki = Pki::new();
    let broker = TlsBroker::start(&pki, &[]).await;
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.plain, "#").await;
    // A camera name long enough to push one rule's topic past 256 bytes at send time only.
    let long_name = "c".repeat(260);
    let config = format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{}\n[destination.aws]\nkind = \"aws-iot-core\"\nendpoint = \"127.0.0.1\"\nport = {}\nthing_name = \"edgerelay-thing\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n\
         # camera availability would come first on \"#\": this test is about events\n\
         availability_topic = \"\"\n\n\
         [[rule]]\nname = \"long\"\nto = [\"aws\"]\nmqtt_topic = \"long/{{camera}}\"\nqos = 2\n\n{}",
        camera(&long_name, &emu),
        broker.tls_cert,
        pki.path("client.pem"),
        pki.path("client.key"),
        pki.path("ca.pem"),
        rule("short", "aws", "short/x"),
    );
    let relay = RelayProcess::start(&config);
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    wait_for_log_line(&relay, &["broker connected", "destination=aws"]).await;
    emu.emit_fixture_line(1);
    // The too-long delivery comes first in the outbox: once the next one arrived, it was handled.
    let m = sub.next_event(T).await;
    assert_eq!((m.topic.as_str(), m.qos), ("short/x", 1));
    let dead = dead_letters(&relay, "aws");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert_eq!(reason, "topic is 265 bytes; AWS IoT Core allows 256");
    wait_for_log_line(
        &relay,
        &["destination=aws", "dead_lettered=1", "dead-letter"],
    )
    .await;
    // Nothing else (in particular not the long topic) reached the broker.
    emu.emit_fixture_line(2);
    let m = sub.next_event(T).await;
    assert_eq!(m.topic, "short/x");
    assert_eq!(dead_letters(&relay, "aws").len(), 2);
}

#[tokio::test]
async fn connect_message_on_every_connect_and_last_will_on_sigkill() {
    let mut broker = Mosquitto::start().await;
    let status = "edgerelay/relay-will/status";
    let mut sub = Subscriber::connect(broker.port, status).await;
    let config = format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n[destination.b]\nkind = \"mqtt\"\nurl = \"{}\"\nclient_id = \"relay-will\"\nlast_will = {{ topic = \"{status}\", message = \"offline\", retain = false, qos = 1 }}\nconnect_message = {{ topic = \"{status}\", message = \"online\", retain = true, qos = 1 }}\n",
        broker.url()
    );
    let mut relay = RelayProcess::start(&config);
    assert_eq!(sub.next(T).await.payload, "online");
    // A broker restart (no persistence: the retained "online" is gone) and a reconnect: a new
    // subscriber sees "online" only because the relay published it again.
    drop(sub);
    broker.restart().await;
    let mut sub = Subscriber::connect(broker.port, status).await;
    assert_eq!(sub.next(T).await.payload, "online");
    wait_for_log_line(&relay, &["broker connection lost", "destination=b"]).await;
    relay.kill9();
    let m = sub.next(T).await;
    assert_eq!((m.payload.as_str(), m.retain), ("offline", false));
}

/// The identity fields of an MQTT 3.1.1 CONNECT packet.
#[derive(Debug, Clone)]
struct Connect {
    client_id: String,
    username: Option<String>,
    password: Option<String>,
}

fn parse_connect(b: &[u8]) -> Option<(Connect, usize)> {
    if b.first()? >> 4 != 1 {
        return None;
    }
    let (mut len, mut shift, mut i) = (0usize, 0, 1);
    loop {
        let byte = *b.get(i)?;
        len |= ((byte & 0x7f) as usize) << shift;
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let total = i + len;
    if b.len() < total {
        return None;
    }
    let mut at = i;
    let string = |at: &mut usize| -> Option<String> {
        let n = u16::from_be_bytes([b[*at], b[*at + 1]]) as usize;
        let s = String::from_utf8(b[*at + 2..*at + 2 + n].to_vec()).ok();
        *at += 2 + n;
        s
    };
    let protocol = string(&mut at)?;
    assert_eq!(protocol, "MQTT");
    let flags = b[at + 1];
    at += 4; // level, flags, keep-alive
    let client_id = string(&mut at)?;
    if flags & 0x04 != 0 {
        string(&mut at);
        string(&mut at);
    }
    let username = (flags & 0x80 != 0).then(|| string(&mut at)).flatten();
    let password = (flags & 0x40 != 0).then(|| string(&mut at)).flatten();
    Some((
        Connect {
            client_id,
            username,
            password,
        },
        total,
    ))
}

/// A TCP proxy to `to` that reports the CONNECT packet of every connection.
async fn connect_spy(to: u16) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Connect>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let connect = loop {
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some((c, _)) = parse_connect(&buf) {
                        break c;
                    }
                };
                let _ = tx.send(connect);
                let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                if broker.write_all(&buf).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn azure_sink_connects_as_the_device_with_fresh_sas_tokens_and_loses_nothing_on_renewal() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use edgerelay::clock::{Clock, SystemClock};
    use edgerelay::config::MqttDestination;
    use edgerelay::delivery::Delivery;
    use edgerelay::outbox::{DeadLetters, Outbox, OutboxOptions, SharedOutbox};
    use edgerelay::sinks::mqtt::azure::{SasKey, sas_token};
    use edgerelay::sinks::mqtt::flavor::Flavor;
    use edgerelay::sinks::mqtt::{MqttSink, SinkStats};

    const KEY: &str = "c2VjcmV0LWRldmljZS1rZXktZm9yLXRlc3Rz";
    let broker = Mosquitto::start().await; // anonymous: any password is let in
    let (spy_port, mut connects) = connect_spy(broker.port).await;
    let mut sub = Subscriber::connect(broker.port, "devices/#").await;
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = Outbox::open(&dir.path().join("outbox"), OutboxOptions::default()).unwrap();
    let outbox = SharedOutbox::new(outbox);
    let dead = DeadLetters::open(dir.path(), "hub").unwrap();
    // What azure::setup makes of a connection string, pointed at the local stand-in.
    let config: MqttDestination = toml::from_str(&format!(
        "url = \"mqtt://127.0.0.1:{spy_port}\"\nclient_id = \"lobby-cam\"\nusername = \"hub.azure-devices.net/lobby-cam/?api-version=2021-04-12\"\ninflight = 4"
    ))
    .unwrap();
    let resource = "hub.azure-devices.net/devices/lobby-cam";
    let clock = Arc::new(SystemClock);
    let sink = MqttSink {
        name: "hub".into(),
        config,
        print: false,
        flavor: Flavor::Azure {
            device_id: "lobby-cam".into(),
        },
        sas: Some(SasKey {
            resource: resource.into(),
            key: KEY.into(),
            ttl_s: 2,
        }),
        clock: clock.clone(),
        max_packet: 1 << 20,
        commands: None,
        relay_id: "0123456789abcdef".into(),
    };
    let stats = Arc::new(SinkStats::default());
    let task = tokio::spawn(sink.run(outbox.clone(), dead, stats.clone()));

    let append = |n: usize| {
        let d = Delivery {
            topic: "site/lobby".into(),
            payload: format!("{{\"n\":{n}}}").into_bytes(),
            qos: 2,
            retain: true,
            created_ms: 0,
            camera: String::new(),
        };
        outbox.append(&[&d.encode()], clock.now_ms()).unwrap();
    };
    let first = tokio::time::timeout(T, connects.recv())
        .await
        .unwrap()
        .unwrap();
    let issued_s = clock.now_ms() / 1000;
    assert_eq!(first.client_id, "lobby-cam");
    assert_eq!(
        first.username.as_deref(),
        Some("hub.azure-devices.net/lobby-cam/?api-version=2021-04-12")
    );
    let token = first.password.clone().unwrap();
    let se: i64 = token.rsplit_once("&se=").unwrap().1.parse().unwrap();
    assert!((se - issued_s - 2).abs() <= 1, "se {se}, now {issued_s}");
    assert_eq!(token, sas_token(resource, KEY, se).unwrap());

    // Deliveries before, during and after the renewal (80% of 2 s) all arrive, in order.
    let mut next = 0;
    let mut seen = Vec::new();
    let second = loop {
        append(next);
        next += 1;
        if let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(100), connects.recv()).await
        {
            break c;
        }
        assert!(next < 100, "no renewal within 10 s");
    };
    assert_eq!(second.client_id, "lobby-cam");
    let token2 = second.password.unwrap();
    assert_ne!(token2, token, "a fresh token on renewal");
    let se2: i64 = token2.rsplit_once("&se=").unwrap().1.parse().unwrap();
    assert_eq!(token2, sas_token(resource, KEY, se2).unwrap());
    for _ in 0..3 {
        append(next);
        next += 1;
    }
    // The message id of each n, as first seen: a resend must carry the same one.
    let mut mids: Vec<String> = Vec::new();
    let prefix = "devices/lobby-cam/messages/events/mqtt_topic=site%2Flobby&$.ct=application%2Fjson&$.ce=utf-8&$.mid=";
    while seen.last() != Some(&(next - 1)) {
        let m = sub.next(T).await;
        let mid = m
            .topic
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("topic {}", m.topic))
            .to_string();
        assert!(!m.retain, "IoT Hub has no retain");
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        let n = v["n"].as_u64().unwrap() as usize;
        // Resends after the reconnect may repeat a few; the first sighting keeps the order.
        if !seen.contains(&n) {
            assert_eq!(n, seen.len(), "order kept, nothing skipped");
            seen.push(n);
            mids.push(mid);
        } else {
            assert_eq!(mid, mids[n], "a resend of {n} carries its first message id");
        }
    }
    assert_eq!(seen, (0..next).collect::<Vec<_>>());
    assert!(mids.iter().all(|m| m.starts_with("0123456789abcdef-")));
    let distinct: std::collections::BTreeSet<_> = mids.iter().collect();
    assert_eq!(distinct.len(), mids.len(), "one message id per delivery");
    assert!(stats.connects.load(Ordering::Relaxed) >= 2);
    task.abort();
}

#[tokio::test]
async fn ws_and_wss_reach_a_real_mosquitto_websockets_listener() {
    let pki = Pki::new();
    let (ws, wss) = (free_port(), free_port());
    let broker = Mosquitto::start_with(&format!(
        "listener {ws} 127.0.0.1\nprotocol websockets\n\
         listener {wss} 127.0.0.1\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
        pki.path("server.pem"),
        pki.path("server.key"),
    ))
    .await;
    for port in [ws, wss] {
        assert!(
            wait_for_port(port, T).await,
            "no websockets listener on {port}"
        );
    }
    let emu = start_camera().await;
    let mut sub = Subscriber::connect(broker.port, "web/#").await;
    let config = format!(
        "[relay]\ndata_dir = \"{{data_dir}}\"\n\n{}\n\
         [destination.plain]\nkind = \"mqtt\"\nurl = \"ws://127.0.0.1:{ws}/mqtt\"\nclient_id = \"relay-ws\"\n\n\
         [destination.secure]\nkind = \"mqtt\"\nurl = \"wss://127.0.0.1:{wss}/mqtt\"\nclient_id = \"relay-wss\"\nca_file = \"{}\"\n\n{}{}",
        camera("lobby", &emu),
        pki.path("ca.pem"),
        rule("a", "plain", "web/ws"),
        rule("b", "secure", "web/wss"),
    );
    let relay = RelayProcess::start(&config);
    wait_for_log_line(&relay, &["broker connected", "destination=plain"]).await;
    wait_for_log_line(&relay, &["broker connected", "destination=secure"]).await;
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    emu.emit_fixture_line(1);
    let mut topics = vec![sub.next_event(T).await.topic, sub.next_event(T).await.topic];
    topics.sort();
    assert_eq!(topics, ["web/ws", "web/wss"]);
}
