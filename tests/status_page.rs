//! `/status` as a person sees it: the real relay binary, Mosquitto and the emulator camera, the
//! page rendered by headless Chromium (Debian package `chromium`; scripts/test.sh installs it).
//! Every figure the rendered page shows under a `data-metric` column must equal the `/metrics`
//! sample of the same name, once with everything delivered and once with a backlog and drops.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Mosquitto, RelayProcess, Subscriber, load_config, numbered};
use edgerelay::delivery::Delivery;
use edgerelay::observe::status_page::utc;
use edgerelay::sources::emulator::{Emulator, EmulatorConfig};

const T: Duration = Duration::from_secs(15);
/// Bytes of an outbox record around its data (see tests/outbox_limits.rs).
const FRAME_HEADER: usize = 24;
/// The destination's password, given to the relay only through `${STATUS_MQTT_PASSWORD}`.
const SECRET: &str = "status-Secr3t-5c2e";

/// The Chromium binary: `$CHROMIUM`, else the Debian package's launcher.
fn chromium_bin() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// Runs headless Chromium on `url` with `args` (own profile directory); its stdout.
async fn chromium(url: &str, args: &[&str]) -> String {
    let bin = chromium_bin();
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(&bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} {url}: no answer within 20 s", bin.display()))
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (scripts/test.sh installs the Debian package chromium)",
                bin.display()
            )
        });
    assert!(
        out.status.success(),
        "{} {args:?} {url}: {:?}\n{}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of `name{label}` in Prometheus text.
fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    let prefix = format!("{name}{{{label}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// `/metrics` now.
async fn scrape(relay: &RelayProcess) -> String {
    let resp = reqwest::get(format!("{}/metrics", relay.http))
        .await
        .expect("/metrics");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

/// Polls `/metrics` until `done` holds for it, with a deadline; returns that scrape.
async fn wait_metrics(relay: &RelayProcess, what: &str, done: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + T;
    let mut last = String::new();
    loop {
        if let Ok(r) = reqwest::get(format!("{}/metrics", relay.http)).await
            && let Ok(body) = r.text().await
        {
            if done(&body) {
                return body;
            }
            last = body;
        }
        assert!(
            Instant::now() < end,
            "/metrics: never {what}; last:\n{last}\nlog:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The text between `>` and the closing tag of each `<{tag}` cell in `row`, with its
/// `data-metric` attribute if any.
fn cells(row: &str, tag: &str) -> Vec<(Option<String>, String)> {
    row.split(&format!("<{tag}"))
        .skip(1)
        .map(|c| {
            let (attrs, rest) = c.split_once('>').expect(row);
            let metric = attrs
                .split_once("data-metric=\"")
                .map(|(_, m)| m.split('"').next().unwrap().to_string());
            let text = rest.split(&format!("</{tag}>")).next().unwrap();
            (metric, text.replace("&amp;", "&"))
        })
        .collect()
}

/// The figures the rendered page shows in the row `<tr {attr}="{name}">`, by the
/// `data-metric` of their column header.
fn shown(dom: &str, attr: &str, name: &str) -> BTreeMap<String, String> {
    let start = dom
        .find(&format!("<tr {attr}=\"{name}\""))
        .unwrap_or_else(|| panic!("no {attr}={name} row in the rendered page:\n{dom}"));
    let row = &dom[start..start + dom[start..].find("</tr>").unwrap()];
    let table = dom[..start].rfind("<table").unwrap();
    let head_start = table + dom[table..].find("<tr").unwrap();
    let head = &dom[head_start..head_start + dom[head_start..].find("</tr>").unwrap()];
    let heads = cells(head, "th");
    let values = cells(row, "td");
    assert_eq!(heads.len(), values.len(), "{head}\n{row}");
    heads
        .into_iter()
        .zip(values)
        .filter_map(|((m, _), (_, v))| Some((m?, v)))
        .collect()
}

/// Asserts each figure shown equals its sample in `before` (and `after`, the same state read
/// again after the page; only an age may have grown in between). Returns how many it checked.
fn compare(shown: &BTreeMap<String, String>, label: &str, before: &str, after: &str) -> usize {
    for (name, text) in shown {
        let b = metric(before, name, label).unwrap_or_else(|| panic!("no {name}{{{label}}}"));
        let a = metric(after, name, label).unwrap();
        let ctx = format!("{name}{{{label}}}: page shows {text:?}, /metrics {b} then {a}");
        if name.ends_with("_age_seconds") {
            if text == "-" {
                assert_eq!((b, a), (0.0, 0.0), "{ctx}");
            } else {
                let s: f64 = text.strip_suffix(" s").expect(&ctx).parse().expect(&ctx);
                assert!(b > 0.0 && b.floor() <= s && s <= a.ceil(), "{ctx}");
            }
            continue;
        }
        assert_eq!(b, a, "the state moved while the page was read: {ctx}");
        let want = match name.as_str() {
            "edgerelay_source_state" => match text.split(':').next().unwrap() {
                "connecting" => 0.0,
                "streaming" => 1.0,
                "retrying" => 2.0,
                other => panic!("unknown state {other:?}: {ctx}"),
            },
            "edgerelay_destination_connected" => match text.as_str() {
                "connected" => 1.0,
                "not connected" => 0.0,
                other => panic!("unknown state {other:?}: {ctx}"),
            },
            "edgerelay_source_last_event_timestamp_seconds" => {
                if text == "never" {
                    0.0
                } else {
                    // `YYYY-MM-DD HH:MM:SS UTC (N s ago)`: the second of the sample.
                    let at = utc(b.floor() as i64 * 1000);
                    assert!(text.starts_with(&format!("{at} (")), "{ctx}");
                    b
                }
            }
            _ => text.parse().expect(&ctx),
        };
        assert_eq!(want, b, "{ctx}");
    }
    shown.len()
}

/// Renders `/status` in Chromium between two scrapes and compares every figure it shows.
async fn page_matches_metrics(relay: &RelayProcess) -> String {
    let before = scrape(relay).await;
    let dom = chromium(&format!("{}/status", relay.http), &["--dump-dom"]).await;
    let after = scrape(relay).await;
    assert!(dom.contains("<h1>edgerelay</h1>"), "{dom}");
    let cam = shown(&dom, "data-camera", "lobby");
    let dest = shown(&dom, "data-destination", "broker");
    assert_eq!(compare(&cam, r#"camera="lobby""#, &before, &after), 5);
    assert_eq!(
        compare(&dest, r#"destination="broker""#, &before, &after),
        12
    );
    assert!(!dom.contains(SECRET), "the page shows the password:\n{dom}");
    dom
}

/// Waits for `/metrics` to show exactly these destination samples.
async fn wait_destination(relay: &RelayProcess, want: &[(&str, f64)]) -> String {
    let label = r#"destination="broker""#;
    wait_metrics(relay, &format!("{want:?}"), |m| {
        want.iter().all(|(n, v)| metric(m, n, label) == Some(*v))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_rendered_in_chromium_shows_what_metrics_say() {
    assert!(
        Path::new(&chromium_bin()).exists(),
        "{} missing: scripts/test.sh installs the Debian package chromium",
        chromium_bin().display()
    );
    let started = Instant::now();
    let mut broker = Mosquitto::start_with_users(&[("relay", SECRET), ("watcher", "w")]).await;
    let mut sub = Subscriber::connect_as(broker.port, "load/#", Some(("watcher", "w"))).await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    // Ten records fill the outbox: the backlog below drops the oldest.
    let record = Delivery {
        topic: "load/lobby".into(),
        payload: b"20".to_vec(),
        qos: 1,
        retain: false,
        created_ms: 0,
        camera: "lobby".into(),
    };
    let ten_records = 10 * (FRAME_HEADER + record.encode().len());
    let dest = format!(
        "username = \"relay\"\npassword = \"${{STATUS_MQTT_PASSWORD}}\"\nbuffer = {{ max_bytes = \"{ten_records}\", when_full = \"drop_oldest\" }}"
    );
    let cfg = load_config(&emu, &broker, &dest).replace(
        "data_dir = \"{data_dir}\"",
        "data_dir = \"{data_dir}\"\nhttp = \"{http}\"",
    );
    let relay = RelayProcess::start_with_env(&cfg, &[("STATUS_MQTT_PASSWORD", SECRET)]);
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");

    // Everything delivered: five events, all acknowledged, nothing queued.
    for n in 10..15 {
        emu.emit(&numbered(n));
    }
    for n in 10..15 {
        assert_eq!(sub.next_event(T).await.payload, n.to_string());
    }
    wait_destination(
        &relay,
        &[
            ("edgerelay_deliveries_acked_total", 5.0),
            ("edgerelay_outbox_depth", 0.0),
        ],
    )
    .await;
    page_matches_metrics(&relay).await;

    // A backlog: the broker is gone, fifteen more events, the five oldest dropped.
    broker.stop();
    wait_destination(&relay, &[("edgerelay_destination_connected", 0.0)]).await;
    for n in 20..35 {
        emu.emit(&numbered(n));
    }
    wait_destination(
        &relay,
        &[
            ("edgerelay_outbox_depth", 10.0),
            ("edgerelay_outbox_dropped_full_total", 5.0),
        ],
    )
    .await;
    let dom = page_matches_metrics(&relay).await;
    assert!(dom.contains(">not connected<"), "{dom}");

    // And a picture of that page.
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    chromium(
        &format!("{}/status", relay.http),
        &[&shot, "--window-size=1280,900"],
    )
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (1280, 900), "screenshot size");
    eprintln!(
        "screenshot {} ({} bytes); test took {:?}",
        png.display(),
        bytes.len(),
        started.elapsed()
    );
}
