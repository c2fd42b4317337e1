//! Wiring for `edgerelay run`: sources → rules → outbox → sinks.
//!
//! Sources send [`Event`]s over one bounded channel (a slow disk slows the cameras' readers,
//! never grows memory). The router runs on its own thread: it takes every event waiting,
//! routes the batch through the rules and appends each destination's deliveries to its outbox
//! in one write (group commit). An event is accepted once that write returned. Each sink
//! drains its own outbox, so a slow destination never slows another. Pictures that rules
//! ask for go to the [`Snapshotter`] once their events are accepted; it fetches them on its
//! own task and appends them to the object stores' outboxes itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::clock::SharedClock;
use crate::config::{BufferConfig, CameraConfig, Config, DestinationConfig, Transport, units};
use crate::observe::topics::TopicCounts;
use crate::outbox::{DeadLetters, Outbox, OutboxOptions, SharedOutbox};
use crate::rules::{Routed, RuleSet};
use crate::sinks::mqtt::{MqttSink, SinkStats};
use crate::sinks::object_store::ObjectSink;
use crate::snapshots::{SnapshotCamera, SnapshotQueue, Snapshotter};
use crate::sources::emulator::{Emulator, EmulatorConfig};
use crate::sources::queue;
use crate::sources::rtsp::{self, RtspCamera};
use crate::sources::status::SourceStatus;
use crate::sources::vapix::VapixClient;
use crate::sources::websocket::{self, WsCamera};
use crate::supervise::Supervisor;

/// Events waiting between sources and the router; bounded so a stalled disk pushes back
/// (and in bytes as well: [`queue::EVENT_QUEUE_BYTES`]).
const EVENT_QUEUE: usize = 8192;
/// Most events routed into one outbox write.
const ROUTE_BATCH: usize = 2048;
/// Longest the router sleeps while rules hold timers (`max_rate_keep = "latest"`, state to
/// save): bounds how late a held delivery goes out.
const ROUTER_TICK: Duration = Duration::from_millis(100);
/// Rate of the demo camera behind `url = "emulator:"`, events per second.
const DEMO_RATE: f64 = 1.0;

/// A running relay: dropping it stops nothing by itself; call [`Relay::shutdown`].
pub struct Relay {
    /// Camera readers and in-process event generators: stopped first.
    source_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Sinks and outbox housekeeping: stopped once the outboxes drained or the timeout passed.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    router: Option<std::thread::JoinHandle<()>>,
    /// Per-camera status.
    pub sources: Vec<Arc<SourceStatus>>,
    /// Per-destination outbox and counters.
    pub destinations: Vec<(Arc<str>, Arc<SharedOutbox>, Arc<SinkStats>)>,
    /// Events per camera and topic, counted by the router.
    pub topics: Arc<TopicCounts>,
    /// Notices a task that died (`/healthz`, and `run` exits non-zero).
    pub supervisor: Arc<Supervisor>,
    /// Rule state entries forgotten to stay bounded, as the router last counted them.
    pub rule_state_evictions: Arc<std::sync::atomic::AtomicU64>,
    _emulators: Vec<Emulator>,
    shutdown_timeout: Duration,
}

impl Relay {
    /// Starts everything the config describes.
    pub async fn start(cfg: Config, clock: SharedClock) -> anyhow::Result<Relay> {
        let data_dir = &cfg.relay.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
        if let Some(listen) = &cfg.relay.broker {
            let addr = crate::broker::start(listen, crate::broker::Login::from_relay(&cfg.relay))?;
            tracing::info!(%addr, "embedded MQTT broker listening");
        }
        let mut rules = RuleSet::compile(&cfg)?;
        let state_path = data_dir.join(crate::rules::state::STATE_FILE);
        if let Ok(saved) = std::fs::read_to_string(&state_path)
            && !rules.restore_state(&saved)
        {
            tracing::warn!(path = %state_path.display(), "unreadable rule state ignored");
        }
        let shutdown_timeout = units::parse_duration(&cfg.relay.shutdown_timeout)
            .map_err(anyhow::Error::msg)
            .context("relay.shutdown_timeout")?;
        let supervisor = Arc::new(Supervisor::default());
        let mut tasks = Vec::new();
        let mut source_tasks = Vec::new();
        let mut destinations = Vec::new();
        let mut outboxes: HashMap<Arc<str>, Arc<SharedOutbox>> = HashMap::new();
        let (mut command_links, command_workers) = crate::commands::link(&cfg.command);
        for (name, dest) in &cfg.destination {
            let name: Arc<str> = name.as_str().into();
            let (outbox, dead) = open_outbox(data_dir, &name, dest)?;
            let stats = Arc::new(SinkStats::default());
            match dest {
                DestinationConfig::Mqtt(_)
                | DestinationConfig::AzureIotHub(_)
                | DestinationConfig::AwsIotCore(_) => {
                    let mut sink =
                        MqttSink::from_config(name.clone(), dest, cfg.relay.print, clock.clone())
                            .map_err(anyhow::Error::msg)
                            .with_context(|| format!("destination.{name}"))?;
                    sink.commands = command_links.remove(&*name);
                    let run = sink.run(outbox.clone(), dead, stats.clone());
                    tasks.push(supervisor.spawn(format!("sink:{name}"), run));
                }
                DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_) => {
                    let sink = ObjectSink::from_config(name.clone(), dest, clock.clone())
                        .expect("an object-store kind")
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("destination.{name}"))?;
                    let run = sink.run(outbox.clone(), dead, stats.clone());
                    tasks.push(supervisor.spawn(format!("sink:{name}"), run));
                }
            }
            if dest.buffer().max_age.is_some() {
                tasks.push(supervisor.spawn(
                    format!("expire:{name}"),
                    expire_loop(name.clone(), outbox.clone(), clock.clone()),
                ));
            }
            outboxes.insert(name.clone(), outbox.clone());
            destinations.push((name, outbox, stats));
        }

        let watched = destinations
            .iter()
            .map(|(name, outbox, stats)| crate::observe::watch::Watched {
                name: Arc::clone(name),
                outbox: Arc::clone(outbox),
                stats: Arc::clone(stats),
                takes_status: matches!(
                    cfg.destination.get(&**name),
                    Some(
                        DestinationConfig::Mqtt(_)
                            | DestinationConfig::AzureIotHub(_)
                            | DestinationConfig::AwsIotCore(_)
                    )
                ),
            })
            .collect();
        tasks.push(supervisor.spawn(
            "watch".into(),
            crate::observe::watch::run(watched, cfg.relay.status_topic.clone(), clock.clone()),
        ));

        // The router starts once the snapshot queue exists; sources wait in the channel.
        let (tx, rx) = queue::channel(EVENT_QUEUE, queue::EVENT_QUEUE_BYTES);

        let mut sources = Vec::new();
        let mut emulators = Vec::new();
        let mut vapix_clients: HashMap<String, VapixClient> = HashMap::new();
        let mut snapshot_cameras = HashMap::new();
        for cam in &cfg.camera {
            let status = Arc::new(SourceStatus::new(&cam.name));
            let (task, vapix) = match cam.transport {
                Transport::Websocket => {
                    let ws =
                        websocket_camera(cam, &rules, &mut source_tasks, &mut emulators).await?;
                    let vapix = ws.vapix.clone();
                    let run = websocket::run(ws, tx.clone(), status.clone(), clock.clone());
                    (supervisor.spawn(format!("source:{}", cam.name), run), vapix)
                }
                Transport::Rtsp => {
                    let rtsp = rtsp_camera(cam, &rules)?;
                    let vapix = rtsp_vapix(cam)?;
                    let run = rtsp::run(rtsp, tx.clone(), status.clone(), clock.clone());
                    (supervisor.spawn(format!("source:{}", cam.name), run), vapix)
                }
            };
            vapix_clients.insert(cam.name.clone(), vapix.clone());
            snapshot_cameras.insert(
                Arc::from(cam.name.as_str()),
                SnapshotCamera {
                    vapix,
                    resolution: cam.snapshot_resolution.clone(),
                    status: status.clone(),
                },
            );
            source_tasks.push(task);
            sources.push(status);
        }
        let (snapshotter, snapshots) =
            Snapshotter::new(snapshot_cameras, outboxes.clone(), clock.clone());
        tasks.push(supervisor.spawn_until_done("snapshots".into(), snapshotter.run()));
        let (router_rules, router_clock) = (rules.clone(), clock.clone());
        let topics = Arc::new(TopicCounts::default());
        let router_topics = topics.clone();
        let rule_state_evictions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let router_evictions = rule_state_evictions.clone();
        let router = supervisor.spawn_thread("router", move || {
            route_loop(
                rx,
                router_rules,
                outboxes,
                snapshots,
                router_clock,
                router_topics,
                router_evictions,
                state_path,
            )
        })?;
        for m in &cfg.mqtt_source {
            let status = Arc::new(SourceStatus::new(&m.name));
            source_tasks.push(supervisor.spawn(
                format!("source:{}", m.name),
                crate::sources::mqtt::run(m.clone(), tx.clone(), status.clone(), clock.clone()),
            ));
            sources.push(status);
        }
        drop(tx);
        if let Some(dest) = command_links.keys().next() {
            anyhow::bail!("commands name destination \"{dest}\", which carries no MQTT connection");
        }
        for worker in command_workers {
            let (i, c) = (worker.index, worker.cfg.clone());
            let Some(vapix) = vapix_clients.get(&c.camera) else {
                anyhow::bail!("command[{i}]: unknown camera \"{}\"", c.camera);
            };
            let stores = crate::commands::SnapshotStores {
                camera: c.camera.clone(),
                outboxes: c
                    .to
                    .iter()
                    .filter_map(|d| {
                        let (name, outbox, _) = destinations.iter().find(|(n, _, _)| **n == **d)?;
                        Some((name.clone(), outbox.clone()))
                    })
                    .collect(),
                clock: clock.clone(),
            };
            let run = crate::commands::serve(worker, vapix.clone(), stores);
            tasks.push(supervisor.spawn(format!("command:{i}"), run));
        }
        Ok(Relay {
            source_tasks,
            tasks,
            router: Some(router),
            sources,
            destinations,
            topics,
            supervisor,
            rule_state_evictions,
            _emulators: emulators,
            shutdown_timeout,
        })
    }

    /// Stops the sources, lets the router write what they accepted, then gives the sinks up to
    /// `relay.shutdown_timeout` to send what is queued before stopping them. What is still
    /// queued stays in the outbox for the next start.
    pub async fn shutdown(self) {
        let timeout = self.shutdown_timeout;
        self.shutdown_within(timeout).await;
    }

    /// The same with another bound on the wait for queued deliveries (zero for a reload: the
    /// next relay sends them).
    pub async fn shutdown_within(mut self, drain_timeout: Duration) {
        let started = std::time::Instant::now();
        self.supervisor.stopping();
        for t in &self.source_tasks {
            t.abort();
        }
        for t in self.source_tasks.drain(..) {
            let _ = t.await;
        }
        // The sources held the only senders: the router drains the queue and ends.
        if let Some(r) = self.router.take() {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
        let received: u64 = self
            .sources
            .iter()
            .map(|s| s.events.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        tracing::info!(
            events_received = received,
            "sources stopped; every event received is in the outbox"
        );
        let drained =
            tokio::time::timeout(drain_timeout.saturating_sub(started.elapsed()), async {
                while self
                    .destinations
                    .iter()
                    .any(|(_, o, _)| o.stats().depth > 0)
                {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
            })
            .await
            .is_ok();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let queued: u64 = self
            .destinations
            .iter()
            .map(|(_, o, _)| o.stats().depth)
            .sum();
        if drained {
            tracing::info!("stopped; every queued delivery was sent");
        } else {
            tracing::warn!(
                queued,
                timeout = ?drain_timeout,
                "stopped before every delivery was sent; the rest stays in the outbox for the next start"
            );
        }
    }
}

/// How often [`Relay::shutdown`] checks whether the outboxes drained.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A WebSocket camera from config; `emulator:` starts an emulated camera in this process.
async fn websocket_camera(
    cam: &CameraConfig,
    rules: &RuleSet,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    emulators: &mut Vec<Emulator>,
) -> anyhow::Result<WsCamera> {
    let (base, user, pass) = if cam.url.trim() == "emulator:" {
        let c = EmulatorConfig::default();
        let emu = Emulator::start(c.clone()).await?;
        tasks.push(emu.spawn_generator(DEMO_RATE, None));
        let base = emu.base_url();
        emulators.push(emu);
        (base, Some(c.username), Some(c.password))
    } else {
        (
            cam.url.clone(),
            cam.username.clone(),
            cam.password.as_deref().map(str::to_string),
        )
    };
    let base = url::Url::parse(&base).with_context(|| format!("camera {}: url", cam.name))?;
    let tls = crate::tls::TlsSettings {
        ca_file: cam.ca_file.clone(),
        insecure_skip_verify: !cam.tls_verify,
        ..Default::default()
    };
    if !cam.tls_verify {
        tracing::warn!(camera = %cam.name, "tls_verify = false: the camera's certificate is not checked");
    }
    Ok(WsCamera {
        name: cam.name.as_str().into(),
        vapix: VapixClient::new(base.clone(), user, pass, &tls)?,
        base,
        serial: cam.serial.clone(),
        filters: rules.camera_filters(&cam.name),
        max_backoff: cam.max_backoff(),
        tls,
        heartbeat: units::parse_duration(&cam.heartbeat)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("camera {}: heartbeat", cam.name))?,
    })
}

/// The VAPIX client of an RTSP camera (for snapshots): its `http(s)://` URL and login.
fn rtsp_vapix(cam: &CameraConfig) -> anyhow::Result<VapixClient> {
    let base = url::Url::parse(&cam.url).with_context(|| format!("camera {}: url", cam.name))?;
    let tls = crate::tls::TlsSettings {
        ca_file: cam.ca_file.clone(),
        insecure_skip_verify: !cam.tls_verify,
        ..Default::default()
    };
    Ok(VapixClient::new(
        base,
        cam.username.clone(),
        cam.password.as_deref().map(str::to_string),
        &tls,
    )?)
}

/// An RTSP camera from config: the host of its `http(s)://` URL, the RTSP port apart.
fn rtsp_camera(cam: &CameraConfig, rules: &RuleSet) -> anyhow::Result<RtspCamera> {
    let url = url::Url::parse(&cam.url).with_context(|| format!("camera {}: url", cam.name))?;
    let host = url.host_str().with_context(|| {
        format!(
            "camera {}: url has no host (the emulator speaks WebSocket only)",
            cam.name
        )
    })?;
    Ok(RtspCamera {
        name: cam.name.as_str().into(),
        host: host.to_string(),
        port: cam.rtsp_port.unwrap_or(554),
        query: crate::sources::rtsp::session::StreamQuery {
            camera: cam.channel,
            analytics: cam.analytics,
            ptz: cam.ptz,
            event_topics: rules.camera_filters(&cam.name),
        },
        username: cam.username.clone(),
        password: cam.password.as_deref().map(str::to_string),
        serial: cam.serial.clone(),
        max_backoff: cam.max_backoff(),
        heartbeat: units::parse_duration(&cam.heartbeat)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("camera {}: heartbeat", cam.name))?,
        shutdown: None,
    })
}

fn open_outbox(
    data_dir: &Path,
    name: &str,
    dest: &DestinationConfig,
) -> anyhow::Result<(Arc<SharedOutbox>, DeadLetters)> {
    let buffer = dest.buffer();
    let opts = outbox_options(buffer).with_context(|| format!("destination.{name}.buffer"))?;
    let dir = data_dir.join("outbox").join(name);
    let (outbox, report) =
        Outbox::open(&dir, opts).with_context(|| format!("opening outbox {}", dir.display()))?;
    tracing::info!(destination = name, ?report, "outbox open");
    let dead = DeadLetters::open(data_dir, name)
        .with_context(|| format!("opening dead-letter file for {name}"))?;
    Ok((SharedOutbox::new(outbox), dead))
}

/// Outbox options from a destination's `buffer` table (validated already by `check`).
pub fn outbox_options(b: &BufferConfig) -> anyhow::Result<OutboxOptions> {
    Ok(OutboxOptions {
        max_bytes: units::parse_bytes(&b.max_bytes).map_err(anyhow::Error::msg)?,
        when_full: b.when_full,
        max_age_ms: b
            .max_age
            .as_deref()
            .map(units::parse_duration)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .map(|d| d.as_millis() as i64),
        fsync: b.fsync,
        ..OutboxOptions::default()
    })
}

/// The router thread: batches events, routes them, appends per destination.
#[allow(clippy::too_many_arguments)]
fn route_loop(
    mut rx: queue::EventReceiver,
    mut rules: RuleSet,
    outboxes: HashMap<Arc<str>, Arc<SharedOutbox>>,
    snapshots: SnapshotQueue,
    clock: SharedClock,
    topics: Arc<TopicCounts>,
    evictions: Arc<std::sync::atomic::AtomicU64>,
    state_path: std::path::PathBuf,
) {
    let mut routed: Vec<Routed> = Vec::with_capacity(ROUTE_BATCH);
    let mut per_dest: HashMap<Arc<str>, Vec<Vec<u8>>> = HashMap::new();
    let mut drops: HashMap<Arc<str>, DropLog> = HashMap::new();
    // With timers the router wakes every tick; a small runtime gives `recv` a timeout.
    let ticker = rules.has_timers().then(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("router timer runtime")
    });
    let mut save = crate::rules::state::Debounce::new(crate::rules::state::SAVE_INTERVAL_MS);
    let mut pending_state: Option<String> = None;
    loop {
        // `None`: a tick without an event.
        let first = match &ticker {
            None => match rx.blocking_recv() {
                Some(ev) => Some(ev),
                None => break,
            },
            Some(rt) => {
                match rt.block_on(async { tokio::time::timeout(ROUTER_TICK, rx.recv()).await }) {
                    Ok(Some(ev)) => Some(ev),
                    Ok(None) => break,
                    Err(_) => None,
                }
            }
        };
        let now = clock.now_ms();
        crate::supervise::failpoint("router");
        routed.extend(rules.due(now));
        let mut counting = topics.batch();
        if let Some(ev) = &first {
            counting.count(ev);
            rules.route(ev, now, &mut routed);
        }
        let mut n = 1;
        while n < ROUTE_BATCH {
            match rx.try_recv() {
                Ok(ev) => {
                    counting.count(&ev);
                    rules.route(&ev, now, &mut routed);
                }
                Err(_) => break,
            }
            n += 1;
        }
        drop(counting);
        for r in routed.drain(..) {
            per_dest
                .entry(r.destination)
                .or_default()
                .push(r.delivery.encode());
        }
        for (dest, records) in per_dest.iter_mut() {
            if records.is_empty() {
                continue;
            }
            match outboxes.get(dest) {
                Some(outbox) => {
                    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                    append_or_wait(
                        dest,
                        outbox,
                        &refs,
                        now,
                        drops.entry(dest.clone()).or_default(),
                    );
                }
                None => tracing::warn!(destination = %dest, "rule names an unknown destination"),
            }
            records.clear();
        }
        let evicted = rules.state_evictions();
        let before = evictions.swap(evicted, std::sync::atomic::Ordering::Relaxed);
        if evicted > before && before == 0 {
            tracing::warn!(
                evicted,
                "rule state (only_changes, max_rate) reached its bound: the oldest entries are forgotten; a camera or MQTT source sends topics or source values of unbounded variety"
            );
        }
        // Pictures are asked for once their events are accepted.
        for req in rules.take_snapshots() {
            snapshots.request(req);
        }
        // After the outbox accepted the deliveries: a crash repeats a state, never loses one.
        if let Some(s) = rules.state_to_save() {
            pending_state = Some(s);
        }
        if pending_state.is_some() && save.ready(now) {
            write_state(&state_path, pending_state.take().unwrap());
        }
    }
    if let Some(s) = pending_state.or_else(|| rules.state_to_save()) {
        write_state(&state_path, s);
    }
}

/// Writes the rule state file atomically (temp file, then rename).
fn write_state(path: &Path, json: String) {
    let tmp = path.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path)) {
        tracing::warn!(path = %path.display(), error = %e, "saving rule state failed");
    }
}

/// How often queued deliveries are checked against `buffer.max_age`.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Drops deliveries older than `max_age`, counted and logged once per burst.
async fn expire_loop(name: Arc<str>, outbox: Arc<SharedOutbox>, clock: SharedClock) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    let mut last_log: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        match outbox.expire(clock.now_ms()) {
            Ok(0) => {}
            Ok(n) => {
                if last_log.is_none_or(|t| t.elapsed() > DROP_BURST_QUIET) {
                    tracing::warn!(destination = %name, expired = n, total = outbox.stats().dropped_age,
                        "dropping deliveries older than buffer.max_age");
                }
                last_log = Some(std::time::Instant::now());
            }
            Err(e) => {
                tracing::error!(destination = %name, error = %e, "cannot expire old deliveries")
            }
        }
    }
}

/// Drops at a full outbox, logged once per burst (a burst ends after [`DROP_BURST_QUIET`]).
#[derive(Debug, Default)]
struct DropLog {
    total: u64,
    last: Option<std::time::Instant>,
}

/// Quiet time after which the next drop starts a new burst (and a new log line).
const DROP_BURST_QUIET: Duration = Duration::from_secs(10);
/// Wait between attempts when the disk refuses a write (full, read-only, I/O error).
const APPEND_RETRY: Duration = Duration::from_secs(1);

/// Appends one destination's batch. Drops by policy are counted and logged once per burst; a
/// disk error is retried until it clears: the router stalls, the bounded event queue fills,
/// and sources stop reading, so nothing accepted is lost.
fn append_or_wait(
    dest: &str,
    outbox: &SharedOutbox,
    records: &[&[u8]],
    now: i64,
    log: &mut DropLog,
) {
    let mut logged_error = false;
    loop {
        match outbox.append(records, now) {
            Ok(outcome) => {
                let dropped = outcome.rejected + outcome.dropped_oldest;
                if dropped > 0 {
                    log.total += dropped;
                    let new_burst = log.last.is_none_or(|t| t.elapsed() > DROP_BURST_QUIET);
                    log.last = Some(std::time::Instant::now());
                    if new_burst {
                        tracing::warn!(
                            destination = dest,
                            rejected_new = outcome.rejected,
                            dropped_oldest = outcome.dropped_oldest,
                            total = log.total,
                            "outbox full: dropping deliveries by the buffer policy"
                        );
                    }
                }
                return;
            }
            Err(e) if e.is_retryable() => {
                if !logged_error {
                    tracing::error!(destination = dest, error = %e, count = records.len(),
                        "cannot write the outbox; holding events until it works again");
                    logged_error = true;
                }
                std::thread::sleep(APPEND_RETRY);
            }
            Err(e) => {
                tracing::error!(destination = dest, error = %e, count = records.len(), "outbox refused the batch");
                return;
            }
        }
    }
}
