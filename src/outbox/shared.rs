//! [`SharedOutbox`]: the pipeline appends while a sink drains, from different tasks.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::{AppendOutcome, Entry, Outbox, OutboxError, OutboxStats};

/// An [`Outbox`] behind a mutex, with a wake-up for readers waiting on new records.
/// Every call holds the lock only for its own disk I/O (one batch), never across an `.await`.
#[derive(Debug)]
pub struct SharedOutbox {
    inner: Mutex<Outbox>,
    appended: Notify,
}

impl SharedOutbox {
    pub fn new(o: Outbox) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(o),
            appended: Notify::new(),
        })
    }

    /// A panic while holding the lock leaves the outbox consistent on disk (every change is
    /// written before memory is updated), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Outbox::append`], then wakes every [`SharedOutbox::wait_for_data`].
    pub fn append(&self, records: &[&[u8]], now_ms: i64) -> Result<AppendOutcome, OutboxError> {
        let r = self.lock().append(records, now_ms);
        if matches!(&r, Ok(o) if o.count_accepted > 0) {
            self.appended.notify_waiters();
        }
        r
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

    /// [`Outbox::ack_through`].
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
