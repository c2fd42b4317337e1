//! An emulated Axis camera on loopback: tests and the demo config use it.
//!
//! It serves the VAPIX event stream over WebSocket (`/vapix/ws-data-stream`, Digest or
//! `wssession.cgi` tokens, `events:configure`, `events:notify`), the event catalog, basic
//! device information, virtual inputs and a JPEG snapshot, all in the shapes of
//! `tests/fixtures/` (see `tests/fixtures/README.md` sections 1 and 3). Faults can be
//! injected to test the client's error paths.
//!
//! Files: `digest` server-side HTTP Digest, `http` routes, `ws` the stream sessions,
//! `script` frames, fixtures and static replies; `rtsp` the ONVIF metadata stream over RTSP.

mod digest;
mod http;
pub mod onvif;
pub mod rtsp;
mod script;
mod ws;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indexmap::{IndexMap, IndexSet};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::rules::topic_filter::TopicFilter;

pub use script::Notification;

/// How long a `wssession.cgi` token may wait for its one connection.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15);
/// How many issued nonces the emulator remembers (older ones become stale).
const MAX_NONCES: usize = 1024;

/// What the emulated camera is and who may talk to it.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Device serial (upper-case hex); also makes the Digest realm `AXIS_<serial>`.
    pub serial: String,
    /// The one account the device accepts.
    pub username: String,
    /// Password of that account.
    pub password: String,
    /// Whether the stream and CGIs need Digest (or a `wssession` token).
    pub require_auth: bool,
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Serve HTTPS/WSS with this certificate (AXIS OS 12 defaults to HTTPS only).
    pub tls: Option<EmulatorTls>,
}

/// A server certificate for the emulator, PEM.
#[derive(Debug, Clone)]
pub struct EmulatorTls {
    /// Certificate chain.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            serial: "B8A44F3E9D21".into(),
            username: "bridge".into(),
            password: "fixture-pass".into(),
            require_auth: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        }
    }
}

/// A misbehaviour to inject, so tests can exercise the client's error handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every authentication fails with `401` (Digest, tokens, even correct credentials).
    RejectCredentials,
    /// Once per connection, right after the `events:configure` ack: one non-JSON text frame, then normal.
    SendGarbageThenContinue,
    /// On `events:configure`, close the WebSocket without replying.
    CloseOnConfigure,
    /// Accept the upgrade, never reply to `events:configure`, send nothing.
    Stall,
    /// Reply to `events:configure` with the `ws-configure-error.json` shape, code 2104.
    RejectConfigure,
    /// Accept the TCP connection of a stream upgrade request and answer nothing, not even a
    /// challenge, for as long as this fault is set (a camera whose web server hangs); the
    /// requests held then get their normal answer.
    HoldUpgrade,
}

/// What the emulator has seen and done, for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// WebSocket upgrades answered with `101`.
    pub upgrades_ok: u64,
    /// `401` answers to requests without credentials (or with a stale nonce).
    pub challenges: u64,
    /// `401` answers to wrong credentials, bad/used/expired tokens, or under `RejectCredentials`.
    pub auth_failures: u64,
    /// Tokens handed out by `wssession.cgi`.
    pub tokens_issued: u64,
    /// `events:configure` requests accepted.
    pub configures_ok: u64,
    /// `events:configure` requests answered with an error.
    pub configures_rejected: u64,
    /// `events:notify` frames written to sockets (state re-sends included).
    pub frames_sent: u64,
    /// Event catalogs (`GetEventInstances`) served.
    pub catalog_reads: u64,
    /// Stream upgrade requests held unanswered by [`Fault::HoldUpgrade`].
    pub upgrades_held: u64,
    /// Virtual input activations and deactivations carried out (`activate.cgi` /
    /// `deactivate.cgi` calls with a valid port), changed or not.
    pub virtual_input_calls: u64,
}

#[derive(Default)]
struct AtomicCounters {
    upgrades_ok: AtomicU64,
    challenges: AtomicU64,
    auth_failures: AtomicU64,
    tokens_issued: AtomicU64,
    configures_ok: AtomicU64,
    configures_rejected: AtomicU64,
    frames_sent: AtomicU64,
    catalog_reads: AtomicU64,
    upgrades_held: AtomicU64,
    virtual_input_calls: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl AtomicCounters {
    fn snapshot(&self) -> Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            upgrades_ok: g(&self.upgrades_ok),
            challenges: g(&self.challenges),
            auth_failures: g(&self.auth_failures),
            tokens_issued: g(&self.tokens_issued),
            configures_ok: g(&self.configures_ok),
            configures_rejected: g(&self.configures_rejected),
            frames_sent: g(&self.frames_sent),
            catalog_reads: g(&self.catalog_reads),
            upgrades_held: g(&self.upgrades_held),
            virtual_input_calls: g(&self.virtual_input_calls),
        }
    }
}

/// A frame queued for one WebSocket client.
enum Out {
    /// Text frame; `notify` says whether it counts as an event frame.
    Text { text: String, notify: bool },
    /// Close the connection.
    Close,
    /// Stop reading and writing, socket held open: a hung camera or a dead link that TCP
    /// has not noticed yet (no pong, no close, nothing).
    Freeze,
}

/// One connected WebSocket client.
struct Client {
    tx: mpsc::UnboundedSender<Out>,
    /// `None` until an `events:configure` is accepted.
    filters: Option<Vec<TopicFilter>>,
}

/// Everything that must change together: clients, remembered state, the configure log.
#[derive(Default)]
struct Hub {
    clients: BTreeMap<u64, Client>,
    /// Last notification per stateful topic + source items.
    state: IndexMap<(String, Vec<(String, String)>), Notification>,
    configure_log: Vec<serde_json::Value>,
}

impl Hub {
    /// Queues `frame` for every configured client, once per matching filter.
    fn broadcast(&self, topic: &str, frame: &str) {
        for c in self.clients.values() {
            let Some(filters) = &c.filters else { continue };
            for _ in filters.iter().filter(|f| f.matches(topic)) {
                let _ = c.tx.send(Out::Text {
                    text: frame.to_string(),
                    notify: true,
                });
            }
        }
    }

    fn remember(&mut self, n: &Notification) {
        if script::is_stateful(&n.topic) {
            self.state
                .insert((n.topic.clone(), n.source.clone()), n.clone());
        }
    }

    fn configured(&self) -> usize {
        self.clients
            .values()
            .filter(|c| c.filters.is_some())
            .count()
    }
}

/// State shared by the server tasks and the [`Emulator`] handle.
struct Shared {
    cfg: EmulatorConfig,
    realm: String,
    hub: Mutex<Hub>,
    nonces: Mutex<IndexSet<String>>,
    tokens: Mutex<HashMap<String, Instant>>,
    /// The fault injected now; a watch, so a held request learns when it is cleared.
    fault: watch::Sender<Option<Fault>>,
    counters: AtomicCounters,
    next_client: AtomicU64,
    /// Number of configured clients, for `wait_for_clients`.
    configured: watch::Sender<usize>,
    /// Becomes `true` when the emulator stops.
    shutdown: watch::Sender<bool>,
    /// Topic elements added to the catalog after start (an application installed).
    extra_catalog: Mutex<Vec<String>>,
}

/// Locks a mutex, ignoring poisoning (a panicked test thread must not cascade).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn fault(&self) -> Option<Fault> {
        *self.fault.borrow()
    }

    /// Waits while `fault` is set (or until the emulator stops).
    async fn while_fault(&self, fault: Fault) {
        let mut f = self.fault.subscribe();
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            _ = f.wait_for(|now| *now != Some(fault)) => {}
            _ = stopped(&mut stop) => {}
        }
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        lock(&self.hub)
    }

    /// Publishes the configured-client count; call with the hub locked.
    fn publish_count(&self, hub: &Hub) {
        self.configured.send_replace(hub.configured());
    }

    fn emit(&self, n: &Notification) {
        let mut hub = self.hub();
        hub.remember(n);
        hub.broadcast(&n.topic, &n.to_frame());
    }

    fn emit_text(&self, n: &Notification, frame: &str) {
        let mut hub = self.hub();
        hub.remember(n);
        hub.broadcast(&n.topic, frame);
    }

    /// Sets a virtual input; emits its event and returns `true` only if the state changed.
    fn set_virtual_input(&self, port: u32, active: bool) -> bool {
        let mut hub = self.hub();
        let source = vec![("port".to_string(), port.to_string())];
        let key = (script::VIRTUAL_INPUT_TOPIC.to_string(), source.clone());
        let current = hub
            .state
            .get(&key)
            .and_then(|n| n.data.iter().find(|(k, _)| k == "active"))
            .is_some_and(|(_, v)| v == "1");
        if current == active {
            return false;
        }
        let n = Notification {
            topic: script::VIRTUAL_INPUT_TOPIC.into(),
            timestamp: Some(script::now_ms()),
            source,
            key: Vec::new(),
            data: vec![("active".into(), if active { "1" } else { "0" }.into())],
        };
        hub.remember(&n);
        hub.broadcast(&n.topic, &n.to_frame());
        true
    }

    fn drop_connections(&self) {
        self.end_connections(|| Out::Close);
    }

    fn end_connections(&self, how: fn() -> Out) {
        let mut hub = self.hub();
        for (_, c) in std::mem::take(&mut hub.clients) {
            let _ = c.tx.send(how());
        }
        self.publish_count(&hub);
    }

    fn remember_nonce(&self, nonce: &str) {
        let mut n = lock(&self.nonces);
        n.insert(nonce.to_string());
        while n.len() > MAX_NONCES {
            n.shift_remove_index(0);
        }
    }

    fn nonce_known(&self, nonce: &str) -> bool {
        lock(&self.nonces).contains(nonce)
    }

    fn issue_token(&self) -> String {
        let token = rand::random::<u64>().to_string();
        let mut t = lock(&self.tokens);
        let now = Instant::now();
        t.retain(|_, issued| now.duration_since(*issued) < TOKEN_LIFETIME);
        t.insert(token.clone(), now);
        bump(&self.counters.tokens_issued);
        token
    }

    /// Consumes a token: valid only once and within its lifetime.
    fn take_token(&self, token: &str) -> bool {
        lock(&self.tokens)
            .remove(token.trim())
            .is_some_and(|issued| issued.elapsed() < TOKEN_LIFETIME)
    }
}

/// Resolves once the emulator stops (holds no watch guard, so futures stay `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn tls_acceptor(tls: &EmulatorTls) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
    };
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(|e| invalid(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The same routes over TLS: one hyper connection (with upgrades, for the WebSocket) per accept.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => {
                    let _ = a.0.set_nodelay(true);
                    a
                }
                Err(_) => continue,
            },
            _ = stopped(&mut stop) => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut app = app.clone();
                    async move {
                        use tower::Service;
                        app.call(req.map(axum::body::Body::new)).await
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A running emulated camera; dropping it (or calling [`Emulator::shutdown`]) stops it.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds `cfg.bind` and serves until dropped.
    pub async fn start(cfg: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            realm: format!("AXIS_{}", cfg.serial),
            cfg,
            hub: Mutex::new(Hub::default()),
            nonces: Mutex::new(IndexSet::new()),
            tokens: Mutex::new(HashMap::new()),
            fault: watch::channel(None).0,
            counters: AtomicCounters::default(),
            next_client: AtomicU64::new(1),
            configured: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            extra_catalog: Mutex::new(Vec::new()),
        });
        let app = http::router(shared.clone());
        let mut stop = shared.shutdown.subscribe();
        if let Some(tls) = shared.cfg.tls.clone() {
            let acceptor = tls_acceptor(&tls)?;
            let server = tokio::spawn(serve_tls(listener, acceptor, app, stop));
            return Ok(Emulator {
                shared,
                addr,
                server: Some(server),
            });
        }
        let server = tokio::spawn(async move {
            // Small frames go out at once, as from a camera (Nagle would hold each for an ACK).
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped(&mut stop).await })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "camera emulator server stopped");
            }
        });
        tracing::debug!(%addr, "camera emulator listening");
        Ok(Emulator {
            shared,
            addr,
            server: Some(server),
        })
    }

    /// The camera URL to configure a source with.
    pub fn base_url(&self) -> String {
        let scheme = if self.shared.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The bound address (with the real port when `bind` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The serial the device reports (basic device info, realm).
    pub fn serial(&self) -> &str {
        &self.shared.cfg.serial
    }

    /// Send one `events:notify` to every connected, configured client whose filter list matches the topic (one copy per matching filter, like real devices).
    pub fn emit(&self, n: &Notification) {
        self.shared.emit(n);
    }

    /// Emit line N (1-based) of ws-events.jsonl exactly as in the fixture (byte for byte frame text).
    ///
    /// Panics if `line` is not in `1..=9` (a bug in the calling test).
    pub fn emit_fixture_line(&self, line: usize) {
        let text = line
            .checked_sub(1)
            .and_then(|i| Self::fixture_lines().get(i))
            .unwrap_or_else(|| panic!("ws-events.jsonl has no line {line}"));
        let n = script::fixture_notification(line).expect("fixture lines are notify frames");
        self.shared.emit_text(&n, text);
    }

    /// The frames of `ws-events.jsonl`, one per line, so tests can compare what arrives.
    pub fn fixture_lines() -> &'static [&'static str] {
        script::fixture_lines()
    }

    /// Clients that finished `events:configure` and are still connected.
    pub fn connected_clients(&self) -> usize {
        *self.shared.configured.borrow()
    }

    /// Waits until at least `n` clients are configured; `false` on timeout.
    pub async fn wait_for_clients(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.configured.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        )
    }

    /// Every `events:configure` `params.eventFilterList` received, in order.
    pub fn configure_requests(&self) -> Vec<serde_json::Value> {
        self.shared.hub().configure_log.clone()
    }

    /// Closes every WebSocket now, like a camera reboot or a network drop.
    pub fn drop_connections(&self) {
        self.shared.drop_connections();
    }

    /// Hangs every WebSocket connection open now: no more frames either way, no pongs, no
    /// close; new connections are served normally.
    pub fn freeze_connections(&self) {
        self.shared.end_connections(|| Out::Freeze);
    }

    /// Adds a stateful topic `tnsaxis:CameraApplicationPlatform/{app}` whose state is data item
    /// `state_item` to the catalog, like installing an application on a running camera.
    pub fn install_app(&self, app: &str, state_item: &str) {
        self.install_typed_app(app, state_item, "xsd:boolean");
    }

    /// [`Emulator::install_app`] with a state item of type `item_type` (`xsd:int`, ...); the
    /// item name may hold any text (it is escaped into the catalog's XML).
    pub fn install_typed_app(&self, app: &str, state_item: &str, item_type: &str) {
        let name = crate::observe::status_page::escape(state_item);
        lock(&self.shared.extra_catalog).push(format!(
            "<tnsaxis:CameraApplicationPlatform><{app} wstop:topic=\"true\"><aev:MessageInstance aev:isProperty=\"true\"><aev:DataInstance><aev:SimpleItemInstance Type=\"{item_type}\" Name=\"{name}\" isPropertyState=\"true\"/></aev:DataInstance></aev:MessageInstance></{app}></tnsaxis:CameraApplicationPlatform>"
        ));
    }

    /// Injects a fault (or clears it with `None`); applies to requests from now on.
    pub fn set_fault(&self, f: Option<Fault>) {
        self.shared.fault.send_replace(f);
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// Sets virtual input `port` like `activate.cgi`/`deactivate.cgi`; `true` if it changed.
    pub fn set_virtual_input(&self, port: u32, active: bool) -> bool {
        self.shared.set_virtual_input(port, active)
    }

    /// Records the current state of a stateful topic without sending it, so the next
    /// `events:configure` reports it (a device that booted with an input already active).
    pub fn seed_state(&self, n: &Notification) {
        self.shared.hub().remember(n);
    }

    /// Cycles through fixture events 1..=9 with fresh timestamps (now) at `rate_per_s`,
    /// stopping after `limit` events (if any) or when the emulator stops.
    pub fn spawn_generator(&self, rate_per_s: f64, limit: Option<u64>) -> JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
                return;
            }
            let script: Vec<Notification> =
                (1..=9).filter_map(script::fixture_notification).collect();
            let mut stop = shared.shutdown.subscribe();
            let start = tokio::time::Instant::now();
            let mut sent: u64 = 0;
            loop {
                if limit.is_some_and(|l| sent >= l) || *stop.borrow() {
                    break;
                }
                let mut n = script[(sent % script.len() as u64) as usize].clone();
                n.timestamp = Some(script::now_ms());
                shared.emit(&n);
                sent += 1;
                let next = Duration::try_from_secs_f64(sent as f64 / rate_per_s)
                    .ok()
                    .and_then(|d| start.checked_add(d));
                match next {
                    Some(at) => tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = stopped(&mut stop) => break,
                    },
                    None => {
                        stopped(&mut stop).await;
                        break;
                    }
                }
            }
        })
    }

    /// Stops the server and closes every connection, waiting (up to 5 s) for the listener to go.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }

    fn stop(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared.drop_connections();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("serial", &self.shared.cfg.serial)
            .finish()
    }
}
