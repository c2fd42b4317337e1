//! Object-store destinations (`kind = "s3"`, `kind = "azure-blob"`): the outbox drained into
//! NDJSON objects (DESIGN.md §4).
//!
//! The [`batch::Batcher`] cuts outbox entries into objects; [`ObjectSink::run`] uploads each
//! closed object and only then acknowledges the outbox through the object's last entry (a 2xx
//! is the destination's acknowledgement). A failed upload is retried with back-off, forever
//! and in order: the sink stops reading meanwhile, so the outbox (not memory) holds the
//! backlog. An object's key comes from its first sequence number, so an object uploaded but
//! not acknowledged before a crash is cut again from the same entries after the restart and
//! overwrites itself instead of duplicating events.
//!
//! A [`Snapshot`] record (a rule with `snapshot = true`) closes the open object and goes up
//! as its own JPEG object right after it; its key comes from the event (timestamp, topic), so
//! a re-upload after a crash overwrites it too. Uploads and acknowledgements keep outbox
//! order, so an acknowledgement never covers an entry not yet stored.

pub mod azure_blob;
pub mod batch;
pub mod s3;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::{BatchConfig, Compression, DestinationConfig, units};
use crate::delivery::{Record, Snapshot};
use crate::outbox::{DeadLetters, SharedOutbox};
use crate::sinks::error::SinkError;
use crate::sinks::mqtt::SinkStats;
use crate::sources::backoff::Backoff;
use batch::{Batch, Batcher, DEFAULT_SNAPSHOT_KEY, KeyTemplate, Limits, Object, ObjectFormat};

/// Outbox entries read per step: bounds memory between reads and batching.
const READ_CHUNK: usize = 2048;
/// Longest wait between two attempts at a failed upload.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where objects go.
#[derive(Debug)]
pub enum Store {
    /// An S3 bucket.
    S3(s3::S3Store),
    /// An Azure Blob container.
    AzureBlob(Box<azure_blob::AzureBlobStore>),
}

impl Store {
    /// Stores one object (overwriting one with the same key).
    pub async fn put(&self, o: &Object) -> Result<(), SinkError> {
        match self {
            Self::S3(s) => s.put(o).await,
            Self::AzureBlob(a) => a.put(o).await,
        }
    }

    /// Where, for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::S3(s) => s.describe(),
            Self::AzureBlob(a) => a.describe(),
        }
    }
}

/// A resolved object-store destination.
#[derive(Debug)]
pub struct ObjectSink {
    /// Destination name.
    pub name: Arc<str>,
    /// Where objects go.
    pub store: Store,
    /// Keys and compression.
    pub format: ObjectFormat,
    /// When objects close.
    pub limits: Limits,
    /// Clock of batch ages.
    pub clock: SharedClock,
    /// This relay's id: with the outbox sequence, the `event_id` of every archive line.
    pub relay_id: Arc<str>,
}

/// Batch limits from config (validated already by `check`).
pub fn limits(b: &BatchConfig) -> Result<Limits, String> {
    Ok(Limits {
        max_events: b.max_events.max(1),
        max_bytes: units::parse_bytes(&b.max_bytes)?.max(1) as usize,
        max_age_ms: units::parse_duration(&b.max_age)?.as_millis().max(1) as i64,
    })
}

/// The keys and compression of an `s3` or `azure-blob` destination (`None` for other kinds):
/// the sink names objects with it, and rules name the snapshot an event will have.
pub fn object_format(name: &str, dest: &DestinationConfig) -> Option<Result<ObjectFormat, String>> {
    let (prefix, key, snapshot_key, compression) = match dest {
        DestinationConfig::S3(c) => (&c.prefix, &c.key, &c.snapshot_key, c.compression),
        DestinationConfig::AzureBlob(c) => (&c.prefix, &c.key, &c.snapshot_key, c.compression),
        _ => return None,
    };
    Some(format(
        name,
        prefix,
        key.as_deref(),
        snapshot_key.as_deref(),
        compression,
    ))
}

fn format(
    name: &str,
    prefix: &str,
    key: Option<&str>,
    snapshot_key: Option<&str>,
    compression: Compression,
) -> Result<ObjectFormat, String> {
    let template =
        KeyTemplate::parse(key.unwrap_or_else(|| KeyTemplate::default_for(compression)))?;
    let snapshot_template =
        KeyTemplate::parse_snapshot(snapshot_key.unwrap_or(DEFAULT_SNAPSHOT_KEY))?;
    Ok(ObjectFormat {
        destination: name.to_string(),
        prefix: prefix.to_string(),
        template,
        snapshot_template,
        compression,
    })
}

/// What the sink does next, in outbox order.
#[derive(Debug)]
enum Upload {
    /// An NDJSON object.
    Batch(Batch),
    /// A snapshot at this sequence number.
    Snapshot(u64, Snapshot),
    /// Acknowledge through this sequence number (a dead-lettered entry with nothing open
    /// before it).
    Ack(u64),
}

impl ObjectSink {
    /// The sink of an `s3` or `azure-blob` destination; `None` for other kinds.
    pub fn from_config(
        name: Arc<str>,
        dest: &DestinationConfig,
        clock: SharedClock,
        relay_id: Arc<str>,
    ) -> Option<Result<Self, String>> {
        // The store differs; the batch limits and key format are shared.
        let (store, batch) = match dest {
            DestinationConfig::S3(c) => (s3::S3Store::new(c).map(Store::S3), &c.batch),
            DestinationConfig::AzureBlob(c) => (
                azure_blob::AzureBlobStore::new(c, clock.clone())
                    .map(|s| Store::AzureBlob(Box::new(s))),
                &c.batch,
            ),
            _ => return None,
        };
        let format = object_format(&name, dest)?;
        let make = || -> Result<Self, String> {
            Ok(Self {
                format: format?,
                limits: limits(batch)?,
                store: store?,
                name: name.clone(),
                clock: clock.clone(),
                relay_id: relay_id.clone(),
            })
        };
        Some(make())
    }

    /// Drains the outbox forever (until the task is aborted).
    pub async fn run(
        self,
        outbox: Arc<SharedOutbox>,
        mut dead: DeadLetters,
        stats: Arc<SinkStats>,
    ) {
        tracing::info!(destination = %self.name, store = %self.store.describe(), "object store sink started");
        // "Connected" for a store: no upload is failing (there is no session to hold open).
        stats.connected.store(true, Ordering::Relaxed);
        stats.with_health(|h| h.success(self.clock.now_ms()));
        let mut batcher = Batcher::new(
            self.limits,
            self.format.template.uses_camera(),
            self.relay_id.clone(),
        );
        let mut ready: VecDeque<Upload> = VecDeque::new();
        let mut closed = Vec::new();
        let mut next = 0u64;
        let mut backoff = Backoff::new(MAX_BACKOFF);
        loop {
            while let Some(u) = ready.pop_front() {
                match u {
                    Upload::Batch(b) => {
                        self.store_batch(b, &outbox, &mut dead, &stats, &mut backoff)
                            .await
                    }
                    Upload::Snapshot(seq, snap) => {
                        let object = self.format.snapshot(seq, snap);
                        self.store_and_ack(object, &outbox, &mut dead, &stats, &mut backoff)
                            .await
                    }
                    Upload::Ack(seq) => self.ack(seq, &outbox, &mut backoff).await,
                }
            }
            let entries = match outbox.read(next, READ_CHUNK) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(destination = %self.name, error = %e, "cannot read the outbox");
                    tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
                    continue;
                }
            };
            if !entries.is_empty() {
                for e in entries {
                    next = e.seq + 1;
                    match Record::decode(&e.data) {
                        Ok(Record::Message(d)) => batcher.push(e.seq, e.time_ms, &d, &mut closed),
                        Ok(Record::Snapshot(snap)) => {
                            closed.extend(batcher.close());
                            ready.extend(closed.drain(..).map(Upload::Batch));
                            ready.push_back(Upload::Snapshot(e.seq, snap));
                        }
                        Err(err) => {
                            if let Err(io) = dead.put(e.seq, e.time_ms, &e.data, &err.to_string()) {
                                tracing::error!(destination = %self.name, error = %io, "cannot write dead letter");
                            }
                            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                            // Covered by the next object's acknowledgement otherwise.
                            if batcher.is_empty() && closed.is_empty() {
                                ready.push_back(Upload::Ack(e.seq));
                            }
                        }
                    }
                    ready.extend(closed.drain(..).map(Upload::Batch));
                }
                continue;
            }
            // Nothing waiting: close the open object at its age, else wait for either.
            match batcher.deadline_ms() {
                None => outbox.wait_for_data(next).await,
                Some(at) => {
                    let now = self.clock.now_ms();
                    if let Some(b) = batcher.close_if_due(now) {
                        ready.push_back(Upload::Batch(b));
                        continue;
                    }
                    let wait = Duration::from_millis((at - now).max(1) as u64);
                    tokio::select! {
                        _ = outbox.wait_for_data(next) => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Builds one NDJSON object, then stores and acknowledges it.
    async fn store_batch(
        &self,
        batch: Batch,
        outbox: &SharedOutbox,
        dead: &mut DeadLetters,
        stats: &SinkStats,
        backoff: &mut Backoff,
    ) {
        let first_seq = batch.first_seq;
        match self.format.finish(batch) {
            Ok(o) => self.store_and_ack(o, outbox, dead, stats, backoff).await,
            // Compressing into memory cannot fail short of a bug; keep the entries.
            Err(e) => {
                tracing::error!(destination = %self.name, error = %e, first_seq, "cannot build object; entries stay queued")
            }
        }
    }

    /// Uploads one object until the store takes it, then acknowledges its entries. A refusal
    /// no retry can mend (4xx but 408/429) dead-letters the object's entries instead, so the
    /// objects after it still go up.
    async fn store_and_ack(
        &self,
        object: Object,
        outbox: &SharedOutbox,
        dead: &mut DeadLetters,
        stats: &SinkStats,
        backoff: &mut Backoff,
    ) {
        let (first_seq, last_seq, count) = (object.first_seq, object.last_seq, object.count);
        let mut failures = 0u32;
        loop {
            stats.sent.fetch_add(count as u64, Ordering::Relaxed);
            match self.store.put(&object).await {
                Ok(()) => break,
                Err(e) if e.is_permanent() => {
                    let reason = format!("refused by the store (key {}): {e}", object.key);
                    let n = self
                        .dead_letter_range(first_seq, last_seq, &reason, outbox, dead, backoff)
                        .await;
                    stats.dead_lettered.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(destination = %self.name, key = %object.key, error = %e, events = n, file = %dead.path().display(),
                        "object refused by the store and no retry can help: its events moved to the dead-letter file");
                    if failures > 0 {
                        stats.connected.store(true, Ordering::Relaxed);
                    }
                    self.ack(last_seq, outbox, backoff).await;
                    return;
                }
                Err(e) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    stats.with_health(|h| h.error(self.clock.now_ms(), &e.to_string()));
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(destination = %self.name, key = %object.key, error = %e, failures,
                            "object upload failed; retrying with back-off (events stay in the outbox)");
                    }
                    tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
                }
            }
        }
        stats.with_health(|h| h.success(self.clock.now_ms()));
        if failures > 0 {
            stats.connected.store(true, Ordering::Relaxed);
            tracing::info!(destination = %self.name, key = %object.key, failures, "object stored after retries");
        }
        backoff.reset();
        tracing::debug!(destination = %self.name, key = %object.key, first_seq, last_seq, count, bytes = object.body.len(), "object stored");
        self.ack(last_seq, outbox, backoff).await;
        stats.acked.fetch_add(count as u64, Ordering::Relaxed);
        let now = self.clock.now_ms();
        for t in &object.accepted_ms {
            stats.latency.observe_ms(now - t);
        }
    }

    /// Writes the entries `first..=last` (still in the outbox: not yet acknowledged) to the
    /// dead-letter file with `reason`; returns how many. Entries that do not decode were
    /// dead-lettered when they were read, and are not written twice.
    async fn dead_letter_range(
        &self,
        first: u64,
        last: u64,
        reason: &str,
        outbox: &SharedOutbox,
        dead: &mut DeadLetters,
        backoff: &mut Backoff,
    ) -> u64 {
        let (mut from, mut n) = (first, 0);
        while from <= last {
            let entries = match outbox.read(from, READ_CHUNK) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(destination = %self.name, error = %e, "cannot read the outbox; retrying");
                    tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
                    continue;
                }
            };
            if entries.is_empty() {
                break;
            }
            for e in entries.iter().take_while(|e| e.seq <= last) {
                if Record::decode(&e.data).is_ok() {
                    if let Err(io) = dead.put(e.seq, e.time_ms, &e.data, reason) {
                        tracing::error!(destination = %self.name, error = %io, "cannot write dead letter");
                    }
                    n += 1;
                }
            }
            from = entries.last().map_or(last + 1, |e| e.seq + 1);
        }
        n
    }

    /// Acknowledges through `seq`, retrying until the outbox takes it.
    async fn ack(&self, seq: u64, outbox: &SharedOutbox, backoff: &mut Backoff) {
        loop {
            match outbox.ack_through(seq) {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(destination = %self.name, error = %e, "cannot acknowledge in the outbox; retrying");
                    tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
                }
            }
        }
    }
}
