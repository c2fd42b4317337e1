//! Durations are spelled one way, a string with a unit (`keep_alive = "60s"`), like every other
//! duration of the file (`heartbeat`, `sas_ttl`, `max_age`, ...). The first keys took whole
//! seconds (`keep_alive_s = 60`); those stay accepted as deprecated aliases, so configs written
//! for them keep working, and `check` warns where one is used. Writing both is an error.
//!
//! Each config struct names its aliased keys once, in a method returning [`AliasedDuration`]s;
//! validation, the deprecation warnings and the runtime accessors all read that one list.

use std::time::Duration;

use super::error::Problem;
use super::locate::KeyPath;
use super::types::{
    AwsIotCoreDestination, AzureIotHubDestination, CameraConfig, Config, DestinationConfig,
    MqttDestination,
};
use super::units;

/// A duration key as written: `NAME = "60s"`, or its deprecated alias `NAME_s = 60`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasedDuration<'a> {
    /// The key, e.g. `keep_alive`; the alias is this plus `_s`.
    pub key: &'static str,
    /// `NAME = "..."`, when written.
    pub text: Option<&'a str>,
    /// `NAME_s = N` (whole seconds), when written.
    pub seconds: Option<u64>,
    /// The value when neither is written.
    pub default: Duration,
}

impl AliasedDuration<'_> {
    /// The duration the file means, or what is wrong with it.
    pub fn resolve(&self) -> Result<Duration, String> {
        let key = self.key;
        match (self.text, self.seconds) {
            (Some(_), Some(_)) => Err(format!(
                "both {key} and {key}_s are set: keep {key} (the _s spelling is deprecated)"
            )),
            (Some(text), None) => {
                units::parse_duration(text).map_err(|e| format!("\"{text}\": {e}"))
            }
            (None, Some(s)) => Ok(Duration::from_secs(s)),
            (None, None) => Ok(self.default),
        }
    }

    /// The duration for the runtime. Loading refuses a config whose value does not resolve,
    /// so the default stands in only for configs built in code without validation.
    pub fn get(&self) -> Duration {
        self.resolve().unwrap_or(self.default)
    }

    /// Where a problem with this key is reported: `NAME_s` when the alias is written (with
    /// both spellings, the line to delete), else `NAME`.
    fn at(&self, table: &KeyPath) -> KeyPath {
        match self.seconds {
            Some(_) => table.key(&format!("{}_s", self.key)),
            None => table.key(self.key),
        }
    }

    /// Adds the problem of this key, if any, to `out`.
    pub(crate) fn check(&self, table: &KeyPath, out: &mut Vec<Problem>) {
        if let Err(e) = self.resolve() {
            out.push(Problem::new(self.at(table), e));
        }
    }

    /// The deprecation warning when only the alias is written.
    pub(crate) fn warn(&self, table: &KeyPath, out: &mut Vec<Problem>) {
        if let (None, Some(s)) = (self.text, self.seconds) {
            let key = self.key;
            out.push(Problem::new(
                table.key(&format!("{key}_s")),
                format!("{key}_s is deprecated: write {key} = \"{s}s\""),
            ));
        }
    }
}

/// `keep_alive` and `connect_timeout` of an MQTT-family destination: well formed, and within
/// what MQTT and rumqttc can say (whole seconds; the CONNECT packet carries the keep-alive in
/// 16 bits).
pub(crate) fn check_mqtt(
    durations: [AliasedDuration<'_>; 2],
    table: &KeyPath,
    out: &mut Vec<Problem>,
) {
    for d in durations {
        let Ok(value) = d.resolve() else {
            d.check(table, out);
            continue;
        };
        let max = match d.key {
            "keep_alive" => Duration::from_secs(u16::MAX.into()),
            _ => Duration::MAX,
        };
        let problem = if value < Duration::from_secs(1) {
            "must be at least 1s (MQTT counts it in whole seconds)"
        } else if value.subsec_nanos() != 0 {
            "must be whole seconds, e.g. \"90s\" (MQTT counts it in whole seconds)"
        } else if value > max {
            "must be at most 65535s (about 18h): MQTT's keep-alive is a 16-bit count of seconds"
        } else {
            continue;
        };
        out.push(Problem::new(d.at(table), problem));
    }
}

/// A warning for every deprecated `_s` key written in `config`.
pub(crate) fn deprecation_warnings(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let root = KeyPath::root();
    for (i, c) in config.camera.iter().enumerate() {
        let table = root.key("camera").index(i);
        for d in c.aliased_durations() {
            d.warn(&table, &mut out);
        }
    }
    for (name, d) in &config.destination {
        let table = root.key("destination").key(name);
        let durations = match d {
            DestinationConfig::Mqtt(m) => Some(m.aliased_durations()),
            DestinationConfig::AzureIotHub(a) => Some(a.aliased_durations()),
            DestinationConfig::AwsIotCore(a) => Some(a.aliased_durations()),
            DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_) => None,
        };
        for duration in durations.into_iter().flatten() {
            duration.warn(&table, &mut out);
        }
    }
    out
}

const KEEP_ALIVE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl CameraConfig {
    /// The camera's duration keys that have a `_s` alias.
    pub fn aliased_durations(&self) -> [AliasedDuration<'_>; 1] {
        [AliasedDuration {
            key: "max_backoff",
            text: self.max_backoff.as_deref(),
            seconds: self.max_backoff_s,
            default: MAX_BACKOFF,
        }]
    }

    /// Upper bound of the reconnect back-off.
    pub fn max_backoff(&self) -> Duration {
        self.aliased_durations()[0].get()
    }
}

/// `keep_alive` and `connect_timeout`, shared by the MQTT-family destinations.
fn mqtt_durations<'a>(
    keep_alive: (Option<&'a str>, Option<u64>),
    connect_timeout: (Option<&'a str>, Option<u64>),
) -> [AliasedDuration<'a>; 2] {
    [
        AliasedDuration {
            key: "keep_alive",
            text: keep_alive.0,
            seconds: keep_alive.1,
            default: KEEP_ALIVE,
        },
        AliasedDuration {
            key: "connect_timeout",
            text: connect_timeout.0,
            seconds: connect_timeout.1,
            default: CONNECT_TIMEOUT,
        },
    ]
}

impl MqttDestination {
    /// The destination's duration keys that have a `_s` alias.
    pub fn aliased_durations(&self) -> [AliasedDuration<'_>; 2] {
        mqtt_durations(
            (self.keep_alive.as_deref(), self.keep_alive_s),
            (self.connect_timeout.as_deref(), self.connect_timeout_s),
        )
    }

    /// MQTT keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        self.aliased_durations()[0].get()
    }

    /// How long a connection attempt may take.
    pub fn connect_timeout(&self) -> Duration {
        self.aliased_durations()[1].get()
    }
}

impl AzureIotHubDestination {
    /// The destination's duration keys that have a `_s` alias.
    pub fn aliased_durations(&self) -> [AliasedDuration<'_>; 2] {
        mqtt_durations(
            (self.keep_alive.as_deref(), self.keep_alive_s),
            (self.connect_timeout.as_deref(), self.connect_timeout_s),
        )
    }
}

impl AwsIotCoreDestination {
    /// The destination's duration keys that have a `_s` alias.
    pub fn aliased_durations(&self) -> [AliasedDuration<'_>; 2] {
        mqtt_durations(
            (self.keep_alive.as_deref(), self.keep_alive_s),
            (self.connect_timeout.as_deref(), self.connect_timeout_s),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: Option<&str>, seconds: Option<u64>) -> AliasedDuration<'_> {
        AliasedDuration {
            key: "keep_alive",
            text,
            seconds,
            default: KEEP_ALIVE,
        }
    }

    #[test]
    fn the_string_the_alias_or_the_default() {
        assert_eq!(d(Some("90s"), None).resolve(), Ok(Duration::from_secs(90)));
        assert_eq!(d(None, Some(30)).resolve(), Ok(Duration::from_secs(30)));
        assert_eq!(d(None, None).resolve(), Ok(KEEP_ALIVE));
        assert!(
            d(Some("90"), None)
                .resolve()
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            d(Some("1m"), Some(60))
                .resolve()
                .unwrap_err()
                .starts_with("both")
        );
    }

    #[test]
    fn only_the_alias_alone_is_deprecated() {
        let table = KeyPath::root().key("destination").key("cloud");
        let mut out = Vec::new();
        d(None, Some(30)).warn(&table, &mut out);
        d(Some("30s"), None).warn(&table, &mut out);
        d(None, None).warn(&table, &mut out);
        assert_eq!(
            out,
            [Problem::new(
                table.key("keep_alive_s"),
                "keep_alive_s is deprecated: write keep_alive = \"30s\""
            )]
        );
    }
}
