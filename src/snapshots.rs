//! Snapshots on events: a rule with `snapshot = true` asks for a picture
//! ([`SnapshotRequest`]); this fetches the JPEG from the camera (VAPIX
//! `/axis-cgi/jpg/image.cgi`, Digest) and appends it as a [`Snapshot`] record to the outbox of
//! each object-store destination named, which stores it as its own object.
//!
//! Best effort, and never in the events' way: the router only hands requests over
//! ([`SnapshotQueue::request`] never blocks); at most [`PER_CAMERA_IN_FLIGHT`] fetches per
//! camera run at once and further requests are skipped and counted. A failed fetch is counted
//! and logged once per burst. Once appended, a snapshot is as durable as any delivery: it
//! leaves the outbox only after the store took it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::clock::SharedClock;
use crate::delivery::Snapshot;
use crate::outbox::SharedOutbox;
use crate::rules::SnapshotRequest;
use crate::sources::status::SourceStatus;
use crate::sources::vapix::VapixClient;

/// Fetches per camera at once: a burst of matching events gets its first pictures, and a
/// camera that answers slowly is not queried ever more.
pub const PER_CAMERA_IN_FLIGHT: usize = 2;
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
        };
        (this, SnapshotQueue { tx, statuses })
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
            let _permit = permit;
            let jpeg = match fetch(&vapix, &path).await {
                Ok(j) => j,
                Err(e) => {
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
                match outbox.append(&[&record], now) {
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

/// One picture: the body must look like a JPEG (starts with the SOI marker).
pub async fn fetch(vapix: &VapixClient, path: &str) -> Result<Vec<u8>, String> {
    let body = vapix
        .get_limited(path, MAX_JPEG_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    if !body.starts_with(&[0xFF, 0xD8]) {
        return Err(format!(
            "{path} answered {} bytes that are not a JPEG",
            body.len()
        ));
    }
    Ok(body)
}
