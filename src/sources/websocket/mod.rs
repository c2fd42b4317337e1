//! The VAPIX event stream over WebSocket (`/vapix/ws-data-stream?sources=events`).
//!
//! One task per camera: read the serial (unless configured) and the event catalog over HTTP,
//! upgrade with Digest on the upgrade request, send `events:configure` with the rules' filters,
//! then turn every `events:notify` into an [`Event`]. Any failure ends the connection and the
//! task backs off (1 s doubling, capped, jittered) before the next attempt.
//!
//! Every network step has a deadline: the VAPIX calls ([`crate::sources::vapix::CALL_TIMEOUT`]),
//! DNS, TCP connect, TLS handshake and upgrade answer together ([`UPGRADE_TIMEOUT`], per
//! attempt), the `events:configure` answer ([`CONFIGURE_TIMEOUT`]), every write
//! ([`SEND_TIMEOUT`]); once streaming, the watchdog covers reads. A step that runs out of time
//! is an error like any other: counted (`timeouts`), logged once, backed off, retried. Memory
//! is bounded in bytes: a message or frame over [`MAX_WS_MESSAGE_BYTES`] is refused from its
//! header (counted as malformed; tungstenite cannot resync, so the stream is reopened), and the
//! sizes inside an event are checked at parse ([`crate::sources::limits`]).

pub mod protocol;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::clock::SharedClock;
use crate::event::DeviceInfo;
use crate::sources::backoff::Backoff;
use crate::sources::catalog::Catalog;
use crate::sources::limits::MAX_WS_MESSAGE_BYTES;
use crate::sources::own_events;
use crate::sources::queue::EventSender;
use crate::sources::status::{SourceState, SourceStatus};
use crate::sources::vapix::{VapixClient, VapixError};
use protocol::{Incoming, configure_request, parse_frame};

/// Stream path and query, also the Digest `uri` of the upgrade request.
const STREAM_PATH: &str = "/vapix/ws-data-stream?sources=events";
/// A camera that does not answer `events:configure` within this is treated as stalled.
pub const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);
/// DNS, TCP connect, TLS handshake and the HTTP upgrade answer of one upgrade attempt: a
/// camera that accepts the connection and never answers must not keep the source
/// "connecting" for good.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a frame we send (configure, ping) may wait for the camera to read it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct unlisted topics per connection that each trigger a catalog re-read (an application
/// installed while streaming brings new topics); past this, no more re-reads until reconnect.
const MAX_CATALOG_REREADS: usize = 16;

/// What ended a connection, classified for the retry logic.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Credentials refused: back off (a hot loop would lock the account on some devices).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The camera rejected our filter list: a config problem; back off to the cap.
    #[error("events:configure rejected with code {code}: {message}")]
    Rejected {
        /// JSON-RPC error code.
        code: i64,
        /// Camera's text.
        message: String,
    },
    /// Network trouble, a closed stream or a stall: retry with back-off.
    #[error("{0}")]
    Unavailable(String),
    /// A network step got no answer in time: retry with back-off, counted as a timeout.
    #[error("{0}")]
    Timeout(String),
    /// Nothing arrived (no event, no pong) for this long: the link or the camera hangs while
    /// the TCP connection looks open. Reconnect with back-off.
    #[error("stream silent for {0:?} (no event, no answer to pings)")]
    Silent(Duration),
}

impl From<VapixError> for SourceError {
    fn from(e: VapixError) -> Self {
        match e {
            VapixError::Auth(_) => Self::Auth(e.to_string()),
            VapixError::Timeout(_) => Self::Timeout(e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Everything one camera connection needs.
#[derive(Debug, Clone)]
pub struct WsCamera {
    /// Config name.
    pub name: Arc<str>,
    /// `http://host[:port]` or `https://...`.
    pub base: url::Url,
    /// Credentials and TLS for the HTTP calls and the upgrade.
    pub vapix: VapixClient,
    /// Serial from config; read from the device when `None`.
    pub serial: Option<String>,
    /// The `events:configure` topic filters (non-overlapping).
    pub filters: Vec<String>,
    /// Back-off cap.
    pub max_backoff: Duration,
    /// TLS for `https://` cameras (verification on unless `tls_verify = false`).
    pub tls: crate::tls::TlsSettings,
    /// Quiet time before a ping; twice this without any frame or pong ends the connection.
    pub heartbeat: Duration,
}

/// Runs a camera source until the task is aborted or the receiver is gone.
pub async fn run(cam: WsCamera, tx: EventSender, status: Arc<SourceStatus>, clock: SharedClock) {
    let mut mem = Memory {
        backoff: Backoff::new(cam.max_backoff),
        catalog: Catalog::default(),
        serial: cam.serial.as_deref().map(Arc::from),
        lost_at: None,
        device: None,
    };
    let mut first = true;
    // The error last logged: a camera failing the same way on every retry is logged once.
    let mut logged_error = String::new();
    loop {
        if !first {
            status.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        status.set(SourceState::Connecting);
        let result = session(&cam, &tx, &status, &clock, &mut mem).await;
        match &result {
            Err(SourceError::Silent(_)) => {
                status.silences.fetch_add(1, Ordering::Relaxed);
            }
            Err(SourceError::Timeout(_)) => {
                status.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if status.state() == SourceState::Streaming {
            logged_error.clear();
            mem.lost_at = Some(clock.now_ms());
        }
        if tx.is_closed() {
            return;
        }
        let error = match result {
            Ok(()) => "stream closed by the camera".to_string(),
            Err(e) => e.to_string(),
        };
        status.set(SourceState::Backoff {
            error: error.clone(),
        });
        if error != logged_error {
            tracing::warn!(camera = %cam.name, %error, "camera connection lost; reconnecting with back-off");
            logged_error = error;
        }
        let delay = mem.backoff.next_delay(rand::random::<f64>());
        tokio::time::sleep(delay).await;
    }
}

/// What one camera's task keeps from one connection to the next.
struct Memory {
    backoff: Backoff,
    /// Read on every connect; the last good one is kept when a read fails.
    catalog: Catalog,
    /// From config, else read once from the device.
    serial: Option<Arc<str>>,
    /// When a stream that was flowing ended: the next one announces the gap.
    lost_at: Option<i64>,
    /// Model and firmware, read with the serial (none when the serial is configured: no
    /// extra call is made for them).
    device: Option<Arc<DeviceInfo>>,
}

/// One connection, from HTTP calls to the end of the stream.
async fn session(
    cam: &WsCamera,
    tx: &EventSender,
    status: &SourceStatus,
    clock: &SharedClock,
    mem: &mut Memory,
) -> Result<(), SourceError> {
    let Memory {
        backoff,
        catalog,
        serial,
        lost_at,
        device,
    } = mem;
    if serial.is_none() {
        let (read, info) = cam.vapix.device_info().await?;
        *serial = Some(read.into());
        status.set_firmware(info.firmware.clone());
        *device = Some(Arc::new(info));
    }
    let serial = serial.clone().expect("set above");
    status.set_serial(serial.clone());
    match cam
        .vapix
        .event_instances()
        .await
        .map_err(SourceError::from)
        .and_then(|xml| Catalog::parse(&xml).map_err(|e| SourceError::Unavailable(e.to_string())))
    {
        Ok(c) => {
            status.set_virtual_inputs(c.virtual_inputs());
            *catalog = c;
        }
        Err(SourceError::Auth(e)) => return Err(SourceError::Auth(e)),
        Err(e) => tracing::warn!(camera = %cam.name, error = %e,
            "no event catalog; every topic counts as stateless until it can be read"),
    }

    let mut ws = upgrade(cam).await?;
    let context = format!("edgerelay-{}", cam.name);
    let configure = Message::Text(configure_request(&context, &cam.filters).into());
    send(&mut ws, configure, "events:configure").await?;

    let configure_deadline = tokio::time::sleep(CONFIGURE_TIMEOUT);
    tokio::pin!(configure_deadline);
    let mut configured = false;
    let mut watchdog = Watchdog::new(cam.heartbeat, tokio::time::Instant::now());
    // Topics the catalog did not list, each answered by one re-read.
    let mut unlisted: std::collections::HashSet<String> = Default::default();
    let (catalog_tx, mut catalog_rx) = mpsc::channel::<Result<Catalog, String>>(1);
    let mut rereading = false;
    let mut tick = tokio::time::interval(cam.heartbeat / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = &mut configure_deadline, if !configured => {
                return Err(SourceError::Timeout(format!(
                    "no answer to events:configure within {CONFIGURE_TIMEOUT:?}"
                )));
            }
            _ = tick.tick(), if configured => {
                match watchdog.check(tokio::time::Instant::now()) {
                    Alive::Quiet => {}
                    Alive::Ping => send(&mut ws, Message::Ping(Vec::new().into()), "ping").await?,
                    Alive::Silent(d) => return Err(SourceError::Silent(d)),
                }
                continue;
            }
            Some(read) = catalog_rx.recv() => {
                rereading = false;
                match read {
                    Ok(c) => {
                        tracing::info!(camera = %cam.name, topics = c.len(), "event catalog re-read");
                        status.set_virtual_inputs(c.virtual_inputs());
                        *catalog = c;
                    }
                    Err(e) => tracing::warn!(camera = %cam.name, error = %e, "event catalog re-read failed; keeping the last one"),
                }
                continue;
            }
        };
        watchdog.heard(tokio::time::Instant::now());
        let text = match msg {
            None => return Ok(()),
            Some(Err(tungstenite::Error::Capacity(e))) => {
                // Refused from its header, unread: the stream cannot resync past it. Counted
                // as malformed; the error (logged once while it repeats) says why.
                status.malformed.fetch_add(1, Ordering::Relaxed);
                return Err(SourceError::Unavailable(format!(
                    "frame refused ({e}; at most {MAX_WS_MESSAGE_BYTES} bytes)"
                )));
            }
            Some(Err(e)) => return Err(SourceError::Unavailable(format!("stream: {e}"))),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) => return Ok(()),
            Some(Ok(_)) => continue, // pongs feed the watchdog; pings are answered by tungstenite
        };
        match parse_frame(&text) {
            Ok(Incoming::Notify(n)) => {
                let now = clock.now_ms();
                let mut ev = n.into_event(&cam.name, &serial, catalog, now);
                ev.device = device.clone();
                if !ev.stateful
                    && !rereading
                    && unlisted.len() < MAX_CATALOG_REREADS
                    && catalog.get(&ev.topic).is_none()
                    && unlisted.insert(ev.topic.clone())
                {
                    rereading = true;
                    let (vapix, tx) = (cam.vapix.clone(), catalog_tx.clone());
                    tokio::spawn(async move {
                        let read = vapix.event_instances().await.map_err(|e| e.to_string());
                        let parsed =
                            read.and_then(|xml| Catalog::parse(&xml).map_err(|e| e.to_string()));
                        let _ = tx.send(parsed).await;
                    });
                }
                status.last_event_ms.store(now, Ordering::Relaxed);
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
                // Counted once queued: a stop that aborts the send must not count it as received.
                status.events.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Incoming::ConfigureAck) => {
                configured = true;
                backoff.reset();
                if status.set(SourceState::Streaming) {
                    tracing::info!(camera = %cam.name, %serial, filters = ?cam.filters, topics = catalog.len(), "camera streaming");
                }
                if let Some(lost) = lost_at.take() {
                    let ev = own_events::reconnected(&cam.name, &serial, lost, clock.now_ms());
                    if tx.send(ev).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(Incoming::ConfigureError { code, message }) => {
                return Err(SourceError::Rejected { code, message });
            }
            Ok(Incoming::Other) => {}
            Err(e) => {
                if status.count_malformed() {
                    let sample: String = text.chars().take(120).collect();
                    tracing::warn!(camera = %cam.name, error = %e, %sample,
                        count = status.malformed.load(Ordering::Relaxed), "skipping malformed frame");
                }
            }
        }
    }
}

/// What the watchdog wants done now.
#[derive(Debug, PartialEq, Eq)]
enum Alive {
    /// Heard from the camera recently enough.
    Quiet,
    /// Quiet for a heartbeat: ask with a ping (once per quiet spell).
    Ping,
    /// Quiet for two heartbeats: the stream is dead even if TCP says otherwise.
    Silent(Duration),
}

/// Silence detection, apart from the I/O: the session tells it when anything arrived and asks
/// it on a timer what to do.
#[derive(Debug)]
struct Watchdog {
    heartbeat: Duration,
    last_heard: tokio::time::Instant,
    pinged: bool,
}

impl Watchdog {
    fn new(heartbeat: Duration, now: tokio::time::Instant) -> Self {
        Self {
            heartbeat,
            last_heard: now,
            pinged: false,
        }
    }

    /// A frame (event, reply, pong, anything) arrived.
    fn heard(&mut self, now: tokio::time::Instant) {
        self.last_heard = now;
        self.pinged = false;
    }

    fn check(&mut self, now: tokio::time::Instant) -> Alive {
        let quiet = now.saturating_duration_since(self.last_heard);
        if quiet >= self.heartbeat * 2 {
            Alive::Silent(quiet)
        } else if quiet >= self.heartbeat && !self.pinged {
            self.pinged = true;
            Alive::Ping
        } else {
            Alive::Quiet
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one frame, within [`SEND_TIMEOUT`] (a camera that stopped reading fills the socket).
async fn send(ws: &mut Ws, msg: Message, what: &str) -> Result<(), SourceError> {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(msg)).await {
        Ok(r) => r.map_err(|e| SourceError::Unavailable(format!("sending {what}: {e}"))),
        Err(_) => Err(SourceError::Timeout(format!(
            "sending {what}: not taken within {SEND_TIMEOUT:?}"
        ))),
    }
}

/// Limits of the stream: events are small, so a message or frame over
/// [`MAX_WS_MESSAGE_BYTES`] is refused before it is read.
fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_WS_MESSAGE_BYTES))
}

/// Opens the WebSocket, answering a Digest challenge on the upgrade request.
async fn upgrade(cam: &WsCamera) -> Result<Ws, SourceError> {
    let mut url = cam
        .base
        .join(STREAM_PATH)
        .map_err(|e| SourceError::Unavailable(e.to_string()))?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|_| SourceError::Unavailable("cannot make a ws:// URL".into()))?;
    let request = || {
        url.as_str()
            .into_client_request()
            .map_err(|e| SourceError::Unavailable(e.to_string()))
    };
    let connector = if scheme == "wss" {
        let config = crate::tls::client_config(&cam.tls)
            .map_err(|e| SourceError::Unavailable(format!("TLS: {e}")))?;
        Some(tokio_tungstenite::Connector::Rustls(config))
    } else {
        None
    };
    let connect = |req| {
        let attempt = tokio_tungstenite::connect_async_tls_with_config(
            req,
            Some(ws_config()),
            true,
            connector.clone(),
        );
        async move {
            tokio::time::timeout(UPGRADE_TIMEOUT, attempt)
                .await
                .map_err(|_| {
                    SourceError::Timeout(format!(
                        "no answer to the WebSocket upgrade within {UPGRADE_TIMEOUT:?} (connect, TLS, HTTP)"
                    ))
                })
        }
    };
    let challenge = match connect(request()?).await? {
        Ok((ws, _)) => return Ok(ws),
        Err(tungstenite::Error::Http(resp)) if resp.status() == 401 => resp
            .headers()
            .get("WWW-Authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| SourceError::Auth("401 without a challenge".into()))?,
        Err(tungstenite::Error::Http(resp)) => {
            return Err(SourceError::Unavailable(format!(
                "upgrade refused: HTTP {}",
                resp.status()
            )));
        }
        Err(e) => return Err(SourceError::Unavailable(format!("connect: {e}"))),
    };
    let auth = cam
        .vapix
        .authorization(&challenge, "GET", STREAM_PATH)?
        .ok_or_else(|| {
            SourceError::Auth("the camera wants credentials and none are configured".into())
        })?;
    let mut req = request()?;
    req.headers_mut().insert(
        "Authorization",
        auth.parse()
            .map_err(|_| SourceError::Auth("unusable Authorization header".into()))?,
    );
    match connect(req).await? {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) if resp.status() == 401 || resp.status() == 403 => Err(
            SourceError::Auth(format!("upgrade refused: HTTP {}", resp.status())),
        ),
        Err(e) => Err(SourceError::Unavailable(format!("upgrade: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_once_then_gives_up_after_two_heartbeats() {
        let t0 = tokio::time::Instant::now();
        let hb = Duration::from_secs(10);
        let mut w = Watchdog::new(hb, t0);
        assert_eq!(w.check(t0 + Duration::from_secs(9)), Alive::Quiet);
        assert_eq!(w.check(t0 + Duration::from_secs(10)), Alive::Ping);
        assert_eq!(w.check(t0 + Duration::from_secs(15)), Alive::Quiet);
        assert_eq!(
            w.check(t0 + Duration::from_secs(20)),
            Alive::Silent(Duration::from_secs(20))
        );
    }

    #[test]
    fn anything_heard_resets_the_watchdog() {
        let t0 = tokio::time::Instant::now();
        let hb = Duration::from_secs(10);
        let mut w = Watchdog::new(hb, t0);
        assert_eq!(w.check(t0 + Duration::from_secs(12)), Alive::Ping);
        w.heard(t0 + Duration::from_secs(13)); // the pong
        assert_eq!(w.check(t0 + Duration::from_secs(22)), Alive::Quiet);
        assert_eq!(w.check(t0 + Duration::from_secs(24)), Alive::Ping);
        assert_eq!(
            w.check(t0 + Duration::from_secs(33)),
            Alive::Silent(Duration::from_secs(20))
        );
    }
}
