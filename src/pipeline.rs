//! Wiring for `edgerelay run`: sources → rules → outbox → sinks.
//!
//! Sources send [`Event`]s over one bounded channel (a slow disk slows the cameras' readers,
//! never grows memory). The router runs on its own thread: it takes every event waiting,
//! routes the batch through the rules and appends each destination's deliveries to its outbox
//! in one write (group commit). An event is accepted once that write returned (and, with
//! `fsync`, the sync covering it). Each sink drains its own outbox, so a slow destination never
//! slows another. A destination whose outbox cannot be written (disk full, read-only, I/O
//! error) has that batch refused and counted; the others go on. Pictures that rules
//! ask for go to the [`Snapshotter`] once their events are accepted; it fetches them on its
//! own task and appends them to the object stores' outboxes itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::clock::SharedClock;
use crate::config::{BufferConfig, CameraConfig, Config, DestinationConfig, Transport, units};
use crate::observe::availability::{self, Availability};
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
/// Longest the stop waits for sources that end their camera sessions cleanly (an
/// Unsubscribe takes milliseconds on a LAN; its own deadline is 3 s).
const GRACEFUL_SOURCE_STOP: Duration = Duration::from_secs(4);
/// Rate of the demo camera behind `url = "emulator:"`, events per second.
const DEMO_RATE: f64 = 1.0;

/// A running relay: dropping it stops nothing by itself; call [`Relay::shutdown`].
pub struct Relay {
    /// Camera readers and in-process event generators: stopped first.
    source_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Told first on stop: sources that end their camera sessions cleanly (PullPoint
    /// subscriptions are unsubscribed, so the camera's few slots are not leaked).
    source_stop: tokio::sync::watch::Sender<bool>,
    /// Indices in `source_tasks` of the sources that listen to `source_stop`.
    graceful_sources: Vec<usize>,
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
    /// Outcomes of `[[command]]`s (`edgerelay_commands_total`).
    pub commands: Arc<crate::commands::CommandStats>,
    /// Camera availability messages; told about a clean stop.
    availability: Arc<Availability>,
    availability_task: Option<tokio::task::JoinHandle<()>>,
    clock: SharedClock,
    _emulators: Vec<Emulator>,
    shutdown_timeout: Duration,
    /// Held while this relay runs: two relays never share `data_dir` (rule state, outboxes).
    _data_dir_lock: std::fs::File,
}

impl Relay {
    /// Starts everything the config describes.
    pub async fn start(cfg: Config, clock: SharedClock) -> anyhow::Result<Relay> {
        let data_dir = &cfg.relay.data_dir;
        crate::outbox::private::create_dir_all(data_dir)
            .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
        let data_dir_lock = lock_data_dir(data_dir)?;
        remove_stale_state_temps(data_dir);
        let relay_id: Arc<str> = crate::identity::relay_id(data_dir)
            .with_context(|| {
                format!(
                    "reading or creating {}",
                    data_dir.join(crate::identity::RELAY_ID_FILE).display()
                )
            })?
            .into();
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
        let crate::commands::Linked {
            links: mut command_links,
            workers: command_workers,
            stats: command_stats,
        } = crate::commands::link(&cfg.command).map_err(anyhow::Error::msg)?;
        for (name, dest) in &cfg.destination {
            let name: Arc<str> = name.as_str().into();
            let (outbox, mut dead) = open_outbox(data_dir, &name, dest)?;
            let stats = Arc::new(SinkStats {
                recent_dead: dead.keep_recent(clock.clone()),
                ..SinkStats::default()
            });
            match dest {
                DestinationConfig::Mqtt(_)
                | DestinationConfig::AzureIotHub(_)
                | DestinationConfig::AwsIotCore(_) => {
                    let mut sink = MqttSink::from_config(
                        name.clone(),
                        dest,
                        cfg.relay.print,
                        clock.clone(),
                        relay_id.clone(),
                    )
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("destination.{name}"))?;
                    sink.commands = command_links.remove(&*name);
                    let run = sink.run(outbox.clone(), dead, stats.clone());
                    tasks.push(supervisor.spawn(format!("sink:{name}"), run));
                }
                DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_) => {
                    let sink = ObjectSink::from_config(
                        name.clone(),
                        dest,
                        clock.clone(),
                        relay_id.clone(),
                    )
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
        warn_if_disk_too_small(data_dir, &destinations);

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
        // Sources that end their camera sessions cleanly when told (PullPoint: Unsubscribe).
        let source_stop = tokio::sync::watch::channel(false).0;
        let mut graceful_sources = Vec::new();
        let mut vapix_clients: HashMap<String, (VapixClient, Arc<SourceStatus>)> = HashMap::new();
        let mut snapshot_cameras = HashMap::new();
        let mut watched_cameras = Vec::new();
        for cam in &cfg.camera {
            let transport = match cam.transport {
                Transport::Websocket => "websocket",
                Transport::Rtsp => "rtsp",
                Transport::Pullpoint => "pullpoint",
            };
            let status = Arc::new(SourceStatus::with_clock(
                &cam.name,
                transport,
                clock.clone(),
            ));
            if let Some(s) = &cam.serial {
                status.set_serial(s.as_str().into());
            }
            let heartbeat = units::parse_duration(&cam.heartbeat)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("camera {}: heartbeat", cam.name))?;
            watched_cameras.push(availability::Camera {
                status: status.clone(),
                link: availability::CameraLink::new(heartbeat, clock.now_ms()),
            });
            let (task, vapix) = match cam.transport {
                Transport::Websocket => {
                    let ws =
                        websocket_camera(cam, &rules, &mut source_tasks, &mut emulators).await?;
                    let vapix = ws.vapix.clone();
                    let run = websocket::run(ws, tx.clone(), status.clone(), clock.clone());
                    (supervisor.spawn(format!("source:{}", cam.name), run), vapix)
                }
                Transport::Rtsp => {
                    let rtsp = rtsp_camera(cam, &rules, clock.clone())?;
                    let vapix = rtsp_vapix(cam)?;
                    let run = rtsp::run(rtsp, tx.clone(), status.clone(), clock.clone());
                    (supervisor.spawn(format!("source:{}", cam.name), run), vapix)
                }
                Transport::Pullpoint => {
                    let (pp, http) = pullpoint_camera(cam, &rules, clock.clone())?;
                    let vapix = rtsp_vapix(cam)?;
                    let run = crate::sources::onvif::run(
                        pp,
                        http,
                        tx.clone(),
                        status.clone(),
                        clock.clone(),
                        source_stop.subscribe(),
                    );
                    let task = supervisor.spawn(format!("source:{}", cam.name), run);
                    graceful_sources.push(source_tasks.len());
                    (task, vapix)
                }
            };
            vapix_clients.insert(cam.name.clone(), (vapix.clone(), status.clone()));
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
            let status = Arc::new(SourceStatus::with_clock(&m.name, "mqtt", clock.clone()));
            source_tasks.push(supervisor.spawn(
                format!("source:{}", m.name),
                crate::sources::mqtt::run(m.clone(), tx.clone(), status.clone(), clock.clone()),
            ));
            sources.push(status);
        }
        drop(tx);
        tasks.push(
            supervisor.spawn(
                "history".into(),
                crate::observe::history::run(
                    sources.clone(),
                    destinations
                        .iter()
                        .map(|(_, outbox, stats)| (outbox.clone(), stats.clone()))
                        .collect(),
                    clock.clone(),
                ),
            ),
        );
        let targets = destinations
            .iter()
            .filter_map(|(name, outbox, _)| {
                let template = availability_topic(cfg.destination.get(&**name)?)?;
                Some(availability::Target {
                    name: name.clone(),
                    outbox: outbox.clone(),
                    template: template.to_string(),
                })
            })
            .collect();
        let availability = Availability::new(watched_cameras, targets);
        let availability_task = Some(supervisor.spawn(
            "availability".into(),
            availability::run(availability.clone(), clock.clone()),
        ));
        if let Some(dest) = command_links.keys().next() {
            anyhow::bail!("commands name destination \"{dest}\", which carries no MQTT connection");
        }
        for mut worker in command_workers {
            let Some((vapix, status)) = vapix_clients.get(&worker.camera) else {
                anyhow::bail!("command: unknown camera \"{}\"", worker.camera);
            };
            for c in &mut worker.commands {
                c.stores = c
                    .cfg
                    .to
                    .iter()
                    .filter_map(|d| {
                        let (name, outbox, _) = destinations.iter().find(|(n, _, _)| **n == **d)?;
                        Some((name.clone(), outbox.clone()))
                    })
                    .collect();
            }
            let camera = crate::commands::Camera {
                vapix: vapix.clone(),
                status: status.clone(),
                clock: clock.clone(),
            };
            let name = format!("commands:{}", worker.camera);
            tasks.push(supervisor.spawn(name, crate::commands::serve(worker, camera)));
        }
        Ok(Relay {
            source_tasks,
            source_stop,
            graceful_sources,
            tasks,
            router: Some(router),
            sources,
            destinations,
            topics,
            supervisor,
            rule_state_evictions,
            commands: command_stats,
            availability,
            availability_task,
            clock,
            _emulators: emulators,
            shutdown_timeout,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// Stops the sources, lets the router write what they accepted, then gives the sinks up to
    /// `relay.shutdown_timeout` to send what is queued before stopping them. What is still
    /// queued stays in the outbox for the next start.
    pub async fn shutdown(self) {
        let timeout = self.shutdown_timeout;
        self.shutdown_within(timeout).await;
    }

    /// The same with another bound on the wait for queued deliveries (zero when a fresh
    /// process takes over: it sends them).
    pub async fn shutdown_within(self, drain_timeout: Duration) {
        self.stop(drain_timeout, true).await;
    }

    /// Stops for a reload: queued deliveries stay for the next relay, and cameras are not
    /// announced disconnected (the next relay goes on watching them; no false flap).
    pub async fn shutdown_for_reload(self) {
        self.stop(Duration::ZERO, false).await;
    }

    async fn stop(mut self, drain_timeout: Duration, announce_down: bool) {
        let started = std::time::Instant::now();
        self.supervisor.stopping();
        self.source_stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + GRACEFUL_SOURCE_STOP;
        let mut ended = Vec::new();
        for &i in &self.graceful_sources {
            if let Some(t) = self.source_tasks.get_mut(i)
                && tokio::time::timeout_at(deadline, t).await.is_ok()
            {
                ended.push(i); // awaited to its end: a JoinHandle must not be polled again
            }
        }
        for t in &self.source_tasks {
            t.abort();
        }
        for (i, t) in self.source_tasks.drain(..).enumerate() {
            if !ended.contains(&i) {
                let _ = t.await;
            }
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
        // Before the sinks drain, so the `false` messages go out with the rest; the poller
        // stops first or it could announce `true` from a stopped source's last state.
        if let Some(t) = self.availability_task.take() {
            t.abort();
            let _ = t.await;
        }
        if announce_down {
            self.availability.announce_stop(self.clock.now_ms());
        }
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

/// The `availability_topic` of an MQTT-family destination, unless off (`""`).
fn availability_topic(dest: &DestinationConfig) -> Option<&str> {
    let t = match dest {
        DestinationConfig::Mqtt(m) => &m.availability_topic,
        DestinationConfig::AzureIotHub(a) => &a.availability_topic,
        DestinationConfig::AwsIotCore(a) => &a.availability_topic,
        DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_) => return None,
    };
    (!t.is_empty()).then_some(t.as_str())
}

/// The lock file in `data_dir` that one relay holds while it runs.
pub const DATA_DIR_LOCK: &str = "edgerelay.lock";

/// Locks `data_dir` for this relay. A lock held for a moment is not a second relay (a child
/// process forked by any thread holds our descriptors until it execs): only one that stays
/// is refused.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(DATA_DIR_LOCK);
    let f = crate::outbox::private::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    for _ in 0..25 {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(20)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    anyhow::bail!(
        "data_dir {} is in use by another relay (it holds {DATA_DIR_LOCK}); give each relay its own data_dir",
        data_dir.display()
    )
}

/// Temp files of `rules-state.json` that a crash left behind (each writer names its own, so
/// they are never reused): only this relay writes in `data_dir` now that it holds the lock.
fn remove_stale_state_temps(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    let prefix = format!("{}.", crate::rules::state::STATE_FILE);
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Warns at start when the outboxes may together need more than the file system holds: a
/// destination that is down would then fill the disk before its `max_bytes`.
fn warn_if_disk_too_small(
    data_dir: &Path,
    destinations: &[(Arc<str>, Arc<SharedOutbox>, Arc<SinkStats>)],
) {
    let Some(free) = crate::outbox::free_bytes(data_dir) else {
        return;
    };
    let (mut max, mut used) = (0u64, 0u64);
    for (_, o, _) in destinations {
        let s = o.stats();
        max = max.saturating_add(s.max_bytes);
        used += s.bytes;
    }
    let could_grow = max.saturating_sub(used);
    if could_grow > free {
        tracing::warn!(
            data_dir = %data_dir.display(),
            sum_max_bytes = max,
            queued_bytes = used,
            free_bytes = free,
            "the outboxes' buffer.max_bytes add up to more than data_dir has free: a destination that is down can fill the disk first (drop_oldest outboxes then drop their oldest deliveries to keep room for the others)"
        );
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

/// A PullPoint camera from config, and its SOAP client.
fn pullpoint_camera(
    cam: &CameraConfig,
    rules: &RuleSet,
    clock: SharedClock,
) -> anyhow::Result<(
    crate::sources::onvif::PullPointCamera,
    crate::sources::onvif::client::Client,
)> {
    let base = url::Url::parse(&cam.url).with_context(|| format!("camera {}: url", cam.name))?;
    let tls = crate::tls::TlsSettings {
        ca_file: cam.ca_file.clone(),
        insecure_skip_verify: !cam.tls_verify,
        ..Default::default()
    };
    let http = crate::sources::onvif::client::Client::new(
        cam.username.clone(),
        cam.password.as_deref().map(str::to_string),
        &tls,
        clock,
    )
    .with_context(|| format!("camera {}", cam.name))?;
    let cam = crate::sources::onvif::PullPointCamera {
        name: cam.name.as_str().into(),
        device_url: crate::sources::onvif::device_url(&base),
        serial: cam.serial.clone(),
        filters: rules.camera_filters(&cam.name),
        max_backoff: cam.max_backoff(),
        max_clock_skew: units::parse_duration(&cam.max_clock_skew)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("camera {}: max_clock_skew", cam.name))?,
    };
    Ok((cam, http))
}

/// An RTSP camera from config: the host of its `http(s)://` URL, the RTSP port apart.
fn rtsp_camera(
    cam: &CameraConfig,
    rules: &RuleSet,
    clock: SharedClock,
) -> anyhow::Result<RtspCamera> {
    let onvif = match cam.vendor {
        crate::config::Vendor::Axis => None,
        crate::config::Vendor::Onvif => {
            let (pp, client) = pullpoint_camera(cam, rules, clock)?;
            Some(crate::sources::rtsp::OnvifLookup {
                client: Arc::new(client),
                device_url: pp.device_url,
            })
        }
    };
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
        rtsp_url: cam.rtsp_url.clone(),
        onvif,
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
    let mut dead = DeadLetters::open(data_dir, name)
        .with_context(|| format!("opening dead-letter file for {name}"))?;
    dead.set_fsync(buffer.fsync);
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
    let mut per_dest: HashMap<Arc<str>, DestBatch> = HashMap::new();
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
            let b = per_dest.entry(r.destination).or_default();
            b.records.push(r.delivery.encode());
            b.changes.push(r.change);
        }
        let mut work: Vec<(&Arc<str>, &mut DestBatch)> = per_dest
            .iter_mut()
            .filter(|(_, b)| !b.records.is_empty())
            .collect();
        // Each destination's sync waits on its own disk flush: with several, run them side by
        // side so the batch costs one flush, not one per destination.
        let parallel = work.len() > 1
            && work
                .iter()
                .any(|(d, _)| outboxes.get(*d).is_some_and(|o| o.syncs()));
        let outcomes: Vec<Option<crate::outbox::AppendOutcome>> = if parallel {
            std::thread::scope(|s| {
                let handles: Vec<_> = work
                    .iter_mut()
                    .map(|(dest, b)| {
                        let outbox = outboxes.get(*dest);
                        s.spawn(move || append_dest(dest, outbox, b, now))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(None))
                    .collect()
            })
        } else {
            work.iter_mut()
                .map(|(dest, b)| append_dest(dest, outboxes.get(*dest), b, now))
                .collect()
        };
        for ((_, b), outcome) in work.iter_mut().zip(outcomes) {
            // A state is remembered only if its delivery was accepted.
            for (i, c) in b.changes.iter().enumerate() {
                if let Some(id) = c
                    && !outcome.as_ref().is_some_and(|o| o.accepted(i))
                {
                    rules.refuse_change(*id);
                }
            }
            b.records.clear();
            b.changes.clear();
        }
        rules.settle_changes();
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

/// One destination's share of a router batch.
#[derive(Debug, Default)]
struct DestBatch {
    records: Vec<Vec<u8>>,
    /// The `only_changes` state each record makes remembered.
    changes: Vec<Option<crate::rules::state::ChangeId>>,
    /// Its drops and write errors, logged once per burst.
    log: DropLog,
}

/// Appends one destination's share; `None`: nothing accepted (unknown destination, disk error).
fn append_dest(
    dest: &str,
    outbox: Option<&Arc<SharedOutbox>>,
    b: &mut DestBatch,
    now: i64,
) -> Option<crate::outbox::AppendOutcome> {
    let Some(outbox) = outbox else {
        tracing::warn!(destination = %dest, "rule names an unknown destination");
        return None;
    };
    let refs: Vec<&[u8]> = b.records.iter().map(Vec::as_slice).collect();
    append_batch(dest, outbox, &refs, now, &mut b.log)
}

/// Writes the rule state file so that a power cut leaves the old or the new one whole: a
/// temp file of a name of its own (a second writer never shares it), synced, renamed over the
/// state file, and the directory synced. Runs on the router thread, at most every
/// [`crate::rules::state::SAVE_INTERVAL_MS`].
fn write_state(path: &Path, json: String) {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let r = (|| -> std::io::Result<()> {
        let mut f = crate::outbox::private::create(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
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

/// Drops and write errors at one outbox, each logged once per burst (a burst ends after
/// [`DROP_BURST_QUIET`]).
#[derive(Debug, Default)]
struct DropLog {
    total: u64,
    last: Option<std::time::Instant>,
    /// Since when the outbox cannot be written, and how many deliveries it refused since.
    failing: Option<(std::time::Instant, u64)>,
}

/// Quiet time after which the next drop starts a new burst (and a new log line).
const DROP_BURST_QUIET: Duration = Duration::from_secs(10);

/// Appends one destination's batch; `None` when its outbox could not be written. Drops by
/// policy are counted by the outbox and logged once per burst. A disk error (full, read-only,
/// I/O error) refuses this batch for this destination only: counted in the outbox's
/// `write_errors`, logged once until it works again, and the router goes on with the others.
fn append_batch(
    dest: &str,
    outbox: &SharedOutbox,
    records: &[&[u8]],
    now: i64,
    log: &mut DropLog,
) -> Option<crate::outbox::AppendOutcome> {
    match outbox.append(records, now) {
        Ok(outcome) => {
            if let Some((since, refused)) = log.failing.take() {
                tracing::info!(destination = dest, refused, failing_for = ?since.elapsed(),
                    "outbox writable again: deliveries are accepted");
            }
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
            Some(outcome)
        }
        Err(e) => {
            match &mut log.failing {
                Some((_, refused)) => *refused += records.len() as u64,
                None => {
                    tracing::error!(destination = dest, error = %e, count = records.len(),
                        retry = e.is_retryable(),
                        "cannot write the outbox: refusing this destination's deliveries until it works again (the other destinations go on)");
                    log.failing = Some((std::time::Instant::now(), records.len() as u64));
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn data_dir_lock_and_rule_state_are_private() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("var/edgerelay");
        crate::outbox::private::create_dir_all(&data).unwrap();
        let _lock = lock_data_dir(&data).unwrap();
        let state = data.join(crate::rules::state::STATE_FILE);
        write_state(&state, "{}".into());
        assert_eq!(std::fs::read_to_string(&state).unwrap(), "{}");
        assert_eq!(mode(&d.path().join("var")), 0o700);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&state), 0o600);
        assert_eq!(mode(&data.join(DATA_DIR_LOCK)), 0o600);
        // The temp file was renamed: nothing else is left.
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 2);
    }
}
