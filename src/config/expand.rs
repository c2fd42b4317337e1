//! `${VAR}` substitution in every string value, and secrets read from `*_file` keys.
//!
//! `${NAME}` (NAME of letters, digits and `_`) is replaced by the variable's value; `$${` is a
//! literal `${`; any other `$` is kept as is. Substitution walks every string leaf of the parsed
//! TOML tree, before it is deserialized: no field can be forgotten, and a value is never
//! re-parsed as TOML (a variable cannot add keys or change a type). A `X_file` key whose
//! sibling `X` is a secret is read (one trailing newline trimmed) into `X`; a relative path is
//! relative to the config file's directory.

use std::borrow::Cow;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::error::Problem;
use super::locate::KeyPath;
use super::types::{Config, DestinationConfig};

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

/// Substitutes `${VAR}` in every string leaf of the parsed document (values in tables, inline
/// tables and arrays, at any depth); returns every problem, located by key path.
///
/// It runs on the TOML tree before the typed config exists, so a field added to the config
/// types is expanded without being named here, and the spans of the tree still point into the
/// original text for `file:line` errors. A value that fails to expand is left as written.
pub fn expand_tree(doc: &mut DeTable<'_>, env: EnvLookup<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    expand_table(doc, &KeyPath::root(), env, &mut problems);
    problems
}

fn expand_table(
    table: &mut DeTable<'_>,
    path: &KeyPath,
    env: EnvLookup<'_>,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in table.iter_mut() {
        expand_value(value.get_mut(), &path.key(key.get_ref()), env, problems);
    }
}

fn expand_value(
    value: &mut DeValue<'_>,
    path: &KeyPath,
    env: EnvLookup<'_>,
    problems: &mut Vec<Problem>,
) {
    match value {
        DeValue::String(s) if s.contains('$') => match expand_str(s, env) {
            Ok(v) => *s = Cow::Owned(v),
            Err(errors) => {
                problems.extend(errors.into_iter().map(|m| Problem::new(path.clone(), m)))
            }
        },
        DeValue::Table(t) => expand_table(t, path, env, problems),
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item.get_mut(), &path.index(i), env, problems);
            }
        }
        _ => {}
    }
}

/// Reads every secret `X_file` into `X` (`password_file` of cameras and mqtt destinations,
/// `broker_password_file` of the embedded broker, `http_password_file` of the HTTP endpoint,
/// `connection_string_file` of Azure IoT Hub); relative paths are joined to `base_dir`.
/// Returns every problem. (`ca_file`, `cert_file`, `key_file` name files the TLS layer reads.)
pub fn read_secret_files(config: &mut Config, base_dir: Option<&Path>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let root = KeyPath::root();
    let relay = &mut config.relay;
    fill_secret(
        &mut relay.broker_password,
        relay.broker_password_file.as_deref(),
        base_dir,
        &root.key("relay"),
        "broker_password",
        &mut problems,
    );
    fill_secret(
        &mut relay.http_password,
        relay.http_password_file.as_deref(),
        base_dir,
        &root.key("relay"),
        "http_password",
        &mut problems,
    );
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
    secret: &mut Option<super::Secret>,
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
            *secret = Some(text.into());
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
