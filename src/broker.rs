//! Embedded MQTT broker (rumqttd), for the out-of-the-box config and site-local publishers.
//!
//! rumqttd keeps everything in memory; that is fine here because the relay's own outbox is the
//! durable part, and the broker only serves local subscribers.
//!
//! Memory: rumqttd keeps a log per distinct subscription filter, up to `max_segment_count`
//! segments of `max_segment_size` bytes; its example config (100 MB × 10) allows about 1 GB
//! per filter. Here a filter holds at most [`SEGMENT_BYTES`] × ([`SEGMENTS`] + 1) = 5 MiB, and
//! at most [`MAX_CONNECTIONS`] clients connect. A subscriber that falls further behind misses
//! the oldest messages (the outbox upstream still has them for the relay's own destinations).
//!
//! Authentication: with a [`Login`], every client must present that user name and password
//! (compared in constant time by rumqttd); without one the broker admits anyone, which
//! `check` only allows on loopback.

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// `relay.broker` is not `host:port`.
    #[error("relay.broker: {0:?} is not a socket address")]
    Address(String),
    /// Built without the `embedded-broker` feature.
    #[error("this build has no embedded broker (cargo feature `embedded-broker`)")]
    NotBuilt,
}

/// Size of one in-memory log segment per subscription filter: one largest payload.
pub const SEGMENT_BYTES: usize = 1 << 20;
/// Segments kept per subscription filter besides the active one.
pub const SEGMENTS: usize = 4;
/// Clients at once: local subscribers and site sensors, not a fleet.
pub const MAX_CONNECTIONS: usize = 256;
/// Unacknowledged QoS 1/2 publishes per client.
const MAX_INFLIGHT: usize = 100;

/// The user name and password every client of the embedded broker must present.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Login {
    /// The login of `[relay]`, when both halves are set (validation refuses one alone).
    pub fn from_relay(relay: &crate::config::RelayConfig) -> Option<Login> {
        Some(Login {
            username: relay.broker_username.clone()?,
            password: relay.broker_password.as_deref()?.to_string(),
        })
    }
}

/// Starts rumqttd listening on `listen` (MQTT 3.1.1) in its own thread, admitting only
/// `login` when given; it runs until the process exits.
#[cfg(feature = "embedded-broker")]
pub fn start(listen: &str, login: Option<Login>) -> Result<std::net::SocketAddr, BrokerError> {
    use std::collections::HashMap;
    use std::net::ToSocketAddrs;

    use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

    let addr = listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BrokerError::Address(listen.to_string()))?;
    // rumqttd cannot be stopped: a reload keeps the one already running.
    static RUNNING: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    if let Some(running) = RUNNING.get() {
        if *running != addr {
            tracing::warn!(%running, wanted = %addr, "the embedded broker keeps its address until the relay restarts");
        }
        return Ok(*running);
    }
    let _ = RUNNING.set(addr);
    let server = ServerSettings {
        name: "v4-1".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: SEGMENT_BYTES,
            max_inflight_count: MAX_INFLIGHT,
            auth: login.map(|l| HashMap::from([(l.username, l.password)])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_BYTES,
            max_segment_count: SEGMENTS,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4-1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .expect("spawning a thread");
    Ok(addr)
}

/// Without the feature there is no broker to start.
#[cfg(not(feature = "embedded-broker"))]
pub fn start(_listen: &str, _login: Option<Login>) -> Result<std::net::SocketAddr, BrokerError> {
    Err(BrokerError::NotBuilt)
}
