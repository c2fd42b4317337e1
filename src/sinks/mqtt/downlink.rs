//! Commands on a destination's own connection: what to subscribe to on every connect, and
//! which command an incoming publish runs. Pure functions of the flavor and the commands, so
//! the sink's loop only subscribes, forwards and publishes replies.
//!
//! Azure IoT Hub (device protocol): direct methods arrive on
//! `$iothub/methods/POST/{method}/?$rid={rid}`; cloud-to-device messages on
//! `devices/{DeviceId}/messages/devicebound/{property bag}`, where the application property
//! `method` names the command. Other brokers: the command's `topic` filter.

use crate::commands::{Failure, Reply, ReplyTo, Request};
use crate::config::CommandConfig;

use super::flavor::Flavor;

/// Topic filter of Azure direct method calls.
pub const AZURE_METHODS: &str = "$iothub/methods/POST/#";

/// The filters to subscribe to (QoS 1) after each CONNACK: a new connection (a SAS renewal
/// included) starts without subscriptions.
pub fn subscriptions<'a>(
    flavor: &Flavor,
    commands: impl IntoIterator<Item = &'a CommandConfig>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in commands {
        let filters = match flavor {
            Flavor::Azure { device_id } => vec![
                AZURE_METHODS.to_string(),
                format!("devices/{device_id}/messages/devicebound/#"),
            ],
            Flavor::Plain | Flavor::Aws => c.topic.clone().into_iter().collect(),
        };
        for f in filters {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// What an incoming publish means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Run command `index` (position in the commands given).
    Run(usize, Request),
    /// Answer at once (unknown method).
    Answer(Reply),
    /// Not for any command (a reply topic, an unnamed C2D message).
    Ignore,
}

/// Routes one incoming publish.
pub fn route<'a>(
    flavor: &Flavor,
    commands: impl IntoIterator<Item = &'a CommandConfig>,
    topic: &str,
    payload: &[u8],
) -> Routed {
    let commands: Vec<&CommandConfig> = commands.into_iter().collect();
    let run = |i: usize, reply: ReplyTo| {
        Routed::Run(
            i,
            Request {
                payload: payload.to_vec(),
                reply,
            },
        )
    };
    match flavor {
        Flavor::Azure { device_id } => {
            if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
                let (method, query) = rest.split_once("/?").unwrap_or((rest, ""));
                let rid = property(query, "$rid").unwrap_or_default();
                let reply = ReplyTo::AzureMethod { rid };
                return match commands
                    .iter()
                    .position(|c| c.method.as_deref() == Some(method))
                {
                    Some(i) => run(i, reply),
                    None => {
                        let failure = Failure::no_such_method(method);
                        Reply::to(&reply, &Err(failure)).map_or(Routed::Ignore, Routed::Answer)
                    }
                };
            }
            let c2d = format!("devices/{device_id}/messages/devicebound/");
            if let Some(bag) = topic.strip_prefix(&c2d)
                && let Some(method) = property(bag, "method")
                && let Some(i) = commands
                    .iter()
                    .position(|c| c.method.as_deref() == Some(method.as_str()))
            {
                return run(i, ReplyTo::Logged);
            }
            Routed::Ignore
        }
        Flavor::Plain | Flavor::Aws => {
            if commands
                .iter()
                .any(|c| c.reply_topic.as_deref() == Some(topic))
            {
                return Routed::Ignore;
            }
            match commands.iter().position(|c| {
                c.topic
                    .as_deref()
                    .is_some_and(|f| rumqttc::matches(topic, f))
            }) {
                Some(i) => run(i, ReplyTo::Topic(commands[i].reply_topic.clone())),
                None => Routed::Ignore,
            }
        }
    }
}

/// The percent-decoded value of `key` in a `k=v&k=v` property bag.
fn property(bag: &str, key: &str) -> Option<String> {
    bag.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (decode(k) == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(topic: Option<&str>, method: Option<&str>, reply: Option<&str>) -> CommandConfig {
        CommandConfig {
            destination: "d".into(),
            topic: topic.map(str::to_string),
            method: method.map(str::to_string),
            camera: "c".into(),
            action: crate::config::CommandAction::VirtualInput,
            to: vec![],
            reply_topic: reply.map(str::to_string),
            max_rate: "10/s".into(),
        }
    }

    #[test]
    fn azure_direct_methods_and_c2d_messages_name_their_command() {
        let f = Flavor::Azure {
            device_id: "cam".into(),
        };
        let cmds = [
            command(None, Some("a"), None),
            command(None, Some("lobby_vi"), None),
        ];
        assert_eq!(
            subscriptions(&f, &cmds),
            [AZURE_METHODS, "devices/cam/messages/devicebound/#"]
        );
        assert_eq!(
            route(&f, &cmds, "$iothub/methods/POST/lobby_vi/?$rid=7f", b"{}"),
            Routed::Run(
                1,
                Request {
                    payload: b"{}".to_vec(),
                    reply: ReplyTo::AzureMethod { rid: "7f".into() }
                }
            )
        );
        assert_eq!(
            route(&f, &cmds, "$iothub/methods/POST/nope/?$rid=8", b"{}"),
            Routed::Answer(Reply {
                topic: "$iothub/methods/res/404/?$rid=8".into(),
                payload: br#"{"ok":false,"error":"no command for method \"nope\""}"#.to_vec(),
                qos: 0
            })
        );
        assert_eq!(
            route(
                &f,
                &cmds,
                "devices/cam/messages/devicebound/%24.mid=1&method=lobby%5Fvi",
                b"{}"
            ),
            Routed::Run(
                1,
                Request {
                    payload: b"{}".to_vec(),
                    reply: ReplyTo::Logged
                }
            )
        );
        assert_eq!(
            route(&f, &cmds, "devices/cam/messages/devicebound/x=1", b"{}"),
            Routed::Ignore
        );
    }

    #[test]
    fn broker_commands_match_their_filter_and_ignore_their_own_replies() {
        let cmds = [
            command(Some("site/+/cmd"), None, Some("site/lobby/cmd")),
            command(Some("other"), None, None),
        ];
        assert_eq!(subscriptions(&Flavor::Aws, &cmds), ["site/+/cmd", "other"]);
        assert_eq!(
            route(&Flavor::Plain, &cmds, "site/hall/cmd", b"x"),
            Routed::Run(
                0,
                Request {
                    payload: b"x".to_vec(),
                    reply: ReplyTo::Topic(Some("site/lobby/cmd".into()))
                }
            )
        );
        assert_eq!(
            route(&Flavor::Plain, &cmds, "site/lobby/cmd", b"x"),
            Routed::Ignore
        );
        assert!(matches!(
            route(&Flavor::Aws, &cmds, "other", b"x"),
            Routed::Run(1, _)
        ));
        assert_eq!(route(&Flavor::Aws, &cmds, "nothing", b"x"), Routed::Ignore);
    }
}
