//! Free space on the outbox's file system, and the room a `drop_oldest` outbox leaves for the
//! others.
//!
//! Every destination's outbox shares `data_dir`'s file system. A destination that is down
//! fills it; if it then filled it to the last byte, the destinations that are up could not
//! write either. So an outbox that holds more than [`RESERVE`] itself treats "less than
//! [`RESERVE`] free" like "full": under `drop_oldest` it drops its oldest segments (counted
//! as `dropped_full`) before it writes, under `reject_new` it refuses the batch (counted as
//! `rejected`). Outboxes that keep up (little queued) write into that room. A write that still
//! meets `ENOSPC` under `drop_oldest` drops and retries the same way.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{Outbox, OutboxError, Pos, SEGMENT_HEADER};
use crate::config::WhenFull;

/// Free bytes a `drop_oldest` outbox leaves on the file system: room for several router
/// batches of every other destination between two of its own appends.
pub const RESERVE: u64 = 4 * 1024 * 1024;

/// Bytes an unprivileged process can still write on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    File::open(path).ok().and_then(|f| free_bytes_of(&f))
}

pub(crate) fn free_bytes_of(f: &File) -> Option<u64> {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer and the descriptor is open for the call.
    let rc = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether a write failed because the file system is full (or the quota reached).
pub(crate) fn is_no_space(e: &OutboxError) -> bool {
    match e {
        OutboxError::Io { source, .. } => {
            matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        }
        _ => false,
    }
}

impl Outbox {
    /// Under `drop_oldest`: drops whole old segments until `need` bytes plus [`RESERVE`] are
    /// free, or nothing is left to drop. Returns how many records it dropped.
    pub(crate) fn keep_reserve(&mut self, need: u64) -> Result<u64, OutboxError> {
        let mut dropped = 0;
        if self.opts.when_full != WhenFull::DropOldest {
            return Ok(0);
        }
        while self.short_of_disk(need) {
            match self.drop_head_segment()? {
                0 => break,
                n => dropped += n,
            }
        }
        Ok(dropped)
    }

    /// Whether this outbox should yield disk room before writing `need` bytes: it holds more
    /// than [`RESERVE`] and the file system has less than `need` + [`RESERVE`] free.
    pub(crate) fn short_of_disk(&self, need: u64) -> bool {
        self.bytes >= RESERVE
            && free_bytes_of(&self.ack_file).is_some_and(|f| f < need.saturating_add(RESERVE))
    }

    /// Drops every unacknowledged record of the oldest segment that holds some, and the
    /// segment file with them (the tail is sealed first, so a fresh one replaces it).
    pub(crate) fn drop_head_segment(&mut self) -> Result<u64, OutboxError> {
        if self.depth == 0 {
            return Ok(0);
        }
        let s0 = &self.segments[0];
        let end = Pos {
            seq: s0.end_seq(),
            offset: s0.len,
        };
        let n = end.seq - self.ack.seq;
        if self.segments.len() == 1 {
            // The tail itself: its file goes once a new tail exists.
            let t = self.segments.back_mut().expect("tail");
            t.sealed = true;
            self.retire_tail();
            self.advance_ack(end);
            self.create_segment(self.next_seq)?;
        } else {
            self.advance_ack(end);
        }
        debug_assert!(self.ack.offset >= SEGMENT_HEADER);
        self.dropped_full += n;
        self.refresh_oldest()?;
        self.persist_ack()?;
        Ok(n)
    }
}
