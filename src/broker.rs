//! Embedded MQTT broker (rumqttd), for the out-of-the-box config and site-local publishers.
