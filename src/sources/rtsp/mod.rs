//! ONVIF metadata over RTSP (DESIGN.md §2, fixtures/README.md §2).

pub mod interleaved;
pub mod onvif;
