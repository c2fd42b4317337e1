//! End to end through the whole relay in this process: emulated camera → `Relay` → Mosquitto.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::mosquitto::Mosquitto;
use super::tmp::TempDir;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::outbox::Outbox;
use crate::pipeline::{Relay, outbox_options};
use crate::sinks::mqtt::SinkStats;
use crate::sources::emulator::{Emulator, EmulatorConfig, Notification};

/// Unacknowledged publishes the relay (and the raw client) may have in flight.
pub const INFLIGHT: u16 = 500;
/// The destination's name (and its outbox directory).
const DEST: &str = "broker";
/// Padding after `{data.t} ` so that a message is about 300 bytes.
pub const PAD: usize = 290;
/// Longest wait for a run to finish.
const TIMEOUT: Duration = Duration::from_secs(180);

/// A relay config: one camera (if any) → one rule → one MQTT destination, QoS 1, topic
/// `bench/{camera}`, payload `{data.t} xxx…` (~300 bytes).
pub fn config(
    data_dir: &Path,
    camera_url: Option<&str>,
    broker: &Mosquitto,
    client_id: &str,
    fsync: bool,
) -> anyhow::Result<Config> {
    let camera = camera_url
        .map(|u| {
            format!(
                "[[camera]]\nname = \"lobby\"\nurl = \"{u}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\n"
            )
        })
        .unwrap_or_default();
    let text = format!(
        r#"[relay]
data_dir = "{data_dir}"
{camera}
[destination.{DEST}]
kind = "mqtt"
url = "{url}"
client_id = "{client_id}"
inflight = {INFLIGHT}
buffer = {{ fsync = {fsync} }}
[[rule]]
name = "bench"
to = ["{DEST}"]
mqtt_topic = "bench/{{camera}}"
qos = 1
payload = "{{data.t}} {pad}"
"#,
        data_dir = data_dir.display(),
        url = broker.url(),
        pad = "x".repeat(PAD),
    );
    toml::from_str(&text).context("bench config")
}

/// The event the camera sends; `t` ends up at the start of the payload.
pub fn event(t: u64) -> Notification {
    Notification {
        topic: "tns1:Device/tnsaxis:IO/VirtualInput".into(),
        timestamp: Some(1_750_000_000_000),
        source: vec![("port".into(), "1".into())],
        key: vec![],
        data: vec![("t".into(), t.to_string())],
    }
}

/// A relay fed by an emulated camera, connected on both sides.
pub struct Running {
    pub emu: Emulator,
    pub relay: Relay,
    pub stats: Arc<SinkStats>,
    _dir: TempDir,
}

impl Running {
    pub async fn start(broker: &Mosquitto, client_id: &str, fsync: bool) -> anyhow::Result<Self> {
        let dir = TempDir::new("e2e")?;
        let emu = Emulator::start(EmulatorConfig::default()).await?;
        let cfg = config(
            &dir.path().join("data"),
            Some(&emu.base_url()),
            broker,
            client_id,
            fsync,
        )?;
        let clock: SharedClock = Arc::new(SystemClock);
        let relay = Relay::start(cfg, clock).await?;
        let stats = relay.destinations[0].2.clone();
        if !emu.wait_for_clients(1, Duration::from_secs(30)).await {
            bail!("the relay did not connect to the emulated camera within 30 s");
        }
        wait_until(Duration::from_secs(30), || {
            stats.connects.load(Ordering::Relaxed) > 0
        })
        .await
        .context("the relay did not connect to the broker")?;
        Ok(Self {
            emu,
            relay,
            stats,
            _dir: dir,
        })
    }

    pub async fn stop(self) {
        self.relay.shutdown().await;
        self.emu.shutdown().await;
    }
}

/// Polls `f` every 5 ms until it holds; error after `timeout`.
pub async fn wait_until(timeout: Duration, f: impl Fn() -> bool) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    while !f() {
        if Instant::now() > end {
            bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn wait_acked(stats: &SinkStats, n: u64) -> anyhow::Result<()> {
    wait_until(TIMEOUT, || stats.acked.load(Ordering::Relaxed) >= n)
        .await
        .with_context(|| {
            format!(
                "{} of {n} acknowledged",
                stats.acked.load(Ordering::Relaxed)
            )
        })
}

/// Events per second from the first emit to the `n`th PUBACK.
pub async fn throughput(broker: &Mosquitto, n: u64, fsync: bool) -> anyhow::Result<f64> {
    let id = format!(
        "edgerelay-bench-e2e-{}",
        if fsync { "fsync" } else { "nofsync" }
    );
    let r = Running::start(broker, &id, fsync).await?;
    let start = Instant::now();
    for i in 0..n {
        r.emu.emit(&event(i));
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    let done = wait_acked(&r.stats, n).await;
    let secs = start.elapsed().as_secs_f64();
    r.stop().await;
    done?;
    Ok(n as f64 / secs.max(1e-9))
}

/// Deliveries per second drained from an outbox pre-filled with `n` (written directly into the
/// data dir while nothing runs), from `Relay::start` to the `n`th PUBACK.
pub async fn drain(broker: &Mosquitto, n: u64) -> anyhow::Result<f64> {
    let dir = TempDir::new("drain")?;
    let data = dir.path().join("data");
    let cfg = config(&data, None, broker, "edgerelay-bench-drain", true)?;
    let (mut ob, _) = Outbox::open(
        &data.join("outbox").join(DEST),
        outbox_options(cfg.destination[DEST].buffer())?,
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let records: Vec<Vec<u8>> = (0..256)
        .map(|i| {
            Delivery {
                topic: "bench/lobby".into(),
                payload: format!("{i} {}", "x".repeat(PAD)).into_bytes(),
                qos: 1,
                retain: false,
                created_ms: now,
                camera: "lobby".into(),
            }
            .encode()
        })
        .collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(refs.len());
        ob.append(&refs[..k], now)?.all_accepted()?;
        left -= k;
    }
    drop(ob);

    let start = Instant::now();
    let clock: SharedClock = Arc::new(SystemClock);
    let relay = Relay::start(cfg, clock).await?;
    let stats = relay.destinations[0].2.clone();
    let done = wait_acked(&stats, n).await;
    let secs = start.elapsed().as_secs_f64();
    relay.shutdown().await;
    done?;
    Ok(n as f64 / secs.max(1e-9))
}
