//! Plain VAPIX HTTP calls around the event stream (basic device information, the event
//! catalog), authenticated the way devices require: HTTP Digest (MD5, qop=auth), answered
//! after the first `401` challenge. Every call has one deadline for all its steps
//! ([`CALL_TIMEOUT`]), so a camera that accepts the connection and never answers costs a
//! timeout, never a hung source.

use std::time::Duration;

/// Longest a VAPIX call may take, from DNS to the last byte of the body: catalogs and pictures
/// take well under a second on a LAN.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

use std::sync::Arc;

use reqwest::{Method, StatusCode};

use crate::event::DeviceInfo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A failed VAPIX call, classified for the retry logic.
#[derive(Debug, thiserror::Error)]
pub enum VapixError {
    /// Credentials refused: retrying soon will not help (back off, report).
    #[error("authentication failed (HTTP {0})")]
    Auth(u16),
    /// Network trouble or a server error: retry later.
    #[error("camera unreachable: {0}")]
    Unavailable(String),
    /// No answer within [`CALL_TIMEOUT`] (DNS, connect, TLS, reply and body together): retry
    /// later, counted as a timeout.
    #[error("camera did not answer within {CALL_TIMEOUT:?}: {0}")]
    Timeout(String),
    /// The camera answered something we cannot use.
    #[error("unexpected reply: {0}")]
    BadReply(String),
    /// The body would take more of a shared byte budget than is free (other cameras' replies
    /// hold it): skipped, not retried.
    #[error("over the budget of bytes in flight")]
    OverBudget,
}

/// An HTTP client for one camera.
#[derive(Debug, Clone)]
pub struct VapixClient {
    http: reqwest::Client,
    base: url::Url,
    username: Option<String>,
    password: Option<String>,
}

impl VapixClient {
    /// A client for the camera at `base` (`http://host[:port]`).
    pub fn new(
        base: url::Url,
        username: Option<String>,
        password: Option<String>,
        tls: &crate::tls::TlsSettings,
    ) -> Result<Self, VapixError> {
        let tls = crate::tls::client_config(tls)
            .map_err(|e| VapixError::Unavailable(format!("TLS: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .use_preconfigured_tls((*tls).clone())
            .build()
            .map_err(|e| VapixError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            base,
            username,
            password,
        })
    }

    /// The `Authorization` header answering a `WWW-Authenticate` challenge for one request.
    pub fn authorization(
        &self,
        challenge: &str,
        method: &str,
        uri: &str,
    ) -> Result<Option<String>, VapixError> {
        let (Some(user), Some(pass)) = (&self.username, &self.password) else {
            return Ok(None);
        };
        let mut client = http_auth::PasswordClient::try_from(challenge)
            .map_err(|e| VapixError::BadReply(format!("unusable challenge: {e}")))?;
        client
            .respond(&http_auth::PasswordParams {
                username: user,
                password: pass,
                uri,
                method,
                body: None,
            })
            .map(Some)
            .map_err(|e| VapixError::BadReply(format!("cannot answer challenge: {e}")))
    }

    /// Sends a request, answering one Digest/Basic challenge; returns the body on 2xx (at most
    /// [`MAX_REPLY_BYTES`]: a camera cannot make the relay hold more).
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Vec<u8>, VapixError> {
        let resp = self
            .send(method, path_and_query, content_type, extra, body)
            .await?;
        read_limited(resp, MAX_REPLY_BYTES, None)
            .await
            .map(|(b, _)| b)
    }

    /// A GET whose body may hold at most `max_bytes` (a picture): a longer one is refused
    /// before it fills memory.
    pub async fn get_limited(
        &self,
        path_and_query: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>, VapixError> {
        let resp = self
            .send(Method::GET, path_and_query, "text/plain", &[], Vec::new())
            .await?;
        read_limited(resp, max_bytes, None).await.map(|(b, _)| b)
    }

    /// [`get_limited`](Self::get_limited) whose body also takes permits, a byte each, from
    /// `budget` shared with other calls as it arrives; returned with the body, they go back
    /// when the caller drops them. A body that does not fit what is free is
    /// [`VapixError::OverBudget`].
    pub async fn get_budgeted(
        &self,
        path_and_query: &str,
        max_bytes: usize,
        budget: &Arc<Semaphore>,
    ) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), VapixError> {
        let resp = self
            .send(Method::GET, path_and_query, "text/plain", &[], Vec::new())
            .await?;
        read_limited(resp, max_bytes, Some(budget)).await
    }

    /// Sends a request, answering one Digest/Basic challenge; the response when it is 2xx.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<reqwest::Response, VapixError> {
        let url = self
            .base
            .join(path_and_query)
            .map_err(|e| VapixError::BadReply(e.to_string()))?;
        let send = |auth: Option<String>| {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header("Content-Type", content_type)
                .body(body.clone());
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.send()
        };
        let unavailable = network_error;
        let mut resp = send(None).await.map_err(unavailable)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get("WWW-Authenticate")
                .and_then(|v| v.to_str().ok())
                .ok_or(VapixError::Auth(401))?
                .to_string();
            let auth = self
                .authorization(&challenge, method.as_str(), path_and_query)?
                .ok_or(VapixError::Auth(401))?;
            resp = send(Some(auth)).await.map_err(unavailable)?;
        }
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(VapixError::Auth(status.as_u16()));
        }
        if !status.is_success() {
            return Err(VapixError::Unavailable(format!(
                "HTTP {status} for {path_and_query}"
            )));
        }
        Ok(resp)
    }

    /// The serial number from the basic device information API.
    pub async fn serial(&self) -> Result<String, VapixError> {
        self.device_info().await.map(|(serial, _)| serial)
    }

    /// The serial number, with model and firmware when the device reports them, from the
    /// basic device information API (one call).
    pub async fn device_info(&self) -> Result<(String, DeviceInfo), VapixError> {
        let body = br#"{"apiVersion":"1.0","context":"edgerelay","method":"getProperties","params":{"propertyList":["SerialNumber","ProdNbr","Version"]}}"#;
        let reply = self
            .call(
                Method::POST,
                "/axis-cgi/basicdeviceinfo.cgi",
                "application/json",
                &[],
                body.to_vec(),
            )
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&reply)
            .map_err(|e| VapixError::BadReply(format!("basicdeviceinfo: {e}")))?;
        let prop = |name: &str| {
            v.pointer(&format!("/data/propertyList/{name}"))
                .and_then(|s| s.as_str())
        };
        let serial = prop("SerialNumber")
            .map(str::to_string)
            .ok_or_else(|| VapixError::BadReply("basicdeviceinfo: no SerialNumber".into()))?;
        let text = |name: &str| {
            prop(name)
                .filter(|s| !s.is_empty() && s.len() <= MAX_DEVICE_TEXT_BYTES)
                .map(str::to_string)
        };
        let info = DeviceInfo {
            model: text("ProdNbr"),
            firmware: text("Version"),
        };
        Ok((serial, info))
    }

    /// The event catalog XML (`GetEventInstances`).
    pub async fn event_instances(&self) -> Result<String, VapixError> {
        let body = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><GetEventInstances xmlns="http://www.axis.com/vapix/ws/event1"/></s:Body></s:Envelope>"#;
        let reply = self
            .call(
                Method::POST,
                "/vapix/services",
                "application/soap+xml; charset=utf-8",
                &[(
                    "SOAPAction",
                    "http://www.axis.com/vapix/ws/event1/GetEventInstances",
                )],
                body.as_bytes().to_vec(),
            )
            .await?;
        String::from_utf8(reply).map_err(|_| VapixError::BadReply("catalog is not UTF-8".into()))
    }
}

/// Longest model or firmware text kept (real ones are a few dozen bytes); a longer one is
/// left out rather than carried into every discovery config.
const MAX_DEVICE_TEXT_BYTES: usize = 128;

/// Largest VAPIX reply body read (event catalogs of cameras with many applications run to a
/// few hundred KiB).
pub const MAX_REPLY_BYTES: usize = 8 << 20;

/// Reads a reply body of at most `max_bytes`, refusing a longer one before it fills memory;
/// with a `budget`, each chunk first takes its bytes from it.
async fn read_limited(
    mut resp: reqwest::Response,
    max_bytes: usize,
    budget: Option<&Arc<Semaphore>>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), VapixError> {
    let too_big = || VapixError::BadReply(format!("body over {max_bytes} bytes"));
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_big());
    }
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut out = Vec::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(network_error)? {
        if out.len() + chunk.len() > max_bytes {
            return Err(too_big());
        }
        if let Some(budget) = budget {
            let n = u32::try_from(chunk.len()).map_err(|_| too_big())?;
            let permit = budget
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| VapixError::OverBudget)?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, held))
}

/// A failed request, a timeout apart (it is counted as one).
fn network_error(e: reqwest::Error) -> VapixError {
    if e.is_timeout() {
        VapixError::Timeout(error_chain(&e))
    } else {
        VapixError::Unavailable(error_chain(&e))
    }
}

/// An error with its causes (`reqwest` hides the TLS or socket reason in its sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A camera that accepts the connection and never answers costs one [`CALL_TIMEOUT`],
    /// reported as a timeout (counted as such by the sources), not an endless wait.
    #[tokio::test]
    async fn a_call_without_an_answer_is_a_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = url::Url::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let client =
            VapixClient::new(base, None, None, &crate::tls::TlsSettings::default()).unwrap();
        let started = std::time::Instant::now();
        let e = tokio::time::timeout(CALL_TIMEOUT * 3, client.serial())
            .await
            .expect("the call's own deadline ends it")
            .unwrap_err();
        assert!(matches!(e, VapixError::Timeout(_)), "{e}");
        assert!(started.elapsed() >= CALL_TIMEOUT);
    }
}
