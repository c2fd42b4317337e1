//! Real peers for end-to-end tests: a Mosquitto broker on a free loopback port, an MQTT
//! subscriber, and the relay binary as a child process.
#![allow(dead_code)]

pub mod pki;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgerelay::sources::emulator::{Emulator, Notification};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MOSQUITTO") {
        return p.into();
    }
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "mosquitto".into()
}

/// Waits until something accepts TCP connections on the port (a started server is ready).
pub async fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A Mosquitto broker owned by one test.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: String,
}

impl Mosquitto {
    /// Starts a broker on a free port that accepts anonymous clients.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a broker that only admits the given users (password file, reloaded on SIGHUP).
    pub async fn start_with_users(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("passwd");
        std::fs::write(&pw, "").unwrap();
        for (u, p) in users {
            add_password(&pw, u, p);
        }
        let extra = format!("allow_anonymous false\npassword_file {}", pw.display());
        let mut m = Self {
            port: free_port(),
            dir,
            child: None,
            extra,
        };
        m.restart().await;
        m
    }

    /// Adds a user to the password file and makes the running broker reload it.
    pub fn add_user(&mut self, user: &str, pass: &str) {
        add_password(&self.dir.path().join("passwd"), user, pass);
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Starts a broker that saves sessions and queued messages when stopped gracefully, so a
    /// persistent subscriber misses nothing across a broker restart.
    pub async fn start_persistent() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Mosquitto started as root drops to its own user before it writes the database.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        // `restart` writes `persistence false` first; the later line wins.
        let extra = format!(
            "persistence true\npersistence_location {}/\npersistence_file mosquitto.db",
            dir.path().display()
        );
        let mut m = Self {
            port: free_port(),
            dir,
            child: None,
            extra,
        };
        m.restart().await;
        m
    }

    /// Stops the broker with SIGTERM and waits: it saves its state first.
    pub fn stop_graceful(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Starts a broker with extra lines in its config.
    pub async fn start_with(extra: &str) -> Self {
        let mut m = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.to_string(),
        };
        m.restart().await;
        m
    }

    /// (Re)starts the broker on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        let conf = self.dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        let anonymous = if self.extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        writeln!(
            f,
            "listener {} 127.0.0.1\n{anonymous}persistence false\nmax_queued_messages 0\n{}",
            self.port, self.extra
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)).await,
            "mosquitto did not start"
        );
    }

    /// Stops the broker (an outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// What the broker logged (connections, disconnections and why).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn add_password(file: &Path, user: &str, pass: &str) {
    let ok = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(file)
        .arg(user)
        .arg(pass)
        .status()
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(ok.success());
}

/// Publishes one QoS 1 message and returns once the broker acknowledged it.
pub async fn publish_once(port: u16, topic: &str, payload: &str) {
    let mut opts = MqttOptions::new(
        format!("test-pub-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = el.poll().await {
                return;
            }
        }
    })
    .await
    .expect("no PUBACK");
}

/// One message as a subscriber saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
    pub qos: u8,
}

/// An MQTT subscriber on a broker.
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Received>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects and subscribes to `filter` at QoS 1; returns once the broker confirmed it.
    pub async fn connect(port: u16, filter: &str) -> Self {
        Self::connect_as(port, filter, None).await
    }

    /// The same, with credentials.
    pub async fn connect_as(port: u16, filter: &str, login: Option<(&str, &str)>) -> Self {
        Self::connect_opts(port, filter, login, None).await
    }

    /// A subscriber whose session the broker keeps (clean session off, fixed id) and that
    /// reconnects on its own: with [`Mosquitto::start_persistent`] it misses nothing.
    pub async fn persistent(port: u16, filter: &str, id: &str) -> Self {
        Self::connect_opts(port, filter, None, Some(id)).await
    }

    async fn connect_opts(
        port: u16,
        filter: &str,
        login: Option<(&str, &str)>,
        persistent_id: Option<&str>,
    ) -> Self {
        let id = persistent_id.map_or_else(
            || format!("test-sub-{}", rand::random::<u32>()),
            str::to_string,
        );
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(persistent_id.is_none());
        opts.set_inflight(1000);
        if let Some((u, p)) = login {
            opts.set_credentials(u, p);
        }
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(opts, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let resubscribe = (client.clone(), filter.to_string());
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack)))
                        if !ack.session_present && ready.is_none() =>
                    {
                        // The broker forgot us: subscribe again.
                        let _ = resubscribe
                            .0
                            .try_subscribe(&resubscribe.1, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                            qos: p.qos as u8,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("no SUBACK")
            .unwrap();
        Self { rx, client, task }
    }

    /// The next message, or panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Received {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .expect("timed out waiting for an MQTT message")
            .expect("subscriber closed")
    }

    /// The next message, or `None` after `timeout`.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message whose topic does not start with `edgerelay/` (skips the relay's own).
    pub async fn next_event(&mut self, timeout: Duration) -> Received {
        loop {
            let m = self.next(timeout).await;
            if !m.topic.starts_with("edgerelay/") {
                return m;
            }
        }
    }

    /// Nothing more arrives within `quiet` (used only after a positive marker message).
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        if let Ok(Some(m)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected message {m:?}");
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The relay binary running one config.
pub struct RelayProcess {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Base URL of its HTTP endpoint, when the config has `http = "{http}"`.
    pub http: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl RelayProcess {
    /// Writes `config` (with `{data_dir}` replaced) and starts `edgerelay run`.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// The same with extra environment variables; `{http}` becomes a free loopback address.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let text = config
            .replace("{data_dir}", &dir.path().join("data").display().to_string())
            .replace("{http}", &addr);
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let mut r = Self {
            dir,
            config: path,
            http: format!("http://{addr}"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        r.spawn();
        r
    }

    /// (Re)starts the process on the same config and data directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("relay.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_edgerelay"))
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .env("RUST_LOG", "edgerelay=debug,info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGTERM, then the exit status (panics if it takes longer than `within`).
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let end = Instant::now() + within;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                panic!("relay did not stop within {within:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to end by itself; its exit status (panics after `within`).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + within;
        let c = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < end,
                "relay still running after {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Forgets the extra environment variables (for the next [`RelayProcess::spawn`]).
    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// SIGHUP: reload the config file.
    pub fn hup(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Replaces the config file (placeholders filled as at start), for a reload.
    pub fn rewrite_config(&self, config: &str) {
        let addr = self.http.trim_start_matches("http://");
        let text = config
            .replace(
                "{data_dir}",
                &self.dir.path().join("data").display().to_string(),
            )
            .replace("{http}", addr);
        std::fs::write(&self.config, text).unwrap();
    }

    /// Waits until the log holds `needle` (the relay's own word that something happened).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < end,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The relay's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- relay log ---\n{}", self.log());
        }
    }
}

/// The relay's in-flight window in load tests: the bound on duplicates per disconnection.
pub const INFLIGHT: usize = 100;

/// The lines of a destination's dead-letter file (`data_dir/dead-letter/NAME.ndjson`).
pub fn dead_letters(relay: &RelayProcess, destination: &str) -> Vec<serde_json::Value> {
    let path = relay
        .dir
        .path()
        .join("data/dead-letter")
        .join(format!("{destination}.ndjson"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The stored record of one dead letter (its `record_b64`).
pub fn dead_letter_record(line: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(line["record_b64"].as_str().unwrap())
        .unwrap()
}

/// A numbered event: its `n` lets the test check loss, order and duplicates.
pub fn numbered(n: u64) -> Notification {
    Notification {
        topic: "tns1:Device/tnsaxis:IO/VirtualInput".into(),
        timestamp: Some(1_750_000_000_000 + n as i64),
        source: vec![("port".into(), "1".into())],
        key: vec![],
        data: vec![("n".into(), n.to_string())],
    }
}

/// A relay config that sends every event as `load/{camera}` with payload `n` (camera
/// availability off: these tests count deliveries and messages exactly).
pub fn load_config(emu: &Emulator, broker: &Mosquitto, extra_dest: &str) -> String {
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
availability_topic = ""
url = "{}"
client_id = "relay-under-test"
inflight = {INFLIGHT}
{extra_dest}
[[rule]]
name = "load"
to = ["broker"]
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
"#,
        emu.base_url(),
        broker.url()
    )
}
