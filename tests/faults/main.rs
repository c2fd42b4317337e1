//! Fault tests (issue "No bad input, full disk or hung peer can stop delivery"): each puts one
//! fault between normal events, against real peers (Mosquitto, the camera emulator, object
//! stores, the relay binary), and asserts that every normal event after it arrives and that the
//! bad one is escaped or dead-lettered with its reason, counted.
//!
//! One module per area, so the faults of one part of the relay read together.

mod availability;
mod commands;
#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod disk;
mod sources;
mod tasks;
