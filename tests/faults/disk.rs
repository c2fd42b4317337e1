//! Disk faults: `data_dir` on a small tmpfs (mounted here, as root) that fills while one
//! destination is down, or is filled from outside. The destination that is up must keep
//! receiving every event; what the full disk costs is counted per destination.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgerelay::sources::emulator::{Emulator, EmulatorConfig, Notification};

use crate::common::{Mosquitto, RelayProcess, Subscriber, free_port, numbered};

const T: Duration = Duration::from_secs(60);

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is impossible: not root, no tmpfs.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// An event numbered `n` whose default (axis) payload is about 1.6 KB.
fn padded(n: u64) -> Notification {
    let mut e = numbered(n);
    e.data.push(("pad".into(), "x".repeat(1500)));
    e
}

/// Camera `lobby` → `up` (small payload `n`, topic `load/lobby`) and → `down` (the padded
/// default payload), `data_dir` at `data`.
fn config(emu: &Emulator, up: &Mosquitto, data: &Path, down_buffer: &str) -> String {
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
[destination.up]
kind = "mqtt"
url = "{}"
client_id = "disk-up"
availability_topic = ""
[destination.down]
kind = "mqtt"
url = "mqtt://127.0.0.1:{}"
client_id = "disk-down"
availability_topic = ""
buffer = {down_buffer}
[[rule]]
name = "small"
to = ["up"]
mqtt_topic = "load/{{camera}}"
payload = "{{data.n}}"
[[rule]]
name = "big"
to = ["down"]
"#,
        data.display(),
        emu.base_url(),
        up.url(),
        free_port(),
    )
}

async fn get(relay: &RelayProcess, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("{}{path}", relay.http)).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `name{destination="dest"}` (or `camera=` for a source metric) from `/metrics`.
async fn metric(relay: &RelayProcess, name: &str, dest: &str) -> u64 {
    let (_, text) = get(relay, "/metrics").await;
    let label = if name.starts_with("edgerelay_source") {
        "camera"
    } else {
        "destination"
    };
    let prefix = format!("{name}{{{label}=\"{dest}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

/// Receives `load/lobby` payloads until `want` arrived (in order, each once); panics on a gap.
async fn expect_in_order(sub: &mut Subscriber, want: std::ops::Range<u64>, relay: &RelayProcess) {
    let mut next = want.start;
    while next < want.end {
        let m = tokio::time::timeout(T, sub.next_event(T))
            .await
            .unwrap_or_else(|_| panic!("stuck at {next}:\n{}", relay.log()));
        let n: u64 = m.payload.parse().unwrap();
        // A resend after a reconnect repeats, never skips.
        assert!(n <= next, "event {next} missing (got {n})");
        if n == next {
            next += 1;
        }
    }
}

/// Fills a 24 MiB `data_dir` through the `down` destination with ~35 MB of events.
async fn fill_while_one_destination_is_down(down_buffer: &str) -> Option<(RelayProcess, Tmpfs)> {
    let fs = Tmpfs::mount("24m")?;
    let data: PathBuf = fs.path().join("data");
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let relay = RelayProcess::start(&config(&emu, &broker, &data, down_buffer));
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    const N: u64 = 22_000;
    for n in 0..N {
        emu.emit(&padded(n));
        if n % 500 == 499 {
            // Let the relay keep up a little; the disk fills all the same.
            tokio::task::yield_now().await;
        }
    }
    expect_in_order(&mut sub, 0..N, &relay).await;
    assert_eq!(
        metric(&relay, "edgerelay_outbox_write_errors_total", "up").await,
        0
    );
    let free = edgerelay::outbox::free_bytes(&data).unwrap();
    assert!(free > 0, "the disk was left full");
    // Said at start, with the numbers.
    assert!(
        relay
            .log()
            .contains("add up to more than data_dir has free"),
        "{}",
        relay.log()
    );
    drop(emu);
    Some((relay, fs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_a_destination_that_is_down_drops_its_oldest_and_the_other_keeps_receiving()
 {
    let Some((relay, _fs)) =
        fill_while_one_destination_is_down(r#"{ max_bytes = "1GiB", when_full = "drop_oldest" }"#)
            .await
    else {
        return;
    };
    // The full disk counted as a full buffer for `down`: it dropped its oldest, nothing failed.
    assert!(metric(&relay, "edgerelay_outbox_dropped_full_total", "down").await > 0);
    assert_eq!(
        metric(&relay, "edgerelay_outbox_write_errors_total", "down").await,
        0
    );
    assert_eq!(get(&relay, "/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_a_destination_that_is_down_refuses_its_new_deliveries_under_reject_new() {
    let Some((relay, _fs)) =
        fill_while_one_destination_is_down(r#"{ max_bytes = "1GiB", when_full = "reject_new" }"#)
            .await
    else {
        return;
    };
    assert!(metric(&relay, "edgerelay_outbox_rejected_total", "down").await > 0);
    assert_eq!(
        metric(&relay, "edgerelay_outbox_dropped_full_total", "down").await,
        0
    );
}

/// The disk filled by someone else: every write fails. The refused deliveries are counted
/// exactly, `/readyz` names the destination, and once there is room again delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_and_counts_deliveries_readyz_says_so_and_delivery_resumes() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let data = fs.path().join("data");
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let relay = RelayProcess::start(&config(&emu, &broker, &data, r#"{ max_bytes = "1MiB" }"#));
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    emu.emit(&numbered(0));
    expect_in_order(&mut sub, 0..1, &relay).await;
    // Fill the file system to the last byte.
    let filler = fs.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    assert_eq!(edgerelay::outbox::free_bytes(fs.path()), Some(0));
    // Until the outbox's last page is used up some may still fit: count both ways.
    const FULL: u64 = 200;
    for n in 1..=FULL {
        emu.emit(&padded(n));
    }
    // Every one of them is either refused (counted) or accepted and delivered.
    let end = Instant::now() + T;
    let delivered = loop {
        let refused = metric(&relay, "edgerelay_outbox_write_errors_total", "up").await;
        let acked = metric(&relay, "edgerelay_deliveries_acked_total", "up").await;
        if refused > 0 && refused + acked - 1 == FULL {
            break acked - 1;
        }
        assert!(
            Instant::now() < end,
            "refused {refused}, acked {acked}:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, body) = get(&relay, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("destination up: outbox cannot be written"),
        "{body}"
    );
    assert!(relay.log().contains("cannot write the outbox"));
    let mut got = Vec::new();
    while (got.len() as u64) < delivered {
        let n: u64 = sub.next_event(T).await.payload.parse().unwrap();
        assert!((1..=FULL).contains(&n), "{n}");
        got.push(n);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    // Room again: the next events are accepted and delivered, and /readyz is ready.
    std::fs::remove_file(&filler).unwrap();
    emu.emit(&numbered(1000));
    let m = sub.next_event(T).await;
    assert_eq!(m.payload, "1000");
    assert_eq!(get(&relay, "/readyz").await.0, 200);
    assert!(relay.log().contains("outbox writable again"));
}

/// Less queued than the room an outbox leaves for others, and the disk filled from outside:
/// the next write meets `ENOSPC`, and under `drop_oldest` that counts as full: the outbox
/// drops its oldest segment and the write goes through. Nothing is counted as a write error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_under_drop_oldest_drops_the_oldest_segment_and_the_write_goes_through() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let data = fs.path().join("data");
    let broker = Mosquitto::start().await;
    let mut sub = Subscriber::connect(broker.port, "load/#").await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    // 2 MiB segments: ~1,300 padded events fill one.
    let relay = RelayProcess::start(&config(
        &emu,
        &broker,
        &data,
        r#"{ max_bytes = "8MiB", when_full = "drop_oldest" }"#,
    ));
    assert!(emu.wait_for_clients(1, T).await, "{}", relay.log());
    for n in 0..1800 {
        emu.emit(&padded(n));
    }
    expect_in_order(&mut sub, 0..1800, &relay).await;
    let queued = metric(&relay, "edgerelay_outbox_bytes", "down").await;
    assert!(queued > 2 << 20, "{queued}");
    let filler = fs.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    assert_eq!(edgerelay::outbox::free_bytes(fs.path()), Some(0));
    for n in 1800..1900 {
        emu.emit(&padded(n));
    }
    let end = Instant::now() + T;
    while metric(&relay, "edgerelay_outbox_dropped_full_total", "down").await == 0 {
        assert!(Instant::now() < end, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&relay, "edgerelay_outbox_write_errors_total", "down").await,
        0,
        "{}",
        relay.log()
    );
    // The room it freed lets the other destination write again.
    emu.emit(&numbered(5000));
    loop {
        let n: u64 = sub.next_event(T).await.payload.parse().unwrap();
        if n == 5000 {
            break;
        }
    }
}

/// Two relays never share a `data_dir` (rule state, outboxes): the second refuses to start
/// and says why, even when their destinations differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_on_the_same_data_dir_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = |dest: &str| {
        format!(
            "[relay]\ndata_dir = \"{}\"\n[[camera]]\nname = \"lobby\"\nurl = \"{}\"\nusername = \"bridge\"\npassword = \"fixture-pass\"\n[destination.{dest}]\nkind = \"mqtt\"\nurl = \"{}\"\n[[rule]]\nname = \"all\"\nto = [\"{dest}\"]\n",
            data.path().display(),
            emu.base_url(),
            broker.url()
        )
    };
    let first = RelayProcess::start(&cfg("a"));
    assert!(emu.wait_for_clients(1, T).await, "{}", first.log());
    let second = RelayProcess::start(&cfg("b"));
    second.wait_for_log("is in use by another relay", T).await;
    // The first one goes on.
    assert!(!first.log().contains("in use by another relay"));
    assert_eq!(emu.connected_clients(), 1);
}
