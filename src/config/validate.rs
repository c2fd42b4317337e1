//! The validation pass: every semantic problem of a deserialized config, as key paths.
//!
//! Runs after `${VAR}` and secret files are filled, so it checks the values the relay will
//! use. It never stops at the first problem.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};

use super::durations;
use super::error::Problem;
use super::locate::KeyPath;
use super::types::{
    AwsIotCoreDestination, AzureBlobDestination, AzureIotHubDestination, BatchConfig, BufferConfig,
    CommandAction, Config, DestinationConfig, MessageConfig, MqttDestination, RelayConfig,
    RetainPolicy, RuleConfig, S3Destination,
};
use super::units;
use crate::rules::Rule;
use crate::rules::template::Template;
use crate::rules::topic_filter::TopicFilter;
use crate::sinks::mqtt::aws;
use crate::sinks::mqtt::azure::ConnectionString;
use crate::sinks::object_store::azure_blob::{ContainerTarget, StorageConnectionString};
use crate::sinks::object_store::batch::KeyTemplate;

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
    check_broker_auth(&config.relay, &relay, &mut out);
    check_http_auth(&config.relay, &relay, &mut out);
    if let Err(e) = units::parse_duration(&config.relay.shutdown_timeout) {
        out.push(Problem::new(relay.key("shutdown_timeout"), e));
    }
    if config.relay.status_topic.contains(['+', '#', '\0']) {
        out.push(Problem::new(
            relay.key("status_topic"),
            "a topic to publish on cannot hold the wildcards + or #",
        ));
    }

    let mut cameras: HashMap<&str, usize> = HashMap::new();
    for (i, c) in config.camera.iter().enumerate() {
        let p = root.key("camera").index(i);
        check_name(&c.name, &p, "camera", &mut cameras, i, &mut out);
        if let Err(e) = check_camera_url(&c.url) {
            out.push(Problem::new(p.key("url"), e));
        }
        match units::parse_duration(&c.heartbeat) {
            Err(e) => out.push(Problem::new(p.key("heartbeat"), e)),
            Ok(d) if d < std::time::Duration::from_millis(100) => out.push(Problem::new(
                p.key("heartbeat"),
                "below 100ms: a camera cannot answer that often",
            )),
            Ok(_) => {}
        }
        if c.vendor == crate::config::Vendor::Onvif && c.transport != crate::config::Transport::Rtsp
        {
            out.push(Problem::new(
                p.key("vendor"),
                "vendor applies to transport = \"rtsp\" (pullpoint is ONVIF already)",
            ));
        }
        if let Some(u) = &c.rtsp_url {
            let parsed = url::Url::parse(u);
            if c.transport != crate::config::Transport::Rtsp {
                out.push(Problem::new(
                    p.key("rtsp_url"),
                    "rtsp_url applies to transport = \"rtsp\"",
                ));
            } else if !parsed
                .as_ref()
                .is_ok_and(|x| x.scheme() == "rtsp" && x.host_str().is_some_and(|h| !h.is_empty()))
            {
                out.push(Problem::new(
                    p.key("rtsp_url"),
                    format!(
                        "\"{}\" is not rtsp://HOST[:PORT]/PATH",
                        super::redact_url(u)
                    ),
                ));
            }
        }
        if let Err(e) = units::parse_duration(&c.max_clock_skew) {
            out.push(Problem::new(p.key("max_clock_skew"), e));
        }
        if c.transport == crate::config::Transport::Pullpoint && c.url.starts_with("emulator:") {
            out.push(Problem::new(
                p.key("transport"),
                "the in-process emulator speaks WebSocket only: pullpoint needs http(s)://HOST",
            ));
        }
        for d in c.aliased_durations() {
            d.check(&p, &mut out);
        }
        if c.channel == 0 {
            out.push(Problem::new(
                p.key("channel"),
                "video channels count from 1 (camera=1 is the first)",
            ));
        }
        if let Some(r) = &c.snapshot_resolution
            && !is_resolution(r)
        {
            out.push(Problem::new(
                p.key("snapshot_resolution"),
                format!("\"{r}\" is not WIDTHxHEIGHT, e.g. \"640x480\""),
            ));
        }
    }

    for (name, d) in &config.destination {
        let p = root.key("destination").key(name);
        match d {
            DestinationConfig::Mqtt(m) => check_mqtt(m, &p, &mut out),
            DestinationConfig::AzureIotHub(a) => check_azure(a, &p, &mut out),
            DestinationConfig::AwsIotCore(a) => check_aws(a, &p, &mut out),
            DestinationConfig::S3(s) => check_s3(s, &p, &mut out),
            DestinationConfig::AzureBlob(a) => check_azure_blob(a, &p, &mut out),
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
                format!(
                    "\"{}\": an mqtt_source supports mqtt:// only",
                    super::redact_url(&m.url)
                ),
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
        check_command_transport(c, config.destination.get(&c.destination), &p, &mut out);
        if let Err(e) = units::parse_rate(&c.max_rate) {
            out.push(Problem::new(
                p.key("max_rate"),
                format!("\"{}\": {e}", c.max_rate),
            ));
        }
        if !config.destination.contains_key(&c.destination) {
            out.push(Problem::new(
                p.key("destination"),
                format!(
                    "unknown destination \"{}\" (known: {})",
                    c.destination,
                    known(config.destination.keys().map(String::as_str))
                ),
            ));
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
        match c.action {
            CommandAction::Snapshot if c.to.is_empty() => out.push(Problem::new(
                p.key("action"),
                "a snapshot command needs `to`: the s3 or azure-blob destinations that store the picture",
            )),
            CommandAction::Snapshot => {}
            CommandAction::VirtualInput if !c.to.is_empty() => out.push(Problem::new(
                p.key("to"),
                "only `action = \"snapshot\"` stores anything: remove `to`",
            )),
            CommandAction::VirtualInput => {}
        }
        for (j, dest) in c.to.iter().enumerate() {
            if !matches!(
                config.destination.get(dest),
                Some(DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_))
            ) {
                out.push(Problem::new(
                    p.key("to").index(j),
                    format!("\"{dest}\" is not an s3 or azure-blob destination (snapshots are stored in object stores only)"),
                ));
            }
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
            if let Some(DestinationConfig::AwsIotCore(_)) = config.destination.get(dest) {
                check_rule_for_aws(r, dest, &p, j, &mut out);
            }
        }
        if r.snapshot
            && !r.to.iter().any(|d| {
                matches!(
                    config.destination.get(d),
                    Some(DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_))
                )
            })
        {
            out.push(Problem::new(
                p.key("snapshot"),
                "snapshots are stored in object stores only: add an s3 or azure-blob destination to `to`, or remove `snapshot`",
            ));
        }
        check_qos(r.qos, p.key("qos"), &mut out);
        if r.typed_values && r.payload != "axis" && r.payload != "summary" {
            out.push(Problem::new(
                p.key("typed_values"),
                "typed_values changes the camera-format payload only: remove it, or the payload template",
            ));
        }
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
    if r.payload != "axis" && r.payload != "summary" && !r.payload.is_empty() {
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
fn rule_warnings(config: &Config) -> Vec<Problem> {
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
    check_availability_topic(&m.availability_topic, false, p, out);
    check_inflight(m.inflight, None, p, out);
    if let Err(e) = check_mqtt_url(&m.url) {
        out.push(Problem::new(p.key("url"), e));
    }
    durations::check_mqtt(m.aliased_durations(), p, out);
    for (key, msg) in [
        ("last_will", &m.last_will),
        ("connect_message", &m.connect_message),
    ] {
        if let Some(MessageConfig { qos, .. }) = msg {
            check_qos(*qos, p.key(key).key("qos"), out);
        }
    }
    check_buffer(&m.buffer, p, out);
    match units::parse_bytes(&m.max_packet_size) {
        Ok(n) if n < 1024 || n > crate::sinks::mqtt::limits::MAX_PACKET_BYTES as u64 => {
            out.push(Problem::new(
                p.key("max_packet_size"),
                format!(
                    "\"{}\": must be between 1KiB and 256MiB (MQTT's own limit)",
                    m.max_packet_size
                ),
            ))
        }
        Ok(_) => {}
        Err(e) => out.push(Problem::new(
            p.key("max_packet_size"),
            format!("\"{}\": {e}", m.max_packet_size),
        )),
    }
    if m.home_assistant_prefix.is_empty() || m.home_assistant_prefix.contains(['+', '#', '\0']) {
        out.push(Problem::new(
            p.key("home_assistant_prefix"),
            "a topic prefix cannot be empty or hold the wildcards + or #",
        ));
    }
    let tls_scheme = m.url.starts_with("mqtts://") || m.url.starts_with("wss://");
    for (key, set) in [
        ("ca_file", m.ca_file.is_some()),
        ("cert_file", m.cert_file.is_some()),
        ("key_file", m.key_file.is_some()),
        ("alpn", m.alpn.is_some()),
        ("tls_insecure_skip_verify", m.tls_insecure_skip_verify),
    ] {
        if set && !tls_scheme {
            out.push(Problem::new(
                p.key(key),
                format!(
                    "{key} is a TLS setting, but url \"{}\" is not mqtts:// or wss://",
                    super::redact_url(&m.url)
                ),
            ));
        }
    }
    check_client_cert(m.cert_file.is_some(), m.key_file.is_some(), p, out);
    if let Some(alpn) = &m.alpn {
        for (i, a) in alpn.iter().enumerate() {
            if a.is_empty() || a.len() > 255 {
                out.push(Problem::new(
                    p.key("alpn").index(i),
                    "an ALPN protocol name has 1 to 255 bytes",
                ));
            }
        }
    }
}

fn check_client_cert(cert: bool, key: bool, p: &KeyPath, out: &mut Vec<Problem>) {
    match (cert, key) {
        (true, false) => out.push(Problem::new(
            p.key("cert_file"),
            "cert_file needs key_file (the certificate's private key)",
        )),
        (false, true) => out.push(Problem::new(
            p.key("key_file"),
            "key_file needs cert_file (the client certificate)",
        )),
        _ => {}
    }
}

fn check_buffer(buffer: &BufferConfig, p: &KeyPath, out: &mut Vec<Problem>) {
    let b = p.key("buffer");
    match units::parse_bytes(&buffer.max_bytes) {
        Ok(0) => out.push(Problem::new(
            b.key("max_bytes"),
            "must be more than 0 bytes",
        )),
        Ok(_) => {}
        Err(e) => out.push(Problem::new(
            b.key("max_bytes"),
            format!("\"{}\": {e}", buffer.max_bytes),
        )),
    }
    if let Some(age) = &buffer.max_age
        && let Err(e) = units::parse_duration(age)
    {
        out.push(Problem::new(b.key("max_age"), format!("\"{age}\": {e}")));
    }
}

fn check_batch(batch: &BatchConfig, key: Option<&str>, p: &KeyPath, out: &mut Vec<Problem>) {
    let b = p.key("batch");
    if batch.max_events == 0 {
        out.push(Problem::new(b.key("max_events"), "must be at least 1"));
    }
    match units::parse_bytes(&batch.max_bytes) {
        Ok(0) => out.push(Problem::new(
            b.key("max_bytes"),
            "must be more than 0 bytes",
        )),
        Ok(_) => {}
        Err(e) => out.push(Problem::new(
            b.key("max_bytes"),
            format!("\"{}\": {e}", batch.max_bytes),
        )),
    }
    match units::parse_duration(&batch.max_age) {
        Ok(d) if d.is_zero() => out.push(Problem::new(b.key("max_age"), "must be more than 0s")),
        Ok(_) => {}
        Err(e) => out.push(Problem::new(
            b.key("max_age"),
            format!("\"{}\": {e}", batch.max_age),
        )),
    }
    if let Some(key) = key
        && let Err(e) = KeyTemplate::parse(key)
    {
        out.push(Problem::new(p.key("key"), e));
    }
}

/// `availability_topic`: `{serial}` and `{camera}` only, no wildcards; on AWS IoT Core also
/// its topic limits (checked with a 12-character serial, the length of an Axis serial).
fn check_availability_topic(t: &str, aws_limits: bool, p: &KeyPath, out: &mut Vec<Problem>) {
    if let Err(e) = crate::observe::availability::check_template(t) {
        out.push(Problem::new(p.key("availability_topic"), e));
    } else if aws_limits
        && !t.is_empty()
        && let Err(e) = aws::check_topic(&t.replace("{serial}", "B8A44F3E9D21"))
    {
        out.push(Problem::new(p.key("availability_topic"), e));
    }
}

fn check_snapshot_key(key: Option<&str>, p: &KeyPath, out: &mut Vec<Problem>) {
    if let Some(key) = key
        && let Err(e) = KeyTemplate::parse_snapshot(key)
    {
        out.push(Problem::new(p.key("snapshot_key"), e));
    }
}

/// `WIDTHxHEIGHT`, both positive whole numbers.
fn is_resolution(r: &str) -> bool {
    r.split_once('x').is_some_and(|(w, h)| {
        [w, h].iter().all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && n.parse::<u32>().is_ok_and(|n| n > 0)
        })
    })
}

fn check_s3(s: &S3Destination, p: &KeyPath, out: &mut Vec<Problem>) {
    check_buffer(&s.buffer, p, out);
    check_batch(&s.batch, s.key.as_deref(), p, out);
    check_snapshot_key(s.snapshot_key.as_deref(), p, out);
    if s.bucket.trim().is_empty() {
        out.push(Problem::new(p.key("bucket"), "must not be empty"));
    }
    if let Some(e) = &s.endpoint
        && !matches!(
            url::Url::parse(e)
                .map(|u| u.scheme().to_string())
                .as_deref(),
            Ok("http" | "https")
        )
    {
        out.push(Problem::new(
            p.key("endpoint"),
            format!("\"{e}\": not an http:// or https:// URL"),
        ));
    }
    if s.access_key_id.is_some()
        != (s.secret_access_key.is_some() || s.secret_access_key_file.is_some())
    {
        out.push(Problem::new(
            p.clone(),
            "access_key_id and secret_access_key (or secret_access_key_file) come in pairs; leave both out to use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
}

fn check_azure_blob(a: &AzureBlobDestination, p: &KeyPath, out: &mut Vec<Problem>) {
    check_buffer(&a.buffer, p, out);
    check_batch(&a.batch, a.key.as_deref(), p, out);
    check_snapshot_key(a.snapshot_key.as_deref(), p, out);
    let has_sas = a.sas_url.is_some() || a.sas_url_file.is_some();
    let has_cs = a.connection_string.is_some() || a.connection_string_file.is_some();
    match (has_sas, has_cs) {
        (true, true) => out.push(Problem::new(
            p.clone(),
            "set sas_url or connection_string, not both",
        )),
        (false, false) => out.push(Problem::new(
            p.clone(),
            "needs sas_url (a container SAS URL) or connection_string with container",
        )),
        _ => {}
    }
    if let Some(u) = &a.sas_url
        && let Err(e) = ContainerTarget::from_sas_url(u)
    {
        out.push(Problem::new(p.key("sas_url"), e));
    }
    if let Some(cs) = &a.connection_string {
        if let Err(e) = StorageConnectionString::parse(cs) {
            out.push(Problem::new(p.key("connection_string"), e));
        }
        if a.container.as_deref().is_none_or(str::is_empty) {
            out.push(Problem::new(
                p.key("container"),
                "needed with connection_string: the container to write to",
            ));
        }
    }
}

/// `inflight`: at least 1, and at most what the destination kind takes (`limit`, with why).
fn check_inflight(n: u16, limit: Option<(u16, &str)>, p: &KeyPath, out: &mut Vec<Problem>) {
    if n == 0 {
        out.push(Problem::new(
            p.key("inflight"),
            "must be at least 1 (the most publishes the paced window may keep in flight)",
        ));
    }
    if let Some((max, why)) = limit
        && n > max
    {
        out.push(Problem::new(
            p.key("inflight"),
            format!("{n}: must be at most {max} ({why})"),
        ));
    }
}

fn check_azure(a: &AzureIotHubDestination, p: &KeyPath, out: &mut Vec<Problem>) {
    check_availability_topic(&a.availability_topic, false, p, out);
    check_inflight(a.inflight, None, p, out);
    check_buffer(&a.buffer, p, out);
    durations::check_mqtt(a.aliased_durations(), p, out);
    check_client_cert(a.cert_file.is_some(), a.key_file.is_some(), p, out);
    let at = match a.connection_string_file {
        Some(_) => p.key("connection_string_file"),
        None => p.key("connection_string"),
    };
    match &a.connection_string {
        // An unreadable connection_string_file is reported where it is read.
        None if a.connection_string_file.is_some() => {}
        None => out.push(Problem::new(
            p.clone(),
            "needs connection_string (HostName=...;DeviceId=...;SharedAccessKey=...) or connection_string_file",
        )),
        Some(cs) => match ConnectionString::parse(cs) {
            Err(e) => out.push(Problem::new(at, e)),
            Ok(cs) if cs.shared_access_key.is_none() && a.cert_file.is_none() => {
                out.push(Problem::new(
                    at,
                    "connection string has no SharedAccessKey: add it, or set cert_file and key_file for an X.509 device",
                ))
            }
            Ok(_) => {}
        },
    }
    match units::parse_duration(&a.sas_ttl) {
        Ok(d) if d.as_secs() == 0 => out.push(Problem::new(
            p.key("sas_ttl"),
            "must be at least 1s (\"1h\" is usual)",
        )),
        Ok(_) => {}
        Err(e) => out.push(Problem::new(
            p.key("sas_ttl"),
            format!("\"{}\": {e}", a.sas_ttl),
        )),
    }
}

fn check_aws(a: &AwsIotCoreDestination, p: &KeyPath, out: &mut Vec<Problem>) {
    check_availability_topic(&a.availability_topic, true, p, out);
    check_inflight(
        a.inflight,
        Some((
            aws::MAX_INFLIGHT,
            "AWS IoT Core accepts at most 100 unacknowledged publishes per connection",
        )),
        p,
        out,
    );
    check_buffer(&a.buffer, p, out);
    durations::check_mqtt(a.aliased_durations(), p, out);
    let advice = [
        (
            "endpoint",
            a.endpoint.as_deref().is_some_and(|e| !e.is_empty()),
            "the device data endpoint, e.g. \"abc123-ats.iot.eu-north-1.amazonaws.com\" (aws iot describe-endpoint --endpoint-type iot:Data-ATS)",
        ),
        (
            "thing_name",
            a.thing_name.as_deref().is_some_and(|e| !e.is_empty()),
            "the thing's name, used as client id",
        ),
        (
            "cert_file",
            a.cert_file.is_some(),
            "the thing's certificate (PEM)",
        ),
        (
            "key_file",
            a.key_file.is_some(),
            "the certificate's private key (PEM)",
        ),
        (
            "ca_file",
            a.ca_file.is_some(),
            "the Amazon root CA, AmazonRootCA1.pem",
        ),
    ];
    for (key, present, what) in advice {
        if !present {
            out.push(Problem::new(
                p.clone(),
                format!("required key {key} is missing: {what}"),
            ));
        }
    }
    if let Some(e) = &a.endpoint
        && (e.contains("://") || e.contains('/') || e.contains(':'))
    {
        out.push(Problem::new(
            p.key("endpoint"),
            format!("\"{e}\": give the host name only (set the port with `port`)"),
        ));
    }
    for (key, msg) in [
        ("last_will", &a.last_will),
        ("connect_message", &a.connect_message),
    ] {
        if let Some(m) = msg {
            check_qos(m.qos, p.key(key).key("qos"), out);
            if let Err(e) = aws::check_topic(&m.topic) {
                out.push(Problem::new(p.key(key).key("topic"), e));
            }
        }
    }
}

/// Topics a rule can produce that AWS IoT Core refuses (more than 7 slashes, 256 bytes).
fn check_rule_for_aws(r: &RuleConfig, dest: &str, p: &KeyPath, j: usize, out: &mut Vec<Problem>) {
    let limits = "AWS IoT Core refuses topics with more than 7 slashes or 256 bytes";
    if let Some(t) = &r.mqtt_topic {
        if let Err(e) = aws::check_topic(t) {
            out.push(Problem::new(
                p.key("mqtt_topic"),
                format!("rule sends to \"{dest}\" ({limits}): the template alone breaks it: {e}"),
            ));
        }
    } else if r.include_condition_name {
        out.push(Problem::new(
            p.key("to").index(j),
            format!(
                "\"{dest}\" is AWS IoT Core ({limits}), and this rule's default topic \
                 {{prefix}}/event/{{path}} can exceed 7 slashes \
                 (axis/{{serial}}/event/tns:onvif/Device/tns:axis/IO/VirtualInput/$source/port/1 has 10): \
                 set include_condition_name = false (the topic is then {{prefix}} alone), or a short \
                 mqtt_topic such as \"{{camera}}/events\"; include_namespaces = false shortens the \
                 topic but event paths with sources can still exceed 7 slashes"
            ),
        ));
    } else if let Err(e) = aws::check_topic(&r.prefix) {
        out.push(Problem::new(
            p.key("prefix"),
            format!("rule sends to \"{dest}\" ({limits}): {e}"),
        ));
    }
}

/// Settings that work but not as written (printed by `check`, logged by `run`).
pub fn warnings(config: &Config) -> Vec<Problem> {
    let mut out = http_warnings(&config.relay);
    out.extend(rule_warnings(config));
    out.extend(destination_warnings(config));
    out.extend(durations::deprecation_warnings(config));
    out
}

/// Rule settings a destination kind cannot honour (it adapts them), and a broker certificate
/// left unchecked.
fn destination_warnings(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let root = KeyPath::root();
    for (i, r) in config.rule.iter().enumerate() {
        let p = root.key("rule").index(i);
        for dest in &r.to {
            match config.destination.get(dest) {
                Some(DestinationConfig::AzureIotHub(_)) => {
                    if r.retain != RetainPolicy::None {
                        out.push(Problem::new(
                            p.key("retain"),
                            format!("\"{dest}\" is Azure IoT Hub, which has no retained messages: sent without retain (set retain = \"none\")"),
                        ));
                    }
                    if r.qos == 2 {
                        out.push(Problem::new(
                            p.key("qos"),
                            format!("\"{dest}\" is Azure IoT Hub, which has no QoS 2: sent with QoS 1 (set qos = 1)"),
                        ));
                    }
                }
                Some(DestinationConfig::AwsIotCore(_)) if r.qos == 2 => {
                    out.push(Problem::new(
                        p.key("qos"),
                        format!("\"{dest}\" is AWS IoT Core, which has no QoS 2: sent with QoS 1 (set qos = 1)"),
                    ));
                }
                _ => {}
            }
        }
    }
    for (name, d) in &config.destination {
        if let DestinationConfig::Mqtt(m) = d
            && m.home_assistant
            && let Some(will) = &m.last_will
            && m.connect_message
                .as_ref()
                .is_none_or(|c| c.topic != will.topic)
        {
            out.push(Problem::new(
                root.key("destination").key(name).key("last_will"),
                "Home Assistant availability leaves the relay out: no connect_message on the last will's topic ever says it is back (add one with the same topic)",
            ));
        }
        if let DestinationConfig::Mqtt(m) = d
            && m.tls_insecure_skip_verify
        {
            out.push(Problem::new(
                root.key("destination")
                    .key(name)
                    .key("tls_insecure_skip_verify"),
                "the broker's certificate is not checked: for tests only",
            ));
        }
    }
    out
}

fn check_qos(qos: u8, at: KeyPath, out: &mut Vec<Problem>) {
    if qos > 2 {
        out.push(Problem::new(at, format!("qos {qos} is not 0, 1 or 2")));
    }
}

/// `host:port` where host is an IP address, `[v6]` or a host name.
/// The embedded broker's login: both halves or neither, and required beyond loopback, where
/// anyone on the network could otherwise publish to every subscriber and read every event.
fn check_broker_auth(relay: &RelayConfig, at: &KeyPath, out: &mut Vec<Problem>) {
    let user = relay.broker_username.is_some();
    let pass = relay.broker_password.is_some();
    match (&relay.broker, user, pass) {
        (None, false, false) => {}
        (None, _, _) => out.push(Problem::new(
            at.key(if user { "broker_username" } else { "broker_password" }),
            "no embedded broker to log in to: set `broker` or remove the login",
        )),
        (Some(_), true, false) => out.push(Problem::new(
            at.key("broker_username"),
            "has no password: set `broker_password` or `broker_password_file`",
        )),
        (Some(_), false, true) => out.push(Problem::new(
            at.key("broker_password"),
            "has no user name: set `broker_username`",
        )),
        (Some(listen), false, false) if check_socket_addr(listen).is_ok() && !is_loopback(listen) => out.push(Problem::new(
            at.key("broker"),
            format!(
                "\"{listen}\" is reachable from the network, and the embedded broker would let anyone \
                 in: set `broker_username` and `broker_password` (or `broker_password_file`), \
                 or listen on loopback (\"127.0.0.1:1883\")"
            ),
        )),
        (Some(_), _, _) => {}
    }
}

/// The HTTP endpoint's login: both halves or neither, and only with an endpoint.
fn check_http_auth(relay: &RelayConfig, at: &KeyPath, out: &mut Vec<Problem>) {
    let user = relay.http_username.is_some();
    let pass = relay.http_password.is_some();
    match (&relay.http, user, pass) {
        (_, false, false) | (Some(_), true, true) => {}
        (None, _, _) => out.push(Problem::new(
            at.key(if user {
                "http_username"
            } else {
                "http_password"
            }),
            "no HTTP endpoint to protect: set `http` or remove the login",
        )),
        (Some(_), true, false) => out.push(Problem::new(
            at.key("http_username"),
            "has no password: set `http_password` or `http_password_file`",
        )),
        (Some(_), false, true) => out.push(Problem::new(
            at.key("http_password"),
            "has no user name: set `http_username`",
        )),
    }
}

/// `http` reachable from the network with no password: anyone there reads `/status` (camera
/// names, serials, topics, dead-lettered payloads). A warning, as a site network may be closed.
fn http_warnings(relay: &RelayConfig) -> Vec<Problem> {
    match &relay.http {
        Some(listen)
            if relay.http_password.is_none()
                && check_socket_addr(listen).is_ok()
                && !is_loopback(listen) =>
        {
            vec![Problem::new(
                KeyPath::root().key("relay").key("http"),
                format!(
                    "\"{listen}\" is reachable from the network and /status has no password: \
                     anyone there can read camera serials, topics and dead-lettered payloads; set \
                     `http_username` and `http_password` (or `http_password_file`), or listen on \
                     loopback (\"127.0.0.1:8080\")"
                ),
            )]
        }
        _ => Vec::new(),
    }
}

/// Whether `host:port` listens on loopback only (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How commands reach `c` over its destination's connection: a topic (and reply topic) on
/// brokers and AWS IoT Core, a direct method name on Azure IoT Hub; object stores carry none.
fn check_command_transport(
    c: &super::types::CommandConfig,
    dest: Option<&DestinationConfig>,
    p: &KeyPath,
    out: &mut Vec<Problem>,
) {
    let kind = match dest {
        None => return,
        Some(DestinationConfig::S3(_)) => "an s3 object store",
        Some(DestinationConfig::AzureBlob(_)) => "an azure-blob object store",
        Some(DestinationConfig::AzureIotHub(_)) => {
            match &c.method {
                None => out.push(Problem::new(
                    p.key("method"),
                    "required for an azure-iot-hub destination: the direct method name that runs this command",
                )),
                Some(m) if m.is_empty() || m.contains(['/', '#', '+', '?', '&', '=']) => out.push(
                    Problem::new(p.key("method"), format!("\"{m}\" is not a method name: letters, digits, `_`, `-` and `.`")),
                ),
                Some(_) => {}
            }
            for (key, set) in [
                ("topic", c.topic.is_some()),
                ("reply_topic", c.reply_topic.is_some()),
            ] {
                if set {
                    out.push(Problem::new(
                        p.key(key),
                        "an azure-iot-hub destination takes direct methods and C2D messages, not topics: remove it and set `method` (the reply goes back on the method's own response)",
                    ));
                }
            }
            return;
        }
        Some(DestinationConfig::Mqtt(_) | DestinationConfig::AwsIotCore(_)) => {
            if c.method.is_some() {
                out.push(Problem::new(
                    p.key("method"),
                    "only azure-iot-hub destinations take `method`: use `topic` here",
                ));
            }
            match &c.topic {
                None => out.push(Problem::new(
                    p.key("topic"),
                    "required: the topic filter where commands arrive",
                )),
                Some(t) => {
                    if let Err(e) = check_topic_filter(t) {
                        out.push(Problem::new(p.key("topic"), e));
                    }
                }
            }
            if let Some(DestinationConfig::AwsIotCore(_)) = dest {
                for (key, topic) in [("topic", &c.topic), ("reply_topic", &c.reply_topic)] {
                    if let Some(t) = topic
                        && let Err(e) = aws::check_topic(t)
                    {
                        out.push(Problem::new(p.key(key), e));
                    }
                }
            }
            return;
        }
    };
    out.push(Problem::new(
        p.key("destination"),
        format!(
            "\"{}\" is {kind}: commands arrive over an MQTT connection; name an mqtt, aws-iot-core or azure-iot-hub destination",
            c.destination
        ),
    ));
}

fn check_socket_addr(s: &str) -> Result<(), String> {
    let expected = "expected host:port, e.g. 127.0.0.1:1883 or localhost:8734";
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
    let shown = super::redact_url(s);
    let expected = "expected http://HOST, https://HOST or emulator:";
    if s.starts_with("emulator:") {
        return Ok(());
    }
    let url =
        url::Url::parse(s).map_err(|e| format!("invalid URL \"{shown}\" ({e}): {expected}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme \"{}\" in \"{shown}\": {expected}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL \"{shown}\" has no host: {expected}"));
    }
    Ok(())
}

fn check_mqtt_url(s: &str) -> Result<(), String> {
    let shown = super::redact_url(s);
    let expected = "expected mqtt://HOST[:PORT] (or mqtts://, ws://, wss://)";
    let url =
        url::Url::parse(s).map_err(|e| format!("invalid URL \"{shown}\" ({e}): {expected}"))?;
    let scheme = url.scheme();
    if !matches!(scheme, "mqtt" | "mqtts" | "ws" | "wss") {
        return Err(format!(
            "unsupported scheme \"{scheme}\" in \"{shown}\": {expected}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL \"{shown}\" has no host: {expected}"));
    }
    if matches!(scheme, "mqtt" | "mqtts") && !matches!(url.path(), "" | "/") {
        return Err(format!(
            "URL \"{shown}\" has a path \"{}\", which {scheme}:// does not use: {expected}",
            url.path()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "URL \"{shown}\" holds credentials: use `username` and `password` (or `password_file`)"
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

#[cfg(test)]
mod cloud_tests {
    //! Cloud destinations: required keys, connection strings, AWS topic limits, warnings.

    use crate::config::{load_str_with, locate_warnings};

    const KEY: &str = "c2VjcmV0LWRldmljZS1rZXktZm9yLXRlc3Rz";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<String> {
        match load_str_with(text, "c.toml", &no_env, None) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    fn warnings(text: &str) -> Vec<String> {
        let config = load_str_with(text, "c.toml", &no_env, None).unwrap();
        locate_warnings(&config, text, "c.toml")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn aws(rule: &str) -> String {
        format!(
            "[destination.aws]\nkind = \"aws-iot-core\"\nendpoint = \"a-ats.iot.eu-north-1.amazonaws.com\"\nthing_name = \"t\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nca_file = \"AmazonRootCA1.pem\"\n\n[[rule]]\nname = \"r\"\nto = [\"aws\"]\n{rule}"
        )
    }

    fn azure(cs: &str, rule: &str) -> String {
        format!(
            "[destination.hub]\nkind = \"azure-iot-hub\"\nconnection_string = \"{cs}\"\n\n[[rule]]\nname = \"r\"\nto = [\"hub\"]\n{rule}"
        )
    }

    #[test]
    fn availability_topics_take_serial_and_camera_only_and_fit_aws() {
        let errs = errors(
            "[destination.b]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\navailability_topic = \"cams/{topic}/+\"\n",
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with("c.toml:4: destination.b.availability_topic: ")
                && errs[0].contains("wildcards"),
            "{errs:#?}"
        );
        let errs = errors(
            "[destination.b]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\navailability_topic = \"cams/{topic}\"\n",
        );
        assert!(errs[0].contains("unknown placeholder {topic}"), "{errs:#?}");
        let deep = aws("").replace(
            "ca_file = \"AmazonRootCA1.pem\"\n",
            "ca_file = \"AmazonRootCA1.pem\"\navailability_topic = \"a/b/c/d/e/f/g/{serial}/x\"\n",
        ) + "include_condition_name = false\n";
        let errs = errors(&deep);
        assert!(
            errs.iter().any(
                |e| e.contains("destination.aws.availability_topic: ") && e.contains("slashes")
            ),
            "{errs:#?}"
        );
        for off_or_ok in ["\"\"", "\"sites/{camera}/{serial}/connection\""] {
            let text = format!(
                "[destination.b]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\navailability_topic = {off_or_ok}\n"
            );
            assert!(
                load_str_with(&text, "c.toml", &no_env, None).is_ok(),
                "{off_or_ok}"
            );
        }
    }

    #[test]
    fn aws_needs_endpoint_thing_and_three_pem_files() {
        let errs = errors("[destination.aws]\nkind = \"aws-iot-core\"\n");
        for key in ["endpoint", "thing_name", "cert_file", "key_file", "ca_file"] {
            assert!(
                errs.iter()
                    .any(|e| e.contains(&format!("required key {key} is missing"))),
                "{key}: {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0].starts_with("c.toml:1: destination.aws: "),
            "{errs:#?}"
        );
    }

    #[test]
    fn aws_rule_with_the_default_topic_is_refused_with_advice() {
        let errs = errors(&aws(""));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with("c.toml:11: rule[0].to[0]: \"aws\" is AWS IoT Core"),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains("include_condition_name = false"));
        assert!(errs[0].contains("mqtt_topic"));
        // The advice works.
        load_str_with(&aws("include_condition_name = false\n"), "c", &no_env, None).unwrap();
        load_str_with(
            &aws("mqtt_topic = \"{camera}/events\"\n"),
            "c",
            &no_env,
            None,
        )
        .unwrap();
        let errs = errors(&aws("mqtt_topic = \"a/b/c/d/e/f/g/h/{camera}\"\n"));
        assert!(
            errs[0].starts_with("c.toml:12: rule[0].mqtt_topic: "),
            "{errs:#?}"
        );
        assert!(errs[0].contains("8 slashes"), "{errs:#?}");
        let errs = errors(&aws(
            "include_condition_name = false\nprefix = \"a/b/c/d/e/f/g/h/i\"\n",
        ));
        assert!(
            errs[0].starts_with("c.toml:13: rule[0].prefix: "),
            "{errs:#?}"
        );
    }

    #[test]
    fn azure_connection_string_must_name_host_device_and_key() {
        let errs = errors(&azure("DeviceId=d;SharedAccessKey=abc=", ""));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "c.toml:3: destination.hub.connection_string: connection string lacks HostName"
            ),
            "{errs:#?}"
        );
        let errs = errors(&azure("HostName=h.azure-devices.net;DeviceId=d", ""));
        assert!(errs[0].contains("no SharedAccessKey"), "{errs:#?}");
        let errs = errors("[destination.hub]\nkind = \"azure-iot-hub\"\n");
        assert!(errs[0].contains("needs connection_string"), "{errs:#?}");
        // X.509 devices: the certificate replaces the key.
        let x509 = "[destination.hub]\nkind = \"azure-iot-hub\"\nconnection_string = \"HostName=h.azure-devices.net;DeviceId=d;x509=true\"\ncert_file = \"d.pem\"\nkey_file = \"d.key\"\n";
        load_str_with(x509, "c", &no_env, None).unwrap();
    }

    #[test]
    fn azure_retain_and_qos_2_are_warnings_not_errors() {
        let cs = format!("HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={KEY}");
        assert!(warnings(&azure(&cs, "")).is_empty());
        let w = warnings(&azure(&cs, "retain = \"property\"\nqos = 2\n"));
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].starts_with("c.toml:8: rule[0].retain: \"hub\" is Azure IoT Hub"),
            "{w:#?}"
        );
        assert!(w[1].starts_with("c.toml:9: rule[0].qos: "), "{w:#?}");
    }

    #[test]
    fn tls_keys_need_a_tls_url_and_come_in_pairs() {
        let errs =
            errors("[destination.b]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nca_file = \"ca.pem\"\n");
        assert!(
            errs[0].starts_with("c.toml:4: destination.b.ca_file: ca_file is a TLS setting"),
            "{errs:#?}"
        );
        let errs = errors(
            "[destination.b]\nkind = \"mqtt\"\nurl = \"mqtts://h\"\ncert_file = \"c.pem\"\n",
        );
        assert!(
            errs[0].starts_with("c.toml:4: destination.b.cert_file: cert_file needs key_file"),
            "{errs:#?}"
        );
        let ok = "[destination.b]\nkind = \"mqtt\"\nurl = \"wss://h/mqtt\"\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nalpn = [\"mqtt\"]\n";
        load_str_with(ok, "c", &no_env, None).unwrap();
    }

    #[test]
    fn design_example_destinations_load() {
        let text = r#"
[destination.cloud]
kind = "mqtt"                     # mqtt | azure-iot-hub | aws-iot-core | s3 | azure-blob
url = "mqtts://broker.example:8883"   # mqtt://, mqtts://, ws://, wss://
client_id = "edgerelay-1"
ca_file = "/etc/edgerelay/ca.pem"
cert_file = "/etc/edgerelay/client.pem"
key_file = "/etc/edgerelay/client.key"
keep_alive_s = 60
clean_session = true
last_will = { topic = "edgerelay/edgerelay-1/status", message = "offline", retain = true, qos = 1 }
connect_message = { topic = "edgerelay/edgerelay-1/status", message = "online", retain = true, qos = 1 }
buffer = { max_bytes = "1GiB", when_full = "drop_oldest", max_age = "7d" }

[destination.hub]
kind = "azure-iot-hub"
connection_string = "${IOTHUB_DEVICE_CONNECTION_STRING}"   # HostName=...;DeviceId=...;SharedAccessKey=...
sas_ttl = "1h"                    # token renewed before it expires
"#;
        let env = |name: &str| {
            (name == "IOTHUB_DEVICE_CONNECTION_STRING")
                .then(|| format!("HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={KEY}"))
        };
        let config = load_str_with(text, "c.toml", &env, None).unwrap();
        use crate::config::DestinationConfig;
        let DestinationConfig::Mqtt(m) = &config.destination["cloud"] else {
            panic!("mqtt")
        };
        assert_eq!(
            m.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/edgerelay/ca.pem"))
        );
        assert!(matches!(
            config.destination["hub"],
            DestinationConfig::AzureIotHub(_)
        ));
    }

    #[test]
    fn connection_string_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("iothub"),
            format!("HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey={KEY}\n"),
        )
        .unwrap();
        let text =
            "[destination.hub]\nkind = \"azure-iot-hub\"\nconnection_string_file = \"iothub\"\n";
        let config = load_str_with(text, "c.toml", &no_env, Some(dir.path())).unwrap();
        let crate::config::DestinationConfig::AzureIotHub(a) = &config.destination["hub"] else {
            panic!("azure")
        };
        assert!(a.connection_string.as_deref().unwrap().ends_with(KEY));
        let errs = errors(
            "[destination.hub]\nkind = \"azure-iot-hub\"\nconnection_string_file = \"/nonexistent/iothub\"\n",
        );
        assert!(
            errs[0].starts_with("c.toml:3: destination.hub.connection_string_file: cannot read"),
            "{errs:#?}"
        );
    }
}

#[cfg(test)]
mod object_store_tests {
    //! Object-store destinations: every problem reported, with its key.

    use crate::config::{DestinationConfig, load_str_with};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<String> {
        match load_str_with(text, "c.toml", &no_env, None) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn s3_and_azure_blob_load_with_defaults() {
        let text = r#"
[destination.archive]
kind = "s3"
bucket = "camera-events"
endpoint = "http://127.0.0.1:9000"
region = "eu-north-1"
batch = { max_events = 10000, max_bytes = "8MiB", max_age = "60s" }
compression = "gzip"
[destination.blob]
kind = "azure-blob"
sas_url = "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=x"
compression = "zstd"
"#;
        let config = load_str_with(text, "c.toml", &no_env, None).unwrap();
        let DestinationConfig::S3(s) = &config.destination["archive"] else {
            panic!("not s3");
        };
        assert_eq!(s.batch.max_events, 10_000);
        assert!(matches!(
            config.destination["blob"],
            DestinationConfig::AzureBlob(_)
        ));
    }

    #[test]
    fn bad_batches_keys_and_credentials_are_each_reported() {
        let errs = errors(
            r#"
[destination.archive]
kind = "s3"
bucket = ""
endpoint = "ftp://x"
access_key_id = "AKIA"
key = "{camera}/{hour}"
batch = { max_events = 0, max_bytes = "lots", max_age = "0s" }
[destination.blob]
kind = "azure-blob"
connection_string = "AccountName=a"
"#,
        );
        let text = errors_text(&errs);
        for want in [
            "destination.archive.bucket",
            "destination.archive.endpoint",
            "access_key_id and secret_access_key",
            "destination.archive.key",
            "destination.archive.batch.max_events",
            "destination.archive.batch.max_bytes",
            "destination.archive.batch.max_age",
            "destination.blob.connection_string",
            "destination.blob.container",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[test]
    fn secrets_come_from_files_next_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s3-secret"), "wJalr\n").unwrap();
        std::fs::write(
            dir.path().join("sas"),
            "https://a.blob.core.windows.net/c?sig=x\n",
        )
        .unwrap();
        let text = r#"
[destination.archive]
kind = "s3"
bucket = "b"
access_key_id = "AKIA"
secret_access_key_file = "s3-secret"
[destination.blob]
kind = "azure-blob"
sas_url_file = "sas"
"#;
        let config = load_str_with(text, "c.toml", &no_env, Some(dir.path())).unwrap();
        let DestinationConfig::S3(s) = &config.destination["archive"] else {
            panic!("not s3");
        };
        assert_eq!(s.secret_access_key.as_deref(), Some("wJalr"));
        let DestinationConfig::AzureBlob(a) = &config.destination["blob"] else {
            panic!("not azure-blob");
        };
        assert_eq!(
            a.sas_url.as_deref(),
            Some("https://a.blob.core.windows.net/c?sig=x")
        );
    }

    #[test]
    fn snapshot_keys_are_checked_where_they_are_written() {
        let errs = errors(
            r#"[[camera]]
name = "lobby"
url = "http://192.0.2.10"
snapshot_resolution = "big"
[destination.archive]
kind = "s3"
bucket = "b"
snapshot_key = "{camera}/{first_seq}.jpg"
[destination.blob]
kind = "azure-blob"
sas_url = "https://a.blob.core.windows.net/c?sig=x"
snapshot_key = "{camera}/latest.jpg"
[destination.cloud]
kind = "mqtt"
url = "mqtt://h"
[[rule]]
name = "to-cloud"
to = ["cloud"]
snapshot = true
[[rule]]
name = "archived"
to = ["cloud", "archive"]
snapshot = true
"#,
        );
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "c.toml:4: camera[0].snapshot_resolution: \"big\" is not WIDTHxHEIGHT"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with("c.toml:8: destination.archive.snapshot_key: ")
                && errs[1].contains("unknown placeholder {first_seq}"),
            "{errs:#?}"
        );
        assert!(
            errs[2].starts_with("c.toml:12: destination.blob.snapshot_key: ")
                && errs[2].contains("needs {timestamp} or {seq}"),
            "{errs:#?}"
        );
        assert!(
            errs[3].starts_with(
                "c.toml:19: rule[0].snapshot: snapshots are stored in object stores only"
            ),
            "{errs:#?}"
        );
        let errs = errors(
            "[[rule]]\nname = \"r\"\nto = [\"d\"]\nsnapshot = \"yes\"\n[destination.d]\nkind = \"s3\"\nbucket = \"b\"\n",
        );
        assert!(errs[0].starts_with("c.toml:4: "), "{errs:#?}");
        let errs =
            errors("[destination.d]\nkind = \"s3\"\nbucket = \"b\"\nsnapshot_keys = \"x\"\n");
        assert!(errs[0].starts_with("c.toml:4: "), "{errs:#?}");
        assert!(errs[0].contains("snapshot_keys"), "{errs:#?}");
        let ok = load_str_with(
            "[[camera]]\nname = \"lobby\"\nurl = \"http://192.0.2.10\"\nsnapshot_resolution = \"640x480\"\n[destination.d]\nkind = \"s3\"\nbucket = \"b\"\nsnapshot_key = \"snaps/{camera}/{timestamp}_{topic}.jpg\"\n[[rule]]\nname = \"r\"\nto = [\"d\"]\nsnapshot = true\n",
            "c.toml",
            &no_env,
            None,
        )
        .unwrap();
        assert!(ok.rule[0].snapshot);
    }

    #[test]
    fn snapshot_commands_need_object_stores_in_to() {
        let base = "[[camera]]\nname = \"lobby\"\nurl = \"http://192.0.2.10\"\n[destination.broker]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\n[destination.archive]\nkind = \"s3\"\nbucket = \"b\"\n[[command]]\ndestination = \"broker\"\ntopic = \"cmd/snap\"\ncamera = \"lobby\"\n";
        let errs = errors(&format!("{base}action = \"snapshot\"\n"));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with("c.toml:14: command[0].action: a snapshot command needs `to`"),
            "{errs:#?}"
        );
        let errs = errors(&format!(
            "{base}action = \"snapshot\"\nto = [\"archive\", \"broker\"]\n"
        ));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with("c.toml:15: command[0].to[1]: \"broker\" is not an s3"),
            "{errs:#?}"
        );
        let errs = errors(&format!(
            "{base}action = \"virtual_input\"\nto = [\"archive\"]\n"
        ));
        assert!(
            errs[0].starts_with("c.toml:15: command[0].to: only `action = \"snapshot\"`"),
            "{errs:#?}"
        );
        let errs = errors(&format!("{base}action = \"photo\"\n"));
        assert!(errs[0].starts_with("c.toml:14: "), "{errs:#?}");
        load_str_with(
            &format!("{base}action = \"snapshot\"\nto = [\"archive\"]\n"),
            "c.toml",
            &no_env,
            None,
        )
        .unwrap();
    }

    fn errors_text(errs: &[String]) -> String {
        errs.join("\n")
    }
}
