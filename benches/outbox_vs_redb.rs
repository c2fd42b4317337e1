//! Why the outbox is a segmented log and not redb (DESIGN.md §8 named redb): the same
//! workload on both. `cargo bench --bench outbox_vs_redb` prints the table.
//!
//! redb 4 has two durabilities: `Immediate` (fsync per commit, the only one that survives a
//! killed process) and `None` (kept in memory until a later durable commit: lost on kill -9).
//! The log is kill-9-safe without fsync and power-loss-safe with one fdatasync per batch.

use std::path::Path;
use std::time::Instant;

use edgerelay::outbox::{Outbox, OutboxOptions};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
const N: u64 = 100_000;
const BATCH: u64 = 100;
const RECORD: usize = 200;
const ROUNDS: usize = 5;

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        dir_bytes(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// (appends/s, drains/s, bytes on disk after ROUNDS fill-and-drain cycles)
fn log_run(fsync: bool) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut o, _) = Outbox::open(
        dir.path(),
        OutboxOptions {
            fsync,
            ..Default::default()
        },
    )
    .unwrap();
    let rec = vec![7u8; RECORD];
    let batch: Vec<&[u8]> = (0..BATCH).map(|_| rec.as_slice()).collect();
    let (mut append_s, mut drain_s) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..N / BATCH {
            o.append(&batch, 0).unwrap();
        }
        append_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        loop {
            let e = o.read(0, 256).unwrap();
            let Some(last) = e.last() else { break };
            o.ack_through(last.seq).unwrap();
        }
        drain_s += t.elapsed().as_secs_f64();
    }
    let total = (N as usize * ROUNDS) as f64;
    (total / append_s, total / drain_s, dir_bytes(dir.path()))
}

fn redb_run(durability: Durability) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let db = Database::create(&path).unwrap();
    let rec = vec![7u8; RECORD];
    let (mut seq, mut head) = (0u64, 0u64);
    let (mut append_s, mut drain_s) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..N / BATCH {
            let mut tx = db.begin_write().unwrap();
            tx.set_durability(durability).unwrap();
            {
                let mut table = tx.open_table(QUEUE).unwrap();
                for _ in 0..BATCH {
                    table.insert(seq, rec.as_slice()).unwrap();
                    seq += 1;
                }
            }
            tx.commit().unwrap();
        }
        append_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        while head < seq {
            let end = (head + 256).min(seq);
            {
                let rtx = db.begin_read().unwrap();
                let table = rtx.open_table(QUEUE).unwrap();
                let n = table.range(head..end).unwrap().count();
                assert_eq!(n as u64, end - head);
            }
            let mut tx = db.begin_write().unwrap();
            tx.set_durability(durability).unwrap();
            {
                let mut table = tx.open_table(QUEUE).unwrap();
                table.retain_in(head..end, |_, _| false).unwrap();
            }
            tx.commit().unwrap();
            head = end;
        }
        drain_s += t.elapsed().as_secs_f64();
    }
    // A last durable commit, so `None` runs are measured with their pages freed too.
    let mut tx = db.begin_write().unwrap();
    tx.set_durability(Durability::Immediate).unwrap();
    tx.commit().unwrap();
    drop(db);
    let total = (N as usize * ROUNDS) as f64;
    (
        total / append_s,
        total / drain_s,
        std::fs::metadata(&path).unwrap().len(),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // built by `cargo test --all-targets`; nothing to run there
    }
    println!(
        "{ROUNDS} rounds of: append {N} records of {RECORD} bytes in batches of {BATCH}, then drain them all\n"
    );
    println!(
        "| store | survives kill -9 | survives power loss | appends/s | drains/s | disk after drain |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, k9: &str, pl: &str, (a, d, b): (f64, f64, u64)| {
        println!(
            "| {name} | {k9} | {pl} | {:.0} | {:.0} | {:.1} MiB |",
            a,
            d,
            b as f64 / 1048576.0
        );
    };
    row("edgerelay log, fsync off", "yes", "no", log_run(false));
    row("edgerelay log, fsync on", "yes", "yes", log_run(true));
    row(
        "redb 4, Durability::Immediate",
        "yes",
        "yes",
        redb_run(Durability::Immediate),
    );
    row(
        "redb 4, Durability::None",
        "no",
        "no",
        redb_run(Durability::None),
    );
}
