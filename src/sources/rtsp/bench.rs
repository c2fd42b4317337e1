//! Parse throughput of the metadata path (depacketizer + ONVIF parser), for `edgerelay bench`.

use std::time::Instant;

use super::interleaved::{Depacketizer, frame, rtp};
use super::onvif::{Context, parse_document};

/// An event document as Axis sends it (fixture 02).
const EVENT_DOC: &str = include_str!("../../../tests/fixtures/rtsp-metadata-02-pir-changed.xml");

/// An analytics frame with `n` objects.
pub fn analytics_doc(n: usize) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics><tt:Frame UtcTime="2025-06-17T08:20:34.133000Z">"#,
    );
    for i in 0..n {
        s.push_str(&format!(
            r#"<tt:Object ObjectId="{i}"><tt:Appearance><tt:Shape><tt:BoundingBox left="-0.8125" top="0.6250" right="-0.5625" bottom="-0.1875"/><tt:CenterOfGravity x="-0.6875" y="0.2188"/></tt:Shape><tt:Class><tt:Type Likelihood="0.93">Human</tt:Type></tt:Class></tt:Appearance></tt:Object>"#
        ));
    }
    s.push_str("</tt:Frame></tt:VideoAnalytics></tt:MetadataStream>");
    s
}

/// Interleaved RTP bytes carrying `doc` `iterations` times, in ~1400-byte fragments.
fn stream_of(doc: &[u8], iterations: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity((doc.len() + 64) * iterations);
    let mut seq = 0u16;
    for i in 0..iterations {
        let chunks: Vec<&[u8]> = doc.chunks(1400).collect();
        for (k, c) in chunks.iter().enumerate() {
            out.extend(frame(0, &rtp(k + 1 == chunks.len(), seq, i as u32, 7, c)));
            seq = seq.wrapping_add(1);
        }
    }
    out
}

fn measure(doc: &[u8], iterations: usize) -> (f64, f64) {
    let iterations = iterations.max(1);
    let bytes = stream_of(doc, iterations);
    let ctx = Context {
        camera: "bench".into(),
        serial: "B8A44F3E9D21".into(),
        now_ms: 0,
    };
    let start = Instant::now();
    let mut d = Depacketizer::new(0);
    let mut items = Vec::new();
    let mut events = Vec::new();
    let mut n = 0usize;
    for chunk in bytes.chunks(16 * 1024) {
        d.feed(chunk, &mut items);
        for it in items.drain(..) {
            if let super::interleaved::Item::Document(doc) = it {
                events.clear();
                if parse_document(&doc, &ctx, &mut events).is_ok() {
                    n += 1;
                }
            }
        }
    }
    let s = start.elapsed().as_secs_f64().max(1e-9);
    assert_eq!(n, iterations, "every document parsed");
    (n as f64 / s, bytes.len() as f64 / s / 1e6)
}

/// Documents per second and MB/s of interleaved input, for event documents and for
/// analytics frames with 10 objects: `((event_docs_s, event_mb_s), (frame_docs_s, frame_mb_s))`.
pub fn bench_parse(iterations: usize) -> ((f64, f64), (f64, f64)) {
    let events = measure(EVENT_DOC.as_bytes(), iterations);
    let frames = measure(analytics_doc(10).as_bytes(), iterations);
    (events, frames)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_runs() {
        let ((e, _), (f, _)) = super::bench_parse(50);
        assert!(e > 0.0 && f > 0.0);
    }

    #[test]
    #[ignore = "measurement: cargo test --release --lib bench_parse_rate -- --ignored --nocapture"]
    fn bench_parse_rate() {
        let ((e, em), (f, fm)) = super::bench_parse(200_000);
        println!(
            "event documents: {e:.0}/s ({em:.1} MB/s); analytics frames (10 objects): {f:.0}/s ({fm:.1} MB/s)"
        );
    }
}
