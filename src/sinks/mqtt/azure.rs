//! Azure IoT Hub as an MQTT destination: one device, MQTT 3.1.1 over TLS (8883) or WSS (443).
//!
//! What IoT Hub expects (learn.microsoft.com, "Communicate with an IoT hub using the MQTT
//! protocol"):
//! - client id = DeviceId; user name `{HostName}/{DeviceId}/?api-version=2021-04-12`;
//! - password = a SAS token `SharedAccessSignature sr={resource}&sig={signature}&se={expiry}`
//!   with resource `{HostName}/devices/{DeviceId}` URL-encoded, and the signature the
//!   base64 HMAC-SHA256 of `"{resource}\n{expiry}"` under the base64-decoded device key,
//!   URL-encoded (byte for byte what Microsoft's Python sample produces, `quote_plus`);
//!   or no password with an X.509 client certificate;
//! - telemetry goes to `devices/{DeviceId}/messages/events/{property_bag}`, the bag being
//!   URL-encoded `name=value` pairs joined by `&`; `$.ct` / `$.ce` are the system properties
//!   content type and content encoding. The rule's own topic travels as the application
//!   property `mqtt_topic`;
//! - no retain, QoS 0 or 1, messages up to 256 KB (body and properties together).
//!
//! A SAS token expires; IoT Hub then closes the connection. The sink reconnects with a fresh
//! token when 80% of `sas_ttl` has passed ([`SasKey::issue`]); deliveries in flight stay in
//! the outbox and are resent after the reconnect.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::config::{AzureIotHubDestination, AzureTransport, BufferConfig, MqttDestination, units};

/// The MQTT API version IoT Hub is asked for.
pub const API_VERSION: &str = "2021-04-12";
/// IoT Hub's device-to-cloud message size limit.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Share of the token lifetime after which a new token is made.
const RENEW_AT_PERCENT: i64 = 80;

/// A parsed device connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName`: `{hub}.azure-devices.net`.
    pub host_name: String,
    /// `DeviceId`.
    pub device_id: String,
    /// `SharedAccessKey` (base64); `None` for X.509 devices.
    pub shared_access_key: Option<Secret>,
}

impl ConnectionString {
    /// Parses `HostName=...;DeviceId=...;SharedAccessKey=...` (or `...;x509=true`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (mut host, mut device, mut key) = (None, None, None);
        for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("\"{part}\" is not Name=Value"));
            };
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "hostname" => host = Some(v),
                "deviceid" => device = Some(v),
                "sharedaccesskey" => key = Some(v),
                "moduleid" => return Err("module identities (ModuleId) are not supported: use a device connection string".into()),
                "sharedaccesskeyname" => return Err("SharedAccessKeyName marks a hub-level policy string: use the device's own connection string (HostName=...;DeviceId=...;SharedAccessKey=...)".into()),
                _ => {}
            }
        }
        let missing: Vec<&str> = [("HostName", &host), ("DeviceId", &device)]
            .iter()
            .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "connection string lacks {}: expected HostName=HUB.azure-devices.net;DeviceId=ID;SharedAccessKey=KEY",
                missing.join(" and ")
            ));
        }
        if let Some(k) = &key
            && base64::engine::general_purpose::STANDARD.decode(k).is_err()
        {
            return Err("SharedAccessKey is not base64".into());
        }
        Ok(Self {
            host_name: host.unwrap_or_default(),
            device_id: device.unwrap_or_default(),
            shared_access_key: key.map(Secret::new),
        })
    }

    /// The MQTT user name IoT Hub expects.
    pub fn username(&self) -> String {
        format!(
            "{}/{}/?api-version={API_VERSION}",
            self.host_name, self.device_id
        )
    }

    /// The SAS resource URI: `{HostName}/devices/{DeviceId}`.
    pub fn resource(&self) -> String {
        format!("{}/devices/{}", self.host_name, self.device_id)
    }
}

/// Python's `urllib.parse.quote_plus`: letters, digits and `_.-~` stay, space becomes `+`,
/// every other byte `%XX`. The SAS token must match Microsoft's samples byte for byte.
pub fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// RFC 2396 / 3986 encoding for property names and values (`/` → `%2F`, space → `%20`).
pub fn encode_property(s: &str) -> String {
    quote_plus(s).replace('+', "%20")
}

/// A SAS token for `resource`, valid until `expiry` (epoch seconds).
pub fn sas_token(resource: &str, key_b64: &str, expiry: i64) -> Result<String, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64.trim())
        .map_err(|_| "SharedAccessKey is not base64".to_string())?;
    let sr = quote_plus(resource);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{sr}\n{expiry}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
        quote_plus(&sig)
    ))
}

/// A device key and token lifetime: makes tokens and says when to replace them.
#[derive(Debug, Clone)]
pub struct SasKey {
    /// `{HostName}/devices/{DeviceId}`.
    pub resource: String,
    /// Base64 device key.
    pub key: Secret,
    /// Token lifetime in seconds (at least 1).
    pub ttl_s: i64,
}

/// A token and the moment to replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The MQTT password.
    pub token: Secret,
    /// Its `se`, epoch seconds.
    pub expiry_s: i64,
    /// When to reconnect with a new token: 80% of the lifetime after issue, epoch ms.
    pub renew_at_ms: i64,
}

impl SasKey {
    /// A token issued at `now_ms` (the injected clock).
    pub fn issue(&self, now_ms: i64) -> Result<IssuedToken, String> {
        let ttl_s = self.ttl_s.max(1);
        let expiry_s = now_ms.div_euclid(1000) + ttl_s;
        Ok(IssuedToken {
            token: sas_token(&self.resource, &self.key, expiry_s)?.into(),
            expiry_s,
            renew_at_ms: now_ms + ttl_s * 1000 * RENEW_AT_PERCENT / 100,
        })
    }
}

/// The telemetry topic of `device_id` carrying `mqtt_topic`, the content properties and, as
/// the message id system property `$.mid`, the delivery's `event_id` (the same on every
/// resend, so consumers can drop duplicates by message id).
pub fn event_topic(device_id: &str, mqtt_topic: &str, json: bool, event_id: &str) -> String {
    let ct = if json {
        "application%2Fjson"
    } else {
        "text%2Fplain"
    };
    format!(
        "devices/{device_id}/messages/events/mqtt_topic={}&$.ct={ct}&$.ce=utf-8&$.mid={}",
        encode_property(mqtt_topic),
        encode_property(event_id)
    )
}

/// What the sink needs for one IoT Hub device.
#[derive(Debug, Clone)]
pub struct AzureSetup {
    /// Connection settings in generic form (URL, client id, user name, TLS files).
    pub mqtt: MqttDestination,
    /// The device id (publish topic).
    pub device_id: String,
    /// Present for SAS devices.
    pub sas: Option<SasKey>,
}

/// Resolves an `azure-iot-hub` destination (validated by `check` first).
pub fn setup(a: &AzureIotHubDestination) -> Result<AzureSetup, String> {
    let cs = ConnectionString::parse(a.connection_string.as_deref().unwrap_or_default())?;
    let ttl = units::parse_duration(&a.sas_ttl).map_err(|e| format!("sas_ttl: {e}"))?;
    let sas = match (&cs.shared_access_key, &a.cert_file) {
        (Some(key), None) => Some(SasKey {
            resource: cs.resource(),
            key: key.clone(),
            ttl_s: ttl.as_secs() as i64,
        }),
        (_, Some(_)) => None,
        (None, None) => {
            return Err("no SharedAccessKey in the connection string and no cert_file".into());
        }
    };
    let url = match a.transport {
        AzureTransport::Mqtt => format!("mqtts://{}:8883", cs.host_name),
        AzureTransport::Websocket => format!("wss://{}:443/$iothub/websocket", cs.host_name),
    };
    let mqtt = MqttDestination {
        url,
        client_id: Some(cs.device_id.clone()),
        username: Some(cs.username()),
        password: None,
        password_file: None,
        keep_alive: a.keep_alive.clone(),
        keep_alive_s: a.keep_alive_s,
        connect_timeout: a.connect_timeout.clone(),
        connect_timeout_s: a.connect_timeout_s,
        clean_session: true,
        last_will: None,
        connect_message: None,
        inflight: a.inflight,
        buffer: BufferConfig::default(),
        ca_file: a.ca_file.clone(),
        cert_file: a.cert_file.clone(),
        key_file: a.key_file.clone(),
        alpn: None,
        tls_insecure_skip_verify: false,
        home_assistant: false,
        home_assistant_prefix: String::new(),
        max_packet_size: String::new(),
        availability_topic: a.availability_topic.clone(),
    };
    Ok(AzureSetup {
        mqtt,
        device_id: cs.device_id,
        sas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWRldmljZS1rZXktZm9yLXRlc3Rz"; // "secret-device-key-for-tests"

    /// Microsoft's documented Python sample ("Control access to IoT Hub with SAS tokens"),
    /// verbatim, with `time` pinned so the output is reproducible.
    const MS_PYTHON: &str = r#"
from base64 import b64encode, b64decode
from hashlib import sha256
from time import time
from urllib import parse
from hmac import HMAC

def generate_sas_token(uri, key, policy_name, expiry=3600):
    ttl = time() + expiry
    sign_key = "%s\n%d" % ((parse.quote_plus(uri)), int(ttl))
    signature = b64encode(HMAC(b64decode(key), sign_key.encode('utf-8'), sha256).digest())

    rawtoken = {
        'sr' :  uri,
        'sig': signature,
        'se' : str(int(ttl))
    }

    if policy_name is not None:
        rawtoken['skn'] = policy_name

    return 'SharedAccessSignature ' + parse.urlencode(rawtoken)

import sys
time = lambda: float(sys.argv[3])
print(generate_sas_token(sys.argv[1], sys.argv[2], None, int(sys.argv[4])))
"#;

    fn python_token(uri: &str, key: &str, now_s: i64, ttl_s: i64) -> String {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(MS_PYTHON)
            .arg(uri)
            .arg(key)
            .arg(now_s.to_string())
            .arg(ttl_s.to_string())
            .output()
            .expect("python3 is needed for the reference SAS tokens");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }

    #[test]
    fn sas_tokens_match_microsofts_python_sample_byte_for_byte() {
        let keys = [
            KEY.to_string(),
            base64::engine::general_purpose::STANDARD.encode([0xfbu8; 32]),
        ];
        for (uri, key, now) in [
            (
                "myhub.azure-devices.net/devices/lobby-cam",
                &keys[0],
                1_700_000_000,
            ),
            (
                "my-hub.azure-devices.net/devices/cam 1*(x)~y@z",
                &keys[1],
                1_735_732_800,
            ),
            ("h.azure-devices.net/devices/ä/ö", &keys[0], 1),
        ] {
            let reference = python_token(uri, key, now, 3600);
            assert_eq!(sas_token(uri, key, now + 3600).unwrap(), reference);
        }
    }

    #[test]
    fn connection_string_gives_documented_identity() {
        let cs = ConnectionString::parse(&format!(
            "HostName=myhub.azure-devices.net;DeviceId=lobby-cam;SharedAccessKey={KEY}"
        ))
        .unwrap();
        assert_eq!(cs.device_id, "lobby-cam");
        assert_eq!(
            cs.username(),
            "myhub.azure-devices.net/lobby-cam/?api-version=2021-04-12"
        );
        assert_eq!(cs.resource(), "myhub.azure-devices.net/devices/lobby-cam");
        let x509 =
            ConnectionString::parse("HostName=h.azure-devices.net;DeviceId=d;x509=true").unwrap();
        assert_eq!(x509.shared_access_key, None);
    }

    #[test]
    fn incomplete_connection_strings_say_what_is_missing() {
        let e = ConnectionString::parse("SharedAccessKey=abc=").unwrap_err();
        assert!(e.contains("HostName and DeviceId"), "{e}");
        let e = ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=!!").unwrap_err();
        assert!(e.contains("not base64"), "{e}");
    }

    #[test]
    fn event_topic_carries_rule_topic_and_content_properties() {
        assert_eq!(
            event_topic(
                "lobby-cam",
                "axis/ACCC8E012345/event/tns:onvif/Device/$source/port/1",
                true,
                "0123456789abcdef-0000000000000007"
            ),
            "devices/lobby-cam/messages/events/mqtt_topic=axis%2FACCC8E012345%2Fevent%2Ftns%3Aonvif%2FDevice%2F%24source%2Fport%2F1&$.ct=application%2Fjson&$.ce=utf-8&$.mid=0123456789abcdef-0000000000000007"
        );
        assert_eq!(
            event_topic("d", "a b", false, "x"),
            "devices/d/messages/events/mqtt_topic=a%20b&$.ct=text%2Fplain&$.ce=utf-8&$.mid=x"
        );
    }

    #[test]
    fn tokens_are_renewed_at_80_percent_of_their_lifetime() {
        use crate::clock::{Clock, ManualClock};
        let clock = ManualClock::new(1_700_000_000_500);
        let key = SasKey {
            resource: "h/devices/d".into(),
            key: KEY.into(),
            ttl_s: 3600,
        };
        let first = key.issue(clock.now_ms()).unwrap();
        assert_eq!(first.expiry_s, 1_700_000_000 + 3600);
        assert_eq!(first.renew_at_ms, 1_700_000_000_500 + 2_880_000);
        assert!(first.token.ends_with("&se=1700003600"));
        clock.advance(2_880_000);
        let second = key.issue(clock.now_ms()).unwrap();
        assert_eq!(second.expiry_s, first.expiry_s + 2880);
        assert_ne!(second.token, first.token);
        assert!(second.renew_at_ms < second.expiry_s * 1000);
    }

    #[test]
    fn setup_uses_tls_or_websocket_endpoints() {
        let mut a: AzureIotHubDestination = toml::from_str(&format!(
            "connection_string = \"HostName=hub.azure-devices.net;DeviceId=cam;SharedAccessKey={KEY}\""
        ))
        .unwrap();
        let s = setup(&a).unwrap();
        assert_eq!(s.mqtt.url, "mqtts://hub.azure-devices.net:8883");
        assert_eq!(s.mqtt.client_id.as_deref(), Some("cam"));
        assert_eq!(s.sas.unwrap().ttl_s, 3600);
        a.transport = AzureTransport::Websocket;
        assert_eq!(
            setup(&a).unwrap().mqtt.url,
            "wss://hub.azure-devices.net:443/$iothub/websocket"
        );
    }
}
