//! ONVIF PullPoint event source (`transport = "pullpoint"`): for cameras of any vendor.
//!
//! Each connection measures the camera's clock (GetSystemDateAndTime; the offset signs every
//! WS-Security token and is reported as `edgerelay_source_clock_skew_seconds`), reads the
//! serial (GetDeviceInformation), finds the events service (GetServices, else
//! GetCapabilities), creates one PullPoint subscription (with the rules' topic filter; without
//! one if the device refuses it, the rules filter in the relay), asks for current states
//! (SetSynchronizationPoint) and long-polls PullMessages, renewing at half of the granted
//! lifetime ([`pullpoint::Lifecycle`]). Whatever ends a connection, its subscription is
//! unsubscribed before the next one is created, and on stop: cameras allow only a few.

pub mod client;
pub mod device;
pub mod media;
pub mod probe;
pub mod pullpoint;
pub mod soap;
pub mod wsse;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::sources::backoff::Backoff;
use crate::sources::own_events;
use crate::sources::queue::EventSender;
use crate::sources::rtsp::onvif::Context;
use crate::sources::status::{SourceState, SourceStatus};
use client::{Client, OnvifError};
use pullpoint::{Lifecycle, Step, Subscription};

/// Longest an Unsubscribe may take on stop (the relay's shutdown waits for it).
pub const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything one PullPoint camera needs.
#[derive(Debug, Clone)]
pub struct PullPointCamera {
    /// Config name.
    pub name: Arc<str>,
    /// The device service URL (`url` + `/onvif/device_service` unless it names a path).
    pub device_url: url::Url,
    /// Serial from config; else GetDeviceInformation's.
    pub serial: Option<String>,
    /// The rules' camera topic filters.
    pub filters: Vec<String>,
    /// Back-off cap.
    pub max_backoff: Duration,
    /// A clock offset beyond this is reported (once).
    pub max_clock_skew: Duration,
}

/// The device service URL for a camera `url`: its own path when it has one.
pub fn device_url(base: &url::Url) -> url::Url {
    let mut u = base.clone();
    if u.path() == "/" || u.path().is_empty() {
        u.set_path("/onvif/device_service");
    }
    u
}

/// Runs the source until `stop` turns true (then unsubscribes and returns), the receiver is
/// gone, or the task is aborted.
pub async fn run(
    cam: PullPointCamera,
    http: Client,
    tx: EventSender,
    status: Arc<SourceStatus>,
    clock: SharedClock,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(cam.max_backoff);
    let mut first = true;
    let mut lost_at: Option<i64> = None;
    let mut skew_reported = false;
    // A subscription that outlived its connection: unsubscribed before the next one.
    let mut stale: Option<Subscription> = None;
    let mut filter_refused = false;
    // The error last logged: the same one again (a camera refusing every new subscription,
    // a wrong password) is not logged again until a connection works or the error changes.
    let mut last_logged: Option<String> = None;
    loop {
        if !first {
            status.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        if let Some(s) = stale.take() {
            let _ = http.unsubscribe(&s, client::CALL_TIMEOUT).await;
        }
        if status.set(SourceState::Connecting) {
            tracing::debug!(camera = %cam.name, "connecting (pullpoint)");
        }
        let mut conn = Conn {
            cam: &cam,
            http: &http,
            tx: &tx,
            status: &status,
            clock: &clock,
            sub: None,
            skew_reported: &mut skew_reported,
            filter_refused: &mut filter_refused,
        };
        let result = conn.connection(&mut backoff, &mut lost_at, &mut stop).await;
        let sub = conn.sub.take();
        if status.state() == SourceState::Streaming {
            lost_at = Some(clock.now_ms());
        }
        let stopping = *stop.borrow() || tx.is_closed();
        match (&result, sub) {
            (_, Some(s)) if stopping => match http.unsubscribe(&s, UNSUBSCRIBE_TIMEOUT).await {
                Ok(()) => tracing::info!(camera = %cam.name, "unsubscribed on stop"),
                Err(e) => {
                    tracing::warn!(camera = %cam.name, error = %e, "unsubscribe on stop failed")
                }
            },
            (Err(e), Some(s)) if pullpoint::unsubscribe_after(e) => stale = Some(s),
            _ => {}
        }
        if let Err(OnvifError::Timeout(..)) = &result {
            status.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        if stopping {
            return;
        }
        let error = match result {
            Ok(()) => "subscription ended".to_string(),
            Err(e) => e.to_string(),
        };
        if status.state() == SourceState::Streaming {
            last_logged = None;
        }
        status.set(SourceState::Backoff {
            error: error.clone(),
        });
        if last_logged.as_deref() != Some(error.as_str()) {
            tracing::warn!(camera = %cam.name, %error, "camera connection lost; resubscribing with back-off");
            last_logged = Some(error);
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => {
                if let Some(s) = stale.take() {
                    let _ = http.unsubscribe(&s, UNSUBSCRIBE_TIMEOUT).await;
                }
                return;
            }
        }
    }
}

/// Resolves once `stop` turns true (holds no watch guard, so futures stay `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

struct Conn<'a> {
    cam: &'a PullPointCamera,
    http: &'a Client,
    tx: &'a EventSender,
    status: &'a SourceStatus,
    clock: &'a SharedClock,
    /// The live subscription, for the caller to unsubscribe whatever ended the connection.
    sub: Option<Subscription>,
    skew_reported: &'a mut bool,
    filter_refused: &'a mut bool,
}

impl Conn<'_> {
    async fn connection(
        &mut self,
        backoff: &mut Backoff,
        lost_at: &mut Option<i64>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), OnvifError> {
        let (cam, http, status) = (self.cam, self.http, self.status);
        let (_, offset) = http.measure_clock(&cam.device_url).await?;
        http.set_offset_ms(offset);
        status.clock_skew_ms.store(offset, Ordering::Relaxed);
        if offset.unsigned_abs() > cam.max_clock_skew.as_millis() as u64 && !*self.skew_reported {
            *self.skew_reported = true;
            tracing::warn!(camera = %cam.name, skew_s = offset as f64 / 1000.0,
                "camera clock is off; its offset is used to sign requests and event times stay the camera's");
        }
        let serial: Arc<str> = match &cam.serial {
            Some(s) => s.as_str().into(),
            None => http.device_information(&cam.device_url).await?.0.into(),
        };
        status.set_serial(serial.clone());
        let events = http.events_url(&cam.device_url).await?;
        let filter = match *self.filter_refused {
            true => None,
            false => pullpoint::topic_filter(&cam.filters),
        };
        let sub = match http.create_pull_point(&events, filter.as_deref()).await {
            Err(OnvifError::Soap(e)) if filter.is_some() && !e.is_auth() => {
                tracing::info!(camera = %cam.name, error = %e,
                    "the camera refused the topic filter; subscribing to everything and filtering in the relay");
                *self.filter_refused = true;
                http.create_pull_point(&events, None).await?
            }
            r => r?,
        };
        self.sub = Some(sub.clone());
        let mut life = Lifecycle::new(http.now_ms(), sub.current_ms, sub.termination_ms);
        http.set_synchronization_point(&sub).await?;
        backoff.reset();
        if status.set(SourceState::Streaming) {
            tracing::info!(camera = %cam.name, %serial, events = %events, "camera streaming (pullpoint)");
        }
        if let Some(lost) = lost_at.take() {
            let ev = own_events::reconnected(&cam.name, &serial, lost, self.clock.now_ms());
            if self.tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
        let mut batch = Vec::new();
        loop {
            match life.next(http.now_ms()) {
                Step::Resubscribe => {
                    return Err(OnvifError::Unavailable(
                        "subscription expired before it could be renewed".into(),
                    ));
                }
                Step::Renew => {
                    let (current, termination) = http.renew(&sub).await?;
                    life.renewed(http.now_ms(), current, termination);
                    tracing::debug!(camera = %cam.name, "subscription renewed");
                }
                Step::Pull(timeout) => {
                    let ctx = Context {
                        camera: cam.name.clone(),
                        serial: serial.clone(),
                        now_ms: self.clock.now_ms(),
                    };
                    batch.clear();
                    let pulled = tokio::select! {
                        r = http.pull_messages(&sub, timeout, &ctx, &mut batch) => r,
                        _ = stopped(stop) => return Ok(()),
                    };
                    match pulled {
                        Ok(None) => {}
                        Ok(Some(e)) => self.malformed(&e.to_string()),
                        Err(e) if e.is_malformed() => {
                            // One unusable reply: counted and skipped, the subscription goes on.
                            self.malformed(&e.to_string());
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    for ev in batch.drain(..) {
                        status.last_event_ms.store(ctx.now_ms, Ordering::Relaxed);
                        if self.tx.send(ev).await.is_err() {
                            return Ok(());
                        }
                        // Counted once queued, as the other sources do.
                        status.events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn malformed(&self, error: &str) {
        if self.status.count_malformed() {
            tracing::warn!(camera = %self.cam.name, %error,
                count = self.status.malformed.load(Ordering::Relaxed), "skipping malformed PullMessages reply");
        }
    }
}
