//! ONVIF metadata over RTSP (DESIGN.md §2, fixtures/README.md §2).
//!
//! A small RTSP/1.0 client on tokio rather than `retina`: retina's connection codec ends the
//! session on any byte that is neither `$` framing nor an RTSP message, where we skip such
//! bytes and keep streaming; and the document assembly (gap → drop one document, resync at
//! the next marker, size cap) lives in our own pure [`interleaved::Depacketizer`], which
//! also gets fuzzed on its own. The exchange is OPTIONS, DESCRIBE, SETUP (TCP interleaved),
//! PLAY, GET_PARAMETER keep-alive every timeout/2, TEARDOWN on shutdown; Digest (RFC 2069
//! form when the challenge has no qop) or Basic, only when challenged.
//!
//! Every network step has a deadline ([`REPLY_TIMEOUT`]): DNS and TCP connect together, each
//! request's write, each reply; once streaming, silence for two keep-alive periods ends the
//! connection. A step that runs out of time is counted (`timeouts`), logged once, backed off.

pub mod bench;
pub mod interleaved;
pub mod onvif;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::sources::backoff::Backoff;
use crate::sources::own_events;
use crate::sources::queue::EventSender;
use crate::sources::status::{SourceState, SourceStatus};
use interleaved::{Depacketizer, Item};
use session::{Auth, Response};

/// A connect, a request write or a reply slower than this ends the connection.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What ended a connection, classified for the retry logic.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    /// Credentials refused or missing: back off (a hot loop locks accounts on some devices).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The camera offers nothing we can use (no metadata media, compressed encoding).
    #[error("unsupported stream: {0}")]
    Unsupported(String),
    /// Network trouble, a closed stream, a stall or an error reply: retry with back-off.
    #[error("{0}")]
    Unavailable(String),
    /// A step got no answer within [`REPLY_TIMEOUT`]: retry with back-off, counted.
    #[error("{0}")]
    Timeout(String),
    /// Nothing arrived (no metadata, no keep-alive reply) for this long while the TCP
    /// connection looked open: reconnect with back-off.
    #[error("stream silent for {0:?} (no data, no answer to keep-alives)")]
    Silent(Duration),
}

fn unavailable(e: impl std::fmt::Display) -> RtspError {
    RtspError::Unavailable(e.to_string())
}

/// Everything one RTSP camera connection needs.
#[derive(Debug, Clone)]
pub struct RtspCamera {
    /// Config name.
    pub name: Arc<str>,
    /// Host name or address.
    pub host: String,
    /// RTSP port (554 unless configured).
    pub port: u16,
    /// What the stream URL asks for (channel, analytics, PTZ, event topics).
    pub query: session::StreamQuery,
    /// Digest/Basic user.
    pub username: Option<String>,
    /// Digest/Basic password.
    pub password: Option<String>,
    /// Serial from config; else taken from the Digest realm `AXIS_<serial>`, else the name.
    pub serial: Option<String>,
    /// Back-off cap.
    pub max_backoff: Duration,
    /// Keep-alive at least this often (sooner if the session timeout asks); twice it without
    /// any data ends the connection.
    pub heartbeat: Duration,
    /// When this turns true: TEARDOWN, close, return.
    pub shutdown: Option<watch::Receiver<bool>>,
    /// The stream URL as configured (`rtsp_url`): used as is instead of the Axis URL.
    pub rtsp_url: Option<String>,
    /// `vendor = "onvif"`: the stream URL and serial are asked of the camera's ONVIF services
    /// on every connection.
    pub onvif: Option<OnvifLookup>,
}

/// Where to ask an ONVIF camera for its metadata stream.
#[derive(Debug, Clone)]
pub struct OnvifLookup {
    /// SOAP client (credentials, TLS, clock offset).
    pub client: Arc<crate::sources::onvif::client::Client>,
    /// Device service URL.
    pub device_url: url::Url,
}

impl From<crate::sources::onvif::client::OnvifError> for RtspError {
    fn from(e: crate::sources::onvif::client::OnvifError) -> Self {
        use crate::sources::onvif::client::OnvifError as E;
        match e {
            E::Auth(m) => RtspError::Auth(format!("ONVIF: {m}")),
            E::Timeout(..) => RtspError::Timeout(format!("ONVIF: {e}")),
            other => RtspError::Unavailable(format!("ONVIF: {other}")),
        }
    }
}

/// The stream URL, host and port to connect to, and the serial when ONVIF said it.
async fn stream_target(
    cam: &RtspCamera,
) -> Result<(String, String, u16, Option<String>), RtspError> {
    let (url, serial) = match (&cam.rtsp_url, &cam.onvif) {
        (Some(u), _) => (u.clone(), None),
        (None, Some(o)) => {
            let (_, offset) = o.client.measure_clock(&o.device_url).await?;
            o.client.set_offset_ms(offset);
            let serial = match &cam.serial {
                Some(_) => None,
                None => Some(o.client.device_information(&o.device_url).await?.0),
            };
            (o.client.metadata_stream_uri(&o.device_url).await?, serial)
        }
        (None, None) => return Ok((cam.url(), cam.host.clone(), cam.port, None)),
    };
    let parsed = url::Url::parse(&url)
        .map_err(|e| RtspError::Unsupported(format!("stream URL {url:?}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| RtspError::Unsupported(format!("stream URL {url:?} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((url, host, parsed.port().unwrap_or(554), serial))
}

impl RtspCamera {
    /// The request URL (fixtures/README.md §2.1).
    pub fn url(&self) -> String {
        session::stream_url(&self.host, self.port, &self.query)
    }
}

/// Runs a camera source until shutdown, the task is aborted, or the receiver is gone.
pub async fn run(
    mut cam: RtspCamera,
    tx: EventSender,
    status: Arc<SourceStatus>,
    clock: SharedClock,
) {
    let mut backoff = Backoff::new(cam.max_backoff);
    let mut shutdown = cam.shutdown.take();
    let mut first = true;
    // When a stream that was flowing ended: the next one announces the gap.
    let mut lost_at: Option<i64> = None;
    loop {
        if !first {
            status.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        if status.set(SourceState::Connecting) {
            tracing::debug!(camera = %cam.name, "connecting (rtsp)");
        }
        let link = Link {
            tx: &tx,
            status: &status,
            clock: &clock,
            lost_at: &mut lost_at,
        };
        let result = connection(&cam, link, &mut backoff, shutdown.as_mut()).await;
        if status.state() == SourceState::Streaming {
            lost_at = Some(clock.now_ms());
        }
        match &result {
            Err(RtspError::Silent(_)) => {
                status.silences.fetch_add(1, Ordering::Relaxed);
            }
            Err(RtspError::Timeout(_)) => {
                status.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if tx.is_closed() || is_shut(shutdown.as_ref()) {
            return;
        }
        let error = match result {
            Ok(()) => "stream closed by the camera".to_string(),
            Err(e) => e.to_string(),
        };
        if status.set(SourceState::Backoff {
            error: error.clone(),
        }) {
            tracing::warn!(camera = %cam.name, %error, "camera connection lost; reconnecting with back-off");
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        match shutdown.as_mut() {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = s.wait_for(|v| *v) => return,
                }
            }
            None => tokio::time::sleep(delay).await,
        }
    }
}

fn is_shut(s: Option<&watch::Receiver<bool>>) -> bool {
    s.is_some_and(|s| *s.borrow())
}

/// One RTSP connection: TCP, a reader for everything the server sends, CSeq and auth.
struct Conn {
    stream: TcpStream,
    reader: Depacketizer,
    pending: Vec<Item>,
    rbuf: Vec<u8>,
    cseq: u32,
    auth: Auth,
    session: Option<String>,
}

impl Conn {
    async fn read_more(&mut self) -> Result<(), RtspError> {
        let n = self
            .stream
            .read(&mut self.rbuf)
            .await
            .map_err(unavailable)?;
        if n == 0 {
            return Err(RtspError::Unavailable(
                "connection closed by the camera".into(),
            ));
        }
        self.reader.feed(&self.rbuf[..n], &mut self.pending);
        Ok(())
    }

    async fn send(
        &mut self,
        method: &str,
        uri: &str,
        extra: &[(&str, &str)],
    ) -> Result<u32, RtspError> {
        self.cseq += 1;
        let mut req = format!(
            "{method} {uri} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: edgerelay\r\n",
            self.cseq
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(s) = &self.session {
            req.push_str(&format!("Session: {s}\r\n"));
        }
        if let Some(a) = self
            .auth
            .authorization(method, uri)
            .map_err(RtspError::Auth)?
        {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.write_all(req.as_bytes()))
            .await
            .map_err(|_| {
                RtspError::Timeout(format!(
                    "{method} not taken by the camera within {REPLY_TIMEOUT:?}"
                ))
            })?
            .map_err(unavailable)?;
        Ok(self.cseq)
    }

    /// Waits for the reply with this CSeq; documents arriving meanwhile stay pending.
    async fn reply(&mut self, cseq: u32) -> Result<Response, RtspError> {
        let wait = async {
            loop {
                let found = self
                    .pending
                    .iter()
                    .position(|i| matches!(i, Item::Reply(_)));
                if let Some(i) = found {
                    let Item::Reply(raw) = self.pending.remove(i) else {
                        unreachable!()
                    };
                    let r = session::parse_response(&raw).map_err(unavailable)?;
                    if r.cseq() == Some(cseq) || r.cseq().is_none() {
                        return Ok(r);
                    }
                    continue; // a late keep-alive reply
                }
                self.read_more().await?;
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, wait)
            .await
            .map_err(|_| {
                RtspError::Timeout(format!("no reply from the camera within {REPLY_TIMEOUT:?}"))
            })?
    }

    /// A request answered with 2xx, answering one authentication challenge on the way.
    async fn request(
        &mut self,
        method: &str,
        uri: &str,
        extra: &[(&str, &str)],
    ) -> Result<Response, RtspError> {
        let mut challenged = false;
        loop {
            let cseq = self.send(method, uri, extra).await?;
            let r = self.reply(cseq).await?;
            match r.status {
                200..=299 => return Ok(r),
                401 => {
                    let stale = r
                        .headers_named("WWW-Authenticate")
                        .any(|v| v.to_ascii_lowercase().contains("stale=true"));
                    if challenged && !stale {
                        return Err(RtspError::Auth(format!(
                            "{method} refused with 401: wrong user name or password"
                        )));
                    }
                    if !self.auth.has_credentials() {
                        return Err(RtspError::Auth(
                            "the camera wants credentials and none are configured".into(),
                        ));
                    }
                    self.auth
                        .challenge(r.headers_named("WWW-Authenticate"))
                        .map_err(RtspError::Auth)?;
                    challenged = true;
                }
                403 => return Err(RtspError::Auth(format!("{method} refused with 403"))),
                s => {
                    return Err(RtspError::Unavailable(format!(
                        "{method} failed with RTSP {s}"
                    )));
                }
            }
        }
    }
}

/// One connection, from OPTIONS to the end of the stream.
/// Where one connection reports to, and what it carries over from the last one.
struct Link<'a> {
    tx: &'a EventSender,
    status: &'a SourceStatus,
    clock: &'a SharedClock,
    lost_at: &'a mut Option<i64>,
}

async fn connection(
    cam: &RtspCamera,
    link: Link<'_>,
    backoff: &mut Backoff,
    mut shutdown: Option<&mut watch::Receiver<bool>>,
) -> Result<(), RtspError> {
    let Link {
        tx,
        status,
        clock,
        lost_at,
    } = link;
    let (url, host, port, onvif_serial) = stream_target(cam).await?;
    let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| {
            RtspError::Timeout(format!(
                "connect {host}:{port} (DNS and TCP) not done within {REPLY_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| unavailable(format!("connect {host}:{port}: {e}")))?;
    stream.set_nodelay(true).ok();
    let mut c = Conn {
        stream,
        reader: Depacketizer::new(0),
        pending: Vec::new(),
        rbuf: vec![0; 16 * 1024],
        cseq: 0,
        auth: Auth::new(cam.username.clone(), cam.password.clone()),
        session: None,
    };
    c.request("OPTIONS", &url, &[]).await?;
    let d = c
        .request("DESCRIBE", &url, &[("Accept", "application/sdp")])
        .await?;
    let base = d
        .header("Content-Base")
        .or(d.header("Content-Location"))
        .unwrap_or(&url)
        .to_string();
    let sdp = String::from_utf8_lossy(&d.body).into_owned();
    let media = session::metadata_media(&sdp, &base).map_err(RtspError::Unsupported)?;
    let s = c
        .request(
            "SETUP",
            &media.setup_url,
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        )
        .await?;
    let (rtp_channel, _) = s
        .header("Transport")
        .and_then(session::interleaved_channels)
        .ok_or_else(|| RtspError::Unsupported("SETUP reply without interleaved channels".into()))?;
    c.reader.set_channel(rtp_channel);
    let (session_id, timeout_s) = session::session_header(
        s.header("Session")
            .ok_or_else(|| unavailable("SETUP reply without a Session"))?,
    );
    c.session = Some(session_id);
    c.request("PLAY", &media.aggregate_url, &[("Range", "npt=now-")])
        .await?;

    let serial: Arc<str> = match (&cam.serial, &c.auth.realm) {
        (Some(s), _) => s.as_str().into(),
        _ if onvif_serial.is_some() => onvif_serial.unwrap_or_default().into(),
        (None, Some(realm)) if realm.starts_with("AXIS_") => realm["AXIS_".len()..].into(),
        _ => cam.name.clone(),
    };
    status.set_serial(serial.clone());
    backoff.reset();
    if status.set(SourceState::Streaming) {
        tracing::info!(camera = %cam.name, %serial, url = %media.aggregate_url, "camera streaming (rtsp)");
    }
    if let Some(lost) = lost_at.take() {
        let ev = own_events::reconnected(&cam.name, &serial, lost, clock.now_ms());
        if tx.send(ev).await.is_err() {
            return Ok(());
        }
    }
    // Keep-alives well inside the session timeout, and at least every heartbeat; a reply to
    // one counts as data, so a live camera is never silent for two of them.
    let keepalive_every = Duration::from_secs((timeout_s / 2).max(1)).min(cam.heartbeat);
    let silent_after = keepalive_every * 2;
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + keepalive_every,
        keepalive_every,
    );
    let mut last_heard = tokio::time::Instant::now();
    let mut seen = c.reader.stats.clone();
    let mut events = Vec::new();
    loop {
        for item in std::mem::take(&mut c.pending) {
            let Item::Document(doc) = item else { continue }; // keep-alive replies
            let ctx = onvif::Context {
                camera: cam.name.clone(),
                serial: serial.clone(),
                now_ms: clock.now_ms(),
            };
            events.clear();
            if let Err(e) = onvif::parse_document(&doc, &ctx, &mut events)
                && status.count_malformed()
            {
                tracing::warn!(camera = %cam.name, error = %e,
                    count = status.malformed.load(Ordering::Relaxed), "skipping malformed metadata document");
            }
            for ev in events.drain(..) {
                status.last_event_ms.store(ctx.now_ms, Ordering::Relaxed);
                if tx.send(ev).await.is_err() {
                    let _ = c.send("TEARDOWN", &media.aggregate_url, &[]).await;
                    return Ok(());
                }
                // Counted once queued: a stop that aborts the send must not count it as received.
                status.events.fetch_add(1, Ordering::Relaxed);
            }
        }
        report_losses(cam, &c.reader.stats, &mut seen);
        let shut = async {
            match shutdown.as_deref_mut() {
                Some(s) => {
                    let _ = s.wait_for(|v| *v).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = c.read_more() => {
                r?;
                last_heard = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep_until(last_heard + silent_after) => {
                return Err(RtspError::Silent(last_heard.elapsed()));
            }
            _ = keepalive.tick() => {
                c.send("GET_PARAMETER", &media.aggregate_url, &[]).await?;
            }
            _ = shut => {
                // TEARDOWN and wait briefly for its reply, so the camera frees the session.
                let teardown = async {
                    let cseq = c.send("TEARDOWN", &media.aggregate_url, &[]).await?;
                    c.reply(cseq).await
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), teardown).await;
                let _ = c.stream.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// Logs lost and skipped data once per change of the counters.
fn report_losses(cam: &RtspCamera, now: &interleaved::Stats, seen: &mut interleaved::Stats) {
    if now.dropped_gap != seen.dropped_gap || now.dropped_oversize != seen.dropped_oversize {
        tracing::warn!(camera = %cam.name, gaps = now.dropped_gap, oversize = now.dropped_oversize,
            "metadata documents dropped (RTP sequence gap or size cap)");
    }
    if now.garbage_bytes != seen.garbage_bytes || now.malformed_rtp != seen.malformed_rtp {
        tracing::debug!(camera = %cam.name, garbage = now.garbage_bytes, malformed = now.malformed_rtp,
            "skipped bytes that are not RTSP or RTP");
    }
    *seen = now.clone();
}

#[cfg(test)]
mod tests;
