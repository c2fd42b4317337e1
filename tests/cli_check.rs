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
