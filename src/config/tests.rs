//! Loading behaviours: each problem reads `file:line: key: what is wrong`.

use std::time::Duration;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_text(text: &str) -> Result<Config, ConfigErrors> {
    load_str_with(text, "config.toml", &no_env, None)
}

/// The error lines of `text`, which must fail to load.
fn errors(text: &str) -> Vec<String> {
    match load_text(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// The single error line of `text`, checked to start with `prefix`.
#[track_caller]
fn assert_one_error(text: &str, prefix: &str) -> String {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    assert!(
        errs[0].starts_with(prefix),
        "expected prefix {prefix:?}, got {:?}",
        errs[0]
    );
    errs[0].clone()
}

const CAMERA: &str = "[[camera]]\nname = \"lobby\"\nurl = \"http://192.0.2.10\"\n";
const CLOUD: &str = "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\n";

fn with_base(extra: &str) -> String {
    format!("{CAMERA}\n{CLOUD}\n{extra}")
}

// Line numbers in `with_base`: camera 1-3, blank 4, destination 5-7, blank 8, extra from 9.

const FULL: &str = r#"
[relay]
data_dir = "/var/lib/edgerelay"
http = "0.0.0.0:8734"
broker = "127.0.0.1:1883"

[[camera]]
name = "lobby"
url = "http://192.0.2.10"
username = "bridge"
password = "${LOBBY_PASSWORD}"
transport = "websocket"
analytics = false
ptz = false
rtsp_port = 554

[destination.cloud]
kind = "mqtt"
url = "mqtts://broker.example:8883"
client_id = "edgerelay-1"
keep_alive_s = 60
clean_session = true
last_will = { topic = "edgerelay/edgerelay-1/status", message = "offline", retain = true, qos = 1 }
connect_message = { topic = "edgerelay/edgerelay-1/status", message = "online", retain = true, qos = 1 }
buffer = { max_bytes = "1GiB", when_full = "drop_oldest", max_age = "7d" }

[[rule]]
name = "io-to-cloud"
cameras = ["lobby"]
topic = "tns1:Device/tnsaxis:IO//."
when = "$.message.data[?(@.active == '1')]"
to = ["cloud"]
prefix = "axis/{serial}"
mqtt_topic = "site1/{camera}/{topic}"
include_namespaces = false
include_condition_name = true
include_serial = true
payload = "axis"
qos = 1
retain = "property"
only_changes = false
max_rate = "10/s"
"#;

#[test]
fn full_example_config_loads_cleanly() {
    let env = |name: &str| (name == "LOBBY_PASSWORD").then(|| "s3cret".to_string());
    let config = load_str_with(FULL, "config.toml", &env, None).unwrap();
    assert_eq!(config.camera[0].password.as_deref(), Some("s3cret"));
    assert_eq!(config.rule[0].max_rate.as_deref(), Some("10/s"));
    assert_eq!(config.rule[0].retain, RetainPolicy::Property);
    let DestinationConfig::Mqtt(cloud) = &config.destination["cloud"] else {
        panic!("cloud is mqtt")
    };
    assert_eq!(cloud.url, "mqtts://broker.example:8883");
    assert_eq!(cloud.last_will.as_ref().unwrap().message, "offline");
}

#[test]
fn empty_file_is_a_valid_config() {
    let config = load_text("").unwrap();
    assert!(config.camera.is_empty());
}

#[test]
fn unknown_key_in_relay() {
    let msg = assert_one_error(
        "[relay]\nhttp = \"127.0.0.1:8734\"\nbogus = 1\n",
        "config.toml:3: relay.bogus: unknown key",
    );
    assert!(msg.contains("expected"), "{msg}");
}

#[test]
fn unknown_key_in_camera() {
    assert_one_error(
        "[[camera]]\nname = \"a\"\nurl = \"emulator:\"\n\n[[camera]]\nname = \"b\"\nurl = \"emulator:\"\nurll = \"x\"\n",
        "config.toml:8: camera[1].urll: unknown key",
    );
}

#[test]
fn unknown_key_in_rule() {
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nqoss = 1\n"),
        "config.toml:12: rule[0].qoss: unknown key",
    );
}

#[test]
fn unknown_key_in_destination() {
    assert_one_error(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nkeepalive = 5\n",
        "config.toml:4: destination.cloud.keepalive: unknown key",
    );
}

#[test]
fn unknown_key_in_inline_table() {
    assert_one_error(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nlast_will = { topic = \"t\", message = \"m\", retian = true }\n",
        "config.toml:4: destination.cloud.last_will.retian: unknown key",
    );
}

#[test]
fn unknown_key_at_top_level() {
    assert_one_error("cameras = []\n", "config.toml:1: cameras: unknown key");
}

#[test]
fn unknown_destination_kind() {
    assert_one_error(
        "[destination.cloud]\nkind = \"carrier-pigeon\"\nurl = \"mqtt://h\"\n",
        "config.toml:2: destination.cloud.kind: unknown variant `carrier-pigeon`",
    );
}

#[test]
fn missing_url_of_camera() {
    assert_one_error(
        "[[camera]]\nname = \"a\"\nurl = \"emulator:\"\n\n[[camera]]\nname = \"b\"\n",
        "config.toml:5: camera[1].url: required key is missing",
    );
}

#[test]
fn missing_name_of_rule() {
    assert_one_error(
        &with_base("[[rule]]\nto = [\"cloud\"]\n"),
        "config.toml:9: rule[0].name: required key is missing",
    );
}

#[test]
fn missing_url_of_destination() {
    assert_one_error(
        "\n[destination.cloud]\nkind = \"mqtt\"\n",
        "config.toml:2: destination.cloud.url: required key is missing",
    );
}

#[test]
fn wrong_type_is_located() {
    assert_one_error(
        "[relay]\nhttp = 8734\n",
        "config.toml:2: relay.http: invalid type",
    );
    assert_one_error(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nkeep_alive_s = \"60\"\n",
        "config.toml:4: destination.cloud.keep_alive_s: invalid type",
    );
}

#[test]
fn toml_syntax_error_has_a_line() {
    assert_one_error("[relay]\nhttp = \"x\n", "config.toml:2: ");
}

#[test]
fn malformed_camera_url() {
    assert_one_error(
        "[[camera]]\nname = \"a\"\nurl = \"ftp://192.0.2.10\"\n",
        "config.toml:3: camera[0].url: unsupported scheme \"ftp\"",
    );
    assert_one_error(
        "[[camera]]\nname = \"a\"\nurl = \"192.0.2.10\"\n",
        "config.toml:3: camera[0].url: invalid URL",
    );
}

#[test]
fn malformed_destination_url() {
    assert_one_error(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"http://broker:1883\"\n",
        "config.toml:3: destination.cloud.url: unsupported scheme \"http\"",
    );
    assert_one_error(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://\"\n",
        "config.toml:3: destination.cloud.url: ",
    );
}

#[test]
fn destination_url_schemes_for_later_are_accepted() {
    for url in [
        "mqtt://h",
        "mqtts://h:8883",
        "ws://h:8080/mqtt",
        "wss://h/mqtt",
    ] {
        let text = format!("[destination.d]\nkind = \"mqtt\"\nurl = \"{url}\"\n");
        load_text(&text).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn rule_to_unknown_destination() {
    assert_one_error(
        &with_base(
            "[destination.archive]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\n\n[[rule]]\nname = \"r\"\nto = [\"cloud\", \"clod\"]\n",
        ),
        "config.toml:15: rule[0].to[1]: unknown destination \"clod\" (known: archive, cloud)",
    );
}

#[test]
fn rule_without_to_or_drop() {
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\n"),
        "config.toml:9: rule[0]: rule has neither `to` nor `drop = true`",
    );
    load_text(&with_base("[[rule]]\nname = \"r\"\ndrop = true\n")).unwrap();
}

#[test]
fn invalid_topic_expression_names_the_position() {
    let msg = assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\ntopic = \"tns1:Device//\"\n"),
        "config.toml:12: rule[0].topic: invalid topic expression at position",
    );
    assert!(msg.chars().any(|c| c.is_ascii_digit()), "{msg}");
}

#[test]
fn invalid_json_path_names_the_position() {
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nwhen = \"$.a[\"\n"),
        "config.toml:12: rule[0].when: invalid JSONPath \"$.a[\" at position 4",
    );
}

#[test]
fn duplicate_camera_name() {
    assert_one_error(
        &format!("{CAMERA}\n[[camera]]\nname = \"lobby\"\nurl = \"emulator:\"\n"),
        "config.toml:6: camera[1].name: duplicate camera name \"lobby\" (also camera[0])",
    );
}

#[test]
fn typed_values_with_a_payload_template_is_refused() {
    assert_one_error(
        &with_base(
            "[[rule]]\nname = \"r\"\nto = [\"cloud\"]\npayload = \"{data.active}\"\ntyped_values = true\n",
        ),
        "config.toml:13: rule[0].typed_values: typed_values changes the camera-format payload only",
    );
    let ok = load_text(&with_base(
        "[[rule]]\nname = \"r\"\nto = [\"cloud\"]\ntyped_values = true\n",
    ))
    .unwrap();
    assert!(ok.rule[0].typed_values);
}

#[test]
fn duplicate_rule_name() {
    assert_one_error(
        &with_base(
            "[[rule]]\nname = \"r\"\nto = [\"cloud\"]\n\n[[rule]]\nname = \"r\"\nto = [\"cloud\"]\n",
        ),
        "config.toml:14: rule[1].name: duplicate rule name \"r\" (also rule[0])",
    );
}

#[test]
fn unknown_camera_in_rule() {
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\ncameras = [\"lobby\", \"lobbby\"]\nto = [\"cloud\"]\n"),
        "config.toml:11: rule[0].cameras[1]: unknown camera \"lobbby\" (known: lobby)",
    );
}

#[test]
fn bad_qos_in_rule_last_will_and_connect_message() {
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nqos = 3\n"),
        "config.toml:12: rule[0].qos: qos 3 is not 0, 1 or 2",
    );
    let errs = errors(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nlast_will = { topic = \"t\", message = \"m\", qos = 5 }\nconnect_message = { topic = \"t\", message = \"m\", qos = 9 }\n",
    );
    assert_eq!(
        errs,
        vec![
            "config.toml:4: destination.cloud.last_will.qos: qos 5 is not 0, 1 or 2",
            "config.toml:5: destination.cloud.connect_message.qos: qos 9 is not 0, 1 or 2",
        ]
    );
}

#[test]
fn bad_max_rate() {
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nmax_rate = \"10 per second\"\n"),
        "config.toml:12: rule[0].max_rate: \"10 per second\": ",
    );
}

#[test]
fn bad_buffer_size_and_duration() {
    let errs = errors(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\nbuffer = { max_bytes = \"1 GiBs\", max_age = \"7 days\" }\n",
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("config.toml:4: destination.cloud.buffer.max_bytes: \"1 GiBs\": "));
    assert!(errs[1].starts_with("config.toml:4: destination.cloud.buffer.max_age: \"7 days\": "));
}

#[test]
fn bad_relay_addresses() {
    let errs = errors("[relay]\nhttp = \"0.0.0.0\"\nbroker = \"local host:1883\"\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("config.toml:2: relay.http: "),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("config.toml:3: relay.broker: "),
        "{}",
        errs[1]
    );
    load_text("[relay]\nhttp = \"localhost:8734\"\nbroker = \"[::1]:1883\"\n").unwrap();
}

#[test]
fn unset_variable_is_named_at_its_line() {
    assert_one_error(
        &format!("{CAMERA}password = \"${{LOBBY_PASSWORD}}\"\n"),
        "config.toml:4: camera[0].password: environment variable LOBBY_PASSWORD is not set",
    );
}

#[test]
fn unset_variable_in_url_is_not_also_called_malformed() {
    assert_one_error(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"${BROKER_URL}\"\n",
        "config.toml:3: destination.cloud.url: environment variable BROKER_URL is not set",
    );
}

#[test]
fn variables_are_substituted_from_the_injected_environment() {
    let env = |name: &str| match name {
        "BROKER" => Some("broker.example".to_string()),
        "SITE" => Some("site1".to_string()),
        _ => None,
    };
    let text = format!(
        "{CAMERA}\n[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtts://${{BROKER}}:8883\"\n\n[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nmqtt_topic = \"${{SITE}}/{{camera}}/$${{{{literal}}}}\"\n"
    );
    let config = load_str_with(&text, "config.toml", &env, None).unwrap();
    let DestinationConfig::Mqtt(cloud) = &config.destination["cloud"] else {
        panic!("cloud is mqtt")
    };
    assert_eq!(cloud.url, "mqtts://broker.example:8883");
    assert_eq!(
        config.rule[0].mqtt_topic.as_deref(),
        Some("site1/{camera}/${{literal}}")
    );
}

#[test]
fn password_file_fills_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cam.pw"), "hunter2\n").unwrap();
    let text =
        format!("{CAMERA}password_file = \"cam.pw\"\n\n{CLOUD}password_file = \"missing.pw\"\n");
    let errs = match load_str_with(&text, "config.toml", &no_env, Some(dir.path())) {
        Ok(_) => panic!("missing.pw should not load"),
        Err(e) => e,
    };
    assert_eq!(errs.len(), 1, "{errs}");
    assert!(
        errs.to_string()
            .starts_with("config.toml:9: destination.cloud.password_file: cannot read"),
        "{errs}"
    );

    let text = format!("{CAMERA}password_file = \"cam.pw\"\n");
    let config = load_str_with(&text, "config.toml", &no_env, Some(dir.path())).unwrap();
    assert_eq!(config.camera[0].password.as_deref(), Some("hunter2"));
}

#[test]
fn password_and_password_file_together() {
    assert_one_error(
        &format!("{CAMERA}password = \"x\"\npassword_file = \"/nonexistent\"\n"),
        "config.toml:5: camera[0].password_file: both password and password_file are set",
    );
}

#[test]
fn load_reads_a_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "[relay]\nhttp = \"nope\"\n").unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:2: relay.http: ", path.display())),
        "{err}"
    );
    assert!(check(&dir.path().join("absent.toml")).is_err());
}

#[test]
fn several_errors_are_reported_together_in_file_order() {
    let text = r#"[relay]
broker = "nowhere"

[[camera]]
name = "lobby"
url = "gopher://x"

[[camera]]
name = "lobby"
url = "emulator:"

[destination.cloud]
kind = "mqtt"
url = "mqtt://h"

[[rule]]
name = "r"
cameras = ["hall"]
to = ["clod"]
when = "$[?"
qos = 7
"#;
    let errs = errors(text);
    let prefixes = [
        "config.toml:2: relay.broker: ",
        "config.toml:6: camera[0].url: ",
        "config.toml:9: camera[1].name: duplicate camera name",
        "config.toml:18: rule[0].cameras[0]: unknown camera \"hall\"",
        "config.toml:19: rule[0].to[0]: unknown destination \"clod\" (known: cloud)",
        "config.toml:20: rule[0].when: invalid JSONPath",
        "config.toml:21: rule[0].qos: ",
    ];
    assert_eq!(errs.len(), prefixes.len(), "{errs:#?}");
    for (e, p) in errs.iter().zip(prefixes) {
        assert!(e.starts_with(p), "expected {p:?}, got {e:?}");
    }
}

#[test]
fn garbage_input_never_panics() {
    let samples = [
        "",
        "[",
        "]]",
        "[[camera]",
        "a = ",
        "= 1",
        "\u{0}",
        "[relay]\n[relay]",
        "camera = 5",
        "[[rule]]\nname = 1",
        "destination = []",
        "[destination]\ncloud = 3",
        "[destination.x]\nkind = 5",
        "rule = [{}]",
        "${",
        "[[camera]]\nname=\"${\"\nurl=\"$${\"",
        "[[rule]]\nname=\"r\"\ndrop=true\nwhen=\"$$$$[[[[\"\ntopic=\"||//.//*\"",
        "[destination.x]\nkind=\"mqtt\"\nurl=\"mqtt://[::1\"\nbuffer={max_bytes=\"\", max_age=\"\"}",
    ];
    for s in samples {
        let _ = load_text(s);
    }
    // Pseudo-random bytes mixed from TOML-ish pieces.
    let pieces = [
        "[",
        "]",
        "[[rule]]",
        "[[camera]]",
        "[destination.d]",
        "name",
        "=",
        "\"",
        "${X}",
        "\n",
        "url",
        "{",
        "}",
        ",",
        "qos",
        "7",
        "kind",
        "\"mqtt\"",
        "to",
        "[\"d\"]",
        "'",
        "#",
        ".",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..500 {
        let mut text = String::new();
        for _ in 0..(seed % 40) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        let _ = load_text(&text);
    }
}

#[test]
fn payload_template_that_looks_like_json_must_render_as_json() {
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\npayload = '{{\"a\": x{camera}}}'\n"),
        "config.toml:12: rule[0].payload: looks like JSON but does not render as JSON",
    );
    assert_one_error(
        &with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nmqtt_topic = \"a/{nope}\"\n"),
        "config.toml:12: rule[0].mqtt_topic: \"a/{nope}\": template error at position 2",
    );
}

#[test]
fn check_warns_about_template_fields_an_event_can_lack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        with_base(
            "[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nmqtt_topic = \"s/{camera}/{source.port}\"\npayload = '{{\"a\":{$.message.data.active}}}'\n",
        ),
    )
    .unwrap();
    let warnings: Vec<String> = check(&path)
        .unwrap()
        .iter()
        .map(|w| w.to_string())
        .collect();
    let file = path.display();
    assert_eq!(
        warnings,
        [
            format!(
                "{file}:12: rule[0].mqtt_topic: {{source.port}} renders empty for events that lack it"
            ),
            format!(
                "{file}:13: rule[0].payload: {{$.message.data.active}} renders null (or empty inside a string) for events that lack it"
            ),
        ]
    );
}

#[test]
fn check_warns_about_a_condition_that_filters_string_values_by_member() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        with_base("[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nwhen = \"$.message.data[?(@.active == '1')]\"\n"),
    )
    .unwrap();
    let warnings: Vec<String> = check(&path)
        .unwrap()
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(":12: rule[0].when: ")
            && warnings[0].contains("write $.message[?(@.active == ...)]"),
        "{warnings:?}"
    );
    std::fs::write(
        &path,
        with_base(
            "[[rule]]\nname = \"r\"\nto = [\"cloud\"]\nwhen = \"$.message[?(@.active == '1')]\"\n",
        ),
    )
    .unwrap();
    assert!(check(&path).unwrap().is_empty());
}

#[test]
fn mqtt_sources_and_commands_are_checked() {
    let errs = errors(&with_base(
        "[[mqtt_source]]\nname = \"lobby\"\nurl = \"ws://x\"\ntopics = [\"a/#/b\"]\n\n[[command]]\ndestination = \"nope\"\ntopic = \"cmd/#\"\ncamera = \"yard\"\naction = \"virtual_input\"\nreply_topic = \"r/+\"\n",
    ));
    assert_eq!(
        errs,
        [
            "config.toml:10: mqtt_source[0].name: duplicate camera or mqtt_source name \"lobby\" (also camera or mqtt_source[0])",
            "config.toml:11: mqtt_source[0].url: \"ws://x\": an mqtt_source supports mqtt:// only",
            "config.toml:12: mqtt_source[0].topics[0]: \"a/#/b\" is not an MQTT topic filter (`+` and `#` stand alone in a level, `#` last)",
            "config.toml:15: command[0].destination: unknown destination \"nope\" (known: cloud)",
            "config.toml:17: command[0].camera: unknown camera \"yard\" (known: lobby)",
            "config.toml:19: command[0].reply_topic: \"r/+\" is not a topic to publish on (no wildcards, not empty)",
        ]
    );
}

#[test]
fn command_max_rate_defaults_to_10_per_second_and_is_checked() {
    let cmd = "[[command]]\ndestination = \"cloud\"\ntopic = \"cmd/lobby\"\ncamera = \"lobby\"\naction = \"virtual_input\"\n";
    let ok = load_text(&with_base(cmd)).unwrap();
    assert_eq!(ok.command[0].max_rate, "10/s");
    let ok = load_text(&with_base(&format!("{cmd}max_rate = \"5/min\"\n"))).unwrap();
    assert_eq!(ok.command[0].max_rate, "5/min");
    let e = assert_one_error(
        &with_base(&format!("{cmd}max_rate = \"5\"\n")),
        "config.toml:14: command[0].max_rate: \"5\": missing \"/\"",
    );
    assert!(e.contains("10/s"), "{e}");
    assert_one_error(
        &with_base(&format!("{cmd}max_rate = \"0/s\"\n")),
        "config.toml:14: command[0].max_rate: \"0/s\": the count must be positive",
    );
}

#[test]
fn camera_heartbeat_must_be_a_duration_of_at_least_100ms() {
    let e = assert_one_error(
        "[[camera]]\nname = \"lobby\"\nurl = \"http://192.0.2.10\"\nheartbeat = \"15\"\n",
        "config.toml:4: camera[0].heartbeat: missing unit",
    );
    assert!(e.contains("250ms"), "{e}");
    assert_one_error(
        "[[camera]]\nname = \"lobby\"\nurl = \"http://192.0.2.10\"\nheartbeat = \"10ms\"\n",
        "config.toml:4: camera[0].heartbeat: below 100ms",
    );
    let ok = load_text(&with_base("")).unwrap();
    assert_eq!(ok.camera[0].heartbeat, "15s");
}

#[test]
fn status_topic_cannot_hold_wildcards() {
    assert_one_error(
        "[relay]\nstatus_topic = \"edgerelay/+/status\"\n",
        "config.toml:2: relay.status_topic: a topic to publish on cannot hold the wildcards",
    );
    assert_eq!(
        load_text("").unwrap().relay.status_topic,
        "edgerelay/status"
    );
}

#[test]
fn home_assistant_prefix_cannot_hold_wildcards() {
    assert_one_error(
        &with_base("home_assistant = true\nhome_assistant_prefix = \"ha/#\"\n")
            .replace("\n\nhome_assistant", "\nhome_assistant"),
        "config.toml:9: destination.cloud.home_assistant_prefix: a topic prefix cannot",
    );
}

#[test]
fn camera_channel_counts_from_one() {
    assert_one_error(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.10\"\ntransport = \"rtsp\"\nchannel = 0\n",
        "config.toml:5: camera[0].channel: video channels count from 1",
    );
    assert_eq!(load_text(&with_base("")).unwrap().camera[0].channel, 1);
}

/// Every string key that the hand-written expansion used to miss, with a `${VAR}` each.
const MISSED_BEFORE: &str = r#"[[camera]]
name = "lobby"
url = "http://192.0.2.10"
snapshot_resolution = "${RES}"

[destination.cloud]
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
home_assistant = true
home_assistant_prefix = "${HA_PREFIX}"

[destination.s3]
kind = "s3"
bucket = "events"
snapshot_key = "${SITE}/s3/{camera}/{timestamp}.jpg"

[destination.blob]
kind = "azure-blob"
sas_url = "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=x"
snapshot_key = "${SITE}/blob/{seq}.jpg"

[[command]]
destination = "cloud"
topic = "cmd/lobby"
camera = "lobby"
action = "virtual_input"
reply_topic = "${SITE}/reply/$${literal}"
"#;

#[test]
fn variables_are_substituted_in_every_string_key() {
    let env = |name: &str| match name {
        "RES" => Some("640x480".to_string()),
        "HA_PREFIX" => Some("ha".to_string()),
        "SITE" => Some("site1".to_string()),
        _ => None,
    };
    let config = load_str_with(MISSED_BEFORE, "config.toml", &env, None).unwrap();
    assert_eq!(
        config.camera[0].snapshot_resolution.as_deref(),
        Some("640x480")
    );
    let DestinationConfig::Mqtt(cloud) = &config.destination["cloud"] else {
        panic!("cloud is mqtt")
    };
    assert_eq!(cloud.home_assistant_prefix, "ha");
    let DestinationConfig::S3(s3) = &config.destination["s3"] else {
        panic!("s3 is s3")
    };
    assert_eq!(
        s3.snapshot_key.as_deref(),
        Some("site1/s3/{camera}/{timestamp}.jpg")
    );
    let DestinationConfig::AzureBlob(blob) = &config.destination["blob"] else {
        panic!("blob is azure-blob")
    };
    assert_eq!(blob.snapshot_key.as_deref(), Some("site1/blob/{seq}.jpg"));
    assert_eq!(
        config.command[0].reply_topic.as_deref(),
        Some("site1/reply/${literal}")
    );
}

#[test]
fn unset_variables_in_every_string_key_are_each_named_at_their_line() {
    let errs = errors(MISSED_BEFORE);
    let expected = [
        "config.toml:4: camera[0].snapshot_resolution: environment variable RES is not set",
        "config.toml:10: destination.cloud.home_assistant_prefix: environment variable HA_PREFIX is not set",
        "config.toml:15: destination.s3.snapshot_key: environment variable SITE is not set",
        "config.toml:20: destination.blob.snapshot_key: environment variable SITE is not set",
        "config.toml:27: command[0].reply_topic: environment variable SITE is not set",
    ];
    assert_eq!(errs, expected);
}

#[test]
fn variables_in_inline_tables_and_arrays_are_located_by_key_path() {
    let text = r#"[destination.cloud]
kind = "mqtt"
url = "mqtts://h:8883"
alpn = ["x-amzn-mqtt-ca", "${PROTO}"]
last_will = { topic = "${WILL}", message = "offline" }
"#;
    assert_eq!(
        errors(text),
        [
            "config.toml:4: destination.cloud.alpn[1]: environment variable PROTO is not set",
            "config.toml:5: destination.cloud.last_will.topic: environment variable WILL is not set",
        ]
    );
}

#[test]
fn a_variable_cannot_change_a_value_type_or_add_keys() {
    // The value stays one string: a variable holding TOML is not parsed again.
    let env = |_: &str| Some("mqtt://h\"\nbogus = \"1".to_string());
    let text = "[destination.cloud]\nkind = \"mqtt\"\nurl = \"${URL}\"\n";
    let errs = match load_str_with(text, "config.toml", &env, None) {
        Ok(_) => panic!("a URL with a newline is not valid"),
        Err(e) => e,
    };
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(errs.errors[0].key, "destination.cloud.url", "{errs}");
    assert!(errs.errors[0].message.starts_with("invalid URL"), "{errs}");
}

#[test]
fn secret_file_paths_take_variables_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cam.pw"), "hunter2\n").unwrap();
    let env = |name: &str| (name == "SECRETS").then(|| dir.path().display().to_string());
    let text = format!("{CAMERA}password_file = \"${{SECRETS}}/cam.pw\"\n");
    let config = load_str_with(&text, "config.toml", &env, None).unwrap();
    assert_eq!(config.camera[0].password.as_deref(), Some("hunter2"));
}

/// The warning lines of `text`, which must load.
fn warning_lines(text: &str) -> Vec<String> {
    let config = load_text(text).unwrap_or_else(|e| panic!("{e}"));
    locate_warnings(&config, text, "config.toml")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn home_assistant_availability_needs_a_connect_message_on_the_will_topic() {
    let will = "home_assistant = true\nlast_will = { topic = \"s\", message = \"offline\" }\n";
    let text = with_base(will).replace("\n\nhome_assistant", "\nhome_assistant");
    let w = warning_lines(&text);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("config.toml:9: destination.cloud.last_will: Home Assistant availability leaves the relay out"),
        "{w:?}"
    );
    let both = format!("{will}connect_message = {{ topic = \"s\", message = \"online\" }}\n");
    let text = with_base(&both).replace("\n\nhome_assistant", "\nhome_assistant");
    assert!(warning_lines(&text).is_empty());
}

#[test]
fn durations_are_strings_with_units() {
    let text = format!(
        "{CAMERA}max_backoff = \"2s\"\n\n{CLOUD}keep_alive = \"2m\"\nconnect_timeout = \"5s\"\n"
    );
    let config = load_text(&text).unwrap();
    assert_eq!(config.camera[0].max_backoff(), Duration::from_secs(2));
    let DestinationConfig::Mqtt(cloud) = &config.destination["cloud"] else {
        panic!("cloud is mqtt")
    };
    assert_eq!(cloud.keep_alive(), Duration::from_secs(120));
    assert_eq!(cloud.connect_timeout(), Duration::from_secs(5));
    assert!(warning_lines(&text).is_empty());

    let defaults = load_text(&with_base("")).unwrap();
    assert_eq!(defaults.camera[0].max_backoff(), Duration::from_secs(60));
    let DestinationConfig::Mqtt(cloud) = &defaults.destination["cloud"] else {
        panic!("cloud is mqtt")
    };
    assert_eq!(cloud.keep_alive(), Duration::from_secs(60));
    assert_eq!(cloud.connect_timeout(), Duration::from_secs(10));
}

#[test]
fn old_seconds_keys_still_work_with_a_deprecation_warning() {
    let text = format!(
        "{CAMERA}max_backoff_s = 2\n\n{CLOUD}keep_alive_s = 30\nconnect_timeout_s = 5\n\n[destination.hub]\nkind = \"azure-iot-hub\"\nconnection_string = \"HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=a2V5\"\nkeep_alive_s = 45\n"
    );
    let config = load_text(&text).unwrap();
    assert_eq!(config.camera[0].max_backoff(), Duration::from_secs(2));
    let DestinationConfig::Mqtt(cloud) = &config.destination["cloud"] else {
        panic!("cloud is mqtt")
    };
    assert_eq!(cloud.keep_alive(), Duration::from_secs(30));
    assert_eq!(cloud.connect_timeout(), Duration::from_secs(5));
    assert_eq!(
        warning_lines(&text),
        [
            "config.toml:4: camera[0].max_backoff_s: max_backoff_s is deprecated: write max_backoff = \"2s\"",
            "config.toml:9: destination.cloud.keep_alive_s: keep_alive_s is deprecated: write keep_alive = \"30s\"",
            "config.toml:10: destination.cloud.connect_timeout_s: connect_timeout_s is deprecated: write connect_timeout = \"5s\"",
            "config.toml:15: destination.hub.keep_alive_s: keep_alive_s is deprecated: write keep_alive = \"45s\"",
        ]
    );
}

#[test]
fn a_duration_and_its_seconds_alias_together_are_an_error() {
    assert_one_error(
        &format!("{CLOUD}keep_alive = \"1m\"\nkeep_alive_s = 60\n"),
        "config.toml:5: destination.cloud.keep_alive_s: both keep_alive and keep_alive_s are set: keep keep_alive",
    );
    assert_one_error(
        &format!("{CAMERA}max_backoff_s = 5\nmax_backoff = \"5s\"\n"),
        "config.toml:4: camera[0].max_backoff_s: both max_backoff and max_backoff_s are set",
    );
}

#[test]
fn bad_durations_are_named_at_their_key() {
    assert_one_error(
        &format!("{CAMERA}max_backoff = \"60\"\n"),
        "config.toml:4: camera[0].max_backoff: \"60\": missing unit",
    );
    assert_one_error(
        &format!("{CLOUD}connect_timeout = \"10 parsecs\"\n"),
        "config.toml:4: destination.cloud.connect_timeout: \"10 parsecs\": unknown duration unit",
    );
    // MQTT counts keep-alive in whole seconds, in 16 bits.
    assert_one_error(
        &format!("{CLOUD}keep_alive = \"500ms\"\n"),
        "config.toml:4: destination.cloud.keep_alive: must be at least 1s",
    );
    assert_one_error(
        &format!("{CLOUD}keep_alive = \"1.5m\"\nconnect_timeout = \"2.5s\"\n"),
        "config.toml:5: destination.cloud.connect_timeout: must be whole seconds",
    );
    assert_one_error(
        &format!("{CLOUD}keep_alive_s = 70000\n"),
        "config.toml:4: destination.cloud.keep_alive_s: must be at most 65535s",
    );
    assert_one_error(
        "[destination.aws]\nkind = \"aws-iot-core\"\nendpoint = \"a-ats.iot.eu-north-1.amazonaws.com\"\nthing_name = \"t\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nca_file = \"ca.pem\"\nconnect_timeout = \"0s\"\n",
        "config.toml:8: destination.aws.connect_timeout: must be at least 1s",
    );
}

#[test]
fn inflight_defaults_per_kind_and_is_checked_against_what_the_cloud_takes() {
    let aws = "[destination.aws]\nkind = \"aws-iot-core\"\nendpoint = \"a-ats.iot.eu-north-1.amazonaws.com\"\nthing_name = \"t\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nca_file = \"ca.pem\"\n";
    let c = load_text(&format!("{CLOUD}\n{aws}")).unwrap();
    let (DestinationConfig::Mqtt(m), DestinationConfig::AwsIotCore(a)) =
        (&c.destination["cloud"], &c.destination["aws"])
    else {
        panic!("kinds")
    };
    assert_eq!((m.inflight, a.inflight), (1000, 100));
    assert_one_error(
        &format!("{CLOUD}inflight = 0\n"),
        "config.toml:4: destination.cloud.inflight: must be at least 1",
    );
    let e = assert_one_error(
        &format!("{aws}inflight = 101\n"),
        "config.toml:8: destination.aws.inflight: 101: must be at most 100",
    );
    assert!(e.contains("AWS IoT Core"), "{e}");
    load_text(&format!("{aws}inflight = 100\n")).unwrap();
    load_text(&format!("{CLOUD}inflight = 65535\n")).unwrap();
}

#[test]
fn an_unset_variable_in_a_key_that_shapes_the_config_is_the_error_named() {
    // `kind` picks the destination's type: unexpanded, it is no kind at all.
    let text = "[relay]\nhttp = \"${HTTP}\"\n\n[destination.cloud]\nkind = \"${KIND}\"\nurl = \"mqtt://h\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        errs[0],
        "config.toml:2: relay.http: environment variable HTTP is not set"
    );
    assert!(
        errs[1].starts_with("config.toml:5: destination.cloud"),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("environment variable KIND is not set")),
        "{errs:#?}"
    );
}

#[test]
fn an_embedded_broker_beyond_loopback_needs_a_login() {
    let base = "[destination.d]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\n[relay]\n";
    let msg = assert_one_error(
        &format!("{base}broker = \"0.0.0.0:1883\"\n"),
        "config.toml:5: relay.broker: \"0.0.0.0:1883\" is reachable from the network",
    );
    assert!(
        msg.contains("set `broker_username` and `broker_password`"),
        "{msg}"
    );
    assert_one_error(
        &format!("{base}broker = \"[::]:1883\"\n"),
        "config.toml:5: relay.broker:",
    );
    for loopback in ["127.0.0.1:1883", "localhost:1883", "[::1]:1883"] {
        load_text(&format!("{base}broker = \"{loopback}\"\n")).unwrap();
    }
    let c = load_text(&format!(
        "{base}broker = \"0.0.0.0:1883\"\nbroker_username = \"site\"\nbroker_password = \"s3cret\"\n"
    ))
    .unwrap();
    assert_eq!(c.relay.broker_password.as_deref(), Some("s3cret"));
    assert_one_error(
        &format!("{base}broker = \"0.0.0.0:1883\"\nbroker_username = \"site\"\n"),
        "config.toml:6: relay.broker_username: has no password",
    );
    assert_one_error(
        &format!("{base}broker_username = \"site\"\nbroker_password = \"x\"\n"),
        "config.toml:5: relay.broker_username: no embedded broker",
    );
}

#[test]
fn no_secret_of_the_config_shows_in_its_debug_output() {
    let text = r#"[relay]
broker = "127.0.0.1:1883"
broker_username = "site"
broker_password = "secret-broker"
[[camera]]
name = "lobby"
url = "http://192.0.2.10"
username = "u"
password = "secret-camera"
[destination.m]
kind = "mqtt"
url = "mqtt://h"
username = "u"
password = "secret-mqtt"
[destination.hub]
kind = "azure-iot-hub"
connection_string = "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=c2VjcmV0LWh1Yg=="
[destination.s3]
kind = "s3"
bucket = "b"
access_key_id = "AKIA"
secret_access_key = "secret-s3"
session_token = "secret-token"
[destination.blob]
kind = "azure-blob"
sas_url = "https://a.blob.core.windows.net/c?sv=1&sig=secret-sas"
[[mqtt_source]]
name = "sensors"
url = "mqtt://127.0.0.1:1883"
topics = ["s/#"]
username = "u"
password = "secret-source"
"#;
    let c = load_text(text).unwrap();
    let shown = format!("{c:?}");
    for secret in [
        "secret-broker",
        "secret-camera",
        "secret-mqtt",
        "c2VjcmV0LWh1Yg",
        "secret-s3",
        "secret-token",
        "secret-sas",
        "secret-source",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("<redacted>"));
    assert_eq!(c.camera[0].password.as_deref(), Some("secret-camera"));
}

#[test]
fn a_password_in_a_url_is_never_echoed_by_check() {
    let msg = assert_one_error(
        "[destination.m]\nkind = \"mqtt\"\nurl = \"mqtt://u:hunter2@h\"\n",
        "config.toml:3: destination.m.url: URL \"mqtt://u:***@h\" holds credentials",
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = assert_one_error(
        "[[camera]]\nname = \"c\"\nurl = \"gopher://u:hunter2@x\"\n",
        "config.toml:3: camera[0].url: unsupported scheme \"gopher\" in \"gopher://u:***@x\"",
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn commands_name_how_they_arrive_for_each_destination_kind() {
    let base = r#"[[camera]]
name = "lobby"
url = "http://192.0.2.10"
[destination.tls]
kind = "mqtt"
url = "wss://broker.example/mqtt"
[destination.hub]
kind = "azure-iot-hub"
connection_string = "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=c2VjcmV0"
[destination.aws]
kind = "aws-iot-core"
endpoint = "x.iot.eu-west-1.amazonaws.com"
thing_name = "t"
cert_file = "c.pem"
key_file = "k.pem"
ca_file = "ca.pem"
[destination.archive]
kind = "s3"
bucket = "b"
[[command]]
camera = "lobby"
action = "virtual_input"
"#;
    load_text(&format!(
        "{base}destination = \"tls\"\ntopic = \"site/cmd\"\n"
    ))
    .unwrap();
    load_text(&format!(
        "{base}destination = \"hub\"\nmethod = \"lobby_vi\"\n"
    ))
    .unwrap();
    load_text(&format!(
        "{base}destination = \"aws\"\ntopic = \"a/b\"\nreply_topic = \"a/r\"\n"
    ))
    .unwrap();
    assert_one_error(
        &format!("{base}destination = \"hub\"\n"),
        "config.toml:20: command[0].method: required for an azure-iot-hub destination",
    );
    assert_one_error(
        &format!("{base}destination = \"hub\"\nmethod = \"m\"\ntopic = \"t\"\n"),
        "config.toml:25: command[0].topic: an azure-iot-hub destination takes direct methods",
    );
    assert_one_error(
        &format!("{base}destination = \"tls\"\n"),
        "config.toml:20: command[0].topic: required",
    );
    assert_one_error(
        &format!("{base}destination = \"aws\"\ntopic = \"1/2/3/4/5/6/7/8/9\"\n"),
        "config.toml:24: command[0].topic: ",
    );
    assert_one_error(
        &format!("{base}destination = \"archive\"\ntopic = \"t\"\n"),
        "config.toml:23: command[0].destination: \"archive\" is an s3 object store: commands arrive over an MQTT connection",
    );
}

#[test]
fn http_beyond_loopback_without_a_password_is_a_warning() {
    let w = warning_lines("[relay]\nhttp = \"0.0.0.0:8080\"\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("config.toml:2: relay.http: \"0.0.0.0:8080\" is reachable from the network and /status has no password"),
        "{w:?}"
    );
    for loopback in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
        let w = warning_lines(&format!("[relay]\nhttp = \"{loopback}\"\n"));
        assert!(w.is_empty(), "{loopback}: {w:?}");
    }
    let with_login =
        "[relay]\nhttp = \"0.0.0.0:8080\"\nhttp_username = \"site\"\nhttp_password = \"s3cret\"\n";
    assert!(warning_lines(with_login).is_empty());
    let c = load_text(with_login).unwrap();
    assert_eq!(c.relay.http_password.as_deref(), Some("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn the_http_login_needs_both_halves_and_an_endpoint() {
    assert_one_error(
        "[relay]\nhttp = \"127.0.0.1:8080\"\nhttp_username = \"site\"\n",
        "config.toml:3: relay.http_username: has no password",
    );
    assert_one_error(
        "[relay]\nhttp = \"127.0.0.1:8080\"\nhttp_password = \"x\"\n",
        "config.toml:3: relay.http_password: has no user name",
    );
    assert_one_error(
        "[relay]\nhttp_username = \"site\"\nhttp_password = \"x\"\n",
        "config.toml:2: relay.http_username: no HTTP endpoint",
    );
}

#[test]
fn pullpoint_cameras_take_a_clock_skew_duration_and_no_emulator_url() {
    let ok = load_text(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.20\"\ntransport = \"pullpoint\"\nmax_clock_skew = \"2s\"\n",
    )
    .unwrap();
    assert_eq!(ok.camera[0].transport, crate::config::Transport::Pullpoint);
    assert_eq!(ok.camera[0].max_clock_skew, "2s");
    assert_one_error(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.20\"\ntransport = \"pullpoint\"\nmax_clock_skew = \"2\"\n",
        "config.toml:5: camera[0].max_clock_skew: missing unit",
    );
    assert_one_error(
        "[[camera]]\nname = \"gate\"\nurl = \"emulator:\"\ntransport = \"pullpoint\"\n",
        "config.toml:4: camera[0].transport: the in-process emulator speaks WebSocket only",
    );
}

#[test]
fn http_password_file_fills_the_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("http.pw"), "opensesame\n").unwrap();
    let text = "[relay]\nhttp = \"0.0.0.0:8080\"\nhttp_username = \"site\"\nhttp_password_file = \"http.pw\"\n";
    let config = load_str_with(text, "config.toml", &no_env, Some(dir.path())).unwrap();
    assert_eq!(config.relay.http_password.as_deref(), Some("opensesame"));
    assert!(locate_warnings(&config, text, "config.toml").is_empty());
}

#[test]
fn vendor_and_rtsp_url_apply_to_rtsp_cameras_only() {
    let ok = load_text(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.20\"\ntransport = \"rtsp\"\nvendor = \"onvif\"\nrtsp_url = \"rtsp://192.0.2.20:554/meta\"\n",
    )
    .unwrap();
    assert_eq!(ok.camera[0].vendor, crate::config::Vendor::Onvif);
    assert_one_error(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.20\"\ntransport = \"pullpoint\"\nvendor = \"onvif\"\n",
        "config.toml:5: camera[0].vendor: vendor applies to transport = \"rtsp\"",
    );
    assert_one_error(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.20\"\ntransport = \"rtsp\"\nrtsp_url = \"http://192.0.2.20/meta\"\n",
        "config.toml:5: camera[0].rtsp_url: \"http://192.0.2.20/meta\" is not rtsp://HOST[:PORT]/PATH",
    );
    assert_one_error(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.20\"\nrtsp_url = \"rtsp://192.0.2.20/meta\"\n",
        "config.toml:4: camera[0].rtsp_url: rtsp_url applies to transport = \"rtsp\"",
    );
    assert_one_error(
        "[[camera]]\nname = \"gate\"\nurl = \"http://192.0.2.20\"\nvendor = \"hanwha\"\n",
        "config.toml:4",
    );
}
