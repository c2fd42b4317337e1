//! Snapshots on events: a rule with `snapshot = true` asks for a picture
//! ([`SnapshotRequest`]); this fetches the JPEG from the camera (VAPIX
//! `/axis-cgi/jpg/image.cgi`, Digest) and appends it as a [`Snapshot`] record to the outbox of
//! each object-store destination named, which stores it as its own object.
//!
//! Best effort, and never in the events' way: the router only hands requests over
//! ([`SnapshotQueue::request`] never blocks); at most [`PER_CAMERA_IN_FLIGHT`] fetches per
//! camera and [`MAX_IN_FLIGHT`] over all cameras run at once, and the pictures being read or
//! waiting to be queued hold at most [`MAX_BYTES_IN_FLIGHT`] (a byte budget each body takes
//! from as it arrives): a request past either cap, or a picture that does not fit what is
//! left, is skipped and counted (`snapshots_skipped`), logged once per burst. A failed fetch is
//! counted and logged once per burst. Once appended, a snapshot is as durable as any delivery: it
//! leaves the outbox only after the store took it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::clock::SharedClock;
use crate::delivery::Snapshot;
use crate::outbox::SharedOutbox;
use crate::rules::SnapshotRequest;
use crate::sources::status::SourceStatus;
use crate::sources::vapix::{VapixClient, VapixError};

/// Fetches per camera at once: a burst of matching events gets its first pictures, and a
/// camera that answers slowly is not queried ever more.
pub const PER_CAMERA_IN_FLIGHT: usize = 2;
/// Fetches at once over all cameras: a site of fifty cameras triggered together must not
/// open a hundred downloads.
pub const MAX_IN_FLIGHT: usize = 8;
/// Bytes of pictures being read or waiting for their outboxes, over all cameras: room for two
/// of the largest pictures, or dozens of ordinary ones (a few hundred KiB each).
pub const MAX_BYTES_IN_FLIGHT: usize = 2 * MAX_JPEG_BYTES;
/// Requests waiting between the router and the fetcher; more are skipped.
const QUEUE: usize = 64;
/// Largest JPEG taken: a 4K picture at high quality is a few MiB; anything larger is not a
/// snapshot and would only fill the outbox.
pub const MAX_JPEG_BYTES: usize = 16 << 20;
/// The VAPIX snapshot CGI.
const IMAGE_CGI: &str = "/axis-cgi/jpg/image.cgi";

/// One camera that can take pictures.
#[derive(Debug, Clone)]
pub struct SnapshotCamera {
    /// Authenticated client for the camera.
    pub vapix: VapixClient,
    /// `WIDTHxHEIGHT` asked for, if configured.
    pub resolution: Option<String>,
    /// Its counters (`snapshots_*`).
    pub status: Arc<SourceStatus>,
}

impl SnapshotCamera {
    /// The request path, with the resolution if one is configured.
    pub fn path(&self) -> String {
        match &self.resolution {
            Some(r) => format!("{IMAGE_CGI}?resolution={r}"),
            None => IMAGE_CGI.to_string(),
        }
    }
}

/// The router's end: hands requests to [`Snapshotter::run`] without waiting.
#[derive(Debug, Clone)]
pub struct SnapshotQueue {
    tx: mpsc::Sender<SnapshotRequest>,
    statuses: HashMap<Arc<str>, Arc<SourceStatus>>,
}

impl SnapshotQueue {
    /// Queues a request; when the queue is full it is skipped and counted. Requests for
    /// cameras that cannot take pictures (MQTT sources) are ignored.
    pub fn request(&self, req: SnapshotRequest) {
        let Some(status) = self.statuses.get(&req.camera) else {
            return;
        };
        if self.tx.try_send(req).is_err() {
            status.snapshots_skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One camera's state in the fetcher.
#[derive(Debug)]
struct Camera {
    cfg: SnapshotCamera,
    /// Fetches allowed at once.
    permits: Arc<Semaphore>,
    /// Failures since the last success: the first of a burst is logged.
    failing: Arc<AtomicU64>,
}

/// Fetches pictures and queues them in the outboxes.
#[derive(Debug)]
pub struct Snapshotter {
    rx: mpsc::Receiver<SnapshotRequest>,
    cameras: HashMap<Arc<str>, Camera>,
    outboxes: HashMap<Arc<str>, Arc<SharedOutbox>>,
    clock: SharedClock,
    /// Fetches allowed at once over all cameras.
    fetches: Arc<Semaphore>,
    /// Bytes of pictures allowed in memory at once.
    bytes: Arc<Semaphore>,
    /// Requests skipped at the global caps since the last one that ran: the first is logged.
    skipping: Arc<AtomicU64>,
}

impl Snapshotter {
    /// A fetcher for `cameras` storing into `outboxes`, and the queue that feeds it.
    pub fn new(
        cameras: HashMap<Arc<str>, SnapshotCamera>,
        outboxes: HashMap<Arc<str>, Arc<SharedOutbox>>,
        clock: SharedClock,
    ) -> (Self, SnapshotQueue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let statuses = cameras
            .iter()
            .map(|(n, c)| (n.clone(), c.status.clone()))
            .collect();
        let cameras = cameras
            .into_iter()
            .map(|(n, cfg)| {
                let camera = Camera {
                    cfg,
                    permits: Arc::new(Semaphore::new(PER_CAMERA_IN_FLIGHT)),
                    failing: Arc::new(AtomicU64::new(0)),
                };
                (n, camera)
            })
            .collect();
        let this = Self {
            rx,
            cameras,
            outboxes,
            clock,
            fetches: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            bytes: Arc::new(Semaphore::new(MAX_BYTES_IN_FLIGHT)),
            skipping: Arc::new(AtomicU64::new(0)),
        };
        (this, SnapshotQueue { tx, statuses })
    }

    /// The same with other global caps (tests: a budget smaller than a picture).
    #[cfg(test)]
    fn with_caps(mut self, fetches: usize, bytes: usize) -> Self {
        self.fetches = Arc::new(Semaphore::new(fetches));
        self.bytes = Arc::new(Semaphore::new(bytes));
        self
    }

    /// Takes requests until every [`SnapshotQueue`] is gone, then finishes the fetches in
    /// flight. Aborting the task aborts them too.
    pub async fn run(mut self) {
        let mut fetches = JoinSet::new();
        loop {
            tokio::select! {
                req = self.rx.recv() => match req {
                    Some(req) => self.start(req, &mut fetches),
                    None => break,
                },
                Some(_) = fetches.join_next(), if !fetches.is_empty() => {}
            }
        }
        while fetches.join_next().await.is_some() {}
    }

    /// Starts one fetch, or counts it skipped when the camera has enough in flight.
    fn start(&self, req: SnapshotRequest, fetches: &mut JoinSet<()>) {
        let Some(cam) = self.cameras.get(&req.camera) else {
            return;
        };
        let Ok(permit) = cam.permits.clone().try_acquire_owned() else {
            let n = cam
                .cfg
                .status
                .snapshots_skipped
                .fetch_add(1, Ordering::Relaxed);
            if n == 0 || (n + 1).is_power_of_two() {
                tracing::info!(camera = %req.camera, skipped = n + 1,
                    "snapshots skipped: {PER_CAMERA_IN_FLIGHT} already in flight for this camera");
            }
            return;
        };
        let Ok(global) = self.fetches.clone().try_acquire_owned() else {
            skipped_globally(&req.camera, &cam.cfg.status, &self.skipping, "fetches");
            return;
        };
        self.skipping.store(0, Ordering::Relaxed);
        let (bytes, skipping) = (self.bytes.clone(), self.skipping.clone());
        let vapix = cam.cfg.vapix.clone();
        let path = cam.cfg.path();
        let status = cam.cfg.status.clone();
        let failing = cam.failing.clone();
        let outboxes: Vec<(Arc<str>, Arc<SharedOutbox>)> = req
            .destinations
            .iter()
            .filter_map(|d| self.outboxes.get(d).map(|o| (d.clone(), o.clone())))
            .collect();
        let clock = self.clock.clone();
        fetches.spawn(async move {
            let _permits = (permit, global);
            // The picture's bytes stay taken from the budget until it is in the outboxes.
            let (jpeg, _bytes) = match fetch_budgeted(&vapix, &path, &bytes).await {
                Ok(j) => j,
                Err(FetchError::OverBudget) => {
                    skipped_globally(&req.camera, &status, &skipping, "bytes");
                    return;
                }
                Err(FetchError::Failed(e)) => {
                    status.snapshots_failed.fetch_add(1, Ordering::Relaxed);
                    let n = failing.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == 1 || n.is_power_of_two() {
                        tracing::warn!(camera = %req.camera, error = %e, failures = n,
                            "snapshot failed; the event itself is delivered");
                    }
                    return;
                }
            };
            let before = failing.swap(0, Ordering::Relaxed);
            if before > 0 {
                tracing::info!(camera = %req.camera, failures = before, "snapshots work again");
            }
            status.snapshots_taken.fetch_add(1, Ordering::Relaxed);
            let now = clock.now_ms();
            let record = Snapshot {
                created_ms: now,
                event_ms: req.event_ms,
                topic: req.topic,
                camera: req.camera.to_string(),
                serial: req.serial.to_string(),
                jpeg,
            }
            .encode();
            for (dest, outbox) in outboxes {
                match outbox.append_async(vec![record.clone()], now).await {
                    // Counted by the outbox; the router logs its drops once per burst.
                    Ok(o) if o.rejected > 0 || o.dropped_oldest > 0 => {
                        tracing::debug!(destination = %dest, rejected_new = o.rejected,
                            dropped_oldest = o.dropped_oldest, "outbox full: snapshot queued by the buffer policy")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(destination = %dest, error = %e, "cannot queue a snapshot")
                    }
                }
            }
        });
    }
}

/// Counts a request skipped at a global cap (`what`: fetches or bytes in flight); the first of
/// a burst is logged.
fn skipped_globally(camera: &str, status: &SourceStatus, skipping: &AtomicU64, what: &str) {
    status.snapshots_skipped.fetch_add(1, Ordering::Relaxed);
    let n = skipping.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 || n.is_power_of_two() {
        let cap = match what {
            "fetches" => format!("{MAX_IN_FLIGHT} fetches"),
            _ => format!("{MAX_BYTES_IN_FLIGHT} bytes"),
        };
        tracing::info!(
            camera,
            skipped = n,
            "snapshots skipped: {cap} already in flight over all cameras"
        );
    }
}

/// One picture: the body must look like a JPEG (starts with the SOI marker).
pub async fn fetch(vapix: &VapixClient, path: &str) -> Result<Vec<u8>, String> {
    let body = vapix
        .get_limited(path, MAX_JPEG_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    is_jpeg(path, body)
}

fn is_jpeg(path: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
    if !body.starts_with(&[0xFF, 0xD8]) {
        return Err(format!(
            "{path} answered {} bytes that are not a JPEG",
            body.len()
        ));
    }
    Ok(body)
}

/// Why a budgeted fetch brought no picture.
enum FetchError {
    /// The byte budget had no room: skipped, not failed.
    OverBudget,
    /// Camera unreachable, refused, or not a JPEG.
    Failed(String),
}

/// [`fetch`], its body taking bytes from `budget`; they come back when the permit is dropped.
async fn fetch_budgeted(
    vapix: &VapixClient,
    path: &str,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), FetchError> {
    let (body, permit) = match vapix.get_budgeted(path, MAX_JPEG_BYTES, budget).await {
        Ok(r) => r,
        Err(VapixError::OverBudget) => return Err(FetchError::OverBudget),
        Err(e) => return Err(FetchError::Failed(e.to_string())),
    };
    Ok((is_jpeg(path, body).map_err(FetchError::Failed)?, permit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::delivery::Record;
    use crate::outbox::{Outbox, OutboxOptions};
    use crate::sources::emulator::{Emulator, EmulatorConfig};
    use std::time::Duration;

    fn client(base: &str, password: &str) -> VapixClient {
        VapixClient::new(
            url::Url::parse(base).unwrap(),
            Some("bridge".into()),
            Some(password.into()),
            &crate::tls::TlsSettings::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn fetch_takes_the_cameras_jpeg_and_refuses_what_is_not_one() {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let jpeg = fetch(&client(&emu.base_url(), "fixture-pass"), IMAGE_CGI)
            .await
            .unwrap();
        assert_eq!(
            (&jpeg[..2], &jpeg[jpeg.len() - 2..]),
            (&[0xFF, 0xD8][..], &[0xFF, 0xD9][..])
        );
        let e = fetch(&client(&emu.base_url(), "wrong"), IMAGE_CGI)
            .await
            .unwrap_err();
        assert!(e.contains("authentication failed"), "{e}");
        let xml = "/axis-cgi/virtualinput/activate.cgi?schemaversion=1&port=1";
        let e = fetch(&client(&emu.base_url(), "fixture-pass"), xml)
            .await
            .unwrap_err();
        assert!(e.contains("not a JPEG"), "{e}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = fetch(&client(&format!("http://127.0.0.1:{port}"), "x"), IMAGE_CGI)
            .await
            .unwrap_err();
        assert!(e.contains("unreachable"), "{e}");
    }

    #[tokio::test]
    async fn a_request_becomes_a_snapshot_record_in_each_outbox_and_failures_are_counted() {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut outboxes = HashMap::new();
        for name in ["a", "b"] {
            let (o, _) = Outbox::open(&dir.path().join(name), OutboxOptions::default()).unwrap();
            outboxes.insert(Arc::<str>::from(name), SharedOutbox::new(o));
        }
        let camera = |password: &str| SnapshotCamera {
            vapix: client(&emu.base_url(), password),
            resolution: Some("640x480".into()),
            status: Arc::new(SourceStatus::new("cam")),
        };
        let (good, bad) = (camera("fixture-pass"), camera("wrong"));
        assert_eq!(good.path(), "/axis-cgi/jpg/image.cgi?resolution=640x480");
        let cameras = HashMap::from([
            (Arc::<str>::from("lobby"), good.clone()),
            (Arc::<str>::from("yard"), bad.clone()),
        ]);
        let clock: SharedClock = Arc::new(ManualClock::new(42));
        let (fetcher, queue) = Snapshotter::new(cameras, outboxes.clone(), clock);
        let req = |camera: &str| SnapshotRequest {
            camera: camera.into(),
            serial: "B8A44F3E9D21".into(),
            topic: "onvif:Device/axis:IO/VirtualInput".into(),
            event_ms: 1_750_000_000_002,
            destinations: vec!["a".into(), "b".into(), "gone".into()],
        };
        queue.request(req("yard"));
        queue.request(req("lobby"));
        queue.request(req("mqtt-sensor"));
        drop(queue);
        // Every queue gone: `run` returns once the fetches in flight finished.
        tokio::time::timeout(Duration::from_secs(30), fetcher.run())
            .await
            .expect("fetcher finishes");
        for name in ["a", "b"] {
            let entries = outboxes[name].read(0, 10).unwrap();
            assert_eq!(entries.len(), 1, "{name}");
            let Record::Snapshot(s) = Record::decode(&entries[0].data).unwrap() else {
                panic!("not a snapshot");
            };
            assert_eq!(
                (
                    s.camera.as_str(),
                    s.event_ms,
                    s.created_ms,
                    s.topic.as_str()
                ),
                (
                    "lobby",
                    1_750_000_000_002,
                    42,
                    "onvif:Device/axis:IO/VirtualInput"
                )
            );
            assert_eq!(&s.jpeg[..2], &[0xFF, 0xD8]);
        }
        let counts = |c: &SnapshotCamera| {
            let s = &c.status;
            [
                &s.snapshots_taken,
                &s.snapshots_failed,
                &s.snapshots_skipped,
            ]
            .map(|a| a.load(Ordering::Relaxed))
        };
        assert_eq!(counts(&good), [1, 0, 0]);
        assert_eq!(counts(&bad), [0, 1, 0]);
    }

    #[tokio::test]
    async fn a_camera_that_does_not_answer_gets_two_fetches_and_the_rest_are_skipped() {
        // Accepts connections and never answers: fetches hang until the client's timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", silent.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let cam = SnapshotCamera {
            vapix: client(&base, "x"),
            resolution: None,
            status: Arc::new(SourceStatus::new("mute")),
        };
        let cameras = HashMap::from([(Arc::<str>::from("mute"), cam.clone())]);
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let (fetcher, queue) = Snapshotter::new(cameras, HashMap::new(), clock);
        for _ in 0..PER_CAMERA_IN_FLIGHT + 3 {
            queue.request(SnapshotRequest {
                camera: "mute".into(),
                serial: "S".into(),
                topic: "t".into(),
                event_ms: 0,
                destinations: Vec::new(),
            });
        }
        drop(queue);
        tokio::time::timeout(Duration::from_secs(60), fetcher.run())
            .await
            .expect("fetches end at the client timeout");
        let s = &cam.status;
        assert_eq!(
            [
                &s.snapshots_taken,
                &s.snapshots_failed,
                &s.snapshots_skipped
            ]
            .map(|a| a.load(Ordering::Relaxed)),
            [0, PER_CAMERA_IN_FLIGHT as u64, 3]
        );
    }

    #[tokio::test]
    async fn fetches_over_all_cameras_are_capped_and_the_rest_skipped() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", silent.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let cameras: HashMap<Arc<str>, SnapshotCamera> = (0..MAX_IN_FLIGHT + 2)
            .map(|i| {
                let cam = SnapshotCamera {
                    vapix: client(&base, "x"),
                    resolution: None,
                    status: Arc::new(SourceStatus::new(&format!("c{i}"))),
                };
                (Arc::from(format!("c{i}").as_str()), cam)
            })
            .collect();
        let statuses: Vec<_> = cameras.values().map(|c| c.status.clone()).collect();
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let (fetcher, queue) = Snapshotter::new(cameras, HashMap::new(), clock);
        for i in 0..MAX_IN_FLIGHT + 2 {
            queue.request(SnapshotRequest {
                camera: format!("c{i}").into(),
                serial: "S".into(),
                topic: "t".into(),
                event_ms: 0,
                destinations: Vec::new(),
            });
        }
        drop(queue);
        tokio::time::timeout(Duration::from_secs(60), fetcher.run())
            .await
            .expect("fetches end at the client timeout");
        let sum = |f: fn(&SourceStatus) -> &AtomicU64| {
            statuses
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        assert_eq!(sum(|s| &s.snapshots_failed), MAX_IN_FLIGHT as u64);
        assert_eq!(sum(|s| &s.snapshots_skipped), 2);
        assert_eq!(sum(|s| &s.snapshots_taken), 0);
    }

    #[tokio::test]
    async fn a_picture_that_does_not_fit_the_byte_budget_is_skipped() {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let cam = SnapshotCamera {
            vapix: client(&emu.base_url(), "fixture-pass"),
            resolution: None,
            status: Arc::new(SourceStatus::new("lobby")),
        };
        let cameras = HashMap::from([(Arc::<str>::from("lobby"), cam.clone())]);
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let request = || SnapshotRequest {
            camera: "lobby".into(),
            serial: "S".into(),
            topic: "t".into(),
            event_ms: 0,
            destinations: Vec::new(),
        };
        // The emulator's picture is 141 bytes.
        for (budget, want) in [(100, [0, 0, 1]), (1000, [1, 0, 1])] {
            let (fetcher, queue) = Snapshotter::new(cameras.clone(), HashMap::new(), clock.clone());
            let fetcher = fetcher.with_caps(MAX_IN_FLIGHT, budget);
            queue.request(request());
            drop(queue);
            tokio::time::timeout(Duration::from_secs(30), fetcher.run())
                .await
                .expect("fetcher finishes");
            let s = &cam.status;
            assert_eq!(
                [
                    &s.snapshots_taken,
                    &s.snapshots_failed,
                    &s.snapshots_skipped
                ]
                .map(|a| a.load(Ordering::Relaxed)),
                want,
                "budget {budget}"
            );
        }
    }
}
