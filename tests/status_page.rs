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
            // Synced by group commit a moment after the acknowledgement may come.
            ("edgerelay_outbox_durable_total", 5.0),
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
            ("edgerelay_outbox_durable_total", 20.0),
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

/// The page's user name and password in the test below, given through `${STATUS_HTTP_PASSWORD}`.
const HTTP_USER: &str = "site";
const HTTP_PASSWORD: &str = "page-Pa55-7d1e";
/// What the `refused` destination logs in with: the broker knows no such password.
const WRONG: &str = "wrong-Pa55-0b9a";

/// GET `path` on the relay, with the page's login when `login`; status and body.
async fn get(relay: &RelayProcess, path: &str, login: bool) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", relay.http));
    if login {
        req = req.basic_auth(HTTP_USER, Some(HTTP_PASSWORD));
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// `/status.json` with the login, parsed.
async fn status_json(relay: &RelayProcess) -> serde_json::Value {
    let (code, body) = get(relay, "/status.json", true).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status.json: {e}\n{body}"))
}

/// The entry named `name` in `/status.json`'s list `list`.
fn named<'a>(json: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    json[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {json}"))
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name} in {json}"))
}

/// Polls `/status.json` until `done` holds for it; returns it.
async fn wait_json(
    relay: &RelayProcess,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let j = status_json(relay).await;
        if done(&j) {
            return j;
        }
        assert!(
            Instant::now() < end,
            "/status.json: never {what}; last:\n{j:#}\nlog:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each figure of `/status.json` equals its `/metrics` sample (read before and after it).
fn json_agrees_with_metrics(json: &serde_json::Value, before: &str, after: &str) -> usize {
    let mut checked = 0;
    let cams = [
        ("events", "edgerelay_source_events_received_total"),
        ("malformed", "edgerelay_source_malformed_frames_total"),
        ("reconnects", "edgerelay_source_reconnects_total"),
        ("state_code", "edgerelay_source_state"),
    ];
    let dests = [
        ("depth", "edgerelay_outbox_depth"),
        ("bytes", "edgerelay_outbox_bytes"),
        ("sent", "edgerelay_deliveries_sent_total"),
        ("acked", "edgerelay_deliveries_acked_total"),
        ("dead_lettered", "edgerelay_deliveries_dead_lettered_total"),
        ("dropped_full", "edgerelay_outbox_dropped_full_total"),
        ("dropped_age", "edgerelay_outbox_dropped_age_total"),
        ("rejected", "edgerelay_outbox_rejected_total"),
        ("write_errors", "edgerelay_outbox_write_errors_total"),
        ("durable", "edgerelay_outbox_durable_total"),
        ("connects", "edgerelay_destination_connects_total"),
    ];
    for (list, label, fields) in [
        ("cameras", "camera", &cams[..]),
        ("destinations", "destination", &dests[..]),
    ] {
        for entry in json[list].as_array().unwrap() {
            let name = entry["name"].as_str().unwrap();
            let label = format!("{label}=\"{name}\"");
            for (field, metric_name) in fields {
                let b = metric(before, metric_name, &label)
                    .unwrap_or_else(|| panic!("no {metric_name}{{{label}}}"));
                let a = metric(after, metric_name, &label).unwrap();
                assert_eq!(b, a, "{metric_name}{{{label}}} moved while reading");
                let j = entry[field]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{list} {name}: no number {field}: {entry}"));
                assert_eq!(j, b, "{list} {name}.{field} vs {metric_name}{{{label}}}");
                checked += 1;
            }
        }
        if list == "destinations" {
            for entry in json[list].as_array().unwrap() {
                let name = entry["name"].as_str().unwrap();
                let label = format!("destination=\"{name}\"");
                let connected = metric(before, "edgerelay_destination_connected", &label).unwrap();
                assert_eq!(
                    entry["connected"].as_bool(),
                    Some(connected == 1.0),
                    "{name}"
                );
                checked += 1;
            }
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_explains_a_refused_login_and_a_dead_letter_behind_a_password() {
    let broker = Mosquitto::start_with_users(&[("relay", SECRET), ("watcher", "w")]).await;
    let mut sub = Subscriber::connect_as(broker.port, "load/#", Some(("watcher", "w"))).await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = format!(
        r#"[relay]
data_dir = "{{data_dir}}"
http = "{{http}}"
http_username = "{HTTP_USER}"
http_password = "${{STATUS_HTTP_PASSWORD}}"
[[camera]]
name = "lobby"
url = "{}"
username = "bridge"
password = "fixture-pass"
[destination.broker]
kind = "mqtt"
availability_topic = ""
url = "{}"
client_id = "relay-status-ok"
max_packet_size = "1KiB"
username = "relay"
password = "${{STATUS_MQTT_PASSWORD}}"
[destination.refused]
kind = "mqtt"
availability_topic = ""
url = "{}"
client_id = "relay-status-refused"
username = "relay"
password = "{WRONG}"
[[rule]]
name = "load"
to = ["broker", "refused"]
mqtt_topic = "load/{{data.tag}}"
payload = "{{data.n}}"
"#,
        emu.base_url(),
        broker.url(),
        broker.url()
    );
    let relay = RelayProcess::start_with_env(
        &cfg,
        &[
            ("STATUS_MQTT_PASSWORD", SECRET),
            ("STATUS_HTTP_PASSWORD", HTTP_PASSWORD),
        ],
    );
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");

    // The password guards the status pages, never the probes nor the scrape.
    assert_eq!(get(&relay, "/status", false).await.0, 401);
    assert_eq!(get(&relay, "/status.json", false).await.0, 401);
    assert_eq!(get(&relay, "/", false).await.0, 401);
    let wrong = reqwest::Client::new()
        .get(format!("{}/status", relay.http))
        .basic_auth(HTTP_USER, Some("not-it"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(get(&relay, "/healthz", false).await.0, 200);
    assert_eq!(get(&relay, "/metrics", false).await.0, 200);
    assert_eq!(get(&relay, "/status", true).await.0, 200);

    // One event delivered; one over the broker's max_packet_size, with markup in its topic
    // and payload: the broker destination sets it aside.
    let mut good = numbered(1);
    good.data = vec![("tag".into(), "one".into()), ("n".into(), "1".into())];
    emu.emit(&good);
    assert_eq!(sub.next_event(T).await.payload, "1");
    let big = format!("<script>alert(1)</script>{}", "x".repeat(1500));
    let mut bad = numbered(2);
    bad.data = vec![("tag".into(), "<b>big".into()), ("n".into(), big.clone())];
    emu.emit(&bad);
    let json = wait_json(
        &relay,
        "a dead letter and a refused login counted twice",
        |j| {
            let b = named(j, "destinations", "broker");
            let r = named(j, "destinations", "refused");
            b["dead_lettered"] == 1
                && b["recent_dead_letters"]
                    .as_array()
                    .is_some_and(|l| l.len() == 1)
                && r["health"]["errors_since_success"].as_u64() >= Some(2)
                && peak(&named(j, "cameras", "lobby")["events_per_s"]) > 0.0
                && peak(&b["acked_per_s"]) > 0.0
                && peak(&r["depth_history"]) >= 2.0
        },
    )
    .await;
    let refused = named(&json, "destinations", "refused");
    let error = refused["health"]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("broker refused the connection: "),
        "{refused:#}"
    );
    assert!(
        relay.log().contains(&error),
        "the page's words are not the log's: {error:?}\n{}",
        relay.log()
    );
    assert_eq!(refused["health"]["up"], false);
    assert_eq!(refused["connected"], false);
    let dead = &named(&json, "destinations", "broker")["recent_dead_letters"][0];
    assert_eq!(dead["topic"], "load/<b>big");
    assert_eq!(dead["payload"], format!("{}…", &big[..200]));
    assert_eq!(dead["payload_bytes"], big.len());
    let reason = dead["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("this destination's max_packet_size is 1024"),
        "{reason}"
    );
    let lobby = named(&json, "cameras", "lobby");
    assert_eq!(lobby["state"], "streaming");
    assert_eq!(lobby["transport"], "websocket");
    assert_eq!(lobby["health"]["up"], true);

    // /status.json agrees with /metrics, with nothing moving (the refused destination's
    // counters stay 0 while it cannot log in).
    let before = scrape(&relay).await;
    let json = status_json(&relay).await;
    let after = scrape(&relay).await;
    assert_eq!(json_agrees_with_metrics(&json, &before, &after), 4 + 2 * 12);

    // The page, as a browser shows it (the login in the URL).
    let authed = relay.http.replacen(
        "http://",
        &format!("http://{HTTP_USER}:{HTTP_PASSWORD}@"),
        1,
    );
    let dom = chromium(&format!("{authed}/status"), &["--dump-dom"]).await;
    let after = status_json(&relay).await;
    assert!(dom.contains("<h1>edgerelay</h1>"), "{dom}");
    let row = row_of(&dom, "data-destination", "refused");
    assert!(row.contains(&escape_html(&error)), "{row}");
    assert!(
        row.contains(">not connected<") && row.contains("down for "),
        "{row}"
    );
    let shown: u64 = row
        .split("data-error-count=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no error count in {row}"));
    let (low, high) = (
        refused["health"]["errors_since_success"].as_u64().unwrap(),
        named(&after, "destinations", "refused")["health"]["errors_since_success"]
            .as_u64()
            .unwrap(),
    );
    assert!(
        low <= shown && shown <= high,
        "{shown} not in {low}..={high}"
    );
    assert!(row.contains("times since the last success"), "{row}");
    let losses = section_of(&dom, "broker");
    assert!(
        losses.contains("<code>load/&lt;b&gt;big</code>")
            && losses.contains("<code>&lt;script&gt;alert(1)&lt;/script&gt;xxx"),
        "{losses}"
    );
    assert!(losses.contains(&escape_html(&reason)), "{losses}");
    assert!(
        !dom.contains("<b>big") && !dom.contains("<script>alert"),
        "camera text reached the page as markup"
    );
    assert!(!dom.contains(SECRET) && !dom.contains(WRONG) && !dom.contains(HTTP_PASSWORD));
    let cam = row_of(&dom, "data-camera", "lobby");
    assert!(
        cam.contains(">websocket<") && cam.contains("up for "),
        "{cam}"
    );

    // The last hour as pictures: one sparkline per series and window, one polyline each, its
    // data points those of /status.json read just before or just after the page (a point
    // can move while a late acknowledgement lands: then the three reads are made again).
    let mut attempt = 0;
    let (dom, after) = loop {
        let before = status_json(&relay).await;
        let dom = chromium(&format!("{authed}/status"), &["--dump-dom"]).await;
        let after = status_json(&relay).await;
        match charts_match(&dom, &before, &after) {
            Ok(()) => break (dom, after),
            Err(e) if attempt == 4 => panic!("{e}"),
            Err(e) => eprintln!("charts moved while read, again: {e}"),
        }
        attempt += 1;
    };
    // The refused destination only queues (two events, the relay's own notices): its newest
    // depth point is the largest depth of its interval, at most the depth read after the page.
    let refused_depth = attr(svg_of(&dom, "depth:refused:10min"), "data-values");
    let newest: f64 = refused_depth.rsplit(' ').next().unwrap().parse().unwrap();
    let depth_after = named(&after, "destinations", "refused")["depth"]
        .as_f64()
        .unwrap();
    assert!(
        (2.0..=depth_after).contains(&newest),
        "refused depth chart {refused_depth}, depth after {depth_after}"
    );
}

/// The series charted on the page of the test above: (list, name, field, chart key).
const CHARTED: [(&str, &str, &str, &str); 5] = [
    ("cameras", "lobby", "events_per_s", "events:lobby"),
    ("destinations", "broker", "acked_per_s", "acked:broker"),
    ("destinations", "broker", "depth_history", "depth:broker"),
    ("destinations", "refused", "acked_per_s", "acked:refused"),
    ("destinations", "refused", "depth_history", "depth:refused"),
];

/// Each chart of `dom` has one polyline whose points equal `/status.json`'s in `before` or
/// `after`; Err says which did not.
fn charts_match(
    dom: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> Result<(), String> {
    assert_eq!(
        dom.matches("<svg class=\"spark\"").count(),
        2 * CHARTED.len()
    );
    assert_eq!(dom.matches("<polyline").count(), 2 * CHARTED.len());
    for (list, name, field, key) in CHARTED {
        for (window, json_window) in [("10min", "last_10_min"), ("1h", "last_hour")] {
            let svg = svg_of(dom, &format!("{key}:{window}"));
            assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
            let shown = (attr(svg, "data-starts"), attr(svg, "data-values"));
            assert!(!shown.1.is_empty(), "{key}:{window}: no points");
            let from = |j: &serde_json::Value| {
                let points = named(j, list, name)[field][json_window].as_array().unwrap();
                let join = |k: &str| {
                    points
                        .iter()
                        .map(|p| p[k].as_f64().unwrap().to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                (join("start_ms"), join("value"))
            };
            let (b, a) = (from(before), from(after));
            if shown != b && shown != a {
                return Err(format!(
                    "{key}:{window}: page {shown:?}, /status.json {b:?} then {a:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The largest value of a `/status.json` series over the last 10 minutes.
fn peak(series: &serde_json::Value) -> f64 {
    series["last_10_min"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p["value"].as_f64())
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0)
}

/// The `<svg ... data-series="{series}"` element of `dom`.
fn svg_of<'a>(dom: &'a str, series: &str) -> &'a str {
    let at = dom
        .find(&format!("data-series=\"{series}\""))
        .unwrap_or_else(|| panic!("no chart {series} in:\n{dom}"));
    let start = dom[..at].rfind("<svg").unwrap();
    &dom[start..start + dom[start..].find("</svg>").unwrap()]
}

/// The value of attribute `name` in `element`.
fn attr(element: &str, name: &str) -> String {
    element
        .split(&format!(" {name}=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no {name} in {element}"))
        .to_string()
}

/// The `<tr {attr}="{name}"` row of `dom`.
fn row_of<'a>(dom: &'a str, attr: &str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr {attr}=\"{name}\""))
        .unwrap_or_else(|| panic!("no {attr}={name} row in:\n{dom}"));
    &dom[start..start + dom[start..].find("</tr>").unwrap()]
}

/// The dropped-and-dead-lettered section of destination `name`.
fn section_of<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("<section data-losses=\"{name}\""))
        .unwrap_or_else(|| panic!("no losses section {name} in:\n{dom}"));
    &dom[start..start + dom[start..].find("</section>").unwrap()]
}

/// Text as Chromium serialises it in the DOM (`&`, `<`, `>` escaped; quotes kept).
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `/status.json` of a relay without a login, parsed.
async fn open_json(relay: &RelayProcess) -> serde_json::Value {
    let (code, body) = get(relay, "/status.json", false).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status.json: {e}\n{body}"))
}

/// A TCP forwarder to `127.0.0.1:to` that passes at most `bytes_per_ms` bytes per millisecond
/// toward it (the answers flow freely): a slow uplink, so a backlog drains for seconds.
async fn slow_uplink(to: u16, bytes_per_ms: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let mut buf = vec![0; bytes_per_ms];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_a_backlog_draining_with_its_rate_and_time_to_empty() {
    // At most 8 bytes per ms of ~45-byte publishes: at most ~180 per second, so 3,000 take
    // over 16 s and the watch's first 10-second measurement comes with plenty left.
    const BACKLOG: u64 = 3_000;
    let mut broker = Mosquitto::start().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    // About 8 KB/s toward the broker: a few hundred deliveries per second.
    let uplink = slow_uplink(broker.port, 8).await;
    let cfg = load_config(&emu, &broker, "")
        .replace(&broker.url(), &format!("mqtt://127.0.0.1:{uplink}"))
        .replace(
            "data_dir = \"{data_dir}\"",
            "data_dir = \"{data_dir}\"\nhttp = \"{http}\"\nstatus_topic = \"\"",
        );
    let relay = RelayProcess::start(&cfg);
    assert!(emu.wait_for_clients(1, T).await, "relay never subscribed");
    wait_destination(&relay, &[("edgerelay_destination_connected", 1.0)]).await;

    // An outage with a backlog.
    broker.stop();
    wait_destination(&relay, &[("edgerelay_destination_connected", 0.0)]).await;
    for n in 0..BACKLOG {
        emu.emit(&numbered(n));
    }
    wait_destination(&relay, &[("edgerelay_outbox_depth", BACKLOG as f64)]).await;
    let down = open_json(&relay).await;
    assert_eq!(
        named(&down, "destinations", "broker")["backlog"],
        "waiting for the destination"
    );

    // Back: the watch measures the drain every 10 s; the page shows its figures.
    broker.restart().await;
    let end = Instant::now() + Duration::from_secs(40);
    let drain = loop {
        let j = open_json(&relay).await;
        let b = named(&j, "destinations", "broker").clone();
        if b["drain"]["rate_per_s"].is_number() {
            break b;
        }
        assert!(
            b["depth"].as_u64().unwrap() >= 100,
            "drained before the watch measured it: {b:#}\n{}",
            relay.log()
        );
        assert!(Instant::now() < end, "never measured: {b:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rate = drain["drain"]["rate_per_s"].as_f64().unwrap();
    assert!(rate > 0.0, "{drain:#}");
    let eta = drain["drain"]["eta_s"].as_f64().expect("shrinking: an eta");
    let left = drain["drain"]["left"].as_f64().unwrap();
    assert!(left > 0.0 && left < BACKLOG as f64, "{drain:#}");
    // Left over the net rate, which is at most the acknowledgement rate (nothing arrives).
    assert!((eta - left / rate).abs() / eta < 0.5, "{drain:#}");
    let dom = chromium(&format!("{}/status", relay.http), &["--dump-dom"]).await;
    let row = row_of(&dom, "data-destination", "broker");
    let backlog = row
        .split("<td class=\"backlog\">")
        .nth(1)
        .and_then(|c| c.split("</td>").next())
        .unwrap_or_else(|| panic!("no backlog cell: {row}"));
    assert!(
        backlog.starts_with("draining: ") && backlog.contains("/s, empty in about "),
        "{backlog}"
    );
    eprintln!(
        "backlog cell: {backlog}; status.json drain: {}",
        drain["drain"]
    );
    // And it ends: empty, no drain.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let j = open_json(&relay).await;
        let b = named(&j, "destinations", "broker");
        if b["depth"] == 0 && b["drain"].is_null() {
            assert_eq!(b["backlog"], "empty");
            break;
        }
        assert!(Instant::now() < end, "never drained: {b:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
