//! Loading: read the file, parse TOML, fill `${VAR}`, deserialize, read secret files, validate.
//!
//! A TOML syntax error stops loading and is reported alone; a structural (serde) error stops it
//! too, reported with the substitution problems found before it. Otherwise every substitution,
//! secret-file and validation problem is reported together.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::error::{ConfigError, ConfigErrors, Problem};
use super::expand::{self, EnvLookup};
use super::locate::{KeyPath, Locator, Seg};
use super::types::{AwsIotCoreDestination, AzureIotHubDestination, Config, MqttDestination};
use super::validate;

/// Loads and validates the config file at `path`, with `${VAR}` from the process environment.
/// Relative `*_file` paths are relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_warnings(path).map(|l| l.config)
}

/// A valid config and what in it works, but not as written.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config, ready to run.
    pub config: Config,
    /// Warnings, in file order, formatted like errors.
    pub warnings: Vec<ConfigError>,
}

/// Like [`load`], keeping the warnings (for `edgerelay check` and the start of `run`).
pub fn load_with_warnings(path: &Path) -> Result<Loaded, ConfigErrors> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: label.clone(),
        line: None,
        key: String::new(),
        message: format!("cannot read the config file: {e}"),
    })?;
    let (config, warnings) = load_inner(&text, &label, &process_env, path.parent())?;
    Ok(Loaded { config, warnings })
}

/// Validates the config file at `path` (for `edgerelay check`): every problem, or the warnings.
pub fn check(path: &Path) -> Result<Vec<ConfigError>, ConfigErrors> {
    load_with_warnings(path).map(|l| l.warnings)
}

/// Warnings of a loaded config, located in its text.
pub fn locate_warnings(config: &Config, text: &str, file_label: &str) -> Vec<ConfigError> {
    let locator = Locator::new(text);
    let mut w: Vec<ConfigError> = validate::warnings(config)
        .into_iter()
        .map(|Problem { path, message }| ConfigError {
            file: file_label.to_string(),
            line: locator.line_of(&path),
            key: path.to_string(),
            message,
        })
        .collect();
    w.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    w
}

/// Loads config text (tests, embedded configs); errors name `file_label`. `${VAR}` come from the
/// process environment and relative `*_file` paths from the current directory.
pub fn load_str(text: &str, file_label: &str) -> Result<Config, ConfigErrors> {
    load_str_with(text, file_label, &process_env, None)
}

/// Loads config text with an injected environment lookup and base directory for `*_file` paths.
pub fn load_str_with(
    text: &str,
    file_label: &str,
    env: EnvLookup<'_>,
    base_dir: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    load_inner(text, file_label, env, base_dir).map(|(config, _)| config)
}

fn load_inner(
    text: &str,
    file_label: &str,
    env: EnvLookup<'_>,
    base_dir: Option<&Path>,
) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    let error = |line: Option<usize>, key: String, message: String| ConfigError {
        file: file_label.to_string(),
        line,
        key,
        message,
    };
    let locator = Locator::new(text);
    let mut doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.span().map(|s| locator.line_at(s.start));
            return Err(error(line, String::new(), e.message().trim().to_string()).into());
        }
    };
    // `${VAR}` on the tree's string leaves, then the typed config from the expanded tree (whose
    // spans still point into `text`).
    let mut problems = expand::expand_tree(doc.get_mut(), env);
    let located = |problems: Vec<Problem>| -> Vec<ConfigError> {
        problems
            .into_iter()
            .map(|Problem { path, message }| {
                error(locator.line_of(&path), path.to_string(), message)
            })
            .collect()
    };
    let mut config = match Config::deserialize(toml::de::Deserializer::from(doc)) {
        Ok(c) => c,
        Err(e) => {
            // The structural error, with the unset variables found before it: one of them
            // (say in `kind`) may be its cause, and is then the one error reported there.
            let (line, key, message) = locate_serde_error(&locator, &e);
            let mut errors = located(problems);
            if !errors.iter().any(|x| x.key == key) {
                errors.push(error(line, key, message));
            }
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            return Err(ConfigErrors { errors });
        }
    };

    problems.extend(expand::read_secret_files(&mut config, base_dir));
    let already: Vec<KeyPath> = problems.iter().map(|p| p.path.clone()).collect();
    problems.extend(
        validate::validate(&config)
            .into_iter()
            // A value with an unset variable is wrong already; don't also call it malformed.
            .filter(|p| !already.contains(&p.path)),
    );
    if problems.is_empty() {
        let warnings = locate_warnings(&config, text, file_label);
        return Ok((config, warnings));
    }
    let mut errors = located(problems);
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(ConfigErrors { errors })
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Turns a serde error into `(line, key, message)`, naming the key it is about.
fn locate_serde_error(
    locator: &Locator<'_>,
    e: &toml::de::Error,
) -> (Option<usize>, String, String) {
    let mut span = e.span();
    let mut message = e.message().trim().to_string();
    let mut path = span
        .as_ref()
        .map(|s| locator.path_at(s.start))
        .unwrap_or_default();
    // An internally tagged enum (destinations) buffers its table and loses spans: deserialize
    // the chosen variant alone to find the key.
    if let Some((s, m)) = refine_destination(locator, &path) {
        span = s;
        message = m;
        path = span
            .as_ref()
            .map(|s| locator.path_at(s.start))
            .unwrap_or(path);
    }
    if let Some(field) = quoted_after(&message, "unknown field `") {
        if let Some(p) = locator.find_key_below(&path, &field)
            && path.0.last() != Some(&Seg::Key(field.clone()))
        {
            path = p;
        }
        let expected = message.split_once(", ").map(|(_, rest)| rest.to_string());
        message = match expected {
            Some(rest) => format!("unknown key, {rest}"),
            None => "unknown key".into(),
        };
    } else if let Some(field) = quoted_after(&message, "missing field `") {
        let line = locator
            .line_of(&path)
            .or(span.as_ref().map(|s| locator.line_at(s.start)));
        return (
            line,
            path.key(&field).to_string(),
            "required key is missing".into(),
        );
    }
    let line = if path.0.is_empty() {
        span.as_ref().map(|s| locator.line_at(s.start))
    } else {
        locator.line_of(&path)
    };
    (line, path.to_string(), message)
}

/// The text between `prefix` and the next backquote, when `message` starts with `prefix`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split('`').next()?.to_string())
}

/// Re-deserializes `destination.NAME` as its variant, for an error with a precise span.
fn refine_destination(
    locator: &Locator<'_>,
    path: &KeyPath,
) -> Option<(Option<std::ops::Range<usize>>, String)> {
    let [Seg::Key(top), Seg::Key(name)] = path.0.as_slice() else {
        return None;
    };
    if top != "destination" {
        return None;
    }
    let doc = locator.document()?;
    let (_, dests) = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == "destination")?;
    let (_, dest) = dests
        .get_ref()
        .as_table()?
        .iter()
        .find(|(k, _)| k.get_ref() == name)?;
    let table = dest.get_ref().as_table()?;
    let kind = table
        .iter()
        .find(|(k, _)| k.get_ref() == "kind")?
        .1
        .get_ref()
        .as_str()?;
    let mut rest = DeTable::new();
    for (k, v) in table.iter().filter(|(k, _)| k.get_ref() != "kind") {
        rest.insert(k.clone(), v.clone());
    }
    let de = toml::de::Deserializer::from(Spanned::new(dest.span(), rest));
    let result = match kind {
        "mqtt" => MqttDestination::deserialize(de).map(drop),
        "azure-iot-hub" => AzureIotHubDestination::deserialize(de).map(drop),
        "aws-iot-core" => AwsIotCoreDestination::deserialize(de).map(drop),
        _ => return None,
    };
    let e = result.err()?;
    Some((e.span(), e.message().trim().to_string()))
}
