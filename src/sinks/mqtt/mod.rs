//! MQTT destination: drains one outbox into one broker with rumqttc.
//!
//! An entry leaves the outbox only after the broker acknowledged it (PUBACK for QoS 1, PUBCOMP
//! for QoS 2) or, for QoS 0, after the client wrote it. On any connection error the client is
//! dropped with its in-memory state and a new one resends from the outbox head, so order is
//! kept across reconnects and duplicates are limited to the in-flight window.

pub mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
};

use crate::config::{MessageConfig, MqttDestination};
use crate::delivery::Delivery;
use crate::outbox::{DeadLetters, SharedOutbox};
use crate::sources::backoff::Backoff;
use window::AckWindow;

/// Connection state of a destination, for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkState {
    /// Not connected (connecting or backing off).
    Disconnected,
    /// Connected and draining.
    Connected,
}

/// Live counters of one destination.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Deliveries handed to the client (resends included).
    pub sent: AtomicU64,
    /// Deliveries acknowledged and removed from the outbox.
    pub acked: AtomicU64,
    /// Deliveries moved to the dead-letter file.
    pub dead_lettered: AtomicU64,
    /// Connections made.
    pub connects: AtomicU64,
}

/// A resolved MQTT destination.
#[derive(Debug, Clone)]
pub struct MqttSink {
    /// Destination name.
    pub name: Arc<str>,
    /// Its config.
    pub config: MqttDestination,
    /// Print each delivery to stdout when published (demo).
    pub print: bool,
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Why a destination URL is unusable (validation catches these first).
#[derive(Debug, thiserror::Error)]
#[error("destination url {0:?}: {1}")]
pub struct UrlError(String, &'static str);

impl MqttSink {
    /// rumqttc options from the config.
    pub fn options(&self) -> Result<MqttOptions, UrlError> {
        let c = &self.config;
        let url = url::Url::parse(&c.url).map_err(|_| UrlError(c.url.clone(), "not a URL"))?;
        let (default_port, tls) = match url.scheme() {
            "mqtt" | "tcp" => (1883, false),
            "mqtts" | "ssl" => (8883, true),
            _ => {
                return Err(UrlError(
                    c.url.clone(),
                    "scheme must be mqtt:// (TLS and WebSocket come later)",
                ));
            }
        };
        if tls {
            return Err(UrlError(c.url.clone(), "mqtts:// is not supported yet"));
        }
        let host = url.host_str().ok_or(UrlError(c.url.clone(), "no host"))?;
        let port = url.port().unwrap_or(default_port);
        let client_id = c
            .client_id
            .clone()
            .unwrap_or_else(|| format!("edgerelay-{}", self.name));
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_keep_alive(Duration::from_secs(c.keep_alive_s.max(1)));
        o.set_clean_session(c.clean_session);
        o.set_inflight(c.inflight.max(1));
        o.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &c.username {
            o.set_credentials(user, c.password.clone().unwrap_or_default());
        }
        if let Some(w) = &c.last_will {
            o.set_last_will(LastWill::new(
                &w.topic,
                w.message.clone(),
                qos(w.qos),
                w.retain,
            ));
        }
        Ok(o)
    }

    /// Drains the outbox forever (until the task is aborted), reconnecting with back-off.
    pub async fn run(
        self,
        outbox: Arc<SharedOutbox>,
        mut dead: DeadLetters,
        stats: Arc<SinkStats>,
    ) {
        let opts = match self.options() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(destination = %self.name, error = %e, "destination disabled");
                return;
            }
        };
        let mut backoff = Backoff::new(Duration::from_secs(30));
        let mut last_error = String::new();
        loop {
            let window = self.config.inflight.max(1) as usize;
            let (client, mut eventloop) = AsyncClient::new(opts.clone(), window + 8);
            let mut net = eventloop.network_options();
            net.set_connection_timeout(self.config.connect_timeout_s.max(1));
            eventloop.set_network_options(net);
            let error = self
                .connection(
                    &client,
                    &mut eventloop,
                    &outbox,
                    &mut dead,
                    &stats,
                    &mut backoff,
                )
                .await;
            if error != last_error {
                tracing::warn!(destination = %self.name, %error, "broker connection lost; resending unacknowledged deliveries after reconnect");
                last_error = error;
            }
            tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
        }
    }

    /// One connection: returns the error that ended it.
    async fn connection(
        &self,
        client: &AsyncClient,
        eventloop: &mut EventLoop,
        outbox: &SharedOutbox,
        dead: &mut DeadLetters,
        stats: &SinkStats,
        backoff: &mut Backoff,
    ) -> String {
        let mut window = AckWindow::new(self.config.inflight.max(1) as usize);
        let mut next_read = 0u64;
        let mut connected = false;
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Err(e) => return e.to_string(),
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff.reset();
                        stats.connects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(destination = %self.name, url = %self.config.url, "broker connected");
                        if let Some(m) = &self.config.connect_message {
                            publish_own(client, &mut window, m);
                        }
                    }
                    Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => window.on_outgoing(pkid),
                    Ok(MqttEvent::Incoming(Packet::PubAck(a))) => window.on_ack(a.pkid),
                    Ok(MqttEvent::Incoming(Packet::PubComp(a))) => window.on_ack(a.pkid),
                    Ok(_) => {}
                },
                _ = outbox.wait_for_data(next_read), if connected && window.room() > 0 => {
                    let entries = match outbox.read(next_read, window.room()) {
                        Ok(e) => e,
                        Err(e) => return format!("reading the outbox: {e}"),
                    };
                    for entry in entries {
                        next_read = entry.seq + 1;
                        let d = match Delivery::decode(&entry.data) {
                            Ok(d) => d,
                            Err(e) => {
                                // Never retried forever, never silently dropped.
                                if let Err(io) = dead.put(entry.seq, entry.time_ms, &entry.data, &e.to_string()) {
                                    tracing::error!(destination = %self.name, error = %io, "cannot write dead letter");
                                }
                                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                                window.push_done(entry.seq);
                                continue;
                            }
                        };
                        if self.print {
                            println!("{} {}", d.topic, String::from_utf8_lossy(&d.payload));
                        }
                        if let Err(e) = client.try_publish(d.topic, qos(d.qos), d.retain, d.payload) {
                            return format!("client queue: {e}");
                        }
                        window.push(Some(entry.seq), d.qos);
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let (Some(seq), count) = window.release() {
                if let Err(e) = outbox.ack_through(seq) {
                    return format!("acknowledging in the outbox: {e}");
                }
                stats.acked.fetch_add(count, Ordering::Relaxed);
            }
        }
    }
}

/// Publishes one of the relay's own messages (connect message) through the window.
fn publish_own(client: &AsyncClient, window: &mut AckWindow, m: &MessageConfig) {
    if client
        .try_publish(
            &m.topic,
            qos(m.qos),
            m.retain,
            m.message.clone().into_bytes(),
        )
        .is_ok()
    {
        window.push(None, m.qos);
    }
}
