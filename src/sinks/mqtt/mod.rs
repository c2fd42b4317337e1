//! MQTT destination: drains one outbox into one broker with rumqttc.
//!
//! An entry leaves the outbox only after the broker acknowledged it (PUBACK for QoS 1, PUBCOMP
//! for QoS 2) or, for QoS 0, after the client wrote it. On any connection error the client is
//! dropped with its in-memory state and a new one resends from the outbox head, so order is
//! kept across reconnects and duplicates are limited to the in-flight window: [`pace`] sizes it
//! from how promptly acknowledgements come back, never above the destination's `inflight`.
//!
//! One sink serves every MQTT-speaking kind: [`destination`] turns `mqtt`, `azure-iot-hub` and
//! `aws-iot-core` configs into connection settings plus a [`Flavor`] that shapes (or rejects)
//! each delivery before it is published; [`tls`] builds the TLS side. The same connection
//! carries the destination's `[[command]]`s ([`downlink`]): subscribed on every connect,
//! replies published through the ack window like the connect message. With commands, incoming
//! publishes are acknowledged by hand (rumqttc manual acks): a command's PUBACK goes out once
//! its camera's worker answered it, on the connection it came on; anything else at once.

pub mod aws;
pub mod azure;
pub mod destination;
pub mod downlink;
pub mod flavor;
pub mod limits;
pub mod pace;
pub mod refusal;
pub mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::tls;
use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};

use crate::clock::SharedClock;
use crate::commands::{AckToken, Done, Job};
use crate::config::{MessageConfig, MqttDestination};
use crate::delivery::Delivery;
use crate::outbox::Entry;
use crate::outbox::{DeadLetters, SharedOutbox};
use crate::sources::backoff::Backoff;
use flavor::{Flavor, Prepared};
use pace::Pace;
use refusal::RefusalGuard;
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
    /// Connected to the broker now (CONNACK received, connection not ended).
    pub connected: AtomicBool,
    /// Accepted → acknowledged, per delivery.
    pub latency: Latency,
    /// Why it is red and since when (`/status`).
    pub health: std::sync::Mutex<crate::observe::health::Health>,
    /// The last dead letters (`/status`), filled by [`DeadLetters::put`] once kept.
    pub recent_dead: Arc<crate::outbox::dead_letter::RecentDeadLetters>,
    /// A backlog draining now, as the watch last measured it (`/status`).
    pub drain: std::sync::Mutex<Option<crate::observe::watch::DrainView>>,
    /// Acknowledgements over the last hour (`/status` charts), fed by the history task.
    pub acked_history: crate::observe::history::Shared,
    /// Outbox depth over the last hour (`/status` charts), fed by the history task.
    pub depth_history: crate::observe::history::Shared,
}

impl SinkStats {
    /// Why it is red and since when.
    pub fn health(&self) -> crate::observe::health::Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the health under its lock.
    pub fn with_health(&self, f: impl FnOnce(&mut crate::observe::health::Health)) {
        f(&mut self.health.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Upper bounds (seconds) of the latency buckets: milliseconds on a healthy link, up to a day
/// when a backlog drains after an outage.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 1800.0,
    3600.0, 21600.0, 86400.0,
];

/// End-to-end latency of a destination's deliveries, from the outbox accepting the event to the
/// destination acknowledging it (a Prometheus histogram; clones share the counts).
#[derive(Debug, Clone)]
pub struct Latency(pub prometheus_client::metrics::histogram::Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(
            LATENCY_BUCKETS,
        ))
    }
}

impl Latency {
    /// Records one delivery that took `ms` (negative, from a clock step back, counts as 0).
    pub fn observe_ms(&self, ms: i64) {
        self.0.observe(ms.max(0) as f64 / 1000.0);
    }
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
    /// Per-kind shaping of deliveries.
    pub flavor: Flavor,
    /// Azure SAS devices: the key that makes a fresh password for every connection.
    pub sas: Option<azure::SasKey>,
    /// Clock of SAS tokens and of the refusal window.
    pub clock: SharedClock,
    /// Largest PUBLISH packet this destination takes (topic, payload, headers), in bytes.
    pub max_packet: usize,
    /// The `[[command]]`s arriving over this connection.
    pub commands: Option<crate::commands::CommandLink>,
    /// This relay's id (`data_dir/relay-id`): with the outbox sequence, a delivery's
    /// `event_id` ([`crate::identity::event_id`]).
    pub relay_id: Arc<str>,
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

/// Why a destination cannot be connected at all (a config problem: no retry helps).
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Certificates, keys.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// SAS token.
    #[error("SAS token: {0}")]
    Sas(String),
}

/// How a connection ended.
enum Ended {
    /// An error; reconnect after back-off.
    Error(String),
    /// The SAS token is due for renewal; reconnect now.
    Renew,
}

impl MqttSink {
    /// rumqttc options from the config.
    pub fn options(&self) -> Result<MqttOptions, OptionsError> {
        let c = &self.config;
        let url = url::Url::parse(&c.url).map_err(|_| UrlError(c.url.clone(), "not a URL"))?;
        let host = url
            .host_str()
            .ok_or(UrlError(c.url.clone(), "no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = || -> Result<TlsConfiguration, OptionsError> {
            let s = tls::TlsSettings {
                ca_file: c.ca_file.clone(),
                cert_file: c.cert_file.clone(),
                key_file: c.key_file.clone(),
                alpn: c.alpn.clone().unwrap_or_default(),
                insecure_skip_verify: c.tls_insecure_skip_verify,
            };
            Ok(TlsConfiguration::Rustls(tls::client_config(&s)?))
        };
        let (addr, port, transport) = match url.scheme() {
            "mqtt" | "tcp" => (host, url.port().unwrap_or(1883), Transport::Tcp),
            "mqtts" | "ssl" => (host, url.port().unwrap_or(8883), Transport::Tls(tls()?)),
            // For WebSocket, rumqttc takes host, port and path from the whole URL.
            "ws" => (
                c.url.clone(),
                url.port_or_known_default().unwrap_or(80),
                Transport::Ws,
            ),
            "wss" => (
                c.url.clone(),
                url.port_or_known_default().unwrap_or(443),
                Transport::Wss(tls()?),
            ),
            _ => {
                return Err(UrlError(
                    c.url.clone(),
                    "scheme must be mqtt://, mqtts://, ws:// or wss://",
                )
                .into());
            }
        };
        let client_id = c
            .client_id
            .clone()
            .unwrap_or_else(|| crate::identity::default_client_id(&self.name));
        let mut o = MqttOptions::new(client_id, addr, port);
        o.set_transport(transport);
        o.set_keep_alive(Duration::from_secs(c.keep_alive().as_secs().max(1)));
        o.set_clean_session(c.clean_session);
        o.set_inflight(c.inflight.max(1));
        // Incoming: commands and acknowledgements, never large.
        o.set_max_packet_size(1 << 20, self.max_packet);
        if let Some(user) = &c.username {
            o.set_credentials(user, c.password.as_deref().unwrap_or_default());
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

    /// Options for the next connection and, for SAS devices, when to renew its token (epoch
    /// ms of the injected clock).
    fn connect_options(&self) -> Result<(MqttOptions, Option<i64>), OptionsError> {
        let Some(key) = &self.sas else {
            return Ok((self.options()?, None));
        };
        let token = key.issue(self.clock.now_ms()).map_err(OptionsError::Sas)?;
        let mut with_token = self.clone();
        with_token.config.password = Some(token.token);
        Ok((with_token.options()?, Some(token.renew_at_ms)))
    }

    /// Drains the outbox forever (until the task is aborted), reconnecting with back-off.
    pub async fn run(
        self,
        outbox: Arc<SharedOutbox>,
        mut dead: DeadLetters,
        stats: Arc<SinkStats>,
    ) {
        if self.config.tls_insecure_skip_verify {
            tracing::warn!(destination = %self.name, "tls_insecure_skip_verify = true: the broker's certificate is not checked; anyone on the path can read and change this traffic");
        }
        let mut backoff = Backoff::new(Duration::from_secs(30));
        let mut refusals = RefusalGuard::default();
        let mut pace = Pace::new(self.config.inflight.max(1) as usize, self.clock.now_ms());
        let mut last_error = String::new();
        // Numbers connections: a command's acknowledgement belongs to the one it came on.
        let mut connection = 0u64;
        let commands = self.commands.as_ref().is_some_and(|l| !l.routes.is_empty());
        stats.with_health(|h| h.start(self.clock.now_ms()));
        loop {
            connection += 1;
            let (mut opts, renew_at_ms) = match self.connect_options() {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(destination = %self.name, error = %e, "destination disabled");
                    return;
                }
            };
            if commands {
                // A QoS 1 command is acknowledged once it ran or was refused, not on arrival.
                opts.set_manual_acks(true);
            }
            let renew_in = renew_at_ms.map(|at| {
                Duration::from_millis(at.saturating_sub(self.clock.now_ms()).max(0) as u64)
            });
            // rumqttc's own limit is the cap, so it never holds back what the pace allows.
            let cap = self.config.inflight.max(1) as usize;
            let (client, mut eventloop) = AsyncClient::new(opts.clone(), cap + 8);
            let mut net = eventloop.network_options();
            net.set_connection_timeout(self.config.connect_timeout().as_secs().max(1));
            eventloop.set_network_options(net);
            let connects = stats.connects.load(Ordering::Relaxed);
            let ended = self
                .connection(
                    &client,
                    &mut eventloop,
                    &outbox,
                    &mut dead,
                    &stats,
                    &mut backoff,
                    &mut refusals,
                    &mut pace,
                    renew_in,
                    connection,
                )
                .await;
            stats.connected.store(false, Ordering::Relaxed);
            pace.connection_lost();
            let error = match ended {
                Ended::Renew => {
                    tracing::info!(destination = %self.name, "SAS token renewal: reconnecting with a new token");
                    // A clean DISCONNECT, so the broker does not treat the renewal as a failure.
                    let _ = client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        loop {
                            match eventloop.poll().await {
                                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                                Ok(_) => {}
                            }
                        }
                    })
                    .await;
                    continue;
                }
                Ended::Error(e) => e,
            };
            stats.with_health(|h| h.error(self.clock.now_ms(), &error));
            if error != last_error {
                if stats.connects.load(Ordering::Relaxed) == connects {
                    tracing::warn!(destination = %self.name, url = %self.config.url, %error, "cannot connect to the broker; retrying with back-off");
                } else {
                    tracing::warn!(destination = %self.name, %error, "broker connection lost; resending unacknowledged deliveries after reconnect");
                }
                last_error = error;
            }
            tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
        }
    }

    /// One connection: returns what ended it.
    #[allow(clippy::too_many_arguments)]
    async fn connection(
        &self,
        client: &AsyncClient,
        eventloop: &mut EventLoop,
        outbox: &SharedOutbox,
        dead: &mut DeadLetters,
        stats: &SinkStats,
        backoff: &mut Backoff,
        refusals: &mut RefusalGuard,
        pace: &mut Pace,
        renew_in: Option<Duration>,
        connection: u64,
    ) -> Ended {
        let renew = tokio::time::sleep(renew_in.unwrap_or(Duration::from_secs(365 * 86_400)));
        tokio::pin!(renew);
        let mut window = AckWindow::new(refusals.window(0, pace.window()));
        let mut next_read = 0u64;
        let mut connected = false;
        let no_commands = crate::commands::CommandLink::none();
        let link = self.commands.as_ref().unwrap_or(&no_commands);
        let mut done = link.done.lock().await;
        let subscriptions =
            downlink::subscriptions(&self.flavor, link.routes.iter().map(|r| &r.cfg));
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Err(e) => {
                        let error = describe(&e);
                        if connected {
                            let alone = window.pending() == 1;
                            refusals.connection_lost(window.head(), window.last_seq(), alone, self.clock.now_ms(), &error);
                            if refusals.probing() {
                                tracing::debug!(destination = %self.name, suspect = ?refusals.suspect(), %error, "connection closed with publishes in flight: they are sent one at a time next");
                            }
                        }
                        return Ended::Error(error);
                    }
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff.reset();
                        stats.connects.fetch_add(1, Ordering::Relaxed);
                        stats.connected.store(true, Ordering::Relaxed);
                        stats.with_health(|h| h.success(self.clock.now_ms()));
                        tracing::info!(destination = %self.name, url = %self.config.url, "broker connected");
                        if let Some(m) = &self.config.connect_message {
                            publish_own(client, &mut window, m);
                        }
                        for filter in &subscriptions {
                            if let Err(e) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                                return Ended::Error(format!("client queue: {e}"));
                            }
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        tracing::info!(destination = %self.name, commands = link.routes.len(), "listening for commands");
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let ack = (p.qos != QoS::AtMostOnce).then(|| AckToken { connection, publish: p.clone() });
                        let finished = match downlink::route(&self.flavor, link.routes.iter().map(|r| &r.cfg), &p.topic, &p.payload) {
                            downlink::Routed::Run(i, request) => link.submit(i, Job {
                                command: link.routes[i].index,
                                request,
                                retained: p.retain,
                                arrived_ms: self.clock.now_ms(),
                                ack,
                            }),
                            downlink::Routed::Answer(r) => Some(Done { reply: Some(r), ack }),
                            downlink::Routed::Ignore => {
                                tracing::debug!(destination = %self.name, topic = %p.topic, "incoming message is for no command");
                                Some(Done { reply: None, ack })
                            }
                        };
                        if let Some(d) = finished {
                            self.finish_command(client, &mut window, connection, d);
                        }
                    }
                    Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                        window.on_outgoing(pkid, self.clock.now_ms())
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(rumqttc::PubAck { pkid, .. })))
                    | Ok(MqttEvent::Incoming(Packet::PubComp(rumqttc::PubComp { pkid, .. }))) => {
                        let in_flight = window.len();
                        if let Some(written) = window.on_ack(pkid) {
                            pace.on_ack(written, self.clock.now_ms(), in_flight);
                        }
                    }
                    Ok(_) => {}
                },
                _ = &mut renew, if renew_in.is_some() => return Ended::Renew,
                Some(d) = done.recv(), if connected => self.finish_command(client, &mut window, connection, d),
                _ = outbox.wait_for_data(next_read), if connected && window.room() > 0 => {
                    let entries = match outbox.read(next_read, window.room()) {
                        Ok(e) => e,
                        Err(e) => return Ended::Error(format!("reading the outbox: {e}")),
                    };
                    for entry in entries {
                        crate::supervise::failpoint("sink");
                        next_read = entry.seq + 1;
                        if let Some(reason) = refusals.verdict(entry.seq) {
                            tracing::warn!(destination = %self.name, seq = entry.seq, %reason, "moved to the dead-letter file");
                            self.dead_letter(dead, stats, &entry, &reason);
                            window.push_done(entry.seq);
                            refusals.released_through(entry.seq);
                            continue;
                        }
                        let d = match Delivery::decode(&entry.data) {
                            Ok(d) => d,
                            Err(e) => {
                                // Never retried forever, never silently dropped.
                                self.dead_letter(dead, stats, &entry, &e.to_string());
                                window.push_done(entry.seq);
                                continue;
                            }
                        };
                        let d = match self.prepare(d, entry.seq) {
                            Prepared::Send(d) => d,
                            Prepared::Skip => {
                                window.push_done(entry.seq);
                                continue;
                            }
                            Prepared::Reject(reason) => {
                                self.dead_letter(dead, stats, &entry, &reason);
                                window.push_done(entry.seq);
                                continue;
                            }
                        };
                        if self.print {
                            println!("{} {}", d.topic, String::from_utf8_lossy(&d.payload));
                        }
                        if let Err(e) = client.try_publish(d.topic, qos(d.qos), d.retain, d.payload) {
                            return Ended::Error(format!("client queue: {e}"));
                        }
                        window.push_entry(entry.seq, d.qos, entry.time_ms);
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let now = self.clock.now_ms();
            if let (Some(seq), count) =
                window.release_observing(|t| stats.latency.observe_ms(now - t))
            {
                if let Err(e) = outbox.ack_through(seq) {
                    return Ended::Error(format!("acknowledging in the outbox: {e}"));
                }
                stats.acked.fetch_add(count, Ordering::Relaxed);
                refusals.released_through(seq);
            }
            window.set_capacity(refusals.window(next_read, pace.window()));
        }
    }

    /// Answers a finished command and acknowledges its publish, if it came on this connection
    /// (a packet id means nothing on another; the broker resends an unacknowledged command
    /// only to a persistent session, where it runs again).
    fn finish_command(
        &self,
        client: &AsyncClient,
        window: &mut AckWindow,
        connection: u64,
        done: Done,
    ) {
        if let Some(r) = done.reply {
            publish_reply(client, window, r);
        }
        if let Some(a) = done.ack
            && a.connection == connection
            && let Err(e) = client.try_ack(&a.publish)
        {
            tracing::debug!(destination = %self.name, error = %e, "command acknowledgement not queued");
        }
    }

    /// Shapes `d`, at outbox sequence `seq`, for this destination's kind, then refuses what no
    /// MQTT broker accepts.
    pub fn prepare(&self, d: Delivery, seq: u64) -> Prepared {
        // Only IoT Hub carries the id on MQTT 3.1.1 (`$.mid`); the default payload stays as
        // cameras send it.
        let id = match self.flavor {
            Flavor::Azure { .. } => crate::identity::event_id(&self.relay_id, seq),
            _ => String::new(),
        };
        match self.flavor.prepare(d, &id) {
            Prepared::Send(d) => {
                match limits::publish_problem(&d.topic, d.payload.len(), d.qos, self.max_packet) {
                    Some(reason) => Prepared::Reject(reason),
                    None => Prepared::Send(d),
                }
            }
            other => other,
        }
    }

    /// Moves an entry that can never be delivered to the dead-letter file, counted; the first
    /// and then every power-of-two-th is logged, so a flood of them stays readable.
    fn dead_letter(&self, dead: &mut DeadLetters, stats: &SinkStats, entry: &Entry, reason: &str) {
        if let Err(io) = dead.put(entry.seq, entry.time_ms, &entry.data, reason) {
            tracing::error!(destination = %self.name, error = %io, "cannot write dead letter");
        }
        let n = stats.dead_lettered.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(destination = %self.name, %reason, dead_lettered = n, file = %dead.path().display(), "delivery can never be accepted by this destination: moved to the dead-letter file");
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

/// Publishes a command's reply through the window (it takes a packet id like any publish).
fn publish_reply(client: &AsyncClient, window: &mut AckWindow, r: crate::commands::Reply) {
    if client
        .try_publish(r.topic, qos(r.qos), false, r.payload)
        .is_ok()
    {
        window.push(None, r.qos);
    }
}

/// A connection error in words that say what to check.
fn describe(e: &ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as C;
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                C::BadUserNamePassword => "bad user name or password",
                C::NotAuthorized => "not authorized",
                C::BadClientId => "client id rejected",
                C::ServiceUnavailable => "service unavailable",
                C::RefusedProtocolVersion => "protocol version refused",
                C::Success => "success",
            };
            format!("broker refused the connection: {why} ({code:?})")
        }
        ConnectionError::Tls(t) => format!("TLS: {t}"),
        other => {
            // With TLS 1.3 the broker judges the client certificate after the client finished
            // its handshake, so a refusal surfaces as an alert on the first read.
            let text = other.to_string();
            let client_cert_alerts = [
                "UnknownCA",
                "BadCertificate",
                "CertificateUnknown",
                "CertificateRequired",
                "CertificateExpired",
                "CertificateRevoked",
            ];
            match text.split_once("received fatal alert: ") {
                Some((_, alert)) if client_cert_alerts.iter().any(|a| alert.starts_with(a)) => {
                    format!(
                        "TLS: the broker does not accept the client certificate (cert_file): alert {alert}"
                    )
                }
                Some((_, alert)) => format!("TLS: the broker ended the handshake: alert {alert}"),
                None => text,
            }
        }
    }
}
