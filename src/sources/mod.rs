//! Camera event sources.

pub mod emulator;
pub mod websocket;
