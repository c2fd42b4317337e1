//! Figures measured without a broker: outbox rates, memory with a backlog.

use crate::outbox::{self, BenchResult, Outbox, OutboxOptions, WhenFull};

use super::tmp::TempDir;

/// Outbox append and drain rate in a fresh temp dir.
pub fn outbox_rates(n: usize, record_len: usize, fsync: bool) -> anyhow::Result<BenchResult> {
    let dir = TempDir::new("outbox")?;
    Ok(outbox::bench(dir.path(), n, record_len, fsync, 256)?)
}

/// This process's resident set size in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))
}

/// RSS (KiB) before, after `first` and after `total` appended records of `len` bytes, no reader.
pub fn backlog_rss(first: usize, total: usize, len: usize) -> anyhow::Result<(u64, u64, u64)> {
    let dir = TempDir::new("backlog")?;
    let opts = OutboxOptions {
        max_bytes: u64::MAX / 2,
        when_full: WhenFull::RejectNew,
        ..OutboxOptions::default()
    };
    let (mut ob, _) = Outbox::open(dir.path(), opts)?;
    let record = vec![0x5a; len];
    let batch: Vec<&[u8]> = vec![&record[..]; 256];
    let before = rss_kib()?;
    let mut written = 0;
    let mut at_first = 0;
    while written < total {
        let k = (total - written).min(batch.len()).min(if written < first {
            first - written
        } else {
            usize::MAX
        });
        ob.append(&batch[..k], 0)?.all_accepted()?;
        written += k;
        if written == first {
            at_first = rss_kib()?;
        }
    }
    let at_total = rss_kib()?;
    Ok((before, at_first, at_total))
}
