//! The raw ceiling: one plain rumqttc client publishing QoS 1 to the broker, counting PUBACKs.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::mosquitto::Mosquitto;

/// QoS 1 messages of `len` bytes per second, from the first publish to the `n`th PUBACK, with
/// `inflight` unacknowledged publishes (the same window the relay is given).
pub async fn ceiling(broker: &Mosquitto, n: u64, len: usize, inflight: u16) -> anyhow::Result<f64> {
    let mut opts = MqttOptions::new("edgerelay-bench-raw", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(inflight);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, inflight as usize + 8);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = el.poll().await? {
                return Ok::<_, rumqttc::ConnectionError>(());
            }
        }
    })
    .await
    .context("no CONNACK within 10 s")??;

    let payload = vec![b'x'; len];
    let start = Instant::now();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                if client
                    .publish("bench/raw", QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let mut acked = 0u64;
    let deadline = start + Duration::from_secs(120);
    while acked < n {
        match tokio::time::timeout_at(deadline.into(), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("connection lost after {acked} PUBACKs: {e}"),
            Err(_) => bail!("only {acked} of {n} PUBACKs within 120 s"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    publisher.abort();
    let _ = client.try_disconnect();
    Ok(n as f64 / secs.max(1e-9))
}
