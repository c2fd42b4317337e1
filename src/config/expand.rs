//! `${VAR}` substitution in every string value, and secrets read from `*_file` keys.
//!
//! `${NAME}` (NAME of letters, digits and `_`) is replaced by the variable's value; `$${` is a
//! literal `${`; any other `$` is kept as is. Substitution runs on the typed config, so a value
//! is never re-parsed as TOML. A `X_file` key whose sibling `X` is a secret is read (one trailing
//! newline trimmed) into `X`; a relative path is relative to the config file's directory.

use std::path::{Path, PathBuf};

use super::error::Problem;
use super::locate::KeyPath;
use super::types::{BatchConfig, Config, DestinationConfig, MessageConfig};

/// Looks up an environment variable; injected so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Replaces `${VAR}` in `s`; on error, one message per problem (unset or malformed variable).
pub fn expand_str(s: &str, env: EnvLookup<'_>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                errors.push("unterminated \"${\" (write \"$${\" for a literal \"${\")".into());
                rest = "";
                break;
            };
            let name = &tail[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errors.push(format!(
                    "\"${{{name}}}\" is not a valid variable name (letters, digits and _; write \"$${{\" for a literal \"${{\")"
                ));
            } else if let Some(value) = env(name) {
                out.push_str(&value);
            } else {
                errors.push(format!("environment variable {name} is not set"));
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

struct Expander<'a> {
    env: EnvLookup<'a>,
    problems: Vec<Problem>,
}

impl Expander<'_> {
    fn string(&mut self, s: &mut String, path: KeyPath) {
        if !s.contains('$') {
            return;
        }
        match expand_str(s, self.env) {
            Ok(v) => *s = v,
            Err(errors) => self
                .problems
                .extend(errors.into_iter().map(|m| Problem::new(path.clone(), m))),
        }
    }

    fn opt(&mut self, s: &mut Option<String>, path: KeyPath) {
        if let Some(s) = s {
            self.string(s, path);
        }
    }

    fn list(&mut self, v: &mut [String], path: KeyPath) {
        for (i, s) in v.iter_mut().enumerate() {
            self.string(s, path.index(i));
        }
    }

    fn path(&mut self, p: &mut PathBuf, path: KeyPath) {
        // Non-UTF-8 paths cannot hold `${`, which is ASCII text from the TOML file.
        if let Some(s) = p.to_str() {
            let mut s = s.to_string();
            self.string(&mut s, path);
            *p = PathBuf::from(s);
        }
    }

    fn opt_path(&mut self, p: &mut Option<PathBuf>, path: KeyPath) {
        if let Some(p) = p {
            self.path(p, path);
        }
    }

    fn batch(&mut self, b: &mut BatchConfig, path: KeyPath) {
        self.string(&mut b.max_bytes, path.key("max_bytes"));
        self.string(&mut b.max_age, path.key("max_age"));
    }

    fn message(&mut self, m: &mut Option<MessageConfig>, path: KeyPath) {
        if let Some(m) = m {
            self.string(&mut m.topic, path.key("topic"));
            self.string(&mut m.message, path.key("message"));
        }
    }
}

/// Substitutes `${VAR}` in every string value of `config`; returns every problem.
pub fn expand_env(config: &mut Config, env: EnvLookup<'_>) -> Vec<Problem> {
    let mut x = Expander {
        env,
        problems: Vec::new(),
    };
    let root = KeyPath::root();
    let relay = root.key("relay");
    x.path(&mut config.relay.data_dir, relay.key("data_dir"));
    x.opt(&mut config.relay.http, relay.key("http"));
    x.opt(&mut config.relay.broker, relay.key("broker"));
    x.string(
        &mut config.relay.shutdown_timeout,
        relay.key("shutdown_timeout"),
    );
    x.string(&mut config.relay.status_topic, relay.key("status_topic"));
    for (i, c) in config.camera.iter_mut().enumerate() {
        let p = root.key("camera").index(i);
        x.string(&mut c.name, p.key("name"));
        x.string(&mut c.url, p.key("url"));
        x.opt(&mut c.username, p.key("username"));
        x.opt(&mut c.password, p.key("password"));
        x.opt_path(&mut c.password_file, p.key("password_file"));
        x.string(&mut c.heartbeat, p.key("heartbeat"));
        x.opt(&mut c.serial, p.key("serial"));
    }
    for (name, d) in config.destination.iter_mut() {
        let p = root.key("destination").key(name);
        match d {
            DestinationConfig::Mqtt(m) => {
                x.string(&mut m.url, p.key("url"));
                x.opt(&mut m.client_id, p.key("client_id"));
                x.opt(&mut m.username, p.key("username"));
                x.opt(&mut m.password, p.key("password"));
                x.opt_path(&mut m.password_file, p.key("password_file"));
                x.message(&mut m.last_will, p.key("last_will"));
                x.message(&mut m.connect_message, p.key("connect_message"));
                let b = p.key("buffer");
                x.string(&mut m.buffer.max_bytes, b.key("max_bytes"));
                x.opt(&mut m.buffer.max_age, b.key("max_age"));
                x.opt_path(&mut m.ca_file, p.key("ca_file"));
                x.opt_path(&mut m.cert_file, p.key("cert_file"));
                x.opt_path(&mut m.key_file, p.key("key_file"));
                if let Some(alpn) = &mut m.alpn {
                    x.list(alpn, p.key("alpn"));
                }
            }
            DestinationConfig::AzureIotHub(a) => {
                x.opt(&mut a.connection_string, p.key("connection_string"));
                x.opt_path(
                    &mut a.connection_string_file,
                    p.key("connection_string_file"),
                );
                x.string(&mut a.sas_ttl, p.key("sas_ttl"));
                x.opt_path(&mut a.ca_file, p.key("ca_file"));
                x.opt_path(&mut a.cert_file, p.key("cert_file"));
                x.opt_path(&mut a.key_file, p.key("key_file"));
                let b = p.key("buffer");
                x.string(&mut a.buffer.max_bytes, b.key("max_bytes"));
                x.opt(&mut a.buffer.max_age, b.key("max_age"));
            }
            DestinationConfig::AwsIotCore(a) => {
                x.opt(&mut a.endpoint, p.key("endpoint"));
                x.opt(&mut a.thing_name, p.key("thing_name"));
                x.opt_path(&mut a.ca_file, p.key("ca_file"));
                x.opt_path(&mut a.cert_file, p.key("cert_file"));
                x.opt_path(&mut a.key_file, p.key("key_file"));
                x.message(&mut a.last_will, p.key("last_will"));
                x.message(&mut a.connect_message, p.key("connect_message"));
                let b = p.key("buffer");
                x.string(&mut a.buffer.max_bytes, b.key("max_bytes"));
                x.opt(&mut a.buffer.max_age, b.key("max_age"));
            }
            DestinationConfig::S3(s) => {
                x.string(&mut s.bucket, p.key("bucket"));
                x.opt(&mut s.region, p.key("region"));
                x.opt(&mut s.endpoint, p.key("endpoint"));
                x.opt(&mut s.access_key_id, p.key("access_key_id"));
                x.opt(&mut s.secret_access_key, p.key("secret_access_key"));
                x.opt_path(
                    &mut s.secret_access_key_file,
                    p.key("secret_access_key_file"),
                );
                x.opt(&mut s.session_token, p.key("session_token"));
                x.opt_path(&mut s.session_token_file, p.key("session_token_file"));
                x.string(&mut s.prefix, p.key("prefix"));
                x.opt(&mut s.key, p.key("key"));
                x.batch(&mut s.batch, p.key("batch"));
                let b = p.key("buffer");
                x.string(&mut s.buffer.max_bytes, b.key("max_bytes"));
                x.opt(&mut s.buffer.max_age, b.key("max_age"));
            }
            DestinationConfig::AzureBlob(a) => {
                x.opt(&mut a.sas_url, p.key("sas_url"));
                x.opt_path(&mut a.sas_url_file, p.key("sas_url_file"));
                x.opt(&mut a.connection_string, p.key("connection_string"));
                x.opt_path(
                    &mut a.connection_string_file,
                    p.key("connection_string_file"),
                );
                x.opt(&mut a.container, p.key("container"));
                x.string(&mut a.prefix, p.key("prefix"));
                x.opt(&mut a.key, p.key("key"));
                x.batch(&mut a.batch, p.key("batch"));
                let b = p.key("buffer");
                x.string(&mut a.buffer.max_bytes, b.key("max_bytes"));
                x.opt(&mut a.buffer.max_age, b.key("max_age"));
            }
        }
    }
    for (i, r) in config.rule.iter_mut().enumerate() {
        let p = root.key("rule").index(i);
        x.string(&mut r.name, p.key("name"));
        if let Some(cameras) = &mut r.cameras {
            x.list(cameras, p.key("cameras"));
        }
        x.opt(&mut r.topic, p.key("topic"));
        x.opt(&mut r.when, p.key("when"));
        x.list(&mut r.to, p.key("to"));
        x.string(&mut r.prefix, p.key("prefix"));
        x.opt(&mut r.mqtt_topic, p.key("mqtt_topic"));
        x.string(&mut r.payload, p.key("payload"));
        x.opt(&mut r.max_rate, p.key("max_rate"));
    }
    for (i, m) in config.mqtt_source.iter_mut().enumerate() {
        let p = root.key("mqtt_source").index(i);
        x.string(&mut m.url, p.key("url"));
        x.opt(&mut m.username, p.key("username"));
        x.opt(&mut m.password, p.key("password"));
        x.opt_path(&mut m.password_file, p.key("password_file"));
        x.list(&mut m.topics, p.key("topics"));
    }
    x.problems
}

/// Reads every secret `X_file` into `X` (`password_file` of cameras and mqtt destinations,
/// `connection_string_file` of Azure IoT Hub); relative paths are joined to `base_dir`.
/// Returns every problem. (`ca_file`, `cert_file`, `key_file` name files the TLS layer reads.)
pub fn read_secret_files(config: &mut Config, base_dir: Option<&Path>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let root = KeyPath::root();
    for (i, c) in config.camera.iter_mut().enumerate() {
        let p = root.key("camera").index(i);
        fill_secret(
            &mut c.password,
            c.password_file.as_deref(),
            base_dir,
            &p,
            "password",
            &mut problems,
        );
    }
    for (name, d) in config.destination.iter_mut() {
        let p = root.key("destination").key(name);
        match d {
            DestinationConfig::Mqtt(m) => {
                let file = m.password_file.as_deref();
                fill_secret(
                    &mut m.password,
                    file,
                    base_dir,
                    &p,
                    "password",
                    &mut problems,
                );
            }
            DestinationConfig::AzureIotHub(a) => {
                let file = a.connection_string_file.as_deref();
                let secret = &mut a.connection_string;
                fill_secret(
                    secret,
                    file,
                    base_dir,
                    &p,
                    "connection_string",
                    &mut problems,
                );
            }
            DestinationConfig::AwsIotCore(_) => {}
            DestinationConfig::S3(s) => {
                let file = s.secret_access_key_file.as_deref();
                let key = "secret_access_key";
                fill_secret(
                    &mut s.secret_access_key,
                    file,
                    base_dir,
                    &p,
                    key,
                    &mut problems,
                );
                let file = s.session_token_file.as_deref();
                let key = "session_token";
                fill_secret(&mut s.session_token, file, base_dir, &p, key, &mut problems);
            }
            DestinationConfig::AzureBlob(a) => {
                let file = a.sas_url_file.as_deref();
                fill_secret(&mut a.sas_url, file, base_dir, &p, "sas_url", &mut problems);
                let file = a.connection_string_file.as_deref();
                let key = "connection_string";
                fill_secret(
                    &mut a.connection_string,
                    file,
                    base_dir,
                    &p,
                    key,
                    &mut problems,
                );
            }
        }
    }
    for (i, m) in config.mqtt_source.iter_mut().enumerate() {
        let p = root.key("mqtt_source").index(i);
        let file = m.password_file.as_deref();
        fill_secret(
            &mut m.password,
            file,
            base_dir,
            &p,
            "password",
            &mut problems,
        );
    }
    problems
}

fn fill_secret(
    secret: &mut Option<String>,
    file: Option<&Path>,
    base_dir: Option<&Path>,
    table: &KeyPath,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    let Some(file) = file else { return };
    let at = table.key(&format!("{key}_file"));
    if secret.is_some() {
        problems.push(Problem::new(
            at,
            format!("both {key} and {key}_file are set: keep one"),
        ));
        return;
    }
    let full = match base_dir {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_path_buf(),
    };
    match std::fs::read_to_string(&full) {
        Ok(text) => {
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            *secret = Some(text.to_string());
        }
        Err(e) => problems.push(Problem::new(
            at,
            format!("cannot read \"{}\": {e}", full.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("broker.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_replaced_and_dollars_kept() {
        assert_eq!(
            expand_str("mqtt://${HOST}:1883", &env).unwrap(),
            "mqtt://broker.local:1883"
        );
        assert_eq!(expand_str("a${EMPTY}b", &env).unwrap(), "ab");
        assert_eq!(expand_str("$.x $5 $", &env).unwrap(), "$.x $5 $");
        assert_eq!(expand_str("$${HOST}", &env).unwrap(), "${HOST}");
        assert_eq!(expand_str("$$${HOST}", &env).unwrap(), "$${HOST}");
    }

    #[test]
    fn unset_and_malformed_variables_are_each_reported() {
        let errs = expand_str("${NOPE} ${ALSO_NOPE} ${HOST}", &env).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "environment variable NOPE is not set",
                "environment variable ALSO_NOPE is not set"
            ]
        );
        assert!(expand_str("${1X}", &env).is_err());
        assert!(expand_str("${HOST", &env).unwrap_err()[0].starts_with("unterminated"));
    }
}
