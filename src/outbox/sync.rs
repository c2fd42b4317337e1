//! Group commit: what a sync must flush, collected under the outbox lock and flushed outside it.
//!
//! Appends write under the lock (a `pwrite` into the page cache) and mark what they touched
//! ([`Dirty`]). A sync takes that set as a [`SyncJob`] (duplicated file handles), runs the
//! `fdatasync`s without the lock, so readers, acks and further appends go on meanwhile, then
//! records how far records are durable. One job covers every record written before it started,
//! whoever wrote it: that is the group commit.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use super::{Outbox, OutboxError, io_at};

/// How long an acknowledgement may stay unsynced: a power cut resends at most the deliveries
/// acknowledged in this window (the flusher of [`super::SharedOutbox`] syncs it, or the next
/// append's sync does).
pub const ACK_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What has been written since the last sync.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    /// Segment files written since the last sync other than the tail (rotated away, sealed).
    pub files: Vec<File>,
    /// The tail segment has unsynced writes.
    pub tail: bool,
    /// Directory entries (new segments, the ack file) not yet synced.
    pub dir: bool,
    /// The ack file has an unsynced write since then.
    pub ack_since: Option<Instant>,
}

/// One sync's work, run without the lock.
#[derive(Debug)]
pub(crate) struct SyncJob {
    files: Vec<File>,
    dir: Option<PathBuf>,
    ack: Option<File>,
    /// Every record below this seq was written before the job started.
    pub through: u64,
}

impl SyncJob {
    /// `fdatasync` of every file, then the directory, then the ack file.
    pub fn run(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(d) = &self.dir {
            File::open(d)?.sync_all()?;
        }
        if let Some(a) = &self.ack {
            a.sync_data()?;
        }
        Ok(())
    }
}

impl Outbox {
    /// Whether an acknowledgement waits for its sync longer than [`ACK_SYNC_EVERY`], or data
    /// waits at all (the flusher then syncs).
    pub(crate) fn sync_due(&self) -> bool {
        self.opts.fsync
            && !self.sync_running
            && (self.dirty.tail
                || !self.dirty.files.is_empty()
                || self.dirty.dir
                || self
                    .dirty
                    .ack_since
                    .is_some_and(|t| t.elapsed() >= ACK_SYNC_EVERY))
    }

    /// Takes everything written so far into a job and marks a sync as running.
    pub(crate) fn begin_sync(&mut self) -> Result<SyncJob, OutboxError> {
        let mut files = std::mem::take(&mut self.dirty.files);
        if self.dirty.tail
            && let Some(t) = &self.tail_file
        {
            let path = &self.segments.back().expect("tail").path;
            match t.try_clone() {
                Ok(f) => files.push(f),
                Err(e) => {
                    self.dirty.files = files;
                    return Err(io_at(path)(e));
                }
            }
        }
        let ack = match self.dirty.ack_since {
            Some(_) => Some(
                self.ack_file
                    .try_clone()
                    .map_err(io_at(&self.dir.join(super::ACK_FILE)))?,
            ),
            None => None,
        };
        let job = SyncJob {
            files,
            dir: self.dirty.dir.then(|| self.dir.clone()),
            ack,
            through: self.next_seq,
        };
        self.dirty.tail = false;
        self.dirty.dir = false;
        self.dirty.ack_since = None;
        self.sync_running = true;
        Ok(job)
    }

    /// Records the outcome of `job`. A failed `fdatasync` may have dropped the dirty pages
    /// (retrying would wrongly succeed): the records it was to cover are never counted
    /// durable, and the tail is sealed so later appends go to a fresh segment.
    pub(crate) fn end_sync(&mut self, job: &SyncJob, r: io::Result<()>) -> Result<(), OutboxError> {
        self.sync_running = false;
        match r {
            Ok(()) => {
                if job.through > self.durable_below {
                    let failed_to = self.sync_failed.as_ref().map_or(0, |f| f.1);
                    let from = self.durable_below.max(failed_to).min(job.through);
                    self.durable += job.through - from;
                    self.durable_below = job.through;
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e,
                    "outbox sync failed: the records it covered are not counted durable");
                self.sync_failed = Some((self.durable_below, job.through, e.to_string()));
                self.write_errors += job.through.saturating_sub(self.durable_below);
                self.write_failing = true;
                if let Some(t) = self.segments.back_mut() {
                    t.sealed = true;
                }
                self.retire_tail();
                Err(io_at(&self.dir)(e))
            }
        }
    }

    /// Syncs everything written so far, in the caller's thread.
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        let job = self.begin_sync()?;
        let r = job.run();
        self.end_sync(&job, r)
    }

    /// Whether the records below `target` are durable: `Some(Ok)` yes, `Some(Err)` their sync
    /// failed, `None` not yet.
    pub(crate) fn durable_state(&self, target: u64) -> Option<Result<(), OutboxError>> {
        if let Some((from, to, msg)) = &self.sync_failed
            && *from < target
            && target <= *to
        {
            return Some(Err(io_at(&self.dir)(io::Error::other(format!(
                "sync failed: {msg}"
            )))));
        }
        (self.durable_below >= target).then_some(Ok(()))
    }

    /// Drops the tail's write handle, keeping it for the next sync if it has unsynced writes.
    pub(crate) fn retire_tail(&mut self) {
        if let Some(f) = self.tail_file.take()
            && std::mem::take(&mut self.dirty.tail)
        {
            self.dirty.files.push(f);
        }
    }
}
