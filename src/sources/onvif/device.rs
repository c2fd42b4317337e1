//! The ONVIF device service: the camera's clock (GetSystemDateAndTime, asked without
//! credentials, as the standard allows), its serial (GetDeviceInformation) and where its
//! events service is (GetServices, else GetCapabilities on devices older than 2.0).

use roxmltree::Node;

use super::client::{CALL_TIMEOUT, Client, OnvifError};
use super::soap::{self, SoapError, TDS, TEV, TT};
use crate::event::DeviceInfo;

const ACTION: &str = "http://www.onvif.org/ver10/device/wsdl/";

/// The camera's UTC clock in epoch ms, from a GetSystemDateAndTime reply.
pub fn parse_system_time(text: &str) -> Result<i64, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TDS, "GetSystemDateAndTimeResponse")?;
    let utc = soap::descendant(b, TT, "UTCDateTime")
        .ok_or_else(|| SoapError::Malformed("no UTCDateTime".into()))?;
    let num = |parent: &str, name: &str| -> Result<i64, SoapError> {
        soap::child(utc, TT, parent)
            .and_then(|p| soap::child(p, TT, name))
            .and_then(|n| n.text())
            .and_then(|t| t.trim().parse::<i64>().ok())
            .ok_or_else(|| SoapError::Malformed(format!("UTCDateTime without {parent}/{name}")))
    };
    let (y, mo, d) = (
        num("Date", "Year")?,
        num("Date", "Month")?,
        num("Date", "Day")?,
    );
    let (h, mi, s) = (
        num("Time", "Hour")?,
        num("Time", "Minute")?,
        num("Time", "Second")?,
    );
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&s)
    {
        return Err(SoapError::Malformed("UTCDateTime out of range".into()));
    }
    let days = crate::time::days_from_civil(y, mo, d);
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000)
}

/// Serial, model and firmware from a GetDeviceInformation reply.
pub fn parse_device_information(text: &str) -> Result<(String, DeviceInfo), SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TDS, "GetDeviceInformationResponse")?;
    let field = |name: &str| {
        soap::child(b, TDS, name)
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .map(str::to_string)
    };
    let serial = field("SerialNumber")
        .ok_or_else(|| SoapError::Malformed("GetDeviceInformation without SerialNumber".into()))?;
    Ok((
        serial,
        DeviceInfo {
            model: field("Model"),
            firmware: field("FirmwareVersion"),
        },
    ))
}

/// The events service XAddr from a GetServices reply.
pub fn parse_services_events(text: &str) -> Result<Option<String>, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TDS, "GetServicesResponse")?;
    let found = soap::elements(b)
        .filter(|s| soap::is(*s, TDS, "Service"))
        .find(|s| soap::text_of(*s, TDS, "Namespace") == Some(TEV))
        .and_then(|s| soap::text_of(s, TDS, "XAddr").map(str::to_string));
    Ok(found)
}

/// The events XAddr from a GetCapabilities reply.
pub fn parse_capabilities_events(text: &str) -> Result<Option<String>, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TDS, "GetCapabilitiesResponse")?;
    let events: Option<Node> = soap::descendant(b, TT, "Events");
    Ok(events
        .and_then(|e| soap::text_of(e, TT, "XAddr"))
        .map(str::to_string))
}

/// A service address as the camera gives it, reached through the configured host: cameras
/// behind NAT or with several interfaces report addresses the relay cannot use, so only the
/// path and query of `xaddr` are kept.
pub fn rebase(device_url: &url::Url, xaddr: &str) -> Result<url::Url, SoapError> {
    let given = url::Url::parse(xaddr)
        .map_err(|e| SoapError::Malformed(format!("service address {xaddr:?}: {e}")))?;
    let mut u = device_url.clone();
    u.set_path(given.path());
    u.set_query(given.query());
    Ok(u)
}

impl Client {
    /// The camera's clock (epoch ms) and the offset to ours, measured at the request's midpoint.
    pub async fn measure_clock(&self, device: &url::Url) -> Result<(i64, i64), OnvifError> {
        let before = self.now_ms();
        let reply = self
            .call(
                device,
                &format!("{ACTION}GetSystemDateAndTime"),
                "",
                "<tds:GetSystemDateAndTime/>",
                false,
                CALL_TIMEOUT,
            )
            .await?;
        let after = self.now_ms();
        let camera = parse_system_time(&reply)?;
        // The camera reports whole seconds: its clock is somewhere in [camera, camera + 1 s).
        let offset = camera + 500 - (before + after) / 2;
        Ok((camera, offset))
    }

    /// Serial, model and firmware.
    pub async fn device_information(
        &self,
        device: &url::Url,
    ) -> Result<(String, DeviceInfo), OnvifError> {
        let reply = self
            .call(
                device,
                &format!("{ACTION}GetDeviceInformation"),
                "",
                "<tds:GetDeviceInformation/>",
                true,
                CALL_TIMEOUT,
            )
            .await?;
        Ok(parse_device_information(&reply)?)
    }

    /// The events service address: GetServices, else GetCapabilities.
    pub async fn events_url(&self, device: &url::Url) -> Result<url::Url, OnvifError> {
        let services = self
            .call(
                device,
                &format!("{ACTION}GetServices"),
                "",
                "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>",
                true,
                CALL_TIMEOUT,
            )
            .await;
        let from_services = match services {
            Ok(text) => parse_services_events(&text)?,
            Err(e @ (OnvifError::Auth(_) | OnvifError::Timeout(..))) => return Err(e),
            Err(_) => None,
        };
        let xaddr = match from_services {
            Some(x) => x,
            None => {
                let reply = self
                    .call(
                        device,
                        &format!("{ACTION}GetCapabilities"),
                        "",
                        "<tds:GetCapabilities><tds:Category>Events</tds:Category></tds:GetCapabilities>",
                        true,
                        CALL_TIMEOUT,
                    )
                    .await?;
                parse_capabilities_events(&reply)?.ok_or_else(|| {
                    SoapError::Malformed("the device lists no events service".into())
                })?
            }
        };
        Ok(rebase(device, &xaddr)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(body: &str) -> String {
        soap::envelope("", body)
    }

    #[test]
    fn system_time_is_read_as_utc() {
        let t = wrap(
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime><tt:Time><tt:Hour>7</tt:Hour><tt:Minute>50</tt:Minute><tt:Second>45</tt:Second></tt:Time><tt:Date><tt:Year>2010</tt:Year><tt:Month>9</tt:Month><tt:Day>16</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>",
        );
        assert_eq!(parse_system_time(&t).unwrap(), 1_284_623_445_000);
        let bad = t.replace("<tt:Month>9</tt:Month>", "<tt:Month>13</tt:Month>");
        assert!(parse_system_time(&bad).is_err());
    }

    #[test]
    fn device_information_and_service_addresses() {
        let t = wrap(
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>Acme</tds:Manufacturer><tds:Model>Cam 1</tds:Model><tds:FirmwareVersion>1.2</tds:FirmwareVersion><tds:SerialNumber>SN42</tds:SerialNumber><tds:HardwareId>1</tds:HardwareId></tds:GetDeviceInformationResponse>",
        );
        let (serial, info) = parse_device_information(&t).unwrap();
        assert_eq!(serial, "SN42");
        assert_eq!(info.model.as_deref(), Some("Cam 1"));
        let s = wrap(&format!(
            "<tds:GetServicesResponse><tds:Service><tds:Namespace>{TDS}</tds:Namespace><tds:XAddr>http://10.0.0.9/onvif/device_service</tds:XAddr></tds:Service><tds:Service><tds:Namespace>{TEV}</tds:Namespace><tds:XAddr>http://10.0.0.9/onvif/events_service</tds:XAddr></tds:Service></tds:GetServicesResponse>"
        ));
        let x = parse_services_events(&s).unwrap().unwrap();
        let dev = url::Url::parse("http://127.0.0.1:8080/onvif/device_service").unwrap();
        assert_eq!(
            rebase(&dev, &x).unwrap().as_str(),
            "http://127.0.0.1:8080/onvif/events_service"
        );
        let c = wrap(
            "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Events><tt:XAddr>http://10.0.0.9/ev</tt:XAddr></tt:Events></tds:Capabilities></tds:GetCapabilitiesResponse>",
        );
        assert_eq!(
            parse_capabilities_events(&c).unwrap().as_deref(),
            Some("http://10.0.0.9/ev")
        );
    }
}
