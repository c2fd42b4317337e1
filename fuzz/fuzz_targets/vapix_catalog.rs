//! Any text as a VAPIX `GetEventInstances` reply: a catalog or an error, never a panic.
#![no_main]

use edgerelay::sources::catalog::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Catalog::parse(text) {
        let _ = c.len();
        let _ = c.is_stateful("tns1:Device/tnsaxis:IO/VirtualInput");
    }
});
