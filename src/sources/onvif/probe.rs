//! `edgerelay probe URL`: what a camera offers (device information, clock, VAPIX, ONVIF
//! events and a metadata stream) and a ready `[[camera]]` stanza, so a person adding a
//! non-Axis camera knows what to write.

use std::fmt::Write as _;
use std::sync::Arc;

use super::client::Client;

/// Probes the camera at `url` (`http(s)://HOST`) with optional credentials; the report text.
pub async fn probe(
    url: &str,
    username: Option<String>,
    password: Option<String>,
) -> Result<String, String> {
    let base = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    let tls = crate::tls::TlsSettings::default();
    let client = Client::new(
        username.clone(),
        password.clone(),
        &tls,
        Arc::new(crate::clock::SystemClock),
    )
    .map_err(|e| e.to_string())?;
    let device = super::device_url(&base);
    let mut out = String::new();
    let _ = writeln!(out, "camera: {base}");
    let onvif = match client.measure_clock(&device).await {
        Ok((_, offset)) => {
            client.set_offset_ms(offset);
            let _ = writeln!(out, "ONVIF device service: {device}");
            let _ = writeln!(
                out,
                "camera clock minus this host's: {:.1} s",
                offset as f64 / 1000.0
            );
            true
        }
        Err(e) => {
            let _ = writeln!(out, "ONVIF device service: none at {device} ({e})");
            false
        }
    };
    let mut serial = None;
    let mut events = None;
    let mut metadata = None;
    if onvif {
        match client.device_information(&device).await {
            Ok((s, info)) => {
                let _ = writeln!(
                    out,
                    "device: serial {s}, model {}, firmware {}",
                    info.model.as_deref().unwrap_or("?"),
                    info.firmware.as_deref().unwrap_or("?")
                );
                serial = Some(s);
            }
            Err(e) => {
                let _ = writeln!(out, "device information: {e}");
            }
        }
        match client.events_url(&device).await {
            Ok(u) => {
                let _ = writeln!(out, "ONVIF events (PullPoint): {u}");
                events = Some(u);
            }
            Err(e) => {
                let _ = writeln!(out, "ONVIF events: none ({e})");
            }
        }
        match client.metadata_stream_uri(&device).await {
            Ok(u) => {
                let _ = writeln!(
                    out,
                    "ONVIF metadata stream (Media profile with metadata): {u}"
                );
                metadata = Some(u);
            }
            Err(e) => {
                let _ = writeln!(out, "ONVIF metadata stream: none ({e})");
            }
        }
    }
    let vapix = match crate::sources::vapix::VapixClient::new(
        base.clone(),
        username.clone(),
        password,
        &tls,
    ) {
        Ok(v) => v.device_info().await.ok(),
        Err(_) => None,
    };
    let _ = writeln!(
        out,
        "VAPIX (Axis): {}",
        match &vapix {
            Some((s, _)) => format!("yes, serial {s}"),
            None => "no".into(),
        }
    );
    let transport = if vapix.is_some() {
        Some("websocket")
    } else if events.is_some() {
        Some("pullpoint")
    } else if metadata.is_some() {
        Some("rtsp\"\nvendor = \"onvif")
    } else {
        None
    };
    let Some(transport) = transport else {
        out.push_str("\nno event source found: check the URL, the credentials and that ONVIF is enabled on the camera\n");
        return Ok(out);
    };
    out.push('\n');
    if let Some(s) = &serial {
        let _ = writeln!(out, "# serial {s}, read from the device at every start");
    }
    let _ = writeln!(
        out,
        "[[camera]]\nname = \"CHANGE-ME\"\nurl = \"{base}\"\ntransport = \"{transport}\""
    );
    if let Some(u) = &username {
        let _ = writeln!(out, "username = \"{u}\"");
    }
    out.push_str("password = \"${CAMERA_PASSWORD}\"\n");
    Ok(out)
}
