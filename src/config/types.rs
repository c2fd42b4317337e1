//! Typed config (DESIGN.md §5). Names here are a contract with users: extend, never rename.

use super::secret::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub relay: RelayConfig,
    /// Cameras to subscribe to.
    #[serde(default)]
    pub camera: Vec<CameraConfig>,
    /// Named destinations (`[destination.NAME]`).
    #[serde(default)]
    pub destination: BTreeMap<String, DestinationConfig>,
    /// Routing rules, evaluated in file order.
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
    /// Local MQTT sources (sensors): messages become events that go through the rules.
    #[serde(default)]
    pub mqtt_source: Vec<MqttSourceConfig>,
    /// Commands to cameras received over an MQTT destination (downlink).
    #[serde(default)]
    pub command: Vec<CommandConfig>,
}

/// `[[mqtt_source]]`: subscribes to topic filters on a broker (the embedded one or any other);
/// each message becomes an event with camera = `name`, topic = the MQTT topic, data = the
/// JSON payload's top-level members as strings (`{"value": TEXT}` for anything else).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Unique name; the events' camera name (rules' `cameras` lists use it).
    pub name: String,
    /// `mqtt://host[:port]`.
    pub url: String,
    /// MQTT topic filters to subscribe to, e.g. `["sensors/#"]`.
    pub topics: Vec<String>,
    /// The events' serial (the `{serial}` of the default prefix). Default: `name`.
    #[serde(default)]
    pub serial: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`${VAR}` from the environment).
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Subscription QoS 0, 1 or 2. Default 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// MQTT client id. Default `edgerelay-{hostname}-source-{name}`.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// What a `[[command]]` does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    /// `{"port":7,"active":true}`: activate or deactivate a virtual input (VAPIX).
    VirtualInput,
    /// Any payload: take a snapshot and store it in the object stores of `to`.
    Snapshot,
}

/// `[[command]]`: messages arriving over an MQTT-family destination's own connection act on
/// a camera; the outcome (`{"ok":true}` or `{"ok":false,"error":"..."}`) is the reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Name of the `mqtt`, `aws-iot-core` or `azure-iot-hub` destination whose connection
    /// carries the commands.
    pub destination: String,
    /// `mqtt` and `aws-iot-core`: topic filter where commands arrive (required there).
    #[serde(default)]
    pub topic: Option<String>,
    /// `azure-iot-hub`: the direct method name (and C2D property `method`) that runs this
    /// command (required there).
    #[serde(default)]
    pub method: Option<String>,
    /// Name of the camera to act on.
    pub camera: String,
    /// What to do: `virtual_input` or `snapshot`.
    pub action: CommandAction,
    /// `snapshot`: names of the `s3` / `azure-blob` destinations that store the picture.
    /// Required for `snapshot`, not allowed otherwise.
    #[serde(default)]
    pub to: Vec<String>,
    /// `mqtt` and `aws-iot-core`: where to publish the outcome. Default: no reply. (Azure
    /// direct methods are answered on `$iothub/methods/res/{status}/?$rid={rid}`.)
    #[serde(default)]
    pub reply_topic: Option<String>,
    /// Most messages this command takes, e.g. `"10/s"` (default) or `"5/min"`: the excess is
    /// refused with an error reply (Azure: 429), so a flood cannot toggle a door strike.
    #[serde(default = "default_command_max_rate")]
    pub max_rate: String,
}

fn default_command_max_rate() -> String {
    "10/s".into()
}

/// `[relay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Directory of the outbox and other state. Default `/var/lib/edgerelay`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Address of the HTTP endpoint (/metrics /healthz /status); absent: disabled.
    #[serde(default)]
    pub http: Option<String>,
    /// User name `/status` and `/status.json` ask for (HTTP Basic auth), with `http_password`;
    /// `/healthz`, `/readyz` and `/metrics` stay open. Default none (no password asked).
    #[serde(default)]
    pub http_username: Option<String>,
    /// Password of `http_username` (`${VAR}` from the environment). Default none.
    #[serde(default)]
    pub http_password: Option<Secret>,
    /// File holding `http_password`. Default none.
    #[serde(default)]
    pub http_password_file: Option<PathBuf>,
    /// Listen address of the embedded MQTT broker; absent: no embedded broker.
    #[serde(default)]
    pub broker: Option<String>,
    /// User name clients of the embedded broker must log in with; with a password it turns on
    /// authentication (required when `broker` listens beyond loopback). Default none.
    #[serde(default)]
    pub broker_username: Option<String>,
    /// Password of `broker_username` (`${VAR}` from the environment). Default none.
    #[serde(default)]
    pub broker_password: Option<Secret>,
    /// File holding `broker_password`. Default none.
    #[serde(default)]
    pub broker_password_file: Option<PathBuf>,
    /// Print every delivery to stdout as it is published (demo and debugging). Default false.
    #[serde(default)]
    pub print: bool,
    /// How long a stop (SIGTERM, ctrl-c) waits for sinks to finish sending what is queued,
    /// after the sources stopped. What is still queued then is sent after the next start.
    /// Default "10s".
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: String,
    /// MQTT topic of the relay's own trouble events (destination down or back, outbox above
    /// 80 %, drops), published to every MQTT destination; "" turns them off.
    /// Default "edgerelay/status".
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            http: None,
            http_username: None,
            http_password: None,
            http_password_file: None,
            broker: None,
            broker_username: None,
            broker_password: None,
            broker_password_file: None,
            print: false,
            shutdown_timeout: default_shutdown_timeout(),
            status_topic: default_status_topic(),
        }
    }
}

fn default_shutdown_timeout() -> String {
    "10s".to_string()
}

fn default_status_topic() -> String {
    "edgerelay/status".to_string()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgerelay")
}

/// How a camera delivers its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// VAPIX event stream over WebSocket (AXIS OS 10.11+).
    #[default]
    Websocket,
    /// ONVIF metadata over RTSP.
    Rtsp,
    /// ONVIF PullPoint event subscription (any ONVIF Profile S/T camera).
    Pullpoint,
}

/// How an RTSP camera's stream and serial are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// Axis: `/axis-media/media.amp`, serial from the Digest realm.
    #[default]
    Axis,
    /// Any ONVIF Profile M/T camera: the Media service's metadata profile and stream URI,
    /// the serial from GetDeviceInformation.
    Onvif,
}

/// `[[camera]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique name, used in rules, metrics and templates.
    pub name: String,
    /// `http://HOST`, `https://HOST`, or `emulator:` for an in-process emulated camera.
    pub url: String,
    /// User for Digest authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`${VAR}` from the environment).
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password (alternative to `password`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Serial number; read from the device when absent.
    #[serde(default)]
    pub serial: Option<String>,
    /// `websocket` (default), `rtsp` or `pullpoint`.
    #[serde(default)]
    pub transport: Transport,
    /// PullPoint: a camera clock further than this from the relay's is reported once (log and
    /// `edgerelay_source_clock_skew_seconds`). Default "5s".
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: String,
    /// RTSP: `axis` (default) or `onvif` (stream URI and serial through ONVIF).
    #[serde(default)]
    pub vendor: Vendor,
    /// RTSP: the metadata stream's `rtsp://` URL, for cameras whose ONVIF is broken.
    #[serde(default)]
    pub rtsp_url: Option<String>,
    /// RTSP: add `analytics=polygon`. Default false.
    #[serde(default)]
    pub analytics: bool,
    /// RTSP: add `ptz=all`. Default false.
    #[serde(default)]
    pub ptz: bool,
    /// Video channel of a multi-channel device (RTSP `camera=N`). Default 1.
    #[serde(default = "default_channel")]
    pub channel: u32,
    /// RTSP port when not 554.
    #[serde(default)]
    pub rtsp_port: Option<u16>,
    /// Upper bound of the reconnect back-off, e.g. `"60s"` (default); read it with
    /// [`CameraConfig::max_backoff`].
    #[serde(default)]
    pub max_backoff: Option<String>,
    /// Deprecated spelling of `max_backoff` in whole seconds (`check` warns).
    #[serde(default)]
    pub max_backoff_s: Option<u64>,
    /// WebSocket: a ping goes out when the stream was quiet this long, and a stream silent
    /// for twice this (no event, no pong) is reported and reconnected. Default "15s".
    #[serde(default = "default_heartbeat")]
    pub heartbeat: String,
    /// Verify the camera's TLS certificate (https). Default true.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// PEM CA that signs the camera's certificate (https), e.g. the site's own CA or the
    /// device's self-signed certificate. Default: the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Resolution of snapshots (rules with `snapshot = true`), `"WIDTHxHEIGHT"` such as
    /// `"640x480"`, one the camera supports. Default: the camera's default resolution.
    #[serde(default)]
    pub snapshot_resolution: Option<String>,
}

fn default_channel() -> u32 {
    1
}

fn default_max_clock_skew() -> String {
    "5s".to_string()
}

fn default_heartbeat() -> String {
    "15s".to_string()
}

fn default_true() -> bool {
    true
}

/// A destination: one closed enum, one variant per kind (`kind = "..."`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DestinationConfig {
    /// A standard MQTT broker (Mosquitto, the embedded broker, ...).
    Mqtt(MqttDestination),
    /// Azure IoT Hub, as one device (MQTT 3.1.1 over TLS or WebSocket).
    AzureIotHub(AzureIotHubDestination),
    /// AWS IoT Core, as one thing (MQTT over mutual TLS).
    AwsIotCore(AwsIotCoreDestination),
    /// Amazon S3 or an S3-compatible store: NDJSON objects (DESIGN.md §4).
    S3(S3Destination),
    /// Azure Blob Storage: NDJSON block blobs (DESIGN.md §4).
    AzureBlob(AzureBlobDestination),
}

impl DestinationConfig {
    /// Outbox limits of this destination.
    pub fn buffer(&self) -> &BufferConfig {
        match self {
            Self::Mqtt(m) => &m.buffer,
            Self::AzureIotHub(a) => &a.buffer,
            Self::AwsIotCore(a) => &a.buffer,
            Self::S3(s) => &s.buffer,
            Self::AzureBlob(a) => &a.buffer,
        }
    }
}

/// `kind = "s3"`: objects in an S3 bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Destination {
    /// Bucket name. Required.
    pub bucket: String,
    /// Region, e.g. `"eu-north-1"`. Default: `AWS_REGION` from the environment, else
    /// `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store, e.g. `"http://127.0.0.1:9000"`; addressed
    /// path-style. Default: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Access key id. Default: `AWS_ACCESS_KEY_ID` from the environment.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key. Default: `AWS_SECRET_ACCESS_KEY` from the environment.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// File holding the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Session token of temporary credentials. Default: `AWS_SESSION_TOKEN` if set.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// File holding the session token.
    #[serde(default)]
    pub session_token_file: Option<PathBuf>,
    /// Text put before every key, e.g. `"site1/"`. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// Key template: `{camera}`, `{yyyy}`, `{mm}`, `{dd}`, `{hh}` (UTC, of the object's first
    /// event), `{first_seq}` (zero-padded), `{destination}`. Default
    /// `{camera}/{yyyy}/{mm}/{dd}/{hh}/{first_seq}.ndjson.gz` (`.zst` for zstd, none for
    /// `"none"`).
    #[serde(default)]
    pub key: Option<String>,
    /// Key template of snapshots (rules with `snapshot = true`): `{camera}`, `{yyyy}`, `{mm}`,
    /// `{dd}`, `{hh}` (UTC, of the event), `{timestamp}` (the event's epoch ms), `{topic}` (the
    /// event topic, path-safe), `{seq}` (outbox sequence), `{destination}`. Default
    /// `{camera}/snapshots/{yyyy}/{mm}/{dd}/{hh}/{timestamp}_{topic}.jpg`.
    #[serde(default)]
    pub snapshot_key: Option<String>,
    /// When an object is closed and uploaded.
    #[serde(default)]
    pub batch: BatchConfig,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Outbox limits for this destination.
    #[serde(default)]
    pub buffer: BufferConfig,
}

/// `kind = "azure-blob"`: block blobs in an Azure Storage container.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobDestination {
    /// Container SAS URL `https://ACCOUNT.blob.core.windows.net/CONTAINER?sv=...&sig=...`
    /// (needs create and write permission).
    #[serde(default)]
    pub sas_url: Option<Secret>,
    /// File holding the SAS URL.
    #[serde(default)]
    pub sas_url_file: Option<PathBuf>,
    /// Storage account connection string
    /// `AccountName=...;AccountKey=...[;BlobEndpoint=...|;EndpointSuffix=...]`; the relay
    /// signs a short-lived container SAS from the key for every upload. Needs `container`.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    /// File holding the connection string.
    #[serde(default)]
    pub connection_string_file: Option<PathBuf>,
    /// Container name, with `connection_string`.
    #[serde(default)]
    pub container: Option<String>,
    /// Text put before every blob name. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// Blob name template, as `key` of `kind = "s3"`.
    #[serde(default)]
    pub key: Option<String>,
    /// Blob name template of snapshots, as `snapshot_key` of `kind = "s3"`.
    #[serde(default)]
    pub snapshot_key: Option<String>,
    /// When a blob is closed and uploaded.
    #[serde(default)]
    pub batch: BatchConfig,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Outbox limits for this destination.
    #[serde(default)]
    pub buffer: BufferConfig,
}

/// `batch = { ... }` of an object store: an object closes at whichever limit comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Events per object. Default 10000.
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// Uncompressed NDJSON bytes per object, e.g. `"8MiB"` (default).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: String,
    /// Age of an object's first event when it is closed, e.g. `"60s"` (default).
    #[serde(default = "default_batch_age")]
    pub max_age: String,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_batch_events(),
            max_bytes: default_batch_bytes(),
            max_age: default_batch_age(),
        }
    }
}

fn default_batch_events() -> usize {
    10_000
}
fn default_batch_bytes() -> String {
    "8MiB".into()
}
fn default_batch_age() -> String {
    "60s".into()
}

/// Compression of object-store objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (`Content-Encoding: gzip`, `.ndjson.gz`). Default.
    #[default]
    Gzip,
    /// Zstandard (`Content-Encoding: zstd`, `.ndjson.zst`).
    Zstd,
    /// Plain NDJSON.
    None,
}

/// `kind = "mqtt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDestination {
    /// `mqtt://host[:1883]`, `mqtts://host[:8883]`, `ws://host[:80]/path` or
    /// `wss://host[:443]/path`.
    pub url: String,
    /// MQTT client id. Default `edgerelay-{hostname}-{destination}` (unique per box).
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`${VAR}` from the environment).
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Keep-alive, e.g. `"60s"` (default); whole seconds, at least 1s.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Deprecated spelling of `keep_alive` in whole seconds (`check` warns).
    #[serde(default)]
    pub keep_alive_s: Option<u64>,
    /// How long a connection attempt may take, e.g. `"10s"` (default); whole seconds.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Deprecated spelling of `connect_timeout` in whole seconds (`check` warns).
    #[serde(default)]
    pub connect_timeout_s: Option<u64>,
    /// Clean session. Default true.
    #[serde(default = "default_true")]
    pub clean_session: bool,
    /// Published by the broker when the relay disappears.
    #[serde(default)]
    pub last_will: Option<MessageConfig>,
    /// Published on every connect.
    #[serde(default)]
    pub connect_message: Option<MessageConfig>,
    /// Most unacknowledged QoS 1/2 publishes in flight: the cap of the paced window
    /// (`sinks::mqtt::pace`) and the bound on duplicates after a crash. Default 1000.
    #[serde(default = "default_mqtt_inflight")]
    pub inflight: u16,
    /// Outbox limits for this destination.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// PEM file of the CA certificate(s) that sign the broker's certificate (mqtts://, wss://).
    /// Default: the system's trust store, else the Mozilla roots built in.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain) for mutual TLS; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// TLS ALPN protocol names to offer, e.g. `["x-amzn-mqtt-ca"]`. Default: none.
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// Accept any broker certificate (testing only: anyone on the path can read and change
    /// the traffic). Default false; a warning is logged on every connect when set.
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// Publish Home Assistant MQTT discovery configs (retained) for every event instance this
    /// destination gets, so Home Assistant creates binary sensors, sensors and event entities
    /// by itself. Default false.
    #[serde(default)]
    pub home_assistant: bool,
    /// Discovery prefix Home Assistant listens on. Default "homeassistant".
    #[serde(default = "default_home_assistant_prefix")]
    pub home_assistant_prefix: String,
    /// Largest PUBLISH packet (topic, payload and headers) the broker takes, e.g. "256KiB";
    /// a bigger delivery goes to the dead-letter file instead of making the broker close the
    /// connection. Default "1MiB".
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: String,
    /// Camera availability (DESIGN.md §10): a retained QoS 1 `{"serial":..,"connected":..}`
    /// per camera on this template (`{serial}`, `{camera}`); `""` turns it off. Default
    /// "axis/{serial}/event/connection".
    #[serde(default = "default_availability_topic")]
    pub availability_topic: String,
}

/// The camera's own MQTT client's connection topic (DESIGN.md §10).
pub fn default_availability_topic() -> String {
    "axis/{serial}/event/connection".to_string()
}

fn default_max_packet_size() -> String {
    "1MiB".to_string()
}

fn default_home_assistant_prefix() -> String {
    "homeassistant".to_string()
}

/// How Azure IoT Hub is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AzureTransport {
    /// MQTT over TLS on port 8883 (default).
    #[default]
    Mqtt,
    /// MQTT over WebSocket over TLS on port 443 (`wss://{HostName}/$iothub/websocket`), for
    /// networks that only let HTTPS out.
    Websocket,
}

/// `kind = "azure-iot-hub"`: one IoT Hub device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureIotHubDestination {
    /// Device connection string `HostName=...;DeviceId=...;SharedAccessKey=...` (SAS), or
    /// `HostName=...;DeviceId=...;x509=true` with `cert_file`/`key_file`.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    /// File holding the connection string (alternative to `connection_string`).
    #[serde(default)]
    pub connection_string_file: Option<PathBuf>,
    /// Lifetime of each SAS token, e.g. `"1h"`. Default 1h. A new token (and connection) is
    /// made when 80% of it has passed.
    #[serde(default = "default_sas_ttl")]
    pub sas_ttl: String,
    /// `mqtt` (TLS, port 8883, default) or `websocket` (WSS, port 443).
    #[serde(default)]
    pub transport: AzureTransport,
    /// PEM CA file for the hub's certificate. Default: system roots, else Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// X.509 device certificate (PEM) instead of a SharedAccessKey; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Keep-alive, e.g. `"60s"` (default; IoT Hub closes idle connections after about 29 min); whole seconds, at least 1s.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Deprecated spelling of `keep_alive` in whole seconds (`check` warns).
    #[serde(default)]
    pub keep_alive_s: Option<u64>,
    /// How long a connection attempt may take, e.g. `"10s"` (default); whole seconds.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Deprecated spelling of `connect_timeout` in whole seconds (`check` warns).
    #[serde(default)]
    pub connect_timeout_s: Option<u64>,
    /// Most unacknowledged publishes in flight (cap of the paced window, bound on duplicates
    /// after a crash). Default 100: IoT Hub documents no in-flight limit for MQTT 3.1.1, only
    /// per-hub device-to-cloud throttles (S1: 100 sends/s or 12/s/unit) with traffic shaping,
    /// which the paced window answers by shrinking as acknowledgements slow.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Outbox limits for this destination.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Camera availability (DESIGN.md §10): a retained QoS 1 `{"serial":..,"connected":..}`
    /// per camera on this template (`{serial}`, `{camera}`); `""` turns it off. Default
    /// "axis/{serial}/event/connection".
    #[serde(default = "default_availability_topic")]
    pub availability_topic: String,
}

fn default_sas_ttl() -> String {
    "1h".into()
}

/// `kind = "aws-iot-core"`: one AWS IoT thing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsIotCoreDestination {
    /// Device data endpoint, e.g. `abc123-ats.iot.eu-north-1.amazonaws.com`. Required.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Thing name, used as the MQTT client id. Required.
    #[serde(default)]
    pub thing_name: Option<String>,
    /// 8883 (default) or 443 (then ALPN `x-amzn-mqtt-ca` is offered).
    #[serde(default = "default_aws_port")]
    pub port: u16,
    /// The thing's certificate (PEM). Required.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM). Required.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Amazon root CA (PEM, `AmazonRootCA1.pem`). Required.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Keep-alive, e.g. `"60s"` (default; AWS allows 30s to 1200s); whole seconds, at least 1s.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Deprecated spelling of `keep_alive` in whole seconds (`check` warns).
    #[serde(default)]
    pub keep_alive_s: Option<u64>,
    /// How long a connection attempt may take, e.g. `"10s"` (default); whole seconds.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Deprecated spelling of `connect_timeout` in whole seconds (`check` warns).
    #[serde(default)]
    pub connect_timeout_s: Option<u64>,
    /// Clean session. Default true.
    #[serde(default = "default_true")]
    pub clean_session: bool,
    /// Published by AWS IoT when the relay disappears.
    #[serde(default)]
    pub last_will: Option<MessageConfig>,
    /// Published on every connect.
    #[serde(default)]
    pub connect_message: Option<MessageConfig>,
    /// Most unacknowledged publishes in flight (cap of the paced window, bound on duplicates
    /// after a crash). Default and largest value 100: AWS IoT Core's message broker takes at
    /// most 100 in-flight unacknowledged inbound publishes per client and accepts no more
    /// until it acknowledges one (AWS IoT Core quotas, "Maximum inbound unacknowledged
    /// messages").
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Outbox limits for this destination.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Camera availability (DESIGN.md §10): a retained QoS 1 `{"serial":..,"connected":..}`
    /// per camera on this template (`{serial}`, `{camera}`); `""` turns it off. Default
    /// "axis/{serial}/event/connection".
    #[serde(default = "default_availability_topic")]
    pub availability_topic: String,
}

fn default_aws_port() -> u16 {
    8883
}

fn default_inflight() -> u16 {
    100
}

/// A plain broker documents no in-flight limit of its own (Mosquitto takes any number from a
/// client on MQTT 3.1.1): 1000 lets one connection reach Mosquitto's pace on loopback
/// (README "Figures") while keeping the duplicates after a crash to 1000.
fn default_mqtt_inflight() -> u16 {
    1000
}

/// A fixed MQTT message (last will, connect message).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageConfig {
    /// Topic.
    pub topic: String,
    /// Payload text.
    pub message: String,
    /// Retain flag. Default false.
    #[serde(default)]
    pub retain: bool,
    /// QoS 0, 1 or 2. Default 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

/// What to do when a destination's outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the oldest queued deliveries to make room (default).
    #[default]
    DropOldest,
    /// Refuse new deliveries.
    RejectNew,
}

/// `buffer = { ... }` of a destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Size cap of the queue on disk, e.g. `"1GiB"`. Default 1GiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: String,
    /// Policy at the cap. Default `drop_oldest`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Deliveries older than this are dropped, e.g. `"7d"`. Default: never.
    #[serde(default)]
    pub max_age: Option<String>,
    /// Flush to stable storage before a batch counts as accepted (survives power loss; one
    /// `fdatasync` covers every record written meanwhile: group commit). Default true. False:
    /// every batch is still written to the OS before it counts as accepted, so it survives
    /// `kill -9`, but a power cut loses what the OS had not written back (up to ~30 s).
    #[serde(default = "default_fsync")]
    pub fsync: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            when_full: WhenFull::default(),
            max_age: None,
            fsync: default_fsync(),
        }
    }
}

fn default_fsync() -> bool {
    true
}

fn default_max_bytes() -> String {
    "1GiB".into()
}

/// Retain policy of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RetainPolicy {
    /// Never retain (as cameras do).
    #[default]
    None,
    /// Retain stateful events only; `Deleted` clears the retained state.
    Property,
    /// Retain everything.
    All,
}

/// `max_rate_keep` of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RateKeep {
    /// Deliver the first events of a window, drop the rest (default).
    #[default]
    First,
    /// Also deliver the last event of a full window when the window ends.
    Latest,
}

/// `[[rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name.
    pub name: String,
    /// Cameras this rule applies to. Default: all.
    #[serde(default)]
    pub cameras: Option<Vec<String>>,
    /// ONVIF topic expression; `""` or absent: all topics.
    #[serde(default)]
    pub topic: Option<String>,
    /// JSONPath over the event's JSON view; matches if it selects anything.
    #[serde(default)]
    pub when: Option<String>,
    /// Destination names. Required unless `drop = true`.
    #[serde(default)]
    pub to: Vec<String>,
    /// Topic prefix template. Default `axis/{serial}`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Template that replaces the whole default topic.
    #[serde(default)]
    pub mqtt_topic: Option<String>,
    /// Put `tns:onvif`/`tns:axis` segments in the topic. Default true.
    #[serde(default = "default_true")]
    pub include_namespaces: bool,
    /// Put `/event/{path}` after the prefix. Default true.
    #[serde(default = "default_true")]
    pub include_condition_name: bool,
    /// Put `serial` in the payload. Default false.
    #[serde(default)]
    pub include_serial: bool,
    /// `axis` (the camera format), `summary` (analytics frames as object counts per class;
    /// other events in the camera format) or a template. Default `axis`.
    #[serde(default = "default_payload")]
    pub payload: String,
    /// In the camera-format payload, write items the camera's catalog types as `xsd:boolean`
    /// or a number type as JSON booleans and numbers instead of strings, for consumers that
    /// compute with them. Default false: byte for byte what the camera sends.
    #[serde(default)]
    pub typed_values: bool,
    /// QoS 0, 1 or 2. Default 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Retain policy. Default `none`.
    #[serde(default)]
    pub retain: RetainPolicy,
    /// Drop repeats of the same state. Default false.
    #[serde(default)]
    pub only_changes: bool,
    /// Rate limit per camera and topic, e.g. `"10/s"`: at most that many deliveries per
    /// window of that period, the window opened by the first event. Default: none.
    #[serde(default)]
    pub max_rate: Option<String>,
    /// Which events of a full `max_rate` window go out: `first` (default; the rest are
    /// dropped) or `latest` (also the last one, when the window ends).
    #[serde(default)]
    pub max_rate_keep: RateKeep,
    /// Silence matching events: no delivery, and later rules do not see them. Default false.
    #[serde(default)]
    pub drop: bool,
    /// End matching for this event after this rule. Default false.
    #[serde(default)]
    pub stop: bool,
    /// Also fetch a JPEG from the camera (VAPIX `image.cgi`) when this rule delivers an event,
    /// stored as its own object in each `s3` / `azure-blob` destination of `to` (other
    /// destinations get the event only). Best effort: a failed or skipped fetch never holds
    /// the event back. Default false.
    #[serde(default)]
    pub snapshot: bool,
}

fn default_prefix() -> String {
    "axis/{serial}".into()
}
fn default_payload() -> String {
    "axis".into()
}
