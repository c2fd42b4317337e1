//! `/status`: one small HTML page for a person on site, and `/status.json`, the same data for
//! tools. The page needs no external asset and no framework: a tiny inline script reloads it
//! every [`REFRESH_S`] seconds while it is scrolled to the top (reading further down is not
//! interrupted); a `<noscript>` meta refresh does the same without scripts.
//!
//! For tools, each row carries `data-camera` or `data-destination` (the config name) and each
//! column header of a figure that `/metrics` also exports carries `data-metric` (its name).
//! Everything that comes from cameras, brokers or the config is HTML-escaped.

use std::fmt::Write as _;

use super::health::{Health, duration};
use super::metrics::{
    DELIVERIES_ACKED, DELIVERIES_DEAD_LETTERED, DELIVERIES_SENT, DESTINATION_CONNECTED,
    OUTBOX_BYTES, OUTBOX_DEPTH, OUTBOX_DROPPED_AGE, OUTBOX_DROPPED_FULL, OUTBOX_DURABLE,
    OUTBOX_OLDEST_AGE, OUTBOX_REJECTED, OUTBOX_WRITE_ERRORS, SOURCE_EVENTS, SOURCE_LAST_EVENT,
    SOURCE_MALFORMED, SOURCE_RECONNECTS, SOURCE_STATE,
};
use super::{Snapshot, state_word};
use crate::sources::status::SourceState;

/// Seconds between reloads of the page.
pub const REFRESH_S: u32 = 5;

/// `s` made safe for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Epoch ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration in seconds as a short human figure.
fn ago(s: f64) -> String {
    let s = s.max(0.0);
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

/// `up for 3 h 12 min` / `down for 5 min`.
fn state_for(h: &Health, now_ms: i64) -> String {
    match h.since_ms {
        None => "-".into(),
        Some(_) => format!(
            "{} for {}",
            if h.up { "up" } else { "down" },
            duration(h.for_s(now_ms))
        ),
    }
}

/// A backlog in words: draining with its rate and time to empty, else how it stands.
pub fn backlog(d: &super::DestinationSnapshot) -> String {
    match &d.drain {
        Some(v) => {
            let mut s = format!("draining: {} left", v.left);
            match (v.rate_per_s, v.eta_s) {
                (None, _) => s.push_str(", measuring the rate"),
                (Some(r), Some(eta)) => s.push_str(&format!(
                    ", {r:.0}/s, empty in about {}",
                    duration(eta.ceil())
                )),
                (Some(r), None) => s.push_str(&format!(
                    ", {r:.0}/s, not shrinking (events arrive as fast as they leave)"
                )),
            }
            s
        }
        None if d.outbox.depth == 0 => "empty".into(),
        None if !d.connected => "waiting for the destination".into(),
        None => "sending".into(),
    }
}

/// The last error cell: its words (as logged), when, and how many failures since the last
/// success; greyed once a success followed it.
fn error_cell(h: &Health, now_ms: i64) -> String {
    let (Some(error), Some(at)) = (&h.last_error, h.last_error_ms) else {
        return "<td class=\"last-error\">-</td>".into();
    };
    let class = if h.up { "past" } else { "bad" };
    let times = match h.errors_since_success {
        0 => "before the last success".to_string(),
        1 => "once since the last success".to_string(),
        n => format!("{n} times since the last success"),
    };
    format!(
        "<td class=\"last-error\"><span class=\"{class}\" data-error-count=\"{}\">{}</span><br><small>{} ({} ago), {}</small></td>",
        h.errors_since_success,
        escape(error),
        escape(&utc(at)),
        escape(&duration((now_ms - at) as f64 / 1000.0)),
        times
    )
}

/// A header row: `(title, metric)`; a metric gets `data-metric`, `_total` for a counter.
fn header(h: &mut String, cols: &[(&str, &str)]) -> std::fmt::Result {
    h.push_str("<tr>");
    for (title, metric) in cols {
        if metric.is_empty() {
            write!(h, "<th>{title}</th>")?;
        } else {
            write!(h, "<th data-metric=\"{metric}\">{title}</th>")?;
        }
    }
    h.push_str("</tr>\n");
    Ok(())
}

/// The page.
pub fn render(snap: &Snapshot, ready: bool) -> String {
    let mut h = String::new();
    let _ = write_page(&mut h, snap, ready);
    h
}

fn write_page(h: &mut String, snap: &Snapshot, ready: bool) -> std::fmt::Result {
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>",
        "<script>let t;function arm(){clearTimeout(t);",
        "if(scrollY<8)t=setTimeout(()=>location.reload(),5000)}",
        "addEventListener('scroll',arm);arm();</script>",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>edgerelay status</title><style>",
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1.5em}",
        "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left}td.n{text-align:right}",
        "svg.spark{display:block}td.last-error,td.backlog{max-width:20em}code{word-break:break-all}.ok{color:#060}.bad{color:#a00}.wait{color:#a60}.past{color:#777}",
        "</style></head><body>\n<h1>edgerelay</h1>\n"
    ));
    writeln!(
        h,
        "<p>Version {} &middot; page made {}{}</p>",
        escape(env!("CARGO_PKG_VERSION")),
        escape(&utc(snap.now_ms)),
        if ready {
            ""
        } else {
            " &middot; <b class=\"wait\">not ready (starting or stopping)</b>"
        }
    )?;

    h.push_str("<h2>Cameras</h2>\n<table>");
    header(
        h,
        &[
            ("Camera", ""),
            ("State", SOURCE_STATE),
            ("For", ""),
            ("Last error", ""),
            ("Serial", ""),
            ("Firmware", ""),
            ("Transport", ""),
            ("Availability", ""),
            ("Last event", SOURCE_LAST_EVENT),
            ("Events", &format!("{SOURCE_EVENTS}_total")),
            ("Malformed frames", &format!("{SOURCE_MALFORMED}_total")),
            ("Reconnects", &format!("{SOURCE_RECONNECTS}_total")),
        ],
    )?;
    for c in &snap.cameras {
        let class = match c.state {
            SourceState::Streaming => "ok",
            SourceState::Connecting => "wait",
            SourceState::Backoff { .. } => "bad",
        };
        let state = state_word(&c.state);
        let name = escape(&c.name);
        let available = match c.available {
            None => "not announced",
            Some(true) => "online",
            Some(false) => "offline",
        };
        let last = c.last_event_ms.map_or_else(
            || "never".to_string(),
            |t| {
                format!(
                    "{} ({} ago)",
                    utc(t),
                    ago((snap.now_ms - t) as f64 / 1000.0)
                )
            },
        );
        writeln!(
            h,
            "<tr data-camera=\"{name}\"><td>{name}</td><td class=\"{class}\">{}</td><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(state),
            escape(&state_for(&c.health, snap.now_ms)),
            error_cell(&c.health, snap.now_ms),
            escape(c.serial.as_deref().unwrap_or("-")),
            escape(c.firmware.as_deref().unwrap_or("-")),
            escape(c.transport),
            available,
            escape(&last),
            c.events,
            c.malformed,
            c.reconnects
        )?;
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Destinations</h2>\n<table>");
    header(
        h,
        &[
            ("Destination", ""),
            ("State", DESTINATION_CONNECTED),
            ("For", ""),
            ("Last error", ""),
            ("Backlog", ""),
            ("Queued", OUTBOX_DEPTH),
            ("Queued bytes", OUTBOX_BYTES),
            ("Oldest queued", OUTBOX_OLDEST_AGE),
            ("Sent", &format!("{DELIVERIES_SENT}_total")),
            ("Acknowledged", &format!("{DELIVERIES_ACKED}_total")),
            (
                "Dead-lettered",
                &format!("{DELIVERIES_DEAD_LETTERED}_total"),
            ),
            ("Dropped (full)", &format!("{OUTBOX_DROPPED_FULL}_total")),
            ("Dropped (age)", &format!("{OUTBOX_DROPPED_AGE}_total")),
            ("Refused (full)", &format!("{OUTBOX_REJECTED}_total")),
            ("Refused (disk)", &format!("{OUTBOX_WRITE_ERRORS}_total")),
            ("Durable", &format!("{OUTBOX_DURABLE}_total")),
        ],
    )?;
    for d in &snap.destinations {
        let (class, state) = if d.connected {
            ("ok", "connected")
        } else {
            ("bad", "not connected")
        };
        let name = escape(&d.name);
        let oldest = if d.outbox.depth == 0 {
            "-".to_string()
        } else {
            ago(d.oldest_age_s(snap.now_ms))
        };
        writeln!(
            h,
            "<tr data-destination=\"{name}\"><td>{name}</td><td class=\"{class}\">{state}</td><td>{}</td>{}<td class=\"backlog\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&state_for(&d.health, snap.now_ms)),
            error_cell(&d.health, snap.now_ms),
            escape(&backlog(d)),
            d.outbox.depth,
            d.outbox.bytes,
            escape(&oldest),
            d.sent,
            d.acked,
            d.dead_lettered,
            d.outbox.dropped_full,
            d.outbox.dropped_age,
            d.outbox.rejected,
            d.outbox.write_errors,
            d.outbox.durable
        )?;
    }
    h.push_str("</table>\n");
    write_charts(h, snap)?;
    write_losses(h, snap)?;
    h.push_str("</body></html>\n");
    Ok(())
}

/// Width and height of a sparkline, in CSS pixels.
const SPARK_W: f64 = 240.0;
const SPARK_H: f64 = 40.0;

/// One inline SVG sparkline of `points` over the ring's window ending at `now_ms`: one
/// polyline, its values in `data-values` and their interval starts in `data-starts` (the same
/// numbers `/status.json` gives), scaled to the largest value.
fn sparkline(
    h: &mut String,
    series: &str,
    points: &[super::history::Point],
    step_ms: i64,
    len: usize,
    now_ms: i64,
    unit: &str,
) -> std::fmt::Result {
    let newest = now_ms - now_ms.rem_euclid(step_ms);
    let oldest = newest - (len as i64 - 1) * step_ms;
    let span = ((len as i64 - 1) * step_ms).max(1) as f64;
    let max = points.iter().map(|p| p.value).fold(0.0, f64::max);
    let mut xy = String::new();
    let mut values = String::new();
    let mut starts = String::new();
    for p in points {
        // 2 px of margin on each side, so the newest point's dot is not clipped.
        let x = 2.0 + (p.start_ms - oldest) as f64 / span * (SPARK_W - 4.0);
        let y = if max > 0.0 {
            SPARK_H - 2.0 - p.value / max * (SPARK_H - 4.0)
        } else {
            SPARK_H - 2.0
        };
        if !xy.is_empty() {
            xy.push(' ');
            values.push(' ');
            starts.push(' ');
        }
        let _ = write!(xy, "{x:.1},{y:.1}");
        let _ = write!(values, "{}", p.value);
        let _ = write!(starts, "{}", p.start_ms);
    }
    let last = points.last().map_or(0.0, |p| p.value);
    // The newest point as a dot: a lone point draws no line.
    let dot = xy
        .rsplit(' ')
        .next()
        .and_then(|p| p.split_once(','))
        .map_or(String::new(), |(x, y)| {
            format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"2\" fill=\"#2a6fdb\"/>")
        });
    write!(
        h,
        "<svg class=\"spark\" data-series=\"{series}\" width=\"{SPARK_W}\" height=\"{SPARK_H}\" viewBox=\"0 0 {SPARK_W} {SPARK_H}\" role=\"img\" aria-label=\"{series}: largest {max}, last {last}\">\
<line x1=\"0\" y1=\"{y0}\" x2=\"{SPARK_W}\" y2=\"{y0}\" stroke=\"#ddd\"/>\
<polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"1.5\" points=\"{xy}\" data-values=\"{values}\" data-starts=\"{starts}\"/>{dot}</svg>\
<br><small>largest {max}{unit}, last {last}{unit}</small>",
        y0 = SPARK_H - 2.0,
    )
}

/// The last hour as pictures: per camera events in per second, per destination
/// acknowledgements per second and outbox depth; each over 10 minutes and over the hour.
fn write_charts(h: &mut String, snap: &Snapshot) -> std::fmt::Result {
    use super::history::{COARSE_LEN, COARSE_STEP_MS, FINE_LEN, FINE_STEP_MS};
    h.push_str("<h2>The last hour</h2>\n<table class=\"charts\">");
    header(
        h,
        &[
            ("What", ""),
            ("Last 10 minutes (10-second points)", ""),
            ("Last hour (1-minute points)", ""),
        ],
    )?;
    let mut rows: Vec<(String, String, &super::history::SeriesView, &str)> = Vec::new();
    for c in &snap.cameras {
        rows.push((
            format!("events:{}", c.name),
            format!("{}: events in per second", c.name),
            &c.events_history,
            "/s",
        ));
    }
    for d in &snap.destinations {
        rows.push((
            format!("acked:{}", d.name),
            format!("{}: acknowledged per second", d.name),
            &d.acked_history,
            "/s",
        ));
        rows.push((
            format!("depth:{}", d.name),
            format!("{}: outbox depth", d.name),
            &d.depth_history,
            "",
        ));
    }
    for (series, title, view, unit) in rows {
        let series = escape(&series);
        write!(
            h,
            "<tr data-chart=\"{series}\"><td>{}</td><td>",
            escape(&title)
        )?;
        sparkline(
            h,
            &format!("{series}:10min"),
            &view.last_10_min,
            FINE_STEP_MS,
            FINE_LEN,
            snap.now_ms,
            unit,
        )?;
        h.push_str("</td><td>");
        sparkline(
            h,
            &format!("{series}:1h"),
            &view.last_hour,
            COARSE_STEP_MS,
            COARSE_LEN,
            snap.now_ms,
            unit,
        )?;
        h.push_str("</td></tr>\n");
    }
    h.push_str("</table>\n");
    Ok(())
}

/// Per destination: what was lost or set aside, by cause, and the last dead letters.
fn write_losses(h: &mut String, snap: &Snapshot) -> std::fmt::Result {
    h.push_str("<h2>Dropped and dead-lettered</h2>\n");
    for d in &snap.destinations {
        let name = escape(&d.name);
        writeln!(
            h,
            "<section data-losses=\"{name}\"><h3>{name}</h3>\n<ul class=\"drops\">"
        )?;
        let o = &d.outbox;
        let causes: [(&str, u64, &str); 6] = [
            (
                "dead_lettered",
                d.dead_lettered,
                "dead-lettered: this destination can never accept them (set aside in the dead-letter file under data_dir)",
            ),
            (
                "dropped_full",
                o.dropped_full,
                "dropped, oldest first, because the outbox was full (buffer.when_full = \"drop_oldest\")",
            ),
            (
                "dropped_age",
                o.dropped_age,
                "dropped because they waited longer than buffer.max_age",
            ),
            (
                "rejected",
                o.rejected,
                "refused because the outbox was full (buffer.when_full = \"reject\")",
            ),
            (
                "write_errors",
                o.write_errors,
                "refused because the disk could not take them (full, read-only or failing)",
            ),
            (
                "lost_corrupt",
                o.lost_corrupt,
                "lost to damage in the outbox files",
            ),
        ];
        for (key, n, words) in causes {
            writeln!(
                h,
                "<li data-drop=\"{key}\"><b>{n}</b> {}</li>",
                escape(words)
            )?;
        }
        h.push_str("</ul>\n");
        if d.recent_dead.is_empty() {
            h.push_str("<p>No dead letters since the relay started.</p>\n");
        } else {
            writeln!(
                h,
                "<table class=\"dead\"><caption>Last {} dead letters (at most {}), newest first</caption>",
                d.recent_dead.len(),
                crate::outbox::dead_letter::RECENT_DEAD
            )?;
            header(
                h,
                &[
                    ("When", ""),
                    ("Seq", ""),
                    ("Topic", ""),
                    ("Reason", ""),
                    ("Payload", ""),
                ],
            )?;
            for v in d.recent_dead.iter().rev() {
                writeln!(
                    h,
                    "<tr class=\"dead-letter\"><td>{}</td><td class=\"n\">{}</td><td class=\"topic\"><code>{}</code></td><td class=\"reason\">{}</td><td class=\"payload\"><code>{}</code> <small>({} bytes)</small></td></tr>",
                    escape(&utc(v.time_ms)),
                    v.seq,
                    escape(&v.topic),
                    escape(&v.reason),
                    escape(&v.payload),
                    v.payload_bytes
                )?;
            }
            h.push_str("</table>\n");
        }
        h.push_str("</section>\n");
    }
    Ok(())
}

/// `/status.json`: what the page shows, for tools. Times are epoch ms, durations seconds;
/// the counters are those `/metrics` exports.
pub fn json(snap: &Snapshot, ready: bool) -> serde_json::Value {
    use serde_json::json;
    let cameras: Vec<_> = snap
        .cameras
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "state": state_word(&c.state),
                "state_code": super::state_code(&c.state),
                "health": c.health,
                "state_for_s": c.health.for_s(snap.now_ms),
                "serial": c.serial,
                "firmware": c.firmware,
                "transport": c.transport,
                "available": c.available,
                "last_event_ms": c.last_event_ms,
                "events": c.events,
                "malformed": c.malformed,
                "reconnects": c.reconnects,
                "silences": c.silences,
                "timeouts": c.timeouts,
                "events_per_s": c.events_history,
            })
        })
        .collect();
    let destinations: Vec<_> = snap
        .destinations
        .iter()
        .map(|d| {
            let o = &d.outbox;
            json!({
                "name": d.name,
                "connected": d.connected,
                "health": d.health,
                "state_for_s": d.health.for_s(snap.now_ms),
                "backlog": backlog(d),
                "drain": d.drain,
                "depth": o.depth,
                "bytes": o.bytes,
                "max_bytes": o.max_bytes,
                "oldest_age_s": d.oldest_age_s(snap.now_ms),
                "sent": d.sent,
                "acked": d.acked,
                "connects": d.connects,
                "dead_lettered": d.dead_lettered,
                "dropped_full": o.dropped_full,
                "dropped_age": o.dropped_age,
                "rejected": o.rejected,
                "write_errors": o.write_errors,
                "lost_corrupt": o.lost_corrupt,
                "durable": o.durable,
                "recent_dead_letters": d.recent_dead,
                "acked_per_s": d.acked_history,
                "depth_history": d.depth_history,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_ms": snap.now_ms,
        "ready": ready,
        "cameras": cameras,
        "destinations": destinations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_sparkline_is_one_polyline_over_its_window_with_its_values() {
        use crate::observe::history::Point;
        let points = [
            Point {
                start_ms: 0,
                value: 1.0,
            },
            Point {
                start_ms: 20_000,
                value: 0.5,
            },
        ];
        let mut h = String::new();
        // Window of 3 steps of 10 s ending in [20 s, 30 s): x at both ends (2 px margins).
        sparkline(&mut h, "events:a", &points, 10_000, 3, 25_000, "/s").unwrap();
        assert_eq!(h.matches("<polyline").count(), 1, "{h}");
        assert!(h.contains("points=\"2.0,2.0 238.0,20.0\""), "{h}");
        assert!(
            h.contains("data-values=\"1 0.5\" data-starts=\"0 20000\""),
            "{h}"
        );
        assert!(h.contains("largest 1/s, last 0.5/s"), "{h}");
        let mut empty = String::new();
        sparkline(&mut empty, "e", &[], 10_000, 3, 25_000, "").unwrap();
        assert!(empty.contains("points=\"\""), "{empty}");
    }

    fn destination(name: &str) -> super::super::DestinationSnapshot {
        super::super::DestinationSnapshot {
            name: name.into(),
            connected: true,
            sent: 0,
            acked: 0,
            dead_lettered: 0,
            connects: 1,
            outbox: Default::default(),
            latency: Default::default(),
            health: Default::default(),
            recent_dead: Vec::new(),
            drain: None,
            acked_history: Default::default(),
            depth_history: Default::default(),
        }
    }

    #[test]
    fn a_backlog_reads_as_its_drain_rate_and_time_to_empty() {
        use crate::observe::watch::DrainView;
        let mut d = destination("d");
        assert_eq!(backlog(&d), "empty");
        d.outbox.depth = 5;
        assert_eq!(backlog(&d), "sending");
        d.connected = false;
        assert_eq!(backlog(&d), "waiting for the destination");
        d.connected = true;
        let mut v = DrainView {
            started_ms: 0,
            left: 4_000,
            rate_per_s: None,
            eta_s: None,
        };
        d.drain = Some(v.clone());
        assert_eq!(backlog(&d), "draining: 4000 left, measuring the rate");
        (v.rate_per_s, v.eta_s) = (Some(200.0), Some(725.2));
        d.drain = Some(v.clone());
        assert_eq!(
            backlog(&d),
            "draining: 4000 left, 200/s, empty in about 12 min 6 s"
        );
        v.eta_s = None;
        d.drain = Some(v);
        assert!(
            backlog(&d).ends_with("200/s, not shrinking (events arrive as fast as they leave)")
        );
    }

    #[test]
    fn names_errors_and_dead_letters_from_outside_are_escaped() {
        let mut d = destination("<d>");
        d.connected = false;
        d.health.start(0);
        d.health.error(1_000, "refused <script>x</script>");
        d.recent_dead
            .push(crate::outbox::dead_letter::DeadLetterView {
                seq: 1,
                time_ms: 2_000,
                reason: "too \"big\"".into(),
                topic: "a/<b>".into(),
                payload: "<img src=x onerror=alert(1)>".into(),
                payload_bytes: 28,
            });
        let snap = Snapshot {
            now_ms: 3 * 3_600_000 + 12 * 60_000 + 1_000,
            cameras: Vec::new(),
            destinations: vec![d],
            topics: Vec::new(),
            rule_state_evictions: 0,
            commands: Vec::new(),
        };
        let page = render(&snap, true);
        for raw in ["<d>", "<script>x", "a/<b>", "<img", "\"big\""] {
            assert!(!page.contains(raw), "{raw} unescaped:\n{page}");
        }
        assert!(page.contains("refused &lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("down for 3 h 12 min"), "{page}");
        assert!(page.contains("data-error-count=\"1\""));
        let json = json(&snap, true);
        assert_eq!(
            json["destinations"][0]["recent_dead_letters"][0]["topic"],
            "a/<b>"
        );
    }

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_750_000_000_000), "2025-06-15 15:06:40 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
