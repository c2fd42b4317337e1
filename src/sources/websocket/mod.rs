//! The VAPIX event stream over WebSocket.
