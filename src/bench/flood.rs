//! The flood row (issue 15): one camera floods `n` events through the relay at its *default*
//! destination config (no `inflight`, no `buffer`: the paced window, fsync on) to Mosquitto,
//! and a subscriber at the far side counts them; in the same run, a plain rumqttc client
//! publishes the same messages through the same broker to the same subscriber. Both rates run
//! from the first emit (publish) to the `n`th message counted at the far side.
//!
//! The plain client is rumqttc 0.25 at its defaults (`MqttOptions::new`: in-flight window 100,
//! as most client libraries ship), a request queue of 100, one task awaiting each `publish`
//! (which waits for room in the queue, not for the PUBACK) and the event loop polled in
//! another: what an application's first MQTT publisher looks like.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::e2e::{PAD, event, wait_until};
use super::mosquitto::Mosquitto;
use super::tmp::TempDir;
use crate::clock::{SharedClock, SystemClock};
use crate::pipeline::Relay;
use crate::sources::emulator::{Emulator, EmulatorConfig};

/// Longest wait for one run.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Rates of one flood: the relay at its defaults and the plain client, messages/s.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// The relay at its default config.
    pub relay: f64,
    /// The plain rumqttc client.
    pub plain: f64,
}

/// Runs the plain client and the relay `rounds` times each, alternately, and keeps the best
/// rate of each (the box is shared: the best run is the one least disturbed).
pub async fn run(broker: &Mosquitto, n: u64, rounds: usize) -> anyhow::Result<Flood> {
    let counter = Counter::start(broker).await?;
    let (mut relay, mut plain) = (0f64, 0f64);
    for _ in 0..rounds.max(1) {
        plain = plain.max(plain_client(broker, &counter, n).await?);
        relay = relay.max(through_relay(broker, &counter, n).await?);
    }
    counter.stop();
    Ok(Flood { relay, plain })
}

/// A QoS 0 subscriber on `flood/#` counting what arrives (QoS 0, so that the broker's
/// outgoing in-flight limit for subscribers is not what is measured).
struct Counter {
    count: Arc<AtomicU64>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    async fn start(broker: &Mosquitto) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new("edgerelay-bench-flood-sub", "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(opts, 16);
        client.subscribe("flood/#", QoS::AtMostOnce).await?;
        let count = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = {
            let count = count.clone();
            tokio::spawn(async move {
                let mut tx = Some(tx);
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::Publish(_))) => {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("no SUBACK within 10 s")??;
        Ok(Self {
            count,
            client,
            task,
        })
    }

    fn now(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `n` more than `base` arrived.
    async fn wait_for(&self, base: u64, n: u64) -> anyhow::Result<()> {
        wait_until(TIMEOUT, || self.now() >= base + n)
            .await
            .with_context(|| format!("{} of {n} counted at the far side", self.now() - base))
    }

    fn stop(self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

/// The message of event `t`: what the relay's rule makes of it (`{data.t} xxx…`).
fn payload(t: u64) -> String {
    format!("{t} {}", "x".repeat(PAD))
}

async fn plain_client(broker: &Mosquitto, counter: &Counter, n: u64) -> anyhow::Result<f64> {
    let opts = MqttOptions::new("edgerelay-bench-flood-plain", "127.0.0.1", broker.port);
    let (client, mut el) = AsyncClient::new(opts, 100);
    let poll = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let base = counter.now();
    let start = Instant::now();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for t in 0..n {
                if client
                    .publish("flood/plain", QoS::AtLeastOnce, false, payload(t))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let done = counter.wait_for(base, n).await;
    let secs = start.elapsed().as_secs_f64();
    publisher.abort();
    let _ = client.try_disconnect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    poll.abort();
    done?;
    Ok(n as f64 / secs.max(1e-9))
}

/// The relay's config: one camera, one rule, one `mqtt` destination with nothing but its URL
/// (every other key at its default).
fn relay_config(data_dir: &std::path::Path, camera: &str, broker: &Mosquitto) -> String {
    format!(
        r#"[relay]
data_dir = "{data_dir}"
[[camera]]
name = "lobby"
url = "{camera}"
username = "bridge"
password = "fixture-pass"
[destination.broker]
kind = "mqtt"
url = "{url}"
[[rule]]
name = "flood"
to = ["broker"]
mqtt_topic = "flood/{{camera}}"
payload = "{{data.t}} {pad}"
"#,
        data_dir = data_dir.display(),
        url = broker.url(),
        pad = "x".repeat(PAD),
    )
}

async fn through_relay(broker: &Mosquitto, counter: &Counter, n: u64) -> anyhow::Result<f64> {
    let dir = TempDir::new("flood")?;
    let emu = Emulator::start(EmulatorConfig::default()).await?;
    let text = relay_config(&dir.path().join("data"), &emu.base_url(), broker);
    let cfg = toml::from_str(&text).context("flood config")?;
    let clock: SharedClock = Arc::new(SystemClock);
    let relay = Relay::start(cfg, clock).await?;
    let stats = relay.destinations[0].2.clone();
    let ready = async {
        if !emu.wait_for_clients(1, Duration::from_secs(30)).await {
            bail!("the relay did not connect to the emulated camera within 30 s");
        }
        wait_until(Duration::from_secs(30), || {
            stats.connects.load(Ordering::Relaxed) > 0
        })
        .await
        .context("the relay did not connect to the broker")
    }
    .await;
    let result = match ready {
        Ok(()) => {
            let base = counter.now();
            let start = Instant::now();
            for t in 0..n {
                emu.emit(&event(t));
                if t % 256 == 255 {
                    tokio::task::yield_now().await;
                }
            }
            let done = counter.wait_for(base, n).await;
            done.map(|()| n as f64 / start.elapsed().as_secs_f64().max(1e-9))
        }
        Err(e) => Err(e),
    };
    relay.shutdown().await;
    emu.shutdown().await;
    result
}
