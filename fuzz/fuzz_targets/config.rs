//! Any text as a config file: a config or `file:line` errors, never a panic.
#![no_main]

use edgerelay::config::load_str_with;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |_: &str| Some("x".to_string());
    if let Err(errors) = load_str_with(text, "fuzz.toml", &env, None) {
        let _ = errors.to_string();
    }
});
