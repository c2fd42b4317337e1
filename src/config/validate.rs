//! The validation pass: every semantic problem of a deserialized config, as key paths.
//!
//! Runs after `${VAR}` and secret files are filled, so it checks the values the relay will
//! use. It never stops at the first problem.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};

use super::error::Problem;
use super::locate::KeyPath;
use super::types::{Config, DestinationConfig, MessageConfig, MqttDestination, RuleConfig};
use super::units;
use crate::rules::Rule;
use crate::rules::template::Template;
use crate::rules::topic_filter::TopicFilter;

/// Every problem in `config`, in file order.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let root = KeyPath::root();
    let relay = root.key("relay");
    for (key, value) in [
        ("http", &config.relay.http),
        ("broker", &config.relay.broker),
    ] {
        if let Some(addr) = value
            && let Err(e) = check_socket_addr(addr)
        {
            out.push(Problem::new(relay.key(key), e));
        }
    }

    let mut cameras: HashMap<&str, usize> = HashMap::new();
    for (i, c) in config.camera.iter().enumerate() {
        let p = root.key("camera").index(i);
        check_name(&c.name, &p, "camera", &mut cameras, i, &mut out);
        if let Err(e) = check_camera_url(&c.url) {
            out.push(Problem::new(p.key("url"), e));
        }
    }

    for (name, d) in &config.destination {
        let p = root.key("destination").key(name);
        match d {
            DestinationConfig::Mqtt(m) => check_mqtt(m, &p, &mut out),
        }
    }

    for (i, m) in config.mqtt_source.iter().enumerate() {
        let p = root.key("mqtt_source").index(i);
        // Source names share the camera namespace: rules name them in `cameras`.
        check_name(
            &m.name,
            &p,
            "camera or mqtt_source",
            &mut cameras,
            i,
            &mut out,
        );
        match check_mqtt_url(&m.url) {
            Err(e) => out.push(Problem::new(p.key("url"), e)),
            Ok(()) if !m.url.starts_with("mqtt://") => out.push(Problem::new(
                p.key("url"),
                format!("\"{}\": an mqtt_source supports mqtt:// only", m.url),
            )),
            Ok(()) => {}
        }
        if m.topics.is_empty() {
            out.push(Problem::new(
                p.key("topics"),
                "no topic filters: add e.g. topics = [\"sensors/#\"]",
            ));
        }
        for (j, t) in m.topics.iter().enumerate() {
            if let Err(e) = check_topic_filter(t) {
                out.push(Problem::new(p.key("topics").index(j), e));
            }
        }
        check_qos(m.qos, p.key("qos"), &mut out);
    }
    for (i, c) in config.command.iter().enumerate() {
        let p = root.key("command").index(i);
        match config.destination.get(&c.destination) {
            Some(DestinationConfig::Mqtt(m)) if !m.url.starts_with("mqtt://") => {
                out.push(Problem::new(
                    p.key("destination"),
                    format!(
                        "commands support mqtt:// destinations only, not \"{}\"",
                        m.url
                    ),
                ))
            }
            Some(_) => {}
            None => out.push(Problem::new(
                p.key("destination"),
                format!(
                    "unknown destination \"{}\" (known: {})",
                    c.destination,
                    known(config.destination.keys().map(String::as_str))
                ),
            )),
        }
        if !config.camera.iter().any(|cam| cam.name == c.camera) {
            out.push(Problem::new(
                p.key("camera"),
                format!(
                    "unknown camera \"{}\" (known: {})",
                    c.camera,
                    known(config.camera.iter().map(|c| c.name.as_str()))
                ),
            ));
        }
        if let Err(e) = check_topic_filter(&c.topic) {
            out.push(Problem::new(p.key("topic"), e));
        }
        if let Some(t) = &c.reply_topic
            && (t.is_empty() || t.contains(['+', '#']))
        {
            out.push(Problem::new(
                p.key("reply_topic"),
                format!("\"{t}\" is not a topic to publish on (no wildcards, not empty)"),
            ));
        }
    }

    let mut rules: HashMap<&str, usize> = HashMap::new();
    for (i, r) in config.rule.iter().enumerate() {
        let p = root.key("rule").index(i);
        check_name(&r.name, &p, "rule", &mut rules, i, &mut out);
        if let Some(list) = &r.cameras {
            for (j, cam) in list.iter().enumerate() {
                if !cameras.contains_key(cam.as_str()) {
                    out.push(Problem::new(
                        p.key("cameras").index(j),
                        format!(
                            "unknown camera \"{cam}\" (known: {})",
                            known(cameras_in(config))
                        ),
                    ));
                }
            }
        }
        if let Some(topic) = &r.topic
            && let Err(e) = TopicFilter::parse(topic)
        {
            out.push(Problem::new(
                p.key("topic"),
                format!(
                    "invalid topic expression at position {}: {}",
                    e.position, e.reason
                ),
            ));
        }
        if let Some(when) = &r.when
            && let Err(e) = check_json_path(when)
        {
            out.push(Problem::new(p.key("when"), e));
        }
        if r.to.is_empty() && !r.drop {
            out.push(Problem::new(
                p.clone(),
                "rule has neither `to` nor `drop = true`: add `to = [\"DESTINATION\"]`",
            ));
        }
        if r.drop && !r.to.is_empty() {
            out.push(Problem::new(
                p.key("to"),
                "a rule with `drop = true` delivers nothing: remove `to` or `drop`",
            ));
        }
        for (j, dest) in r.to.iter().enumerate() {
            if !config.destination.contains_key(dest) {
                out.push(Problem::new(
                    p.key("to").index(j),
                    format!(
                        "unknown destination \"{dest}\" (known: {})",
                        known(config.destination.keys().map(String::as_str))
                    ),
                ));
            }
        }
        check_qos(r.qos, p.key("qos"), &mut out);
        if r.payload.is_empty() {
            out.push(Problem::new(
                p.key("payload"),
                "empty payload: use \"axis\" or a template like \"{topic} {data.active}\"",
            ));
        }
        if let Some(rate) = &r.max_rate
            && let Err(e) = units::parse_rate(rate)
        {
            out.push(Problem::new(p.key("max_rate"), format!("\"{rate}\": {e}")));
        }
        check_templates(r, &p, &mut out);
    }
    out
}

/// Templates compile, and a payload template that looks like JSON renders as JSON.
fn check_templates(r: &RuleConfig, p: &KeyPath, out: &mut Vec<Problem>) {
    let texts = [
        ("prefix", Some(&r.prefix)),
        ("mqtt_topic", r.mqtt_topic.as_ref()),
    ];
    for (key, text) in texts {
        if let Some(text) = text
            && let Err(e) = Template::parse(text)
        {
            out.push(Problem::new(p.key(key), format!("\"{text}\": {e}")));
        }
    }
    if r.payload != "axis" && !r.payload.is_empty() {
        match Template::parse_payload(&r.payload) {
            Err(e) => out.push(Problem::new(
                p.key("payload"),
                format!("\"{}\": {e}", r.payload),
            )),
            Ok(t) => {
                if let Err(e) = t.check_json() {
                    out.push(Problem::new(p.key("payload"), e));
                }
            }
        }
    }
}

/// Things that work but may not do what was meant: template fields an event can lack.
pub fn warnings(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, rc) in config.rule.iter().enumerate() {
        let p = KeyPath::root().key("rule").index(i);
        if let Some(w) = rc.when.as_deref().and_then(member_filter_on_strings) {
            out.push(Problem::new(p.key("when"), w));
        }
        let Ok(rule) = Rule::compile(rc) else {
            continue;
        };
        for (key, field) in rule.optional_fields() {
            let missing = if key == "payload" && rc.payload.trim_start().starts_with("{{") {
                "null (or empty inside a string)"
            } else {
                "empty"
            };
            out.push(Problem::new(
                p.key(key),
                format!("{field} renders {missing} for events that lack it"),
            ));
        }
    }
    out
}

/// Camera names as rules see them: cameras and MQTT sources.
fn cameras_in(config: &Config) -> impl Iterator<Item = &str> {
    config
        .camera
        .iter()
        .map(|c| c.name.as_str())
        .chain(config.mqtt_source.iter().map(|m| m.name.as_str()))
}

/// `a, b, c`, or `none` when there are no names.
fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn check_name<'a>(
    name: &'a str,
    p: &KeyPath,
    what: &str,
    seen: &mut HashMap<&'a str, usize>,
    i: usize,
    out: &mut Vec<Problem>,
) {
    if name.trim().is_empty() {
        out.push(Problem::new(p.key("name"), format!("empty {what} name")));
    } else if let Some(first) = seen.get(name) {
        out.push(Problem::new(
            p.key("name"),
            format!("duplicate {what} name \"{name}\" (also {what}[{first}])"),
        ));
    } else {
        seen.insert(name, i);
    }
}

fn check_mqtt(m: &MqttDestination, p: &KeyPath, out: &mut Vec<Problem>) {
    if let Err(e) = check_mqtt_url(&m.url) {
        out.push(Problem::new(p.key("url"), e));
    }
    for (key, msg) in [
        ("last_will", &m.last_will),
        ("connect_message", &m.connect_message),
    ] {
        if let Some(MessageConfig { qos, .. }) = msg {
            check_qos(*qos, p.key(key).key("qos"), out);
        }
    }
    let b = p.key("buffer");
    match units::parse_bytes(&m.buffer.max_bytes) {
        Ok(0) => out.push(Problem::new(
            b.key("max_bytes"),
            "must be more than 0 bytes",
        )),
        Ok(_) => {}
        Err(e) => out.push(Problem::new(
            b.key("max_bytes"),
            format!("\"{}\": {e}", m.buffer.max_bytes),
        )),
    }
    if let Some(age) = &m.buffer.max_age
        && let Err(e) = units::parse_duration(age)
    {
        out.push(Problem::new(b.key("max_age"), format!("\"{age}\": {e}")));
    }
}

fn check_qos(qos: u8, at: KeyPath, out: &mut Vec<Problem>) {
    if qos > 2 {
        out.push(Problem::new(at, format!("qos {qos} is not 0, 1 or 2")));
    }
}

/// `host:port` where host is an IP address, `[v6]` or a host name.
fn check_socket_addr(s: &str) -> Result<(), String> {
    let expected = "expected host:port, e.g. 127.0.0.1:1883 or localhost:9090";
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("\"{s}\" has no port: {expected}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("\"{s}\": port \"{port}\" is not a number 0-65535"));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if host_ok {
        Ok(())
    } else {
        Err(format!("\"{s}\": invalid host \"{host}\": {expected}"))
    }
}

fn check_camera_url(s: &str) -> Result<(), String> {
    let expected = "expected http://HOST, https://HOST or emulator:";
    if s.starts_with("emulator:") {
        return Ok(());
    }
    let url = url::Url::parse(s).map_err(|e| format!("invalid URL \"{s}\" ({e}): {expected}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme \"{}\" in \"{s}\": {expected}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL \"{s}\" has no host: {expected}"));
    }
    Ok(())
}

fn check_mqtt_url(s: &str) -> Result<(), String> {
    let expected = "expected mqtt://HOST[:PORT] (or mqtts://, ws://, wss://)";
    let url = url::Url::parse(s).map_err(|e| format!("invalid URL \"{s}\" ({e}): {expected}"))?;
    let scheme = url.scheme();
    if !matches!(scheme, "mqtt" | "mqtts" | "ws" | "wss") {
        return Err(format!(
            "unsupported scheme \"{scheme}\" in \"{s}\": {expected}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL \"{s}\" has no host: {expected}"));
    }
    if matches!(scheme, "mqtt" | "mqtts") && !matches!(url.path(), "" | "/") {
        return Err(format!(
            "URL \"{s}\" has a path \"{}\", which {scheme}:// does not use: {expected}",
            url.path()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "URL \"{s}\" holds credentials: use `username` and `password` (or `password_file`)"
        ));
    }
    Ok(())
}

/// `$.message.data[?(@.active == '1')]` filters the *values* of `data`, which are strings
/// without members, so it never selects anything (RFC 9535); say what was likely meant.
fn member_filter_on_strings(when: &str) -> Option<String> {
    ["data", "source", "key"].iter().find_map(|items| {
        let at = when.find(&format!(".{items}[?"))?;
        let filter = &when[at + items.len() + 3..];
        let member = filter
            .trim_start_matches('(')
            .strip_prefix("@.")?
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()?;
        Some(format!(
            "\"{when}\" filters the values of `{items}` (strings, which have no member \"{member}\") and never matches: write $.message[?(@.{member} == ...)] or $.message.{items}[?(@ == ...)]"
        ))
    })
}

/// An MQTT subscription filter: not empty, `#` only as the last level, wildcards alone in
/// their level.
fn check_topic_filter(f: &str) -> Result<(), String> {
    let levels: Vec<&str> = f.split('/').collect();
    let ok = !f.is_empty()
        && levels.iter().enumerate().all(|(i, l)| {
            (*l == "#" && i == levels.len() - 1) || *l == "+" || !l.contains(['+', '#'])
        });
    match ok {
        true => Ok(()),
        false => Err(format!(
            "\"{f}\" is not an MQTT topic filter (`+` and `#` stand alone in a level, `#` last)"
        )),
    }
}

/// Parses a JSONPath (RFC 9535) the way the rules engine will.
fn check_json_path(s: &str) -> Result<(), String> {
    use jsonpath_rust::parser::errors::JsonPathError;
    match jsonpath_rust::parser::parse_json_path(s) {
        Ok(_) => Ok(()),
        Err(JsonPathError::PestError(e)) => {
            // `e.location` is pest's `InputLocation` (`Pos(n)` or `Span((n, m))`); its first
            // number is the byte offset. Read from Debug to avoid depending on pest directly.
            let location = format!("{:?}", e.location);
            let position: String = location
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            let what = e.variant.message();
            match position.is_empty() {
                true => Err(format!("invalid JSONPath \"{s}\": {what}")),
                false => Err(format!(
                    "invalid JSONPath \"{s}\" at position {position}: {what}"
                )),
            }
        }
        Err(e) => Err(format!("invalid JSONPath \"{s}\": {e}")),
    }
}
