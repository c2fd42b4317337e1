//! Records that can never be delivered: one NDJSON file per destination, appended to, never
//! rewritten. `<dir>/dead-letter/<name>.ndjson`, one line per record:
//! `{"seq":..,"time_ms":..,"reason":"..","record_b64":".."}` (standard base64 of the stored record).
//!
//! A sink acknowledges a dead-lettered record right after [`DeadLetters::put`]; with `fsync`
//! (the destination's `buffer.fsync`) the line is synced before `put` returns, so a power cut
//! cannot keep the acknowledgement and lose the line. Dead letters are rare: the sync is
//! affordable where it runs.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde::Serialize;

use crate::clock::SharedClock;
use crate::delivery::Record;

/// Dead letters `/status` lists per destination: enough to see a pattern, few enough that the
/// ring stays small (at most [`RECENT_DEAD`] × ([`PAYLOAD_SHOWN`] + topic + reason) bytes).
pub const RECENT_DEAD: usize = 20;
/// Bytes of a dead letter's payload kept for `/status` (cut at a character boundary).
pub const PAYLOAD_SHOWN: usize = 200;
/// Bytes of a dead letter's topic and reason kept for `/status`.
const TEXT_SHOWN: usize = 1024;

/// One dead letter as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// Outbox sequence number.
    pub seq: u64,
    /// When it was dead-lettered (epoch ms, injected clock).
    pub time_ms: i64,
    /// Why it can never be delivered.
    pub reason: String,
    /// Its topic (a snapshot's event topic; empty when the record did not decode).
    pub topic: String,
    /// Its payload's first [`PAYLOAD_SHOWN`] bytes as text (lossy UTF-8).
    pub payload: String,
    /// The payload's full size in bytes.
    pub payload_bytes: usize,
}

/// The last [`RECENT_DEAD`] dead letters of one destination, newest last; shared between the
/// sink that writes them and `/status` that reads them.
#[derive(Debug, Default)]
pub struct RecentDeadLetters(Mutex<VecDeque<DeadLetterView>>);

impl RecentDeadLetters {
    /// Keeps `v`, forgetting the oldest beyond [`RECENT_DEAD`].
    pub fn push(&self, v: DeadLetterView) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == RECENT_DEAD {
            q.pop_front();
        }
        q.push_back(v);
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<DeadLetterView> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// `s` cut to at most `max` bytes at a character boundary, `…` marking a cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl DeadLetterView {
    /// What `/status` shows of a stored `record` dead-lettered at `time_ms` with `reason`.
    pub fn new(seq: u64, time_ms: i64, record: &[u8], reason: &str) -> Self {
        let (topic, payload) = match Record::decode(record) {
            Ok(Record::Message(d)) => (d.topic, d.payload),
            Ok(Record::Snapshot(s)) => (format!("{} (snapshot)", s.topic), s.jpeg),
            Err(_) => (String::new(), record.to_vec()),
        };
        let shown = &payload[..payload.len().min(PAYLOAD_SHOWN + 4)];
        Self {
            seq,
            time_ms,
            reason: cut(reason, TEXT_SHOWN),
            topic: cut(&topic, TEXT_SHOWN),
            payload: cut(&String::from_utf8_lossy(shown), PAYLOAD_SHOWN),
            payload_bytes: payload.len(),
        }
    }
}

/// The dead-letter file of one destination.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    file: File,
    count: u64,
    fsync: bool,
    /// The last few for `/status`, with the clock that dates them (off until
    /// [`DeadLetters::keep_recent`]).
    recent: Option<(Arc<RecentDeadLetters>, SharedClock)>,
}

impl DeadLetters {
    /// Opens (creating) `<dir>/dead-letter/<name>.ndjson` and counts the lines already there.
    pub fn open(dir: &Path, name: &str) -> io::Result<Self> {
        let ddir = dir.join("dead-letter");
        if !ddir.exists() {
            super::private::create_dir_all(&ddir)?;
            File::open(dir)?.sync_all()?;
        }
        let path = ddir.join(format!("{name}.ndjson"));
        let created = !path.exists();
        let mut file = super::private::options()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut count = 0;
        let mut last = b'\n';
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            count += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            last = buf[n - 1];
        }
        if last != b'\n' {
            // A line torn by a crash: end it, so the next one starts clean.
            file.write_all(b"\n")?;
            count += 1;
        }
        if created {
            File::open(&ddir)?.sync_all()?;
        }
        Ok(Self {
            path,
            file,
            count,
            fsync: true,
            recent: None,
        })
    }

    /// Whether each line is synced before [`DeadLetters::put`] returns (default on).
    pub fn set_fsync(&mut self, on: bool) {
        self.fsync = on;
    }

    /// From now on, each line written is also kept in the returned ring, dated by `clock`.
    pub fn keep_recent(&mut self, clock: SharedClock) -> Arc<RecentDeadLetters> {
        let ring = Arc::new(RecentDeadLetters::default());
        self.recent = Some((ring.clone(), clock));
        ring
    }

    /// Appends one line with a single `write(2)` (and keeps it in the recent ring, if any,
    /// even when the write failed: it was set aside all the same).
    pub fn put(&mut self, seq: u64, time_ms: i64, record: &[u8], reason: &str) -> io::Result<()> {
        let line = serde_json::json!({
            "seq": seq,
            "time_ms": time_ms,
            "reason": reason,
            "record_b64": base64::engine::general_purpose::STANDARD.encode(record),
        });
        if let Some((ring, clock)) = &self.recent {
            ring.push(DeadLetterView::new(seq, clock.now_ms(), record, reason));
        }
        let mut b = serde_json::to_vec(&line).map_err(io::Error::other)?;
        b.push(b'\n');
        self.file.write_all(&b)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        self.count += 1;
        Ok(())
    }

    /// Lines in the file, including those from earlier runs (a torn line counts once ended).
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Delivery;

    fn record(topic: &str, payload: &[u8]) -> Vec<u8> {
        Delivery {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos: 1,
            retain: false,
            created_ms: 0,
            camera: "lobby".into(),
        }
        .encode()
    }

    #[test]
    fn the_ring_keeps_the_last_twenty_oldest_first() {
        let ring = RecentDeadLetters::default();
        for i in 0..(RECENT_DEAD as u64 + 5) {
            ring.push(DeadLetterView::new(i, i as i64, &record("t", b"x"), "r"));
        }
        let seqs: Vec<u64> = ring.list().iter().map(|v| v.seq).collect();
        assert_eq!(seqs, (5..RECENT_DEAD as u64 + 5).collect::<Vec<_>>());
    }

    #[test]
    fn a_view_has_topic_reason_and_a_payload_cut_at_a_character() {
        let payload = "é".repeat(300);
        let v = DeadLetterView::new(7, 42, &record("a/+/b", payload.as_bytes()), "bad topic");
        assert_eq!(
            (v.topic.as_str(), v.reason.as_str()),
            ("a/+/b", "bad topic")
        );
        assert_eq!(v.payload_bytes, 600);
        assert_eq!(v.payload, format!("{}…", "é".repeat(PAYLOAD_SHOWN / 2)));
        let v = DeadLetterView::new(8, 42, b"\xff\x00garbage", "cannot decode");
        assert_eq!(v.topic, "");
        assert_eq!(v.payload_bytes, 9);
    }

    #[test]
    fn put_keeps_what_it_writes_dated_by_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = DeadLetters::open(dir.path(), "broker").unwrap();
        dead.set_fsync(false);
        let clock = crate::clock::ManualClock::new(5_000);
        let ring = dead.keep_recent(Arc::new(clock));
        dead.put(3, 1_000, &record("x/y", b"{}"), "too large")
            .unwrap();
        let list = ring.list();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].seq, list[0].time_ms), (3, 5_000));
        assert_eq!(list[0].payload, "{}");
        assert_eq!(dead.count(), 1);
    }
}
