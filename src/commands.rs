//! Downlink (`[[command]]`): messages that arrive over an MQTT-family destination's own
//! connection (its TLS, credentials and client id; no second connection) act on a camera, and
//! the outcome is the reply.
//!
//! Transport per destination kind (routing in [`crate::sinks::mqtt::downlink`]): on `mqtt`
//! and `aws-iot-core` a message on `topic` runs the command and the reply goes to
//! `reply_topic`; on `azure-iot-hub` a direct method named `method` runs it and is answered on
//! `$iothub/methods/res/{status}/?$rid={rid}` (200; 400 bad request or retained, 404 no such
//! method, 429 over `max_rate`, 502 camera error, 503 queue full or snapshot not stored, 504
//! camera did not answer), and a C2D message whose property `method` names it runs it with the
//! outcome logged.
//!
//! `action = "virtual_input"`: the payload `{"port":7,"active":true}` (port a whole number
//! from 1 to the camera's virtual input count, active a JSON boolean, optional `"duration"`
//! seconds from 1 to [`MAX_DURATION_S`] when activating; any other field is refused) calls
//! VAPIX `activate.cgi` / `deactivate.cgi` with Digest. The reply is
//! `{"ok":true,"changed":BOOL}` or `{"ok":false,"error":"..."}`.
//!
//! `action = "snapshot"`: an empty payload or `{}` takes a JPEG from the camera (as rules with
//! `snapshot = true` do) and queues it in the outbox of each object store of `to`, under the
//! topic [`SNAPSHOT_TOPIC`] at the time of the command. The reply
//! `{"ok":true,"timestamp":MS,"bytes":N}` means queued (durable), not yet uploaded.
//!
//! **Safety.** Each camera has one worker ([`serve`]) that takes its commands one at a time in
//! arrival order from a bounded queue ([`QUEUE`]; a full queue refuses with 503). Before
//! anything runs: a retained message (the broker replaying a stored command after a
//! subscribe) is refused, so a reconnect never toggles a door strike again; the command's
//! `max_rate` (fixed windows like rules' `max_rate`, counted at arrival) refuses the excess
//! with 429; the payload is validated strictly (400). Every outcome is counted per command
//! and [`Verdict`] in `edgerelay_commands_total{command,result}` ([`CommandStats`]) and logged
//! once per burst. The sink acknowledges a QoS 1 command only when its [`Done`] comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use reqwest::Method;
use tokio::sync::{Mutex, mpsc};

use crate::clock::SharedClock;
use crate::config::{CommandAction, CommandConfig, units};
use crate::delivery::Snapshot;
use crate::outbox::SharedOutbox;
use crate::rules::state::{Decision, Keep, RateLimiter};
use crate::sources::status::SourceStatus;
use crate::sources::vapix::{VapixClient, VapixError};

/// Commands waiting for one camera; more are refused with an error reply (503).
pub const QUEUE: usize = 64;
/// Event topic of a snapshot taken on command (its key and metadata show it).
pub const SNAPSHOT_TOPIC: &str = "edgerelay:Command/Snapshot";
/// Highest virtual input port accepted while the camera's event catalog is unknown (no Axis
/// device has more; the catalog's own count applies once read).
pub const MAX_VIRTUAL_INPUT_PORT: u32 = 64;
/// Longest `duration` of an activation, in seconds (one day).
pub const MAX_DURATION_S: u32 = 86_400;
/// Outcomes of one command are logged at most once per this long: the first in detail, the
/// rest of the burst as counts when it ends.
pub const LOG_BURST: Duration = Duration::from_secs(10);
/// How long a failed attempt to read the catalog (for the port count) is not repeated.
const CATALOG_RETRY: Duration = Duration::from_secs(60);

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

/// The `result` label of `edgerelay_commands_total`: a closed set, one per way a command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Ran.
    Ok,
    /// Payload refused by validation, or the camera refused the request (400).
    BadRequest,
    /// A retained message: never executed (400).
    Retained,
    /// Over the command's `max_rate` (429).
    RateLimited,
    /// The camera's queue was full (503).
    Busy,
    /// The camera could not be used: unreachable, credentials refused, an unusable reply (502).
    CameraError,
    /// The camera did not answer in time (504).
    Timeout,
    /// A snapshot could not be queued in an object store's outbox (503).
    NotStored,
}

impl Verdict {
    /// Every verdict, in the order `/metrics` lists them.
    pub const ALL: [Verdict; 8] = [
        Verdict::Ok,
        Verdict::BadRequest,
        Verdict::Retained,
        Verdict::RateLimited,
        Verdict::Busy,
        Verdict::CameraError,
        Verdict::Timeout,
        Verdict::NotStored,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::BadRequest => "bad_request",
            Verdict::Retained => "retained",
            Verdict::RateLimited => "rate_limited",
            Verdict::Busy => "busy",
            Verdict::CameraError => "camera_error",
            Verdict::Timeout => "timeout",
            Verdict::NotStored => "not_stored",
        }
    }

    fn position(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// Why a command did not run, with the status an Azure direct method answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How it ended, for the metric.
    pub verdict: Verdict,
    /// 400 bad request, 404 no such method, 429 rate limited, 502 camera error, 503 busy,
    /// 504 camera did not answer.
    pub status: u16,
    /// What went wrong, for the reply.
    pub message: String,
}

impl Failure {
    fn new(verdict: Verdict, status: u16, message: impl Into<String>) -> Self {
        Self {
            verdict,
            status,
            message: message.into(),
        }
    }

    /// The payload was refused before anything ran.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Verdict::BadRequest, 400, message)
    }

    /// Too many commands waiting for the camera.
    pub fn busy() -> Self {
        Self::new(
            Verdict::Busy,
            503,
            "too many commands waiting for the camera",
        )
    }

    /// A retained message: the broker replays it on every subscribe.
    pub fn retained() -> Self {
        Self::new(
            Verdict::Retained,
            400,
            "retained message not executed: send commands without the retain flag",
        )
    }

    /// Over `max_rate`.
    pub fn rate_limited(max_rate: &str) -> Self {
        Self::new(
            Verdict::RateLimited,
            429,
            format!("rate limited: this command takes at most {max_rate}"),
        )
    }

    /// An Azure direct method no command has (not counted: it names no command).
    pub fn no_such_method(method: &str) -> Self {
        Self::new(
            Verdict::BadRequest,
            404,
            format!("no command for method \"{method}\""),
        )
    }

    fn camera(e: VapixError) -> Self {
        match e {
            VapixError::Timeout(_) => Self::new(Verdict::Timeout, 504, format!("camera: {e}")),
            other => Self::new(Verdict::CameraError, 502, format!("camera: {other}")),
        }
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

/// The incoming QoS 1/2 publish of a command, acknowledged by the sink once the command ran
/// or was refused, and only on the connection it arrived on (packet ids are per connection).
#[derive(Debug, Clone)]
pub struct AckToken {
    /// The sink's connection number.
    pub connection: u64,
    /// The publish to acknowledge.
    pub publish: rumqttc::Publish,
}

/// One command message on its way to the camera's worker.
#[derive(Debug)]
pub struct Job {
    /// Index of the command in `[[command]]`.
    pub command: usize,
    /// Payload and where the outcome goes.
    pub request: Request,
    /// The broker delivered it as a retained message.
    pub retained: bool,
    /// Arrival time (epoch ms): `max_rate` counts arrivals.
    pub arrived_ms: i64,
    /// What to acknowledge once it is done.
    pub ack: Option<AckToken>,
}

/// What the sink does when a job is done: publish the reply, acknowledge the publish.
#[derive(Debug)]
pub struct Done {
    /// The reply, when the request takes one.
    pub reply: Option<Reply>,
    /// The publish to acknowledge.
    pub ack: Option<AckToken>,
}

/// One `[[command]]` as its destination's connection sees it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index in `[[command]]` (the `command` label).
    pub index: usize,
    /// Its config.
    pub cfg: CommandConfig,
    /// The queue of its camera's worker.
    pub queue: mpsc::Sender<Job>,
}

/// The commands one destination's connection carries: their queues, and the finished jobs
/// coming back to be answered and acknowledged. Clones share the receiver (one connection
/// reads it at a time).
#[derive(Clone)]
pub struct CommandLink {
    /// Each command of this destination, in config order.
    pub routes: Vec<Route>,
    /// Finished jobs waiting for the connection.
    pub done: Arc<Mutex<mpsc::Receiver<Done>>>,
    /// Outcome counters (the sink counts what its queue refuses).
    pub stats: Arc<CommandStats>,
}

impl CommandLink {
    /// A link carrying no command.
    pub fn none() -> Self {
        let (_, rx) = mpsc::channel(1);
        Self {
            routes: Vec::new(),
            done: Arc::new(Mutex::new(rx)),
            stats: Arc::new(CommandStats::new(&[])),
        }
    }

    /// Queues `job` for its camera; when the queue is full, the refusal to send back at once.
    pub fn submit(&self, route: usize, job: Job) -> Option<Done> {
        let r = &self.routes[route];
        match r.queue.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                let failure = Failure::busy();
                self.stats
                    .record(r.index, &r.cfg.camera, &Err(failure.clone()));
                Some(Done {
                    reply: Reply::to(&job.request.reply, &Err(failure)),
                    ack: job.ack,
                })
            }
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

/// Outcomes of one command not yet logged in detail.
#[derive(Debug, Default)]
struct Burst {
    /// The burst's log window ends here; `None`: the next outcome is logged in detail.
    until: Option<Instant>,
    quiet: [u64; Verdict::ALL.len()],
    retained_logged: bool,
}

/// `edgerelay_commands_total{command,result}` and the log of command outcomes, once per
/// burst: the first outcome in detail, then the rest of the burst as counts when it ends.
#[derive(Debug)]
pub struct CommandStats {
    counts: Vec<[std::sync::atomic::AtomicU64; Verdict::ALL.len()]>,
    bursts: Vec<std::sync::Mutex<Burst>>,
}

impl CommandStats {
    /// Zero counts for `commands.len()` commands.
    pub fn new(commands: &[CommandConfig]) -> Self {
        Self {
            counts: commands.iter().map(|_| Default::default()).collect(),
            bursts: commands.iter().map(|_| Default::default()).collect(),
        }
    }

    /// Counts one outcome of command `index` (on `camera`) and logs it, once per burst.
    pub fn record(&self, index: usize, camera: &str, outcome: &Result<Outcome, Failure>) {
        let verdict = outcome.as_ref().map_or_else(|f| f.verdict, |_| Verdict::Ok);
        let (Some(counts), Some(burst)) = (self.counts.get(index), self.bursts.get(index)) else {
            return;
        };
        counts[verdict.position()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = burst.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if b.until.is_some_and(|t| now < t) {
            b.quiet[verdict.position()] += 1;
            return;
        }
        Self::log_quiet(index, camera, &mut b);
        if verdict == Verdict::Retained {
            // Replayed on every reconnect: said once.
            if b.retained_logged {
                return;
            }
            b.retained_logged = true;
        }
        b.until = Some(now + LOG_BURST);
        match outcome {
            Ok(o) => tracing::info!(command = index, %camera, outcome = ?o, "command ran"),
            Err(f) => {
                tracing::warn!(command = index, %camera, result = verdict.label(), status = f.status, error = %f.message, "command refused or failed")
            }
        }
    }

    /// Logs the counts of bursts whose window ended (called now and then by the workers).
    pub fn flush(&self, index: usize, camera: &str) {
        if let Some(burst) = self.bursts.get(index) {
            let mut b = burst.lock().unwrap_or_else(|e| e.into_inner());
            if b.until.is_some_and(|t| Instant::now() >= t) {
                Self::log_quiet(index, camera, &mut b);
                b.until = None;
            }
        }
    }

    fn log_quiet(index: usize, camera: &str, b: &mut Burst) {
        if b.quiet.iter().all(|n| *n == 0) {
            return;
        }
        let counts: Vec<String> = Verdict::ALL
            .iter()
            .zip(b.quiet)
            .filter(|(_, n)| *n > 0)
            .map(|(v, n)| format!("{}={n}", v.label()))
            .collect();
        tracing::warn!(command = index, %camera, outcomes = %counts.join(" "), "more command outcomes in the last burst (counted in edgerelay_commands_total)");
        b.quiet = Default::default();
    }

    /// `(command, result, count)` for every command and verdict, for `/metrics`.
    pub fn rows(&self) -> Vec<(String, &'static str, u64)> {
        let mut out = Vec::new();
        for (i, counts) in self.counts.iter().enumerate() {
            for (v, c) in Verdict::ALL.iter().zip(counts) {
                out.push((
                    i.to_string(),
                    v.label(),
                    c.load(std::sync::atomic::Ordering::Relaxed),
                ));
            }
        }
        out
    }
}

/// One command as its camera's worker runs it.
#[derive(Debug)]
pub struct WorkerCommand {
    /// Index in `[[command]]`.
    pub index: usize,
    /// Its config.
    pub cfg: CommandConfig,
    /// `snapshot`: the outboxes of its `to` destinations (filled in by the caller).
    pub stores: Vec<(Arc<str>, Arc<SharedOutbox>)>,
    limiter: RateLimiter<()>,
    done: mpsc::Sender<Done>,
}

/// One camera's end of the links: run by [`serve`].
#[derive(Debug)]
pub struct Worker {
    /// The camera's name.
    pub camera: String,
    /// Its commands.
    pub commands: Vec<WorkerCommand>,
    jobs: mpsc::Receiver<Job>,
    stats: Arc<CommandStats>,
}

/// Every command linked to its destination and camera.
#[derive(Debug)]
pub struct Linked {
    /// Per destination name: the link its sink serves.
    pub links: HashMap<String, CommandLink>,
    /// One per camera with commands, for [`serve`].
    pub workers: Vec<Worker>,
    /// The outcome counters (`/metrics`).
    pub stats: Arc<CommandStats>,
}

/// Links every command to its destination and its camera: the sink of destination `NAME` gets
/// `links[NAME]`, and each camera's worker is run by [`serve`]. Fails on a bad `max_rate`
/// (which `check` refuses first).
pub fn link(commands: &[CommandConfig]) -> Result<Linked, String> {
    let stats = Arc::new(CommandStats::new(commands));
    let mut links: HashMap<String, (CommandLink, mpsc::Sender<Done>)> = HashMap::new();
    let mut workers: Vec<(Worker, mpsc::Sender<Job>)> = Vec::new();
    for (index, cfg) in commands.iter().enumerate() {
        let rate = units::parse_rate(&cfg.max_rate)
            .map_err(|e| format!("command[{index}].max_rate: \"{}\": {e}", cfg.max_rate))?;
        let (link, done_tx) = links.entry(cfg.destination.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let link = CommandLink {
                routes: Vec::new(),
                done: Arc::new(Mutex::new(rx)),
                stats: stats.clone(),
            };
            (link, tx)
        });
        let w = match workers.iter().position(|(w, _)| w.camera == cfg.camera) {
            Some(w) => w,
            None => {
                let (tx, rx) = mpsc::channel(QUEUE);
                workers.push((
                    Worker {
                        camera: cfg.camera.clone(),
                        commands: Vec::new(),
                        jobs: rx,
                        stats: stats.clone(),
                    },
                    tx,
                ));
                workers.len() - 1
            }
        };
        let (worker, queue) = &mut workers[w];
        link.routes.push(Route {
            index,
            cfg: cfg.clone(),
            queue: queue.clone(),
        });
        worker.commands.push(WorkerCommand {
            index,
            cfg: cfg.clone(),
            stores: Vec::new(),
            limiter: RateLimiter::new(rate, Keep::First),
            done: done_tx.clone(),
        });
    }
    Ok(Linked {
        links: links.into_iter().map(|(k, (l, _))| (k, l)).collect(),
        workers: workers.into_iter().map(|(w, _)| w).collect(),
        stats,
    })
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
    /// Parses a command payload strictly: a JSON object with a whole-number `port` from 1, a
    /// boolean `active`, an optional `duration` (1 to [`MAX_DURATION_S`] seconds, with
    /// `"active": true` only) and nothing else. The port's upper bound is [`Self::check_port`].
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        let serde_json::Value::Object(fields) = v else {
            return Err("payload must be a JSON object like {\"port\":1,\"active\":true}".into());
        };
        if let Some(k) = fields
            .keys()
            .find(|k| !["port", "active", "duration"].contains(&k.as_str()))
        {
            return Err(format!(
                "unknown field \"{}\": a virtual input command takes \"port\", \"active\" and \"duration\"",
                k.chars().take(64).collect::<String>()
            ));
        }
        let number = |key: &str| -> Result<Option<u32>, String> {
            match fields.get(key) {
                None => Ok(None),
                Some(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| format!("\"{key}\" must be a whole number")),
            }
        };
        let port = number("port")?.ok_or("missing \"port\"")?;
        if port == 0 {
            return Err("\"port\" must be 1 or more, not 0".into());
        }
        let active = match fields.get("active") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err("\"active\" must be true or false".into()),
            None => return Err("missing \"active\"".into()),
        };
        let duration_s = number("duration")?;
        match duration_s {
            Some(d) if !(1..=MAX_DURATION_S).contains(&d) => {
                return Err(format!(
                    "\"duration\" must be from 1 to {MAX_DURATION_S} seconds, not {d}"
                ));
            }
            Some(_) if !active => {
                return Err("\"duration\" goes with \"active\": true only".into());
            }
            _ => {}
        }
        Ok(Self {
            port,
            active,
            duration_s,
        })
    }

    /// Refuses a port above the camera's `ports` virtual inputs (`known`: from its catalog,
    /// else the bound [`MAX_VIRTUAL_INPUT_PORT`]).
    pub fn check_port(&self, ports: u32, known: bool) -> Result<(), String> {
        if self.port <= ports {
            return Ok(());
        }
        let whose = if known {
            "the camera's virtual inputs"
        } else {
            "the most any camera has; its catalog could not be read"
        };
        Err(format!(
            "\"port\" must be from 1 to {ports} ({whose}), not {}",
            self.port
        ))
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

/// A snapshot command takes an empty payload or `{}`.
fn check_snapshot_payload(payload: &[u8]) -> Result<(), String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(m)) if m.is_empty() => Ok(()),
        Ok(_) => Err("a snapshot command takes no fields: send {} or nothing".into()),
        Err(e) => Err(format!("payload is not JSON: {e}")),
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

/// The camera a worker acts on.
#[derive(Debug, Clone)]
pub struct Camera {
    /// Its VAPIX client.
    pub vapix: VapixClient,
    /// Its status: the virtual input count from its catalog.
    pub status: Arc<SourceStatus>,
    /// The time of snapshots.
    pub clock: SharedClock,
}

/// The camera's virtual input count and whether it is known: from its catalog (read by its
/// source, else here at most once per [`CATALOG_RETRY`]), else [`MAX_VIRTUAL_INPUT_PORT`].
async fn port_count(camera: &Camera, last_try: &mut Option<Instant>) -> (u32, bool) {
    if let Some(n) = camera.status.virtual_inputs() {
        return (n, true);
    }
    if last_try.is_none_or(|t| t.elapsed() >= CATALOG_RETRY) {
        *last_try = Some(Instant::now());
        if let Ok(xml) = camera.vapix.event_instances().await
            && let Ok(c) = crate::sources::catalog::Catalog::parse(&xml)
        {
            camera.status.set_virtual_inputs(c.virtual_inputs());
        }
    }
    match camera.status.virtual_inputs() {
        Some(n) => (n, true),
        None => (MAX_VIRTUAL_INPUT_PORT, false),
    }
}

async fn execute(
    cmd: &WorkerCommand,
    camera: &Camera,
    payload: &[u8],
    catalog_try: &mut Option<Instant>,
) -> Result<Outcome, Failure> {
    let vapix = &camera.vapix;
    match cmd.cfg.action {
        CommandAction::VirtualInput => {
            let vi = VirtualInput::parse(payload).map_err(Failure::bad_request)?;
            let (ports, known) = port_count(camera, catalog_try).await;
            vi.check_port(ports, known).map_err(Failure::bad_request)?;
            let body = vapix
                .call(Method::GET, &vi.path(), "text/plain", &[], Vec::new())
                .await
                .map_err(Failure::camera)?;
            parse_reply(&String::from_utf8_lossy(&body))
                .map(|changed| Outcome::VirtualInput { changed })
                .map_err(Failure::bad_request)
        }
        CommandAction::Snapshot => {
            check_snapshot_payload(payload).map_err(Failure::bad_request)?;
            let jpeg = crate::snapshots::fetch(vapix, "/axis-cgi/jpg/image.cgi")
                .await
                .map_err(|e| {
                    let verdict = if e.contains("did not answer") {
                        Verdict::Timeout
                    } else {
                        Verdict::CameraError
                    };
                    let status = if verdict == Verdict::Timeout {
                        504
                    } else {
                        502
                    };
                    Failure::new(verdict, status, e)
                })?;
            let now = camera.clock.now_ms();
            let bytes = jpeg.len();
            let record = Snapshot {
                created_ms: now,
                event_ms: now,
                topic: SNAPSHOT_TOPIC.into(),
                camera: cmd.cfg.camera.clone(),
                serial: String::new(),
                jpeg,
            }
            .encode();
            for (dest, outbox) in &cmd.stores {
                let not_stored = |m: String| Failure::new(Verdict::NotStored, 503, m);
                match outbox.append_async(vec![record.clone()], now).await {
                    Ok(o) if o.count_accepted == 0 => {
                        return Err(not_stored(format!("outbox of {dest} is full")));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(not_stored(format!("cannot queue in {dest}: {e}"))),
                }
            }
            Ok(Outcome::Snapshot {
                timestamp: now,
                bytes,
            })
        }
    }
}

/// Runs one camera's commands one at a time in arrival order until every sink is gone:
/// retained messages and the excess over `max_rate` are refused, the rest validated and run;
/// each outcome is counted, logged once per burst and handed back to the sink to answer and
/// acknowledge.
pub async fn serve(worker: Worker, camera: Camera) {
    let Worker {
        camera: name,
        mut commands,
        mut jobs,
        stats,
    } = worker;
    let mut catalog_try = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let job = tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
            _ = tick.tick() => {
                for c in &commands {
                    stats.flush(c.index, &name);
                }
                continue;
            }
        };
        let Some(cmd) = commands.iter_mut().find(|c| c.index == job.command) else {
            continue;
        };
        let outcome = if job.retained {
            Err(Failure::retained())
        } else if cmd.limiter.admit(0, job.arrived_ms, || (), &mut Vec::new()) != Decision::Pass {
            Err(Failure::rate_limited(&cmd.cfg.max_rate))
        } else {
            execute(cmd, &camera, &job.request.payload, &mut catalog_try).await
        };
        stats.record(cmd.index, &name, &outcome);
        let done = Done {
            reply: Reply::to(&job.request.reply, &outcome),
            ack: job.ack,
        };
        if cmd.done.send(done).await.is_err() {
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
        let c = VirtualInput::parse(br#"{"port":3,"active":false}"#).unwrap();
        assert_eq!(
            c.path(),
            "/axis-cgi/virtualinput/deactivate.cgi?schemaversion=1&port=3"
        );
        let c = VirtualInput::parse(br#"{"port":3,"active":true,"duration":5}"#).unwrap();
        assert!(
            c.path()
                .ends_with("activate.cgi?schemaversion=1&port=3&duration=5")
        );
    }

    #[test]
    fn payloads_are_validated_strictly() {
        let err = |p: &str, ports: u32| {
            VirtualInput::parse(p.as_bytes())
                .and_then(|v| v.check_port(ports, true))
                .unwrap_err()
        };
        assert!(err("nope", 8).starts_with("payload is not JSON"));
        assert!(err("[1]", 8).starts_with("payload must be a JSON object"));
        assert_eq!(err(r#"{"active":true}"#, 8), "missing \"port\"");
        assert_eq!(err(r#"{"port":1}"#, 8), "missing \"active\"");
        for bad in [r#""1""#, "-1", "1.5", "4294967296"] {
            let p = format!(r#"{{"port":{bad},"active":true}}"#);
            assert_eq!(err(&p, 8), "\"port\" must be a whole number", "{p}");
        }
        assert_eq!(
            err(r#"{"port":0,"active":true}"#, 8),
            "\"port\" must be 1 or more, not 0"
        );
        let far = VirtualInput::parse(br#"{"port":65,"active":true}"#).unwrap();
        assert!(
            far.check_port(MAX_VIRTUAL_INPUT_PORT, false)
                .unwrap_err()
                .contains("from 1 to 64 (the most any camera has")
        );
        assert_eq!(
            err(r#"{"port":9,"active":true}"#, 8),
            "\"port\" must be from 1 to 8 (the camera's virtual inputs), not 9"
        );
        for bad in [r#""yes""#, r#""true""#, "1", "null"] {
            let p = format!(r#"{{"port":1,"active":{bad}}}"#);
            assert_eq!(err(&p, 8), "\"active\" must be true or false", "{p}");
        }
        assert_eq!(
            err(r#"{"port":1,"active":true,"unlock":"all"}"#, 8),
            "unknown field \"unlock\": a virtual input command takes \"port\", \"active\" and \"duration\""
        );
        assert_eq!(
            err(r#"{"port":1,"active":true,"duration":0}"#, 8),
            "\"duration\" must be from 1 to 86400 seconds, not 0"
        );
        assert_eq!(
            err(r#"{"port":1,"active":true,"duration":86401}"#, 8),
            "\"duration\" must be from 1 to 86400 seconds, not 86401"
        );
        assert_eq!(
            err(r#"{"port":1,"active":false,"duration":5}"#, 8),
            "\"duration\" goes with \"active\": true only"
        );
        assert!(check_snapshot_payload(b"").is_ok());
        assert!(check_snapshot_payload(b" {} ").is_ok());
        assert!(check_snapshot_payload(br#"{"x":1}"#).is_err());
    }

    fn command(camera: &str, destination: &str, max_rate: &str) -> CommandConfig {
        CommandConfig {
            destination: destination.into(),
            topic: Some("cmd".into()),
            method: None,
            camera: camera.into(),
            action: CommandAction::VirtualInput,
            to: vec![],
            reply_topic: None,
            max_rate: max_rate.into(),
        }
    }

    #[test]
    fn one_worker_per_camera_one_link_per_destination() {
        let l = link(&[
            command("a", "d1", "10/s"),
            command("b", "d1", "1/min"),
            command("a", "d2", "5/h"),
        ])
        .unwrap();
        assert_eq!(l.workers.len(), 2);
        let a = l.workers.iter().find(|w| w.camera == "a").unwrap();
        assert_eq!(
            a.commands.iter().map(|c| c.index).collect::<Vec<_>>(),
            [0, 2]
        );
        assert_eq!(l.links["d1"].routes.len(), 2);
        assert_eq!(l.links["d2"].routes[0].index, 2);
        assert_eq!(l.stats.rows().len(), 3 * Verdict::ALL.len());
        assert!(link(&[command("a", "d", "5")]).is_err());
    }

    #[test]
    fn a_full_queue_refuses_and_counts_busy() {
        let l = link(&[command("a", "d", "10/s")]).unwrap();
        let link = &l.links["d"];
        let job = || Job {
            command: 0,
            request: Request {
                payload: b"{}".to_vec(),
                reply: ReplyTo::Topic(Some("r".into())),
            },
            retained: false,
            arrived_ms: 0,
            ack: None,
        };
        for _ in 0..QUEUE {
            assert!(link.submit(0, job()).is_none());
        }
        let done = link.submit(0, job()).unwrap();
        assert_eq!(
            done.reply.unwrap().payload,
            br#"{"ok":false,"error":"too many commands waiting for the camera"}"#
        );
        assert!(l.stats.rows().contains(&("0".into(), "busy", 1)));
    }

    #[test]
    fn azure_method_responses_carry_each_refusals_status() {
        let to = ReplyTo::AzureMethod { rid: "9".into() };
        let status = |f: Failure| Reply::to(&to, &Err(f)).unwrap().topic;
        assert_eq!(
            status(Failure::retained()),
            "$iothub/methods/res/400/?$rid=9"
        );
        assert_eq!(
            status(Failure::rate_limited("5/min")),
            "$iothub/methods/res/429/?$rid=9"
        );
        assert_eq!(status(Failure::busy()), "$iothub/methods/res/503/?$rid=9");
        assert_eq!(
            status(Failure::camera(VapixError::Timeout("x".into()))),
            "$iothub/methods/res/504/?$rid=9"
        );
        assert_eq!(
            status(Failure::camera(VapixError::Auth(401))),
            "$iothub/methods/res/502/?$rid=9"
        );
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
