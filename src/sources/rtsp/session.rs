//! The RTSP/1.0 text side (fixtures/README.md §2.1–2.3): request URL, replies, SDP media
//! choice, `Transport` and `Session` headers, and Digest/Basic answers. Pure functions.

/// What a stream URL asks the camera for (fixtures/README.md §2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// Video channel (`camera=N`).
    pub camera: u32,
    /// `analytics=polygon`.
    pub analytics: bool,
    /// `ptz=all`.
    pub ptz: bool,
    /// `eventtopic=`: the rules' topic filters, so the camera sends only what a rule can use;
    /// empty when a rule takes everything.
    pub event_topics: Vec<String>,
}

/// The `eventtopic` value: filters in the URL spelling of Axis (`onvif:`/`axis:` prefixes),
/// `|`-joined, with what a query cannot hold percent-encoded; `None` for "everything".
pub fn event_topic_param(filters: &[String]) -> Option<String> {
    if filters.is_empty() || filters.iter().any(|f| f == "//.") {
        return None;
    }
    let joined = filters
        .iter()
        .map(|f| {
            f.split('/')
                .map(|seg| {
                    if let Some(rest) = seg.strip_prefix("tns1:") {
                        format!("onvif:{rest}")
                    } else if let Some(rest) = seg.strip_prefix("tnsaxis:") {
                        format!("axis:{rest}")
                    } else {
                        seg.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect::<Vec<_>>()
        .join("|");
    let mut out = String::with_capacity(joined.len());
    for b in joined.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

/// The stream URL for one camera (fixtures/README.md §2.1).
pub fn stream_url(host: &str, port: u16, q: &StreamQuery) -> String {
    let StreamQuery {
        camera,
        analytics,
        ptz,
        event_topics,
    } = q;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut u = format!(
        "rtsp://{host}:{port}/axis-media/media.amp?camera={camera}&video=0&audio=0&event=on"
    );
    if *analytics {
        u.push_str("&analytics=polygon");
    }
    if *ptz {
        u.push_str("&ptz=all");
    }
    if let Some(t) = event_topic_param(event_topics) {
        u.push_str("&eventtopic=");
        u.push_str(&t);
    }
    u
}

/// One RTSP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in received order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header with this name.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `CSeq`, when present and numeric.
    pub fn cseq(&self) -> Option<u32> {
        self.header("CSeq")?.trim().parse().ok()
    }
}

/// Parses one whole reply as the depacketizer delivers it.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("reply without a blank line")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "reply head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("RTSP/") {
        return Err(format!("not an RTSP reply: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[head_end + 4..].to_vec(),
    })
}

/// The metadata media of a DESCRIBE reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Absolute URL to SETUP.
    pub setup_url: String,
    /// Aggregate URL (PLAY, GET_PARAMETER, TEARDOWN).
    pub aggregate_url: String,
    /// RTP payload type of the metadata.
    pub payload_type: u8,
}

/// Picks the `m=application` section whose rtpmap encoding is `vnd.onvif.metadata`, resolving
/// control URLs against `Content-Base` (else the request URL).
pub fn metadata_media(sdp: &str, base: &str) -> Result<Media, String> {
    let base_url = url::Url::parse(base).map_err(|e| format!("bad base URL {base:?}: {e}"))?;
    let resolve = |c: &str| -> String {
        if c == "*" || c.is_empty() {
            return base.to_string();
        }
        if c.contains("://") {
            return c.to_string();
        }
        base_url
            .join(c)
            .map(String::from)
            .unwrap_or_else(|_| c.to_string())
    };
    let mut session_control = None;
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            sections.push(vec![line]);
        } else if let Some(s) = sections.last_mut() {
            s.push(line);
        } else if let Some(c) = line.strip_prefix("a=control:") {
            session_control = Some(c.trim());
        }
    }
    let mut declined = None;
    for s in &sections {
        let mut m = s[0]["m=".len()..].split_whitespace();
        if m.next() != Some("application") {
            continue;
        }
        let pts: Vec<&str> = m.skip(2).collect();
        for line in s {
            let Some(map) = line.strip_prefix("a=rtpmap:") else {
                continue;
            };
            let (pt, enc) = map.split_once(' ').unwrap_or((map, ""));
            let name = enc.split('/').next().unwrap_or("").trim();
            if !pts.contains(&pt) {
                continue;
            }
            if name.eq_ignore_ascii_case("vnd.onvif.metadata") {
                let control = s
                    .iter()
                    .find_map(|l| l.strip_prefix("a=control:"))
                    .map(str::trim)
                    .unwrap_or("");
                return Ok(Media {
                    setup_url: resolve(control),
                    aggregate_url: session_control.map_or_else(|| base.to_string(), resolve),
                    payload_type: pt.parse().map_err(|_| format!("bad payload type {pt:?}"))?,
                });
            }
            if name.to_ascii_lowercase().starts_with("vnd.onvif.metadata") {
                declined = Some(name.to_string());
            }
        }
    }
    Err(match declined {
        Some(enc) => format!("metadata encoding {enc} is not supported (uncompressed XML only)"),
        None => "no vnd.onvif.metadata media in the SDP (is event=on allowed?)".to_string(),
    })
}

/// `interleaved=a-b` of a `Transport` header.
pub fn interleaved_channels(transport: &str) -> Option<(u8, u8)> {
    transport.split(';').find_map(|p| {
        let v = p.trim().strip_prefix("interleaved=")?;
        match v.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let a: u8 = v.trim().parse().ok()?;
                Some((a, a.wrapping_add(1)))
            }
        }
    })
}

/// Session id and timeout (seconds, 60 when absent) of a `Session` header.
pub fn session_header(v: &str) -> (String, u64) {
    let mut parts = v.split(';');
    let id = parts.next().unwrap_or("").trim().to_string();
    let timeout = parts
        .find_map(|p| p.trim().strip_prefix("timeout=")?.trim().parse().ok())
        .unwrap_or(60);
    (id, timeout)
}

/// Credentials and the current challenge; answers with Digest or Basic only when challenged.
#[derive(Debug)]
pub struct Auth {
    username: Option<String>,
    password: Option<String>,
    client: Option<http_auth::PasswordClient>,
    /// Realm of the last challenge (`AXIS_<serial>` on Axis devices).
    pub realm: Option<String>,
}

impl Auth {
    /// No challenge seen yet.
    pub fn new(username: Option<String>, password: Option<String>) -> Self {
        Self {
            username,
            password,
            client: None,
            realm: None,
        }
    }

    /// Whether credentials are configured.
    pub fn has_credentials(&self) -> bool {
        self.username.is_some() && self.password.is_some()
    }

    /// Takes the challenges of a 401 reply (Digest preferred over Basic).
    pub fn challenge<'a>(&mut self, values: impl Iterator<Item = &'a str>) -> Result<(), String> {
        let values: Vec<&str> = values.collect();
        let pick = values
            .iter()
            .find(|v| v.trim_start().to_ascii_lowercase().starts_with("digest"))
            .or_else(|| values.first())
            .ok_or("401 without WWW-Authenticate")?;
        self.realm = pick
            .split("realm=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string);
        self.client = Some(
            http_auth::PasswordClient::try_from(*pick)
                .map_err(|e| format!("unusable challenge: {e}"))?,
        );
        Ok(())
    }

    /// The `Authorization` value for one request, once challenged.
    pub fn authorization(&mut self, method: &str, uri: &str) -> Result<Option<String>, String> {
        let (Some(client), Some(user), Some(pass)) =
            (&mut self.client, &self.username, &self.password)
        else {
            return Ok(None);
        };
        client
            .respond(&http_auth::PasswordParams {
                username: user,
                password: pass,
                uri,
                method,
                body: None,
            })
            .map(Some)
            .map_err(|e| format!("cannot answer challenge: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    const URL: &str = "rtsp://192.0.2.57/axis-media/media.amp?camera=1&video=0&audio=0&event=on&analytics=polygon";

    #[test]
    fn describe_fixture_gives_the_metadata_media() {
        let raw = std::fs::read(format!("{FIXTURES}rtsp-describe-response.txt")).unwrap();
        let r = parse_response(&raw).unwrap();
        assert_eq!((r.status, r.cseq()), (200, Some(3)));
        assert_eq!(r.body.len(), 496);
        let base = r.header("Content-Base").unwrap();
        let m = metadata_media(std::str::from_utf8(&r.body).unwrap(), base).unwrap();
        assert_eq!(m.aggregate_url, URL);
        assert_eq!(
            m.setup_url,
            "rtsp://192.0.2.57/axis-media/media.amp/stream=0?camera=1&video=0&audio=0&event=on&analytics=polygon"
        );
        assert_eq!(m.payload_type, 98);
    }

    #[test]
    fn relative_controls_other_payload_numbers_and_compressed_encodings() {
        let sdp = "v=0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n\
                   m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\na=control:trackID=3\r\n";
        let m = metadata_media(sdp, "rtsp://h/live/").unwrap();
        assert_eq!(
            (
                m.setup_url.as_str(),
                m.aggregate_url.as_str(),
                m.payload_type
            ),
            ("rtsp://h/live/trackID=3", "rtsp://h/live/", 107)
        );
        let gz =
            "v=0\r\nm=application 0 RTP/AVP 98\r\na=rtpmap:98 vnd.onvif.metadata.gzip/90000\r\n";
        assert!(
            metadata_media(gz, "rtsp://h/")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(metadata_media("v=0\r\n", "rtsp://h/").is_err());
    }

    #[test]
    fn transport_session_and_url() {
        let t = "RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=5A3C91E7;mode=\"PLAY\"";
        assert_eq!(interleaved_channels(t), Some((2, 3)));
        assert_eq!(
            session_header("Qx7pR2vLm9WdT4bN;timeout=60"),
            ("Qx7pR2vLm9WdT4bN".into(), 60)
        );
        assert_eq!(session_header("abc").1, 60);
        let mut q = StreamQuery {
            camera: 1,
            analytics: true,
            ptz: true,
            event_topics: vec!["//.".into()],
        };
        assert_eq!(
            stream_url("192.0.2.57", 554, &q),
            "rtsp://192.0.2.57:554/axis-media/media.amp?camera=1&video=0&audio=0&event=on&analytics=polygon&ptz=all"
        );
        q = StreamQuery {
            camera: 2,
            event_topics: vec![
                "tnsaxis:CameraApplicationPlatform/VMD//.".into(),
                "tns1:Device/tnsaxis:IO/VirtualPort".into(),
            ],
            ..StreamQuery::default()
        };
        assert_eq!(
            stream_url("192.0.2.57", 554, &q),
            "rtsp://192.0.2.57:554/axis-media/media.amp?camera=2&video=0&audio=0&event=on&eventtopic=axis:CameraApplicationPlatform/VMD//.%7Convif:Device/axis:IO/VirtualPort"
        );
    }

    #[test]
    fn digest_without_qop_is_the_rfc_2069_form_of_the_fixture() {
        let mut a = Auth::new(Some("bridge".into()), Some("fixture-pass".into()));
        assert_eq!(
            a.authorization("DESCRIBE", URL).unwrap(),
            None,
            "never unasked"
        );
        a.challenge(
            [
                "Basic realm=\"AXIS_B8A44F3E9D21\"",
                "Digest realm=\"AXIS_B8A44F3E9D21\", nonce=\"0000a41fY2958364017c3e8d06b19f5a27d4c80e6b3f9a2\", stale=FALSE",
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(a.realm.as_deref(), Some("AXIS_B8A44F3E9D21"));
        let h = a.authorization("DESCRIBE", URL).unwrap().unwrap();
        assert!(
            h.contains("response=\"bd2d2a8125c84fff71fadcb6e108cf85\""),
            "{h}"
        );
        let media = "rtsp://192.0.2.57/axis-media/media.amp/stream=0?camera=1&video=0&audio=0&event=on&analytics=polygon";
        let h = a.authorization("SETUP", media).unwrap().unwrap();
        assert!(
            h.contains("response=\"0d004157fa2e4de3a0261daedde2a134\""),
            "{h}"
        );
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"RTSP/1.0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"RTSP/1.0 2x0 OK\r\n\r\n",
            b"\xff\r\n\r\n",
        ] {
            assert!(parse_response(bad).is_err());
        }
    }
}
