//! Embedded MQTT broker (rumqttd), for the out-of-the-box config and site-local publishers.
//!
//! rumqttd keeps everything in memory; that is fine here because the relay's own outbox is the
//! durable part, and the broker only serves local subscribers.

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

/// Starts rumqttd listening on `listen` (MQTT 3.1.1) in its own thread; it runs until the
/// process exits.
#[cfg(feature = "embedded-broker")]
pub fn start(listen: &str) -> Result<std::net::SocketAddr, BrokerError> {
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
            max_payload_size: 1 << 20,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 104_857_600,
            max_segment_count: 10,
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
pub fn start(_listen: &str) -> Result<std::net::SocketAddr, BrokerError> {
    Err(BrokerError::NotBuilt)
}
