//! Any bytes as a metadata document: an error or events, never a panic.
#![no_main]

use edgerelay::sources::rtsp::onvif::{Context, parse_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = Context {
        camera: "fuzz".into(),
        serial: "0".into(),
        now_ms: 0,
    };
    let mut out = Vec::new();
    let _ = parse_document(data, &ctx, &mut out);
    for ev in &out {
        let _ = ev.payload(true);
    }
});
