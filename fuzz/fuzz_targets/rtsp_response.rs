//! Any bytes as an RTSP reply, walked the way a connection walks DESCRIBE/SETUP/401 replies:
//! status and headers, SDP media choice, `Transport`/`Session`, and the Digest/Basic
//! challenge and its answer. Errors, never a panic.
#![no_main]

use edgerelay::sources::rtsp::session::{
    Auth, interleaved_channels, metadata_media, parse_response, session_header,
};
use libfuzzer_sys::fuzz_target;

const URL: &str = "rtsp://192.0.2.57/axis-media/media.amp?camera=1&video=0&audio=0&event=on";

fuzz_target!(|data: &[u8]| {
    let Ok(r) = parse_response(data) else { return };
    let _ = r.cseq();
    // DESCRIBE: the SDP body, resolved against Content-Base (else Content-Location, else URL).
    let base = r
        .header("Content-Base")
        .or(r.header("Content-Location"))
        .unwrap_or(URL);
    let sdp = String::from_utf8_lossy(&r.body);
    let media = metadata_media(&sdp, base);
    // Also against the fixed URL, so a garbage base does not hide the SDP walk.
    let _ = metadata_media(&sdp, URL);
    // SETUP.
    let _ = r.header("Transport").and_then(interleaved_channels);
    let _ = r.header("Session").map(session_header);
    // 401: the challenge, the `stale` check, and answers for the next requests.
    let _ = r
        .headers_named("WWW-Authenticate")
        .any(|v| v.to_ascii_lowercase().contains("stale=true"));
    let mut auth = Auth::new(Some("root".into()), Some("pass".into()));
    if auth.challenge(r.headers_named("WWW-Authenticate")).is_ok() {
        let uri = media.as_ref().map_or(URL, |m| m.setup_url.as_str());
        let _ = auth.authorization("DESCRIBE", URL);
        let _ = auth.authorization("SETUP", uri);
    }
});
