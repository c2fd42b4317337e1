//! Power cuts, simulated with LazyFS: a FUSE file system that keeps unsynced writes in its own
//! page cache and drops them on `lazyfs::clear-cache`, as a power failure drops the kernel's.
//!
//! Each cut: a relay runs on `data_dir` inside LazyFS under load (its destination down, or up
//! so that acknowledgements, segment reclamation and rotation happen too); at a random moment
//! the test reads `edgerelay_outbox_durable_total`, kills the relay (SIGKILL) and at once
//! drops every write that was not synced. At the end a relay with the destination up must
//! deliver every record the counters promised, in order, with no wrong data. A second
//! destination `dl` on the same broker takes every padded event, with a `max_packet_size` that
//! every twentieth (padded) event exceeds: when it is up, cuts also fall while deliveries are
//! dead-lettered, and every padded event it counted durable must end in its dead-letter file.
//! With `fsync = false` the same run reports how much was lost.
//!
//! LazyFS is built by `scripts/lazyfs.sh` into `target/lazyfs` from `../shared/lazyfs`; where
//! it or `/dev/fuse` is missing, the tests say so and pass without running.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mosquitto, RelayProcess, Subscriber, free_port, numbered};
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};
use rand::Rng;

const T: Duration = Duration::from_secs(60);

/// A LazyFS mount owned by one test.
struct LazyFs {
    dir: tempfile::TempDir,
    child: Child,
}

impl LazyFs {
    fn binary() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lazyfs/lazyfs/build/lazyfs")
    }

    /// `None`, with the reason printed, where LazyFS or FUSE is not available.
    fn mount() -> Option<LazyFs> {
        let bin = Self::binary();
        if !bin.exists() {
            eprintln!(
                "SKIPPED: no LazyFS at {} (scripts/lazyfs.sh builds it from ../shared/lazyfs)",
                bin.display()
            );
            return None;
        }
        if !Path::new("/dev/fuse").exists() {
            eprintln!("SKIPPED: no /dev/fuse here: FUSE is needed for LazyFS");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (root, mnt) = (dir.path().join("root"), dir.path().join("mnt"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let cfg = dir.path().join("lazyfs.toml");
        std::fs::write(
            &cfg,
            format!(
                "[faults]\nfifo_path=\"{0}/faults.fifo\"\nfifo_path_completed=\"{0}/done.fifo\"\n\
                 [cache]\napply_eviction=false\n[cache.simple]\ncustom_size=\"512mb\"\nblocks_per_page=1\n\
                 [filesystem]\nlog_all_operations=false\nlogfile=\"{0}/lazyfs.log\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg(&mnt)
            .arg("--config-path")
            .arg(&cfg)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", root.display()))
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let fs = LazyFs { dir, child };
        let end = Instant::now() + Duration::from_secs(10);
        while !fs.mounted() || !fs.dir.path().join("faults.fifo").exists() {
            if Instant::now() > end {
                eprintln!("SKIPPED: LazyFS did not mount (is FUSE usable here, as root?)");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(fs)
    }

    fn mounted(&self) -> bool {
        let mnt = self.path().display().to_string();
        std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(mnt.as_str()))
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Drops every unsynced write and returns once LazyFS says it is done.
    fn clear_cache(&self) {
        // LazyFS answers on the "completed" FIFO only if a reader holds it open at that moment
        // (else it logs "failed to write to notifier fifo"): open it first, read and write so
        // that the open does not wait for LazyFS.
        let mut done = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.path().join("done.fifo"))
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.path().join("faults.fifo"))
            .unwrap()
            .write_all(b"lazyfs::clear-cache\n")
            .unwrap();
        let mut s = Vec::new();
        let mut buf = [0; 256];
        while !String::from_utf8_lossy(&s).contains("finished::clear-cache") {
            let k = done.read(&mut buf).unwrap();
            s.extend_from_slice(&buf[..k]);
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every twentieth event carries 1,100 bytes of padding: more than `dl`'s `max_packet_size`.
const PAD_EVERY: u64 = 20;
/// Bytes of padding: with the rest of the delivery, over 1 KiB.
const PAD: usize = 1100;

/// Event `n` as the load emits it: padded when `n` is a multiple of [`PAD_EVERY`].
fn event(n: u64) -> edgerelay::sources::emulator::Notification {
    let mut e = numbered(n);
    if n.is_multiple_of(PAD_EVERY) {
        e.data.push(("pad".into(), "x".repeat(PAD)));
    }
    e
}

/// The relay's config: camera `lobby` → destination `dest` at `url`, payload the event's `n`,
/// and the padded events → `dl` at `url` too, payload `n` and the padding (dead-lettered):
/// `dl`'s k-th record of a run is its event `base + k * PAD_EVERY`.
/// `max_bytes` of 4 MiB makes 1 MiB segments: runs rotate and reclaim segments, and the
/// backlog of two runs with the destination down still fits (nothing is dropped).
fn config(emu: &Emulator, data: &Path, url: &str, fsync: bool) -> String {
    format!(
        r#"[relay]
data_dir = "{}"
http = "{{http}}"
status_topic = ""
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
[destination.dest]
kind = "mqtt"
url = "{url}"
client_id = "power-cut"
availability_topic = ""
buffer = {{ max_bytes = "4MiB", fsync = {fsync} }}
[destination.dl]
kind = "mqtt"
url = "{url}"
client_id = "power-cut-dl"
availability_topic = ""
max_packet_size = "1KiB"
buffer = {{ max_bytes = "4MiB", fsync = {fsync} }}
[[rule]]
name = "load"
to = ["dest"]
mqtt_topic = "cut/{{camera}}"
payload = "{{data.n}}"
[[rule]]
name = "dead-letter"
to = ["dl"]
when = "$.message.data.pad"
mqtt_topic = "dl/{{camera}}"
payload = "{{data.n}} {{data.pad}}"
"#,
        data.display(),
        emu.base_url(),
    )
}

/// `name{label}` from the relay's `/metrics`.
async fn metric(relay: &RelayProcess, name: &str, label: &str) -> Option<u64> {
    let text = reqwest::get(format!("{}/metrics", relay.http))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name}{{{label}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_ready(relay: &RelayProcess) {
    let end = Instant::now() + T;
    loop {
        if let Ok(r) = reqwest::get(format!("{}/readyz", relay.http)).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < end, "relay never ready:\n{}", relay.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one run promised before its cut.
struct Cut {
    /// First event number of the run; its k-th record is event `base + k`.
    base: u64,
    /// Events emitted.
    emitted: u64,
    /// Records the counter said were safe when the power went: durable (fsync) or accepted.
    promised: u64,
    /// The same for destination `dl` (fsync only; else 0).
    promised_dl: u64,
}

/// Runs `cuts` power cuts under load and then delivers everything; returns the cuts and the
/// set of event numbers that arrived.
async fn power_cuts(fs: &LazyFs, cuts: usize, fsync: bool) -> (Vec<Cut>, HashSet<u64>, usize) {
    let data = fs
        .path()
        .join(if fsync { "data-fsync" } else { "data-nofsync" });
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "cut/#").await;
    let down = format!("mqtt://127.0.0.1:{}", free_port());
    let mut rng = rand::rng();
    let mut done = Vec::new();
    let mut got = Vec::new();
    let mut base = 0;
    for k in 0..cuts {
        // Every third run has its destination up: acks, reclamation and rotation under the cut.
        let up = k % 3 == 2;
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let url = if up { broker.url() } else { down.clone() };
        let mut relay = RelayProcess::start(&config(&emu, &data, &url, fsync));
        assert!(
            emu.wait_for_clients(1, T).await,
            "run {k} did not start:\n{}",
            relay.log()
        );
        wait_ready(&relay).await;
        // Load until after the cut: the counter is read and the power cut while events arrive.
        let emu = std::sync::Arc::new(emu);
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        let load = tokio::spawn({
            let (emu, sent) = (emu.clone(), sent.clone());
            async move {
                loop {
                    for _ in 0..40 {
                        emu.emit(&event(base + sent.load(Ordering::Relaxed)));
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..900))).await;
        let promised = if fsync {
            metric(
                &relay,
                "edgerelay_outbox_durable_total",
                r#"destination="dest""#,
            )
            .await
        } else {
            // Nothing is synced: what was accepted is the most that could survive.
            metric(
                &relay,
                "edgerelay_source_events_received_total",
                r#"camera="lobby""#,
            )
            .await
        }
        .unwrap_or_else(|| panic!("no counter:\n{}", relay.log()));
        let promised_dl = if fsync {
            metric(
                &relay,
                "edgerelay_outbox_durable_total",
                r#"destination="dl""#,
            )
            .await
            .unwrap_or_else(|| panic!("no counter:\n{}", relay.log()))
        } else {
            0
        };
        for d in ["dest", "dl"] {
            let dropped = metric(
                &relay,
                "edgerelay_outbox_dropped_full_total",
                &format!(r#"destination="{d}""#),
            )
            .await;
            assert_eq!(dropped, Some(0), "the test must not fill {d}'s buffer");
        }
        // The cut: kill the relay and at once drop everything not synced (LazyFS stalls on a
        // clear while a stopped process has requests in it, so the kill comes first; what the
        // relay wrote but never synced is dropped all the same).
        relay.kill9();
        fs.clear_cache();
        load.abort();
        let _ = load.await;
        let n = sent.load(Ordering::Relaxed);
        while let Some(m) = sub.try_next(Duration::ZERO).await {
            got.push(m.payload.parse::<u64>().unwrap());
        }
        done.push(Cut {
            base,
            emitted: n,
            promised,
            promised_dl,
        });
        base += 1_000_000;
    }
    // Power back, destination up: everything promised arrives.
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let relay = RelayProcess::start(&config(&emu, &data, &broker.url(), fsync));
    wait_ready(&relay).await;
    let end = Instant::now() + T;
    loop {
        let depth = metric(&relay, "edgerelay_outbox_depth", r#"destination="dest""#).await;
        let depth_dl = metric(&relay, "edgerelay_outbox_depth", r#"destination="dl""#).await;
        while let Some(m) = sub.try_next(Duration::from_millis(20)).await {
            got.push(m.payload.parse::<u64>().unwrap());
        }
        if depth == Some(0) && depth_dl == Some(0) {
            // The last acknowledged deliveries are in the subscriber's queue by now.
            while let Some(m) = sub.try_next(Duration::from_millis(300)).await {
                got.push(m.payload.parse::<u64>().unwrap());
            }
            break;
        }
        assert!(
            Instant::now() < end,
            "backlog never drained:\n{}",
            relay.log()
        );
    }
    // No wrong data: every payload is an event that was emitted, and first arrivals keep order.
    let mut seen = HashSet::new();
    let mut last = None;
    for &n in &got {
        let c = &done[(n / 1_000_000) as usize];
        assert!(n - c.base < c.emitted, "event {n} was never emitted");
        if seen.insert(n) {
            assert!(last < Some(n), "{n} arrived after {last:?}");
            last = Some(n);
        }
    }
    let log = relay.log();
    assert!(!log.contains("panicked"), "{log}");
    let duplicates = got.len() - seen.len();
    if fsync {
        check_dead_letters(&data.join("dead-letter/dl.ndjson"), &done);
    }
    (done, seen, duplicates)
}

/// Every line of `dl`'s dead-letter file is whole and names an emitted padded event, and
/// every padded event `dl` counted durable before a cut is there.
fn check_dead_letters(path: &Path, cuts: &[Cut]) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lettered = HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("torn or wrong dead letter {line:?}: {e}"));
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("max_packet_size"),
            "{v}"
        );
        let record = common::dead_letter_record(&v);
        let text = String::from_utf8_lossy(&record);
        let pad = "x".repeat(PAD);
        let at = text
            .find(&pad)
            .unwrap_or_else(|| panic!("no padding in {text:?}"));
        let digits: String = text[..at - 1]
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let n: u64 = digits.parse().unwrap();
        let c = &cuts[(n / 1_000_000) as usize];
        assert!(
            n.is_multiple_of(PAD_EVERY) && n - c.base < c.emitted,
            "event {n} was never emitted padded"
        );
        lettered.insert(n);
    }
    let mut promised = 0;
    for (k, c) in cuts.iter().enumerate() {
        for i in (0..c.promised_dl).map(|k| k * PAD_EVERY) {
            assert!(
                lettered.contains(&(c.base + i)),
                "cut {k}: padded event {i} of {} counted durable on dl was never dead-lettered",
                c.promised_dl
            );
            promised += 1;
        }
    }
    eprintln!(
        "dead letters: {} padded events counted durable on dl before the cuts, all in the dead-letter file ({} lines)",
        promised,
        text.lines().count()
    );
    assert!(promised > 0, "no cut fell while padded events were queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_power_cuts_under_load_lose_nothing_counted_durable() {
    let Some(fs) = LazyFs::mount() else { return };
    let t = Instant::now();
    let (cuts, seen, duplicates) = power_cuts(&fs, 20, true).await;
    let mut promised = 0;
    for (k, c) in cuts.iter().enumerate() {
        for i in 0..c.promised {
            assert!(
                seen.contains(&(c.base + i)),
                "cut {k}: event {} of {} counted durable never arrived",
                i,
                c.promised
            );
        }
        promised += c.promised;
    }
    let emitted: u64 = cuts.iter().map(|c| c.emitted).sum();
    eprintln!(
        "fsync = true: {} cuts under load, {emitted} events emitted, {promised} counted durable before the cuts, all delivered; {} delivered in all, {duplicates} twice ({:.1} s)",
        cuts.len(),
        seen.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(promised > 0, "the runs never made anything durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_a_power_cut_loses_accepted_events_but_never_returns_wrong_data() {
    let Some(fs) = LazyFs::mount() else { return };
    let (cuts, seen, _) = power_cuts(&fs, 5, false).await;
    let accepted: u64 = cuts.iter().map(|c| c.promised).sum();
    let kept = cuts
        .iter()
        .map(|c| {
            (0..c.promised)
                .filter(|i| seen.contains(&(c.base + i)))
                .count() as u64
        })
        .sum::<u64>();
    eprintln!(
        "fsync = false: {} cuts, {accepted} events accepted before the cuts, {} lost ({:.1} %)",
        cuts.len(),
        accepted - kept,
        100.0 * (accepted - kept) as f64 / accepted.max(1) as f64
    );
    assert!(accepted > 0);
}
