//! Added latency at a steady rate: emit time in the payload, arrival at a QoS 1 subscriber.
//!
//! Known (measured 2025-11): the relay path's p99 sits near 30-40 ms while the plain-client
//! baseline stays under 5 ms. Cause: Nagle on the emulator's WebSocket socket (axum does not set
//! TCP_NODELAY) against delayed ACKs on the relay's read-only WebSocket connection; with
//! `set_nodelay(true)` on the emulator's accepted sockets, p50/p99 drop to ~0.3/~1 ms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;

use super::e2e::{Running, event};
use super::mosquitto::Mosquitto;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub count: usize,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Who sends the timed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Emulated camera → relay → broker (what the row measures).
    Relay,
    /// A plain rumqttc client publishing QoS 1 straight to the broker (the baseline).
    Raw,
}

/// Sends `rate` messages/s for `secs` seconds along `path` and measures send → subscriber arrival.
pub async fn measure(
    broker: &Mosquitto,
    path: Path,
    rate: u32,
    secs: u32,
) -> anyhow::Result<Latency> {
    let total = (rate * secs) as usize;
    let (samples_tx, samples_rx) = oneshot::channel::<Vec<u64>>();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let mut opts = MqttOptions::new("edgerelay-bench-sub", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 100);
    let mut net = el.network_options();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    client.subscribe("bench/#", QoS::AtLeastOnce).await?;
    let sub = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut samples_tx = Some(samples_tx);
        let mut samples = Vec::with_capacity(total);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = now_us();
                    let sent = p
                        .payload
                        .split(|b| *b == b' ')
                        .next()
                        .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok());
                    if let Some(t) = sent {
                        samples.push(now.saturating_sub(t));
                    }
                    if samples.len() >= total
                        && let Some(tx) = samples_tx.take()
                    {
                        let _ = tx.send(std::mem::take(&mut samples));
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let result = async {
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .context("no SUBACK within 10 s")??;
        let sender = match path {
            Path::Relay => Sender::Relay(Box::new(
                Running::start(broker, "edgerelay-bench-latency", true).await?,
            )),
            Path::Raw => Sender::raw(broker).await?,
        };
        let interval = Duration::from_secs(1) / rate;
        let start = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(start + interval * i as u32).await;
            sender.send(now_us())?;
        }
        let got = tokio::time::timeout(Duration::from_secs(60), samples_rx).await;
        sender.stop().await;
        let mut us = match got {
            Ok(Ok(v)) => v,
            _ => bail!("not all {total} events reached the subscriber within 60 s"),
        };
        us.sort_unstable();
        let pick = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Ok(Latency {
            p50: pick(0.50),
            p99: pick(0.99),
            max: pick(1.0),
            count: us.len(),
        })
    }
    .await;
    sub.abort();
    let _ = client.try_disconnect();
    result
}

enum Sender {
    Relay(Box<Running>),
    Raw(AsyncClient, tokio::task::JoinHandle<()>),
}

impl Sender {
    /// A plain client with default network options (as the relay's sink has).
    async fn raw(broker: &Mosquitto) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new("edgerelay-bench-raw-latency", "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(super::e2e::INFLIGHT);
        let (client, mut el) = AsyncClient::new(opts, 1024);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("no CONNACK within 10 s")??;
        Ok(Self::Raw(client, task))
    }

    fn send(&self, t: u64) -> anyhow::Result<()> {
        match self {
            Self::Relay(r) => r.emu.emit(&event(t)),
            Self::Raw(c, _) => c.try_publish(
                "bench/raw-latency",
                QoS::AtLeastOnce,
                false,
                format!("{t} {}", "x".repeat(super::e2e::PAD)),
            )?,
        }
        Ok(())
    }

    async fn stop(self) {
        match self {
            Self::Relay(r) => r.stop().await,
            Self::Raw(c, task) => {
                let _ = c.try_disconnect();
                tokio::time::sleep(Duration::from_millis(20)).await;
                task.abort();
            }
        }
    }
}
