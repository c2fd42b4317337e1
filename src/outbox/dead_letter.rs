//! Records that can never be delivered: one NDJSON file per destination, appended to, never
//! rewritten. `<dir>/dead-letter/<name>.ndjson`, one line per record:
//! `{"seq":..,"time_ms":..,"reason":"..","record_b64":".."}` (standard base64 of the stored record).
//!
//! A sink acknowledges a dead-lettered record right after [`DeadLetters::put`]; with `fsync`
//! (the destination's `buffer.fsync`) the line is synced before `put` returns, so a power cut
//! cannot keep the acknowledgement and lose the line. Dead letters are rare: the sync is
//! affordable where it runs.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The dead-letter file of one destination.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    file: File,
    count: u64,
    fsync: bool,
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
        })
    }

    /// Whether each line is synced before [`DeadLetters::put`] returns (default on).
    pub fn set_fsync(&mut self, on: bool) {
        self.fsync = on;
    }

    /// Appends one line with a single `write(2)`.
    pub fn put(&mut self, seq: u64, time_ms: i64, record: &[u8], reason: &str) -> io::Result<()> {
        let line = serde_json::json!({
            "seq": seq,
            "time_ms": time_ms,
            "reason": reason,
            "record_b64": base64::engine::general_purpose::STANDARD.encode(record),
        });
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
