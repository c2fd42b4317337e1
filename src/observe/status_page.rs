//! `/status`: one small HTML page for a person on site. No scripts; refreshes itself.
//!
//! For tools, each row carries `data-camera` or `data-destination` (the config name) and each
//! column header of a figure that `/metrics` also exports carries `data-metric` (its name).

use std::fmt::Write as _;

use super::metrics::{
    DELIVERIES_ACKED, DELIVERIES_DEAD_LETTERED, DELIVERIES_SENT, DESTINATION_CONNECTED,
    OUTBOX_BYTES, OUTBOX_DEPTH, OUTBOX_DROPPED_AGE, OUTBOX_DROPPED_FULL, OUTBOX_DURABLE,
    OUTBOX_OLDEST_AGE, OUTBOX_REJECTED, OUTBOX_WRITE_ERRORS, SOURCE_EVENTS, SOURCE_LAST_EVENT,
    SOURCE_MALFORMED, SOURCE_RECONNECTS, SOURCE_STATE,
};
use super::{Snapshot, state_word};
use crate::sources::status::SourceState;

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
        "<meta http-equiv=\"refresh\" content=\"10\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>edgerelay status</title><style>",
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1.5em}",
        "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left}td.n{text-align:right}",
        ".ok{color:#060}.bad{color:#a00}.wait{color:#a60}",
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
        let mut state = state_word(&c.state).to_string();
        if let SourceState::Backoff { error } = &c.state {
            state = format!("{state}: {error}");
        }
        let name = escape(&c.name);
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
            "<tr data-camera=\"{name}\"><td>{name}</td><td class=\"{class}\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&state),
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
            "<tr data-destination=\"{name}\"><td>{name}</td><td class=\"{class}\">{state}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
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
    h.push_str("</table>\n</body></html>\n");
    Ok(())
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
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_750_000_000_000), "2025-06-15 15:06:40 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
