//! Every profile in bridges/ (and the out-of-the-box config.toml) passes `edgerelay check`
//! once its `${VAR}`s are set to placeholders.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `${NAME}` variables a file uses.
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let tail = &rest[i + 2..];
        let end = tail.find('}').expect("closed ${");
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn placeholder(var: &str) -> String {
    if var.contains("CONNECTION_STRING") {
        "HostName=example.azure-devices.net;DeviceId=edgerelay-lobby;SharedAccessKey=c2VjcmV0LWtleQ==".into()
    } else if var.contains("ENDPOINT") {
        "abc123-ats.iot.eu-north-1.amazonaws.com".into()
    } else {
        "placeholder".into()
    }
}

fn check(file: &Path) -> (bool, String) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgerelay"));
    cmd.arg("check").arg("-c").arg(file);
    for var in variables(&text) {
        cmd.env(var.clone(), placeholder(&var));
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_bridge_profile_and_the_default_config_pass_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("bridges"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for name in [
        "azure-iot-hub.toml",
        "aws-iot-core.toml",
        "mosquitto-tls.toml",
        "mosquitto.toml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "bridges/{name} is missing"
        );
    }
    files.push(root.join("config.toml"));
    for f in &files {
        let (ok, out) = check(f);
        assert!(ok, "{}:\n{out}", f.display());
        assert!(
            !out.contains("warning:"),
            "{}: profiles should not warn:\n{out}",
            f.display()
        );
    }
}

#[test]
fn check_prints_warnings_but_exits_zero_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let hub = "[destination.hub]\nkind = \"azure-iot-hub\"\nconnection_string = \"HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=c2VjcmV0LWtleQ==\"\n";
    std::fs::write(
        &file,
        format!("{hub}\n[[rule]]\nname = \"r\"\nto = [\"hub\"]\nretain = \"all\"\n"),
    )
    .unwrap();
    let (ok, out) = check(&file);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "warning: {}:8: rule[0].retain: \"hub\" is Azure IoT Hub",
            file.display()
        )),
        "{out}"
    );
    std::fs::write(
        &file,
        "[destination.aws]\nkind = \"aws-iot-core\"\nthing_name = \"t\"\n",
    )
    .unwrap();
    let (ok, out) = check(&file);
    assert!(!ok, "{out}");
    assert!(out.contains("required key endpoint is missing"), "{out}");
}
