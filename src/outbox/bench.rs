//! `edgerelay bench`: append then drain rate of an outbox on this disk.

use std::path::Path;
use std::time::Instant;

use super::{Outbox, OutboxError, OutboxOptions, WhenFull};

/// Records per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchResult {
    /// Appending `n` records in batches of `batch`.
    pub appends_per_s: f64,
    /// Reading them back in batches of `batch`, acknowledging each batch.
    pub drains_per_s: f64,
}

/// Appends `n` records of `record_len` bytes in batches of `batch` to a fresh outbox in `dir`,
/// then reads and acknowledges them all. `dir` should be empty; it is left with the outbox.
pub fn bench(
    dir: &Path,
    n: usize,
    record_len: usize,
    fsync: bool,
    batch: usize,
) -> Result<BenchResult, OutboxError> {
    let batch = batch.max(1);
    let opts = OutboxOptions {
        max_bytes: u64::MAX / 2,
        when_full: WhenFull::RejectNew,
        fsync,
        ..OutboxOptions::default()
    };
    let (mut ob, _) = Outbox::open(dir, opts)?;
    let record = vec![0x5a; record_len];
    let records: Vec<&[u8]> = vec![&record[..]; batch];

    let t = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        ob.append(&records[..k], 0)?;
        left -= k;
    }
    let append_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut drained = 0;
    while drained < n {
        let got = ob.read(0, batch)?;
        let Some(last) = got.last() else { break };
        ob.ack_through(last.seq)?;
        drained += got.len();
    }
    let drain_s = t.elapsed().as_secs_f64();

    Ok(BenchResult {
        appends_per_s: n as f64 / append_s.max(1e-9),
        drains_per_s: drained as f64 / drain_s.max(1e-9),
    })
}
