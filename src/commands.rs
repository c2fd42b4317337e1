//! Downlink (`[[command]]`): messages that arrive over an MQTT-family destination's own
//! connection (its TLS, credentials and client id; no second connection) act on a camera, and
//! the outcome is the reply.
//!
//! Transport per destination kind (routing in [`crate::sinks::mqtt::downlink`]): on `mqtt`
//! and `aws-iot-core` a message on `topic` runs the command and the reply goes to
//! `reply_topic`; on `azure-iot-hub` a direct method named `method` runs it and is answered on
//! `$iothub/methods/res/{status}/?$rid={rid}` (200, 400 bad request, 504 camera did not
//! answer, 503 queue full, 404 no such method), and a C2D message whose property `method`
//! names it runs it with the outcome logged.
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
//! of one `[[command]]` run one at a time in arrival order, so a quick on/off keeps its order.

use std::sync::Arc;

use std::collections::HashMap;

use reqwest::Method;
use tokio::sync::{Mutex, mpsc};

use crate::clock::SharedClock;
use crate::config::{CommandAction, CommandConfig};
use crate::delivery::Snapshot;
use crate::outbox::SharedOutbox;
use crate::sources::vapix::VapixClient;

/// Commands waiting for the camera, per `[[command]]`; more are refused with an error reply.
pub const QUEUE: usize = 64;
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

/// Why a command did not run, with the status an Azure direct method answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 400 bad request, 503 busy, 504 camera did not answer.
    pub status: u16,
    /// What went wrong, for the reply.
    pub message: String,
}

impl Failure {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The payload was refused before anything ran.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// Too many commands waiting.
    pub fn busy() -> Self {
        Self::new(503, "too many commands waiting")
    }
}

/// Where the outcome of one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// Published on this topic (mqtt, aws-iot-core), or nowhere.
    Topic(Option<String>),
    /// An Azure direct method response with this request id.
    AzureMethod {
        /// `$rid` of the call.
        rid: String,
    },
    /// Logged only (Azure cloud-to-device messages have no response).
    Logged,
}

/// A message that runs a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command's payload.
    pub payload: Vec<u8>,
    /// Where the outcome goes.
    pub reply: ReplyTo,
}

/// A reply for the sink to publish over its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Topic.
    pub topic: String,
    /// JSON outcome.
    pub payload: Vec<u8>,
    /// QoS (0 for Azure method responses, as the device SDKs send them).
    pub qos: u8,
}

impl Reply {
    /// The reply to `to` for `outcome`, if `to` takes one.
    pub fn to(to: &ReplyTo, outcome: &Result<Outcome, Failure>) -> Option<Reply> {
        let payload = reply(&outcome.clone().map_err(|f| f.message)).into_bytes();
        match to {
            ReplyTo::Topic(Some(topic)) => Some(Reply {
                topic: topic.clone(),
                payload,
                qos: 1,
            }),
            ReplyTo::AzureMethod { rid } => {
                let status = outcome.as_ref().map_or_else(|f| f.status, |_| 200);
                Some(Reply {
                    topic: format!("$iothub/methods/res/{status}/?$rid={rid}"),
                    payload,
                    qos: 0,
                })
            }
            ReplyTo::Topic(None) | ReplyTo::Logged => None,
        }
    }
}

/// The commands one destination's connection carries: their queues, and the replies coming
/// back to be published. Clones share the reply queue (one connection reads it at a time).
#[derive(Clone)]
pub struct CommandLink {
    /// Each command's config and queue, in config order.
    pub routes: Vec<(CommandConfig, mpsc::Sender<Request>)>,
    /// Replies waiting for the connection.
    pub replies: std::sync::Arc<Mutex<mpsc::Receiver<Reply>>>,
}

impl CommandLink {
    /// A link carrying no command.
    pub fn none() -> Self {
        let (_, rx) = mpsc::channel(1);
        Self {
            routes: Vec::new(),
            replies: std::sync::Arc::new(Mutex::new(rx)),
        }
    }
}

impl std::fmt::Debug for CommandLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLink")
            .field("commands", &self.routes.len())
            .finish()
    }
}

/// One command's end of the link: run by [`serve`].
#[derive(Debug)]
pub struct Worker {
    /// Index in `[[command]]`.
    pub index: usize,
    /// Its config.
    pub cfg: CommandConfig,
    /// Its requests.
    pub requests: mpsc::Receiver<Request>,
    /// Where its replies go.
    pub replies: mpsc::Sender<Reply>,
}

/// Links every command to its destination: the sink of destination `NAME` gets
/// `links[NAME]`, and each worker is served by [`serve`].
pub fn link(commands: &[CommandConfig]) -> (HashMap<String, CommandLink>, Vec<Worker>) {
    let mut links: HashMap<String, (CommandLink, mpsc::Sender<Reply>)> = HashMap::new();
    let mut workers = Vec::new();
    for (index, cfg) in commands.iter().enumerate() {
        let (link, reply_tx) = links.entry(cfg.destination.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let link = CommandLink {
                routes: Vec::new(),
                replies: std::sync::Arc::new(Mutex::new(rx)),
            };
            (link, tx)
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        link.routes.push((cfg.clone(), tx));
        workers.push(Worker {
            index,
            cfg: cfg.clone(),
            requests: rx,
            replies: reply_tx.clone(),
        });
    }
    let links = links.into_iter().map(|(k, (l, _))| (k, l)).collect();
    (links, workers)
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
) -> Result<Outcome, Failure> {
    match action {
        CommandAction::VirtualInput => {
            let cmd = VirtualInput::parse(payload).map_err(Failure::bad_request)?;
            let body = vapix
                .call(Method::GET, &cmd.path(), "text/plain", &[], Vec::new())
                .await
                .map_err(|e| Failure::new(504, format!("camera: {e}")))?;
            parse_reply(&String::from_utf8_lossy(&body))
                .map(|changed| Outcome::VirtualInput { changed })
                .map_err(Failure::bad_request)
        }
        CommandAction::Snapshot => {
            let jpeg = crate::snapshots::fetch(vapix, "/axis-cgi/jpg/image.cgi")
                .await
                .map_err(|e| Failure::new(504, e))?;
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
                match outbox.append_async(vec![record.clone()], now).await {
                    Ok(o) if o.count_accepted == 0 => {
                        return Err(Failure::new(503, format!("outbox of {dest} is full")));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(Failure::new(503, format!("cannot queue in {dest}: {e}")));
                    }
                }
            }
            Ok(Outcome::Snapshot {
                timestamp: now,
                bytes,
            })
        }
    }
}

/// Runs one command's requests in arrival order until its destination's sink is gone.
pub async fn serve(worker: Worker, vapix: VapixClient, stores: SnapshotStores) {
    let Worker {
        index,
        cfg,
        mut requests,
        replies,
    } = worker;
    while let Some(req) = requests.recv().await {
        let outcome = execute(cfg.action, &vapix, &req.payload, &stores).await;
        match &outcome {
            Err(e) => {
                tracing::warn!(command = index, camera = %cfg.camera, status = e.status, error = %e.message, "command failed")
            }
            Ok(o) => {
                tracing::debug!(command = index, camera = %cfg.camera, outcome = ?o, "command ran")
            }
        }
        if let Some(r) = Reply::to(&req.reply, &outcome)
            && replies.send(r).await.is_err()
        {
            return;
        }
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
