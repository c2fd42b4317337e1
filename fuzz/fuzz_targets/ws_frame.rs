//! Any text as a WebSocket frame from a camera: classified or an error, never a panic.
#![no_main]

use edgerelay::sources::catalog::Catalog;
use edgerelay::sources::websocket::protocol::{Incoming, parse_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Incoming::Notify(n)) = parse_frame(text) {
        let ev = n.into_event(&"fuzz".into(), &"0".into(), &Catalog::default(), 0);
        let _ = ev.payload(true);
    }
});
