//! An emulated ONVIF camera of any vendor: the device and events services (SOAP 1.2) with
//! PullPoint subscriptions, on its own HTTP server (`/onvif/device_service`,
//! `/onvif/events_service`, `/onvif/subscription/{id}`).
//!
//! It checks WS-Security UsernameToken digests against its own clock (which may be skewed),
//! refuses a subscription beyond [`OnvifEmulatorConfig::max_subscriptions`] live ones, lets
//! subscriptions expire at their termination time (capped by
//! [`OnvifEmulatorConfig::max_lifetime`]), answers SetSynchronizationPoint with the current
//! states (`PropertyOperation="Initialized"`), and injects faults: PullMessages that hang,
//! subscriptions that disappear. It counts what tests assert on, above all the most live
//! subscriptions it ever held.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::rules::topic_filter::TopicFilter;
use crate::sources::onvif::media::TRT;
use crate::sources::onvif::soap::{self, SOAP_ENV, TDS, TEV, WSNT, envelope, escape};
use crate::sources::onvif::wsse::Token;

/// What the emulated ONVIF camera is.
#[derive(Debug, Clone)]
pub struct OnvifEmulatorConfig {
    /// `GetDeviceInformation` serial.
    pub serial: String,
    /// The one account.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Live subscriptions allowed; one more is refused (cameras allow a handful).
    pub max_subscriptions: usize,
    /// Longest lifetime granted to a subscription, whatever is asked.
    pub max_lifetime: Duration,
    /// Camera clock minus real time, ms.
    pub clock_skew_ms: i64,
    /// A token whose `Created` is further than this from the camera's clock is refused.
    pub max_token_age: Duration,
    /// What GetStreamUri answers for the metadata profile (the RTSP emulator's URL); `None`:
    /// the media service has no profile with metadata.
    pub stream_uri: Option<String>,
    /// Also require HTTP Digest (MD5, qop=auth) on every request, as some devices do.
    pub http_digest: bool,
    /// Where to listen.
    pub bind: SocketAddr,
}

impl Default for OnvifEmulatorConfig {
    fn default() -> Self {
        Self {
            serial: "ONVIF-0042".into(),
            username: "onvif".into(),
            password: "onvif-pass".into(),
            max_subscriptions: 3,
            max_lifetime: Duration::from_secs(60),
            clock_skew_ms: 0,
            max_token_age: Duration::from_secs(30),
            stream_uri: None,
            http_digest: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// What the emulator saw, for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnvifCounters {
    /// Subscriptions created.
    pub created: u64,
    /// CreatePullPointSubscription refused for the subscription limit.
    pub refused: u64,
    /// Unsubscribes of live subscriptions.
    pub unsubscribed: u64,
    /// Renews answered.
    pub renewed: u64,
    /// PullMessages answered.
    pub pulls: u64,
    /// PullMessages held by the hang fault.
    pub pulls_held: u64,
    /// Requests refused for a missing, wrong or stale UsernameToken.
    pub auth_failures: u64,
    /// SetSynchronizationPoint answered.
    pub sync_points: u64,
    /// Most live subscriptions held at once.
    pub max_live: u64,
    /// HTTP `401` Digest challenges sent (with [`OnvifEmulatorConfig::http_digest`]).
    pub http_challenges: u64,
}

struct Sub {
    filter: Option<TopicFilter>,
    queue: VecDeque<String>,
    /// Camera clock, ms.
    terminates_ms: i64,
    notify: Arc<Notify>,
}

struct Shared {
    cfg: OnvifEmulatorConfig,
    addr: SocketAddr,
    skew_ms: AtomicI64,
    subs: Mutex<BTreeMap<u64, Sub>>,
    /// Current state per topic and source, as `Initialized` messages.
    state: Mutex<BTreeMap<(String, String), (String, String)>>,
    next_id: AtomicU64,
    hang_pulls: AtomicBool,
    live: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
    created: AtomicU64,
    refused: AtomicU64,
    unsubscribed: AtomicU64,
    renewed: AtomicU64,
    pulls: AtomicU64,
    pulls_held: AtomicU64,
    auth_failures: AtomicU64,
    sync_points: AtomicU64,
    max_live: AtomicU64,
    http_challenges: AtomicU64,
    nonces: Mutex<std::collections::HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A SOAP fault reply.
fn fault(status: StatusCode, code: &str, subcode: &str, reason: &str) -> Response {
    let body = format!(
        r#"<s:Fault xmlns:ter="http://www.onvif.org/ver10/error" xmlns:wsrf-rw="http://docs.oasis-open.org/wsrf/rw-2"><s:Code><s:Value>s:{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">{}</s:Text></s:Reason></s:Fault>"#,
        escape(reason)
    );
    reply(status, &body)
}

fn reply(status: StatusCode, body: &str) -> Response {
    (
        status,
        [("Content-Type", "application/soap+xml; charset=utf-8")],
        envelope("", body),
    )
        .into_response()
}

fn ok(body: &str) -> Response {
    reply(StatusCode::OK, body)
}

/// `PT60S` / `PT1M` → seconds; anything else `None`.
fn xsd_seconds(s: &str) -> Option<u64> {
    let rest = s.trim().strip_prefix("PT")?;
    if let Some(n) = rest.strip_suffix('S') {
        return n.parse::<f64>().ok().map(|v| v as u64);
    }
    rest.strip_suffix('M')?.parse::<u64>().ok().map(|m| m * 60)
}

impl Shared {
    fn now_ms(&self) -> i64 {
        crate::clock::Clock::now_ms(&crate::clock::SystemClock)
            + self.skew_ms.load(Ordering::Relaxed)
    }

    fn time(&self, ms: i64) -> String {
        crate::time::format_rfc3339_s(ms)
    }

    /// Drops expired subscriptions; the live count after.
    fn purge(&self, subs: &mut BTreeMap<u64, Sub>) -> usize {
        let now = self.now_ms();
        subs.retain(|_, s| s.terminates_ms > now);
        self.live.send_replace(subs.len());
        subs.len()
    }

    /// `None` when the request's UsernameToken is right and fresh.
    fn deny(&self, doc: &roxmltree::Document) -> Option<Response> {
        let refuse = |why: &str| {
            bump(&self.auth_failures);
            Some(fault(
                StatusCode::BAD_REQUEST,
                "Sender",
                "ter:NotAuthorized",
                why,
            ))
        };
        let Some(t) = Token::from_envelope(doc) else {
            return refuse("no UsernameToken");
        };
        if t.username != self.cfg.username || !t.verifies(&self.cfg.password) {
            return refuse("wrong user name or password digest");
        }
        let created = crate::time::parse_rfc3339_ms(&t.created).unwrap_or(0);
        if (created - self.now_ms()).unsigned_abs() > self.cfg.max_token_age.as_millis() as u64 {
            return refuse("stale Created: check the clock");
        }
        None
    }

    fn device(&self, doc: &roxmltree::Document, op: &str) -> Response {
        if op != "GetSystemDateAndTime"
            && let Some(r) = self.deny(doc)
        {
            return r;
        }
        let base = format!("http://{}", self.addr);
        match op {
            "GetSystemDateAndTime" => {
                let ms = self.now_ms();
                let secs = ms.div_euclid(1000);
                let (y, mo, d) = crate::time::civil_from_days(secs.div_euclid(86_400));
                let r = secs.rem_euclid(86_400);
                ok(&format!(
                    "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time><tt:Date><tt:Year>{y}</tt:Year><tt:Month>{mo}</tt:Month><tt:Day>{d}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>",
                    r / 3600,
                    r % 3600 / 60,
                    r % 60
                ))
            }
            "GetDeviceInformation" => ok(&format!(
                "<tds:GetDeviceInformationResponse><tds:Manufacturer>Emulated</tds:Manufacturer><tds:Model>ONVIF Camera</tds:Model><tds:FirmwareVersion>1.0</tds:FirmwareVersion><tds:SerialNumber>{}</tds:SerialNumber><tds:HardwareId>1</tds:HardwareId></tds:GetDeviceInformationResponse>",
                escape(&self.cfg.serial)
            )),
            "GetServices" => ok(&format!(
                "<tds:GetServicesResponse><tds:Service><tds:Namespace>{TDS}</tds:Namespace><tds:XAddr>{base}/onvif/device_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service><tds:Service><tds:Namespace>{TRT}</tds:Namespace><tds:XAddr>{base}/onvif/media_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service><tds:Service><tds:Namespace>{TEV}</tds:Namespace><tds:XAddr>{base}/onvif/events_service</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service></tds:GetServicesResponse>"
            )),
            "GetCapabilities" => ok(&format!(
                "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Events><tt:XAddr>{base}/onvif/events_service</tt:XAddr><tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport><tt:WSPullPointSupport>true</tt:WSPullPointSupport></tt:Events></tds:Capabilities></tds:GetCapabilitiesResponse>"
            )),
            other => fault(
                StatusCode::BAD_REQUEST,
                "Sender",
                "ter:ActionNotSupported",
                other,
            ),
        }
    }

    fn media(&self, doc: &roxmltree::Document, op: &str, body: roxmltree::Node) -> Response {
        if let Some(r) = self.deny(doc) {
            return r;
        }
        let meta = match &self.cfg.stream_uri {
            Some(_) => {
                "<trt:Profiles token=\"meta\"><tt:Name>metadata</tt:Name><tt:MetadataConfiguration token=\"md0\"><tt:Name>md0</tt:Name></tt:MetadataConfiguration></trt:Profiles>"
            }
            None => "",
        };
        match op {
            "GetProfiles" => ok(&format!(
                "<trt:GetProfilesResponse xmlns:trt=\"{TRT}\"><trt:Profiles token=\"video\" fixed=\"true\"><tt:Name>video</tt:Name></trt:Profiles>{meta}</trt:GetProfilesResponse>"
            )),
            "GetStreamUri" => match (
                &self.cfg.stream_uri,
                soap::descendant(body, TRT, "ProfileToken").and_then(|t| t.text()),
            ) {
                (Some(uri), Some("meta")) => ok(&format!(
                    "<trt:GetStreamUriResponse xmlns:trt=\"{TRT}\"><trt:MediaUri><tt:Uri>{}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>",
                    escape(uri)
                )),
                _ => fault(
                    StatusCode::BAD_REQUEST,
                    "Sender",
                    "ter:NoProfile",
                    "no such profile",
                ),
            },
            other => fault(
                StatusCode::BAD_REQUEST,
                "Sender",
                "ter:ActionNotSupported",
                other,
            ),
        }
    }

    fn create(&self, doc: &roxmltree::Document, body: roxmltree::Node) -> Response {
        if let Some(r) = self.deny(doc) {
            return r;
        }
        let filter = match soap::text_of(body, WSNT, "TopicExpression") {
            None => None,
            Some(expr) => match TopicFilter::parse(expr) {
                Ok(f) => Some(f),
                Err(e) => {
                    return fault(
                        StatusCode::BAD_REQUEST,
                        "Sender",
                        "wsntw:InvalidFilterFault",
                        &e.to_string(),
                    );
                }
            },
        };
        let asked = soap::text_of(body, TEV, "InitialTerminationTime")
            .and_then(xsd_seconds)
            .unwrap_or(60);
        let lifetime = Duration::from_secs(asked).min(self.cfg.max_lifetime);
        let mut subs = lock(&self.subs);
        if self.purge(&mut subs) >= self.cfg.max_subscriptions {
            bump(&self.refused);
            return fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Receiver",
                "ter:TooManySubscriptions",
                "maximum number of subscriptions reached",
            );
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let terminates = now + lifetime.as_millis() as i64;
        subs.insert(
            id,
            Sub {
                filter,
                queue: VecDeque::new(),
                terminates_ms: terminates,
                notify: Arc::new(Notify::new()),
            },
        );
        bump(&self.created);
        self.max_live
            .fetch_max(subs.len() as u64, Ordering::Relaxed);
        self.live.send_replace(subs.len());
        ok(&format!(
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>http://{}/onvif/subscription/{id}</wsa:Address></tev:SubscriptionReference><wsnt:CurrentTime>{}</wsnt:CurrentTime><wsnt:TerminationTime>{}</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>",
            self.addr,
            self.time(now),
            self.time(terminates)
        ))
    }

    async fn subscription(
        &self,
        id: u64,
        doc: &roxmltree::Document<'_>,
        op: &str,
        body: roxmltree::Node<'_, '_>,
    ) -> Response {
        if let Some(r) = self.deny(doc) {
            return r;
        }
        let gone = || {
            fault(
                StatusCode::BAD_REQUEST,
                "Sender",
                "wsrf-rw:ResourceUnknownFault",
                "no such subscription",
            )
        };
        let now = self.now_ms();
        match op {
            "PullMessages" => {
                if self.hang_pulls.load(Ordering::Relaxed) {
                    bump(&self.pulls_held);
                    let mut stop = self.shutdown.subscribe();
                    let _ = stop.wait_for(|s| *s).await;
                    return gone();
                }
                let timeout = soap::text_of(body, TEV, "Timeout")
                    .and_then(xsd_seconds)
                    .unwrap_or(5)
                    .min(60);
                let limit = soap::text_of(body, TEV, "MessageLimit")
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(100)
                    .max(1);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
                loop {
                    let notify = {
                        let mut subs = lock(&self.subs);
                        self.purge(&mut subs);
                        let Some(s) = subs.get_mut(&id) else {
                            return gone();
                        };
                        if !s.queue.is_empty() || tokio::time::Instant::now() >= deadline {
                            let n = s.queue.len().min(limit);
                            let msgs: String = s.queue.drain(..n).collect();
                            let term = s.terminates_ms;
                            bump(&self.pulls);
                            return ok(&format!(
                                "<tev:PullMessagesResponse><tev:CurrentTime>{}</tev:CurrentTime><tev:TerminationTime>{}</tev:TerminationTime>{msgs}</tev:PullMessagesResponse>",
                                self.time(self.now_ms()),
                                self.time(term)
                            ));
                        }
                        s.notify.clone()
                    };
                    let mut stop = self.shutdown.subscribe();
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = stop.wait_for(|s| *s) => return gone(),
                    }
                }
            }
            "Renew" => {
                let asked = soap::text_of(body, WSNT, "TerminationTime")
                    .and_then(xsd_seconds)
                    .unwrap_or(60);
                let lifetime = Duration::from_secs(asked).min(self.cfg.max_lifetime);
                let mut subs = lock(&self.subs);
                self.purge(&mut subs);
                let Some(s) = subs.get_mut(&id) else {
                    return gone();
                };
                s.terminates_ms = now + lifetime.as_millis() as i64;
                bump(&self.renewed);
                ok(&format!(
                    "<wsnt:RenewResponse><wsnt:TerminationTime>{}</wsnt:TerminationTime><wsnt:CurrentTime>{}</wsnt:CurrentTime></wsnt:RenewResponse>",
                    self.time(s.terminates_ms),
                    self.time(now)
                ))
            }
            "Unsubscribe" => {
                let mut subs = lock(&self.subs);
                self.purge(&mut subs);
                if subs.remove(&id).is_none() {
                    return gone();
                }
                self.live.send_replace(subs.len());
                bump(&self.unsubscribed);
                ok("<wsnt:UnsubscribeResponse/>")
            }
            "SetSynchronizationPoint" => {
                let states: Vec<(String, String)> = lock(&self.state).values().cloned().collect();
                let mut subs = lock(&self.subs);
                self.purge(&mut subs);
                let Some(s) = subs.get_mut(&id) else {
                    return gone();
                };
                for (topic, xml) in states {
                    if s.filter.as_ref().is_none_or(|f| f.matches(&topic)) {
                        s.queue.push_back(xml);
                    }
                }
                s.notify.notify_one();
                bump(&self.sync_points);
                ok("<tev:SetSynchronizationPointResponse/>")
            }
            other => fault(
                StatusCode::BAD_REQUEST,
                "Sender",
                "ter:ActionNotSupported",
                other,
            ),
        }
    }

    /// Queues a `wsnt:NotificationMessage` for every subscription whose filter matches.
    fn emit(&self, xml: &str) {
        let Some((topic, source, stateful)) = describe(xml) else {
            tracing::warn!("emulator: notification without a topic not sent");
            return;
        };
        if stateful {
            let init = set_operation(xml, "Initialized");
            lock(&self.state).insert((topic.clone(), source), (topic.clone(), init));
        }
        let mut subs = lock(&self.subs);
        for s in subs.values_mut() {
            if s.filter.as_ref().is_none_or(|f| f.matches(&topic)) {
                s.queue.push_back(xml.to_string());
                s.notify.notify_one();
            }
        }
    }
}

/// A message with its `PropertyOperation` replaced.
fn set_operation(xml: &str, op: &str) -> String {
    let mut out = xml.to_string();
    for old in ["Changed", "Initialized", "Deleted"] {
        out = out.replace(
            &format!("PropertyOperation=\"{old}\""),
            &format!("PropertyOperation=\"{op}\""),
        );
    }
    out
}

/// Topic (canonical prefixes), source items and statefulness of a notification.
fn describe(xml: &str) -> Option<(String, String, bool)> {
    let ctx = crate::sources::rtsp::onvif::Context {
        camera: "".into(),
        serial: "".into(),
        now_ms: 0,
    };
    let doc = roxmltree::Document::parse(xml).ok()?;
    let ev = crate::sources::rtsp::onvif::notification(doc.root_element(), &ctx).ok()??;
    let source = format!("{:?}", ev.source);
    Some((ev.topic, source, ev.stateful))
}

type Sh = State<Arc<Shared>>;

const REALM: &str = "ONVIF_emulator";

impl Shared {
    /// With `http_digest`: `None` when the request's Digest answer is right, else the `401`.
    fn http_deny(&self, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
        use super::digest;
        if !self.cfg.http_digest {
            return None;
        }
        let challenge = |stale: bool| {
            bump(&self.http_challenges);
            let nonce = digest::new_nonce();
            let mut nonces = lock(&self.nonces);
            if nonces.len() > 1024 {
                nonces.clear();
            }
            nonces.insert(nonce.clone());
            let v = format!(
                "Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{}",
                if stale { ", stale=true" } else { "" }
            );
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [("WWW-Authenticate", v)],
                    "401 Unauthorized\n",
                )
                    .into_response(),
            )
        };
        let Some(p) = headers
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(digest::parse_authorization)
        else {
            return challenge(false);
        };
        let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let known = lock(&self.nonces).contains(&p.nonce);
        match digest::verify(
            &p,
            &self.cfg.username,
            REALM,
            &self.cfg.password,
            "POST",
            target,
            known,
        ) {
            Ok(()) => None,
            Err(digest::Rejection::StaleNonce) => challenge(true),
            Err(digest::Rejection::Invalid) => {
                bump(&self.auth_failures);
                challenge(false)
            }
        }
    }
}

/// The body's operation, or a malformed-request fault.
fn operation(text: &str) -> Result<(roxmltree::Document<'_>, String), Box<Response>> {
    let bad = |why: String| {
        Box::new(fault(
            StatusCode::BAD_REQUEST,
            "Sender",
            "ter:WellFormed",
            &why,
        ))
    };
    let doc = soap::parse(text).map_err(|e| bad(e.to_string()))?;
    let root = doc.root_element();
    if !soap::is(root, SOAP_ENV, "Envelope") {
        return Err(bad("not a SOAP 1.2 envelope".into()));
    }
    let op = soap::child(root, SOAP_ENV, "Body")
        .and_then(|b| soap::elements(b).next())
        .map(|n| n.tag_name().name().to_string())
        .ok_or_else(|| bad("empty body".into()))?;
    Ok((doc, op))
}

fn body_node<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> roxmltree::Node<'a, 'i> {
    soap::child(doc.root_element(), SOAP_ENV, "Body")
        .and_then(|b| soap::elements(b).next())
        .unwrap_or(doc.root_element())
}

async fn device_service(State(sh): Sh, headers: HeaderMap, uri: Uri, text: String) -> Response {
    if let Some(r) = sh.http_deny(&headers, &uri) {
        return r;
    }
    match operation(&text) {
        Ok((doc, op)) => sh.device(&doc, &op),
        Err(r) => *r,
    }
}

async fn events_service(State(sh): Sh, headers: HeaderMap, uri: Uri, text: String) -> Response {
    if let Some(r) = sh.http_deny(&headers, &uri) {
        return r;
    }
    match operation(&text) {
        Ok((doc, op)) if op == "CreatePullPointSubscription" => sh.create(&doc, body_node(&doc)),
        Ok((_, op)) => fault(
            StatusCode::BAD_REQUEST,
            "Sender",
            "ter:ActionNotSupported",
            &op,
        ),
        Err(r) => *r,
    }
}

async fn media_service(State(sh): Sh, headers: HeaderMap, uri: Uri, text: String) -> Response {
    if let Some(r) = sh.http_deny(&headers, &uri) {
        return r;
    }
    match operation(&text) {
        Ok((doc, op)) => sh.media(&doc, &op, body_node(&doc)),
        Err(r) => *r,
    }
}

async fn subscription(
    State(sh): Sh,
    Path(id): Path<u64>,
    headers: HeaderMap,
    uri: Uri,
    text: String,
) -> Response {
    if let Some(r) = sh.http_deny(&headers, &uri) {
        return r;
    }
    let (doc, op) = match operation(&text) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let body = body_node(&doc);
    sh.subscription(id, &doc, &op, body).await
}

/// A running emulated ONVIF camera; dropping it stops it.
pub struct OnvifEmulator {
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl OnvifEmulator {
    /// Binds and serves until dropped.
    pub async fn start(cfg: OnvifEmulatorConfig) -> std::io::Result<OnvifEmulator> {
        let listener = tokio::net::TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            skew_ms: AtomicI64::new(cfg.clock_skew_ms),
            cfg,
            addr,
            subs: Mutex::new(BTreeMap::new()),
            state: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            hang_pulls: AtomicBool::new(false),
            live: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            created: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            unsubscribed: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            pulls: AtomicU64::new(0),
            pulls_held: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            sync_points: AtomicU64::new(0),
            max_live: AtomicU64::new(0),
            http_challenges: AtomicU64::new(0),
            nonces: Mutex::new(std::collections::HashSet::new()),
        });
        let app = Router::new()
            .route("/onvif/device_service", post(device_service))
            .route("/onvif/events_service", post(events_service))
            .route("/onvif/media_service", post(media_service))
            .route("/onvif/subscription/{id}", post(subscription))
            .with_state(shared.clone());
        let mut stop = shared.shutdown.subscribe();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(OnvifEmulator {
            shared,
            server: Some(server),
        })
    }

    /// The camera URL to configure (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The serial it reports.
    pub fn serial(&self) -> &str {
        &self.shared.cfg.serial
    }

    /// Sends one `wsnt:NotificationMessage` (XML text with its namespace declarations) to
    /// every subscription whose filter matches; a stateful one also becomes current state.
    pub fn emit(&self, notification_xml: &str) {
        self.shared.emit(notification_xml);
    }

    /// Records a current state without sending it (reported on SetSynchronizationPoint).
    pub fn seed_state(&self, notification_xml: &str) {
        if let Some((topic, source, true)) = describe(notification_xml) {
            let init = set_operation(notification_xml, "Initialized");
            lock(&self.shared.state).insert((topic.clone(), source), (topic, init));
        }
    }

    /// Live subscriptions now (expired ones dropped).
    pub fn live_subscriptions(&self) -> usize {
        let mut subs = lock(&self.shared.subs);
        self.shared.purge(&mut subs)
    }

    /// Waits until exactly `n` subscriptions are live; `false` on timeout.
    pub async fn wait_for_live(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.live.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c == n)).await,
            Ok(Ok(_))
        )
    }

    /// Holds every PullMessages from now on unanswered (a hung camera), or stops doing so
    /// for new ones (held ones stay held until the emulator stops).
    pub fn hang_pulls(&self, hang: bool) {
        self.shared.hang_pulls.store(hang, Ordering::Relaxed);
    }

    /// Forgets every subscription, as a camera reboot does.
    pub fn drop_subscriptions(&self) {
        let mut subs = lock(&self.shared.subs);
        subs.clear();
        self.shared.live.send_replace(0);
    }

    /// Moves the camera clock: its offset from real time, ms.
    pub fn set_clock_skew_ms(&self, ms: i64) {
        self.shared.skew_ms.store(ms, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> OnvifCounters {
        let s = &self.shared;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        OnvifCounters {
            created: g(&s.created),
            refused: g(&s.refused),
            unsubscribed: g(&s.unsubscribed),
            renewed: g(&s.renewed),
            pulls: g(&s.pulls),
            pulls_held: g(&s.pulls_held),
            auth_failures: g(&s.auth_failures),
            sync_points: g(&s.sync_points),
            max_live: g(&s.max_live),
            http_challenges: g(&s.http_challenges),
        }
    }

    /// Stops the server.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
    }
}

impl Drop for OnvifEmulator {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

impl std::fmt::Debug for OnvifEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnvifEmulator")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::sources::onvif::client::{Client, OnvifError};

    const MOTION: &str = r#"<wsnt:NotificationMessage xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:tns1="http://www.onvif.org/ver10/topics"><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:VideoSource/MotionAlarm</wsnt:Topic><wsnt:Message><tt:Message UtcTime="2026-01-01T00:00:00Z" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="Source" Value="VideoSourceToken"/></tt:Source><tt:Data><tt:SimpleItem Name="State" Value="true"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>"#;

    fn client(user: &str, pass: &str) -> Client {
        Client::new(
            Some(user.into()),
            Some(pass.into()),
            &crate::tls::TlsSettings::default(),
            Arc::new(SystemClock),
        )
        .unwrap()
    }

    /// The client's whole exchange against the emulator: clock offset, discovery, the
    /// subscription limit, initial states, a pull, renew and unsubscribe.
    #[tokio::test]
    async fn the_client_speaks_to_the_emulator_and_the_fourth_subscription_is_refused() {
        let emu = OnvifEmulator::start(OnvifEmulatorConfig {
            clock_skew_ms: 3_600_000,
            ..Default::default()
        })
        .await
        .unwrap();
        emu.seed_state(MOTION);
        let c = client("onvif", "onvif-pass");
        let dev = crate::sources::onvif::device_url(&url::Url::parse(&emu.base_url()).unwrap());
        // Without the offset, the token is an hour stale.
        assert!(matches!(
            c.device_information(&dev).await,
            Err(OnvifError::Auth(_))
        ));
        let (_, offset) = c.measure_clock(&dev).await.unwrap();
        assert!((offset - 3_600_000).abs() < 2_000, "{offset}");
        c.set_offset_ms(offset);
        assert_eq!(c.device_information(&dev).await.unwrap().0, "ONVIF-0042");
        let ev = c.events_url(&dev).await.unwrap();
        let mut subs = Vec::new();
        for _ in 0..3 {
            subs.push(c.create_pull_point(&ev, None).await.unwrap());
        }
        let fourth = c.create_pull_point(&ev, None).await.unwrap_err();
        assert!(matches!(fourth, OnvifError::Soap(_)), "{fourth}");
        assert_eq!(emu.counters().refused, 1);
        for s in subs.drain(1..) {
            c.unsubscribe(&s, Duration::from_secs(2)).await.unwrap();
        }
        let s = &subs[0];
        c.set_synchronization_point(s).await.unwrap();
        let ctx = crate::sources::rtsp::onvif::Context {
            camera: "cam".into(),
            serial: "ONVIF-0042".into(),
            now_ms: 0,
        };
        let mut out = Vec::new();
        c.pull_messages(s, Duration::from_secs(1), &ctx, &mut out)
            .await
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].operation, Some(crate::event::Operation::Initialized));
        let (cur, term) = c.renew(s).await.unwrap();
        assert_eq!(term - cur, 60_000);
        c.unsubscribe(s, Duration::from_secs(2)).await.unwrap();
        assert_eq!(emu.live_subscriptions(), 0);
        assert_eq!(emu.counters().max_live, 3);
        let gone = c
            .pull_messages(s, Duration::from_secs(1), &ctx, &mut out)
            .await
            .unwrap_err();
        assert!(
            !crate::sources::onvif::pullpoint::unsubscribe_after(&gone),
            "{gone}"
        );
        // Wrong password: an authentication error, counted.
        let bad = client("onvif", "wrong");
        bad.set_offset_ms(offset);
        assert!(matches!(
            bad.device_information(&dev).await,
            Err(OnvifError::Auth(_))
        ));
        assert!(emu.counters().auth_failures >= 2);
    }
}
