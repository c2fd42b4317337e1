//! An emulated Axis camera on loopback: tests and the demo config use it.

pub mod rtsp;
