//! Downlink (`[[command]]`): messages on a topic at an MQTT destination's broker act on a
//! camera, and the outcome is published on `reply_topic`.
//!
//! `action = "virtual_input"`: the payload `{"port":7,"active":true}` (port a number or a
//! numeric string; active a boolean, `0`/`1` or `"true"`/`"false"`/`"1"`/`"0"`; optional
//! `"duration"` seconds when activating) calls VAPIX `activate.cgi` / `deactivate.cgi` with
//! Digest. The reply is `{"ok":true,"changed":BOOL}` or `{"ok":false,"error":"..."}`.
//!
//! `action = "snapshot"`: any payload takes a JPEG from the camera (as rules with
//! `snapshot = true` do) and queues it in the outbox of each object store of `to`, under the
//! topic [`SNAPSHOT_TOPIC`] at the time of the command. The reply
//! `{"ok":true,"timestamp":MS,"bytes":N}` means queued (durable), not yet uploaded. Commands
//! run one at a time in arrival order, so a quick on/off keeps its order. Each `[[command]]`
//! has its own MQTT connection (client id `{client_id}-cmd{index}`), apart from the sink's.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rumqttc::{AsyncClient, Event as MqttEvent, Packet, QoS};
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::config::{CommandAction, CommandConfig, MqttDestination};
use crate::delivery::Snapshot;
use crate::outbox::SharedOutbox;
use crate::sources::backoff::Backoff;
use crate::sources::mqtt::client_options;
use crate::sources::vapix::VapixClient;

/// Commands waiting for the camera; more are refused with an error reply.
const QUEUE: usize = 64;
/// Event topic of a snapshot taken on command (its key and metadata show it).
pub const SNAPSHOT_TOPIC: &str = "edgerelay:Command/Snapshot";

/// Where `snapshot` commands store their pictures.
#[derive(Debug, Clone)]
pub struct SnapshotStores {
    /// Camera name, for keys and metadata.
    pub camera: String,
    /// Outboxes of the `to` destinations.
    pub outboxes: Vec<(Arc<str>, Arc<SharedOutbox>)>,
    /// The time of the command.
    pub clock: SharedClock,
}

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A virtual input was set; whether its state changed.
    VirtualInput {
        /// The camera's `StateChanged`.
        changed: bool,
    },
    /// A snapshot was queued.
    Snapshot {
        /// Its time (epoch ms), in its key.
        timestamp: i64,
        /// JPEG size.
        bytes: usize,
    },
}

/// A parsed virtual-input command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualInput {
    /// Virtual input port (1 and up).
    pub port: u32,
    /// Activate (`true`) or deactivate.
    pub active: bool,
    /// Seconds after which an activation ends by itself.
    pub duration_s: Option<u32>,
}

impl VirtualInput {
    /// Parses a command payload.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        let number = |key: &str| -> Result<Option<u32>, String> {
            match v.get(key) {
                None => Ok(None),
                Some(serde_json::Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| format!("\"{key}\" must be a whole number")),
                Some(serde_json::Value::String(s)) => s
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("\"{key}\" must be a whole number")),
                Some(_) => Err(format!("\"{key}\" must be a whole number")),
            }
        };
        let port = number("port")?.ok_or("missing \"port\"")?;
        let active = match v.get("active") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(1) => true,
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(0) => false,
            Some(serde_json::Value::String(s)) if matches!(s.as_str(), "1" | "true") => true,
            Some(serde_json::Value::String(s)) if matches!(s.as_str(), "0" | "false") => false,
            Some(_) => return Err("\"active\" must be true or false".into()),
            None => return Err("missing \"active\"".into()),
        };
        Ok(Self {
            port,
            active,
            duration_s: number("duration")?,
        })
    }

    /// The VAPIX request path.
    pub fn path(&self) -> String {
        let cgi = if self.active {
            "activate"
        } else {
            "deactivate"
        };
        let mut p = format!(
            "/axis-cgi/virtualinput/{cgi}.cgi?schemaversion=1&port={}",
            self.port
        );
        if let (true, Some(d)) = (self.active, self.duration_s) {
            p.push_str(&format!("&duration={d}"));
        }
        p
    }
}

/// Reads a `VirtualInputResponse`: `Ok(state changed)` or the camera's error description.
pub fn parse_reply(xml: &str) -> Result<bool, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("unreadable reply: {e}"))?;
    let text = |name: &str| {
        doc.descendants()
            .find(|n| n.tag_name().name() == name)
            .map(|n| n.text().unwrap_or("").trim().to_string())
    };
    if doc.descendants().any(|n| n.tag_name().name() == "Error") {
        let code = text("ErrorCode").unwrap_or_default();
        let what = text("ErrorDescription").unwrap_or_default();
        return Err(format!("camera error {code}: {what}"));
    }
    match text("StateChanged") {
        Some(s) => Ok(s == "true"),
        None => Err("reply has neither Success nor Error".into()),
    }
}

/// The reply payload for an outcome.
pub fn reply(outcome: &Result<Outcome, String>) -> String {
    match outcome {
        Ok(Outcome::VirtualInput { changed }) => {
            serde_json::json!({"ok": true, "changed": changed}).to_string()
        }
        Ok(Outcome::Snapshot { timestamp, bytes }) => {
            serde_json::json!({"ok": true, "timestamp": timestamp, "bytes": bytes}).to_string()
        }
        Err(e) => serde_json::json!({"ok": false, "error": e}).to_string(),
    }
}

async fn execute(
    action: CommandAction,
    vapix: &VapixClient,
    payload: &[u8],
    stores: &SnapshotStores,
) -> Result<Outcome, String> {
    match action {
        CommandAction::VirtualInput => {
            let cmd = VirtualInput::parse(payload)?;
            let body = vapix
                .call(Method::GET, &cmd.path(), "text/plain", &[], Vec::new())
                .await
                .map_err(|e| e.to_string())?;
            parse_reply(&String::from_utf8_lossy(&body))
                .map(|changed| Outcome::VirtualInput { changed })
        }
        CommandAction::Snapshot => {
            let jpeg = crate::snapshots::fetch(vapix, "/axis-cgi/jpg/image.cgi").await?;
            let now = stores.clock.now_ms();
            let bytes = jpeg.len();
            let record = Snapshot {
                created_ms: now,
                event_ms: now,
                topic: SNAPSHOT_TOPIC.into(),
                camera: stores.camera.clone(),
                serial: String::new(),
                jpeg,
            }
            .encode();
            for (dest, outbox) in &stores.outboxes {
                match outbox.append(&[&record], now) {
                    Ok(o) if o.count_accepted == 0 => {
                        return Err(format!("outbox of {dest} is full"));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("cannot queue in {dest}: {e}")),
                }
            }
            Ok(Outcome::Snapshot {
                timestamp: now,
                bytes,
            })
        }
    }
}

/// Runs one `[[command]]` until the task is aborted.
pub async fn run(
    index: usize,
    cfg: CommandConfig,
    dest: MqttDestination,
    vapix: VapixClient,
    stores: SnapshotStores,
) {
    let base = dest
        .client_id
        .clone()
        .unwrap_or_else(|| crate::identity::default_client_id(&cfg.destination));
    let opts = match client_options(
        &dest.url,
        format!("{base}-cmd{index}"),
        dest.username.as_deref(),
        dest.password.as_deref(),
    ) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(command = index, error = %e, "command listener cannot start");
            return;
        }
    };
    let (client, mut eventloop) = AsyncClient::new(opts, QUEUE);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let worker_client = client.clone();
    let worker_cfg = cfg.clone();
    // One worker: commands reach the camera in arrival order.
    let worker = tokio::spawn(async move {
        while let Some(payload) = rx.recv().await {
            let outcome = execute(worker_cfg.action, &vapix, &payload, &stores).await;
            if let Err(e) = &outcome {
                tracing::warn!(camera = %worker_cfg.camera, error = %e, "command failed");
            }
            if let Some(t) = &worker_cfg.reply_topic {
                let _ = worker_client
                    .publish(t.as_str(), QoS::AtLeastOnce, false, reply(&outcome))
                    .await;
            }
        }
    });
    let _abort_worker = AbortOnDrop(worker);
    let mut backoff = Backoff::new(Duration::from_secs(30));
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                let _ = client.try_subscribe(cfg.topic.as_str(), QoS::AtLeastOnce);
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                tracing::info!(topic = %cfg.topic, camera = %cfg.camera, "listening for commands");
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if Some(p.topic.as_str()) == cfg.reply_topic.as_deref() {
                    continue;
                }
                if tx.try_send(p.payload.to_vec()).is_err()
                    && let Some(t) = &cfg.reply_topic
                {
                    let _ = client.try_publish(
                        t.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        reply(&Err("too many commands waiting".into())),
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(command = index, error = %e, "command connection lost");
                tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_to_a_vapix_call() {
        let c = VirtualInput::parse(br#"{"port":7,"active":true}"#).unwrap();
        assert_eq!(
            c.path(),
            "/axis-cgi/virtualinput/activate.cgi?schemaversion=1&port=7"
        );
        let c = VirtualInput::parse(br#"{"port":"3","active":"0","duration":5}"#).unwrap();
        assert_eq!(
            c.path(),
            "/axis-cgi/virtualinput/deactivate.cgi?schemaversion=1&port=3"
        );
        let c = VirtualInput::parse(br#"{"port":3,"active":1,"duration":5}"#).unwrap();
        assert!(
            c.path()
                .ends_with("activate.cgi?schemaversion=1&port=3&duration=5")
        );
        for bad in [
            &b"nope"[..],
            br#"{"active":true}"#,
            br#"{"port":-1,"active":true}"#,
            br#"{"port":1,"active":"maybe"}"#,
        ] {
            assert!(VirtualInput::parse(bad).is_err());
        }
    }

    #[test]
    fn replies_report_success_and_camera_errors() {
        let ok = include_str!("../tests/fixtures/virtualinput-activate.xml");
        assert_eq!(parse_reply(ok), Ok(true));
        let err = r#"<?xml version="1.0"?><VirtualInputResponse xmlns="http://www.axis.com/vapix/http_cgi/virtualinput1"><Error><GeneralError><ErrorCode>20</ErrorCode><ErrorDescription>No such virtual input</ErrorDescription></GeneralError></Error></VirtualInputResponse>"#;
        assert_eq!(
            parse_reply(err),
            Err("camera error 20: No such virtual input".into())
        );
        assert_eq!(
            reply(&Ok(Outcome::VirtualInput { changed: true })),
            r#"{"ok":true,"changed":true}"#
        );
        assert_eq!(
            reply(&Ok(Outcome::Snapshot {
                timestamp: 7,
                bytes: 141
            })),
            r#"{"ok":true,"timestamp":7,"bytes":141}"#
        );
        assert_eq!(
            reply(&Err("x \"y\"".into())),
            r#"{"ok":false,"error":"x \"y\""}"#
        );
    }
}
