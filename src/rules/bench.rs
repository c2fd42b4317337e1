//! Throughput of the rules engine: 100 rules of mixed kinds (topic filters, camera lists,
//! JSONPath conditions, templates, rate limits, only_changes) over fixture-like events.
//!
//! `cargo test --release --lib rules::bench -- --ignored --nocapture` prints the rate.

use std::time::Instant;

use super::{Routed, RuleSet};
use crate::config::Config;
use crate::event::{Event, EventKind, Items};

/// The 100 rules: a quarter each of plain filters, conditions, templates and rate limits,
/// over the fixture topics and topics no event has (as a real config's other cameras would).
pub fn bench_config() -> String {
    const TOPICS: [&str; 5] = [
        "tns1:Device/tnsaxis:IO/VirtualInput",
        "tns1:Device/tnsaxis:Sensor/PIR",
        "tnsaxis:CameraApplicationPlatform/FenceGuard//.",
        "tns1:VideoSource/tnsaxis:Tampering",
        "tnsaxis:Storage/Alert",
    ];
    let mut s = String::from("[destination.d]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1\"\n");
    for i in 0..100 {
        // One rule in five looks at a fixture topic; the rest at topics of other devices.
        let topic = if i % 5 == 0 {
            TOPICS[(i / 5) % TOPICS.len()].to_string()
        } else {
            format!("tnsaxis:CameraApplicationPlatform/App{i}//.")
        };
        s.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nto = [\"d\"]\ntopic = \"{topic}\"\n"
        ));
        match i % 4 {
            0 => s.push_str(&format!("cameras = [\"cam{}\"]\n", i % 10)),
            1 => s.push_str("when = \"$.message[?(@.active == '1' || @.state == '1')]\"\n"),
            2 => s.push_str(
                "mqtt_topic = \"site/{camera}/{topic}/{source.port}\"\npayload = \"{{\\\"v\\\":\\\"{data.active}\\\",\\\"t\\\":\\\"{iso_time}\\\"}}\"\n",
            ),
            _ => s.push_str("max_rate = \"10/s\"\nonly_changes = true\n"),
        }
    }
    s
}

/// Events the router routes between two settlements of `only_changes` (its `ROUTE_BATCH`).
const ROUTER_BATCH: usize = 2048;

fn events() -> Vec<Event> {
    let fixture: [(&str, &str, &str, &str); 5] = [
        ("tns1:Device/tnsaxis:IO/VirtualInput", "port", "active", "1"),
        ("tns1:Device/tnsaxis:Sensor/PIR", "sensor", "state", "1"),
        (
            "tnsaxis:CameraApplicationPlatform/FenceGuard/Camera1Profile2",
            "",
            "active",
            "0",
        ),
        (
            "tns1:VideoSource/tnsaxis:Tampering",
            "channel",
            "tampering",
            "1",
        ),
        ("tnsaxis:Storage/Alert", "disk_id", "alert", "1"),
    ];
    let mut out = Vec::new();
    for cam in 0..10 {
        for (i, (topic, src, data, value)) in fixture.iter().enumerate() {
            for port in 0..4 {
                let mut source = Items::new();
                if !src.is_empty() {
                    source.insert(src.to_string(), port.to_string());
                }
                out.push(Event {
                    camera: format!("cam{cam}").into(),
                    serial: "B8A44F3E9D21".into(),
                    kind: EventKind::Event,
                    topic: topic.to_string(),
                    time_ms: 1_750_148_043_512 + i as i64,
                    operation: None,
                    stateful: i != 3,
                    state_item: None,
                    item_types: None,
                    device: None,
                    source,
                    key: Items::new(),
                    data: Items::from([(data.to_string(), ((port + cam) % 2).to_string())]),
                    analytics: None,
                    ptz: None,
                });
                let _ = value;
            }
        }
    }
    out
}

/// CPU time of the calling thread in seconds (Linux `/proc/thread-self/stat`, 10 ms ticks),
/// so a busy machine does not count other processes' time against the rules.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Routes `n_events` events through the 100 rules; returns events per second of one core's
/// time (the thread's CPU time where the OS reports it, else wall time).
pub fn bench_rules(n_events: usize) -> f64 {
    let cfg: Config = toml::from_str(&bench_config()).expect("bench config parses");
    let mut rules = RuleSet::compile(&cfg).expect("bench rules compile");
    let events = events();
    let mut out: Vec<Routed> = Vec::with_capacity(64);
    let (start, cpu_start) = (Instant::now(), thread_cpu_s());
    let mut delivered = 0usize;
    for i in 0..n_events {
        let now = 1_750_148_043_512 + (i / 100) as i64;
        rules.route(&events[i % events.len()], now, &mut out);
        delivered += out.len();
        out.clear();
        // As the router does after each batch the outboxes accepted.
        if i % ROUTER_BATCH == ROUTER_BATCH - 1 {
            rules.settle_changes();
        }
    }
    let wall = start.elapsed().as_secs_f64();
    std::hint::black_box(delivered);
    let cpu = cpu_start
        .zip(thread_cpu_s())
        .map(|(a, b)| b - a)
        .filter(|s| *s >= 1.0);
    n_events as f64 / cpu.unwrap_or(wall)
}

/// Wall-clock rate of the same run, for comparison on an idle machine.
pub fn bench_rules_wall(n_events: usize) -> f64 {
    let cfg: Config = toml::from_str(&bench_config()).expect("bench config parses");
    let mut rules = RuleSet::compile(&cfg).expect("bench rules compile");
    let events = events();
    let mut out: Vec<Routed> = Vec::with_capacity(64);
    let start = Instant::now();
    for i in 0..n_events {
        let now = 1_750_148_043_512 + (i / 100) as i64;
        rules.route(&events[i % events.len()], now, &mut out);
        out.clear();
        if i % ROUTER_BATCH == ROUTER_BATCH - 1 {
            rules.settle_changes();
        }
    }
    n_events as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_config_compiles_and_routes() {
        assert!(bench_rules(2_000) > 0.0);
    }

    #[test]
    #[ignore = "benchmark: run with --release -- --ignored --nocapture"]
    fn rules_rate() {
        bench_rules(50_000);
        let rate = bench_rules(1_000_000);
        let wall = bench_rules_wall(1_000_000);
        println!(
            "rules: {rate:.0} events/s of one core's CPU time ({wall:.0}/s wall clock; 100 rules)"
        );
    }
}
