//! The ONVIF Media service, for `transport = "rtsp"` with `vendor = "onvif"`: the profile
//! with a metadata configuration (GetProfiles) and its RTSP URI (GetStreamUri, RTP over
//! RTSP over TCP), so the RTSP metadata source works with any Profile M/T camera.

use super::client::{CALL_TIMEOUT, Client, OnvifError};
use super::device::rebase;
use super::soap::{self, SoapError, TDS, TT};

/// ONVIF Media (ver10) service namespace (`trt`).
pub const TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const ACTION: &str = "http://www.onvif.org/ver10/media/wsdl/";

/// The media service XAddr from a GetServices reply.
pub fn parse_services_media(text: &str) -> Result<Option<String>, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TDS, "GetServicesResponse")?;
    Ok(soap::elements(b)
        .filter(|s| soap::is(*s, TDS, "Service"))
        .find(|s| soap::text_of(*s, TDS, "Namespace") == Some(TRT))
        .and_then(|s| soap::text_of(s, TDS, "XAddr").map(str::to_string)))
}

/// The token of the first profile with a metadata configuration, from GetProfiles.
pub fn parse_metadata_profile(text: &str) -> Result<Option<String>, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TRT, "GetProfilesResponse")?;
    Ok(soap::elements(b)
        .filter(|p| soap::is(*p, TRT, "Profiles"))
        .find(|p| soap::child(*p, TT, "MetadataConfiguration").is_some())
        .and_then(|p| p.attribute("token").map(str::to_string)))
}

/// The URI of a GetStreamUri reply.
pub fn parse_stream_uri(text: &str) -> Result<String, SoapError> {
    let doc = soap::parse(text)?;
    let b = soap::expect(&doc, TRT, "GetStreamUriResponse")?;
    soap::text_of(b, TT, "Uri")
        .filter(|u| u.starts_with("rtsp://"))
        .map(str::to_string)
        .ok_or_else(|| SoapError::Malformed("GetStreamUri without an rtsp:// Uri".into()))
}

fn media_call_body(op: &str) -> String {
    format!("<trt:{op} xmlns:trt=\"{TRT}\"/>")
}

impl Client {
    /// The RTSP URI of the camera's metadata stream: media service, profile, stream URI.
    pub async fn metadata_stream_uri(&self, device: &url::Url) -> Result<String, OnvifError> {
        let services = self
            .call(
                device,
                "http://www.onvif.org/ver10/device/wsdl/GetServices",
                "",
                "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>",
                true,
                CALL_TIMEOUT,
            )
            .await?;
        let xaddr = parse_services_media(&services)?
            .ok_or_else(|| SoapError::Malformed("the device lists no media service".into()))?;
        let media = rebase(device, &xaddr)?;
        let profiles = self
            .call(
                &media,
                &format!("{ACTION}GetProfiles"),
                "",
                &media_call_body("GetProfiles"),
                true,
                CALL_TIMEOUT,
            )
            .await?;
        let token = parse_metadata_profile(&profiles)?.ok_or_else(|| {
            SoapError::Malformed("no media profile has a metadata configuration".into())
        })?;
        let body = format!(
            "<trt:GetStreamUri xmlns:trt=\"{TRT}\"><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup><trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>",
            soap::escape(&token)
        );
        let reply = self
            .call(
                &media,
                &format!("{ACTION}GetStreamUri"),
                "",
                &body,
                true,
                CALL_TIMEOUT,
            )
            .await?;
        Ok(parse_stream_uri(&reply)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_with_metadata_and_its_uri_are_found() {
        let p = soap::envelope(
            "",
            &format!(
                "<trt:GetProfilesResponse xmlns:trt=\"{TRT}\"><trt:Profiles token=\"video\" fixed=\"true\"><tt:Name>video</tt:Name></trt:Profiles><trt:Profiles token=\"meta\"><tt:Name>meta</tt:Name><tt:MetadataConfiguration token=\"m0\"/></trt:Profiles></trt:GetProfilesResponse>"
            ),
        );
        assert_eq!(parse_metadata_profile(&p).unwrap().as_deref(), Some("meta"));
        let u = soap::envelope(
            "",
            &format!(
                "<trt:GetStreamUriResponse xmlns:trt=\"{TRT}\"><trt:MediaUri><tt:Uri>rtsp://10.0.0.9:554/meta</tt:Uri></trt:MediaUri></trt:GetStreamUriResponse>"
            ),
        );
        assert_eq!(parse_stream_uri(&u).unwrap(), "rtsp://10.0.0.9:554/meta");
        let bad = u.replace("rtsp://", "http://");
        assert!(parse_stream_uri(&bad).is_err());
    }
}
