//! `edgerelay bench [--quick]`: measures the relay's figures in this run and prints one
//! Markdown table (figure | measured | target) on stdout; progress goes to stderr.
//!
//! Files: `local` (outbox rates, memory with a backlog), `mosquitto` (a broker on a free
//! loopback port), `raw` (a plain client's QoS 1 ceiling), `e2e` (emulated camera → relay →
//! broker: throughput, drain after an outage), `flood` (the relay at its default config against
//! a plain client, issue 15), `latency` (added latency at a steady rate),
//! `tmp` (temp dirs removed on drop). Everything started is stopped before `run` returns.

mod e2e;
mod flood;
mod latency;
mod local;
mod mosquitto;
mod raw;
mod tmp;

/// Payload size of the broker rows, bytes.
const MSG_LEN: usize = 300;
/// Outbox record size of row 1, bytes.
const RECORD_LEN: usize = 250;
/// Rate of the latency row, events/s.
const LATENCY_RATE: u32 = 1000;

/// How much work each figure does.
struct Sizes {
    outbox_nofsync: usize,
    outbox_fsync: usize,
    broker_n: u64,
    flood_n: u64,
    flood_rounds: usize,
    latency_s: u32,
    rtsp_iterations: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                outbox_nofsync: 100_000,
                outbox_fsync: 20_000,
                broker_n: 20_000,
                flood_n: 20_000,
                flood_rounds: 1,
                latency_s: 2,
                rtsp_iterations: 20_000,
            }
        } else {
            Self {
                outbox_nofsync: 500_000,
                outbox_fsync: 100_000,
                broker_n: 200_000,
                flood_n: 100_000,
                flood_rounds: 2,
                latency_s: 5,
                rtsp_iterations: 100_000,
            }
        }
    }
}

/// One line of the table.
struct Row {
    figure: String,
    measured: String,
    target: String,
}

fn row(figure: impl Into<String>, measured: impl Into<String>, target: impl Into<String>) -> Row {
    Row {
        figure: figure.into(),
        measured: measured.into(),
        target: target.into(),
    }
}

/// `1.23M/s`, `45.6k/s`, `789/s`.
fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M/s", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k/s", x / 1e3)
    } else {
        format!("{x:.0}/s")
    }
}

/// `N` as `200k`, `20k`, `1M`.
fn count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn verdict(target: &str, met: bool) -> String {
    format!("{target} {}", if met { "✓" } else { "✗ missed" })
}

fn error(e: &anyhow::Error) -> String {
    format!("error: {e:#}").replace('|', "/").replace('\n', " ")
}

fn progress(what: &str) {
    eprintln!("bench: {what}…");
}

/// Runs every figure and prints the table.
pub fn run(quick: bool) -> anyhow::Result<()> {
    let s = Sizes::new(quick);
    let mut rows = Vec::new();

    // 1. Outbox rates.
    for (fsync, n, floor) in [
        (false, s.outbox_nofsync, 200_000.0),
        (true, s.outbox_fsync, 20_000.0),
    ] {
        let mode = if fsync {
            "fsync on (default)"
        } else {
            "fsync off"
        };
        progress(&format!("outbox, {mode}"));
        let what = format!("{} × {RECORD_LEN} B, batch 256", count(n as u64));
        match local::outbox_rates(n, RECORD_LEN, fsync) {
            Ok(r) => {
                rows.push(row(
                    format!("Outbox appends, {mode} ({what})"),
                    rate(r.appends_per_s),
                    verdict(&format!("≥ {}", rate(floor)), r.appends_per_s >= floor),
                ));
                rows.push(row(
                    format!("Outbox drains (read + ack), {mode}"),
                    rate(r.drains_per_s),
                    "—",
                ));
            }
            Err(e) => rows.push(row(format!("Outbox, {mode} ({what})"), error(&e), "")),
        }
    }

    // 5 (measured early, before the broker rows allocate): memory with a backlog.
    progress("memory with a 1M-record backlog");
    let memory = match local::backlog_rss(100_000, 1_000_000, 200) {
        Ok((before, at_100k, at_1m)) => {
            let mb = |k: u64| k as f64 / 1024.0;
            let growth = mb(at_1m) - mb(at_100k);
            row(
                "RSS with an outbox backlog (200 B records, no reader): 100k / 1M",
                format!(
                    "{:.1} MB / {:.1} MB ({growth:+.1} MB; {:.1} MB before)",
                    mb(at_100k),
                    mb(at_1m),
                    mb(before)
                ),
                verdict("flat (1M within 5 MB of 100k)", growth.abs() <= 5.0),
            )
        }
        Err(e) => row("RSS with an outbox backlog", error(&e), ""),
    };

    // 2, 3, 4, 6: through a broker.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rows.extend(rt.block_on(broker_rows(&s)));
    drop(rt);
    rows.push(memory);

    // 7. RTSP metadata parsing.
    progress("RTSP metadata parsing");
    let ((ev, ev_mb), (fr, fr_mb)) = crate::sources::rtsp::bench::bench_parse(s.rtsp_iterations);
    rows.push(row(
        "RTSP metadata parse: event documents",
        format!("{} ({ev_mb:.1} MB/s)", rate(ev)),
        verdict("≥ 50.0k/s", ev >= 50_000.0),
    ));
    rows.push(row(
        "RTSP metadata parse: analytics frames, 10 objects",
        format!("{} ({fr_mb:.1} MB/s)", rate(fr)),
        "—",
    ));

    // 8. Rule evaluation.
    progress("rule evaluation");
    let per_core = crate::rules::bench::bench_rules(s.rtsp_iterations * 5);
    rows.push(row(
        "Rule evaluation, 100 rules of mixed kinds (one core's CPU time)",
        rate(per_core),
        verdict("≥ 200.0k/s", per_core >= 200_000.0),
    ));

    println!("| figure | measured | target |");
    println!("|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.figure, r.measured, r.target);
    }
    Ok(())
}

/// Rows 2, 3, 4 and 6, against one Mosquitto started here (skipped when there is none).
async fn broker_rows(s: &Sizes) -> Vec<Row> {
    let n = s.broker_n;
    let figures = [
        format!(
            "Raw ceiling: rumqttc QoS 1 → Mosquitto ({} × {MSG_LEN} B, inflight {})",
            count(n),
            e2e::INFLIGHT
        ),
        format!(
            "End to end QoS 1, fsync off: camera → relay → Mosquitto ({} events)",
            count(n)
        ),
        format!(
            "End to end QoS 1, fsync on (default, group commit) ({} events)",
            count(n)
        ),
        format!(
            "Added latency at {}k events/s for {} s, fsync on (emit → QoS 1 subscriber): p50 / p99 / max",
            LATENCY_RATE / 1000,
            s.latency_s
        ),
        format!("Drain after an outage ({} pre-filled deliveries)", count(n)),
        format!(
            "Flood at the defaults: camera → relay (default config, fsync on) → Mosquitto → subscriber ({} × {MSG_LEN} B, QoS 1), against a plain rumqttc client at its defaults in the same run",
            count(s.flood_n)
        ),
    ];
    let Some(bin) = mosquitto::binary() else {
        let note =
            "skipped: mosquitto not found (/usr/sbin/mosquitto, /usr/bin/mosquitto or $MOSQUITTO)";
        return figures.into_iter().map(|f| row(f, note, "")).collect();
    };
    let broker = match mosquitto::Mosquitto::start(&bin).await {
        Ok(b) => b,
        Err(e) => {
            let note = format!("skipped: {}", error(&e));
            return figures
                .into_iter()
                .map(|f| row(f, note.clone(), ""))
                .collect();
        }
    };
    let [f_raw, f_off, f_on, f_lat, f_drain, f_flood] = figures;
    let mut rows = Vec::new();

    progress("raw ceiling");
    let raw = raw::ceiling(&broker, n, MSG_LEN, e2e::INFLIGHT).await;
    match &raw {
        Ok(r) => rows.push(row(f_raw, rate(*r), "reference for the rows below")),
        Err(e) => rows.push(row(f_raw, error(e), "")),
    }
    let raw = raw.ok();

    let mut online = None;
    // fsync on is the default: it must meet the same bar as fsync off.
    for (fsync, figure, share) in [(false, f_off, 60.0), (true, f_on, 60.0)] {
        progress(&format!(
            "end to end, fsync {}",
            if fsync { "on" } else { "off" }
        ));
        match e2e::throughput(&broker, n, fsync).await {
            Ok(r) => {
                if fsync {
                    online = Some(r);
                }
                let pct = raw.map(|raw| 100.0 * r / raw);
                rows.push(row(
                    figure,
                    match pct {
                        Some(p) => format!("{} ({p:.0}% of raw)", rate(r)),
                        None => rate(r),
                    },
                    verdict(
                        &format!("≥ {share:.0}% of raw"),
                        pct.is_some_and(|p| p >= share),
                    ),
                ));
            }
            Err(e) => rows.push(row(figure, error(&e), format!("≥ {share:.0}% of raw"))),
        }
    }

    progress("latency at a steady rate");
    let ms = |l: &latency::Latency| format!("{:.2} / {:.2} / {:.2} ms", l.p50, l.p99, l.max);
    let (per_s, secs) = (LATENCY_RATE, s.latency_s);
    let baseline = latency::measure(&broker, latency::Path::Raw, per_s, secs).await;
    match latency::measure(&broker, latency::Path::Relay, per_s, secs).await {
        Ok(l) => rows.push(row(
            f_lat,
            format!(
                "{} ({} events; a plain client straight to the broker: {})",
                ms(&l),
                l.count,
                baseline.as_ref().map_or_else(error, ms)
            ),
            verdict("p99 ≤ 5 ms", l.p99 <= 5.0),
        )),
        Err(e) => rows.push(row(f_lat, error(&e), "p99 ≤ 5 ms")),
    }

    progress("drain after an outage");
    match e2e::drain(&broker, n).await {
        Ok(r) => {
            let pct = online.map(|o| 100.0 * r / o);
            rows.push(row(
                f_drain,
                match pct {
                    Some(p) => format!("{} ({p:.0}% of the online rate, fsync on)", rate(r)),
                    None => rate(r),
                },
                verdict("≥ 80% of online", pct.is_some_and(|p| p >= 80.0)),
            ));
        }
        Err(e) => rows.push(row(f_drain, error(&e), "≥ 80% of online")),
    }

    progress("flood at the defaults against a plain client");
    let target = "≥ 1.2× the plain client";
    match flood::run(&broker, s.flood_n, s.flood_rounds).await {
        Ok(f) => {
            let ratio = f.relay / f.plain.max(1e-9);
            rows.push(row(
                f_flood,
                format!(
                    "{} (plain client {}: {ratio:.2}×)",
                    rate(f.relay),
                    rate(f.plain)
                ),
                verdict(target, ratio >= 1.2),
            ));
        }
        Err(e) => rows.push(row(f_flood, error(&e), target)),
    }
    drop(broker);
    rows
}
