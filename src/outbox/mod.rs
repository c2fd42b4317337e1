//! The durable per-destination FIFO between rules and sinks.
//!
//! One [`Outbox`] per destination, one directory per outbox. It stores opaque byte records
//! (encoded [`crate::delivery::Delivery`]s) under strictly increasing sequence numbers and
//! hands them out in order until they are acknowledged.
//!
//! # Why not redb
//! redb's only commit that survives `kill -9` is `Durability::Immediate`, which fsyncs every
//! commit. We need two modes: crash-safe *without* fsync (every batch handed to the OS with
//! `write(2)` before `append` returns: survives `kill -9`, not power loss) and power-loss-safe
//! *with* one `fdatasync` per batch (group commit). A small segmented append-only log does both.
//!
//! # On-disk layout
//! ```text
//! <dir>/seg-<first seq, 20 digits>.log   segments, in seq order
//! <dir>/ack                              ack state, two 32-byte slots 4 KiB apart
//! <dir>/corrupt/<segment>.<epoch ms>     damaged bytes moved aside on open
//! ```
//! All integers little-endian.
//! - **Segment**: header `"EROUTBX1" | first_seq u64`, then records back to back. Seqs within a
//!   segment are consecutive from `first_seq`; there may be gaps between segments (after damage).
//!   A new segment starts when the current one reaches `segment_bytes`; a batch never spans two.
//! - **Record**: `crc32 u32 | len u32 | seq u64 | time_ms i64 | data[len]`; the CRC covers
//!   everything after itself. `len` ≤ 64 MiB.
//! - **Ack file**: two slots `"ERAK" | generation u64 | acked_below u64 | next_seq u64 | crc32`
//!   at offsets 0 and 4096, written alternately in place with one `pwrite` each (a torn page
//!   spoils at most one slot; a slot at 32, from older relays, is still read).
//!   The valid slot with the highest generation wins. `acked_below`: every seq below it is
//!   acknowledged; `next_seq`: a floor for the next seq, so seqs keep increasing even when every
//!   segment was deleted. A missing or unreadable ack file means "nothing acknowledged beyond what
//!   the segment names tell" (resend rather than lose), and the newest segment is never deleted,
//!   so its name and contents still give the next seq.
//!
//! # What "accepted" and "acknowledged" mean
//! - A record is **accepted** when [`Outbox::append`] returns `Ok` and counts it in
//!   `count_accepted`: its batch was written with one `write(2)` and, with `fsync` (the
//!   default), is **durable**: an `fdatasync` covers it (module `sync`: group commit, run outside
//!   the lock by [`SharedOutbox`]), counted in `OutboxStats::durable`. Refused records
//!   (`rejected`, or `write_errors` when the disk failed) were not accepted.
//! - A record is **acknowledged** by [`Outbox::ack_through`] (the destination confirmed it), or
//!   when the outbox drops it ([`WhenFull::DropOldest`], [`Outbox::expire`]): it is never read
//!   again. A segment is deleted once every record in it is acknowledged, except the newest
//!   segment, which stays until it fills up; so disk use is at most the unacknowledged bytes plus
//!   about two segments. The ack position is written to the OS on every ack and, with `fsync`,
//!   synced within `sync::ACK_SYNC_EVERY` (100 ms). New segments and the ack file get their
//!   directory entry synced; files moved to `corrupt/` are synced with their directories.
//!
//! # What a crash can lose
//! - `kill -9`, any mode: nothing accepted. A batch being written when the process died may be
//!   partly on disk; its torn tail is truncated on open (those records were never accepted).
//!   Acks are in the OS too, so nothing is resent either.
//! - Power loss with `fsync = true`: nothing accepted; acks of the last 100 ms at most may be
//!   lost, so those records are sent again (at-least-once).
//! - Power loss with `fsync = false`: whatever the OS had not yet written back (~30 s).
//! - Damage found on open: records before the damage are kept, the rest of that segment is moved
//!   to `corrupt/` (never silently deleted) and later segments are kept. Damage found while
//!   reading ends that segment in memory; the records behind it are counted as `lost_corrupt`
//!   and moved aside on the next open. A read error (`EIO`, a vanished file) is damage too:
//!   at open the unreadable part is set aside by rename (it cannot be copied) and the records
//!   it held, where the next segment's name tells how many, count as `lost_corrupt`. Open never
//!   refuses to start because of damage.
//!
//! # Disk trouble
//! A failed write refuses that batch (`write_errors`, `write_failing` until a write succeeds)
//! and never leaves a half-written record readable. A full file system counts as full under
//! `drop_oldest` and `reject_new` for an outbox holding more than `space::RESERVE` (4 MiB): see
//! module `space`.
//!
//! # Limits
//! `max_bytes` counts the framed size (24-byte header + data) of unacknowledged records.
//! Counters in [`OutboxStats`] (`dropped_*`, `rejected`, `lost_corrupt`) count since open.

mod bench;
pub mod dead_letter;
mod format;
pub mod private;
mod shared;
mod space;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::warn;

pub use bench::{BenchResult, bench};
pub use dead_letter::DeadLetters;
pub use shared::SharedOutbox;
pub use space::free_bytes;

pub use crate::config::WhenFull;
use format::{
    AckState, FRAME_HEADER, FrameHeader, MAX_RECORD_LEN, SEGMENT_HEADER, SEGMENT_MAGIC,
    encode_frame, framed_len, parse_segment_name, segment_header, segment_name,
};

/// Segment size when none is configured: large enough that rollover is rare, small enough that
/// a fully acknowledged segment is reclaimed soon.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Smallest segment size used, whatever `segment_bytes` and `max_bytes` say.
const MIN_SEGMENT_BYTES: u64 = 4096;
/// Read buffer of a cursor: a few typical batches.
const READ_BUFFER: usize = 64 * 1024;
/// Read buffer when checking segments on open.
const SCAN_BUFFER: usize = 256 * 1024;
const ACK_FILE: &str = "ack";
/// How long `open` waits for a lock that another process holds: `LOCK_ATTEMPTS` × `LOCK_RETRY`.
const LOCK_ATTEMPTS: u32 = 25;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);
const CORRUPT_DIR: &str = "corrupt";

/// How an outbox behaves. See the `buffer` section of a destination's config.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Cap on unacknowledged framed bytes (24 bytes per record + data).
    pub max_bytes: u64,
    /// What `append` does when a batch does not fit under `max_bytes`.
    pub when_full: WhenFull,
    /// [`Outbox::expire`] drops records older than this (ms). `None`: never.
    pub max_age_ms: Option<i64>,
    /// `fdatasync` every batch (power-loss safe; group commit). Off: written to the OS only
    /// (`kill -9` safe). Default on.
    pub fsync: bool,
    /// Target segment size. Capped at a quarter of `max_bytes` (at least 4 KiB) so that space
    /// is reclaimed in steps small relative to the cap. Default 8 MiB.
    pub segment_bytes: u64,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024 * 1024,
            when_full: WhenFull::DropOldest,
            max_age_ms: None,
            fsync: true,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// What [`Outbox::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Unacknowledged records recovered.
    pub recovered_entries: u64,
    /// Their framed bytes.
    pub recovered_bytes: u64,
    /// Files under `corrupt/` written by this open (damaged segment parts).
    pub corrupt_paths: Vec<PathBuf>,
    /// Bytes moved to `corrupt/`.
    pub corrupt_bytes: u64,
    /// Bytes of torn records cut off segment tails (a crash mid-write).
    pub truncated_bytes: u64,
    /// Whether the ack file was missing or unreadable (everything in the segments is resent).
    pub ack_file_lost: bool,
    /// The seq the next accepted record gets.
    pub next_seq: u64,
}

/// Result of [`Outbox::append`]. The records not listed in `refused` got seqs
/// `first_seq..first_seq + count_accepted`, in batch order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Seq of the first accepted record (the next seq if none was accepted).
    pub first_seq: u64,
    /// Records accepted.
    pub count_accepted: u64,
    /// Records refused: no room under `RejectNew`, or larger than `max_bytes` alone.
    pub rejected: u64,
    /// Older records dropped to make room under `DropOldest`.
    pub dropped_oldest: u64,
    /// Indices (into the batch, ascending) of the refused records. A record that can never
    /// fit is refused where it stands; under `RejectNew` the rest of the batch is refused from
    /// the first record that finds no room (the queue stays in order).
    pub refused: Vec<usize>,
}

impl AppendOutcome {
    /// Whether record `i` of the batch was accepted.
    pub fn accepted(&self, i: usize) -> bool {
        self.refused.binary_search(&i).is_err()
    }

    /// `Err(OutboxError::Full)` when any record was refused.
    pub fn all_accepted(self) -> Result<Self, OutboxError> {
        if self.rejected == 0 {
            Ok(self)
        } else {
            Err(OutboxError::Full {
                rejected: self.rejected,
            })
        }
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// `now_ms` of the append that stored it.
    pub time_ms: i64,
    pub data: Vec<u8>,
}

/// Counters and levels, all O(1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Unacknowledged records.
    pub depth: u64,
    /// Their framed bytes (what `max_bytes` caps).
    pub bytes: u64,
    /// `time_ms` of the oldest unacknowledged record.
    pub oldest_time_ms: Option<i64>,
    /// The seq the next accepted record gets.
    pub next_seq: u64,
    /// Every seq below this is acknowledged.
    pub acked_below: u64,
    /// Segment files.
    pub segments: u64,
    /// Records dropped by `DropOldest` since open.
    pub dropped_full: u64,
    /// Records dropped by `expire` since open.
    pub dropped_age: u64,
    /// Records refused by `append` since open.
    pub rejected: u64,
    /// Unacknowledged records lost to damage (bad checksum, read error), since open.
    pub lost_corrupt: u64,
    /// The configured cap on `bytes`.
    pub max_bytes: u64,
    /// Records accepted since open.
    pub accepted: u64,
    /// Records made durable (covered by an `fdatasync`) since open; stays 0 with `fsync` off.
    pub durable: u64,
    /// Records refused since open because the disk failed (full, read-only, I/O error, a
    /// failed sync): not accepted.
    pub write_errors: u64,
    /// Whether the last write (or sync) failed: the outbox cannot be written now.
    pub write_failing: bool,
}

/// Outbox failures.
///
/// Retryable (`is_retryable`): [`OutboxError::Io`] (disk full, transient I/O; the batch was not
/// accepted, append it again later). Not retryable: [`OutboxError::Full`] (policy refusal:
/// count or dead-letter), [`OutboxError::Locked`] (another process owns the directory: config).
#[derive(Debug, Error)]
pub enum OutboxError {
    #[error("outbox I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("outbox full: {rejected} record(s) refused")]
    Full { rejected: u64 },
    #[error("outbox {0} is in use by another process")]
    Locked(PathBuf),
}

impl OutboxError {
    /// Whether trying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

/// Whether a read error means the bytes are gone (a short file, a bad sector: `EIO`, a file
/// that vanished) rather than a passing condition. Damage is handled like a bad checksum.
fn is_damage(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory
    )
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A segment file as the outbox tracks it: no per-record index.
#[derive(Debug)]
struct Segment {
    first_seq: u64,
    count: u64,
    /// Valid bytes (header + whole records); the write position.
    len: u64,
    path: PathBuf,
    /// No more appends (damaged, or a write failed).
    sealed: bool,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.count
    }
}

/// A record position: `seq` starts at byte `offset` of its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    seq: u64,
    offset: u64,
}

/// A buffered sequential reader over one segment.
struct Cursor {
    seg_first: u64,
    pos: Pos,
    file: BufReader<File>,
}

impl Cursor {
    fn open(seg: &Segment, pos: Pos) -> io::Result<Self> {
        let mut f = File::open(&seg.path)?;
        f.seek(SeekFrom::Start(pos.offset))?;
        Ok(Self {
            seg_first: seg.first_seq,
            pos,
            file: BufReader::with_capacity(READ_BUFFER, f),
        })
    }

    /// The header at the cursor, if it is plausible for `seg` (else the segment is damaged).
    fn header(&mut self, seg: &Segment) -> io::Result<Option<([u8; 24], FrameHeader)>> {
        let mut raw = [0; FRAME_HEADER as usize];
        if let Err(e) = self.file.read_exact(&mut raw) {
            // Shorter than we wrote it, or unreadable: damage, like a bad header.
            return if is_damage(&e) { Ok(None) } else { Err(e) };
        }
        let h = FrameHeader::parse(&raw);
        let ok = h.seq == self.pos.seq
            && u64::from(h.len) <= MAX_RECORD_LEN
            && self.pos.offset + h.framed_len() <= seg.len;
        Ok(ok.then_some((raw, h)))
    }

    fn skip_data(&mut self, h: &FrameHeader) -> io::Result<()> {
        self.file.seek_relative(i64::from(h.len))?;
        self.pos = Pos {
            seq: self.pos.seq + 1,
            offset: self.pos.offset + h.framed_len(),
        };
        Ok(())
    }

    fn unread_header(&mut self) -> io::Result<()> {
        self.file.seek_relative(-(FRAME_HEADER as i64))
    }
}

/// A durable FIFO of byte records in one directory. Single owner; share it with
/// [`SharedOutbox`].
pub struct Outbox {
    dir: PathBuf,
    opts: OutboxOptions,
    segment_target: u64,
    segments: VecDeque<Segment>,
    /// Write handle of the last segment.
    tail_file: Option<File>,
    /// Holds the directory lock too.
    ack_file: File,
    ack_generation: u64,
    /// First unacknowledged record, in `segments[0]`.
    ack: Pos,
    /// Positioned at `ack` when set.
    ack_cur: Option<Cursor>,
    /// Where the last `read` stopped.
    read_cur: Option<Cursor>,
    next_seq: u64,
    depth: u64,
    bytes: u64,
    oldest_time_ms: Option<i64>,
    dropped_full: u64,
    dropped_age: u64,
    rejected: u64,
    lost_corrupt: u64,
    write_buf: Vec<u8>,
    /// `next_seq` at open: `durable` and `accepted` count from here.
    open_seq: u64,
    /// Every seq below this is covered by a sync (fsync mode).
    durable_below: u64,
    write_errors: u64,
    write_failing: bool,
    /// What the next sync must flush.
    dirty: sync::Dirty,
    /// A sync runs outside the lock (see [`SharedOutbox`]).
    sync_running: bool,
    /// The last sync that failed: the seqs it was to cover (`from..to`), and why.
    sync_failed: Option<(u64, u64, String)>,
    /// Records made durable since open.
    durable: u64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

/// What checking one segment on open found.
struct Scanned {
    count: u64,
    len: u64,
    /// Offset of `acked_below` if the segment holds it.
    ack_offset: Option<u64>,
    /// Damage that is not a torn tail: offset and the first seq it covers.
    damage_at: Option<(u64, u64)>,
    /// Torn-tail bytes to cut.
    torn: u64,
    file_len: u64,
    /// The damage is a read error: the bytes after it cannot be copied.
    unreadable: bool,
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir`, checking every segment.
    pub fn open(dir: &Path, opts: OutboxOptions) -> Result<(Outbox, OpenReport), OutboxError> {
        private::create_dir_all(dir).map_err(io_at(dir))?;
        let ack_path = dir.join(ACK_FILE);
        let ack_file = private::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&ack_path)
            .map_err(io_at(&ack_path))?;
        // A lock held for a moment is not a second relay: a child process forked by any thread
        // holds a copy of our descriptors until it execs. Only a lock that stays is refused.
        let mut attempts = 0;
        loop {
            match ack_file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if attempts < LOCK_ATTEMPTS => {
                    attempts += 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(fs::TryLockError::WouldBlock) => return Err(OutboxError::Locked(dir.into())),
                Err(fs::TryLockError::Error(e)) => return Err(io_at(&ack_path)(e)),
            }
        }
        let mut report = OpenReport::default();
        if opts.fsync {
            // The ack file's directory entry: recovery relies on it.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_at(dir))?;
        }
        let mut raw = Vec::new();
        (&ack_file)
            .read_to_end(&mut raw)
            .map_err(io_at(&ack_path))?;
        let saved = AckState::decode_file(&raw);
        if saved.is_none() {
            report.ack_file_lost = true;
            if !raw.is_empty() {
                warn!(path = %ack_path.display(), "outbox ack file unreadable: resending everything still in the segments");
            }
        }
        let acked_below = saved.map_or(0, |s| s.acked_below);
        let mut next_seq = saved.map_or(0, |s| s.next_seq);

        let mut names = Vec::new();
        for e in fs::read_dir(dir).map_err(io_at(dir))? {
            let path = e.map_err(io_at(dir))?.path();
            if let Some(first) = parse_segment_name(&path) {
                names.push((first, path));
            }
        }
        names.sort();

        let mut segments = VecDeque::new();
        let mut ack_offset = None;
        // First seq of each damaged range, to count what it lost once later segments are known.
        let mut damaged_from = Vec::new();
        for (first, path) in names {
            next_seq = next_seq.max(first);
            let scanned = match scan_segment(&path, first, acked_below) {
                Ok(s) => s,
                Err(e) if is_damage(&e) => {
                    // Not even its header reads: set the whole file aside without reading it.
                    warn!(segment = %path.display(), error = %e, "outbox segment unreadable: moved aside whole");
                    match rename_aside(dir, &path) {
                        Ok(to) => report.corrupt_paths.push(to),
                        Err(e) => {
                            warn!(segment = %path.display(), error = %e, "cannot move an unreadable segment aside; skipping it")
                        }
                    }
                    damaged_from.push(first);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Listed but gone when opened (a file system that lost the file's data
                    // but kept its name, or a file removed meanwhile): nothing to read.
                    // Its name goes too, so a segment created under it later is a new file.
                    warn!(segment = %path.display(), "outbox segment listed but missing: skipped");
                    let _ = fs::remove_file(&path);
                    continue;
                }
                Err(e) => return Err(io_at(&path)(e)),
            };
            let Some(s) = scanned else {
                // Not a segment of ours (bad magic): keep all of it aside.
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                warn!(path = %path.display(), bytes = len, "outbox segment has a bad header: moved aside whole");
                let to = rename_aside(dir, &path).map_err(io_at(&path))?;
                next_seq = next_seq.max(first + len / FRAME_HEADER + 1);
                report.corrupt_bytes += len;
                report.corrupt_paths.push(to);
                continue;
            };
            let mut sealed = false;
            if s.len < SEGMENT_HEADER {
                // Created but the header never made it: it holds nothing. Removed rather than
                // rewritten in place (after a power cut a file system can list a file that
                // cannot be opened for writing); a fresh segment is created when needed.
                if let Err(e) = fs::remove_file(&path) {
                    warn!(segment = %path.display(), error = %e, "cannot remove an empty outbox segment");
                }
                continue;
            }
            if let Some((at, seq)) = s.damage_at {
                let rest = s.file_len - at;
                let moved = if s.unreadable {
                    split_off_unreadable(dir, &path, at, opts.fsync)
                } else {
                    move_aside(dir, &path, at, rest)
                        .and_then(|to| truncate(&path, at, opts.fsync).map(|()| to))
                };
                match moved {
                    Ok(to) => {
                        warn!(segment = %path.display(), kept_records = s.count, first_damaged_seq = seq,
                            moved_bytes = rest, to = %to.display(),
                            "outbox segment damaged in the middle: kept the records before the damage, moved the rest aside");
                        report.corrupt_paths.push(to);
                    }
                    // The disk refuses even that: keep the good records in memory only (sealed,
                    // never written again); the next open tries again.
                    Err(e) => warn!(segment = %path.display(), kept_records = s.count,
                        first_damaged_seq = seq, error = %e,
                        "outbox segment damaged and cannot be repaired on disk: reading only the records before the damage"),
                }
                next_seq = next_seq.max(seq + rest / FRAME_HEADER + 1);
                report.corrupt_bytes += rest;
                damaged_from.push(seq);
                sealed = true;
            } else if s.torn > 0 {
                warn!(segment = %path.display(), kept_records = s.count, cut_bytes = s.torn,
                    "outbox segment ends in a torn record (crash mid-write): cut it off");
                truncate(&path, s.len, opts.fsync).map_err(io_at(&path))?;
                report.truncated_bytes += s.torn;
            }
            if s.ack_offset.is_some() {
                ack_offset = s.ack_offset.map(|o| (first, o));
            }
            let seg = Segment {
                first_seq: first,
                count: s.count,
                len: s.len.max(SEGMENT_HEADER),
                path,
                sealed,
            };
            next_seq = next_seq.max(seg.end_seq());
            segments.push_back(seg);
        }

        // What the damage lost: up to the next seq known to exist, never what was acknowledged.
        let mut lost_at_open = 0;
        for from in damaged_from {
            let next_known = segments
                .iter()
                .map(|s: &Segment| s.first_seq)
                .find(|&f| f > from)
                .unwrap_or(saved.map_or(0, |s| s.next_seq));
            lost_at_open += next_known.saturating_sub(from.max(acked_below));
        }

        // Empty segments other than the newest hold nothing.
        let last = segments.len().saturating_sub(1);
        let mut i = 0;
        segments.retain(|s| {
            let keep = s.count > 0 || i == last;
            i += 1;
            if !keep {
                let _ = fs::remove_file(&s.path);
            }
            keep
        });

        let segment_target = opts
            .segment_bytes
            .min(opts.max_bytes / 4)
            .max(MIN_SEGMENT_BYTES);
        let mut ob = Outbox {
            dir: dir.to_path_buf(),
            opts,
            segment_target,
            segments,
            tail_file: None,
            ack_file,
            ack_generation: saved.map_or(0, |s| s.generation),
            ack: Pos {
                seq: 0,
                offset: SEGMENT_HEADER,
            },
            ack_cur: None,
            read_cur: None,
            next_seq,
            depth: 0,
            bytes: 0,
            oldest_time_ms: None,
            dropped_full: 0,
            dropped_age: 0,
            rejected: 0,
            lost_corrupt: lost_at_open,
            write_buf: Vec::new(),
            open_seq: next_seq,
            durable_below: next_seq,
            write_errors: 0,
            write_failing: false,
            dirty: sync::Dirty::default(),
            sync_running: false,
            sync_failed: None,
            durable: 0,
        };
        if ob.segments.is_empty() {
            ob.create_segment(next_seq)?;
        }

        // Drop fully acknowledged segments, then place the ack position.
        while ob.segments.len() > 1 && ob.segments[0].end_seq() <= acked_below {
            let s = ob.segments.pop_front().expect("non-empty");
            remove_segment_file(&s);
        }
        let s0 = &ob.segments[0];
        ob.ack = if acked_below <= s0.first_seq {
            Pos {
                seq: s0.first_seq,
                offset: SEGMENT_HEADER,
            }
        } else if acked_below >= s0.end_seq() {
            Pos {
                seq: s0.end_seq(),
                offset: s0.len,
            }
        } else {
            match ack_offset {
                Some((first, offset)) if first == s0.first_seq => Pos {
                    seq: acked_below,
                    offset,
                },
                _ => Pos {
                    seq: s0.first_seq,
                    offset: SEGMENT_HEADER,
                },
            }
        };
        ob.depth = ob.segments.iter().map(|s| s.count).sum::<u64>() - (ob.ack.seq - s0.first_seq);
        ob.bytes = ob
            .segments
            .iter()
            .map(|s| s.len - SEGMENT_HEADER)
            .sum::<u64>()
            - (ob.ack.offset - SEGMENT_HEADER);
        ob.refresh_oldest()?;
        ob.persist_ack()?;
        if ob.opts.fsync {
            ob.sync()?;
            ob.durable = 0;
        }
        report.recovered_entries = ob.depth;
        report.recovered_bytes = ob.bytes;
        report.next_seq = ob.next_seq;
        Ok((ob, report))
    }

    /// The directory this outbox lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a batch: every accepted record is written with one `write(2)` (and one
    /// `fdatasync` when `fsync` is on) before this returns. On `Err` nothing was accepted.
    pub fn append(&mut self, records: &[&[u8]], now_ms: i64) -> Result<AppendOutcome, OutboxError> {
        let o = self.write_batch(records, now_ms)?;
        if self.opts.fsync && o.count_accepted > 0 {
            self.sync()?;
        }
        Ok(o)
    }

    /// [`Outbox::append`] without the sync: [`SharedOutbox`] syncs outside its lock.
    pub(crate) fn write_batch(
        &mut self,
        records: &[&[u8]],
        now_ms: i64,
    ) -> Result<AppendOutcome, OutboxError> {
        let max = self.opts.max_bytes;
        let mut refused = Vec::new();
        let mut batch_bytes = 0u64;
        let mut room = true;
        for (i, r) in records.iter().enumerate() {
            let f = framed_len(r.len());
            // A record that can never fit is refused alone; the rest of the batch goes on.
            if r.len() as u64 > MAX_RECORD_LEN || f > max || !room {
                refused.push(i);
                continue;
            }
            if self.opts.when_full == WhenFull::RejectNew && self.bytes + batch_bytes + f > max {
                room = false;
                refused.push(i);
                continue;
            }
            batch_bytes += f;
        }
        if self.opts.when_full == WhenFull::RejectNew
            && refused.len() < records.len()
            && self.short_of_disk(batch_bytes)
        {
            // The disk is as good as full for this outbox: refuse like a full buffer.
            refused = (0..records.len()).collect();
            batch_bytes = 0;
        }
        let accepted = records.len() - refused.len();
        let first_seq = self.next_seq;
        let mut outcome = AppendOutcome {
            first_seq,
            count_accepted: 0,
            rejected: refused.len() as u64,
            dropped_oldest: 0,
            refused,
        };
        if accepted == 0 {
            self.rejected += outcome.rejected;
            return Ok(outcome);
        }
        let mut buf = std::mem::take(&mut self.write_buf);
        buf.clear();
        let mut seq = first_seq;
        for (i, r) in records.iter().enumerate() {
            if outcome.accepted(i) {
                encode_frame(&mut buf, seq, now_ms, r);
                seq += 1;
            }
        }
        let mut attempt = 0;
        let written = loop {
            let r = self
                .keep_reserve(batch_bytes)
                .and_then(|n| {
                    outcome.dropped_oldest += n;
                    self.prepare_tail(batch_bytes)
                })
                .and_then(|()| self.write_tail(&buf));
            match r {
                // Under drop_oldest a full disk counts as a full outbox: drop and retry.
                Err(e)
                    if space::is_no_space(&e)
                        && self.opts.when_full == WhenFull::DropOldest
                        && attempt < 3 =>
                {
                    attempt += 1;
                    match self.drop_head_segment() {
                        Ok(0) | Err(_) => break Err(e),
                        Ok(n) => outcome.dropped_oldest += n,
                    }
                }
                r => break r,
            }
        };
        if buf.capacity() <= 4 * 1024 * 1024 {
            self.write_buf = buf;
        }
        self.dropped_full += outcome.dropped_oldest;
        if let Err(e) = written {
            self.write_errors += accepted as u64;
            self.write_failing = true;
            return Err(e);
        }
        self.write_failing = false;
        self.rejected += outcome.rejected;

        let tail = self.segments.back_mut().expect("tail exists");
        tail.count += accepted as u64;
        tail.len += batch_bytes;
        self.next_seq += accepted as u64;
        if self.depth == 0 {
            self.oldest_time_ms = Some(now_ms);
        }
        self.depth += accepted as u64;
        self.bytes += batch_bytes;
        outcome.count_accepted = accepted as u64;

        if self.opts.when_full == WhenFull::DropOldest && self.bytes > max {
            let before = self.ack.seq;
            // The batch is accepted whatever happens here: a failure only leaves the outbox
            // over its cap until the next append.
            let r = self.drop_oldest(max).and_then(|n| {
                self.persist_ack()?;
                Ok(n)
            });
            let n = match r {
                Ok(n) => n,
                Err(e) => {
                    warn!(dir = %self.dir.display(), error = %e, "outbox could not drop oldest records");
                    self.ack.seq - before
                }
            };
            outcome.dropped_oldest += n;
            self.dropped_full += n;
        }
        Ok(outcome)
    }

    /// Up to `max` unacknowledged records with seq ≥ `from`, in order.
    pub fn read(&mut self, from: u64, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let mut out = Vec::new();
        let mut want = from.max(self.ack.seq);
        while out.len() < max && want < self.next_seq {
            let idx = self.segments.partition_point(|s| s.end_seq() <= want);
            let Some(seg) = self.segments.get(idx) else {
                break;
            };
            want = want.max(seg.first_seq);
            let Some(mut cur) = self.cursor_at(idx, want)? else {
                continue;
            };
            let seg = &self.segments[idx];
            let path = seg.path.clone();
            let mut damaged = None;
            while out.len() < max && cur.pos.seq < seg.end_seq() {
                let Some((raw, h)) = cur.header(seg).map_err(io_at(&path))? else {
                    damaged = Some(cur.pos);
                    break;
                };
                let mut data = vec![0; h.len as usize];
                let got = match cur.file.read_exact(&mut data) {
                    Err(e) if is_damage(&e) => false,
                    r => {
                        r.map_err(io_at(&path))?;
                        h.check(&raw, &data)
                    }
                };
                if !got {
                    damaged = Some(cur.pos);
                    break;
                }
                cur.pos = Pos {
                    seq: cur.pos.seq + 1,
                    offset: cur.pos.offset + h.framed_len(),
                };
                out.push(Entry {
                    seq: h.seq,
                    time_ms: h.time_ms,
                    data,
                });
            }
            want = cur.pos.seq;
            if let Some(at) = damaged {
                self.cut_segment(idx, at)?;
            } else {
                self.read_cur = Some(cur);
            }
        }
        Ok(out)
    }

    /// Acknowledges every record with seq ≤ `seq`: they are never read again, and segments
    /// holding only acknowledged records are deleted. The new position is written to the OS.
    pub fn ack_through(&mut self, seq: u64) -> Result<(), OutboxError> {
        let target = seq.saturating_add(1).min(self.next_seq);
        if target <= self.ack.seq {
            return Ok(());
        }
        while self.ack.seq < target {
            let s0 = &self.segments[0];
            if target >= s0.end_seq() {
                let end = Pos {
                    seq: s0.end_seq(),
                    offset: s0.len,
                };
                let last = self.segments.len() == 1;
                self.advance_ack(end);
                if last {
                    break;
                }
                continue;
            }
            // Inside the head segment: the read cursor usually stands right there.
            if let Some(rc) = &self.read_cur
                && rc.seg_first == s0.first_seq
                && rc.pos.seq == target
            {
                self.advance_ack(rc.pos);
                break;
            }
            match self.head_header()? {
                Some(h) => self.skip_head(&h)?,
                None => break,
            }
        }
        self.refresh_oldest()?;
        self.persist_ack()
    }

    /// Drops records older than `max_age_ms` (by their append time, from the head; a record
    /// behind a younger one waits for it). Returns how many.
    pub fn expire(&mut self, now_ms: i64) -> Result<u64, OutboxError> {
        let Some(max_age) = self.opts.max_age_ms else {
            return Ok(0);
        };
        let cutoff = now_ms.saturating_sub(max_age);
        let before = self.ack.seq;
        let mut n = 0;
        while self.oldest_time_ms.is_some_and(|t| t < cutoff) {
            match self.head_header()? {
                Some(h) => {
                    self.skip_head(&h)?;
                    n += 1;
                }
                None => break,
            }
            self.refresh_oldest()?;
        }
        self.dropped_age += n;
        if self.ack.seq != before {
            self.persist_ack()?;
        }
        Ok(n)
    }

    /// Levels and counters.
    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            depth: self.depth,
            bytes: self.bytes,
            oldest_time_ms: self.oldest_time_ms,
            next_seq: self.next_seq,
            acked_below: self.ack.seq,
            segments: self.segments.len() as u64,
            dropped_full: self.dropped_full,
            dropped_age: self.dropped_age,
            rejected: self.rejected,
            lost_corrupt: self.lost_corrupt,
            max_bytes: self.opts.max_bytes,
            accepted: self.next_seq - self.open_seq,
            durable: self.durable,
            write_errors: self.write_errors,
            write_failing: self.write_failing,
        }
    }

    /// Whether an unacknowledged record with seq ≥ `from` exists.
    pub fn has_data_from(&self, from: u64) -> bool {
        self.depth > 0
            && self
                .segments
                .iter()
                .rev()
                .find(|s| s.count > 0)
                .is_some_and(|s| s.end_seq() > from.max(self.ack.seq))
    }

    // ---- internals ----

    /// Makes sure the last segment can take a batch of `batch_bytes`.
    fn prepare_tail(&mut self, batch_bytes: u64) -> Result<(), OutboxError> {
        let t = self
            .segments
            .back_mut()
            .expect("a tail segment always exists");
        let fits = !t.sealed
            && t.end_seq() == self.next_seq
            && (t.count == 0 || t.len + batch_bytes <= self.segment_target);
        if fits {
            if self.tail_file.is_none() {
                let p = &t.path;
                self.tail_file = Some(OpenOptions::new().write(true).open(p).map_err(io_at(p))?);
            }
            return Ok(());
        }
        if t.count == 0 && t.first_seq == self.next_seq {
            // Sealed by a failed write while still empty: start it over.
            let p = &t.path;
            let f = OpenOptions::new().write(true).open(p).map_err(io_at(p))?;
            f.set_len(SEGMENT_HEADER).map_err(io_at(p))?;
            t.len = SEGMENT_HEADER;
            t.sealed = false;
            self.tail_file = Some(f);
            self.dirty.tail = self.opts.fsync;
            // Their buffers may hold the bytes that were just cut off.
            self.read_cur = None;
            self.ack_cur = None;
            return Ok(());
        }
        let old_empty = t.count == 0;
        self.create_segment(self.next_seq)?;
        let n = self.segments.len();
        if old_empty && n >= 2 && self.segments[n - 2].count == 0 {
            let s = self.segments.remove(n - 2).expect("index checked");
            remove_segment_file(&s);
            if self
                .read_cur
                .as_ref()
                .is_some_and(|c| c.seg_first == s.first_seq)
            {
                self.read_cur = None;
            }
            self.normalize_head();
        }
        Ok(())
    }

    fn create_segment(&mut self, first_seq: u64) -> Result<(), OutboxError> {
        let path = self.dir.join(segment_name(first_seq));
        let f = private::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_at(&path))?;
        f.write_all_at(&segment_header(first_seq), 0)
            .map_err(io_at(&path))?;
        if let Some(t) = self.segments.back_mut() {
            t.sealed = true;
        }
        self.retire_tail();
        if self.opts.fsync {
            // The next sync covers the header and the new directory entry.
            self.dirty.tail = true;
            self.dirty.dir = true;
        }
        self.segments.push_back(Segment {
            first_seq,
            count: 0,
            len: SEGMENT_HEADER,
            path,
            sealed: false,
        });
        self.tail_file = Some(f);
        self.normalize_head();
        Ok(())
    }

    /// One `pwrite` of the batch at the tail's end (the sync comes later, see [`sync`]). On
    /// failure the partial write is cut off and the segment sealed, so nothing half-written is
    /// read.
    fn write_tail(&mut self, buf: &[u8]) -> Result<(), OutboxError> {
        let t = self.segments.back_mut().expect("tail");
        let f = self.tail_file.as_ref().expect("prepared");
        if let Err(e) = f.write_all_at(buf, t.len) {
            let _ = f.set_len(t.len);
            t.sealed = true;
            let path = t.path.clone();
            self.retire_tail();
            return Err(io_at(&path)(e));
        }
        if self.opts.fsync {
            self.dirty.tail = true;
        }
        Ok(())
    }

    /// Moves the ack position forward within `segments[0]` to `to`.
    fn advance_ack(&mut self, to: Pos) {
        self.depth -= to.seq - self.ack.seq;
        self.bytes -= to.offset - self.ack.offset;
        self.ack = to;
        if self.ack_cur.as_ref().is_some_and(|c| c.pos != to) {
            self.ack_cur = None;
        }
        self.normalize_head();
    }

    /// Keeps `ack` inside `segments[0]`, deleting fully acknowledged segments (never the last).
    fn normalize_head(&mut self) {
        loop {
            let s0 = &self.segments[0];
            if self.ack.seq < s0.first_seq {
                self.ack = Pos {
                    seq: s0.first_seq,
                    offset: SEGMENT_HEADER,
                };
                self.ack_cur = None;
            }
            if self.ack.seq >= s0.end_seq() && self.segments.len() > 1 {
                let s = self.segments.pop_front().expect("non-empty");
                remove_segment_file(&s);
                if self
                    .read_cur
                    .as_ref()
                    .is_some_and(|c| c.seg_first == s.first_seq)
                {
                    self.read_cur = None;
                }
                self.ack_cur = None;
                let s1 = &self.segments[0];
                self.ack = Pos {
                    seq: s1.first_seq,
                    offset: SEGMENT_HEADER,
                };
                continue;
            }
            return;
        }
    }

    /// The header of the oldest unacknowledged record (the ack cursor then stands on it).
    fn head_header(&mut self) -> Result<Option<FrameHeader>, OutboxError> {
        loop {
            if self.depth == 0 {
                return Ok(None);
            }
            let s0 = &self.segments[0];
            if self.ack.seq >= s0.end_seq() {
                return Ok(None);
            }
            let path = s0.path.clone();
            if self.ack_cur.is_none() {
                match Cursor::open(s0, self.ack) {
                    Ok(c) => self.ack_cur = Some(c),
                    Err(e) if is_damage(&e) => {
                        let at = self.ack;
                        self.cut_segment(0, at)?;
                        continue;
                    }
                    Err(e) => return Err(io_at(&path)(e)),
                }
            }
            let cur = self.ack_cur.as_mut().expect("set");
            match cur.header(s0).map_err(io_at(&path))? {
                Some((_, h)) => {
                    cur.unread_header().map_err(io_at(&path))?;
                    return Ok(Some(h));
                }
                None => {
                    let at = self.ack;
                    self.cut_segment(0, at)?;
                }
            }
        }
    }

    /// Acknowledges the head record whose header `head_header` just returned.
    fn skip_head(&mut self, h: &FrameHeader) -> Result<(), OutboxError> {
        let cur = self.ack_cur.as_mut().expect("head_header positioned it");
        let path = &self.segments[0].path;
        cur.file
            .seek_relative(FRAME_HEADER as i64)
            .map_err(io_at(path))?;
        cur.skip_data(h).map_err(io_at(path))?;
        let to = cur.pos;
        self.advance_ack(to);
        Ok(())
    }

    /// Drops head records until `bytes ≤ max`; whole segments at a time where that is exact.
    fn drop_oldest(&mut self, max: u64) -> Result<u64, OutboxError> {
        let mut n = 0;
        while self.bytes > max {
            let s0 = &self.segments[0];
            let rest_bytes = s0.len - self.ack.offset;
            if self.bytes - rest_bytes >= max && self.segments.len() > 1 {
                n += s0.end_seq() - self.ack.seq;
                let end = Pos {
                    seq: s0.end_seq(),
                    offset: s0.len,
                };
                self.advance_ack(end);
                continue;
            }
            match self.head_header()? {
                Some(h) => {
                    self.skip_head(&h)?;
                    n += 1;
                }
                None => break,
            }
        }
        self.refresh_oldest()?;
        Ok(n)
    }

    fn refresh_oldest(&mut self) -> Result<(), OutboxError> {
        // A sink that acknowledges what it just read leaves its read cursor on the new head:
        // peek there instead of opening the segment again.
        let s0 = &self.segments[0];
        if self.ack_cur.is_none()
            && self.depth > 0
            && self.ack.seq < s0.end_seq()
            && let Some(rc) = self.read_cur.as_mut()
            && rc.seg_first == s0.first_seq
            && rc.pos == self.ack
        {
            let peeked = match rc.header(s0) {
                Ok(Some((_, h))) => rc.unread_header().map(|()| Some(h.time_ms)),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match peeked {
                Ok(Some(t)) => {
                    self.oldest_time_ms = Some(t);
                    return Ok(());
                }
                // Let the ack cursor find and handle whatever is wrong there.
                _ => self.read_cur = None,
            }
        }
        self.oldest_time_ms = self.head_header()?.map(|h| h.time_ms);
        Ok(())
    }

    /// A cursor on `segments[idx]` standing at `want`: the cached one when it can get there
    /// going forward, else a fresh one from the ack position or the segment start.
    fn cursor_at(&mut self, idx: usize, want: u64) -> Result<Option<Cursor>, OutboxError> {
        let seg = &self.segments[idx];
        let mut cur = match self.read_cur.take() {
            Some(c) if c.seg_first == seg.first_seq && c.pos.seq <= want => c,
            _ => {
                let start = if idx == 0 && self.ack.seq <= want {
                    self.ack
                } else {
                    Pos {
                        seq: seg.first_seq,
                        offset: SEGMENT_HEADER,
                    }
                };
                match Cursor::open(seg, start) {
                    Ok(c) => c,
                    Err(e) if is_damage(&e) => {
                        self.cut_segment(idx, start)?;
                        return Ok(None);
                    }
                    Err(e) => return Err(io_at(&seg.path)(e)),
                }
            }
        };
        while cur.pos.seq < want {
            match cur.header(seg).map_err(io_at(&seg.path))? {
                Some((_, h)) => cur.skip_data(&h).map_err(io_at(&seg.path))?,
                None => {
                    let at = cur.pos;
                    self.cut_segment(idx, at)?;
                    return Ok(None);
                }
            }
        }
        Ok(Some(cur))
    }

    /// Damage found at `at` in `segments[idx]` after open: the segment ends there (in memory;
    /// the next open moves the rest aside). The records behind it are lost.
    fn cut_segment(&mut self, idx: usize, at: Pos) -> Result<(), OutboxError> {
        let seg = &mut self.segments[idx];
        let lost = seg.end_seq() - at.seq;
        let lost_bytes = seg.len - at.offset;
        warn!(segment = %seg.path.display(), seq = at.seq, lost_records = lost,
            "outbox record damaged on disk: skipping the rest of its segment");
        seg.count = at.seq - seg.first_seq;
        seg.len = at.offset;
        seg.sealed = true;
        if idx + 1 == self.segments.len() {
            self.retire_tail();
        }
        // `at` is never before `ack`: every record cut off was unacknowledged.
        self.depth -= lost;
        self.bytes -= lost_bytes;
        self.lost_corrupt += lost;
        self.read_cur = None;
        if idx == 0 {
            self.ack_cur = None;
        }
        self.normalize_head();
        if idx == 0 {
            self.refresh_oldest()?;
        }
        Ok(())
    }

    fn persist_ack(&mut self) -> Result<(), OutboxError> {
        self.ack_generation += 1;
        let s = AckState {
            generation: self.ack_generation,
            acked_below: self.ack.seq,
            next_seq: self.next_seq,
        };
        self.ack_file
            .write_all_at(&s.encode(), s.slot_offset())
            .map_err(io_at(&self.dir.join(ACK_FILE)))?;
        if self.opts.fsync && self.dirty.ack_since.is_none() {
            self.dirty.ack_since = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

fn remove_segment_file(s: &Segment) {
    if let Err(e) = fs::remove_file(&s.path) {
        warn!(segment = %s.path.display(), error = %e, "outbox could not delete an acknowledged segment");
    }
}

fn truncate(path: &Path, len: u64, sync: bool) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

/// A fresh name under `<dir>/corrupt/` for damaged bytes of `path` (the directory is created).
fn aside_name(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let cdir = dir.join(CORRUPT_DIR);
    if !cdir.exists() {
        private::create_dir_all(&cdir)?;
        sync_dir(dir)?;
    }
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let mut to = cdir.join(format!("{name}.{ms}"));
    let mut k = 1;
    while to.exists() {
        to = cdir.join(format!("{name}.{ms}.{k}"));
        k += 1;
    }
    Ok(to)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Copies `len` bytes from `offset` of `path` to `<dir>/corrupt/<name>.<epoch ms>`.
fn move_aside(dir: &Path, path: &Path, offset: u64, len: u64) -> io::Result<PathBuf> {
    let to = aside_name(dir, path)?;
    let mut src = File::open(path)?;
    src.seek(SeekFrom::Start(offset))?;
    let mut dst = private::create(&to)?;
    io::copy(&mut src.take(len), &mut dst)?;
    dst.sync_all()?;
    sync_dir(to.parent().expect("in corrupt/"))?;
    Ok(to)
}

/// Renames all of `path` into `corrupt/` without reading it.
fn rename_aside(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let to = aside_name(dir, path)?;
    fs::rename(path, &to)?;
    sync_dir(to.parent().expect("in corrupt/"))?;
    sync_dir(dir)?;
    Ok(to)
}

/// A segment unreadable from `at`: the readable prefix is copied to a new file that takes the
/// segment's name, and the whole original (with the unreadable part) goes to `corrupt/`.
fn split_off_unreadable(dir: &Path, path: &Path, at: u64, sync: bool) -> io::Result<PathBuf> {
    let tmp = path.with_extension("log.part");
    let mut src = File::open(path)?;
    let mut dst = private::create(&tmp)?;
    io::copy(&mut (&mut src).take(at), &mut dst)?;
    if sync {
        dst.sync_data()?;
    }
    let to = rename_aside(dir, path)?;
    fs::rename(&tmp, path)?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(to)
}

/// Checks a segment record by record. `None`: not a segment (bad magic or header seq).
fn scan_segment(path: &Path, first: u64, acked_below: u64) -> io::Result<Option<Scanned>> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut s = Scanned {
        count: 0,
        len: 0,
        ack_offset: None,
        damage_at: None,
        torn: 0,
        file_len,
        unreadable: false,
    };
    if file_len < SEGMENT_HEADER {
        s.torn = file_len;
        return Ok(Some(s));
    }
    let mut r = BufReader::with_capacity(SCAN_BUFFER, file);
    let mut head = [0; SEGMENT_HEADER as usize];
    r.read_exact(&mut head)?;
    if head[..8] != SEGMENT_MAGIC || head[8..] != first.to_le_bytes() {
        return Ok(None);
    }
    let mut offset = SEGMENT_HEADER;
    let mut data = Vec::new();
    loop {
        let seq = first + s.count;
        if seq == acked_below {
            s.ack_offset = Some(offset);
        }
        if offset == file_len {
            break;
        }
        let good = (|| -> io::Result<Option<u64>> {
            if file_len - offset < FRAME_HEADER {
                return Ok(None);
            }
            let mut raw = [0; FRAME_HEADER as usize];
            r.read_exact(&mut raw)?;
            let h = FrameHeader::parse(&raw);
            if h.seq != seq
                || u64::from(h.len) > MAX_RECORD_LEN
                || offset + h.framed_len() > file_len
            {
                return Ok(None);
            }
            data.resize(h.len as usize, 0);
            r.read_exact(&mut data)?;
            Ok(h.check(&raw, &data).then_some(h.framed_len()))
        })();
        let good = match good {
            Ok(g) => g,
            Err(e) if is_damage(&e) => {
                warn!(segment = %path.display(), offset, error = %e, "outbox segment unreadable from here");
                s.damage_at = Some((offset, seq));
                s.unreadable = true;
                break;
            }
            Err(e) => return Err(e),
        };
        match good {
            Some(n) => {
                offset += n;
                s.count += 1;
            }
            None => {
                if valid_record_after(path, offset, seq, file_len)? {
                    s.damage_at = Some((offset, seq));
                } else {
                    s.torn = file_len - offset;
                }
                break;
            }
        }
    }
    s.len = offset;
    Ok(Some(s))
}

/// Whether some intact record with a plausible seq starts after `bad`: then the damage is in
/// the middle, not a torn tail. Only runs on damage, so a byte-by-byte search is affordable.
fn valid_record_after(path: &Path, bad: u64, bad_seq: u64, file_len: u64) -> io::Result<bool> {
    let mut rest = Vec::new();
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(bad + 1))?;
    f.take(file_len - bad - 1).read_to_end(&mut rest)?;
    let max_seq = bad_seq + rest.len() as u64 / FRAME_HEADER + 1;
    let hl = FRAME_HEADER as usize;
    for p in 0..rest.len().saturating_sub(hl - 1) {
        let raw: &[u8; FRAME_HEADER as usize] = rest[p..p + hl].try_into().expect("24 bytes");
        let h = FrameHeader::parse(raw);
        if h.seq < bad_seq || h.seq > max_seq {
            continue;
        }
        let end = p + hl + h.len as usize;
        if end <= rest.len() && h.check(raw, &rest[p + hl..end]) {
            return Ok(true);
        }
    }
    Ok(false)
}
