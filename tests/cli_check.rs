//! `edgerelay check`: the shipped configs pass; a broken one names file, line and key.

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgerelay"))
        .args(["check", "-c"])
        .arg(path)
        .env("LOBBY_PASSWORD", "x")
        .env("MQTT_PASSWORD", "y")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_config_and_profiles_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, err) = check(&root.join("config.toml"));
    assert!(ok, "config.toml: {err}");
    let (ok, err) = check(&root.join("bridges/mosquitto.toml"));
    assert!(ok, "bridges/mosquitto.toml: {err}");
}

#[test]
fn broken_config_names_file_line_and_key_for_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[relay]\ndata_dir = \"/tmp/x\"\n\n[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\n\n[[rule]]\nname = \"r\"\nto = [\"clod\"]\ntopic = \"tns1:Device//IO\"\n",
    )
    .unwrap();
    let (ok, err) = check(&path);
    assert!(!ok);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:10: rule[0].to[0]: unknown destination \"clod\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:11: rule[0].topic: invalid topic expression at position 12"
        )),
        "{err}"
    );
}

/// Runs `check` on `text` with `env` set; returns (exit code, stderr).
fn check_text(text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgerelay"))
        .args(["check", "-c"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn old_seconds_keys_pass_check_with_a_deprecation_warning_and_both_spellings_fail() {
    let cloud = "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\n";
    let (code, err, file) = check_text(&format!("{cloud}keep_alive_s = 30\n"), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "warning: {file}:4: destination.cloud.keep_alive_s: keep_alive_s is deprecated: write keep_alive = \"30s\""
        )),
        "{err}"
    );

    let (code, err, _) = check_text(&format!("{cloud}keep_alive = \"30s\"\n"), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");

    let (code, err, file) = check_text(
        &format!("{cloud}keep_alive = \"30s\"\nkeep_alive_s = 30\n"),
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{file}:5: destination.cloud.keep_alive_s: both keep_alive and keep_alive_s are set"
        )),
        "{err}"
    );
}

#[test]
fn variables_reach_keys_that_no_list_names() {
    let text = "[destination.archive]\nkind = \"s3\"\nbucket = \"b\"\nsnapshot_key = \"${SITE}/{camera}/{timestamp}.jpg\"\n";
    let (code, err, file) = check_text(text, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{file}:4: destination.archive.snapshot_key: environment variable SITE is not set"
        )),
        "{err}"
    );
    let (code, err, _) = check_text(text, &[("SITE", "site1")]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn check_refuses_an_embedded_broker_on_every_address_without_a_login() {
    let cloud = "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\n";
    let open = format!("[relay]\nbroker = \"0.0.0.0:1883\"\n{cloud}");
    let (code, err, file) = check_text(&open, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{file}:2: relay.broker: \"0.0.0.0:1883\" is reachable from the network, and the embedded broker would let anyone in: set `broker_username` and `broker_password` (or `broker_password_file`), or listen on loopback (\"127.0.0.1:1883\")"
        )),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("broker.pass");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let with_login = format!(
        "[relay]\nbroker = \"0.0.0.0:1883\"\nbroker_username = \"site\"\nbroker_password_file = \"{}\"\n{cloud}",
        secret.display()
    );
    let (code, err, _) = check_text(&with_login, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn check_never_echoes_a_password_from_a_url() {
    let (code, err, file) = check_text(
        "[destination.cloud]\nkind = \"mqtt\"\nurl = \"mqtts://relay:hunter2@broker.example\"\n",
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{file}:3: destination.cloud.url: URL \"mqtts://relay:***@broker.example\" holds credentials"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn check_warns_when_the_status_page_is_open_to_the_network() {
    let open = "[relay]\nhttp = \"0.0.0.0:8734\"\n";
    let (code, err, file) = check_text(open, &[]);
    assert_eq!(code, Some(0), "a warning, not an error: {err}");
    assert!(
        err.contains(&format!(
            "warning: {file}:2: relay.http: \"0.0.0.0:8734\" is reachable from the network and /status has no password"
        )),
        "{err}"
    );
    let with_login = "[relay]\nhttp = \"0.0.0.0:8734\"\nhttp_username = \"site\"\nhttp_password = \"${PAGE_PASSWORD}\"\n";
    let (code, err, _) = check_text(with_login, &[("PAGE_PASSWORD", "s3cret-page")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(!err.contains("s3cret-page"), "{err}");
    let half = "[relay]\nhttp = \"0.0.0.0:8734\"\nhttp_username = \"site\"\n";
    let (code, err, file) = check_text(half, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{file}:3: relay.http_username: has no password")),
        "{err}"
    );
}
