//! The client against the RTSP emulator on loopback, end to end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::clock::SystemClock;
use crate::event::Event;
use crate::sources::emulator::rtsp::{RtspEmulator, RtspEmulatorConfig};
use crate::sources::rtsp::onvif::tests::{check_expected, metadata_fixtures};

const T: Duration = Duration::from_secs(10);

fn camera(emu: &RtspEmulator, password: &str) -> (RtspCamera, watch::Sender<bool>) {
    camera_with_heartbeat(emu, password, Duration::from_secs(15))
}

fn camera_with_heartbeat(
    emu: &RtspEmulator,
    password: &str,
    heartbeat: Duration,
) -> (RtspCamera, watch::Sender<bool>) {
    let (stop, rx) = watch::channel(false);
    let cam = RtspCamera {
        name: "lobby".into(),
        host: "127.0.0.1".into(),
        port: emu.addr().port(),
        query: session::StreamQuery {
            camera: 1,
            analytics: true,
            ptz: true,
            event_topics: Vec::new(),
        },
        username: Some("bridge".into()),
        password: Some(password.into()),
        serial: None,
        max_backoff: Duration::from_secs(2),
        heartbeat,
        shutdown: Some(rx),
        rtsp_url: None,
        onvif: None,
    };
    (cam, stop)
}

struct Running {
    rx: crate::sources::queue::EventReceiver,
    status: Arc<SourceStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(emu: &RtspEmulator, password: &str) -> Running {
    let (cam, stop) = camera(emu, password);
    start_camera(cam, stop)
}

fn start_camera(cam: RtspCamera, stop: watch::Sender<bool>) -> Running {
    let (tx, rx) = crate::sources::queue::channel(64, 1 << 20);
    let status = Arc::new(SourceStatus::new("lobby"));
    let task = tokio::spawn(run(cam, tx, status.clone(), Arc::new(SystemClock)));
    Running {
        rx,
        status,
        stop,
        task,
    }
}

async fn next(r: &mut Running) -> Event {
    tokio::time::timeout(T, r.rx.recv())
        .await
        .expect("an event in time")
        .expect("source alive")
}

/// Waits (checking every 5 ms) until the source state satisfies `f`.
async fn until(r: &Running, f: impl Fn(&SourceState) -> bool) -> SourceState {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let st = r.status.state();
        if f(&st) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "state stuck at {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn every_fixture_end_to_end_with_small_fragments_and_garbage() {
    let emu = RtspEmulator::start(RtspEmulatorConfig {
        fragment: 97,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut r = start(&emu, "fixture-pass").await;
    assert!(emu.wait_for_sessions(1, T).await);
    until(&r, |s| *s == SourceState::Streaming).await;
    for (i, (name, xml)) in metadata_fixtures().into_iter().enumerate() {
        emu.set_garbage_between_frames(i % 2 == 1);
        emu.send_document(std::str::from_utf8(&xml).unwrap());
        let mut got = Vec::new();
        let want = if name.contains("00-empty") {
            0
        } else if name.contains("11-two") {
            2
        } else {
            1
        };
        for _ in 0..want {
            got.push(next(&mut r).await);
        }
        check_expected(&name, &got);
        assert!(
            got.iter()
                .all(|e| &*e.serial == "B8A44F3E9D21" && &*e.camera == "lobby")
        );
    }
    // The client asked for what the config says, authenticated, and tears down on shutdown.
    r.stop.send(true).unwrap();
    tokio::time::timeout(T, r.task).await.unwrap().unwrap();
    let reqs = emu.requests();
    assert!(reqs[0].starts_with("OPTIONS rtsp://127.0.0.1:"));
    assert!(reqs.iter().any(|q| q.starts_with("DESCRIBE")
        && q.ends_with("camera=1&video=0&audio=0&event=on&analytics=polygon&ptz=all")));
    assert!(
        reqs.iter()
            .any(|q| q.starts_with("SETUP") && q.contains("/stream=0?"))
    );
    assert!(reqs.last().unwrap().starts_with("TEARDOWN"), "{reqs:?}");
    assert_eq!(r.status.malformed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn dropped_mid_document_recovers_and_loses_only_that_document() {
    let emu = RtspEmulator::start(RtspEmulatorConfig {
        fragment: 200,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut r = start(&emu, "fixture-pass").await;
    assert!(emu.wait_for_sessions(1, T).await);
    let doc01 = fixture("rtsp-metadata-01-pir-initialized.xml");
    let doc02 = fixture("rtsp-metadata-02-pir-changed.xml");
    let doc05 = fixture("rtsp-metadata-05-tampering-stateless.xml");
    emu.send_document(&doc01);
    assert!(next(&mut r).await.topic.ends_with("Sensor/PIR"));
    emu.drop_mid_next_document();
    emu.send_document(&doc02);
    assert!(emu.wait_for_sessions(2, T).await, "reconnected");
    let ev = next(&mut r).await;
    assert_eq!(
        ev.topic,
        own_events::CONNECTION_TOPIC,
        "the gap is announced"
    );
    emu.send_document(&doc05);
    let ev = next(&mut r).await;
    assert_eq!(
        ev.topic, "tns1:VideoSource/tnsaxis:Tampering",
        "doc 02 lost, nothing else"
    );
    assert!(r.rx.try_recv().is_err());
    assert_eq!(r.status.reconnects.load(Ordering::Relaxed), 1);
    emu.drop_connections();
    assert!(
        emu.wait_for_sessions(3, T).await,
        "reconnects after a plain drop too"
    );
}

#[tokio::test]
async fn wrong_credentials_give_a_clear_error_and_back_off() {
    let emu = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let mut r = start(&emu, "wrong").await;
    let st = until(&r, |s| matches!(s, SourceState::Backoff { .. })).await;
    let SourceState::Backoff { error } = st else {
        unreachable!()
    };
    assert!(
        error.contains("authentication failed") && error.contains("wrong user name or password"),
        "{error}"
    );
    // Back-off, not a hot loop: the second attempt waits at least 0.75 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emu.connections(), 1);
    assert!(r.rx.try_recv().is_err());
    r.task.abort();
}

#[tokio::test]
async fn refused_auth_after_it_worked_is_reported_then_recovers() {
    let emu = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let mut r = start(&emu, "fixture-pass").await;
    assert!(emu.wait_for_sessions(1, T).await);
    emu.set_bad_auth(true);
    emu.drop_connections();
    until(
        &r,
        |s| matches!(s, SourceState::Backoff { error } if error.contains("authentication")),
    )
    .await;
    emu.set_bad_auth(false);
    assert!(emu.wait_for_sessions(2, T).await);
    assert_eq!(next(&mut r).await.topic, own_events::CONNECTION_TOPIC);
    emu.send_document(&fixture("rtsp-metadata-08-daynight-root-namespaces.xml"));
    assert_eq!(
        next(&mut r).await.topic,
        "tns1:VideoSource/tnsaxis:DayNightVision"
    );
    r.task.abort();
}

#[tokio::test]
async fn a_silent_stream_is_reconnected_and_the_gap_announced() {
    let emu = RtspEmulator::start(RtspEmulatorConfig::default())
        .await
        .unwrap();
    let (cam, stop) = camera_with_heartbeat(&emu, "fixture-pass", Duration::from_millis(200));
    let mut r = start_camera(cam, stop);
    assert!(emu.wait_for_sessions(1, T).await);
    emu.send_document(&fixture("rtsp-metadata-01-pir-initialized.xml"));
    assert!(next(&mut r).await.topic.ends_with("Sensor/PIR"));
    // Keep-alive replies keep a quiet stream alive well past two heartbeats.
    let keepalives = || {
        emu.requests()
            .iter()
            .filter(|q| q.starts_with("GET_PARAMETER"))
            .count()
    };
    let deadline = tokio::time::Instant::now() + T;
    while keepalives() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no keep-alives");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.status.silences.load(Ordering::Relaxed), 0);
    assert_eq!(r.status.reconnects.load(Ordering::Relaxed), 0);
    emu.freeze_connections();
    assert!(emu.wait_for_sessions(2, T).await, "reconnected");
    assert_eq!(r.status.silences.load(Ordering::Relaxed), 1);
    let ev = next(&mut r).await;
    assert_eq!(ev.topic, own_events::CONNECTION_TOPIC);
    let gap: i64 = ev.data["gap_ms"].parse().unwrap();
    assert!(gap >= 0, "{gap}");
    emu.send_document(&fixture("rtsp-metadata-05-tampering-stateless.xml"));
    assert!(next(&mut r).await.topic.ends_with("Tampering"));
}

/// A camera that accepts the connection and never answers OPTIONS: the reply deadline ends
/// the attempt, counted as a timeout, and the source backs off instead of waiting for good.
#[tokio::test]
async fn a_camera_that_never_answers_times_out_and_is_counted() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let (stop, rx) = watch::channel(false);
    let cam = RtspCamera {
        name: "mute".into(),
        host: "127.0.0.1".into(),
        port,
        query: session::StreamQuery {
            camera: 1,
            analytics: false,
            ptz: false,
            event_topics: Vec::new(),
        },
        username: None,
        password: None,
        serial: None,
        max_backoff: Duration::from_secs(2),
        heartbeat: Duration::from_secs(15),
        shutdown: Some(rx),
        rtsp_url: None,
        onvif: None,
    };
    let r = start_camera(cam, stop);
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT * 3;
    let error = loop {
        if let SourceState::Backoff { error } = r.status.state() {
            break error;
        }
        assert!(tokio::time::Instant::now() < deadline, "never timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(error, "no reply from the camera within 10s");
    assert_eq!(r.status.timeouts.load(Ordering::Relaxed), 1);
    r.stop.send(true).unwrap();
    tokio::time::timeout(T, r.task).await.unwrap().unwrap();
}
