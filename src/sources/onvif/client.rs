//! SOAP over HTTP for one ONVIF camera: every request under its own deadline, WS-Security
//! UsernameToken in the camera's clock, HTTP Digest (or Basic) answered when the device
//! challenges, SOAP faults read from `400`/`500` replies, reply bodies capped.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;

use super::soap::{self, SoapError};
use super::wsse;
use crate::clock::SharedClock;

/// Longest ordinary request (sources::limits' 10 s step deadline).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply read: a PullMessages answer of 64 notifications is tens of KiB.
pub const MAX_SOAP_BYTES: usize = 4 << 20;

/// A failed ONVIF call, classified for the retry logic.
#[derive(Debug, thiserror::Error)]
pub enum OnvifError {
    /// Credentials refused (HTTP 401/403 after answering, or a NotAuthorized fault).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// No answer within the request's deadline.
    #[error("no answer within {0:?}: {1}")]
    Timeout(Duration, String),
    /// Network trouble or an HTTP error without a SOAP body.
    #[error("camera unreachable: {0}")]
    Unavailable(String),
    /// A reply that is not SOAP, or a SOAP fault.
    #[error(transparent)]
    Soap(#[from] SoapError),
}

impl OnvifError {
    /// Whether the reply was malformed (counted as such, then skipped or reconnected).
    pub fn is_malformed(&self) -> bool {
        matches!(self, OnvifError::Soap(SoapError::Malformed(_)))
    }
}

/// HTTP + SOAP client for one camera.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    username: Option<String>,
    password: Option<String>,
    clock: SharedClock,
    /// Camera clock minus relay clock, ms (GetSystemDateAndTime), applied to `Created`.
    offset_ms: AtomicI64,
}

impl Client {
    /// A client with the crate's TLS settings for this camera.
    pub fn new(
        username: Option<String>,
        password: Option<String>,
        tls: &crate::tls::TlsSettings,
        clock: SharedClock,
    ) -> Result<Self, OnvifError> {
        let tls = crate::tls::client_config(tls)
            .map_err(|e| OnvifError::Unavailable(format!("TLS: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CALL_TIMEOUT)
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| OnvifError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            username,
            password,
            clock,
            offset_ms: AtomicI64::new(0),
        })
    }

    /// Sets the camera clock offset used in `Created`.
    pub fn set_offset_ms(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::Relaxed);
    }

    /// The camera's clock now, by the last measured offset.
    pub fn camera_now_ms(&self) -> i64 {
        self.clock.now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// The relay's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Sends `body` to `url` as SOAP action `action` (with `extra_header` in `s:Header`, and a
    /// UsernameToken when `secure` and credentials are set); the reply text, a fault as an
    /// error. The whole exchange, Digest retry included, is bounded by `deadline`.
    pub async fn call(
        &self,
        url: &url::Url,
        action: &str,
        extra_header: &str,
        body: &str,
        secure: bool,
        deadline: Duration,
    ) -> Result<String, OnvifError> {
        let work = self.exchange(url, action, extra_header, body, secure);
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| OnvifError::Timeout(deadline, short_action(action).to_string()))?
    }

    async fn exchange(
        &self,
        url: &url::Url,
        action: &str,
        extra_header: &str,
        body: &str,
        secure: bool,
    ) -> Result<String, OnvifError> {
        let build = || {
            let mut header = String::new();
            if secure && let (Some(u), Some(p)) = (&self.username, &self.password) {
                header.push_str(&wsse::security_header(u, p, self.camera_now_ms()));
            }
            header.push_str(extra_header);
            soap::envelope(&header, body)
        };
        let content_type = format!("application/soap+xml; charset=utf-8; action=\"{action}\"");
        let send = |auth: Option<String>| {
            let mut req = self
                .http
                .post(url.clone())
                .header("Content-Type", content_type.as_str())
                .body(build());
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.send()
        };
        let mut resp = send(None).await.map_err(network)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get("WWW-Authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let auth = match (challenge, &self.username, &self.password) {
                (Some(c), Some(u), Some(p)) => {
                    let mut pc = http_auth::PasswordClient::try_from(c.as_str())
                        .map_err(|e| OnvifError::Auth(format!("unusable challenge: {e}")))?;
                    let path = &url[url::Position::BeforePath..];
                    pc.respond(&http_auth::PasswordParams {
                        username: u,
                        password: p,
                        uri: path,
                        method: "POST",
                        body: None,
                    })
                    .map_err(|e| OnvifError::Auth(format!("cannot answer challenge: {e}")))?
                }
                _ => {
                    return Err(OnvifError::Auth(
                        "HTTP 401 and no credentials configured".into(),
                    ));
                }
            };
            resp = send(Some(auth)).await.map_err(network)?;
        }
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(OnvifError::Auth(format!(
                "HTTP {} for {}: wrong user name or password",
                status.as_u16(),
                short_action(action)
            )));
        }
        let text = read_capped(resp).await?;
        if !status.is_success() {
            // A SOAP fault rides on 400/500; anything else is an HTTP error.
            return match soap::parse(&text).and_then(|d| soap::body(&d).map(|_| ())) {
                Err(e @ SoapError::Fault { .. }) if e.is_auth() => {
                    Err(OnvifError::Auth(e.to_string()))
                }
                Err(e @ SoapError::Fault { .. }) => Err(e.into()),
                _ => Err(OnvifError::Unavailable(format!(
                    "HTTP {status} for {}",
                    short_action(action)
                ))),
            };
        }
        Ok(text)
    }
}

/// `http://…/wsdl/PullMessagesRequest` → `PullMessagesRequest`, for messages.
fn short_action(action: &str) -> &str {
    action.rsplit('/').next().unwrap_or(action)
}

async fn read_capped(mut resp: reqwest::Response) -> Result<String, OnvifError> {
    let too_big = || SoapError::Malformed(format!("reply over {MAX_SOAP_BYTES} bytes"));
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_SOAP_BYTES as u64)
    {
        return Err(too_big().into());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        if out.len() + chunk.len() > MAX_SOAP_BYTES {
            return Err(too_big().into());
        }
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).map_err(|_| SoapError::Malformed("reply is not UTF-8".into()).into())
}

fn network(e: reqwest::Error) -> OnvifError {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    OnvifError::Unavailable(s)
}
