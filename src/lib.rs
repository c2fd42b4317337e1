//! edgerelay: camera event streams → rules → durable outbox → MQTT brokers and object stores.
//!
//! ```text
//! sources (WebSocket, emulator) ─Event─▶ rules ─Delivery─▶ outbox (disk, per destination) ─▶ sinks (MQTT)
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file, `${VAR}` and `*_file` secrets, validation with `file:line` errors.
//! - [`event`]: the normalized [`event::Event`] and its camera-format JSON view.
//! - [`sources`]: camera clients (VAPIX WebSocket), local MQTT sources, the camera emulator.
//! - [`rules`]: topic expressions, matching, and the shape of each delivery.
//! - [`delivery`]: the record that crosses from rules to the outbox.
//! - [`outbox`]: the durable per-destination FIFO.
//! - [`sinks`]: destinations that drain the outbox (MQTT over TCP, TLS or WebSocket: plain
//!   brokers, Azure IoT Hub, AWS IoT Core).
//! - [`snapshots`]: pictures fetched from cameras when a rule with `snapshot = true` matches.
//! - [`commands`]: downlink, MQTT messages that act on cameras (virtual inputs).
//! - [`pipeline`]: wires the above together for `edgerelay run`.
//! - [`broker`]: the embedded MQTT broker.
//! - [`tls`]: rustls client configs shared by camera and broker connections.
//! - [`observe`] and [`http`]: `/metrics`, `/status`, `/healthz`, `/readyz`.
//! - [`supervise`]: a task that dies is noticed: `/healthz` fails and `run` exits non-zero.
//! - [`clock`]: injected time, so back-off and rate limits are testable.
//! - [`bench`]: `edgerelay bench`, the measured figures.

pub mod bench;
pub mod broker;
pub mod clock;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod event;
pub mod http;
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
