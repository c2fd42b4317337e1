//! End-to-end tests of the emulator over real loopback sockets.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::digest::{Qop, compute_response, parse_params};
use super::*;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const STREAM: &str = "/vapix/ws-data-stream?sources=events";
const T: Duration = Duration::from_secs(5);

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

/// A plain GET of the stream URL: status and `WWW-Authenticate`.
async fn challenge(emu: &Emulator) -> (u16, String) {
    let res = reqwest::get(format!("{}{STREAM}", emu.base_url()))
        .await
        .unwrap();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (res.status().as_u16(), www)
}

/// The client side of Digest, built from the server's own helpers.
fn authorization(www: &str, method: &str, uri: &str, user: &str, pass: &str) -> String {
    let p: HashMap<String, String> = parse_params(www.strip_prefix("Digest").unwrap())
        .into_iter()
        .collect();
    let (realm, nonce) = (&p["realm"], &p["nonce"]);
    let (nc, cnonce) = ("00000001", "0a4f113b9c");
    let q = Qop {
        nc,
        cnonce,
        qop: "auth",
    };
    let response = compute_response(user, realm, pass, method, uri, nonce, Some(q));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\""
    )
}

async fn auth_for(emu: &Emulator, method: &str, uri: &str, pass: &str) -> String {
    let (status, www) = challenge(emu).await;
    assert_eq!(status, 401);
    authorization(&www, method, uri, "bridge", pass)
}

async fn try_connect(
    emu: &Emulator,
    target: &str,
    auth: Option<String>,
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{}{target}", emu.addr())
        .into_client_request()
        .unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn connect(emu: &Emulator) -> Ws {
    let auth = auth_for(emu, "GET", STREAM, "fixture-pass").await;
    try_connect(emu, STREAM, Some(auth)).await.unwrap()
}

fn status_of(e: tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(res) => res.status().as_u16(),
        other => panic!("expected an HTTP answer, got {other}"),
    }
}

/// The next text frame, or `None` when the connection closes (or 5 s pass).
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(T, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Sends a ping and reads up to its pong: the server has handled every earlier frame.
/// Returns the text frames that arrived meanwhile.
async fn ping_sync(ws: &mut Ws) -> Vec<String> {
    ws.send(Message::Ping(b"sync".to_vec().into()))
        .await
        .unwrap();
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(T, ws.next()).await {
            Ok(Some(Ok(Message::Pong(_)))) => return texts,
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.as_str().to_string()),
            Ok(Some(Ok(_))) => {}
            other => panic!("no pong: {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, text: String) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

fn configure_frame(context: Option<&str>, filters: &[&str]) -> String {
    let list: Vec<Value> = filters
        .iter()
        .map(|f| json!({ "topicFilter": f }))
        .collect();
    let mut v = json!({"apiVersion": "1.0"});
    if let Some(c) = context {
        v["context"] = c.into();
    }
    v["method"] = "events:configure".into();
    v["params"] = json!({ "eventFilterList": list });
    v.to_string()
}

/// Configures and returns the ack frame.
async fn configure(ws: &mut Ws, context: Option<&str>, filters: &[&str]) -> String {
    send(ws, configure_frame(context, filters)).await;
    next_text(ws).await.expect("configure reply")
}

#[tokio::test]
async fn plain_get_and_bare_upgrade_get_the_challenge() {
    let emu = emulator().await;
    let (status, www) = challenge(&emu).await;
    assert_eq!(status, 401);
    assert!(
        www.starts_with("Digest realm=\"AXIS_B8A44F3E9D21\", nonce=\""),
        "{www}"
    );
    assert!(www.ends_with("\", algorithm=MD5, qop=\"auth\""), "{www}");
    let (_, www2) = challenge(&emu).await;
    assert_ne!(www, www2, "nonces are fresh");
    let e = try_connect(&emu, STREAM, None).await.unwrap_err();
    assert_eq!(status_of(e), 401);
    assert_eq!(emu.counters().challenges, 3);
    assert_eq!(emu.counters().auth_failures, 0);
}

#[tokio::test]
async fn digest_upgrade_configure_and_topic_filtering() {
    let emu = emulator().await;
    let mut ws = connect(&emu).await;
    let ack = configure(&mut ws, Some("edgerelay-lobby-1"), &["tns1:Device//."]).await;
    assert_eq!(
        ack,
        include_str!("../../../tests/fixtures/ws-configure-ack.json").trim_end()
    );
    assert!(emu.wait_for_clients(1, T).await);
    assert_eq!(emu.connected_clients(), 1);
    emu.emit_fixture_line(4); // tns1:VideoSource: filtered out
    emu.emit_fixture_line(1);
    assert_eq!(
        next_text(&mut ws).await.unwrap(),
        Emulator::fixture_lines()[0]
    );
    assert_eq!(
        emu.configure_requests(),
        vec![json!([{"topicFilter": "tns1:Device//."}])]
    );
    let c = emu.counters();
    assert_eq!((c.upgrades_ok, c.configures_ok, c.frames_sent), (1, 1, 1));
}

#[tokio::test]
async fn one_copy_per_matching_filter_and_reconfigure_replaces() {
    let emu = emulator().await;
    let mut ws = connect(&emu).await;
    let ack = configure(
        &mut ws,
        None,
        &["tns1:Device//.", "tns1:Device/tnsaxis:IO/VirtualInput"],
    )
    .await;
    assert_eq!(
        ack,
        r#"{"apiVersion":"1.0","method":"events:configure","data":{}}"#
    );
    let lines = Emulator::fixture_lines();
    emu.emit_fixture_line(1);
    emu.emit_fixture_line(2);
    assert_eq!(next_text(&mut ws).await.unwrap(), lines[0]);
    assert_eq!(next_text(&mut ws).await.unwrap(), lines[0]);
    assert_eq!(next_text(&mut ws).await.unwrap(), lines[1]);

    let ack = configure(&mut ws, Some("2"), &["tnsaxis:Storage/Alert"]).await;
    assert_eq!(
        ack,
        r#"{"apiVersion":"1.0","context":"2","method":"events:configure","data":{}}"#
    );
    emu.emit_fixture_line(1);
    emu.emit_fixture_line(5);
    assert_eq!(next_text(&mut ws).await.unwrap(), lines[4]);
    assert_eq!(emu.connected_clients(), 1);
    assert_eq!(emu.configure_requests().len(), 2);
}

#[tokio::test]
async fn configure_errors_keep_the_stream_open() {
    let emu = emulator().await;
    let mut ws = connect(&emu).await;
    let err = configure(&mut ws, Some("edgerelay-lobby-1"), &[]).await;
    assert_eq!(
        err,
        include_str!("../../../tests/fixtures/ws-configure-error.json").trim_end()
    );
    send(&mut ws, "{not json".into()).await;
    let v: Value = serde_json::from_str(&next_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], 2101);
    assert!(v.get("context").is_none());
    send(
        &mut ws,
        r#"{"apiVersion":"1.0","context":"c","method":"events:nope"}"#.into(),
    )
    .await;
    let v: Value = serde_json::from_str(&next_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(
        (v["error"]["code"].as_u64(), v["context"].as_str()),
        (Some(2102), Some("c"))
    );
    send(
        &mut ws,
        r#"{"apiVersion":"1.0","method":"events:configure","params":{}}"#.into(),
    )
    .await;
    let v: Value = serde_json::from_str(&next_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], 2103);
    ws.send(Message::Binary(vec![0xFF, 0].into()))
        .await
        .unwrap();
    assert_eq!(emu.connected_clients(), 0);
    let ack = configure(&mut ws, None, &["//."]).await;
    assert!(ack.ends_with(r#""data":{}}"#), "{ack}");
    emu.emit_fixture_line(4);
    assert_eq!(
        next_text(&mut ws).await.unwrap(),
        Emulator::fixture_lines()[3]
    );
    assert_eq!(emu.counters().configures_rejected, 4);
}

#[tokio::test]
async fn known_state_is_sent_after_configure() {
    let emu = emulator().await;
    emu.emit_fixture_line(1); // no client yet: only remembered
    emu.emit_fixture_line(4); // stateless: not remembered
    emu.emit_fixture_line(2);
    let mut ws = connect(&emu).await;
    configure(
        &mut ws,
        None,
        &["tns1:Device/tnsaxis:IO//.", "tns1:VideoSource//."],
    )
    .await;
    let n = Notification::from_frame(&next_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(n.topic, "tns1:Device/tnsaxis:IO/VirtualInput");
    assert_eq!(n.source, vec![("port".into(), "7".into())]);
    assert_eq!(n.data, vec![("active".into(), "1".into())]);
    assert!(n.timestamp.unwrap() > 1_750_148_043_512, "fresh timestamp");
    emu.emit_fixture_line(8);
    assert_eq!(
        next_text(&mut ws).await.unwrap(),
        Emulator::fixture_lines()[7]
    );
}

#[tokio::test]
async fn wssession_token_is_single_use() {
    let emu = emulator().await;
    let http = reqwest::Client::new();
    let url = format!("{}/axis-cgi/wssession.cgi", emu.base_url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let auth = auth_for(&emu, "GET", "/axis-cgi/wssession.cgi", "fixture-pass").await;
    let res = http
        .get(&url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = res.text().await.unwrap().trim().to_string();
    assert!(!token.is_empty());
    let target = format!("/vapix/ws-data-stream?wssession={token}&sources=events");
    let mut ws = try_connect(&emu, &target, None).await.unwrap();
    configure(&mut ws, None, &["//."]).await;
    assert!(emu.wait_for_clients(1, T).await);
    let e = try_connect(&emu, &target, None).await.unwrap_err();
    assert_eq!(status_of(e), 401);
    let e = try_connect(
        &emu,
        "/vapix/ws-data-stream?wssession=123&sources=events",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(status_of(e), 401);
    let c = emu.counters();
    assert_eq!((c.tokens_issued, c.upgrades_ok, c.auth_failures), (1, 1, 2));
}

#[tokio::test]
async fn virtual_inputs_emit_events_when_they_change() {
    let emu = emulator().await;
    let mut ws = connect(&emu).await;
    configure(&mut ws, None, &["tns1:Device//."]).await;
    let http = reqwest::Client::new();
    let call = |cgi: &'static str, port: &'static str| {
        let emu = &emu;
        let http = &http;
        async move {
            let uri = format!("/axis-cgi/virtualinput/{cgi}?schemaversion=1&port={port}");
            let auth = auth_for(emu, "GET", &uri, "fixture-pass").await;
            let res = http
                .get(format!("{}{uri}", emu.base_url()))
                .header("authorization", auth)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["content-type"], "text/xml");
            res.text().await.unwrap()
        }
    };
    let body = call("activate.cgi", "7").await;
    assert_eq!(
        body,
        include_str!("../../../tests/fixtures/virtualinput-activate.xml")
    );
    let n = Notification::from_frame(&next_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(n.topic, "tns1:Device/tnsaxis:IO/VirtualInput");
    assert_eq!(n.source, vec![("port".into(), "7".into())]);
    assert_eq!(n.data, vec![("active".into(), "1".into())]);

    let body = call("activate.cgi", "7").await;
    assert!(
        body.contains("<ActivateSuccess>") && body.contains("false"),
        "{body}"
    );
    let body = call("deactivate.cgi", "7").await;
    assert!(
        body.contains("<DeactivateSuccess>") && body.contains("true"),
        "{body}"
    );
    // The unchanged activation sent nothing: the next frame is the deactivation.
    let n = Notification::from_frame(&next_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(n.data, vec![("active".into(), "0".into())]);

    let body = call("activate.cgi", "33").await;
    assert!(body.contains("<ErrorCode>20</ErrorCode>"), "{body}");
    let body = call("activate.cgi", "x").await;
    assert!(body.contains("<ErrorCode>20</ErrorCode>"), "{body}");
}

#[tokio::test]
async fn wrong_password_and_reject_credentials_get_401() {
    let emu = emulator().await;
    let auth = auth_for(&emu, "GET", STREAM, "wrong-pass").await;
    let e = try_connect(&emu, STREAM, Some(auth)).await.unwrap_err();
    assert_eq!(status_of(e), 401);
    assert_eq!(emu.counters().auth_failures, 1);

    emu.set_fault(Some(Fault::RejectCredentials));
    let auth = auth_for(&emu, "GET", STREAM, "fixture-pass").await;
    let e = try_connect(&emu, STREAM, Some(auth)).await.unwrap_err();
    assert_eq!(status_of(e), 401);
    assert_eq!(emu.counters().auth_failures, 2);

    emu.set_fault(None);
    let mut ws = connect(&emu).await;
    configure(&mut ws, None, &["//."]).await;
    assert_eq!(emu.counters().upgrades_ok, 1);
}

#[tokio::test]
async fn device_info_catalog_and_snapshot() {
    let emu = Emulator::start(EmulatorConfig {
        serial: "ACCC8E000001".into(),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(emu.serial(), "ACCC8E000001");
    let http = reqwest::Client::new();
    let base = emu.base_url();
    let info = format!("{base}/axis-cgi/basicdeviceinfo.cgi");
    let body = r#"{"apiVersion":"1.0","context":"ctx","method":"getAllProperties"}"#;
    let res = http.post(&info).body(body).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("AXIS_ACCC8E000001")
    );

    let unrestricted = r#"{"apiVersion":"1.0","method":"getAllUnrestrictedProperties"}"#;
    let v: Value = http
        .post(&info)
        .body(unrestricted)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse::<Value>()
        .unwrap();
    assert_eq!(v["data"]["propertyList"]["SerialNumber"], "ACCC8E000001");
    assert!(v.get("context").is_none());

    let auth = auth_for(
        &emu,
        "POST",
        "/axis-cgi/basicdeviceinfo.cgi",
        "fixture-pass",
    )
    .await;
    let res = http
        .post(&info)
        .header("authorization", &auth)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.text().await.unwrap().parse::<Value>().unwrap();
    assert_eq!(v["context"], "ctx");
    assert_eq!(v["method"], "getAllProperties");
    assert_eq!(v["data"]["propertyList"]["SerialNumber"], "ACCC8E000001");
    assert_eq!(v["data"]["propertyList"]["Brand"], "AXIS");

    // The nonce may be reused (nc would increase on a real client).
    let props = r#"{"apiVersion":"1.0","method":"getProperties","params":{"propertyList":["SerialNumber"]}}"#;
    let v: Value = http
        .post(&info)
        .header("authorization", &auth)
        .body(props)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse::<Value>()
        .unwrap();
    assert_eq!(
        v["data"],
        json!({"propertyList": {"SerialNumber": "ACCC8E000001"}})
    );

    let auth = auth_for(&emu, "POST", "/vapix/services", "fixture-pass").await;
    let res = http
        .post(format!("{base}/vapix/services"))
        .header("authorization", auth)
        .header("content-type", "application/soap+xml; charset=utf-8")
        .header("soapaction", "http://www.axis.com/vapix/ws/event1/GetEventInstances")
        .body(r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><GetEventInstances xmlns="http://www.axis.com/vapix/ws/event1"/></s:Body></s:Envelope>"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/soap+xml")
    );
    assert_eq!(
        res.text().await.unwrap(),
        include_str!("../../../tests/fixtures/event-instances.xml")
    );

    let auth = auth_for(&emu, "GET", "/axis-cgi/jpg/image.cgi", "fixture-pass").await;
    let res = http
        .get(format!("{base}/axis-cgi/jpg/image.cgi"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    let jpg = res.bytes().await.unwrap();
    assert_eq!(&jpg[..2], &[0xFF, 0xD8]);
    assert_eq!(&jpg[jpg.len() - 2..], &[0xFF, 0xD9]);
}

#[tokio::test]
async fn garbage_fault_sends_one_bad_frame_then_events() {
    let emu = emulator().await;
    emu.set_fault(Some(Fault::SendGarbageThenContinue));
    let mut ws = connect(&emu).await;
    let ack = configure(&mut ws, None, &["//."]).await;
    assert!(ack.contains("\"data\":{}"), "{ack}");
    let garbage = next_text(&mut ws).await.unwrap();
    assert!(serde_json::from_str::<Value>(&garbage).is_err());
    emu.emit_fixture_line(3);
    assert_eq!(
        next_text(&mut ws).await.unwrap(),
        Emulator::fixture_lines()[2]
    );
}

#[tokio::test]
async fn close_stall_and_reject_configure_faults() {
    let emu = emulator().await;
    emu.set_fault(Some(Fault::CloseOnConfigure));
    let mut ws = connect(&emu).await;
    send(&mut ws, configure_frame(None, &["//."])).await;
    assert_eq!(next_text(&mut ws).await, None);

    emu.set_fault(Some(Fault::RejectConfigure));
    let mut ws = connect(&emu).await;
    let v: Value = serde_json::from_str(&configure(&mut ws, Some("x"), &["//."]).await).unwrap();
    assert_eq!(
        (v["error"]["code"].as_u64(), v["context"].as_str()),
        (Some(2104), Some("x"))
    );

    emu.set_fault(Some(Fault::Stall));
    let mut stalled = connect(&emu).await;
    send(&mut stalled, configure_frame(None, &["//."])).await;
    emu.emit_fixture_line(1);
    // The pong comes back only after the server read (and handled) the configure frame.
    assert_eq!(ping_sync(&mut stalled).await, Vec::<String>::new());
    assert_eq!(emu.configure_requests().len(), 3);
    assert_eq!(emu.connected_clients(), 0);
    emu.drop_connections();
    assert_eq!(next_text(&mut stalled).await, None);
    assert_eq!(next_text(&mut ws).await, None);
    assert_eq!(emu.configure_requests().len(), 3);
}

#[tokio::test]
async fn drop_connections_then_reconnect() {
    let emu = emulator().await;
    let mut ws = connect(&emu).await;
    configure(&mut ws, None, &["//."]).await;
    assert!(emu.wait_for_clients(1, T).await);
    emu.drop_connections();
    assert_eq!(emu.connected_clients(), 0);
    assert_eq!(next_text(&mut ws).await, None);
    let mut ws = connect(&emu).await;
    configure(&mut ws, None, &["//."]).await;
    assert!(emu.wait_for_clients(1, T).await);
    emu.emit_fixture_line(9);
    assert_eq!(
        next_text(&mut ws).await.unwrap(),
        Emulator::fixture_lines()[8]
    );
    assert!(!emu.wait_for_clients(2, Duration::from_millis(10)).await);
}

#[tokio::test]
async fn generator_cycles_the_fixture_with_fresh_timestamps() {
    let emu = Emulator::start(EmulatorConfig {
        require_auth: false,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut ws = try_connect(&emu, STREAM, None).await.unwrap();
    configure(&mut ws, None, &["//."]).await;
    assert!(emu.wait_for_clients(1, T).await);
    let gen_task = emu.spawn_generator(2000.0, Some(10));
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(Notification::from_frame(&next_text(&mut ws).await.unwrap()).unwrap());
    }
    tokio::time::timeout(T, gen_task).await.unwrap().unwrap();
    let want: Vec<_> = (1..=9)
        .chain([1])
        .map(|l| script::fixture_notification(l).unwrap())
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (&g.topic, &g.source, &g.data),
            (&w.topic, &w.source, &w.data)
        );
        assert!(g.timestamp.unwrap() > 1_750_148_079_402);
    }
}

#[tokio::test]
async fn dropping_the_emulator_stops_it() {
    let emu = emulator().await;
    let mut ws = connect(&emu).await;
    configure(&mut ws, None, &["//."]).await;
    let addr = emu.addr();
    emu.shutdown().await;
    assert_eq!(next_text(&mut ws).await, None);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn unknown_nonce_is_stale_and_rfc2069_is_accepted() {
    let emu = emulator().await;
    let http = reqwest::Client::new();
    let url = format!("{}/axis-cgi/wssession.cgi", emu.base_url());
    let www = "Digest realm=\"AXIS_B8A44F3E9D21\", nonce=\"never-issued\"";
    let auth = authorization(
        www,
        "GET",
        "/axis-cgi/wssession.cgi",
        "bridge",
        "fixture-pass",
    );
    let res = http
        .get(&url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(", stale=true")
    );

    let (_, www) = challenge(&emu).await;
    let p: HashMap<String, String> = parse_params(&www[6..]).into_iter().collect();
    let uri = "/axis-cgi/wssession.cgi";
    let response = compute_response(
        "bridge",
        &p["realm"],
        "fixture-pass",
        "GET",
        uri,
        &p["nonce"],
        None,
    );
    let auth = format!(
        "Digest username=\"bridge\",realm=\"{}\",nonce=\"{}\",uri=\"{uri}\",response=\"{response}\"",
        p["realm"], p["nonce"]
    );
    let res = http
        .get(&url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(emu.counters().auth_failures, 0);
}
