//! The VAPIX event stream over WebSocket.

pub mod protocol;
