//! From a destination's config to a ready [`MqttSink`]: connection settings, flavor, SAS key.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::{DestinationConfig, units};

use super::flavor::Flavor;
use super::{MqttSink, aws, azure, limits};

impl MqttSink {
    /// The sink of destination `name`; an error names what in the config is unusable.
    pub fn from_config(
        name: Arc<str>,
        dest: &DestinationConfig,
        print: bool,
        clock: SharedClock,
        relay_id: Arc<str>,
    ) -> Result<MqttSink, String> {
        let mut max_packet = limits::DEFAULT_PACKET_BYTES;
        let (config, flavor, sas) = match dest {
            DestinationConfig::Mqtt(m) => {
                max_packet = units::parse_bytes(&m.max_packet_size)
                    .map_err(|e| format!("max_packet_size: {e}"))?
                    as usize;
                (m.clone(), Flavor::Plain, None)
            }
            DestinationConfig::AzureIotHub(a) => {
                let s = azure::setup(a)?;
                let flavor = Flavor::Azure {
                    device_id: s.device_id,
                };
                (s.mqtt, flavor, s.sas)
            }
            DestinationConfig::AwsIotCore(a) => (aws::setup(a)?, Flavor::Aws, None),
            DestinationConfig::S3(_) | DestinationConfig::AzureBlob(_) => {
                return Err("an object store, not an MQTT destination".into());
            }
        };
        Ok(MqttSink {
            name,
            config,
            print,
            flavor,
            sas,
            clock,
            max_packet,
            commands: None,
            relay_id,
        })
    }
}
