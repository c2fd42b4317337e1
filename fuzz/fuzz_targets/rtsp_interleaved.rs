//! Any byte stream, cut into chunks by its first byte, never panics the depacketizer.
#![no_main]

use edgerelay::sources::rtsp::interleaved::Depacketizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let mut d = Depacketizer::new(step % 3);
    let mut out = Vec::new();
    for chunk in rest.chunks(usize::from(step).max(1)) {
        d.feed(chunk, &mut out);
        out.clear();
    }
});
