//! Object-store destinations end to end: emulated camera → relay binary → moto_server (S3) or
//! Azurite (Azure Blob), read back with the AWS SDK / plain HTTP.
//!
//! The servers are installed by `scripts/test.sh` (moto into `target/venv`, Azurite into
//! `target/azurite`); `MOTO_SERVER` / `AZURITE_BLOB` point elsewhere. A test whose server is
//! missing is skipped with a loud message, except under `CI=true`, where it fails.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use base64::Engine as _;
use common::{RelayProcess, free_port, numbered, wait_for_port};
use edgerelay::delivery::Delivery;
use edgerelay::outbox::{Outbox, OutboxOptions};
use edgerelay::sinks::object_store::batch::decompress;
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};
use hmac::Mac as _;
use rand::Rng as _;
use tokio::sync::watch;

const T: Duration = Duration::from_secs(60);
const BUCKET: &str = "camera-events";

// ---------------------------------------------------------------------------------------------
// Test servers

/// A server binary: `$ENV`, else under the repository's `target/`, else on `PATH`.
fn tool(env: &str, installed: &str, name: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(p.into());
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(installed);
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

fn missing(what: &str) {
    let msg = format!(
        "\n!!!!!!!! SKIPPED: {what} is not installed: run scripts/test.sh, which installs it !!!!!!!!\n"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}(CI never skips)");
    }
    eprintln!("{msg}");
}

/// A child process on a loopback port, killed on drop.
struct Server {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(mut cmd: Command, port: u16, dir: tempfile::TempDir, what: &str) -> Server {
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let server = Server {
        port,
        child,
        _dir: dir,
    };
    assert!(
        wait_for_port(port, Duration::from_secs(60)).await,
        "{what} did not listen on {port}"
    );
    server
}

/// moto_server with `BUCKET` created; `None` when moto is not installed.
async fn moto() -> Option<(Server, aws_sdk_s3::Client)> {
    let Some(bin) = tool("MOTO_SERVER", "target/venv/bin/moto_server", "moto_server") else {
        missing("moto_server (pip moto[server])");
        return None;
    };
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let server = start_server(cmd, port, tempfile::tempdir().unwrap(), "moto_server").await;
    let client = s3_client(port);
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    Some((server, client))
}

fn s3_client(port: u16) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Azurite's blob service; `None` when it is not installed.
async fn azurite() -> Option<Server> {
    let Some(bin) = tool(
        "AZURITE_BLOB",
        "target/azurite/node_modules/.bin/azurite-blob",
        "azurite-blob",
    ) else {
        missing("azurite-blob (npm azurite@3.35)");
        return None;
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path())
        .args(["--disableTelemetry", "--skipApiVersionCheck"]);
    Some(start_server(cmd, port, dir, "azurite-blob").await)
}

/// Forwards TCP to a port; when down, refuses new connections and cuts open ones; when
/// muted, forwards requests but swallows the answers (the store acts, the client never hears);
/// with PUTs to refuse, answers that many PUT requests (each the first on its connection)
/// with S3's `403 AccessDenied` itself.
struct Proxy {
    port: u16,
    up: watch::Sender<bool>,
    mute: Arc<AtomicBool>,
    refuse_puts: Arc<AtomicU64>,
}

/// S3's answer to a request it denies, as the proxy gives it.
fn access_denied() -> String {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one request head (through the blank line) and its `Content-Length` body; returns
/// the bytes read and whether it was a PUT.
async fn read_request(inbound: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match inbound.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match inbound.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((buf, head.starts_with("put ")))
}

impl Proxy {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, rx) = watch::channel(true);
        let mute = Arc::new(AtomicBool::new(false));
        let muted = mute.clone();
        let refuse_puts = Arc::new(AtomicU64::new(0));
        let refusing = refuse_puts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue; // dropped: the client sees the connection close
                }
                let muted = muted.clone();
                let refusing = refusing.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut first = Vec::new();
                    if refusing.load(Ordering::SeqCst) > 0 {
                        let Some((request, put)) = read_request(&mut inbound).await else {
                            return;
                        };
                        let refuse = put
                            && refusing
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        if refuse {
                            let _ = inbound.write_all(access_denied().as_bytes()).await;
                            return;
                        }
                        first = request;
                    }
                    let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    if out.write_all(&first).await.is_err() {
                        return;
                    }
                    let (mut in_r, mut in_w) = inbound.split();
                    let (mut out_r, mut out_w) = out.into_split();
                    let requests = tokio::io::copy(&mut in_r, &mut out_w);
                    let answers = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match out_r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if !muted.load(Ordering::SeqCst)
                                && in_w.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = requests => {}
                        _ = answers => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            mute,
            refuse_puts,
        }
    }

    /// Answers the next `n` PUTs with `403 AccessDenied` instead of forwarding them.
    fn refuse_puts(&self, n: u64) {
        self.refuse_puts.store(n, Ordering::SeqCst);
    }

    fn set_mute(&self, mute: bool) {
        self.mute.store(mute, Ordering::SeqCst);
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

// ---------------------------------------------------------------------------------------------
// Relay and archive

/// A relay with one camera (the emulator) and the given destination table(s); every event goes
/// to destination `archive` (and `archive2` when `both`) as `load/{camera}` with payload `n`.
fn relay_config(emu: &Emulator, dest: &str, to: &str) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
max_backoff = "1s"
{dest}
[[rule]]
name = "archive"
to = {to}
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
"#,
        emu.base_url()
    )
}

fn s3_dest(port: u16, extra: &str) -> String {
    format!(
        r#"[destination.archive]
kind = "s3"
bucket = "{BUCKET}"
region = "us-east-1"
endpoint = "http://127.0.0.1:{port}"
access_key_id = "test"
secret_access_key = "test"
{extra}
"#
    )
}

/// One stored object.
#[derive(Debug)]
struct Stored {
    key: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    /// Raw NDJSON after decompression.
    ndjson: String,
}

impl Stored {
    /// The `n` of each line, checking each line is `{"payload":"n","mqtt_topic":"load/lobby"}`.
    fn numbers(&self) -> Vec<u64> {
        assert!(
            self.ndjson.ends_with('\n'),
            "{}: last line unterminated",
            self.key
        );
        self.ndjson
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {l}: {e}", self.key));
                assert_eq!(v["mqtt_topic"], "load/lobby", "{l}");
                v["payload"].as_str().unwrap().parse().unwrap()
            })
            .collect()
    }

    /// `{first_seq}` of the key (its last segment up to the first dot).
    /// The `event_id` of each line.
    fn event_ids(&self) -> Vec<String> {
        self.ndjson
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["event_id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn first_seq(&self) -> u64 {
        let last = self.key.rsplit('/').next().unwrap();
        last.split('.').next().unwrap().parse().unwrap()
    }
}

/// Every object in the bucket, in `{first_seq}` order.
async fn s3_archive(client: &aws_sdk_s3::Client) -> Vec<Stored> {
    archive(s3_raw(client).await)
}

/// Stored NDJSON objects decompressed by their Content-Encoding, in `{first_seq}` order.
fn archive(raw: Vec<RawObject>) -> Vec<Stored> {
    let mut out: Vec<Stored> = raw
        .into_iter()
        .map(|o| {
            let ndjson = decompress(o.content_encoding.as_deref(), &o.body)
                .unwrap_or_else(|e| panic!("{}: {e}", o.key));
            Stored {
                key: o.key,
                content_type: o.content_type,
                content_encoding: o.content_encoding,
                ndjson: String::from_utf8(ndjson).unwrap(),
            }
        })
        .collect();
    out.sort_by_key(Stored::first_seq);
    out
}

/// What a timed-out wait shows of a stored object.
trait Described {
    fn describe(&self) -> String;
}

impl Described for Stored {
    fn describe(&self) -> String {
        format!("{} {:?}", self.key, self.numbers())
    }
}

impl Described for RawObject {
    fn describe(&self) -> String {
        self.key.clone()
    }
}

/// Polls the store until `done` holds (or panics at the deadline with the store's contents and
/// the relay's log).
async fn wait_store<O, F, Fut>(
    relay: &RelayProcess,
    read: F,
    what: &str,
    done: impl Fn(&[O]) -> bool,
) -> Vec<O>
where
    O: Described,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<O>>,
{
    let end = Instant::now() + T;
    loop {
        let objects = read().await;
        if done(&objects) {
            return objects;
        }
        let seen: Vec<String> = objects.iter().map(Described::describe).collect();
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}; store: {seen:?}\n--- relay log ---\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_numbers(objects: &[Stored]) -> Vec<u64> {
    objects.iter().flat_map(Stored::numbers).collect()
}

/// A numbered event on a stateless topic: the emulated camera re-sends the last state of
/// stateful topics to every new subscriber (as cameras do), which would repeat an `n`.
fn event(n: u64) -> edgerelay::sources::emulator::Notification {
    let mut e = numbered(n);
    e.topic = "tnsaxis:CameraApplicationPlatform/ObjectAnalytics/Device1ScenarioANY".into();
    e
}

/// Starts the emulator and the relay, and waits until the relay subscribed.
async fn start_relay(dest: &str, to: &str) -> (Arc<Emulator>, RelayProcess) {
    let emu = Arc::new(Emulator::start(EmulatorConfig::default()).await.unwrap());
    let relay = RelayProcess::start(&relay_config(&emu, dest, to));
    assert!(
        emu.wait_for_clients(1, T).await,
        "relay never subscribed:\n{}",
        relay.log()
    );
    (emu, relay)
}

/// The key the relay makes for `first_seq` with the default template.
fn assert_default_key(o: &Stored, ext: &str) {
    let parts: Vec<&str> = o.key.split('/').collect();
    assert_eq!(parts.len(), 6, "{}", o.key);
    assert_eq!(parts[0], "lobby", "{}", o.key);
    assert!(
        parts[1..5]
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{}",
        o.key
    );
    assert_eq!(parts[5], format!("{:020}{ext}", o.first_seq()), "{}", o.key);
}

// ---------------------------------------------------------------------------------------------
// S3

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_roll_at_max_events_and_hold_the_events_in_order() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let dest = s3_dest(
        moto.port,
        r#"batch = { max_events = 10, max_bytes = "8MiB", max_age = "1h" }
compression = "gzip""#,
    );
    let (emu, relay) = start_relay(&dest, r#"["archive"]"#).await;
    for n in 0..30 {
        emu.emit(&event(n));
    }
    let objects = wait_store(
        &relay,
        || s3_archive(&client),
        "3 objects",
        |o| o.len() >= 3,
    )
    .await;
    assert_eq!(objects.len(), 3, "max_age is 1h: only full objects close");
    for (i, o) in objects.iter().enumerate() {
        assert_default_key(o, ".ndjson.gz");
        assert_eq!(o.content_type.as_deref(), Some("application/x-ndjson"));
        assert_eq!(o.content_encoding.as_deref(), Some("gzip"));
        let want: Vec<u64> = (i as u64 * 10..i as u64 * 10 + 10).collect();
        assert_eq!(o.numbers(), want, "{}", o.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_roll_at_max_bytes_before_overflowing() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    // Every line is the same length (four-digit n): room for three lines, not four.
    let line = format!(
        "{{\"payload\":\"1000\",\"mqtt_topic\":\"load/lobby\",\"event_id\":\"{}\"}}\n",
        edgerelay::identity::event_id("0123456789abcdef", 0)
    )
    .len();
    let dest = s3_dest(
        moto.port,
        &format!(
            r#"batch = {{ max_events = 10000, max_bytes = "{}", max_age = "1h" }}
compression = "zstd""#,
            4 * line - 1
        ),
    );
    let (emu, relay) = start_relay(&dest, r#"["archive"]"#).await;
    // The 31st event closes the 10th object: it would not fit.
    for n in 1000..1031 {
        emu.emit(&event(n));
    }
    let objects = wait_store(
        &relay,
        || s3_archive(&client),
        "10 objects",
        |o| o.len() >= 10,
    )
    .await;
    assert_eq!(objects.len(), 10);
    for o in &objects {
        assert_default_key(o, ".ndjson.zst");
        assert_eq!(o.content_encoding.as_deref(), Some("zstd"));
        assert_eq!(o.ndjson.len(), 3 * line, "{}", o.key);
    }
    assert_eq!(all_numbers(&objects), (1000..1030).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_roll_at_max_age_when_nothing_else_closes_them() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let dest = s3_dest(
        moto.port,
        r#"batch = { max_events = 10000, max_bytes = "8MiB", max_age = "1s" }
compression = "none""#,
    );
    let (emu, relay) = start_relay(&dest, r#"["archive"]"#).await;
    for n in 0..5 {
        emu.emit(&event(n));
    }
    let objects = wait_store(
        &relay,
        || s3_archive(&client),
        "an object",
        |o| !o.is_empty(),
    )
    .await;
    assert_eq!(objects.len(), 1);
    assert_default_key(&objects[0], ".ndjson");
    assert_eq!(objects[0].content_encoding, None);
    assert_eq!(objects[0].numbers(), [0, 1, 2, 3, 4]);
    for n in 5..8 {
        emu.emit(&event(n));
    }
    let objects = wait_store(
        &relay,
        || s3_archive(&client),
        "a second object",
        |o| o.len() >= 2,
    )
    .await;
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[1].numbers(), [5, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_then_back_archives_every_event_once() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    proxy.set_up(false);
    let dest = s3_dest(
        proxy.port,
        r#"batch = { max_events = 20, max_bytes = "8MiB", max_age = "1s" }"#,
    );
    let (emu, relay) = start_relay(&dest, r#"["archive"]"#).await;
    for n in 0..50 {
        emu.emit(&event(n));
    }
    // Wait until the relay has met the outage, then emit more during it.
    let end = Instant::now() + T;
    while !relay.log().contains("object upload failed") {
        assert!(Instant::now() < end, "no failed upload:\n{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 50..100 {
        emu.emit(&event(n));
    }
    assert!(
        s3_archive(&client).await.is_empty(),
        "nothing got through the outage"
    );
    proxy.set_up(true);
    let objects = wait_store(
        &relay,
        || s3_archive(&client),
        "100 events",
        |o| all_numbers(o).len() >= 100,
    )
    .await;
    assert_eq!(all_numbers(&objects), (0..100).collect::<Vec<_>>());
    assert!(relay.log().contains("object stored after retries"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_over_8_mib_go_up_in_parts_and_read_back_whole() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    const EVENTS: u64 = 14;
    const PAD: usize = 700 * 1024;
    let dest = s3_dest(
        moto.port,
        &format!(
            r#"batch = {{ max_events = {EVENTS}, max_bytes = "64MiB", max_age = "1h" }}
compression = "none""#
        ),
    );
    // The camera's own payload (with the padding), not the short `n` of the other tests.
    let emu = Arc::new(Emulator::start(EmulatorConfig::default()).await.unwrap());
    let cfg = relay_config(&emu, &dest, r#"["archive"]"#).replace("payload = \"{data.n}\"\n", "");
    let relay = RelayProcess::start(&cfg);
    assert!(emu.wait_for_clients(1, T).await);
    for n in 0..EVENTS {
        let mut e = event(n);
        e.data.push(("pad".into(), "x".repeat(PAD)));
        emu.emit(&e);
    }
    let raw_objects = wait_store(
        &relay,
        || s3_archive(&client),
        "the big object",
        |o| !o.is_empty(),
    )
    .await;
    assert_eq!(raw_objects.len(), 1);
    let o = &raw_objects[0];
    assert!(
        o.ndjson.len() > 8 << 20,
        "{} bytes: not over the threshold",
        o.ndjson.len()
    );
    let numbers: Vec<u64> = o
        .ndjson
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["mqtt_topic"], "load/lobby");
            assert_eq!(v["message"]["data"]["pad"].as_str().unwrap().len(), PAD);
            v["message"]["data"]["n"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(numbers, (0..EVENTS).collect::<Vec<_>>());
    // The object is listed as soon as the store completed it, a moment before the relay
    // reads the answer (and, under load, moto's answer may need a second try).
    relay.wait_for_log("multipart upload completed", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_stored_but_unacknowledged_at_a_kill_is_overwritten_not_duplicated() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    let dest = s3_dest(
        proxy.port,
        r#"batch = { max_events = 10, max_bytes = "8MiB", max_age = "1h" }"#,
    );
    // The first object reaches the store, but the relay never hears the 2xx.
    proxy.set_mute(true);
    let (emu, mut relay) = start_relay(&dest, r#"["archive"]"#).await;
    for n in 0..15 {
        emu.emit(&event(n));
    }
    let before = wait_store(
        &relay,
        || s3_archive(&client),
        "the first object",
        |o| !o.is_empty(),
    )
    .await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].numbers(), (0..10).collect::<Vec<_>>());
    relay.kill9();
    assert_eq!(
        pending_in_outbox(&relay),
        (0..15).collect::<Vec<_>>(),
        "the stored object was never acknowledged"
    );
    proxy.set_up(false);
    proxy.set_up(true);
    proxy.set_mute(false);
    let end = Instant::now() + T;
    while emu.connected_clients() > 0 {
        assert!(
            Instant::now() < end,
            "the killed relay still looks connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.spawn();
    assert!(emu.wait_for_clients(1, T).await);
    for n in 15..20 {
        emu.emit(&event(n));
    }
    let after = wait_store(
        &relay,
        || s3_archive(&client),
        "two objects",
        |o| o.len() >= 2,
    )
    .await;
    assert_eq!(after.len(), 2, "same first entry, same key: overwritten");
    assert_eq!(after[0].key, before[0].key);
    assert_eq!(all_numbers(&after), (0..20).collect::<Vec<_>>());
    // The lines sent again after the kill carry the event ids they had: this relay's id,
    // kept in data_dir, and each delivery's outbox sequence.
    let relay_id = std::fs::read_to_string(relay.dir.path().join("data/relay-id")).unwrap();
    let ids = before[0].event_ids();
    assert_eq!(
        after[0].event_ids(),
        ids,
        "resent lines keep their event ids"
    );
    assert!(
        ids.iter()
            .all(|id| id.starts_with(&format!("{}-", relay_id.trim()))),
        "{ids:?}"
    );
    let mut all: Vec<String> = after.iter().flat_map(Stored::event_ids).collect();
    all.dedup();
    assert_eq!(all.len(), 20, "one id per event: {all:?}");
}

/// What a killed relay left in its outbox for `archive`.
fn pending_in_outbox(relay: &RelayProcess) -> Vec<u64> {
    let dir = relay.dir.path().join("data/outbox/archive");
    let (mut outbox, _) = Outbox::open(&dir, OutboxOptions::default()).unwrap();
    outbox
        .read(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| {
            let d = Delivery::decode(&e.data).unwrap();
            String::from_utf8(d.payload).unwrap().parse().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_relay_killed_during_uploads_leaves_every_event_exactly_once() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let dest = s3_dest(
        moto.port,
        r#"batch = { max_events = 50, max_bytes = "8MiB", max_age = "200ms" }"#,
    );
    let (emu, mut relay) = start_relay(&dest, r#"["archive"]"#).await;
    let running = Arc::new(AtomicBool::new(true));
    let emitted = Arc::new(AtomicU64::new(0));
    let load = {
        let (emu, running, emitted) = (emu.clone(), running.clone(), emitted.clone());
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    emu.emit(&event(emitted.fetch_add(1, Ordering::SeqCst)));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut must_arrive = BTreeSet::new();
    let mut backlogs = Vec::new();
    for _ in 0..6 {
        let wait = rand::rng().random_range(200..700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        relay.kill9();
        let pending = pending_in_outbox(&relay);
        backlogs.push(pending.len());
        must_arrive.extend(pending);
        relay.spawn();
    }
    running.store(false, Ordering::SeqCst);
    load.await.unwrap();
    let objects = wait_store(
        &relay,
        || s3_archive(&client),
        "every pending event",
        |o| {
            let have: BTreeSet<u64> = all_numbers(o).into_iter().collect();
            must_arrive.is_subset(&have)
        },
    )
    .await;
    let numbers = all_numbers(&objects);
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for n in &numbers {
        *counts.entry(*n).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    // Keys stored by more than one incarnation: objects re-cut and overwritten after a kill.
    let mut stored: HashMap<String, usize> = HashMap::new();
    for line in relay.log().lines().filter(|l| l.contains("object stored")) {
        if let Some(key) = line.split("key=").nth(1).and_then(|k| k.split(' ').next()) {
            *stored.entry(key.to_string()).or_default() += 1;
        }
    }
    let rewritten = stored.values().filter(|c| **c > 1).count();
    println!(
        "kill -9 x6: emitted {}, archived {} in {} objects ({rewritten} stored twice under one key), outbox backlog at each kill {backlogs:?}",
        emitted.load(Ordering::SeqCst),
        numbers.len(),
        objects.len()
    );
    assert!(
        backlogs.iter().sum::<usize>() > 0,
        "no kill found a backlog: the test proved nothing"
    );
    if !twice.is_empty() {
        let holders: Vec<(&str, Vec<u64>)> = objects
            .iter()
            .filter(|o| o.numbers().iter().any(|n| counts[n] > 1))
            .map(|o| (o.key.as_str(), o.numbers()))
            .collect();
        panic!(
            "archived twice: {twice:?} in {holders:?}\n--- relay log ---\n{}",
            relay.log()
        );
    }
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "order kept across restarts"
    );
}

// ---------------------------------------------------------------------------------------------
// Azure Blob

const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An account SAS for the test's own calls (create containers, list, read).
fn account_sas() -> String {
    let expiry = "2099-01-01T00:00:00Z";
    let (perms, services, types, version) = ("rwdlac", "b", "sco", "2022-11-02");
    let to_sign =
        format!("{AZ_ACCOUNT}\n{perms}\n{services}\n{types}\n\n{expiry}\n\n\n{version}\n\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZ_KEY)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("ss", services)
        .append_pair("srt", types)
        .append_pair("sp", perms)
        .append_pair("se", expiry)
        .append_pair("sig", &sig)
        .finish()
}

async fn az_create_container(port: u16, container: &str) {
    let url = format!(
        "http://127.0.0.1:{port}/{AZ_ACCOUNT}/{container}?restype=container&{}",
        account_sas()
    );
    let r = reqwest::Client::new().put(url).send().await.unwrap();
    assert!(
        r.status().is_success(),
        "create container: {:?}",
        r.text().await
    );
}

async fn az_archive(port: u16, container: &str) -> Vec<Stored> {
    archive(az_raw(port, container).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_by_connection_string_and_by_sas_url_archives_in_order() {
    let Some(azurite) = azurite().await else {
        return;
    };
    let port = azurite.port;
    az_create_container(port, "by-key").await;
    az_create_container(port, "by-sas").await;
    // A container SAS as a user would paste it, signed by the relay's own code.
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZ_ACCOUNT};"
    );
    let signer =
        edgerelay::sinks::object_store::azure_blob::StorageConnectionString::parse(&cs).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let sas = signer.container_sas("by-sas", now_ms);
    let dest = format!(
        r#"[destination.archive]
kind = "azure-blob"
connection_string = "{cs}"
container = "by-key"
batch = {{ max_events = 10, max_bytes = "8MiB", max_age = "1s" }}
[destination.archive2]
kind = "azure-blob"
sas_url = "http://127.0.0.1:{port}/{AZ_ACCOUNT}/by-sas?{sas}"
prefix = "site1/"
compression = "zstd"
batch = {{ max_events = 10, max_bytes = "8MiB", max_age = "1s" }}
"#
    );
    let (emu, relay) = start_relay(&dest, r#"["archive", "archive2"]"#).await;
    for n in 0..25 {
        emu.emit(&event(n));
    }
    for (container, ext, encoding) in [
        ("by-key", ".ndjson.gz", "gzip"),
        ("by-sas", ".ndjson.zst", "zstd"),
    ] {
        let objects = wait_store(
            &relay,
            || az_archive(port, container),
            container,
            |o| all_numbers(o).len() >= 25,
        )
        .await;
        let sizes: Vec<usize> = objects.iter().map(|o| o.numbers().len()).collect();
        assert_eq!(
            sizes,
            [10, 10, 5],
            "{container}: two full objects, one closed by age"
        );
        assert_eq!(all_numbers(&objects), (0..25).collect::<Vec<_>>());
        for o in &objects {
            let key = o.key.strip_prefix("site1/").unwrap_or(&o.key);
            let o2 = Stored {
                key: key.to_string(),
                content_type: None,
                content_encoding: None,
                ndjson: String::new(),
            };
            assert_default_key(&o2, ext);
            assert_eq!(o.content_type.as_deref(), Some("application/x-ndjson"));
            assert_eq!(o.content_encoding.as_deref(), Some(encoding));
        }
        if container == "by-sas" {
            assert!(objects.iter().all(|o| o.key.starts_with("site1/lobby/")));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// One stored object as bytes, with its metadata.
#[derive(Debug)]
struct RawObject {
    key: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    metadata: HashMap<String, String>,
    body: Vec<u8>,
}

/// Every object in the bucket, as stored.
async fn s3_raw(client: &aws_sdk_s3::Client) -> Vec<RawObject> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(BUCKET)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let o = client
            .get_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .unwrap();
        out.push(RawObject {
            key,
            content_type: o.content_type().map(str::to_string),
            content_encoding: o.content_encoding().map(str::to_string),
            metadata: o.metadata().cloned().unwrap_or_default(),
            body: o.body.collect().await.unwrap().into_bytes().to_vec(),
        });
    }
    out
}

/// Every blob in the container, as stored.
async fn az_raw(port: u16, container: &str) -> Vec<RawObject> {
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/{AZ_ACCOUNT}/{container}");
    let list = http
        .get(format!(
            "{base}?restype=container&comp=list&{}",
            account_sas()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = roxmltree::Document::parse(&list).unwrap();
    let names: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("Blob"))
        .filter_map(|b| b.children().find(|c| c.has_tag_name("Name")))
        .filter_map(|n| n.text().map(str::to_string))
        .collect();
    let mut out = Vec::new();
    for key in names {
        let r = http
            .get(format!("{base}/{key}?{}", account_sas()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{key}: {}", r.status());
        let metadata = r
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                let name = k.as_str().strip_prefix("x-ms-meta-")?;
                Some((name.to_string(), v.to_str().ok()?.to_string()))
            })
            .collect();
        let header = |h: &str| r.headers().get(h).map(|v| v.to_str().unwrap().to_string());
        let (content_type, content_encoding) = (header("content-type"), header("content-encoding"));
        out.push(RawObject {
            key,
            content_type,
            content_encoding,
            metadata,
            body: r.bytes().await.unwrap().to_vec(),
        });
    }
    out
}

/// The `n` of every NDJSON object's lines (snapshots left out).
fn archived_numbers(objects: &[RawObject]) -> BTreeSet<u64> {
    objects
        .iter()
        .filter(|o| !o.key.ends_with(".jpg"))
        .flat_map(|o| {
            let raw = decompress(o.content_encoding.as_deref(), &o.body).unwrap();
            String::from_utf8(raw)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    // Lines of the rule `reference` are the camera format: not numbered.
                    if v.get("payload").is_none() {
                        assert!(v["snapshot"]["key"].is_string(), "{l}");
                        return None;
                    }
                    Some(v["payload"].as_str().unwrap().parse::<u64>().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A relay whose rule `reference` sends virtual inputs in the camera format, with their
/// snapshot's key, to Mosquitto and `archive`; whose rule `snap` (virtual inputs) takes
/// snapshots into `archive`, and whose rule
/// `all` archives every other event without one.
fn snapshot_config(emu: &Emulator, dest: &str, broker: &common::Mosquitto) -> String {
    format!(
        r#"[relay]
data_dir = "{{data_dir}}"
http = "{{http}}"
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
max_backoff = "1s"
{dest}
[destination.broker]
kind = "mqtt"
url = "{}"
availability_topic = ""
[[rule]]
name = "reference"
topic = "tns1:Device/tnsaxis:IO//."
to = ["archive", "broker"]
snapshot = true
mqtt_topic = "ref/{{camera}}"
[[rule]]
name = "snap"
topic = "tns1:Device/tnsaxis:IO//."
to = ["archive"]
snapshot = true
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
stop = true
[[rule]]
name = "all"
to = ["archive"]
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
"#,
        emu.base_url(),
        broker.url()
    )
}

/// A non-matching event, a matching one, another non-matching one: exactly one JPEG lands,
/// the emulator's own bytes, named and described by the matching event.
async fn snapshot_lands_for_the_matching_event_only<F, Fut>(dest: &str, read: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<RawObject>>,
{
    let emu = Arc::new(Emulator::start(EmulatorConfig::default()).await.unwrap());
    let broker = common::Mosquitto::start().await;
    let mut sub = common::Subscriber::connect(broker.port, "ref/#").await;
    let relay = RelayProcess::start(&snapshot_config(&emu, dest, &broker));
    assert!(
        emu.wait_for_clients(1, T).await,
        "relay never subscribed:\n{}",
        relay.log()
    );
    let camera_jpeg = edgerelay::snapshots::fetch(
        &edgerelay::sources::vapix::VapixClient::new(
            url::Url::parse(&emu.base_url()).unwrap(),
            Some("bridge".into()),
            Some("fixture-pass".into()),
            &edgerelay::tls::TlsSettings::default(),
        )
        .unwrap(),
        "/axis-cgi/jpg/image.cgi",
    )
    .await
    .unwrap();

    emu.emit(&event(1));
    wait_store(&relay, &read, "event 1", |o| {
        archived_numbers(o).contains(&1)
    })
    .await;
    emu.emit(&numbered(2));
    let is_jpg = |o: &RawObject| o.key.ends_with(".jpg");
    wait_store(&relay, &read, "event 2 and its snapshot", |o| {
        archived_numbers(o).contains(&2) && o.iter().any(is_jpg)
    })
    .await;
    emu.emit(&event(3));
    let objects = wait_store(&relay, &read, "event 3", |o| {
        archived_numbers(o).contains(&3)
    })
    .await;

    assert_eq!(archived_numbers(&objects), BTreeSet::from([1, 2, 3]));
    let snaps: Vec<&RawObject> = objects.iter().filter(|o| is_jpg(o)).collect();
    assert_eq!(
        snaps.len(),
        1,
        "{:?}",
        objects.iter().map(|o| &o.key).collect::<Vec<_>>()
    );
    let snap = snaps[0];
    // numbered(2) happened at 1_750_000_000_002 = 2025-06-15T15:06:40.002Z.
    assert_eq!(
        snap.key,
        "lobby/snapshots/2025/06/15/15/1750000000002_Device.IO.VirtualInput.jpg"
    );
    // The event names the object before it exists, with the key the store got.
    let m = sub.next(T).await;
    let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
    assert_eq!(
        v["snapshot"],
        serde_json::json!({"destination": "archive", "key": snap.key})
    );
    assert_eq!(v["message"]["data"]["n"], "2");
    assert_eq!(snap.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(snap.body, camera_jpeg);
    assert_eq!(
        (&snap.body[..2], &snap.body[snap.body.len() - 2..]),
        (&[0xFF, 0xD8][..], &[0xFF, 0xD9][..])
    );
    let meta = |k: &str| snap.metadata.get(k).map(String::as_str);
    assert_eq!(meta("camera"), Some("lobby"));
    assert_eq!(meta("topic"), Some("onvif:Device/axis:IO/VirtualInput"));
    assert_eq!(meta("timestamp"), Some("1750000000002"));
    assert_eq!(meta("serial"), Some(emu.serial()));

    let metrics = reqwest::get(format!("{}/metrics", relay.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "edgerelay_snapshots_taken_total{camera=\"lobby\"} 1",
        "edgerelay_snapshots_failed_total{camera=\"lobby\"} 0",
        "edgerelay_snapshots_skipped_total{camera=\"lobby\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_refused_with_403_is_dead_lettered_and_the_next_objects_go_up() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let proxy = Proxy::start(moto.port).await;
    proxy.refuse_puts(1);
    let dest = s3_dest(
        proxy.port,
        r#"batch = { max_events = 1, max_bytes = "8MiB", max_age = "1h" }
compression = "none""#,
    );
    let (emu, relay) = start_relay(&dest, r#"["archive"]"#).await;
    for n in 0..5 {
        emu.emit(&event(n));
    }
    let objects = wait_store(
        &relay,
        || s3_archive(&client),
        "the 4 objects after the refused one",
        |o| o.len() >= 4,
    )
    .await;
    assert_eq!(
        all_numbers(&objects),
        [1, 2, 3, 4],
        "the refused object is not retried"
    );
    let dead = common::dead_letters(&relay, "archive");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("refused by the store") && reason.contains("403"),
        "{reason}"
    );
    let d = Delivery::decode(&common::dead_letter_record(&dead[0])).unwrap();
    assert_eq!(d.payload, b"0");
    relay
        .wait_for_log(
            "no retry can help: its events moved to the dead-letter file",
            T,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_snapshot_lands_for_a_matching_event() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let dest = s3_dest(
        moto.port,
        r#"batch = { max_events = 1, max_bytes = "8MiB", max_age = "1h" }"#,
    );
    snapshot_lands_for_the_matching_event_only(&dest, || s3_raw(&client)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_snapshot_lands_for_a_matching_event() {
    let Some(azurite) = azurite().await else {
        return;
    };
    let port = azurite.port;
    az_create_container(port, "snaps").await;
    let dest = format!(
        r#"[destination.archive]
kind = "azure-blob"
connection_string = "DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZ_ACCOUNT};"
container = "snaps"
batch = {{ max_events = 1, max_bytes = "8MiB", max_age = "1h" }}
"#
    );
    snapshot_lands_for_the_matching_event_only(&dest, || az_raw(port, "snaps")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_command_stores_a_picture_and_answers_with_its_timestamp() {
    let Some((moto, client)) = moto().await else {
        return;
    };
    let broker = common::Mosquitto::start().await;
    let mut replies = common::Subscriber::connect(broker.port, "cmd/lobby/reply").await;
    let emu = Arc::new(Emulator::start(EmulatorConfig::default()).await.unwrap());
    let dest = format!(
        r#"{}
[destination.broker]
kind = "mqtt"
url = "{}"
[[command]]
destination = "broker"
topic = "cmd/lobby/snapshot"
camera = "lobby"
action = "snapshot"
to = ["archive"]
reply_topic = "cmd/lobby/reply"
"#,
        s3_dest(moto.port, ""),
        broker.url()
    );
    let relay = RelayProcess::start(&relay_config(&emu, &dest, r#"["archive"]"#));
    relay.wait_for_log("listening for commands", T).await;
    common::publish_once(broker.port, "cmd/lobby/snapshot", "{}").await;
    let reply: serde_json::Value = serde_json::from_str(&replies.next(T).await.payload).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["bytes"], 141, "the emulator's JPEG: {reply}");
    let timestamp = reply["timestamp"].as_i64().unwrap();
    let objects = wait_store(&relay, &|| s3_raw(&client), "the snapshot", |o| {
        o.iter().any(|o| o.key.ends_with(".jpg"))
    })
    .await;
    let snap = objects.iter().find(|o| o.key.ends_with(".jpg")).unwrap();
    assert!(
        snap.key.starts_with("lobby/snapshots/")
            && snap
                .key
                .ends_with(&format!("/{timestamp}_Command.Snapshot.jpg")),
        "{}",
        snap.key
    );
    assert_eq!(&snap.body[..2], &[0xFF, 0xD8]);
    assert_eq!(
        snap.metadata.get("topic").map(String::as_str),
        Some("edgerelay:Command/Snapshot")
    );
}

// ---------------------------------------------------------------------------------------------
// Benchmark

/// Archive rate through the real sink into moto: an outbox filled with camera-sized events,
/// drained by `ObjectSink` with default batches. Run with
/// `cargo test --release --test object_store -- --ignored --nocapture bench_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release"]
async fn bench_archive_rate_to_moto() {
    use edgerelay::clock::{SharedClock, SystemClock};
    use edgerelay::config::DestinationConfig;
    use edgerelay::outbox::{DeadLetters, SharedOutbox};
    use edgerelay::sinks::mqtt::SinkStats;
    use edgerelay::sinks::object_store::ObjectSink;

    const EVENTS: u64 = 200_000;
    let Some((moto, _client)) = moto().await else {
        return;
    };
    for compression in ["gzip", "zstd"] {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) =
            Outbox::open(&dir.path().join("outbox"), OutboxOptions::default()).unwrap();
        let outbox = SharedOutbox::new(outbox);
        let dead = DeadLetters::open(dir.path(), "bench").unwrap();
        let clock: SharedClock = Arc::new(SystemClock);
        let records: Vec<Vec<u8>> = (0..EVENTS)
            .map(|n| {
                Delivery {
                    topic: "axis/ACCC8E012345/event/tns:onvif/Device/tns:axis/IO/VirtualInput/$source/port/1".into(),
                    payload: format!(
                        r#"{{"topic":"onvif:Device/axis:IO/VirtualInput","timestamp":{},"serial":"ACCC8E012345","message":{{"source":{{"port":"1"}},"key":{{}},"data":{{"active":"{}"}}}}}}"#,
                        1_735_732_800_000u64 + n,
                        n % 2
                    )
                    .into_bytes(),
                    qos: 1,
                    retain: false,
                    created_ms: 0,
                    camera: "lobby".into(),
                }
                .encode()
            })
            .collect();
        for chunk in records.chunks(2048) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            outbox.append(&refs, clock.now_ms()).unwrap();
        }
        let cfg: DestinationConfig = toml::from_str(&format!(
            "{}\nkey = \"bench-{compression}/{{first_seq}}\"",
            s3_dest(moto.port, &format!("compression = \"{compression}\""))
                .replace("[destination.archive]\n", "")
        ))
        .unwrap();
        let sink = ObjectSink::from_config(
            "archive".into(),
            &cfg,
            clock.clone(),
            "0123456789abcdef".into(),
        )
        .unwrap()
        .unwrap();
        let stats = Arc::new(SinkStats::default());
        let start = Instant::now();
        let task = tokio::spawn(sink.run(outbox.clone(), dead, stats.clone()));
        while stats.acked.load(Ordering::Relaxed) < EVENTS {
            assert!(start.elapsed() < Duration::from_secs(300), "bench too slow");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        task.abort();
        println!(
            "archive {compression}: {EVENTS} events in {secs:.2} s = {:.0} events/s",
            EVENTS as f64 / secs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_unreachable_then_back_archives_every_event_once() {
    let Some(azurite) = azurite().await else {
        return;
    };
    let port = azurite.port;
    az_create_container(port, "outage").await;
    let proxy = Proxy::start(port).await;
    proxy.set_up(false);
    let dest = format!(
        r#"[destination.archive]
kind = "azure-blob"
connection_string = "AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};BlobEndpoint=http://127.0.0.1:{}/{AZ_ACCOUNT}"
container = "outage"
batch = {{ max_events = 20, max_bytes = "8MiB", max_age = "1s" }}
"#,
        proxy.port
    );
    let (emu, relay) = start_relay(&dest, r#"["archive"]"#).await;
    for n in 0..50 {
        emu.emit(&event(n));
    }
    let end = Instant::now() + T;
    while !relay.log().contains("object upload failed") {
        assert!(Instant::now() < end, "no failed upload:\n{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 50..100 {
        emu.emit(&event(n));
    }
    assert!(az_archive(port, "outage").await.is_empty());
    proxy.set_up(true);
    let objects = wait_store(
        &relay,
        || az_archive(port, "outage"),
        "100 events",
        |o| all_numbers(o).len() >= 100,
    )
    .await;
    assert_eq!(all_numbers(&objects), (0..100).collect::<Vec<_>>());
}
