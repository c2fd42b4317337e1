//! [`SharedOutbox`]: the pipeline appends while a sink drains, from different tasks.
//!
//! The lock is held for memory updates and `pwrite`s only, never for an `fdatasync`: an
//! append writes under the lock, then syncs outside it (group commit: the first appender to
//! find no sync running flushes everything written so far, later ones wait for it and find
//! their records covered). Acknowledgements are synced by a flusher thread at most
//! [`ACK_SYNC_EVERY`] after they were written, unless an append's sync took them along first.
//! Appends block their thread for the sync: async callers use [`SharedOutbox::append_async`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use super::sync::ACK_SYNC_EVERY;
use super::{AppendOutcome, Entry, Outbox, OutboxError, OutboxStats};

/// An [`Outbox`] behind a mutex, with a wake-up for readers waiting on new records.
#[derive(Debug)]
pub struct SharedOutbox {
    inner: Mutex<Outbox>,
    appended: Notify,
    /// Signalled when a sync ends.
    synced: Condvar,
    fsync: bool,
}

impl SharedOutbox {
    /// Shares `o`; with `fsync` on, also starts its flusher thread (it ends with the outbox).
    pub fn new(o: Outbox) -> Arc<Self> {
        let fsync = o.opts.fsync;
        let shared = Arc::new(Self {
            inner: Mutex::new(o),
            appended: Notify::new(),
            synced: Condvar::new(),
            fsync,
        });
        if fsync {
            let weak = Arc::downgrade(&shared);
            let spawned = std::thread::Builder::new()
                .name("outbox-sync".into())
                .spawn(move || flusher(weak));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the outbox flusher: acknowledgements are synced with the next append only");
            }
        }
        shared
    }

    /// Whether appends wait for a sync (`buffer.fsync`).
    pub fn syncs(&self) -> bool {
        self.fsync
    }

    /// A panic while holding the lock leaves the outbox consistent on disk (every change is
    /// written before memory is updated), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Outbox::append`]: returns once the accepted records are durable (with `fsync`), then
    /// wakes every [`SharedOutbox::wait_for_data`]. Blocks the calling thread.
    pub fn append(&self, records: &[&[u8]], now_ms: i64) -> Result<AppendOutcome, OutboxError> {
        let mut g = self.lock();
        let o = g.write_batch(records, now_ms)?;
        if o.count_accepted > 0 && g.opts.fsync {
            let target = o.first_seq + o.count_accepted;
            self.wait_durable(g, target)?;
        } else {
            drop(g);
        }
        if o.count_accepted > 0 {
            self.appended.notify_waiters();
        }
        Ok(o)
    }

    /// [`SharedOutbox::append`] on a blocking thread, for async callers: the write and its
    /// sync never hold up a runtime worker.
    pub async fn append_async(
        self: &Arc<Self>,
        records: Vec<Vec<u8>>,
        now_ms: i64,
    ) -> Result<AppendOutcome, OutboxError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            me.append(&refs, now_ms)
        })
        .await
        .unwrap_or_else(|e| {
            Err(OutboxError::Io {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })
        })
    }

    /// Waits until every record below `target` is covered by a sync, leading one if none runs.
    fn wait_durable<'a>(
        &'a self,
        mut g: MutexGuard<'a, Outbox>,
        target: u64,
    ) -> Result<(), OutboxError> {
        loop {
            if let Some(r) = g.durable_state(target) {
                return r;
            }
            if g.sync_running {
                g = self.synced.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g = self.lead_sync(g)?;
        }
    }

    /// Runs one sync of everything written so far, without the lock during the flush.
    fn lead_sync<'a>(
        &'a self,
        mut g: MutexGuard<'a, Outbox>,
    ) -> Result<MutexGuard<'a, Outbox>, OutboxError> {
        let job = g.begin_sync()?;
        drop(g);
        let r = job.run();
        let mut g = self.lock();
        // A failure is recorded in the outbox; the waiters read it from there.
        let _ = g.end_sync(&job, r);
        self.synced.notify_all();
        Ok(g)
    }

    /// Returns once an unacknowledged record with seq ≥ `from_seq` exists.
    pub async fn wait_for_data(&self, from_seq: u64) {
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            // Registered before checking, so an append between the check and the await still wakes us.
            notified.as_mut().enable();
            if self.lock().has_data_from(from_seq) {
                return;
            }
            notified.await;
        }
    }

    /// [`Outbox::read`].
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, OutboxError> {
        self.lock().read(from, max)
    }

    /// [`Outbox::ack_through`]: written to the OS now, synced within [`ACK_SYNC_EVERY`].
    pub fn ack_through(&self, seq: u64) -> Result<(), OutboxError> {
        self.lock().ack_through(seq)
    }

    /// [`Outbox::expire`].
    pub fn expire(&self, now_ms: i64) -> Result<u64, OutboxError> {
        self.lock().expire(now_ms)
    }

    /// [`Outbox::stats`].
    pub fn stats(&self) -> OutboxStats {
        self.lock().stats()
    }

    /// Runs `f` with the outbox locked, for anything else.
    pub fn with<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        f(&mut self.lock())
    }
}

/// Syncs acknowledgements (and anything else left unsynced) every [`ACK_SYNC_EVERY`] while the
/// outbox exists.
fn flusher(weak: Weak<SharedOutbox>) {
    loop {
        std::thread::sleep(ACK_SYNC_EVERY);
        let Some(shared) = weak.upgrade() else { return };
        let g = shared.lock();
        if g.sync_due() {
            match shared.lead_sync(g) {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox flusher: cannot start a sync"),
            }
        }
    }
}
