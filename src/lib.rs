//! edgerelay: camera event streams → rules → durable outbox → MQTT brokers and object stores.
//!
//! ```text
//! sources (VAPIX WebSocket, ONVIF RTSP, local MQTT, emulator)
//!   ─Event─▶ rules ─Delivery─▶ outbox (disk, one FIFO per destination)
//!   ─▶ sinks (MQTT brokers, Azure IoT Hub, AWS IoT Core, S3, Azure Blob)
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file, `${VAR}` and `*_file` secrets, units (sizes, durations,
//!   rates), validation with `file:line` errors.
//! - [`event`]: the normalized [`event::Event`] and its camera-format JSON view.
//! - [`time`]: camera timestamps (RFC 3339) to epoch milliseconds, truncated.
//! - [`sources`]: where events come from, each reconnecting with [`sources::backoff`]:
//!   [`sources::websocket`] (VAPIX event stream), [`sources::rtsp`] (ONVIF metadata over
//!   RTSP, with its own depacketizer), [`sources::mqtt`] (local sensors), the VAPIX calls
//!   around them ([`sources::vapix`], [`sources::catalog`]), the relay's own connection
//!   events ([`sources::own_events`]), per-source state ([`sources::status`]) and the camera
//!   [`sources::emulator`] (tests and demo).
//! - [`rules`]: topic expressions, conditions, templates, `only_changes` and `max_rate` state,
//!   Home Assistant discovery: the shape of each delivery.
//! - [`delivery`]: the record that crosses from rules to the outbox.
//! - [`outbox`]: the durable per-destination FIFO, and the dead-letter files.
//! - [`sinks`]: destinations that drain the outbox: [`sinks::mqtt`] (plain brokers over TCP,
//!   TLS or WebSocket, Azure IoT Hub, AWS IoT Core) and [`sinks::object_store`] (S3 and
//!   Azure Blob archives, batched and compressed).
//! - [`snapshots`]: pictures fetched from cameras when a rule with `snapshot = true` matches.
//! - [`commands`]: downlink, MQTT messages that act on cameras (virtual inputs, snapshots).
//! - [`pipeline`]: wires the above together for `edgerelay run` (and again on each reload).
//! - [`broker`]: the embedded MQTT broker (feature `embedded-broker`).
//! - [`identity`]: the host name, the default MQTT client ids `edgerelay-{hostname}-{name}`,
//!   and the relay id (`data_dir/relay-id`) in every delivery's `event_id`.
//! - [`tls`]: rustls client configs for MQTT destinations and https cameras.
//! - [`observe`] and [`http`]: `/metrics`, `/status`, `/healthz`, `/readyz`; the relay's own
//!   status events and camera availability messages.
//! - [`supervise`]: a task that dies is noticed: `/healthz` fails and `run` exits non-zero.
//! - [`clock`]: injected time, so back-off and rate limits are testable.
//! - [`bench`](mod@bench): `edgerelay bench`, the measured figures.

pub mod bench;
pub mod broker;
pub mod clock;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod event;
pub mod http;
pub mod identity;
pub mod observe;
pub mod outbox;
pub mod pipeline;
pub mod rules;
pub mod sinks;
pub mod snapshots;
pub mod sources;
pub mod supervise;
pub mod time;
pub mod tls;

#[cfg(test)]
mod tests {
    /// The `# Layout` list above stays the crate map: every module is in it.
    #[test]
    fn crate_doc_layout_names_every_module() {
        let mut parts = include_str!("lib.rs").split("\npub mod ");
        let doc = parts.next().unwrap_or_default();
        let modules: Vec<&str> = parts.filter_map(|rest| rest.split(';').next()).collect();
        assert!(modules.len() > 10, "{modules:?}");
        for m in modules {
            assert!(
                doc.contains(&format!("[`{m}`]")),
                "module `{m}` is missing from the # Layout list of src/lib.rs"
            );
        }
    }
}
