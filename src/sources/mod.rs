//! Camera event sources. Each runs on its own, reconnects with back-off, and reports its state.

pub mod backoff;
pub mod catalog;
pub mod emulator;
pub mod limits;
pub mod mqtt;
pub mod onvif;
pub mod own_events;
pub mod queue;
pub mod rtsp;
pub mod status;
pub mod vapix;
pub mod websocket;
